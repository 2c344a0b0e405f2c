//! Encoding builtins: base64url without padding, hex, URL queries, YAML and
//! JSON patches. (Plain base64 and JSON are compiled into the module.)

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{BuiltinError, Context, Output, arg, err, str_arg, type_name};

/// The longest YAML document decoded: YAML aliases can expand a small
/// document into a huge value, so the decoded size is bounded too.
const MAX_YAML_EXPANSION: usize = 16 << 20;

pub(crate) fn base64url_encode_no_pad(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    let s = str_arg(args, 0)?;
    Ok(Value::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)).into())
}

pub(crate) fn hex_encode(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    Ok(Value::String(hex::encode(str_arg(args, 0)?)).into())
}

pub(crate) fn hex_decode(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let bytes = hex::decode(str_arg(args, 0)?).map_err(|e| BuiltinError(e.to_string()))?;
    let s =
        String::from_utf8(bytes).map_err(|_| BuiltinError("decoded bytes are not UTF-8".into()))?;
    Ok(Value::String(s).into())
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.QueryUnescape`.
fn query_unescape(s: &str) -> Result<String, BuiltinError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| BuiltinError(format!("invalid URL escape in {s:?}")))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| BuiltinError("decoded query is not UTF-8".into()))
}

pub(crate) fn urlquery_encode(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    Ok(Value::String(query_escape(str_arg(args, 0)?)).into())
}

pub(crate) fn urlquery_decode(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    Ok(Value::String(query_unescape(str_arg(args, 0)?)?).into())
}

/// `urlquery.encode_object(object)`: values are strings, or arrays or sets
/// of strings; keys sorted, as Go's `url.Values.Encode`.
pub(crate) fn urlquery_encode_object(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    let Value::Object(fields) = arg(args, 0)? else {
        return err(format!(
            "operand 1 must be object but got {}",
            type_name(arg(args, 0)?)
        ));
    };
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort();
    let mut pairs = Vec::new();
    for key in keys {
        let values: Vec<&str> = match &fields[key] {
            Value::String(s) => vec![s],
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .ok_or_else(|| BuiltinError(format!("values of {key} must be strings")))
                })
                .collect::<Result<_, _>>()?,
            other => {
                return err(format!(
                    "value of {key} must be string, array or set, not {}",
                    type_name(other)
                ));
            }
        };
        for value in values {
            pairs.push(format!("{}={}", query_escape(key), query_escape(value)));
        }
    }
    Ok(Value::String(pairs.join("&")).into())
}

/// `urlquery.decode_object(query)`: each key maps to the list of its values.
pub(crate) fn urlquery_decode_object(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    let query = str_arg(args, 0)?;
    let mut out: Map<String, Value> = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = query_unescape(key)?;
        let value = query_unescape(value)?;
        match out.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(values) => values.push(Value::String(value)),
            _ => unreachable!("entries are arrays"),
        }
    }
    Ok(Value::Object(out).into())
}

pub(crate) fn yaml_marshal(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let text = serde_yaml::to_string(arg(args, 0)?).map_err(|e| BuiltinError(e.to_string()))?;
    Ok(Value::String(text).into())
}

fn yaml_value(text: &str) -> Result<Value, BuiltinError> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| BuiltinError(e.to_string()))?;
    // serde_yaml bounds recursion and alias repetition; bound the result too.
    let size = serde_json::to_vec(&value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_YAML_EXPANSION.max(text.len() * 4) {
        return err("the YAML document expands to a value that is too large");
    }
    Ok(value)
}

pub(crate) fn yaml_unmarshal(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    Ok(yaml_value(str_arg(args, 0)?)?.into())
}

pub(crate) fn yaml_is_valid(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let valid = match arg(args, 0)? {
        Value::String(s) => yaml_value(s).is_ok(),
        _ => false,
    };
    Ok(Value::Bool(valid).into())
}

/// `json.patch(object, patches)`: RFC 6902; paths may be JSON pointers or
/// arrays of path segments, as OPA allows.
pub(crate) fn json_patch(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let mut target = arg(args, 0)?.clone();
    let Value::Array(ops) = arg(args, 1)? else {
        return err("operand 2 must be an array of patch operations");
    };
    let mut normalised = Vec::with_capacity(ops.len());
    for op in ops {
        let Value::Object(fields) = op else {
            return err("a patch operation must be an object");
        };
        let mut fields = fields.clone();
        for key in ["path", "from"] {
            if let Some(Value::Array(segments)) = fields.get(key) {
                let mut pointer = String::new();
                for segment in segments {
                    let text = match segment {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    pointer.push('/');
                    pointer.push_str(&text.replace('~', "~0").replace('/', "~1"));
                }
                fields.insert(key.to_string(), Value::String(pointer));
            }
        }
        normalised.push(Value::Object(fields));
    }
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(normalised))
        .map_err(|e| BuiltinError(format!("invalid patch: {e}")))?;
    json_patch::patch(&mut target, &patch).map_err(|e| BuiltinError(e.to_string()))?;
    Ok(target.into())
}

/// `json.marshal_with_options(value, {"pretty", "indent", "prefix"})`.
pub(crate) fn json_marshal_with_options(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    let value = arg(args, 0)?;
    let Value::Object(opts) = arg(args, 1)? else {
        return err("operand 2 must be an object");
    };
    let indent = opts.get("indent").and_then(Value::as_str);
    let prefix = opts.get("prefix").and_then(Value::as_str);
    let pretty = opts
        .get("pretty")
        .and_then(Value::as_bool)
        .unwrap_or(indent.is_some() || prefix.is_some());
    if !pretty {
        return Ok(Value::String(value.to_string()).into());
    }
    let indent = indent.unwrap_or("\t");
    let prefix = prefix.unwrap_or("");
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(value, &mut ser).map_err(|e| BuiltinError(e.to_string()))?;
    let text = String::from_utf8(out).map_err(|e| BuiltinError(e.to_string()))?;
    let text = if prefix.is_empty() {
        text
    } else {
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    l.to_string()
                } else {
                    format!("{prefix}{l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Value::String(text).into())
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
    fn encodings_round_trip() {
        assert_eq!(
            v("base64url.encode_no_pad", json!(["hi?"])).unwrap(),
            json!("aGk_")
        );
        assert_eq!(v("hex.encode", json!(["hi"])).unwrap(), json!("6869"));
        assert_eq!(v("hex.decode", json!(["6869"])).unwrap(), json!("hi"));
        assert!(v("hex.decode", json!(["zz"])).is_err());
        assert_eq!(
            v("urlquery.encode", json!(["a b&c~é"])).unwrap(),
            json!("a+b%26c~%C3%A9")
        );
        assert_eq!(
            v("urlquery.decode", json!(["a+b%26c"])).unwrap(),
            json!("a b&c")
        );
        assert_eq!(
            v(
                "urlquery.encode_object",
                json!([{"b": ["2", "3"], "a": "x y"}])
            )
            .unwrap(),
            json!("a=x+y&b=2&b=3")
        );
        assert_eq!(
            v("urlquery.decode_object", json!(["a=1&b=2&a=3"])).unwrap(),
            json!({"a": ["1", "3"], "b": ["2"]})
        );
    }

    #[test]
    fn yaml() {
        assert_eq!(
            v("yaml.unmarshal", json!(["a: [1, 2]\nb: x"])).unwrap(),
            json!({"a": [1, 2], "b": "x"})
        );
        assert_eq!(v("yaml.is_valid", json!(["a: [1"])).unwrap(), json!(false));
        let text = v("yaml.marshal", json!([{"a": 1}])).unwrap();
        assert_eq!(text, json!("a: 1\n"));
    }

    #[test]
    fn yaml_bombs_are_refused() {
        let mut doc = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            doc.push_str(&format!("{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
            prev = n;
        }
        let started = std::time::Instant::now();
        assert!(v("yaml.unmarshal", json!([doc])).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn json_patches() {
        assert_eq!(
            v("json.patch", json!([{"a": {}}, [{"op": "add", "path": "/a/b", "value": 1}, {"op": "add", "path": ["a", "c/d"], "value": 2}]])).unwrap(),
            json!({"a": {"b": 1, "c/d": 2}})
        );
        assert!(v("json.patch", json!([{}, [{"op": "remove", "path": "/x"}]])).is_err());
        assert_eq!(
            v(
                "json.marshal_with_options",
                json!([{"a": [1]}, {"indent": "  "}])
            )
            .unwrap(),
            json!("{\n  \"a\": [\n    1\n  ]\n}")
        );
    }
}
