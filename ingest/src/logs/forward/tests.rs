use super::*;
use frame::tests::event_time_ext;
use std::ops::ControlFlow;
use storage::logs::{Direction, LogOptions, LogQuery, LogStore};
use tokio::net::TcpStream;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<LogStore>,
    addr: std::net::SocketAddr,
}

/// The fixtures' frames carry 2023 timestamps: the store keeps a century.
async fn start(opts: ForwardOptions) -> Fixture {
    start_with_retention(opts, std::time::Duration::from_secs(100 * 365 * 86_400)).await
}

async fn start_with_retention(opts: ForwardOptions, retention: std::time::Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let opts_long = LogOptions {
        retention,
        ..Default::default()
    };
    let store = Arc::new(LogStore::open(dir.path(), opts_long).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        LogSink::new(store.clone(), Default::default()).with_bounds(crate::logs::LogBounds {
            max_age: retention,
            ..Default::default()
        }),
        opts,
    ));
    Fixture {
        _dir: dir,
        store,
        addr,
    }
}

impl Fixture {
    fn lines(&self) -> Vec<(i64, String, Option<String>)> {
        self.store.sync().unwrap();
        let q = LogQuery {
            start_ns: 0,
            end_ns: i64::MAX,
            ..Default::default()
        };
        let mut out = Vec::new();
        self.store
            .scan(&q, Direction::Forward, &mut |r| {
                out.push((r.ts_ns, r.line, r.labels.get("tag").map(str::to_owned)));
                ControlFlow::Continue(())
            })
            .unwrap();
        out
    }
}

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

async fn read_value<S: AsyncRead + Unpin>(s: &mut S) -> Value {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed while waiting for a reply");
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(v) = rmpv::decode::read_value(&mut &buf[..]) {
            return v;
        }
    }
}

fn msg(line: &str) -> Value {
    Value::Map(vec![(Value::from("log"), Value::from(line))])
}

#[tokio::test]
async fn chunk_is_acked_after_the_records_are_stored_even_when_split_across_reads() {
    let fx = start(ForwardOptions::default()).await;
    let mut s = TcpStream::connect(fx.addr).await.unwrap();
    let frame = Value::Array(vec![
        Value::from("app"),
        Value::Array(vec![
            Value::Array(vec![event_time_ext(1_700_000_000, 42), msg("one")]),
            Value::Array(vec![Value::from(1_700_000_001), msg("two")]),
        ]),
        Value::Map(vec![(Value::from("chunk"), Value::from("Y2h1bms="))]),
    ]);
    let bytes = enc(&frame);
    let (a, b) = bytes.split_at(bytes.len() / 2);
    s.write_all(a).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    s.write_all(b).await.unwrap();
    let ack = read_value(&mut s).await;
    assert_eq!(
        ack,
        Value::Map(vec![(Value::from("ack"), Value::from("Y2h1bms="))])
    );
    assert_eq!(
        fx.lines(),
        vec![
            (1_700_000_000_000_000_042, "one".into(), Some("app".into())),
            (1_700_000_001_000_000_000, "two".into(), Some("app".into()))
        ]
    );
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_connection() {
    let fx = start(ForwardOptions::default()).await;
    let mut good = TcpStream::connect(fx.addr).await.unwrap();
    let mut bad = TcpStream::connect(fx.addr).await.unwrap();
    bad.write_all(&enc(&Value::Array(vec![Value::from(1), Value::from(2)])))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        bad.read_to_end(&mut rest),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(n, 0, "server closed the bad connection without replying");
    let frame = Value::Array(vec![
        Value::from("t"),
        Value::from(1_700_000_000),
        msg("still fine"),
        Value::Map(vec![(Value::from("chunk"), Value::from("c"))]),
    ]);
    good.write_all(&enc(&frame)).await.unwrap();
    assert_eq!(
        read_value(&mut good).await.as_map().unwrap()[0].1.as_str(),
        Some("c")
    );
    assert_eq!(fx.lines().len(), 1);
}

fn sha512_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha512};
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the client side of the handshake as Fluentd's out_forward does; returns the PONG.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &str,
    user: &str,
    password: &str,
) -> Value {
    let helo = read_value(s).await;
    let opts = helo.as_array().unwrap()[1].as_map().unwrap().clone();
    let get = |k: &str| {
        opts.iter()
            .find(|(n, _)| n.as_str() == Some(k))
            .and_then(|(_, v)| v.as_slice())
            .unwrap()
            .to_vec()
    };
    let (nonce, auth_salt) = (get("nonce"), get("auth"));
    let password_digest = if auth_salt.is_empty() {
        String::new()
    } else {
        sha512_hex(&[&auth_salt, user.as_bytes(), password.as_bytes()])
    };
    let ping = Value::Array(vec![
        Value::from("PING"),
        Value::from("client"),
        Value::from("salt"),
        Value::from(sha512_hex(&[b"salt", b"client", &nonce, key.as_bytes()])),
        Value::from(user),
        Value::from(password_digest),
    ]);
    s.write_all(&enc(&ping)).await.unwrap();
    let pong = read_value(s).await;
    if pong.as_array().unwrap()[1] == Value::Boolean(true) {
        assert_eq!(
            pong.as_array().unwrap()[4].as_str(),
            Some(sha512_hex(&[b"salt", b"novamon", &nonce, key.as_bytes()]).as_str())
        );
    }
    pong
}

async fn send_acked<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, line: &str) {
    let frame = Value::Array(vec![
        Value::from("t"),
        Value::from(1_700_000_000),
        msg(line),
        Value::Map(vec![(Value::from("chunk"), Value::from("k"))]),
    ]);
    s.write_all(&enc(&frame)).await.unwrap();
    assert_eq!(
        read_value(s).await,
        Value::Map(vec![(Value::from("ack"), Value::from("k"))])
    );
}

#[tokio::test]
async fn shared_key_handshake_gates_the_connection() {
    let fx = start(ForwardOptions {
        shared_key: Some("secret".into()),
        ..Default::default()
    })
    .await;
    for (key, accepted) in [("secret", true), ("wrong", false)] {
        let mut s = TcpStream::connect(fx.addr).await.unwrap();
        let pong = handshake(&mut s, key, "", "").await;
        assert_eq!(
            pong.as_array().unwrap()[1],
            Value::Boolean(accepted),
            "{key}"
        );
        if accepted {
            send_acked(&mut s, "authed").await;
        } else {
            let mut rest = Vec::new();
            assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0, "not closed");
        }
    }
    assert_eq!(
        fx.lines().iter().map(|l| l.1.as_str()).collect::<Vec<_>>(),
        ["authed"]
    );
}

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/forward_tls")
        .join(name)
}

async fn tls_connect(
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(testdata("ca.pem")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

#[tokio::test]
async fn tls_with_user_auth_accepts_only_known_users_and_refuses_plain_tcp() {
    let fx = start(ForwardOptions {
        shared_key: Some("secret".into()),
        users: vec![ForwardUser {
            username: "ann".into(),
            password: "pw".into(),
        }],
        tls: Some(ForwardTls::load(&testdata("cert.pem"), &testdata("key.pem")).unwrap()),
        ..Default::default()
    })
    .await;
    for (user, password, accepted) in [
        ("ann", "pw", true),
        ("ann", "nope", false),
        ("bob", "pw", false),
    ] {
        let mut s = tls_connect(fx.addr).await.unwrap();
        let pong = handshake(&mut s, "secret", user, password).await;
        let pong = pong.as_array().unwrap();
        assert_eq!(pong[1], Value::Boolean(accepted), "{user}/{password}");
        if accepted {
            // A frame larger than one TLS record arrives in pieces and is still decoded whole.
            send_acked(&mut s, &"tls ".repeat(20_000)).await;
            send_acked(&mut s, "over tls").await;
        } else {
            assert_eq!(pong[2].as_str(), Some("username/password mismatch"));
        }
    }
    // A client speaking plain TCP gets no HELO, at most a TLS alert record (0x15), and EOF.
    let mut plain = TcpStream::connect(fx.addr).await.unwrap();
    plain.write_all(&enc(&Value::from("hello"))).await.unwrap();
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest).await;
    assert!(rest.is_empty() || rest[0] == 0x15, "{rest:?}");
    // Both records carry the same timestamp, so the store may return them in either order.
    let mut lines: Vec<String> = fx.lines().into_iter().map(|l| l.1).collect();
    lines.sort();
    assert_eq!(lines, ["over tls".to_owned(), "tls ".repeat(20_000)]);
}

#[test]
fn tls_files_that_do_not_load_are_errors_naming_the_file() {
    let missing = ForwardTls::load(&testdata("nope.pem"), &testdata("key.pem")).unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    // A key file given as the certificate holds no certificate.
    let swapped = ForwardTls::load(&testdata("key.pem"), &testdata("key.pem")).unwrap_err();
    assert!(matches!(swapped, TlsError::NoCertificate(_)), "{swapped}");
}

/// Reads until the server closes the connection (a deadline, not a sleep: the close is the
/// observable); returns what it sent first.
async fn closed_by_server(s: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the server did not close the connection")
        .unwrap();
    rest
}

/// A record the store would never return (time -1, or years ahead) is not acknowledged:
/// the frame is refused whole and the connection closed, so the sender keeps the chunk.
#[tokio::test]
async fn a_chunk_with_a_time_out_of_bounds_is_not_acked() {
    let day = std::time::Duration::from_secs(86_400);
    let fx = start_with_retention(ForwardOptions::default(), day).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ahead = now + 10 * 365 * 86_400;
    for time in [Value::from(-1), Value::from(ahead)] {
        let mut s = TcpStream::connect(fx.addr).await.unwrap();
        let frame = Value::Array(vec![
            Value::from("t"),
            Value::Array(vec![
                Value::Array(vec![Value::from(now), msg("fine")]),
                Value::Array(vec![time.clone(), msg("never found")]),
            ]),
            Value::Map(vec![(Value::from("chunk"), Value::from("c1"))]),
        ]);
        s.write_all(&enc(&frame)).await.unwrap();
        assert_eq!(closed_by_server(&mut s).await, b"", "{time:?} was acked");
    }
    assert!(fx.lines().is_empty());
}

/// A client that sends part of a frame and stalls gives its buffer back.
#[tokio::test]
async fn a_frame_stalled_midway_times_out() {
    let fx = start(ForwardOptions {
        frame_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(fx.addr).await.unwrap();
    let bytes = enc(&Value::Array(vec![
        Value::from("t"),
        Value::from(1_700_000_000),
        msg("half"),
    ]));
    s.write_all(&bytes[..bytes.len() / 2]).await.unwrap();
    assert_eq!(closed_by_server(&mut s).await, b"");
}

/// A client idle between frames gives its slot back: with one slot, a second client is
/// served once the first, which had a frame acked, times out.
#[tokio::test]
async fn a_connection_idle_between_frames_times_out() {
    let fx = start(ForwardOptions {
        max_connections: 1,
        idle_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let mut idle = TcpStream::connect(fx.addr).await.unwrap();
    send_acked(&mut idle, "first").await;
    let mut next = TcpStream::connect(fx.addr).await.unwrap();
    assert_eq!(closed_by_server(&mut idle).await, b"");
    send_acked(&mut next, "second").await;
    // Both frames carry the same time: their order in the store is not defined.
    let mut lines: Vec<_> = fx.lines().into_iter().map(|(_, l, _)| l).collect();
    lines.sort();
    assert_eq!(lines, ["first", "second"]);
}

/// With a shared key, a client that never sends PING gives its slot back: with one slot, a
/// second client is served once the first times out.
#[tokio::test]
async fn a_client_that_never_pings_times_out() {
    let fx = start(ForwardOptions {
        shared_key: Some("secret".into()),
        max_connections: 1,
        handshake_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let mut idle = TcpStream::connect(fx.addr).await.unwrap();
    read_value(&mut idle).await;
    let mut real = TcpStream::connect(fx.addr).await.unwrap();
    assert_eq!(closed_by_server(&mut idle).await, b"");
    let pong = handshake(&mut real, "secret", "", "").await;
    assert_eq!(pong.as_array().unwrap()[1], Value::Boolean(true));
}

/// A CompressedPackedForward frame of 390 KB held 2.8 GiB: the payload may decompress to
/// no more than its limit, and its entries are counted before any is decoded.
#[tokio::test]
async fn a_compressed_frame_of_tiny_entries_is_refused() {
    let fx = start(ForwardOptions {
        max_frame_entries: 1000,
        ..Default::default()
    })
    .await;
    let entry = enc(&Value::Array(vec![Value::from(1_700_000_000), Value::Nil]));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &entry.repeat(1001)).unwrap();
    let frame = Value::Array(vec![
        Value::from("t"),
        Value::Binary(gz.finish().unwrap()),
        Value::Map(vec![
            (Value::from("compressed"), Value::from("gzip")),
            (Value::from("chunk"), Value::from("c")),
        ]),
    ]);
    let mut s = TcpStream::connect(fx.addr).await.unwrap();
    s.write_all(&enc(&frame)).await.unwrap();
    assert_eq!(closed_by_server(&mut s).await, b"");
    assert!(fx.lines().is_empty());
}

#[test]
fn accept_failures_back_off_and_are_logged_at_most_once_a_minute() {
    let mut b = AcceptBackoff::default();
    let t0 = Instant::now();
    let mut delays = Vec::new();
    let mut logged = Vec::new();
    for i in 0..10 {
        let (d, log) = b.failed(t0 + Duration::from_millis(i));
        delays.push(d.as_millis());
        logged.push(log);
    }
    assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    assert_eq!(logged[0], Some(1));
    assert!(logged[1..].iter().all(Option::is_none));
    // A minute on, the next line carries the count of the failures in between.
    assert_eq!(b.failed(t0 + ACCEPT_LOG_INTERVAL).1, Some(10));
    b.succeeded();
    assert_eq!(b.failed(t0 + ACCEPT_LOG_INTERVAL).0, ACCEPT_BACKOFF_START);
}
