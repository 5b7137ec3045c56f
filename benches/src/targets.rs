//! A scrape target simulator: `n` HTTP targets on loopback ports, each serving a
//! node-exporter-like page (`# HELP`, `# TYPE`, the generator's series with their own labels,
//! values moving on every scrape), and counting the scrapes each target answered. Owns the
//! serving only; which scraper scrapes it is each benchmark's.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;

use crate::generator::{node_series, Series};

struct Target {
    series: Mutex<(Vec<Series>, u64)>,
    scrapes: AtomicU64,
}

impl Target {
    /// The page at the next step.
    fn render(&self) -> String {
        let mut guard = self.series.lock();
        let (series, step) = &mut *guard;
        *step += 1;
        render_page(series, *step)
    }
}

/// A node-exporter-like page of `series` at `step`: `# HELP` and `# TYPE` per family, the
/// generator's labels without `job` and with `instance` as `host` (the scraper adds job and
/// instance itself; `host` keeps the page's series apart).
pub fn render_page(series: &mut [Series], step: u64) -> String {
    let mut out = String::with_capacity(series.len() * 80);
    let mut family = String::new();
    for s in series.iter_mut() {
        let v = s.next(step);
        let name = &s
            .labels
            .iter()
            .find(|(n, _)| n == "__name__")
            .expect("named")
            .1;
        let base = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum"))
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        if base != family {
            family = base.to_string();
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {base} Simulated {base}.\n# TYPE {base} {kind}");
        }
        out.push_str(name);
        let own: Vec<(&str, &str)> = s
            .labels
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "__name__" | "job"))
            .map(|(n, v)| {
                (
                    if n == "instance" { "host" } else { n.as_str() },
                    v.as_str(),
                )
            })
            .collect();
        for (i, (n, lv)) in own.iter().enumerate() {
            out.push(if i == 0 { '{' } else { ',' });
            let _ = write!(out, "{n}=\"{lv}\"");
        }
        if !own.is_empty() {
            out.push('}');
        }
        let _ = writeln!(out, " {v}");
    }
    out
}

/// The running targets; they stop when this is dropped.
pub struct Simulator {
    pub addrs: Vec<String>,
    targets: Vec<Arc<Target>>,
    _runtime: tokio::runtime::Runtime,
}

impl Simulator {
    /// `n` targets of `series` series each, served from one thread.
    pub fn start(n: usize, series: usize) -> anyhow::Result<Simulator> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let template = node_series(series);
        let mut addrs = Vec::with_capacity(n);
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Arc::new(Target {
                series: Mutex::new((template.clone(), 0)),
                scrapes: AtomicU64::new(0),
            });
            let served = t.clone();
            let app = Router::new().route(
                "/metrics",
                get(move || {
                    let t = served.clone();
                    async move {
                        t.scrapes.fetch_add(1, Ordering::Relaxed);
                        t.render()
                    }
                }),
            );
            let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            addrs.push(listener.local_addr()?.to_string());
            runtime.spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            targets.push(t);
        }
        Ok(Simulator {
            addrs,
            targets,
            _runtime: runtime,
        })
    }

    /// Scrapes answered so far, per target.
    pub fn scrapes(&self) -> Vec<u64> {
        self.targets
            .iter()
            .map(|t| t.scrapes.load(Ordering::Relaxed))
            .collect()
    }

    /// Samples on one page.
    pub fn samples_per_page(&self) -> usize {
        self.targets.first().map_or(0, |t| t.series.lock().0.len())
    }
}
