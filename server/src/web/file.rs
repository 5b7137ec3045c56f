//! The web config file as written: exporter-toolkit's format (what Prometheus and
//! Alertmanager read with `--web.config.file`) plus novamon's own keys `bearer_tokens` and
//! `roles`. Unknown keys are errors, as in exporter-toolkit (which reads it with
//! `yaml.UnmarshalStrict`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::auth::Role;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: TlsServerConfig,
    #[serde(default)]
    pub http_server_config: HttpServerConfig,
    /// User name to bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    /// exporter-toolkit's request rate limit: a known key that novamon refuses rather than
    /// silently not applying.
    #[serde(default)]
    pub rate_limit: Option<serde_yaml::Value>,
    /// novamon: bearer token to the user it authenticates as.
    #[serde(default)]
    pub bearer_tokens: BTreeMap<String, String>,
    /// novamon: the roles of a user; users without an entry have all of them.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<Role>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// The certificate (PEM), inline; exclusive with `cert_file`.
    #[serde(default)]
    pub cert: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub client_ca: String,
    #[serde(default)]
    pub cert_file: PathBuf,
    #[serde(default)]
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_auth_type: String,
    #[serde(default)]
    pub client_ca_file: PathBuf,
    /// Go's TLS 1.2 suite names (TLS 1.3's are not configurable, as in Go).
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
    /// Go's default is true: the server's suite order wins.
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    pub client_allowed_sans: Vec<String>,
}

impl TlsServerConfig {
    /// exporter-toolkit's `IsEnabled`: any certificate, key, CA or client auth setting turns
    /// TLS on (and then cert and key are required).
    pub fn is_enabled(&self) -> bool {
        !self.cert.is_empty()
            || !self.key.is_empty()
            || !self.cert_file.as_os_str().is_empty()
            || !self.key_file.as_os_str().is_empty()
            || !self.client_ca.is_empty()
            || !self.client_ca_file.as_os_str().is_empty()
            || !self.client_auth_type.is_empty()
    }

    /// As exporter-toolkit: file paths are relative to the web config file's directory.
    fn set_directory(&mut self, dir: &Path) {
        for p in [
            &mut self.cert_file,
            &mut self.key_file,
            &mut self.client_ca_file,
        ] {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Offer HTTP/2 over TLS (ALPN); the OTLP/gRPC listener always does.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Extra response headers, from the short list exporter-toolkit allows.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            http2: true,
            headers: BTreeMap::new(),
        }
    }
}

/// The headers exporter-toolkit lets a web config set, with the values it allows (any value
/// when the list is empty).
const ALLOWED_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Reads and parses `path`; relative TLS file paths are resolved against its directory.
pub fn read(path: &Path) -> Result<WebConfigFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut file = parse(&text)?;
    if let Some(dir) = path.parent() {
        file.tls_server_config.set_directory(dir);
    }
    Ok(file)
}

pub fn parse(text: &str) -> Result<WebConfigFile, String> {
    // An empty file is valid and changes nothing, as in exporter-toolkit.
    let file: WebConfigFile = if text.trim().is_empty() {
        WebConfigFile::default()
    } else {
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))?
    };
    validate_headers(&file.http_server_config.headers)?;
    if file.rate_limit.is_some() {
        return Err("rate_limit is not supported by novamon".to_owned());
    }
    if !file.tls_server_config.client_allowed_sans.is_empty() {
        return Err("tls_server_config.client_allowed_sans is not supported by novamon".to_owned());
    }
    for (user, hash) in &file.basic_auth_users {
        hash.parse::<bcrypt::HashParts>()
            .map_err(|e| format!("basic_auth_users: {user}: {e}"))?;
    }
    for user in file.bearer_tokens.values() {
        if user.is_empty() {
            return Err("bearer_tokens: a token needs a user name".to_owned());
        }
    }
    Ok(file)
}

/// exporter-toolkit's messages, so a file that Prometheus refuses is refused the same way.
fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in headers {
        let Some((_, values)) = ALLOWED_HEADERS.iter().find(|(name, _)| name == k) else {
            return Err(format!("HTTP header {k:?} can not be configured"));
        };
        if !values.is_empty() && !values.contains(&v.as_str()) {
            return Err(format!(
                "invalid value for {k}. Expected one of: {values:?}, but got: {v:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_toolkit_file_parses() {
        let f = parse(
            "tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS12
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
basic_auth_users:
  alice: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi
",
        )
        .unwrap();
        assert!(f.tls_server_config.is_enabled());
        assert!(!f.http_server_config.http2);
        assert_eq!(f.basic_auth_users.len(), 1);
        assert!(!parse("").unwrap().tls_server_config.is_enabled());
    }

    #[test]
    fn unknown_keys_bad_headers_and_hashes_are_refused() {
        for (yml, want) in [
            ("basic_auth_user: {}\n", "unknown field `basic_auth_user`"),
            (
                "tls_server_config:\n  certfile: x\n",
                "tls_server_config: unknown field `certfile`",
            ),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "HTTP header \"Server\" can not be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "invalid value for X-Frame-Options. Expected one of: [\"deny\", \"sameorigin\"], but got: \"allow\"",
            ),
            ("basic_auth_users:\n  bob: plain\n", "basic_auth_users: bob: "),
            ("roles:\n  bob: [owner]\n", "roles.bob[0]: unknown variant `owner`"),
            ("rate_limit: {burst: 1}\n", "rate_limit is not supported"),
        ] {
            let err = parse(yml).unwrap_err();
            assert!(err.contains(want), "{yml}: {err}");
        }
    }

    #[test]
    fn the_deploy_example_parses() {
        let f = parse(include_str!("../../../deploy/web-config.example.yml")).unwrap();
        assert_eq!(f.roles.len(), 2);
        assert_eq!(f.bearer_tokens.len(), 1);
    }

    #[test]
    fn relative_tls_paths_are_from_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(
            &p,
            "tls_server_config:\n  cert_file: c.pem\n  key_file: /abs/k.pem\n",
        )
        .unwrap();
        let f = read(&p).unwrap();
        assert_eq!(f.tls_server_config.cert_file, dir.path().join("c.pem"));
        assert_eq!(f.tls_server_config.key_file, Path::new("/abs/k.pem"));
    }
}
