//! Label values taken from requests, reduced to bounded sets.
//!
//! A label value that a client chooses creates a new time series per
//! value; an in-cluster client posting AdmissionReviews with random kinds
//! could otherwise grow the server's memory (and Prometheus's) without
//! bound. Operations and resource kinds therefore come from fixed lists,
//! everything else is `other`. Policy ids are bounded by the policies file:
//! a request for an unknown id is answered 404 before any metric is touched.

/// `operation` of an AdmissionReview request, or `other`.
pub fn operation(value: Option<&str>) -> &'static str {
    match value {
        Some("CREATE") => "CREATE",
        Some("UPDATE") => "UPDATE",
        Some("DELETE") => "DELETE",
        Some("CONNECT") => "CONNECT",
        _ => "other",
    }
}

/// Kinds of the Kubernetes API (built-in groups) and of Portcullis, sorted
/// for binary search. Custom resources are counted as `other`.
const KINDS: &[&str] = &[
    "APIService",
    "AdmissionPolicy",
    "AdmissionPolicyGroup",
    "Binding",
    "CSIDriver",
    "CSINode",
    "CSIStorageCapacity",
    "CertificateSigningRequest",
    "ClusterAdmissionPolicy",
    "ClusterAdmissionPolicyGroup",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterTrustBundle",
    "ComponentStatus",
    "ConfigMap",
    "ControllerRevision",
    "CronJob",
    "CustomResourceDefinition",
    "DaemonSet",
    "Deployment",
    "DeviceClass",
    "EndpointSlice",
    "Endpoints",
    "Event",
    "Eviction",
    "FlowSchema",
    "HorizontalPodAutoscaler",
    "IPAddress",
    "Ingress",
    "IngressClass",
    "Job",
    "Lease",
    "LimitRange",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "NodeProxyOptions",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Pod",
    "PodAttachOptions",
    "PodDisruptionBudget",
    "PodExecOptions",
    "PodPortForwardOptions",
    "PodProxyOptions",
    "PodTemplate",
    "PolicyServer",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "ReplicaSet",
    "ReplicationController",
    "ResourceClaim",
    "ResourceClaimTemplate",
    "ResourceQuota",
    "ResourceSlice",
    "Role",
    "RoleBinding",
    "RuntimeClass",
    "Scale",
    "Secret",
    "Service",
    "ServiceAccount",
    "ServiceCIDR",
    "ServiceProxyOptions",
    "StatefulSet",
    "StorageClass",
    "StorageVersionMigration",
    "TokenRequest",
    "TokenReview",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
    "VolumeAttributesClass",
];

/// `kind.kind` of an AdmissionReview request when it is a known kind, else
/// `other`.
pub fn resource_kind(value: Option<&str>) -> &'static str {
    value
        .and_then(|kind| KINDS.binary_search(&kind).ok())
        .map_or("other", |i| KINDS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_sorted_and_unique() {
        assert!(KINDS.windows(2).all(|w| w[0] < w[1]), "keep KINDS sorted");
    }

    #[test]
    fn unknown_values_are_other() {
        assert_eq!(operation(Some("CREATE")), "CREATE");
        assert_eq!(operation(Some("create")), "other");
        assert_eq!(operation(None), "other");
        assert_eq!(resource_kind(Some("Pod")), "Pod");
        assert_eq!(resource_kind(Some("Deployment")), "Deployment");
        assert_eq!(resource_kind(Some("x".repeat(10_000).as_str())), "other");
        assert_eq!(resource_kind(Some("Widget")), "other");
        assert_eq!(resource_kind(None), "other");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Whatever a request says, the label is one of a fixed set.
        #[test]
        fn labels_stay_in_their_sets(value in ".{0,40}") {
            let operation = operation(Some(&value));
            proptest::prop_assert!(
                ["CREATE", "UPDATE", "DELETE", "CONNECT", "other"].contains(&operation)
            );
            let kind = resource_kind(Some(&value));
            proptest::prop_assert!(kind == "other" || KINDS.contains(&kind));
            proptest::prop_assert!(kind == "other" || kind == value);
        }
    }
}
