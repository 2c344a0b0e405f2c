//! Regular-expression builtins, with the `regex` crate: RE2 syntax like Go's
//! `regexp`, and matching in time linear in the input, so a hostile pattern
//! cannot stall the host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use regex::Regex;
use serde_json::Value;

use super::{BuiltinError, Context, Output, err, int_arg, str_arg};

/// Compiled patterns kept across evaluations (policies use a handful of
/// fixed patterns, so compiling once matters more than the memory).
const CACHE_ENTRIES: usize = 512;
/// The most memory one compiled pattern may take.
const PATTERN_SIZE_LIMIT: usize = 2 << 20;

fn compiled(pattern: &str) -> Result<Arc<Regex>, BuiltinError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().ok().and_then(|c| c.get(pattern).cloned()) {
        return Ok(re);
    }
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| BuiltinError(format!("invalid regular expression: {e}")))?;
    let re = Arc::new(re);
    if let Ok(mut cache) = cache.lock() {
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(pattern.to_string(), re.clone());
    }
    Ok(re)
}

/// `regex.split(pattern, value)`, as Go's `Regexp.Split(value, -1)`.
pub(crate) fn split(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let pattern = str_arg(args, 0)?;
    let value = str_arg(args, 1)?;
    let re = compiled(pattern)?;
    if !pattern.is_empty() && value.is_empty() {
        return Ok(Value::Array(vec![Value::String(String::new())]).into());
    }
    let mut parts = Vec::new();
    let (mut begin, mut end) = (0, 0);
    for m in re.find_iter(value) {
        end = m.start();
        if m.end() != 0 {
            parts.push(Value::String(value[begin..end].to_string()));
        }
        begin = m.end();
    }
    if end != value.len() {
        parts.push(Value::String(value[begin..].to_string()));
    }
    Ok(Value::Array(parts).into())
}

/// `regex.find_n(pattern, value, n)`: the first `n` matches, all when `n` < 0.
pub(crate) fn find_n(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let pattern = str_arg(args, 0)?;
    let value = str_arg(args, 1)?;
    let n = int_arg(args, 2)?;
    let re = compiled(pattern)?;
    let limit = if n < 0 { usize::MAX } else { n as usize };
    let found = re
        .find_iter(value)
        .take(limit)
        .map(|m| Value::String(m.as_str().to_string()))
        .collect();
    Ok(Value::Array(found).into())
}

/// `regex.replace(s, pattern, value)`: every match replaced, `$1`/`${name}` expanded.
pub(crate) fn replace(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let s = str_arg(args, 0)?;
    let pattern = str_arg(args, 1)?;
    let value = str_arg(args, 2)?;
    let re = compiled(pattern)?;
    Ok(Value::String(re.replace_all(s, value).into_owned()).into())
}

/// `regex.template_match(template, value, start, end)`: `template` is literal
/// text with regular expressions between the delimiters, e.g.
/// `urn:foo:{.*}:bar`; matches the whole of `value`.
pub(crate) fn template_match(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let template = str_arg(args, 0)?;
    let value = str_arg(args, 1)?;
    let (Some(&open), Some(&close)) = (
        str_arg(args, 2)?.as_bytes().first(),
        str_arg(args, 3)?.as_bytes().first(),
    ) else {
        return err("delimiters must not be empty");
    };
    let bytes = template.as_bytes();
    let mut pattern = String::from("^");
    let (mut level, mut start, mut literal_from) = (0i32, 0usize, 0usize);
    for (i, b) in bytes.iter().enumerate() {
        if *b == open {
            level += 1;
            if level == 1 {
                start = i;
            }
        } else if *b == close {
            level -= 1;
            if level == 0 {
                pattern.push_str(&regex::escape(&template[literal_from..start]));
                pattern.push('(');
                pattern.push_str(&template[start + 1..i]);
                pattern.push(')');
                literal_from = i + 1;
            } else if level < 0 {
                return err(format!("unbalanced braces in {template:?}"));
            }
        }
    }
    if level != 0 {
        return err(format!("unbalanced braces in {template:?}"));
    }
    pattern.push_str(&regex::escape(&template[literal_from..]));
    pattern.push('$');
    Ok(Value::Bool(compiled(&pattern)?.is_match(value)).into())
}

#[cfg(test)]
mod tests {
    use super::super::{Output, call};
    use serde_json::json;

    fn v(name: &str, args: serde_json::Value) -> Result<serde_json::Value, String> {
        let serde_json::Value::Array(args) = args else {
            panic!()
        };
        match call(name, args) {
            Ok(Output::Value(v)) => Ok(v),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn split_find_replace() {
        assert_eq!(
            v("regex.split", json!(["[,;]", "a,b;c"])).unwrap(),
            json!(["a", "b", "c"])
        );
        assert_eq!(v("regex.split", json!(["x", ""])).unwrap(), json!([""]));
        assert_eq!(
            v("regex.find_n", json!(["[0-9]+", "a1b22c333", 2])).unwrap(),
            json!(["1", "22"])
        );
        assert_eq!(
            v("regex.find_n", json!(["[0-9]+", "a1b22c333", -1])).unwrap(),
            json!(["1", "22", "333"])
        );
        assert_eq!(
            v(
                "regex.replace",
                json!(["image:v1.2", "v([0-9]+)", "version-$1"])
            )
            .unwrap(),
            json!("image:version-1.2")
        );
        assert!(
            v("regex.split", json!(["(", "a"]))
                .unwrap_err()
                .contains("invalid")
        );
    }

    #[test]
    fn templates() {
        assert_eq!(
            v(
                "regex.template_match",
                json!(["urn:foo:{.*}", "urn:foo:bar:baz", "{", "}"])
            )
            .unwrap(),
            json!(true)
        );
        assert_eq!(
            v(
                "regex.template_match",
                json!(["urn:foo.bar.com:{.*}", "urn:foo.com:bar:baz", "{", "}"])
            )
            .unwrap(),
            json!(false)
        );
        assert_eq!(
            v(
                "regex.template_match",
                json!(["urn:foo:<[0-9]{2}>", "urn:foo:42", "<", ">"])
            )
            .unwrap(),
            json!(true)
        );
        assert!(v("regex.template_match", json!(["{a", "a", "{", "}"])).is_err());
    }

    #[test]
    fn huge_patterns_are_refused() {
        let pattern = "(?:a{1000}){1000}";
        assert!(v("regex.find_n", json!([pattern, "aaa", 1])).is_err());
    }
}
