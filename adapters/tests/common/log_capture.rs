//! The `policy_log` events emitted on the current thread, for assertions on
//! what a guest's output turned into.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

/// One `policy_log` event.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub level: String,
    pub message: String,
    pub policy: String,
    /// `stdout` or `stderr` for stdio lines.
    pub stream: Option<String>,
    pub suppressed_messages: Option<u64>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Visit for Event {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            "policy" => self.policy = text.trim_matches('"').to_string(),
            "stream" => self.stream = Some(text.trim_matches('"').to_string()),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "policy" => self.policy = value.to_string(),
            "stream" => self.stream = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "suppressed_messages" {
            self.suppressed_messages = Some(value);
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "policy_log" {
            return;
        }
        let mut record = Event {
            level: event.metadata().level().to_string(),
            ..Default::default()
        };
        event.record(&mut record);
        self.0.lock().unwrap().push(record);
    }
}

/// Run `f` and return what it returned with the `policy_log` events it
/// emitted on this thread (the adapters evaluate on the caller's thread).
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<Event>) {
    let recorder = Recorder::default();
    let subscriber = Registry::default().with(recorder.clone());
    let value = tracing::subscriber::with_default(subscriber, f);
    let events = recorder.0.lock().unwrap().clone();
    (value, events)
}
