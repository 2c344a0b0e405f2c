//! A test-only component that misbehaves on purpose, to exercise the host's
//! limits, on the `portcullis:policy/policy` world.
//!
//! The behaviour comes from `settings.behaviour`: `accept` (default), `loop`,
//! `memory-bomb`, `trap`, `counter`, `garbage`, `sleep`, `log-flood`,
//! `stdio-flood`, `huge-message`, `proc-exit`, `stack-overflow` (see the README).

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use policy_common::adversarial::{self, Behaviour};

#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "portcullis.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

struct Policy;

export!(Policy);

fn accept(message: Option<String>, mutated_object: Option<String>) -> ValidationResponse {
    ValidationResponse {
        accepted: true,
        message,
        code: None,
        mutated_object,
        warnings: Vec::new(),
        audit_annotations: Vec::new(),
    }
}

/// Logs forever through the world's `host.log`.
fn flood_log() -> ! {
    let mut n: u64 = 0;
    loop {
        portcullis::policy::host::log(
            portcullis::policy::host::LogLevel::Info,
            &adversarial::flood_line(n),
        );
        n = n.wrapping_add(1);
    }
}

impl Guest for Policy {
    fn validate_settings(settings: String) -> Result<SettingsValidationResponse, String> {
        Ok(match adversarial::parse_settings(settings.as_bytes()) {
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
        Ok(
            match adversarial::parse_settings(request.settings.as_bytes())? {
                Behaviour::Accept => accept(None, None),
                Behaviour::Loop => {
                    adversarial::spin_forever();
                    accept(None, None)
                }
                Behaviour::MemoryBomb => {
                    adversarial::hoard_memory_forever();
                    accept(None, None)
                }
                Behaviour::Trap => adversarial::trap(),
                Behaviour::Counter => accept(Some(adversarial::count().to_string()), None),
                // Valid UTF-8 (the WIT string type needs it), but not JSON.
                Behaviour::Garbage => accept(None, Some("\u{0}not json {".to_string())),
                Behaviour::Sleep => {
                    adversarial::sleep();
                    accept(None, None)
                }
                Behaviour::LogFlood => flood_log(),
                Behaviour::StdioFlood => adversarial::flood_stdio(),
                Behaviour::HugeMessage => ValidationResponse {
                    accepted: false,
                    ..accept(Some(adversarial::huge_message()), None)
                },
                Behaviour::ProcExit => adversarial::exit(),
                Behaviour::StackOverflow => {
                    accept(Some(adversarial::overflow_stack().to_string()), None)
                }
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

    #[test]
    fn harmless_behaviours() {
        let r = Policy::validate(request("Pod", None, "{}")).unwrap();
        assert!(r.accepted && r.message.is_none());
        let r = Policy::validate(request("Pod", None, r#"{"behaviour":"garbage"}"#)).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&r.mutated_object.unwrap()).is_err());
        let first = Policy::validate(request("Pod", None, r#"{"behaviour":"counter"}"#)).unwrap();
        let second = Policy::validate(request("Pod", None, r#"{"behaviour":"counter"}"#)).unwrap();
        let n: u32 = first.message.unwrap().parse().unwrap();
        assert_eq!(second.message.unwrap(), (n + 1).to_string());
        assert!(Policy::validate(request("Pod", None, r#"{"behaviour":"nope"}"#)).is_err());
        assert!(
            !Policy::validate_settings(r#"{"behaviour":"nope"}"#.into())
                .unwrap()
                .valid
        );
        assert!(
            Policy::validate_settings(r#"{"behaviour":"loop"}"#.into())
                .unwrap()
                .valid
        );
    }
}
