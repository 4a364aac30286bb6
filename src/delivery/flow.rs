//! Flow control inside a subscription's lane: a token bucket for its rate
//! limit, and a circuit breaker that stops attempts to an endpoint that keeps
//! failing.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::subscriptions::RateLimit;

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            tokens: limit.burst as f64,
            limit,
            last: now,
        }
    }

    /// Applies a changed limit without resetting the tokens already spent.
    pub(crate) fn set_limit(&mut self, limit: &RateLimit) {
        if &self.limit != limit {
            self.tokens = self.tokens.min(limit.burst as f64);
            self.limit = limit.clone();
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let rate = self.limit.per_second.max(1) as f64;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(self.limit.burst.max(1) as f64);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// What the breaker says about the next delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: go ahead.
    Go,
    /// Cool-down over: this one delivery probes the endpoint.
    Probe,
    /// Open (or a probe is out): defer without an attempt.
    Defer,
}

/// A change worth telling the rest of the system about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened,
    Closed,
    /// Failing for `delivery.disable_after`: disable the subscription.
    Exhausted,
}

#[derive(Debug)]
pub(crate) struct Circuit {
    threshold: u32,
    cooldown: Duration,
    disable_after: Duration,
    consecutive_failures: u32,
    /// First failure since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    /// Open until then; `None` = closed.
    pub open_until: Option<DateTime<Utc>>,
    probing: bool,
}

impl Circuit {
    pub fn new(threshold: u32, cooldown: Duration, disable_after: Duration) -> Self {
        Circuit {
            threshold,
            cooldown,
            disable_after,
            consecutive_failures: 0,
            failing_since: None,
            open_until: None,
            probing: false,
        }
    }

    /// Restores state another instance left in the subscription record.
    pub(crate) fn restore(
        &mut self,
        open_until: Option<DateTime<Utc>>,
        failing_since: Option<DateTime<Utc>>,
    ) {
        self.open_until = open_until;
        self.failing_since = failing_since;
        if open_until.is_some() {
            self.consecutive_failures = self.threshold;
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    pub(crate) fn admit(&mut self, now: DateTime<Utc>) -> Admit {
        match self.open_until {
            None => Admit::Go,
            Some(_) if self.probing => Admit::Defer,
            Some(until) if now >= until => {
                self.probing = true;
                Admit::Probe
            }
            Some(_) => Admit::Defer,
        }
    }

    pub fn record(&mut self, success: bool, now: DateTime<Utc>) -> Option<Transition> {
        self.probing = false;
        if success {
            self.consecutive_failures = 0;
            self.failing_since = None;
            return self.open_until.take().map(|_| Transition::Closed);
        }
        self.consecutive_failures += 1;
        let since = *self.failing_since.get_or_insert(now);
        if !self.disable_after.is_zero()
            && (now - since).to_std().unwrap_or_default() >= self.disable_after
        {
            return Some(Transition::Exhausted);
        }
        if self.threshold > 0 && self.consecutive_failures >= self.threshold {
            let was_open = self.open_until.is_some();
            self.open_until =
                Some(now + chrono::Duration::from_std(self.cooldown).unwrap_or_default());
            if !was_open {
                return Some(Transition::Opened);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(
            RateLimit {
                per_second: 20,
                burst: 5,
            },
            start,
        );
        for _ in 0..5 {
            assert!(b.take(start).is_ok());
        }
        let wait = b.take(start).unwrap_err();
        assert!(wait > Duration::from_millis(40) && wait <= Duration::from_millis(50));
        assert!(b.take(start + Duration::from_millis(50)).is_ok());
        // In any second after the burst, at most `per_second` more.
        let mut sent = 0;
        for ms in 0..1000 {
            if b.take(start + Duration::from_millis(51 + ms)).is_ok() {
                sent += 1;
            }
        }
        assert!((19..=20).contains(&sent), "{sent}");
    }

    #[test]
    fn breaker_opens_after_the_threshold_probes_after_cooldown_and_closes_on_success() {
        let mut c = Circuit::new(3, Duration::from_secs(10), Duration::ZERO);
        let t0 = Utc::now();
        assert_eq!(c.record(false, t0), None);
        assert_eq!(c.record(false, t0), None);
        assert_eq!(c.record(false, t0), Some(Transition::Opened));
        assert_eq!(c.admit(t0), Admit::Defer);
        let later = t0 + chrono::Duration::seconds(11);
        assert_eq!(c.admit(later), Admit::Probe);
        assert_eq!(c.admit(later), Admit::Defer, "one probe at a time");
        assert_eq!(c.record(false, later), None, "still open, cool-down again");
        assert_eq!(c.admit(later), Admit::Defer);
        let much_later = later + chrono::Duration::seconds(11);
        assert_eq!(c.admit(much_later), Admit::Probe);
        assert_eq!(c.record(true, much_later), Some(Transition::Closed));
        assert_eq!(c.admit(much_later), Admit::Go);
        assert!(c.failing_since.is_none());
    }

    #[test]
    fn failing_continuously_for_disable_after_exhausts_the_subscription() {
        let mut c = Circuit::new(0, Duration::from_secs(10), Duration::from_secs(60));
        let t0 = Utc::now();
        assert_eq!(c.record(false, t0), None);
        assert_eq!(c.record(false, t0 + chrono::Duration::seconds(30)), None);
        assert_eq!(
            c.record(false, t0 + chrono::Duration::seconds(61)),
            Some(Transition::Exhausted)
        );
        let mut c = Circuit::new(0, Duration::from_secs(10), Duration::from_secs(60));
        c.record(false, t0);
        c.record(true, t0 + chrono::Duration::seconds(30));
        assert_eq!(c.record(false, t0 + chrono::Duration::seconds(61)), None);
    }
}
