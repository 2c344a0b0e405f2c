//! Registry look-ups of container images for the `oci/*` host capabilities.
//!
//! They go through the same per-registry clients, `sources.yml` trust
//! (insecure registries, custom CAs) and Docker credentials as module pulls.

use oci_client::Reference;
use oci_client::manifest::{OciImageManifest, OciManifest};

use super::{FetchError, ModuleFetcher, parse_reference, registry};

impl ModuleFetcher {
    /// The digest of `image`'s manifest (or index), as the registry reports
    /// it. `image` is a reference such as `ghcr.io/org/app:1.0` or `busybox`
    /// (Docker Hub), with or without a `registry://` prefix.
    pub async fn image_digest(&self, image: &str) -> Result<String, FetchError> {
        let (reference, client, auth) = self.image_client(image).await?;
        client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .map_err(|e| registry::map_oci_error(image, e))
    }

    /// `image`'s manifest or index, and its digest.
    pub async fn image_manifest(&self, image: &str) -> Result<(OciManifest, String), FetchError> {
        let (reference, client, auth) = self.image_client(image).await?;
        client
            .pull_manifest(&reference, &auth)
            .await
            .map_err(|e| registry::map_oci_error(image, e))
    }

    /// `image`'s manifest (for an index, the linux/amd64 one), its digest
    /// and its configuration blob (JSON text).
    pub async fn image_manifest_and_config(
        &self,
        image: &str,
    ) -> Result<(OciImageManifest, String, String), FetchError> {
        let (reference, client, auth) = self.image_client(image).await?;
        client
            .pull_manifest_and_config(&reference, &auth)
            .await
            .map_err(|e| registry::map_oci_error(image, e))
    }

    async fn image_client(
        &self,
        image: &str,
    ) -> Result<
        (
            Reference,
            oci_client::Client,
            oci_client::secrets::RegistryAuth,
        ),
        FetchError,
    > {
        let text = image.trim();
        let text = text.strip_prefix("registry://").unwrap_or(text);
        let super::Source::Registry(reference) = parse_reference(image, text)? else {
            return Err(FetchError::InvalidUri {
                uri: image.to_owned(),
                reason: "not an image reference".to_owned(),
            });
        };
        let client = self
            .inner
            .registries
            .client_for(&self.inner.sources, image, &reference)
            .await?;
        let auth = self
            .inner
            .credentials
            .auth_for(reference.resolve_registry());
        Ok((*reference, client, auth))
    }
}
