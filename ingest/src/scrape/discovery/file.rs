//! `file_sd_configs`: files (JSON or YAML lists of target groups, glob patterns allowed)
//! re-read when one changes and every `refresh_interval`. Owns reading and watching those
//! files; what becomes of a group is `target`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use storage::Label;

use super::{Discovered, SdMetrics};
use crate::scrape::config::{FileSdConfig, TargetGroup};

/// The files of one `file_sd_configs` entry and what each held when last read.
pub(crate) struct FileDiscovery {
    config: FileSdConfig,
    /// By path: its modification time and groups. A file that stops parsing keeps its last
    /// good groups (Prometheus logs the error and keeps them too).
    files: BTreeMap<PathBuf, (Option<SystemTime>, Vec<Discovered>)>,
    last_full: Option<Instant>,
    metrics: Arc<SdMetrics>,
}

impl Drop for FileDiscovery {
    /// Prometheus shows the modification times of the files its running discoveries read.
    fn drop(&mut self) {
        for p in self.files.keys() {
            self.metrics.remove_mtime(&p.to_string_lossy());
        }
    }
}

impl FileDiscovery {
    pub(crate) fn new(config: FileSdConfig, metrics: Arc<SdMetrics>) -> FileDiscovery {
        FileDiscovery {
            config,
            files: BTreeMap::new(),
            last_full: None,
            metrics,
        }
    }

    /// Re-lists the patterns and re-reads files that changed (all of them once per
    /// `refresh_interval`). True when the groups changed. A poll that reads files is a scan as
    /// Prometheus times it (it scans when a watched file changes and every interval).
    pub(crate) fn refresh(&mut self, base: &Path) -> bool {
        let started = Instant::now();
        let mut read = false;
        let full = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.config.refresh_interval);
        if full {
            self.last_full = Some(Instant::now());
        }
        let mut seen = BTreeMap::new();
        for pattern in &self.config.files {
            let pattern = base.join(pattern);
            let Ok(paths) = glob::glob(&pattern.to_string_lossy()) else {
                continue;
            };
            for p in paths.flatten() {
                let mtime = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                seen.insert(p, mtime);
            }
        }
        let mut changed = false;
        let metrics = &self.metrics;
        self.files.retain(|p, _| {
            let kept = seen.contains_key(p);
            if !kept {
                metrics.remove_mtime(&p.to_string_lossy());
                changed = true;
            }
            kept
        });
        for (path, mtime) in seen {
            let stale = self
                .files
                .get(&path)
                .is_none_or(|(m, _)| full || *m != mtime || mtime.is_none());
            if !stale {
                continue;
            }
            read = true;
            match read_file(&path) {
                Ok(groups) => {
                    if let Some(secs) = mtime
                        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                    {
                        self.metrics.set_mtime(&path.to_string_lossy(), secs);
                    }
                    let old = self.files.insert(path, (mtime, groups.clone()));
                    changed |= old.map(|(_, g)| g) != Some(groups);
                }
                Err(e) => {
                    self.metrics.file_read_errors.inc();
                    tracing::warn!(file = %path.display(), "file_sd: cannot read target file: {e}");
                    self.files.entry(path).or_insert((mtime, Vec::new())).0 = mtime;
                }
            }
        }
        if read {
            self.metrics
                .file_scan
                .observe(started.elapsed().as_secs_f64());
        }
        changed
    }

    pub(crate) fn groups(&self) -> impl Iterator<Item = &Discovered> {
        self.files.values().flat_map(|(_, g)| g)
    }
}

/// How often file discovery looks at its files' modification times (Prometheus watches them
/// with inotify; a poll this short is as good for target files).
pub(crate) const POLL: Duration = Duration::from_secs(5);

/// One target file: `.json` or `.yml`/`.yaml`, a list of `{targets, labels}`.
fn read_file(path: &Path) -> Result<Vec<Discovered>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let groups: Vec<TargetGroup> = match ext {
        "json" => serde_json::from_str(&text).map_err(|e| e.to_string())?,
        "yml" | "yaml" => {
            if text.trim().is_empty() {
                Vec::new()
            } else {
                serde_yaml::from_str(&text).map_err(|e| e.to_string())?
            }
        }
        _ => {
            return Err(format!(
                "retrieval of target groups from {path:?} failed: unknown file extension"
            ))
        }
    };
    let filepath = Label::new("__meta_filepath", path.to_string_lossy());
    for g in &groups {
        if let Some(bad) = g.labels.keys().find(|k| !storage::relabel::valid_name(k)) {
            return Err(format!("{bad:?} is not a valid label name"));
        }
    }
    Ok(groups
        .into_iter()
        .map(|group| Discovered {
            group,
            meta: vec![filepath.clone()],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_globbed_and_reread_on_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"[{"targets": ["h1:9100", "h2:9100"], "labels": {"dc": "eu"}}]"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("b.yml"), "- targets: ['h3:9100']\n").unwrap();
        let metrics = Arc::new(SdMetrics::default());
        let mut d = FileDiscovery::new(
            FileSdConfig {
                files: vec!["*.json".into(), "*.yml".into()],
                refresh_interval: Duration::from_secs(3600),
            },
            metrics.clone(),
        );
        assert!(d.refresh(dir.path()));
        let targets: Vec<&str> = d
            .groups()
            .flat_map(|g| g.group.targets.iter().map(String::as_str))
            .collect();
        assert_eq!(targets, ["h1:9100", "h2:9100", "h3:9100"]);
        assert!(d
            .groups()
            .all(|g| g.meta[0].value.ends_with(".json") || g.meta[0].value.ends_with(".yml")));
        assert!(!d.refresh(dir.path()), "nothing changed");
        assert_eq!(
            metrics.file_scan.count(),
            1,
            "a poll reading nothing is no scan"
        );
        let a = dir.path().join("a.json").to_string_lossy().into_owned();
        let b = dir.path().join("b.yml").to_string_lossy().into_owned();
        let mtimes = || mtime_lines(&metrics);
        assert_eq!(mtimes().len(), 2, "{:?}", mtimes());
        assert!(mtimes()[0].starts_with(&format!("{{filename=\"{a}\"}} 1")));
        // A broken file keeps its last good groups and read time; a removed one takes them
        // away.
        std::fs::write(dir.path().join("b.yml"), "- targets: [").unwrap();
        filetime_bump(&dir.path().join("b.yml")).unwrap();
        let before = mtimes();
        assert!(!d.refresh(dir.path()));
        assert_eq!(d.groups().count(), 2);
        assert_eq!(metrics.file_read_errors.get(), 1);
        assert_eq!(metrics.file_scan.count(), 2);
        assert_eq!(mtimes(), before);
        std::fs::remove_file(dir.path().join("a.json")).unwrap();
        assert!(d.refresh(dir.path()));
        assert_eq!(d.groups().count(), 1);
        assert_eq!(mtimes().len(), 1);
        assert!(mtimes()[0].contains(&b));
        drop(d);
        assert!(mtimes().is_empty(), "an ended discovery shows no files");
    }

    /// The `prometheus_sd_file_mtime_seconds` samples' labels and values.
    fn mtime_lines(metrics: &SdMetrics) -> Vec<String> {
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let mut lines: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("prometheus_sd_file_mtime_seconds"))
            .map(String::from)
            .collect();
        lines.sort();
        lines
    }

    /// Modification times have a coarse granularity on some filesystems: move it forward.
    fn filetime_bump(p: &Path) -> std::io::Result<()> {
        let f = std::fs::File::options().write(true).open(p)?;
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
    }

    #[test]
    fn bad_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "[]").unwrap();
        assert!(read_file(&p)
            .unwrap_err()
            .contains("unknown file extension"));
        let p = dir.path().join("t.json");
        std::fs::write(&p, r#"[{"targets": ["a:1"], "labels": {"1x": "y"}}]"#).unwrap();
        assert!(read_file(&p)
            .unwrap_err()
            .contains("not a valid label name"));
    }
}
