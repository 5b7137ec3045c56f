//! The HTTP side of a scrape: one kept-alive HTTP/1.1 connection per target (plain or
//! rustls), the request Prometheus sends (`Accept`, gzip, the timeout header, credentials),
//! redirects followed as Go's client follows them (`follow_redirects`, on by default), and the
//! response read within the timeout and the body size limit. `http_sd_configs` GETs its URL
//! through the same [`Connection`]. Owns transport only; what the body says is the parser's
//! (or the discovery's).

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::config::{
    Authorization, BasicAuth, HttpClientConfig, HttpSdConfig, ScrapeConfig, TlsConfig,
};
use super::target::Target;

/// The User-Agent novamon scrapes with (Prometheus's is `Prometheus/<version>`).
const USER_AGENT: &str = concat!("novamon/", env!("CARGO_PKG_VERSION"));

/// What every request of one pool's scrapes (or of one HTTP discovery) sends the same way.
pub(crate) struct HttpSettings {
    accept: String,
    auth: Auth,
    /// Built for every job, as Prometheus loads `tls_config` whatever the scheme: a target
    /// relabelled to https, or redirected there, needs it too.
    tls: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
    follow_redirects: bool,
    /// Most bytes of uncompressed body (`body_size_limit`, or the server's own ceiling).
    pub(crate) body_limit: u64,
}

/// Credentials, read from their files at each request as Prometheus does (so a rotated token
/// file takes effect without a reload). Shared with `remote_write`'s sender.
pub(crate) enum Auth {
    None,
    Basic { user: String, password: Secret },
    Header { kind: String, credentials: Secret },
}

pub(crate) enum Secret {
    Inline(String),
    File(std::path::PathBuf),
}

impl Secret {
    fn read(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("unable to read file {}: {e}", p.display())),
        }
    }
}

impl Auth {
    /// One of `basic_auth`, `authorization` and `bearer_token(_file)` (checked at most one by
    /// the config's own checks), files preferred over inline values.
    pub(crate) fn new(
        basic_auth: Option<&BasicAuth>,
        authorization: Option<&Authorization>,
        bearer_token: &Option<String>,
        bearer_token_file: &Option<std::path::PathBuf>,
    ) -> Auth {
        let secret =
            |inline: &Option<String>, file: &Option<std::path::PathBuf>| match (inline, file) {
                (_, Some(f)) => Secret::File(f.clone()),
                (Some(s), None) => Secret::Inline(s.clone()),
                (None, None) => Secret::Inline(String::new()),
            };
        if let Some(b) = basic_auth {
            Auth::Basic {
                user: b.username.clone(),
                password: secret(&b.password, &b.password_file),
            }
        } else if let Some(a) = authorization {
            Auth::Header {
                kind: a.kind.clone(),
                credentials: secret(&a.credentials, &a.credentials_file),
            }
        } else if bearer_token.is_some() || bearer_token_file.is_some() {
            Auth::Header {
                kind: "Bearer".into(),
                credentials: secret(bearer_token, bearer_token_file),
            }
        } else {
            Auth::None
        }
    }

    /// The `Authorization` header's value, files read now.
    pub(crate) fn header(&self) -> Result<Option<String>, String> {
        Ok(match self {
            Auth::None => None,
            Auth::Basic { user, password } => {
                use base64::Engine;
                let p = password.read()?;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{p}"))
                ))
            }
            Auth::Header { kind, credentials } => Some(format!("{kind} {}", credentials.read()?)),
        })
    }
}

impl HttpSettings {
    /// Checks files and certificates now, so that a bad one fails the config load.
    pub(crate) fn new(
        raw: &ScrapeConfig,
        accept: String,
        ceiling: u64,
    ) -> Result<HttpSettings, String> {
        let body_limit = match raw.body_size_limit {
            Some(n) if n > 0 => n.min(ceiling),
            _ => ceiling,
        };
        HttpSettings::build(&raw.client, accept, body_limit)
    }

    /// An `http_sd_configs` entry's client: its credentials, TLS and redirects, asking for
    /// JSON, reading at most `body_limit` bytes.
    pub(crate) fn for_http_sd(c: &HttpSdConfig, body_limit: u64) -> Result<HttpSettings, String> {
        HttpSettings::build(&c.client, "application/json".into(), body_limit)
    }

    fn build(
        c: &HttpClientConfig,
        accept: String,
        body_limit: u64,
    ) -> Result<HttpSettings, String> {
        let auth = Auth::new(
            c.basic_auth.as_ref(),
            c.authorization.as_ref(),
            &c.bearer_token,
            &c.bearer_token_file,
        );
        Ok(HttpSettings {
            accept,
            auth,
            tls: Arc::new(tls_client(&c.tls_config)?),
            server_name: c.tls_config.server_name.clone(),
            follow_redirects: c.follow_redirects,
            body_limit,
        })
    }
}

fn pem(
    inline: &Option<String>,
    file: &Option<std::path::PathBuf>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "at most one of {what} and {what}_file must be configured"
        )),
        (Some(s), None) => Ok(Some(s.as_bytes().to_vec())),
        (None, Some(f)) => std::fs::read(f)
            .map(Some)
            .map_err(|e| format!("unable to load {what} {}: {e}", f.display())),
        (None, None) => Ok(None),
    }
}

pub(crate) fn tls_client(c: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match c.min_version.as_deref() {
        None | Some("TLS12") | Some("TLS10") | Some("TLS11") => rustls::ALL_VERSIONS,
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(v) => return Err(format!("unknown TLS version: {v}")),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let ca = pem(&c.ca, &c.ca_file, "ca")?;
    let builder = if c.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else if let Some(ca) = ca {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert = cert.map_err(|e| format!("unable to load specified CA cert: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("unable to use specified CA cert: {e}"))?;
        }
        builder.with_root_certificates(roots)
    } else {
        use rustls_platform_verifier::BuilderVerifierExt;
        builder
            .with_platform_verifier()
            .map_err(|e| e.to_string())?
    };
    let cert = pem(&c.cert, &c.cert_file, "cert")?;
    let key = pem(&c.key, &c.key_file, "key")?;
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let bad = |e: rustls::pki_types::pem::Error| {
                format!("unable to use specified client cert: {e}")
            };
            let certs = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(bad)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("unable to use specified client cert: {e}"))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err("client cert and key must be configured together".into()),
    }
}

/// `insecure_skip_verify: true`: accepts any certificate, still checking the handshake's
/// signatures with the provider's algorithms.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A response body and its media type.
pub(crate) struct Fetched {
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Where one GET goes: a scrape target, or an HTTP discovery's URL.
pub(crate) struct Get<'a> {
    pub(crate) scheme: &'a str,
    /// The `Host` header: the URL's authority as written.
    pub(crate) host: &'a str,
    /// `host:port`, what is dialled.
    pub(crate) address: &'a str,
    pub(crate) path_and_query: &'a str,
    /// The header that tells the peer how long its answer may take (a scrape's timeout, a
    /// discovery's refresh interval), and its value.
    pub(crate) hint: (&'static str, String),
    /// How long the whole exchange may take, redirects and body included.
    pub(crate) timeout: std::time::Duration,
    /// Checks a `200`'s content type before its body is read (an HTTP discovery refuses any
    /// but JSON, as Prometheus does, without reading what it would refuse); its error is the
    /// GET's.
    pub(crate) content_type: Option<ContentTypeCheck>,
}

/// A check of a response's `Content-Type` (absent: `None`); the error is the request's.
pub(crate) type ContentTypeCheck = fn(Option<&str>) -> Result<(), String>;

impl Get<'_> {
    fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path_and_query)
    }
}

/// One peer's connection, kept between requests.
#[derive(Default)]
pub(crate) struct Connection {
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    /// GETs the target within its timeout; errors are worded as Prometheus words them
    /// (`Get "<url>": …`, `server returned HTTP status …`, `body size limit exceeded`).
    pub(crate) async fn scrape(
        &mut self,
        settings: &HttpSettings,
        target: &Target,
    ) -> Result<Fetched, String> {
        let get = Get {
            scheme: &target.scheme,
            host: &target.address,
            address: &target.address,
            path_and_query: &target.path_and_query,
            hint: (
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", target.timeout.as_secs_f64()),
            ),
            timeout: target.timeout,
            content_type: None,
        };
        self.get(settings, &get).await
    }

    /// GETs `req` within its timeout, errors worded as [`Connection::scrape`]'s.
    pub(crate) async fn get(
        &mut self,
        settings: &HttpSettings,
        req: &Get<'_>,
    ) -> Result<Fetched, String> {
        let url = req.url();
        let get = |e: String| format!("Get {url:?}: {e}");
        match tokio::time::timeout(req.timeout, self.exchange(settings, req)).await {
            Ok(Ok(f)) => Ok(f),
            Ok(Err(Failure::Transport(e))) => {
                self.sender = None;
                Err(get(e))
            }
            Ok(Err(Failure::Response(e))) => Err(e),
            Err(_) => {
                // The connection may hold half a response: start afresh next time.
                self.sender = None;
                Err(get("context deadline exceeded".into()))
            }
        }
    }

    async fn exchange(
        &mut self,
        settings: &HttpSettings,
        req: &Get<'_>,
    ) -> Result<Fetched, Failure> {
        let mut hop = Hop {
            scheme: req.scheme.to_string(),
            host: req.host.to_string(),
            address: req.address.to_string(),
            path_and_query: req.path_and_query.to_string(),
        };
        let mut requests = 1;
        let resp = loop {
            let resp = self.send(settings, req, &hop).await?;
            let status = resp.status();
            let location = (settings.follow_redirects && status.is_redirection())
                .then(|| resp.headers().get(hyper::header::LOCATION))
                .flatten()
                .and_then(|l| l.to_str().ok());
            let Some((location, next)) = location.and_then(|l| Some((l, hop.resolve(l)?))) else {
                break resp;
            };
            // The redirect's body is not read: its connection cannot be reused (one of its
            // own, for a hop elsewhere, is dropped anyway).
            if hop.is_peer(req) {
                self.sender = None;
            }
            if requests == MAX_REQUESTS {
                // Go names the Location as the target sent it, not resolved.
                return Err(Failure::Response(format!(
                    "Get {location:?}: stopped after {MAX_REQUESTS} redirects"
                )));
            }
            requests += 1;
            hop = next;
        };
        let transport = |e: &dyn std::fmt::Display| Failure::Transport(e.to_string());
        let status = resp.status();
        if status != hyper::StatusCode::OK {
            // The body is not read: the connection cannot be reused.
            self.sender = None;
            return Err(Failure::Response(format!(
                "server returned HTTP status {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )));
        }
        let header = |n: hyper::header::HeaderName| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(hyper::header::CONTENT_TYPE);
        if let Some(check) = req.content_type {
            if let Err(e) = check(content_type.as_deref()) {
                // The body is not read: the connection cannot be reused.
                self.sender = None;
                return Err(Failure::Response(e));
            }
        }
        let gzip =
            header(hyper::header::CONTENT_ENCODING).is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
        let limit = settings.body_limit;
        let mut body = resp.into_body();
        let mut raw = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| transport(&e))?;
            if let Ok(data) = frame.into_data() {
                // Compressed bytes never exceed what they decode to by much; the real check
                // is on the decoded size below.
                if raw.len() as u64 + data.len() as u64 > limit {
                    self.sender = None;
                    return Err(Failure::Response(BODY_LIMIT.into()));
                }
                raw.extend_from_slice(&data);
            }
        }
        let body = if gzip {
            let mut out = Vec::new();
            let mut dec = flate2::read::GzDecoder::new(&raw[..]).take(limit + 1);
            dec.read_to_end(&mut out)
                .map_err(|e| Failure::Response(format!("gzip: {e}")))?;
            if out.len() as u64 > limit {
                return Err(Failure::Response(BODY_LIMIT.into()));
            }
            out
        } else {
            raw
        };
        Ok(Fetched { content_type, body })
    }

    /// Sends the request to `hop`: over the peer's kept-alive connection when the hop is the
    /// peer itself, else over a connection of its own (a redirect elsewhere).
    async fn send(
        &mut self,
        settings: &HttpSettings,
        get: &Get<'_>,
        hop: &Hop,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Failure> {
        let transport = |e: &dyn std::fmt::Display| Failure::Transport(e.to_string());
        let auth = settings.auth.header().map_err(Failure::Transport)?;
        let req = hyper::Request::get(hop.path_and_query.as_str())
            .header(hyper::header::HOST, hop.host.as_str())
            .header(hyper::header::ACCEPT, settings.accept.as_str())
            .header(hyper::header::ACCEPT_ENCODING, "gzip")
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .header(get.hint.0, get.hint.1.as_str());
        // Sent on redirected requests too: Prometheus adds credentials in its transport, which
        // every request of a redirect chain goes through.
        let req = match auth {
            Some(a) => req.header(hyper::header::AUTHORIZATION, a),
            None => req,
        }
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport(&e))?;
        let tls = (hop.scheme == "https").then_some(&settings.tls);
        let connect = || connect(&hop.address, tls, settings.server_name.as_deref());
        let mut elsewhere;
        let sender = if hop.is_peer(get) {
            // A kept-alive connection the target closed since is replaced, not an error.
            let alive = match self.sender.as_mut() {
                Some(s) => s.ready().await.is_ok(),
                None => false,
            };
            if !alive {
                self.sender = Some(connect().await.map_err(Failure::Transport)?);
            }
            self.sender.as_mut().expect("connected above")
        } else {
            elsewhere = connect().await.map_err(Failure::Transport)?;
            &mut elsewhere
        };
        sender.send_request(req).await.map_err(|e| transport(&e))
    }
}

/// Go's client stops after this many consecutive requests ("stopped after 10 redirects"): it
/// follows nine redirects.
const MAX_REQUESTS: usize = 10;

/// Where one request of a GET goes: the peer, or where it redirected.
#[derive(Debug, PartialEq)]
struct Hop {
    scheme: String,
    /// The URL's host as written, what the `Host` header carries (Go sends no port the URL
    /// does not name).
    host: String,
    /// Where to connect: `host` with the scheme's port when it names none.
    address: String,
    path_and_query: String,
}

impl Hop {
    /// Whether this request goes where the peer's kept-alive connection goes.
    fn is_peer(&self, get: &Get<'_>) -> bool {
        self.scheme == get.scheme && self.address == get.address
    }

    #[cfg(test)]
    fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.address, self.path_and_query)
    }

    /// Where a `Location` header sends this request: an absolute URL (its address given the
    /// scheme's port when it names none, as Go dials it), a scheme-relative one, an absolute
    /// path, or a path relative to this one's directory. `None` for what cannot be followed
    /// (another scheme than http(s), no host).
    fn resolve(&self, location: &str) -> Option<Hop> {
        let absolute = |scheme: &str, rest: &str| {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (host, path) = rest.split_at(end);
            if host.is_empty() {
                return None;
            }
            // A port is what follows the last colon outside an IPv6 literal's brackets.
            let has_port = host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
            let address = match (has_port, scheme) {
                (true, _) => host.to_string(),
                (false, "https") => format!("{host}:443"),
                (false, _) => format!("{host}:80"),
            };
            let path_and_query = match path {
                "" => "/".to_string(),
                p if p.starts_with('?') => format!("/{p}"),
                p => without_dot_segments(p),
            };
            Some(Hop {
                scheme: scheme.to_string(),
                host: host.to_string(),
                address,
                path_and_query,
            })
        };
        let location = location.split('#').next().unwrap_or("");
        if let Some((scheme, rest)) = location.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            return matches!(scheme.as_str(), "http" | "https")
                .then(|| absolute(&scheme, rest))
                .flatten();
        }
        if let Some(rest) = location.strip_prefix("//") {
            return absolute(&self.scheme, rest);
        }
        let path_and_query = if location.starts_with('/') {
            without_dot_segments(location)
        } else {
            let path = self.path_and_query.split('?').next().unwrap_or("/");
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            without_dot_segments(&format!("{dir}/{location}"))
        };
        Some(Hop {
            scheme: self.scheme.clone(),
            host: self.host.clone(),
            address: self.address.clone(),
            path_and_query,
        })
    }
}

/// `path_and_query` with the path's `.` and `..` segments resolved (RFC 3986 5.2.4, as Go's
/// `URL.ResolveReference` does); the query is kept as it is.
fn without_dot_segments(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                // A trailing dot segment leaves the path ending in a slash.
                if last {
                    out.push("");
                }
            }
            seg => out.push(seg),
        }
    }
    let mut s = format!("/{}", out.join("/"));
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    s
}

const BODY_LIMIT: &str = "body size limit exceeded";

enum Failure {
    /// Connecting, sending or reading failed: Prometheus prefixes these with the request.
    Transport(String),
    /// The target answered, but not with a usable body.
    Response(String),
}

/// An HTTP/1.1 connection to `address` (`host:port`), over TLS when `tls` is set (see
/// [`dial`]).
pub(crate) async fn connect<B>(
    address: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    server_name: Option<&str>,
) -> Result<SendRequest<B>, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    handshake(dial(address, tls, server_name).await?).await
}

/// A byte stream to a peer: TCP, or TLS over it.
pub(crate) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// A connection to `address` (`host:port`), over TLS when `tls` is set (verifying
/// `server_name`, else the host): what scrapes and every forwarding transport ride on.
/// Errors are worded as Go's.
pub(crate) async fn dial(
    address: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    server_name: Option<&str>,
) -> Result<Box<dyn Stream>, String> {
    // Go's wording for the usual failures, so that `lastError` reads as Prometheus's.
    let dial = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
            std::io::ErrorKind::TimedOut => "i/o timeout".to_string(),
            std::io::ErrorKind::NotFound => format!("lookup {address}: no such host"),
            _ => e.to_string(),
        };
        format!("dial tcp {address}: {why}")
    };
    let tcp = TcpStream::connect(address).await.map_err(dial)?;
    let _ = tcp.set_nodelay(true);
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    match tls {
        None => Ok(Box::new(tcp)),
        Some(tls) => {
            let name = server_name.map_or(host, str::to_owned);
            let name = ServerName::try_from(name).map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            Ok(Box::new(stream))
        }
    }
}

async fn handshake<S, B>(io: S) -> Result<SendRequest<B>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    // Drives the connection; ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::Hop;

    fn hop(url: &str) -> Hop {
        let (scheme, rest) = url.split_once("://").unwrap();
        let end = rest.find('/').unwrap();
        Hop {
            scheme: scheme.into(),
            host: rest[..end].into(),
            address: rest[..end].into(),
            path_and_query: rest[end..].into(),
        }
    }

    #[test]
    fn locations_resolve_as_go_resolves_them() {
        let from = hop("http://a:9100/x/metrics?q=1");
        for (location, to) in [
            ("https://b/m", Some("https://b:443/m")),
            ("HTTP://b:8080", Some("http://b:8080/")),
            ("http://[::1]/m", Some("http://[::1]:80/m")),
            ("http://[::1]:9/m", Some("http://[::1]:9/m")),
            ("http://b?x=1", Some("http://b:80/?x=1")),
            ("//c:1/m#frag", Some("http://c:1/m")),
            ("/other?y", Some("http://a:9100/other?y")),
            ("other", Some("http://a:9100/x/other")),
            ("../m?z", Some("http://a:9100/m?z")),
            ("./", Some("http://a:9100/x/")),
            ("/a/./b/../../c", Some("http://a:9100/c")),
            ("/../..", Some("http://a:9100/")),
            ("ftp://b/m", None),
            ("http:///m", None),
        ] {
            assert_eq!(
                from.resolve(location).map(|h| h.url()),
                to.map(str::to_string),
                "{location}"
            );
        }
        // The Host header names the port only where the URL does.
        let host = |location: &str| from.resolve(location).unwrap().host;
        assert_eq!(host("https://b/m"), "b");
        assert_eq!(host("http://[::1]:9/m"), "[::1]:9");
        assert_eq!(host("/other"), "a:9100");
    }
}
