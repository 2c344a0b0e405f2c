//! The host capabilities: what a policy may ask the host, in Kubewarden's
//! wire format, for both ABIs.
//!
//! ```text
//! adapter (waPC __host_call, WIT import)
//!   └─ PolicyCapabilities      per policy: hostCapabilities grants,
//!        │                     contextAwareResources, decoding, crypto
//!        └─ CapabilityBackend  shared: HostServices (cluster, registries,
//!                              DNS), or a Recorder / Replayer around it
//! ```
//!
//! - [`grants`]: `hostCapabilities` patterns, validated against the known
//!   capability tree.
//! - [`request`]: the wire payloads, decoded into kwctl's request enum.
//! - [`scope`]: namespaced policies read only their own namespace.
//! - [`kubernetes`]: watch caches and bounded answer caches.
//! - [`oci`], [`net`], [`crypto`]: registries, DNS, certificate checks.
//! - [`session`]: kwctl-format record and replay; [`oneshot`]: live,
//!   recorded or replayed capabilities for `portcullis run` and `test`.
//! - [`bridge`]: blocking calls onto the async runtime, by the deadline.

pub mod bridge;
pub mod crypto;
pub mod grants;
pub mod kubernetes;
pub mod net;
pub mod oci;
pub mod oneshot;
pub mod request;
pub mod scope;
pub mod session;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_adapters::{CallContext, CapabilityError, ContextResourceList, HostCapabilities};

pub use self::bridge::Bridge;
pub use self::grants::{CapabilityGrants, GrantError};
pub use self::kubernetes::{
    KubeConfigSource, KubeContext, ListQuery, ResourceType, ResourceWatch, WatchState,
};
pub use self::request::{CallbackRequestType, HostRequest};
pub use self::scope::PolicyScope;
pub use self::session::{Recorder, Replayer, SessionError};
use crate::fetch::ModuleFetcher;

/// Longest start-up wait for the caches of the loaded policies.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until every cache that a loaded policy reads has synced or failed
/// (a failing cache fails its policies' calls; it must not keep the server,
/// and the other policies, out of service), at most two minutes.
pub async fn wait_for_caches(kubernetes: &KubeContext) {
    let started = Instant::now();
    while !kubernetes.caches_settled() {
        if started.elapsed() > CACHE_SYNC_TIMEOUT {
            tracing::warn!(
                "context-aware caches still syncing after {CACHE_SYNC_TIMEOUT:?}; serving anyway: their policies wait for them within their deadline"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for watch in kubernetes.watches() {
        match watch.state() {
            WatchState::Failed { reason } => {
                tracing::warn!(resource = %watch.resource(), %reason, "context-aware cache unavailable: the policies that read it fail closed")
            }
            WatchState::Synced { objects } => {
                tracing::debug!(resource = %watch.resource(), objects, "context-aware cache ready")
            }
            WatchState::Syncing => {}
        }
    }
}

/// Answers the requests that leave the process. Implemented by
/// [`HostServices`] and by the session [`Recorder`] and [`Replayer`].
pub trait CapabilityBackend: Send + Sync {
    /// Serves one request by `ctx.deadline`.
    fn call(
        &self,
        ctx: &CallContext<'_>,
        request: &CallbackRequestType,
    ) -> Result<Vec<u8>, CapabilityError>;

    /// The objects of `resources` that `scope` may see, for Rego policies'
    /// context data. None by default: a recorded session holds exchanges,
    /// not inventories.
    fn context_resources(
        &self,
        _ctx: &CallContext<'_>,
        _resources: &BTreeSet<ResourceType>,
        _scope: &PolicyScope,
    ) -> Result<Vec<ContextResourceList>, CapabilityError> {
        Ok(Vec::new())
    }
}

/// What [`HostServices`] connects to.
#[derive(Debug, Clone, Default)]
pub struct ServicesConfig {
    /// Where the cluster is.
    pub kubernetes: KubeConfigSource,
    /// Registry access for `oci/*` (the server's module fetcher, with its
    /// sources.yml and Docker credentials); none fails those calls.
    pub registries: Option<ModuleFetcher>,
}

/// The live host services, shared by every policy of a server.
pub struct HostServices {
    kubernetes: KubeContext,
    oci: oci::OciLookups,
    dns: net::DnsLookups,
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices")
            .field("kubernetes", &self.kubernetes)
            .finish_non_exhaustive()
    }
}

impl HostServices {
    /// Connects to what `config` names; `runtime` runs the host work (the
    /// server's own runtime). Never fails: what is missing fails its calls.
    pub async fn new(config: ServicesConfig, runtime: tokio::runtime::Handle) -> Arc<Self> {
        let bridge = Bridge::new(runtime);
        Arc::new(Self {
            kubernetes: KubeContext::connect(&config.kubernetes, bridge.clone()).await,
            oci: oci::OciLookups::new(config.registries, bridge.clone()),
            dns: net::DnsLookups::system(bridge),
        })
    }

    /// The cluster side: watches and their readiness.
    pub fn kubernetes(&self) -> &KubeContext {
        &self.kubernetes
    }

    /// Starts (or joins) the watch of every resource type in `resources`.
    pub fn start_watches<'a>(
        &self,
        resources: impl IntoIterator<Item = &'a ResourceType>,
    ) -> Vec<Arc<ResourceWatch>> {
        resources
            .into_iter()
            .map(|r| self.kubernetes.watch(r))
            .collect()
    }

    /// The capabilities of policy `policy_id` (for a group member, the
    /// group's id) with these `hostCapabilities` patterns and
    /// `contextAwareResources`, served live, in the [`PolicyScope`] of its id.
    /// Starts the watches it needs.
    pub fn policy_capabilities(
        self: &Arc<Self>,
        policy_id: &str,
        host_capabilities: &[String],
        resources: impl IntoIterator<Item = ResourceType>,
    ) -> Result<PolicyCapabilities, GrantError> {
        let grants = CapabilityGrants::new(host_capabilities)?;
        let resources: BTreeSet<ResourceType> = resources.into_iter().collect();
        let watches = self.start_watches(&resources);
        Ok(
            PolicyCapabilities::new(grants, resources, Arc::clone(self) as _)
                .with_watches(watches)
                .with_scope(PolicyScope::of_policy(policy_id)),
        )
    }
}

impl CapabilityBackend for HostServices {
    fn call(
        &self,
        ctx: &CallContext<'_>,
        request: &CallbackRequestType,
    ) -> Result<Vec<u8>, CapabilityError> {
        use CallbackRequestType as R;
        match request {
            R::DNSLookupHost { host } => self.dns.lookup(ctx, host),
            R::KubernetesListResourceNamespace { .. }
            | R::KubernetesListResourceAll { .. }
            | R::KubernetesGetResource { .. }
            | R::KubernetesCanI { .. } => self.kubernetes.call(ctx, request),
            R::OciManifestDigest { .. }
            | R::OciManifest { .. }
            | R::OciManifestAndConfig { .. }
            | R::SigstorePubKeyVerify { .. }
            | R::SigstoreKeylessVerify { .. }
            | R::SigstoreKeylessPrefixVerify { .. }
            | R::SigstoreGithubActionsVerify { .. }
            | R::SigstoreCertificateVerify { .. } => self.oci.call(ctx, request),
        }
    }

    fn context_resources(
        &self,
        ctx: &CallContext<'_>,
        resources: &BTreeSet<ResourceType>,
        scope: &PolicyScope,
    ) -> Result<Vec<ContextResourceList>, CapabilityError> {
        resources
            .iter()
            .map(|resource| {
                self.kubernetes
                    .context_resource(resource, scope, ctx.deadline)
            })
            .collect()
    }
}

/// The host capabilities of one policy: what it was granted, what it may
/// read in the cluster, and who answers.
pub struct PolicyCapabilities {
    grants: CapabilityGrants,
    resources: BTreeSet<ResourceType>,
    scope: PolicyScope,
    backend: Arc<dyn CapabilityBackend>,
    /// Keeps the policy's watch caches running while it is loaded.
    _watches: Vec<Arc<ResourceWatch>>,
}

impl std::fmt::Debug for PolicyCapabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCapabilities")
            .field("grants", &self.grants)
            .field("resources", &self.resources)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl PolicyCapabilities {
    /// A policy granted `grants`, reading `resources`, answered by `backend`.
    pub fn new(
        grants: CapabilityGrants,
        resources: impl IntoIterator<Item = ResourceType>,
        backend: Arc<dyn CapabilityBackend>,
    ) -> Self {
        Self {
            grants,
            resources: resources.into_iter().collect(),
            scope: PolicyScope::ClusterWide,
            backend,
            _watches: Vec::new(),
        }
    }

    /// Keeps `watches` alive as long as these capabilities.
    pub fn with_watches(mut self, watches: Vec<Arc<ResourceWatch>>) -> Self {
        self._watches = watches;
        self
    }

    /// Restricts the policy's Kubernetes reads to `scope`.
    pub fn with_scope(mut self, scope: PolicyScope) -> Self {
        self.scope = scope;
        self
    }
}

impl HostCapabilities for PolicyCapabilities {
    fn call(
        &self,
        ctx: &CallContext<'_>,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CapabilityError> {
        let policy_id = ctx.policy_id;
        // Logging is not a capability anyone should have to ask for.
        if (namespace, operation) == ("tracing", "log") {
            let message = String::from_utf8_lossy(payload);
            tracing::info!(target: "policy_log", policy_id, "{message}");
            return Ok(Vec::new());
        }
        if !self.grants.is_granted(namespace, operation) {
            tracing::warn!(policy_id, capability = %format!("{namespace}/{operation}"), granted = %self.grants, "policy called a host capability it was not granted");
            return Err(CapabilityError::NotGranted(format!(
                "policy {policy_id} has not been granted the {namespace}/{operation} host capability (its hostCapabilities are {})",
                self.grants
            )));
        }
        match HostRequest::decode(namespace, operation, payload)? {
            HostRequest::CertificateTrust(request) => {
                let verdict = crypto::is_certificate_trusted(&request)?;
                serde_json::to_vec(&verdict).map_err(|e| CapabilityError::Failed(e.to_string()))
            }
            HostRequest::Callback(request) => {
                if let Some((api_version, kind)) = request.kubernetes_resource() {
                    let resource = ResourceType::new(api_version, kind);
                    if !self.resources.contains(&resource) {
                        tracing::warn!(policy_id, %resource, "policy read a Kubernetes resource it did not declare");
                        return Err(CapabilityError::NotGranted(format!(
                            "policy {policy_id} has not been granted access to Kubernetes {resource}: add {{apiVersion: {api_version}, kind: {kind}}} to its contextAwareResources"
                        )));
                    }
                }
                self.scope.check(policy_id, &request)?;
                self.backend.call(ctx, &request)
            }
        }
    }

    /// The declared `contextAwareResources` (seen through the policy's
    /// namespace scope), for Rego policies' `data.kubernetes` and
    /// `data.inventory`.
    fn context_resources(
        &self,
        ctx: &CallContext<'_>,
    ) -> Result<Vec<ContextResourceList>, CapabilityError> {
        if self.resources.is_empty() {
            return Ok(Vec::new());
        }
        self.backend
            .context_resources(ctx, &self.resources, &self.scope)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    struct Echo;

    impl CapabilityBackend for Echo {
        fn call(
            &self,
            _: &CallContext<'_>,
            request: &CallbackRequestType,
        ) -> Result<Vec<u8>, CapabilityError> {
            Ok(format!("{request:?}").into_bytes())
        }
    }

    fn ctx() -> CallContext<'static> {
        CallContext {
            policy_id: "p",
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    fn caps(grants: &[&str], resources: &[(&str, &str)]) -> PolicyCapabilities {
        PolicyCapabilities::new(
            CapabilityGrants::new(grants).unwrap(),
            resources.iter().map(|(a, k)| ResourceType::new(*a, *k)),
            Arc::new(Echo),
        )
    }

    const GET_NS: &[u8] =
        br#"{"api_version":"v1","kind":"Namespace","name":"default","disable_cache":false}"#;

    #[test]
    fn ungranted_capabilities_and_undeclared_resources_are_refused() {
        let none = caps(&[], &[]);
        let err = none
            .call(&ctx(), "oci", "v1/manifest_digest", b"\"a\"")
            .unwrap_err();
        assert!(
            matches!(err, CapabilityError::NotGranted(ref m) if m.contains("oci/v1/manifest_digest") && m.contains("[]")),
            "{err}"
        );
        assert!(none.call(&ctx(), "tracing", "log", b"{}").is_ok());

        let undeclared = caps(&["kubernetes/*"], &[("v1", "Pod")]);
        let err = undeclared
            .call(&ctx(), "kubernetes", "get_resource", GET_NS)
            .unwrap_err();
        assert!(
            matches!(err, CapabilityError::NotGranted(ref m) if m.contains("v1/Namespace") && m.contains("contextAwareResources")),
            "{err}"
        );

        // can_i is not checked against contextAwareResources, as upstream.
        let can_i = br#"{"subject_access_review":{"resource_attributes":{"resource":"pods","verb":"get"},"user":"u"},"disable_cache":false}"#;
        assert!(
            undeclared
                .call(&ctx(), "kubernetes", "can_i", can_i)
                .is_ok()
        );

        let declared = caps(&["kubernetes/get_resource"], &[("v1", "Namespace")]);
        let answer = declared
            .call(&ctx(), "kubernetes", "get_resource", GET_NS)
            .unwrap();
        assert!(
            String::from_utf8(answer)
                .unwrap()
                .contains("KubernetesGetResource")
        );
        let err = declared
            .call(&ctx(), "kubernetes", "can_i", can_i)
            .unwrap_err();
        assert!(matches!(err, CapabilityError::NotGranted(_)), "{err}");
    }

    #[test]
    fn certificate_checks_are_answered_locally() {
        let all = caps(&["crypto/*"], &[]);
        let err = all
            .call(
                &ctx(),
                "crypto",
                "v1/is_certificate_trusted",
                br#"{"cert":{"encoding":"Pem","data":[1]},"cert_chain":null,"not_after":null}"#,
            )
            .unwrap_err();
        assert!(err.to_string().contains("PEM"), "{err}");
    }
}
