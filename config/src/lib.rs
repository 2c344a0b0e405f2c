//! Configuration types shared by the Portcullis policy-server, which reads them,
//! and the controller, which writes them.
//!
//! - [`policies`]: `policies.yml`, the policy id → policy (or policy group) map
//!   in the Kubewarden format.
//! - [`sources`]: `sources.yml`, insecure registries and custom certificate
//!   authorities for module downloads, and where modules may come from
//!   ([`module_sources`]).
//!
//! Both files are accepted as YAML or JSON; unknown keys are ignored so that
//! a newer controller can write fields an older server does not know yet.

pub mod module_sources;
pub mod policies;
pub mod sources;

pub use module_sources::{
    ModuleLocation, ModuleSourceAllowList, ModuleSourcePattern, SourceScheme,
};
pub use policies::{
    ContextAwareResource, ExecutionMode, LenientPolicies, PoliciesConfig, PolicyConfig,
    PolicyEntry, PolicyGroupConfig, PolicyGroupMember, PolicyMode, content_digest,
};
pub use sources::{SourceAuthority, SourcesConfig};

/// Errors raised while reading a configuration document.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The document is neither valid YAML nor valid JSON of the expected shape.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// Which document (e.g. "policies file").
        what: &'static str,
        /// The parser's explanation.
        reason: String,
    },
    /// The document could not be read from disk.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that was read.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Parses YAML or JSON text into `T`.
///
/// JSON is tried first when the text looks like a JSON object, because
/// serde_yaml rejects some valid JSON (e.g. tabs used as indentation).
pub(crate) fn parse_document<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ConfigError> {
    let trimmed = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &bytes[i..])
        .unwrap_or_default();
    if trimmed.first() == Some(&b'{')
        && let Ok(value) = serde_json::from_slice(trimmed)
    {
        return Ok(value);
    }
    serde_yaml::from_slice(bytes).map_err(|e| ConfigError::Parse {
        what,
        reason: e.to_string(),
    })
}
