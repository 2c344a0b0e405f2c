//! Policy module fetching: `file://`, `http(s)://` and OCI registries.
//!
//! [`ModuleFetcher::fetch`] resolves a policy URI to wasm bytes and keeps a
//! copy in a content-addressed store under [`FetchConfig::download_dir`]:
//!
//! - `file:///abs/path.wasm` (also a bare `/abs/path` or `./rel/path`): read
//!   directly on every fetch.
//! - `http://` / `https://`: downloaded on every fetch. Plain `http://` is
//!   only allowed for hosts listed in `insecure_sources`.
//! - `registry://host[:port]/repo:tag` or `...@sha256:<hex>` (or the same
//!   without the scheme, e.g. `ghcr.io/org/policy:v1`): an OCI artifact
//!   holding one wasm layer, as pushed by `kwctl` or [`ModuleFetcher::push`].
//!   Digest-pinned references already in the store are served without any
//!   network access; tags are re-resolved with a manifest HEAD and the layer
//!   is downloaded only when the manifest changed.
//!
//! When a registry or web server is unreachable (connection failure, 5xx,
//! 429) and the store holds a copy for that exact URI, the copy is used and a
//! warning is logged: a policy-server restart must not fail because a
//! registry is down.
//!
//! Trust per host comes from `sources.yml` ([`SourcesConfig`]) and registry
//! credentials from a Docker `config.json`. When `sources.yml` has
//! `allowed_module_sources`, a URI outside it is refused before any I/O
//! ([`FetchError::NotAllowed`]), and an `http(s)` download may only be
//! redirected to an allowed place.
//!
//! Local files must be regular files (symlinks to one are fine) no larger
//! than [`MAX_MODULE_BYTES`]: a device (`/dev/zero`), FIFO or directory is
//! an error, never an endless read.
//!
//! Errors carry details for the operator's log; [`FetchError::public_reason`]
//! is what may be shown to whoever owns the policy (its status, the
//! readiness report, rejection messages): scheme, host and an error class,
//! never a response body.

mod allowed;
mod docker_config;
mod http;
mod images;
mod local;
mod progress;
mod registry;
mod store;
mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_client::Reference;
use portcullis_config::ModuleSourceAllowList;
pub use portcullis_config::SourcesConfig;

pub use self::local::StoredPolicy;
pub use self::progress::DownloadProgress;
use reqwest_oci::Url;

use self::docker_config::DockerCredentials;
use self::store::{IndexEntry, Store, StoredModule};

/// Media type of the config blob of a Kubewarden policy artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v1+json";
/// Media type of the wasm layer of a Kubewarden policy artifact (what `kwctl push` writes).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Plain wasm layer media type, accepted on pull for artifacts pushed by other tools.
pub const PLAIN_WASM_MEDIA_TYPE: &str = "application/wasm";
/// Layer media types accepted when pulling.
pub const ACCEPTED_LAYER_MEDIA_TYPES: &[&str] = &[WASM_LAYER_MEDIA_TYPE, PLAIN_WASM_MEDIA_TYPE];
/// Largest module accepted from any source, so a wrong URL cannot exhaust memory.
pub const MAX_MODULE_BYTES: u64 = 256 * 1024 * 1024;

const USER_AGENT: &str = concat!("portcullis/", env!("CARGO_PKG_VERSION"));
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Settings for a [`ModuleFetcher`].
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Root of the module store (`<dir>/sha256/<hex>.wasm` plus `index.json`).
    pub download_dir: PathBuf,
    /// Per-host transport settings; `Default` means none.
    pub sources: SourcesConfig,
    /// A Docker `config.json`, or a directory containing one. `None` means
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, if present.
    pub docker_config: Option<PathBuf>,
}

impl FetchConfig {
    /// A configuration with no sources settings and the default Docker config.
    pub fn new(download_dir: impl Into<PathBuf>) -> Self {
        Self {
            download_dir: download_dir.into(),
            sources: SourcesConfig::default(),
            docker_config: None,
        }
    }
}

/// A fetched policy module.
#[derive(Debug, Clone)]
pub struct FetchedModule {
    /// The wasm bytes.
    pub bytes: Arc<[u8]>,
    /// `sha256:<hex>` of [`Self::bytes`].
    pub digest: String,
    /// The copy in the module store.
    pub path: PathBuf,
    /// The normalised source URI (`registry://…`, `https://…`, `file://…`).
    pub source: String,
    /// For registry sources, the `sha256:<hex>` digest of the OCI manifest.
    pub manifest_digest: Option<String>,
}

/// The result of [`ModuleFetcher::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedModule {
    /// `sha256:<hex>` of the pushed manifest; `<reference>@<digest>` pins it.
    pub manifest_digest: String,
    /// The full reference pushed to, `registry://host/repo:tag`.
    pub reference: String,
}

/// Why a module could not be fetched or pushed. Every message names the URI
/// (or file) concerned and the cause.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URI cannot be parsed.
    #[error("invalid module URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URI scheme is not supported.
    #[error(
        "unsupported scheme {scheme:?} in module URI {uri:?} (use file://, http://, https:// or registry://)"
    )]
    UnsupportedScheme {
        /// The URI as given.
        uri: String,
        /// The scheme found.
        scheme: String,
    },
    /// A local file could not be read.
    #[error("cannot read module {uri}: {source}")]
    File {
        /// The URI as given.
        uri: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The URI is outside `allowed_module_sources`.
    #[error(
        "module source {uri} is not allowed: it matches none of allowed_module_sources in sources.yml ({allowed})"
    )]
    NotAllowed {
        /// The URI as given.
        uri: String,
        /// The patterns, comma-separated.
        allowed: String,
    },
    /// A plain-HTTP URL names a host that is not an insecure source.
    #[error(
        "refusing plain HTTP for {uri}: add {host:?} to insecure_sources in sources.yml to allow it"
    )]
    InsecureNotAllowed {
        /// The URI as given.
        uri: String,
        /// The `host[:port]` to list.
        host: String,
    },
    /// The source could not be reached (connection, TLS, timeout, 5xx, 429)
    /// and no stored copy exists.
    #[error("cannot reach the source of {uri}: {reason}")]
    Unreachable {
        /// The URI as given.
        uri: String,
        /// The underlying error chain.
        reason: String,
        /// What kind of failure, safe to show (`connection refused`,
        /// `TLS error`, `HTTP 503 Service Unavailable`).
        class: String,
    },
    /// A web server answered with a non-success status.
    #[error("cannot download {uri}: HTTP {status} {reason}")]
    HttpStatus {
        /// The URI as given.
        uri: String,
        /// The HTTP status code.
        status: u16,
        /// The status' canonical reason phrase.
        reason: String,
    },
    /// The registry has no such repository, tag or digest.
    #[error("{uri} not found: {reason}")]
    NotFound {
        /// The URI as given.
        uri: String,
        /// The registry's answer.
        reason: String,
    },
    /// The registry refused the credentials (or their absence).
    #[error(
        "access to {uri} denied (check the registry credentials in the Docker config.json): {reason}"
    )]
    Unauthorized {
        /// The URI as given.
        uri: String,
        /// The registry's answer.
        reason: String,
    },
    /// Any other registry error.
    #[error("registry error for {uri}: {reason}")]
    Registry {
        /// The URI as given.
        uri: String,
        /// The underlying error chain.
        reason: String,
    },
    /// The artifact's layer is not a wasm policy module.
    #[error(
        "{uri} is not a policy module: layer media type {media_type:?} is not one of {WASM_LAYER_MEDIA_TYPE:?}, {PLAIN_WASM_MEDIA_TYPE:?}"
    )]
    MediaType {
        /// The URI as given.
        uri: String,
        /// The media type found.
        media_type: String,
    },
    /// The artifact does not have exactly one layer.
    #[error("{uri} is not a policy module: expected exactly one wasm layer, found {count} layers")]
    LayerCount {
        /// The URI as given.
        uri: String,
        /// Number of layers in the manifest.
        count: usize,
    },
    /// The content does not start with the wasm magic `\0asm`.
    #[error("{uri} is not a WebAssembly module (it does not start with \\0asm)")]
    NotWasm {
        /// The URI as given.
        uri: String,
    },
    /// Downloaded content does not match the digest it was requested by.
    #[error("digest mismatch for {uri}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The URI as given.
        uri: String,
        /// The digest announced by the manifest or reference.
        expected: String,
        /// The digest of the received bytes.
        actual: String,
    },
    /// The module is larger than [`MAX_MODULE_BYTES`].
    #[error("{uri} is larger than the {limit}-byte module limit")]
    TooLarge {
        /// The URI as given.
        uri: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The module store could not be written.
    #[error("module store error at {path}: {source}")]
    Store {
        /// The file or directory concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Invalid configuration: Docker config, certificate authorities, TLS setup.
    #[error("invalid {what}: {reason}")]
    Config {
        /// What was being configured.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A bug or an environment failure (e.g. a panicked blocking task).
    #[error("internal fetch error: {0}")]
    Internal(String),
}

impl FetchError {
    /// Whether the failure is transient on the source's side, so that a
    /// stored copy may stand in for a fresh download.
    fn is_transient(&self) -> bool {
        match self {
            FetchError::Unreachable { .. } => true,
            FetchError::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

impl FetchError {
    /// The reason to show to whoever owns the policy: the source's scheme
    /// and host (the path too for local files) and the kind of failure.
    /// Unlike the `Display` text, it never holds what a registry or web
    /// server answered (response bodies, registry error messages) nor the
    /// URI's user, password, path or query.
    pub fn public_reason(&self) -> String {
        let (uri, class) = match self {
            FetchError::InvalidUri { .. }
            | FetchError::UnsupportedScheme { .. }
            | FetchError::NotAllowed { .. }
            | FetchError::InsecureNotAllowed { .. }
            | FetchError::Config { .. } => return self.to_string(),
            FetchError::File { uri, source } => (uri, source.to_string()),
            FetchError::Unreachable { uri, class, .. } => (uri, class.clone()),
            FetchError::HttpStatus { uri, status, .. } => (uri, http_class(*status)),
            FetchError::NotFound { uri, .. } => (uri, "not found".to_owned()),
            FetchError::Unauthorized { uri, .. } => (
                uri,
                "unauthorized (check the registry credentials)".to_owned(),
            ),
            FetchError::Registry { uri, .. } => (uri, "registry error".to_owned()),
            FetchError::MediaType { uri, .. } => (
                uri,
                "not a policy module (unexpected layer media type)".to_owned(),
            ),
            FetchError::LayerCount { uri, count } => (
                uri,
                format!("not a policy module (expected one wasm layer, found {count})"),
            ),
            FetchError::NotWasm { uri } => (uri, "not a WebAssembly module".to_owned()),
            FetchError::DigestMismatch { uri, .. } => (
                uri,
                "digest mismatch (content changed in transit)".to_owned(),
            ),
            FetchError::TooLarge { uri, limit } => {
                (uri, format!("larger than the {limit}-byte module limit"))
            }
            FetchError::Store { .. } => return "the policy-server's module store failed".into(),
            FetchError::Internal(_) => return "internal error while fetching the module".into(),
        };
        format!("{}: {class}", source_label(uri))
    }
}

/// `HTTP 401 Unauthorized`.
fn http_class(status: u16) -> String {
    let reason = reqwest_oci::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("HTTP {status} {reason}").trim_end().to_owned()
}

/// Where a URI points, without user, password, path or query: `registry://host:port`,
/// `https://host`, `file:///path/module.wasm` (a local path is the operator's).
pub fn source_label(uri: &str) -> String {
    match parse_source(uri) {
        Ok(Source::File(path)) => format!("file://{}", path.display()),
        Ok(Source::Http(url)) => match http::host_key(&url) {
            Some(host) => format!("{}://{host}", url.scheme()),
            None => "the module source".to_owned(),
        },
        Ok(Source::Registry(reference)) => format!("registry://{}", reference.registry()),
        Err(_) => "the module source".to_owned(),
    }
}

/// What kind of transport failure `error` is, from its source chain:
/// safe to show, unlike the messages themselves (which can hold URLs with
/// query strings).
pub(crate) fn transport_class(error: &(dyn std::error::Error + 'static)) -> String {
    use std::io::ErrorKind;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut text = String::new();
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref()
                && inner.downcast_ref::<rustls::Error>().is_some()
            {
                return "TLS error".to_owned();
            }
            match io.kind() {
                ErrorKind::ConnectionRefused => return "connection refused".to_owned(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                    return "connection reset".to_owned();
                }
                ErrorKind::TimedOut => return "timed out".to_owned(),
                ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                    return "host unreachable".to_owned();
                }
                _ => {}
            }
        }
        if e.downcast_ref::<rustls::Error>().is_some() {
            return "TLS error".to_owned();
        }
        text.push_str(&e.to_string().to_ascii_lowercase());
        text.push(' ');
        current = e.source();
    }
    // Our own libraries' wording (not anything a server sent).
    if text.contains("dns error") || text.contains("failed to lookup address") {
        "DNS resolution failed".to_owned()
    } else if text.contains("certificate") || text.contains("tls") {
        "TLS error".to_owned()
    } else if text.contains("timed out") || text.contains("timeout") {
        "timed out".to_owned()
    } else {
        "connection failed".to_owned()
    }
}

/// Formats an error with its whole `source()` chain: reqwest's top-level
/// message ("error sending request") hides the useful part
/// ("connection refused", "invalid peer certificate: UnknownIssuer").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Where a URI points.
enum Source {
    File(PathBuf),
    Http(Url),
    Registry(Box<Reference>),
}

fn parse_source(uri: &str) -> Result<Source, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = uri.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    let Some((scheme, rest)) = trimmed.split_once("://") else {
        if trimmed.starts_with('/') || trimmed.starts_with("./") || trimmed.starts_with("../") {
            return Ok(Source::File(PathBuf::from(trimmed)));
        }
        return parse_reference(uri, trimmed);
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            if rest.is_empty() {
                return Err(invalid("no path after file://"));
            }
            // Url handles file:///abs and percent-escapes; `file://rel/x`
            // (not a valid URL path) is taken literally as a relative path.
            let path = Url::parse(trimmed)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .unwrap_or_else(|| PathBuf::from(rest));
            Ok(Source::File(path))
        }
        "http" | "https" => {
            let url = Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid("missing host"));
            }
            Ok(Source::Http(url))
        }
        "registry" => parse_reference(uri, rest),
        other => Err(FetchError::UnsupportedScheme {
            uri: uri.to_owned(),
            scheme: other.to_owned(),
        }),
    }
}

fn parse_reference(uri: &str, text: &str) -> Result<Source, FetchError> {
    text.parse::<Reference>()
        .map(|r| Source::Registry(Box::new(r)))
        .map_err(|e| FetchError::InvalidUri {
            uri: uri.to_owned(),
            reason: format!("not an OCI reference: {e}"),
        })
}

fn check_wasm(uri: &str, bytes: &[u8]) -> Result<(), FetchError> {
    if bytes.starts_with(WASM_MAGIC) {
        Ok(())
    } else {
        Err(FetchError::NotWasm {
            uri: uri.to_owned(),
        })
    }
}

struct Inner {
    store: Store,
    sources: SourcesConfig,
    allowed: Option<Arc<ModuleSourceAllowList>>,
    credentials: DockerCredentials,
    registries: registry::RegistryClients,
    http: http::HttpClients,
    /// Told about each download, for interactive tools.
    progress: Option<Arc<dyn DownloadProgress>>,
}

/// Fetches policy modules and pushes them to registries. Cheap to clone;
/// clones share the store, HTTP connections and registry tokens.
#[derive(Clone)]
pub struct ModuleFetcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ModuleFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleFetcher")
            .field("store", &self.inner.store)
            .field("sources", &self.inner.sources)
            .finish_non_exhaustive()
    }
}

impl ModuleFetcher {
    /// Creates the store directory and loads registry credentials.
    ///
    /// Fails if the store cannot be created or an explicitly configured
    /// Docker config is missing or malformed.
    pub fn new(config: FetchConfig) -> Result<Self, FetchError> {
        // reqwest is built without a bundled crypto provider (the workspace
        // uses ring, not aws-lc-rs) and panics when building a TLS client
        // without a process default. Installing fails harmlessly when the
        // binary already installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = Store::open(&config.download_dir)?;
        let credentials = DockerCredentials::load(config.docker_config.as_deref())?;
        let allowed = config
            .sources
            .allow_list()
            .map_err(|e| FetchError::Config {
                what: "allowed_module_sources".to_owned(),
                reason: e.to_string(),
            })?
            .map(Arc::new);
        let allowed_for_redirects = allowed.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                sources: config.sources,
                allowed,
                credentials,
                registries: registry::RegistryClients::default(),
                http: http::HttpClients::new(allowed_for_redirects),
                progress: None,
            }),
        })
    }

    /// Reports the progress of downloads to `progress` (call right after
    /// [`ModuleFetcher::new`], before the fetcher is shared).
    pub fn with_progress(mut self, progress: Arc<dyn DownloadProgress>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.progress = Some(progress);
        }
        self
    }

    /// Resolves `file://`, `http://`, `https://` and `registry://` URIs (and a
    /// bare `ghcr.io/...` reference) to wasm bytes, keeping a copy in the
    /// store keyed by sha256 digest. See the module docs for caching rules.
    pub async fn fetch(&self, uri: &str) -> Result<FetchedModule, FetchError> {
        let source = parse_source(uri)?;
        if let Some(allowed) = &self.inner.allowed {
            allowed::check(allowed, uri, &source).await?;
        }
        match source {
            Source::File(path) => self.fetch_file(uri, &path).await,
            Source::Http(url) => self.fetch_http(uri, url).await,
            Source::Registry(reference) => self.fetch_registry(uri, &reference).await,
        }
    }

    /// Pushes `wasm` to `reference` (`registry://host/repo:tag`) as a
    /// Kubewarden policy artifact (config `application/vnd.wasm.config.v1+json`,
    /// layer `application/vnd.wasm.content.layer.v1+wasm`).
    ///
    /// Manifest annotations: OCI `org.opencontainers.image.*` keys derived
    /// from the module's `io.kubewarden.metadata` annotations, a default
    /// title (the repository name), then `annotations` (which win).
    pub async fn push(
        &self,
        wasm: &[u8],
        reference: &str,
        annotations: BTreeMap<String, String>,
    ) -> Result<PushedModule, FetchError> {
        let parsed = match parse_source(reference)? {
            Source::Registry(r) => r,
            _ => {
                return Err(FetchError::InvalidUri {
                    uri: reference.to_owned(),
                    reason: "push needs a registry:// reference".to_owned(),
                });
            }
        };
        if parsed.digest().is_some() {
            // The manifest digest is only known after serialising it, so a
            // digest in the target reference can never be right.
            return Err(FetchError::InvalidUri {
                uri: reference.to_owned(),
                reason: "push needs a tag, not a @sha256: digest".to_owned(),
            });
        }
        check_wasm(reference, wasm)?;
        if wasm.len() as u64 > MAX_MODULE_BYTES {
            return Err(FetchError::TooLarge {
                uri: reference.to_owned(),
                limit: MAX_MODULE_BYTES,
            });
        }
        let client = self
            .inner
            .registries
            .client_for(&self.inner.sources, reference, &parsed)
            .await?;
        let auth = self.inner.credentials.auth_for(parsed.resolve_registry());
        let annotations = registry::push_annotations(wasm, &parsed, annotations);
        let manifest_digest =
            registry::push_artifact(&client, reference, &parsed, &auth, wasm, annotations).await?;
        tracing::info!(reference = %parsed.whole(), %manifest_digest, "pushed policy module");
        Ok(PushedModule {
            manifest_digest,
            reference: format!("registry://{}", parsed.whole()),
        })
    }

    async fn fetch_file(&self, uri: &str, path: &Path) -> Result<FetchedModule, FetchError> {
        let owned = (uri.to_owned(), path.to_path_buf());
        let bytes = tokio::task::spawn_blocking(move || read_module_file(&owned.0, &owned.1))
            .await
            .map_err(|e| FetchError::Internal(format!("file read task failed: {e}")))??;
        check_wasm(uri, &bytes)?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let source = Url::from_file_path(&absolute)
            .map(String::from)
            .unwrap_or_else(|()| format!("file://{}", absolute.display()));
        let stored = self.inner.store.put(bytes).await?;
        Ok(module(stored, source, None))
    }

    async fn fetch_http(&self, uri: &str, url: Url) -> Result<FetchedModule, FetchError> {
        let key = url.to_string();
        let bytes = match self
            .inner
            .http
            .download(&self.inner.sources, uri, &url, self.inner.progress.as_ref())
            .await
        {
            Ok(bytes) => bytes,
            Err(e) => return self.stored_fallback(&key, e).await,
        };
        check_wasm(uri, &bytes)?;
        let stored = self.inner.store.put(bytes).await?;
        self.record(&key, &stored.digest, None).await;
        Ok(module(stored, key, None))
    }

    async fn fetch_registry(
        &self,
        uri: &str,
        reference: &Reference,
    ) -> Result<FetchedModule, FetchError> {
        let key = format!("registry://{}", reference.whole());
        let store = &self.inner.store;

        // A digest names immutable content: serve it from the store without
        // touching the network.
        if let Some(pinned) = reference.digest()
            && let Some(hit) = self.stored_for(&key, Some(pinned)).await
        {
            tracing::debug!(%uri, "digest-pinned module served from the store");
            return Ok(hit);
        }

        let client = match self
            .inner
            .registries
            .client_for(&self.inner.sources, uri, reference)
            .await
        {
            Ok(client) => client,
            Err(e) => return self.stored_fallback(&key, e).await,
        };
        let auth = self
            .inner
            .credentials
            .auth_for(reference.resolve_registry());

        if reference.digest().is_none() {
            // Tags move: a HEAD tells whether the stored copy is current
            // without downloading (and without counting as a pull on
            // rate-limited registries).
            match client.fetch_manifest_digest(reference, &auth).await {
                Ok(current) => {
                    if let Some(hit) = self.stored_for(&key, Some(&current)).await {
                        tracing::debug!(%uri, manifest_digest = %current, "tag unchanged; module served from the store");
                        return Ok(hit);
                    }
                }
                Err(e) => {
                    return self
                        .stored_fallback(&key, registry::map_oci_error(uri, e))
                        .await;
                }
            }
        }

        let (manifest, manifest_digest) = match client.pull_image_manifest(reference, &auth).await {
            Ok(found) => found,
            Err(e) => {
                return self
                    .stored_fallback(&key, registry::map_oci_error(uri, e))
                    .await;
            }
        };
        let layer = registry::select_wasm_layer(uri, &manifest)?;
        let mut bytes = Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0));
        let report = progress::Reporting::start(
            self.inner.progress.as_ref(),
            uri,
            u64::try_from(layer.size).ok(),
        );
        // pull_blob verifies the bytes against the layer digest.
        client
            .pull_blob(
                reference,
                layer,
                progress::CountingWriter {
                    inner: &mut bytes,
                    report: &report,
                },
            )
            .await
            .map_err(|e| registry::map_oci_error(uri, e))?;
        drop(report);
        check_wasm(uri, &bytes)?;
        let stored = store.put(bytes).await?;
        self.record(&key, &stored.digest, Some(manifest_digest.clone()))
            .await;
        tracing::info!(%uri, digest = %stored.digest, %manifest_digest, "fetched policy module");
        Ok(module(stored, key, Some(manifest_digest)))
    }

    /// The stored module for `key`, if the index has one (matching
    /// `manifest_digest` when given) and the file is intact.
    async fn stored_for(&self, key: &str, manifest_digest: Option<&str>) -> Option<FetchedModule> {
        let entry = self.inner.store.lookup(key).await?;
        if manifest_digest.is_some() && entry.manifest_digest.as_deref() != manifest_digest {
            return None;
        }
        let stored = self.inner.store.load(&entry.digest).await?;
        Some(module(stored, key.to_owned(), entry.manifest_digest))
    }

    /// On a transient failure, serve the last good copy of `key` if any.
    async fn stored_fallback(
        &self,
        key: &str,
        error: FetchError,
    ) -> Result<FetchedModule, FetchError> {
        if !error.is_transient() {
            return Err(error);
        }
        match self.stored_for(key, None).await {
            Some(hit) => {
                tracing::warn!(source = %key, %error, digest = %hit.digest,
                    "source unreachable; using the previously fetched copy from the store");
                Ok(hit)
            }
            None => Err(error),
        }
    }

    async fn record(&self, key: &str, digest: &str, manifest_digest: Option<String>) {
        let entry = IndexEntry {
            digest: digest.to_owned(),
            manifest_digest,
            fetched_at: 0,
        };
        // The index is an optimisation: failing to update it must not fail
        // a fetch whose module is already safely stored.
        if let Err(e) = self.inner.store.record(key, entry).await {
            tracing::warn!(source = %key, error = %e, "cannot update the module store index");
        }
    }
}

/// Reads a module file: a regular file (after following symlinks) of at most
/// [`MAX_MODULE_BYTES`]. Opened non-blocking so that a FIFO does not wait for
/// a writer; its type is checked on the opened file, so swapping the path
/// between a check and the read changes nothing.
fn read_module_file(uri: &str, path: &Path) -> Result<Vec<u8>, FetchError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file_error = |source: std::io::Error| FetchError::File {
        uri: uri.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(file_error)?;
    let metadata = file.metadata().map_err(file_error)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        let what = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_char_device() || file_type.is_block_device() {
            "a device"
        } else if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(file_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}: a module must be a regular file"),
        )));
    }
    let too_large = || FetchError::TooLarge {
        uri: uri.to_owned(),
        limit: MAX_MODULE_BYTES,
    };
    if metadata.len() > MAX_MODULE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // The file may grow after the check: never read past the limit.
    file.take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(file_error)?;
    if bytes.len() as u64 > MAX_MODULE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

fn module(stored: StoredModule, source: String, manifest_digest: Option<String>) -> FetchedModule {
    FetchedModule {
        bytes: stored.bytes,
        digest: stored.digest,
        path: stored.path,
        source,
        manifest_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        assert!(
            matches!(parse_source("file:///tmp/a.wasm"), Ok(Source::File(p)) if p == Path::new("/tmp/a.wasm"))
        );
        assert!(
            matches!(parse_source("file://rel/a.wasm"), Ok(Source::File(p)) if p == Path::new("rel/a.wasm"))
        );
        assert!(matches!(parse_source("./a.wasm"), Ok(Source::File(_))));
        assert!(
            matches!(parse_source("https://h:8443/p.wasm"), Ok(Source::Http(u)) if u.port() == Some(8443))
        );
        let Ok(Source::Registry(r)) = parse_source("registry://127.0.0.1:5000/policies/x:v1")
        else {
            panic!("not a registry reference");
        };
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "policies/x");
        assert_eq!(r.tag(), Some("v1"));
        let Ok(Source::Registry(r)) =
            parse_source("ghcr.io/kubewarden/policies/safe-labels:v1.0.0")
        else {
            panic!("not a registry reference");
        };
        assert_eq!(r.registry(), "ghcr.io");
        for odd in [
            "registry://h:99999999/r:v",
            "registry://[::1]:5000/r:v",
            "registry://h/r:v@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "registry://höst/r",
            "file://",
            "://",
            "registry:///",
            "\u{0}",
        ] {
            // Accepted or rejected, but never a panic.
            let _ = parse_source(odd);
        }
        for bad in [
            "",
            "   ",
            "ftp://x/y",
            "registry://",
            "registry://UPPER/Case:v1",
            "https://",
            "file://",
            "registry://h/r@sha256:zz",
        ] {
            let err = parse_source(bad).err().map(|e| e.to_string());
            assert!(err.is_some(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn error_messages_name_the_uri() {
        let err = parse_source("ftp://example.com/p.wasm")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("ftp://example.com/p.wasm") && err.contains("\"ftp\""),
            "{err}"
        );
        let err = check_wasm("file:///x", b"MZ\0\0").unwrap_err().to_string();
        assert!(
            err.contains("file:///x") && err.contains("WebAssembly"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn file_fetch_stores_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let module_path = dir.path().join("m.wasm");
        std::fs::write(&module_path, b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(dir.path().join("not.wasm"), b"hello").unwrap();
        let fetcher = ModuleFetcher::new(FetchConfig {
            docker_config: Some(dir.path().join("no-docker-config")),
            ..FetchConfig::new(dir.path().join("store"))
        });
        // An explicitly configured but missing docker config is an error.
        assert!(fetcher.is_err());
        let fetcher = ModuleFetcher::new(FetchConfig::new(dir.path().join("store"))).unwrap();
        let uri = format!("file://{}", module_path.display());
        let fetched = fetcher.fetch(&uri).await.unwrap();
        assert_eq!(&*fetched.bytes, b"\0asm\x01\0\0\0");
        assert_eq!(fetched.digest, store::sha256_digest(b"\0asm\x01\0\0\0"));
        assert!(fetched.path.starts_with(dir.path().join("store/sha256")));
        assert_eq!(fetched.source, uri);
        let err = fetcher
            .fetch(&format!("file://{}/not.wasm", dir.path().display()))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::NotWasm { .. }), "{err}");
        for target in [
            "file:///tmp/x.wasm",
            "https://example.com/x.wasm",
            "registry://h/r@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            let err = fetcher
                .push(b"\0asm\x01\0\0\0", target, BTreeMap::new())
                .await;
            assert!(
                matches!(err, Err(FetchError::InvalidUri { .. })),
                "{target}: {err:?}"
            );
        }
        let err = fetcher
            .fetch(&format!("file://{}/missing.wasm", dir.path().display()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.wasm") && err.contains("No such file"),
            "{err}"
        );
    }
}
