//! `sprintf(format, values)`: Go's `fmt.Sprintf`, as OPA calls it.
//!
//! OPA hands Go an `int` for an integral number, a `float64` for another
//! number, a `string` for a string, and the Rego text of anything else
//! (`true`, `null`, `["a", "b"]`, `{"k": 1}`), so those four cases are what
//! is formatted here, verb by verb, including Go's error notation
//! (`%!d(string=x)`, `%!v(MISSING)`, `%!(EXTRA ...)`) which shows up in
//! messages of policies with a wrong verb.

use serde_json::Value;

use super::{BuiltinError, Context, Output, RegoValue, err};

/// One operand, as Go sees it.
#[derive(Debug, Clone)]
enum GoArg {
    Int(i128),
    Float(f64),
    Str(String),
}

impl GoArg {
    fn from_rego(v: &RegoValue) -> GoArg {
        match v {
            RegoValue::Number(text) => {
                if let Ok(i) = text.parse::<i128>() {
                    GoArg::Int(i)
                } else {
                    GoArg::Float(text.parse::<f64>().unwrap_or(f64::NAN))
                }
            }
            RegoValue::String(s) => GoArg::Str(s.clone()),
            other => {
                let mut other = other.clone();
                other.normalise();
                GoArg::Str(other.text())
            }
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            GoArg::Int(_) => "int",
            GoArg::Float(_) => "float64",
            GoArg::Str(_) => "string",
        }
    }

    /// `%v` without flags, for the error notations.
    fn plain(&self) -> String {
        match self {
            GoArg::Int(i) => i.to_string(),
            GoArg::Float(f) => format_g(*f, None, false),
            GoArg::Str(s) => s.clone(),
        }
    }
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The largest width or precision honoured; Go has no limit, but a policy
/// must not make the host allocate gigabytes of padding.
const MAX_WIDTH: usize = 1 << 16;

#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

pub(crate) fn sprintf(_: &mut Context<'_>, args: &[RegoValue]) -> Result<Output, BuiltinError> {
    let Some(RegoValue::String(format)) = args.first() else {
        return err("operand 1 must be string");
    };
    let Some(RegoValue::Array(items)) = args.get(1) else {
        return err("operand 2 must be array");
    };
    let values: Vec<GoArg> = items.iter().map(GoArg::from_rego).collect();
    Ok(Value::String(go_sprintf(format, &values)).into())
}

fn go_sprintf(format: &str, values: &[GoArg]) -> String {
    let mut out = String::with_capacity(format.len() + 16 * values.len());
    let mut next = 0usize;
    let mut reordered = false;
    let chars: Vec<char> = format.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while i < chars.len() {
            match chars[i] {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            i += 1;
        }
        // An explicit argument index, `%[2]d`.
        let mut take_index = |i: &mut usize, next: &mut usize| {
            if *i < chars.len() && chars[*i] == '[' {
                let start = *i + 1;
                let mut j = start;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
                if j < chars.len() && chars[j] == ']' && j > start {
                    let n: usize = chars[start..j]
                        .iter()
                        .collect::<String>()
                        .parse()
                        .unwrap_or(0);
                    if n >= 1 {
                        *next = n - 1;
                        reordered = true;
                    }
                    *i = j + 1;
                }
            }
        };
        take_index(&mut i, &mut next);
        if i < chars.len() && chars[i] == '*' {
            i += 1;
            if let Some(GoArg::Int(w)) = values.get(next) {
                if *w < 0 {
                    spec.minus = true;
                }
                spec.width = Some((w.unsigned_abs() as usize).min(MAX_WIDTH));
            }
            next += 1;
        } else {
            spec.width = digits(&chars, &mut i).map(|w| w.min(MAX_WIDTH));
        }
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            take_index(&mut i, &mut next);
            if i < chars.len() && chars[i] == '*' {
                i += 1;
                if let Some(GoArg::Int(p)) = values.get(next) {
                    spec.precision = (*p >= 0).then(|| (*p as usize).min(MAX_WIDTH));
                }
                next += 1;
            } else {
                spec.precision = Some(digits(&chars, &mut i).unwrap_or(0).min(MAX_WIDTH));
            }
        }
        take_index(&mut i, &mut next);
        let Some(&verb) = chars.get(i) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        match values.get(next) {
            None => {
                out.push_str(&format!("%!{verb}(MISSING)"));
            }
            Some(value) => {
                out.push_str(&format_one(&spec, verb, value));
                next += 1;
            }
        }
    }
    if !reordered && next < values.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = values[next..]
            .iter()
            .map(|v| format!("{}={}", v.type_name(), v.plain()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

fn digits(chars: &[char], i: &mut usize) -> Option<usize> {
    let start = *i;
    while *i < chars.len() && chars[*i].is_ascii_digit() {
        *i += 1;
    }
    (*i > start).then(|| {
        chars[start..*i]
            .iter()
            .collect::<String>()
            .parse()
            .unwrap_or(MAX_WIDTH)
    })
}

fn bad_verb(verb: char, value: &GoArg) -> String {
    format!("%!{verb}({}={})", value.type_name(), value.plain())
}

fn format_one(spec: &Spec, verb: char, value: &GoArg) -> String {
    if verb == 'T' {
        return pad(spec, value.type_name().to_string(), false);
    }
    match value {
        GoArg::Int(i) => match verb {
            'v' | 'd' => int_text(spec, *i, 10, false, ""),
            'b' => int_text(spec, *i, 2, false, if spec.sharp { "0b" } else { "" }),
            'o' => int_text(spec, *i, 8, false, if spec.sharp { "0" } else { "" }),
            'O' => int_text(spec, *i, 8, false, "0o"),
            'x' => int_text(spec, *i, 16, false, if spec.sharp { "0x" } else { "" }),
            'X' => int_text(spec, *i, 16, true, if spec.sharp { "0X" } else { "" }),
            'c' => pad(spec, char_of(*i).to_string(), false),
            'q' => pad(spec, format!("'{}'", char_of(*i)), false),
            'U' => pad(spec, format!("U+{:04X}", *i), false),
            _ => bad_verb(verb, value),
        },
        GoArg::Float(f) => match verb {
            'v' | 'g' | 'G' => {
                let text = format_g(*f, spec.precision, verb == 'G');
                float_text(spec, *f, text)
            }
            'e' | 'E' => {
                let text = format_e(*f, spec.precision.unwrap_or(6), verb == 'E');
                float_text(spec, *f, text)
            }
            'f' | 'F' => {
                let text = format_f(*f, spec.precision.unwrap_or(6));
                float_text(spec, *f, text)
            }
            _ => bad_verb(verb, value),
        },
        GoArg::Str(s) => match verb {
            'v' | 's' => pad(spec, truncate(s, spec.precision), false),
            'q' => pad(spec, go_quote(&truncate(s, spec.precision)), false),
            'x' | 'X' => {
                let bytes = truncate(s, spec.precision);
                let mut text = String::with_capacity(bytes.len() * 2);
                for b in bytes.bytes() {
                    if verb == 'x' {
                        text.push_str(&format!("{b:02x}"));
                    } else {
                        text.push_str(&format!("{b:02X}"));
                    }
                }
                pad(spec, text, false)
            }
            _ => bad_verb(verb, value),
        },
    }
}

fn char_of(i: i128) -> char {
    u32::try_from(i)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{FFFD}')
}

fn truncate(s: &str, precision: Option<usize>) -> String {
    match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

/// Pad to the width; `numeric` allows zero padding (after the sign).
fn pad(spec: &Spec, text: String, numeric: bool) -> String {
    let len = text.chars().count();
    let Some(width) = spec.width.filter(|w| *w > len) else {
        return text;
    };
    let fill = width - len;
    if spec.minus {
        return text + &" ".repeat(fill);
    }
    if spec.zero && numeric {
        let sign_len = text
            .chars()
            .next()
            .filter(|c| matches!(c, '+' | '-' | ' '))
            .map_or(0, |_| 1);
        let (sign, rest) = text.split_at(sign_len);
        return format!("{sign}{}{rest}", "0".repeat(fill));
    }
    " ".repeat(fill) + &text
}

fn int_text(spec: &Spec, i: i128, radix: u32, upper: bool, prefix: &str) -> String {
    let magnitude = i.unsigned_abs();
    let mut digits = match radix {
        2 => format!("{magnitude:b}"),
        8 => format!("{magnitude:o}"),
        16 if upper => format!("{magnitude:X}"),
        16 => format!("{magnitude:x}"),
        _ => magnitude.to_string(),
    };
    if let Some(p) = spec.precision {
        if p == 0 && magnitude == 0 {
            digits.clear();
        } else if digits.len() < p {
            digits = "0".repeat(p - digits.len()) + &digits;
        }
    }
    let sign = if i < 0 {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    // Go ignores the zero flag when a precision is given.
    let numeric = spec.precision.is_none();
    pad(spec, format!("{sign}{prefix}{digits}"), numeric)
}

fn float_text(spec: &Spec, f: f64, text: String) -> String {
    // JSON has no infinities or NaN, so every float here is finite.
    let text = if f.is_sign_negative() && f != 0.0 {
        text
    } else if spec.plus {
        format!("+{text}")
    } else if spec.space {
        format!(" {text}")
    } else {
        text
    };
    pad(spec, text, true)
}

/// The decimal digits of `f` (no leading or trailing zeros) and the position
/// of the decimal point, like Go's `decimalSlice`: `digits × 10^(dp - len)`.
/// `significant`: round to that many digits; `None`: shortest round trip.
fn decimal(f: f64, significant: Option<usize>) -> (Vec<u8>, i32) {
    let f = f.abs();
    if f == 0.0 {
        return (Vec::new(), 0);
    }
    let text = match significant {
        Some(n) => format!("{:.*e}", n.max(1) - 1, f),
        None => format!("{f:e}"),
    };
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    (digits, exp + 1)
}

fn digit(digits: &[u8], i: i32) -> char {
    if i < 0 {
        return '0';
    }
    digits.get(i as usize).map_or('0', |d| *d as char)
}

/// Go's `%e` with `prec` digits after the point.
fn fmt_e(negative: bool, digits: &[u8], dp: i32, prec: usize, upper: bool) -> String {
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    out.push(digit(digits, 0));
    if prec > 0 {
        out.push('.');
        for i in 1..=prec as i32 {
            out.push(digit(digits, i));
        }
    }
    out.push(if upper { 'E' } else { 'e' });
    let exp = if digits.is_empty() { 0 } else { dp - 1 };
    out.push(if exp < 0 { '-' } else { '+' });
    let exp = exp.unsigned_abs();
    if exp < 10 {
        out.push('0');
    }
    out.push_str(&exp.to_string());
    out
}

/// Go's `%f` with `prec` digits after the point.
fn fmt_f(negative: bool, digits: &[u8], dp: i32, prec: usize) -> String {
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if dp > 0 {
        for i in 0..dp {
            out.push(digit(digits, i));
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 0..prec as i32 {
            out.push(digit(digits, dp + i));
        }
    }
    out
}

fn format_e(f: f64, prec: usize, upper: bool) -> String {
    let (digits, dp) = decimal(f, Some(prec + 1));
    fmt_e(f.is_sign_negative() && f != 0.0, &digits, dp, prec, upper)
}

fn format_f(f: f64, prec: usize) -> String {
    // Rust rounds half to even on the exact binary value, as Go does.
    let text = format!("{:.*}", prec, f.abs());
    if f.is_sign_negative() && f != 0.0 {
        format!("-{text}")
    } else {
        text
    }
}

/// Go's `%g` (`%v` for floats): shortest digits without a precision.
fn format_g(f: f64, precision: Option<usize>, upper: bool) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let negative = f.is_sign_negative() && f != 0.0;
    let shortest = precision.is_none();
    let (digits, dp) = decimal(f, precision.map(|p| p.max(1)));
    let nd = digits.len().max(1) as i32;
    let mut prec = match precision {
        None => nd,
        Some(p) => p.max(1) as i32,
    };
    let mut eprec = prec;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let exp = dp - 1;
    if !digits.is_empty() && (exp < -4 || exp >= eprec) {
        if prec > nd {
            prec = nd;
        }
        return fmt_e(negative, &digits, dp, (prec - 1).max(0) as usize, upper);
    }
    if prec > dp {
        prec = nd;
    }
    fmt_f(negative, &digits, dp, (prec - dp).max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(format: &str, args: Value) -> String {
        s_rego(format, &args.to_string())
    }

    fn s_rego(format: &str, args: &str) -> String {
        let RegoValue::Array(items) = super::super::rego_value::parse(args).unwrap() else {
            panic!()
        };
        let values: Vec<GoArg> = items.iter().map(GoArg::from_rego).collect();
        go_sprintf(format, &values)
    }

    #[test]
    fn common_verbs_match_go() {
        assert_eq!(s("%v is %d", json!(["x", 3])), "x is 3");
        assert_eq!(s("%s", json!(["a"])), "a");
        assert_eq!(s("%v", json!([["a", "b"]])), r#"["a", "b"]"#);
        assert_eq!(
            s("%v", json!([{"b": 1, "a": "x"}])),
            r#"{"a": "x", "b": 1}"#
        );
        assert_eq!(s("%v %v", json!([true, null])), "true null");
        assert_eq!(s("%q", json!(["a\"b"])), r#""a\"b""#);
        assert_eq!(s("%5s|%-5s|", json!(["ab", "cd"])), "   ab|cd   |");
        assert_eq!(
            s("%05d %+d %x %X %o %b", json!([42, 5, 255, 255, 8, 5])),
            "00042 +5 ff FF 10 101"
        );
        assert_eq!(
            s("%.2f %f %e", json!([2.34567, 1.5, 1234.5])),
            "2.35 1.500000 1.234500e+03"
        );
        assert_eq!(
            s("%v %v %v %v", json!([1.5, 1000000.5, 1e21, 0.00001])),
            "1.5 1.0000005e+06 1e+21 1e-05"
        );
        assert_eq!(
            s("%g %.3g %.4g", json!([100000.5, 2.34567, 1.5])),
            "100000.5 2.35 1.5"
        );
        assert_eq!(s("%.3s|%x", json!(["abcdef", "hi"])), "abc|6869");
        assert_eq!(s("100%%", json!([])), "100%");
        assert_eq!(s("%T %T %T", json!([1, 1.5, "s"])), "int float64 string");
    }

    #[test]
    fn sets_print_as_opa_prints_them() {
        assert_eq!(
            s_rego("you must provide labels: %v", r#"[{"geo"}]"#),
            r#"you must provide labels: {"geo"}"#
        );
        assert_eq!(
            s_rego("%v %v", r#"[{"b", "a"}, set()]"#),
            r#"{"a", "b"} set()"#
        );
    }

    #[test]
    fn go_error_notation() {
        assert_eq!(s("%d", json!(["x"])), "%!d(string=x)");
        assert_eq!(s("%s", json!([5])), "%!s(int=5)");
        assert_eq!(s("%v %v", json!(["a"])), "a %!v(MISSING)");
        assert_eq!(s("%v", json!(["a", 1, "b"])), "a%!(EXTRA int=1, string=b)");
        assert_eq!(s("%", json!([])), "%!(NOVERB)");
        assert_eq!(s("%[2]v %[1]v", json!(["a", "b"])), "b a");
    }

    #[test]
    fn huge_widths_are_bounded() {
        let out = s("%999999999999d", json!([1]));
        assert!(out.len() <= MAX_WIDTH + 1, "{}", out.len());
    }
}
