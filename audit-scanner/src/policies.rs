//! The policies an audit runs: every ClusterAdmissionPolicy,
//! AdmissionPolicy, ClusterAdmissionPolicyGroup and AdmissionPolicyGroup with
//! `backgroundAudit: true` whose status is `active`
//! (its webhook is registered, so its policy-server serves it), each with
//! what the scanner needs to send it exactly the objects admission would.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use portcullis_api::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyKind, PolicyMode, PolicyResource, PolicyStatusEnum, RuleWithOperations,
};

use crate::conditions::MatchConditions;

/// Annotation with a policy's severity (Kubewarden's, shown in the CRDs'
/// printer columns): `critical`, `high`, `medium`, `low` or `info`.
pub const SEVERITY_ANNOTATION: &str = "io.kubewarden.policy.severity";
/// Annotation with a policy's category (free text).
pub const CATEGORY_ANNOTATION: &str = "io.kubewarden.policy.category";

/// The severities a report may carry (the report CRDs' enum).
const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "info"];

/// Longest category copied into reports.
const MAX_CATEGORY_LEN: usize = 256;

/// A policy the scanner audits with.
#[derive(Debug)]
pub struct AuditPolicy {
    /// The policy id (`/audit/<id>`, the `policy` of each result).
    pub id: String,
    /// Its kind.
    pub kind: PolicyKind,
    /// metadata.name.
    pub name: String,
    /// metadata.namespace (namespaced kinds only).
    pub namespace: Option<String>,
    /// metadata.uid.
    pub uid: String,
    /// The PolicyServer serving it.
    pub policy_server: String,
    /// Its mode.
    pub mode: PolicyMode,
    /// Whether it may mutate.
    pub mutating: bool,
    /// Whether it reads other resources (host capabilities).
    pub context_aware: bool,
    /// Its rules as the webhook gets them.
    pub rules: Vec<RuleWithOperations>,
    /// A cluster-wide policy's namespace selection; `None` for namespaced
    /// kinds (their own namespace only).
    pub namespace_selector: Option<LabelSelector>,
    /// Whether a cluster-wide policy also applies in the controller's namespace.
    pub allow_inside_controller_namespace: bool,
    /// `objectSelector`.
    pub object_selector: Option<LabelSelector>,
    /// `matchConditions`, compiled.
    pub conditions: MatchConditions,
    /// `failurePolicy: Ignore` (a condition error then skips the policy).
    pub failure_policy_ignore: bool,
    /// Severity for its results (`info` in monitor mode).
    pub severity: Option<String>,
    /// Category for its results.
    pub category: Option<String>,
    /// How long one evaluation may take.
    pub timeout: Duration,
}

impl AuditPolicy {
    /// Whether the policy applies in namespace `namespace` with `labels`
    /// (for namespaced objects, and for a Namespace object itself).
    pub fn applies_in_namespace(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        controller_namespace: &str,
    ) -> bool {
        match &self.namespace {
            Some(own) => own == namespace,
            None => {
                (self.allow_inside_controller_namespace || namespace != controller_namespace)
                    && crate::selector::matches(self.namespace_selector.as_ref(), labels)
            }
        }
    }

    /// The `properties` of this policy's results.
    pub fn properties(&self) -> BTreeMap<String, String> {
        let mut properties = BTreeMap::from([
            ("policy-kind".to_string(), self.kind.as_str().to_string()),
            ("policy-name".to_string(), self.name.clone()),
            ("policy-uid".to_string(), self.uid.clone()),
            (
                "mode".to_string(),
                match self.mode {
                    PolicyMode::Protect => "protect",
                    PolicyMode::Monitor => "monitor",
                }
                .to_string(),
            ),
            (
                if self.mutating {
                    "mutating"
                } else {
                    "validating"
                }
                .to_string(),
                "true".to_string(),
            ),
        ]);
        if let Some(namespace) = &self.namespace {
            properties.insert("policy-namespace".to_string(), namespace.clone());
        }
        if self.context_aware {
            properties.insert("context-aware".to_string(), "true".to_string());
        }
        properties
    }
}

/// Why a policy is not audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `backgroundAudit: false`.
    BackgroundAuditDisabled,
    /// Its status is not `active` (its webhook is not registered).
    NotActive(String),
    /// It is being deleted.
    Deleting,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BackgroundAuditDisabled => write!(f, "backgroundAudit is false"),
            Self::NotActive(status) => write!(f, "policy status is {status}, not active"),
            Self::Deleting => write!(f, "policy is being deleted"),
        }
    }
}

/// The policies to audit with, and those left out with the reason.
#[derive(Debug, Default)]
pub struct PolicySelection {
    /// Audited, sorted by id.
    pub audited: Vec<AuditPolicy>,
    /// Left out: (id, reason).
    pub skipped: Vec<(String, SkipReason)>,
}

/// Lists the policies of every kind and selects those to audit with.
/// `namespace` restricts the namespaced kinds to one namespace.
pub async fn load(client: &Client, namespace: Option<&str>) -> kube::Result<PolicySelection> {
    let mut selection = PolicySelection::default();
    selection
        .add_all::<ClusterAdmissionPolicy>(Api::all(client.clone()))
        .await?;
    selection
        .add_all::<ClusterAdmissionPolicyGroup>(Api::all(client.clone()))
        .await?;
    selection
        .add_all(namespaced::<AdmissionPolicy>(client, namespace))
        .await?;
    selection
        .add_all(namespaced::<AdmissionPolicyGroup>(client, namespace))
        .await?;
    selection.audited.sort_by(|a, b| a.id.cmp(&b.id));
    selection.skipped.sort();
    Ok(selection)
}

/// The objects of a namespaced kind in `namespace`, or in all namespaces.
fn namespaced<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl PolicySelection {
    /// Lists every object of one kind and adds each.
    async fn add_all<P>(&mut self, api: Api<P>) -> kube::Result<()>
    where
        P: PolicyResource + kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        for policy in api.list(&ListParams::default()).await? {
            self.add(&policy);
        }
        Ok(())
    }

    /// Adds `policy` to the audited or the skipped ones.
    pub fn add<P: PolicyResource>(&mut self, policy: &P) {
        match audit_policy(policy) {
            Ok(p) => self.audited.push(p),
            Err(reason) => self.skipped.push((policy.id(), reason)),
        }
    }
}

impl PartialOrd for SkipReason {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SkipReason {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_string().cmp(&other.to_string())
    }
}

/// The audit view of one policy, or why it is not audited.
pub fn audit_policy<P: PolicyResource>(policy: &P) -> Result<AuditPolicy, SkipReason> {
    let view = policy.view();
    if view.deleting {
        return Err(SkipReason::Deleting);
    }
    if !view.common.background_audit {
        return Err(SkipReason::BackgroundAuditDisabled);
    }
    let status = policy
        .status()
        .map(|s| s.policy_status.as_str())
        .unwrap_or("unknown");
    if status != PolicyStatusEnum::Active.as_str() {
        return Err(SkipReason::NotActive(status.to_string()));
    }
    let annotations = policy.annotations();
    let severity = match view.common.mode {
        PolicyMode::Monitor => Some("info".to_string()),
        PolicyMode::Protect => annotations
            .get(SEVERITY_ANNOTATION)
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| SEVERITIES.contains(&s.as_str())),
    };
    let category = annotations
        .get(CATEGORY_ANNOTATION)
        .map(|c| truncate(c.trim(), MAX_CATEGORY_LEN))
        .filter(|c| !c.is_empty());
    let timeout_seconds = view
        .common
        .timeout_eval_seconds
        .unwrap_or(view.common.timeout_seconds)
        .clamp(2, 30);
    let context_aware = !view.context_aware_resources().is_empty();
    Ok(AuditPolicy {
        id: view.id,
        kind: view.kind,
        name: view.name,
        namespace: view.namespace,
        uid: view.uid.unwrap_or_default(),
        policy_server: view.common.policy_server.clone(),
        mode: view.common.mode,
        mutating: view.mutating,
        context_aware,
        rules: view.rules,
        namespace_selector: view
            .scope
            .as_ref()
            .and_then(|s| s.namespace_selector.clone()),
        allow_inside_controller_namespace: view
            .scope
            .as_ref()
            .is_some_and(|s| s.allow_inside_admission_controller_namespace),
        object_selector: view.common.object_selector.clone(),
        conditions: MatchConditions::compile(
            view.common.match_conditions.as_deref().unwrap_or_default(),
        ),
        failure_policy_ignore: view.common.failure_policy.as_deref() == Some("Ignore"),
        severity,
        category,
        // The policy-server's own deadline, plus the round trip.
        timeout: Duration::from_secs(timeout_seconds as u64 + 1),
    })
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_api::PolicyStatus;

    fn cap(yaml: &str, status: Option<&str>) -> ClusterAdmissionPolicy {
        let mut policy: ClusterAdmissionPolicy = serde_yaml_ng(yaml);
        policy.status = status.map(|s| PolicyStatus {
            policy_status: serde_json::from_value(serde_json::json!(s)).unwrap(),
            mode: None,
            conditions: vec![],
        });
        policy
    }

    fn serde_yaml_ng(yaml: &str) -> ClusterAdmissionPolicy {
        let value: serde_json::Value = serde_json::from_str(yaml).unwrap();
        serde_json::from_value(value).unwrap()
    }

    const CAP: &str = r#"{
        "apiVersion": "policies.portcullis.dev/v1", "kind": "ClusterAdmissionPolicy",
        "metadata": {"name": "p", "uid": "u1", "annotations": {
            "io.kubewarden.policy.severity": " High ", "io.kubewarden.policy.category": "PSP"}},
        "spec": {"module": "file:///p.wasm", "mutating": false,
                 "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
                 "namespaceSelector": {"matchLabels": {"audit": "yes"}}}
    }"#;

    #[test]
    fn active_background_policies_are_audited_with_their_annotations() {
        let p = audit_policy(&cap(CAP, Some("active"))).unwrap();
        assert_eq!(p.id, "clusterwide-p");
        assert_eq!(p.severity.as_deref(), Some("high"));
        assert_eq!(p.category.as_deref(), Some("PSP"));
        assert_eq!(p.timeout, Duration::from_secs(11));
        assert!(p.applies_in_namespace(
            "ns",
            &[("audit".into(), "yes".into())].into(),
            "portcullis"
        ));
        assert!(!p.applies_in_namespace("ns", &BTreeMap::new(), "portcullis"));
        assert!(!p.applies_in_namespace(
            "portcullis",
            &[("audit".into(), "yes".into())].into(),
            "portcullis"
        ));
        assert_eq!(p.properties()["validating"], "true");
    }

    #[test]
    fn inactive_unaudited_and_deleting_policies_are_skipped() {
        assert_eq!(
            audit_policy(&cap(CAP, Some("pending"))).unwrap_err(),
            SkipReason::NotActive("pending".into())
        );
        assert_eq!(
            audit_policy(&cap(CAP, None)).unwrap_err(),
            SkipReason::NotActive("unknown".into())
        );
        let off = CAP.replace(
            "\"mutating\": false",
            "\"mutating\": false, \"backgroundAudit\": false",
        );
        assert_eq!(
            audit_policy(&cap(&off, Some("active"))).unwrap_err(),
            SkipReason::BackgroundAuditDisabled
        );
        let mut deleting = cap(CAP, Some("active"));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert_eq!(audit_policy(&deleting).unwrap_err(), SkipReason::Deleting);
    }

    #[test]
    fn unknown_severities_are_dropped_and_monitor_is_info() {
        let bogus = CAP.replace(" High ", "urgent");
        assert_eq!(
            audit_policy(&cap(&bogus, Some("active"))).unwrap().severity,
            None
        );
        let monitor = CAP.replace(
            "\"mutating\": false",
            "\"mutating\": false, \"mode\": \"monitor\"",
        );
        assert_eq!(
            audit_policy(&cap(&monitor, Some("active")))
                .unwrap()
                .severity
                .as_deref(),
            Some("info")
        );
        assert_eq!(truncate("héllo", 2), "h");
    }
}

/// Policies built in unit tests of other modules.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A cluster-wide, protect-mode policy `id` with `rules` and nothing else.
    pub fn policy(id: &str, rules: Vec<RuleWithOperations>) -> AuditPolicy {
        AuditPolicy {
            id: id.to_string(),
            kind: PolicyKind::ClusterAdmissionPolicy,
            name: id.to_string(),
            namespace: None,
            uid: format!("uid-{id}"),
            policy_server: "default".to_string(),
            mode: PolicyMode::Protect,
            mutating: false,
            context_aware: false,
            rules,
            namespace_selector: None,
            allow_inside_controller_namespace: false,
            object_selector: None,
            conditions: MatchConditions::compile(&[]),
            failure_policy_ignore: false,
            severity: None,
            category: None,
            timeout: Duration::from_secs(11),
        }
    }
}
