//! The Rego adapter against the Rego samples in `target/policies/` (built by
//! `just policies` with `opa build -t wasm`): both execution modes, the same
//! verdicts as the Rust samples, and the adversarial Rego policies.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use portcullis_adapters::{
    Abi, CallContext, CapabilityError, ContextResourceList, EngineConfig, EvalContext, EvalError,
    ExecutionMode, HostCapabilities, LoadedModule, PolicyEngine, PolicyRequest, Settings,
};
use serde_json::{Value, json};

const MEMORY_CAP: u64 = 128 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        PolicyEngine::new(EngineConfig {
            max_instances: 32,
            max_memory_bytes: MEMORY_CAP,
            // Shared with the host tests: each module is compiled once per checkout.
            cache_dir: Some(repo().join("target/test-compiled-cache")),
            ..Default::default()
        })
        .expect("engine")
    })
}

fn bytes(name: &str) -> Vec<u8> {
    let path = repo().join("target/policies").join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `just policies` first", path.display()))
}

fn load(name: &str) -> LoadedModule {
    static LOADED: OnceLock<std::sync::Mutex<std::collections::HashMap<String, LoadedModule>>> =
        OnceLock::new();
    let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap();
    loaded
        .entry(name.to_string())
        .or_insert_with(|| {
            engine()
                .load(&bytes(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .clone()
}

fn in_mode(name: &str, mode: ExecutionMode) -> LoadedModule {
    load(name).with_execution_mode(mode).unwrap()
}

fn opa() -> LoadedModule {
    in_mode("pod-privileged-opa", ExecutionMode::Opa)
}

fn gatekeeper() -> LoadedModule {
    in_mode("pod-privileged-gatekeeper", ExecutionMode::Gatekeeper)
}

fn fixture(name: &str) -> PolicyRequest {
    let path = repo().join("tests/fixtures").join(format!("{name}.json"));
    let review: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    PolicyRequest::Admission(review["request"].clone())
}

fn pod(name: &str, containers: Value) -> PolicyRequest {
    PolicyRequest::Admission(json!({
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": containers},
    }))
}

fn ctx() -> EvalContext {
    EvalContext::new("rego-test", Duration::from_secs(2))
}

#[test]
fn opa_modules_are_detected_and_introspected() {
    let module = load("pod-privileged-gatekeeper");
    assert_eq!(module.abi(), Abi::Opa);
    assert_eq!(module.execution_mode(), None, "no metadata, no mode");
    let info = module.opa_info().expect("OPA module info");
    assert!(info.abi_version.starts_with("1."), "{}", info.abi_version);
    assert_eq!(info.entrypoints[&0], "k8spspprivileged/violation");
    let sprintf = info
        .builtins
        .iter()
        .find(|b| b.name == "sprintf")
        .expect("sprintf");
    assert!(sprintf.supported);
    assert!(load("pod-privileged-wapc").opa_info().is_none());

    let unsupported = load("adversarial-rego-unsupported-builtin");
    let http = unsupported
        .opa_info()
        .unwrap()
        .builtins
        .iter()
        .find(|b| b.name == "http.send")
        .cloned();
    assert_eq!(http.map(|b| b.supported), Some(false));
}

#[test]
fn both_modes_give_the_verdicts_and_messages_of_the_rust_samples() {
    let wapc = load("pod-privileged-wapc");
    for (mode, module) in [("opa", opa()), ("gatekeeper", gatekeeper())] {
        assert!(
            module
                .validate_settings(&ctx(), &Settings::default())
                .unwrap()
                .valid
        );
        for name in [
            "pod-privileged",
            "pod-unprivileged",
            "pod-init-privileged",
            "pod-no-labels",
        ] {
            let want = wapc
                .validate(&ctx(), &fixture(name), &Settings::default())
                .unwrap();
            let got = module
                .validate(&ctx(), &fixture(name), &Settings::default())
                .unwrap();
            assert_eq!(got.accepted, want.accepted, "{mode} {name}");
            assert_eq!(got.message, want.message, "{mode} {name}");
            assert_eq!(got.mutated_object, None, "{mode} {name}");
        }
        // Several containers of several kinds, and the settings.
        let mixed = pod(
            "mixed",
            json!({
                "containers": [{"name": "a", "securityContext": {"privileged": true}}, {"name": "b"},
                               {"name": "c", "securityContext": {"privileged": true}}],
                "initContainers": [{"name": "i", "securityContext": {"privileged": true}}],
                "ephemeralContainers": [{"name": "e", "securityContext": {"privileged": true}}],
            }),
        );
        for settings in [
            json!({}),
            json!({"skip_init_containers": true}),
            json!({"skip_init_containers": true, "skip_ephemeral_containers": true}),
        ] {
            let settings = Settings::new(settings);
            let want = wapc.validate(&ctx(), &mixed, &settings).unwrap();
            let got = module.validate(&ctx(), &mixed, &settings).unwrap();
            assert_eq!(got.message, want.message, "{mode} {:?}", settings.value());
        }
        let only_init = fixture("pod-init-privileged");
        let skip = Settings::new(json!({"skip_init_containers": true}));
        assert!(
            module.validate(&ctx(), &only_init, &skip).unwrap().accepted,
            "{mode}"
        );
    }
}

#[test]
fn a_mode_is_required_and_must_fit_the_module() {
    let bare = load("pod-privileged-opa");
    let err = bare
        .validate_settings(&ctx(), &Settings::default())
        .unwrap_err();
    assert!(err.to_string().contains("executionMode"), "{err}");
    let err = bare
        .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
        .unwrap_err();
    assert!(err.to_string().contains("executionMode"), "{err}");

    let err = bare
        .with_execution_mode(ExecutionMode::KubewardenWapc)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("OPA module"), "{err}");
    let err = load("pod-privileged-wapc")
        .with_execution_mode(ExecutionMode::Gatekeeper)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("waPC module"), "{err}");
    assert_eq!(
        load("pod-privileged-wapc").execution_mode(),
        Some(ExecutionMode::KubewardenWapc)
    );
    // The mode is per policy: the same compiled module runs in either mode.
    let as_gatekeeper = bare.with_execution_mode(ExecutionMode::Gatekeeper).unwrap();
    let err = as_gatekeeper
        .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
        .unwrap_err();
    assert!(
        matches!(err, EvalError::MalformedOutput(_)),
        "the OPA sample has no violations set: {err}"
    );
    assert_eq!(as_gatekeeper.digest(), bare.digest());
}

/// `wasm` with an `io.kubewarden.metadata` custom section appended.
fn with_metadata(mut wasm: Vec<u8>, json: &str) -> Vec<u8> {
    fn leb(out: &mut Vec<u8>, mut v: usize) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = "io.kubewarden.metadata";
    let mut body = Vec::new();
    leb(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(json.as_bytes());
    wasm.push(0);
    leb(&mut wasm, body.len());
    wasm.extend_from_slice(&body);
    wasm
}

#[test]
fn the_metadata_can_name_the_mode() {
    let annotated = with_metadata(
        bytes("pod-privileged-gatekeeper"),
        r#"{"executionMode":"gatekeeper"}"#,
    );
    let module = engine().load(&annotated).unwrap();
    assert_eq!(module.execution_mode(), Some(ExecutionMode::Gatekeeper));
    let verdict = module
        .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
        .unwrap();
    assert!(!verdict.accepted);
    // The policies file's mode wins over the metadata's.
    let overridden = module.with_execution_mode(ExecutionMode::Opa).unwrap();
    assert_eq!(overridden.execution_mode(), Some(ExecutionMode::Opa));
    let err = overridden
        .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
        .unwrap_err();
    assert!(
        matches!(err, EvalError::MalformedOutput(_)),
        "the Gatekeeper sample has no response: {err}"
    );

    let wrong = with_metadata(
        bytes("pod-privileged-gatekeeper"),
        r#"{"executionMode":"kubewarden-wapc"}"#,
    );
    let err = engine()
        .load(&wrong)
        .err()
        .expect("a waPC mode on an OPA module");
    assert!(err.to_string().contains("OPA module"), "{err}");
    let unknown = with_metadata(
        bytes("pod-privileged-gatekeeper"),
        r#"{"executionMode":"rego"}"#,
    );
    let err = engine().load(&unknown).err().expect("an unknown mode");
    assert!(err.to_string().contains("unknown execution mode"), "{err}");
}

#[test]
fn gatekeeper_refuses_raw_requests_and_opa_takes_them() {
    let raw = PolicyRequest::Raw(json!({"uid": "r", "kind": {"kind": "Pod"}}));
    let err = gatekeeper()
        .validate(&ctx(), &raw, &Settings::default())
        .unwrap_err();
    assert!(matches!(err, EvalError::Unsupported(_)), "{err}");
    let verdict = opa().validate(&ctx(), &raw, &Settings::default()).unwrap();
    assert!(verdict.accepted);
}

#[test]
fn every_evaluation_starts_from_a_fresh_instance() {
    let module = gatekeeper();
    for _ in 0..50 {
        assert!(
            !module
                .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
                .unwrap()
                .accepted
        );
        assert!(
            module
                .validate(&ctx(), &fixture("pod-unprivileged"), &Settings::default())
                .unwrap()
                .accepted
        );
    }
    let reused = module
        .validate_reusing_instance(
            &ctx(),
            &fixture("pod-privileged"),
            &Settings::default(),
            100,
        )
        .unwrap();
    assert!(!reused.accepted);
}

#[test]
fn an_endless_rego_loop_costs_only_its_own_request() {
    let looping = in_mode("adversarial-rego-loop", ExecutionMode::Gatekeeper);
    let short = EvalContext::new("loop", Duration::from_millis(200));
    let started = Instant::now();
    let err = looping
        .validate(&short, &fixture("pod-privileged"), &Settings::default())
        .unwrap_err();
    let took = started.elapsed();
    // OPA's WebAssembly heap is a bump allocator, freed only between
    // evaluations: every iteration allocates, so the loop meets whichever
    // bound comes first, the deadline or the memory cap (on a quiet machine
    // the cap, in about 0.2 s; under load the deadline). Both end it.
    assert!(
        matches!(err, EvalError::Timeout(_) | EvalError::OutOfMemory(_)),
        "{err}"
    );
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
    // The engine and the other policies carry on.
    assert!(
        !gatekeeper()
            .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
            .unwrap()
            .accepted
    );
}

#[test]
fn a_huge_output_costs_only_its_own_request() {
    let huge = in_mode("adversarial-rego-huge-output", ExecutionMode::Gatekeeper);
    let err = huge
        .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            EvalError::MalformedOutput(_) | EvalError::OutOfMemory(_)
        ),
        "{err}"
    );
    assert!(
        gatekeeper()
            .validate(&ctx(), &fixture("pod-unprivileged"), &Settings::default())
            .unwrap()
            .accepted
    );
}

#[test]
fn an_unsupported_builtin_fails_only_the_requests_that_call_it() {
    let module = in_mode(
        "adversarial-rego-unsupported-builtin",
        ExecutionMode::Gatekeeper,
    );
    let err = module
        .validate(
            &ctx(),
            &pod("call-http", json!({"containers": []})),
            &Settings::default(),
        )
        .unwrap_err();
    match &err {
        EvalError::UnsupportedBuiltin(name) => assert_eq!(name, "http.send"),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("`http.send`"), "{err}");
    let denied = module
        .validate(
            &ctx(),
            &pod("forbidden", json!({"containers": []})),
            &Settings::default(),
        )
        .unwrap();
    assert_eq!(
        denied.message.as_deref(),
        Some("objects named forbidden are not allowed")
    );
    let fine = module
        .validate(
            &ctx(),
            &pod("fine", json!({"containers": []})),
            &Settings::default(),
        )
        .unwrap();
    assert!(fine.accepted);
}

/// Offers Namespaces to context-aware policies, as the host's watch caches will.
struct Inventory(Vec<ContextResourceList>);

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

#[test]
fn settings_named_kubernetes_are_replaced_by_the_inventory() {
    // The OPA sample ignores `data.kubernetes`, but must still evaluate with it.
    let mut ctx = ctx();
    ctx.capabilities = Arc::new(Inventory(vec![ContextResourceList {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        plural: "namespaces".into(),
        objects: Arc::new(vec![json!({"metadata": {"name": "default"}})]),
        revision: 1,
    }]));
    let settings = Settings::new(json!({"kubernetes": "mine"}));
    let verdict = opa()
        .validate(&ctx, &fixture("pod-privileged"), &settings)
        .unwrap();
    assert!(!verdict.accepted);
}

#[test]
fn a_rego_runtime_error_fails_only_its_own_request_with_the_guests_message() {
    let module = in_mode("adversarial-rego-conflict", ExecutionMode::Gatekeeper);
    let err = module
        .validate(
            &ctx(),
            &pod("conflict", json!({"containers": []})),
            &Settings::default(),
        )
        .unwrap_err();
    assert!(matches!(err, EvalError::Guest(_)), "{err}");
    assert!(err.to_string().contains("conflict"), "{err}");
    let fine = module
        .validate(
            &ctx(),
            &pod("fine", json!({"containers": []})),
            &Settings::default(),
        )
        .unwrap();
    assert!(fine.accepted);
}

/// `wasm` without its `opa_eval` export (renamed), as modules before ABI 1.2.
fn without_single_call_eval(wasm: &[u8]) -> Vec<u8> {
    let needle = b"\x08opa_eval";
    let at = wasm
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("an opa_eval export");
    let mut out = wasm.to_vec();
    out[at + needle.len() - 1] = b'X';
    out
}

#[test]
fn modules_without_opa_eval_are_evaluated_through_the_eval_context() {
    for (name, mode) in [
        ("pod-privileged-opa", ExecutionMode::Opa),
        ("pod-privileged-gatekeeper", ExecutionMode::Gatekeeper),
    ] {
        let module = engine()
            .load(&without_single_call_eval(&bytes(name)))
            .unwrap()
            .with_execution_mode(mode)
            .unwrap();
        let denied = module
            .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
            .unwrap();
        assert!(!denied.accepted, "{mode}");
        assert_eq!(
            denied.message.as_deref(),
            Some("Privileged container is not allowed: sidecar"),
            "{mode}"
        );
        let admitted = module
            .validate(&ctx(), &fixture("pod-unprivileged"), &Settings::default())
            .unwrap();
        assert!(admitted.accepted, "{mode}");
    }
}
