//! `portcullis-controller`: runs the controller, or prints/writes the CRDs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use portcullis_controller::leader::{self, Attempt, ElectionConfig, LeaderElector};
use portcullis_telemetry::TelemetryArgs;
use std::hash::BuildHasher as _;

/// The Portcullis Kubernetes controller.
// The run flags are accepted both without a subcommand and after `run` (what
// the chart passes), but not both at once.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(Box<RunArgs>),
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
    /// Elect a leader among the replicas on a Lease in --namespace: only the
    /// leader reconciles, the others wait as hot standbys. With
    /// `--leader-elect=false` every process reconciles.
    #[arg(
        long,
        env = "PORTCULLIS_LEADER_ELECT",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
    )]
    leader_elect: bool,
    /// This replica's holder identity in the Lease; must differ between
    /// replicas (the chart passes the Pod name). Default: the hostname and a
    /// random suffix.
    #[arg(long, env = "POD_NAME")]
    leader_election_id: Option<String>,
    /// Logs and trace export: --log-level, --log-fmt, --otlp-endpoint.
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds { out_dir }) => write_crds(out_dir),
        Some(Command::Run(args)) => run(*args).await,
        None => run(cli.run).await,
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
    portcullis_controller::controller::register_reconcilers(&metrics);
    let health = portcullis_controller::http::Health::default();
    let mut server = tokio::spawn(portcullis_controller::http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    tracing::info!(%addr, "serving metrics and health");

    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let opts = portcullis_controller::resources::BuildOptions {
        namespace: args.namespace,
        always_accept_own_namespace: !args.no_always_accept_own_namespace,
    };
    tracing::info!(
        namespace = %opts.namespace,
        selector = ?args.selector,
        leader_elect = args.leader_elect,
        "starting"
    );

    let mut elector = if args.leader_elect {
        let identity = args
            .leader_election_id
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(default_identity);
        let config = ElectionConfig::new(
            opts.namespace.clone(),
            leader::lease_name(args.selector.as_deref()),
            identity,
        );
        let mut elector =
            LeaderElector::new(client.clone(), config).context("cannot set up leader election")?;
        tracing::info!(
            lease = %elector.config().lease(),
            identity = %elector.config().identity,
            "leader election: trying to acquire the lease"
        );
        // A standby serves its probes and metrics, and is ready once it has
        // read the Lease, so that a rollout is not blocked by replicas that
        // are meant to wait.
        let on_attempt = |attempt: &Attempt| {
            if matches!(attempt, Attempt::Standby { .. }) && !health.is_ready() {
                health.set_ready();
                tracing::info!("standby ready");
            }
        };
        let leading = tokio::select! {
            () = elector.acquire(on_attempt) => true,
            () = shutdown.clone() => false,
            joined = &mut server => {
                server_result(joined)?;
                anyhow::bail!("the metrics server stopped");
            }
        };
        if !leading {
            // Signalled while standing by: nothing to stop or release.
            server_result((&mut server).await)?;
            tracing::info!("stopped");
            return Ok(());
        }
        Some(elector)
    } else {
        None
    };

    metrics.set_leader(true);
    let controllers = portcullis_controller::controller::run_observed(
        client,
        opts,
        args.selector,
        metrics.clone(),
        health,
        shutdown.clone(),
    );
    let outcome = {
        // A failed HTTP server ends the process (non-zero) rather than
        // leaving a controller whose probes fail; after a signal, reconciles
        // in flight get SHUTDOWN_TIMEOUT to finish, within the default 30 s
        // grace period. The Lease is renewed meanwhile: they still write.
        let stopped = async {
            tokio::try_join!(controllers.map(Ok::<(), anyhow::Error>), async {
                server_result((&mut server).await)
            })
            .map(|_| ())
        };
        let deadline = async {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_TIMEOUT).await;
        };
        let lost = async {
            match elector.as_mut() {
                Some(elector) => elector.keep_renewing().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = stopped => result,
            () = deadline => {
                tracing::warn!(timeout = ?SHUTDOWN_TIMEOUT, "reconciles still running at shutdown, exiting anyway");
                Ok(())
            }
            lost = lost => {
                // Returning drops (aborts) the reconcilers at once: another
                // replica may take the Lease as soon as it expires. Exiting
                // non-zero makes Kubernetes restart this one as a standby.
                metrics.set_leader(false);
                tracing::error!(reason = %lost, "lost leadership: stopped reconciling, exiting");
                return Err(anyhow::Error::new(lost).context("lost leadership"));
            }
        }
    };
    metrics.set_leader(false);
    if let Some(elector) = elector.as_mut() {
        // Release only now that the reconcilers have stopped, so that the
        // next leader never overlaps with this one.
        match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot release the lease; a standby takes over once it expires");
            }
            Err(_) => tracing::warn!(
                timeout = ?RELEASE_TIMEOUT,
                "releasing the lease timed out; a standby takes over once it expires"
            ),
        }
    }
    outcome?;
    tracing::info!("stopped");
    Ok(())
}

fn server_result(
    joined: Result<Result<(), portcullis_controller::http::HttpError>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    joined
        .context("the metrics server task failed")?
        .context("the metrics server failed")
}

/// `<hostname>_<random>`: unique per process even for two replicas on one
/// host or a restarted container, as client-go's default identity is.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "portcullis-controller".to_string());
    // std seeds RandomState from the OS's random source; the pid and the time
    // are mixed in only as a fallback against a weak seed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let suffix =
        std::collections::hash_map::RandomState::new().hash_one((std::process::id(), nanos));
    format!("{host}_{suffix:016x}")
}

/// How long releasing the Lease may take at shutdown (it is two requests).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("portcullis-controller").chain(args.iter().copied()))
            .map(|cli| match cli.command {
                Some(Command::Run(args)) => *args,
                _ => cli.run,
            })
    }

    #[test]
    fn flags_after_run_as_the_chart_passes_them() {
        let args = parse(&[
            "run",
            "--namespace",
            "portcullis",
            "--log-level",
            "info",
            "--log-fmt",
            "json",
            "--metrics-addr",
            "0.0.0.0:8080",
            "--leader-elect=false",
            "--no-always-accept-own-namespace",
            "--selector",
            "shard=a",
        ])
        .unwrap();
        assert_eq!(args.namespace, "portcullis");
        assert_eq!(args.metrics_addr.port(), 8080);
        assert!(!args.leader_elect);
        assert!(args.no_always_accept_own_namespace);
        assert_eq!(args.selector.as_deref(), Some("shard=a"));
        // Without a subcommand, as the image test and the docs run it.
        let args = parse(&["--namespace", "ns", "--leader-elect=false"]).unwrap();
        assert_eq!(args.namespace, "ns");
        assert!(!args.leader_elect);
        // Run flags before a subcommand are ambiguous: refused.
        assert!(parse(&["--namespace", "ns", "crds"]).is_err());
    }

    #[test]
    fn leader_election_flags() {
        if std::env::var_os("PORTCULLIS_LEADER_ELECT").is_none() {
            assert!(parse(&[]).unwrap().leader_elect, "on by default");
        }
        assert!(!parse(&["--leader-elect=false"]).unwrap().leader_elect);
        assert!(parse(&["--leader-elect"]).unwrap().leader_elect);
        assert!(parse(&["run", "--leader-elect=true"]).unwrap().leader_elect);
        // Without `=`, `false` would silently be taken for something else.
        assert!(parse(&["--leader-elect", "false"]).is_err());
        let args = parse(&["--leader-election-id", "pod-1"]).unwrap();
        assert_eq!(args.leader_election_id.as_deref(), Some("pod-1"));
    }

    #[test]
    fn default_identities_differ() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        let (host, suffix) = a.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert_eq!(suffix.len(), 16);
    }
}
