//! image-digest, component build: the `portcullis:policy@0.2.0` world.
//!
//! Pins every container image of a Pod to the digest its tag has in the
//! registry, looked up with the typed `oci.manifest-digest` import, and
//! rejects a Pod whose image cannot be resolved. The logic and the messages
//! live in `policy-common`, shared with the waPC build.

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use policy_common::digest;
use portcullis::policy::oci;

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

fn parse_settings(settings: &str) -> Result<digest::Settings, String> {
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
        parse_settings(&request.settings)?;
        let request = request.request;
        let Some(object) = request.object.filter(|_| request.kind.kind == "Pod") else {
            return Ok(respond(true, None, None, None));
        };
        let mut pod: serde_json::Value =
            serde_json::from_str(&object).map_err(|e| format!("the Pod is not JSON: {e}"))?;
        let pinned = digest::pin_images(&mut pod, |image| {
            oci::manifest_digest(image).map_err(|e| match e {
                portcullis::policy::types::CapabilityError::NotGranted(what) => {
                    format!("host capability not granted: {what}")
                }
                portcullis::policy::types::CapabilityError::Failed(why) => why,
            })
        });
        Ok(match pinned {
            Ok(true) => respond(true, None, None, Some(pod.to_string())),
            Ok(false) => respond(true, None, None, None),
            Err(message) => respond(false, Some(message), Some(digest::REJECTION_CODE), None),
        })
    }
}
