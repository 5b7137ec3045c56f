//! The label sets remote-write senders repeat, found by their bytes on the wire.
//!
//! A Prometheus sender sends every sample as a series entry of its own, its label set in
//! full each time, so walking, checking and encoding those labels and then finding the
//! series in the TSDB by them was most of what a sample cost. A label set whose exact wire
//! bytes were seen before is taken from here instead: already checked, already encoded, with
//! the TSDB's reference to its series ([`SeriesRef`], which the TSDB checks before use).
//!
//! Owns the map, its bound and what an append teaches it. Does not decide what a valid label
//! set is: only label sets the decoder accepted are learnt, and only once the TSDB took them.
//!
//! Memory is bounded by [`BUDGET_BYTES`] in two generations, as VictoriaMetrics' working-set
//! caches are: entries are learnt into the current one, which becomes the previous one once
//! it holds half the budget; an entry found in the previous one moves back to the current
//! one. When more label sets come round than fit (every miss a lost insertion), only a
//! share of them, chosen by hash, is admitted, so that the share that fits keeps hitting; a
//! generation also ends after some lookups per entry, full or not, so that the share widens
//! again once such a load is gone.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::hash_table::HashTable;
use parking_lot::{RwLock, RwLockReadGuard};
use storage::{EncodedLabels, SeriesRef};

/// The cache's memory, both generations: ~300 bytes a node-exporter-like label set (its wire
/// bytes and its encoding), so some 80k series.
pub(crate) const BUDGET_BYTES: usize = 24 << 20;

/// What an entry takes beyond its two byte strings: its hash, serial, reference, boxes and
/// table slot.
const ENTRY_OVERHEAD: usize = 80;

/// Admission never narrows below one label set in 2^MAX_SHARE_BITS.
const MAX_SHARE_BITS: u32 = 8;

/// A generation ends after this many lookups per entry it holds (or per [`MIN_ENTRIES`]),
/// full or not.
const ROUNDS_PER_GENERATION: usize = 16;
const MIN_ENTRIES: usize = 4096;

struct Entry {
    hash: u64,
    /// Unique among all entries ever learnt: how an append's notes find their entry again.
    serial: u64,
    wire: Box<[u8]>,
    labels: EncodedLabels,
    series: Option<SeriesRef>,
}

/// The label sets of remote-write senders. See the module doc.
pub struct SeriesCache {
    hasher: foldhash::fast::FixedState,
    budget: usize,
    state: RwLock<Generations>,
    /// Since the current generation began: lookups that found their label set, that did
    /// not and learnt it, that did not and were not admitted.
    found: AtomicUsize,
    learnt: AtomicUsize,
    refused: AtomicUsize,
    /// Entries in the current generation.
    entries: AtomicUsize,
}

#[derive(Default)]
struct Generations {
    current: HashTable<Entry>,
    previous: HashTable<Entry>,
    /// Bytes held by `current`.
    bytes: usize,
    /// Label sets admitted: those whose hash's top `share_bits` bits are zero.
    share_bits: u32,
    next_serial: u64,
}

/// A label set found: its encoding, its series' reference, and where it was found.
pub(crate) struct Found<'a> {
    pub(crate) labels: &'a EncodedLabels,
    pub(crate) series: Option<SeriesRef>,
    at: Handle,
}

#[derive(Clone, Copy, Debug)]
struct Handle {
    hash: u64,
    serial: u64,
    previous: bool,
}

/// What one request's decoding saw of the cache, to learn from once its append is done.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// Entries of the batch found, by index in the batch.
    found: Vec<(usize, Handle)>,
    /// Entries not found and admitted: index, hash, wire bytes, label set.
    missed: Vec<(usize, u64, Box<[u8]>, EncodedLabels)>,
    /// Not found and not admitted.
    refused: usize,
}

impl Default for SeriesCache {
    fn default() -> SeriesCache {
        // A seed of the process's own: a sender cannot aim its label sets at one slot.
        let seed = foldhash::fast::RandomState::default().hash_one(0u64);
        SeriesCache::new(BUDGET_BYTES, seed)
    }
}

impl SeriesCache {
    fn new(budget: usize, seed: u64) -> SeriesCache {
        SeriesCache {
            hasher: foldhash::fast::FixedState::with_seed(seed),
            budget,
            state: RwLock::default(),
            found: AtomicUsize::new(0),
            learnt: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
        }
    }

    /// A view for one request's lookups (appends learning meanwhile wait for it).
    pub(crate) fn read(&self) -> View<'_> {
        View {
            cache: self,
            state: self.state.read(),
        }
    }

    /// Learns from a request's append: the label sets it missed and the references the TSDB
    /// gave its entries (`refs`, by entry index).
    pub(crate) fn learn(&self, notes: Notes, refs: &[(usize, SeriesRef)]) {
        let found = self.found.fetch_add(notes.found.len(), Ordering::Relaxed);
        let learnt = self.learnt.fetch_add(notes.missed.len(), Ordering::Relaxed);
        let refused = self.refused.fetch_add(notes.refused, Ordering::Relaxed);
        // A generation that does not fill still ends after a while, so that a share
        // narrowed under a load that no longer comes widens again.
        let entries = self.entries.load(Ordering::Relaxed);
        let worn = found + learnt + refused > ROUNDS_PER_GENERATION * entries.max(MIN_ENTRIES);
        let promoted = notes.found.iter().any(|(_, at)| at.previous);
        // The steady state: every entry found, its reference still good.
        if notes.missed.is_empty() && !promoted && refs.is_empty() && !worn {
            return;
        }
        let refs: HashMap<usize, SeriesRef> = refs.iter().copied().collect();
        let mut g = self.state.write();
        for (entry, at) in notes.found {
            let renewed = refs.get(&entry).copied();
            if at.previous {
                let old = g.previous.find_entry(at.hash, |e| e.serial == at.serial);
                if let Ok(old) = old {
                    let (mut e, _) = old.remove();
                    e.series = renewed.or(e.series);
                    self.insert(&mut g, e);
                }
            } else if let (Some(series), Some(e)) = (
                renewed,
                g.current.find_mut(at.hash, |e| e.serial == at.serial),
            ) {
                // Its series left memory and came back, or was looked up afresh.
                e.series = Some(series);
            }
        }
        for (entry, hash, wire, labels) in notes.missed {
            if g.current.find(hash, |e| e.wire == wire).is_none() {
                let serial = g.next_serial;
                g.next_serial += 1;
                let series = refs.get(&entry).copied();
                let e = Entry {
                    hash,
                    serial,
                    wire,
                    labels,
                    series,
                };
                self.insert(&mut g, e);
            }
        }
        if worn {
            self.rotate(&mut g, false);
        }
        self.entries.store(g.current.len(), Ordering::Relaxed);
    }

    /// Adds to the current generation, starting a new one once it holds half the budget.
    fn insert(&self, g: &mut Generations, e: Entry) {
        g.bytes += e.wire.len() + e.labels.size() + ENTRY_OVERHEAD;
        g.current.insert_unique(e.hash, e, |e| e.hash);
        if g.bytes > self.budget / 2 {
            self.rotate(g, true);
        }
    }

    /// Starts a new generation, the current one `full` or worn by lookups. More learnt than
    /// found in a full one: more label sets come round than fit, so the share admitted
    /// narrows. One that never filled while some were refused: it widens.
    fn rotate(&self, g: &mut Generations, full: bool) {
        let found = self.found.swap(0, Ordering::Relaxed);
        let learnt = self.learnt.swap(0, Ordering::Relaxed);
        let refused = self.refused.swap(0, Ordering::Relaxed);
        if full && learnt > found {
            g.share_bits = (g.share_bits + 1).min(MAX_SHARE_BITS);
        } else if !full && refused > 0 {
            g.share_bits = g.share_bits.saturating_sub(1);
        }
        g.previous = std::mem::take(&mut g.current);
        g.bytes = 0;
    }
}

impl Generations {
    fn admits(&self, hash: u64) -> bool {
        self.share_bits == 0 || hash >> (64 - self.share_bits) == 0
    }
}

/// The cache as one request's decoding reads it.
pub(crate) struct View<'a> {
    cache: &'a SeriesCache,
    state: RwLockReadGuard<'a, Generations>,
}

impl View<'_> {
    /// The label set whose wire bytes are `wire`, if learnt; else, if it would be learnt,
    /// its hash, for [`Notes::missed`].
    pub(crate) fn get(&self, wire: &[u8]) -> Result<Found<'_>, Option<u64>> {
        let hash = self.cache.hasher.hash_one(wire);
        let same = |e: &Entry| *e.wire == *wire;
        let (e, previous) = match self.state.current.find(hash, same) {
            Some(e) => (e, false),
            None => match self.state.previous.find(hash, same) {
                Some(e) => (e, true),
                None => return Err(self.state.admits(hash).then_some(hash)),
            },
        };
        Ok(Found {
            labels: &e.labels,
            series: e.series,
            at: Handle {
                hash,
                serial: e.serial,
                previous,
            },
        })
    }
}

impl Notes {
    /// Entry `entry` of the batch was found.
    pub(crate) fn found(&mut self, entry: usize, found: &Found<'_>) {
        self.found.push((entry, found.at));
    }

    /// Entry `entry` of the batch was not found: learnt under `hash` (from [`View::get`])
    /// with its wire bytes and label set, or counted as refused when not admitted.
    pub(crate) fn missed(&mut self, entry: usize, admitted: Option<(u64, &[u8], EncodedLabels)>) {
        match admitted {
            Some((hash, wire, labels)) => self.missed.push((entry, hash, wire.into(), labels)),
            None => self.refused += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::Labels;

    fn labels(i: usize) -> EncodedLabels {
        EncodedLabels::new(&Labels::from_pairs([
            ("__name__", "up"),
            ("instance", &format!("host-{i}")),
        ]))
    }

    /// Looks up label sets `range` (their wire bytes: their number) and learns the misses, as
    /// one request would, with `refs` from its append; returns how many were found.
    fn request_with(
        cache: &SeriesCache,
        range: std::ops::Range<usize>,
        refs: &[(usize, SeriesRef)],
    ) -> usize {
        let mut notes = Notes::default();
        {
            let view = cache.read();
            for (entry, i) in range.enumerate() {
                let wire = i.to_le_bytes();
                match view.get(&wire) {
                    Ok(found) => {
                        assert_eq!(*found.labels, labels(i));
                        notes.found(entry, &found);
                    }
                    Err(hash) => notes.missed(entry, hash.map(|h| (h, &wire[..], labels(i)))),
                }
            }
        }
        let found = notes.found.len();
        cache.learn(notes, refs);
        found
    }

    fn request(cache: &SeriesCache, range: std::ops::Range<usize>) -> usize {
        request_with(cache, range, &[])
    }

    #[test]
    fn label_sets_seen_once_are_found_again() {
        let cache = SeriesCache::default();
        assert_eq!(request(&cache, 0..100), 0);
        assert_eq!(request(&cache, 0..100), 100);
        assert_eq!(request(&cache, 50..150), 50);
    }

    /// Through the decoder: a request's label sets are learnt, and found in the next one.
    #[test]
    fn the_decoder_finds_the_label_sets_of_the_request_before() {
        use crate::remote_write::proto::v1;
        use crate::remote_write::{decode, Protocol};
        use prost::Message;
        let request = |t| {
            let timeseries = (0..3)
                .map(|i| v1::TimeSeries {
                    labels: vec![
                        v1::Label {
                            name: "__name__".into(),
                            value: "up".into(),
                        },
                        v1::Label {
                            name: "instance".into(),
                            value: format!("host-{i}"),
                        },
                    ],
                    samples: vec![v1::Sample {
                        value: 1.0,
                        timestamp: t,
                    }],
                    ..Default::default()
                })
                .collect();
            let raw = v1::WriteRequest {
                timeseries,
                metadata: vec![],
            }
            .encode_to_vec();
            snap::raw::Encoder::new().compress_vec(&raw).unwrap()
        };
        let (cache, limits) = (SeriesCache::default(), crate::Limits::default());
        for t in 0..3 {
            let d = decode(Protocol::V1, &request(t), &limits, Some(&cache)).unwrap();
            let got: Vec<EncodedLabels> =
                d.series().iter().map(|s| EncodedLabels::of(&s)).collect();
            assert_eq!(got, (0..3).map(labels).collect::<Vec<_>>());
            d.teach(&cache);
            assert_eq!(cache.found.load(Ordering::Relaxed), 3 * t as usize);
        }
    }

    #[test]
    fn references_given_by_the_append_are_kept_and_renewed() {
        // A reference is only ever made by the TSDB: take two from real appends.
        let dir = tempfile::tempdir().unwrap();
        let tsdb = storage::Tsdb::open(dir.path(), storage::TsdbOptions::default()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let series_ref = |i| {
            let mut batch = storage::EncodedBatch::new();
            batch.push_encoded(&labels(i), &[storage::Sample { t: now, v: 1.0 }], &[]);
            batch.set_ref(None);
            let report = tsdb
                .append_batch(&batch, storage::AppendMode::BestEffort)
                .unwrap();
            report.series_refs[0].1
        };
        let (a, b) = (series_ref(0), series_ref(1));
        let cache = SeriesCache::default();
        let found = |cache: &SeriesCache| cache.read().get(&0usize.to_le_bytes()).ok()?.series;
        request_with(&cache, 0..1, &[(0, a)]);
        assert_eq!(found(&cache), Some(a));
        // Found, and given a new reference by the append (as if the series had left memory).
        request_with(&cache, 0..1, &[(0, b)]);
        assert_eq!(found(&cache), Some(b));
    }

    #[test]
    fn memory_stays_within_the_budget_and_a_working_set_that_fits_keeps_hitting() {
        let entry = 8 + labels(0).size() + ENTRY_OVERHEAD;
        // Room for ~25 label sets a generation; a fixed hasher, for the same shares each run.
        let cache = SeriesCache::new(2 * 25 * entry, 7);
        for _ in 0..3 {
            request(&cache, 0..20);
        }
        assert_eq!(request(&cache, 0..20), 20);
        // Far more label sets than fit, round and round: the share admitted narrows until
        // the admitted ones fit, and those are found again.
        let mut found = 0;
        for _ in 0..40 {
            found = request(&cache, 1000..1400);
        }
        {
            let g = cache.state.read();
            assert!(g.bytes <= cache.budget / 2 + entry);
            assert!(g.current.len() + g.previous.len() <= 2 * 26);
            assert!(g.share_bits > 0);
        }
        assert!(found > 0, "a share of the label sets is found again");
        // That load gone, a working set that fits is admitted whole again.
        for _ in 0..(ROUNDS_PER_GENERATION * MIN_ENTRIES * MAX_SHARE_BITS as usize / 20) {
            request(&cache, 0..20);
        }
        assert_eq!(cache.state.read().share_bits, 0);
        assert_eq!(request(&cache, 0..20), 20);
    }
}
