//! Hot reload of the policies file (Kubernetes ConfigMap symlink swap) under
//! load, and TLS certificate rotation.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Pki, TestServer, fixture, module, policies_yaml};
use portcullis_host::policy_set::PolicyState;
use serde_json::Value;

/// Lays out `dir` like a kubelet-mounted ConfigMap:
/// `policies.yml -> ..data/policies.yml`, `..data -> ..<version>`.
fn write_configmap_version(dir: &Path, version: &str, contents: &str) {
    let version_dir = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&version_dir).unwrap();
    std::fs::write(version_dir.join("policies.yml"), contents).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    // rename(2) over the old link is atomic, as kubelet does it.
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("policies.yml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/policies.yml", &link).unwrap();
    }
}

fn loaded_ptr(server: &TestServer, id: &str) -> usize {
    match server.server.as_ref().unwrap().policy_set().get(id) {
        Some(PolicyState::Loaded(p)) => Arc::as_ptr(p) as *const u8 as usize,
        _ => panic!("{id} is not loaded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configmap_swap_under_load_changes_verdict_without_failures() {
    let unchanged = format!("module: {}\n", module("default-labels-wapc"));
    let v1 = policies_yaml(&[
        (
            "priv",
            format!(
                "module: {}\npolicyMode: protect\n",
                module("pod-privileged-wapc")
            ),
        ),
        ("labels", unchanged.clone()),
    ]);
    let v2 = policies_yaml(&[
        (
            "priv",
            format!(
                "module: {}\npolicyMode: monitor\n",
                module("pod-privileged-component")
            ),
        ),
        ("labels", unchanged.clone()),
    ]);
    // Start from a plain file, then switch to the ConfigMap layout in a
    // separate directory the server watches.
    let configmap = tempfile::tempdir().unwrap();
    write_configmap_version(configmap.path(), "v1", &v1);
    let path = configmap.path().join("policies.yml");
    let options = Options {
        tweak: Box::new(move |c| c.policies_path = path),
        ..Options::default()
    };
    let server = Arc::new(TestServer::start("{}", options).await);
    let labels_before = loaded_ptr(&server, "labels");
    let generation_before = server.server.as_ref().unwrap().policy_set().generation;

    let review = Arc::new(fixture("pod-privileged.json"));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let saw_allowed = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (server, review, stop, failures, requests, saw_allowed) = (
            Arc::clone(&server),
            Arc::clone(&review),
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&requests),
            Arc::clone(&saw_allowed),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = server
                    .client
                    .post(format!("{}/validate/priv", server.base))
                    .body(serde_json::to_vec(&*review).unwrap())
                    .send()
                    .await;
                requests.fetch_add(1, Ordering::Relaxed);
                let body: Option<Value> = match result {
                    Ok(r) if r.status().as_u16() == 200 => r.json_bytes().await,
                    _ => None,
                };
                match body {
                    Some(body) => {
                        let response = &body["response"];
                        let allowed = response["allowed"].as_bool();
                        let consistent = match allowed {
                            // v1 (protect): rejected with the policy's message.
                            Some(false) => {
                                response["status"]["message"]
                                    == "Privileged container is not allowed: sidecar"
                            }
                            // v2 (monitor): allowed, nothing else.
                            Some(true) => {
                                saw_allowed.store(true, Ordering::Relaxed);
                                response.get("status").is_none()
                            }
                            None => false,
                        };
                        if !consistent {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!saw_allowed.load(Ordering::Relaxed), "v1 protects");
    write_configmap_version(configmap.path(), "v2", &v2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !saw_allowed.load(Ordering::Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Keep the load on for a while after the switch, then swap back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_configmap_version(configmap.path(), "v3", &v1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    assert!(
        saw_allowed.load(Ordering::Relaxed),
        "the reload to monitor mode was never served"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests during reload"
    );
    assert!(
        requests.load(Ordering::Relaxed) > 20,
        "too few requests to mean anything"
    );
    let set = server.server.as_ref().unwrap().policy_set();
    assert!(
        set.generation >= generation_before + 2,
        "two reloads expected"
    );
    assert_eq!(
        loaded_ptr(&server, "labels"),
        labels_before,
        "unchanged policy must be kept as is"
    );
    let (_, metrics) = server.probe("/metrics").await;
    assert!(
        metrics.contains("portcullis_policy_reloads_total{result=\"success\"}"),
        "{metrics}"
    );
    // Back on v1: protect again.
    let response = server
        .validate("priv", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], false);

    let server = Arc::into_inner(server).expect("no other references");
    server.stop().await;
}

#[tokio::test]
async fn invalid_policies_file_keeps_the_current_policies() {
    let yaml = policies_yaml(&[(
        "priv",
        format!("module: {}\n", module("pod-privileged-wapc")),
    )]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let digest = server
        .server
        .as_ref()
        .unwrap()
        .policy_set()
        .config_digest
        .clone();
    std::fs::write(&server.policies_path, "- not\n- a map\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = server.probe("/metrics").await;
        if metrics.contains("portcullis_policy_reloads_total{result=\"failure\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload failure never recorded: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.server.as_ref().unwrap().policy_set().config_digest,
        digest
    );
    let response = server
        .validate("priv", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], false);
    server.stop().await;
}

#[tokio::test]
async fn rotated_certificate_is_served_to_new_connections() {
    let yaml = policies_yaml(&[(
        "priv",
        format!("module: {}\n", module("pod-privileged-wapc")),
    )]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let url = format!("{}/validate/priv", server.base);
    let body = serde_json::to_vec(&fixture("pod-privileged.json")).unwrap();
    let old_client = server.pki.client(false);
    assert!(
        old_client
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .is_ok()
    );

    let rotated = Pki::generate("rotated");
    let tls = server.dir.path();
    // Write the key first: for a moment cert and key do not match, and the
    // server must keep serving the old pair.
    std::fs::write(tls.join("tls.key"), &rotated.server_key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fresh_old = server.pki.client(false);
    let during = fresh_old.post(&url).body(body.clone()).send().await;
    assert!(
        during.is_ok(),
        "half-rotated files must keep the old certificate: {during:?}"
    );
    std::fs::write(tls.join("tls.crt"), &rotated.server_cert_pem).unwrap();

    let new_client = rotated.client(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match new_client.post(&url).body(body.clone()).send().await {
            Ok(response) => {
                assert_eq!(response.status().as_u16(), 200);
                break;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "rotated certificate never served: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // A new connection trusting only the old CA is now refused.
    let only_old = server.pki.client(false);
    assert!(only_old.post(&url).body(body.clone()).send().await.is_err());
    let (_, metrics) = server.probe("/metrics").await;
    assert!(
        metrics.contains("portcullis_tls_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

/// `Response::json` needs reqwest's `json` feature; parse by hand instead.
trait JsonBytes {
    async fn json_bytes(self) -> Option<Value>;
}

impl JsonBytes for reqwest_oci::Response {
    async fn json_bytes(self) -> Option<Value> {
        serde_json::from_slice(&self.bytes().await.ok()?).ok()
    }
}

#[tokio::test]
async fn policy_whose_module_could_not_be_fetched_is_retried() {
    let modules = tempfile::tempdir().unwrap();
    let late = modules.path().join("late.wasm");
    let yaml = policies_yaml(&[
        (
            "priv",
            format!("module: {}\n", module("pod-privileged-wapc")),
        ),
        ("late", format!("module: file://{}\n", late.display())),
    ]);
    let options = Options {
        tweak: Box::new(|c| {
            c.reload_poll_interval = Duration::from_millis(300);
            c.fetch_retry_interval = Duration::from_millis(500);
        }),
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    let response = server
        .validate("late", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["status"]["code"], 500, "{response}");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot fetch module")
    );
    let priv_before = loaded_ptr(&server, "priv");

    // The module shows up (the registry is back): no config change needed.
    let source = module("pod-privileged-component");
    std::fs::copy(source.trim_start_matches("file://"), &late).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = server
            .validate("late", &fixture("pod-privileged.json"))
            .await;
        if response["status"]["message"] == "Privileged container is not allowed: sidecar" {
            break;
        }
        assert!(Instant::now() < deadline, "never retried: {response}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        loaded_ptr(&server, "priv"),
        priv_before,
        "healthy policies are kept as is"
    );
    server.stop().await;
}
