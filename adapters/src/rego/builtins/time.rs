//! Time builtins, on `jiff` (time zones from the system's tz database).
//! Layouts are Go's reference-time layouts (`2006-01-02T15:04:05Z07:00`),
//! translated here, since that is what Rego policies are written against.

use jiff::civil::{Date, DateTime};
use jiff::tz::{Offset, TimeZone};
use jiff::{Span, Timestamp, Zoned};
use serde_json::Value;

use super::{BuiltinError, Context, Output, arg, err, int_arg, str_arg, type_name};

const RFC3339: &str = "2006-01-02T15:04:05Z07:00";
const RFC3339_NANO: &str = "2006-01-02T15:04:05.999999999Z07:00";

/// Go's named layouts, which OPA accepts by name.
fn named_layout(name: &str) -> Option<&'static str> {
    Some(match name {
        "ANSIC" => "Mon Jan _2 15:04:05 2006",
        "UnixDate" => "Mon Jan _2 15:04:05 MST 2006",
        "RubyDate" => "Mon Jan 02 15:04:05 -0700 2006",
        "RFC822" => "02 Jan 06 15:04 MST",
        "RFC822Z" => "02 Jan 06 15:04 -0700",
        "RFC850" => "Monday, 02-Jan-06 15:04:05 MST",
        "RFC1123" => "Mon, 02 Jan 2006 15:04:05 MST",
        "RFC1123Z" => "Mon, 02 Jan 2006 15:04:05 -0700",
        "RFC3339" => RFC3339,
        "RFC3339Nano" => RFC3339_NANO,
        _ => return None,
    })
}

fn jiff_err(e: jiff::Error) -> BuiltinError {
    BuiltinError(e.to_string())
}

/// Nanoseconds since the epoch, in the range Go's `UnixNano` can represent.
fn to_ns(ts: Timestamp) -> Result<Output, BuiltinError> {
    let ns = ts.as_nanosecond();
    i64::try_from(ns)
        .map(|ns| Output::Value(Value::from(ns)))
        .map_err(|_| BuiltinError("time outside of valid range".into()))
}

fn ns_of(v: &Value) -> Result<i64, BuiltinError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| BuiltinError("timestamp too big".into())),
        other => err(format!(
            "operand 1 must be one of {{number, array}} but got {}",
            type_name(other)
        )),
    }
}

fn time_zone(name: &str) -> Result<TimeZone, BuiltinError> {
    match name {
        "" | "UTC" => Ok(TimeZone::UTC),
        "Local" => Ok(TimeZone::system()),
        other => TimeZone::get(other).map_err(jiff_err),
    }
}

/// OPA's time operand: `ns`, `[ns, tz]` or `[ns, tz, layout]`.
fn zoned_arg(v: &Value) -> Result<(Zoned, Option<String>), BuiltinError> {
    let (ns, tz, layout) = match v {
        Value::Array(items) => {
            let ns = ns_of(
                items
                    .first()
                    .ok_or_else(|| BuiltinError("empty time operand".into()))?,
            )?;
            let tz = match items.get(1) {
                Some(Value::String(s)) => time_zone(s)?,
                Some(other) => {
                    return err(format!(
                        "time zone must be string, not {}",
                        type_name(other)
                    ));
                }
                None => TimeZone::UTC,
            };
            let layout = items.get(2).and_then(Value::as_str).map(str::to_string);
            (ns, tz, layout)
        }
        other => (ns_of(other)?, TimeZone::UTC, None),
    };
    let ts = Timestamp::from_nanosecond(ns.into()).map_err(jiff_err)?;
    Ok((ts.to_zoned(tz), layout))
}

pub(crate) fn now_ns(ctx: &mut Context<'_>, _: &[Value]) -> Result<Output, BuiltinError> {
    let ns = *ctx
        .state
        .now_ns
        .get_or_insert_with(|| i64::try_from(Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX));
    Ok(Value::from(ns).into())
}

pub(crate) fn parse_rfc3339_ns(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    to_ns(go_parse(RFC3339, str_arg(args, 0)?)?)
}

pub(crate) fn parse_ns(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let layout = str_arg(args, 0)?;
    let layout = named_layout(layout).unwrap_or(layout);
    to_ns(go_parse(layout, str_arg(args, 1)?)?)
}

pub(crate) fn format(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let (zoned, layout) = zoned_arg(arg(args, 0)?)?;
    let layout = match layout.as_deref() {
        None | Some("") => RFC3339_NANO,
        Some(name) => named_layout(name).unwrap_or(name),
    };
    Ok(Value::String(go_format(layout, &zoned)).into())
}

pub(crate) fn date(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let (z, _) = zoned_arg(arg(args, 0)?)?;
    Ok(Value::from(vec![
        i64::from(z.year()),
        i64::from(z.month()),
        i64::from(z.day()),
    ])
    .into())
}

pub(crate) fn clock(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let (z, _) = zoned_arg(arg(args, 0)?)?;
    Ok(Value::from(vec![
        i64::from(z.hour()),
        i64::from(z.minute()),
        i64::from(z.second()),
    ])
    .into())
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn weekday_name(z: &Zoned) -> &'static str {
    WEEKDAYS[(z.weekday().to_monday_one_offset() - 1) as usize]
}

pub(crate) fn weekday(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let (z, _) = zoned_arg(arg(args, 0)?)?;
    Ok(Value::String(weekday_name(&z).into()).into())
}

/// A civil date with Go's normalisation: months past 12 roll into years and
/// days past the month's end roll into the next month (January 31 plus one
/// month is March 3 or 2).
fn normalised_date(year: i64, month: i64, day: i64) -> Result<Date, BuiltinError> {
    let months = year * 12 + (month - 1);
    let (y, m) = (months.div_euclid(12), months.rem_euclid(12) + 1);
    let y = i16::try_from(y).map_err(|_| BuiltinError("time outside of valid range".into()))?;
    let first = Date::new(y, m as i8, 1).map_err(jiff_err)?;
    first
        .checked_add(Span::new().try_days(day - 1).map_err(jiff_err)?)
        .map_err(jiff_err)
}

pub(crate) fn add_date(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let (z, _) = zoned_arg(arg(args, 0)?)?;
    let years = int_arg(args, 1)?;
    let months = int_arg(args, 2)?;
    let days = int_arg(args, 3)?;
    let date = normalised_date(
        i64::from(z.year()) + years,
        i64::from(z.month()) + months,
        i64::from(z.day()) + days,
    )?;
    let dt = date.to_datetime(z.time());
    let moved = dt.to_zoned(z.time_zone().clone()).map_err(jiff_err)?;
    to_ns(moved.timestamp())
}

pub(crate) fn diff(_: &mut Context<'_>, args: &[Value]) -> Result<Output, BuiltinError> {
    let (a, _) = zoned_arg(arg(args, 0)?)?;
    let (b, _) = zoned_arg(arg(args, 1)?)?;
    let b = b.with_time_zone(a.time_zone().clone());
    let (t1, t2) = if a.timestamp() > b.timestamp() {
        (b, a)
    } else {
        (a, b)
    };
    let mut year = i64::from(t2.year()) - i64::from(t1.year());
    let mut month = i64::from(t2.month()) - i64::from(t1.month());
    let mut day = i64::from(t2.day()) - i64::from(t1.day());
    let mut hour = i64::from(t2.hour()) - i64::from(t1.hour());
    let mut min = i64::from(t2.minute()) - i64::from(t1.minute());
    let mut sec = i64::from(t2.second()) - i64::from(t1.second());
    if sec < 0 {
        sec += 60;
        min -= 1;
    }
    if min < 0 {
        min += 60;
        hour -= 1;
    }
    if hour < 0 {
        hour += 24;
        day -= 1;
    }
    if day < 0 {
        day += i64::from(t1.date().days_in_month());
        month -= 1;
    }
    if month < 0 {
        month += 12;
        year -= 1;
    }
    Ok(Value::from(vec![year, month, day, hour, min, sec]).into())
}

/// Go's `time.ParseDuration`, plus OPA's `d`, `w` and `y` units.
pub(crate) fn parse_duration_ns(
    _: &mut Context<'_>,
    args: &[Value],
) -> Result<Output, BuiltinError> {
    let s = str_arg(args, 0)?;
    let invalid = || BuiltinError(format!("time: invalid duration {s:?}"));
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Value::from(0).into());
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| BuiltinError(format!("time: missing unit in duration {s:?}")))?;
        if digits == 0 {
            return Err(invalid());
        }
        let amount: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 24.0 * 3600e9,
            "w" => 7.0 * 24.0 * 3600e9,
            "y" => 365.0 * 24.0 * 3600e9,
            other => return err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        total += amount * scale;
    }
    if total > 9.223_372_036_854_775e18 {
        return Err(invalid());
    }
    let ns = total.round() as i64;
    Ok(Value::from(if negative { -ns } else { ns }).into())
}

/// One element of a Go layout.
#[derive(Debug, Clone, PartialEq)]
enum Chunk {
    Literal(String),
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    ZeroYearDay,
    UnderYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    Tz,
    /// Numeric offset: `iso` prints `Z` for UTC; `colons` and `seconds` as in the layout.
    Offset {
        iso: bool,
        colons: bool,
        minutes: bool,
        seconds: bool,
    },
    /// Fractional seconds: `n` digits; `trim` drops trailing zeros (`.999`).
    Frac {
        sep: char,
        n: usize,
        trim: bool,
    },
}

/// A layout token and the chunk it stands for.
type Token = (&'static str, fn() -> Chunk);

fn tokenize(layout: &str) -> Vec<Chunk> {
    const TABLE: &[Token] = &[
        ("January", || Chunk::LongMonth),
        ("Jan", || Chunk::Month),
        ("Monday", || Chunk::LongWeekDay),
        ("Mon", || Chunk::WeekDay),
        ("MST", || Chunk::Tz),
        ("2006", || Chunk::LongYear),
        ("002", || Chunk::ZeroYearDay),
        ("__2", || Chunk::UnderYearDay),
        ("_2", || Chunk::UnderDay),
        ("01", || Chunk::ZeroMonth),
        ("02", || Chunk::ZeroDay),
        ("03", || Chunk::ZeroHour12),
        ("04", || Chunk::ZeroMinute),
        ("05", || Chunk::ZeroSecond),
        ("06", || Chunk::Year),
        ("15", || Chunk::Hour),
        ("PM", || Chunk::PM),
        ("pm", || Chunk::Pm),
        ("Z07:00:00", || Chunk::Offset {
            iso: true,
            colons: true,
            minutes: true,
            seconds: true,
        }),
        ("Z070000", || Chunk::Offset {
            iso: true,
            colons: false,
            minutes: true,
            seconds: true,
        }),
        ("Z07:00", || Chunk::Offset {
            iso: true,
            colons: true,
            minutes: true,
            seconds: false,
        }),
        ("Z0700", || Chunk::Offset {
            iso: true,
            colons: false,
            minutes: true,
            seconds: false,
        }),
        ("Z07", || Chunk::Offset {
            iso: true,
            colons: false,
            minutes: false,
            seconds: false,
        }),
        ("-07:00:00", || Chunk::Offset {
            iso: false,
            colons: true,
            minutes: true,
            seconds: true,
        }),
        ("-070000", || Chunk::Offset {
            iso: false,
            colons: false,
            minutes: true,
            seconds: true,
        }),
        ("-07:00", || Chunk::Offset {
            iso: false,
            colons: true,
            minutes: true,
            seconds: false,
        }),
        ("-0700", || Chunk::Offset {
            iso: false,
            colons: false,
            minutes: true,
            seconds: false,
        }),
        ("-07", || Chunk::Offset {
            iso: false,
            colons: false,
            minutes: false,
            seconds: false,
        }),
        ("1", || Chunk::NumMonth),
        ("2", || Chunk::Day),
        ("3", || Chunk::Hour12),
        ("4", || Chunk::Minute),
        ("5", || Chunk::Second),
    ];
    let mut chunks = Vec::new();
    let mut literal = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        let bytes = rest.as_bytes();
        // Fractional seconds: `.000`, `,999`, not followed by a digit.
        if (bytes[0] == b'.' || bytes[0] == b',')
            && bytes.len() > 1
            && (bytes[1] == b'0' || bytes[1] == b'9')
        {
            let digit = bytes[1];
            let n = bytes[1..].iter().take_while(|b| **b == digit).count();
            if !bytes.get(1 + n).is_some_and(u8::is_ascii_digit) {
                flush(&mut chunks, &mut literal);
                chunks.push(Chunk::Frac {
                    sep: bytes[0] as char,
                    n,
                    trim: digit == b'9',
                });
                rest = &rest[1 + n..];
                continue;
            }
        }
        for (token, chunk) in TABLE {
            if rest.starts_with(token) {
                // `Jan`/`Mon` inside a word (`Janet`) stay literal, as in Go.
                let word = matches!(*token, "Jan" | "Mon")
                    && rest[token.len()..].starts_with(|c: char| c.is_ascii_lowercase());
                if !word {
                    flush(&mut chunks, &mut literal);
                    chunks.push(chunk());
                    rest = &rest[token.len()..];
                    continue 'outer;
                }
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        literal.push(c);
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut chunks, &mut literal);
    chunks
}

fn flush(chunks: &mut Vec<Chunk>, literal: &mut String) {
    if !literal.is_empty() {
        chunks.push(Chunk::Literal(std::mem::take(literal)));
    }
}

fn go_format(layout: &str, z: &Zoned) -> String {
    let mut out = String::new();
    for chunk in tokenize(layout) {
        match chunk {
            Chunk::Literal(s) => out.push_str(&s),
            Chunk::LongMonth => out.push_str(MONTHS[(z.month() - 1) as usize]),
            Chunk::Month => out.push_str(&MONTHS[(z.month() - 1) as usize][..3]),
            Chunk::NumMonth => out.push_str(&z.month().to_string()),
            Chunk::ZeroMonth => out.push_str(&format!("{:02}", z.month())),
            Chunk::LongWeekDay => out.push_str(weekday_name(z)),
            Chunk::WeekDay => out.push_str(&weekday_name(z)[..3]),
            Chunk::Day => out.push_str(&z.day().to_string()),
            Chunk::UnderDay => out.push_str(&format!("{:>2}", z.day())),
            Chunk::ZeroDay => out.push_str(&format!("{:02}", z.day())),
            Chunk::ZeroYearDay => out.push_str(&format!("{:03}", z.day_of_year())),
            Chunk::UnderYearDay => out.push_str(&format!("{:>3}", z.day_of_year())),
            Chunk::Hour => out.push_str(&format!("{:02}", z.hour())),
            Chunk::Hour12 => out.push_str(&hour12(z.hour()).to_string()),
            Chunk::ZeroHour12 => out.push_str(&format!("{:02}", hour12(z.hour()))),
            Chunk::Minute => out.push_str(&z.minute().to_string()),
            Chunk::ZeroMinute => out.push_str(&format!("{:02}", z.minute())),
            Chunk::Second => out.push_str(&z.second().to_string()),
            Chunk::ZeroSecond => out.push_str(&format!("{:02}", z.second())),
            Chunk::LongYear => out.push_str(&format!("{:04}", z.year())),
            Chunk::Year => out.push_str(&format!("{:02}", z.year().rem_euclid(100))),
            Chunk::PM => out.push_str(if z.hour() >= 12 { "PM" } else { "AM" }),
            Chunk::Pm => out.push_str(if z.hour() >= 12 { "pm" } else { "am" }),
            Chunk::Tz => {
                let abbreviation = z.strftime("%Z").to_string();
                if abbreviation.is_empty() || abbreviation.starts_with(['+', '-']) {
                    out.push_str(&offset_text(
                        z.offset().seconds(),
                        false,
                        false,
                        true,
                        false,
                    ));
                } else {
                    out.push_str(&abbreviation);
                }
            }
            Chunk::Offset {
                iso,
                colons,
                minutes,
                seconds,
            } => {
                let secs = z.offset().seconds();
                if iso && secs == 0 {
                    out.push('Z');
                } else {
                    out.push_str(&offset_text(secs, colons, seconds, minutes, iso));
                }
            }
            Chunk::Frac { sep, n, trim } => {
                let digits = format!("{:09}", z.subsec_nanosecond());
                let mut digits = digits[..n.min(9)].to_string();
                if trim {
                    while digits.ends_with('0') {
                        digits.pop();
                    }
                }
                if !digits.is_empty() {
                    out.push(sep);
                    out.push_str(&digits);
                }
            }
        }
    }
    out
}

fn hour12(h: i8) -> i8 {
    match h % 12 {
        0 => 12,
        other => other,
    }
}

fn offset_text(
    secs: i32,
    colons: bool,
    with_seconds: bool,
    with_minutes: bool,
    _iso: bool,
) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.unsigned_abs();
    let (h, m, s) = (abs / 3600, abs / 60 % 60, abs % 60);
    let sep = if colons { ":" } else { "" };
    let mut out = format!("{sign}{h:02}");
    if with_minutes {
        out.push_str(&format!("{sep}{m:02}"));
    }
    if with_seconds {
        out.push_str(&format!("{sep}{s:02}"));
    }
    out
}

/// Parse `value` against a Go layout; without a zone in it, UTC.
fn go_parse(layout: &str, value: &str) -> Result<Timestamp, BuiltinError> {
    let bad = |what: &str| {
        BuiltinError(format!(
            "parsing time {value:?} as {layout:?}: cannot parse {what}"
        ))
    };
    let (mut year, mut month, mut day) = (1i64, 1i64, 1i64);
    let (mut hour, mut minute, mut second, mut nanos) = (0i64, 0i64, 0i64, 0i64);
    let mut pm: Option<bool> = None;
    let mut offset: Option<i32> = None;
    let mut rest = value;

    fn number(rest: &mut &str, min: usize, max: usize) -> Option<i64> {
        let n = rest
            .bytes()
            .take(max)
            .take_while(u8::is_ascii_digit)
            .count();
        if n < min {
            return None;
        }
        let (digits, tail) = rest.split_at(n);
        *rest = tail;
        digits.parse().ok()
    }
    fn name(rest: &mut &str, names: &[&str], len: Option<usize>) -> Option<usize> {
        for (i, n) in names.iter().enumerate() {
            let n = len.map_or(*n, |l| &n[..l]);
            if rest.len() >= n.len() && rest[..n.len()].eq_ignore_ascii_case(n) {
                *rest = &rest[n.len()..];
                return Some(i);
            }
        }
        None
    }

    let chunks = tokenize(layout);
    for (i, chunk) in chunks.iter().enumerate() {
        match chunk {
            Chunk::Literal(s) => {
                rest = rest
                    .strip_prefix(s.as_str())
                    .ok_or_else(|| bad(&format!("{rest:?} as {s:?}")))?;
            }
            Chunk::LongYear => year = number(&mut rest, 4, 4).ok_or_else(|| bad("year"))?,
            Chunk::Year => {
                let y = number(&mut rest, 2, 2).ok_or_else(|| bad("year"))?;
                year = if y >= 69 { 1900 + y } else { 2000 + y };
            }
            Chunk::LongMonth => {
                month = name(&mut rest, &MONTHS, None).ok_or_else(|| bad("month"))? as i64 + 1
            }
            Chunk::Month => {
                month = name(&mut rest, &MONTHS, Some(3)).ok_or_else(|| bad("month"))? as i64 + 1
            }
            Chunk::NumMonth => month = number(&mut rest, 1, 2).ok_or_else(|| bad("month"))?,
            Chunk::ZeroMonth => month = number(&mut rest, 2, 2).ok_or_else(|| bad("month"))?,
            Chunk::LongWeekDay => {
                name(&mut rest, &WEEKDAYS, None).ok_or_else(|| bad("weekday"))?;
            }
            Chunk::WeekDay => {
                name(&mut rest, &WEEKDAYS, Some(3)).ok_or_else(|| bad("weekday"))?;
            }
            Chunk::Day => day = number(&mut rest, 1, 2).ok_or_else(|| bad("day"))?,
            Chunk::UnderDay => {
                rest = rest.strip_prefix(' ').unwrap_or(rest);
                day = number(&mut rest, 1, 2).ok_or_else(|| bad("day"))?;
            }
            Chunk::ZeroDay => day = number(&mut rest, 2, 2).ok_or_else(|| bad("day"))?,
            Chunk::ZeroYearDay | Chunk::UnderYearDay => {
                return err("day-of-year layouts are not supported when parsing");
            }
            Chunk::Hour => hour = number(&mut rest, 2, 2).ok_or_else(|| bad("hour"))?,
            Chunk::Hour12 => hour = number(&mut rest, 1, 2).ok_or_else(|| bad("hour"))?,
            Chunk::ZeroHour12 => hour = number(&mut rest, 2, 2).ok_or_else(|| bad("hour"))?,
            Chunk::Minute => minute = number(&mut rest, 1, 2).ok_or_else(|| bad("minute"))?,
            Chunk::ZeroMinute => minute = number(&mut rest, 2, 2).ok_or_else(|| bad("minute"))?,
            Chunk::Second | Chunk::ZeroSecond => {
                let min = if *chunk == Chunk::Second { 1 } else { 2 };
                second = number(&mut rest, min, 2).ok_or_else(|| bad("second"))?;
                // Go accepts fractional seconds after the seconds even when the
                // layout has none.
                let layout_has_frac = matches!(chunks.get(i + 1), Some(Chunk::Frac { .. }));
                if !layout_has_frac
                    && rest.len() > 1
                    && rest.starts_with(['.', ','])
                    && rest.as_bytes()[1].is_ascii_digit()
                {
                    rest = &rest[1..];
                    nanos = fraction(&mut rest);
                }
            }
            Chunk::Frac { sep, n, trim } => {
                if let Some(tail) = rest.strip_prefix(*sep) {
                    rest = tail;
                    let before = rest.len();
                    nanos = fraction(&mut rest);
                    if !trim && before - rest.len() != *n {
                        return Err(bad("fractional second"));
                    }
                } else if !trim {
                    return Err(bad("fractional second"));
                }
            }
            Chunk::PM | Chunk::Pm => {
                let word = rest.get(..2).ok_or_else(|| bad("AM/PM"))?;
                pm = Some(match word.to_ascii_uppercase().as_str() {
                    "PM" => true,
                    "AM" => false,
                    _ => return Err(bad("AM/PM")),
                });
                rest = &rest[2..];
            }
            Chunk::Tz => {
                let n = rest.bytes().take_while(u8::is_ascii_uppercase).count();
                if n < 3 {
                    return Err(bad("time zone"));
                }
                // Go gives unknown abbreviations a zero offset, too.
                offset = Some(0);
                rest = &rest[n..];
            }
            Chunk::Offset {
                iso,
                colons,
                minutes,
                seconds,
            } => {
                if *iso && rest.starts_with('Z') {
                    rest = &rest[1..];
                    offset = Some(0);
                    continue;
                }
                let sign = match rest.as_bytes().first() {
                    Some(b'+') => 1,
                    Some(b'-') => -1,
                    _ => return Err(bad("time zone offset")),
                };
                rest = &rest[1..];
                let h = number(&mut rest, 2, 2).ok_or_else(|| bad("time zone offset"))?;
                let mut total = h * 3600;
                for (present, scale) in [(*minutes, 60), (*seconds, 1)] {
                    if present {
                        if *colons {
                            rest = rest
                                .strip_prefix(':')
                                .ok_or_else(|| bad("time zone offset"))?;
                        }
                        total += scale
                            * number(&mut rest, 2, 2).ok_or_else(|| bad("time zone offset"))?;
                    }
                }
                offset = Some(sign * total as i32);
            }
        }
    }
    if !rest.is_empty() {
        return Err(BuiltinError(format!(
            "parsing time {value:?}: extra text {rest:?}"
        )));
    }
    match pm {
        Some(true) if hour < 12 => hour += 12,
        Some(false) if hour == 12 => hour = 0,
        _ => {}
    }
    let small = |v: i64| i8::try_from(v).map_err(|_| bad("value out of range"));
    let dt = DateTime::new(
        i16::try_from(year).map_err(|_| bad("year"))?,
        small(month)?,
        small(day)?,
        small(hour)?,
        small(minute)?,
        small(second)?,
        nanos as i32,
    )
    .map_err(|e| BuiltinError(format!("parsing time {value:?}: {e}")))?;
    let offset = Offset::from_seconds(offset.unwrap_or(0)).map_err(jiff_err)?;
    offset.to_timestamp(dt).map_err(jiff_err)
}

/// Up to nine digits of a fraction, as nanoseconds; more digits are read and dropped.
fn fraction(rest: &mut &str) -> i64 {
    let n = rest.bytes().take_while(u8::is_ascii_digit).count();
    let digits = &rest[..n];
    *rest = &rest[n..];
    let mut ns: i64 = 0;
    for (i, d) in digits.bytes().take(9).enumerate() {
        ns += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    ns
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

    const T: i64 = 1_700_000_000_123_456_789; // 2023-11-14T22:13:20.123456789Z, a Tuesday

    #[test]
    fn parse_rfc3339_and_layouts() {
        assert_eq!(
            v(
                "time.parse_rfc3339_ns",
                json!(["2023-11-14T22:13:20.123456789Z"])
            )
            .unwrap(),
            json!(T)
        );
        assert_eq!(
            v(
                "time.parse_rfc3339_ns",
                json!(["2023-11-15T00:13:20+02:00"])
            )
            .unwrap(),
            json!(1_700_000_000_000_000_000i64)
        );
        assert!(v("time.parse_rfc3339_ns", json!(["yesterday"])).is_err());
        assert_eq!(
            v("time.parse_ns", json!(["2006-01-02", "2023-11-14"])).unwrap(),
            json!(1_699_920_000_000_000_000i64)
        );
        assert_eq!(
            v(
                "time.parse_ns",
                json!([
                    "Jan 2, 2006 at 3:04pm (MST)",
                    "Nov 14, 2023 at 10:13pm (UTC)"
                ])
            )
            .unwrap(),
            json!(1_699_999_980_000_000_000i64)
        );
        assert_eq!(
            v(
                "time.parse_ns",
                json!(["RFC1123Z", "Tue, 14 Nov 2023 22:13:20 +0000"])
            )
            .unwrap(),
            json!(1_700_000_000_000_000_000i64)
        );
    }

    #[test]
    fn format_date_clock_weekday() {
        assert_eq!(
            v("time.format", json!([T])).unwrap(),
            json!("2023-11-14T22:13:20.123456789Z")
        );
        assert_eq!(
            v(
                "time.format",
                json!([[T, "UTC", "Mon Jan _2 15:04:05.000 2006"]])
            )
            .unwrap(),
            json!("Tue Nov 14 22:13:20.123 2023")
        );
        assert_eq!(
            v("time.format", json!([[T, "", "RFC822Z"]])).unwrap(),
            json!("14 Nov 23 22:13 +0000")
        );
        assert_eq!(v("time.date", json!([T])).unwrap(), json!([2023, 11, 14]));
        assert_eq!(v("time.clock", json!([T])).unwrap(), json!([22, 13, 20]));
        assert_eq!(v("time.weekday", json!([T])).unwrap(), json!("Tuesday"));
    }

    #[test]
    fn time_zones_when_the_system_has_them() {
        if jiff::tz::TimeZone::get("Europe/Paris").is_ok() {
            assert_eq!(
                v("time.clock", json!([[T, "Europe/Paris"]])).unwrap(),
                json!([23, 13, 20])
            );
        }
        assert!(v("time.clock", json!([[T, "Nowhere/Atlantis"]])).is_err());
    }

    #[test]
    fn add_date_normalises_like_go() {
        let jan31 = v("time.parse_rfc3339_ns", json!(["2023-01-31T10:00:00Z"])).unwrap();
        let plus_month = v("time.add_date", json!([jan31, 0, 1, 0])).unwrap();
        assert_eq!(
            v("time.date", json!([plus_month])).unwrap(),
            json!([2023, 3, 3])
        );
        let back = v("time.add_date", json!([jan31, -1, 0, -31])).unwrap();
        assert_eq!(
            v("time.date", json!([back])).unwrap(),
            json!([2021, 12, 31])
        );
    }

    #[test]
    fn diffs() {
        let a = v("time.parse_rfc3339_ns", json!(["2020-01-31T10:00:00Z"])).unwrap();
        let b = v("time.parse_rfc3339_ns", json!(["2021-03-01T09:30:15Z"])).unwrap();
        assert_eq!(
            v("time.diff", json!([b, a])).unwrap(),
            json!([1, 1, 0, 23, 30, 15])
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            v("time.parse_duration_ns", json!(["1h30m"])).unwrap(),
            json!(5_400_000_000_000i64)
        );
        assert_eq!(
            v("time.parse_duration_ns", json!(["1.5s"])).unwrap(),
            json!(1_500_000_000)
        );
        assert_eq!(
            v("time.parse_duration_ns", json!(["-2d"])).unwrap(),
            json!(-172_800_000_000_000i64)
        );
        assert_eq!(v("time.parse_duration_ns", json!(["0"])).unwrap(), json!(0));
        assert!(v("time.parse_duration_ns", json!(["5"])).is_err());
        assert!(v("time.parse_duration_ns", json!(["1x"])).is_err());
    }

    #[test]
    fn now_is_fixed_per_evaluation() {
        let mut state = super::super::EvalState::default();
        let mut ctx = super::super::Context {
            policy_id: "t",
            deadline: std::time::Instant::now(),
            state: &mut state,
        };
        let a = super::now_ns(&mut ctx, &[]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::now_ns(&mut ctx, &[]).unwrap();
        assert_eq!(a, b);
    }
}
