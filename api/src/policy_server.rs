//! PolicyServer: a Deployment of policy-servers serving the policies bound to it.

// Several `printcolumn(...)` share `type_ = "string"`; clippy reads them as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PodSecurityContext, SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_webhook_port() -> i32 {
    8443
}

fn default_readiness_probe_port() -> i32 {
    8081
}

/// Security contexts of the policy-server pod and container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyServerSecurity {
    /// Replaces the default (hardened) container security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<SecurityContext>,
    /// Replaces the default pod security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSecurityContext>,
}

/// Desired state of a [`PolicyServer`].
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "policies.portcullis.dev",
    version = "v1",
    kind = "PolicyServer",
    shortname = "ps",
    status = "PolicyServerStatus",
    doc = "A Deployment of policy-servers that serves the policies bound to it.",
    validation = Rule::new("size(self.metadata.name) <= 49").message("name must be at most 49 characters so that policy-server-<name> fits in 63"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("name must be a DNS label (lower-case letters, digits and '-')"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))").message("minAvailable and maxUnavailable cannot both be set"))]
#[x_kube(validation = Rule::new("self.webhookPort != self.readinessProbePort").message("webhookPort and readinessProbePort must differ"))]
pub struct PolicyServerSpec {
    /// The policy-server container image.
    pub image: String,
    /// Number of replicas.
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// PodDisruptionBudget minAvailable (exclusive with maxUnavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// PodDisruptionBudget maxUnavailable (exclusive with minAvailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Annotations added to the Deployment and its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Labels added to the Deployment and its pods (system labels win).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Environment variables appended after the controller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// ServiceAccount of the pods (default: `policy-server-<name>`, created
    /// by the controller). The controller binds the grants of context-aware
    /// policies to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the controller namespace
    /// with registry credentials for module pulls (mounted as the
    /// policy-server's Docker `config.json`; not a pod imagePullSecret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Registries that may be reached without TLS verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_sources: Option<Vec<String>>,
    /// Extra CA certificates (PEM) per registry `host[:port]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_authorities: Option<BTreeMap<String, Vec<String>>>,
    /// ConfigMap with a signature verification config. Not implemented yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_config: Option<String>,
    /// ConfigMap with a sigstore trust config. Not implemented yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigstore_trust_config: Option<String>,
    /// Replaces the default (hardened) security contexts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_contexts: Option<PolicyServerSecurity>,
    /// Pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Pod tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Pod priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Container resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    /// Container resource requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
    /// Host capabilities granted to namespaced policies (`*`, `oci/*`, ...).
    /// Cluster-wide policies always get every capability. Unset grants all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaced_policies_capabilities: Option<Vec<String>>,
    /// Port of the HTTPS webhook listener (default 8443).
    #[serde(default = "default_webhook_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub webhook_port: i32,
    /// Port of the plain-HTTP probe listener (default 8081).
    #[serde(default = "default_readiness_probe_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub readiness_probe_port: i32,
    /// Where the policies of this server may fetch modules from: URI prefixes
    /// (`registry://ghcr.io/my-org/`, `https://policies.example.com/`,
    /// `file:///policies/`), enforced by the policy-server before any
    /// download. Unset: anywhere; empty: nowhere. Copied verbatim into
    /// `sources.yml` (`allowed_module_sources`). Downloads are made from
    /// inside the cluster, by the policy-server's Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_module_sources: Option<Vec<String>>,
    /// Mutual TLS: a ConfigMap in the controller's namespace whose key
    /// `client-ca.crt` holds the PEM certificate(s) of the CA(s) that sign the
    /// API server's admission client certificate. When set, the
    /// policy-server's webhook port accepts only clients presenting a
    /// certificate signed by one of them (see docs/controller.md, "Mutual
    /// TLS").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_config_map: Option<String>,
    /// `sizeLimit` of the policy-server's writable module store (an
    /// `emptyDir`; default `1Gi`): a Pod writing more is evicted by the
    /// kubelet instead of filling the node's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_store_size_limit: Option<Quantity>,
    /// Metrics port. Not implemented yet (metrics are on the probe port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: Option<i32>,
}

/// Observed state of a [`PolicyServer`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyServerStatus {
    /// `CertSecretReconciled`, `ConfigMapReconciled`, `DeploymentReconciled`,
    /// `ServiceReconciled`, `PodDisruptionBudgetReconciled`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
