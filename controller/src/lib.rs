//! Portcullis controller: the `policies.portcullis.dev/v1` CRDs, the
//! reconcilers that turn them into policy-server Deployments and admission
//! webhook configurations, and the certificates that secure them.
//!
//! See `docs/controller.md`.

pub mod certs;
pub mod controller;
pub mod crd;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod readiness;
pub mod resources;
