//! String builtins that `opa build` leaves to the host.

use serde_json::Value;

use super::{BuiltinError, Context, Output, arg, str_arg, strings_of};

/// `strings.any_prefix_match(search, base)`: does any of `search` start with any of `base`?
pub(crate) fn any_prefix_match(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    let search = strings_of(arg(args, 0)?, 0)?;
    let base = strings_of(arg(args, 1)?, 1)?;
    let hit = search.iter().any(|s| base.iter().any(|b| s.starts_with(b)));
    Ok(Value::Bool(hit).into())
}

/// `strings.any_suffix_match(search, base)`: does any of `search` end with any of `base`?
pub(crate) fn any_suffix_match(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    let search = strings_of(arg(args, 0)?, 0)?;
    let base = strings_of(arg(args, 1)?, 1)?;
    let hit = search.iter().any(|s| base.iter().any(|b| s.ends_with(b)));
    Ok(Value::Bool(hit).into())
}

/// `strings.count(search, substring)`: non-overlapping occurrences, as Go's
/// `strings.Count` (an empty substring counts the code points plus one).
pub(crate) fn count(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let s = str_arg(args, 0)?;
    let sub = str_arg(args, 1)?;
    let n = if sub.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(sub).count()
    };
    Ok(Value::from(n).into())
}

/// `indexof_n(haystack, needle)`: every index (in code points) where `needle`
/// starts, overlapping ones included.
pub(crate) fn indexof_n(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let haystack = str_arg(args, 0)?;
    let needle = str_arg(args, 1)?;
    let chars: Vec<char> = haystack.chars().collect();
    let needle: Vec<char> = needle.chars().collect();
    let mut found = Vec::new();
    if !needle.is_empty() && needle.len() <= chars.len() {
        for i in 0..=chars.len() - needle.len() {
            if chars[i..i + needle.len()] == needle[..] {
                found.push(Value::from(i));
            }
        }
    }
    Ok(Value::Array(found).into())
}

/// `glob.quote_meta(pattern)`: escape the characters special to `glob.match`.
pub(crate) fn glob_quote_meta(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let pattern = str_arg(args, 0)?;
    let mut out = String::with_capacity(pattern.len() * 2);
    for c in pattern.chars() {
        if matches!(c, '*' | '?' | '\\' | '[' | ']' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(Value::String(out).into())
}

#[cfg(test)]
mod tests {
    use super::super::{Output, call};
    use serde_json::json;

    fn v(name: &str, args: serde_json::Value) -> serde_json::Value {
        let serde_json::Value::Array(args) = args else {
            panic!()
        };
        match call(name, args).unwrap() {
            Output::Value(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefix_and_suffix_matches() {
        assert_eq!(
            v(
                "strings.any_prefix_match",
                json!(["registry.io/x", ["docker.io/", "registry.io/"]])
            ),
            json!(true)
        );
        assert_eq!(
            v("strings.any_prefix_match", json!([["a", "b"], "c"])),
            json!(false)
        );
        assert_eq!(
            v(
                "strings.any_suffix_match",
                json!(["image:latest", [":latest"]])
            ),
            json!(true)
        );
    }

    #[test]
    fn counting_and_indices() {
        assert_eq!(v("strings.count", json!(["cheese", "e"])), json!(3));
        assert_eq!(v("strings.count", json!(["five", ""])), json!(5));
        assert_eq!(v("indexof_n", json!(["aaa", "aa"])), json!([0, 1]));
        assert_eq!(v("indexof_n", json!(["héllo l", "l"])), json!([2, 3, 6]));
    }

    #[test]
    fn glob_meta_is_quoted() {
        assert_eq!(
            v("glob.quote_meta", json!(["*.github.com"])),
            json!("\\*.github.com")
        );
        assert_eq!(
            v("glob.quote_meta", json!(["[a]{b}?"])),
            json!("\\[a\\]\\{b\\}\\?")
        );
    }
}
