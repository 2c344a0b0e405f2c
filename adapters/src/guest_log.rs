//! Policies' log messages, turned into tracing events of the host.

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

/// Kubewarden's SDKs send `{"level": ..., "message": ..., <more fields>}`.
pub(crate) fn log_kubewarden_event(policy: &str, payload: &[u8]) {
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
            emit(policy, level, &message, fields.as_deref());
        }
        Err(_) => emit(
            policy,
            GuestLevel::Info,
            &String::from_utf8_lossy(payload),
            None,
        ),
    }
}
