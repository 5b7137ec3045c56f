//! The contract between the metric store and everything above it, after Prometheus's
//! `storage/interface.go`: writers append through an [`Appender`] transaction taken from an
//! [`Appendable`]; engines read through a [`Querier`] whose `select` is told what the data is
//! for ([`SelectHints`]) and answers a [`SeriesSet`] of [`Series`] whose points are decoded
//! as they are iterated; the series and label APIs read through a [`LabelQuerier`], the
//! exemplar API through an [`ExemplarQuerier`]. Exemplars are written with samples, in the
//! [`EncodedBatch`] or by [`Appender::append_exemplars`].
//!
//! Owns the shapes of that conversation only; the TSDB implements it in `tsdb/`, and tests
//! may implement it in memory.

use crate::{
    AppendMode, AppendReport, EncodedBatch, Exemplar, ExemplarSeries, HistogramSample, Labels,
    Matcher, Metadata, Sample, SeriesBatch, SeriesSamples, StorageError, TsdbStatus,
};

/// A write transaction: nothing is visible or durable before [`Appender::commit`], which
/// returns only once everything is in the store's write-ahead log; dropping the appender or
/// calling [`Appender::rollback`] discards it.
pub trait Appender {
    /// Adds float and histogram samples of one series.
    fn append(&mut self, series: SeriesBatch);
    /// Adds a decoded request's series at once, label sets already encoded (no [`Labels`]
    /// built per series).
    fn append_batch(&mut self, batch: EncodedBatch);
    /// Adds exemplars of a series (Prometheus's `AppendExemplar`): stored with the commit if
    /// the series exists or this transaction adds it; refused ones are counted in the report
    /// and never fail the commit.
    fn append_exemplars(&mut self, labels: &Labels, exemplars: Vec<Exemplar>);
    /// Records a metric family's metadata (`TYPE`, `HELP`, `UNIT`), written with the commit.
    /// Metadata is advisory: failing to store it is logged and does not fail the commit of
    /// samples already written.
    fn set_metadata(&mut self, metric_family: &str, metadata: Metadata);
    /// Validates and writes everything added. [`AppendMode::AllOrNothing`] writes nothing
    /// (metadata included) when any sample is rejected; [`AppendMode::BestEffort`] writes the
    /// valid ones. Rejections are in the report; an error means no sample was written.
    fn commit(self: Box<Self>) -> Result<AppendReport, StorageError>;
    /// Discards everything added.
    fn rollback(self: Box<Self>);
}

/// Where appenders come from.
pub trait Appendable: Send + Sync {
    fn appender(&self, mode: AppendMode) -> Box<dyn Appender + '_>;
}

/// What a select is for, so a store can read less (Prometheus's `SelectHints`). Times are
/// milliseconds since the epoch, inclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelectHints {
    pub start: i64,
    pub end: i64,
    /// Step of the range query the select serves, 0 for an instant query.
    pub step: i64,
    /// Range of the enclosing range-vector selector (`[5m]`), 0 for an instant vector.
    pub range: i64,
    /// The function whose argument the selector is (`rate`), if any.
    pub func: Option<String>,
    /// Labels of the enclosing aggregation: kept (`by`) or dropped (`without`).
    pub grouping: Vec<String>,
    pub by: bool,
    /// Most samples the whole select may return; more fails with
    /// [`StorageError::SampleLimit`].
    pub limit: usize,
}

impl SelectHints {
    /// Hints that say only the time range and the sample limit.
    pub fn range(start: i64, end: i64, limit: usize) -> SelectHints {
        SelectHints {
            start,
            end,
            limit,
            ..SelectHints::default()
        }
    }
}

/// One stored point: a float or a native histogram sample.
#[derive(Clone, Debug, PartialEq)]
pub enum Point {
    Float(Sample),
    Histogram(HistogramSample),
}

/// Points of one series in time order, decoded as they are iterated.
pub type Points = Box<dyn Iterator<Item = Result<Point, StorageError>> + Send>;

/// One series of a select: its labels and its points in time order, decoded as they are
/// iterated, or already decoded by the store.
pub struct Series {
    pub labels: Labels,
    points: SeriesPoints,
}

enum SeriesPoints {
    Lazy(Points),
    Decoded {
        samples: Vec<Sample>,
        histograms: Vec<HistogramSample>,
    },
}

impl Series {
    pub fn new(labels: Labels, points: Points) -> Series {
        Series {
            labels,
            points: SeriesPoints::Lazy(points),
        }
    }

    /// A series whose points are already decoded (kept as they are: no copy).
    pub fn from_samples(s: SeriesSamples) -> Series {
        Series {
            labels: s.labels,
            points: SeriesPoints::Decoded {
                samples: s.samples,
                histograms: s.histograms,
            },
        }
    }

    /// The points, in time order.
    pub fn points(self) -> Points {
        match self.points {
            SeriesPoints::Lazy(p) => p,
            SeriesPoints::Decoded {
                samples,
                histograms,
            } => {
                let mut floats = samples.into_iter().peekable();
                let mut hists = histograms.into_iter().peekable();
                Box::new(std::iter::from_fn(move || {
                    let take_float = match (floats.peek(), hists.peek()) {
                        (Some(f), Some(h)) => f.t <= h.t,
                        (Some(_), None) => true,
                        (None, Some(_)) => false,
                        (None, None) => return None,
                    };
                    Some(Ok(if take_float {
                        Point::Float(floats.next()?)
                    } else {
                        Point::Histogram(hists.next()?)
                    }))
                }))
            }
        }
    }

    /// Every point decoded, floats and histograms apart.
    pub fn into_samples(self) -> Result<SeriesSamples, StorageError> {
        let labels = self.labels;
        match self.points {
            SeriesPoints::Decoded {
                samples,
                histograms,
            } => Ok(SeriesSamples {
                labels,
                samples,
                histograms,
            }),
            SeriesPoints::Lazy(points) => {
                let mut out = SeriesSamples {
                    labels,
                    samples: Vec::new(),
                    histograms: Vec::new(),
                };
                for p in points {
                    match p? {
                        Point::Float(s) => out.samples.push(s),
                        Point::Histogram(h) => out.histograms.push(h),
                    }
                }
                Ok(out)
            }
        }
    }
}

/// The series of a select, sorted by labels.
pub type SeriesSet = Box<dyn Iterator<Item = Result<Series, StorageError>> + Send>;

/// A set of already decoded series as a [`SeriesSet`].
pub fn series_set(series: Vec<SeriesSamples>) -> SeriesSet {
    Box::new(series.into_iter().map(|s| Ok(Series::from_samples(s))))
}

/// What a query engine reads through.
pub trait Querier: Send + Sync {
    /// Series matching all `matchers` that have points in [hints.start, hints.end].
    fn select(&self, matchers: &[Matcher], hints: &SelectHints) -> Result<SeriesSet, StorageError>;

    /// [`Querier::select`] with every point decoded.
    fn select_decoded(
        &self,
        matchers: &[Matcher],
        hints: &SelectHints,
    ) -> Result<Vec<SeriesSamples>, StorageError> {
        self.select(matchers, hints)?
            .map(|s| s?.into_samples())
            .collect()
    }
}

/// What the series, label, metadata and status APIs read through. The series and label calls
/// take matcher sets that are OR-ed (all series when there are none) and a time range in ms;
/// answers are sorted.
pub trait LabelQuerier: Send + Sync {
    fn series(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, StorageError>;
    fn label_names(
        &self,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError>;
    fn label_values(
        &self,
        name: &str,
        matcher_sets: &[Vec<Matcher>],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, StorageError>;
    /// Every metric family's metadata, sorted by name.
    fn metadata(&self) -> Result<Vec<(String, Metadata)>, StorageError>;
    /// The figures of Prometheus's `/api/v1/status/tsdb`, with the top `top_n` of each list.
    fn status(&self, top_n: usize) -> TsdbStatus;
}

/// What the exemplar API reads through (Prometheus's `ExemplarQuerier`).
pub trait ExemplarQuerier: Send + Sync {
    /// The exemplars with times in [start, end] (ms, inclusive) of the series matching any of
    /// the matcher sets, sorted by series labels; nothing for no set.
    fn select_exemplars(
        &self,
        start: i64,
        end: i64,
        matcher_sets: &[Vec<Matcher>],
    ) -> Result<Vec<ExemplarSeries>, StorageError>;
}

/// An [`Appender`] over any store that writes whole batches: buffers until commit.
pub struct BatchAppender<'a, W: BatchWriter + ?Sized> {
    store: &'a W,
    mode: AppendMode,
    batch: EncodedBatch,
    metadata: Vec<(String, Metadata)>,
}

/// A store that writes a batch of series at once; gets [`Appendable`] through
/// [`BatchAppender`].
pub trait BatchWriter: Send + Sync {
    fn write_batch(
        &self,
        batch: &EncodedBatch,
        mode: AppendMode,
    ) -> Result<AppendReport, StorageError>;
    fn write_metadata(&self, metric_family: &str, metadata: Metadata) -> Result<(), StorageError>;
}

impl<'a, W: BatchWriter + ?Sized> BatchAppender<'a, W> {
    pub fn new(store: &'a W, mode: AppendMode) -> BatchAppender<'a, W> {
        BatchAppender {
            store,
            mode,
            batch: EncodedBatch::new(),
            metadata: Vec::new(),
        }
    }
}

impl<W: BatchWriter + ?Sized> Appender for BatchAppender<'_, W> {
    fn append(&mut self, series: SeriesBatch) {
        self.batch.push(series);
    }

    fn append_batch(&mut self, batch: EncodedBatch) {
        if self.batch.is_empty() {
            self.batch = batch;
        } else {
            self.batch.append(batch);
        }
    }

    fn append_exemplars(&mut self, labels: &Labels, exemplars: Vec<Exemplar>) {
        self.batch.push_owned(labels, &[], []);
        self.batch.add_exemplars(exemplars);
    }

    fn set_metadata(&mut self, metric_family: &str, metadata: Metadata) {
        self.metadata.push((metric_family.to_owned(), metadata));
    }

    fn commit(self: Box<Self>) -> Result<AppendReport, StorageError> {
        let report = self.store.write_batch(&self.batch, self.mode)?;
        if self.mode == AppendMode::AllOrNothing && !report.rejected.is_empty() {
            return Ok(report);
        }
        for (family, md) in self.metadata {
            if let Err(err) = self.store.write_metadata(&family, md) {
                tracing::warn!(family, %err, "storing metric metadata failed");
            }
        }
        Ok(report)
    }

    fn rollback(self: Box<Self>) {}
}

impl<W: BatchWriter> Appendable for W {
    fn appender(&self, mode: AppendMode) -> Box<dyn Appender + '_> {
        Box::new(BatchAppender::new(self, mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HistogramSample;

    #[test]
    fn a_series_iterates_floats_and_histograms_in_time_order_and_splits_back() {
        let s = SeriesSamples {
            labels: Labels::from_pairs([("__name__", "x")]),
            samples: vec![Sample { t: 1, v: 1.0 }, Sample { t: 3, v: 3.0 }],
            histograms: vec![HistogramSample {
                t: 2,
                h: Default::default(),
            }],
        };
        let ts: Vec<i64> = Series::from_samples(s.clone())
            .points()
            .map(|p| match p.unwrap() {
                Point::Float(s) => s.t,
                Point::Histogram(h) => h.t,
            })
            .collect();
        assert_eq!(ts, [1, 2, 3]);
        assert_eq!(Series::from_samples(s.clone()).into_samples().unwrap(), s);
        let lazy = Series::new(s.labels.clone(), Series::from_samples(s.clone()).points());
        assert_eq!(lazy.into_samples().unwrap(), s);
    }
}
