//! `portcullis run` with host capabilities: live against the harness' API
//! server (`--kubeconfig`), recorded (`--record-host-capabilities`, kwctl's
//! session format), and replayed without any cluster
//! (`--replay-host-capabilities`), giving the same verdicts.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::context::{apply, ingress, ingress_review, pod_review};
use common::policies_dir;
use portcullis_tests::control_plane::{ControlPlane, TestNamespace};
use serde_json::Value;

fn portcullis(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        // No cluster unless --kubeconfig says so; the CLI store stays in the test dir.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", cwd)
        .env("PORTCULLIS_STORE", cwd.join("store"))
        .env_remove("PORTCULLIS_KUBECONFIG")
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn verdict(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "portcullis run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn module(name: &str) -> String {
    policies_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

#[test]
fn a_recorded_session_reproduces_the_live_verdicts_without_a_cluster() {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::new("sessions");
    let host = format!("shop.{}.example.com", ns.name());
    apply(cp, &ingress(ns.name(), "shop", &[&host]));
    let dir = tempfile::tempdir().unwrap();
    let review = dir.path().join("review.json");
    std::fs::write(
        &review,
        ingress_review("elsewhere", "web", &[&host], "CREATE").to_string(),
    )
    .unwrap();
    let review = review.display().to_string();
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let session = dir.path().join("session.yml").display().to_string();
    let wapc = module("unique-ingress-host-wapc");
    let component = module("unique-ingress-host-component");

    // Live, and recorded.
    let live = verdict(&portcullis(
        &[
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--allow-context-aware",
            "--record-host-capabilities",
            &session,
            "-r",
            &review,
            &wapc,
        ],
        dir.path(),
    ));
    assert_eq!(live["allowed"], false, "{live}");
    assert_eq!(
        live["status"]["message"],
        format!(
            "Ingress host must be unique in the cluster: {host} (already used by Ingress {}/shop)",
            ns.name()
        )
    );
    let recorded = std::fs::read_to_string(&session).unwrap();
    assert!(recorded.starts_with("- type: Exchange\n"), "{recorded}");
    assert!(
        recorded.contains("!KubernetesListResourceAll"),
        "{recorded}"
    );
    assert!(recorded.contains("type: Success"), "{recorded}");

    // Replayed with no cluster at all: the same verdict, from both ABIs (they
    // send the same request).
    for policy in [&wapc, &component] {
        let replayed = verdict(&portcullis(
            &[
                "run",
                "--allow-context-aware",
                "--replay-host-capabilities",
                &session,
                "-r",
                &review,
                policy,
            ],
            dir.path(),
        ));
        assert_eq!(replayed, live, "{policy}");
    }
    // kwctl's flag names work too.
    let replayed = verdict(&portcullis(
        &[
            "run",
            "--allow-context-aware",
            "--replay-host-capabilities-interactions",
            &session,
            "-r",
            &review,
            &wapc,
        ],
        dir.path(),
    ));
    assert_eq!(replayed, live);

    // `portcullis test` replays the same session for a case that names it.
    let test_file = dir.path().join("unique.portcullis-test.yaml");
    std::fs::write(
        &test_file,
        format!(
            "policy: {wapc}\ntests:\n\
             - name: a duplicate host is denied offline\n  request: {review}\n  \
               session: {session}\n  \
               expect: {{allowed: false, message: {message:?}}}\n",
            message = live["status"]["message"].as_str().unwrap(),
        ),
    )
    .unwrap();
    let output = portcullis(&["test", test_file.to_str().unwrap()], dir.path());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(table.ends_with("\n1 passed, 0 failed\n"), "{table}");

    // Without the session and without a cluster, the policy fails closed.
    let output = portcullis(
        &["run", "--allow-context-aware", "-r", &review, &wapc],
        dir.path(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the cache of Kubernetes networking.k8s.io/v1/Ingress is not available"),
        "{stderr}"
    );

    // Without --allow-context-aware, the resource is not granted.
    let output = portcullis(
        &[
            "run",
            "--replay-host-capabilities",
            &session,
            "-r",
            &review,
            &wapc,
        ],
        dir.path(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("has not been granted access to Kubernetes networking.k8s.io/v1/Ingress"),
        "{stderr}"
    );

    // A session of other requests does not answer this policy.
    let can_i_review = dir.path().join("pod.json");
    std::fs::write(
        &can_i_review,
        pod_review(ns.name(), "bob", &[], &["nginx"]).to_string(),
    )
    .unwrap();
    let can_i_session = dir.path().join("can-i.yml").display().to_string();
    let can_i = verdict(&portcullis(
        &[
            "run",
            "--kubeconfig",
            &kubeconfig,
            "--record-host-capabilities",
            &can_i_session,
            "--settings",
            r#"{"verb": "use", "resource": "things"}"#,
            "-r",
            &can_i_review.display().to_string(),
            &module("requester-can-i-wapc"),
        ],
        dir.path(),
    ));
    assert_eq!(can_i["allowed"], false, "{can_i}");
    assert!(
        std::fs::read_to_string(&can_i_session)
            .unwrap()
            .contains("!KubernetesCanI")
    );
    let output = portcullis(
        &[
            "run",
            "--allow-context-aware",
            "--replay-host-capabilities",
            &can_i_session,
            "-r",
            &review,
            &wapc,
        ],
        dir.path(),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("replay: exchange 1 expected KubernetesCanI"),
        "{stderr}"
    );
}
