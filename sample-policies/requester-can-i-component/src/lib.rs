//! requester-can-i, component build: the `portcullis:policy@0.2.0` world.
//!
//! Asks the API server, with the typed `kubernetes.can-i` import, whether the
//! requesting user may perform the configured action in the request's
//! namespace, and rejects the request (403) if not. The logic and the
//! messages live in `policy-common`, shared with the waPC build.

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use policy_common::access;
use portcullis::policy::kubernetes::{self, CanIRequest};

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

fn parse_settings(settings: &str) -> Result<access::Settings, String> {
    let settings: access::Settings =
        serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))?;
    settings.validate()?;
    Ok(settings)
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
        let user = request.user_info;
        let mut groups = user.groups;
        groups.sort();
        let namespace = request.namespace.filter(|ns| !ns.is_empty());
        let answer = kubernetes::can_i(&CanIRequest {
            user: user.username.clone(),
            groups,
            verb: settings.verb.clone(),
            group: settings.group.clone(),
            resource: settings.resource.clone(),
            namespace: namespace.clone(),
            disable_cache: false,
        })
        .map_err(|e| match e {
            portcullis::policy::types::CapabilityError::NotGranted(what) => {
                format!("host capability not granted: {what}")
            }
            portcullis::policy::types::CapabilityError::Failed(why) => why,
        })?;
        Ok(if answer.allowed {
            respond(true, None, None)
        } else {
            let message = settings.denied(
                &user.username,
                namespace.as_deref(),
                answer.reason.as_deref(),
            );
            respond(false, Some(message), Some(access::REJECTION_CODE))
        })
    }
}
