//! Evaluating a policy group: its CEL expression decides which members run.
//!
//! A group is one scheduling unit: it takes one worker from the scheduler,
//! under the group's id, and its members run one after the other on that
//! worker as the expression calls them. Sequential is what short-circuiting
//! needs (`a() || b()` must know `a` before deciding on `b`), and one unit
//! keeps a group from taking several workers from other policies.
//! Each member runs in a fresh instance with its own settings, deadline and
//! capabilities, exactly as a policy does.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use portcullis_adapters::PolicyRequest;
use tracing::{debug, info_span, warn};

use super::{AppState, Endpoint, RequestFacts, accept_always, on_worker};
use crate::admission::limits::MAX_MESSAGE_BYTES;
use crate::admission::{
    AdmissionResponse, AdmissionStatus, StatusCause, StatusDetails, cap_text,
    evaluation_error_response, post_process,
};
use crate::http::ApiError;
use crate::metrics::EvaluationLabels;
use crate::policy_set::{LoadedGroup, member_id};
use crate::scheduler::ScheduleError;

/// Upstream's cause for a member that answered with a mutation.
const MUTATION_NOT_ALLOWED: &str = "mutation is not allowed inside of policy group";

/// How one member call ended.
enum MemberOutcome {
    Accepted,
    Denied(Option<String>),
    Mutated,
    Failed { kind: &'static str, message: String },
}

/// One member call, in the order the expression made them.
struct MemberRun {
    name: String,
    outcome: MemberOutcome,
    elapsed: Duration,
}

impl MemberRun {
    fn passed(&self) -> bool {
        matches!(self.outcome, MemberOutcome::Accepted)
    }
}

/// Answers a request with policy group `group`.
pub(super) async fn answer(
    state: &AppState,
    group: Arc<LoadedGroup>,
    endpoint: Endpoint,
    request: PolicyRequest,
    facts: RequestFacts,
    mut labels: EvaluationLabels,
) -> Result<AdmissionResponse, ApiError> {
    let id = group.id.as_str();
    if let Some(response) = accept_always(state, endpoint, &facts, &mut labels) {
        return Ok(response);
    }

    let job_group = Arc::clone(&group);
    let outcome = on_worker(state, id, endpoint, &facts.uid, move |handoff| {
        handoff.deliver(run_group(&job_group, request));
    })
    .await?;
    let Some(((result, runs), elapsed)) = outcome else {
        labels.error = "panic".into();
        state.metrics.record_evaluation(&labels, Duration::ZERO);
        warn!(policy_id = id, uid = %facts.uid, "policy group evaluation task failed");
        let response =
            evaluation_error_response(&facts.uid, id, &ScheduleError::Panicked.to_string());
        return Ok(enforce(&group, endpoint, response));
    };

    for run in &runs {
        let mut member_labels = labels.clone();
        member_labels.policy = member_id(id, &run.name);
        member_labels.mode = "protect".into();
        member_labels.accepted = run.passed().to_string();
        member_labels.mutated = matches!(run.outcome, MemberOutcome::Mutated).to_string();
        if let MemberOutcome::Failed { kind, .. } = &run.outcome {
            member_labels.error = (*kind).into();
        }
        state.metrics.record_evaluation(&member_labels, run.elapsed);
    }

    let (response, outcome) = group_response(&group, &facts.uid, result, &runs);
    labels.accepted = outcome.accepted.to_string();
    if let Some(kind) = outcome.error {
        labels.error = kind.into();
    }
    state.metrics.record_evaluation(&labels, elapsed);
    Ok(enforce(&group, endpoint, response))
}

/// The group's mode applies to what the API server sees; `/audit` gets the
/// group's own verdict.
fn enforce(
    group: &LoadedGroup,
    endpoint: Endpoint,
    response: AdmissionResponse,
) -> AdmissionResponse {
    match endpoint {
        Endpoint::Audit => response,
        Endpoint::Validate | Endpoint::ValidateRaw => post_process(response, &group.behaviour()),
    }
}

/// The group's own verdict on `request` (before its mode applies), without
/// the server around it: no scheduling, no metrics. Blocks while members
/// run; for callers such as `portcullis run`.
pub fn evaluate_group(
    group: &Arc<LoadedGroup>,
    uid: &str,
    request: PolicyRequest,
) -> AdmissionResponse {
    let (result, runs) = run_group(group, request);
    group_response(group, uid, result, &runs).0
}

/// What the metrics record of a group's answer.
struct GroupOutcome {
    accepted: bool,
    error: Option<&'static str>,
}

/// Evaluates the expression, running members on demand. Runs on a worker.
fn run_group(
    group: &Arc<LoadedGroup>,
    request: PolicyRequest,
) -> (Result<bool, String>, Vec<MemberRun>) {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let request = Arc::new(request);
    let call = {
        let group = Arc::clone(group);
        let runs = Arc::clone(&runs);
        move |name: &str| {
            // A failed member already fails the group closed: the members
            // CEL would still call (its `||` looks past an error) need not
            // run, nor add their deadlines to this request's.
            let failed = runs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|run: &MemberRun| matches!(run.outcome, MemberOutcome::Failed { .. }));
            if failed {
                return false;
            }
            let run = run_member(&group, name, &request);
            let passed = run.passed();
            runs.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(run);
            passed
        }
    };
    let result = group.expression.evaluate(Arc::new(call));
    let runs = std::mem::take(&mut *runs.lock().unwrap_or_else(PoisonError::into_inner));
    (result, runs)
}

fn run_member(group: &LoadedGroup, name: &str, request: &PolicyRequest) -> MemberRun {
    let _span = info_span!("group_member", policy_id = %group.id, member = name).entered();
    let started = Instant::now();
    let outcome = match group.members.get(name) {
        // The expression was checked at load to call members only.
        None => MemberOutcome::Failed {
            kind: "unknown_member",
            message: format!("{name} is not a member"),
        },
        Some(member) => {
            match member
                .module
                .validate(&member.eval_context(), request, &member.settings)
            {
                Ok(verdict) if verdict.accepted && verdict.mutated_object.is_some() => {
                    MemberOutcome::Mutated
                }
                Ok(verdict) if verdict.accepted => MemberOutcome::Accepted,
                Ok(verdict) => MemberOutcome::Denied(
                    verdict
                        .message
                        .map(|m| cap_text(m, MAX_MESSAGE_BYTES, "message")),
                ),
                Err(error) => MemberOutcome::Failed {
                    kind: error.kind(),
                    message: cap_text(error.to_string(), MAX_MESSAGE_BYTES, "message"),
                },
            }
        }
    };
    debug!(policy_id = %group.id, member = name, passed = matches!(outcome, MemberOutcome::Accepted), "group member verdict");
    MemberRun {
        name: name.to_string(),
        outcome,
        elapsed: started.elapsed(),
    }
}

/// The group's answer: the expression's value; on denial the group's
/// message and a cause per member that ran and did not pass. A member that
/// could not evaluate, or an expression error, fails the group closed.
fn group_response(
    group: &LoadedGroup,
    uid: &str,
    result: Result<bool, String>,
    runs: &[MemberRun],
) -> (AdmissionResponse, GroupOutcome) {
    let id = group.id.as_str();
    let failed = |kind| GroupOutcome {
        accepted: false,
        error: Some(kind),
    };
    if let Some((run, kind, message)) = runs.iter().find_map(|run| match &run.outcome {
        MemberOutcome::Failed { kind, message } => Some((run, *kind, message)),
        _ => None,
    }) {
        warn!(policy_id = id, uid, member = %run.name, error = %message, "policy group member failed");
        let cause = format!("member {}: {message}", run.name);
        return (evaluation_error_response(uid, id, &cause), failed(kind));
    }
    let allowed = match result {
        Ok(allowed) => allowed,
        Err(error) => {
            warn!(policy_id = id, uid, %error, "policy group expression failed");
            let cause = format!("expression: {error}");
            return (
                evaluation_error_response(uid, id, &cause),
                failed("expression"),
            );
        }
    };
    let outcome = GroupOutcome {
        accepted: allowed,
        error: None,
    };
    if allowed {
        return (AdmissionResponse::allow(uid), outcome);
    }
    let causes = runs
        .iter()
        .filter_map(|run| {
            let message = match &run.outcome {
                MemberOutcome::Accepted | MemberOutcome::Failed { .. } => return None,
                MemberOutcome::Mutated => Some(MUTATION_NOT_ALLOWED.to_string()),
                MemberOutcome::Denied(message) => message.clone(),
            };
            Some(StatusCause {
                field: Some(format!("spec.policies.{}", run.name)),
                message,
                reason: None,
            })
        })
        .collect();
    let response = AdmissionResponse {
        uid: uid.to_string(),
        allowed: false,
        status: Some(AdmissionStatus {
            message: Some(cap_text(
                group.config.message.clone(),
                MAX_MESSAGE_BYTES,
                "message",
            )),
            code: None,
            details: Some(StatusDetails { causes }),
        }),
        ..AdmissionResponse::default()
    };
    (response, outcome)
}
