//! The operational surface of the `portcullis-controller` binary: `/metrics`,
//! `/healthz`, `/readyz` on `--metrics-addr`, and a clean exit on SIGTERM.
//!
//! The binary runs against the shared control plane as the controller's
//! ServiceAccount (bound only to `controller/deploy/rbac.yaml`), restricted by
//! `--selector` to this test's objects, with `--metrics-addr 127.0.0.1:0`; the
//! port it bound is read from its "serving metrics and health" log line.

mod common;

use std::fs::File;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{
    BindingGuard, TEST_LABEL, control_plane, eventually, impersonating_kubeconfig, install_rbac,
    unique,
};
use portcullis_tests::control_plane::{ControlPlane, TestNamespace, target_dir};
use portcullis_tests::http;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);
/// How long the controller may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The controller process, killed on drop if still running.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// `fields` of every JSON log event.
    fn events(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| e.get("fields").cloned())
            .collect()
    }

    /// Panics with the log if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the controller exited ({status}):\n{}", self.log());
        }
    }

    /// The address of the metrics listener, from the startup log line.
    fn metrics_addr(&mut self) -> SocketAddr {
        eventually("the 'serving metrics and health' log line", TIMEOUT, || {
            self.assert_running();
            self.events()
                .into_iter()
                .find(|f| f["message"] == "serving metrics and health")
                .and_then(|f| f["addr"].as_str().and_then(|a| a.parse().ok()))
        })
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a valid signal number on our own child's pid;
        // no memory is shared.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "kill(SIGTERM) failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the controller") {
                return status;
            }
            assert!(
                started.elapsed() < EXIT_TIMEOUT,
                "the controller still runs {EXIT_TIMEOUT:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

/// Deletes the test's policies and PolicyServers on drop. Declared after the
/// controller, so that on a panic it runs while the controller still does
/// (their finalizers need it).
struct Objects<'a> {
    cp: &'a ControlPlane,
    label: String,
}

impl Drop for Objects<'_> {
    fn drop(&mut self) {
        let selector = format!("{TEST_LABEL}={}", self.label);
        for kind in ["clusteradmissionpolicies", "policyservers"] {
            let _ = self.cp.kubectl(&[
                "delete",
                kind,
                "-l",
                &selector,
                "--ignore-not-found",
                "--timeout=30s",
            ]);
        }
    }
}

/// The value of the sample `name{labels…}` in a text exposition, whatever
/// the order of its labels.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

fn get_ok(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http::get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

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
    let log_path = dir.join("controller.log");
    let log = File::create(&log_path).expect("controller log");
    let mut controller = Controller {
        child: Command::new(env!("CARGO_BIN_EXE_portcullis-controller"))
            .args(["--selector", &format!("{TEST_LABEL}={label}")])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--log-level", "info", "--log-fmt", "json"])
            .env("KUBECONFIG", &kubeconfig)
            .env("PORTCULLIS_NAMESPACE", ns.name())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn portcullis-controller"),
        log: log_path,
    };
    let objects = Objects {
        cp,
        label: label.clone(),
    };

    let addr = controller.metrics_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    get_ok(addr, "/healthz");
    eventually("/readyz to answer 200", TIMEOUT, || {
        controller.assert_running();
        http::get(addr, "/readyz")
            .ok()
            .filter(|(status, _)| *status == 200)
    });

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

    let status = controller.terminate();
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

#[test]
fn sample_parses_the_exposition() {
    let text = "# TYPE x counter\nx_total{kind=\"A\",result=\"success\"} 3\nx_total{result=\"error\",kind=\"A\"} 1\ny 2.5\n# EOF\n";
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
