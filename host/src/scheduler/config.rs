//! What a [`Scheduler`](super::Scheduler) is configured with and what it
//! reports: its settings, the classes of request, and why a request did
//! not run.

use std::time::Duration;

/// Settings of a [`Scheduler`](super::Scheduler) (what the `--workers`, `--max-workers-per-policy`,
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
    pub(super) fn sanitised(mut self) -> Self {
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
    pub(super) fn index(self) -> usize {
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
