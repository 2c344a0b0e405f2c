//! The reconcilers: one kube-runtime `Controller` per kind.
//!
//! - PolicyServer: CA, serving certificate, ConfigMap, Deployment, Service,
//!   PodDisruptionBudget (all server-side applied, owned by the PolicyServer).
//! - ClusterAdmissionPolicy / AdmissionPolicy: the webhook configuration,
//!   written once the policy-server is ready, and the policy status.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use portcullis_config::{PoliciesConfig, PolicyEntry};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::certs::{self, CertError};
use crate::crd::{
    AdmissionPolicy, ClusterAdmissionPolicy, PolicyServer, PolicyServerStatus, PolicyStatus,
    PolicyStatusEnum,
};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::names::{
    ANNOTATION_CERT_INPUTS, ANNOTATION_CERT_NOT_AFTER, ANNOTATION_POLICY_NAME,
    ANNOTATION_POLICY_NAMESPACE, CA_SECRET, FIELD_MANAGER, FINALIZER, LABEL_POLICY_SERVER,
    MANAGED_BY, PART_OF, POLICIES_KEY, policy_server_object_name, service_dns_names,
};
use crate::policy::{Policy, PolicyView};
use crate::readiness;
use crate::resources::{self, BuildOptions};

/// Errors of a reconcile. Every one is retried by `error_policy`.
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

/// Shared state of the reconcilers.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// What shapes the written objects (namespace, ...).
    pub opts: BuildOptions,
    /// Label selector restricting which PolicyServers and policies this
    /// instance handles (`None`: all).
    pub selector: Option<String>,
    /// Where reconciliations are counted and timed.
    pub metrics: Arc<Metrics>,
}

impl Context {
    fn list_params(&self) -> ListParams {
        match &self.selector {
            Some(s) => ListParams::default().labels(s),
            None => ListParams::default(),
        }
    }

    fn watcher_config(&self) -> watcher::Config {
        match &self.selector {
            Some(s) => watcher::Config::default().labels(s),
            None => watcher::Config::default(),
        }
    }

    /// Watch config of the namespaced children of PolicyServers.
    fn children_config(&self) -> watcher::Config {
        watcher::Config::default().labels(&format!("app.kubernetes.io/part-of={PART_OF}"))
    }

    fn apply_params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }
}

/// Runs the three controllers until `shutdown` completes.
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
    let shutdown = shutdown.shared();
    let ctx = Arc::new(Context {
        client: client.clone(),
        opts,
        selector,
        metrics,
    });
    let ns = ctx.opts.namespace.clone();

    let ps_api: Api<PolicyServer> = Api::all(client.clone());
    let ps_controller = Controller::new(ps_api, ctx.watcher_config());
    let ps_store = ps_controller.store();
    let servers = ps_controller.store();
    let ps_controller = ps_controller
        .watches(
            Api::<Secret>::namespaced(client.clone(), &ns),
            ca_watch_config(),
            move |_| {
                servers
                    .state()
                    .iter()
                    .map(|ps| ObjectRef::from_obj(ps.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .owns(
            Api::<Deployment>::namespaced(client.clone(), &ns),
            ctx.children_config(),
        )
        .owns(
            Api::<Service>::namespaced(client.clone(), &ns),
            ctx.children_config(),
        )
        .owns(
            Api::<ConfigMap>::namespaced(client.clone(), &ns),
            ctx.children_config(),
        )
        .owns(
            Api::<Secret>::namespaced(client.clone(), &ns),
            ctx.children_config(),
        )
        .owns(
            Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns),
            ctx.children_config(),
        )
        .watches(
            Api::<ClusterAdmissionPolicy>::all(client.clone()),
            ctx.watcher_config(),
            |p| Some(ObjectRef::new(&p.spec.policy_server)),
        )
        .watches(
            Api::<AdmissionPolicy>::all(client.clone()),
            ctx.watcher_config(),
            |p| Some(ObjectRef::new(&p.spec.policy_server)),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            instrumented(&ctx.metrics, reconcile_policy_server),
            error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "policy-server reconcile failed");
            }
        });

    let (cap_store, cap) =
        policy_controller::<ClusterAdmissionPolicy>(ctx.clone(), shutdown.clone(), false);
    let (ap_store, ap) = policy_controller::<AdmissionPolicy>(ctx.clone(), shutdown.clone(), true);
    ctx.metrics.track_policies(cap_store.clone());
    ctx.metrics.track_policies(ap_store.clone());
    // The stores fill once each controller's first LIST succeeded: from then
    // on the API server is reachable and every object has been queued.
    let synced = async move {
        let synced = futures_util::future::try_join3(
            ps_store.wait_until_ready(),
            cap_store.wait_until_ready(),
            ap_store.wait_until_ready(),
        );
        tokio::select! {
            synced = synced => {
                if synced.is_ok() {
                    health.set_ready();
                    info!("caches synced, ready");
                }
            }
            // Stopped before the first sync: never ready.
            () = shutdown => {}
        }
    };
    futures_util::join!(ps_controller, cap, ap, synced);
}

/// Creates the reconciliation series of every kind at zero, so that a
/// process that does not reconcile (a leader-election standby) exports them
/// too, as the leader does from its start.
pub fn register_reconcilers(metrics: &Metrics) {
    for kind in [
        PolicyServer::kind(&()),
        ClusterAdmissionPolicy::kind(&()),
        AdmissionPolicy::kind(&()),
    ] {
        metrics.register_reconciler(&kind);
    }
}

/// Wraps a reconcile function so that every reconciliation is counted (by
/// kind and result) and timed here, in one place, rather than in each
/// reconciler. The `kind` label is the Kubernetes kind of `K`.
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
        let kind = kind.clone();
        let reconciliation = reconcile(object, ctx);
        async move {
            let started = Instant::now();
            let result = reconciliation.await;
            metrics.record_reconcile(&kind, started.elapsed(), result.is_ok());
            result
        }
        .boxed()
    }
}

/// Builds the controller of one policy kind: its cache, and the future that
/// runs it until `shutdown`.
fn policy_controller<P: Policy>(
    ctx: Arc<Context>,
    shutdown: futures_util::future::Shared<impl Future<Output = ()> + Send + 'static>,
    namespaced: bool,
) -> (Store<P>, impl Future<Output = ()>) {
    let client = ctx.client.clone();
    let ns = ctx.opts.namespace.clone();
    let controller = Controller::new(P::api_all(client.clone()), ctx.watcher_config());
    let store = controller.store();
    let cache = store.clone();

    let by_server = |store: Store<P>| {
        move |server: String| -> Vec<ObjectRef<P>> {
            store
                .state()
                .iter()
                .filter(|p| p.view().policy_server == server)
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect()
        }
    };
    // Webhook configuration → its policy, if this instance handles it (with a
    // label selector, other instances' policies are not in the store).
    let owners = store.clone();
    let webhook_owner = move |meta: &ObjectMeta| -> Option<ObjectRef<P>> {
        let annotations = meta.annotations.as_ref()?;
        let name = annotations.get(ANNOTATION_POLICY_NAME)?;
        let namespace = annotations
            .get(ANNOTATION_POLICY_NAMESPACE)
            .filter(|n| !n.is_empty());
        let policy = match (namespaced, namespace) {
            (true, Some(ns)) => ObjectRef::new(name).within(ns),
            (false, None) => ObjectRef::new(name),
            _ => return None,
        };
        owners.get(&policy).is_some().then_some(policy)
    };
    let webhook_owner = Arc::new(webhook_owner);
    let mutating_owner = webhook_owner.clone();
    let webhook_config =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));

    let every_policy = store.clone();
    let for_server = by_server(store.clone());
    let for_deployment = by_server(store.clone());
    let for_config_map = by_server(store);
    let run = controller
        .watches(
            Api::<Secret>::namespaced(client.clone(), &ns),
            ca_watch_config(),
            move |_| {
                every_policy
                    .state()
                    .iter()
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<PolicyServer>::all(client.clone()),
            ctx.watcher_config(),
            move |ps| for_server(ps.name_any()),
        )
        .watches(
            Api::<Deployment>::namespaced(client.clone(), &ns),
            ctx.children_config(),
            move |d| {
                d.labels()
                    .get(LABEL_POLICY_SERVER)
                    .map(|s| for_deployment(s.clone()))
                    .unwrap_or_default()
            },
        )
        .watches(
            Api::<ConfigMap>::namespaced(client.clone(), &ns),
            ctx.children_config(),
            move |c| {
                c.labels()
                    .get(LABEL_POLICY_SERVER)
                    .map(|s| for_config_map(s.clone()))
                    .unwrap_or_default()
            },
        )
        .watches(
            Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            webhook_config.clone(),
            move |w| webhook_owner(&w.metadata),
        )
        .watches(
            Api::<MutatingWebhookConfiguration>::all(client),
            webhook_config,
            move |w| mutating_owner(&w.metadata),
        )
        .graceful_shutdown_on(shutdown)
        .run(
            instrumented(&ctx.metrics, reconcile_policy::<P>),
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "policy reconcile failed");
            }
        });
    (cache, run)
}

/// Watch config of the CA Secret: a rotation re-issues every serving
/// certificate and rewrites every webhook's caBundle.
fn ca_watch_config() -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={CA_SECRET}"))
}

/// How often a PolicyServer is reconciled without any event, so that
/// certificate expiry (serving certificate and CA) is noticed.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);

/// Requeues failed reconciles after a short delay.
pub fn error_policy<K>(obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action
where
    K: Resource,
{
    warn!(
        name = %obj.meta().name.as_deref().unwrap_or_default(),
        namespace = %obj.meta().namespace.as_deref().unwrap_or_default(),
        %error,
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

// ---------------------------------------------------------------------------
// Conditions

/// A condition with the given fields, keeping `lastTransitionTime` from
/// `previous` when the status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

// ---------------------------------------------------------------------------
// PolicyServer

async fn reconcile_policy_server(
    ps: Arc<PolicyServer>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let api: Api<PolicyServer> = Api::all(ctx.client.clone());
    finalizer(&api, FINALIZER, ps, |event| async {
        match event {
            FinalizerEvent::Apply(ps) => apply_policy_server(&ps, &ctx).await,
            FinalizerEvent::Cleanup(ps) => cleanup_policy_server(&ps, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The controller's CA as stored in Secret `portcullis-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    /// PEM certificate of the current CA (signs serving certificates).
    pub cert_pem: String,
    /// PEM key of the current CA.
    pub key_pem: String,
    /// What webhooks trust: the current CA, then the previous one while it
    /// is still valid (during a rotation).
    pub bundle_pem: String,
}

/// Key of the previous CA certificate in the CA Secret, kept after a rotation.
pub const OLD_CA_KEY: &str = "old-ca.crt";
/// Annotation on the CA Secret: expiry of `old-ca.crt` (Unix seconds).
pub const ANNOTATION_OLD_CA_NOT_AFTER: &str = "policies.portcullis.dev/old-ca-not-after";

fn ca_secret(namespace: &str, ca: &certs::CertAndKey, old: Option<(&str, &str)>) -> Secret {
    let mut annotations =
        BTreeMap::from([(ANNOTATION_CERT_NOT_AFTER.to_string(), ca.not_after.clone())]);
    let mut data = BTreeMap::from([
        (
            "ca.crt".to_string(),
            ByteString(ca.cert_pem.clone().into_bytes()),
        ),
        (
            "ca.key".to_string(),
            ByteString(ca.key_pem.clone().into_bytes()),
        ),
    ]);
    if let Some((old_cert, old_not_after)) = old {
        data.insert(
            OLD_CA_KEY.to_string(),
            ByteString(old_cert.as_bytes().to_vec()),
        );
        annotations.insert(
            ANNOTATION_OLD_CA_NOT_AFTER.to_string(),
            old_not_after.to_string(),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/part-of".to_string(), PART_OF.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGED_BY.to_string(),
                ),
            ])),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Default::default()
    }
}

/// The CA, created in Secret `portcullis-ca` if missing, and rotated when it
/// expires within [`certs::RENEW_BEFORE`]: the new CA replaces `ca.crt` /
/// `ca.key` and the previous certificate stays as `old-ca.crt` (in every
/// webhook's caBundle) until it expires. A CA Secret without the controller's
/// expiry annotation (provided by someone else) is never rotated. Concurrent
/// writers are serialised by the Secret's resourceVersion.
pub async fn ensure_ca(client: &Client, namespace: &str) -> Result<Ca, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api.get_opt(CA_SECRET).await? else {
        let ca = certs::generate_ca()?;
        return match api
            .create(&PostParams::default(), &ca_secret(namespace, &ca, None))
            .await
        {
            Ok(created) => {
                info!(namespace, "created CA secret {CA_SECRET}");
                ca_from_secret(&created, namespace)
            }
            // Another reconcile created it first: use theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                ca_from_secret(&api.get(CA_SECRET).await?, namespace)
            }
            Err(e) => Err(e.into()),
        };
    };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let current = ca_from_secret(&secret, namespace)?;
    let rotate = annotations
        .get(ANNOTATION_CERT_NOT_AFTER)
        .is_some_and(|not_after| certs::needs_renewal(not_after));
    let old_expired = secret_key(&secret, OLD_CA_KEY).is_some()
        && annotations
            .get(ANNOTATION_OLD_CA_NOT_AFTER)
            .is_none_or(|t| certs::is_expired(t));
    if !rotate && !old_expired {
        return Ok(current);
    }
    let mut replacement = if rotate {
        let ca = certs::generate_ca()?;
        let old_not_after = annotations
            .get(ANNOTATION_CERT_NOT_AFTER)
            .cloned()
            .unwrap_or_default();
        info!(namespace, "rotating the CA in {CA_SECRET}");
        ca_secret(namespace, &ca, Some((&current.cert_pem, &old_not_after)))
    } else {
        info!(
            namespace,
            "dropping the expired previous CA from {CA_SECRET}"
        );
        let ca = certs::CertAndKey {
            cert_pem: current.cert_pem.clone(),
            key_pem: current.key_pem.clone(),
            not_after: annotations
                .get(ANNOTATION_CERT_NOT_AFTER)
                .cloned()
                .unwrap_or_default(),
        };
        ca_secret(namespace, &ca, None)
    };
    replacement.metadata.resource_version = secret.metadata.resource_version.clone();
    match api
        .replace(CA_SECRET, &PostParams::default(), &replacement)
        .await
    {
        Ok(written) => ca_from_secret(&written, namespace),
        // Someone else rotated it concurrently: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            ca_from_secret(&api.get(CA_SECRET).await?, namespace)
        }
        Err(e) => Err(e.into()),
    }
}

fn secret_key(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

fn ca_from_secret(secret: &Secret, namespace: &str) -> Result<Ca, Error> {
    let missing = |key| Error::BadCaSecret {
        namespace: namespace.to_string(),
        name: CA_SECRET.to_string(),
        key,
    };
    let cert_pem = secret_key(secret, "ca.crt").ok_or_else(|| missing("ca.crt"))?;
    let key_pem = secret_key(secret, "ca.key").ok_or_else(|| missing("ca.key"))?;
    let mut bundle_pem = cert_pem.clone();
    if let Some(old) = secret_key(secret, OLD_CA_KEY) {
        if !bundle_pem.ends_with('\n') {
            bundle_pem.push('\n');
        }
        bundle_pem.push_str(&old);
    }
    Ok(Ca {
        cert_pem,
        key_pem,
        bundle_pem,
    })
}

async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .patch(name, &Context::apply_params(), &Patch::Apply(obj))
        .await?)
}

/// Bound policies of a PolicyServer, both kinds, read from the API server
/// (a consistent read, so a policy change that triggered this reconcile is
/// always seen).
async fn bound_policies(ctx: &Context, server: &str) -> Result<Vec<PolicyView>, Error> {
    let params = ctx
        .list_params()
        .fields(&format!("spec.policyServer={server}"));
    let mut views: Vec<PolicyView> = Api::<ClusterAdmissionPolicy>::all(ctx.client.clone())
        .list(&params)
        .await?
        .items
        .iter()
        .map(Policy::view)
        .collect();
    views.extend(
        Api::<AdmissionPolicy>::all(ctx.client.clone())
            .list(&params)
            .await?
            .items
            .iter()
            .map(Policy::view),
    );
    views.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(views)
}

async fn apply_policy_server(ps: &PolicyServer, ctx: &Context) -> Result<Action, Error> {
    let name = ps.metadata.name.clone().ok_or(Error::MissingName)?;
    let ns = &ctx.opts.namespace;
    let client = &ctx.client;
    let owner = ps.controller_owner_ref(&()).ok_or(Error::MissingName)?;
    let object_name = policy_server_object_name(&name);
    let generation = ps.metadata.generation;
    let previous = ps
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions = Vec::new();

    // 1. Serving certificate, re-issued only when its inputs changed or it is
    //    about to expire.
    let ca = ensure_ca(client, ns).await?;
    let (ca_cert, ca_key) = (ca.cert_pem, ca.key_pem);
    let dns_names = service_dns_names(&name, ns);
    let fingerprint = certs::cert_inputs_fingerprint(&ca_cert, &dns_names);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let existing = secrets.get_opt(&object_name).await?;
    let reusable = existing.as_ref().and_then(|s| {
        let annotations = s.metadata.annotations.as_ref()?;
        let not_after = annotations.get(ANNOTATION_CERT_NOT_AFTER)?;
        let fresh = annotations.get(ANNOTATION_CERT_INPUTS) == Some(&fingerprint)
            && !certs::needs_renewal(not_after);
        fresh.then_some(())?;
        Some(certs::CertAndKey {
            cert_pem: secret_key(s, "tls.crt")?,
            key_pem: secret_key(s, "tls.key")?,
            not_after: not_after.clone(),
        })
    });
    let cert = match reusable {
        Some(cert) => cert,
        None => {
            info!(policy_server = %name, "issuing serving certificate");
            certs::issue_serving_cert(&ca_key, &dns_names)?
        }
    };
    let annotations = BTreeMap::from([
        (ANNOTATION_CERT_INPUTS.to_string(), fingerprint),
        (
            ANNOTATION_CERT_NOT_AFTER.to_string(),
            cert.not_after.clone(),
        ),
    ]);
    let secret = resources::cert_secret(&name, &ctx.opts, &owner, &cert, &ca_cert, annotations);
    apply(&secrets, &object_name, &secret).await?;
    conditions.push(condition(
        &previous,
        "CertSecretReconciled",
        true,
        "ReconciliationSucceeded",
        String::new(),
        generation,
    ));

    // 2. ConfigMap with policies.yml.
    let policies = bound_policies(ctx, &name).await?;
    let config_map = resources::config_map(&name, &ps.spec, &policies, &ctx.opts, &owner)?;
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        &object_name,
        &config_map,
    )
    .await?;
    conditions.push(condition(
        &previous,
        "ConfigMapReconciled",
        true,
        "ReconciliationSucceeded",
        String::new(),
        generation,
    ));

    // 3. PodDisruptionBudget, or none.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    match resources::pod_disruption_budget(&name, &ps.spec, &ctx.opts, &owner) {
        Some(pdb) => {
            apply(&pdbs, &object_name, &pdb).await?;
        }
        None => {
            if pdbs.get_opt(&object_name).await?.is_some() {
                pdbs.delete(&object_name, &DeleteParams::default()).await?;
            }
        }
    }
    conditions.push(condition(
        &previous,
        "PodDisruptionBudgetReconciled",
        true,
        "ReconciliationSucceeded",
        String::new(),
        generation,
    ));

    // 4. Deployment.
    let deployment = resources::deployment(&name, &ps.spec, &ctx.opts, &owner);
    apply(
        &Api::<Deployment>::namespaced(client.clone(), ns),
        &object_name,
        &deployment,
    )
    .await?;
    conditions.push(condition(
        &previous,
        "DeploymentReconciled",
        true,
        "ReconciliationSucceeded",
        String::new(),
        generation,
    ));

    // 5. Service.
    let service = resources::service(&name, &ps.spec, &ctx.opts, &owner);
    apply(
        &Api::<Service>::namespaced(client.clone(), ns),
        &object_name,
        &service,
    )
    .await?;
    conditions.push(condition(
        &previous,
        "ServiceReconciled",
        true,
        "ReconciliationSucceeded",
        String::new(),
        generation,
    ));

    // 6. Status, only when it changed.
    let status = PolicyServerStatus { conditions };
    if ps.status.as_ref() != Some(&status) {
        let api: Api<PolicyServer> = Api::all(client.clone());
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    }
    Ok(Action::requeue(CERT_CHECK_INTERVAL))
}

/// Deleting a PolicyServer removes the webhooks of its policies (they would
/// point at a Service that is going away); the children go with the owner
/// references. The policies stay and become `scheduled`.
async fn cleanup_policy_server(ps: &PolicyServer, ctx: &Context) -> Result<Action, Error> {
    let name = ps.metadata.name.clone().ok_or(Error::MissingName)?;
    for policy in bound_policies(ctx, &name).await? {
        delete_webhooks(&ctx.client, &policy.id).await?;
    }
    info!(policy_server = %name, "policy server deleted");
    Ok(Action::await_change())
}

// ---------------------------------------------------------------------------
// Policies

async fn reconcile_policy<P: Policy>(policy: Arc<P>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api = policy.api_for(ctx.client.clone());
    finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            FinalizerEvent::Apply(p) => apply_policy(p.as_ref(), &ctx).await,
            FinalizerEvent::Cleanup(p) => {
                delete_webhooks(&ctx.client, &p.view().id).await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Deletes the Validating and Mutating webhook configurations named `id`
/// that this controller manages.
pub async fn delete_webhooks(client: &Client, id: &str) -> Result<(), Error> {
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(w) = validating.get_opt(id).await?
        && is_managed(&w.metadata)
    {
        validating.delete(id, &DeleteParams::default()).await?;
        info!(policy = id, "deleted ValidatingWebhookConfiguration");
    }
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(w) = mutating.get_opt(id).await?
        && is_managed(&w.metadata)
    {
        mutating.delete(id, &DeleteParams::default()).await?;
        info!(policy = id, "deleted MutatingWebhookConfiguration");
    }
    Ok(())
}

fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|v| v == MANAGED_BY)
}

/// Whether the Deployment has finished rolling out: the latest spec is
/// observed and every replica is updated and ready.
pub fn deployment_ready(deployment: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (&deployment.spec, &deployment.status) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    want > 0
        && status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0)
        && updated >= want
        && status.ready_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) == updated
}

/// Whether a policy's webhook can be written.
enum Readiness {
    /// Every ready replica serves the current configuration with the policy loaded.
    Ready,
    /// Not yet; an event (ConfigMap or Deployment change) will tell.
    NotReady(&'static str, String),
    /// Not yet; replicas are polled again after [`REPLICA_POLL_INTERVAL`]
    /// (a configuration reload emits no Kubernetes event).
    Waiting(&'static str, String),
}

/// How often replicas are asked again while they do not serve the current
/// configuration.
pub const REPLICA_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// Deadline of one replica's `GET /readiness`.
const REPLICA_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Asks every ready replica of the PolicyServer which configuration it
/// serves; ready only when all serve `expected_digest` with `id` loaded.
async fn replicas_readiness(
    ctx: &Context,
    server: &PolicyServer,
    id: &str,
    expected_digest: &str,
) -> Result<Readiness, Error> {
    let selector = format!("{LABEL_POLICY_SERVER}={}", server.name_any());
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.opts.namespace)
        .list(&ListParams::default().labels(&selector))
        .await?;
    let ready: Vec<&Pod> = pods.items.iter().filter(|p| pod_ready(p)).collect();
    if ready.is_empty() {
        return Ok(Readiness::Waiting(
            "PolicyServerNotReady",
            "no ready policy-server replica".to_string(),
        ));
    }
    let port = u16::try_from(server.spec.readiness_probe_port).unwrap_or(8081);
    for pod in ready {
        let pod_name = pod.name_any();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let report = match readiness::fetch_report(&ip, port, REPLICA_REPORT_TIMEOUT).await {
            Ok(report) => report,
            Err(e) => {
                return Ok(Readiness::Waiting(
                    "UnknownConfigurationVersion",
                    format!("replica {pod_name}: {e}"),
                ));
            }
        };
        let digest = report.config_digest.as_deref().unwrap_or("none");
        if digest != expected_digest {
            return Ok(Readiness::Waiting(
                "ConfigurationVersionMismatch",
                format!(
                    "replica {pod_name} serves configuration {digest}, expected {expected_digest}"
                ),
            ));
        }
        match report.policies.get(id) {
            Some(p) if p.state == "loaded" => {}
            Some(p) => {
                return Ok(Readiness::Waiting(
                    "PolicyLoadFailed",
                    format!(
                        "replica {pod_name}: {}",
                        p.reason.as_deref().unwrap_or(p.state.as_str())
                    ),
                ));
            }
            None => {
                return Ok(Readiness::Waiting(
                    "ConfigurationVersionMismatch",
                    format!("replica {pod_name} does not report policy {id}"),
                ));
            }
        }
    }
    Ok(Readiness::Ready)
}

async fn server_readiness(
    ctx: &Context,
    server: &PolicyServer,
    policy: &PolicyView,
) -> Result<(Readiness, Option<String>), Error> {
    let name = policy_server_object_name(&server.name_any());
    let ns = &ctx.opts.namespace;
    let Some(config_map) = Api::<ConfigMap>::namespaced(ctx.client.clone(), ns)
        .get_opt(&name)
        .await?
    else {
        return Ok((
            Readiness::NotReady(
                "ConfigMapMissing",
                format!("ConfigMap {ns}/{name} not found"),
            ),
            None,
        ));
    };
    let served_yaml = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(POLICIES_KEY))
        .cloned()
        .unwrap_or_default();
    let served = PoliciesConfig::from_slice(served_yaml.as_bytes())
        .ok()
        .and_then(|cfg| cfg.policies.get(&policy.id).cloned());
    let mode = served
        .as_ref()
        .map(|e| PolicyEntry::policy_mode(e).as_str().to_string());
    let wanted = resources::policies_config(std::slice::from_ref(policy), &server.spec)
        .policies
        .remove(&policy.id);
    if served.is_none() || served != wanted {
        return Ok((
            Readiness::NotReady(
                "ConfigurationVersionMismatch",
                "the policy-server configuration does not contain this policy's current spec yet"
                    .to_string(),
            ),
            mode,
        ));
    }
    let Some(deployment) = Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .get_opt(&name)
        .await?
    else {
        return Ok((
            Readiness::NotReady(
                "DeploymentMissing",
                format!("Deployment {ns}/{name} not found"),
            ),
            mode,
        ));
    };
    if !deployment_ready(&deployment) {
        return Ok((
            Readiness::NotReady(
                "PolicyServerNotReady",
                format!("Deployment {ns}/{name} has not finished rolling out"),
            ),
            mode,
        ));
    }
    let expected = portcullis_config::content_digest(served_yaml.as_bytes());
    let readiness = replicas_readiness(ctx, server, &policy.id, &expected).await?;
    Ok((readiness, mode))
}

async fn apply_policy<P: Policy>(policy: &P, ctx: &Context) -> Result<Action, Error> {
    let view = policy.view();
    let generation = policy.meta().generation;
    let previous = policy
        .status()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();

    let mut poll = false;
    let (state, reason, message, mode) = if view.policy_server.is_empty() {
        delete_webhooks(&ctx.client, &view.id).await?;
        (
            PolicyStatusEnum::Unscheduled,
            "NoPolicyServer",
            "spec.policyServer is empty".to_string(),
            None,
        )
    } else {
        let server = Api::<PolicyServer>::all(ctx.client.clone())
            .get_opt(&view.policy_server)
            .await?
            .filter(|s| s.metadata.deletion_timestamp.is_none());
        match server {
            None => {
                delete_webhooks(&ctx.client, &view.id).await?;
                (
                    PolicyStatusEnum::Scheduled,
                    "PolicyServerMissing",
                    format!("PolicyServer {} does not exist", view.policy_server),
                    None,
                )
            }
            Some(server) => match server_readiness(ctx, &server, &view).await? {
                (Readiness::NotReady(reason, message), mode) => {
                    (PolicyStatusEnum::Pending, reason, message, mode)
                }
                (Readiness::Waiting(reason, message), mode) => {
                    poll = true;
                    (PolicyStatusEnum::Pending, reason, message, mode)
                }
                (Readiness::Ready, mode) => {
                    write_webhook(policy, &view, ctx).await?;
                    (
                        PolicyStatusEnum::Active,
                        "WebhookRegistered",
                        String::new(),
                        mode,
                    )
                }
            },
        }
    };

    let status = PolicyStatus {
        policy_status: state,
        mode,
        conditions: vec![condition(
            &previous,
            "PolicyActive",
            state == PolicyStatusEnum::Active,
            reason,
            message,
            generation,
        )],
    };
    if policy.status() != Some(&status) {
        policy
            .api_for(ctx.client.clone())
            .patch_status(
                &view.name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await?;
    }
    if poll {
        Ok(Action::requeue(REPLICA_POLL_INTERVAL))
    } else {
        Ok(Action::await_change())
    }
}

async fn write_webhook<P: Policy>(
    policy: &P,
    view: &PolicyView,
    ctx: &Context,
) -> Result<(), Error> {
    let ca_bundle = ensure_ca(&ctx.client, &ctx.opts.namespace)
        .await?
        .bundle_pem;
    // A cluster-scoped webhook configuration may only be owned by a
    // cluster-scoped policy.
    let owner = if view.namespace.is_none() {
        policy.controller_owner_ref(&())
    } else {
        None
    };
    let ns = &ctx.opts.namespace;
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(ctx.client.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(ctx.client.clone());
    if view.mutating {
        let hook = resources::mutating_webhook(view, ns, ca_bundle.as_bytes(), owner);
        apply(&mutating, &view.id, &hook).await?;
        if let Some(w) = validating.get_opt(&view.id).await?
            && is_managed(&w.metadata)
        {
            validating
                .delete(&view.id, &DeleteParams::default())
                .await?;
        }
    } else {
        let hook = resources::validating_webhook(view, ns, ca_bundle.as_bytes(), owner);
        apply(&validating, &view.id, &hook).await?;
        if let Some(w) = mutating.get_opt(&view.id).await?
            && is_managed(&w.metadata)
        {
            mutating.delete(&view.id, &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn deployment(generation: i64, replicas: i32, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    #[test]
    fn deployment_readiness() {
        let rolled_out = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            updated_replicas: Some(2),
            ready_replicas: Some(2),
            ..Default::default()
        };
        assert!(deployment_ready(&deployment(2, 2, rolled_out.clone())));
        // Spec change not observed yet.
        assert!(!deployment_ready(&deployment(3, 2, rolled_out.clone())));
        // An old replica is still around.
        let rolling = DeploymentStatus {
            replicas: Some(3),
            ..rolled_out.clone()
        };
        assert!(!deployment_ready(&deployment(2, 2, rolling)));
        // Not every replica ready.
        let unready = DeploymentStatus {
            ready_replicas: Some(1),
            ..rolled_out
        };
        assert!(!deployment_ready(&deployment(2, 2, unready)));
        // Scaled to zero: nothing serves the webhook.
        assert!(!deployment_ready(&deployment(
            1,
            0,
            DeploymentStatus::default()
        )));
        assert!(!deployment_ready(&Deployment::default()));
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let first = condition(
            &[],
            "PolicyActive",
            false,
            "Pending",
            String::new(),
            Some(1),
        );
        let same = condition(
            std::slice::from_ref(&first),
            "PolicyActive",
            false,
            "Other",
            "m".to_string(),
            Some(2),
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        assert_eq!(same.reason, "Other");
        let flipped = condition(&[first], "PolicyActive", true, "Ok", String::new(), Some(2));
        assert_eq!(flipped.status, "True");
    }
}
