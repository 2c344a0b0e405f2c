//! The `portcullis` CLI with Rego policies: `run` in both execution modes,
//! and `inspect` listing the builtins an OPA module needs.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::policies_dir;
use serde_json::Value;

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env("PORTCULLIS_LOG_LEVEL", "error")
        .output()
        .unwrap()
}

fn module(name: &str) -> String {
    let path = policies_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-policies.sh first",
        path.display()
    );
    path.display().to_string()
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn run_denies_the_privileged_pod_in_both_modes() {
    for (name, mode) in [
        ("pod-privileged-opa", "opa"),
        ("pod-privileged-gatekeeper", "gatekeeper"),
    ] {
        // Both spellings of the flag, as kwctl has them.
        let flag = if mode == "opa" {
            "--execution-mode"
        } else {
            "-e"
        };
        let denied = json(&portcullis(&[
            "run",
            flag,
            mode,
            "--request",
            &fixture("pod-privileged.json"),
            &module(name),
        ]));
        assert_eq!(denied["allowed"], false, "{mode}: {denied}");
        assert_eq!(
            denied["status"]["message"], "Privileged container is not allowed: sidecar",
            "{mode}"
        );
        assert_eq!(denied["uid"], "22222222-2222-2222-2222-222222222222");

        let admitted = json(&portcullis(&[
            "run",
            "-e",
            mode,
            "-r",
            &fixture("pod-unprivileged.json"),
            &module(name),
        ]));
        assert_eq!(admitted["allowed"], true, "{mode}: {admitted}");

        // Settings are the data (opa) or the parameters (gatekeeper).
        let skipped = json(&portcullis(&[
            "run",
            "-e",
            mode,
            "-r",
            &fixture("pod-init-privileged.json"),
            "--settings",
            r#"{"skip_init_containers": true}"#,
            &module(name),
        ]));
        assert_eq!(skipped["allowed"], true, "{mode}: {skipped}");
    }
}

#[test]
fn run_without_a_mode_says_which_one_to_give() {
    let output = portcullis(&[
        "run",
        "-r",
        &fixture("pod-privileged.json"),
        &module("pod-privileged-opa"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("executionMode"), "{stderr}");

    let output = portcullis(&[
        "run",
        "-e",
        "opa",
        "-r",
        &fixture("pod-privileged.json"),
        &module("pod-privileged-wapc"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("execution mode opa needs an OPA module"),
        "{stderr}"
    );
}

#[test]
fn inspect_lists_the_builtins_and_flags_the_unsupported_ones() {
    let report = json(&portcullis(&[
        "inspect",
        &module("pod-privileged-gatekeeper"),
    ]));
    assert_eq!(report["abi"], "opa");
    assert_eq!(
        report["opa"]["entrypoints"]["0"],
        "k8spspprivileged/violation"
    );
    let builtins = report["opa"]["builtins"].as_array().unwrap();
    assert!(
        builtins
            .iter()
            .any(|b| b["name"] == "sprintf" && b["supported"] == true),
        "{report}"
    );
    assert_eq!(report["opa"]["unsupportedBuiltins"], serde_json::json!([]));

    let report = json(&portcullis(&[
        "inspect",
        &module("adversarial-rego-unsupported-builtin"),
    ]));
    assert_eq!(
        report["opa"]["unsupportedBuiltins"],
        serde_json::json!(["http.send"])
    );

    let report = json(&portcullis(&["inspect", &module("pod-privileged-wapc")]));
    assert_eq!(report["executionMode"], "kubewarden-wapc");
    assert!(report.get("opa").is_none());
}

/// An OPA module annotated with Kubewarden metadata (`executionMode: opa`)
/// runs without `-e`, and `scaffold manifest` makes its policy manifest.
#[test]
fn an_annotated_rego_module_runs_and_scaffolds_without_a_mode_flag() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata.yml");
    std::fs::write(
        &metadata,
        "rules:\n  - {apiGroups: [\"\"], apiVersions: [v1], resources: [pods], operations: [CREATE]}\n\
         mutating: false\nexecutionMode: opa\n\
         annotations:\n  io.kubewarden.policy.title: pod-privileged-opa\n",
    )
    .unwrap();
    let annotated = dir.path().join("annotated.wasm");
    let output = portcullis(&[
        "annotate",
        &module("pod-privileged-opa"),
        "--metadata-path",
        metadata.to_str().unwrap(),
        "--output-path",
        annotated.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let annotated = annotated.to_str().unwrap();

    let denied = json(&portcullis(&[
        "run",
        "-r",
        &fixture("pod-privileged.json"),
        annotated,
    ]));
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        denied["status"]["message"],
        "Privileged container is not allowed: sidecar"
    );

    let output = portcullis(&[
        "scaffold",
        "manifest",
        "--type",
        "ClusterAdmissionPolicy",
        annotated,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest: Value = serde_yaml::from_slice(&output.stdout).unwrap();
    assert_eq!(manifest["kind"], "ClusterAdmissionPolicy");
    assert_eq!(manifest["metadata"]["name"], "pod-privileged-opa");
    assert_eq!(manifest["spec"]["rules"][0]["resources"][0], "pods");
    assert_eq!(
        manifest["spec"]["module"],
        format!("file://{annotated}"),
        "{manifest}"
    );
}
