//! ClusterAdmissionPolicy and AdmissionPolicy: one module, one webhook.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::spec::{
    ClusterScope, NamespacedRuleWithOperations, PolicyModule, PolicySpecCommon, PolicyStatus,
    RuleWithOperations,
};

/// Desired state of a [`ClusterAdmissionPolicy`].
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "policies.portcullis.dev",
    version = "v1",
    kind = "ClusterAdmissionPolicy",
    shortname = "cap",
    status = "PolicyStatus",
    selectable = ".spec.policyServer",
    doc = "A policy evaluated for matching requests in every namespace (and for cluster-scoped resources)."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAdmissionPolicySpec {
    /// The fields of every policy kind.
    #[serde(flatten)]
    pub common: PolicySpecCommon,
    /// Requests the policy is called for; at least one rule.
    #[schemars(length(min = 1))]
    pub rules: Vec<RuleWithOperations>,
    /// The module, its settings and context-aware resources.
    #[serde(flatten)]
    pub module: PolicyModule,
    /// Whether the policy may mutate requests (a MutatingWebhookConfiguration).
    pub mutating: bool,
    /// Namespace selection.
    #[serde(flatten)]
    pub scope: ClusterScope,
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
    doc = "A policy evaluated for matching requests in its own namespace."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.module.startsWith('registry://') || self.module.startsWith('https://')").message("namespaced policies may only use registry:// and https:// modules (file:// and http:// are reserved to cluster-wide policies)"))]
pub struct AdmissionPolicySpec {
    /// The fields of every policy kind.
    #[serde(flatten)]
    pub common: PolicySpecCommon,
    /// Requests the policy is called for; 1–64 rules (bounded so that the CEL
    /// checks of each rule fit the API server's cost budget). The scope is
    /// forced to `Namespaced`.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<NamespacedRuleWithOperations>,
    /// The module (`registry://` or `https://` only), its settings and the
    /// resources it may read in its own namespace.
    #[serde(flatten)]
    pub module: PolicyModule,
    /// Whether the policy may mutate requests (a MutatingWebhookConfiguration).
    pub mutating: bool,
}
