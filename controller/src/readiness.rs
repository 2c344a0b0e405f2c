//! What a policy-server replica reports on `GET /readiness` (its probe port):
//! the digest of the `policies.yml` it has in effect and the load state of
//! every policy. The controller activates a policy's webhook only once every
//! ready replica serves the current configuration.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response body accepted from a replica.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// The body of `GET /readiness`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaReport {
    /// Whether the initial load has finished.
    #[serde(default)]
    pub ready: bool,
    /// `sha256:<hex>` of the policies file in effect.
    #[serde(default)]
    pub config_digest: Option<String>,
    /// Load state by policy id.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyReport>,
}

/// Load state of one policy on a replica.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PolicyReport {
    /// `loaded`, `error`, ...
    pub state: String,
    /// Why the policy failed to load (`state: error`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Errors while asking a replica for its report.
#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    /// The pod has no (valid) IP yet.
    #[error("pod has no IP address")]
    NoAddress,
    /// Connecting, sending or reading failed.
    #[error("cannot reach {addr}: {source}")]
    Io {
        /// Where the report was requested.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the deadline.
    #[error("no answer from {0} in time")]
    Timeout(SocketAddr),
    /// The answer is not an HTTP response with a readiness report.
    #[error("bad answer from {addr}: {reason}")]
    BadResponse {
        /// Where the report was requested.
        addr: SocketAddr,
        /// What is wrong with it.
        reason: String,
    },
}

/// Fetches `http://<ip>:<port>/readiness` (HTTP/1.0, so the body ends at
/// connection close) and parses the report; the HTTP status is ignored since
/// a loading server answers 503 with a report too.
pub async fn fetch_report(
    ip: &str,
    port: u16,
    timeout: Duration,
) -> Result<ReplicaReport, ReadinessError> {
    let ip: IpAddr = ip.parse().map_err(|_| ReadinessError::NoAddress)?;
    let addr = SocketAddr::new(ip, port);
    tokio::time::timeout(timeout, fetch(addr))
        .await
        .map_err(|_| ReadinessError::Timeout(addr))?
}

async fn fetch(addr: SocketAddr) -> Result<ReplicaReport, ReadinessError> {
    let io = |source| ReadinessError::Io { addr, source };
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    let request =
        format!("GET /readiness HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await
        .map_err(io)?;
    parse_response(&response).map_err(|reason| ReadinessError::BadResponse { addr, reason })
}

fn parse_response(response: &[u8]) -> Result<ReplicaReport, String> {
    if !response.starts_with(b"HTTP/1.") {
        return Err("not an HTTP/1 response".to_string());
    }
    let body_start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .ok_or_else(|| "no end of headers".to_string())?;
    serde_json::from_slice(&response[body_start..]).map_err(|e| format!("invalid report: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"ready\":true,\"configDigest\":\"sha256:ab\",\"generation\":3,\"policies\":{\"clusterwide-a\":{\"state\":\"loaded\",\"module\":\"m\"},\"clusterwide-b\":{\"state\":\"error\",\"reason\":\"bad settings\"}}}";
        let report = parse_response(response).unwrap();
        assert!(report.ready);
        assert_eq!(report.config_digest.as_deref(), Some("sha256:ab"));
        assert_eq!(report.policies["clusterwide-a"].state, "loaded");
        assert_eq!(
            report.policies["clusterwide-b"].reason.as_deref(),
            Some("bad settings")
        );
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 503 x\r\n\r\nnot json").is_err());
    }

    #[tokio::test]
    async fn fetches_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n{\"ready\":false}")
                .await
                .unwrap();
        });
        let report = fetch_report("127.0.0.1", port, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!report.ready);
        assert!(matches!(
            fetch_report("", port, Duration::from_secs(1)).await,
            Err(ReadinessError::NoAddress)
        ));
    }
}
