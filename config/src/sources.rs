//! `sources.yml`: registries that may be reached without TLS verification and
//! custom certificate authorities per registry (Kubewarden format), and the
//! Portcullis extension `allowed_module_sources` ([`crate::module_sources`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::module_sources::ModuleSourceAllowList;
use crate::{ConfigError, parse_document};

/// The contents of `sources.yml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesConfig {
    /// `host[:port]` entries that may be reached over plain HTTP or with an
    /// unverified certificate.
    #[serde(default)]
    pub insecure_sources: Vec<String>,
    /// Extra certificate authorities trusted for a `host[:port]`.
    #[serde(default)]
    pub source_authorities: BTreeMap<String, Vec<SourceAuthority>>,
    /// Where policy modules may come from (URI prefixes, see
    /// [`crate::module_sources`]). Absent: anywhere; empty: nowhere.
    /// A Portcullis extension; the controller copies a PolicyServer's
    /// `spec.allowedModuleSources` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_module_sources: Option<Vec<String>>,
}

/// One certificate authority, given inline or by path; PEM or DER.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SourceAuthority {
    /// A certificate read from a file.
    Path {
        /// The certificate file.
        path: PathBuf,
    },
    /// A certificate given inline (PEM text).
    Data {
        /// The certificate.
        data: String,
    },
}

impl SourcesConfig {
    /// Parses `sources.yml` contents (YAML or JSON).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ConfigError> {
        // An empty file is a valid "no sources" document, as with upstream.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let sources: Self = parse_document("sources file", bytes)?;
        // A bad pattern fails the whole file, like any other syntax error:
        // silently dropping an allow-list entry would change what is allowed.
        sources.allow_list()?;
        Ok(sources)
    }

    /// The parsed `allowed_module_sources`; `None` when absent (everything
    /// is allowed).
    pub fn allow_list(&self) -> Result<Option<ModuleSourceAllowList>, ConfigError> {
        self.allowed_module_sources
            .as_deref()
            .map(ModuleSourceAllowList::parse)
            .transpose()
            .map_err(|reason| ConfigError::Parse {
                what: "sources file",
                reason,
            })
    }

    /// Reads and parses a `sources.yml` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_slice(&bytes)
    }

    /// Whether `host[:port]` is listed as insecure.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure_sources.iter().any(|h| h == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_example() {
        let yaml = r#"
insecure_sources:
  - "registry.local:5000"
source_authorities:
  "registry.corp:443":
    - type: Path
      path: /etc/ca.pem
    - type: Data
      data: |
        -----BEGIN CERTIFICATE-----
        abc
        -----END CERTIFICATE-----
"#;
        let sources = SourcesConfig::from_slice(yaml.as_bytes()).unwrap();
        assert!(sources.is_insecure("registry.local:5000"));
        assert!(!sources.is_insecure("registry.corp:443"));
        let authorities = &sources.source_authorities["registry.corp:443"];
        assert_eq!(
            authorities[0],
            SourceAuthority::Path {
                path: "/etc/ca.pem".into()
            }
        );
        assert!(
            matches!(&authorities[1], SourceAuthority::Data { data } if data.contains("BEGIN"))
        );
    }

    #[test]
    fn empty_file_is_empty_config() {
        assert_eq!(
            SourcesConfig::from_slice(b"\n").unwrap(),
            SourcesConfig::default()
        );
    }

    #[test]
    fn allowed_module_sources_are_parsed_and_checked() {
        let sources = SourcesConfig::from_slice(
            b"allowed_module_sources:\n  - registry://ghcr.io/acme/\n  - https://policies.example.com/\n",
        )
        .unwrap();
        assert_eq!(sources.allow_list().unwrap().unwrap().patterns().len(), 2);
        assert!(SourcesConfig::default().allow_list().unwrap().is_none());
        let err = SourcesConfig::from_slice(b"allowed_module_sources: [\"ghcr.io/acme\"]")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sources file") && err.contains("allowed_module_sources[0]"),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_authority_type() {
        let err =
            SourcesConfig::from_slice(b"source_authorities: {a: [{type: Nope}]}").unwrap_err();
        assert!(err.to_string().contains("sources file"), "{err}");
    }
}
