//! End-to-end admission: a real kube-apiserver (tests/control-plane) calls a real
//! `policy-server` child process over HTTPS through Validating/Mutating webhook
//! configurations, and kubectl sees the outcome.
//!
//! Needs `scripts/go-tools.sh control-plane`, `scripts/build-policies.sh` and
//! `cargo build -p portcullis-host --bins` (see docs/control-plane.md, "End-to-end tests").
//! Each test has its own namespace(s), its own policy-server and webhooks scoped
//! to its namespace(s), so the tests run in parallel.

use std::time::Duration;

use portcullis_tests::control_plane::{ControlPlane, TestNamespace};
use portcullis_tests::e2e::{
    Endpoint, FailurePolicy, Kubectl, PRIVILEGED_DENIAL, Webhook, WebhookKind,
    assert_default_labels, assert_pod_admitted, assert_privileged_pod_admitted,
    assert_privileged_pod_denied, assert_unreachable_webhook_fails_closed,
    assert_unreachable_webhook_fails_open, default_labels_settings, dry_run_pod, eventually,
    privileged_pod, register_privileged_and_default_labels, unprivileged_pod,
    wait_for_default_service_account,
};
use portcullis_tests::policy_server::{Policy, PolicyServer};
use serde_json::Value;

/// Labels the default-labels policies are configured to add.
const DEFAULT_LABELS: &[(&str, &str)] = &[("portcullis.dev/managed", "true"), ("team", "platform")];

/// A namespace whose Pods can be created, and kubectl for the control plane.
fn namespace(prefix: &str) -> (TestNamespace, Kubectl) {
    let ns = TestNamespace::new(prefix);
    let k = Kubectl::for_control_plane(ControlPlane::shared());
    wait_for_default_service_account(&k, ns.name());
    (ns, k)
}

fn start_server(policies: &[Policy], extra_sans: &[String]) -> PolicyServer {
    PolicyServer::start(policies, extra_sans)
        .unwrap_or_else(|e| panic!("cannot start the policy-server: {e:#}"))
}

#[test]
fn url_webhooks_deny_privileged_pods_and_add_default_labels() {
    let (ns, k) = namespace("e2e-url");
    let server = start_server(
        &[
            Policy::new("privileged", "pod-privileged-wapc"),
            Policy::new("default-labels", "default-labels-component")
                .settings(default_labels_settings(DEFAULT_LABELS))
                .allowed_to_mutate(),
        ],
        &[],
    );
    let (validating, _mutating) =
        register_privileged_and_default_labels(&k, ns.name(), server.ca_pem(), |policy| {
            Endpoint::Url(server.validate_url(policy))
        });

    assert_privileged_pod_denied(&k, ns.name(), "privileged", validating.name());
    assert_default_labels(&k, ns.name(), "labelled", DEFAULT_LABELS);
}

#[test]
fn service_webhooks_deny_privileged_pods_and_add_default_labels() {
    let (ns, k) = namespace("e2e-svc");
    let cp = ControlPlane::shared();
    // As in a cluster: Service `policy-server` in the test namespace, TLS verified
    // against policy-server.<ns>.svc. The harness routes it to the child's port.
    let service = "policy-server";
    let port = 443;
    let server = start_server(
        &[
            Policy::new("privileged", "pod-privileged-component"),
            Policy::new("default-labels", "default-labels-wapc")
                .settings(default_labels_settings(DEFAULT_LABELS))
                .allowed_to_mutate(),
        ],
        &[format!("{service}.{}.svc", ns.name())],
    );
    cp.route_service(ns.name(), service, port, server.addr());
    let endpoint = |policy: &str| Endpoint::Service {
        namespace: ns.name().to_string(),
        name: service.to_string(),
        port,
        path: format!("/validate/{policy}"),
    };
    let (validating, _mutating) =
        register_privileged_and_default_labels(&k, ns.name(), server.ca_pem(), endpoint);

    assert_privileged_pod_denied(&k, ns.name(), "privileged", validating.name());
    assert_default_labels(&k, ns.name(), "labelled", DEFAULT_LABELS);
}

#[test]
fn namespace_selector_scopes_the_policy_to_one_namespace() {
    let (ns_a, k) = namespace("e2e-scoped-a");
    let (ns_b, _) = namespace("e2e-scoped-b");
    let server = start_server(&[Policy::new("privileged", "pod-privileged-wapc")], &[]);
    // Only namespace A is selected.
    let webhook = Webhook::new(
        WebhookKind::Validating,
        "privileged",
        ns_a.name(),
        Endpoint::Url(server.validate_url("privileged")),
        server.ca_pem(),
    )
    .register(&k);

    // Denied in A proves the configuration is in effect; the same Pod is then admitted in B.
    assert_privileged_pod_denied(&k, ns_a.name(), "privileged", webhook.name());
    let pod = assert_privileged_pod_admitted(&k, ns_b.name(), "privileged");
    assert_eq!(
        pod["spec"]["containers"][1]["securityContext"]["privileged"], true,
        "the Pod admitted in B is the privileged one"
    );
}

#[test]
fn failure_policy_decides_when_the_policy_server_is_down() {
    let (ns, k) = namespace("e2e-down");
    let cp = ControlPlane::shared();
    let mut server = start_server(&[Policy::new("privileged", "pod-privileged-wapc")], &[]);
    let webhook = Webhook::new(
        WebhookKind::Validating,
        "privileged",
        ns.name(),
        Endpoint::Url(server.validate_url("privileged")),
        server.ca_pem(),
    );
    let guard = webhook.register(&k);
    // The webhook works while the server runs.
    assert_privileged_pod_denied(&k, ns.name(), "privileged", guard.name());

    server.stop();
    assert!(!server.is_running());

    // failurePolicy: Fail → the call error rejects even a harmless Pod.
    let text =
        assert_unreachable_webhook_fails_closed(&k, ns.name(), "while-down-fail", guard.name());
    assert!(
        text.contains("connection refused"),
        "expected a connection error:\n{text}"
    );

    // failurePolicy: Ignore → admitted. Same name: this updates the configuration
    // (`guard` still deletes it), and a Pod getting through shows the update is in
    // effect. The audit check below shows the webhook was called and failed open,
    // rather than missing.
    let _ignore = webhook
        .clone()
        .failure_policy(FailurePolicy::Ignore)
        .register(&k);
    assert_unreachable_webhook_fails_open(&k, ns.name(), "while-down-ignore");

    // The API server records that it failed open on this webhook.
    eventually(
        "the failed-open audit annotation of pod while-down-ignore",
        Duration::from_secs(10),
        || {
            let audit = std::fs::read_to_string(cp.audit_log_path()).map_err(|e| e.to_string())?;
            audit
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|e| {
                    e["verb"] == "create"
                        && e["objectRef"]["namespace"] == ns.name()
                        && e["objectRef"]["name"] == "while-down-ignore"
                        && !e["requestURI"].as_str().unwrap_or("").contains("dryRun")
                        && e["annotations"].as_object().is_some_and(|a| {
                            a.iter().any(|(key, value)| {
                                key.starts_with("failed-open.validating.webhook.admission.k8s.io/")
                                    && value == guard.name()
                            })
                        })
                })
                .map(|_| ())
                .ok_or_else(|| "no such audit event yet".to_string())
        },
    );
}

#[test]
fn monitor_mode_admits_and_logs_the_would_be_rejection() {
    let (ns, k) = namespace("e2e-monitor");
    let policy_id = "privileged-monitor";
    let server = start_server(
        &[Policy::new(policy_id, "pod-privileged-wapc").monitor()],
        &[],
    );
    let _webhook = Webhook::new(
        WebhookKind::Validating,
        policy_id,
        ns.name(),
        Endpoint::Url(server.validate_url(policy_id)),
        server.ca_pem(),
    )
    .register(&k);

    // Admitted either way, so wait until the policy-server has seen a dry-run.
    eventually(
        "a monitor-mode verdict in the policy-server log",
        Duration::from_secs(60),
        || {
            let out = dry_run_pod(&k, &privileged_pod("probe", ns.name()));
            if !out.status.success() {
                return Err(format!(
                    "dry-run rejected: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            if server.monitor_verdicts(policy_id).is_empty() {
                Err(server.log_tail(20))
            } else {
                Ok(())
            }
        },
    );

    let before = server.monitor_verdicts(policy_id).len();
    assert_privileged_pod_admitted(&k, ns.name(), "privileged");
    let verdict = eventually(
        "the monitor-mode verdict of the real create",
        Duration::from_secs(10),
        || {
            let verdicts = server.monitor_verdicts(policy_id);
            verdicts
                .get(before)
                .cloned()
                .ok_or_else(|| server.log_tail(20))
        },
    );
    assert_eq!(verdict["allowed"], false, "would-be verdict: {verdict}");
    assert!(
        verdict.to_string().contains(PRIVILEGED_DENIAL),
        "the would-be rejection message is logged: {verdict}"
    );
}

#[test]
fn python_javascript_and_go_policies_deny_privileged_pods() {
    let policies = [
        ("python", "pod-privileged-python"),
        ("javascript", "pod-privileged-js"),
        ("go", "pod-privileged-go"),
    ];
    let server = start_server(
        &policies
            .iter()
            .map(|(lang, module)| Policy::new(&format!("privileged-{lang}"), module))
            .collect::<Vec<_>>(),
        &[],
    );
    for (lang, _) in policies {
        let (ns, k) = namespace(&format!("e2e-{lang}"));
        let policy = format!("privileged-{lang}");
        let webhook = Webhook::new(
            WebhookKind::Validating,
            &policy,
            ns.name(),
            Endpoint::Url(server.validate_url(&policy)),
            server.ca_pem(),
        )
        .register(&k);
        let denial = assert_privileged_pod_denied(&k, ns.name(), "privileged", webhook.name());
        assert!(
            denial.contains("Privileged container is not allowed: sidecar"),
            "{lang}: {denial}"
        );
        assert_pod_admitted(&k, &unprivileged_pod("unprivileged", ns.name()));
    }
}
