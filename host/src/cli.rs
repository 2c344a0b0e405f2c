//! Command-line flags of the `policy-server` binary. Every flag can also be
//! set through a `PORTCULLIS_<FLAG>` environment variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use portcullis_telemetry::TelemetryArgs;

use crate::capabilities::KubeConfigSource;
use crate::server_config::{ServerConfig, default_io_threads, default_workers};
use crate::tls::TlsFiles;

/// Portcullis policy-server: a Kubernetes admission webhook evaluating
/// WebAssembly policies.
#[derive(Debug, Clone, Parser)]
#[command(name = "policy-server", version, about)]
pub struct PolicyServerArgs {
    /// The policies file (YAML or JSON), reloaded when it changes.
    #[arg(long, env = "PORTCULLIS_POLICIES", default_value = "policies.yml")]
    pub policies: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "PORTCULLIS_ADDR", default_value = "0.0.0.0")]
    pub addr: IpAddr,
    /// Port of the webhook listener.
    #[arg(long, env = "PORTCULLIS_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Port of the plain-HTTP listener serving /readiness, /livez and /metrics.
    #[arg(long, env = "PORTCULLIS_READINESS_PROBE_PORT", default_value_t = 8081)]
    pub readiness_probe_port: u16,
    /// PEM certificate chain; with --key-file enables HTTPS.
    #[arg(long, env = "PORTCULLIS_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key; with --cert-file enables HTTPS.
    #[arg(long, env = "PORTCULLIS_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Comma-separated PEM CA bundles; enables mutual TLS.
    #[arg(
        long,
        env = "PORTCULLIS_CLIENT_CA_FILE",
        value_delimiter = ',',
        requires = "cert_file"
    )]
    pub client_ca_file: Vec<PathBuf>,
    /// Where downloaded modules are stored.
    #[arg(long, env = "PORTCULLIS_POLICIES_DOWNLOAD_DIR", default_value = ".")]
    pub policies_download_dir: PathBuf,
    /// sources.yml: insecure registries and custom CAs.
    #[arg(long, env = "PORTCULLIS_SOURCES_PATH")]
    pub sources_path: Option<PathBuf>,
    /// Docker config.json with registry credentials.
    #[arg(long, env = "PORTCULLIS_DOCKER_CONFIG_JSON_PATH")]
    pub docker_config_json_path: Option<PathBuf>,
    /// Evaluation slots: evaluations started at once [default: number of CPUs].
    #[arg(long, env = "PORTCULLIS_WORKERS")]
    pub workers: Option<usize>,
    /// Threads of the async runtime that serves HTTP and TLS, parses
    /// requests and runs the host's network work; evaluations run on their
    /// own threads [default: half the CPUs, at least 1].
    #[arg(long, env = "PORTCULLIS_IO_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub io_threads: Option<u32>,
    /// Most evaluations of one policy in flight [default: --workers].
    #[arg(long, env = "PORTCULLIS_MAX_WORKERS_PER_POLICY", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_workers_per_policy: Option<u32>,
    /// Most /audit evaluations in flight [default: half of --workers, at least 1].
    #[arg(long, env = "PORTCULLIS_MAX_AUDIT_WORKERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_audit_workers: Option<u32>,
    /// Places in the slow lane, which takes evaluations running longer than
    /// --slow-evaluation-threshold so that they give their worker back; 0
    /// disables it [default: --workers].
    #[arg(long, env = "PORTCULLIS_MAX_SLOW_EVALUATIONS")]
    pub max_slow_evaluations: Option<u32>,
    /// How long an evaluation runs before it moves to the slow lane.
    #[arg(long, env = "PORTCULLIS_SLOW_EVALUATION_THRESHOLD", default_value = "100ms", value_parser = parse_duration)]
    pub slow_evaluation_threshold: Duration,
    /// Spare instances of component policies kept ready, over all policies:
    /// made after an evaluation, on the evaluation thread, so that the
    /// policy's next request does not wait for its instantiation. Each holds
    /// its instance's memory; at most 32 are used. 0 disables them.
    #[arg(long, env = "PORTCULLIS_SPARE_INSTANCES", default_value_t = portcullis_adapters::EngineConfig::default().spare_instances, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub spare_instances: u32,
    /// Evaluation deadline of policies without timeoutEvalSeconds (e.g. 2, 2s, 500ms).
    #[arg(long, env = "PORTCULLIS_POLICY_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub policy_timeout: Duration,
    /// How long a request waits for a free worker before a 503.
    #[arg(long, env = "PORTCULLIS_QUEUE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub queue_timeout: Duration,
    /// Deadline of a whole HTTP request.
    #[arg(long, env = "PORTCULLIS_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How long open connections may take to finish after SIGTERM.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Largest accepted request body, in bytes (also the largest JSON patch a
    /// mutation may produce).
    #[arg(long, env = "PORTCULLIS_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time a client has to finish the TLS handshake, and to send a
    /// request's headers.
    #[arg(long, env = "PORTCULLIS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "PORTCULLIS_KEEP_ALIVE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub keep_alive_timeout: Duration,
    /// Most open connections on the webhook port (more wait to be accepted).
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Requests from this namespace are allowed without evaluation
    /// (set it to the policy-server's own namespace).
    #[arg(long, env = "PORTCULLIS_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE")]
    pub always_accept_admission_reviews_on_namespace: Option<String>,
    /// Logs and trace export: --log-level, --log-fmt, --otlp-endpoint.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Exit non-zero at startup when any policy fails to load (and reject
    /// reloads that break a policy) instead of isolating it.
    #[arg(long, env = "PORTCULLIS_FAIL_FAST")]
    pub fail_fast: bool,
    /// How often policies whose module could not be fetched are retried.
    #[arg(long, env = "PORTCULLIS_FETCH_RETRY_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub fetch_retry_interval: Duration,
    /// Compiled-module cache [default: compiled-cache under
    /// --policies-download-dir].
    #[arg(long, env = "PORTCULLIS_COMPILED_CACHE_DIR")]
    pub compiled_cache_dir: Option<PathBuf>,
    /// Kubeconfig of the cluster that context-aware policies read [default:
    /// $KUBECONFIG, ~/.kube/config, then the in-cluster service account].
    #[arg(long, env = "PORTCULLIS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

impl PolicyServerArgs {
    /// Threads of the async runtime: `--io-threads`, or its default.
    pub fn io_threads(&self) -> usize {
        self.io_threads.map_or_else(default_io_threads, to_usize)
    }

    /// The server configuration these flags describe.
    pub fn to_server_config(&self) -> ServerConfig {
        let tls = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_cas: self.client_ca_file.clone(),
            }),
            _ => None,
        };
        ServerConfig {
            policies_path: self.policies.clone(),
            addr: self.addr,
            port: self.port,
            readiness_port: self.readiness_probe_port,
            tls,
            policies_download_dir: self.policies_download_dir.clone(),
            sources_path: self.sources_path.clone(),
            docker_config_json_path: self.docker_config_json_path.clone(),
            workers: self.workers.unwrap_or_else(default_workers),
            max_workers_per_policy: self.max_workers_per_policy.map(to_usize),
            max_audit_workers: self.max_audit_workers.map(to_usize),
            max_slow_evaluations: self.max_slow_evaluations.map(to_usize),
            slow_evaluation_threshold: self.slow_evaluation_threshold,
            policy_timeout: self.policy_timeout,
            spare_instances: self.spare_instances,
            queue_timeout: self.queue_timeout,
            request_timeout: self.request_timeout,
            shutdown_timeout: self.shutdown_timeout,
            max_body_bytes: self.max_body_bytes,
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            max_connections: to_usize(self.max_connections),
            always_accept_namespace: self.always_accept_admission_reviews_on_namespace.clone(),
            fail_fast: self.fail_fast,
            compiled_cache_dir: self.compiled_cache_dir.clone(),
            fetch_retry_interval: self.fetch_retry_interval,
            kubernetes: self
                .kubeconfig
                .clone()
                .map_or(KubeConfigSource::Infer, KubeConfigSource::File),
            ..ServerConfig::default()
        }
    }
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Parses `500ms`, `2s`, `1m` or a bare number of seconds (`2`, `0.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 2s, 500ms, 1m"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {text:?}: use ms, s or m"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn defaults_and_tls() {
        let args = PolicyServerArgs::try_parse_from(["policy-server"]).unwrap();
        let config = args.to_server_config();
        assert_eq!(config.port, 3000);
        assert_eq!(config.readiness_port, 8081);
        assert_eq!(config.policy_timeout, Duration::from_secs(2));
        assert_eq!(config.max_body_bytes, 3 * 1024 * 1024);
        assert!(config.tls.is_none());
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.keep_alive_timeout, Duration::from_secs(60));
        assert_eq!(config.max_connections, 1024);
        assert_eq!(args.io_threads(), default_io_threads());
        assert!(default_io_threads() >= 1 && default_io_threads() <= default_workers());

        let args = PolicyServerArgs::try_parse_from(["policy-server", "--io-threads=3"]).unwrap();
        assert_eq!(args.io_threads(), 3);
        assert!(PolicyServerArgs::try_parse_from(["policy-server", "--io-threads=0"]).is_err());

        let args = PolicyServerArgs::try_parse_from([
            "policy-server",
            "--workers=4",
            "--max-workers-per-policy=2",
            "--max-slow-evaluations=0",
            "--slow-evaluation-threshold=250ms",
        ])
        .unwrap();
        let scheduler = args.to_server_config().scheduler_config();
        assert_eq!(
            (
                scheduler.workers,
                scheduler.max_per_policy,
                scheduler.max_audit
            ),
            (4, 2, 2)
        );
        assert_eq!(scheduler.max_slow, 0);
        assert_eq!(scheduler.slow_after, Duration::from_millis(250));
        assert!(
            PolicyServerArgs::try_parse_from(["policy-server", "--max-audit-workers=0"]).is_err()
        );

        assert_eq!(args.to_server_config().spare_instances, 32);
        let args =
            PolicyServerArgs::try_parse_from(["policy-server", "--spare-instances=0"]).unwrap();
        assert_eq!(args.to_server_config().spare_instances, 0);
        assert!(
            PolicyServerArgs::try_parse_from(["policy-server", "--spare-instances=33"]).is_err()
        );

        let args = PolicyServerArgs::try_parse_from([
            "policy-server",
            "--cert-file=c.pem",
            "--key-file=k.pem",
            "--client-ca-file=a.pem,b.pem",
        ])
        .unwrap();
        let tls = args.to_server_config().tls.unwrap();
        assert_eq!(
            tls.client_cas,
            vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        assert!(PolicyServerArgs::try_parse_from(["policy-server", "--cert-file=c.pem"]).is_err());
    }
}
