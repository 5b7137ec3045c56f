//! The outbox on a real RocksDB: what appends queue, offsets, deletion, the disk cap's skip,
//! and what survives a reopen.

use std::time::Duration;

use super::*;
use crate::{AppendMode, Label, SeriesBatch, Tsdb, TsdbOptions, METRIC_NAME, STALE_NAN_BITS};

fn opts() -> TsdbOptions {
    TsdbOptions {
        retention: Duration::MAX,
        flush_interval: Duration::ZERO,
        ..TsdbOptions::default()
    }
}

fn series(name: &str, samples: &[(i64, f64)]) -> SeriesBatch {
    SeriesBatch {
        labels: Labels::from_pairs([(METRIC_NAME, name), ("job", "j")]),
        samples: samples.iter().map(|&(t, v)| Sample { t, v }).collect(),
        histograms: Vec::new(),
    }
}

fn append(db: &Tsdb, batch: &[SeriesBatch]) {
    let r = db.append(batch, AppendMode::BestEffort).unwrap();
    assert!(r.rejected.is_empty(), "{r:?}");
}

/// A record as (seq, [(name, [(t, value bits)])]).
type Contents = (u64, Vec<(String, Vec<(i64, u64)>)>);

/// Every readable record from `from`.
fn contents(ob: &Outbox, from: u64) -> Vec<Contents> {
    ob.read(from, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| {
            let series = r
                .batch
                .iter()
                .map(|s| {
                    let name = s.labels().get(METRIC_NAME).unwrap().to_owned();
                    (
                        name,
                        s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect(),
                    )
                })
                .collect();
            (r.seq, series)
        })
        .collect()
}

#[test]
fn nothing_is_queued_without_a_destination() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    append(&db, &[series("a", &[(1, 1.0)])]);
    let ob = db.outbox();
    assert_eq!(ob.end(), 0);
    ob.set_destinations(&["d".into()]).unwrap();
    assert_eq!(ob.offset("d"), Some(0));
    append(&db, &[series("a", &[(2, 2.0)])]);
    assert_eq!(
        contents(&ob, 0),
        vec![(0, vec![("a".into(), vec![(2, 2f64.to_bits())])])]
    );
}

#[test]
fn records_hold_what_was_stored_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let ob = db.outbox();
    ob.set_destinations(&["d".into()]).unwrap();
    let stale = f64::from_bits(STALE_NAN_BITS);
    append(
        &db,
        &[
            series("a", &[(10, 1.0), (20, 2.0)]),
            series("b", &[(10, 5.0)]),
        ],
    );
    // A rejected sample (duplicate timestamp) and a repeat are not queued again; a
    // staleness marker is.
    let r = db
        .append(
            &[
                series("a", &[(20, 3.0), (30, stale)]),
                series("b", &[(10, 5.0)]),
            ],
            AppendMode::BestEffort,
        )
        .unwrap();
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(
        contents(&ob, 0),
        vec![
            (
                0,
                vec![
                    ("a".into(), vec![(10, 1f64.to_bits()), (20, 2f64.to_bits())]),
                    ("b".into(), vec![(10, 5f64.to_bits())]),
                ]
            ),
            (1, vec![("a".into(), vec![(30, STALE_NAN_BITS)])]),
        ]
    );
    // Labels, histograms and exemplars come back as stored.
    let mut with_exemplar = crate::EncodedBatch::from(vec![series("c", &[(5, 1.0)])]);
    with_exemplar.add_exemplars([Exemplar {
        labels: Labels::new(vec![Label::new("trace_id", "abc")]),
        value: 1.0,
        t: 5,
    }]);
    db.append_batch(&with_exemplar, AppendMode::BestEffort)
        .unwrap();
    let last = ob.read(2, usize::MAX).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].batch, with_exemplar);
}

#[test]
fn acks_delete_what_every_destination_has_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        let ob = db.outbox();
        ob.set_destinations(&["x".into(), "y".into()]).unwrap();
        for t in 0..5 {
            append(&db, &[series("a", &[(t, t as f64)])]);
        }
        assert_eq!(ob.end(), 5);
        ob.ack("x", 4).unwrap();
        // y still needs everything.
        assert_eq!(contents(&ob, 0).len(), 5);
        ob.ack("y", 2).unwrap();
        assert_eq!(
            contents(&ob, 0).iter().map(|r| r.0).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        // An offset never moves back.
        ob.ack("y", 1).unwrap();
        assert_eq!(ob.offset("y"), Some(2));
        // Dropping y frees what only it needed.
        ob.set_destinations(&["x".into()]).unwrap();
        assert_eq!(
            contents(&ob, 0).iter().map(|r| r.0).collect::<Vec<_>>(),
            [4]
        );
    }
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let ob = db.outbox();
    assert_eq!(
        (ob.offset("x"), ob.offset("y"), ob.end()),
        (Some(4), None, 5)
    );
    append(&db, &[series("a", &[(9, 9.0)])]);
    assert_eq!(
        contents(&ob, 4).iter().map(|r| r.0).collect::<Vec<_>>(),
        [4, 5]
    );
    // Numbering goes on after acknowledged records even when none is left.
    ob.ack("x", 6).unwrap();
    // The handle keeps the database open, as the TSDB does.
    drop((ob, db));
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(db.outbox().end(), 6);
}

#[test]
fn backlog_and_skip_count_the_oldest_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let ob = db.outbox();
    ob.set_destinations(&["d".into()]).unwrap();
    for t in 0..10 {
        append(&db, &[series("a", &[(t, 1.0), (t + 100, 2.0)])]);
    }
    let all = ob.backlog_bytes(0).unwrap();
    let one = all / 10;
    assert!(one > 0 && all.is_multiple_of(10), "{all}");
    assert_eq!(ob.backlog_bytes(7).unwrap(), 3 * one);
    assert_eq!(ob.backlog_bytes(10).unwrap(), 0);
    let s = ob.skip(0, 2 * one + 1).unwrap();
    assert_eq!(
        s,
        Skipped {
            next: 3,
            items: 6,
            records: 3
        }
    );
}

#[test]
fn wait_returns_once_a_record_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(Tsdb::open(dir.path(), opts()).unwrap());
    let ob = db.outbox();
    ob.set_destinations(&["d".into()]).unwrap();
    assert!(!ob.wait(0, Duration::from_millis(10)));
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            append(&db, &[series("a", &[(1, 1.0)])]);
        })
    };
    assert!(ob.wait(0, Duration::from_secs(10)));
    writer.join().unwrap();
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let batch = crate::EncodedBatch::from(vec![series("a", &[(1, 1.0), (2, 2.0)])]);
    let body = encode(&batch);
    assert_eq!(decode(&body).unwrap(), batch);
    for cut in 0..body.len() {
        assert!(decode(&body[..cut]).map_or(true, |b| b.len() < batch.len() || cut == 0));
    }
    let mut bad = body.clone();
    bad[2] = 0xff;
    let _ = decode(&bad);
}
