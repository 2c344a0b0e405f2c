//! The metadata `annotate` writes: Kubewarden's `Metadata`, serialised as
//! `kwctl annotate` serialises it (policy-evaluator's `policy_metadata.rs`:
//! the same fields, in the same order, with the same omissions), so that the
//! section is byte-for-byte what kwctl would write for the same metadata.yml.
//!
//! The host reads metadata leniently (`portcullis_adapters::PolicyMetadata`);
//! this type is the strict writer side, validated as kwctl validates.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// `metadata.yml`, and the JSON of the custom section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// `v1` for waPC policies, `Unknown` for the other Kubewarden modes;
    /// omitted for components, which have no waPC protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub mutating: bool,
    #[serde(default = "default_true")]
    pub background_audit: bool,
    #[serde(default)]
    pub context_aware_resources: BTreeSet<ContextAwareResource>,
    /// `kubewarden-wapc` (default), `opa`, `gatekeeper` or `wasi`; omitted for
    /// components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_mode: Option<String>,
    #[serde(default = "default_policy_type")]
    pub policy_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_capabilities: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_kubewarden_version: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_policy_type() -> String {
    "kubernetes".into()
}

/// An admission rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub api_versions: Vec<String>,
    pub resources: Vec<String>,
    pub operations: Vec<String>,
}

/// A kind a context-aware policy reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextAwareResource {
    pub api_version: String,
    pub kind: String,
}

pub const EXECUTION_MODES: [&str; 4] = ["kubewarden-wapc", "opa", "gatekeeper", "wasi"];
const OPERATIONS: [&str; 5] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "*"];

impl Metadata {
    /// kwctl's checks: rules as the API server checks webhook rules, known
    /// operations, modes and policy types.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            for (field, values) in [
                ("apiGroups", &rule.api_groups),
                ("apiVersions", &rule.api_versions),
                ("resources", &rule.resources),
                ("operations", &rule.operations),
            ] {
                if values.is_empty() {
                    bail!("{}: must not be empty", at(field));
                }
                // Resources have their own wildcard rules, below.
                if field != "resources" && values.iter().any(|v| v == "*") && values.len() > 1 {
                    bail!("{}: no other value may be given with '*'", at(field));
                }
            }
            if let Some(op) = rule
                .operations
                .iter()
                .find(|o| !OPERATIONS.contains(&o.as_str()))
            {
                bail!(
                    "{}: {op:?} is not one of {}",
                    at("operations"),
                    OPERATIONS.join(", ")
                );
            }
            validate_resources(&rule.resources)
                .map_err(|e| anyhow::anyhow!("{}: {e}", at("resources")))?;
        }
        if let Some(mode) = &self.execution_mode
            && !EXECUTION_MODES.contains(&mode.as_str())
        {
            bail!(
                "executionMode {mode:?} is not one of {}",
                EXECUTION_MODES.join(", ")
            );
        }
        if !matches!(self.policy_type.as_str(), "kubernetes" | "raw") {
            bail!("policyType {:?} is not kubernetes or raw", self.policy_type);
        }
        if let Some(v) = &self.minimum_kubewarden_version {
            let parts: Vec<&str> = v.split('.').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.parse::<u64>().is_err()) {
                bail!("minimumKubewardenVersion {v:?} is not a version such as 1.17.0");
            }
        }
        Ok(())
    }
}

/// The API server's checks of webhook rule resources
/// (`admissionregistration/validation.validateResources`).
fn validate_resources(resources: &[String]) -> Result<(), String> {
    let mut with_wildcard_sub = BTreeSet::new();
    let mut sub_with_wildcard_res = BTreeSet::new();
    let mut double_wildcard = false;
    let mut single_wildcard = false;
    let mut without_sub = false;
    for resource in resources {
        if resource.is_empty() {
            return Err("an empty resource is not allowed".into());
        }
        match resource.as_str() {
            "*/*" => double_wildcard = true,
            "*" => single_wildcard = true,
            _ => {}
        }
        let Some((res, sub)) = resource.split_once('/') else {
            without_sub |= resource != "*";
            continue;
        };
        if with_wildcard_sub.contains(res) {
            return Err(format!(
                "if '{res}/*' is present, must not specify {resource}"
            ));
        }
        if sub_with_wildcard_res.contains(sub) {
            return Err(format!(
                "if '*/{sub}' is present, must not specify {resource}"
            ));
        }
        if sub == "*" {
            with_wildcard_sub.insert(res.to_string());
        }
        if res == "*" {
            sub_with_wildcard_res.insert(sub.to_string());
        }
    }
    if resources.len() > 1 && double_wildcard {
        return Err("if '*/*' is present, must not specify other resources".into());
    }
    if single_wildcard && without_sub {
        return Err(
            "if '*' is present, must not specify other resources without subresources".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const YML: &str = r#"
rules:
- apiGroups: [""]
  apiVersions: ["v1"]
  resources: ["pods"]
  operations: ["CREATE", "UPDATE"]
mutating: false
contextAwareResources:
- {apiVersion: v1, kind: Namespace}
- {apiVersion: apps/v1, kind: Deployment}
annotations:
  io.kubewarden.policy.title: psp
  io.kubewarden.policy.author: Jane
"#;

    /// The JSON kwctl writes for this metadata.yml on a waPC module: its
    /// `Metadata` fields in declaration order, annotations sorted, the
    /// context-aware resources as a sorted set.
    #[test]
    fn serialises_as_kwctl_does() {
        let mut m: Metadata = serde_yaml::from_str(YML).unwrap();
        m.validate().unwrap();
        m.protocol_version = Some("v1".into());
        m.execution_mode = Some("kubewarden-wapc".into());
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            concat!(
                r#"{"protocolVersion":"v1","rules":[{"apiGroups":[""],"apiVersions":["v1"],"#,
                r#""resources":["pods"],"operations":["CREATE","UPDATE"]}],"#,
                r#""annotations":{"io.kubewarden.policy.author":"Jane","io.kubewarden.policy.title":"psp"},"#,
                r#""mutating":false,"backgroundAudit":true,"#,
                r#""contextAwareResources":[{"apiVersion":"apps/v1","kind":"Deployment"},{"apiVersion":"v1","kind":"Namespace"}],"#,
                r#""executionMode":"kubewarden-wapc","policyType":"kubernetes"}"#
            )
        );
    }

    #[test]
    fn rejects_what_kwctl_rejects() {
        let bad = |yml: &str| {
            let m: Metadata = serde_yaml::from_str(yml).unwrap();
            m.validate().unwrap_err().to_string()
        };
        let rule = |r: &str| format!("rules: [{r}]");
        assert!(bad(&rule(r#"{apiGroups: ["", "*"], apiVersions: [v1], resources: [pods], operations: [CREATE]}"#)).contains("'*'"));
        assert!(
            bad(&rule(
                r#"{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [PATCH]}"#
            ))
            .contains("PATCH")
        );
        assert!(
            bad(&rule(
                r#"{apiGroups: [""], apiVersions: [], resources: [pods], operations: [CREATE]}"#
            ))
            .contains("apiVersions")
        );
        assert!(bad(&rule(r#"{apiGroups: [""], apiVersions: [v1], resources: ["*", pods], operations: [CREATE]}"#)).contains("without subresources"));
        assert!(bad("executionMode: docker").contains("docker"));
        assert!(bad("minimumKubewardenVersion: '1.x'").contains("1.x"));
    }
}
