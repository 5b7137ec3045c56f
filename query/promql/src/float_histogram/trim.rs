//! Bucket trimming behind the `</` (keep what lies below a cut) and `>/` (keep what lies above)
//! operators of Prometheus 3. A bucket cut in two keeps the share its interpolation gives
//! (exponential for exponential buckets, linear for custom buckets and the zero bucket), and
//! the sum is re-estimated from what is kept. Pure value logic, like the parent module.

use super::{Expanded, FloatHistogram};

/// Which side of the cut survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrimSide {
    /// `</`: observations below the cut.
    KeepBelow,
    /// `>/`: observations above the cut.
    KeepAbove,
}

/// How observations are assumed to spread inside a bucket.
#[derive(Clone, Copy)]
enum Spread {
    Linear,
    Exponential,
}

/// Running result of a trim: what is kept, and whether anything was removed at all.
struct Trimmer {
    cut: f64,
    side: TrimSide,
    count: f64,
    sum: f64,
    removed_any: bool,
}

impl Trimmer {
    /// Keeps `fraction` of a bucket holding `count`, whose kept observations are estimated
    /// at `at`; returns the kept count.
    fn keep(&mut self, count: f64, fraction: f64, at: f64) -> f64 {
        let kept = count * fraction;
        if kept != count {
            self.removed_any = true;
        }
        if kept != 0.0 {
            self.count += kept;
            self.sum += kept * at;
        }
        kept
    }

    /// A bucket with finite bounds `lower < upper` (or a zero-width zero bucket).
    fn finite(&mut self, lower: f64, upper: f64, count: f64, spread: Spread) -> f64 {
        let cut = self.cut;
        let below = if cut >= upper {
            1.0
        } else if cut <= lower {
            0.0
        } else {
            match spread {
                Spread::Linear => (cut - lower) / (upper - lower),
                Spread::Exponential => {
                    (log_scale(cut) - log_scale(lower)) / (log_scale(upper) - log_scale(lower))
                }
            }
        };
        let (fraction, from, to) = match self.side {
            TrimSide::KeepBelow => (below, lower, upper.min(cut)),
            TrimSide::KeepAbove => (1.0 - below, lower.max(cut), upper),
        };
        let at = match spread {
            Spread::Linear => (from + to) / 2.0,
            Spread::Exponential => from.signum() * (from.abs() * to.abs()).sqrt(),
        };
        self.keep(count, fraction, at)
    }

    /// A custom bucket, whose outermost bounds may be infinite. The open-ended buckets keep
    /// nothing on their unbounded side; a first bucket with a positive upper bound is taken
    /// to start at 0, as histogram_quantile does.
    fn custom(&mut self, lower: f64, upper: f64, count: f64) -> f64 {
        let cut = self.cut;
        let unbounded_below = lower == f64::NEG_INFINITY;
        let unbounded_above = upper == f64::INFINITY;
        match self.side {
            TrimSide::KeepBelow if unbounded_above => self.keep(count, 0.0, 0.0),
            TrimSide::KeepBelow if unbounded_below && upper > 0.0 => {
                self.finite(0.0, upper, count, Spread::Linear)
            }
            TrimSide::KeepBelow if unbounded_below => self.keep(count, 1.0, upper.min(cut)),
            TrimSide::KeepAbove if unbounded_below => {
                if !unbounded_above && upper > 0.0 && cut >= 0.0 {
                    self.finite(0.0, upper, count, Spread::Linear)
                } else {
                    self.keep(count, 0.0, 0.0)
                }
            }
            TrimSide::KeepAbove if unbounded_above => self.keep(count, 1.0, lower.max(cut)),
            _ => self.finite(lower, upper, count, Spread::Linear),
        }
    }
}

/// A monotonic logarithmic scale over either sign (exponential buckets never straddle 0).
fn log_scale(v: f64) -> f64 {
    if v > 0.0 {
        v.ln()
    } else {
        -(-v).ln()
    }
}

impl FloatHistogram {
    /// The histogram restricted to one side of `cut`. When nothing is removed the histogram is
    /// returned unchanged (its recorded sum is better than any estimate); a NaN cut removes
    /// nothing.
    pub(crate) fn trim(&self, cut: f64, side: TrimSide) -> FloatHistogram {
        let (keeps_everything, keeps_nothing) = match side {
            TrimSide::KeepBelow => (cut == f64::INFINITY, cut == f64::NEG_INFINITY),
            TrimSide::KeepAbove => (cut == f64::NEG_INFINITY, cut == f64::INFINITY),
        };
        if cut.is_nan() || keeps_everything {
            return self.clone();
        }
        if keeps_nothing {
            return self.empty_like();
        }
        let mut t = Trimmer {
            cut,
            side,
            count: 0.0,
            sum: 0.0,
            removed_any: false,
        };
        let custom = self.uses_custom_buckets();
        let positive: Expanded = self
            .positive()
            .into_iter()
            .map(|(idx, c)| {
                let (lower, upper) = (self.upper(idx - 1), self.upper(idx));
                let kept = if custom {
                    t.custom(lower, upper, c)
                } else {
                    t.finite(lower, upper, c, Spread::Exponential)
                };
                (idx, kept)
            })
            .collect();
        let negative: Expanded = self
            .negative()
            .into_iter()
            .map(|(idx, c)| {
                let (lower, upper) = (-self.upper(idx), -self.upper(idx - 1));
                (idx, t.finite(lower, upper, c, Spread::Exponential))
            })
            .collect();
        let mut zero_count = 0.0;
        if !custom {
            // With buckets on one side only, the zero bucket's observations are taken to lie
            // on that side too (as in histogram_fraction).
            let (mut lower, mut upper) = (-self.zero_threshold, self.zero_threshold);
            if self.negative_buckets.is_empty() && !self.positive_buckets.is_empty() {
                lower = 0.0;
            } else if self.positive_buckets.is_empty() && !self.negative_buckets.is_empty() {
                upper = 0.0;
            }
            zero_count = t.finite(lower, upper, self.zero_count, Spread::Linear);
        }
        if !t.removed_any {
            return self.clone();
        }
        let mut out = self.empty_like();
        out.set_positive(&positive);
        out.set_negative(&negative);
        out.zero_count = zero_count;
        out.count = t.count;
        out.sum = t.sum;
        out.compact();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Span, CUSTOM_BUCKETS_SCHEMA};
    use super::*;

    fn exponential() -> FloatHistogram {
        // Buckets (0.5,1] (1,2] (2,4] (4,8] and [-1,-0.5) [-2,-1), zero bucket ±0.001.
        FloatHistogram {
            schema: 0,
            zero_threshold: 0.001,
            zero_count: 1.0,
            count: 34.0,
            sum: 123.75,
            positive_spans: vec![Span {
                offset: 0,
                length: 4,
            }],
            positive_buckets: vec![2.0, 4.0, 8.0, 16.0],
            negative_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            negative_buckets: vec![1.0, 2.0],
            ..Default::default()
        }
    }

    fn custom(bounds: &[f64], buckets: &[f64], sum: f64) -> FloatHistogram {
        FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: bounds.to_vec(),
            count: buckets.iter().sum(),
            sum,
            positive_spans: vec![Span {
                offset: 0,
                length: buckets.len() as u32,
            }],
            positive_buckets: buckets.to_vec(),
            ..Default::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn exponential_cut_inside_a_bucket_interpolates_on_a_log_scale() {
        let h = exponential().trim(2f64.sqrt(), TrimSide::KeepAbove);
        // Half of (1,2] survives; the sum uses geometric bucket midpoints.
        assert!(close(h.count, 26.0));
        let want = 2.0 * 2f64.powf(0.75) + 8.0 * 8f64.sqrt() + 16.0 * 32f64.sqrt();
        assert!(close(h.sum, want), "{} vs {want}", h.sum);
        assert_eq!(h.positive_buckets.len(), 3);
        assert!(h.negative_buckets.is_empty());
        assert_eq!(h.zero_count, 0.0);
    }

    #[test]
    fn cut_at_zero_splits_the_symmetric_zero_bucket() {
        let h = exponential().trim(0.0, TrimSide::KeepBelow);
        assert!(close(h.count, 3.5));
        assert!(close(h.zero_count, 0.5));
        assert!(h.positive_buckets.is_empty());
        let want = -(0.5f64.sqrt() + 2.0 * 2f64.sqrt()) - 0.5 * 0.0005;
        assert!(close(h.sum, want));
    }

    #[test]
    fn removing_nothing_keeps_the_recorded_sum() {
        let h = exponential();
        assert_eq!(h.trim(f64::INFINITY, TrimSide::KeepBelow), h);
        assert_eq!(h.trim(-5.0, TrimSide::KeepAbove), h);
        assert_eq!(h.trim(f64::NAN, TrimSide::KeepAbove), h);
        let empty = h.trim(f64::NEG_INFINITY, TrimSide::KeepBelow);
        assert_eq!((empty.count, empty.sum, empty.zero_count), (0.0, 0.0, 0.0));
        assert_eq!(empty.zero_threshold, 0.001);
    }

    #[test]
    fn custom_buckets_interpolate_linearly_and_drop_the_open_ended_side() {
        let h = custom(&[5.0, 10.0, 15.0, 20.0], &[1.0, 6.0, 4.0, 3.0, 1.0], 172.5);
        let below = h.trim(13.0, TrimSide::KeepBelow);
        assert!(close(below.count, 9.4));
        // First bucket counted at 2.5 (it starts at 0), then 7.5, then (10+13)/2.
        assert!(close(below.sum, 2.5 + 6.0 * 7.5 + 2.4 * 11.5));
        let above = h.trim(13.0, TrimSide::KeepAbove);
        assert!(close(above.count, 5.6));
        // The +Inf bucket is counted at its lower bound.
        assert!(close(above.sum, 1.6 * 14.0 + 3.0 * 17.5 + 20.0));
        // Above everything finite, the +Inf bucket is still kept, counted at the cut.
        let far = h.trim(50.0, TrimSide::KeepAbove);
        assert!(close(far.count, 1.0) && close(far.sum, 50.0));
        assert!(close(h.trim(50.0, TrimSide::KeepBelow).count, 14.0));
    }

    #[test]
    fn negative_custom_first_bucket_is_kept_whole_below_its_bound() {
        let h = custom(&[-5.0], &[1.0, 100.0], 33.0);
        let below = h.trim(-10.0, TrimSide::KeepBelow);
        assert!(close(below.count, 1.0) && close(below.sum, -10.0));
        let above = h.trim(-2.0, TrimSide::KeepAbove);
        assert!(close(above.count, 100.0) && close(above.sum, -200.0));
    }
}
