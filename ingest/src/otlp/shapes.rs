//! What each OTLP request message decodes to, for the walk that bounds a protobuf body
//! before prost decodes it ([`crate::wire`]). Field numbers are those of
//! opentelemetry-proto's `.proto` files.

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::logs::v1 as logs;
use opentelemetry_proto::tonic::metrics::v1 as metrics;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as trace;

use crate::wire::{Field, Shape};

/// The name spans are counted under, for the spans-per-request limit.
pub(crate) const SPAN: &str = "Span";

const fn leaf(name: &'static str, size: usize) -> Shape {
    Shape {
        name,
        size,
        fields: &[],
    }
}

static ANY_VALUE: Shape = Shape {
    name: "AnyValue",
    size: size_of::<common::AnyValue>(),
    fields: &[
        (5, Field::Message(&ARRAY_VALUE)),
        (6, Field::Message(&KEY_VALUE_LIST)),
    ],
};
static ARRAY_VALUE: Shape = Shape {
    name: "ArrayValue",
    size: size_of::<common::ArrayValue>(),
    fields: &[(1, Field::Message(&ANY_VALUE))],
};
static KEY_VALUE_LIST: Shape = Shape {
    name: "KeyValueList",
    size: size_of::<common::KeyValueList>(),
    fields: &[(1, Field::Message(&KEY_VALUE))],
};
static KEY_VALUE: Shape = Shape {
    name: "KeyValue",
    size: size_of::<common::KeyValue>(),
    fields: &[(2, Field::Message(&ANY_VALUE))],
};
static ENTITY_REF: Shape = Shape {
    name: "EntityRef",
    size: size_of::<common::EntityRef>(),
    fields: &[(3, Field::Strings), (4, Field::Strings)],
};
static RESOURCE: Shape = Shape {
    name: "Resource",
    size: size_of::<Resource>(),
    fields: &[
        (1, Field::Message(&KEY_VALUE)),
        (3, Field::Message(&ENTITY_REF)),
    ],
};
static SCOPE: Shape = Shape {
    name: "InstrumentationScope",
    size: size_of::<common::InstrumentationScope>(),
    fields: &[(3, Field::Message(&KEY_VALUE))],
};

static EVENT: Shape = Shape {
    name: "Event",
    size: size_of::<trace::span::Event>(),
    fields: &[(3, Field::Message(&KEY_VALUE))],
};
static LINK: Shape = Shape {
    name: "Link",
    size: size_of::<trace::span::Link>(),
    fields: &[(4, Field::Message(&KEY_VALUE))],
};
static STATUS: Shape = leaf("Status", size_of::<trace::Status>());
static SPAN_SHAPE: Shape = Shape {
    name: SPAN,
    size: size_of::<trace::Span>(),
    fields: &[
        (9, Field::Message(&KEY_VALUE)),
        (11, Field::Message(&EVENT)),
        (13, Field::Message(&LINK)),
        (15, Field::Message(&STATUS)),
    ],
};
static SCOPE_SPANS: Shape = Shape {
    name: "ScopeSpans",
    size: size_of::<trace::ScopeSpans>(),
    fields: &[
        (1, Field::Message(&SCOPE)),
        (2, Field::Message(&SPAN_SHAPE)),
    ],
};
static RESOURCE_SPANS: Shape = Shape {
    name: "ResourceSpans",
    size: size_of::<trace::ResourceSpans>(),
    fields: &[
        (1, Field::Message(&RESOURCE)),
        (2, Field::Message(&SCOPE_SPANS)),
    ],
};
pub(crate) static TRACES: Shape = Shape {
    name: "ExportTraceServiceRequest",
    size: size_of::<ExportTraceServiceRequest>(),
    fields: &[(1, Field::Message(&RESOURCE_SPANS))],
};

static EXEMPLAR: Shape = Shape {
    name: "Exemplar",
    size: size_of::<metrics::Exemplar>(),
    fields: &[(7, Field::Message(&KEY_VALUE))],
};
static NUMBER_POINT: Shape = Shape {
    name: "NumberDataPoint",
    size: size_of::<metrics::NumberDataPoint>(),
    fields: &[
        (7, Field::Message(&KEY_VALUE)),
        (5, Field::Message(&EXEMPLAR)),
    ],
};
static HISTOGRAM_POINT: Shape = Shape {
    name: "HistogramDataPoint",
    size: size_of::<metrics::HistogramDataPoint>(),
    fields: &[
        (9, Field::Message(&KEY_VALUE)),
        (8, Field::Message(&EXEMPLAR)),
    ],
};
static BUCKETS: Shape = Shape {
    name: "Buckets",
    size: size_of::<metrics::exponential_histogram_data_point::Buckets>(),
    fields: &[(2, Field::Varints(size_of::<u64>()))],
};
static EXP_HISTOGRAM_POINT: Shape = Shape {
    name: "ExponentialHistogramDataPoint",
    size: size_of::<metrics::ExponentialHistogramDataPoint>(),
    fields: &[
        (1, Field::Message(&KEY_VALUE)),
        (8, Field::Message(&BUCKETS)),
        (9, Field::Message(&BUCKETS)),
        (11, Field::Message(&EXEMPLAR)),
    ],
};
static QUANTILE: Shape = leaf(
    "ValueAtQuantile",
    size_of::<metrics::summary_data_point::ValueAtQuantile>(),
);
static SUMMARY_POINT: Shape = Shape {
    name: "SummaryDataPoint",
    size: size_of::<metrics::SummaryDataPoint>(),
    fields: &[
        (7, Field::Message(&KEY_VALUE)),
        (6, Field::Message(&QUANTILE)),
    ],
};
static GAUGE: Shape = Shape {
    name: "Gauge",
    size: size_of::<metrics::Gauge>(),
    fields: &[(1, Field::Message(&NUMBER_POINT))],
};
static SUM: Shape = Shape {
    name: "Sum",
    size: size_of::<metrics::Sum>(),
    fields: &[(1, Field::Message(&NUMBER_POINT))],
};
static HISTOGRAM: Shape = Shape {
    name: "Histogram",
    size: size_of::<metrics::Histogram>(),
    fields: &[(1, Field::Message(&HISTOGRAM_POINT))],
};
static EXP_HISTOGRAM: Shape = Shape {
    name: "ExponentialHistogram",
    size: size_of::<metrics::ExponentialHistogram>(),
    fields: &[(1, Field::Message(&EXP_HISTOGRAM_POINT))],
};
static SUMMARY: Shape = Shape {
    name: "Summary",
    size: size_of::<metrics::Summary>(),
    fields: &[(1, Field::Message(&SUMMARY_POINT))],
};
static METRIC: Shape = Shape {
    name: "Metric",
    size: size_of::<metrics::Metric>(),
    fields: &[
        (5, Field::Message(&GAUGE)),
        (7, Field::Message(&SUM)),
        (9, Field::Message(&HISTOGRAM)),
        (10, Field::Message(&EXP_HISTOGRAM)),
        (11, Field::Message(&SUMMARY)),
        (12, Field::Message(&KEY_VALUE)),
    ],
};
static SCOPE_METRICS: Shape = Shape {
    name: "ScopeMetrics",
    size: size_of::<metrics::ScopeMetrics>(),
    fields: &[(1, Field::Message(&SCOPE)), (2, Field::Message(&METRIC))],
};
static RESOURCE_METRICS: Shape = Shape {
    name: "ResourceMetrics",
    size: size_of::<metrics::ResourceMetrics>(),
    fields: &[
        (1, Field::Message(&RESOURCE)),
        (2, Field::Message(&SCOPE_METRICS)),
    ],
};
pub(crate) static METRICS: Shape = Shape {
    name: "ExportMetricsServiceRequest",
    size: size_of::<ExportMetricsServiceRequest>(),
    fields: &[(1, Field::Message(&RESOURCE_METRICS))],
};

static LOG_RECORD: Shape = Shape {
    name: "LogRecord",
    size: size_of::<logs::LogRecord>(),
    fields: &[
        (5, Field::Message(&ANY_VALUE)),
        (6, Field::Message(&KEY_VALUE)),
    ],
};
static SCOPE_LOGS: Shape = Shape {
    name: "ScopeLogs",
    size: size_of::<logs::ScopeLogs>(),
    fields: &[
        (1, Field::Message(&SCOPE)),
        (2, Field::Message(&LOG_RECORD)),
    ],
};
static RESOURCE_LOGS: Shape = Shape {
    name: "ResourceLogs",
    size: size_of::<logs::ResourceLogs>(),
    fields: &[
        (1, Field::Message(&RESOURCE)),
        (2, Field::Message(&SCOPE_LOGS)),
    ],
};
pub(crate) static LOGS: Shape = Shape {
    name: "ExportLogsServiceRequest",
    size: size_of::<ExportLogsServiceRequest>(),
    fields: &[(1, Field::Message(&RESOURCE_LOGS))],
};
