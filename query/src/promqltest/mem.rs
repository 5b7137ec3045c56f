//! An in-memory `Queryable` for tests of the engine and the runner that should not depend on
//! the TSDB.

use std::collections::BTreeMap;
use std::sync::Mutex;

use storage::{
    Histogram, HistogramSample, Labels, Matcher, Queryable, Sample, SeriesBatch, SeriesSamples,
    StorageError,
};

use super::TestStore;

#[derive(Default)]
pub(crate) struct MemStore {
    series: Mutex<BTreeMap<Labels, BTreeMap<i64, Value>>>,
}

#[derive(Clone)]
enum Value {
    Float(f64),
    Histogram(Histogram),
}

impl Queryable for MemStore {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        sample_limit: usize,
    ) -> Result<Vec<SeriesSamples>, StorageError> {
        let series = self
            .series
            .lock()
            .map_err(|_| StorageError::Corrupt("poisoned".into()))?;
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
        Ok(out)
    }
}

impl TestStore for MemStore {
    fn load(&self, batch: &[SeriesBatch]) -> Result<(), String> {
        let mut series = self.series.lock().map_err(|_| "poisoned".to_string())?;
        for b in batch {
            let s = series.entry(b.labels.clone()).or_default();
            for x in &b.samples {
                s.insert(x.t, Value::Float(x.v));
            }
            for x in &b.histograms {
                s.insert(x.t, Value::Histogram(x.h.clone()));
            }
        }
        Ok(())
    }

    fn clear(&self) -> Result<(), String> {
        self.series
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .clear();
        Ok(())
    }
}
