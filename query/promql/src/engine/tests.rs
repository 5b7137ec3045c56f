use std::sync::Arc;

use storage::{Labels, Sample, SeriesBatch};

use super::{Engine, EngineOptions};
use crate::promqltest::load;
use crate::promqltest::mem::MemStore;
use crate::{QueryError, Value};

fn engine_with(series: &[(&str, &[(i64, f64)])]) -> Engine {
    let store = MemStore::default();
    let batch: Vec<SeriesBatch> = series
        .iter()
        .map(|(name, pts)| SeriesBatch {
            histograms: Vec::new(),
            labels: Labels::from_pairs([("__name__", *name)]),
            samples: pts.iter().map(|&(t, v)| Sample { t, v }).collect(),
        })
        .collect();
    load(&store, batch).unwrap_or_else(|e| panic!("{e}"));
    Engine::new(Arc::new(store), EngineOptions::default())
}

#[test]
fn instant_selector_uses_left_open_lookback() {
    let e = engine_with(&[("m", &[(0, 1.0), (300_000, 2.0)])]);
    let at = |t| match e.instant_query("m", t).map(|r| r.value) {
        Ok(Value::Vector(v)) => v.first().map(|s| s.v),
        other => panic!("{other:?}"),
    };
    assert_eq!(at(299_999), Some(1.0));
    assert_eq!(at(300_000), Some(2.0));
    assert_eq!(at(600_000), None);
    assert_eq!(at(599_999), Some(2.0));
}

#[test]
fn stale_marker_ends_series() {
    let e = engine_with(&[(
        "m",
        &[(0, 1.0), (10_000, f64::from_bits(storage::STALE_NAN_BITS))],
    )]);
    match e.instant_query("m", 20_000).map(|r| r.value) {
        Ok(Value::Vector(v)) => assert!(v.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sample_limit_is_enforced() {
    let pts: Vec<(i64, f64)> = (0..100).map(|i| (i * 1000, i as f64)).collect();
    let store = MemStore::default();
    load(
        &store,
        vec![SeriesBatch {
            histograms: Vec::new(),
            labels: Labels::from_pairs([("__name__", "m")]),
            samples: pts.iter().map(|&(t, v)| Sample { t, v }).collect(),
        }],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let e = Engine::new(
        Arc::new(store),
        EngineOptions {
            max_samples: 10,
            ..EngineOptions::default()
        },
    );
    let r = e.instant_query("sum_over_time(m[100s])", 99_000);
    assert!(matches!(r, Err(QueryError::TooManySamples)), "{r:?}");
    assert_eq!(
        QueryError::TooManySamples.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
}

#[test]
fn range_query_rejects_range_vectors() {
    let e = engine_with(&[("m", &[(0, 1.0)])]);
    let r = e.range_query("m[1m]", 0, 60_000, 10_000);
    assert!(
        matches!(&r, Err(QueryError::Execution(m)) if m.contains("invalid expression type \"range vector\"")),
        "{r:?}"
    );
}

#[test]
fn timeout_is_enforced() {
    let store = MemStore::default();
    let e = Engine::new(
        Arc::new(store),
        EngineOptions {
            timeout: std::time::Duration::ZERO,
            ..EngineOptions::default()
        },
    );
    let r = e.instant_query("vector(1)", 0);
    assert!(matches!(r, Err(QueryError::Timeout)), "{r:?}");
}

#[test]
fn range_query_loads_each_selector_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Counting(MemStore, AtomicUsize);
    impl storage::Querier for Counting {
        fn select(
            &self,
            m: &[storage::Matcher],
            hints: &storage::SelectHints,
        ) -> Result<storage::SeriesSet, storage::StorageError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.select(m, hints)
        }
    }
    let store = Arc::new(Counting(MemStore::default(), AtomicUsize::new(0)));
    let pts: Vec<Sample> = (0..100)
        .map(|i| Sample {
            t: i * 15_000,
            v: i as f64,
        })
        .collect();
    load(
        &store.0,
        vec![SeriesBatch {
            histograms: Vec::new(),
            labels: Labels::from_pairs([("__name__", "m")]),
            samples: pts,
        }],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let e = Engine::new(store.clone(), EngineOptions::default());
    let r = e.range_query("rate(m[1m]) + m", 0, 1_500_000, 15_000);
    assert!(
        matches!(&r, Ok(res) if matches!(&res.value, Value::Matrix(s) if s.len() == 1)),
        "{r:?}"
    );
    assert_eq!(store.1.load(Ordering::SeqCst), 2);
}

#[test]
fn selects_carry_function_and_grouping_hints() {
    use std::sync::Mutex;
    /// Function, grouping, by and range of one select.
    type Seen = (Option<String>, Vec<String>, bool, i64);
    /// Records the hints of every select.
    struct Recording(MemStore, Mutex<Vec<Seen>>);
    impl storage::Querier for Recording {
        fn select(
            &self,
            m: &[storage::Matcher],
            hints: &storage::SelectHints,
        ) -> Result<storage::SeriesSet, storage::StorageError> {
            self.1.lock().unwrap().push((
                hints.func.clone(),
                hints.grouping.clone(),
                hints.by,
                hints.range,
            ));
            self.0.select(m, hints)
        }
    }
    let hints_of = |q: &str| {
        let store = Arc::new(Recording(MemStore::default(), Mutex::default()));
        let e = Engine::new(store.clone(), EngineOptions::default());
        e.instant_query(q, 60_000)
            .unwrap_or_else(|err| panic!("{q}: {err}"));
        let got = store.1.lock().unwrap().clone();
        got
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Prometheus's path rules: the nearest call or aggregation names the function, the
    // nearest aggregation gives the grouping, a binary operator hides what is above it.
    assert_eq!(
        hints_of("sum by (job) (rate(m[5m]))"),
        vec![(Some("rate".into()), s(&["job"]), true, 300_000)]
    );
    assert_eq!(
        hints_of("max without (i) (m)"),
        vec![(Some("max".into()), s(&["i"]), false, 0)]
    );
    assert_eq!(
        hints_of("sum by (job) (m * 2)"),
        vec![(None, s(&["job"]), true, 0)]
    );
    assert_eq!(hints_of("m"), vec![(None, vec![], false, 0)]);
}

/// Runs `f` on a thread with the 2 MiB stack queries get in the server (tokio's blocking
/// pool), so a stack overflow fails the test instead of passing by a bigger test stack.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn deep_queries_are_parse_errors_not_stack_overflows() {
    let chain = format!("1{}", "+1".repeat(12_000));
    let parens = format!("{}1{}", "(".repeat(150_000), ")".repeat(150_000));
    let brackets = format!("m[{}1m{}]", "(".repeat(150_000), ")".repeat(150_000));
    let unary = format!("{}1", "-".repeat(150_000));
    for q in [chain, parens, brackets, unary] {
        let r = on_small_stack(move || {
            let e = engine_with(&[]);
            e.instant_query(&q, 0).map(|_| ())
        });
        match r {
            Err(QueryError::Parse(msg)) => assert!(msg.contains("nested too deeply"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn queries_at_the_nesting_limit_evaluate_on_a_small_stack() {
    use super::parse::MAX_NESTING;
    let n = MAX_NESTING;
    let wrap = |open: &str, inner: &str, close: &str, times: usize| {
        format!("{}{inner}{}", open.repeat(times), close.repeat(times))
    };
    let cases = [
        (format!("1{}", "+1".repeat(n)), n as f64 + 1.0),
        // `on()` opens one bracket level: n - 1 operators fit.
        (format!("m{}", " * on() m".repeat(n - 1)), 1.0),
        (wrap("(", "1", ")", n), 1.0),
        (wrap("abs(", "m", ")", n), 1.0),
        (wrap("sum(", "m", ")", n), 1.0),
        // One operator and one bracket level per step, an even number of signs.
        (wrap("-(", "-m", ")", (n - 1) / 2), 1.0),
        // Two bracket levels per subquery.
        (wrap("max_over_time((", "m", ")[1m:])", n / 2), 1.0),
    ];
    for (q, want) in cases {
        let got = on_small_stack(move || {
            let e = engine_with(&[("m", &[(0, 1.0)])]);
            match e.instant_query(&q, 0).map(|r| r.value) {
                Ok(Value::Scalar { v, .. }) => v,
                Ok(Value::Vector(v)) if v.len() == 1 => v[0].v,
                other => panic!("{}…: {other:?}", &q[..40.min(q.len())]),
            }
        });
        assert_eq!(got, want);
    }
}

#[test]
fn subquery_steps_count_against_the_sample_limit() {
    let small = |max_samples| {
        Engine::new(
            Arc::new(MemStore::default()),
            EngineOptions {
                max_samples,
                ..EngineOptions::default()
            },
        )
    };
    let e = small(100);
    for q in [
        "max_over_time(vector(1)[1h:1s])",
        "sum_over_time(timestamp(vector(time()))[1h:1s])",
        "count_over_time((vector(1) + 2)[1h:1s])",
        "max_over_time(max_over_time(vector(1)[1m:1s])[1h:1m])",
    ] {
        let r = e.instant_query(q, 3_600_000);
        assert!(matches!(r, Err(QueryError::TooManySamples)), "{q}: {r:?}");
    }
    // 99 steps of the left-open window (3501s, 3600s] fit in 100 samples.
    match e
        .instant_query("count_over_time(vector(1)[99s:1s])", 3_600_000)
        .map(|r| r.value)
    {
        Ok(Value::Vector(v)) => assert_eq!(v[0].v, 99.0),
        other => panic!("{other:?}"),
    }
    let r = e.range_query("vector(1)", 0, 1_000_000, 1_000);
    assert!(matches!(r, Err(QueryError::TooManySamples)), "{r:?}");
    // Ten years at one second: refused under the default limit, before it is allocated.
    let r = small(EngineOptions::default().max_samples)
        .instant_query("max_over_time(vector(1)[10y:1s])", 3_600_000);
    assert!(matches!(r, Err(QueryError::TooManySamples)), "{r:?}");
}

#[test]
fn aggregations_fold_large_inputs_as_they_arrive() {
    use crate::promqltest::{load_batch, parse_series};
    // 300 float series of 241 points each cross the point count past which an aggregation
    // folds series into its accumulators as they arrive; a histogram series sorts last (group
    // "2", after folding began) and is held and regrouped by step as before.
    let mut texts: Vec<String> = (0..300)
        .map(|i| {
            format!(
                "m{{g=\"{}\", i=\"{i:03}\"}} {i}+{}x240",
                i % 3,
                f64::from(i % 7) * 0.5
            )
        })
        .collect();
    texts.push("m{g=\"2\", i=\"zzz\"} {{schema:0 sum:5 count:4 buckets:[1 2 1]}}x240".into());
    let descs =
        parse_series(texts.iter().map(String::as_str)).unwrap_or_else(|(i, e)| panic!("{i}: {e}"));
    let store = MemStore::default();
    load(&store, load_batch(60_000, &descs)).unwrap_or_else(|e| panic!("{e}"));
    let e = Engine::new(Arc::new(store), EngineOptions::default());
    let run = |q: &str| {
        let r = e
            .range_query(q, 0, 240 * 60_000, 60_000)
            .unwrap_or_else(|err| panic!("{q}: {err}"));
        let Value::Matrix(m) = r.value else {
            panic!("{q}: {:?}", r.value)
        };
        let mut notes = [r.warnings, r.infos].concat();
        notes.sort();
        notes.dedup();
        (m, notes)
    };
    // One group alone stays below the point count, so it is held and aggregated as before;
    // its members are added in the same order either way, so the results agree to the bit.
    for q in [
        "sum by (g) (SEL)",
        "avg by (g) (rate(SEL[5m]))",
        "max by (g) (SEL)",
        "count by (g) (SEL)",
        "stddev by (g) (SEL)",
        "group by (g) (max_over_time(SEL[10m]))",
    ] {
        let (folded, folded_notes) = run(&q.replace("SEL", "m"));
        assert!(folded.len() >= 2, "{q}");
        let mut held_notes = Vec::new();
        for g in ["0", "1", "2"] {
            let (held, notes) = run(&q.replace("SEL", &format!("m{{g=\"{g}\"}}")));
            let of_group: Vec<_> = folded
                .iter()
                .filter(|s| s.labels.get("g") == Some(g))
                .cloned()
                .collect();
            assert_eq!(held, of_group, "{q}, group {g}");
            held_notes.extend(notes);
        }
        held_notes.sort();
        held_notes.dedup();
        assert_eq!(folded_notes, held_notes, "{q}");
    }
}
