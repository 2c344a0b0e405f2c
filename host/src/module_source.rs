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

/// Why a module could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    /// Safe to show to the policy's owner ([`FetchError::public_reason`]).
    pub public: String,
    /// Everything known, for the operator's log.
    pub detail: String,
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

    /// Fetches the module at `uri`.
    pub async fn fetch(&self, uri: &str) -> Result<ModuleBytes, FetchFailure> {
        let module = self
            .fetcher
            .fetch(uri)
            .await
            .map_err(|e: FetchError| FetchFailure {
                public: e.public_reason(),
                detail: e.to_string(),
            })?;
        Ok(ModuleBytes {
            bytes: module.bytes,
            digest: module.digest,
        })
    }
}
