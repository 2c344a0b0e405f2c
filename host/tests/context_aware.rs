//! Context-aware policies against the real API server of the test harness:
//! the waPC samples (built on `kubewarden-policy-sdk`'s own helpers) and the
//! component samples read Ingresses from the watch cache and ask
//! SubjectAccessReviews; undeclared resources and ungranted capabilities are
//! refused clearly while the other policies serve; without a cluster,
//! context-aware policies fail closed.

mod common;

use std::time::Duration;

use common::context::{
    apply, eventually, ingress, ingress_review, kube_options, pod_review, policy, probe,
    probe_answer, probe_refusal,
};
use common::{Options, TestServer, fixture, policies_yaml};
use portcullis_host::capabilities::KubeConfigSource;
use portcullis_tests::control_plane::{ControlPlane, TestNamespace};
use serde_json::{Value, json};

const INGRESS_GRANTS: &str = "contextAwareResources:\n  - apiVersion: networking.k8s.io/v1\n    kind: Ingress\nhostCapabilities: [\"kubernetes/list_resources_all\"]\n";

/// Rego policies get the declared resources as `data.inventory`
/// (Gatekeeper) from the same watch caches: the Gatekeeper library's unique
/// Ingress host, unchanged, against the real API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatekeeper_policies_read_the_inventory_from_the_watch_cache() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new("gk-inventory");
    let taken = format!("shop.{}.example.com", ns.name());
    apply(cp, &ingress(ns.name(), "shop", &[&taken]));
    let yaml = policies_yaml(&[
        (
            "unique-gk",
            policy(
                "unique-ingress-host-gatekeeper",
                "executionMode: gatekeeper\ncontextAwareResources:\n  - apiVersion: networking.k8s.io/v1\n    kind: Ingress\n",
            ),
        ),
        // The same module without contextAwareResources sees no inventory.
        (
            "unique-gk-blind",
            policy(
                "unique-ingress-host-gatekeeper",
                "executionMode: gatekeeper\n",
            ),
        ),
    ]);
    let server = TestServer::start(&yaml, kube_options(cp)).await;

    let conflict = format!("ingress host conflicts with an existing ingress <{taken}>");
    let response = server
        .validate(
            "unique-gk",
            &ingress_review("elsewhere", "web", &[&taken], "CREATE"),
        )
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["message"], conflict, "{response}");
    let response = server
        .validate(
            "unique-gk",
            &ingress_review(ns.name(), "shop", &[&taken], "UPDATE"),
        )
        .await;
    assert_eq!(response["allowed"], true, "its own host: {response}");
    let response = server
        .validate(
            "unique-gk-blind",
            &ingress_review("elsewhere", "web", &[&taken], "CREATE"),
        )
        .await;
    assert_eq!(
        response["allowed"], true,
        "no declared resources: {response}"
    );

    // The inventory follows the cluster.
    let free = format!("free.{}.example.com", ns.name());
    let review = ingress_review("elsewhere", "web", &[&free], "CREATE");
    let response = server.validate("unique-gk", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    apply(cp, &ingress(ns.name(), "blog", &[&free]));
    eventually(
        "the new Ingress in the inventory",
        Duration::from_secs(20),
        || async { server.validate("unique-gk", &review).await["allowed"] == false },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_ingress_host_is_served_from_the_watch_cache_in_both_abis() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new("unique-host");
    let taken = format!("shop.{}.example.com", ns.name());
    apply(cp, &ingress(ns.name(), "shop", &[&taken]));

    let ids = ["unique-wapc", "unique-component"];
    let yaml = policies_yaml(&[
        (ids[0], policy("unique-ingress-host-wapc", INGRESS_GRANTS)),
        (
            ids[1],
            policy("unique-ingress-host-component", INGRESS_GRANTS),
        ),
        ("privileged", policy("pod-privileged-wapc", "")),
    ]);
    let server = TestServer::start(&yaml, kube_options(cp)).await;

    let free = format!("free.{}.example.com", ns.name());
    for id in ids {
        // The cache synced before the server reported ready: the very first
        // evaluation sees the Ingress created before the start.
        let response = server
            .validate(id, &ingress_review("elsewhere", "web", &[&taken], "CREATE"))
            .await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
        assert_eq!(response["status"]["code"], 409, "{id}: {response}");
        assert_eq!(
            response["status"]["message"],
            format!(
                "Ingress host must be unique in the cluster: {taken} (already used by Ingress {}/shop)",
                ns.name()
            ),
            "{id}"
        );
        let response = server
            .validate(id, &ingress_review(ns.name(), "shop", &[&taken], "UPDATE"))
            .await;
        assert_eq!(
            response["allowed"], true,
            "{id}: an Ingress keeps its own host: {response}"
        );
        let response = server
            .validate(id, &ingress_review("elsewhere", "web", &[&free], "CREATE"))
            .await;
        assert_eq!(response["allowed"], true, "{id}: {response}");
    }

    // The cache follows the cluster: a new Ingress takes the free host...
    apply(cp, &ingress(ns.name(), "blog", &[&free]));
    for id in ids {
        eventually(
            "the new Ingress in the cache",
            Duration::from_secs(20),
            || async {
                let response = server
                    .validate(id, &ingress_review("elsewhere", "web", &[&free], "CREATE"))
                    .await;
                response["allowed"] == false
            },
        )
        .await;
    }
    // ...and a deleted one frees its host.
    cp.kubectl_ok(&["delete", "ingress", "shop", "-n", ns.name()]);
    for id in ids {
        eventually(
            "the deleted Ingress gone from the cache",
            Duration::from_secs(20),
            || async {
                let response = server
                    .validate(id, &ingress_review("elsewhere", "web", &[&taken], "CREATE"))
                    .await;
                response["allowed"] == true
            },
        )
        .await;
    }

    let response = server
        .validate("privileged", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_resources_and_ungranted_capabilities_are_refused_while_others_serve() {
    let cp = ControlPlane::shared();
    let yaml = policies_yaml(&[
        (
            "undeclared-wapc",
            policy(
                "unique-ingress-host-wapc",
                "hostCapabilities: [\"kubernetes/*\"]\n",
            ),
        ),
        (
            "undeclared-component",
            policy(
                "unique-ingress-host-component",
                "hostCapabilities: [\"kubernetes/*\"]\n",
            ),
        ),
        (
            "ungranted-wapc",
            policy(
                "unique-ingress-host-wapc",
                "contextAwareResources:\n  - {apiVersion: networking.k8s.io/v1, kind: Ingress}\nhostCapabilities: [\"oci/*\"]\n",
            ),
        ),
        (
            "ungranted-component",
            policy(
                "unique-ingress-host-component",
                "contextAwareResources:\n  - {apiVersion: networking.k8s.io/v1, kind: Ingress}\n",
            ),
        ),
        (
            "typo",
            policy(
                "unique-ingress-host-wapc",
                "hostCapabilities: [\"kubernetes/list_resource_all\"]\n",
            ),
        ),
        ("privileged", policy("pod-privileged-component", "")),
    ]);
    let server = TestServer::start(&yaml, kube_options(cp)).await;
    let review = ingress_review("default", "web", &["x.example.com"], "CREATE");

    for id in ["undeclared-wapc", "undeclared-component"] {
        let response = server.validate(id, &review).await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "policy {id} has not been granted access to Kubernetes networking.k8s.io/v1/Ingress: add {{apiVersion: networking.k8s.io/v1, kind: Ingress}} to its contextAwareResources"
            )),
            "{id}: {message}"
        );
    }
    for (id, granted) in [("ungranted-wapc", "[oci/*]"), ("ungranted-component", "[]")] {
        let response = server.validate(id, &review).await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "policy {id} has not been granted the kubernetes/list_resources_all host capability (its hostCapabilities are {granted})"
            )),
            "{id}: {message}"
        );
    }
    // A pattern naming no capability is a load error of that policy only.
    let response = server.validate("typo", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("unknown segment \"list_resource_all\"")
            && message.contains("list_resources_all"),
        "{message}"
    );
    let (status, readiness) = server.probe("/readiness").await;
    assert_eq!(status, 200, "{readiness}");
    assert!(readiness.contains("unknown segment"), "{readiness}");

    let response = server
        .validate("privileged", &fixture("pod-privileged.json"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    let response = server
        .validate("privileged", &fixture("pod-unprivileged.json"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_asks_the_api_servers_authorizer_in_both_abis() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new("can-i");
    let alice = format!("alice-{}", ns.name());
    apply(
        cp,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "privileged-workloads", "namespace": ns.name()},
                "rules": [{"apiGroups": ["policies.example.com"],
                           "resources": ["privileged-workloads"], "verbs": ["use"]}]}),
    );
    apply(
        cp,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "alice", "namespace": ns.name()},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "privileged-workloads"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                              "name": alice}]}),
    );
    let settings = "settings: {verb: use, group: policies.example.com, resource: privileged-workloads}\nhostCapabilities: [\"kubernetes/can_i\"]\n";
    let yaml = policies_yaml(&[
        ("can-i-wapc", policy("requester-can-i-wapc", settings)),
        (
            "can-i-component",
            policy("requester-can-i-component", settings),
        ),
    ]);
    let server = TestServer::start(&yaml, kube_options(cp)).await;
    for id in ["can-i-wapc", "can-i-component"] {
        // RBAC objects take effect in the authorizer's cache within moments.
        eventually(
            "the RoleBinding in the authorizer",
            Duration::from_secs(20),
            || async {
                let review = pod_review(ns.name(), &alice, &["system:authenticated"], &["nginx"]);
                server.validate(id, &review).await["allowed"] == true
            },
        )
        .await;
        let review = pod_review(ns.name(), "bob", &["system:authenticated"], &["nginx"]);
        let response = server.validate(id, &review).await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
        assert_eq!(response["status"]["code"], 403, "{id}: {response}");
        assert_eq!(
            response["status"]["message"],
            format!(
                "user bob is not allowed to use privileged-workloads.policies.example.com in namespace {}",
                ns.name()
            ),
            "{id}"
        );
        // Alice's grant is namespaced.
        let review = pod_review("default", &alice, &["system:authenticated"], &["nginx"]);
        let response = server.validate(id, &review).await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_context_aware_policies_fail_closed_and_the_others_serve() {
    let yaml = policies_yaml(&[
        ("unique", policy("unique-ingress-host-wapc", INGRESS_GRANTS)),
        (
            "can-i",
            policy(
                "requester-can-i-component",
                "settings: {verb: use, resource: things}\nhostCapabilities: [\"*\"]\n",
            ),
        ),
        ("privileged", policy("pod-privileged-wapc", "")),
    ]);
    for (source, reason) in [
        (
            KubeConfigSource::Disabled,
            "access to Kubernetes is disabled",
        ),
        (
            KubeConfigSource::File("/nonexistent/kubeconfig".into()),
            "cannot read kubeconfig /nonexistent/kubeconfig",
        ),
    ] {
        let options = Options {
            tweak: Box::new(move |config| config.kubernetes = source),
            ..Options::default()
        };
        let server = TestServer::start(&yaml, options).await;
        let (status, _) = server.probe("/readiness").await;
        assert_eq!(status, 200, "the server serves without a cluster");

        let response = server
            .validate(
                "unique",
                &ingress_review("a", "b", &["c.example.com"], "CREATE"),
            )
            .await;
        assert_eq!(response["allowed"], false, "{response}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message
                .contains("the cache of Kubernetes networking.k8s.io/v1/Ingress is not available")
                && message.contains(reason),
            "{message}"
        );
        let response = server
            .validate("can-i", &pod_review("a", "bob", &[], &["nginx"]))
            .await;
        assert_eq!(response["allowed"], false, "{response}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("no Kubernetes API server") && message.contains(reason),
            "{message}"
        );

        let response = server
            .validate("privileged", &fixture("pod-unprivileged.json"))
            .await;
        assert_eq!(response["allowed"], true, "{response}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_caches_of_the_loaded_policies() {
    // An API server that accepts connections and never answers: the cache of
    // the policy's kind stays "syncing".
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = blackhole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in blackhole.incoming() {
            held.push(connection);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: \"https://{address}\", insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
        ),
    )
    .unwrap();
    let probe_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = Options {
        tweak: Box::new(move |config| {
            config.kubernetes = KubeConfigSource::File(kubeconfig);
            config.readiness_port = probe_port;
        }),
        ..Options::default()
    };
    let yaml = policies_yaml(&[("unique", policy("unique-ingress-host-wapc", INGRESS_GRANTS))]);
    let readiness = format!("http://127.0.0.1:{probe_port}/readiness");
    let observe = async {
        let mut seen_syncing = false;
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            if let Ok(response) = reqwest_oci::get(&readiness).await {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                assert_eq!(status, 503, "ready while a cache it needs syncs: {body}");
                seen_syncing |= body.contains(
                    r#""contextAwareCaches":{"networking.k8s.io/v1/Ingress":{"state":"syncing"}}"#,
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen_syncing
    };
    tokio::select! {
        started = TestServer::try_start(&yaml, options) => {
            panic!("start() returned while a cache syncs: {:?}", started.err());
        }
        seen_syncing = observe => {
            assert!(seen_syncing, "the readiness report shows the syncing cache");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_lists_selectors_masks_and_gets_through_sdk_helpers_and_imports() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new("probe");
    for (name, app) in [("cm-a", "a"), ("cm-b", "b"), ("cm-c", "a")] {
        apply(
            cp,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": ns.name(), "labels": {"app": app}},
                    "data": {"key": format!("value of {name}")}}),
        );
    }
    let grants = "contextAwareResources:\n  - {apiVersion: v1, kind: ConfigMap}\n  - {apiVersion: v1, kind: Namespace}\n";
    let query = json!({"api_version": "v1", "kind": "ConfigMap", "namespace": ns.name(),
                       "label_selector": "app=a", "field_selector": "metadata.name!=cm-c",
                       "field_masks": ["metadata.name", "data"]});
    let get = |name: &str, masks: Value, disable_cache: bool| {
        json!({"api_version": "v1", "kind": "ConfigMap", "name": name, "namespace": ns.name(),
               "disable_cache": disable_cache, "field_masks": masks})
    };
    let wapc = "capability-probe-wapc";
    let component = "capability-probe-component";
    let v01 = "capability-probe-v01-component";
    let mut v01_query = query.clone();
    v01_query["field_masks"] = Value::Null;
    let entries = [
        (
            "list-wapc",
            probe(wapc, "list_configmaps", query.clone(), grants),
        ),
        (
            "list-component",
            probe(component, "list", query.clone(), grants),
        ),
        ("list-v01", probe(v01, "list", v01_query, grants)),
        (
            "get-masked-wapc",
            probe(
                wapc,
                "get_resource",
                get("cm-b", json!(["data"]), false),
                grants,
            ),
        ),
        (
            "get-masked-component",
            probe(
                component,
                "get",
                get("cm-b", json!(["data"]), false),
                grants,
            ),
        ),
        (
            "get-fresh-wapc",
            probe(wapc, "get_resource", get("cm-b", Value::Null, true), grants),
        ),
        (
            "get-fresh-v01",
            probe(v01, "get", get("cm-b", Value::Null, true), grants),
        ),
        (
            "get-missing-wapc",
            probe(
                wapc,
                "get_resource",
                get("nope", Value::Null, false),
                grants,
            ),
        ),
        (
            "list-cluster-scoped-by-namespace",
            probe(
                component,
                "list",
                json!({"api_version": "v1", "kind": "Namespace", "namespace": ns.name()}),
                grants,
            ),
        ),
    ];
    let server = TestServer::start(&policies_yaml(&entries), kube_options(cp)).await;

    for id in ["list-wapc", "list-component"] {
        let list = probe_answer(&server, id).await;
        assert_eq!(list["apiVersion"], "v1", "{id}: {list}");
        assert_eq!(list["kind"], "ConfigMapList", "{id}: {list}");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{id}: {list}");
        assert_eq!(items[0]["metadata"]["name"], "cm-a", "{id}");
        assert_eq!(items[0]["data"]["key"], "value of cm-a", "{id}");
        assert!(
            items[0]["metadata"].get("labels").is_none(),
            "{id}: masked out: {list}"
        );
    }
    let list = probe_answer(&server, "list-v01").await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(
        items[0]["metadata"]["labels"]["app"], "a",
        "no mask in 0.1: {list}"
    );
    assert!(
        items[0]["metadata"].get("managedFields").is_none(),
        "{list}"
    );

    for id in ["get-masked-wapc", "get-masked-component"] {
        assert_eq!(
            probe_answer(&server, id).await,
            json!({"data": {"key": "value of cm-b"}}),
            "{id}"
        );
    }
    for id in ["get-fresh-wapc", "get-fresh-v01"] {
        let object = probe_answer(&server, id).await;
        assert_eq!(object["kind"], "ConfigMap", "{id}: {object}");
        assert_eq!(object["metadata"]["name"], "cm-b", "{id}: {object}");
        assert!(
            object["metadata"].get("managedFields").is_none(),
            "{id}: {object}"
        );
    }
    let message = probe_refusal(&server, "get-missing-wapc").await;
    assert!(
        message.contains(&format!(
            "Kubernetes v1/ConfigMap \"nope\" not found in namespace \"{}\"",
            ns.name()
        )),
        "{message}"
    );
    let message = probe_refusal(&server, "list-cluster-scoped-by-namespace").await;
    assert!(
        message.contains("Kubernetes v1/Namespace is cluster-scoped"),
        "{message}"
    );
    server.stop().await;
}

/// AdmissionPolicies (`namespaced-<ns>.<name>`, the controller's ids) read
/// only their own namespace, through both ABIs; cluster-wide policies on the
/// same server read everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_policies_read_only_their_own_namespace() {
    let cp = ControlPlane::shared();
    let own = TestNamespace::new("tenant-a");
    let other = TestNamespace::new("tenant-b");
    for ns in [&own, &other] {
        apply(
            cp,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "settings", "namespace": ns.name()},
                    "data": {"owner": ns.name()}}),
        );
    }
    let grants = "contextAwareResources:\n  - {apiVersion: v1, kind: ConfigMap}\n  - {apiVersion: v1, kind: Namespace}\n";
    let list_in = |ns: &TestNamespace| json!({"api_version": "v1", "kind": "ConfigMap", "namespace": ns.name(), "field_selector": "metadata.name=settings"});
    let list_all = json!({"api_version": "v1", "kind": "ConfigMap", "field_selector": "metadata.name=settings"});
    let get_in = |ns: &TestNamespace| {
        json!({"api_version": "v1", "kind": "ConfigMap", "name": "settings",
               "namespace": ns.name(), "disable_cache": false})
    };
    let get_namespace = |ns: &TestNamespace| json!({"api_version": "v1", "kind": "Namespace", "name": ns.name(), "disable_cache": false});
    let wapc = "capability-probe-wapc";
    let component = "capability-probe-component";
    let id = |name: &str| format!("namespaced-{}.{name}", own.name());
    let entries = [
        (
            id("own-wapc"),
            probe(wapc, "list_configmaps", list_in(&own), grants),
        ),
        (
            id("own-component"),
            probe(component, "list", list_in(&own), grants),
        ),
        (id("own-get"), probe(component, "get", get_in(&own), grants)),
        (
            id("own-namespace"),
            probe(wapc, "get_resource", get_namespace(&own), grants),
        ),
        (
            id("other-wapc"),
            probe(wapc, "list_configmaps", list_in(&other), grants),
        ),
        (
            id("other-component"),
            probe(component, "list", list_in(&other), grants),
        ),
        (
            id("other-get"),
            probe(wapc, "get_resource", get_in(&other), grants),
        ),
        (
            id("other-namespace"),
            probe(component, "get", get_namespace(&other), grants),
        ),
        (
            id("all"),
            probe(component, "list", list_all.clone(), grants),
        ),
        (
            "clusterwide-other".to_string(),
            probe(wapc, "list_configmaps", list_in(&other), grants),
        ),
        (
            "clusterwide-all".to_string(),
            probe(component, "list", list_all, grants),
        ),
    ];
    let entries: Vec<(&str, String)> = entries
        .iter()
        .map(|(i, p)| (i.as_str(), p.clone()))
        .collect();
    let server = TestServer::start(&policies_yaml(&entries), kube_options(cp)).await;

    // Refused first: the refusals must not hurt the policies that serve.
    for (name, target) in [
        (
            "other-wapc",
            format!("not of namespace \"{}\"", other.name()),
        ),
        (
            "other-component",
            format!("not of namespace \"{}\"", other.name()),
        ),
        (
            "other-get",
            format!("not of namespace \"{}\"", other.name()),
        ),
        (
            "other-namespace",
            format!("not of the cluster-scoped object \"{}\"", other.name()),
        ),
        ("all", "not of all namespaces".to_string()),
    ] {
        let message = probe_refusal(&server, &id(name)).await;
        assert!(
            message.contains(&format!("is namespaced to \"{}\"", own.name()))
                && message.contains(&target),
            "{name}: {message}"
        );
    }
    for name in ["own-wapc", "own-component"] {
        let list = probe_answer(&server, &id(name)).await;
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{name}: {list}");
        assert_eq!(items[0]["data"]["owner"], own.name(), "{name}");
    }
    assert_eq!(
        probe_answer(&server, &id("own-get")).await["data"]["owner"],
        own.name()
    );
    assert_eq!(
        probe_answer(&server, &id("own-namespace")).await["metadata"]["name"],
        own.name()
    );
    let list = probe_answer(&server, "clusterwide-other").await;
    assert_eq!(list["items"][0]["data"]["owner"], other.name(), "{list}");
    let list = probe_answer(&server, "clusterwide-all").await;
    let owners: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["data"]["owner"])
        .collect();
    for ns in [&own, &other] {
        assert!(owners.contains(&&json!(ns.name())), "{list}");
    }
    server.stop().await;
}
