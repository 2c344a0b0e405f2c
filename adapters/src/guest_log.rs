//! Policies' log messages, turned into tracing events of the host.
//!
//! Everything here emits; what may be emitted is decided by the per-evaluation
//! budget in [`GuestOutput`](crate::limits::GuestOutput).

use crate::limits::{GuestLimits, GuestOutput};

/// The level names shared by both ABIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuestLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl GuestLevel {
    fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "trace" => GuestLevel::Trace,
            "debug" => GuestLevel::Debug,
            "warn" | "warning" => GuestLevel::Warn,
            "error" => GuestLevel::Error,
            _ => GuestLevel::Info,
        }
    }
}

/// A guest's standard output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdStream {
    Stdout,
    Stderr,
}

/// Emit one event; the target `policy_log` lets operators filter policy output.
pub(crate) fn emit(policy: &str, level: GuestLevel, message: &str, fields: Option<&str>) {
    let fields = fields.unwrap_or("");
    match level {
        GuestLevel::Trace => tracing::trace!(target: "policy_log", policy, fields, "{message}"),
        GuestLevel::Debug => tracing::debug!(target: "policy_log", policy, fields, "{message}"),
        GuestLevel::Info => tracing::info!(target: "policy_log", policy, fields, "{message}"),
        GuestLevel::Warn => tracing::warn!(target: "policy_log", policy, fields, "{message}"),
        GuestLevel::Error => tracing::error!(target: "policy_log", policy, fields, "{message}"),
    }
}

/// Emit one line the guest wrote to stdout or stderr, at info level.
pub(crate) fn emit_stdio(policy: &str, stream: StdStream, line: &str) {
    let stream = match stream {
        StdStream::Stdout => "stdout",
        StdStream::Stderr => "stderr",
    };
    tracing::info!(target: "policy_log", policy, stream, "{line}");
}

/// Say, once per evaluation, how much of the guest's output was dropped.
pub(crate) fn emit_suppressed(policy: &str, messages: u64, bytes: u64, limits: &GuestLimits) {
    tracing::warn!(
        target: "policy_log",
        policy,
        suppressed_messages = messages,
        suppressed_bytes = bytes,
        "{messages} log messages ({bytes} bytes) of this evaluation suppressed: a policy may log \
         {} messages and {} bytes per evaluation",
        limits.max_log_messages,
        limits.max_log_bytes,
    );
}

/// Kubewarden's SDKs send `{"level": ..., "message": ..., <more fields>}`.
pub(crate) fn log_kubewarden_event(output: &GuestOutput, payload: &[u8]) {
    if !output.has_room() {
        // Parsing what would be dropped anyway is the cost a flood would buy.
        output.suppress(payload.len());
        return;
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload) {
        Ok(mut event) => {
            let level = event
                .remove("level")
                .and_then(|l| l.as_str().map(GuestLevel::parse))
                .unwrap_or(GuestLevel::Info);
            let message = match event.remove("message") {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let fields = (!event.is_empty()).then(|| serde_json::Value::Object(event).to_string());
            output.log(level, &message, fields.as_deref());
        }
        Err(_) => output.log(GuestLevel::Info, &String::from_utf8_lossy(payload), None),
    }
}
