//! The HTTP client receivers and the sender post JSON with: ureq on rustls with the
//! platform's trust roots (so https receivers such as Slack and PagerDuty work), each request
//! on tokio's blocking pool within its deadline. Owns only the transport; what a status means
//! is each caller's.

use std::time::Duration;

use serde_json::Value;
use ureq::tls::{RootCerts, TlsConfig};

/// Most bytes of a response body kept for an error message.
const MAX_ERROR_BODY: u64 = 4096;

/// A connection-pooling client. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HttpClient(ureq::Agent);

/// What came back: the status and the start of the body.
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
}

impl HttpClient {
    pub(crate) fn new() -> HttpClient {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::PlatformVerifier)
                    .build(),
            )
            .build();
        HttpClient(config.into())
    }

    /// POSTs `body` as JSON; fails when no response arrives within `timeout`.
    pub(crate) async fn post_json(
        &self,
        url: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let agent = self.0.clone();
        let url = url.to_owned();
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let timeout = timeout.max(Duration::from_millis(1));
        tokio::task::spawn_blocking(move || {
            let mut resp = agent
                .post(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("content-type", "application/json")
                .send(&body[..])
                .map_err(|e| e.to_string())?;
            let body = resp
                .body_mut()
                .with_config()
                .limit(MAX_ERROR_BODY)
                .read_to_string()
                .unwrap_or_default();
            Ok(Reply {
                status: resp.status().as_u16(),
                body,
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
