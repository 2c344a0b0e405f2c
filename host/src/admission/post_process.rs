//! Policy-mode post-processing of an AdmissionResponse (reference §4): monitor
//! mode, `allowedToMutate` and the custom rejection message, in that order.

use portcullis_config::PolicyMode;

use super::types::{AdmissionResponse, AdmissionStatus, StatusCause, StatusDetails};

/// How a policy's verdict is enforced, from its `policies.yml` entry.
#[derive(Debug, Clone, Copy)]
pub struct PolicyBehaviour<'a> {
    /// The policy id (used in messages and logs).
    pub policy_id: &'a str,
    /// Protect or monitor.
    pub mode: PolicyMode,
    /// Whether mutations are applied.
    pub allowed_to_mutate: bool,
    /// Replacement for the message of a rejection.
    pub message: Option<&'a str>,
}

/// Applies the policy's mode, mutation permission and custom message.
///
/// 1. **monitor**: log the would-be verdict, then allow without patch or
///    status (warnings and audit annotations are kept);
/// 2. **protect, `allowedToMutate: false`**: a response carrying a patch is
///    turned into a rejection that says the policy tried to mutate;
/// 3. **custom message**: for rejections only, replaces `status.message` and
///    keeps the policy's own message in `status.details.causes`.
pub fn post_process(
    mut response: AdmissionResponse,
    behaviour: &PolicyBehaviour<'_>,
) -> AdmissionResponse {
    if behaviour.mode == PolicyMode::Monitor {
        tracing::info!(
            policy_id = behaviour.policy_id,
            uid = %response.uid,
            allowed = response.allowed,
            mutated = response.patch.is_some(),
            policy_message = response.message().unwrap_or_default(),
            "monitor mode: would-be verdict (request allowed)"
        );
        response.allowed = true;
        response.patch = None;
        response.patch_type = None;
        response.status = None;
        return response;
    }

    if !behaviour.allowed_to_mutate && response.patch.is_some() {
        response.allowed = false;
        response.patch = None;
        response.patch_type = None;
        response.status = Some(AdmissionStatus {
            message: Some(format!(
                "Request rejected by policy {}. The policy attempted to mutate the request, \
                 but it is currently configured to not allow mutations.",
                behaviour.policy_id
            )),
            code: None,
            details: None,
        });
    }

    if let (false, Some(custom)) = (response.allowed, behaviour.message) {
        let status = response.status.get_or_insert_with(AdmissionStatus::default);
        let original = status.message.replace(custom.to_string());
        if let Some(original) = original {
            status
                .details
                .get_or_insert_with(StatusDetails::default)
                .causes
                .push(StatusCause {
                    message: Some(original),
                    ..StatusCause::default()
                });
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behaviour(
        mode: PolicyMode,
        allowed_to_mutate: bool,
        message: Option<&str>,
    ) -> PolicyBehaviour<'_> {
        PolicyBehaviour {
            policy_id: "p1",
            mode,
            allowed_to_mutate,
            message,
        }
    }

    fn mutating() -> AdmissionResponse {
        AdmissionResponse {
            uid: "u".into(),
            allowed: true,
            patch: Some("W10=".into()),
            patch_type: Some("JSONPatch".into()),
            ..AdmissionResponse::default()
        }
    }

    #[test]
    fn monitor_allows_and_drops_patch_and_status() {
        let mut rejected = AdmissionResponse::reject("u", "no", 403);
        rejected.warnings = Some(vec!["careful".into()]);
        let out = post_process(
            rejected,
            &behaviour(PolicyMode::Monitor, false, Some("custom")),
        );
        assert!(out.allowed);
        assert!(out.status.is_none());
        assert_eq!(out.warnings, Some(vec!["careful".to_string()]));

        let out = post_process(mutating(), &behaviour(PolicyMode::Monitor, true, None));
        assert!(out.allowed && out.patch.is_none() && out.patch_type.is_none());
    }

    #[test]
    fn mutation_rejected_when_not_allowed() {
        let out = post_process(mutating(), &behaviour(PolicyMode::Protect, false, None));
        assert!(!out.allowed);
        assert!(out.patch.is_none() && out.patch_type.is_none());
        let message = out.message().unwrap();
        assert!(
            message.contains("policy p1") && message.contains("attempted to mutate"),
            "{message}"
        );
    }

    #[test]
    fn mutation_kept_when_allowed() {
        let out = post_process(
            mutating(),
            &behaviour(PolicyMode::Protect, true, Some("custom")),
        );
        assert!(out.allowed);
        assert_eq!(out.patch.as_deref(), Some("W10="));
        assert!(
            out.status.is_none(),
            "custom message only applies to rejections"
        );
    }

    #[test]
    fn custom_message_replaces_and_keeps_original_as_cause() {
        let out = post_process(
            AdmissionResponse::reject("u", "privileged container", 403),
            &behaviour(PolicyMode::Protect, false, Some("ask the platform team")),
        );
        let status = out.status.unwrap();
        assert_eq!(status.message.as_deref(), Some("ask the platform team"));
        assert_eq!(status.code, Some(403));
        assert_eq!(
            status.details.unwrap().causes[0].message.as_deref(),
            Some("privileged container")
        );
    }

    #[test]
    fn custom_message_applies_to_mutation_rejection() {
        let out = post_process(
            mutating(),
            &behaviour(PolicyMode::Protect, false, Some("custom")),
        );
        let status = out.status.unwrap();
        assert_eq!(status.message.as_deref(), Some("custom"));
        assert!(
            status.details.unwrap().causes[0]
                .message
                .as_deref()
                .unwrap()
                .contains("attempted to mutate")
        );
    }
}
