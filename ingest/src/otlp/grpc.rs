//! OTLP/gRPC: the collector's TraceService, MetricsService and LogsService on tonic, gzip
//! accepted, messages above the size limit refused by tonic before decoding.

use std::future::Future;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::error::OtlpError;
use super::{export, OtlpState};

struct Grpc(OtlpState);

async fn run<Req: Send + 'static, Resp: Send + 'static>(
    state: &OtlpState,
    req: Request<Req>,
    f: fn(&OtlpState, &Req) -> Result<Resp, OtlpError>,
) -> Result<Response<Resp>, Status> {
    let state = state.clone();
    let msg = req.into_inner();
    match tokio::task::spawn_blocking(move || f(&state, &msg)).await {
        Ok(Ok(resp)) => Ok(Response::new(resp)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "OTLP/gRPC export failed");
            Err(e.grpc_status())
        }
        Err(e) => Err(OtlpError::Internal(e.to_string()).grpc_status()),
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        run(&self.0, req, export::traces).await
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        run(&self.0, req, export::metrics).await
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        run(&self.0, req, export::logs).await
    }
}

/// The three OTLP services, ready to be served.
pub fn grpc_routes(state: OtlpState) -> tonic::service::Routes {
    let state = state.on(crate::metrics::Protocol::OtlpGrpc);
    let limit = state.max_bytes;
    let traces = TraceServiceServer::new(Grpc(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let metrics = MetricsServiceServer::new(Grpc(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    let logs = LogsServiceServer::new(Grpc(state))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit);
    tonic::service::Routes::new(traces)
        .add_service(metrics)
        .add_service(logs)
}

/// tonic answers a request it cannot decode with INTERNAL (gRPC's general advice); OTLP
/// says a request that cannot be decoded is the client's fault, INVALID_ARGUMENT, so the
/// client does not retry it. tonic sends such errors trailers-only, in the headers.
fn undecodable_is_invalid_argument<B>(
    mut resp: axum::http::Response<B>,
) -> axum::http::Response<B> {
    let headers = resp.headers_mut();
    let undecodable = headers.get("grpc-status").is_some_and(|s| s == "13")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.starts_with("failed%20to%20decode%20Protobuf%20message"));
    if undecodable {
        headers.insert("grpc-status", axum::http::HeaderValue::from_static("3"));
    }
    resp
}

/// The three services as one axum router, with the same INVALID_ARGUMENT mapping as
/// [`serve_grpc`], for a caller that runs its own listener (TLS, authentication, limits).
pub fn grpc_router(state: OtlpState) -> axum::Router {
    grpc_routes(state)
        .into_axum_router()
        .layer(tower::util::MapResponseLayer::new(
            undecodable_is_invalid_argument::<axum::body::Body>,
        ))
}

/// Serves OTLP/gRPC on `listener` until `shutdown` completes.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    state: OtlpState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            undecodable_is_invalid_argument::<tonic::body::Body>,
        ))
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
}
