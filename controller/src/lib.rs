//! Portcullis controller: the reconcilers that turn the
//! `policies.portcullis.dev/v1` resources (types in `portcullis-api`) into
//! policy-server Deployments and admission webhook configurations, and the
//! certificates that secure them.
//!
//! Where things are:
//! - [`controller`]: wiring, one watch per type, retries;
//! - [`policy_server`]: the PolicyServer reconciler;
//! - [`policy`]: the policy reconciler (every policy kind);
//! - [`readiness`]: when a policy-server serves a policy;
//! - [`rbac`]: what a policy-server may read, from what its policies declare;
//! - [`ca`] and [`certs`]: the CA and the serving certificates;
//! - [`resources`]: pure builders of every object written.
//!
//! See `docs/controller.md`.

pub mod backoff;
pub mod ca;
pub mod certs;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod policy_server;
pub mod rbac;
pub mod readiness;
pub mod resources;
pub mod watch;

/// The custom resource types (the `portcullis-api` crate).
pub use portcullis_api as crd;
