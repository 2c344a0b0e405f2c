//! What the adapter tests share: the engine, the compiled sample policies from
//! `target/policies/` (built by `just policies`), the reference requests, and
//! a capture of the policies' log events.

// Each test binary uses a part of this.
#![allow(dead_code)]

pub mod log_capture;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use portcullis_adapters::{EngineConfig, LoadedModule, PolicyEngine, PolicyRequest};
use serde_json::Value;

/// The memory cap of the test engine.
pub const MEMORY_CAP: u64 = 64 << 20;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `<repo>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// The engine of a test binary: pooling, as the server runs it.
pub fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        PolicyEngine::new(EngineConfig {
            max_instances: 64,
            max_memory_bytes: MEMORY_CAP,
            // The Python and JavaScript components take seconds to compile:
            // compile each once, not in every test run (CI caches the
            // target directory).
            cache_dir: Some(target_dir().join("test-compiled-cache")),
            ..Default::default()
        })
        .expect("engine")
    })
}

/// `target/policies/NAME.wasm`, loaded once per test binary: compiling is the
/// slow part, and sharing the `LoadedModule` is exactly what the server does.
pub fn load(name: &str) -> LoadedModule {
    static LOADED: OnceLock<Mutex<HashMap<String, LoadedModule>>> = OnceLock::new();
    let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap();
    if let Some(module) = loaded.get(name) {
        return module.clone();
    }
    let module = engine()
        .load(&policy_bytes(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    loaded.insert(name.to_string(), module.clone());
    module
}

/// The bytes of `target/policies/NAME.wasm`.
pub fn policy_bytes(name: &str) -> Vec<u8> {
    let path = repo().join("target/policies").join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `just policies` first", path.display()))
}

/// The `request` of `tests/fixtures/NAME.json`.
pub fn fixture(name: &str) -> PolicyRequest {
    let path = repo().join("tests/fixtures").join(format!("{name}.json"));
    let review: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    PolicyRequest::Admission(review["request"].clone())
}
