//! The capabilities that do not read the cluster, end to end: image digests,
//! manifests and configurations from a real registry on loopback (with the
//! server's sources.yml), signature verification's clear refusal, DNS, and
//! certificate chains made with rcgen. Each is called by the waPC probe
//! (through `kubewarden-policy-sdk`'s helpers) and by the component probes of
//! both contract versions (0.2, and the frozen 0.1 where the import exists).

mod common;

#[path = "common/registry.rs"]
mod registry;

use std::collections::BTreeMap;

use common::context::{
    pod_review, policy, probe, probe_answer as answer, probe_refusal as refusal,
};
use common::{Options, TestServer, decode_patch, policies_yaml};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use portcullis_host::fetch::{FetchConfig, ModuleFetcher, SourcesConfig};
use registry::Registry;
use serde_json::json;

const PROBES: [&str; 3] = [
    "capability-probe-wapc",
    "capability-probe-component",
    "capability-probe-v01-component",
];

/// Pushes a small container image with an OCI image configuration.
async fn push_image(registry: &Registry, repo_tag: &str) -> String {
    // The client is built before any test server installs the process' TLS
    // provider (which one runs first is up to the test harness).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let reference: oci_client::Reference =
        format!("{}/{repo_tag}", registry.host()).parse().unwrap();
    let layer = ImageLayer::new(
        b"not really a tarball".to_vec(),
        "application/vnd.oci.image.layer.v1.tar".to_string(),
        None,
    );
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["GREETING=hello"], "User": "1000"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "0".repeat(64))]}
    });
    let config = Config::new(
        config.to_string().into_bytes(),
        "application/vnd.oci.image.config.v1+json".to_string(),
        None,
    );
    client
        .push(&reference, &[layer], config, &RegistryAuth::Anonymous, None)
        .await
        .unwrap();
    client
        .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
        .await
        .unwrap()
}

fn server_options(dir: &std::path::Path, registry: &Registry) -> Options {
    let sources = dir.join("sources.yml");
    std::fs::write(
        &sources,
        format!("insecure_sources: [\"{}\"]\n", registry.host()),
    )
    .unwrap();
    Options {
        tweak: Box::new(move |config| config.sources_path = Some(sources)),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_digest_policies_pin_images_from_the_registry_in_both_abis() {
    let registry = Registry::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    // Any OCI artifact has a manifest digest; a policy module will do.
    let fetcher = ModuleFetcher::new(FetchConfig {
        sources: SourcesConfig {
            insecure_sources: vec![registry.host()],
            ..Default::default()
        },
        ..FetchConfig::new(dir.path().join("store"))
    })
    .unwrap();
    let wasm = std::fs::read(common::policies_dir().join("pod-privileged-wapc.wasm")).unwrap();
    let pushed = fetcher
        .push(&wasm, &registry.uri("apps/web:1.0"), BTreeMap::new())
        .await
        .unwrap();
    let image = format!("{}/apps/web:1.0", registry.host());
    let grants = "allowedToMutate: true\nhostCapabilities: [\"oci/v1/manifest_digest\"]\n";
    let yaml = policies_yaml(&[
        ("digest-wapc", policy("image-digest-wapc", grants)),
        ("digest-component", policy("image-digest-component", grants)),
    ]);
    let server = TestServer::start(&yaml, server_options(dir.path(), &registry)).await;
    for id in ["digest-wapc", "digest-component"] {
        let pinned = format!("{image}@{}", pushed.manifest_digest);
        let review = pod_review("default", "u", &[], &[&image, &pinned]);
        let response = server.validate(id, &review).await;
        assert_eq!(response["allowed"], true, "{id}: {response}");
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &decode_patch(&response)).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["image"], pinned, "{id}");
        assert_eq!(
            pod["spec"]["containers"][1]["image"], pinned,
            "{id}: left as it was"
        );

        let missing = format!("{}/apps/web:9.9", registry.host());
        let response = server
            .validate(id, &pod_review("default", "u", &[], &[&missing]))
            .await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
        assert_eq!(response["status"]["code"], 400, "{id}: {response}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("cannot resolve the digest of image {missing}: "))
                && message.contains("not found"),
            "{id}: {message}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_dns_and_certificate_capabilities_answer_every_probe() {
    let registry = Registry::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    let digest = push_image(&registry, "apps/api:2").await;
    let image = format!("{}/apps/api:2", registry.host());

    let chain = Chain::new();
    let mut entries = Vec::new();
    for module in PROBES {
        entries.push((
            format!("{module}-digest"),
            probe(module, "manifest_digest", json!(image), ""),
        ));
        entries.push((
            format!("{module}-dns"),
            probe(module, "dns", json!("localhost"), ""),
        ));
        entries.push((
            format!("{module}-trusted"),
            probe(
                module,
                "certificate",
                json!({"cert": chain.leaf, "chain": [chain.intermediate, chain.root]}),
                "",
            ),
        ));
        entries.push((
            format!("{module}-untrusted"),
            probe(
                module,
                "certificate",
                json!({"cert": chain.leaf, "chain": [chain.intermediate, chain.other_root]}),
                "",
            ),
        ));
    }
    for module in &PROBES[..2] {
        entries.push((
            format!("{module}-manifest"),
            probe(module, "manifest", json!(image), ""),
        ));
        entries.push((
            format!("{module}-config"),
            probe(module, "manifest_and_config", json!(image), ""),
        ));
        entries.push((
            format!("{module}-verify"),
            probe(
                module,
                "verify_pub_keys",
                json!({"image": image, "keys": ["-----BEGIN PUBLIC KEY-----"]}),
                "",
            ),
        ));
    }
    let entries: Vec<(&str, String)> = entries
        .iter()
        .map(|(i, b)| (i.as_str(), b.clone()))
        .collect();
    let server = TestServer::start(
        &policies_yaml(&entries),
        server_options(dir.path(), &registry),
    )
    .await;

    for module in PROBES {
        let answer_of = |call: &str| format!("{module}-{call}");
        let value = answer(&server, &answer_of("digest")).await;
        let found = value.get("digest").unwrap_or(&value);
        assert_eq!(found, &json!(digest), "{module}");

        let value = answer(&server, &answer_of("dns")).await;
        let ips = value.get("ips").unwrap_or(&value);
        assert!(
            ips.as_array().unwrap().iter().any(|ip| ip == "127.0.0.1"),
            "{module}: {value}"
        );

        let value = answer(&server, &answer_of("trusted")).await;
        assert_eq!(value["trusted"], true, "{module}: {value}");
        let value = answer(&server, &answer_of("untrusted")).await;
        assert_eq!(value["trusted"], false, "{module}: {value}");
        assert!(
            value["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("Certificate is not trusted by the provided cert chain"),
            "{module}: {value}"
        );
    }
    for module in &PROBES[..2] {
        let value = answer(&server, &format!("{module}-manifest")).await;
        assert_eq!(value["schemaVersion"], 2, "{module}: {value}");
        assert_eq!(
            value["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar",
            "{module}: {value}"
        );
        let value = answer(&server, &format!("{module}-config")).await;
        assert_eq!(value["digest"], digest, "{module}: {value}");
        assert_eq!(
            value["config"]["config"]["Env"],
            json!(["GREETING=hello"]),
            "{module}: {value}"
        );
        assert_eq!(
            value["config"]["architecture"], "amd64",
            "{module}: {value}"
        );
        let message = refusal(&server, &format!("{module}-verify")).await;
        assert!(
            message
                .contains("signature verification (oci/v1/verify, oci/v2/verify) is not supported"),
            "{module}: {message}"
        );
    }
    server.stop().await;
}

/// A root, an intermediate and a leaf made with rcgen, and an unrelated root.
struct Chain {
    root: String,
    intermediate: String,
    leaf: String,
    other_root: String,
}

impl Chain {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca = |name: &str| {
            let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let key = KeyPair::generate().unwrap();
            (params, key)
        };
        let (root_params, root_key) = ca("root.example.test");
        let root = root_params.self_signed(&root_key).unwrap();
        let (intermediate_params, intermediate_key) = ca("intermediate.example.test");
        let intermediate = intermediate_params
            .signed_by(&intermediate_key, &root, &root_key)
            .unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["leaf.example.test".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &intermediate, &intermediate_key)
            .unwrap();
        let (other_params, other_key) = ca("other.example.test");
        let other_root = other_params.self_signed(&other_key).unwrap();
        Self {
            root: root.pem(),
            intermediate: intermediate.pem(),
            leaf: leaf.pem(),
            other_root: other_root.pem(),
        }
    }
}
