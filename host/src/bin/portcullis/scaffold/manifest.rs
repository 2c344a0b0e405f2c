//! `portcullis scaffold manifest`: a ready policy manifest from the metadata a
//! module carries, as `kwctl scaffold manifest` makes one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use super::super::annotate::{ContextAwareResource, Metadata, Rule, existing_metadata};
use super::super::inputs;

const API_VERSION: &str = "policies.portcullis.dev/v1";

/// The annotations a manifest copies from the module's metadata.
const COPIED_ANNOTATIONS: [&str; 4] = [
    "io.kubewarden.policy.title",
    "io.kubewarden.policy.description",
    "io.kubewarden.policy.severity",
    "io.kubewarden.policy.category",
];

#[derive(Args)]
pub struct ManifestArgs {
    /// The kind of manifest.
    #[arg(long = "type", value_enum)]
    kind: Kind,
    /// The policy's name (default: from the title annotation or the module).
    #[arg(long)]
    name: Option<String>,
    /// Settings (YAML or JSON) to put in the manifest.
    #[arg(long)]
    settings_path: Option<PathBuf>,
    /// Grant the context-aware resources the metadata asks for.
    #[arg(long)]
    allow_context_aware: bool,
    /// The module: a `registry://`, `https://` or `file://` URI (used as is
    /// in the manifest), or a local path (written as a `file://` URI).
    module: String,
    #[command(flatten)]
    sources: inputs::SourceArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    #[value(name = "ClusterAdmissionPolicy")]
    ClusterAdmissionPolicy,
    #[value(name = "AdmissionPolicy")]
    AdmissionPolicy,
    #[value(name = "ClusterAdmissionPolicyGroup")]
    ClusterAdmissionPolicyGroup,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ClusterAdmissionPolicy => "ClusterAdmissionPolicy",
            Kind::AdmissionPolicy => "AdmissionPolicy",
            Kind::ClusterAdmissionPolicyGroup => "ClusterAdmissionPolicyGroup",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: Spec,
}

#[derive(Serialize)]
struct ObjectMeta {
    name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Spec {
    Policy(PolicySpec),
    Group(GroupSpec),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicySpec {
    module: String,
    settings: Value,
    rules: Vec<Rule>,
    mutating: bool,
    background_audit: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    context_aware_resources: Vec<ContextAwareResource>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupSpec {
    rules: Vec<Rule>,
    background_audit: bool,
    policies: BTreeMap<String, GroupMember>,
    expression: String,
    message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupMember {
    module: String,
    settings: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    context_aware_resources: Vec<ContextAwareResource>,
}

pub async fn manifest(args: ManifestArgs) -> anyhow::Result<()> {
    let module = inputs::fetch_module(&args.module, &args.sources).await?;
    let Some((section, raw)) = existing_metadata(&module.bytes)? else {
        bail!(
            "{} carries no metadata: annotate it first (portcullis annotate)",
            args.module
        );
    };
    let metadata: Metadata = serde_json::from_slice(&raw)
        .with_context(|| format!("the {section} section is not valid policy metadata"))?;
    let settings = match &args.settings_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_yaml::from_str(&text)
                .with_context(|| format!("{} is neither YAML nor JSON", path.display()))?
        }
        None => Value::Object(Default::default()),
    };
    let uri = module_uri(&args.module)?;
    let annotations: BTreeMap<String, String> = metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| COPIED_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let title = annotations.get(COPIED_ANNOTATIONS[0]).cloned();
    let name = dns_label(
        args.name
            .as_deref()
            .or(title.as_deref())
            .unwrap_or(&super::super::run::policy_name(&args.module)),
    );
    let context_aware = if args.allow_context_aware {
        metadata.context_aware_resources.iter().cloned().collect()
    } else {
        if !metadata.context_aware_resources.is_empty() {
            eprintln!(
                "warning: the policy reads Kubernetes resources ({}); they are left out of the \
                 manifest unless --allow-context-aware is given",
                metadata
                    .context_aware_resources
                    .iter()
                    .map(|r| format!("{}/{}", r.api_version, r.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Vec::new()
    };
    let spec = match args.kind {
        Kind::ClusterAdmissionPolicyGroup => {
            if metadata.mutating {
                eprintln!(
                    "warning: policy groups do not mutate; a member's mutation counts as a rejection"
                );
            }
            // A member's name is a CEL identifier: the expression calls it.
            let member = name.replace('-', "_");
            Spec::Group(GroupSpec {
                rules: metadata.rules.clone(),
                background_audit: metadata.background_audit,
                expression: format!("{member}()"),
                message: format!("the request was rejected by {name}"),
                policies: BTreeMap::from([(
                    member,
                    GroupMember {
                        module: uri,
                        settings,
                        context_aware_resources: context_aware,
                    },
                )]),
            })
        }
        _ => Spec::Policy(PolicySpec {
            module: uri,
            settings,
            rules: metadata.rules.clone(),
            mutating: metadata.mutating,
            background_audit: metadata.background_audit,
            context_aware_resources: context_aware,
        }),
    };
    let manifest = Manifest {
        api_version: API_VERSION,
        kind: args.kind.name(),
        metadata: ObjectMeta { name, annotations },
        spec,
    };
    print!("{}", serde_yaml::to_string(&manifest)?);
    Ok(())
}

/// A URI the policy-server can fetch: as given, or `file://` plus the
/// absolute path of a local file.
fn module_uri(module: &str) -> anyhow::Result<String> {
    if module.contains("://") {
        return Ok(module.to_string());
    }
    let path = std::fs::canonicalize(module).with_context(|| format!("resolving {module}"))?;
    Ok(format!("file://{}", path.display()))
}

/// A DNS label (lower case letters, digits and `-`, at most 63 characters),
/// as Kubernetes names must be.
fn dns_label(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(63).collect();
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "policy".to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(
            dns_label("Pod Privileged (Python)"),
            "pod-privileged-python"
        );
        assert_eq!(dns_label("--"), "policy");
        assert_eq!(dns_label(&"a".repeat(80)).len(), 63);
    }
}
