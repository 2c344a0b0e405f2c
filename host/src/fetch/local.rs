//! The store as its user sees it: what is there (`portcullis policies`),
//! removing it (`rm`), and importing modules fetched elsewhere (`load`, for
//! air-gapped clusters).

use std::path::PathBuf;

use serde::Serialize;

use super::store::IndexEntry;
use super::{FetchError, FetchedModule, ModuleFetcher, check_wasm, module};

/// A module the store holds for a source URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPolicy {
    /// The source URI it was fetched from (`registry://…`, `https://…`).
    pub uri: String,
    /// `sha256:<hex>` of the wasm bytes.
    pub digest: String,
    /// For registry sources, the OCI manifest digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Unix seconds of the last fetch.
    pub fetched_at: u64,
    /// The module's file in the store.
    pub path: PathBuf,
    /// Its size in bytes; `None` when the file is missing.
    pub size: Option<u64>,
}

impl ModuleFetcher {
    /// Every module fetched from a registry or web server and kept in the
    /// store, by source URI.
    pub async fn stored(&self) -> Vec<StoredPolicy> {
        let store = &self.inner.store;
        store
            .entries()
            .await
            .into_iter()
            .filter_map(|(uri, entry)| {
                let path = store.module_path(&entry.digest)?;
                let size = std::fs::metadata(&path).ok().map(|m| m.len());
                Some(StoredPolicy {
                    uri,
                    digest: entry.digest,
                    manifest_digest: entry.manifest_digest,
                    fetched_at: entry.fetched_at,
                    path,
                    size,
                })
            })
            .collect()
    }

    /// Removes what `selector` names: a source URI, or a digest (`sha256:…`
    /// or its hex) or a prefix of one of at least 8 hex digits. Modules no
    /// other URI refers to are deleted. Returns what was removed.
    pub async fn remove(&self, selector: &str) -> Result<Vec<StoredPolicy>, FetchError> {
        let stored = self.stored().await;
        let hex = selector.strip_prefix("sha256:").unwrap_or(selector);
        let by_digest = hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        let matching: Vec<StoredPolicy> = stored
            .into_iter()
            .filter(|p| {
                p.uri == selector
                    || (by_digest
                        && p.digest
                            .trim_start_matches("sha256:")
                            .starts_with(&hex.to_ascii_lowercase()))
            })
            .collect();
        self.inner
            .store
            .forget(matching.iter().map(|p| p.uri.clone()).collect())
            .await?;
        Ok(matching)
    }

    /// Stores `wasm` as the module of `uri`, as if it had been fetched from
    /// there, so that the policy-server and the CLI find it without network.
    pub async fn import(
        &self,
        uri: &str,
        wasm: Vec<u8>,
        manifest_digest: Option<String>,
    ) -> Result<FetchedModule, FetchError> {
        check_wasm(uri, &wasm)?;
        let stored = self.inner.store.put(wasm).await?;
        let entry = IndexEntry {
            digest: stored.digest.clone(),
            manifest_digest: manifest_digest.clone(),
            fetched_at: 0,
        };
        self.inner.store.record(uri, entry.clone()).await?;
        // A registry tag imported with its manifest digest is found offline
        // under the digest-pinned reference too.
        if let Some(digest) = &manifest_digest
            && uri.starts_with("registry://")
            && !uri.contains('@')
        {
            self.inner
                .store
                .record(&format!("{uri}@{digest}"), entry)
                .await?;
        }
        Ok(module(stored, uri.to_owned(), manifest_digest))
    }
}
