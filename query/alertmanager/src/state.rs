//! What the built-in Alertmanager must remember across restarts: the notification log (which
//! alerts of which group each integration was last told about, and when) and the silences.
//! Kept in one JSON file under the data directory, replaced atomically (write, fsync, rename)
//! after every change. Owns the file and the log's bookkeeping; not what is decided from it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::silence::Silence;

/// How long log entries and expired silences are kept (Alertmanager's --data.retention).
pub(crate) const RETENTION_MS: i64 = 120 * 3600 * 1000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub firing: BTreeSet<u64>,
    pub resolved: BTreeSet<u64>,
    /// When the notification was sent, ms since the epoch.
    pub at: i64,
}

/// The notification log, keyed by group key and integration.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Nflog(HashMap<String, Entry>);

impl Nflog {
    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.0.get(key)
    }

    pub(crate) fn log(&mut self, key: String, e: Entry) {
        self.0.insert(key, e);
    }

    pub(crate) fn prune(&mut self, now: i64) {
        self.0.retain(|_, e| e.at > now - RETENTION_MS);
    }
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    nflog: Vec<(String, Entry)>,
    silences: Vec<Silence>,
}

#[derive(Debug)]
pub(crate) struct Loaded {
    pub nflog: Nflog,
    pub silences: Vec<Silence>,
}

pub(crate) struct StateFile {
    path: PathBuf,
    /// Serialises writers so an older snapshot never replaces a newer one.
    lock: parking_lot::Mutex<()>,
}

impl StateFile {
    pub(crate) fn open(dir: &Path) -> Result<StateFile, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating directory: {e}"))?;
        Ok(StateFile {
            path: dir.join("state.json"),
            lock: parking_lot::Mutex::new(()),
        })
    }

    pub(crate) fn load(&self) -> Result<Loaded, String> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    nflog: Nflog::default(),
                    silences: Vec::new(),
                })
            }
            Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
        };
        let d: OnDisk = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is corrupt: {e}", self.path.display()))?;
        Ok(Loaded {
            nflog: Nflog(d.nflog.into_iter().collect()),
            silences: d.silences,
        })
    }

    pub(crate) fn save(&self, nflog: &Nflog, silences: &[Silence]) -> Result<(), String> {
        let _g = self.lock.lock();
        let mut entries: Vec<(String, Entry)> = nflog
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let body = serde_json::to_vec(&OnDisk {
            nflog: entries,
            silences: silences.to_vec(),
        })
        .map_err(|e| e.to_string())?;
        storage::files::replace_durably(&self.path, &body)
            .map_err(|e| format!("writing {}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::open(dir.path()).unwrap();
        let empty = f.load().unwrap();
        assert!(empty.silences.is_empty() && empty.nflog == Nflog::default());
        let mut log = Nflog::default();
        log.log(
            "g|r/webhook/0".into(),
            Entry {
                firing: [1, 2].into(),
                resolved: [3].into(),
                at: 10_000,
            },
        );
        log.log("old".into(), Entry::default());
        log.prune(RETENTION_MS + 1);
        f.save(&log, &[]).unwrap();
        let back = f.load().unwrap();
        assert_eq!(back.nflog, log);
        assert!(back.nflog.get("old").is_none());
        std::fs::write(dir.path().join("state.json"), "{not json").unwrap();
        assert!(f.load().unwrap_err().contains("corrupt"));
    }
}
