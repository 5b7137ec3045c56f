//! Who may call what: credentials (HTTP basic auth against bcrypt hashes, novamon's bearer
//! tokens), the role each request needs, and the answers when they do not match (401 with
//! `WWW-Authenticate: Basic` as exporter-toolkit, 403 for a missing role; gRPC's
//! UNAUTHENTICATED and PERMISSION_DENIED on the OTLP/gRPC listener).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Web;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Query APIs, the UI, trace and log reads, `/metrics`.
    Read,
    /// Remote-write, OTLP, Loki push.
    Write,
    /// Reload, silences, posting alerts.
    Admin,
}

/// The role a request to the main HTTP listener needs; None for the health endpoints, which
/// stay open so that load balancers and orchestrators need no credentials.
pub fn http_role(method: &Method, path: &str) -> Option<Role> {
    match path {
        "/-/healthy" | "/-/ready" => None,
        "/api/v1/write" | "/loki/api/v1/push" => Some(Role::Write),
        p if p.starts_with("/v1/") => Some(Role::Write),
        // Elasticsearch's bulk ingest, under its prefix or on its own listener.
        p if p == "/_bulk" || p.ends_with("/_bulk") => Some(Role::Write),
        // Pushgateway's push, replace and delete of a group: what pushers do.
        p if p.starts_with("/metrics/job") => Some(Role::Write),
        p if p.starts_with("/-/") || p.starts_with("/api/v1/admin/") => Some(Role::Admin),
        // Deletes data or state everywhere else: Elasticsearch's `DELETE /<index-pattern>`
        // (under its prefix or on its own listener, where the path is any index name),
        // Alertmanager's silences.
        _ if *method == Method::DELETE => Some(Role::Admin),
        p if p.starts_with("/api/v2/") && !matches!(*method, Method::GET | Method::HEAD) => {
            Some(Role::Admin)
        }
        _ => Some(Role::Read),
    }
}

/// Which listener a guard protects: what role its requests need and how a refusal is said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The main HTTP listener: roles by path.
    Http,
    /// The OTLP/HTTP listener: everything is a write.
    OtlpHttp,
    /// The OTLP/gRPC listener: everything is a write, refusals are gRPC statuses.
    OtlpGrpc,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No, unknown or wrong credentials.
    Unauthenticated,
    /// Known user without the role the request needs.
    Forbidden,
}

/// Users, tokens and roles of one loaded web config, with the verified-password cache that
/// lives as long as they do.
pub struct Credentials {
    users: HashMap<String, String>,
    /// SHA-256 of each token, so a lookup compares digests rather than the secret itself.
    tokens: HashMap<[u8; 32], String>,
    roles: HashMap<String, HashSet<Role>>,
    /// Outcome of each bcrypt comparison, by a digest of user, hash and password (as
    /// exporter-toolkit: bcrypt costs tens of milliseconds per request otherwise).
    cache: Mutex<HashMap<[u8; 32], bool>>,
}

/// How much of a refused request's body is read, and for how long at most, before the
/// refusal is sent.
const REFUSED_BODY_DRAIN_BYTES: usize = 64 << 10;
const REFUSED_BODY_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers `req` with `refusal` after reading a little of its body, as Go's server does: a
/// client still sending the body would otherwise see the connection reset (HTTP/1) or the
/// stream reset (HTTP/2), not the answer.
pub(crate) async fn refuse(req: axum::extract::Request, refusal: Response) -> Response {
    let drain = axum::body::to_bytes(req.into_body(), REFUSED_BODY_DRAIN_BYTES);
    let _ = tokio::time::timeout(REFUSED_BODY_DRAIN_TIME, drain).await;
    refusal
}

/// Most cached password checks; the cache is emptied when full, so wrong passwords sent in
/// bulk cannot grow it.
const MAX_CACHED_CHECKS: usize = 1024;

/// exporter-toolkit's stand-in hash for unknown users: comparing against it costs what a
/// known user costs, so response times do not tell which users exist.
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        // Not valid UTF-8, so no user name or hash can run into the next part.
        h.update([0xff]);
    }
    h.finalize().into()
}

impl Credentials {
    /// None when the file has neither users nor tokens: requests are not authenticated.
    pub fn new(
        users: BTreeMap<String, String>,
        tokens: BTreeMap<String, String>,
        roles: BTreeMap<String, Vec<Role>>,
    ) -> Option<Credentials> {
        if users.is_empty() && tokens.is_empty() {
            return None;
        }
        Some(Credentials {
            users: users.into_iter().collect(),
            tokens: tokens
                .into_iter()
                .map(|(t, u)| (sha256(&[t.as_bytes()]), u))
                .collect(),
            roles: roles
                .into_iter()
                .map(|(u, r)| (u, r.into_iter().collect()))
                .collect(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn has_role(&self, user: &str, role: Role) -> bool {
        self.roles.get(user).is_none_or(|r| r.contains(&role))
    }
}

impl Web {
    /// Checks a request's `Authorization` header against the current credentials; Ok when
    /// the config has none.
    pub async fn authorize(
        &self,
        authorization: Option<&HeaderValue>,
        role: Role,
    ) -> Result<(), Denied> {
        let current = self.current();
        let Some(creds) = &current.credentials else {
            return Ok(());
        };
        let user = self
            .authenticate(creds, authorization)
            .await
            .ok_or(Denied::Unauthenticated)?;
        if creds.has_role(&user, role) {
            Ok(())
        } else {
            Err(Denied::Forbidden)
        }
    }

    async fn authenticate(
        &self,
        creds: &Credentials,
        authorization: Option<&HeaderValue>,
    ) -> Option<String> {
        let value = authorization?.to_str().ok()?;
        let (scheme, rest) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return creds
                .tokens
                .get(&sha256(&[rest.trim().as_bytes()]))
                .cloned();
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let known = creds.users.get(user);
        let hash = known.map_or(UNKNOWN_USER_HASH, String::as_str);
        let key = sha256(&[user.as_bytes(), hash.as_bytes(), password.as_bytes()]);
        let cached = creds.cache.lock().ok()?.get(&key).copied();
        let ok = match cached {
            Some(ok) => ok,
            None => {
                // One comparison at a time, as exporter-toolkit: a flood of wrong passwords
                // takes one core, not all of them.
                let _one = self.bcrypt_turn.lock().await;
                let (password, hash) = (password.to_owned(), hash.to_owned());
                let matched = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                    .await
                    .ok()?
                    .unwrap_or(false);
                let ok = known.is_some() && matched;
                let mut cache = creds.cache.lock().ok()?;
                if cache.len() >= MAX_CACHED_CHECKS {
                    cache.clear();
                }
                cache.insert(key, ok);
                ok
            }
        };
        ok.then(|| user.to_owned())
    }
}

/// The state of [`guard`]: the shared web config and the listener it protects.
#[derive(Clone)]
pub struct Guard {
    web: Web,
    listener: Listener,
}

impl Guard {
    pub fn new(web: &Web, listener: Listener) -> Guard {
        Guard {
            web: web.clone(),
            listener,
        }
    }
}

/// Middleware on every listener: authorizes the request for the role its path needs, and
/// adds the configured response headers to whatever is answered.
pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let role = match g.listener {
        Listener::Http => http_role(req.method(), req.uri().path()),
        Listener::OtlpHttp | Listener::OtlpGrpc => Some(Role::Write),
    };
    // Only the header crosses the await: the request itself need not be Sync.
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let verdict = match role {
        Some(role) => g.web.authorize(authorization.as_ref(), role).await,
        None => Ok(()),
    };
    let mut resp = match verdict {
        Ok(()) => next.run(req).await,
        Err(d) if g.listener == Listener::OtlpGrpc => grpc_denied(d),
        Err(d) => refuse(req, http_denied(d)).await,
    };
    if g.listener != Listener::OtlpGrpc {
        let current = g.web.current();
        for (k, v) in &current.headers {
            resp.headers_mut().insert(k.clone(), v.clone());
        }
    }
    resp
}

/// Go's `http.Error`: the status text and a newline, as plain text.
fn http_denied(d: Denied) -> Response {
    let status = match d {
        Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
        Denied::Forbidden => StatusCode::FORBIDDEN,
    };
    let mut resp = (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{}\n", status.canonical_reason().unwrap_or_default()),
    )
        .into_response();
    if d == Denied::Unauthenticated {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    }
    resp
}

/// A trailers-only gRPC answer: UNAUTHENTICATED (16) or PERMISSION_DENIED (7).
fn grpc_denied(d: Denied) -> Response {
    let (code, message) = match d {
        Denied::Unauthenticated => ("16", "missing or invalid credentials"),
        Denied::Forbidden => ("7", "the user does not have the write role"),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/grpc"),
            (header::HeaderName::from_static("grpc-status"), code),
            (header::HeaderName::from_static("grpc-message"), message),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_by_path() {
        let get = Method::GET;
        let post = Method::POST;
        for (m, p, want) in [
            (&get, "/-/healthy", None),
            (&get, "/-/ready", None),
            (&get, "/metrics", Some(Role::Read)),
            (&get, "/api/v1/query", Some(Role::Read)),
            (&post, "/api/v1/query", Some(Role::Read)),
            (&get, "/", Some(Role::Read)),
            (&get, "/jaeger/api/services", Some(Role::Read)),
            (&post, "/api/v1/write", Some(Role::Write)),
            (&post, "/v1/traces", Some(Role::Write)),
            (&post, "/loki/api/v1/push", Some(Role::Write)),
            (&post, "/es/_bulk", Some(Role::Write)),
            (&post, "/logs/_bulk", Some(Role::Write)),
            (&post, "/es/_msearch", Some(Role::Read)),
            (&post, "/-/reload", Some(Role::Admin)),
            (&get, "/api/v2/silences", Some(Role::Read)),
            (&post, "/api/v2/silences", Some(Role::Admin)),
            (&Method::DELETE, "/api/v2/silence/x", Some(Role::Admin)),
            (&Method::DELETE, "/es/logs-*", Some(Role::Admin)),
            (&Method::DELETE, "/web", Some(Role::Admin)),
            (&Method::PUT, "/metrics/job/batch", Some(Role::Write)),
            (
                &Method::DELETE,
                "/metrics/job/batch/instance/a",
                Some(Role::Write),
            ),
            (&post, "/api/v2/alerts", Some(Role::Admin)),
        ] {
            assert_eq!(http_role(m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn users_without_a_roles_entry_have_all_roles() {
        let c = Credentials::new(
            BTreeMap::from([("a".into(), "h".into()), ("b".into(), "h".into())]),
            BTreeMap::new(),
            BTreeMap::from([("b".into(), vec![Role::Read])]),
        )
        .unwrap();
        assert!([Role::Read, Role::Write, Role::Admin]
            .iter()
            .all(|r| c.has_role("a", *r)));
        assert!(c.has_role("b", Role::Read));
        assert!(!c.has_role("b", Role::Write));
        assert!(Credentials::new(BTreeMap::new(), BTreeMap::new(), BTreeMap::new()).is_none());
    }

    fn basic(user: &str, password: &str) -> Option<HeaderValue> {
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {v}").parse().unwrap())
    }

    fn bearer(token: &str) -> Option<HeaderValue> {
        Some(format!("Bearer {token}").parse().unwrap())
    }

    #[tokio::test]
    async fn basic_and_bearer_credentials_are_checked_and_cached() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let web = Web::from_file(
            super::super::file::parse(&format!(
                "basic_auth_users:\n  alice: '{hash}'\n  bob: '{hash}'\nbearer_tokens:\n  tok: bob\nroles:\n  bob: [read]\n"
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            web.authorize(basic("alice", "secret").as_ref(), Role::Admin)
                .await,
            Ok(())
        );
        assert_eq!(
            web.authorize(basic("alice", "wrong").as_ref(), Role::Read)
                .await,
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            web.authorize(basic("mallory", "secret").as_ref(), Role::Read)
                .await,
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            web.authorize(None, Role::Read).await,
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            web.authorize(basic("bob", "secret").as_ref(), Role::Write)
                .await,
            Err(Denied::Forbidden)
        );
        assert_eq!(
            web.authorize(bearer("tok").as_ref(), Role::Read).await,
            Ok(())
        );
        assert_eq!(
            web.authorize(bearer("tok").as_ref(), Role::Write).await,
            Err(Denied::Forbidden)
        );
        assert_eq!(
            web.authorize(bearer("other").as_ref(), Role::Read).await,
            Err(Denied::Unauthenticated)
        );
        // Four distinct (user, password) pairs were compared with bcrypt, each once; a repeat
        // is answered from the cache.
        let current = web.current();
        let cached = || {
            current
                .credentials
                .as_ref()
                .unwrap()
                .cache
                .lock()
                .unwrap()
                .len()
        };
        assert_eq!(cached(), 4);
        assert_eq!(
            web.authorize(basic("alice", "secret").as_ref(), Role::Read)
                .await,
            Ok(())
        );
        assert_eq!(cached(), 4);
    }

    #[test]
    fn refusals_have_exporter_toolkit_and_grpc_shapes() {
        let r = http_denied(Denied::Unauthenticated);
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Basic");
        let r = http_denied(Denied::Forbidden);
        assert_eq!(r.status(), 403);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        let r = grpc_denied(Denied::Unauthenticated);
        assert_eq!(r.headers()["grpc-status"], "16");
        assert_eq!(grpc_denied(Denied::Forbidden).headers()["grpc-status"], "7");
    }
}
