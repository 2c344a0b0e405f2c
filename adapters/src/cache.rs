//! On-disk cache of compiled artifacts, so that a restart with unchanged
//! modules skips compilation.
//!
//! Entries are keyed by the module digest and a fingerprint of the engine (its
//! wasmtime build and every setting that affects code generation), so an
//! upgrade or a configuration change can never load an incompatible artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::engine::EngineConfig;
use crate::error::AdapterError;

pub(crate) struct CompiledCache {
    dir: PathBuf,
    fingerprint: String,
}

/// Feeds `Hash` output into SHA-256, so that the fingerprint is stable across
/// processes (std's hashers make no such promise).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompiledCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine, config: &EngineConfig) -> Self {
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // The pooling limits are checked when an artifact is instantiated, not
        // when it is compiled, but keep them in the key all the same so that a
        // changed cap never meets an artifact compiled under the old one.
        config.pooling.hash(&mut hasher);
        config.max_memory_bytes.hash(&mut hasher);
        let fingerprint = hex::encode(&hasher.0.finalize()[..8]);
        CompiledCache { dir, fingerprint }
    }

    fn path(&self, digest: &str, kind: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join(format!("{hex}-{kind}-{}.cwasm", self.fingerprint))
    }

    pub(crate) fn module(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> Result<wasmtime::Module, AdapterError> {
        let path = self.path(digest, "module");
        if let Ok(bytes) = std::fs::read(&path) {
            // Read, not mapped: a mapped file that someone truncates later
            // would crash the process with SIGBUS.
            // SAFETY: the file is one this cache wrote (atomically, below) for
            // this exact engine fingerprint; wasmtime still checks its header.
            match unsafe { wasmtime::Module::deserialize(engine, &bytes) } {
                Ok(module) => return Ok(module),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled artifact")
                }
            }
        }
        let module = wasmtime::Module::new(engine, wasm)
            .map_err(|e| AdapterError::Compile(format!("{e:#}")))?;
        if let Ok(bytes) = module.serialize() {
            self.store(&path, &bytes);
        }
        Ok(module)
    }

    pub(crate) fn component(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> Result<Component, AdapterError> {
        let path = self.path(digest, "component");
        if let Ok(bytes) = std::fs::read(&path) {
            // SAFETY: as for modules above.
            match unsafe { Component::deserialize(engine, &bytes) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled artifact")
                }
            }
        }
        let component =
            Component::new(engine, wasm).map_err(|e| AdapterError::Compile(format!("{e:#}")))?;
        if let Ok(bytes) = component.serialize() {
            self.store(&path, &bytes);
        }
        Ok(component)
    }

    /// Write atomically; a failure only costs a recompilation next time.
    fn store(&self, path: &Path, bytes: &[u8]) {
        let result = std::fs::create_dir_all(&self.dir).and_then(|()| {
            // Unique per writer: two threads may compile the same module at once.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = path.with_extension(format!("tmp{}.{n}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled artifact");
        }
    }
}
