//! unique-ingress-host: a host name may be routed by one Ingress only, in
//! the whole cluster.
//!
//! The policy lists every Ingress through the host (a context-aware read,
//! trimmed by [`FIELD_MASKS`] to what it needs) and rejects an Ingress that
//! claims a host another Ingress already has.

use std::collections::BTreeSet;

use serde::Deserialize;

/// The only fields the policy reads: the host lists it trimmed to these.
pub const FIELD_MASKS: &[&str] = &["metadata.name", "metadata.namespace", "spec.rules.host"];

/// The status code of a rejection: the request conflicts with existing state.
pub const REJECTION_CODE: u16 = 409;

/// The settings: none (`{}`); unknown keys are rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

/// The parts of an Ingress the policy reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IngressLite {
    /// Name and namespace.
    #[serde(default)]
    pub metadata: Metadata,
    /// The routing rules.
    #[serde(default)]
    pub spec: Spec,
}

/// Object metadata.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    /// The name.
    #[serde(default)]
    pub name: Option<String>,
    /// The namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `spec` of an Ingress.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Spec {
    /// The rules; each may name a host.
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
}

/// One Ingress rule.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Rule {
    /// The host it routes, if any.
    #[serde(default)]
    pub host: Option<String>,
}

/// A list answer of the host (`{"items": [...]}`).
#[derive(Debug, Default, Deserialize)]
pub struct IngressList {
    /// The Ingresses.
    #[serde(default)]
    pub items: Vec<IngressLite>,
}

impl IngressLite {
    /// The hosts this Ingress routes (rules without a host route everything
    /// and claim no name).
    pub fn hosts(&self) -> BTreeSet<&str> {
        self.spec
            .rules
            .iter()
            .flatten()
            .filter_map(|r| r.host.as_deref())
            .filter(|h| !h.is_empty())
            .collect()
    }

    fn id(&self) -> (&str, &str) {
        (
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default(),
        )
    }
}

/// Why `ingress` (in `namespace`) may not be admitted given the `existing`
/// Ingresses of the cluster; none when its hosts are free. The Ingress
/// itself (on UPDATE) is not a conflict.
pub fn conflicts(
    ingress: &IngressLite,
    namespace: &str,
    existing: &[IngressLite],
) -> Option<String> {
    let own = (
        namespace,
        ingress.metadata.name.as_deref().unwrap_or_default(),
    );
    let mut found = Vec::new();
    for host in ingress.hosts() {
        for other in existing {
            if other.id() != own && other.hosts().contains(host) {
                let (ns, name) = other.id();
                found.push(format!("{host} (already used by Ingress {ns}/{name})"));
            }
        }
    }
    (!found.is_empty()).then(|| {
        format!(
            "Ingress host must be unique in the cluster: {}",
            found.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(ns: &str, name: &str, hosts: &[&str]) -> IngressLite {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"rules": hosts.iter().map(|h| json!({"host": h})).collect::<Vec<_>>()}
        }))
        .unwrap()
    }

    #[test]
    fn unique_hosts() {
        let existing = vec![
            ingress("a", "one", &["a.example.com"]),
            ingress("b", "two", &["b.example.com", ""]),
        ];
        assert_eq!(
            conflicts(&ingress("c", "new", &["c.example.com"]), "c", &existing),
            None
        );
        let message = conflicts(
            &ingress("c", "new", &["b.example.com", "c.example.com"]),
            "c",
            &existing,
        )
        .unwrap();
        assert_eq!(
            message,
            "Ingress host must be unique in the cluster: b.example.com (already used by Ingress b/two)"
        );
        // An update of the same Ingress keeps its host.
        assert_eq!(
            conflicts(&ingress("a", "one", &["a.example.com"]), "a", &existing),
            None
        );
        // Same name in another namespace is another Ingress.
        assert!(conflicts(&ingress("z", "one", &["a.example.com"]), "z", &existing).is_some());
        // No rules, no hosts.
        let bare: IngressLite = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(conflicts(&bare, "a", &existing), None);
    }
}
