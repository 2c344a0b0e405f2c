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

#[cfg(test)]
pub(crate) mod test_support {
    use super::ValidationRequest;
    use super::portcullis::policy::types::{
        AdmissionRequest, GroupVersionKind, GroupVersionResource, Operation, UserInfo,
    };

    /// A CREATE request for `kind` with `object` (JSON text) and `settings`.
    pub fn request(kind: &str, object: Option<&str>, settings: &str) -> ValidationRequest {
        ValidationRequest {
            request: AdmissionRequest {
                uid: "uid".into(),
                kind: GroupVersionKind {
                    group: String::new(),
                    version: "v1".into(),
                    kind: kind.into(),
                },
                resource: GroupVersionResource {
                    group: String::new(),
                    version: "v1".into(),
                    resource: format!("{}s", kind.to_lowercase()),
                },
                sub_resource: None,
                request_kind: None,
                request_resource: None,
                request_sub_resource: None,
                name: "x".into(),
                namespace: Some("default".into()),
                operation: Operation::Create,
                user_info: UserInfo {
                    username: "u".into(),
                    uid: String::new(),
                    groups: vec![],
                    extra: vec![],
                },
                object: object.map(str::to_string),
                old_object: None,
                options: None,
                dry_run: false,
            },
            settings: settings.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::request;
    use super::*;

    const SETTINGS: &str = r#"{"labels":{"team":"platform","env":"prod"}}"#;

    #[test]
    fn adds_missing_labels_only() {
        let pod = r#"{"kind":"Pod","metadata":{"name":"p","labels":{"team":"payments"}}}"#;
        let r = Policy::validate(request("Pod", Some(pod), SETTINGS)).unwrap();
        assert!(r.accepted);
        let o: serde_json::Value = serde_json::from_str(&r.mutated_object.unwrap()).unwrap();
        assert_eq!(
            o["metadata"]["labels"],
            serde_json::json!({"team": "payments", "env": "prod"})
        );

        let full = r#"{"kind":"Pod","metadata":{"labels":{"team":"a","env":"b"}}}"#;
        let r = Policy::validate(request("Pod", Some(full), SETTINGS)).unwrap();
        assert!(r.accepted && r.mutated_object.is_none());
    }

    #[test]
    fn any_kind_with_metadata() {
        let cm = r#"{"kind":"ConfigMap","metadata":{"name":"c"}}"#;
        let r = Policy::validate(request("ConfigMap", Some(cm), SETTINGS)).unwrap();
        assert!(r.mutated_object.unwrap().contains(r#""team":"platform""#));
        assert!(
            Policy::validate(request("Pod", None, SETTINGS))
                .unwrap()
                .mutated_object
                .is_none()
        );
        let bad = r#"{"metadata":{"labels":[]}}"#;
        let r = Policy::validate(request("Pod", Some(bad), SETTINGS)).unwrap();
        assert!(!r.accepted);
        assert_eq!(r.code, Some(400));
    }

    #[test]
    fn settings() {
        assert!(Policy::validate_settings(SETTINGS.into()).unwrap().valid);
        let bad = Policy::validate_settings(r#"{"labels":{"a b":"c"}}"#.into()).unwrap();
        assert!(!bad.valid);
        assert!(
            bad.message
                .unwrap()
                .starts_with("invalid label key \"a b\"")
        );
        assert!(
            !Policy::validate_settings(r#"{"label":{}}"#.into())
                .unwrap()
                .valid
        );
    }
}
