//! One evaluation API over the kinds of admission policy Portcullis runs:
//! Kubewarden's waPC modules, components of the `portcullis:policy` WIT world,
//! Kubewarden's plain WASI command policies (`executionMode: wasi`), and Rego
//! policies compiled by `opa build -t wasm` (Kubewarden's `opa` and
//! `gatekeeper` execution modes).
//!
//! ```no_run
//! use std::time::Duration;
//! use portcullis_adapters::{EngineConfig, EvalContext, PolicyEngine, PolicyRequest, Settings};
//!
//! let engine = PolicyEngine::new(EngineConfig::default())?;
//! let module = engine.load(&std::fs::read("policy.wasm")?)?;
//! let ctx = EvalContext::new("my-policy", Duration::from_secs(2));
//! let settings = Settings::default();
//! assert!(module.validate_settings(&ctx, &settings)?.valid);
//! let request = PolicyRequest::Admission(serde_json::json!({"uid": "1", "operation": "CREATE"}));
//! let verdict = module.validate(&ctx, &request, &settings)?;
//! println!("accepted: {}", verdict.accepted);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every evaluation runs in a fresh instance from the module's `InstancePre`,
//! on one shared engine with the pooling allocator, under an epoch deadline
//! and a memory cap. Whatever the guest does (loop, sleep, allocate, log,
//! print, exit, overflow its stack, answer with gigabytes), it costs only its
//! own evaluation, bounded by [`GuestLimits`] and the deadline, and the caller
//! gets a typed error.

mod admission_text;
mod cache;
mod capabilities;
mod component;
mod detect;
mod engine;
mod error;
mod guest_log;
mod limits;
mod metadata;
mod rego;
mod retired;
mod spares;
mod types;
mod wapc;
mod wasi_command;

pub use admission_text::{AdmissionText, AdmissionTextError};
pub use capabilities::{
    CallContext, CapabilityError, ContextResourceList, HostCapabilities, NoCapabilities,
};
pub use detect::detect_abi;
pub use engine::{EngineConfig, LoadedModule, PolicyEngine};
pub use error::{AdapterError, EvalError};
pub use limits::GuestLimits;
pub use metadata::{
    ContextAwareResource, KUBEWARDEN_SECTION, PORTCULLIS_SECTION, PolicyMetadata, Rule,
    read_metadata,
};
pub use rego::builtins::supported_builtins as supported_rego_builtins;
pub use rego::{OpaModuleInfo, RequiredBuiltin};
pub use types::{
    Abi, EvalContext, ExecutionMode, PolicyRequest, Settings, SettingsVerdict, ValidationResponse,
};
