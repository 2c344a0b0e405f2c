//! What the subcommands read: modules, settings and requests.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use portcullis_adapters::{
    EngineConfig, ExecutionMode, LoadedModule, PolicyEngine, PolicyRequest, Settings,
};
use portcullis_config::sources::SourcesConfig;
use portcullis_host::fetch::{FetchConfig, ModuleFetcher};
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
        Ok(ModuleFetcher::new(FetchConfig {
            download_dir: super::default_store(),
            sources,
            docker_config: self.docker_config.clone(),
        })?)
    }
}

/// A module's bytes and where they came from.
pub struct ModuleInput {
    pub bytes: Arc<[u8]>,
    pub digest: String,
}

/// Read a local path directly; fetch anything with a scheme.
pub async fn fetch_module(module: &str, sources: &SourceArgs) -> anyhow::Result<ModuleInput> {
    if module.contains("://") {
        let fetched = sources.fetcher()?.fetch(module).await?;
        Ok(ModuleInput {
            bytes: fetched.bytes,
            digest: fetched.digest,
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
        })
    }
}

/// How the module runs, as `executionMode` in a policies file.
#[derive(Args, Clone, Default)]
pub struct ModeArgs {
    /// Execution mode: kubewarden-wapc, opa or gatekeeper (default: the
    /// module's metadata; an OPA module needs opa or gatekeeper).
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

/// The engine the CLI evaluates with: the server's defaults, without a disk cache.
pub fn engine() -> anyhow::Result<PolicyEngine> {
    Ok(PolicyEngine::new(EngineConfig {
        max_instances: 16,
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
