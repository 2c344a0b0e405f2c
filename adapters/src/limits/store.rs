//! [`StoreLimits`]: the per-evaluation limiter, and the classification of
//! what went wrong into a typed [`EvalError`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, Trap};

use super::{DeadlineExceeded, GuestLimits, GuestOutput};
use crate::error::EvalError;

/// Elements of all the tables of one instance together (8 or 16 bytes each).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// Instances, memories and tables per store. Components made by the usual
/// tool chains use a handful of each; the pooling allocator has its own caps.
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;

/// Per-store resource limits, with a record of why a limit was hit so that the
/// resulting trap is reported as what it is.
pub(crate) struct StoreLimits {
    max_memory_bytes: u64,
    /// Bytes of all the memories of the store: each memory counts.
    memory_bytes: u64,
    memory_limit_hit: bool,
    table_elements: usize,
    pub(crate) deadline_ticks: u64,
    /// When the evaluation must end; host calls are bounded by it.
    pub(crate) deadline: Instant,
    timeout: Duration,
    pub(crate) guest: GuestLimits,
    /// Created when the guest first logs or writes to stdio.
    output: Option<Arc<GuestOutput>>,
}

impl std::fmt::Debug for StoreLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLimits")
            .field("max_memory_bytes", &self.max_memory_bytes)
            .field("memory_bytes", &self.memory_bytes)
            .field("deadline", &self.deadline)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StoreLimits {
    /// Limits for one evaluation that starts now.
    pub(crate) fn new(
        max_memory_bytes: u64,
        epoch_tick: Duration,
        timeout: Duration,
        guest: GuestLimits,
    ) -> Self {
        let tick = epoch_tick.as_nanos().max(1);
        // One extra tick because the current tick may be about to end.
        let ticks = timeout.as_nanos().div_ceil(tick) as u64 + 1;
        StoreLimits {
            max_memory_bytes,
            memory_bytes: 0,
            memory_limit_hit: false,
            table_elements: 0,
            deadline_ticks: ticks,
            deadline: Instant::now() + timeout,
            timeout,
            guest,
            output: None,
        }
    }

    /// Apply the limits to a new store whose data holds them: the memory and
    /// table caps, the epoch deadline (a trap), and the host-call fuel that
    /// caps what the guest can hand the host in one call or answer.
    pub(crate) fn install<T: 'static>(
        store: &mut Store<T>,
        limits: fn(&mut T) -> &mut StoreLimits,
    ) {
        store.limiter(move |data| limits(data) as &mut dyn ResourceLimiter);
        store.epoch_deadline_trap();
        Self::arm(store, limits);
    }

    /// Start the clocks of the limits the store holds now: the epoch
    /// deadline, counted from this moment, and a full host-call fuel.
    pub(crate) fn arm<T: 'static>(store: &mut Store<T>, limits: fn(&mut T) -> &mut StoreLimits) {
        let own = limits(store.data_mut());
        let ticks = own.deadline_ticks;
        let fuel = own.guest.max_transfer_bytes;
        store.set_epoch_deadline(ticks);
        store.set_hostcall_fuel(fuel);
    }

    /// Hand an instance made ahead of time to the evaluation `fresh` was
    /// made for: the deadline, timeout and guest budgets become that
    /// evaluation's, while the memory and table elements the instance
    /// already holds stay counted, and whatever it logged while being made
    /// stays charged to its log budget, as when it is made inline.
    /// [`Self::arm`] must follow, to restart the store's clocks.
    pub(crate) fn renew(&mut self, fresh: StoreLimits) {
        let held = std::mem::replace(self, fresh);
        self.memory_bytes = held.memory_bytes;
        self.memory_limit_hit = held.memory_limit_hit;
        self.table_elements = held.table_elements;
        self.output = held.output;
    }

    /// The evaluation's log budget, created on first use.
    pub(crate) fn output(&mut self, policy: &Arc<str>) -> &Arc<GuestOutput> {
        let guest = self.guest;
        self.output
            .get_or_insert_with(|| GuestOutput::new(policy.clone(), guest))
    }

    /// Turn a wasmtime error from guest code into a typed evaluation error.
    pub(crate) fn classify(&self, err: wasmtime::Error) -> EvalError {
        if self.memory_limit_hit {
            return EvalError::OutOfMemory(self.max_memory_bytes);
        }
        if let Some(trap) = err.downcast_ref::<Trap>() {
            return match trap {
                Trap::Interrupt => EvalError::Timeout(self.timeout),
                Trap::StackOverflow => {
                    EvalError::Trap("stack overflow: the policy exhausted its call stack".into())
                }
                other => EvalError::Trap(other.to_string()),
            };
        }
        if err.downcast_ref::<DeadlineExceeded>().is_some() {
            return EvalError::Timeout(self.timeout);
        }
        if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return EvalError::Exited(exit.0);
        }
        if let Some(host) = err.downcast_ref::<crate::wapc::HostFault>() {
            return EvalError::MalformedOutput(host.0.clone());
        }
        if is_hostcall_fuel_exhausted(&err) {
            return EvalError::MalformedOutput(format!(
                "the policy handed the host more than {} bytes at once (its answer, or the \
                 arguments of one host call)",
                self.guest.max_transfer_bytes
            ));
        }
        EvalError::Trap(format!("{err:#}"))
    }
}

/// wasmtime's error when a guest hands the host more than the store's
/// host-call fuel, when lifting an answer or host-call arguments. Its type is
/// private, so it is recognised by its message; the `huge-message` tests in
/// `adapters/tests/containment.rs` fail if a wasmtime upgrade changes it.
fn is_hostcall_fuel_exhausted(err: &wasmtime::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

impl ResourceLimiter for StoreLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // wasmtime asks for every memory of the instance, and for its initial
        // size too (current = 0): the cap is on their sum.
        let total = (self.memory_bytes + desired as u64).saturating_sub(current as u64);
        if total > self.max_memory_bytes {
            self.memory_limit_hit = true;
            // Trapping at once keeps a guest from spinning on failed grows.
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.table_elements + desired).saturating_sub(current);
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> StoreLimits {
        StoreLimits::new(
            100,
            Duration::from_millis(10),
            Duration::from_secs(1),
            GuestLimits::DEFAULT,
        )
    }

    #[test]
    fn the_memory_cap_is_on_the_sum_of_all_memories() {
        let mut limits = limits();
        assert!(limits.memory_growing(0, 60, None).unwrap());
        assert!(limits.memory_growing(60, 70, None).unwrap());
        // A second memory of the same instance.
        assert!(limits.memory_growing(0, 30, None).unwrap());
        assert!(limits.memory_growing(30, 31, None).is_err());
        assert!(limits.memory_limit_hit);
        assert_eq!(limits.memory_bytes, 100);
    }

    #[test]
    fn a_renewed_limit_keeps_what_the_instance_holds_and_takes_the_new_deadline() {
        let mut made = limits();
        assert!(made.memory_growing(0, 60, None).unwrap());
        assert!(made.table_growing(0, 10, None).unwrap());
        let later = StoreLimits::new(
            100,
            Duration::from_millis(10),
            Duration::from_secs(5),
            GuestLimits::DEFAULT,
        );
        let (deadline, ticks) = (later.deadline, later.deadline_ticks);
        made.renew(later);
        assert_eq!((made.deadline, made.deadline_ticks), (deadline, ticks));
        assert_eq!(made.timeout, Duration::from_secs(5));
        // The 60 bytes the instance holds still count against the cap.
        assert!(made.memory_growing(60, 100, None).unwrap());
        assert!(made.memory_growing(100, 101, None).is_err());
        assert_eq!(made.table_elements, 10);
    }

    #[test]
    fn the_table_cap_is_on_the_sum_of_all_tables() {
        let mut limits = limits();
        assert!(
            limits
                .table_growing(0, MAX_TABLE_ELEMENTS - 1, None)
                .unwrap()
        );
        assert!(limits.table_growing(0, 1, None).unwrap());
        assert!(!limits.table_growing(1, 2, None).unwrap());
    }

    #[test]
    fn deadline_errors_are_timeouts_and_exits_are_exits() {
        let limits = limits();
        let err = limits.classify(wasmtime::Error::new(DeadlineExceeded));
        assert!(
            matches!(err, EvalError::Timeout(d) if d == Duration::from_secs(1)),
            "{err}"
        );
        let err = limits.classify(wasmtime::Error::new(wasmtime_wasi::I32Exit(3)));
        assert!(matches!(err, EvalError::Exited(3)), "{err}");
    }
}
