//! Steady state: an admission request to a context-aware policy causes no
//! request to the API server; the cache lists once and then watches. Shown
//! from the API server's audit log. (A test binary of its own: its control
//! plane serves no other test, so every Ingress read in the log is ours.)

mod common;

use common::context::{apply, ingress, ingress_review, kube_options, policy};
use common::{TestServer, policies_yaml};
use portcullis_tests::control_plane::{ControlPlane, TestNamespace};
use serde_json::Value;

/// `(lists, gets, watches)` of Ingresses in the audit log.
fn ingress_reads(cp: &ControlPlane) -> (usize, usize, usize) {
    let log = std::fs::read_to_string(cp.audit_log_path()).unwrap_or_default();
    let mut counts = (0, 0, 0);
    for event in log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if event["objectRef"]["resource"] != "ingresses" {
            continue;
        }
        match (event["verb"].as_str(), event["stage"].as_str()) {
            (Some("list"), Some("ResponseComplete")) => counts.0 += 1,
            (Some("get"), Some("ResponseComplete")) => counts.1 += 1,
            (Some("watch"), Some("ResponseStarted")) => counts.2 += 1,
            _ => {}
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_requests_cause_no_list_or_get_on_the_api_server() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new("steady");
    for i in 0..20 {
        let host = format!("h{i}.{}.example.com", ns.name());
        apply(cp, &ingress(ns.name(), &format!("ing-{i}"), &[&host]));
    }
    let grants = "contextAwareResources:\n  - {apiVersion: networking.k8s.io/v1, kind: Ingress}\nhostCapabilities: [\"kubernetes/list_resources_all\"]\n";
    let yaml = policies_yaml(&[
        ("unique-wapc", policy("unique-ingress-host-wapc", grants)),
        (
            "unique-component",
            policy("unique-ingress-host-component", grants),
        ),
    ]);
    let server = TestServer::start(&yaml, kube_options(cp)).await;
    let taken = format!("h3.{}.example.com", ns.name());
    let review = ingress_review("other", "web", &[&taken], "CREATE");
    let conflict = |response: serde_json::Value| {
        assert_eq!(response["allowed"], false, "{response}");
        assert_eq!(response["status"]["code"], 409, "{response}");
    };
    conflict(server.validate("unique-wapc", &review).await);

    let (lists, gets, watches) = ingress_reads(cp);
    assert_eq!(lists, 1, "one initial list, by the cache");
    assert!(watches >= 1, "then a watch");
    for _ in 0..100 {
        for id in ["unique-wapc", "unique-component"] {
            conflict(server.validate(id, &review).await);
        }
    }
    let after = ingress_reads(cp);
    assert_eq!(
        (after.0, after.1),
        (lists, gets),
        "200 admission requests caused {} lists and {} gets",
        after.0 - lists,
        after.1 - gets
    );
    server.stop().await;
}
