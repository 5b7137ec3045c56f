//! The systems a benchmark compares: novamon, Prometheus, VictoriaMetrics and (for logs)
//! ClickHouse, each started on a loopback port with a fresh data directory, measured (CPU, peak
//! RSS, disk use) and stopped gracefully. Owns process handling only; what load to send is each
//! benchmark's.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Where to find each system's binary.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerPaths {
    /// Path of the novamon binary (a release build); novamon is skipped without it.
    #[arg(long)]
    pub novamon: Option<PathBuf>,
    #[arg(long, default_value = "/usr/bin/prometheus")]
    pub prometheus: PathBuf,
    #[arg(long, default_value = "/usr/bin/victoria-metrics")]
    pub victoria_metrics: PathBuf,
    /// Which systems to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "novamon,prometheus,victoria-metrics"
    )]
    pub targets: Vec<String>,
    /// First loopback port; each system gets the next one.
    #[arg(long, default_value_t = 19291)]
    pub port: u16,
    /// Seconds to wait for a system to come up, and again for it to stop after SIGTERM.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

pub struct Peer {
    pub name: String,
    program: PathBuf,
    port: u16,
    /// Appended to the system's own arguments.
    extra_args: Vec<String>,
    /// A prometheus.yml with `scrape_configs` the system scrapes by.
    scrape_config: Option<String>,
}

impl PeerPaths {
    /// The systems to run, with their ports; novamon is left out (with a note) when no
    /// binary was given.
    pub fn peers(&self) -> anyhow::Result<Vec<Peer>> {
        let mut out = Vec::new();
        for (i, name) in self.targets.iter().enumerate() {
            let program = match name.as_str() {
                "novamon" => match &self.novamon {
                    Some(p) => p.clone(),
                    None => {
                        eprintln!("skipping novamon: no --novamon binary given");
                        continue;
                    }
                },
                "prometheus" => self.prometheus.clone(),
                "victoria-metrics" => self.victoria_metrics.clone(),
                other => bail!("unknown target {other} (novamon, prometheus, victoria-metrics)"),
            };
            let port = self
                .port
                .checked_add(i as u16)
                .context("port out of range")?;
            out.push(Peer {
                name: name.clone(),
                program,
                port,
                extra_args: Vec::new(),
                scrape_config: None,
            });
        }
        Ok(out)
    }
}

impl Peer {
    /// novamon alone, its HTTP API on `port`.
    pub fn novamon(program: PathBuf, port: u16) -> Peer {
        Peer {
            name: "novamon".into(),
            program,
            port,
            extra_args: Vec::new(),
            scrape_config: None,
        }
    }

    /// ClickHouse (`clickhouse-server`) alone, its HTTP interface on `port`, its native TCP
    /// port on a free one, and a default user without a password.
    pub fn clickhouse(program: PathBuf, port: u16) -> Peer {
        Peer {
            name: "clickhouse".into(),
            program,
            port,
            extra_args: Vec::new(),
            scrape_config: None,
        }
    }

    /// The same system scraping as `prometheus_yml` (a prometheus.yml) says.
    pub fn with_scrape_config(mut self, prometheus_yml: String) -> Peer {
        self.scrape_config = Some(prometheus_yml);
        self
    }

    /// The same system started with `args` after its own.
    pub fn with_args(mut self, args: impl IntoIterator<Item = String>) -> Peer {
        self.extra_args.extend(args);
        self
    }

    fn args(&self, data_dir: &Path, work: &Path, addr: &str) -> anyhow::Result<Vec<String>> {
        let data = data_dir.display();
        let scrape = work.join("scrape.yml");
        let scrape_flag = |flag: &str| -> anyhow::Result<Vec<String>> {
            Ok(match &self.scrape_config {
                Some(yml) => {
                    std::fs::write(&scrape, yml)?;
                    vec![format!("{flag}{}", scrape.display())]
                }
                None => Vec::new(),
            })
        };
        let mut args = match self.name.as_str() {
            // The other listeners on free ports too, so a bench never collides with a
            // novamon already running on this machine.
            "novamon" => vec![
                "--data-dir".into(),
                data.to_string(),
                "--http-listen".into(),
                addr.into(),
                "--forward-listen".into(),
                free_loopback_addr()?,
                "--otlp-grpc-listen".into(),
                free_loopback_addr()?,
                "--otlp-http-listen".into(),
                free_loopback_addr()?,
                "--log".into(),
                "warn".into(),
            ]
            .into_iter()
            .chain(scrape_flag("--config=")?)
            .collect(),
            "prometheus" => {
                // No scrape jobs unless asked: the receiver is all that runs.
                let config = work.join("prometheus.yml");
                let yml = self.scrape_config.as_deref();
                std::fs::write(&config, yml.unwrap_or("global:\n  scrape_interval: 15s\n"))?;
                vec![
                    format!("--config.file={}", config.display()),
                    format!("--storage.tsdb.path={data}"),
                    format!("--web.listen-address={addr}"),
                    "--web.enable-remote-write-receiver".into(),
                    "--log.level=warn".into(),
                ]
            }
            "victoria-metrics" => vec![
                format!("-storageDataPath={data}"),
                format!("-httpListenAddr={addr}"),
                "-loggerLevel=WARN".into(),
                // Otherwise the newest 30s of data is hidden from queries, and benchmarks
                // query right up to the newest sample.
                "-search.latencyOffset=0s".into(),
            ]
            .into_iter()
            .chain(scrape_flag("-promscrape.config=")?)
            .collect(),
            "clickhouse" => {
                let config = work.join("config.xml");
                std::fs::write(&config, clickhouse_config(data_dir, work, addr)?)?;
                std::fs::write(work.join("users.xml"), CLICKHOUSE_USERS)?;
                vec![format!("--config-file={}", config.display())]
            }
            other => bail!("unknown target {other}"),
        };
        args.extend(self.extra_args.iter().cloned());
        Ok(args)
    }

    /// Starts the system and waits until it takes writes.
    pub fn start(&self, timeout: Duration) -> anyhow::Result<Running> {
        let work = tempfile::tempdir()?;
        let data = work.path().join("data");
        std::fs::create_dir(&data)?;
        let addr = format!("127.0.0.1:{}", self.port);
        let log_path = work.path().join(LOG_FILE);
        File::create(&log_path)?;
        let args = self.args(&data, work.path(), &addr)?;
        let child = spawn(&self.program, &args, &log_path)?;
        let mut running = Running {
            name: self.name.clone(),
            child,
            program: self.program.clone(),
            base_url: format!("http://{addr}"),
            args,
            data,
            log_path,
            _work: work,
        };
        running.wait_ready(timeout)?;
        Ok(running)
    }
}

/// The file in a system's work directory its output goes to.
const LOG_FILE: &str = "log";

/// A ClickHouse 18.16 server configuration: everything under `work`, listening on loopback
/// only, no interserver port (no replication), its log in the work directory's [`LOG_FILE`] as
/// the other systems' output is. `mark_cache_size` has no default in 18.16: the server refuses to
/// start without it (this is the packaged config's value; the cache is filled on demand).
fn clickhouse_config(data: &Path, work: &Path, http_addr: &str) -> anyhow::Result<String> {
    let http_port = http_addr.rsplit(':').next().context("no port")?;
    let tcp_addr = free_loopback_addr()?;
    let tcp_port = tcp_addr.rsplit(':').next().context("no port")?;
    let (data, work) = (data.display(), work.display());
    Ok(format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{work}/{LOG_FILE}</log>
        <errorlog>{work}/errors.log</errorlog>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{data}/</path>
    <tmp_path>{work}/tmp/</tmp_path>
    <user_files_path>{work}/user_files/</user_files_path>
    <users_config>{work}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>5368709120</mark_cache_size>
</yandex>
"#
    ))
}

/// ClickHouse users: `default`, no password, from loopback only.
const CLICKHOUSE_USERS: &str = r#"<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default></default></quotas>
</yandex>
"#;

/// Starts `program` with `args`, its output appended to `log_path`.
fn spawn(program: &Path, args: &[String], log_path: &Path) -> anyhow::Result<Child> {
    let log = File::options().append(true).open(log_path)?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// A started system; killed if dropped without `stop`.
pub struct Running {
    name: String,
    child: Child,
    program: PathBuf,
    pub base_url: String,
    args: Vec<String>,
    data: PathBuf,
    log_path: PathBuf,
    _work: tempfile::TempDir,
}

impl Running {
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base_url)
    }

    /// A field of `/proc/PID/status` counted in KiB (`VmRSS`, `VmHWM`, `RssAnon`, `RssFile`).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        status_kib(self.child.id(), field)
    }

    /// Samples the resident set every 2 ms from now until [`RssWatch::peak_kib`].
    pub fn watch_rss(&self) -> RssWatch {
        let pid = self.child.id();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "VmRSS").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        });
        RssWatch { stop, sampler }
    }

    /// VmHWM: the peak resident set so far.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM")
    }

    /// VmRSS: the resident set now.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS")
    }

    /// CPU time (user + system) the process has used so far, from `/proc/PID/stat`: it moves
    /// far less with the neighbours' load than wall-clock rates do.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.child.id())
    }

    /// SIGTERM, then up to `timeout` for a graceful exit (flushing its data), then SIGKILL.
    pub fn stop(&mut self, timeout: Duration) -> anyhow::Result<&'static str> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok("graceful");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill()?;
        self.child.wait()?;
        Ok("killed")
    }

    /// Starts the stopped system again on the same data and listeners; returns how long it took
    /// to accept writes (what a restart costs: replaying its log, loading its index).
    pub fn restart(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        if self.child.try_wait()?.is_none() {
            bail!("restart of a system still running");
        }
        let started = Instant::now();
        self.child = spawn(&self.program, &self.args, &self.log_path)?;
        self.wait_ready(timeout)?;
        Ok(started.elapsed())
    }

    /// Waits until the system takes writes: a remote write for the metrics systems; ClickHouse
    /// has no remote-write endpoint, and answers `/ping` once it serves queries and inserts.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let ready = match self.name.as_str() {
            "clickhouse" => wait_ping(&format!("{}/ping", self.base_url), timeout),
            _ => crate::load::wait_ready(&self.write_url(), timeout),
        };
        if let Err(e) = ready {
            let _ = self.child.kill();
            let _ = self.child.wait();
            bail!("{e}\n--- log tail ---\n{}", self.log_tail());
        }
        Ok(())
    }

    /// Disk use of the data directory as `du` counts it.
    pub fn disk_bytes(&self) -> std::io::Result<u64> {
        du(&self.data)
    }

    /// The value the system was started with for `flag`, e.g. a listener's free port.
    pub fn arg(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }

    /// Disk use of `sub`, a path inside the data directory.
    pub fn disk_bytes_of(&self, sub: &str) -> std::io::Result<u64> {
        du(&self.data.join(sub))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `url` until it answers 200.
fn wait_ping(url: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match client.get(url).send() {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => last = format!("status {}", resp.status()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{url} not ready after {timeout:?}: {last}"))
}

fn free_loopback_addr() -> std::io::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

/// A field of `/proc/PID/status` counted in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The highest resident set a process reached while watched (see [`Running::watch_rss`]):
/// unlike VmHWM, it can be taken over one stretch of work after others.
pub struct RssWatch {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl RssWatch {
    /// Stops watching; the highest VmRSS seen, in KiB.
    pub fn peak_kib(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().unwrap_or(0)
    }
}

/// Allocated blocks of every file under `dir`.
pub fn du(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let md = entry.path().symlink_metadata()?;
        total += md.blocks() * 512;
        if md.is_dir() {
            total += du(&entry.path())?;
        }
    }
    Ok(total)
}

/// User + system CPU seconds of process `pid` (fields 14 and 15 of `/proc/PID/stat`, in clock
/// ticks of 1/100 s on Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
