//! The set of policies the server answers for: an immutable snapshot that
//! is swapped atomically on reload. A request holds the snapshot (or the
//! single policy) it started with, so a reload never changes a verdict
//! mid-request.

mod expression;
mod loader;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use portcullis_adapters::{EvalContext, HostCapabilities, LoadedModule, Settings};
use portcullis_config::{PolicyConfig, PolicyGroupConfig, PolicyMode};
use serde::Serialize;

pub use expression::GroupExpression;
pub use loader::PolicyLoader;

use crate::admission::PolicyBehaviour;

/// An immutable snapshot of every policy in the policies file.
#[derive(Default)]
pub struct PolicySet {
    /// Policies by id.
    pub policies: BTreeMap<String, PolicyState>,
    /// `sha256:<hex>` of the policies file contents this set was built from.
    pub config_digest: String,
    /// Incremented on every successful (re)load; 0 means "nothing loaded yet".
    pub generation: u64,
}

impl PolicySet {
    /// The policy with this id.
    pub fn get(&self, id: &str) -> Option<&PolicyState> {
        self.policies.get(id)
    }

    /// Whether some policy failed in a way that a later attempt may fix.
    pub fn has_retryable_failures(&self) -> bool {
        self.failures().any(|f| f.retryable)
    }

    /// The policies that failed to load.
    pub fn failures(&self) -> impl Iterator<Item = &FailedPolicy> {
        self.policies.values().filter_map(|state| match state {
            PolicyState::Failed(failed) => Some(failed.as_ref()),
            PolicyState::Loaded(_) | PolicyState::Group(_) => None,
        })
    }
}

/// A policy that is ready to evaluate, or the reason it is not.
#[derive(Clone)]
pub enum PolicyState {
    /// Compiled, settings validated.
    Loaded(Arc<LoadedPolicy>),
    /// A policy group whose members all loaded and whose expression compiled.
    Group(Arc<LoadedGroup>),
    /// Failed to download, compile or validate its settings; for a group,
    /// one of its members did, or its expression is invalid.
    Failed(Arc<FailedPolicy>),
}

impl PolicyState {
    /// The policy's mode, when its entry could be read.
    pub fn mode(&self) -> Option<PolicyMode> {
        match self {
            Self::Loaded(p) => Some(p.config.policy_mode),
            Self::Group(g) => Some(g.config.policy_mode),
            Self::Failed(f) => f.mode,
        }
    }
}

/// A policy ready to evaluate.
pub struct LoadedPolicy {
    /// The policy id.
    pub id: String,
    /// Its `policies.yml` entry, kept to detect unchanged policies on reload.
    pub config: PolicyConfig,
    /// The compiled module (shared with other policies using the same bytes).
    pub module: LoadedModule,
    /// `sha256:<hex>` of the module bytes.
    pub module_digest: String,
    /// The settings, parsed once.
    pub settings: Settings,
    /// Evaluation deadline.
    pub timeout: Duration,
    /// Host capabilities granted to this policy.
    pub capabilities: Arc<dyn HostCapabilities>,
}

impl LoadedPolicy {
    /// A fresh evaluation context for one request.
    pub fn eval_context(&self) -> EvalContext {
        EvalContext {
            policy_id: self.id.clone(),
            timeout: self.timeout,
            capabilities: Arc::clone(&self.capabilities),
        }
    }

    /// How the policy's verdict is enforced.
    pub fn behaviour(&self) -> PolicyBehaviour<'_> {
        PolicyBehaviour {
            policy_id: &self.id,
            mode: self.config.policy_mode,
            allowed_to_mutate: self.config.allowed_to_mutate,
            message: self.config.message.as_deref(),
        }
    }
}

/// A policy group ready to evaluate: members combined by a CEL expression.
pub struct LoadedGroup {
    /// The group's policy id.
    pub id: String,
    /// Its `policies.yml` entry.
    pub config: PolicyGroupConfig,
    /// The expression, compiled and checked.
    pub expression: GroupExpression,
    /// Members by name, each with its own module, settings, deadline and
    /// capabilities. A member's id is `<group>/<member>`, which no policy id
    /// can be (ids have no `/`).
    pub members: BTreeMap<String, Arc<LoadedPolicy>>,
}

impl LoadedGroup {
    /// How the group's verdict is enforced: its mode applies; it never
    /// mutates; its message is already set on denials.
    pub fn behaviour(&self) -> PolicyBehaviour<'_> {
        PolicyBehaviour {
            policy_id: &self.id,
            mode: self.config.policy_mode,
            allowed_to_mutate: false,
            message: None,
        }
    }
}

/// The id of a group member's policy: `<group>/<member>`.
pub fn member_id(group: &str, member: &str) -> String {
    format!("{group}/{member}")
}

/// A policy that could not be loaded.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedPolicy {
    /// The policy id.
    pub id: String,
    /// Why it failed, for responses, logs and /readiness.
    pub reason: String,
    /// Its mode, when the entry could be read.
    pub mode: Option<PolicyMode>,
    /// The module URI, when the entry could be read.
    pub module: Option<String>,
    /// The module digest, when the module could be fetched.
    pub module_digest: Option<String>,
    /// Whether loading again may succeed without a configuration change
    /// (the module could not be fetched).
    #[serde(skip)]
    pub retryable: bool,
}
