//! Logging, trace export and metrics scaffolding for the Portcullis binaries (`policy-server`,
//! `portcullis-controller`, `portcullis`): one place that installs the
//! global `tracing` subscriber.
//!
//! Logs always go to stderr, as text or JSON lines. With an OTLP endpoint,
//! spans (INFO and above, whatever the log level) are also exported as
//! OpenTelemetry traces over OTLP/HTTP (protobuf), batched on the tokio
//! runtime. Without one, no exporter, batch task or OpenTelemetry layer
//! exists at all.
//!
//! The standard variables apply: `OTEL_EXPORTER_OTLP_ENDPOINT` (the base URL,
//! `/v1/traces` is appended), `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full
//! URL, wins), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`
//! and `OTEL_BSP_*`.
//!
//! [`metrics`] holds the Prometheus scaffolding both servers share.

pub mod metrics;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{EnvResourceDetector, Resource, TelemetryResourceDetector};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

/// Environment variable of the OTLP base endpoint; also the env of `--otlp-endpoint`.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Environment variable of the full OTLP traces URL, which wins over the base endpoint.
const OTLP_TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";

/// Which spans (and events within them) are exported, independently of
/// `--log-level`: a debug log level must not flood the collector, and a
/// quiet one must not silence traces. Only the spans worth a trace are let
/// through, the policy-server's request span and kube-runtime's reconcile
/// spans, not e.g. one span per WASI call of a policy; the exporter's own
/// crates are off so that exporting can never produce spans of its own.
const EXPORT_FILTER: &str = "warn,portcullis_host=info,portcullis_adapters=info,\
                             portcullis_controller=info,kube_runtime=info,policy_log=info,\
                             opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
                             opentelemetry_http=off,reqwest=off,hyper=off,hyper_util=off,h2=off";

/// How long dropping the guard may wait for the last spans to be sent; a
/// collector that does not answer must not hold up process exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// The logging and tracing flags shared by `policy-server` and
/// `portcullis-controller` (flatten it into the binary's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log filter: a level (info, debug, ...) or a tracing filter directive
    /// (`info,portcullis_host=debug`).
    #[arg(long, env = "PORTCULLIS_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "PORTCULLIS_LOG_FMT", value_enum, default_value_t = LogFormat::Text)]
    pub log_fmt: LogFormat,
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`);
    /// spans are exported to `<url>/v1/traces`. No trace export when unset.
    #[arg(long, env = OTLP_ENDPOINT_ENV)]
    pub otlp_endpoint: Option<String>,
}

impl TelemetryArgs {
    /// The options these flags describe, for the service `service_name`.
    pub fn options(&self, service_name: &str, service_version: &str) -> TelemetryOptions {
        TelemetryOptions {
            log_level: self.log_level.clone(),
            log_format: self.log_fmt,
            otlp_endpoint: self.otlp_endpoint.clone(),
            service_name: service_name.to_string(),
            service_version: service_version.to_string(),
        }
    }
}

/// What [`init`] installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryOptions {
    /// A level name or a full `tracing` filter directive.
    pub log_level: String,
    /// Text or JSON lines on stderr.
    pub log_format: LogFormat,
    /// OTLP/HTTP base URL; `None` (or empty) disables trace export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported resource unless `OTEL_SERVICE_NAME` or
    /// `OTEL_RESOURCE_ATTRIBUTES` names another.
    pub service_name: String,
    /// `service.version` of the exported resource.
    pub service_version: String,
}

/// Why [`init`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log level {level:?}: {source}")]
    InvalidLogLevel {
        /// The rejected filter.
        level: String,
        /// The parser's reason.
        source: tracing_subscriber::filter::ParseError,
    },
    /// Trace export needs a tokio runtime for its batch task.
    #[error("trace export needs a tokio runtime: call init from within one")]
    NoRuntime,
    /// The OTLP exporter could not be configured (bad endpoint, header or timeout).
    #[error("cannot configure the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber is already installed.
    #[error("cannot install the logger: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps trace export running; flushes and stops it when dropped (or on
/// [`TelemetryGuard::shutdown`]). Hold it until the process exits, and drop
/// it while the tokio runtime (multi-threaded) still runs, since the batch
/// task sends the last spans on it.
#[derive(Debug)]
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported (an OTLP endpoint was configured).
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued and stops the exporter, waiting at most
    /// a few seconds for the collector.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The SDK's shutdown blocks until the batch task has sent the last
        // spans; bound that wait by running it on a thread of its own.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("otlp-shutdown".into())
            .spawn(move || {
                let _ = done_tx.send(provider.shutdown());
            });
        if spawned.is_err() {
            tracing::warn!("cannot flush the last spans: no thread for the exporter shutdown");
            return;
        }
        match done_rx.recv_timeout(SHUTDOWN_TIMEOUT) {
            // Export failures were already reported by the exporter.
            Ok(result) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "trace exporter shutdown");
                }
            }
            Err(_) => tracing::warn!(
                timeout = ?SHUTDOWN_TIMEOUT,
                "the OTLP collector did not take the last spans in time; they are dropped"
            ),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber: logs on stderr and, with an OTLP
/// endpoint, trace export. Call it once, early, from within the tokio
/// runtime when exporting; `log` records are forwarded too.
pub fn init(options: &TelemetryOptions) -> Result<TelemetryGuard, TelemetryError> {
    let (subscriber, guard) = build(options)?;
    subscriber.try_init()?;
    Ok(guard)
}

/// The subscriber [`init`] installs, without installing it.
fn build(
    options: &TelemetryOptions,
) -> Result<(impl Subscriber + Send + Sync + 'static, TelemetryGuard), TelemetryError> {
    let log_filter = EnvFilter::try_new(&options.log_level).map_err(|source| {
        TelemetryError::InvalidLogLevel {
            level: options.log_level.clone(),
            source,
        }
    })?;
    let logs = match options.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };

    let endpoint = options
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let provider = endpoint
        .map(|endpoint| tracer_provider(endpoint, options))
        .transpose()?;
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("portcullis"))
            .with_filter(EnvFilter::new(EXPORT_FILTER))
    });

    let subscriber = Registry::default()
        .with(logs.with_filter(log_filter))
        .with(traces);
    Ok((subscriber, TelemetryGuard { provider }))
}

fn tracer_provider(
    endpoint: &str,
    options: &TelemetryOptions,
) -> Result<SdkTracerProvider, TelemetryError> {
    // The batch processor spawns its task right away; without a runtime
    // tokio would panic.
    tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
    // The workspace builds reqwest with rustls but without a default crypto
    // provider (ring is the only one compiled in); the exporter's client
    // panics without one.
    let _ = rustls::crypto::ring::default_provider().install_default();

    use opentelemetry_otlp::WithExportConfig as _;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    // With an explicit endpoint the exporter uses it verbatim and ignores the
    // variables, so leave the full traces URL to the exporter when it is set.
    if env_var(OTLP_TRACES_ENDPOINT_ENV).is_none() {
        builder = builder.with_endpoint(traces_url(endpoint));
    }
    let exporter = builder.build()?;
    let processor = BatchSpanProcessor::builder(
        ReportingExporter::new(exporter),
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource(options))
        .build())
}

/// `<base>/v1/traces`, the OTLP/HTTP traces path under a base endpoint.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// `service.name` and `service.version`, overridden by
/// `OTEL_RESOURCE_ATTRIBUTES`, and `service.name` by `OTEL_SERVICE_NAME`.
fn resource(options: &TelemetryOptions) -> Resource {
    let builder = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", options.service_name.clone()),
            KeyValue::new("service.version", options.service_version.clone()),
        ])
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_detector(Box::new(EnvResourceDetector::new()));
    match env_var(SERVICE_NAME_ENV) {
        Some(name) => builder.with_service_name(name),
        None => builder,
    }
    .build()
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Makes `span` a child of the W3C trace context (`traceparent`,
/// `tracestate`) carried by `headers`, so that a request's span joins its
/// caller's trace (the API server propagates its own to webhooks). Call it
/// before the span is first entered; a no-op without trace export.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let context =
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    // Fails only when nothing exports this span: there is no trace to join.
    let _ = span.set_parent(context);
}

/// Reports export failures once per outage instead of once per batch: the
/// spans of a failed batch are dropped, and requests never wait on export.
#[derive(Debug)]
struct ReportingExporter<E> {
    inner: E,
    failing: AtomicBool,
}

impl<E> ReportingExporter<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            failing: AtomicBool::new(false),
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportingExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let spans = batch.len();
        let export = self.inner.export(batch);
        async move {
            let result = export.await;
            match &result {
                Ok(()) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("trace export to the OTLP collector works again");
                    }
                }
                Err(error) => {
                    if self.failing.swap(true, Ordering::Relaxed) {
                        tracing::debug!(%error, spans, "trace export failed again");
                    } else {
                        tracing::warn!(
                            %error,
                            spans,
                            "cannot export traces to the OTLP collector; spans are dropped until it answers (requests are not affected)"
                        );
                    }
                }
            }
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt as _;

    use super::*;

    fn options(otlp_endpoint: Option<&str>) -> TelemetryOptions {
        TelemetryOptions {
            log_level: "info".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: otlp_endpoint.map(str::to_string),
            service_name: "test-service".into(),
            service_version: "1.2.3".into(),
        }
    }

    /// Whether a request span, a reconcile span and a WASI-call span created
    /// under `subscriber` get an OpenTelemetry trace.
    fn traced(subscriber: impl Subscriber + Send + Sync + 'static) -> [bool; 3] {
        let is_traced = |span: tracing::Span| span.context().span().span_context().is_valid();
        tracing::subscriber::with_default(subscriber, || {
            [
                is_traced(
                    tracing::info_span!(target: "portcullis_host::http::router", "request", policy_id = "p"),
                ),
                is_traced(
                    tracing::info_span!(target: "kube_runtime::controller", "reconciling object"),
                ),
                is_traced(tracing::info_span!(target: "wasmtime_wasi::preview1", "random_get")),
            ]
        })
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported() {
        // No tokio runtime here: building an exporter would fail with NoRuntime.
        for endpoint in [None, Some(""), Some("  ")] {
            let (subscriber, guard) = build(&options(endpoint)).unwrap();
            assert!(!guard.is_exporting(), "{endpoint:?}");
            assert_eq!(traced(subscriber), [false; 3], "{endpoint:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn with_an_endpoint_spans_are_traced() {
        // Port 9 (discard) on loopback: nothing listens, shutdown fails fast.
        let (subscriber, guard) = build(&options(Some("http://127.0.0.1:9"))).unwrap();
        assert!(guard.is_exporting());
        // Only the spans worth a trace, not one per call a policy makes.
        assert_eq!(traced(subscriber), [true, true, false]);
        guard.shutdown();
    }

    #[test]
    fn exporting_outside_a_runtime_is_an_error() {
        let error = build(&options(Some("http://127.0.0.1:9")))
            .err()
            .expect("no runtime");
        assert!(matches!(error, TelemetryError::NoRuntime), "{error}");
    }

    #[test]
    fn bad_log_level_is_an_error() {
        let mut opts = options(None);
        opts.log_level = "info,=[".into();
        let error = build(&opts).err().expect("invalid filter");
        assert!(error.to_string().contains("invalid log level"), "{error}");
    }

    #[test]
    fn traces_url_appends_the_signal_path() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://gw.example/otlp/"),
            "https://gw.example/otlp/v1/traces"
        );
    }

    #[test]
    fn resource_names_the_service() {
        // The variables would override what this checks; the policy-server
        // integration test checks OTEL_RESOURCE_ATTRIBUTES on a real process.
        if env_var(SERVICE_NAME_ENV).is_some() || env_var("OTEL_RESOURCE_ATTRIBUTES").is_some() {
            return;
        }
        let resource = resource(&options(None));
        let get = |key: &'static str| {
            resource
                .get(&opentelemetry::Key::new(key))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.name").as_deref(), Some("test-service"));
        assert_eq!(get("service.version").as_deref(), Some("1.2.3"));
        assert_eq!(get("telemetry.sdk.name").as_deref(), Some("opentelemetry"));
    }
}
