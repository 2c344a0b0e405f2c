//! capability-probe, component build on `portcullis:policy@0.2.0`: a test
//! guest that calls one typed host import and answers what the host said.
//!
//! Settings: `{"call": NAME, "arg": JSON}`. `validate` makes the call and
//! accepts with the answer as JSON text in the message, or rejects with the
//! capability error. Calls: `get` / `list` (a request record as JSON, plus
//! `field_masks`), `count` (a list, parsed; answers `{"items": N}`: the load
//! benchmark's policy), `can_i`, `manifest_digest`, `manifest`,
//! `manifest_and_config`, `verify_pub_keys`, `dns`, `certificate`.

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use portcullis::policy::types::CapabilityError;
use portcullis::policy::{crypto, kubernetes, net, oci};
use serde_json::{Value, json};

struct Policy;

export!(Policy);

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

fn option(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_string)
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn error(e: CapabilityError) -> String {
    match e {
        CapabilityError::NotGranted(what) => format!("not granted: {what}"),
        CapabilityError::Failed(why) => format!("failed: {why}"),
    }
}

fn list(arg: &Value) -> Result<String, String> {
    kubernetes::list_resources_masked(
        &kubernetes::ListResourcesRequest {
            api_version: text(arg, "api_version"),
            kind: text(arg, "kind"),
            namespace: option(arg, "namespace"),
            label_selector: option(arg, "label_selector"),
            field_selector: option(arg, "field_selector"),
        },
        &strings(arg, "field_masks"),
    )
    .map_err(error)
}

fn call(name: &str, arg: &Value) -> Result<Value, String> {
    let json_text = |t: String| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string());
    match name {
        "get" => json_text(
            kubernetes::get_resource_masked(
                &kubernetes::GetResourceRequest {
                    api_version: text(arg, "api_version"),
                    kind: text(arg, "kind"),
                    name: text(arg, "name"),
                    namespace: option(arg, "namespace"),
                    disable_cache: arg["disable_cache"].as_bool().unwrap_or(false),
                },
                &strings(arg, "field_masks"),
            )
            .map_err(error)?,
        ),
        "list" => json_text(list(arg)?),
        "count" => {
            #[derive(serde::Deserialize)]
            struct List {
                items: Vec<Value>,
            }
            let list: List = serde_json::from_str(&list(arg)?).map_err(|e| e.to_string())?;
            Ok(json!({ "items": list.items.len() }))
        }
        "can_i" => {
            let answer = kubernetes::can_i(&kubernetes::CanIRequest {
                user: text(arg, "user"),
                groups: strings(arg, "groups"),
                verb: text(arg, "verb"),
                group: text(arg, "group"),
                resource: text(arg, "resource"),
                namespace: option(arg, "namespace"),
                disable_cache: false,
            })
            .map_err(error)?;
            Ok(json!({"allowed": answer.allowed, "reason": answer.reason}))
        }
        "manifest_digest" => Ok(json!(
            oci::manifest_digest(arg.as_str().unwrap_or_default()).map_err(error)?
        )),
        "manifest" => json_text(oci::manifest(arg.as_str().unwrap_or_default()).map_err(error)?),
        "manifest_and_config" => {
            let answer =
                oci::manifest_and_config(arg.as_str().unwrap_or_default()).map_err(error)?;
            Ok(
                json!({"manifest": json_text(answer.manifest)?, "digest": answer.digest,
                      "config": json_text(answer.config)?}),
            )
        }
        "verify_pub_keys" => {
            let verdict =
                oci::verify_signature(&oci::SignatureCheck::PubKeys(oci::PubKeySigners {
                    image: text(arg, "image"),
                    pub_keys: strings(arg, "keys"),
                    annotations: Vec::new(),
                }))
                .map_err(error)?;
            Ok(json!({"trusted": verdict.trusted, "digest": verdict.digest}))
        }
        "dns" => Ok(json!(
            net::lookup_host(arg.as_str().unwrap_or_default()).map_err(error)?
        )),
        "certificate" => {
            let verdict = crypto::is_certificate_trusted(&crypto::CertificateCheck {
                certificate: text(arg, "cert"),
                chain: strings(arg, "chain"),
                not_after: option(arg, "not_after"),
            })
            .map_err(error)?;
            Ok(json!({"trusted": verdict.trusted, "reason": verdict.reason}))
        }
        other => Err(format!("unknown call {other:?}")),
    }
}

impl Guest for Policy {
    fn validate_settings(_settings: String) -> Result<SettingsValidationResponse, String> {
        Ok(SettingsValidationResponse {
            valid: true,
            message: None,
        })
    }

    fn validate(request: ValidationRequest) -> Result<ValidationResponse, String> {
        let settings: Value = serde_json::from_str(&request.settings).map_err(|e| e.to_string())?;
        let (accepted, message) = match call(&text(&settings, "call"), &settings["arg"]) {
            Ok(answer) => (true, answer.to_string()),
            Err(message) => (false, message),
        };
        Ok(ValidationResponse {
            accepted,
            message: Some(message),
            code: None,
            mutated_object: None,
            warnings: Vec::new(),
            audit_annotations: Vec::new(),
        })
    }
}
