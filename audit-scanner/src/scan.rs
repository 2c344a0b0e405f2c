//! One audit run: the cluster-scoped part and every namespace, in parallel,
//! then the clean-up of stale reports.
//!
//! A run never leaves a report half-written: each report is applied whole
//! (one request), so it holds either the previous run's results for its
//! object or this run's. Reports of objects that no policy audits any more
//! are deleted only at the end, and only if every namespace was read
//! completely, so a run killed half-way has deleted nothing. A resource
//! type that could not be listed keeps its reports.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use futures_util::stream;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DynamicObject, ListParams};
use kube::discovery::Discovery;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Semaphore;

use crate::Config;
use crate::client::PolicyServerClient;
use crate::policies::{self, AuditPolicy};
use crate::progress::{ListCount, Snapshot};
use crate::report::store::{ReportStore, StoredReports};
use crate::resources::{self, PlannedResource};
use crate::stats::{Stats, Verb};

/// What a run did.
#[derive(Debug)]
pub struct RunOutcome {
    /// Whether every namespace and resource type was audited and every
    /// report written.
    pub complete: bool,
    /// The counters.
    pub stats: Arc<Stats>,
    /// How long it took.
    pub duration: Duration,
}

/// A part of the run with its own reports: the cluster-scoped objects, or
/// one namespace.
#[derive(Debug, Clone)]
enum Unit {
    Cluster,
    Namespace {
        name: String,
        labels: BTreeMap<String, String>,
    },
}

/// The state of one unit while its objects are audited.
#[derive(Default)]
pub(crate) struct UnitState {
    /// Reports stored at the start, removed as their objects are audited:
    /// what is left at the end is stale.
    pub stored: Mutex<StoredReports>,
    /// Uids of the objects audited.
    pub seen: Mutex<HashSet<String>>,
    /// `(apiVersion, kind)` of the types that could not be listed: their
    /// reports are kept.
    pub failed_types: Mutex<HashSet<(String, String)>>,
}

/// The run's shared state.
pub(crate) struct Scanner {
    pub client: Client,
    pub config: Config,
    pub policies: Vec<AuditPolicy>,
    pub plan: Vec<PlannedResource>,
    pub policy_servers: PolicyServerClient,
    pub store: Option<ReportStore>,
    pub stats: Arc<Stats>,
    objects_in_flight: Semaphore,
    stale: Mutex<Vec<(Option<String>, String)>>,
    incomplete: AtomicBool,
    other_kind_served: bool,
}

impl Scanner {
    pub(crate) fn mark_incomplete(&self) {
        self.incomplete.store(true, Ordering::Relaxed);
    }
}

/// Runs one audit with `client`.
pub async fn run(client: Client, config: Config) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let policy_servers = PolicyServerClient::new(&config.client)
        .context("cannot set up the policy-server client")?;

    stats.api_request(Verb::List);
    stats.api_request(Verb::List);
    let selection = policies::load(&client, config.only_namespace.as_deref())
        .await
        .context("cannot list the policies")?;
    for (id, reason) in &selection.skipped {
        tracing::info!(policy = %id, %reason, "policy not audited");
    }
    stats
        .policies_audited
        .store(selection.audited.len() as u64, Ordering::Relaxed);
    stats
        .policies_skipped
        .store(selection.skipped.len() as u64, Ordering::Relaxed);

    stats.api_request(Verb::Get);
    stats.api_request(Verb::Get);
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "aggregated discovery failed; using per-group discovery");
            Discovery::new(client.clone())
                .run()
                .await
                .context("API discovery failed")?
        }
    };
    let served = resources::served(&discovery);
    let plan = resources::plan(&selection.audited, &served);
    let report_kind = config.report_kind;
    let other = report_kind.other().api_resource(true);
    let other_kind_served = served
        .iter()
        .any(|s| s.api_resource.group == other.group && s.api_resource.plural == other.plural);
    tracing::info!(
        policies = selection.audited.len(),
        skipped = selection.skipped.len(),
        resource_types = plan.len(),
        types = %plan.iter().map(|p| format!("{}/{}", p.api_resource.api_version, p.api_resource.plural)).collect::<Vec<_>>().join(","),
        "audit plan"
    );

    let store = (!config.disable_store).then(|| {
        ReportStore::new(
            client.clone(),
            report_kind,
            config.page_size,
            Arc::clone(&stats),
        )
    });
    let units = units(&client, &config, &stats).await?;
    stats
        .units_total
        .store(units.len() as u64, Ordering::Relaxed);
    let scanner = Arc::new(Scanner {
        client,
        objects_in_flight: Semaphore::new(config.parallel_resources.max(1)),
        policies: selection.audited,
        plan,
        policy_servers,
        store,
        stats: Arc::clone(&stats),
        stale: Mutex::new(Vec::new()),
        incomplete: AtomicBool::new(false),
        other_kind_served,
        config,
    });

    // The rate counts from here: loading the policies and discovery are
    // not auditing.
    let scanning = Instant::now();
    let progress = tokio::spawn(crate::progress::every(
        Arc::clone(&stats),
        scanner.config.progress_interval,
        scanning,
    ));
    stream::iter(units)
        .map(|unit| {
            let scanner = Arc::clone(&scanner);
            async move { scanner.audit_unit(unit).await }
        })
        .buffer_unordered(scanner.config.parallel_namespaces.max(1))
        .collect::<Vec<()>>()
        .await;
    progress.abort();
    Snapshot::of(&stats, scanning.elapsed()).log(true);

    let complete = !scanner.incomplete.load(Ordering::Relaxed);
    if let Some(store) = &scanner.store {
        let stale = std::mem::take(&mut *scanner.stale.lock().unwrap_or_else(|e| e.into_inner()));
        if complete {
            delete_stale(store, stale, &stats).await;
        } else if !stale.is_empty() {
            tracing::warn!(
                reports = stale.len(),
                "run incomplete: stale reports are kept until a complete run"
            );
        }
    }
    Ok(RunOutcome {
        complete,
        stats,
        duration: started.elapsed(),
    })
}

/// The cluster-scoped part and the namespaces to audit.
async fn units(client: &Client, config: &Config, stats: &Stats) -> anyhow::Result<Vec<Unit>> {
    let api: Api<Namespace> = Api::all(client.clone());
    if let Some(only) = &config.only_namespace {
        stats.api_request(Verb::Get);
        let ns = api
            .get(only)
            .await
            .with_context(|| format!("cannot read namespace {only}"))?;
        return Ok(vec![Unit::Namespace {
            name: only.clone(),
            labels: ns.labels().clone(),
        }]);
    }
    let mut units = vec![Unit::Cluster];
    if config.cluster_only {
        return Ok(units);
    }
    let mut params = ListParams::default().limit(config.page_size);
    loop {
        stats.api_request(Verb::List);
        let page = api.list(&params).await.context("cannot list namespaces")?;
        for ns in &page.items {
            let name = ns.name_any();
            if name == config.controller_namespace || config.ignore_namespaces.contains(&name) {
                continue;
            }
            units.push(Unit::Namespace {
                name,
                labels: ns.labels().clone(),
            });
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(units)
}

impl Scanner {
    async fn audit_unit(&self, unit: Unit) {
        let namespace = match &unit {
            Unit::Cluster => None,
            Unit::Namespace { name, .. } => Some(name.as_str()),
        };
        self.stats.units_started.fetch_add(1, Ordering::Relaxed);
        let state = UnitState::default();
        if let Some(store) = &self.store {
            match store.list(namespace).await {
                Ok(stored) => *state.stored.lock().unwrap_or_else(|e| e.into_inner()) = stored,
                Err(e) => {
                    tracing::error!(namespace = ?namespace, error = %e, "cannot list the reports; skipping");
                    self.mark_incomplete();
                    self.stats.units_done.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        for planned in self
            .plan
            .iter()
            .filter(|p| p.namespaced == namespace.is_some())
        {
            let candidates: Vec<usize> = planned
                .policies
                .iter()
                .copied()
                .filter(|i| match &unit {
                    Unit::Cluster => self.policies[*i].namespace.is_none(),
                    Unit::Namespace { name, labels } => self.policies[*i].applies_in_namespace(
                        name,
                        labels,
                        &self.config.controller_namespace,
                    ),
                })
                .collect();
            if candidates.is_empty() {
                continue;
            }
            if let Err(e) = self
                .audit_type(namespace, planned, &candidates, &state)
                .await
            {
                self.stats.list_errors.fetch_add(1, Ordering::Relaxed);
                let forbidden = matches!(&e, kube::Error::Api(s) if s.code == 403);
                if forbidden {
                    tracing::warn!(
                        namespace = ?namespace, resource = %planned.api_resource.plural,
                        group = %planned.api_resource.group,
                        "not allowed to list this resource; not audited (grant the audit scanner read access to audit it)"
                    );
                } else {
                    tracing::error!(
                        namespace = ?namespace, resource = %planned.api_resource.plural,
                        group = %planned.api_resource.group, error = %e, "cannot list this resource"
                    );
                    self.mark_incomplete();
                }
                state
                    .failed_types
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((
                        planned.api_resource.api_version.clone(),
                        planned.api_resource.kind.clone(),
                    ));
            }
        }
        if let Some(store) = &self.store {
            let failed = state
                .failed_types
                .into_inner()
                .unwrap_or_else(|e| e.into_inner());
            let stored = state.stored.into_inner().unwrap_or_else(|e| e.into_inner());
            let stale: Vec<_> = stored
                .into_iter()
                .filter(|(_, report)| !failed.contains(&report.scope_type))
                .map(|(name, _)| (namespace.map(str::to_string), name))
                .collect();
            self.stale
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(stale);
            if self.other_kind_served {
                match store.delete_other_kind(namespace).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(namespace = ?namespace, reports = n, "deleted reports of the other report kind")
                    }
                    Err(e) => {
                        tracing::warn!(namespace = ?namespace, error = %e, "cannot delete reports of the other report kind")
                    }
                }
            }
        }
        self.stats.units_done.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(namespace = ?namespace, "done");
    }

    /// Lists the objects of one type in one unit, page by page, and audits them.
    async fn audit_type(
        &self,
        namespace: Option<&str>,
        planned: &PlannedResource,
        candidates: &[usize],
        state: &UnitState,
    ) -> kube::Result<()> {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &planned.api_resource),
            None => Api::all_with(self.client.clone(), &planned.api_resource),
        };
        let mut params = ListParams::default().limit(self.config.page_size);
        let mut count = ListCount::default();
        let result = loop {
            self.stats.api_request(Verb::List);
            let page = match api.list(&params).await {
                Ok(page) => page,
                Err(e) => break Err(e),
            };
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            count.page(
                &self.stats,
                page.items.len() as u64,
                next.as_ref().and(page.metadata.remaining_item_count),
            );
            stream::iter(page.items)
                .map(|object| async move {
                    // Bounds the objects in flight across the whole run.
                    let _permit = self.objects_in_flight.acquire().await;
                    self.audit_object(object, planned, candidates, state).await;
                    self.stats.objects_done.fetch_add(1, Ordering::Relaxed);
                })
                .buffer_unordered(self.config.parallel_resources.max(1))
                .collect::<Vec<()>>()
                .await;
            match next {
                Some(token) => params = params.continue_token(&token),
                None => break Ok(()),
            }
        };
        count.end(&self.stats);
        result
    }
}

async fn delete_stale(store: &ReportStore, stale: Vec<(Option<String>, String)>, stats: &Stats) {
    if stale.is_empty() {
        return;
    }
    tracing::info!(
        reports = stale.len(),
        "deleting reports of objects no policy audits any more"
    );
    stream::iter(stale)
        .map(|(namespace, name)| async move {
            match store.delete(namespace.as_deref(), &name).await {
                Ok(()) => {
                    stats.reports_deleted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.report_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(namespace = ?namespace, report = %name, error = %e, "cannot delete a stale report");
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}
