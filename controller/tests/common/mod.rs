//! Helpers shared by the controller's integration tests.

#![allow(dead_code)]

pub mod pod;
pub mod registry;
pub mod world;

use std::fs::File;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use portcullis_tests::control_plane::ControlPlane;
use portcullis_tests::http;
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
        assert_eq!(
            names.len(),
            portcullis_controller::crd::crds().len(),
            "expected one CRD file per CRD in {}",
            dir.display()
        );
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

/// How long a controller may take to log its metrics address and turn ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process of a test, its stdout and stderr in a log file. Killed on
/// drop; its log is printed when the test panics.
pub struct Proc {
    /// What the process is, for messages (e.g. `controller <id>`).
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd`, stdin closed, stdout and stderr written to a new file `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }

    /// Waits for the process to exit on its own; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "{} still runs after {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits at most `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a valid signal number on our own child's pid;
        // no memory is shared.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "kill(SIGTERM) failed");
        self.wait_exit(timeout)
    }

    /// Stops the process (SIGKILL, as when a Pod's container is gone) and waits.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

/// A `portcullis-controller` process, JSON logs at info level, metrics and
/// probes on a free loopback port.
pub struct Controller {
    id: String,
    proc: Proc,
    addr: Option<SocketAddr>,
}

impl Controller {
    /// Starts the binary as the user of `kubeconfig` (the controller's
    /// ServiceAccount, see [`impersonating_kubeconfig`]) in `namespace`,
    /// handling only objects labelled `label`, its log in `dir/<id>.log`.
    /// `configure` adds the caller's own arguments and environment.
    pub fn start(
        dir: &Path,
        kubeconfig: &Path,
        namespace: &str,
        label: &str,
        id: &str,
        configure: impl FnOnce(&mut Command),
    ) -> Controller {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis-controller"));
        cmd.args(["--selector", &format!("{TEST_LABEL}={label}")])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--log-level", "info", "--log-fmt", "json"])
            .env("KUBECONFIG", kubeconfig)
            .env("PORTCULLIS_NAMESPACE", namespace);
        configure(&mut cmd);
        Controller {
            id: id.to_string(),
            proc: Proc::spawn(
                &format!("controller {id}"),
                &mut cmd,
                dir.join(format!("{id}.log")),
            ),
            addr: None,
        }
    }

    /// The id given to [`Controller::start`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// `fields` (plus `level`) of every JSON log event.
    pub fn events(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| {
                let mut fields = e.get("fields").cloned()?;
                fields["level"] = e["level"].clone();
                Some(fields)
            })
            .collect()
    }

    /// Whether an event with this message was logged.
    pub fn logged(&self, message: &str) -> bool {
        self.events().iter().any(|f| f["message"] == message)
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        self.proc.assert_running();
    }

    /// The address of the metrics listener, from the startup log line (the
    /// port is only known once the controller has bound it).
    pub fn addr(&mut self) -> SocketAddr {
        if let Some(addr) = self.addr {
            return addr;
        }
        let addr = eventually(
            "the 'serving metrics and health' log line",
            START_TIMEOUT,
            || {
                self.assert_running();
                self.events()
                    .into_iter()
                    .find(|f| f["message"] == "serving metrics and health")
                    .and_then(|f| f["addr"].as_str().and_then(|a| a.parse().ok()))
            },
        );
        self.addr = Some(addr);
        addr
    }

    /// The body of `GET /metrics` (status 200).
    pub fn metrics(&mut self) -> String {
        get_ok(self.addr(), "/metrics")
    }

    /// Waits for `/readyz` to answer 200, then asserts `/healthz` does.
    pub fn wait_ready(&mut self) {
        let addr = self.addr();
        eventually(
            &format!("/readyz of {} to answer 200", self.id),
            START_TIMEOUT,
            || {
                self.assert_running();
                http::get(addr, "/readyz")
                    .ok()
                    .filter(|(status, _)| *status == 200)
            },
        );
        get_ok(addr, "/healthz");
    }

    /// Waits for the process to exit on its own; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.wait_exit(timeout)
    }

    /// Sends SIGTERM and waits at most `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.terminate(timeout)
    }
}

/// The body of `GET path` on `addr`; panics unless the status is 200.
pub fn get_ok(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http::get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The value of the sample `name{labels…}` in a text exposition, whatever
/// the order of its labels.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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

/// Deletes the test's (labelled `label`) policies and PolicyServers on drop.
/// Declare it after the controllers, so that on a panic it runs while they
/// still do: the objects' finalizers need one.
pub struct Objects<'a> {
    /// The control plane.
    pub cp: &'a ControlPlane,
    /// The test's value of [`TEST_LABEL`].
    pub label: String,
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
