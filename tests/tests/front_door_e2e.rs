//! The policy-server's front door as the real kube-apiserver sees it: the
//! API server calls webhooks over HTTP/2 (Go's client), and an
//! AdmissionReview over the policy-server's body limit must come back as
//! its JSON 413, which the API server reports, not as a reset stream.
//!
//! Needs what admission_e2e.rs needs (docs/control-plane.md, "End-to-end tests").

use portcullis_tests::control_plane::{ControlPlane, TestNamespace};
use portcullis_tests::e2e::{
    Endpoint, Kubectl, PRIVILEGED_DENIAL, Webhook, WebhookKind, dry_run_pod, privileged_pod,
    unprivileged_pod, wait_for_default_service_account, wait_until_rejected,
};
use portcullis_tests::policy_server::{Policy, PolicyServer};
use serde_json::json;

#[test]
fn an_oversized_admission_review_gets_a_413_the_api_server_reports() {
    let ns = TestNamespace::new("e2e-413");
    let k = Kubectl::for_control_plane(ControlPlane::shared());
    wait_for_default_service_account(&k, ns.name());
    let server = PolicyServer::start_with_args(
        &[Policy::new("privileged", "pod-privileged-wapc")],
        &[],
        &["--max-body-bytes", "65536"],
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
    // The webhook is in effect.
    wait_until_rejected(&k, &privileged_pod("small", ns.name()), PRIVILEGED_DENIAL);

    // A Pod whose AdmissionReview is over 64 KiB.
    let mut pod = unprivileged_pod("big", ns.name());
    pod["metadata"]["annotations"] = json!({ "padding": "x".repeat(100 * 1024) });
    let out = dry_run_pod(&k, &pod);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "admitted: {text}");
    assert!(text.contains(webhook.name()), "{text}");
    assert!(
        text.contains("413") || text.to_ascii_lowercase().contains("too large"),
        "the API server should report the policy-server's 413: {text}"
    );
    assert!(
        !text.contains("stream error") && !text.contains("RST_STREAM"),
        "the API server saw a reset stream: {text}"
    );
    eprintln!("the API server reported: {text}");
}
