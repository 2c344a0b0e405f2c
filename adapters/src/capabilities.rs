//! Host capabilities: the calls a policy may make back into the host.
//!
//! The adapters only route calls; the embedder decides what is granted and does
//! the work. Both ABIs use Kubewarden's names, so one implementation serves both:
//! a namespace (`kubernetes`, `oci`, `net`, `crypto`), an operation
//! (`get_resource`, `v1/manifest_digest`, ...) and a JSON payload.

/// Why a capability call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// The policy's configuration does not grant this capability.
    #[error("capability not granted: {0}")]
    NotGranted(String),
    /// The capability is granted, but the call failed.
    #[error("{0}")]
    Failed(String),
}

/// Implemented by the embedder to serve host calls from policies.
///
/// Calls are made from the evaluating thread and block it, so an
/// implementation should answer quickly or time out by itself.
pub trait HostCapabilities: Send + Sync {
    /// Serve one call; `payload` and the answer are JSON.
    fn call(
        &self,
        policy_id: &str,
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
        _policy_id: &str,
        namespace: &str,
        operation: &str,
        _payload: &[u8],
    ) -> Result<Vec<u8>, CapabilityError> {
        Err(CapabilityError::NotGranted(format!(
            "{namespace}/{operation}"
        )))
    }
}
