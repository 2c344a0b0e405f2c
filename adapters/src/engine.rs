//! The shared wasmtime [`Engine`]: pooling allocator, epoch deadlines, memory
//! caps and the on-disk cache of compiled artifacts.
//!
//! Lifetimes: one [`PolicyEngine`] per process; one [`LoadedModule`] per module
//! (it owns the `InstancePre`); one `Store` and instance per evaluation, dropped
//! when the evaluation returns so that nothing leaks between requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::cache::CompiledCache;
use crate::error::{AdapterError, EvalError};
use crate::limits::GuestLimits;
pub(crate) use crate::limits::StoreLimits;
use crate::metadata::{PolicyMetadata, read_metadata};
use crate::retired::Retired;
use crate::spares::SpareBudget;
use crate::types::{
    Abi, EvalContext, ExecutionMode, PolicyRequest, Settings, SettingsVerdict, ValidationResponse,
};
use crate::{component, detect, rego, wapc, wasi_command};

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Use the pooling instance allocator (slots are reused, memories are
    /// copy-on-write images kept mapped); otherwise allocate on demand.
    pub pooling: bool,
    /// How many instances may exist at once (the pool size).
    pub max_instances: u32,
    /// Memory cap per instance, in bytes.
    pub max_memory_bytes: u64,
    /// Period of the epoch ticker, which bounds the resolution of deadlines.
    pub epoch_tick: Duration,
    /// Where compiled artifacts are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Bytes at the start of each pooled linear memory that are reset with
    /// `memset` and stay resident, instead of being returned to the kernel
    /// and faulted in again by the next instance.
    pub keep_resident_bytes: usize,
    /// What a guest may hand the host, or log, in one evaluation.
    pub guest: GuestLimits,
    /// How many spare component instances the engine may hold at once, over
    /// all policies: instances made after an evaluation, ready for the
    /// policy's next one, so that a request does not wait for its
    /// instantiation. Never more than an eighth of `max_instances`, since
    /// spares hold pool slots; 0 turns them off.
    pub spare_instances: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            pooling: true,
            max_instances: 256,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(10),
            cache_dir: None,
            // Measured best in `just bench` (see BENCHMARKS.md): with
            // PAGEMAP_SCAN only dirtied pages count against it.
            keep_resident_bytes: 8 << 20,
            guest: GuestLimits::DEFAULT,
            spare_instances: 32,
        }
    }
}

/// One wasmtime engine, and its epoch ticker, shared by every policy.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) engine: Engine,
    compile_config: Config,
    pub(crate) config: EngineConfig,
    cache: Option<CompiledCache>,
    wapc_linker: wapc::SharedLinker,
    component_linker: component::SharedLinker,
    wasi_command_linker: wasi_command::SharedLinker,
    rego_linker: rego::SharedLinker,
    ticker_stop: Arc<AtomicBool>,
    spare_budget: Arc<SpareBudget>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PolicyEngine {
    /// Build the engine and start its epoch ticker thread.
    pub fn new(config: EngineConfig) -> Result<Self, AdapterError> {
        let mut wasm_config = Config::new();
        wasm_config
            .epoch_interruption(true)
            .wasm_component_model(true)
            // TinyGo and Go 1.2x policies use typed function references.
            .wasm_function_references(true)
            .cranelift_opt_level(OptLevel::Speed)
            .memory_init_cow(true);
        // Compiling happens in a throwaway engine with the same code
        // generation settings (the allocator does not affect artifacts):
        // Cranelift keeps its per-thread compilation contexts, with buffers
        // sized for the largest function it ever compiled, for the life of
        // the engine that compiled.
        let compile_config = wasm_config.clone();
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            let n = config.max_instances;
            pool.total_core_instances(n * 4)
                .total_component_instances(n)
                .total_memories(n * 2)
                .total_tables(n * 8)
                .max_memory_size(config.max_memory_bytes as usize)
                .max_core_instances_per_component(32)
                .max_memories_per_component(4)
                .max_tables_per_component(16)
                .linear_memory_keep_resident(config.keep_resident_bytes)
                // With PAGEMAP_SCAN (Linux >= 6.7) only the pages an instance
                // dirtied are reset, and they stay resident: the next instance
                // takes no page faults on them. Falls back to madvise elsewhere.
                .pagemap_scan(wasmtime::Enabled::Auto)
                .table_keep_resident(64 << 10);
            wasm_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm_config).map_err(|e| AdapterError::Engine(e.to_string()))?;
        let cache = config
            .cache_dir
            .clone()
            .map(|dir| CompiledCache::new(dir, &engine, &config));

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), config.epoch_tick, ticker_stop.clone())?;

        // Spares hold pool slots that evaluations may need.
        let spare_budget = SpareBudget::new(config.spare_instances.min(config.max_instances / 8));
        Ok(PolicyEngine {
            inner: Arc::new(EngineInner {
                wapc_linker: wapc::linker(&engine)?,
                component_linker: component::linker(&engine)?,
                wasi_command_linker: wasi_command::linker(&engine)?,
                rego_linker: rego::linker(&engine)?,
                engine,
                compile_config,
                config,
                cache,
                ticker_stop,
                spare_budget,
            }),
        })
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Detect the ABI, compile the module (or load it from the on-disk cache)
    /// and build its `InstancePre`.
    ///
    /// The module runs in the execution mode of its metadata, if it names
    /// one; [`LoadedModule::with_execution_mode`] sets another.
    pub fn load(&self, wasm: &[u8]) -> Result<LoadedModule, AdapterError> {
        let abi = detect::detect_abi(wasm)?;
        let metadata = read_metadata(wasm).map_err(AdapterError::Invalid)?;
        let metadata_mode = metadata
            .as_ref()
            .and_then(|m| m.execution_mode.as_deref())
            .map(|mode| {
                mode.parse::<ExecutionMode>()
                    .map_err(|e| AdapterError::Invalid(format!("module metadata: {e}")))
            })
            .transpose()?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(wasm)));
        let inner = &self.inner;
        let artifact = self.artifact(wasm, abi, &digest)?;
        let kind = match artifact {
            Artifact::Module(module) if abi == Abi::WasiCommand => ModuleKind::WasiCommand(
                wasi_command::WasiCommandModule::new(&inner.wasi_command_linker, module)?,
            ),
            Artifact::Module(module) if abi == Abi::Opa => {
                let limits = StoreLimits::new(
                    inner.config.max_memory_bytes,
                    inner.config.epoch_tick,
                    rego::INTROSPECTION_TIMEOUT,
                    inner.config.guest,
                );
                ModuleKind::Rego(rego::RegoModule::new(&inner.rego_linker, module, limits)?)
            }
            Artifact::Module(module) => {
                ModuleKind::Wapc(wapc::WapcModule::new(&inner.wapc_linker, module)?)
            }
            Artifact::Component(component) => {
                ModuleKind::Component(component::ComponentModule::new(
                    &inner.component_linker,
                    component,
                    inner.spare_budget.clone(),
                )?)
            }
        };
        let loaded = LoadedModule {
            inner: Arc::new(ModuleInner {
                engine: self.clone(),
                digest,
                metadata,
                kind,
            }),
            mode: None,
        };
        match metadata_mode {
            Some(mode) => loaded.with_execution_mode(mode),
            None => Ok(loaded),
        }
    }
}

enum Artifact {
    Module(wasmtime::Module),
    Component(wasmtime::component::Component),
}

impl PolicyEngine {
    /// The compiled artifact: from the on-disk cache when it holds a usable
    /// one, otherwise compiled (and cached).
    fn artifact(&self, wasm: &[u8], abi: Abi, digest: &str) -> Result<Artifact, AdapterError> {
        let inner = &self.inner;
        if let Some(cache) = &inner.cache
            && let Some(bytes) = cache.read(digest, abi)
        {
            match self.deserialize(&bytes, abi) {
                Ok(artifact) => return Ok(artifact),
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "discarding unusable compiled artifact")
                }
            }
        }
        let compiler = Engine::new(&inner.compile_config)
            .map_err(|e| AdapterError::Engine(format!("{e:#}")))?;
        let compiled = match abi {
            Abi::Wapc | Abi::WasiCommand => {
                wasmtime::Module::new(&compiler, wasm).and_then(|m| m.serialize())
            }
            Abi::Opa => {
                let rewritten = rego::define_imported_memory(wasm)
                    .map_err(|e| AdapterError::Invalid(format!("OPA module: {e}")))?;
                wasmtime::Module::new(&compiler, &rewritten).and_then(|m| m.serialize())
            }
            Abi::Component => {
                wasmtime::component::Component::new(&compiler, wasm).and_then(|c| c.serialize())
            }
        };
        let bytes = compiled.map_err(|e| AdapterError::Compile(format!("{e:#}")))?;
        drop(compiler);
        if let Some(cache) = &inner.cache {
            cache.write(digest, abi, &bytes);
        }
        self.deserialize(&bytes, abi)
            .map_err(|e| AdapterError::Compile(format!("{e:#}")))
    }

    fn deserialize(&self, bytes: &[u8], abi: Abi) -> wasmtime::Result<Artifact> {
        let engine = &self.inner.engine;
        // SAFETY: the bytes are an artifact serialized by an engine with this
        // engine's code-generation settings: either just now, or by a cache
        // entry whose name carries this engine's fingerprint. wasmtime checks
        // the header and the settings again.
        Ok(match abi {
            Abi::Wapc | Abi::WasiCommand | Abi::Opa => {
                Artifact::Module(unsafe { wasmtime::Module::deserialize(engine, bytes)? })
            }
            Abi::Component => Artifact::Component(unsafe {
                wasmtime::component::Component::deserialize(engine, bytes)?
            }),
        })
    }
}

fn spawn_epoch_ticker(
    engine: Engine,
    tick: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(), AdapterError> {
    std::thread::Builder::new()
        .name("portcullis-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| AdapterError::Engine(format!("cannot start the epoch ticker: {e}")))
}

/// A compiled module and its `InstancePre`, shared by every policy that uses
/// the same module bytes, and the execution mode it runs in. Cheap to clone.
#[derive(Clone)]
pub struct LoadedModule {
    inner: Arc<ModuleInner>,
    mode: Option<ExecutionMode>,
}

struct ModuleInner {
    engine: PolicyEngine,
    digest: String,
    metadata: Option<PolicyMetadata>,
    kind: ModuleKind,
}

enum ModuleKind {
    Wapc(wapc::WapcModule),
    Component(component::ComponentModule),
    WasiCommand(wasi_command::WasiCommandModule),
    Rego(rego::RegoModule),
}

impl LoadedModule {
    /// The ABI the module speaks.
    pub fn abi(&self) -> Abi {
        match self.inner.kind {
            ModuleKind::Wapc(_) => Abi::Wapc,
            ModuleKind::Component(_) => Abi::Component,
            ModuleKind::WasiCommand(_) => Abi::WasiCommand,
            ModuleKind::Rego(_) => Abi::Opa,
        }
    }

    /// The same compiled module, run in execution `mode` (Kubewarden's
    /// `executionMode`). Cheap: the compiled code is shared. Fails when the
    /// module cannot run in that mode.
    pub fn with_execution_mode(&self, mode: ExecutionMode) -> Result<LoadedModule, AdapterError> {
        let fits = matches!(
            (&self.inner.kind, mode),
            (ModuleKind::Wapc(_), ExecutionMode::KubewardenWapc)
                | (
                    ModuleKind::Rego(_),
                    ExecutionMode::Opa | ExecutionMode::Gatekeeper
                )
                | (ModuleKind::WasiCommand(_), ExecutionMode::Wasi)
        );
        if !fits {
            let what = match self.abi() {
                Abi::Wapc => "a waPC module",
                Abi::Component => "a WIT component, which has no execution mode",
                Abi::Opa => "an OPA module (it runs as opa or gatekeeper)",
                Abi::WasiCommand => "a WASI command module (it runs as wasi)",
            };
            let needs = match mode {
                ExecutionMode::KubewardenWapc => "a waPC module",
                ExecutionMode::Wasi => "a WASI command module (exporting _start)",
                _ => "an OPA module (built with `opa build -t wasm`)",
            };
            return Err(AdapterError::Unsupported(format!(
                "execution mode {mode} needs {needs}, but this is {what}"
            )));
        }
        Ok(LoadedModule {
            inner: self.inner.clone(),
            mode: Some(mode),
        })
    }

    /// The execution mode the module runs in, when one applies: set by
    /// [`LoadedModule::with_execution_mode`] or the module's metadata, and
    /// `kubewarden-wapc` for waPC modules without either.
    pub fn execution_mode(&self) -> Option<ExecutionMode> {
        match (&self.inner.kind, self.mode) {
            (_, Some(mode)) => Some(mode),
            (ModuleKind::Wapc(_), None) => Some(ExecutionMode::KubewardenWapc),
            (ModuleKind::WasiCommand(_), None) => Some(ExecutionMode::Wasi),
            _ => None,
        }
    }

    /// What an OPA module declares: its ABI version, entrypoints and the
    /// builtins it needs from the host (flagging those not implemented).
    /// `None` for other modules.
    pub fn opa_info(&self) -> Option<&rego::OpaModuleInfo> {
        match &self.inner.kind {
            ModuleKind::Rego(m) => Some(m.info()),
            _ => None,
        }
    }

    /// `sha256:<hex>` of the module bytes.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The embedded metadata, when the module carries it.
    pub fn metadata(&self) -> Option<&PolicyMetadata> {
        self.inner.metadata.as_ref()
    }

    /// Ask the policy whether `settings` are valid, in a fresh instance.
    pub fn validate_settings(
        &self,
        ctx: &EvalContext,
        settings: &Settings,
    ) -> Result<SettingsVerdict, EvalError> {
        let limits = self.limits(ctx);
        let deadline = limits.deadline;
        let verdict = match &self.inner.kind {
            ModuleKind::Wapc(m) => m.validate_settings(limits, ctx, settings),
            ModuleKind::Component(m) => m.validate_settings(limits, ctx, settings),
            ModuleKind::WasiCommand(m) => m.validate_settings(limits, ctx, settings),
            ModuleKind::Rego(m) => m.validate_settings(self.mode, settings),
        };
        on_time(verdict, deadline, ctx)
    }

    /// Evaluate one request in a fresh instance.
    pub fn validate(
        &self,
        ctx: &EvalContext,
        request: &PolicyRequest,
        settings: &Settings,
    ) -> Result<ValidationResponse, EvalError> {
        self.validate_then(ctx, request, settings, |verdict| verdict)
    }

    /// Evaluate one request in a fresh instance, and hand the verdict to
    /// `deliver` before the instance is torn down.
    ///
    /// Tearing an instance down (returning its slot to the pool, which
    /// resets the memory the guest dirtied) costs as much as making it, and
    /// the verdict does not wait for it: a caller that answers from
    /// `deliver` answers sooner. The work is the same, done on this thread
    /// after `deliver` returns, before this function does; every evaluation
    /// still gets an instance no other evaluation has used.
    ///
    /// For a component, this thread then also makes the instance the
    /// policy's next evaluation will take (a spare, see `spares.rs`), so
    /// that the next request does not wait for its instantiation either.
    pub fn validate_then<R>(
        &self,
        ctx: &EvalContext,
        request: &PolicyRequest,
        settings: &Settings,
        deliver: impl FnOnce(Result<ValidationResponse, EvalError>) -> R,
    ) -> R {
        let limits = self.limits(ctx);
        let deadline = limits.deadline;
        let (verdict, retired) = match &self.inner.kind {
            ModuleKind::Wapc(m) => retiring(m.validate(limits, ctx, request, settings)),
            ModuleKind::Component(m) => retiring(m.validate(limits, ctx, request, settings)),
            ModuleKind::WasiCommand(m) => retiring(m.validate(limits, ctx, request, settings)),
            ModuleKind::Rego(m) => {
                retiring(m.validate(limits, ctx, self.mode, request, settings, 1))
            }
        };
        let answer = deliver(on_time(verdict, deadline, ctx));
        drop(retired);
        if let ModuleKind::Component(m) = &self.inner.kind {
            m.replenish(|| self.limits(ctx), ctx);
        }
        answer
    }

    /// Whether the next evaluation under `ctx` will take a spare instance,
    /// made after an earlier evaluation of the same policy, instead of
    /// instantiating while the request waits. Only components have spares.
    #[doc(hidden)]
    pub fn has_spare_for(&self, ctx: &EvalContext) -> bool {
        match &self.inner.kind {
            ModuleKind::Component(m) => m.has_spare_for(ctx),
            _ => false,
        }
    }

    /// Evaluate `n` requests in one instance, reusing it. For benchmarks only:
    /// it measures the lower bound of a call without instantiation, and gives
    /// up the isolation that production evaluations have.
    #[doc(hidden)]
    pub fn validate_reusing_instance(
        &self,
        ctx: &EvalContext,
        request: &PolicyRequest,
        settings: &Settings,
        n: usize,
    ) -> Result<ValidationResponse, EvalError> {
        let limits = self.limits(ctx);
        match &self.inner.kind {
            ModuleKind::Wapc(m) => m
                .validate_n(limits, ctx, request, settings, n)
                .map(|(verdict, _)| verdict),
            ModuleKind::Component(m) => m
                .validate_n(limits, ctx, request, settings, n)
                .map(|(verdict, _)| verdict),
            // A command runs once per instance: `n` calls are `n` fresh
            // instances, each with its own limits.
            ModuleKind::WasiCommand(m) => {
                let (mut answer, _) = m.validate(limits, ctx, request, settings)?;
                for _ in 1..n {
                    answer = m.validate(self.limits(ctx), ctx, request, settings)?.0;
                }
                Ok(answer)
            }
            ModuleKind::Rego(m) => m
                .validate(limits, ctx, self.mode, request, settings, n)
                .map(|(verdict, _)| verdict),
        }
    }

    /// For an OPA module, the value of its entrypoint for one request, before
    /// it becomes a verdict (`None`: undefined); for conformance tests that
    /// count violations. Runs in a fresh instance like [`Self::validate`].
    #[doc(hidden)]
    pub fn opa_entrypoint_value(
        &self,
        ctx: &EvalContext,
        request: &PolicyRequest,
        settings: &Settings,
    ) -> Result<Option<serde_json::Value>, EvalError> {
        match &self.inner.kind {
            ModuleKind::Rego(m) => {
                m.entrypoint_value(self.limits(ctx), ctx, self.mode, request, settings)
            }
            _ => Err(EvalError::Unsupported("not an OPA module".into())),
        }
    }

    fn limits(&self, ctx: &EvalContext) -> StoreLimits {
        let config = &self.inner.engine.inner.config;
        StoreLimits::new(
            config.max_memory_bytes,
            config.epoch_tick,
            ctx.timeout,
            config.guest,
        )
    }
}

/// A verdict and the Store to drop after it; a failed evaluation has
/// dropped its Store already.
fn retiring(
    outcome: Result<(ValidationResponse, Retired), EvalError>,
) -> (Result<ValidationResponse, EvalError>, Retired) {
    match outcome {
        Ok((verdict, retired)) => (Ok(verdict), retired),
        Err(error) => (Err(error), Retired::NOTHING),
    }
}

/// An answer that comes after the deadline is a timeout, whatever it says.
///
/// The epoch interrupts a guest only a tick or two after the deadline, and a
/// host call may return late (an embedder's capability that overran it): a
/// verdict must not depend on which of them won.
fn on_time<T>(
    answer: Result<T, EvalError>,
    deadline: Instant,
    ctx: &EvalContext,
) -> Result<T, EvalError> {
    match answer {
        Ok(_) | Err(EvalError::Guest(_)) if Instant::now() > deadline => {
            Err(EvalError::Timeout(ctx.timeout))
        }
        answer => answer,
    }
}
