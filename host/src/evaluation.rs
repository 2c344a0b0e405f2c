//! The admission service: look up the policy in the current snapshot,
//! wait for a worker, evaluate on a blocking thread, build the response and
//! record metrics.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::http::StatusCode;
use portcullis_adapters::{PolicyRequest, ValidationResponse};
use portcullis_config::PolicyMode;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, warn};

use crate::admission::{
    AdmissionResponse, PolicyBehaviour, build_admission_response, evaluation_error_response,
    post_process,
};
use crate::http::ApiError;
use crate::metrics::{EvaluationLabels, Metrics};
use crate::policy_set::{PolicySet, PolicyState};

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

/// State shared by every request.
pub struct AppState {
    /// The current policy set; swapped on reload.
    pub policies: Arc<ArcSwap<PolicySet>>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Bounds concurrent evaluations to `worker_count`.
    pub workers: Arc<Semaphore>,
    /// Size of the worker pool, for messages.
    pub worker_count: usize,
    /// How long a request may wait for a worker.
    pub queue_timeout: Duration,
    /// Requests from this namespace are allowed without evaluation.
    pub always_accept_namespace: Option<String>,
    /// Set once the initial policy set is loaded and the listener is up.
    pub ready: Arc<AtomicBool>,
    /// The host capabilities' services, for the readiness report of the
    /// context-aware caches; set once they are created.
    pub host_services: std::sync::OnceLock<Arc<crate::capabilities::HostServices>>,
}

/// Request facts used for metrics and logs.
struct RequestFacts {
    uid: String,
    operation: String,
    resource_kind: String,
    namespace: Option<String>,
}

impl RequestFacts {
    fn of(endpoint: Endpoint, request: &Value) -> Self {
        let text = |pointer: &str| {
            request
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        match endpoint {
            Endpoint::ValidateRaw => Self {
                uid: text("/uid").unwrap_or_default(),
                operation: "raw".into(),
                resource_kind: String::new(),
                namespace: None,
            },
            Endpoint::Validate | Endpoint::Audit => Self {
                uid: text("/uid").unwrap_or_default(),
                operation: text("/operation").unwrap_or_default(),
                resource_kind: text("/kind/kind").unwrap_or_default(),
                namespace: text("/namespace"),
            },
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
pub async fn evaluate(
    state: &AppState,
    id: &str,
    endpoint: Endpoint,
    request: Value,
) -> Result<AdmissionResponse, ApiError> {
    let response = answer(state, id, endpoint, request).await?;
    let span = tracing::Span::current();
    span.record("allowed", response.allowed);
    span.record("mutated", response.patch.is_some());
    Ok(response)
}

async fn answer(
    state: &AppState,
    id: &str,
    endpoint: Endpoint,
    request: Value,
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
        operation: facts.operation.clone(),
        resource_kind: facts.resource_kind.clone(),
        accepted: "false".into(),
        mutated: "false".into(),
        error: String::new(),
    };

    let policy = match policy {
        PolicyState::Loaded(policy) => policy,
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

    if let (Some(always), Some(namespace)) = (&state.always_accept_namespace, &facts.namespace)
        && always == namespace
        && endpoint != Endpoint::ValidateRaw
    {
        labels.accepted = "true".into();
        state.metrics.record_evaluation(&labels, Duration::ZERO);
        debug!(policy_id = id, uid = %facts.uid, namespace, "namespace is always accepted");
        return Ok(AdmissionResponse::allow(facts.uid));
    }

    let permit = match tokio::time::timeout(
        state.queue_timeout,
        Arc::clone(&state.workers).acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        Ok(Err(_closed)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the policy-server is shutting down",
            ));
        }
        Err(_elapsed) => {
            state.metrics.record_saturation_rejection();
            warn!(policy_id = id, uid = %facts.uid, "rejected: all workers busy");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "policy-server saturated: all {} workers stayed busy for {:?}; retry later",
                    state.worker_count, state.queue_timeout
                ),
            ));
        }
    };

    let in_flight = state.metrics.in_flight();
    let started = Instant::now();
    let blocking_policy = Arc::clone(&policy);
    let span = tracing::Span::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _span = span.entered();
        let policy_request = match endpoint {
            Endpoint::ValidateRaw => PolicyRequest::Raw(request),
            Endpoint::Validate | Endpoint::Audit => PolicyRequest::Admission(request),
        };
        let verdict = blocking_policy.module.validate(
            &blocking_policy.eval_context(),
            &policy_request,
            &blocking_policy.settings,
        );
        let request = match policy_request {
            PolicyRequest::Raw(v) | PolicyRequest::Admission(v) => v,
        };
        (verdict, request)
    })
    .instrument(tracing::Span::current())
    .await;
    let elapsed = started.elapsed();
    drop(in_flight);

    let response = match outcome {
        Ok((Ok(verdict), request)) => {
            labels.accepted = verdict.accepted.to_string();
            labels.mutated = verdict.mutated_object.is_some().to_string();
            let original = match endpoint {
                Endpoint::ValidateRaw => Some(&request),
                Endpoint::Validate | Endpoint::Audit => request.get("object"),
            };
            log_verdict(id, &facts.uid, &verdict);
            build_admission_response(&facts.uid, original, verdict)
        }
        Ok((Err(error), _)) => {
            labels.error = error.kind().into();
            warn!(policy_id = id, uid = %facts.uid, error = %error, "policy evaluation failed");
            evaluation_error_response(&facts.uid, id, &error.to_string())
        }
        Err(join_error) => {
            labels.error = "panic".into();
            warn!(policy_id = id, uid = %facts.uid, error = %join_error, "policy evaluation task failed");
            evaluation_error_response(&facts.uid, id, "the evaluation task failed unexpectedly")
        }
    };
    state.metrics.record_evaluation(&labels, elapsed);

    Ok(match endpoint {
        Endpoint::Audit => response,
        Endpoint::Validate | Endpoint::ValidateRaw => post_process(response, &policy.behaviour()),
    })
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
