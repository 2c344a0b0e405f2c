//! Wiring: the shared watches, one kube-runtime `Controller` per kind, the
//! reconcile metrics and the retry policy.
//!
//! - PolicyServer ([`crate::policy_server`]): CA, serving certificate,
//!   ConfigMap, Deployment, Service, PodDisruptionBudget.
//! - Every policy kind ([`crate::policy`]): the webhook configuration,
//!   written once the policy-server serves the policy, and the status.
//!
//! Each resource type is watched once ([`SharedWatch`]); the controllers
//! are triggered by, and read from, those watches' caches.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{BoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use portcullis_api::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyKind, PolicyResource, PolicyServer,
};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::context::{Context, Error, Stores};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::names::{
    ANNOTATION_POLICY_NAME, ANNOTATION_POLICY_NAMESPACE, CA_SECRET, LABEL_POLICY_SERVER,
    MANAGED_BY, PART_OF,
};
use crate::readiness::ReplicaClient;
use crate::resources::BuildOptions;
use crate::watch::SharedWatch;
use crate::{policy, policy_server};

pub use crate::policy_server::CERT_CHECK_INTERVAL;
pub use crate::readiness::REPLICA_POLL_INTERVAL;

/// Runs the controllers until `shutdown` completes.
pub async fn run(
    client: Client,
    opts: BuildOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    run_with_selector(client, opts, None, shutdown).await;
}

/// Like [`run`], but only handles PolicyServers and policies matching the
/// label selector `selector` (used by tests to share one cluster).
pub async fn run_with_selector(
    client: Client,
    opts: BuildOptions,
    selector: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    run_observed(
        client,
        opts,
        selector,
        Arc::new(Metrics::new()),
        Health::default(),
        shutdown,
    )
    .await;
}

/// The watches of every type the controllers read or react to.
struct Watches {
    policy_servers: SharedWatch<PolicyServer>,
    cluster_policies: SharedWatch<ClusterAdmissionPolicy>,
    policies: SharedWatch<AdmissionPolicy>,
    cluster_groups: SharedWatch<ClusterAdmissionPolicyGroup>,
    groups: SharedWatch<AdmissionPolicyGroup>,
    config_maps: SharedWatch<ConfigMap>,
    deployments: SharedWatch<Deployment>,
    pods: SharedWatch<Pod>,
    secrets: SharedWatch<Secret>,
    pod_disruption_budgets: SharedWatch<PodDisruptionBudget>,
    ca: SharedWatch<Secret>,
    validating_webhooks: SharedWatch<ValidatingWebhookConfiguration>,
    mutating_webhooks: SharedWatch<MutatingWebhookConfiguration>,
    service_accounts: SharedWatch<ServiceAccount>,
    cluster_roles: SharedWatch<ClusterRole>,
    cluster_role_bindings: SharedWatch<ClusterRoleBinding>,
    roles: SharedWatch<Role>,
}

impl Watches {
    fn new(client: &Client, namespace: &str, selector: Option<&str>) -> Self {
        let selected = || match selector {
            Some(s) => watcher::Config::default().labels(s),
            None => watcher::Config::default(),
        };
        // The namespaced children of PolicyServers.
        let children =
            || watcher::Config::default().labels(&format!("app.kubernetes.io/part-of={PART_OF}"));
        let managed = || {
            watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"))
        };
        Self {
            policy_servers: SharedWatch::new(Api::all(client.clone()), selected()),
            cluster_policies: SharedWatch::new(Api::all(client.clone()), selected()),
            policies: SharedWatch::new(Api::all(client.clone()), selected()),
            cluster_groups: SharedWatch::new(Api::all(client.clone()), selected()),
            groups: SharedWatch::new(Api::all(client.clone()), selected()),
            config_maps: SharedWatch::new(Api::namespaced(client.clone(), namespace), children()),
            deployments: SharedWatch::new(Api::namespaced(client.clone(), namespace), children()),
            pods: SharedWatch::new(Api::namespaced(client.clone(), namespace), children()),
            secrets: SharedWatch::new(Api::namespaced(client.clone(), namespace), children()),
            pod_disruption_budgets: SharedWatch::new(
                Api::namespaced(client.clone(), namespace),
                children(),
            ),
            // A rotation re-issues every serving certificate and rewrites
            // every webhook's caBundle.
            ca: SharedWatch::new(
                Api::namespaced(client.clone(), namespace),
                watcher::Config::default().fields(&format!("metadata.name={CA_SECRET}")),
            ),
            validating_webhooks: SharedWatch::new(Api::all(client.clone()), managed()),
            mutating_webhooks: SharedWatch::new(Api::all(client.clone()), managed()),
            service_accounts: SharedWatch::new(
                Api::namespaced(client.clone(), namespace),
                children(),
            ),
            cluster_roles: SharedWatch::new(Api::all(client.clone()), managed()),
            cluster_role_bindings: SharedWatch::new(Api::all(client.clone()), managed()),
            roles: SharedWatch::new(Api::all(client.clone()), managed()),
        }
    }

    fn stores(&self) -> Stores {
        Stores {
            policy_servers: self.policy_servers.store(),
            cluster_policies: self.cluster_policies.store(),
            policies: self.policies.store(),
            cluster_groups: self.cluster_groups.store(),
            groups: self.groups.store(),
            config_maps: self.config_maps.store(),
            deployments: self.deployments.store(),
            pods: self.pods.store(),
            secrets: self.secrets.store(),
            pod_disruption_budgets: self.pod_disruption_budgets.store(),
            ca: self.ca.store(),
            validating_webhooks: self.validating_webhooks.store(),
            mutating_webhooks: self.mutating_webhooks.store(),
            service_accounts: self.service_accounts.store(),
            cluster_roles: self.cluster_roles.store(),
            cluster_role_bindings: self.cluster_role_bindings.store(),
            roles: self.roles.store(),
        }
    }

    /// Drives every watch until `shutdown`.
    fn run(self, shutdown: Shared<BoxFuture<'static, ()>>) -> impl Future<Output = ()> {
        let runs: Vec<BoxFuture<'static, ()>> = vec![
            self.policy_servers.run(shutdown.clone()).boxed(),
            self.cluster_policies.run(shutdown.clone()).boxed(),
            self.policies.run(shutdown.clone()).boxed(),
            self.cluster_groups.run(shutdown.clone()).boxed(),
            self.groups.run(shutdown.clone()).boxed(),
            self.config_maps.run(shutdown.clone()).boxed(),
            self.deployments.run(shutdown.clone()).boxed(),
            self.pods.run(shutdown.clone()).boxed(),
            self.secrets.run(shutdown.clone()).boxed(),
            self.pod_disruption_budgets.run(shutdown.clone()).boxed(),
            self.ca.run(shutdown.clone()).boxed(),
            self.validating_webhooks.run(shutdown.clone()).boxed(),
            self.mutating_webhooks.run(shutdown.clone()).boxed(),
            self.service_accounts.run(shutdown.clone()).boxed(),
            self.cluster_roles.run(shutdown.clone()).boxed(),
            self.cluster_role_bindings.run(shutdown.clone()).boxed(),
            self.roles.run(shutdown).boxed(),
        ];
        futures_util::future::join_all(runs).map(|_| ())
    }
}

/// Every object in `store`.
fn all<K>(store: &Store<K>) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Like [`run_with_selector`], recording reconciliations and the policies'
/// phases in `metrics`, and marking `health` ready once every controller has
/// listed its objects from the API server.
pub async fn run_observed(
    client: Client,
    opts: BuildOptions,
    selector: Option<String>,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown: Shared<BoxFuture<'static, ()>> = shutdown.boxed().shared();
    let replicas = match ReplicaClient::new() {
        Ok(replicas) => replicas,
        Err(error) => {
            warn!(%error, "cannot start the controllers");
            return;
        }
    };
    let mut watches = Watches::new(&client, &opts.namespace, selector.as_deref());
    let ctx = Arc::new(Context {
        client: client.clone(),
        opts,
        metrics,
        backoff: Backoff::default(),
        replicas,
        stores: watches.stores(),
    });

    let ps_controller = policy_server_controller(&ctx, &mut watches, shutdown.clone());
    let cap_trigger = (
        watches.cluster_policies.subscribe(),
        ctx.stores.cluster_policies.clone(),
    );
    let cap = policy_controller(&ctx, &mut watches, cap_trigger, shutdown.clone());
    let ap_trigger = (watches.policies.subscribe(), ctx.stores.policies.clone());
    let ap = policy_controller(&ctx, &mut watches, ap_trigger, shutdown.clone());
    let capg_trigger = (
        watches.cluster_groups.subscribe(),
        ctx.stores.cluster_groups.clone(),
    );
    let capg = policy_controller(&ctx, &mut watches, capg_trigger, shutdown.clone());
    let apg_trigger = (watches.groups.subscribe(), ctx.stores.groups.clone());
    let apg = policy_controller(&ctx, &mut watches, apg_trigger, shutdown.clone());
    ctx.metrics
        .track_policies(ctx.stores.cluster_policies.clone());
    ctx.metrics.track_policies(ctx.stores.policies.clone());
    ctx.metrics
        .track_policies(ctx.stores.cluster_groups.clone());
    ctx.metrics.track_policies(ctx.stores.groups.clone());

    // The stores fill once each watch's first LIST succeeded: from then on
    // the API server is reachable and every object has been queued.
    let stores = ctx.stores.clone();
    let until_shutdown = shutdown.clone();
    let synced = async move {
        let synced = futures_util::future::try_join5(
            stores.policy_servers.wait_until_ready(),
            stores.cluster_policies.wait_until_ready(),
            stores.policies.wait_until_ready(),
            stores.cluster_groups.wait_until_ready(),
            stores.groups.wait_until_ready(),
        );
        tokio::select! {
            synced = synced => {
                if synced.is_ok() {
                    health.set_ready();
                    info!("caches synced, ready");
                }
            }
            // Stopped before the first sync: never ready.
            () = until_shutdown => {}
        }
    };
    futures_util::join!(
        watches.run(shutdown),
        ps_controller,
        cap,
        ap,
        capg,
        apg,
        synced
    );
}

/// Creates the reconciliation series of every kind at zero, so that a
/// process that does not reconcile (a leader-election standby) exports them
/// too, as the leader does from its start.
pub fn register_reconcilers(metrics: &Metrics) {
    metrics.register_reconciler(&PolicyServer::kind(&()));
    for kind in [
        PolicyKind::ClusterAdmissionPolicy,
        PolicyKind::AdmissionPolicy,
    ] {
        metrics.register_reconciler(kind.as_str());
    }
}

/// `<kind>/<namespace>/<name>`: the key of an object's retry state.
fn backoff_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

/// Wraps a reconcile function so that every reconciliation is counted (by
/// kind and result) and timed here, in one place, rather than in each
/// reconciler; a success also resets the object's retry backoff. The `kind`
/// label is the Kubernetes kind of `K`.
fn instrumented<K, F, Fut>(
    metrics: &Metrics,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> + use<K, F, Fut>
where
    K: Resource<DynamicType = ()>,
    F: Fn(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let kind: Arc<str> = K::kind(&()).into();
    metrics.register_reconciler(&kind);
    move |object, ctx| {
        let metrics = ctx.metrics.clone();
        let backoff = ctx.backoff.clone();
        let key = backoff_key(object.as_ref());
        let kind = kind.clone();
        let reconciliation = reconcile(object, ctx);
        async move {
            let started = Instant::now();
            let result = reconciliation.await;
            metrics.record_reconcile(&kind, started.elapsed(), result.is_ok());
            if result.is_ok() {
                backoff.succeeded(&key);
            }
            result
        }
        .boxed()
    }
}

/// Requeues a failed reconcile after the object's next backoff delay
/// (exponential, with jitter; see [`crate::backoff`]).
pub fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let key = backoff_key(obj.as_ref());
    let delay = ctx.backoff.failed(&key);
    warn!(
        name = %obj.meta().name.as_deref().unwrap_or_default(),
        namespace = %obj.meta().namespace.as_deref().unwrap_or_default(),
        %error,
        retry_in = ?delay,
        failures = ctx.backoff.failures(&key),
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

/// The PolicyServers whose name is `server`, if this instance handles it.
fn server_ref(store: &Store<PolicyServer>, server: &str) -> Option<ObjectRef<PolicyServer>> {
    let server = ObjectRef::new(server);
    store.get(&server).is_some().then_some(server)
}

/// The PolicyServer controller.
fn policy_server_controller(
    ctx: &Arc<Context>,
    watches: &mut Watches,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> impl Future<Output = ()> + use<> {
    let client = ctx.client.clone();
    let ns = ctx.opts.namespace.clone();
    let children =
        || watcher::Config::default().labels(&format!("app.kubernetes.io/part-of={PART_OF}"));
    let managed =
        || watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let servers = ctx.stores.policy_servers.clone();
    let for_ca = servers.clone();
    let (for_cap, for_ap) = (servers.clone(), servers.clone());
    let (for_capg, for_apg) = (servers.clone(), servers.clone());
    Controller::for_stream(watches.policy_servers.subscribe(), servers)
        .watches_stream(watches.ca.subscribe(), move |_| all(&for_ca))
        .owns_stream(watches.deployments.subscribe())
        .owns_stream(watches.config_maps.subscribe())
        .owns_stream(watches.secrets.subscribe())
        .owns_stream(watches.pod_disruption_budgets.subscribe())
        .owns_stream(watches.service_accounts.subscribe())
        .owns_stream(watches.cluster_roles.subscribe())
        .owns_stream(watches.cluster_role_bindings.subscribe())
        .owns_stream(watches.roles.subscribe())
        .owns(Api::<RoleBinding>::all(client.clone()), managed())
        .owns(Api::<Service>::namespaced(client.clone(), &ns), children())
        .watches_stream(watches.cluster_policies.subscribe(), move |p| {
            server_ref(&for_cap, &p.common().policy_server)
        })
        .watches_stream(watches.policies.subscribe(), move |p| {
            server_ref(&for_ap, &p.common().policy_server)
        })
        .watches_stream(watches.cluster_groups.subscribe(), move |p| {
            server_ref(&for_capg, &p.common().policy_server)
        })
        .watches_stream(watches.groups.subscribe(), move |p| {
            server_ref(&for_apg, &p.common().policy_server)
        })
        .graceful_shutdown_on(shutdown)
        .run(
            instrumented(&ctx.metrics, policy_server::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "policy-server reconcile failed");
            }
        })
}

/// The policy named in a webhook configuration's annotations, if it is of
/// kind `P` and in `store`.
fn webhook_owner<P: PolicyResource>(store: &Store<P>, meta: &ObjectMeta) -> Option<ObjectRef<P>> {
    let annotations = meta.annotations.as_ref()?;
    let name = annotations.get(ANNOTATION_POLICY_NAME)?;
    let namespace = annotations
        .get(ANNOTATION_POLICY_NAMESPACE)
        .filter(|n| !n.is_empty());
    let policy = match (P::KIND.is_namespaced(), namespace) {
        (true, Some(ns)) => ObjectRef::new(name).within(ns),
        (false, None) => ObjectRef::new(name),
        _ => return None,
    };
    // With a label selector, other instances' policies are not in the store.
    store.get(&policy).is_some().then_some(policy)
}

/// The policies in `store` bound to `server`.
fn bound_to<P: PolicyResource>(store: &Store<P>, server: &str) -> Vec<ObjectRef<P>> {
    store
        .state()
        .iter()
        .filter(|p| p.common().policy_server == server)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The policies in `store` bound to the PolicyServer an object belongs to
/// (its `policies.portcullis.dev/policy-server` label).
fn bound_to_owner<P: PolicyResource, K: Resource>(
    store: &Store<P>,
    object: &K,
) -> Vec<ObjectRef<P>> {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_POLICY_SERVER))
        .map(|server| bound_to(store, server))
        .unwrap_or_default()
}

/// The controller of one policy kind, triggered by `trigger` (a
/// subscription to the watch that fills `store`).
fn policy_controller<P, S>(
    ctx: &Arc<Context>,
    watches: &mut Watches,
    (trigger, store): (S, Store<P>),
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> impl Future<Output = ()> + use<P, S>
where
    P: PolicyResource,
    S: futures_util::Stream<Item = Result<P, watcher::Error>> + Send + 'static,
{
    let every = store.clone();
    let (for_server, for_deployment, for_config_map, for_pod) =
        (store.clone(), store.clone(), store.clone(), store.clone());
    let (validating_owner, mutating_owner) = (store.clone(), store.clone());
    Controller::for_stream(trigger, store)
        .watches_stream(watches.ca.subscribe(), move |_| all(&every))
        .watches_stream(watches.policy_servers.subscribe(), move |ps| {
            bound_to(&for_server, &ps.name_any())
        })
        .watches_stream(watches.deployments.subscribe(), move |d| {
            bound_to_owner(&for_deployment, &d)
        })
        .watches_stream(watches.config_maps.subscribe(), move |c| {
            bound_to_owner(&for_config_map, &c)
        })
        .watches_stream(watches.pods.subscribe(), move |p| {
            bound_to_owner(&for_pod, &p)
        })
        .watches_stream(watches.validating_webhooks.subscribe(), move |w| {
            webhook_owner(&validating_owner, &w.metadata)
        })
        .watches_stream(watches.mutating_webhooks.subscribe(), move |w| {
            webhook_owner(&mutating_owner, &w.metadata)
        })
        .graceful_shutdown_on(shutdown)
        .run(
            instrumented(&ctx.metrics, policy::reconcile::<P>),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "policy reconcile failed");
            }
        })
}
