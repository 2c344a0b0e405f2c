//! The waPC adapter: Kubewarden's protocol v1 on a core module.
//!
//! The nine waPC host imports are implemented here directly on wasmtime's
//! [`Linker`] rather than through the `wapc`/`wasmtime-provider` crates. Those
//! crates own their own `Engine` and `Store` and read guest memory with
//! unchecked slices, which would give up the shared pooling engine, the
//! per-instance memory cap, the epoch deadline and safe memory access that
//! every Portcullis evaluation must have.
//!
//! Protocol, per evaluation: the host sets the operation name and payload, calls
//! the guest's `__guest_call(op_len, msg_len)`; the guest pulls both with
//! `__guest_request`, answers with `__guest_response` or `__guest_error`, and
//! returns 1 on success. The guest may call back with `__host_call`.

pub(crate) mod host_calls;

use std::sync::Arc;

use wasmtime::{Extern, InstancePre, Linker, Module, ModuleExport, Store, Val, ValType};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::capabilities::HostCapabilities;
use crate::engine::StoreLimits;
use crate::error::{AdapterError, EvalError};
use crate::limits::wasi::{self, Contained};
use crate::retired::Retired;
use crate::types::{EvalContext, PolicyRequest, Settings, SettingsVerdict, ValidationResponse};

pub(crate) use host_calls::HostFault;

/// The waPC linker, built once per engine.
pub(crate) type SharedLinker = Arc<Linker<WapcState>>;

/// Functions a guest may export to initialise itself, called in this order
/// after instantiation: the WASI reactor initialiser, the command entry point
/// (TinyGo registers its handlers in `main`), and the waPC initialiser.
const INIT_EXPORTS: [&str; 3] = ["_initialize", "_start", "wapc_init"];

/// Per-evaluation state, owned by the Store.
pub(crate) struct WapcState {
    limits: StoreLimits,
    /// Created on the first WASI call only: many policies never make one.
    wasi: Option<WasiP1Ctx>,
    call: host_calls::CallState,
    policy_id: Arc<str>,
    capabilities: Arc<dyn HostCapabilities>,
}

impl WapcState {
    fn new(limits: StoreLimits, ctx: &EvalContext) -> Self {
        WapcState {
            limits,
            wasi: None,
            call: Default::default(),
            policy_id: ctx.policy_id.as_str().into(),
            capabilities: ctx.capabilities.clone(),
        }
    }

    fn wasi(&mut self) -> &mut WasiP1Ctx {
        // No preopens, no environment, no arguments, and stdio going to the
        // log under the evaluation's budget: a policy's output channel is
        // its response.
        let WapcState {
            wasi,
            limits,
            policy_id,
            ..
        } = self;
        wasi.get_or_insert_with(|| {
            let output = limits.output(policy_id).clone();
            wasi::ctx_builder(&output, limits).build_p1()
        })
    }
}

impl Contained for WapcState {
    fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<SharedLinker, AdapterError> {
    let mut linker = Linker::new(engine);
    wasi::add_p1_to_linker(&mut linker, WapcState::wasi)
        .map_err(|e| AdapterError::Engine(format!("cannot link WASI: {e:#}")))?;
    host_calls::add_to_linker(&mut linker)
        .map_err(|e| AdapterError::Engine(format!("cannot link the waPC host calls: {e:#}")))?;
    Ok(Arc::new(linker))
}

/// A compiled waPC module with its `InstancePre` and the exports it needs.
pub(crate) struct WapcModule {
    pre: InstancePre<WapcState>,
    guest_call: ModuleExport,
    inits: Vec<ModuleExport>,
}

impl WapcModule {
    pub(crate) fn new(linker: &Linker<WapcState>, module: Module) -> Result<Self, AdapterError> {
        let guest_call = module
            .get_export_index("__guest_call")
            .ok_or_else(|| AdapterError::Link("the module does not export __guest_call".into()))?;
        match module.get_export("__guest_call") {
            Some(wasmtime::ExternType::Func(f))
                if f.params()
                    .map(|p| matches!(p, ValType::I32))
                    .eq([true, true])
                    && f.results().map(|r| matches!(r, ValType::I32)).eq([true]) => {}
            _ => {
                return Err(AdapterError::Link(
                    "__guest_call must be a function (i32, i32) -> i32".into(),
                ));
            }
        }
        if !matches!(
            module.get_export("memory"),
            Some(wasmtime::ExternType::Memory(_))
        ) {
            return Err(AdapterError::Link(
                "the module does not export its memory".into(),
            ));
        }
        let inits = INIT_EXPORTS
            .iter()
            .filter(|name| {
                matches!(module.get_export(name), Some(wasmtime::ExternType::Func(f))
                    if f.params().len() == 0 && f.results().len() == 0)
            })
            .filter_map(|name| module.get_export_index(name))
            .collect();
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| AdapterError::Link(format!("{e:#}")))?;
        Ok(WapcModule {
            pre,
            guest_call,
            inits,
        })
    }

    pub(crate) fn validate_settings(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
        settings: &Settings,
    ) -> Result<SettingsVerdict, EvalError> {
        let mut instance = self.instantiate(limits, ctx)?;
        let bytes = match instance.call("validate_settings", settings.json().as_bytes().to_vec()) {
            Ok(bytes) => bytes,
            // Kubewarden's SDKs report settings they cannot even parse (an
            // unknown key, a wrong type) as a guest error; that is a verdict.
            Err(EvalError::Guest(message)) => {
                return Ok(SettingsVerdict {
                    valid: false,
                    message: Some(message),
                });
            }
            Err(other) => return Err(other),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            EvalError::MalformedOutput(format!(
                "validate_settings answer is not a settings verdict: {e}"
            ))
        })
    }

    /// One evaluation in a fresh instance; the Store comes back undropped.
    pub(crate) fn validate(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
        request: &PolicyRequest,
        settings: &Settings,
    ) -> Result<(ValidationResponse, Retired), EvalError> {
        self.validate_n(limits, ctx, request, settings, 1)
    }

    pub(crate) fn validate_n(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
        request: &PolicyRequest,
        settings: &Settings,
        n: usize,
    ) -> Result<(ValidationResponse, Retired), EvalError> {
        let payload = validate_payload(request, settings)?;
        let mut instance = self.instantiate(limits, ctx)?;
        for _ in 1..n {
            instance.call("validate", payload.clone())?;
        }
        let bytes = instance.call("validate", payload)?;
        let response = parse_validation_response(&bytes)?;
        Ok((response, Retired::store(instance.store)))
    }

    fn instantiate(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
    ) -> Result<Running<'_>, EvalError> {
        let mut store = Store::new(self.pre.module().engine(), WapcState::new(limits, ctx));
        StoreLimits::install(&mut store, |s| &mut s.limits);
        let instance = self.pre.instantiate(&mut store).map_err(|e| {
            match store.data().limits.classify(e) {
                EvalError::Trap(msg) => EvalError::Instantiation(msg),
                other => other,
            }
        })?;
        for init in &self.inits {
            let func = instance
                .get_module_export(&mut store, init)
                .and_then(Extern::into_func)
                .ok_or_else(|| EvalError::Instantiation("init export vanished".into()))?;
            if let Err(e) = func.call(&mut store, &[], &mut []) {
                // A command module's entry point may end with exit(0).
                if e.downcast_ref::<wasmtime_wasi::I32Exit>()
                    .is_some_and(|exit| exit.0 == 0)
                {
                    continue;
                }
                return Err(store.data().limits.classify(e));
            }
        }
        let guest_call = instance
            .get_module_export(&mut store, &self.guest_call)
            .and_then(Extern::into_func)
            .ok_or_else(|| EvalError::Instantiation("__guest_call vanished".into()))?;
        Ok(Running {
            store,
            guest_call,
            _module: self,
        })
    }
}

/// A live instance, for the duration of one evaluation.
struct Running<'a> {
    store: Store<WapcState>,
    guest_call: wasmtime::Func,
    _module: &'a WapcModule,
}

impl Running<'_> {
    fn call(&mut self, operation: &'static str, payload: Vec<u8>) -> Result<Vec<u8>, EvalError> {
        let op_len = operation.len() as i32;
        let msg_len = i32::try_from(payload.len())
            .map_err(|_| EvalError::InvalidRequest("payload larger than 2 GiB".into()))?;
        self.store.data_mut().call.begin(operation, payload);
        let mut result = [Val::I32(0)];
        self.guest_call
            .call(
                &mut self.store,
                &[Val::I32(op_len), Val::I32(msg_len)],
                &mut result,
            )
            .map_err(|e| self.store.data().limits.classify(e))?;
        let call = &mut self.store.data_mut().call;
        if result[0].i32() == Some(1) {
            call.guest_response.take().ok_or_else(|| {
                EvalError::MalformedOutput(format!(
                    "{operation}: the guest reported success without a response"
                ))
            })
        } else {
            let message = call
                .guest_error
                .take()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| format!("{operation} failed without an error message"));
            Err(EvalError::Guest(message))
        }
    }
}

pub(crate) fn validate_payload(
    request: &PolicyRequest,
    settings: &Settings,
) -> Result<Vec<u8>, EvalError> {
    // Written by hand around the pre-serialised settings so that the settings
    // are not parsed and serialised again for every request.
    let mut msg = Vec::with_capacity(1024 + settings.json().len());
    msg.extend_from_slice(br#"{"request":"#);
    let invalid = |e: serde_json::Error| EvalError::InvalidRequest(e.to_string());
    if let PolicyRequest::AdmissionText(text) = request
        && text.spliceable()
    {
        // The text as the API server sent it: no tree is built, parsed or
        // serialised for the common case.
        msg.reserve(text.text().len());
        msg.extend_from_slice(text.text().as_bytes());
    } else if let Some(serde_json::Value::Object(fields)) = request.admission()
        && fields
            .iter()
            .any(|(k, v)| v.is_null() && k != "object" && k != "oldObject")
    {
        // Kubewarden's SDKs accept an explicit null only for the objects; the
        // API server omits empty fields, but other clients send nulls.
        let kept: serde_json::Map<_, _> = fields
            .iter()
            .filter(|(k, v)| !v.is_null() || *k == "object" || *k == "oldObject")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::to_writer(&mut msg, &kept).map_err(invalid)?;
    } else {
        serde_json::to_writer(&mut msg, request.json()).map_err(invalid)?;
    }
    msg.extend_from_slice(br#","settings":"#);
    msg.extend_from_slice(settings.json().as_bytes());
    msg.push(b'}');
    Ok(msg)
}

pub(crate) fn parse_validation_response(bytes: &[u8]) -> Result<ValidationResponse, EvalError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned();
        EvalError::MalformedOutput(format!(
            "validate answer is not a validation response ({e}); it starts with {shown:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;
    use serde_json::{Value, json};

    use super::*;
    use crate::AdmissionText;

    fn text(source: &str) -> PolicyRequest {
        let raw = RawValue::from_string(source.to_string()).unwrap();
        PolicyRequest::AdmissionText(AdmissionText::new(raw).unwrap())
    }

    #[test]
    fn the_request_text_is_spliced_as_it_came() {
        let source = r#"{"uid":"u", "object" : {"b":1,"a":[1.50,2]},"oldObject":null}"#;
        let settings = Settings::new(json!({"x": 1}));
        let payload = validate_payload(&text(source), &settings).unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            format!(r#"{{"request":{source},"settings":{{"x":1}}}}"#)
        );
    }

    #[test]
    fn a_request_text_with_nulls_goes_through_the_tree() {
        let settings = Settings::new(json!({}));
        let payload = validate_payload(
            &text(r#"{"uid":"u","dryRun":null,"object":null}"#),
            &settings,
        )
        .unwrap();
        let payload: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(payload["request"], json!({"uid": "u", "object": null}));
        // Same answer as for the tree.
        let tree = PolicyRequest::Admission(json!({"uid":"u","dryRun":null,"object":null}));
        let from_tree: Value =
            serde_json::from_slice(&validate_payload(&tree, &settings).unwrap()).unwrap();
        assert_eq!(payload, from_tree);
    }
}
