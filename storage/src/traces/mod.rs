//! The trace store: OTLP spans on RocksDB, read back whole by trace id and found by search.
//! Owns its own RocksDB database (under the directory it is opened on), its key layouts and
//! retention; knows nothing of wire formats beyond the OTLP messages it stores, and nothing of
//! the Jaeger or Tempo query languages (callers scan candidates and filter).
//!
//! Layout (column families): time partitions (`partitions`) of the spans that start in their
//! range, each with
//! - `spans_<start>_<len>`: trace id | span id → origin id | protobuf `Span` (without the ids
//!   the key holds). One trace is one range scan per partition.
//! - `index_<start>_<len>`: secondary keys `kind | fields | start ns` (layouts in `keys`;
//!   `| span id` after the start in the time key, and in every key of partitions created
//!   before start-only keys): by time, whose value is the trace id every other key is
//!   resolved through (a start-only key to every span of its start); by
//!   origin, operation, duration bucket, each span attribute value and each event name and
//!   event attribute value; a resource's service
//!   and attribute values once per origin and partition, pointing at the origin; and the
//!   partition's catalog (services, operations as service, kind and name, attribute keys),
//!   each written once, so the catalog shrinks with retention.
//!
//! and, for all partitions, `origins`: origin id → the resource and instrumentation scope of a
//! batch, stored once (content-addressed, FNV-1a of the encoding) instead of once per span.
//!
//! Why RocksDB secondary keys rather than tantivy: the queries the Jaeger and Tempo APIs make
//! are exact matches on service, operation and attribute values over a time window, sorted
//! newest first with a small limit. A prefix ending in the start time answers exactly that with
//! one bounded backwards scan and needs no second engine, no separate commit/refresh cycle
//! (a span is searchable as soon as its write returns) and shares one WAL with the spans, so a
//! crash never leaves a span without its index entries or the reverse. Conditions the index
//! cannot seek on (ranges, regexes, status) are checked on the candidates of the most
//! selective indexed condition, falling back to the time index. A seek with several sources
//! (a service's origins, a duration's buckets, a union's members) merges them newest first;
//! the seeks of an intersection (`Seek::All`) leapfrog, each seeking to the oldest of their
//! current spans until all hold the same one.
//!
//! Durability: every write is one `WriteBatch` through RocksDB's WAL (fsynced when
//! `wal_fsync`), and [`TraceStore::write`] returns only after it. While a forwarding
//! destination is registered, the write's stored spans also go into the outbox
//! (`crate::outbox`, the `outbox` family) in that same `WriteBatch`. Retention drops the
//! partitions that end before the cutoff, whole (no tombstones); origins are small and kept.

mod keys;
mod partitions;
mod record;

use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use parking_lot::{Mutex, RwLock};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions};

pub use keys::Seek;
pub use record::{service_name, value_text, Origin, StoredSpan};

use crate::db::{self, cf, Db};
use crate::episode::FailureEpisode;
use crate::StorageError;
use keys::{AttrKeys, IndexPrefix, SpanId, TraceId, SPAN_ID_LEN, TRACE_ID_LEN};
use partitions::{Part, Partitions};

const CF_ORIGINS: &str = "origins";
/// Spans waiting to be forwarded, and the destinations' offsets (`crate::outbox`).
const CF_OUTBOX: &str = "outbox";

#[derive(Clone, Debug)]
pub struct TraceStoreOptions {
    pub retention: Duration,
    /// fsync the WAL on every write (survives power loss, not only a crash).
    pub wal_fsync: bool,
    /// Capacity of the block cache all column families read through.
    pub block_cache_bytes: usize,
    /// Budget of all memtables together: writes wait in them until this much is buffered.
    pub write_buffer_bytes: usize,
}

impl Default for TraceStoreOptions {
    fn default() -> Self {
        TraceStoreOptions {
            retention: Duration::from_secs(15 * 86400),
            wal_fsync: false,
            block_cache_bytes: 16 << 20,
            write_buffer_bytes: 32 << 20,
        }
    }
}

/// What [`TraceStore::write`] did; `rejected` spans are reported back to the client (OTLP
/// partial success) with the first reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub spans_written: usize,
    pub rejected: usize,
    pub reason: Option<String>,
}

pub struct TraceStore {
    db: Db,
    cache: rocksdb::Cache,
    opts: TraceStoreOptions,
    parts: Partitions,
    origins: RwLock<HashMap<u64, Arc<Origin>>>,
    /// (partition start, catalog key) known to be on disk, so each is written once per
    /// partition and process.
    catalog_seen: Mutex<HashSet<(u64, Vec<u8>)>>,
    /// (partition start, origin id) whose origin keys are on disk.
    origins_indexed: Mutex<HashSet<(u64, u64)>>,
    /// Starts of the finished partitions compacted since open.
    compacted: Mutex<HashSet<u64>>,
    /// Writes fail for as long as the disk is full: logged once per episode.
    write_failures: FailureEpisode,
    outbox: crate::outbox::OutboxState,
}

/// A span found by [`TraceStore::scan`]: its ids and start are known from the index alone;
/// [`Candidate::load`] reads the span itself.
pub struct Candidate<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub start_ns: u64,
    store: &'a TraceStore,
    /// The spans family of the partition the index key was found in.
    spans: &'a crate::db::Cf<'a>,
}

impl Candidate<'_> {
    pub fn load(&self) -> Result<Option<StoredSpan>, StorageError> {
        self.store
            .span_in(self.spans, &self.trace_id, &self.span_id)
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl TraceStore {
    pub fn open(dir: &Path, opts: TraceStoreOptions) -> Result<TraceStore, StorageError> {
        let db_opts = db::db_options(opts.write_buffer_bytes);
        let cache = rocksdb::Cache::new_lru_cache(opts.block_cache_bytes);
        let existing = match Db::list_cf(&db_opts, dir) {
            Ok(names) => names,
            Err(_) if !dir.join("CURRENT").exists() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let part_cfs: Vec<String> = existing
            .iter()
            .filter(|n| Partitions::is_partition_cf(n))
            .cloned()
            .collect();
        let cfs = [CF_ORIGINS.to_owned(), CF_OUTBOX.to_owned()]
            .into_iter()
            .chain(part_cfs.iter().cloned())
            .map(|name| {
                let options = db::trace_cf_options(&cache, Partitions::is_spans_cf(&name));
                ColumnFamilyDescriptor::new(name, options)
            });
        let db = Db::open_cf_descriptors(&db_opts, dir, cfs)?;
        let parts = Partitions::new(
            &part_cfs,
            partitions::width_for(opts.retention.as_nanos() as u64),
            |part, marker| {
                Ok(db
                    .get_pinned_cf(&cf(&db, &part.catalog_cf())?, part.catalog_key(marker))?
                    .is_some())
            },
        )?;
        let outbox = crate::outbox::OutboxState::load(&db, CF_OUTBOX)?;
        let store = TraceStore {
            outbox,
            db,
            cache,
            parts,
            opts,
            origins: RwLock::default(),
            catalog_seen: Mutex::default(),
            origins_indexed: Mutex::default(),
            compacted: Mutex::default(),
            write_failures: FailureEpisode::new("trace store write"),
        };
        let removed = store.enforce_retention()?;
        if removed > 0 {
            tracing::info!(partitions = removed, "trace retention applied at open");
        }
        Ok(store)
    }

    /// Stores the spans; returns once they are in RocksDB's WAL. Spans with malformed ids or
    /// starting before the retention cutoff are rejected, the rest written.
    pub fn write(&self, batch: &[ResourceSpans]) -> Result<WriteReport, StorageError> {
        let cutoff = now_ns().saturating_sub(self.opts.retention.as_nanos() as u64);
        let mut report = WriteReport::default();
        let mut wb = WriteBatch::default();
        let origins_cf = self.cf(CF_ORIGINS)?;
        let mut new_origins = Vec::new();
        let mut new_catalog = HashSet::new();
        let mut new_indexed = HashSet::new();
        let mut handled = HashSet::new();
        let mut index_puts = Vec::new();
        let mut span_puts = Vec::new();
        // The partition of the previous span and its families: a batch's spans mostly share one.
        let mut current: Option<(Arc<Part>, [crate::db::Cf<'_>; 2])> = None;
        for rs in batch {
            for ss in &rs.scope_spans {
                let origin = Origin::new(rs, ss);
                let bytes = origin.encode();
                let origin_id = Origin::id(&bytes);
                if !self.origins.read().contains_key(&origin_id) {
                    wb.put_cf(&origins_cf, origin_id.to_be_bytes(), &bytes);
                    new_origins.push((origin_id, Arc::new(origin.clone())));
                }
                let service = origin.service_name();
                for span in &ss.spans {
                    let ids = match span_ids(span) {
                        Ok(ids) => ids,
                        Err(reason) => {
                            report.reject(reason);
                            continue;
                        }
                    };
                    if span.start_time_unix_nano < cutoff {
                        report.reject("span start time is before the retention cutoff");
                        continue;
                    }
                    let t = span.start_time_unix_nano;
                    if !current
                        .as_ref()
                        .is_some_and(|(p, _)| p.start_ns <= t && t < p.end_ns)
                    {
                        let part = self
                            .parts
                            .for_time(&self.db, t, |name| self.cf_options(name))?;
                        let cfs = [self.cf(&part.index_cf())?, self.cf(&part.catalog_cf())?];
                        current = Some((part, cfs));
                    }
                    let (part, [index_cf, catalog_cf]) = current.as_ref().expect("set above");
                    // A batch repeats its operations and attribute keys: each is looked up
                    // in the catalog once per call.
                    let kind = u8::try_from(span.kind).unwrap_or(0);
                    let mut catalog = Vec::new();
                    if handled.insert((part.start_ns, origin_id, Some(kind), span.name.as_str())) {
                        catalog.push(keys::catalog_operation(service, kind, &span.name));
                    }
                    for kv in &span.attributes {
                        if handled.insert((part.start_ns, 0, None, kv.key.as_str())) {
                            catalog.push(keys::catalog_attr_key(false, &kv.key));
                        }
                    }
                    let indexed = (part.start_ns, origin_id);
                    if !self.origins_indexed.lock().contains(&indexed)
                        && new_indexed.insert(indexed)
                    {
                        catalog.extend(origin_catalog_keys(&origin));
                        for k in origin_index_keys(origin_id, &origin) {
                            wb.put_cf(index_cf, k, b"");
                        }
                    }
                    for k in catalog {
                        let seen = (part.start_ns, k);
                        if !self.catalog_seen.lock().contains(&seen) && !new_catalog.contains(&seen)
                        {
                            wb.put_cf(catalog_cf, part.catalog_key(&seen.1), b"");
                            new_catalog.insert(seen);
                        }
                    }
                    span_puts.push((
                        part.start_ns,
                        keys::span_key(&ids.0, &ids.1),
                        record::encode_span(origin_id, span),
                    ));
                    // The time key holds the trace id; the other keys find it there.
                    index_puts.push((
                        part.start_ns,
                        IndexPrefix::time().key(t, &ids.1),
                        ids.0.to_vec(),
                    ));
                    for prefix in index_prefixes(origin_id, service, span) {
                        let key = if part.start_only {
                            prefix.start_key(t)
                        } else {
                            prefix.key(t, &ids.1)
                        };
                        index_puts.push((part.start_ns, key, Vec::new()));
                    }
                    report.spans_written += 1;
                }
            }
        }
        // In key order, each insert into a memtable's skip list starts where the previous one
        // ended instead of at the top.
        span_puts.sort_unstable_by_key(|(part, key, _)| (*part, *key));
        index_puts.sort_unstable();
        self.put_sorted(&mut wb, span_puts, Part::spans_cf)?;
        self.put_sorted(&mut wb, index_puts, Part::index_cf)?;
        let _outbox_ticket = if self.outbox.enabled() && report.spans_written > 0 {
            let body = outbox_body(batch, &report, cutoff);
            Some(self.outbox.put(&self.db, &mut wb, &body)?)
        } else {
            None
        };
        let mut wo = WriteOptions::default();
        wo.set_sync(self.opts.wal_fsync);
        self.write_failures.observe(self.db.write_opt(wb, &wo))?;
        self.origins.write().extend(new_origins);
        self.catalog_seen.lock().extend(new_catalog);
        self.origins_indexed.lock().extend(new_indexed);
        Ok(report)
    }

    /// The spans waiting to be forwarded (each write's stored spans, in write order, while a
    /// destination is registered); a record's body is read by [`outbox_spans`].
    pub fn outbox(self: &Arc<Self>) -> crate::OutboxLog {
        crate::OutboxLog::new(self.clone())
    }

    /// Puts `(partition start, key, value)` triples, sorted, into `wb`, each in the family
    /// `name` gives of its partition.
    fn put_sorted(
        &self,
        wb: &mut WriteBatch,
        puts: Vec<(u64, impl AsRef<[u8]>, impl AsRef<[u8]>)>,
        name: fn(&Part) -> String,
    ) -> Result<(), StorageError> {
        let mut family: Option<(u64, crate::db::Cf<'_>)> = None;
        for (part_start, key, value) in puts {
            if family.as_ref().is_none_or(|(p, _)| *p != part_start) {
                let part = self
                    .parts
                    .for_time(&self.db, part_start, |name| self.cf_options(name))?;
                family = Some((part_start, self.cf(&name(&part))?));
            }
            wb.put_cf(&family.as_ref().expect("set above").1, key, value);
        }
        Ok(())
    }

    /// Every stored span of the trace, in span id order. Empty if unknown (or a malformed id).
    pub fn trace(&self, trace_id: &[u8]) -> Result<Vec<StoredSpan>, StorageError> {
        let Ok(trace_id) = <TraceId>::try_from(trace_id) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        // A trace's spans are in the partitions of their start times: usually one, two when
        // it crosses a boundary.
        for part in self.parts.all() {
            let spans_cf = self.cf(&part.spans_cf())?;
            for item in db::prefixed(&self.db, &spans_cf, &trace_id) {
                let (k, v) = item?;
                let span_id: SpanId = k[TRACE_ID_LEN..]
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("span key length".into()))?;
                out.push((span_id, self.stored(&trace_id, &span_id, &v)?));
            }
        }
        out.sort_by_key(|(span_id, _)| *span_id);
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    pub fn span(
        &self,
        trace_id: &[u8; 16],
        span_id: &[u8; 8],
    ) -> Result<Option<StoredSpan>, StorageError> {
        for part in self.parts.all() {
            if let Some(s) = self.span_in(&self.cf(&part.spans_cf())?, trace_id, span_id)? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    fn span_in(
        &self,
        spans_cf: &crate::db::Cf<'_>,
        trace_id: &[u8; 16],
        span_id: &[u8; 8],
    ) -> Result<Option<StoredSpan>, StorageError> {
        match self
            .db
            .get_pinned_cf(spans_cf, keys::span_key(trace_id, span_id))?
        {
            Some(v) => Ok(Some(self.stored(trace_id, span_id, &v)?)),
            None => Ok(None),
        }
    }

    /// Visits spans that start in [start_ns, end_ns] and match `seek`, newest first (within a
    /// partition; partitions newest first), until `visit` breaks. A seek on a value the index
    /// cannot hold (see [`Seek`]) walks the time index instead, so the caller must still check
    /// its conditions on each span.
    pub fn scan(
        &self,
        seek: &Seek,
        start_ns: u64,
        end_ns: u64,
        visit: &mut dyn FnMut(Candidate<'_>) -> Result<ControlFlow<()>, StorageError>,
    ) -> Result<(), StorageError> {
        if start_ns > end_ns {
            return Ok(());
        }
        let members = match seek {
            Seek::All(members) => &members[..],
            one => std::slice::from_ref(one),
        };
        for part in self.parts.overlapping(start_ns, end_ns) {
            let (index_cf, spans_cf) = (self.cf(&part.index_cf())?, self.cf(&part.spans_cf())?);
            let (lo, hi) = (
                start_ns.max(part.start_ns),
                end_ns.min(part.end_ns.saturating_sub(1)),
            );
            let mut walks = Vec::new();
            for member in members {
                if let Some(prefixes) = self.sources(&part, &index_cf, member)? {
                    walks.push(Union::new(&self.db, &index_cf, prefixes, lo, hi));
                }
            }
            if walks.is_empty() {
                walks.push(Union::new(
                    &self.db,
                    &index_cf,
                    vec![IndexPrefix::time()],
                    lo,
                    hi,
                ));
            }
            let time = IndexPrefix::time();
            // Resolves start-only entries: one iterator per partition, sought per entry.
            let mut times = self.db.raw_iterator_cf(&index_cf);
            let mut spans = Vec::new();
            while let Some(entry) = next_in_all(&mut walks) {
                spans.clear();
                match entry.trace_id {
                    Some(id) => spans.push((entry.span_id, id)),
                    None if entry.span_id == keys::ANY_SPAN => {
                        spans_starting_at(&mut times, entry.start_ns, &mut spans)?
                    }
                    // A key without its time key would be a torn write, which one WriteBatch
                    // rules out; skip rather than fail the search.
                    None => spans.extend(
                        self.db
                            .get_pinned_cf(&index_cf, time.key(entry.start_ns, &entry.span_id))?
                            .and_then(|v| TraceId::try_from(&v[..]).ok())
                            .map(|id| (entry.span_id, id)),
                    ),
                }
                for &(span_id, trace_id) in &spans {
                    if visit(Candidate {
                        trace_id,
                        span_id,
                        start_ns: entry.start_ns,
                        store: self,
                        spans: &spans_cf,
                    })?
                    .is_break()
                    {
                        return Ok(());
                    }
                }
            }
            for walk in &walks {
                walk.status()?;
            }
        }
        Ok(())
    }

    /// The per-span prefixes holding a seek's spans in one partition: its own, for a service
    /// or resource attribute each matching origin's and the legacy per-span one, for a union
    /// its members'. `None` when the index cannot narrow the seek there: a value it cannot
    /// hold, keys the partition was created without, or no condition at all (time).
    fn sources(
        &self,
        part: &Part,
        index_cf: &crate::db::Cf<'_>,
        seek: &Seek,
    ) -> Result<Option<Vec<IndexPrefix>>, StorageError> {
        let by_origin = match seek {
            Seek::Time | Seek::All(_) => return Ok(None),
            Seek::Duration { service, min_ns } => {
                return match service {
                    // A partition from before duration keys is walked by service or time.
                    Some(s) if !part.durations => {
                        self.sources(part, index_cf, &Seek::Service(s.clone()))
                    }
                    None if !part.durations => Ok(None),
                    _ => {
                        let services = match service {
                            Some(s) => vec![s.clone()],
                            None => {
                                self.part_catalog(part, &keys::catalog_services_prefix(), |k| {
                                    String::from_utf8(k.to_vec()).ok()
                                })?
                            }
                        };
                        let from = keys::duration_bucket(*min_ns);
                        Ok(Some(
                            services
                                .iter()
                                .flat_map(|s| {
                                    (from..=keys::MAX_DURATION_BUCKET)
                                        .filter_map(|b| IndexPrefix::duration(s, b))
                                })
                                .collect(),
                        ))
                    }
                };
            }
            Seek::Any(members) => {
                let mut out = Vec::new();
                for member in members {
                    match self.sources(part, index_cf, member)? {
                        Some(prefixes) => out.extend(prefixes),
                        None => return Ok(None),
                    }
                }
                return Ok(Some(out));
            }
            Seek::EventName(_) | Seek::EventAttribute { .. } if !part.events => return Ok(None),
            Seek::Service(s) => keys::origin_key_prefix(None, s),
            Seek::Attribute {
                resource: true,
                key,
                value,
            } => keys::origin_key_prefix(Some((key, value)), ""),
            _ => return Ok(IndexPrefix::new(seek).map(|p| vec![p])),
        };
        let (Some(by_origin), Some(legacy)) = (by_origin, IndexPrefix::new(seek)) else {
            return Ok(None);
        };
        let mut out = vec![legacy];
        for item in db::prefixed(&self.db, index_cf, &by_origin) {
            let (k, _) = item?;
            if let Ok(id) = <[u8; keys::ORIGIN_ID_LEN]>::try_from(&k[by_origin.len()..]) {
                out.push(IndexPrefix::origin(u64::from_be_bytes(id)));
            }
        }
        Ok(Some(out))
    }

    /// Memory RocksDB holds for the trace store.
    pub fn memory(&self) -> crate::StoreMemory {
        db::memory(&self.db, &self.cache)
    }

    /// Spans stored, as RocksDB estimates them from its metadata (no scan): for a status page,
    /// not for accounting.
    pub fn estimated_spans(&self) -> Result<u64, StorageError> {
        let mut n = 0;
        for part in self.parts.all() {
            n += self
                .db
                .property_int_value_cf(&self.cf(&part.spans_cf())?, "rocksdb.estimate-num-keys")?
                .unwrap_or(0);
        }
        Ok(n)
    }

    /// Service names, sorted.
    pub fn services(&self) -> Result<Vec<String>, StorageError> {
        let prefix = keys::catalog_services_prefix();
        self.catalog_list(&prefix, |k| String::from_utf8(k.to_vec()).ok())
    }

    /// (OTLP span kind, span name) of a service's spans, sorted by kind then name.
    pub fn operations(&self, service: &str) -> Result<Vec<(i32, String)>, StorageError> {
        let prefix = keys::catalog_operations_prefix(service);
        self.catalog_list(&prefix, |k| {
            keys::parse_catalog_operation(0, k).map(|(kind, n)| (kind as i32, n))
        })
    }

    /// Attribute keys seen on spans (`resource == false`) or resources, sorted.
    pub fn attribute_keys(&self, resource: bool) -> Result<Vec<String>, StorageError> {
        let prefix = keys::catalog_attr_prefix(resource);
        self.catalog_list(&prefix, |k| String::from_utf8(k.to_vec()).ok())
    }

    /// Distinct indexed values of an attribute, sorted, at most `limit`. One seek per value
    /// and partition.
    pub fn attribute_values(
        &self,
        resource: bool,
        key: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        // Values hold no NUL: the first after the key's prefix ends the value, whatever
        // follows it (a span's suffix, an origin id).
        let (span_keys, origin_keys) = if resource {
            (
                keys::attr_key_prefix(AttrKeys::LegacyResource, key),
                keys::attr_key_prefix(AttrKeys::Origin, key),
            )
        } else {
            (keys::attr_key_prefix(AttrKeys::Span, key), None)
        };
        let walks: Vec<Vec<u8>> = span_keys.into_iter().chain(origin_keys).collect();
        let mut out = BTreeSet::new();
        for part in self.parts.all() {
            let index_cf = self.cf(&part.index_cf())?;
            for key_prefix in &walks {
                let mut it = self.db.raw_iterator_cf(&index_cf);
                it.seek(key_prefix);
                let mut found = 0;
                while found < limit {
                    let Some(k) = it.key() else { break };
                    let Some(value) = k
                        .strip_prefix(key_prefix.as_slice())
                        .and_then(|rest| rest.split(|b| *b == 0).next())
                        .filter(|v| v.len() < k.len() - key_prefix.len())
                    else {
                        break;
                    };
                    let next = [key_prefix, value, &[1]].concat();
                    if let Ok(v) = std::str::from_utf8(value) {
                        out.insert(v.to_owned());
                        found += 1;
                    }
                    it.seek(&next);
                }
                it.status()?;
            }
        }
        Ok(out.into_iter().take(limit).collect())
    }

    /// Drops the partitions that end before now − retention (and the pre-partition legacy
    /// families once their newest span is that old). Returns how many were dropped. Run at
    /// open and periodically by the owner; costs a column-family drop per partition.
    pub fn enforce_retention(&self) -> Result<usize, StorageError> {
        let cutoff = now_ns().saturating_sub(self.opts.retention.as_nanos() as u64);
        let mut dropped = 0;
        for part in self.parts.all() {
            let expired = if part.legacy {
                self.newest_start(&part)?.is_none_or(|t| t < cutoff)
            } else {
                part.end_ns <= cutoff
            };
            if expired {
                self.parts.drop_part(&self.db, &part)?;
                self.catalog_seen
                    .lock()
                    .retain(|(start, _)| *start != part.start_ns);
                self.origins_indexed
                    .lock()
                    .retain(|(start, _)| *start != part.start_ns);
                self.compacted.lock().remove(&part.start_ns);
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Compacts each partition that ended over an hour ago (late spans have arrived by then),
    /// once per process: rewritten into the last level, its keys lose the sequence numbers
    /// RocksDB keeps in files not yet merged. A partition already in the last level is not
    /// rewritten again. Returns how many were compacted; run periodically by the owner.
    pub fn compact_finished(&self) -> Result<usize, StorageError> {
        let cutoff = now_ns().saturating_sub(3_600_000_000_000);
        // Not exclusive: the current partition's own compactions go on meanwhile, or its
        // level-0 files would pile up to a write stall while a day's partition is rewritten.
        let mut options = rocksdb::CompactOptions::default();
        options.set_exclusive_manual_compaction(false);
        let mut compacted = 0;
        for part in self.parts.all() {
            if part.legacy || part.end_ns > cutoff || self.compacted.lock().contains(&part.start_ns)
            {
                continue;
            }
            for name in [part.spans_cf(), part.index_cf()] {
                self.db.compact_range_cf_opt(
                    &self.cf(&name)?,
                    None::<&[u8]>,
                    None::<&[u8]>,
                    &options,
                );
            }
            self.compacted.lock().insert(part.start_ns);
            compacted += 1;
        }
        Ok(compacted)
    }

    /// The start time of the newest span of a partition, from its time index.
    fn newest_start(&self, part: &Part) -> Result<Option<u64>, StorageError> {
        let time = IndexPrefix::time();
        let mut it = self.db.raw_iterator_cf(&self.cf(&part.index_cf())?);
        it.seek_for_prev(time.upper(u64::MAX));
        let newest = match (it.key(), it.value()) {
            (Some(k), Some(v)) if k >= time.lower(0).as_slice() => {
                keys::parse_entry(k, time.len(), v).map(|e| e.start_ns)
            }
            _ => None,
        };
        it.status()?;
        Ok(newest)
    }

    /// Flushes memtables so the on-disk form is compact (used on shutdown and by benchmarks).
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_cf(&self.cf(CF_ORIGINS)?)?;
        for part in self.parts.all() {
            for name in [part.spans_cf(), part.index_cf(), part.catalog_cf()] {
                self.db.flush_cf(&self.cf(&name)?)?;
            }
        }
        Ok(())
    }

    fn cf_options(&self, name: &str) -> Options {
        db::trace_cf_options(&self.cache, Partitions::is_spans_cf(name))
    }

    fn cf(&self, name: &str) -> Result<crate::db::Cf<'_>, StorageError> {
        cf(&self.db, name)
    }

    fn stored(
        &self,
        trace_id: &TraceId,
        span_id: &SpanId,
        value: &[u8],
    ) -> Result<StoredSpan, StorageError> {
        let (origin_id, span) = record::decode_span(value, trace_id, span_id)?;
        Ok(StoredSpan {
            span,
            origin: self.origin(origin_id)?,
        })
    }

    fn origin(&self, id: u64) -> Result<Arc<Origin>, StorageError> {
        if let Some(o) = self.origins.read().get(&id) {
            return Ok(o.clone());
        }
        let bytes = self
            .db
            .get_pinned_cf(&self.cf(CF_ORIGINS)?, id.to_be_bytes())?
            .ok_or_else(|| StorageError::Corrupt(format!("missing span origin {id:x}")))?;
        let o = Arc::new(Origin::decode(&bytes)?);
        self.origins.write().insert(id, o.clone());
        Ok(o)
    }

    /// The catalog entries under `prefix` in every partition, with the prefix cut, parsed,
    /// deduplicated and sorted.
    fn catalog_list<T: Ord>(
        &self,
        prefix: &[u8],
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, StorageError> {
        let mut out = BTreeSet::new();
        for part in self.parts.all() {
            out.extend(self.part_catalog(&part, prefix, &parse)?);
        }
        Ok(out.into_iter().collect())
    }

    /// One partition's catalog entries under `prefix`, with the prefix cut, parsed.
    fn part_catalog<T>(
        &self,
        part: &Part,
        prefix: &[u8],
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, StorageError> {
        let catalog_cf = self.cf(&part.catalog_cf())?;
        let prefix = part.catalog_key(prefix);
        let mut out = Vec::new();
        for item in db::prefixed(&self.db, &catalog_cf, &prefix) {
            let (k, _) = item?;
            out.extend(parse(&k[prefix.len()..]));
        }
        Ok(out)
    }
}

impl crate::outbox::OutboxHost for TraceStore {
    fn outbox_db(&self) -> &Db {
        &self.db
    }

    fn outbox_state(&self) -> &crate::outbox::OutboxState {
        &self.outbox
    }
}

/// An outbox record of what a write stored: its `ResourceSpans` as sent, less the spans it
/// rejected.
fn outbox_body(batch: &[ResourceSpans], report: &WriteReport, cutoff: u64) -> Vec<u8> {
    let stored = |span: &Span| span_ids(span).is_ok() && span.start_time_unix_nano >= cutoff;
    let kept: Vec<Vec<u8>> = if report.rejected == 0 {
        batch.iter().map(prost::Message::encode_to_vec).collect()
    } else {
        batch
            .iter()
            .filter_map(|rs| {
                let mut rs = rs.clone();
                for ss in &mut rs.scope_spans {
                    ss.spans.retain(stored);
                }
                rs.scope_spans.retain(|ss| !ss.spans.is_empty());
                (!rs.scope_spans.is_empty()).then(|| prost::Message::encode_to_vec(&rs))
            })
            .collect()
    };
    crate::outbox::encode_parts(report.spans_written as u64, kept.iter().map(Vec::as_slice))
}

/// The `ResourceSpans` of one outbox record of the trace store ([`TraceStore::outbox`]).
pub fn outbox_spans(body: &[u8]) -> Result<Vec<ResourceSpans>, StorageError> {
    crate::outbox::parts(body)?
        .into_iter()
        .map(|p| {
            <ResourceSpans as prost::Message>::decode(p)
                .map_err(|e| StorageError::Corrupt(format!("outbox spans: {e}")))
        })
        .collect()
}

/// What trace queries and the Jaeger and Tempo APIs read traces through.
pub trait TraceReader: Send + Sync {
    /// Every stored span of the trace, in span id order; empty when unknown.
    fn trace(&self, trace_id: &[u8]) -> Result<Vec<StoredSpan>, StorageError>;
    fn span(
        &self,
        trace_id: &[u8; 16],
        span_id: &[u8; 8],
    ) -> Result<Option<StoredSpan>, StorageError>;
    /// Visits spans that start in [start_ns, end_ns] and match `seek`, newest first, until
    /// `visit` breaks; the caller still checks its conditions on each span.
    fn scan(
        &self,
        seek: &Seek,
        start_ns: u64,
        end_ns: u64,
        visit: &mut dyn FnMut(Candidate<'_>) -> Result<ControlFlow<()>, StorageError>,
    ) -> Result<(), StorageError>;
    /// Service names, sorted.
    fn services(&self) -> Result<Vec<String>, StorageError>;
    /// (OTLP span kind, span name) of a service's spans, sorted.
    fn operations(&self, service: &str) -> Result<Vec<(i32, String)>, StorageError>;
    /// Attribute keys of spans (`resource == false`) or resources, sorted.
    fn attribute_keys(&self, resource: bool) -> Result<Vec<String>, StorageError>;
    /// Distinct indexed values of an attribute, sorted, at most `limit`.
    fn attribute_values(
        &self,
        resource: bool,
        key: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError>;
}

/// What the OTLP receiver writes traces through.
pub trait TraceWriter: Send + Sync {
    /// Stores the spans durably; invalid spans are counted in the report, not written.
    fn write(&self, batch: &[ResourceSpans]) -> Result<WriteReport, StorageError>;
}

impl TraceReader for TraceStore {
    fn trace(&self, trace_id: &[u8]) -> Result<Vec<StoredSpan>, StorageError> {
        TraceStore::trace(self, trace_id)
    }

    fn span(
        &self,
        trace_id: &[u8; 16],
        span_id: &[u8; 8],
    ) -> Result<Option<StoredSpan>, StorageError> {
        TraceStore::span(self, trace_id, span_id)
    }

    fn scan(
        &self,
        seek: &Seek,
        start_ns: u64,
        end_ns: u64,
        visit: &mut dyn FnMut(Candidate<'_>) -> Result<ControlFlow<()>, StorageError>,
    ) -> Result<(), StorageError> {
        TraceStore::scan(self, seek, start_ns, end_ns, visit)
    }

    fn services(&self) -> Result<Vec<String>, StorageError> {
        TraceStore::services(self)
    }

    fn operations(&self, service: &str) -> Result<Vec<(i32, String)>, StorageError> {
        TraceStore::operations(self, service)
    }

    fn attribute_keys(&self, resource: bool) -> Result<Vec<String>, StorageError> {
        TraceStore::attribute_keys(self, resource)
    }

    fn attribute_values(
        &self,
        resource: bool,
        key: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        TraceStore::attribute_values(self, resource, key, limit)
    }
}

impl TraceWriter for TraceStore {
    fn write(&self, batch: &[ResourceSpans]) -> Result<WriteReport, StorageError> {
        TraceStore::write(self, batch)
    }
}

/// One index prefix walked backwards from the newest key of a window to its oldest.
struct Source<'a> {
    it: rocksdb::DBRawIterator<'a>,
    prefix: IndexPrefix,
    lower: Vec<u8>,
}

impl Source<'_> {
    /// The entry at the current key, if it is still in the window.
    fn entry(&self) -> Option<keys::Entry> {
        let key = self.it.key()?;
        if key < self.lower.as_slice() {
            return None;
        }
        keys::parse_entry(key, self.prefix.len(), self.it.value()?)
    }

    /// Moves to the newest entry at or before `at` (start, span id). Keys of one start sort
    /// by span id only in the current suffix form, so the last steps go back one by one.
    fn seek(&mut self, at: (u64, SpanId)) {
        self.it.seek_for_prev(self.prefix.upper(at.0));
        while self.entry().is_some_and(|e| e.at() > at) {
            self.it.prev();
        }
    }
}

/// The spans of several sources as one newest-first list, each span once: the heap hands out
/// the newest entry among the sources' current ones.
struct Union<'a> {
    sources: Vec<Source<'a>>,
    heads: BinaryHeap<(keys::Entry, usize)>,
}

impl<'a> Union<'a> {
    fn new(
        db: &'a Db,
        index_cf: &crate::db::Cf<'a>,
        prefixes: Vec<IndexPrefix>,
        lo: u64,
        hi: u64,
    ) -> Union<'a> {
        let mut union = Union {
            sources: Vec::with_capacity(prefixes.len()),
            heads: BinaryHeap::new(),
        };
        for prefix in prefixes {
            let mut it = db.raw_iterator_cf(index_cf);
            it.seek_for_prev(prefix.upper(hi));
            let lower = prefix.lower(lo);
            union.push(Source { it, prefix, lower });
        }
        union
    }

    fn push(&mut self, source: Source<'a>) {
        if let Some(entry) = source.entry() {
            self.heads.push((entry, self.sources.len()));
        }
        self.sources.push(source);
    }

    fn peek(&self) -> Option<keys::Entry> {
        self.heads.peek().map(|(e, _)| *e)
    }

    /// Hands out the newest entry and moves past it in every source holding it (a span with
    /// the same value as a span and an event attribute is one candidate).
    fn next(&mut self) -> Option<keys::Entry> {
        let (entry, i) = self.heads.pop()?;
        self.step(i);
        while let Some(&(e, j)) = self.heads.peek() {
            if e.at() != entry.at() {
                break;
            }
            self.heads.pop();
            self.step(j);
        }
        Some(entry)
    }

    fn step(&mut self, i: usize) {
        self.sources[i].it.prev();
        if let Some(entry) = self.sources[i].entry() {
            self.heads.push((entry, i));
        }
    }

    /// Moves every source past the entries newer than `at`.
    fn seek(&mut self, at: (u64, SpanId)) {
        if self.peek().is_none_or(|e| e.at() <= at) {
            return;
        }
        let mut heads = std::mem::take(&mut self.heads).into_vec();
        for (entry, i) in &mut heads {
            if entry.at() > at {
                self.sources[*i].seek(at);
                match self.sources[*i].entry() {
                    Some(e) => *entry = e,
                    None => *i = usize::MAX,
                }
            }
        }
        heads.retain(|(_, i)| *i != usize::MAX);
        self.heads = heads.into();
    }

    fn status(&self) -> Result<(), StorageError> {
        for source in &self.sources {
            source.it.status()?;
        }
        Ok(())
    }
}

/// The (span id, trace id) of every span starting at `start_ns`, from the time keys under
/// `T | start`, appended to `out` newest first as a walk hands them out (span id falling).
fn spans_starting_at(
    times: &mut rocksdb::DBRawIterator<'_>,
    start_ns: u64,
    out: &mut Vec<(SpanId, TraceId)>,
) -> Result<(), StorageError> {
    let time = IndexPrefix::time();
    let lower = time.lower(start_ns);
    times.seek(&lower);
    let from = out.len();
    while let Some(k) = times.key().filter(|k| k.starts_with(&lower)) {
        let entry = keys::parse_entry(k, time.len(), times.value().unwrap_or_default());
        if let Some(keys::Entry {
            span_id,
            trace_id: Some(trace_id),
            ..
        }) = entry
        {
            out.push((span_id, trace_id));
        }
        times.next();
    }
    times.status()?;
    out[from..].reverse();
    Ok(())
}

/// The newest span every walk holds, moved past in all of them: each walk seeks to the
/// oldest of their current entries until they agree (or one runs out).
fn next_in_all(walks: &mut [Union<'_>]) -> Option<keys::Entry> {
    loop {
        let mut target = (u64::MAX, [u8::MAX; SPAN_ID_LEN]);
        for walk in walks.iter() {
            target = target.min(walk.peek()?.at());
        }
        let mut agreed = true;
        for walk in walks.iter_mut() {
            walk.seek(target);
            agreed &= walk.peek()?.at() == target;
        }
        if agreed {
            // The trace id, when a key holds one, saves a read of the time key.
            let mut found = walks[0].next()?;
            for walk in &mut walks[1..] {
                if let Some(id) = walk.next().and_then(|e| e.trace_id) {
                    found.trace_id.get_or_insert(id);
                }
            }
            return Some(found);
        }
    }
}

impl WriteReport {
    fn reject(&mut self, reason: &str) {
        self.rejected += 1;
        self.reason.get_or_insert_with(|| reason.to_owned());
    }
}

fn span_ids(span: &Span) -> Result<(TraceId, SpanId), &'static str> {
    let trace: TraceId = span
        .trace_id
        .as_slice()
        .try_into()
        .map_err(|_| "trace id must be 16 bytes")?;
    let id: SpanId = span
        .span_id
        .as_slice()
        .try_into()
        .map_err(|_| "span id must be 8 bytes")?;
    if trace == [0; TRACE_ID_LEN] {
        return Err("trace id is all zeroes");
    }
    if id == [0; SPAN_ID_LEN] {
        return Err("span id is all zeroes");
    }
    Ok((trace, id))
}

/// Every index prefix a span is found under besides time (whose key holds the trace id): its
/// origin, operation, duration bucket, span attributes, event names and event attributes
/// (several events with one name or value give one key). Its service and resource
/// attributes are found through its origin's keys.
fn index_prefixes(origin_id: u64, service: &str, span: &Span) -> Vec<IndexPrefix> {
    let mut out = Vec::with_capacity(3 + span.attributes.len() + span.events.len());
    out.push(IndexPrefix::origin(origin_id));
    out.extend(IndexPrefix::operation(service, &span.name));
    let duration = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano);
    out.extend(IndexPrefix::duration(
        service,
        keys::duration_bucket(duration),
    ));
    out.extend(
        span.attributes.iter().filter_map(|kv| {
            IndexPrefix::attribute(false, &kv.key, &value_text(kv.value.as_ref()?)?)
        }),
    );
    let mut events = Vec::new();
    for event in &span.events {
        events.extend(IndexPrefix::event_name(&event.name));
        events.extend(event.attributes.iter().filter_map(|kv| {
            IndexPrefix::event_attribute(&kv.key, &value_text(kv.value.as_ref()?)?)
        }));
    }
    events.sort_unstable();
    events.dedup();
    out.extend(events);
    out
}

/// The keys that find an origin by its service and by each resource attribute value.
fn origin_index_keys(origin_id: u64, origin: &Origin) -> Vec<Vec<u8>> {
    let with_id = |mut k: Vec<u8>| {
        k.extend_from_slice(&origin_id.to_be_bytes());
        k
    };
    let mut out: Vec<Vec<u8>> = keys::origin_key_prefix(None, origin.service_name())
        .map(with_id)
        .into_iter()
        .collect();
    out.extend(origin.resource_attributes().iter().filter_map(|kv| {
        let value = value_text(kv.value.as_ref()?)?;
        keys::origin_key_prefix(Some((&kv.key, &value)), "").map(with_id)
    }));
    out
}

/// An origin's catalog entries: its service and resource attribute keys.
fn origin_catalog_keys(origin: &Origin) -> Vec<Vec<u8>> {
    let mut out = vec![keys::catalog_service(origin.service_name())];
    out.extend(
        origin
            .resource_attributes()
            .iter()
            .map(|kv| keys::catalog_attr_key(true, &kv.key)),
    );
    out
}

#[cfg(test)]
mod tests;
