//! Turning a policy's own verdict into an AdmissionResponse.

use base64::Engine as _;
use portcullis_adapters::ValidationResponse;
use serde_json::Value;

use super::limits::{MAX_MESSAGE_BYTES, ResponseLimits, cap_text, cap_verdict, human_size};
use super::types::{AdmissionResponse, AdmissionStatus, JSON_PATCH_TYPE};

/// [`build_admission_response_limited`] with the default [`ResponseLimits`].
pub fn build_admission_response(
    uid: &str,
    original: Option<&Value>,
    verdict: ValidationResponse,
) -> AdmissionResponse {
    build_admission_response_limited(uid, original, verdict, &ResponseLimits::default())
}

/// Builds the AdmissionResponse for a policy verdict, before any policy-mode
/// post-processing (that is [`super::post_process`](fn@super::post_process)).
///
/// The verdict's texts are capped ([`super::limits`]); a patch over
/// `limits.max_patch_bytes` turns the answer into a rejection with code 500.
///
/// `original` is the object the policy saw: `request.object` for admission
/// requests, the whole request for raw ones. A `mutated_object` becomes a
/// base64 RFC 6902 patch against it; an empty diff gives no patch. A mutation
/// of a request without an object (a DELETE) cannot be expressed as a patch
/// and is turned into a rejection.
pub fn build_admission_response_limited(
    uid: &str,
    original: Option<&Value>,
    verdict: ValidationResponse,
    limits: &ResponseLimits,
) -> AdmissionResponse {
    let ValidationResponse {
        accepted,
        message,
        code,
        mutated_object,
        audit_annotations,
        warnings,
    } = cap_verdict(verdict);

    let mut response = AdmissionResponse {
        uid: uid.to_string(),
        allowed: accepted,
        audit_annotations,
        warnings,
        ..AdmissionResponse::default()
    };
    if message.is_some() || code.is_some() {
        response.status = Some(AdmissionStatus {
            message,
            code,
            details: None,
        });
    }

    // A patch on a rejection would be ignored by the API server; leaving it
    // out keeps audit logs honest about what happened.
    if let (true, Some(mutated)) = (accepted, mutated_object) {
        match original {
            Some(original) if !original.is_null() => {
                let patch = json_patch::diff(original, &mutated);
                if !patch.0.is_empty() {
                    match serde_json::to_vec(&patch) {
                        Ok(bytes) if bytes.len() > limits.max_patch_bytes => {
                            return AdmissionResponse::reject(
                                uid,
                                format!(
                                    "the policy's mutation is a {} JSON patch, over the {} limit; \
                                     it was not applied",
                                    human_size(bytes.len()),
                                    human_size(limits.max_patch_bytes)
                                ),
                                500,
                            );
                        }
                        Ok(bytes) => {
                            response.patch =
                                Some(base64::engine::general_purpose::STANDARD.encode(bytes));
                            response.patch_type = Some(JSON_PATCH_TYPE.to_string());
                        }
                        Err(e) => {
                            return AdmissionResponse::reject(
                                uid,
                                format!("cannot serialise the policy's JSON patch: {e}"),
                                500,
                            );
                        }
                    }
                }
            }
            _ => {
                return AdmissionResponse::reject(
                    uid,
                    "the policy mutated a request that has no object (e.g. a DELETE); \
                     such a mutation cannot be applied",
                    500,
                );
            }
        }
    }
    response
}

/// The response for a request a policy could not evaluate: a timeout, a
/// guest error, or a policy that failed to load. Rejects with code 500 and a
/// message naming the policy and the cause.
///
/// The cause may carry guest-controlled text (a guest error, a trap
/// message): it is capped like a verdict message.
pub fn evaluation_error_response(uid: &str, policy_id: &str, cause: &str) -> AdmissionResponse {
    let message = format!("policy {policy_id} could not evaluate the request: {cause}");
    AdmissionResponse::reject(uid, cap_text(message, MAX_MESSAGE_BYTES, "message"), 500)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verdict(accepted: bool) -> ValidationResponse {
        ValidationResponse {
            accepted,
            message: None,
            code: None,
            mutated_object: None,
            audit_annotations: None,
            warnings: None,
        }
    }

    fn decode_patch(response: &AdmissionResponse) -> json_patch::Patch {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(response.patch.as_ref().expect("patch"))
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn mutation_becomes_base64_json_patch() {
        let original = json!({"metadata": {"labels": {"app": "web"}}});
        let mutated = json!({"metadata": {"labels": {"app": "web", "team": "x"}}});
        let mut v = verdict(true);
        v.mutated_object = Some(mutated.clone());
        let response = build_admission_response("u1", Some(&original), v);
        assert!(response.allowed);
        assert_eq!(response.uid, "u1");
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &decode_patch(&response)).unwrap();
        assert_eq!(patched, mutated);
        assert!(response.status.is_none());
    }

    #[test]
    fn identical_mutated_object_gives_no_patch() {
        let original = json!({"a": 1});
        let mut v = verdict(true);
        v.mutated_object = Some(original.clone());
        let response = build_admission_response("u", Some(&original), v);
        assert!(response.patch.is_none() && response.patch_type.is_none());
    }

    #[test]
    fn mutation_without_object_is_rejected() {
        let mut v = verdict(true);
        v.mutated_object = Some(json!({"a": 1}));
        let response = build_admission_response("u", Some(&Value::Null), v);
        assert!(!response.allowed);
        assert_eq!(response.status.as_ref().unwrap().code, Some(500));
        assert!(response.message().unwrap().contains("no object"));
    }

    #[test]
    fn rejection_keeps_message_code_warnings_and_annotations() {
        let mut v = verdict(false);
        v.message = Some("privileged containers are not allowed".into());
        v.code = Some(403);
        v.warnings = Some(vec!["w".into()]);
        v.audit_annotations = Some([("k".to_string(), "v".to_string())].into());
        let response = build_admission_response("u", Some(&json!({})), v);
        assert!(!response.allowed);
        assert_eq!(
            response.message(),
            Some("privileged containers are not allowed")
        );
        assert_eq!(response.status.as_ref().unwrap().code, Some(403));
        assert_eq!(response.warnings.as_deref(), Some(&["w".to_string()][..]));
        assert_eq!(response.audit_annotations.as_ref().unwrap()["k"], "v");
        let json = serde_json::to_value(&response).unwrap();
        assert!(json.get("patch").is_none(), "no null fields: {json}");
    }

    #[test]
    fn oversized_patch_is_an_error() {
        let original = json!({"data": ""});
        let mut v = verdict(true);
        v.mutated_object = Some(json!({"data": "x".repeat(2048)}));
        let limits = ResponseLimits {
            max_patch_bytes: 1024,
        };
        let response = build_admission_response_limited("u", Some(&original), v.clone(), &limits);
        assert!(!response.allowed);
        assert!(response.patch.is_none());
        let message = response.message().unwrap();
        assert!(
            message.contains("2 KiB JSON patch") && message.contains("1 KiB limit"),
            "{message}"
        );
        let response = build_admission_response("u", Some(&original), v);
        assert!(response.allowed && response.patch.is_some());
    }

    #[test]
    fn huge_messages_are_capped() {
        let mut v = verdict(false);
        v.message = Some("x".repeat(1 << 20));
        let response = build_admission_response("u", Some(&json!({})), v);
        let message = response.message().unwrap();
        assert!(message.len() <= MAX_MESSAGE_BYTES);
        assert!(
            message.ends_with("[truncated by portcullis: 1 MiB message]"),
            "{message}"
        );
        let response = evaluation_error_response("u", "p", &"y".repeat(1 << 20));
        assert!(response.message().unwrap().len() <= MAX_MESSAGE_BYTES);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the policy returns as `mutated_object`, the patch (if
        /// any) turns the original into exactly that object, and building
        /// it never panics.
        #[test]
        fn the_patch_turns_the_original_into_the_mutated_object(
            original in crate::test_support::json_object(),
            mutated in crate::test_support::json_value(),
        ) {
            let mut v = verdict(true);
            v.mutated_object = Some(mutated.clone());
            let response = build_admission_response("u", Some(&original), v);
            proptest::prop_assert!(response.allowed, "{:?}", response);
            match &response.patch {
                None => proptest::prop_assert_eq!(&original, &mutated),
                Some(_) => {
                    proptest::prop_assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
                    let mut patched = original.clone();
                    json_patch::patch(&mut patched, &decode_patch(&response)).unwrap();
                    proptest::prop_assert_eq!(patched, mutated);
                }
            }
        }

        /// The same for an object and an edit of one member, the common case.
        #[test]
        fn edits_of_one_member_round_trip(
            original in crate::test_support::json_object(),
            key in crate::test_support::json_key(),
            value in crate::test_support::json_value(),
        ) {
            let mut mutated = original.clone();
            mutated[key.as_str()] = value;
            let mut v = verdict(true);
            v.mutated_object = Some(mutated.clone());
            let response = build_admission_response("u", Some(&original), v);
            let mut patched = original.clone();
            if response.patch.is_some() {
                json_patch::patch(&mut patched, &decode_patch(&response)).unwrap();
            }
            proptest::prop_assert_eq!(patched, mutated);
        }
    }

    #[test]
    fn error_response_names_policy_and_cause() {
        let response = evaluation_error_response("u", "clusterwide-x", "deadline exceeded");
        assert!(!response.allowed);
        assert_eq!(response.status.as_ref().unwrap().code, Some(500));
        let message = response.message().unwrap();
        assert!(message.contains("clusterwide-x") && message.contains("deadline exceeded"));
    }
}
