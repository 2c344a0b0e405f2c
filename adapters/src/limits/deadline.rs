//! Blocking host calls race the evaluation's deadline.
//!
//! Epoch interruption stops a guest only while it runs wasm code. A host
//! function that blocks (a WASI clock wait, above all) holds the worker thread
//! where the epoch cannot reach it, so every such function runs its wait
//! through [`block_on`], which gives up at the deadline and traps the guest
//! with [`DeadlineExceeded`], reported as [`EvalError::Timeout`](crate::EvalError::Timeout).

use std::future::Future;
use std::time::Instant;

/// The trap of a host call that was still waiting when the evaluation's
/// deadline passed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the evaluation deadline passed while the policy was waiting in a host call")]
pub(crate) struct DeadlineExceeded;

/// Run `wait` to completion or until `deadline`, whichever comes first.
///
/// It runs where wasmtime-wasi runs its own blocking calls (the ambient tokio
/// runtime, or wasmtime-wasi's), so the futures of WASI pollables work as
/// usual. A future that is ready at once is never cut, even past the
/// deadline: a guest polling with a zero timeout gets its answer, and the
/// epoch stops it as soon as it runs again.
pub(crate) fn block_on<F: Future>(
    deadline: Instant,
    wait: F,
) -> Result<F::Output, DeadlineExceeded> {
    wasmtime_wasi::runtime::in_tokio(async move {
        tokio::time::timeout_at(deadline.into(), wait)
            .await
            .map_err(|_| DeadlineExceeded)
    })
}

/// Fail with [`DeadlineExceeded`] if `deadline` has passed: for host calls
/// that cannot be cut while they run (an embedder's capability), so that the
/// guest does not go on computing on a late answer.
pub(crate) fn check(deadline: Instant) -> Result<(), DeadlineExceeded> {
    if Instant::now() >= deadline {
        Err(DeadlineExceeded)
    } else {
        Ok(())
    }
}
