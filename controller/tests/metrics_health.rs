//! The operational surface of the `portcullis-controller` binary: `/metrics`,
//! `/healthz`, `/readyz` on `--metrics-addr`, and a clean exit on SIGTERM.
//!
//! The binary runs against the shared control plane as the controller's
//! ServiceAccount (bound only to `controller/deploy/rbac.yaml`), restricted by
//! `--selector` to this test's objects, with `--metrics-addr 127.0.0.1:0`; the
//! port it bound is read from its "serving metrics and health" log line.

mod common;

use std::time::Duration;

use common::{
    BindingGuard, Controller, Objects, TEST_LABEL, control_plane, eventually, get_ok,
    impersonating_kubeconfig, install_rbac, sample, unique,
};
use portcullis_tests::control_plane::{TestNamespace, target_dir};
use portcullis_tests::http;

const TIMEOUT: Duration = Duration::from_secs(60);
/// How long the controller may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn metrics_probes_and_sigterm() {
    let cp = control_plane();
    let ns = TestNamespace::new("metrics");
    let label = unique("metrics");
    let ps = unique("ps");
    let cap = unique("cap");
    let dir = target_dir().join(format!("metrics-health-{label}"));
    std::fs::create_dir_all(&dir).expect("test dir");

    let _binding = BindingGuard {
        cp,
        name: install_rbac(cp, ns.name(), &label),
    };
    let kubeconfig = impersonating_kubeconfig(cp, ns.name(), &dir);
    let mut controller = Controller::start(&dir, &kubeconfig, ns.name(), &label, &label, |_| {});
    let objects = Objects {
        cp,
        label: label.clone(),
    };

    let addr = controller.addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    get_ok(addr, "/healthz");
    controller.wait_ready();

    // A PolicyServer, and a policy bound to it that stays pending (no Pod
    // ever becomes Ready here).
    cp.apply(&format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: PolicyServer
metadata:
  name: {ps}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  image: ghcr.io/portcullis/policy-server:test
  replicas: 1
---
apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {cap}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}}
  mutating: false
"#
    ));
    let deployment = format!("policy-server-{ps}");
    eventually("the policy-server Deployment", TIMEOUT, || {
        controller.assert_running();
        cp.kubectl(&["-n", ns.name(), "get", "deployment", &deployment])
            .status
            .success()
            .then_some(())
    });

    // The Deployment is written mid-reconcile: wait for the reconcile to end.
    let text = eventually(
        "a successful PolicyServer reconcile in /metrics",
        TIMEOUT,
        || {
            let text = get_ok(addr, "/metrics");
            let policy_servers = [("kind", "PolicyServer"), ("result", "success")];
            let pending = [("kind", "ClusterAdmissionPolicy"), ("status", "pending")];
            (sample(
                &text,
                "portcullis_controller_reconciliations_total",
                &policy_servers,
            )
            .is_some_and(|n| n >= 1.0)
                && sample(&text, "portcullis_controller_policies", &pending) == Some(1.0))
            .then_some(text)
        },
    );
    let ps_kind = [("kind", "PolicyServer")];
    let count = sample(
        &text,
        "portcullis_controller_reconcile_duration_seconds_count",
        &ps_kind,
    );
    assert!(count.is_some_and(|n| n >= 1.0), "{text}");
    let sum = sample(
        &text,
        "portcullis_controller_reconcile_duration_seconds_sum",
        &ps_kind,
    );
    assert!(sum.is_some_and(|s| s > 0.0), "{text}");
    let inf_bucket = [("kind", "PolicyServer"), ("le", "+Inf")];
    assert_eq!(
        sample(
            &text,
            "portcullis_controller_reconcile_duration_seconds_bucket",
            &inf_bucket
        ),
        count,
        "{text}"
    );
    let cap_success = [("kind", "ClusterAdmissionPolicy"), ("result", "success")];
    assert!(
        sample(
            &text,
            "portcullis_controller_reconciliations_total",
            &cap_success
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Series exist before their first sample, and the other phases are 0.
    for (name, labels) in [
        (
            "portcullis_controller_reconciliations_total",
            [("kind", "AdmissionPolicy"), ("result", "error")],
        ),
        (
            "portcullis_controller_policies",
            [("kind", "AdmissionPolicy"), ("status", "active")],
        ),
        (
            "portcullis_controller_policies",
            [("kind", "ClusterAdmissionPolicy"), ("status", "active")],
        ),
    ] {
        assert_eq!(
            sample(&text, name, &labels),
            Some(0.0),
            "{name} {labels:?}\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    get_ok(addr, "/healthz");
    get_ok(addr, "/readyz");

    // Delete while the controller runs: their finalizers are its job.
    for (kind, name) in [("clusteradmissionpolicy", &cap), ("policyserver", &ps)] {
        let out = cp.kubectl(&["delete", kind, name, "--timeout=60s"]);
        assert!(
            out.status.success(),
            "delete {kind} {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eventually("the deleted policy to leave the gauge", TIMEOUT, || {
        let text = get_ok(addr, "/metrics");
        let pending = [("kind", "ClusterAdmissionPolicy"), ("status", "pending")];
        (sample(&text, "portcullis_controller_policies", &pending) == Some(0.0)).then_some(())
    });
    drop(objects);

    let status = controller.terminate(EXIT_TIMEOUT);
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        controller.log()
    );
    let events = controller.events();
    assert!(
        events
            .iter()
            .any(|f| f["message"] == "shutting down" && f["signal"] == "SIGTERM"),
        "no 'shutting down' (SIGTERM) line:\n{}",
        controller.log()
    );
    assert!(
        events.iter().any(|f| f["message"] == "stopped"),
        "no 'stopped' line:\n{}",
        controller.log()
    );
    assert!(
        http::get(addr, "/healthz").is_err(),
        "the metrics listener is still open after exit"
    );
}

// `sample` lives in `common`, which every controller test binary includes:
// its test is here, so that it runs once.
#[test]
fn sample_parses_the_exposition() {
    let text = "# TYPE x gauge\nx 1\nx_total{kind=\"A\",result=\"success\"} 3\nx_total{result=\"error\",kind=\"A\"} 1\ny 2.5\n# EOF\n";
    assert_eq!(sample(text, "x", &[]), Some(1.0));
    assert_eq!(
        sample(text, "x_total", &[("kind", "A"), ("result", "success")]),
        Some(3.0)
    );
    assert_eq!(
        sample(text, "x_total", &[("kind", "A"), ("result", "error")]),
        Some(1.0)
    );
    assert_eq!(sample(text, "y", &[]), Some(2.5));
    assert_eq!(sample(text, "x_total", &[("kind", "B")]), None);
}
