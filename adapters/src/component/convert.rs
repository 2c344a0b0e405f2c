//! Between the API server's JSON and the typed WIT records.

use serde::Deserialize;
use serde_json::Value;

use super::bindings::portcullis::policy::types as wit;
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

/// `admissionv1.AdmissionRequest`, with what a policy needs.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct AdmissionRequest {
    uid: String,
    kind: Gvk,
    resource: Gvr,
    sub_resource: Option<String>,
    request_kind: Option<Gvk>,
    request_resource: Option<Gvr>,
    request_sub_resource: Option<String>,
    name: String,
    namespace: Option<String>,
    operation: String,
    user_info: UserInfo,
    object: Value,
    old_object: Value,
    options: Value,
    dry_run: Option<bool>,
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

fn json_text(v: Value) -> Option<String> {
    (!v.is_null()).then(|| v.to_string())
}

pub(super) fn admission_request(json: &Value) -> Result<wit::AdmissionRequest, EvalError> {
    let r = AdmissionRequest::deserialize(json)
        .map_err(|e| EvalError::InvalidRequest(format!("not an AdmissionRequest: {e}")))?;
    let operation = match r.operation.as_str() {
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
    Ok(wit::AdmissionRequest {
        uid: r.uid,
        kind: r.kind.into(),
        resource: r.resource.into(),
        sub_resource: r.sub_resource.filter(|s| !s.is_empty()),
        request_kind: r.request_kind.map(Into::into),
        request_resource: r.request_resource.map(Into::into),
        request_sub_resource: r.request_sub_resource.filter(|s| !s.is_empty()),
        name: r.name,
        namespace: r.namespace.filter(|s| !s.is_empty()),
        operation,
        user_info: wit::UserInfo {
            username: r.user_info.username,
            uid: r.user_info.uid,
            groups: r.user_info.groups,
            extra: r.user_info.extra.into_iter().collect(),
        },
        object: json_text(r.object),
        old_object: json_text(r.old_object),
        options: json_text(r.options),
        dry_run: r.dry_run.unwrap_or(false),
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
