//! Host capabilities for one-shot evaluations (`portcullis run`, `portcullis
//! test`): live, live and recorded, or replayed from a session file.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis_host::capabilities::oneshot::{CapabilitySession, SessionMode};
//! use portcullis_host::capabilities::{KubeConfigSource, ResourceType};
//!
//! let session = CapabilitySession::start(
//!     SessionMode::Replay("session.yml".into()),
//!     &["*".to_string()],
//!     vec![ResourceType::new("v1", "Namespace")],
//!     KubeConfigSource::Infer,
//!     None,
//! )
//! .await?;
//! let capabilities = session.capabilities(); // for EvalContext::capabilities
//! // ... evaluate ...
//! session.finish()?; // writes the recording in Record mode
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use portcullis_adapters::HostCapabilities;

use super::{
    CapabilityBackend, CapabilityGrants, GrantError, HostServices, KubeConfigSource,
    PolicyCapabilities, Recorder, Replayer, ResourceType, ServicesConfig, SessionError,
    wait_for_caches,
};
use crate::fetch::ModuleFetcher;

/// Where the answers to host calls come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SessionMode {
    /// The cluster, registries and DNS.
    #[default]
    Live,
    /// Live, and every exchange is written to this file by
    /// [`CapabilitySession::finish`].
    Record(PathBuf),
    /// Answers from this session file; nothing is contacted.
    Replay(PathBuf),
}

/// Why host capabilities could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    /// Invalid `hostCapabilities` patterns.
    #[error(transparent)]
    Grants(#[from] GrantError),
    /// The session file cannot be read or written.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// The host capabilities of one evaluation, and its recording if any.
pub struct CapabilitySession {
    capabilities: Arc<PolicyCapabilities>,
    recording: Option<(Arc<Recorder>, PathBuf)>,
    replay: Option<Arc<Replayer>>,
}

impl CapabilitySession {
    /// Sets up capabilities granted by `host_capabilities` patterns, reading
    /// `resources` of the cluster. Live modes connect with `kubernetes` and
    /// reach registries through `registries`, and wait (up to two minutes)
    /// for the watch caches of `resources`.
    pub async fn start(
        mode: SessionMode,
        host_capabilities: &[String],
        resources: Vec<ResourceType>,
        kubernetes: KubeConfigSource,
        registries: Option<ModuleFetcher>,
    ) -> Result<Self, OneShotError> {
        let grants = CapabilityGrants::new(host_capabilities)?;
        if let SessionMode::Replay(path) = &mode {
            let replayer = Arc::new(Replayer::load(path)?);
            let capabilities = PolicyCapabilities::new(
                grants,
                resources,
                Arc::clone(&replayer) as Arc<dyn CapabilityBackend>,
            );
            return Ok(Self {
                capabilities: Arc::new(capabilities),
                recording: None,
                replay: Some(replayer),
            });
        }
        let services = HostServices::new(
            ServicesConfig {
                kubernetes,
                registries,
            },
            tokio::runtime::Handle::current(),
        )
        .await;
        let watches = services.start_watches(&resources);
        wait_for_caches(services.kubernetes()).await;
        let (backend, recording): (Arc<dyn CapabilityBackend>, _) = match mode {
            SessionMode::Record(path) => {
                let recorder = Arc::new(Recorder::new(services));
                (Arc::clone(&recorder) as _, Some((recorder, path)))
            }
            _ => (services as _, None),
        };
        let capabilities =
            PolicyCapabilities::new(grants, resources, backend).with_watches(watches);
        Ok(Self {
            capabilities: Arc::new(capabilities),
            recording,
            replay: None,
        })
    }

    /// What the evaluation context calls.
    pub fn capabilities(&self) -> Arc<dyn HostCapabilities> {
        Arc::clone(&self.capabilities) as _
    }

    /// Before replaying the same session for another evaluation.
    pub fn rewind(&self) {
        if let Some(replay) = &self.replay {
            replay.rewind();
        }
    }

    /// Ends the session: writes the recording (Record mode) and warns about
    /// recorded exchanges that were not replayed (Replay mode).
    pub fn finish(&self) -> Result<(), SessionError> {
        if let Some((recorder, path)) = &self.recording {
            recorder.save(path)?;
            tracing::info!(path = %path.display(), exchanges = recorder.len(), "host capability session recorded");
        }
        if let Some(replay) = &self.replay
            && replay.replayed() < replay.len()
        {
            tracing::warn!(
                replayed = replay.replayed(),
                total = replay.len(),
                "some recorded host capability exchanges were not replayed"
            );
        }
        Ok(())
    }
}
