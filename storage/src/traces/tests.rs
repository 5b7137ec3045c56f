use super::*;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn span(trace: u8, id: u8, name: &str, start_ns: u64, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        kind: 2,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + 1_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn batch(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", Value::StringValue(service.into())),
                kv("host.name", Value::StringValue("h1".into())),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

/// The per-span index prefixes of stores from before origin keys: the service and every
/// resource attribute beside time, operation and span attributes.
fn legacy_index_prefixes(origin: &Origin, span: &Span) -> Vec<IndexPrefix> {
    let service = origin.service_name().to_owned();
    let mut seeks = vec![
        Seek::Time,
        Seek::Service(service.clone()),
        Seek::Operation {
            service,
            name: span.name.clone(),
        },
    ];
    for (resource, kvs) in [
        (false, &span.attributes[..]),
        (true, origin.resource_attributes()),
    ] {
        seeks.extend(kvs.iter().map(|kv| Seek::Attribute {
            resource,
            key: kv.key.clone(),
            value: value_text(kv.value.as_ref().unwrap()).unwrap(),
        }));
    }
    seeks.iter().filter_map(IndexPrefix::new).collect()
}

fn ids(store: &TraceStore, seek: Seek, start: u64, end: u64) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    store
        .scan(&seek, start, end, &mut |c| {
            out.push((c.trace_id[0], c.span_id[0]));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    out
}

#[test]
fn a_trace_is_read_back_whole_with_its_origin_and_found_through_each_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
    let t0 = now_ns() - 10_000_000_000;
    let report = store
        .write(&[
            batch(
                "front",
                vec![span(
                    1,
                    1,
                    "GET /",
                    t0,
                    vec![kv("http.status_code", Value::IntValue(500))],
                )],
            ),
            batch(
                "back",
                vec![
                    span(1, 2, "query", t0 + 5, vec![]),
                    span(2, 3, "query", t0 + 9, vec![]),
                ],
            ),
        ])
        .unwrap();
    assert_eq!(
        report,
        WriteReport {
            spans_written: 3,
            rejected: 0,
            reason: None
        }
    );

    let trace = store.trace(&[1; 16]).unwrap();
    assert_eq!(trace.len(), 2);
    assert_eq!(trace[0].origin.service_name(), "front");
    assert_eq!(trace[1].origin.service_name(), "back");
    assert_eq!(trace[1].span.name, "query");
    assert!(store.trace(&[9; 16]).unwrap().is_empty());
    assert!(store.trace(&[1; 3]).unwrap().is_empty());

    let end = t0 + 100;
    assert_eq!(
        ids(&store, Seek::Time, t0, end),
        vec![(2, 3), (1, 2), (1, 1)],
        "newest first"
    );
    assert_eq!(
        ids(&store, Seek::Service("back".into()), t0, end),
        vec![(2, 3), (1, 2)]
    );
    assert_eq!(
        ids(&store, Seek::Service("back".into()), t0, t0 + 8),
        vec![(1, 2)],
        "window bounds"
    );
    assert_eq!(
        ids(
            &store,
            Seek::Operation {
                service: "front".into(),
                name: "GET /".into()
            },
            t0,
            end
        ),
        vec![(1, 1)]
    );
    let status = Seek::Attribute {
        resource: false,
        key: "http.status_code".into(),
        value: "500".into(),
    };
    assert_eq!(ids(&store, status, t0, end), vec![(1, 1)]);
    let host = Seek::Attribute {
        resource: true,
        key: "host.name".into(),
        value: "h1".into(),
    };
    assert_eq!(ids(&store, host, t0, end).len(), 3);

    assert_eq!(store.services().unwrap(), vec!["back", "front"]);
    assert_eq!(
        store.operations("front").unwrap(),
        vec![(2, "GET /".to_owned())]
    );
    assert_eq!(
        store.attribute_keys(true).unwrap(),
        vec!["host.name", "service.name"]
    );
    assert_eq!(
        store.attribute_values(true, "service.name", 10).unwrap(),
        vec!["back", "front"]
    );
    assert_eq!(
        store.attribute_values(true, "service.name", 1).unwrap(),
        vec!["back"]
    );
}

#[test]
fn malformed_and_expired_spans_are_rejected_with_a_reason_the_rest_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = TraceStore::open(
        dir.path(),
        TraceStoreOptions {
            retention: Duration::from_secs(3600),
            wal_fsync: false,
            ..TraceStoreOptions::default()
        },
    )
    .unwrap();
    let now = now_ns();
    let mut bad_id = span(1, 1, "x", now, vec![]);
    bad_id.trace_id = vec![1; 3];
    let report = store
        .write(&[batch(
            "s",
            vec![
                bad_id,
                span(1, 2, "old", now - 7_200_000_000_000, vec![]),
                span(1, 3, "ok", now, vec![]),
            ],
        )])
        .unwrap();
    assert_eq!(report.spans_written, 1);
    assert_eq!(report.rejected, 2);
    assert_eq!(report.reason.as_deref(), Some("trace id must be 16 bytes"));
    assert_eq!(store.trace(&[1; 16]).unwrap().len(), 1);
}

fn opts(retention_secs: u64) -> TraceStoreOptions {
    TraceStoreOptions {
        retention: Duration::from_secs(retention_secs),
        ..TraceStoreOptions::default()
    }
}

const HOUR: u64 = 3_600_000_000_000;

/// A store of 3 h of retention (hour-wide partitions) holding span (1, 1) of service `old`
/// two hours back, whose partition ended over an hour ago, and span (2, 1) of `s` now.
fn store_with_an_old_and_a_new_span(dir: &std::path::Path) -> TraceStore {
    let now = now_ns();
    let store = TraceStore::open(dir, opts(3 * 3600)).unwrap();
    store
        .write(&[
            batch("old", vec![span(1, 1, "old", now - 2 * HOUR, vec![])]),
            batch("s", vec![span(2, 1, "new", now, vec![])]),
        ])
        .unwrap();
    store
}

#[test]
fn retention_drops_whole_partitions_with_their_catalog_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store_with_an_old_and_a_new_span(dir.path());
        assert_eq!(store.services().unwrap(), ["old", "s"]);
        assert_eq!(store.parts.all().len(), 2);
    }
    // An hour now: the partition of the old span ended over an hour ago.
    let store = TraceStore::open(dir.path(), opts(3600)).unwrap();
    assert!(store.trace(&[1; 16]).unwrap().is_empty());
    assert_eq!(
        store.trace(&[2; 16]).unwrap().len(),
        1,
        "recent span kept across reopen"
    );
    assert_eq!(
        ids(&store, Seek::Service("s".into()), 0, u64::MAX),
        vec![(2, 1)]
    );
    assert_eq!(ids(&store, Seek::Time, 0, u64::MAX), vec![(2, 1)]);
    assert_eq!(
        store.services().unwrap(),
        ["s"],
        "the catalog shrinks with retention"
    );
    let names = Db::list_cf(&Options::default(), dir.path()).unwrap();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("spans_")).count(),
        1,
        "{names:?}"
    );
}

#[test]
fn finished_partitions_are_compacted_once_and_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_an_old_and_a_new_span(dir.path());
    store.flush().unwrap();
    let level0 = |part: &Part| {
        let cf = store.cf(&part.index_cf()).unwrap();
        store
            .db
            .property_int_value_cf(&cf, "rocksdb.num-files-at-level0")
            .unwrap()
            .unwrap()
    };
    let [new, old] = &store.parts.all()[..] else {
        panic!("two partitions")
    };
    assert_eq!((level0(old), level0(new)), (1, 1));
    assert_eq!(store.compact_finished().unwrap(), 1);
    assert_eq!((level0(old), level0(new)), (0, 1), "only the finished one");
    assert_eq!(store.compact_finished().unwrap(), 0, "once");
    assert_eq!(ids(&store, Seek::Time, 0, u64::MAX), [(2, 1), (1, 1)]);
    assert_eq!(store.trace(&[1; 16]).unwrap().len(), 1);
}

#[test]
fn a_trace_across_partitions_reads_back_whole_and_scans_newest_partition_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = TraceStore::open(dir.path(), opts(3 * 3600)).unwrap();
    let t = now_ns() - 2 * HOUR;
    let hour_start = t - t % HOUR;
    store
        .write(&[batch(
            "s",
            vec![
                span(7, 2, "late child", hour_start + HOUR + 5, vec![]),
                span(7, 1, "root", hour_start + HOUR - 5, vec![]),
            ],
        )])
        .unwrap();
    let trace = store.trace(&[7; 16]).unwrap();
    let names: Vec<&str> = trace.iter().map(|s| s.span.name.as_str()).collect();
    assert_eq!(
        names,
        ["root", "late child"],
        "span id order across partitions"
    );
    assert_eq!(ids(&store, Seek::Time, 0, u64::MAX), vec![(7, 2), (7, 1)]);
    assert_eq!(
        ids(&store, Seek::Time, hour_start, hour_start + HOUR - 1),
        vec![(7, 1)]
    );
    assert_eq!(
        store.span(&[7; 16], &[2; 8]).unwrap().unwrap().span.name,
        "late child"
    );
    assert_eq!(store.operations("s").unwrap().len(), 2);
}

/// A store written before partitions: `spans`, `index` and `catalog` families with the same
/// keys (the catalog unprefixed). It is read as one partition and dropped whole once its
/// newest span is past retention.
#[test]
fn a_store_from_before_partitions_is_read_and_then_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ns();
    let legacy_span = span(9, 1, "legacy", now - 2 * HOUR, vec![]);
    {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        let db = Db::open_cf(&o, dir.path(), ["origins", "spans", "index", "catalog"]).unwrap();
        let rs = batch("old-svc", vec![]);
        let origin = Origin::new(&rs, &rs.scope_spans[0]);
        let bytes = origin.encode();
        let id = Origin::id(&bytes);
        let cf = |n: &str| db.cf_handle(n).unwrap();
        db.put_cf(&cf("origins"), id.to_be_bytes(), &bytes).unwrap();
        db.put_cf(
            &cf("spans"),
            keys::span_key(&[9; 16], &[1; 8]),
            record::encode_span(id, &legacy_span),
        )
        .unwrap();
        for p in legacy_index_prefixes(&origin, &legacy_span) {
            db.put_cf(
                &cf("index"),
                p.legacy_key(legacy_span.start_time_unix_nano, &[9; 16], &[1; 8]),
                b"",
            )
            .unwrap();
        }
        for k in [keys::catalog_operation("old-svc", 2, "legacy")]
            .into_iter()
            .chain(origin_catalog_keys(&origin))
        {
            db.put_cf(&cf("catalog"), k, b"").unwrap();
        }
    }
    {
        let store = TraceStore::open(dir.path(), opts(3 * 3600)).unwrap();
        store
            .write(&[batch("s", vec![span(2, 1, "new", now, vec![])])])
            .unwrap();
        assert_eq!(store.trace(&[9; 16]).unwrap()[0].span.name, "legacy");
        assert_eq!(store.services().unwrap(), ["old-svc", "s"]);
        assert_eq!(ids(&store, Seek::Time, 0, u64::MAX), vec![(2, 1), (9, 1)]);
        assert_eq!(
            ids(&store, Seek::Service("old-svc".into()), 0, u64::MAX),
            vec![(9, 1)]
        );
    }
    let store = TraceStore::open(dir.path(), opts(3600)).unwrap();
    assert!(store.trace(&[9; 16]).unwrap().is_empty());
    assert_eq!(store.services().unwrap(), ["s"]);
    let names = Db::list_cf(&Options::default(), dir.path()).unwrap();
    assert!(
        !names.iter().any(|n| n == "spans" || n == "catalog"),
        "{names:?}"
    );
}

#[test]
fn unindexable_seek_falls_back_to_the_time_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
    let now = now_ns();
    store
        .write(&[batch("s", vec![span(1, 1, "a", now, vec![])])])
        .unwrap();
    assert_eq!(
        ids(&store, Seek::Service("with\0nul".into()), 0, u64::MAX),
        vec![(1, 1)]
    );
}

#[test]
fn a_partition_written_before_origin_keys_and_after_reads_as_one_list() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ns() - 60_000_000_000;
    let spans_cf;
    {
        let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
        store
            .write(&[batch("svc", vec![span(1, 1, "new", now, vec![])])])
            .unwrap();
        spans_cf = store.parts.all()[0].spans_cf();
    }
    // The same partition, as a binary from before origin keys wrote a later span into it.
    let old = span(2, 1, "old", now + 1, vec![]);
    {
        let names = Db::list_cf(&Options::default(), dir.path()).unwrap();
        let db = Db::open_cf(&Options::default(), dir.path(), &names).unwrap();
        let rs = batch("svc", vec![]);
        let origin = Origin::new(&rs, &rs.scope_spans[0]);
        let mut record = Origin::id(&origin.encode()).to_be_bytes().to_vec();
        prost::Message::encode(&old, &mut record).unwrap();
        let cf = |n: &str| db.cf_handle(n).unwrap();
        db.put_cf(&cf(&spans_cf), keys::span_key(&[2; 16], &[1; 8]), record)
            .unwrap();
        let index_cf = spans_cf.replacen("spans_", "index_", 1);
        for p in legacy_index_prefixes(&origin, &old) {
            db.put_cf(
                &cf(&index_cf),
                p.legacy_key(now + 1, &[2; 16], &[1; 8]),
                b"",
            )
            .unwrap();
        }
    }
    let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
    let host = Seek::Attribute {
        resource: true,
        key: "host.name".into(),
        value: "h1".into(),
    };
    for seek in [Seek::Service("svc".into()), host, Seek::Time] {
        assert_eq!(
            ids(&store, seek.clone(), 0, u64::MAX),
            vec![(2, 1), (1, 1)],
            "{seek:?}"
        );
    }
    assert!(ids(&store, Seek::Service("other".into()), 0, u64::MAX).is_empty());
    assert_eq!(
        store.attribute_values(true, "host.name", 10).unwrap(),
        ["h1"]
    );
    let old_back = &store.trace(&[2; 16]).unwrap()[0];
    assert_eq!(
        (old_back.span.name.as_str(), old_back.origin.service_name()),
        ("old", "svc")
    );
}

#[test]
fn spans_of_many_origins_come_newest_first_and_resource_values_are_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
    let now = now_ns() - 60_000_000_000;
    // Three instances of one service interleaved in time, each its own origin.
    for i in 0..9u8 {
        let mut rs = batch("svc", vec![span(i + 1, 1, "op", now + i as u64, vec![])]);
        rs.resource.as_mut().unwrap().attributes.push(kv(
            "service.instance.id",
            Value::StringValue(format!("i{}", i % 3)),
        ));
        store.write(&[rs]).unwrap();
    }
    let newest_first: Vec<(u8, u8)> = (1..=9).rev().map(|t| (t, 1)).collect();
    assert_eq!(
        ids(&store, Seek::Service("svc".into()), 0, u64::MAX),
        newest_first
    );
    let one = Seek::Attribute {
        resource: true,
        key: "service.instance.id".into(),
        value: "i1".into(),
    };
    assert_eq!(ids(&store, one, 0, u64::MAX), vec![(8, 1), (5, 1), (2, 1)]);
    assert_eq!(
        ids(&store, Seek::Service("svc".into()), now + 2, now + 4),
        vec![(5, 1), (4, 1), (3, 1)]
    );
    assert_eq!(
        store
            .attribute_values(true, "service.instance.id", 10)
            .unwrap(),
        ["i0", "i1", "i2"]
    );
    assert_eq!(
        store
            .attribute_values(true, "service.instance.id", 2)
            .unwrap(),
        ["i0", "i1"]
    );
}

#[test]
fn duration_seeks_find_long_spans_by_their_bucket_and_fall_back_before_duration_keys() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ns() - 60_000_000_000;
    let with_duration = |trace: u8, start: u64, ms: u64| {
        let mut s = span(trace, 1, "op", start, vec![]);
        s.end_time_unix_nano = start + ms * 1_000_000;
        s
    };
    let long = Seek::Duration {
        service: Some("a".into()),
        min_ns: 100_000_000,
    };
    let long_anywhere = Seek::Duration {
        service: None,
        min_ns: 100_000_000,
    };
    let index_cf;
    {
        let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
        store
            .write(&[
                batch(
                    "a",
                    vec![
                        with_duration(1, now, 5),
                        with_duration(2, now + 1, 150),
                        with_duration(3, now + 2, 2000),
                        // In the 100 ms bucket ([67.1, 134.2) ms) but shorter: the caller's
                        // check drops it.
                        with_duration(4, now + 3, 90),
                    ],
                ),
                batch("b", vec![with_duration(5, now + 4, 300)]),
            ])
            .unwrap();
        assert_eq!(
            ids(&store, long.clone(), 0, u64::MAX),
            [(4, 1), (3, 1), (2, 1)]
        );
        assert_eq!(
            ids(&store, long_anywhere.clone(), 0, u64::MAX),
            [(5, 1), (4, 1), (3, 1), (2, 1)]
        );
        assert_eq!(
            ids(&store, long.clone(), now + 2, u64::MAX),
            [(4, 1), (3, 1)]
        );
        index_cf = store.parts.all()[0].index_cf();
    }
    // The same partition as if created before duration keys: no layout entry, no keys.
    let forgotten = forget_index_keys(dir.path(), &index_cf, |k| {
        k[0] == b'D' || k.starts_with(b"CD")
    });
    assert!(forgotten > 1, "{forgotten}");
    let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
    assert!(!store.parts.all()[0].durations);
    assert_eq!(ids(&store, long, 0, u64::MAX).len(), 4, "every span of a");
    assert_eq!(
        ids(&store, long_anywhere, 0, u64::MAX).len(),
        5,
        "every span"
    );
}

/// Deletes the keys `doomed` picks from a closed store's index family `index_cf`, as if an
/// earlier version had written the partition; how many.
fn forget_index_keys(
    dir: &std::path::Path,
    index_cf: &str,
    doomed: impl Fn(&[u8]) -> bool,
) -> usize {
    let names = Db::list_cf(&Options::default(), dir).unwrap();
    let db = Db::open_cf(&Options::default(), dir, &names).unwrap();
    let cf = db.cf_handle(index_cf).unwrap();
    let keys: Vec<Box<[u8]>> = db
        .iterator_cf(&cf, rocksdb::IteratorMode::Start)
        .map(|kv| kv.unwrap().0)
        .filter(|k| doomed(k))
        .collect();
    for k in &keys {
        db.delete_cf(&cf, k).unwrap();
    }
    keys.len()
}

/// A Jaeger tag: a span, resource or event attribute with this value.
fn tag(key: &str, value: &str) -> Seek {
    let attribute = |resource| Seek::Attribute {
        resource,
        key: key.into(),
        value: value.into(),
    };
    Seek::Any(vec![
        attribute(false),
        attribute(true),
        Seek::EventAttribute {
            key: key.into(),
            value: value.into(),
        },
    ])
}

fn event(name: &str, attrs: Vec<KeyValue>) -> opentelemetry_proto::tonic::trace::v1::span::Event {
    opentelemetry_proto::tonic::trace::v1::span::Event {
        name: name.into(),
        attributes: attrs,
        ..Default::default()
    }
}

#[test]
fn tags_are_found_by_span_resource_and_event_attributes_all_on_one_span() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ns() - 60_000_000_000;
    let s = |v: &str| Value::StringValue(v.into());
    let mut logged = span(1, 1, "op", now, vec![]);
    logged.events = vec![
        event("exception", vec![kv("order.id", s("o-7"))]),
        event("retry", vec![kv("order.id", s("o-7"))]),
    ];
    let attributed = span(2, 1, "op", now + 1, vec![kv("k1", s("v1"))]);
    // Trace 3: one tag on each of two spans, which Jaeger does not match.
    let mut first = span(3, 1, "op", now + 2, vec![kv("k1", s("v1"))]);
    first.events = vec![event("log", vec![])];
    let mut second = span(3, 2, "op", now + 3, vec![]);
    second.events = vec![event("log", vec![kv("k2", s("v2"))])];
    // The same value as a span and as an event attribute: one candidate.
    let mut twice = span(4, 1, "op", now + 4, vec![kv("dup", s("x"))]);
    twice.events = vec![event("log", vec![kv("dup", s("x"))])];
    let mut elsewhere = batch(
        "b",
        vec![span(5, 1, "op", now + 5, vec![kv("k1", s("v1"))])],
    );
    elsewhere.resource.as_mut().unwrap().attributes[1] = kv("host.name", s("h2"));
    let all = |tags: Vec<Seek>| {
        Seek::All(
            [Seek::Service("a".into())]
                .into_iter()
                .chain(tags)
                .collect(),
        )
    };
    let index_cf;
    {
        let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
        store
            .write(&[
                batch("a", vec![logged, attributed, first, second, twice]),
                elsewhere,
            ])
            .unwrap();
        assert!(store.parts.all()[0].events);
        // Only in event attributes, of two events of one span.
        assert_eq!(
            ids(&store, all(vec![tag("order.id", "o-7")]), 0, u64::MAX),
            [(1, 1)]
        );
        assert_eq!(
            ids(&store, Seek::EventName("exception".into()), 0, u64::MAX),
            [(1, 1)]
        );
        // Only in a resource attribute.
        assert_eq!(ids(&store, tag("host.name", "h2"), 0, u64::MAX), [(5, 1)]);
        assert_eq!(
            ids(
                &store,
                all(vec![tag("host.name", "h1"), tag("k1", "v1")]),
                0,
                u64::MAX
            ),
            [(3, 1), (2, 1)]
        );
        // Two tags on different spans of one trace: no span holds both.
        assert_eq!(
            ids(
                &store,
                all(vec![tag("k1", "v1"), tag("k2", "v2")]),
                0,
                u64::MAX
            ),
            []
        );
        assert_eq!(
            ids(&store, all(vec![tag("k2", "v2")]), 0, u64::MAX),
            [(3, 2)]
        );
        assert_eq!(ids(&store, tag("dup", "x"), 0, u64::MAX), [(4, 1)]);
        assert_eq!(
            ids(&store, all(vec![tag("k1", "v1")]), now + 2, now + 2),
            [(3, 1)]
        );
        index_cf = store.parts.all()[0].index_cf();
    }
    // The same partition as if created before event keys: no layout entry, no keys. An
    // event condition no longer narrows it; the service still does.
    let forgotten = forget_index_keys(dir.path(), &index_cf, |k| {
        k[0] == b'e' || k[0] == b'E' || k.starts_with(b"CE")
    });
    assert!(forgotten > 4, "{forgotten}");
    let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
    assert!(!store.parts.all()[0].events);
    // Any tag might be an event attribute there, so none narrows it: the service's spans.
    for tags in [
        vec![tag("order.id", "o-7")],
        vec![tag("k1", "v1"), tag("k2", "v2")],
    ] {
        assert_eq!(
            ids(&store, all(tags), 0, u64::MAX),
            [(4, 1), (3, 2), (3, 1), (2, 1), (1, 1)]
        );
    }
}

/// The per-span index keys of a closed store's family but the time keys (not the catalog,
/// nor the origin keys, which end in an origin id).
fn searched_keys(dir: &std::path::Path, index_cf: &str) -> Vec<Box<[u8]>> {
    let names = Db::list_cf(&Options::default(), dir).unwrap();
    let db = Db::open_cf_for_read_only(&Options::default(), dir, &names, false).unwrap();
    let cf = db.cf_handle(index_cf).unwrap();
    searched_keys_of(&db, &cf)
}

#[test]
fn start_only_keys_stand_for_every_span_of_their_start() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ns() - 60_000_000_000;
    let s = |v: &str| Value::StringValue(v.into());
    let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
    store
        .write(&[batch(
            "a",
            vec![
                span(1, 1, "op", now, vec![kv("k", s("x"))]),
                // Another trace's span of the same nanosecond, without the attribute.
                span(2, 7, "op", now, vec![kv("k", s("y"))]),
                span(3, 1, "op", now + 1, vec![kv("k", s("x"))]),
            ],
        )])
        .unwrap();
    assert!(store.parts.all()[0].start_only);
    let x = Seek::Attribute {
        resource: false,
        key: "k".into(),
        value: "x".into(),
    };
    // Both spans of `now` are candidates of `k=x` (the caller's check drops trace 2's), each
    // once though two sources hold the start.
    assert_eq!(
        ids(&store, x.clone(), 0, u64::MAX),
        [(3, 1), (2, 7), (1, 1)]
    );
    assert_eq!(
        ids(
            &store,
            Seek::All(vec![Seek::Service("a".into()), x]),
            now,
            now
        ),
        [(2, 7), (1, 1)]
    );
    assert_eq!(
        ids(&store, Seek::Time, 0, u64::MAX),
        [(3, 1), (2, 7), (1, 1)]
    );
    let index_cf = store.parts.all()[0].index_cf();
    drop(store);
    let keys = searched_keys(dir.path(), &index_cf);
    assert!(!keys.is_empty());
    for k in &keys {
        assert!(
            !k.windows(8).any(|w| w == [1; 8] || w == [7; 8]),
            "a span id in {k:?}"
        );
    }
}

#[test]
fn a_partition_created_before_start_only_keys_keeps_span_ids_in_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ns() - 60_000_000_000;
    let s = |v: &str| Value::StringValue(v.into());
    let index_cf;
    {
        let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
        store
            .write(&[batch(
                "a",
                vec![
                    span(1, 1, "op", now, vec![kv("k", s("x"))]),
                    span(2, 2, "op", now + 1, vec![kv("k", s("y"))]),
                ],
            )])
            .unwrap();
        index_cf = store.parts.all()[0].index_cf();
    }
    // As an earlier version wrote it: every key ends in start and span id (span `n` starts
    // at `now + n - 1`), and no layout entry.
    {
        let names = Db::list_cf(&Options::default(), dir.path()).unwrap();
        let db = Db::open_cf(&Options::default(), dir.path(), &names).unwrap();
        let cf = db.cf_handle(&index_cf).unwrap();
        for k in searched_keys_of(&db, &cf) {
            let start = u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap());
            let span_id = [(start - now + 1) as u8; 8];
            db.delete_cf(&cf, &k).unwrap();
            db.put_cf(&cf, [&k[..], &span_id[..]].concat(), b"")
                .unwrap();
        }
        db.delete_cf(&cf, b"CK").unwrap();
    }
    let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
    assert!(!store.parts.all()[0].start_only);
    // A later write into it keeps the partition's form.
    store
        .write(&[batch(
            "a",
            vec![span(3, 3, "op", now, vec![kv("k", s("x"))])],
        )])
        .unwrap();
    let x = Seek::Attribute {
        resource: false,
        key: "k".into(),
        value: "x".into(),
    };
    // Span ids in the keys: the span of the same start without `k=x` is no candidate.
    assert_eq!(ids(&store, x.clone(), 0, u64::MAX), [(3, 3), (1, 1)]);
    assert_eq!(
        ids(&store, Seek::Service("a".into()), 0, u64::MAX),
        [(2, 2), (3, 3), (1, 1)]
    );
    drop(store);
    for k in searched_keys(dir.path(), &index_cf) {
        let suffix = &k[k.len() - 8..];
        assert!(
            [[1; 8], [2; 8], [3; 8]].iter().any(|id| id == suffix),
            "{k:?}"
        );
    }
}

fn searched_keys_of(db: &Db, cf: &crate::db::Cf<'_>) -> Vec<Box<[u8]>> {
    db.iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|kv| kv.unwrap().0)
        .filter(|k| !b"TCso".contains(&k[0]))
        .collect()
}
