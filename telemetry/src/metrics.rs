//! The Prometheus scaffolding the policy-server and the controller share: a
//! registry that encodes itself as OpenMetrics text, histogram families
//! with fixed buckets, and the `/metrics` response.
//!
//! Each binary defines its own metrics (names, labels, buckets) on top.

use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Content type of [`MetricsRegistry::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metrics registry.
#[derive(Default)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

impl MetricsRegistry {
    /// A registry whose metric names are used as given.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that prefixes every metric name with `prefix_`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            registry: Registry::with_prefix(prefix),
        }
    }

    /// Registers `metric` as `name` (counters get `_total` appended).
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// Registers a collector, whose metrics are computed at scrape time.
    pub fn register_collector(
        &mut self,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) {
        self.registry.register_collector(collector);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Builds histograms with fixed bucket bounds (the constructor of a
/// [`HistogramFamily`]).
#[derive(Debug, Clone, Copy)]
pub struct Buckets(pub &'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// A family of histograms, one per label set, all with the same buckets.
pub type HistogramFamily<L> = Family<L, Histogram, Buckets>;

/// A histogram family with `buckets`.
pub fn histogram_family<L>(buckets: &'static [f64]) -> HistogramFamily<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + fmt::Debug,
{
    Family::new_with_constructor(Buckets(buckets))
}

/// The `/metrics` response: 200 with the exposition, or 500 with the reason
/// encoding failed.
pub fn metrics_response(encoded: Result<String, fmt::Error>) -> http::Response<String> {
    let (status, content_type, body) = match encoded {
        Ok(text) => (http::StatusCode::OK, OPENMETRICS_CONTENT_TYPE, text),
        Err(e) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("cannot encode metrics: {e}\n"),
        ),
    };
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        kind: String,
    }

    #[test]
    fn registry_encodes_prefixed_metrics_and_buckets() {
        let mut registry = MetricsRegistry::with_prefix("portcullis_test");
        let counter = Counter::<u64>::default();
        let durations = histogram_family::<Labels>(&[0.5, 1.0]);
        registry.register("things", "Things", counter.clone());
        registry.register("duration_seconds", "Durations", durations.clone());
        counter.inc();
        durations
            .get_or_create(&Labels { kind: "a".into() })
            .observe(0.7);
        let text = registry.encode().unwrap();
        assert!(text.contains("portcullis_test_things_total 1"), "{text}");
        assert!(
            text.contains(r#"portcullis_test_duration_seconds_bucket{le="0.5",kind="a"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portcullis_test_duration_seconds_bucket{le="1.0",kind="a"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        let response = metrics_response(Ok(text));
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            OPENMETRICS_CONTENT_TYPE
        );
        let failed = metrics_response(Err(fmt::Error));
        assert_eq!(failed.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    }
}
