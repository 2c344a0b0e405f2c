//! The policy-server's ConfigMap: `policies.yml` for the policies bound to
//! it and, when the PolicyServer sets source options, `sources.yml`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use portcullis_api::{PolicyBody, PolicyModule, PolicyServerSpec, PolicyView};
use portcullis_config::{
    ContextAwareResource, PoliciesConfig, PolicyConfig, PolicyEntry, PolicyGroupConfig,
    PolicyGroupMember, SourceAuthority, SourcesConfig,
};

use super::{BuildOptions, meta};
use crate::names::{ANNOTATION_CONFIG_DIGEST, POLICIES_KEY, SOURCES_KEY};

/// The `policies.yml` mode of a spec's mode.
pub fn policy_mode(mode: portcullis_api::PolicyMode) -> portcullis_config::PolicyMode {
    match mode {
        portcullis_api::PolicyMode::Protect => portcullis_config::PolicyMode::Protect,
        portcullis_api::PolicyMode::Monitor => portcullis_config::PolicyMode::Monitor,
    }
}

/// Host capabilities of a policy: cluster-wide policies get every one;
/// namespaced policies get `namespacedPoliciesCapabilities`, every one when
/// unset (Kubewarden's rule).
fn host_capabilities(policy: &PolicyView, server: &PolicyServerSpec) -> Vec<String> {
    if policy.kind.is_namespaced() {
        server
            .namespaced_policies_capabilities
            .clone()
            .unwrap_or_else(|| vec!["*".to_string()])
    } else {
        vec!["*".to_string()]
    }
}

fn settings(module: &PolicyModule) -> serde_json::Value {
    match &module.settings {
        Some(v @ serde_json::Value::Object(_)) => v.clone(),
        _ => serde_json::Value::Object(Default::default()),
    }
}

fn context_aware_resources(module: &PolicyModule) -> Vec<ContextAwareResource> {
    module
        .context_aware_resources
        .iter()
        .map(|r| ContextAwareResource {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
        })
        .collect()
}

/// The `policies.yml` entry of one policy.
pub fn policy_entry(policy: &PolicyView, server: &PolicyServerSpec) -> PolicyEntry {
    let common = &policy.common;
    match &policy.body {
        PolicyBody::Module(module) => PolicyEntry::Policy(PolicyConfig {
            module: module.module.clone(),
            settings: settings(module),
            policy_mode: policy_mode(common.mode),
            allowed_to_mutate: policy.mutating,
            context_aware_resources: context_aware_resources(module),
            message: common.message.clone(),
            timeout_eval_seconds: common
                .timeout_eval_seconds
                .and_then(|t| u64::try_from(t).ok()),
            host_capabilities: host_capabilities(policy, server),
            // As Kubewarden's CRDs: the mode is the module's metadata.
            execution_mode: None,
        }),
        PolicyBody::Group {
            expression,
            members,
        } => PolicyEntry::Group(PolicyGroupConfig {
            policy_mode: policy_mode(common.mode),
            expression: expression.clone(),
            message: common.message.clone().unwrap_or_default(),
            policies: members
                .iter()
                .map(|(name, member)| {
                    let member = PolicyGroupMember {
                        module: member.module.module.clone(),
                        settings: settings(&member.module),
                        context_aware_resources: context_aware_resources(&member.module),
                        timeout_eval_seconds: member
                            .timeout_eval_seconds
                            .and_then(|t| u64::try_from(t).ok()),
                        host_capabilities: host_capabilities(policy, server),
                        execution_mode: None,
                    };
                    (name.clone(), member)
                })
                .collect(),
        }),
    }
}

/// `policies.yml` for the policies bound to one PolicyServer.
///
/// Policies being deleted stay until they are gone: their webhook is removed
/// first (by the finalizer), so the server never gets a request for an id it
/// no longer has.
pub fn policies_config(policies: &[PolicyView], server: &PolicyServerSpec) -> PoliciesConfig {
    let policies = policies
        .iter()
        .map(|p| (p.id.clone(), policy_entry(p, server)))
        .collect();
    PoliciesConfig { policies }
}

/// `sources.yml` of a PolicyServer, if it sets any source option.
/// `allowedModuleSources` is copied verbatim (the policy-server enforces it).
pub fn sources_config(server: &PolicyServerSpec) -> Option<SourcesConfig> {
    if server.insecure_sources.is_none()
        && server.source_authorities.is_none()
        && server.allowed_module_sources.is_none()
    {
        return None;
    }
    Some(SourcesConfig {
        allowed_module_sources: server.allowed_module_sources.clone(),
        insecure_sources: server.insecure_sources.clone().unwrap_or_default(),
        source_authorities: server
            .source_authorities
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(host, pems)| {
                let certs = pems
                    .into_iter()
                    .map(|data| SourceAuthority::Data { data })
                    .collect();
                (host, certs)
            })
            .collect(),
    })
}

/// The ConfigMap with `policies.yml` (and `sources.yml` when needed).
pub fn config_map(
    ps_name: &str,
    server: &PolicyServerSpec,
    policies: &[PolicyView],
    opts: &BuildOptions,
    owner: &OwnerReference,
) -> Result<ConfigMap, portcullis_config::ConfigError> {
    let policies_yaml = policies_config(policies, server).to_yaml()?;
    let mut data = BTreeMap::from([(POLICIES_KEY.to_string(), policies_yaml.clone())]);
    if let Some(sources) = sources_config(server) {
        let yaml =
            serde_yaml::to_string(&sources).map_err(|e| portcullis_config::ConfigError::Parse {
                what: "sources file",
                reason: e.to_string(),
            })?;
        data.insert(SOURCES_KEY.to_string(), yaml);
    }
    let annotations = BTreeMap::from([(
        ANNOTATION_CONFIG_DIGEST.to_string(),
        portcullis_config::content_digest(policies_yaml.as_bytes()),
    )]);
    Ok(ConfigMap {
        metadata: meta(opts, ps_name, owner, Some(annotations)),
        data: Some(data),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures::{CAP, cap, server};

    #[test]
    fn policies_file_uses_config_types() {
        let view = cap(CAP);
        let cfg = policies_config(std::slice::from_ref(&view), &server());
        let PolicyEntry::Policy(p) = &cfg.policies["clusterwide-privileged"] else {
            panic!("{cfg:?}");
        };
        assert_eq!(p.policy_mode, portcullis_config::PolicyMode::Monitor);
        assert_eq!(p.timeout_eval_seconds, Some(3));
        assert_eq!(p.settings, serde_json::json!({"a": 1}));
        assert_eq!(p.host_capabilities, vec!["*".to_string()]);
        let yaml = cfg.to_yaml().unwrap();
        let back = PoliciesConfig::from_slice(yaml.as_bytes()).unwrap();
        assert_eq!(back, cfg);
    }
}
