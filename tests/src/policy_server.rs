//! A `policy-server` (crate `portcullis-host`) child process for end-to-end tests:
//! HTTPS with a freshly generated CA, the sample policies from `target/policies/`,
//! its log captured to a file, killed on drop.
//!
//! The binary is not built by `cargo test -p portcullis-tests` (cargo only builds
//! the binaries of the crate under test); it is looked up next to the test
//! executable (`target/<profile>/policy-server`, so `CARGO_TARGET_DIR` is
//! honoured) or taken from `$PORTCULLIS_POLICY_SERVER_BIN`. Build it with
//! `cargo build -p portcullis-host --bins`. [`PolicyServer::start_in_container`]
//! runs the policy-server of a container image instead (tests/tests/image.rs).
//!
//! Each server listens on `127.0.0.1` with port 0 for both listeners; the ports
//! actually bound are read from its "policy-server ready" log line, so parallel
//! tests never race for a port.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::control_plane::target_dir;

/// Environment variable naming the policy-server binary (overrides the lookup
/// next to the test executable).
pub const BIN_ENV: &str = "PORTCULLIS_POLICY_SERVER_BIN";
/// Environment variable naming the directory of the compiled sample policies
/// (default `<repo>/target/policies`, where `scripts/build-policies.sh` puts them).
pub const POLICIES_DIR_ENV: &str = "PORTCULLIS_TEST_POLICIES_DIR";

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Path of the `policy-server` binary: `$PORTCULLIS_POLICY_SERVER_BIN`, else
/// `policy-server` in the profile directory of the running test executable
/// (`target/<profile>/deps/<test>-<hash>` → `target/<profile>/policy-server`).
pub fn binary_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(BIN_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        if !path.is_file() {
            bail!(
                "{BIN_ENV} points at {}, which does not exist",
                path.display()
            );
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot locate the test executable")?;
    let mut candidates = Vec::new();
    // target/<profile>/deps/<test> → target/<profile>; a test run from elsewhere
    // (e.g. copied) is also tried one level up.
    for dir in exe.ancestors().skip(1).take(2) {
        candidates.push(dir.join("policy-server"));
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "policy-server binary not found (looked at {}): run `cargo build -p portcullis-host --bins` \
         first (with the same profile and CARGO_TARGET_DIR as the tests), or set {BIN_ENV}",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Directory of the compiled sample policies.
pub fn policies_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(POLICIES_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target/policies")
}

/// `file://` URI of the sample policy `name` (e.g. `pod-privileged-wapc`).
pub fn module_uri(name: &str) -> Result<String> {
    let path = policies_dir().join(format!("{name}.wasm"));
    if !path.is_file() {
        bail!(
            "{} is missing: run `scripts/build-policies.sh` first",
            path.display()
        );
    }
    let path = path
        .canonicalize()
        .with_context(|| format!("canonicalize {}", path.display()))?;
    Ok(format!("file://{}", path.display()))
}

/// One entry of the policies file (Kubewarden `policies.yml` format, written as JSON).
#[derive(Debug, Clone)]
pub struct Policy {
    id: String,
    module: String,
    settings: Value,
    monitor: bool,
    allowed_to_mutate: bool,
    execution_mode: Option<String>,
    /// A policy group instead of a module.
    group: Option<GroupSpec>,
}

/// A policy group's expression, message and members (name, sample module).
#[derive(Debug, Clone)]
struct GroupSpec {
    expression: String,
    message: String,
    members: Vec<(String, String)>,
}

impl Policy {
    /// Policy `id` running the sample module `module` (a name in `target/policies/`
    /// without `.wasm`), in protect mode, empty settings, not allowed to mutate.
    pub fn new(id: &str, module: &str) -> Policy {
        Policy {
            id: id.to_string(),
            module: module.to_string(),
            settings: json!({}),
            monitor: false,
            allowed_to_mutate: false,
            execution_mode: None,
            group: None,
        }
    }

    /// Policy group `id`: `expression` over `members` (name, sample module,
    /// empty settings each), denying with `message`.
    pub fn group(id: &str, expression: &str, message: &str, members: &[(&str, &str)]) -> Policy {
        Policy {
            group: Some(GroupSpec {
                expression: expression.to_string(),
                message: message.to_string(),
                members: members
                    .iter()
                    .map(|(name, module)| (name.to_string(), module.to_string()))
                    .collect(),
            }),
            ..Policy::new(id, "")
        }
    }

    /// Sets the policy's settings.
    pub fn settings(mut self, settings: Value) -> Policy {
        self.settings = settings;
        self
    }

    /// `policyMode: monitor`: never rejects, logs the would-be verdict.
    pub fn monitor(mut self) -> Policy {
        self.monitor = true;
        self
    }

    /// `allowedToMutate: true`.
    pub fn allowed_to_mutate(mut self) -> Policy {
        self.allowed_to_mutate = true;
        self
    }

    /// `executionMode: mode` (`opa`, `gatekeeper`, ...).
    pub fn execution_mode(mut self, mode: &str) -> Policy {
        self.execution_mode = Some(mode.to_string());
        self
    }

    /// The policy id (`/validate/<id>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The policies-file entry; `modules` is where the server sees
    /// [`policies_dir`] (`None`: at its own path).
    fn to_json(&self, modules: Option<&Path>) -> Result<Value> {
        let uri = |name: &str| -> Result<String> {
            Ok(match modules {
                Some(root) => format!("file://{}/{name}.wasm", root.display()),
                None => module_uri(name)?,
            })
        };
        if let Some(GroupSpec {
            expression,
            message,
            members,
        }) = &self.group
        {
            let mut policies = serde_json::Map::new();
            for (name, module) in members {
                policies.insert(
                    name.clone(),
                    json!({"module": uri(module)?, "settings": {}}),
                );
            }
            return Ok(json!({
                "expression": expression,
                "message": message,
                "policyMode": if self.monitor { "monitor" } else { "protect" },
                "policies": policies,
            }));
        }
        let module = uri(&self.module)?;
        let mut entry = json!({
            "module": module,
            "settings": self.settings,
            "policyMode": if self.monitor { "monitor" } else { "protect" },
            "allowedToMutate": self.allowed_to_mutate,
        });
        if let Some(mode) = &self.execution_mode {
            entry["executionMode"] = json!(mode);
        }
        Ok(entry)
    }
}

/// A test CA and a serving certificate signed by it (PEM).
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate: the webhooks' `caBundle`.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
}

impl Pki {
    /// A new CA and a serving certificate with `127.0.0.1`, `localhost` and `extra_sans`
    /// (e.g. `policy-server.NAMESPACE.svc` for `clientConfig.service`).
    pub fn generate(extra_sans: &[String]) -> Result<Pki> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().context("generate the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "portcullis e2e test CA");
        let ca = ca_params.self_signed(&ca_key).context("self-sign the CA")?;

        let mut sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        sans.extend(extra_sans.iter().cloned());
        let key = KeyPair::generate().context("generate the serving key")?;
        let mut params = CertificateParams::new(sans).context("serving certificate SANs")?;
        params
            .distinguished_name
            .push(DnType::CommonName, "policy-server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .context("sign the serving certificate")?;
        Ok(Pki {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// How a [`PolicyServer`] is started.
#[derive(Debug)]
enum Launch {
    /// The `policy-server` binary of the build tree.
    Binary(PathBuf),
    /// The entrypoint of a container image.
    Container {
        runtime: ContainerRuntime,
        image: String,
    },
}

/// Environment variable naming the container runtime's command, with any
/// global flags (e.g. `podman --runtime runc`); default: `docker` when a
/// Docker engine answers, else `podman`.
pub const CONTAINER_RUNTIME_ENV: &str = "PORTCULLIS_CONTAINER_RUNTIME";

/// Where a containerised server finds its policies file and certificates.
const CONTAINER_CONFIG_DIR: &str = "/config";
/// Where a containerised server finds the sample policies.
const CONTAINER_POLICIES_DIR: &str = "/policies";

/// A container runtime CLI with a Docker-compatible `run`/`rm`/`image
/// inspect` (docker or podman).
#[derive(Debug, Clone)]
pub struct ContainerRuntime {
    program: String,
    global_args: Vec<String>,
}

impl ContainerRuntime {
    /// `$PORTCULLIS_CONTAINER_RUNTIME`, else docker if its engine answers, else podman.
    pub fn detect() -> Result<ContainerRuntime> {
        if let Some(spec) = std::env::var(CONTAINER_RUNTIME_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
        {
            let mut words = spec.split_whitespace().map(str::to_string);
            let program = words.next().unwrap_or_default();
            return Ok(ContainerRuntime {
                program,
                global_args: words.collect(),
            });
        }
        for program in ["docker", "podman"] {
            let answers = Command::new(program)
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answers {
                return Ok(ContainerRuntime {
                    program: program.to_string(),
                    global_args: Vec::new(),
                });
            }
        }
        bail!(
            "no container runtime: neither `docker info` nor `podman info` succeeds \
             (set {CONTAINER_RUNTIME_ENV})"
        )
    }

    /// A command for the runtime, with its global flags.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.global_args);
        cmd
    }

    /// Removes container `name`, stopping it first (best effort: cleanup).
    pub fn remove(&self, name: &str) {
        let _ = self
            .command()
            .args(["rm", "--force", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running `policy-server` child process. Killed (SIGKILL) on drop; its
/// directory (policies file, certificates, log) is removed unless the thread
/// is panicking, in which case the path is printed so the log can be read.
#[derive(Debug)]
pub struct PolicyServer {
    child: Option<Child>,
    /// The container runtime and container name, when the server runs in a container.
    container: Option<(ContainerRuntime, String)>,
    dir: PathBuf,
    log_path: PathBuf,
    addr: SocketAddr,
    readiness_addr: SocketAddr,
    pki: Pki,
}

impl PolicyServer {
    /// Starts a server with `policies` over HTTPS, its certificate also valid
    /// for `extra_sans`, and waits until `/readiness` answers 200 with every
    /// policy loaded.
    pub fn start(policies: &[Policy], extra_sans: &[String]) -> Result<PolicyServer> {
        PolicyServer::start_with_args(policies, extra_sans, &[])
    }

    /// Like [`PolicyServer::start`], with extra command-line flags for the
    /// server (e.g. `["--max-body-bytes", "65536"]`).
    pub fn start_with_args(
        policies: &[Policy],
        extra_sans: &[String],
        args: &[&str],
    ) -> Result<PolicyServer> {
        let how = Launch::Binary(binary_path()?);
        PolicyServer::launch(policies, extra_sans, &how, args)
    }

    /// Like [`PolicyServer::start`], with the policy-server of the container
    /// image `image` (its entrypoint) run by `runtime` instead of the binary
    /// from the build tree. The container shares the host's network, so the
    /// ports and URLs are the same as the binary's; the policies file and the
    /// certificates are bind-mounted read-only at `/config`, the sample
    /// policies at `/policies`, and the server runs as the image's user.
    pub fn start_in_container(
        runtime: &ContainerRuntime,
        image: &str,
        policies: &[Policy],
        extra_sans: &[String],
    ) -> Result<PolicyServer> {
        PolicyServer::launch(
            policies,
            extra_sans,
            &Launch::Container {
                runtime: runtime.clone(),
                image: image.to_string(),
            },
            &[],
        )
    }

    fn launch(
        policies: &[Policy],
        extra_sans: &[String],
        how: &Launch,
        extra_args: &[&str],
    ) -> Result<PolicyServer> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let parent = target_dir().join("e2e");
        if n == 0 {
            remove_stale_dirs(&parent);
        }
        let dir = parent.join(format!("policy-server-{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;

        // Where the server sees `dir` and the sample policies: in a container,
        // at mount points of their own (the host paths may lie under
        // directories its non-root user cannot enter, such as /root).
        let (config_root, modules_root) = match how {
            Launch::Binary(_) => (dir.clone(), None),
            Launch::Container { .. } => (
                PathBuf::from(CONTAINER_CONFIG_DIR),
                Some(Path::new(CONTAINER_POLICIES_DIR)),
            ),
        };

        let mut file = serde_json::Map::new();
        for policy in policies {
            file.insert(policy.id.clone(), policy.to_json(modules_root)?);
        }
        std::fs::write(dir.join("policies.json"), serde_json::to_vec_pretty(&file)?)?;

        let pki = Pki::generate(extra_sans)?;
        std::fs::write(dir.join("tls.crt"), &pki.cert_pem)?;
        std::fs::write(dir.join("tls.key"), &pki.key_pem)?;
        let cert = config_root.join("tls.crt");
        let key = config_root.join("tls.key");

        let mut server_args: Vec<OsString> = vec![
            "--policies".into(),
            config_root.join("policies.json").into(),
        ];
        server_args.extend(
            [
                "--addr",
                "127.0.0.1",
                "--port",
                "0",
                "--readiness-probe-port",
                "0",
                "--cert-file",
            ]
            .map(OsString::from),
        );
        server_args.push(cert.into());
        server_args.push("--key-file".into());
        server_args.push(key.into());
        server_args.extend(["--log-fmt", "json", "--log-level", "info"].map(OsString::from));
        server_args.extend(extra_args.iter().map(OsString::from));

        let (mut cmd, container) = match how {
            Launch::Binary(bin) => {
                let mut cmd = Command::new(bin);
                cmd.args(&server_args)
                    .arg("--policies-download-dir")
                    .arg(dir.join("store"))
                    // Shared with the host tests: each module is compiled once per checkout.
                    .arg("--compiled-cache-dir")
                    .arg(target_dir().join("test-compiled-cache"));
                (cmd, None)
            }
            Launch::Container { runtime, image } => {
                let name = format!("portcullis-test-{}-{n}", std::process::id());
                let modules = policies_dir();
                let modules = modules
                    .canonicalize()
                    .with_context(|| format!("canonicalize {}", modules.display()))?;
                let mut cmd = runtime.command();
                cmd.args(["run", "--rm", "--network", "host", "--name", &name])
                    .args(["--label", "dev.portcullis.test=policy-server"])
                    .arg("-v")
                    .arg(format!("{}:{CONTAINER_CONFIG_DIR}:ro", dir.display()))
                    .arg("-v")
                    .arg(format!("{}:{CONTAINER_POLICIES_DIR}:ro", modules.display()))
                    .arg(image)
                    .args(&server_args)
                    // Writable for the image's non-root user: its own /tmp.
                    .args(["--policies-download-dir", "/tmp/policies"]);
                (cmd, Some((runtime.clone(), name)))
            }
        };

        let log_path = dir.join("policy-server.log");
        let log = File::create(&log_path)?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_spawning_thread(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
        let mut server = PolicyServer {
            child: Some(child),
            container,
            dir,
            log_path,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            readiness_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pki,
        };
        // On error `server` is dropped here, which kills the child.
        server.wait_ready(policies.len())?;
        Ok(server)
    }

    fn wait_ready(&mut self, expected: usize) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(fields) = self
                .log_events()
                .into_iter()
                .filter_map(|e| e.get("fields").cloned())
                .find(|f| f["message"] == "policy-server ready")
            {
                let parse = |key: &str| -> Result<SocketAddr> {
                    fields[key]
                        .as_str()
                        .and_then(|a| a.parse().ok())
                        .with_context(|| format!("no {key} in the ready line: {fields}"))
                };
                self.addr = parse("addr")?;
                self.readiness_addr = parse("readiness_addr")?;
                if fields["loaded"] != json!(expected) || fields["failed"] != json!(0) {
                    bail!(
                        "policy-server loaded {} of {expected} policies ({} failed):\n{}",
                        fields["loaded"],
                        fields["failed"],
                        self.log()
                    );
                }
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "policy-server exited during start-up ({status}):\n{}",
                    self.log()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "policy-server not ready after {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The ready line is logged once the listeners serve; confirm with the probe.
        let (status, body) = crate::http::get(self.readiness_addr, "/readiness")?;
        if status != 200 {
            bail!("GET /readiness answered {status}: {body}");
        }
        Ok(())
    }

    /// Address of the HTTPS webhook listener (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Address of the plain-HTTP probe listener.
    pub fn readiness_addr(&self) -> SocketAddr {
        self.readiness_addr
    }

    /// `https://127.0.0.1:PORT/validate/<policy_id>`, for `clientConfig.url`.
    pub fn validate_url(&self, policy_id: &str) -> String {
        format!("https://{}/validate/{policy_id}", self.addr)
    }

    /// The CA that signed the serving certificate (PEM), for `caBundle`.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// Path of the captured stdout + stderr (JSON lines).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The captured log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The log lines that are JSON objects.
    pub fn log_events(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// The last `n` lines of the captured log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `fields` of the "monitor mode: would-be verdict" log events of `policy_id`
    /// (`policy_id`, `uid`, `allowed`, `mutated`, `message`).
    ///
    /// The lines are selected by their text: the JSON formatter writes the event
    /// message and the event's own `message` field (the policy's would-be
    /// rejection message) as two `"message"` keys of `fields`, and a JSON parser
    /// keeps the last one, so `fields.message` is the policy's message.
    pub fn monitor_verdicts(&self, policy_id: &str) -> Vec<Value> {
        self.log()
            .lines()
            .filter(|l| l.contains("monitor mode: would-be verdict"))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| e.get("fields").cloned())
            .filter(|f| f["policy_id"] == policy_id)
            .collect()
    }

    /// Whether the child process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server (SIGKILL) and waits for it: its port refuses connections
    /// afterwards. Idempotent.
    pub fn stop(&mut self) {
        // Killing the runtime's client does not stop its container.
        if let Some((runtime, name)) = self.container.take() {
            runtime.remove(&name);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The container's name, when the server runs in a container.
    pub fn container_name(&self) -> Option<&str> {
        self.container.as_ref().map(|(_, name)| name.as_str())
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "policy-server files kept for inspection: {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes `policy-server-<pid>-<n>` dirs of test processes that are gone
/// (kept after a failure, or left by a killed run).
fn remove_stale_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("policy-server-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes the child receive SIGKILL when the thread that spawns it ends, so a
/// test that is aborted (or a test binary that is killed) leaves no server
/// behind. Each test runs on its own thread, which outlives its server.
fn die_with_spawning_thread(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec and only calls prctl(2),
    // which is async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
