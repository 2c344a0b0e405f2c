//! Policy metadata embedded in the module as a custom section.
//!
//! Kubewarden's `kwctl annotate` writes JSON into a custom section named
//! `io.kubewarden.metadata`; Portcullis components may carry the same JSON under
//! `portcullis.metadata`. Both are optional: the ABI is detected from the module
//! itself, and the metadata only informs tools and the controller.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Custom section written by Kubewarden's tooling.
pub const KUBEWARDEN_SECTION: &str = "io.kubewarden.metadata";
/// Custom section for Portcullis components.
pub const PORTCULLIS_SECTION: &str = "portcullis.metadata";

/// An admission rule, as in `admissionregistration.k8s.io/v1` RuleWithOperations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// API groups; `*` for all.
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// API versions; `*` for all.
    #[serde(default)]
    pub api_versions: Vec<String>,
    /// Resources; `*` for all.
    #[serde(default)]
    pub resources: Vec<String>,
    /// CREATE, UPDATE, DELETE, CONNECT or `*`.
    #[serde(default)]
    pub operations: Vec<String>,
}

/// A Kubernetes kind a context-aware policy reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextAwareResource {
    /// API version, such as `apps/v1`.
    pub api_version: String,
    /// Kind, such as `Deployment`.
    pub kind: String,
}

/// The metadata of a policy module; every field is optional on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMetadata {
    /// waPC protocol version, `v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The admission rules the policy is written for.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Free-form annotations (title, description, author, ...).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// True when the policy mutates.
    #[serde(default)]
    pub mutating: bool,
    /// Whether the audit scanner should evaluate it.
    #[serde(default = "default_true")]
    pub background_audit: bool,
    /// `kubewarden-wapc`, `opa`, `gatekeeper` or `wasi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_mode: Option<String>,
    /// `kubernetes` or `raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_type: Option<String>,
    /// Kinds a context-aware policy reads.
    #[serde(default)]
    pub context_aware_resources: Vec<ContextAwareResource>,
    /// Host capabilities the policy uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_capabilities: Option<Vec<String>>,
    /// Oldest Kubewarden version the policy supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_kubewarden_version: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Find and parse the metadata section, searching nested modules of components too.
///
/// Returns `Ok(None)` when there is none, and an error naming the section when
/// it is present but not valid JSON metadata.
pub fn read_metadata(wasm: &[u8]) -> Result<Option<PolicyMetadata>, String> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else {
            // Structural errors are reported by validation; metadata is best effort.
            return Ok(None);
        };
        if let wasmparser::Payload::CustomSection(reader) = payload {
            let name = reader.name();
            if name == KUBEWARDEN_SECTION || name == PORTCULLIS_SECTION {
                return serde_json::from_slice(reader.data())
                    .map(Some)
                    .map_err(|e| format!("custom section {name} is not valid metadata: {e}"));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubewarden_section() {
        let json = r#"{"protocolVersion":"v1","mutating":true,"executionMode":"kubewarden-wapc","rules":[{"apiGroups":[""],"apiVersions":["v1"],"resources":["pods"],"operations":["CREATE"]}],"contextAwareResources":[{"apiVersion":"v1","kind":"Namespace"}]}"#;
        let wat = format!(
            r#"(module (@custom "{KUBEWARDEN_SECTION}" "{}"))"#,
            json.replace('"', "\\\"")
        );
        let wasm = wat::parse_str(&wat).unwrap();
        let meta = read_metadata(&wasm).unwrap().unwrap();
        assert_eq!(meta.protocol_version.as_deref(), Some("v1"));
        assert!(meta.mutating);
        assert!(meta.background_audit);
        assert_eq!(meta.rules[0].resources, vec!["pods"]);
        assert_eq!(meta.context_aware_resources[0].kind, "Namespace");
    }

    #[test]
    fn absent_section_is_none_and_bad_json_is_an_error() {
        assert_eq!(
            read_metadata(&wat::parse_str("(module)").unwrap()),
            Ok(None)
        );
        let bad = wat::parse_str(format!(
            r#"(module (@custom "{KUBEWARDEN_SECTION}" "nope"))"#
        ))
        .unwrap();
        assert!(
            read_metadata(&bad)
                .unwrap_err()
                .contains(KUBEWARDEN_SECTION)
        );
    }
}
