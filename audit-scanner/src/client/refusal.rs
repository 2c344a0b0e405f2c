//! Why a policy-server ended a connection before a request was written.
//!
//! With TLS 1.3 a client considers the handshake done before the server has
//! checked its certificate. A policy-server that requires client
//! certificates refuses a missing or unknown one with an alert sent after
//! that point. Whether hyper reads the alert, or first notices only a dead
//! connection and drops the request with "connection was not ready", is a
//! race (on loopback hyper loses it about four times in ten). The alert is
//! what an operator needs to read in the report, so when a request was
//! never sent, one bare handshake with the same TLS settings, followed by a
//! read, asks again.
//!
//! The race has a rarer outcome too. hyper's connection task, on the
//! alert, closes its request channel and cancels what it finds queued; a
//! request whose hand-over to that channel is still half-way (a tokio mpsc
//! send is two steps) is not found, and stays in the channel, which the
//! waiting request itself keeps alive, until the request's timeout. On
//! loopback, with four copies of the test sharing two cores, about one
//! evaluation in 10,000 waited so. So a timed-out request asks as well;
//! against a policy-server that accepts the certificate that costs one more
//! handshake and at most [`REFUSAL_TIMEOUT`] of waiting, on a request that
//! has already failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use super::error_chain;

/// Longest wait for the connection and the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait, after the handshake, for the server's refusal. A server
/// that accepted the certificate waits for a request and says nothing.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Handshakes with a policy-server as the HTTP client does.
#[derive(Clone)]
pub(super) struct RefusalProbe {
    tls: tokio_rustls::TlsConnector,
    /// Service host name → address to connect to instead.
    overrides: Vec<(String, SocketAddr)>,
}

impl std::fmt::Debug for RefusalProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalProbe")
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

impl RefusalProbe {
    pub(super) fn new(tls: rustls::ClientConfig, overrides: Vec<(String, SocketAddr)>) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            overrides,
        }
    }

    /// The TLS error with which `host` refuses this client, if it does.
    /// `None` when it cannot be reached or accepts the handshake.
    pub(super) async fn refusal(&self, host: &str) -> Option<String> {
        let addr = match self.overrides.iter().find(|(h, _)| h == host) {
            Some((_, addr)) => *addr,
            None => tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, 443)))
                .await
                .ok()?
                .ok()?
                .next()?,
        };
        let name = ServerName::try_from(host.to_string()).ok()?;
        let handshake = async {
            let tcp = TcpStream::connect(addr).await?;
            self.tls.connect(name, tcp).await
        };
        let mut tls = match tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .ok()?
        {
            Ok(tls) => tls,
            Err(e) => return tls_error(&e),
        };
        let mut byte = [0u8; 1];
        match tokio::time::timeout(REFUSAL_TIMEOUT, tls.read(&mut byte)).await {
            Ok(Err(e)) => tls_error(&e),
            _ => None,
        }
    }
}

/// The error's text if it comes from TLS (not, say, a refused TCP
/// connection, which the normal retries handle).
fn tls_error(e: &std::io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(|_| error_chain(e))
}
