//! `field_masks`: the fields of each object a policy asked for.
//!
//! A mask is a set of dotted paths (`metadata.name`, `spec.rules.host`).
//! Fields on a path are kept with everything below them; other fields are
//! dropped; arrays are transparent (the mask applies to each element). This is
//! Kubewarden's semantics, so a policy gets the same trimmed objects here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// A field mask as a tree of path segments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldMask {
    children: BTreeMap<String, FieldMask>,
}

impl FieldMask {
    /// Builds the tree of `paths`. An empty set masks nothing.
    pub fn new(paths: &BTreeSet<String>) -> Self {
        let mut root = Self::default();
        for path in paths {
            let mut node = &mut root;
            for segment in path.split('.') {
                node = node.children.entry(segment.to_string()).or_default();
            }
        }
        root
    }

    /// Whether the mask keeps everything.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Drops from `value` every field the mask does not name.
    pub fn apply(&self, value: &mut Value) {
        if self.children.is_empty() {
            return;
        }
        match value {
            Value::Object(map) => map.retain(|key, child| match self.children.get(key) {
                Some(mask) => {
                    mask.apply(child);
                    true
                }
                None => false,
            }),
            Value::Array(items) => items.iter_mut().for_each(|item| self.apply(item)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn masked(mut value: Value, paths: &[&str]) -> Value {
        let paths: BTreeSet<String> = paths.iter().map(|p| p.to_string()).collect();
        FieldMask::new(&paths).apply(&mut value);
        value
    }

    #[test]
    fn as_upstream() {
        assert_eq!(
            masked(json!({"a": {"b": 1, "c": 2}, "d": 3}), &["a.b", "d"]),
            json!({"a": {"b": 1}, "d": 3})
        );
        assert_eq!(
            masked(
                json!({"users": [{"name": "A", "age": 1, "m": {"id": 1}}, {"name": "B"}], "m": {"count": 2}}),
                &["users.name", "users.m"]
            ),
            json!({"users": [{"name": "A", "m": {"id": 1}}, {"name": "B"}]})
        );
        assert_eq!(
            masked(
                json!({"user": {"name": "A", "x": {"y": 1}}, "other": 1}),
                &["user"]
            ),
            json!({"user": {"name": "A", "x": {"y": 1}}})
        );
        let all = json!({"a": 1});
        assert_eq!(masked(all.clone(), &[]), all);
    }
}
