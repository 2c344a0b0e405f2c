//! The policy author's commands of the `portcullis` binary, on the compiled
//! sample policies (`scripts/build-policies.sh`): `test` (the project's own
//! test files, and a wrong expectation failing with a diff), `annotate` and
//! `inspect`, `scaffold manifest`, `bench` and `completions`.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{policies_dir, portcullis_cli, repo};
use serde_json::Value;

fn module_path(name: &str) -> PathBuf {
    let path = policies_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-policies.sh first",
        path.display()
    );
    path
}

/// Runs `portcullis` with a compiled-module cache shared by the tests.
fn portcullis(args: &[&str]) -> Output {
    portcullis_cli(args, "portcullis-toolkit-test-store")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = portcullis(args);
    assert!(
        out.status.success(),
        "portcullis {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn the_sample_policies_pass_their_own_test_files() {
    let dir = repo().join("sample-policies");
    let out = ok(&["test", dir.to_str().unwrap()]);
    // pod-privileged: 12 cases in 5 languages; default-labels: 8 in 2;
    // adversarial: 8 in 2; manifests: 2 + 1 + 1; namespace-allowlist: 4.
    assert!(out.ends_with("\n100 passed, 0 failed\n"), "{out}");
    for policy in [
        "pod-privileged-python",
        "pod-privileged-js",
        "pod-privileged-go",
        "no-privileged-pods",
        "team-labels",
        "namespace-allowlist-wapc",
    ] {
        assert!(out.contains(policy), "{policy} did not run:\n{out}");
    }
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = repo().join("tests/fixtures");
    let file = dir.path().join("wrong.portcullis-test.yaml");
    std::fs::write(
        &file,
        format!(
            "policy: {}\ntests:\n\
             - name: right\n  request: {fx}/pod-privileged.json\n  expect: {{allowed: false}}\n\
             - name: wrong message\n  request: {fx}/pod-privileged.json\n  \
               expect: {{allowed: false, message: 'Privileged container is not allowed: nginx'}}\n\
             - name: wrong verdict\n  request: {fx}/pod-unprivileged.json\n  expect: {{allowed: false}}\n",
            module_path("pod-privileged-python").display(),
            fx = fixtures.display()
        ),
    )
    .unwrap();
    let junit = dir.path().join("report.xml");
    let out = portcullis(&[
        "test",
        file.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains(
            "--- FAIL: pod-privileged-python / wrong message"
        ) && table.contains(
            "    message:\n      - expected: Privileged container is not allowed: nginx\n      + actual:   Privileged container is not allowed: sidecar\n"
        ),
        "{table}"
    );
    assert!(
        table.contains("    allowed:\n      - expected: false\n      + actual:   true\n"),
        "{table}"
    );
    assert!(table.ends_with("\n1 passed, 2 failed\n"), "{table}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"3\" failures=\"2\" errors=\"0\"")
            && xml.contains("<testcase classname=\"pod-privileged-python\" name=\"wrong message\"")
            && xml.contains("<failure type=\"mismatch\" message=\"unexpected message\">"),
        "{xml}"
    );

    let out = portcullis(&["test", file.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(2))
    );
    let wrong = &report["results"][1];
    assert_eq!(wrong["result"], "failed");
    assert_eq!(
        wrong["mismatches"][0]["actual"],
        "Privileged container is not allowed: sidecar"
    );
    assert_eq!(
        wrong["outcome"]["response"]["status"]["message"],
        "Privileged container is not allowed: sidecar"
    );

    // A test file that cannot be read is a failure too, not a pass.
    std::fs::write(&file, "policy: x.wasm\ntests: []\n").unwrap();
    let out = portcullis(&["test", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("has no tests"),
        "{}",
        text(&out.stdout)
    );
}

/// The metadata JSON the `io.kubewarden.metadata` section of `wasm` holds.
fn section(wasm: &[u8], name: &str) -> Option<Vec<u8>> {
    wasmparser::Parser::new(0)
        .parse_all(wasm)
        .filter_map(Result::ok)
        .find_map(|p| match p {
            wasmparser::Payload::CustomSection(s) if s.name() == name => Some(s.data().to_vec()),
            _ => None,
        })
}

#[test]
fn annotate_writes_kwctl_compatible_metadata_that_inspect_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata.yml");
    std::fs::write(
        &metadata,
        "rules:\n- apiGroups: [\"\"]\n  apiVersions: [v1]\n  resources: [pods]\n  operations: [CREATE, UPDATE]\n\
         mutating: false\ncontextAwareResources:\n- {apiVersion: v1, kind: Namespace}\n\
         annotations:\n  io.kubewarden.policy.title: no-privileged\n  io.kubewarden.policy.severity: high\n",
    )
    .unwrap();
    let out_path = dir.path().join("annotated.wasm");
    let input = module_path("pod-privileged-wapc");
    let args = |force: bool| {
        let mut a = vec![
            "annotate".to_string(),
            input.display().to_string(),
            "-m".into(),
            metadata.display().to_string(),
            "-o".into(),
            out_path.display().to_string(),
            "-a".into(),
            "io.kubewarden.policy.author=Portcullis".into(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    // The sample already carries metadata: replacing it needs --force.
    let refused = portcullis(&args(false).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("--force"),
        "{}",
        text(&refused.stderr)
    );
    ok(&args(true).iter().map(String::as_str).collect::<Vec<_>>());

    let wasm = std::fs::read(&out_path).unwrap();
    let json = section(&wasm, "io.kubewarden.metadata").expect("section");
    // Exactly what kwctl writes: its Metadata fields in order, sorted maps.
    assert_eq!(
        String::from_utf8(json).unwrap(),
        concat!(
            r#"{"protocolVersion":"v1","rules":[{"apiGroups":[""],"apiVersions":["v1"],"resources":["pods"],"operations":["CREATE","UPDATE"]}],"#,
            r#""annotations":{"io.kubewarden.policy.author":"Portcullis","io.kubewarden.policy.severity":"high","io.kubewarden.policy.title":"no-privileged"},"#,
            r#""mutating":false,"backgroundAudit":true,"contextAwareResources":[{"apiVersion":"v1","kind":"Namespace"}],"#,
            r#""executionMode":"kubewarden-wapc","policyType":"kubernetes"}"#
        )
    );
    // One metadata section, and the module still runs.
    let sections = wasmparser::Parser::new(0)
        .parse_all(&wasm)
        .filter_map(Result::ok)
        .filter(|p| matches!(p, wasmparser::Payload::CustomSection(s) if s.name() == "io.kubewarden.metadata"))
        .count();
    assert_eq!(sections, 1);
    let inspected: Value =
        serde_json::from_str(&ok(&["inspect", out_path.to_str().unwrap()])).unwrap();
    assert_eq!(inspected["abi"], "wapc");
    assert_eq!(inspected["metadataSection"], "io.kubewarden.metadata");
    assert_eq!(
        inspected["metadata"]["annotations"]["io.kubewarden.policy.title"],
        "no-privileged"
    );
    let run = ok(&[
        "run",
        "-r",
        repo()
            .join("tests/fixtures/pod-privileged.json")
            .to_str()
            .unwrap(),
        out_path.to_str().unwrap(),
    ]);
    assert!(
        run.contains("Privileged container is not allowed: sidecar"),
        "{run}"
    );
}

#[test]
fn components_and_wasi_commands_get_their_own_sections() {
    // Built by scripts/build-policies.sh with `portcullis annotate`.
    let python: Value = serde_json::from_str(&ok(&[
        "inspect",
        module_path("pod-privileged-python").to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(python["abi"], "component");
    assert_eq!(python["metadataSection"], "portcullis.metadata");
    assert_eq!(
        python["metadata"]["annotations"]["io.kubewarden.policy.title"],
        "pod-privileged-python"
    );
    assert!(python["metadata"].get("executionMode").is_none());
    assert_eq!(python["capabilities"], serde_json::json!([]));

    let go: Value = serde_json::from_str(&ok(&[
        "inspect",
        module_path("pod-privileged-go").to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(go["abi"], "wasi-command");
    assert_eq!(go["metadataSection"], "io.kubewarden.metadata");
    assert_eq!(go["metadata"]["executionMode"], "wasi");
    assert_eq!(go["metadata"]["protocolVersion"], "Unknown");

    // A component's metadata goes first, ahead of what its nested modules carry.
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata.yml");
    std::fs::write(
        &metadata,
        "rules: []\nannotations: {io.kubewarden.policy.title: renamed}\n",
    )
    .unwrap();
    let out_path = dir.path().join("c.wasm");
    let component = module_path("pod-privileged-component");
    ok(&[
        "annotate",
        component.to_str().unwrap(),
        "-m",
        metadata.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
        "--force",
    ]);
    let inspected: Value =
        serde_json::from_str(&ok(&["inspect", out_path.to_str().unwrap()])).unwrap();
    assert_eq!(
        inspected["metadata"]["annotations"]["io.kubewarden.policy.title"],
        "renamed"
    );
    // executionMode is a core-module thing.
    std::fs::write(&metadata, "rules: []\nexecutionMode: wasi\n").unwrap();
    let out = portcullis(&[
        "annotate",
        component.to_str().unwrap(),
        "-m",
        metadata.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
        "--force",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("executionMode"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn annotate_warns_about_undeclared_capabilities_and_wrong_modes() {
    let dir = tempfile::tempdir().unwrap();
    // A waPC module that names oci/v1/manifest_digest in its data.
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
           (data (i32.const 0) "kubewarden\00oci\00v1/manifest_digest\00")
           (func (export "__guest_call") (param i32 i32) (result i32) i32.const 0))"#,
    )
    .unwrap();
    let input = dir.path().join("m.wasm");
    std::fs::write(&input, wasm).unwrap();
    let metadata = dir.path().join("metadata.yml");
    let out_path = dir.path().join("out.wasm");
    let annotate = |yml: &str| {
        std::fs::write(&metadata, yml).unwrap();
        portcullis(&[
            "annotate",
            input.to_str().unwrap(),
            "-m",
            metadata.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
        ])
    };
    let out = annotate("rules: []\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("does not declare in hostCapabilities: oci/v1/manifest_digest"),
        "{}",
        text(&out.stderr)
    );
    let out = annotate("rules: []\nhostCapabilities: [\"oci/*\"]\n");
    assert!(out.status.success());
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    let out = annotate("rules: []\nexecutionMode: wasi\n");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is a waPC module"),
        "{}",
        text(&out.stderr)
    );
    let out = annotate(
        "rules: [{apiGroups: [\"\"], apiVersions: [v1], resources: [pods], operations: [PATCH]}]\n",
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("PATCH"), "{}", text(&out.stderr));
}

#[test]
fn scaffold_manifest_uses_the_embedded_metadata() {
    let module = module_path("pod-privileged-js");
    let settings = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(settings.path(), "skip_init_containers: true\n").unwrap();
    for kind in [
        "ClusterAdmissionPolicy",
        "AdmissionPolicy",
        "ClusterAdmissionPolicyGroup",
    ] {
        let yaml = ok(&[
            "scaffold",
            "manifest",
            "--type",
            kind,
            "--settings-path",
            settings.path().to_str().unwrap(),
            module.to_str().unwrap(),
        ]);
        let manifest: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            manifest["apiVersion"], "policies.portcullis.dev/v1",
            "{yaml}"
        );
        assert_eq!(manifest["kind"], kind);
        assert_eq!(manifest["metadata"]["name"], "pod-privileged-js");
        assert_eq!(
            manifest["metadata"]["annotations"]["io.kubewarden.policy.severity"],
            "high"
        );
        let spec = &manifest["spec"];
        assert_eq!(spec["rules"][0]["resources"][0], "pods", "{yaml}");
        let member = if kind == "ClusterAdmissionPolicyGroup" {
            assert_eq!(spec["expression"], "pod_privileged_js()");
            &spec["policies"]["pod_privileged_js"]
        } else {
            assert_eq!(spec["mutating"], false);
            spec
        };
        assert!(
            member["module"].as_str().unwrap().starts_with("file:///"),
            "{yaml}"
        );
        assert_eq!(member["settings"]["skip_init_containers"], true);
    }
    // A module without metadata cannot make a manifest.
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.wasm");
    std::fs::write(&bare, wat::parse_str("(module)").unwrap()).unwrap();
    let out = portcullis(&[
        "scaffold",
        "manifest",
        "--type",
        "AdmissionPolicy",
        bare.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("annotate it first"));
}

#[test]
fn bench_reports_fresh_and_warm_calls() {
    let out = ok(&[
        "bench",
        "--duration",
        "200ms",
        "--output",
        "json",
        "-r",
        repo()
            .join("tests/fixtures/pod-privileged.json")
            .to_str()
            .unwrap(),
        module_path("pod-privileged-wapc").to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    let fresh = report["fresh_instance_per_call_us"]["p50"]
        .as_f64()
        .unwrap();
    let warm = report["warm_call_us"]["p50"].as_f64().unwrap();
    assert!(fresh > 0.0 && warm >= 0.0, "{report}");
    assert!(
        report["fresh_instance_per_call_us"]["samples"]
            .as_u64()
            .unwrap()
            >= 10
    );
    let table = ok(&[
        "bench",
        "--duration",
        "100ms",
        "-r",
        repo()
            .join("tests/fixtures/pod-privileged.json")
            .to_str()
            .unwrap(),
        module_path("pod-privileged-go").to_str().unwrap(),
    ]);
    assert!(
        table.contains("fresh instance (server)") && table.contains("warm instance (bound)"),
        "{table}"
    );
}

/// `portcullis … | head` ends the CLI quietly, without a panic.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_cli_without_a_panic() {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the CLI has written anything.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&["completions", shell]);
        assert!(
            script.contains("portcullis") && script.contains("scaffold"),
            "{shell}"
        );
    }
}
