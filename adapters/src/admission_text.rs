//! An AdmissionRequest kept as the JSON text the API server sent.
//!
//! The policy-server's request path used to parse every AdmissionReview into
//! a `serde_json::Value` tree, then serialise that tree again into the waPC
//! payload, then drop it: three passes over the document, each allocating a
//! node per string, array and object. A waPC policy needs none of that: its
//! payload is the request's own text, spliced between `{"request":` and the
//! settings. [`AdmissionText`] keeps the text, reads the few top-level
//! members the host needs (uid, operation, kind, namespace) without building
//! a tree, and builds the tree only when something asks for it (a component
//! or Rego policy, a mutation's patch).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{self, Deserializer as _, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// Members that Kubewarden's SDKs accept as an explicit `null`; a `null`
/// anywhere else at the top level must be left out of a waPC payload.
const NULLABLE_MEMBERS: [&str; 2] = ["object", "oldObject"];

/// The members of `admissionv1.AdmissionRequest`, whose text the pass over
/// the top level records, so that [`AdmissionText::member`] needs no second
/// pass over the objects.
const MEMBERS: [&str; 15] = [
    "uid",
    "kind",
    "resource",
    "subResource",
    "requestKind",
    "requestResource",
    "requestSubResource",
    "name",
    "namespace",
    "operation",
    "userInfo",
    "object",
    "oldObject",
    "dryRun",
    "options",
];

/// Where each of [`MEMBERS`] is in the text, as a byte range.
type Spans = [Option<Range<usize>>; MEMBERS.len()];

/// Why a text is not an AdmissionRequest the host can serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionTextError {
    /// Not a JSON object.
    #[error("request must be an object")]
    NotAnObject,
    /// No `uid`, or not a non-empty string.
    #[error("request.uid is missing")]
    MissingUid,
    /// Malformed JSON or a member of the wrong type.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// An AdmissionRequest as JSON text, with the top-level facts the host needs.
/// The `serde_json::Value` tree is built on first use ([`Self::tree`]).
#[derive(Clone)]
pub struct AdmissionText {
    text: Box<RawValue>,
    uid: String,
    operation: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    /// The text can be a waPC payload's `request` as it is: no top-level
    /// member repeats, and none but the objects is `null`.
    spliceable: bool,
    /// Boxed: a request is passed around by value, spans are read rarely.
    members: Box<Spans>,
    tree: OnceLock<Value>,
}

impl fmt::Debug for AdmissionText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionText")
            .field("uid", &self.uid)
            .field("operation", &self.operation)
            .field("kind", &self.kind)
            .field("bytes", &self.text.get().len())
            .finish_non_exhaustive()
    }
}

impl AdmissionText {
    /// Reads the top level of `text`, which must be a JSON object with a
    /// non-empty string `uid`. The rest of the document is checked to be
    /// well-formed JSON and left as it is.
    pub fn new(text: Box<RawValue>) -> Result<Self, AdmissionTextError> {
        // A `RawValue` holds one JSON value without surrounding whitespace.
        if !text.get().starts_with('{') {
            return Err(AdmissionTextError::NotAnObject);
        }
        let mut de = serde_json::Deserializer::from_str(text.get());
        let top = (&mut de)
            .deserialize_map(TopLevelVisitor { text: text.get() })
            .map_err(|e| AdmissionTextError::Malformed(e.to_string()))?;
        let member = |name| member_text(text.get(), &top.members, name);
        let uid = member("uid")
            .and_then(string)
            .filter(|uid| !uid.is_empty())
            .ok_or(AdmissionTextError::MissingUid)?;
        let kind = member("kind")
            .and_then(|raw| serde_json::from_str::<GroupVersionKind>(raw).ok())
            .and_then(|gvk| gvk.kind);
        Ok(Self {
            uid,
            operation: member("operation").and_then(string),
            kind,
            namespace: member("namespace").and_then(string),
            spliceable: top.spliceable,
            members: top.members,
            text,
            tree: OnceLock::new(),
        })
    }

    /// The JSON text, as received.
    pub fn text(&self) -> &str {
        self.text.get()
    }

    /// `uid`.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// `operation`, if a string.
    pub fn operation(&self) -> Option<&str> {
        self.operation.as_deref()
    }

    /// `kind.kind`, if a string.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// `namespace`, if a string.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// True when the text can go into a waPC payload unchanged.
    pub fn spliceable(&self) -> bool {
        self.spliceable
    }

    /// The JSON text of the top-level member `name`, as received (the last
    /// one if it repeats, as in the tree), for the members of
    /// `admissionv1.AdmissionRequest`; `None` if absent or not one of them.
    pub fn member(&self, name: &str) -> Option<&str> {
        member_text(self.text.get(), &self.members, name)
    }

    /// The request as a tree, parsed on first use.
    pub fn tree(&self) -> &Value {
        self.tree.get_or_init(|| {
            // The text was read as well-formed JSON when `self` was made.
            serde_json::from_str(self.text.get()).unwrap_or(Value::Null)
        })
    }
}

/// Where member `name` is in [`MEMBERS`].
fn member_index(name: &str) -> Option<usize> {
    MEMBERS.iter().position(|m| *m == name)
}

/// The text of member `name`, located by `members` in `text`.
fn member_text<'t>(text: &'t str, members: &Spans, name: &str) -> Option<&'t str> {
    let span = members[member_index(name)?].clone()?;
    text.get(span)
}

/// What the single pass over the top level finds.
struct TopLevel {
    spliceable: bool,
    members: Box<Spans>,
}

struct TopLevelVisitor<'t> {
    /// The text being read, to locate the members' values in it.
    text: &'t str,
}

impl TopLevelVisitor<'_> {
    /// Where `raw`, borrowed from the text being read, is in it.
    fn span(&self, raw: &str) -> Option<Range<usize>> {
        let start = (raw.as_ptr() as usize).checked_sub(self.text.as_ptr() as usize)?;
        let span = start..start + raw.len();
        (self.text.get(span.clone()) == Some(raw)).then_some(span)
    }
}

impl<'de> Visitor<'de> for TopLevelVisitor<'_> {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionRequest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut top = TopLevel {
            spliceable: true,
            members: Default::default(),
        };
        // A request has about fifteen members: a list beats a set here.
        let mut seen: Vec<Cow<'de, str>> = Vec::with_capacity(16);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            let raw = value.get();
            if seen.contains(&key) {
                top.spliceable = false;
            }
            if raw == "null" && !NULLABLE_MEMBERS.contains(&key.as_ref()) {
                top.spliceable = false;
            }
            // Last one wins, as in a `serde_json::Value` map.
            if let Some(at) = member_index(&key) {
                top.members[at] = self.span(raw);
            }
            seen.push(key);
        }
        Ok(top)
    }
}

/// The string a raw member holds, if it is one.
fn string(raw: &str) -> Option<String> {
    serde_json::from_str::<String>(raw).ok()
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default, deserialize_with = "string_or_none")]
    kind: Option<String>,
}

fn string_or_none<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(match value {
        Value::String(s) => Some(s),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(value: &str) -> Result<AdmissionText, AdmissionTextError> {
        AdmissionText::new(RawValue::from_string(value.to_string()).unwrap())
    }

    #[test]
    fn reads_the_facts_and_keeps_the_text() {
        let source = r#"{"uid":"u-1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"team-a","object":{"metadata":{"name":"p"}}}"#;
        let request = text(source).unwrap();
        assert_eq!(request.uid(), "u-1");
        assert_eq!(request.kind(), Some("Pod"));
        assert_eq!(request.operation(), Some("CREATE"));
        assert_eq!(request.namespace(), Some("team-a"));
        assert_eq!(request.text(), source);
        assert!(request.spliceable());
        assert_eq!(request.tree()["object"]["metadata"]["name"], json!("p"));
    }

    #[test]
    fn refuses_what_the_envelope_check_refused() {
        assert_eq!(text("[1]").unwrap_err(), AdmissionTextError::NotAnObject);
        assert_eq!(text("1").unwrap_err(), AdmissionTextError::NotAnObject);
        assert_eq!(text("{}").unwrap_err(), AdmissionTextError::MissingUid);
        assert_eq!(
            text(r#"{"uid":""}"#).unwrap_err(),
            AdmissionTextError::MissingUid
        );
        assert_eq!(
            text(r#"{"uid":7}"#).unwrap_err(),
            AdmissionTextError::MissingUid
        );
    }

    #[test]
    fn nulls_and_repeats_are_not_spliced() {
        assert!(
            text(r#"{"uid":"u","object":null,"oldObject":null}"#)
                .unwrap()
                .spliceable()
        );
        assert!(!text(r#"{"uid":"u","dryRun":null}"#).unwrap().spliceable());
        let repeated = text(r#"{"uid":"u","namespace":"a","namespace":"b"}"#).unwrap();
        assert!(!repeated.spliceable());
        // The last one wins, as in the tree.
        assert_eq!(repeated.namespace(), Some("b"));
        assert_eq!(repeated.tree()["namespace"], json!("b"));
    }

    #[test]
    fn odd_member_types_are_no_facts() {
        let request =
            text(r#"{"uid":"u","kind":"Pod","operation":1,"namespace":{"a":1}}"#).unwrap();
        assert_eq!(request.kind(), None);
        assert_eq!(request.operation(), None);
        assert_eq!(request.namespace(), None);
    }

    #[test]
    fn members_are_their_text_as_received() {
        let request =
            text(r#"{"uid":"u","object":{ "a" : [1, 2] },"oldObject":null,"\u006eame":"n","x":1}"#)
                .unwrap();
        assert_eq!(request.member("uid"), Some(r#""u""#));
        assert_eq!(request.member("object"), Some(r#"{ "a" : [1, 2] }"#));
        assert_eq!(request.member("oldObject"), Some("null"));
        assert_eq!(request.member("name"), Some(r#""n""#));
        assert_eq!(request.member("options"), None);
        // Not a member of admissionv1.AdmissionRequest.
        assert_eq!(request.member("x"), None);
        let repeated = text(r#"{"uid":"u","name":"a","name":"b"}"#).unwrap();
        assert_eq!(repeated.member("name"), Some(r#""b""#));
    }

    #[test]
    fn escaped_keys_are_read() {
        let request = text(r#"{"\u0075id":"u","namespace":"n"}"#).unwrap();
        assert_eq!(request.uid(), "u");
    }
}
