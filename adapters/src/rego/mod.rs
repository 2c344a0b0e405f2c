//! The Rego adapter: policies compiled by `opa build -t wasm`, run in
//! Kubewarden's `opa` and `gatekeeper` execution modes.
//!
//! Per evaluation, as for the other ABIs: a fresh instance from the module's
//! `InstancePre`, in a pooled slot whose memory is a copy-on-write image of
//! the module's data (see [`rewrite`] for how the imported memory becomes
//! one), under the evaluation's epoch deadline and memory cap. In it the host
//! parses the data (the settings, or the context inventory), writes the
//! input, and calls `opa_eval` (or, before ABI 1.2, the `opa_eval_ctx_*`
//! sequence). Builtins the module does not carry call back into the host
//! (`opa_builtinN`), which implements them in [`builtins`].

mod abi;
pub(crate) mod builtins;
mod host_fns;
pub(crate) mod inventory;
mod modes;
mod rewrite;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use wasmtime::{InstancePre, Linker, Module, Store};

use crate::engine::StoreLimits;
use crate::error::{AdapterError, EvalError};
use crate::retired::Retired;
use crate::types::{
    EvalContext, ExecutionMode, PolicyRequest, Settings, SettingsVerdict, ValidationResponse,
};
use abi::{ExportIndices, Guest, Table};

pub(crate) use rewrite::{REWRITE_VERSION, define_imported_memory};

/// The Rego linker, built once per engine.
pub(crate) type SharedLinker = Arc<Linker<RegoState>>;

pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<SharedLinker, AdapterError> {
    let mut linker = Linker::new(engine);
    host_fns::add_to_linker(&mut linker)
        .map_err(|e| AdapterError::Engine(format!("cannot link the OPA host functions: {e:#}")))?;
    Ok(Arc::new(linker))
}

/// Why an OPA evaluation stopped, raised from host functions.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RegoFault {
    /// The policy aborted (`opa_abort`): a conflict or another runtime error of Rego.
    #[error("{0}")]
    Abort(String),
    /// The policy called a builtin the host does not implement.
    #[error("{0}")]
    UnsupportedBuiltin(String),
    /// The guest broke the ABI (a bad address, a malformed table...).
    #[error("{0}")]
    Protocol(String),
    /// A string in guest memory is longer than the host reads.
    #[error("the policy's output is larger than {0} bytes")]
    TooLarge(usize),
}

/// A builtin function a module needs from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequiredBuiltin {
    /// Its Rego name, such as `sprintf` or `time.parse_rfc3339_ns`.
    pub name: String,
    /// Whether this host implements it. A policy that calls one that is not
    /// fails that evaluation with [`EvalError::UnsupportedBuiltin`].
    pub supported: bool,
}

/// What an OPA module declares: for `portcullis inspect` and the load log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpaModuleInfo {
    /// `opa_wasm_abi_version`.`opa_wasm_abi_minor_version`, such as `1.3`.
    pub abi_version: String,
    /// Entrypoints by id; evaluations use id 0, as Kubewarden does.
    pub entrypoints: BTreeMap<i32, String>,
    /// The builtins the module calls back into the host for.
    pub builtins: Vec<RequiredBuiltin>,
}

/// Everything learnt from a module once, shared by its instances.
pub(crate) struct ModuleInfo {
    /// Host builtins by the id the module calls them with.
    pub(crate) builtins: Vec<Option<builtins::Resolved>>,
    pub(crate) public: OpaModuleInfo,
}

/// A compiled OPA module and its `InstancePre`.
pub(crate) struct RegoModule {
    pre: InstancePre<RegoState>,
    exports: Box<ExportIndices>,
    info: Arc<ModuleInfo>,
}

/// Per-evaluation state, owned by the Store.
pub(crate) struct RegoState {
    limits: StoreLimits,
    info: Option<Arc<ModuleInfo>>,
    policy_id: Arc<str>,
    guest: Option<Guest>,
    builtin_state: builtins::EvalState,
}

impl RegoState {
    fn new(limits: StoreLimits, policy_id: &str, info: Option<Arc<ModuleInfo>>) -> Self {
        RegoState {
            limits,
            info,
            policy_id: policy_id.into(),
            guest: None,
            builtin_state: builtins::EvalState::default(),
        }
    }
}

/// The entrypoint every evaluation runs, as in Kubewarden: the first one
/// given to `opa build -e`.
const ENTRYPOINT: i32 = 0;

impl RegoModule {
    pub(crate) fn new(
        linker: &Linker<RegoState>,
        module: Module,
        introspection_limits: StoreLimits,
    ) -> Result<Self, AdapterError> {
        let exports = ExportIndices::resolve(&module).map_err(AdapterError::Link)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| AdapterError::Link(format!("{e:#}")))?;
        let info = Self::introspect(&pre, &exports, introspection_limits)?;
        if !info.public.entrypoints.contains_key(&ENTRYPOINT) {
            return Err(AdapterError::Link(
                "the module has no entrypoint 0 (build it with `opa build -t wasm -e <path>`)"
                    .into(),
            ));
        }
        let unsupported: Vec<&str> = info
            .public
            .builtins
            .iter()
            .filter(|b| !b.supported)
            .map(|b| b.name.as_str())
            .collect();
        if !unsupported.is_empty() {
            tracing::warn!(
                builtins = %unsupported.join(", "),
                "the module uses builtins this host does not implement; \
                 evaluations that call them will fail"
            );
        }
        Ok(RegoModule {
            pre,
            exports: Box::new(exports),
            info: Arc::new(info),
        })
    }

    /// Instantiate once to read the ABI version, the entrypoints and the
    /// builtins the module needs.
    fn introspect(
        pre: &InstancePre<RegoState>,
        exports: &ExportIndices,
        limits: StoreLimits,
    ) -> Result<ModuleInfo, AdapterError> {
        let link = |what: &str, e: wasmtime::Error| AdapterError::Link(format!("{what}: {e:#}"));
        let mut store = Store::new(pre.module().engine(), RegoState::new(limits, "", None));
        StoreLimits::install(&mut store, |s| &mut s.limits);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| link("cannot instantiate the module", e))?;
        let version = |store: &mut Store<RegoState>, name: &str| {
            instance
                .get_global(&mut *store, name)
                .and_then(|g| g.get(&mut *store).i32())
                .ok_or_else(|| AdapterError::Link(format!("the module does not export {name}")))
        };
        let major = version(&mut store, "opa_wasm_abi_version")?;
        let minor = version(&mut store, "opa_wasm_abi_minor_version")?;
        if major != 1 {
            return Err(AdapterError::Unsupported(format!(
                "OPA WebAssembly ABI {major}.{minor}; this host speaks ABI 1.x"
            )));
        }
        let guest = Guest::bind(&instance, &mut store, exports).map_err(|e| link("exports", e))?;
        let names = guest
            .name_table(&mut store, Table::Builtins)
            .map_err(|e| link("builtins()", e))?;
        let entries = guest
            .name_table(&mut store, Table::Entrypoints)
            .map_err(|e| link("entrypoints()", e))?;

        let id = |v: &serde_json::Value, what: &str| {
            v.as_i64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n < 1 << 16)
                .ok_or_else(|| AdapterError::Link(format!("{what} id {v} is not a small integer")))
        };
        let mut table: Vec<Option<builtins::Resolved>> = Vec::new();
        let mut required = Vec::new();
        for (name, value) in &names {
            let i = id(value, "builtin")?;
            if table.len() <= i {
                table.resize_with(i + 1, || None);
            }
            let resolved = builtins::resolve(name);
            required.push(RequiredBuiltin {
                name: name.clone(),
                supported: resolved.is_supported(),
            });
            table[i] = Some(resolved);
        }
        required.sort_by(|a, b| a.name.cmp(&b.name));
        let mut entrypoints = BTreeMap::new();
        for (name, value) in &entries {
            entrypoints.insert(id(value, "entrypoint")? as i32, name.clone());
        }
        Ok(ModuleInfo {
            builtins: table,
            public: OpaModuleInfo {
                abi_version: format!("{major}.{minor}"),
                entrypoints,
                builtins: required,
            },
        })
    }

    pub(crate) fn info(&self) -> &OpaModuleInfo {
        &self.info.public
    }

    pub(crate) fn validate_settings(
        &self,
        mode: Option<ExecutionMode>,
        _settings: &Settings,
    ) -> Result<SettingsVerdict, EvalError> {
        // Rego has no settings validation of its own (Kubewarden accepts any
        // settings too); what the mode needs is checked here, at load time.
        modes::require(mode)?;
        Ok(SettingsVerdict {
            valid: true,
            message: None,
        })
    }

    pub(crate) fn validate(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
        mode: Option<ExecutionMode>,
        request: &PolicyRequest,
        settings: &Settings,
        n: usize,
    ) -> Result<(ValidationResponse, Retired), EvalError> {
        let mode = modes::require(mode)?;
        let context = inventory::context_data(ctx, mode, &limits)?;
        let prepared = modes::prepare(mode, request, settings, context.as_ref())?;
        let mut running = self.instantiate(limits, ctx)?;
        let data = running.load_data(prepared.data.as_deref())?;
        let mut result = Vec::new();
        for _ in 0..n.max(1) {
            result = running.evaluate(data, &prepared.input)?;
        }
        let verdict = modes::interpret(mode, request, &result)?;
        // The caller answers before the instance's teardown runs.
        Ok((verdict, Retired::store(running.store)))
    }

    /// The entrypoint's value for one request (`None`: undefined), before it
    /// becomes a verdict: for conformance tests that count violations.
    pub(crate) fn entrypoint_value(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
        mode: Option<ExecutionMode>,
        request: &PolicyRequest,
        settings: &Settings,
    ) -> Result<Option<serde_json::Value>, EvalError> {
        let mode = modes::require(mode)?;
        let context = inventory::context_data(ctx, mode, &limits)?;
        let prepared = modes::prepare(mode, request, settings, context.as_ref())?;
        let mut running = self.instantiate(limits, ctx)?;
        let data = running.load_data(prepared.data.as_deref())?;
        let result = running.evaluate(data, &prepared.input)?;
        modes::entrypoint_value(&result)
    }

    fn instantiate(&self, limits: StoreLimits, ctx: &EvalContext) -> Result<Running, EvalError> {
        let mut store = Store::new(
            self.pre.module().engine(),
            RegoState::new(limits, &ctx.policy_id, Some(self.info.clone())),
        );
        StoreLimits::install(&mut store, |s| &mut s.limits);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| match classify(&store, e) {
                EvalError::Trap(msg) => EvalError::Instantiation(msg),
                other => other,
            })?;
        let guest =
            Guest::bind(&instance, &mut store, &self.exports).map_err(|e| classify(&store, e))?;
        store.data_mut().guest = Some(guest.clone());
        Ok(Running {
            store,
            guest,
            heap: 0,
        })
    }
}

/// A live instance, for the duration of one evaluation.
struct Running {
    store: Store<RegoState>,
    guest: Guest,
    /// Where each evaluation's heap starts: after the data.
    heap: i32,
}

impl Running {
    /// Parse the data document into the guest; returns its address (0: none).
    fn load_data(&mut self, data: Option<&[u8]>) -> Result<i32, EvalError> {
        let result = (|| -> wasmtime::Result<i32> {
            let addr = match data {
                None => 0,
                Some(json) => self.guest.parse_json(&mut self.store, json)?,
            };
            self.heap = self.guest.heap_ptr(&mut self.store)?;
            Ok(addr)
        })();
        result.map_err(|e| classify(&self.store, e))
    }

    fn evaluate(&mut self, data: i32, input: &[u8]) -> Result<Vec<u8>, EvalError> {
        self.guest
            .evaluate(&mut self.store, ENTRYPOINT, data, self.heap, input)
            .map_err(|e| classify(&self.store, e))
    }
}

/// Turn an error from guest code or a host function into an evaluation error.
fn classify(store: &Store<RegoState>, err: wasmtime::Error) -> EvalError {
    if let Some(fault) = err.downcast_ref::<RegoFault>() {
        return match fault {
            RegoFault::Abort(msg) => EvalError::Guest(msg.clone()),
            RegoFault::UnsupportedBuiltin(name) => EvalError::UnsupportedBuiltin(name.clone()),
            RegoFault::Protocol(msg) => EvalError::MalformedOutput(msg.clone()),
            RegoFault::TooLarge(_) => EvalError::MalformedOutput(fault.to_string()),
        };
    }
    store.data().limits.classify(err)
}

/// The deadline a load-time introspection runs under.
pub(crate) const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(5);
