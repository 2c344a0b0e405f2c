//! Starting and stopping a policy-server.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use portcullis_adapters::{AdapterError, EngineConfig, PolicyEngine};
use portcullis_config::{ConfigError, PoliciesConfig, SourcesConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admission::ResponseLimits;
use crate::capabilities::{HostServices, ServicesConfig};
use crate::evaluation::AppState;
use crate::fetch::{FetchConfig, FetchError, ModuleFetcher};
use crate::http::listener::{self, ConnectionLimits};
use crate::http::router;
use crate::metrics::Metrics;
use crate::module_source::ModuleSource;
use crate::policy_set::{FailedPolicy, PolicyLoader, PolicySet};
use crate::reload::{PolicyReloader, reload_tls};
use crate::scheduler::Scheduler;
use crate::server_config::ServerConfig;
use crate::tls::{ReloadableTls, TlsError};
use crate::watch::FileWatcher;

/// Why a policy-server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The policies file is missing or not a policies document.
    #[error("policies file {path}: {source}")]
    Policies {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ConfigError,
    },
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The wasm engine could not be created.
    #[error("cannot create the policy engine: {0}")]
    Engine(#[from] AdapterError),
    /// A file watch could not be set up.
    #[error("cannot watch {what}: {source}")]
    Watch {
        /// What was to be watched.
        what: &'static str,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
    /// `--fail-fast` and some policies failed to load.
    #[error("{} policies failed to load:\n{}", .0.len(), format_failures(.0))]
    BrokenPolicies(Vec<FailedPolicy>),
    /// The sources file is unreadable or invalid.
    #[error("sources file {path}: {source}")]
    Sources {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ConfigError,
    },
    /// The module fetcher could not be set up (store directory, credentials).
    #[error("cannot set up module fetching: {0}")]
    Fetch(#[from] FetchError),
    /// Contradictory settings.
    #[error("invalid configuration: {0}")]
    Config(String),
}

fn format_failures(failures: &[FailedPolicy]) -> String {
    failures
        .iter()
        .map(|f| format!("  - {}: {}", f.id, f.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Connections of the probe listener (kubelet, Prometheus, the controller):
/// its own budget, so that a flood on the webhook port does not fail the
/// probes, and the other way round.
const PROBE_MAX_CONNECTIONS: usize = 64;

/// A started policy-server.
pub struct RunningServer {
    addr: SocketAddr,
    readiness_addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Address of the webhook listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Address of the readiness/metrics listener.
    pub fn readiness_addr(&self) -> SocketAddr {
        self.readiness_addr
    }

    /// The policy set currently served.
    pub fn policy_set(&self) -> Arc<PolicySet> {
        self.state.policies.load_full()
    }

    /// Stops accepting connections, lets open ones finish (up to the
    /// shutdown timeout) and stops the reload tasks.
    pub async fn shutdown(self) {
        self.state.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts a policy-server: returns once every policy that can load has
/// loaded and both listeners are bound.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    // Configs are built with an explicit provider; this only helps other
    // rustls users in the process (module downloads) that rely on the default.
    let _ = rustls::crypto::ring::default_provider().install_default();

    if config.request_timeout <= config.policy_timeout + config.queue_timeout {
        // Otherwise a slow policy gets a 504 instead of its 500 verdict.
        warn!(
            request_timeout = ?config.request_timeout,
            policy_timeout = ?config.policy_timeout,
            queue_timeout = ?config.queue_timeout,
            "the request timeout should exceed the policy timeout plus the queue timeout"
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let policies = Arc::new(ArcSwap::from_pointee(PolicySet::default()));
    let ready = Arc::new(AtomicBool::new(false));
    let scheduler = Scheduler::new(config.scheduler_config())
        .map_err(|e| ServerError::Config(format!("cannot start the evaluation threads: {e}")))?;
    let state = Arc::new(AppState {
        policies: Arc::clone(&policies),
        metrics: Arc::clone(&metrics),
        scheduler,
        response_limits: ResponseLimits {
            max_patch_bytes: config.max_body_bytes,
        },
        max_body_bytes: config.max_body_bytes,
        body_budget: crate::http::body::BodyBudget::for_max_body(config.max_body_bytes),
        always_accept_namespace: config.always_accept_namespace.clone(),
        ready: Arc::clone(&ready),
        host_services: std::sync::OnceLock::new(),
    });
    let mut tasks = Vec::new();
    let connection_limits = ConnectionLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        keep_alive_timeout: config.keep_alive_timeout,
    };

    // The probe listener comes up first so that /livez answers and /readiness
    // says "not ready" while modules download and compile.
    let readiness_listener = bind(SocketAddr::new(config.addr, config.readiness_port)).await?;
    let readiness_addr = local_addr(&readiness_listener)?;
    tasks.push(tokio::spawn(listener::serve(
        "readiness",
        readiness_listener,
        None,
        router::probe_router(Arc::clone(&state)),
        ConnectionLimits {
            max_connections: PROBE_MAX_CONNECTIONS,
            ..connection_limits
        },
        shutdown_rx.clone(),
        config.shutdown_timeout,
    )));

    let tls = config
        .tls
        .clone()
        .map(ReloadableTls::load)
        .transpose()?
        .map(Arc::new);

    // Watch before the first read so that a change during the (slow) initial
    // load is not missed.
    let policies_watcher = FileWatcher::new(
        std::slice::from_ref(&config.policies_path),
        config.reload_debounce,
        config.reload_poll_interval,
    )
    .map_err(|source| ServerError::Watch {
        what: "the policies file",
        source,
    })?;

    let bytes = tokio::fs::read(&config.policies_path)
        .await
        .map_err(|source| ServerError::Policies {
            path: config.policies_path.clone(),
            source: ConfigError::Read {
                path: config.policies_path.display().to_string(),
                source,
            },
        })?;
    let parsed = PoliciesConfig::parse_lenient(&bytes).map_err(|source| ServerError::Policies {
        path: config.policies_path.clone(),
        source,
    })?;

    let engine_config = EngineConfig {
        cache_dir: Some(config.effective_compiled_cache_dir()),
        spare_instances: config.spare_instances,
        ..EngineConfig::default()
    };
    let engine = tokio::task::spawn_blocking(move || PolicyEngine::new(engine_config))
        .await
        .map_err(|e| ServerError::Config(format!("engine creation task failed: {e}")))??;
    let sources = match &config.sources_path {
        Some(path) => SourcesConfig::from_file(path).map_err(|source| ServerError::Sources {
            path: path.clone(),
            source,
        })?,
        None => SourcesConfig::default(),
    };
    let fetcher = ModuleFetcher::new(FetchConfig {
        download_dir: config.policies_download_dir.clone(),
        sources,
        docker_config: config.docker_config_json_path.clone(),
    })?;
    let services = HostServices::new(
        ServicesConfig {
            kubernetes: config.kubernetes.clone(),
            registries: Some(fetcher.clone()),
        },
        tokio::runtime::Handle::current(),
    )
    .await;
    let _ = state.host_services.set(Arc::clone(&services));
    let loader = PolicyLoader::new(
        engine,
        ModuleSource::new(fetcher),
        config.policy_timeout,
        Arc::clone(&services),
    );
    let initial = loader.load(parsed, None, 1).await;
    let failures: Vec<FailedPolicy> = initial.failures().cloned().collect();
    if config.fail_fast && !failures.is_empty() {
        let _ = shutdown_tx.send(true);
        return Err(ServerError::BrokenPolicies(failures));
    }
    for failure in &failures {
        warn!(policy_id = %failure.id, reason = %failure.reason, "policy isolated: its endpoint rejects with code 500");
    }
    metrics.record_policy_set(&initial);
    let loaded = initial.policies.len() - failures.len();
    policies.store(Arc::new(initial));

    let webhook_listener = bind(SocketAddr::new(config.addr, config.port)).await?;
    let addr = local_addr(&webhook_listener)?;
    tasks.push(tokio::spawn(listener::serve(
        "webhook",
        webhook_listener,
        tls.clone(),
        router::webhook_router(Arc::clone(&state), config.request_timeout),
        connection_limits,
        shutdown_rx.clone(),
        config.shutdown_timeout,
    )));

    let reloader = PolicyReloader {
        path: config.policies_path.clone(),
        loader,
        policies: Arc::clone(&policies),
        metrics: Arc::clone(&metrics),
        fail_fast: config.fail_fast,
        fetch_retry_interval: config.fetch_retry_interval,
    };
    tasks.push(tokio::spawn(
        reloader.run(policies_watcher, shutdown_rx.clone()),
    ));
    if let Some(tls) = &tls {
        let tls_watcher = FileWatcher::new(
            &tls.files().paths(),
            config.reload_debounce,
            config.reload_poll_interval,
        )
        .map_err(|source| ServerError::Watch {
            what: "the TLS files",
            source,
        })?;
        tasks.push(tokio::spawn(reload_tls(
            Arc::clone(tls),
            Arc::clone(&metrics),
            tls_watcher,
            shutdown_rx.clone(),
        )));
    }

    // Not ready until the caches that the loaded policies read have synced,
    // so that the first evaluations do not wait for them.
    crate::capabilities::wait_for_caches(services.kubernetes()).await;
    ready.store(true, Ordering::Release);
    info!(
        %addr,
        %readiness_addr,
        tls = tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| !t.client_cas.is_empty()),
        loaded,
        failed = failures.len(),
        "policy-server ready"
    );
    Ok(RunningServer {
        addr,
        readiness_addr,
        state,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Runs a policy-server until `shutdown` completes, then drains it.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = start(config).await?;
    shutdown.await;
    info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
