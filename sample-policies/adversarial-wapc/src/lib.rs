//! A test-only waPC guest that misbehaves on purpose, to exercise the host's
//! limits. It speaks the Kubewarden protocol (ops `validate`,
//! `validate_settings`, `protocol_version`) with `wapc-guest` alone.
//!
//! The behaviour comes from `settings.behaviour` in the `validate` payload:
//! `accept` (default), `loop`, `memory-bomb`, `trap`, `counter`, `garbage`.

use policy_common::adversarial::{self, Behaviour};
use serde::Deserialize;
use serde_json::json;
use wapc_guest::{CallResult, register_function};

#[cfg(target_arch = "wasm32")]
#[used]
#[unsafe(link_section = "io.kubewarden.metadata")]
static METADATA: [u8; include_bytes!("../metadata.json").len()] =
    *include_bytes!("../metadata.json");

/// Registers the waPC operations.
#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings);
    register_function("protocol_version", protocol_version);
}

/// The `validate` payload; the request itself is not read.
#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    settings: adversarial::Settings,
}

fn accept(message: Option<String>) -> CallResult {
    Ok(serde_json::to_vec(
        &json!({"accepted": true, "message": message}),
    )?)
}

fn validate(payload: &[u8]) -> CallResult {
    let payload: Payload = serde_json::from_slice(payload)?;
    match payload.settings.behaviour()? {
        Behaviour::Accept => accept(None),
        Behaviour::Loop => {
            adversarial::spin_forever();
            accept(None)
        }
        Behaviour::MemoryBomb => {
            adversarial::hoard_memory_forever();
            accept(None)
        }
        Behaviour::Trap => adversarial::trap(),
        Behaviour::Counter => accept(Some(adversarial::count().to_string())),
        Behaviour::Garbage => Ok(b"\xff\x00not json".to_vec()),
    }
}

fn validate_settings(payload: &[u8]) -> CallResult {
    let response = match adversarial::parse_settings(payload) {
        Ok(_) => json!({"valid": true}),
        Err(message) => json!({"valid": false, "message": message}),
    };
    Ok(serde_json::to_vec(&response)?)
}

fn protocol_version(_payload: &[u8]) -> CallResult {
    Ok(br#""v1""#.to_vec())
}
