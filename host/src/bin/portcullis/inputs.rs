//! What the subcommands read: modules, settings and requests.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use portcullis_adapters::{
    EngineConfig, ExecutionMode, LoadedModule, PolicyEngine, PolicyRequest, Settings,
};
use portcullis_config::sources::SourcesConfig;
use portcullis_host::fetch::{DownloadProgress, FetchConfig, ModuleFetcher};
use serde_json::Value;

/// Flags for reaching registries and web servers.
#[derive(Args, Clone, Default)]
pub struct SourceArgs {
    /// sources.yml: insecure registries and custom CAs.
    #[arg(long, env = "PORTCULLIS_SOURCES_PATH")]
    pub sources_path: Option<PathBuf>,
    /// Docker config.json (or its directory) with registry credentials.
    #[arg(long, env = "PORTCULLIS_DOCKER_CONFIG_JSON_PATH")]
    pub docker_config: Option<PathBuf>,
}

impl SourceArgs {
    pub fn fetcher(&self) -> anyhow::Result<ModuleFetcher> {
        let sources = match &self.sources_path {
            Some(path) => SourcesConfig::from_file(path)
                .with_context(|| format!("reading {}", path.display()))?,
            None => SourcesConfig::default(),
        };
        let fetcher = ModuleFetcher::new(FetchConfig {
            download_dir: super::default_store(),
            sources,
            docker_config: self.docker_config.clone(),
        })?;
        Ok(if std::io::stderr().is_terminal() {
            fetcher.with_progress(Arc::new(TerminalProgress::default()))
        } else {
            fetcher
        })
    }
}

/// One line on stderr per download, redrawn at most ten times a second:
/// `downloading URI  3.2 / 18.5 MiB`.
#[derive(Default)]
struct TerminalProgress {
    state: Mutex<ProgressLine>,
}

#[derive(Default)]
struct ProgressLine {
    uri: String,
    total: Option<u64>,
    done: u64,
    started: Option<Instant>,
    drawn: Option<Instant>,
}

impl ProgressLine {
    fn draw(&mut self) {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let of = self
            .total
            .map(|t| format!(" / {:.1}", mib(t)))
            .unwrap_or_default();
        eprint!(
            "\r\x1b[2Kdownloading {}  {:.1}{of} MiB",
            self.uri,
            mib(self.done)
        );
        self.drawn = Some(Instant::now());
    }
}

impl DownloadProgress for TerminalProgress {
    fn start(&self, uri: &str, total: Option<u64>) {
        let mut line = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *line = ProgressLine {
            uri: uri.to_string(),
            total,
            started: Some(Instant::now()),
            ..Default::default()
        };
    }

    fn advance(&self, bytes: u64) {
        let mut line = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        line.done += bytes;
        // A download that ends within a fraction of a second draws nothing.
        let long = line
            .started
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(300));
        if long
            && line
                .drawn
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100))
        {
            line.draw();
        }
    }

    fn finish(&self) {
        let mut line = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if line.drawn.is_some() {
            line.draw();
            eprintln!();
        }
        *line = ProgressLine::default();
    }
}

/// A module's bytes and where they came from.
pub struct ModuleInput {
    pub bytes: Arc<[u8]>,
    pub digest: String,
    /// For a registry reference, the digest of its OCI manifest.
    pub manifest_digest: Option<String>,
}

/// Read a local path directly; fetch anything with a scheme.
pub async fn fetch_module(module: &str, sources: &SourceArgs) -> anyhow::Result<ModuleInput> {
    if module.contains("://") {
        let fetched = sources.fetcher()?.fetch(module).await?;
        Ok(ModuleInput {
            bytes: fetched.bytes,
            digest: fetched.digest,
            manifest_digest: fetched.manifest_digest,
        })
    } else {
        let bytes = std::fs::read(module).with_context(|| format!("reading module {module}"))?;
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        Ok(ModuleInput {
            bytes: bytes.into(),
            digest,
            manifest_digest: None,
        })
    }
}

/// How the module runs, as `executionMode` in a policies file.
#[derive(Args, Clone, Default)]
pub struct ModeArgs {
    /// Execution mode: kubewarden-wapc, opa, gatekeeper or wasi (default:
    /// the module's metadata; an OPA module needs opa or gatekeeper).
    #[arg(long, short = 'e')]
    pub execution_mode: Option<ExecutionMode>,
}

impl ModeArgs {
    /// Compile `bytes` and set the execution mode, if one was given.
    pub fn load(&self, engine: &PolicyEngine, bytes: &[u8]) -> anyhow::Result<LoadedModule> {
        let loaded = engine.load(bytes)?;
        Ok(match self.execution_mode {
            Some(mode) => loaded.with_execution_mode(mode)?,
            None => loaded,
        })
    }
}

/// Where compiled modules are cached across runs; set once by `main` from
/// `--compiled-cache-dir`.
pub static COMPILED_CACHE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// The engine the CLI evaluates with: the server's defaults, with the
/// compiled-module cache (so that a second run skips compilation).
pub fn engine() -> anyhow::Result<PolicyEngine> {
    Ok(PolicyEngine::new(EngineConfig {
        max_instances: 16,
        // Spares save a waiting API server the instantiation; here nobody
        // waits between evaluations, and each case may grant its own
        // capabilities, so a spare would rarely be taken.
        spare_instances: 0,
        cache_dir: COMPILED_CACHE.get().cloned().flatten(),
        ..Default::default()
    })?)
}

/// `--settings` takes inline JSON (or YAML), or `@FILE`.
pub fn settings(arg: Option<&str>) -> anyhow::Result<Settings> {
    let Some(arg) = arg else {
        return Ok(Settings::default());
    };
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading settings file {path}"))?,
        None => arg.to_string(),
    };
    let value: Value = serde_yaml::from_str(&text).context("settings are neither JSON nor YAML")?;
    if !(value.is_object() || value.is_null()) {
        bail!("settings must be an object, not {value}");
    }
    Ok(Settings::new(value))
}

/// A request file holds an AdmissionReview, a bare AdmissionRequest or, with
/// `raw`, any JSON document.
pub fn request(path: &std::path::Path, raw: bool) -> anyhow::Result<PolicyRequest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading request {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if raw {
        let request = match value.get("request") {
            Some(inner) => inner.clone(),
            None => value,
        };
        return Ok(PolicyRequest::Raw(request));
    }
    let request = match value.get("kind").and_then(Value::as_str) {
        Some("AdmissionReview") => value
            .get("request")
            .cloned()
            .with_context(|| format!("{}: the AdmissionReview has no request", path.display()))?,
        _ => value,
    };
    if !request.is_object() || request.get("uid").is_none() {
        bail!(
            "{}: not an AdmissionReview or AdmissionRequest (no uid); use --raw for other documents",
            path.display()
        );
    }
    Ok(PolicyRequest::Admission(request))
}
