//! Prometheus metrics of the controller (`portcullis_controller_*`), served
//! as OpenMetrics text on `/metrics` by [`crate::http`].
//!
//! Reconciliations are recorded by one wrapper around the reconcile
//! functions (see `controller.rs`); the policy gauge is computed at scrape
//! time from the controllers' caches, so it can never drift from what the
//! controller sees (a deleted policy simply is no longer counted).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kube::runtime::reflector::Store;
use portcullis_telemetry::metrics::{HistogramFamily, MetricsRegistry, histogram_family};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};

use portcullis_api::{PolicyResource, PolicyStatus};

/// Prefix of every metric name.
pub const PREFIX: &str = "portcullis_controller";

/// Reconcile duration buckets, in seconds: a reconcile is a handful of API
/// calls (milliseconds each) and, for a policy waiting on its policy-server,
/// up to one 2-second replica poll per replica.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `result` label value of a reconcile that succeeded.
pub const RESULT_SUCCESS: &str = "success";
/// `result` label value of a reconcile that failed (and is retried).
pub const RESULT_ERROR: &str = "error";

/// `status` label value of a policy the controller has not written a status
/// for yet.
pub const PHASE_UNKNOWN: &str = "unknown";

/// Every `status` label value of the policy gauge: `status.policyStatus`,
/// plus [`PHASE_UNKNOWN`].
pub const PHASES: [&str; 5] = [
    "unscheduled",
    "scheduled",
    "pending",
    "active",
    PHASE_UNKNOWN,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    kind: String,
    status: &'static str,
}

/// Every metric the controller exports.
#[derive(Debug)]
pub struct Metrics {
    registry: MetricsRegistry,
    reconciliations: Family<ReconcileLabels, Counter>,
    durations: HistogramFamily<KindLabels>,
    policies: std::sync::Arc<PolicyPhases>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = MetricsRegistry::with_prefix(PREFIX);
        let reconciliations = Family::<ReconcileLabels, Counter>::default();
        let durations = histogram_family(&DURATION_BUCKETS);
        let policies = std::sync::Arc::new(PolicyPhases::default());
        // prometheus-client appends `_total` to counters.
        registry.register(
            "reconciliations",
            "Reconciliations, by kind (PolicyServer, ClusterAdmissionPolicy, AdmissionPolicy) and result (success|error)",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation, by kind",
            durations.clone(),
        );
        registry.register_collector(Box::new(policies.clone()));
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process is the leader and runs the reconcilers, else 0 (a standby, or stopped reconciling)",
            leader.clone(),
        );
        Self {
            registry,
            reconciliations,
            durations,
            policies,
            leader,
        }
    }

    /// Creates the series of a reconciler's `kind` at zero, so that they
    /// exist (and `rate()` works) before its first reconcile.
    pub fn register_reconciler(&self, kind: &str) {
        for result in [RESULT_SUCCESS, RESULT_ERROR] {
            let _ = self.reconciliations.get_or_create(&ReconcileLabels {
                kind: kind.to_string(),
                result,
            });
        }
        let _ = self.durations.get_or_create(&KindLabels {
            kind: kind.to_string(),
        });
    }

    /// Records one reconciliation of an object of `kind`.
    pub fn record_reconcile(&self, kind: &str, duration: Duration, success: bool) {
        let result = if success {
            RESULT_SUCCESS
        } else {
            RESULT_ERROR
        };
        self.reconciliations
            .get_or_create(&ReconcileLabels {
                kind: kind.to_string(),
                result,
            })
            .inc();
        self.durations
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Records whether this process leads (runs the reconcilers).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts the policies in `store` (a controller's cache of one policy
    /// kind) by status phase on every scrape.
    pub fn track_policies<P: PolicyResource>(&self, store: Store<P>) {
        let kind = P::kind(&()).into_owned();
        let count = move || {
            let mut phases: BTreeMap<&'static str, i64> =
                PHASES.iter().map(|phase| (*phase, 0)).collect();
            for policy in store.state() {
                *phases.entry(phase(policy.status())).or_default() += 1;
            }
            phases
        };
        self.policies
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((kind, Box::new(count)));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.registry.encode()
    }
}

/// The `status` label value of a policy.
fn phase(status: Option<&PolicyStatus>) -> &'static str {
    status.map_or(PHASE_UNKNOWN, |s| s.policy_status.as_str())
}

/// Counts of one policy kind by phase.
type PhaseCounter = Box<dyn Fn() -> BTreeMap<&'static str, i64> + Send + Sync>;

/// The `policies` gauge, computed from the registered caches at scrape time.
#[derive(Default)]
struct PolicyPhases {
    sources: Mutex<Vec<(String, PhaseCounter)>>,
}

impl std::fmt::Debug for PolicyPhases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyPhases").finish_non_exhaustive()
    }
}

impl Collector for PolicyPhases {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let mut metric = encoder.encode_descriptor(
            "policies",
            "Policies handled by this controller, by kind and status (status.policyStatus; unknown: no status written yet)",
            None,
            MetricType::Gauge,
        )?;
        for (kind, count) in sources.iter() {
            for (status, n) in count() {
                let labels = PolicyLabels {
                    kind: kind.clone(),
                    status,
                };
                ConstGauge::new(n).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_api::PolicyStatusEnum;

    #[test]
    fn encodes_reconciliations_and_durations() {
        let metrics = Metrics::new();
        metrics.register_reconciler("PolicyServer");
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"portcullis_controller_reconciliations_total{kind="PolicyServer",result="error"} 0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"portcullis_controller_reconcile_duration_seconds_count{kind="PolicyServer"} 0"#
            ),
            "{text}"
        );
        metrics.record_reconcile("PolicyServer", Duration::from_millis(30), true);
        metrics.record_reconcile("PolicyServer", Duration::from_millis(30), true);
        metrics.record_reconcile("AdmissionPolicy", Duration::from_secs(3), false);
        let text = metrics.encode().unwrap();
        for line in [
            r#"portcullis_controller_reconciliations_total{kind="PolicyServer",result="success"} 2"#,
            r#"portcullis_controller_reconciliations_total{kind="AdmissionPolicy",result="error"} 1"#,
            r#"portcullis_controller_reconcile_duration_seconds_count{kind="PolicyServer"} 2"#,
            r#"portcullis_controller_reconcile_duration_seconds_bucket{le="0.05",kind="PolicyServer"} 2"#,
            r#"portcullis_controller_reconcile_duration_seconds_bucket{le="2.5",kind="AdmissionPolicy"} 0"#,
            r#"portcullis_controller_reconcile_duration_seconds_bucket{le="5.0",kind="AdmissionPolicy"} 1"#,
            "# TYPE portcullis_controller_policies gauge",
            "# TYPE portcullis_controller_leader gauge",
            "portcullis_controller_leader 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn leader_gauge() {
        let metrics = Metrics::new();
        let value = |metrics: &Metrics| -> Option<String> {
            let text = metrics.encode().unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("portcullis_controller_leader "))
                .map(str::to_string)
        };
        assert_eq!(value(&metrics).as_deref(), Some("0"));
        metrics.set_leader(true);
        assert_eq!(value(&metrics).as_deref(), Some("1"));
        metrics.set_leader(false);
        assert_eq!(value(&metrics).as_deref(), Some("0"));
    }

    #[test]
    fn policy_gauge_follows_the_cache() {
        use kube::runtime::watcher::Event;
        use portcullis_api::ClusterAdmissionPolicy;

        let cap = |name: &str, status: &str| -> ClusterAdmissionPolicy {
            serde_yaml::from_str(&format!(
                r#"
apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata: {{name: {name}}}
spec:
  module: registry://example.com/p:v1
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}]
  mutating: false
{status}"#
            ))
            .unwrap()
        };
        let (store, mut writer) = kube::runtime::reflector::store::<ClusterAdmissionPolicy>();
        let metrics = Metrics::new();
        metrics.track_policies(store);
        let active = cap("a", "status: {policyStatus: active}");
        writer.apply_watcher_event(&Event::Apply(active.clone()));
        writer.apply_watcher_event(&Event::Apply(cap("b", "status: {policyStatus: active}")));
        writer.apply_watcher_event(&Event::Apply(cap("c", "")));
        let gauge = |text: &str, status: &str| -> Option<String> {
            let prefix = format!(
                r#"portcullis_controller_policies{{kind="ClusterAdmissionPolicy",status="{status}"}} "#
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .map(str::to_string)
        };
        let text = metrics.encode().unwrap();
        assert_eq!(gauge(&text, "active").as_deref(), Some("2"), "{text}");
        assert_eq!(gauge(&text, "unknown").as_deref(), Some("1"), "{text}");
        assert_eq!(gauge(&text, "pending").as_deref(), Some("0"), "{text}");
        // A deleted policy is no longer counted.
        writer.apply_watcher_event(&Event::Delete(active));
        let text = metrics.encode().unwrap();
        assert_eq!(gauge(&text, "active").as_deref(), Some("1"), "{text}");
    }

    #[test]
    fn phase_of_a_policy_status() {
        assert_eq!(phase(None), PHASE_UNKNOWN);
        let status = |policy_status| PolicyStatus {
            policy_status,
            mode: None,
            conditions: Vec::new(),
        };
        assert_eq!(phase(Some(&status(PolicyStatusEnum::Active))), "active");
        assert_eq!(phase(Some(&status(PolicyStatusEnum::Pending))), "pending");
        assert_eq!(
            phase(Some(&status(PolicyStatusEnum::Unscheduled))),
            "unscheduled"
        );
        assert_eq!(
            phase(Some(&status(PolicyStatusEnum::Scheduled))),
            "scheduled"
        );
    }
}
