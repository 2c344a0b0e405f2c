//! The default-labels policy: add the configured labels that an object lacks.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The policy's settings. Unknown keys are rejected.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The labels to add when missing, as key and value.
    pub labels: BTreeMap<String, String>,
}

impl Settings {
    /// Checks every key and value against the Kubernetes label rules. The
    /// error names each bad key or value, `"; "`-separated.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for (key, value) in &self.labels {
            if let Err(e) = validate_label_key(key) {
                errors.push(format!("invalid label key {key:?}: {e}"));
            }
            if let Err(e) = validate_label_value(value) {
                errors.push(format!("invalid value {value:?} for label {key:?}: {e}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

const NAME_CHARSET: &str = "must consist of alphanumeric characters, '-', '_' or '.', \
     and must start and end with an alphanumeric character";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, not checking the length.
fn is_name_charset(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A lowercase RFC 1123 subdomain, not checking the length:
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`.
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !b.is_empty()
                && alnum(&b[0])
                && alnum(&b[b.len() - 1])
                && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

/// Checks a label key: an optional DNS-subdomain prefix (at most 253
/// characters) and `/`, then a name of at most 63 characters.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        if prefix.len() > 253 {
            return Err("prefix part must be no more than 253 characters".into());
        }
        if !is_dns1123_subdomain(prefix) {
            return Err(
                "prefix part must be a lowercase RFC 1123 subdomain: lower case \
                 alphanumeric characters, '-' or '.', starting and ending with an \
                 alphanumeric character"
                    .into(),
            );
        }
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !is_name_charset(name) {
        // A second '/' lands here too, since '/' is not in the charset.
        return Err(format!("name part {NAME_CHARSET}"));
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 characters of the name charset.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !is_name_charset(value) {
        return Err(format!("a label value must be empty or {NAME_CHARSET}"));
    }
    Ok(())
}

/// Adds to `object.metadata.labels` each label of `labels` that is missing;
/// existing labels are never overwritten. Returns whether anything was added.
///
/// Objects without `metadata` (or that are not JSON objects) are left alone.
/// A `metadata` or `metadata.labels` that is not an object is an error.
pub fn add_missing_labels(
    object: &mut Value,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let Some(metadata) = object.as_object_mut().and_then(|o| o.get_mut("metadata")) else {
        return Ok(false);
    };
    let metadata = match metadata {
        Value::Null => return Ok(false),
        Value::Object(m) => m,
        _ => return Err("metadata is not an object".into()),
    };
    if labels
        .keys()
        .all(|k| metadata.get("labels").and_then(|l| l.get(k)).is_some())
    {
        return Ok(false);
    }
    let existing = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if existing.is_null() {
        *existing = Value::Object(Map::new());
    }
    let Value::Object(existing) = existing else {
        return Err("metadata.labels is not an object".into());
    };
    let mut added = false;
    for (k, v) in labels {
        if !existing.contains_key(k) {
            existing.insert(k.clone(), Value::String(v.clone()));
            added = true;
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys() {
        for ok in [
            "app",
            "a",
            "app.kubernetes.io/name",
            "example.com/My_Name-1.x",
            "x/y",
            "A1",
            &"a".repeat(63),
            &format!("{}/n", "a".repeat(253)),
        ] {
            assert_eq!(validate_label_key(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "name part must be non-empty"),
            ("/name", "prefix part must be non-empty"),
            ("example.com/", "name part must be non-empty"),
            ("-app", "name part must consist"),
            ("app-", "name part must consist"),
            ("a b", "name part must consist"),
            (
                "Example.com/app",
                "prefix part must be a lowercase RFC 1123",
            ),
            ("ex..com/app", "prefix part must be a lowercase RFC 1123"),
            ("a/b/c", "name part must consist"),
            (&"a".repeat(64), "name part must be no more than 63"),
            (
                &format!("{}/n", "a".repeat(254)),
                "prefix part must be no more than 253",
            ),
        ] {
            let e = validate_label_key(bad).unwrap_err();
            assert!(e.starts_with(why), "{bad}: {e}");
        }
    }

    #[test]
    fn values() {
        for ok in ["", "v", "v1.2_3-x", &"a".repeat(63)] {
            assert_eq!(validate_label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-v", "v-", "a b", "a/b", &"a".repeat(64)] {
            assert!(validate_label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_messages() {
        let s: Settings =
            serde_json::from_value(json!({"labels": {"ok": "fine", "bad key": "x", "k": "-v"}}))
                .unwrap();
        assert_eq!(
            s.validate().unwrap_err(),
            "invalid label key \"bad key\": name part must consist of alphanumeric characters, \
             '-', '_' or '.', and must start and end with an alphanumeric character; \
             invalid value \"-v\" for label \"k\": a label value must be empty or must consist \
             of alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character"
        );
        let e = serde_json::from_value::<Settings>(json!({"labels": {}, "extra": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
        assert_eq!(
            serde_json::from_value::<Settings>(json!({})).unwrap(),
            Settings::default()
        );
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn merge() {
        let want = labels(&[("team", "platform"), ("env", "prod")]);

        let mut o = json!({"kind": "Pod", "metadata": {"name": "x"}});
        assert_eq!(add_missing_labels(&mut o, &want), Ok(true));
        assert_eq!(
            o["metadata"]["labels"],
            json!({"team": "platform", "env": "prod"})
        );

        let mut o = json!({"metadata": {"labels": {"team": "payments", "app": "web"}}});
        assert_eq!(add_missing_labels(&mut o, &want), Ok(true));
        assert_eq!(
            o["metadata"]["labels"],
            json!({"team": "payments", "app": "web", "env": "prod"})
        );

        let mut o = json!({"metadata": {"labels": {"team": "a", "env": "b"}}});
        let before = o.clone();
        assert_eq!(add_missing_labels(&mut o, &want), Ok(false));
        assert_eq!(o, before);

        let mut o = json!({"metadata": {"labels": null}});
        assert_eq!(add_missing_labels(&mut o, &want), Ok(true));
        assert_eq!(o["metadata"]["labels"]["env"], "prod");

        let mut o = json!({"kind": "Foo"});
        assert_eq!(add_missing_labels(&mut o, &want), Ok(false));
        assert_eq!(add_missing_labels(&mut Value::Null, &want), Ok(false));
        assert!(add_missing_labels(&mut json!({"metadata": {"labels": []}}), &want).is_err());
        assert!(add_missing_labels(&mut json!({"metadata": 3}), &want).is_err());

        let mut o = json!({"metadata": {}});
        assert_eq!(add_missing_labels(&mut o, &BTreeMap::new()), Ok(false));
        assert_eq!(o, json!({"metadata": {}}));
    }
}
