//! A policy's `matchConditions`: CEL expressions the API server evaluates
//! before it calls the webhook. The scanner evaluates them the same way, so
//! that an audit sends a policy exactly the objects admission would.
//!
//! Semantics (those of `admissionregistration.k8s.io/v1`): the conditions
//! are evaluated in order; if any is `false` the policy is not called; if
//! none is `false` but one fails to evaluate, the policy's `failurePolicy`
//! decides (`Fail`: an error, `Ignore`: skipped). The variables are
//! `object`, `oldObject` (`null` for the CREATE the scanner simulates) and
//! `request`. `authorizer` is not available (the scanner cannot ask on
//! behalf of whoever created the object): an expression using it fails to
//! evaluate.
//!
//! The interpreter is cel-rust (crate `cel`) with its `strings` and `lists`
//! extensions. Kubernetes-specific libraries (quantities, URLs, IPs,
//! `authorizer`) and timestamps are not available; such an expression is
//! an evaluation error, reported as such rather than guessed. Expressions
//! are bounded by the API server before they get here: a policy is only
//! audited once `active`, i.e. once the API server has accepted its webhook
//! configuration, whose matchConditions it checks for cost.

use std::sync::Arc;

use cel::{Context, Env, Program, Value as CelValue};
use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use serde_json::Value;

/// Longest expression accepted (the API server's own limit is a cost
/// estimate; this only keeps a hostile string from reaching the parser).
const MAX_EXPRESSION_LEN: usize = 64 * 1024;

/// The outcome of a policy's conditions for one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every condition is true: the policy is called.
    Match,
    /// A condition is false: the policy is not called (no result).
    NoMatch,
    /// No condition is false, one could not be evaluated.
    Error(String),
}

/// The compiled conditions of one policy.
pub struct MatchConditions {
    env: Arc<Env>,
    conditions: Vec<Compiled>,
}

struct Compiled {
    name: String,
    program: Result<Program, String>,
}

impl std::fmt::Debug for MatchConditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.conditions.iter().map(|c| &c.name))
            .finish()
    }
}

/// The CEL environment of every condition: the standard library and the
/// `strings` and `lists` extensions (what cel-rust has of Kubernetes' CEL).
fn environment() -> Arc<Env> {
    let mut env = Env::stdlib();
    // The extensions are static declarations; they fail only on a duplicate,
    // which cannot happen on a fresh environment, so a failure just leaves
    // the extension out (expressions using it then fail to evaluate).
    let _ = env.add_extension(cel::extensions::strings);
    let _ = env.add_extension(cel::extensions::lists);
    Arc::new(env)
}

impl MatchConditions {
    /// Compiles `conditions`. A condition that does not compile is kept as
    /// an evaluation error, as the API server would report it.
    pub fn compile(conditions: &[MatchCondition]) -> MatchConditions {
        let env = environment();
        let conditions = conditions
            .iter()
            .map(|c| Compiled {
                name: c.name.clone(),
                program: if c.expression.len() > MAX_EXPRESSION_LEN {
                    Err(format!("expression longer than {MAX_EXPRESSION_LEN} bytes"))
                } else {
                    env.compile(&c.expression).map_err(|e| e.to_string())
                },
            })
            .collect();
        MatchConditions { env, conditions }
    }

    /// Whether there are no conditions (every object matches).
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// Evaluates the conditions for `object` in the synthetic `request`.
    pub fn evaluate(&self, object: &Value, request: &Value) -> Outcome {
        if self.conditions.is_empty() {
            return Outcome::Match;
        }
        let variables = cel::to_value(object)
            .and_then(|object| cel::to_value(request).map(|request| (object, request)));
        let (object, request) = match variables {
            Ok(v) => v,
            Err(e) => return Outcome::Error(format!("cannot convert the object for CEL: {e}")),
        };
        let mut context = Context::with_env(Arc::clone(&self.env));
        context.add_variable_from_value("object", object);
        context.add_variable_from_value("oldObject", CelValue::Null);
        context.add_variable_from_value("request", request);
        let mut first_error = None;
        for condition in &self.conditions {
            let result = match &condition.program {
                Ok(program) => program.execute(&context).map_err(|e| e.to_string()),
                Err(e) => Err(format!("compilation failed: {e}")),
            };
            match result {
                Ok(CelValue::Bool(true)) => {}
                Ok(CelValue::Bool(false)) => return Outcome::NoMatch,
                Ok(other) => {
                    first_error.get_or_insert_with(|| {
                        format!(
                            "matchCondition {:?}: expression returned {other:?}, not a bool",
                            condition.name
                        )
                    });
                }
                Err(e) => {
                    first_error
                        .get_or_insert_with(|| format!("matchCondition {:?}: {e}", condition.name));
                }
            }
        }
        match first_error {
            Some(e) => Outcome::Error(e),
            None => Outcome::Match,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conditions(exprs: &[(&str, &str)]) -> MatchConditions {
        MatchConditions::compile(
            &exprs
                .iter()
                .map(|(name, expression)| MatchCondition {
                    name: name.to_string(),
                    expression: expression.to_string(),
                })
                .collect::<Vec<_>>(),
        )
    }

    fn pod(labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels}})
    }

    fn request() -> Value {
        json!({"operation": "CREATE", "namespace": "ns", "resource": {"group": "", "version": "v1", "resource": "pods"}})
    }

    #[test]
    fn all_true_matches_and_one_false_does_not() {
        let c = conditions(&[
            ("is-create", "request.operation == 'CREATE'"),
            (
                "labelled",
                "has(object.metadata.labels) && 'audit' in object.metadata.labels",
            ),
        ]);
        assert_eq!(
            c.evaluate(&pod(json!({"audit": "yes"})), &request()),
            Outcome::Match
        );
        assert_eq!(
            c.evaluate(&pod(json!({"other": "x"})), &request()),
            Outcome::NoMatch
        );
    }

    #[test]
    fn false_wins_over_errors_and_errors_win_over_true() {
        let c = conditions(&[
            ("broken", "object.nope.deeper == 1"),
            ("false", "request.namespace == 'elsewhere'"),
        ]);
        assert_eq!(c.evaluate(&pod(json!({})), &request()), Outcome::NoMatch);
        let c = conditions(&[("broken", "object.nope.deeper == 1"), ("true", "true")]);
        match c.evaluate(&pod(json!({})), &request()) {
            Outcome::Error(e) => assert!(e.contains("broken"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_bool_uncompilable_and_authorizer_are_errors() {
        for expr in [
            "'a string'",
            "object.metadata.name ==",
            "authorizer.group('').resource('pods').check('get').allowed()",
        ] {
            let c = conditions(&[("c", expr)]);
            assert!(
                matches!(c.evaluate(&pod(json!({})), &request()), Outcome::Error(_)),
                "{expr}"
            );
        }
    }

    #[test]
    fn string_extension_and_old_object_are_available() {
        let c = conditions(&[
            ("lower", "object.metadata.name.lowerAscii() == 'p'"),
            ("no-old", "oldObject == null"),
        ]);
        assert_eq!(c.evaluate(&pod(json!({})), &request()), Outcome::Match);
        assert!(conditions(&[]).is_empty());
    }
}
