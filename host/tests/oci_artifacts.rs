//! The sample policies as OCI artifacts, end to end with real binaries: the
//! `portcullis` CLI pushes `pod-privileged-{wapc,component}.wasm` to a real CNCF
//! distribution registry on loopback, the manifest the registry stores is
//! checked (digest, Kubewarden media types, annotations), `portcullis pull`
//! gives back the same bytes, and a policy-server configured with the
//! `registry://` URIs denies a privileged Pod with either ABI.
//!
//! Needs the registry binary (`scripts/go-tools.sh registry`, i.e.
//! `~/.cache/portcullis/bin/registry`, or `$PORTCULLIS_REGISTRY_BIN`) and the
//! compiled sample policies (`scripts/build-policies.sh`).

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Options, TestServer, fixture, policies_dir, policies_yaml};
use portcullis_host::fetch::{WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};
use registry::Registry;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const ABIS: [&str; 2] = ["wapc", "component"];
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const PRIVILEGED_MESSAGE: &str = "Privileged container is not allowed: sidecar";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Files the CLI and the policy-server share: a sources.yml listing the
/// registry as insecure, an empty Docker config and a private module store.
struct Setup {
    dir: tempfile::TempDir,
    sources: PathBuf,
    docker_config: PathBuf,
}

impl Setup {
    fn new(registry: &Registry) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sources = dir.path().join("sources.yml");
        std::fs::write(
            &sources,
            format!("insecure_sources:\n  - \"{}\"\n", registry.host()),
        )
        .unwrap();
        // Never read the developer's own registry credentials.
        let docker_config = dir.path().join("docker");
        std::fs::create_dir_all(&docker_config).unwrap();
        std::fs::write(docker_config.join("config.json"), "{}").unwrap();
        Setup {
            dir,
            sources,
            docker_config,
        }
    }

    /// Runs the `portcullis` CLI; panics with its output unless it succeeds;
    /// returns stdout parsed as JSON.
    fn portcullis(&self, args: &[&str]) -> Value {
        let output: Output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .arg("--sources-path")
            .arg(&self.sources)
            .arg("--docker-config")
            .arg(&self.docker_config)
            .env("PORTCULLIS_STORE", self.dir.path().join("cli-store"))
            .env_remove("PORTCULLIS_SOURCES_PATH")
            .env_remove("PORTCULLIS_DOCKER_CONFIG_JSON_PATH")
            .stdin(Stdio::null())
            .output()
            .expect("run portcullis");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "portcullis {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("portcullis {args:?} printed non-JSON ({e}): {stdout}"))
    }
}

fn module_path(name: &str) -> PathBuf {
    let path = policies_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-policies.sh first",
        path.display()
    );
    path
}

/// The metadata annotations embedded in a module (`io.kubewarden.metadata`
/// in waPC modules, `portcullis.metadata` in components).
fn module_annotations(wasm: &[u8]) -> serde_json::Map<String, Value> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let Ok(wasmparser::Payload::CustomSection(section)) = payload
            && matches!(
                section.name(),
                "io.kubewarden.metadata" | "portcullis.metadata"
            )
        {
            let metadata: Value = serde_json::from_slice(section.data()).expect("metadata JSON");
            return metadata["annotations"]
                .as_object()
                .cloned()
                .unwrap_or_default();
        }
    }
    panic!("module has no metadata section");
}

/// GETs the manifest the registry stores for `repo:tag`; returns its raw bytes.
async fn stored_manifest(registry: &Registry, repo: &str, tag: &str) -> Vec<u8> {
    // reqwest is built without a bundled crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest_oci::Client::new()
        .get(format!(
            "http://{}/v2/{repo}/manifests/{tag}",
            registry.host()
        ))
        .header("accept", MANIFEST_MEDIA_TYPE)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(response.status().as_u16(), 200, "GET manifest {repo}:{tag}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, MANIFEST_MEDIA_TYPE, "{repo}:{tag}");
    // The registry names the manifest by its digest too.
    let header_digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await.expect("manifest body").to_vec();
    if let Some(header_digest) = header_digest {
        assert_eq!(
            header_digest,
            sha256(&body),
            "Docker-Content-Digest of {repo}:{tag}"
        );
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_policies_push_pull_and_serve_from_a_registry() {
    let registry = Registry::start(None, None);
    let setup = Setup::new(&registry);
    let mut entries = Vec::new();

    for abi in ABIS {
        let name = format!("pod-privileged-{abi}");
        let path = module_path(&name);
        let wasm = std::fs::read(&path).unwrap();
        let repo = format!("policies/{name}");
        let reference = format!("registry://{}/{repo}:v1", registry.host());

        // push: prints the reference and the manifest digest.
        let pushed = setup.portcullis(&[
            "push",
            path.to_str().unwrap(),
            &reference,
            "--annotation",
            "io.portcullis.e2e=oci-artifacts",
        ]);
        let digest = pushed["digest"].as_str().expect("digest").to_owned();
        assert!(is_sha256_digest(&digest), "{name}: digest {digest:?}");
        assert_eq!(pushed["reference"], reference.as_str(), "{name}");

        // The registry stores exactly the manifest whose digest was printed.
        let body = stored_manifest(&registry, &repo, "v1").await;
        assert_eq!(
            sha256(&body),
            digest,
            "{name}: printed digest is the stored manifest's"
        );
        let manifest: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(manifest["schemaVersion"], 2, "{name}: {manifest}");
        // `mediaType` is optional in an OCI manifest (oci-client, like kwctl,
        // leaves it out); the registry serves it with the OCI content type.
        assert!(
            manifest["mediaType"].is_null() || manifest["mediaType"] == MANIFEST_MEDIA_TYPE,
            "{name}: {manifest}"
        );
        assert_eq!(
            manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE,
            "{name}"
        );
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 1, "{name}: one wasm layer: {manifest}");
        assert_eq!(layers[0]["mediaType"], WASM_LAYER_MEDIA_TYPE, "{name}");
        assert_eq!(layers[0]["digest"], sha256(&wasm).as_str(), "{name}");
        assert_eq!(layers[0]["size"], wasm.len() as u64, "{name}");

        // Annotations: the OCI title plus what the module's metadata says.
        let annotations = &manifest["annotations"];
        let metadata = module_annotations(&wasm);
        assert_eq!(
            annotations["org.opencontainers.image.title"], metadata["io.kubewarden.policy.title"],
            "{name}: {annotations}"
        );
        assert_eq!(annotations["org.opencontainers.image.title"], name.as_str());
        assert_eq!(
            annotations["org.opencontainers.image.description"],
            metadata["io.kubewarden.policy.description"],
            "{name}: {annotations}"
        );
        assert_eq!(
            annotations["org.opencontainers.image.licenses"],
            metadata["io.kubewarden.policy.license"],
            "{name}: {annotations}"
        );
        assert_eq!(annotations["io.portcullis.e2e"], "oci-artifacts");

        // pull: the same bytes come back, by tag and pinned by digest.
        for (label, source) in [
            ("tag", reference.clone()),
            ("digest", format!("{reference}@{digest}")),
        ] {
            let output = setup.dir.path().join(format!("{name}-{label}.wasm"));
            let pulled = setup.portcullis(&["pull", &source, "--output", output.to_str().unwrap()]);
            assert_eq!(
                std::fs::read(&output).unwrap(),
                wasm,
                "{name}: pulled by {label}"
            );
            assert_eq!(pulled["digest"], sha256(&wasm).as_str(), "{name}");
            assert_eq!(pulled["manifest_digest"], digest.as_str(), "{name}");
        }

        entries.push((format!("priv-{abi}"), format!("module: {reference}\n")));
    }

    // The policy-server fetches both modules from the registry and denies a
    // privileged Pod with either.
    let sources = setup.sources.clone();
    let docker_config = setup.docker_config.clone();
    let entries: Vec<(&str, String)> = entries
        .iter()
        .map(|(id, body)| (id.as_str(), body.clone()))
        .collect();
    let server = TestServer::start(
        &policies_yaml(&entries),
        Options {
            tweak: Box::new(move |config| {
                config.sources_path = Some(sources);
                config.docker_config_json_path = Some(docker_config);
            }),
            ..Options::default()
        },
    )
    .await;
    for abi in ABIS {
        let id = format!("priv-{abi}");
        let response = server.validate(&id, &fixture("pod-privileged.json")).await;
        assert_eq!(response["uid"], "22222222-2222-2222-2222-222222222222");
        assert_eq!(response["allowed"], false, "{id}: {response}");
        assert_eq!(
            response["status"]["message"], PRIVILEGED_MESSAGE,
            "{id}: {response}"
        );
        let response = server
            .validate(&id, &fixture("pod-unprivileged.json"))
            .await;
        assert_eq!(response["allowed"], true, "{id}: {response}");
    }
    // The modules came from the registry: they are in the server's own store.
    let stored: Vec<_> = std::fs::read_dir(server.dir.path().join("store/sha256"))
        .expect("the policy-server's module store")
        .collect();
    assert!(stored.len() >= 2, "store holds {} modules", stored.len());
    server.stop().await;
    drop(registry);
}

/// `(NAME, MODULE)` of each policy in `sample-policies/published.txt`.
fn published_policies() -> Vec<(String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sample-policies/published.txt");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(name), Some(module), None) => (name.to_owned(), module.to_owned()),
                _ => panic!("{}: malformed line {l:?}", path.display()),
            }
        })
        .collect()
}

/// `scripts/release.sh --policies-only` publishes every policy of
/// `sample-policies/published.txt` under the names the charts use, prints each
/// reference with its manifest digest, and each pulls back byte for byte.
#[test]
fn release_script_publishes_the_sample_policies() {
    let registry = Registry::start(None, None);
    let setup = Setup::new(&registry);
    let prefix = format!("{}/portcullis-dev", registry.host());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/release.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args(["--policies-only", &prefix])
        .env("PORTCULLIS", env!("CARGO_BIN_EXE_portcullis"))
        .env("POLICIES_DIR", policies_dir())
        .env("SOURCES_PATH", &setup.sources)
        .env("DOCKER_CONFIG", &setup.docker_config)
        .env("PORTCULLIS_STORE", setup.dir.path().join("release-store"))
        .env_remove("PORTCULLIS_SOURCES_PATH")
        .env_remove("PORTCULLIS_DOCKER_CONFIG_JSON_PATH")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/release.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "release.sh failed ({}):\nstdout: {stdout}\nstderr: {}\nregistry: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        registry.log_text()
    );

    let published = published_policies();
    assert!(
        published.iter().any(|(name, _)| name == "pod-privileged"),
        "the recommended policy of charts/portcullis-defaults is published"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        published.len(),
        "one line per policy:\n{stdout}"
    );
    let version = env!("CARGO_PKG_VERSION");
    for ((name, module), line) in published.iter().zip(&lines) {
        let reference = format!("registry://{prefix}/policies/{name}:v{version}");
        let digest = line
            .strip_prefix(&format!("{reference}@"))
            .unwrap_or_else(|| panic!("expected {reference}@<digest>, got {line}"));
        assert!(is_sha256_digest(digest), "{line}");

        let out = setup.dir.path().join(format!("{name}.wasm"));
        let pulled = setup.portcullis(&["pull", &reference, "-o", out.to_str().unwrap()]);
        assert_eq!(pulled["manifest_digest"], digest, "{reference}");
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(module_path(module)).unwrap(),
            "{reference} holds target/policies/{module}.wasm"
        );
    }
}
