//! The seed journey, end to end: a PolicyServer and a ClusterAdmissionPolicy
//! are applied, and a privileged Pod is then denied by a real `policy-server`
//! configured only from what the controller wrote.
//!
//! Real: the API server and kube-controller-manager (shared test control
//! plane), the `portcullis-controller` binary (`--selector`, `KUBECONFIG`,
//! `PORTCULLIS_NAMESPACE`, impersonating a ServiceAccount bound only to
//! `controller/deploy/rbac.yaml`), the `policy-server` binary, the
//! `pod-privileged-wapc` policy module, TLS from the API server to the
//! policy-server (verified against the controller's CA and serving
//! certificate for `policy-server-<name>.<ns>.svc`), the webhook call, the
//! controller's `/readiness` polling of the replica (config digest).
//!
//! Simulated (there is no kubelet, no container runtime and no cluster
//! network):
//! - **The Pod's container.** The test runs the policy-server process itself,
//!   on 127.0.0.1, with the environment of the Deployment's container (read
//!   from the Deployment the controller created and asserted on), its mount
//!   paths (`/config`, `/pki`, `/tmp`) mapped to a local directory, and the
//!   explicit flags `--policies --cert-file --key-file --port
//!   --readiness-probe-port` taken from that environment, plus `--addr
//!   127.0.0.1`, JSON logs and a shared compiled-module cache (test speed).
//! - **The ConfigMap and Secret volumes.** The test writes the ConfigMap's
//!   and the Secret's keys the way the kubelet's atomic writer does
//!   (`..<version>/` directory, `..data` symlink swapped by a rename, one
//!   symlink per key), and on a ConfigMap change rewrites them the same way.
//! - **Pod readiness.** The Deployment's Pod is marked Ready with podIP
//!   127.0.0.1 through the status subresource (kube-controller-manager then
//!   updates the Deployment status); the controller therefore polls the real
//!   policy-server's `/readiness` on 127.0.0.1:`readinessProbePort`.
//! - **The Service.** The API server's webhook calls to
//!   `<ns>/policy-server-<name>:443` are routed to 127.0.0.1:`webhookPort`
//!   (`ControlPlane::route_service`) instead of going through kube-proxy.
//!
//! Both ports are free local ports chosen by the test and set as the
//! PolicyServer's `webhookPort` and `readinessProbePort`.
//!
//! Asserted on the way: the Deployment's env, probe and volumes, the Service
//! ports, the ConfigMap's digest annotation, the webhook's service
//! reference, `caBundle` and `failurePolicy`, and (from the audit log) that
//! the children and the webhook were written as the controller's
//! ServiceAccount. An unprivileged Pod is admitted.
//!
//! Then, hot reload: the policy's settings change (`skip_init_containers:
//! true`), the controller rewrites the ConfigMap, the policy goes `pending`
//! (`ConfigurationVersionMismatch`: the replica still serves the old digest),
//! the test updates the mounted file as the kubelet would, the same
//! policy-server process reloads it, the controller sees the new digest and
//! the policy is `active` again; a Pod with a privileged init container is
//! then admitted, and neither the Deployment's pod template nor the Pod
//! changed (no restart needed).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::pod::{SimulatedPod, free_ports, mark_ready, readiness};
use common::{
    BindingGuard, Controller, TEST_LABEL, control_plane, eventually, impersonating_kubeconfig,
    install_rbac, jstr, unique,
};
use portcullis_tests::control_plane::{TestNamespace, target_dir};
use portcullis_tests::e2e::{self, Kubectl};
use portcullis_tests::policy_server as ps_support;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);
/// The pod-privileged policy's message for a privileged init container.
const INIT_DENIAL: &str = "Privileged init container is not allowed";

fn policy_status(k: &Kubectl, cap: &str) -> (String, String) {
    let v = k
        .get_json(None, "clusteradmissionpolicy", cap)
        .unwrap_or(Value::Null);
    let reason = v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PolicyActive"))
        .map(|c| jstr(c, "/reason").to_string())
        .unwrap_or_default();
    (jstr(&v, "/status/policyStatus").to_string(), reason)
}

#[test]
fn privileged_pod_is_denied_by_a_policy_server_configured_by_the_controller() {
    let started = Instant::now();
    let cp = control_plane();
    let k = cp.kubectl_client();
    let ctl_ns = TestNamespace::new("seed");
    let apps_ns = TestNamespace::new("seed-apps");
    let (ctl, apps) = (ctl_ns.name().to_string(), apps_ns.name().to_string());
    let label = unique("seed");
    let ps = unique("ps");
    let cap = unique("cap");
    let id = format!("clusterwide-{cap}");
    let object = format!("policy-server-{ps}");
    let webhook_name = format!("{id}.policies.portcullis.dev");
    let (webhook_port, readiness_port) = free_ports();

    let dir = target_dir().join(format!("seed-journey-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");

    // The controller: the binary, as deployed, with only its RBAC.
    let _binding = BindingGuard {
        cp,
        name: install_rbac(cp, &ctl, &label),
    };
    let kubeconfig = impersonating_kubeconfig(cp, &ctl, &dir);
    let _controller = Controller::start(&dir, &kubeconfig, &ctl, &label, &label, |_| {});

    // 1. The user's two objects.
    let module = ps_support::module_uri("pod-privileged-wapc").expect("sample policy built");
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
"#
    ));
    let cap_manifest = |settings: &str| {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {cap}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: {module}
  settings: {settings}
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}
  mutating: false
  failurePolicy: Fail
  namespaceSelector:
    matchLabels: {{kubernetes.io/metadata.name: {apps}}}
"#
        )
    };
    cp.apply(&cap_manifest("{}"));

    // 2. What the controller wrote: ConfigMap, Secret, Deployment, Service.
    let configmap = eventually("the policy-server ConfigMap", TIMEOUT, || {
        k.get_json(Some(&ctl), "configmap", &object)
            .filter(|cm| jstr(cm, "/data/policies.yml").contains(&id))
    });
    let _serving_secret = eventually("the serving-certificate Secret", TIMEOUT, || {
        k.get_json(Some(&ctl), "secret", &object).filter(|s| {
            !jstr(s, "/data/tls.crt").is_empty() && !jstr(s, "/data/tls.key").is_empty()
        })
    });
    let deployment = eventually("the policy-server Deployment", TIMEOUT, || {
        k.get_json(Some(&ctl), "deployment", &object)
    });
    let service = eventually("the policy-server Service", TIMEOUT, || {
        k.get_json(Some(&ctl), "service", &object)
    });
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": webhook_port}]),
        "Service ports"
    );
    let policies_yml = jstr(&configmap, "/data/policies.yml").to_string();
    let digest = portcullis_config::content_digest(policies_yml.as_bytes());
    assert_eq!(
        jstr(
            &configmap,
            "/metadata/annotations/policies.portcullis.dev~1config-digest"
        ),
        digest
    );
    let parsed = portcullis_config::PoliciesConfig::from_slice(policies_yml.as_bytes())
        .expect("policies.yml parses");
    assert_eq!(
        parsed.policies.keys().collect::<Vec<_>>(),
        vec![&id],
        "policies.yml:\n{policies_yml}"
    );
    assert!(policies_yml.contains(&module), "module in:\n{policies_yml}");

    let container = deployment
        .pointer("/spec/template/spec/containers/0")
        .cloned()
        .expect("a container");
    assert_eq!(container["name"], "policy-server");
    let env: BTreeMap<String, String> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (jstr(e, "/name").to_string(), jstr(e, "/value").to_string()))
        .collect();
    let expected_env = [
        ("PORTCULLIS_CERT_FILE", "/pki/tls.crt".to_string()),
        ("PORTCULLIS_KEY_FILE", "/pki/tls.key".to_string()),
        ("PORTCULLIS_POLICIES", "/config/policies.yml".to_string()),
        ("PORTCULLIS_POLICIES_DOWNLOAD_DIR", "/tmp".to_string()),
        ("PORTCULLIS_PORT", webhook_port.to_string()),
        (
            "PORTCULLIS_READINESS_PROBE_PORT",
            readiness_port.to_string(),
        ),
        (
            "PORTCULLIS_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE",
            ctl.clone(),
        ),
    ];
    for (name, value) in &expected_env {
        assert_eq!(env.get(*name), Some(value), "env {name} in {env:?}");
    }
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readiness", "port": readiness_port, "scheme": "HTTP"})
    );

    // The volumes, as the kubelet would mount them, under `dir/<mountPath>`.
    let volumes: BTreeMap<String, Value> = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (jstr(v, "/name").to_string(), v.clone()))
        .collect();
    for volume in volumes.values() {
        if volume.get("configMap").is_some() {
            assert_eq!(jstr(volume, "/configMap/name"), object);
        } else if volume.get("secret").is_some() {
            assert_eq!(jstr(volume, "/secret/secretName"), object);
        } else {
            assert!(volume.get("emptyDir").is_some(), "volume {volume}");
        }
    }
    // The policy-server, as the container would run it.
    let mut pod_sim = SimulatedPod::start(&k, &ctl, &deployment, &dir);
    let report = pod_sim.wait_serving(&digest, &[&id], TIMEOUT);
    assert_eq!(report["ready"], true, "{report}");

    // 3. The Service reaches the policy-server; the Pod is Ready at 127.0.0.1.
    cp.route_service(
        &ctl,
        &object,
        443,
        SocketAddr::from(([127, 0, 0, 1], webhook_port)),
    );
    let selector = format!("policies.portcullis.dev/policy-server={ps}");
    let pods = eventually("the policy-server Pod", TIMEOUT, || {
        let out = k.ok(&["-n", &ctl, "get", "pods", "-l", &selector, "-o", "name"]);
        let pods: Vec<String> = out.lines().map(str::to_string).collect();
        (!pods.is_empty()).then_some(pods)
    });
    assert_eq!(pods.len(), 1, "replicas: 1 → {pods:?}");
    // What the kubelet would report once the container passes its probe.
    let mark_ready = |pod: &str| mark_ready(&k, &ctl, pod);
    let pod = pods[0].clone();
    mark_ready(&pod);
    let pod_uid = k.ok(&["-n", &ctl, "get", &pod, "-o", "jsonpath={.metadata.uid}"]);

    // 4. Active: the webhook is registered and the policy-server enforces it.
    eventually("the policy to be active", TIMEOUT, || {
        (policy_status(&k, &cap).0 == "active").then_some(())
    });
    let vwc = k
        .get_json(None, "validatingwebhookconfiguration", &id)
        .expect("webhook");
    let hook = &vwc["webhooks"][0];
    assert_eq!(hook["name"], json!(webhook_name));
    assert_eq!(
        hook["clientConfig"]["service"],
        json!({"namespace": ctl, "name": object, "port": 443, "path": format!("/validate/{id}")})
    );
    assert_eq!(hook["failurePolicy"], "Fail");
    let ca = k
        .get_json(Some(&ctl), "secret", "portcullis-ca")
        .expect("CA Secret");
    assert_eq!(
        jstr(hook, "/clientConfig/caBundle"),
        jstr(&ca, "/data/ca.crt"),
        "caBundle is the controller's CA"
    );

    e2e::wait_for_default_service_account(&k, &apps);
    e2e::assert_privileged_pod_denied(&k, &apps, "privileged", &webhook_name);
    e2e::assert_pod_admitted(&k, &e2e::unprivileged_pod("unprivileged", &apps));
    let init_pod = e2e::fixture_pod("pod-init-privileged.json", "init-privileged", &apps);
    e2e::assert_pod_rejected(&k, &init_pod, INIT_DENIAL);
    let active_at = started.elapsed();

    // 5. Hot reload of a settings change, without restarting anything.
    let template_before = deployment["spec"]["template"].clone();
    cp.apply(&cap_manifest("{skip_init_containers: true}"));
    let configmap2 = eventually("the ConfigMap with the new settings", TIMEOUT, || {
        k.get_json(Some(&ctl), "configmap", &object)
            .filter(|cm| jstr(cm, "/data/policies.yml").contains("skip_init_containers"))
    });
    let digest2 =
        portcullis_config::content_digest(jstr(&configmap2, "/data/policies.yml").as_bytes());
    assert_ne!(digest2, digest);
    // The replica still serves the old file: the controller notices.
    eventually(
        "the policy pending with ConfigurationVersionMismatch",
        TIMEOUT,
        || {
            let (status, reason) = policy_status(&k, &cap);
            (status == "pending" && reason == "ConfigurationVersionMismatch").then_some(())
        },
    );
    // The kubelet's ConfigMap volume update.
    pod_sim.update_config(&configmap2);
    let server = &mut pod_sim.server;
    e2e::eventually("the policy-server to reload", TIMEOUT, || {
        if !server.is_running() {
            panic!("policy-server exited:\n{}", server.log_tail(40));
        }
        let report = readiness(readiness_port).ok_or("no /readiness answer")?;
        if report["configDigest"] == json!(digest2) && report["policies"][&id]["state"] == "loaded"
        {
            Ok(())
        } else {
            Err(report.to_string())
        }
    });
    eventually("the policy to be active again", TIMEOUT, || {
        (policy_status(&k, &cap) == ("active".to_string(), "WebhookRegistered".to_string()))
            .then_some(())
    });
    e2e::wait_until_admitted(&k, &init_pod);
    e2e::assert_pod_admitted(&k, &init_pod);
    e2e::assert_pod_rejected(
        &k,
        &e2e::privileged_pod("privileged-2", &apps),
        e2e::PRIVILEGED_DENIAL,
    );
    assert!(
        pod_sim.server.is_running(),
        "the policy-server was not restarted"
    );
    let deployment2 = k
        .get_json(Some(&ctl), "deployment", &object)
        .expect("deployment");
    assert_eq!(
        deployment2["spec"]["template"], template_before,
        "a ConfigMap change must not change the pod template"
    );
    let pods2 = k.ok(&[
        "-n",
        &ctl,
        "get",
        "pods",
        "-l",
        &selector,
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ]);
    assert_eq!(pods2.trim(), pod_uid, "the Pod was not replaced");

    // 6. A policy-server upgrade: a new image rolls the Deployment. The
    // webhook stays in place (and enforces) while the rollout is under way,
    // and the policy is active again on the new Pod.
    let upgraded_image = "ghcr.io/portcullis/policy-server:test-upgrade";
    let webhooks_before = k
        .get_json(None, "validatingwebhookconfiguration", &id)
        .expect("webhook")["webhooks"]
        .clone();
    k.ok(&[
        "patch",
        "policyserver",
        &ps,
        "--type=merge",
        "-p",
        &json!({"spec": {"image": upgraded_image}}).to_string(),
    ]);
    eventually("the Deployment to run the new image", TIMEOUT, || {
        k.get_json(Some(&ctl), "deployment", &object)
            .filter(|d| jstr(d, "/spec/template/spec/containers/0/image") == upgraded_image)
    });
    eventually(
        "the policy pending (PolicyServerNotReady) during the rollout",
        TIMEOUT,
        || {
            (policy_status(&k, &cap) == ("pending".to_string(), "PolicyServerNotReady".to_string()))
                .then_some(())
        },
    );
    // The surge Pod of the new ReplicaSet exists next to the old, Ready one.
    let new_pod = eventually("the new ReplicaSet's Pod", TIMEOUT, || {
        let out = k.ok(&[
            "-n",
            &ctl,
            "get",
            "pods",
            "-l",
            &selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(_, uid)| *uid != pod_uid.trim())
            .map(|(name, _)| format!("pod/{name}"))
    });
    // Enforcement does not lapse: the webhook is unchanged and still denies.
    assert_eq!(
        k.get_json(None, "validatingwebhookconfiguration", &id)
            .expect("the webhook stays during the rollout")["webhooks"],
        webhooks_before,
        "the webhook is not rewritten by an image change"
    );
    e2e::assert_pod_rejected(
        &k,
        &e2e::privileged_pod("privileged-during-upgrade", &apps),
        e2e::PRIVILEGED_DENIAL,
    );
    // The new container replaces the old process (one address stands in for
    // both Pods here) and serves the same configuration; its Pod turns Ready.
    pod_sim.restart("policy-server-upgraded.log");
    let upgraded = &mut pod_sim.server;
    e2e::eventually("the upgraded policy-server to serve", TIMEOUT, || {
        if !upgraded.is_running() {
            panic!("policy-server exited:\n{}", upgraded.log_tail(40));
        }
        let report = readiness(readiness_port).ok_or("no /readiness answer")?;
        if report["configDigest"] == json!(digest2) && report["ready"] == true {
            Ok(())
        } else {
            Err(report.to_string())
        }
    });
    mark_ready(&new_pod);
    eventually("the policy active again after the rollout", TIMEOUT, || {
        (policy_status(&k, &cap) == ("active".to_string(), "WebhookRegistered".to_string()))
            .then_some(())
    });
    let remaining = k.ok(&[
        "-n",
        &ctl,
        "get",
        "pods",
        "-l",
        &selector,
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ]);
    assert!(
        !remaining.contains(pod_uid.trim()),
        "the old Pod is gone after the rollout: {remaining}"
    );
    e2e::assert_privileged_pod_denied(&k, &apps, "privileged-after-upgrade", &webhook_name);
    e2e::assert_pod_admitted(
        &k,
        &e2e::unprivileged_pod("unprivileged-after-upgrade", &apps),
    );

    // Every object above was written by the controller as its ServiceAccount.
    let user = format!("system:serviceaccount:{ctl}:portcullis-controller");
    let audit = std::fs::read_to_string(cp.audit_log_path()).unwrap_or_default();
    let written: std::collections::BTreeSet<String> = audit
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| jstr(e, "/impersonatedUser/username") == user)
        .filter(|e| matches!(jstr(e, "/verb"), "create" | "update" | "patch"))
        .filter(|e| {
            e["responseStatus"]["code"]
                .as_u64()
                .is_some_and(|c| c < 300)
        })
        .map(|e| {
            format!(
                "{} {}",
                jstr(&e, "/objectRef/resource"),
                jstr(&e, "/objectRef/name")
            )
        })
        .collect();
    for want in [
        format!("configmaps {object}"),
        format!("secrets {object}"),
        format!("deployments {object}"),
        format!("services {object}"),
        format!("validatingwebhookconfigurations {id}"),
    ] {
        assert!(
            written.contains(&want),
            "no successful write of {want} by {user}: {written:?}"
        );
    }

    eprintln!(
        "seed journey: active and enforcing after {active_at:?}, hot reload done after {:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
