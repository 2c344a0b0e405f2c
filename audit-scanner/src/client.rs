//! The client of the policy-servers' `/audit/<policy id>` endpoint.
//!
//! Each PolicyServer is reached through its Service,
//! `https://policy-server-<name>.<controller namespace>.svc/audit/<id>`, over
//! TLS verified against the controller's CA (the `ca.crt` of the
//! `portcullis-ca` Secret), presenting a client certificate when the
//! policy-server requires one (mutual TLS). HTTP/1.1 with a pool of
//! keep-alive connections: about as many connections as evaluations in
//! flight, which kube-proxy spreads over the replicas (one HTTP/2
//! connection would pin every request to one replica), without a TLS
//! handshake per request.
//!
//! `--policy-server-address NAME=HOST:PORT` connects to another address
//! while still verifying the certificate for the Service's name: for runs
//! outside the cluster (`kubectl port-forward`) and the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest_oci as reqwest;

mod refusal;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::policies::truncate;

/// Longest response body read from a policy-server.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Longest message kept in a report result (a report holds one result per
/// policy and must stay well under the API server's object size limit).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Attempts for one evaluation when the policy-server cannot be reached,
/// or closed the connection before the request was written to it.
const CONNECT_ATTEMPTS: u32 = 3;
/// Attempts for one evaluation when the policy-server answers busy (429,
/// 503: its workers, shared with admission, stayed taken). A saturated
/// policy-server is waited for, with backoff, rather than turned into
/// `error` results, which would also rewrite the reports on the next run.
const BUSY_ATTEMPTS: u32 = 8;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why an attempt may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    No,
    Connect,
    Busy,
}

/// The wait before attempt `attempt` (1 = the first retry): exponential
/// from 200 ms, capped, with jitter in its upper half so that the
/// evaluations refused together do not come back together.
fn backoff(attempt: u32, jitter: u32) -> Duration {
    let base = Duration::from_millis(200)
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let half = base / 2;
    half + half.mul_f64(f64::from(jitter % 1000) / 1000.0)
}

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// How to reach and trust the policy-servers.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The controller's namespace (where the policy-server Services are).
    pub namespace: String,
    /// PEM bundle of the CA(s) that sign the policy-servers' certificates.
    pub ca_file: PathBuf,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// PolicyServer name → address to connect to instead of its Service.
    pub address_overrides: Vec<(String, SocketAddr)>,
}

/// What a policy answered for one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Admitted (with the policy's message, if any).
    Allowed(Option<String>),
    /// Rejected, with the message.
    Denied(Option<String>),
    /// No verdict: transport error, timeout, or an error answer.
    Error(String),
}

/// The client of every policy-server of one controller namespace.
#[derive(Debug, Clone)]
pub struct PolicyServerClient {
    http: reqwest::Client,
    namespace: String,
    refusal: refusal::RefusalProbe,
}

#[derive(Deserialize)]
struct ReviewAnswer {
    response: Option<ReviewResponse>,
}

#[derive(Deserialize)]
struct ReviewResponse {
    allowed: bool,
    status: Option<ReviewStatus>,
}

#[derive(Deserialize)]
struct ReviewStatus {
    message: Option<String>,
}

fn pem_error(path: &Path, reason: impl std::fmt::Display) -> ClientError {
    ClientError::Pem {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The host name of a PolicyServer's Service.
pub fn service_host(policy_server: &str, namespace: &str) -> String {
    portcullis_api::names::service_dns_names(policy_server, namespace)
        .into_iter()
        .next()
        .unwrap_or_default()
}

impl PolicyServerClient {
    /// Builds the client.
    pub fn new(options: &ClientOptions) -> Result<Self, ClientError> {
        // The workspace's rustls has no default provider; ring is the one
        // every Portcullis binary uses. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(&options.ca_file)? {
            roots
                .add(cert)
                .map_err(|e| pem_error(&options.ca_file, e))?;
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut tls = match &options.client_identity {
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut overrides = Vec::new();
        let mut http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .http1_only()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5));
        for (policy_server, addr) in &options.address_overrides {
            let host = service_host(policy_server, &options.namespace);
            http = http.resolve(&host, *addr);
            overrides.push((host, *addr));
        }
        Ok(Self {
            http: http.build()?,
            namespace: options.namespace.clone(),
            refusal: refusal::RefusalProbe::new(tls, overrides),
        })
    }

    /// Sends `body` (an AdmissionReview) to `/audit/<policy_id>` of
    /// `policy_server`; connection failures are retried twice, busy answers
    /// (429, 503) up to seven times, with backoff.
    pub async fn audit(
        &self,
        policy_server: &str,
        policy_id: &str,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> Verdict {
        let host = service_host(policy_server, &self.namespace);
        let url = format!("https://{host}/audit/{policy_id}");
        let mut attempt = 0;
        loop {
            let (verdict, retry) = self.attempt(&host, &url, body.clone(), timeout).await;
            attempt += 1;
            let limit = match retry {
                Retry::No => return verdict,
                Retry::Connect => CONNECT_ATTEMPTS,
                Retry::Busy => BUSY_ATTEMPTS,
            };
            if attempt >= limit {
                return verdict;
            }
            let jitter = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_micros())
                .unwrap_or(0);
            tokio::time::sleep(backoff(attempt, jitter)).await;
        }
    }

    async fn attempt(
        &self,
        host: &str,
        url: &str,
        body: bytes::Bytes,
        timeout: Duration,
    ) -> (Verdict, Retry) {
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .timeout(timeout)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let never_sent = never_sent(&e);
                // A connect timeout is retried like any unreachable
                // policy-server; the request's own timeout is not.
                let timed_out = e.is_timeout() && !e.is_connect();
                // Why the policy-server refused us, when it did, is what the
                // operator has to fix: a request never sent (see `refusal`)
                // or one written just as the refusal arrived, which hyper can
                // leave waiting until its timeout, asks.
                if (never_sent || timed_out)
                    && let Some(refusal) = self.refusal.refusal(host).await
                {
                    let message =
                        format!("{url}: the policy-server refused the connection: {refusal}");
                    return (Verdict::Error(message), Retry::No);
                }
                let retry = if never_sent || e.is_connect() {
                    Retry::Connect
                } else {
                    Retry::No
                };
                return (Verdict::Error(format!("{url}: {}", error_chain(&e))), retry);
            }
        };
        let status = response.status();
        let body = match read_capped(response).await {
            Ok(b) => b,
            Err(e) => return (Verdict::Error(format!("{url}: {e}")), Retry::No),
        };
        if !status.is_success() {
            let retry = if status.as_u16() == 429 || status.as_u16() == 503 {
                Retry::Busy
            } else {
                Retry::No
            };
            let text = truncate(&String::from_utf8_lossy(&body), MAX_MESSAGE_LEN);
            return (
                Verdict::Error(format!("{url}: HTTP {status}: {text}")),
                retry,
            );
        }
        (parse_answer(&body), Retry::No)
    }
}

/// The verdict in a policy-server's answer.
pub fn parse_answer(body: &[u8]) -> Verdict {
    match serde_json::from_slice::<ReviewAnswer>(body) {
        Ok(ReviewAnswer {
            response: Some(response),
        }) => {
            let message = response
                .status
                .and_then(|s| s.message)
                .filter(|m| !m.is_empty())
                .map(|m| truncate(&m, MAX_MESSAGE_LEN));
            if response.allowed {
                Verdict::Allowed(message)
            } else {
                Verdict::Denied(message)
            }
        }
        Ok(ReviewAnswer { response: None }) => {
            Verdict::Error("the answer has no response".to_string())
        }
        Err(e) => Verdict::Error(format!("the answer is not an AdmissionReview: {e}")),
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether hyper dropped the request before writing any of it: the
/// connection ended between the handshake and the first write (see
/// [`refusal`] for why that happens with mutual TLS). Such a request is safe
/// to repeat.
fn never_sent(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// An error with its sources (reqwest's Display alone says only "error
/// sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        assert_eq!(
            parse_answer(br#"{"response":{"uid":"u","allowed":true}}"#),
            Verdict::Allowed(None)
        );
        assert_eq!(
            parse_answer(br#"{"response":{"uid":"u","allowed":false,"status":{"message":"no"}}}"#),
            Verdict::Denied(Some("no".into()))
        );
        assert!(matches!(parse_answer(b"{}"), Verdict::Error(_)));
        assert!(matches!(parse_answer(b"not json"), Verdict::Error(_)));
        let long = format!(
            r#"{{"response":{{"allowed":false,"status":{{"message":"{}"}}}}}}"#,
            "x".repeat(10_000)
        );
        match parse_answer(long.as_bytes()) {
            Verdict::Denied(Some(m)) => assert_eq!(m.len(), MAX_MESSAGE_LEN),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff(1, 0), Duration::from_millis(100));
        assert_eq!(backoff(1, 999), Duration::from_micros(199_900));
        assert_eq!(backoff(2, 0), Duration::from_millis(200));
        assert_eq!(backoff(5, 0), Duration::from_millis(1600));
        assert_eq!(backoff(7, 0), MAX_BACKOFF / 2);
        assert!(backoff(40, 999) <= MAX_BACKOFF);
        // Seven waits at most, under 20 s in all (docs/audit.md): past a
        // burst of admission traffic, and well short of a Job deadline.
        let worst: Duration = (1..BUSY_ATTEMPTS).map(|a| backoff(a, 999)).sum();
        assert!(worst < Duration::from_secs(20), "{worst:?}");
    }

    #[test]
    fn services_are_named_after_the_policy_server() {
        assert_eq!(
            service_host("default", "portcullis"),
            "policy-server-default.portcullis.svc"
        );
    }
}
