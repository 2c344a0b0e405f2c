//! Recorded host-capability sessions, in kwctl's format.
//!
//! `portcullis run --record-host-capabilities FILE` keeps every request a
//! policy made to the cluster, a registry or DNS with its answer;
//! `--replay-host-capabilities FILE` answers from the file instead, so that
//! a context-aware policy can be tested without a cluster. The file is what
//! `kwctl run --record-host-capabilities-interactions` writes: a YAML list of
//!
//! ```yaml
//! - type: Exchange
//!   request: |
//!     !KubernetesGetResource
//!     api_version: v1
//!     kind: Pod
//!     name: p-testing
//!     namespace: local
//!     disable_cache: true
//!   response:
//!     type: Success
//!     payload: '{"apiVersion":"v1","kind":"Pod", ...}'
//! ```
//!
//! where `request` is a [`CallbackRequestType`] serialised as YAML text and
//! `response` is `Success` with the JSON answer as text, or `Error` with a
//! `message`. As with kwctl, replay is strict: the n-th request must equal
//! the n-th recorded one. Certificate checks are computed, not recorded.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use portcullis_adapters::{CallContext, CapabilityError};
use serde::{Deserialize, Serialize};

use super::CapabilityBackend;
use super::request::CallbackRequestType;

/// Why a session file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The file cannot be read or written.
    #[error("session file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a session.
    #[error("session file {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the exchange's position.
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Response {
    Success { payload: String },
    Error { message: String },
}

/// One exchange as written: `type: Exchange` first, as kwctl writes it.
#[derive(Serialize)]
#[serde(tag = "type")]
struct Exchange {
    request: String,
    response: Response,
}

/// One exchange as read; the `type` tag is not required.
#[derive(Deserialize)]
struct ExchangeIn {
    request: String,
    response: Response,
}

/// Records the exchanges of the backend it wraps.
pub struct Recorder {
    inner: Arc<dyn CapabilityBackend>,
    exchanges: Mutex<Vec<Exchange>>,
}

impl Recorder {
    /// Records what `inner` answers.
    pub fn new(inner: Arc<dyn CapabilityBackend>) -> Self {
        Self {
            inner,
            exchanges: Mutex::default(),
        }
    }

    /// The session so far, as YAML.
    pub fn to_yaml(&self) -> String {
        let exchanges = self.exchanges.lock().unwrap_or_else(|e| e.into_inner());
        // A list of plain structs always serialises.
        serde_yaml::to_string(&*exchanges).unwrap_or_default()
    }

    /// Writes the session to `path`.
    pub fn save(&self, path: &Path) -> Result<(), SessionError> {
        std::fs::write(path, self.to_yaml()).map_err(|source| SessionError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// How many exchanges were recorded.
    pub fn len(&self) -> usize {
        self.exchanges.lock().map_or(0, |e| e.len())
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CapabilityBackend for Recorder {
    fn call(
        &self,
        ctx: &CallContext<'_>,
        request: &CallbackRequestType,
    ) -> Result<Vec<u8>, CapabilityError> {
        let answer = self.inner.call(ctx, request);
        let response = match &answer {
            Ok(payload) => Response::Success {
                payload: String::from_utf8_lossy(payload).into_owned(),
            },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        };
        match serde_yaml::to_string(request) {
            Ok(request) => self
                .exchanges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Exchange { request, response }),
            Err(e) => tracing::error!(error = %e, "cannot record a host capability request"),
        }
        answer
    }

    /// Not recorded: live, from the cluster (a replay has no inventory).
    fn context_resources(
        &self,
        ctx: &CallContext<'_>,
        resources: &std::collections::BTreeSet<super::ResourceType>,
        scope: &super::PolicyScope,
    ) -> Result<Vec<portcullis_adapters::ContextResourceList>, CapabilityError> {
        self.inner.context_resources(ctx, resources, scope)
    }
}

/// Answers from a recorded session, in order.
pub struct Replayer {
    exchanges: Vec<(CallbackRequestType, Result<Vec<u8>, String>)>,
    cursor: AtomicUsize,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("exchanges", &self.exchanges.len())
            .field("replayed", &self.replayed())
            .finish()
    }
}

impl Replayer {
    /// Reads a session file.
    pub fn load(path: &Path) -> Result<Self, SessionError> {
        let text = std::fs::read_to_string(path).map_err(|source| SessionError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|reason| SessionError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses a session.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let raw: Option<Vec<ExchangeIn>> =
            serde_yaml::from_str(text).map_err(|e| format!("not a session: {e}"))?;
        let exchanges = raw
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, exchange)| {
                let request: CallbackRequestType = serde_yaml::from_str(&exchange.request)
                    .map_err(|e| format!("exchange {}: unknown request: {e}", i + 1))?;
                let response = match exchange.response {
                    Response::Success { payload } => Ok(payload.into_bytes()),
                    Response::Error { message } => Err(message),
                };
                Ok((request, response))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            exchanges,
            cursor: AtomicUsize::new(0),
        })
    }

    /// Starts again from the first exchange (one session per evaluation).
    pub fn rewind(&self) {
        self.cursor.store(0, Ordering::SeqCst);
    }

    /// How many exchanges have been replayed.
    pub fn replayed(&self) -> usize {
        self.cursor.load(Ordering::SeqCst).min(self.exchanges.len())
    }

    /// How many exchanges the session holds.
    pub fn len(&self) -> usize {
        self.exchanges.len()
    }

    /// Whether the session holds no exchange.
    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty()
    }
}

impl CapabilityBackend for Replayer {
    fn call(
        &self,
        _ctx: &CallContext<'_>,
        request: &CallbackRequestType,
    ) -> Result<Vec<u8>, CapabilityError> {
        let index = self.cursor.fetch_add(1, Ordering::SeqCst);
        let Some((expected, answer)) = self.exchanges.get(index) else {
            return Err(CapabilityError::Failed(format!(
                "replay: the session has {} exchanges and the policy made a request after them: {request:?}",
                self.exchanges.len()
            )));
        };
        if expected != request {
            return Err(CapabilityError::Failed(format!(
                "replay: exchange {} expected {expected:?}, the policy sent {request:?}",
                index + 1
            )));
        }
        answer.clone().map_err(CapabilityError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    struct Fixed;

    impl CapabilityBackend for Fixed {
        fn call(
            &self,
            _: &CallContext<'_>,
            request: &CallbackRequestType,
        ) -> Result<Vec<u8>, CapabilityError> {
            match request {
                CallbackRequestType::DNSLookupHost { host } if host == "bad" => {
                    Err(CapabilityError::Failed("no such host".into()))
                }
                _ => Ok(br#"{"ips":["10.0.0.1"]}"#.to_vec()),
            }
        }
    }

    fn ctx() -> CallContext<'static> {
        CallContext {
            policy_id: "p",
            deadline: Instant::now() + Duration::from_secs(1),
        }
    }

    fn dns(host: &str) -> CallbackRequestType {
        CallbackRequestType::DNSLookupHost { host: host.into() }
    }

    #[test]
    fn record_then_replay() {
        let recorder = Recorder::new(Arc::new(Fixed));
        assert!(recorder.call(&ctx(), &dns("a")).is_ok());
        assert!(recorder.call(&ctx(), &dns("bad")).is_err());
        let yaml = recorder.to_yaml();
        assert!(yaml.starts_with("- type: Exchange\n"), "{yaml}");
        assert!(yaml.contains("!DNSLookupHost"), "{yaml}");

        let replayer = Replayer::from_yaml(&yaml).unwrap();
        assert_eq!(replayer.len(), 2);
        assert_eq!(
            replayer.call(&ctx(), &dns("a")).unwrap(),
            br#"{"ips":["10.0.0.1"]}"#
        );
        assert_eq!(
            replayer.call(&ctx(), &dns("bad")).unwrap_err().to_string(),
            "no such host"
        );
        let err = replayer.call(&ctx(), &dns("a")).unwrap_err().to_string();
        assert!(err.contains("has 2 exchanges"), "{err}");
        replayer.rewind();
        let err = replayer.call(&ctx(), &dns("b")).unwrap_err().to_string();
        assert!(err.contains("exchange 1 expected"), "{err}");
    }

    /// The example of Kubewarden's documentation replays unchanged.
    #[test]
    fn reads_kwctl_sessions() {
        let kwctl = r#"
---
- type: Exchange
  request: |
    !KubernetesGetResource
    api_version: v1
    kind: Pod
    name: p-testing
    namespace: local
    disable_cache: true
  response:
    type: Success
    payload: '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p-testing"}}'
- type: Exchange
  request: |
    !OciManifestDigest
    image: ghcr.io/kubewarden/policy-server:latest
  response:
    type: Error
    message: 'manifest unknown'
"#;
        let replayer = Replayer::from_yaml(kwctl).unwrap();
        let get = CallbackRequestType::KubernetesGetResource {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "p-testing".into(),
            namespace: Some("local".into()),
            disable_cache: true,
            field_masks: None,
        };
        let pod: serde_json::Value =
            serde_json::from_slice(&replayer.call(&ctx(), &get).unwrap()).unwrap();
        assert_eq!(pod["metadata"]["name"], "p-testing");
        let digest = CallbackRequestType::OciManifestDigest {
            image: "ghcr.io/kubewarden/policy-server:latest".into(),
        };
        assert_eq!(
            replayer.call(&ctx(), &digest).unwrap_err().to_string(),
            "manifest unknown"
        );
        assert!(
            Replayer::from_yaml("- request: '!Nope {}'\n  response: {type: Error, message: x}\n")
                .is_err()
        );
        assert!(Replayer::from_yaml("").unwrap().is_empty());
    }
}
