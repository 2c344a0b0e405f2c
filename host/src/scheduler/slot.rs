//! The handles an evaluation holds while it runs or waits: its slot, where
//! it delivers its result, and its place in a queue. Each gives back what it
//! holds when dropped, so a job that panics or a client that goes away
//! cannot leak a slot.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{RequestClass, Shared};

/// Where a job started by [`Scheduler::run_delivering`](super::Scheduler::run_delivering)
/// sends its result.
pub struct Delivery<T> {
    pub(super) slot: Slot,
    pub(super) done: oneshot::Sender<T>,
}

impl<T> Delivery<T> {
    /// Frees the job's slot, then sends `value` to the caller: whoever sees
    /// the answer sees the slot free. The evaluation thread stays busy with
    /// whatever the job does after this, which is why it must be short.
    pub fn deliver(self, value: T) {
        drop(self.slot);
        let _ = self.done.send(value);
    }
}

/// The right to run one evaluation. Dropping it (when the job ends, or if
/// it never started) frees the slot and serves the next waiting request.
pub(crate) struct Slot {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
    pub(super) armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.shared.lock();
            self.shared.finish(&mut state, self.id);
            self.shared.dispatch(&mut state);
        }
    }
}

/// Removes a queued request from its policy's queue when its future is
/// dropped before being granted a slot.
pub(super) struct QueuedGuard<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) policy: &'a str,
    pub(super) class: RequestClass,
    pub(super) id: u64,
    pub(super) armed: bool,
}

impl QueuedGuard<'_> {
    /// Leaves the queue; false when the request was no longer in it
    /// (granted meanwhile).
    pub(super) fn leave(&self) -> bool {
        let mut state = self.shared.lock();
        let c = self.class.index();
        let Some(queue) = state.policies.get_mut(self.policy) else {
            return false;
        };
        let before = queue.waiting[c].len();
        queue.waiting[c].retain(|w| w.id != self.id);
        let removed = queue.waiting[c].len() != before;
        if queue.waiting[c].is_empty() {
            state.turns[c].retain(|p| &**p != self.policy);
        }
        state.forget_if_idle(self.policy);
        removed
    }
}

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.leave();
        }
    }
}
