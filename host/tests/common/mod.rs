//! Shared helpers of the policy-server integration tests: certificates,
//! module and fixture paths, an in-process server and an HTTPS client.

#![allow(dead_code)]

pub mod context;

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_host::tls::TlsFiles;
use portcullis_host::{RunningServer, ServerConfig};
use reqwest_oci as reqwest;
use serde_json::Value;
use tempfile::TempDir;

/// Directory of the compiled sample policies (`scripts/build-policies.sh`).
pub fn policies_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PORTCULLIS_TEST_POLICIES_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/policies")
}

/// `file://` URI of a sample policy; panics with a hint when it is not built.
pub fn module(name: &str) -> String {
    let path = policies_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-policies.sh first",
        path.display()
    );
    let path = path.canonicalize().expect("canonical module path");
    format!("file://{}", path.display())
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the `portcullis` CLI with the compiled-module cache the tests share
/// and its store in `<tmp>/<store>`, stdin closed.
pub fn portcullis_cli(args: &[&str], store: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .env(
            "PORTCULLIS_COMPILED_CACHE_DIR",
            repo().join("target/test-compiled-cache"),
        )
        .env("PORTCULLIS_STORE", std::env::temp_dir().join(store))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run portcullis")
}

/// An AdmissionReview from `tests/fixtures/`.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// A CA with a server certificate (for 127.0.0.1/localhost) and a client certificate.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    pub fn generate(name: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let leaf = |sans: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "policy-server",
        );
        let (client_cert_pem, client_key_pem) = leaf(
            vec!["client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "api-server",
        );
        Self {
            ca_pem: ca.pem(),
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
        }
    }

    /// Writes the server files and the CA (as client CA) into `dir`.
    pub fn write_server_files(&self, dir: &Path) -> TlsFiles {
        std::fs::write(dir.join("tls.crt"), &self.server_cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &self.server_key_pem).unwrap();
        std::fs::write(dir.join("client-ca.crt"), &self.ca_pem).unwrap();
        TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_cas: Vec::new(),
        }
    }

    /// A client trusting only this CA, optionally presenting the client certificate.
    pub fn client(&self, with_client_cert: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(30));
        if with_client_cert {
            let identity = format!("{}{}", self.client_cert_pem, self.client_key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

/// How the test server is set up.
pub struct Options {
    pub tls: bool,
    pub mtls: bool,
    pub tweak: Box<dyn FnOnce(&mut ServerConfig)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tls: true,
            mtls: false,
            tweak: Box::new(|_| {}),
        }
    }
}

/// A policy-server running in-process, with its files and a client.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: TempDir,
    pub pki: Pki,
    pub client: reqwest::Client,
    pub base: String,
    pub probe: String,
    pub policies_path: PathBuf,
}

impl TestServer {
    pub async fn start(policies_yaml: &str, options: Options) -> Self {
        Self::try_start(policies_yaml, options)
            .await
            .unwrap_or_else(|e| panic!("server failed to start: {e}"))
    }

    pub async fn try_start(
        policies_yaml: &str,
        options: Options,
    ) -> Result<Self, portcullis_host::ServerError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let policies_path = dir.path().join("policies.yml");
        std::fs::write(&policies_path, policies_yaml).unwrap();
        let pki = Pki::generate("initial");
        let mut config = ServerConfig {
            policies_path: policies_path.clone(),
            addr: "127.0.0.1".parse().unwrap(),
            port: 0,
            readiness_port: 0,
            policies_download_dir: dir.path().join("store"),
            // Shared by every test: each module is compiled once per checkout,
            // not once per test (debug-build Cranelift is slow).
            compiled_cache_dir: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-compiled-cache"),
            ),
            workers: 2,
            reload_debounce: Duration::from_millis(100),
            reload_poll_interval: Duration::from_secs(2),
            ..ServerConfig::default()
        };
        if options.tls {
            let mut files = pki.write_server_files(dir.path());
            if options.mtls {
                files.client_cas = vec![dir.path().join("client-ca.crt")];
            }
            config.tls = Some(files);
        }
        (options.tweak)(&mut config);
        let tls = config.tls.is_some();
        let server = portcullis_host::start(config).await?;
        let scheme = if tls { "https" } else { "http" };
        let base = format!("{scheme}://127.0.0.1:{}", server.addr().port());
        let probe = format!("http://127.0.0.1:{}", server.readiness_addr().port());
        let client = if tls {
            pki.client(options.mtls)
        } else {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
        };
        Ok(Self {
            server: Some(server),
            dir,
            pki,
            client,
            base,
            probe,
            policies_path,
        })
    }

    /// POSTs `body` to `path`; returns the status and the JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("non-JSON body ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, json)
    }

    /// POSTs an AdmissionReview to `/validate/{id}` and returns its `response`.
    pub async fn validate(&self, id: &str, review: &Value) -> Value {
        let (status, body) = self.post(&format!("/validate/{id}"), review).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        body["response"].clone()
    }

    /// GETs a path of the readiness listener.
    pub async fn probe(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.probe))
            .await
            .expect("probe request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("probe body"))
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Decodes a response's base64 JSON patch.
pub fn decode_patch(response: &Value) -> json_patch::Patch {
    use base64::Engine as _;
    let patch = response["patch"].as_str().expect("patch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A policies.yml with one entry per (id, yaml body) pair.
pub fn policies_yaml(entries: &[(&str, String)]) -> String {
    entries
        .iter()
        .map(|(id, body)| format!("{id}:\n{}", indent(body)))
        .collect::<Vec<_>>()
        .join("")
}

fn indent(body: &str) -> String {
    body.lines().map(|l| format!("  {l}\n")).collect()
}
