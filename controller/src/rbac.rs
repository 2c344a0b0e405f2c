//! The controller grants what policies declare: for the policies bound to a
//! PolicyServer, its ServiceAccount may `get`, `list` and `watch` exactly
//! the resources in their `contextAwareResources` (resolved through API
//! discovery), cluster-wide for cluster-wide policies and in their own
//! namespace for namespaced ones, and nothing else. The grant follows the
//! policies: it grows and shrinks with them, and goes with the PolicyServer.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use kube::runtime::reflector::ObjectRef;
use portcullis_api::{ContextAwareResource, PolicyView};
use tracing::info;

use crate::context::{Context, Error};
use crate::names::LABEL_POLICY_SERVER;
use crate::policy::delete_ignoring_missing;
use crate::resources::rbac::{self as build, GrantedResource, role_name};

/// What the policies bound to one PolicyServer may read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Cluster-wide, for the cluster-wide policies.
    pub cluster: BTreeSet<GrantedResource>,
    /// Per namespace, for that namespace's policies.
    pub namespaced: BTreeMap<String, BTreeSet<GrantedResource>>,
    /// Declared resources that could not be granted, and why.
    pub refused: Vec<String>,
}

impl Grants {
    /// Whether anything is granted.
    pub fn is_empty(&self) -> bool {
        self.cluster.is_empty() && self.namespaced.is_empty()
    }
}

/// Whether a policy-server needs a ServiceAccount token: exactly when one
/// of its policies (or group members) declares resources it may read.
pub fn needs_token(policies: &[PolicyView]) -> bool {
    policies
        .iter()
        .any(|p| !p.context_aware_resources().is_empty())
}

/// `apiVersion` → (group, version).
fn group_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// Resolves every declared resource through discovery (each kind once).
pub async fn grants(ctx: &Context, policies: &[PolicyView]) -> Grants {
    let mut resolved: BTreeMap<&ContextAwareResource, Result<(GrantedResource, Scope), String>> =
        BTreeMap::new();
    for resource in policies.iter().flat_map(|p| p.context_aware_resources()) {
        if resolved.contains_key(resource) {
            continue;
        }
        let (group, version) = group_version(&resource.api_version);
        let gvk = GroupVersionKind::gvk(group, version, &resource.kind);
        let result = match pinned_kind(&ctx.client, &gvk).await {
            Ok((api_resource, capabilities)) => Ok((
                GrantedResource::for_resource(&api_resource.group, &api_resource.plural),
                capabilities.scope,
            )),
            Err(e) => Err(format!(
                "{} {}: not served by the API server ({e})",
                resource.api_version, resource.kind
            )),
        };
        resolved.insert(resource, result);
    }
    let mut grants = Grants::default();
    for policy in policies {
        for resource in policy.context_aware_resources() {
            match (&resolved[resource], &policy.namespace) {
                (Err(reason), _) => grants.refused.push(format!("{}: {reason}", policy.id)),
                (Ok((granted, _)), None) => {
                    grants.cluster.insert(granted.clone());
                }
                (Ok((granted, Scope::Namespaced)), Some(namespace)) => {
                    grants
                        .namespaced
                        .entry(namespace.clone())
                        .or_default()
                        .insert(granted.clone());
                }
                (Ok((_, Scope::Cluster)), Some(_)) => grants.refused.push(format!(
                    "{}: {} {} is cluster-scoped; a namespaced policy may only read its own namespace",
                    policy.id, resource.api_version, resource.kind
                )),
            }
        }
    }
    grants.refused.sort();
    grants.refused.dedup();
    grants
}

/// Writes the ClusterRole, Roles and bindings of `grants` for the
/// PolicyServer `ps_name`, whose pods run as `service_account`, and deletes
/// those it no longer needs.
pub async fn apply(
    ctx: &Context,
    ps_name: &str,
    service_account: &str,
    grants: &Grants,
    owner: &OwnerReference,
) -> Result<(), Error> {
    let name = role_name(ps_name);
    let cluster_roles: Api<ClusterRole> = Api::all(ctx.client.clone());
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
    if grants.cluster.is_empty() {
        if ctx
            .stores
            .cluster_role_bindings
            .get(&ObjectRef::new(&name))
            .is_some()
        {
            delete_ignoring_missing(&cluster_bindings, &name).await?;
        }
        if ctx
            .stores
            .cluster_roles
            .get(&ObjectRef::new(&name))
            .is_some()
        {
            delete_ignoring_missing(&cluster_roles, &name).await?;
            info!(
                policy_server = ps_name,
                "no cluster-wide context-aware policy: ClusterRole deleted"
            );
        }
    } else {
        let role = build::cluster_role(ps_name, &grants.cluster, owner);
        ctx.apply(&cluster_roles, &name, &role).await?;
        let binding = build::cluster_role_binding(ps_name, service_account, &ctx.opts, owner);
        ctx.apply(&cluster_bindings, &name, &binding).await?;
    }
    for (namespace, resources) in &grants.namespaced {
        let roles: Api<Role> = Api::namespaced(ctx.client.clone(), namespace);
        ctx.apply(
            &roles,
            &name,
            &build::role(ps_name, namespace, resources, owner),
        )
        .await?;
        let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), namespace);
        let binding = build::role_binding(ps_name, namespace, service_account, &ctx.opts, owner);
        ctx.apply(&bindings, &name, &binding).await?;
    }
    // Roles of namespaces whose policies are gone (or no longer read anything).
    let stale: BTreeSet<String> = ctx
        .stores
        .roles
        .state()
        .iter()
        .filter(|r| r.labels().get(LABEL_POLICY_SERVER).map(String::as_str) == Some(ps_name))
        .filter_map(|r| r.namespace())
        .filter(|ns| !grants.namespaced.contains_key(ns))
        .collect();
    for namespace in stale {
        delete_ignoring_missing(
            &Api::<RoleBinding>::namespaced(ctx.client.clone(), &namespace),
            &name,
        )
        .await?;
        delete_ignoring_missing(
            &Api::<Role>::namespaced(ctx.client.clone(), &namespace),
            &name,
        )
        .await?;
        info!(
            policy_server = ps_name,
            namespace, "no context-aware policy left in the namespace: Role deleted"
        );
    }
    Ok(())
}
