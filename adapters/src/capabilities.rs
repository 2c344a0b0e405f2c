//! Host capabilities: the calls a policy may make back into the host.
//!
//! The adapters only route calls; the embedder decides what is granted and does
//! the work. Both ABIs use Kubewarden's names, so one implementation serves both:
//! a namespace (`kubernetes`, `oci`, `net`, `crypto`), an operation
//! (`get_resource`, `v1/manifest_digest`, ...) and a JSON payload.

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
}
