//! `portcullis run`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use portcullis_adapters::EvalContext;
use std::collections::BTreeMap;
use std::sync::Arc;

use portcullis_config::{LenientPolicies, PolicyEntry};
use portcullis_host::admission::{build_admission_response, post_process};
use portcullis_host::capabilities::oneshot::{CapabilitySession, SessionMode};
use portcullis_host::capabilities::{HostServices, KubeConfigSource, ResourceType, ServicesConfig};
use portcullis_host::evaluation::evaluate_group;
use portcullis_host::module_source::ModuleSource;
use portcullis_host::policy_set::{PolicyLoader, PolicyState};
use serde_json::Value;

use super::inputs;
use super::policy_source::{self, GroupSource};

#[derive(Args)]
pub struct RunArgs {
    /// The request: an AdmissionReview or a bare AdmissionRequest (any JSON with --raw).
    #[arg(long, short)]
    request: PathBuf,
    /// Policy settings: inline JSON/YAML, or @FILE.
    #[arg(long, short)]
    settings: Option<String>,
    /// Evaluate a raw JSON document instead of an admission request (waPC policies).
    #[arg(long)]
    raw: bool,
    /// Evaluation deadline.
    #[arg(long, default_value = "2s", value_parser = humantime_secs)]
    timeout: Duration,
    /// The module: a path or a `file://`, `http(s)://` or `registry://` URI;
    /// or a ClusterAdmissionPolicyGroup / AdmissionPolicyGroup manifest
    /// (YAML), evaluated as the policy-server does (members, expression,
    /// message, mode).
    module: String,
    #[command(flatten)]
    mode: inputs::ModeArgs,
    #[command(flatten)]
    sources: inputs::SourceArgs,
    #[command(flatten)]
    capabilities: CapabilityArgs,
}

/// Host capabilities: a live cluster, or a recorded session (kwctl's format).
#[derive(Args)]
pub struct CapabilityArgs {
    /// Kubeconfig of the cluster that context-aware policies read [default:
    /// $KUBECONFIG, ~/.kube/config, then the in-cluster service account].
    #[arg(long, env = "PORTCULLIS_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Grant the policy the Kubernetes resources its metadata declares in
    /// `contextAwareResources` (none otherwise).
    #[arg(long)]
    allow_context_aware: bool,
    /// hostCapabilities patterns granted to the policy.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    allowed_host_capabilities: Vec<String>,
    /// Write every host capability exchange to FILE (kwctl's session format).
    #[arg(
        long,
        value_name = "FILE",
        alias = "record-host-capabilities-interactions",
        conflicts_with = "replay_host_capabilities"
    )]
    record_host_capabilities: Option<PathBuf>,
    /// Answer host capability calls from a session FILE recorded by
    /// --record-host-capabilities or kwctl; nothing is contacted.
    #[arg(
        long,
        value_name = "FILE",
        alias = "replay-host-capabilities-interactions"
    )]
    replay_host_capabilities: Option<PathBuf>,
}

impl CapabilityArgs {
    fn mode(&self) -> SessionMode {
        match (
            &self.record_host_capabilities,
            &self.replay_host_capabilities,
        ) {
            (Some(path), _) => SessionMode::Record(path.clone()),
            (None, Some(path)) => SessionMode::Replay(path.clone()),
            (None, None) => SessionMode::Live,
        }
    }

    fn kubernetes(&self) -> KubeConfigSource {
        self.kubeconfig
            .clone()
            .map_or(KubeConfigSource::Infer, KubeConfigSource::File)
    }
}

/// Accept `2s`, `500ms` or a bare number of seconds.
pub fn humantime_secs(s: &str) -> Result<Duration, String> {
    let parsed = if let Some(ms) = s.strip_suffix("ms") {
        ms.parse::<u64>().map(Duration::from_millis)
    } else {
        s.trim_end_matches('s')
            .parse::<u64>()
            .map(Duration::from_secs)
    };
    parsed.map_err(|_| format!("{s:?} is not a duration such as 2s or 500ms"))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if let Some(group) = policy_source::group(&args.module)? {
        return run_group(args, group).await;
    }
    let module = inputs::fetch_module(&args.module, &args.sources).await?;
    let settings = inputs::settings(args.settings.as_deref())?;
    let request = inputs::request(&args.request, args.raw)?;
    let engine = inputs::engine()?;
    let loaded = args.mode.load(&engine, &module.bytes)?;
    let resources: Vec<ResourceType> = if args.capabilities.allow_context_aware {
        loaded
            .metadata()
            .map(|m| m.context_aware_resources.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|r| ResourceType::new(&r.api_version, &r.kind))
            .collect()
    } else {
        Vec::new()
    };
    let mode = args.capabilities.mode();
    let registries = match mode {
        SessionMode::Replay(_) => None,
        _ => Some(args.sources.fetcher()?),
    };
    let session = CapabilitySession::start(
        mode,
        &args.capabilities.allowed_host_capabilities,
        resources,
        args.capabilities.kubernetes(),
        registries,
    )
    .await
    .context("setting up host capabilities")?;
    let ctx = EvalContext {
        capabilities: session.capabilities(),
        ..EvalContext::new(policy_name(&args.module), args.timeout)
    };

    let evaluation = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let verdict = loaded.validate_settings(&ctx, &settings)?;
        if !verdict.valid {
            bail!(
                "the policy rejected its settings: {}",
                verdict.message.unwrap_or_default()
            );
        }
        let uid = request
            .json()
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let original = match request.admission() {
            Some(r) => r.get("object").filter(|o| !o.is_null()).cloned(),
            None => Some(request.json().clone()),
        };
        let verdict = loaded.validate(&ctx, &request, &settings)?;
        Ok(build_admission_response(&uid, original.as_ref(), verdict))
    })
    .await;
    // The recording is kept even when the evaluation failed: it shows why.
    session.finish()?;
    let response = evaluation??;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}

/// Loads the group as the policy-server does (every member fetched,
/// compiled and its settings validated; the expression compiled and
/// checked), evaluates it once and applies its mode.
async fn run_group(args: RunArgs, group: GroupSource) -> anyhow::Result<()> {
    if args.settings.is_some() {
        bail!("--settings does not apply to a group: each member has its own settings");
    }
    if args.capabilities.mode() != SessionMode::Live || args.capabilities.allow_context_aware {
        bail!(
            "host capability flags apply to a single module, not to a group's members, \
             which get no host capabilities here"
        );
    }
    let fetcher = args.sources.fetcher()?;
    let services = HostServices::new(
        ServicesConfig {
            kubernetes: args.capabilities.kubernetes(),
            registries: Some(fetcher.clone()),
        },
        tokio::runtime::Handle::current(),
    )
    .await;
    let loader = PolicyLoader::new(
        inputs::engine()?,
        ModuleSource::new(fetcher),
        args.timeout,
        services,
    );
    let id = group.id.clone();
    let parsed = LenientPolicies {
        entries: BTreeMap::from([(id.clone(), Ok(PolicyEntry::Group(group.config)))]),
        digest: String::new(),
    };
    let set = loader.load(parsed, None, 1).await;
    let group = match set.get(&id) {
        Some(PolicyState::Group(group)) => Arc::clone(group),
        Some(PolicyState::Failed(failed)) => {
            bail!("the policy group failed to load: {}", failed.reason)
        }
        _ => bail!("the policy group was not loaded"),
    };
    let request = inputs::request(&args.request, args.raw)?;
    let uid = request
        .json()
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let response = tokio::task::spawn_blocking(move || {
        let response = evaluate_group(&group, &uid, request);
        post_process(response, &group.behaviour())
    })
    .await?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}

/// A readable id for logs: the file name without its extension.
pub fn policy_name(module: &str) -> String {
    let last = module.rsplit('/').next().unwrap_or(module);
    last.trim_end_matches(".wasm").to_string()
}
