//! Bounded retries with jittered exponential backoff, for compare-and-swap loops.

use std::time::Duration;

use rand::Rng;

/// How often and how patiently a CAS loop retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (the first one included) before a conflict is returned as
    /// [`crate::IpamError::TooManyConflicts`].
    pub max_attempts: u32,
    /// Attempts after which an unavailable datastore is returned as an error.
    pub max_unavailable_attempts: u32,
    /// The largest pause after a compare-and-swap conflict.
    pub max_conflict_pause: Duration,
    /// The backoff ceiling before the first retry; doubled with every retry.
    pub base_backoff: Duration,
    /// The largest backoff ceiling.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 100,
            max_unavailable_attempts: 12,
            max_conflict_pause: Duration::from_millis(20),
            base_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    /// The (random) pause before retry number `attempt` (1 = first retry): uniform in
    /// `[ceiling/2, ceiling]` with `ceiling = base * 2^(attempt-1)` capped at `max_backoff`
    /// ("equal jitter": racing writers spread out, yet nobody retries at once).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(16);
        let ceiling = self
            .base_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff);
        let ceiling_us = u64::try_from(ceiling.as_micros())
            .unwrap_or(u64::MAX)
            .max(2);
        let us = rand::rng().random_range(ceiling_us / 2..=ceiling_us);
        Duration::from_micros(us)
    }

    /// Sleeps before retry number `attempt` after the datastore was unavailable.
    pub async fn pause(&self, attempt: u32) {
        tokio::time::sleep(self.backoff(attempt)).await;
    }

    /// The (random) pause after losing a compare-and-swap race: uniform in
    /// `[0, min(base * attempt, max_conflict_pause)]`. It grows only linearly: someone else
    /// made progress, and a writer that backs off exponentially would lose every later race
    /// to fresher writers and starve.
    pub fn conflict_backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(attempt.max(1))
            .min(self.max_conflict_pause);
        let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=ceiling_us))
    }

    /// Sleeps after losing a compare-and-swap race.
    pub async fn pause_conflict(&self, attempt: u32) {
        tokio::time::sleep(self.conflict_backoff(attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..60 {
            let b = p.backoff(attempt);
            assert!(b <= p.max_backoff, "{b:?}");
        }
        assert!(p.backoff(1) <= Duration::from_millis(2));
        assert!(p.backoff(30) >= p.max_backoff / 2);
        for attempt in 1..200 {
            assert!(p.conflict_backoff(attempt) <= p.max_conflict_pause);
        }
    }
}
