//! TLS material of the HTTPS listener: loading, validating and hot-swapping.
//!
//! The listener reads the current `Arc<rustls::ServerConfig>` for every new
//! connection, so a swap takes effect for the next handshake while open
//! connections finish on the old one. The certificate is swapped only when
//! the new certificate and key parse and belong together; the client CA
//! bundle is swapped independently.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// TLS errors; each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and key do not form a usable pair.
    #[error("certificate {cert} and key {key} do not match: {reason}")]
    KeyMismatch {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// rustls' explanation.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundles; when non-empty, clients must present a certificate
    /// signed by one of them (mTLS).
    pub client_cas: Vec<PathBuf>,
}

impl TlsFiles {
    /// Every file to watch for changes.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.client_cas.iter().cloned());
        paths
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and key and checks that they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        path: key.to_path_buf(),
        reason: format!("no usable PEM private key: {e}"),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::File {
            path: key.to_path_buf(),
            reason: format!("unsupported private key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| TlsError::KeyMismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(certified))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            reason: format!("cannot read PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Builds the client-certificate verifier from CA bundles; `None` when no
/// bundle is configured (no client authentication).
pub fn load_client_verifier(
    cas: &[PathBuf],
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    if cas.is_empty() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    for path in cas {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::File {
                path: path.clone(),
                reason: format!("invalid CA certificate: {e}"),
            })?;
        }
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Some(verifier))
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn build_server_config(
    cert: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(FixedCert(cert)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct Material {
    cert: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    // Verifiers cannot be compared, so CA changes are detected on the bytes.
    ca_digest: String,
}

fn client_ca_digest(cas: &[PathBuf]) -> String {
    let bytes: Vec<u8> = cas
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap_or_default())
        .collect();
    portcullis_config::content_digest(&bytes)
}

/// The live TLS configuration of the HTTPS listener.
pub struct ReloadableTls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    material: Mutex<Material>,
}

/// What a [`ReloadableTls::reload`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlsReloadOutcome {
    /// The certificate and key were replaced.
    pub cert_changed: bool,
    /// The client CA bundle was replaced.
    pub client_ca_changed: bool,
}

impl ReloadableTls {
    /// Loads the TLS material; any error is fatal at startup.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let ca_digest = client_ca_digest(&files.client_cas);
        let cert = load_certified_key(&files.cert, &files.key)?;
        let verifier = load_client_verifier(&files.client_cas)?;
        let config = build_server_config(Arc::clone(&cert), verifier.clone())?;
        Ok(Self {
            files,
            current: ArcSwap::new(config),
            material: Mutex::new(Material {
                cert,
                verifier,
                ca_digest,
            }),
        })
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the files. The certificate is replaced only when the new
    /// certificate and key parse and match (a half-written rotation keeps the
    /// old pair); the CA bundle only when it parses. Errors are returned for
    /// logging; whatever could be loaded is still applied.
    pub fn reload(&self) -> (TlsReloadOutcome, Vec<TlsError>) {
        let mut outcome = TlsReloadOutcome::default();
        let mut errors = Vec::new();
        let mut material = self
            .material
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match load_certified_key(&self.files.cert, &self.files.key) {
            Ok(cert) if cert.cert != material.cert.cert => {
                material.cert = cert;
                outcome.cert_changed = true;
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
        let ca_digest = client_ca_digest(&self.files.client_cas);
        if ca_digest != material.ca_digest {
            match load_client_verifier(&self.files.client_cas) {
                Ok(verifier) => {
                    material.verifier = verifier;
                    material.ca_digest = ca_digest;
                    outcome.client_ca_changed = true;
                }
                Err(e) => errors.push(e),
            }
        }
        if outcome.cert_changed || outcome.client_ca_changed {
            match build_server_config(Arc::clone(&material.cert), material.verifier.clone()) {
                Ok(config) => self.current.store(config),
                Err(e) => errors.push(e),
            }
        }
        (outcome, errors)
    }
}
