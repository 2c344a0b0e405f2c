//! Names, labels and annotations shared by every object the controller
//! writes. The names other components derive too (policy ids, the objects
//! serving a PolicyServer) are in `portcullis_api::names`.

/// Field manager of every server-side apply and status patch.
pub const FIELD_MANAGER: &str = "portcullis-controller";

/// Finalizer on PolicyServers and policies.
pub const FINALIZER: &str = "policies.portcullis.dev/finalizer";

pub use portcullis_api::names::{
    CA_SECRET, MAX_POLICY_SERVER_NAME_LEN, POLICY_SERVER_PREFIX, policy_server_object_name,
    service_dns_names,
};

/// Key of the policies file in the policy-server ConfigMap.
pub const POLICIES_KEY: &str = "policies.yml";
/// Key of the sources file in the policy-server ConfigMap.
pub const SOURCES_KEY: &str = "sources.yml";

/// `app.kubernetes.io/part-of` value.
pub const PART_OF: &str = "portcullis";
/// `app.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "portcullis-controller";
/// Label naming the PolicyServer an object belongs to.
pub const LABEL_POLICY_SERVER: &str = "policies.portcullis.dev/policy-server";
/// Annotation on webhook configurations: name of the policy.
pub const ANNOTATION_POLICY_NAME: &str = "policies.portcullis.dev/policy-name";
/// Annotation on webhook configurations: namespace of the policy ("" for cluster-wide).
pub const ANNOTATION_POLICY_NAMESPACE: &str = "policies.portcullis.dev/policy-namespace";
/// Annotation on the ConfigMap: `sha256:<hex>` of the policies file.
pub const ANNOTATION_CONFIG_DIGEST: &str = "policies.portcullis.dev/config-digest";
/// Annotation on the serving-certificate Secret: fingerprint of the inputs it
/// was issued for (CA and DNS names); a mismatch re-issues it.
pub const ANNOTATION_CERT_INPUTS: &str = "policies.portcullis.dev/cert-inputs";
/// Annotation on the serving-certificate Secret: expiry in seconds since the Unix epoch.
pub const ANNOTATION_CERT_NOT_AFTER: &str = "policies.portcullis.dev/cert-not-after";

/// The common labels of the objects derived from a PolicyServer.
pub fn policy_server_labels(policy_server: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "policy-server".to_string()),
        (
            "app.kubernetes.io/instance",
            policy_server_object_name(policy_server),
        ),
        ("app.kubernetes.io/component", "policy-server".to_string()),
        ("app.kubernetes.io/part-of", PART_OF.to_string()),
        ("app.kubernetes.io/managed-by", MANAGED_BY.to_string()),
        (LABEL_POLICY_SERVER, policy_server.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The pod selector of a PolicyServer's Deployment, Service and PDB.
pub fn policy_server_selector(policy_server: &str) -> std::collections::BTreeMap<String, String> {
    [
        (
            "app.kubernetes.io/instance".to_string(),
            policy_server_object_name(policy_server),
        ),
        (LABEL_POLICY_SERVER.to_string(), policy_server.to_string()),
    ]
    .into_iter()
    .collect()
}
