//! Host capabilities: the calls a policy may make back into the host.
//!
//! The adapters only route calls; the embedder decides what is granted and does
//! the work. Both ABIs use Kubewarden's names, so one implementation serves both:
//! a namespace (`kubernetes`, `oci`, `net`, `crypto`), an operation
//! (`get_resource`, `v1/manifest_digest`, ...) and a JSON payload.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a capability call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// The policy's configuration does not grant this capability.
    #[error("capability not granted: {0}")]
    NotGranted(String),
    /// The capability is granted, but the call failed.
    #[error("{0}")]
    Failed(String),
    /// The evaluation's deadline passed before the call could answer.
    #[error("{0}: the evaluation deadline passed before the host answered")]
    DeadlineExceeded(String),
}

/// What a host call knows about the evaluation that makes it.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The id of the policy making the call, for logs and grants.
    pub policy_id: &'a str,
    /// When the evaluation's deadline passes. Every call must answer by then:
    /// a blocking call that outlives it would hold a worker that the epoch
    /// deadline cannot reclaim.
    pub deadline: Instant,
}

impl CallContext<'_> {
    /// Time left until the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// The objects of one kind of resource that a context-aware policy may read.
#[derive(Debug, Clone)]
pub struct ContextResourceList {
    /// `v1`, `apps/v1`, ...
    pub api_version: String,
    /// `Namespace`, `Deployment`, ...
    pub kind: String,
    /// The resource's plural name (`namespaces`), which OPA policies use as a key.
    pub plural: String,
    /// The objects, in the API server's JSON form.
    pub objects: Arc<Vec<serde_json::Value>>,
    /// Changes whenever `objects` does, so that what is derived from the
    /// list can be reused until then.
    pub revision: u64,
}

/// Implemented by the embedder to serve host calls from policies.
///
/// Calls are made from the evaluating thread and block it, so an
/// implementation must answer by `ctx.deadline`, with
/// [`CapabilityError::DeadlineExceeded`] if need be.
pub trait HostCapabilities: Send + Sync {
    /// Serve one call; `payload` and the answer are JSON.
    fn call(
        &self,
        ctx: &CallContext<'_>,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CapabilityError>;

    /// The objects of every kind the policy may read, for policies that take
    /// the cluster's state as data instead of asking for it: Rego policies
    /// (OPA's `data.kubernetes`, Gatekeeper's `data.inventory`). Called once
    /// per evaluation of such a policy, so it should answer from a cache.
    /// The default offers nothing.
    fn context_resources(
        &self,
        _ctx: &CallContext<'_>,
    ) -> Result<Vec<ContextResourceList>, CapabilityError> {
        Ok(Vec::new())
    }

    /// Whether this grants nothing at all, so that it answers every call as
    /// any other such implementation would. Two evaluation contexts that
    /// both grant nothing are interchangeable, which lets a spare instance
    /// made under one serve the other. The default, `false`, is always safe.
    fn grants_nothing(&self) -> bool {
        false
    }
}

/// Grants nothing: every call answers [`CapabilityError::NotGranted`].
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCapabilities;

impl HostCapabilities for NoCapabilities {
    fn call(
        &self,
        _ctx: &CallContext<'_>,
        namespace: &str,
        operation: &str,
        _payload: &[u8],
    ) -> Result<Vec<u8>, CapabilityError> {
        Err(CapabilityError::NotGranted(format!(
            "{namespace}/{operation}"
        )))
    }

    fn grants_nothing(&self) -> bool {
        true
    }
}
