//! `policy-server`: the Portcullis admission webhook.

use anyhow::Context as _;
use clap::Parser as _;
use portcullis_host::cli::PolicyServerArgs;

fn main() -> anyhow::Result<()> {
    let args = PolicyServerArgs::parse();
    portcullis_host::logging::init(&args.log_level, args.log_fmt).map_err(anyhow::Error::msg)?;
    let config = args.to_server_config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(portcullis_host::run(config, shutdown_signal()))
        .context("policy-server failed")
}

/// Completes on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
