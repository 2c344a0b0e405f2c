//! The parts every policy kind shares: the common spec (flattened into each
//! kind's spec), admission rules, the module a policy runs, the cluster-wide
//! selectors, and the status.

use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Schema of a free-form JSON object (policy settings).
pub(crate) fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
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

/// An admission rule of a namespaced policy kind: a [`RuleWithOperations`]
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
    /// Ignored: the scope of a namespaced policy's rules is always `Namespaced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl NamespacedRuleWithOperations {
    /// The rule as the webhook gets it: scope `Namespaced`, whatever the spec says.
    pub fn to_rule(&self) -> RuleWithOperations {
        RuleWithOperations {
            operations: self.operations.clone(),
            api_groups: self.api_groups.clone(),
            api_versions: self.api_versions.clone(),
            resources: self.resources.clone(),
            scope: Some("Namespaced".to_string()),
        }
    }
}

/// A resource type a context-aware policy may read.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ContextAwareResource {
    /// e.g. `v1`, `apps/v1`.
    pub api_version: String,
    /// e.g. `Namespace`.
    pub kind: String,
}

/// The fields every policy kind has: plain policies and groups, cluster-wide
/// and namespaced. Flattened into each kind's spec, so the YAML is
/// Kubewarden's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpecCommon {
    /// The PolicyServer that runs this policy. Immutable.
    #[serde(default = "default_policy_server")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("policyServer is immutable"))]
    pub policy_server: String,
    /// `protect` (default) or `monitor`. `monitor` → `protect` is allowed,
    /// `protect` → `monitor` is not.
    #[serde(default)]
    #[x_kube(validation = Rule::new("!(oldSelf == 'protect' && self == 'monitor')").message("mode cannot change from protect to monitor; delete and recreate the policy"))]
    pub mode: PolicyMode,
    /// `Fail` or `Ignore`; the API server default (`Fail`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<String>,
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
    /// Replaces the rejection message of the policy (required on groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a policy (or a group member) runs: the module, its settings and the
/// resources it may read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyModule {
    /// Where the wasm module comes from: `registry://`, `http(s)://`, `file://`.
    pub module: String,
    /// The policy's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub settings: Option<Value>,
    /// Resources the policy may read through host capabilities. The
    /// controller grants the policy-server's ServiceAccount `get`, `list` and
    /// `watch` on them: cluster-wide for cluster-wide kinds, in the policy's
    /// own namespace for namespaced kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aware_resources: Vec<ContextAwareResource>,
}

/// Module sources a namespaced policy (a tenant's) may use. The CRDs of the
/// namespaced kinds have the same check as a CEL rule, with
/// [`NAMESPACED_MODULE_MESSAGE`].
pub const NAMESPACED_MODULE_SCHEMES: [&str; 2] = ["registry://", "https://"];

/// Why a namespaced policy's module is refused.
pub const NAMESPACED_MODULE_MESSAGE: &str = "namespaced policies may only use registry:// and https:// modules (file:// and http:// are reserved to cluster-wide policies)";

impl PolicyModule {
    /// Whether a namespaced policy may use this module source: only
    /// `registry://` and `https://` (no files of the policy-server's Pod, no
    /// plain HTTP).
    pub fn allowed_for_namespaced(&self) -> bool {
        NAMESPACED_MODULE_SCHEMES
            .iter()
            .any(|scheme| self.module.starts_with(scheme))
    }
}

/// Where a cluster-wide policy applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterScope {
    /// Only requests in matching namespaces are sent to the policy. The
    /// controller's namespace is excluded unless
    /// `allowInsideAdmissionControllerNamespace` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Also evaluate requests in the controller's namespace (default false).
    #[serde(default)]
    pub allow_inside_admission_controller_namespace: bool,
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

impl PolicyStatusEnum {
    /// The lower-case value written in `status.policyStatus`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unscheduled => "unscheduled",
            Self::Scheduled => "scheduled",
            Self::Pending => "pending",
            Self::Active => "active",
        }
    }
}

/// Observed state of a policy (every kind).
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
