//! Policy groups (ClusterAdmissionPolicyGroup, AdmissionPolicyGroup) on the
//! real API server: the CRDs' CEL rules refuse invalid groups with a clear
//! message, and the controller writes a valid group's entry into the
//! policy-server's `policies.yml` (Kubewarden's group format) and registers
//! its validating webhook once the policy-server serves it.
//!
//! These tests assert on the controller's objects (the fake replica of the
//! reconcile tests reports every id of the ConfigMap as loaded); verdicts of
//! groups from a real policy-server are in `group_journey.rs`.

mod common;

use std::time::Duration;

use common::world::World;
use common::{TEST_LABEL, assert_rejected, control_plane, eventually, jstr, unique};
use portcullis_config::{PoliciesConfig, PolicyEntry};
use portcullis_tests::control_plane::TestNamespace;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A ClusterAdmissionPolicyGroup named `name`: a minimal spec's `rules`,
/// then `spec` (YAML indented by two spaces).
fn capg(name: &str, spec: &str) -> String {
    format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicyGroup
metadata:
  name: {name}
spec:
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}
{spec}"#
    )
}

const MEMBERS: &str = r#"  expression: "privileged() || trusted()"
  message: the Pod is privileged outside the trusted namespace
  policies:
    privileged:
      module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
    trusted:
      module: registry://ghcr.io/kubewarden/policies/namespace-check:v0.1.0
      settings: {namespaces: [trusted]}
"#;

#[test]
fn invalid_groups_are_refused_with_a_clear_message() {
    let cp = control_plane();
    // At least one member.
    assert_rejected(
        cp,
        &capg(
            &unique("empty"),
            "  expression: \"true\"\n  message: m\n  policies: {}\n",
        ),
        "a policy group needs at least one member in policies",
    );
    // The message is required.
    assert_rejected(
        cp,
        &capg(
            &unique("no-message"),
            "  expression: \"a()\"\n  policies:\n    a: {module: \"registry://example/a:v1\"}\n",
        ),
        "message is required",
    );
    // Member names are CEL identifiers, and not reserved words.
    for bad in ["not-an-identifier", "1abc", "in", "namespace", "true"] {
        assert_rejected(
            cp,
            &capg(
                &unique("names"),
                &format!(
                    "  expression: \"x()\"\n  message: m\n  policies:\n    \"{bad}\": {{module: \"registry://example/a:v1\"}}\n"
                ),
            ),
            "member names must be CEL identifiers",
        );
    }
    // Member timeouts fit the group's: each, and their sum.
    assert_rejected(
        cp,
        &capg(
            &unique("timeouts"),
            "  timeoutSeconds: 5\n  expression: \"a()\"\n  message: m\n  policies:\n    a: {module: \"registry://example/a:v1\", timeoutEvalSeconds: 6}\n",
        ),
        "a member's timeoutEvalSeconds must not be greater than the group's timeoutSeconds",
    );
    assert_rejected(
        cp,
        &capg(
            &unique("sum"),
            "  timeoutSeconds: 5\n  expression: \"a() && b()\"\n  message: m\n  policies:\n    a: {module: \"registry://example/a:v1\", timeoutEvalSeconds: 3}\n    b: {module: \"registry://example/b:v1\", timeoutEvalSeconds: 3}\n",
        ),
        "the members' timeoutEvalSeconds add up to more than the group's timeoutSeconds",
    );
    // An expression is required.
    assert_rejected(
        cp,
        &capg(
            &unique("no-expression"),
            "  message: m\n  policies:\n    a: {module: \"registry://example/a:v1\"}\n",
        ),
        "spec.expression: Required value",
    );
    // A namespaced group's members use registry:// or https:// only.
    let ns = TestNamespace::new("apg-rules");
    assert_rejected(
        cp,
        &format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicyGroup
metadata: {{name: files, namespace: {}}}
spec:
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}]
  expression: "a()"
  message: m
  policies:
    a: {{module: "file:///etc/passwd"}}
"#,
            ns.name()
        ),
        "namespaced policies may only use registry:// and https:// modules",
    );
    // A valid group is accepted, with the defaults of every policy kind.
    let ok = unique("valid");
    cp.apply(&capg(&ok, MEMBERS));
    let spec = cp.kubectl_ok(&[
        "get",
        "capg",
        &ok,
        "-o",
        "jsonpath={.spec.policyServer} {.spec.mode} {.spec.timeoutSeconds} {.spec.backgroundAudit}",
    ]);
    assert_eq!(spec, "default protect 10 true");
    // Printer columns (no Mutating: groups are always validating).
    let table = cp.kubectl_ok(&["get", "capg", &ok, "-o", "wide"]);
    for column in [
        "POLICY SERVER",
        "BACKGROUNDAUDIT",
        "MODE",
        "OBSERVED MODE",
        "STATUS",
    ] {
        assert!(table.contains(column), "column {column} missing:\n{table}");
    }
    assert!(!table.contains("MUTATING"), "{table}");
    let short = cp.kubectl_ok(&["api-resources", "--api-group=policies.portcullis.dev"]);
    for s in [" capg ", " apg "] {
        assert!(short.contains(s), "short name {s:?} missing:\n{short}");
    }
    cp.kubectl_ok(&["delete", "capg", &ok, "--wait=false"]);
}

/// `manifest` with the test's label on its metadata.
fn labelled(manifest: &str, label: &str) -> String {
    manifest.replacen(
        "metadata:\n",
        &format!("metadata:\n  labels: {{{TEST_LABEL}: {label}}}\n"),
        1,
    )
}

#[test]
fn a_group_is_written_to_the_policy_server_and_gets_its_webhook() {
    let w = World::new("groups");
    let ps = unique("ps");
    w.cp.apply(&w.policy_server(&ps, ""));
    let name = unique("group");
    let id = format!("group-clusterwide-{name}");
    let manifest = capg(&name, MEMBERS).replace(
        "spec:\n",
        &format!(
            "spec:\n  policyServer: {ps}\n  failurePolicy: Ignore\n  objectSelector:\n    matchLabels: {{intercept-me: \"{}\"}}\n",
            w.label
        ),
    );
    w.cp.apply(&labelled(&manifest, &w.label));

    // The group entry, in Kubewarden's format, in the ConfigMap.
    let object = format!("policy-server-{ps}");
    let cm = eventually("the ConfigMap with the group", TIMEOUT, || {
        w.get_ns_json("configmap", &object)
            .filter(|cm| jstr(cm, "/data/policies.yml").contains(&id))
    });
    let config = PoliciesConfig::from_slice(jstr(&cm, "/data/policies.yml").as_bytes()).unwrap();
    let PolicyEntry::Group(group) = &config.policies[&id] else {
        panic!("not a group entry: {config:?}");
    };
    assert_eq!(group.expression, "privileged() || trusted()");
    assert_eq!(
        group.message,
        "the Pod is privileged outside the trusted namespace"
    );
    assert_eq!(group.policy_mode, portcullis_config::PolicyMode::Protect);
    assert_eq!(
        group.policies.keys().collect::<Vec<_>>(),
        vec!["privileged", "trusted"]
    );
    assert_eq!(
        group.policies["trusted"].settings,
        serde_json::json!({"namespaces": ["trusted"]})
    );
    assert_eq!(
        group.policies["trusted"].host_capabilities,
        vec!["*".to_string()]
    );

    // Its validating webhook, once the replica serves it.
    w.make_pods_ready(&ps);
    let hook = eventually("the group's webhook", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &id])
    });
    let h = hook.pointer("/webhooks/0").unwrap();
    assert_eq!(jstr(h, "/name"), format!("{id}.policies.portcullis.dev"));
    assert_eq!(
        jstr(h, "/clientConfig/service/path"),
        format!("/validate/{id}")
    );
    assert_eq!(jstr(h, "/clientConfig/service/name"), object);
    assert_eq!(jstr(h, "/failurePolicy"), "Ignore");
    assert_eq!(jstr(h, "/rules/0/resources/0"), "pods");
    assert!(
        w.get_json(&["mutatingwebhookconfiguration", &id]).is_none(),
        "a group is never mutating"
    );
    eventually("group active", TIMEOUT, || {
        let v = w.get_json(&["capg", &name])?;
        (jstr(&v, "/status/policyStatus") == "active"
            && jstr(&v, "/status/conditions/0/type") == "PolicyActive")
            .then_some(())
    });

    // A namespaced group: its own namespace only, and its own id.
    let team = TestNamespace::new("team");
    let apg = format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicyGroup
metadata:
  name: tenant-group
  namespace: {ns}
spec:
  policyServer: {ps}
  failurePolicy: Ignore
  objectSelector:
    matchLabels: {{intercept-me: "{label}"}}
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE], scope: "*"}}
  expression: "a()"
  message: denied by the tenant's group
  policies:
    a: {{module: "registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2"}}
"#,
        ns = team.name(),
        label = w.label
    );
    w.cp.apply(&labelled(&apg, &w.label));
    let apg_id = format!("group-namespaced-{}.tenant-group", team.name());
    let hook = eventually("the namespaced group's webhook", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &apg_id])
    });
    let h = hook.pointer("/webhooks/0").unwrap();
    assert_eq!(
        jstr(
            h,
            "/namespaceSelector/matchLabels/kubernetes.io~1metadata.name"
        ),
        team.name()
    );
    assert_eq!(jstr(h, "/rules/0/scope"), "Namespaced");
    eventually("namespaced group active", TIMEOUT, || {
        let v = w.get_json(&["-n", team.name(), "apg", "tenant-group"])?;
        (jstr(&v, "/status/policyStatus") == "active").then_some(())
    });

    // Deleting a group removes its webhook and its entry; the ConfigMap
    // changes (hot reload), the Deployment's pod template does not.
    let template = w
        .get_ns_json("deployment", &object)
        .map(|d| d["spec"]["template"].clone())
        .unwrap();
    w.cp.kubectl_ok(&["delete", "capg", &name, "--wait=false"]);
    eventually("webhook removed", TIMEOUT, || {
        w.get_json(&["validatingwebhookconfiguration", &id])
            .is_none()
            .then_some(())
    });
    eventually("ConfigMap without the group", TIMEOUT, || {
        w.get_ns_json("configmap", &object)
            .filter(|cm| !jstr(cm, "/data/policies.yml").contains(&id))
    });
    assert_eq!(
        w.get_ns_json("deployment", &object)
            .map(|d| d["spec"]["template"].clone())
            .unwrap(),
        template
    );
    w.cp.kubectl_ok(&[
        "-n",
        team.name(),
        "delete",
        "apg",
        "tenant-group",
        "--wait=false",
    ]);
    w.cp.kubectl_ok(&["delete", "ps", &ps, "--wait=false"]);
    eventually("PolicyServer gone", TIMEOUT, || {
        w.get_json(&["ps", &ps]).is_none().then_some(())
    });
}
