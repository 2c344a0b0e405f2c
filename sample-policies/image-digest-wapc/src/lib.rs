//! image-digest, waPC build: a registry look-up through
//! `kubewarden-policy-sdk`'s own `get_manifest_digest` helper.
//!
//! Pins every container image of a Pod to the digest its tag has in the
//! registry (a mutation), and rejects a Pod whose image cannot be resolved.
//! The logic and the messages live in `policy-common`, shared with the
//! component build.

use kubewarden_policy_sdk::host_capabilities::oci::get_manifest_digest;
use kubewarden_policy_sdk::{
    accept_request, mutate_request, protocol_version_guest, reject_request,
    request::ValidationRequest, settings::Validatable, validate_settings,
};
use policy_common::digest;
use serde::Deserialize;
use wapc_guest::{CallResult, register_function};

#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "io.kubewarden.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

/// No settings.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Settings(pub digest::Settings);

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

fn validate(payload: &[u8]) -> CallResult {
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    if request.request.kind.kind != "Pod" {
        return accept_request();
    }
    let mut pod = request.request.object;
    let pinned = digest::pin_images(&mut pod, |image| {
        get_manifest_digest(image)
            .map(|answer| answer.digest)
            .map_err(|e| e.to_string())
    });
    match pinned {
        Ok(true) => mutate_request(pod),
        Ok(false) => accept_request(),
        Err(message) => reject_request(Some(message), Some(digest::REJECTION_CODE), None, None),
    }
}
