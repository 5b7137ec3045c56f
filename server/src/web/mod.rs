//! Access control and transport of the HTTP, OTLP/HTTP and OTLP/gRPC listeners, from a web
//! config file in Prometheus's `--web.config.file` format (exporter-toolkit):
//!
//! - `file`: the file's keys, exporter-toolkit's plus novamon's `bearer_tokens` and `roles`;
//! - `tls`: `tls_server_config` to rustls;
//! - `auth`: credentials, the role each request needs, 401/403 and gRPC refusals;
//! - `listener`: the accept loop (TLS, connection limit, header and idle timeouts, graceful
//!   stop).
//!
//! The file is re-read on reload (SIGHUP, `POST /-/reload`); a bad file is refused and the
//! running settings stay. The forward listener has its own authentication and TLS.

mod auth;
mod file;
mod listener;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::{HeaderName, HeaderValue};

pub(crate) use auth::refuse;
pub use auth::{guard, Guard, Listener, Role};
pub use listener::{serve, ListenerOptions, DEFAULT_IDLE_TIMEOUT};

use auth::Credentials;
use tls::TlsConfigs;

/// One loaded web config: what the listeners and the guard read on each connection and
/// request.
pub struct Loaded {
    tls: Option<TlsConfigs>,
    headers: Vec<(HeaderName, HeaderValue)>,
    credentials: Option<Credentials>,
}

impl Loaded {
    fn build(file: file::WebConfigFile) -> Result<Loaded, String> {
        let tls = tls::build(&file.tls_server_config, file.http_server_config.http2)?;
        let headers = file
            .http_server_config
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::try_from(k.as_str()).map_err(|e| format!("header {k}: {e}"))?,
                    HeaderValue::try_from(v.as_str()).map_err(|e| format!("header {k}: {e}"))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(Loaded {
            tls,
            headers,
            credentials: Credentials::new(file.basic_auth_users, file.bearer_tokens, file.roles),
        })
    }
}

/// The web config in use, shared by every listener and guard. Cheap to clone.
#[derive(Clone)]
pub struct Web {
    path: Option<Arc<PathBuf>>,
    current: Arc<RwLock<Arc<Loaded>>>,
    bcrypt_turn: Arc<tokio::sync::Mutex<()>>,
}

impl Web {
    /// Loads the file at `path`; without one, no TLS and no authentication.
    pub fn open(path: Option<&Path>) -> Result<Web, String> {
        let loaded = match path {
            Some(p) => load(p)?,
            None => Loaded::build(file::WebConfigFile::default())?,
        };
        Ok(Web {
            path: path.map(|p| Arc::new(p.to_owned())),
            current: Arc::new(RwLock::new(Arc::new(loaded))),
            bcrypt_turn: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    #[cfg(test)]
    fn from_file(f: file::WebConfigFile) -> Result<Web, String> {
        Ok(Web {
            path: None,
            current: Arc::new(RwLock::new(Arc::new(Loaded::build(f)?))),
            bcrypt_turn: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the file for a reload, checked but not yet in use; None without a file.
    /// Turning TLS on or off needs a restart: the listeners' scheme is what clients were
    /// given.
    pub fn prepare(&self) -> Result<Option<Loaded>, String> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let next = load(path)?;
        if next.tls.is_some() != self.current().tls.is_some() {
            return Err(format!(
                "web config file {}: turning TLS on or off needs a restart",
                path.display()
            ));
        }
        Ok(Some(next))
    }

    /// Puts a prepared config in use: new connections and requests see it; connections
    /// already open stay.
    pub fn apply(&self, next: Loaded) {
        let next = Arc::new(next);
        match self.current.write() {
            Ok(mut c) => *c = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    pub fn has_tls(&self) -> bool {
        self.current().tls.is_some()
    }

    pub fn has_credentials(&self) -> bool {
        self.current().credentials.is_some()
    }

    /// The rustls configuration for a new connection on the Postgres listener, when TLS is
    /// on.
    pub fn postgres_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        Some(self.current().tls.as_ref()?.postgres.clone())
    }

    /// The rustls configuration for a new connection on `listener`, when TLS is on.
    fn tls_for(&self, listener: Listener) -> Option<Arc<rustls::ServerConfig>> {
        let current = self.current();
        let t = current.tls.as_ref()?;
        Some(match listener {
            Listener::OtlpGrpc => t.grpc.clone(),
            Listener::Http | Listener::OtlpHttp => t.http.clone(),
        })
    }
}

/// Checks a web config file's text as loading it would, except for the certificate and key
/// files it names, which are not read: its keys, headers and credentials (what the fuzz target
/// feeds).
pub fn check_text(text: &str) -> Result<(), String> {
    let mut file = file::parse(text)?;
    file.tls_server_config = Default::default();
    Loaded::build(file).map(drop)
}

fn load(path: &Path) -> Result<Loaded, String> {
    file::read(path)
        .and_then(Loaded::build)
        .map_err(|e| format!("web config file {}: {e}", path.display()))
}
