//! Sharing the evaluation workers between policies and kinds of request.
//!
//! Every evaluation needs a **slot**. There are `workers` slots, plus a
//! **slow lane** of `max_slow` places:
//!
//! - A request takes a slot when one is free, its policy has fewer than
//!   `max_per_policy` evaluations in flight, and (for `/audit`) fewer than
//!   `max_audit` audit evaluations are in flight. Otherwise it waits in its
//!   policy's queue, at most `queue_timeout`, then gets a 503.
//! - When a slot frees, waiting **admission** requests (`/validate`,
//!   `/validate_raw`) are served before **audit** requests, and within a
//!   class the policies with waiting requests take turns (round-robin over
//!   per-policy FIFO queues), so a flood of requests for one policy cannot
//!   push another policy's request to the back of one long line.
//! - An evaluation still running after `slow_after` moves to the slow lane
//!   when it has room, and gives its slot back. Evaluations cannot be
//!   preempted; a policy that runs into its deadline (an endless loop, a
//!   sleep, a slow host call) would otherwise hold a slot for the whole
//!   deadline, and two of them would hold both slots of `--workers 2`. With
//!   the slow lane, such evaluations cost their own requests (and the slow
//!   lane's places), not everyone's. The deadline still bounds each one.
//!
//! At most `workers + max_slow` evaluations run at once, each on one of as
//! many long-lived threads (`pool`). A job is only handed to the pool once
//! it holds a slot. A job that delivers its answer early ([`Delivery`])
//! frees its slot while its thread still tears its instance down, so a new
//! job can find every thread busy; it then waits in the pool for that
//! teardown, which is short by design, never for another evaluation.

mod config;
mod pool;
mod slot;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use self::config::{Limit, RequestClass, ScheduleError, SchedulerConfig, SchedulerStats};
use self::pool::EvaluationPool;
pub use self::slot::Delivery;
use self::slot::{QueuedGuard, Slot};

/// Fair scheduler of evaluations over a fixed pool of threads. Cheap to
/// share behind an `Arc`; dropping the last reference stops its threads
/// once their current jobs end.
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: SchedulerConfig,
    state: Mutex<State>,
    pool: EvaluationPool,
}

#[derive(Default)]
struct State {
    free_slots: usize,
    slow: usize,
    audit_in_flight: usize,
    policies: HashMap<Arc<str>, PolicyQueue>,
    /// Per class, the policies with waiting requests, in turn order.
    turns: [VecDeque<Arc<str>>; 2],
    running: HashMap<u64, Running>,
    next_id: u64,
}

#[derive(Default)]
struct PolicyQueue {
    in_flight: usize,
    waiting: [VecDeque<Waiter>; 2],
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<Slot>,
}

struct Running {
    policy: Arc<str>,
    class: RequestClass,
    started: Instant,
    slow: bool,
}

impl Scheduler {
    /// Starts the evaluation threads and, when the slow lane is enabled, the
    /// task that moves long evaluations into it (on the current tokio runtime).
    pub fn new(config: SchedulerConfig) -> std::io::Result<Self> {
        let config = config.sanitised();
        let pool = EvaluationPool::new(config.workers + config.max_slow)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                free_slots: config.workers,
                ..State::default()
            }),
            config,
            pool,
        });
        if shared.config.max_slow > 0 {
            tokio::spawn(watch_slow_evaluations(Arc::downgrade(&shared)));
        }
        Ok(Self { shared })
    }

    /// The settings in effect.
    pub fn config(&self) -> &SchedulerConfig {
        &self.shared.config
    }

    /// Current occupancy.
    pub fn stats(&self) -> SchedulerStats {
        let state = self.shared.lock();
        let queued = |class: RequestClass| {
            state
                .policies
                .values()
                .map(|q| q.waiting[class.index()].len())
                .sum()
        };
        SchedulerStats {
            in_slots: self.shared.config.workers - state.free_slots,
            slow: state.slow,
            queued_admission: queued(RequestClass::Admission),
            queued_audit: queued(RequestClass::Audit),
        }
    }

    /// Waits for a slot for `policy` (at most the queue timeout), then runs
    /// `job` on an evaluation thread and returns its result.
    ///
    /// If the returned future is dropped (the client went away), a job that
    /// already started still runs to completion (its deadline bounds it) and
    /// keeps its slot until then; a request still queued leaves the queue.
    pub async fn run<T, F>(
        &self,
        policy: &str,
        class: RequestClass,
        job: F,
    ) -> Result<T, ScheduleError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run_delivering(policy, class, move |delivery| delivery.deliver(job()))
            .await
    }

    /// Like [`Self::run`], for a job that has its result before it is
    /// finished: it hands the result to its [`Delivery`], which frees the
    /// slot and wakes the caller, and goes on with what is left (tearing an
    /// instance down) while the answer is sent. A job that ends without
    /// delivering, or panics, is [`ScheduleError::Panicked`].
    pub async fn run_delivering<T, F>(
        &self,
        policy: &str,
        class: RequestClass,
        job: F,
    ) -> Result<T, ScheduleError>
    where
        F: FnOnce(Delivery<T>) + Send + 'static,
        T: Send + 'static,
    {
        let slot = self.acquire(policy, class).await?;
        let (done, result) = oneshot::channel();
        // A panic unwinds through `job` and drops the delivery, its slot
        // and its sender with it.
        let job = Box::new(move || job(Delivery { slot, done }));
        if self.shared.pool.submit(job).is_err() {
            return Err(ScheduleError::ShuttingDown);
        }
        result.await.map_err(|_| ScheduleError::Panicked)
    }

    async fn acquire(&self, policy: &str, class: RequestClass) -> Result<Slot, ScheduleError> {
        let started = Instant::now();
        let (id, receiver) = {
            let mut state = self.shared.lock();
            if let Some(slot) = self.shared.try_start(&mut state, policy, class) {
                return Ok(slot);
            }
            let id = state.next_id();
            let (grant, receiver) = oneshot::channel();
            let key = state.policy_key(policy);
            let first = {
                let queue = state.policies.entry(Arc::clone(&key)).or_default();
                let waiting = &mut queue.waiting[class.index()];
                waiting.push_back(Waiter { id, grant });
                waiting.len() == 1
            };
            if first {
                // A policy is in the turn order while it has waiting requests.
                state.turns[class.index()].push_back(key);
            }
            (id, receiver)
        };
        // Leaves the queue if this future is dropped while waiting.
        let mut guard = QueuedGuard {
            shared: &self.shared,
            policy,
            class,
            id,
            armed: true,
        };
        let mut receiver = receiver;
        match tokio::time::timeout(self.shared.config.queue_timeout, &mut receiver).await {
            Ok(Ok(slot)) => {
                guard.armed = false;
                Ok(slot)
            }
            // The sender is only dropped when the queue is torn down.
            Ok(Err(_)) => {
                guard.armed = false;
                Err(ScheduleError::ShuttingDown)
            }
            Err(_elapsed) => {
                let removed = guard.leave();
                guard.armed = false;
                if !removed {
                    // Granted between the timeout and the lock: use it.
                    if let Ok(slot) = receiver.try_recv() {
                        return Ok(slot);
                    }
                }
                Err(ScheduleError::Saturated {
                    limit: self.shared.blocking_limit(policy, class),
                    waited: started.elapsed(),
                    config: Box::new(self.shared.config.clone()),
                })
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements that can panic (none
        // of them allocate-and-panic mid-update), so a poisoned lock is safe
        // to keep using.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn eligible(&self, state: &State, in_flight: usize, class: RequestClass) -> bool {
        state.free_slots > 0
            && in_flight < self.config.max_per_policy
            && (class == RequestClass::Admission || state.audit_in_flight < self.config.max_audit)
    }

    /// Starts at once when allowed. This overtakes no eligible request:
    /// whenever a slot frees, every waiting request that may start is
    /// started, so the requests still waiting are held by a limit. One of
    /// the same policy and class is held by the same limits (and this
    /// request queues behind it); one of another policy may be held by its
    /// policy's cap, which does not apply here.
    fn try_start(
        self: &Arc<Self>,
        state: &mut State,
        policy: &str,
        class: RequestClass,
    ) -> Option<Slot> {
        let queue = state.policies.get(policy);
        let in_flight = queue.map_or(0, |q| q.in_flight);
        let has_waiters = queue.is_some_and(|q| !q.waiting[class.index()].is_empty());
        if has_waiters || !self.eligible(state, in_flight, class) {
            return None;
        }
        let key = state.policy_key(policy);
        Some(self.start(state, key, class))
    }

    fn start(self: &Arc<Self>, state: &mut State, policy: Arc<str>, class: RequestClass) -> Slot {
        let id = state.next_id();
        state.free_slots -= 1;
        if class == RequestClass::Audit {
            state.audit_in_flight += 1;
        }
        state
            .policies
            .entry(Arc::clone(&policy))
            .or_default()
            .in_flight += 1;
        state.running.insert(
            id,
            Running {
                policy,
                class,
                started: Instant::now(),
                slow: false,
            },
        );
        Slot {
            shared: Arc::clone(self),
            id,
            armed: true,
        }
    }

    /// Hands free slots to waiting requests: admission first, policies in turn.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        while state.free_slots > 0 {
            if self.grant_next(state, RequestClass::Admission) {
                continue;
            }
            if state.audit_in_flight < self.config.max_audit
                && self.grant_next(state, RequestClass::Audit)
            {
                continue;
            }
            break;
        }
    }

    /// Grants a slot to the next eligible waiter of `class`; false when none.
    fn grant_next(self: &Arc<Self>, state: &mut State, class: RequestClass) -> bool {
        let c = class.index();
        // Each policy in the turn order is looked at once per call; a policy
        // at its cap keeps its place for the next call.
        let mut remaining = state.turns[c].len();
        while remaining > 0 {
            remaining -= 1;
            let Some(policy) = state.turns[c].pop_front() else {
                return false;
            };
            let Some(queue) = state.policies.get(&policy) else {
                continue;
            };
            if queue.in_flight >= self.config.max_per_policy {
                state.turns[c].push_back(policy);
                continue;
            }
            let granted = loop {
                let Some(waiter) = state
                    .policies
                    .get_mut(&policy)
                    .and_then(|q| q.waiting[c].pop_front())
                else {
                    break false;
                };
                if waiter.grant.is_closed() {
                    continue;
                }
                let slot = self.start(state, Arc::clone(&policy), class);
                match waiter.grant.send(slot) {
                    Ok(()) => break true,
                    Err(mut slot) => {
                        // The waiter left after the check: undo in place
                        // (dropping the slot normally would lock again).
                        slot.armed = false;
                        self.finish(state, slot.id);
                    }
                }
            };
            if state
                .policies
                .get(&policy)
                .is_some_and(|q| !q.waiting[c].is_empty())
            {
                // Served or not, it goes to the back: the others go first.
                state.turns[c].push_back(Arc::clone(&policy));
            }
            state.forget_if_idle(&policy);
            if granted {
                return true;
            }
        }
        false
    }

    /// Ends evaluation `id`: frees its slot (or slow-lane place).
    fn finish(&self, state: &mut State, id: u64) {
        let Some(running) = state.running.remove(&id) else {
            return;
        };
        if running.slow {
            state.slow -= 1;
        } else {
            state.free_slots += 1;
        }
        if running.class == RequestClass::Audit {
            state.audit_in_flight -= 1;
        }
        if let Some(queue) = state.policies.get_mut(&running.policy) {
            queue.in_flight -= 1;
        }
        state.forget_if_idle(&running.policy);
    }

    /// Moves evaluations running for `slow_after` into the slow lane while
    /// it has room, oldest first, and hands their slots to waiting requests.
    fn promote_slow(self: &Arc<Self>) {
        let mut state = self.lock();
        if state.slow >= self.config.max_slow {
            return;
        }
        let now = Instant::now();
        let mut candidates: Vec<(Instant, u64)> = state
            .running
            .iter()
            .filter(|(_, r)| !r.slow && now.duration_since(r.started) >= self.config.slow_after)
            .map(|(id, r)| (r.started, *id))
            .collect();
        if candidates.is_empty() {
            return;
        }
        candidates.sort_unstable();
        for (_, id) in candidates {
            if state.slow >= self.config.max_slow {
                break;
            }
            if let Some(running) = state.running.get_mut(&id) {
                running.slow = true;
                state.slow += 1;
                state.free_slots += 1;
            }
        }
        self.dispatch(&mut state);
    }

    /// What a request of `policy` is waiting for, for the 503 message: all
    /// slots busy, else its policy's cap, else the audit share.
    fn blocking_limit(&self, policy: &str, class: RequestClass) -> Limit {
        let state = self.lock();
        let in_flight = state.policies.get(policy).map_or(0, |q| q.in_flight);
        if state.free_slots == 0 {
            Limit::Workers
        } else if in_flight >= self.config.max_per_policy {
            Limit::Policy
        } else if class == RequestClass::Audit && state.audit_in_flight >= self.config.max_audit {
            Limit::Audit
        } else {
            // Admission requests of other policies kept taking the slots.
            Limit::Workers
        }
    }
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// The shared key of `policy`, so queues and running entries of one
    /// policy share one allocation.
    fn policy_key(&self, policy: &str) -> Arc<str> {
        self.policies
            .get_key_value(policy)
            .map_or_else(|| Arc::from(policy), |(k, _)| Arc::clone(k))
    }

    /// Drops the bookkeeping of a policy with nothing in flight or queued,
    /// so that the map only holds busy policies.
    fn forget_if_idle(&mut self, policy: &str) {
        if self
            .policies
            .get(policy)
            .is_some_and(|q| q.in_flight == 0 && q.waiting.iter().all(VecDeque::is_empty))
        {
            self.policies.remove(policy);
        }
    }
}

/// Checks for long evaluations four times per `slow_after`, so one moves
/// to the slow lane at most 1.25 × `slow_after` after it started. Ends with
/// the scheduler.
async fn watch_slow_evaluations(shared: Weak<Shared>) {
    let period = match shared.upgrade() {
        Some(shared) => (shared.config.slow_after / 4).max(Duration::from_millis(1)),
        None => return,
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.promote_slow();
    }
}

#[cfg(test)]
mod tests;
