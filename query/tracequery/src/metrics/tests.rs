use std::time::{SystemTime, UNIX_EPOCH};

use storage::traces::{TraceStore, TraceStoreOptions};

use super::*;
use crate::test_traces::{checkout, MS};
use crate::traceql::parse;

const S: u64 = 1_000_000_000;

/// Three checkout traces: one 10 s into a minute-aligned `t0` an hour ago, two in the next
/// minute (70 s and 75 s in).
fn store() -> (tempfile::TempDir, TraceStore, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = TraceStore::open(dir.path(), TraceStoreOptions::default()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t0 = (now - 3600) / 60 * 60 * S;
    for (id, at) in [(1, 10), (2, 70), (3, 75)] {
        store.write(&checkout(id, t0 + at * S)).unwrap();
    }
    (dir, store, t0)
}

fn req(t0: u64) -> MetricsRequest {
    MetricsRequest {
        start_ns: t0,
        end_ns: t0 + 120 * S,
        step_ns: 60 * S,
        instant: false,
        exemplars: 0,
        max_series: 100,
        max_spans: 10_000,
    }
}

fn run(store: &TraceStore, q: &str, r: MetricsRequest) -> MetricsResult {
    evaluate(store, &parse(q).unwrap(), r).unwrap().unwrap()
}

/// Series as (labels as text, values per step of `t0`, `t0 + 60 s`, `t0 + 120 s`), sorted.
fn table(r: &MetricsResult, t0: u64) -> Vec<(String, Vec<Option<f64>>)> {
    let mut out: Vec<_> = r
        .series
        .iter()
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.text()))
                .collect::<Vec<_>>()
                .join(",");
            let at = |t: u64| {
                s.samples
                    .iter()
                    .find(|(ms, _)| *ms as u64 == t / 1_000_000)
                    .map(|(_, v)| *v)
            };
            (labels, vec![at(t0), at(t0 + 60 * S), at(t0 + 120 * S)])
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn series(labels: &str, values: [Option<f64>; 3]) -> (String, Vec<Option<f64>>) {
    (labels.to_owned(), values.to_vec())
}

#[test]
fn counts_and_rates_fall_in_right_closed_steps() {
    let (_dir, store, t0) = store();
    // Steps (t0−60 s, t0], (t0, t0+60 s], (t0+60 s, t0+120 s]: 0, one trace, two traces of 6 spans.
    assert_eq!(
        table(&run(&store, "{ } | count_over_time()", req(t0)), t0),
        vec![series(
            "__name__=count_over_time",
            [Some(0.0), Some(6.0), Some(12.0)]
        )]
    );
    assert_eq!(
        table(&run(&store, "{ } | rate()", req(t0)), t0),
        vec![series("__name__=rate", [Some(0.0), Some(0.1), Some(0.2)])]
    );
    assert_eq!(
        table(
            &run(
                &store,
                "{ status = error } | count_over_time() by (resource.service.name)",
                req(t0)
            ),
            t0
        ),
        vec![series(
            "resource.service.name=api",
            [Some(0.0), Some(1.0), Some(2.0)]
        )]
    );
    // Spans without the attribute form their own `nil` series.
    assert_eq!(
        table(
            &run(
                &store,
                "{ } | count_over_time() by (span.db.system)",
                req(t0)
            ),
            t0
        ),
        vec![
            series("span.db.system=nil", [Some(0.0), Some(5.0), Some(10.0)]),
            series("span.db.system=postgres", [Some(0.0), Some(1.0), Some(2.0)]),
        ]
    );
    assert_eq!(
        table(
            &run(
                &store,
                "{ nestedSetParent < 0 && true } | rate() by (resource.service.name)",
                req(t0)
            ),
            t0
        ),
        vec![series(
            "resource.service.name=frontend",
            [Some(0.0), Some(1.0 / 60.0), Some(2.0 / 60.0)]
        )]
    );
}

#[test]
fn aggregates_over_time_skip_empty_steps() {
    let (_dir, store, t0) = store();
    assert_eq!(
        table(
            &run(
                &store,
                "{ } | max_over_time(duration) by (resource.service.name)",
                req(t0)
            ),
            t0
        ),
        vec![
            series("resource.service.name=api", [None, Some(0.07), Some(0.07)]),
            series("resource.service.name=db", [None, Some(0.01), Some(0.01)]),
            series(
                "resource.service.name=frontend",
                [None, Some(0.1), Some(0.1)]
            ),
        ]
    );
    let avg = (100.0 + 80.0 + 70.0 + 10.0 + 5.0 + 10.0) / 6.0 / 1000.0;
    let got = table(&run(&store, "{ } | avg_over_time(duration)", req(t0)), t0);
    assert_eq!(got[0].0, "__name__=avg_over_time");
    assert_eq!(got[0].1[0], None);
    assert!((got[0].1[1].unwrap() - avg).abs() < 1e-12);
    assert!((got[0].1[2].unwrap() - avg).abs() < 1e-12);
    assert_eq!(
        table(
            &run(
                &store,
                "{ } | sum_over_time(span.http.status_code)",
                req(t0)
            ),
            t0
        ),
        vec![series(
            "__name__=sum_over_time",
            [None, Some(500.0), Some(1000.0)]
        )]
    );
}

#[test]
fn histograms_and_quantiles_use_power_of_two_duration_buckets() {
    let (_dir, store, t0) = store();
    // Frontend spans per trace: 100 ms and 80 ms (bucket 2^27 ns), 10 ms (bucket 2^24 ns).
    let (lo, hi): (f64, f64) = (16_777_216.0 / 1e9, 134_217_728.0 / 1e9);
    assert_eq!(
        table(
            &run(
                &store,
                r#"{ resource.service.name = "frontend" } | histogram_over_time(duration)"#,
                req(t0)
            ),
            t0
        ),
        vec![
            series(&format!("__bucket={lo}"), [Some(0.0), Some(1.0), Some(2.0)]),
            series(&format!("__bucket={hi}"), [Some(0.0), Some(2.0), Some(4.0)]),
        ]
    );
    // p50 of {lo×1, hi×2}: the 2nd value, halfway (exponentially) through the `hi` bucket; of
    // {lo×2, hi×4}: the 3rd value, a quarter through it. Empty steps answer 0, as Tempo's do.
    let got = table(
        &run(
            &store,
            r#"{ resource.service.name = "frontend" } | quantile_over_time(duration, 0.5)"#,
            req(t0),
        ),
        t0,
    );
    let at = |f: f64| 2f64.powf(lo.log2() + (hi.log2() - lo.log2()) * f);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "p=0.5");
    assert_eq!(got[0].1[0], Some(0.0));
    assert!((got[0].1[1].unwrap() - at(0.5)).abs() < 1e-12);
    assert!((got[0].1[2].unwrap() - at(0.25)).abs() < 1e-12);
}

#[test]
fn structural_metrics_read_each_trace_once() {
    let (_dir, store, t0) = store();
    let r = run(
        &store,
        r#"{ resource.service.name = "frontend" } >> { resource.service.name = "db" } | count_over_time()"#,
        req(t0),
    );
    assert_eq!(
        table(&r, t0),
        vec![series(
            "__name__=count_over_time",
            [Some(0.0), Some(1.0), Some(2.0)]
        )]
    );
    assert_eq!(r.inspected_traces, 3);
}

#[test]
fn second_stages_keep_the_top_series_and_filter_values() {
    let (_dir, store, t0) = store();
    let r = run(
        &store,
        "{ } | count_over_time() by (resource.service.name) | topk(1)",
        req(t0),
    );
    let at_60: Vec<_> = table(&r, t0)
        .into_iter()
        .filter(|s| s.1[1].is_some())
        .collect();
    assert_eq!(at_60.len(), 1);
    assert_eq!(at_60[0].0, "resource.service.name=frontend");
    assert_eq!(
        table(
            &run(
                &store,
                "{ } | count_over_time() by (resource.service.name) > 4",
                req(t0)
            ),
            t0
        ),
        vec![series(
            "resource.service.name=frontend",
            [None, None, Some(6.0)]
        )]
    );
}

#[test]
fn instants_cover_the_whole_window_and_budgets_mark_answers_partial() {
    let (_dir, store, t0) = store();
    let mut r = req(t0);
    r.instant = true;
    let got = run(&store, "{ } | count_over_time()", r);
    assert_eq!(got.series.len(), 1);
    assert_eq!(
        got.series[0].samples,
        vec![(((t0 + 120 * S) / 1_000_000) as i64, 18.0)]
    );
    assert_eq!(got.partial, None);

    let mut r = req(t0);
    r.max_spans = 5;
    let got = run(&store, "{ } | count_over_time()", r);
    assert_eq!(got.inspected_spans, 5);
    assert!(got.partial.unwrap().contains("5 spans"));

    let mut r = req(t0);
    r.max_series = 1;
    let got = run(&store, "{ } | count_over_time() by (name)", r);
    assert_eq!(got.series.len(), 1);
    assert!(got.partial.unwrap().contains("more than 1 series"));

    // Many steps hold fewer series: 10,000 one-second steps leave room for 100.
    let r = MetricsRequest {
        start_ns: t0,
        end_ns: t0 + 9_999 * S,
        step_ns: S,
        ..req(t0)
    };
    let got = run(&store, "{ } | count_over_time() by (trace:id, span:id)", r);
    assert_eq!(got.series.len(), 18);
    assert_eq!(got.partial, None);
    assert_eq!(series_cap(1000, 10_000), 100);
    assert_eq!(series_cap(1000, 240), 1000);
    assert_eq!(series_cap(1000, 11_000), 90);
}

#[test]
fn exemplars_point_at_stored_spans_with_their_steps_value() {
    let (_dir, store, t0) = store();
    let mut r = req(t0);
    r.exemplars = 10;
    let got = run(&store, "{ } | rate()", r);
    let s = &got.series[0];
    assert!(!s.exemplars.is_empty() && s.exemplars.len() <= 10);
    for e in &s.exemplars {
        assert!([1u8, 2, 3].contains(&e.trace_id[0]), "{e:?}");
        let step = s
            .samples
            .iter()
            .find(|(t, _)| *t >= e.timestamp_ms && *t - e.timestamp_ms < 60_000)
            .unwrap();
        assert_eq!(e.value, step.1);
    }
    let got = run(&store, "{ } | max_over_time(duration)", r);
    assert!(got.series[0]
        .exemplars
        .iter()
        .all(|e| e.value <= 0.1 && e.value > 0.0));
}

#[test]
fn steps_align_as_tempo_aligns_them() {
    let s = Steps::new(&MetricsRequest {
        start_ns: 1000 * S,
        end_ns: 2000 * S,
        step_ns: 60 * S,
        ..req(0)
    })
    .unwrap();
    assert_eq!((s.start, s.end, s.count), (900 * S, 2040 * S, 19));
    assert_eq!(s.index(900 * S), None);
    assert_eq!(s.index(900 * S + 1), Some(0));
    assert_eq!(s.index(960 * S), Some(0));
    assert_eq!(s.index(960 * S + 1), Some(1));
    assert_eq!(s.timestamp_ms(0), 960_000);
    assert!(Steps::new(&MetricsRequest {
        step_ns: S / 1000,
        ..req(0)
    })
    .is_err());
    assert_eq!(default_step(0, 3600 * S), 15 * S);
    assert_eq!(default_step(0, 30 * S), 100_000_000);
    assert_eq!(default_step(0, 24 * 3600 * S), 300 * S);
}

#[test]
fn quantiles_interpolate_like_tempo() {
    assert_eq!(log2_quantile(0.5, &[]), 0.0);
    assert_eq!(log2_quantile(1.0, &[(1.0, 1.0), (2.0, 1.0)]), 2.0);
    assert_eq!(log2_quantile(0.5, &[(1.0, 1.0), (2.0, 1.0)]), 1.0);
    // One bucket: from half its bound, exponentially; the 1st of 2 values is halfway.
    assert!((log2_quantile(0.5, &[(4.0, 2.0)]) - 2f64.powf(1.5)).abs() < 1e-12);
    assert_eq!(log2_bucket(1), None);
    assert_eq!(log2_bucket(2), Some(2.0));
    assert_eq!(log2_bucket(3), Some(4.0));
    assert_eq!(log2_bucket(100_000_000), Some(134_217_728.0));
}

/// `compare()`'s series as `"<__meta_type> <attribute>=<value>"` → the value of each step
/// (`t0`, `t0 + 60 s`, `t0 + 120 s`).
fn compared(r: &MetricsResult) -> std::collections::BTreeMap<String, Vec<f64>> {
    r.series
        .iter()
        .map(|s| {
            assert_eq!(s.labels.len(), 2, "{s:?}");
            assert_eq!(s.labels[0].0, "__meta_type", "{s:?}");
            let key = format!(
                "{} {}={}",
                s.labels[0].1.text(),
                s.labels[1].0,
                s.labels[1].1.text()
            );
            (key, s.samples.iter().map(|(_, v)| *v).collect())
        })
        .collect()
}

/// The checkout traces split by `{ status = error }`: the three `GET /api` spans (one in the
/// second step, two in the third) are the selection, the other 15 spans the baseline. Counts
/// worked out by hand from the trace (see `test_traces::checkout`).
#[test]
fn compare_counts_each_attribute_value_in_selection_and_baseline() {
    let (_dir, store, t0) = store();
    let r = run(&store, "{ } | compare({ status = error })", req(t0));
    assert_eq!(r.partial, None);
    let got = compared(&r);
    let per_trace = |n: f64| vec![0.0, n, 2.0 * n];
    let mut want: Vec<(String, Vec<f64>)> = [
        // The selection: one span per trace.
        ("selection name=GET /api", per_trace(1.0)),
        ("selection status=error", per_trace(1.0)),
        ("selection statusMessage=", per_trace(1.0)),
        ("selection kind=server", per_trace(1.0)),
        ("selection resource.service.name=api", per_trace(1.0)),
        ("selection span.http.status_code=500", per_trace(1.0)),
        ("selection rootName=GET /", per_trace(1.0)),
        ("selection rootServiceName=frontend", per_trace(1.0)),
        // The baseline: five spans per trace.
        ("baseline name=GET /", per_trace(1.0)),
        ("baseline name=call-api", per_trace(1.0)),
        ("baseline name=query", per_trace(1.0)),
        ("baseline name=cache", per_trace(1.0)),
        ("baseline name=render", per_trace(1.0)),
        ("baseline status=unset", per_trace(5.0)),
        ("baseline statusMessage=", per_trace(5.0)),
        ("baseline kind=server", per_trace(1.0)),
        ("baseline kind=client", per_trace(2.0)),
        ("baseline kind=internal", per_trace(2.0)),
        ("baseline resource.service.name=frontend", per_trace(3.0)),
        ("baseline resource.service.name=api", per_trace(1.0)),
        ("baseline resource.service.name=db", per_trace(1.0)),
        ("baseline span.db.system=postgres", per_trace(1.0)),
        ("baseline rootName=GET /", per_trace(5.0)),
        ("baseline rootServiceName=frontend", per_trace(5.0)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // Totals: the group's spans that have the attribute, whatever its value.
    for a in [
        "name",
        "status",
        "statusMessage",
        "kind",
        "resource.service.name",
        "rootName",
        "rootServiceName",
    ] {
        want.push((format!("selection_total {a}=nil"), per_trace(1.0)));
        want.push((format!("baseline_total {a}=nil"), per_trace(5.0)));
    }
    want.push((
        "selection_total span.http.status_code=nil".into(),
        per_trace(1.0),
    ));
    want.push(("baseline_total span.db.system=nil".into(), per_trace(1.0)));
    assert_eq!(got, want.into_iter().collect());
    // Values keep their type: the status code is an integer, a total's value is nil.
    let code: Vec<_> = r
        .series
        .iter()
        .filter(|s| s.labels[1].0 == "span.http.status_code")
        .map(|s| s.labels.clone())
        .collect();
    assert!(code.contains(&vec![
        ("__meta_type".into(), Value::Str("selection".into())),
        ("span.http.status_code".into(), Value::Int(500)),
    ]));
    assert!(code.contains(&vec![
        ("__meta_type".into(), Value::Str("selection_total".into())),
        ("span.http.status_code".into(), Value::Nil),
    ]));
    // Every step has a sample, zeros included, at Tempo's step timestamps.
    let steps: Vec<i64> = r.series[0].samples.iter().map(|(t, _)| *t).collect();
    let ms = |s: u64| ((t0 + s * S) / 1_000_000) as i64;
    assert_eq!(steps, [ms(0), ms(60), ms(120)]);
}

#[test]
fn compare_keeps_the_top_n_values_of_each_attribute_and_group() {
    let (_dir, store, t0) = store();
    let got = compared(&run(
        &store,
        "{ } | compare({ status = error }, 2)",
        req(t0),
    ));
    let kept = |prefix: &str| -> Vec<String> {
        got.keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    };
    // client and internal (6 spans each) over server (3).
    assert_eq!(
        kept("baseline kind="),
        ["baseline kind=client", "baseline kind=internal"]
    );
    // frontend (9), then api and db tie at 3: the smaller value wins the tie.
    assert_eq!(
        kept("baseline resource.service.name="),
        [
            "baseline resource.service.name=api",
            "baseline resource.service.name=frontend"
        ]
    );
    // Five names tied at 3 spans: "GET /" and "cache" sort first.
    assert_eq!(
        kept("baseline name="),
        ["baseline name=GET /", "baseline name=cache"]
    );
    // Totals still count every span with the attribute.
    assert_eq!(got["baseline_total name=nil"], [0.0, 5.0, 10.0]);
    assert_eq!(got["baseline_total kind=nil"], [0.0, 5.0, 10.0]);
}

#[test]
fn compare_selects_only_within_its_right_closed_window() {
    let (_dir, store, t0) = store();
    // `GET /api` of trace 2 starts at t0 + 70.010 s, of trace 3 at t0 + 75.010 s: the window
    // (70.010 s, 75.010 s] selects the latter only; trace 1's, before it, stays in the baseline.
    let (start, end) = (t0 + 70_010 * MS, t0 + 75_010 * MS);
    let q = format!("{{ }} | compare({{ status = error }}, 10, {start}, {end})");
    let got = compared(&run(&store, &q, req(t0)));
    assert_eq!(got["selection name=GET /api"], [0.0, 0.0, 1.0]);
    assert_eq!(got["baseline name=GET /api"], [0.0, 1.0, 1.0]);
    assert_eq!(got["baseline status=error"], [0.0, 1.0, 1.0]);
    assert_eq!(got["selection_total name=nil"], [0.0, 0.0, 1.0]);
    assert_eq!(got["baseline_total name=nil"], [0.0, 6.0, 11.0]);
}

#[test]
fn compare_reads_the_trace_only_when_a_span_alone_cannot_answer() {
    let (_dir, store, t0) = store();
    // The selection needs the trace's root: the client spans of traces rooted in frontend.
    let r = run(
        &store,
        r#"{ } | compare({ rootServiceName = "frontend" && kind = client })"#,
        req(t0),
    );
    let got = compared(&r);
    assert_eq!(got["selection kind=client"], [0.0, 2.0, 4.0]);
    assert_eq!(got["selection name=query"], [0.0, 1.0, 2.0]);
    assert_eq!(got["selection name=call-api"], [0.0, 1.0, 2.0]);
    assert!(!got.contains_key("baseline kind=client"));
    assert_eq!(r.inspected_traces, 3);
    // Traces Drilldown's root spans: the root knows its own name and service, and the filter
    // decides alone, so no trace is read.
    let r = run(
        &store,
        r#"{nestedSetParent<0 && true} | compare({status = error}, 10)"#,
        req(t0),
    );
    let got = compared(&r);
    assert_eq!(got["baseline name=GET /"], [0.0, 1.0, 2.0]);
    assert_eq!(got["baseline rootServiceName=frontend"], [0.0, 1.0, 2.0]);
    assert!(got.keys().all(|k| k.starts_with("baseline")), "{got:?}");
    assert_eq!(r.inspected_traces, 0);
}

#[test]
fn compare_answers_instants_exemplars_and_the_series_limit() {
    let (_dir, store, t0) = store();
    let mut r = req(t0);
    r.instant = true;
    let got = run(&store, "{ } | compare({ status = error })", r);
    let s = got
        .series
        .iter()
        .find(|s| s.labels[1] == ("name".into(), Value::Str("GET /api".into())))
        .unwrap();
    assert_eq!(s.samples, [(((t0 + 120 * S) / 1_000_000) as i64, 3.0)]);

    // Exemplars sit on the totals of the attributes their span has, without a value: one per
    // group in each tenth of the window (18 s) that has spans, so two each (trace 1; traces 2
    // and 3 share a tenth).
    let mut r = req(t0);
    r.exemplars = 10;
    let got = run(&store, "{ } | compare({ status = error })", r);
    let total = |kind: &str, attr: &str| {
        got.series
            .iter()
            .find(|s| s.labels[0].1 == Value::Str(kind.into()) && s.labels[1].0 == attr)
            .unwrap()
    };
    let code = &total("selection_total", "span.http.status_code").exemplars;
    assert_eq!(code.len(), 2, "{code:?}");
    assert!(code
        .iter()
        .all(|e| e.span_id == vec![b'c'; 8] && e.value.is_nan()));
    let names = &total("baseline_total", "name").exemplars;
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|e| e.span_id != vec![b'c'; 8]));
    assert!(got
        .series
        .iter()
        .filter(|s| !s.labels[0].1.text().ends_with("_total"))
        .all(|s| s.exemplars.is_empty()));

    // Attributes go whole, in name order, until the series limit: `kind` has 6 series, with
    // `name`'s 8 more it would pass 10.
    let mut r = req(t0);
    r.max_series = 10;
    let got = run(&store, "{ } | compare({ status = error })", r);
    assert_eq!(got.series.len(), 6);
    assert!(got.series.iter().all(|s| s.labels[1].0 == "kind"));
    assert!(got.partial.unwrap().contains("more than 10 series"));
}
