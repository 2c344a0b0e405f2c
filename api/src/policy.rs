//! One view of every policy kind: what the controller and the audit scanner
//! need from a policy, whatever its kind.

use kube::core::object::HasStatus;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::groups::{AdmissionPolicyGroup, ClusterAdmissionPolicyGroup, PolicyGroupMembers};
use crate::names::policy_id;
use crate::policies::{AdmissionPolicy, ClusterAdmissionPolicy};
use crate::spec::{
    ClusterScope, ContextAwareResource, PolicyModule, PolicySpecCommon, PolicyStatus,
    RuleWithOperations,
};

/// The policy kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// A ClusterAdmissionPolicy.
    ClusterAdmissionPolicy,
    /// An AdmissionPolicy (namespaced).
    AdmissionPolicy,
    /// A ClusterAdmissionPolicyGroup.
    ClusterAdmissionPolicyGroup,
    /// An AdmissionPolicyGroup (namespaced).
    AdmissionPolicyGroup,
}

impl PolicyKind {
    /// Every kind.
    pub const ALL: [PolicyKind; 4] = [
        Self::ClusterAdmissionPolicy,
        Self::AdmissionPolicy,
        Self::ClusterAdmissionPolicyGroup,
        Self::AdmissionPolicyGroup,
    ];

    /// Whether objects of this kind live in a namespace (and apply there only).
    pub fn is_namespaced(self) -> bool {
        matches!(self, Self::AdmissionPolicy | Self::AdmissionPolicyGroup)
    }

    /// Whether this is a group kind.
    pub fn is_group(self) -> bool {
        matches!(
            self,
            Self::ClusterAdmissionPolicyGroup | Self::AdmissionPolicyGroup
        )
    }

    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterAdmissionPolicy => "ClusterAdmissionPolicy",
            Self::AdmissionPolicy => "AdmissionPolicy",
            Self::ClusterAdmissionPolicyGroup => "ClusterAdmissionPolicyGroup",
            Self::AdmissionPolicyGroup => "AdmissionPolicyGroup",
        }
    }
}

/// What a policy runs.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyBody {
    /// One module.
    Module(PolicyModule),
    /// Members combined by a CEL expression over their verdicts.
    Group {
        /// The expression (e.g. `signed() || internal()`).
        expression: String,
        /// The members by name.
        members: PolicyGroupMembers,
    },
}

impl PolicyBody {
    /// Every module the policy runs.
    pub fn modules(&self) -> Box<dyn Iterator<Item = &PolicyModule> + '_> {
        match self {
            Self::Module(module) => Box::new(std::iter::once(module)),
            Self::Group { members, .. } => Box::new(members.values().map(|m| &m.module)),
        }
    }
}

/// A policy of any kind, with what every kind has resolved: its id, its
/// rules as the webhook gets them, and where it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyView {
    /// The kind.
    pub kind: PolicyKind,
    /// The policy id (see [`policy_id`]).
    pub id: String,
    /// metadata.name.
    pub name: String,
    /// metadata.namespace (namespaced kinds only).
    pub namespace: Option<String>,
    /// metadata.uid.
    pub uid: Option<String>,
    /// Whether metadata.deletionTimestamp is set.
    pub deleting: bool,
    /// The fields every kind shares.
    pub common: PolicySpecCommon,
    /// The rules as the webhook gets them: a namespaced kind's are scoped
    /// `Namespaced`.
    pub rules: Vec<RuleWithOperations>,
    /// The namespace selection of a cluster-wide kind; `None` for namespaced
    /// kinds, which apply in their own namespace only.
    pub scope: Option<ClusterScope>,
    /// Whether the policy may mutate (a MutatingWebhookConfiguration).
    pub mutating: bool,
    /// What it runs.
    pub body: PolicyBody,
}

impl PolicyView {
    /// Why the controller refuses to serve this policy, if it does: a
    /// namespaced policy (a tenant's) whose module is not `registry://` or
    /// `https://`. The CRDs' CEL rules refuse these already; this is the
    /// controller's own check, for objects the API server let through (an
    /// older CRD, a rule removed).
    pub fn refusal(&self) -> Option<String> {
        if !self.kind.is_namespaced() {
            return None;
        }
        self.body
            .modules()
            .find(|m| !m.allowed_for_namespaced())
            .map(|m| {
                format!(
                    "module {:?} refused: {}",
                    m.module,
                    crate::spec::NAMESPACED_MODULE_MESSAGE
                )
            })
    }

    /// The resources the policy's modules may read, each once, sorted.
    pub fn context_aware_resources(&self) -> Vec<&ContextAwareResource> {
        let mut resources: Vec<&ContextAwareResource> = self
            .body
            .modules()
            .flat_map(|m| m.context_aware_resources.iter())
            .collect();
        resources.sort();
        resources.dedup();
        resources
    }
}

/// Implemented by every policy kind.
pub trait PolicyResource:
    Resource<DynamicType = ()>
    + HasStatus<Status = PolicyStatus>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Which kind this is.
    const KIND: PolicyKind;

    /// The fields every kind shares.
    fn common(&self) -> &PolicySpecCommon;

    /// The rules as the webhook gets them.
    fn rules(&self) -> Vec<RuleWithOperations>;

    /// What the policy runs.
    fn body(&self) -> PolicyBody;

    /// Where a cluster-wide kind applies; `None` for namespaced kinds.
    fn scope(&self) -> Option<&ClusterScope> {
        None
    }

    /// Whether the policy may mutate requests.
    fn mutating(&self) -> bool {
        false
    }

    /// An API for this object (in its namespace, for namespaced kinds).
    fn api_for(&self, client: Client) -> Api<Self>;

    /// The policy id.
    fn id(&self) -> String {
        policy_id(Self::KIND, self.namespace().as_deref(), &self.name_any())
    }

    /// The kind-independent view.
    fn view(&self) -> PolicyView {
        PolicyView {
            kind: Self::KIND,
            id: self.id(),
            name: self.name_any(),
            namespace: self.namespace(),
            uid: self.meta().uid.clone(),
            deleting: self.meta().deletion_timestamp.is_some(),
            common: self.common().clone(),
            rules: self.rules(),
            scope: self.scope().cloned(),
            mutating: self.mutating(),
            body: self.body(),
        }
    }
}

impl PolicyResource for ClusterAdmissionPolicy {
    const KIND: PolicyKind = PolicyKind::ClusterAdmissionPolicy;

    fn common(&self) -> &PolicySpecCommon {
        &self.spec.common
    }

    fn rules(&self) -> Vec<RuleWithOperations> {
        self.spec.rules.clone()
    }

    fn body(&self) -> PolicyBody {
        PolicyBody::Module(self.spec.module.clone())
    }

    fn scope(&self) -> Option<&ClusterScope> {
        Some(&self.spec.scope)
    }

    fn mutating(&self) -> bool {
        self.spec.mutating
    }

    fn api_for(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
}

impl PolicyResource for AdmissionPolicy {
    const KIND: PolicyKind = PolicyKind::AdmissionPolicy;

    fn common(&self) -> &PolicySpecCommon {
        &self.spec.common
    }

    fn rules(&self) -> Vec<RuleWithOperations> {
        self.spec.rules.iter().map(|r| r.to_rule()).collect()
    }

    fn body(&self) -> PolicyBody {
        PolicyBody::Module(self.spec.module.clone())
    }

    fn mutating(&self) -> bool {
        self.spec.mutating
    }

    fn api_for(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl PolicyResource for ClusterAdmissionPolicyGroup {
    const KIND: PolicyKind = PolicyKind::ClusterAdmissionPolicyGroup;

    fn common(&self) -> &PolicySpecCommon {
        &self.spec.common
    }

    fn rules(&self) -> Vec<RuleWithOperations> {
        self.spec.rules.clone()
    }

    fn body(&self) -> PolicyBody {
        PolicyBody::Group {
            expression: self.spec.expression.clone(),
            members: self.spec.policies.clone(),
        }
    }

    fn scope(&self) -> Option<&ClusterScope> {
        Some(&self.spec.scope)
    }

    fn api_for(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
}

impl PolicyResource for AdmissionPolicyGroup {
    const KIND: PolicyKind = PolicyKind::AdmissionPolicyGroup;

    fn common(&self) -> &PolicySpecCommon {
        &self.spec.common
    }

    fn rules(&self) -> Vec<RuleWithOperations> {
        self.spec.rules.iter().map(|r| r.to_rule()).collect()
    }

    fn body(&self) -> PolicyBody {
        PolicyBody::Group {
            expression: self.spec.expression.clone(),
            members: self.spec.policies.clone(),
        }
    }

    fn api_for(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}
