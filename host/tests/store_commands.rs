//! `portcullis policies`, `rm`, `digest`, `save` and `load` against a real
//! OCI registry on loopback: a policy pushed there is saved to a tarball,
//! loaded into an empty store with the registry gone (an air-gapped cluster),
//! found by `policies` and evaluated from the store, then removed.
//!
//! Needs the registry binary (`scripts/go-tools.sh registry`) and the
//! compiled sample policies (`scripts/build-policies.sh`).

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::policies_dir;
use registry::Registry;
use serde_json::Value;

struct Cli {
    store: PathBuf,
    sources: PathBuf,
    docker_config: PathBuf,
}

impl Cli {
    fn new(dir: &Path, registry: &Registry, store: &str) -> Cli {
        let sources = dir.join("sources.yml");
        std::fs::write(
            &sources,
            format!("insecure_sources:\n  - \"{}\"\n", registry.host()),
        )
        .unwrap();
        let docker_config = dir.join("docker");
        std::fs::create_dir_all(&docker_config).unwrap();
        std::fs::write(docker_config.join("config.json"), "{}").unwrap();
        Cli {
            store: dir.join(store),
            sources,
            docker_config,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .arg("--sources-path")
            .arg(&self.sources)
            .arg("--docker-config")
            .arg(&self.docker_config)
            .env("PORTCULLIS_STORE", &self.store)
            .env(
                "PORTCULLIS_COMPILED_CACHE_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-compiled-cache"),
            )
            .env_remove("PORTCULLIS_SOURCES_PATH")
            .env_remove("PORTCULLIS_DOCKER_CONFIG_JSON_PATH")
            .stdin(Stdio::null())
            .output()
            .expect("run portcullis")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "portcullis {args:?} failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn policies(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.ok(&["policies", "-o", "json"]))
            .unwrap()
            .as_array()
            .cloned()
            .unwrap()
    }
}

#[test]
fn save_load_list_digest_and_remove() {
    let mut registry = Registry::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    let online = Cli::new(dir.path(), &registry, "online-store");
    let reference = registry.uri("policies/pod-privileged-go:v1");
    let module = policies_dir().join("pod-privileged-go.wasm");
    let pushed: Value =
        serde_json::from_str(&online.ok(&["push", module.to_str().unwrap(), &reference])).unwrap();
    let manifest_digest = pushed["digest"].as_str().unwrap().to_string();

    // digest pins the tag to the manifest.
    let pinned = online.ok(&["digest", &reference]);
    assert_eq!(pinned.trim(), format!("{reference}@{manifest_digest}"));

    let tarball = dir.path().join("policies.tar.gz");
    let saved = online.ok(&["save", "-o", tarball.to_str().unwrap(), &reference]);
    assert!(saved.contains("saved 1 policies (1 modules)"), "{saved}");

    // The registry goes away: the offline store gets the tarball.
    registry.stop();
    let offline = Cli::new(dir.path(), &registry, "offline-store");
    assert!(offline.policies().is_empty());
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pod-privileged.json");
    let unreachable = offline.run(&["run", "-r", fixture.to_str().unwrap(), &reference]);
    assert!(
        !unreachable.status.success(),
        "the registry is gone and nothing is stored"
    );

    offline.ok(&["load", "-i", tarball.to_str().unwrap()]);
    // The tag, and the tag pinned to its manifest digest.
    let listed = offline.policies();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let pinned_uri = format!("{reference}@{manifest_digest}");
    assert_eq!(listed[0]["uri"], reference);
    assert_eq!(listed[1]["uri"], pinned_uri.as_str());
    assert_eq!(listed[0]["manifestDigest"], manifest_digest.as_str());
    let wasm_digest = listed[0]["digest"].as_str().unwrap().to_string();
    let table = offline.ok(&["policies"]);
    assert!(
        table.contains(&reference) && table.contains(&wasm_digest[..19]),
        "{table}"
    );
    // Served from the store, without the registry.
    let response = offline.ok(&[
        "run",
        "-r",
        fixture.to_str().unwrap(),
        &format!("{reference}@{manifest_digest}"),
    ]);
    assert!(
        response.contains("Privileged container is not allowed: sidecar"),
        "{response}"
    );

    // rm by digest prefix; the module file goes with its last reference.
    let path = listed[0]["path"].as_str().unwrap().to_string();
    let removed = offline.ok(&["rm", &wasm_digest["sha256:".len()..][..12]]);
    assert!(
        removed.contains(&reference) && removed.contains(&pinned_uri),
        "{removed}"
    );
    assert!(offline.policies().is_empty());
    assert!(!Path::new(&path).exists());
    let out = offline.run(&["rm", "registry://nowhere/x:y"]);
    assert!(!out.status.success());

    // A corrupt tarball is refused before anything is stored.
    let bytes = std::fs::read(&tarball).unwrap();
    let corrupt = dir.path().join("corrupt.tar.gz");
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    assert!(
        !offline
            .run(&["load", "-i", corrupt.to_str().unwrap()])
            .status
            .success()
    );
    assert!(offline.policies().is_empty());
}
