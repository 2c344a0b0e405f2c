//! Issue 10's containment promise, over HTTPS with the real adversarial
//! guests: with `--workers 2` and two hostile evaluations in flight, a
//! healthy policy still answers well under a second, every hostile request
//! gets its answer within its deadline plus a margin, and the server keeps
//! serving. Also: audit load cannot starve admission, and verdicts are
//! capped before they reach the API server.

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestServer, fixture, module, policies_yaml};
use serde_json::{Value, json};

/// Deadline of the hostile policies.
const HOSTILE_TIMEOUT: Duration = Duration::from_secs(1);
/// What "a small margin" over the deadline means on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);
/// "Well under a second" for the healthy policy.
const HEALTHY_WITHIN: Duration = Duration::from_millis(700);

/// One hostile behaviour of the adversarial guests: the guest, the
/// `settings.behaviour`, and a word the rejection message must contain.
/// Adding a behaviour is one line.
const HOSTILE: &[(&str, &str, &str)] = &[
    ("adversarial-wapc", "loop", "deadline"),
    ("adversarial-component", "loop", "deadline"),
    ("adversarial-wapc", "memory-bomb", "memory"),
    ("adversarial-component", "memory-bomb", "memory"),
    ("adversarial-wapc", "trap", "trap"),
    ("adversarial-component", "trap", "trap"),
    ("adversarial-wapc", "garbage", "malformed"),
    ("adversarial-wapc", "sleep", "deadline"),
    ("adversarial-component", "sleep", "deadline"),
    ("adversarial-go", "sleep", "deadline"),
    ("adversarial-wapc", "log-flood", "deadline"),
    ("adversarial-component", "log-flood", "deadline"),
    ("adversarial-wapc", "stdio-flood", "deadline"),
    ("adversarial-component", "stdio-flood", "deadline"),
    ("adversarial-wapc", "huge-message", "malformed"),
    ("adversarial-component", "huge-message", "malformed"),
    ("adversarial-wapc", "proc-exit", "exited"),
    ("adversarial-component", "proc-exit", "exited"),
    ("adversarial-wapc", "stack-overflow", "stack overflow"),
    ("adversarial-component", "stack-overflow", "stack overflow"),
];

fn hostile_id(guest: &str, behaviour: &str) -> String {
    format!("{behaviour}-{}", guest.trim_start_matches("adversarial-"))
}

async fn post_timed(server: &TestServer, path: &str, body: &Value) -> (Duration, u16, Value) {
    let started = Instant::now();
    let (status, body) = server.post(path, body).await;
    (started.elapsed(), status, body)
}

/// Posts `body` to `path` on a task of its own; answers (time, status, JSON).
fn spawn_post(
    server: &TestServer,
    path: &str,
    body: &Value,
) -> tokio::task::JoinHandle<(Duration, u16, Value)> {
    let request = server
        .client
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    tokio::spawn(async move {
        let started = Instant::now();
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let json =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("a JSON answer");
        (started.elapsed(), status, json)
    })
}

/// Waits until `n` evaluations run (per `/metrics`), or every task in
/// `tasks` is done (hostile guests that fail at once never get there).
async fn until_in_flight(
    server: &TestServer,
    n: usize,
    tasks: &[tokio::task::JoinHandle<(Duration, u16, Value)>],
) {
    let started = Instant::now();
    let wanted = format!("portcullis_evaluations_in_flight {n}");
    while started.elapsed() < Duration::from_secs(3) {
        if tasks.iter().all(tokio::task::JoinHandle::is_finished) {
            return;
        }
        let (_, metrics) = server.probe("/metrics").await;
        if metrics.contains(&wanted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hostile_evaluations_do_not_starve_a_healthy_policy() {
    let mut entries = vec![(
        "healthy".to_string(),
        format!("module: {}", module("pod-privileged-wapc")),
    )];
    for (guest, behaviour, _) in HOSTILE {
        entries.push((
            hostile_id(guest, behaviour),
            format!(
                "module: {}\nsettings: {{behaviour: {behaviour}}}\ntimeoutEvalSeconds: {}",
                module(guest),
                HOSTILE_TIMEOUT.as_secs()
            ),
        ));
    }
    let entries: Vec<(&str, String)> = entries
        .iter()
        .map(|(i, b)| (i.as_str(), b.clone()))
        .collect();
    let server = TestServer::start(&policies_yaml(&entries), Options::default()).await;
    let review = fixture("pod-privileged.json");

    for (guest, behaviour, cause) in HOSTILE {
        let id = hostile_id(guest, behaviour);
        let path = format!("/validate/{id}");
        let hostile = [
            spawn_post(&server, &path, &review),
            spawn_post(&server, &path, &review),
        ];
        // Both hostile evaluations take the two workers first.
        until_in_flight(&server, 2, &hostile).await;
        let (elapsed, status, body) = post_timed(&server, "/validate/healthy", &review).await;
        assert_eq!(status, 200, "{id}: healthy got {body}");
        assert_eq!(body["response"]["allowed"], false, "{id}: {body}");
        assert_eq!(
            body["response"]["status"]["message"],
            "Privileged container is not allowed: sidecar"
        );
        assert!(
            elapsed < HEALTHY_WITHIN,
            "{id}: the healthy policy took {elapsed:?} with two hostile evaluations in flight"
        );
        for task in hostile {
            let (elapsed, status, body) = task.await.unwrap();
            assert_eq!(status, 200, "{id}: {body}");
            let response = &body["response"];
            assert_eq!(response["allowed"], false, "{id}: {body}");
            assert_eq!(response["status"]["code"], 500, "{id}: {body}");
            let message = response["status"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&id) && message.contains(cause),
                "{id}: {message}"
            );
            assert!(
                elapsed < HOSTILE_TIMEOUT + MARGIN,
                "{id}: answered after {elapsed:?}"
            );
        }
        eprintln!("{id}: healthy answered in {elapsed:?}");
    }

    // Still serving, and every answer was counted.
    let (status, _) = server.probe("/livez").await;
    assert_eq!(status, 200);
    let response = server.validate("healthy", &review).await;
    assert_eq!(response["allowed"], false);
    let (_, metrics) = server.probe("/metrics").await;
    assert!(
        !metrics.contains("portcullis_saturation_rejections_total{"),
        "no request was refused: {metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_gets_a_bounded_share_and_admission_goes_first() {
    let yaml = policies_yaml(&[
        (
            "healthy",
            format!("module: {}", module("pod-privileged-wapc")),
        ),
        (
            "looper",
            format!(
                "module: {}\nsettings: {{behaviour: loop}}\ntimeoutEvalSeconds: 1",
                module("adversarial-wapc")
            ),
        ),
    ]);
    // Long enough for the second audit to wait for the first.
    let options = Options {
        tweak: Box::new(|c| c.queue_timeout = Duration::from_secs(5)),
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    let review = fixture("pod-unprivileged.json");
    let first = spawn_post(&server, "/audit/looper", &review);
    until_in_flight(&server, 1, std::slice::from_ref(&first)).await;
    let second = spawn_post(&server, "/audit/looper", &review);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let admission = post_timed(&server, "/validate/healthy", &review).await;
    let first = first.await.unwrap();
    let second = second.await.unwrap();
    // Of `--workers 2`, audit may use one: the second audit waited for the
    // first, and admission had the other worker at once.
    assert_eq!(admission.1, 200, "{}", admission.2);
    assert_eq!(admission.2["response"]["allowed"], true);
    assert!(
        admission.0 < HEALTHY_WITHIN,
        "admission took {:?} behind audit load",
        admission.0
    );
    for (_, status, body) in [&first, &second] {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["response"]["status"]["code"], 500, "{body}");
    }
    assert!(
        second.0 >= first.0 + Duration::from_millis(500),
        "the second audit ran alongside the first ({:?} vs {:?})",
        second.0,
        first.0
    );

    // /audit has its own series.
    let (_, metrics) = server.probe("/metrics").await;
    assert!(
        metrics.contains("policy=\"looper\",mode=\"protect\",request_origin=\"audit\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("policy=\"healthy\",mode=\"protect\",request_origin=\"validate\""),
        "{metrics}"
    );
    server.stop().await;
}

/// A Pod with `count` privileged containers named with `name_len` letters:
/// pod-privileged names every one of them in its message.
fn pod_with_privileged_containers(count: usize, name_len: usize) -> Value {
    let mut review = fixture("pod-privileged.json");
    let containers: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "name": format!("c{i}-{}", "x".repeat(name_len)),
                "image": "busybox",
                "securityContext": {"privileged": true},
            })
        })
        .collect();
    review["request"]["object"]["spec"]["containers"] = Value::Array(containers);
    review
}

#[tokio::test]
async fn huge_verdict_messages_are_capped_with_a_marker() {
    let yaml = policies_yaml(&[
        (
            "priv-wapc",
            format!("module: {}", module("pod-privileged-wapc")),
        ),
        (
            "priv-component",
            format!("module: {}", module("pod-privileged-component")),
        ),
    ]);
    let options = Options {
        tweak: Box::new(|c| c.max_body_bytes = 8 * 1024 * 1024),
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    // About 2.5 MiB of container names.
    let review = pod_with_privileged_containers(1250, 2000);
    for id in ["priv-wapc", "priv-component"] {
        let response = server
            .client
            .post(format!("{}/validate/{id}", server.base))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&review).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let bytes = response.bytes().await.unwrap();
        assert!(
            bytes.len() < 64 * 1024,
            "{id}: a {}-byte AdmissionReview",
            bytes.len()
        );
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let message = body["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Privileged container is not allowed: c0-xxx"),
            "{id}: {}",
            &message[..80]
        );
        assert!(
            message.ends_with(" MiB message]")
                && message.contains("… [truncated by portcullis: 2."),
            "{id}: {}",
            &message[message.len() - 80..]
        );
        assert!(message.len() <= 16 * 1024, "{id}: {}", message.len());
    }
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_patch_is_refused() {
    // 1500 labels of 60 characters (the sample policy accepts label
    // values up to 63): a patch of about 100 KiB.
    let labels: String = (0..1500)
        .map(|i| format!("    label-{i:04}: {}\n", "v".repeat(60)))
        .collect();
    let yaml = policies_yaml(&[(
        "labels",
        format!(
            "module: {}\nallowedToMutate: true\nsettings:\n  labels:\n{labels}",
            module("default-labels-wapc")
        ),
    )]);
    let options = Options {
        tweak: Box::new(|c| c.max_body_bytes = 64 * 1024),
        ..Options::default()
    };
    let server = TestServer::start(&yaml, options).await;
    let response = server
        .validate("labels", &fixture("pod-no-labels.json"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response.get("patch").is_none());
    assert_eq!(response["status"]["code"], 500);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("KiB JSON patch, over the 64 KiB limit"),
        "{message}"
    );
    server.stop().await;
}
