//! The WASI command adapter: Kubewarden's `executionMode: wasi` policies, such
//! as Go policies built with `GOOS=wasip1`.
//!
//! Protocol, per call: a fresh instance runs `_start` with argv
//! `["policy.wasm", "validate"]` (or `"validate-settings"`), the payload on
//! stdin (`{"request", "settings"}`, or the bare settings), and answers on
//! stdout (a `ValidationResponse` or a settings verdict). Exit status 0 (or
//! returning from `_start`) is success; any other status is a failure whose
//! reason is what the guest wrote to stderr. Host capabilities go through the
//! `host.call` import (the `__host_call` signature), whose answer the host
//! puts on the guest's stdin.
//!
//! Same engine, pool, memory cap and epoch deadline as the other adapters. A
//! command cannot be called twice, so every call is a fresh instance, for
//! benchmarks too.

mod host_call;
mod stdio;

use std::sync::Arc;

use wasmtime::{Extern, InstancePre, Linker, Module, ModuleExport, Store};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::capabilities::HostCapabilities;
use crate::engine::StoreLimits;
use crate::error::{AdapterError, EvalError};
use crate::guest_log::GuestLevel;
use crate::limits::wasi::{self, Contained};
use crate::retired::Retired;
use crate::types::{EvalContext, PolicyRequest, Settings, SettingsVerdict, ValidationResponse};

use self::stdio::{CappedOutput, StdinPipe};

/// The WASI command linker, built once per engine.
pub(crate) type SharedLinker = Arc<Linker<WasiCommandState>>;

/// The most a policy may write to stdout: its answer. More is a malformed
/// answer, not a host allocation without bound.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// The most a policy may write to stderr (its diagnostics, logged, and its
/// failure reason). Writing more fails that evaluation, like any other limit.
const MAX_STDERR_BYTES: usize = 64 << 10;
/// The most of stderr shown in one log line or error message.
const SHOWN_STDERR_BYTES: usize = 4 << 10;

/// Per-evaluation state, owned by the Store.
pub(crate) struct WasiCommandState {
    pub(crate) limits: StoreLimits,
    wasi: WasiP1Ctx,
    stdin: StdinPipe,
    policy_id: Arc<str>,
    capabilities: Arc<dyn HostCapabilities>,
}

impl Contained for WasiCommandState {
    fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<SharedLinker, AdapterError> {
    let mut linker = Linker::new(engine);
    wasi::add_p1_to_linker(&mut linker, |s: &mut WasiCommandState| &mut s.wasi)
        .map_err(|e| AdapterError::Engine(format!("cannot link WASI: {e:#}")))?;
    host_call::add_to_linker(&mut linker)
        .map_err(|e| AdapterError::Engine(format!("cannot link host.call: {e:#}")))?;
    Ok(Arc::new(linker))
}

/// A compiled WASI command module and its `InstancePre`.
pub(crate) struct WasiCommandModule {
    pre: InstancePre<WasiCommandState>,
    start: ModuleExport,
}

impl WasiCommandModule {
    pub(crate) fn new(
        linker: &Linker<WasiCommandState>,
        module: Module,
    ) -> Result<Self, AdapterError> {
        match module.get_export("_start") {
            Some(wasmtime::ExternType::Func(f))
                if f.params().len() == 0 && f.results().len() == 0 => {}
            _ => {
                return Err(AdapterError::Link(
                    "a WASI command must export _start as a function () -> ()".into(),
                ));
            }
        }
        let start = module
            .get_export_index("_start")
            .ok_or_else(|| AdapterError::Link("the module does not export _start".into()))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| AdapterError::Link(format!("{e:#}")))?;
        Ok(WasiCommandModule { pre, start })
    }

    /// Run the command once in a fresh instance.
    fn run(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
        operation: &str,
        payload: &[u8],
    ) -> Result<(Vec<u8>, Retired), EvalError> {
        let stdin = StdinPipe::new(payload);
        let stdout = CappedOutput::new(MAX_ANSWER_BYTES);
        let stderr = CappedOutput::new(MAX_STDERR_BYTES);
        // No preopens and no environment: a policy reads its input and
        // nothing else of the host.
        // The shared policy context (no network, capped random reads) with
        // this mode's own stdio: stdin is the payload, stdout the answer.
        let mut limits = limits;
        let policy_id: Arc<str> = ctx.policy_id.as_str().into();
        let output = limits.output(&policy_id).clone();
        let wasi = wasi::ctx_builder(&output, &limits)
            .args(&["policy.wasm", operation])
            .stdin(stdin.clone())
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build_p1();
        let state = WasiCommandState {
            limits,
            wasi,
            stdin,
            policy_id,
            capabilities: ctx.capabilities.clone(),
        };
        let mut store = Store::new(self.pre.module().engine(), state);
        StoreLimits::install(&mut store, |s| &mut s.limits);
        let instance = self.pre.instantiate(&mut store).map_err(|e| {
            match store.data().limits.classify(e) {
                EvalError::Trap(msg) => EvalError::Instantiation(msg),
                other => other,
            }
        })?;
        let start = instance
            .get_module_export(&mut store, &self.start)
            .and_then(Extern::into_func)
            .ok_or_else(|| EvalError::Instantiation("_start vanished".into()))?;
        let outcome = start.call(&mut store, &[], &mut []);
        // A write past a cap traps the guest; say which.
        if stdout.overflowed() {
            return Err(EvalError::MalformedOutput(format!(
                "{operation}: the answer on stdout is larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        if stderr.overflowed() {
            return Err(EvalError::MalformedOutput(format!(
                "{operation}: the policy wrote more than {MAX_STDERR_BYTES} bytes to stderr"
            )));
        }
        let stderr = stderr.contents();
        let status = match outcome {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => exit.0,
                None => return Err(store.data().limits.classify(e)),
            },
        };
        if status != 0 {
            let reason = shown(&stderr);
            return Err(EvalError::Guest(if reason.is_empty() {
                format!("{operation} exited with status {status}")
            } else {
                reason
            }));
        }
        if !stderr.is_empty() {
            output.log(GuestLevel::Info, &shown(&stderr), None);
        }
        // The caller answers before the instance's teardown (the pool's
        // reset) runs. The error paths above drop the Store before they
        // answer: they are rare, and not worth carrying it out.
        Ok((stdout.contents(), Retired::store(store)))
    }

    pub(crate) fn validate_settings(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
        settings: &Settings,
    ) -> Result<SettingsVerdict, EvalError> {
        let answer = match self.run(limits, ctx, "validate-settings", settings.json().as_bytes()) {
            Ok((answer, _retired)) => answer,
            // A policy that cannot even read its settings says so by failing;
            // that is a verdict on the settings, as for waPC policies.
            Err(EvalError::Guest(message)) => {
                return Ok(SettingsVerdict {
                    valid: false,
                    message: Some(message),
                });
            }
            Err(other) => return Err(other),
        };
        serde_json::from_slice(&answer).map_err(|e| {
            EvalError::MalformedOutput(format!(
                "validate-settings answer is not a settings verdict ({e}); it starts with {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(64)])
            ))
        })
    }

    pub(crate) fn validate(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
        request: &PolicyRequest,
        settings: &Settings,
    ) -> Result<(ValidationResponse, Retired), EvalError> {
        let payload = crate::wapc::validate_payload(request, settings)?;
        let (answer, retired) = self.run(limits, ctx, "validate", &payload)?;
        Ok((crate::wapc::parse_validation_response(&answer)?, retired))
    }
}

fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN_STDERR_BYTES)]);
    let text = text.trim_end();
    if bytes.len() > SHOWN_STDERR_BYTES {
        format!("{text}… [{} more bytes]", bytes.len() - SHOWN_STDERR_BYTES)
    } else {
        text.to_string()
    }
}
