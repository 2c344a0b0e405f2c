//! One audit test's world on the local control plane: the CRDs (policies
//! and reports), a controller namespace with a real policy-server serving
//! the test's policies over HTTPS (its certificate issued for the Service
//! name the scanner uses), the policies themselves marked `active`, and the
//! `audit-scanner` binary run against it all.
//!
//! The scanner audits every active policy of the cluster, so the tests of
//! this binary run one at a time ([`World::new`] takes a lock) and each
//! deletes its policies when it ends.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use portcullis_tests::control_plane::{ControlPlane, TestNamespace};
use portcullis_tests::e2e::{self, Kubectl};
use portcullis_tests::policy_server::{Policy, PolicyServer};
use serde_json::{Value, json};

/// Report CRDs shipped in the portcullis-crds chart.
pub const REPORT_CRDS: [&str; 4] = [
    "reports.openreports.io",
    "clusterreports.openreports.io",
    "policyreports.wgpolicyk8s.io",
    "clusterpolicyreports.wgpolicyk8s.io",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The control plane with the policy and report CRDs installed.
pub fn control_plane() -> &'static ControlPlane {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let cp = ControlPlane::shared();
    INSTALLED.get_or_init(|| {
        let root = repo_root();
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("controller/crds"))
            .expect("controller/crds")
            .map(|e| e.expect("entry").path())
            .collect();
        for crd in REPORT_CRDS {
            files.push(root.join(format!("charts/portcullis-crds/files/{crd}.yaml")));
        }
        for file in &files {
            cp.kubectl_ok(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
        }
        cp.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ]);
    });
    cp
}

/// A policy of a test: its manifest (without `policyServer`) and the
/// sample module and settings its policy-server runs it with.
pub struct TestPolicy {
    /// The manifest; `spec.policyServer` is filled in.
    pub manifest: Value,
    /// Sample policy name (`target/policies/<module>.wasm`).
    pub module: &'static str,
    /// Settings.
    pub settings: Value,
    /// `status.policyStatus` to set (`None`: no status).
    pub status: Option<&'static str>,
    /// For a group: its expression and members (name, sample module).
    pub group: Option<(&'static str, Vec<(&'static str, &'static str)>)>,
}

impl TestPolicy {
    /// The policy id (what the policy-server serves it as).
    pub fn id(&self) -> String {
        let name = self.manifest["metadata"]["name"].as_str().unwrap();
        let prefix = if self.group.is_some() { "group-" } else { "" };
        match self.manifest["metadata"]["namespace"].as_str() {
            Some(ns) => format!("{prefix}namespaced-{ns}.{name}"),
            None => format!("{prefix}clusterwide-{name}"),
        }
    }

    /// What its policy-server serves.
    fn served(&self) -> Policy {
        match &self.group {
            Some((expression, members)) => Policy::group(
                &self.id(),
                expression,
                self.manifest["spec"]["message"]
                    .as_str()
                    .unwrap_or_default(),
                members,
            ),
            None => Policy::new(&self.id(), self.module).settings(self.settings.clone()),
        }
    }
}

/// A ClusterAdmissionPolicyGroup named `name` for Pods in namespaces
/// labelled `audit-test=<label>`: `expression` over `members` (name, sample
/// module), denying with `message`.
pub fn capg(
    name: &str,
    label: &str,
    expression: &'static str,
    message: &str,
    members: Vec<(&'static str, &'static str)>,
) -> TestPolicy {
    let policies: serde_json::Map<String, Value> = members
        .iter()
        .map(|(member, _)| {
            (
                member.to_string(),
                json!({"module": "registry://example.test/unused:v1"}),
            )
        })
        .collect();
    TestPolicy {
        manifest: json!({
            "apiVersion": "policies.portcullis.dev/v1",
            "kind": "ClusterAdmissionPolicyGroup",
            "metadata": {"name": name},
            "spec": {
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"]}],
                "namespaceSelector": {"matchLabels": {"audit-test": label}},
                "expression": expression,
                "message": message,
                "policies": policies,
            }
        }),
        module: "",
        settings: json!({}),
        status: Some("active"),
        group: Some((expression, members)),
    }
}

/// A ClusterAdmissionPolicy named `name` for `resources` of `groups`
/// (version `*`), in namespaces labelled `audit-test=<label>`.
pub fn cap(
    name: &str,
    label: &str,
    groups: &[&str],
    resources: &[&str],
    module: &'static str,
) -> TestPolicy {
    TestPolicy {
        manifest: json!({
            "apiVersion": "policies.portcullis.dev/v1",
            "kind": "ClusterAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "module": "registry://example.test/unused:v1",
                "mutating": false,
                "rules": [{"apiGroups": groups, "apiVersions": ["*"], "resources": resources, "operations": ["CREATE", "UPDATE"]}],
                "namespaceSelector": {"matchLabels": {"audit-test": label}},
            }
        }),
        module,
        settings: json!({}),
        status: Some("active"),
        group: None,
    }
}

/// An AdmissionPolicy named `name` in `namespace` for Pods.
pub fn ap(name: &str, namespace: &str, module: &'static str) -> TestPolicy {
    TestPolicy {
        manifest: json!({
            "apiVersion": "policies.portcullis.dev/v1",
            "kind": "AdmissionPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "module": "registry://example.test/unused:v1",
                "mutating": false,
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
            }
        }),
        module,
        settings: json!({}),
        status: Some("active"),
        group: None,
    }
}

/// One test's world. Holds the lock that serialises the audit tests.
pub struct World {
    pub cp: &'static ControlPlane,
    pub k: Kubectl,
    /// Label value of the test's namespaces (`audit-test=<it>`).
    pub label: String,
    /// The controller namespace (where the policy-server "Service" is).
    pub controller_ns: TestNamespace,
    /// The PolicyServer name the policies are bound to.
    pub policy_server_name: String,
    pub server: PolicyServer,
    pub ca_file: PathBuf,
    dir: tempfile::TempDir,
    policies: Vec<(String, Option<String>, String)>,
    _lock: MutexGuard<'static, ()>,
}

static SERIAL: Mutex<()> = Mutex::new(());

/// A short unique suffix.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:x}",
        nanos & 0xfffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl World {
    /// Starts a policy-server serving `policies`, then applies them (bound
    /// to it, with their status).
    pub fn new(label: &str, policies: Vec<TestPolicy>) -> World {
        World::with_server_args(label, policies, &[])
    }

    /// Like [`World::new`], with extra flags for the policy-server (e.g.
    /// `--client-ca-file=...`).
    pub fn with_server_args(label: &str, policies: Vec<TestPolicy>, args: &[&str]) -> World {
        let lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let cp = control_plane();
        let k = cp.kubectl_client();
        let controller_ns = TestNamespace::new("audit-ctl");
        let policy_server_name = format!("audit-{}", unique());
        let host = format!(
            "policy-server-{policy_server_name}.{}.svc",
            controller_ns.name()
        );
        let served: Vec<Policy> = policies.iter().map(TestPolicy::served).collect();
        let server = PolicyServer::start_with_args(&served, &[host], args).expect("policy-server");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, server.ca_pem()).expect("write ca.crt");
        let mut world = World {
            cp,
            k,
            label: label.to_string(),
            controller_ns,
            policy_server_name,
            server,
            ca_file,
            dir,
            policies: Vec::new(),
            _lock: lock,
        };
        for policy in policies {
            world.apply_policy(policy);
        }
        world
    }

    /// Applies a policy bound to the world's policy-server, and its status.
    /// A policy that names its own `spec.policyServer` keeps it.
    pub fn apply_policy(&mut self, mut policy: TestPolicy) {
        if policy.manifest["spec"]["policyServer"].is_null() {
            policy.manifest["spec"]["policyServer"] = json!(self.policy_server_name);
        }
        self.k.apply(&policy.manifest);
        let kind = policy.manifest["kind"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase();
        let name = policy.manifest["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let namespace = policy.manifest["metadata"]["namespace"]
            .as_str()
            .map(str::to_string);
        if let Some(status) = policy.status {
            let patch = json!({"status": {"policyStatus": status}}).to_string();
            let mut args = vec![
                "patch",
                kind.as_str(),
                name.as_str(),
                "--subresource=status",
                "--type=merge",
                "-p",
                patch.as_str(),
            ];
            if let Some(ns) = &namespace {
                args.extend(["-n", ns.as_str()]);
            }
            self.k.ok(&args);
        }
        self.policies.push((kind, namespace, name));
    }

    /// Deletes one of the world's policies.
    pub fn delete_policy(&mut self, name: &str) {
        if let Some(i) = self.policies.iter().position(|(_, _, n)| n == name) {
            let (kind, namespace, name) = self.policies.remove(i);
            let mut args = vec!["delete", kind.as_str(), name.as_str(), "--wait=true"];
            if let Some(ns) = &namespace {
                args.extend(["-n", ns.as_str()]);
            }
            self.k.ok(&args);
        }
    }

    /// A namespace labelled `audit-test=<label>` (or unlabelled).
    pub fn namespace(&self, prefix: &str, labelled: bool) -> TestNamespace {
        namespace(&self.label, prefix, labelled)
    }

    /// Creates a Pod; returns its uid.
    pub fn pod(&self, namespace: &str, name: &str, privileged: bool, labels: Value) -> String {
        let mut pod = if privileged {
            e2e::privileged_pod(name, namespace)
        } else {
            e2e::unprivileged_pod(name, namespace)
        };
        pod["metadata"]["labels"] = labels;
        self.k.apply(&pod);
        self.uid(Some(namespace), "pod", name)
    }

    /// The uid of an object.
    pub fn uid(&self, namespace: Option<&str>, kind: &str, name: &str) -> String {
        let object = self
            .k
            .get_json(namespace, kind, name)
            .expect("object exists");
        object["metadata"]["uid"].as_str().expect("uid").to_string()
    }

    /// Runs the scanner with the world's CA and policy-server address, and
    /// `args`.
    pub fn scan(&self, args: &[&str]) -> Scan {
        let output = self.scan_command(args).output().expect("run audit-scanner");
        Scan::new(output)
    }

    /// The command [`World::scan`] runs.
    pub fn scan_command(&self, args: &[&str]) -> Command {
        let address = format!("{}={}", self.policy_server_name, self.server.addr());
        let mut command = Command::new(env!("CARGO_BIN_EXE_audit-scanner"));
        command
            .env("KUBECONFIG", self.cp.kubeconfig_path())
            .args(["--portcullis-namespace", self.controller_ns.name()])
            .arg("--ca-file")
            .arg(&self.ca_file)
            .args(["--policy-server-address", &address])
            .args(["--log-fmt", "json", "--progress-interval", "1"])
            .args(args);
        command
    }

    /// A report (`kind` `report`, `clusterreport`, ...) or `None`.
    pub fn report(&self, kind: &str, namespace: Option<&str>, uid: &str) -> Option<Value> {
        self.k.get_json(namespace, kind, uid)
    }

    /// The report's results as `policy id → result`.
    pub fn results(&self, kind: &str, namespace: Option<&str>, uid: &str) -> Vec<(String, String)> {
        let report = self
            .report(kind, namespace, uid)
            .unwrap_or_else(|| panic!("no {kind} {namespace:?}/{uid}"));
        results(&report)
    }

    /// Waits until a report is gone.
    pub fn wait_report_gone(&self, kind: &str, namespace: Option<&str>, uid: &str) {
        e2e::eventually(
            "the report to be deleted",
            Duration::from_secs(60),
            || match self.report(kind, namespace, uid) {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            },
        );
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for (kind, namespace, name) in std::mem::take(&mut self.policies) {
            let mut args = vec![
                "delete",
                kind.as_str(),
                name.as_str(),
                "--ignore-not-found",
                "--wait=false",
            ];
            if let Some(ns) = &namespace {
                args.extend(["-n", ns.as_str()]);
            }
            let _ = self.k.run(&args);
        }
    }
}

/// A namespace labelled `audit-test=<label>` (or unlabelled), ready for Pods.
pub fn namespace(label: &str, prefix: &str, labelled: bool) -> TestNamespace {
    let k = control_plane().kubectl_client();
    let ns = TestNamespace::new(prefix);
    if labelled {
        k.ok(&[
            "label",
            "namespace",
            ns.name(),
            &format!("audit-test={label}"),
        ]);
    }
    e2e::wait_for_default_service_account(&k, ns.name());
    ns
}

/// `policy → result` of a report, sorted.
pub fn results(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["policy"].as_str().unwrap_or_default().to_string(),
                r["result"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// One scanner run.
pub struct Scan {
    pub output: Output,
    pub stdout: String,
    pub stderr: String,
    /// The fields of the final `audit run finished` log event.
    pub summary: Value,
}

impl Scan {
    fn new(output: Output) -> Scan {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let summary = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["fields"]["message"] == "audit run finished")
            .map(|e| e["fields"].clone())
            .unwrap_or(Value::Null);
        Scan {
            output,
            stdout,
            stderr,
            summary,
        }
    }

    /// Panics with the log unless the run succeeded and was complete.
    pub fn assert_complete(&self) -> &Self {
        assert!(
            self.output.status.success() && self.summary["complete"] == true,
            "audit-scanner failed ({}):\n{}",
            self.output.status,
            self.stderr
        );
        self
    }

    /// The fields of the `audit progress` log event at the end of the run.
    pub fn last_progress(&self) -> Value {
        self.stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["fields"]["message"] == "audit progress" && e["fields"]["last"] == true)
            .map(|e| e["fields"].clone())
            .unwrap_or_else(|| panic!("no last progress line in:\n{}", self.stderr))
    }

    /// A counter of the summary.
    pub fn count(&self, field: &str) -> u64 {
        self.summary[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field} in {}", self.summary))
    }
}
