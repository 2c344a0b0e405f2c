//! `semver.is_valid` and `semver.compare`, as OPA: SemVer 2.0 with an
//! optional leading `v`, compared by precedence (build metadata ignored).

use serde_json::Value;

use super::{BuiltinError, Context, Output, arg, str_arg};

fn parse(s: &str) -> Option<semver::Version> {
    semver::Version::parse(s.strip_prefix('v').unwrap_or(s)).ok()
}

pub(crate) fn is_valid(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let valid = arg(args, 0)?.as_str().and_then(parse).is_some();
    Ok(Value::Bool(valid).into())
}

pub(crate) fn compare(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let version = |i: usize| {
        let s = str_arg(args, i)?;
        parse(s).ok_or_else(|| {
            BuiltinError(format!(
                "operand {}: string {s} is not a valid SemVer",
                i + 1
            ))
        })
    };
    let ordering = version(0)?.cmp_precedence(&version(1)?);
    Ok(Value::from(ordering as i8).into())
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
    fn versions() {
        assert_eq!(
            v("semver.is_valid", json!(["1.2.3-rc.1+build"])).unwrap(),
            json!(true)
        );
        assert_eq!(
            v("semver.is_valid", json!(["v1.2.3"])).unwrap(),
            json!(true)
        );
        assert_eq!(v("semver.is_valid", json!(["1.2"])).unwrap(), json!(false));
        assert_eq!(v("semver.is_valid", json!([5])).unwrap(), json!(false));
        assert_eq!(
            v("semver.compare", json!(["1.0.0", "1.1.0"])).unwrap(),
            json!(-1)
        );
        assert_eq!(
            v("semver.compare", json!(["1.0.0+a", "1.0.0+b"])).unwrap(),
            json!(0)
        );
        assert_eq!(
            v("semver.compare", json!(["2.0.0", "2.0.0-rc.1"])).unwrap(),
            json!(1)
        );
        assert!(
            v("semver.compare", json!(["x", "1.0.0"]))
                .unwrap_err()
                .contains("operand 1")
        );
    }
}
