//! An in-memory `Queryable` for tests of the engine and the runner that should not depend on
//! the TSDB.

use std::collections::BTreeMap;
use std::sync::Mutex;

use storage::{Labels, Matcher, Queryable, Sample, SeriesBatch, SeriesSamples, StorageError};

use super::TestStore;

#[derive(Default)]
pub(crate) struct MemStore {
    series: Mutex<BTreeMap<Labels, BTreeMap<i64, f64>>>,
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
            let picked: Vec<Sample> = samples
                .range(mint..=maxt)
                .map(|(&t, &v)| Sample { t, v })
                .collect();
            if picked.is_empty() {
                continue;
            }
            total += picked.len();
            if total > sample_limit {
                return Err(StorageError::SampleLimit {
                    limit: sample_limit,
                });
            }
            out.push(SeriesSamples {
                labels: labels.clone(),
                samples: picked,
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
                s.insert(x.t, x.v);
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
