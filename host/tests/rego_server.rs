//! The policy-server with Rego policies over HTTPS: each policy runs in the
//! `executionMode` of its entry in the policies file; a missing or unfitting
//! mode fails only that policy, with the reason, and the others serve.

mod common;

use common::{Options, TestServer, fixture, module, policies_yaml};
use serde_json::{Value, json};

const PRIVILEGED_MESSAGE: &str = "Privileged container is not allowed: sidecar";

fn policy(module_name: &str, mode: Option<&str>) -> String {
    let mut body = format!("module: {}\n", module(module_name));
    if let Some(mode) = mode {
        body.push_str(&format!("executionMode: {mode}\n"));
    }
    body
}

#[tokio::test]
async fn each_policy_runs_in_its_execution_mode() {
    let yaml = policies_yaml(&[
        (
            "gk",
            policy("pod-privileged-gatekeeper", Some("gatekeeper")),
        ),
        ("opa", policy("pod-privileged-opa", Some("opa"))),
        ("no-mode", policy("pod-privileged-opa", None)),
        (
            "wrong-mode",
            policy("pod-privileged-gatekeeper", Some("kubewarden-wapc")),
        ),
        (
            "rego-mode-on-wapc",
            policy("pod-privileged-wapc", Some("gatekeeper")),
        ),
        ("wasi-mode", policy("pod-privileged-wapc", Some("wasi"))),
        ("go-wasi", policy("pod-privileged-go", Some("wasi"))),
    ]);
    let server = TestServer::start(&yaml, Options::default()).await;

    for id in ["gk", "opa", "go-wasi"] {
        let denied = server.validate(id, &fixture("pod-privileged.json")).await;
        assert_eq!(denied["allowed"], false, "{id}: {denied}");
        assert_eq!(denied["status"]["message"], PRIVILEGED_MESSAGE, "{id}");
        let admitted = server.validate(id, &fixture("pod-unprivileged.json")).await;
        assert_eq!(admitted["allowed"], true, "{id}: {admitted}");
    }

    let (status, body) = server.probe("/readiness").await;
    assert_eq!(status, 200, "{body}");
    let readiness: Value = serde_json::from_str(&body).unwrap();
    for (id, reason) in [
        ("no-mode", "executionMode"),
        ("wrong-mode", "execution mode kubewarden-wapc"),
        ("rego-mode-on-wapc", "execution mode gatekeeper"),
        ("wasi-mode", "wasi"),
    ] {
        let state = &readiness["policies"][id];
        assert_eq!(state["state"], "error", "{id}: {state}");
        assert!(
            state["reason"].as_str().unwrap().contains(reason),
            "{id}: {state}"
        );
        let response = server.validate(id, &fixture("pod-unprivileged.json")).await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
        assert_eq!(response["status"]["code"], 500, "{id}");
    }
    assert_eq!(readiness["policies"]["gk"]["state"], "loaded");
    server.stop().await;
}

#[tokio::test]
async fn gatekeeper_policies_refuse_raw_requests() {
    let yaml = policies_yaml(&[
        (
            "gk",
            policy("pod-privileged-gatekeeper", Some("gatekeeper")),
        ),
        ("opa", policy("pod-privileged-opa", Some("opa"))),
    ]);
    let server = TestServer::start(&yaml, Options::default()).await;
    let raw = json!({"request": {"uid": "raw-1", "kind": {"kind": "Pod"}}});

    let (status, body) = server.post("/validate_raw/gk", &raw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], false, "{body}");
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("raw"), "{message}");

    let (status, body) = server.post("/validate_raw/opa", &raw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], true, "{body}");
    server.stop().await;
}
