//! `portcullis`: the policy author's tool. Run a policy on a request, measure
//! it, inspect it, and move it to and from OCI registries.

mod annotate;
mod bench;
mod inputs;
mod inspect;
mod oci;
mod policy_source;
mod run;
mod scaffold;
mod store;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Cache compiled modules here, so that a module is compiled once, not
    /// on every run (default: ~/.cache/portcullis/compiled).
    #[arg(long, global = true, env = "PORTCULLIS_COMPILED_CACHE_DIR")]
    compiled_cache_dir: Option<PathBuf>,
    /// Compile every module afresh, without the cache.
    #[arg(long, global = true)]
    no_compiled_cache: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a policy on one request and print the AdmissionResponse.
    ///
    /// Exits 0 whether the request is allowed or denied, and non-zero only
    /// when the evaluation itself fails (bad settings, a trap, a timeout...).
    Run(run::RunArgs),
    /// Run declarative test files: each case in a fresh instance, as the
    /// policy-server evaluates it.
    ///
    /// Exits 0 when every case passes and 1 otherwise.
    Test(test::TestArgs),
    /// Measure a policy's evaluation cost with a fresh instance per call, as
    /// the policy-server runs it.
    Bench(bench::BenchArgs),
    /// Show a module's ABI, digest, embedded metadata and the host
    /// capabilities it may call.
    Inspect(inspect::InspectArgs),
    /// Embed metadata (rules, mutating, annotations, ...) from a metadata.yml
    /// into a module, as kwctl annotate does.
    Annotate(annotate::AnnotateArgs),
    /// Generate manifests and new policy projects.
    #[command(subcommand)]
    Scaffold(scaffold::ScaffoldCommand),
    /// Publish a module as an OCI artifact; prints the manifest digest.
    Push(oci::PushArgs),
    /// Download a module from a registry (or any source) into a file.
    Pull(oci::PullArgs),
    /// List the policies in the local store.
    Policies(store::PoliciesArgs),
    /// Remove policies from the local store.
    Rm(store::RmArgs),
    /// Print a registry reference pinned to its manifest digest.
    Digest(store::DigestArgs),
    /// Write policies (and their modules) to a tarball, for air-gapped clusters.
    Save(store::SaveArgs),
    /// Put the policies of a tarball written by `save` into the local store.
    Load(store::LoadArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

#[derive(clap::Args)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
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

/// The compiled-module cache: the flag, else ~/.cache/portcullis/compiled.
fn compiled_cache(cli: &Cli) -> Option<PathBuf> {
    if cli.no_compiled_cache {
        return None;
    }
    cli.compiled_cache_dir.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/portcullis/compiled"))
    })
}

fn main() -> ExitCode {
    // End quietly when whoever reads stdout goes away (`portcullis … | head`),
    // as Unix tools do: Rust ignores SIGPIPE, and `println!` then panics.
    // SAFETY: first thing in main, before any other thread exists; SIG_DFL
    // is a valid disposition for SIGPIPE.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let _ = inputs::COMPILED_CACHE.set(compiled_cache(&cli));
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
        let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
        match cli.command {
            Command::Run(args) => done(run::run(args).await),
            Command::Test(args) => test::test(args).await,
            Command::Bench(args) => done(bench::bench(args).await),
            Command::Inspect(args) => done(inspect::inspect(args).await),
            Command::Annotate(args) => done(annotate::annotate(args).await),
            Command::Scaffold(command) => done(scaffold::scaffold(command).await),
            Command::Push(args) => done(oci::push(args).await),
            Command::Pull(args) => done(oci::pull(args).await),
            Command::Policies(args) => done(store::policies(args).await),
            Command::Rm(args) => done(store::rm(args).await),
            Command::Digest(args) => done(store::digest(args).await),
            Command::Save(args) => done(store::save(args).await),
            Command::Load(args) => done(store::load(args).await),
            Command::Completions(args) => {
                use clap::CommandFactory;
                clap_complete::generate(
                    args.shell,
                    &mut Cli::command(),
                    "portcullis",
                    &mut std::io::stdout(),
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
