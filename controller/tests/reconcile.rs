//! The reconcilers, run in-process against the shared control plane.
//!
//! Every test starts its own controller instance restricted (label selector)
//! to the objects of that test, with its own namespace as the controller
//! namespace, so the tests can run in parallel on one API server. There is no
//! kubelet: readiness of the policy-server is simulated by marking its Pods
//! Ready through the status subresource, after which kube-controller-manager
//! updates the ReplicaSet and Deployment status as in a real cluster.

mod common;

use std::time::Duration;

use common::world::{ReplicaMode, TIMEOUT, World, controller_user, decode, status_of};
use common::{TEST_LABEL, eventually, jstr, output_text, unique};
use portcullis_config::{PoliciesConfig, PolicyEntry};
use portcullis_tests::control_plane::TestNamespace;
use serde_json::Value;

#[test]
fn policy_server_children_and_cluster_policy_webhook_lifecycle() {
    let w = World::new("lifecycle");
    let ns = w.ns().to_string();
    let ps = unique("ps");
    let cap = unique("cap");
    let id = format!("clusterwide-{cap}");
    let object = format!("policy-server-{ps}");

    w.cp.apply(&w.policy_server(&ps, "  minAvailable: 1\n"));
    w.cp.apply(&format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {cap}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
  mode: monitor
  settings: {{a: 1}}
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}}
  mutating: false
  failurePolicy: Ignore
  timeoutSeconds: 5
  timeoutEvalSeconds: 3
  namespaceSelector:
    matchLabels: {{team: a}}
    matchExpressions: [{{key: env, operator: In, values: [prod]}}]
  objectSelector:
    matchLabels: {{intercept-me: "{label}"}}
  matchConditions:
    - {{name: not-kube-system, expression: "request.namespace != 'kube-system'"}}
"#,
        label = w.label
    ));

    // CA and serving certificate.
    let ca = eventually("CA secret", TIMEOUT, || {
        w.get_ns_json("secret", "portcullis-ca")
    });
    let ca_pem = decode(&ca, "/data/ca.crt");
    assert!(
        ca_pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "{ca_pem}"
    );
    let tls = eventually("serving cert", TIMEOUT, || w.get_ns_json("secret", &object));
    assert!(decode(&tls, "/data/tls.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(decode(&tls, "/data/tls.key").contains("PRIVATE KEY"));
    assert_eq!(decode(&tls, "/data/ca.crt"), ca_pem);
    assert_eq!(
        jstr(&tls, "/metadata/ownerReferences/0/kind"),
        "PolicyServer"
    );
    assert_eq!(jstr(&tls, "/metadata/ownerReferences/0/name"), ps);
    // The certificate covers the Service DNS name (checked with openssl if present).
    if let Ok(out) = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(decode(&tls, "/data/tls.crt").as_bytes())?;
            child.wait_with_output()
        })
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("DNS:{object}.{ns}.svc")), "{text}");
    }

    // ConfigMap with policies.yml, written with the config types.
    let cm = eventually("ConfigMap with the policy", TIMEOUT, || {
        w.get_ns_json("configmap", &object)
            .filter(|cm| jstr(cm, "/data/policies.yml").contains(&id))
    });
    let config = PoliciesConfig::from_slice(jstr(&cm, "/data/policies.yml").as_bytes()).unwrap();
    let PolicyEntry::Policy(entry) = &config.policies[&id] else {
        panic!("{config:?}");
    };
    assert_eq!(entry.policy_mode, portcullis_config::PolicyMode::Monitor);
    assert_eq!(entry.timeout_eval_seconds, Some(3));
    assert_eq!(entry.settings, serde_json::json!({"a": 1}));
    assert!(!entry.allowed_to_mutate);

    // Deployment.
    let deploy = eventually("Deployment", TIMEOUT, || {
        w.get_ns_json("deployment", &object)
    });
    let container = deploy.pointer("/spec/template/spec/containers/0").unwrap();
    assert_eq!(
        jstr(container, "/image"),
        "ghcr.io/portcullis/policy-server:test"
    );
    assert_eq!(
        jstr(container, "/readinessProbe/httpGet/path"),
        "/readiness"
    );
    assert_eq!(
        container.pointer("/readinessProbe/httpGet/port"),
        Some(&Value::from(w.replica.port))
    );
    assert_eq!(jstr(container, "/livenessProbe/httpGet/path"), "/livez");
    assert_eq!(
        container.pointer("/securityContext/readOnlyRootFilesystem"),
        Some(&Value::Bool(true))
    );
    let env: std::collections::BTreeMap<String, String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (jstr(e, "/name").to_string(), jstr(e, "/value").to_string()))
        .collect();
    assert_eq!(env["PORTCULLIS_CERT_FILE"], "/pki/tls.crt");
    assert_eq!(env["PORTCULLIS_KEY_FILE"], "/pki/tls.key");
    assert_eq!(env["PORTCULLIS_POLICIES"], "/config/policies.yml");
    assert_eq!(env["PORTCULLIS_POLICIES_DOWNLOAD_DIR"], "/tmp");
    assert_eq!(env["PORTCULLIS_PORT"], "8443");
    assert_eq!(
        env["PORTCULLIS_READINESS_PROBE_PORT"],
        w.replica.port.to_string()
    );
    assert_eq!(
        env["PORTCULLIS_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE"],
        ns
    );
    let volumes = deploy
        .pointer("/spec/template/spec/volumes")
        .unwrap()
        .to_string();
    assert!(
        volumes.contains(&format!(r#""secretName":"{object}""#)),
        "{volumes}"
    );
    assert!(
        volumes.contains(&format!(
            r#""configMap":{{"defaultMode":420,"name":"{object}"}}"#
        )),
        "{volumes}"
    );

    // Service and PDB.
    let svc = eventually("Service", TIMEOUT, || w.get_ns_json("service", &object));
    assert_eq!(svc.pointer("/spec/ports/0/port"), Some(&Value::from(443)));
    assert_eq!(
        svc.pointer("/spec/ports/0/targetPort"),
        Some(&Value::from(8443))
    );
    let pdb = eventually("PodDisruptionBudget", TIMEOUT, || {
        w.get_ns_json("pdb", &object)
    });
    assert_eq!(pdb.pointer("/spec/minAvailable"), Some(&Value::from(1)));

    // Not ready: pending, no webhook.
    eventually("policy pending", TIMEOUT, || {
        (status_of(&w, &["cap", &cap]) == "pending").then_some(())
    });
    assert!(
        w.get_json(&["validatingwebhookconfiguration", &id])
            .is_none()
    );

    // Ready: the webhook appears with the policy's fields, the policy is active.
    w.make_pods_ready(&ps);
    let hook = eventually("webhook", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &id])
    });
    let h = hook.pointer("/webhooks/0").unwrap();
    assert_eq!(jstr(h, "/clientConfig/service/namespace"), ns);
    assert_eq!(jstr(h, "/clientConfig/service/name"), object);
    assert_eq!(
        jstr(h, "/clientConfig/service/path"),
        format!("/validate/{id}")
    );
    assert_eq!(
        h.pointer("/clientConfig/service/port"),
        Some(&Value::from(443))
    );
    assert_eq!(decode(h, "/clientConfig/caBundle"), ca_pem);
    assert_eq!(jstr(h, "/failurePolicy"), "Ignore");
    assert_eq!(jstr(h, "/sideEffects"), "None");
    assert_eq!(h.pointer("/timeoutSeconds"), Some(&Value::from(5)));
    assert_eq!(jstr(h, "/rules/0/resources/0"), "configmaps");
    assert_eq!(jstr(h, "/rules/0/operations/0"), "CREATE");
    assert_eq!(jstr(h, "/namespaceSelector/matchLabels/team"), "a");
    let exprs = h
        .pointer("/namespaceSelector/matchExpressions")
        .unwrap()
        .to_string();
    assert!(exprs.contains(r#""key":"env""#), "{exprs}");
    assert!(
        exprs.contains(&format!(
            r#"{{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["{ns}"]}}"#
        )),
        "{exprs}"
    );
    assert_eq!(jstr(h, "/objectSelector/matchLabels/intercept-me"), w.label);
    assert_eq!(jstr(h, "/matchConditions/0/name"), "not-kube-system");
    assert_eq!(
        jstr(&hook, "/metadata/labels/app.kubernetes.io~1managed-by"),
        "portcullis-controller"
    );
    eventually("policy active", TIMEOUT, || {
        (status_of(&w, &["cap", &cap]) == "active").then_some(())
    });
    let status = w.get_json(&["cap", &cap]).unwrap();
    assert_eq!(jstr(&status, "/status/mode"), "monitor");
    assert_eq!(jstr(&status, "/status/conditions/0/type"), "PolicyActive");
    assert_eq!(jstr(&status, "/status/conditions/0/status"), "True");

    // Drift on the webhook is reverted.
    w.cp.kubectl_ok(&[
        "patch",
        "validatingwebhookconfiguration",
        &id,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/webhooks/0/clientConfig/service/path","value":"/tampered"},{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Fail"}]"#,
    ]);
    eventually("tampered webhook reverted", TIMEOUT, || {
        let hook = w.get_json(&["validatingwebhookconfiguration", &id])?;
        (jstr(&hook, "/webhooks/0/clientConfig/service/path") == format!("/validate/{id}")
            && jstr(&hook, "/webhooks/0/failurePolicy") == "Ignore")
            .then_some(())
    });

    // A deleted child comes back.
    let old_uid = jstr(&svc, "/metadata/uid").to_string();
    w.cp.kubectl_ok(&["-n", &ns, "delete", "service", &object]);
    let svc = eventually("Service recreated", TIMEOUT, || {
        w.get_ns_json("service", &object)
            .filter(|s| jstr(s, "/metadata/uid") != old_uid)
    });
    assert_eq!(svc.pointer("/spec/ports/0/port"), Some(&Value::from(443)));

    // Deleting the policy removes its webhook and its entry; the finalizer goes.
    w.cp.kubectl_ok(&["delete", "cap", &cap, "--wait=false"]);
    eventually("webhook removed", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &id])
            .is_none()
            .then_some(())
    });
    eventually("policy gone", TIMEOUT, || {
        w.get_json(&["cap", &cap]).is_none().then_some(())
    });
    eventually("ConfigMap without the policy", TIMEOUT, || {
        w.get_ns_json("configmap", &object)
            .filter(|cm| !jstr(cm, "/data/policies.yml").contains(&id))
    });

    // Deleting the PolicyServer: finalizer released, children garbage-collected.
    w.cp.kubectl_ok(&["delete", "ps", &ps, "--wait=false"]);
    eventually("PolicyServer gone", TIMEOUT, || {
        w.get_json(&["ps", &ps]).is_none().then_some(())
    });
}

#[test]
fn admission_policy_mutating_webhook_and_kind_switch() {
    let w = World::new("ap");
    let team = TestNamespace::new("team");
    let ps = unique("ps");
    let id = format!("namespaced-{}.{}", team.name(), "add-labels");
    w.cp.apply(&w.policy_server(&ps, ""));
    let policy = |mutating: bool| {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicy
metadata:
  name: add-labels
  namespace: {team}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: registry://ghcr.io/kubewarden/policies/safe-labels:v1.0.0
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE, UPDATE], scope: "*"}}
  mutating: {mutating}
  failurePolicy: Ignore
  objectSelector:
    matchLabels: {{intercept-me: "{label}"}}
"#,
            team = team.name(),
            label = w.label
        )
    };
    w.cp.apply(&policy(true));
    w.make_pods_ready(&ps);
    let hook = eventually("mutating webhook", TIMEOUT, || {
        w.get_json(&["mutatingwebhookconfiguration", &id])
    });
    let h = hook.pointer("/webhooks/0").unwrap();
    assert_eq!(
        jstr(h, "/clientConfig/service/path"),
        format!("/validate/{id}")
    );
    assert_eq!(jstr(h, "/rules/0/scope"), "Namespaced");
    assert_eq!(
        jstr(
            h,
            "/namespaceSelector/matchLabels/kubernetes.io~1metadata.name"
        ),
        team.name()
    );
    assert!(h.pointer("/namespaceSelector/matchExpressions").is_none());
    assert_eq!(
        jstr(
            &hook,
            "/metadata/annotations/policies.portcullis.dev~1policy-namespace"
        ),
        team.name()
    );
    eventually("policy active", TIMEOUT, || {
        (status_of(&w, &["-n", team.name(), "ap", "add-labels"]) == "active").then_some(())
    });
    let cm = w
        .get_ns_json("configmap", &format!("policy-server-{ps}"))
        .unwrap();
    let config = PoliciesConfig::from_slice(jstr(&cm, "/data/policies.yml").as_bytes()).unwrap();
    let PolicyEntry::Policy(entry) = &config.policies[&id] else {
        panic!("{config:?}");
    };
    assert!(entry.allowed_to_mutate);

    // mutating: true → false swaps the webhook kind.
    w.cp.apply(&policy(false));
    eventually("validating webhook instead", TIMEOUT, || {
        let validating = w.get_json(&["validatingwebhookconfiguration", &id]);
        let mutating = w.get_json(&["mutatingwebhookconfiguration", &id]);
        (validating.is_some() && mutating.is_none()).then_some(())
    });

    w.cp.kubectl_ok(&[
        "-n",
        team.name(),
        "delete",
        "ap",
        "add-labels",
        "--wait=false",
    ]);
    eventually("webhook removed", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &id])
            .is_none()
            .then_some(())
    });
    w.cp.kubectl_ok(&["delete", "ps", &ps, "--wait=false"]);
    eventually("PolicyServer gone", TIMEOUT, || {
        w.get_json(&["ps", &ps]).is_none().then_some(())
    });
}

#[test]
fn policy_without_its_server_is_scheduled_then_pending() {
    let w = World::new("sched");
    let ps = unique("later");
    let cap = unique("waiting");
    w.cp.apply(&format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {cap}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: registry://example/policy:v1
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}}]
  mutating: false
  objectSelector:
    matchLabels: {{intercept-me: "{label}"}}
"#,
        label = w.label
    ));
    eventually("scheduled", TIMEOUT, || {
        (status_of(&w, &["cap", &cap]) == "scheduled").then_some(())
    });
    let status = w.get_json(&["cap", &cap]).unwrap();
    assert_eq!(
        jstr(&status, "/status/conditions/0/reason"),
        "PolicyServerMissing"
    );
    w.cp.apply(&w.policy_server(&ps, ""));
    eventually("pending", TIMEOUT, || {
        (status_of(&w, &["cap", &cap]) == "pending").then_some(())
    });
    // Deleting the server while the policy is active removes the webhook and
    // the policy goes back to scheduled.
    w.make_pods_ready(&ps);
    let id = format!("clusterwide-{cap}");
    eventually("webhook", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &id])
    });
    w.cp.kubectl_ok(&["delete", "ps", &ps, "--wait=false"]);
    eventually("webhook removed with the server", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &id])
            .is_none()
            .then_some(())
    });
    eventually("scheduled again", TIMEOUT, || {
        (status_of(&w, &["cap", &cap]) == "scheduled").then_some(())
    });
    w.cp.kubectl_ok(&["delete", "cap", &cap, "--wait=false"]);
    eventually("policy gone", TIMEOUT, || {
        w.get_json(&["cap", &cap]).is_none().then_some(())
    });
    let out = w.cp.kubectl(&["get", "cap", &cap]);
    assert!(!out.status.success(), "{}", output_text(&out));
}

/// Sets up a PolicyServer with one active ClusterAdmissionPolicy; returns
/// (policy server, policy, policy id).
fn active_policy(w: &World) -> (String, String, String) {
    let ps = unique("ps");
    let cap = unique("cap");
    let id = format!("clusterwide-{cap}");
    w.cp.apply(&w.policy_server(&ps, "  maxUnavailable: 1\n"));
    w.cp.apply(&format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {cap}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: registry://example/policy:v1
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}}]
  mutating: false
  failurePolicy: Ignore
  objectSelector:
    matchLabels: {{intercept-me: "{label}"}}
"#,
        label = w.label
    ));
    w.make_pods_ready(&ps);
    eventually("policy active", TIMEOUT, || {
        (status_of(w, &["cap", &cap]) == "active").then_some(())
    });
    (ps, cap, id)
}

/// Writes (create/update/patch/delete) the controller of `w` sent, from the
/// audit log, starting at byte `offset`.
fn controller_writes(w: &World, offset: usize) -> Vec<String> {
    let user = controller_user(w.ns());
    let log = std::fs::read_to_string(w.cp.audit_log_path()).unwrap_or_default();
    log.get(offset..)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| jstr(e, "/impersonatedUser/username") == user)
        .filter(|e| matches!(jstr(e, "/verb"), "create" | "update" | "patch" | "delete"))
        .map(|e| {
            format!(
                "{} {} {}/{} {}",
                jstr(&e, "/verb"),
                jstr(&e, "/objectRef/resource"),
                jstr(&e, "/objectRef/namespace"),
                jstr(&e, "/objectRef/name"),
                jstr(&e, "/objectRef/subresource")
            )
        })
        .collect()
}

#[test]
fn steady_state_makes_no_writes() {
    let w = World::new("steady");
    let (ps, cap, id) = active_policy(&w);
    let object = format!("policy-server-{ps}");
    let versions = || -> Vec<(String, String)> {
        let mut all = vec![
            ("ps".to_string(), w.get_json(&["ps", &ps])),
            ("cap".to_string(), w.get_json(&["cap", &cap])),
            (
                "webhook".to_string(),
                w.get_json(&["validatingwebhookconfiguration", &id]),
            ),
            ("ca".to_string(), w.get_ns_json("secret", "portcullis-ca")),
        ];
        for kind in ["secret", "configmap", "deployment", "service", "pdb"] {
            all.push((kind.to_string(), w.get_ns_json(kind, &object)));
        }
        all.into_iter()
            .map(|(k, v)| {
                let rv = v
                    .map(|v| jstr(&v, "/metadata/resourceVersion").to_string())
                    .unwrap_or_else(|| "missing".to_string());
                (k, rv)
            })
            .collect()
    };
    // Let the echoes of the last writes (status updates) settle.
    std::thread::sleep(Duration::from_secs(5));
    let before = versions();
    assert!(before.iter().all(|(_, rv)| rv != "missing"), "{before:?}");
    let offset = std::fs::metadata(w.cp.audit_log_path())
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(30));
    let after = versions();
    assert_eq!(before, after, "objects were modified in steady state");
    let writes = controller_writes(&w, offset);
    assert!(
        writes.is_empty(),
        "the controller wrote in steady state: {writes:#?}"
    );
    // The audit filter does see the controller's writes (those of the set-up).
    let setup = controller_writes(&w, 0);
    assert!(
        !setup.is_empty(),
        "no controller writes in the audit log at all"
    );
    eprintln!("controller writes during set-up: {}", setup.len());
}

#[test]
fn serving_certificate_is_renewed_before_expiry() {
    let w = World::new("renew");
    let (ps, _cap, id) = active_policy(&w);
    let object = format!("policy-server-{ps}");
    let secret = w.get_ns_json("secret", &object).unwrap();
    let old_cert = decode(&secret, "/data/tls.crt");
    let ca_before = w.get_ns_json("secret", "portcullis-ca").unwrap();
    // Pretend the certificate expires now.
    w.cp.kubectl_ok(&[
        "-n",
        w.ns(),
        "annotate",
        "--overwrite",
        "secret",
        &object,
        "policies.portcullis.dev/cert-not-after=0",
    ]);
    let renewed = eventually("renewed certificate", TIMEOUT, || {
        w.get_ns_json("secret", &object)
            .filter(|s| decode(s, "/data/tls.crt") != old_cert)
    });
    let not_after: i64 = jstr(
        &renewed,
        "/metadata/annotations/policies.portcullis.dev~1cert-not-after",
    )
    .parse()
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(not_after > now + 300 * 86_400, "{not_after}");
    // The CA, and so the webhook's caBundle, did not change.
    let ca_after = w.get_ns_json("secret", "portcullis-ca").unwrap();
    assert_eq!(
        decode(&ca_before, "/data/ca.crt"),
        decode(&ca_after, "/data/ca.crt")
    );
    let hook = w
        .get_json(&["validatingwebhookconfiguration", &id])
        .unwrap();
    assert_eq!(
        decode(&hook, "/webhooks/0/clientConfig/caBundle"),
        decode(&ca_after, "/data/ca.crt")
    );
    // The new certificate is signed by the CA.
    let dir = std::env::temp_dir().join(format!("renew-{}", w.label));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crt"), decode(&ca_after, "/data/ca.crt")).unwrap();
    std::fs::write(dir.join("tls.crt"), decode(&renewed, "/data/tls.crt")).unwrap();
    if let Ok(out) = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("ca.crt"))
        .arg(dir.join("tls.crt"))
        .output()
    {
        assert!(out.status.success(), "{}", output_text(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn binary_runs_with_kubeconfig_and_namespace_from_env() {
    let w = World::start("binary", true);
    let (ps, _cap, id) = active_policy(&w);
    let hook = w
        .get_json(&["validatingwebhookconfiguration", &id])
        .expect("webhook");
    assert_eq!(
        jstr(&hook, "/webhooks/0/clientConfig/service/namespace"),
        w.ns()
    );
    assert_eq!(
        jstr(&hook, "/webhooks/0/clientConfig/service/name"),
        format!("policy-server-{ps}")
    );
}

#[test]
fn webhook_waits_until_every_replica_serves_the_current_configuration() {
    let w = World::new("digest");
    w.replica.set(ReplicaMode::Stale);
    let ps = unique("ps");
    let cap = unique("cap");
    let id = format!("clusterwide-{cap}");
    w.cp.apply(&w.policy_server(&ps, ""));
    let policy = |name: &str| {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {name}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: registry://example/policy:v1
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}}]
  mutating: false
  failurePolicy: Ignore
  objectSelector:
    matchLabels: {{intercept-me: "{label}"}}
"#,
            label = w.label
        )
    };
    w.cp.apply(&policy(&cap));
    w.make_pods_ready(&ps);
    // The Deployment is ready but the replica serves an older configuration.
    let reason = |name: &str| {
        w.get_json(&["cap", name])
            .map(|v| {
                (
                    jstr(&v, "/status/policyStatus").to_string(),
                    jstr(&v, "/status/conditions/0/reason").to_string(),
                    jstr(&v, "/status/conditions/0/message").to_string(),
                )
            })
            .unwrap_or_default()
    };
    let (_, _, message) = eventually("configuration mismatch", TIMEOUT, || {
        let r = reason(&cap);
        (r.0 == "pending" && r.1 == "ConfigurationVersionMismatch").then_some(r)
    });
    assert!(
        message.contains("serves configuration sha256:stale, expected sha256:"),
        "{message}"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        w.get_json(&["validatingwebhookconfiguration", &id])
            .is_none(),
        "webhook written before the replica serves the configuration"
    );

    // The replica reloads: the policy becomes active without any Kubernetes event.
    w.replica.set(ReplicaMode::Honest {
        failing: Vec::new(),
    });
    eventually("active", TIMEOUT, || {
        (reason(&cap).0 == "active").then_some(())
    });
    eventually("webhook", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &id])
    });

    // A policy that fails to load on the replica stays pending with the reason.
    let broken = unique("broken");
    let broken_id = format!("clusterwide-{broken}");
    w.replica.set(ReplicaMode::Honest {
        failing: vec![broken_id.clone()],
    });
    w.cp.apply(&policy(&broken));
    let (_, _, message) = eventually("load failure reported", TIMEOUT, || {
        let r = reason(&broken);
        (r.0 == "pending" && r.1 == "PolicyLoadFailed").then_some(r)
    });
    assert!(message.contains("settings are invalid: boom"), "{message}");
    assert!(
        w.get_json(&["validatingwebhookconfiguration", &broken_id])
            .is_none()
    );
    // The first policy is unaffected.
    assert_eq!(reason(&cap).0, "active");
}

#[test]
fn ca_rotation_keeps_the_old_ca_trusted_until_it_expires() {
    let w = World::new("rotate");
    let (ps, _cap, id) = active_policy(&w);
    let object = format!("policy-server-{ps}");
    let ca = w.get_ns_json("secret", "portcullis-ca").unwrap();
    let old_ca = decode(&ca, "/data/ca.crt");
    eventually("webhook with the CA", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &id])
            .filter(|h| decode(h, "/webhooks/0/clientConfig/caBundle") == old_ca)
    });

    // The CA expires in 30 days (renewal starts 60 days before): a new one
    // is made, the old one is kept.
    let in_30_days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 30 * 86_400;
    w.cp.kubectl_ok(&[
        "-n",
        w.ns(),
        "annotate",
        "--overwrite",
        "secret",
        "portcullis-ca",
        &format!("policies.portcullis.dev/cert-not-after={in_30_days}"),
    ]);
    let rotated = eventually("rotated CA", TIMEOUT, || {
        w.get_ns_json("secret", "portcullis-ca")
            .filter(|s| decode(s, "/data/ca.crt") != old_ca)
    });
    let new_ca = decode(&rotated, "/data/ca.crt");
    assert_eq!(decode(&rotated, "/data/old-ca.crt"), old_ca);
    // Webhooks trust both while serving certificates move to the new CA.
    eventually("caBundle with both CAs", TIMEOUT, || {
        let hook = w.get_json(&["validatingwebhookconfiguration", &id])?;
        let bundle = decode(&hook, "/webhooks/0/clientConfig/caBundle");
        (bundle.contains(&new_ca) && bundle.contains(&old_ca)).then_some(())
    });
    let serving = eventually("serving certificate from the new CA", TIMEOUT, || {
        w.get_ns_json("secret", &object)
            .filter(|s| decode(s, "/data/ca.crt") == new_ca)
    });
    let dir = std::env::temp_dir().join(format!("rotate-{}", w.label));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crt"), &new_ca).unwrap();
    std::fs::write(dir.join("tls.crt"), decode(&serving, "/data/tls.crt")).unwrap();
    if let Ok(out) = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("ca.crt"))
        .arg(dir.join("tls.crt"))
        .output()
    {
        assert!(out.status.success(), "{}", output_text(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);

    // Once the old CA has expired it leaves the bundle.
    w.cp.kubectl_ok(&[
        "-n",
        w.ns(),
        "annotate",
        "--overwrite",
        "secret",
        "portcullis-ca",
        "policies.portcullis.dev/old-ca-not-after=0",
    ]);
    eventually("old CA dropped", TIMEOUT, || {
        w.get_ns_json("secret", "portcullis-ca")
            .filter(|s| jstr(s, "/data/old-ca.crt").is_empty())
    });
    eventually("caBundle with the new CA only", TIMEOUT, || {
        let hook = w.get_json(&["validatingwebhookconfiguration", &id])?;
        (decode(&hook, "/webhooks/0/clientConfig/caBundle") == new_ca).then_some(())
    });
    let ca = w.get_ns_json("secret", "portcullis-ca").unwrap();
    assert_eq!(decode(&ca, "/data/ca.crt"), new_ca, "the current CA stays");
}
