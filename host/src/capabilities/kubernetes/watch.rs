//! One watch-backed cache per Kubernetes resource type.
//!
//! A [`ResourceWatch`] lists its kind once (from the API server's watch cache)
//! and then follows a watch; it never lists again unless the watch expires.
//! Objects are kept as the JSON bytes a policy receives (without
//! `managedFields`), plus their labels for selectors. A list answer is built
//! by concatenating those bytes and is kept until the next change of the
//! kind, so that steady-state calls copy bytes instead of serialising
//! objects (see [`super::KubeContext`] for the snapshot cache).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, TypeMeta};
use kube::discovery::Scope;
use kube::runtime::{WatchStreamExt, watcher};
use portcullis_adapters::CapabilityError;
use serde_json::Value;

use super::mask::FieldMask;
use super::selector::{FieldSelector, LabelSelector};

/// A resource type a policy reads: `{apiVersion, kind}` of `contextAwareResources`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType {
    /// `v1`, `apps/v1`, `networking.k8s.io/v1`...
    pub api_version: String,
    /// `Namespace`, `Deployment`...
    pub kind: String,
}

impl ResourceType {
    /// `apiVersion` and `kind`.
    pub fn new(api_version: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
        }
    }

    pub(super) fn gvk(&self) -> GroupVersionKind {
        let (group, version) = self
            .api_version
            .split_once('/')
            .unwrap_or(("", &self.api_version));
        GroupVersionKind::gvk(group, version, &self.kind)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)
    }
}

/// Which objects of a kind to list, and which of their fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListQuery {
    /// Only objects of this namespace; none lists every namespace.
    pub namespace: Option<String>,
    /// A Kubernetes label selector.
    pub label_selector: Option<String>,
    /// A Kubernetes field selector.
    pub field_selector: Option<String>,
    /// Keep only these dotted paths of each object.
    pub field_masks: Option<BTreeSet<String>>,
}

/// A resource type resolved by discovery.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub(super) api: ApiResource,
    pub(super) namespaced: bool,
}

/// Where a watch stands, for readiness reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum WatchState {
    /// Listing for the first time.
    Syncing,
    /// Serving from the cache.
    Synced {
        /// Objects in the cache.
        objects: usize,
    },
    /// Cannot be served; retrying in the background.
    Failed {
        /// Why.
        reason: String,
    },
}

struct StoredObject {
    labels: BTreeMap<String, String>,
    json: Box<[u8]>,
}

type ObjectKey = (String, String);

#[derive(Default)]
struct ObjectStore {
    objects: BTreeMap<ObjectKey, Arc<StoredObject>>,
    /// Bumped on every change; snapshots built at an older one are stale.
    generation: u64,
}

#[derive(Default)]
struct Status {
    resolved: Option<Resolved>,
    synced: bool,
    error: Option<String>,
}

pub(super) struct WatchShared {
    resource: ResourceType,
    id: u64,
    status: Mutex<Status>,
    changed: Condvar,
    store: RwLock<ObjectStore>,
}

/// A list answer built at some generation of the store.
pub(super) struct Snapshot {
    generation: u64,
    pub(super) bytes: Arc<[u8]>,
}

/// The snapshot cache shared by every watch: `(watch id, query)` → bytes.
pub(super) type SnapshotCache = moka::sync::Cache<(u64, ListQuery), Arc<Snapshot>>;

/// Builds a snapshot cache that holds at most `max_bytes` of list answers.
pub(super) fn snapshot_cache(max_bytes: u64) -> SnapshotCache {
    moka::sync::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_, snapshot: &Arc<Snapshot>| {
            u32::try_from(snapshot.bytes.len()).unwrap_or(u32::MAX)
        })
        .build()
}

/// The parsed objects of one watch (or of one namespace of it) at some
/// generation of its store, for consumers of whole lists (the Rego adapter's
/// `data.kubernetes` / `data.inventory`).
pub(super) struct ObjectsSnapshot {
    generation: u64,
    /// JSON bytes of the objects, the cache's weight.
    bytes: u64,
    /// Unique among every snapshot ever built: consumers cache what they
    /// derive from a list by it.
    revision: u64,
    pub(super) objects: Arc<Vec<serde_json::Value>>,
}

/// The objects cache shared by every watch: `(watch id, namespace)` → objects.
pub(super) type ObjectsCache = moka::sync::Cache<(u64, Option<String>), Arc<ObjectsSnapshot>>;

/// Builds an objects cache that holds at most `max_bytes` (of JSON text).
pub(super) fn objects_cache(max_bytes: u64) -> ObjectsCache {
    moka::sync::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_, snapshot: &Arc<ObjectsSnapshot>| {
            u32::try_from(snapshot.bytes).unwrap_or(u32::MAX)
        })
        .build()
}

static NEXT_REVISION: AtomicU64 = AtomicU64::new(1);

/// The watch-backed cache of one resource type. Dropping the last handle
/// stops the watch: caches live exactly as long as a loaded policy needs them.
pub struct ResourceWatch {
    shared: Arc<WatchShared>,
    task: Option<tokio::task::AbortHandle>,
}

impl Drop for ResourceWatch {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
            tracing::info!(resource = %self.shared.resource, "context-aware cache stopped: no loaded policy needs it");
        }
    }
}

impl fmt::Debug for ResourceWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceWatch")
            .field("resource", &self.shared.resource)
            .field("state", &self.state())
            .finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl ResourceWatch {
    /// Starts watching `resource` with `client` on `runtime`.
    pub(super) fn start(
        resource: ResourceType,
        client: kube::Client,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let shared = Arc::new(WatchShared::new(resource));
        let task = runtime.spawn(run(Arc::clone(&shared), client));
        Self {
            shared,
            task: Some(task.abort_handle()),
        }
    }

    /// A watch that can never serve: no cluster is configured.
    pub(super) fn failed(resource: ResourceType, reason: String) -> Self {
        let shared = Arc::new(WatchShared::new(resource));
        shared.set_error(reason);
        Self { shared, task: None }
    }

    /// The resource type watched.
    pub fn resource(&self) -> &ResourceType {
        &self.shared.resource
    }

    /// Where the watch stands.
    pub fn state(&self) -> WatchState {
        let status = lock(&self.shared.status);
        if status.synced {
            drop(status);
            let objects = read(&self.shared.store).objects.len();
            WatchState::Synced { objects }
        } else if let Some(reason) = &status.error {
            WatchState::Failed {
                reason: reason.clone(),
            }
        } else {
            WatchState::Syncing
        }
    }

    /// Whether readiness may be reported: synced, or failed (a failing
    /// cache fails its policies' calls; it must not keep the others out).
    pub fn is_settled(&self) -> bool {
        !matches!(self.state(), WatchState::Syncing)
    }

    pub(super) fn resolved(&self) -> Option<Resolved> {
        lock(&self.shared.status).resolved.clone()
    }

    /// The discovery answer, if the cache can serve now.
    pub(super) fn synced(&self) -> Option<Resolved> {
        let status = lock(&self.shared.status);
        if status.synced {
            status.resolved.clone()
        } else {
            None
        }
    }

    /// Waits until the cache can serve, at most until `deadline`.
    pub(super) fn wait_synced(&self, deadline: Instant) -> Result<Resolved, CapabilityError> {
        let mut status = lock(&self.shared.status);
        loop {
            if status.synced
                && let Some(resolved) = &status.resolved
            {
                return Ok(resolved.clone());
            }
            if let Some(reason) = &status.error {
                return Err(CapabilityError::Failed(format!(
                    "the cache of Kubernetes {} is not available: {reason}",
                    self.shared.resource
                )));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(CapabilityError::DeadlineExceeded(format!(
                    "waiting for the cache of Kubernetes {} to sync",
                    self.shared.resource
                )));
            }
            status = match self.shared.changed.wait_timeout(status, remaining) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// The list answer for `query`, from `cache` when nothing changed since
    /// it was built.
    pub(super) fn list(
        &self,
        resolved: &Resolved,
        query: &ListQuery,
        cache: &SnapshotCache,
    ) -> Result<Arc<[u8]>, CapabilityError> {
        if query.namespace.is_some() && !resolved.namespaced {
            return Err(CapabilityError::Failed(format!(
                "Kubernetes {} is cluster-scoped: list it with list_resources_all, not by namespace",
                self.shared.resource
            )));
        }
        let key = (self.shared.id, query.clone());
        let store = read(&self.shared.store);
        if let Some(snapshot) = cache.get(&key)
            && snapshot.generation == store.generation
        {
            return Ok(Arc::clone(&snapshot.bytes));
        }
        let bytes: Arc<[u8]> = build_list(&self.shared.resource, &store, query)?.into();
        cache.insert(
            key,
            Arc::new(Snapshot {
                generation: store.generation,
                bytes: Arc::clone(&bytes),
            }),
        );
        Ok(bytes)
    }

    /// Every object, or those `namespace` may see (its namespaced objects
    /// and its own Namespace), parsed once per change of the store; with
    /// the snapshot's revision.
    pub(super) fn objects(
        &self,
        resolved: &Resolved,
        namespace: Option<&str>,
        cache: &ObjectsCache,
    ) -> Result<(u64, Arc<Vec<serde_json::Value>>), CapabilityError> {
        let key = (self.shared.id, namespace.map(str::to_owned));
        let store = read(&self.shared.store);
        if let Some(snapshot) = cache.get(&key)
            && snapshot.generation == store.generation
        {
            return Ok((snapshot.revision, Arc::clone(&snapshot.objects)));
        }
        let visible = |(object_ns, name): &ObjectKey| match namespace {
            None => true,
            Some(own) if resolved.namespaced => object_ns == own,
            Some(own) => self.shared.resource.kind == "Namespace" && name == own,
        };
        let mut bytes = 0u64;
        let objects = store
            .objects
            .iter()
            .filter(|(key, _)| visible(key))
            .map(|(_, object)| {
                bytes += object.json.len() as u64;
                serde_json::from_slice(&object.json)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CapabilityError::Failed(format!("a cached object is not JSON: {e}")))?;
        let snapshot = Arc::new(ObjectsSnapshot {
            generation: store.generation,
            bytes,
            revision: NEXT_REVISION.fetch_add(1, Ordering::Relaxed),
            objects: Arc::new(objects),
        });
        cache.insert(key, Arc::clone(&snapshot));
        Ok((snapshot.revision, Arc::clone(&snapshot.objects)))
    }

    /// One object's JSON, trimmed to `mask`; none when absent.
    pub(super) fn get(
        &self,
        namespace: Option<&str>,
        name: &str,
        mask: Option<&FieldMask>,
    ) -> Result<Option<Vec<u8>>, CapabilityError> {
        let key = (namespace.unwrap_or_default().to_string(), name.to_string());
        let store = read(&self.shared.store);
        let Some(object) = store.objects.get(&key) else {
            return Ok(None);
        };
        match mask {
            None => Ok(Some(object.json.to_vec())),
            Some(mask) => {
                let mut value: Value = serde_json::from_slice(&object.json)
                    .map_err(|e| CapabilityError::Failed(format!("cached object: {e}")))?;
                mask.apply(&mut value);
                serde_json::to_vec(&value)
                    .map(Some)
                    .map_err(|e| CapabilityError::Failed(e.to_string()))
            }
        }
    }
}

impl WatchShared {
    fn new(resource: ResourceType) -> Self {
        Self {
            resource,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            status: Mutex::default(),
            changed: Condvar::new(),
            store: RwLock::default(),
        }
    }

    fn set_error(&self, reason: String) {
        let mut status = lock(&self.status);
        if !status.synced {
            status.error = Some(reason);
            self.changed.notify_all();
        }
    }
}

/// The JSON a policy receives for one object: apiVersion and kind set (list
/// items come without them), `managedFields` dropped (large, and of no use
/// to a policy: the incumbent drops them too).
fn stored(mut object: DynamicObject, api: &ApiResource) -> Option<(ObjectKey, Arc<StoredObject>)> {
    object.metadata.managed_fields = None;
    object.types = Some(TypeMeta {
        api_version: api.api_version.clone(),
        kind: api.kind.clone(),
    });
    let name = object.metadata.name.clone()?;
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let labels = object.metadata.labels.clone().unwrap_or_default();
    let json = serde_json::to_vec(&object).ok()?.into_boxed_slice();
    Some(((namespace, name), Arc::new(StoredObject { labels, json })))
}

fn build_list(
    resource: &ResourceType,
    store: &ObjectStore,
    query: &ListQuery,
) -> Result<Vec<u8>, CapabilityError> {
    let bad = |what: String| CapabilityError::Failed(what);
    let labels = query
        .label_selector
        .as_deref()
        .map(LabelSelector::parse)
        .transpose()
        .map_err(bad)?;
    let fields = query
        .field_selector
        .as_deref()
        .map(FieldSelector::parse)
        .transpose()
        .map_err(bad)?;
    let mask = query
        .field_masks
        .as_ref()
        .map(FieldMask::new)
        .filter(|m| !m.is_empty());
    let needs_parse = mask.is_some() || fields.as_ref().is_some_and(FieldSelector::needs_object);

    let objects: Box<dyn Iterator<Item = (&ObjectKey, &Arc<StoredObject>)>> = match &query.namespace
    {
        Some(namespace) => Box::new(
            store
                .objects
                .range((
                    Bound::Included((namespace.clone(), String::new())),
                    Bound::Unbounded,
                ))
                .take_while(move |((ns, _), _)| ns == namespace),
        ),
        None => Box::new(store.objects.iter()),
    };

    let mut out = Vec::with_capacity(64 + store.objects.len() * 64);
    out.extend_from_slice(b"{\"apiVersion\":");
    serde_json::to_writer(&mut out, &resource.api_version).map_err(|e| bad(e.to_string()))?;
    out.extend_from_slice(b",\"kind\":");
    serde_json::to_writer(&mut out, &format!("{}List", resource.kind))
        .map_err(|e| bad(e.to_string()))?;
    out.extend_from_slice(b",\"metadata\":{},\"items\":[");
    let mut first = true;
    for ((namespace, name), object) in objects {
        if labels.as_ref().is_some_and(|l| !l.matches(&object.labels)) {
            continue;
        }
        let mut parsed: Option<Value> = if needs_parse {
            Some(
                serde_json::from_slice(&object.json)
                    .map_err(|e| bad(format!("cached object: {e}")))?,
            )
        } else {
            None
        };
        if fields
            .as_ref()
            .is_some_and(|f| !f.matches(namespace, name, parsed.as_ref()))
        {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        match (&mask, parsed.as_mut()) {
            (Some(mask), Some(value)) => {
                mask.apply(value);
                serde_json::to_writer(&mut out, value).map_err(|e| bad(e.to_string()))?;
            }
            _ => out.extend_from_slice(&object.json),
        }
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// Discovery, then list-and-watch until aborted. Errors are retried with
/// backoff; until the first sync they are what callers see.
async fn run(shared: Arc<WatchShared>, client: kube::Client) {
    let resolved = resolve(&shared, &client).await;
    lock(&shared.status).resolved = Some(resolved.clone());
    let api: kube::Api<DynamicObject> = kube::Api::all_with(client, &resolved.api);
    // `any_semantic`: the initial list is served from the API server's
    // watch cache instead of etcd.
    let config = watcher::Config::default().any_semantic();
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut initial: Option<BTreeMap<ObjectKey, Arc<StoredObject>>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => initial = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(object)) => {
                if let (Some(objects), Some((key, object))) =
                    (initial.as_mut(), stored(object, &resolved.api))
                {
                    objects.insert(key, object);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let objects = initial.take().unwrap_or_default();
                let count = objects.len();
                {
                    let mut store = write(&shared.store);
                    store.objects = objects;
                    store.generation += 1;
                }
                let mut status = lock(&shared.status);
                let first = !status.synced;
                status.synced = true;
                status.error = None;
                shared.changed.notify_all();
                drop(status);
                if first {
                    tracing::info!(resource = %shared.resource, objects = count, "context-aware cache synced");
                } else {
                    tracing::debug!(resource = %shared.resource, objects = count, "context-aware cache re-listed");
                }
            }
            Ok(watcher::Event::Apply(object)) => {
                if let Some((key, object)) = stored(object, &resolved.api) {
                    let mut store = write(&shared.store);
                    store.objects.insert(key, object);
                    store.generation += 1;
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                let key = (
                    object.metadata.namespace.unwrap_or_default(),
                    object.metadata.name.unwrap_or_default(),
                );
                let mut store = write(&shared.store);
                store.objects.remove(&key);
                store.generation += 1;
            }
            Err(e) => {
                let reason = watch_error(&e);
                tracing::warn!(resource = %shared.resource, error = %reason, "context-aware cache: watch failed; retrying");
                shared.set_error(reason);
            }
        }
    }
}

/// Resolves the resource type by discovery, retrying until it is served
/// (a CRD may be installed after the policy that reads it).
async fn resolve(shared: &WatchShared, client: &kube::Client) -> Resolved {
    let mut delay = Duration::from_millis(500);
    loop {
        match kube::discovery::pinned_kind(client, &shared.resource.gvk()).await {
            Ok((api, capabilities)) => {
                return Resolved {
                    api,
                    namespaced: capabilities.scope == Scope::Namespaced,
                };
            }
            Err(e) => {
                let reason = format!(
                    "the API server does not serve {}: {}",
                    shared.resource,
                    super::client_error(&e)
                );
                tracing::warn!(resource = %shared.resource, error = %reason, "context-aware cache: discovery failed; retrying");
                shared.set_error(reason);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn watch_error(error: &watcher::Error) -> String {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => super::client_error(e),
        other => other.to_string(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
