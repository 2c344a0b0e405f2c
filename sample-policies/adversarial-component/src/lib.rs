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
