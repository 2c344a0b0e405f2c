//! The `policies.portcullis.dev/v1` custom resources: PolicyServer and the
//! policy kinds, with the names derived from them (policy ids, the objects
//! serving a PolicyServer).
//!
//! Field names and semantics follow Kubewarden's `policies.kubewarden.io/v1`,
//! so a Kubewarden manifest ports by changing `apiVersion` only. Checks that
//! Kubewarden runs in its own admission webhook are CEL
//! `x-kubernetes-validations` here, enforced by the API server itself.
//!
//! Every policy kind flattens the same [`PolicySpecCommon`] into its spec and
//! implements [`PolicyResource`], so code that handles policies (the
//! controller's reconciler, the audit scanner) is written once for all kinds.
//! This crate has no reconcilers and no client logic beyond `kube::Api`.

pub mod groups;
pub mod names;
pub mod policies;
pub mod policy;
pub mod policy_server;
pub mod spec;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, ValidationRule,
};
use kube::CustomResourceExt;

pub use groups::{
    AdmissionPolicyGroup, AdmissionPolicyGroupSpec, ClusterAdmissionPolicyGroup,
    ClusterAdmissionPolicyGroupSpec, PolicyGroupMember, PolicyGroupMembers,
};
pub use names::{parse_policy_id, policy_id, policy_server_object_name};
pub use policies::{
    AdmissionPolicy, AdmissionPolicySpec, ClusterAdmissionPolicy, ClusterAdmissionPolicySpec,
};
pub use policy::{PolicyBody, PolicyKind, PolicyResource, PolicyView};
pub use policy_server::{PolicyServer, PolicyServerSpec, PolicyServerStatus};
pub use spec::{
    ClusterScope, ContextAwareResource, DEFAULT_POLICY_SERVER, NamespacedRuleWithOperations,
    PolicyMode, PolicyModule, PolicySpecCommon, PolicyStatus, PolicyStatusEnum, RuleWithOperations,
};

/// API group of every Portcullis resource.
pub const GROUP: &str = "policies.portcullis.dev";

/// Keeps the derived-name arithmetic in one place: the CEL limit of the
/// PolicyServer name is `MAX_POLICY_SERVER_NAME_LEN`.
const _: () = assert!(names::MAX_POLICY_SERVER_NAME_LEN == 49);

fn column(
    name: &str,
    type_: &str,
    json_path: &str,
    priority: i32,
) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.to_string(),
        type_: type_.to_string(),
        json_path: json_path.to_string(),
        priority: (priority != 0).then_some(priority),
        ..Default::default()
    }
}

/// The printer columns of every policy kind (Kubewarden's): `Mutating` only
/// for kinds that can mutate.
fn policy_columns(mutating: bool) -> Vec<CustomResourceColumnDefinition> {
    let mut columns = vec![column("Policy Server", "string", ".spec.policyServer", 0)];
    if mutating {
        columns.push(column("Mutating", "boolean", ".spec.mutating", 0));
    }
    columns.extend([
        column("BackgroundAudit", "boolean", ".spec.backgroundAudit", 0),
        column("Mode", "string", ".spec.mode", 0),
        column("Observed mode", "string", ".status.mode", 0),
        column("Status", "string", ".status.policyStatus", 0),
        column("Age", "date", ".metadata.creationTimestamp", 0),
        column(
            "Severity",
            "string",
            ".metadata.annotations.io\\.kubewarden\\.policy\\.severity",
            1,
        ),
        column(
            "Category",
            "string",
            ".metadata.annotations.io\\.kubewarden\\.policy\\.category",
            1,
        ),
    ]);
    columns
}

/// The CEL rules of every policy kind's `spec`: (rule, message).
const POLICY_RULES: [(&str, &str); 1] = [(
    "!has(self.timeoutEvalSeconds) || self.timeoutEvalSeconds <= self.timeoutSeconds",
    "timeoutEvalSeconds must not be greater than timeoutSeconds",
)];

fn rules(rules: &[(&str, &str)]) -> impl Iterator<Item = ValidationRule> {
    rules.iter().map(|(rule, message)| ValidationRule {
        rule: rule.to_string(),
        message: Some(message.to_string()),
        ..Default::default()
    })
}

/// A policy kind's CRD with what every kind shares, defined once here: its
/// printer columns, the CEL rules of every policy kind (and of every group),
/// and the bound on names that keeps its policy id within a webhook name.
fn policy_crd(mut crd: CustomResourceDefinition, kind: PolicyKind) -> CustomResourceDefinition {
    let id = policy_id(kind, Some("<namespace>"), "<name>");
    let max = names::max_name_len(kind);
    let name_rule = format!("size(self.metadata.name) <= {max}");
    let name_message = format!(
        "name must be at most {max} characters so that the policy id {id} fits in a webhook name"
    );
    let group_rules: &[(&str, &str)] = if kind.is_group() {
        &groups::GROUP_RULES
    } else {
        &[]
    };
    for version in &mut crd.spec.versions {
        version.additional_printer_columns = Some(policy_columns(!kind.is_group()));
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        root.x_kubernetes_validations
            .get_or_insert_with(Vec::new)
            .extend(rules(&[(name_rule.as_str(), name_message.as_str())]));
        if let Some(spec) = root.properties.as_mut().and_then(|p| p.get_mut("spec")) {
            spec.x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .extend(rules(&POLICY_RULES).chain(rules(group_rules)));
        }
    }
    crd
}

/// The CRDs, in a stable order (PolicyServer, then [`PolicyKind::ALL`]).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        PolicyServer::crd(),
        policy_crd(
            ClusterAdmissionPolicy::crd(),
            PolicyKind::ClusterAdmissionPolicy,
        ),
        policy_crd(AdmissionPolicy::crd(), PolicyKind::AdmissionPolicy),
        policy_crd(
            ClusterAdmissionPolicyGroup::crd(),
            PolicyKind::ClusterAdmissionPolicyGroup,
        ),
        policy_crd(
            AdmissionPolicyGroup::crd(),
            PolicyKind::AdmissionPolicyGroup,
        ),
    ]
}

/// The checked-in file name of a CRD: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// The YAML of a CRD as checked in under `controller/crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(crd)?;
    Ok(format!(
        "# Generated by `portcullis-controller crds --out-dir controller/crds`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in YAML must be what the Rust types generate.
    #[test]
    fn checked_in_crds_are_up_to_date() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/crds");
        for crd in crds() {
            let path = dir.join(crd_file_name(&crd));
            let expected = crd_yaml(&crd).unwrap();
            let actual = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                actual == expected,
                "{} is stale; regenerate with `cargo run -p portcullis-controller -- crds --out-dir controller/crds`",
                path.display()
            );
        }
    }

    #[test]
    fn kubewarden_spec_deserialises() {
        let yaml = r#"
policyServer: default
module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2
rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
    operations: ["CREATE", "UPDATE"]
mutating: false
"#;
        let spec: ClusterAdmissionPolicySpec = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(spec.common.mode, PolicyMode::Protect);
        assert_eq!(spec.common.timeout_seconds, 10);
        assert!(spec.common.background_audit);
        assert_eq!(spec.rules[0].resources, vec!["pods".to_string()]);
        // And back: the flattened structs serialise into one flat object.
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["policyServer"], "default");
        assert_eq!(back["mutating"], false);
        assert_eq!(back["allowInsideAdmissionControllerNamespace"], false);
        assert!(back.get("common").is_none(), "{back}");
    }

    /// The CEL name limit of each kind is the one that keeps its policy id
    /// within a webhook name.
    #[test]
    fn names_are_limited_so_that_ids_fit() {
        for (crd, kind) in crds().into_iter().skip(1).zip(PolicyKind::ALL) {
            let json = serde_json::to_string(&crd).unwrap();
            let rule = format!("size(self.metadata.name) <= {}", names::max_name_len(kind));
            assert!(json.contains(&rule), "{}: {rule}", crd.spec.names.kind);
        }
    }

    #[test]
    fn schema_has_cel_rules() {
        let json = serde_json::to_string(&crds()[1]).unwrap();
        assert!(json.contains("self == oldSelf"), "{json}");
        assert!(json.contains("oldSelf == 'protect'"));
        assert!(json.contains("timeoutEvalSeconds <= self.timeoutSeconds"));
        let ps = serde_json::to_string(&PolicyServer::crd()).unwrap();
        assert!(ps.contains("size(self.metadata.name) <= 49"));
    }

    /// The shared spec is flattened: one flat `spec` object per kind, with
    /// the common fields' own CEL rules and the kind's rules.
    #[test]
    fn every_policy_kind_has_the_common_fields() {
        for crd in crds().into_iter().skip(1) {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
            let group = crd.spec.names.kind.ends_with("Group");
            let body: &[&str] = if group {
                &["expression", "policies"]
            } else {
                &["module", "settings", "contextAwareResources", "mutating"]
            };
            for field in [
                "policyServer",
                "mode",
                "failurePolicy",
                "backgroundAudit",
                "matchPolicy",
                "matchConditions",
                "objectSelector",
                "sideEffects",
                "timeoutSeconds",
                "timeoutEvalSeconds",
                "message",
                "rules",
            ]
            .iter()
            .chain(body)
            {
                assert!(
                    spec["properties"].get(field).is_some(),
                    "{} lacks spec.{field}: {spec}",
                    crd.spec.names.kind
                );
            }
            assert!(spec.get("allOf").is_none(), "not structural: {spec}");
            let text = spec.to_string();
            assert!(text.contains("policyServer is immutable"), "{text}");
            assert!(
                text.contains("timeoutEvalSeconds must not be greater"),
                "{text}"
            );
        }
    }
}
