//! Key layouts of the trace store's column families. Owns byte formats only; what is written
//! when is `store`'s.
//!
//! - `spans`: trace id (16) | span id (8). A trace is the contiguous range under its id.
//! - `index`: `kind byte | fields… | start ns (u64 BE) | span id`, where the fields are
//!   `\0`-terminated strings or an origin id. Partitions created with start-only keys (their
//!   catalog's `K` layout entry) end every key but the time key in the start alone
//!   (`kind | fields… | start ns`): a span id is 8 random bytes, which neither RocksDB's
//!   shared-prefix encoding nor zstd shrink, repeated in every key of a span; without it a
//!   key stands for every span of its partition that starts in that nanosecond, which the
//!   time keys under `T | start` list (usually one; a search checks its conditions on each
//!   span anyway). The time key (`T | start | span id`) holds the
//!   span's trace id as its value; every other key is resolved to it through the time key of
//!   the same start and span id, so the random trace id is stored once per span rather than
//!   once per key. Two spans of one partition with the same start nanosecond and span id
//!   share a time key (the later trace id wins; the other is still read by its trace id):
//!   span ids are 64 random bits, so only a sender reusing ids meets this. Partitions written
//!   before kept `start | trace id | span id` as every key's suffix (with empty values); the
//!   two are told apart by length and both are read. Within one prefix, keys sort by start
//!   time, so a search over a time window is one bounded range scan (newest first, by
//!   iterating backwards). A span is found by time, by its origin (`O | origin id`), by
//!   service and name, and by each span attribute.
//! - event keys in `index`: `E | name \0 | start | span id` and `e | key \0 value \0 | start |
//!   span id`, one per distinct event name and event attribute value of a span. Partitions
//!   created before them have none (their catalog has no event layout entry), so a seek on
//!   an event cannot narrow their spans.
//! - duration keys in `index`: `D | service \0 | bucket | start | span id`, the bucket a power
//!   of two ([`duration_bucket`]), so spans of at least a duration are the buckets from its
//!   own up. Partitions created before them have none (their catalog has no layout entry).
//! - origin keys in `index`: `s | service \0 | origin id` and `o | key \0 value \0 | origin id`,
//!   written once per origin and partition: a search on the service or a resource attribute
//!   finds the origins first, then walks their spans. Partitions written before origin keys
//!   hold `S | service \0 | suffix` and `r | key \0 value \0 | suffix` per span instead; both
//!   are read.
//! - `catalog`: service names, operations per service and span kind, attribute keys per
//!   scope; each written once, listed by prefix.

pub(crate) const TRACE_ID_LEN: usize = 16;
pub(crate) const SPAN_ID_LEN: usize = 8;
/// start ns | span id: the suffix of the time key, and of every index key in partitions
/// created before start-only keys.
pub(crate) const SUFFIX_LEN: usize = 8 + SPAN_ID_LEN;
/// start ns: the suffix of the keys other than the time key in partitions created with
/// start-only keys.
pub(crate) const START_SUFFIX_LEN: usize = 8;
/// The span id of an entry whose key holds only its start: every span starting then. No
/// stored span has it (an all-zero span id is rejected), and it sorts below every real id of
/// the same start, as the start-only key sorts below their keys.
pub(crate) const ANY_SPAN: SpanId = [0; SPAN_ID_LEN];
/// start ns | trace id | span id: the suffix of index keys written before trace ids moved
/// into the time key's value.
pub(crate) const LEGACY_SUFFIX_LEN: usize = 8 + TRACE_ID_LEN + SPAN_ID_LEN;

pub(crate) type TraceId = [u8; TRACE_ID_LEN];
pub(crate) type SpanId = [u8; SPAN_ID_LEN];

/// Which index a search walks. Strings with a `\0` cannot be indexed (they would make the
/// prefix ambiguous); [`IndexPrefix::new`] refuses them so the caller falls back to time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seek {
    /// Every span, by start time.
    Time,
    Service(String),
    Operation {
        service: String,
        name: String,
    },
    /// A span (`resource == false`) or resource attribute with this value, rendered as text
    /// (ints in decimal, bools as `true`/`false`).
    Attribute {
        resource: bool,
        key: String,
        value: String,
    },
    /// Spans lasting at least `min_ns` (and some shorter: durations are indexed by power of
    /// two), of one service or of all.
    Duration {
        service: Option<String>,
        min_ns: u64,
    },
    /// Spans with an event of this name.
    EventName(String),
    /// Spans with an event attribute with this value, rendered as for `Attribute`.
    EventAttribute {
        key: String,
        value: String,
    },
    /// Spans any of the seeks finds. When one of them cannot be narrowed by the index (a
    /// value it cannot hold, or a partition from before its keys), neither can the union.
    Any(Vec<Seek>),
    /// Spans every seek finds: the index keys of each walked together, each span once. The
    /// seeks that cannot be narrowed in a partition are left out there.
    All(Vec<Seek>),
}

const TIME: u8 = b'T';
const SERVICE: u8 = b'S';
const OPERATION: u8 = b'N';
const SPAN_ATTR: u8 = b'a';
const RESOURCE_ATTR: u8 = b'r';
const ORIGIN: u8 = b'O';
const DURATION: u8 = b'D';
const ORIGIN_SERVICE: u8 = b's';
const ORIGIN_ATTR: u8 = b'o';
const EVENT_NAME: u8 = b'E';
const EVENT_ATTR: u8 = b'e';
/// An origin id at the end of an origin key.
pub(crate) const ORIGIN_ID_LEN: usize = 8;

/// Longest attribute value put in the index; longer values are found by scanning.
pub(crate) const MAX_INDEXED_VALUE: usize = 256;

pub(crate) fn indexable(s: &str) -> bool {
    s.len() <= MAX_INDEXED_VALUE && !s.as_bytes().contains(&0)
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct IndexPrefix(Vec<u8>);

fn field(k: &mut Vec<u8>, s: &str) -> Option<()> {
    if !indexable(s) {
        return None;
    }
    k.extend_from_slice(s.as_bytes());
    k.push(0);
    Some(())
}

/// The prefix of the origin keys of a service (`attribute == None`) or of a resource
/// attribute's value; `None` when the strings cannot be indexed.
pub(crate) fn origin_key_prefix(attribute: Option<(&str, &str)>, service: &str) -> Option<Vec<u8>> {
    let mut k = Vec::with_capacity(48);
    match attribute {
        None => {
            k.push(ORIGIN_SERVICE);
            field(&mut k, service)?;
        }
        Some((key, value)) => {
            k.push(ORIGIN_ATTR);
            field(&mut k, key)?;
            field(&mut k, value)?;
        }
    }
    Some(k)
}

/// Where an attribute's values are indexed.
pub(crate) enum AttrKeys {
    /// Per span: span attributes.
    Span,
    /// Per origin: resource attributes.
    Origin,
    /// Per span, in partitions from before origin keys: resource attributes.
    LegacyResource,
}

/// The prefix of every key of an attribute in `keys`, whatever its value.
pub(crate) fn attr_key_prefix(keys: AttrKeys, key: &str) -> Option<Vec<u8>> {
    let mut k = vec![match keys {
        AttrKeys::Span => SPAN_ATTR,
        AttrKeys::Origin => ORIGIN_ATTR,
        AttrKeys::LegacyResource => RESOURCE_ATTR,
    }];
    field(&mut k, key)?;
    Some(k)
}

/// The power-of-two bucket of a duration: bucket `b` holds [2^(b-1), 2^b) ns, bucket 0 holds
/// 0 ns.
pub(crate) fn duration_bucket(ns: u64) -> u8 {
    (u64::BITS - ns.leading_zeros()) as u8
}

/// The highest bucket.
pub(crate) const MAX_DURATION_BUCKET: u8 = u64::BITS as u8;

impl IndexPrefix {
    /// The spans of a service in one duration bucket.
    pub(crate) fn duration(service: &str, bucket: u8) -> Option<IndexPrefix> {
        let mut k = Vec::with_capacity(3 + service.len());
        k.push(DURATION);
        field(&mut k, service)?;
        k.push(bucket);
        Some(IndexPrefix(k))
    }

    /// Every span.
    pub(crate) fn time() -> IndexPrefix {
        IndexPrefix(vec![TIME])
    }

    /// The spans of one origin.
    pub(crate) fn origin(id: u64) -> IndexPrefix {
        let mut k = Vec::with_capacity(1 + ORIGIN_ID_LEN);
        k.push(ORIGIN);
        k.extend_from_slice(&id.to_be_bytes());
        IndexPrefix(k)
    }

    /// The spans of one service and name.
    pub(crate) fn operation(service: &str, name: &str) -> Option<IndexPrefix> {
        let mut k = Vec::with_capacity(3 + service.len() + name.len());
        k.push(OPERATION);
        field(&mut k, service)?;
        field(&mut k, name)?;
        Some(IndexPrefix(k))
    }

    /// The spans with a span (`resource == false`) or, in stores from before origin keys,
    /// resource attribute value.
    pub(crate) fn attribute(resource: bool, key: &str, value: &str) -> Option<IndexPrefix> {
        let mut k = Vec::with_capacity(3 + key.len() + value.len());
        k.push(if resource { RESOURCE_ATTR } else { SPAN_ATTR });
        field(&mut k, key)?;
        field(&mut k, value)?;
        Some(IndexPrefix(k))
    }

    /// The spans with an event of this name.
    pub(crate) fn event_name(name: &str) -> Option<IndexPrefix> {
        let mut k = Vec::with_capacity(2 + name.len());
        k.push(EVENT_NAME);
        field(&mut k, name)?;
        Some(IndexPrefix(k))
    }

    /// The spans with an event attribute value.
    pub(crate) fn event_attribute(key: &str, value: &str) -> Option<IndexPrefix> {
        let mut k = Vec::with_capacity(3 + key.len() + value.len());
        k.push(EVENT_ATTR);
        field(&mut k, key)?;
        field(&mut k, value)?;
        Some(IndexPrefix(k))
    }

    /// The per-span prefix of a seek as stores before origin keys wrote it (and, for time,
    /// operations and span attributes, as stores write it now).
    pub(crate) fn new(seek: &Seek) -> Option<IndexPrefix> {
        match seek {
            Seek::Time => Some(IndexPrefix::time()),
            Seek::Service(s) => {
                let mut k = vec![SERVICE];
                field(&mut k, s)?;
                Some(IndexPrefix(k))
            }
            Seek::Operation { service, name } => IndexPrefix::operation(service, name),
            Seek::Attribute {
                resource,
                key,
                value,
            } => IndexPrefix::attribute(*resource, key, value),
            Seek::EventName(name) => IndexPrefix::event_name(name),
            Seek::EventAttribute { key, value } => IndexPrefix::event_attribute(key, value),
            // Several prefixes (a bucket each, or the members'), chosen per partition by the
            // store.
            Seek::Duration { .. } | Seek::Any(_) | Seek::All(_) => None,
        }
    }

    /// A key of a partition created with start-only keys (not the time key's form).
    pub(crate) fn start_key(&self, start_ns: u64) -> Vec<u8> {
        self.lower(start_ns)
    }

    pub(crate) fn key(&self, start_ns: u64, span: &SpanId) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.0.len() + SUFFIX_LEN);
        k.extend_from_slice(&self.0);
        k.extend_from_slice(&start_ns.to_be_bytes());
        k.extend_from_slice(span);
        k
    }

    /// A key as partitions written before trace ids moved into the time key have them.
    #[cfg(test)]
    pub(crate) fn legacy_key(&self, start_ns: u64, trace: &TraceId, span: &SpanId) -> Vec<u8> {
        [
            &self.key(start_ns, &[0; SPAN_ID_LEN])[..self.0.len() + 8],
            trace,
            span,
        ]
        .concat()
    }

    /// Below every key at or after `start_ns`.
    pub(crate) fn lower(&self, start_ns: u64) -> Vec<u8> {
        [&self.0[..], &start_ns.to_be_bytes()].concat()
    }

    /// Above every key at `end_ns`, in either suffix form.
    pub(crate) fn upper(&self, end_ns: u64) -> Vec<u8> {
        [
            &self.0[..],
            &end_ns.to_be_bytes(),
            &[0xff; LEGACY_SUFFIX_LEN - 8],
        ]
        .concat()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// An index entry: when its span started, and its ids (the trace id only if the key or value
/// holds it; otherwise it is the time key's value; the span id [`ANY_SPAN`] when the key holds
/// only the start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) start_ns: u64,
    pub(crate) span_id: SpanId,
    pub(crate) trace_id: Option<TraceId>,
}

impl Entry {
    /// Where the entry sorts among the keys of one prefix: start, then span id.
    pub(crate) fn at(&self) -> (u64, SpanId) {
        (self.start_ns, self.span_id)
    }
}

/// The entry of an index key with a prefix of `prefix_len` bytes and its value; `None` when
/// the key has neither suffix length.
pub(crate) fn parse_entry(key: &[u8], prefix_len: usize, value: &[u8]) -> Option<Entry> {
    let s = key.get(prefix_len..)?;
    let start_ns = u64::from_be_bytes(s.get(..8)?.try_into().ok()?);
    let (trace_id, span_id) = match s.len() {
        START_SUFFIX_LEN => (None, ANY_SPAN),
        SUFFIX_LEN => (value.try_into().ok(), s[8..].try_into().ok()?),
        LEGACY_SUFFIX_LEN => (
            Some(s[8..8 + TRACE_ID_LEN].try_into().ok()?),
            s[8 + TRACE_ID_LEN..].try_into().ok()?,
        ),
        _ => return None,
    };
    Some(Entry {
        start_ns,
        span_id,
        trace_id,
    })
}

pub(crate) fn span_key(trace: &TraceId, span: &SpanId) -> [u8; TRACE_ID_LEN + SPAN_ID_LEN] {
    let mut k = [0; TRACE_ID_LEN + SPAN_ID_LEN];
    k[..TRACE_ID_LEN].copy_from_slice(trace);
    k[TRACE_ID_LEN..].copy_from_slice(span);
    k
}

const CAT_SERVICE: u8 = b'S';
const CAT_OPERATION: u8 = b'O';
const CAT_SPAN_KEY: u8 = b'a';
const CAT_RESOURCE_KEY: u8 = b'r';
/// Present in partitions created with duration keys.
const CAT_DURATION_LAYOUT: u8 = b'D';
/// Present in partitions created with event keys.
const CAT_EVENT_LAYOUT: u8 = b'E';
/// Present in partitions created with start-only keys.
const CAT_START_ONLY_LAYOUT: u8 = b'K';

pub(crate) fn catalog_duration_layout() -> Vec<u8> {
    vec![CAT_DURATION_LAYOUT]
}

pub(crate) fn catalog_event_layout() -> Vec<u8> {
    vec![CAT_EVENT_LAYOUT]
}

pub(crate) fn catalog_start_only_layout() -> Vec<u8> {
    vec![CAT_START_ONLY_LAYOUT]
}

pub(crate) fn catalog_service(service: &str) -> Vec<u8> {
    [&[CAT_SERVICE][..], service.as_bytes()].concat()
}

pub(crate) fn catalog_operations_prefix(service: &str) -> Vec<u8> {
    [&[CAT_OPERATION][..], service.as_bytes(), &[0]].concat()
}

/// Operation entries: service \0 kind \0 name (kind as the OTLP enum number).
pub(crate) fn catalog_operation(service: &str, kind: u8, name: &str) -> Vec<u8> {
    [
        &catalog_operations_prefix(service)[..],
        &[kind, 0],
        name.as_bytes(),
    ]
    .concat()
}

pub(crate) fn parse_catalog_operation(prefix_len: usize, key: &[u8]) -> Option<(u8, String)> {
    let rest = key.get(prefix_len..)?;
    let (&kind, rest) = rest.split_first()?;
    let name = rest.strip_prefix(&[0])?;
    Some((kind, String::from_utf8(name.to_vec()).ok()?))
}

pub(crate) fn catalog_services_prefix() -> Vec<u8> {
    vec![CAT_SERVICE]
}

pub(crate) fn catalog_attr_key(resource: bool, key: &str) -> Vec<u8> {
    [&catalog_attr_prefix(resource)[..], key.as_bytes()].concat()
}

pub(crate) fn catalog_attr_prefix(resource: bool) -> Vec<u8> {
    vec![if resource {
        CAT_RESOURCE_KEY
    } else {
        CAT_SPAN_KEY
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strings_with_nul_or_too_long_are_not_indexed() {
        assert!(IndexPrefix::new(&Seek::Service("a\0b".into())).is_none());
        assert!(IndexPrefix::new(&Seek::Service("x".repeat(MAX_INDEXED_VALUE + 1))).is_none());
        assert!(IndexPrefix::new(&Seek::Service("x".repeat(MAX_INDEXED_VALUE))).is_some());
    }

    #[test]
    fn duration_buckets_are_powers_of_two() {
        assert_eq!(duration_bucket(0), 0);
        assert_eq!(duration_bucket(1), 1);
        assert_eq!(duration_bucket(1023), 10);
        assert_eq!(duration_bucket(1024), 11);
        assert_eq!(duration_bucket(u64::MAX), MAX_DURATION_BUCKET);
    }

    #[test]
    fn operation_catalog_round_trips() {
        let p = catalog_operations_prefix("svc");
        let k = catalog_operation("svc", 2, "GET /x");
        assert_eq!(
            parse_catalog_operation(p.len(), &k),
            Some((2, "GET /x".to_owned()))
        );
        assert!(!catalog_operation("svc2", 2, "x").starts_with(&p));
    }

    proptest! {
        #[test]
        fn index_keys_sort_by_start_time_within_a_prefix_and_parse_back(
            svc in "[a-z]{0,8}", a in any::<u64>(), b in any::<u64>(),
            t1 in any::<[u8; 16]>(), t2 in any::<[u8; 16]>(), s in any::<[u8; 8]>(),
        ) {
            let p = IndexPrefix::new(&Seek::Service(svc)).unwrap();
            let ka = p.key(a, &s);
            let kb = p.legacy_key(b, &t2, &s);
            let kc = p.start_key(a);
            if a < b { prop_assert!(ka < kb); }
            if b < a { prop_assert!(kb < ka); }
            prop_assert!(p.lower(a) <= ka && ka <= p.upper(a));
            prop_assert!(p.lower(b) <= kb && kb <= p.upper(b));
            let e = |start_ns, trace_id| Some(Entry { start_ns, span_id: s, trace_id });
            prop_assert_eq!(parse_entry(&ka, p.len(), &t1), e(a, Some(t1)));
            prop_assert_eq!(parse_entry(&ka, p.len(), b""), e(a, None));
            prop_assert_eq!(parse_entry(&kb, p.len(), b""), e(b, Some(t2)));
            prop_assert_eq!(ka.len(), p.len() + SUFFIX_LEN);
            // A start-only key sorts just below the full keys of its start, and above every
            // key of an earlier one, so a backward walk meets entries in falling (start, id).
            prop_assert!(p.lower(a) <= kc && kc < ka && kc <= p.upper(a));
            if b < a { prop_assert!(kb < kc); }
            let any = Entry { start_ns: a, span_id: ANY_SPAN, trace_id: None };
            prop_assert_eq!(parse_entry(&kc, p.len(), b""), Some(any));
            prop_assert!(any.at() < (a, s) || s == ANY_SPAN);
        }

        #[test]
        fn service_prefixes_never_nest(x in "[a-z]{1,6}", y in "[a-z]{1,6}") {
            prop_assume!(x != y);
            let px = IndexPrefix::new(&Seek::Service(x)).unwrap().0;
            let py = IndexPrefix::new(&Seek::Service(y)).unwrap().0;
            prop_assert!(!px.starts_with(&py) && !py.starts_with(&px));
        }
    }
}
