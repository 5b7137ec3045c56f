//! OTLP over gRPC, `forward:`'s `protocol: otlp_grpc`: the generated `TraceService` and
//! `LogsService` clients over one tonic channel per destination, dialled by the dial the HTTP
//! sender and scrapes use (TCP, then rustls from `tls_config`, here offering `h2`), with
//! `headers` and credentials as metadata. The answer is classified as the OTLP spec's "Failures" section says for gRPC:
//! CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried,
//! RESOURCE_EXHAUSTED only when the status carries a `RetryInfo` (whose `retry_delay` is
//! honoured), every other code refuses the batch; a request that failed before any answer
//! (no connection, a broken one) is retried; a `partial_success` names the items the
//! receiver dropped. Owns the transport only: the queue owns retries and counting.

use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::config::Endpoint;
use super::send::USER_AGENT;
use super::signal_queue::{logs_partial, traces_partial, Answer};
use crate::scrape::client::{self, Stream};

/// A batch as an OTLP export request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Export {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Export {
    /// Its size as sent, before gRPC's framing.
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Export::Traces(r) => r.encoded_len(),
            Export::Logs(r) => r.encoded_len(),
        }
    }
}

/// A destination's gRPC settings, checked when the config is loaded.
pub(crate) struct Target {
    endpoint: tonic::transport::Endpoint,
    address: String,
    /// The destination's TLS settings with `h2` offered, as gRPC requires.
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: String,
}

impl Target {
    /// Refuses a URL with a path: gRPC's path is the service's.
    pub(crate) fn new(e: &Endpoint) -> Result<Target, String> {
        if e.path_and_query != "/" {
            return Err(format!(
                "otlp_grpc: the url names host and port only, not the path {:?}",
                e.path_and_query
            ));
        }
        let scheme = if e.tls.is_some() { "https" } else { "http" };
        let origin: Uri = format!("{scheme}://{}", e.host)
            .parse()
            .map_err(|err| format!("invalid url: {err}"))?;
        // The channel's own URI is never dialled (the connector dials `address`), so it is
        // plain http whatever tonic's TLS features: the origin gives `:scheme` and
        // `:authority`.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", e.address))
            .map_err(|err| format!("invalid url: {err}"))?
            .origin(origin)
            .user_agent(USER_AGENT)
            .map_err(|err| err.to_string())?
            .connect_timeout(e.timeout);
        let tls = e.tls.as_ref().map(|c| {
            let mut c = (**c).clone();
            c.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(c)
        });
        let host = e.address.rsplit_once(':').map_or(&*e.address, |(h, _)| h);
        Ok(Target {
            endpoint,
            address: e.address.clone(),
            tls,
            server_name: e.server_name.clone().unwrap_or_else(|| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            }),
        })
    }

    /// A channel that connects when first used and again whenever its connection breaks.
    pub(crate) fn channel(&self) -> Channel {
        let address = self.address.clone();
        let tls = self.tls.clone();
        let server_name = self.server_name.clone();
        self.endpoint
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                dial(address.clone(), tls.clone(), server_name.clone())
            }))
    }
}

async fn dial(
    address: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: String,
) -> Result<TokioIo<Box<dyn Stream>>, String> {
    client::dial(&address, tls.as_ref(), Some(&server_name))
        .await
        .map(TokioIo::new)
}

/// Exports `export` over `channel` within the endpoint's timeout.
pub(crate) async fn export(channel: &Channel, endpoint: &Endpoint, export: &Export) -> Answer {
    let metadata = match metadata(endpoint) {
        Ok(m) => m,
        Err(why) => return Answer::Retry { after: None, why },
    };
    fn request<T>(message: T, metadata: MetadataMap, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        *req.metadata_mut() = metadata;
        // Sent as `grpc-timeout`, so the receiver gives up when this side does.
        req.set_timeout(timeout);
        req
    }
    let call = async {
        match export {
            Export::Traces(r) => TraceServiceClient::new(channel.clone())
                .export(request(r.clone(), metadata, endpoint.timeout))
                .await
                .map(|resp| traces_partial(resp.into_inner())),
            Export::Logs(r) => LogsServiceClient::new(channel.clone())
                .export(request(r.clone(), metadata, endpoint.timeout))
                .await
                .map(|resp| logs_partial(resp.into_inner())),
        }
    };
    match tokio::time::timeout(endpoint.timeout, call).await {
        Err(_) => Answer::Retry {
            after: None,
            why: "context deadline exceeded".into(),
        },
        Ok(Ok(partial)) => Answer::taken(partial),
        Ok(Err(status)) => classify(&status),
    }
}

/// `headers`, then the credentials, as request metadata.
fn metadata(endpoint: &Endpoint) -> Result<MetadataMap, String> {
    let mut headers = hyper::HeaderMap::new();
    for (k, v) in &endpoint.headers {
        headers.append(k, v.clone());
    }
    if let Some(auth) = endpoint.auth.header()? {
        let value = hyper::header::HeaderValue::try_from(auth)
            .map_err(|e| format!("authorization: {e}"))?;
        headers.insert(hyper::header::AUTHORIZATION, value);
    }
    Ok(MetadataMap::from_headers(headers))
}

/// A failed export's status, as the OTLP spec classifies it.
fn classify(status: &tonic::Status) -> Answer {
    use tonic::Code;
    // Go's wording, as an OpenTelemetry Collector logs it.
    let why = format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    );
    // A status with a source never came from the receiver: the request failed on the way
    // (no connection, a broken one), which tonic words as UNKNOWN or INTERNAL. Like a
    // transport error of the HTTP sender, it is retried.
    if std::error::Error::source(status).is_some() {
        return Answer::Retry { after: None, why };
    }
    let retry_info = retry_info(status.details());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Answer::Retry {
            after: retry_info.flatten(),
            why,
        },
        Code::ResourceExhausted if retry_info.is_some() => Answer::Retry {
            after: retry_info.flatten(),
            why,
        },
        _ => Answer::Refused { why },
    }
}

/// `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// Whether the status details carry a `RetryInfo`, and its delay when it gives a positive one.
fn retry_info(details: &[u8]) -> Option<Option<Duration>> {
    let status = RpcStatus::decode(details).ok()?;
    let any = status.details.iter().find(|a| a.type_url == RETRY_INFO)?;
    let info = RetryInfo::decode(any.value.as_slice()).ok()?;
    Some(info.retry_delay.and_then(|d| {
        let d = Duration::new(d.seconds.try_into().ok()?, d.nanos.try_into().ok()?);
        (!d.is_zero()).then_some(d)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_info(code: tonic::Code, delay: Option<(i64, i32)>) -> tonic::Status {
        let info = RetryInfo {
            retry_delay: delay.map(|(seconds, nanos)| ProtoDuration { seconds, nanos }),
        };
        let details = RpcStatus {
            details: vec![
                Any {
                    type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                    value: b"\x0a\x01x".to_vec(),
                },
                Any {
                    type_url: RETRY_INFO.into(),
                    value: info.encode_to_vec(),
                },
            ],
        };
        tonic::Status::with_details(code, "busy", details.encode_to_vec().into())
    }

    #[test]
    fn statuses_are_classified_as_the_otlp_spec_says() {
        use tonic::Code;
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert_eq!(
                classify(&tonic::Status::new(code, "x")),
                Answer::Retry {
                    after: None,
                    why: format!("rpc error: code = {code:?} desc = x")
                }
            );
        }
        for code in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
        ] {
            assert!(
                matches!(
                    classify(&tonic::Status::new(code, "x")),
                    Answer::Refused { .. }
                ),
                "{code:?}"
            );
        }
        // Failing on the way, whatever tonic calls it.
        let broken = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection closed");
        let status = tonic::Status::from_error(Box::new(broken));
        assert_eq!(status.code(), Code::Unknown);
        assert!(matches!(
            classify(&status),
            Answer::Retry { after: None, .. }
        ));
        // RESOURCE_EXHAUSTED is retried when the receiver says it will recover, after the
        // delay it asks for.
        assert!(matches!(
            classify(&with_retry_info(Code::ResourceExhausted, Some((2, 500_000_000)))),
            Answer::Retry { after: Some(d), .. } if d == Duration::from_millis(2500)
        ));
        assert!(matches!(
            classify(&with_retry_info(Code::ResourceExhausted, None)),
            Answer::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(&with_retry_info(Code::Unavailable, Some((7, 0)))),
            Answer::Retry { after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(&with_retry_info(Code::InvalidArgument, Some((7, 0)))),
            Answer::Refused { .. }
        ));
    }
}
