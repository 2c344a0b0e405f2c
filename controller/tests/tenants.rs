//! Namespace tenants cannot hurt one another (issue 10, controller items).
//!
//! - Two tenants whose policies had the same id under Kubewarden's
//!   `namespaced-<ns>-<name>` (namespace `<x>` with policy `y-z`, namespace
//!   `<x>-y` with policy `z`) each keep their own webhook, `policies.yml`
//!   entry and verdicts: a real policy-server (run as its Pod would be, see
//!   `common/pod.rs`) serves both, the real API server calls it, and the same
//!   privileged Pod is denied in one namespace (protect) and admitted in the
//!   other (monitor).
//! - A tenant's policy with a `file://` module that the API server let
//!   through (a CRD without the CEL rule) is refused by the controller: not
//!   in `policies.yml`, no webhook, and its status says why.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::pod::{SimulatedPod, free_ports, mark_ready};
use common::registry::Registry;
use common::world::World;
use common::{
    BindingGuard, Controller, TEST_LABEL, control_plane, eventually, impersonating_kubeconfig,
    install_rbac, jstr, unique,
};
use portcullis_config::{PoliciesConfig, PolicyEntry};
use portcullis_tests::control_plane::{ControlPlane, TestNamespace, target_dir};
use portcullis_tests::e2e;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);

/// A namespace with exactly this name, deleted on drop.
struct ExactNamespace<'a> {
    cp: &'a ControlPlane,
    name: String,
}

impl<'a> ExactNamespace<'a> {
    fn create(cp: &'a ControlPlane, name: &str) -> Self {
        cp.kubectl_ok(&["create", "namespace", name]);
        Self {
            cp,
            name: name.to_string(),
        }
    }
}

impl Drop for ExactNamespace<'_> {
    fn drop(&mut self) {
        let _ = self.cp.kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

fn status(k: &e2e::Kubectl, namespace: &str, name: &str) -> (String, String, String) {
    let v = k
        .get_json(Some(namespace), "admissionpolicy", name)
        .unwrap_or(Value::Null);
    (
        jstr(&v, "/status/policyStatus").to_string(),
        jstr(&v, "/status/conditions/0/reason").to_string(),
        jstr(&v, "/status/conditions/0/message").to_string(),
    )
}

#[test]
fn tenants_with_formerly_colliding_names_keep_their_own_webhooks_and_verdicts() {
    let cp = control_plane();
    let k = cp.kubectl_client();
    let ctl_ns = TestNamespace::new("tenants");
    let ctl = ctl_ns.name().to_string();
    let label = unique("tenants");
    let ps = unique("ps");
    let object = format!("policy-server-{ps}");
    let (webhook_port, readiness_port) = free_ports();
    let dir = target_dir().join(unique("tenants"));
    std::fs::create_dir_all(&dir).expect("test dir");

    // Tenant namespaces `<x>` and `<x>-y`, policies `y-z` and `z`: both were
    // `namespaced-<x>-y-z`.
    let x = unique("tenant");
    let first = ExactNamespace::create(cp, &x);
    let second = ExactNamespace::create(cp, &format!("{x}-y"));
    let old_id = format!("namespaced-{x}-y-z");
    assert_eq!(
        format!("namespaced-{}-{}", first.name, "y-z"),
        format!("namespaced-{}-{}", second.name, "z"),
        "the two policies collide under the old scheme"
    );
    let first_id = format!("namespaced-{}.y-z", first.name);
    let second_id = format!("namespaced-{}.z", second.name);

    // Tenants may only use registry:// (or https://) modules.
    let registry = Registry::start();
    let module = registry.push_sample("pod-privileged-wapc");

    let _binding = BindingGuard {
        cp,
        name: install_rbac(cp, &ctl, &label),
    };
    let kubeconfig = impersonating_kubeconfig(cp, &ctl, &dir);
    let _controller = Controller::start(&dir, &kubeconfig, &ctl, &label, &label, |_| {});
    cp.apply(&format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: PolicyServer
metadata:
  name: {ps}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  image: ghcr.io/portcullis/policy-server:test
  replicas: 1
  webhookPort: {webhook_port}
  readinessProbePort: {readiness_port}
  insecureSources: ["{registry}"]
"#,
        registry = registry.host()
    ));
    let policy = |namespace: &str, name: &str, mode: &str| {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicy
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: {module}
  mode: {mode}
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}
  mutating: false
  failurePolicy: Fail
"#
        )
    };
    cp.apply(&policy(&first.name, "y-z", "protect"));
    cp.apply(&policy(&second.name, "z", "monitor"));

    // Two entries in policies.yml, one per tenant, with their own modes.
    let configmap = eventually("policies.yml with both tenants' policies", TIMEOUT, || {
        k.get_json(Some(&ctl), "configmap", &object).filter(|cm| {
            let yaml = jstr(cm, "/data/policies.yml");
            yaml.contains(&first_id) && yaml.contains(&second_id)
        })
    });
    let yaml = jstr(&configmap, "/data/policies.yml").to_string();
    let config = PoliciesConfig::from_slice(yaml.as_bytes()).expect("policies.yml");
    let modes: BTreeMap<&str, &str> = config
        .policies
        .iter()
        .map(|(id, entry)| (id.as_str(), entry.policy_mode().as_str()))
        .collect();
    assert_eq!(
        modes,
        BTreeMap::from([
            (first_id.as_str(), "protect"),
            (second_id.as_str(), "monitor")
        ]),
        "policies.yml:\n{yaml}"
    );
    assert!(!config.policies.contains_key(&old_id));
    let PolicyEntry::Policy(entry) = &config.policies[&first_id] else {
        panic!("{config:?}");
    };
    assert_eq!(entry.module, module);

    // The policy-server, as its Pod would run it; the Service routed to it.
    let deployment = eventually("the policy-server Deployment", TIMEOUT, || {
        k.get_json(Some(&ctl), "deployment", &object)
    });
    let digest = portcullis_config::content_digest(yaml.as_bytes());
    let mut pod = SimulatedPod::start(&k, &ctl, &deployment, &dir);
    pod.wait_serving(&digest, &[&first_id, &second_id], TIMEOUT);
    cp.route_service(
        &ctl,
        &object,
        443,
        SocketAddr::from(([127, 0, 0, 1], webhook_port)),
    );
    let selector = format!("policies.portcullis.dev/policy-server={ps}");
    let pods = eventually("the policy-server Pod", TIMEOUT, || {
        let out = k.ok(&["-n", &ctl, "get", "pods", "-l", &selector, "-o", "name"]);
        (!out.trim().is_empty()).then(|| out.lines().map(str::to_string).collect::<Vec<_>>())
    });
    for p in &pods {
        mark_ready(&k, &ctl, p);
    }

    // Each tenant's policy is active behind a webhook of its own, scoped to
    // its own namespace.
    for (namespace, name) in [(&first.name, "y-z"), (&second.name, "z")] {
        eventually(&format!("{namespace}/{name} active"), TIMEOUT, || {
            (status(&k, namespace, name).0 == "active").then_some(())
        });
    }
    for (id, namespace) in [(&first_id, &first.name), (&second_id, &second.name)] {
        let hook = k
            .get_json(None, "validatingwebhookconfiguration", id)
            .unwrap_or_else(|| panic!("webhook {id}"));
        assert_eq!(
            jstr(
                &hook,
                "/webhooks/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name"
            ),
            namespace.as_str()
        );
        assert_eq!(
            jstr(&hook, "/webhooks/0/clientConfig/service/path"),
            format!("/validate/{id}")
        );
    }
    assert!(
        k.get_json(None, "validatingwebhookconfiguration", &old_id)
            .is_none()
    );

    // Verdicts: the same privileged Pod is denied in the first tenant's
    // namespace (protect) and admitted in the second's (monitor).
    for namespace in [&first.name, &second.name] {
        e2e::wait_for_default_service_account(&k, namespace);
    }
    e2e::assert_privileged_pod_denied(
        &k,
        &first.name,
        "privileged",
        &format!("{first_id}.policies.portcullis.dev"),
    );
    e2e::assert_privileged_pod_admitted(&k, &second.name, "privileged");
    assert!(pod.server.is_running());

    for (namespace, name) in [(&first.name, "y-z"), (&second.name, "z")] {
        k.ok(&["-n", namespace, "delete", "ap", name, "--wait=false"]);
    }
    for id in [&first_id, &second_id] {
        eventually("the webhooks removed", TIMEOUT, || {
            k.get_json(None, "validatingwebhookconfiguration", id)
                .is_none()
                .then_some(())
        });
    }
    k.ok(&["delete", "ps", &ps, "--wait=false"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The AdmissionPolicy CRD without its module rule, as an older CRD would be.
fn admission_policy_crd_without_the_module_rule() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crds/admissionpolicies.policies.portcullis.dev.yaml");
    let yaml = std::fs::read_to_string(&path).expect("AdmissionPolicy CRD");
    let mut crd: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("CRD YAML");
    let rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"]
        .as_sequence_mut()
        .expect("spec rules");
    let before = rules.len();
    rules.retain(|r| {
        !r["rule"]
            .as_str()
            .unwrap_or_default()
            .contains("registry://")
    });
    assert_eq!(rules.len(), before - 1, "the module rule was in the CRD");
    serde_yaml::to_string(&crd).expect("CRD YAML")
}

#[test]
fn the_controller_refuses_a_tenants_file_module_the_api_server_let_through() {
    let w = World::new("defence");
    let ps = unique("ps");
    w.cp.apply(&w.policy_server(&ps, ""));
    let team = TestNamespace::new("team");
    let policy = |name: &str, module: &str| {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicy
metadata:
  name: {name}
  namespace: {ns}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: "{module}"
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}}]
  mutating: false
  failurePolicy: Ignore
  objectSelector:
    matchLabels: {{intercept-me: "{label}"}}
"#,
            ns = team.name(),
            label = w.label
        )
    };
    // With the CRD's rule in place, the API server refuses it.
    common::assert_rejected(
        w.cp,
        &policy("files", "file:///etc/passwd"),
        "namespaced policies may only use registry:// and https:// modules",
    );
    // This test binary's control plane gets a CRD without the rule.
    w.cp.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=portcullis-tests",
            "-f",
            "-",
        ],
        &admission_policy_crd_without_the_module_rule(),
    );
    eventually(
        "the API server to accept file:// for a tenant",
        TIMEOUT,
        || {
            common::try_apply(w.cp, &policy("files", "file:///etc/passwd"))
                .status
                .success()
                .then_some(())
        },
    );
    w.cp.apply(&policy(
        "registry",
        "registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2",
    ));
    w.make_pods_ready(&ps);

    // The valid policy goes active; the file:// one never does.
    let valid_id = format!("namespaced-{}.registry", team.name());
    let refused_id = format!("namespaced-{}.files", team.name());
    eventually("the valid tenant policy's webhook", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &valid_id])
    });
    let (state, reason, message) = eventually("the refusal in the status", TIMEOUT, || {
        let v = w.get_json(&["-n", team.name(), "ap", "files"])?;
        let s = (
            jstr(&v, "/status/policyStatus").to_string(),
            jstr(&v, "/status/conditions/0/reason").to_string(),
            jstr(&v, "/status/conditions/0/message").to_string(),
        );
        (s.1 == "ModuleSourceNotAllowed").then_some(s)
    });
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("pending", "ModuleSourceNotAllowed")
    );
    assert!(message.contains("file:///etc/passwd"), "{message}");
    assert!(
        message.contains("namespaced policies may only use registry:// and https:// modules"),
        "{message}"
    );
    let cm = w
        .get_ns_json("configmap", &format!("policy-server-{ps}"))
        .expect("ConfigMap");
    let yaml = jstr(&cm, "/data/policies.yml");
    assert!(yaml.contains(&valid_id), "{yaml}");
    assert!(
        !yaml.contains(&refused_id) && !yaml.contains("file://"),
        "{yaml}"
    );
    assert!(
        w.get_json(&["validatingwebhookconfiguration", &refused_id])
            .is_none()
    );
    for name in ["files", "registry"] {
        w.cp.kubectl_ok(&["-n", team.name(), "delete", "ap", name, "--wait=false"]);
    }
    w.cp.kubectl_ok(&["delete", "ps", &ps, "--wait=false"]);
}
