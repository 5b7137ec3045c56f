//! OTLP/HTTP: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`. The response uses the request's
//! content type, as the spec requires: the export response on success, a `google.rpc.Status`
//! on failure.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::body::{self, Format};
use super::error::OtlpError;
use super::{export, shapes, OtlpState};
use crate::wire::Shape;

/// google.rpc.Status, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

pub fn http_routes(state: OtlpState) -> Router {
    let state = state.on(crate::metrics::Protocol::OtlpHttp);
    // The compressed body may be at most the decompressed limit (gzip never shrinks noise).
    let limit = state.max_bytes;
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn traces(State(s): State<OtlpState>, headers: HeaderMap, body: Bytes) -> Response {
    handle::<ExportTraceServiceRequest, _>(s, headers, body, &shapes::TRACES, export::traces).await
}

async fn metrics(State(s): State<OtlpState>, headers: HeaderMap, body: Bytes) -> Response {
    handle::<ExportMetricsServiceRequest, _>(s, headers, body, &shapes::METRICS, export::metrics)
        .await
}

async fn logs(State(s): State<OtlpState>, headers: HeaderMap, body: Bytes) -> Response {
    handle::<ExportLogsServiceRequest, _>(s, headers, body, &shapes::LOGS, export::logs).await
}

async fn handle<Req, Resp>(
    state: OtlpState,
    headers: HeaderMap,
    body: Bytes,
    shape: &'static Shape,
    f: fn(&OtlpState, &Req) -> Result<Resp, OtlpError>,
) -> Response
where
    Req: Message + Default + DeserializeOwned + Send + 'static,
    Resp: Message + Serialize + Send + 'static,
{
    // An unknown content type is answered in protobuf, the OTLP default.
    let format = body::format(&headers).unwrap_or(Format::Protobuf);
    let outcome = match body::format(&headers) {
        Err(e) => Err(e),
        Ok(format) => tokio::task::spawn_blocking(move || {
            let bytes = body::decompress(&headers, &body, state.max_bytes)?;
            match format {
                Format::Protobuf => state.check_protobuf(&bytes, shape)?,
                Format::Json => state.check_json(&bytes, shape)?,
            }
            let req: Req = body::decode(format, &bytes)?;
            f(&state, &req)
        })
        .await
        .unwrap_or_else(|e| Err(OtlpError::Internal(e.to_string()))),
    };
    match outcome {
        Ok(resp) => encode(format, StatusCode::OK, &resp),
        Err(e) => {
            tracing::debug!(error = %e, "OTLP/HTTP export failed");
            encode(
                format,
                e.http_status(),
                &RpcStatus {
                    code: e.rpc_code(),
                    message: e.to_string(),
                },
            )
        }
    }
}

fn encode<M: Message + Serialize>(format: Format, status: StatusCode, msg: &M) -> Response {
    let body = match format {
        Format::Protobuf => msg.encode_to_vec(),
        Format::Json => {
            // Unset message fields serialize as null; OTLP/JSON leaves them out.
            let mut v = serde_json::to_value(msg).unwrap_or_default();
            if let serde_json::Value::Object(m) = &mut v {
                m.retain(|_, v| !v.is_null());
                // The rejected counts are int64: proto3 JSON writes those as strings.
                if let Some(serde_json::Value::Object(p)) = m.get_mut("partialSuccess") {
                    for n in p.values_mut().filter(|n| n.is_number()) {
                        *n = serde_json::Value::String(n.to_string());
                    }
                }
            }
            v.to_string().into_bytes()
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
