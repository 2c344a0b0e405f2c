//! The `oci/*` host capabilities: manifest digests, manifests and configs,
//! through the module fetcher's registry clients (so `sources.yml` and the
//! Docker credentials apply), and signature verification.
//!
//! Successful answers are kept for 60 s, as upstream, in a cache bounded in
//! bytes. Signature verification (`oci/v1/verify`, `oci/v2/verify`) needs the
//! `sigstore` crate, which only builds with OpenSSL or aws-lc-rs as its
//! crypto backend, not with this workspace's ring-based TLS stack: it answers
//! a clear "not supported" error.

use std::sync::Arc;
use std::time::Duration;

use portcullis_adapters::{CallContext, CapabilityError};
use serde_json::json;

use super::bridge::Bridge;
use super::request::CallbackRequestType;
use crate::fetch::ModuleFetcher;

/// How long a registry answer is reused, as upstream.
const TTL: Duration = Duration::from_secs(60);
/// Most bytes of registry answers kept.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// What `oci/v1/verify` and `oci/v2/verify` answer.
pub const SIGSTORE_NOT_SUPPORTED: &str = "signature verification (oci/v1/verify, oci/v2/verify) is not supported by this policy-server: the sigstore crate needs OpenSSL or aws-lc-rs, and Portcullis builds on rustls with ring only";

#[derive(Clone, PartialEq, Eq, Hash)]
enum Lookup {
    Digest(String),
    Manifest(String),
    ManifestAndConfig(String),
}

/// Registry look-ups for policies.
pub struct OciLookups {
    fetcher: Option<ModuleFetcher>,
    bridge: Bridge,
    answers: moka::sync::Cache<Lookup, Arc<[u8]>>,
}

impl std::fmt::Debug for OciLookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciLookups")
            .field("configured", &self.fetcher.is_some())
            .finish_non_exhaustive()
    }
}

impl OciLookups {
    /// Look-ups through `fetcher`; none fails every look-up.
    pub fn new(fetcher: Option<ModuleFetcher>, bridge: Bridge) -> Self {
        Self {
            fetcher,
            bridge,
            answers: moka::sync::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .time_to_live(TTL)
                .weigher(|_, v: &Arc<[u8]>| u32::try_from(v.len() + 128).unwrap_or(u32::MAX))
                .build(),
        }
    }

    /// Serves one `oci/*` request.
    pub fn call(
        &self,
        ctx: &CallContext<'_>,
        request: &CallbackRequestType,
    ) -> Result<Vec<u8>, CapabilityError> {
        let lookup = match request {
            CallbackRequestType::OciManifestDigest { image } => Lookup::Digest(image.clone()),
            CallbackRequestType::OciManifest { image } => Lookup::Manifest(image.clone()),
            CallbackRequestType::OciManifestAndConfig { image } => {
                Lookup::ManifestAndConfig(image.clone())
            }
            CallbackRequestType::SigstorePubKeyVerify { .. }
            | CallbackRequestType::SigstoreKeylessVerify { .. }
            | CallbackRequestType::SigstoreKeylessPrefixVerify { .. }
            | CallbackRequestType::SigstoreGithubActionsVerify { .. }
            | CallbackRequestType::SigstoreCertificateVerify { .. } => {
                return Err(CapabilityError::Failed(SIGSTORE_NOT_SUPPORTED.to_string()));
            }
            other => {
                return Err(CapabilityError::Failed(format!(
                    "not an OCI request: {other:?}"
                )));
            }
        };
        if let Some(answer) = self.answers.get(&lookup) {
            return Ok(answer.to_vec());
        }
        let fetcher = self.fetcher.clone().ok_or_else(|| {
            CapabilityError::Failed("registry access is not configured".to_string())
        })?;
        let (operation, image) = match &lookup {
            Lookup::Digest(image) => ("oci/v1/manifest_digest", image),
            Lookup::Manifest(image) => ("oci/v1/oci_manifest", image),
            Lookup::ManifestAndConfig(image) => ("oci/v1/oci_manifest_config", image),
        };
        let what = format!("{operation} {image:?}");
        let work = lookup.clone();
        let answer: Arc<[u8]> = self.bridge.run(ctx, &what, async move {
            let failed = |e: crate::fetch::FetchError| CapabilityError::Failed(e.to_string());
            let value = match &work {
                Lookup::Digest(image) => {
                    json!({ "digest": fetcher.image_digest(image).await.map_err(failed)? })
                }
                Lookup::Manifest(image) => {
                    let (manifest, _) = fetcher.image_manifest(image).await.map_err(failed)?;
                    serde_json::to_value(manifest)
                        .map_err(|e| CapabilityError::Failed(e.to_string()))?
                }
                Lookup::ManifestAndConfig(image) => {
                    let (manifest, digest, config) = fetcher
                        .image_manifest_and_config(image)
                        .await
                        .map_err(failed)?;
                    let config: serde_json::Value = serde_json::from_str(&config).map_err(|e| {
                        CapabilityError::Failed(format!(
                            "the configuration of {image} is not JSON: {e}"
                        ))
                    })?;
                    json!({ "manifest": manifest, "digest": digest, "config": config })
                }
            };
            serde_json::to_vec(&value)
                .map(Arc::from)
                .map_err(|e| CapabilityError::Failed(e.to_string()))
        })?;
        self.answers.insert(lookup, Arc::clone(&answer));
        Ok(answer.to_vec())
    }
}
