//! End-to-end tests of `portcullis_host::fetch` against a real CNCF
//! distribution registry (plain HTTP, TLS with a test CA, htpasswd auth) and
//! small HTTP servers. Nothing is mocked.
//!
//! The registry binary comes from `scripts/go-tools.sh registry`
//! (`~/.cache/portcullis/bin/registry`) or `$PORTCULLIS_REGISTRY_BIN`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use portcullis_config::{SourceAuthority, SourcesConfig};
use portcullis_host::fetch::{
    FetchConfig, FetchError, ModuleFetcher, PLAIN_WASM_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE,
};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---------------------------------------------------------------- helpers

#[path = "common/registry.rs"]
mod registry;

use registry::{Registry, make_tls};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A tiny valid wasm module: the header plus a Kubewarden metadata custom
/// section (whose annotations feed the pushed manifest) and a custom section
/// with `tag`, so different tags give different digests.
fn tiny_module(tag: &str) -> Vec<u8> {
    fn custom_section(out: &mut Vec<u8>, name: &str, payload: &[u8]) {
        let mut body = Vec::new();
        leb128(&mut body, name.len());
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(payload);
        out.push(0);
        leb128(out, body.len());
        out.extend_from_slice(&body);
    }
    fn leb128(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    let metadata = serde_json::json!({
        "protocolVersion": "v1",
        "annotations": {
            "io.kubewarden.policy.title": "tiny-policy",
            "io.kubewarden.policy.license": "Apache-2.0",
        }
    });
    custom_section(
        &mut module,
        "io.kubewarden.metadata",
        metadata.to_string().as_bytes(),
    );
    custom_section(&mut module, "portcullis.test", tag.as_bytes());
    assert!(wasmparser::Validator::new().validate_all(&module).is_ok());
    module
}

/// An empty Docker config dir, so tests never read the developer's own.
fn no_docker_config(dir: &Path) -> PathBuf {
    let path = dir.join("docker");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("config.json"), "{}").unwrap();
    path
}

fn fetcher(dir: &Path, sources: SourcesConfig, docker_config: Option<PathBuf>) -> ModuleFetcher {
    ModuleFetcher::new(FetchConfig {
        download_dir: dir.join("store"),
        sources,
        docker_config: Some(docker_config.unwrap_or_else(|| no_docker_config(dir))),
    })
    .unwrap()
}

fn insecure(host: &str) -> SourcesConfig {
    SourcesConfig {
        insecure_sources: vec![host.to_owned()],
        ..Default::default()
    }
}

fn with_ca(host: &str, ca_pem: &str) -> SourcesConfig {
    SourcesConfig {
        source_authorities: BTreeMap::from([(
            host.to_owned(),
            vec![SourceAuthority::Data {
                data: ca_pem.to_owned(),
            }],
        )]),
        ..Default::default()
    }
}

/// Pushes an arbitrary artifact with oci-client directly (to build the
/// malformed artifacts `ModuleFetcher::push` refuses to produce).
async fn push_raw(registry: &Registry, repo: &str, layers: Vec<(Vec<u8>, &str)>) {
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::try_from(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
    .unwrap();
    let reference: oci_client::Reference = format!("{}/{repo}", registry.host()).parse().unwrap();
    let layers: Vec<ImageLayer> = layers
        .into_iter()
        .map(|(data, media_type)| ImageLayer::new(data, media_type.to_owned(), None))
        .collect();
    let config = Config::new(b"{}".to_vec(), WASM_CONFIG_MEDIA_TYPE.to_owned(), None);
    client
        .push(
            &reference,
            &layers,
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap();
}

/// A one-route-per-path HTTP/1.1 server; unknown paths get 404.
/// Returns the port; the server lives until the returned handle is aborted.
async fn serve_http(routes: Vec<(&'static str, Vec<u8>)>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let routes = std::sync::Arc::new(routes);
    let handle = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"no such policy".to_vec()),
                };
                let mut response = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                response.extend_from_slice(&body);
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, handle)
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_fetch_by_tag_and_digest_over_plain_http() {
    let registry = Registry::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    let fetcher = fetcher(dir.path(), insecure(&registry.host()), None);
    let wasm = tiny_module("one");
    let uri = registry.uri("policies/x:v1");

    let pushed = fetcher
        .push(
            &wasm,
            &uri,
            BTreeMap::from([("io.portcullis.extra".to_owned(), "yes".to_owned())]),
        )
        .await
        .unwrap();
    assert_eq!(pushed.reference, uri);
    assert!(pushed.manifest_digest.starts_with("sha256:"));

    // The manifest is a Kubewarden policy artifact with our annotations.
    let body = reqwest_oci::Client::new()
        .get(format!(
            "http://{}/v2/policies/x/manifests/v1",
            registry.host()
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        sha256(&body),
        pushed.manifest_digest,
        "reported digest is the stored manifest's"
    );
    assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
    assert_eq!(manifest["layers"][0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
    assert_eq!(manifest["layers"][0]["digest"], sha256(&wasm).as_str());
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["org.opencontainers.image.title"], "tiny-policy");
    assert_eq!(
        annotations["org.opencontainers.image.licenses"],
        "Apache-2.0"
    );
    assert_eq!(annotations["io.portcullis.extra"], "yes");

    let by_tag = fetcher.fetch(&uri).await.unwrap();
    assert_eq!(&*by_tag.bytes, wasm.as_slice());
    assert_eq!(by_tag.digest, sha256(&wasm));
    assert_eq!(by_tag.source, uri);
    assert_eq!(
        by_tag.manifest_digest.as_deref(),
        Some(pushed.manifest_digest.as_str())
    );
    assert_eq!(std::fs::read(&by_tag.path).unwrap(), wasm);
    assert!(
        by_tag
            .path
            .starts_with(dir.path().join("store").join("sha256"))
    );

    let pinned = format!(
        "registry://{}/policies/x@{}",
        registry.host(),
        pushed.manifest_digest
    );
    let by_digest = fetcher.fetch(&pinned).await.unwrap();
    assert_eq!(&*by_digest.bytes, wasm.as_slice());
    assert_eq!(by_digest.digest, by_tag.digest);

    // A bare reference (no scheme) is a registry reference too.
    let bare = fetcher
        .fetch(&format!("{}/policies/x:v1", registry.host()))
        .await
        .unwrap();
    assert_eq!(bare.digest, by_tag.digest);

    // Moving the tag is noticed on the next fetch.
    let wasm2 = tiny_module("two");
    fetcher.push(&wasm2, &uri, BTreeMap::new()).await.unwrap();
    let moved = fetcher.fetch(&uri).await.unwrap();
    assert_eq!(moved.digest, sha256(&wasm2));
    assert_ne!(moved.manifest_digest, by_tag.manifest_digest);

    // Unknown tag / repository: a not-found error naming the URI.
    let missing = registry.uri("policies/x:nope");
    let err = fetcher.fetch(&missing).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing), "{err}");
    let err = fetcher
        .fetch(&registry.uri("policies/never:v1"))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");

    // Without insecure_sources the registry is spoken to over TLS, which a
    // plain-HTTP registry cannot do.
    let dir2 = tempfile::tempdir().unwrap();
    let strict = self::fetcher(dir2.path(), SourcesConfig::default(), None);
    let err = strict.fetch(&uri).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&uri), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_media_type_not_wasm_and_layer_count_are_rejected() {
    let registry = Registry::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    let fetcher = fetcher(dir.path(), insecure(&registry.host()), None);

    push_raw(
        &registry,
        "bad/tarball:v1",
        vec![(
            b"not a tarball".to_vec(),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )],
    )
    .await;
    let err = fetcher
        .fetch(&registry.uri("bad/tarball:v1"))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::MediaType { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("bad/tarball:v1") && msg.contains("tar+gzip"),
        "{msg}"
    );

    push_raw(
        &registry,
        "bad/notwasm:v1",
        vec![(b"#!/bin/sh\necho hi\n".to_vec(), WASM_LAYER_MEDIA_TYPE)],
    )
    .await;
    let err = fetcher
        .fetch(&registry.uri("bad/notwasm:v1"))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::NotWasm { .. }), "{err:?}");
    assert!(err.to_string().contains("bad/notwasm:v1"), "{err}");

    let wasm = tiny_module("x");
    push_raw(
        &registry,
        "bad/two-layers:v1",
        vec![
            (wasm.clone(), WASM_LAYER_MEDIA_TYPE),
            (tiny_module("y"), WASM_LAYER_MEDIA_TYPE),
        ],
    )
    .await;
    let err = fetcher
        .fetch(&registry.uri("bad/two-layers:v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::LayerCount { count: 2, .. }),
        "{err:?}"
    );

    // A plain `application/wasm` layer (other tools) is accepted.
    push_raw(
        &registry,
        "ok/plain:v1",
        vec![(wasm.clone(), PLAIN_WASM_MEDIA_TYPE)],
    )
    .await;
    let fetched = fetcher.fetch(&registry.uri("ok/plain:v1")).await.unwrap();
    assert_eq!(&*fetched.bytes, wasm.as_slice());

    // push refuses non-wasm input.
    let err = fetcher
        .push(b"hello", &registry.uri("bad/push:v1"), BTreeMap::new())
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::NotWasm { .. }), "{err:?}");
    // A digest that does not exist is "not found", not a crash.
    let err = fetcher
        .fetch(&format!(
            "registry://{}/ok/plain@sha256:{}",
            registry.host(),
            "0".repeat(64)
        ))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_auth_with_docker_config_credentials() {
    let registry = Registry::start(None, Some(("alice", "s3cret")));
    let dir = tempfile::tempdir().unwrap();
    let wasm = tiny_module("auth");
    let uri = registry.uri("private/policy:v1");

    // Anonymous: denied, with a hint at the Docker config.
    let anonymous = fetcher(dir.path(), insecure(&registry.host()), None);
    let err = anonymous
        .push(&wasm, &uri, BTreeMap::new())
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains(&uri), "{err}");

    // `auth` (base64 user:password) form, in a config.json given as a file.
    let config = dir.path().join("auth-config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(
        &config,
        serde_json::json!({"auths": {registry.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let store_a = tempfile::tempdir().unwrap();
    let with_auth = fetcher(store_a.path(), insecure(&registry.host()), Some(config));
    let pushed = with_auth.push(&wasm, &uri, BTreeMap::new()).await.unwrap();
    let fetched = with_auth.fetch(&uri).await.unwrap();
    assert_eq!(fetched.digest, sha256(&wasm));
    assert_eq!(fetched.manifest_digest, Some(pushed.manifest_digest));

    // `username`/`password` form, in a directory holding config.json.
    let config_dir = dir.path().join("userpass");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.json"),
        serde_json::json!({"auths": {format!("http://{}", registry.host()):
            {"username": "alice", "password": "s3cret"}}})
        .to_string(),
    )
    .unwrap();
    let store_b = tempfile::tempdir().unwrap();
    let userpass = fetcher(store_b.path(), insecure(&registry.host()), Some(config_dir));
    assert_eq!(userpass.fetch(&uri).await.unwrap().digest, sha256(&wasm));

    // Wrong password: denied on pull.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        serde_json::json!({"auths": {registry.host(): {"username": "alice", "password": "nope"}}})
            .to_string(),
    )
    .unwrap();
    let store_c = tempfile::tempdir().unwrap();
    let wrong = fetcher(store_c.path(), insecure(&registry.host()), Some(bad));
    let err = wrong.fetch(&uri).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_with_source_authority() {
    let certs = tempfile::tempdir().unwrap();
    let tls = make_tls(certs.path());
    let registry = Registry::start(Some(&tls), None);
    let dir = tempfile::tempdir().unwrap();
    let wasm = tiny_module("tls");
    let uri = registry.uri("secure/policy:v1");

    // Trusted through source_authorities (inline PEM).
    let trusted = fetcher(dir.path(), with_ca(&registry.host(), &tls.ca_pem), None);
    let pushed = trusted.push(&wasm, &uri, BTreeMap::new()).await.unwrap();
    let fetched = trusted.fetch(&uri).await.unwrap();
    assert_eq!(&*fetched.bytes, wasm.as_slice());
    assert_eq!(
        fetched.manifest_digest.as_deref(),
        Some(pushed.manifest_digest.as_str())
    );

    // The same CA from a file (DER), and an https:// download of the blob.
    let der_path = certs.path().join("ca.der");
    let der = rustls_pki_pem_to_der(&tls.ca_pem);
    std::fs::write(&der_path, der).unwrap();
    let sources = SourcesConfig {
        source_authorities: BTreeMap::from([(
            registry.host(),
            vec![SourceAuthority::Path { path: der_path }],
        )]),
        ..Default::default()
    };
    let dir_der = tempfile::tempdir().unwrap();
    let from_file = fetcher(dir_der.path(), sources, None);
    let blob = format!(
        "https://{}/v2/secure/policy/blobs/{}",
        registry.host(),
        sha256(&wasm)
    );
    let downloaded = from_file.fetch(&blob).await.unwrap();
    assert_eq!(&*downloaded.bytes, wasm.as_slice());
    assert_eq!(from_file.fetch(&uri).await.unwrap().digest, sha256(&wasm));

    // Untrusted CA: a clear TLS failure naming the URI.
    let dir2 = tempfile::tempdir().unwrap();
    let untrusted = fetcher(dir2.path(), SourcesConfig::default(), None);
    let err = untrusted.fetch(&uri).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&uri) && msg.to_lowercase().contains("certificate"),
        "{msg}"
    );
    let err = untrusted.fetch(&blob).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // Insecure source: TLS without verification works too.
    let dir3 = tempfile::tempdir().unwrap();
    let lax = fetcher(dir3.path(), insecure(&registry.host()), None);
    assert_eq!(lax.fetch(&uri).await.unwrap().digest, sha256(&wasm));
    assert_eq!(lax.fetch(&blob).await.unwrap().digest, sha256(&wasm));
}

/// PEM → DER without extra dependencies (base64 between the markers).
fn rustls_pki_pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_http_sources() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = tiny_module("http");
    let (port, server) = serve_http(vec![
        ("/policy.wasm", wasm.clone()),
        ("/text.wasm", b"<html>not wasm</html>".to_vec()),
    ])
    .await;
    let host = format!("127.0.0.1:{port}");
    let fetcher = fetcher(dir.path(), insecure(&host), None);

    let url = format!("http://{host}/policy.wasm");
    let fetched = fetcher.fetch(&url).await.unwrap();
    assert_eq!(&*fetched.bytes, wasm.as_slice());
    assert_eq!(fetched.digest, sha256(&wasm));

    let missing = format!("http://{host}/missing.wasm");
    let err = fetcher.fetch(&missing).await.unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(err, FetchError::HttpStatus { status: 404, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&missing) && msg.contains("404"), "{msg}");

    let err = fetcher
        .fetch(&format!("http://{host}/text.wasm"))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::NotWasm { .. }), "{err:?}");

    // Plain HTTP needs the host in insecure_sources.
    let dir2 = tempfile::tempdir().unwrap();
    let strict = self::fetcher(dir2.path(), SourcesConfig::default(), None);
    let err = strict.fetch(&url).await.unwrap_err();
    assert!(
        matches!(err, FetchError::InsecureNotAllowed { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&host), "{err}");

    // Server gone: the stored copy of that URL stands in; other URLs fail.
    server.abort();
    let _ = server.await;
    let again = fetcher.fetch(&url).await.unwrap();
    assert_eq!(again.digest, fetched.digest);
    let err = fetcher
        .fetch(&format!("http://{host}/other.wasm"))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");

    // file:// and bare absolute paths.
    let path = dir.path().join("local.wasm");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&wasm).unwrap();
    let local = fetcher
        .fetch(&format!("file://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(local.digest, sha256(&wasm));
    assert_eq!(local.path, fetched.path, "same content, same store entry");
    let bare = fetcher.fetch(&path.display().to_string()).await.unwrap();
    assert_eq!(bare.digest, local.digest);
    let err = fetcher
        .fetch(&format!("file://{}/nope.wasm", dir.path().display()))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::File { .. }), "{err:?}");

    // Garbage never panics.
    for uri in [
        "",
        "gopher://x/y",
        "https://",
        "registry://",
        "registry://Bad Ref",
        "registry://h/r@sha256:xyz",
        "http://[::1",
    ] {
        let err = fetcher.fetch(uri).await.unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_the_store_when_the_registry_is_down() {
    let mut registry = Registry::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    let sources = insecure(&registry.host());
    let wasm = tiny_module("restart");
    let tag_uri = registry.uri("policies/restart:v1");

    let first = fetcher(dir.path(), sources.clone(), None);
    let pushed = first.push(&wasm, &tag_uri, BTreeMap::new()).await.unwrap();
    let pinned_uri = format!(
        "registry://{}/policies/restart@{}",
        registry.host(),
        pushed.manifest_digest
    );
    let by_tag = first.fetch(&tag_uri).await.unwrap();
    let by_digest = first.fetch(&pinned_uri).await.unwrap();
    drop(first);

    registry.stop();

    // "Restart": a new fetcher on the same store, registry down.
    let second = fetcher(dir.path(), sources, None);
    let pinned = second.fetch(&pinned_uri).await.unwrap();
    assert_eq!(&*pinned.bytes, wasm.as_slice());
    assert_eq!(pinned.digest, by_digest.digest);
    assert_eq!(pinned.path, by_digest.path);
    // A tag cannot be re-resolved; the last copy is used (with a warning).
    let tagged = second.fetch(&tag_uri).await.unwrap();
    assert_eq!(tagged.digest, by_tag.digest);
    // Something never fetched cannot be served.
    let err = second
        .fetch(&registry.uri("policies/other:v1"))
        .await
        .unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("policies/other:v1"), "{err}");

    // A corrupted store entry is not served: the digest is re-checked.
    std::fs::write(&pinned.path, b"\0asm corrupted").unwrap();
    let err = second.fetch(&pinned_uri).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
}
