//! The HTTP side of the policy-server: routes, JSON errors and the
//! TLS-swapping accept loop.

pub(crate) mod activity;
pub(crate) mod api_error;
pub(crate) mod body;
pub(crate) mod handlers;
pub(crate) mod listener;
pub(crate) mod router;

pub use api_error::ApiError;
