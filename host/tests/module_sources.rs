//! Module sources cannot be abused: `file://` takes regular files only,
//! the operator's `allowed_module_sources` is enforced (redirects included),
//! and a failed download's reason shows no internal response.

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Options, TestServer, fixture, module, policies_yaml};
use portcullis_host::fetch::{FetchConfig, ModuleFetcher, SourcesConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A regression here (an unbounded read of `/dev/zero`) must fail the test,
/// not exhaust a shared machine's memory: a watchdog aborts this test
/// process if its resident memory passes 3 GiB (a cold, debug-build
/// compilation of the sample modules peaks near 0.5 GiB).
fn guard_memory() {
    static GUARD: std::sync::Once = std::sync::Once::new();
    GUARD.call_once(|| {
        std::thread::spawn(|| {
            // SAFETY: sysconf has no preconditions.
            let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
            loop {
                let resident = std::fs::read_to_string("/proc/self/statm")
                    .ok()
                    .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .unwrap_or(0)
                    * page;
                if resident > 3 << 30 {
                    eprintln!(
                        "test process resident memory {resident} bytes: an unbounded read? aborting"
                    );
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    });
}

fn module_path(name: &str) -> String {
    module(name).trim_start_matches("file://").to_string()
}

/// `/readiness` → policy id → its report.
async fn readiness(server: &TestServer) -> BTreeMap<String, Value> {
    let (status, body) = server.probe("/readiness").await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    serde_json::from_value(report["policies"].clone()).unwrap()
}

/// Starts a server; `sources` is written to a `sources.yml`, which lives as
/// long as the returned file handle.
async fn start_with_sources(
    policies: &str,
    sources: Option<&str>,
) -> (TestServer, Option<tempfile::TempPath>) {
    let sources_file = sources.map(|text| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file.into_temp_path()
    });
    let sources_path = sources_file.as_ref().map(|f| f.to_path_buf());
    let options = Options {
        tweak: Box::new(move |c| c.sources_path = sources_path),
        ..Options::default()
    };
    // A read that never ends would never make the server ready.
    let server = tokio::time::timeout(
        Duration::from_secs(60),
        TestServer::start(policies, options),
    )
    .await
    .expect("the policy-server did not start within 60 s");
    (server, sources_file)
}

#[tokio::test]
async fn file_modules_must_be_regular_files() {
    guard_memory();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("policy.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let zero_link = dir.path().join("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    let good_link = dir.path().join("good.wasm");
    std::os::unix::fs::symlink(module_path("pod-privileged-wapc"), &good_link).unwrap();

    let policies = policies_yaml(&[
        ("zero", "module: file:///dev/zero".to_string()),
        ("fifo", format!("module: file://{}", fifo.display())),
        (
            "directory",
            format!("module: file://{}", dir.path().display()),
        ),
        (
            "zero-link",
            format!("module: file://{}", zero_link.display()),
        ),
        (
            "good-link",
            format!("module: file://{}", good_link.display()),
        ),
    ]);
    let (server, _) = start_with_sources(&policies, None).await;
    let report = readiness(&server).await;
    for (id, what) in [
        ("zero", "a device"),
        ("fifo", "a FIFO"),
        ("directory", "a directory"),
        ("zero-link", "a device"),
    ] {
        assert_eq!(report[id]["state"], "error", "{id}: {}", report[id]);
        let reason = report[id]["reason"].as_str().unwrap();
        assert!(
            reason.contains(what) && reason.contains("must be a regular file"),
            "{id}: {reason}"
        );
    }
    // A symlink to a regular file is fine (ConfigMap mounts are symlinks).
    assert_eq!(report["good-link"]["state"], "loaded");
    let response = server
        .validate("good-link", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], false);
    server.stop().await;
}

/// A canned HTTP/1.1 server: `(method and path, status line, extra headers, body)`.
/// Anything that does not start like an HTTP request (a TLS ClientHello) is
/// dropped at once; unknown paths get 404. Counts the requests it served.
async fn canned_server(
    routes: Vec<(&'static str, &'static str, String, Vec<u8>)>,
) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let routes = Arc::new(routes);
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let routes = Arc::clone(&routes);
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                    if !request[0].is_ascii_uppercase() {
                        return;
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&request).to_string();
                let mut words = text.split_whitespace();
                let method = words.next().unwrap_or_default().to_string();
                let path = words.next().unwrap_or_default().to_string();
                let key = format!("{method} {path}");
                let (status, headers, body) = routes
                    .iter()
                    .find(|(route, ..)| {
                        *route == key || (method == "HEAD" && *route == format!("GET {path}"))
                    })
                    .map(|(_, s, h, b)| (*s, h.clone(), b.clone()))
                    .unwrap_or(("404 Not Found", String::new(), b"nothing here".to_vec()));
                let mut response = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n",
                    body.len()
                )
                .into_bytes();
                if method != "HEAD" {
                    response.extend_from_slice(&body);
                }
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_module_sources_are_enforced() {
    // Files: one directory is allowed; a link in it to elsewhere is not.
    let dir = tempfile::tempdir().unwrap();
    let allowed_dir = dir.path().join("allowed");
    std::fs::create_dir(&allowed_dir).unwrap();
    let inside = allowed_dir.join("priv.wasm");
    std::fs::copy(module_path("pod-privileged-wapc"), &inside).unwrap();
    let escape = allowed_dir.join("escape.wasm");
    std::os::unix::fs::symlink(module_path("pod-privileged-component"), &escape).unwrap();

    // A registry holding the module under an allowed and another repository.
    let registry = registry::Registry::start(None, None);
    let fetcher = ModuleFetcher::new(FetchConfig {
        sources: SourcesConfig {
            insecure_sources: vec![registry.host()],
            ..SourcesConfig::default()
        },
        ..FetchConfig::new(dir.path().join("push-store"))
    })
    .unwrap();
    let wasm = std::fs::read(module_path("pod-privileged-wapc")).unwrap();
    for repo in ["acme/priv:v1", "other/priv:v1"] {
        fetcher
            .push(&wasm, &registry.uri(repo), BTreeMap::new())
            .await
            .unwrap();
    }

    // A web server: an allowed path that redirects out of the list, and a
    // path outside the list.
    let (web, web_requests) = canned_server(vec![(
        "GET /allowed/redirect.wasm",
        "302 Found",
        "location: /elsewhere/priv.wasm\r\n".to_string(),
        Vec::new(),
    )])
    .await;

    let sources = format!(
        "insecure_sources: [\"{registry}\", \"127.0.0.1:{web}\"]\n\
         allowed_module_sources:\n\
         \x20 - file://{allowed}/\n\
         \x20 - registry://{registry}/acme/\n\
         \x20 - http://127.0.0.1:{web}/allowed/\n",
        registry = registry.host(),
        allowed = allowed_dir.canonicalize().unwrap().display(),
    );
    let policies = policies_yaml(&[
        (
            "file-inside",
            format!("module: file://{}", inside.display()),
        ),
        (
            "file-outside",
            format!("module: {}", module("pod-privileged-wapc")),
        ),
        (
            "file-escape",
            format!("module: file://{}", escape.display()),
        ),
        (
            "registry-inside",
            format!("module: {}", registry.uri("acme/priv:v1")),
        ),
        (
            "registry-outside",
            format!("module: {}", registry.uri("other/priv:v1")),
        ),
        (
            "registry-lookalike",
            format!("module: registry://{}/acme-evil/priv:v1", registry.host()),
        ),
        (
            "web-outside",
            format!("module: http://127.0.0.1:{web}/elsewhere/priv.wasm"),
        ),
        (
            "web-redirect",
            format!("module: http://127.0.0.1:{web}/allowed/redirect.wasm"),
        ),
    ]);
    let (server, _sources) = start_with_sources(&policies, Some(&sources)).await;
    let report = readiness(&server).await;
    for id in ["file-inside", "registry-inside"] {
        assert_eq!(report[id]["state"], "loaded", "{id}: {}", report[id]);
    }
    for id in [
        "file-outside",
        "file-escape",
        "registry-outside",
        "registry-lookalike",
        "web-outside",
    ] {
        assert_eq!(report[id]["state"], "error", "{id}");
        let reason = report[id]["reason"].as_str().unwrap();
        assert!(
            reason.contains("not allowed") && reason.contains("allowed_module_sources"),
            "{id}: {reason}"
        );
    }
    let reason = report["web-redirect"]["reason"].as_str().unwrap();
    assert_eq!(report["web-redirect"]["state"], "error");
    assert!(
        reason.contains(&format!("http://127.0.0.1:{web}")),
        "{reason}"
    );
    // Only the redirect was requested: the refused URL never was.
    assert_eq!(web_requests.load(Ordering::SeqCst), 1);

    // Requests to a refused policy are rejected with the reason.
    let response = server
        .validate("registry-outside", &fixture("pod-unprivileged.json"))
        .await;
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not allowed"),
        "{response}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_failures_show_no_internal_responses() {
    const SECRET: &str = "INTERNAL-DETAIL db=10.0.0.7 password=hunter2";
    let registry_error =
        format!("{{\"errors\":[{{\"code\":\"DENIED\",\"message\":\"{SECRET}\"}}]}}");
    let (port, _) = canned_server(vec![
        ("GET /v2/", "200 OK", String::new(), b"{}".to_vec()),
        (
            "GET /v2/broken/priv/manifests/sha256:1111111111111111111111111111111111111111111111111111111111111111",
            "500 Internal Server Error",
            String::new(),
            SECRET.as_bytes().to_vec(),
        ),
        (
            "GET /v2/denied/priv/manifests/sha256:2222222222222222222222222222222222222222222222222222222222222222",
            "403 Forbidden",
            "content-type: application/json\r\n".to_string(),
            registry_error.into_bytes(),
        ),
        (
            "GET /policy.wasm?token=SECRET-TOKEN",
            "403 Forbidden",
            String::new(),
            SECRET.as_bytes().to_vec(),
        ),
    ])
    .await;
    let host = format!("127.0.0.1:{port}");
    let sources = format!("insecure_sources: [\"{host}\"]\n");
    let policies = policies_yaml(&[
        (
            "broken",
            format!(
                "module: registry://{host}/broken/priv@sha256:{}",
                "1".repeat(64)
            ),
        ),
        (
            "denied",
            format!(
                "module: registry://{host}/denied/priv@sha256:{}",
                "2".repeat(64)
            ),
        ),
        (
            "web",
            format!("module: http://user:pass@{host}/policy.wasm?token=SECRET-TOKEN"),
        ),
        (
            "refused",
            "module: registry://127.0.0.1:1/x/priv:v1".to_string(),
        ),
    ]);
    let (server, _sources) = start_with_sources(&policies, Some(&sources)).await;
    let report = readiness(&server).await;
    for (id, class) in [
        (
            "broken",
            format!("registry://{host}: HTTP 500 Internal Server Error"),
        ),
        ("denied", format!("registry://{host}: unauthorized")),
        ("web", format!("http://{host}: HTTP 403 Forbidden")),
        (
            "refused",
            "registry://127.0.0.1:1: connection refused".to_string(),
        ),
    ] {
        assert_eq!(report[id]["state"], "error", "{id}");
        let reason = report[id]["reason"].as_str().unwrap();
        assert!(reason.contains(&class), "{id}: {reason:?} lacks {class:?}");
        for leak in ["INTERNAL-DETAIL", "hunter2", "SECRET-TOKEN", "pass@"] {
            assert!(!reason.contains(leak), "{id} leaks {leak}: {reason}");
        }
        let response = server.validate(id, &fixture("pod-unprivileged.json")).await;
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            !message.contains("INTERNAL-DETAIL") && !message.contains("SECRET-TOKEN"),
            "{id}: {message}"
        );
    }
    server.stop().await;
}
