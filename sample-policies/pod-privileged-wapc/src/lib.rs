//! pod-privileged, waPC build: the Kubewarden protocol via `kubewarden-policy-sdk`.
//!
//! Rejects Pods that have a privileged container, init container or ephemeral
//! container. Requests for other kinds, and requests without an object, are
//! accepted. The logic and the messages live in `policy-common`, shared with
//! the component build.

use k8s_openapi::api::core::v1::{Pod, SecurityContext};
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use policy_common::privileged;
use serde::Deserialize;
use wapc_guest::{CallResult, register_function};

/// The policy's metadata, read by hosts that understand Kubewarden's
/// `io.kubewarden.metadata` custom section.
#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "io.kubewarden.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

/// The settings: `skip_init_containers`, `skip_ephemeral_containers` (both
/// default false); unknown keys are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Settings(pub privileged::Settings);

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

/// The rejection message for a Pod, or `None` to accept it.
pub fn pod_message(pod: &Pod, settings: &privileged::Settings) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    fn is_privileged(sc: Option<&SecurityContext>) -> bool {
        sc.and_then(|sc| sc.privileged).unwrap_or(false)
    }
    let containers = spec
        .containers
        .iter()
        .map(|c| (c.name.as_str(), is_privileged(c.security_context.as_ref())));
    let init_containers = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), is_privileged(c.security_context.as_ref())));
    let ephemeral_containers = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), is_privileged(c.security_context.as_ref())));
    privileged::findings(settings, containers, init_containers, ephemeral_containers).message()
}

fn validate(payload: &[u8]) -> CallResult {
    let validation_request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let request = &validation_request.request;
    if request.kind.kind != "Pod" || request.object.is_null() {
        return accept_request();
    }
    match serde_json::from_value::<Pod>(request.object.clone()) {
        Ok(pod) => match pod_message(&pod, &validation_request.settings.0) {
            Some(message) => reject_request(Some(message), privileged::REJECTION_CODE, None, None),
            None => accept_request(),
        },
        // Like Kubewarden's pod-privileged policy: an object we cannot read as
        // a Pod is not ours to judge.
        Err(_) => accept_request(),
    }
}
