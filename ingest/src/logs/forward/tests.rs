use super::*;
use frame::tests::event_time_ext;
use std::ops::ControlFlow;
use storage::logs::{Direction, LogOptions, LogQuery, LogStore};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<LogStore>,
    addr: std::net::SocketAddr,
}

async fn start(opts: ForwardOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let opts_long = LogOptions {
        retention: std::time::Duration::from_secs(100 * 365 * 86_400),
        ..Default::default()
    };
    let store = Arc::new(LogStore::open(dir.path(), opts_long).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        LogSink::new(store.clone(), Default::default()),
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

async fn read_value(s: &mut TcpStream) -> Value {
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

#[tokio::test]
async fn shared_key_handshake_gates_the_connection() {
    let fx = start(ForwardOptions {
        shared_key: Some("secret".into()),
        ..Default::default()
    })
    .await;
    for (key, accepted) in [("secret", true), ("wrong", false)] {
        let mut s = TcpStream::connect(fx.addr).await.unwrap();
        let helo = read_value(&mut s).await;
        let nonce = helo.as_array().unwrap()[1].as_map().unwrap()[0]
            .1
            .as_slice()
            .unwrap()
            .to_vec();
        use sha2::{Digest, Sha512};
        let digest: String = Sha512::new()
            .chain_update(b"salt")
            .chain_update(b"client")
            .chain_update(&nonce)
            .chain_update(key.as_bytes())
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let ping = Value::Array(vec![
            Value::from("PING"),
            Value::from("client"),
            Value::from("salt"),
            Value::from(digest),
            Value::from(""),
            Value::from(""),
        ]);
        s.write_all(&enc(&ping)).await.unwrap();
        let pong = read_value(&mut s).await;
        assert_eq!(
            pong.as_array().unwrap()[1],
            Value::Boolean(accepted),
            "{key}"
        );
        if accepted {
            let frame = Value::Array(vec![
                Value::from("t"),
                Value::from(1_700_000_000),
                msg("authed"),
                Value::Map(vec![(Value::from("chunk"), Value::from("k"))]),
            ]);
            s.write_all(&enc(&frame)).await.unwrap();
            read_value(&mut s).await;
        }
    }
    assert_eq!(
        fx.lines().iter().map(|l| l.1.as_str()).collect::<Vec<_>>(),
        ["authed"]
    );
}
