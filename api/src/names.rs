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

/// The policy id of a policy of `kind` named `name` (in `namespace` for the
/// namespaced kinds): the name of its webhook configuration, its key in
/// `policies.yml`, its URL path segment (`/validate/<id>`, `/audit/<id>`)
/// and its `policy` label in metrics and logs.
pub fn policy_id(kind: PolicyKind, namespace: Option<&str>, name: &str) -> String {
    let namespace = namespace.unwrap_or_default();
    match kind {
        PolicyKind::ClusterAdmissionPolicy => format!("clusterwide-{name}"),
        PolicyKind::AdmissionPolicy => format!("namespaced-{namespace}-{name}"),
    }
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
            "namespaced-ns-x"
        );
    }
}
