//! The `kubernetes` host capabilities, served from watch caches.
//!
//! - `list_resources_by_namespace` / `list_resources_all`: from the
//!   [`ResourceWatch`] of the kind (one per kind, whatever the selectors),
//!   as bytes cached per query until the kind changes.
//! - `get_resource`: from the same cache; with `disable_cache`, or when the
//!   cache cannot serve, a direct GET (kept 5 s in a bounded cache unless
//!   `disable_cache`).
//! - `can_i`: a SubjectAccessReview, kept 5 s in a bounded cache unless
//!   `disable_cache`.
//!
//! Watches start when a loaded policy declares the kind in
//! `contextAwareResources` and stop when no loaded policy does. In steady
//! state an admission request causes no request to the API server.

mod mask;
mod selector;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1 as authz;
use kube::api::{DynamicObject, PostParams, TypeMeta};
use portcullis_adapters::{CallContext, CapabilityError, ContextResourceList};

use self::mask::FieldMask;
pub use self::watch::{ListQuery, ResourceType, ResourceWatch, WatchState};
use self::watch::{Resolved, SnapshotCache};
use super::bridge::Bridge;
use super::request::{CallbackRequestType, CanIRequest};
use super::scope::PolicyScope;

/// How long a direct GET or a SubjectAccessReview answer is reused, as upstream.
const ANSWER_TTL: Duration = Duration::from_secs(5);
/// Most bytes of list answers kept (they are rebuilt after a change anyway).
const SNAPSHOT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes (of JSON text) of the parsed lists served to Rego policies'
/// inventories; the parsed values take a few times more.
const OBJECTS_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes of direct GET answers kept.
const GET_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Most bytes of SubjectAccessReview answers kept.
const CAN_I_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// Where the policy-server finds its cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KubeConfigSource {
    /// `$KUBECONFIG`, `~/.kube/config`, then the in-cluster service account.
    #[default]
    Infer,
    /// This kubeconfig file.
    File(PathBuf),
    /// No cluster: context-aware calls fail closed.
    Disabled,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct GetKey {
    resource: ResourceType,
    namespace: Option<String>,
    name: String,
}

/// The cluster side of the host capabilities: the client, the watches and
/// the bounded answer caches. One per policy-server.
pub struct KubeContext {
    client: Result<kube::Client, String>,
    bridge: Bridge,
    watches: Mutex<HashMap<ResourceType, Weak<ResourceWatch>>>,
    resolved: Mutex<HashMap<ResourceType, Resolved>>,
    snapshots: SnapshotCache,
    objects: watch::ObjectsCache,
    gets: moka::sync::Cache<GetKey, Arc<[u8]>>,
    can_i: moka::sync::Cache<CanIRequest, Arc<[u8]>>,
}

impl std::fmt::Debug for KubeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeContext")
            .field("connected", &self.client.is_ok())
            .finish_non_exhaustive()
    }
}

impl KubeContext {
    /// Builds the client for `source`. Never fails: without a usable
    /// configuration every context-aware call fails with the reason.
    pub async fn connect(source: &KubeConfigSource, bridge: Bridge) -> Self {
        let client = match source {
            KubeConfigSource::Disabled => Err("access to Kubernetes is disabled".to_string()),
            KubeConfigSource::Infer => match kube::Config::infer().await {
                Ok(config) => kube::Client::try_from(config).map_err(|e| client_error(&e)),
                Err(e) => Err(format!(
                    "no Kubernetes configuration found (no --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster service account): {e}"
                )),
            },
            KubeConfigSource::File(path) => from_file(path).await,
        };
        match &client {
            Ok(_) => tracing::debug!(?source, "Kubernetes client configured"),
            Err(reason) => {
                tracing::info!(%reason, "no Kubernetes API server: context-aware policies will fail closed")
            }
        }
        Self::with_client(client, bridge)
    }

    fn with_client(client: Result<kube::Client, String>, bridge: Bridge) -> Self {
        Self {
            client,
            bridge,
            watches: Mutex::default(),
            resolved: Mutex::default(),
            snapshots: watch::snapshot_cache(SNAPSHOT_CACHE_BYTES),
            objects: watch::objects_cache(OBJECTS_CACHE_BYTES),
            gets: moka::sync::Cache::builder()
                .max_capacity(GET_CACHE_BYTES)
                .time_to_live(ANSWER_TTL)
                .weigher(|k: &GetKey, v: &Arc<[u8]>| weight(k.name.len() + v.len()))
                .build(),
            can_i: moka::sync::Cache::builder()
                .max_capacity(CAN_I_CACHE_BYTES)
                .time_to_live(ANSWER_TTL)
                .weigher(|_: &CanIRequest, v: &Arc<[u8]>| weight(256 + v.len()))
                .build(),
        }
    }

    /// Whether a cluster is configured.
    pub fn is_connected(&self) -> bool {
        self.client.is_ok()
    }

    /// The watch of `resource`, started if no loaded policy holds it yet.
    /// The caller keeps the handle for as long as it needs the cache.
    pub fn watch(&self, resource: &ResourceType) -> Arc<ResourceWatch> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = watches.get(resource).and_then(Weak::upgrade) {
            return existing;
        }
        let watch = Arc::new(match &self.client {
            Ok(client) => {
                tracing::info!(%resource, "context-aware cache starting");
                ResourceWatch::start(resource.clone(), client.clone(), self.bridge.handle())
            }
            Err(reason) => ResourceWatch::failed(resource.clone(), reason.clone()),
        });
        watches.insert(resource.clone(), Arc::downgrade(&watch));
        watch
    }

    /// The watches that loaded policies hold, for readiness.
    pub fn watches(&self) -> Vec<Arc<ResourceWatch>> {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let mut live: Vec<_> = watches.values().filter_map(Weak::upgrade).collect();
        live.sort_by(|a, b| a.resource().cmp(b.resource()));
        live
    }

    /// Whether every cache a loaded policy needs has synced or failed.
    pub fn caches_settled(&self) -> bool {
        self.watches().iter().all(|w| w.is_settled())
    }

    /// A list of `resource` as the JSON a policy receives (a Kubernetes
    /// `List`), from its watch cache. For other consumers of the caches,
    /// such as the Rego adapter's `data.kubernetes` inventory.
    pub fn list_json(
        &self,
        resource: &ResourceType,
        query: &ListQuery,
        deadline: Instant,
    ) -> Result<Arc<[u8]>, CapabilityError> {
        let watch = self.live_watch(resource)?;
        let resolved = watch.wait_synced(deadline)?;
        watch.list(&resolved, query, &self.snapshots)
    }

    /// Every object of `resource` that `scope` may see, from its watch cache,
    /// for the Rego adapter's `data.kubernetes` / `data.inventory`.
    pub fn context_resource(
        &self,
        resource: &ResourceType,
        scope: &PolicyScope,
        deadline: Instant,
    ) -> Result<ContextResourceList, CapabilityError> {
        let watch = self.live_watch(resource)?;
        let resolved = watch.wait_synced(deadline)?;
        let namespace = match scope {
            PolicyScope::ClusterWide => None,
            PolicyScope::Namespace(own) => Some(own.as_str()),
        };
        let (revision, objects) = watch.objects(&resolved, namespace, &self.objects)?;
        Ok(ContextResourceList {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            plural: resolved.api.plural.clone(),
            objects,
            revision,
        })
    }

    /// Serves one `kubernetes/*` request.
    pub fn call(
        &self,
        ctx: &CallContext<'_>,
        request: &CallbackRequestType,
    ) -> Result<Vec<u8>, CapabilityError> {
        match request {
            CallbackRequestType::KubernetesListResourceNamespace {
                api_version,
                kind,
                namespace,
                label_selector,
                field_selector,
                field_masks,
            } => self.list(
                ctx,
                ResourceType::new(api_version, kind),
                ListQuery {
                    namespace: Some(namespace.clone()),
                    label_selector: label_selector.clone(),
                    field_selector: field_selector.clone(),
                    field_masks: field_masks.clone(),
                },
            ),
            CallbackRequestType::KubernetesListResourceAll {
                api_version,
                kind,
                label_selector,
                field_selector,
                field_masks,
            } => self.list(
                ctx,
                ResourceType::new(api_version, kind),
                ListQuery {
                    namespace: None,
                    label_selector: label_selector.clone(),
                    field_selector: field_selector.clone(),
                    field_masks: field_masks.clone(),
                },
            ),
            CallbackRequestType::KubernetesGetResource {
                api_version,
                kind,
                name,
                namespace,
                disable_cache,
                field_masks,
            } => self.get(
                ctx,
                ResourceType::new(api_version, kind),
                namespace.as_deref(),
                name,
                *disable_cache,
                field_masks.as_ref(),
            ),
            CallbackRequestType::KubernetesCanI {
                request,
                disable_cache,
            } => self.can_i(ctx, request, *disable_cache || request.disable_cache),
            other => Err(CapabilityError::Failed(format!(
                "not a Kubernetes request: {other:?}"
            ))),
        }
    }

    fn live_watch(&self, resource: &ResourceType) -> Result<Arc<ResourceWatch>, CapabilityError> {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches
            .get(resource)
            .and_then(Weak::upgrade)
            .ok_or_else(|| {
                CapabilityError::Failed(format!(
                    "no loaded policy declares Kubernetes {resource} in contextAwareResources"
                ))
            })
    }

    fn list(
        &self,
        ctx: &CallContext<'_>,
        resource: ResourceType,
        query: ListQuery,
    ) -> Result<Vec<u8>, CapabilityError> {
        self.list_json(&resource, &query, ctx.deadline)
            .map(|bytes| bytes.to_vec())
    }

    fn get(
        &self,
        ctx: &CallContext<'_>,
        resource: ResourceType,
        namespace: Option<&str>,
        name: &str,
        disable_cache: bool,
        field_masks: Option<&BTreeSet<String>>,
    ) -> Result<Vec<u8>, CapabilityError> {
        let mask = field_masks.map(FieldMask::new).filter(|m| !m.is_empty());
        let watch = self.live_watch(&resource)?;
        // A cache still syncing does not make the call wait: a GET is quicker.
        if !disable_cache && let Some(resolved) = watch.synced() {
            let namespace = scoped_namespace(&resource, &resolved, namespace)?;
            return watch
                .get(namespace, name, mask.as_ref())?
                .ok_or_else(|| not_found(&resource, namespace, name));
        }
        // Fresh data was asked for, or the cache cannot serve: ask the API server.
        let client = self.client.clone().map_err(unavailable)?;
        let resolved = self.resolve(ctx, &client, &resource, &watch)?;
        let namespace = scoped_namespace(&resource, &resolved, namespace)?.map(str::to_string);
        let key = GetKey {
            resource: resource.clone(),
            namespace: namespace.clone(),
            name: name.to_string(),
        };
        let cached = if disable_cache {
            None
        } else {
            self.gets.get(&key)
        };
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let what = format!("get Kubernetes {resource} {name:?}");
                let api = resolved.api.clone();
                let fetched = self.bridge.run(ctx, &what, async move {
                    let api: kube::Api<DynamicObject> = match &key.namespace {
                        Some(ns) => kube::Api::namespaced_with(client, ns, &api),
                        None => kube::Api::all_with(client, &api),
                    };
                    let object = api
                        .get_opt(&key.name)
                        .await
                        .map_err(|e| CapabilityError::Failed(client_error(&e)))?;
                    object
                        .map(|mut object| {
                            object.metadata.managed_fields = None;
                            object.types = Some(TypeMeta {
                                api_version: resource.api_version.clone(),
                                kind: resource.kind.clone(),
                            });
                            serde_json::to_vec(&object)
                                .map(|v| (key, Arc::<[u8]>::from(v)))
                                .map_err(|e| CapabilityError::Failed(e.to_string()))
                        })
                        .transpose()
                })?;
                let Some((key, bytes)) = fetched else {
                    return Err(not_found(
                        &ResourceType::new(&resolved.api.api_version, &resolved.api.kind),
                        namespace.as_deref(),
                        name,
                    ));
                };
                if !disable_cache {
                    self.gets.insert(key, Arc::clone(&bytes));
                }
                bytes
            }
        };
        match mask {
            None => Ok(bytes.to_vec()),
            Some(mask) => {
                let mut value: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| CapabilityError::Failed(e.to_string()))?;
                mask.apply(&mut value);
                serde_json::to_vec(&value).map_err(|e| CapabilityError::Failed(e.to_string()))
            }
        }
    }

    /// The discovery answer for `resource`: the watch's, else asked once.
    fn resolve(
        &self,
        ctx: &CallContext<'_>,
        client: &kube::Client,
        resource: &ResourceType,
        watch: &ResourceWatch,
    ) -> Result<Resolved, CapabilityError> {
        if let Some(resolved) = watch.resolved() {
            return Ok(resolved);
        }
        let known = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(resolved) = known.get(resource) {
            return Ok(resolved.clone());
        }
        drop(known);
        let client = client.clone();
        let gvk = resource.gvk();
        let what = format!("discover Kubernetes {resource}");
        let resolved = self.bridge.run(ctx, &what, async move {
            kube::discovery::pinned_kind(&client, &gvk)
                .await
                .map(|(api, caps)| Resolved {
                    api,
                    namespaced: caps.scope == kube::discovery::Scope::Namespaced,
                })
                .map_err(|e| CapabilityError::Failed(client_error(&e)))
        })?;
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(resource.clone(), resolved.clone());
        Ok(resolved)
    }

    fn can_i(
        &self,
        ctx: &CallContext<'_>,
        request: &CanIRequest,
        disable_cache: bool,
    ) -> Result<Vec<u8>, CapabilityError> {
        let mut key = request.clone();
        key.disable_cache = false;
        if !disable_cache && let Some(answer) = self.can_i.get(&key) {
            return Ok(answer.to_vec());
        }
        let client = self.client.clone().map_err(unavailable)?;
        let review = subject_access_review(request);
        let answer: Arc<[u8]> = self.bridge.run(ctx, "kubernetes/can_i", async move {
            let api: kube::Api<authz::SubjectAccessReview> = kube::Api::all(client);
            let created = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| CapabilityError::Failed(client_error(&e)))?;
            let status = created.status.ok_or_else(|| {
                CapabilityError::Failed("the SubjectAccessReview came back without a status".into())
            })?;
            serde_json::to_vec(&status)
                .map(Arc::from)
                .map_err(|e| CapabilityError::Failed(e.to_string()))
        })?;
        if !disable_cache {
            self.can_i.insert(key, Arc::clone(&answer));
        }
        Ok(answer.to_vec())
    }
}

fn subject_access_review(request: &CanIRequest) -> authz::SubjectAccessReview {
    let review = &request.subject_access_review;
    let attributes = &review.resource_attributes;
    authz::SubjectAccessReview {
        spec: authz::SubjectAccessReviewSpec {
            user: Some(review.user.clone()),
            groups: review.groups.clone(),
            resource_attributes: Some(authz::ResourceAttributes {
                group: attributes.group.clone(),
                name: attributes.name.clone(),
                namespace: attributes.namespace.clone(),
                resource: Some(attributes.resource.clone()),
                subresource: attributes.subresource.clone(),
                verb: Some(attributes.verb.clone()),
                version: attributes.version.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The namespace to look in: required for namespaced kinds, ignored (as
/// upstream does) for cluster-scoped ones.
fn scoped_namespace<'a>(
    resource: &ResourceType,
    resolved: &Resolved,
    namespace: Option<&'a str>,
) -> Result<Option<&'a str>, CapabilityError> {
    match (resolved.namespaced, namespace.filter(|n| !n.is_empty())) {
        (true, Some(ns)) => Ok(Some(ns)),
        (true, None) => Err(CapabilityError::Failed(format!(
            "Kubernetes {resource} is namespaced: get_resource needs a namespace"
        ))),
        (false, _) => Ok(None),
    }
}

fn not_found(resource: &ResourceType, namespace: Option<&str>, name: &str) -> CapabilityError {
    CapabilityError::Failed(match namespace {
        Some(ns) => format!("Kubernetes {resource} {name:?} not found in namespace {ns:?}"),
        None => format!("Kubernetes {resource} {name:?} not found"),
    })
}

fn unavailable(reason: String) -> CapabilityError {
    CapabilityError::Failed(format!("no Kubernetes API server: {reason}"))
}

fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

async fn from_file(path: &std::path::Path) -> Result<kube::Client, String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("invalid kubeconfig {}: {e}", path.display()))?;
    kube::Client::try_from(config).map_err(|e| client_error(&e))
}

/// A kube-rs error as one readable line: the API server's status message
/// when there is one ("namespaces is forbidden: User ... cannot list ...").
fn client_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!(
            "{} (HTTP {}{})",
            status.message,
            status.code,
            if status.reason.is_empty() {
                String::new()
            } else {
                format!(", {}", status.reason)
            }
        ),
        other => crate::fetch::error_chain(other),
    }
}
