//! `units.parse` (SI and binary suffixes, `m` for milli: Kubernetes
//! quantities such as `100m` or `1.5Gi`) and `units.parse_bytes`.

use serde_json::Value;

use super::{BuiltinError, Context, Output, err, number, str_arg};

/// Split `1.5e3Ki` into its number and unit, as OPA's `extractNumAndUnit`.
fn split(s: &str) -> Result<(&str, &str), BuiltinError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    // An exponent only when digits follow (`1e3`); `1E` is the exa unit.
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        let digits_start = j;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        if j > digits_start {
            if j - digits_start > 3 {
                return err("exponent too large");
            }
            i = j;
        }
    }
    Ok((&s[..i], &s[i..]))
}

fn amount(num: &str) -> Result<f64, BuiltinError> {
    if num.is_empty() {
        return err("no amount provided");
    }
    num.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .ok_or_else(|| BuiltinError("could not parse amount to a number".into()))
}

pub(crate) fn parse(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let s = str_arg(args, 0)?.replace('"', "");
    if s.contains(' ') {
        return err("spaces not allowed in resource strings");
    }
    let (num, unit) = split(&s)?;
    let amount = amount(num)?;
    // The first letter keeps its case (m is milli, M is mega), the rest is lowered.
    let unit = match unit.char_indices().nth(1) {
        Some((at, _)) => format!("{}{}", &unit[..at], unit[at..].to_lowercase()),
        None => unit.to_string(),
    };
    let factor = match unit.as_str() {
        "m" => 0.001,
        "" => 1.0,
        "k" | "K" => 1e3,
        "ki" | "Ki" => 1024.0,
        "M" => 1e6,
        "mi" | "Mi" => 1024f64.powi(2),
        "g" | "G" => 1e9,
        "gi" | "Gi" => 1024f64.powi(3),
        "t" | "T" => 1e12,
        "ti" | "Ti" => 1024f64.powi(4),
        "p" | "P" => 1e15,
        "pi" | "Pi" => 1024f64.powi(5),
        "e" | "E" => 1e18,
        "ei" | "Ei" => 1024f64.powi(6),
        other => return err(format!("unit {other} not recognized")),
    };
    Ok(number(round10(amount * factor)).into())
}

/// OPA computes with exact rationals and prints ten decimals; round the float
/// the same way so that `0.1m` is 0.0001, not 0.00010000000000000002.
fn round10(f: f64) -> f64 {
    if f.abs() >= 1e6 {
        return f;
    }
    (f * 1e10).round() / 1e10
}

pub(crate) fn parse_bytes(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let s = str_arg(args, 0)?.to_lowercase().replace('"', "");
    if s.contains(' ') {
        return err("spaces not allowed in resource strings");
    }
    let (num, unit) = split(&s)?;
    let amount = amount(num).map_err(|e| BuiltinError(e.0.replace("amount", "byte amount")))?;
    let factor = match unit {
        "" => 1.0,
        "kb" | "k" => 1e3,
        "kib" | "ki" => 1024.0,
        "mb" | "m" => 1e6,
        "mib" | "mi" => 1024f64.powi(2),
        "gb" | "g" => 1e9,
        "gib" | "gi" => 1024f64.powi(3),
        "tb" | "t" => 1e12,
        "tib" | "ti" => 1024f64.powi(4),
        "pb" | "p" => 1e15,
        "pib" | "pi" => 1024f64.powi(5),
        "eb" | "e" => 1e18,
        "eib" | "ei" => 1024f64.powi(6),
        other => return err(format!("byte unit {other} not recognized")),
    };
    // Whole bytes, truncated as OPA does.
    let total = (amount * factor).trunc();
    if total.abs() < 9.0e15 {
        Ok(Value::from(total as i64).into())
    } else {
        Ok(number(total).into())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Output, call};
    use serde_json::json;

    fn v(name: &str, s: &str) -> Result<serde_json::Value, String> {
        match call(name, vec![json!(s)]) {
            Ok(Output::Value(v)) => Ok(v),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(v("units.parse", "100m").unwrap(), json!(0.1));
        assert_eq!(v("units.parse", "2").unwrap(), json!(2));
        assert_eq!(v("units.parse", "1.5Gi").unwrap(), json!(1610612736));
        assert_eq!(v("units.parse", "1M").unwrap(), json!(1000000));
        assert_eq!(v("units.parse", "1e3").unwrap(), json!(1000));
        assert_eq!(
            v("units.parse", "1E").unwrap(),
            json!(1000000000000000000i64)
        );
        assert!(v("units.parse", "1 G").unwrap_err().contains("spaces"));
        assert!(
            v("units.parse", "1Q")
                .unwrap_err()
                .contains("not recognized")
        );
        assert!(v("units.parse", "Gi").unwrap_err().contains("no amount"));
    }

    #[test]
    fn bytes() {
        assert_eq!(v("units.parse_bytes", "1KB").unwrap(), json!(1000));
        assert_eq!(v("units.parse_bytes", "1Ki").unwrap(), json!(1024));
        assert_eq!(v("units.parse_bytes", "1.5MiB").unwrap(), json!(1572864));
        assert_eq!(v("units.parse_bytes", "12").unwrap(), json!(12));
        assert!(v("units.parse_bytes", "1ZB").is_err());
    }
}
