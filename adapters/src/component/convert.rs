//! Between the API server's JSON and the typed WIT records.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::bindings::portcullis::policy::types as wit;
use crate::admission_text::AdmissionText;
use crate::error::EvalError;
use crate::types::ValidationResponse;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Gvk {
    group: String,
    version: String,
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Gvr {
    group: String,
    version: String,
    resource: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserInfo {
    username: String,
    uid: String,
    groups: Vec<String>,
    extra: std::collections::BTreeMap<String, Vec<String>>,
}

impl From<Gvk> for wit::GroupVersionKind {
    fn from(g: Gvk) -> Self {
        wit::GroupVersionKind {
            group: g.group,
            version: g.version,
            kind: g.kind,
        }
    }
}

impl From<Gvr> for wit::GroupVersionResource {
    fn from(g: Gvr) -> Self {
        wit::GroupVersionResource {
            group: g.group,
            version: g.version,
            resource: g.resource,
        }
    }
}

/// Where the members of an `admissionv1.AdmissionRequest` are read from:
/// its tree, or its text. A member that is absent reads as its default, as
/// with `#[serde(default)]`; one of the wrong type is an error.
trait Members {
    /// Member `name`, deserialised; `None` if absent.
    fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, EvalError>;
    /// Member `name` as JSON text; `None` if absent or `null`.
    fn json_text(&self, name: &str) -> Option<String>;
}

impl Members for Value {
    fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, EvalError> {
        self.get(name)
            .map(|v| T::deserialize(v).map_err(|e| not_a_request(name, e)))
            .transpose()
    }

    fn json_text(&self, name: &str) -> Option<String> {
        self.get(name)
            .filter(|v| !v.is_null())
            .map(Value::to_string)
    }
}

/// The objects go to the guest as the API server wrote them, and the other
/// members are read from their own few bytes: the pass that made the
/// [`AdmissionText`] found them, so nothing scans the objects again.
impl Members for AdmissionText {
    fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, EvalError> {
        self.member(name)
            .map(|raw| serde_json::from_str(raw).map_err(|e| not_a_request(name, e)))
            .transpose()
    }

    fn json_text(&self, name: &str) -> Option<String> {
        self.member(name)
            .filter(|raw| *raw != "null")
            .map(str::to_owned)
    }
}

fn not_a_request(member: &str, e: serde_json::Error) -> EvalError {
    EvalError::InvalidRequest(format!("not an AdmissionRequest: {member}: {e}"))
}

/// The request read from its tree: a parsed request, or a text whose top
/// level the tree reads differently (see [`AdmissionText::spliceable`]).
pub(super) fn admission_request(json: &Value) -> Result<wit::AdmissionRequest, EvalError> {
    to_wit(json)
}

/// The request read from its text. Only for texts whose top level the tree
/// would read the same ([`AdmissionText::spliceable`]).
pub(super) fn admission_request_text(
    text: &AdmissionText,
) -> Result<wit::AdmissionRequest, EvalError> {
    to_wit(text)
}

fn to_wit(m: &impl Members) -> Result<wit::AdmissionRequest, EvalError> {
    let non_empty = |s: Option<Option<String>>| s.flatten().filter(|s| !s.is_empty());
    let operation = match m.read::<String>("operation")?.unwrap_or_default().as_str() {
        "CREATE" => wit::Operation::Create,
        "UPDATE" => wit::Operation::Update,
        "DELETE" => wit::Operation::Delete,
        "CONNECT" => wit::Operation::Connect,
        other => {
            return Err(EvalError::InvalidRequest(format!(
                "unknown operation {other:?}"
            )));
        }
    };
    let user_info = m.read::<UserInfo>("userInfo")?.unwrap_or_default();
    Ok(wit::AdmissionRequest {
        uid: m.read("uid")?.unwrap_or_default(),
        kind: m.read::<Gvk>("kind")?.unwrap_or_default().into(),
        resource: m.read::<Gvr>("resource")?.unwrap_or_default().into(),
        sub_resource: non_empty(m.read("subResource")?),
        request_kind: m
            .read::<Option<Gvk>>("requestKind")?
            .flatten()
            .map(Into::into),
        request_resource: m
            .read::<Option<Gvr>>("requestResource")?
            .flatten()
            .map(Into::into),
        request_sub_resource: non_empty(m.read("requestSubResource")?),
        name: m.read("name")?.unwrap_or_default(),
        namespace: non_empty(m.read("namespace")?),
        operation,
        user_info: wit::UserInfo {
            username: user_info.username,
            uid: user_info.uid,
            groups: user_info.groups,
            extra: user_info.extra.into_iter().collect(),
        },
        object: m.json_text("object"),
        old_object: m.json_text("oldObject"),
        options: m.json_text("options"),
        dry_run: m.read::<Option<bool>>("dryRun")?.flatten().unwrap_or(false),
    })
}

pub(super) fn validation_response(
    r: wit::ValidationResponse,
) -> Result<ValidationResponse, EvalError> {
    let mutated_object = r
        .mutated_object
        .map(|text| {
            serde_json::from_str::<Value>(&text).map_err(|e| {
                EvalError::MalformedOutput(format!("mutated-object is not JSON text: {e}"))
            })
        })
        .transpose()?;
    Ok(ValidationResponse {
        accepted: r.accepted,
        message: r.message,
        code: r.code,
        mutated_object,
        audit_annotations: (!r.audit_annotations.is_empty())
            .then(|| r.audit_annotations.into_iter().collect()),
        warnings: (!r.warnings.is_empty()).then_some(r.warnings),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::value::RawValue;

    fn text(source: &str) -> AdmissionText {
        AdmissionText::new(RawValue::from_string(source.to_string()).unwrap()).unwrap()
    }

    /// The record with its objects parsed, so that the text path's objects
    /// (the API server's key order and spacing) compare with the tree's.
    fn normalised(mut r: wit::AdmissionRequest) -> (String, [Option<Value>; 3]) {
        let parse = |t: Option<String>| t.map(|t| serde_json::from_str::<Value>(&t).unwrap());
        let objects = [
            parse(r.object.take()),
            parse(r.old_object.take()),
            parse(r.options.take()),
        ];
        (format!("{r:?}"), objects)
    }

    const FULL: &str = r#"{
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "subResource": "",
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "nginx",
        "namespace": "team-a",
        "operation": "UPDATE",
        "userInfo": {"username": "alice", "uid": "1", "groups": ["dev", "ops"],
                     "extra": {"scopes": ["a", "b"]}},
        "object": {"metadata": {"name": "nginx", "labels": {"z": "1", "a": "\u00e9"}},
                   "spec": {"containers": [{"name": "c", "securityContext": {"privileged": true}}]}},
        "oldObject": {"metadata": {"name": "nginx"}},
        "options": {"kind": "UpdateOptions"},
        "dryRun": true
    }"#;

    #[test]
    fn the_text_and_the_tree_give_the_same_record() {
        let request = text(FULL);
        assert!(request.spliceable());
        let from_text = admission_request_text(&request).unwrap();
        assert_eq!(from_text.namespace.as_deref(), Some("team-a"));
        assert!(matches!(from_text.operation, wit::Operation::Update));
        assert!(from_text.dry_run);
        let from_tree = admission_request(request.tree()).unwrap();
        let (text_fields, text_objects) = normalised(from_text);
        let (tree_fields, tree_objects) = normalised(from_tree);
        assert_eq!(text_fields, tree_fields);
        assert_eq!(text_objects, tree_objects);
        assert_eq!(
            text_objects[0].as_ref().unwrap()["metadata"]["labels"]["a"],
            json!("é")
        );
    }

    #[test]
    fn absent_and_null_objects_are_none_on_both_paths() {
        let source = r#"{"uid":"u","operation":"DELETE","object":null}"#;
        let request = text(source);
        for r in [
            admission_request_text(&request).unwrap(),
            admission_request(request.tree()).unwrap(),
        ] {
            assert_eq!(r.object, None);
            assert_eq!(r.old_object, None);
            assert_eq!(r.options, None);
            assert_eq!(r.sub_resource, None);
            assert!(!r.dry_run);
        }
    }

    #[test]
    fn the_objects_text_is_passed_as_the_api_server_wrote_it() {
        let source = r#"{"uid":"u","operation":"CREATE","object":{ "b" : 1, "a" : [ 2 ] }}"#;
        let r = admission_request_text(&text(source)).unwrap();
        assert_eq!(r.object.as_deref(), Some(r#"{ "b" : 1, "a" : [ 2 ] }"#));
    }

    #[test]
    fn both_paths_refuse_the_same_requests() {
        for source in [
            r#"{"uid":"u","operation":"PATCH"}"#,
            r#"{"uid":"u","operation":"CREATE","name":5}"#,
            r#"{"uid":"u","operation":"CREATE","userInfo":{"groups":"x"}}"#,
        ] {
            let request = text(source);
            let from_text = admission_request_text(&request).map(|_| ()).unwrap_err();
            let from_tree = admission_request(request.tree()).map(|_| ()).unwrap_err();
            assert!(
                matches!(from_text, EvalError::InvalidRequest(_)),
                "{source}: {from_text:?}"
            );
            assert!(
                matches!(from_tree, EvalError::InvalidRequest(_)),
                "{source}: {from_tree:?}"
            );
        }
    }
}
