//! Strategies shared by the property tests of this crate.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Object keys from a small alphabet, so that two random documents share
/// keys (and a diff between them is nested), with the characters JSON
/// Pointer escapes (`~`, `/`) and a non-ASCII one.
pub(crate) fn json_key() -> impl Strategy<Value = String> {
    "[ab~/é]{0,3}"
}

/// Any JSON value without floats (serde_json does not round-trip every
/// float exactly without its `float_roundtrip` feature; integers do).
pub(crate) fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[ -~é]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object with arbitrary members.
pub(crate) fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(json_key(), json_value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}
