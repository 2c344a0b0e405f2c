//! Pure builders of the objects the controller writes. Nothing here talks to
//! the API server, so every builder is unit-tested.
//!
//! - [`config`]: the policy-server ConfigMap (`policies.yml`, `sources.yml`);
//! - [`workload`]: the serving-certificate Secret, Deployment, Service and
//!   PodDisruptionBudget of a PolicyServer;
//! - [`webhook`]: the webhook configuration of a policy;
//! - [`rbac`]: the policy-server's ServiceAccount and what it may read.

pub mod config;
pub mod rbac;
pub mod webhook;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::names::{policy_server_labels, policy_server_object_name};

pub use config::{config_map, policies_config, sources_config};
pub use webhook::{mutating_webhook, namespace_selector, validating_webhook, webhook_name};
pub use workload::{
    PodOptions, cert_secret, default_container_security_context, default_pod_security_context,
    deployment, pod_disruption_budget, service,
};

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Mount point of the certificate Secret in the policy-server pod.
pub const CERT_DIR: &str = "/pki";
/// Mount point of the ConfigMap in the policy-server pod.
pub const CONFIG_DIR: &str = "/config";
/// Writable module store (emptyDir).
pub const DOWNLOAD_DIR: &str = "/tmp";
/// Mount point of the `imagePullSecret` (as `config.json`).
pub const DOCKER_CONFIG_DIR: &str = "/docker";
/// Mount point of the client CA ConfigMap (mutual TLS).
pub const CLIENT_CA_DIR: &str = "/client-ca";
/// Key of the client CA in its ConfigMap (Kubewarden's).
pub const CLIENT_CA_KEY: &str = "client-ca.crt";
/// `sizeLimit` of the module store unless the PolicyServer sets one.
pub const DEFAULT_MODULE_STORE_SIZE_LIMIT: &str = "1Gi";

/// Settings of the controller that shape what it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Namespace of the controller and of every namespaced object it writes.
    pub namespace: String,
    /// Set `PORTCULLIS_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE` to the
    /// controller namespace on every policy-server.
    pub always_accept_own_namespace: bool,
}

/// Metadata of an object derived from the PolicyServer `ps_name`: its name
/// is `policy-server-<ps_name>`, in the controller's namespace, owned by the
/// PolicyServer.
fn meta(
    opts: &BuildOptions,
    ps_name: &str,
    owner: &OwnerReference,
    annotations: Option<BTreeMap<String, String>>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(policy_server_object_name(ps_name)),
        namespace: Some(opts.namespace.clone()),
        labels: Some(policy_server_labels(ps_name)),
        annotations,
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use portcullis_api::{ClusterAdmissionPolicy, PolicyResource, PolicyServerSpec, PolicyView};

    pub fn cap(yaml: &str) -> PolicyView {
        let p: ClusterAdmissionPolicy = serde_yaml::from_str(yaml).expect("policy YAML");
        p.view()
    }

    pub const CAP: &str = r#"
apiVersion: policies.portcullis.dev/v1
kind: ClusterAdmissionPolicy
metadata: {name: privileged}
spec:
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
  mode: monitor
  settings: {a: 1}
  timeoutEvalSeconds: 3
  rules:
    - {apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}
  mutating: false
  namespaceSelector:
    matchLabels: {team: a}
    matchExpressions: [{key: env, operator: In, values: [prod]}]
"#;

    pub fn server() -> PolicyServerSpec {
        serde_yaml::from_str("image: ghcr.io/portcullis/policy-server:latest\nreplicas: 2\n")
            .expect("server YAML")
    }
}
