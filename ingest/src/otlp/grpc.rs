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
