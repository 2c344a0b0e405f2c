//! Gatekeeper's objects as the conformance suite reads them: templates,
//! constraints, and the resources they are evaluated on; what `gator`
//! does around the Rego (matching, parameter defaults, enforcement points).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// Every YAML or JSON document in `path` (a file, or a directory read
/// recursively, as `gator --filename` does). Files of other extensions are
/// skipped, as gator skips them.
pub fn documents(path: &Path) -> Vec<Value> {
    let mut files = Vec::new();
    collect(path, &mut files);
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            // A document serde_yaml cannot read ends the file: its iterator
            // would yield the same error again.
            let Ok(value) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
                break;
            };
            // Documents JSON cannot represent (non-string keys) are not Kubernetes objects.
            if let Ok(value) = serde_json::to_value(value)
                && !value.is_null()
            {
                docs.push(value);
            }
        }
    }
    docs
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            collect(&entry.path(), files);
        }
    } else if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    ) {
        files.push(path.to_path_buf());
    }
}

/// The code of a template's (first) target.
#[derive(Debug, Clone, PartialEq)]
pub enum Code {
    Rego {
        rego: String,
        libs: Vec<String>,
        v1: bool,
    },
    /// Only the CEL engine (`K8sNativeValidation`): not Rego.
    Cel,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    /// The constraint kind it defines.
    pub kind: String,
    pub code: Code,
    /// `targets[].operations`, when the template restricts them.
    pub operations: Option<Vec<String>>,
    pub schema: Value,
}

pub fn template(doc: &Value) -> Option<Template> {
    if doc["kind"] != "ConstraintTemplate" {
        return None;
    }
    let spec = &doc["spec"];
    let target = &spec["targets"][0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let code = if let Some(rego) = target["rego"].as_str() {
        Code::Rego {
            rego: rego.to_string(),
            libs: strings(&target["libs"]),
            v1: false,
        }
    } else {
        let engines = target["code"].as_array().cloned().unwrap_or_default();
        match engines.iter().find(|c| c["engine"] == "Rego") {
            Some(c) => Code::Rego {
                rego: c["source"]["rego"].as_str().unwrap_or_default().to_string(),
                libs: strings(&c["source"]["libs"]),
                v1: c["source"]["version"] == "v1",
            },
            None => Code::Cel,
        }
    };
    Some(Template {
        name: doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        kind: spec["crd"]["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        code,
        operations: target["operations"].as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        }),
        schema: spec["crd"]["spec"]["validation"]["openAPIV3Schema"].clone(),
    })
}

#[derive(Debug, Clone)]
pub struct Constraint {
    pub kind: String,
    pub name: String,
    pub spec: Value,
}

pub fn constraint(doc: &Value) -> Option<Constraint> {
    let api = doc["apiVersion"].as_str()?;
    if !api.starts_with("constraints.gatekeeper.sh/") {
        return None;
    }
    Some(Constraint {
        kind: doc["kind"].as_str()?.to_string(),
        name: doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        spec: doc["spec"].clone(),
    })
}

impl Constraint {
    /// The parameters, with the template schema's defaults filled in (gator
    /// applies OpenAPI v3 defaults, as the API server would).
    pub fn parameters(&self, template: &Template) -> Value {
        let mut params = match &self.spec["parameters"] {
            Value::Object(m) => Value::Object(m.clone()),
            _ => Value::Object(Map::new()),
        };
        apply_defaults(&template.schema, &mut params);
        params
    }

    /// Whether gator, as an enforcement point, evaluates this constraint.
    pub fn enforced_by_gator(&self) -> bool {
        if self.spec["enforcementAction"] != "scoped" {
            return true;
        }
        self.spec["scopedEnforcementActions"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| {
                a["enforcementPoints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .any(|p| p["name"] == "gator.gatekeeper.sh" || p["name"] == "*")
    }

    /// Whether the constraint's `match` selects `object` (namespace objects,
    /// for namespace selectors, from `namespaces`), and the template's
    /// operations include `operation`.
    pub fn matches(
        &self,
        template: &Template,
        object: &Value,
        operation: &str,
        namespaces: &[Value],
    ) -> bool {
        if let Some(ops) = &template.operations
            && !ops.iter().any(|o| o == operation || o == "*")
        {
            return false;
        }
        let m = &self.spec["match"];
        let (group, _) = group_version(object);
        let kind = object["kind"].as_str().unwrap_or_default();
        if let Some(kinds) = m["kinds"].as_array() {
            let hit = kinds.iter().any(|k| {
                let listed = |field: &str, value: &str| {
                    k[field]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|v| v == "*" || v == value))
                };
                listed("apiGroups", &group) && listed("kinds", kind)
            });
            if !hit {
                return false;
            }
        }
        let namespace = object["metadata"]["namespace"].as_str();
        let is_namespace = kind == "Namespace" && group.is_empty();
        // For a Namespace, its own name counts as its namespace.
        let ns_name = if is_namespace {
            object["metadata"]["name"].as_str()
        } else {
            namespace
        };
        match m["scope"].as_str() {
            Some("Cluster") if namespace.is_some() => return false,
            Some("Namespaced") if namespace.is_none() => return false,
            _ => {}
        }
        if let Some(list) = m["namespaces"].as_array()
            && !ns_name.is_some_and(|ns| list.iter().any(|p| glob(p.as_str().unwrap_or(""), ns)))
        {
            return false;
        }
        if let Some(list) = m["excludedNamespaces"].as_array()
            && ns_name.is_some_and(|ns| list.iter().any(|p| glob(p.as_str().unwrap_or(""), ns)))
        {
            return false;
        }
        if let Some(name) = m["name"].as_str()
            && !glob(
                name,
                object["metadata"]["name"].as_str().unwrap_or_default(),
            )
        {
            return false;
        }
        if m["labelSelector"].is_object()
            && !selects(&m["labelSelector"], &object["metadata"]["labels"])
        {
            return false;
        }
        if m["namespaceSelector"].is_object() {
            let labels = if is_namespace {
                object["metadata"]["labels"].clone()
            } else {
                namespaces
                    .iter()
                    .find(|n| n["metadata"]["name"].as_str() == namespace)
                    .map(|n| n["metadata"]["labels"].clone())
                    .unwrap_or(Value::Null)
            };
            if namespace.is_none() && !is_namespace {
                return true;
            }
            if !selects(&m["namespaceSelector"], &labels) {
                return false;
            }
        }
        true
    }
}

/// Gatekeeper's prefix/suffix globs (`kube-*`, `*-system`).
fn glob(pattern: &str, value: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        pattern == value
    }
}

/// A Kubernetes label selector.
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(m) = selector["matchLabels"].as_object()
        && !m.iter().all(|(k, v)| label(k) == v.as_str())
    {
        return false;
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ok = match e["operator"].as_str().unwrap_or_default() {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => !label(key).is_some_and(|v| values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn apply_defaults(schema: &Value, value: &mut Value) {
    let (Some(props), Value::Object(fields)) = (schema["properties"].as_object(), value) else {
        return;
    };
    for (name, prop) in props {
        if !fields.contains_key(name)
            && let Some(default) = prop.get("default")
        {
            fields.insert(name.clone(), default.clone());
        }
        if let Some(child) = fields.get_mut(name) {
            apply_defaults(prop, child);
        }
    }
}

/// `(group, version)` of an object's apiVersion.
pub fn group_version(object: &Value) -> (String, String) {
    let api = object["apiVersion"].as_str().unwrap_or("v1");
    match api.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api.to_string()),
    }
}

/// The AdmissionRequest Gatekeeper reviews for `object`.
pub fn review(object: &Value, operation: &str, old: Option<&Value>) -> Value {
    let (group, version) = group_version(object);
    let kind = object["kind"].as_str().unwrap_or_default();
    let mut review = json!({
        "uid": "00000000-0000-0000-0000-00000000c0f0",
        "kind": {"group": group, "version": version, "kind": kind},
        "name": object["metadata"]["name"],
        "operation": operation,
        "userInfo": {"username": "conformance-test"},
        "object": object,
    });
    if let Some(ns) = object["metadata"]["namespace"].as_str() {
        review["namespace"] = json!(ns);
    }
    if let Some(old) = old {
        review["oldObject"] = old.clone();
    }
    review
}

/// A plural resource name good enough for the OPA convention's keys.
pub fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}
