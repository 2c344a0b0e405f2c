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
//! many long-lived threads ([`pool`]). A job is only handed to the pool once
//! it holds a slot, so it never waits there for a thread.

mod pool;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use self::pool::EvaluationPool;

/// Settings of a [`Scheduler`] (what the `--workers`, `--max-workers-per-policy`,
/// `--max-audit-workers`, `--max-slow-evaluations`, `--slow-evaluation-threshold`
/// and `--queue-timeout` flags resolve to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Evaluation slots.
    pub workers: usize,
    /// Most evaluations of one policy in flight (slots and slow lane).
    pub max_per_policy: usize,
    /// Most `/audit` evaluations in flight (slots and slow lane).
    pub max_audit: usize,
    /// Places in the slow lane; 0 disables it.
    pub max_slow: usize,
    /// How long an evaluation runs before it moves to the slow lane.
    pub slow_after: Duration,
    /// How long a request may wait for a slot.
    pub queue_timeout: Duration,
}

impl SchedulerConfig {
    /// Defaults for `workers` slots: any policy may use every slot, audit
    /// gets half of them (at least one), the slow lane is as large as the
    /// slot count and takes evaluations that run for 100 ms.
    pub fn for_workers(workers: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            max_per_policy: workers,
            max_audit: (workers / 2).max(1),
            max_slow: workers,
            slow_after: Duration::from_millis(100),
            queue_timeout: Duration::from_secs(1),
        }
    }

    /// The same settings with every count at least 1 where 0 would make
    /// requests wait forever.
    fn sanitised(mut self) -> Self {
        self.workers = self.workers.max(1);
        self.max_per_policy = self.max_per_policy.max(1);
        self.max_audit = self.max_audit.max(1);
        self.slow_after = self.slow_after.max(Duration::from_millis(1));
        self
    }
}

/// Which kind of request an evaluation serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestClass {
    /// `/validate` and `/validate_raw`: the API server is waiting.
    Admission,
    /// `/audit`: background scans, served after admission.
    Audit,
}

impl RequestClass {
    fn index(self) -> usize {
        match self {
            Self::Admission => 0,
            Self::Audit => 1,
        }
    }
}

/// Which limit kept a request waiting until its queue timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Every slot was busy.
    Workers,
    /// The policy had `max_per_policy` evaluations in flight.
    Policy,
    /// `max_audit` audit evaluations were in flight.
    Audit,
}

impl Limit {
    /// A stable name for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workers => "workers",
            Self::Policy => "policy",
            Self::Audit => "audit",
        }
    }
}

/// Why a job did not run or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// No slot within the queue timeout.
    #[error("{}", saturation_message(*limit, *waited, config))]
    Saturated {
        /// What the request waited for.
        limit: Limit,
        /// How long it waited.
        waited: Duration,
        /// The limits in effect, for the message.
        config: Box<SchedulerConfig>,
    },
    /// The evaluation threads are gone (the server is shutting down).
    #[error("the policy-server is shutting down")]
    ShuttingDown,
    /// The job panicked.
    #[error("the evaluation task failed unexpectedly")]
    Panicked,
}

fn saturation_message(limit: Limit, waited: Duration, config: &SchedulerConfig) -> String {
    let what = match limit {
        Limit::Workers => format!("all {} workers stayed busy", config.workers),
        Limit::Policy => format!(
            "this policy already had {} evaluations in flight (--max-workers-per-policy)",
            config.max_per_policy
        ),
        Limit::Audit => format!(
            "{} audit evaluations were already in flight (--max-audit-workers)",
            config.max_audit
        ),
    };
    format!("policy-server saturated: {what} for {waited:?}; retry later")
}

/// A point-in-time view of the scheduler, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Evaluations holding a slot.
    pub in_slots: usize,
    /// Evaluations in the slow lane.
    pub slow: usize,
    /// Requests waiting for a slot, admission class.
    pub queued_admission: usize,
    /// Requests waiting for a slot, audit class.
    pub queued_audit: usize,
}

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

/// The right to run one evaluation. Dropping it (when the job ends, or if
/// it never started) frees the slot and serves the next waiting request.
/// Where a job started by [`Scheduler::run_delivering`] sends its result.
pub struct Delivery<T> {
    slot: Slot,
    done: oneshot::Sender<T>,
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

pub(crate) struct Slot {
    shared: Arc<Shared>,
    id: u64,
    armed: bool,
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
struct QueuedGuard<'a> {
    shared: &'a Arc<Shared>,
    policy: &'a str,
    class: RequestClass,
    id: u64,
    armed: bool,
}

impl QueuedGuard<'_> {
    /// Leaves the queue; false when the request was no longer in it
    /// (granted meanwhile).
    fn leave(&self) -> bool {
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
