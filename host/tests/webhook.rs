//! The policy-server's admission endpoints over HTTPS, with the real sample
//! policies: verdicts, mutation, modes, messages, errors, bad input, mTLS.

mod common;

use std::time::Duration;

use common::{Options, TestServer, decode_patch, fixture, module, policies_yaml};
use serde_json::{Value, json};

const PRIVILEGED_MESSAGE: &str = "Privileged container is not allowed: sidecar";

fn policy(module_name: &str, extra: &str) -> String {
    format!("module: {}\n{extra}", module(module_name))
}

fn labels_policy(abi: &str, extra: &str) -> String {
    policy(
        &format!("default-labels-{abi}"),
        &format!("settings:\n  labels:\n    owner: platform\n    team: unknown\n{extra}"),
    )
}

#[tokio::test]
async fn privileged_pods_rejected_by_both_abis() {
    let yaml = policies_yaml(&[
        ("priv-wapc", policy("pod-privileged-wapc", "")),
        ("priv-component", policy("pod-privileged-component", "")),
    ]);
    let server = TestServer::start(&yaml, Options::default()).await;
    for id in ["priv-wapc", "priv-component"] {
        let response = server.validate(id, &fixture("pod-privileged.json")).await;
        assert_eq!(response["uid"], "22222222-2222-2222-2222-222222222222");
        assert_eq!(response["allowed"], false, "{id}: {response}");
        assert_eq!(response["status"]["message"], PRIVILEGED_MESSAGE, "{id}");

        let review = fixture("pod-unprivileged.json");
        let response = server.validate(id, &review).await;
        assert_eq!(response["allowed"], true, "{id}: {response}");
        assert_eq!(response["uid"], review["request"]["uid"]);
        assert!(response.get("patch").is_none());
    }
    server.stop().await;
}

#[tokio::test]
async fn mutation_returns_a_json_patch_that_adds_the_missing_labels() {
    let yaml = policies_yaml(&[
        (
            "labels-wapc",
            labels_policy("wapc", "allowedToMutate: true"),
        ),
        (
            "labels-component",
            labels_policy("component", "allowedToMutate: true"),
        ),
    ]);
    let server = TestServer::start(&yaml, Options::default()).await;
    for id in ["labels-wapc", "labels-component"] {
        let review = fixture("pod-partial-labels.json");
        let response = server.validate(id, &review).await;
        assert_eq!(response["allowed"], true, "{id}: {response}");
        assert_eq!(response["patchType"], "JSONPatch", "{id}: {response}");
        let mut object = review["request"]["object"].clone();
        json_patch::patch(&mut object, &decode_patch(&response)).unwrap();
        assert_eq!(
            object["metadata"]["labels"],
            json!({"app": "web", "team": "payments", "owner": "platform"}),
            "{id}: existing labels kept, missing one added"
        );
        // Nothing else in the object may change.
        let mut expected = review["request"]["object"].clone();
        expected["metadata"]["labels"]["owner"] = json!("platform");
        assert_eq!(object, expected);
    }
    server.stop().await;
}

#[tokio::test]
async fn mutation_rejected_when_allowed_to_mutate_is_false() {
    let yaml = policies_yaml(&[("labels", labels_policy("wapc", ""))]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let response = server
        .validate("labels", &fixture("pod-no-labels.json"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response.get("patch").is_none());
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("policy labels") && message.contains("attempted to mutate"),
        "{message}"
    );

    // /audit reports what the policy itself did: accepted, with a patch.
    let (status, audit) = server
        .post("/audit/labels", &fixture("pod-no-labels.json"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(audit["response"]["allowed"], true, "{audit}");
    assert_eq!(audit["response"]["patchType"], "JSONPatch");
    server.stop().await;
}

#[tokio::test]
async fn monitor_mode_allows_and_audit_shows_the_real_verdict() {
    let yaml = policies_yaml(&[
        (
            "priv-monitor",
            policy("pod-privileged-wapc", "policyMode: monitor"),
        ),
        (
            "labels-monitor",
            labels_policy("component", "policyMode: monitor\nallowedToMutate: true"),
        ),
    ]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let response = server
        .validate("priv-monitor", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("status").is_none(), "{response}");

    let response = server
        .validate("labels-monitor", &fixture("pod-no-labels.json"))
        .await;
    assert_eq!(response["allowed"], true);
    assert!(
        response.get("patch").is_none() && response.get("patchType").is_none(),
        "{response}"
    );

    let (_, audit) = server
        .post("/audit/priv-monitor", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(audit["response"]["allowed"], false, "{audit}");
    assert_eq!(audit["response"]["status"]["message"], PRIVILEGED_MESSAGE);
    server.stop().await;
}

#[tokio::test]
async fn custom_message_replaces_status_message_and_keeps_the_cause() {
    let yaml = policies_yaml(&[(
        "priv",
        policy(
            "pod-privileged-component",
            "message: \"Ask #platform for an exception\"",
        ),
    )]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let response = server
        .validate("priv", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "Ask #platform for an exception"
    );
    assert_eq!(
        response["status"]["details"]["causes"][0]["message"],
        PRIVILEGED_MESSAGE
    );
    // Accepted requests are untouched by the custom message.
    let response = server
        .validate("priv", &fixture("pod-unprivileged.json"))
        .await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("status").is_none());
    server.stop().await;
}

#[tokio::test]
async fn validate_raw_wraps_request_and_response() {
    let yaml = policies_yaml(&[(
        "raw",
        policy("adversarial-wapc", "settings: {behaviour: accept}"),
    )]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let (status, body) = server
        .post(
            "/validate_raw/raw",
            &json!({"request": {"uid": "raw-1", "anything": [1, 2]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["uid"], "raw-1");
    assert_eq!(body["response"]["allowed"], true, "{body}");

    let (status, body) = server.post("/validate_raw/raw", &json!({"nope": 1})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("request"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn guest_failures_reject_with_500_naming_policy_and_cause() {
    let yaml = policies_yaml(&[
        (
            "looper",
            policy(
                "adversarial-wapc",
                "settings: {behaviour: loop}\ntimeoutEvalSeconds: 1",
            ),
        ),
        (
            "trapper",
            policy("adversarial-component", "settings: {behaviour: trap}"),
        ),
        (
            "garbler",
            policy("adversarial-wapc", "settings: {behaviour: garbage}"),
        ),
        (
            "bomber",
            policy("adversarial-wapc", "settings: {behaviour: memory-bomb}"),
        ),
    ]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let review = fixture("pod-unprivileged.json");
    for (id, cause) in [
        ("looper", "deadline"),
        ("trapper", "trap"),
        ("garbler", "malformed"),
        ("bomber", "memory"),
    ] {
        let started = std::time::Instant::now();
        let response = server.validate(id, &review).await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
        assert_eq!(response["status"]["code"], 500, "{id}: {response}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(id) && message.contains(cause),
            "{id}: {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{id} took {:?}",
            started.elapsed()
        );
    }
    // The server still serves after all of that.
    let (_, metrics) = server.probe("/metrics").await;
    assert!(
        metrics.contains("policy=\"looper\"") && metrics.contains("error=\"timeout\""),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn broken_policies_are_isolated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm this is not a module").unwrap();
    let yaml = policies_yaml(&[
        ("good", policy("pod-privileged-wapc", "")),
        (
            "bad-settings",
            policy("adversarial-wapc", "settings: {behaviour: nope}"),
        ),
        (
            "missing-module",
            "module: file:///nonexistent/policy.wasm".to_string(),
        ),
        (
            "garbage-module",
            format!("module: file://{}", garbage.display()),
        ),
        (
            "group",
            "expression: a()\nmessage: no\npolicies:\n  a:\n    module: file:///x.wasm".to_string(),
        ),
    ]);
    let server = TestServer::start(&yaml, Options::default()).await;

    let response = server
        .validate("good", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["status"]["message"], PRIVILEGED_MESSAGE);

    for (id, reason) in [
        ("bad-settings", "unknown behaviour"),
        ("missing-module", "nonexistent"),
        ("garbage-module", "garbage-module"),
        // A group whose member cannot load fails closed (tests/groups.rs).
        ("group", "member a: cannot fetch module"),
    ] {
        let response = server.validate(id, &fixture("pod-unprivileged.json")).await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
        assert_eq!(response["status"]["code"], 500, "{id}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(id) && message.contains(reason),
            "{id}: {message}"
        );
    }

    let (status, body) = server.probe("/readiness").await;
    assert_eq!(status, 200, "{body}");
    let readiness: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readiness["policies"]["good"]["state"], "loaded");
    assert!(
        readiness["policies"]["good"]["moduleDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(readiness["policies"]["bad-settings"]["state"], "error");
    assert!(
        readiness["policies"]["bad-settings"]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown behaviour")
    );
    let file = std::fs::read(&server.policies_path).unwrap();
    assert_eq!(
        readiness["configDigest"],
        portcullis_config::content_digest(&file)
    );

    let (_, metrics) = server.probe("/metrics").await;
    assert!(
        metrics.contains("portcullis_policy_loaded{policy=\"good\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_policy_loaded{policy=\"missing-module\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_policy_load_errors 4"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn fail_fast_refuses_to_start_and_lists_every_broken_policy() {
    let yaml = policies_yaml(&[
        ("good", policy("pod-privileged-wapc", "")),
        (
            "bad-settings",
            policy("adversarial-wapc", "settings: {behaviour: nope}"),
        ),
        (
            "missing-module",
            "module: file:///nonexistent/policy.wasm".to_string(),
        ),
    ]);
    let options = Options {
        tweak: Box::new(|c| c.fail_fast = true),
        ..Options::default()
    };
    let Err(error) = TestServer::try_start(&yaml, options).await else {
        panic!("fail-fast must refuse to start");
    };
    let text = error.to_string();
    assert!(text.contains("2 policies failed"), "{text}");
    assert!(
        text.contains("bad-settings") && text.contains("missing-module"),
        "{text}"
    );
    assert!(!text.contains("good:"), "{text}");
}

#[tokio::test]
async fn bad_input_gets_json_4xx() {
    let yaml = policies_yaml(&[("priv", policy("pod-privileged-wapc", ""))]);
    let options = Options {
        tweak: Box::new(|c| c.max_body_bytes = 64 * 1024),
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    let mut good = fixture("pod-privileged.json");

    let send = |method: reqwest_oci::Method, path: &str, body: Vec<u8>| {
        let request = server
            .client
            .request(method, format!("{}{path}", server.base))
            .body(body);
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body: Value = serde_json::from_slice(&response.bytes().await.unwrap())
                .expect("every error is JSON");
            (status, body)
        }
    };
    use reqwest_oci::Method;
    let mut cases: Vec<(Method, String, Vec<u8>, u16, &str)> = vec![
        (
            Method::POST,
            "/validate/priv".into(),
            b"{not json".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            Method::POST,
            "/validate/priv".into(),
            Vec::new(),
            400,
            "empty",
        ),
        (
            Method::POST,
            "/validate/priv".into(),
            b"[]".to_vec(),
            400,
            "object",
        ),
        (
            Method::POST,
            "/validate/nope".into(),
            serde_json::to_vec(&good).unwrap(),
            404,
            "nope",
        ),
        (Method::GET, "/validate/priv".into(), Vec::new(), 405, "GET"),
        (Method::POST, "/nowhere".into(), Vec::new(), 404, "/nowhere"),
        (
            Method::POST,
            "/validate/priv".into(),
            vec![b' '; 100 * 1024],
            413,
            "too large",
        ),
    ];
    let mut wrong_version = good.clone();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    cases.push((
        Method::POST,
        "/validate/priv".into(),
        serde_json::to_vec(&wrong_version).unwrap(),
        400,
        "apiVersion",
    ));
    let mut wrong_kind = good.clone();
    wrong_kind["kind"] = json!("Pod");
    cases.push((
        Method::POST,
        "/audit/priv".into(),
        serde_json::to_vec(&wrong_kind).unwrap(),
        400,
        "kind",
    ));
    let request = good.as_object_mut().unwrap().remove("request");
    assert!(request.is_some());
    cases.push((
        Method::POST,
        "/validate/priv".into(),
        serde_json::to_vec(&good).unwrap(),
        400,
        "no request",
    ));

    for (method, path, body, expected, needle) in cases {
        let (status, json) = send(method.clone(), &path, body).await;
        assert_eq!(status, expected, "{method} {path}: {json}");
        assert_eq!(json["status"], expected, "{json}");
        let error = json["error"].as_str().unwrap();
        assert!(
            error.contains(needle),
            "{method} {path}: {error:?} should mention {needle:?}"
        );
    }
    // The server is unharmed.
    let response = server
        .validate("priv", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], false);
    server.stop().await;
}

#[tokio::test]
async fn mtls_rejects_clients_without_a_certificate() {
    let yaml = policies_yaml(&[("priv", policy("pod-privileged-wapc", ""))]);
    let options = Options {
        mtls: true,
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    let response = server
        .validate("priv", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], false);

    let anonymous = server.pki.client(false);
    let result = anonymous
        .post(format!("{}/validate/priv", server.base))
        .body(serde_json::to_vec(&fixture("pod-privileged.json")).unwrap())
        .send()
        .await;
    assert!(
        result.is_err(),
        "a client without certificate must be refused: {result:?}"
    );

    let stranger = common::Pki::generate("stranger");
    // Trusts the server's CA but presents a certificate from another CA.
    let mixed = common::Pki {
        ca_pem: server.pki.ca_pem.clone(),
        ..stranger
    };
    let result = mixed
        .client(true)
        .post(format!("{}/validate/priv", server.base))
        .body(serde_json::to_vec(&fixture("pod-privileged.json")).unwrap())
        .send()
        .await;
    assert!(
        result.is_err(),
        "a certificate from an unknown CA must be refused: {result:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn saturated_workers_answer_503_after_the_queue_timeout() {
    let yaml = policies_yaml(&[(
        "looper",
        policy(
            "adversarial-wapc",
            "settings: {behaviour: loop}\ntimeoutEvalSeconds: 2",
        ),
    )]);
    let options = Options {
        tweak: Box::new(|c| {
            c.workers = 1;
            c.queue_timeout = Duration::from_millis(200);
            // Without the slow lane the looper keeps its worker.
            c.max_slow_evaluations = Some(0);
        }),
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    let review = fixture("pod-unprivileged.json");
    let (a, b) = tokio::join!(server.post("/validate/looper", &review), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.post("/validate/looper", &review).await
    });
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(a.1["response"]["status"]["code"], 500);
    assert_eq!(b.0, 503, "{}", b.1);
    assert!(
        b.1["error"].as_str().unwrap().contains("saturated"),
        "{}",
        b.1
    );
    let (_, metrics) = server.probe("/metrics").await;
    assert!(
        metrics.contains(
            "portcullis_saturation_rejections_total{request_origin=\"validate\",limit=\"workers\"} 1"
        ),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn always_accepted_namespace_skips_evaluation() {
    let yaml = policies_yaml(&[("priv", policy("pod-privileged-wapc", ""))]);
    let options = Options {
        tweak: Box::new(|c| c.always_accept_namespace = Some("kube-system".into())),
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    let mut review = fixture("pod-privileged.json");
    review["request"]["namespace"] = json!("kube-system");
    assert_eq!(server.validate("priv", &review).await["allowed"], true);
    assert_eq!(
        server
            .validate("priv", &fixture("pod-privileged.json"))
            .await["allowed"],
        false
    );
    server.stop().await;
}

#[tokio::test]
async fn plain_http_probes_and_metrics() {
    let yaml = policies_yaml(&[("priv", policy("pod-privileged-wapc", ""))]);
    let options = Options {
        tls: false,
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    assert!(server.base.starts_with("http://"));
    for _ in 0..3 {
        let response = server
            .validate("priv", &fixture("pod-privileged.json"))
            .await;
        assert_eq!(response["allowed"], false);
    }
    let (status, body) = server.probe("/livez").await;
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
    let (_, metrics) = server.probe("/metrics").await;
    let line = "portcullis_policy_evaluations_total{policy=\"priv\",mode=\"protect\",request_origin=\"validate\",operation=\"CREATE\",resource_kind=\"Pod\",accepted=\"false\",mutated=\"false\",error=\"\"} 3";
    assert!(metrics.contains(line), "{metrics}");
    assert!(
        metrics.contains("portcullis_policy_evaluation_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("le=\"5e-5\"") || metrics.contains("le=\"0.00005\""),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let yaml = policies_yaml(&[(
        "looper",
        policy(
            "adversarial-wapc",
            "settings: {behaviour: loop}\ntimeoutEvalSeconds: 1",
        ),
    )]);
    let mut server = TestServer::start(&yaml, Options::default()).await;
    let running = server.server.take().unwrap();
    let url = format!("{}/validate/looper", server.base);
    let body = serde_json::to_vec(&fixture("pod-unprivileged.json")).unwrap();
    let client = server.client.clone();
    let (request_url, request_body) = (url.clone(), body.clone());
    let in_flight = tokio::spawn(async move {
        let response = client.post(request_url).body(request_body).send().await?;
        let status = response.status().as_u16();
        let json: Value = serde_json::from_slice(&response.bytes().await?).unwrap();
        Ok::<_, reqwest_oci::Error>((status, json))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.shutdown().await;
    let (status, json) = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    assert_eq!(json["response"]["status"]["code"], 500, "{json}");
    let refused = server.pki.client(false).post(&url).body(body).send().await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn request_over_the_request_timeout_gets_json_504() {
    let yaml = policies_yaml(&[(
        "looper",
        policy(
            "adversarial-wapc",
            "settings: {behaviour: loop}\ntimeoutEvalSeconds: 2",
        ),
    )]);
    let options = Options {
        tweak: Box::new(|c| c.request_timeout = Duration::from_millis(300)),
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    let (status, body) = server
        .post("/validate/looper", &fixture("pod-unprivileged.json"))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["status"], 504);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not complete within"),
        "{body}"
    );
    server.stop().await;
}
