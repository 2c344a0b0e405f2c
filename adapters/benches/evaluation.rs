//! Cost of one evaluation of the pod-privileged policy on the reference
//! request `tests/fixtures/pod-privileged.json` (from shared/fixtures).
//!
//! - `fresh/<abi>/pooling`: what the server does: a new Store and instance
//!   from the module's InstancePre, pooling allocator, per call;
//! - `fresh/<abi>/on-demand`: the same with the on-demand allocator;
//! - `reused/<abi>`: one warm instance for every call, the lower bound.
//!
//! Run with `just bench` (needs `just policies` first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_adapters::{
    EngineConfig, EvalContext, LoadedModule, PolicyEngine, PolicyRequest, Settings,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(engine: &PolicyEngine, name: &str) -> LoadedModule {
    let path = repo().join(format!("target/policies/{name}.wasm"));
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `just policies`", path.display()));
    engine.load(&bytes).expect("load")
}

fn request() -> PolicyRequest {
    let path = repo().join("tests/fixtures/pod-privileged.json");
    let review: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    PolicyRequest::Admission(review["request"].clone())
}

fn evaluation(c: &mut Criterion) {
    let request = request();
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
    for abi in ["wapc", "component"] {
        let name = format!("pod-privileged-{abi}");
        for (allocator, engine) in [("pooling", &pooled), ("on-demand", &on_demand)] {
            let module = load(engine, &name);
            let verdict = module.validate(&ctx, &request, &settings).unwrap();
            assert!(!verdict.accepted, "the reference request must be denied");
            group.bench_function(format!("fresh/{abi}/{allocator}"), |b| {
                b.iter(|| module.validate(&ctx, &request, &settings).unwrap())
            });
        }
        let module = load(&pooled, &name);
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

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = evaluation
}
criterion_main!(benches);
