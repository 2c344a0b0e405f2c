//! The host capabilities a policy may call, gated by its `hostCapabilities`
//! patterns.
//!
//! Only `tracing/log` (always granted, as upstream) and `net/v1/dns_lookup_host`
//! are implemented so far; a granted but unimplemented capability answers a
//! clear error instead of pretending to succeed.

use std::net::ToSocketAddrs;

use portcullis_adapters::{CallContext, CapabilityError, HostCapabilities};

/// Host capabilities granted to one policy.
#[derive(Debug, Clone, Default)]
pub struct GrantedCapabilities {
    patterns: Vec<String>,
}

impl GrantedCapabilities {
    /// Grants the given patterns: `*`, `ns/*`, `ns/v1/*` or an exact
    /// `namespace/operation` path. An empty list grants nothing.
    pub fn new(patterns: Vec<String>) -> Self {
        Self { patterns }
    }

    /// Whether `namespace/operation` is covered by a granted pattern.
    pub fn is_granted(&self, namespace: &str, operation: &str) -> bool {
        let path = format!("{namespace}/{operation}");
        self.patterns.iter().any(|pattern| {
            pattern == "*"
                || *pattern == path
                || pattern
                    .strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with('/') && path.starts_with(prefix))
        })
    }
}

impl HostCapabilities for GrantedCapabilities {
    fn call(
        &self,
        ctx: &CallContext<'_>,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CapabilityError> {
        let policy_id = ctx.policy_id;
        // Logging is not a capability anyone should have to ask for.
        if (namespace, operation) == ("tracing", "log") {
            let message = String::from_utf8_lossy(payload);
            tracing::info!(target: "policy_log", policy_id, "{message}");
            return Ok(Vec::new());
        }
        if !self.is_granted(namespace, operation) {
            return Err(CapabilityError::NotGranted(format!(
                "{namespace}/{operation} (policy {policy_id} has hostCapabilities {:?})",
                self.patterns
            )));
        }
        match (namespace, operation) {
            ("net", "v1/dns_lookup_host") => dns_lookup(payload),
            _ => Err(CapabilityError::Failed(format!(
                "host capability {namespace}/{operation} is not implemented by this policy-server"
            ))),
        }
    }
}

fn dns_lookup(payload: &[u8]) -> Result<Vec<u8>, CapabilityError> {
    let host: String = serde_json::from_slice(payload).map_err(|e| {
        CapabilityError::Failed(format!(
            "dns_lookup_host: payload must be a JSON string: {e}"
        ))
    })?;
    // The guest runs on a blocking thread, so a blocking lookup is acceptable here.
    let ips: Vec<String> = (host.as_str(), 0)
        .to_socket_addrs()
        .map_err(|e| CapabilityError::Failed(format!("dns_lookup_host {host}: {e}")))?
        .map(|addr| addr.ip().to_string())
        .collect();
    serde_json::to_vec(&serde_json::json!({ "ips": ips }))
        .map_err(|e| CapabilityError::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallContext<'static> {
        CallContext {
            policy_id: "p",
            deadline: std::time::Instant::now() + std::time::Duration::from_secs(5),
        }
    }

    #[test]
    fn patterns() {
        let caps =
            GrantedCapabilities::new(vec!["oci/v1/*".into(), "net/v1/dns_lookup_host".into()]);
        assert!(caps.is_granted("oci", "v1/verify"));
        assert!(!caps.is_granted("oci", "v2/verify"));
        assert!(caps.is_granted("net", "v1/dns_lookup_host"));
        assert!(!caps.is_granted("kubernetes", "can_i"));
        assert!(GrantedCapabilities::new(vec!["*".into()]).is_granted("kubernetes", "can_i"));
        assert!(!GrantedCapabilities::default().is_granted("net", "v1/dns_lookup_host"));
    }

    #[test]
    fn denied_and_unimplemented_calls_fail_clearly() {
        let none = GrantedCapabilities::default();
        let err = none.call(&ctx(), "oci", "v1/verify", b"{}").unwrap_err();
        assert!(matches!(err, CapabilityError::NotGranted(ref m) if m.contains("oci/v1/verify")));
        let all = GrantedCapabilities::new(vec!["*".into()]);
        let err = all.call(&ctx(), "kubernetes", "can_i", b"{}").unwrap_err();
        assert!(err.to_string().contains("not implemented"));
        assert!(none.call(&ctx(), "tracing", "log", b"{}").is_ok());
    }

    #[test]
    fn dns_lookup_of_localhost() {
        let caps = GrantedCapabilities::new(vec!["net/*".into()]);
        let out = caps
            .call(&ctx(), "net", "v1/dns_lookup_host", b"\"localhost\"")
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(!value["ips"].as_array().unwrap().is_empty());
    }
}
