//! The trace store's time partitions: each holds the spans that *start* in its time range, in
//! a `spans` and an `index` column family of its own (the catalog of services, operations and
//! attribute keys lives in the index family under its own prefix), so retention drops whole
//! column families instead of deleting span by span. Owns partition naming, widths, lookup by
//! time and dropping; key layouts inside a partition are `keys`'.
//!
//! Widths divide a day (1 h … 24 h), the largest at most an eighth of the retention, so
//! retention is kept to within an eighth (a day at most). A width chosen under an earlier
//! retention stays with its partitions; a span goes to the partition that holds its start time,
//! or a new one aligned to the current width.
//!
//! Stores written before partitions keep their `spans`, `index` and `catalog` families as one
//! legacy partition covering all time, read after the others and dropped whole once its newest
//! span is past retention.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::db::Db;
use crate::traces::keys;
use crate::StorageError;

const NS: u64 = 1_000_000_000;
const HOUR_NS: u64 = 3600 * NS;
const DAY_NS: u64 = 24 * HOUR_NS;

/// The families of the store before it was partitioned.
pub(crate) const LEGACY_SPANS: &str = "spans";
pub(crate) const LEGACY_INDEX: &str = "index";
pub(crate) const LEGACY_CATALOG: &str = "catalog";

/// Catalog keys in a partition's index family start with this byte, which no index key does.
const CATALOG_PREFIX: u8 = b'C';

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Part {
    /// Spans starting in [start_ns, end_ns).
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) legacy: bool,
    /// Created with duration keys for every span (see `keys`).
    pub(crate) durations: bool,
    /// Created with event keys for every span (see `keys`).
    pub(crate) events: bool,
    /// Created with start-only keys (see `keys`): every index key but the time key ends in the
    /// start alone. A partition keeps the form it was created with, so a start never holds
    /// keys of both forms.
    pub(crate) start_only: bool,
}

impl Part {
    pub(crate) fn spans_cf(&self) -> String {
        self.family("spans", LEGACY_SPANS)
    }

    pub(crate) fn index_cf(&self) -> String {
        self.family("index", LEGACY_INDEX)
    }

    /// `<kind>_<start s>_<width s>`, or the legacy partition's own name.
    fn family(&self, kind: &str, legacy: &str) -> String {
        if self.legacy {
            legacy.into()
        } else {
            format!(
                "{kind}_{}_{}",
                self.start_ns / NS,
                (self.end_ns - self.start_ns) / NS
            )
        }
    }

    pub(crate) fn catalog_cf(&self) -> String {
        if self.legacy {
            LEGACY_CATALOG.into()
        } else {
            self.index_cf()
        }
    }

    /// A catalog key as this partition stores it.
    pub(crate) fn catalog_key(&self, key: &[u8]) -> Vec<u8> {
        if self.legacy {
            key.to_vec()
        } else {
            [&[CATALOG_PREFIX][..], key].concat()
        }
    }

    fn names(&self) -> Vec<String> {
        if self.legacy {
            vec![
                LEGACY_SPANS.into(),
                LEGACY_INDEX.into(),
                LEGACY_CATALOG.into(),
            ]
        } else {
            vec![self.spans_cf(), self.index_cf()]
        }
    }

    fn from_spans_cf(name: &str) -> Option<Part> {
        let rest = name.strip_prefix("spans_")?;
        let (start, len) = rest.split_once('_')?;
        let (start, len): (u64, u64) = (start.parse().ok()?, len.parse().ok()?);
        (len > 0).then_some(Part {
            start_ns: start.checked_mul(NS)?,
            end_ns: start.checked_add(len)?.checked_mul(NS)?,
            legacy: false,
            durations: false,
            events: false,
            start_only: false,
        })
    }
}

/// The partition width for a retention: the largest divisor of a day that is at most an eighth
/// of it, at least an hour.
pub(crate) fn width_for(retention_ns: u64) -> u64 {
    [24, 12, 8, 6, 4, 3, 2, 1]
        .into_iter()
        .map(|h| h * HOUR_NS)
        .find(|w| *w <= retention_ns / 8)
        .unwrap_or(HOUR_NS)
        .min(DAY_NS)
}

pub(crate) struct Partitions {
    /// Newest start first; the legacy partition (start 0) last.
    parts: RwLock<Vec<Arc<Part>>>,
    width: u64,
}

impl Partitions {
    /// The partitions whose families exist among `names`; `has_marker` tells whether a
    /// partition's catalog holds a layout entry (say, that it was created with duration keys).
    pub(crate) fn new(
        names: &[String],
        width: u64,
        has_marker: impl Fn(&Part, &[u8]) -> Result<bool, StorageError>,
    ) -> Result<Partitions, StorageError> {
        let mut parts = Vec::new();
        for mut part in names
            .iter()
            .filter_map(|n| Part::from_spans_cf(n))
            .filter(|p| names.contains(&p.index_cf()))
        {
            part.durations = has_marker(&part, &keys::catalog_duration_layout())?;
            part.events = has_marker(&part, &keys::catalog_event_layout())?;
            part.start_only = has_marker(&part, &keys::catalog_start_only_layout())?;
            parts.push(Arc::new(part));
        }
        if names.iter().any(|n| n == LEGACY_SPANS) {
            parts.push(Arc::new(Part {
                start_ns: 0,
                end_ns: u64::MAX,
                legacy: true,
                durations: false,
                events: false,
                start_only: false,
            }));
        }
        parts.sort_by_key(|p| std::cmp::Reverse(p.start_ns));
        Ok(Partitions {
            parts: RwLock::new(parts),
            width,
        })
    }

    /// Whether a column family holds a partition's spans (by trace id).
    pub(crate) fn is_spans_cf(name: &str) -> bool {
        name == LEGACY_SPANS || Part::from_spans_cf(name).is_some()
    }

    /// Whether a column family belongs to a partition (to open it with the store).
    pub(crate) fn is_partition_cf(name: &str) -> bool {
        [LEGACY_SPANS, LEGACY_INDEX, LEGACY_CATALOG].contains(&name)
            || Part::from_spans_cf(name).is_some()
            || name
                .strip_prefix("index_")
                .and_then(|rest| Part::from_spans_cf(&format!("spans_{rest}")))
                .is_some()
    }

    /// The partition a span starting at `t` goes to, created (with its families) if needed.
    pub(crate) fn for_time(
        &self,
        db: &Db,
        t: u64,
        options: impl Fn(&str) -> rocksdb::Options,
    ) -> Result<Arc<Part>, StorageError> {
        let holding = |parts: &[Arc<Part>]| {
            parts
                .iter()
                .find(|p| !p.legacy && p.start_ns <= t && t < p.end_ns)
                .cloned()
        };
        if let Some(p) = holding(&self.parts.read()) {
            return Ok(p);
        }
        let mut parts = self.parts.write();
        if let Some(p) = holding(&parts) {
            return Ok(p);
        }
        let start = t - t % self.width;
        let part = Arc::new(Part {
            start_ns: start,
            end_ns: start.saturating_add(self.width),
            legacy: false,
            durations: true,
            events: true,
            start_only: true,
        });
        for name in part.names() {
            if db.cf_handle(&name).is_none() {
                db.create_cf(&name, &options(&name))?;
            }
        }
        // Before any span: every span of the partition has its duration and event keys, in
        // the start-only form.
        let index_cf = crate::db::cf(db, &part.index_cf())?;
        for marker in [
            keys::catalog_duration_layout(),
            keys::catalog_event_layout(),
            keys::catalog_start_only_layout(),
        ] {
            db.put_cf(&index_cf, part.catalog_key(&marker), b"")?;
        }
        parts.push(part.clone());
        parts.sort_by_key(|p| std::cmp::Reverse(p.start_ns));
        Ok(part)
    }

    /// Partitions that may hold spans starting in [lo, hi], newest first.
    pub(crate) fn overlapping(&self, lo: u64, hi: u64) -> Vec<Arc<Part>> {
        self.parts
            .read()
            .iter()
            .filter(|p| p.start_ns <= hi && lo < p.end_ns)
            .cloned()
            .collect()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Part>> {
        self.parts.read().clone()
    }

    /// Drops a partition's families: frees its files without rewriting anything.
    pub(crate) fn drop_part(&self, db: &Db, part: &Arc<Part>) -> Result<(), StorageError> {
        self.parts.write().retain(|p| p != part);
        for name in part.names() {
            if db.cf_handle(&name).is_some() {
                db.drop_cf(&name)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_divide_a_day_and_keep_retention_within_an_eighth() {
        assert_eq!(width_for(15 * DAY_NS), DAY_NS);
        assert_eq!(width_for(2 * DAY_NS), 6 * HOUR_NS);
        assert_eq!(width_for(HOUR_NS), HOUR_NS);
        assert_eq!(width_for(8 * HOUR_NS), HOUR_NS);
        assert_eq!(width_for(24 * HOUR_NS), 3 * HOUR_NS);
    }

    #[test]
    fn names_round_trip_and_other_families_are_not_partitions() {
        let p = Part {
            start_ns: 86_400 * NS,
            end_ns: 2 * 86_400 * NS,
            legacy: false,
            durations: false,
            events: false,
            start_only: false,
        };
        assert_eq!(p.spans_cf(), "spans_86400_86400");
        assert_eq!(Part::from_spans_cf(&p.spans_cf()), Some(p));
        for name in [
            "spans_86400_86400",
            "index_86400_86400",
            "spans",
            "index",
            "catalog",
        ] {
            assert!(Partitions::is_partition_cf(name), "{name}");
        }
        for name in ["origins", "spans_x_1", "index_1", "spans_5_0", "default"] {
            assert!(!Partitions::is_partition_cf(name), "{name}");
        }
    }
}
