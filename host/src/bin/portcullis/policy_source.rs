//! What a command evaluates: a module, or a ClusterAdmissionPolicy /
//! AdmissionPolicy manifest that names a module and says how the server
//! enforces its verdicts, or (for `run`) a ClusterAdmissionPolicyGroup /
//! AdmissionPolicyGroup manifest.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use portcullis_config::{PolicyGroupConfig, PolicyGroupMember, PolicyMode};
use portcullis_host::admission::{AdmissionResponse, PolicyBehaviour, post_process};
use serde::Deserialize;
use serde_json::Value;

/// The policy kinds whose manifests name one module.
const MANIFEST_KINDS: [&str; 2] = ["ClusterAdmissionPolicy", "AdmissionPolicy"];

/// The policy kinds whose manifests combine member policies.
const GROUP_KINDS: [&str; 2] = ["ClusterAdmissionPolicyGroup", "AdmissionPolicyGroup"];

/// A policy to evaluate, with the enforcement the policy-server would apply.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// A short name for reports and logs.
    pub name: String,
    /// The module: a local path or a `file://`, `http(s)://` or `registry://` URI.
    pub module: String,
    /// The settings the source gives (a manifest's `spec.settings`).
    pub settings: Option<Value>,
    /// How verdicts are enforced; `None` for a bare module, whose verdict is
    /// shown as the policy returns it.
    pub enforcement: Option<Enforcement>,
}

/// A manifest's `mode`, `mutating` and `message`, as the controller hands them
/// to the policy-server (`mutating` becomes `allowedToMutate`).
#[derive(Debug, Clone)]
pub struct Enforcement {
    pub policy_id: String,
    pub mode: PolicyMode,
    pub allowed_to_mutate: bool,
    pub message: Option<String>,
}

impl PolicySource {
    /// Apply the manifest's enforcement, as the policy-server does after the
    /// policy answered.
    pub fn enforce(&self, response: AdmissionResponse) -> AdmissionResponse {
        match &self.enforcement {
            None => response,
            Some(e) => post_process(
                response,
                &PolicyBehaviour {
                    policy_id: &e.policy_id,
                    mode: e.mode,
                    allowed_to_mutate: e.allowed_to_mutate,
                    message: e.message.as_deref(),
                },
            ),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    kind: String,
    #[serde(default)]
    metadata: ManifestMetadata,
    spec: ManifestSpec,
}

#[derive(Deserialize, Default)]
struct ManifestMetadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestSpec {
    module: String,
    #[serde(default)]
    settings: Option<Value>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    mutating: bool,
    #[serde(default)]
    message: Option<String>,
}

/// Resolve `reference`, relative to `base` when it is a relative path: a
/// module (anything with a scheme, or a file starting with the wasm magic), or
/// a policy manifest in YAML or JSON.
pub fn resolve(reference: &str, base: &Path) -> anyhow::Result<PolicySource> {
    if reference.contains("://") {
        return Ok(module_source(reference.to_string()));
    }
    let path = base.join(reference);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"\0asm") {
        return Ok(module_source(path.display().to_string()));
    }
    manifest(&bytes, &path)
}

fn module_source(module: String) -> PolicySource {
    PolicySource {
        name: super::run::policy_name(&module),
        module,
        settings: None,
        enforcement: None,
    }
}

fn manifest(bytes: &[u8], path: &Path) -> anyhow::Result<PolicySource> {
    let text = std::str::from_utf8(bytes)
        .with_context(|| format!("{} is neither a wasm module nor text", path.display()))?;
    let manifest: Manifest = serde_yaml::from_str(text).with_context(|| {
        format!(
            "{} is neither a wasm module nor a policy manifest",
            path.display()
        )
    })?;
    if !MANIFEST_KINDS.contains(&manifest.kind.as_str()) {
        bail!(
            "{}: kind {} is not supported here (expected {})",
            path.display(),
            manifest.kind,
            MANIFEST_KINDS.join(" or ")
        );
    }
    let mode = match manifest.spec.mode.as_deref() {
        None | Some("protect") => PolicyMode::Protect,
        Some("monitor") => PolicyMode::Monitor,
        Some(other) => bail!(
            "{}: spec.mode is {other:?}, expected protect or monitor",
            path.display()
        ),
    };
    // The policy-server knows a policy by the id the controller gives it.
    let policy_id = match (&manifest.kind[..], &manifest.metadata.namespace) {
        ("AdmissionPolicy", Some(ns)) => format!("namespaced-{ns}-{}", manifest.metadata.name),
        // kubectl puts a manifest without a namespace in `default`.
        ("AdmissionPolicy", None) => format!("namespaced-default-{}", manifest.metadata.name),
        _ => format!("clusterwide-{}", manifest.metadata.name),
    };
    // A relative `module` in a local manifest is relative to the manifest.
    let module = if manifest.spec.module.contains("://") {
        manifest.spec.module.clone()
    } else {
        relative_to(path, &manifest.spec.module)
            .display()
            .to_string()
    };
    Ok(PolicySource {
        name: if manifest.metadata.name.is_empty() {
            super::run::policy_name(&module)
        } else {
            manifest.metadata.name.clone()
        },
        module,
        settings: manifest.spec.settings,
        enforcement: Some(Enforcement {
            policy_id,
            mode,
            allowed_to_mutate: manifest.spec.mutating,
            message: manifest.spec.message,
        }),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupManifest {
    kind: String,
    #[serde(default)]
    metadata: ManifestMetadata,
    spec: GroupSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupSpec {
    expression: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    policies: std::collections::BTreeMap<String, GroupMemberSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupMemberSpec {
    module: String,
    #[serde(default)]
    settings: Option<Value>,
    #[serde(default)]
    context_aware_resources: Vec<portcullis_config::ContextAwareResource>,
    #[serde(default)]
    timeout_eval_seconds: Option<u64>,
}

/// A policy group read from a manifest: its policy-server id and its
/// `policies.yml` entry, as the controller writes them.
pub struct GroupSource {
    pub id: String,
    pub config: PolicyGroupConfig,
}

/// Reads `reference` as a group manifest when it is one: `Ok(None)` for a
/// module or anything else that is not a group's YAML. Relative member
/// modules are relative to the manifest.
pub fn group(reference: &str) -> anyhow::Result<Option<GroupSource>> {
    if reference.contains("://") {
        return Ok(None);
    }
    let path = Path::new(reference);
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(None);
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(None);
    };
    #[derive(Deserialize)]
    struct Kind {
        kind: String,
    }
    match serde_yaml::from_str::<Kind>(text) {
        Ok(k) if GROUP_KINDS.contains(&k.kind.as_str()) => {}
        _ => return Ok(None),
    }
    let manifest: GroupManifest = serde_yaml::from_str(text)
        .with_context(|| format!("{} is not a valid policy group manifest", path.display()))?;
    let policy_mode = match manifest.spec.mode.as_deref() {
        None | Some("protect") => PolicyMode::Protect,
        Some("monitor") => PolicyMode::Monitor,
        Some(other) => bail!(
            "{}: spec.mode is {other:?}, expected protect or monitor",
            path.display()
        ),
    };
    let Some(message) = manifest.spec.message.filter(|m| !m.is_empty()) else {
        bail!(
            "{}: spec.message is required: it is the rejection message of the group",
            path.display()
        );
    };
    let name = &manifest.metadata.name;
    // The ids the controller gives groups.
    let id = match (&manifest.kind[..], &manifest.metadata.namespace) {
        ("AdmissionPolicyGroup", namespace) => format!(
            "group-namespaced-{}.{name}",
            namespace.as_deref().unwrap_or("default")
        ),
        _ => format!("group-clusterwide-{name}"),
    };
    let policies = manifest
        .spec
        .policies
        .into_iter()
        .map(|(member, spec)| {
            let module = if spec.module.contains("://") {
                spec.module
            } else {
                let local = relative_to(path, &spec.module);
                let absolute = local
                    .canonicalize()
                    .with_context(|| format!("member {member}: {}", local.display()))?;
                format!("file://{}", absolute.display())
            };
            let config = PolicyGroupMember {
                module,
                settings: spec
                    .settings
                    .unwrap_or_else(|| Value::Object(Default::default())),
                context_aware_resources: spec.context_aware_resources,
                timeout_eval_seconds: spec.timeout_eval_seconds,
                // Nothing: `run`'s capability flags apply to a single
                // module, not to a group's members.
                host_capabilities: Vec::new(),
                // As Kubewarden's CRDs: the module's metadata decides.
                execution_mode: None,
            };
            Ok((member, config))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Some(GroupSource {
        id,
        config: PolicyGroupConfig {
            policy_mode,
            expression: manifest.spec.expression,
            message,
            policies,
        },
    }))
}

fn relative_to(file: &Path, reference: &str) -> PathBuf {
    file.parent().unwrap_or(Path::new(".")).join(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn module_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "p.wasm", "\0asm\x01\0\0\0");
        let module = resolve("p.wasm", dir.path()).unwrap();
        assert!(module.enforcement.is_none());
        assert_eq!(module.name, "p");

        write(
            dir.path(),
            "cap.yaml",
            "apiVersion: policies.portcullis.dev/v1\nkind: ClusterAdmissionPolicy\n\
             metadata: {name: no-privileged}\nspec:\n  module: p.wasm\n  mode: monitor\n  \
             mutating: false\n  rules: []\n  settings: {skip_init_containers: true}\n",
        );
        let cap = resolve("cap.yaml", dir.path()).unwrap();
        assert_eq!(cap.name, "no-privileged");
        assert_eq!(cap.module, dir.path().join("p.wasm").display().to_string());
        assert_eq!(cap.settings.unwrap()["skip_init_containers"], true);
        let e = cap.enforcement.unwrap();
        assert_eq!(e.mode, PolicyMode::Monitor);
        assert_eq!(e.policy_id, "clusterwide-no-privileged");

        write(
            dir.path(),
            "ap.yaml",
            "kind: AdmissionPolicy\nmetadata: {name: x, namespace: team}\n\
             spec: {module: 'registry://r/p:v1', mutating: true}\n",
        );
        let ap = resolve("ap.yaml", dir.path()).unwrap();
        assert_eq!(ap.module, "registry://r/p:v1");
        assert_eq!(ap.enforcement.unwrap().policy_id, "namespaced-team-x");

        // A group manifest is not a single policy.
        let cap_path = dir.path().join("cap.yaml");
        assert!(group(cap_path.to_str().unwrap()).unwrap().is_none());
        write(dir.path(), "pod.yaml", "kind: Pod\nspec: {module: x}\n");
        let err = resolve("pod.yaml", dir.path()).unwrap_err().to_string();
        assert!(err.contains("kind Pod is not supported"), "{err}");
    }
}
