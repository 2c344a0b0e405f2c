//! The policy-server client against a loopback TLS server that requires
//! client certificates and refuses the ones it gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_audit_scanner::client::{ClientOptions, PolicyServerClient, Verdict};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A self-signed CA named `name`. Names must differ: webpki finds an issuer
/// by name, and two CAs with rcgen's default name would make a foreign
/// certificate a bad signature rather than an unknown CA.
fn certificate_authority(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).expect("CA"), key)
}

/// Serves TLS 1.3 on loopback, requiring a client certificate signed by a
/// CA nobody else has; returns its address and the PEM of its own CA. The
/// first `stalled` connections are accepted and never answered.
async fn refusing_server(stalled: usize) -> (SocketAddr, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (ca, ca_key) = certificate_authority("serving CA");
    let host = "policy-server-default.portcullis.svc".to_string();
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec![host])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");

    let (client_ca, _) = certificate_authority("trusted client CA");
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots
        .add(CertificateDer::from(client_ca.der().to_vec()))
        .expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(client_roots))
        .build()
        .expect("verifier");
    let config = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if held.len() < stalled {
                held.push(tcp);
                continue;
            }
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // The handshake fails when the client's Finished comes
                // without a certificate; rustls sends the alert then.
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                }
            });
        }
    });
    (addr, ca.pem())
}

/// Sends 100 evaluations and returns those whose verdict is not an error
/// that names `alert`.
async fn not_naming(client: &PolicyServerClient, alert: &str) -> Vec<String> {
    let body = bytes::Bytes::from_static(br#"{"request":{"uid":"u"}}"#);
    let mut others = Vec::new();
    for _ in 0..100 {
        match client
            .audit("default", "p", body.clone(), Duration::from_secs(5))
            .await
        {
            Verdict::Error(m) if m.contains(alert) => {}
            other => others.push(format!("{other:?}")),
        }
    }
    others
}

fn client(
    dir: &std::path::Path,
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> PolicyServerClient {
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca_pem).expect("write");
    PolicyServerClient::new(&ClientOptions {
        namespace: "portcullis".into(),
        ca_file,
        client_identity: identity,
        address_overrides: vec![("default".into(), addr)],
    })
    .expect("client")
}

/// Without a client certificate, or with one the server does not trust,
/// every evaluation is an error that says why (the server's TLS alert), not
/// a bare "connection was not ready". With TLS 1.3 hyper may start the
/// request before the alert arrives, and about four times in ten here it
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_certificate_is_reported_as_such() {
    let (addr, ca_pem) = refusing_server(0).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let anonymous = client(dir.path(), addr, &ca_pem, None);
    let others = not_naming(&anonymous, "CertificateRequired").await;
    assert!(others.is_empty(), "{} of 100: {others:#?}", others.len());

    let (rogue_ca, rogue_key) = certificate_authority("rogue client CA");
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, &rogue_ca, &rogue_key)
        .expect("client cert");
    let (cert_file, key_file) = (dir.path().join("c.crt"), dir.path().join("c.key"));
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    let rogue = client(dir.path(), addr, &ca_pem, Some((cert_file, key_file)));
    let others = not_naming(&rogue, "UnknownCA").await;
    assert!(others.is_empty(), "{} of 100: {others:#?}", others.len());
}

/// A request that times out against a policy-server that refuses the client
/// is reported as refused too: hyper can leave a request written just as
/// the refusal arrived waiting for its timeout (`client/refusal.rs`), here
/// made certain by a first connection that is never answered.
#[tokio::test]
async fn a_timed_out_request_names_the_refusal() {
    let (addr, ca_pem) = refusing_server(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let anonymous = client(dir.path(), addr, &ca_pem, None);
    let body = bytes::Bytes::from_static(br#"{"request":{"uid":"u"}}"#);
    let verdict = anonymous
        .audit("default", "p", body, Duration::from_millis(500))
        .await;
    match verdict {
        Verdict::Error(m) => assert!(
            m.contains("refused the connection") && m.contains("CertificateRequired"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}
