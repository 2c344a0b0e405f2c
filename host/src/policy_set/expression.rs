//! A policy group's expression: CEL over its member names, each a
//! zero-argument function returning bool (`a() || (b() && !c())`).
//!
//! Compiled once at load with cel-rust and checked there: it may use only the
//! members, boolean literals and `&&`, `||`, `!`, `==`, `!=`, and it must yield
//! a bool with every member stubbed. At evaluation the members are bound to
//! closures that run them on demand, so CEL's `&&`/`||` short-circuit decides
//! which members run.

use std::sync::Arc;

use cel::common::ast::{Expr, LiteralValue};
use cel::{Context, IdedExpr, Program, Value};

/// The CEL operators a group expression may use.
const OPERATORS: [&str; 5] = ["_&&_", "_||_", "!_", "_==_", "_!=_"];

/// Deepest expression accepted: the interpreter recurses once per level, on
/// an evaluation worker's stack.
const MAX_DEPTH: usize = 32;

/// Stack of the parser's thread (reserved, touched only as deep as needed).
const PARSER_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Longest expression accepted, in bytes: the CRD bounds it too, but the
/// policies file may come from elsewhere.
const MAX_EXPRESSION_BYTES: usize = 4 * 1024;

/// A compiled, checked group expression.
pub struct GroupExpression {
    program: Program,
    members: Vec<String>,
}

impl GroupExpression {
    /// Compiles `source` and checks it against the group's `members`.
    pub fn compile<'a>(
        source: &str,
        members: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, String> {
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(format!(
                "the expression is longer than {MAX_EXPRESSION_BYTES} bytes"
            ));
        }
        let members: Vec<String> = members.into_iter().map(str::to_string).collect();
        let program = parse(source)?;
        check_shape(program.expression(), &members)?;
        let expression = Self { program, members };
        expression
            .evaluate(Arc::new(|_: &str| true))
            .map_err(|e| format!("the expression does not evaluate with every member true: {e}"))?;
        Ok(expression)
    }

    /// Evaluates the expression, calling `member` for each member call the
    /// expression needs, in evaluation order.
    pub fn evaluate(
        &self,
        member: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Result<bool, String> {
        let mut context = Context::empty();
        for name in &self.members {
            let member = Arc::clone(&member);
            let bound = name.clone();
            context
                .add_function(name, move || member(&bound))
                .map_err(|e| format!("member {name:?} cannot be a CEL function: {e:?}"))?;
        }
        match self.program.execute(&context) {
            Ok(Value::Bool(value)) => Ok(value),
            Ok(other) => Err(format!(
                "the expression yields {:?}, not a bool",
                other.type_of()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Parses `source`. The parser recurses per nesting level, and a hostile
/// file must not overflow the loader's stack: brackets are bounded before
/// parsing, and the parser runs on a thread with a stack of known size.
fn parse(source: &str) -> Result<Program, String> {
    let mut depth = 0usize;
    for c in source.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "the expression nests deeper than {MAX_DEPTH} levels"
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let source = source.to_string();
    std::thread::Builder::new()
        .name("group-expression".into())
        .stack_size(PARSER_STACK_BYTES)
        .spawn(move || {
            Program::compile(&source).map_err(|e| format!("the expression is not valid CEL: {e}"))
        })
        .map_err(|e| format!("cannot start the expression parser: {e}"))?
        .join()
        .map_err(|_| "the expression parser failed".to_string())?
}

/// Walks the parsed expression (with its own stack, not recursion): only
/// member calls without arguments, the allowed operators and boolean
/// literals, no deeper than [`MAX_DEPTH`].
fn check_shape(root: &IdedExpr, members: &[String]) -> Result<(), String> {
    let mut pending = vec![(root, 1usize)];
    while let Some((node, depth)) = pending.pop() {
        if depth > MAX_DEPTH {
            return Err(format!(
                "the expression nests deeper than {MAX_DEPTH} levels"
            ));
        }
        match &node.expr {
            Expr::Literal(LiteralValue::Boolean(_)) => {}
            Expr::Call(call)
                if call.target.is_none() && OPERATORS.contains(&call.func_name.as_str()) =>
            {
                pending.extend(call.args.iter().map(|arg| (arg, depth + 1)));
            }
            Expr::Call(call) if call.target.is_none() && members.contains(&call.func_name) => {
                if !call.args.is_empty() {
                    return Err(format!("member {}() takes no arguments", call.func_name));
                }
            }
            Expr::Call(call) => {
                return Err(format!(
                    "the expression calls {}, which is not a member of the group \
                     (members: {}; operators: &&, ||, !, ==, !=)",
                    call.func_name,
                    members.join(", ")
                ));
            }
            Expr::Ident(name) => {
                return Err(format!(
                    "the expression refers to {name:?}, which is not a member call: \
                     write members as functions, e.g. {name}()"
                ));
            }
            _ => {
                return Err("the expression may use only member calls, true, false and \
                     &&, ||, !, ==, !="
                    .to_string());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn compile(source: &str) -> Result<GroupExpression, String> {
        GroupExpression::compile(source, ["a", "b", "c"])
    }

    /// Evaluates with the given member values and returns the members called.
    fn run(expression: &GroupExpression, values: &[(&str, bool)]) -> (bool, Vec<String>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let values: Vec<(String, bool)> = values.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        let recorded = Arc::clone(&calls);
        let result = expression
            .evaluate(Arc::new(move |name: &str| {
                recorded.lock().unwrap().push(name.to_string());
                values.iter().find(|(n, _)| n == name).unwrap().1
            }))
            .unwrap();
        let calls = calls.lock().unwrap().clone();
        (result, calls)
    }

    #[test]
    fn or_short_circuits() {
        let e = compile("a() || b()").unwrap();
        assert_eq!(
            run(&e, &[("a", true), ("b", false)]),
            (true, vec!["a".into()])
        );
        assert_eq!(
            run(&e, &[("a", false), ("b", true)]),
            (true, vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn and_short_circuits() {
        let e = compile("a() && b()").unwrap();
        assert_eq!(
            run(&e, &[("a", false), ("b", true)]),
            (false, vec!["a".into()])
        );
        assert_eq!(
            run(&e, &[("a", true), ("b", true)]),
            (true, vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn not_equals_and_literals() {
        let e = compile("!a() && (b() == c()) && (a() != true)").unwrap();
        assert!(run(&e, &[("a", false), ("b", true), ("c", true)]).0);
        let e = compile("a() != b()").unwrap();
        assert!(!run(&e, &[("a", true), ("b", true)]).0);
    }

    #[test]
    fn a_member_named_twice_runs_twice() {
        let e = compile("a() && a()").unwrap();
        assert_eq!(run(&e, &[("a", true)]).1.len(), 2);
    }

    #[test]
    fn rejects_unknown_members_variables_and_functions() {
        let err = compile("a() || d()").err().unwrap();
        assert!(err.contains("calls d, which is not a member"), "{err}");
        let err = compile("a() || [b()] == [true]").err().unwrap();
        assert!(err.contains("only member calls"), "{err}");
        // Unknown calls are found even where stubs would short-circuit.
        let err = compile("a() || (b() && zzz())").err().unwrap();
        assert!(err.contains("zzz"), "{err}");
        let err = compile("a() || b").err().unwrap();
        assert!(err.contains("refers to \"b\""), "{err}");
        let err = compile("size('x') > 0").err().unwrap();
        assert!(err.contains("not a member"), "{err}");
        let err = compile("a() ? b() : c()").err().unwrap();
        assert!(err.contains("_?_:_"), "{err}");
    }

    #[test]
    fn rejects_syntax_errors_and_non_bool_results() {
        let err = compile("a() ||").err().unwrap();
        assert!(err.contains("not valid CEL"), "{err}");
        let err = compile("a(1)").err().unwrap();
        assert!(err.contains("takes no arguments"), "{err}");
        assert!(compile("true").is_ok());
        let err = compile("a() == 1").err().unwrap();
        assert!(err.contains("only member calls"), "{err}");
    }

    #[test]
    fn hostile_negations() {
        // The parser folds `!!`: a long run of `!` is not deep.
        let negations = "!".repeat(1001) + "a()";
        let _ = compile(&negations);
    }

    #[test]
    fn hostile_parens() {
        let deep = format!("{}a(){}", "(".repeat(1000), ")".repeat(1000));
        assert!(compile(&deep).is_err());
    }

    #[test]
    fn hostile_chain() {
        let chain = "a() && ".repeat(500) + "a()";
        let _ = compile(&chain);
    }

    #[test]
    fn hostile_ternaries_and_minus_signs() {
        let ternaries = "a() ? a() : ".repeat(340) + "a()";
        assert!(compile(&ternaries).is_err());
        let minus = "-".repeat(4000) + "1 == 1";
        assert!(compile(&minus).is_err());
        let selects = "a".to_string() + &".b".repeat(2000);
        assert!(compile(&selects).is_err());
    }

    #[test]
    fn hostile_length() {
        let long = "a() || ".repeat(1000) + "a()";
        assert!(compile(&long).err().unwrap().contains("longer than"));
    }
}
