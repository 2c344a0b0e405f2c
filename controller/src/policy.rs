//! One view over both policy kinds, so the reconciler and the builders are
//! written once.

use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use serde_json::Value;

use crate::crd::{
    AdmissionPolicy, ClusterAdmissionPolicy, ContextAwareResource, PolicyMode, PolicyStatus,
    RuleWithOperations,
};
use crate::names::{clusterwide_id, namespaced_id};

/// Which kind a policy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A ClusterAdmissionPolicy.
    Cluster,
    /// An AdmissionPolicy (namespaced).
    Namespaced,
}

/// The fields of a policy the controller needs, whatever its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyView {
    /// Kind of the policy.
    pub kind: PolicyKind,
    /// `clusterwide-<name>` or `namespaced-<ns>-<name>`.
    pub id: String,
    /// metadata.name.
    pub name: String,
    /// metadata.namespace (AdmissionPolicy only).
    pub namespace: Option<String>,
    /// metadata.uid.
    pub uid: Option<String>,
    /// Whether metadata.deletionTimestamp is set.
    pub deleting: bool,
    /// spec.policyServer.
    pub policy_server: String,
    /// spec.mode.
    pub mode: PolicyMode,
    /// spec.module.
    pub module: String,
    /// spec.settings.
    pub settings: Option<Value>,
    /// spec.rules.
    pub rules: Vec<RuleWithOperations>,
    /// spec.failurePolicy.
    pub failure_policy: Option<String>,
    /// spec.mutating.
    pub mutating: bool,
    /// spec.matchPolicy.
    pub match_policy: Option<String>,
    /// spec.matchConditions.
    pub match_conditions: Option<Vec<MatchCondition>>,
    /// spec.objectSelector.
    pub object_selector: Option<LabelSelector>,
    /// spec.sideEffects.
    pub side_effects: Option<String>,
    /// spec.timeoutSeconds.
    pub timeout_seconds: i32,
    /// spec.timeoutEvalSeconds.
    pub timeout_eval_seconds: Option<i32>,
    /// spec.message.
    pub message: Option<String>,
    /// spec.namespaceSelector (cluster-wide only).
    pub namespace_selector: Option<LabelSelector>,
    /// spec.allowInsideAdmissionControllerNamespace (cluster-wide only).
    pub allow_inside_controller_namespace: bool,
    /// spec.contextAwareResources (cluster-wide only).
    pub context_aware_resources: Vec<ContextAwareResource>,
}

/// Implemented by both policy kinds.
pub trait Policy:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind-independent view of this policy.
    fn view(&self) -> PolicyView;
    /// The current status, if any.
    fn status(&self) -> Option<&PolicyStatus>;
    /// An API over every object of this kind (all namespaces).
    fn api_all(client: kube::Client) -> kube::Api<Self>;
    /// An API for this object (its namespace, if any).
    fn api_for(&self, client: kube::Client) -> kube::Api<Self>;
}

impl Policy for ClusterAdmissionPolicy {
    fn view(&self) -> PolicyView {
        let s = &self.spec;
        PolicyView {
            kind: PolicyKind::Cluster,
            id: clusterwide_id(&self.name_any()),
            name: self.name_any(),
            namespace: None,
            uid: self.metadata.uid.clone(),
            deleting: self.metadata.deletion_timestamp.is_some(),
            policy_server: s.policy_server.clone(),
            mode: s.mode,
            module: s.module.clone(),
            settings: s.settings.clone(),
            rules: s.rules.clone(),
            failure_policy: s.failure_policy.clone(),
            mutating: s.mutating,
            match_policy: s.match_policy.clone(),
            match_conditions: s.match_conditions.clone(),
            object_selector: s.object_selector.clone(),
            side_effects: s.side_effects.clone(),
            timeout_seconds: s.timeout_seconds,
            timeout_eval_seconds: s.timeout_eval_seconds,
            message: s.message.clone(),
            namespace_selector: s.namespace_selector.clone(),
            allow_inside_controller_namespace: s.allow_inside_admission_controller_namespace,
            context_aware_resources: s.context_aware_resources.clone(),
        }
    }

    fn status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }

    fn api_all(client: kube::Client) -> kube::Api<Self> {
        kube::Api::all(client)
    }

    fn api_for(&self, client: kube::Client) -> kube::Api<Self> {
        kube::Api::all(client)
    }
}

impl Policy for AdmissionPolicy {
    fn view(&self) -> PolicyView {
        let s = &self.spec;
        let namespace = self.namespace().unwrap_or_default();
        PolicyView {
            kind: PolicyKind::Namespaced,
            id: namespaced_id(&namespace, &self.name_any()),
            name: self.name_any(),
            namespace: Some(namespace),
            uid: self.metadata.uid.clone(),
            deleting: self.metadata.deletion_timestamp.is_some(),
            policy_server: s.policy_server.clone(),
            mode: s.mode,
            module: s.module.clone(),
            settings: s.settings.clone(),
            rules: s.rules.iter().cloned().map(Into::into).collect(),
            failure_policy: s.failure_policy.clone(),
            mutating: s.mutating,
            match_policy: s.match_policy.clone(),
            match_conditions: s.match_conditions.clone(),
            object_selector: s.object_selector.clone(),
            side_effects: s.side_effects.clone(),
            timeout_seconds: s.timeout_seconds,
            timeout_eval_seconds: s.timeout_eval_seconds,
            message: s.message.clone(),
            namespace_selector: None,
            allow_inside_controller_namespace: false,
            context_aware_resources: Vec::new(),
        }
    }

    fn status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
    fn api_all(client: kube::Client) -> kube::Api<Self> {
        kube::Api::all(client)
    }

    fn api_for(&self, client: kube::Client) -> kube::Api<Self> {
        kube::Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}
