//! The harness for whole-process tests: starts the real `novamon` binary (and peers such as
//! the real Prometheus) in temporary directories, every listener on loopback port 0 with the
//! bound address read back from the process's log (no port is picked before the process
//! binds it, so tests running in parallel never race for one), talks to them over HTTP, and
//! kills them when dropped. Owns process and port handling only; what to check is each
//! test's.
//!
//! The binary is the one `cargo build -p novamon` put beside this test executable (same
//! profile, same target directory); `tests/run.sh` builds it before running the tests.

pub mod otlp;
pub mod pki;
pub mod series;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use serde_json::Value as Json;

/// Path of the novamon binary under test.
pub fn novamon_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NOVAMON_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/novamon
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("novamon");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p novamon` first (tests/run.sh does)",
        bin.display()
    );
    bin
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A running process that is killed when dropped, with its output captured to a file.
pub struct Process {
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Process {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log has, for each of `patterns`, a line containing it, and returns the
    /// whitespace-delimited value right after the pattern's first occurrence (quotes removed),
    /// in the order of `patterns`: with `" HTTP listening addr="` the address a server logged
    /// for that listener. Panics with the log when the process exits first or `timeout` passes.
    pub fn wait_for_log_values(&mut self, patterns: &[&str], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            // Whole lines only: a line still being written could end inside the value.
            let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
            let found: Vec<Option<String>> =
                patterns.iter().map(|p| value_after(complete, p)).collect();
            if found.iter().all(Option::is_some) {
                return found.into_iter().flatten().collect();
            }
            let missing: Vec<&&str> = patterns
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(p, _)| p)
                .collect();
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("process exited ({st}) before logging {missing:?}; log:\n{log}");
            }
            if Instant::now() > deadline {
                panic!("no {missing:?} in the log within {timeout:?}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal (e.g. "TERM", "KILL") and waits for the exit, at most `timeout`.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "process did not exit within {timeout:?} after SIG{signal}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The token after the first occurrence of `pattern` in `text`, up to whitespace, without
/// surrounding quotes.
fn value_after(text: &str, pattern: &str) -> Option<String> {
    let rest = &text[text.find(pattern)? + pattern.len()..];
    let v = rest.split_whitespace().next()?.trim_matches('"');
    (!v.is_empty()).then(|| v.to_owned())
}

/// Debian's Prometheus 2.42, the peer whole-process tests compare with.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Prometheus on `config`, its TSDB in `dir/prom`, listening on `listen` (`127.0.0.1:0`: any
/// port), with `flags` besides; its log in `dir`, a file per start (a restarted one keeps the
/// first one's). Fails, not skips, when the package is missing.
pub fn spawn_prometheus(dir: &Path, config: &Path, listen: &str, flags: &[&str]) -> Process {
    static STARTS: AtomicUsize = AtomicUsize::new(0);
    assert!(
        Path::new(PROMETHEUS).exists(),
        "the prometheus package is required (tests/run.sh installs it)"
    );
    Process::spawn(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .args(flags),
        dir.join(format!(
            "prometheus-{}.log",
            STARTS.fetch_add(1, Ordering::Relaxed)
        )),
    )
}

/// The address a Go server of the Prometheus family (Prometheus, Alertmanager) logged as bound
/// when started with `--web.listen-address=127.0.0.1:0`: its `msg="Listening on"` line.
pub fn wait_for_go_listen_url(p: &mut Process) -> String {
    let addr = p.wait_for_log_values(&[r#"msg="Listening on" address="#], Duration::from_secs(60));
    format!("http://{}", addr[0])
}

/// [`wait_for_go_listen_url`] for a server with a readiness endpoint (Prometheus,
/// Alertmanager): returns once `/-/ready` answers 200, as Prometheus's API answers 503 while
/// its TSDB opens.
pub fn wait_for_go_ready_url(p: &mut Process) -> String {
    let url = wait_for_go_listen_url(p);
    let a = agent();
    wait_until(Duration::from_secs(60), || {
        a.get(format!("{url}/-/ready"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    })
    .unwrap_or_else(|| panic!("{url} not ready:\n{}", p.log()));
    url
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A novamon server on loopback with its own data directory; each listener is bound to port
/// 0 and the bound addresses are read from the server's log.
pub struct Novamon {
    pub process: Process,
    pub url: String,
    /// OTLP/gRPC and OTLP/HTTP endpoints (`http://127.0.0.1:port`).
    pub otlp_grpc_url: String,
    pub otlp_http_url: String,
    /// The Fluentd forward protocol listener (`127.0.0.1:port`).
    pub forward_addr: String,
    pub data_dir: PathBuf,
    pub agent: ureq::Agent,
}

/// The line `serve.rs` logs for each listener, up to the bound address.
const LISTENING: [&str; 4] = [
    " HTTP listening addr=",
    " OTLP/gRPC listening addr=",
    " OTLP/HTTP listening addr=",
    " forward protocol listening addr=",
];

impl Novamon {
    /// Starts novamon with `--data-dir` and every listener on `127.0.0.1:0`, plus `extra`
    /// args; returns once it logged its four bound addresses and answers `/-/ready`. A
    /// restart on the same data directory gets new ports (and a new log file).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Novamon {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let mut cmd = Command::new(novamon_bin());
        cmd.arg("--data-dir").arg(data_dir);
        for flag in [
            "--http-listen",
            "--otlp-grpc-listen",
            "--otlp-http-listen",
            "--forward-listen",
        ] {
            cmd.arg(flag).arg("127.0.0.1:0");
        }
        cmd.args(extra);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = data_dir.with_extension(format!("novamon-{}-{n}.log", std::process::id()));
        let mut process = Process::spawn(&mut cmd, log);
        let addrs = process.wait_for_log_values(&LISTENING, Duration::from_secs(60));
        let n = Novamon {
            process,
            url: format!("http://{}", addrs[0]),
            otlp_grpc_url: format!("http://{}", addrs[1]),
            otlp_http_url: format!("http://{}", addrs[2]),
            forward_addr: addrs[3].clone(),
            data_dir: data_dir.to_owned(),
            agent: agent(),
        };
        n.wait_ready();
        n
    }

    pub fn wait_ready(&self) {
        wait_until(Duration::from_secs(60), || {
            self.agent
                .get(format!("{}/-/ready", self.url))
                .call()
                .is_ok_and(|r| r.status() == 200)
        })
        .unwrap_or_else(|| {
            panic!(
                "novamon at {} not ready; log:\n{}",
                self.url,
                self.process.log()
            )
        });
    }

    /// GET a JSON endpoint; returns (status, body).
    pub fn get_json(&self, path_and_query: &str) -> (u16, Json) {
        get_json(&self.agent, &format!("{}{}", self.url, path_and_query))
    }

    /// GET with request headers; returns (status, body as text), for answers whose bytes
    /// matter (key order) or that are not JSON.
    pub fn get_text(&self, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.agent.get(format!("{}{}", self.url, path_and_query));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req
            .call()
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let body = resp.body_mut().read_to_string().expect("body");
        (resp.status().as_u16(), body)
    }

    /// GET a JSON endpoint that must answer 200; returns the body.
    pub fn get_ok(&self, path_and_query: &str) -> Json {
        let (status, body) = self.get_json(path_and_query);
        assert_eq!(status, 200, "{path_and_query}: {body}");
        body
    }

    /// The value of forwarding counter `name` for destination `dest` (whatever its URL and
    /// signal), 0 before any.
    pub fn forward_counter(&self, name: &str, dest: &str) -> f64 {
        let prefix = format!("{name}{{remote_name=\"{dest}\",");
        let (_, text) = self.get_text("/metrics", &[]);
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// The value of one series of `/metrics`, named exactly as exposed (`name{labels}`), or
    /// None when it is not there.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let mut resp = self
            .agent
            .get(format!("{}/metrics", self.url))
            .call()
            .expect("GET /metrics");
        let body = resp.body_mut().read_to_string().expect("/metrics body");
        body.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    /// POSTs a remote-write body (already protobuf-encoded), snappy-compressing it.
    pub fn remote_write(
        &self,
        proto: &[u8],
        content_type: &str,
    ) -> (u16, String, Vec<(String, String)>) {
        let body = snap::raw::Encoder::new()
            .compress_vec(proto)
            .expect("snappy");
        self.post_raw(
            "/api/v1/write",
            content_type,
            &[("Content-Encoding", "snappy")],
            body,
        )
    }

    /// POSTs a Loki push-API JSON body, which must be accepted (204).
    pub fn loki_push(&self, body: &Json) {
        let (status, text, _) = self.post_raw(
            "/loki/api/v1/push",
            "application/json",
            &[],
            serde_json::to_vec(body).expect("json"),
        );
        assert_eq!(status, 204, "{text}");
    }

    /// Every line of `selector` from `start_ns` on, oldest first, read in pages of Loki's
    /// default 5,000-line cap. A page that ends at time t may hold only some of t's lines, so
    /// they are dropped and the next page starts at t.
    pub fn log_lines(&self, selector: &str, start_ns: i64) -> Vec<String> {
        const PAGE: usize = 5000;
        let end = now_ns() + 3_600_000_000_000;
        let mut out = Vec::new();
        let mut from = start_ns;
        loop {
            let body = self.get_ok(&format!(
                "/loki/api/v1/query_range?query={}&start={from}&end={end}&limit={PAGE}&direction=forward",
                enc(selector)
            ));
            let mut page: Vec<(i64, String)> = Vec::new();
            for s in body["data"]["result"].as_array().expect("streams") {
                for v in s["values"].as_array().expect("values") {
                    let t = v[0].as_str().and_then(|t| t.parse().ok()).expect("ns");
                    page.push((t, v[1].as_str().expect("line").to_owned()));
                }
            }
            page.sort_by_key(|(t, _)| *t);
            if page.len() < PAGE {
                out.extend(page.into_iter().map(|(_, l)| l));
                return out;
            }
            let last = page[PAGE - 1].0;
            assert!(page[0].0 < last, "{PAGE} lines at one timestamp {last}");
            out.extend(
                page.into_iter()
                    .take_while(|(t, _)| *t < last)
                    .map(|(_, l)| l),
            );
            from = last;
        }
    }

    /// Waits until a Loki range query of `selector` from `start_ns` (to `end_ns`, or now)
    /// returns `lines` log lines across all its streams: a push is queryable only once the
    /// write path has taken it.
    pub fn wait_for_log_lines(
        &self,
        selector: &str,
        start_ns: i64,
        end_ns: Option<i64>,
        lines: usize,
    ) {
        let end = end_ns.map_or(String::new(), |e| format!("&end={e}"));
        let q = format!(
            "/loki/api/v1/query_range?query={}&start={start_ns}{end}&limit=1000",
            enc(selector)
        );
        wait_until(Duration::from_secs(30), || {
            self.get_json(&q).1["data"]["result"].as_array().map(|r| {
                r.iter()
                    .map(|s| s["values"].as_array().map_or(0, Vec::len))
                    .sum::<usize>()
            }) == Some(lines)
        })
        .expect("pushed log lines never became queryable");
    }

    /// Posts an OTLP/JSON request (to `/v1/traces`, `/v1/logs` or `/v1/metrics`) and checks
    /// it was taken (200).
    pub fn post_otlp_json(&self, path: &str, body: &Json) {
        let bytes = serde_json::to_vec(body).expect("JSON");
        let (status, text, _) = self.post_raw(path, "application/json", &[], bytes);
        assert_eq!(status, 200, "{text}");
    }

    pub fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String, Vec<(String, String)>) {
        let mut req = self
            .agent
            .post(format!("{}{}", self.url, path))
            .header("Content-Type", content_type);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(&body[..]).expect("POST");
        let hdrs = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
            hdrs,
        )
    }
}

pub fn get_json(agent: &ureq::Agent, url: &str) -> (u16, Json) {
    let mut resp = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().expect("body");
    let json =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"));
    (status, json)
}

/// An instant query's result on any server of the Prometheus API at `base`, as
/// `labels (JSON) → value`, for comparing two servers' answers.
pub fn instant_values(
    agent: &ureq::Agent,
    base: &str,
    q: &str,
) -> std::collections::BTreeMap<String, String> {
    let (status, body) = get_json(agent, &format!("{base}/api/v1/query?query={}", enc(q)));
    assert_eq!(status, 200, "{base} {q}: {body}");
    body["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{base} {q}: {body}"))
        .iter()
        .map(|s| {
            (
                s["metric"].to_string(),
                s["value"][1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Runs `novamon check-config <path>`; returns its exit code and stderr.
pub fn check_config(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(novamon_bin())
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run novamon check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` every 100ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// URL-encodes a query parameter value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A timestamp an hour ago on a whole second: recent enough for any retention, and old
/// enough that a test can write the following hour of samples.
pub fn an_hour_ago_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    (now - 3_600_000) / 1000 * 1000
}

/// The Python of the venv `tests/run.sh` creates for the real-client tests
/// ($NOVAMON_VENV, default $HOME/.cache/novamon-venv).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("NOVAMON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/novamon-venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} missing: run tests/run.sh, which creates the venv",
        py.display()
    );
    py
}

/// Now in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

/// Runs the openssl CLI in `dir` (certificates for the TLS tests), failing the test with its
/// stderr if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The series of a Prometheus matrix answer (a range query, or an instant query of a range
/// selector) by the value of their `label` (empty when absent): points as (t ms, value).
pub fn points_by_label(
    body: &Json,
    label: &str,
) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
    body["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .unwrap_or_else(|| panic!("{s}"))
                .iter()
                .map(|p| {
                    (
                        (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                        p[1].as_str().unwrap().parse::<f64>().unwrap(),
                    )
                })
                .collect();
            let key = s["metric"][label].as_str().unwrap_or_default().to_owned();
            (key, points)
        })
        .collect()
}
