//! `portcullis-controller`: runs the controller, or prints/writes the CRDs.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

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
    /// Log filter (`info`, `portcullis_controller=debug`, ...).
    #[arg(long, env = "PORTCULLIS_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// `text` or `json`.
    #[arg(long, env = "PORTCULLIS_LOG_FMT", default_value = "text")]
    log_fmt: String,
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
    let filter = EnvFilter::try_new(&args.log_level).context("invalid --log-level")?;
    if args.log_fmt == "json" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let opts = portcullis_controller::resources::BuildOptions {
        namespace: args.namespace,
        always_accept_own_namespace: !args.no_always_accept_own_namespace,
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tracing::info!(namespace = %opts.namespace, selector = ?args.selector, "starting");
    portcullis_controller::controller::run_with_selector(client, opts, args.selector, shutdown)
        .await;
    Ok(())
}
