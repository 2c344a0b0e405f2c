//! Portcullis host: the policy-server (an HTTPS Kubernetes admission
//! webhook evaluating WebAssembly policies) and the pieces the `portcullis`
//! CLI shares with it.
//!
//! Request path: [`http`] (axum routes behind a TLS-swapping accept loop) →
//! [`evaluation`] (snapshot lookup) → [`scheduler`] (fair share of the
//! workers, evaluation threads) → the adapters crate → [`admission`]
//! (JSONPatch, mode, message, caps).
//! [`policy_set`] holds the immutable policy snapshot that `reload` swaps.

pub mod admission;
pub mod capabilities;
pub mod cli;
pub mod evaluation;
pub mod fetch;
pub mod http;
mod memory;
pub mod metrics;
pub mod module_source;
pub mod policy_set;
mod reload;
pub mod scheduler;
pub mod server;
pub mod server_config;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod watch;

pub use server::{RunningServer, ServerError, run, start};
pub use server_config::ServerConfig;
