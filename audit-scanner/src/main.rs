//! `audit-scanner`: one audit run of the cluster in the current kubeconfig
//! (in-cluster: the Pod's ServiceAccount), then exit. Exit status 0 when
//! the run was complete, 1 otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use portcullis_audit_scanner::client::ClientOptions;
use portcullis_audit_scanner::report::ReportKind;
use portcullis_audit_scanner::{Config, run};
use portcullis_telemetry::TelemetryArgs;

/// Audits the objects of a cluster against the active Portcullis policies
/// and writes policy reports (OpenReports).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Audit only this namespace (no cluster-scoped objects).
    #[arg(short = 'n', long, conflicts_with = "cluster")]
    namespace: Option<String>,
    /// Audit only cluster-scoped objects.
    #[arg(short = 'c', long)]
    cluster: bool,
    /// The controller's namespace: where the policy-server Services are. Its
    /// objects are never audited.
    #[arg(
        short = 'k',
        long,
        env = "PORTCULLIS_NAMESPACE",
        default_value = "portcullis"
    )]
    portcullis_namespace: String,
    /// Namespaces never audited (repeat, or separate with commas).
    #[arg(short = 'i', long, value_delimiter = ',')]
    ignore_namespaces: Vec<String>,
    /// PEM bundle of the CA that signs the policy-servers' certificates (the
    /// `ca.crt` of the controller's `portcullis-ca` Secret).
    #[arg(long, env = "PORTCULLIS_AUDIT_CA_FILE", default_value = "/pki/ca.crt")]
    ca_file: PathBuf,
    /// Client certificate (PEM) for policy-servers that require mutual TLS.
    #[arg(long, env = "PORTCULLIS_AUDIT_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "PORTCULLIS_AUDIT_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// `NAME=HOST:PORT`: reach PolicyServer NAME at this address instead of
    /// its Service (its certificate is still verified for the Service's
    /// name), e.g. through `kubectl port-forward`. Repeatable.
    #[arg(long, value_parser = parse_address)]
    policy_server_address: Vec<(String, SocketAddr)>,
    /// Report format: OpenReports (`openreports.io/v1alpha1`) or the legacy
    /// `wgpolicyk8s.io/v1alpha2` PolicyReports.
    #[arg(long, value_enum, default_value_t = ReportKind::Openreports)]
    report_kind: ReportKind,
    /// Write no reports.
    #[arg(long)]
    disable_store: bool,
    /// Print each audited object's results as a JSON line on stdout.
    #[arg(short = 'o', long)]
    output_scan: bool,
    /// Namespaces audited at once.
    #[arg(long, default_value_t = 4)]
    parallel_namespaces: usize,
    /// Objects audited at once in the whole run.
    #[arg(long, default_value_t = 64)]
    parallel_resources: usize,
    /// Policies evaluated at once for one object.
    #[arg(long, default_value_t = 5)]
    parallel_policies: usize,
    /// Objects per LIST page.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    page_size: u32,
    /// Seconds between progress logs.
    #[arg(long, default_value_t = 10)]
    progress_interval: u64,
    /// Push the run's metrics to this Prometheus Pushgateway
    /// (`<url>/metrics/job/portcullis-audit-scanner`).
    #[arg(long, env = "PORTCULLIS_AUDIT_PUSHGATEWAY_URL")]
    pushgateway_url: Option<String>,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

fn parse_address(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=HOST:PORT"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not HOST:PORT: {e}"))?;
    Ok((name.to_string(), addr))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _telemetry = match portcullis_telemetry::init(
        &cli.telemetry
            .options("portcullis-audit-scanner", env!("CARGO_PKG_VERSION")),
    ) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("audit-scanner: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match main_inner(cli).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "audit run failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn main_inner(cli: Cli) -> anyhow::Result<bool> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (KUBECONFIG or in-cluster)")?;
    let pushgateway = cli.pushgateway_url.clone();
    let config = Config {
        controller_namespace: cli.portcullis_namespace.clone(),
        only_namespace: cli.namespace,
        cluster_only: cli.cluster,
        ignore_namespaces: cli.ignore_namespaces,
        report_kind: cli.report_kind,
        disable_store: cli.disable_store,
        output_scan: cli.output_scan,
        parallel_namespaces: cli.parallel_namespaces,
        parallel_resources: cli.parallel_resources,
        parallel_policies: cli.parallel_policies,
        page_size: cli.page_size,
        client: ClientOptions {
            namespace: cli.portcullis_namespace,
            ca_file: cli.ca_file,
            client_identity: cli.client_cert.zip(cli.client_key),
            address_overrides: cli.policy_server_address,
        },
        progress_interval: Duration::from_secs(cli.progress_interval.max(1)),
        pushgateway_url: pushgateway.clone(),
    };
    let outcome = run(client, config).await?;
    let stats = &outcome.stats;
    let exposition = stats.exposition(outcome.duration, outcome.complete);
    use portcullis_audit_scanner::report::Outcome;
    use portcullis_audit_scanner::stats::Verb;
    use std::sync::atomic::Ordering::Relaxed;
    tracing::info!(
        complete = outcome.complete,
        duration_seconds = outcome.duration.as_secs_f64(),
        objects = stats.objects.load(Relaxed),
        evaluations = stats.evaluations.load(Relaxed),
        pass = stats.results(Outcome::Pass),
        fail = stats.results(Outcome::Fail),
        error = stats.results(Outcome::Error),
        skip = stats.results(Outcome::Skip),
        reports_written = stats.reports_written.load(Relaxed),
        reports_unchanged = stats.reports_unchanged.load(Relaxed),
        reports_deleted = stats.reports_deleted.load(Relaxed),
        report_errors = stats.report_errors.load(Relaxed),
        api_list = stats.api_requests(Verb::List),
        api_patch = stats.api_requests(Verb::Patch),
        api_delete = stats.api_requests(Verb::Delete),
        metrics = %exposition,
        "audit run finished"
    );
    if let Some(url) = pushgateway
        && let Err(e) = push_metrics(&url, exposition).await
    {
        tracing::warn!(error = format!("{e:#}"), "cannot push the metrics");
    }
    Ok(outcome.complete)
}

/// PUT of the metrics to a Pushgateway (replacing the job's previous ones).
async fn push_metrics(base: &str, exposition: String) -> anyhow::Result<()> {
    let url = format!(
        "{}/metrics/job/portcullis-audit-scanner",
        base.trim_end_matches('/')
    );
    let response = reqwest_oci::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .put(&url)
        .header("content-type", "text/plain; version=0.0.4")
        .body(exposition)
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "PUT {url}: HTTP {}",
        response.status()
    );
    tracing::info!(%url, "metrics pushed");
    Ok(())
}
