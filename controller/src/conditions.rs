//! Status conditions (`metav1.Condition`) written by the reconcilers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition with the given fields, keeping `lastTransitionTime` from
/// `previous` when the status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_keep_their_transition_time() {
        let first = condition(
            &[],
            "PolicyActive",
            false,
            "Pending",
            String::new(),
            Some(1),
        );
        let same = condition(
            std::slice::from_ref(&first),
            "PolicyActive",
            false,
            "Other",
            "m".to_string(),
            Some(2),
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        assert_eq!(same.reason, "Other");
        let flipped = condition(&[first], "PolicyActive", true, "Ok", String::new(), Some(2));
        assert_eq!(flipped.status, "True");
    }
}
