//! Every `portcullis scaffold policy` template, built and tested as an author
//! would: scaffold, `./build.sh`, `portcullis test`. A template that stops
//! building or passing its own tests fails here.
//!
//! Needs the toolchains `scripts/setup.sh` installs (the wasm targets,
//! componentize-py, componentize-js, Go). The Rust templates build in
//! `$CARGO_TARGET_DIR/scaffold-templates` (CI keeps it in ~/.cache/portcullis),
//! so that repeated runs reuse their dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The workspace's target directory, as cargo was told it.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

fn scaffold_build_and_test(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("my-policy");
    let portcullis = env!("CARGO_BIN_EXE_portcullis");
    let cache_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/portcullis/bin"))
        .unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(cache_bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let run = |program: &str, args: &[&str], cwd: &Path| {
        let out = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env("PATH", &path)
            .env("PORTCULLIS", portcullis)
            .env(
                "PORTCULLIS_COMPILED_CACHE_DIR",
                repo().join("target/test-compiled-cache"),
            )
            .env(
                "CARGO_TARGET_DIR",
                target_dir().join("scaffold-templates").join(lang),
            )
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{lang}: {program} {args:?} failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    run(
        portcullis,
        &[
            "scaffold",
            "policy",
            "--lang",
            lang,
            "--path",
            project.to_str().unwrap(),
            "my-policy",
        ],
        dir.path(),
    );
    for file in [
        "README.md",
        "metadata.yml",
        "portcullis-test.yaml",
        "build.sh",
    ] {
        assert!(project.join(file).is_file(), "{lang}: no {file}");
    }
    run("./build.sh", &[], &project);
    let inspected: serde_json::Value =
        serde_json::from_str(&run(portcullis, &["inspect", "policy.wasm"], &project)).unwrap();
    assert_eq!(
        inspected["metadata"]["annotations"]["io.kubewarden.policy.title"],
        "my-policy"
    );
    let report = run(portcullis, &["test"], &project);
    assert!(
        report.ends_with("\n4 passed, 0 failed\n"),
        "{lang}:\n{report}"
    );
}

#[test]
fn rust_wapc_template() {
    scaffold_build_and_test("rust-wapc");
}

#[test]
fn rust_component_template() {
    scaffold_build_and_test("rust-component");
}

#[test]
fn python_template() {
    scaffold_build_and_test("python");
}

#[test]
fn javascript_template() {
    scaffold_build_and_test("javascript");
}

#[test]
fn go_template() {
    scaffold_build_and_test("go");
}
