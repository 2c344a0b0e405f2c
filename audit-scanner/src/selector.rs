//! Label selectors (`metav1.LabelSelector`) evaluated against an object's
//! labels, with the API server's semantics: an absent or empty selector
//! matches everything, `matchLabels` and every `matchExpressions` entry are
//! ANDed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Whether `labels` match `selector`. An unknown operator matches nothing
/// (the API server refuses such a selector; a policy carrying one must not
/// widen what is audited).
pub fn matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_match
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| requirement_matches(requirement, labels))
}

fn requirement_matches(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn absent_and_empty_selectors_match_everything() {
        assert!(matches(None, &labels(&[])));
        assert!(matches(
            Some(&LabelSelector::default()),
            &labels(&[("a", "b")])
        ));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("team", "a")])),
            match_expressions: Some(vec![
                requirement("env", "In", &["prod", "staging"]),
                requirement("skip", "DoesNotExist", &[]),
            ]),
        };
        assert!(matches(
            Some(&selector),
            &labels(&[("team", "a"), ("env", "prod")])
        ));
        assert!(!matches(
            Some(&selector),
            &labels(&[("team", "b"), ("env", "prod")])
        ));
        assert!(!matches(
            Some(&selector),
            &labels(&[("team", "a"), ("env", "dev")])
        ));
        assert!(!matches(
            Some(&selector),
            &labels(&[("team", "a"), ("env", "prod"), ("skip", "")])
        ));
    }

    #[test]
    fn not_in_matches_absent_keys_and_unknown_operators_match_nothing() {
        let not_in = LabelSelector {
            match_expressions: Some(vec![requirement("env", "NotIn", &["prod"])]),
            ..Default::default()
        };
        assert!(matches(Some(&not_in), &labels(&[])));
        assert!(matches(Some(&not_in), &labels(&[("env", "dev")])));
        assert!(!matches(Some(&not_in), &labels(&[("env", "prod")])));
        let exists = LabelSelector {
            match_expressions: Some(vec![requirement("env", "Exists", &[])]),
            ..Default::default()
        };
        assert!(matches(Some(&exists), &labels(&[("env", "")])));
        let bogus = LabelSelector {
            match_expressions: Some(vec![requirement("env", "Matches", &["x"])]),
            ..Default::default()
        };
        assert!(!matches(Some(&bogus), &labels(&[("env", "x")])));
    }
}
