//! Objects, number ranges, hashes, and the debugging builtins.

use serde_json::Value;
use sha2::Digest;

use super::{BuiltinError, Context, Output, RegoValue, arg, err, int_arg, str_arg};
use crate::guest_log::{self, GuestLevel};

/// `object.subset(super, sub)`: objects recursively, arrays as contiguous
/// runs. (Sets reach the host as arrays, so a set operand is compared as an
/// array.)
pub(crate) fn object_subset(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let (sup, sub) = (arg(args, 0)?, arg(args, 1)?);
    match (sup, sub) {
        (Value::Object(_), Value::Object(_)) | (Value::Array(_), Value::Array(_)) => {
            Ok(Value::Bool(subset(sup, sub)).into())
        }
        _ => err("both arguments object.subset must be of the same type or array and set"),
    }
}

fn subset(sup: &Value, sub: &Value) -> bool {
    if sup == sub {
        return true;
    }
    match (sup, sub) {
        (Value::Object(sup), Value::Object(sub)) => sub
            .iter()
            .all(|(k, v)| sup.get(k).is_some_and(|s| subset(s, v))),
        (Value::Array(sup), Value::Array(sub)) => {
            sub.len() <= sup.len() && sup.windows(sub.len().max(1)).any(|w| w == &sub[..])
                || sub.is_empty()
        }
        _ => false,
    }
}

/// The longest array `numbers.range_step` builds.
const MAX_RANGE: i64 = 1 << 20;

/// `numbers.range_step(a, b, step)`: from `a` towards `b`, inclusive.
pub(crate) fn numbers_range_step(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    let (a, b, step) = (int_arg(args, 0)?, int_arg(args, 1)?, int_arg(args, 2)?);
    if step <= 0 {
        return err("numbers.range_step: step must be a positive integer");
    }
    let len = (i128::from(b) - i128::from(a)).unsigned_abs() / step as u128 + 1;
    if len > MAX_RANGE as u128 {
        return err(format!("numbers.range_step: more than {MAX_RANGE} numbers"));
    }
    let values = (0..len as i64)
        .map(|i| Value::from(if b >= a { a + i * step } else { a - i * step }))
        .collect();
    Ok(Value::Array(values).into())
}

pub(crate) fn crypto_sha256(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let digest = sha2::Sha256::digest(str_arg(args, 0)?.as_bytes());
    Ok(Value::String(hex::encode(digest)).into())
}

/// `opa.runtime()`: OPA returns its configuration and environment; a policy
/// here gets nothing of the host's.
pub(crate) fn opa_runtime(_: &mut Context<'_>, _: &[Value]) -> Result<Output, BuiltinError> {
    Ok(Value::Object(Default::default()).into())
}

/// `trace(note)`: logged at debug level; always true.
pub(crate) fn trace(ctx: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let note = str_arg(args, 0)?;
    guest_log::emit(ctx.policy_id, GuestLevel::Debug, note, None);
    Ok(Value::Bool(true).into())
}

/// `print(...)`, compiled to `internal.print([operands])`, where each operand
/// is the set of its values (empty when undefined).
pub(crate) fn print(ctx: &mut Context<'_>, args: &[RegoValue]) -> Result<Output, BuiltinError> {
    let Some(RegoValue::Array(operands)) = args.first() else {
        return err("internal.print takes an array");
    };
    let parts: Vec<String> = operands
        .iter()
        .map(|op| match op {
            RegoValue::Set(values) if values.is_empty() => "<undefined>".to_string(),
            RegoValue::Set(values) => values
                .iter()
                .map(|v| match v {
                    RegoValue::String(s) => s.clone(),
                    other => {
                        let mut other = other.clone();
                        other.normalise();
                        other.text()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => other.text(),
        })
        .collect();
    guest_log::emit(ctx.policy_id, GuestLevel::Info, &parts.join(" "), None);
    Ok(Output::Undefined)
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
    fn subsets() {
        assert_eq!(
            v(
                "object.subset",
                json!([{"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1}}])
            )
            .unwrap(),
            json!(true)
        );
        assert_eq!(
            v("object.subset", json!([{"a": 1}, {"a": 2}])).unwrap(),
            json!(false)
        );
        assert_eq!(
            v("object.subset", json!([[1, 2, 3, 4], [2, 3]])).unwrap(),
            json!(true)
        );
        assert_eq!(
            v("object.subset", json!([[1, 2, 3, 4], [2, 4]])).unwrap(),
            json!(false)
        );
        assert!(v("object.subset", json!([{}, []])).is_err());
    }

    #[test]
    fn ranges_and_hashes() {
        assert_eq!(
            v("numbers.range_step", json!([0, 10, 4])).unwrap(),
            json!([0, 4, 8])
        );
        assert_eq!(
            v("numbers.range_step", json!([5, 1, 2])).unwrap(),
            json!([5, 3, 1])
        );
        assert!(v("numbers.range_step", json!([0, 10, 0])).is_err());
        assert!(v("numbers.range_step", json!([0, 1_000_000_000_000i64, 1])).is_err());
        assert_eq!(
            v("crypto.sha256", json!(["abc"])).unwrap(),
            json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(v("trace", json!(["note"])).unwrap(), json!(true));
        assert_eq!(
            call("internal.print", vec![json!([["a"], []])]).unwrap(),
            Output::Undefined
        );
    }
}
