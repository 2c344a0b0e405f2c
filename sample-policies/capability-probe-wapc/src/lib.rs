//! capability-probe, waPC build: a test guest that calls one host capability
//! through `kubewarden-policy-sdk`'s own helpers, so that the tests exercise
//! the SDK's wire format for every capability, not a guess of it.
//!
//! Settings: `{"call": NAME, "arg": JSON}`. `validate` makes the call and
//! accepts with the answer (re-serialised by the SDK's types) as the
//! message, or rejects with the SDK's error text. Calls:
//!
//! | call | arg | SDK helper |
//! |---|---|---|
//! | `get_resource` | a `GetResourceRequest` | `kubernetes::get_resource::<Value>` |
//! | `list_namespaces` | a `ListAllResourcesRequest` | `kubernetes::list_all_resources::<Namespace>` |
//! | `list_configmaps` | a `ListResourcesByNamespaceRequest` | `kubernetes::list_resources_by_namespace::<ConfigMap>` |
//! | `count` | a `ListAllResourcesRequest` of Namespaces, RoleBindings or Ingresses | `list_all_resources`, typed; answers `{"items": N}` (the load benchmark's policy) |
//! | `manifest_digest`, `manifest`, `manifest_and_config` | an image | `oci::get_manifest_digest` / `get_manifest` / `get_manifest_and_config` |
//! | `verify_pub_keys` | `{"image", "keys"}` | `verification::verify_pub_keys_image` |
//! | `dns` | a host name | `net::lookup_host` |
//! | `certificate` | `{"cert", "chain", "not_after"}` (PEM text) | `crypto::verify_cert` |

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kubewarden_policy_sdk::host_capabilities::crypto::{
    BoolWithReason, Certificate, CertificateEncoding, verify_cert,
};
use kubewarden_policy_sdk::host_capabilities::kubernetes::{
    GetResourceRequest, ListAllResourcesRequest, ListResourcesByNamespaceRequest, get_resource,
    list_all_resources, list_resources_by_namespace,
};
use kubewarden_policy_sdk::host_capabilities::{net, oci, verification};
use kubewarden_policy_sdk::{
    protocol_version_guest, reject_request, request::ValidationRequest, settings::Validatable,
    validate_settings,
};
use serde::Deserialize;
use serde_json::{Value, json};
use wapc_guest::{CallResult, register_function};

#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "io.kubewarden.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

/// Which call to make, with which argument.
#[derive(Debug, Default, Deserialize)]
pub struct Settings {
    /// The call's name.
    #[serde(default)]
    pub call: String,
    /// Its argument.
    #[serde(default)]
    pub arg: Value,
}

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

fn pem(text: &Value) -> Certificate {
    Certificate {
        encoding: CertificateEncoding::Pem,
        data: text.as_str().unwrap_or_default().as_bytes().to_vec(),
    }
}

fn call(settings: &Settings) -> Result<Value, String> {
    let arg = settings.arg.clone();
    let image = || arg.as_str().unwrap_or_default().to_string();
    let err = |e: kubewarden_policy_sdk::error::Error| e.to_string();
    let json = |r: Result<Value, serde_json::Error>| r.map_err(|e| e.to_string());
    match settings.call.as_str() {
        "get_resource" => {
            let request: GetResourceRequest =
                serde_json::from_value(arg).map_err(|e| e.to_string())?;
            get_resource::<Value>(&request).map_err(err)
        }
        "list_namespaces" => {
            let request: ListAllResourcesRequest =
                serde_json::from_value(arg).map_err(|e| e.to_string())?;
            let list = list_all_resources::<Namespace>(&request).map_err(err)?;
            json(serde_json::to_value(list))
        }
        "list_configmaps" => {
            let request: ListResourcesByNamespaceRequest =
                serde_json::from_value(arg).map_err(|e| e.to_string())?;
            let list = list_resources_by_namespace::<ConfigMap>(&request).map_err(err)?;
            json(serde_json::to_value(list))
        }
        "count" => {
            let request: ListAllResourcesRequest =
                serde_json::from_value(arg).map_err(|e| e.to_string())?;
            let items = match request.kind.as_str() {
                "Namespace" => list_all_resources::<Namespace>(&request)
                    .map_err(err)?
                    .items
                    .len(),
                "RoleBinding" => list_all_resources::<RoleBinding>(&request)
                    .map_err(err)?
                    .items
                    .len(),
                "Ingress" => list_all_resources::<Ingress>(&request)
                    .map_err(err)?
                    .items
                    .len(),
                other => return Err(format!("count: unsupported kind {other:?}")),
            };
            Ok(json!({ "items": items }))
        }
        "manifest_digest" => json(serde_json::to_value(
            oci::get_manifest_digest(&image()).map_err(err)?,
        )),
        "manifest" => json(serde_json::to_value(
            oci::get_manifest(&image()).map_err(err)?,
        )),
        "manifest_and_config" => json(serde_json::to_value(
            oci::get_manifest_and_config(&image()).map_err(err)?,
        )),
        "verify_pub_keys" => {
            let keys = arg["keys"]
                .as_array()
                .map(|k| {
                    k.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let image = arg["image"].as_str().unwrap_or_default();
            let verdict = verification::verify_pub_keys_image(image, keys, None).map_err(err)?;
            Ok(json!({"is_trusted": verdict.is_trusted, "digest": verdict.digest}))
        }
        "dns" => json(serde_json::to_value(
            net::lookup_host(&image()).map_err(err)?,
        )),
        "certificate" => {
            let chain = arg["chain"].as_array().map(|c| c.iter().map(pem).collect());
            let not_after = arg["not_after"].as_str().map(str::to_string);
            Ok(
                match verify_cert(pem(&arg["cert"]), chain, not_after).map_err(err)? {
                    BoolWithReason::True => json!({"trusted": true}),
                    BoolWithReason::False(reason) => json!({"trusted": false, "reason": reason}),
                },
            )
        }
        other => Err(format!("unknown call {other:?}")),
    }
}

fn validate(payload: &[u8]) -> CallResult {
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    match call(&request.settings) {
        // `accept_request` carries no message: the answer is written directly.
        Ok(answer) => Ok(serde_json::to_vec(
            &json!({"accepted": true, "message": answer.to_string()}),
        )?),
        Err(message) => reject_request(Some(message), None, None, None),
    }
}
