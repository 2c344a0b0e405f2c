//! The data that crosses the adapter API, independent of the ABI.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission_text::AdmissionText;
use crate::capabilities::HostCapabilities;

pub use portcullis_config::ExecutionMode;

/// Which ABI a module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Abi {
    /// Kubewarden's waPC protocol v1 on a core module.
    Wapc,
    /// The `portcullis:policy` WIT world on a component.
    Component,
    /// A WASI command module (Kubewarden's `executionMode: wasi`).
    WasiCommand,
    /// The OPA WebAssembly ABI of `opa build -t wasm`: Rego policies, run in
    /// the `opa` or `gatekeeper` execution mode.
    Opa,
}

impl std::fmt::Display for Abi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Abi::Wapc => "wapc",
            Abi::Component => "component",
            Abi::WasiCommand => "wasi-command",
            Abi::Opa => "opa",
        })
    }
}

/// A policy's settings, parsed once.
///
/// It keeps its JSON text so that the waPC path does not serialise the
/// settings again for every request.
#[derive(Debug, Clone)]
pub struct Settings {
    value: Arc<Value>,
    json: Arc<str>,
}

impl Settings {
    /// Wrap settings; `null` becomes `{}`, as in Kubewarden.
    pub fn new(value: Value) -> Self {
        let value = if value.is_null() {
            Value::Object(Default::default())
        } else {
            value
        };
        let json: Arc<str> = value.to_string().into();
        Settings {
            value: Arc::new(value),
            json,
        }
    }

    /// The settings as a JSON value.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The settings as JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(Value::Object(Default::default()))
    }
}

/// What one evaluation needs besides the request.
#[derive(Clone)]
pub struct EvalContext {
    /// The policy id, for logs and host calls.
    pub policy_id: String,
    /// Deadline for the whole evaluation: instantiation, guest initialisation and the call.
    pub timeout: Duration,
    /// Serves the policy's host calls.
    pub capabilities: Arc<dyn HostCapabilities>,
}

impl EvalContext {
    /// A context that grants no capabilities.
    pub fn new(policy_id: impl Into<String>, timeout: Duration) -> Self {
        EvalContext {
            policy_id: policy_id.into(),
            timeout,
            capabilities: Arc::new(crate::capabilities::NoCapabilities),
        }
    }
}

impl std::fmt::Debug for EvalContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalContext")
            .field("policy_id", &self.policy_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The request a policy evaluates.
#[derive(Debug, Clone)]
pub enum PolicyRequest {
    /// The `request` of an AdmissionReview: an AdmissionRequest in the API server's JSON form.
    Admission(Value),
    /// The same, as the JSON text the API server sent: what the
    /// policy-server evaluates. waPC policies get the text as it is; the
    /// tree is built only for those that need one.
    AdmissionText(AdmissionText),
    /// Any JSON document, for `validate_raw`. Only waPC policies accept it.
    Raw(Value),
}

impl PolicyRequest {
    /// The JSON document, whatever the kind (built from the text on first use).
    pub fn json(&self) -> &Value {
        match self {
            PolicyRequest::Admission(v) | PolicyRequest::Raw(v) => v,
            PolicyRequest::AdmissionText(text) => text.tree(),
        }
    }

    /// The AdmissionRequest, as a tree; `None` for a raw request.
    pub fn admission(&self) -> Option<&Value> {
        match self {
            PolicyRequest::Admission(v) => Some(v),
            PolicyRequest::AdmissionText(text) => Some(text.tree()),
            PolicyRequest::Raw(_) => None,
        }
    }
}

/// A policy's own verdict, as Kubewarden's SDKs write it on the waPC wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationResponse {
    /// True to admit the request.
    pub accepted: bool,
    /// Message for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Status code for a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The whole object after mutation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutated_object: Option<Value>,
    /// Annotations for the API server's audit event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_annotations: Option<BTreeMap<String, String>>,
    /// Warnings for the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

/// A policy's verdict on its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsVerdict {
    /// True when the settings are usable.
    pub valid: bool,
    /// Why they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
