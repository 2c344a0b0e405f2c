//! Per-host certificate authorities from `sources.yml`.
//!
//! `portcullis_config::SourcesConfig` only describes where the certificates
//! are; reading and decoding them happens here so that a missing or broken CA
//! file is reported as a fetch error for the host that needs it, at the time
//! it is needed (and a rotated file is picked up by the next client build).

use std::path::Path;

use base64::Engine as _;
use portcullis_config::{SourceAuthority, SourcesConfig};

use super::FetchError;

/// One decoded root certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootCert {
    /// A single PEM `CERTIFICATE` block.
    Pem(Vec<u8>),
    /// Raw DER.
    Der(Vec<u8>),
}

impl RootCert {
    pub(crate) fn to_oci(&self) -> oci_client::client::Certificate {
        use oci_client::client::{Certificate, CertificateEncoding};
        match self {
            RootCert::Pem(data) => Certificate {
                encoding: CertificateEncoding::Pem,
                data: data.clone(),
            },
            RootCert::Der(data) => Certificate {
                encoding: CertificateEncoding::Der,
                data: data.clone(),
            },
        }
    }

    pub(crate) fn to_reqwest(&self) -> Result<reqwest_oci::Certificate, reqwest_oci::Error> {
        match self {
            RootCert::Pem(data) => reqwest_oci::Certificate::from_pem(data),
            RootCert::Der(data) => reqwest_oci::Certificate::from_der(data),
        }
    }
}

/// Loads the roots configured for `host` (`host[:port]`, as written in the URI).
pub(crate) fn roots_for(sources: &SourcesConfig, host: &str) -> Result<Vec<RootCert>, FetchError> {
    let Some(authorities) = sources.source_authorities.get(host) else {
        return Ok(Vec::new());
    };
    let mut roots = Vec::new();
    for authority in authorities {
        let (origin, decoded) = match authority {
            SourceAuthority::Path { path } => (path.display().to_string(), read_file(path)?),
            SourceAuthority::Data { data } => ("inline data".to_owned(), decode_text(data)),
        };
        roots.extend(decoded.map_err(|reason| FetchError::Config {
            what: format!("certificate authority for source {host} ({origin})"),
            reason,
        })?);
    }
    Ok(roots)
}

fn read_file(path: &Path) -> Result<Result<Vec<RootCert>, String>, FetchError> {
    let bytes = std::fs::read(path).map_err(|e| FetchError::Config {
        what: format!("certificate authority file {}", path.display()),
        reason: e.to_string(),
    })?;
    Ok(match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => split_pem(text),
        _ => der(bytes),
    })
}

/// Inline data is PEM text, or base64 DER because raw DER cannot live in YAML.
fn decode_text(text: &str) -> Result<Vec<RootCert>, String> {
    if text.contains("-----BEGIN") {
        return split_pem(text);
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("neither PEM nor base64-encoded DER ({e})"))?;
    der(bytes)
}

fn der(bytes: Vec<u8>) -> Result<Vec<RootCert>, String> {
    // Every X.509 certificate is a DER SEQUENCE; checking the tag turns a
    // "wrong file" mistake into a clear message instead of a TLS error later.
    if bytes.first() != Some(&0x30) || bytes.len() < 16 {
        return Err("not PEM and not a DER certificate".to_owned());
    }
    Ok(vec![RootCert::Der(bytes)])
}

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// Splits a PEM bundle into single blocks: reqwest's `from_pem` and
/// oci-client only take the first certificate of a buffer.
fn split_pem(text: &str) -> Result<Vec<RootCert>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PEM_BEGIN) {
        let after = &rest[start..];
        let Some(end) = after.find(PEM_END) else {
            return Err("PEM certificate block without an END line".to_owned());
        };
        let block_end = end + PEM_END.len();
        // YAML block scalars can leave indentation inside the block.
        let block = after[..block_end]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        out.push(RootCert::Pem(format!("{block}\n").into_bytes()));
        rest = &after[block_end..];
    }
    if out.is_empty() {
        return Err("PEM text without a CERTIFICATE block".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn sources(host: &str, authorities: Vec<SourceAuthority>) -> SourcesConfig {
        SourcesConfig {
            source_authorities: BTreeMap::from([(host.to_owned(), authorities)]),
            ..Default::default()
        }
    }

    #[test]
    fn pem_bundle_der_file_and_base64_der() {
        let dir = tempfile::tempdir().unwrap();
        let der_bytes: Vec<u8> = [0x30, 0x82, 0x01, 0x0a]
            .into_iter()
            .chain([7u8; 20])
            .collect();
        let der_path = dir.path().join("ca.der");
        std::fs::write(&der_path, &der_bytes).unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("{PEM}junk\n{PEM}")).unwrap();
        let cfg = sources(
            "h:1",
            vec![
                SourceAuthority::Path { path: der_path },
                SourceAuthority::Path { path: bundle },
                SourceAuthority::Data {
                    data: format!("    {}", PEM.replace('\n', "\n    ")),
                },
                SourceAuthority::Data {
                    data: base64::engine::general_purpose::STANDARD.encode(&der_bytes),
                },
            ],
        );
        let roots = roots_for(&cfg, "h:1").unwrap();
        let pem = RootCert::Pem(PEM.as_bytes().to_vec());
        assert_eq!(
            roots,
            vec![
                RootCert::Der(der_bytes.clone()),
                pem.clone(),
                pem.clone(),
                pem,
                RootCert::Der(der_bytes)
            ]
        );
        assert!(roots_for(&cfg, "h").unwrap().is_empty());
    }

    #[test]
    fn bad_authorities_name_the_host() {
        let cfg = sources(
            "reg:5000",
            vec![SourceAuthority::Data {
                data: "not a cert".to_owned(),
            }],
        );
        let err = roots_for(&cfg, "reg:5000").unwrap_err().to_string();
        assert!(err.contains("reg:5000"), "{err}");
        let cfg = sources(
            "reg",
            vec![SourceAuthority::Path {
                path: "/nonexistent/ca.pem".into(),
            }],
        );
        let err = roots_for(&cfg, "reg").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
