//! The controller grants what policies declare (issue 11 item 4), asserted
//! on the real API server: the generated ClusterRole, Roles and bindings,
//! what the policy-server's ServiceAccount can then do (`kubectl auth
//! can-i`, i.e. the API server's own authorizer), the shrink when a policy
//! goes away, the token mounted only while a policy needs it, and the clean
//! up when the PolicyServer is deleted.

mod common;

use common::world::{TIMEOUT, World};
use common::{TEST_LABEL, eventually, jstr, unique};
use portcullis_tests::control_plane::TestNamespace;
use serde_json::Value;

/// `kubectl auth can-i VERB RESOURCE [-n NS]` as `user`.
fn can_i(w: &World, user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    } else {
        args.push("--all-namespaces");
    }
    let out = w.cp.kubectl(&args);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

fn cap(w: &World, name: &str, ps: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {name}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: registry://example/context-aware:v1
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}}]
  mutating: false
  failurePolicy: Ignore
  objectSelector:
    matchLabels: {{intercept-me: "{label}"}}
  contextAwareResources: {resources}
"#,
        label = w.label
    )
}

fn ap(w: &World, namespace: &str, name: &str, ps: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: AdmissionPolicy
metadata:
  name: {name}
  namespace: {namespace}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: registry://example/context-aware:v1
  rules: [{{apiGroups: [""], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}}]
  mutating: false
  failurePolicy: Ignore
  objectSelector:
    matchLabels: {{intercept-me: "{label}"}}
  contextAwareResources: {resources}
"#,
        label = w.label
    )
}

/// The rules of an RBAC object as `group/resource verbs` lines, sorted.
fn grants(role: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for rule in role["rules"].as_array().cloned().unwrap_or_default() {
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for group in rule["apiGroups"].as_array().cloned().unwrap_or_default() {
            for resource in rule["resources"].as_array().cloned().unwrap_or_default() {
                lines.push(format!(
                    "{}/{} {}",
                    group.as_str().unwrap_or_default(),
                    resource.as_str().unwrap_or_default(),
                    verbs.join(",")
                ));
            }
        }
    }
    lines.sort();
    lines
}

fn automount(w: &World, object: &str) -> Option<bool> {
    w.get_ns_json("deployment", object)?
        .pointer("/spec/template/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
}

#[test]
fn the_policy_server_may_read_exactly_what_its_policies_declare() {
    let w = World::new("rbac");
    let ps = unique("ps");
    let object = format!("policy-server-{ps}");
    let role = format!("portcullis-{object}");
    let sa_user = format!("system:serviceaccount:{}:{object}", w.ns());
    w.cp.apply(&w.policy_server(&ps, ""));

    // No context-aware policy: no token, no grant.
    let sa = eventually("the policy-server's ServiceAccount", TIMEOUT, || {
        w.get_ns_json("serviceaccount", &object)
    });
    assert_eq!(
        sa.pointer("/metadata/ownerReferences/0/name"),
        Some(&Value::from(ps.clone()))
    );
    eventually("the Deployment without a token", TIMEOUT, || {
        (automount(&w, &object) == Some(false)).then_some(())
    });
    let deploy = w.get_ns_json("deployment", &object).unwrap();
    assert_eq!(
        jstr(&deploy, "/spec/template/spec/serviceAccountName"),
        object
    );
    assert!(w.get_json(&["clusterrole", &role]).is_none());
    assert!(!can_i(&w, &sa_user, "list", "namespaces", None));

    // Two cluster-wide policies: the union of their resources, and only that.
    let first = unique("reads-namespaces");
    let second = unique("reads-services");
    w.cp.apply(&cap(
        &w,
        &first,
        &ps,
        "[{apiVersion: v1, kind: Namespace}, {apiVersion: apps/v1, kind: Deployment}]",
    ));
    w.cp.apply(&cap(
        &w,
        &second,
        &ps,
        "[{apiVersion: v1, kind: Service}, {apiVersion: authorization.k8s.io/v1, kind: SubjectAccessReview}]",
    ));
    let cluster_role = eventually("the ClusterRole with the union", TIMEOUT, || {
        w.get_json(&["clusterrole", &role])
            .filter(|r| grants(r).len() == 4)
    });
    assert_eq!(
        grants(&cluster_role),
        vec![
            "/namespaces get,list,watch",
            "/services get,list,watch",
            "apps/deployments get,list,watch",
            "authorization.k8s.io/subjectaccessreviews create",
        ]
    );
    let binding = w.get_json(&["clusterrolebinding", &role]).unwrap();
    assert_eq!(jstr(&binding, "/roleRef/name"), role);
    assert_eq!(jstr(&binding, "/subjects/0/name"), object);
    assert_eq!(jstr(&binding, "/subjects/0/namespace"), w.ns());
    eventually("the API server to authorize the grant", TIMEOUT, || {
        can_i(&w, &sa_user, "list", "namespaces", None).then_some(())
    });
    for (verb, resource) in [
        ("watch", "namespaces"),
        ("get", "services"),
        ("list", "deployments.apps"),
        ("create", "subjectaccessreviews.authorization.k8s.io"),
    ] {
        assert!(
            can_i(&w, &sa_user, verb, resource, None),
            "{verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("list", "secrets"),
        ("list", "configmaps"),
        ("create", "namespaces"),
        ("delete", "services"),
        ("list", "pods"),
    ] {
        assert!(
            !can_i(&w, &sa_user, verb, resource, None),
            "{verb} {resource}"
        );
    }
    eventually("the Deployment with a token", TIMEOUT, || {
        (automount(&w, &object) == Some(true)).then_some(())
    });

    // A namespaced policy reads its own namespace only.
    let team = TestNamespace::new("team");
    let other = TestNamespace::new("other");
    w.cp.apply(&ap(
        &w,
        team.name(),
        "reads-configmaps",
        &ps,
        "[{apiVersion: v1, kind: ConfigMap}, {apiVersion: v1, kind: Namespace}]",
    ));
    let ns_role = eventually("the Role in the tenant's namespace", TIMEOUT, || {
        w.get_json(&["-n", team.name(), "role", &role])
    });
    // Namespace is cluster-scoped: never granted to a namespaced policy.
    assert_eq!(grants(&ns_role), vec!["/configmaps get,list,watch"]);
    eventually("the RoleBinding", TIMEOUT, || {
        w.get_json(&["-n", team.name(), "rolebinding", &role])
    });
    eventually(
        "configmaps readable in the tenant's namespace",
        TIMEOUT,
        || can_i(&w, &sa_user, "list", "configmaps", Some(team.name())).then_some(()),
    );
    assert!(!can_i(
        &w,
        &sa_user,
        "list",
        "configmaps",
        Some(other.name())
    ));
    assert!(!can_i(&w, &sa_user, "list", "configmaps", None));
    let status = eventually("the refused resource in the status", TIMEOUT, || {
        let ps = w.get_json(&["ps", &ps])?;
        let conditions = ps["status"]["conditions"].as_array()?.clone();
        conditions
            .into_iter()
            .find(|c| c["type"] == "ContextAwareResourcesGranted")
            .filter(|c| c["status"] == "False")
    });
    assert!(
        jstr(&status, "/message").contains("Namespace is cluster-scoped"),
        "{status}"
    );

    // Shrink: the first policy goes, and with it namespaces and deployments.
    w.cp.kubectl_ok(&["delete", "cap", &first, "--wait=false"]);
    let shrunk = eventually("the ClusterRole shrunk", TIMEOUT, || {
        w.get_json(&["clusterrole", &role])
            .filter(|r| grants(r).len() == 2)
    });
    assert_eq!(
        grants(&shrunk),
        vec![
            "/services get,list,watch",
            "authorization.k8s.io/subjectaccessreviews create",
        ]
    );
    eventually("namespaces no longer readable", TIMEOUT, || {
        (!can_i(&w, &sa_user, "list", "namespaces", None)).then_some(())
    });
    assert!(can_i(&w, &sa_user, "list", "services", None));

    // The namespaced policy goes: its Role and RoleBinding too.
    w.cp.kubectl_ok(&[
        "-n",
        team.name(),
        "delete",
        "ap",
        "reads-configmaps",
        "--wait=false",
    ]);
    eventually("the tenant's Role deleted", TIMEOUT, || {
        w.get_json(&["-n", team.name(), "role", &role])
            .is_none()
            .then_some(())
    });
    assert!(
        w.get_json(&["-n", team.name(), "rolebinding", &role])
            .is_none()
    );

    // The last context-aware policy goes: no ClusterRole, no token.
    w.cp.kubectl_ok(&["delete", "cap", &second, "--wait=false"]);
    eventually("the ClusterRole deleted", TIMEOUT, || {
        w.get_json(&["clusterrole", &role]).is_none().then_some(())
    });
    assert!(w.get_json(&["clusterrolebinding", &role]).is_none());
    eventually("the Deployment without a token again", TIMEOUT, || {
        (automount(&w, &object) == Some(false)).then_some(())
    });

    // Deleting the PolicyServer removes what it was granted.
    let third = unique("reads-nodes");
    w.cp.apply(&cap(&w, &third, &ps, "[{apiVersion: v1, kind: Node}]"));
    eventually("a ClusterRole again", TIMEOUT, || {
        w.get_json(&["clusterrole", &role])
    });
    w.cp.kubectl_ok(&["delete", "ps", &ps, "--wait=false"]);
    eventually(
        "the ClusterRole gone with the PolicyServer",
        TIMEOUT,
        || {
            (w.get_json(&["clusterrole", &role]).is_none()
                && w.get_json(&["clusterrolebinding", &role]).is_none())
            .then_some(())
        },
    );
    w.cp.kubectl_ok(&["delete", "cap", &third, "--wait=false"]);
}
