//! An in-memory store (`Querier` and `Appendable`) for tests of the engine, the runner and the
//! rules that should not depend on the TSDB.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use storage::contract::{series_set, BatchWriter};
use storage::{
    AppendMode, AppendReport, EncodedBatch, Histogram, HistogramSample, Labels, Matcher, Metadata,
    Querier, Sample, SelectHints, SeriesSamples, SeriesSet, StorageError,
};

use super::TestStore;

#[derive(Default)]
pub struct MemStore {
    series: Mutex<SeriesMap>,
}

/// Every series with its points by timestamp.
type SeriesMap = BTreeMap<Labels, BTreeMap<i64, Value>>;

#[derive(Clone)]
enum Value {
    Float(f64),
    Histogram(Histogram),
}

impl Querier for MemStore {
    fn select(&self, matchers: &[Matcher], hints: &SelectHints) -> Result<SeriesSet, StorageError> {
        let (mint, maxt, sample_limit) = (hints.start, hints.end, hints.limit);
        let series = self.lock()?;
        let mut out = Vec::new();
        let mut total = 0;
        for (labels, samples) in series.iter() {
            if !matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            {
                continue;
            }
            let mut picked = Vec::new();
            let mut histograms = Vec::new();
            for (&t, v) in samples.range(mint..=maxt) {
                match v {
                    Value::Float(v) => picked.push(Sample { t, v: *v }),
                    Value::Histogram(h) => histograms.push(HistogramSample { t, h: h.clone() }),
                }
            }
            if picked.is_empty() && histograms.is_empty() {
                continue;
            }
            total += picked.len() + histograms.len();
            if total > sample_limit {
                return Err(StorageError::SampleLimit {
                    limit: sample_limit,
                });
            }
            out.push(SeriesSamples {
                labels: labels.clone(),
                samples: picked,
                histograms,
            });
        }
        Ok(series_set(out))
    }
}

/// Stores every sample as given: nothing is out of order or out of bounds in memory.
impl BatchWriter for MemStore {
    fn write_batch(
        &self,
        batch: &EncodedBatch,
        _mode: AppendMode,
    ) -> Result<AppendReport, StorageError> {
        let mut series = self.lock()?;
        let mut report = AppendReport::default();
        for b in batch.to_series_batches() {
            let s = series.entry(b.labels.clone()).or_default();
            for x in &b.samples {
                s.insert(x.t, Value::Float(x.v));
            }
            for x in &b.histograms {
                s.insert(x.t, Value::Histogram(x.h.clone()));
            }
            report.samples_written += b.samples.len();
            report.histograms_written += b.histograms.len();
        }
        Ok(report)
    }

    /// Test scripts carry no metadata and the engine reads none.
    fn write_metadata(&self, _: &str, _: Metadata) -> Result<(), StorageError> {
        Ok(())
    }
}

impl TestStore for MemStore {
    fn clear(&self) -> Result<(), StorageError> {
        self.lock()?.clear();
        Ok(())
    }
}

impl MemStore {
    fn lock(&self) -> Result<MutexGuard<'_, SeriesMap>, StorageError> {
        self.series
            .lock()
            .map_err(|_| StorageError::Corrupt("poisoned".into()))
    }
}
