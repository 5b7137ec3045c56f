//! The trace store: OTLP spans on RocksDB, read back whole by trace id and found by search.
//! Owns its own RocksDB database (under the directory it is opened on), its key layouts and
//! retention; knows nothing of wire formats beyond the OTLP messages it stores, and nothing of
//! the Jaeger or Tempo query languages (callers scan candidates and filter).
//!
//! Layout (column families):
//! - `spans`: trace id | span id → origin id | protobuf `Span`. One trace is one range scan.
//! - `origins`: origin id → the resource and instrumentation scope of a batch, stored once
//!   (content-addressed, FNV-1a of the encoding) instead of once per span.
//! - `index`: secondary keys `kind | fields | start ns | trace id | span id` with empty values,
//!   for time, service, service + span name, and each span and resource attribute value.
//! - `catalog`: services, operations (service, kind, name), attribute keys, each written once.
//!
//! Why RocksDB secondary keys rather than tantivy: the queries the Jaeger and Tempo APIs make
//! are exact matches on service, operation and attribute values over a time window, sorted
//! newest first with a small limit. A prefix ending in the start time answers exactly that with
//! one bounded backwards scan and needs no second engine, no separate commit/refresh cycle
//! (a span is searchable as soon as its write returns) and shares one WAL with the spans, so a
//! crash never leaves a span without its index entries or the reverse. Conditions the index
//! cannot seek on (durations, ranges, regexes, status) are checked on the candidates of the
//! most selective indexed condition, falling back to the time index.
//!
//! Durability: every write is one `WriteBatch` through RocksDB's WAL (fsynced when
//! `wal_fsync`), and [`TraceStore::write`] returns only after it. Retention deletes spans whose
//! start time is older than the cutoff, with their index keys, walking the time index; the
//! catalog and origins are small and kept.

mod keys;
mod record;

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use parking_lot::{Mutex, RwLock};
use rocksdb::{
    ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

pub use keys::Seek;
pub use record::{value_text, Origin, StoredSpan};

use crate::db::{self, cf, Db};
use crate::episode::FailureEpisode;
use crate::StorageError;
use keys::{IndexPrefix, SpanId, TraceId, SPAN_ID_LEN, TRACE_ID_LEN};

const CF_SPANS: &str = "spans";
const CF_ORIGINS: &str = "origins";
const CF_INDEX: &str = "index";
const CF_CATALOG: &str = "catalog";

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
    origins: RwLock<HashMap<u64, Arc<Origin>>>,
    /// Catalog keys known to be on disk, so each is written once per process.
    catalog_seen: Mutex<HashSet<Vec<u8>>>,
    /// Writes fail for as long as the disk is full: logged once per episode.
    write_failures: FailureEpisode,
}

/// A span found by [`TraceStore::scan`]: its ids and start are known from the index alone;
/// [`Candidate::load`] reads the span itself.
pub struct Candidate<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub start_ns: u64,
    store: &'a TraceStore,
}

impl Candidate<'_> {
    pub fn load(&self) -> Result<Option<StoredSpan>, StorageError> {
        self.store.span(&self.trace_id, &self.span_id)
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
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        db_opts.set_db_write_buffer_size(opts.write_buffer_bytes);
        db_opts.set_keep_log_file_num(4);
        let cache = rocksdb::Cache::new_lru_cache(opts.block_cache_bytes);
        let cfs = [CF_SPANS, CF_ORIGINS, CF_INDEX, CF_CATALOG].map(|name| {
            ColumnFamilyDescriptor::new(name, db::cf_options(&cache, DBCompressionType::Lz4))
        });
        let db = Db::open_cf_descriptors(&db_opts, dir, cfs)?;
        let store = TraceStore {
            db,
            cache,
            opts,
            origins: RwLock::default(),
            catalog_seen: Mutex::default(),
            write_failures: FailureEpisode::new("trace store write"),
        };
        let removed = store.enforce_retention()?;
        if removed > 0 {
            tracing::info!(removed, "trace retention applied at open");
        }
        Ok(store)
    }

    /// Stores the spans; returns once they are in RocksDB's WAL. Spans with malformed ids or
    /// starting before the retention cutoff are rejected, the rest written.
    pub fn write(&self, batch: &[ResourceSpans]) -> Result<WriteReport, StorageError> {
        let cutoff = now_ns().saturating_sub(self.opts.retention.as_nanos() as u64);
        let mut report = WriteReport::default();
        let mut wb = WriteBatch::default();
        let (spans_cf, origins_cf, index_cf, catalog_cf) = (
            self.cf(CF_SPANS)?,
            self.cf(CF_ORIGINS)?,
            self.cf(CF_INDEX)?,
            self.cf(CF_CATALOG)?,
        );
        let mut new_origins = Vec::new();
        let mut new_catalog = HashSet::new();
        for rs in batch {
            for ss in &rs.scope_spans {
                let origin = Origin::new(rs, ss);
                let bytes = origin.encode();
                let origin_id = Origin::id(&bytes);
                if !self.origins.read().contains_key(&origin_id) {
                    wb.put_cf(&origins_cf, origin_id.to_be_bytes(), &bytes);
                    new_origins.push((origin_id, Arc::new(origin.clone())));
                }
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
                    wb.put_cf(
                        &spans_cf,
                        keys::span_key(&ids.0, &ids.1),
                        record::encode_span(origin_id, span),
                    );
                    for prefix in index_prefixes(&origin, span) {
                        wb.put_cf(
                            &index_cf,
                            prefix.key(span.start_time_unix_nano, &ids.0, &ids.1),
                            b"",
                        );
                    }
                    for k in catalog_keys(&origin, span) {
                        if !self.catalog_seen.lock().contains(&k) && !new_catalog.contains(&k) {
                            wb.put_cf(&catalog_cf, &k, b"");
                            new_catalog.insert(k);
                        }
                    }
                    report.spans_written += 1;
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.opts.wal_fsync);
        self.write_failures.observe(self.db.write_opt(wb, &wo))?;
        self.origins.write().extend(new_origins);
        self.catalog_seen.lock().extend(new_catalog);
        Ok(report)
    }

    /// Every stored span of the trace, in span id order. Empty if unknown (or a malformed id).
    pub fn trace(&self, trace_id: &[u8]) -> Result<Vec<StoredSpan>, StorageError> {
        let Ok(trace_id) = <TraceId>::try_from(trace_id) else {
            return Ok(Vec::new());
        };
        let spans_cf = self.cf(CF_SPANS)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(&spans_cf, IteratorMode::From(&trace_id, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(&trace_id) {
                break;
            }
            out.push(self.stored(&v)?);
        }
        Ok(out)
    }

    pub fn span(
        &self,
        trace_id: &[u8; 16],
        span_id: &[u8; 8],
    ) -> Result<Option<StoredSpan>, StorageError> {
        match self
            .db
            .get_pinned_cf(&self.cf(CF_SPANS)?, keys::span_key(trace_id, span_id))?
        {
            Some(v) => Ok(Some(self.stored(&v)?)),
            None => Ok(None),
        }
    }

    /// Visits spans that start in [start_ns, end_ns] and match `seek`, newest first, until
    /// `visit` breaks. A seek on a value the index cannot hold (see [`Seek`]) walks the time
    /// index instead, so the caller must still check its conditions on each span.
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
        let prefix = IndexPrefix::new(seek)
            .or_else(|| IndexPrefix::new(&Seek::Time))
            .ok_or_else(|| StorageError::Invalid("index".into()))?;
        let index_cf = self.cf(CF_INDEX)?;
        let lower = prefix.lower(start_ns);
        let mut it = self.db.raw_iterator_cf(&index_cf);
        it.seek_for_prev(prefix.upper(end_ns));
        while let Some(key) = it.key() {
            if key < lower.as_slice() || key.len() != prefix.len() + keys::SUFFIX_LEN {
                break;
            }
            let Some((start, trace_id, span_id)) = keys::parse_suffix(key) else {
                break;
            };
            if visit(Candidate {
                trace_id,
                span_id,
                start_ns: start,
                store: self,
            })?
            .is_break()
            {
                return Ok(());
            }
            it.prev();
        }
        it.status()?;
        Ok(())
    }

    /// Memory RocksDB holds for the trace store.
    pub fn memory(&self) -> crate::StoreMemory {
        db::memory(&self.db, &self.cache)
    }

    /// Spans stored, as RocksDB estimates them from its metadata (no scan): for a status page,
    /// not for accounting.
    pub fn estimated_spans(&self) -> Result<u64, StorageError> {
        Ok(self
            .db
            .property_int_value_cf(&self.cf(CF_SPANS)?, "rocksdb.estimate-num-keys")?
            .unwrap_or(0))
    }

    /// Service names, sorted.
    pub fn services(&self) -> Result<Vec<String>, StorageError> {
        let prefix = keys::catalog_services_prefix();
        self.catalog_list(&prefix, |k| {
            String::from_utf8(k[prefix.len()..].to_vec()).ok()
        })
    }

    /// (OTLP span kind, span name) of a service's spans, sorted by kind then name.
    pub fn operations(&self, service: &str) -> Result<Vec<(i32, String)>, StorageError> {
        let prefix = keys::catalog_operations_prefix(service);
        self.catalog_list(&prefix, |k| {
            keys::parse_catalog_operation(prefix.len(), k).map(|(kind, n)| (kind as i32, n))
        })
    }

    /// Attribute keys seen on spans (`resource == false`) or resources, sorted.
    pub fn attribute_keys(&self, resource: bool) -> Result<Vec<String>, StorageError> {
        let prefix = keys::catalog_attr_prefix(resource);
        self.catalog_list(&prefix, |k| {
            String::from_utf8(k[prefix.len()..].to_vec()).ok()
        })
    }

    /// Distinct indexed values of an attribute, sorted, at most `limit`. One seek per value.
    pub fn attribute_values(
        &self,
        resource: bool,
        key: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let Some(prefix) = IndexPrefix::new(&Seek::Attribute {
            resource,
            key: key.to_owned(),
            value: String::new(),
        }) else {
            return Ok(Vec::new());
        };
        // The prefix ends in the empty value's terminator: drop it to get `kind key \0`.
        let key_prefix = &prefix.lower(0)[..prefix.len() - 1];
        let index_cf = self.cf(CF_INDEX)?;
        let mut it = self.db.raw_iterator_cf(&index_cf);
        it.seek(key_prefix);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(k) = it.key() else { break };
            if !k.starts_with(key_prefix) || k.len() < key_prefix.len() + keys::SUFFIX_LEN + 1 {
                break;
            }
            let value = &k[key_prefix.len()..k.len() - keys::SUFFIX_LEN - 1];
            let next = [key_prefix, value, &[1]].concat();
            if let Ok(v) = std::str::from_utf8(value) {
                out.push(v.to_owned());
            }
            it.seek(&next);
        }
        it.status()?;
        Ok(out)
    }

    /// Deletes spans that started before now − retention, with their index keys. Returns how
    /// many were deleted. Run at open and periodically by the owner.
    pub fn enforce_retention(&self) -> Result<usize, StorageError> {
        let cutoff = now_ns().saturating_sub(self.opts.retention.as_nanos() as u64);
        let mut removed = 0;
        loop {
            let mut expired = Vec::new();
            self.scan(&Seek::Time, 0, cutoff.saturating_sub(1), &mut |c| {
                expired.push((c.trace_id, c.span_id, c.start_ns));
                Ok(if expired.len() >= 1000 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })?;
            if expired.is_empty() {
                return Ok(removed);
            }
            let (spans_cf, index_cf) = (self.cf(CF_SPANS)?, self.cf(CF_INDEX)?);
            let mut wb = WriteBatch::default();
            for (trace_id, span_id, start) in &expired {
                if let Some(s) = self.span(trace_id, span_id)? {
                    for prefix in index_prefixes(&s.origin, &s.span) {
                        wb.delete_cf(&index_cf, prefix.key(*start, trace_id, span_id));
                    }
                }
                // The time key goes even if the span is unreadable, or the loop never ends.
                wb.delete_cf(
                    &index_cf,
                    IndexPrefix::new(&Seek::Time)
                        .map(|p| p.key(*start, trace_id, span_id))
                        .unwrap_or_default(),
                );
                wb.delete_cf(&spans_cf, keys::span_key(trace_id, span_id));
            }
            self.db.write(wb)?;
            removed += expired.len();
        }
    }

    /// Flushes memtables so the on-disk form is compact (used on shutdown and by benchmarks).
    pub fn flush(&self) -> Result<(), StorageError> {
        for name in [CF_SPANS, CF_ORIGINS, CF_INDEX, CF_CATALOG] {
            self.db.flush_cf(&self.cf(name)?)?;
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<crate::db::Cf<'_>, StorageError> {
        cf(&self.db, name)
    }

    fn stored(&self, value: &[u8]) -> Result<StoredSpan, StorageError> {
        let (origin_id, span) = record::decode_span(value)?;
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

    fn catalog_list<T>(
        &self,
        prefix: &[u8],
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, StorageError> {
        let catalog_cf = self.cf(CF_CATALOG)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(&catalog_cf, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, _) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.extend(parse(&k));
        }
        Ok(out)
    }
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

/// Every index prefix a span is found under (besides its own key).
fn index_prefixes(origin: &Origin, span: &Span) -> Vec<IndexPrefix> {
    let service = origin.service_name();
    let mut seeks = vec![
        Seek::Time,
        Seek::Service(service.to_owned()),
        Seek::Operation {
            service: service.to_owned(),
            name: span.name.clone(),
        },
    ];
    let attrs = |resource: bool, kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        kvs.iter()
            .filter_map(move |kv| {
                Some(Seek::Attribute {
                    resource,
                    key: kv.key.clone(),
                    value: value_text(kv.value.as_ref()?)?,
                })
            })
            .collect::<Vec<_>>()
    };
    seeks.extend(attrs(false, &span.attributes));
    seeks.extend(attrs(true, origin.resource_attributes()));
    seeks.iter().filter_map(IndexPrefix::new).collect()
}

fn catalog_keys(origin: &Origin, span: &Span) -> Vec<Vec<u8>> {
    let service = origin.service_name();
    let kind = u8::try_from(span.kind).unwrap_or(0);
    let mut out = vec![
        keys::catalog_service(service),
        keys::catalog_operation(service, kind, &span.name),
    ];
    out.extend(
        span.attributes
            .iter()
            .map(|kv| keys::catalog_attr_key(false, &kv.key)),
    );
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
