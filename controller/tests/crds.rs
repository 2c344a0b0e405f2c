//! The CRDs against a real kube-apiserver: installation, Kubewarden
//! compatibility and every CEL rule.

mod common;

use common::{assert_rejected, control_plane, output_text, try_apply, unique};

fn cap(name: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {name}
spec:
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
  rules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["pods"]
      operations: ["CREATE", "UPDATE"]
  mutating: false
{extra_spec}"#
    )
}

#[test]
fn crds_install_and_become_established() {
    let cp = control_plane();
    for name in [
        "policyservers.policies.portcullis.dev",
        "clusteradmissionpolicies.policies.portcullis.dev",
        "admissionpolicies.policies.portcullis.dev",
    ] {
        let established = cp.kubectl_ok(&[
            "get",
            "crd",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Established')].status}",
        ]);
        assert_eq!(established, "True", "{name}");
    }
    let short = cp.kubectl_ok(&["api-resources", "--api-group=policies.portcullis.dev"]);
    for s in [" ps ", " cap ", " ap "] {
        assert!(short.contains(s), "short name {s:?} missing:\n{short}");
    }
}

/// The ClusterAdmissionPolicy example of the Kubewarden docs, with only the
/// apiVersion changed.
#[test]
fn kubewarden_manifest_with_only_api_version_changed_is_accepted() {
    let cp = control_plane();
    let name = unique("privileged-pods");
    let manifest = format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {name}
  annotations:
    io.kubewarden.policy.severity: medium
    io.kubewarden.policy.category: PSP
spec:
  policyServer: reserved-instance-for-tenant-a
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
  mode: monitor
  rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
    operations:
    - CREATE
    - UPDATE
  mutating: false
  backgroundAudit: true
  failurePolicy: Ignore
  matchPolicy: Equivalent
  sideEffects: None
  timeoutSeconds: 5
  timeoutEvalSeconds: 3
  message: privileged pods are not allowed
  namespaceSelector:
    matchExpressions:
    - key: environment
      operator: In
      values: ["prod", "staging"]
  objectSelector:
    matchLabels:
      app: web
  matchConditions:
  - name: not-kube-system
    expression: "request.namespace != 'kube-system'"
  settings:
    allowed: [a, b]
    nested: {{x: 1}}
  contextAwareResources:
  - apiVersion: v1
    kind: Namespace
"#
    );
    cp.apply(&manifest);
    let mode = cp.kubectl_ok(&["get", "cap", &name, "-o", "jsonpath={.spec.mode}"]);
    assert_eq!(mode, "monitor");
    let settings = cp.kubectl_ok(&[
        "get",
        "cap",
        &name,
        "-o",
        "jsonpath={.spec.settings.nested.x}",
    ]);
    assert_eq!(settings, "1", "settings are preserved unchanged");
    // The printer columns include the Kubewarden ones.
    let table = cp.kubectl_ok(&["get", "cap", &name, "-o", "wide"]);
    for column in [
        "POLICY SERVER",
        "MUTATING",
        "BACKGROUNDAUDIT",
        "MODE",
        "OBSERVED MODE",
        "STATUS",
        "SEVERITY",
        "CATEGORY",
    ] {
        assert!(table.contains(column), "column {column} missing:\n{table}");
    }
    assert!(table.contains("medium"), "{table}");

    // Defaults: policyServer "default", mode protect, timeoutSeconds 10, backgroundAudit true.
    let minimal = unique("minimal");
    cp.apply(&cap(&minimal, ""));
    let spec = cp.kubectl_ok(&[
        "get",
        "cap",
        &minimal,
        "-o",
        "jsonpath={.spec.policyServer} {.spec.mode} {.spec.timeoutSeconds} {.spec.backgroundAudit}",
    ]);
    assert_eq!(spec, "default protect 10 true");
    // Selectable field used by the controller.
    let selected = cp.kubectl_ok(&[
        "get",
        "cap",
        "--field-selector",
        "spec.policyServer=reserved-instance-for-tenant-a",
        "-o",
        "name",
    ]);
    assert!(
        selected.contains(&name) && !selected.contains(&minimal),
        "{selected}"
    );
    cp.kubectl_ok(&["delete", "cap", &name, &minimal, "--wait=false"]);
}

#[test]
fn policy_server_is_immutable() {
    let cp = control_plane();
    let name = unique("immutable");
    cp.apply(&cap(&name, "  policyServer: a\n"));
    assert_rejected(
        cp,
        &cap(&name, "  policyServer: b\n"),
        "policyServer is immutable",
    );
    // Re-applying the same value is fine.
    cp.apply(&cap(&name, "  policyServer: a\n  message: changed\n"));

    let ns = portcullis_tests::control_plane::TestNamespace::new("ap-immutable");
    let ap = |server: &str| {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicy
metadata:
  name: p
  namespace: {}
spec:
  policyServer: {server}
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}]
  mutating: false
"#,
            ns.name()
        )
    };
    cp.apply(&ap("a"));
    assert_rejected(cp, &ap("b"), "policyServer is immutable");
    cp.kubectl_ok(&["delete", "cap", &name, "--wait=false"]);
}

#[test]
fn mode_cannot_go_from_protect_to_monitor() {
    let cp = control_plane();
    let name = unique("modes");
    cp.apply(&cap(&name, "  mode: monitor\n"));
    // monitor → protect is allowed.
    cp.apply(&cap(&name, "  mode: protect\n"));
    assert_rejected(
        cp,
        &cap(&name, "  mode: monitor\n"),
        "mode cannot change from protect to monitor",
    );
    // Omitting mode defaults to protect: no transition, accepted.
    cp.apply(&cap(&name, ""));
    cp.kubectl_ok(&["delete", "cap", &name, "--wait=false"]);
}

#[test]
fn timeout_eval_seconds_must_not_exceed_timeout_seconds() {
    let cp = control_plane();
    assert_rejected(
        cp,
        &cap(
            &unique("timeouts"),
            "  timeoutSeconds: 5\n  timeoutEvalSeconds: 6\n",
        ),
        "timeoutEvalSeconds must not be greater than timeoutSeconds",
    );
    // Against the default timeoutSeconds (10).
    assert_rejected(
        cp,
        &cap(&unique("timeouts"), "  timeoutEvalSeconds: 11\n"),
        "timeoutEvalSeconds must not be greater than timeoutSeconds",
    );
    let ok = unique("timeouts");
    cp.apply(&cap(&ok, "  timeoutSeconds: 5\n  timeoutEvalSeconds: 5\n"));
    cp.kubectl_ok(&["delete", "cap", &ok, "--wait=false"]);
}

#[test]
fn rules_must_be_non_empty() {
    let cp = control_plane();
    let policy = |rules: &str| {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {}
spec:
  module: registry://example/policy:v1
  mutating: false
  rules: {rules}
"#,
            unique("rules")
        )
    };
    assert_rejected(
        cp,
        &policy("[]"),
        "spec.rules: Invalid value: 0: spec.rules in body should have at least 1 items",
    );
    assert_rejected(
        cp,
        &policy(r#"[{apiVersions: [v1], resources: [pods], operations: []}]"#),
        "spec.rules[0].operations in body should have at least 1 items",
    );
    assert_rejected(
        cp,
        &policy(r#"[{apiVersions: [], resources: [pods], operations: [CREATE]}]"#),
        "spec.rules[0].apiVersions in body should have at least 1 items",
    );
    assert_rejected(
        cp,
        &policy(r#"[{apiVersions: [v1], resources: [""], operations: [CREATE]}]"#),
        "spec.rules[0].resources[0] in body should be at least 1 chars long",
    );
    assert_rejected(
        cp,
        &policy(r#"[{apiVersions: [v1], operations: [CREATE]}]"#),
        "spec.rules[0].resources: Required value",
    );
    let out = try_apply(
        cp,
        &policy(r#"[{apiVersions: [v1], resources: [pods], operations: [CREATE]}]"#),
    );
    assert!(out.status.success(), "{}", output_text(&out));
}

fn policy_server(name: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: PolicyServer
metadata:
  name: {name}
spec:
  image: ghcr.io/portcullis/policy-server:latest
  replicas: 1
{extra}"#
    )
}

#[test]
fn policy_server_names_fit_derived_names() {
    let cp = control_plane();
    let long = format!("x{}", "a".repeat(49));
    assert_eq!(long.len(), 50);
    assert_rejected(
        cp,
        &policy_server(&long, ""),
        "name must be at most 49 characters so that policy-server-<name> fits in 63",
    );
    assert_rejected(
        cp,
        &policy_server("dotted.name", ""),
        "name must be a DNS label",
    );
    let ok = format!("y{}", "b".repeat(48));
    cp.apply(&policy_server(&ok, ""));
    cp.kubectl_ok(&["delete", "ps", &ok, "--wait=false"]);
}

#[test]
fn policy_server_spec_rules() {
    let cp = control_plane();
    assert_rejected(
        cp,
        &policy_server(&unique("pdb"), "  minAvailable: 1\n  maxUnavailable: 1\n"),
        "minAvailable and maxUnavailable cannot both be set",
    );
    assert_rejected(
        cp,
        &policy_server(&unique("ports"), "  webhookPort: 8081\n"),
        "webhookPort and readinessProbePort must differ",
    );
    let ok = unique("ok");
    cp.apply(&policy_server(&ok, "  maxUnavailable: 50%\n"));
    let columns = cp.kubectl_ok(&["get", "ps", &ok]);
    assert!(
        columns.contains("REPLICAS") && columns.contains("IMAGE"),
        "{columns}"
    );
    let ports = cp.kubectl_ok(&[
        "get",
        "ps",
        &ok,
        "-o",
        "jsonpath={.spec.webhookPort} {.spec.readinessProbePort}",
    ]);
    assert_eq!(ports, "8443 8081");
    cp.kubectl_ok(&["delete", "ps", &ok, "--wait=false"]);
}

#[test]
fn admission_policy_rules_cannot_target_everything_or_policy_reports() {
    let cp = control_plane();
    let ns = portcullis_tests::control_plane::TestNamespace::new("ap-rules");
    let ap = |name: &str, rule: &str| {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicy
metadata:
  name: {name}
  namespace: {}
spec:
  module: registry://example/policy:v1
  mutating: false
  rules: [{rule}]
"#,
            ns.name()
        )
    };
    assert_rejected(
        cp,
        &ap(
            "all",
            r#"{apiGroups: ["*"], apiVersions: ["*"], resources: ["*"], operations: ["*"]}"#,
        ),
        "AdmissionPolicy rules cannot target every resource of every API group",
    );
    assert_rejected(
        cp,
        &ap(
            "all-sub",
            r#"{apiGroups: ["*"], apiVersions: [v1], resources: ["*/*"], operations: [CREATE]}"#,
        ),
        "AdmissionPolicy rules cannot target every resource of every API group",
    );
    for (group, resource) in [
        ("wgpolicyk8s.io", "policyreports"),
        ("openreports.io", "reports"),
        ("openreports.io", "*"),
        ("*", "policyreports"),
    ] {
        assert_rejected(
            cp,
            &ap(
                "reports",
                &format!(
                    r#"{{apiGroups: ["{group}"], apiVersions: ["*"], resources: ["{resource}"], operations: [CREATE]}}"#
                ),
            ),
            "AdmissionPolicy rules cannot target policy reports (wgpolicyk8s.io, openreports.io)",
        );
    }
    // Wildcard group with specific resources, and wildcard resources in one group, are fine.
    cp.apply(&ap(
        "ok-1",
        r#"{apiGroups: ["*"], apiVersions: ["*"], resources: [pods], operations: ["*"]}"#,
    ));
    cp.apply(&ap(
        "ok-2",
        r#"{apiGroups: [apps], apiVersions: ["*"], resources: ["*"], operations: ["*"]}"#,
    ));
    // A ClusterAdmissionPolicy may target everything.
    let name = unique("everything");
    cp.apply(&cap(&name, "").replace(
        r#"    - apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["pods"]"#,
        r#"    - apiGroups: ["*"]
      apiVersions: ["*"]
      resources: ["*"]"#,
    ));
    let groups = cp.kubectl_ok(&[
        "get",
        "cap",
        &name,
        "-o",
        "jsonpath={.spec.rules[0].apiGroups[0]}",
    ]);
    assert_eq!(groups, "*");
    cp.kubectl_ok(&["delete", "cap", &name, "--wait=false"]);
}

/// Issue 10 item 4: a tenant's AdmissionPolicy may only fetch its module
/// from a registry or over HTTPS; the API server refuses the rest.
#[test]
fn admission_policy_modules_are_registry_or_https_only() {
    let cp = control_plane();
    let ns = portcullis_tests::control_plane::TestNamespace::new("ap-modules");
    let ap = |name: &str, module: &str| {
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicy
metadata:
  name: {name}
  namespace: {}
spec:
  module: "{module}"
  mutating: false
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}]
"#,
            ns.name()
        )
    };
    for (name, module) in [
        ("file", "file:///etc/passwd"),
        ("dev-zero", "file:///dev/zero"),
        ("http", "http://internal.example/policy.wasm"),
        ("bare", "ghcr.io/kubewarden/policies/pod-privileged:v0.2.2"),
        ("upper", "FILE:///etc/passwd"),
    ] {
        assert_rejected(
            cp,
            &ap(name, module),
            "namespaced policies may only use registry:// and https:// modules",
        );
    }
    cp.apply(&ap(
        "registry",
        "registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2",
    ));
    cp.apply(&ap(
        "https",
        "https://policies.example.com/pod-privileged.wasm",
    ));
    // Cluster-wide policies are a cluster admin's: every source.
    let name = unique("file-module");
    cp.apply(&cap(&name, "").replace(
        "registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2",
        "file:///policies/pod-privileged.wasm",
    ));
    cp.kubectl_ok(&["delete", "cap", &name, "--wait=false"]);
}

/// Issue 10 item 5: names are bounded so that the policy id, and the webhook
/// named after it, fit the lengths Kubernetes allows.
#[test]
fn policy_names_are_bounded_so_that_their_ids_fit() {
    let cp = control_plane();
    assert_rejected(
        cp,
        &cap(&"a".repeat(218), ""),
        "name must be at most 217 characters so that the policy id clusterwide-<name> fits in a webhook name",
    );
    let ok = "b".repeat(217);
    cp.apply(&cap(&ok, ""));
    cp.kubectl_ok(&["delete", "cap", &ok, "--wait=false"]);
}
