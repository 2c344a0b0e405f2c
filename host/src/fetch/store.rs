//! The content-addressed module store under `download_dir`.
//!
//! Layout:
//! - `<dir>/sha256/<hex>.wasm`: module bytes, named by their sha256 digest;
//! - `<dir>/index.json`: source URI → wasm digest (plus the manifest digest
//!   for registry references), so a restart can serve digest-pinned
//!   references without the network and fall back to the last good copy when
//!   a source is unreachable.
//!
//! Every write goes to a temp file in the same directory followed by a
//! rename, so readers (including other processes sharing the directory)
//! never see a partial module or index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::FetchError;

const INDEX_FILE: &str = "index.json";
const INDEX_VERSION: u32 = 1;

/// What the index remembers about one source URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    /// `sha256:<hex>` of the wasm bytes.
    pub digest: String,
    /// `sha256:<hex>` of the OCI manifest, for registry references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Unix seconds of the last successful fetch (informational).
    #[serde(default)]
    pub fetched_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    #[serde(default)]
    entries: BTreeMap<String, IndexEntry>,
}

/// Handle on the store directory.
#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
    /// Serialises read-modify-write of the index within this process.
    index_lock: tokio::sync::Mutex<()>,
}

/// A module read back from, or written to, the store.
pub(crate) struct StoredModule {
    pub bytes: Arc<[u8]>,
    pub digest: String,
    pub path: PathBuf,
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Store {
    pub(crate) fn open(root: &Path) -> Result<Self, FetchError> {
        let blobs = root.join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|source| FetchError::Store {
            path: blobs.clone(),
            source,
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            index_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Where the module with `digest` lives; `None` for a malformed digest
    /// (so a tampered index can never name a path outside the store).
    pub(crate) fn module_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(
            self.root
                .join("sha256")
                .join(format!("{}.wasm", hex.to_ascii_lowercase())),
        )
    }

    /// Reads a stored module and re-checks its digest; a missing or corrupt
    /// file yields `None` so the caller downloads it again.
    pub(crate) async fn load(&self, digest: &str) -> Option<StoredModule> {
        let path = self.module_path(digest)?;
        let bytes = tokio::fs::read(&path).await.ok()?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            tracing::warn!(path = %path.display(), expected = %digest, %actual,
                "stored module is corrupt; it will be fetched again");
            return None;
        }
        Some(StoredModule {
            bytes: Arc::from(bytes),
            digest: actual,
            path,
        })
    }

    /// Stores `bytes` (no-op when an intact copy already exists).
    pub(crate) async fn put(&self, bytes: Vec<u8>) -> Result<StoredModule, FetchError> {
        let digest = sha256_digest(&bytes);
        let path = self
            .module_path(&digest)
            .ok_or_else(|| FetchError::Internal(format!("bad computed digest {digest}")))?;
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let existing_ok = match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.len() == bytes.len() as u64 => {
                // Same name and size: trust it only after a hash check, a
                // crash mid-write is impossible (rename) but disks lie.
                tokio::fs::read(&path)
                    .await
                    .map(|b| sha256_digest(&b) == digest)
                    .unwrap_or(false)
            }
            _ => false,
        };
        if !existing_ok {
            let data = Arc::clone(&bytes);
            let target = path.clone();
            run_blocking(move || write_atomic(&target, &data)).await?;
        }
        Ok(StoredModule {
            bytes,
            digest,
            path,
        })
    }

    /// The index entry for `key`, if any. A missing or unreadable index is
    /// treated as empty: it is only a cache.
    pub(crate) async fn lookup(&self, key: &str) -> Option<IndexEntry> {
        let root = self.root.clone();
        let index = run_blocking(move || Ok(read_index(&root))).await.ok()?;
        index.entries.get(key).cloned()
    }

    /// Records `key → entry` in the index.
    pub(crate) async fn record(&self, key: &str, mut entry: IndexEntry) -> Result<(), FetchError> {
        entry.fetched_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _guard = self.index_lock.lock().await;
        let root = self.root.clone();
        let key = key.to_owned();
        run_blocking(move || {
            // Re-read under the lock so concurrent fetches (or another
            // process) do not lose each other's entries.
            let mut index = read_index(&root);
            index.version = INDEX_VERSION;
            index.entries.insert(key, entry);
            let json = serde_json::to_vec_pretty(&index)
                .map_err(|e| FetchError::Internal(format!("cannot serialise store index: {e}")))?;
            write_atomic(&root.join(INDEX_FILE), &json)
        })
        .await
    }
}

impl Store {
    /// Every source URI the index knows, with its entry.
    pub(crate) async fn entries(&self) -> BTreeMap<String, IndexEntry> {
        let root = self.root.clone();
        run_blocking(move || Ok(read_index(&root)))
            .await
            .map(|index| index.entries)
            .unwrap_or_default()
    }

    /// Removes the index entries `keys`, then every stored module that no
    /// remaining entry names. Returns the removed entries.
    pub(crate) async fn forget(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, IndexEntry)>, FetchError> {
        let _guard = self.index_lock.lock().await;
        let root = self.root.clone();
        let blobs: Vec<(String, PathBuf)> = {
            let index = read_index(&root);
            keys.iter()
                .filter_map(|k| index.entries.get(k))
                .filter_map(|e| Some((e.digest.clone(), self.module_path(&e.digest)?)))
                .collect()
        };
        run_blocking(move || {
            let mut index = read_index(&root);
            index.version = INDEX_VERSION;
            let removed: Vec<(String, IndexEntry)> = keys
                .iter()
                .filter_map(|k| index.entries.remove(k).map(|e| (k.clone(), e)))
                .collect();
            let json = serde_json::to_vec_pretty(&index)
                .map_err(|e| FetchError::Internal(format!("cannot serialise store index: {e}")))?;
            write_atomic(&root.join(INDEX_FILE), &json)?;
            for (digest, path) in blobs {
                if !index.entries.values().any(|e| e.digest == digest) {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(FetchError::Store { path, source }),
                    }
                }
            }
            Ok(removed)
        })
        .await
    }
}

fn read_index(root: &Path) -> IndexFile {
    let path = root.join(INDEX_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return IndexFile::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read module store index; ignoring it");
            return IndexFile::default();
        }
    };
    match serde_json::from_slice::<IndexFile>(&bytes) {
        Ok(index) if index.version == INDEX_VERSION => index,
        Ok(index) => {
            tracing::warn!(path = %path.display(), version = index.version, "unknown module store index version; ignoring it");
            IndexFile::default()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "corrupt module store index; ignoring it");
            IndexFile::default()
        }
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes via a unique temp file in the target directory, fsyncs, renames.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FetchError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let store_err = |source| FetchError::Store {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: do not leave temp files behind on failure.
        let _ = std::fs::remove_file(&tmp);
        return Err(store_err(e));
    }
    Ok(())
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FetchError> + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FetchError::Internal(format!("store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_load_and_index_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let module = store.put(b"\0asm\x01\0\0\0".to_vec()).await.unwrap();
        assert_eq!(module.digest, sha256_digest(b"\0asm\x01\0\0\0"));
        assert!(module.path.starts_with(dir.path().join("sha256")));
        let again = store.put(b"\0asm\x01\0\0\0".to_vec()).await.unwrap();
        assert_eq!(again.path, module.path);
        assert_eq!(
            &*store.load(&module.digest).await.unwrap().bytes,
            b"\0asm\x01\0\0\0"
        );

        // Corruption is detected and reported as "not stored".
        std::fs::write(&module.path, b"garbage!").unwrap();
        assert!(store.load(&module.digest).await.is_none());
        // put repairs it.
        store.put(b"\0asm\x01\0\0\0".to_vec()).await.unwrap();
        assert!(store.load(&module.digest).await.is_some());

        let entry = IndexEntry {
            digest: module.digest.clone(),
            manifest_digest: Some("sha256:00".into()),
            fetched_at: 0,
        };
        store
            .record("registry://a/b:c", entry.clone())
            .await
            .unwrap();
        store.record("registry://a/b:d", entry).await.unwrap();
        let reopened = Store::open(dir.path()).unwrap();
        let found = reopened.lookup("registry://a/b:c").await.unwrap();
        assert_eq!(found.digest, module.digest);
        assert!(reopened.lookup("registry://a/b:d").await.is_some());
        assert!(reopened.lookup("registry://a/b:e").await.is_none());

        // A corrupt index is an empty cache, not an error.
        std::fs::write(dir.path().join(INDEX_FILE), b"{nope").unwrap();
        assert!(reopened.lookup("registry://a/b:c").await.is_none());
        // No temp files left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sha256"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn malformed_digests_have_no_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.module_path("sha256:../../etc/passwd").is_none());
        assert!(store.module_path("md5:abcd").is_none());
        assert!(
            store
                .module_path(&format!("sha256:{}", "a".repeat(64)))
                .is_some()
        );
    }
}
