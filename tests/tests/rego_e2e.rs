//! Rego policies end to end: a real kube-apiserver calls a real
//! `policy-server` over HTTPS, which runs the OPA-mode and the
//! Gatekeeper-mode pod-privileged (`executionMode` in its policies file), and
//! the adversarial Rego policies beside a healthy one.
//!
//! Needs what tests/tests/admission_e2e.rs needs (see docs/control-plane.md).

use portcullis_tests::control_plane::{ControlPlane, TestNamespace};
use portcullis_tests::e2e::{
    Endpoint, Kubectl, Webhook, WebhookKind, assert_pod_admitted, assert_pod_rejected,
    assert_privileged_pod_denied, unprivileged_pod, wait_for_default_service_account,
};
use portcullis_tests::policy_server::{Policy, PolicyServer};
use serde_json::json;

fn namespace(prefix: &str) -> (TestNamespace, Kubectl) {
    let ns = TestNamespace::new(prefix);
    let k = Kubectl::for_control_plane(ControlPlane::shared());
    wait_for_default_service_account(&k, ns.name());
    (ns, k)
}

#[test]
fn opa_and_gatekeeper_modes_deny_privileged_pods_through_the_api_server() {
    for (mode, module) in [
        ("opa", "pod-privileged-opa"),
        ("gatekeeper", "pod-privileged-gatekeeper"),
    ] {
        let (ns, k) = namespace(&format!("e2e-rego-{mode}"));
        let server = PolicyServer::start(
            &[Policy::new("privileged", module).execution_mode(mode)],
            &[],
        )
        .unwrap_or_else(|e| panic!("cannot start the policy-server: {e:#}"));
        let webhook = Webhook::new(
            WebhookKind::Validating,
            "privileged",
            ns.name(),
            Endpoint::Url(server.validate_url("privileged")),
            server.ca_pem(),
        )
        .register(&k);
        assert_privileged_pod_denied(&k, ns.name(), "privileged", webhook.name());
        let pod = assert_pod_admitted(&k, &unprivileged_pod("unprivileged", ns.name()));
        assert_eq!(pod["metadata"]["name"], "unprivileged", "{mode}");
    }
}

#[test]
fn adversarial_rego_policies_cost_only_their_own_requests() {
    let (ns, k) = namespace("e2e-rego-adversarial");
    let server = PolicyServer::start(
        &[
            Policy::new("loop", "adversarial-rego-loop").execution_mode("gatekeeper"),
            Policy::new("huge", "adversarial-rego-huge-output").execution_mode("gatekeeper"),
            Policy::new("http", "adversarial-rego-unsupported-builtin")
                .execution_mode("gatekeeper"),
            Policy::new("privileged", "pod-privileged-gatekeeper").execution_mode("gatekeeper"),
        ],
        &[],
    )
    .unwrap_or_else(|e| panic!("cannot start the policy-server: {e:#}"));
    let webhook = |policy: &str| {
        Webhook::new(
            WebhookKind::Validating,
            policy,
            ns.name(),
            Endpoint::Url(server.validate_url(policy)),
            server.ca_pem(),
        )
    };
    // Each adversarial policy is tried alone, then the healthy one must still serve.
    // The Rego loop allocates an index per iteration: with the server's
    // 2 s deadline and 256 MiB cap it may meet either bound first.
    for (policy, needle) in [
        ("loop", "could not evaluate"),
        ("huge", "could not evaluate"),
        ("http", "http.send"),
    ] {
        let guard = webhook(policy).register(&k);
        let mut pod = unprivileged_pod(&format!("{policy}-victim"), ns.name());
        if policy == "http" {
            pod["metadata"]["name"] = json!("call-http");
        }
        let message = assert_pod_rejected(&k, &pod, needle);
        assert!(message.contains(guard.name()), "{policy}: {message}");
        if policy == "loop" {
            assert!(
                message.contains("deadline") || message.contains("memory limit"),
                "{message}"
            );
        }
        drop(guard);
    }
    let guard = webhook("privileged").register(&k);
    assert_privileged_pod_denied(&k, ns.name(), "privileged-after", guard.name());
}
