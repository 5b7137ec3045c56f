//! The scrape parsing hot path: one node-exporter-like page of 1,000 series (the target
//! simulator's, `# HELP`/`# TYPE` per family) through `ingest::scrape::exposition`, in the
//! Prometheus text format and in OpenMetrics, every sample's labels read as the scrape loop
//! reads them for a new series.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ingest::scrape::exposition::{Entry, Format, Parser};
use novamon_benches::generator::node_series;
use novamon_benches::targets::render_page;

const SERIES: usize = 1000;

/// Samples on the page, and the sum of their values and label counts (so nothing is skipped).
fn parse(body: &[u8], format: Format) -> (usize, f64) {
    let mut parser = Parser::new(body, format);
    let (mut n, mut sum) = (0, 0.0);
    while let Some(entry) = parser.next().expect("the page parses") {
        if let Entry::Sample(s) = entry {
            n += 1;
            sum += s.value;
            s.for_each_label(|_, v| sum += v.len() as f64);
        }
    }
    (n, sum)
}

fn bench_parse(c: &mut Criterion) {
    let text = render_page(&mut node_series(SERIES), 1);
    let om = format!("{text}# EOF\n");
    let mut group = c.benchmark_group("scrape_parse");
    group.throughput(Throughput::Elements(SERIES as u64));
    for (name, body, format) in [
        ("text", text.as_bytes(), Format::Prometheus),
        ("openmetrics", om.as_bytes(), Format::OpenMetrics),
    ] {
        assert_eq!(parse(body, format).0, SERIES);
        group.bench_function(format!("{name}/{}B", body.len()), |b| {
            b.iter(|| parse(black_box(body), format))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
