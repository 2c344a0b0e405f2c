//! OCI registry access (pull and push of wasm policy artifacts) via oci-client.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use portcullis_config::SourcesConfig;

use super::{
    ACCEPTED_LAYER_MEDIA_TYPES, FetchError, MAX_MODULE_BYTES, USER_AGENT, WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE, error_chain, http_class, tls, transport_class,
};

/// The `sources.yml` keys that may describe `reference`'s registry: the name
/// as written, and the name oci-client talks to (they differ for Docker Hub).
fn source_keys(reference: &Reference) -> Vec<&str> {
    let mut keys = vec![reference.registry()];
    if reference.resolve_registry() != reference.registry() {
        keys.push(reference.resolve_registry());
    }
    keys
}

/// One oci-client per registry host: TLS trust is per host, and each client
/// caches that host's auth tokens.
#[derive(Default)]
pub(crate) struct RegistryClients {
    cache: tokio::sync::Mutex<HashMap<String, Client>>,
}

impl RegistryClients {
    pub(crate) async fn client_for(
        &self,
        sources: &SourcesConfig,
        uri: &str,
        reference: &Reference,
    ) -> Result<Client, FetchError> {
        let registry = reference.resolve_registry().to_owned();
        if let Some(client) = self.cache.lock().await.get(&registry) {
            return Ok(client.clone());
        }
        // Built without holding the lock: probing an unreachable insecure
        // host can take seconds and must not stall fetches from other hosts.
        let keys = source_keys(reference);
        let insecure = keys.iter().any(|k| sources.is_insecure(k));
        let mut roots = Vec::new();
        for key in &keys {
            roots.extend(tls::roots_for(sources, key)?);
        }
        let protocol = if insecure {
            // Kubewarden tries TLS first and plain HTTP last for insecure
            // sources. oci-client fixes the scheme per client, so probe once
            // and remember the answer for this host.
            probe_insecure(uri, &registry).await?
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            accept_invalid_certificates: insecure,
            extra_root_certificates: roots.iter().map(tls::RootCert::to_oci).collect(),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| FetchError::Config {
            what: format!("registry client for {registry}"),
            reason: error_chain(&e),
        })?;
        // Two concurrent first fetches may both build a client; keep the
        // first so every caller shares one token cache.
        Ok(self
            .cache
            .lock()
            .await
            .entry(registry)
            .or_insert(client)
            .clone())
    }
}

/// Picks HTTPS (certificate not verified) if the host speaks TLS, else HTTP.
async fn probe_insecure(uri: &str, registry: &str) -> Result<ClientProtocol, FetchError> {
    let build = |accept_invalid: bool| {
        reqwest_oci::Client::builder()
            .user_agent(USER_AGENT)
            .tls_danger_accept_invalid_certs(accept_invalid)
            .timeout(Duration::from_secs(10))
            .build()
    };
    let mut last_error = String::new();
    let mut last_class = String::from("connection failed");
    for (scheme, protocol) in [
        ("https", ClientProtocol::Https),
        ("http", ClientProtocol::Http),
    ] {
        let client = build(scheme == "https").map_err(|e| FetchError::Config {
            what: format!("probe client for {registry}"),
            reason: error_chain(&e),
        })?;
        // Any HTTP answer (even 401) proves the scheme works.
        match client
            .get(format!("{scheme}://{registry}/v2/"))
            .send()
            .await
        {
            Ok(_) => {
                tracing::debug!(%registry, %scheme, "insecure source: using {scheme}");
                return Ok(protocol);
            }
            Err(e) => {
                last_error = format!("{scheme}: {}", error_chain(&e));
                last_class = transport_class(&e);
            }
        }
    }
    Err(FetchError::Unreachable {
        uri: uri.to_owned(),
        reason: format!("registry {registry} answers neither HTTPS nor HTTP ({last_error})"),
        class: format!("answers neither HTTPS nor HTTP ({last_class})"),
    })
}

/// Translates oci-client errors into messages that name the URI and say
/// what to do; "unreachable" errors allow falling back to a stored copy.
pub(crate) fn map_oci_error(uri: &str, error: OciDistributionError) -> FetchError {
    let uri = uri.to_owned();
    let reason = error_chain(&error);
    match error {
        OciDistributionError::RequestError(ref e) => {
            let class = transport_class(e);
            FetchError::Unreachable { uri, reason, class }
        }
        OciDistributionError::ServerError { code, .. } if code >= 500 || code == 429 => {
            FetchError::Unreachable {
                uri,
                reason,
                class: http_class(code),
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => FetchError::NotFound { uri, reason },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        }
        | OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            FetchError::Unauthorized { uri, reason }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => FetchError::NotFound { uri, reason },
        OciDistributionError::RegistryError { ref envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                FetchError::NotFound { uri, reason }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                FetchError::Unauthorized { uri, reason }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                FetchError::Unreachable {
                    uri,
                    reason,
                    class: http_class(429),
                }
            } else {
                FetchError::Registry { uri, reason }
            }
        }
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => FetchError::DigestMismatch {
            uri,
            expected,
            actual,
        },
        OciDistributionError::IncompatibleLayerMediaTypeError(media_type) => {
            FetchError::MediaType { uri, media_type }
        }
        OciDistributionError::PullNoLayersError => FetchError::LayerCount { uri, count: 0 },
        _ => FetchError::Registry { uri, reason },
    }
}

/// Picks the wasm layer of a policy manifest.
pub(crate) fn select_wasm_layer<'m>(
    uri: &str,
    manifest: &'m OciImageManifest,
) -> Result<&'m OciDescriptor, FetchError> {
    let [layer] = manifest.layers.as_slice() else {
        return Err(FetchError::LayerCount {
            uri: uri.to_owned(),
            count: manifest.layers.len(),
        });
    };
    if !ACCEPTED_LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
        return Err(FetchError::MediaType {
            uri: uri.to_owned(),
            media_type: layer.media_type.clone(),
        });
    }
    if layer.size < 0 || layer.size as u64 > MAX_MODULE_BYTES {
        return Err(FetchError::TooLarge {
            uri: uri.to_owned(),
            limit: MAX_MODULE_BYTES,
        });
    }
    if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
        // Other tools (oras, wasm-to-oci) use different config types; the
        // layer type is what identifies a module, so only note it.
        tracing::debug!(%uri, config_media_type = %manifest.config.media_type, "non-Kubewarden config media type");
    }
    Ok(layer)
}

/// Metadata-section annotation keys mapped to OCI manifest annotations.
const ANNOTATION_MAP: &[(&str, &str)] = &[
    (
        "io.kubewarden.policy.title",
        "org.opencontainers.image.title",
    ),
    (
        "io.kubewarden.policy.description",
        "org.opencontainers.image.description",
    ),
    (
        "io.kubewarden.policy.author",
        "org.opencontainers.image.authors",
    ),
    ("io.kubewarden.policy.url", "org.opencontainers.image.url"),
    (
        "io.kubewarden.policy.source",
        "org.opencontainers.image.source",
    ),
    (
        "io.kubewarden.policy.license",
        "org.opencontainers.image.licenses",
    ),
    (
        "io.kubewarden.policy.version",
        "org.opencontainers.image.version",
    ),
];

/// Manifest annotations: OCI keys derived from the module's
/// `io.kubewarden.metadata` section, a default title, then `extra` (wins).
///
/// No `created` timestamp is added so that pushing the same module twice
/// yields the same manifest digest.
pub(crate) fn push_annotations(
    wasm: &[u8],
    reference: &Reference,
    extra: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    if let Some(meta) = metadata_annotations(wasm) {
        for (from, to) in ANNOTATION_MAP {
            if let Some(value) = meta.get(*from) {
                annotations.insert((*to).to_owned(), value.clone());
            }
        }
    }
    if !annotations.contains_key("org.opencontainers.image.title") {
        let name = reference
            .repository()
            .rsplit('/')
            .next()
            .unwrap_or_default();
        if !name.is_empty() {
            annotations.insert("org.opencontainers.image.title".to_owned(), name.to_owned());
        }
    }
    annotations.extend(extra);
    annotations
}

/// `annotations` of the module's metadata custom section, if any:
/// `io.kubewarden.metadata` (waPC modules, kwctl) or `portcullis.metadata`
/// (components), as read by `portcullis_adapters::read_metadata`.
fn metadata_annotations(wasm: &[u8]) -> Option<BTreeMap<String, String>> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        // A malformed module is the caller's problem (it is checked for the
        // magic only); annotations are best effort.
        let Ok(payload) = payload else { return None };
        if let wasmparser::Payload::CustomSection(section) = payload
            && matches!(
                section.name(),
                "io.kubewarden.metadata" | "portcullis.metadata"
            )
        {
            let value: serde_json::Value = serde_json::from_slice(section.data()).ok()?;
            let map = value.get("annotations")?.as_object()?;
            return Some(
                map.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect(),
            );
        }
    }
    None
}

/// Uploads the layer, config and manifest; returns the manifest digest.
///
/// The manifest is serialised here rather than by `Client::push` so that the
/// digest we report is computed over exactly the bytes the registry stores.
pub(crate) async fn push_artifact(
    client: &Client,
    uri: &str,
    reference: &Reference,
    auth: &RegistryAuth,
    wasm: &[u8],
    annotations: BTreeMap<String, String>,
) -> Result<String, FetchError> {
    let layer = ImageLayer::new(wasm.to_vec(), WASM_LAYER_MEDIA_TYPE.to_owned(), None);
    // kwctl pushes an empty JSON object as the config blob.
    let config = Config::new(b"{}".to_vec(), WASM_CONFIG_MEDIA_TYPE.to_owned(), None);
    let manifest =
        OciImageManifest::build(std::slice::from_ref(&layer), &config, Some(annotations));
    let body = serde_json::to_vec(&manifest)
        .map_err(|e| FetchError::Internal(format!("cannot serialise manifest: {e}")))?;
    let manifest_digest = super::store::sha256_digest(&body);
    let content_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_owned());
    let content_type = reqwest_oci::header::HeaderValue::from_str(&content_type)
        .map_err(|e| FetchError::Internal(format!("bad manifest media type: {e}")))?;

    client
        .store_auth_if_needed(reference.resolve_registry(), auth)
        .await;
    let map = |e| map_oci_error(uri, e);
    client
        .push_blob(reference, layer.data.clone(), &layer.sha256_digest())
        .await
        .map_err(map)?;
    client
        .push_blob(reference, config.data.clone(), &manifest.config.digest)
        .await
        .map_err(map)?;
    client
        .push_manifest_raw(reference, body, content_type)
        .await
        .map_err(map)?;
    Ok(manifest_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module holding one custom section `name` with `payload`.
    fn module_with_section(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![u8::try_from(name.len()).unwrap()];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(payload);
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.push(0);
        module.push(u8::try_from(body.len()).unwrap());
        module.extend_from_slice(&body);
        module
    }

    #[test]
    fn annotations_come_from_either_metadata_section() {
        let metadata = br#"{"annotations":{"io.kubewarden.policy.title":"t","io.kubewarden.policy.license":"MIT"}}"#;
        let reference: Reference = "127.0.0.1:5000/policies/repo-name:v1".parse().unwrap();
        for section in ["io.kubewarden.metadata", "portcullis.metadata"] {
            let wasm = module_with_section(section, metadata);
            let annotations = push_annotations(&wasm, &reference, BTreeMap::new());
            assert_eq!(
                annotations["org.opencontainers.image.title"], "t",
                "{section}"
            );
            assert_eq!(
                annotations["org.opencontainers.image.licenses"], "MIT",
                "{section}"
            );
        }
        // No metadata: the title defaults to the repository name.
        let wasm = module_with_section("other", metadata);
        let annotations = push_annotations(&wasm, &reference, BTreeMap::new());
        assert_eq!(annotations["org.opencontainers.image.title"], "repo-name");
        assert!(!annotations.contains_key("org.opencontainers.image.licenses"));
    }
}
