//! {{name}}: a Kubewarden waPC policy (kubewarden-policy-sdk), run by
//! Portcullis and by Kubewarden alike. Rejects objects that carry a label
//! listed in `denied_labels`.

use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;
use serde_json::Value;
use wapc_guest::{CallResult, register_function};

/// The settings; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Labels an object may not carry.
    pub denied_labels: Vec<String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
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

/// The denied labels `object` carries, in the order of the settings.
pub fn denied_labels(object: &Value, settings: &Settings) -> Vec<String> {
    let labels = &object["metadata"]["labels"];
    settings
        .denied_labels
        .iter()
        .filter(|label| labels.get(label.as_str()).is_some())
        .cloned()
        .collect()
}

fn validate(payload: &[u8]) -> CallResult {
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let denied = denied_labels(&request.request.object, &request.settings);
    if denied.is_empty() {
        accept_request()
    } else {
        let message = format!("these labels are not allowed: {}", denied.join(", "));
        reject_request(Some(message), None, None, None)
    }
}
