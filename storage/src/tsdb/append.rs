//! Sample validation: decides for each appended sample whether it is new in-order data, new
//! out-of-order data, an idempotent repeat, or rejected (too old, out of order, duplicate
//! timestamp with a different value). Owns these rules only; looking up existing samples is
//! delegated to the caller (head + persisted chunks), and nothing here writes anything.
//!
//! Rules (as in Prometheus): a repeat of an existing (t, value bits) is a no-op that counts as
//! written; the same t with different bits is a duplicate; a sample older than the series' last
//! one is accepted only within the out-of-order window measured from that last sample.

use std::collections::BTreeMap;

use crate::tsdb::partition::{MAX_T, MIN_T};
use crate::{RejectReason, Sample, StorageError};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Samples before this are refused (retention).
    pub(crate) cutoff: i64,
    pub(crate) ooo_window_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    InOrder,
    OutOfOrder,
    /// Already stored with the same value.
    Noop,
    Reject(RejectReason),
}

/// One series' view while a batch is validated: its last sample and what this batch has
/// accepted so far, so that later samples of the same batch are judged against earlier ones.
pub(crate) struct SeriesCheck {
    last: Option<(i64, u64)>,
    /// The samples accepted, in the order accepted: sorted by t until one arrives out of
    /// order, which almost no series ever sees.
    accepted: Vec<Sample>,
    /// Every accepted sample by t, built once one arrives out of order (the list is no longer
    /// sorted then, and a batch of many must not be searched one by one).
    by_time: Option<BTreeMap<i64, u64>>,
}

impl SeriesCheck {
    /// With room for `samples` accepted samples: the caller knows how many it brings, and
    /// most are accepted.
    pub(crate) fn new(last: Option<(i64, u64)>, samples: usize) -> SeriesCheck {
        SeriesCheck {
            last,
            accepted: Vec::with_capacity(samples),
            by_time: None,
        }
    }

    /// The samples accepted (new in-order and out-of-order data), in the order accepted.
    pub(crate) fn accepted(&self) -> &[Sample] {
        &self.accepted
    }

    pub(crate) fn into_accepted(self) -> Vec<Sample> {
        self.accepted
    }

    /// Judges one sample. `stored(t)` returns the value bits already stored at `t`, if any; it
    /// is only consulted for samples older than the last one.
    pub(crate) fn check(
        &mut self,
        limits: Limits,
        s: Sample,
        stored: impl FnOnce() -> Result<Option<u64>, StorageError>,
    ) -> Result<Verdict, StorageError> {
        let (t, bits) = (s.t, s.v.to_bits());
        if t < limits.cutoff || !(MIN_T..=MAX_T).contains(&t) {
            return Ok(Verdict::Reject(RejectReason::TooOld));
        }
        let verdict = match self.last {
            None => Verdict::InOrder,
            Some((last_t, _)) if t > last_t => Verdict::InOrder,
            Some((last_t, last_bits)) if t == last_t => Self::repeat(last_bits, bits),
            Some((last_t, _)) if t < last_t.saturating_sub(limits.ooo_window_ms) => {
                Verdict::Reject(RejectReason::OutOfOrder)
            }
            Some(_) => match self.accepted_at(t) {
                Some(existing) => Self::repeat(existing, bits),
                None => match stored()? {
                    Some(existing) => Self::repeat(existing, bits),
                    None => Verdict::OutOfOrder,
                },
            },
        };
        match verdict {
            Verdict::InOrder => {
                self.last = Some((t, bits));
                self.accept(s);
            }
            Verdict::OutOfOrder => {
                let index = self.by_time.get_or_insert_with(|| {
                    self.accepted.iter().map(|a| (a.t, a.v.to_bits())).collect()
                });
                index.insert(t, bits);
                self.accepted.push(s);
            }
            Verdict::Noop | Verdict::Reject(_) => {}
        }
        Ok(verdict)
    }

    fn accept(&mut self, s: Sample) {
        if let Some(index) = &mut self.by_time {
            index.insert(s.t, s.v.to_bits());
        }
        self.accepted.push(s);
    }

    fn accepted_at(&self, t: i64) -> Option<u64> {
        match &self.by_time {
            Some(index) => index.get(&t).copied(),
            None => self
                .accepted
                .binary_search_by_key(&t, |a| a.t)
                .ok()
                .map(|i| self.accepted[i].v.to_bits()),
        }
    }

    fn repeat(existing: u64, bits: u64) -> Verdict {
        if existing == bits {
            Verdict::Noop
        } else {
            Verdict::Reject(RejectReason::DuplicateTimestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        cutoff: 1000,
        ooo_window_ms: 100,
    };

    fn check(c: &mut SeriesCheck, t: i64, v: f64, stored: Option<f64>) -> Verdict {
        c.check(LIMITS, Sample { t, v }, || Ok(stored.map(f64::to_bits)))
            .unwrap()
    }

    #[test]
    fn classifies_samples() {
        let mut c = SeriesCheck::new(Some((2000, 1.0f64.to_bits())), 0);
        assert_eq!(
            check(&mut c, 999, 1.0, None),
            Verdict::Reject(RejectReason::TooOld)
        );
        assert_eq!(check(&mut c, 2000, 1.0, None), Verdict::Noop);
        assert_eq!(
            check(&mut c, 2000, 2.0, None),
            Verdict::Reject(RejectReason::DuplicateTimestamp)
        );
        assert_eq!(
            check(&mut c, 1899, 1.0, None),
            Verdict::Reject(RejectReason::OutOfOrder)
        );
        assert_eq!(check(&mut c, 1900, 1.0, None), Verdict::OutOfOrder);
        assert_eq!(check(&mut c, 1950, 5.0, Some(5.0)), Verdict::Noop);
        assert_eq!(
            check(&mut c, 1960, 5.0, Some(6.0)),
            Verdict::Reject(RejectReason::DuplicateTimestamp)
        );
        // Judged against this batch's own earlier samples, without asking the store.
        assert_eq!(check(&mut c, 1900, 1.0, None), Verdict::Noop);
        assert_eq!(
            check(&mut c, 1900, 9.0, None),
            Verdict::Reject(RejectReason::DuplicateTimestamp)
        );
        assert_eq!(check(&mut c, 2100, 3.0, None), Verdict::InOrder);
        assert_eq!(check(&mut c, 2100, 3.0, None), Verdict::Noop);
        // The window now counts from 2100.
        assert_eq!(
            check(&mut c, 1950, 1.0, None),
            Verdict::Reject(RejectReason::OutOfOrder)
        );
    }

    #[test]
    fn nan_repeats_compare_by_bits() {
        let stale = f64::from_bits(crate::STALE_NAN_BITS);
        let mut c = SeriesCheck::new(Some((2000, crate::STALE_NAN_BITS)), 0);
        assert_eq!(check(&mut c, 2000, stale, None), Verdict::Noop);
        assert_eq!(
            check(&mut c, 2000, f64::NAN, None),
            Verdict::Reject(RejectReason::DuplicateTimestamp)
        );
    }

    #[test]
    fn new_series_accepts_anything_in_bounds() {
        let mut c = SeriesCheck::new(None, 0);
        assert_eq!(check(&mut c, 5000, 1.0, None), Verdict::InOrder);
        assert_eq!(
            check(&mut c, MAX_T + 1, 1.0, None),
            Verdict::Reject(RejectReason::TooOld)
        );
        assert_eq!(check(&mut c, 4950, 1.0, None), Verdict::OutOfOrder);
    }
}
