//! Prometheus metrics of the policy-server, served as text on `/metrics`.
//!
//! Every label value is bounded ([`labels`]): request fields become one of a
//! fixed set of values, policy ids come from the loaded policies file.

pub mod labels;

use std::sync::Mutex;
use std::time::Duration;

use portcullis_telemetry::metrics::{HistogramFamily, MetricsRegistry, histogram_family};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::policy_set::{PolicySet, PolicyState};
use crate::scheduler::SchedulerStats;

/// Evaluation latency buckets, in seconds: policies answer in tens of
/// microseconds, so the default Prometheus buckets would put everything in
/// the first one.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 5.0,
];

/// Labels of one evaluation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvaluationLabels {
    /// Policy id.
    pub policy: String,
    /// protect | monitor.
    pub mode: String,
    /// The endpoint: `validate`, `validate_raw` or `audit`.
    pub request_origin: String,
    /// CREATE, UPDATE, DELETE, CONNECT or `other`; `raw` for validate_raw.
    pub operation: String,
    /// `request.kind.kind` if a known kind, else `other`; empty for validate_raw.
    pub resource_kind: String,
    /// The policy's own verdict, before mode post-processing.
    pub accepted: String,
    /// Whether the policy returned a mutated object.
    pub mutated: String,
    /// Empty, or the kind of evaluation error (timeout, trap, load, ...).
    pub error: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    request_origin: &'static str,
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    request_class: &'static str,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: MetricsRegistry,
    evaluations: Family<EvaluationLabels, Counter>,
    durations: HistogramFamily<EvaluationLabels>,
    policy_loaded: Family<PolicyLabels, Gauge>,
    load_errors: Gauge,
    policy_reloads: Family<ResultLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    in_flight: Gauge,
    saturation_rejections: Family<RejectionLabels, Counter>,
    queued: Family<ClassLabels, Gauge>,
    slow_lane: Gauge,
    // Serialises policy-gauge rewrites so two reloads cannot interleave.
    policy_gauge_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = MetricsRegistry::new();
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        let durations = histogram_family(&DURATION_BUCKETS);
        let policy_loaded = Family::<PolicyLabels, Gauge>::default();
        let load_errors = Gauge::default();
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        let in_flight = Gauge::default();
        let saturation_rejections = Family::<RejectionLabels, Counter>::default();
        let queued = Family::<ClassLabels, Gauge>::default();
        let slow_lane = Gauge::default();

        // prometheus-client appends `_total` to counters.
        registry.register(
            "portcullis_policy_evaluations",
            "Policy evaluations",
            evaluations.clone(),
        );
        registry.register(
            "portcullis_policy_evaluation_duration_seconds",
            "Time spent evaluating a request in the policy (instantiation and call)",
            durations.clone(),
        );
        registry.register(
            "portcullis_policy_loaded",
            "1 when the policy is loaded and serving, 0 when it failed to load",
            policy_loaded.clone(),
        );
        registry.register(
            "portcullis_policy_load_errors",
            "Number of policies that failed to load in the current policy set",
            load_errors.clone(),
        );
        registry.register(
            "portcullis_policy_reloads",
            "Reloads of the policies file, by result (success|failure)",
            policy_reloads.clone(),
        );
        registry.register(
            "portcullis_tls_reloads",
            "Reloads of the TLS certificate, key or client CA, by result (success|failure)",
            tls_reloads.clone(),
        );
        registry.register(
            "portcullis_evaluations_in_flight",
            "Evaluations running right now",
            in_flight.clone(),
        );
        registry.register(
            "portcullis_saturation_rejections",
            "Requests rejected with 503 after waiting the queue timeout for a worker, by endpoint and by the limit that held them (workers|policy|audit)",
            saturation_rejections.clone(),
        );
        registry.register(
            "portcullis_evaluations_queued",
            "Requests waiting for a worker, by class (admission|audit); sampled when scraped",
            queued.clone(),
        );
        registry.register(
            "portcullis_evaluations_slow_lane",
            "Evaluations that ran past the slow-evaluation threshold and gave their worker back; sampled when scraped",
            slow_lane.clone(),
        );
        Self {
            registry,
            evaluations,
            durations,
            policy_loaded,
            load_errors,
            policy_reloads,
            tls_reloads,
            in_flight,
            saturation_rejections,
            queued,
            slow_lane,
            policy_gauge_lock: Mutex::new(()),
        }
    }

    /// Records one evaluation.
    pub fn record_evaluation(&self, labels: &EvaluationLabels, duration: Duration) {
        self.evaluations.get_or_create(labels).inc();
        self.durations
            .get_or_create(labels)
            .observe(duration.as_secs_f64());
    }

    /// Rewrites the per-policy load gauges from a new policy set.
    pub fn record_policy_set(&self, set: &PolicySet) {
        let _guard = self
            .policy_gauge_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Removed policies must disappear from the gauge, not linger at 1.
        self.policy_loaded.clear();
        let mut errors = 0;
        for (id, state) in &set.policies {
            let loaded = !matches!(state, PolicyState::Failed(_));
            if !loaded {
                errors += 1;
            }
            self.policy_loaded
                .get_or_create(&PolicyLabels { policy: id.clone() })
                .set(i64::from(loaded));
        }
        self.load_errors.set(errors);
    }

    /// Counts a policies-file reload.
    pub fn record_policy_reload(&self, success: bool) {
        self.policy_reloads
            .get_or_create(&result_labels(success))
            .inc();
    }

    /// Counts a TLS material reload.
    pub fn record_tls_reload(&self, success: bool) {
        self.tls_reloads
            .get_or_create(&result_labels(success))
            .inc();
    }

    /// Counts a request rejected because it waited too long for a worker:
    /// `request_origin` is its endpoint, `limit` what held it.
    pub fn record_saturation_rejection(&self, request_origin: &'static str, limit: &'static str) {
        self.saturation_rejections
            .get_or_create(&RejectionLabels {
                request_origin,
                limit,
            })
            .inc();
    }

    /// Samples the scheduler's queues and slow lane.
    pub fn record_scheduler(&self, stats: SchedulerStats) {
        let set = |class: &'static str, n: usize| {
            self.queued
                .get_or_create(&ClassLabels {
                    request_class: class,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set("admission", stats.queued_admission);
        set("audit", stats.queued_audit);
        self.slow_lane
            .set(i64::try_from(stats.slow).unwrap_or(i64::MAX));
    }

    /// Marks an evaluation as running until the guard is dropped.
    pub fn in_flight(&self) -> InFlightGuard {
        self.in_flight.inc();
        InFlightGuard(self.in_flight.clone())
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.registry.encode()
    }
}

fn result_labels(success: bool) -> ResultLabels {
    ResultLabels {
        result: if success { "success" } else { "failure" }.to_string(),
    }
}

/// Decrements the in-flight gauge when dropped (also on panic or cancel).
pub struct InFlightGuard(Gauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_histograms_and_gauges() {
        let metrics = Metrics::new();
        let labels = EvaluationLabels {
            policy: "p".into(),
            mode: "protect".into(),
            request_origin: "validate".into(),
            operation: "CREATE".into(),
            resource_kind: "Pod".into(),
            accepted: "false".into(),
            mutated: "false".into(),
            error: String::new(),
        };
        metrics.record_evaluation(&labels, Duration::from_micros(70));
        metrics.record_saturation_rejection("audit", "workers");
        let text = metrics.encode().unwrap();
        assert!(text.contains("portcullis_policy_evaluations_total{policy=\"p\",mode=\"protect\",request_origin=\"validate\",operation=\"CREATE\",resource_kind=\"Pod\",accepted=\"false\",mutated=\"false\",error=\"\"} 1"), "{text}");
        assert!(
            text.contains("portcullis_policy_evaluation_duration_seconds_bucket{le=\"0.00005\""),
            "{text}"
        );
        assert!(
            text.contains(
                "portcullis_saturation_rejections_total{request_origin=\"audit\",limit=\"workers\"} 1"
            ),
            "{text}"
        );
        {
            let _guard = metrics.in_flight();
            assert!(
                metrics
                    .encode()
                    .unwrap()
                    .contains("portcullis_evaluations_in_flight 1")
            );
        }
        assert!(
            metrics
                .encode()
                .unwrap()
                .contains("portcullis_evaluations_in_flight 0")
        );
    }
}
