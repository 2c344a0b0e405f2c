//! The `policy-server` binary itself: flags from the environment and
//! `--fail-fast`.

mod common;

use std::process::Command;

use common::module;

#[test]
fn fail_fast_exits_non_zero_listing_every_broken_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!(
            "good:\n  module: {}\nbad-settings:\n  module: {}\n  settings: {{behaviour: nope}}\nmissing:\n  module: file:///nonexistent.wasm\n",
            module("pod-privileged-wapc"),
            module("adversarial-wapc"),
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_policy-server"))
        .env("PORTCULLIS_POLICIES", &policies)
        .env("PORTCULLIS_FAIL_FAST", "true")
        .env("PORTCULLIS_LOG_LEVEL", "error")
        .args([
            "--addr",
            "127.0.0.1",
            "--port",
            "0",
            "--readiness-probe-port",
            "0",
        ])
        .arg("--policies-download-dir")
        .arg(dir.path().join("store"))
        .arg("--compiled-cache-dir")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-compiled-cache"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("2 policies failed to load"), "{stderr}");
    assert!(
        stderr.contains("bad-settings: settings are invalid"),
        "{stderr}"
    );
    assert!(stderr.contains("missing: cannot fetch module"), "{stderr}");
}

#[test]
fn missing_policies_file_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_policy-server"))
        .args([
            "--addr",
            "127.0.0.1",
            "--port",
            "0",
            "--readiness-probe-port",
            "0",
        ])
        .arg("--policies")
        .arg(dir.path().join("absent.yml"))
        .arg("--policies-download-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("absent.yml"), "{stderr}");
}
