//! Log lines for conditions that last across many writes (a full disk, the series limit):
//! a sender retrying every second must not turn one condition into a flood of log lines.
//! [`FailureEpisode`] logs one WARN when an operation starts failing and one INFO when it
//! succeeds again; [`Throttle`] allows one line per interval. Owns only when to log.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The failure state of one operation (e.g. the TSDB append): WARN at the first failure,
/// DEBUG while it keeps failing, INFO at the first success after.
pub(crate) struct FailureEpisode {
    what: &'static str,
    failing: AtomicBool,
}

impl FailureEpisode {
    pub(crate) const fn new(what: &'static str) -> FailureEpisode {
        FailureEpisode {
            what,
            failing: AtomicBool::new(false),
        }
    }

    /// Notes a failure; true when it starts an episode (and was logged at WARN).
    pub(crate) fn failed(&self, err: &dyn Display) -> bool {
        let started = !self.failing.swap(true, Ordering::Relaxed);
        if started {
            tracing::warn!(
                error = %err,
                "{} failed; logged again only once it succeeds",
                self.what
            );
        } else {
            tracing::debug!(error = %err, "{} still failing", self.what);
        }
        started
    }

    /// Notes a success; true when it ends an episode (and was logged at INFO).
    pub(crate) fn succeeded(&self) -> bool {
        // The load first: successes are the common case and need not write the shared line.
        let ended =
            self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed);
        if ended {
            tracing::info!("{} succeeds again", self.what);
        }
        ended
    }

    /// Notes the outcome of `result` and returns it.
    pub(crate) fn observe<T, E: Display>(&self, result: Result<T, E>) -> Result<T, E> {
        match &result {
            Ok(_) => {
                self.succeeded();
            }
            Err(e) => {
                self.failed(e);
            }
        }
        result
    }
}

/// At most one log line per interval (the line carries a running total of the events).
pub(crate) struct Throttle {
    interval: Duration,
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    pub(crate) const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: Mutex::new(None),
        }
    }

    /// Whether an event at `now` may be logged.
    pub(crate) fn allow(&self, now: Instant) -> bool {
        let mut last = self.last.lock();
        if last.is_some_and(|t| now.saturating_duration_since(t) < self.interval) {
            return false;
        }
        *last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_failure_episode() {
        let e = FailureEpisode::new("test write");
        assert!(!e.succeeded(), "no episode to end yet");
        assert!(e.failed(&"disk full"));
        assert!(!e.failed(&"disk full"));
        assert!(!e.failed(&"disk full"));
        assert!(e.succeeded());
        assert!(!e.succeeded());
        assert!(e.failed(&"disk full"), "a new episode warns again");
    }

    #[test]
    fn observe_tracks_results() {
        let e = FailureEpisode::new("test write");
        assert!(e.observe::<(), _>(Err("x")).is_err());
        assert_eq!(e.observe::<_, &str>(Ok(3)), Ok(3));
        assert!(!e.succeeded(), "the Ok above ended the episode");
    }

    #[test]
    fn throttle_allows_one_line_per_interval() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(t.allow(t0));
        assert!(!t.allow(t0 + Duration::from_secs(1)));
        assert!(!t.allow(t0 + Duration::from_secs(59)));
        assert!(t.allow(t0 + Duration::from_secs(60)));
        assert!(!t.allow(t0 + Duration::from_secs(61)));
        assert!(t.allow(t0 + Duration::from_secs(200)));
    }
}
