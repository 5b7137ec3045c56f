//! OTLP/gRPC: the collector's TraceService, MetricsService and LogsService, gzip accepted,
//! messages above the size limit refused by tonic before they are read whole. The request
//! is taken as bytes and decoded here, after the walk that bounds what it decodes to
//! ([`crate::wire`]): prost would otherwise build every empty item of a small message first.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::Status;

use super::error::OtlpError;
use super::{export, shapes, OtlpState};
use crate::wire::Shape;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// One OTLP service: its gRPC name, messages, wire shape and export.
trait Export: Send + Sync + 'static {
    const NAME: &'static str;
    type Req: Message + Default + Send + 'static;
    type Resp: Message + Default + Send + 'static;
    fn shape() -> &'static Shape;
    fn export(state: &OtlpState, req: &Self::Req) -> Result<Self::Resp, OtlpError>;
}

struct Traces;
struct Metrics;
struct Logs;

impl Export for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    type Req = ExportTraceServiceRequest;
    type Resp = ExportTraceServiceResponse;
    fn shape() -> &'static Shape {
        &shapes::TRACES
    }
    fn export(state: &OtlpState, req: &Self::Req) -> Result<Self::Resp, OtlpError> {
        export::traces(state, req)
    }
}

impl Export for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    type Req = ExportMetricsServiceRequest;
    type Resp = ExportMetricsServiceResponse;
    fn shape() -> &'static Shape {
        &shapes::METRICS
    }
    fn export(state: &OtlpState, req: &Self::Req) -> Result<Self::Resp, OtlpError> {
        export::metrics(state, req)
    }
}

impl Export for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    type Req = ExportLogsServiceRequest;
    type Resp = ExportLogsServiceResponse;
    fn shape() -> &'static Shape {
        &shapes::LOGS
    }
    fn export(state: &OtlpState, req: &Self::Req) -> Result<Self::Resp, OtlpError> {
        export::logs(state, req)
    }
}

/// Walks, decodes and exports one request. Blocking: runs on the blocking pool.
fn handle<E: Export>(state: &OtlpState, bytes: Bytes) -> Result<E::Resp, OtlpError> {
    state.check_protobuf(&bytes, E::shape())?;
    let req = E::Req::decode(bytes)
        .map_err(|e| OtlpError::BadRequest(format!("invalid protobuf: {e}")))?;
    E::export(state, &req)
}

/// The `Export` method of service `E`, its request left undecoded.
struct Method<E>(OtlpState, PhantomData<fn() -> E>);

impl<E: Export> UnaryService<Bytes> for Method<E> {
    type Response = E::Resp;
    type Future = BoxFuture<tonic::Response<E::Resp>, Status>;

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let bytes = req.into_inner();
            match tokio::task::spawn_blocking(move || handle::<E>(&state, bytes)).await {
                Ok(Ok(resp)) => Ok(tonic::Response::new(resp)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "OTLP/gRPC export failed");
                    Err(e.grpc_status())
                }
                Err(e) => Err(OtlpError::Internal(e.to_string()).grpc_status()),
            }
        })
    }
}

/// A gRPC codec that hands the request message over as its bytes and encodes the response
/// with prost.
struct RawRequest<R>(PhantomData<fn() -> R>);

impl<R: Message + Send + 'static> Codec for RawRequest<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ProstEncoder<R>;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> ProstEncoder<R> {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

struct ProstEncoder<R>(PhantomData<fn() -> R>);

impl<R: Message> Encoder for ProstEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Service `E` as a tower service for tonic's router.
struct Server<E>(OtlpState, PhantomData<fn() -> E>);

impl<E> Clone for Server<E> {
    fn clone(&self) -> Self {
        Server(self.0.clone(), PhantomData)
    }
}

impl<E: Export> NamedService for Server<E> {
    const NAME: &'static str = E::NAME;
}

impl<E: Export> tower::Service<axum::http::Request<tonic::body::Body>> for Server<E> {
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<tonic::body::Body>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            if req.uri().path().strip_prefix(&format!("/{}/", E::NAME)) != Some("Export") {
                return Ok(Status::unimplemented("").into_http());
            }
            let limit = state.max_bytes;
            let mut grpc = Grpc::new(RawRequest::<E::Resp>(PhantomData))
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit);
            Ok(grpc.unary(Method::<E>(state, PhantomData), req).await)
        })
    }
}

/// The three OTLP services, ready to be served.
pub fn grpc_routes(state: OtlpState) -> tonic::service::Routes {
    let state = state.on(crate::metrics::Protocol::OtlpGrpc);
    tonic::service::Routes::new(Server::<Traces>(state.clone(), PhantomData))
        .add_service(Server::<Metrics>(state.clone(), PhantomData))
        .add_service(Server::<Logs>(state, PhantomData))
}

/// The three services as one axum router, for a caller that runs its own listener (TLS,
/// authentication, limits).
pub fn grpc_router(state: OtlpState) -> axum::Router {
    grpc_routes(state).into_axum_router()
}

/// Serves OTLP/gRPC on `listener` until `shutdown` completes.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    state: OtlpState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_routes(grpc_routes(state))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use storage::traces::{TraceStore, TraceStoreOptions};
    use storage::{Tsdb, TsdbOptions};

    use super::*;

    fn span(id: Vec<u8>, name: &str) -> Span {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Span {
            trace_id: vec![7; 16],
            span_id: id,
            name: name.into(),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1,
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[tokio::test]
    async fn grpc_export_with_gzip_partial_success_and_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let traces = Arc::new(
            TraceStore::open(&dir.path().join("traces"), TraceStoreOptions::default()).unwrap(),
        );
        let tsdb = Arc::new(Tsdb::open(&dir.path().join("tsdb"), TsdbOptions::default()).unwrap());
        let mut registry = prometheus_client::registry::Registry::default();
        let counters =
            crate::IngestState::new(tsdb.clone(), Default::default(), &mut registry).counters();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_grpc(
            listener,
            OtlpState::new(traces.clone(), tsdb, 4096).with_counters(counters),
            async {
                let _ = stopped.await;
            },
        ));

        let mut client = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .send_compressed(CompressionEncoding::Gzip);
        let resp = client
            .export(request(vec![
                span(vec![1; 8], "ok"),
                span(vec![1; 3], "bad id"),
            ]))
            .await
            .unwrap()
            .into_inner();
        let partial = resp.partial_success.unwrap();
        assert_eq!(
            (partial.rejected_spans, partial.error_message.as_str()),
            (1, "span id must be 8 bytes")
        );
        assert_eq!(traces.trace(&[7; 16]).unwrap().len(), 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"novamon_ingested_total{signal="traces",protocol="otlp_grpc"} 1"#,
            r#"novamon_ingest_rejected_total{signal="traces",protocol="otlp_grpc"} 1"#,
            r#"novamon_ingested_total{signal="traces",protocol="otlp_http"} 0"#,
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }

        let big = request(
            (1..200u8)
                .map(|i| span(vec![i; 8], &"x".repeat(40)))
                .collect(),
        );
        let err = client.export(big).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    /// Empty ResourceSpans are 2 bytes on the wire and far more decoded: the message is
    /// walked before prost decodes it, and refused as the client's fault.
    #[tokio::test]
    async fn grpc_message_of_empty_items_is_invalid_argument_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let traces = Arc::new(
            TraceStore::open(&dir.path().join("traces"), TraceStoreOptions::default()).unwrap(),
        );
        let tsdb = Arc::new(Tsdb::open(&dir.path().join("tsdb"), TsdbOptions::default()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = OtlpState::new(traces, tsdb, 1 << 20)
            .with_max_expansion(1)
            .with_max_spans(1);
        let server = tokio::spawn(serve_grpc(listener, state, async {
            let _ = stopped.await;
        }));
        let mut client = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let empty = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans::default(); 20_000],
        };
        let err = client.export(empty).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains("would decode to more than"), "{err}");
        let two = request(vec![span(vec![1; 8], "a"), span(vec![2; 8], "b")]);
        let err = client.export(two).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert_eq!(
            err.message(),
            "request has 2 spans, more than the limit of 1"
        );
        let one = client.export(request(vec![span(vec![1; 8], "ok")])).await;
        assert!(one.is_ok(), "{one:?}");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
