//! Context-aware Rego policies read the cluster as data, not through calls:
//! OPA policies (the kube-mgmt convention) under `data.kubernetes`, Gatekeeper
//! policies under `data.inventory`. The host hands over the objects of the
//! kinds the policy may read ([`HostCapabilities::context_resources`]); this
//! module shapes them as each convention expects:
//!
//! - OPA: `kubernetes.<plural>.<namespace>.<name>` for namespaced objects,
//!   `kubernetes.<plural>.<name>` for cluster-scoped ones;
//! - Gatekeeper: `inventory.namespace.<namespace>.<apiVersion>.<kind>.<name>`
//!   and `inventory.cluster.<apiVersion>.<kind>.<name>`.
//!
//! The JSON text is built once per set of revisions and reused until one of
//! the lists changes.
//!
//! [`HostCapabilities::context_resources`]: crate::HostCapabilities::context_resources

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

use super::modes::RegoMode;
use crate::capabilities::{CallContext, CapabilityError, ContextResourceList};
use crate::engine::StoreLimits;
use crate::error::EvalError;
use crate::types::EvalContext;

/// How many built inventories are kept.
const CACHE_ENTRIES: usize = 16;

type Key = (RegoMode, Vec<(String, String, String, u64)>);
type Cache = Mutex<Vec<(Key, Arc<str>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

/// What the host offers a context-aware policy: the lists, and the
/// inventory built from them.
pub(crate) struct ContextData {
    pub(crate) lists: Vec<ContextResourceList>,
    /// JSON text, in the shape of the mode.
    pub(crate) inventory: Arc<str>,
}

impl ContextData {
    /// The Namespace named `name`, when Namespaces are offered: Gatekeeper
    /// gives it to policies as `input.review.namespaceObject`.
    pub(crate) fn namespace(&self, name: &str) -> Option<&Value> {
        self.lists
            .iter()
            .filter(|l| l.api_version == "v1" && l.kind == "Namespace")
            .flat_map(|l| l.objects.iter())
            .find(|o| o.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
    }
}

/// The context of a context-aware policy, or `None` when the host offers the
/// policy no resources.
pub(crate) fn context_data(
    ctx: &EvalContext,
    mode: RegoMode,
    limits: &StoreLimits,
) -> Result<Option<ContextData>, EvalError> {
    let call = CallContext {
        policy_id: &ctx.policy_id,
        deadline: limits.deadline,
    };
    let lists = ctx
        .capabilities
        .context_resources(&call)
        .map_err(|e| match e {
            CapabilityError::DeadlineExceeded(_) => EvalError::Timeout(ctx.timeout),
            other => EvalError::Guest(format!("cannot read the cluster inventory: {other}")),
        })?;
    if lists.is_empty() {
        return Ok(None);
    }
    let inventory = cached(mode, &lists);
    Ok(Some(ContextData { lists, inventory }))
}

fn cached(mode: RegoMode, lists: &[ContextResourceList]) -> Arc<str> {
    let key: Key = (
        mode,
        lists
            .iter()
            .map(|l| {
                (
                    l.api_version.clone(),
                    l.kind.clone(),
                    l.plural.clone(),
                    l.revision,
                )
            })
            .collect(),
    );
    if let Ok(entries) = cache().lock()
        && let Some((_, text)) = entries.iter().find(|(k, _)| *k == key)
    {
        return text.clone();
    }
    let text: Arc<str> = build(mode, lists).to_string().into();
    if let Ok(mut entries) = cache().lock() {
        if entries.len() >= CACHE_ENTRIES {
            entries.remove(0);
        }
        entries.push((key, text.clone()));
    }
    text
}

/// The inventory in the shape `mode` expects.
pub(crate) fn build(mode: RegoMode, lists: &[ContextResourceList]) -> Value {
    let mut root = Map::new();
    if mode == RegoMode::Gatekeeper {
        root.insert("cluster".into(), Value::Object(Map::new()));
        root.insert("namespace".into(), Value::Object(Map::new()));
    }
    for list in lists {
        if mode == RegoMode::Opa {
            // A kind with no objects is still there, empty.
            root.entry(list.plural.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        for object in list.objects.iter() {
            let metadata = object.get("metadata");
            let Some(name) = metadata.and_then(|m| m.get("name")).and_then(Value::as_str) else {
                continue;
            };
            let namespace = metadata
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty());
            let path: Vec<&str> = match (mode, namespace) {
                (RegoMode::Opa, Some(ns)) => vec![&list.plural, ns],
                (RegoMode::Opa, None) => vec![&list.plural],
                (RegoMode::Gatekeeper, Some(ns)) => {
                    vec!["namespace", ns, &list.api_version, &list.kind]
                }
                (RegoMode::Gatekeeper, None) => vec!["cluster", &list.api_version, &list.kind],
            };
            let mut node = &mut root;
            for key in path {
                let entry = node
                    .entry(key.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                let Value::Object(next) = entry else {
                    unreachable!("made an object just above")
                };
                node = next;
            }
            node.insert(name.to_string(), object.clone());
        }
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(
        api_version: &str,
        kind: &str,
        plural: &str,
        objects: Vec<Value>,
    ) -> ContextResourceList {
        ContextResourceList {
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
            objects: Arc::new(objects),
            revision: 1,
        }
    }

    fn obj(name: &str, ns: Option<&str>) -> Value {
        match ns {
            Some(ns) => json!({"metadata": {"name": name, "namespace": ns}}),
            None => json!({"metadata": {"name": name}}),
        }
    }

    fn lists() -> Vec<ContextResourceList> {
        vec![
            list(
                "v1",
                "Namespace",
                "namespaces",
                vec![obj("default", None), obj("kube-system", None)],
            ),
            list(
                "apps/v1",
                "Deployment",
                "deployments",
                vec![
                    obj("coredns", Some("kube-system")),
                    obj("web", Some("default")),
                ],
            ),
            list("v1", "Service", "services", vec![]),
        ]
    }

    #[test]
    fn opa_shape_is_kube_mgmt() {
        let v = build(RegoMode::Opa, &lists());
        assert_eq!(v["namespaces"]["default"], obj("default", None));
        assert_eq!(
            v["deployments"]["kube-system"]["coredns"],
            obj("coredns", Some("kube-system"))
        );
        assert_eq!(v["services"], json!({}));
    }

    #[test]
    fn gatekeeper_shape_is_the_inventory() {
        let v = build(RegoMode::Gatekeeper, &lists());
        assert_eq!(
            v["cluster"]["v1"]["Namespace"]["kube-system"],
            obj("kube-system", None)
        );
        assert_eq!(
            v["namespace"]["default"]["apps/v1"]["Deployment"]["web"],
            obj("web", Some("default"))
        );
    }

    #[test]
    fn built_once_per_revision() {
        let mut l = lists();
        let a = cached(RegoMode::Opa, &l);
        let b = cached(RegoMode::Opa, &l);
        assert!(Arc::ptr_eq(&a, &b));
        l[0].revision = 2;
        Arc::make_mut(&mut l[0].objects).push(obj("new", None));
        let c = cached(RegoMode::Opa, &l);
        assert!(c.contains("\"new\""));
    }
}
