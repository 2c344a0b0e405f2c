//! Settings of a policy-server instance (what the CLI flags resolve to).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use portcullis_adapters::EngineConfig;

use crate::capabilities::KubeConfigSource;
use crate::scheduler::SchedulerConfig;
use crate::tls::TlsFiles;

/// Everything [`crate::start`] needs to run a policy-server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The policies file (YAML or JSON).
    pub policies_path: PathBuf,
    /// Address of both listeners.
    pub addr: IpAddr,
    /// Port of the webhook listener; 0 picks a free one.
    pub port: u16,
    /// Port of the plain-HTTP readiness/liveness/metrics listener; 0 picks a free one.
    pub readiness_port: u16,
    /// Certificate, key and client CAs; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Where fetched modules are stored.
    pub policies_download_dir: PathBuf,
    /// `sources.yml`: insecure registries and custom CAs.
    pub sources_path: Option<PathBuf>,
    /// Docker `config.json` with registry credentials.
    pub docker_config_json_path: Option<PathBuf>,
    /// Evaluation slots ([`crate::scheduler`]).
    pub workers: usize,
    /// Most evaluations of one policy in flight; `None`: `workers`.
    pub max_workers_per_policy: Option<usize>,
    /// Most `/audit` evaluations in flight; `None`: half the workers (at least 1).
    pub max_audit_workers: Option<usize>,
    /// Places in the slow lane; `None`: `workers`; 0 disables it.
    pub max_slow_evaluations: Option<usize>,
    /// How long an evaluation runs before it moves to the slow lane.
    pub slow_evaluation_threshold: Duration,
    /// Evaluation deadline of policies without `timeoutEvalSeconds`.
    pub policy_timeout: Duration,
    /// Spare component instances kept ready, over all policies; 0 disables
    /// them (`EngineConfig::spare_instances`).
    pub spare_instances: u32,
    /// How long a request waits for a free worker before a 503.
    pub queue_timeout: Duration,
    /// Deadline of a whole HTTP request (queueing, evaluation, response).
    pub request_timeout: Duration,
    /// How long open connections may take to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// Largest accepted request body; also the cap of a mutation's JSON patch.
    pub max_body_bytes: usize,
    /// Time a client has for the TLS handshake, and for the headers of a
    /// request once it started sending them.
    pub header_read_timeout: Duration,
    /// A connection without a request in flight for this long is closed
    /// (HTTP/1.1 keep-alive and idle HTTP/2 connections alike).
    pub keep_alive_timeout: Duration,
    /// Most open connections on the webhook listener; more wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Requests from this namespace are always allowed without evaluation.
    pub always_accept_namespace: Option<String>,
    /// Refuse to start (or to apply a reload) when any policy fails to load.
    pub fail_fast: bool,
    /// Compiled-module cache; `None` means `<download dir>/compiled-cache`.
    pub compiled_cache_dir: Option<PathBuf>,
    /// Quiet time awaited after a file event before reloading.
    pub reload_debounce: Duration,
    /// Longest time between two checks of the watched files.
    pub reload_poll_interval: Duration,
    /// How often policies whose module could not be fetched are retried
    /// (checked at each file check, so at least `reload_poll_interval`).
    pub fetch_retry_interval: Duration,
    /// The cluster that context-aware policies read.
    pub kubernetes: KubeConfigSource,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            policies_path: PathBuf::from("policies.yml"),
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 3000,
            readiness_port: 8081,
            tls: None,
            policies_download_dir: PathBuf::from("."),
            sources_path: None,
            docker_config_json_path: None,
            workers: default_workers(),
            max_workers_per_policy: None,
            max_audit_workers: None,
            max_slow_evaluations: None,
            slow_evaluation_threshold: Duration::from_millis(100),
            policy_timeout: Duration::from_secs(2),
            spare_instances: EngineConfig::default().spare_instances,
            queue_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(20),
            max_body_bytes: 3 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            max_connections: 1024,
            always_accept_namespace: None,
            fail_fast: false,
            compiled_cache_dir: None,
            reload_debounce: Duration::from_millis(200),
            reload_poll_interval: Duration::from_secs(10),
            fetch_retry_interval: Duration::from_secs(30),
            kubernetes: KubeConfigSource::Infer,
        }
    }
}

impl ServerConfig {
    /// How the workers are shared, from the worker flags.
    pub fn scheduler_config(&self) -> SchedulerConfig {
        let defaults = SchedulerConfig::for_workers(self.workers);
        SchedulerConfig {
            max_per_policy: self
                .max_workers_per_policy
                .unwrap_or(defaults.max_per_policy),
            max_audit: self.max_audit_workers.unwrap_or(defaults.max_audit),
            max_slow: self.max_slow_evaluations.unwrap_or(defaults.max_slow),
            slow_after: self.slow_evaluation_threshold,
            queue_timeout: self.queue_timeout,
            ..defaults
        }
    }

    /// The compiled-module cache directory in effect.
    pub fn effective_compiled_cache_dir(&self) -> PathBuf {
        self.compiled_cache_dir
            .clone()
            .unwrap_or_else(|| self.policies_download_dir.join("compiled-cache"))
    }
}

/// The number of CPUs available to the process (at least 1).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Threads of the async runtime by default: half the CPUs, at least 1.
///
/// Evaluations run on their own threads, one per CPU by default
/// ([`default_workers`]); an async runtime with a thread per CPU on top of
/// them puts two busy threads on every core, and the hand-offs between them
/// then cost context switches. On 2 CPUs, one runtime thread served about 9 %
/// more requests a second than two (BENCHMARKS.md, "The request path").
pub fn default_io_threads() -> usize {
    (default_workers() / 2).max(1)
}
