//! pod-privileged, component build: the `portcullis:policy/policy` world.
//!
//! Rejects Pods that have a privileged container, init container or ephemeral
//! container. Requests for other kinds, and requests without an object, are
//! accepted. The logic and the messages live in `policy-common`, shared with
//! the waPC build, so both builds answer alike.

// Built against the frozen 0.1 contract on purpose: the test suite runs it
// to show that 0.1 components keep working on the current host.
wit_bindgen::generate!({ path: "../../wit/v0.1", world: "policy" });

use policy_common::privileged;

/// The policy's metadata, in the shape of Kubewarden's `io.kubewarden.metadata`
/// (the host finds the section inside the component's core module).
#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "portcullis.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

struct Policy;

export!(Policy);

fn respond(accepted: bool, message: Option<String>, code: Option<u16>) -> ValidationResponse {
    ValidationResponse {
        accepted,
        message,
        code,
        mutated_object: None,
        warnings: Vec::new(),
        audit_annotations: Vec::new(),
    }
}

/// Parses the settings JSON text; unknown keys are an error.
fn parse_settings(settings: &str) -> Result<privileged::Settings, String> {
    serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))
}

impl Guest for Policy {
    fn validate_settings(settings: String) -> Result<SettingsValidationResponse, String> {
        Ok(match parse_settings(&settings) {
            Ok(_) => SettingsValidationResponse {
                valid: true,
                message: None,
            },
            Err(message) => SettingsValidationResponse {
                valid: false,
                message: Some(message),
            },
        })
    }

    fn validate(request: ValidationRequest) -> Result<ValidationResponse, String> {
        let settings = parse_settings(&request.settings)?;
        let request = request.request;
        let Some(object) = request.object.filter(|_| request.kind.kind == "Pod") else {
            return Ok(respond(true, None, None));
        };
        // Like the waPC build: an object we cannot read as a Pod is not ours to judge.
        let Ok(pod) = serde_json::from_str::<privileged::PodLite>(&object) else {
            return Ok(respond(true, None, None));
        };
        Ok(match pod.findings(&settings).message() {
            Some(message) => respond(false, Some(message), privileged::REJECTION_CODE),
            None => respond(true, None, None),
        })
    }
}
