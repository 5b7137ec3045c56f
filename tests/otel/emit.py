"""Emits one known trace, a few metrics and a log line through the real OpenTelemetry Python SDK.

usage: emit.py grpc|http ENDPOINT SUFFIX
  ENDPOINT  http://127.0.0.1:PORT of the OTLP/gRPC or OTLP/HTTP listener
  SUFFIX    appended to the service names so each run is distinct

The trace: frontend-SUFFIX "GET /checkout" (server) -> backend-SUFFIX "SELECT orders"
(client, an event, status error) and frontend-SUFFIX "render" (internal). Metrics from
frontend-SUFFIX: counter "orders" (+3), histogram "checkout.latency" (ms: 5, 50, and 500
inside the root span, so it carries an exemplar of the trace),
up-down counter "queue.depth" (+4). One log line "payment failed for order 42" from
frontend-SUFFIX inside the "render" span. Prints {"trace_id": ..., "root_span_id": ...} as JSON.
"""
import json
import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

protocol, endpoint, suffix = sys.argv[1], sys.argv[2], sys.argv[3]

if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    span_exporter = lambda: OTLPSpanExporter(endpoint=endpoint, insecure=True)
    metric_exporter = lambda: OTLPMetricExporter(endpoint=endpoint, insecure=True)
    log_exporter = lambda: OTLPLogExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    span_exporter = lambda: OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
    metric_exporter = lambda: OTLPMetricExporter(endpoint=endpoint + "/v1/metrics")
    log_exporter = lambda: OTLPLogExporter(endpoint=endpoint + "/v1/logs")


def provider(service):
    p = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
    p.add_span_processor(BatchSpanProcessor(span_exporter()))
    return p


frontend = provider("frontend-" + suffix)
logs = LoggerProvider(resource=Resource.create({"service.name": "frontend-" + suffix}))
logs.add_log_record_processor(BatchLogRecordProcessor(log_exporter()))
log = logging.getLogger("shop")
log.addHandler(LoggingHandler(logger_provider=logs))
log.setLevel(logging.INFO)
backend = provider("backend-" + suffix)
reader = PeriodicExportingMetricReader(metric_exporter(), export_interval_millis=3_600_000)
meters = MeterProvider(resource=Resource.create({"service.name": "frontend-" + suffix, "service.instance.id": "i-1",
                                                 "host.name": "test-host"}), metric_readers=[reader])
m = meters.get_meter("shop.frontend")
m.create_counter("orders", unit="{order}", description="orders placed").add(3, {"payment": "card"})
h = m.create_histogram("checkout.latency", unit="ms", description="checkout latency")
for v in (5, 50):
    h.record(v)

ft = frontend.get_tracer("shop.frontend", "1.2.3")
bt = backend.get_tracer("shop.backend")

with ft.start_as_current_span("GET /checkout", kind=SpanKind.SERVER,
                              attributes={"http.method": "GET", "http.status_code": 500}) as root:
    # Recorded in the sampled root span: the SDK's trace-based exemplar filter attaches the
    # trace and span ids to this measurement (Grafana's exemplar -> trace link).
    h.record(500)
    ctx = trace.set_span_in_context(root)
    with bt.start_as_current_span("SELECT orders", context=ctx, kind=SpanKind.CLIENT,
                                  attributes={"db.system": "postgresql", "db.rows": 7}) as db:
        db.add_event("cache miss", {"cache.key": "cart-42"})
        db.set_status(Status(StatusCode.ERROR, "deadlock detected"))
    with ft.start_as_current_span("render", kind=SpanKind.INTERNAL):
        log.error("payment failed for order %s", 42)
    ids = {"trace_id": format(root.get_span_context().trace_id, "032x"),
           "root_span_id": format(root.get_span_context().span_id, "016x")}

logs.force_flush()
logs.shutdown()
for p in (frontend, backend):
    p.force_flush()
    p.shutdown()

m.create_up_down_counter("queue.depth").add(4)
meters.force_flush()
meters.shutdown()

print(json.dumps(ids))
