//! Background reloads: the policies file and the TLS material.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use portcullis_config::{PoliciesConfig, content_digest};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::policy_set::{PolicyLoader, PolicySet};
use crate::tls::ReloadableTls;
use crate::watch::FileWatcher;

/// Reloads the policies file whenever its contents change.
pub(crate) struct PolicyReloader {
    pub path: PathBuf,
    pub loader: PolicyLoader,
    pub policies: Arc<ArcSwap<PolicySet>>,
    pub metrics: Arc<Metrics>,
    pub fail_fast: bool,
    pub fetch_retry_interval: Duration,
}

impl PolicyReloader {
    /// Runs until `shutdown` turns true.
    pub(crate) async fn run(self, mut watcher: FileWatcher, mut shutdown: watch::Receiver<bool>) {
        // The digest of the last contents tried, so that a broken file is not
        // re-parsed and re-logged on every poll.
        let mut last_attempt = self.policies.load().config_digest.clone();
        let mut last_load = Instant::now();
        loop {
            tokio::select! {
                () = watcher.changed() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let bytes = match tokio::fs::read(&self.path).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    // Mid-swap the file can briefly vanish; the next event retries.
                    warn!(path = %self.path.display(), error = %e, "cannot read the policies file");
                    continue;
                }
            };
            let digest = content_digest(&bytes);
            if digest == last_attempt {
                let retry = self.policies.load().has_retryable_failures()
                    && last_load.elapsed() >= self.fetch_retry_interval;
                if !retry {
                    continue;
                }
                info!("retrying policies whose module could not be fetched");
            }
            last_attempt = digest;
            last_load = Instant::now();
            self.reload(&bytes).await;
        }
    }

    async fn reload(&self, bytes: &[u8]) {
        let parsed = match PoliciesConfig::parse_lenient(bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                error!(path = %self.path.display(), error = %e, "policies file is invalid; keeping the current policies");
                self.metrics.record_policy_reload(false);
                return;
            }
        };
        let current = self.policies.load_full();
        info!(digest = %parsed.digest, "policies file changed; loading");
        let next = self
            .loader
            .load(parsed, Some(&current), current.generation + 1)
            .await;
        let failures: Vec<String> = next
            .failures()
            .map(|f| format!("{}: {}", f.id, f.reason))
            .collect();
        if self.fail_fast && !failures.is_empty() {
            error!(
                ?failures,
                "fail-fast: new policies rejected; keeping the current policies"
            );
            self.metrics.record_policy_reload(false);
            return;
        }
        let loaded = next.policies.len() - failures.len();
        let generation = next.generation;
        self.metrics.record_policy_set(&next);
        self.policies.store(Arc::new(next));
        self.metrics.record_policy_reload(true);
        info!(
            generation,
            loaded,
            failed = failures.len(),
            "policies reloaded"
        );
    }
}

/// Re-reads the TLS files whenever they may have changed.
pub(crate) async fn reload_tls(
    tls: Arc<ReloadableTls>,
    metrics: Arc<Metrics>,
    mut watcher: FileWatcher,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_errors = String::new();
    loop {
        tokio::select! {
            () = watcher.changed() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let (outcome, errors) = tls.reload();
        let errors = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if outcome.cert_changed || outcome.client_ca_changed {
            info!(
                cert = outcome.cert_changed,
                client_ca = outcome.client_ca_changed,
                "TLS material reloaded"
            );
            metrics.record_tls_reload(true);
        }
        // A rotation in progress (new cert, old key) is normal for a moment;
        // report it once per distinct problem rather than on every poll.
        if !errors.is_empty() && errors != last_errors {
            warn!(errors = %errors, "TLS material not (fully) reloaded; serving the last good one");
            metrics.record_tls_reload(false);
        }
        last_errors = errors;
    }
}
