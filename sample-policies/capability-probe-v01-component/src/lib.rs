//! capability-probe, component build on the frozen `portcullis:policy@0.1.0`
//! contract: a test guest that shows 0.1 components keep calling the host.
//!
//! Settings: `{"call": NAME, "arg": JSON}`. Calls: `get`, `list`, `can_i`,
//! `manifest_digest`, `dns`, `certificate` (the 0.1 imports); the answer is
//! JSON text in the message, a capability error a rejection.

wit_bindgen::generate!({ path: "../../wit/v0.1", world: "policy" });

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

fn call(name: &str, arg: &Value) -> Result<Value, String> {
    let json_text = |t: String| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string());
    match name {
        "get" => json_text(
            kubernetes::get_resource(&kubernetes::GetResourceRequest {
                api_version: text(arg, "api_version"),
                kind: text(arg, "kind"),
                name: text(arg, "name"),
                namespace: option(arg, "namespace"),
                disable_cache: arg["disable_cache"].as_bool().unwrap_or(false),
            })
            .map_err(error)?,
        ),
        "list" => json_text(
            kubernetes::list_resources(&kubernetes::ListResourcesRequest {
                api_version: text(arg, "api_version"),
                kind: text(arg, "kind"),
                namespace: option(arg, "namespace"),
                label_selector: option(arg, "label_selector"),
                field_selector: option(arg, "field_selector"),
            })
            .map_err(error)?,
        ),
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
