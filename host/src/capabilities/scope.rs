//! Namespaced policies read only their own namespace.
//!
//! Every policy of a policy-server reads the cluster with the server's one
//! ServiceAccount, whose RBAC is the union of what the ClusterAdmissionPolicies
//! declare. An AdmissionPolicy is written by a namespace tenant, so the host,
//! not RBAC, keeps it inside its namespace: its `kubernetes/*` reads must name
//! that namespace (or its own Namespace object). `can_i` asks about
//! permissions, not objects, and is left to `hostCapabilities` (the
//! PolicyServer's `namespacedPoliciesCapabilities`, as upstream).

use portcullis_adapters::CapabilityError;

use super::CallbackRequestType;

/// Where a policy may read: the whole cluster (ClusterAdmissionPolicies and
/// hand-written policies.yml entries) or one namespace (AdmissionPolicies).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PolicyScope {
    /// No namespace restriction beyond `contextAwareResources`.
    #[default]
    ClusterWide,
    /// Only objects of this namespace. An empty or invalid name (a
    /// namespaced id that names no namespace) allows no read at all.
    Namespace(String),
}

impl PolicyScope {
    /// The scope of the policy (or policy group) `policy_id`.
    ///
    /// The contract is the controller's id format (`portcullis_api::names`): `namespaced-<ns>.<name>`
    /// and `group-namespaced-<ns>.<name>` for AdmissionPolicies and their
    /// groups (a namespace name is a DNS label, so `<ns>` ends at the first
    /// `.`); any other id is cluster-wide. A `namespaced-` id without a `.`
    /// fails closed.
    pub fn of_policy(policy_id: &str) -> Self {
        match portcullis_api::names::parse_policy_id(policy_id) {
            Some((_, Some(namespace), _)) => Self::Namespace(namespace.to_string()),
            _ if portcullis_api::names::is_namespaced_policy_id(policy_id) => {
                Self::Namespace(String::new())
            }
            _ => Self::ClusterWide,
        }
    }

    /// Refuses a Kubernetes read outside the scope.
    pub fn check(
        &self,
        policy_id: &str,
        request: &CallbackRequestType,
    ) -> Result<(), CapabilityError> {
        let Self::Namespace(own) = self else {
            return Ok(());
        };
        use CallbackRequestType as R;
        // (what it reads, where, whether that is inside the scope)
        let (api_version, kind, target, inside) = match request {
            R::KubernetesListResourceNamespace {
                api_version,
                kind,
                namespace,
                ..
            } => (
                api_version,
                kind,
                format!("namespace {namespace:?}"),
                namespace == own,
            ),
            R::KubernetesListResourceAll {
                api_version, kind, ..
            } => (api_version, kind, "all namespaces".to_string(), false),
            R::KubernetesGetResource {
                api_version,
                kind,
                namespace: Some(namespace),
                ..
            } => (
                api_version,
                kind,
                format!("namespace {namespace:?}"),
                namespace == own,
            ),
            R::KubernetesGetResource {
                api_version,
                kind,
                name,
                namespace: None,
                ..
            } => (
                api_version,
                kind,
                format!("the cluster-scoped object {name:?}"),
                // Its own Namespace object (labels, annotations) is its own.
                api_version == "v1" && kind == "Namespace" && name == own,
            ),
            _ => return Ok(()),
        };
        let allowed = inside && is_dns_label(own);
        if allowed {
            return Ok(());
        }
        tracing::warn!(policy_id, namespace = %own, %target, "namespaced policy read outside its namespace");
        Err(CapabilityError::NotGranted(if is_dns_label(own) {
            format!(
                "policy {policy_id} is namespaced to {own:?} and may only read Kubernetes {api_version}/{kind} objects of that namespace, not of {target}"
            )
        } else {
            format!(
                "policy {policy_id} has a namespaced id that names no valid namespace (expected namespaced-<namespace>.<name>), so it may not read Kubernetes objects"
            )
        }))
    }
}

/// A Kubernetes namespace name: an RFC 1123 label.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_come_from_the_controllers_ids() {
        let ns = |n: &str| PolicyScope::Namespace(n.to_string());
        assert_eq!(
            PolicyScope::of_policy("namespaced-team-a.no-dup"),
            ns("team-a")
        );
        assert_eq!(
            PolicyScope::of_policy("namespaced-team-a.a.b"),
            ns("team-a")
        );
        assert_eq!(PolicyScope::of_policy("group-namespaced-b.g"), ns("b"));
        assert_eq!(PolicyScope::of_policy("namespaced-nodot"), ns(""));
        for id in [
            "clusterwide-x",
            "group-clusterwide-x",
            "my-policy",
            "x.namespaced-a.b",
        ] {
            assert_eq!(PolicyScope::of_policy(id), PolicyScope::ClusterWide, "{id}");
        }
    }

    fn list(namespace: &str) -> CallbackRequestType {
        CallbackRequestType::KubernetesListResourceNamespace {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: namespace.into(),
            label_selector: None,
            field_selector: None,
            field_masks: None,
        }
    }

    fn get(kind: &str, name: &str, namespace: Option<&str>) -> CallbackRequestType {
        CallbackRequestType::KubernetesGetResource {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.map(Into::into),
            disable_cache: false,
            field_masks: None,
        }
    }

    #[test]
    fn namespaced_policies_read_only_their_namespace() {
        let scope = PolicyScope::of_policy("namespaced-a.p");
        assert!(scope.check("p", &list("a")).is_ok());
        assert!(scope.check("p", &get("ConfigMap", "c", Some("a"))).is_ok());
        assert!(scope.check("p", &get("Namespace", "a", None)).is_ok());
        let all = CallbackRequestType::KubernetesListResourceAll {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            label_selector: None,
            field_selector: None,
            field_masks: None,
        };
        for (request, target) in [
            (list("b"), "namespace \"b\""),
            (get("ConfigMap", "c", Some("b")), "namespace \"b\""),
            (get("Namespace", "b", None), "cluster-scoped object \"b\""),
            (all.clone(), "all namespaces"),
        ] {
            let err = scope.check("p", &request).unwrap_err().to_string();
            assert!(
                err.contains("namespaced to \"a\"") && err.contains(target),
                "{err}"
            );
        }
        assert!(PolicyScope::ClusterWide.check("p", &all).is_ok());

        // A namespaced id without a namespace reads nothing, not everything.
        let broken = PolicyScope::of_policy("namespaced-x");
        for request in [list(""), get("Namespace", "", None), all] {
            let err = broken.check("p", &request).unwrap_err().to_string();
            assert!(err.contains("names no valid namespace"), "{err}");
        }
    }
}
