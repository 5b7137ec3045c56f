//! The remote-write decode hot path: snappy, protobuf, symbol resolution and label validation
//! of a realistic 2000-sample request (node-exporter-like series, one sample each, as
//! Prometheus's queue manager sends them), for both protocol versions.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ingest::remote_write::{decode, Protocol};
use ingest::Limits;
use novamon_benches::generator::node_series;
use novamon_benches::load::encode;

const SAMPLES: usize = 2000;

fn bench_decode(c: &mut Criterion) {
    let mut series = node_series(SAMPLES);
    let samples: Vec<(usize, i64, f64)> = series
        .iter_mut()
        .enumerate()
        .map(|(i, s)| (i, 1_700_000_000_000, s.next(0)))
        .collect();
    let limits = Limits::default();
    let mut group = c.benchmark_group("remote_write_decode");
    group.throughput(Throughput::Elements(SAMPLES as u64));
    for protocol in [Protocol::V1, Protocol::V2] {
        let batch = encode(protocol, &series, &samples);
        let decoded = decode(protocol, batch.body(), &limits).expect("generated request decodes");
        assert_eq!(decoded.series().len(), SAMPLES);
        group.bench_function(format!("{protocol}/{}B", batch.body().len()), |b| {
            b.iter(|| decode(protocol, black_box(batch.body()), &limits))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
