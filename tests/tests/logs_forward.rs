//! Logs in through the Fluentd forward protocol, out through the Loki API, against the real
//! binary: the real Python `fluent-logger` client, hand-built frames of all four modes with
//! `chunk` acks and EventTime, the shared-key handshake, and kill -9 after acks.
//!
//! Needs the venv `tests/run.sh` creates (with `fluent-logger`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use e2e::{enc, now_ns, venv_python, wait_until, Json, Novamon};
use rmpv::Value;

/// The log store's start-up line, up to how many records it indexed from its append log.
const REPLAYED: &str = "indexed records left in the append log records=";

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("encode");
    out
}

fn read_reply(s: &mut TcpStream) -> Value {
    let mut buf = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).expect("read reply");
        assert!(n > 0, "connection closed before the reply");
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(v) = rmpv::decode::read_value(&mut &buf[..]) {
            return v;
        }
    }
}

fn event_time(ns: i64) -> Value {
    let mut b = ((ns / 1_000_000_000) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(&((ns % 1_000_000_000) as u32).to_be_bytes());
    Value::Ext(0, b)
}

fn record(line: &str) -> Value {
    Value::Map(vec![
        (Value::from("log"), Value::from(line)),
        (Value::from("level"), Value::from("info")),
    ])
}

fn chunk_opt(chunk: &str) -> Value {
    Value::Map(vec![(Value::from("chunk"), Value::from(chunk))])
}

/// Lines of `{tag="<tag>"}` over the last two hours, oldest first.
fn lines(n: &Novamon, selector: &str) -> Vec<(String, String)> {
    let start = now_ns() - 7_200 * 1_000_000_000;
    let end = now_ns() + 60 * 1_000_000_000;
    let (status, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?query={}&start={start}&end={end}&limit=5000&direction=forward",
        enc(selector)
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "streams");
    let mut out = Vec::new();
    for s in body["data"]["result"].as_array().expect("result") {
        for v in s["values"].as_array().expect("values") {
            out.push((
                v[0].as_str().expect("ts").to_owned(),
                v[1].as_str().expect("line").to_owned(),
            ));
        }
    }
    out.sort();
    out
}

fn wait_lines(n: &Novamon, selector: &str, want: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    wait_until(Duration::from_secs(30), || {
        got = lines(n, selector);
        got.len() >= want
    });
    got
}

#[test]
fn python_fluent_logger_records_are_queryable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Novamon::start(&dir.path().join("data"), &[]);
    let (host, port) = n.forward_addr.split_once(':').expect("addr");
    let script = format!(
        r#"
from fluent import sender
s = sender.FluentSender('py', host='{host}', port={port}, nanosecond_precision=True)
assert s.emit('web', {{'log': 'hello from fluent-logger', 'level': 'warn', 'user': 'ann'}}), s.last_error
assert s.emit('web', {{'message': 'second', 'service': 'checkout'}}), s.last_error
s.close()
s = sender.FluentSender('py', host='{host}', port={port})
assert s.emit('int', {{'a': 1}}), s.last_error
s.close()
"#
    );
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_lines(&n, r#"{tag=~"py.*"}"#, 3);
    // The third record has whole-second time (no nanosecond_precision), so sort by line.
    let mut texts: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(
        texts,
        ["hello from fluent-logger", "second", r#"{"a":1}"#],
        "{got:?}"
    );
    assert!(
        got.iter().any(|(ts, _)| !ts.ends_with("000000000")),
        "EventTime from the client keeps nanoseconds"
    );
    // Chosen keys became stream labels; other fields are structured metadata, filterable.
    let (_, body) = n.get_json(&format!(
        "/loki/api/v1/query_range?query={}&limit=10",
        enc(r#"{tag="py.web", level="warn"} | user="ann""#)
    ));
    let result = &body["data"]["result"];
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(result[0]["stream"]["tag"], "py.web");
    let (_, body) = n.get_json("/loki/api/v1/label/service/values");
    assert_eq!(body["data"], Json::from(vec!["checkout"]));
}

#[test]
fn all_four_modes_ack_after_storing_and_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut n = Novamon::start(&data, &[]);
    let base = now_ns() - 600 * 1_000_000_000;
    let mut s = TcpStream::connect(&n.forward_addr).expect("connect");
    let t = |i: i64| base + i * 1_000_000_007;
    let mut frames = vec![
        // Message mode, EventTime.
        Value::Array(vec![
            Value::from("m.msg"),
            event_time(t(0)),
            record("message mode"),
            chunk_opt("c0"),
        ]),
        // Forward mode, integer time and EventTime.
        Value::Array(vec![
            Value::from("m.fwd"),
            Value::Array(vec![
                Value::Array(vec![Value::from(t(1) / 1_000_000_000), record("forward 1")]),
                Value::Array(vec![event_time(t(2)), record("forward 2")]),
            ]),
            chunk_opt("c1"),
        ]),
    ];
    let mut packed = Vec::new();
    for i in 3..6 {
        packed.extend(encode(&Value::Array(vec![
            event_time(t(i)),
            record(&format!("packed {i}")),
        ])));
    }
    frames.push(Value::Array(vec![
        Value::from("m.packed"),
        Value::Binary(packed.clone()),
        chunk_opt("c2"),
    ]));
    let mut gz = gzip(&packed);
    frames.push(Value::Array(vec![
        Value::from("m.gzip"),
        Value::Binary(std::mem::take(&mut gz)),
        Value::Map(vec![
            (Value::from("compressed"), Value::from("gzip")),
            (Value::from("chunk"), Value::from("c3")),
        ]),
    ]));
    for (i, f) in frames.iter().enumerate() {
        s.write_all(&encode(f)).expect("send");
        let ack = read_reply(&mut s);
        assert_eq!(
            ack,
            Value::Map(vec![(Value::from("ack"), Value::from(format!("c{i}")))])
        );
    }
    // Everything above is acknowledged: a crash now must lose nothing.
    n.process.signal_and_wait("KILL", Duration::from_secs(10));
    let mut n = Novamon::start(&data, &[]);
    // The start-up replay of the append log (which could index a record twice) is done.
    let replayed = n
        .process
        .wait_for_log_values(&[REPLAYED], Duration::from_secs(30));
    let got = wait_lines(&n, r#"{tag=~"m\\..+"}"#, 9);
    assert_eq!(
        got.len(),
        9,
        "nothing lost, nothing duplicated (replayed {replayed:?}): {got:?}"
    );
    assert_eq!(got[0], (t(0).to_string(), "message mode".to_owned()));
    assert_eq!(got[2].0, t(2).to_string(), "EventTime keeps nanoseconds");
    assert_eq!(
        got[1].0,
        (t(1) / 1_000_000_000 * 1_000_000_000).to_string(),
        "integer time is seconds"
    );
    let packed_lines = got.iter().filter(|(_, l)| l.starts_with("packed")).count();
    assert_eq!(
        packed_lines, 6,
        "PackedForward and its gzip twin both stored"
    );
    // A restart after a clean shutdown does not index anything twice either: the restarted
    // store reports its start-up replay of the append log as done with nothing re-indexed
    // (after it, the indexer only reads records appended later, and there are none).
    let status = n.process.signal_and_wait("TERM", Duration::from_secs(30));
    assert!(status.success(), "log:\n{}", n.process.log());
    let mut n = Novamon::start(&data, &[]);
    let replayed = n
        .process
        .wait_for_log_values(&[REPLAYED], Duration::from_secs(30));
    assert_eq!(replayed, ["0"], "log:\n{}", n.process.log());
    assert_eq!(lines(&n, r#"{tag=~"m\\..+"}"#).len(), 9);
}

/// Gzip via the system's `gzip` tool.
fn gzip(b: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b)
        .expect("write");
    child.wait_with_output().expect("gzip output").stdout
}

#[test]
fn shared_key_handshake_and_malformed_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("novamon.yml");
    std::fs::write(
        &cfg,
        "logs:\n  forward:\n    shared_key: s3cret\n    self_hostname: collector\n",
    )
    .expect("config");
    let n = Novamon::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().expect("utf-8")],
    );
    let mut s = TcpStream::connect(&n.forward_addr).expect("connect");
    let helo = read_reply(&mut s);
    let helo = helo.as_array().expect("HELO array");
    assert_eq!(helo[0].as_str(), Some("HELO"));
    let nonce = helo[1].as_map().expect("options")[0]
        .1
        .as_slice()
        .expect("nonce")
        .to_vec();
    let digest = sha512_hex(&[b"salt", b"client", &nonce, b"s3cret"]);
    let ping = Value::Array(vec![
        Value::from("PING"),
        Value::from("client"),
        Value::from("salt"),
        Value::from(digest),
        Value::from(""),
        Value::from(""),
    ]);
    s.write_all(&encode(&ping)).expect("ping");
    let pong = read_reply(&mut s);
    let pong = pong.as_array().expect("PONG");
    assert_eq!(
        (pong[0].as_str(), &pong[1], pong[3].as_str()),
        (Some("PONG"), &Value::Boolean(true), Some("collector"))
    );
    assert_eq!(
        pong[4].as_str(),
        Some(sha512_hex(&[b"salt", b"collector", &nonce, b"s3cret"]).as_str())
    );
    let now = now_ns();
    s.write_all(&encode(&Value::Array(vec![
        Value::from("hs"),
        event_time(now),
        record("after handshake"),
        chunk_opt("k"),
    ])))
    .expect("frame");
    read_reply(&mut s);
    // A malformed frame closes that connection only.
    s.write_all(&encode(&Value::Array(vec![Value::from(1), Value::from(2)])))
        .expect("bad frame");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0), 0);
    assert_eq!(wait_lines(&n, r#"{tag="hs"}"#, 1).len(), 1);
    wait_until(Duration::from_secs(10), || {
        n.process.log().contains("malformed frame")
    })
    .unwrap_or_else(|| {
        panic!(
            "no log line about the malformed frame:\n{}",
            n.process.log()
        )
    });
}

/// SHA-512 through Python's hashlib (the venv is there anyway): no hash crate in the tests.
fn sha512_hex(parts: &[&[u8]]) -> String {
    let hex: Vec<String> = parts
        .iter()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let script = format!(
        "import hashlib\nprint(hashlib.sha512(b''.join(bytes.fromhex(h) for h in {hex:?})).hexdigest())"
    );
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .output()
        .expect("python");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// fluent-logger (the Fluentd project's Python client) over TLS with the shared-key handshake
/// and user/password authentication; the library offers neither, so the socket it sends on is
/// opened by Python's ssl and the handshake is run as Fluentd's out_forward does.
#[test]
fn python_fluent_logger_over_tls_with_user_auth() {
    let tls =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ingest/testdata/forward_tls");
    let file = |name: &str| tls.join(name).to_str().expect("utf-8").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("novamon.yml");
    std::fs::write(
        &cfg,
        format!(
            "logs:\n  forward:\n    shared_key: s3cret\n    users:\n      - {{username: ann, password: pw1}}\n    tls: {{cert_file: {}, key_file: {}}}\n",
            file("cert.pem"),
            file("key.pem")
        ),
    )
    .expect("config");
    let n = Novamon::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().expect("utf-8")],
    );
    let (host, port) = n.forward_addr.split_once(':').expect("addr");
    let script = format!(
        r#"
import hashlib, socket, ssl, msgpack
from fluent import sender

class TlsAuthSender(sender.FluentSender):
    def __init__(self, tag, user, password, **kw):
        super().__init__(tag, **kw)
        self.user, self.password = user, password

    def _reconnect(self):
        if self.socket:
            return
        ctx = ssl.create_default_context(cafile={ca:?})
        sock = ctx.wrap_socket(socket.create_connection((self.host, self.port), timeout=self.timeout), server_hostname='localhost')
        unpacker = msgpack.Unpacker(raw=False)
        def read():
            while True:
                for v in unpacker:
                    return v
                data = sock.recv(4096)
                if not data:
                    raise OSError('closed during the handshake')
                unpacker.feed(data)
        helo = read()
        assert helo[0] == 'HELO', helo
        nonce, auth = helo[1]['nonce'], helo[1]['auth']
        h = lambda *p: hashlib.sha512(b''.join(p)).hexdigest()
        salt, me = b'pysalt', b'pyclient'
        sock.sendall(msgpack.packb(['PING', me, salt, h(salt, me, nonce, b's3cret'),
                                    self.user, h(auth, self.user.encode(), self.password.encode())]))
        pong = read()
        if not pong[1]:
            sock.close()
            raise OSError('refused: ' + pong[2])
        assert pong[4] == h(salt, pong[3].encode(), nonce, b's3cret'), pong
        self.socket = sock

    def _check_recv_side(self):
        try:
            super()._check_recv_side()
        except ssl.SSLWantReadError:
            pass

good = TlsAuthSender('tls', 'ann', 'pw1', host='{host}', port={port}, nanosecond_precision=True)
for i in range(3):
    assert good.emit('app', {{'log': 'secure line %d' % i}}), good.last_error
good.close()
bad = TlsAuthSender('tls', 'ann', 'wrong', host='{host}', port={port})
assert not bad.emit('app', {{'log': 'must not arrive'}})
print('bad:', bad.last_error)
"#,
        ca = file("ca.pem")
    );
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("bad: refused: username/password mismatch"),
        "{stdout}"
    );
    let got = wait_lines(&n, r#"{tag="tls.app"}"#, 3);
    let mut texts: Vec<&str> = got.iter().map(|(_, l)| l.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(texts, ["secure line 0", "secure line 1", "secure line 2"]);
    wait_until(Duration::from_secs(10), || {
        n.process.log().contains("username/password mismatch")
    })
    .unwrap_or_else(|| panic!("no log line about the refused user:\n{}", n.process.log()));
}
