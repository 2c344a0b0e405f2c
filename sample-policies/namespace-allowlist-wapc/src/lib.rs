//! namespace-allowlist, waPC build: the Kubewarden protocol via
//! `kubewarden-policy-sdk`.
//!
//! Admits a request whose `namespace` is one of `settings.namespaces`, and
//! rejects every other one, cluster-scoped requests included. A building
//! block for policy groups ("privileged Pods only in `trusted`").

use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;
use wapc_guest::{CallResult, register_function};

/// The policy's metadata, read by hosts that understand Kubewarden's
/// `io.kubewarden.metadata` custom section.
#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "io.kubewarden.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

/// The settings: `{"namespaces": ["a", "b"]}`; unknown keys are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The namespaces whose requests are admitted.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.namespaces.iter().any(String::is_empty) {
            return Err("namespaces must not contain an empty name".to_string());
        }
        Ok(())
    }
}

/// Registers the waPC operations.
#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

/// The rejection message for a request in `namespace`, or `None` to admit it.
pub fn namespace_message(namespace: &str, settings: &Settings) -> Option<String> {
    if settings
        .namespaces
        .iter()
        .any(|allowed| allowed == namespace)
    {
        return None;
    }
    let place = if namespace.is_empty() {
        "a cluster-scoped request".to_string()
    } else {
        format!("namespace {namespace}")
    };
    Some(format!(
        "{place} is not one of the allowed namespaces ({})",
        settings.namespaces.join(", ")
    ))
}

fn validate(payload: &[u8]) -> CallResult {
    let validation_request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let namespace = validation_request.request.namespace.as_str();
    match namespace_message(namespace, &validation_request.settings) {
        Some(message) => reject_request(Some(message), Some(403), None, None),
        None => accept_request(),
    }
}
