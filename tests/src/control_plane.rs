//! A real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager)
//! for integration tests, from the Go harness in `tests/control-plane/`.
//!
//! One control plane per test binary: [`ControlPlane::shared`] starts it on first
//! use with `--exit-with-parent`, so it stops by itself when the test binary exits,
//! however it exits (normal end, panic, abort, SIGKILL). Its state dir is
//! `target/control-plane-<pid>` and is deleted on exit unless
//! `PORTCULLIS_KEEP_CONTROL_PLANE_STATE=1`.
//!
//! The binary is `~/.cache/portcullis/bin/control-plane` or
//! `$PORTCULLIS_CONTROL_PLANE_BIN`; build it with `scripts/go-tools.sh control-plane`.

use std::ffi::OsStr;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// Environment variable naming the harness binary (overrides the default path).
pub const BIN_ENV: &str = "PORTCULLIS_CONTROL_PLANE_BIN";
/// Set to `1` to keep `target/control-plane-<pid>` (logs, audit log) after the run.
pub const KEEP_STATE_ENV: &str = "PORTCULLIS_KEEP_CONTROL_PLANE_STATE";

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running control plane. See the module docs.
#[derive(Debug)]
pub struct ControlPlane {
    apiserver_args: Vec<String>,
    state_dir: PathBuf,
    kubeconfig: PathBuf,
    audit_log: PathBuf,
    server: String,
    child: Mutex<Child>,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this test binary, started on first call (takes a few
    /// seconds). Panics with an explanation if it cannot start.
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| Self::start_or_panic(&[]))
    }

    /// Like [`ControlPlane::shared`], with extra kube-apiserver flags (e.g.
    /// `--admission-control-config-file=...`). Call it before anything else
    /// starts the control plane of the test binary; panics if that control
    /// plane was started with other flags.
    pub fn shared_with_apiserver_args(args: &[String]) -> &'static ControlPlane {
        let cp = SHARED.get_or_init(|| Self::start_or_panic(args));
        assert_eq!(
            cp.apiserver_args, args,
            "this test binary's control plane was started with other kube-apiserver flags"
        );
        cp
    }

    fn start_or_panic(apiserver_args: &[String]) -> ControlPlane {
        match Self::start(apiserver_args) {
            Ok(cp) => cp,
            Err(e) => panic!("cannot start the test control plane: {e:#}"),
        }
    }

    /// Path of the harness binary: `$PORTCULLIS_CONTROL_PLANE_BIN`, else
    /// `~/.cache/portcullis/bin/control-plane`.
    pub fn binary_path() -> PathBuf {
        if let Some(p) = std::env::var_os(BIN_ENV).filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache/portcullis/bin/control-plane")
    }

    fn start(apiserver_args: &[String]) -> Result<ControlPlane> {
        let bin = Self::binary_path();
        if !bin.is_file() {
            bail!(
                "control-plane binary not found at {}. Build it first with `scripts/go-tools.sh control-plane` \
                 (from the repository root; the first build takes several minutes), or point {BIN_ENV} at it",
                bin.display()
            );
        }
        let target = target_dir();
        std::fs::create_dir_all(&target).with_context(|| format!("create {}", target.display()))?;
        remove_stale_state_dirs(&target);
        let state_dir = target.join(format!("control-plane-{}", std::process::id()));
        if state_dir.exists() {
            std::fs::remove_dir_all(&state_dir)
                .with_context(|| format!("remove {}", state_dir.display()))?;
        }
        std::fs::create_dir_all(&state_dir)?;
        let audit_log = state_dir.join("audit.log");
        let ready = state_dir.join("ready");

        let mut cmd = Command::new(&bin);
        cmd.arg("--state-dir")
            .arg(&state_dir)
            .args(["--port", "0", "--exit-with-parent"])
            .arg("--audit-log")
            .arg(&audit_log)
            .args(
                apiserver_args
                    .iter()
                    .map(|a| format!("--apiserver-arg={a}")),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Only fatal start-up errors go here; the rest is in control-plane.log.
            .stderr(Stdio::inherit());
        if std::env::var(KEEP_STATE_ENV).as_deref() != Ok("1") {
            cmd.arg("--remove-state-on-exit");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;

        let started = Instant::now();
        loop {
            if let Ok(url) = std::fs::read_to_string(&ready) {
                let server = url.trim().to_string();
                if !server.is_empty() {
                    return Ok(ControlPlane {
                        apiserver_args: apiserver_args.to_vec(),
                        kubeconfig: state_dir.join("kubeconfig"),
                        state_dir,
                        audit_log,
                        server,
                        child: Mutex::new(child),
                    });
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "control plane exited during start-up ({status}); last log lines:\n{}",
                    log_tail(&state_dir.join("control-plane.log"), 30)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "control plane not ready after {START_TIMEOUT:?}; last log lines:\n{}",
                    log_tail(&state_dir.join("control-plane.log"), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Admin kubeconfig (user in `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// Metadata-level audit log (JSON lines, one event per request, ResponseComplete stage).
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    /// `target/control-plane-<pid>`: pki/, kubeconfig, control-plane.log,
    /// kube-controller-manager.log, etcd.log, audit.log.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// File mapping `NAMESPACE/NAME:PORT` of a Service to a loopback address; the
    /// apiserver resolves Service-referencing webhooks (and aggregated APIs) with it.
    pub fn service_routes_path(&self) -> PathBuf {
        self.state_dir.join("service-routes")
    }

    /// Routes calls the apiserver makes to Service `namespace/name:port` (webhook
    /// `clientConfig.service`) to `local`, a loopback address where the test serves
    /// it. TLS is still verified against `name.namespace.svc`. Takes effect at once.
    pub fn route_service(&self, namespace: &str, name: &str, port: u16, local: SocketAddr) {
        assert!(
            local.ip().is_loopback(),
            "service routes must point at loopback, got {local}"
        );
        static LOCK: Mutex<()> = Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.service_routes_path())
            .expect("open service-routes");
        writeln!(f, "{namespace}/{name}:{port} {local}").expect("write service-routes");
    }

    /// Process id of the harness.
    pub fn pid(&self) -> u32 {
        self.child.lock().map(|c| c.id()).unwrap_or(0)
    }

    /// Runs `kubectl --kubeconfig <admin> ARGS...`; never panics on a non-zero exit.
    pub fn kubectl<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.kubectl_client().run(args)
    }

    /// Runs kubectl with `stdin` as standard input (e.g. `apply -f -`).
    pub fn kubectl_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: &str) -> Output {
        self.kubectl_client().run_stdin(args, stdin)
    }

    /// Runs kubectl, panics with its output unless it succeeds, returns stdout.
    pub fn kubectl_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        self.kubectl_client().ok(args)
    }

    /// `kubectl apply -f -` of `yaml`; panics unless it succeeds, returns stdout.
    pub fn apply(&self, yaml: &str) -> String {
        let args = ["apply", "-f", "-"];
        let k = self.kubectl_client();
        let out = k.run_stdin(&args, yaml);
        crate::e2e::expect_success("apply -f -", &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The kubectl runner for this control plane, shared with the e2e assertions.
    pub fn kubectl_client(&self) -> crate::e2e::Kubectl {
        crate::e2e::Kubectl::new(&self.kubeconfig)
    }
}

/// A namespace with a unique name, deleted (without waiting) on drop.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
}

impl TestNamespace {
    /// Creates `<prefix>-<unique suffix>` in the shared control plane (starting it if needed).
    pub fn new(prefix: &str) -> TestNamespace {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut clean: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        clean.truncate(40);
        let clean = clean.trim_matches('-');
        let clean = if clean.is_empty() { "test" } else { clean };
        let name = format!("{clean}-{:x}{n:x}-{:x}", std::process::id(), nanos & 0xffff);
        ControlPlane::shared().kubectl_ok(&["create", "namespace", &name]);
        TestNamespace { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if let Some(cp) = SHARED.get() {
            let _ = cp.kubectl(&[
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ]);
        }
    }
}

/// `target/` of the workspace: `$CARGO_TARGET_DIR` (when absolute) or `<repo>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return dir;
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target")
}

/// Removes `control-plane-<pid>` dirs left by test binaries that are gone
/// (normally the harness removes its own dir; not after a SIGKILL).
fn remove_stale_state_dirs(target: &Path) {
    let Ok(entries) = std::fs::read_dir(target) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("control-plane-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
