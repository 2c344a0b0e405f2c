//! Auditing one object: which policies apply, their verdicts, its report.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::Ordering;

use futures_util::StreamExt as _;
use futures_util::stream;
use kube::ResourceExt;
use kube::api::{DynamicObject, TypeMeta};
use serde_json::{Value, json};

use crate::client::Verdict;
use crate::conditions::Outcome as Match;
use crate::policies::AuditPolicy;
use crate::report::{self, Outcome, PolicyResult, Subject, Timestamp};
use crate::resources::PlannedResource;
use crate::review::{ObjectRef, cel_request, review_body};
use crate::scan::{Scanner, UnitState};

/// Whether a resource type is the core `namespaces`, whose objects are
/// matched against namespace selectors by their own labels.
fn is_namespace_type(planned: &PlannedResource) -> bool {
    planned.api_resource.group.is_empty() && planned.api_resource.plural == "namespaces"
}

impl Scanner {
    /// Audits `object` of type `planned` with the policies `candidates`
    /// (indices, already selected for the object's namespace).
    pub(crate) async fn audit_object(
        &self,
        mut object: DynamicObject,
        planned: &PlannedResource,
        candidates: &[usize],
        state: &UnitState,
    ) {
        let Some(uid) = object.metadata.uid.clone() else {
            return;
        };
        // The same object served by two groups (core and events.k8s.io
        // Events) is audited once.
        if !state
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.clone())
        {
            return;
        }
        let name = object.name_any();
        let namespace = object.namespace();
        let labels = object.labels().clone();
        let ar = &planned.api_resource;
        object.types = Some(TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        });
        let Ok(json) = serde_json::to_value(&object) else {
            return;
        };
        drop(object);
        let target = ObjectRef {
            api_resource: ar,
            name: &name,
            namespace: namespace.as_deref(),
            uid: &uid,
        };
        let policies: Vec<&AuditPolicy> = candidates
            .iter()
            .map(|i| &self.policies[*i])
            .filter(|p| {
                !is_namespace_type(planned)
                    || p.applies_in_namespace(&name, &labels, &self.config.controller_namespace)
            })
            .filter(|p| crate::selector::matches(p.object_selector.as_ref(), &labels))
            .collect();
        let request = policies
            .iter()
            .any(|p| !p.conditions.is_empty())
            .then(|| cel_request(&target));
        let mut results = Vec::new();
        let mut to_evaluate = Vec::new();
        for policy in policies {
            let matched = match &request {
                Some(request) => policy.conditions.evaluate(&json, request),
                None => Match::Match,
            };
            match matched {
                Match::Match => to_evaluate.push(policy),
                Match::NoMatch => {}
                Match::Error(e) => {
                    let outcome = if policy.failure_policy_ignore {
                        Outcome::Skip
                    } else {
                        Outcome::Error
                    };
                    results.push(result(policy, outcome, Some(e)));
                }
            }
        }
        if !to_evaluate.is_empty() {
            let body = match review_body(&target, &json) {
                Ok(b) => bytes::Bytes::from(b),
                Err(e) => {
                    tracing::warn!(%uid, error = %e, "cannot serialise the review");
                    return;
                }
            };
            drop(json);
            let verdicts: Vec<_> = stream::iter(to_evaluate)
                .map(|policy| {
                    let body = body.clone();
                    async move {
                        self.stats.evaluations.fetch_add(1, Ordering::Relaxed);
                        let verdict = self
                            .policy_servers
                            .audit(&policy.policy_server, &policy.id, body, policy.timeout)
                            .await;
                        (policy, verdict)
                    }
                })
                .buffer_unordered(self.config.parallel_policies.max(1))
                .collect()
                .await;
            for (policy, verdict) in verdicts {
                let (outcome, message) = match verdict {
                    Verdict::Allowed(m) => (Outcome::Pass, m),
                    Verdict::Denied(m) => (Outcome::Fail, m),
                    Verdict::Error(e) => {
                        tracing::debug!(policy = %policy.id, %uid, error = %e, "evaluation failed");
                        (Outcome::Error, Some(e))
                    }
                };
                results.push(result(policy, outcome, message));
            }
        }
        if results.is_empty() {
            // No policy applies: no report (a stored one is stale and goes
            // at the end of the run).
            return;
        }
        results.sort_by(|a, b| a.policy.cmp(&b.policy));
        self.stats.objects.fetch_add(1, Ordering::Relaxed);
        for r in &results {
            self.stats.result(r.outcome);
        }
        let subject = Subject {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
            name,
            namespace,
            uid,
        };
        if self.config.output_scan {
            print_scan_line(&subject, &results);
        }
        if let Some(store) = &self.store {
            let stored = state
                .stored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&subject.uid);
            let report = report::build(
                store.kind(),
                &subject,
                &results,
                |d| stored.as_ref().and_then(|s| s.timestamp_of(d)),
                Timestamp::now(),
            );
            if stored.is_some_and(|s| s.digest == report::managed_digest(&report)) {
                self.stats.reports_unchanged.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match store
                .apply(subject.namespace.as_deref(), &subject.uid, &report)
                .await
            {
                Ok(()) => {
                    self.stats.reports_written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.report_errors.fetch_add(1, Ordering::Relaxed);
                    self.mark_incomplete();
                    tracing::warn!(
                        kind = %subject.kind, namespace = ?subject.namespace, name = %subject.name,
                        error = %e, "cannot write the report"
                    );
                }
            }
        }
    }
}

fn result(policy: &AuditPolicy, outcome: Outcome, message: Option<String>) -> PolicyResult {
    PolicyResult {
        policy: policy.id.clone(),
        outcome,
        message,
        severity: policy.severity.clone(),
        category: policy.category.clone(),
        properties: policy.properties(),
    }
}

/// `--output-scan`: one JSON line per audited object on stdout.
fn print_scan_line(subject: &Subject, results: &[PolicyResult]) {
    let results: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut v = json!({"policy": r.policy, "result": r.outcome.as_str()});
            let fields: BTreeMap<&str, &Option<String>> = BTreeMap::from([
                ("message", &r.message),
                ("severity", &r.severity),
                ("category", &r.category),
            ]);
            for (k, field) in fields {
                if let Some(text) = field {
                    v[k] = json!(text);
                }
            }
            v
        })
        .collect();
    let line = json!({
        "apiVersion": subject.api_version,
        "kind": subject.kind,
        "namespace": subject.namespace,
        "name": subject.name,
        "uid": subject.uid,
        "results": results,
    });
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the audit.
    let _ = writeln!(out, "{line}");
}
