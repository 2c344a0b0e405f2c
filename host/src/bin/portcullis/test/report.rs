//! Reports of a test run: a table with diffs, JSON, and JUnit XML.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::check::{Mismatch, Outcome};

/// The result of one case against one policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseResult {
    pub file: PathBuf,
    pub policy: String,
    pub case: String,
    #[serde(serialize_with = "micros")]
    pub duration: Duration,
    #[serde(flatten)]
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// Passed, failed (expectations did not hold) or could not run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum Status {
    Passed,
    Failed { mismatches: Vec<Mismatch> },
    Error { error: String },
}

fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_micros())
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        matches!(self.status, Status::Passed)
    }

    fn label(&self) -> &'static str {
        match self.status {
            Status::Passed => "PASS",
            Status::Failed { .. } => "FAIL",
            Status::Error { .. } => "ERROR",
        }
    }

    /// Why it did not pass, indented.
    fn details(&self, indent: &str) -> String {
        match &self.status {
            Status::Passed => String::new(),
            Status::Failed { mismatches } => mismatches.iter().map(|m| m.render(indent)).collect(),
            Status::Error { error } => format!("{indent}{error}\n"),
        }
    }
}

/// Counts for the closing line.
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

pub fn summary(results: &[CaseResult]) -> Summary {
    let passed = results.iter().filter(|r| r.passed()).count();
    Summary {
        passed,
        failed: results.len() - passed,
    }
}

fn duration(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A table, then each failure with its diff, then `N passed, M failed`.
pub fn table(results: &[CaseResult]) -> String {
    let rows: Vec<[String; 4]> = results
        .iter()
        .map(|r| {
            [
                r.label().to_string(),
                r.policy.clone(),
                r.case.clone(),
                duration(r.duration),
            ]
        })
        .collect();
    let header = ["RESULT", "POLICY", "CASE", "TIME"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for r in results.iter().filter(|r| !r.passed()) {
        let _ = write!(
            out,
            "\n--- {}: {} / {} ({})\n{}",
            r.label(),
            r.policy,
            r.case,
            r.file.display(),
            r.details("    ")
        );
    }
    let s = summary(results);
    let _ = writeln!(out, "\n{} passed, {} failed", s.passed, s.failed);
    out
}

/// Every result, with the response the policy gave.
pub fn json(results: &[CaseResult]) -> anyhow::Result<String> {
    let s = summary(results);
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "passed": s.passed,
        "failed": s.failed,
        "results": results,
    }))?)
}

/// JUnit XML: one `testsuite` per test file, one `testcase` per case and policy.
pub fn junit(results: &[CaseResult]) -> String {
    let mut files: Vec<&PathBuf> = Vec::new();
    for r in results {
        if !files.contains(&&r.file) {
            files.push(&r.file);
        }
    }
    let total: Duration = results.iter().map(|r| r.duration).sum();
    let count =
        |rs: &[&CaseResult], f: fn(&Status) -> bool| rs.iter().filter(|r| f(&r.status)).count();
    let is_failure = |s: &Status| matches!(s, Status::Failed { .. });
    let is_error = |s: &Status| matches!(s, Status::Error { .. });
    let all: Vec<&CaseResult> = results.iter().collect();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"portcullis test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.6}\">",
        all.len(),
        count(&all, is_failure),
        count(&all, is_error),
        total.as_secs_f64()
    );
    for file in files {
        let cases: Vec<&CaseResult> = results.iter().filter(|r| &r.file == file).collect();
        let time: Duration = cases.iter().map(|r| r.duration).sum();
        let name = xml(&file.display().to_string());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.6}\">",
            cases.len(),
            count(&cases, is_failure),
            count(&cases, is_error),
            time.as_secs_f64()
        );
        for r in cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.6}\"",
                xml(&r.policy),
                xml(&r.case),
                r.duration.as_secs_f64()
            );
            match &r.status {
                Status::Passed => out.push_str("/>\n"),
                Status::Failed { mismatches } => {
                    let fields: Vec<&str> = mismatches.iter().map(|m| m.field.as_str()).collect();
                    let _ = write!(
                        out,
                        ">\n      <failure type=\"mismatch\" message=\"{}\">{}</failure>\n    </testcase>\n",
                        xml(&format!("unexpected {}", fields.join(", "))),
                        xml(&r.details(""))
                    );
                }
                Status::Error { error } => {
                    let _ = write!(
                        out,
                        ">\n      <error type=\"error\" message=\"{}\"/>\n    </testcase>\n",
                        xml(error)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escape for XML text and attributes. Characters XML 1.0 cannot carry at all
/// (most control characters) become U+FFFD.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn results() -> Vec<CaseResult> {
        let base = CaseResult {
            file: "t.yaml".into(),
            policy: "p".into(),
            case: "ok".into(),
            duration: Duration::from_micros(420),
            status: Status::Passed,
            outcome: None,
        };
        vec![
            base.clone(),
            CaseResult {
                case: "a <b> & \"c\"".into(),
                status: Status::Failed {
                    mismatches: vec![Mismatch {
                        field: "allowed".into(),
                        expected: json!(true),
                        actual: json!(false),
                    }],
                },
                ..base.clone()
            },
            CaseResult {
                case: "broken".into(),
                status: Status::Error {
                    error: "no such file\u{1}".into(),
                },
                ..base
            },
        ]
    }

    #[test]
    fn table_lists_failures_with_their_diff_and_ends_with_counts() {
        let t = table(&results());
        assert!(t.starts_with("RESULT  POLICY  CASE"), "{t}");
        assert!(t.contains("PASS    p       ok"), "{t}");
        assert!(t.contains("--- FAIL: p / a <b> & \"c\" (t.yaml)\n    allowed:\n      - expected: true\n      + actual:   false"), "{t}");
        assert!(t.ends_with("\n1 passed, 2 failed\n"), "{t}");
    }

    #[test]
    fn junit_is_escaped_and_counts() {
        let x = junit(&results());
        assert!(
            x.contains(
                "<testsuites name=\"portcullis test\" tests=\"3\" failures=\"1\" errors=\"1\""
            ),
            "{x}"
        );
        assert!(
            x.contains("name=\"a &lt;b&gt; &amp; &quot;c&quot;\""),
            "{x}"
        );
        assert!(
            x.contains("<failure type=\"mismatch\" message=\"unexpected allowed\">allowed:&#10;"),
            "{x}"
        );
        assert!(x.contains("message=\"no such file\u{FFFD}\""), "{x}");
    }

    #[test]
    fn json_has_counts_and_results() {
        let v: serde_json::Value = serde_json::from_str(&json(&results()).unwrap()).unwrap();
        assert_eq!(
            (v["passed"].as_u64(), v["failed"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(v["results"][0]["result"], "passed");
        assert_eq!(v["results"][1]["mismatches"][0]["field"], "allowed");
        assert_eq!(v["results"][2]["error"], "no such file\u{1}");
        assert_eq!(v["results"][0]["duration"], 420);
    }
}
