//! Comparing what a policy answered with what a case expects.

use base64::Engine as _;
use portcullis_host::admission::AdmissionResponse;
use regex::Regex;
use serde::Serialize;
use serde_json::{Value, json};

use super::spec::Expect;

/// What a case produced.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Outcome {
    /// The policy refused its settings, so no request was evaluated (the
    /// policy-server would not load it).
    SettingsRejected { message: Option<String> },
    /// The AdmissionResponse the policy-server would send. An evaluation that
    /// failed (a trap, a timeout) is the server's code-500 rejection.
    Response {
        response: AdmissionResponse,
        /// The object the patch applies to.
        #[serde(skip)]
        original: Option<Value>,
    },
}

/// One expectation that did not hold.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// The expectation's key, such as `message`.
    pub field: String,
    pub expected: Value,
    pub actual: Value,
}

impl Mismatch {
    fn new(field: &str, expected: impl Serialize, actual: impl Serialize) -> Self {
        Mismatch {
            field: field.to_string(),
            expected: serde_json::to_value(expected).unwrap_or(Value::Null),
            actual: serde_json::to_value(actual).unwrap_or(Value::Null),
        }
    }

    /// `- expected` / `+ actual` lines; multi-line values as a line diff.
    pub fn render(&self, indent: &str) -> String {
        let expected = shown(&self.expected);
        let actual = shown(&self.actual);
        let mut out = format!("{indent}{}:\n", self.field);
        if !expected.contains('\n') && !actual.contains('\n') {
            out.push_str(&format!("{indent}  - expected: {expected}\n"));
            out.push_str(&format!("{indent}  + actual:   {actual}\n"));
            return out;
        }
        out.push_str(&format!("{indent}  (- expected, + actual)\n"));
        let diff = similar::TextDiff::from_lines(&expected, &actual);
        for change in diff.iter_all_changes() {
            let sign = match change.tag() {
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
                similar::ChangeTag::Equal => ' ',
            };
            out.push_str(&format!(
                "{indent}  {sign} {}",
                change.to_string_lossy().trim_end_matches('\n')
            ));
            out.push('\n');
        }
        out
    }
}

/// Strings bare (a message reads better without quotes), anything else as
/// pretty JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// Every expectation of `expect` that `outcome` does not meet.
pub fn check(expect: &Expect, outcome: &Outcome) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let want_valid = expect.settings_valid.unwrap_or(true);
    match outcome {
        Outcome::SettingsRejected { message } => {
            if want_valid {
                out.push(Mismatch::new(
                    "settingsValid",
                    true,
                    json!({"valid": false, "message": message}),
                ));
            } else {
                check_message(expect, message.as_deref(), &mut out);
            }
        }
        Outcome::Response { response, original } => {
            if !want_valid {
                out.push(Mismatch::new("settingsValid", false, true));
                return out;
            }
            check_response(expect, response, original.as_ref(), &mut out);
        }
    }
    out
}

fn check_message(expect: &Expect, message: Option<&str>, out: &mut Vec<Mismatch>) {
    if let Some(want) = &expect.message
        && message != Some(want.as_str())
    {
        out.push(Mismatch::new("message", want, message));
    }
    if let Some(pattern) = &expect.message_matches {
        match Regex::new(pattern) {
            Ok(re) if message.is_some_and(|m| re.is_match(m)) => {}
            Ok(_) => out.push(Mismatch::new(
                "messageMatches",
                format!("a message matching /{pattern}/"),
                message,
            )),
            Err(e) => out.push(Mismatch::new(
                "messageMatches",
                format!("a valid regular expression ({e})"),
                pattern,
            )),
        }
    }
}

fn check_response(
    expect: &Expect,
    response: &AdmissionResponse,
    original: Option<&Value>,
    out: &mut Vec<Mismatch>,
) {
    if let Some(want) = expect.allowed
        && response.allowed != want
    {
        out.push(Mismatch::new("allowed", want, response.allowed));
    }
    check_message(expect, response.message(), out);
    let code = response.status.as_ref().and_then(|s| s.code);
    if let Some(want) = expect.code
        && code != Some(want)
    {
        out.push(Mismatch::new("code", want, code));
    }
    if let Some(want) = &expect.warnings {
        let got = response.warnings.clone().unwrap_or_default();
        if *want != got {
            out.push(Mismatch::new("warnings", want, got));
        }
    }
    if let Some(want) = &expect.audit_annotations {
        let got = response.audit_annotations.clone().unwrap_or_default();
        if *want != got {
            out.push(Mismatch::new("auditAnnotations", want, got));
        }
    }
    if expect.patch.is_none() && expect.patched_object.is_none() {
        return;
    }
    let patch = match decode_patch(response) {
        Ok(patch) => patch,
        Err(e) => {
            out.push(Mismatch::new("patch", "a base64 JSONPatch", e));
            return;
        }
    };
    if let Some(want) = &expect.patch
        && *want != patch
    {
        out.push(Mismatch::new("patch", want, &patch));
    }
    if let Some(want) = &expect.patched_object {
        match patched(original, &patch) {
            Ok(got) if got == *want => {}
            Ok(got) => out.push(Mismatch::new("patchedObject", want, got)),
            Err(e) => out.push(Mismatch::new("patchedObject", want, e)),
        }
    }
}

/// The response's patch as JSON; `[]` when there is none.
pub fn decode_patch(response: &AdmissionResponse) -> Result<Value, String> {
    let Some(b64) = &response.patch else {
        return Ok(json!([]));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the patch is not base64: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the patch is not JSON: {e}"))
}

fn patched(original: Option<&Value>, patch: &Value) -> Result<Value, String> {
    let mut object = original.cloned().unwrap_or(Value::Null);
    let patch: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("not a JSONPatch: {e}"))?;
    json_patch::patch(&mut object, &patch).map_err(|e| format!("the patch does not apply: {e}"))?;
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_host::admission::AdmissionStatus;

    fn denied(message: &str) -> Outcome {
        Outcome::Response {
            response: AdmissionResponse {
                uid: "u".into(),
                allowed: false,
                status: Some(AdmissionStatus {
                    message: Some(message.into()),
                    code: None,
                    details: None,
                }),
                ..Default::default()
            },
            original: None,
        }
    }

    #[test]
    fn messages_exact_and_by_pattern() {
        let mut expect = Expect {
            allowed: Some(false),
            message: Some("Privileged container is not allowed: sidecar".into()),
            ..Default::default()
        };
        assert!(
            check(
                &expect,
                &denied("Privileged container is not allowed: sidecar")
            )
            .is_empty()
        );
        let m = check(
            &expect,
            &denied("Privileged container is not allowed: nginx"),
        );
        assert_eq!(m.len(), 1);
        let shown = m[0].render("  ");
        assert!(
            shown.contains("- expected: Privileged container is not allowed: sidecar"),
            "{shown}"
        );
        assert!(
            shown.contains("+ actual:   Privileged container is not allowed: nginx"),
            "{shown}"
        );

        expect.message = None;
        expect.message_matches = Some("^Privileged .*: (sidecar|nginx)$".into());
        assert!(
            check(
                &expect,
                &denied("Privileged container is not allowed: nginx")
            )
            .is_empty()
        );
        expect.message_matches = Some("(".into());
        assert!(
            check(&expect, &denied("x"))[0]
                .render("")
                .contains("valid regular expression")
        );
    }

    #[test]
    fn patches_and_patched_objects_with_a_line_diff() {
        let original = json!({"metadata": {"labels": {"a": "1"}}});
        let patch = json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"}]);
        let outcome = Outcome::Response {
            response: AdmissionResponse {
                uid: "u".into(),
                allowed: true,
                patch: Some(base64::engine::general_purpose::STANDARD.encode(patch.to_string())),
                patch_type: Some("JSONPatch".into()),
                ..Default::default()
            },
            original: Some(original),
        };
        let expect = Expect {
            patch: Some(patch.clone()),
            patched_object: Some(json!({"metadata": {"labels": {"a": "1", "b": "2"}}})),
            ..Default::default()
        };
        assert!(check(&expect, &outcome).is_empty());
        let wrong = Expect {
            patched_object: Some(json!({"metadata": {"labels": {"a": "1", "b": "3"}}})),
            ..Default::default()
        };
        let m = check(&wrong, &outcome);
        let shown = m[0].render("");
        assert!(shown.contains("-       \"b\": \"3\""), "{shown}");
        assert!(shown.contains("+       \"b\": \"2\""), "{shown}");
        // No patch at all reads as [].
        let none = Expect {
            patch: Some(json!([])),
            ..Default::default()
        };
        assert!(check(&none, &denied("x")).is_empty());
    }

    #[test]
    fn settings_verdicts() {
        let rejected = Outcome::SettingsRejected {
            message: Some("invalid settings: unknown field `x`".into()),
        };
        assert_eq!(
            check(&Expect::default(), &rejected)[0].field,
            "settingsValid"
        );
        let expect = Expect {
            settings_valid: Some(false),
            message_matches: Some("unknown field `x`".into()),
            ..Default::default()
        };
        assert!(check(&expect, &rejected).is_empty());
        assert_eq!(check(&expect, &denied("x"))[0].field, "settingsValid");
    }
}
