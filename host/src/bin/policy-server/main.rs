//! `policy-server`: the Portcullis admission webhook.

use anyhow::Context as _;
use clap::Parser as _;
use portcullis_host::cli::PolicyServerArgs;

fn main() -> anyhow::Result<()> {
    let args = PolicyServerArgs::parse();
    let config = args.to_server_config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.io_threads())
        .thread_name("portcullis-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Trace export runs its batch task on this runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        portcullis_telemetry::init(
            &args
                .telemetry
                .options("policy-server", env!("CARGO_PKG_VERSION")),
        )
        .context("cannot set up logging and tracing")?
    };
    let result = runtime
        .block_on(portcullis_host::run(config, shutdown_signal()))
        .context("policy-server failed");
    // Before the runtime goes: the last spans are sent from it.
    telemetry.shutdown();
    result
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
