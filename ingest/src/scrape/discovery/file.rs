//! `file_sd_configs`: files (JSON or YAML lists of target groups, glob patterns allowed)
//! re-read when one changes and every `refresh_interval`. Owns reading and watching those
//! files; what becomes of a group is `target`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use storage::Label;

use super::Discovered;
use crate::scrape::config::{FileSdConfig, TargetGroup};

/// The files of one `file_sd_configs` entry and what each held when last read.
pub(crate) struct FileDiscovery {
    config: FileSdConfig,
    /// By path: its modification time and groups. A file that stops parsing keeps its last
    /// good groups (Prometheus logs the error and keeps them too).
    files: BTreeMap<PathBuf, (Option<SystemTime>, Vec<Discovered>)>,
    last_full: Option<Instant>,
}

impl FileDiscovery {
    pub(crate) fn new(config: FileSdConfig) -> FileDiscovery {
        FileDiscovery {
            config,
            files: BTreeMap::new(),
            last_full: None,
        }
    }

    /// Re-lists the patterns and re-reads files that changed (all of them once per
    /// `refresh_interval`). True when the groups changed.
    pub(crate) fn refresh(&mut self, base: &Path) -> bool {
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
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains_key(p));
        changed |= self.files.len() != before;
        for (path, mtime) in seen {
            let stale = self
                .files
                .get(&path)
                .is_none_or(|(m, _)| full || *m != mtime || mtime.is_none());
            if !stale {
                continue;
            }
            match read_file(&path) {
                Ok(groups) => {
                    let old = self.files.insert(path, (mtime, groups.clone()));
                    changed |= old.map(|(_, g)| g) != Some(groups);
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), "file_sd: cannot read target file: {e}");
                    self.files.entry(path).or_insert((mtime, Vec::new())).0 = mtime;
                }
            }
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
        let mut d = FileDiscovery::new(FileSdConfig {
            files: vec!["*.json".into(), "*.yml".into()],
            refresh_interval: Duration::from_secs(3600),
        });
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
        // A broken file keeps its last good groups; a removed one takes them away.
        std::fs::write(dir.path().join("b.yml"), "- targets: [").unwrap();
        let _ = filetime_bump(&dir.path().join("b.yml"));
        assert!(!d.refresh(dir.path()));
        assert_eq!(d.groups().count(), 2);
        std::fs::remove_file(dir.path().join("a.json")).unwrap();
        assert!(d.refresh(dir.path()));
        assert_eq!(d.groups().count(), 1);
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
