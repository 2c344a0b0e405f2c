//! `portcullis-controller`: runs the controller, or prints/writes the CRDs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use portcullis_telemetry::TelemetryArgs;

/// The Portcullis Kubernetes controller.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run,
    /// Print the CRDs as YAML, or write one file per CRD with `--out-dir`.
    Crds {
        /// Directory to write `<plural>.<group>.yaml` files into.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Namespace of the Secrets, ConfigMaps, Deployments and Services the
    /// controller creates.
    #[arg(long, env = "PORTCULLIS_NAMESPACE", default_value = "portcullis")]
    namespace: String,
    /// Do not make policy-servers accept every request from the controller
    /// namespace.
    #[arg(long, env = "PORTCULLIS_NO_ALWAYS_ACCEPT_OWN_NAMESPACE")]
    no_always_accept_own_namespace: bool,
    /// Only handle PolicyServers and policies whose labels match this label
    /// selector (e.g. `shard=a`); all of them when unset.
    #[arg(long, env = "PORTCULLIS_SELECTOR")]
    selector: Option<String>,
    /// Address of the plain-HTTP `/metrics`, `/healthz` and `/readyz`
    /// endpoints (port 0: any free port, logged at startup).
    #[arg(long, env = "PORTCULLIS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Logs and trace export: --log-level, --log-fmt, --otlp-endpoint.
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds { out_dir }) => write_crds(out_dir),
        Some(Command::Run) | None => run(cli.run).await,
    }
}

fn write_crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    for crd in portcullis_controller::crd::crds() {
        let yaml = portcullis_controller::crd::crd_yaml(&crd)?;
        match &out_dir {
            Some(dir) => {
                let path = dir.join(portcullis_controller::crd::crd_file_name(&crd));
                std::fs::write(&path, yaml).with_context(|| format!("write {}", path.display()))?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Held to the end: dropping it sends the last reconcile spans.
    let _telemetry = portcullis_telemetry::init(
        &args
            .telemetry
            .options("portcullis-controller", env!("CARGO_PKG_VERSION")),
    )
    .context("cannot set up logging and tracing")?;
    let shutdown = shutdown_signal()?;

    // The endpoints come up before the client so that /healthz answers (and
    // /readyz says "not ready") while the controllers start.
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}", args.metrics_addr))?;
    let addr = listener
        .local_addr()
        .context("cannot read the metrics listener's address")?;
    let metrics = Arc::new(portcullis_controller::metrics::Metrics::new());
    let health = portcullis_controller::http::Health::default();
    let server = portcullis_controller::http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    );
    let server = tokio::spawn(server);
    tracing::info!(%addr, "serving metrics and health");

    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let opts = portcullis_controller::resources::BuildOptions {
        namespace: args.namespace,
        always_accept_own_namespace: !args.no_always_accept_own_namespace,
    };
    tracing::info!(namespace = %opts.namespace, selector = ?args.selector, "starting");
    let controllers = portcullis_controller::controller::run_observed(
        client,
        opts,
        args.selector,
        metrics,
        health,
        shutdown.clone(),
    );
    let server = async {
        server
            .await
            .context("the metrics server task failed")?
            .context("the metrics server failed")
    };
    // A failed HTTP server ends the process (non-zero) rather than leaving a
    // controller whose probes fail; after a signal, reconciles in flight get
    // SHUTDOWN_TIMEOUT to finish, within the default 30 s grace period.
    let stopped =
        async { tokio::try_join!(controllers.map(Ok::<(), anyhow::Error>), server).map(|_| ()) };
    let deadline = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_TIMEOUT).await;
    };
    tokio::select! {
        result = stopped => result?,
        () = deadline => tracing::warn!(timeout = ?SHUTDOWN_TIMEOUT, "reconciles still running at shutdown, exiting anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long reconciles in flight may take to finish after SIGTERM/SIGINT.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Completes on SIGTERM (what the kubelet sends to stop a Pod) or SIGINT.
/// The handlers are installed now, so a signal that arrives during startup
/// is not lost.
fn shutdown_signal() -> anyhow::Result<Shared<BoxFuture<'static, ()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    }
    .boxed()
    .shared())
}
