//! `portcullis test`: declarative, offline policy tests.
//!
//! Each case is evaluated as the policy-server evaluates a request: the
//! settings are checked in a fresh instance, the request is evaluated in
//! another, and the verdict goes through the same response building (patch,
//! status) and, for a manifest, the same enforcement (mode, `mutating`,
//! `message`).

mod check;
mod report;
mod spec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use portcullis_adapters::{
    EvalContext, HostCapabilities, LoadedModule, NoCapabilities, PolicyEngine, PolicyRequest,
    Settings,
};
use portcullis_host::admission::{build_admission_response, evaluation_error_response};
use portcullis_host::capabilities::{CapabilityGrants, PolicyCapabilities, Replayer, ResourceType};
use serde_json::Value;

use self::check::Outcome;
use self::report::{CaseResult, Status};
use self::spec::{Case, TestFile};
use super::inputs;
use super::policy_source::{self, PolicySource};

/// Test files found in a directory end with this (for example
/// `portcullis-test.yaml` or `pod-privileged.portcullis-test.yaml`).
const TEST_FILE_SUFFIXES: [&str; 2] = ["portcullis-test.yaml", "portcullis-test.yml"];

#[derive(Args)]
pub struct TestArgs {
    /// Test files, or directories searched (recursively) for files named
    /// `*portcullis-test.yaml`.
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// What to print on stdout.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Also write a JUnit XML report to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// A table, each failure with a diff, and `N passed, M failed`.
    Table,
    /// Every result, with the responses, as JSON.
    Json,
    /// JUnit XML.
    Junit,
}

pub async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let files = discover(&args.paths)?;
    if files.is_empty() {
        bail!(
            "no test files found in {} (looking for *{})",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            TEST_FILE_SUFFIXES[0]
        );
    }
    let engine = inputs::engine()?;
    let mut modules = ModuleCache::default();
    let mut results = Vec::new();
    for file in &files {
        results.extend(run_file(file, &args, &engine, &mut modules).await);
    }

    let rendered = match args.output {
        Format::Table => report::table(&results),
        Format::Json => report::json(&results)?,
        Format::Junit => report::junit(&results),
    };
    print!("{rendered}");
    if let Some(path) = &args.junit {
        std::fs::write(path, report::junit(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if results.iter().all(CaseResult::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Test files named on the command line, and those found in directories, in a
/// stable order.
fn discover(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in walkdir::WalkDir::new(path)
                .sort_by_file_name()
                .into_iter()
                .filter_entry(|e| !is_skipped_dir(e))
            {
                let entry = entry.with_context(|| format!("searching {}", path.display()))?;
                let name = entry.file_name().to_string_lossy();
                if entry.file_type().is_file()
                    && TEST_FILE_SUFFIXES.iter().any(|s| name.ends_with(s))
                {
                    found.push(entry.into_path());
                }
            }
        } else if path.is_file() {
            found.push(path.clone());
        } else {
            bail!("{} does not exist", path.display());
        }
    }
    Ok(found)
}

/// Build output and dependencies hold no tests of the project's own.
fn is_skipped_dir(entry: &walkdir::DirEntry) -> bool {
    entry.depth() > 0
        && entry.file_type().is_dir()
        && matches!(
            entry.file_name().to_str(),
            Some("target" | "node_modules" | ".git")
        )
}

/// Modules compiled once per run, keyed by digest, as the server shares one
/// compiled module among the policies that use it.
#[derive(Default)]
struct ModuleCache {
    by_digest: HashMap<String, LoadedModule>,
}

impl ModuleCache {
    async fn load(
        &mut self,
        engine: &PolicyEngine,
        module: &str,
        sources: &inputs::SourceArgs,
    ) -> anyhow::Result<LoadedModule> {
        let input = inputs::fetch_module(module, sources).await?;
        if let Some(loaded) = self.by_digest.get(&input.digest) {
            return Ok(loaded.clone());
        }
        let engine = engine.clone();
        let bytes = input.bytes.clone();
        let loaded = tokio::task::spawn_blocking(move || engine.load(&bytes))
            .await?
            .with_context(|| format!("loading {module}"))?;
        self.by_digest.insert(input.digest, loaded.clone());
        Ok(loaded)
    }
}

async fn run_file(
    path: &Path,
    args: &TestArgs,
    engine: &PolicyEngine,
    modules: &mut ModuleCache,
) -> Vec<CaseResult> {
    let file_error = |policy: &str, error: anyhow::Error| CaseResult {
        file: path.to_path_buf(),
        policy: policy.to_string(),
        case: "(test file)".to_string(),
        duration: Duration::ZERO,
        status: Status::Error {
            error: format!("{error:#}"),
        },
        outcome: None,
    };
    let spec = match TestFile::load(path) {
        Ok(spec) => Arc::new(spec),
        Err(e) => return vec![file_error("-", e)],
    };
    let timeout = match spec.timeout() {
        Ok(t) => t,
        Err(e) => return vec![file_error("-", e)],
    };
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut results = Vec::new();
    for reference in spec.policy.items() {
        let source = match policy_source::resolve(reference, &base) {
            Ok(source) => source,
            Err(e) => {
                results.push(file_error(reference, e));
                continue;
            }
        };
        let loaded = match modules.load(engine, &source.module, &args.sources).await {
            Ok(loaded) => loaded,
            Err(e) => {
                results.push(file_error(&source.name, e));
                continue;
            }
        };
        let cases: Vec<usize> = spec
            .tests
            .iter()
            .enumerate()
            .filter(|(_, c)| args.filter.as_ref().is_none_or(|f| c.name.contains(f)))
            .map(|(i, _)| i)
            .collect();
        let job = CaseJob {
            file: path.to_path_buf(),
            base: base.clone(),
            spec: spec.clone(),
            source,
            loaded,
            timeout,
        };
        match tokio::task::spawn_blocking(move || {
            cases.into_iter().map(|i| job.run(i)).collect::<Vec<_>>()
        })
        .await
        {
            Ok(done) => results.extend(done),
            Err(e) => results.push(file_error(reference, e.into())),
        }
    }
    results
}

/// Everything the cases of one file need against one policy.
struct CaseJob {
    file: PathBuf,
    base: PathBuf,
    spec: Arc<TestFile>,
    source: PolicySource,
    loaded: LoadedModule,
    timeout: Duration,
}

impl CaseJob {
    fn run(&self, index: usize) -> CaseResult {
        let case = &self.spec.tests[index];
        let started = Instant::now();
        let (status, outcome) = match self.outcome(case, index) {
            Ok(outcome) => {
                let mismatches = check::check(&case.expect, &outcome);
                let status = if mismatches.is_empty() {
                    Status::Passed
                } else {
                    Status::Failed { mismatches }
                };
                (status, Some(outcome))
            }
            Err(e) => (
                Status::Error {
                    error: format!("{e:#}"),
                },
                None,
            ),
        };
        CaseResult {
            file: self.file.clone(),
            policy: self.source.name.clone(),
            case: case.name.clone(),
            duration: started.elapsed(),
            status,
            outcome,
        }
    }

    fn outcome(&self, case: &Case, index: usize) -> anyhow::Result<Outcome> {
        let settings = case
            .settings
            .clone()
            .or_else(|| self.spec.settings.clone())
            .or_else(|| self.source.settings.clone())
            .unwrap_or(Value::Null);
        if !(settings.is_object() || settings.is_null()) {
            bail!("settings must be an object, not {settings}");
        }
        let settings = Settings::new(settings);
        let policy_id = self
            .source
            .enforcement
            .as_ref()
            .map_or(self.source.name.clone(), |e| e.policy_id.clone());
        let ctx = EvalContext {
            policy_id: policy_id.clone(),
            timeout: self.timeout,
            capabilities: capabilities(case.session.as_deref(), &self.base, &self.loaded)?,
        };
        // The policy-server checks the settings when it loads a policy and
        // refuses to serve it when they are invalid.
        match self.loaded.validate_settings(&ctx, &settings) {
            Ok(verdict) if verdict.valid => {}
            Ok(verdict) => {
                return Ok(Outcome::SettingsRejected {
                    message: verdict.message,
                });
            }
            Err(e) => {
                return Ok(Outcome::SettingsRejected {
                    message: Some(format!("the settings could not be validated: {e}")),
                });
            }
        }
        let request = spec::admission_request(case, index, &self.base)?;
        let uid = request
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let original = request.get("object").filter(|o| !o.is_null()).cloned();
        let response =
            match self
                .loaded
                .validate(&ctx, &PolicyRequest::Admission(request), &settings)
            {
                Ok(verdict) => build_admission_response(&uid, original.as_ref(), verdict),
                Err(e) => evaluation_error_response(&uid, &policy_id, &e.to_string()),
            };
        Ok(Outcome::Response {
            response: self.source.enforce(response),
            original,
        })
    }
}

/// What answers a case's host calls: nothing is granted, unless the case names
/// a recorded session (kwctl's format, as `portcullis run
/// --replay-host-capabilities`). A session answers every capability the
/// policy asks for, as kwctl's replay does, and the Kubernetes resources are
/// those the module's metadata declares.
fn capabilities(
    session: Option<&Path>,
    base: &Path,
    loaded: &LoadedModule,
) -> anyhow::Result<Arc<dyn HostCapabilities>> {
    let Some(path) = session else {
        return Ok(Arc::new(NoCapabilities));
    };
    let path = base.join(path);
    let replayer = Replayer::load(&path).with_context(|| format!("session {}", path.display()))?;
    let resources: Vec<ResourceType> = loaded
        .metadata()
        .map(|m| m.context_aware_resources.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| ResourceType::new(&r.api_version, &r.kind))
        .collect();
    Ok(Arc::new(PolicyCapabilities::new(
        CapabilityGrants::AllowAll,
        resources,
        Arc::new(replayer),
    )))
}
