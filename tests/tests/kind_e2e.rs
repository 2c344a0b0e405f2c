//! End-to-end tests against a real kind cluster running the Helm charts of this
//! checkout: the controller turns ClusterAdmissionPolicies and AdmissionPolicies
//! (`policies.portcullis.dev/v1`) into webhooks served by a policy-server
//! Deployment, and kubectl sees the outcome. The assertions are the same
//! functions as the local control-plane e2e tests (`portcullis_tests::e2e`),
//! run through `Kubectl::new(kubeconfig).with_context(ctx)`.
//!
//! **Every cluster test is `#[ignore]`d**: they need a kind cluster, so the
//! workspace's `cargo test` only compiles them (the one test that runs
//! checks a log helper). `./dev test` runs them afterwards, on a cluster it
//! creates (`scripts/kind.sh test`); by hand (see docs/kind.md):
//!
//! ```text
//! just kind-up kind-load kind-install kind-e2e kind-down
//! ```
//!
//! `kind-e2e` sets the environment and runs every test but
//! `uninstall_leaves_no_webhooks` in parallel, then that one alone (it
//! uninstalls the charts; `kind-e2e-kustomize` runs two policy tests and the
//! uninstall test against the kustomize install,
//! `PORTCULLIS_KIND_INSTALL=kustomize`):
//!
//! - `PORTCULLIS_KIND_CONTEXT`: kubeconfig context (default `kind-portcullis`);
//!   the kubeconfig is the first entry of `$KUBECONFIG` or `~/.kube/config`.
//! - `PORTCULLIS_KIND_NAMESPACE`: namespace of the controller and its Helm
//!   releases (default `portcullis`).
//! - `PORTCULLIS_KIND_REGISTRY` (required): `host:port` of the OCI registry as
//!   seen from the cluster's pods, holding `policies/<name>:v1` for
//!   pod-privileged-wapc, pod-privileged-component and default-labels-wapc
//!   (`just kind-load` pushes them).
//! - `PORTCULLIS_KIND_IMAGE`: the policy-server image (default `portcullis:dev`).
//! - `PORTCULLIS_KIND_UPGRADE_IMAGE`: the image the upgrade test rolls a
//!   policy-server to (default `portcullis:dev-upgrade`).
//! - `HELM`: the helm binary (default `~/.cache/portcullis/bin/helm`, else `helm`).
//!
//! The tests share one PolicyServer, `kind-e2e` (created on first use with the
//! registry as an insecure source); every policy selects only its test's
//! namespace, so the tests do not see each other's policies.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_tests::e2e::{
    Kubectl, PRIVILEGED_DENIAL, assert_default_labels, assert_pod_admitted,
    assert_privileged_pod_admitted, assert_privileged_pod_denied, default_labels_settings,
    dry_run_pod, eventually, privileged_pod, unprivileged_pod, wait_for_default_service_account,
    wait_until_admitted,
};
use serde_json::{Value, json};

/// The PolicyServer every test's policies run on.
const POLICY_SERVER: &str = "kind-e2e";
/// The PolicyServer the upgrade test rolls, apart from the others' so that
/// its rollout does not slow them down.
const UPGRADE_POLICY_SERVER: &str = "kind-e2e-upgrade";
/// Label naming the PolicyServer an object belongs to (controller/src/names.rs).
const LABEL_POLICY_SERVER: &str = "policies.portcullis.dev/policy-server";
/// Label on every webhook configuration the controller writes (controller/src/names.rs).
const PART_OF_SELECTOR: &str = "app.kubernetes.io/part-of=portcullis";
/// How long a policy may take to become active: the first one waits for the
/// policy-server Deployment, module downloads and compilation.
const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a policy change may take to reach the policy-server: the kubelet
/// refreshes mounted ConfigMaps only every minute or so.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(240);

// ------------------------------------------------------------ environment

fn context() -> String {
    std::env::var("PORTCULLIS_KIND_CONTEXT").unwrap_or_else(|_| "kind-portcullis".to_string())
}

fn controller_namespace() -> String {
    std::env::var("PORTCULLIS_KIND_NAMESPACE").unwrap_or_else(|_| "portcullis".to_string())
}

fn kubeconfig() -> PathBuf {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .as_deref()
        .and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    let home = std::env::var_os("HOME").expect("HOME or KUBECONFIG is set");
    PathBuf::from(home).join(".kube/config")
}

fn kubectl() -> Kubectl {
    Kubectl::new(kubeconfig()).with_context(context())
}

fn registry() -> String {
    std::env::var("PORTCULLIS_KIND_REGISTRY").unwrap_or_else(|_| {
        panic!(
            "PORTCULLIS_KIND_REGISTRY is not set: the in-cluster host:port of the registry \
             holding the test policies (run `just kind-e2e`, see docs/kind.md)"
        )
    })
}

fn image() -> String {
    std::env::var("PORTCULLIS_KIND_IMAGE").unwrap_or_else(|_| "portcullis:dev".to_string())
}

/// The image a policy-server is upgraded to (`just kind-load` loads
/// `portcullis:dev` under this second tag too).
fn upgrade_image() -> String {
    std::env::var("PORTCULLIS_KIND_UPGRADE_IMAGE")
        .unwrap_or_else(|_| "portcullis:dev-upgrade".to_string())
}

fn helm() -> std::process::Command {
    let program = std::env::var_os("HELM")
        .map(PathBuf::from)
        .or_else(|| {
            let home = PathBuf::from(std::env::var_os("HOME")?);
            let cached = home.join(".cache/portcullis/bin/helm");
            cached.exists().then_some(cached)
        })
        .unwrap_or_else(|| PathBuf::from("helm"));
    let mut cmd = std::process::Command::new(program);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .arg("--kube-context")
        .arg(context());
    cmd
}

/// `registry://<registry>/policies/<name>:v1`, as pushed by `just kind-load`.
fn module(name: &str) -> String {
    format!("registry://{}/policies/{name}:v1", registry())
}

// ------------------------------------------------------------ fixtures

/// A namespace with a unique name; deleted (without waiting) on drop.
struct Namespace {
    k: Kubectl,
    name: String,
}

impl Namespace {
    fn new(k: &Kubectl, prefix: &str) -> Namespace {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "kind-{prefix}-{:x}{n:x}-{:x}",
            std::process::id(),
            nanos & 0xffff
        );
        k.ok(&["create", "namespace", &name]);
        wait_for_default_service_account(k, &name);
        Namespace { k: k.clone(), name }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.k.run(&[
            "delete",
            "namespace",
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

/// Creates (once per test process) the PolicyServer the tests use and waits
/// for its Deployment. Re-applying the same spec changes nothing, so a
/// running policy-server is not restarted.
fn ensure_policy_server(k: &Kubectl) {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        k.apply(&json!({
            "apiVersion": "policies.portcullis.dev/v1",
            "kind": "PolicyServer",
            "metadata": { "name": POLICY_SERVER },
            "spec": {
                "image": image(),
                "replicas": 1,
                "insecureSources": [registry()],
                // JSON logs (no ANSI colours) at info, for the monitor-mode check.
                "env": [
                    { "name": "PORTCULLIS_LOG_LEVEL", "value": "info" },
                    { "name": "PORTCULLIS_LOG_FMT", "value": "json" },
                ],
            },
        }));
        let deployment = format!("policy-server-{POLICY_SERVER}");
        let namespace = controller_namespace();
        eventually(
            &format!("deployment {namespace}/{deployment}"),
            ACTIVATION_TIMEOUT,
            || match k.get_json(Some(&namespace), "deployment", &deployment) {
                Some(_) => Ok(()),
                None => Err("not created yet".to_string()),
            },
        );
        k.ok(&[
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "-n",
            &namespace,
            "--timeout=300s",
        ]);
    });
}

/// Kind of policy resource.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PolicyKind {
    Cluster,
    Namespaced,
}

/// A policy applied by a test; deleted (without waiting) on drop.
struct PolicyGuard {
    k: Kubectl,
    kind: PolicyKind,
    name: String,
    namespace: String,
}

/// A policy on the test PolicyServer for Pod CREATE/UPDATE. A
/// ClusterAdmissionPolicy selects only `namespace`; an AdmissionPolicy lives in it.
struct PolicySpec<'a> {
    policy_server: &'a str,
    kind: PolicyKind,
    name: &'a str,
    namespace: &'a str,
    module: String,
    mode: &'a str,
    mutating: bool,
    settings: Value,
}

impl<'a> PolicySpec<'a> {
    /// A protect-mode ClusterAdmissionPolicy with pod-privileged (waPC) on
    /// `policy_server`, selecting only `namespace`.
    fn privileged(policy_server: &'a str, name: &'a str, namespace: &'a str) -> PolicySpec<'a> {
        PolicySpec {
            policy_server,
            kind: PolicyKind::Cluster,
            name,
            namespace,
            module: module("pod-privileged-wapc"),
            mode: "protect",
            mutating: false,
            settings: json!({}),
        }
    }

    fn manifest(&self) -> Value {
        let mut spec = json!({
            "policyServer": self.policy_server,
            "module": self.module,
            "mode": self.mode,
            "mutating": self.mutating,
            "settings": self.settings,
            "failurePolicy": "Fail",
            "backgroundAudit": false,
            "rules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "operations": ["CREATE", "UPDATE"],
            }],
        });
        let mut metadata = json!({ "name": self.name });
        let kind = match self.kind {
            PolicyKind::Cluster => {
                spec["namespaceSelector"] = json!({
                    "matchLabels": { "kubernetes.io/metadata.name": self.namespace }
                });
                "ClusterAdmissionPolicy"
            }
            PolicyKind::Namespaced => {
                metadata["namespace"] = json!(self.namespace);
                "AdmissionPolicy"
            }
        };
        json!({
            "apiVersion": "policies.portcullis.dev/v1",
            "kind": kind,
            "metadata": metadata,
            "spec": spec,
        })
    }

    /// Applies the policy (create or update).
    fn apply(&self, k: &Kubectl) -> PolicyGuard {
        k.apply(&self.manifest());
        PolicyGuard {
            k: k.clone(),
            kind: self.kind,
            name: self.name.to_string(),
            namespace: self.namespace.to_string(),
        }
    }
}

impl PolicyGuard {
    fn resource(&self) -> &'static str {
        match self.kind {
            PolicyKind::Cluster => "clusteradmissionpolicies.policies.portcullis.dev",
            PolicyKind::Namespaced => "admissionpolicies.policies.portcullis.dev",
        }
    }

    fn namespace_arg(&self) -> Option<&str> {
        (self.kind == PolicyKind::Namespaced).then_some(self.namespace.as_str())
    }

    /// The policy id the controller serves it under (controller/src/names.rs).
    fn id(&self) -> String {
        match self.kind {
            PolicyKind::Cluster => format!("clusterwide-{}", self.name),
            PolicyKind::Namespaced => format!("namespaced-{}.{}", self.namespace, self.name),
        }
    }

    /// The name of the webhook inside its configuration (controller/src/resources.rs).
    fn webhook(&self) -> String {
        format!("{}.policies.portcullis.dev", self.id())
    }

    /// Waits until `status.policyStatus` is `active` (the webhook is
    /// registered) and `status.mode` is `mode`; returns the object.
    fn wait_active(&self, mode: &str) -> Value {
        eventually(
            &format!(
                "{} {} to be active in {mode} mode",
                self.resource(),
                self.name
            ),
            ACTIVATION_TIMEOUT,
            || {
                let object = self
                    .k
                    .get_json(self.namespace_arg(), self.resource(), &self.name)
                    .ok_or_else(|| "not found".to_string())?;
                let status = &object["status"];
                if status["policyStatus"] == "active" && status["mode"] == mode {
                    Ok(object)
                } else {
                    Err(format!("status {status}"))
                }
            },
        )
    }
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        let mut args = vec![
            "delete",
            self.resource(),
            self.name.as_str(),
            "--ignore-not-found",
            "--wait=false",
        ];
        if let Some(ns) = self.namespace_arg() {
            args.extend(["-n", ns]);
        }
        let _ = self.k.run(&args);
    }
}

/// `(uid, restartCount)` of every container of every policy-server pod of
/// PolicyServer `server`, sorted.
fn policy_server_pods(k: &Kubectl, server: &str) -> Vec<(String, u64)> {
    let text = k.ok(&[
        "get",
        "pods",
        "-n",
        &controller_namespace(),
        "-l",
        &format!("{LABEL_POLICY_SERVER}={server}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&text).expect("kubectl printed JSON");
    let mut pods: Vec<(String, u64)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pod| {
            let uid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let restarts = pod["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["restartCount"].as_u64().unwrap_or(0))
                .sum();
            (uid, restarts)
        })
        .collect();
    pods.sort();
    pods
}

/// Everything the test PolicyServer's pods logged, without ANSI colour codes.
fn policy_server_logs(k: &Kubectl) -> String {
    let out = k.run(&[
        "logs",
        "-n",
        &controller_namespace(),
        "-l",
        &format!("{LABEL_POLICY_SERVER}={POLICY_SERVER}"),
        "--tail=-1",
        "--max-log-requests=10",
    ]);
    strip_ansi(&String::from_utf8_lossy(&out.stdout))
}

/// Removes `ESC [ ... m` colour sequences (text-format logs have them).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The webhook configurations the controller manages, as `kind/name` lines.
fn portcullis_webhook_configurations(k: &Kubectl) -> Vec<String> {
    k.ok(&[
        "get",
        "validatingwebhookconfigurations,mutatingwebhookconfigurations",
        "-l",
        PART_OF_SELECTOR,
        "-o",
        "name",
    ])
    .lines()
    .map(str::trim)
    .filter(|l| !l.is_empty())
    .map(str::to_string)
    .collect()
}

fn setup(prefix: &str) -> (Kubectl, Namespace) {
    let k = kubectl();
    ensure_policy_server(&k);
    let ns = Namespace::new(&k, prefix);
    (k, ns)
}

/// What `helm uninstall` must remove: every namespaced kind the charts and the
/// controller create, labelled `app.kubernetes.io/part-of=portcullis`.
const NAMESPACED_KINDS: &str = "deployments,replicasets,pods,services,endpointslices,configmaps,secrets,\
serviceaccounts,roles,rolebindings,poddisruptionbudgets,jobs";
/// The same for cluster-scoped kinds.
const CLUSTER_KINDS: &str = "clusterroles,clusterrolebindings,\
validatingwebhookconfigurations,mutatingwebhookconfigurations";

/// The objects of `kinds` labelled part-of=portcullis, as `kind/name` lines
/// (namespaced ones prefixed with their namespace).
fn portcullis_objects(k: &Kubectl, kinds: &str, all_namespaces: bool) -> Vec<String> {
    let mut args = vec!["get", kinds, "-l", PART_OF_SELECTOR, "-o"];
    let template =
        "jsonpath={range .items[*]}{.metadata.namespace}/{.kind}/{.metadata.name}{\"\\n\"}{end}";
    args.push(template);
    if all_namespaces {
        args.push("--all-namespaces");
    }
    k.ok(&args)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The CustomResourceDefinitions of the `policies.portcullis.dev` group.
fn portcullis_crds(k: &Kubectl) -> Vec<String> {
    k.ok(&["get", "customresourcedefinitions", "-o", "name"])
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(".policies.portcullis.dev"))
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------------ tests

/// What `just kind-install` installed runs in the real cluster: the
/// controller Deployment of the chart is available, and the `default`
/// PolicyServer's pods (portcullis-defaults chart) run the Portcullis image
/// and are Ready, their probes passed by the kubelet.
#[test]
#[ignore = "needs Docker and a kind cluster: just kind-up kind-load kind-install kind-e2e"]
fn charts_run_a_ready_controller_and_default_policy_server() {
    let k = kubectl();
    let namespace = controller_namespace();
    for deployment in ["portcullis-controller", "policy-server-default"] {
        eventually(
            &format!("deployment {namespace}/{deployment}"),
            ACTIVATION_TIMEOUT,
            || match k.get_json(Some(&namespace), "deployment", deployment) {
                Some(_) => Ok(()),
                None => Err("not created yet".to_string()),
            },
        );
        k.ok(&[
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "-n",
            &namespace,
            "--timeout=300s",
        ]);
    }
    let controller = k
        .get_json(Some(&namespace), "deployment", "portcullis-controller")
        .expect("controller deployment");
    assert!(
        controller["status"]["availableReplicas"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "controller available: {}",
        controller["status"]
    );

    let text = k.ok(&[
        "get",
        "pods",
        "-n",
        &namespace,
        "-l",
        &format!("{LABEL_POLICY_SERVER}=default"),
        "-o",
        "json",
    ]);
    let pods: Value = serde_json::from_str(&text).expect("kubectl printed JSON");
    let pods = pods["items"].as_array().cloned().unwrap_or_default();
    assert!(!pods.is_empty(), "the default PolicyServer has pods");
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["image"], json!(image()), "{name} runs the image");
        assert!(
            container["readinessProbe"].is_object() && container["livenessProbe"].is_object(),
            "{name} has readiness and liveness probes: {container}"
        );
        assert_eq!(pod["status"]["phase"], "Running", "{name} is running");
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{name} is Ready: {}", pod["status"]);
        let status = &pod["status"]["containerStatuses"][0];
        assert_eq!(status["ready"], true, "{name}'s container is ready");
        assert!(
            status["imageID"].as_str().is_some_and(|id| !id.is_empty()),
            "{name}'s container runs an image the kubelet resolved: {status}"
        );
    }
}

#[test]
#[ignore = "needs Docker and a kind cluster: just kind-up kind-load kind-install kind-e2e"]
fn cluster_policy_denies_privileged_pods() {
    let (k, ns) = setup("priv");
    let policy =
        PolicySpec::privileged(POLICY_SERVER, &format!("priv-{}", ns.name()), ns.name()).apply(&k);
    policy.wait_active("protect");

    assert_privileged_pod_denied(&k, ns.name(), "privileged", &policy.webhook());
    assert_pod_admitted(&k, &unprivileged_pod("unprivileged", ns.name()));
}

/// The audit scanner's CronJob, as the chart (or the kustomize base)
/// installs it: a Job started from it reports the Pods that existed before
/// a policy, failing the privileged one and passing the other.
#[test]
#[ignore = "needs Docker and a kind cluster: just kind-up kind-load kind-install kind-e2e"]
fn audit_scanner_job_reports_existing_pods() {
    let (k, ns) = setup("audit");
    // Created before the policy exists, so admission lets both in.
    k.apply(&privileged_pod("privileged", ns.name()));
    k.apply(&unprivileged_pod("unprivileged", ns.name()));
    // The other tests' policies opt out of audits; this one is audited.
    let name = format!("audit-{}", ns.name());
    let spec = PolicySpec::privileged(POLICY_SERVER, &name, ns.name());
    let mut manifest = spec.manifest();
    manifest["spec"]["backgroundAudit"] = json!(true);
    k.apply(&manifest);
    let policy = PolicyGuard {
        k: k.clone(),
        kind: PolicyKind::Cluster,
        name: name.clone(),
        namespace: ns.name().to_string(),
    };
    policy.wait_active("protect");

    let namespace = controller_namespace();
    let cronjob = k
        .ok(&["get", "cronjobs", "-n", &namespace, "-o", "name"])
        .lines()
        .map(str::trim)
        .find(|name| name.ends_with("audit-scanner"))
        .map(str::to_string)
        .expect("the audit scanner's CronJob");
    let id = policy.id();
    let result_of = |pod: &str| -> Option<String> {
        let reports: Value = serde_json::from_str(&k.ok(&[
            "get",
            "reports.openreports.io",
            "-n",
            ns.name(),
            "-o",
            "json",
        ]))
        .ok()?;
        reports["items"].as_array()?.iter().find_map(|report| {
            (report["scope"]["name"] == pod).then(|| {
                report["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["policy"] == id.as_str())
                    .and_then(|r| r["result"].as_str())
                    .map(str::to_string)
            })?
        })
    };
    // The suite's other tests share the PolicyServer and roll it out while
    // this one runs; a policy is `pending` until every replica serves the
    // new configuration, and the scanner rightly skips it then. So a run
    // that found it pending is repeated, as the next CronJob run would.
    let mut attempt = 0;
    eventually("the audit Job's reports", Duration::from_secs(600), || {
        attempt += 1;
        policy.wait_active("protect");
        let job = format!("audit-{}-{attempt}", ns.name());
        k.ok(&["create", "job", &job, "--from", &cronjob, "-n", &namespace]);
        let done = k.run(&[
            "wait",
            "--for=condition=complete",
            &format!("job/{job}"),
            "-n",
            &namespace,
            "--timeout=300s",
        ]);
        let logs = k.run(&["logs", &format!("job/{job}"), "-n", &namespace]);
        let _ = k.run(&["delete", "job", &job, "-n", &namespace, "--wait=false"]);
        let logs = String::from_utf8_lossy(&logs.stdout).to_string();
        if !done.status.success() {
            return Err(format!(
                "the audit Job did not complete: {}{logs}",
                String::from_utf8_lossy(&done.stderr)
            ));
        }
        let results = (result_of("privileged"), result_of("unprivileged"));
        if results == (Some("fail".to_string()), Some("pass".to_string())) {
            Ok(())
        } else {
            Err(format!(
                "expected (fail, pass) for {id}, got {results:?}; Job log:\n{logs}"
            ))
        }
    });
}

#[test]
#[ignore = "needs Docker and a kind cluster: just kind-up kind-load kind-install kind-e2e"]
fn mutating_cluster_policy_adds_default_labels() {
    let (k, ns) = setup("labels");
    let labels = [("portcullis.dev/managed", "true"), ("team", "platform")];
    let policy = PolicySpec {
        policy_server: POLICY_SERVER,
        kind: PolicyKind::Cluster,
        name: &format!("labels-{}", ns.name()),
        namespace: ns.name(),
        module: module("default-labels-wapc"),
        mode: "protect",
        mutating: true,
        settings: default_labels_settings(&labels),
    }
    .apply(&k);
    policy.wait_active("protect");

    assert_default_labels(&k, ns.name(), "labelled", &labels);
}

#[test]
#[ignore = "needs Docker and a kind cluster: just kind-up kind-load kind-install kind-e2e"]
fn monitor_mode_admits_and_logs_the_would_be_denial() {
    let (k, ns) = setup("monitor");
    let policy = PolicySpec {
        policy_server: POLICY_SERVER,
        kind: PolicyKind::Cluster,
        name: &format!("monitor-{}", ns.name()),
        namespace: ns.name(),
        module: module("pod-privileged-component"),
        mode: "monitor",
        mutating: false,
        settings: json!({}),
    }
    .apply(&k);
    policy.wait_active("monitor");

    // An admitted Pod alone does not prove the webhook was called: wait until
    // the policy-server logged the real (deny) verdict for this policy.
    let id = policy.id();
    let pod = privileged_pod("privileged", ns.name());
    eventually(
        &format!("policy-server to log a monitor-mode denial by {id}"),
        ACTIVATION_TIMEOUT,
        || {
            wait_until_admitted(&k, &pod);
            let logs = policy_server_logs(&k);
            let seen = logs.lines().any(|line| {
                line.contains("monitor mode: would-be verdict")
                    && line.contains(&id)
                    && (line.contains("allowed=false") || line.contains("\"allowed\":false"))
            });
            if seen {
                Ok(())
            } else {
                Err(format!("no monitor-mode line for {id}"))
            }
        },
    );
    let stored = assert_privileged_pod_admitted(&k, ns.name(), "privileged");
    assert_eq!(
        stored["spec"]["containers"][1]["securityContext"]["privileged"], true,
        "the Pod admitted in monitor mode is the privileged one"
    );
}

#[test]
#[ignore = "needs Docker and a kind cluster: just kind-up kind-load kind-install kind-e2e"]
fn namespaced_admission_policy_applies_to_its_namespace_only() {
    let (k, ns) = setup("ap");
    let other = Namespace::new(&k, "ap-other");
    let policy = PolicySpec {
        policy_server: POLICY_SERVER,
        kind: PolicyKind::Namespaced,
        name: "privileged",
        namespace: ns.name(),
        module: module("pod-privileged-component"),
        mode: "protect",
        mutating: false,
        settings: json!({}),
    }
    .apply(&k);
    policy.wait_active("protect");

    assert_privileged_pod_denied(&k, ns.name(), "privileged", &policy.webhook());
    // The same Pod is admitted next door: the policy is scoped to its namespace.
    assert_privileged_pod_admitted(&k, other.name(), "privileged");
}

#[test]
#[ignore = "needs Docker and a kind cluster: just kind-up kind-load kind-install kind-e2e"]
fn policy_change_takes_effect_without_restarting_the_policy_server() {
    let (k, ns) = setup("reload");
    let name = format!("reload-{}", ns.name());
    let spec = |revision| PolicySpec {
        policy_server: POLICY_SERVER,
        kind: PolicyKind::Cluster,
        name: &name,
        namespace: ns.name(),
        module: module("default-labels-wapc"),
        mode: "protect",
        mutating: true,
        settings: default_labels_settings(&[("portcullis.dev/revision", revision)]),
    };
    let policy = spec("one").apply(&k);
    policy.wait_active("protect");
    assert_default_labels(
        &k,
        ns.name(),
        "before",
        &[("portcullis.dev/revision", "one")],
    );
    let pods_before = policy_server_pods(&k, POLICY_SERVER);
    assert!(!pods_before.is_empty(), "no policy-server pods");

    let _updated = spec("two").apply(&k);
    // The new settings reach the running policy-server through its
    // ConfigMap (hot reload), which the kubelet refreshes lazily.
    let probe = unprivileged_pod("probe", ns.name());
    eventually(
        "the changed default-labels settings to take effect",
        RELOAD_TIMEOUT,
        || {
            let stored = wait_until_admitted(&k, &probe);
            let label = &stored["metadata"]["labels"]["portcullis.dev/revision"];
            if label == "two" {
                Ok(())
            } else {
                Err(format!("label portcullis.dev/revision = {label}"))
            }
        },
    );
    assert_default_labels(
        &k,
        ns.name(),
        "after",
        &[("portcullis.dev/revision", "two")],
    );

    assert_eq!(
        policy_server_pods(&k, POLICY_SERVER),
        pods_before,
        "the policy-server pods (uid, restartCount) changed: the policy change restarted them"
    );
}

/// Whether Deployment `name` has finished rolling out `image`: the current
/// generation observed, every replica updated, ready and available, and no
/// Pod of an older ReplicaSet left.
fn rolled_out(k: &Kubectl, name: &str, image: &str) -> bool {
    let Some(d) = k.get_json(Some(&controller_namespace()), "deployment", name) else {
        return false;
    };
    let status = &d["status"];
    let want = &d["spec"]["replicas"];
    d["spec"]["template"]["spec"]["containers"][0]["image"] == image
        && status["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
        && &status["replicas"] == want
        && &status["updatedReplicas"] == want
        && &status["readyReplicas"] == want
        && &status["availableReplicas"] == want
}

#[test]
#[ignore = "needs Docker and a kind cluster: just kind-up kind-load kind-install kind-e2e"]
fn policy_server_upgrade_keeps_enforcing() {
    let k = kubectl();
    let ns = Namespace::new(&k, "upgrade");
    let server = json!({
        "apiVersion": "policies.portcullis.dev/v1",
        "kind": "PolicyServer",
        "metadata": { "name": UPGRADE_POLICY_SERVER },
        "spec": {
            "image": image(),
            "replicas": 2,
            "insecureSources": [registry()],
        },
    });
    k.apply(&server);
    let _delete_server = Cleanup(
        k.clone(),
        vec![
            "delete".into(),
            "policyserver".into(),
            UPGRADE_POLICY_SERVER.into(),
            "--ignore-not-found".into(),
            "--wait=false".into(),
        ],
    );
    let policy = PolicySpec::privileged(
        UPGRADE_POLICY_SERVER,
        &format!("upgrade-{}", ns.name()),
        ns.name(),
    )
    .apply(&k);
    policy.wait_active("protect");
    assert_privileged_pod_denied(&k, ns.name(), "before-upgrade", &policy.webhook());
    let pods_before = policy_server_pods(&k, UPGRADE_POLICY_SERVER);
    assert_eq!(pods_before.len(), 2, "two replicas: {pods_before:?}");

    // The upgrade: a new image on the PolicyServer. While the Deployment
    // rolls (one surge Pod at a time, never below two serving; each
    // terminating Pod keeps serving through its preStop pause), every
    // privileged Pod is rejected by the policy itself, never by a failed call.
    let new_image = upgrade_image();
    let mut upgraded = server.clone();
    upgraded["spec"]["image"] = json!(new_image);
    k.apply(&upgraded);
    let deployment = format!("policy-server-{UPGRADE_POLICY_SERVER}");
    let started = std::time::Instant::now();
    let mut samples = 0u32;
    loop {
        let pod = privileged_pod(&format!("during-upgrade-{samples}"), ns.name());
        let out = dry_run_pod(&k, &pod);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "sample {samples}: a privileged Pod was admitted during the upgrade"
        );
        assert!(
            text.contains(PRIVILEGED_DENIAL),
            "sample {samples} after {:?}: rejected, but not by the policy (a failed webhook call?):\n{text}",
            started.elapsed()
        );
        samples += 1;
        if rolled_out(&k, &deployment, &new_image) {
            break;
        }
        assert!(
            started.elapsed() < ACTIVATION_TIMEOUT,
            "deployment {deployment} did not roll out {new_image} within {ACTIVATION_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "upgrade rolled out in {:?}; {samples} privileged Pods sent meanwhile, all denied by the policy",
        started.elapsed()
    );

    // Every Pod was replaced (the old ones finish terminating after their
    // preStop pause and drain), the policy is active on the new ones, and it denies.
    eventually(
        "only the two upgraded policy-server Pods left",
        ACTIVATION_TIMEOUT,
        || {
            let pods = policy_server_pods(&k, UPGRADE_POLICY_SERVER);
            let replaced = pods
                .iter()
                .all(|(uid, _)| !pods_before.iter().any(|(old, _)| old == uid));
            if pods.len() == 2 && replaced {
                Ok(())
            } else {
                Err(format!("pods {pods:?}, before the upgrade {pods_before:?}"))
            }
        },
    );
    policy.wait_active("protect");
    assert_privileged_pod_denied(&k, ns.name(), "after-upgrade", &policy.webhook());
}

/// Runs a kubectl command on drop (best effort): cleanup that must happen
/// even when an assertion fails.
struct Cleanup(Kubectl, Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.run(&self.1);
    }
}

/// Whether `just kind-install-kustomize` installed the controller
/// (`PORTCULLIS_KIND_INSTALL=kustomize`) rather than the Helm charts.
fn kustomize_install() -> bool {
    std::env::var("PORTCULLIS_KIND_INSTALL").is_ok_and(|v| v == "kustomize")
}

/// `helm uninstall` of the three releases, in the reverse order of `just
/// kind-install`; the controller chart's pre-delete hook deletes the policies
/// and PolicyServers while the controller runs.
fn uninstall_helm() {
    let namespace = controller_namespace();
    for (release, namespaced) in [
        ("portcullis-defaults", true),
        ("portcullis-controller", true),
        ("portcullis-crds", false),
    ] {
        let mut cmd = helm();
        cmd.args(["--kube-context", &context()]);
        cmd.args(["uninstall", release, "--wait", "--timeout", "5m"]);
        if namespaced {
            cmd.args(["--namespace", &namespace]);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run helm: {e}"));
        assert!(
            out.status.success(),
            "helm uninstall {release} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The kustomize uninstall of docs/install.md: the policies and PolicyServers
/// first, while the controller runs and removes their webhooks, then
/// `kubectl delete -k` of the dev overlay (its Namespace included).
fn uninstall_kustomize(k: &Kubectl) {
    let overlay =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kustomize/overlays/dev");
    k.ok(&[
        "delete",
        "clusteradmissionpolicies.policies.portcullis.dev,admissionpolicies.policies.portcullis.dev",
        "--all",
        "--all-namespaces",
        "--wait=true",
        "--timeout=120s",
    ]);
    k.ok(&[
        "delete",
        "policyservers.policies.portcullis.dev",
        "--all",
        "--wait=true",
        "--timeout=120s",
    ]);
    k.ok(&[
        "delete",
        "-k",
        overlay.to_str().expect("UTF-8 path"),
        "--wait=true",
        "--timeout=300s",
    ]);
}

/// Uninstalls the charts (or the kustomize install): `just kind-e2e` runs it
/// alone, after the others.
#[test]
#[ignore = "needs Docker and a kind cluster; uninstalls the charts, run last (just kind-e2e)"]
fn uninstall_leaves_no_webhooks() {
    let (k, ns) = setup("uninstall");
    let policy = PolicySpec::privileged(
        POLICY_SERVER,
        &format!("uninstall-{}", ns.name()),
        ns.name(),
    )
    .apply(&k);
    policy.wait_active("protect");
    assert!(
        portcullis_webhook_configurations(&k)
            .iter()
            .any(|line| line.ends_with(&format!("/{}", policy.id()))),
        "the policy's webhook configuration is labelled {PART_OF_SELECTOR}"
    );
    assert_privileged_pod_denied(&k, ns.name(), "privileged", &policy.webhook());

    if kustomize_install() {
        uninstall_kustomize(&k);
    } else {
        uninstall_helm();
    }
    // The policy guard's delete would fail without the CRD; it is gone anyway.
    std::mem::forget(policy);

    let left = portcullis_webhook_configurations(&k);
    assert!(
        left.is_empty(),
        "webhook configurations labelled {PART_OF_SELECTOR} left after uninstall: {left:?}"
    );
    // Nor anything else of the charts' or the controller's (pods may take
    // their grace period to go).
    eventually(
        "nothing labelled part-of=portcullis left after uninstall",
        Duration::from_secs(120),
        || {
            let mut left = portcullis_objects(&k, NAMESPACED_KINDS, true);
            left.extend(portcullis_objects(&k, CLUSTER_KINDS, false));
            left.extend(portcullis_crds(&k));
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("left: {left:?}"))
            }
        },
    );
    // Nothing intercepts Pods any more.
    eventually(
        "a privileged Pod to be admitted after uninstall",
        Duration::from_secs(60),
        || {
            let out = dry_run_pod(&k, &privileged_pod("after", ns.name()));
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );
}

/// The one check here that needs no cluster.
#[test]
fn strip_ansi_removes_colour_codes() {
    assert_eq!(
        strip_ansi("\u{1b}[3mallowed\u{1b}[0m\u{1b}[2m=\u{1b}[0mfalse x"),
        "allowed=false x"
    );
    assert_eq!(strip_ansi("{\"allowed\":false}"), "{\"allowed\":false}");
}
