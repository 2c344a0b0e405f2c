//! The policy reconciler, one generic path for every policy kind: the
//! webhook configuration, written once the policy-server serves the policy,
//! and the policy's status.

use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use portcullis_api::{PolicyResource, PolicyStatus, PolicyStatusEnum, PolicyView};
use serde::de::DeserializeOwned;
use tracing::info;

use crate::ca::ensure_ca;
use crate::conditions::condition;
use crate::context::{Context, Error};
use crate::names::{FINALIZER, MANAGED_BY};
use crate::readiness::{REPLICA_POLL_INTERVAL, Readiness, server_readiness};
use crate::resources;

/// Reconciles one policy of any kind (with its finalizer).
pub async fn reconcile<P: PolicyResource>(
    policy: Arc<P>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let api = policy.api_for(ctx.client.clone());
    finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            FinalizerEvent::Apply(p) => apply(p.as_ref(), &ctx).await,
            FinalizerEvent::Cleanup(p) => {
                delete_webhooks(&ctx, &p.id()).await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Whether this controller manages the webhook configuration.
fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|v| v == MANAGED_BY)
}

/// Deletes `name`; already gone is fine.
pub async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the webhook configuration `id` of type `K` if the cache has one
/// that this controller manages.
async fn delete_managed<K>(ctx: &Context, store: &Store<K>, id: &str) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let managed = store
        .get(&ObjectRef::new(id))
        .is_some_and(|w| is_managed(w.meta()));
    if managed {
        delete_ignoring_missing(&Api::<K>::all(ctx.client.clone()), id).await?;
    }
    Ok(managed)
}

/// Deletes the Validating and Mutating webhook configurations named `id`
/// that this controller manages.
pub async fn delete_webhooks(ctx: &Context, id: &str) -> Result<(), Error> {
    if delete_managed(ctx, &ctx.stores.validating_webhooks, id).await? {
        info!(policy = id, "deleted ValidatingWebhookConfiguration");
    }
    if delete_managed(ctx, &ctx.stores.mutating_webhooks, id).await? {
        info!(policy = id, "deleted MutatingWebhookConfiguration");
    }
    Ok(())
}

/// Where the policy is in its lifecycle, with the condition's reason and
/// message and the mode its policy-server serves it with.
struct Phase {
    state: PolicyStatusEnum,
    reason: &'static str,
    message: String,
    mode: Option<String>,
    /// Ask the replicas again after [`REPLICA_POLL_INTERVAL`].
    poll: bool,
}

impl Phase {
    fn new(state: PolicyStatusEnum, reason: &'static str, message: String) -> Self {
        Self {
            state,
            reason,
            message,
            mode: None,
            poll: false,
        }
    }
}

async fn phase<P: PolicyResource>(
    policy: &P,
    view: &PolicyView,
    ctx: &Context,
) -> Result<Phase, Error> {
    if let Some(refusal) = view.refusal() {
        delete_webhooks(ctx, &view.id).await?;
        return Ok(Phase::new(
            PolicyStatusEnum::Pending,
            "ModuleSourceNotAllowed",
            refusal,
        ));
    }
    let server_name = &view.common.policy_server;
    if server_name.is_empty() {
        delete_webhooks(ctx, &view.id).await?;
        return Ok(Phase::new(
            PolicyStatusEnum::Unscheduled,
            "NoPolicyServer",
            "spec.policyServer is empty".to_string(),
        ));
    }
    let server = ctx
        .stores
        .policy_servers
        .get(&ObjectRef::new(server_name))
        .filter(|s| s.metadata.deletion_timestamp.is_none());
    let Some(server) = server else {
        delete_webhooks(ctx, &view.id).await?;
        return Ok(Phase::new(
            PolicyStatusEnum::Scheduled,
            "PolicyServerMissing",
            format!("PolicyServer {server_name} does not exist"),
        ));
    };
    let (readiness, mode) = server_readiness(ctx, &server, view).await;
    let mut phase = match readiness {
        Readiness::NotReady(reason, message) => {
            Phase::new(PolicyStatusEnum::Pending, reason, message)
        }
        Readiness::Waiting(reason, message) => Phase {
            poll: true,
            ..Phase::new(PolicyStatusEnum::Pending, reason, message)
        },
        Readiness::Ready => {
            write_webhook(policy, view, ctx).await?;
            Phase::new(PolicyStatusEnum::Active, "WebhookRegistered", String::new())
        }
    };
    phase.mode = mode;
    Ok(phase)
}

async fn apply<P: PolicyResource>(policy: &P, ctx: &Context) -> Result<Action, Error> {
    let view = policy.view();
    let previous = policy
        .status()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let phase = phase(policy, &view, ctx).await?;
    let status = PolicyStatus {
        policy_status: phase.state,
        mode: phase.mode,
        conditions: vec![condition(
            &previous,
            "PolicyActive",
            phase.state == PolicyStatusEnum::Active,
            phase.reason,
            phase.message,
            policy.meta().generation,
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
    Ok(if phase.poll {
        Action::requeue(REPLICA_POLL_INTERVAL)
    } else {
        Action::await_change()
    })
}

/// Writes the policy's webhook configuration (Mutating for a mutating
/// policy, else Validating) and removes one of the other type.
async fn write_webhook<P: PolicyResource>(
    policy: &P,
    view: &PolicyView,
    ctx: &Context,
) -> Result<(), Error> {
    let ca_bundle = ensure_ca(ctx).await?.bundle_pem;
    // A cluster-scoped webhook configuration may only be owned by a
    // cluster-scoped policy.
    let owner = if view.namespace.is_none() {
        policy.controller_owner_ref(&())
    } else {
        None
    };
    let ns = &ctx.opts.namespace;
    if view.mutating {
        let hook = resources::mutating_webhook(view, ns, ca_bundle.as_bytes(), owner);
        let api: Api<MutatingWebhookConfiguration> = Api::all(ctx.client.clone());
        ctx.apply(&api, &view.id, &hook).await?;
        delete_managed(ctx, &ctx.stores.validating_webhooks, &view.id).await?;
    } else {
        let hook = resources::validating_webhook(view, ns, ca_bundle.as_bytes(), owner);
        let api: Api<ValidatingWebhookConfiguration> = Api::all(ctx.client.clone());
        ctx.apply(&api, &view.id, &hook).await?;
        delete_managed(ctx, &ctx.stores.mutating_webhooks, &view.id).await?;
    }
    Ok(())
}
