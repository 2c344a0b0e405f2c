//! Kubewarden's two Rego execution modes: what the policy gets as input and
//! data, and how its result becomes a verdict.
//!
//! - `opa`: input `{"request": <request>}`, data = the settings (plus
//!   `kubernetes`, the context inventory, for context-aware policies); the
//!   entrypoint's value must hold `response`, an AdmissionResponse.
//! - `gatekeeper`: input `{"parameters": <settings>, "review": <request>}`,
//!   data = `{"inventory": ...}`; the entrypoint is a set of violations, and
//!   any violation denies, with the violations' `msg` joined by ", ".

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::inventory::ContextData;
use crate::error::EvalError;
use crate::types::{ExecutionMode, PolicyRequest, Settings, ValidationResponse};

/// The mode a Rego policy runs in; the others are not Rego's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegoMode {
    Opa,
    Gatekeeper,
}

/// The mode an evaluation needs, or why there is none.
pub(crate) fn require(mode: Option<ExecutionMode>) -> Result<RegoMode, EvalError> {
    match mode {
        Some(ExecutionMode::Opa) => Ok(RegoMode::Opa),
        Some(ExecutionMode::Gatekeeper) => Ok(RegoMode::Gatekeeper),
        None => Err(EvalError::Unsupported(
            "an OPA module runs in execution mode `opa` or `gatekeeper`, and neither the \
             policy's executionMode nor the module's metadata says which"
                .into(),
        )),
        // `LoadedModule::with_execution_mode` refuses other modes for OPA modules.
        Some(other) => Err(EvalError::Unsupported(format!(
            "execution mode {other} cannot run an OPA module"
        ))),
    }
}

/// The input and the data of one evaluation, as JSON text.
pub(crate) struct Prepared {
    pub(crate) input: Vec<u8>,
    pub(crate) data: Option<Vec<u8>>,
}

/// Build input and data. `context` is what the host offers a context-aware
/// policy: the inventory, in the shape of `mode`, and the lists it comes from.
pub(crate) fn prepare(
    mode: RegoMode,
    request: &PolicyRequest,
    settings: &Settings,
    context: Option<&ContextData>,
) -> Result<Prepared, EvalError> {
    let invalid = |e: serde_json::Error| EvalError::InvalidRequest(e.to_string());
    match mode {
        RegoMode::Opa => {
            let mut input = Vec::with_capacity(1024);
            input.extend_from_slice(br#"{"request":"#);
            serde_json::to_writer(&mut input, request.json()).map_err(invalid)?;
            input.push(b'}');
            let data = match context {
                None => settings.json().as_bytes().to_vec(),
                Some(context) => opa_data_with_inventory(settings, &context.inventory),
            };
            Ok(Prepared {
                input,
                data: Some(data),
            })
        }
        RegoMode::Gatekeeper => {
            let Some(review) = request.admission() else {
                return Err(EvalError::Unsupported(
                    "Gatekeeper policies evaluate admission requests only, not raw requests".into(),
                ));
            };
            let mut input = Vec::with_capacity(1024 + settings.json().len());
            input.extend_from_slice(br#"{"parameters":"#);
            input.extend_from_slice(settings.json().as_bytes());
            input.extend_from_slice(br#","review":"#);
            serde_json::to_writer(&mut input, review).map_err(invalid)?;
            // Gatekeeper also gives the object's Namespace, from its cache.
            let namespace = review
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty() && review.get("namespaceObject").is_none());
            if let (Some(ns), Some(context)) = (namespace, context)
                && let Some(object) = context.namespace(ns)
                && input.last() == Some(&b'}')
            {
                input.pop();
                input.extend_from_slice(br#","namespaceObject":"#);
                serde_json::to_writer(&mut input, object).map_err(invalid)?;
                input.push(b'}');
            }
            input.push(b'}');
            let data = match context {
                None => b"{}".to_vec(),
                Some(context) => format!(r#"{{"inventory":{}}}"#, context.inventory).into_bytes(),
            };
            Ok(Prepared {
                input,
                data: Some(data),
            })
        }
    }
}

/// The settings with `kubernetes` set to the inventory, which wins over a
/// setting of that name (as in Kubewarden).
fn opa_data_with_inventory(settings: &Settings, inventory: &str) -> Vec<u8> {
    match settings.value() {
        Value::Object(fields) if fields.contains_key("kubernetes") => {
            tracing::warn!(
                "the policy's settings have a `kubernetes` key; it is replaced by the \
                 cluster inventory"
            );
            let mut fields = fields.clone();
            fields.remove("kubernetes");
            let rest = Value::Object(fields).to_string();
            splice_inventory(&rest, inventory)
        }
        Value::Object(_) => splice_inventory(settings.json(), inventory),
        // Only objects can carry the inventory; other settings are replaced.
        _ => format!(r#"{{"kubernetes":{inventory}}}"#).into_bytes(),
    }
}

/// `{"kubernetes": inventory, ...object}` without parsing `object` again.
fn splice_inventory(object: &str, inventory: &str) -> Vec<u8> {
    let rest = object.trim().trim_start_matches('{').trim_start();
    let mut out = Vec::with_capacity(object.len() + inventory.len() + 16);
    out.extend_from_slice(br#"{"kubernetes":"#);
    out.extend_from_slice(inventory.as_bytes());
    if !rest.starts_with('}') {
        out.push(b',');
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// The entrypoint's value in a result set (`[{"result": value}]`), or
/// `None` when it is undefined (`[]`).
pub(crate) fn entrypoint_value(result_set: &[u8]) -> Result<Option<Value>, EvalError> {
    let set: Vec<Value> = serde_json::from_slice(result_set).map_err(|e| {
        EvalError::MalformedOutput(format!("the result set is not a JSON list: {e}"))
    })?;
    Ok(set
        .into_iter()
        .next()
        .and_then(|mut r| r.get_mut("result").map(Value::take)))
}

/// Turn the result set of the entrypoint into a verdict.
pub(crate) fn interpret(
    mode: RegoMode,
    request: &PolicyRequest,
    result_set: &[u8],
) -> Result<ValidationResponse, EvalError> {
    let result = entrypoint_value(result_set)?;
    match mode {
        RegoMode::Gatekeeper => gatekeeper_verdict(result.as_ref()),
        RegoMode::Opa => opa_verdict(result.as_ref(), request),
    }
}

fn gatekeeper_verdict(result: Option<&Value>) -> Result<ValidationResponse, EvalError> {
    let violations = match result {
        // An undefined entrypoint has no violations.
        None => return Ok(accepted()),
        Some(Value::Array(violations)) => violations,
        Some(other) => {
            return Err(EvalError::MalformedOutput(format!(
                "a Gatekeeper entrypoint must be a set of violations, not {}",
                type_name(other)
            )));
        }
    };
    if violations.is_empty() {
        return Ok(accepted());
    }
    let messages: Vec<&str> = violations
        .iter()
        .filter_map(|v| v.get("msg").and_then(Value::as_str))
        .collect();
    Ok(ValidationResponse {
        accepted: false,
        message: (!messages.is_empty()).then(|| messages.join(", ")),
        ..Default::default()
    })
}

/// The AdmissionResponse an OPA policy returns under `response`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpaResponse {
    allowed: bool,
    #[serde(default)]
    status: Option<OpaStatus>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
    #[serde(default)]
    audit_annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    patch: Option<String>,
    #[serde(default)]
    patch_type: Option<String>,
}

#[derive(Deserialize)]
struct OpaStatus {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<u16>,
}

fn opa_verdict(
    result: Option<&Value>,
    request: &PolicyRequest,
) -> Result<ValidationResponse, EvalError> {
    let result = result.ok_or_else(|| {
        EvalError::MalformedOutput(
            "the entrypoint is undefined; an OPA policy must evaluate to an object with a \
             `response`"
                .into(),
        )
    })?;
    let response = result.get("response").ok_or_else(|| {
        EvalError::MalformedOutput(format!(
            "the entrypoint's value has no `response` (it is {})",
            type_name(result)
        ))
    })?;
    let response = OpaResponse::deserialize(response).map_err(|e| {
        EvalError::MalformedOutput(format!("`response` is not an AdmissionResponse: {e}"))
    })?;
    let mutated_object = match response.patch {
        None => None,
        Some(patch) => Some(apply_patch(
            &patch,
            response.patch_type.as_deref(),
            request,
        )?),
    };
    let status = response.status;
    Ok(ValidationResponse {
        accepted: response.allowed,
        message: status.as_ref().and_then(|s| s.message.clone()),
        code: status.as_ref().and_then(|s| s.code),
        mutated_object,
        audit_annotations: response.audit_annotations,
        warnings: response.warnings,
    })
}

/// Apply an AdmissionResponse's base64 JSONPatch to the request's object.
fn apply_patch(
    patch: &str,
    patch_type: Option<&str>,
    request: &PolicyRequest,
) -> Result<Value, EvalError> {
    if let Some(t) = patch_type.filter(|t| *t != "JSONPatch") {
        return Err(EvalError::MalformedOutput(format!(
            "patchType {t:?} is not JSONPatch"
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| EvalError::MalformedOutput(format!("`patch` is not base64: {e}")))?;
    let patch: json_patch::Patch = serde_json::from_slice(&bytes)
        .map_err(|e| EvalError::MalformedOutput(format!("`patch` is not a JSON patch: {e}")))?;
    let mut object = match request.admission() {
        Some(r) => r.get("object").cloned().unwrap_or(Value::Null),
        None => request.json().clone(),
    };
    json_patch::patch(&mut object, &patch).map_err(|e| {
        EvalError::MalformedOutput(format!("`patch` does not apply to the object: {e}"))
    })?;
    Ok(object)
}

fn accepted() -> ValidationResponse {
    ValidationResponse {
        accepted: true,
        ..Default::default()
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn admission() -> PolicyRequest {
        PolicyRequest::Admission(
            json!({"uid": "u", "namespace": "team-a", "object": {"metadata": {"name": "p"}}}),
        )
    }

    fn context(namespaces: Vec<Value>) -> ContextData {
        ContextData {
            lists: vec![crate::capabilities::ContextResourceList {
                api_version: "v1".into(),
                kind: "Namespace".into(),
                plural: "namespaces".into(),
                objects: std::sync::Arc::new(namespaces),
                revision: 1,
            }],
            inventory: r#"{"cluster":{}}"#.into(),
        }
    }

    #[test]
    fn gatekeeper_input_and_data() {
        let settings = Settings::new(json!({"labels": ["a"]}));
        let p = prepare(RegoMode::Gatekeeper, &admission(), &settings, None).unwrap();
        let input: Value = serde_json::from_slice(&p.input).unwrap();
        assert_eq!(input["parameters"], json!({"labels": ["a"]}));
        assert_eq!(input["review"]["uid"], "u");
        assert_eq!(p.data.as_deref(), Some(&b"{}"[..]));
        let ns = json!({"metadata": {"name": "team-a", "labels": {"env": "prod"}}});
        let context = context(vec![ns.clone()]);
        let p = prepare(
            RegoMode::Gatekeeper,
            &admission(),
            &settings,
            Some(&context),
        )
        .unwrap();
        let data: Value = serde_json::from_slice(p.data.as_deref().unwrap()).unwrap();
        assert_eq!(data, json!({"inventory": {"cluster": {}}}));
        let input: Value = serde_json::from_slice(&p.input).unwrap();
        assert_eq!(input["review"]["namespaceObject"], ns);
        let raw = PolicyRequest::Raw(json!({}));
        assert!(matches!(
            prepare(RegoMode::Gatekeeper, &raw, &settings, None),
            Err(EvalError::Unsupported(_))
        ));
    }

    #[test]
    fn opa_input_and_data() {
        let settings = Settings::new(json!({"allowed": ["x"], "kubernetes": "mine"}));
        let p = prepare(RegoMode::Opa, &admission(), &settings, None).unwrap();
        let input: Value = serde_json::from_slice(&p.input).unwrap();
        assert_eq!(
            input["request"]["object"],
            json!({"metadata": {"name": "p"}})
        );
        let data: Value = serde_json::from_slice(p.data.as_deref().unwrap()).unwrap();
        assert_eq!(data["allowed"], json!(["x"]));

        let mut inventory = context(vec![]);
        inventory.inventory = r#"{"namespaces":{"default":{}}}"#.into();
        let p = prepare(RegoMode::Opa, &admission(), &settings, Some(&inventory)).unwrap();
        let data: Value = serde_json::from_slice(p.data.as_deref().unwrap()).unwrap();
        assert_eq!(
            data,
            json!({"kubernetes": {"namespaces": {"default": {}}}, "allowed": ["x"]})
        );
        let empty = Settings::default();
        let p = prepare(RegoMode::Opa, &admission(), &empty, Some(&inventory)).unwrap();
        let data: Value = serde_json::from_slice(p.data.as_deref().unwrap()).unwrap();
        assert_eq!(data, json!({"kubernetes": {"namespaces": {"default": {}}}}));
    }

    #[test]
    fn gatekeeper_violations_deny_with_joined_messages() {
        let req = admission();
        let ok = interpret(RegoMode::Gatekeeper, &req, br#"[{"result": []}]"#).unwrap();
        assert!(ok.accepted);
        let undefined = interpret(RegoMode::Gatekeeper, &req, b"[]").unwrap();
        assert!(undefined.accepted);
        let denied = interpret(
            RegoMode::Gatekeeper,
            &req,
            br#"[{"result": [{"msg": "one"}, {"details": {}}, {"msg": "two"}]}]"#,
        )
        .unwrap();
        assert!(!denied.accepted);
        assert_eq!(denied.message.as_deref(), Some("one, two"));
        let err = interpret(RegoMode::Gatekeeper, &req, br#"[{"result": true}]"#).unwrap_err();
        assert!(err.to_string().contains("set of violations"), "{err}");
    }

    #[test]
    fn opa_response_is_the_verdict() {
        let req = admission();
        let denied = interpret(
            RegoMode::Opa,
            &req,
            br#"[{"result": {"response": {"uid": "x", "allowed": false, "status": {"message": "no", "code": 403}, "warnings": ["w"], "auditAnnotations": {"k": "v"}}}}]"#,
        )
        .unwrap();
        assert!(!denied.accepted);
        assert_eq!(denied.message.as_deref(), Some("no"));
        assert_eq!(denied.code, Some(403));
        assert_eq!(denied.warnings, Some(vec!["w".to_string()]));
        assert_eq!(
            denied.audit_annotations,
            Some([("k".to_string(), "v".to_string())].into())
        );

        let patch = base64::engine::general_purpose::STANDARD
            .encode(r#"[{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]"#);
        let result = format!(
            r#"[{{"result": {{"response": {{"allowed": true, "patchType": "JSONPatch", "patch": "{patch}"}}}}}}]"#
        );
        let mutated = interpret(RegoMode::Opa, &req, result.as_bytes()).unwrap();
        assert_eq!(
            mutated.mutated_object,
            Some(json!({"metadata": {"name": "p", "labels": {"a": "b"}}}))
        );

        for bad in [
            &b"[]"[..],
            br#"[{"result": {"allowed": true}}]"#,
            br#"[{"result": {"response": {"status": {}}}}]"#,
            b"{",
        ] {
            let err = interpret(RegoMode::Opa, &req, bad).unwrap_err();
            assert!(matches!(err, EvalError::MalformedOutput(_)), "{err}");
        }
    }

    #[test]
    fn a_mode_is_required() {
        assert!(
            require(None)
                .unwrap_err()
                .to_string()
                .contains("executionMode")
        );
        assert_eq!(require(Some(ExecutionMode::Opa)).unwrap(), RegoMode::Opa);
    }
}
