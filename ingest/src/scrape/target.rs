//! A scrape target: from a discovered address and group labels to the label set its samples
//! carry, the URL it is scraped at and when in the interval (Prometheus's `PopulateLabels`
//! and scrape offsets). Owns that derivation; scraping and storing are the loop's.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use storage::relabel;
use storage::{Label, Labels};

use super::config::{parse_duration, PoolConfig, TargetGroup};

const ADDRESS: &str = "__address__";
const SCHEME: &str = "__scheme__";
const METRICS_PATH: &str = "__metrics_path__";
const INTERVAL: &str = "__scrape_interval__";
const TIMEOUT: &str = "__scrape_timeout__";
const PARAM: &str = "__param_";

/// A target after relabelling, ready to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The labels before relabelling (the API's `discoveredLabels`).
    pub discovered: Labels,
    /// The labels its samples carry: no `__`-prefixed ones.
    pub labels: Labels,
    pub scheme: String,
    /// `host:port` as discovered or relabelled.
    pub address: String,
    /// Path and query.
    pub path_and_query: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// What discovery and relabelling made of one address.
#[derive(Debug)]
pub enum Outcome {
    Active(Box<Target>),
    /// Relabelled away; the discovered labels stay visible as a dropped target.
    Dropped(Labels),
    /// A target that cannot be scraped (no address, bad interval): logged, then left out.
    Invalid(Labels, String),
}

/// Go's `time.Duration.String()` for what a config can hold: `15s`, `1m0s`, `1h30m0s`,
/// `500ms` — how Prometheus writes `__scrape_interval__` and the API's intervals.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let s = (ms % 60_000) as f64 / 1000.0;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

/// The targets of one group.
pub fn populate(pool: &PoolConfig, group: &TargetGroup, meta: &[Label]) -> Vec<Outcome> {
    group
        .targets
        .iter()
        .map(|addr| populate_one(pool, addr, group, meta))
        .collect()
}

fn populate_one(pool: &PoolConfig, addr: &str, group: &TargetGroup, meta: &[Label]) -> Outcome {
    let raw = &pool.raw;
    let mut ls: Vec<Label> = vec![Label::new(ADDRESS, addr)];
    let put = |ls: &mut Vec<Label>, n: &str, v: &str| {
        if !v.is_empty() && !ls.iter().any(|l| l.name == n) {
            ls.push(Label::new(n, v));
        }
    };
    for (n, v) in &group.labels {
        put(&mut ls, n, v);
    }
    for l in meta {
        put(&mut ls, &l.name, &l.value);
    }
    put(&mut ls, "job", &raw.job_name);
    put(&mut ls, INTERVAL, &go_duration(pool.interval));
    put(&mut ls, TIMEOUT, &go_duration(pool.timeout));
    put(&mut ls, METRICS_PATH, &raw.metrics_path);
    put(&mut ls, SCHEME, &raw.scheme);
    for (k, v) in &raw.params {
        if let Some(first) = v.first() {
            put(&mut ls, &format!("{PARAM}{k}"), first);
        }
    }
    let discovered = Labels::new(ls.clone());
    let Some(ls) = relabel::process(ls, &pool.relabel) else {
        return Outcome::Dropped(discovered);
    };
    match finish(pool, ls, discovered.clone()) {
        Ok(t) => Outcome::Active(Box::new(t)),
        Err(e) => Outcome::Invalid(discovered, e),
    }
}

fn finish(pool: &PoolConfig, ls: Vec<Label>, discovered: Labels) -> Result<Target, String> {
    let get = |n: &str| {
        ls.iter()
            .find(|l| l.name == n)
            .map_or("", |l| l.value.as_str())
    };
    let address = get(ADDRESS).to_string();
    if address.is_empty() {
        return Err("no address".into());
    }
    if address.contains('/') {
        return Err(format!("{address:?} is not a valid hostname"));
    }
    let parse = |n: &str, what: &str| {
        parse_duration(get(n)).map_err(|e| format!("error parsing scrape {what}: {e}"))
    };
    let interval = parse(INTERVAL, "interval")?;
    let timeout = parse(TIMEOUT, "timeout")?;
    if interval.is_zero() {
        return Err("scrape interval cannot be 0".into());
    }
    if timeout.is_zero() {
        return Err("scrape timeout cannot be 0".into());
    }
    if timeout > interval {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({:?} > {:?})",
            get(TIMEOUT),
            get(INTERVAL)
        ));
    }
    let scheme = get(SCHEME).to_string();
    if !matches!(scheme.as_str(), "http" | "https") {
        return Err(format!("unsupported scheme {scheme:?}"));
    }
    // Parameters: the config's, each overridden by a `__param_<name>` label.
    let mut params: BTreeMap<String, Vec<String>> = pool.raw.params.clone();
    for l in &ls {
        if let Some(name) = l.name.strip_prefix(PARAM) {
            let vs = params.entry(name.to_string()).or_default();
            match vs.first_mut() {
                Some(v) => *v = l.value.clone(),
                None => vs.push(l.value.clone()),
            }
        }
    }
    let mut path_and_query = get(METRICS_PATH).to_string();
    if !path_and_query.starts_with('/') {
        path_and_query.insert(0, '/');
    }
    if !params.is_empty() {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, vs) in &params {
            for v in vs {
                q.append_pair(k, v);
            }
        }
        path_and_query.push(if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        });
        path_and_query.push_str(&q.finish());
    }
    let mut out: Vec<Label> = ls
        .into_iter()
        .filter(|l| !l.name.starts_with("__"))
        .collect();
    if !out.iter().any(|l| l.name == "instance") {
        out.push(Label::new("instance", address.clone()));
    }
    Ok(Target {
        discovered,
        labels: Labels::new(out),
        scheme,
        address,
        path_and_query,
        interval,
        timeout,
    })
}

impl Target {
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.address, self.path_and_query)
    }

    /// Where in each interval this target is scraped: a hash of its identity, so that many
    /// targets spread over the interval and one target keeps its phase across restarts.
    pub fn offset(&self) -> Duration {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.labels.hash(&mut h);
        self.url().hash(&mut h);
        let nanos = self.interval.as_nanos().max(1) as u64;
        Duration::from_nanos(h.finish() % nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::config::ScrapeConfig;

    fn pool(yml: &str) -> PoolConfig {
        let c: ScrapeConfig = serde_yaml::from_str(yml).unwrap();
        c.compile(Duration::from_secs(15), Duration::from_secs(10))
            .unwrap()
    }

    fn group(targets: &[&str], labels: &[(&str, &str)]) -> TargetGroup {
        TargetGroup {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn active(o: Outcome) -> Target {
        match o {
            Outcome::Active(t) => *t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn labels_url_and_discovered_labels_as_prometheus() {
        let p = pool("job_name: node\nparams: {module: [http_2xx]}\n");
        let t = active(populate(&p, &group(&["h:9100"], &[("dc", "eu")]), &[]).remove(0));
        assert_eq!(
            t.labels,
            Labels::from_pairs([("dc", "eu"), ("instance", "h:9100"), ("job", "node")])
        );
        assert_eq!(t.url(), "http://h:9100/metrics?module=http_2xx");
        assert_eq!(t.discovered.get("__scrape_interval__"), Some("15s"));
        assert_eq!(t.discovered.get("__param_module"), Some("http_2xx"));
        assert_eq!(t.discovered.get("__scheme__"), Some("http"));
    }

    #[test]
    fn relabelling_rewrites_address_params_and_drops() {
        // The blackbox exporter pattern from Prometheus's docs.
        let p = pool(
            "job_name: blackbox\nmetrics_path: /probe\nparams: {module: [http_2xx]}\nrelabel_configs:\n  - {source_labels: [__address__], target_label: __param_target}\n  - {source_labels: [__param_target], target_label: instance}\n  - {target_label: __address__, replacement: 'bb:9115'}\n  - {source_labels: [__param_target], regex: '.*skip.*', action: drop}\n",
        );
        let mut out = populate(&p, &group(&["https://example.com", "skip.me"], &[]), &[]);
        assert!(matches!(out.pop(), Some(Outcome::Dropped(_))));
        let t = active(out.pop().unwrap());
        assert_eq!(
            t.url(),
            "http://bb:9115/probe?module=http_2xx&target=https%3A%2F%2Fexample.com"
        );
        assert_eq!(t.labels.get("instance"), Some("https://example.com"));
    }

    #[test]
    fn invalid_targets_say_why() {
        let p = pool(
            "job_name: x\nrelabel_configs: [{target_label: __scrape_timeout__, replacement: 1m}]\n",
        );
        let out = populate(&p, &group(&["h:1", "a/b"], &[]), &[]);
        assert!(
            matches!(&out[0], Outcome::Invalid(_, e) if e.contains("greater than scrape interval"))
        );
        let p = pool("job_name: x\n");
        let out = populate(&p, &group(&["a/b"], &[]), &[]);
        assert!(matches!(&out[0], Outcome::Invalid(_, e) if e.contains("not a valid hostname")));
    }

    #[test]
    fn go_durations() {
        for (ms, s) in [
            (15_000, "15s"),
            (60_000, "1m0s"),
            (5_400_000, "1h30m0s"),
            (500, "500ms"),
            (1_500, "1.5s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(ms)), s);
        }
    }

    #[test]
    fn offsets_spread_within_the_interval() {
        let p = pool("job_name: x\n");
        let addrs: Vec<String> = (0..200).map(|i| format!("h{i}:9100")).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let offs: Vec<Duration> = populate(&p, &group(&refs, &[]), &[])
            .into_iter()
            .map(|o| active(o).offset())
            .collect();
        assert!(offs.iter().all(|o| *o < Duration::from_secs(15)));
        // Spread: each third of the interval gets a fair share.
        for third in 0..3 {
            let n = offs.iter().filter(|o| o.as_secs() / 5 == third).count();
            assert!(n > 40, "{n} of 200 in third {third}");
        }
    }
}
