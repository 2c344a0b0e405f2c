//! default-labels, waPC build: the Kubewarden protocol via `kubewarden-policy-sdk`.
//!
//! A mutating policy: adds each configured label that is missing from
//! `metadata.labels`, never overwriting an existing one. Applies to any kind
//! that has metadata. The logic and the messages live in `policy-common`,
//! shared with the component build.

use kubewarden_policy_sdk::{
    accept_request, mutate_request, protocol_version_guest, reject_request,
    request::ValidationRequest, settings::Validatable, validate_settings,
};
use policy_common::labels;
use serde::Deserialize;
use wapc_guest::{CallResult, register_function};

/// The policy's metadata, read by hosts that understand Kubewarden's
/// `io.kubewarden.metadata` custom section.
#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "io.kubewarden.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

/// The settings: `{"labels": {"key": "value", ...}}`; unknown keys are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Settings(pub labels::Settings);

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        self.0.validate()
    }
}

/// Registers the waPC operations.
#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn validate(payload: &[u8]) -> CallResult {
    let validation_request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let mut object = validation_request.request.object;
    match labels::add_missing_labels(&mut object, &validation_request.settings.0.labels) {
        Ok(true) => mutate_request(object),
        Ok(false) => accept_request(),
        Err(message) => reject_request(Some(message), Some(400), None, None),
    }
}
