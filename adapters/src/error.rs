//! Typed errors: [`AdapterError`] when a module is loaded, [`EvalError`] when it runs.

use std::time::Duration;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The bytes are WebAssembly, but of a kind Portcullis does not run.
    #[error("unsupported module: {0}")]
    Unsupported(String),
    /// The bytes are not valid WebAssembly.
    #[error("invalid module: {0}")]
    Invalid(String),
    /// Compilation failed.
    #[error("compilation failed: {0}")]
    Compile(String),
    /// The module needs imports the host does not provide, or lacks the exports of its ABI.
    #[error("cannot link module: {0}")]
    Link(String),
    /// The engine could not be configured.
    #[error("engine error: {0}")]
    Engine(String),
}

/// Why an evaluation failed. The host turns each into a rejection with code 500.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The policy ran past its deadline and was interrupted.
    #[error("policy execution exceeded its {}ms deadline", .0.as_millis())]
    Timeout(Duration),
    /// The policy tried to grow its memory past the cap.
    #[error("policy exceeded its memory limit of {0} bytes")]
    OutOfMemory(u64),
    /// The guest trapped (including a stack overflow).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The guest exited (WASI `proc_exit`, `wasi:cli/exit`) instead of answering.
    #[error("policy exited with status {0} instead of answering")]
    Exited(i32),
    /// The guest reported an error.
    #[error("policy reported an error: {0}")]
    Guest(String),
    /// The guest's answer is not what the ABI prescribes.
    #[error("policy returned malformed output: {0}")]
    MalformedOutput(String),
    /// A fresh instance could not be created.
    #[error("cannot instantiate policy: {0}")]
    Instantiation(String),
    /// The request cannot be given to this kind of policy.
    #[error("unsupported request: {0}")]
    Unsupported(String),
    /// The request is not a well-formed admission request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The policy called a builtin function this host does not implement.
    #[error("policy called the builtin function `{0}`, which this host does not implement")]
    UnsupportedBuiltin(String),
}

impl EvalError {
    /// A short, stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            EvalError::Timeout(_) => "timeout",
            EvalError::OutOfMemory(_) => "out_of_memory",
            EvalError::Trap(_) => "trap",
            EvalError::Exited(_) => "exit",
            EvalError::Guest(_) => "guest_error",
            EvalError::MalformedOutput(_) => "malformed_output",
            EvalError::Instantiation(_) => "instantiation",
            EvalError::Unsupported(_) => "unsupported",
            EvalError::InvalidRequest(_) => "invalid_request",
            EvalError::UnsupportedBuiltin(_) => "unsupported_builtin",
        }
    }
}
