//! Deterministic mixed log records for the logs benchmarks (access-log, JSON, logfmt and plain
//! text lines with service/level/host fields, one record carrying a unique needle token) and
//! their encodings for sending: Fluentd forward-protocol PackedForward frames and ClickHouse
//! `JSONEachRow` insert bodies. Owns generation and encoding only; sending and indexing are each
//! benchmark's.

use rmpv::Value;

const SERVICES: [&str; 8] = [
    "checkout", "payments", "catalog", "auth", "search", "cart", "shipping", "gateway",
];
const HOSTS: usize = 24;
const PATHS: [&str; 6] = [
    "/api/v1/orders",
    "/api/v1/users",
    "/api/v2/cart/items",
    "/healthz",
    "/static/app.js",
    "/api/v1/search",
];
const MESSAGES: [&str; 6] = [
    "request completed",
    "cache miss",
    "retrying upstream call",
    "slow query detected",
    "session refreshed",
    "payment authorised",
];

/// The level's share of records is its weight out of 100.
const LEVELS: [(&str, u64); 4] = [("debug", 10), ("info", 70), ("warn", 12), ("error", 8)];
pub const LEVEL_NAMES: [&str; 4] = ["debug", "info", "warn", "error"];

/// A token the default tokenizer keeps whole and that no generated line otherwise contains.
pub const NEEDLE: &str = "qneedle7c1f93ab";

pub struct Record {
    pub ts_ns: i64,
    pub service: &'static str,
    pub level: &'static str,
    pub host: String,
    pub line: String,
}

/// `n` records, evenly spread over `[start_ns, end_ns]`, record `needle_at` holding [`NEEDLE`].
pub struct LogSet {
    pub n: u64,
    pub needle_at: u64,
    pub start_ns: i64,
    pub end_ns: i64,
    /// Sum of line lengths: what the lines would take in a plain log file.
    pub raw_bytes: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: record i is a pure function of i, so every consumer sees the same records.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl LogSet {
    /// The fewest records whose lines total at least `bytes`, ending at `end_ns` and spread
    /// over `span_ns`.
    pub fn sized(bytes: u64, end_ns: i64, span_ns: i64) -> LogSet {
        let mut set = LogSet {
            n: u64::MAX,
            needle_at: u64::MAX,
            start_ns: end_ns - span_ns,
            end_ns,
            raw_bytes: 0,
        };
        let (mut n, mut raw) = (0u64, 0u64);
        while raw < bytes {
            raw += line(n, mix(n), false).len() as u64;
            n += 1;
        }
        set.n = n.max(1);
        set.needle_at = set.n / 2;
        set.raw_bytes = (0..set.n).map(|i| set.record(i).line.len() as u64).sum();
        set
    }

    pub fn ts_ns(&self, i: u64) -> i64 {
        let step = (self.end_ns - self.start_ns) / self.n.max(2) as i64;
        if i + 1 == self.n {
            self.end_ns
        } else {
            self.start_ns + step * i as i64
        }
    }

    pub fn record(&self, i: u64) -> Record {
        let h = mix(i);
        Record {
            ts_ns: self.ts_ns(i),
            service: SERVICES[(h % SERVICES.len() as u64) as usize],
            level: level(h >> 8),
            host: format!("host-{:02}", (h >> 16) % HOSTS as u64),
            line: line(i, h, i == self.needle_at),
        }
    }

    /// PackedForward frames of `per_frame` records each, `chunk` set so the server acks; the
    /// frame's chunk id is its index in decimal.
    pub fn frames(&self, tag: &str, per_frame: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
        let tag = tag.to_owned();
        (0..self.n.div_ceil(per_frame)).map(move |f| {
            let mut entries = Vec::new();
            for i in f * per_frame..((f + 1) * per_frame).min(self.n) {
                let r = self.record(i);
                let secs = (r.ts_ns / 1_000_000_000) as u32;
                let nanos = (r.ts_ns % 1_000_000_000) as u32;
                let time = [secs.to_be_bytes(), nanos.to_be_bytes()].concat();
                let entry = Value::Array(vec![
                    Value::Ext(0, time),
                    Value::Map(vec![
                        ("service".into(), r.service.into()),
                        ("level".into(), r.level.into()),
                        ("host".into(), r.host.into()),
                        ("message".into(), r.line.into()),
                    ]),
                ]);
                encode(&mut entries, &entry);
            }
            let frame = Value::Array(vec![
                tag.as_str().into(),
                Value::Binary(entries),
                Value::Map(vec![("chunk".into(), f.to_string().into())]),
            ]);
            let mut out = Vec::new();
            encode(&mut out, &frame);
            out
        })
    }

    /// ClickHouse `INSERT ... FORMAT JSONEachRow` bodies of `per_batch` records each, one
    /// object a line: `ts` (ns since the epoch), `service`, `level`, `host`, `line`.
    pub fn json_rows(&self, per_batch: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
        (0..self.n.div_ceil(per_batch)).map(move |b| {
            let mut out = Vec::new();
            for i in b * per_batch..((b + 1) * per_batch).min(self.n) {
                let r = self.record(i);
                let row = serde_json::json!({
                    "ts": r.ts_ns, "service": r.service, "level": r.level, "host": r.host,
                    "line": r.line,
                });
                // Writing to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, &row);
                out.push(b'\n');
            }
            out
        })
    }
}

fn encode(out: &mut Vec<u8>, v: &Value) {
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(out, v);
}

fn level(h: u64) -> &'static str {
    let mut x = h % 100;
    for (name, weight) in LEVELS {
        if x < weight {
            return name;
        }
        x -= weight;
    }
    "info"
}

fn line(i: u64, h: u64, needle: bool) -> String {
    let trace = format!("{:016x}", mix(h));
    let user = (h >> 20) % 50_000;
    let ms = (h >> 36) % 2_000;
    let status = [200, 200, 200, 201, 204, 301, 404, 500][((h >> 40) % 8) as usize];
    let path = PATHS[((h >> 44) % PATHS.len() as u64) as usize];
    let msg = MESSAGES[((h >> 48) % MESSAGES.len() as u64) as usize];
    let sec = i % 86_400;
    let clock = format!("{:02}:{:02}:{:02}", sec / 3600, sec / 60 % 60, sec % 60);
    let mut s = match (h >> 4) % 4 {
        0 => format!(
            "10.{}.{}.{} - - [24/Nov/2026:{clock} +0000] \"GET {path}?user={user}&page={} HTTP/1.1\" {status} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\" {ms}ms",
            (h >> 8) % 256,
            (h >> 16) % 256,
            (h >> 24) % 256,
            (h >> 52) % 20,
            (h >> 28) % 100_000,
        ),
        1 => format!(
            "{{\"time\":\"2026-11-24T{clock}Z\",\"msg\":\"{msg}\",\"user_id\":{user},\"order_id\":\"ord-{}\",\"duration_ms\":{ms},\"status\":{status},\"trace_id\":\"{trace}\"}}",
            (h >> 12) % 10_000_000,
        ),
        2 => format!(
            "time=2026-11-24T{clock}Z msg=\"{msg}\" component=cache key=user:{user} latency={ms}ms hit={} trace_id={trace}",
            h & 1 == 0,
        ),
        _ => format!(
            "Connection pool for db-{} exhausted after {ms}ms, waiting for a free slot (active={}, idle={}, waiters={}) request {trace}",
            (h >> 12) % 4,
            (h >> 16) % 64,
            (h >> 24) % 8,
            (h >> 32) % 32,
        ),
    };
    if needle {
        s.push_str(" marker ");
        s.push_str(NEEDLE);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_sets_reach_the_byte_budget_and_hold_one_needle() {
        let set = LogSet::sized(200_000, 2_000_000_000_000, 60_000_000_000);
        assert!(set.raw_bytes >= 200_000);
        let needles = (0..set.n)
            .filter(|&i| set.record(i).line.contains(NEEDLE))
            .count();
        assert_eq!(needles, 1);
        assert_eq!(set.record(set.n - 1).ts_ns, set.end_ns);
        assert!(set.record(0).ts_ns >= set.start_ns);
    }

    #[test]
    fn frames_decode_as_packed_forward_with_every_record() {
        let set = LogSet::sized(50_000, 2_000_000_000_000, 60_000_000_000);
        let mut records = 0;
        for (f, frame) in set.frames("t", 100).enumerate() {
            let v = rmpv::decode::read_value(&mut frame.as_slice()).unwrap();
            let items = v.as_array().unwrap();
            assert_eq!(items[0].as_str(), Some("t"));
            assert_eq!(items[2]["chunk"].as_str(), Some(f.to_string().as_str()));
            let mut entries = items[1].as_slice().unwrap();
            while !entries.is_empty() {
                let e = rmpv::decode::read_value(&mut entries).unwrap();
                assert!(e[1]["message"].is_str());
                records += 1;
            }
        }
        assert_eq!(records, set.n);
    }
}
