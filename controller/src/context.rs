//! What every reconcile shares: the client, the settings, the caches of the
//! objects the controller reads, and its typed errors.

use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use portcullis_api::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyServer,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff::Backoff;
use crate::certs::CertError;
use crate::metrics::Metrics;
use crate::names::{CA_SECRET, FIELD_MANAGER};
use crate::readiness::ReplicaClient;
use crate::resources::BuildOptions;

/// Errors of a reconcile. Every one is retried by the error policy, with
/// exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// Generating or loading a certificate failed.
    #[error("certificate error: {0}")]
    Cert(#[from] CertError),
    /// Rendering `policies.yml` failed.
    #[error("policies file error: {0}")]
    Config(#[from] portcullis_config::ConfigError),
    /// The CA Secret exists but lacks `ca.crt` or `ca.key`.
    #[error("secret {namespace}/{name} has no {key}")]
    BadCaSecret {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The missing key.
        key: &'static str,
    },
    /// Adding or removing the finalizer failed, or the wrapped reconcile did.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// An object without a name reached the reconciler.
    #[error("object has no name")]
    MissingName,
}

/// The caches (reflector stores) of everything the reconcilers read. Each is
/// filled by the same watch that triggers the reconciles depending on it, so
/// a reconcile never sees an older state than the event that started it.
#[derive(Clone)]
pub struct Stores {
    /// PolicyServers (this instance's, with `--selector`).
    pub policy_servers: Store<PolicyServer>,
    /// ClusterAdmissionPolicies.
    pub cluster_policies: Store<ClusterAdmissionPolicy>,
    /// AdmissionPolicies.
    pub policies: Store<AdmissionPolicy>,
    /// ClusterAdmissionPolicyGroups.
    pub cluster_groups: Store<ClusterAdmissionPolicyGroup>,
    /// AdmissionPolicyGroups.
    pub groups: Store<AdmissionPolicyGroup>,
    /// The policy-servers' ConfigMaps (controller namespace).
    pub config_maps: Store<ConfigMap>,
    /// The policy-servers' Deployments (controller namespace).
    pub deployments: Store<Deployment>,
    /// The policy-servers' Pods (controller namespace).
    pub pods: Store<Pod>,
    /// The policy-servers' serving-certificate Secrets (controller namespace).
    pub secrets: Store<Secret>,
    /// The policy-servers' PodDisruptionBudgets (controller namespace).
    pub pod_disruption_budgets: Store<PodDisruptionBudget>,
    /// The CA Secret.
    pub ca: Store<Secret>,
    /// The webhook configurations this controller manages.
    pub validating_webhooks: Store<ValidatingWebhookConfiguration>,
    /// The webhook configurations this controller manages.
    pub mutating_webhooks: Store<MutatingWebhookConfiguration>,
    /// The policy-servers' ServiceAccounts (controller namespace).
    pub service_accounts: Store<ServiceAccount>,
    /// The ClusterRoles this controller manages (policy-server grants).
    pub cluster_roles: Store<ClusterRole>,
    /// The ClusterRoleBindings this controller manages.
    pub cluster_role_bindings: Store<ClusterRoleBinding>,
    /// The Roles this controller manages, in every namespace.
    pub roles: Store<Role>,
}

impl Stores {
    /// An object of the controller's namespace from `store`.
    pub fn namespaced<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        store.get(&ObjectRef::new(name).within(namespace))
    }

    /// The CA Secret, if it exists.
    pub fn ca_secret(&self, namespace: &str) -> Option<Arc<Secret>> {
        Self::namespaced(&self.ca, namespace, CA_SECRET)
    }
}

/// Shared state of the reconcilers.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// What shapes the written objects (namespace, ...).
    pub opts: BuildOptions,
    /// Where reconciliations are counted and timed.
    pub metrics: Arc<Metrics>,
    /// Per-object retry delays after errors.
    pub backoff: Backoff,
    /// Asks policy-server replicas which configuration they serve.
    pub replicas: ReplicaClient,
    /// The caches.
    pub stores: Stores,
}

impl Context {
    /// Server-side applies `obj` as the controller's field manager.
    pub async fn apply<K>(&self, api: &Api<K>, name: &str, obj: &K) -> Result<K, Error>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    {
        Ok(api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await?)
    }

    /// An API over the controller's namespace.
    pub fn own_namespace<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.opts.namespace)
    }
}
