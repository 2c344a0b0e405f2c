//! default-labels, component build: the `portcullis:policy/policy` world.
//!
//! A mutating policy: adds each configured label that is missing from
//! `metadata.labels`, never overwriting an existing one, and answers with the
//! whole object as `mutated-object`. Applies to any kind that has metadata.
//! The logic and the messages live in `policy-common`, shared with the waPC
//! build, so both builds answer alike.

// Built against the frozen 0.1 contract on purpose: the test suite runs it
// to show that 0.1 components keep working on the current host.
wit_bindgen::generate!({ path: "../../wit/v0.1", world: "policy" });

use policy_common::labels;

/// The policy's metadata, in the shape of Kubewarden's `io.kubewarden.metadata`
/// (the host finds the section inside the component's core module).
#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "portcullis.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

struct Policy;

export!(Policy);

fn respond(
    accepted: bool,
    message: Option<String>,
    code: Option<u16>,
    mutated_object: Option<String>,
) -> ValidationResponse {
    ValidationResponse {
        accepted,
        message,
        code,
        mutated_object,
        warnings: Vec::new(),
        audit_annotations: Vec::new(),
    }
}

/// Parses the settings JSON text; unknown keys are an error.
fn parse_settings(settings: &str) -> Result<labels::Settings, String> {
    serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))
}

impl Guest for Policy {
    fn validate_settings(settings: String) -> Result<SettingsValidationResponse, String> {
        let verdict = parse_settings(&settings).and_then(|s| s.validate());
        Ok(match verdict {
            Ok(()) => SettingsValidationResponse {
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
        let Some(object) = request.request.object else {
            return Ok(respond(true, None, None, None));
        };
        let mut object: serde_json::Value =
            serde_json::from_str(&object).map_err(|e| format!("object is not JSON: {e}"))?;
        Ok(
            match labels::add_missing_labels(&mut object, &settings.labels) {
                Ok(true) => respond(true, None, None, Some(object.to_string())),
                Ok(false) => respond(true, None, None, None),
                Err(message) => respond(false, Some(message), Some(400), None),
            },
        )
    }
}
