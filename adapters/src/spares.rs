//! Spare instances: an instance made after one evaluation of a policy, ready
//! for its next one.
//!
//! Every evaluation still gets an instance no evaluation has run in: a spare
//! is made fresh, has run nothing but its instantiation, and serves exactly
//! one evaluation. What moves is when the instantiation happens: on the
//! evaluation thread after the previous answer was handed over (see
//! [`LoadedModule::validate_then`](crate::LoadedModule::validate_then)),
//! instead of between a request's arrival and its answer. For a component
//! that is about a third of a fresh evaluation (BENCHMARKS.md, issue 17).
//! The CPU per evaluation is the same; the time the API server waits is not.
//!
//! A spare serves only the policy it was made for: the same policy id and
//! the same host capabilities (the same `Arc`, or two that both grant
//! nothing), so that whatever the guest's start-up code asked the host, it
//! asked as that policy. A policy reloaded with new capabilities no longer
//! matches its old spare, which goes when the policy's next spare is made.
//!
//! Spares hold pool slots, so they are bounded twice: a few per module, and
//! an engine-wide [`SpareBudget`]. A module whose spare cannot be made (its
//! instantiation fails or times out) gets no more spares, so a broken policy
//! pays for its failure once more at most, not after every request.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::capabilities::HostCapabilities;
use crate::types::EvalContext;

/// Spares kept per module: one per policy that uses the module, up to this
/// many policies; the oldest gives way.
const PER_MODULE: usize = 4;

/// How many spares the engine may hold at once, over all modules.
#[derive(Debug)]
pub(crate) struct SpareBudget {
    cap: u32,
    held: AtomicU32,
}

impl SpareBudget {
    pub(crate) fn new(cap: u32) -> Arc<Self> {
        Arc::new(SpareBudget {
            cap,
            held: AtomicU32::new(0),
        })
    }

    fn permit(self: &Arc<Self>) -> Option<SparePermit> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.cap).then_some(held + 1)
            })
            .ok()
            .map(|_| SparePermit(self.clone()))
    }

    /// Spares held now.
    #[cfg(test)]
    fn held(&self) -> u32 {
        self.held.load(Ordering::Acquire)
    }
}

/// One unit of the budget, given back when the spare is taken or dropped.
#[derive(Debug)]
struct SparePermit(Arc<SpareBudget>);

impl Drop for SparePermit {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Spare<I> {
    policy_id: String,
    capabilities: Arc<dyn HostCapabilities>,
    instance: I,
    _permit: SparePermit,
}

impl<I> Spare<I> {
    fn serves(&self, ctx: &EvalContext) -> bool {
        self.policy_id == ctx.policy_id
            && (Arc::ptr_eq(&self.capabilities, &ctx.capabilities)
                || self.capabilities.grants_nothing() && ctx.capabilities.grants_nothing())
    }
}

/// The spares of one module. `I` is what an adapter needs to evaluate: its
/// Store and its instance's handle.
pub(crate) struct Spares<I> {
    budget: Arc<SpareBudget>,
    ready: Mutex<Vec<Spare<I>>>,
    stopped: AtomicBool,
}

impl<I> Spares<I> {
    pub(crate) fn new(budget: Arc<SpareBudget>) -> Self {
        Spares {
            budget,
            ready: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        }
    }

    /// The spare made for `ctx`'s policy, if there is one.
    pub(crate) fn take(&self, ctx: &EvalContext) -> Option<I> {
        let mut ready = self.ready();
        let at = ready.iter().position(|spare| spare.serves(ctx))?;
        Some(ready.swap_remove(at).instance)
    }

    /// Make a spare for `ctx`'s policy with `make`, unless one is ready, the
    /// budget is spent, or making one failed before.
    pub(crate) fn replenish<E>(&self, ctx: &EvalContext, make: impl FnOnce() -> Result<I, E>) {
        if self.stopped.load(Ordering::Acquire) || self.ready_for(ctx) {
            return;
        }
        let Some(permit) = self.budget.permit() else {
            return;
        };
        let instance = match make() {
            Ok(instance) => instance,
            Err(_) => {
                // The evaluation that comes next makes its own instance and
                // reports the failure; this one would only repeat it.
                self.stopped.store(true, Ordering::Release);
                return;
            }
        };
        let spare = Spare {
            policy_id: ctx.policy_id.clone(),
            capabilities: ctx.capabilities.clone(),
            instance,
            _permit: permit,
        };
        let evicted = {
            let mut ready = self.ready();
            // A spare of this policy that does not serve it was made under
            // the grant the policy had before a reload: it never will.
            let mut evicted: Vec<_> = ready
                .extract_if(.., |old| old.policy_id == spare.policy_id)
                .collect();
            if ready.len() >= PER_MODULE {
                evicted.push(ready.remove(0));
            }
            ready.push(spare);
            evicted
        };
        // Tearing an instance down resets its memory: not under the lock.
        drop(evicted);
    }

    /// Whether a spare for `ctx`'s policy is ready.
    pub(crate) fn ready_for(&self, ctx: &EvalContext) -> bool {
        self.ready().iter().any(|spare| spare.serves(ctx))
    }

    /// Whether spares are still made for this module.
    #[cfg(test)]
    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn ready(&self) -> MutexGuard<'_, Vec<Spare<I>>> {
        // Nothing panics while holding the lock; a poisoned list is still a
        // list of whole spares.
        self.ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::capabilities::NoCapabilities;

    fn ctx(policy: &str, capabilities: &Arc<dyn HostCapabilities>) -> EvalContext {
        EvalContext {
            policy_id: policy.into(),
            timeout: Duration::from_secs(1),
            capabilities: capabilities.clone(),
        }
    }

    /// Grants something: only the same `Arc` is the same grant.
    struct Granting;

    impl HostCapabilities for Granting {
        fn call(
            &self,
            _: &crate::CallContext<'_>,
            _: &str,
            _: &str,
            _: &[u8],
        ) -> Result<Vec<u8>, crate::CapabilityError> {
            Ok(b"{}".to_vec())
        }
    }

    fn capabilities() -> Arc<dyn HostCapabilities> {
        Arc::new(Granting)
    }

    #[test]
    fn contexts_that_grant_nothing_share_their_spares() {
        let spares = Spares::new(SpareBudget::new(8));
        let (none, other_none) = (
            Arc::new(NoCapabilities) as Arc<dyn HostCapabilities>,
            Arc::new(NoCapabilities) as Arc<dyn HostCapabilities>,
        );
        spares.replenish(&ctx("a", &none), || Ok::<_, ()>(1));
        assert_eq!(spares.take(&ctx("a", &capabilities())), None);
        assert_eq!(spares.take(&ctx("a", &other_none)), Some(1));
    }

    #[test]
    fn a_spare_serves_one_evaluation_of_the_policy_it_was_made_for() {
        let spares = Spares::new(SpareBudget::new(8));
        let (a, b) = (capabilities(), capabilities());
        spares.replenish(&ctx("a", &a), || Ok::<_, ()>(1));
        assert_eq!(spares.take(&ctx("b", &a)), None, "another policy");
        assert_eq!(spares.take(&ctx("a", &b)), None, "other capabilities");
        assert_eq!(spares.take(&ctx("a", &a)), Some(1));
        assert_eq!(spares.take(&ctx("a", &a)), None, "used once");
    }

    #[test]
    fn a_reloaded_policy_retires_the_spare_of_its_old_grant() {
        let budget = SpareBudget::new(8);
        let spares = Spares::new(budget.clone());
        let (old, new) = (capabilities(), capabilities());
        spares.replenish(&ctx("a", &old), || Ok::<_, ()>(1));
        spares.replenish(&ctx("a", &new), || Ok::<_, ()>(2));
        assert_eq!(budget.held(), 1, "the old grant's spare is gone");
        assert_eq!(spares.take(&ctx("a", &old)), None);
        assert_eq!(spares.take(&ctx("a", &new)), Some(2));
    }

    #[test]
    fn one_spare_per_policy_is_made() {
        let spares = Spares::new(SpareBudget::new(8));
        let a = capabilities();
        spares.replenish(&ctx("a", &a), || Ok::<_, ()>(1));
        spares.replenish(&ctx("a", &a), || -> Result<i32, ()> {
            panic!("a second spare for the same policy")
        });
        assert_eq!(spares.take(&ctx("a", &a)), Some(1));
    }

    #[test]
    fn the_budget_bounds_the_spares_of_every_module_and_comes_back() {
        let budget = SpareBudget::new(2);
        let (first, second) = (Spares::new(budget.clone()), Spares::new(budget.clone()));
        let a = capabilities();
        first.replenish(&ctx("a", &a), || Ok::<_, ()>(1));
        first.replenish(&ctx("b", &a), || Ok::<_, ()>(2));
        second.replenish(&ctx("c", &a), || -> Result<i32, ()> {
            panic!("over the budget")
        });
        assert_eq!(budget.held(), 2);
        assert_eq!(first.take(&ctx("a", &a)), Some(1));
        assert_eq!(budget.held(), 1);
        second.replenish(&ctx("c", &a), || Ok::<_, ()>(3));
        assert_eq!(second.take(&ctx("c", &a)), Some(3));
        drop(first);
        assert_eq!(budget.held(), 0, "a dropped module gives its spares back");
    }

    #[test]
    fn the_oldest_policy_gives_way_in_a_module_shared_by_many() {
        let spares = Spares::new(SpareBudget::new(64));
        let a = capabilities();
        for (n, policy) in ["p0", "p1", "p2", "p3", "p4"].iter().enumerate() {
            spares.replenish(&ctx(policy, &a), || Ok::<_, ()>(n));
        }
        assert_eq!(spares.take(&ctx("p0", &a)), None);
        assert_eq!(spares.take(&ctx("p4", &a)), Some(4));
        assert_eq!(spares.take(&ctx("p1", &a)), Some(1));
    }

    #[test]
    fn a_module_whose_spare_fails_gets_no_more() {
        let budget = SpareBudget::new(8);
        let spares = Spares::new(budget.clone());
        let a = capabilities();
        spares.replenish(&ctx("a", &a), || Err::<i32, _>("instantiation failed"));
        assert!(spares.stopped());
        assert_eq!(budget.held(), 0, "the failed spare's permit is given back");
        spares.replenish(&ctx("a", &a), || -> Result<i32, ()> {
            panic!("tried again")
        });
        assert_eq!(spares.take(&ctx("a", &a)), None);
    }
}
