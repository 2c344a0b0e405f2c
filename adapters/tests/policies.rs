//! The adapters against the real sample policies in `target/policies/`
//! (built by `just policies`).

mod common;

use std::time::{Duration, Instant};

use common::{MEMORY_CAP, engine, fixture, load, repo};
use portcullis_adapters::{
    Abi, EngineConfig, EvalContext, EvalError, ExecutionMode, LoadedModule, PolicyEngine,
    PolicyRequest, Settings,
};
use serde_json::{Value, json};

fn ctx() -> EvalContext {
    EvalContext::new("test-policy", Duration::from_secs(2))
}

const ABIS: [&str; 2] = ["wapc", "component"];

#[test]
fn abi_is_detected_from_the_module() {
    assert_eq!(load("pod-privileged-wapc").abi(), Abi::Wapc);
    assert_eq!(load("pod-privileged-component").abi(), Abi::Component);
    let meta = load("pod-privileged-wapc")
        .metadata()
        .cloned()
        .expect("metadata section");
    assert_eq!(meta.protocol_version.as_deref(), Some("v1"));
    assert!(!meta.mutating);
    assert!(
        load("default-labels-component")
            .metadata()
            .expect("metadata")
            .mutating
    );
}

#[test]
fn pod_privileged_gives_the_same_verdicts_in_both_abis() {
    let cases = [
        ("pod-unprivileged", true, None),
        (
            "pod-privileged",
            false,
            Some("Privileged container is not allowed: sidecar"),
        ),
        (
            "pod-init-privileged",
            false,
            Some("Privileged init container is not allowed: init"),
        ),
    ];
    for abi in ABIS {
        let policy = load(&format!("pod-privileged-{abi}"));
        for (fixture_name, accepted, message) in &cases {
            let verdict = policy
                .validate(&ctx(), &fixture(fixture_name), &Settings::default())
                .unwrap();
            assert_eq!(verdict.accepted, *accepted, "{abi} {fixture_name}");
            if let Some(message) = message {
                let got = verdict.message.as_deref().unwrap_or_default();
                assert!(
                    got.starts_with(&message[..33]),
                    "{abi} {fixture_name}: {got}"
                );
            }
            assert_eq!(verdict.mutated_object, None);
        }
    }
    // Identical, field by field.
    for fixture_name in ["pod-privileged", "pod-init-privileged", "pod-unprivileged"] {
        let w = load("pod-privileged-wapc")
            .validate(&ctx(), &fixture(fixture_name), &Settings::default())
            .unwrap();
        let c = load("pod-privileged-component")
            .validate(&ctx(), &fixture(fixture_name), &Settings::default())
            .unwrap();
        assert_eq!(w, c, "{fixture_name}");
    }
}

/// The Python, JavaScript and Go builds (a component each for the first two,
/// a WASI command for Go) answer every shared fixture exactly as the Rust
/// waPC build does, field by field, under both settings.
#[test]
fn pod_privileged_agrees_in_every_language() {
    let reference = load("pod-privileged-wapc");
    for build in ["component", "python", "js", "go"] {
        let policy = load(&format!("pod-privileged-{build}"));
        for settings in [json!({}), json!({"skip_init_containers": true})] {
            let settings = Settings::new(settings);
            assert!(
                policy.validate_settings(&ctx(), &settings).unwrap().valid,
                "{build}"
            );
            for fixture_name in [
                "pod-unprivileged",
                "pod-privileged",
                "pod-init-privileged",
                "pod-no-labels",
                "pod-partial-labels",
            ] {
                let want = reference
                    .validate(&ctx(), &fixture(fixture_name), &settings)
                    .unwrap();
                let got = policy
                    .validate(&ctx(), &fixture(fixture_name), &settings)
                    .unwrap();
                assert_eq!(
                    got,
                    want,
                    "{build} on {fixture_name} with {:?}",
                    settings.value()
                );
            }
        }
        let unknown = policy
            .validate_settings(&ctx(), &Settings::new(json!({"skip_everything": true})))
            .unwrap();
        assert!(!unknown.valid, "{build}");
        assert!(
            unknown.message.unwrap().contains("skip_everything"),
            "{build}"
        );
    }
    assert_eq!(load("pod-privileged-python").abi(), Abi::Component);
    assert_eq!(load("pod-privileged-js").abi(), Abi::Component);
    assert_eq!(load("pod-privileged-go").abi(), Abi::WasiCommand);
}

#[test]
fn skip_init_containers_setting_is_honoured() {
    let settings = Settings::new(json!({"skip_init_containers": true}));
    for abi in ABIS {
        let policy = load(&format!("pod-privileged-{abi}"));
        assert!(policy.validate_settings(&ctx(), &settings).unwrap().valid);
        let verdict = policy
            .validate(&ctx(), &fixture("pod-init-privileged"), &settings)
            .unwrap();
        assert!(verdict.accepted, "{abi}: {verdict:?}");
    }
}

#[test]
fn settings_are_accepted_and_rejected_as_specified() {
    for abi in ABIS {
        let privileged = load(&format!("pod-privileged-{abi}"));
        let ok =
            |p: &LoadedModule, s: Value| p.validate_settings(&ctx(), &Settings::new(s)).unwrap();
        assert!(ok(&privileged, json!({})).valid, "{abi}");
        assert!(
            ok(&privileged, Value::Null).valid,
            "{abi}: null settings mean {{}}"
        );
        assert!(ok(&privileged, json!({"skip_ephemeral_containers": true})).valid);
        let unknown = ok(&privileged, json!({"skip_everything": true}));
        assert!(!unknown.valid, "{abi}: unknown key accepted");
        assert!(
            unknown.message.unwrap().contains("skip_everything"),
            "{abi}"
        );

        let labels = load(&format!("default-labels-{abi}"));
        assert!(
            ok(
                &labels,
                json!({"labels": {"team": "core", "example.com/tier": "web"}})
            )
            .valid
        );
        let bad_key = ok(&labels, json!({"labels": {"bad key": "x"}}));
        assert!(
            !bad_key.valid && bad_key.message.unwrap().contains("bad key"),
            "{abi}"
        );
        let bad_value = ok(&labels, json!({"labels": {"k": "-v"}}));
        assert!(
            !bad_value.valid && bad_value.message.unwrap().contains("-v"),
            "{abi}"
        );
        assert!(
            !ok(&labels, json!({"labels": {}, "extra": 1})).valid,
            "{abi}"
        );
    }
}

#[test]
fn default_labels_add_exactly_the_missing_labels_in_both_abis() {
    let settings = Settings::new(json!({"labels": {"owner": "sre", "app": "ignored"}}));
    let mut results = Vec::new();
    for abi in ABIS {
        let policy = load(&format!("default-labels-{abi}"));
        let verdict = policy
            .validate(&ctx(), &fixture("pod-partial-labels"), &settings)
            .unwrap();
        assert!(verdict.accepted);
        let mutated = verdict.mutated_object.clone().expect("mutation");
        let labels = mutated["metadata"]["labels"].as_object().unwrap();
        assert_eq!(labels["owner"], "sre", "{abi}: missing label added");
        assert_ne!(
            labels["app"], "ignored",
            "{abi}: existing label overwritten"
        );
        // Nothing else changes.
        let PolicyRequest::Admission(request) = fixture("pod-partial-labels") else {
            unreachable!()
        };
        let mut expected = request["object"].clone();
        expected["metadata"]["labels"]["owner"] = json!("sre");
        assert_eq!(mutated, expected, "{abi}");
        results.push(verdict);

        // All labels present: accepted without a mutation.
        let full = Settings::new(json!({"labels": {"app": "web"}}));
        let verdict = policy
            .validate(&ctx(), &fixture("pod-partial-labels"), &full)
            .unwrap();
        assert!(
            verdict.accepted && verdict.mutated_object.is_none(),
            "{abi}: {verdict:?}"
        );
    }
    assert_eq!(results[0], results[1]);
}

fn adversarial(abi: &str, behaviour: &str) -> (LoadedModule, Settings) {
    (
        load(&format!("adversarial-{abi}")),
        Settings::new(json!({"behaviour": behaviour})),
    )
}

#[test]
fn every_evaluation_gets_a_fresh_instance() {
    for abi in ABIS {
        let (policy, settings) = adversarial(abi, "counter");
        for _ in 0..5 {
            let verdict = policy
                .validate(&ctx(), &fixture("pod-unprivileged"), &settings)
                .unwrap();
            assert_eq!(
                verdict.message.as_deref(),
                Some("1"),
                "{abi}: state leaked between calls"
            );
        }
        // The same instance, reused, counts: this is what fresh instances prevent.
        let reused = policy
            .validate_reusing_instance(&ctx(), &fixture("pod-unprivileged"), &settings, 3)
            .unwrap();
        assert_eq!(reused.message.as_deref(), Some("3"), "{abi}");
    }
}

/// Evaluates inside the hand-over of the evaluation before, until one
/// cannot get an instance; answers how deep that was (`None`: 4 deep, all
/// served).
fn depth_of_first_refusal(module: &LoadedModule, depth: usize) -> Option<(usize, EvalError)> {
    if depth > 4 {
        return None;
    }
    let request = common::fixture("pod-privileged");
    module.validate_then(
        &ctx(),
        &request,
        &Settings::default(),
        |verdict| match verdict {
            Ok(verdict) => {
                assert!(!verdict.accepted);
                depth_of_first_refusal(module, depth + 1)
            }
            Err(error) => Some((depth, error)),
        },
    )
}

/// `validate_then` hands the verdict over while the instance still holds
/// its pool slot, and returns it before it returns. In a pool sized for one
/// component (and two linear memories), evaluations nested in the hand-over
/// run out of instances: the second component, the third waPC module, WASI
/// command or OPA module. With the teardown before the hand-over they would
/// never run out. After them, the pool serves again.
#[test]
fn the_verdict_is_handed_over_before_the_instance_is_torn_down() {
    let engine = PolicyEngine::new(EngineConfig {
        max_instances: 1,
        ..Default::default()
    })
    .unwrap();
    for (abi, expected) in [("wapc", 3), ("component", 2), ("go", 3), ("opa", 3)] {
        let mut module = engine
            .load(&common::policy_bytes(&format!("pod-privileged-{abi}")))
            .unwrap();
        if abi == "opa" {
            module = module.with_execution_mode(ExecutionMode::Opa).unwrap();
        }
        let (depth, error) = depth_of_first_refusal(&module, 1)
            .unwrap_or_else(|| panic!("{abi}: four live instances in a pool of one"));
        assert_eq!(depth, expected, "{abi}: {error}");
        assert!(
            matches!(error, EvalError::Instantiation(_)) && error.to_string().contains("limit"),
            "{abi}: {error}"
        );
        let verdict = module
            .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
            .unwrap();
        assert!(!verdict.accepted, "{abi}: the pool is free again");
    }
}

/// Run a bad guest, then check that the engine still serves a good one.
fn assert_contained(abi: &str, behaviour: &str, deadline: Duration) -> EvalError {
    let (policy, settings) = adversarial(abi, behaviour);
    let ctx = EvalContext::new("bad-policy", deadline);
    let started = Instant::now();
    let err = policy
        .validate(&ctx, &fixture("pod-unprivileged"), &settings)
        .expect_err(behaviour);
    // Generous: this checks that the deadline works, not how fast.
    assert!(
        started.elapsed() < deadline * 5 + Duration::from_secs(1),
        "{abi} {behaviour}"
    );
    let good = load(&format!("pod-privileged-{abi}"))
        .validate(
            &self::ctx(),
            &fixture("pod-privileged"),
            &Settings::default(),
        )
        .unwrap();
    assert!(
        !good.accepted,
        "{abi}: the host stopped serving after {behaviour}"
    );
    err
}

#[test]
fn an_endless_loop_is_interrupted_at_its_deadline() {
    for abi in ABIS {
        let err = assert_contained(abi, "loop", Duration::from_millis(300));
        assert!(
            matches!(err, EvalError::Timeout(d) if d == Duration::from_millis(300)),
            "{abi}: {err}"
        );
        assert!(err.to_string().contains("300ms deadline"), "{err}");
    }
}

#[test]
fn the_memory_cap_holds() {
    for abi in ABIS {
        let err = assert_contained(abi, "memory-bomb", Duration::from_secs(5));
        assert!(
            matches!(err, EvalError::OutOfMemory(MEMORY_CAP)),
            "{abi}: {err}"
        );
    }
}

#[test]
fn a_trap_is_a_typed_error() {
    for abi in ABIS {
        let err = assert_contained(abi, "trap", Duration::from_secs(2));
        assert!(matches!(err, EvalError::Trap(_)), "{abi}: {err}");
    }
}

#[test]
fn garbage_output_is_a_typed_error() {
    for abi in ABIS {
        let err = assert_contained(abi, "garbage", Duration::from_secs(2));
        assert!(matches!(err, EvalError::MalformedOutput(_)), "{abi}: {err}");
    }
}

#[test]
fn many_bad_evaluations_in_parallel_leave_the_pool_usable() {
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let abi = ABIS[i % 2];
                let behaviour = ["loop", "trap", "memory-bomb", "garbage"][i % 4];
                let (policy, settings) = adversarial(abi, behaviour);
                let ctx = EvalContext::new("bad", Duration::from_millis(200));
                policy
                    .validate(&ctx, &fixture("pod-unprivileged"), &settings)
                    .is_err()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
    for abi in ABIS {
        let (policy, settings) = adversarial(abi, "counter");
        let verdict = policy
            .validate(&ctx(), &fixture("pod-unprivileged"), &settings)
            .unwrap();
        assert_eq!(verdict.message.as_deref(), Some("1"));
    }
}

#[test]
fn raw_requests_run_on_wapc_and_are_refused_by_components() {
    let raw = PolicyRequest::Raw(json!({"user": "alice", "action": "delete"}));
    let (wapc, settings) = adversarial("wapc", "accept");
    assert!(wapc.validate(&ctx(), &raw, &settings).unwrap().accepted);
    let (component, settings) = adversarial("component", "accept");
    let err = component.validate(&ctx(), &raw, &settings).unwrap_err();
    assert!(matches!(err, EvalError::Unsupported(_)), "{err}");
}

#[test]
fn compiled_artifacts_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        max_instances: 8,
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let bytes =
        std::fs::read(repo().join("target/policies/pod-privileged-component.wasm")).unwrap();
    let first = PolicyEngine::new(config.clone())
        .unwrap()
        .load(&bytes)
        .unwrap();
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "one artifact written");
    let name = entries[0]
        .as_ref()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    assert!(
        name.starts_with(first.digest().trim_start_matches("sha256:")),
        "{name}"
    );

    // A new engine (a restart) loads the artifact and it evaluates the same.
    let second = PolicyEngine::new(config).unwrap().load(&bytes).unwrap();
    let verdict = second
        .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
        .unwrap();
    assert!(!verdict.accepted);

    // A corrupt artifact is discarded and recompiled, not trusted.
    std::fs::write(entries[0].as_ref().unwrap().path(), b"garbage").unwrap();
    let third = PolicyEngine::new(EngineConfig {
        max_instances: 8,
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap()
    .load(&bytes)
    .unwrap();
    assert!(
        !third
            .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
            .unwrap()
            .accepted
    );
}

#[test]
fn unsupported_modules_get_a_clear_error() {
    let engine = engine();
    let opa = wat::parse_str(
        r#"(module (import "env" "opa_abort" (func (param i32)))
           (memory (export "memory") 1) (func (export "opa_eval") (result i32) i32.const 0))"#,
    )
    .unwrap();
    // Recognised as OPA by its ABI, and refused for what it lacks.
    let err = engine.load(&opa).err().unwrap().to_string();
    assert!(err.contains("OPA module"), "{err}");
    assert!(err.contains("env.memory"), "{err}");
    // A WASI command runs (adapters/tests/wasi_command.rs), unless it needs
    // what the host does not provide.
    let command = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
    assert_eq!(engine.load(&command).unwrap().abi(), Abi::WasiCommand);
    let command =
        wat::parse_str(r#"(module (import "evil" "syscall" (func)) (func (export "_start")))"#)
            .unwrap();
    let err = engine.load(&command).err().unwrap().to_string();
    assert!(err.contains("evil"), "{err}");
    let err = engine.load(b"not wasm at all").err().unwrap().to_string();
    assert!(err.contains("not a WebAssembly binary"), "{err}");
    let missing_memory = wat::parse_str(
        r#"(module (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#,
    )
    .unwrap();
    let err = engine.load(&missing_memory).err().unwrap().to_string();
    assert!(err.contains("memory"), "{err}");
    let unknown_import = wat::parse_str(
        r#"(module (import "evil" "syscall" (func)) (memory (export "memory") 1)
           (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#,
    )
    .unwrap();
    let err = engine.load(&unknown_import).err().unwrap().to_string();
    assert!(err.contains("evil"), "{err}");
}

#[test]
fn out_of_bounds_guest_pointers_trap_the_guest_not_the_host() {
    // A waPC guest that asks the host to write its request far outside memory.
    let wasm = wat::parse_str(
        r#"(module
             (import "wapc" "__guest_request" (func $req (param i32 i32)))
             (import "wapc" "__guest_response" (func $resp (param i32 i32)))
             (memory (export "memory") 1)
             (func (export "__guest_call") (param i32 i32) (result i32)
               (call $req (i32.const 0) (i32.const 0x7ffffff0))
               i32.const 1))"#,
    )
    .unwrap();
    let policy = engine().load(&wasm).unwrap();
    let err = policy
        .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
        .unwrap_err();
    assert!(err.to_string().contains("out of bounds"), "{err}");

    // And a response that claims to be larger than memory.
    let wasm = wat::parse_str(
        r#"(module
             (import "wapc" "__guest_response" (func $resp (param i32 i32)))
             (memory (export "memory") 1)
             (func (export "__guest_call") (param i32 i32) (result i32)
               (call $resp (i32.const 100) (i32.const -1))
               i32.const 1))"#,
    )
    .unwrap();
    let err = engine()
        .load(&wasm)
        .unwrap()
        .validate(&ctx(), &fixture("pod-privileged"), &Settings::default())
        .unwrap_err();
    assert!(err.to_string().contains("negative length"), "{err}");
}
