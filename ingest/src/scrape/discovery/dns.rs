//! `dns_sd_configs`, as Prometheus 2.42's `discovery/dns`: every `refresh_interval` each name
//! is looked up (SRV by default, or A, AAAA, MX with the entry's `port`) through the servers
//! and search path of `/etc/resolv.conf`, as Prometheus's own resolver does (not the system's):
//! each search permutation asked of each server in turn over UDP with EDNS0, again over TCP when
//! the answer is truncated; a success ends the lookup, NXDOMAIN everywhere is an empty answer,
//! anything else fails the name, which keeps its last targets. A record is a target:
//! `host:port` labelled `__meta_dns_name`, `__meta_dns_srv_record_target` and
//! `__meta_dns_srv_record_port` (SRV), `__meta_dns_mx_record_target` (MX). Owns the DNS
//! exchange and the message's wire format; what becomes of a target is `target`'s.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use storage::Label;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Discovered, Episode, Refresh, SdMetrics};
use crate::scrape::config::{DnsSdConfig, TargetGroup};

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_MX: u16 = 15;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const RCODE_SUCCESS: u8 = 0;
const RCODE_NXDOMAIN: u8 = 3;

/// The UDP answer size offered in EDNS0 (miekg/dns's `DefaultMsgSize`, which Prometheus uses).
const EDNS_SIZE: u16 = 4096;

/// How long one exchange with one server may take over each transport (miekg/dns's default
/// client timeouts, 2 s to dial, write and read).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// One entry, checked at config load.
pub(crate) struct DnsSource {
    names: Vec<String>,
    qtype: u16,
    port: u16,
    refresh: Duration,
    /// Read at every refresh, as Prometheus does; a test points it elsewhere.
    resolv_conf: PathBuf,
}

impl DnsSource {
    /// `c` must have passed [`DnsSdConfig::check`].
    pub(crate) fn new(c: &DnsSdConfig) -> DnsSource {
        let qtype = match c.kind.to_ascii_uppercase().as_str() {
            "A" => TYPE_A,
            "AAAA" => TYPE_AAAA,
            "MX" => TYPE_MX,
            _ => TYPE_SRV,
        };
        DnsSource {
            names: c.names.clone(),
            qtype,
            port: c.port,
            refresh: c.refresh_interval,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// One entry's refreshing: each name's last targets and failure episode.
pub(crate) struct DnsRefresh {
    job: String,
    source: Arc<DnsSource>,
    last: BTreeMap<String, Vec<Discovered>>,
    episodes: BTreeMap<String, Episode>,
    metrics: Arc<SdMetrics>,
}

impl DnsRefresh {
    pub(crate) fn new(job: String, source: Arc<DnsSource>, metrics: Arc<SdMetrics>) -> DnsRefresh {
        DnsRefresh {
            job,
            source,
            last: BTreeMap::new(),
            episodes: BTreeMap::new(),
            metrics,
        }
    }
}

impl Refresh for DnsRefresh {
    const MECHANISM: &'static str = "dns";

    fn interval(&self) -> Duration {
        self.source.refresh
    }

    /// Every name in turn (Prometheus looks them up at once; each lookup is bounded by its
    /// servers' timeouts). A name that fails keeps its last targets, as in Prometheus, where
    /// its group is then not updated; each name's lookup and failure counts, but the refresh
    /// itself never fails (Prometheus's only logs its names' errors).
    async fn refresh(&mut self) -> Option<Vec<Discovered>> {
        let source = self.source.clone();
        let conf = std::fs::read_to_string(&source.resolv_conf)
            .map(|text| ResolvConf::parse(&text))
            .map_err(|e| format!("could not load resolv.conf: {e}"));
        for name in &source.names {
            let episode = self
                .episodes
                .entry(name.clone())
                .or_insert_with(|| Episode::new("dns_sd"));
            let answer = match &conf {
                Ok(conf) => lookup(conf, name, source.qtype).await,
                Err(e) => Err(e.clone()),
            };
            self.metrics.dns_lookups.inc();
            match answer {
                Ok(records) => {
                    episode.succeeded(&self.job, name);
                    let targets = records
                        .into_iter()
                        .filter_map(|r| target(name, r, source.port))
                        .collect();
                    self.last.insert(name.clone(), targets);
                }
                Err(e) => {
                    self.metrics.dns_lookup_failures.inc();
                    episode.failed(&self.job, name, &e)
                }
            }
        }
        Some(
            source
                .names
                .iter()
                .filter_map(|n| self.last.get(n))
                .flatten()
                .cloned()
                .collect(),
        )
    }
}

/// What Prometheus makes of one answer record: a target with its labels, or nothing (CNAMEs,
/// which an A lookup may carry, and records of other types).
fn target(name: &str, record: Record, port: u16) -> Option<Discovered> {
    let join = |host: &str, port: u16| {
        // Go's net.JoinHostPort: brackets around a host with a colon.
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    let mut meta = vec![Label::new("__meta_dns_name", name)];
    let address = match record {
        Record::Srv { target, port } => {
            meta.push(Label::new("__meta_dns_srv_record_target", target.as_str()));
            meta.push(Label::new("__meta_dns_srv_record_port", port.to_string()));
            // Prometheus drops the final dot of a rooted name to make it look more usual.
            join(target.trim_end_matches('.'), port)
        }
        Record::Mx { exchange } => {
            meta.push(Label::new("__meta_dns_mx_record_target", exchange.as_str()));
            join(exchange.trim_end_matches('.'), port)
        }
        Record::Ip(ip) => join(&go_ip(ip), port),
        Record::Other(kind) => {
            if kind != TYPE_CNAME {
                tracing::warn!(name, record_type = kind, "dns_sd: invalid record");
            }
            return None;
        }
    };
    Some(Discovered {
        group: TargetGroup {
            targets: vec![address],
            labels: BTreeMap::new(),
        },
        meta,
    })
}

/// Go's `net.IP.String()`: an IPv4-mapped IPv6 address prints as IPv4.
fn go_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// What of resolv.conf Prometheus's lookup uses (miekg/dns's reading of it).
#[derive(Debug, PartialEq)]
struct ResolvConf {
    servers: Vec<String>,
    search: Vec<String>,
    ndots: usize,
}

impl ResolvConf {
    fn parse(text: &str) -> ResolvConf {
        let mut c = ResolvConf {
            servers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.first().copied() {
                Some("nameserver") if f.len() > 1 => c.servers.push(f[1].to_string()),
                Some("domain") => c.search = f.get(1).map(|d| d.to_string()).into_iter().collect(),
                Some("search") => c.search = f[1..].iter().map(|s| s.to_string()).collect(),
                Some("options") => {
                    for o in &f[1..] {
                        if let Some(n) = o.strip_prefix("ndots:") {
                            // Go's Atoi failing gives 0; the value is capped at 15.
                            c.ndots = n.parse::<i64>().unwrap_or(0).clamp(0, 15) as usize;
                        }
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// The names to try for `name`, in order (miekg/dns's `NameList`): a rooted name alone;
    /// else the name first when it has more labels than `ndots`, each search domain appended,
    /// and the name last when it has not.
    fn name_list(&self, name: &str) -> Vec<String> {
        if name.ends_with('.') {
            return vec![name.to_string()];
        }
        let labels = name.split('.').filter(|l| !l.is_empty()).count();
        let has_ndots = labels > self.ndots;
        let fqdn = format!("{name}.");
        let mut names = Vec::new();
        if has_ndots {
            names.push(fqdn.clone());
        }
        for s in &self.search {
            let mut n = format!("{fqdn}{s}");
            if !n.ends_with('.') {
                n.push('.');
            }
            names.push(n);
        }
        if !has_ndots {
            names.push(fqdn);
        }
        names
    }
}

/// An answer record, as far as discovery reads it.
#[derive(Debug, PartialEq)]
enum Record {
    Srv { target: String, port: u16 },
    Mx { exchange: String },
    Ip(IpAddr),
    Other(u16),
}

/// A response: its RCODE and answer records.
struct Response {
    rcode: u8,
    answers: Vec<Record>,
}

/// Prometheus's `lookupWithSearchPath`: the first permutation some server answers with
/// success wins; NXDOMAIN for all of them is an empty answer; a permutation no server answered
/// viably fails the lookup.
async fn lookup(conf: &ResolvConf, name: &str, qtype: u16) -> Result<Vec<Record>, String> {
    let mut all_valid = true;
    for candidate in conf.name_list(name) {
        match lookup_from_any_server(conf, &candidate, qtype).await {
            Err(_) => all_valid = false,
            Ok(r) if r.rcode == RCODE_SUCCESS => return Ok(r.answers),
            Ok(_) => {}
        }
    }
    if all_valid {
        Ok(Vec::new())
    } else {
        Err(format!(
            "could not resolve {name:?}: all servers responded with errors to at least one search domain"
        ))
    }
}

/// Each server in turn until one answers with success or NXDOMAIN.
async fn lookup_from_any_server(
    conf: &ResolvConf,
    name: &str,
    qtype: u16,
) -> Result<Response, String> {
    for server in &conf.servers {
        match ask(server, name, qtype).await {
            Ok(r) if matches!(r.rcode, RCODE_SUCCESS | RCODE_NXDOMAIN) => return Ok(r),
            Ok(r) => tracing::debug!(server, name, rcode = r.rcode, "dns_sd: no viable answer"),
            Err(e) => tracing::debug!(server, name, error = e, "dns_sd: DNS resolution failed"),
        }
    }
    Err(format!(
        "could not resolve {name}: no servers returned a viable answer"
    ))
}

/// One question to one server: UDP with EDNS0, TCP without when the answer is truncated.
async fn ask(server: &str, name: &str, qtype: u16) -> Result<Response, String> {
    let ip: IpAddr = server
        .parse()
        .map_err(|_| format!("nameserver {server:?} is not an IP address"))?;
    let addr = SocketAddr::new(ip, 53);
    let id = random_id()?;
    let (tc, response) = udp(addr, &query(id, name, qtype, true)?, id).await?;
    if !tc {
        return Ok(response);
    }
    let (tc, response) = tcp(addr, &query(id, name, qtype, false)?, id).await?;
    if tc {
        return Err("got truncated message on TCP (64kiB limit exceeded?)".into());
    }
    Ok(response)
}

fn random_id() -> Result<u16, String> {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    Ok(u16::from_be_bytes(b))
}

async fn udp(addr: SocketAddr, q: &[u8], id: u16) -> Result<(bool, Response), String> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(addr).await.map_err(|e| e.to_string())?;
    sock.send(q).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(EDNS_SIZE)];
    let read = async {
        loop {
            let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
            // A stray datagram (another query's late answer) is not this answer.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                return parse(&buf[..n]);
            }
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, read)
        .await
        .map_err(|_| "i/o timeout".to_string())?
}

async fn tcp(addr: SocketAddr, q: &[u8], id: u16) -> Result<(bool, Response), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let len = u16::try_from(q.len()).map_err(|_| "query too long".to_string())?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(q);
        s.write_all(&framed).await.map_err(|e| e.to_string())?;
        let len = s.read_u16().await.map_err(|e| e.to_string())?;
        // At most 64 KiB, as the length prefix allows.
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if buf.len() < 2 || u16::from_be_bytes([buf[0], buf[1]]) != id {
            return Err("dns: id mismatch".to_string());
        }
        parse(&buf)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| "i/o timeout".to_string())?
}

/// A query for `name` (rooted) with recursion desired, as miekg/dns's `SetQuestion` builds
/// it, with an EDNS0 OPT record offering [`EDNS_SIZE`] when `edns`.
fn query(id: u16, name: &str, qtype: u16, edns: bool) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0]);
    q.extend_from_slice(&u16::from(edns).to_be_bytes());
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| *l <= 63)
            .ok_or_else(|| format!("dns: label too long in {name:?}"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        q.push(0);
        q.extend_from_slice(&TYPE_OPT.to_be_bytes());
        q.extend_from_slice(&EDNS_SIZE.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    Ok(q)
}

const MALFORMED: &str = "dns: malformed response";

/// A response's truncation bit, RCODE and answer records. Malformed messages are errors.
fn parse(msg: &[u8]) -> Result<(bool, Response), String> {
    let u16_at = |at: usize| -> Result<u16, String> {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| MALFORMED.to_string())
    };
    let flags = u16_at(2)?;
    let tc = flags & 0x0200 != 0;
    let rcode = (flags & 0x000f) as u8;
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut answers = Vec::with_capacity(usize::from(an));
    // A truncated UDP answer may end mid-record: it is asked again over TCP, unread.
    if tc {
        return Ok((true, Response { rcode, answers }));
    }
    for _ in 0..an {
        let (_, at) = read_name(msg, pos)?;
        let kind = u16_at(at)?;
        let len = usize::from(u16_at(at + 8)?);
        let start = at + 10;
        let rdata = msg.get(start..start + len).ok_or(MALFORMED)?;
        let record = match (kind, len) {
            (TYPE_A, 4) => Record::Ip(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]])),
            (TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                Record::Ip(IpAddr::from(b))
            }
            (TYPE_A | TYPE_AAAA, _) => return Err(MALFORMED.into()),
            (TYPE_SRV, 7..) => Record::Srv {
                port: u16_at(start + 4)?,
                target: read_name(msg, start + 6)?.0,
            },
            (TYPE_MX, 3..) => Record::Mx {
                exchange: read_name(msg, start + 2)?.0,
            },
            (TYPE_SRV | TYPE_MX, _) => return Err(MALFORMED.into()),
            (other, _) => Record::Other(other),
        };
        answers.push(record);
        pos = start + len;
    }
    Ok((false, Response { rcode, answers }))
}

/// How many answer records a DNS server's response holds (none read when it is truncated), or
/// why it is malformed (the fuzz target's entry point).
pub fn dns_answer(msg: &[u8]) -> Result<usize, String> {
    parse(msg).map(|(_, r)| r.answers.len())
}

/// The name at `pos` in presentation format, rooted (`a.b.`), as miekg/dns prints it
/// (special characters escaped); and where the bytes after it start. Compression pointers are
/// followed, at most as many as a message can hold distinct names.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos).ok_or(MALFORMED)?;
        match len {
            0 => {
                if out.is_empty() {
                    out.push('.');
                }
                return Ok((out, end.unwrap_or(pos + 1)));
            }
            0xc0.. => {
                let low = *msg.get(pos + 1).ok_or(MALFORMED)?;
                jumps += 1;
                if jumps > 126 {
                    return Err(MALFORMED.into());
                }
                end.get_or_insert(pos + 2);
                pos = usize::from(len & 0x3f) << 8 | usize::from(low);
            }
            1..=63 => {
                let label = msg
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or(MALFORMED)?;
                for &b in label {
                    match b {
                        b'.' | b'(' | b')' | b';' | b' ' | b'@' | b'"' | b'\\' => {
                            out.push('\\');
                            out.push(char::from(b));
                        }
                        0x21..=0x7e => out.push(char::from(b)),
                        _ => out.push_str(&format!("\\{b:03}")),
                    }
                }
                out.push('.');
                pos += 1 + usize::from(len);
            }
            _ => return Err(MALFORMED.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn resolv_conf_and_search_permutations_as_miekg_reads_them() {
        let c = ResolvConf::parse(
            "# comment\nnameserver 10.0.0.1\nnameserver ::1\ndomain a.test\nsearch b.test c.test.\noptions ndots:2 rotate\n",
        );
        assert_eq!(c.servers, ["10.0.0.1", "::1"]);
        assert_eq!(c.search, ["b.test", "c.test."]);
        assert_eq!(c.ndots, 2);
        assert_eq!(c.name_list("x.y."), ["x.y."]);
        assert_eq!(c.name_list("x.y"), ["x.y.b.test.", "x.y.c.test.", "x.y."]);
        assert_eq!(
            c.name_list("x.y.z"),
            ["x.y.z.", "x.y.z.b.test.", "x.y.z.c.test."]
        );
        assert_eq!(ResolvConf::parse("options ndots:99").ndots, 15);
        assert_eq!(ResolvConf::parse("").ndots, 1);
    }

    #[test]
    fn records_become_targets_as_prometheus_makes_them() {
        let t = |r, port| target("n", r, port).map(|d| (d.group.targets[0].clone(), d.meta));
        let (addr, meta) = t(
            Record::Srv {
                target: "h.test.".into(),
                port: 9100,
            },
            0,
        )
        .unwrap();
        assert_eq!(addr, "h.test:9100");
        assert_eq!(
            meta,
            [
                Label::new("__meta_dns_name", "n"),
                Label::new("__meta_dns_srv_record_target", "h.test."),
                Label::new("__meta_dns_srv_record_port", "9100"),
            ]
        );
        let ip = |s: &str| Record::Ip(s.parse().unwrap());
        assert_eq!(t(ip("10.0.0.1"), 80).unwrap().0, "10.0.0.1:80");
        assert_eq!(t(ip("::1"), 80).unwrap().0, "[::1]:80");
        assert_eq!(t(ip("::ffff:10.0.0.1"), 80).unwrap().0, "10.0.0.1:80");
        assert!(t(Record::Other(TYPE_CNAME), 80).is_none());
    }

    #[test]
    fn entries_are_checked_as_prometheus_checks_them() {
        let check = |yml: &str| serde_yaml::from_str::<DnsSdConfig>(yml).unwrap().check();
        let c: DnsSdConfig = serde_yaml::from_str("names: [a]").unwrap();
        assert_eq!(
            (c.kind.as_str(), c.refresh_interval),
            ("SRV", Duration::from_secs(30))
        );
        assert_eq!(check("names: [a]"), Ok(()));
        assert_eq!(check("names: [a]\ntype: a\nport: 80"), Ok(()));
        for (yml, why) in [
            (
                "type: SRV",
                "DNS-SD config must contain at least one SRV record name",
            ),
            (
                "names: [a]\ntype: A",
                "a port is required in DNS-SD configs for all record types except SRV",
            ),
            ("names: [a]\ntype: TXT", "invalid DNS-SD records type TXT"),
        ] {
            assert_eq!(check(yml), Err(why.to_string()), "{yml}");
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let q = query(7, "a.test.", TYPE_A, false).unwrap();
        let mut r = q.clone();
        r[7] = 1; // one answer, absent
        assert!(parse(&r).is_err());
        // A compression pointer to itself.
        let mut r = q[..12].to_vec();
        r[5] = 1;
        r.extend_from_slice(&[0xc0, 12]);
        assert!(parse(&r).is_err());
        assert!(parse(&[0; 5]).is_err());
        assert!(query(1, &format!("{}.test", "x".repeat(64)), TYPE_A, true).is_err());
    }

    /// dnsmasq (Debian's `dnsmasq-base`) serving `example.test` on 127.0.5.3:53 (port 53, as
    /// resolv.conf names no port: the test runs as root); killed when dropped.
    struct Dnsmasq(std::process::Child);

    impl Drop for Dnsmasq {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    const SERVER: &str = "127.0.5.3";

    fn dnsmasq(dir: &Path) -> Dnsmasq {
        let bin = "/usr/sbin/dnsmasq";
        assert!(
            Path::new(bin).exists(),
            "{bin} is required (Debian package dnsmasq-base; tests/run.sh installs it)"
        );
        let mut conf = format!(
            "no-resolv\nno-hosts\nlisten-address={SERVER}\nbind-interfaces\nport=53\n\
             local=/example.test/\n\
             host-record=node1.example.test,127.0.0.1\n\
             host-record=node2.example.test,127.0.0.2,::1\n\
             srv-host=_metrics._tcp.example.test,node1.example.test,9100,10,5\n\
             srv-host=_metrics._tcp.example.test,node2.example.test,9200,10,5\n\
             cname=alias.example.test,node1.example.test\n\
             edns-packet-max=512\n"
        );
        // Enough records that a 512-byte UDP answer is truncated: asked again over TCP.
        for i in 0..40 {
            conf.push_str(&format!(
                "srv-host=_many._tcp.example.test,host{i}.example.test,{},1,1\n",
                9000 + i
            ));
        }
        let path = dir.join("dnsmasq.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new(bin)
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", path.display()))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let d = Dnsmasq(child);
        // Ready once it answers.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq did not start"
            );
            let q = query(1, "node1.example.test.", TYPE_A, false).unwrap();
            if probe.send_to(&q, (SERVER, 53)).is_ok() && probe.recv(&mut [0; 512]).is_ok() {
                return d;
            }
        }
    }

    fn source(dir: &Path, kind: &str, names: &[&str], port: u16) -> DnsSource {
        let c = DnsSdConfig {
            names: names.iter().map(|n| n.to_string()).collect(),
            refresh_interval: Duration::from_secs(30),
            kind: kind.into(),
            port,
        };
        c.check().unwrap();
        let mut s = DnsSource::new(&c);
        s.resolv_conf = dir.join("resolv.conf");
        s
    }

    fn targets(groups: &[Discovered]) -> Vec<String> {
        groups.iter().map(|d| d.group.targets[0].clone()).collect()
    }

    #[tokio::test]
    async fn names_resolve_through_dnsmasq_as_prometheus_resolves_them() {
        let dir = tempfile::tempdir().unwrap();
        let _dns = dnsmasq(dir.path());
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {SERVER}\nsearch example.test\n"),
        )
        .unwrap();
        let refresh = |s: DnsSource| async move {
            DnsRefresh::new("job".into(), Arc::new(s), Arc::default())
                .refresh()
                .await
                .unwrap()
        };

        let srv = refresh(source(
            dir.path(),
            "SRV",
            &["_metrics._tcp.example.test"],
            0,
        ))
        .await;
        let mut t = targets(&srv);
        t.sort();
        assert_eq!(t, ["node1.example.test:9100", "node2.example.test:9200"]);
        let node1 = srv
            .iter()
            .find(|d| d.group.targets[0].starts_with("node1"))
            .unwrap();
        assert_eq!(
            node1.meta,
            [
                Label::new("__meta_dns_name", "_metrics._tcp.example.test"),
                Label::new("__meta_dns_srv_record_target", "node1.example.test."),
                Label::new("__meta_dns_srv_record_port", "9100"),
            ]
        );
        // A relative name through the search domain; a CNAME skipped; NXDOMAIN is empty.
        let a = refresh(source(
            dir.path(),
            "A",
            &["node2", "alias.example.test", "nope.example.test"],
            80,
        ))
        .await;
        assert_eq!(targets(&a), ["127.0.0.2:80", "127.0.0.1:80"]);
        let conf = ResolvConf::parse(&format!("nameserver {SERVER}\n"));
        assert_eq!(
            lookup(&conf, "nope.example.test", TYPE_A).await,
            Ok(Vec::new())
        );
        let aaaa = refresh(source(dir.path(), "aaaa", &["node2.example.test"], 80)).await;
        assert_eq!(targets(&aaaa), ["[::1]:80"]);
        // Too many for 512 bytes over UDP: all of them over TCP.
        let many = refresh(source(dir.path(), "SRV", &["_many._tcp.example.test"], 0)).await;
        assert_eq!(many.len(), 40);

        // A name that stops resolving keeps its targets; another name still refreshes.
        let metrics = Arc::new(SdMetrics::default());
        let mut r = DnsRefresh::new(
            "job".into(),
            Arc::new(source(
                dir.path(),
                "A",
                &["node1.example.test", "node2.example.test"],
                80,
            )),
            metrics.clone(),
        );
        assert_eq!(
            targets(&r.refresh().await.unwrap()),
            ["127.0.0.1:80", "127.0.0.2:80"]
        );
        std::fs::write(&resolv, "nameserver 127.0.5.4\n").unwrap();
        assert_eq!(
            targets(&r.refresh().await.unwrap()),
            ["127.0.0.1:80", "127.0.0.2:80"],
            "no server answers: the last targets stay"
        );
        assert!(r.episodes.values().all(|e| e.failing));
        // Every name looked up counts as a lookup, each left unanswered as a failure too.
        assert_eq!(
            (metrics.dns_lookups.get(), metrics.dns_lookup_failures.get()),
            (4, 2)
        );
        let err = lookup(
            &ResolvConf::parse("nameserver 127.0.5.4\n"),
            "node1.example.test",
            TYPE_A,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            "could not resolve \"node1.example.test\": all servers responded with errors to at least one search domain"
        );
    }
}
