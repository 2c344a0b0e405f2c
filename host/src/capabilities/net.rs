//! `net/v1/dns_lookup_host`, on hickory's async resolver.
//!
//! The incumbent resolves with a blocking `getaddrinfo` on its async loop;
//! here the lookup is an async task bounded by the evaluation's deadline
//! (and by the resolver's own timeout), with the system's resolv.conf and
//! hosts file, and the resolver's TTL-respecting cache.

use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use portcullis_adapters::{CallContext, CapabilityError};

use super::bridge::Bridge;

/// Upper bound of one lookup, whatever the deadline.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The DNS resolver of the host capabilities.
#[derive(Clone)]
pub struct DnsLookups {
    resolver: Result<Arc<TokioResolver>, String>,
    bridge: Bridge,
}

impl std::fmt::Debug for DnsLookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsLookups")
            .field("configured", &self.resolver.is_ok())
            .finish_non_exhaustive()
    }
}

impl DnsLookups {
    /// A resolver with the system configuration (`/etc/resolv.conf`).
    pub fn system(bridge: Bridge) -> Self {
        let resolver = TokioResolver::builder_tokio()
            .and_then(|mut builder| {
                builder.options_mut().timeout = LOOKUP_TIMEOUT / 2;
                builder.build()
            })
            .map(Arc::new)
            .map_err(|e| format!("cannot configure DNS resolution: {e}"));
        if let Err(reason) = &resolver {
            tracing::warn!(%reason, "net/v1/dns_lookup_host will fail");
        }
        Self { resolver, bridge }
    }

    /// Resolves `host` to `{"ips": [...]}`.
    pub fn lookup(&self, ctx: &CallContext<'_>, host: &str) -> Result<Vec<u8>, CapabilityError> {
        let resolver = self.resolver.clone().map_err(CapabilityError::Failed)?;
        let host = host.to_string();
        let what = format!("net/v1/dns_lookup_host {host:?}");
        self.bridge.run(ctx, &what, async move {
            let found = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(host.as_str()))
                .await
                .map_err(|_| CapabilityError::Failed(format!("DNS lookup of {host:?} timed out")))?
                .map_err(|e| CapabilityError::Failed(format!("DNS lookup of {host:?}: {e}")))?;
            let ips: Vec<String> = found.iter().map(|ip| ip.to_string()).collect();
            serde_json::to_vec(&serde_json::json!({ "ips": ips }))
                .map_err(|e| CapabilityError::Failed(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn localhost_and_literals_resolve_without_a_server() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dns = runtime.block_on(async { DnsLookups::system(Bridge::current().unwrap()) });
        let ctx = CallContext {
            policy_id: "p",
            deadline: Instant::now() + Duration::from_secs(5),
        };
        for (host, expected) in [("localhost", "127.0.0.1"), ("192.0.2.7", "192.0.2.7")] {
            let answer: serde_json::Value =
                serde_json::from_slice(&dns.lookup(&ctx, host).unwrap()).unwrap();
            let ips = answer["ips"].as_array().unwrap();
            assert!(ips.iter().any(|ip| ip == expected), "{host}: {answer}");
        }
    }
}
