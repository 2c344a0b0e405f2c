//! Trace export (`--otlp-endpoint`): the `policy-server` binary sends its
//! request spans to a real OTLP/HTTP receiver on loopback, and a collector
//! that does not answer never costs a request.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use common::{fixture, module};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest_oci as reqwest;
use serde_json::Value;

const POLICY_ID: &str = "privileged-pods";
const UID: &str = "22222222-2222-2222-2222-222222222222";
/// A W3C trace context, as the API server sends it to webhooks.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP traces receiver: accepts `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, and keeps every request.
struct Receiver {
    addr: SocketAddr,
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Receiver {
    async fn start() -> Self {
        let exports = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&exports));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, exports }
    }

    /// Each exported span with the resource attributes of its batch.
    fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let exports = self.exports.lock().unwrap();
        let mut spans = Vec::new();
        for request in exports.iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }
}

async fn receive(
    State(exports): State<Arc<Mutex<Vec<ExportTraceServiceRequest>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let protobuf = [(header::CONTENT_TYPE, "application/x-protobuf")];
    if content_type != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, protobuf, Vec::new());
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            exports.lock().unwrap().push(request);
            let response = ExportTraceServiceResponse::default().encode_to_vec();
            (StatusCode::OK, protobuf, response)
        }
        Err(_) => (StatusCode::BAD_REQUEST, protobuf, Vec::new()),
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string(value: &str) -> any_value::Value {
    any_value::Value::StringValue(value.to_string())
}

/// The `policy-server` binary on loopback (plain HTTP), its stderr kept;
/// killed on drop.
struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(otlp_endpoint: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies.yml");
        std::fs::write(
            &policies,
            format!(
                "{POLICY_ID}:\n  module: {}\n",
                module("pod-privileged-wapc")
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_policy-server"))
            .args([
                "--addr",
                "127.0.0.1",
                "--port",
                "0",
                "--readiness-probe-port",
                "0",
                "--log-fmt",
                "json",
                "--otlp-endpoint",
                otlp_endpoint,
            ])
            .arg("--policies")
            .arg(&policies)
            .arg("--policies-download-dir")
            .arg(dir.path().join("store"))
            .arg("--compiled-cache-dir")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/test-compiled-cache"),
            )
            // Export every 100 ms instead of every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.namespace.name=tracing-test",
            )
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("PORTCULLIS_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut server = Self {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            _dir: dir,
        };
        server.addr = server.wait_ready();
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_ready(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = self
                .log()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|e| e["fields"]["message"] == "policy-server ready");
            if let Some(event) = ready {
                assert_eq!(event["fields"]["loaded"], 1, "{}", self.log());
                return event["fields"]["addr"].as_str().unwrap().parse().unwrap();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("policy-server exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "policy-server not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends the privileged-Pod review to the policy; returns the response.
    async fn validate(&self, traceparent: Option<&str>) -> Value {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/validate/{POLICY_ID}", self.addr))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&fixture("pod-privileged.json")).unwrap())
            .timeout(Duration::from_secs(30));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("JSON body");
        body["response"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn request_span_is_exported_with_the_verdict() {
    let receiver = Receiver::start().await;
    let server = Server::start(&format!("http://{}", receiver.addr));

    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let response = server.validate(Some(&traceparent)).await;
    assert_eq!(response["allowed"], false, "{response}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let (resource, span) = loop {
        let found = receiver.spans().into_iter().find(|(_, span)| {
            span.name == "request"
                && attribute(&span.attributes, "policy_id") == Some(&string(POLICY_ID))
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no request span exported; received {:?}\nserver log:\n{}",
            receiver.spans(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(
        attribute(&resource, "service.name"),
        Some(&string("policy-server")),
        "{resource:?}"
    );
    assert_eq!(
        attribute(&resource, "service.version"),
        Some(&string(env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        attribute(&resource, "k8s.namespace.name"),
        Some(&string("tracing-test")),
        "OTEL_RESOURCE_ATTRIBUTES: {resource:?}"
    );
    let attributes = &span.attributes;
    assert_eq!(attribute(attributes, "uid"), Some(&string(UID)), "{span:?}");
    assert_eq!(
        attribute(attributes, "allowed"),
        Some(&any_value::Value::BoolValue(false)),
        "{span:?}"
    );
    assert_eq!(
        attribute(attributes, "mutated"),
        Some(&any_value::Value::BoolValue(false)),
        "{span:?}"
    );
    assert_eq!(
        attribute(attributes, "path"),
        Some(&string(&format!("/validate/{POLICY_ID}")))
    );
    // Only the request span: not one span per WASI call the policy makes.
    let names: Vec<String> = receiver.spans().into_iter().map(|(_, s)| s.name).collect();
    assert!(names.iter().all(|n| n == "request"), "{names:?}");
    // The span joined the caller's trace.
    assert_eq!(hex::encode(&span.trace_id), TRACE_ID);
    assert_eq!(hex::encode(&span.parent_span_id), PARENT_SPAN_ID);
}

#[tokio::test]
async fn unreachable_collector_costs_no_request_and_one_warning() {
    // A port that was free a moment ago: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = Server::start(&format!("http://{closed}"));
    let warnings = |log: &str| {
        log.lines()
            .filter(|l| l.contains("cannot export traces to the OTLP collector"))
            .count()
    };

    let response = server.validate(None).await;
    assert_eq!(response["allowed"], false, "{response}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while warnings(&server.log()) == 0 {
        assert!(
            Instant::now() < deadline,
            "no export failure reported:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Later batches fail too; requests are answered, and nothing more is logged.
    for _ in 0..3 {
        let response = server.validate(None).await;
        assert_eq!(response["allowed"], false, "{response}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = server.log();
    assert_eq!(warnings(&log), 1, "{log}");
    assert!(
        !log.contains("trace export to the OTLP collector works again"),
        "{log}"
    );
}
