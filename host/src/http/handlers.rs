//! Route handlers. Every failure is answered as JSON; nothing here panics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::api_error::{ApiError, json_response};
use super::body::{LimitedBody, read_limited};
use portcullis_adapters::{AdmissionText, PolicyRequest};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::admission::{ADMISSION_API_VERSION, ADMISSION_KIND, AdmissionReviewResponse};
use crate::evaluation::{AppState, Endpoint, evaluate};
use crate::policy_set::PolicyState;

type PolicyId = Result<Path<String>, PathRejection>;

/// `POST /validate/{id}`.
pub(crate) async fn validate(
    State(state): State<Arc<AppState>>,
    id: PolicyId,
    request: Request,
) -> Response {
    review(&state, id, request, Endpoint::Validate).await
}

/// `POST /audit/{id}`.
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    id: PolicyId,
    request: Request,
) -> Response {
    review(&state, id, request, Endpoint::Audit).await
}

/// `POST /validate_raw/{id}`.
pub(crate) async fn validate_raw(
    State(state): State<Arc<AppState>>,
    id: PolicyId,
    request: Request,
) -> Response {
    let result = async {
        let id = policy_id(id)?;
        let body = body(&state, request).await?;
        let mut document = json_object(body.bytes.clone())?;
        let request = document
            .remove("request")
            .ok_or_else(|| ApiError::bad_request("the body has no \"request\" member"))?;
        evaluate(
            &state,
            &id,
            Endpoint::ValidateRaw,
            PolicyRequest::Raw(request),
        )
        .await
    }
    .await;
    match result {
        Ok(response) => json_response(StatusCode::OK, &serde_json::json!({ "response": response })),
        Err(e) => e.into_response(),
    }
}

async fn review(state: &AppState, id: PolicyId, request: Request, endpoint: Endpoint) -> Response {
    let result = async {
        let id = policy_id(id)?;
        let body = body(state, request).await?;
        let request = admission_request(&body.bytes)?;
        evaluate(state, &id, endpoint, PolicyRequest::AdmissionText(request)).await
    }
    .await;
    match result {
        Ok(response) => json_response(StatusCode::OK, &AdmissionReviewResponse::new(response)),
        Err(e) => e.into_response(),
    }
}

fn policy_id(id: PolicyId) -> Result<String, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(format!("invalid policy id: {e}")))?;
    tracing::Span::current().record("policy_id", id.as_str());
    Ok(id)
}

/// The body, read with the `--max-body-bytes` limit and the body budget;
/// keep it until the request is answered.
async fn body(state: &AppState, request: Request) -> Result<LimitedBody, ApiError> {
    let (parts, body) = request.into_parts();
    read_limited(
        &parts.headers,
        body,
        state.max_body_bytes,
        &state.body_budget,
    )
    .await
}

fn json_object(body: Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("request body is empty"));
    }
    match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("malformed JSON: {e}"))),
    }
}

/// The members of an AdmissionReview envelope. The request stays text: it
/// is checked to be well-formed JSON but no tree is built for it.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
}

/// Checks the AdmissionReview envelope in `body` and returns its `request`.
fn admission_request(body: &[u8]) -> Result<AdmissionText, ApiError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    match start.map(|i| body[i]) {
        None => return Err(ApiError::bad_request("request body is empty")),
        Some(b'{') => {}
        Some(_) => return Err(ApiError::bad_request("request body must be a JSON object")),
    }
    let review: Envelope<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let string =
        |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok());
    let api_version = string(review.api_version);
    let api_version = api_version.as_deref();
    if api_version != Some(ADMISSION_API_VERSION) {
        return Err(ApiError::bad_request(format!(
            "unsupported apiVersion {}: expected {ADMISSION_API_VERSION}",
            api_version.map_or("(missing)".to_string(), |v| format!("{v:?}"))
        )));
    }
    let kind = string(review.kind);
    let kind = kind.as_deref();
    if kind != Some(ADMISSION_KIND) {
        return Err(ApiError::bad_request(format!(
            "unsupported kind {}: expected {ADMISSION_KIND}",
            kind.map_or("(missing)".to_string(), |v| format!("{v:?}"))
        )));
    }
    let request = review
        .request
        .filter(|r| r.get() != "null")
        .ok_or_else(|| ApiError::bad_request("the AdmissionReview has no request"))?;
    AdmissionText::new(request.to_owned()).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Readiness<'a> {
    ready: bool,
    config_digest: &'a str,
    generation: u64,
    policies: BTreeMap<&'a str, PolicyReport<'a>>,
    /// The watch caches of context-aware policies, by `apiVersion/kind`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    context_aware_caches: BTreeMap<String, crate::capabilities::WatchState>,
}

#[derive(Serialize)]
#[serde(rename_all_fields = "camelCase", tag = "state")]
enum PolicyReport<'a> {
    #[serde(rename = "loaded")]
    Loaded {
        module: &'a str,
        module_digest: &'a str,
        mode: &'static str,
    },
    /// A policy group: state `loaded` too, with its members.
    #[serde(rename = "loaded")]
    Group {
        expression: &'a str,
        members: BTreeMap<&'a str, MemberReport<'a>>,
        mode: &'static str,
    },
    #[serde(rename = "error")]
    Error {
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        module: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        module_digest: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mode: Option<&'static str>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MemberReport<'a> {
    module: &'a str,
    module_digest: &'a str,
}

/// `GET /readiness`: 200 once the initial load is done, with every policy's state.
pub(crate) async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.ready.load(Ordering::Acquire);
    let set = state.policies.load_full();
    let policies = set
        .policies
        .iter()
        .map(|(id, policy)| {
            let report = match policy {
                PolicyState::Loaded(p) => PolicyReport::Loaded {
                    module: &p.config.module,
                    module_digest: &p.module_digest,
                    mode: p.config.policy_mode.as_str(),
                },
                PolicyState::Group(g) => PolicyReport::Group {
                    expression: &g.config.expression,
                    members: g
                        .members
                        .iter()
                        .map(|(name, p)| {
                            let report = MemberReport {
                                module: &p.config.module,
                                module_digest: &p.module_digest,
                            };
                            (name.as_str(), report)
                        })
                        .collect(),
                    mode: g.config.policy_mode.as_str(),
                },
                PolicyState::Failed(f) => PolicyReport::Error {
                    reason: &f.reason,
                    module: f.module.as_deref(),
                    module_digest: f.module_digest.as_deref(),
                    mode: f.mode.map(|m| m.as_str()),
                },
            };
            (id.as_str(), report)
        })
        .collect();
    let context_aware_caches = state
        .host_services
        .get()
        .map(|services| {
            services
                .kubernetes()
                .watches()
                .iter()
                .map(|w| (w.resource().to_string(), w.state()))
                .collect()
        })
        .unwrap_or_default();
    let body = Readiness {
        ready,
        config_digest: &set.config_digest,
        generation: set.generation,
        policies,
        context_aware_caches,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// `GET /livez`.
pub(crate) async fn livez() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// `GET /metrics`: Prometheus/OpenMetrics text.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.record_scheduler(state.scheduler.stats());
    match state.metrics.encode() {
        Ok(text) => portcullis_telemetry::metrics::metrics_response(Ok(text)).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
        .into_response(),
    }
}

/// Unknown path.
pub(crate) async fn not_found(uri: Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
    .into_response()
}

/// Known path, wrong method.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn envelope_checks() {
        let good = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u"}});
        let bytes = |v: Value| serde_json::to_vec(&map(v)).unwrap();
        assert_eq!(
            admission_request(&bytes(good)).unwrap().tree(),
            &json!({"uid": "u"})
        );
        let cases = [
            (
                json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}}),
                "apiVersion",
            ),
            (
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {"uid": "u"}}),
                "kind",
            ),
            (
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
                "no request",
            ),
            (
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": 1}),
                "object",
            ),
            (
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}),
                "uid",
            ),
        ];
        for (doc, needle) in cases {
            let err = admission_request(&bytes(doc)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(
                err.message.contains(needle),
                "{} should mention {needle}",
                err.message
            );
        }
    }

    #[test]
    fn envelope_body_checks() {
        for (body, needle) in [
            (&b"  "[..], "empty"),
            (b"{nope", "malformed JSON"),
            (b"[1]", "object"),
            (b" 7", "object"),
        ] {
            let err = admission_request(body).unwrap_err();
            assert!(err.message.contains(needle), "{}", err.message);
        }
    }

    #[test]
    fn body_checks() {
        assert!(
            json_object(Bytes::from_static(b"  "))
                .unwrap_err()
                .message
                .contains("empty")
        );
        assert!(
            json_object(Bytes::from_static(b"{nope"))
                .unwrap_err()
                .message
                .contains("malformed JSON")
        );
        assert!(
            json_object(Bytes::from_static(b"[1]"))
                .unwrap_err()
                .message
                .contains("object")
        );
    }

    mod properties {
        use super::*;
        use crate::test_support::{json_object as any_object, json_value};
        use proptest::prelude::*;

        fn api_version() -> impl Strategy<Value = Option<Value>> {
            prop_oneof![
                4 => Just(Some(json!(ADMISSION_API_VERSION))),
                1 => Just(None),
                1 => Just(Some(json!("admission.k8s.io/v1beta1"))),
                1 => json_value().prop_map(Some),
            ]
        }

        fn kind() -> impl Strategy<Value = Option<Value>> {
            prop_oneof![
                4 => Just(Some(json!(ADMISSION_KIND))),
                1 => Just(None),
                1 => json_value().prop_map(Some),
            ]
        }

        /// A `request`: usually an object with a uid of some kind.
        fn request() -> impl Strategy<Value = Option<Value>> {
            let uid = prop_oneof![
                Just(None),
                Just(Some(json!(""))),
                "[a-f0-9-]{1,36}".prop_map(|u| Some(json!(u))),
                json_value().prop_map(Some),
            ];
            prop_oneof![
                4 => (any_object(), uid).prop_map(|(mut object, uid)| {
                    if let Some(uid) = uid {
                        object["uid"] = uid;
                    }
                    Some(object)
                }),
                1 => Just(None),
                1 => json_value().prop_map(Some),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any bytes: a JSON object or a 400, never a panic.
            #[test]
            fn any_body_parses_or_is_a_bad_request(body in prop::collection::vec(any::<u8>(), 0..256)) {
                if let Err(e) = admission_request(&body) {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                }
                match json_object(Bytes::from(body)) {
                    Ok(map) => prop_assert!(map.len() < 256),
                    Err(e) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
                }
            }

            /// An envelope is accepted exactly when it is a v1 AdmissionReview
            /// whose request is an object with a non-empty string uid, and
            /// then the request is handed on unchanged.
            #[test]
            fn envelopes_are_accepted_exactly_when_valid(
                api_version in api_version(),
                kind in kind(),
                request in request(),
                extra in any_object(),
            ) {
                let mut review = match extra {
                    Value::Object(map) => map,
                    _ => unreachable!(),
                };
                for (key, value) in [("apiVersion", &api_version), ("kind", &kind), ("request", &request)] {
                    match value {
                        Some(value) => review.insert(key.to_string(), value.clone()),
                        None => review.remove(key),
                    };
                }
                let valid = api_version == Some(json!(ADMISSION_API_VERSION))
                    && kind == Some(json!(ADMISSION_KIND))
                    && request.as_ref().is_some_and(|r| {
                        r.is_object() && r["uid"].as_str().is_some_and(|u| !u.is_empty())
                    });
                // Through the bytes, as the handler sees it.
                let bytes = Bytes::from(serde_json::to_vec(&review).unwrap());
                let result = admission_request(&bytes);
                match result {
                    Ok(parsed) => {
                        prop_assert!(valid, "accepted an invalid envelope: {:?}", review);
                        prop_assert_eq!(Some(parsed.tree().clone()), request);
                    }
                    Err(e) => {
                        prop_assert!(!valid, "rejected a valid envelope: {}", e.message);
                        prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                    }
                }
            }
        }
    }
}
