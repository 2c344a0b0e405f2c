//! What a policy-server may read: its ServiceAccount, and the ClusterRole,
//! Roles and bindings that grant it exactly the resources its policies
//! declare in `contextAwareResources`.
//!
//! - Cluster-wide policies: one ClusterRole and ClusterRoleBinding,
//!   `portcullis-policy-server-<name>`, with `get`, `list` and `watch` on the
//!   union of their resources.
//! - Namespaced policies: in each namespace with such policies, one Role and
//!   RoleBinding of the same name with the union of their namespaced
//!   resources; a namespaced policy can read its own namespace only.
//!
//! `authorization.k8s.io` reviews (`SubjectAccessReview`,
//! `LocalSubjectAccessReview`), which the `can_i` capability creates, get
//! `create` instead.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{BuildOptions, meta};
use crate::names::{policy_server_labels, policy_server_object_name};

/// Verbs granted on a resource a policy reads.
pub const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// A resource type, resolved through API discovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantedResource {
    /// API group (`""` for the core group).
    pub group: String,
    /// Plural resource name (`namespaces`).
    pub resource: String,
    /// The verbs granted on it.
    pub verbs: Vec<String>,
}

impl GrantedResource {
    /// Read access to `group`/`resource`, or `create` for an
    /// `authorization.k8s.io` review (what `can_i` sends).
    pub fn for_resource(group: &str, resource: &str) -> Self {
        let verbs: Vec<String> = if group == "authorization.k8s.io" {
            vec!["create".to_string()]
        } else {
            READ_VERBS.iter().map(|v| v.to_string()).collect()
        };
        Self {
            group: group.to_string(),
            resource: resource.to_string(),
            verbs,
        }
    }
}

/// The name of the ClusterRole, Roles and bindings of a PolicyServer:
/// `portcullis-policy-server-<name>` (prefixed: ClusterRoles share one
/// cluster-wide name space with every other application).
pub fn role_name(policy_server: &str) -> String {
    format!("portcullis-{}", policy_server_object_name(policy_server))
}

/// Rules granting `resources`: one rule per (API group, verbs), resources
/// sorted, so the same grant always renders the same object.
pub fn rules(resources: &BTreeSet<GrantedResource>) -> Vec<PolicyRule> {
    let mut by_group: BTreeMap<(&str, &[String]), Vec<String>> = BTreeMap::new();
    for r in resources {
        by_group
            .entry((r.group.as_str(), r.verbs.as_slice()))
            .or_default()
            .push(r.resource.clone());
    }
    by_group
        .into_iter()
        .map(|((group, verbs), resources)| PolicyRule {
            api_groups: Some(vec![group.to_string()]),
            resources: Some(resources),
            verbs: verbs.to_vec(),
            ..Default::default()
        })
        .collect()
}

/// The ServiceAccount a PolicyServer's pods run as unless its spec names
/// one: `policy-server-<name>` in the controller's namespace.
pub fn service_account(
    ps_name: &str,
    opts: &BuildOptions,
    owner: &OwnerReference,
) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(opts, ps_name, owner, None),
        // Mounting is decided per Pod (see `workload::deployment`).
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

fn rbac_meta(ps_name: &str, namespace: Option<&str>, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(role_name(ps_name)),
        namespace: namespace.map(str::to_string),
        labels: Some(policy_server_labels(ps_name)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

fn subject(service_account: &str, opts: &BuildOptions) -> Subject {
    Subject {
        kind: "ServiceAccount".to_string(),
        name: service_account.to_string(),
        namespace: Some(opts.namespace.clone()),
        ..Default::default()
    }
}

/// The ClusterRole of the cluster-wide policies' resources.
pub fn cluster_role(
    ps_name: &str,
    resources: &BTreeSet<GrantedResource>,
    owner: &OwnerReference,
) -> ClusterRole {
    ClusterRole {
        metadata: rbac_meta(ps_name, None, owner),
        rules: Some(rules(resources)),
        ..Default::default()
    }
}

/// Binds the ClusterRole to the policy-server's ServiceAccount.
pub fn cluster_role_binding(
    ps_name: &str,
    service_account: &str,
    opts: &BuildOptions,
    owner: &OwnerReference,
) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: rbac_meta(ps_name, None, owner),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name: role_name(ps_name),
        },
        subjects: Some(vec![subject(service_account, opts)]),
    }
}

/// The Role of the namespaced policies of `namespace`.
pub fn role(
    ps_name: &str,
    namespace: &str,
    resources: &BTreeSet<GrantedResource>,
    owner: &OwnerReference,
) -> Role {
    Role {
        metadata: rbac_meta(ps_name, Some(namespace), owner),
        rules: Some(rules(resources)),
    }
}

/// Binds the Role of `namespace` to the policy-server's ServiceAccount.
pub fn role_binding(
    ps_name: &str,
    namespace: &str,
    service_account: &str,
    opts: &BuildOptions,
    owner: &OwnerReference,
) -> RoleBinding {
    RoleBinding {
        metadata: rbac_meta(ps_name, Some(namespace), owner),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "Role".to_string(),
            name: role_name(ps_name),
        },
        subjects: Some(vec![subject(service_account, opts)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_group_resources_by_api_group() {
        let resources: BTreeSet<GrantedResource> = [
            GrantedResource::for_resource("", "namespaces"),
            GrantedResource::for_resource("apps", "deployments"),
            GrantedResource::for_resource("", "services"),
            GrantedResource::for_resource("authorization.k8s.io", "subjectaccessreviews"),
        ]
        .into_iter()
        .collect();
        let rules = rules(&resources);
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert_eq!(rules[0].api_groups.as_deref(), Some(&["".to_string()][..]));
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["namespaces".to_string(), "services".to_string()][..])
        );
        assert_eq!(rules[0].verbs, vec!["get", "list", "watch"]);
        assert_eq!(
            rules[1].resources.as_deref(),
            Some(&["deployments".to_string()][..])
        );
        assert_eq!(rules[2].verbs, vec!["create"]);
        assert_eq!(role_name("default"), "portcullis-policy-server-default");
    }
}
