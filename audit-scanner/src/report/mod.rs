//! Policy reports: one per audited object, with one result per policy.
//!
//! The default format is OpenReports (`openreports.io/v1alpha1` `Report` for
//! namespaced objects, `ClusterReport` for cluster-scoped ones), what Policy
//! Reporter and Kubewarden's scanner use; `--report-kind policyreport`
//! writes the legacy `wgpolicyk8s.io/v1alpha2` `PolicyReport` /
//! `ClusterPolicyReport` instead. Both have the same fields.
//!
//! A report is named after its object's uid, lives in its namespace and is
//! owned by it, so that the garbage collector deletes it with the object.
//! It is written whole, by server-side apply, and only when its content
//! differs from what is stored (timestamps aside): a steady cluster costs
//! no writes.

pub mod store;

use std::collections::BTreeMap;

use kube::discovery::ApiResource;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

/// Label on every report the scanner writes (reports are listed by it).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "portcullis-audit-scanner";
/// `source` of every result.
pub const SOURCE: &str = "portcullis";

/// Which report resources are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    /// `openreports.io/v1alpha1` Report and ClusterReport.
    Openreports,
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport and ClusterPolicyReport (legacy).
    Policyreport,
}

impl ReportKind {
    /// The report resource for namespaced objects, or for cluster-scoped ones.
    pub fn api_resource(self, namespaced: bool) -> ApiResource {
        let (group, version, kind, plural) = match (self, namespaced) {
            (Self::Openreports, true) => ("openreports.io", "v1alpha1", "Report", "reports"),
            (Self::Openreports, false) => (
                "openreports.io",
                "v1alpha1",
                "ClusterReport",
                "clusterreports",
            ),
            (Self::Policyreport, true) => (
                "wgpolicyk8s.io",
                "v1alpha2",
                "PolicyReport",
                "policyreports",
            ),
            (Self::Policyreport, false) => (
                "wgpolicyk8s.io",
                "v1alpha2",
                "ClusterPolicyReport",
                "clusterpolicyreports",
            ),
        };
        ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: format!("{group}/{version}"),
            kind: kind.to_string(),
            plural: plural.to_string(),
        }
    }

    /// The other format (whose reports a switch leaves behind).
    pub fn other(self) -> Self {
        match self {
            Self::Openreports => Self::Policyreport,
            Self::Policyreport => Self::Openreports,
        }
    }
}

/// The outcome of one policy for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Admitted.
    Pass,
    /// Rejected.
    Fail,
    /// Not evaluated: transport, policy-server or matchConditions error.
    Error,
    /// Not evaluated by choice (a matchConditions error with `failurePolicy: Ignore`).
    Skip,
}

impl Outcome {
    /// The report's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Error => "error",
            Self::Skip => "skip",
        }
    }
}

/// One result of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyResult {
    /// The policy id.
    pub policy: String,
    /// The outcome.
    pub outcome: Outcome,
    /// The policy's message, or the error.
    pub message: Option<String>,
    /// `critical`, `high`, `medium`, `low` or `info`.
    pub severity: Option<String>,
    /// Free text.
    pub category: Option<String>,
    /// Facts about the policy (kind, name, mode...).
    pub properties: BTreeMap<String, String>,
}

/// The audited object a report is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// apiVersion.
    pub api_version: String,
    /// kind.
    pub kind: String,
    /// metadata.name.
    pub name: String,
    /// metadata.namespace.
    pub namespace: Option<String>,
    /// metadata.uid (also the report's name).
    pub uid: String,
}

/// A result's time (`metav1.Timestamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Seconds since the epoch.
    pub seconds: i64,
    /// Nanoseconds.
    pub nanos: i32,
}

impl Timestamp {
    /// Now, to the second.
    pub fn now() -> Self {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self { seconds, nanos: 0 }
    }

    fn to_json(self) -> Value {
        json!({"seconds": self.seconds, "nanos": self.nanos})
    }

    /// Parses a stored timestamp.
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            seconds: v.get("seconds")?.as_i64()?,
            nanos: v.get("nanos").and_then(Value::as_i64).unwrap_or(0) as i32,
        })
    }
}

/// The result as stored, without its timestamp.
fn result_json(result: &PolicyResult) -> Value {
    let mut r = Map::new();
    r.insert("source".into(), json!(SOURCE));
    r.insert("policy".into(), json!(result.policy));
    r.insert("result".into(), json!(result.outcome.as_str()));
    r.insert("scored".into(), json!(true));
    if let Some(m) = &result.message {
        r.insert("message".into(), json!(m));
    }
    if let Some(s) = &result.severity {
        r.insert("severity".into(), json!(s));
    }
    if let Some(c) = &result.category {
        r.insert("category".into(), json!(c));
    }
    if !result.properties.is_empty() {
        r.insert("properties".into(), json!(result.properties));
    }
    Value::Object(r)
}

/// A digest of a stored or desired result, timestamp excluded.
pub fn result_digest(result: &Value) -> Digest {
    let mut result = result.clone();
    if let Some(map) = result.as_object_mut() {
        map.remove("timestamp");
    }
    digest(&result)
}

/// The report for `subject` with `results` (sorted by policy id). A
/// result's timestamp is `previous(digest)` when an identical result is
/// stored already, else `now`.
pub fn build(
    kind: ReportKind,
    subject: &Subject,
    results: &[PolicyResult],
    previous: impl Fn(&Digest) -> Option<Timestamp>,
    now: Timestamp,
) -> Value {
    let ar = kind.api_resource(subject.namespace.is_some());
    let mut summary = BTreeMap::from([
        ("pass", 0),
        ("fail", 0),
        ("warn", 0),
        ("error", 0),
        ("skip", 0),
    ]);
    let mut entries = Vec::with_capacity(results.len());
    for result in results {
        *summary.entry(result.outcome.as_str()).or_default() += 1;
        let mut entry = result_json(result);
        let timestamp = previous(&digest(&entry)).unwrap_or(now);
        if let Some(map) = entry.as_object_mut() {
            map.insert("timestamp".into(), timestamp.to_json());
        }
        entries.push(entry);
    }
    let mut scope = json!({
        "apiVersion": subject.api_version,
        "kind": subject.kind,
        "name": subject.name,
        "uid": subject.uid,
    });
    let mut metadata = json!({
        "name": subject.uid,
        "labels": {
            MANAGED_BY_LABEL: MANAGED_BY,
            "app.kubernetes.io/part-of": "portcullis",
        },
        "ownerReferences": [{
            "apiVersion": subject.api_version,
            "kind": subject.kind,
            "name": subject.name,
            "uid": subject.uid,
        }],
    });
    if let Some(ns) = &subject.namespace {
        scope["namespace"] = json!(ns);
        metadata["namespace"] = json!(ns);
    }
    let mut report = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": metadata,
        "scope": scope,
        "summary": summary,
        "results": entries,
    });
    if kind == ReportKind::Openreports {
        report["source"] = json!(SOURCE);
    }
    report
}

/// A content digest.
pub type Digest = [u8; 16];

/// The digest of what the scanner manages in a report (stored or desired):
/// its labels, owner references, scope, source, summary and results,
/// timestamps excluded. Equal digests mean nothing to write.
pub fn managed_digest(report: &Value) -> Digest {
    let labels: Map<String, Value> = [MANAGED_BY_LABEL, "app.kubernetes.io/part-of"]
        .iter()
        .filter_map(|k| {
            report
                .pointer("/metadata/labels")
                .and_then(|l| l.get(*k))
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect();
    let results: Vec<Value> = report
        .get("results")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let mut r = r.clone();
                    if let Some(m) = r.as_object_mut() {
                        m.remove("timestamp");
                    }
                    r
                })
                .collect()
        })
        .unwrap_or_default();
    digest(&json!({
        "labels": labels,
        "ownerReferences": report.pointer("/metadata/ownerReferences"),
        "scope": report.get("scope"),
        "source": report.get("source"),
        "summary": report.get("summary"),
        "results": results,
    }))
}

/// SHA-256 (truncated) of the canonical JSON of `value`: object keys sorted,
/// whatever order the map keeps them in.
fn digest(value: &Value) -> Digest {
    fn write(value: &Value, hasher: &mut Sha256) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                hasher.update(b"{");
                for key in keys {
                    hasher.update(serde_json::to_string(key).unwrap_or_default().as_bytes());
                    hasher.update(b":");
                    write(&map[key], hasher);
                    hasher.update(b",");
                }
                hasher.update(b"}");
            }
            Value::Array(items) => {
                hasher.update(b"[");
                for item in items {
                    write(item, hasher);
                    hasher.update(b",");
                }
                hasher.update(b"]");
            }
            other => hasher.update(other.to_string().as_bytes()),
        }
    }
    let mut hasher = Sha256::new();
    write(value, &mut hasher);
    let full = hasher.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(namespace: Option<&str>) -> Subject {
        Subject {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "p".into(),
            namespace: namespace.map(str::to_string),
            uid: "1234".into(),
        }
    }

    fn result(policy: &str, outcome: Outcome) -> PolicyResult {
        PolicyResult {
            policy: policy.into(),
            outcome,
            message: (outcome == Outcome::Fail).then(|| "denied".to_string()),
            severity: Some("high".into()),
            category: None,
            properties: BTreeMap::from([("policy-name".to_string(), policy.to_string())]),
        }
    }

    #[test]
    fn report_shape() {
        let results = [result("a", Outcome::Pass), result("b", Outcome::Fail)];
        let now = Timestamp {
            seconds: 10,
            nanos: 0,
        };
        let r = build(
            ReportKind::Openreports,
            &subject(Some("ns")),
            &results,
            |_| None,
            now,
        );
        assert_eq!(r["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(r["kind"], "Report");
        assert_eq!(r["metadata"]["name"], "1234");
        assert_eq!(r["metadata"]["namespace"], "ns");
        assert_eq!(r["metadata"]["ownerReferences"][0]["uid"], "1234");
        assert_eq!(r["scope"]["kind"], "Pod");
        assert_eq!(
            r["summary"],
            json!({"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0})
        );
        assert_eq!(r["results"][1]["result"], "fail");
        assert_eq!(r["results"][1]["message"], "denied");
        assert_eq!(r["results"][0]["timestamp"]["seconds"], 10);
        let cluster = build(
            ReportKind::Policyreport,
            &subject(None),
            &results,
            |_| None,
            now,
        );
        assert_eq!(cluster["kind"], "ClusterPolicyReport");
        assert!(cluster["metadata"].get("namespace").is_none());
        assert!(cluster.get("source").is_none());
    }

    #[test]
    fn digests_ignore_timestamps_and_key_order_but_not_content() {
        let results = [result("a", Outcome::Pass)];
        let s = subject(Some("ns"));
        let t1 = build(
            ReportKind::Openreports,
            &s,
            &results,
            |_| None,
            Timestamp {
                seconds: 1,
                nanos: 0,
            },
        );
        let t2 = build(
            ReportKind::Openreports,
            &s,
            &results,
            |_| None,
            Timestamp {
                seconds: 2,
                nanos: 0,
            },
        );
        assert_eq!(managed_digest(&t1), managed_digest(&t2));
        // What the API server adds is not ours.
        let mut stored = t1.clone();
        stored["metadata"]["resourceVersion"] = json!("42");
        stored["metadata"]["labels"]["someone"] = json!("else");
        assert_eq!(managed_digest(&stored), managed_digest(&t1));
        let failing = build(
            ReportKind::Openreports,
            &s,
            &[result("a", Outcome::Fail)],
            |_| None,
            Timestamp::now(),
        );
        assert_ne!(managed_digest(&failing), managed_digest(&t1));
        let reordered: Value =
            serde_json::from_str(&serde_json::to_string(&json!({"b": 1, "a": 2})).unwrap())
                .unwrap();
        assert_eq!(digest(&reordered), digest(&json!({"a": 2, "b": 1})));
    }

    #[test]
    fn unchanged_results_keep_their_timestamp() {
        let s = subject(Some("ns"));
        let old = build(
            ReportKind::Openreports,
            &s,
            &[result("a", Outcome::Pass)],
            |_| None,
            Timestamp {
                seconds: 5,
                nanos: 0,
            },
        );
        let kept = result_digest(&old["results"][0]);
        let new = build(
            ReportKind::Openreports,
            &s,
            &[result("a", Outcome::Pass), result("b", Outcome::Fail)],
            |d| {
                (*d == kept).then_some(Timestamp {
                    seconds: 5,
                    nanos: 0,
                })
            },
            Timestamp {
                seconds: 9,
                nanos: 0,
            },
        );
        assert_eq!(new["results"][0]["timestamp"]["seconds"], 5);
        assert_eq!(new["results"][1]["timestamp"]["seconds"], 9);
    }
}
