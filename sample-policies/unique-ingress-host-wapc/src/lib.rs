//! unique-ingress-host, waPC build: a context-aware policy on
//! `kubewarden-policy-sdk`'s own host-capability helpers.
//!
//! Lists every Ingress of the cluster with the SDK's `list_all_resources`
//! (typed `k8s_openapi` Ingresses, trimmed by field masks to the names and
//! hosts) and rejects an Ingress that claims a host another one routes. The
//! logic and the messages live in `policy-common`, shared with the
//! component build.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::Ingress;
use kubewarden_policy_sdk::host_capabilities::kubernetes::{
    ListAllResourcesRequest, list_all_resources,
};
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use policy_common::ingress::{self, IngressLite};
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
pub struct Settings(pub ingress::Settings);

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
    let Ok(candidate) = serde_json::from_value::<IngressLite>(request.request.object.clone())
    else {
        return accept_request();
    };
    if candidate.hosts().is_empty() {
        return accept_request();
    }
    let masks: BTreeSet<String> = ingress::FIELD_MASKS.iter().map(|m| m.to_string()).collect();
    let ingresses = list_all_resources::<Ingress>(&ListAllResourcesRequest {
        api_version: "networking.k8s.io/v1".to_string(),
        kind: "Ingress".to_string(),
        label_selector: None,
        field_selector: None,
        field_masks: Some(masks),
    })?;
    // The typed objects go back to the shared logic's view of an Ingress.
    let existing: Vec<IngressLite> = ingresses
        .items
        .into_iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let namespace = request.request.namespace.as_str();
    match ingress::conflicts(&candidate, namespace, &existing) {
        Some(message) => reject_request(Some(message), Some(ingress::REJECTION_CODE), None, None),
        None => accept_request(),
    }
}
