//! The container image built from the `Dockerfile`: its configuration, its
//! three binaries, its policy-server as a real admission webhook of the local
//! kube-apiserver, and its controller reconciling a PolicyServer there and
//! serving its metrics and probes.
//!
//! Ignored by default (they need a built image and a container runtime); run
//! them with `just image-test`, which builds the image first, or:
//!
//! ```text
//! PORTCULLIS_IMAGE=portcullis:dev [PORTCULLIS_IMAGE_REVISION=$(git rev-parse HEAD)] \
//!     cargo test -p portcullis-tests --test image -- --ignored
//! ```
//!
//! The runtime is docker when its engine answers, else podman
//! (`PORTCULLIS_CONTAINER_RUNTIME` overrides). The webhook test also needs what
//! tests/admission_e2e.rs needs: the control-plane harness and the sample policies.

use std::process::Output;

use portcullis_tests::control_plane::{ControlPlane, TestNamespace};
use portcullis_tests::e2e::{
    Endpoint, Kubectl, PROPAGATION_TIMEOUT, assert_default_labels, assert_privileged_pod_denied,
    default_labels_settings, eventually, register_privileged_and_default_labels,
    wait_for_default_service_account,
};
use portcullis_tests::http;
use portcullis_tests::policy_server::{ContainerRuntime, Policy, PolicyServer};
use serde_json::{Value, json};

/// The image under test.
const IMAGE_ENV: &str = "PORTCULLIS_IMAGE";
/// The git commit the image must say it was built from (optional).
const REVISION_ENV: &str = "PORTCULLIS_IMAGE_REVISION";

/// distroless `nonroot`.
const NONROOT: &str = "65532:65532";

fn image() -> String {
    std::env::var(IMAGE_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            panic!("set {IMAGE_ENV} to the image to test (e.g. portcullis:dev; `just image-test`)")
        })
}

fn runtime() -> ContainerRuntime {
    ContainerRuntime::detect().unwrap_or_else(|e| panic!("{e:#}"))
}

fn run(runtime: &ContainerRuntime, args: &[&str]) -> Output {
    runtime
        .command()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the container runtime: {e}"))
}

fn stdout_ok(runtime: &ContainerRuntime, args: &[&str]) -> String {
    let out = run(runtime, args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image's `Config` (User, Entrypoint, Labels, ExposedPorts), as both
/// runtimes report it.
fn image_config(runtime: &ContainerRuntime, image: &str) -> Value {
    let text = stdout_ok(
        runtime,
        &["image", "inspect", "--format", "{{json .Config}}", image],
    );
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("image config is not JSON ({e}): {text}"))
}

#[test]
#[ignore = "needs a built image (PORTCULLIS_IMAGE) and docker or podman; `just image-test`"]
fn image_is_non_root_labelled_and_runs_every_binary() {
    let (runtime, image) = (runtime(), image());
    let config = image_config(&runtime, &image);

    assert_eq!(config["User"], NONROOT, "image user: {config}");
    assert_eq!(
        config["Entrypoint"],
        json!(["/usr/local/bin/policy-server"]),
        "the default entrypoint is the policy-server (a PolicyServer's Deployment sets no command)"
    );
    let labels = &config["Labels"];
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(labels["org.opencontainers.image.title"], "portcullis");
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .is_some_and(|s| s.starts_with("https://")),
        "source label: {labels}"
    );
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or_default();
    match std::env::var(REVISION_ENV).ok().filter(|r| !r.is_empty()) {
        Some(want) => assert_eq!(revision, want, "revision label"),
        None => assert!(
            revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()),
            "revision label is not a commit id: {revision:?}"
        ),
    }
    for port in ["3000/tcp", "8081/tcp", "8080/tcp"] {
        assert!(
            config["ExposedPorts"].get(port).is_some(),
            "port {port} not exposed: {config}"
        );
    }

    // Each binary starts in the runtime image (its shared libraries are there)
    // and is this version.
    for binary in [
        "policy-server",
        "portcullis-controller",
        "audit-scanner",
        "portcullis",
    ] {
        let entrypoint = format!("/usr/local/bin/{binary}");
        let out = stdout_ok(
            &runtime,
            &[
                "run",
                "--rm",
                "--entrypoint",
                &entrypoint,
                &image,
                "--version",
            ],
        );
        assert_eq!(out.trim(), format!("{binary} {version}"));
    }

    // The CLI works offline on a module: inspect the sample policy mounted in.
    let modules = portcullis_tests::policy_server::policies_dir();
    let module = modules.join("pod-privileged-wapc.wasm");
    assert!(
        module.is_file(),
        "{} is missing: run scripts/build-policies.sh",
        module.display()
    );
    let mount = format!("{}:/policies:ro", modules.display());
    let out = stdout_ok(
        &runtime,
        &[
            "run",
            "--rm",
            "-v",
            &mount,
            "--entrypoint",
            "/usr/local/bin/portcullis",
            &image,
            "inspect",
            "/policies/pod-privileged-wapc.wasm",
        ],
    );
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`portcullis inspect` printed no JSON ({e}):\n{out}"));
    assert_eq!(report["abi"], "wapc", "`portcullis inspect`: {report}");
    assert_eq!(
        report["metadata"]["annotations"]["io.kubewarden.policy.title"], "pod-privileged-wapc",
        "`portcullis inspect`: {report}"
    );

    // Nothing but the binaries: no shell to exec into.
    let out = run(
        &runtime,
        &[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            "true",
        ],
    );
    assert!(
        !out.status.success(),
        "the runtime image has a shell: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "needs a built image (PORTCULLIS_IMAGE), docker or podman, and the control-plane harness; `just image-test`"]
fn image_policy_server_denies_privileged_pods_and_mutates_as_a_webhook() {
    let (runtime, image) = (runtime(), image());
    let ns = TestNamespace::new("image");
    let k = Kubectl::for_control_plane(ControlPlane::shared());
    wait_for_default_service_account(&k, ns.name());

    let labels: &[(&str, &str)] = &[("portcullis.dev/managed", "true"), ("team", "platform")];
    let server = PolicyServer::start_in_container(
        &runtime,
        &image,
        &[
            Policy::new("privileged", "pod-privileged-wapc"),
            Policy::new("default-labels", "default-labels-component")
                .settings(default_labels_settings(labels))
                .allowed_to_mutate(),
        ],
        &[],
    )
    .unwrap_or_else(|e| panic!("cannot start the policy-server container: {e:#}"));

    // The server process runs as the image's non-root user.
    let name = server.container_name().unwrap_or_default();
    let pid = stdout_ok(&runtime, &["inspect", "--format", "{{.State.Pid}}", name]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .unwrap_or_else(|e| panic!("read the status of container process {}: {e}", pid.trim()));
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap_or_default();
    assert!(
        uid.split_whitespace().all(|id| id == "65532"),
        "policy-server runs as uid {uid:?}, not 65532"
    );

    let (validating, _mutating) =
        register_privileged_and_default_labels(&k, ns.name(), server.ca_pem(), |policy| {
            Endpoint::Url(server.validate_url(policy))
        });

    assert_privileged_pod_denied(&k, ns.name(), "privileged", validating.name());
    assert_default_labels(&k, ns.name(), "labelled", labels);
}

/// A detached container, removed (with `rm --force`) on drop.
struct Container {
    runtime: ContainerRuntime,
    name: String,
}

impl Container {
    fn logs(&self) -> String {
        let out = run(&self.runtime, &["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.runtime.remove(&self.name);
    }
}

#[test]
#[ignore = "needs a built image (PORTCULLIS_IMAGE), docker or podman, and the control-plane harness; `just image-test`"]
fn image_controller_installs_its_crds_and_reconciles_a_policy_server() {
    let (runtime, image) = (runtime(), image());
    let cp = ControlPlane::shared();
    let k = Kubectl::for_control_plane(cp);
    let ns = TestNamespace::new("image-ctrl");

    // The CRDs as the image's controller prints them, installed for real.
    let crds = stdout_ok(
        &runtime,
        &[
            "run",
            "--rm",
            "--entrypoint",
            "/usr/local/bin/portcullis-controller",
            &image,
            "crds",
        ],
    );
    let out = k.run_stdin(&["apply", "--server-side", "-f", "-"], &crds);
    assert!(
        out.status.success(),
        "apply the image's CRDs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/policyservers.policies.portcullis.dev",
    ]);

    // The controller, as its Deployment runs it: non-root, its own namespace,
    // here with a selector so that it only sees this test's PolicyServer. The
    // admin kubeconfig (certificates inline) is copied where uid 65532 can read it.
    let dir = portcullis_tests::control_plane::target_dir()
        .join("e2e")
        .join(format!("image-controller-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(cp.kubeconfig_path(), &kubeconfig).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let label = ns.name().to_string();
    let selector = format!("portcullis-test={label}");
    let controller = Container {
        runtime: runtime.clone(),
        name: format!("portcullis-test-controller-{}", std::process::id()),
    };
    let mount = format!("{}:/kube/config:ro", kubeconfig.display());
    stdout_ok(
        &runtime,
        &[
            "run",
            "--detach",
            "--name",
            &controller.name,
            "--network",
            "host",
            "-v",
            &mount,
            "-e",
            "KUBECONFIG=/kube/config",
            "--entrypoint",
            "/usr/local/bin/portcullis-controller",
            &image,
            // `run` and its flags, as the chart's Deployment passes them.
            "run",
            "--namespace",
            ns.name(),
            "--selector",
            &selector,
            "--log-fmt",
            "json",
            // Host network: any free port rather than the default 8080.
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );

    let ps = format!("{}-ps", ns.name());
    let deployment = format!("policy-server-{ps}");
    k.apply(&json!({
        "apiVersion": "policies.portcullis.dev/v1",
        "kind": "PolicyServer",
        "metadata": {"name": ps, "labels": {"portcullis-test": label}},
        "spec": {"image": image, "replicas": 1},
    }));

    let checked = std::panic::catch_unwind(|| {
        eventually(
            &format!("the controller in the image creates Deployment {deployment}"),
            PROPAGATION_TIMEOUT,
            || {
                let d = k
                    .get_json(Some(ns.name()), "deployment", &deployment)
                    .ok_or_else(|| "no Deployment yet".to_string())?;
                let container = &d["spec"]["template"]["spec"]["containers"][0];
                if container["image"] != image.as_str() {
                    return Err(format!("container image {}", container["image"]));
                }
                Ok(())
            },
        );
        for (kind, name) in [
            ("secret", "portcullis-ca"),
            ("service", deployment.as_str()),
            ("configmap", deployment.as_str()),
        ] {
            eventually(
                &format!("{kind} {name} in {}", ns.name()),
                PROPAGATION_TIMEOUT,
                || {
                    k.get_json(Some(ns.name()), kind, name)
                        .map(|_| ())
                        .ok_or_else(|| "not yet".to_string())
                },
            );
        }
        let ca = k
            .get_json(Some(ns.name()), "secret", "portcullis-ca")
            .unwrap_or_default();
        for key in ["ca.crt", "ca.key"] {
            assert!(
                ca["data"][key].as_str().is_some_and(|v| !v.is_empty()),
                "Secret portcullis-ca has no {key}"
            );
        }

        // Its metrics and probes, on the port it logged.
        let addr: std::net::SocketAddr = controller
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["fields"]["message"] == "serving metrics and health")
            .and_then(|e| e["fields"]["addr"].as_str().and_then(|a| a.parse().ok()))
            .unwrap_or_else(|| panic!("no 'serving metrics and health' line with an addr"));
        for path in ["/healthz", "/readyz"] {
            let (status, body) =
                http::get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
            assert_eq!(status, 200, "GET {path}: {body}");
        }
        let (status, metrics) =
            http::get(addr, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e:#}"));
        assert_eq!(status, 200);
        let reconciled = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"portcullis_controller_reconciliations_total{kind="PolicyServer",result="success"} "#)
            })
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            reconciled >= 1,
            "no successful PolicyServer reconcile in /metrics:\n{metrics}"
        );
    });

    // Deleting waits for the controller's finalizer, so the controller must
    // still run; then the container goes with `controller`.
    let deleted = k.run(&[
        "delete",
        "policyserver",
        &ps,
        "--wait=true",
        "--timeout=60s",
    ]);
    if let Err(panic) = checked {
        eprintln!("controller log:\n{}", controller.logs());
        std::panic::resume_unwind(panic);
    }
    assert!(
        deleted.status.success(),
        "delete PolicyServer {ps} (the controller removes its finalizer): {}\ncontroller log:\n{}",
        String::from_utf8_lossy(&deleted.stderr),
        controller.logs()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
