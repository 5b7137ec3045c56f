//! The web config file (`--web.config.file`, Prometheus's exporter-toolkit format) on the
//! real binary: basic auth and bearer tokens with roles, TLS and mutual TLS (certificates made
//! with the openssl CLI), Prometheus remote-writing with basic_auth and tls_config, OTLP/gRPC
//! refusing calls without credentials, spans forwarded over OTLP/gRPC to a receiver with TLS
//! and basic auth, reload on SIGHUP (credentials, and certificates without dropping open
//! connections), and the header read timeout closing a slowloris connection.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::pki::Pki;
use e2e::{novamon_bin, now_ns, wait_for_go_listen_url, wait_until, Json, Novamon, Process};
use e2e::{spawn_prometheus, PROMETHEUS};
use serde_json::json;

/// novamon with every listener on port 0, started with `args`; returns the process and the
/// bound HTTP, OTLP/gRPC and OTLP/HTTP addresses.
fn start(dir: &Path, args: &[&str]) -> (Process, [String; 3]) {
    let mut cmd = Command::new(novamon_bin());
    cmd.arg("--data-dir").arg(dir.join("data"));
    for flag in [
        "--http-listen",
        "--otlp-grpc-listen",
        "--otlp-http-listen",
        "--forward-listen",
    ] {
        cmd.arg(flag).arg("127.0.0.1:0");
    }
    cmd.args(args);
    let mut p = Process::spawn(&mut cmd, dir.join("novamon.log"));
    let a = p.wait_for_log_values(
        &[
            " HTTP listening addr=",
            " OTLP/gRPC listening addr=",
            " OTLP/HTTP listening addr=",
        ],
        Duration::from_secs(60),
    );
    (p, [a[0].clone(), a[1].clone(), a[2].clone()])
}

/// curl's answer: (exit code, status, response headers, body). `-w` puts the status last.
fn curl(args: &[&str]) -> (i32, u16, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-D",
            "/dev/stderr",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        body.to_owned(),
    )
}

fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

#[test]
fn tls_basic_auth_bearer_tokens_roles_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let web = pki.web_config(&format!(
        "http_server_config:
  headers:
    X-Frame-Options: deny
basic_auth_users:
  admin: '{}'
  reader: '{}'
bearer_tokens:
  reader-token: reader
roles:
  reader: [read]
",
        hash("admin-pw"),
        hash("reader-pw")
    ));
    let (mut p, [http, _, otlp_http]) =
        start(dir.path(), &["--web.config.file", web.to_str().unwrap()]);
    let url = |path: &str| format!("https://{http}{path}");
    let ca = pki.path("ca.crt");
    let tls = ["--cacert", ca.as_str()];

    // Health is open; the rest asks for credentials, exporter-toolkit's 401.
    let (rc, status, headers, body) = curl(&[&tls[..], &[&url("/-/healthy")]].concat());
    assert_eq!((rc, status), (0, 200), "{headers}{body}\n{}", p.log());
    assert!(headers.contains("x-frame-options: deny"), "{headers}");
    for creds in [&[][..], &["-u", "admin:wrong"], &["-u", "nobody:admin-pw"]] {
        let (_, status, headers, body) =
            curl(&[&tls[..], creds, &[&url("/api/v1/query?query=1")]].concat());
        assert_eq!(status, 401, "{creds:?}: {headers}{body}");
        assert!(headers.contains("www-authenticate: Basic"), "{headers}");
        assert_eq!(body, "Unauthorized\n");
        assert!(headers.contains("x-frame-options: deny"), "{headers}");
    }
    // The reader reads, with a password or its token, and is refused writes and reloads.
    let (_, status, _, body) = curl(
        &[
            &tls[..],
            &["-u", "reader:reader-pw", &url("/api/v1/query?query=1")],
        ]
        .concat(),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"success\""), "{body}");
    let (_, status, _, body) = curl(
        &[
            &tls[..],
            &[
                "-H",
                "Authorization: Bearer reader-token",
                &url("/api/v1/query?query=1"),
            ],
        ]
        .concat(),
    );
    assert_eq!(status, 200, "{body}");
    let (_, status, _, _) = curl(
        &[
            &tls[..],
            &["-H", "Authorization: Bearer not-a-token", &url("/metrics")],
        ]
        .concat(),
    );
    assert_eq!(status, 401);
    for (method, path) in [
        ("POST", "/api/v1/write"),
        ("POST", "/-/reload"),
        ("POST", "/api/v2/silences"),
        ("PUT", "/metrics/job/batch"),
        ("DELETE", "/es/logs-*"),
    ] {
        let (_, status, headers, body) = curl(
            &[
                &tls[..],
                &[
                    "-u",
                    "reader:reader-pw",
                    "-X",
                    method,
                    "--data",
                    "x",
                    &url(path),
                ],
            ]
            .concat(),
        );
        assert_eq!(status, 403, "{method} {path}: {headers}{body}");
        assert_eq!(body, "Forbidden\n");
        assert!(!headers.contains("www-authenticate"), "{headers}");
    }
    // A user without a roles entry has every role.
    let (_, status, _, body) = curl(
        &[
            &tls[..],
            &["-u", "admin:admin-pw", "-X", "POST", &url("/-/reload")],
        ]
        .concat(),
    );
    assert_eq!(status, 200, "{body}");
    // The OTLP/HTTP listener speaks TLS and needs the write role.
    let otlp = format!("https://{otlp_http}/v1/traces");
    let post = [
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        "{}",
    ];
    let (_, status, _, _) = curl(&[&tls[..], &post, &[&otlp]].concat());
    assert_eq!(status, 401);
    let (_, status, _, _) = curl(&[&tls[..], &post, &["-u", "reader:reader-pw", &otlp]].concat());
    assert_eq!(status, 403);
    let (_, status, _, body) = curl(&[&tls[..], &post, &["-u", "admin:admin-pw", &otlp]].concat());
    assert_eq!(status, 200, "{body}");
    // Without the CA the server is not trusted; without TLS there is no answer.
    let (rc, _, _, _) = curl(&[&url("/-/healthy")]);
    assert_eq!(rc, 60, "curl: certificate not trusted");
    let (rc, status, _, _) = curl(&[&format!("http://{http}/-/healthy")]);
    assert!(rc != 0 || status != 200, "plain HTTP must not be served");
    p.signal_and_wait("TERM", Duration::from_secs(60));
}

#[test]
fn mutual_tls_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let web = pki.web_config(
        "  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS12
",
    );
    let (_p, [http, _, _]) = start(dir.path(), &["--web.config.file", web.to_str().unwrap()]);
    let url = format!("https://{http}/api/v1/query?query=1");
    let ca = pki.path("ca.crt");
    let (rc, status, _, _) = curl(&["--cacert", &ca, &url]);
    assert!(
        rc != 0 && status == 0,
        "no client certificate: refused ({rc})"
    );
    let (rc, status, _, body) = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &pki.path("client.crt"),
        "--key",
        &pki.path("client.key"),
        &url,
    ]);
    assert_eq!((rc, status), (0, 200), "{body}");
    // A certificate the CA did not sign is refused: the server's own is not a client's.
    let other = tempfile::tempdir().unwrap();
    let stranger = Pki::new(other.path());
    let (rc, status, _, _) = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &stranger.path("client.crt"),
        "--key",
        &stranger.path("client.key"),
        &url,
    ]);
    assert!(
        rc != 0 && status == 0,
        "foreign client certificate: refused ({rc})"
    );
}

#[test]
fn prometheus_remote_writes_with_basic_auth_over_tls() {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "the prometheus package is required"
    );
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let web = pki.web_config(&format!(
        "basic_auth_users:
  prom: '{}'
  grafana: '{}'
roles:
  prom: [write]
  grafana: [read]
",
        hash("prom-pw"),
        hash("grafana-pw")
    ));
    let (_novamon, [http, _, _]) = start(dir.path(), &["--web.config.file", web.to_str().unwrap()]);
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:
  scrape_interval: 1s
  external_labels: {{origin: webauth}}
remote_write:
  - url: https://{http}/api/v1/write
    basic_auth: {{username: prom, password: prom-pw}}
    tls_config: {{ca_file: {}}}
    queue_config: {{batch_send_deadline: 1s}}
",
            pki.path("ca.crt")
        ),
    )
    .unwrap();
    let mut prom = spawn_prometheus(dir.path(), &config, "127.0.0.1:0", &[]);
    let prom_url = wait_for_go_listen_url(&mut prom);
    // Prometheus scrapes itself only once told to; its own TSDB metrics, written through
    // remote-write, are enough: they are sent as soon as the WAL has any sample. Give it a
    // scrape job by reloading with one.
    std::fs::write(
        &config,
        format!(
            "{}scrape_configs:
  - job_name: prom
    static_configs: [{{targets: ['{}']}}]
",
            std::fs::read_to_string(&config).unwrap(),
            prom_url.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let reload = Command::new("kill")
        .args(["-HUP", &prom.pid().to_string()])
        .status()
        .unwrap();
    assert!(reload.success());
    let query = format!("https://{http}/api/v1/query?query=up%7Borigin%3D%22webauth%22%7D");
    let ca = pki.path("ca.crt");
    wait_until(Duration::from_secs(90), || {
        let (_, status, _, body) = curl(&["--cacert", &ca, "-u", "grafana:grafana-pw", &query]);
        status == 200 && body.contains("\"__name__\":\"up\"")
    })
    .unwrap_or_else(|| panic!("no remote-written samples; prometheus log:\n{}", prom.log()));
    // The writer cannot read.
    let (_, status, _, _) = curl(&["--cacert", &ca, "-u", "prom:prom-pw", &query]);
    assert_eq!(status, 403);
}

#[test]
fn otlp_grpc_needs_credentials() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:
  reader: '{}'
bearer_tokens:
  write-token: collector
  read-token: reader
roles:
  reader: [read]
",
            hash("pw")
        ),
    )
    .unwrap();
    let (_p, [_, grpc, _]) = start(dir.path(), &["--web.config.file", web.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        let call = |token: Option<&str>| {
            let mut req = tonic::Request::new(ExportTraceServiceRequest::default());
            if let Some(t) = token {
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            req
        };
        let err = client.export(call(None)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        let err = client.export(call(Some("wrong"))).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        let err = client.export(call(Some("read-token"))).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        client
            .export(call(Some("write-token")))
            .await
            .expect("a user without a roles entry writes");
    });
}

#[test]
fn sighup_reloads_the_web_config() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    let write = |password: &str| {
        std::fs::write(
            &web,
            format!("basic_auth_users:\n  alice: '{}'\n", hash(password)),
        )
        .unwrap();
    };
    write("old-pw");
    let (mut p, [http, _, _]) = start(dir.path(), &["--web.config.file", web.to_str().unwrap()]);
    let url = format!("http://{http}/api/v1/query?query=1");
    assert_eq!(curl(&["-u", "alice:old-pw", &url]).1, 200);
    // A bad file is refused and the running config stays.
    std::fs::write(&web, "basic_auth_users:\n  alice: not-a-hash\n").unwrap();
    let (_, status, _, body) = curl(&[
        "-u",
        "alice:old-pw",
        "-X",
        "POST",
        &format!("http://{http}/-/reload"),
    ]);
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("basic_auth_users: alice"), "{body}");
    assert_eq!(curl(&["-u", "alice:old-pw", &url]).1, 200);
    write("new-pw");
    let hup = Command::new("kill")
        .args(["-HUP", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until(Duration::from_secs(30), || {
        curl(&["-u", "alice:new-pw", &url]).1 == 200
    })
    .unwrap_or_else(|| panic!("new password not accepted after SIGHUP:\n{}", p.log()));
    assert_eq!(curl(&["-u", "alice:old-pw", &url]).1, 401);
    p.signal_and_wait("TERM", Duration::from_secs(60));
}

/// A new certificate on SIGHUP: new connections get it, and a keep-alive connection opened
/// with the old one keeps being served.
#[test]
fn sighup_swaps_the_certificate_without_dropping_connections() {
    use std::io::BufRead;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    let (old, new) = (Pki::new(&old), Pki::new(&new));
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let install = |pki: &Pki| {
        for f in ["server.crt", "server.key"] {
            std::fs::copy(pki.path(f), live.join(f)).unwrap();
        }
    };
    install(&old);
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {0}/server.crt\n  key_file: {0}/server.key\n",
            live.display()
        ),
    )
    .unwrap();
    let config = dir.path().join("novamon.yml");
    // Keep-alive connections outlive the wait for the reload.
    std::fs::write(&config, "limits:\n  http_header_read_timeout: 5m\n").unwrap();
    let (mut p, [http, _, _]) = start(
        dir.path(),
        &[
            "--web.config.file",
            web.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let url = format!("https://{http}/-/healthy");
    let healthy_with = |ca: &Pki| curl(&["--cacert", &ca.path("ca.crt"), &url]).1 == 200;
    assert!(healthy_with(&old));

    // One keep-alive TLS connection, through openssl s_client, its answers read line by line.
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &http, "-CAfile"])
        .arg(old.path("ca.crt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to_server = client.stdin.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let from_server = std::io::BufReader::new(client.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in from_server.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ask = || {
        to_server
            .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        to_server.flush().unwrap();
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("no answer on the kept connection");
            if line.starts_with("Prometheus Server is Healthy.") {
                return;
            }
        }
    };
    ask();

    install(&new);
    let hup = Command::new("kill")
        .args(["-HUP", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until(Duration::from_secs(30), || healthy_with(&new))
        .unwrap_or_else(|| panic!("new certificate not served after SIGHUP:\n{}", p.log()));
    assert!(
        !healthy_with(&old),
        "new connections still get the old certificate"
    );
    // The connection opened before the reload is still served.
    ask();
    drop(to_server);
    let _ = client.kill();
    let _ = client.wait();
    p.signal_and_wait("TERM", Duration::from_secs(60));
}

#[test]
fn slowloris_connection_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("novamon.yml");
    std::fs::write(&config, "limits:\n  http_header_read_timeout: 1s\n").unwrap();
    let (_p, [http, _, _]) = start(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut conn = std::net::TcpStream::connect(&http).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // One byte every 100 ms of a header that never ends: far longer than the timeout.
    let header = format!(
        "GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
        "a".repeat(600)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut closed = false;
    for b in header.bytes() {
        if conn.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match conn.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        assert!(Instant::now() < deadline, "connection still open after 30s");
    }
    assert!(
        closed,
        "the whole slow header was read without the connection closing"
    );
    // The listener still serves others.
    assert_eq!(curl(&[&format!("http://{http}/-/healthy")]).1, 200);
}

#[test]
fn check_config_refuses_a_bad_web_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  alice: plain-text\n").unwrap();
    let config = dir.path().join("novamon.yml");
    std::fs::write(
        &config,
        format!("listeners:\n  web_config: {}\n", web.display()),
    )
    .unwrap();
    let (code, stderr) = e2e::check_config(&config);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "web config file {}: basic_auth_users: alice",
            web.display()
        )),
        "{stderr}"
    );
    std::fs::write(
        &web,
        format!("basic_auth_users:\n  alice: '{}'\n", hash("pw")),
    )
    .unwrap();
    let (code, stderr) = e2e::check_config(&config);
    assert_eq!(code, Some(0), "{stderr}");
}

/// The accept loop's shutdown: on SIGTERM the listener closes, a request already being
/// received completes with its answer, and the process exits 0.
#[test]
fn sigterm_drains_a_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, [http, _, _]) = start(dir.path(), &[]);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let body =
        format!(r#"{{"streams":[{{"stream":{{"job":"drain"}},"values":[["{now_ns}","line"]]}}]}}"#);
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = std::net::TcpStream::connect(&http).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The 100 Continue says the handler is reading the body: the request is in flight.
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 100 Continue"), "{head}");
    conn.write_all(first.as_bytes()).unwrap();
    let term = Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    wait_until(Duration::from_secs(30), || {
        std::net::TcpStream::connect(&http).is_err()
    })
    .unwrap_or_else(|| panic!("listener still accepting after SIGTERM:\n{}", p.log()));
    conn.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}\n{}", p.log());
    let status = p.signal_and_wait("TERM", Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", p.log());
}

/// Spans forwarded over OTLP/gRPC to a receiver serving TLS and basic auth (its web config):
/// the destination that trusts the receiver's CA and sends its credentials delivers every
/// span; one that does not trust the CA delivers nothing and retries (a handshake failure is
/// the link's, not the data's); one with a wrong password is refused, UNAUTHENTICATED, and
/// drops and counts the spans as the OpenTelemetry Collector does.
#[test]
fn spans_go_out_over_otlp_grpc_with_tls_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let web = pki.web_config(&format!(
        "basic_auth_users:\n  edge: '{}'\n",
        hash("edge-pw")
    ));
    let receiver_dir = dir.path().join("receiver");
    std::fs::create_dir_all(&receiver_dir).unwrap();
    let (receiver, [http, grpc, _]) =
        start(&receiver_dir, &["--web.config.file", web.to_str().unwrap()]);
    assert!(
        receiver
            .log()
            .contains(&format!("OTLP/gRPC listening addr={grpc} tls=true")),
        "{}",
        receiver.log()
    );

    let ca = pki.path("ca.crt");
    let quick = "{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 400ms}";
    let destination = |name: &str, password: &str, tls: &str| {
        format!(
            "    - {{name: {name}, protocol: otlp_grpc, url: 'https://{grpc}', \
             basic_auth: {{username: edge, password: {password}}}, tls_config: {{{tls}}}, \
             queue_config: {quick}}}\n"
        )
    };
    let sender_dir = dir.path().join("sender");
    std::fs::create_dir_all(&sender_dir).unwrap();
    let config = sender_dir.join("novamon.yml");
    std::fs::write(
        &config,
        [
            "forward:\n  traces:\n".to_owned(),
            destination("central", "edge-pw", &format!("ca_file: '{ca}'")),
            destination("untrusted", "edge-pw", ""),
            destination("wrong_password", "nope", &format!("ca_file: '{ca}'")),
        ]
        .concat(),
    )
    .unwrap();
    let sender = Novamon::start(
        &sender_dir.join("data"),
        &["--config", config.to_str().unwrap()],
    );

    let trace = "6bf92f3577b34da6a3ce929d0e0e4736";
    let now = now_ns();
    let spans: Vec<Json> = (0..20)
        .map(|i| {
            json!({"traceId": trace, "spanId": format!("{:016x}", i + 1), "name": format!("op{i}"),
                   "kind": 2, "startTimeUnixNano": (now + i).to_string(),
                   "endTimeUnixNano": (now + i + 1000).to_string()})
        })
        .collect();
    sender.post_otlp_json(
        "/v1/traces",
        &json!({"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "shop"}}]},
            "scopeSpans": [{"spans": spans}]}]}),
    );

    let query = format!("https://{http}/jaeger/api/traces/{trace}");
    let mut got = 0;
    wait_until(Duration::from_secs(60), || {
        let (_, status, _, body) = curl(&["--cacert", &ca, "-u", "edge:edge-pw", &query]);
        got = serde_json::from_str::<Json>(&body)
            .ok()
            .map_or(0, |b| b["data"][0]["spans"].as_array().map_or(0, Vec::len));
        status == 200 && got == 20
    })
    .unwrap_or_else(|| {
        panic!(
            "{got} of 20 spans arrived; sender log:\n{}",
            sender.process.log()
        )
    });
    let counter = |name: &str, dest: &str| sender.forward_counter(name, dest);
    wait_until(Duration::from_secs(30), || {
        counter("novamon_forward_items_retried_total", "untrusted") > 0.0
            && counter("novamon_forward_items_failed_total", "wrong_password") == 20.0
    })
    .unwrap_or_else(|| panic!("sender log:\n{}", sender.process.log()));
    assert_eq!(counter("novamon_forward_items_total", "central"), 20.0);
    assert_eq!(
        counter("novamon_forward_items_failed_total", "central"),
        0.0
    );
    assert_eq!(counter("novamon_forward_items_total", "untrusted"), 0.0);
    assert_eq!(
        counter("novamon_forward_items_failed_total", "untrusted"),
        0.0
    );
}
