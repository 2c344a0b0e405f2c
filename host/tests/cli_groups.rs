//! `portcullis run` with a policy group manifest (issue 14 item 3): the
//! group is loaded and evaluated as the policy-server does, with the
//! compiled sample policies as members.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{module, policies_dir, portcullis_cli, repo};
use serde_json::Value;

fn portcullis(args: &[&str]) -> Output {
    portcullis_cli(args, "portcullis-cli-groups-test-store")
}

/// `portcullis run -r <request> <manifest>`: the printed AdmissionResponse.
fn run(request: &Path, manifest: &Path) -> Value {
    let out = portcullis(&[
        "run",
        "-r",
        request.to_str().unwrap(),
        manifest.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "portcullis run failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A ClusterAdmissionPolicyGroup whose `not_privileged` member is given as
/// a path relative to the manifest, and `trusted_namespace` as a URI.
fn write_group(dir: &Path, mode: &str, expression: &str) -> PathBuf {
    std::fs::copy(
        policies_dir().join("pod-privileged-wapc.wasm"),
        dir.join("pod-privileged.wasm"),
    )
    .unwrap();
    let path = dir.join(format!("group-{mode}.yaml"));
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicyGroup
metadata:
  name: privileged-outside-trusted
spec:
  mode: {mode}
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}
  expression: "{expression}"
  message: privileged Pods run in the trusted namespace only
  policies:
    not_privileged:
      module: pod-privileged.wasm
    trusted_namespace:
      module: {allowlist}
      settings: {{namespaces: [trusted]}}
"#,
            allowlist = module("namespace-allowlist-wapc"),
        ),
    )
    .unwrap();
    path
}

fn privileged_request(dir: &Path, namespace: &str) -> PathBuf {
    let fixture = repo().join("tests/fixtures/pod-privileged.json");
    let mut review: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    review["request"]["namespace"] = namespace.into();
    let path = dir.join(format!("privileged-{namespace}.json"));
    std::fs::write(&path, serde_json::to_vec(&review).unwrap()).unwrap();
    path
}

#[test]
fn run_evaluates_a_group_manifest_like_the_policy_server() {
    let dir = tempfile::tempdir().unwrap();
    let group = write_group(
        dir.path(),
        "protect",
        "not_privileged() || trusted_namespace()",
    );

    let denied = run(&privileged_request(dir.path(), "default"), &group);
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        denied["status"]["message"],
        "privileged Pods run in the trusted namespace only"
    );
    let causes = denied["status"]["details"]["causes"].as_array().unwrap();
    let fields: Vec<&str> = causes
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.policies.not_privileged",
            "spec.policies.trusted_namespace"
        ]
    );
    assert_eq!(
        causes[1]["message"],
        "namespace default is not one of the allowed namespaces (trusted)"
    );

    let admitted = run(&privileged_request(dir.path(), "trusted"), &group);
    assert_eq!(admitted["allowed"], true, "{admitted}");

    // Monitor mode applies to the group, as on the server.
    let monitored = write_group(
        dir.path(),
        "monitor",
        "not_privileged() || trusted_namespace()",
    );
    let response = run(&privileged_request(dir.path(), "default"), &monitored);
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("status").is_none(), "{response}");
}

#[test]
fn run_refuses_a_group_that_cannot_load() {
    let dir = tempfile::tempdir().unwrap();
    let group = write_group(dir.path(), "protect", "not_privileged() || other()");
    let request = privileged_request(dir.path(), "default");
    let out = portcullis(&[
        "run",
        "-r",
        request.to_str().unwrap(),
        group.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid expression"), "{stderr}");
    assert!(stderr.contains("calls other"), "{stderr}");
}
