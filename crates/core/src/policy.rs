//! Small policies the daemon applies: pure functions and state that are told
//! the time and handed their randomness.
//!
//! [`backoff`] kept hand-written (issue 17): sans-IO, `backon` drives async retries itself.

use std::time::{Duration, Instant};

use jobmesh_wire::Stats;

/// Exponential backoff with full jitter: a delay drawn uniformly from
/// `[0, min(cap, base · 2^attempt)]`. `unit` is a random number in `[0, 1)`
/// supplied by the caller (the core owns no RNG).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// Sends stats on change, at most once per `interval`: the first change goes
/// out at once, later ones within the interval are merged into one send at its
/// end (always the latest value).
#[derive(Debug)]
pub struct StatsCoalescer {
    interval: Duration,
    last_sent_at: Option<Instant>,
    last_sent: Option<Stats>,
    pending: Option<Stats>,
}

impl StatsCoalescer {
    /// A coalescer sending at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent_at: None,
            last_sent: None,
            pending: None,
        }
    }

    /// Records the current stats; returns them if they should be sent now.
    /// The start of a drain goes out at once: every submitter should stop
    /// offering jobs to a worker that will refuse them.
    pub fn update(&mut self, now: Instant, stats: Stats) -> Option<Stats> {
        if self.last_sent.as_ref() == Some(&stats) {
            self.pending = None;
            return None;
        }
        let drain_starts = stats.draining && self.last_sent.as_ref().is_none_or(|s| !s.draining);
        self.pending = Some(stats);
        if drain_starts {
            self.last_sent_at = None;
        }
        self.poll(now)
    }

    /// Returns pending stats whose time has come.
    pub fn poll(&mut self, now: Instant) -> Option<Stats> {
        let due = self
            .last_sent_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if due {
            let s = self.pending.take()?;
            self.last_sent_at = Some(now);
            self.last_sent = Some(s.clone());
            Some(s)
        } else {
            None
        }
    }

    /// When [`poll`](Self::poll) next has something to send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.as_ref()?;
        Some(self.last_sent_at? + self.interval)
    }

    /// Forget what was sent (after a reconnect everything must be re-sent).
    pub fn reset(&mut self) {
        self.last_sent_at = None;
        self.last_sent = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_jitters_down() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        assert_eq!(backoff(0, base, cap, 1.0), base);
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(30, base, cap, 1.0), cap);
        assert_eq!(backoff(u32::MAX, base, cap, 1.0), cap);
        assert_eq!(backoff(3, base, cap, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(3, base, cap, 0.0), Duration::ZERO);
        assert_eq!(
            backoff(3, base, cap, f64::NAN.max(2.0)),
            Duration::from_millis(800)
        );
    }

    #[test]
    fn coalescer_sends_first_change_at_once_and_merges_the_rest() {
        let t0 = Instant::now();
        let iv = Duration::from_millis(250);
        let mut c = StatsCoalescer::new(iv);
        let s = |running| Stats {
            slots: 4,
            running,
            ..Stats::default()
        };
        assert_eq!(c.update(t0, s(1)), Some(s(1)));
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.update(t0 + Duration::from_millis(10), s(2)), None);
        assert_eq!(c.update(t0 + Duration::from_millis(20), s(3)), None);
        assert_eq!(c.poll_timeout(), Some(t0 + iv));
        assert_eq!(c.poll(t0 + Duration::from_millis(100)), None);
        assert_eq!(c.poll(t0 + iv), Some(s(3)));
        assert_eq!(c.poll_timeout(), None);
        // Back to a value already sent: nothing to send.
        assert_eq!(c.update(t0 + iv * 3, s(3)), None);
        c.reset();
        assert_eq!(c.update(t0 + iv * 3, s(3)), Some(s(3)));
        // The start of a drain does not wait for the interval.
        let draining = Stats {
            draining: true,
            ..s(3)
        };
        let soon = t0 + iv * 3 + Duration::from_millis(1);
        assert_eq!(c.update(soon, draining.clone()), Some(draining));
    }
}
