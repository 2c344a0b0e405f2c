//! The admission service: look up the policy in the current snapshot,
//! wait for a worker ([`crate::scheduler`]), evaluate on an evaluation
//! thread, build the (capped) response and record metrics. Policy groups
//! take the same path through `group`.

mod group;

pub use group::evaluate_group;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::StatusCode;
use portcullis_adapters::{PolicyRequest, ValidationResponse};
use portcullis_config::PolicyMode;
use serde_json::Value;
use tracing::{debug, warn};

use crate::admission::limits::{MAX_MESSAGE_BYTES, cap_verdict};
use crate::admission::{
    AdmissionResponse, PolicyBehaviour, ResponseLimits, build_admission_response_limited,
    cap_response, cap_text, evaluation_error_response, post_process,
};
use crate::http::ApiError;
use crate::metrics::{EvaluationLabels, Metrics, labels};
use crate::policy_set::{PolicySet, PolicyState};
use crate::scheduler::{Delivery, RequestClass, ScheduleError, Scheduler};

/// Which endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/validate/{id}`: full post-processing.
    Validate,
    /// `/audit/{id}`: the policy's own verdict.
    Audit,
    /// `/validate_raw/{id}`: any JSON, full post-processing.
    ValidateRaw,
}

impl Endpoint {
    /// The `request_origin` metrics label.
    pub fn origin(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Audit => "audit",
            Self::ValidateRaw => "validate_raw",
        }
    }

    /// Admission requests go before audit requests.
    pub fn class(self) -> RequestClass {
        match self {
            Self::Validate | Self::ValidateRaw => RequestClass::Admission,
            Self::Audit => RequestClass::Audit,
        }
    }
}

/// State shared by every request.
pub struct AppState {
    /// The current policy set; swapped on reload.
    pub policies: Arc<ArcSwap<PolicySet>>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Shares the evaluation workers between policies and endpoints.
    pub scheduler: Scheduler,
    /// Caps on the responses built from verdicts.
    pub response_limits: ResponseLimits,
    /// Largest request body read.
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once.
    pub(crate) body_budget: crate::http::body::BodyBudget,
    /// Requests from this namespace are allowed without evaluation.
    pub always_accept_namespace: Option<String>,
    /// Set once the initial policy set is loaded and the listener is up.
    pub ready: Arc<AtomicBool>,
    /// The host capabilities' services, for the readiness report of the
    /// context-aware caches; set once they are created.
    pub host_services: std::sync::OnceLock<Arc<crate::capabilities::HostServices>>,
}

/// Request facts used for metrics and logs. The metric labels are reduced
/// to bounded sets ([`labels`]).
struct RequestFacts {
    uid: String,
    operation: &'static str,
    resource_kind: &'static str,
    namespace: Option<String>,
}

impl RequestFacts {
    fn of(endpoint: Endpoint, request: &PolicyRequest) -> Self {
        let raw = |uid: &str| Self {
            uid: uid.to_string(),
            operation: "raw",
            resource_kind: "",
            namespace: None,
        };
        match (endpoint, request) {
            (Endpoint::ValidateRaw, _) | (_, PolicyRequest::Raw(_)) => raw(request
                .json()
                .pointer("/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()),
            // Read from the text's top level: no tree is built for this.
            (_, PolicyRequest::AdmissionText(text)) => Self {
                uid: text.uid().to_string(),
                operation: labels::operation(text.operation()),
                resource_kind: labels::resource_kind(text.kind()),
                namespace: text.namespace().map(str::to_string),
            },
            (_, PolicyRequest::Admission(request)) => {
                let text = |pointer: &str| request.pointer(pointer).and_then(Value::as_str);
                Self {
                    uid: text("/uid").unwrap_or_default().to_string(),
                    operation: labels::operation(text("/operation")),
                    resource_kind: labels::resource_kind(text("/kind/kind")),
                    namespace: text("/namespace").map(str::to_string),
                }
            }
        }
    }
}

/// Evaluates `request` (the `request` member of the body) with policy `id`,
/// and records the answer (`allowed`, `mutated`: it carries a patch) on the
/// request span.
///
/// Only an unknown policy or a saturated server is an `Err`; every policy
/// failure (load error, timeout, trap, bad output) is an AdmissionResponse
/// with `allowed: false` and code 500, so the API server gets a verdict.
/// Every response is capped ([`crate::admission::limits`]).
pub async fn evaluate(
    state: &AppState,
    id: &str,
    endpoint: Endpoint,
    request: PolicyRequest,
) -> Result<AdmissionResponse, ApiError> {
    let response = cap_response(answer(state, id, endpoint, request).await?);
    let span = tracing::Span::current();
    span.record("allowed", response.allowed);
    span.record("mutated", response.patch.is_some());
    Ok(response)
}

async fn answer(
    state: &AppState,
    id: &str,
    endpoint: Endpoint,
    request: PolicyRequest,
) -> Result<AdmissionResponse, ApiError> {
    let snapshot = state.policies.load_full();
    let policy = snapshot
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("policy {id:?} not found")))?;
    drop(snapshot);

    let facts = RequestFacts::of(endpoint, &request);
    tracing::Span::current().record("uid", facts.uid.as_str());
    let mut labels = EvaluationLabels {
        policy: id.to_string(),
        mode: policy.mode().unwrap_or_default().as_str().to_string(),
        request_origin: endpoint.origin().to_string(),
        operation: facts.operation.to_string(),
        resource_kind: facts.resource_kind.to_string(),
        accepted: "false".into(),
        mutated: "false".into(),
        error: String::new(),
    };

    let policy = match policy {
        PolicyState::Loaded(policy) => policy,
        PolicyState::Group(group) => {
            return group::answer(state, group, endpoint, request, facts, labels).await;
        }
        PolicyState::Failed(failed) => {
            labels.error = "load".into();
            state.metrics.record_evaluation(&labels, Duration::ZERO);
            let response = evaluation_error_response(
                &facts.uid,
                id,
                &format!("the policy failed to load: {}", failed.reason),
            );
            return Ok(match endpoint {
                Endpoint::Audit => response,
                Endpoint::Validate | Endpoint::ValidateRaw => post_process(
                    response,
                    &PolicyBehaviour {
                        policy_id: id,
                        mode: failed.mode.unwrap_or(PolicyMode::Protect),
                        allowed_to_mutate: false,
                        message: None,
                    },
                ),
            });
        }
    };

    if let Some(response) = accept_always(state, endpoint, &facts, &mut labels) {
        return Ok(response);
    }

    let blocking_policy = Arc::clone(&policy);
    // Shared with the job, so that the answer can come back before the job
    // has finished tearing its instance down.
    let request = Arc::new(request);
    let job_request = Arc::clone(&request);
    let outcome = on_worker(state, id, endpoint, &facts.uid, move |handoff| {
        blocking_policy.module.validate_then(
            &blocking_policy.eval_context(),
            &job_request,
            &blocking_policy.settings,
            |verdict| handoff.deliver(verdict),
        );
    })
    .await?;
    let (outcome, elapsed) = match outcome {
        Some((done, elapsed)) => (Ok(done), elapsed),
        None => (Err(ScheduleError::Panicked), Duration::ZERO),
    };

    let response = match outcome {
        Ok(Ok(verdict)) => {
            labels.accepted = verdict.accepted.to_string();
            labels.mutated = verdict.mutated_object.is_some().to_string();
            // Only a mutation needs the original (for its patch), and only
            // then is a request that came as text parsed into a tree.
            let original = match (&verdict.mutated_object, endpoint) {
                (None, _) => None,
                (Some(_), Endpoint::ValidateRaw) => Some(request.json()),
                (Some(_), Endpoint::Validate | Endpoint::Audit) => request.json().get("object"),
            };
            // Capped before it is logged: the log is bounded too.
            let verdict = cap_verdict(verdict);
            log_verdict(id, &facts.uid, &verdict);
            build_admission_response_limited(&facts.uid, original, verdict, &state.response_limits)
        }
        Ok(Err(error)) => {
            labels.error = error.kind().into();
            let cause = cap_text(error.to_string(), MAX_MESSAGE_BYTES, "message");
            warn!(policy_id = id, uid = %facts.uid, error = %cause, "policy evaluation failed");
            evaluation_error_response(&facts.uid, id, &cause)
        }
        Err(error) => {
            labels.error = "panic".into();
            warn!(policy_id = id, uid = %facts.uid, %error, "policy evaluation task failed");
            evaluation_error_response(&facts.uid, id, &error.to_string())
        }
    };
    state.metrics.record_evaluation(&labels, elapsed);

    Ok(match endpoint {
        Endpoint::Audit => response,
        Endpoint::Validate | Endpoint::ValidateRaw => post_process(response, &policy.behaviour()),
    })
}

/// The acceptance of a request from the namespace that is always accepted
/// (counted, without evaluation); `None` for any other request.
fn accept_always(
    state: &AppState,
    endpoint: Endpoint,
    facts: &RequestFacts,
    labels: &mut EvaluationLabels,
) -> Option<AdmissionResponse> {
    let always = endpoint != Endpoint::ValidateRaw
        && state.always_accept_namespace.is_some()
        && state.always_accept_namespace == facts.namespace;
    if !always {
        return None;
    }
    labels.accepted = "true".into();
    state.metrics.record_evaluation(labels, Duration::ZERO);
    debug!(policy_id = %labels.policy, uid = %facts.uid, "namespace is always accepted");
    Some(AdmissionResponse::allow(facts.uid.clone()))
}

/// Runs `job` on an evaluation worker under the scheduling unit `id`, in
/// the request's span and counted in flight; answers the result the job
/// hands to its [`Handoff`] and how long the job took to get it, or `None`
/// if it panicked (or never handed one over). The job may go on after the
/// hand-off (tearing its instance down) while the answer is sent. A server
/// with no worker free within the queue timeout is a counted 503.
async fn on_worker<T, F>(
    state: &AppState,
    id: &str,
    endpoint: Endpoint,
    uid: &str,
    job: F,
) -> Result<Option<(T, Duration)>, ApiError>
where
    F: FnOnce(Handoff<T>) + Send + 'static,
    T: Send + 'static,
{
    let metrics = Arc::clone(&state.metrics);
    let span = tracing::Span::current();
    let outcome = state
        .scheduler
        .run_delivering(id, endpoint.class(), move |delivery| {
            let _span = span.entered();
            let _in_flight = metrics.in_flight();
            job(Handoff {
                delivery,
                started: Instant::now(),
            });
        })
        .await;
    match outcome {
        Ok(done) => Ok(Some(done)),
        Err(ScheduleError::Panicked) => Ok(None),
        Err(error) => {
            if let ScheduleError::Saturated { limit, waited, .. } = &error {
                state
                    .metrics
                    .record_saturation_rejection(endpoint.origin(), limit.as_str());
                warn!(
                    policy_id = id,
                    uid,
                    limit = limit.as_str(),
                    ?waited,
                    "rejected: no worker within the queue timeout"
                );
            }
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                error.to_string(),
            ))
        }
    }
}

/// Where a job run by [`on_worker`] hands its result over.
struct Handoff<T> {
    delivery: Delivery<(T, Duration)>,
    started: Instant,
}

impl<T> Handoff<T> {
    /// Sends `value`, with the time since the job started, to the request.
    fn deliver(self, value: T) {
        let elapsed = self.started.elapsed();
        self.delivery.deliver((value, elapsed));
    }
}

fn log_verdict(id: &str, uid: &str, verdict: &ValidationResponse) {
    debug!(
        policy_id = id,
        uid,
        accepted = verdict.accepted,
        mutated = verdict.mutated_object.is_some(),
        message = verdict.message.as_deref().unwrap_or_default(),
        "policy verdict"
    );
}
