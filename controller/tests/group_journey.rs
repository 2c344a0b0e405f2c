//! Policy groups end to end (issue 14, "Done when"): the real API server,
//! the `portcullis-controller` binary and a real `policy-server` configured
//! only from what the controller wrote, as in `seed_journey.rs` (same
//! simulated Pod, volumes and Service routing; see there).
//!
//! - A ClusterAdmissionPolicyGroup "the Pod is not privileged, or it runs in
//!   the trusted namespace" denies a privileged Pod with the group's message
//!   and a cause per denying member, and admits the same Pod in the trusted
//!   namespace.
//! - It short-circuits: a second group, `fine() || stuck()`, whose `stuck`
//!   member loops until its deadline, admits at once, and the policy-server
//!   never evaluated `stuck` (its metrics say so; had it run, the group would
//!   have failed closed and the Pod been refused).
//! - An AdmissionPolicyGroup applies inside its namespace only.
//!
//! Invalid groups refused by the API server: `groups.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::pod::{SimulatedPod, free_ports, mark_ready};
use common::registry::Registry;
use common::{
    BindingGuard, Controller, TEST_LABEL, control_plane, eventually, impersonating_kubeconfig,
    install_rbac, jstr, unique,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use portcullis_tests::control_plane::{ControlPlane, TestNamespace, target_dir};
use portcullis_tests::e2e::{self, Kubectl};
use portcullis_tests::policy_server as ps_support;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);
const GROUP_MESSAGE: &str = "privileged Pods run in the trusted namespace only";
const TENANT_MESSAGE: &str = "the tenant allows no privileged Pods";

/// What the API server answers to a server-side dry run of `pod`: `Ok` when
/// admitted, else the Status (with the webhook's `details.causes`).
fn dry_run(cp: &ControlPlane, pod: &Value) -> Result<(), Box<kube::core::Status>> {
    let namespace = jstr(pod, "/metadata/namespace").to_string();
    let pod: Pod = serde_json::from_value(pod.clone()).expect("a Pod");
    let kubeconfig = cp.kubeconfig_path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("client config");
        let client = kube::Client::try_from(config).expect("client");
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        match Api::<Pod>::namespaced(client, &namespace)
            .create(&params, &pod)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) => Err(status),
            Err(other) => panic!("dry run of a Pod: {other}"),
        }
    })
}

/// The causes of a refusal as (field, message) pairs.
fn causes(status: &kube::core::Status) -> Vec<(String, String)> {
    status
        .details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| (c.field.clone(), c.message.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Evaluations of `policy` counted by the policy-server (`/metrics`).
fn evaluations(readiness_port: u16, policy: &str) -> u64 {
    let (status, metrics) = portcullis_tests::http::get(
        SocketAddr::from(([127, 0, 0, 1], readiness_port)),
        "/metrics",
    )
    .expect("/metrics");
    assert_eq!(status, 200, "{metrics}");
    metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_policy_evaluations_total{"))
        .filter(|l| l.contains(&format!("policy=\"{policy}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn group_status(k: &Kubectl, namespace: Option<&str>, kind: &str, name: &str) -> String {
    k.get_json(namespace, kind, name)
        .map(|v| jstr(&v, "/status/policyStatus").to_string())
        .unwrap_or_default()
}

#[test]
fn groups_deny_admit_and_short_circuit_on_the_real_api_server() {
    let cp = control_plane();
    let k = cp.kubectl_client();
    let ctl_ns = TestNamespace::new("grp");
    let apps_ns = TestNamespace::new("grp-apps");
    let trusted_ns = TestNamespace::new("grp-trusted");
    let tenant_ns = TestNamespace::new("grp-tenant");
    let (ctl, apps, trusted, tenant) = (
        ctl_ns.name().to_string(),
        apps_ns.name().to_string(),
        trusted_ns.name().to_string(),
        tenant_ns.name().to_string(),
    );
    let label = unique("grp");
    let ps = unique("ps");
    let (main, short) = (unique("main"), unique("short"));
    let main_id = format!("group-clusterwide-{main}");
    let short_id = format!("group-clusterwide-{short}");
    let tenant_id = format!("group-namespaced-{tenant}.tenant-group");
    let object = format!("policy-server-{ps}");
    let (webhook_port, readiness_port) = free_ports();

    let dir = target_dir().join(format!("group-journey-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");

    let _binding = BindingGuard {
        cp,
        name: install_rbac(cp, &ctl, &label),
    };
    let kubeconfig = impersonating_kubeconfig(cp, &ctl, &dir);
    let _controller = Controller::start(&dir, &kubeconfig, &ctl, &label, &label, |_| {});

    let module = |name: &str| ps_support::module_uri(name).expect("sample policy built");
    let (privileged, allowlist, adversarial) = (
        module("pod-privileged-wapc"),
        module("namespace-allowlist-wapc"),
        module("adversarial-wapc"),
    );
    // Tenants may only use registry:// (or https://) modules.
    let registry = Registry::start();
    let tenant_module = registry.push_sample("pod-privileged-wapc");
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
  insecureSources: ["{registry_host}"]
---
apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicyGroup
metadata:
  name: {main}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  failurePolicy: Fail
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}
  namespaceSelector:
    matchExpressions:
      - {{key: kubernetes.io/metadata.name, operator: In, values: [{apps}, {trusted}]}}
  expression: "not_privileged() || trusted_namespace()"
  message: {GROUP_MESSAGE}
  policies:
    not_privileged:
      module: {privileged}
    trusted_namespace:
      module: {allowlist}
      settings: {{namespaces: [{trusted}]}}
---
apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicyGroup
metadata:
  name: {short}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  failurePolicy: Fail
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}
  namespaceSelector:
    matchLabels: {{kubernetes.io/metadata.name: {apps}}}
  objectSelector:
    matchLabels: {{short-circuit: "yes"}}
  expression: "fine() || stuck()"
  message: the short-circuit group denied
  policies:
    fine:
      module: {adversarial}
      settings: {{behaviour: accept}}
    stuck:
      module: {adversarial}
      settings: {{behaviour: loop}}
      timeoutEvalSeconds: 2
---
apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicyGroup
metadata:
  name: tenant-group
  namespace: {tenant}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  failurePolicy: Fail
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}
  expression: "not_privileged()"
  message: {TENANT_MESSAGE}
  policies:
    not_privileged:
      module: {tenant_module}
"#,
        registry_host = registry.host()
    ));

    // The controller writes the three groups; the policy-server serves them.
    let ids = [main_id.as_str(), short_id.as_str(), tenant_id.as_str()];
    let configmap = eventually("the ConfigMap with the groups", TIMEOUT, || {
        k.get_json(Some(&ctl), "configmap", &object).filter(|cm| {
            let yml = jstr(cm, "/data/policies.yml");
            ids.iter().all(|id| yml.contains(id))
        })
    });
    let digest =
        portcullis_config::content_digest(jstr(&configmap, "/data/policies.yml").as_bytes());
    let deployment = eventually("the policy-server Deployment", TIMEOUT, || {
        k.get_json(Some(&ctl), "deployment", &object)
    });
    let mut pod_sim = SimulatedPod::start(&k, &ctl, &deployment, &dir);
    let report = pod_sim.wait_serving(&digest, &ids, TIMEOUT);
    assert_eq!(
        report["policies"][&main_id]["expression"], "not_privileged() || trusted_namespace()",
        "{report}"
    );
    cp.route_service(
        &ctl,
        &object,
        443,
        SocketAddr::from(([127, 0, 0, 1], webhook_port)),
    );
    let selector = format!("policies.portcullis.dev/policy-server={ps}");
    let pod = eventually("the policy-server Pod", TIMEOUT, || {
        let out = k.ok(&["-n", &ctl, "get", "pods", "-l", &selector, "-o", "name"]);
        out.lines().next().map(str::to_string)
    });
    mark_ready(&k, &ctl, &pod);
    for (namespace, kind, name) in [
        (None, "capg", main.as_str()),
        (None, "capg", short.as_str()),
        (Some(tenant.as_str()), "apg", "tenant-group"),
    ] {
        eventually(&format!("{kind} {name} active"), TIMEOUT, || {
            (group_status(&k, namespace, kind, name) == "active").then_some(())
        });
    }
    for namespace in [&apps, &trusted, &tenant] {
        e2e::wait_for_default_service_account(&k, namespace);
    }

    // 1. A privileged Pod outside `trusted`: the group's message, a cause
    // per member that ran and denied.
    let denied =
        e2e::wait_until_rejected(&k, &e2e::privileged_pod("privileged", &apps), GROUP_MESSAGE);
    assert!(
        denied.contains(&format!("{main_id}.policies.portcullis.dev")),
        "{denied}"
    );
    let status = dry_run(cp, &e2e::privileged_pod("privileged", &apps))
        .expect_err("a privileged Pod outside the trusted namespace is refused");
    assert!(status.message.ends_with(GROUP_MESSAGE), "{status:?}");
    let causes = causes(&status);
    assert_eq!(causes.len(), 2, "{status:?}");
    assert_eq!(causes[0].0, "spec.policies.not_privileged");
    assert!(
        causes[0].1.contains("Privileged container is not allowed"),
        "{causes:?}"
    );
    assert_eq!(
        causes[1],
        (
            "spec.policies.trusted_namespace".to_string(),
            format!("namespace {apps} is not one of the allowed namespaces ({trusted})")
        )
    );

    // 2. The same Pod where the expression allows it.
    e2e::assert_pod_admitted(&k, &e2e::privileged_pod("privileged", &trusted));

    // 3. Short-circuit: an unprivileged Pod never reaches the second member
    // of the main group, and `stuck` never runs in the other one.
    let main_second = format!("{main_id}/trusted_namespace");
    let before = evaluations(readiness_port, &main_second);
    let mut labelled = e2e::unprivileged_pod("unprivileged", &apps);
    labelled["metadata"]["labels"]["short-circuit"] = "yes".into();
    e2e::assert_pod_admitted(&k, &labelled);
    assert_eq!(evaluations(readiness_port, &main_second), before);
    assert!(evaluations(readiness_port, &format!("{short_id}/fine")) >= 1);
    assert_eq!(evaluations(readiness_port, &format!("{short_id}/stuck")), 0);

    // 4. The AdmissionPolicyGroup: enforced in its namespace only.
    let status = dry_run(cp, &e2e::privileged_pod("privileged", &tenant))
        .expect_err("the tenant's group refuses a privileged Pod in its namespace");
    assert!(status.message.ends_with(TENANT_MESSAGE), "{status:?}");
    assert_eq!(causes_fields(&status), vec!["spec.policies.not_privileged"]);
    e2e::assert_pod_admitted(&k, &e2e::privileged_pod("privileged-2", &trusted));
    let tenant_hook = k
        .get_json(None, "validatingwebhookconfiguration", &tenant_id)
        .expect("the tenant group's webhook");
    assert_eq!(
        tenant_hook["webhooks"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        Value::from(tenant.clone()),
        "{tenant_hook}"
    );

    assert!(
        pod_sim.server.is_running(),
        "the policy-server kept running"
    );
}

fn causes_fields(status: &kube::core::Status) -> Vec<String> {
    causes(status).into_iter().map(|(field, _)| field).collect()
}
