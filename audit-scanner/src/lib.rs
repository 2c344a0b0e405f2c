//! The Portcullis audit scanner: evaluates the objects that already exist
//! in a cluster against the active policies, and writes one policy report
//! per object.
//!
//! One run: list the policies with `backgroundAudit: true` that are
//! `active` ([`policies`]); resolve their rules to resource types through
//! API discovery ([`resources`]); then, per namespace (and once for the
//! cluster-scoped types), list the matching objects page by page, select
//! the policies that apply to each object (namespace selector, object
//! selector, `matchConditions` in CEL: [`selector`], [`conditions`]), send
//! each policy a synthetic CREATE AdmissionReview ([`review`]) at its
//! policy-server's `/audit/<id>` ([`client`]), and write the object's
//! report when it changed ([`report`]). Reports of objects that no policy
//! audits any more are deleted at the end of a complete run.
//!
//! The scanner knows nothing of how a policy is evaluated: that is the
//! policy-server's business.

pub mod client;
pub mod conditions;
mod object;
pub mod policies;
pub mod progress;
pub mod report;
pub mod resources;
pub mod review;
pub mod scan;
pub mod selector;
pub mod stats;

use std::time::Duration;

pub use scan::{RunOutcome, run};

/// What one run does.
#[derive(Debug, Clone)]
pub struct Config {
    /// The controller's namespace: where the policy-server Services are; its
    /// own objects are never audited (the policy-servers always admit them).
    pub controller_namespace: String,
    /// Audit only this namespace (no cluster-scoped objects).
    pub only_namespace: Option<String>,
    /// Audit only cluster-scoped objects.
    pub cluster_only: bool,
    /// Namespaces never audited (besides the controller's).
    pub ignore_namespaces: Vec<String>,
    /// The report format.
    pub report_kind: report::ReportKind,
    /// Write no reports (with `output_scan`, a dry run).
    pub disable_store: bool,
    /// Print each object's results as a JSON line on stdout.
    pub output_scan: bool,
    /// Namespaces audited at once.
    pub parallel_namespaces: usize,
    /// Objects audited at once, in the whole run.
    pub parallel_resources: usize,
    /// Policies evaluated at once for one object.
    pub parallel_policies: usize,
    /// Objects per LIST page.
    pub page_size: u32,
    /// How to reach the policy-servers.
    pub client: client::ClientOptions,
    /// Interval of the progress logs.
    pub progress_interval: Duration,
    /// Prometheus Pushgateway base URL to push the run's metrics to.
    pub pushgateway_url: Option<String>,
}
