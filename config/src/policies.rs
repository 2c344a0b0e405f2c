//! `policies.yml`: policy id → policy or policy group, in the Kubewarden format.
//!
//! The server reads the file with [`PoliciesConfig::parse_lenient`] so that a
//! single malformed entry becomes a load error for that id instead of taking
//! the whole server down; the controller builds a [`PoliciesConfig`] and
//! serialises it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{ConfigError, parse_document};

/// The contents of `policies.yml`: policy id → entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoliciesConfig {
    /// Entries by policy id. The id is the URL path segment of the policy.
    pub policies: BTreeMap<String, PolicyEntry>,
}

/// `policies.yml` read entry by entry: each id maps to its entry or to the
/// reason the entry is invalid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LenientPolicies {
    /// Entries by policy id; `Err` holds a human-readable reason.
    pub entries: BTreeMap<String, Result<PolicyEntry, String>>,
    /// `sha256:<hex>` of the file contents the entries were read from.
    pub digest: String,
}

/// One entry of `policies.yml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PolicyEntry {
    /// A single policy.
    Policy(PolicyConfig),
    /// A policy group (members combined by an expression).
    Group(PolicyGroupConfig),
}

/// Whether a policy's verdict is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Rejections and mutations are applied.
    #[default]
    Protect,
    /// Every request is allowed; the would-be verdict is only logged.
    Monitor,
}

impl PolicyMode {
    /// The lower-case name used in the file, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Protect => "protect",
            Self::Monitor => "monitor",
        }
    }
}

impl fmt::Display for PolicyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a module is run, with Kubewarden's `executionMode` names.
///
/// Optional in the policies file: without it the mode comes from the module's
/// metadata, else from the module itself (waPC and components are recognised;
/// an OPA module must be told `opa` or `gatekeeper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutionMode {
    /// Kubewarden's waPC protocol v1.
    KubewardenWapc,
    /// An OPA policy: input `{request}`, data = the settings; the result's
    /// `response` is the verdict.
    Opa,
    /// A Gatekeeper ConstraintTemplate's Rego: input `{parameters, review}`;
    /// any violation denies.
    Gatekeeper,
    /// A WASI command: the request on stdin, the verdict on stdout.
    Wasi,
}

impl ExecutionMode {
    /// Every mode, in the order of the documentation.
    pub const ALL: [ExecutionMode; 4] = [
        ExecutionMode::KubewardenWapc,
        ExecutionMode::Opa,
        ExecutionMode::Gatekeeper,
        ExecutionMode::Wasi,
    ];

    /// The name used in the policies file and the module metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KubewardenWapc => "kubewarden-wapc",
            Self::Opa => "opa",
            Self::Gatekeeper => "gatekeeper",
            Self::Wasi => "wasi",
        }
    }
}

impl fmt::Display for ExecutionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ExecutionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown execution mode {s:?} (known: {})", known.join(", "))
            })
    }
}

/// A Kubernetes resource type a context-aware policy may read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextAwareResource {
    /// e.g. `v1`, `apps/v1`.
    pub api_version: String,
    /// e.g. `Namespace`.
    pub kind: String,
}

/// A single policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConfig {
    /// Where the wasm module comes from: `file://`, `http(s)://`,
    /// `registry://`, or a bare `host/repo:tag` (meaning `registry://`).
    pub module: String,
    /// The policy's settings; always a JSON object (`null` reads as `{}`).
    #[serde(default = "empty_object", deserialize_with = "settings_object")]
    pub settings: Value,
    /// Protect (default) or monitor.
    #[serde(default)]
    pub policy_mode: PolicyMode,
    /// Whether the policy's mutations are applied; default false.
    #[serde(default)]
    pub allowed_to_mutate: bool,
    /// Resources the policy may read through host capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aware_resources: Vec<ContextAwareResource>,
    /// Replaces `status.message` of a rejection; the policy's own message is
    /// kept in `status.details.causes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per-policy evaluation deadline, overriding the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_eval_seconds: Option<u64>,
    /// Host-capability patterns granted to the policy (`*`, `oci/*`,
    /// `oci/v1/verify`, ...); empty grants nothing.
    #[serde(default)]
    pub host_capabilities: Vec<String>,
    /// How the module is run; overrides the module's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_mode: Option<ExecutionMode>,
}

/// A policy group: members evaluated and combined by a boolean expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGroupConfig {
    /// Protect (default) or monitor.
    #[serde(default)]
    pub policy_mode: PolicyMode,
    /// Boolean expression over the member names, e.g. `a() && b()`.
    pub expression: String,
    /// Rejection message of the group.
    pub message: String,
    /// Members by name.
    pub policies: BTreeMap<String, PolicyGroupMember>,
}

/// A member of a policy group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyGroupMember {
    /// Where the wasm module comes from.
    pub module: String,
    /// The member's settings (a JSON object).
    #[serde(default = "empty_object", deserialize_with = "settings_object")]
    pub settings: Value,
    /// Resources the member may read through host capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aware_resources: Vec<ContextAwareResource>,
    /// Per-member evaluation deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_eval_seconds: Option<u64>,
    /// Host-capability patterns granted to the member.
    #[serde(default)]
    pub host_capabilities: Vec<String>,
    /// How the member's module is run; overrides the module's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_mode: Option<ExecutionMode>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn settings_object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(empty_object()),
        value @ Value::Object(_) => Ok(value),
        other => Err(serde::de::Error::custom(format!(
            "settings must be an object, found {}",
            json_type_name(&other)
        ))),
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl<'de> Deserialize<'de> for PolicyEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        PolicyEntry::from_value(value).map_err(serde::de::Error::custom)
    }
}

impl PolicyEntry {
    /// Reads one entry. An entry with `expression` or `policies` is a group;
    /// anything else must be a policy. Errors name the offending field, which
    /// an untagged enum would hide behind "did not match any variant".
    pub fn from_value(value: Value) -> Result<Self, String> {
        let Value::Object(map) = &value else {
            return Err(format!(
                "an entry must be an object, found {}",
                json_type_name(&value)
            ));
        };
        if map.contains_key("expression") || map.contains_key("policies") {
            serde_json::from_value(value)
                .map(PolicyEntry::Group)
                .map_err(|e| format!("invalid policy group: {e}"))
        } else {
            serde_json::from_value(value)
                .map(PolicyEntry::Policy)
                .map_err(|e| format!("invalid policy: {e}"))
        }
    }

    /// The entry's mode.
    pub fn policy_mode(&self) -> PolicyMode {
        match self {
            Self::Policy(p) => p.policy_mode,
            Self::Group(g) => g.policy_mode,
        }
    }
}

/// Checks that a policy id can be used as a URL path segment.
pub fn validate_policy_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("policy id must not be empty".into());
    }
    if id.contains('/') {
        return Err(format!("policy id {id:?} must not contain '/'"));
    }
    Ok(())
}

/// `sha256:<hex>` of some bytes, as used for file and module digests.
pub fn content_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl PoliciesConfig {
    /// Parses `policies.yml` strictly: any invalid entry fails the whole file.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ConfigError> {
        if is_blank(bytes) {
            return Ok(Self::default());
        }
        parse_document("policies file", bytes)
    }

    /// Parses `policies.yml` entry by entry. Only a document that is not a map
    /// at all is an error; a bad entry is reported against its id.
    pub fn parse_lenient(bytes: &[u8]) -> Result<LenientPolicies, ConfigError> {
        let digest = content_digest(bytes);
        if is_blank(bytes) {
            return Ok(LenientPolicies {
                entries: BTreeMap::new(),
                digest,
            });
        }
        let document: Option<BTreeMap<String, Value>> = parse_document("policies file", bytes)?;
        let entries = document
            .unwrap_or_default()
            .into_iter()
            .map(|(id, value)| {
                let entry = validate_policy_id(&id).and_then(|()| PolicyEntry::from_value(value));
                (id, entry)
            })
            .collect();
        Ok(LenientPolicies { entries, digest })
    }

    /// Serialises to YAML.
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        serde_yaml::to_string(self).map_err(|e| ConfigError::Parse {
            what: "policies file",
            reason: e.to_string(),
        })
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = r#"
clusterwide-privileged:
  namespacedName:
    Namespace: ""
    Name: privileged
  module: registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.1
  policyMode: monitor
  allowedToMutate: false
  settings: null
clusterwide-labels:
  module: file:///policies/default-labels.wasm
  allowedToMutate: true
  message: labels are required
  timeoutEvalSeconds: 3
  hostCapabilities: ["oci/*"]
  contextAwareResources:
    - apiVersion: v1
      kind: Namespace
  settings:
    labels:
      team: unknown
clusterwide-gatekeeper:
  module: file:///policies/privileged.wasm
  executionMode: gatekeeper
clusterwide-group-a:
  policyMode: protect
  expression: "a() && b()"
  message: group says no
  policies:
    a:
      module: file:///a.wasm
    b:
      module: file:///b.wasm
      settings: {x: 1}
broken:
  settings: {}
bad/id:
  module: file:///x.wasm
"#;

    #[test]
    fn lenient_parse_reads_every_kind_of_entry() {
        let parsed = PoliciesConfig::parse_lenient(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(parsed.entries.len(), 6);

        let Ok(PolicyEntry::Policy(privileged)) = &parsed.entries["clusterwide-privileged"] else {
            panic!("{:?}", parsed.entries["clusterwide-privileged"]);
        };
        assert_eq!(privileged.policy_mode, PolicyMode::Monitor);
        assert_eq!(privileged.settings, json!({}));
        assert!(!privileged.allowed_to_mutate);
        assert!(privileged.host_capabilities.is_empty());
        assert_eq!(privileged.execution_mode, None);

        let Ok(PolicyEntry::Policy(gatekeeper)) = &parsed.entries["clusterwide-gatekeeper"] else {
            panic!();
        };
        assert_eq!(gatekeeper.execution_mode, Some(ExecutionMode::Gatekeeper));

        let Ok(PolicyEntry::Policy(labels)) = &parsed.entries["clusterwide-labels"] else {
            panic!();
        };
        assert_eq!(labels.policy_mode, PolicyMode::Protect);
        assert!(labels.allowed_to_mutate);
        assert_eq!(labels.message.as_deref(), Some("labels are required"));
        assert_eq!(labels.timeout_eval_seconds, Some(3));
        assert_eq!(labels.host_capabilities, vec!["oci/*".to_string()]);
        assert_eq!(labels.context_aware_resources[0].kind, "Namespace");
        assert_eq!(labels.settings, json!({"labels": {"team": "unknown"}}));

        let Ok(PolicyEntry::Group(group)) = &parsed.entries["clusterwide-group-a"] else {
            panic!();
        };
        assert_eq!(group.policies.len(), 2);
        assert_eq!(group.policies["b"].settings, json!({"x": 1}));

        let broken = parsed.entries["broken"].as_ref().unwrap_err();
        assert!(broken.contains("module"), "{broken}");
        let bad_id = parsed.entries["bad/id"].as_ref().unwrap_err();
        assert!(bad_id.contains("'/'"), "{bad_id}");
        assert_eq!(parsed.digest, content_digest(EXAMPLE.as_bytes()));
    }

    #[test]
    fn json_documents_are_accepted() {
        let json = "{\n\t\"p\": {\"module\": \"file:///p.wasm\", \"settings\": {\"a\": [1]}}\n}";
        let parsed = PoliciesConfig::parse_lenient(json.as_bytes()).unwrap();
        let Ok(PolicyEntry::Policy(p)) = &parsed.entries["p"] else {
            panic!("{parsed:?}");
        };
        assert_eq!(p.settings, json!({"a": [1]}));
    }

    #[test]
    fn non_object_settings_are_rejected_for_that_entry() {
        let parsed =
            PoliciesConfig::parse_lenient(b"p: {module: file:///p.wasm, settings: [1]}").unwrap();
        let err = parsed.entries["p"].as_ref().unwrap_err();
        assert!(err.contains("settings must be an object"), "{err}");
    }

    #[test]
    fn execution_modes_use_kubewarden_names() {
        for mode in ExecutionMode::ALL {
            let yaml = format!("p: {{module: x, executionMode: {mode}}}");
            let parsed = PoliciesConfig::from_slice(yaml.as_bytes()).unwrap();
            let PolicyEntry::Policy(p) = &parsed.policies["p"] else {
                panic!();
            };
            assert_eq!(p.execution_mode, Some(mode));
            assert_eq!(mode.as_str().parse::<ExecutionMode>(), Ok(mode));
        }
        let parsed = PoliciesConfig::parse_lenient(b"p: {module: x, executionMode: rego}").unwrap();
        let err = parsed.entries["p"].as_ref().unwrap_err();
        assert!(err.contains("kubewarden-wapc"), "{err}");
        let member =
            "g: {expression: a(), message: m, policies: {a: {module: x, executionMode: opa}}}";
        let parsed = PoliciesConfig::from_slice(member.as_bytes()).unwrap();
        let PolicyEntry::Group(g) = &parsed.policies["g"] else {
            panic!();
        };
        assert_eq!(g.policies["a"].execution_mode, Some(ExecutionMode::Opa));
        assert!(
            "rego"
                .parse::<ExecutionMode>()
                .unwrap_err()
                .contains("gatekeeper")
        );
    }

    #[test]
    fn group_members_reject_unknown_fields() {
        let yaml = "g: {expression: a(), message: m, policies: {a: {module: x, bogus: 1}}}";
        let parsed = PoliciesConfig::parse_lenient(yaml.as_bytes()).unwrap();
        let err = parsed.entries["g"].as_ref().unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn empty_and_non_map_documents() {
        assert!(
            PoliciesConfig::parse_lenient(b"")
                .unwrap()
                .entries
                .is_empty()
        );
        assert!(
            PoliciesConfig::parse_lenient(b"~")
                .unwrap()
                .entries
                .is_empty()
        );
        assert!(PoliciesConfig::parse_lenient(b"- a\n- b\n").is_err());
    }

    #[test]
    fn strict_round_trip() {
        let strict = PoliciesConfig::from_slice(
            b"p: {module: file:///p.wasm, policyMode: monitor, allowedToMutate: true}",
        )
        .unwrap();
        let yaml = strict.to_yaml().unwrap();
        assert_eq!(PoliciesConfig::from_slice(yaml.as_bytes()).unwrap(), strict);
        assert!(PoliciesConfig::from_slice(b"p: {settings: {}}").is_err());
    }
}
