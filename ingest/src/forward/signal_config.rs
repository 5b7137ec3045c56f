//! `forward:` (novamon's): where logs and traces are forwarded. Two lists, `logs` and
//! `traces`, of destinations a Loki or Tempo user reads as a Promtail `clients:` entry or an
//! OpenTelemetry Collector exporter: a `name`, a `protocol`, a `url`, the HTTP client
//! settings `remote_write` has (headers, auth, TLS, `remote_timeout`), a selector of what goes
//! there (logs: a LogQL stream selector; traces: service names as anchored regexes), queue
//! settings and `max_disk_usage`. Owns the shapes and their load-time checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use promql_parser::label::Matcher;
use promql_parser::parser::Expr;
use serde::{Deserialize, Deserializer};
use storage::Labels;

use super::config::{Endpoint, HttpClient};
use super::grpc;
use crate::scrape::config::{duration, Authorization, BasicAuth, TlsConfig};

/// The `forward:` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    #[serde(default)]
    pub logs: Vec<SignalDestinationConfig>,
    #[serde(default)]
    pub traces: Vec<SignalDestinationConfig>,
}

/// What a destination receives, and so which store's outbox feeds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Logs,
    Traces,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Loki's push API: snappy `logproto.PushRequest` with structured metadata.
    Loki,
    /// OTLP/HTTP protobuf (`/v1/logs`, `/v1/traces`).
    OtlpHttp,
    /// OTLP over gRPC (`LogsService/Export`, `TraceService/Export`); the URL names the host
    /// and port only (`http://collector:4317`).
    OtlpGrpc,
}

/// One destination of `forward.logs` or `forward.traces`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalDestinationConfig {
    /// Required: it names the queue's metrics and keeps its place in the outbox.
    pub name: String,
    pub protocol: Protocol,
    /// The full URL requests go to (`http://loki:3100/loki/api/v1/push`,
    /// `http://collector:4318/v1/traces`); for gRPC the server's (`https://collector:4317`).
    pub url: String,
    /// Logs: a LogQL stream selector (`{namespace="prod", app=~"api|web"}`); every stream
    /// when absent.
    #[serde(default)]
    pub selector: Option<String>,
    /// Traces: service names (`service.name`), each an anchored regular expression; every
    /// service when empty.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub remote_timeout: Duration,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub authorization: Option<Authorization>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_config: TlsConfig,
    #[serde(default)]
    pub queue_config: SignalQueueConfig,
    /// Most bytes of not yet forwarded data kept on disk for this destination; beyond it the
    /// oldest are dropped (and counted).
    #[serde(default = "default_max_disk", deserialize_with = "bytes")]
    pub max_disk_usage: u64,
}

/// Batching and retries; one sender per destination keeps every stream's order.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalQueueConfig {
    /// Most lines or spans in one request.
    pub max_items_per_send: usize,
    /// How long a request waits to fill up while the outbox has nothing more.
    #[serde(deserialize_with = "duration")]
    pub batch_send_deadline: Duration,
    #[serde(deserialize_with = "duration")]
    pub min_backoff: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// Loki answers 429 when a tenant is over its rate: retried by default, as Promtail does.
    pub retry_on_http_429: bool,
}

impl Default for SignalQueueConfig {
    fn default() -> SignalQueueConfig {
        // Promtail's batchsize is 1 MiB of lines, its backoff 500ms to 5m; the Collector's
        // exporters retry from 5s to 30s. A short maximum drains sooner after an outage.
        SignalQueueConfig {
            max_items_per_send: 2000,
            batch_send_deadline: Duration::from_secs(1),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            retry_on_http_429: true,
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_disk() -> u64 {
    1 << 30
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    crate::scrape::config::opt_bytes(d).map(Option::unwrap_or_default)
}

/// Which records a destination takes.
pub(crate) enum Selector {
    All,
    /// Streams whose labels match every matcher (a missing label reads as "").
    Streams(Vec<Matcher>),
    /// Resources whose `service.name` matches one of these.
    Services(Vec<regex::Regex>),
}

impl Selector {
    pub(crate) fn stream(&self, labels: &Labels) -> bool {
        match self {
            Selector::Streams(ms) => ms
                .iter()
                .all(|m| m.is_match(labels.get(&m.name).unwrap_or(""))),
            _ => true,
        }
    }

    pub(crate) fn service(&self, name: &str) -> bool {
        match self {
            Selector::Services(rs) => rs.iter().any(|r| r.is_match(name)),
            _ => true,
        }
    }
}

/// A destination, checked and compiled.
pub struct SignalDestination {
    pub(crate) raw: SignalDestinationConfig,
    pub(crate) signal: Signal,
    pub(crate) endpoint: Endpoint,
    /// `otlp_grpc`'s channel settings; HTTP otherwise.
    pub(crate) grpc: Option<grpc::Target>,
    pub(crate) selector: Selector,
}

impl SignalDestination {
    /// Where its offset is kept in its store's outbox.
    pub(crate) fn key(&self) -> String {
        format!("name:{}", self.raw.name)
    }
}

/// The checked `forward:` section, ready to apply.
pub struct PreparedSignals {
    pub(crate) destinations: Vec<Arc<SignalDestination>>,
}

impl PreparedSignals {
    pub fn new(c: &ForwardConfig) -> Result<PreparedSignals, String> {
        let mut destinations: Vec<Arc<SignalDestination>> = Vec::new();
        for (signal, list) in [(Signal::Logs, &c.logs), (Signal::Traces, &c.traces)] {
            for d in list {
                let what = format!("forward.{}: {:?}", signal.as_str(), d.name);
                let d = d.compile(signal).map_err(|e| format!("{what}: {e}"))?;
                if destinations
                    .iter()
                    .any(|o| o.signal == signal && o.raw.name == d.raw.name)
                {
                    return Err(format!("{what}: two destinations have this name"));
                }
                destinations.push(Arc::new(d));
            }
        }
        Ok(PreparedSignals { destinations })
    }
}

impl SignalDestinationConfig {
    fn compile(&self, signal: Signal) -> Result<SignalDestination, String> {
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        if (signal, self.protocol) == (Signal::Traces, Protocol::Loki) {
            return Err("traces go out by protocol otlp_http or otlp_grpc".into());
        }
        let selector = match signal {
            Signal::Logs if !self.services.is_empty() => {
                return Err("services selects traces; logs take a selector".into())
            }
            Signal::Traces if self.selector.is_some() => {
                return Err("selector selects log streams; traces take services".into())
            }
            Signal::Logs => match &self.selector {
                None => Selector::All,
                Some(s) => Selector::Streams(stream_selector(s)?),
            },
            Signal::Traces if self.services.is_empty() => Selector::All,
            Signal::Traces => Selector::Services(
                self.services
                    .iter()
                    .map(|s| {
                        regex::Regex::new(&format!("^(?:{s})$"))
                            .map_err(|e| format!("services: {s:?}: {e}"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let q = &self.queue_config;
        if q.max_items_per_send == 0 {
            return Err("queue_config: max_items_per_send must be positive".into());
        }
        if q.min_backoff > q.max_backoff {
            return Err("queue_config: min_backoff must not exceed max_backoff".into());
        }
        let endpoint = Endpoint::compile(&HttpClient {
            url: &self.url,
            remote_timeout: self.remote_timeout,
            headers: &self.headers,
            basic_auth: self.basic_auth.as_ref(),
            authorization: self.authorization.as_ref(),
            bearer_token: &self.bearer_token,
            bearer_token_file: &self.bearer_token_file,
            tls_config: &self.tls_config,
        })?;
        let grpc = match self.protocol {
            Protocol::OtlpGrpc => Some(grpc::Target::new(&endpoint)?),
            Protocol::Loki | Protocol::OtlpHttp => None,
        };
        Ok(SignalDestination {
            raw: self.clone(),
            signal,
            endpoint,
            grpc,
            selector,
        })
    }
}

/// A LogQL stream selector's matchers (`{a="b", c=~"d|e"}`: the same syntax as a PromQL
/// vector selector without a metric name).
fn stream_selector(s: &str) -> Result<Vec<Matcher>, String> {
    let bad = |why: String| format!("selector {s:?}: {why}");
    match promql_parser::parser::parse(s).map_err(bad)? {
        // The parser has refused a selector every stream matches (Loki's rule too).
        Expr::VectorSelector(v) if v.name.is_none() && v.matchers.or_matchers.is_empty() => {
            Ok(v.matchers.matchers)
        }
        _ => Err(bad("not a stream selector ({label=\"value\", ...})".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yml: &str) -> Result<PreparedSignals, String> {
        let c: ForwardConfig = serde_yaml::from_str(yml).map_err(|e| e.to_string())?;
        PreparedSignals::new(&c)
    }

    #[test]
    fn destinations_compile_with_defaults_and_selectors() {
        let p = parse(
            "logs:\n  - {name: central, protocol: loki, url: 'http://loki:3100/loki/api/v1/push', selector: '{namespace=\"prod\", app=~\"api|web\"}'}\n  - {name: all, protocol: otlp_http, url: 'https://c/v1/logs', max_disk_usage: 64MB}\ntraces:\n  - {name: tempo, protocol: otlp_http, url: 'http://tempo:4318/v1/traces', services: [checkout, 'cart-.*']}\n",
        )
        .unwrap();
        let [central, all, tempo] = &p.destinations[..] else {
            panic!("three destinations");
        };
        assert_eq!(central.endpoint.address, "loki:3100");
        assert_eq!(central.endpoint.path_and_query, "/loki/api/v1/push");
        assert_eq!(central.raw.queue_config, SignalQueueConfig::default());
        assert_eq!(central.raw.max_disk_usage, 1 << 30);
        let prod = Labels::from_pairs([("namespace", "prod"), ("app", "web")]);
        let dev = Labels::from_pairs([("namespace", "dev"), ("app", "web")]);
        assert!(central.selector.stream(&prod) && !central.selector.stream(&dev));
        assert!(all.selector.stream(&dev) && all.endpoint.tls.is_some());
        assert_eq!(all.raw.max_disk_usage, 64 << 20);
        assert_eq!(
            (tempo.signal, tempo.raw.protocol),
            (Signal::Traces, Protocol::OtlpHttp)
        );
        assert!(tempo.selector.service("checkout") && tempo.selector.service("cart-eu"));
        // Anchored: a name containing a selected one is not selected.
        assert!(!tempo.selector.service("checkout-v2") && !tempo.selector.service("xcart-eu"));
    }

    #[test]
    fn load_time_checks() {
        for (yml, msg) in [
            ("logs: [{name: a, protocol: loki, url: 'http://x/', frobnicate: 1}]", "unknown field"),
            ("logs: [{name: a, protocol: carrier_pigeon, url: 'http://x/'}]", "unknown variant"),
            ("traces: [{name: a, protocol: loki, url: 'http://x/'}]", "traces go out by protocol otlp_http or otlp_grpc"),
            ("traces: [{name: a, protocol: otlp_grpc, url: 'http://x:4317/v1/traces'}]", "not the path \"/v1/traces\""),
            ("logs: [{name: a, protocol: loki, url: 'http://x/', selector: 'up'}]", "not a stream selector"),
            ("logs: [{name: a, protocol: loki, url: 'http://x/', selector: '{a=~\".*\"}'}]", "at least one non-empty matcher"),
            ("logs: [{name: a, protocol: loki, url: 'http://x/', services: [s]}]", "logs take a selector"),
            ("traces: [{name: a, protocol: otlp_http, url: 'http://x/', services: ['(']}]", "services"),
            ("logs: [{name: a, protocol: loki, url: 'ftp://x/'}]", "unsupported scheme"),
            ("logs: [{name: a, protocol: loki, url: 'http://x/', headers: {Content-Type: x}}]", "reserved header"),
            ("logs: [{name: a, protocol: loki, url: 'http://x/', queue_config: {max_items_per_send: 0}}]", "max_items_per_send"),
            ("logs: [{name: a, protocol: loki, url: 'http://x/'}, {name: a, protocol: loki, url: 'http://y/'}]", "two destinations"),
            ("metrics: []", "unknown field"),
        ] {
            let err = parse(yml).err().unwrap_or_default();
            assert!(err.contains(msg), "{yml}: {err}");
        }
        let p = parse("logs: [{name: a, protocol: otlp_grpc, url: 'http://x:4317', headers: {X-Scope-OrgID: t}}]\ntraces: [{name: a, protocol: otlp_grpc, url: 'https://x:4317/'}]").unwrap();
        assert!(p.destinations.iter().all(|d| d.grpc.is_some()));
        // One name may serve a log and a trace destination: their outboxes are apart.
        parse("logs: [{name: a, protocol: loki, url: 'http://x/'}]\ntraces: [{name: a, protocol: otlp_http, url: 'http://x/'}]").unwrap();
    }
}
