//! Whether a policy's webhook can be written: the policy-server's
//! ConfigMap holds the policy's current entry, its Deployment has rolled out,
//! and every ready replica reports (on `GET /readiness`, its probe port) that
//! it serves that ConfigMap's `policies.yml` with the policy loaded.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use portcullis_api::{PolicyServer, PolicyView};
use portcullis_config::{PoliciesConfig, PolicyEntry};
use serde::Deserialize;

use crate::context::{Context, Stores};
use crate::names::{LABEL_POLICY_SERVER, POLICIES_KEY, policy_server_object_name};
use crate::resources;

/// Largest response body accepted from a replica.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// How often replicas are asked again while they do not serve the current
/// configuration.
pub const REPLICA_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// Deadline of one replica's `GET /readiness`.
const REPLICA_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The request failed (connect, timeout, read).
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// Where the report was requested.
        addr: SocketAddr,
        /// What failed, with its causes.
        reason: String,
    },
    /// The answer is not a readiness report.
    #[error("bad answer from {addr}: {reason}")]
    BadResponse {
        /// Where the report was requested.
        addr: SocketAddr,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The HTTP client that asks replicas for their report (plain HTTP on the
/// probe port, never through a proxy: the address is a Pod's).
#[derive(Debug, Clone)]
pub struct ReplicaClient {
    http: reqwest_oci::Client,
}

impl ReplicaClient {
    /// A client with the report deadline.
    pub fn new() -> Result<Self, ReadinessError> {
        // The workspace's reqwest has rustls without a default provider; it
        // is never used for TLS here, but building the client needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest_oci::Client::builder()
            .no_proxy()
            .timeout(REPLICA_REPORT_TIMEOUT)
            .connect_timeout(REPLICA_REPORT_TIMEOUT)
            .user_agent(concat!("portcullis-controller/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ReadinessError::Client(error_chain(&e)))?;
        Ok(Self { http })
    }

    /// Fetches `http://<ip>:<port>/readiness` and parses the report. The HTTP
    /// status is ignored: a loading server answers 503 with a report too.
    pub async fn fetch_report(&self, ip: &str, port: u16) -> Result<ReplicaReport, ReadinessError> {
        let ip: IpAddr = ip.parse().map_err(|_| ReadinessError::NoAddress)?;
        let addr = SocketAddr::new(ip, port);
        let unreachable = |e: reqwest_oci::Error| ReadinessError::Unreachable {
            addr,
            reason: error_chain(&e),
        };
        let mut response = self
            .http
            .get(format!("http://{addr}/readiness"))
            .header("accept", "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ReadinessError::BadResponse {
                    addr,
                    reason: format!("report larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| ReadinessError::BadResponse {
            addr,
            reason: format!("invalid report: {e}"),
        })
    }
}

/// Whether a policy's webhook can be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every ready replica serves the current configuration with the policy loaded.
    Ready,
    /// Not yet; an event (ConfigMap, Deployment or Pod change) will tell.
    NotReady(&'static str, String),
    /// Not yet; replicas are polled again after [`REPLICA_POLL_INTERVAL`]
    /// (a configuration reload emits no Kubernetes event).
    Waiting(&'static str, String),
}

/// Whether the Deployment has finished rolling out: the latest spec is
/// observed and every replica is updated and ready.
pub fn deployment_ready(deployment: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (&deployment.spec, &deployment.status) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    want > 0
        && status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0)
        && updated >= want
        && status.ready_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) == updated
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Asks every ready replica of the PolicyServer which configuration it
/// serves; ready only when all serve `expected_digest` with `id` loaded.
async fn replicas_readiness(
    ctx: &Context,
    server: &PolicyServer,
    id: &str,
    expected_digest: &str,
) -> Readiness {
    let name = server.name_any();
    let ready: Vec<_> = ctx
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|p| p.labels().get(LABEL_POLICY_SERVER) == Some(&name) && pod_ready(p))
        .collect();
    if ready.is_empty() {
        return Readiness::Waiting(
            "PolicyServerNotReady",
            "no ready policy-server replica".to_string(),
        );
    }
    let port = u16::try_from(server.spec.readiness_probe_port).unwrap_or(8081);
    for pod in ready {
        let pod_name = pod.name_any();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let report = match ctx.replicas.fetch_report(&ip, port).await {
            Ok(report) => report,
            Err(e) => {
                return Readiness::Waiting(
                    "UnknownConfigurationVersion",
                    format!("replica {pod_name}: {e}"),
                );
            }
        };
        let digest = report.config_digest.as_deref().unwrap_or("none");
        if digest != expected_digest {
            return Readiness::Waiting(
                "ConfigurationVersionMismatch",
                format!(
                    "replica {pod_name} serves configuration {digest}, expected {expected_digest}"
                ),
            );
        }
        match report.policies.get(id) {
            Some(p) if p.state == "loaded" => {}
            Some(p) => {
                return Readiness::Waiting(
                    "PolicyLoadFailed",
                    format!(
                        "replica {pod_name}: {}",
                        p.reason.as_deref().unwrap_or(p.state.as_str())
                    ),
                );
            }
            None => {
                return Readiness::Waiting(
                    "ConfigurationVersionMismatch",
                    format!("replica {pod_name} does not report policy {id}"),
                );
            }
        }
    }
    Readiness::Ready
}

/// Whether `policy` can be served by `server`, and the mode the server's
/// configuration gives it (`status.mode`).
pub async fn server_readiness(
    ctx: &Context,
    server: &PolicyServer,
    policy: &PolicyView,
) -> (Readiness, Option<String>) {
    let name = policy_server_object_name(&server.name_any());
    let ns = &ctx.opts.namespace;
    let Some(config_map) = Stores::namespaced(&ctx.stores.config_maps, ns, &name) else {
        return (
            Readiness::NotReady(
                "ConfigMapMissing",
                format!("ConfigMap {ns}/{name} not found"),
            ),
            None,
        );
    };
    let served_yaml = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(POLICIES_KEY))
        .cloned()
        .unwrap_or_default();
    let served = PoliciesConfig::from_slice(served_yaml.as_bytes())
        .ok()
        .and_then(|cfg| cfg.policies.get(&policy.id).cloned());
    let mode = served
        .as_ref()
        .map(|e| PolicyEntry::policy_mode(e).as_str().to_string());
    let wanted = resources::config::policy_entry(policy, &server.spec);
    if served.as_ref() != Some(&wanted) {
        return (
            Readiness::NotReady(
                "ConfigurationVersionMismatch",
                "the policy-server configuration does not contain this policy's current spec yet"
                    .to_string(),
            ),
            mode,
        );
    }
    let Some(deployment) = Stores::namespaced(&ctx.stores.deployments, ns, &name) else {
        return (
            Readiness::NotReady(
                "DeploymentMissing",
                format!("Deployment {ns}/{name} not found"),
            ),
            mode,
        );
    };
    if !deployment_ready(&deployment) {
        return (
            Readiness::NotReady(
                "PolicyServerNotReady",
                format!("Deployment {ns}/{name} has not finished rolling out"),
            ),
            mode,
        );
    }
    let expected = portcullis_config::content_digest(served_yaml.as_bytes());
    let readiness = replicas_readiness(ctx, server, &policy.id, &expected).await;
    (readiness, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn deployment(generation: i64, replicas: i32, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    #[test]
    fn deployment_readiness() {
        let rolled_out = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            updated_replicas: Some(2),
            ready_replicas: Some(2),
            ..Default::default()
        };
        assert!(deployment_ready(&deployment(2, 2, rolled_out.clone())));
        // Spec change not observed yet.
        assert!(!deployment_ready(&deployment(3, 2, rolled_out.clone())));
        // An old replica is still around.
        let rolling = DeploymentStatus {
            replicas: Some(3),
            ..rolled_out.clone()
        };
        assert!(!deployment_ready(&deployment(2, 2, rolling)));
        // Not every replica ready.
        let unready = DeploymentStatus {
            ready_replicas: Some(1),
            ..rolled_out
        };
        assert!(!deployment_ready(&deployment(2, 2, unready)));
        // Scaled to zero: nothing serves the webhook.
        assert!(!deployment_ready(&deployment(
            1,
            0,
            DeploymentStatus::default()
        )));
        assert!(!deployment_ready(&Deployment::default()));
    }

    /// Serves `responses` one per connection, each written raw.
    async fn serve(responses: Vec<Vec<u8>>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for response in responses {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(&response).await.unwrap();
            }
        });
        port
    }

    fn http11(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn fetches_reports_over_http() {
        let port = serve(vec![
            // HTTP/1.1 with a length, a 200 and two policies.
            http11(
                "200 OK",
                r#"{"ready":true,"configDigest":"sha256:ab","generation":3,"policies":{"clusterwide-a":{"state":"loaded"},"clusterwide-b":{"state":"error","reason":"bad"}}}"#,
            ),
            // HTTP/1.0, the body delimited by the end of the connection, a 503
            // (what the tests' fake replicas send).
            b"HTTP/1.0 503 Service Unavailable\r\n\r\n{\"ready\":false}".to_vec(),
            http11("200 OK", "not json"),
        ])
        .await;
        let client = ReplicaClient::new().unwrap();
        let report = client.fetch_report("127.0.0.1", port).await.unwrap();
        assert!(report.ready);
        assert_eq!(report.config_digest.as_deref(), Some("sha256:ab"));
        assert_eq!(report.policies["clusterwide-a"].state, "loaded");
        assert_eq!(
            report.policies["clusterwide-b"].reason.as_deref(),
            Some("bad")
        );
        let report = client.fetch_report("127.0.0.1", port).await.unwrap();
        assert!(!report.ready);
        assert!(matches!(
            client.fetch_report("127.0.0.1", port).await,
            Err(ReadinessError::BadResponse { .. })
        ));
        assert!(matches!(
            client.fetch_report("", port).await,
            Err(ReadinessError::NoAddress)
        ));
    }

    #[tokio::test]
    async fn a_replica_that_does_not_answer_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and never answers.
        let _hold = tokio::spawn(async move {
            let conn = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(conn);
        });
        let started = std::time::Instant::now();
        let result = ReplicaClient::new()
            .unwrap()
            .fetch_report("127.0.0.1", port)
            .await;
        assert!(
            matches!(result, Err(ReadinessError::Unreachable { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
