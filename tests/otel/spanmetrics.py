"""Sends the traces of the span-metrics test through the real OpenTelemetry Python SDK, all in
one OTLP/HTTP export (so that every series they make starts in the same collection).

usage: spanmetrics.py ENDPOINT SUFFIX
  ENDPOINT  http://127.0.0.1:PORT of the OTLP/HTTP listener
  SUFFIX    appended to the service names

Four checkouts: frontend-SUFFIX "GET /checkout" (server, root, 400ms) calls backend-SUFFIX
with "POST /pay" (frontend client span, 300ms; backend server span, 250ms three times and 50ms
once with status error). One frontend-SUFFIX "GET /health" (server, root, 1ms).
"""
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

endpoint, suffix = sys.argv[1], sys.argv[2]
finished = InMemorySpanExporter()


def tracer(service):
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(SimpleSpanProcessor(finished))
    return p.get_tracer("spanmetrics-test")


front, back = tracer("frontend-" + suffix), tracer("backend-" + suffix)
MS = 1_000_000
t0 = time.time_ns() - 10_000 * MS

for i, (server_ms, failed) in enumerate([(250, False), (250, False), (250, False), (50, True)]):
    start = t0 + i * 1000 * MS
    root = front.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=start)
    call = front.start_span("POST /pay", context=trace.set_span_in_context(root),
                            kind=SpanKind.CLIENT, start_time=start + 50 * MS)
    served = back.start_span("POST /pay", context=trace.set_span_in_context(call),
                             kind=SpanKind.SERVER, start_time=start + 60 * MS)
    if failed:
        served.set_status(Status(StatusCode.ERROR, "card declined"))
    served.end(end_time=start + 60 * MS + server_ms * MS)
    call.end(end_time=start + 350 * MS)
    root.end(end_time=start + 400 * MS)
health = front.start_span("GET /health", kind=SpanKind.SERVER, start_time=t0)
health.end(end_time=t0 + MS)

spans = finished.get_finished_spans()
assert len(spans) == 13, len(spans)
result = OTLPSpanExporter(endpoint=endpoint + "/v1/traces").export(spans)
assert result == SpanExportResult.SUCCESS, result
print("sent", len(spans))
