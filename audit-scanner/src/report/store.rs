//! Reading and writing reports in the API server.

use std::collections::HashMap;

use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

use super::{
    Digest, MANAGED_BY, MANAGED_BY_LABEL, ReportKind, Timestamp, managed_digest, result_digest,
};
use crate::stats::{Stats, Verb};

/// Field manager of the scanner's server-side applies.
pub const FIELD_MANAGER: &str = "portcullis-audit-scanner";

/// A report as stored, reduced to what deciding a write needs.
#[derive(Debug, Clone)]
pub struct Stored {
    /// [`managed_digest`] of the stored report.
    pub digest: Digest,
    /// Each stored result's digest (timestamp excluded) and timestamp.
    pub results: Vec<(Digest, Timestamp)>,
    /// `scope.apiVersion` and `scope.kind`: the type of the object.
    pub scope_type: (String, String),
}

impl Stored {
    /// Reduces a stored report.
    pub fn from_report(report: &Value) -> Self {
        let results = report
            .get("results")
            .and_then(Value::as_array)
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| {
                        let ts = r.get("timestamp").and_then(Timestamp::from_json)?;
                        Some((result_digest(r), ts))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let text = |p: &str| {
            report
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Self {
            digest: managed_digest(report),
            results,
            scope_type: (text("/scope/apiVersion"), text("/scope/kind")),
        }
    }

    /// The stored timestamp of a result with this digest.
    pub fn timestamp_of(&self, digest: &Digest) -> Option<Timestamp> {
        self.results
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, t)| *t)
    }
}

/// The reports of one namespace (or the cluster-scoped ones), by name.
pub type StoredReports = HashMap<String, Stored>;

/// The scanner's reports of one kind.
#[derive(Clone)]
pub struct ReportStore {
    client: Client,
    kind: ReportKind,
    page_size: u32,
    stats: std::sync::Arc<Stats>,
}

impl ReportStore {
    /// A store writing `kind` reports.
    pub fn new(
        client: Client,
        kind: ReportKind,
        page_size: u32,
        stats: std::sync::Arc<Stats>,
    ) -> Self {
        Self {
            client,
            kind,
            page_size,
            stats,
        }
    }

    /// The report kind written.
    pub fn kind(&self) -> ReportKind {
        self.kind
    }

    fn api(&self, kind: ReportKind, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = kind.api_resource(namespace.is_some());
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Every report the scanner wrote in `namespace` (`None`: the
    /// cluster-scoped ones), read page by page.
    pub async fn list(&self, namespace: Option<&str>) -> kube::Result<StoredReports> {
        self.list_kind(self.kind, namespace).await
    }

    async fn list_kind(
        &self,
        kind: ReportKind,
        namespace: Option<&str>,
    ) -> kube::Result<StoredReports> {
        let api = self.api(kind, namespace);
        let mut stored = StoredReports::new();
        let mut params = ListParams::default()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
            .limit(self.page_size);
        loop {
            self.stats.api_request(Verb::List);
            let page = api.list(&params).await?;
            for item in &page.items {
                let Some(name) = item.metadata.name.clone() else {
                    continue;
                };
                let value = serde_json::to_value(item).unwrap_or_default();
                stored.insert(name, Stored::from_report(&value));
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(stored)
    }

    /// Writes `report` (named `name`) by server-side apply.
    pub async fn apply(
        &self,
        namespace: Option<&str>,
        name: &str,
        report: &Value,
    ) -> kube::Result<()> {
        self.stats.api_request(Verb::Patch);
        self.api(self.kind, namespace)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(report),
            )
            .await
            .map(|_| ())
    }

    /// Deletes a report; one already gone is fine.
    pub async fn delete(&self, namespace: Option<&str>, name: &str) -> kube::Result<()> {
        self.delete_kind(self.kind, namespace, name).await
    }

    async fn delete_kind(
        &self,
        kind: ReportKind,
        namespace: Option<&str>,
        name: &str,
    ) -> kube::Result<()> {
        self.stats.api_request(Verb::Delete);
        match self
            .api(kind, namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the scanner's reports of the other format in `namespace`
    /// (left behind by a change of `--report-kind`); returns how many. A
    /// format whose CRD is not installed has none.
    pub async fn delete_other_kind(&self, namespace: Option<&str>) -> kube::Result<u64> {
        let other = self.kind.other();
        let stored = match self.list_kind(other, namespace).await {
            Ok(s) => s,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut deleted = 0;
        for name in stored.keys() {
            self.delete_kind(other, namespace, name).await?;
            deleted += 1;
        }
        Ok(deleted)
    }
}
