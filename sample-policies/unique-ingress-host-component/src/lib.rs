//! unique-ingress-host, component build: the `portcullis:policy@0.2.0` world.
//!
//! Lists every Ingress with the typed `kubernetes.list-resources-masked`
//! import (trimmed by field masks to the names and hosts) and rejects an
//! Ingress that claims a host another one routes. The logic and the messages
//! live in `policy-common`, shared with the waPC build.

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use policy_common::ingress::{self, IngressList, IngressLite};
use portcullis::policy::kubernetes::{self, ListResourcesRequest};

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

fn parse_settings(settings: &str) -> Result<ingress::Settings, String> {
    serde_json::from_str(settings).map_err(|e| format!("invalid settings: {e}"))
}

fn capability_error(e: portcullis::policy::types::CapabilityError) -> String {
    match e {
        portcullis::policy::types::CapabilityError::NotGranted(what) => {
            format!("host capability not granted: {what}")
        }
        portcullis::policy::types::CapabilityError::Failed(why) => why,
    }
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
        let Some(candidate) = request
            .object
            .as_deref()
            .and_then(|o| serde_json::from_str::<IngressLite>(o).ok())
        else {
            return Ok(respond(true, None, None));
        };
        if candidate.hosts().is_empty() {
            return Ok(respond(true, None, None));
        }
        let masks: Vec<String> = ingress::FIELD_MASKS.iter().map(|m| m.to_string()).collect();
        let list = kubernetes::list_resources_masked(
            &ListResourcesRequest {
                api_version: "networking.k8s.io/v1".to_string(),
                kind: "Ingress".to_string(),
                namespace: None,
                label_selector: None,
                field_selector: None,
            },
            &masks,
        )
        .map_err(capability_error)?;
        let existing: IngressList =
            serde_json::from_str(&list).map_err(|e| format!("unexpected Ingress list: {e}"))?;
        let namespace = request.namespace.as_deref().unwrap_or_default();
        Ok(
            match ingress::conflicts(&candidate, namespace, &existing.items) {
                Some(message) => respond(false, Some(message), Some(ingress::REJECTION_CODE)),
                None => respond(true, None, None),
            },
        )
    }
}
