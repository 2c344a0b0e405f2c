//! The component adapter: policies that export the `portcullis:policy` world.

mod convert;
mod host_impl;

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::HostCapabilities;
use crate::engine::StoreLimits;
use crate::error::{AdapterError, EvalError};
use crate::limits::wasi::{self, Contained};
use crate::retired::Retired;
use crate::spares::{SpareBudget, Spares};
use crate::types::{EvalContext, PolicyRequest, Settings, SettingsVerdict, ValidationResponse};

/// Host bindings generated from `wit/`: the current contract, 0.2.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
    });
}

/// Host bindings of the frozen 0.1 contract (`wit/v0.1/`), so that 0.1
/// components, which import `portcullis:policy/*@0.1.0`, keep linking.
pub(crate) mod bindings_v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "policy",
    });
}

/// The component linker, built once per engine.
pub(crate) type SharedLinker = Arc<Linker<ComponentState>>;

/// Per-evaluation state, owned by the Store.
pub(crate) struct ComponentState {
    limits: StoreLimits,
    /// Created on the first WASI call only.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    policy_id: Arc<str>,
    capabilities: Arc<dyn HostCapabilities>,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // No preopens, environment, arguments or network, and stdio going to
        // the log, as for waPC policies.
        let ComponentState {
            wasi,
            limits,
            policy_id,
            table,
            ..
        } = self;
        let ctx = wasi.get_or_insert_with(|| {
            let output = limits.output(policy_id).clone();
            wasi::ctx_builder(&output, limits).build()
        });
        WasiCtxView { ctx, table }
    }
}

impl Contained for ComponentState {
    fn limits(&mut self) -> &mut StoreLimits {
        &mut self.limits
    }
}

pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<SharedLinker, AdapterError> {
    let mut linker = Linker::new(engine);
    wasi::add_p2_to_linker(&mut linker)
        .map_err(|e| AdapterError::Engine(format!("cannot link WASI: {e:#}")))?;
    bindings::Policy::add_to_linker::<ComponentState, HasSelf<ComponentState>>(&mut linker, |s| s)
        .map_err(|e| AdapterError::Engine(format!("cannot link the policy world: {e:#}")))?;
    bindings_v0_1::Policy::add_to_linker::<ComponentState, HasSelf<ComponentState>>(
        &mut linker,
        |s| s,
    )
    .map_err(|e| AdapterError::Engine(format!("cannot link the 0.1 policy world: {e:#}")))?;
    Ok(Arc::new(linker))
}

/// A Store and the component's instance in it, ready for one evaluation.
type Ready = (Store<ComponentState>, bindings::Policy);

/// A compiled component with its pre-instantiated bindings, and the spare
/// instances made for its next evaluations.
pub(crate) struct ComponentModule {
    pre: bindings::PolicyPre<ComponentState>,
    spares: Spares<Ready>,
}

impl ComponentModule {
    pub(crate) fn new(
        linker: &Linker<ComponentState>,
        component: Component,
        spare_budget: Arc<SpareBudget>,
    ) -> Result<Self, AdapterError> {
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            AdapterError::Link(format!(
                "the component imports something the host does not provide: {e:#}"
            ))
        })?;
        let pre = bindings::PolicyPre::new(instance_pre).map_err(|e| {
            AdapterError::Link(format!(
                "the component does not export the portcullis:policy world (0.1 or 0.2): {e:#}"
            ))
        })?;
        Ok(ComponentModule {
            pre,
            spares: Spares::new(spare_budget),
        })
    }

    /// An instance for one evaluation under `limits`: the spare made for
    /// this policy if there is one, otherwise a new one.
    fn instance(&self, limits: StoreLimits, ctx: &EvalContext) -> Result<Ready, EvalError> {
        match self.spares.take(ctx) {
            Some((mut store, policy)) => {
                store.data_mut().limits.renew(limits);
                StoreLimits::arm(&mut store, |s| &mut s.limits);
                Ok((store, policy))
            }
            None => self.instantiate(limits, ctx),
        }
    }

    /// Make the instance the next evaluation of `ctx`'s policy will take,
    /// under the limits `limits` gives, unless one is ready or none may be
    /// made (see [`crate::spares`]).
    pub(crate) fn replenish(&self, limits: impl FnOnce() -> StoreLimits, ctx: &EvalContext) {
        self.spares
            .replenish(ctx, || self.instantiate(limits(), ctx));
    }

    /// Whether the next evaluation of `ctx`'s policy has its instance ready.
    pub(crate) fn has_spare_for(&self, ctx: &EvalContext) -> bool {
        self.spares.ready_for(ctx)
    }

    fn instantiate(&self, limits: StoreLimits, ctx: &EvalContext) -> Result<Ready, EvalError> {
        let state = ComponentState {
            limits,
            wasi: None,
            table: ResourceTable::new(),
            policy_id: ctx.policy_id.as_str().into(),
            capabilities: ctx.capabilities.clone(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        StoreLimits::install(&mut store, |s| &mut s.limits);
        match self.pre.instantiate(&mut store) {
            Ok(policy) => Ok((store, policy)),
            Err(e) => Err(match store.data().limits.classify(e) {
                EvalError::Trap(msg) => EvalError::Instantiation(msg),
                other => other,
            }),
        }
    }

    pub(crate) fn validate_settings(
        &self,
        limits: StoreLimits,
        ctx: &EvalContext,
        settings: &Settings,
    ) -> Result<SettingsVerdict, EvalError> {
        let (mut store, policy) = self.instantiate(limits, ctx)?;
        let answer = policy
            .call_validate_settings(&mut store, settings.json())
            .map_err(|e| store.data().limits.classify(e))?
            .map_err(EvalError::Guest)?;
        Ok(SettingsVerdict {
            valid: answer.valid,
            message: answer.message,
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
        let request = match request {
            PolicyRequest::AdmissionText(text) if text.spliceable() => {
                convert::admission_request_text(text)?
            }
            PolicyRequest::Admission(json) => convert::admission_request(json)?,
            PolicyRequest::AdmissionText(text) => convert::admission_request(text.tree())?,
            PolicyRequest::Raw(_) => {
                return Err(EvalError::Unsupported(
                    "WIT component policies evaluate admission requests only; raw requests \
                     need a waPC policy"
                        .into(),
                ));
            }
        };
        let request = bindings::portcullis::policy::types::ValidationRequest {
            request,
            settings: settings.json().to_string(),
        };
        let (mut store, policy) = self.instance(limits, ctx)?;
        let mut answer = None;
        for _ in 0..n.max(1) {
            answer = Some(
                policy
                    .call_validate(&mut store, &request)
                    .map_err(|e| store.data().limits.classify(e))?
                    .map_err(EvalError::Guest)?,
            );
        }
        let answer = answer.ok_or_else(|| EvalError::MalformedOutput("no answer".into()))?;
        Ok((convert::validation_response(answer)?, Retired::store(store)))
    }
}
