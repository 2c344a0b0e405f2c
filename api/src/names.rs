//! The names other components derive from the custom resources: policy ids
//! and the objects that serve a PolicyServer.

use crate::policy::PolicyKind;

/// Prefix of every object derived from a PolicyServer.
pub const POLICY_SERVER_PREFIX: &str = "policy-server-";

/// Longest PolicyServer name whose derived names fit in 63 characters.
pub const MAX_POLICY_SERVER_NAME_LEN: usize = 63 - POLICY_SERVER_PREFIX.len();

/// Secret in the controller's namespace holding the CA (`ca.crt`, `ca.key`)
/// that signs every policy-server's serving certificate.
pub const CA_SECRET: &str = "portcullis-ca";

/// Port of a policy-server's Service (HTTPS; it targets the webhook port).
pub const SERVICE_PORT: u16 = 443;

/// `policy-server-<name>`: the name of every object derived from a
/// PolicyServer (Deployment, Service, ConfigMap, serving-certificate Secret,
/// PodDisruptionBudget), in the controller's namespace.
pub fn policy_server_object_name(policy_server: &str) -> String {
    format!("{POLICY_SERVER_PREFIX}{policy_server}")
}

/// DNS names the policy-server's serving certificate covers; the first is
/// the one clients inside the cluster use (`https://<it>/validate/<id>`).
pub fn service_dns_names(policy_server: &str, namespace: &str) -> Vec<String> {
    let svc = policy_server_object_name(policy_server);
    vec![
        format!("{svc}.{namespace}.svc"),
        format!("{svc}.{namespace}.svc.cluster.local"),
        format!("{svc}.{namespace}"),
        svc,
    ]
}

/// Suffix of the name of the webhook inside a policy's webhook
/// configuration: `<id>.policies.portcullis.dev`.
pub const WEBHOOK_NAME_SUFFIX: &str = ".policies.portcullis.dev";

/// Longest policy id: `<id>.policies.portcullis.dev` must be a DNS
/// subdomain (at most 253 characters), and so is the id itself (the webhook
/// configuration's name).
pub const MAX_POLICY_ID_LEN: usize = 253 - WEBHOOK_NAME_SUFFIX.len();

/// Longest namespace name (a DNS label).
const MAX_NAMESPACE_LEN: usize = 63;

const CLUSTERWIDE: &str = "clusterwide-";
const NAMESPACED: &str = "namespaced-";
const CLUSTERWIDE_GROUP: &str = "group-clusterwide-";
const NAMESPACED_GROUP: &str = "group-namespaced-";

/// The id prefix of a kind.
fn prefix(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::ClusterAdmissionPolicy => CLUSTERWIDE,
        PolicyKind::AdmissionPolicy => NAMESPACED,
        PolicyKind::ClusterAdmissionPolicyGroup => CLUSTERWIDE_GROUP,
        PolicyKind::AdmissionPolicyGroup => NAMESPACED_GROUP,
    }
}

/// Longest name of a policy of `kind` whose id fits [`MAX_POLICY_ID_LEN`]
/// whatever its namespace (the CRDs' CEL rules enforce it).
pub const fn max_name_len(kind: PolicyKind) -> usize {
    let prefix = match kind {
        PolicyKind::ClusterAdmissionPolicy => CLUSTERWIDE.len(),
        PolicyKind::AdmissionPolicy => NAMESPACED.len(),
        PolicyKind::ClusterAdmissionPolicyGroup => CLUSTERWIDE_GROUP.len(),
        PolicyKind::AdmissionPolicyGroup => NAMESPACED_GROUP.len(),
    };
    let namespace = match kind {
        PolicyKind::AdmissionPolicy | PolicyKind::AdmissionPolicyGroup => MAX_NAMESPACE_LEN + 1,
        _ => 0,
    };
    MAX_POLICY_ID_LEN - prefix - namespace
}

/// The policy id of a policy of `kind` named `name` (in `namespace` for the
/// namespaced kinds): the name of its webhook configuration, its key in
/// `policies.yml`, its URL path segment (`/validate/<id>`, `/audit/<id>`)
/// and its `policy` label in metrics and logs.
///
/// | Kind | Id |
/// |---|---|
/// | ClusterAdmissionPolicy | `clusterwide-<name>` |
/// | AdmissionPolicy | `namespaced-<namespace>.<name>` |
/// | ClusterAdmissionPolicyGroup | `group-clusterwide-<name>` |
/// | AdmissionPolicyGroup | `group-namespaced-<namespace>.<name>` |
///
/// No two policies share an id: the four prefixes are distinct and none is
/// a prefix of another followed by a character a name may start with (a
/// letter or digit), so the prefix gives the kind; a namespace is a DNS
/// label and has no `.`, so the first `.` after the prefix ends the
/// namespace. (Kubewarden's `namespaced-<ns>-<name>` gives `a`/`b-c` and
/// `a-b`/`c` the same id.) Every character is one a DNS subdomain, a label
/// value and a URL path segment allow; [`max_name_len`] bounds the length.
/// [`parse_policy_id`] inverts it.
pub fn policy_id(kind: PolicyKind, namespace: Option<&str>, name: &str) -> String {
    let prefix = prefix(kind);
    if kind.is_namespaced() {
        format!("{prefix}{}.{name}", namespace.unwrap_or_default())
    } else {
        format!("{prefix}{name}")
    }
}

/// Whether `id` has the prefix of a namespaced kind's ids, parseable or not:
/// whoever scopes by namespace fails closed on a malformed one.
pub fn is_namespaced_policy_id(id: &str) -> bool {
    id.starts_with(NAMESPACED) || id.starts_with(NAMESPACED_GROUP)
}

/// The kind, namespace and name a policy id was made from.
pub fn parse_policy_id(id: &str) -> Option<(PolicyKind, Option<&str>, &str)> {
    // Longest prefixes first: none of them is a prefix of a shorter one, but
    // this keeps the match obviously unambiguous.
    let kinds = [
        PolicyKind::ClusterAdmissionPolicyGroup,
        PolicyKind::AdmissionPolicyGroup,
        PolicyKind::ClusterAdmissionPolicy,
        PolicyKind::AdmissionPolicy,
    ];
    kinds.into_iter().find_map(|kind| {
        let rest = id.strip_prefix(prefix(kind))?;
        if kind.is_namespaced() {
            let (namespace, name) = rest.split_once('.')?;
            (!namespace.is_empty() && !name.is_empty()).then_some((kind, Some(namespace), name))
        } else {
            (!rest.is_empty()).then_some((kind, None, rest))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_name_fits() {
        let name = "a".repeat(MAX_POLICY_SERVER_NAME_LEN);
        assert_eq!(policy_server_object_name(&name).len(), 63);
        assert_eq!(
            policy_id(PolicyKind::ClusterAdmissionPolicy, None, "x"),
            "clusterwide-x"
        );
        assert_eq!(
            policy_id(PolicyKind::AdmissionPolicy, Some("ns"), "x"),
            "namespaced-ns.x"
        );
        assert_eq!(MAX_POLICY_ID_LEN, 229);
        for kind in PolicyKind::ALL {
            let namespace = kind.is_namespaced().then(|| "n".repeat(63));
            let id = policy_id(kind, namespace.as_deref(), &"a".repeat(max_name_len(kind)));
            assert_eq!(id.len(), MAX_POLICY_ID_LEN, "{kind:?}");
            assert!(format!("{id}{WEBHOOK_NAME_SUFFIX}").len() <= 253);
        }
    }

    /// The collision of Kubewarden's encoding cannot happen.
    #[test]
    fn namespaced_ids_do_not_collide() {
        let a = policy_id(PolicyKind::AdmissionPolicy, Some("a"), "b-c");
        let b = policy_id(PolicyKind::AdmissionPolicy, Some("a-b"), "c");
        assert_ne!(a, b);
        assert_eq!(a, "namespaced-a.b-c");
        assert_eq!(b, "namespaced-a-b.c");
        // Names may have dots; namespaces may not, so the first dot ends
        // the namespace.
        let dotted = policy_id(PolicyKind::AdmissionPolicy, Some("a"), "b.c");
        assert_eq!(
            parse_policy_id(&dotted),
            Some((PolicyKind::AdmissionPolicy, Some("a"), "b.c"))
        );
        // A policy and a group, cluster-wide and namespaced.
        assert_ne!(
            policy_id(
                PolicyKind::ClusterAdmissionPolicy,
                None,
                "group-clusterwide-x"
            ),
            policy_id(PolicyKind::ClusterAdmissionPolicyGroup, None, "x")
        );
        assert_ne!(
            policy_id(PolicyKind::AdmissionPolicy, Some("group"), "x.y"),
            policy_id(PolicyKind::AdmissionPolicyGroup, Some("x"), "y")
        );
    }

    /// Every id parses back to what it was made from, so two different
    /// (kind, namespace, name) triples can never share one.
    #[test]
    fn ids_parse_back() {
        let namespaces = ["a", "a-b", "group", "clusterwide", "x-1"];
        let names = ["c", "b-c", "b.c", "group-x", "clusterwide-y", "1.2.3"];
        let mut seen = std::collections::BTreeMap::new();
        for kind in PolicyKind::ALL {
            for namespace in namespaces {
                for name in names {
                    let namespace = kind.is_namespaced().then_some(namespace);
                    let id = policy_id(kind, namespace, name);
                    assert_eq!(parse_policy_id(&id), Some((kind, namespace, name)), "{id}");
                    let previous = seen.insert(id.clone(), (kind, namespace, name));
                    assert!(
                        previous.is_none() || previous == Some((kind, namespace, name)),
                        "{id} is both {previous:?} and {:?}",
                        (kind, namespace, name)
                    );
                }
            }
        }
        assert_eq!(parse_policy_id("something-else"), None);
        assert_eq!(parse_policy_id("namespaced-nodot"), None);
    }
}
