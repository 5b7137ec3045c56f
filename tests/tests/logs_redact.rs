//! `logs.redact` against the real binary: lines and structured metadata with secrets, sent
//! through Loki push and the forward protocol, are stored redacted, and each replacement is
//! counted per rule.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use e2e::{enc, now_ns, Novamon};
use rmpv::Value;
use serde_json::json;

const CONFIG: &str = r#"
logs:
  label_keys: [service]
  redact:
    presets: [credit_cards, bearer_tokens, url_passwords, emails]
    rules:
      - name: session
        regex: '(session=)[0-9a-f]+'
        replacement: '${1}<redacted>'
"#;

/// Every line of `selector` over the last hour, with its stream labels.
fn lines(n: &Novamon, selector: &str) -> Vec<String> {
    let start = now_ns() - 3_600 * 1_000_000_000;
    let body = n.get_ok(&format!(
        "/loki/api/v1/query_range?query={}&start={start}&limit=100&direction=forward",
        enc(selector)
    ));
    let mut out = Vec::new();
    for s in body["data"]["result"].as_array().expect("result") {
        for v in s["values"].as_array().expect("values") {
            out.push(v[1].as_str().expect("line").to_owned());
        }
    }
    out
}

fn forward_frame(stream: &mut TcpStream, line: &str, token: &str) {
    let record = Value::Map(vec![
        (Value::from("log"), Value::from(line)),
        (Value::from("service"), Value::from("fw")),
        (Value::from("auth"), Value::from(token)),
    ]);
    let frame = Value::Array(vec![
        Value::from("red"),
        Value::Array(vec![Value::Array(vec![
            Value::from(now_ns() / 1_000_000_000),
            record,
        ])]),
        Value::Map(vec![(Value::from("chunk"), Value::from("c1"))]),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &frame).expect("encode");
    stream.write_all(&out).expect("write frame");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = Vec::new();
    let ack = loop {
        let mut chunk = [0u8; 256];
        let n = stream.read(&mut chunk).expect("read ack");
        assert!(n > 0, "connection closed before the ack");
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(v) = rmpv::decode::read_value(&mut &buf[..]) {
            break v;
        }
    };
    assert_eq!(
        ack,
        Value::Map(vec![(Value::from("ack"), Value::from("c1"))])
    );
}

#[test]
fn secrets_pushed_through_loki_and_forward_are_stored_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("novamon.yml");
    std::fs::write(&config, CONFIG).expect("config");
    let n = Novamon::start(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("path")],
    );
    let ts = now_ns().to_string();
    n.loki_push(&json!({"streams": [{
        "stream": {"service": "push", "owner": "ops@example.com"},
        "values": [
            [ts, "paid with 4111 1111 1111 1111 order 4111111111111112", {"user": "jane@example.com"}],
            [ts, "GET /x Authorization: Bearer abcdef123456 session=9f8e7d"],
            [ts, "nothing secret here"],
        ],
    }]}));
    let mut s = TcpStream::connect(&n.forward_addr).expect("connect forward");
    forward_frame(
        &mut s,
        "connecting to postgres://app:hunter22@db.internal:5432/x",
        "Bearer zyxwvu987654",
    );

    n.wait_for_log_lines(
        r#"{service="push"}"#,
        now_ns() - 3_600 * 1_000_000_000,
        None,
        3,
    );
    let mut got = lines(&n, r#"{service="push"}"#);
    got.sort();
    assert_eq!(
        got,
        [
            "GET /x Authorization: Bearer <redacted> session=<redacted>",
            "nothing secret here",
            "paid with <redacted> order 4111111111111112",
        ]
    );
    // Structured metadata is redacted; the stream labels are not (they are its identity).
    assert_eq!(
        lines(
            &n,
            r#"{service="push", owner="ops@example.com"} | user="<redacted>""#
        )
        .len(),
        1
    );

    n.wait_for_log_lines(
        r#"{service="fw"}"#,
        now_ns() - 3_600 * 1_000_000_000,
        None,
        1,
    );
    assert_eq!(
        lines(&n, r#"{service="fw"} | auth="Bearer <redacted>""#),
        ["connecting to postgres://app:<redacted>@db.internal:5432/x"]
    );

    for (rule, want) in [
        ("credit_cards", 1.0),
        ("bearer_tokens", 2.0),
        ("url_passwords", 1.0),
        ("emails", 1.0),
        ("session", 1.0),
    ] {
        let series = format!("novamon_log_redactions_total{{rule=\"{rule}\"}}");
        assert_eq!(n.metric(&series), Some(want), "{series}");
    }
}
