//! `remote_write` entries as Prometheus reads them from prometheus.yml (plus novamon's
//! `max_disk_usage`), their defaults (Prometheus 2.42's) and load-time checks, compiled into
//! what a queue runs on. Owns the shapes and checks only; the queue and the sender read them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use storage::relabel::{RelabelConfig, Rule};
use storage::Label;

use crate::scrape::client::{tls_client, Auth};
use crate::scrape::config::{duration, Authorization, BasicAuth, TlsConfig};

/// One `remote_write` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    pub url: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub remote_timeout: Duration,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub write_relabel_configs: Vec<RelabelConfig>,
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
    pub queue_config: QueueConfig,
    #[serde(default)]
    pub metadata_config: MetadataConfig,
    /// `prometheus.WriteRequest` (1.0) or `io.prometheus.write.v2.Request` (2.0).
    #[serde(default = "default_message")]
    pub protobuf_message: String,
    #[serde(default)]
    pub send_exemplars: bool,
    #[serde(default)]
    pub send_native_histograms: bool,
    /// novamon's: most bytes of not yet forwarded data kept on disk for this destination;
    /// beyond it the oldest are dropped (and counted).
    #[serde(default = "default_max_disk", deserialize_with = "bytes")]
    pub max_disk_usage: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Samples buffered per shard.
    pub capacity: usize,
    pub max_shards: usize,
    pub min_shards: usize,
    pub max_samples_per_send: usize,
    #[serde(deserialize_with = "duration")]
    pub batch_send_deadline: Duration,
    #[serde(deserialize_with = "duration")]
    pub min_backoff: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    pub retry_on_http_429: bool,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            capacity: 2500,
            max_shards: 200,
            min_shards: 1,
            max_samples_per_send: 500,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            retry_on_http_429: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    pub send: bool,
    #[serde(deserialize_with = "duration")]
    pub send_interval: Duration,
    pub max_samples_per_send: usize,
}

impl Default for MetadataConfig {
    fn default() -> MetadataConfig {
        MetadataConfig {
            send: true,
            send_interval: Duration::from_secs(60),
            max_samples_per_send: 500,
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_message() -> String {
    MESSAGE_V1.into()
}
fn default_max_disk() -> u64 {
    1 << 30
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    crate::scrape::config::opt_bytes(d).map(Option::unwrap_or_default)
}

pub(crate) const MESSAGE_V1: &str = "prometheus.WriteRequest";
pub(crate) const MESSAGE_V2: &str = "io.prometheus.write.v2.Request";

/// Headers a `headers:` entry may not set: the protocol's own (Prometheus's list).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "content-encoding",
    "content-type",
    "content-length",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "retry-after",
    "x-prometheus-remote-write-version",
];

/// A destination, checked and compiled: what one queue runs on.
pub struct Destination {
    pub(crate) raw: RemoteWriteConfig,
    /// The queue's `remote_name` label: `name`, else a hash of the entry (Prometheus's).
    pub(crate) name: String,
    /// Where its offset is kept in the outbox: the name, or the URL when unnamed, so that
    /// editing an unnamed entry's queue settings keeps its backlog.
    pub(crate) key: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) relabel: Vec<Rule>,
    pub(crate) external_labels: Vec<Label>,
    pub(crate) v2: bool,
}

/// Where and how requests go.
pub(crate) struct Endpoint {
    /// `host:port`, what is dialled.
    pub(crate) address: String,
    /// The `Host` header: the URL's authority as written.
    pub(crate) host: String,
    pub(crate) path_and_query: String,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) server_name: Option<String>,
    pub(crate) auth: Auth,
    pub(crate) headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    pub(crate) timeout: Duration,
}

/// The checked `remote_write` section, ready to apply: compiled destinations, unique by
/// name and by outbox key.
pub struct Prepared {
    pub(crate) destinations: Vec<Arc<Destination>>,
}

impl Prepared {
    /// Checks every entry as Prometheus does on load; `external_labels` are the global ones,
    /// added to every series sent that lacks them.
    pub fn new(
        configs: &[RemoteWriteConfig],
        external_labels: &BTreeMap<String, String>,
    ) -> Result<Prepared, String> {
        let external: Vec<Label> = external_labels
            .iter()
            .map(|(n, v)| Label::new(n.as_str(), v.as_str()))
            .collect();
        let mut destinations: Vec<Arc<Destination>> = Vec::new();
        for c in configs {
            let d = c.compile(&external)?;
            if destinations.iter().any(|o| o.name == d.name) {
                return Err(format!(
                    "found multiple remote write configs with job name {:?}",
                    d.name
                ));
            }
            if destinations.iter().any(|o| o.key == d.key) {
                return Err(format!(
                    "found multiple unnamed remote write configs with url {:?}: name them",
                    d.raw.url
                ));
            }
            destinations.push(Arc::new(d));
        }
        Ok(Prepared { destinations })
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }
}

/// The HTTP client settings every destination has (Prometheus's `HTTPClientConfig` part
/// that forwarding uses), borrowed from its entry.
pub(crate) struct HttpClient<'a> {
    pub(crate) url: &'a str,
    pub(crate) remote_timeout: Duration,
    pub(crate) headers: &'a BTreeMap<String, String>,
    pub(crate) basic_auth: Option<&'a BasicAuth>,
    pub(crate) authorization: Option<&'a Authorization>,
    pub(crate) bearer_token: &'a Option<String>,
    pub(crate) bearer_token_file: &'a Option<PathBuf>,
    pub(crate) tls_config: &'a TlsConfig,
}

/// An http(s) URL's parts, as a client dials and sends them.
pub(crate) struct UrlParts<'a> {
    pub(crate) scheme: &'a str,
    /// As written: what the `Host` header carries.
    pub(crate) authority: &'a str,
    /// `authority` with the scheme's port when it names none: what is dialled.
    pub(crate) address: String,
    pub(crate) path_and_query: String,
}

impl UrlParts<'_> {
    /// Splits `url`; refuses other schemes than http(s), no host, and credentials in the URL
    /// (they go in `basic_auth`).
    pub(crate) fn split(url: &str) -> Result<UrlParts<'_>, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("invalid url {url:?}"))?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("unsupported scheme {scheme:?} in {url:?}")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("invalid url {url:?}"));
        }
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => authority.contains(':'),
        };
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        };
        let path_and_query = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(UrlParts {
            scheme,
            authority,
            address,
            path_and_query,
        })
    }
}

impl Endpoint {
    /// Checks the settings as Prometheus does on load and compiles them.
    pub(crate) fn compile(c: &HttpClient<'_>) -> Result<Endpoint, String> {
        let UrlParts {
            scheme,
            authority,
            address,
            path_and_query,
        } = UrlParts::split(c.url)?;
        let auths = [
            c.basic_auth.is_some(),
            c.authorization.is_some(),
            c.bearer_token.is_some() || c.bearer_token_file.is_some(),
        ];
        if auths.iter().filter(|a| **a).count() > 1 {
            return Err(
                "at most one of basic_auth, authorization & bearer_token must be configured".into(),
            );
        }
        if let Some(a) = c.authorization {
            if a.kind.eq_ignore_ascii_case("basic") {
                return Err(
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                        .into(),
                );
            }
        }
        let mut headers = Vec::new();
        for (k, v) in c.headers {
            if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
                return Err(format!("{k} is a reserved header. It must not be changed"));
            }
            let name = hyper::header::HeaderName::try_from(k.as_str())
                .map_err(|e| format!("header {k:?}: {e}"))?;
            let value = hyper::header::HeaderValue::try_from(v.as_str())
                .map_err(|e| format!("header {k:?}: {e}"))?;
            headers.push((name, value));
        }
        if c.remote_timeout.is_zero() {
            return Err("remote_timeout must be positive".into());
        }
        let tls = if scheme == "https" {
            Some(Arc::new(tls_client(c.tls_config)?))
        } else {
            None
        };
        Ok(Endpoint {
            address,
            host: authority.to_owned(),
            path_and_query,
            tls,
            server_name: c.tls_config.server_name.clone(),
            auth: Auth::new(
                c.basic_auth,
                c.authorization,
                c.bearer_token,
                c.bearer_token_file,
            ),
            headers,
            timeout: c.remote_timeout,
        })
    }
}

impl RemoteWriteConfig {
    fn compile(&self, external_labels: &[Label]) -> Result<Destination, String> {
        let endpoint = Endpoint::compile(&HttpClient {
            url: &self.url,
            remote_timeout: self.remote_timeout,
            headers: &self.headers,
            basic_auth: self.basic_auth.as_ref(),
            authorization: self.authorization.as_ref(),
            bearer_token: &self.bearer_token,
            bearer_token_file: &self.bearer_token_file,
            tls_config: &self.tls_config,
        })
        .map_err(|e| e.replace("invalid url", "invalid remote_write url"))?;
        let v2 = match self.protobuf_message.as_str() {
            MESSAGE_V1 => false,
            MESSAGE_V2 => true,
            other => {
                return Err(format!(
                    "unknown remote write protobuf message {other}, supported: {MESSAGE_V1}, {MESSAGE_V2}"
                ))
            }
        };
        let q = &self.queue_config;
        if q.min_shards == 0 || q.max_shards < q.min_shards {
            return Err(format!(
                "queue_config: min_shards ({}) must be at least 1 and at most max_shards ({})",
                q.min_shards, q.max_shards
            ));
        }
        if q.max_samples_per_send == 0 || q.capacity == 0 {
            return Err("queue_config: capacity and max_samples_per_send must be positive".into());
        }
        if q.min_backoff > q.max_backoff {
            return Err("queue_config: min_backoff must not exceed max_backoff".into());
        }
        if self.metadata_config.send
            && (self.metadata_config.send_interval.is_zero()
                || self.metadata_config.max_samples_per_send == 0)
        {
            return Err(
                "metadata_config: send_interval and max_samples_per_send must be positive".into(),
            );
        }
        let relabel = self
            .write_relabel_configs
            .iter()
            .map(RelabelConfig::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let name = match &self.name {
            Some(n) if !n.is_empty() => n.clone(),
            // Prometheus names an unnamed queue by a hash of its config.
            _ => {
                let digest = Sha256::digest(format!("{self:?}").as_bytes());
                digest[..3].iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        let key = match &self.name {
            Some(n) if !n.is_empty() => format!("name:{n}"),
            _ => format!("url:{}", self.url),
        };
        Ok(Destination {
            raw: self.clone(),
            name,
            key,
            endpoint,
            relabel,
            external_labels: external_labels.to_vec(),
            v2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yml: &str) -> RemoteWriteConfig {
        serde_yaml::from_str(yml).unwrap()
    }

    #[test]
    fn defaults_are_prometheus_2_42s() {
        let c = parse("url: http://r:9090/api/v1/write\n");
        assert_eq!(c.remote_timeout, Duration::from_secs(30));
        assert_eq!(c.queue_config, QueueConfig::default());
        assert_eq!(
            (c.queue_config.capacity, c.queue_config.max_samples_per_send),
            (2500, 500)
        );
        assert!(c.metadata_config.send && !c.send_exemplars && !c.send_native_histograms);
        assert_eq!(c.max_disk_usage, 1 << 30);
        let p = Prepared::new(&[c], &BTreeMap::new()).unwrap();
        let d = &p.destinations[0];
        assert_eq!(d.endpoint.address, "r:9090");
        assert_eq!(d.endpoint.path_and_query, "/api/v1/write");
        assert_eq!(d.name.len(), 6);
        assert!(!d.v2);
        let c = parse("url: https://example.org\nname: x\nmax_disk_usage: 64MB\nprotobuf_message: io.prometheus.write.v2.Request\n");
        assert_eq!(c.max_disk_usage, 64 << 20);
        let p = Prepared::new(&[c], &BTreeMap::new()).unwrap();
        let d = &p.destinations[0];
        assert_eq!(
            (d.endpoint.address.as_str(), d.name.as_str()),
            ("example.org:443", "x")
        );
        assert!(d.v2 && d.endpoint.tls.is_some());
    }

    #[test]
    fn load_time_checks() {
        for (yml, msg) in [
            ("url: ftp://x/\n", "unsupported scheme"),
            ("url: nothing\n", "invalid remote_write url"),
            ("url: http://x/\nfrobnicate: 1\n", "unknown field"),
            (
                "url: http://x/\nheaders: {Authorization: x}\n",
                "reserved header",
            ),
            (
                "url: http://x/\nbasic_auth: {username: u}\nbearer_token: t\n",
                "at most one of",
            ),
            (
                "url: http://x/\nprotobuf_message: nope\n",
                "unknown remote write protobuf message",
            ),
            (
                "url: http://x/\nqueue_config: {min_shards: 5, max_shards: 2}\n",
                "min_shards",
            ),
            (
                "url: http://x/\nwrite_relabel_configs: [{action: hashmod, target_label: a}]\n",
                "non-zero modulus",
            ),
        ] {
            let err = serde_yaml::from_str::<RemoteWriteConfig>(yml)
                .map_err(|e| e.to_string())
                .and_then(|c| Prepared::new(&[c], &BTreeMap::new()).map(|_| ()))
                .unwrap_err();
            assert!(err.contains(msg), "{yml}: {err}");
        }
        let twice = parse("url: http://x/\nname: a\n");
        let err = Prepared::new(&[twice.clone(), twice], &BTreeMap::new())
            .err()
            .unwrap();
        assert!(err.contains("multiple remote write configs"), "{err}");
        let unnamed = parse("url: http://x/\n");
        let mut other = unnamed.clone();
        other.remote_timeout = Duration::from_secs(1);
        let err = Prepared::new(&[unnamed, other], &BTreeMap::new())
            .err()
            .unwrap();
        assert!(err.contains("name them"), "{err}");
    }
}
