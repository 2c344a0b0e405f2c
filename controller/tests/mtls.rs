//! Mutual TLS between the API server and the policy-server (issue 10 item
//! 6, the controller's part), on a control plane of its own whose
//! kube-apiserver presents an admission client certificate
//! (`--admission-control-config-file`: an AdmissionConfiguration whose
//! webhook kubeconfig holds the certificate for `*.<controller ns>.svc`).
//!
//! The PolicyServer names a ConfigMap with the CA of that certificate
//! (`spec.clientCaConfigMap`); the controller mounts it and sets
//! `PORTCULLIS_CLIENT_CA_FILE`, and the real policy-server (run as its Pod
//! would be) then requires a client certificate: the API server's webhook
//! calls succeed (a privileged Pod is denied by the policy), and a client
//! without a certificate is refused during the TLS handshake.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::pod::{SimulatedPod, free_ports, mark_ready};
use common::{
    BindingGuard, Controller, TEST_LABEL, control_plane, eventually, impersonating_kubeconfig,
    install_rbac, jstr, unique,
};
use portcullis_tests::control_plane::{ControlPlane, target_dir};
use portcullis_tests::e2e;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A CA and a client certificate it signs (the API server's identity).
fn client_pki(dir: &Path) -> String {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "apiserver admission client CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver-admission");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).expect("client cert");
    std::fs::write(dir.join("client.crt"), cert.pem()).expect("write");
    std::fs::write(dir.join("client.key"), key.serialize_pem()).expect("write");
    ca.pem()
}

/// The AdmissionConfiguration of the API server: its webhooks present the
/// client certificate to every Service of `namespace`.
fn admission_config(dir: &Path, namespace: &str) -> std::path::PathBuf {
    let kubeconfig = dir.join("admission-kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        format!(
            r#"apiVersion: v1
kind: Config
users:
  - name: "*.{namespace}.svc"
    user:
      client-certificate: {crt}
      client-key: {key}
"#,
            crt = dir.join("client.crt").display(),
            key = dir.join("client.key").display()
        ),
    )
    .expect("write");
    let config = dir.join("admission-config.yaml");
    let plugin = |name: &str| {
        format!(
            "  - name: {name}\n    configuration:\n      apiVersion: apiserver.config.k8s.io/v1\n      kind: WebhookAdmissionConfiguration\n      kubeConfigFile: {}\n",
            kubeconfig.display()
        )
    };
    std::fs::write(
        &config,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
            plugin("ValidatingAdmissionWebhook"),
            plugin("MutatingAdmissionWebhook")
        ),
    )
    .expect("write");
    config
}

#[test]
fn the_policy_server_requires_the_api_servers_client_certificate() {
    let dir = target_dir().join(unique("mtls"));
    std::fs::create_dir_all(&dir).expect("test dir");
    // The controller namespace is known before the API server starts: the
    // admission kubeconfig names it.
    let ctl = unique("mtls");
    let client_ca = client_pki(&dir);
    let config = admission_config(&dir, &ctl);
    ControlPlane::shared_with_apiserver_args(&[format!(
        "--admission-control-config-file={}",
        config.display()
    )]);
    let cp = control_plane();
    let k = cp.kubectl_client();
    cp.kubectl_ok(&["create", "namespace", &ctl]);
    let apps = unique("mtls-apps");
    cp.kubectl_ok(&["create", "namespace", &apps]);

    let label = unique("mtls");
    let ps = unique("ps");
    let cap = unique("cap");
    let id = format!("clusterwide-{cap}");
    let object = format!("policy-server-{ps}");
    let (webhook_port, readiness_port) = free_ports();
    let _binding = BindingGuard {
        cp,
        name: install_rbac(cp, &ctl, &label),
    };
    let kubeconfig = impersonating_kubeconfig(cp, &ctl, &dir);
    let _controller = Controller::start(&dir, &kubeconfig, &ctl, &label, &label, |_| {});

    // The operator's ConfigMap with the CA of the API server's certificate.
    k.ok(&[
        "-n",
        &ctl,
        "create",
        "configmap",
        "apiserver-client-ca",
        &format!("--from-literal=client-ca.crt={client_ca}"),
    ]);
    let module =
        portcullis_tests::policy_server::module_uri("pod-privileged-wapc").expect("sample policy");
    cp.apply(&format!(
        r#"apiVersion: policies.portcullis.dev/v1
kind: PolicyServer
metadata:
  name: {ps}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  image: ghcr.io/portcullis/policy-server:test
  replicas: 1
  webhookPort: {webhook_port}
  readinessProbePort: {readiness_port}
  clientCaConfigMap: apiserver-client-ca
---
apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata:
  name: {cap}
  labels: {{{TEST_LABEL}: {label}}}
spec:
  policyServer: {ps}
  module: {module}
  rules:
    - {{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}}
  mutating: false
  failurePolicy: Fail
  namespaceSelector:
    matchLabels: {{kubernetes.io/metadata.name: {apps}}}
"#
    ));

    // The Deployment mounts the client CA and passes it to the server.
    let deployment = eventually("the Deployment with the client CA", TIMEOUT, || {
        k.get_json(Some(&ctl), "deployment", &object)
            .filter(|d| d.to_string().contains("apiserver-client-ca"))
    });
    let env = common::pod::container_env(&deployment);
    assert_eq!(env["PORTCULLIS_CLIENT_CA_FILE"], "/client-ca/client-ca.crt");
    let configmap = eventually("the ConfigMap with the policy", TIMEOUT, || {
        k.get_json(Some(&ctl), "configmap", &object)
            .filter(|cm| jstr(cm, "/data/policies.yml").contains(&id))
    });
    let digest =
        portcullis_config::content_digest(jstr(&configmap, "/data/policies.yml").as_bytes());
    let mut pod = SimulatedPod::start(&k, &ctl, &deployment, &dir);
    pod.wait_serving(&digest, &[&id], TIMEOUT);
    cp.route_service(
        &ctl,
        &object,
        443,
        SocketAddr::from(([127, 0, 0, 1], webhook_port)),
    );
    let selector = format!("policies.portcullis.dev/policy-server={ps}");
    let pods = eventually("the policy-server Pod", TIMEOUT, || {
        let out = k.ok(&["-n", &ctl, "get", "pods", "-l", &selector, "-o", "name"]);
        (!out.trim().is_empty()).then(|| out.lines().map(str::to_string).collect::<Vec<_>>())
    });
    for p in &pods {
        mark_ready(&k, &ctl, p);
    }
    eventually("the policy active", TIMEOUT, || {
        let v = k.get_json(None, "clusteradmissionpolicy", &cap)?;
        (jstr(&v, "/status/policyStatus") == "active").then_some(())
    });

    // The API server's webhook call presents its certificate: the policy
    // decides.
    e2e::wait_for_default_service_account(&k, &apps);
    e2e::assert_privileged_pod_denied(
        &k,
        &apps,
        "privileged",
        &format!("{id}.policies.portcullis.dev"),
    );
    e2e::assert_pod_admitted(&k, &e2e::unprivileged_pod("unprivileged", &apps));

    // A client without a certificate (trusting the serving CA, reaching the
    // right name) is refused in the handshake.
    let serving_ca = k
        .get_json(Some(&ctl), "secret", &object)
        .map(|s| common::pod::volume_files(&s, true, None))
        .and_then(|files| files.get("ca.crt").cloned())
        .expect("serving CA");
    let host = format!("{object}.{ctl}.svc");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A bare handshake and a read, not an HTTP client: with TLS 1.3 the
    // server's refusal comes after the client's handshake is done, and an
    // HTTP client may see only a closed connection before it reads it.
    let refusal = runtime.block_on(async {
        use rustls::pki_types::pem::PemObject as _;
        use tokio::io::AsyncReadExt as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&serving_ca) {
            roots.add(cert.expect("CA certificate")).expect("root");
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", webhook_port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from(host.clone()).expect("name");
        let read = async {
            let mut tls = connector.connect(name, tcp).await?;
            let mut byte = [0u8; 1];
            tls.read(&mut byte).await
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the server neither refused nor closed")
    });
    let chain = format!("{refusal:?}");
    // TLS 1.3: the server's "certificate required" alert.
    assert!(
        chain.contains("CertificateRequired"),
        "not refused for want of a client certificate: {chain}"
    );

    k.ok(&["delete", "cap", &cap, "--wait=false"]);
    k.ok(&["delete", "ps", &ps, "--wait=false"]);
    for ns in [&ctl, &apps] {
        let _ = cp.kubectl(&["delete", "namespace", ns, "--wait=false"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
