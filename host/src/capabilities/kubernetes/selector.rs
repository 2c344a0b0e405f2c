//! Label and field selectors, evaluated against the watch cache.
//!
//! The cache holds every object of a kind, so a selector is applied locally
//! instead of opening one more watch per selector on the API server (the
//! incumbent keeps one reflector, and one copy of the objects, per query).
//! The syntax is Kubernetes' own; kube-rs has selector types but no parser
//! for the text form, hence this one.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelSelector {
    /// Parses `app=web,tier!=db,env in (a,b),!legacy,team`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_label_term(term)?);
        }
        Ok(Self(requirements))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// Splits on commas that are not inside `( )`.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in label selector {text:?}"))?
            }
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in label selector {text:?}"));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn parse_label_term(term: &str) -> Result<LabelRequirement, String> {
    let invalid = |why: &str| format!("invalid label selector term {term:?}: {why}");
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(label_key(key.trim(), term)?));
    }
    for (op, set_op) in [(" notin ", false), (" in ", true)] {
        if let Some(position) = term.find(op) {
            let key = label_key(term[..position].trim(), term)?;
            let values = term[position + op.len()..].trim();
            let values = values
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| invalid("the values must be in parentheses"))?;
            let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
            return Ok(if set_op {
                LabelRequirement::In(key, values)
            } else {
                LabelRequirement::NotIn(key, values)
            });
        }
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(
            label_key(key.trim(), term)?,
            value.trim().to_string(),
        ));
    }
    if let Some((key, value)) = term.split_once('=') {
        let value = value.strip_prefix('=').unwrap_or(value);
        return Ok(LabelRequirement::Equals(
            label_key(key.trim(), term)?,
            value.trim().to_string(),
        ));
    }
    Ok(LabelRequirement::Exists(label_key(term, term)?))
}

fn label_key(key: &str, term: &str) -> Result<String, String> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_string())
    } else {
        Err(format!(
            "invalid label selector term {term:?}: {key:?} is not a label key"
        ))
    }
}

/// A parsed field selector: `metadata.name=x,spec.nodeName!=y`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelector(Vec<FieldRequirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    path: Vec<String>,
    value: String,
    equal: bool,
}

impl FieldSelector {
    /// Parses `a.b=x`, `a.b==x` and `a.b!=x` terms separated by commas.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, false)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, v, true)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, v, true)
            } else {
                return Err(format!(
                    "invalid field selector term {term:?}: expected field=value or field!=value"
                ));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!(
                    "invalid field selector term {term:?}: empty field name"
                ));
            }
            requirements.push(FieldRequirement {
                path,
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(Self(requirements))
    }

    /// Whether the selector only uses `metadata.name` and `metadata.namespace`,
    /// which the cache knows without parsing the object.
    pub fn needs_object(&self) -> bool {
        self.0.iter().any(|r| {
            !(r.path.len() == 2
                && r.path[0] == "metadata"
                && (r.path[1] == "name" || r.path[1] == "namespace"))
        })
    }

    /// Whether an object with `namespace`/`name` (and, when
    /// [`Self::needs_object`], the parsed `object`) satisfies every term.
    /// A missing field compares as the empty string, as on the API server.
    pub fn matches(&self, namespace: &str, name: &str, object: Option<&Value>) -> bool {
        self.0.iter().all(|r| {
            let actual = match (
                r.path.first().map(String::as_str),
                r.path.get(1).map(String::as_str),
                r.path.len(),
            ) {
                (Some("metadata"), Some("name"), 2) => name.to_string(),
                (Some("metadata"), Some("namespace"), 2) => namespace.to_string(),
                _ => object
                    .and_then(|o| r.path.iter().try_fold(o, |v, k| v.get(k)))
                    .map(scalar_text)
                    .unwrap_or_default(),
            };
            (actual == r.value) == r.equal
        })
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("env", "prod")]);
        let yes = [
            "",
            "app=web",
            "app==web",
            "app=web,tier=front",
            "tier!=db",
            "env in (prod, staging)",
            "env notin (dev)",
            "missing notin (x)",
            "app",
            "!legacy",
            "app=web, env in (prod),!legacy",
            "example.com/team!=a",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&l), "{s:?}");
        }
        let no = [
            "app=db",
            "tier!=front",
            "env in (dev,staging)",
            "env notin (prod)",
            "missing",
            "!app",
            "missing in (x)",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&l), "{s:?}");
        }
        for bad in ["app in web", "a=(", "(a", "a b=c", "=x"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"spec": {"nodeName": "n1", "replicas": 3, "paused": false}, "status": {"phase": "Running"}});
        let s = FieldSelector::parse("metadata.name=p,metadata.namespace==ns").unwrap();
        assert!(!s.needs_object());
        assert!(s.matches("ns", "p", None));
        assert!(!s.matches("ns", "q", None));
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending").unwrap();
        assert!(s.needs_object());
        assert!(s.matches("ns", "p", Some(&pod)));
        let s = FieldSelector::parse("spec.replicas=3,spec.paused=false,spec.missing=").unwrap();
        assert!(s.matches("ns", "p", Some(&pod)));
        assert!(
            !FieldSelector::parse("spec.nodeName=n2")
                .unwrap()
                .matches("ns", "p", Some(&pod))
        );
        for bad in ["nodeName", "a..b=c", "=x"] {
            assert!(FieldSelector::parse(bad).is_err(), "{bad:?}");
        }
    }
}
