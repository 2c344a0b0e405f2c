//! One test's world for the reconcile tests: its own controller namespace,
//! a unique label for its PolicyServers and policies, a controller
//! restricted to them (in-process as the controller's ServiceAccount, or the
//! binary), and a fake policy-server replica.
//!
//! There is no kubelet: readiness of the policy-server is simulated by
//! marking its Pods Ready through the status subresource, after which
//! kube-controller-manager updates the ReplicaSet and Deployment status as in
//! a real cluster.

#![allow(dead_code)]

use std::thread::JoinHandle;
use std::time::Duration;

use portcullis_config::PoliciesConfig;
use portcullis_controller::resources::BuildOptions;
use portcullis_tests::control_plane::{ControlPlane, TestNamespace};
use serde_json::Value;

use super::{TEST_LABEL, control_plane, eventually, install_rbac, jstr, unique};

/// How long the world's waits last.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A controller running on its own thread and runtime; stopped on drop.
pub struct RunningController {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningController {
    pub fn start(cp: &ControlPlane, namespace: &str, selector: &str, user: &str) -> Self {
        let user = user.to_string();
        let namespace_owned = namespace.to_string();
        let kubeconfig = cp.kubeconfig_path().to_path_buf();
        let opts = BuildOptions {
            namespace: namespace.to_string(),
            always_accept_own_namespace: true,
        };
        let selector = selector.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let namespace = namespace_owned;
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
                let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .expect("client config");
                // The controller's ServiceAccount, bound only to
                // controller/deploy/rbac.yaml: checks the RBAC, and the audit
                // log tells its requests from the test's kubectl calls.
                config.auth_info.impersonate = Some(user);
                config.auth_info.impersonate_groups = Some(vec![
                    "system:serviceaccounts".to_string(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".to_string(),
                ]);
                let client = kube::Client::try_from(config).expect("client");
                portcullis_controller::controller::run_with_selector(
                    client,
                    opts,
                    Some(selector),
                    async move {
                        let _ = rx.await;
                    },
                )
                .await;
            });
        });
        RunningController {
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The ServiceAccount the controller of a test runs as.
pub fn controller_user(namespace: &str) -> String {
    format!("system:serviceaccount:{namespace}:portcullis-controller")
}

/// What the fake policy-server replica reports.
#[derive(Debug, Clone)]
pub enum ReplicaMode {
    /// The digest of the ConfigMap's current policies.yml, every policy
    /// loaded except those listed, which are reported as failed.
    Honest { failing: Vec<String> },
    /// A fixed digest (a replica that has not reloaded yet).
    Stale,
}

/// Stands in for the policy-server pods' probe listener (`GET /readiness`):
/// the Pods get IP 127.0.0.1 and the PolicyServer's readinessProbePort is
/// this listener's port.
pub struct FakeReplica {
    pub port: u16,
    mode: std::sync::Arc<std::sync::Mutex<ReplicaMode>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeReplica {
    pub fn start(cp: &'static ControlPlane, namespace: String) -> FakeReplica {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake replica");
        let port = listener.local_addr().expect("local addr").port();
        let mode = std::sync::Arc::new(std::sync::Mutex::new(ReplicaMode::Honest {
            failing: Vec::new(),
        }));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m, st) = (mode.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let current = m.lock().map(|g| g.clone()).unwrap_or(ReplicaMode::Stale);
                let body = replica_report(cp, &namespace, &current);
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{body}"
                );
            }
        });
        FakeReplica { port, mode, stop }
    }

    pub fn set(&self, mode: ReplicaMode) {
        if let Ok(mut g) = self.mode.lock() {
            *g = mode;
        }
    }
}

impl Drop for FakeReplica {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The report of a replica that serves the ConfigMaps of `namespace` (one
/// PolicyServer per test).
fn replica_report(cp: &ControlPlane, namespace: &str, mode: &ReplicaMode) -> String {
    let failing = match mode {
        ReplicaMode::Stale => {
            return r#"{"ready":true,"configDigest":"sha256:stale","generation":1,"policies":{}}"#
                .to_string();
        }
        ReplicaMode::Honest { failing } => failing,
    };
    let out = cp.kubectl(&[
        "-n",
        namespace,
        "get",
        "configmaps",
        "-l",
        "app.kubernetes.io/part-of=portcullis",
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let yaml = jstr(&list, "/items/0/data/policies.yml").to_string();
    let config = PoliciesConfig::from_slice(yaml.as_bytes()).unwrap_or_default();
    let policies: serde_json::Map<String, Value> = config
        .policies
        .keys()
        .map(|id| {
            let report = if failing.contains(id) {
                serde_json::json!({"state": "error", "reason": "settings are invalid: boom"})
            } else {
                serde_json::json!({"state": "loaded", "module": "m", "moduleDigest": "sha256:m", "mode": "protect"})
            };
            (id.clone(), report)
        })
        .collect();
    serde_json::json!({
        "ready": true,
        "configDigest": portcullis_config::content_digest(yaml.as_bytes()),
        "generation": 1,
        "policies": policies,
    })
    .to_string()
}

/// How a test runs the controller.
pub enum Runner {
    /// In this process, impersonating the controller's ServiceAccount.
    InProcess(#[allow(dead_code)] RunningController),
    /// The `portcullis-controller` binary with `KUBECONFIG` (admin).
    Binary(std::process::Child),
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Runner::Binary(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One test's world: a namespace for the controller's objects, a unique label
/// for the test's PolicyServers and policies, and a running controller.
pub struct World {
    pub cp: &'static ControlPlane,
    pub ns: TestNamespace,
    pub label: String,
    pub replica: FakeReplica,
    pub controller: Option<Runner>,
}

impl World {
    pub fn new(prefix: &str) -> World {
        World::start(prefix, false)
    }

    pub fn start(prefix: &str, binary: bool) -> World {
        let cp = control_plane();
        let ns = TestNamespace::new(prefix);
        let label = unique(prefix);
        let selector = format!("{TEST_LABEL}={label}");
        let replica = FakeReplica::start(cp, ns.name().to_string());
        let controller = if binary {
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis-controller"))
                .args(["--selector", &selector, "--log-level", "warn"])
                // Any free port: tests run in parallel.
                .args(["--metrics-addr", "127.0.0.1:0"])
                .env("KUBECONFIG", cp.kubeconfig_path())
                .env("PORTCULLIS_NAMESPACE", ns.name())
                .spawn()
                .expect("spawn portcullis-controller");
            Runner::Binary(child)
        } else {
            install_rbac(cp, ns.name(), &label);
            Runner::InProcess(RunningController::start(
                cp,
                ns.name(),
                &selector,
                &controller_user(ns.name()),
            ))
        };
        let controller = Some(controller);
        World {
            cp,
            ns,
            label,
            replica,
            controller,
        }
    }

    pub fn ns(&self) -> &str {
        self.ns.name()
    }

    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.cp.kubectl(&all);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn get_ns_json(&self, kind: &str, name: &str) -> Option<Value> {
        self.get_json(&["-n", self.ns(), kind, name])
    }

    pub fn policy_server(&self, name: &str, extra: &str) -> String {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: PolicyServer
metadata:
  name: {name}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  image: ghcr.io/portcullis/policy-server:test
  replicas: 1
  readinessProbePort: {port}
{extra}"#,
            label = self.label,
            port = self.replica.port
        )
    }

    /// Marks every Pod of the PolicyServer Ready (there is no kubelet).
    pub fn make_pods_ready(&self, ps: &str) {
        let selector = format!("policies.portcullis.dev/policy-server={ps}");
        let pods = eventually("policy-server pods", TIMEOUT, || {
            let out = self.cp.kubectl_ok(&[
                "-n",
                self.ns(),
                "get",
                "pods",
                "-l",
                &selector,
                "-o",
                "name",
            ]);
            let pods: Vec<String> = out.lines().map(str::to_string).collect();
            (!pods.is_empty()).then_some(pods)
        });
        for pod in pods {
            self.cp.kubectl_ok(&[
                "-n",
                self.ns(),
                "patch",
                &pod,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running","podIP":"127.0.0.1","podIPs":[{"ip":"127.0.0.1"}],"conditions":[{"type":"Ready","status":"True"},{"type":"ContainersReady","status":"True"}]}}"#,
            ]);
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.controller.take();
        let _ = self.cp.kubectl(&[
            "delete",
            "clusterrolebinding",
            &format!("portcullis-controller-{}", self.label),
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

pub fn decode(v: &Value, pointer: &str) -> String {
    use base64::Engine as _;
    let b64 = jstr(v, pointer);
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default(),
    )
    .unwrap_or_default()
}

pub fn status_of(w: &World, args: &[&str]) -> String {
    w.get_json(args)
        .map(|v| jstr(&v, "/status/policyStatus").to_string())
        .unwrap_or_default()
}
