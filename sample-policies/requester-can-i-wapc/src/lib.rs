//! requester-can-i, waPC build: a context-aware policy on
//! `kubewarden-policy-sdk`'s own `can_i` helper.
//!
//! Asks the API server, by a SubjectAccessReview, whether the requesting user
//! may perform the configured action in the request's namespace, and rejects
//! the request (403) if not. The logic and the messages live in
//! `policy-common`, shared with the component build.

use kubewarden_policy_sdk::host_capabilities::kubernetes::{
    CanIRequest, ResourceAttributes, SubjectAccessReview, can_i,
};
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use policy_common::access;
use serde::Deserialize;
use wapc_guest::{CallResult, register_function};

#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "io.kubewarden.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

/// `{"verb": ..., "group": ..., "resource": ...}`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Settings(pub access::Settings);

impl Default for Settings {
    fn default() -> Self {
        Self(access::Settings {
            verb: String::new(),
            group: String::new(),
            resource: String::new(),
        })
    }
}

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
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let settings = &request.settings.0;
    let user = &request.request.user_info;
    // Sorted: the groups arrive as a set, and a recorded session replays
    // only requests that are exactly the same.
    let mut groups: Vec<String> = user.groups.iter().cloned().collect();
    groups.sort();
    let namespace = Some(request.request.namespace.clone()).filter(|ns| !ns.is_empty());
    let status = can_i(CanIRequest {
        subject_access_review: SubjectAccessReview {
            groups: Some(groups),
            resource_attributes: ResourceAttributes {
                group: Some(settings.group.clone()),
                name: None,
                namespace: namespace.clone(),
                resource: settings.resource.clone(),
                subresource: None,
                verb: settings.verb.clone(),
                version: None,
            },
            user: user.username.clone(),
        },
        disable_cache: false,
    })?;
    if status.allowed {
        accept_request()
    } else {
        let message = settings.denied(
            &user.username,
            namespace.as_deref(),
            status.reason.as_deref(),
        );
        reject_request(Some(message), Some(access::REJECTION_CODE), None, None)
    }
}
