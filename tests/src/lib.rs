//! End-to-end test support.

pub mod control_plane;
pub mod e2e;
pub mod http;
pub mod policy_server;
