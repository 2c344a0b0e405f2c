//! Rego values as `opa_value_dump` writes them: JSON plus sets (`{1, 2}`,
//! `set()`) and non-string object keys. JSON alone loses sets, and `sprintf`
//! must print a set the way OPA does (`{"geo"}`, not `["geo"]`): Gatekeeper
//! messages such as `you must provide labels: {"geo"}` depend on it.

use std::cmp::Ordering;

/// A Rego value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RegoValue {
    Null,
    Bool(bool),
    /// The number's text, as the guest wrote it.
    Number(String),
    String(String),
    Array(Vec<RegoValue>),
    Object(Vec<(RegoValue, RegoValue)>),
    Set(Vec<RegoValue>),
}

/// How deep a value may nest before the parser gives up: the text comes
/// from the guest, and recursion must stay bounded.
const MAX_DEPTH: usize = 512;

/// Parse `opa_value_dump` output.
pub(crate) fn parse(text: &str) -> Result<RegoValue, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing text at {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str) -> bool {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<RegoValue, String> {
        if depth > MAX_DEPTH {
            return Err("value nested too deeply".into());
        }
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return Err("unexpected end".into());
        };
        match c {
            b'n' if self.literal("null") => Ok(RegoValue::Null),
            b't' if self.literal("true") => Ok(RegoValue::Bool(true)),
            b'f' if self.literal("false") => Ok(RegoValue::Bool(false)),
            b's' if self.literal("set()") => Ok(RegoValue::Set(Vec::new())),
            b'"' => self.string().map(RegoValue::String),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Ok(RegoValue::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Ok(RegoValue::Array(items));
                    }
                    if !self.eat(b',') {
                        return Err(format!("expected , or ] at {}", self.i));
                    }
                }
            }
            b'{' => {
                self.i += 1;
                if self.eat(b'}') {
                    return Ok(RegoValue::Object(Vec::new()));
                }
                let first = self.value(depth + 1)?;
                if self.eat(b':') {
                    let mut fields = vec![(first, self.value(depth + 1)?)];
                    loop {
                        if self.eat(b'}') {
                            return Ok(RegoValue::Object(fields));
                        }
                        if !self.eat(b',') {
                            return Err(format!("expected , or }} at {}", self.i));
                        }
                        let k = self.value(depth + 1)?;
                        if !self.eat(b':') {
                            return Err(format!("expected : at {}", self.i));
                        }
                        fields.push((k, self.value(depth + 1)?));
                    }
                }
                let mut items = vec![first];
                loop {
                    if self.eat(b'}') {
                        return Ok(RegoValue::Set(items));
                    }
                    if !self.eat(b',') {
                        return Err(format!("expected , or }} at {}", self.i));
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let text =
                    std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                Ok(RegoValue::Number(text.to_string()))
            }
            other => Err(format!("unexpected {:?} at {}", other as char, self.i)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        // A JSON string; let serde_json do the unescaping.
        let start = self.i;
        self.i += 1;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    let raw =
                        std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                    return serde_json::from_str(raw).map_err(|e| e.to_string());
                }
                _ => self.i += 1,
            }
        }
        Err("unterminated string".into())
    }
}

impl RegoValue {
    fn rank(&self) -> u8 {
        match self {
            RegoValue::Null => 0,
            RegoValue::Bool(_) => 1,
            RegoValue::Number(_) => 2,
            RegoValue::String(_) => 3,
            RegoValue::Array(_) => 4,
            RegoValue::Object(_) => 5,
            RegoValue::Set(_) => 6,
        }
    }

    /// Rego's ordering of values (`ast.Compare`), used to print sets and
    /// objects in OPA's order.
    pub(crate) fn compare(&self, other: &RegoValue) -> Ordering {
        use RegoValue::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a.cmp(b),
            (Number(a), Number(b)) => {
                let (x, y) = (
                    a.parse::<f64>().unwrap_or(0.0),
                    b.parse::<f64>().unwrap_or(0.0),
                );
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
            (String(a), String(b)) => a.cmp(b),
            (Array(a), Array(b)) | (Set(a), Set(b)) => {
                for (x, y) in a.iter().zip(b) {
                    match x.compare(y) {
                        Ordering::Equal => {}
                        other => return other,
                    }
                }
                a.len().cmp(&b.len())
            }
            (Object(a), Object(b)) => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                    match ka.compare(kb).then_with(|| va.compare(vb)) {
                        Ordering::Equal => {}
                        other => return other,
                    }
                }
                a.len().cmp(&b.len())
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// Sort sets and objects into Rego's order, recursively.
    pub(crate) fn normalise(&mut self) {
        match self {
            RegoValue::Array(items) => items.iter_mut().for_each(RegoValue::normalise),
            RegoValue::Set(items) => {
                items.iter_mut().for_each(RegoValue::normalise);
                items.sort_by(|a, b| a.compare(b));
            }
            RegoValue::Object(fields) => {
                for (k, v) in fields.iter_mut() {
                    k.normalise();
                    v.normalise();
                }
                fields.sort_by(|(a, _), (b, _)| a.compare(b));
            }
            _ => {}
        }
    }

    /// OPA's text for the value (`ast.Value.String()`).
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            RegoValue::Null => out.push_str("null"),
            RegoValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            RegoValue::Number(n) => out.push_str(n),
            RegoValue::String(s) => out.push_str(&super::sprintf::go_quote(s)),
            RegoValue::Array(items) => {
                out.push('[');
                write_list(out, items);
                out.push(']');
            }
            RegoValue::Set(items) if items.is_empty() => out.push_str("set()"),
            RegoValue::Set(items) => {
                out.push('{');
                write_list(out, items);
                out.push('}');
            }
            RegoValue::Object(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    k.write(out);
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_list(out: &mut String, items: &[RegoValue]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sets_objects_and_keys() {
        let mut v =
            parse(r#"[{"b", "a"}, set(), {"k": [1, 2.5e3, null]}, {1: true}, "q\"x"]"#).unwrap();
        v.normalise();
        assert_eq!(
            v.text(),
            r#"[{"a", "b"}, set(), {"k": [1, 2.5e3, null]}, {1: true}, "q\"x"]"#
        );
        let mut o = parse(r#"{"z": 1, "a": {"y", 3}}"#).unwrap();
        o.normalise();
        assert_eq!(o.text(), r#"{"a": {3, "y"}, "z": 1}"#);
    }

    #[test]
    fn bad_text_and_deep_nesting_are_errors() {
        assert!(parse("{1, ").is_err());
        assert!(parse("[1] x").is_err());
        assert!(parse(&"[".repeat(100_000)).is_err());
    }
}
