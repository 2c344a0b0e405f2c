//! `portcullis`: the policy author's tool. Run a policy on a request, measure
//! it, inspect it, and move it to and from OCI registries.

mod bench;
mod inputs;
mod oci;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Run, test, benchmark, inspect and publish Portcullis policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level for the tool and the policies' own log messages.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_LOG_LEVEL",
        default_value = "warn"
    )]
    log_level: String,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a policy on one request and print the AdmissionResponse.
    ///
    /// Exits 0 whether the request is allowed or denied, and non-zero only
    /// when the evaluation itself fails (bad settings, a trap, a timeout...).
    Run(run::RunArgs),
    /// Measure a policy's evaluation cost with a fresh instance per call, as
    /// the policy-server runs it.
    Bench(bench::BenchArgs),
    /// Show a module's ABI, digest and embedded metadata (and, for an OPA
    /// module, its entrypoints and the builtins it needs, flagging those
    /// this host does not implement).
    Inspect(InspectArgs),
    /// Publish a module as an OCI artifact; prints the manifest digest.
    Push(oci::PushArgs),
    /// Download a module from a registry (or any source) into a file.
    Pull(oci::PullArgs),
}

#[derive(Args)]
struct InspectArgs {
    /// A path or a `file://`, `http(s)://` or `registry://` URI.
    module: String,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

/// Where `registry://` and `http(s)://` modules are stored by the CLI.
fn default_store() -> PathBuf {
    std::env::var_os("PORTCULLIS_STORE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/portcullis/store"))
        })
        .unwrap_or_else(|| PathBuf::from(".portcullis-store"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = portcullis_telemetry::init(&portcullis_telemetry::TelemetryOptions {
        log_level: cli.log_level.clone(),
        log_format: portcullis_telemetry::LogFormat::Text,
        otlp_endpoint: None,
        service_name: "portcullis".into(),
        service_version: env!("CARGO_PKG_VERSION").into(),
    });
    let _logging = match logging {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Bench(args) => bench::bench(args).await,
            Command::Inspect(args) => inspect(args).await,
            Command::Push(args) => oci::push(args).await,
            Command::Pull(args) => oci::pull(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let module = inputs::fetch_module(&args.module, &args.sources).await?;
    let engine = inputs::engine()?;
    let loaded = engine.load(&module.bytes)?;
    let mut report = serde_json::json!({
        "module": args.module,
        "abi": loaded.abi(),
        "digest": loaded.digest(),
        "size": module.bytes.len(),
        "executionMode": loaded.execution_mode(),
        "metadata": loaded.metadata(),
    });
    // OPA modules: the ABI version, the entrypoints, and the builtins the
    // module needs from the host, with the ones this host lacks flagged.
    if let Some(opa) = loaded.opa_info() {
        let mut info = serde_json::to_value(opa)?;
        let unsupported: Vec<&str> = opa
            .builtins
            .iter()
            .filter(|b| !b.supported)
            .map(|b| b.name.as_str())
            .collect();
        info["unsupportedBuiltins"] = serde_json::json!(unsupported);
        report["opa"] = info;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
