//! Helpers of the context-aware tests: the real API server of the test
//! harness, admission requests for Ingresses and Pods, RBAC objects.

use std::time::{Duration, Instant};

use portcullis_host::capabilities::KubeConfigSource;
use portcullis_tests::control_plane::ControlPlane;
use serde_json::{Value, json};

use super::Options;

/// Server options that point context-aware policies at the harness' API server.
pub fn kube_options(cp: &ControlPlane) -> Options {
    let kubeconfig = cp.kubeconfig_path().to_path_buf();
    Options {
        tweak: Box::new(move |config| config.kubernetes = KubeConfigSource::File(kubeconfig)),
        ..Options::default()
    }
}

/// A policies.yml body: `module` of a sample policy, then `extra` lines.
pub fn policy(module_name: &str, extra: &str) -> String {
    format!("module: {}\n{extra}", super::module(module_name))
}

/// An AdmissionReview for `operation` of `object` (kind from `gvk`).
pub fn review(
    gvk: (&str, &str, &str),
    resource: &str,
    namespace: &str,
    operation: &str,
    user: (&str, &[&str]),
    object: Value,
) -> Value {
    let (group, version, kind) = gvk;
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "33333333-3333-3333-3333-333333333333",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": user.0, "groups": user.1},
            "object": object,
        }
    })
}

/// An Ingress routing `hosts`.
pub fn ingress(namespace: &str, name: &str, hosts: &[&str]) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rules": hosts.iter().map(|h| json!({
            "host": h,
            "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}
        })).collect::<Vec<_>>()}
    })
}

/// A CREATE review of an Ingress.
pub fn ingress_review(namespace: &str, name: &str, hosts: &[&str], operation: &str) -> Value {
    review(
        ("networking.k8s.io", "v1", "Ingress"),
        "ingresses",
        namespace,
        operation,
        ("kubernetes-admin", &["system:masters"]),
        ingress(namespace, name, hosts),
    )
}

/// A CREATE review of a Pod with `images`, sent by `user` in `groups`.
pub fn pod_review(namespace: &str, user: &str, groups: &[&str], images: &[&str]) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    review(
        ("", "v1", "Pod"),
        "pods",
        namespace,
        "CREATE",
        (user, groups),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "namespace": namespace},
               "spec": {"containers": containers}}),
    )
}

/// `kubectl apply` of a JSON object.
pub fn apply(cp: &ControlPlane, object: &Value) {
    cp.apply(&object.to_string());
}

/// Polls `probe` (async) until it returns true, at most `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A policies.yml body for a capability probe (`capability-probe-*`) that
/// makes `call` with `arg`, granted `*` and then `extra` lines.
pub fn probe(module: &str, call: &str, arg: Value, extra: &str) -> String {
    policy(
        module,
        &format!(
            "settings: {}\nhostCapabilities: [\"*\"]\n{extra}",
            json!({"call": call, "arg": arg})
        ),
    )
}

/// A probe's answer: the JSON in the message of its accepted response.
pub async fn probe_answer(server: &super::TestServer, id: &str) -> Value {
    let response = server
        .validate(id, &super::fixture("pod-unprivileged.json"))
        .await;
    assert_eq!(response["allowed"], true, "{id}: {response}");
    serde_json::from_str(response["status"]["message"].as_str().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{id}: {e}: {response}"))
}

/// A probe's refusal: the message of its rejected response.
pub async fn probe_refusal(server: &super::TestServer, id: &str) -> String {
    let response = server
        .validate(id, &super::fixture("pod-unprivileged.json"))
        .await;
    assert_eq!(response["allowed"], false, "{id}: {response}");
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
