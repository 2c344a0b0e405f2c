//! Caps on what a policy puts into an AdmissionResponse.
//!
//! A policy's message, warnings and audit annotations go to the API server,
//! which copies them into the client's error, its `Warning` headers and the
//! audit log. A guest that returns a 48 MiB message must not make the
//! policy-server build, send and log a 48 MiB response: every text is cut at
//! its cap, with a marker saying what was cut, before it is logged or sent.
//! The JSON patch of a mutation is bounded too; a patch over its cap turns
//! the mutation into an error (a cut patch would be a different mutation).

use std::collections::BTreeMap;

use portcullis_adapters::ValidationResponse;

use super::types::AdmissionResponse;

/// Longest `status.message` (and `status.details.causes[].message`), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most warnings kept; the API server itself keeps at most 4 KiB of them.
pub const MAX_WARNINGS: usize = 16;
/// Longest warning, in bytes.
pub const MAX_WARNING_BYTES: usize = 1024;
/// Most audit annotations kept.
pub const MAX_AUDIT_ANNOTATIONS: usize = 32;
/// Longest audit annotation key kept (longer keys are dropped: a cut key
/// would be another key). Kubernetes qualified names are shorter anyway.
pub const MAX_AUDIT_ANNOTATION_KEY_BYTES: usize = 253;
/// Longest audit annotation value, in bytes.
pub const MAX_AUDIT_ANNOTATION_VALUE_BYTES: usize = 4 * 1024;
/// Audit annotation added when some were dropped.
pub const TRUNCATED_ANNOTATION: &str = "portcullis-truncated";

/// Caps applied to a verdict before it becomes an AdmissionResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Largest JSON patch (before base64), in bytes.
    pub max_patch_bytes: usize,
}

impl Default for ResponseLimits {
    /// The patch cap is the policy-server's default request body cap
    /// (3 MiB, also the API server's own request limit): a mutation cannot
    /// sensibly be larger than the largest object the server accepts.
    fn default() -> Self {
        Self {
            max_patch_bytes: 3 * 1024 * 1024,
        }
    }
}

/// Cuts `text` to at most `max` bytes (on a character boundary, marker
/// included) and appends `… [truncated by portcullis: <size> <what>]`.
/// Shorter texts are returned unchanged.
pub fn cap_text(text: String, max: usize, what: &str) -> String {
    if text.len() <= max {
        return text;
    }
    let marker = format!(
        "… [truncated by portcullis: {} {what}]",
        human_size(text.len())
    );
    let keep = floor_char_boundary(&text, max.saturating_sub(marker.len()));
    let mut out = String::with_capacity(keep + marker.len());
    out.push_str(&text[..keep]);
    out.push_str(&marker);
    out
}

/// Applies the caps to a policy's own verdict, before it is logged or turned
/// into a response. The mutated object is left to the patch cap.
pub fn cap_verdict(mut verdict: ValidationResponse) -> ValidationResponse {
    verdict.message = verdict
        .message
        .map(|m| cap_text(m, MAX_MESSAGE_BYTES, "message"));
    verdict.warnings = verdict.warnings.map(cap_warnings);
    verdict.audit_annotations = verdict.audit_annotations.map(cap_annotations);
    verdict
}

/// Applies the text caps to a finished response: the last line of defence
/// for texts that did not come through [`cap_verdict`] (error causes, the
/// custom message of a policy entry).
pub fn cap_response(mut response: AdmissionResponse) -> AdmissionResponse {
    if let Some(status) = response.status.as_mut() {
        if let Some(message) = status.message.take() {
            status.message = Some(cap_text(message, MAX_MESSAGE_BYTES, "message"));
        }
        if let Some(details) = status.details.as_mut() {
            for cause in &mut details.causes {
                if let Some(message) = cause.message.take() {
                    cause.message = Some(cap_text(message, MAX_MESSAGE_BYTES, "message"));
                }
            }
        }
    }
    response.warnings = response.warnings.map(cap_warnings);
    response.audit_annotations = response.audit_annotations.map(cap_annotations);
    response
}

fn cap_warnings(mut warnings: Vec<String>) -> Vec<String> {
    let dropped = warnings.len().saturating_sub(MAX_WARNINGS);
    if dropped > 0 {
        // One place is left for the marker.
        let kept = MAX_WARNINGS - 1;
        let dropped = warnings.len() - kept;
        warnings.truncate(kept);
        warnings.push(format!(
            "[truncated by portcullis: {dropped} more warnings]"
        ));
    }
    warnings
        .into_iter()
        .map(|w| cap_text(w, MAX_WARNING_BYTES, "warning"))
        .collect()
}

fn cap_annotations(annotations: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let total = annotations.len();
    let needs_cut = total > MAX_AUDIT_ANNOTATIONS
        || annotations.iter().any(|(k, v)| {
            k.len() > MAX_AUDIT_ANNOTATION_KEY_BYTES || v.len() > MAX_AUDIT_ANNOTATION_VALUE_BYTES
        });
    if !needs_cut {
        return annotations;
    }
    let mut kept = BTreeMap::new();
    for (key, value) in annotations {
        // One place is left for the marker.
        if key.len() > MAX_AUDIT_ANNOTATION_KEY_BYTES || kept.len() + 1 >= MAX_AUDIT_ANNOTATIONS {
            continue;
        }
        let value = cap_text(value, MAX_AUDIT_ANNOTATION_VALUE_BYTES, "audit annotation");
        kept.insert(key, value);
    }
    let dropped = total - kept.len();
    if dropped > 0 {
        kept.insert(
            TRUNCATED_ANNOTATION.to_string(),
            format!(
                "{dropped} audit annotations dropped by portcullis (at most {MAX_AUDIT_ANNOTATIONS}, keys up to {MAX_AUDIT_ANNOTATION_KEY_BYTES} bytes)"
            ),
        );
    }
    kept
}

/// `48 MiB`, `1.5 KiB`, `900 B`.
pub fn human_size(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value < 10.0 && value.fract() >= 0.05 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    (0..=index)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::types::{AdmissionStatus, StatusCause, StatusDetails};

    #[test]
    fn short_texts_are_untouched() {
        assert_eq!(cap_text("hello".into(), 10, "message"), "hello");
        assert_eq!(cap_text("x".repeat(10), 10, "message"), "x".repeat(10));
    }

    #[test]
    fn long_texts_are_cut_with_a_marker() {
        let huge = "é".repeat(24 * 1024 * 1024); // 48 MiB of two-byte characters
        let cut = cap_text(huge, MAX_MESSAGE_BYTES, "message");
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(
            cut.ends_with("… [truncated by portcullis: 48 MiB message]"),
            "{}",
            &cut[cut.len() - 60..]
        );
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(900), "900 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(20 * 1024), "20 KiB");
        assert_eq!(human_size(48 * 1024 * 1024), "48 MiB");
    }

    #[test]
    fn verdict_warnings_and_annotations_are_bounded() {
        let verdict = ValidationResponse {
            accepted: false,
            message: Some("m".repeat(MAX_MESSAGE_BYTES + 1)),
            code: None,
            mutated_object: None,
            audit_annotations: Some(
                (0..100)
                    .map(|i| (format!("k{i:03}"), "v".repeat(10_000)))
                    .chain([("x".repeat(300), "v".into())])
                    .collect(),
            ),
            warnings: Some(vec!["w".repeat(5000); 1000]),
        };
        let capped = cap_verdict(verdict);
        assert!(capped.message.unwrap().len() <= MAX_MESSAGE_BYTES);
        let warnings = capped.warnings.unwrap();
        assert_eq!(warnings.len(), MAX_WARNINGS);
        assert!(warnings.iter().all(|w| w.len() <= MAX_WARNING_BYTES));
        assert_eq!(
            warnings.last().unwrap(),
            "[truncated by portcullis: 985 more warnings]"
        );
        let annotations = capped.audit_annotations.unwrap();
        assert_eq!(annotations.len(), MAX_AUDIT_ANNOTATIONS);
        assert!(
            annotations
                .values()
                .all(|v| v.len() <= MAX_AUDIT_ANNOTATION_VALUE_BYTES)
        );
        assert!(
            annotations[TRUNCATED_ANNOTATION].starts_with("70 audit annotations dropped"),
            "{annotations:?}"
        );
    }

    #[test]
    fn response_causes_are_bounded() {
        let response = AdmissionResponse {
            status: Some(AdmissionStatus {
                message: Some("a".repeat(MAX_MESSAGE_BYTES * 2)),
                code: Some(500),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        message: Some("b".repeat(MAX_MESSAGE_BYTES * 2)),
                        ..StatusCause::default()
                    }],
                }),
            }),
            ..AdmissionResponse::default()
        };
        let capped = cap_response(response);
        let status = capped.status.unwrap();
        assert!(status.message.unwrap().len() <= MAX_MESSAGE_BYTES);
        assert!(
            status.details.unwrap().causes[0]
                .message
                .as_ref()
                .unwrap()
                .len()
                <= MAX_MESSAGE_BYTES
        );
    }
}
