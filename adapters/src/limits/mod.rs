//! Containment shared by every adapter: what a guest can make the host do
//! (wait, allocate, log, print) is bounded, and costs only its own evaluation.
//!
//! - [`StoreLimits`] (`store.rs`): the per-evaluation limiter. Memory and
//!   tables are capped per store (the sum over every memory and table of the
//!   instance, not each one alone), the epoch deadline and the wall-clock
//!   deadline are set, and wasmtime's host-call fuel caps what the guest can
//!   hand the host at once. [`StoreLimits::classify`] turns whatever the guest
//!   did into a typed [`EvalError`](crate::EvalError).
//! - `deadline.rs`: blocking host calls race the evaluation's deadline.
//! - `wasi.rs`: WASI for policies. The `WasiCtx` has no files, network,
//!   environment or arguments; stdout and stderr go to the log through
//!   [`GuestOutput`]; and the two WASI functions that wait
//!   (`poll_oneoff` in WASI 0.1, `wasi:io/poll` in WASI 0.2) end at the
//!   deadline with a timeout.
//! - `output.rs`: [`GuestOutput`], the per-evaluation log budget shared by
//!   log calls and stdout/stderr lines.
//!
//! # How an adapter uses them
//!
//! A new adapter (a WASI command, Rego, ...) gets the same guarantees by:
//! 1. keeping the [`StoreLimits`] that [`LoadedModule`](crate::LoadedModule)
//!    hands it in its store data, and calling [`StoreLimits::install`] on the
//!    new `Store` (memory and table caps, epoch deadline, host-call fuel);
//! 2. linking WASI, if the guest imports it, with [`wasi::add_p1_to_linker`]
//!    or [`wasi::add_p2_to_linker`], and building the guest's `WasiCtx` with
//!    [`wasi::ctx_builder`];
//! 3. sending the guest's log calls through [`StoreLimits::output`]
//!    ([`GuestOutput::log`]), never straight to `tracing`;
//! 4. reading what the guest hands back (answers, host-call arguments) with a
//!    size check against [`GuestLimits::max_transfer_bytes`] before copying
//!    it, as the waPC adapter does, or through wasmtime's canonical ABI, which
//!    the fuel installed in step 1 caps;
//! 5. mapping every error of a guest call through [`StoreLimits::classify`].
//!
//! [`LoadedModule`](crate::LoadedModule) checks, for every adapter, that an
//! evaluation that returns after its deadline is a timeout.

pub(crate) mod deadline;
mod output;
mod store;
pub(crate) mod wasi;

pub(crate) use deadline::DeadlineExceeded;
pub(crate) use output::GuestOutput;
pub(crate) use store::StoreLimits;

/// What a guest may hand the host, or emit, in one evaluation. Part of
/// [`EngineConfig`](crate::EngineConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    /// Bytes a guest may hand the host at once: its answer (the validation
    /// response or error), or the arguments of one host call. A larger
    /// answer is [`EvalError::MalformedOutput`](crate::EvalError::MalformedOutput).
    /// It is also wasmtime's host-call fuel, which bounds every copy out of
    /// a guest's memory (WASI writes, component-model strings and lists).
    pub max_transfer_bytes: usize,
    /// Log messages per evaluation: log calls (`tracing/log`, `__console_log`,
    /// WIT `host.log`) and stdout/stderr lines together. Past it, messages
    /// are counted and reported in one "suppressed" line at the end.
    pub max_log_messages: u32,
    /// Bytes of log messages per evaluation.
    pub max_log_bytes: usize,
    /// Bytes of one log message; a longer one is cut, with a marker.
    pub max_log_line_bytes: usize,
    /// Bytes one WASI random call may ask for (`random_get`,
    /// `get-random-bytes`); more traps the guest.
    pub max_random_bytes: u64,
}

impl GuestLimits {
    /// The defaults.
    pub const DEFAULT: GuestLimits = GuestLimits {
        // Above the API server's 3 MiB request limit, so any object the
        // cluster can store fits in a mutated object, with room for the rest.
        max_transfer_bytes: 8 << 20,
        max_log_messages: 64,
        max_log_bytes: 32 << 10,
        max_log_line_bytes: 4 << 10,
        // Policies ask for a few bytes of seed; wasmtime allows 64 MiB.
        max_random_bytes: 1 << 20,
    };
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits::DEFAULT
    }
}
