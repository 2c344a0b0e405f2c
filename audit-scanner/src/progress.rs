//! The progress logs: objects done of total, rate and estimated time left.
//!
//! The total is not known up front: counting first would mean listing
//! everything twice, or holding every object in memory. It grows as the
//! run's own paged LISTs come in: a first page tells how many objects the
//! rest of its list holds (`remainingItemCount`), so one page of each list
//! is enough to count it. Until every namespace has been started, the
//! total is the count so far and is logged as such; the estimated total
//! extrapolates it over the namespaces not started yet, with the average
//! of those started.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::stats::Stats;

/// The run's progress at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Listed objects handled (audited, or found no policy applies).
    pub objects_done: u64,
    /// Objects counted in the LISTs read so far.
    pub objects_listed: u64,
    /// Units (namespaces and the cluster-scoped part) started.
    pub units_started: u64,
    /// Units finished.
    pub units_done: u64,
    /// Units to audit.
    pub units_total: u64,
    /// Time since the run started auditing objects.
    pub elapsed: Duration,
}

impl Snapshot {
    /// Reads the counters of `stats`.
    pub fn of(stats: &Stats, elapsed: Duration) -> Snapshot {
        Snapshot {
            objects_done: stats.objects_done.load(Ordering::Relaxed),
            objects_listed: stats.objects_listed.load(Ordering::Relaxed),
            units_started: stats.units_started.load(Ordering::Relaxed),
            units_done: stats.units_done.load(Ordering::Relaxed),
            units_total: stats.units_total.load(Ordering::Relaxed),
            elapsed,
        }
    }

    /// Whether every unit is finished, so the total is final.
    pub fn finished(&self) -> bool {
        self.units_done >= self.units_total
    }

    /// Objects handled per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.objects_done as f64 / secs
        } else {
            0.0
        }
    }

    /// The estimated number of objects of the whole run: those counted,
    /// plus the average per started unit for each unit not started yet.
    /// `None` until a unit has started.
    pub fn estimated_total(&self) -> Option<u64> {
        let counted = self.objects_listed.max(self.objects_done);
        if self.finished() || self.units_started >= self.units_total {
            return Some(counted);
        }
        if self.units_started == 0 {
            return None;
        }
        let not_started = self.units_total - self.units_started;
        let average = counted as f64 / self.units_started as f64;
        Some(counted + (average * not_started as f64).round() as u64)
    }

    /// The estimated time left at the current rate; `None` while nothing is
    /// done yet (no rate) or nothing is counted.
    pub fn eta(&self) -> Option<Duration> {
        if self.finished() {
            return Some(Duration::ZERO);
        }
        let total = self.estimated_total()?;
        let rate = self.rate();
        if self.objects_done == 0 || rate <= 0.0 {
            return None;
        }
        let left = total.saturating_sub(self.objects_done) as f64 / rate;
        Some(Duration::from_secs_f64(left))
    }

    /// Logs this snapshot (`last` on the one at the end of a run).
    pub fn log(&self, last: bool) {
        tracing::info!(
            objects_done = self.objects_done,
            objects_total = self.objects_listed.max(self.objects_done),
            total_final = self.finished(),
            objects_total_estimated = self.estimated_total(),
            namespaces_done = self.units_done,
            namespaces_total = self.units_total,
            rate_per_second = (self.rate() * 10.0).round() / 10.0,
            eta_seconds = self.eta().map(|d| d.as_secs()),
            last,
            progress = %self,
            "audit progress"
        );
    }
}

/// `120 of 500 objects counted so far (est. 1000; 3/10 namespaces done),
/// 40.0/s, 22s left`.
impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counted = self.objects_listed.max(self.objects_done);
        write!(f, "{} of {} objects", self.objects_done, counted)?;
        if !self.finished() {
            f.write_str(" counted so far (")?;
            if let Some(estimate) = self.estimated_total().filter(|e| *e != counted) {
                write!(f, "est. {estimate}; ")?;
            }
            write!(
                f,
                "{}/{} namespaces done)",
                self.units_done, self.units_total
            )?;
        }
        write!(f, ", {:.1}/s", self.rate())?;
        match self.eta() {
            _ if self.finished() => write!(f, ", done in {}", human(self.elapsed)),
            Some(eta) => write!(f, ", {} left", human(eta)),
            None => f.write_str(", time left unknown"),
        }
    }
}

/// `42s`, `3m07s`, `1h02m`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Logs a snapshot every `interval` until aborted.
pub(crate) async fn every(
    stats: std::sync::Arc<Stats>,
    interval: Duration,
    started: std::time::Instant,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        Snapshot::of(&stats, started.elapsed()).log(false);
    }
}

/// Counts one paged LIST as its pages come, into `Stats::objects_listed`,
/// so that the count of a list is exact once it ends (or fails).
#[derive(Debug, Default)]
pub(crate) struct ListCount {
    /// Objects of this list added to the count.
    counted: u64,
    /// Objects of this list received so far.
    received: u64,
}

impl ListCount {
    /// A page of `items` objects came, with `remaining` more announced by
    /// the API server (absent on the last page, or where it cannot tell).
    pub(crate) fn page(&mut self, stats: &Stats, items: u64, remaining: Option<i64>) {
        self.received += items;
        let expected = self.received + remaining.and_then(|r| u64::try_from(r).ok()).unwrap_or(0);
        self.set(stats, expected);
    }

    /// The list ended (or failed): its count is what was received.
    pub(crate) fn end(&mut self, stats: &Stats) {
        let received = self.received;
        self.set(stats, received);
    }

    fn set(&mut self, stats: &Stats, expected: u64) {
        if expected > self.counted {
            stats
                .objects_listed
                .fetch_add(expected - self.counted, Ordering::Relaxed);
        } else if expected < self.counted {
            stats
                .objects_listed
                .fetch_sub(self.counted - expected, Ordering::Relaxed);
        }
        self.counted = expected;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(done: u64, listed: u64, started: u64, units_done: u64, secs: u64) -> Snapshot {
        Snapshot {
            objects_done: done,
            objects_listed: listed,
            units_started: started,
            units_done,
            units_total: 10,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn total_is_extrapolated_until_every_unit_started() {
        let s = snapshot(100, 500, 5, 3, 10);
        assert_eq!(s.rate(), 10.0);
        // 500 counted in 5 units, 5 not started: 1000.
        assert_eq!(s.estimated_total(), Some(1000));
        assert_eq!(s.eta(), Some(Duration::from_secs(90)));
        assert_eq!(
            s.to_string(),
            "100 of 500 objects counted so far (est. 1000; 3/10 namespaces done), 10.0/s, 1m30s left"
        );
    }

    #[test]
    fn all_started_total_is_the_count() {
        let s = snapshot(400, 500, 10, 8, 40);
        assert_eq!(s.estimated_total(), Some(500));
        assert_eq!(s.eta(), Some(Duration::from_secs(10)));
        assert_eq!(
            s.to_string(),
            "400 of 500 objects counted so far (8/10 namespaces done), 10.0/s, 10s left"
        );
    }

    #[test]
    fn nothing_done_yet_has_no_eta() {
        let s = snapshot(0, 0, 0, 0, 0);
        assert_eq!(s.estimated_total(), None);
        assert_eq!(s.eta(), None);
        assert_eq!(
            s.to_string(),
            "0 of 0 objects counted so far (0/10 namespaces done), 0.0/s, time left unknown"
        );
    }

    #[test]
    fn finished_run_reports_the_final_count() {
        let s = snapshot(7000, 7000, 10, 10, 3700);
        assert!(s.finished());
        assert_eq!(s.eta(), Some(Duration::ZERO));
        assert_eq!(s.to_string(), "7000 of 7000 objects, 1.9/s, done in 1h01m");
    }

    #[test]
    fn a_list_counts_its_announced_objects_then_exactly_what_came() {
        let stats = Stats::default();
        let mut list = ListCount::default();
        list.page(&stats, 100, Some(250));
        assert_eq!(stats.objects_listed.load(Ordering::Relaxed), 350);
        // Objects deleted meanwhile: the next page announces fewer.
        list.page(&stats, 100, Some(140));
        assert_eq!(stats.objects_listed.load(Ordering::Relaxed), 340);
        list.page(&stats, 140, None);
        list.end(&stats);
        assert_eq!(stats.objects_listed.load(Ordering::Relaxed), 340);

        // A list that fails after its first page counts what came.
        let mut failed = ListCount::default();
        failed.page(&stats, 10, Some(90));
        assert_eq!(stats.objects_listed.load(Ordering::Relaxed), 440);
        failed.end(&stats);
        assert_eq!(stats.objects_listed.load(Ordering::Relaxed), 350);
    }
}
