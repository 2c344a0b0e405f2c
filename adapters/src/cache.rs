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

use crate::engine::EngineConfig;
use crate::types::Abi;

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

    fn path(&self, digest: &str, abi: Abi) -> PathBuf {
        let kind = match abi {
            Abi::Wapc | Abi::WasiCommand => "module".to_string(),
            Abi::Component => "component".to_string(),
            // The compiled module is of the rewritten bytes (imported memory
            // defined), so the rewrite's version is part of the key.
            Abi::Opa => format!("opa{}", crate::rego::REWRITE_VERSION),
        };
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join(format!("{hex}-{kind}-{}.cwasm", self.fingerprint))
    }

    /// The cached artifact of a module, if any. Read into memory, not
    /// mapped: a mapped file that someone truncates later would crash the
    /// process with SIGBUS.
    pub(crate) fn read(&self, digest: &str, abi: Abi) -> Option<Vec<u8>> {
        std::fs::read(self.path(digest, abi)).ok()
    }

    /// Store an artifact; a failure only costs a recompilation next time.
    pub(crate) fn write(&self, digest: &str, abi: Abi, bytes: &[u8]) {
        self.store(&self.path(digest, abi), bytes);
    }

    /// Write atomically (a reader never sees a partial file).
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
