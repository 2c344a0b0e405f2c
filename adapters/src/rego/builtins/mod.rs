//! The Rego builtins an OPA module calls back into the host for.
//!
//! `opa build -t wasm` compiles many builtins into the module itself (string
//! basics, `regex.match`, `glob.match`, JSON and base64, `net.cidr_contains`,
//! aggregates, ...); the others are imported through `opa_builtinN` and are
//! implemented here, with OPA's semantics. Arguments arrive as JSON (sets as
//! arrays); a builtin that fails makes its expression undefined, as OPA does
//! without strict builtin errors. A builtin that is not in [`TABLE`] fails
//! the evaluation with an error naming it.

mod encoding;
mod misc;
mod net;
mod regex;
pub(crate) mod rego_value;
mod semver;
mod sprintf;
mod strings;
mod time;
mod units;

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

pub(crate) use rego_value::RegoValue;

/// A builtin taking its arguments as JSON (sets become arrays).
pub(crate) type JsonFn = fn(&mut Context<'_>, &[Value]) -> Result<Output, BuiltinError>;
/// A builtin taking its arguments as Rego values (sets kept), for those
/// whose result shows the difference (`sprintf`, `print`).
pub(crate) type RegoFn = fn(&mut Context<'_>, &[RegoValue]) -> Result<Output, BuiltinError>;

/// How a builtin wants its arguments.
#[derive(Clone, Copy)]
pub(crate) enum Impl {
    Json(JsonFn),
    Rego(RegoFn),
}

/// What a builtin returns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// A JSON value.
    Value(Value),
    /// A set (JSON has none; it is written to the guest as a Rego set).
    Set(Vec<Value>),
    /// No value: the expression is undefined.
    Undefined,
}

impl From<Value> for Output {
    fn from(v: Value) -> Self {
        Output::Value(v)
    }
}

/// Why a builtin failed; the expression becomes undefined.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BuiltinError(pub(crate) String);

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, BuiltinError> {
    Err(BuiltinError(msg.into()))
}

/// What a builtin may use besides its arguments.
pub(crate) struct Context<'a> {
    /// The policy being evaluated, for log messages.
    pub(crate) policy_id: &'a str,
    /// The evaluation's deadline; long builtins stop when it passes.
    #[allow(dead_code)]
    pub(crate) deadline: Instant,
    /// State kept for the length of one evaluation.
    pub(crate) state: &'a mut EvalState,
}

/// Per-evaluation state of the builtins.
#[derive(Debug, Default)]
pub(crate) struct EvalState {
    /// `time.now_ns()` is the same for a whole evaluation, as in OPA.
    pub(crate) now_ns: Option<i64>,
}

/// A builtin name a module uses, with its implementation if there is one.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub(crate) name: Arc<str>,
    pub(crate) func: Option<Impl>,
}

impl Resolved {
    pub(crate) fn is_supported(&self) -> bool {
        self.func.is_some()
    }
}

/// Find the implementation of builtin `name`.
pub(crate) fn resolve(name: &str) -> Resolved {
    Resolved {
        name: name.into(),
        func: TABLE.iter().find(|(n, _)| *n == name).map(|(_, f)| *f),
    }
}

/// The names of every builtin the host implements (besides the many that
/// `opa build` compiles into the module), sorted.
pub fn supported_builtins() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = TABLE.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names
}

/// Every host builtin, by its Rego name.
const TABLE: &[(&str, Impl)] = &[
    // Strings and formatting.
    ("sprintf", Impl::Rego(sprintf::sprintf)),
    (
        "strings.any_prefix_match",
        Impl::Json(strings::any_prefix_match),
    ),
    (
        "strings.any_suffix_match",
        Impl::Json(strings::any_suffix_match),
    ),
    ("strings.count", Impl::Json(strings::count)),
    ("indexof_n", Impl::Json(strings::indexof_n)),
    ("glob.quote_meta", Impl::Json(strings::glob_quote_meta)),
    // Regular expressions (RE2 syntax, linear time).
    ("regex.split", Impl::Json(regex::split)),
    ("regex.find_n", Impl::Json(regex::find_n)),
    ("regex.replace", Impl::Json(regex::replace)),
    ("regex.template_match", Impl::Json(regex::template_match)),
    // Encodings.
    (
        "base64url.encode_no_pad",
        Impl::Json(encoding::base64url_encode_no_pad),
    ),
    ("hex.encode", Impl::Json(encoding::hex_encode)),
    ("hex.decode", Impl::Json(encoding::hex_decode)),
    ("urlquery.encode", Impl::Json(encoding::urlquery_encode)),
    ("urlquery.decode", Impl::Json(encoding::urlquery_decode)),
    (
        "urlquery.encode_object",
        Impl::Json(encoding::urlquery_encode_object),
    ),
    (
        "urlquery.decode_object",
        Impl::Json(encoding::urlquery_decode_object),
    ),
    ("yaml.marshal", Impl::Json(encoding::yaml_marshal)),
    ("yaml.unmarshal", Impl::Json(encoding::yaml_unmarshal)),
    ("yaml.is_valid", Impl::Json(encoding::yaml_is_valid)),
    ("json.patch", Impl::Json(encoding::json_patch)),
    (
        "json.marshal_with_options",
        Impl::Json(encoding::json_marshal_with_options),
    ),
    // Versions and units.
    ("semver.is_valid", Impl::Json(semver::is_valid)),
    ("semver.compare", Impl::Json(semver::compare)),
    ("units.parse", Impl::Json(units::parse)),
    ("units.parse_bytes", Impl::Json(units::parse_bytes)),
    // Time.
    ("time.now_ns", Impl::Json(time::now_ns)),
    ("time.parse_ns", Impl::Json(time::parse_ns)),
    ("time.parse_rfc3339_ns", Impl::Json(time::parse_rfc3339_ns)),
    (
        "time.parse_duration_ns",
        Impl::Json(time::parse_duration_ns),
    ),
    ("time.format", Impl::Json(time::format)),
    ("time.date", Impl::Json(time::date)),
    ("time.clock", Impl::Json(time::clock)),
    ("time.weekday", Impl::Json(time::weekday)),
    ("time.add_date", Impl::Json(time::add_date)),
    ("time.diff", Impl::Json(time::diff)),
    // Networks.
    ("net.cidr_is_valid", Impl::Json(net::cidr_is_valid)),
    ("net.cidr_expand", Impl::Json(net::cidr_expand)),
    ("net.cidr_merge", Impl::Json(net::cidr_merge)),
    (
        "net.cidr_contains_matches",
        Impl::Json(net::cidr_contains_matches),
    ),
    // Objects, numbers, hashes, debugging.
    ("object.subset", Impl::Json(misc::object_subset)),
    ("numbers.range_step", Impl::Json(misc::numbers_range_step)),
    ("crypto.sha256", Impl::Json(misc::crypto_sha256)),
    ("opa.runtime", Impl::Json(misc::opa_runtime)),
    ("trace", Impl::Json(misc::trace)),
    ("internal.print", Impl::Rego(misc::print)),
];

/// A Rego set literal of `items` (JSON values), for `opa_value_parse`.
pub(crate) fn set_literal(items: &[Value]) -> Result<Vec<u8>, serde_json::Error> {
    if items.is_empty() {
        return Ok(b"set()".to_vec());
    }
    let mut out = vec![b'{'];
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        serde_json::to_writer(&mut out, item)?;
    }
    out.push(b'}');
    Ok(out)
}

// Argument helpers: OPA type-checks calls when it compiles, but a module is
// input like any other, so every argument is checked again.

pub(crate) fn arg(args: &[Value], i: usize) -> Result<&Value, BuiltinError> {
    args.get(i)
        .ok_or_else(|| BuiltinError(format!("operand {} is missing", i + 1)))
}

pub(crate) fn str_arg(args: &[Value], i: usize) -> Result<&str, BuiltinError> {
    match arg(args, i)? {
        Value::String(s) => Ok(s),
        other => err(format!(
            "operand {} must be string but got {}",
            i + 1,
            type_name(other)
        )),
    }
}

pub(crate) fn int_arg(args: &[Value], i: usize) -> Result<i64, BuiltinError> {
    match arg(args, i)? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| BuiltinError(format!("operand {} must be an integer", i + 1))),
        other => err(format!(
            "operand {} must be number but got {}",
            i + 1,
            type_name(other)
        )),
    }
}

/// The strings of a string, or of an array or set of strings.
pub(crate) fn strings_of(v: &Value, i: usize) -> Result<Vec<&str>, BuiltinError> {
    match v {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str().ok_or_else(|| {
                    BuiltinError(format!("operand {} must contain only strings", i + 1))
                })
            })
            .collect(),
        other => err(format!(
            "operand {} must be one of {{string, array, set}} but got {}",
            i + 1,
            type_name(other)
        )),
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A JSON number for `f`: an integer when it is one.
pub(crate) fn number(f: f64) -> Value {
    // Whole numbers print as integers, as OPA prints them.
    if f.fract() == 0.0 && f.abs() < 9.2e18 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Call builtin `name` with JSON arguments (for Rego-valued builtins, JSON
/// is read as Rego value text).
#[cfg(test)]
pub(crate) fn call(name: &str, args: Vec<Value>) -> Result<Output, BuiltinError> {
    let mut state = EvalState::default();
    let mut ctx = Context {
        policy_id: "test",
        deadline: Instant::now() + std::time::Duration::from_secs(5),
        state: &mut state,
    };
    match resolve(name).func {
        Some(Impl::Json(f)) => f(&mut ctx, &args),
        Some(Impl::Rego(f)) => {
            let args: Vec<RegoValue> = args
                .iter()
                .map(|a| rego_value::parse(&a.to_string()).unwrap())
                .collect();
            f(&mut ctx, &args)
        }
        None => panic!("{name} is not implemented"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_has_no_duplicates_and_resolves() {
        let names = supported_builtins();
        let mut dedup = names.clone();
        dedup.dedup();
        assert_eq!(names, dedup);
        assert!(resolve("sprintf").is_supported());
        assert!(!resolve("http.send").is_supported());
    }

    /// Every builtin Kubewarden's evaluator (burrego) implements on the
    /// host is implemented here too (`json.is_valid`, which burrego also
    /// lists, is compiled into the module by `opa build`).
    #[test]
    fn kubewarden_evaluators_builtins_are_covered() {
        let burrego = [
            "trace",
            "base64url.encode_no_pad",
            "urlquery.encode",
            "urlquery.decode",
            "urlquery.encode_object",
            "urlquery.decode_object",
            "yaml.marshal",
            "yaml.unmarshal",
            "yaml.is_valid",
            "hex.encode",
            "hex.decode",
            "glob.quote_meta",
            "json.patch",
            "regex.split",
            "regex.template_match",
            "regex.find_n",
            "semver.is_valid",
            "semver.compare",
            "sprintf",
            "strings.any_prefix_match",
            "strings.any_suffix_match",
            "time.now_ns",
            "time.parse_ns",
            "time.parse_rfc3339_ns",
            "time.parse_duration_ns",
            "time.date",
            "time.clock",
            "time.weekday",
            "time.add_date",
            "time.diff",
        ];
        for name in burrego {
            assert!(resolve(name).is_supported(), "{name}");
        }
    }

    #[test]
    fn set_literals() {
        assert_eq!(set_literal(&[]).unwrap(), b"set()");
        assert_eq!(
            set_literal(&[json!("a"), json!(1)]).unwrap(),
            br#"{"a", 1}"#
        );
    }

    #[test]
    fn numbers_are_integers_when_whole() {
        assert_eq!(number(3.0), json!(3));
        assert_eq!(number(1.5), json!(1.5));
    }
}
