//! Where policy modules come from: a thin seam over [`crate::fetch`] so that
//! the policy loader only sees bytes and a digest.

use std::sync::Arc;

use crate::fetch::{FetchError, ModuleFetcher};

/// A module's bytes and their `sha256:<hex>` digest.
#[derive(Debug, Clone)]
pub struct ModuleBytes {
    /// The wasm bytes.
    pub bytes: Arc<[u8]>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

/// Fetches policy modules by URI (`file://`, `http(s)://`, `registry://`).
#[derive(Debug, Clone)]
pub struct ModuleSource {
    fetcher: ModuleFetcher,
}

impl ModuleSource {
    /// A source backed by `fetcher`.
    pub fn new(fetcher: ModuleFetcher) -> Self {
        Self { fetcher }
    }

    /// Fetches the module at `uri`; the error is a human-readable reason.
    pub async fn fetch(&self, uri: &str) -> Result<ModuleBytes, String> {
        let module = self
            .fetcher
            .fetch(uri)
            .await
            .map_err(|e: FetchError| e.to_string())?;
        Ok(ModuleBytes {
            bytes: module.bytes,
            digest: module.digest,
        })
    }
}
