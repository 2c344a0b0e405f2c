//! Helpers shared by the controller's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use portcullis_tests::control_plane::ControlPlane;
use serde_json::Value;

/// The shared control plane with the Portcullis CRDs installed and Established.
pub fn control_plane() -> &'static ControlPlane {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let cp = ControlPlane::shared();
    INSTALLED.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("controller/crds") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                cp.kubectl_ok(&[
                    "apply",
                    "--server-side",
                    "--field-manager=portcullis-tests",
                    "-f",
                    path.to_str().expect("utf-8 path"),
                ]);
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .expect("file name")
                    .to_string();
                names.push(stem);
            }
        }
        assert_eq!(names.len(), 3, "expected 3 CRD files in {}", dir.display());
        for name in names {
            cp.kubectl_ok(&[
                "wait",
                "--for=condition=Established",
                &format!("crd/{name}"),
                "--timeout=60s",
            ]);
        }
    });
    cp
}

/// A name unique within this test binary run: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}-{n}", std::process::id())
}

/// stdout + stderr of a kubectl run, for assertions on messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kubectl apply -f -`, returning the raw output (no panic).
pub fn try_apply(cp: &ControlPlane, yaml: &str) -> Output {
    cp.kubectl_stdin(&["apply", "-f", "-"], yaml)
}

/// Asserts that applying `yaml` fails and the error contains `needle`.
pub fn assert_rejected(cp: &ControlPlane, yaml: &str, needle: &str) {
    let out = try_apply(cp, yaml);
    let text = output_text(&out);
    assert!(
        !out.status.success(),
        "expected the API server to reject:\n{yaml}\ngot:\n{text}"
    );
    assert!(
        text.contains(needle),
        "rejection message lacks {needle:?}:\n{text}"
    );
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout`
/// with `what` and the last value seen.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Label that ties a test's objects to the controller it runs (`--selector`).
pub const TEST_LABEL: &str = "portcullis-test";

/// Applies controller/deploy/rbac.yaml and binds it to the controller's
/// ServiceAccount in `namespace`; returns the ClusterRoleBinding's name.
pub fn install_rbac(cp: &ControlPlane, namespace: &str, label: &str) -> String {
    // Once per test binary (one control plane each): two tests applying the
    // same new ClusterRoles at once race, and one gets AlreadyExists.
    static CLUSTER_ROLES: OnceLock<()> = OnceLock::new();
    CLUSTER_ROLES.get_or_init(|| {
        let rbac = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac.yaml");
        cp.kubectl_ok(&["apply", "-f", rbac.to_str().expect("utf-8 path")]);
    });
    let binding = format!("portcullis-controller-{label}");
    cp.apply(&format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: portcullis-controller, namespace: {namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {binding}, labels: {{{TEST_LABEL}: {label}}}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: portcullis-controller}}
subjects: [{{kind: ServiceAccount, name: portcullis-controller, namespace: {namespace}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: portcullis-controller, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: portcullis-controller-namespace}}
subjects: [{{kind: ServiceAccount, name: portcullis-controller, namespace: {namespace}}}]
"#
    ));
    binding
}

/// The string at a JSON pointer, or "" when absent.
pub fn jstr<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Removes the RBAC binding of the test's controller on drop.
pub struct BindingGuard<'a> {
    /// The control plane.
    pub cp: &'a ControlPlane,
    /// Name of the ClusterRoleBinding (from [`install_rbac`]).
    pub name: String,
}

impl Drop for BindingGuard<'_> {
    fn drop(&mut self) {
        let _ = self.cp.kubectl(&[
            "delete",
            "clusterrolebinding",
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// A copy of the admin kubeconfig whose users impersonate the controller's
/// ServiceAccount (`as` / `as-groups`), as a Pod's token would authenticate.
pub fn impersonating_kubeconfig(cp: &ControlPlane, namespace: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(cp.kubeconfig_path()).expect("read kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let users = config
        .get_mut("users")
        .and_then(serde_yaml::Value::as_sequence_mut)
        .expect("kubeconfig users");
    for user in users {
        let user = user.get_mut("user").expect("user entry");
        user["as"] = format!("system:serviceaccount:{namespace}:portcullis-controller").into();
        user["as-groups"] = serde_yaml::to_value(vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_string(),
        ])
        .expect("groups");
    }
    let path = dir.join("controller.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("serialize")).expect("write");
    path
}
