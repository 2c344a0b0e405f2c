//! ClusterAdmissionPolicyGroup and AdmissionPolicyGroup: several member
//! policies combined by a CEL expression over their verdicts, served behind
//! one validating webhook.
//!
//! The CEL rules both group kinds share ([`GROUP_RULES`]) are added to their
//! schemas by [`crate::crds`].

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::spec::{
    ClusterScope, NamespacedRuleWithOperations, PolicyModule, PolicySpecCommon, PolicyStatus,
    RuleWithOperations,
};

/// A member of a policy group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGroupMember {
    /// The member's module, settings and context-aware resources.
    #[serde(flatten)]
    pub module: PolicyModule,
    /// The member's evaluation deadline (2–30 s; it must fit the group's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 30))]
    pub timeout_eval_seconds: Option<i32>,
}

/// Members of a group by name: at most 32, each name a CEL identifier.
pub type PolicyGroupMembers = BTreeMap<String, PolicyGroupMember>;

/// Desired state of a [`ClusterAdmissionPolicyGroup`].
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "policies.portcullis.dev",
    version = "v1",
    kind = "ClusterAdmissionPolicyGroup",
    shortname = "capg",
    status = "PolicyStatus",
    selectable = ".spec.policyServer",
    doc = "Member policies combined by a CEL expression, evaluated for matching requests in every namespace."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAdmissionPolicyGroupSpec {
    /// The fields of every policy kind; `message` is required.
    #[serde(flatten)]
    pub common: PolicySpecCommon,
    /// Requests the group is called for; at least one rule.
    #[schemars(length(min = 1))]
    pub rules: Vec<RuleWithOperations>,
    /// CEL over the member names, each a function returning whether that
    /// member accepts (e.g. `signed() || internal_registry()`).
    #[schemars(length(min = 1, max = 4096))]
    pub expression: String,
    /// The members by name (1–32).
    #[schemars(extend("maxProperties" = 32))]
    pub policies: PolicyGroupMembers,
    /// Namespace selection.
    #[serde(flatten)]
    pub scope: ClusterScope,
}

/// Desired state of an [`AdmissionPolicyGroup`].
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "policies.portcullis.dev",
    version = "v1",
    kind = "AdmissionPolicyGroup",
    namespaced,
    shortname = "apg",
    status = "PolicyStatus",
    selectable = ".spec.policyServer",
    doc = "Member policies combined by a CEL expression, evaluated for matching requests in its own namespace."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.policies.all(name, self.policies[name].module.startsWith('registry://') || self.policies[name].module.startsWith('https://'))").message("namespaced policies may only use registry:// and https:// modules (file:// and http:// are reserved to cluster-wide policies)"))]
pub struct AdmissionPolicyGroupSpec {
    /// The fields of every policy kind; `message` is required.
    #[serde(flatten)]
    pub common: PolicySpecCommon,
    /// Requests the group is called for; 1–64 rules, scoped `Namespaced`.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<NamespacedRuleWithOperations>,
    /// CEL over the member names, each a function returning whether that
    /// member accepts.
    #[schemars(length(min = 1, max = 4096))]
    pub expression: String,
    /// The members by name (1–32); `registry://` and `https://` modules only.
    #[schemars(extend("maxProperties" = 32))]
    pub policies: PolicyGroupMembers,
}

/// The CEL rules of both group kinds' `spec`: (rule, message).
pub const GROUP_RULES: [(&str, &str); 5] = [
    (
        "has(self.message) && size(self.message) > 0",
        "message is required: it is the rejection message of the group",
    ),
    (
        "size(self.policies) > 0",
        "a policy group needs at least one member in policies",
    ),
    (
        "self.policies.all(name, name.matches('^[a-zA-Z_][a-zA-Z0-9_]*$') && !(name in ['true', 'false', 'null', 'in', 'as', 'break', 'const', 'continue', 'else', 'for', 'function', 'if', 'import', 'let', 'loop', 'package', 'namespace', 'return', 'var', 'void', 'while']))",
        "member names must be CEL identifiers (a letter or _, then letters, digits or _) and not CEL reserved words",
    ),
    (
        "self.policies.all(name, !has(self.policies[name].timeoutEvalSeconds) || (self.policies[name].timeoutEvalSeconds <= self.timeoutSeconds && (!has(self.timeoutEvalSeconds) || self.policies[name].timeoutEvalSeconds <= self.timeoutEvalSeconds)))",
        "a member's timeoutEvalSeconds must not be greater than the group's timeoutSeconds (nor its timeoutEvalSeconds)",
    ),
    (
        "self.policies.map(name, has(self.policies[name].timeoutEvalSeconds) ? self.policies[name].timeoutEvalSeconds : 0).sum() <= self.timeoutSeconds",
        "the members' timeoutEvalSeconds add up to more than the group's timeoutSeconds",
    ),
];
