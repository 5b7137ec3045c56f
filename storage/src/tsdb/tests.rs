//! End-to-end tests of the TSDB on a real RocksDB in temporary directories.

use std::path::Path;

use super::*;
use crate::db::{Db, CF_WAL};
use crate::tsdb::checkpoint::Pass;
use crate::tsdb::chunk::{self, StoredChunk};
use crate::tsdb::partition::{
    parse_chunk_key, partition_start, window_start, PARTITION_MS, WINDOW_MS,
};
use crate::{
    EncodedLabels, MatchOp, Querier, RejectReason, EXEMPLAR_MAX_LABEL_SET_LENGTH, METRIC_NAME,
    STALE_NAN_BITS,
};

const MIN: i64 = 60_000;

fn opts() -> TsdbOptions {
    TsdbOptions {
        retention: Duration::MAX,
        flush_interval: Duration::ZERO,
        ..TsdbOptions::default()
    }
}

fn labels(name: &str, pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(
        [(METRIC_NAME, name)]
            .into_iter()
            .chain(pairs.iter().copied()),
    )
}

fn batch(l: &Labels, samples: &[(i64, f64)]) -> SeriesBatch {
    SeriesBatch {
        labels: l.clone(),
        samples: samples.iter().map(|&(t, v)| Sample { t, v }).collect(),
        histograms: Vec::new(),
    }
}

fn eq(name: &str, value: &str) -> Matcher {
    Matcher::new(MatchOp::Equal, name, value).unwrap()
}

fn append_ok(db: &Tsdb, l: &Labels, samples: &[(i64, f64)]) {
    let r = db
        .append(&[batch(l, samples)], AppendMode::AllOrNothing)
        .unwrap();
    assert_eq!(r.rejected, vec![], "{l}");
    assert_eq!(r.samples_written, samples.len());
}

/// All samples of a series as (t, value bits).
fn read(db: &Tsdb, l: &Labels, mint: i64, maxt: i64) -> Vec<(i64, u64)> {
    let ms: Vec<Matcher> = l.iter().map(|l| eq(&l.name, &l.value)).collect();
    let got = db
        .select_decoded(&ms, &crate::SelectHints::range(mint, maxt, usize::MAX))
        .unwrap();
    let got: Vec<_> = got.into_iter().filter(|s| &s.labels == l).collect();
    assert!(got.len() <= 1);
    got.into_iter()
        .flat_map(|s| s.samples)
        .map(|s| (s.t, s.v.to_bits()))
        .collect()
}

fn all(db: &Tsdb, l: &Labels) -> Vec<(i64, u64)> {
    read(db, l, i64::MIN, i64::MAX)
}

fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
    samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

/// Regular samples every 15s starting at `start`, values i * 1.5.
fn regular(start: i64, n: i64) -> Vec<(i64, f64)> {
    (0..n)
        .map(|i| (start + i * 15_000, i as f64 * 1.5))
        .collect()
}

fn wal_len(db: &Tsdb) -> usize {
    let cf = db.inner.db.cf_handle(CF_WAL).unwrap();
    db.inner
        .db
        .iterator_cf(&cf, rocksdb::IteratorMode::Start)
        .count()
}

#[test]
fn append_then_select_round_trips_across_chunks_and_special_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let a = labels("m", &[("job", "a")]);
    let b = labels("m", &[("job", "b")]);
    // 1000 samples: many chunks, several 2h windows; then specials.
    let mut sa = regular(-3_600_000, 1000);
    let specials = [
        f64::from_bits(STALE_NAN_BITS),
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
    ];
    let last = sa.last().unwrap().0;
    sa.extend(
        specials
            .iter()
            .enumerate()
            .map(|(i, &v)| (last + 1 + i as i64, v)),
    );
    append_ok(&db, &a, &sa[..500]);
    append_ok(&db, &a, &sa[500..]);
    append_ok(&db, &b, &[(0, 1.0)]);
    assert_eq!(all(&db, &a), bits(&sa));
    db.flush().unwrap();
    assert_eq!(all(&db, &a), bits(&sa));
    // Range reads are inclusive at both ends, also across partition boundaries.
    let (lo, hi) = (sa[100].0, sa[900].0);
    assert_eq!(read(&db, &a, lo, hi), bits(&sa[100..=900]));
    assert_eq!(read(&db, &a, lo + 1, hi - 1), bits(&sa[101..900]));
    let both = db
        .select_decoded(
            &[eq(METRIC_NAME, "m")],
            &crate::SelectHints::range(0, 0, usize::MAX),
        )
        .unwrap();
    assert_eq!(
        both.iter().map(|s| s.labels.clone()).collect::<Vec<_>>(),
        vec![a.clone(), b.clone()]
    );
    assert!(db
        .select_decoded(
            &[eq(METRIC_NAME, "m")],
            &crate::SelectHints::range(1_000_000_000, 2_000_000_000, usize::MAX)
        )
        .unwrap()
        .is_empty());
}

#[test]
fn out_of_order_within_window_is_accepted_outside_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let l = labels("m", &[]);
    append_ok(&db, &l, &[(10 * 60 * MIN, 1.0)]);
    append_ok(
        &db,
        &l,
        &[
            (10 * 60 * MIN - 30 * MIN, 0.5),
            (10 * 60 * MIN - 60 * MIN, 0.25),
        ],
    );
    let r = db
        .append(
            &[batch(&l, &[(10 * 60 * MIN - 61 * MIN, 0.0)])],
            AppendMode::BestEffort,
        )
        .unwrap();
    assert_eq!(r.samples_written, 0);
    assert_eq!(
        r.rejected,
        vec![Rejection {
            labels: l.clone(),
            t: 10 * 60 * MIN - 61 * MIN,
            reason: RejectReason::OutOfOrder
        }]
    );
    let expected = bits(&[
        (9 * 60 * MIN, 0.25),
        (10 * 60 * MIN - 30 * MIN, 0.5),
        (10 * 60 * MIN, 1.0),
    ]);
    assert_eq!(all(&db, &l), expected);
    db.flush().unwrap();
    assert_eq!(all(&db, &l), expected);
    // Out-of-order samples spanning a 2h boundary end up in separate chunks but read back whole.
    append_ok(&db, &l, &[(10 * 60 * MIN + 1, 2.0)]);
    append_ok(&db, &l, &[(10 * 60 * MIN - 2, 3.0)]);
    db.flush().unwrap();
    assert_eq!(all(&db, &l).len(), 5);
}

#[test]
fn duplicates_are_idempotent_or_rejected_and_all_or_nothing_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let l = labels("m", &[]);
    let other = labels("n", &[]);
    append_ok(&db, &l, &[(1000, 1.0), (2000, 2.0), (3000, 3.0)]);
    // Same values again (in-order last sample and older ones): counted as written.
    append_ok(&db, &l, &[(3000, 3.0), (1000, 1.0)]);
    let r = db
        .append(
            &[
                batch(&other, &[(5, 5.0)]),
                batch(&l, &[(4000, 4.0), (2000, 2.5)]),
            ],
            AppendMode::AllOrNothing,
        )
        .unwrap();
    assert_eq!(r.samples_written, 0);
    assert_eq!(
        r.rejected,
        vec![Rejection {
            labels: l.clone(),
            t: 2000,
            reason: RejectReason::DuplicateTimestamp
        }]
    );
    assert_eq!(
        RejectReason::DuplicateTimestamp.to_string(),
        "duplicate sample for timestamp"
    );
    assert_eq!(all(&db, &l), bits(&[(1000, 1.0), (2000, 2.0), (3000, 3.0)]));
    assert_eq!(
        db.series(&[], i64::MIN, i64::MAX).unwrap(),
        vec![l.clone()],
        "no series created by a rejected batch"
    );
    let r = db
        .append(
            &[
                batch(&other, &[(5, 5.0)]),
                batch(&l, &[(4000, 4.0), (2000, 2.5)]),
            ],
            AppendMode::BestEffort,
        )
        .unwrap();
    assert_eq!(r.samples_written, 2);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(
        all(&db, &l),
        bits(&[(1000, 1.0), (2000, 2.0), (3000, 3.0), (4000, 4.0)])
    );
    assert_eq!(all(&db, &other), bits(&[(5, 5.0)]));
    // Duplicates are also found in persisted out-of-order chunks.
    append_ok(&db, &l, &[(3500, 3.5)]);
    db.flush().unwrap();
    append_ok(&db, &l, &[(3500, 3.5)]);
    let r = db
        .append(&[batch(&l, &[(3500, 9.0)])], AppendMode::BestEffort)
        .unwrap();
    assert_eq!(r.rejected[0].reason, RejectReason::DuplicateTimestamp);
    // Within one batch too.
    let r = db
        .append(
            &[batch(&l, &[(5000, 1.0), (5000, 2.0)])],
            AppendMode::AllOrNothing,
        )
        .unwrap();
    assert_eq!((r.samples_written, r.rejected.len()), (0, 1));
    assert_eq!(read(&db, &l, 4500, 6000), vec![]);
}

#[test]
fn too_old_and_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(
        dir.path(),
        TsdbOptions {
            flush_interval: Duration::ZERO,
            ..TsdbOptions::default()
        },
    )
    .unwrap();
    let l = labels("m", &[]);
    let old = now_ms() - 16 * 24 * 3600 * 1000;
    let r = db
        .append(&[batch(&l, &[(old, 1.0)])], AppendMode::BestEffort)
        .unwrap();
    assert_eq!(r.rejected[0].reason, RejectReason::TooOld);
    assert_eq!(r.rejected[0].reason.to_string(), "out of bounds");
    assert!(matches!(
        db.append(
            &[batch(&Labels::default(), &[(1, 1.0)])],
            AppendMode::BestEffort
        ),
        Err(StorageError::Invalid(_))
    ));
    append_ok(&db, &l, &[(now_ms(), 1.0)]);
}

#[test]
fn crash_without_flush_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = labels("m", &[("i", "a")]);
    let b = labels("m", &[("i", "b")]);
    let sa = regular(0, 300);
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_ok(&db, &a, &sa[..200]);
        append_ok(&db, &b, &[(1000, 1.0)]);
        append_ok(&db, &a, &sa[250..]);
        append_ok(&db, &a, &sa[200..250]);
        // Dropped without close or flush: only the WAL has the data.
    }
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &a), bits(&sa));
    assert_eq!(all(&db, &b), bits(&[(1000, 1.0)]));
    assert_eq!(
        db.series(&[], i64::MIN, i64::MAX).unwrap(),
        vec![a.clone(), b.clone()]
    );
    // Replay restored the last sample: a repeat is idempotent, a conflicting value is not.
    append_ok(&db, &a, &[sa[299]]);
    let r = db
        .append(&[batch(&a, &[(sa[299].0, 7.0)])], AppendMode::BestEffort)
        .unwrap();
    assert_eq!(r.rejected.len(), 1);
    // Reopen again after a checkpoint of replayed data.
    db.flush().unwrap();
    assert_eq!(wal_len(&db), 0);
    drop(db);
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &a), bits(&sa));
}

/// Checkpoints between those that write open chunks write the chunks that were cut and keep
/// the WAL: a crash then loses nothing (the open chunks come back from the WAL; the cut
/// chunks' samples in it are found already stored), and the first checkpoint past the
/// interval writes the open chunks and truncates the WAL.
#[test]
fn open_chunks_are_written_once_per_interval_and_the_wal_kept_until_then() {
    let dir = tempfile::tempdir().unwrap();
    let a = labels("m", &[("i", "a")]);
    let b = labels("m", &[("i", "b")]);
    // Two chunks of 120 cut, ten samples in the open one; five for `b`, all open.
    let (sa, sb) = (regular(0, 250), regular(0, 5));
    let stored = |db: &Tsdb| -> Vec<u16> {
        let cf = db.inner.db.cf_handle(&partition::cf_name(0)).unwrap();
        db.inner
            .db
            .iterator_cf(&cf, rocksdb::IteratorMode::Start)
            .map(|kv| StoredChunk::parse(&kv.unwrap().1).unwrap().count())
            .collect()
    };
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_ok(&db, &a, &sa[..245]);
        append_ok(&db, &b, &sb);
        let wal = wal_len(&db);
        db.inner.checkpoint(Pass::Periodic).unwrap();
        assert_eq!(stored(&db), [120, 120], "the cut chunks only");
        assert_eq!(wal_len(&db), wal, "the open chunks are only in the WAL");
        append_ok(&db, &a, &sa[245..]);
        db.inner.checkpoint(Pass::Periodic).unwrap();
        assert_eq!(stored(&db), [120, 120], "nothing was cut since");
        // Dropped without close or flush.
    }
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &a), bits(&sa));
    assert_eq!(all(&db, &b), bits(&sb));
    db.inner.checkpoint.lock().open_chunks_due = Some(std::time::Instant::now());
    db.inner.checkpoint(Pass::Periodic).unwrap();
    assert_eq!(stored(&db), [120, 120, 10, 5]);
    assert_eq!(wal_len(&db), 0);
    drop(db);
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &a), bits(&sa));
    assert_eq!(all(&db, &b), bits(&sb));
}

/// Appenders racing on one series: each timestamp is taken by exactly one of them (the others
/// are told it is a duplicate), the stored value is the winner's, and replaying the WAL after
/// a crash decides the same; series of their own they write side by side, and new series
/// added by racing appenders get one id each.
#[test]
fn concurrent_appends_to_one_series_take_each_timestamp_once_and_replay_the_same() {
    const THREADS: usize = 4;
    const STEPS: i64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let shared = labels("shared", &[]);
    let own = |k: usize, step: i64| {
        labels(
            "own",
            &[("k", &k.to_string()), ("s", &(step % 7).to_string())],
        )
    };
    let winners: Vec<Vec<(i64, u64)>> = {
        let db = Arc::new(Tsdb::open(dir.path(), opts()).unwrap());
        // Each step starts together, so that the appenders race for the same timestamp.
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|k| {
                let (db, shared, barrier) = (db.clone(), shared.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut won = Vec::new();
                    for step in 0..STEPS {
                        barrier.wait();
                        let v = (k as i64 * 1000 + step) as f64;
                        let r = db
                            .append(
                                &[
                                    batch(&shared, &[(step * 1000, v)]),
                                    batch(&own(k, step), &[(step * 1000, v)]),
                                ],
                                AppendMode::BestEffort,
                            )
                            .unwrap();
                        match r.rejected.as_slice() {
                            [] => won.push((step * 1000, v.to_bits())),
                            [r] => assert_eq!(
                                (r.reason, &r.labels),
                                (RejectReason::DuplicateTimestamp, &shared)
                            ),
                            more => panic!("{more:?}"),
                        }
                    }
                    won
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
        // Dropped without close or flush: only the WAL has the data.
    };
    let mut expected: Vec<(i64, u64)> = winners.concat();
    expected.sort_unstable();
    assert_eq!(
        expected.iter().map(|s| s.0).collect::<Vec<_>>(),
        (0..STEPS).map(|s| s * 1000).collect::<Vec<_>>(),
        "every timestamp taken exactly once"
    );
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &shared), expected);
    let series = db.series(&[], i64::MIN, i64::MAX).unwrap();
    assert_eq!(series.len(), 1 + THREADS * 7);
    for k in 0..THREADS {
        for step in 0..STEPS {
            let got = read(&db, &own(k, step), step * 1000, step * 1000);
            assert_eq!(
                got,
                vec![(step * 1000, ((k as i64 * 1000 + step) as f64).to_bits())]
            );
        }
    }
}

#[test]
fn restart_after_flush_and_more_appends_continues_open_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let l = labels("m", &[]);
    let s = regular(0, 100);
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_ok(&db, &l, &s[..50]);
        db.flush().unwrap();
        append_ok(&db, &l, &s[50..70]);
        append_ok(&db, &l, &[(s[10].0 + 1, 42.0)]);
        db.flush().unwrap();
        append_ok(&db, &l, &s[70..80]);
    }
    let mut expected = s[..80].to_vec();
    expected.insert(11, (s[10].0 + 1, 42.0));
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &l), bits(&expected));
    append_ok(&db, &l, &s[80..]);
    db.close().unwrap();
    expected.extend_from_slice(&s[80..]);

    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &l), bits(&expected));
    // The in-order chunk was continued across restarts rather than split: one chunk with
    // all 100 in-order samples plus one out-of-order chunk.
    let chunks = stored_chunks(&db, 0);
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    assert_eq!(chunks[0], (0, 0, 100));
    assert_eq!((chunks[1].0, chunks[1].2), (s[10].0 + 1, 1));
    assert_ne!(chunks[1].1, 0);
}

#[test]
fn complete_chunks_of_decimals_are_stored_packed_open_ones_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let l = labels("node_cpu_seconds_total", &[("cpu", "0")]);
    // A counter of seconds with two decimals: one complete chunk and ten samples more.
    let s: Vec<(i64, f64)> = (0..131)
        .map(|i| (i * 15_000, (1_000_000 + i * 1234 + i * i) as f64 / 100.0))
        .collect();
    let stored = |db: &Tsdb| -> Vec<(u16, u8)> {
        let cf = db.inner.db.cf_handle(&partition::cf_name(0)).unwrap();
        db.inner
            .db
            .iterator_cf(&cf, rocksdb::IteratorMode::Start)
            .map(|kv| {
                let (_, v) = kv.unwrap();
                (StoredChunk::parse(&v).unwrap().count(), v[0])
            })
            .collect()
    };
    let (packed, xor) = (chunk::ENCODING_PACKED, chunk::ENCODING_XOR);
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_ok(&db, &l, &s[..130]);
        // A periodic checkpoint within `open_chunk_interval` writes the cut chunk only.
        db.inner.checkpoint(Pass::Periodic).unwrap();
        assert_eq!(stored(&db), [(120, packed)]);
        // Once per interval it writes the open chunk too, as the head holds it: it is
        // written again as it fills.
        db.inner.checkpoint.lock().open_chunks_due = Some(std::time::Instant::now());
        db.inner.checkpoint(Pass::Periodic).unwrap();
        assert_eq!(stored(&db), [(120, packed), (10, xor)]);
        // The final one compacts what it writes of open chunks too.
        append_ok(&db, &l, &s[130..]);
        db.close().unwrap();
    }
    // ... and merges the window's two chunks into one (`merge`).
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(stored(&db), [(131, packed)]);
    assert_eq!(all(&db, &l), bits(&s));
    // The next samples start a chunk of their own, written as the head holds it...
    let more: Vec<(i64, f64)> = (131..141).map(|i| (i * 15_000, i as f64)).collect();
    append_ok(&db, &l, &more);
    db.inner.checkpoint.lock().open_chunks_due = Some(std::time::Instant::now());
    db.inner.checkpoint(Pass::Periodic).unwrap();
    assert_eq!(stored(&db), [(131, packed), (10, xor)]);
    assert_eq!(all(&db, &l).len(), 141);
    // ... which a final checkpoint merges into the window's chunk.
    append_ok(&db, &l, &[(141 * 15_000, 1.0)]);
    db.close().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(stored(&db), [(142, packed)]);
    let expected: Vec<(i64, f64)> = s
        .iter()
        .chain(&more)
        .chain(&[(141 * 15_000, 1.0)])
        .copied()
        .collect();
    assert_eq!(all(&db, &l), bits(&expected));
}

/// The chunks stored in the partition starting at `start`: (min t, tiebreak, sample count).
fn stored_chunks(db: &Tsdb, start: i64) -> Vec<(i64, u64, u16)> {
    let cf = db.inner.db.cf_handle(&partition::cf_name(start)).unwrap();
    db.inner
        .db
        .iterator_cf(&cf, rocksdb::IteratorMode::Start)
        .map(|kv| {
            let (k, v) = kv.unwrap();
            let (_, min_t, tiebreak) = parse_chunk_key(&k).unwrap();
            (min_t, tiebreak, StoredChunk::parse(&v).unwrap().count())
        })
        .collect()
}

/// A window the head has moved past is merged into one chunk by the next checkpoint; a crash
/// after that replays the WAL onto it without storing a sample twice; an out-of-order sample
/// into the merged window gets a chunk of its own.
#[test]
fn closed_windows_are_merged_and_survive_a_crash_and_late_samples() {
    let dir = tempfile::tempdir().unwrap();
    let l = labels("m", &[]);
    let window = partition::WINDOW_MS;
    let mut s = regular(0, 300);
    s.extend(regular(window, 5));
    let opts = || TsdbOptions {
        out_of_order_window: Duration::from_secs(3 * 3600),
        ..opts()
    };
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_ok(&db, &l, &s);
        db.inner.checkpoint(Pass::Periodic).unwrap();
        assert_eq!(stored_chunks(&db, 0), [(0, 0, 300)]);
        append_ok(&db, &l, &regular(window + 5 * 15_000, 3));
        // Dropped without a final checkpoint: the open window's samples are in the WAL only.
    }
    s.extend(regular(window + 5 * 15_000, 3));
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &l), bits(&s));
    let late = (7_500, 4.0);
    append_ok(&db, &l, &[late]);
    db.flush().unwrap();
    let chunks = stored_chunks(&db, 0);
    assert_eq!(chunks[0], (0, 0, 300));
    assert_eq!((chunks[1].0, chunks[1].2), (7_500, 1));
    assert_ne!(chunks[1].1, 0);
    assert_eq!((chunks[2].0, chunks[2].1, chunks[2].2), (window, 0, 8));
    s.insert(1, late);
    assert_eq!(all(&db, &l), bits(&s));
}

/// A flush (a final checkpoint that does not end the process) merges the open window with its
/// open chunk; appends after it start a new chunk, never storing the merged samples again.
#[test]
fn appends_after_a_flush_that_merged_the_open_window_store_each_sample_once() {
    let dir = tempfile::tempdir().unwrap();
    let l = labels("m", &[]);
    let s = regular(0, 400);
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    append_ok(&db, &l, &s[..150]);
    db.flush().unwrap();
    assert_eq!(stored_chunks(&db, 0), [(0, 0, 150)]);
    append_ok(&db, &l, &s[150..200]);
    db.inner.checkpoint.lock().open_chunks_due = Some(std::time::Instant::now());
    db.inner.checkpoint(Pass::Periodic).unwrap();
    assert_eq!(stored_chunks(&db, 0), [(0, 0, 150), (s[150].0, 0, 50)]);
    append_ok(&db, &l, &s[200..]);
    db.close().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(stored_chunks(&db, 0), [(0, 0, 400)]);
    assert_eq!(all(&db, &l), bits(&s));
}

/// A series `old` with samples 10 and 9 days ago and `young` with one 9 days and one a minute
/// ago, written to a store at `dir`, which is returned open; and now.
fn old_and_young(dir: &Path) -> (Tsdb, i64, Labels, Labels) {
    let day = PARTITION_MS;
    let now = now_ms();
    let old = labels("m", &[("age", "old")]);
    let young = labels("m", &[("age", "young")]);
    let db = Tsdb::open(dir, opts()).unwrap();
    append_ok(&db, &old, &[(now - 10 * day, 1.0), (now - 9 * day, 2.0)]);
    append_ok(&db, &young, &[(now - 9 * day, 1.0), (now - 60_000, 2.0)]);
    (db, now, old, young)
}

#[test]
fn retention_drops_old_partitions_and_series() {
    let dir = tempfile::tempdir().unwrap();
    let day = PARTITION_MS;
    let (db, now, _, young) = old_and_young(dir.path());
    db.set_metadata(
        "m",
        Metadata {
            kind: "gauge".into(),
            help: "h".into(),
            unit: String::new(),
        },
    )
    .unwrap();
    db.close().unwrap();
    let count_partitions = |db: &Tsdb| db.inner.partitions.all().len();
    let short = TsdbOptions {
        retention: Duration::from_secs(3 * 24 * 3600),
        ..opts()
    };
    let db = Tsdb::open(dir.path(), short.clone()).unwrap();
    assert_eq!(
        db.series(&[], i64::MIN, i64::MAX).unwrap(),
        vec![young.clone()]
    );
    assert_eq!(all(&db, &young), bits(&[(now - 60_000, 2.0)]));
    assert_eq!(count_partitions(&db), 1);
    assert_eq!(
        db.label_values("age", &[], i64::MIN, i64::MAX).unwrap(),
        vec!["young"]
    );
    assert_eq!(db.status(10).num_series, 1);
    // Time bounds are raised past the dropped partitions.
    assert_eq!(db.status(10).min_time, partition_start(now - 9 * day) + day);
    assert_eq!(
        db.metadata().unwrap().len(),
        1,
        "metadata is not subject to retention"
    );
    drop(db);
    let names = Db::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert_eq!(
        names
            .iter()
            .filter(|n| partition::parse_cf_name(n).is_some())
            .count(),
        1
    );
    // The removal is persisted.
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(db.series(&[], i64::MIN, i64::MAX).unwrap(), vec![young]);
}

#[test]
fn series_and_label_apis_filter_by_matchers_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let up_a = labels("up", &[("job", "a"), ("instance", "1")]);
    let up_b = labels("up", &[("job", "b")]);
    let down = labels("down", &[("job", "a"), ("zone", "z")]);
    append_ok(&db, &up_a, &[(1000, 1.0), (2000, 1.0)]);
    append_ok(&db, &up_b, &[(5000, 1.0)]);
    append_ok(&db, &down, &[(3000, 0.0)]);
    let sets = |ms: Vec<Matcher>| vec![ms];
    assert_eq!(
        db.series(&sets(vec![eq(METRIC_NAME, "up")]), i64::MIN, i64::MAX)
            .unwrap(),
        vec![up_a.clone(), up_b.clone()]
    );
    assert_eq!(
        db.series(&sets(vec![eq(METRIC_NAME, "up")]), 2500, 4000)
            .unwrap(),
        vec![]
    );
    assert_eq!(
        db.series(&sets(vec![eq(METRIC_NAME, "up")]), 2000, 2000)
            .unwrap(),
        vec![up_a.clone()]
    );
    let union = vec![vec![eq("job", "b")], vec![eq("zone", "z")]];
    assert_eq!(
        db.series(&union, i64::MIN, i64::MAX).unwrap(),
        vec![down.clone(), up_b.clone()]
    );
    let ne = Matcher::new(MatchOp::NotEqual, "job", "a").unwrap();
    assert_eq!(
        db.series(&sets(vec![ne]), i64::MIN, i64::MAX).unwrap(),
        vec![up_b.clone()]
    );
    assert_eq!(
        db.label_names(&[], i64::MIN, i64::MAX).unwrap(),
        vec![METRIC_NAME, "instance", "job", "zone"]
    );
    assert_eq!(
        db.label_names(&[], 2500, 6000).unwrap(),
        vec![METRIC_NAME, "job", "zone"]
    );
    assert_eq!(
        db.label_names(&sets(vec![eq("job", "a")]), i64::MIN, 2000)
            .unwrap(),
        vec![METRIC_NAME, "instance", "job"]
    );
    assert_eq!(
        db.label_values("job", &[], i64::MIN, i64::MAX).unwrap(),
        vec!["a", "b"]
    );
    assert_eq!(db.label_values("job", &[], 4000, 6000).unwrap(), vec!["b"]);
    assert_eq!(
        db.label_values(METRIC_NAME, &sets(vec![eq("job", "a")]), i64::MIN, i64::MAX)
            .unwrap(),
        vec!["down", "up"]
    );
    assert_eq!(
        db.label_values("nope", &[], i64::MIN, i64::MAX).unwrap(),
        Vec::<String>::new()
    );
    let re = Matcher::new(MatchOp::RegexMatch, METRIC_NAME, "u.").unwrap();
    assert_eq!(
        db.label_values("job", &sets(vec![re]), 0, 1500).unwrap(),
        vec!["a"]
    );
    // Survives a restart (index rebuilt from the persisted postings and series times).
    db.flush().unwrap();
    drop(db);
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(
        db.series(&union, i64::MIN, i64::MAX).unwrap(),
        vec![down, up_b]
    );
    assert_eq!(db.label_values("job", &[], 4000, 6000).unwrap(), vec!["b"]);
}

#[test]
fn sample_limit_is_enforced_while_reading() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let a = labels("m", &[("i", "a")]);
    let b = labels("m", &[("i", "b")]);
    append_ok(&db, &a, &regular(0, 300));
    append_ok(&db, &b, &regular(0, 300));
    for flushed in [false, true] {
        let m = [eq(METRIC_NAME, "m")];
        assert_eq!(
            db.select_decoded(&m, &crate::SelectHints::range(i64::MIN, i64::MAX, 600))
                .unwrap()
                .len(),
            2,
            "flushed={flushed}"
        );
        let err = db
            .select_decoded(&m, &crate::SelectHints::range(i64::MIN, i64::MAX, 599))
            .unwrap_err();
        assert!(
            matches!(err, StorageError::SampleLimit { limit: 599 }),
            "{err}"
        );
        assert_eq!(
            db.select_decoded(&m, &crate::SelectHints::range(0, 15_000 * 9, 20))
                .unwrap()
                .iter()
                .map(|s| s.samples.len())
                .sum::<usize>(),
            20
        );
        db.flush().unwrap();
    }
}

#[test]
fn clear_drops_everything_and_allows_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let l = labels("m", &[]);
    append_ok(&db, &l, &regular(0, 10));
    db.flush().unwrap();
    append_ok(&db, &l, &regular(150_000, 10));
    db.set_metadata("m", Metadata::default()).unwrap();
    db.clear().unwrap();
    assert_eq!(all(&db, &l), vec![]);
    assert!(db.series(&[], i64::MIN, i64::MAX).unwrap().is_empty());
    assert!(db.metadata().unwrap().is_empty());
    assert_eq!(db.status(5).num_series, 0);
    append_ok(&db, &l, &[(5, 5.0)]);
    assert_eq!(all(&db, &l), bits(&[(5, 5.0)]));
    drop(db);
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &l), bits(&[(5, 5.0)]));
    assert!(db.metadata().unwrap().is_empty());
}

#[test]
fn metadata_round_trips_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let md = |k: &str| Metadata {
        kind: k.into(),
        help: "Help text.".into(),
        unit: "seconds".into(),
    };
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        db.set_metadata("b_total", md("counter")).unwrap();
        db.set_metadata("a", md("gauge")).unwrap();
        db.set_metadata("a", md("summary")).unwrap();
    }
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(
        db.metadata().unwrap(),
        vec![
            ("a".to_owned(), md("summary")),
            ("b_total".to_owned(), md("counter"))
        ]
    );
}

#[test]
fn status_reports_cardinality_figures() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(
        (db.status(3).min_time, db.status(3).max_time),
        (i64::MAX, i64::MIN)
    );
    append_ok(&db, &labels("up", &[("job", "a")]), &[(100, 1.0)]);
    append_ok(&db, &labels("up", &[("job", "bb")]), &[(200, 1.0)]);
    append_ok(&db, &labels("x", &[("job", "a")]), &[(300, 1.0)]);
    let st = db.status(1);
    assert_eq!(st.num_series, 3);
    assert_eq!((st.min_time, st.max_time), (100, 300));
    assert_eq!(st.num_label_pairs, 4);
    assert_eq!(st.chunk_count, 3);
    assert_eq!(st.series_count_by_metric_name, vec![("up".to_owned(), 2)]);
    assert_eq!(
        st.label_value_count_by_label_name,
        vec![(METRIC_NAME.to_owned(), 2)]
    );
    // job: "a" twice (2 bytes) + "bb" once (2 bytes); __name__: "up" x2 + "x" = 5.
    assert_eq!(
        st.memory_in_bytes_by_label_name,
        vec![(METRIC_NAME.to_owned(), 5)]
    );
    assert_eq!(
        st.series_count_by_label_value_pair,
        vec![("__name__=up".to_owned(), 2)]
    );
    assert_eq!(db.status(10).memory_in_bytes_by_label_name.len(), 2);
}

#[test]
fn background_checkpoint_truncates_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(
        dir.path(),
        TsdbOptions {
            flush_interval: Duration::from_millis(20),
            open_chunk_interval: Duration::from_millis(100),
            ..opts()
        },
    )
    .unwrap();
    let l = labels("m", &[]);
    append_ok(&db, &l, &regular(0, 10));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while wal_len(&db) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(wal_len(&db), 0);
    assert_eq!(all(&db, &l), bits(&regular(0, 10)));
    db.close().unwrap();
}

#[test]
fn concurrent_reads_see_every_acknowledged_sample_during_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Tsdb::open(dir.path(), opts()).unwrap());
    let l = labels("m", &[]);
    let done = Arc::new(std::sync::atomic::AtomicI64::new(-1));
    let writer = {
        let (db, l, done) = (db.clone(), l.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..600i64 {
                let t = i * 1000;
                // Every 7th sample arrives late (out of order, within the window).
                if i % 7 == 3 {
                    append_ok(&db, &l, &[(t + 1000, 1.0)]);
                    append_ok(&db, &l, &[(t, 1.0)]);
                } else if i % 7 != 4 {
                    append_ok(&db, &l, &[(t, 1.0)]);
                }
                done.store(t, std::sync::atomic::Ordering::SeqCst);
                if i % 50 == 0 {
                    db.flush().unwrap();
                }
            }
        })
    };
    while !writer.is_finished() {
        let acked = done.load(std::sync::atomic::Ordering::SeqCst);
        let got = read(&db, &l, 0, i64::MAX);
        let upto: Vec<i64> = got.iter().map(|s| s.0).filter(|&t| t <= acked).collect();
        let expected: Vec<i64> = (0..)
            .map(|i| i * 1000)
            .take_while(|&t| t <= acked)
            .collect();
        assert_eq!(upto, expected, "acked {acked}");
    }
    writer.join().unwrap();
    assert_eq!(read(&db, &l, 0, i64::MAX).len(), 600);
}

fn histogram(count: f64) -> crate::Histogram {
    crate::Histogram {
        count,
        sum: count * 2.0,
        positive_spans: vec![crate::HistogramSpan {
            offset: 0,
            length: 1,
        }],
        positive_buckets: vec![count],
        ..crate::Histogram::default()
    }
}

fn append_histograms(db: &Tsdb, l: &Labels, ts: &[i64]) {
    let b = SeriesBatch {
        labels: l.clone(),
        samples: Vec::new(),
        histograms: ts
            .iter()
            .enumerate()
            .map(|(i, &t)| HistogramSample {
                t,
                h: histogram(i as f64 + 1.0),
            })
            .collect(),
    };
    let r = db.append(&[b], AppendMode::AllOrNothing).unwrap();
    assert_eq!(r.rejected, vec![]);
    assert_eq!((r.samples_written, r.histograms_written), (0, ts.len()));
}

/// Timestamps of the histogram samples of a series over all time.
fn histogram_times(db: &Tsdb, l: &Labels) -> Vec<i64> {
    let ms: Vec<Matcher> = l.iter().map(|l| eq(&l.name, &l.value)).collect();
    db.select_decoded(
        &ms,
        &crate::SelectHints::range(i64::MIN, i64::MAX, usize::MAX),
    )
    .unwrap()
    .into_iter()
    .filter(|s| &s.labels == l)
    .flat_map(|s| s.histograms)
    .map(|h| h.t)
    .collect()
}

#[test]
fn histogram_only_series_survives_restart_with_its_time_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let h = labels("latency", &[]);
    let ts = [now - 3 * MIN, now - 2 * MIN, now - MIN];
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_histograms(&db, &h, &ts);
        db.close().unwrap();
    }
    // A finite retention makes the open-time retention pass judge the series by its bounds.
    let db = Tsdb::open(
        dir.path(),
        TsdbOptions {
            retention: Duration::from_secs(24 * 3600),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(db.series(&[], i64::MIN, i64::MAX).unwrap(), vec![h.clone()]);
    assert_eq!(
        db.series(&[], now - 10 * MIN, now - 5 * MIN).unwrap(),
        Vec::<Labels>::new()
    );
    let st = db.status(10);
    assert_eq!((st.min_time, st.max_time), (ts[0], ts[2]));
    assert_eq!(histogram_times(&db, &h), ts);
}

#[test]
fn retention_drops_old_histogram_samples() {
    let dir = tempfile::tempdir().unwrap();
    let day = PARTITION_MS;
    let now = now_ms();
    let old = labels("h", &[("age", "old")]);
    let mixed = labels("h", &[("age", "mixed")]);
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_histograms(&db, &old, &[now - 10 * day, now - 9 * day]);
        append_histograms(&db, &mixed, &[now - 9 * day, now - MIN]);
        db.close().unwrap();
    }
    let short = TsdbOptions {
        retention: Duration::from_secs(3 * 24 * 3600),
        ..opts()
    };
    let db = Tsdb::open(dir.path(), short).unwrap();
    assert_eq!(
        db.series(&[], i64::MIN, i64::MAX).unwrap(),
        vec![mixed.clone()]
    );
    assert_eq!(histogram_times(&db, &mixed), vec![now - MIN]);
    // All sealed at the close; only the young sample's chunk is left.
    let (sealed, head) = histogram_layout(&db);
    assert_eq!(head, 0);
    assert_eq!(sealed.len(), 1, "{sealed:?}");
    assert_eq!(sealed[0].1, now - MIN);
}

/// Histogram samples in the partitions' sealed chunks, by (series id with the sealed bit,
/// chunk min t), and how many samples are left in the histogram head.
fn histogram_layout(db: &Tsdb) -> (Vec<(u64, i64)>, usize) {
    let mut sealed = Vec::new();
    for start in db.inner.partitions.all() {
        let cf = db.inner.db.cf_handle(&partition::cf_name(start)).unwrap();
        for item in db.inner.db.iterator_cf(&cf, rocksdb::IteratorMode::Start) {
            let (k, _) = item.unwrap();
            let (id, min_t, _) = parse_chunk_key(&k).unwrap();
            if id >> 63 == 1 {
                sealed.push((id, min_t));
            }
        }
    }
    let cf = db.inner.db.cf_handle(crate::db::CF_HISTOGRAMS).unwrap();
    let head = db
        .inner
        .db
        .iterator_cf(&cf, rocksdb::IteratorMode::Start)
        .count();
    (sealed, head)
}

/// The periodic checkpoint seals the histogram samples of closed windows into chunks in the
/// day partitions, and those of the open window once it holds a quarter chunk; a flush seals
/// the rest onto the window's last chunk. All read back bit-exactly, across a restart; the
/// duplicate rules hold for sealed samples; a late sample for a sealed window becomes a chunk
/// of its own.
#[test]
fn histograms_are_sealed_into_chunks_as_their_windows_fill() {
    let dir = tempfile::tempdir().unwrap();
    let l = labels("latency", &[]);
    // Four hours at a 15 s step up to a window start in the past, then 10 samples into the
    // window (still open: no sample of any series is newer).
    let open = window_start(now_ms()) - 3 * WINDOW_MS;
    let step = 15_000;
    let mut ts: Vec<i64> = (-960..10).map(|i| open + i * step).collect();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    append_histograms(&db, &l, &ts);
    db.inner.checkpoint(Pass::Periodic).unwrap();
    let (sealed, head) = histogram_layout(&db);
    assert_eq!(head, 10, "the open window's samples wait");
    assert_eq!(
        sealed.len(),
        8,
        "two closed windows of 480 samples, 120 a chunk"
    );
    assert!(sealed.iter().all(|&(_, min_t)| min_t < open));

    // 35 in the open window: sealed as one chunk; 5 more wait, until a flush merges them in.
    let more: Vec<i64> = (10..35).map(|i| open + i * step).collect();
    append_histograms(&db, &l, &more);
    db.inner.checkpoint(Pass::Periodic).unwrap();
    assert_eq!(histogram_layout(&db), (sealed_plus(&sealed, 1, &db), 0));
    let last: Vec<i64> = (35..40).map(|i| open + i * step).collect();
    append_histograms(&db, &l, &last);
    db.inner.checkpoint(Pass::Periodic).unwrap();
    assert_eq!(histogram_layout(&db).1, 5);
    db.flush().unwrap();
    let (after_flush, head) = histogram_layout(&db);
    assert_eq!(
        (after_flush.len(), head),
        (9, 0),
        "merged into the open window's chunk"
    );
    ts.extend(more.iter().chain(&last));
    assert_eq!(histogram_times(&db, &l), ts);

    // The same sample again is a no-op, another at its time a duplicate.
    let old = ts[10];
    let again = SeriesBatch {
        labels: l.clone(),
        samples: Vec::new(),
        histograms: vec![HistogramSample {
            t: old,
            h: histogram(11.0),
        }],
    };
    let r = db
        .append(std::slice::from_ref(&again), AppendMode::AllOrNothing)
        .unwrap();
    assert_eq!((r.histograms_written, r.rejected.len()), (1, 0));
    let mut other = again;
    other.histograms[0].h.count = 12.5;
    let r = db.append(&[other], AppendMode::BestEffort).unwrap();
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].reason, RejectReason::DuplicateTimestamp);

    // A late sample for a sealed window: a chunk of its own.
    let late = old + 7_000;
    append_histograms(&db, &l, &[late]);
    db.flush().unwrap();
    assert_eq!(histogram_layout(&db).0.len(), 10);
    let mut want = ts.clone();
    want.push(late);
    want.sort_unstable();
    db.close().unwrap();

    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(histogram_times(&db, &l), want);
    let ms = [eq(METRIC_NAME, "latency")];
    let got = db
        .select_decoded(
            &ms,
            &crate::SelectHints::range(i64::MIN, i64::MAX, usize::MAX),
        )
        .unwrap();
    let got = &got[0].histograms;
    // Each append numbers its samples from 1 (see `append_histograms`).
    let numbered = [&ts[..970], &more[..], &last[..], &[late][..]];
    for run in numbered {
        for (i, &t) in run.iter().enumerate() {
            let h = &got.iter().find(|h| h.t == t).unwrap().h;
            assert!(h.same_as(&histogram(i as f64 + 1.0)), "at {t}");
        }
    }
    let st = db.status(10);
    assert_eq!((st.min_time, st.max_time), (ts[0], ts[ts.len() - 1]));
}

/// Acknowledged histograms survive a crash (no checkpoint at the end) wherever they were:
/// sealed, or still in the histogram head, for a histogram-only series.
#[test]
fn crash_loses_no_histogram_sealed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let l = labels("latency", &[]);
    let open = window_start(now_ms()) - 3 * WINDOW_MS;
    let ts: Vec<i64> = (-300..10).map(|i| open + i * 15_000).collect();
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_histograms(&db, &l, &ts[..200]);
        db.inner.checkpoint(Pass::Periodic).unwrap();
        append_histograms(&db, &l, &ts[200..]);
        let (sealed, head) = histogram_layout(&db);
        assert!(!sealed.is_empty() && head > 0, "{sealed:?} {head}");
        drop(db);
    }
    let retained = TsdbOptions {
        retention: Duration::from_secs(7 * 24 * 3600),
        ..opts()
    };
    let db = Tsdb::open(dir.path(), retained).unwrap();
    assert_eq!(histogram_times(&db, &l), ts);
    let st = db.status(10);
    assert_eq!((st.min_time, st.max_time), (ts[0], ts[ts.len() - 1]));
}

/// `sealed` and the `n` sealed chunks the database holds beyond them.
fn sealed_plus(sealed: &[(u64, i64)], n: usize, db: &Tsdb) -> Vec<(u64, i64)> {
    let now = histogram_layout(db).0;
    assert_eq!(now.len(), sealed.len() + n, "{now:?}");
    assert!(sealed.iter().all(|c| now.contains(c)));
    now
}

/// A series with floats in one day and native histograms in a later one: its time bounds end
/// at a histogram, yet the float head must come back at open, so that a conflicting float for
/// an existing timestamp is still refused instead of starting a chunk over the stored one.
#[test]
fn float_head_of_a_mixed_series_is_restored_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let l = labels("mixed", &[]);
    let t0 = window_start(now - 2 * PARTITION_MS);
    let floats: Vec<(i64, f64)> = (0..5).map(|i| (t0 + i * 15_000, i as f64)).collect();
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_ok(&db, &l, &floats);
        append_histograms(&db, &l, &[now - MIN]);
        db.close().unwrap();
    }
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let r = db
        .append(&[batch(&l, &[(t0, 99.0)])], AppendMode::AllOrNothing)
        .unwrap();
    assert_eq!(r.samples_written, 0);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].reason, RejectReason::DuplicateTimestamp);
    db.close().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(read(&db, &l, t0, now), bits(&floats));
}

#[test]
fn new_series_beyond_the_limit_are_refused_while_existing_ones_keep_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let limited = TsdbOptions {
        max_active_series: 2,
        ..opts()
    };
    let db = Tsdb::open(dir.path(), limited.clone()).unwrap();
    let (a, b, c, d) = (
        labels("m", &[("s", "a")]),
        labels("m", &[("s", "b")]),
        labels("m", &[("s", "c")]),
        labels("m", &[("s", "d")]),
    );
    append_ok(&db, &a, &[(MIN, 1.0)]);
    // One request with an existing series and two new ones, one slot left: the first new
    // series takes it, the second is refused, and the rest is written even all-or-nothing.
    let r = db
        .append(
            &[
                batch(&a, &[(2 * MIN, 2.0)]),
                batch(&b, &[(MIN, 1.0)]),
                batch(&c, &[(MIN, 1.0), (2 * MIN, 2.0)]),
            ],
            AppendMode::AllOrNothing,
        )
        .unwrap();
    assert_eq!(r.samples_written, 2);
    let refused: Vec<_> = r
        .rejected
        .iter()
        .map(|x| (&x.labels, x.t, x.reason))
        .collect();
    assert_eq!(
        refused,
        [
            (&c, MIN, RejectReason::SeriesLimit),
            (&c, 2 * MIN, RejectReason::SeriesLimit)
        ]
    );
    assert_eq!(db.num_series(), 2);
    assert_eq!(db.series_refused(), 1);
    // At the limit: existing series are still written, any new one refused.
    let r = db
        .append(
            &[batch(&b, &[(2 * MIN, 2.0)]), batch(&d, &[(MIN, 1.0)])],
            AppendMode::BestEffort,
        )
        .unwrap();
    assert_eq!(r.samples_written, 1);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].reason, RejectReason::SeriesLimit);
    assert_eq!(db.series_refused(), 2);
    assert_eq!(all(&db, &a), bits(&[(MIN, 1.0), (2 * MIN, 2.0)]));
    assert_eq!(all(&db, &b), bits(&[(MIN, 1.0), (2 * MIN, 2.0)]));
    assert_eq!(all(&db, &c), vec![]);
    // Other rejections still roll back an all-or-nothing append.
    let r = db
        .append(
            &[batch(&a, &[(3 * MIN, 3.0)]), batch(&b, &[(MIN, 9.0)])],
            AppendMode::AllOrNothing,
        )
        .unwrap();
    assert_eq!(r.samples_written, 0);
    assert_eq!(all(&db, &a), bits(&[(MIN, 1.0), (2 * MIN, 2.0)]));
    drop(db);
    // The limit holds across a restart (the series are loaded back), and 0 lifts it.
    let db = Tsdb::open(dir.path(), limited).unwrap();
    let r = db.append(&[batch(&d, &[(MIN, 1.0)])], AppendMode::BestEffort);
    assert_eq!(r.unwrap().rejected.len(), 1);
    drop(db);
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    append_ok(&db, &d, &[(MIN, 1.0)]);
    assert_eq!(db.num_series(), 3);
}

#[test]
fn reads_go_through_one_bounded_block_cache() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 256 << 10;
    let small = TsdbOptions {
        block_cache_bytes: capacity,
        ..opts()
    };
    let series: Vec<Labels> = (0..2000)
        .map(|i| labels("m", &[("i", &i.to_string())]))
        .collect();
    {
        let db = Tsdb::open(dir.path(), small.clone()).unwrap();
        for l in &series {
            append_ok(&db, l, &regular(0, 120));
        }
        db.close().unwrap();
    }
    // Reopened, everything is in files: reading it all fills the cache.
    let db = Tsdb::open(dir.path(), small).unwrap();
    for l in &series {
        assert_eq!(all(&db, l).len(), 120);
    }
    let m = db.memory();
    assert!(
        m.block_cache > 0,
        "the column families read through the cache: {m:?}"
    );
    // The cache may pass its capacity only by blocks in use and the pinned index blocks of
    // the newest files, which here are a few KB.
    assert!(m.block_cache <= capacity as u64 + (64 << 10), "{m:?}");
}

#[test]
fn column_families_of_earlier_versions_are_dropped_and_matchers_still_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let a = labels("m", &[("i", "a")]);
    let b = labels("m", &[("i", "b")]);
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_ok(&db, &a, &[(1000, 1.0)]);
        append_ok(&db, &b, &[(1000, 2.0)]);
        db.close().unwrap();
    }
    // What an earlier version left: the two column families it wrote the index to as well.
    {
        let mut o = rocksdb::Options::default();
        o.create_missing_column_families(true);
        let names = Db::list_cf(&o, dir.path()).unwrap();
        let raw = Db::open_cf(&o, dir.path(), &names).unwrap();
        for name in ["postings", "series_by_labels"] {
            raw.create_cf(name, &o).unwrap();
            raw.put_cf(&raw.cf_handle(name).unwrap(), b"key", b"")
                .unwrap();
        }
        raw.put_cf(
            &raw.cf_handle("meta").unwrap(),
            SCHEMA_KEY,
            1u64.to_be_bytes(),
        )
        .unwrap();
    }
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let names = Db::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert!(
        !names
            .iter()
            .any(|n| n == "postings" || n == "series_by_labels"),
        "{names:?}"
    );
    // The inverted index comes from the label sets alone.
    assert_eq!(
        db.series(&[vec![eq("i", "b")]], i64::MIN, i64::MAX)
            .unwrap(),
        vec![b.clone()]
    );
    assert_eq!(all(&db, &a), bits(&[(1000, 1.0)]));
    drop(db);
    // Stamped with the new version, so that a binary of the old one refuses the directory
    // (it would read the missing postings as "no series match").
    let schema = |set: Option<u64>| {
        let o = rocksdb::Options::default();
        let names = Db::list_cf(&o, dir.path()).unwrap();
        let raw = Db::open_cf(&o, dir.path(), &names).unwrap();
        let meta = raw.cf_handle("meta").unwrap();
        if let Some(v) = set {
            raw.put_cf(&meta, SCHEMA_KEY, v.to_be_bytes()).unwrap();
        }
        raw.get_cf(&meta, SCHEMA_KEY).unwrap().unwrap()
    };
    assert_eq!(schema(None), 2u64.to_be_bytes());
    schema(Some(3));
    assert!(matches!(
        Tsdb::open(dir.path(), opts()),
        Err(StorageError::Corrupt(_))
    ));
}

const SCHEMA_KEY: &[u8] = b"schema_version";

#[test]
fn select_reads_in_id_order_and_answers_in_label_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    // Ids follow write order; writing the labels in reverse makes id order the reverse of
    // label order.
    let n = 600;
    let all: Vec<Labels> = (0..n)
        .map(|i| labels("m", &[("i", &format!("{i:04}"))]))
        .collect();
    for l in all.iter().rev() {
        append_ok(&db, l, &regular(0, 4));
    }
    db.flush().unwrap();
    for l in &all {
        append_ok(&db, l, &[(4 * 15_000, 4.0)]);
    }
    let m = [eq(METRIC_NAME, "m")];
    let select = |limit| db.select(&m, &crate::SelectHints::range(i64::MIN, i64::MAX, limit));
    let got: Vec<crate::SeriesSamples> = select(usize::MAX)
        .unwrap()
        .map(|s| s.unwrap().into_samples().unwrap())
        .collect();
    assert_eq!(
        got.iter().map(|s| s.labels.clone()).collect::<Vec<_>>(),
        all,
        "label order"
    );
    // Chunks (the first four) and head (the fifth) merged.
    let mut want = regular(0, 4);
    want.push((4 * 15_000, 4.0));
    let want: Vec<Sample> = want.into_iter().map(|(t, v)| Sample { t, v }).collect();
    assert!(got.iter().all(|s| s.samples == want));

    // The stored chunks alone hold more than the limit: refused before anything is decoded.
    let err = select(4 * n - 1).err().unwrap();
    assert!(matches!(err, StorageError::SampleLimit { .. }), "{err}");
    // Only with the head's samples is it too much: the set ends where the limit is crossed
    // (490 series of 5 samples fit in 2450).
    let mut limited = select(4 * n + 50).unwrap();
    assert!(limited.by_ref().take(490).all(|s| s.is_ok()));
    let err = limited.next().unwrap().err().unwrap();
    assert!(matches!(err, StorageError::SampleLimit { .. }), "{err}");
    assert!(limited.next().is_none(), "the set ends at the error");
}

#[test]
fn crash_between_checkpoint_slices_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = labels("m", &[("i", "a")]);
    let b = labels("m", &[("i", "b")]);
    let sa = regular(0, 300);
    let late = (sa[100].0 + 1, 42.0);
    let written_ooo_counter;
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_ok(&db, &a, &sa);
        append_ok(&db, &a, &[late]);
        append_ok(&db, &b, &[(1000, 1.0)]);
        // One slice of a checkpoint written, then the process dies: the slice is in RocksDB,
        // the head never released it, the WAL was not truncated.
        let inner = &db.inner;
        let mut ids: Vec<u64> = inner.state.write().head.take_dirty().into_iter().collect();
        ids.sort_unstable();
        // The first slice: series `a`, written first, has the lowest id.
        let (snaps, times) = inner.snapshot_slice(&ids[..1], true);
        let mut next_ooo = inner.checkpoint.lock().next_ooo_chunk_id;
        inner
            .write_slice(&snaps, &times, &mut next_ooo, false)
            .unwrap();
        assert!(
            next_ooo > 0,
            "the slice wrote the out-of-order sample as a chunk"
        );
        written_ooo_counter = next_ooo;
    }
    let mut want_a = sa.clone();
    want_a.insert(101, late);
    for round in 0..2 {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        assert_eq!(all(&db, &a), bits(&want_a), "round {round}");
        assert_eq!(all(&db, &b), bits(&[(1000, 1.0)]), "round {round}");
        // The counter went out with the slice: later out-of-order chunks get fresh ids.
        assert!(db.inner.checkpoint.lock().next_ooo_chunk_id >= written_ooo_counter);
        db.flush().unwrap();
        assert_eq!(wal_len(&db), 0);
    }
}

const HOUR: i64 = 3_600_000;

/// Series in memory (the head window's active series).
fn in_memory(db: &Tsdb) -> u64 {
    db.num_series()
}

#[test]
fn idle_series_leave_memory_stay_queryable_and_come_back_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let a = labels("m", &[("job", "a")]);
    let b = labels("m", &[("job", "b")]);
    let c = labels("other", &[("x", "1")]);
    let a_samples = regular(0, 40);
    let b_late = regular(4 * HOUR, 40);
    {
        let db = Tsdb::open(dir.path(), opts()).unwrap();
        append_ok(&db, &a, &a_samples);
        append_ok(&db, &b, &regular(0, 40));
        append_ok(&db, &b, &b_late);
        append_ok(&db, &c, &regular(0, 40));
        // Not yet persisted: nothing may leave memory.
        db.inner.evict_idle().unwrap();
        assert_eq!(in_memory(&db), 3);
        db.flush().unwrap();
        db.inner.evict_idle().unwrap();
        assert_eq!(
            in_memory(&db),
            1,
            "a and c idle past 2h before b's newest sample"
        );

        assert_eq!(all(&db, &a), bits(&a_samples));
        assert_eq!(read(&db, &a, 5 * HOUR, 6 * HOUR), vec![]);
        let both = vec![
            eq(METRIC_NAME, "m"),
            Matcher::new(MatchOp::RegexMatch, "job", "a|b").unwrap(),
        ];
        let got = db
            .select_decoded(&both, &crate::SelectHints::range(0, 30 * MIN, usize::MAX))
            .unwrap();
        let got: Vec<&Labels> = got.iter().map(|s| &s.labels).collect();
        assert_eq!(
            got,
            vec![&a, &b],
            "cold and in-memory series merge in label order"
        );
        let not_b = vec![
            eq(METRIC_NAME, "m"),
            Matcher::new(MatchOp::NotEqual, "job", "b").unwrap(),
        ];
        assert_eq!(db.series(&[not_b], 0, i64::MAX).unwrap(), vec![a.clone()]);
        // Only matchers an absent label satisfies: every cold entry is a candidate.
        let absent_x = vec![
            eq("x", ""),
            Matcher::new(MatchOp::RegexMatch, "job", ".*").unwrap(),
        ];
        assert_eq!(
            db.series(&[absent_x], 0, i64::MAX).unwrap(),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(
            db.series(&[], i64::MIN, i64::MAX).unwrap(),
            vec![a.clone(), b.clone(), c.clone()]
        );
        assert_eq!(
            db.label_names(&[], i64::MIN, i64::MAX).unwrap(),
            vec![METRIC_NAME, "job", "x"]
        );
        assert_eq!(
            db.label_values("job", &[], i64::MIN, i64::MAX).unwrap(),
            vec!["a", "b"]
        );
        let other = vec![vec![eq(METRIC_NAME, "other")]];
        assert_eq!(db.label_values("x", &other, 0, HOUR).unwrap(), vec!["1"]);
        assert_eq!(
            db.label_values("x", &other, 2 * HOUR, 3 * HOUR).unwrap(),
            Vec::<String>::new()
        );

        // A cold series judges new samples against its last one, as if it had never left.
        let (last_t, last_v) = *a_samples.last().unwrap();
        let r = db
            .append(
                &[batch(&a, &[(last_t, last_v + 1.0)])],
                AppendMode::BestEffort,
            )
            .unwrap();
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(r.rejected[0].reason, RejectReason::DuplicateTimestamp);
        assert_eq!(in_memory(&db), 1, "nothing written, nothing brought back");
    }
    // Comes back with the same id: one series, old and new samples together.
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(in_memory(&db), 1);
    let more = regular(4 * HOUR + 40 * 15_000, 4);
    append_ok(&db, &c, &more);
    assert_eq!(in_memory(&db), 2);
    let want: Vec<_> = regular(0, 40)
        .into_iter()
        .chain(more.iter().copied())
        .collect();
    assert_eq!(all(&db, &c), bits(&want));
    db.close().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, &c), bits(&want));
    assert_eq!(all(&db, &a), bits(&a_samples));
    assert_eq!(db.series(&[], i64::MIN, i64::MAX).unwrap(), vec![a, b, c]);
}

#[test]
fn memory_follows_the_active_series_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let (waves, per_wave) = (24, 300);
    for w in 0..waves {
        let batches: Vec<SeriesBatch> = (0..per_wave)
            .map(|i| {
                let l = labels("churn", &[("w", &w.to_string()), ("i", &i.to_string())]);
                batch(&l, &regular(w * 3 * HOUR, 8))
            })
            .collect();
        let r = db.append(&batches, AppendMode::AllOrNothing).unwrap();
        assert_eq!(r.samples_written, per_wave as usize * 8);
        db.flush().unwrap();
        db.inner.evict_idle().unwrap();
        assert_eq!(in_memory(&db), per_wave as u64, "wave {w}");
    }
    let every = vec![vec![eq(METRIC_NAME, "churn")]];
    assert_eq!(
        db.series(&every, i64::MIN, i64::MAX).unwrap().len(),
        (waves * per_wave) as usize
    );
    assert_eq!(
        db.label_values("w", &[], i64::MIN, i64::MAX).unwrap().len(),
        waves as usize
    );
    // One old wave's range finds that wave's series only, each with all of its samples.
    let wave7 = db
        .select_decoded(
            &[eq(METRIC_NAME, "churn")],
            &crate::SelectHints::range(21 * HOUR, 22 * HOUR, usize::MAX),
        )
        .unwrap();
    assert_eq!(wave7.len(), per_wave as usize);
    assert!(wave7
        .iter()
        .all(|s| s.labels.get("w") == Some("7") && s.samples.len() == 8));
}

#[test]
fn cold_series_leave_with_their_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let (db, now, old, young) = old_and_young(dir.path());
    db.flush().unwrap();
    db.inner.evict_idle().unwrap();
    assert_eq!(in_memory(&db), 1);
    let stored = StoredLabels::encode(&old);
    assert!(cold::lookup(&db.inner.db, &stored).unwrap().is_some());
    drop(db);
    {
        // Opening with a shorter retention drops the old partition, cold index included.
        let short = TsdbOptions {
            retention: Duration::from_secs(3 * 24 * 3600),
            ..opts()
        };
        let db = Tsdb::open(dir.path(), short).unwrap();
        assert!(cold::lookup(&db.inner.db, &stored).unwrap().is_none());
        assert_eq!(
            db.series(&[], i64::MIN, i64::MAX).unwrap(),
            vec![young.clone()]
        );
        assert_eq!(
            db.label_values("age", &[], i64::MIN, i64::MAX).unwrap(),
            vec!["young"]
        );
    }
    // A sample for the dropped series starts a new one.
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    append_ok(&db, &old, &[(now, 3.0)]);
    assert_eq!(all(&db, &old), bits(&[(now, 3.0)]));
}

#[test]
fn concurrent_reads_see_every_acknowledged_sample_while_series_leave_and_come_back() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Tsdb::open(dir.path(), opts()).unwrap());
    let acked = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    // The writer starts once the reader has read once, so that a busy machine cannot run
    // the whole write loop before the reader's first look at `finished`.
    let reads = Arc::new(AtomicUsize::new(0));
    let series = |k: i64| labels("m", &[("k", &k.to_string())]);
    let writer = {
        let (db, acked, finished, reads) =
            (db.clone(), acked.clone(), finished.clone(), reads.clone());
        std::thread::spawn(move || {
            while reads.load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            for k in 0..200i64 {
                // A new series an hour after the last, so older ones keep going idle; and an
                // old one written again, so cold series keep coming back.
                append_ok(&db, &series(k), &[(k * HOUR, k as f64)]);
                acked.fetch_add(1, SeqCst);
                if k >= 4 {
                    append_ok(&db, &series(k / 2), &[(k * HOUR + 1, 0.5)]);
                    acked.fetch_add(1, SeqCst);
                }
            }
            finished.store(true, SeqCst);
        })
    };
    let mover = {
        let (db, finished) = (db.clone(), finished.clone());
        std::thread::spawn(move || {
            while !finished.load(SeqCst) {
                db.flush().unwrap();
                db.inner.evict_idle().unwrap();
            }
        })
    };
    let hints = crate::SelectHints::range(i64::MIN, i64::MAX, usize::MAX);
    while !finished.load(SeqCst) {
        let before = acked.load(SeqCst);
        let got = db.select_decoded(&[eq(METRIC_NAME, "m")], &hints).unwrap();
        let samples: usize = got.iter().map(|s| s.samples.len()).sum();
        assert!(
            samples >= before,
            "read {samples} samples, {before} acknowledged"
        );
        reads.fetch_add(1, SeqCst);
    }
    writer.join().unwrap();
    mover.join().unwrap();
    assert!(reads.load(SeqCst) > 0);
    db.flush().unwrap();
    db.inner.evict_idle().unwrap();
    assert!(in_memory(&db) < 10, "{} series in memory", in_memory(&db));
    let got = db.select_decoded(&[eq(METRIC_NAME, "m")], &hints).unwrap();
    assert_eq!(got.len(), 200);
    assert_eq!(
        got.iter().map(|s| s.samples.len()).sum::<usize>(),
        200 + 196
    );
}

fn exemplar(t: i64, v: f64, trace: &str) -> Exemplar {
    Exemplar {
        labels: Labels::from_pairs([("trace_id", trace)]),
        value: v,
        t,
    }
}

/// A batch of one series entry with samples and exemplars.
fn with_exemplars(l: &Labels, samples: &[(i64, f64)], ex: &[Exemplar]) -> EncodedBatch {
    let mut b = EncodedBatch::from(vec![batch(l, samples)]);
    b.add_exemplars(ex.iter().cloned());
    b
}

fn exemplars_of(db: &Tsdb, name: &str, start: i64, end: i64) -> Vec<ExemplarSeries> {
    db.select_exemplars(start, end, &[vec![eq(METRIC_NAME, name)]])
        .unwrap()
}

#[test]
fn exemplars_are_judged_as_prometheus_bounded_per_series_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let a = labels("m", &[("i", "a")]);
    let b = labels("m", &[("i", "b")]);
    let bounded = TsdbOptions {
        max_exemplars_per_series: 3,
        ..opts()
    };
    {
        let db = Tsdb::open(dir.path(), bounded.clone()).unwrap();
        let r = db
            .append_batch(
                &with_exemplars(
                    &a,
                    &[(1000, 1.0)],
                    &[
                        exemplar(900, 1.0, "t1"),
                        exemplar(900, 1.0, "t1"),
                        exemplar(800, 1.0, "t0"),
                        exemplar(
                            950,
                            1.0,
                            &"x".repeat(EXEMPLAR_MAX_LABEL_SET_LENGTH - "trace_id".len() + 1),
                        ),
                    ],
                ),
                AppendMode::AllOrNothing,
            )
            .unwrap();
        assert_eq!(r.samples_written, 1);
        assert_eq!(r.rejected, vec![]);
        // The repeat of the newest counts as written; the older one and the long one do not.
        assert_eq!(
            (
                r.exemplars_written,
                r.exemplars_out_of_order,
                r.exemplars_invalid
            ),
            (2, 1, 1)
        );
        // An entry with exemplars only, of a series in memory, then of one that no entry adds.
        let mut only = EncodedBatch::new();
        only.push_pairs(
            a.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            &[],
            &[],
        )
        .unwrap();
        only.add_exemplars((1..=4).map(|i| exemplar(1000 + i, i as f64, &format!("u{i}"))));
        only.push_pairs(
            b.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            &[],
            &[],
        )
        .unwrap();
        only.add_exemplars([exemplar(5, 1.0, "lost")]);
        let r = db.append_batch(&only, AppendMode::BestEffort).unwrap();
        assert_eq!((r.exemplars_written, r.exemplars_invalid), (4, 1));
        // Dropped without close or flush.
    }
    let db = Tsdb::open(dir.path(), bounded).unwrap();
    let got = exemplars_of(&db, "m", i64::MIN, i64::MAX);
    assert_eq!(
        got,
        vec![ExemplarSeries {
            series_labels: a.clone(),
            exemplars: (2..=4)
                .map(|i| exemplar(1000 + i, i as f64, &format!("u{i}")))
                .collect(),
        }],
        "the newest three of the series, oldest first"
    );
    assert_eq!(exemplars_of(&db, "m", 1003, 1003)[0].exemplars.len(), 1);
    assert_eq!(exemplars_of(&db, "other", i64::MIN, i64::MAX), vec![]);
    assert_eq!(
        db.select_exemplars(i64::MIN, i64::MAX, &[]).unwrap(),
        vec![]
    );
    // An all-or-nothing append that fails writes none of its exemplars.
    let r = db
        .append_batch(
            &with_exemplars(&a, &[(1000, 9.0)], &[exemplar(2000, 1.0, "v")]),
            AppendMode::AllOrNothing,
        )
        .unwrap();
    assert_eq!((r.rejected.len(), r.exemplars_written), (1, 0));
    assert_eq!(exemplars_of(&db, "m", 2000, 2000), vec![]);
    // A series the batch adds takes exemplars of an entry before the one adding it.
    let mut b_first = EncodedBatch::new();
    b_first
        .push_pairs(
            b.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            &[],
            &[],
        )
        .unwrap();
    b_first.add_exemplars([exemplar(10, 2.0, "b")]);
    b_first.append(EncodedBatch::from(vec![batch(&b, &[(10, 2.0)])]));
    let r = db.append_batch(&b_first, AppendMode::AllOrNothing).unwrap();
    assert_eq!(r.exemplars_written, 1);
    let got = exemplars_of(&db, "m", i64::MIN, i64::MAX);
    assert_eq!(
        got.iter()
            .map(|s| s.series_labels.clone())
            .collect::<Vec<_>>(),
        vec![a, b]
    );
    db.clear().unwrap();
    assert_eq!(exemplars_of(&db, "m", i64::MIN, i64::MAX), vec![]);
}

#[test]
fn retention_drops_old_exemplars_and_zero_stores_none() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let l = labels("m", &[]);
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let old = exemplar(now - 10 * PARTITION_MS, 1.0, "old");
    let young = exemplar(now - 60_000, 2.0, "young");
    db.append_batch(
        &with_exemplars(&l, &[(old.t, 1.0), (young.t, 2.0)], &[old, young.clone()]),
        AppendMode::AllOrNothing,
    )
    .unwrap();
    db.close().unwrap();
    let short = TsdbOptions {
        retention: Duration::from_secs(3 * 24 * 3600),
        ..opts()
    };
    let db = Tsdb::open(dir.path(), short).unwrap();
    assert_eq!(
        exemplars_of(&db, "m", i64::MIN, i64::MAX)[0].exemplars,
        vec![young]
    );
    drop(db);
    let off = TsdbOptions {
        max_exemplars_per_series: 0,
        ..opts()
    };
    let db = Tsdb::open(dir.path(), off).unwrap();
    let r = db
        .append_batch(
            &with_exemplars(&l, &[(now, 3.0)], &[exemplar(now, 3.0, "n")]),
            AppendMode::AllOrNothing,
        )
        .unwrap();
    assert_eq!((r.exemplars_written, r.exemplars_invalid), (0, 1));
}

#[test]
fn series_refs_are_given_used_and_renewed_when_a_series_left_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open(dir.path(), opts()).unwrap();
    let (a, b) = (labels("m", &[("job", "a")]), labels("m", &[("job", "b")]));
    let (ea, eb) = (EncodedLabels::new(&a), EncodedLabels::new(&b));
    let one = |t: i64| [Sample { t, v: t as f64 }];
    let append = |entries: &[(&EncodedLabels, Option<SeriesRef>)], t: i64| {
        let mut batch = EncodedBatch::new();
        for (labels, series) in entries {
            batch.push_encoded_ref(labels, *series, &one(t));
        }
        let r = db.append_batch(&batch, AppendMode::BestEffort).unwrap();
        assert_eq!(r.samples_written, entries.len());
        r.series_refs
    };

    // New series, none known: both entries get theirs.
    let refs = append(&[(&ea, None), (&eb, None)], 0);
    assert_eq!(refs.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1]);
    let (ra, rb) = (refs[0].1, refs[1].1);
    // Known and current: nothing to renew, and the samples land on their own series.
    assert_eq!(append(&[(&eb, Some(rb)), (&ea, Some(ra))], MIN), vec![]);
    // A series that left memory comes back under another slot; its stale reference is
    // looked past and renewed, and the other series' is not.
    db.flush().unwrap();
    append(&[(&eb, Some(rb))], 3 * HOUR);
    db.flush().unwrap();
    db.inner.evict_idle().unwrap();
    assert_eq!(in_memory(&db), 1, "a idle past 2h before b's newest sample");
    let c = labels("m", &[("job", "c")]);
    append(&[(&EncodedLabels::new(&c), None)], 3 * HOUR);
    let renewed = append(&[(&ea, Some(ra)), (&eb, Some(rb))], 3 * HOUR + MIN);
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    assert_eq!(renewed[0].0, 0);
    assert_ne!(renewed[0].1, ra);
    assert_eq!(
        all(&db, &a),
        bits(&[
            (0, 0.0),
            (MIN, MIN as f64),
            (3 * HOUR + MIN, (3 * HOUR + MIN) as f64)
        ])
    );
    assert_eq!(
        all(&db, &b),
        bits(&[
            (0, 0.0),
            (MIN, MIN as f64),
            (3 * HOUR, (3 * HOUR) as f64),
            (3 * HOUR + MIN, (3 * HOUR + MIN) as f64)
        ])
    );
    assert_eq!(all(&db, &c), bits(&[(3 * HOUR, (3 * HOUR) as f64)]));
}
