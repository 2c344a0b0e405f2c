//! The PolicyServer reconciler: serving certificate, ConfigMap with the
//! bound policies, PodDisruptionBudget, ServiceAccount and the RBAC grants of
//! context-aware policies, Deployment and Service, all server-side applied
//! and owned by the PolicyServer; then its status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use portcullis_api::{PolicyResource, PolicyServer, PolicyServerStatus, PolicyView};
use tracing::info;

use crate::ca::{ensure_ca, secret_key};
use crate::certs;
use crate::conditions::condition;
use crate::context::{Context, Error, Stores};
use crate::names::{
    ANNOTATION_CERT_INPUTS, ANNOTATION_CERT_NOT_AFTER, FINALIZER, policy_server_object_name,
    service_dns_names,
};
use crate::policy::{delete_ignoring_missing, delete_webhooks};
use crate::{rbac, resources};

/// How often a PolicyServer is reconciled without any event, so that
/// certificate expiry (serving certificate and CA) is noticed.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);

/// Reconciles one PolicyServer (with its finalizer).
pub async fn reconcile(ps: Arc<PolicyServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<PolicyServer> = Api::all(ctx.client.clone());
    finalizer(&api, FINALIZER, ps, |event| async {
        match event {
            FinalizerEvent::Apply(ps) => apply(&ps, &ctx).await,
            FinalizerEvent::Cleanup(ps) => cleanup(&ps, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The policies of one kind bound to `server`, from the cache.
///
/// A policy being deleted stays until it is gone: its webhook is removed
/// first (by its finalizer), so the server never gets a request for an id it
/// no longer has.
fn bound<P: PolicyResource>(store: &Store<P>, server: &str) -> Vec<PolicyView> {
    store
        .state()
        .iter()
        .filter(|p| p.common().policy_server == server)
        .map(|p| p.view())
        .collect()
}

/// The policies of every kind bound to `server`, sorted by id, without
/// those the controller refuses to serve ([`PolicyView::refusal`]).
pub fn bound_policies(stores: &Stores, server: &str) -> Vec<PolicyView> {
    let mut views = bound(&stores.cluster_policies, server);
    views.extend(bound(&stores.policies, server));
    views.extend(bound(&stores.cluster_groups, server));
    views.extend(bound(&stores.groups, server));
    views.retain(|v| v.refusal().is_none());
    views.sort_by(|a, b| a.id.cmp(&b.id));
    views
}

/// The serving certificate in the Secret, if it was issued for the current
/// CA and DNS names and does not expire soon.
fn reusable_cert(secret: Option<&Secret>, fingerprint: &str) -> Option<certs::CertAndKey> {
    let secret = secret?;
    let annotations = secret.metadata.annotations.as_ref()?;
    let not_after = annotations.get(ANNOTATION_CERT_NOT_AFTER)?;
    let fresh = annotations.get(ANNOTATION_CERT_INPUTS).map(String::as_str) == Some(fingerprint)
        && !certs::needs_renewal(not_after);
    fresh.then_some(())?;
    Some(certs::CertAndKey {
        cert_pem: secret_key(secret, "tls.crt")?,
        key_pem: secret_key(secret, "tls.key")?,
        not_after: not_after.clone(),
    })
}

async fn apply(ps: &PolicyServer, ctx: &Context) -> Result<Action, Error> {
    let name = ps.metadata.name.clone().ok_or(Error::MissingName)?;
    let ns = &ctx.opts.namespace;
    let owner = ps.controller_owner_ref(&()).ok_or(Error::MissingName)?;
    let object_name = policy_server_object_name(&name);
    let generation = ps.metadata.generation;
    let previous = ps
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions = Vec::new();
    let reconciled = |type_: &str| {
        condition(
            &previous,
            type_,
            true,
            "ReconciliationSucceeded",
            String::new(),
            generation,
        )
    };

    // 1. Serving certificate, re-issued only when its inputs changed or it is
    //    about to expire.
    let ca = ensure_ca(ctx).await?;
    let dns_names = service_dns_names(&name, ns);
    let fingerprint = certs::cert_inputs_fingerprint(&ca.cert_pem, &dns_names);
    let existing = Stores::namespaced(&ctx.stores.secrets, ns, &object_name);
    let cert = match reusable_cert(existing.as_deref(), &fingerprint) {
        Some(cert) => cert,
        None => {
            info!(policy_server = %name, "issuing serving certificate");
            certs::issue_serving_cert(&ca.key_pem, &dns_names)?
        }
    };
    let annotations = BTreeMap::from([
        (ANNOTATION_CERT_INPUTS.to_string(), fingerprint),
        (
            ANNOTATION_CERT_NOT_AFTER.to_string(),
            cert.not_after.clone(),
        ),
    ]);
    let secret = resources::cert_secret(&name, &ctx.opts, &owner, &cert, &ca.cert_pem, annotations);
    ctx.apply(&ctx.own_namespace::<Secret>(), &object_name, &secret)
        .await?;
    conditions.push(reconciled("CertSecretReconciled"));

    // 2. ConfigMap with policies.yml.
    let policies = bound_policies(&ctx.stores, &name);
    let config_map = resources::config_map(&name, &ps.spec, &policies, &ctx.opts, &owner)?;
    ctx.apply(&ctx.own_namespace::<ConfigMap>(), &object_name, &config_map)
        .await?;
    conditions.push(reconciled("ConfigMapReconciled"));

    // 3. PodDisruptionBudget, or none.
    let pdbs: Api<PodDisruptionBudget> = ctx.own_namespace();
    match resources::pod_disruption_budget(&name, &ps.spec, &ctx.opts, &owner) {
        Some(pdb) => {
            ctx.apply(&pdbs, &object_name, &pdb).await?;
        }
        None => {
            if Stores::namespaced(&ctx.stores.pod_disruption_budgets, ns, &object_name).is_some() {
                delete_ignoring_missing(&pdbs, &object_name).await?;
            }
        }
    }
    conditions.push(reconciled("PodDisruptionBudgetReconciled"));

    // 4. ServiceAccount, and what it may read: exactly what the bound
    //    policies declare in contextAwareResources.
    let service_account = resources::workload::service_account_name(&name, &ps.spec);
    let accounts: Api<ServiceAccount> = ctx.own_namespace();
    if ps.spec.service_account_name.is_none() {
        let account = resources::rbac::service_account(&name, &ctx.opts, &owner);
        ctx.apply(&accounts, &object_name, &account).await?;
    } else if Stores::namespaced(&ctx.stores.service_accounts, ns, &object_name).is_some() {
        delete_ignoring_missing(&accounts, &object_name).await?;
    }
    conditions.push(reconciled("ServiceAccountReconciled"));
    let grants = rbac::grants(ctx, &policies).await;
    rbac::apply(ctx, &name, &service_account, &grants, &owner).await?;
    conditions.push(condition(
        &previous,
        "ContextAwareResourcesGranted",
        grants.refused.is_empty(),
        if grants.refused.is_empty() {
            "ReconciliationSucceeded"
        } else {
            "ResourcesRefused"
        },
        grants.refused.join("; "),
        generation,
    ));

    // 5. Deployment: a ServiceAccount token only if a policy reads the API.
    let pod_options = resources::PodOptions {
        service_account_token: rbac::needs_token(&policies),
    };
    let deployment = resources::deployment(&name, &ps.spec, &ctx.opts, &owner, &pod_options);
    ctx.apply(
        &ctx.own_namespace::<Deployment>(),
        &object_name,
        &deployment,
    )
    .await?;
    conditions.push(reconciled("DeploymentReconciled"));

    // 6. Service.
    let service = resources::service(&name, &ps.spec, &ctx.opts, &owner);
    ctx.apply(&ctx.own_namespace::<Service>(), &object_name, &service)
        .await?;
    conditions.push(reconciled("ServiceReconciled"));

    // 7. Status, only when it changed.
    let status = PolicyServerStatus { conditions };
    if ps.status.as_ref() != Some(&status) {
        let api: Api<PolicyServer> = Api::all(ctx.client.clone());
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
async fn cleanup(ps: &PolicyServer, ctx: &Context) -> Result<Action, Error> {
    let name = ps.name_any();
    for policy in bound_policies(&ctx.stores, &name) {
        delete_webhooks(ctx, &policy.id).await?;
    }
    info!(policy_server = %name, "policy server deleted");
    Ok(Action::await_change())
}
