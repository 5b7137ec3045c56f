//! Email delivery over SMTP: lettre's blocking client on tokio's blocking pool, driven step by
//! step as Alertmanager's `notify/email` drives Go's `net/smtp`: implicit TLS on port 465 (or
//! when forced), otherwise STARTTLS when `require_tls`, failing when the server does not offer
//! it; authentication only when a username is set and the server offers AUTH; then MAIL, RCPT,
//! DATA. Errors carry Alertmanager's texts. Owns the conversation only; the message is
//! rendered by `notify`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lettre::message::Mailboxes;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

use super::notify::SendError;

/// One email integration's connection settings, resolved against `global` at load time.
#[derive(Clone, Debug)]
pub(crate) struct SmtpConfig {
    /// `host:port` as configured, for messages.
    pub smarthost: String,
    pub host: String,
    pub port: u16,
    pub hello: String,
    pub require_tls: bool,
    pub implicit_tls: bool,
    pub auth: Option<Auth>,
    pub tls: TlsOptions,
}

#[derive(Clone, Debug)]
pub(crate) struct Auth {
    pub username: String,
    /// PLAIN's authorization identity (`auth_identity`); empty for none.
    pub identity: String,
    pub password: Password,
}

/// `auth_password`, or the file holding it (read at each send, as Alertmanager does, so a
/// rotated password is picked up).
#[derive(Clone)]
pub(crate) enum Password {
    Inline(String),
    File(PathBuf),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Inline(_) => f.write_str("<secret>"),
            Password::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl Password {
    fn read(&self) -> Result<String, String> {
        match self {
            Password::Inline(s) => Ok(s.clone()),
            Password::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("could not read {}: {e}", p.display())),
        }
    }
}

/// The email receiver's `tls_config`.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsOptions {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

/// Alertmanager's choice between implicit TLS and a plain connection (upgraded with STARTTLS
/// when TLS is required): `force_implicit_tls` when set, otherwise port 465 only.
pub(crate) fn implicit_tls(force: Option<bool>, port: u16) -> bool {
    force.unwrap_or(port == 465)
}

/// Splits `host:port` (`[v6]:port` for IPv6) as Go's `net.SplitHostPort` does.
pub(crate) fn split_smarthost(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("address {s}: missing port in address"))?;
    let host = match host.strip_prefix('[') {
        Some(h) => h
            .strip_suffix(']')
            .ok_or_else(|| format!("address {s}: missing ']' in address"))?,
        None if host.contains(':') => {
            return Err(format!("address {s}: too many colons in address"))
        }
        None => host,
    };
    if port.is_empty() {
        return Err(format!("address {s:?}: port cannot be empty"));
    }
    let port = port
        .parse()
        .map_err(|_| format!("address {s:?}: invalid port {port:?}"))?;
    Ok((host.to_owned(), port))
}

/// Sends `message` from `from` to the comma-separated `to` within `timeout`.
pub(crate) async fn send(
    config: &SmtpConfig,
    from: &str,
    to: &str,
    message: String,
    timeout: Duration,
) -> Result<(), SendError> {
    let (config, from, to) = (config.clone(), from.to_owned(), to.to_owned());
    let smarthost = config.smarthost.clone();
    let deadline = Instant::now() + timeout;
    // Every socket operation is bounded by the time left (below), so the blocking thread ends
    // soon after the deadline even though the await gives up on it at the deadline.
    let task = tokio::task::spawn_blocking(move || {
        conversation(&config, &from, &to, message.as_bytes(), deadline)
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => Err(retry(format!("SMTP {smarthost}: {e}"))),
        Err(_) => Err(retry(format!("SMTP {smarthost}: timed out"))),
    }
}

fn retry(msg: String) -> SendError {
    SendError { retry: true, msg }
}

fn fatal(msg: String) -> SendError {
    SendError { retry: false, msg }
}

/// The time left before `deadline`, as a socket timeout (never zero: lettre treats a zero
/// timeout as an error).
fn left(deadline: Instant) -> Result<Duration, SendError> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(retry("timed out".to_owned()));
    }
    Ok(d)
}

fn conversation(
    c: &SmtpConfig,
    from: &str,
    to: &str,
    message: &[u8],
    deadline: Instant,
) -> Result<(), SendError> {
    let from =
        Mailboxes::from_str(from).map_err(|e| fatal(format!("parse 'from' addresses: {e}")))?;
    let from: Vec<_> = from.into_iter().collect();
    let [from] = from.as_slice() else {
        return Err(fatal(format!(
            "must be exactly one 'from' address (got: {})",
            from.len()
        )));
    };
    let to = Mailboxes::from_str(to).map_err(|e| fatal(format!("parse 'to' addresses: {e}")))?;
    let tls = if c.implicit_tls || c.require_tls {
        Some(tls_parameters(c).map_err(|e| fatal(format!("parse TLS configuration: {e}")))?)
    } else {
        None
    };
    let hello = ClientId::Domain(c.hello.clone());
    let mut conn = SmtpConnection::connect(
        (c.host.as_str(), c.port),
        Some(left(deadline)?),
        &hello,
        tls.as_ref().filter(|_| c.implicit_tls),
        None,
    )
    .map_err(|e| {
        retry(if c.implicit_tls {
            format!("establish TLS connection to server: {e}")
        } else {
            format!("establish connection to server: {e}")
        })
    })?;
    let mut session = || -> Result<(), SendError> {
        let step = |conn: &mut SmtpConnection| {
            let t = left(deadline)?;
            conn.set_timeout(Some(t))
                .map_err(|e| retry(format!("set timeout: {e}")))
        };
        if let (false, Some(tls)) = (c.implicit_tls, &tls) {
            if !conn.can_starttls() {
                return Err(retry(format!(
                    "'require_tls' is true (default) but {:?} does not advertise the STARTTLS extension",
                    c.smarthost
                )));
            }
            step(&mut conn)?;
            conn.starttls(tls, &hello)
                .map_err(|e| retry(format!("send STARTTLS command: {e}")))?;
        }
        if let Some(auth) = &c.auth {
            step(&mut conn)?;
            authenticate(&mut conn, c, auth)?;
        }
        // A UTF-8 body goes as 8BITMIME where the server offers it.
        let mut params = Vec::new();
        if !message.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        step(&mut conn)?;
        conn.command(Mail::new(Some(from.email.clone()), params))
            .map_err(|e| retry(format!("send MAIL command: {e}")))?;
        for rcpt in to.iter() {
            step(&mut conn)?;
            conn.command(Rcpt::new(rcpt.email.clone(), Vec::new()))
                .map_err(|e| retry(format!("send RCPT command: {e}")))?;
        }
        step(&mut conn)?;
        conn.command(Data)
            .map_err(|e| retry(format!("send DATA command: {e}")))?;
        step(&mut conn)?;
        conn.message(message)
            .map_err(|e| retry(format!("delivery failure: {e}")))?;
        Ok(())
    };
    match session() {
        Ok(()) => {
            // The message is accepted: a failing QUIT changes nothing.
            let _ = conn.quit();
            Ok(())
        }
        Err(e) => {
            conn.abort();
            Err(e)
        }
    }
}

/// Authenticates with the first mechanism Alertmanager would use that the server offers:
/// PLAIN, then LOGIN (lettre has no CRAM-MD5, which the config loader refuses). A server
/// offering neither gets no AUTH, as Alertmanager sends none to a server without AUTH.
fn authenticate(conn: &mut SmtpConnection, c: &SmtpConfig, a: &Auth) -> Result<(), SendError> {
    let Some(mech) = [Mechanism::Plain, Mechanism::Login]
        .into_iter()
        .find(|m| conn.server_info().supports_auth_mechanism(*m))
    else {
        return Ok(());
    };
    let password = a
        .password
        .read()
        .map_err(|e| retry(format!("find auth mechanism: {e}")))?;
    if password.is_empty() {
        return Err(retry(format!(
            "find auth mechanism: missing password for {mech} auth mechanism"
        )));
    }
    // Go's type names, as Alertmanager's "%T auth: %w" prints them.
    let kind = match mech {
        Mechanism::Plain => "*smtp.plainAuth",
        _ => "*email.loginAuth",
    };
    let failed = |e: String| retry(format!("{kind} auth: {e}"));
    if mech == Mechanism::Plain {
        // Go's PlainAuth refuses to send the password in clear text except to localhost.
        if !conn.is_encrypted() && !["localhost", "127.0.0.1", "::1"].contains(&c.host.as_str()) {
            return Err(failed("unencrypted connection".to_owned()));
        }
        if !a.identity.is_empty() {
            // lettre's PLAIN has no authorization identity: the initial response by hand.
            let response = base64::engine::general_purpose::STANDARD
                .encode(format!("{}\0{}\0{password}", a.identity, a.username));
            return conn
                .command(format!("AUTH PLAIN {response}\r\n"))
                .map(drop)
                .map_err(|e| failed(e.to_string()));
        }
    }
    conn.auth(&[mech], &Credentials::new(a.username.clone(), password))
        .map(drop)
        .map_err(|e| failed(e.to_string()))
}

fn tls_parameters(c: &SmtpConfig) -> Result<TlsParameters, String> {
    let name = c.tls.server_name.clone().unwrap_or_else(|| c.host.clone());
    let mut b =
        TlsParameters::builder(name).dangerous_accept_invalid_certs(c.tls.insecure_skip_verify);
    if let Some(ca) = &c.tls.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("unable to load specified CA cert {}: {e}", ca.display()))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("unable to use specified CA cert {}: {e}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implicit_tls_is_port_465_unless_forced() {
        assert!(implicit_tls(None, 465));
        assert!(!implicit_tls(None, 587));
        assert!(!implicit_tls(None, 25));
        assert!(implicit_tls(Some(true), 587));
        assert!(!implicit_tls(Some(false), 465));
    }

    #[test]
    fn smarthost_splits_like_go() {
        assert_eq!(
            split_smarthost("mail.example.org:587").unwrap(),
            ("mail.example.org".to_owned(), 587)
        );
        assert_eq!(split_smarthost("[::1]:25").unwrap(), ("::1".to_owned(), 25));
        for (bad, want) in [
            ("mail.example.org", "missing port"),
            ("mail:", "port cannot be empty"),
            ("::1:25", "too many colons"),
            ("mail:smtp", "invalid port"),
        ] {
            let e = split_smarthost(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn password_file_is_read_and_trimmed_and_inline_is_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(Password::File(f).read().unwrap(), "s3cret");
        let missing = Password::File(dir.path().join("nope")).read().unwrap_err();
        assert!(missing.starts_with("could not read "), "{missing}");
        assert_eq!(format!("{:?}", Password::Inline("pw".into())), "<secret>");
    }
}
