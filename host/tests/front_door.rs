//! The HTTP front door against hostile clients, with real sockets: slow
//! and idle connections are cut, the connection cap holds, an oversized
//! body gets a JSON 413 over HTTP/2 (what the API server speaks) as over
//! HTTP/1.1, each endpoint is reachable only where documented, and metric
//! labels take no unbounded values from requests.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Options, TestServer, fixture, module, policies_yaml};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Scheduling slack on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

fn priv_policy() -> String {
    policies_yaml(&[
        ("priv", format!("module: {}", module("pod-privileged-wapc"))),
        (
            "raw",
            format!(
                "module: {}\nsettings: {{behaviour: accept}}",
                module("adversarial-wapc")
            ),
        ),
    ])
}

fn webhook_addr(server: &TestServer) -> SocketAddr {
    server.server.as_ref().expect("running").addr()
}

/// Plain HTTP with short timeouts and room for four connections.
fn slow_client_options() -> Options {
    Options {
        tls: false,
        tweak: Box::new(|c| {
            c.header_read_timeout = HEADER_TIMEOUT;
            c.keep_alive_timeout = KEEP_ALIVE;
            c.max_connections = 4;
        }),
        ..Options::default()
    }
}

/// Waits until the server closes `stream` (EOF or reset); returns when.
async fn closed_by_server(mut stream: tokio::net::tcp::OwnedReadHalf) -> Instant {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_and_the_connection_cap_holds() {
    let server = TestServer::start(&priv_policy(), slow_client_options()).await;
    let addr = webhook_addr(&server);

    // Four clients take every connection and dribble header bytes.
    let started = Instant::now();
    let mut dribblers = Vec::new();
    for n in 0..4 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, mut write) = stream.into_split();
        dribblers.push(tokio::spawn(closed_by_server(read)));
        tokio::spawn(async move {
            let head = format!("POST /validate/priv HTTP/1.1\r\nHost: x\r\nX-Slow-{n}: ");
            if write.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if write.write_all(b"a").await.is_err() {
                    return;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A real client waits for a connection slot, then is served.
    let review = fixture("pod-privileged.json");
    let asked = Instant::now();
    let (status, body) = server.post("/validate/priv", &review).await;
    let waited = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        waited >= HEADER_TIMEOUT.saturating_sub(Duration::from_millis(400)),
        "served after {waited:?}: the four slow clients should have held every connection"
    );
    assert!(
        waited < HEADER_TIMEOUT * 2 + SLACK,
        "served only after {waited:?}"
    );

    for dribbler in dribblers {
        let closed = tokio::time::timeout(Duration::from_secs(10), dribbler)
            .await
            .expect("a slow client was never disconnected")
            .unwrap();
        let lived = closed - started;
        assert!(
            lived < HEADER_TIMEOUT * 2 + SLACK,
            "a slow client kept its connection for {lived:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_kept_alive_connections_are_closed() {
    let server = TestServer::start(&priv_policy(), slow_client_options()).await;
    let addr = webhook_addr(&server);

    // Connects and never sends a byte.
    let silent = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    let (read, _write) = silent.into_split();
    let closed = tokio::time::timeout(Duration::from_secs(10), closed_by_server(read))
        .await
        .expect("a silent connection was never closed");
    let lived = closed - opened;
    assert!(
        lived >= HEADER_TIMEOUT.saturating_sub(Duration::from_millis(200))
            && lived < HEADER_TIMEOUT + SLACK,
        "a silent connection lived {lived:?}"
    );

    // One request on a keep-alive connection, then nothing.
    let body = serde_json::to_vec(&fixture("pod-unprivileged.json")).unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /validate/priv HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("\"allowed\"") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    let (read, _write) = stream.into_split();
    let closed = tokio::time::timeout(Duration::from_secs(10), closed_by_server(read))
        .await
        .expect("an idle keep-alive connection was never closed");
    let idle = closed - answered;
    assert!(
        idle >= KEEP_ALIVE.saturating_sub(Duration::from_millis(300)) && idle < KEEP_ALIVE + SLACK,
        "an idle keep-alive connection lived {idle:?} after its last answer"
    );
    server.stop().await;
}

/// An HTTP/2 connection over TLS, negotiated with ALPN as the API server
/// does, with the h2 crate: it shows what hyper's client hides, whether the
/// server reset a request stream before reading all of its body.
async fn h2_connection(server: &TestServer) -> h2::client::SendRequest<Bytes> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certificates(&server.pki.ca_pem) {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(webhook_addr(server)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the server must offer h2"
    );
    let (sender, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    sender
}

fn pem_certificates(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

/// Posts `body` over HTTP/2 in 64 KiB frames, with a `content-length` or
/// without one (a client streaming a body of unknown size). Fails if the
/// server resets the stream before the whole body is sent: clients such as
/// curl (nghttp2) then report the reset, not the answer.
async fn h2_post(
    sender: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    body: Vec<u8>,
    with_length: bool,
) -> Result<(u16, Value), String> {
    let mut request = http::Request::post(format!("https://127.0.0.1{path}"))
        .header("content-type", "application/json");
    if with_length {
        request = request.header("content-length", body.len());
    }
    let request = request.body(()).unwrap();
    let ready = sender.clone().ready().await.map_err(|e| e.to_string())?;
    *sender = ready;
    let (response, mut stream) = sender
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    let mut rest = Bytes::from(body);
    while !rest.is_empty() {
        stream.reserve_capacity(rest.len().min(64 * 1024));
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .ok_or_else(|| "the server closed the stream before the body was sent".to_string())?
            .map_err(|e| format!("the server reset the stream before the body was sent: {e}"))?;
        let chunk = rest.split_to(granted.min(rest.len()));
        stream
            .send_data(chunk, rest.is_empty())
            .map_err(|e| format!("the server reset the stream before the body was sent: {e}"))?;
    }
    let response = response.await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let json = serde_json::from_slice(&bytes)
        .map_err(|e| format!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes)))?;
    Ok((status, json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_a_json_413_over_http2_and_http1() {
    let server = TestServer::start(&priv_policy(), Options::default()).await;
    // 5 MB, over the default 3 MiB.
    let mut review = fixture("pod-privileged.json");
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"padding": "x".repeat(5_000_000)});
    let oversized = serde_json::to_vec(&review).unwrap();

    let mut h2 = h2_connection(&server).await;
    for with_length in [true, false] {
        let (status, body) = h2_post(&mut h2, "/validate/priv", oversized.clone(), with_length)
            .await
            .unwrap_or_else(|e| {
                panic!("an HTTP/2 client (content-length: {with_length}) must get the answer: {e}")
            });
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["status"], 413);
        assert!(
            body["error"].as_str().unwrap().contains("too large"),
            "{body}"
        );
        // The connection is still good for the next review.
        let normal = serde_json::to_vec(&fixture("pod-privileged.json")).unwrap();
        let (status, body) = h2_post(&mut h2, "/validate/priv", normal, with_length)
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["allowed"], false);
    }

    // HTTP/1.1 (reqwest speaks only 1.1 here).
    let response = server
        .client
        .post(format!("{}/validate/priv", server.base))
        .body(oversized)
        .send()
        .await
        .expect("an HTTP/1.1 client must get an answer");
    assert_eq!(response.status().as_u16(), 413);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("too large"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_reachable_only_where_documented() {
    let options = Options {
        mtls: true,
        ..Options::default()
    };
    let server = TestServer::start(&priv_policy(), options).await;
    let review = fixture("pod-privileged.json");

    // The webhook port, with a client certificate: admission endpoints only.
    assert_eq!(server.validate("priv", &review).await["allowed"], false);
    let (status, body) = server.post("/audit/priv", &review).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post("/validate_raw/raw", &json!({"request": {"uid": "r"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    for path in ["/metrics", "/readiness", "/livez"] {
        let response = server
            .client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            404,
            "{path} must not be served on the webhook port"
        );
    }

    // Without a client certificate nothing on the webhook port answers.
    let anonymous = server.pki.client(false);
    for path in ["/validate_raw/raw", "/audit/priv", "/validate/priv"] {
        let result = anonymous
            .post(format!("{}{path}", server.base))
            .body(serde_json::to_vec(&review).unwrap())
            .send()
            .await;
        assert!(
            result.is_err(),
            "{path} answered a client without certificate"
        );
    }

    // The probe port: plain HTTP, no certificate, health and metrics only.
    for path in ["/metrics", "/readiness", "/livez"] {
        let (status, _) = server.probe(path).await;
        assert_eq!(status, 200, "{path} on the probe port");
    }
    let response = reqwest_oci::Client::new()
        .post(format!("{}/validate/priv", server.probe))
        .body(serde_json::to_vec(&review).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        404,
        "no admission on the probe port"
    );
    server.stop().await;
}

#[tokio::test]
async fn metric_labels_take_no_values_from_request_bodies() {
    let server = TestServer::start(&priv_policy(), Options::default()).await;
    for n in 0..20 {
        let mut review = fixture("pod-privileged.json");
        review["request"]["kind"]["kind"] = json!(format!("Widget{n}x"));
        review["request"]["operation"] = json!(format!("SMASH{n}"));
        let (status, body) = server.post("/validate/priv", &review).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server
        .post("/validate/no-such-policy", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(status, 404);

    let (_, metrics) = server.probe("/metrics").await;
    assert!(
        !metrics.contains("Widget") && !metrics.contains("SMASH"),
        "request fields became label values: {metrics}"
    );
    assert!(
        metrics.contains("operation=\"other\",resource_kind=\"other\""),
        "{metrics}"
    );
    assert!(!metrics.contains("no-such-policy"), "{metrics}");
    server.stop().await;
}
