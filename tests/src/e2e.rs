//! Cluster-agnostic end-to-end admission checks: webhook configurations for a
//! policy-server, Pods built from `tests/fixtures/`, and assertions on what the
//! API server does with them.
//!
//! Everything goes through [`Kubectl`] (a kubectl binary + kubeconfig + optional
//! context), so the same checks run against the local control plane
//! ([`Kubectl::for_control_plane`]) or any other cluster, e.g. kind.
//!
//! Webhook configurations take effect asynchronously (the API server watches
//! them), so every assertion first polls with server-side dry-run requests
//! until the expected webhook behaviour shows, then makes the real request.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::control_plane::ControlPlane;

/// How long an assertion waits for a webhook configuration to take effect.
pub const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Substring of the rejection message of the pod-privileged sample policies.
pub const PRIVILEGED_DENIAL: &str = "Privileged container is not allowed";

/// A kubectl invocation target: binary, kubeconfig and optional context.
#[derive(Debug, Clone)]
pub struct Kubectl {
    program: OsString,
    kubeconfig: PathBuf,
    context: Option<String>,
}

impl Kubectl {
    /// kubectl from `$KUBECTL` or `PATH`, with `kubeconfig`.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> Kubectl {
        Kubectl {
            program: std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into()),
            kubeconfig: kubeconfig.into(),
            context: None,
        }
    }

    /// The admin kubeconfig of the local control plane.
    pub fn for_control_plane(cp: &ControlPlane) -> Kubectl {
        Kubectl::new(cp.kubeconfig_path())
    }

    /// Uses `context` of the kubeconfig (e.g. `kind-portcullis`).
    pub fn with_context(mut self, context: impl Into<String>) -> Kubectl {
        self.context = Some(context.into());
        self
    }

    /// The kubeconfig path.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        if let Some(context) = &self.context {
            cmd.arg("--context").arg(context);
        }
        cmd.args(args);
        cmd
    }

    /// Runs kubectl; never panics on a non-zero exit (panics if kubectl cannot run).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run kubectl (is it on PATH?): {e}"))
    }

    /// Runs kubectl with `stdin` as standard input (`-f -`).
    pub fn run_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl (is it on PATH?): {e}"));
        let mut input = child.stdin.take().expect("kubectl stdin");
        input
            .write_all(stdin.as_bytes())
            .expect("write kubectl stdin");
        drop(input);
        child.wait_with_output().expect("wait for kubectl")
    }

    /// Runs kubectl, panics with its output unless it succeeds, returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        expect_success(&describe(args), &out);
        stdout(&out)
    }

    /// `kubectl apply -f -` of `manifest` (JSON); panics unless it succeeds.
    pub fn apply(&self, manifest: &Value) -> String {
        let out = self.run_stdin(&["apply", "-f", "-"], &manifest.to_string());
        expect_success("apply -f -", &out);
        stdout(&out)
    }

    /// `kubectl get KIND NAME -o json` (namespaced if `namespace` is given);
    /// `None` when it does not exist.
    pub fn get_json(&self, namespace: Option<&str>, kind: &str, name: &str) -> Option<Value> {
        let mut args = vec!["get", kind, name, "-o", "json", "--ignore-not-found"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let text = self.ok(&args);
        if text.trim().is_empty() {
            return None;
        }
        Some(serde_json::from_str(&text).expect("kubectl printed JSON"))
    }
}

fn describe<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr followed by stdout: what a user would see.
fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Panics with kubectl's output unless it succeeded.
pub(crate) fn expect_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "kubectl {what} failed ({}):\n{}",
        out.status,
        combined(out)
    );
}

/// Calls `probe` until it returns `Ok`, at most `timeout`; panics with `what`
/// and the last error otherwise.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if started.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last result:\n{last}")
            }
            Err(_) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Kind of admission webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// `ValidatingWebhookConfiguration`.
    Validating,
    /// `MutatingWebhookConfiguration`.
    Mutating,
}

impl WebhookKind {
    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            WebhookKind::Validating => "ValidatingWebhookConfiguration",
            WebhookKind::Mutating => "MutatingWebhookConfiguration",
        }
    }

    /// The kubectl resource name.
    pub fn resource(self) -> &'static str {
        match self {
            WebhookKind::Validating => "validatingwebhookconfigurations",
            WebhookKind::Mutating => "mutatingwebhookconfigurations",
        }
    }
}

/// The webhook's `failurePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// A failed call rejects the request.
    Fail,
    /// A failed call is ignored (the request is admitted).
    Ignore,
}

impl FailurePolicy {
    fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

/// Where the API server sends the AdmissionReview.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `clientConfig.url`: the full URL of the policy's endpoint.
    Url(String),
    /// `clientConfig.service`: a Service (in a cluster, or routed to loopback with
    /// [`ControlPlane::route_service`]) and the endpoint's path.
    Service {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
        /// Port of the Service.
        port: u16,
        /// HTTP path, e.g. `/validate/<policy id>`.
        path: String,
    },
}

/// An admission webhook configuration with one webhook for one policy, for Pods
/// (`CREATE`, `UPDATE`), scoped to a single namespace through
/// `namespaceSelector` on `kubernetes.io/metadata.name`.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Name of both the configuration object and its webhook (a DNS name with
    /// at least three labels); make it unique per test.
    pub name: String,
    /// Validating or mutating.
    pub kind: WebhookKind,
    /// Where the policy is served.
    pub endpoint: Endpoint,
    /// PEM CA bundle that signed the policy-server's certificate.
    pub ca_pem: String,
    /// `failurePolicy`.
    pub failure_policy: FailurePolicy,
    /// The only namespace the webhook applies to.
    pub namespace: String,
    /// `timeoutSeconds`.
    pub timeout_seconds: u32,
}

impl Webhook {
    /// A webhook named `<policy_id>.<namespace>.e2e.portcullis.dev`, `failurePolicy: Fail`,
    /// `timeoutSeconds: 10`, applying to `namespace` only.
    pub fn new(
        kind: WebhookKind,
        policy_id: &str,
        namespace: &str,
        endpoint: Endpoint,
        ca_pem: &str,
    ) -> Webhook {
        Webhook {
            name: format!("{policy_id}.{namespace}.e2e.portcullis.dev"),
            kind,
            endpoint,
            ca_pem: ca_pem.to_string(),
            failure_policy: FailurePolicy::Fail,
            namespace: namespace.to_string(),
            timeout_seconds: 10,
        }
    }

    /// Sets `failurePolicy`.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Webhook {
        self.failure_policy = policy;
        self
    }

    /// The configuration object.
    pub fn manifest(&self) -> Value {
        let client_config = match &self.endpoint {
            Endpoint::Url(url) => json!({ "url": url }),
            Endpoint::Service {
                namespace,
                name,
                port,
                path,
            } => json!({
                "service": { "namespace": namespace, "name": name, "port": port, "path": path }
            }),
        };
        let mut client_config = client_config;
        client_config["caBundle"] = json!(BASE64.encode(self.ca_pem.as_bytes()));
        let mut webhook = json!({
            "name": self.name,
            "clientConfig": client_config,
            "rules": [{
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {
                "matchLabels": { "kubernetes.io/metadata.name": self.namespace }
            },
            "failurePolicy": self.failure_policy.as_str(),
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": self.timeout_seconds,
        });
        if self.kind == WebhookKind::Mutating {
            webhook["reinvocationPolicy"] = json!("Never");
        }
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": self.kind.kind(),
            "metadata": {
                "name": self.name,
                "labels": { "app.kubernetes.io/part-of": "portcullis-e2e" },
            },
            "webhooks": [webhook],
        })
    }

    /// Applies the configuration (creates or updates it). The returned guard
    /// deletes it when dropped, even when the test panics.
    #[must_use = "dropping the guard deletes the webhook configuration at once"]
    pub fn register(&self, k: &Kubectl) -> WebhookGuard {
        k.apply(&self.manifest());
        WebhookGuard {
            kubectl: k.clone(),
            kind: self.kind,
            name: self.name.clone(),
        }
    }
}

/// Deletes a webhook configuration on drop.
#[derive(Debug)]
#[must_use = "dropping the guard deletes the webhook configuration at once"]
pub struct WebhookGuard {
    kubectl: Kubectl,
    kind: WebhookKind,
    name: String,
}

impl WebhookGuard {
    /// Name of the configuration (and of its webhook).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for WebhookGuard {
    fn drop(&mut self) {
        let out = self.kubectl.run(&[
            "delete",
            self.kind.resource(),
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
        if !out.status.success() {
            eprintln!(
                "warning: cannot delete {} {}: {}",
                self.kind.kind(),
                self.name,
                combined(&out)
            );
        }
    }
}

/// Registers, in `namespace`, the webhooks of a policy-server that serves the
/// pod-privileged policy as `privileged` and the default-labels policy as
/// `default-labels`: a validating and a mutating one, each at
/// `endpoint(<policy id>)`, trusting `ca_pem`. Returns their guards, the
/// validating one first.
pub fn register_privileged_and_default_labels(
    k: &Kubectl,
    namespace: &str,
    ca_pem: &str,
    endpoint: impl Fn(&str) -> Endpoint,
) -> (WebhookGuard, WebhookGuard) {
    let register = |kind, policy_id| {
        Webhook::new(kind, policy_id, namespace, endpoint(policy_id), ca_pem).register(k)
    };
    (
        register(WebhookKind::Validating, "privileged"),
        register(WebhookKind::Mutating, "default-labels"),
    )
}

/// The Pod (`request.object`) of the AdmissionReview fixture `tests/fixtures/<fixture>`,
/// renamed to `name` in `namespace`.
pub fn fixture_pod(fixture: &str, name: &str, namespace: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(fixture);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let review: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut pod = review["request"]["object"].clone();
    assert_eq!(pod["kind"], "Pod", "{} holds no Pod", path.display());
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(namespace);
    pod
}

/// A Pod with a privileged `sidecar` container (label `app: web`).
pub fn privileged_pod(name: &str, namespace: &str) -> Value {
    fixture_pod("pod-privileged.json", name, namespace)
}

/// A Pod without privileged containers (label `app: web`).
pub fn unprivileged_pod(name: &str, namespace: &str) -> Value {
    fixture_pod("pod-unprivileged.json", name, namespace)
}

/// An unprivileged Pod labelled `app: web`, `team: payments`.
pub fn partially_labelled_pod(name: &str, namespace: &str) -> Value {
    fixture_pod("pod-partial-labels.json", name, namespace)
}

fn pod_name(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pod_namespace(pod: &Value) -> String {
    pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `kubectl apply -f -` of `pod` (a real create).
pub fn apply_pod(k: &Kubectl, pod: &Value) -> Output {
    k.run_stdin(&["apply", "-f", "-"], &pod.to_string())
}

/// `kubectl create --dry-run=server -o json -f -` of `pod`: full admission
/// (webhooks included), nothing stored.
pub fn dry_run_pod(k: &Kubectl, pod: &Value) -> Output {
    k.run_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        &pod.to_string(),
    )
}

/// Waits until the `default` ServiceAccount of `namespace` exists (the
/// ServiceAccount admission plugin rejects Pods before that).
pub fn wait_for_default_service_account(k: &Kubectl, namespace: &str) {
    eventually(
        &format!("serviceaccount {namespace}/default"),
        PROPAGATION_TIMEOUT,
        || match k.get_json(Some(namespace), "serviceaccount", "default") {
            Some(_) => Ok(()),
            None => Err("not found".to_string()),
        },
    );
}

/// Waits until a dry-run create of `pod` is rejected with a message containing
/// `needle`; returns that output.
pub fn wait_until_rejected(k: &Kubectl, pod: &Value, needle: &str) -> String {
    eventually(
        &format!(
            "a dry-run create of pod {} to be rejected with {needle:?}",
            pod_name(pod)
        ),
        PROPAGATION_TIMEOUT,
        || {
            let out = dry_run_pod(k, pod);
            let text = combined(&out);
            if !out.status.success() && text.contains(needle) {
                Ok(text)
            } else {
                Err(format!("({}) {text}", out.status))
            }
        },
    )
}

/// Waits until a dry-run create of `pod` is admitted; returns the object as the
/// API server would store it.
pub fn wait_until_admitted(k: &Kubectl, pod: &Value) -> Value {
    eventually(
        &format!("a dry-run create of pod {} to be admitted", pod_name(pod)),
        PROPAGATION_TIMEOUT,
        || {
            let out = dry_run_pod(k, pod);
            if out.status.success() {
                serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))
            } else {
                Err(format!("({}) {}", out.status, combined(&out)))
            }
        },
    )
}

/// Asserts that creating `pod` is rejected with a message containing `needle`
/// (waiting for the webhook to take effect) and that nothing is stored.
/// Returns kubectl's error output.
pub fn assert_pod_rejected(k: &Kubectl, pod: &Value, needle: &str) -> String {
    wait_until_rejected(k, pod, needle);
    let out = apply_pod(k, pod);
    let text = combined(&out);
    assert!(
        !out.status.success(),
        "pod {} was admitted, expected a rejection containing {needle:?}:\n{text}",
        pod_name(pod)
    );
    assert!(
        text.contains(needle),
        "rejection of pod {} does not contain {needle:?}:\n{text}",
        pod_name(pod)
    );
    assert!(
        k.get_json(Some(&pod_namespace(pod)), "pod", &pod_name(pod))
            .is_none(),
        "rejected pod {} exists",
        pod_name(pod)
    );
    text
}

/// Asserts that creating `pod` succeeds right now (no waiting: call it once the
/// webhooks are known to be in effect) and returns the stored object.
pub fn assert_pod_admitted(k: &Kubectl, pod: &Value) -> Value {
    let out = apply_pod(k, pod);
    assert!(
        out.status.success(),
        "pod {} was rejected:\n{}",
        pod_name(pod),
        combined(&out)
    );
    k.get_json(Some(&pod_namespace(pod)), "pod", &pod_name(pod))
        .unwrap_or_else(|| panic!("admitted pod {} not found", pod_name(pod)))
}

/// Asserts that a privileged Pod `name` is rejected in `namespace` by a
/// pod-privileged policy (webhook named `webhook`); returns the error output.
pub fn assert_privileged_pod_denied(
    k: &Kubectl,
    namespace: &str,
    name: &str,
    webhook: &str,
) -> String {
    let text = assert_pod_rejected(k, &privileged_pod(name, namespace), PRIVILEGED_DENIAL);
    assert!(
        text.contains(&format!(
            "admission webhook \"{webhook}\" denied the request"
        )),
        "the rejection does not name webhook {webhook}:\n{text}"
    );
    text
}

/// Asserts that a privileged Pod `name` is created in `namespace` (no policy
/// denies it there). Call once the webhooks are known to be in effect.
pub fn assert_privileged_pod_admitted(k: &Kubectl, namespace: &str, name: &str) -> Value {
    assert_pod_admitted(k, &privileged_pod(name, namespace))
}

/// Settings of the default-labels policy that make it add `labels`.
pub fn default_labels_settings(labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(key, value)| ((*key).to_string(), json!(value)))
        .collect();
    json!({ "labels": labels })
}

/// Asserts that the default-labels policy adds `labels` to Pods of `namespace`
/// without overwriting existing ones: waits until a dry-run shows the labels,
/// then creates `<prefix>-plain` (labels `app: web`) and `<prefix>-partial`
/// (`app: web`, `team: payments`) and checks the stored labels.
pub fn assert_default_labels(k: &Kubectl, namespace: &str, prefix: &str, labels: &[(&str, &str)]) {
    let plain = unprivileged_pod(&format!("{prefix}-plain"), namespace);
    let partial = partially_labelled_pod(&format!("{prefix}-partial"), namespace);
    let expected = |pod: &Value| -> Value {
        let mut want = pod["metadata"]["labels"].clone();
        for (key, value) in labels {
            if want.get(*key).is_none() {
                want[*key] = json!(value);
            }
        }
        want
    };
    eventually(
        &format!(
            "the default labels on a dry-run of pod {}",
            pod_name(&plain)
        ),
        PROPAGATION_TIMEOUT,
        || {
            let stored = wait_until_admitted(k, &plain);
            let have = &stored["metadata"]["labels"];
            if *have == expected(&plain) {
                Ok(())
            } else {
                Err(format!("labels {have}"))
            }
        },
    );
    for pod in [&plain, &partial] {
        let stored = assert_pod_admitted(k, pod);
        assert_eq!(
            stored["metadata"]["labels"],
            expected(pod),
            "labels of pod {}",
            pod_name(pod)
        );
    }
}

/// Asserts that, with the policy-server unreachable, webhook `webhook` with
/// `failurePolicy: Fail` rejects a Pod: waits until a dry-run fails with
/// "failed calling webhook", then checks a real create fails the same way.
/// Returns the error output.
pub fn assert_unreachable_webhook_fails_closed(
    k: &Kubectl,
    namespace: &str,
    name: &str,
    webhook: &str,
) -> String {
    let needle = format!("failed calling webhook \"{webhook}\"");
    assert_pod_rejected(k, &unprivileged_pod(name, namespace), &needle)
}

/// Asserts that a Pod is admitted despite an unreachable webhook with
/// `failurePolicy: Ignore`. Admission also succeeds while the webhook is not in
/// effect yet, so call this after the same webhook was seen failing closed
/// (then switched to `Ignore`), or check the API server's audit log.
pub fn assert_unreachable_webhook_fails_open(k: &Kubectl, namespace: &str, name: &str) -> Value {
    let pod = unprivileged_pod(name, namespace);
    wait_until_admitted(k, &pod);
    assert_pod_admitted(k, &pod)
}
