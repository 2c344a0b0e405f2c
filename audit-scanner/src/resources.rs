//! From policies' rules to the resource types to list, through API
//! discovery: wildcards (`*` groups, versions and resources) are expanded
//! against what the API server serves, and namespaced and cluster-scoped
//! types are told apart.
//!
//! Matching is the API server's (`admissionregistration.k8s.io/v1` rules):
//! a rule applies to CREATE when its operations include `CREATE` or `*`;
//! an empty `apiGroups` matches nothing; `*` matches every group, version or
//! resource; `*/*` every resource (and subresource); `pods/*` only
//! subresources, which the scanner never lists; `scope` `Cluster`,
//! `Namespaced` or `*` (the default). Only types that can be listed and
//! created are audited: a type without `create` never reaches admission
//! with a CREATE.
//!
//! Each (group, resource) is listed in one version: the group's preferred
//! version when a rule matches it, else the most stable version a rule
//! matches. Every policy that matches the resource in any version audits
//! it in that version (as `matchPolicy: Equivalent`, the default, would).

use std::collections::{BTreeMap, BTreeSet};

use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use portcullis_api::RuleWithOperations;

use crate::policies::AuditPolicy;

/// API groups never audited: the reports the scanner itself writes.
pub const EXCLUDED_GROUPS: [&str; 2] = ["openreports.io", "wgpolicyk8s.io"];

/// One resource type served by the API server, in one version.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// Group, version, kind and plural.
    pub api_resource: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether this version is the group's preferred one.
    pub preferred: bool,
    /// Whether it can be listed and created.
    pub auditable: bool,
}

/// Every resource type the API server serves (subresources excluded), in
/// discovery order: per group, versions from the most to the least stable.
pub fn served(discovery: &Discovery) -> Vec<Served> {
    let mut all = Vec::new();
    for group in discovery.groups() {
        let preferred = group.preferred_version_or_latest().to_string();
        for version in group.versions() {
            for (api_resource, caps) in group.versioned_resources(version) {
                if api_resource.plural.contains('/') {
                    continue;
                }
                all.push(Served {
                    auditable: caps.supports_operation(verbs::LIST)
                        && caps.supports_operation(verbs::CREATE),
                    namespaced: caps.scope == Scope::Namespaced,
                    preferred: version == preferred,
                    api_resource,
                });
            }
        }
    }
    all
}

/// A resource type to list, and the policies (indices into the audited
/// policies) whose rules match it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedResource {
    /// The version listed.
    pub api_resource: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Indices of the matching policies, ascending.
    pub policies: Vec<usize>,
}

/// Whether `rule` sends CREATEs of `served` to its policy.
pub fn rule_matches(rule: &RuleWithOperations, served: &Served) -> bool {
    let any_or = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
    let creates = rule.operations.iter().any(|op| op == "*" || op == "CREATE");
    let group = rule
        .api_groups
        .as_deref()
        .is_some_and(|groups| any_or(groups, &served.api_resource.group));
    let version = any_or(&rule.api_versions, &served.api_resource.version);
    let resource = rule
        .resources
        .iter()
        .any(|r| r == "*" || r == "*/*" || *r == served.api_resource.plural);
    let scope = match rule.scope.as_deref() {
        None | Some("*") => true,
        Some("Namespaced") => served.namespaced,
        Some("Cluster") => !served.namespaced,
        Some(_) => false,
    };
    creates && group && version && resource && scope
}

/// The resource types to list for `policies`, sorted by (group, plural)
/// with the core group first.
pub fn plan(policies: &[AuditPolicy], served: &[Served]) -> Vec<PlannedResource> {
    struct Entry<'a> {
        versions: Vec<&'a Served>,
        policies: BTreeSet<usize>,
    }
    let mut entries: BTreeMap<(String, String), Entry> = BTreeMap::new();
    for s in served {
        if !s.auditable || EXCLUDED_GROUPS.contains(&s.api_resource.group.as_str()) {
            continue;
        }
        let matching: Vec<usize> = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.rules.iter().any(|r| rule_matches(r, s)))
            .map(|(i, _)| i)
            .collect();
        if matching.is_empty() {
            continue;
        }
        let key = (s.api_resource.group.clone(), s.api_resource.plural.clone());
        let entry = entries.entry(key).or_insert_with(|| Entry {
            versions: Vec::new(),
            policies: BTreeSet::new(),
        });
        entry.versions.push(s);
        entry.policies.extend(matching);
    }
    entries
        .into_values()
        .filter_map(|entry| {
            let chosen = entry
                .versions
                .iter()
                .find(|s| s.preferred)
                .or_else(|| entry.versions.first())?;
            Some(PlannedResource {
                api_resource: chosen.api_resource.clone(),
                namespaced: chosen.namespaced,
                policies: entry.policies.into_iter().collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Served {
        Served {
            api_resource: ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: if group.is_empty() {
                    version.into()
                } else {
                    format!("{group}/{version}")
                },
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced,
            preferred: true,
            auditable: true,
        }
    }

    fn rule(
        groups: &[&str],
        versions: &[&str],
        resources: &[&str],
        scope: Option<&str>,
    ) -> RuleWithOperations {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        RuleWithOperations {
            operations: vec!["CREATE".into(), "UPDATE".into()],
            api_groups: Some(strings(groups)),
            api_versions: strings(versions),
            resources: strings(resources),
            scope: scope.map(str::to_string),
        }
    }

    fn cluster() -> Vec<Served> {
        let mut deployments_beta = served("apps", "v1beta1", "Deployment", "deployments", true);
        deployments_beta.preferred = false;
        let mut component_statuses =
            served("", "v1", "ComponentStatus", "componentstatuses", false);
        component_statuses.auditable = false;
        vec![
            served("", "v1", "Pod", "pods", true),
            served("", "v1", "Namespace", "namespaces", false),
            served("", "v1", "ConfigMap", "configmaps", true),
            component_statuses,
            served("apps", "v1", "Deployment", "deployments", true),
            deployments_beta,
            served("openreports.io", "v1alpha1", "Report", "reports", true),
        ]
    }

    fn plurals(plan: &[PlannedResource]) -> Vec<String> {
        plan.iter()
            .map(|p| {
                format!(
                    "{}/{}/{}",
                    p.api_resource.group, p.api_resource.version, p.api_resource.plural
                )
            })
            .collect()
    }

    #[test]
    fn exact_rules_match_one_type() {
        let r = rule(&[""], &["v1"], &["pods"], None);
        let s = cluster();
        assert!(rule_matches(&r, &s[0]));
        assert!(!rule_matches(&r, &s[2]));
        let mut delete_only = r.clone();
        delete_only.operations = vec!["DELETE".into()];
        assert!(!rule_matches(&delete_only, &s[0]));
        let mut no_groups = r.clone();
        no_groups.api_groups = None;
        assert!(!rule_matches(&no_groups, &s[0]));
        assert!(!rule_matches(
            &rule(&[""], &["v1"], &["pods/*"], None),
            &s[0]
        ));
    }

    #[test]
    fn wildcards_expand_per_scope_and_skip_reports_and_unlistable_types() {
        let policies = [crate::policies::tests_support::policy(
            "clusterwide-all",
            vec![rule(&["*"], &["*"], &["*"], None)],
        )];
        let plan = plan(&policies, &cluster());
        assert_eq!(
            plurals(&plan),
            [
                "/v1/configmaps",
                "/v1/namespaces",
                "/v1/pods",
                "apps/v1/deployments"
            ]
        );
        let cluster_only = [crate::policies::tests_support::policy(
            "clusterwide-c",
            vec![rule(&["*"], &["*"], &["*/*"], Some("Cluster"))],
        )];
        assert_eq!(
            plurals(&super::plan(&cluster_only, &cluster())),
            ["/v1/namespaces"]
        );
        let namespaced = [crate::policies::tests_support::policy(
            "clusterwide-n",
            vec![rule(&[""], &["*"], &["*"], Some("Namespaced"))],
        )];
        assert_eq!(
            plurals(&super::plan(&namespaced, &cluster())),
            ["/v1/configmaps", "/v1/pods"]
        );
    }

    #[test]
    fn one_version_per_resource_and_policies_merged() {
        let policies = [
            crate::policies::tests_support::policy(
                "a",
                vec![rule(&["apps"], &["v1beta1"], &["deployments"], None)],
            ),
            crate::policies::tests_support::policy(
                "b",
                vec![rule(&["apps", ""], &["*"], &["deployments", "pods"], None)],
            ),
        ];
        let plan = plan(&policies, &cluster());
        assert_eq!(plurals(&plan), ["/v1/pods", "apps/v1/deployments"]);
        assert_eq!(plan[0].policies, vec![1]);
        assert_eq!(plan[1].policies, vec![0, 1]);
        // Only a non-preferred version matches: that version is listed.
        let only_beta = [crate::policies::tests_support::policy(
            "a",
            vec![rule(&["apps"], &["v1beta1"], &["deployments"], None)],
        )];
        assert_eq!(
            plurals(&super::plan(&only_beta, &cluster())),
            ["apps/v1beta1/deployments"]
        );
    }
}
