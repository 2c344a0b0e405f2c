//! Custom resource types, group `policies.portcullis.dev`, version `v1`.
//!
//! Field names and semantics follow Kubewarden's `policies.kubewarden.io/v1`,
//! so a Kubewarden manifest ports by changing `apiVersion` only. Checks that
//! Kubewarden runs in its own admission webhook are CEL
//! `x-kubernetes-validations` here, enforced by the API server itself.

// Several `printcolumn(...)` share `type_ = "string"`; clippy reads them as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PodSecurityContext, SecurityContext, Toleration,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::MAX_POLICY_SERVER_NAME_LEN;

/// API group of every Portcullis resource.
pub const GROUP: &str = "policies.portcullis.dev";

/// The policy-server a policy is bound to when none is given.
pub const DEFAULT_POLICY_SERVER: &str = "default";

fn default_policy_server() -> String {
    DEFAULT_POLICY_SERVER.to_string()
}

fn default_true() -> bool {
    true
}

fn default_timeout_seconds() -> i32 {
    10
}

fn default_webhook_port() -> i32 {
    8443
}

fn default_readiness_probe_port() -> i32 {
    8081
}

/// Schema of a free-form JSON object (policy settings).
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Whether a policy's verdict is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Rejections and mutations are applied.
    #[default]
    Protect,
    /// Every request is allowed; the would-be verdict is only logged.
    Monitor,
}

impl From<PolicyMode> for portcullis_config::PolicyMode {
    fn from(mode: PolicyMode) -> Self {
        match mode {
            PolicyMode::Protect => Self::Protect,
            PolicyMode::Monitor => Self::Monitor,
        }
    }
}

/// An admission rule: operations on resources the policy is called for
/// (`admissionregistration.k8s.io/v1` `RuleWithOperations`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleWithOperations {
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `*`; at least one.
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub operations: Vec<String>,
    /// API groups (`""` is the core group, `*` all groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_groups: Option<Vec<String>>,
    /// API versions (`*` for all); at least one.
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub api_versions: Vec<String>,
    /// Resources (`pods`, `pods/status`, `*`, `*/*`); at least one.
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub resources: Vec<String>,
    /// `Cluster`, `Namespaced` or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// An admission rule of an [`AdmissionPolicy`]: a [`RuleWithOperations`]
/// that may not target every resource of every API group, nor policy reports
/// (a namespace's users must not be able to intercept those).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.apiGroups) && self.apiGroups.exists(g, g == '*') && self.resources.exists(r, r == '*' || r == '*/*'))").message("AdmissionPolicy rules cannot target every resource of every API group"))]
#[x_kube(validation = Rule::new("!(has(self.apiGroups) && self.apiGroups.exists(g, g == '*' || g == 'wgpolicyk8s.io' || g == 'openreports.io') && self.resources.exists(r, r == '*' || r == 'policyreports' || r == 'reports' || r.startsWith('policyreports/') || r.startsWith('reports/')))").message("AdmissionPolicy rules cannot target policy reports (wgpolicyk8s.io, openreports.io)"))]
pub struct NamespacedRuleWithOperations {
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `*`; at least one.
    #[schemars(length(min = 1, max = 8), inner(length(min = 1, max = 16)))]
    pub operations: Vec<String>,
    /// API groups (`""` is the core group, `*` all groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub api_groups: Option<Vec<String>>,
    /// API versions (`*` for all); at least one.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 63)))]
    pub api_versions: Vec<String>,
    /// Resources (`pods`, `pods/status`, `*`, `*/*`); at least one.
    #[schemars(length(min = 1, max = 128), inner(length(min = 1, max = 253)))]
    pub resources: Vec<String>,
    /// Ignored: the scope of an AdmissionPolicy's rules is always `Namespaced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl From<NamespacedRuleWithOperations> for RuleWithOperations {
    fn from(r: NamespacedRuleWithOperations) -> Self {
        RuleWithOperations {
            operations: r.operations,
            api_groups: r.api_groups,
            api_versions: r.api_versions,
            resources: r.resources,
            scope: r.scope,
        }
    }
}

/// A resource type a context-aware policy may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextAwareResource {
    /// e.g. `v1`, `apps/v1`.
    pub api_version: String,
    /// e.g. `Namespace`.
    pub kind: String,
}

/// Desired state of a [`ClusterAdmissionPolicy`].
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "policies.portcullis.dev",
    version = "v1",
    kind = "ClusterAdmissionPolicy",
    shortname = "cap",
    status = "PolicyStatus",
    selectable = ".spec.policyServer",
    doc = "A policy evaluated for matching requests in every namespace (and for cluster-scoped resources).",
    printcolumn(
        name = "Policy Server",
        type_ = "string",
        json_path = ".spec.policyServer"
    ),
    printcolumn(name = "Mutating", type_ = "boolean", json_path = ".spec.mutating"),
    printcolumn(
        name = "BackgroundAudit",
        type_ = "boolean",
        json_path = ".spec.backgroundAudit"
    ),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Observed mode", type_ = "string", json_path = ".status.mode"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.policyStatus"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Severity",
        type_ = "string",
        priority = "1",
        json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.severity"
    ),
    printcolumn(
        name = "Category",
        type_ = "string",
        priority = "1",
        json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.category"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.timeoutEvalSeconds) || self.timeoutEvalSeconds <= self.timeoutSeconds").message("timeoutEvalSeconds must not be greater than timeoutSeconds"))]
pub struct ClusterAdmissionPolicySpec {
    /// The PolicyServer that runs this policy. Immutable.
    #[serde(default = "default_policy_server")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("policyServer is immutable"))]
    pub policy_server: String,
    /// `protect` (default) or `monitor`. `monitor` → `protect` is allowed,
    /// `protect` → `monitor` is not.
    #[serde(default)]
    #[x_kube(validation = Rule::new("!(oldSelf == 'protect' && self == 'monitor')").message("mode cannot change from protect to monitor; delete and recreate the policy"))]
    pub mode: PolicyMode,
    /// Where the wasm module comes from: `registry://`, `http(s)://`, `file://`.
    pub module: String,
    /// The policy's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub settings: Option<Value>,
    /// Requests the policy is called for; at least one rule.
    #[schemars(length(min = 1))]
    pub rules: Vec<RuleWithOperations>,
    /// `Fail` or `Ignore`; the API server default (`Fail`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<String>,
    /// Whether the policy may mutate requests (a MutatingWebhookConfiguration).
    pub mutating: bool,
    /// Whether the audit scanner evaluates existing resources with this policy.
    #[serde(default = "default_true")]
    pub background_audit: bool,
    /// `Exact` or `Equivalent`; the API server default (`Equivalent`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_policy: Option<String>,
    /// CEL conditions a request must match to be sent to the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_conditions: Option<Vec<MatchCondition>>,
    /// Only objects whose labels match are sent to the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,
    /// `None` (default) or `NoneOnDryRun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_effects: Option<String>,
    /// Webhook timeout (2–30 s, default 10).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 2, max = 30))]
    pub timeout_seconds: i32,
    /// Evaluation deadline inside the policy-server (2–30 s, ≤ timeoutSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 30))]
    pub timeout_eval_seconds: Option<i32>,
    /// Replaces the rejection message of the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Only requests in matching namespaces are sent to the policy. The
    /// controller's namespace is excluded unless
    /// `allowInsideAdmissionControllerNamespace` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Also evaluate requests in the controller's namespace (default false).
    #[serde(default)]
    pub allow_inside_admission_controller_namespace: bool,
    /// Resources the policy may read through host capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aware_resources: Vec<ContextAwareResource>,
}

/// Desired state of an [`AdmissionPolicy`].
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "policies.portcullis.dev",
    version = "v1",
    kind = "AdmissionPolicy",
    namespaced,
    shortname = "ap",
    status = "PolicyStatus",
    selectable = ".spec.policyServer",
    doc = "A policy evaluated for matching requests in its own namespace.",
    printcolumn(
        name = "Policy Server",
        type_ = "string",
        json_path = ".spec.policyServer"
    ),
    printcolumn(name = "Mutating", type_ = "boolean", json_path = ".spec.mutating"),
    printcolumn(
        name = "BackgroundAudit",
        type_ = "boolean",
        json_path = ".spec.backgroundAudit"
    ),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Observed mode", type_ = "string", json_path = ".status.mode"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.policyStatus"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Severity",
        type_ = "string",
        priority = "1",
        json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.severity"
    ),
    printcolumn(
        name = "Category",
        type_ = "string",
        priority = "1",
        json_path = ".metadata.annotations.io\\.kubewarden\\.policy\\.category"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.timeoutEvalSeconds) || self.timeoutEvalSeconds <= self.timeoutSeconds").message("timeoutEvalSeconds must not be greater than timeoutSeconds"))]
pub struct AdmissionPolicySpec {
    /// The PolicyServer that runs this policy. Immutable.
    #[serde(default = "default_policy_server")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("policyServer is immutable"))]
    pub policy_server: String,
    /// `protect` (default) or `monitor`. `monitor` → `protect` is allowed,
    /// `protect` → `monitor` is not.
    #[serde(default)]
    #[x_kube(validation = Rule::new("!(oldSelf == 'protect' && self == 'monitor')").message("mode cannot change from protect to monitor; delete and recreate the policy"))]
    pub mode: PolicyMode,
    /// Where the wasm module comes from: `registry://`, `http(s)://`, `file://`.
    pub module: String,
    /// The policy's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub settings: Option<Value>,
    /// Requests the policy is called for; 1–64 rules (bounded so that the CEL
    /// checks of each rule fit the API server's cost budget). The scope is
    /// forced to `Namespaced`.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<NamespacedRuleWithOperations>,
    /// `Fail` or `Ignore`; the API server default (`Fail`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<String>,
    /// Whether the policy may mutate requests (a MutatingWebhookConfiguration).
    pub mutating: bool,
    /// Whether the audit scanner evaluates existing resources with this policy.
    #[serde(default = "default_true")]
    pub background_audit: bool,
    /// `Exact` or `Equivalent`; the API server default (`Equivalent`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_policy: Option<String>,
    /// CEL conditions a request must match to be sent to the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_conditions: Option<Vec<MatchCondition>>,
    /// Only objects whose labels match are sent to the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,
    /// `None` (default) or `NoneOnDryRun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_effects: Option<String>,
    /// Webhook timeout (2–30 s, default 10).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 2, max = 30))]
    pub timeout_seconds: i32,
    /// Evaluation deadline inside the policy-server (2–30 s, ≤ timeoutSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 30))]
    pub timeout_eval_seconds: Option<i32>,
    /// Replaces the rejection message of the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Lifecycle of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyStatusEnum {
    /// No policy server is named.
    Unscheduled,
    /// The named policy server does not exist (or is being deleted).
    Scheduled,
    /// The policy server exists but is not ready to serve the policy yet.
    Pending,
    /// The webhook is registered.
    Active,
}

/// Observed state of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Where the policy is in its lifecycle.
    pub policy_status: PolicyStatusEnum,
    /// The mode the policy is served with (`protect`, `monitor`, `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `PolicyActive` and friends.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Security contexts of the policy-server pod and container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyServerSecurity {
    /// Replaces the default (hardened) container security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<SecurityContext>,
    /// Replaces the default pod security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSecurityContext>,
}

/// Desired state of a [`PolicyServer`].
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "policies.portcullis.dev",
    version = "v1",
    kind = "PolicyServer",
    shortname = "ps",
    status = "PolicyServerStatus",
    doc = "A Deployment of policy-servers that serves the policies bound to it.",
    validation = Rule::new("size(self.metadata.name) <= 49").message("name must be at most 49 characters so that policy-server-<name> fits in 63"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("name must be a DNS label (lower-case letters, digits and '-')"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))").message("minAvailable and maxUnavailable cannot both be set"))]
#[x_kube(validation = Rule::new("self.webhookPort != self.readinessProbePort").message("webhookPort and readinessProbePort must differ"))]
pub struct PolicyServerSpec {
    /// The policy-server container image.
    pub image: String,
    /// Number of replicas.
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// PodDisruptionBudget minAvailable (exclusive with maxUnavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// PodDisruptionBudget maxUnavailable (exclusive with minAvailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Annotations added to the Deployment and its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Labels added to the Deployment and its pods (system labels win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Environment variables appended after the controller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Service account of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the controller namespace
    /// with registry credentials for module pulls (mounted as the
    /// policy-server's Docker `config.json`; not a pod imagePullSecret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Registries that may be reached without TLS verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_sources: Option<Vec<String>>,
    /// Extra CA certificates (PEM) per registry `host[:port]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_authorities: Option<BTreeMap<String, Vec<String>>>,
    /// ConfigMap with a signature verification config. Not implemented yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_config: Option<String>,
    /// ConfigMap with a sigstore trust config. Not implemented yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigstore_trust_config: Option<String>,
    /// Replaces the default (hardened) security contexts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_contexts: Option<PolicyServerSecurity>,
    /// Pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Pod priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Container resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    /// Container resource requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
    /// Host capabilities granted to namespaced policies (`*`, `oci/*`, ...).
    /// Cluster-wide policies always get every capability. Unset grants all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaced_policies_capabilities: Option<Vec<String>>,
    /// Port of the HTTPS webhook listener (default 8443).
    #[serde(default = "default_webhook_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub webhook_port: i32,
    /// Port of the plain-HTTP probe listener (default 8081).
    #[serde(default = "default_readiness_probe_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub readiness_probe_port: i32,
    /// Metrics port. Not implemented yet (metrics are on the probe port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: Option<i32>,
}

/// Observed state of a [`PolicyServer`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyServerStatus {
    /// `CertSecretReconciled`, `ConfigMapReconciled`, `DeploymentReconciled`,
    /// `ServiceReconciled`, `PodDisruptionBudgetReconciled`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The CRDs of this crate, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        PolicyServer::crd(),
        ClusterAdmissionPolicy::crd(),
        AdmissionPolicy::crd(),
    ]
}

/// The checked-in file name of a CRD: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// The YAML of a CRD as checked in under `controller/crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(crd)?;
    Ok(format!(
        "# Generated by `portcullis-controller crds --out-dir controller/crds`; do not edit.\n{body}"
    ))
}

/// Keeps the derived-name arithmetic in one place: the CEL limit above is
/// `MAX_POLICY_SERVER_NAME_LEN`.
const _: () = assert!(MAX_POLICY_SERVER_NAME_LEN == 49);

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in YAML must be what the Rust types generate.
    #[test]
    fn checked_in_crds_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for crd in crds() {
            let path = dir.join(crd_file_name(&crd));
            let expected = crd_yaml(&crd).unwrap();
            let actual = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                actual == expected,
                "{} is stale; regenerate with `cargo run -p portcullis-controller -- crds --out-dir controller/crds`",
                path.display()
            );
        }
    }

    #[test]
    fn kubewarden_spec_deserialises() {
        let yaml = r#"
policyServer: default
module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
    operations: ["CREATE", "UPDATE"]
mutating: false
"#;
        let spec: ClusterAdmissionPolicySpec = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(spec.mode, PolicyMode::Protect);
        assert_eq!(spec.timeout_seconds, 10);
        assert!(spec.background_audit);
        assert_eq!(spec.rules[0].resources, vec!["pods".to_string()]);
    }

    #[test]
    fn schema_has_cel_rules() {
        let json = serde_json::to_string(&ClusterAdmissionPolicy::crd()).unwrap();
        assert!(json.contains("self == oldSelf"), "{json}");
        assert!(json.contains("oldSelf == 'protect'"));
        assert!(json.contains("timeoutEvalSeconds <= self.timeoutSeconds"));
        let ps = serde_json::to_string(&PolicyServer::crd()).unwrap();
        assert!(ps.contains("size(self.metadata.name) <= 49"));
    }
}
