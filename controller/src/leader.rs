//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! controller replicas exactly one reconciles while the others wait as hot
//! standbys.
//!
//! The protocol is client-go's (what controller-runtime uses), written
//! against `Api<Lease>` because no maintained crate for kube 5 has its
//! semantics (renew deadline, immediate takeover of a released lease, plain
//! get/create/update RBAC):
//!
//! - Every attempt reads the Lease. A Lease held by someone else counts as
//!   held until `leaseDurationSeconds` after *this process* last saw its
//!   record change (local monotonic clock, so clock skew between nodes does
//!   not matter). An empty `holderIdentity` is free at once.
//! - Acquiring and renewing are a `replace` (PUT) carrying the
//!   `resourceVersion` that was read: if anyone wrote in between, the API
//!   server answers 409 Conflict and the attempt fails, so two candidates can
//!   never both win.
//! - The leader renews every retry period. When no renewal has succeeded for
//!   the renew deadline (shorter than the lease duration, so it gives up
//!   before anyone else may take over), or when it sees another holder, it has
//!   lost: the caller must stop reconciling at once.
//! - Releasing clears `holderIdentity` and sets `leaseDurationSeconds: 1`, so
//!   a standby takes over on its next attempt instead of after the lease
//!   duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use sha2::{Digest as _, Sha256};
use tracing::{debug, info, warn};

/// Name of the Lease of a controller without `--selector`.
pub const LEASE_NAME: &str = "portcullis-controller";

/// How long a Lease stays valid after its last renewal (controller-runtime's
/// default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps trying to renew before it gives up
/// (controller-runtime's default).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often candidates try to acquire and the leader renews
/// (controller-runtime's default).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The Lease name for a controller restricted to `selector`: controllers
/// sharded by different selectors each elect their own leader, so their names
/// differ by a stable hash of the selector.
pub fn lease_name(selector: Option<&str>) -> String {
    match selector.map(str::trim).filter(|s| !s.is_empty()) {
        None => LEASE_NAME.to_string(),
        Some(selector) => {
            let digest = Sha256::digest(selector.as_bytes());
            format!("{LEASE_NAME}-{}", &hex::encode(digest)[..10])
        }
    }
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// A call to the API server failed.
    #[error("Kubernetes API error on Lease {namespace}/{name}: {source}")]
    Kube {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The timings cannot give a safe election.
    #[error(
        "invalid leader election timings: need retry period < renew deadline < lease duration (got {retry_period:?}, {renew_deadline:?}, {lease_duration:?})"
    )]
    Timings {
        /// Lease duration.
        lease_duration: Duration,
        /// Renew deadline.
        renew_deadline: Duration,
        /// Retry period.
        retry_period: Duration,
    },
    /// The holder identity is empty.
    #[error("the leader election identity is empty")]
    EmptyIdentity,
}

/// Why the leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadershipLost {
    /// No renewal succeeded within the renew deadline.
    #[error(
        "could not renew Lease {lease} within the {deadline:?} renew deadline (last error: {last_error})"
    )]
    RenewDeadline {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The renew deadline.
        deadline: Duration,
        /// The last failure, or "timed out".
        last_error: String,
    },
    /// Another candidate holds the Lease.
    #[error("Lease {lease} is now held by {holder}")]
    TakenOver {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The new holder.
        holder: String,
    },
}

/// What leader election is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Namespace of the Lease (the controller's `--namespace`).
    pub namespace: String,
    /// Name of the Lease (see [`lease_name`]).
    pub name: String,
    /// This process's `holderIdentity`.
    pub identity: String,
    /// See [`LEASE_DURATION`].
    pub lease_duration: Duration,
    /// See [`RENEW_DEADLINE`].
    pub renew_deadline: Duration,
    /// See [`RETRY_PERIOD`].
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// The configuration with controller-runtime's default timings.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }

    /// Checks the identity and that the leader gives up (renew deadline)
    /// before a standby may take over (lease duration), with at least one
    /// retry in between.
    pub fn validate(&self) -> Result<(), LeaderError> {
        if self.identity.trim().is_empty() {
            return Err(LeaderError::EmptyIdentity);
        }
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(LeaderError::Timings {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        Ok(())
    }

    /// `namespace/name` of the Lease, for logs and errors.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The Lease record as last read, and when this process first saw it.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    spec: LeaseSpec,
    /// Its metadata, written back on update: the `resourceVersion` makes the
    /// update conditional, the rest (labels, ...) is kept.
    metadata: ObjectMeta,
    since: Instant,
}

/// What one attempt should do, given the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// The Lease is ours, free, or expired: write ourselves as holder.
    Write,
    /// Someone else holds a valid Lease.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// The holder of a Lease record, if any (an empty string is no holder, as
/// client-go writes on release).
fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Updates the observation with the record just read: the expiry clock of a
/// Lease restarts only when its record changed, so a holder that stopped
/// renewing expires `lease_duration` after we last saw it renew, whatever the
/// clocks of the nodes say.
fn observe(previous: Option<Observed>, lease: Lease, now: Instant) -> Observed {
    let spec = lease.spec.unwrap_or_default();
    let metadata = lease.metadata;
    match previous {
        Some(previous) if previous.spec == spec => Observed {
            metadata,
            ..previous
        },
        _ => Observed {
            spec,
            metadata,
            since: now,
        },
    }
}

/// Whether to create, write or wait, for candidate `identity` at `now`.
fn decide(
    observed: Option<&Observed>,
    identity: &str,
    now: Instant,
    lease_duration: Duration,
) -> Decision {
    let Some(observed) = observed else {
        return Decision::Create;
    };
    match holder(&observed.spec) {
        Some(h) if h != identity => {
            // A record's own duration wins over ours (another version may use
            // other timings); a released Lease (duration 1 s, no holder) is
            // handled above by `holder`.
            let duration = observed
                .spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(lease_duration, Duration::from_secs);
            if now.saturating_duration_since(observed.since) < duration {
                Decision::Wait {
                    holder: h.to_string(),
                }
            } else {
                Decision::Write
            }
        }
        _ => Decision::Write,
    }
}

/// The record that makes `identity` the holder, renewed at `now`: a renewal
/// keeps `acquireTime` and the transition count, a takeover resets one and
/// increments the other.
fn held_spec(
    current: Option<&LeaseSpec>,
    identity: &str,
    lease_duration: Duration,
    now: MicroTime,
) -> LeaseSpec {
    let seconds = i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX);
    let base = current.cloned().unwrap_or_default();
    let renewing = current.and_then(holder) == Some(identity);
    let (acquire_time, transitions) = if renewing {
        (
            base.acquire_time.clone().or_else(|| Some(now.clone())),
            base.lease_transitions.unwrap_or(0),
        )
    } else if current.is_none() {
        (Some(now.clone()), 0)
    } else {
        (
            Some(now.clone()),
            base.lease_transitions.unwrap_or(0).saturating_add(1),
        )
    };
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(seconds),
        acquire_time,
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..base
    }
}

/// The record of a released Lease: no holder and a 1-second duration, so
/// every candidate may take it on its next attempt.
fn released_spec(current: &LeaseSpec, now: MicroTime) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        ..current.clone()
    }
}

/// Tracks the leader's last successful renewal against the renew deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RenewClock {
    /// When the last successful renewal was *sent*: others saw it no earlier,
    /// so giving up `renew_deadline` after it is always before they may take
    /// over.
    last_renewed: Instant,
    renew_deadline: Duration,
}

impl RenewClock {
    /// Time left to renew; zero once the deadline has passed.
    fn remaining(&self, now: Instant) -> Duration {
        (self.last_renewed + self.renew_deadline).saturating_duration_since(now)
    }
}

/// The result of one attempt to acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This process holds the Lease.
    Leading,
    /// Another candidate holds a valid Lease.
    Standby {
        /// The holder's identity.
        holder: String,
    },
    /// Lost a race with another writer (409); try again later.
    Conflict,
}

/// One candidate in the election for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Option<Observed>,
    renewed: Option<RenewClock>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// A candidate for `config`'s Lease; nothing is read or written yet.
    pub fn new(client: Client, config: ElectionConfig) -> Result<Self, LeaderError> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            renewed: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    fn kube_error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Kube {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source: Box::new(source),
        }
    }

    /// Reads the Lease and, when it is ours, free or expired, writes this
    /// process as holder (create, or replace at the resourceVersion read).
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, LeaderError> {
        let started = Instant::now();
        let lease = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.kube_error(e))?;
        self.observed = lease.map(|lease| observe(self.observed.take(), lease, Instant::now()));
        let decision = decide(
            self.observed.as_ref(),
            &self.config.identity,
            Instant::now(),
            self.config.lease_duration,
        );
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let written = match decision {
            Decision::Wait { holder } => return Ok(Attempt::Standby { holder }),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        labels: Some(
                            [(
                                "app.kubernetes.io/part-of".to_string(),
                                crate::names::PART_OF.to_string(),
                            )]
                            .into(),
                        ),
                        ..Default::default()
                    },
                    spec: Some(held_spec(
                        None,
                        &self.config.identity,
                        self.config.lease_duration,
                        now,
                    )),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Write => {
                let current = self.observed.as_ref().map(|o| &o.spec);
                let lease = Lease {
                    metadata: self
                        .observed
                        .as_ref()
                        .map(|o| o.metadata.clone())
                        .unwrap_or_default(),
                    spec: Some(held_spec(
                        current,
                        &self.config.identity,
                        self.config.lease_duration,
                        now,
                    )),
                };
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                self.observed = Some(observe(None, lease, Instant::now()));
                self.renewed = Some(RenewClock {
                    last_renewed: started,
                    renew_deadline: self.config.renew_deadline,
                });
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                debug!(lease = %self.config.lease(), "lost a write race on the Lease");
                Ok(Attempt::Conflict)
            }
            Err(e) => Err(self.kube_error(e)),
        }
    }

    /// Tries every retry period until this process leads. `on_attempt` sees
    /// every attempt's outcome (a standby learns it is one; errors are logged
    /// here and retried, as the API server may be briefly unreachable).
    pub async fn acquire(&mut self, mut on_attempt: impl FnMut(&Attempt)) {
        let mut last_holder: Option<String> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    info!(
                        lease = %self.config.lease(),
                        identity = %self.config.identity,
                        "acquired leadership"
                    );
                    on_attempt(&Attempt::Leading);
                    return;
                }
                Ok(attempt) => {
                    if let Attempt::Standby { holder } = &attempt
                        && last_holder.as_ref() != Some(holder)
                    {
                        info!(
                            lease = %self.config.lease(),
                            identity = %self.config.identity,
                            %holder,
                            "standby: another replica leads, waiting for the lease"
                        );
                        last_holder = Some(holder.clone());
                    }
                    on_attempt(&attempt);
                }
                Err(error) => {
                    warn!(%error, "cannot acquire the lease; retrying");
                }
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews every retry period while this process leads; returns when it no
    /// longer does. Cancel-safe: dropping it stops renewing.
    pub async fn keep_renewing(&mut self) -> LeadershipLost {
        let mut last_error = "no renewal attempt finished".to_string();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let clock = self.renewed.unwrap_or(RenewClock {
                last_renewed: Instant::now(),
                renew_deadline: self.config.renew_deadline,
            });
            let remaining = clock.remaining(Instant::now());
            if remaining.is_zero() {
                self.renewed = None;
                return LeadershipLost::RenewDeadline {
                    lease: self.config.lease(),
                    deadline: self.config.renew_deadline,
                    last_error,
                };
            }
            // A request that hangs must not hold the leader past its deadline.
            match tokio::time::timeout(remaining, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => {}
                Ok(Ok(Attempt::Standby { holder })) => {
                    self.renewed = None;
                    return LeadershipLost::TakenOver {
                        lease: self.config.lease(),
                        holder,
                    };
                }
                Ok(Ok(Attempt::Conflict)) => {
                    last_error = "conflicting write to the Lease".to_string();
                    warn!(lease = %self.config.lease(), "cannot renew the lease: {last_error}; retrying");
                }
                Ok(Err(error)) => {
                    last_error = error.to_string();
                    warn!(%error, "cannot renew the lease; retrying");
                }
                Err(_) => {
                    self.renewed = None;
                    return LeadershipLost::RenewDeadline {
                        lease: self.config.lease(),
                        deadline: self.config.renew_deadline,
                        last_error: format!("timed out; before that: {last_error}"),
                    };
                }
            }
        }
    }

    /// Gives the Lease up if this process holds it, so that a standby takes
    /// over on its next attempt. Reads the Lease first: a renewal cancelled
    /// in flight may have changed its resourceVersion.
    pub async fn release(&mut self) -> Result<bool, LeaderError> {
        self.renewed = None;
        let Some(lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.kube_error(e))?
        else {
            return Ok(false);
        };
        let spec = lease.spec.unwrap_or_default();
        if holder(&spec) != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        let released = Lease {
            metadata: lease.metadata,
            spec: Some(released_spec(
                &spec,
                MicroTime(k8s_openapi::jiff::Timestamp::now()),
            )),
        };
        self.api
            .replace(&self.config.name, &PostParams::default(), &released)
            .await
            .map_err(|e| self.kube_error(e))?;
        self.observed = None;
        info!(
            lease = %self.config.lease(),
            identity = %self.config.identity,
            "released leadership"
        );
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: duration,
            ..Default::default()
        }
    }

    fn lease(spec: LeaseSpec) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(spec),
        }
    }

    fn time(seconds: i64) -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn lease_names() {
        assert_eq!(lease_name(None), "portcullis-controller");
        assert_eq!(lease_name(Some("  ")), "portcullis-controller");
        let a = lease_name(Some("shard=a"));
        assert_eq!(a, lease_name(Some("shard=a")), "stable");
        assert_ne!(a, lease_name(Some("shard=b")));
        // sha256("shard=a"): pinned, so a new version elects on the same
        // Lease as the old one during a rolling update.
        assert_eq!(a, "portcullis-controller-3d8dfb268d");
        assert!(a.len() <= 63);
    }

    #[test]
    fn timings_are_validated() {
        let ok = ElectionConfig::new("ns".into(), LEASE_NAME.into(), "me".into());
        ok.validate().unwrap();
        assert!(matches!(
            ElectionConfig {
                identity: " ".into(),
                ..ok.clone()
            }
            .validate(),
            Err(LeaderError::EmptyIdentity)
        ));
        for (lease, renew, retry) in [(10, 10, 2), (15, 10, 10), (15, 10, 0), (5, 10, 2)] {
            let config = ElectionConfig {
                lease_duration: Duration::from_secs(lease),
                renew_deadline: Duration::from_secs(renew),
                retry_period: Duration::from_secs(retry),
                ..ok.clone()
            };
            assert!(
                matches!(config.validate(), Err(LeaderError::Timings { .. })),
                "{lease} {renew} {retry}"
            );
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(
            decide(None, "me", Instant::now(), LEASE_DURATION),
            Decision::Create
        );
    }

    #[test]
    fn a_free_or_own_lease_is_written() {
        let t0 = Instant::now();
        for spec in [
            spec(None, None),
            spec(Some(""), Some(1)),
            spec(Some("me"), Some(15)),
        ] {
            let observed = observe(None, lease(spec.clone()), t0);
            assert_eq!(
                decide(Some(&observed), "me", t0, LEASE_DURATION),
                Decision::Write,
                "{spec:?}"
            );
        }
    }

    #[test]
    fn another_holder_is_waited_for_until_its_record_goes_stale() {
        let t0 = Instant::now();
        let held = spec(Some("other"), Some(15));
        let observed = observe(None, lease(held.clone()), t0);
        let wait = Decision::Wait {
            holder: "other".into(),
        };
        assert_eq!(decide(Some(&observed), "me", t0, LEASE_DURATION), wait);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(decide(Some(&observed), "me", at(14), LEASE_DURATION), wait);
        assert_eq!(
            decide(Some(&observed), "me", at(15), LEASE_DURATION),
            Decision::Write
        );

        // The same record read again does not restart the clock (the holder
        // stopped renewing)...
        let again = observe(Some(observed.clone()), lease(held.clone()), at(10));
        assert_eq!(again.since, t0);
        assert_eq!(
            decide(Some(&again), "me", at(15), LEASE_DURATION),
            Decision::Write
        );
        // ...a renewed record does.
        let renewed = LeaseSpec {
            renew_time: Some(time(100)),
            ..held
        };
        let fresh = observe(Some(observed), lease(renewed), at(10));
        assert_eq!(fresh.since, at(10));
        assert_eq!(decide(Some(&fresh), "me", at(15), LEASE_DURATION), wait);
        assert_eq!(
            decide(Some(&fresh), "me", at(25), LEASE_DURATION),
            Decision::Write
        );
    }

    #[test]
    fn the_records_own_duration_counts() {
        let t0 = Instant::now();
        let observed = observe(None, lease(spec(Some("other"), Some(30))), t0);
        assert!(matches!(
            decide(
                Some(&observed),
                "me",
                t0 + Duration::from_secs(20),
                LEASE_DURATION
            ),
            Decision::Wait { .. }
        ));
        // No duration in the record: ours.
        let observed = observe(None, lease(spec(Some("other"), None)), t0);
        assert_eq!(
            decide(
                Some(&observed),
                "me",
                t0 + Duration::from_secs(15),
                LEASE_DURATION
            ),
            Decision::Write
        );
    }

    #[test]
    fn held_records() {
        let created = held_spec(None, "me", LEASE_DURATION, time(10));
        assert_eq!(created.holder_identity.as_deref(), Some("me"));
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(created.acquire_time, Some(time(10)));
        assert_eq!(created.renew_time, Some(time(10)));
        assert_eq!(created.lease_transitions, Some(0));

        // Renewal: acquireTime and transitions kept.
        let renewed = held_spec(Some(&created), "me", LEASE_DURATION, time(12));
        assert_eq!(renewed.acquire_time, Some(time(10)));
        assert_eq!(renewed.renew_time, Some(time(12)));
        assert_eq!(renewed.lease_transitions, Some(0));

        // Takeover from someone else (or from a released Lease): a transition.
        let theirs = held_spec(None, "other", LEASE_DURATION, time(20));
        let taken = held_spec(Some(&theirs), "me", LEASE_DURATION, time(40));
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.acquire_time, Some(time(40)));
        assert_eq!(taken.lease_transitions, Some(1));
        let released = released_spec(&taken, time(50));
        let retaken = held_spec(Some(&released), "other", LEASE_DURATION, time(51));
        assert_eq!(retaken.lease_transitions, Some(2));
        assert_eq!(retaken.lease_duration_seconds, Some(15));
    }

    #[test]
    fn a_released_record_is_free() {
        let held = held_spec(None, "me", LEASE_DURATION, time(10));
        let released = released_spec(&held, time(20));
        assert_eq!(holder(&released), None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, held.lease_transitions);
        // Another candidate that saw it held a moment ago takes it at once.
        let t0 = Instant::now();
        let seen = observe(None, lease(held), t0);
        let seen = observe(Some(seen), lease(released), t0 + Duration::from_secs(1));
        assert_eq!(
            decide(
                Some(&seen),
                "other",
                t0 + Duration::from_secs(1),
                LEASE_DURATION
            ),
            Decision::Write
        );
    }

    #[test]
    fn the_leader_gives_up_before_the_lease_can_expire_for_others() {
        let sent = Instant::now();
        let clock = RenewClock {
            last_renewed: sent,
            renew_deadline: RENEW_DEADLINE,
        };
        assert_eq!(clock.remaining(sent), RENEW_DEADLINE);
        assert_eq!(
            clock.remaining(sent + Duration::from_secs(4)),
            Duration::from_secs(6)
        );
        assert_eq!(clock.remaining(sent + RENEW_DEADLINE), Duration::ZERO);
        assert_eq!(
            clock.remaining(sent + Duration::from_secs(60)),
            Duration::ZERO
        );
        // Others saw the renewal no earlier than it was sent, so the earliest
        // takeover (sent + lease duration) comes after the leader gave up.
        let earliest_takeover = observe(None, lease(spec(Some("me"), Some(15))), sent);
        assert!(
            decide(
                Some(&earliest_takeover),
                "other",
                sent + RENEW_DEADLINE,
                LEASE_DURATION
            ) != Decision::Write
        );
    }
}
