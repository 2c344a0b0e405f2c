//! Gatekeeper conformance: the ConstraintTemplates, constraints and test
//! objects that Gatekeeper ships in its Go module
//! (`github.com/open-policy-agent/gatekeeper/v3`, fetched by
//! `scripts/go-tools.sh gatekeeper`, never copied here), compiled with
//! `opa build -t wasm` and evaluated by the Rego adapter in the `gatekeeper`
//! execution mode.
//!
//! Sources of expectations, all from the module:
//! - the `gator verify` suites (`kind: Suite`): per case, the number of
//!   violations (and their messages);
//! - `test/gator/test/test.bats`: which `gator test` inputs have violations,
//!   and the messages it checks;
//! - `test/bats/test.bats` (the e2e suite on a cluster), and the
//!   `demo/basic` and `demo/agilebank` scripts: which objects the API server
//!   admits and which it denies.
//!
//! The tables in `cases.rs` transcribe the bats scripts. Every case that
//! disagrees must name what blocks it; the pass count is recorded below and
//! in docs/rego.md, and the report is printed (`--nocapture`) and written to
//! `target/gatekeeper-conformance.txt`.

mod cases;
mod model;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use portcullis_adapters::{
    CallContext, CapabilityError, ContextResourceList, EngineConfig, EvalContext, ExecutionMode,
    HostCapabilities, LoadedModule, PolicyEngine, PolicyRequest, Settings,
};
use serde_json::Value;

use model::{Code, Constraint, Template};

/// Cases that agree with Gatekeeper, as recorded when this suite last
/// changed (Gatekeeper v3.23.1, opa v1.22.4). More is fine; fewer fails.
const RECORDED_AGREEING: usize = 41;
/// Templates of the module that compile and load, as recorded.
const RECORDED_COMPILED: usize = 57;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/portcullis"))
        .unwrap_or_else(|| PathBuf::from(".cache/portcullis"))
}

/// Gatekeeper's module, from `scripts/go-tools.sh gatekeeper`.
fn gatekeeper_dir() -> PathBuf {
    let dir = std::env::var_os("PORTCULLIS_GATEKEEPER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("gatekeeper"));
    assert!(
        dir.join("test/gator").is_dir(),
        "Gatekeeper's module is not at {}: run `scripts/go-tools.sh gatekeeper` \
         (or set PORTCULLIS_GATEKEEPER_DIR)",
        dir.display()
    );
    dir
}

fn opa_binary() -> PathBuf {
    let opa = std::env::var_os("OPA")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("bin/opa"));
    assert!(
        opa.is_file(),
        "opa is not at {}: run `scripts/go-tools.sh opa` (or set OPA)",
        opa.display()
    );
    opa
}

fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        PolicyEngine::new(EngineConfig {
            max_instances: 16,
            max_memory_bytes: 128 << 20,
            // Shared with the host tests: each module is compiled once per checkout.
            cache_dir: Some(repo().join("target/test-compiled-cache")),
            ..Default::default()
        })
        .unwrap()
    })
}

/// Compile a template's Rego with `opa build -t wasm` and load it in the
/// gatekeeper mode; cached by source.
pub fn compile(template: &Template) -> Result<LoadedModule, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Result<LoadedModule, String>>>> = OnceLock::new();
    let Code::Rego { rego, libs, v1 } = &template.code else {
        return Err("CEL engine (K8sNativeValidation), not Rego".into());
    };
    let key = format!("{v1}\n{rego}\n{}", libs.join("\n"));
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap().get(&key) {
        return hit.clone();
    }
    let result = build(rego, libs, *v1);
    cache.lock().unwrap().insert(key, result.clone());
    result
}

fn build(rego: &str, libs: &[String], v1: bool) -> Result<LoadedModule, String> {
    let package = rego
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .ok_or("no package")?
        .trim()
        .to_string();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("template.rego"), rego).map_err(|e| e.to_string())?;
    for (i, lib) in libs.iter().enumerate() {
        std::fs::write(dir.path().join(format!("lib{i}.rego")), lib).map_err(|e| e.to_string())?;
    }
    let bundle = dir.path().join("bundle.tar.gz");
    let mut cmd = Command::new(opa_binary());
    cmd.args(["build", "-t", "wasm"]);
    if !v1 {
        cmd.arg("--v0-compatible");
    }
    let entrypoint = format!("{}/violation", package.replace('.', "/"));
    let output = cmd
        .arg("-e")
        .arg(&entrypoint)
        .arg("-o")
        .arg(&bundle)
        .arg(dir.path().join("template.rego"))
        .args((0..libs.len()).map(|i| dir.path().join(format!("lib{i}.rego"))))
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        // opa prints its errors on stdout.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Err(format!("opa build: {first}"));
    }
    let wasm = Command::new("tar")
        .args(["-xzPf"])
        .arg(&bundle)
        .args(["-O", "/policy.wasm"])
        .output()
        .map_err(|e| e.to_string())?
        .stdout;
    engine()
        .load(&wasm)
        .and_then(|m| m.with_execution_mode(ExecutionMode::Gatekeeper))
        .map_err(|e| e.to_string())
}

/// The inventory: the objects synced from the "cluster" of a case.
struct Inventory(Vec<ContextResourceList>);

impl Inventory {
    fn of(objects: &[Value]) -> Inventory {
        let mut lists: Vec<ContextResourceList> = Vec::new();
        for object in objects {
            let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_string();
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            match lists
                .iter_mut()
                .find(|l| l.api_version == api_version && l.kind == kind)
            {
                Some(list) => Arc::make_mut(&mut list.objects).push(object.clone()),
                None => lists.push(ContextResourceList {
                    plural: model::plural(&kind),
                    api_version,
                    kind,
                    objects: Arc::new(vec![object.clone()]),
                    revision: 1,
                }),
            }
        }
        // Distinct revisions: the adapter caches built inventories by them.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        for list in &mut lists {
            list.revision = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Inventory(lists)
    }
}

impl HostCapabilities for Inventory {
    fn call(
        &self,
        _: &CallContext<'_>,
        ns: &str,
        op: &str,
        _: &[u8],
    ) -> Result<Vec<u8>, CapabilityError> {
        Err(CapabilityError::NotGranted(format!("{ns}/{op}")))
    }

    fn context_resources(
        &self,
        _: &CallContext<'_>,
    ) -> Result<Vec<ContextResourceList>, CapabilityError> {
        Ok(self.0.clone())
    }
}

/// The violation messages a constraint reports for an object, or why it
/// could not be evaluated.
pub fn violations(
    template: &Template,
    constraint: &Constraint,
    object: &Value,
    operation: &str,
    old: Option<&Value>,
    inventory: &[Value],
) -> Result<Vec<String>, String> {
    let module = compile(template)?;
    let mut ctx = EvalContext::new(
        format!("{}/{}", constraint.kind, constraint.name),
        Duration::from_secs(5),
    );
    if !inventory.is_empty() {
        ctx.capabilities = Arc::new(Inventory::of(inventory));
    }
    let request = PolicyRequest::Admission(model::review(object, operation, old));
    let settings = Settings::new(constraint.parameters(template));
    let value = module
        .opa_entrypoint_value(&ctx, &request, &settings)
        .map_err(|e| e.to_string())?;
    Ok(match value {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v["msg"].as_str().unwrap_or_default().to_string())
            .collect(),
        _ => Vec::new(),
    })
}

/// The outcome of one case.
pub struct Outcome {
    pub source: &'static str,
    pub name: String,
    pub agrees: bool,
    /// What Portcullis did, or why it could not.
    pub detail: String,
    /// For a case that does not agree: the builtin or feature in the way.
    pub blocked_by: Option<String>,
}

/// A ConstraintTemplate of the module, compiled or not.
struct Compiled {
    /// Its file, in the module.
    path: String,
    template: Template,
    result: Result<(), String>,
    /// The builtins it needs that the host lacks.
    unsupported: Vec<String>,
}

/// Every ConstraintTemplate in the module, compiled.
fn compile_all(root: &Path) -> Vec<Compiled> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    for file in files {
        for doc in model::documents(&file) {
            let Some(template) = model::template(&doc) else {
                continue;
            };
            let rel = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let (result, unsupported) = match compile(&template) {
                Ok(module) => {
                    let unsupported = module
                        .opa_info()
                        .map(|i| {
                            i.builtins
                                .iter()
                                .filter(|b| !b.supported)
                                .map(|b| b.name.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    (Ok(()), unsupported)
                }
                Err(e) => (Err(e), Vec::new()),
            };
            out.push(Compiled {
                path: rel,
                template,
                result,
                unsupported,
            });
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        // The website's docs and vendored code hold no test templates.
        if path.is_dir() && name != "website" && name != "vendor" && name != "node_modules" {
            walk(&path, files);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
}

#[test]
fn gatekeeper_conformance() {
    let root = gatekeeper_dir();
    let mut report = String::new();

    let templates = compile_all(&root);
    let rego: Vec<_> = templates
        .iter()
        .filter(|t| matches!(t.template.code, Code::Rego { .. }))
        .collect();
    let compiled = rego.iter().filter(|t| t.result.is_ok()).count();
    report.push_str(&format!(
        "Templates: {} ConstraintTemplates in the module, {} with Rego, {} compiled by `opa build -t wasm` and loaded\n",
        templates.len(),
        rego.len(),
        compiled
    ));
    for t in &templates {
        let (path, name) = (&t.path, &t.template.name);
        match &t.result {
            Err(e) => report.push_str(&format!("  not compiled: {path} ({name}): {e}\n")),
            Ok(()) if !t.unsupported.is_empty() => report.push_str(&format!(
                "  needs unsupported builtins: {path} ({name}): {}\n",
                t.unsupported.join(", ")
            )),
            Ok(()) => {}
        }
    }

    let outcomes = cases::all(&root);
    let agreeing = outcomes.iter().filter(|o| o.agrees).count();
    report.push_str(&format!(
        "\nCases: {agreeing} of {} agree with Gatekeeper\n",
        outcomes.len()
    ));
    for o in &outcomes {
        let mark = if o.agrees { "ok  " } else { "DIFF" };
        report.push_str(&format!("  {mark} [{}] {}: {}", o.source, o.name, o.detail));
        if let Some(b) = &o.blocked_by {
            report.push_str(&format!(" (blocked by: {b})"));
        }
        report.push('\n');
    }
    println!("{report}");
    let _ = std::fs::write(repo().join("target/gatekeeper-conformance.txt"), &report);

    let unexplained: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.agrees && o.blocked_by.is_none())
        .collect();
    assert!(
        unexplained.is_empty(),
        "cases that disagree without a known cause:\n{}",
        unexplained
            .iter()
            .map(|o| format!("  [{}] {}: {}", o.source, o.name, o.detail))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        agreeing >= RECORDED_AGREEING,
        "{agreeing} cases agree, fewer than the {RECORDED_AGREEING} recorded"
    );
    assert!(
        compiled >= RECORDED_COMPILED,
        "{compiled} templates compiled, fewer than the {RECORDED_COMPILED} recorded"
    );
}
