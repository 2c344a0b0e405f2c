//! The test file format: a YAML document next to a policy.
//!
//! ```yaml
//! policy: ../target/policies/pod-privileged-wapc.wasm   # or a list, or a manifest
//! settings: {}                                          # for every case
//! tests:
//!   - name: a privileged container is rejected
//!     request: ../tests/fixtures/pod-privileged.json    # or an inline object
//!     expect:
//!       allowed: false
//!       message: "Privileged container is not allowed: sidecar"
//! ```
//!
//! Paths are relative to the test file. A request is an AdmissionReview, an
//! AdmissionRequest, or a bare Kubernetes object, which is wrapped as a CREATE
//! (or the case's `operation`) AdmissionRequest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

/// One test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestFile {
    /// The policy under test: a module path or URI, or a policy manifest. A
    /// list runs every case against each, for builds that must agree.
    pub policy: OneOrMany,
    /// Settings for every case, unless a case gives its own.
    #[serde(default)]
    pub settings: Option<Value>,
    /// Evaluation deadline, such as `2s` or `500ms` (default 2s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// The cases.
    pub tests: Vec<Case>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    /// What the case shows.
    pub name: String,
    /// A path to a JSON or YAML file, or an inline document.
    #[serde(default)]
    pub request: Option<Value>,
    /// For a bare object: CREATE (default), UPDATE, DELETE or CONNECT.
    #[serde(default)]
    pub operation: Option<String>,
    /// For a bare object: the object before the change (a path or inline).
    #[serde(default)]
    pub old_object: Option<Value>,
    /// Settings for this case, replacing the file's and the manifest's.
    #[serde(default)]
    pub settings: Option<Value>,
    /// A recorded host-capability session that answers the policy's host
    /// calls, so that context-aware policies test offline.
    #[serde(default)]
    pub session: Option<PathBuf>,
    /// What the policy must answer.
    pub expect: Expect,
}

/// The expected verdict. Only what is given is checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// Whether the request is admitted.
    #[serde(default)]
    pub allowed: Option<bool>,
    /// The exact message (of the verdict, or of the settings verdict when
    /// `settingsValid` is false).
    #[serde(default)]
    pub message: Option<String>,
    /// A regular expression the message must match.
    #[serde(default)]
    pub message_matches: Option<String>,
    /// The status code.
    #[serde(default)]
    pub code: Option<u16>,
    /// The warnings, in order; `[]` for none.
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
    /// The exact JSONPatch; `[]` for no patch.
    #[serde(default)]
    pub patch: Option<Value>,
    /// The object after the patch is applied.
    #[serde(default)]
    pub patched_object: Option<Value>,
    /// The audit annotations; `{}` for none.
    #[serde(default)]
    pub audit_annotations: Option<BTreeMap<String, String>>,
    /// Whether the policy accepts its settings (default: it must). With
    /// `false`, no request is evaluated.
    #[serde(default)]
    pub settings_valid: Option<bool>,
}

impl TestFile {
    pub fn load(path: &Path) -> anyhow::Result<TestFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: TestFile = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a valid test file", path.display()))?;
        if file.tests.is_empty() {
            bail!("{} has no tests", path.display());
        }
        for case in &file.tests {
            if case.request.is_none() && case.expect.settings_valid != Some(false) {
                bail!(
                    "{}: case {:?} has no request (only a case with `settingsValid: false` may omit it)",
                    path.display(),
                    case.name
                );
            }
        }
        Ok(file)
    }

    pub fn timeout(&self) -> anyhow::Result<Duration> {
        match &self.timeout {
            None => Ok(Duration::from_secs(2)),
            Some(t) => super::super::run::humantime_secs(t).map_err(anyhow::Error::msg),
        }
    }
}

/// A document given inline or as a path (JSON or YAML) relative to `base`.
pub fn document(value: &Value, base: &Path) -> anyhow::Result<Value> {
    match value {
        Value::String(path) => {
            let path = base.join(path);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_yaml::from_str(&text)
                .with_context(|| format!("{} is neither JSON nor YAML", path.display()))
        }
        inline => Ok(inline.clone()),
    }
}

/// The AdmissionRequest a case evaluates.
pub fn admission_request(case: &Case, index: usize, base: &Path) -> anyhow::Result<Value> {
    let Some(source) = &case.request else {
        bail!("case {:?} has no request", case.name);
    };
    let doc = document(source, base)?;
    if doc.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
        return doc
            .get("request")
            .filter(|r| r.is_object())
            .cloned()
            .with_context(|| format!("case {:?}: the AdmissionReview has no request", case.name));
    }
    if doc.get("uid").is_some() && doc.get("operation").is_some() {
        return Ok(doc);
    }
    let old_object = match &case.old_object {
        Some(v) => Some(document(v, base)?),
        None => None,
    };
    wrap_object(
        doc,
        old_object,
        case.operation.as_deref().unwrap_or("CREATE"),
        &format!("portcullis-test-{index}"),
    )
}

/// Wrap a Kubernetes object in the AdmissionRequest the API server would send
/// for `operation` on it.
pub fn wrap_object(
    object: Value,
    old_object: Option<Value>,
    operation: &str,
    uid: &str,
) -> anyhow::Result<Value> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).context(
        "the object has no apiVersion (nor is it an AdmissionReview or AdmissionRequest)",
    )?;
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .context("the object has no kind")?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": guess_resource(kind)});
    let metadata = object.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).cloned();
    let namespace = metadata.and_then(|m| m.get("namespace")).cloned();
    let options_kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        "DELETE" => "DeleteOptions",
        "CONNECT" => "ConnectOptions",
        other => bail!("operation {other:?} is not CREATE, UPDATE, DELETE or CONNECT"),
    };
    let (object, old_object) = match operation {
        // A DELETE carries the object being deleted as oldObject.
        "DELETE" => (Value::Null, old_object.unwrap_or(object)),
        _ => (object, old_object.unwrap_or(Value::Null)),
    };
    let mut request = json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "operation": operation,
        "userInfo": {"username": "portcullis-test", "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": old_object,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
    });
    if let Some(name) = name {
        request["name"] = name;
    }
    if let Some(namespace) = namespace {
        request["namespace"] = namespace;
    }
    Ok(request)
}

/// The plural resource of a kind, guessed as Kubernetes' own
/// `meta.UnsafeGuessKindToResource` does: lower case, `-s` → `-ses`,
/// `-y` → `-ies`, otherwise `-s`.
fn guess_resource(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.is_empty() {
        return lower;
    }
    if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_objects_are_wrapped_like_the_api_server_does() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "p", "namespace": "ns"}, "spec": {}});
        let r = wrap_object(pod.clone(), None, "CREATE", "u").unwrap();
        assert_eq!(
            r["kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert_eq!(r["resource"]["resource"], "pods");
        assert_eq!((&r["name"], &r["namespace"]), (&json!("p"), &json!("ns")));
        assert_eq!(r["object"], pod);
        assert!(r["oldObject"].is_null());
        assert_eq!(r["options"]["kind"], "CreateOptions");

        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}});
        let r = wrap_object(deployment.clone(), None, "DELETE", "u").unwrap();
        assert_eq!(
            r["resource"],
            json!({"group": "apps", "version": "v1", "resource": "deployments"})
        );
        assert!(r["object"].is_null());
        assert_eq!(r["oldObject"], deployment);

        assert_eq!(guess_resource("Ingress"), "ingresses");
        assert_eq!(guess_resource("NetworkPolicy"), "networkpolicies");
        assert!(wrap_object(json!({"kind": "Pod"}), None, "CREATE", "u").is_err());
        assert!(wrap_object(pod, None, "PATCH", "u").is_err());
    }

    #[test]
    fn requests_are_taken_from_reviews_requests_and_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("review.json"),
            r#"{"kind":"AdmissionReview","request":{"uid":"r1","operation":"CREATE"}}"#,
        )
        .unwrap();
        let case = |request: Value| Case {
            name: "c".into(),
            request: Some(request),
            operation: None,
            old_object: None,
            settings: None,
            session: None,
            expect: Expect::default(),
        };
        let r = admission_request(&case(json!("review.json")), 0, dir.path()).unwrap();
        assert_eq!(r["uid"], "r1");
        let r = admission_request(
            &case(json!({"uid": "x", "operation": "UPDATE"})),
            0,
            dir.path(),
        )
        .unwrap();
        assert_eq!(r["operation"], "UPDATE");
        let r = admission_request(
            &case(json!({"apiVersion": "v1", "kind": "Pod"})),
            7,
            dir.path(),
        )
        .unwrap();
        assert_eq!(r["uid"], "portcullis-test-7");
        assert_eq!(r["operation"], "CREATE");
    }

    #[test]
    fn file_format_is_strict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(
            &path,
            "policy: p.wasm\ntests:\n- name: x\n  request: {}\n  expect: {alowed: true}\n",
        )
        .unwrap();
        let err = format!("{:#}", TestFile::load(&path).unwrap_err());
        assert!(err.contains("unknown field `alowed`"), "{err}");
        std::fs::write(
            &path,
            "policy: [a.wasm, b.wasm]\ntests:\n- name: x\n  expect: {allowed: true}\n",
        )
        .unwrap();
        let err = format!("{:#}", TestFile::load(&path).unwrap_err());
        assert!(err.contains("has no request"), "{err}");
        std::fs::write(&path, "policy: [a.wasm, b.wasm]\ntests:\n- name: x\n  settings: {a: 1}\n  expect: {settingsValid: false}\n")
            .unwrap();
        assert_eq!(
            TestFile::load(&path).unwrap().policy.items(),
            ["a.wasm", "b.wasm"]
        );
    }
}
