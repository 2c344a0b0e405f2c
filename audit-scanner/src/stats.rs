//! What a run did, counted as it goes: the progress logs and the metrics at
//! the end are read from here.
//!
//! A CronJob's Pod lives for one run, so there is no scrape window: the
//! metrics are logged at the end and, with `--pushgateway-url`, pushed to a
//! Prometheus Pushgateway. They are written in the Prometheus text format
//! 0.0.4 by hand, because that is what the Pushgateway (and node-exporter's
//! textfile collector) parse, and `prometheus-client` writes only
//! OpenMetrics, whose `_total` counter naming the 0.0.4 parser reads as a
//! different metric.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::report::Outcome;

/// API request verbs the scanner counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// LIST (objects, reports, namespaces, policies).
    List,
    /// PATCH (report server-side applies).
    Patch,
    /// DELETE (stale reports).
    Delete,
    /// Discovery GETs.
    Get,
}

impl Verb {
    const ALL: [Verb; 4] = [Verb::List, Verb::Patch, Verb::Delete, Verb::Get];

    fn as_str(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::Get => "get",
        }
    }
}

/// Counters of one run.
#[derive(Debug, Default)]
pub struct Stats {
    /// Objects audited (sent to at least one policy, or reported).
    pub objects: AtomicU64,
    /// Evaluations requested from policy-servers.
    pub evaluations: AtomicU64,
    results: [AtomicU64; 4],
    /// Reports written (server-side apply).
    pub reports_written: AtomicU64,
    /// Reports left as they were (nothing changed).
    pub reports_unchanged: AtomicU64,
    /// Stale reports deleted at the end.
    pub reports_deleted: AtomicU64,
    /// Report writes that failed.
    pub report_errors: AtomicU64,
    /// Resource types (per namespace) that could not be listed.
    pub list_errors: AtomicU64,
    api: [AtomicU64; 4],
    /// Listed objects handled (audited, or no policy applies): the
    /// progress logs' "done".
    pub objects_done: AtomicU64,
    /// Objects counted in the LISTs read so far: the progress logs' total.
    pub objects_listed: AtomicU64,
    /// Namespaces (and the cluster-scoped part) started.
    pub units_started: AtomicU64,
    /// Namespaces (and the cluster-scoped part) finished.
    pub units_done: AtomicU64,
    /// Namespaces (and the cluster-scoped part) to audit.
    pub units_total: AtomicU64,
    /// Policies audited with.
    pub policies_audited: AtomicU64,
    /// Policies left out.
    pub policies_skipped: AtomicU64,
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Pass => 0,
        Outcome::Fail => 1,
        Outcome::Error => 2,
        Outcome::Skip => 3,
    }
}

const OUTCOMES: [Outcome; 4] = [Outcome::Pass, Outcome::Fail, Outcome::Error, Outcome::Skip];

impl Stats {
    /// Counts one result.
    pub fn result(&self, outcome: Outcome) {
        self.results[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// Results counted with `outcome`.
    pub fn results(&self, outcome: Outcome) -> u64 {
        self.results[outcome_index(outcome)].load(Ordering::Relaxed)
    }

    /// Counts one API request.
    pub fn api_request(&self, verb: Verb) {
        self.api[verb as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// API requests counted for `verb`.
    pub fn api_requests(&self, verb: Verb) -> u64 {
        self.api[verb as usize].load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text format 0.0.4.
    pub fn exposition(&self, duration: Duration, success: bool) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP portcullis_audit_{name} {help}");
            let _ = writeln!(out, "# TYPE portcullis_audit_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "portcullis_audit_{name}{labels} {value}");
            }
        };
        let one = |v: u64| vec![(String::new(), v as f64)];
        metric(
            "run_success",
            "gauge",
            "1 if the last run audited everything it was asked to, else 0.",
            &[(String::new(), if success { 1.0 } else { 0.0 })],
        );
        metric(
            "run_duration_seconds",
            "gauge",
            "Duration of the last run.",
            &[(String::new(), duration.as_secs_f64())],
        );
        metric(
            "run_timestamp_seconds",
            "gauge",
            "End of the last run (Unix time).",
            &[(
                String::new(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
            )],
        );
        metric(
            "objects_total",
            "counter",
            "Objects audited.",
            &one(get(&self.objects)),
        );
        metric(
            "evaluations_total",
            "counter",
            "Evaluations sent to policy-servers.",
            &one(get(&self.evaluations)),
        );
        let results: Vec<_> = OUTCOMES
            .iter()
            .map(|o| {
                (
                    format!("{{result=\"{}\"}}", o.as_str()),
                    self.results(*o) as f64,
                )
            })
            .collect();
        metric(
            "results_total",
            "counter",
            "Report results, by result.",
            &results,
        );
        metric(
            "reports_total",
            "counter",
            "Reports, by what the run did with them.",
            &[
                (
                    "{operation=\"written\"}".to_string(),
                    get(&self.reports_written) as f64,
                ),
                (
                    "{operation=\"unchanged\"}".to_string(),
                    get(&self.reports_unchanged) as f64,
                ),
                (
                    "{operation=\"deleted\"}".to_string(),
                    get(&self.reports_deleted) as f64,
                ),
                (
                    "{operation=\"failed\"}".to_string(),
                    get(&self.report_errors) as f64,
                ),
            ],
        );
        let api: Vec<_> = Verb::ALL
            .iter()
            .map(|v| {
                (
                    format!("{{verb=\"{}\"}}", v.as_str()),
                    self.api_requests(*v) as f64,
                )
            })
            .collect();
        metric(
            "api_requests_total",
            "counter",
            "Kubernetes API requests, by verb.",
            &api,
        );
        metric(
            "list_errors_total",
            "counter",
            "Resource types (per namespace) that could not be listed.",
            &one(get(&self.list_errors)),
        );
        metric(
            "policies",
            "gauge",
            "Policies, by whether they were audited.",
            &[
                (
                    "{state=\"audited\"}".to_string(),
                    get(&self.policies_audited) as f64,
                ),
                (
                    "{state=\"skipped\"}".to_string(),
                    get(&self.policies_skipped) as f64,
                ),
            ],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_prometheus_text() {
        let stats = Stats::default();
        stats.result(Outcome::Fail);
        stats.result(Outcome::Fail);
        stats.api_request(Verb::Patch);
        stats.objects.fetch_add(3, Ordering::Relaxed);
        let text = stats.exposition(Duration::from_millis(1500), true);
        assert!(
            text.contains("# TYPE portcullis_audit_results_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_audit_results_total{result=\"fail\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("portcullis_audit_api_requests_total{verb=\"patch\"} 1\n"));
        assert!(text.contains("portcullis_audit_objects_total 3\n"));
        assert!(text.contains("portcullis_audit_run_duration_seconds 1.5\n"));
        assert!(text.contains("portcullis_audit_run_success 1\n"));
        assert!(!text.contains("# EOF"));
    }
}
