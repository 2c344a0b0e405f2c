//! Smoke test of the control-plane harness: namespace + ConfigMap round trip.
//! Needs `scripts/go-tools.sh control-plane` (see docs/control-plane.md).

use portcullis_tests::control_plane::{ControlPlane, TestNamespace};

#[test]
fn configmap_round_trip() {
    let ns = TestNamespace::new("smoke");
    let cp = ControlPlane::shared();

    cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "create",
        "configmap",
        "greeting",
        "--from-literal=hello=world",
    ]);
    let out = cp.kubectl_ok(&[
        "-n",
        ns.name(),
        "get",
        "configmap",
        "greeting",
        "-o",
        "json",
    ]);
    let cm: serde_json::Value = serde_json::from_str(&out).expect("kubectl printed JSON");
    assert_eq!(cm["data"]["hello"], "world");
    assert_eq!(cm["metadata"]["namespace"], ns.name());

    // The audit log records the write, attributed to the admin user.
    let audit = std::fs::read_to_string(cp.audit_log_path()).expect("audit log exists");
    assert!(
        audit.lines().any(|l| l.contains("\"verb\":\"create\"")
            && l.contains("\"resource\":\"configmaps\"")
            && l.contains(ns.name())),
        "the ConfigMap create is in the audit log"
    );
}
