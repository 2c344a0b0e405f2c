//! Retry delays after failed reconciles: exponential per object, with
//! jitter, reset by the first success.
//!
//! A fixed delay retries a broken object (or an unreachable API server) at
//! the same rate forever, and every object that failed together retries
//! together. Doubling spreads the load out; jitter keeps objects that failed
//! at the same moment from retrying in lockstep.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Delay after the first failure.
pub const INITIAL_DELAY: Duration = Duration::from_secs(1);
/// Longest delay between retries.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// Failure counts per object (kind, namespace and name), shared by every
/// reconciler of a controller.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

impl Backoff {
    /// Records a failure of `key` and returns how long to wait before the
    /// retry: `INITIAL_DELAY · 2^(n-1)` after the n-th failure in a row,
    /// capped at [`MAX_DELAY`], then a uniformly random point in its upper
    /// half ("equal jitter": never less than half the nominal delay).
    pub fn failed(&self, key: &str) -> Duration {
        let attempt = {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let n = failures.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        jittered(nominal_delay(attempt), random_fraction(key, attempt))
    }

    /// Forgets the failures of `key` (it reconciled successfully).
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.remove(key);
    }

    /// How many failures in a row `key` has had.
    pub fn failures(&self, key: &str) -> u32 {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.get(key).copied().unwrap_or(0)
    }
}

/// The delay before jitter after the `attempt`-th failure in a row (≥ 1).
pub fn nominal_delay(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    INITIAL_DELAY
        .checked_mul(1u32 << doublings)
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

/// `delay` scaled into `[delay/2, delay]` by `fraction` ∈ [0, 1).
fn jittered(delay: Duration, fraction: f64) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(fraction.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs between processes, objects and attempts.
/// std's `RandomState` is seeded from the operating system's random source;
/// no cryptographic quality is needed to spread retries.
fn random_fraction(key: &str, attempt: u32) -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one((key, attempt));
    // The top 53 bits fill an f64 mantissa exactly.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        assert_eq!(nominal_delay(1), Duration::from_secs(1));
        assert_eq!(nominal_delay(2), Duration::from_secs(2));
        assert_eq!(nominal_delay(5), Duration::from_secs(16));
        assert_eq!(nominal_delay(9), Duration::from_secs(256));
        assert_eq!(nominal_delay(10), MAX_DELAY);
        assert_eq!(nominal_delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let backoff = Backoff::default();
        let mut seen = std::collections::BTreeSet::new();
        for attempt in 1..=12 {
            let delay = backoff.failed("PolicyServer/default");
            let nominal = nominal_delay(attempt);
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "attempt {attempt}: {delay:?} outside [{:?}, {nominal:?}]",
                nominal / 2
            );
            seen.insert(delay.as_nanos());
        }
        assert_eq!(backoff.failures("PolicyServer/default"), 12);
        assert!(seen.len() > 1, "no jitter: {seen:?}");
        // Objects are independent, and a success starts over.
        assert_eq!(backoff.failures("PolicyServer/other"), 0);
        backoff.succeeded("PolicyServer/default");
        assert!(backoff.failed("PolicyServer/default") <= INITIAL_DELAY);
    }

    #[test]
    fn two_objects_failing_together_do_not_retry_together() {
        let delays: std::collections::BTreeSet<u128> = (0..20)
            .map(|i| {
                let backoff = Backoff::default();
                for _ in 0..5 {
                    backoff.failed(&format!("ClusterAdmissionPolicy/p{i}"));
                }
                backoff
                    .failed(&format!("ClusterAdmissionPolicy/p{i}"))
                    .as_nanos()
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
