//! Cost of one evaluation of the pod-privileged policy on the reference
//! request `tests/fixtures/pod-privileged.json` (from shared/fixtures).
//!
//! - `fresh/<abi>/pooling`: what the server does per request: read the
//!   request's text ([`AdmissionText`]), a new Store and instance from the
//!   module's InstancePre, pooling allocator, the call;
//! - `fresh/<abi>/on-demand`: the same with the on-demand allocator;
//! - `fresh/<abi>/pooling/to-verdict`: the time until
//!   [`LoadedModule::validate_then`] hands the verdict over, which is when the
//!   server can answer; the instance's teardown comes after, on the same
//!   thread, outside the measured time (the `fresh` row includes it), and so
//!   does, for a component, making the spare instance the next iteration
//!   takes (the `fresh` row includes that too: it is the cost, this row the
//!   wait);
//! - `reused/<abi>`: one warm instance for every call, the request read
//!   once: the lower bound;
//! - `read-request`: reading the request alone, part of every `fresh` row.
//!
//! `<abi>` is `wapc`, `component`, and the Rego samples in their execution
//! modes, `gatekeeper` and `opa`. `opa-instantiation/*` compares how an OPA
//! module's instance is made: from the `InstancePre` of the module with its
//! imported memory turned into a defined one (pooled slot, copy-on-write
//! data image: what the adapter does), against a host-created memory and a
//! fresh link per instance (what an imported memory otherwise needs).
//!
//! Run with `just bench` (needs `just policies` first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_adapters::{
    AdmissionText, EngineConfig, EvalContext, ExecutionMode, LoadedModule, PolicyEngine,
    PolicyRequest, Settings,
};
use serde_json::value::RawValue;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wasm(name: &str) -> Vec<u8> {
    let path = repo().join(format!("target/policies/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run `just policies`", path.display()))
}

/// `abi` is an ABI or a Rego execution mode.
fn load(engine: &PolicyEngine, abi: &str) -> LoadedModule {
    let loaded = engine
        .load(&wasm(&format!("pod-privileged-{abi}")))
        .expect("load");
    match abi {
        "gatekeeper" => loaded
            .with_execution_mode(ExecutionMode::Gatekeeper)
            .unwrap(),
        "opa" => loaded.with_execution_mode(ExecutionMode::Opa).unwrap(),
        _ => loaded,
    }
}

/// The reference request's text, the AdmissionReview's `request` member.
fn request_text() -> Box<RawValue> {
    #[derive(serde::Deserialize)]
    struct Review {
        request: Box<RawValue>,
    }
    let path = repo().join("tests/fixtures/pod-privileged.json");
    let review: Review = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    review.request
}

/// The request as the policy-server hands it over, read again for every
/// request as the server does: kept as text ([`AdmissionText`]), its top
/// level read, a tree built only if the policy needs one.
fn read_request(text: &RawValue) -> PolicyRequest {
    PolicyRequest::AdmissionText(AdmissionText::new(text.to_owned()).unwrap())
}

fn evaluation(c: &mut Criterion) {
    let text = request_text();
    let request = read_request(&text);
    let settings = Settings::default();
    let ctx = EvalContext::new("bench", Duration::from_secs(2));
    // PORTCULLIS_BENCH_KEEP_RESIDENT tunes the pooled engine, to compare settings.
    let keep_resident_bytes = std::env::var("PORTCULLIS_BENCH_KEEP_RESIDENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(EngineConfig::default().keep_resident_bytes);
    let pooled = PolicyEngine::new(EngineConfig {
        keep_resident_bytes,
        ..Default::default()
    })
    .unwrap();
    let on_demand = PolicyEngine::new(EngineConfig {
        pooling: false,
        ..Default::default()
    })
    .unwrap();

    let mut group = c.benchmark_group("evaluation");
    // What every `fresh/*` row pays before any policy runs, whatever its ABI.
    group.bench_function("read-request", |b| b.iter(|| read_request(&text)));
    for abi in ["wapc", "component", "gatekeeper", "opa"] {
        for (allocator, engine) in [("pooling", &pooled), ("on-demand", &on_demand)] {
            let module = load(engine, abi);
            let verdict = module.validate(&ctx, &request, &settings).unwrap();
            assert!(!verdict.accepted, "the reference request must be denied");
            group.bench_function(format!("fresh/{abi}/{allocator}"), |b| {
                b.iter(|| {
                    module
                        .validate(&ctx, &read_request(&text), &settings)
                        .unwrap()
                })
            });
            if allocator == "pooling" {
                group.bench_function(format!("fresh/{abi}/pooling/to-verdict"), |b| {
                    b.iter_custom(|iters| {
                        let mut to_verdict = Duration::ZERO;
                        for _ in 0..iters {
                            let started = Instant::now();
                            let request = read_request(&text);
                            module.validate_then(&ctx, &request, &settings, |verdict| {
                                to_verdict += started.elapsed();
                                verdict.unwrap()
                            });
                        }
                        to_verdict
                    })
                });
            }
        }
        let module = load(&pooled, abi);
        group.bench_function(format!("reused/{abi}"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                module
                    .validate_reusing_instance(&ctx, &request, &settings, iters as usize)
                    .unwrap();
                started.elapsed()
            })
        });
    }
    group.finish();
}

/// How an OPA module's instance is made, on the same evaluation (the
/// unprivileged Pod, which calls no host builtin): the adapter's way
/// (imported memory rewritten to a defined one, `InstancePre`, pooled slot,
/// copy-on-write data image) against the imported memory as `opa build`
/// leaves it (a host-created memory per store, data segments copied in, a
/// link per instance), on the on-demand and the pooling allocator.
fn opa_instantiation(c: &mut Criterion) {
    use wasmtime::{
        Config, Engine, InstanceAllocationStrategy, Linker, Memory, MemoryType, Module, Store,
    };

    let original = wasm("pod-privileged-gatekeeper");
    let review: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/fixtures/pod-unprivileged.json")).unwrap(),
    )
    .unwrap();
    let input = serde_json::json!({"parameters": {}, "review": review["request"]}).to_string();
    let mut group = c.benchmark_group("opa-instantiation");

    let pooled = PolicyEngine::new(EngineConfig::default()).unwrap();
    let module = load(&pooled, "gatekeeper");
    let ctx = EvalContext::new("bench", Duration::from_secs(2));
    let request = PolicyRequest::Admission(review["request"].clone());
    assert!(
        module
            .validate(&ctx, &request, &Settings::default())
            .unwrap()
            .accepted
    );
    group.bench_function("defined-memory/pooled-cow (the adapter)", |b| {
        b.iter(|| {
            module
                .validate(&ctx, &request, &Settings::default())
                .unwrap()
        })
    });

    for (label, pooling) in [("on-demand", false), ("pooling", true)] {
        let mut config = Config::new();
        if pooling {
            config.allocation_strategy(InstanceAllocationStrategy::pooling());
        }
        let engine = Engine::new(&config).unwrap();
        let compiled = Module::new(&engine, &original).unwrap();
        let memory_min = compiled
            .imports()
            .find_map(|i| match i.ty() {
                wasmtime::ExternType::Memory(m) => Some(m.minimum() as u32),
                _ => None,
            })
            .unwrap_or(2);
        let evaluate = || -> String {
            let mut store = Store::new(&engine, ());
            let memory = Memory::new(&mut store, MemoryType::new(memory_min, None)).unwrap();
            let mut linker = Linker::new(&engine);
            linker.func_wrap("env", "opa_abort", |_: i32| {}).unwrap();
            linker.func_wrap("env", "opa_println", |_: i32| {}).unwrap();
            linker
                .func_wrap("env", "opa_builtin0", |_: i32, _: i32| 0i32)
                .unwrap();
            linker
                .func_wrap("env", "opa_builtin1", |_: i32, _: i32, _: i32| 0i32)
                .unwrap();
            linker
                .func_wrap("env", "opa_builtin2", |_: i32, _: i32, _: i32, _: i32| 0i32)
                .unwrap();
            linker
                .func_wrap(
                    "env",
                    "opa_builtin3",
                    |_: i32, _: i32, _: i32, _: i32, _: i32| 0i32,
                )
                .unwrap();
            linker
                .func_wrap(
                    "env",
                    "opa_builtin4",
                    |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32| 0i32,
                )
                .unwrap();
            linker.define(&mut store, "env", "memory", memory).unwrap();
            let instance = linker.instantiate(&mut store, &compiled).unwrap();
            let malloc = instance
                .get_typed_func::<i32, i32>(&mut store, "opa_malloc")
                .unwrap();
            let parse = instance
                .get_typed_func::<(i32, i32), i32>(&mut store, "opa_json_parse")
                .unwrap();
            let heap_get = instance
                .get_typed_func::<(), i32>(&mut store, "opa_heap_ptr_get")
                .unwrap();
            let eval = instance
                .get_typed_func::<(i32, i32, i32, i32, i32, i32, i32), i32>(&mut store, "opa_eval")
                .unwrap();
            let at = malloc.call(&mut store, 2).unwrap();
            memory.write(&mut store, at as usize, b"{}").unwrap();
            let data = parse.call(&mut store, (at, 2)).unwrap();
            let heap = heap_get.call(&mut store, ()).unwrap();
            let end = heap as usize + input.len();
            if end > memory.data_size(&store) {
                let pages = (end - memory.data_size(&store)).div_ceil(65536) as u64;
                memory.grow(&mut store, pages).unwrap();
            }
            memory
                .write(&mut store, heap as usize, input.as_bytes())
                .unwrap();
            let out = eval
                .call(
                    &mut store,
                    (0, 0, data, heap, input.len() as i32, end as i32, 0),
                )
                .unwrap() as usize;
            let bytes = &memory.data(&store)[out..];
            let n = bytes.iter().position(|b| *b == 0).unwrap();
            String::from_utf8_lossy(&bytes[..n]).into_owned()
        };
        assert_eq!(evaluate(), r#"[{"result":[]}]"#);
        group.bench_function(
            format!("imported-memory/{label} (host memory, link, instantiate)"),
            |b| b.iter(evaluate),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = evaluation, opa_instantiation
}
criterion_main!(benches);
