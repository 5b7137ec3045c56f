//! The pushed groups (Pushgateway semantics): PUT replaces a group's metrics, POST the
//! families of the same names, DELETE removes the group; every group carries
//! `push_time_seconds` and `push_failure_time_seconds`. A push is checked against everything
//! stored as the Pushgateway's consistency check does (no timestamps, one type per family
//! name, no series twice) and refused as a whole, which sets the group's failure time. The
//! groups are written to a file (atomically, synced) before a push is acknowledged, so they
//! survive restarts. Owns the groups; how they reach the TSDB is `expose`'s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::body::{Decoded, Families, Kind};
use super::grouping::GroupingKey;

/// One group as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub labels: GroupingKey,
    pub families: Families,
    /// When each family was last pushed (ms since the epoch).
    pub pushed_at: BTreeMap<String, i64>,
    /// Last successful and last failed push (ms; 0: never).
    pub push_time: i64,
    pub failure_time: i64,
}

impl Group {
    fn new(labels: GroupingKey) -> Group {
        Group {
            labels,
            families: Families::new(),
            pushed_at: BTreeMap::new(),
            push_time: 0,
            failure_time: 0,
        }
    }

    /// The Pushgateway's `last_push_successful`.
    pub fn last_push_successful(&self) -> bool {
        self.failure_time == 0 || self.push_time >= self.failure_time
    }
}

/// Why a push was refused: each is a 400 with this text, as the Pushgateway words it.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("pushed metrics are invalid or inconsistent with existing metrics: {0}")]
    Inconsistent(String),
    #[error("cannot persist the pushed metrics: {0}")]
    Persist(std::io::Error),
}

pub struct PushStore {
    file: PathBuf,
    groups: Mutex<BTreeMap<Vec<(String, String)>, Group>>,
}

fn key(labels: &GroupingKey) -> Vec<(String, String)> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl PushStore {
    /// The groups kept in `dir` (none when it holds no file yet).
    pub fn open(dir: &Path) -> std::io::Result<PushStore> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("groups.json");
        let groups: Vec<Group> = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(PushStore {
            file,
            groups: Mutex::new(groups.into_iter().map(|g| (key(&g.labels), g)).collect()),
        })
    }

    pub fn groups(&self) -> Vec<Group> {
        self.groups.lock().values().cloned().collect()
    }

    /// Writes the groups, replacing the file's last content whole.
    fn persist(&self, groups: &BTreeMap<Vec<(String, String)>, Group>) -> std::io::Result<()> {
        let all: Vec<&Group> = groups.values().collect();
        let bytes = serde_json::to_vec(&all).map_err(std::io::Error::other)?;
        storage::files::replace_durably(&self.file, &bytes)
    }

    /// A push to the group `labels`: all its families replaced (`replace`, PUT) or those of
    /// the pushed names (POST).
    pub fn push(
        &self,
        labels: GroupingKey,
        mut decoded: Decoded,
        replace: bool,
        now_ms: i64,
    ) -> Result<(), PushError> {
        let mut groups = self.groups.lock();
        let k = key(&labels);
        let checked = if decoded.timestamps {
            Err("pushed metrics must not have timestamps".to_string())
        } else {
            sanitize(&mut decoded.families, &labels);
            let mut candidate = groups
                .get(&k)
                .cloned()
                .unwrap_or_else(|| Group::new(labels.clone()));
            if replace {
                candidate.families.clear();
                candidate.pushed_at.clear();
            }
            for (name, family) in decoded.families {
                candidate.pushed_at.insert(name.clone(), now_ms);
                candidate.families.insert(name, family);
            }
            candidate.push_time = now_ms;
            consistent(
                groups.iter().filter(|(gk, _)| **gk != k).map(|(_, g)| g),
                &candidate,
            )
            .map(|()| candidate)
        };
        let result = match checked {
            Ok(group) => {
                groups.insert(k, group);
                Ok(())
            }
            Err(e) => {
                groups
                    .entry(k)
                    .or_insert_with(|| Group::new(labels))
                    .failure_time = now_ms;
                Err(PushError::Inconsistent(e))
            }
        };
        self.persist(&groups).map_err(PushError::Persist)?;
        result
    }

    /// Removes the group (nothing if there is none).
    pub fn delete(&self, labels: &GroupingKey) -> std::io::Result<()> {
        let mut groups = self.groups.lock();
        if groups.remove(&key(labels)).is_some() {
            self.persist(&groups)?;
        }
        Ok(())
    }

    /// Removes every group.
    pub fn wipe(&self) -> std::io::Result<()> {
        let mut groups = self.groups.lock();
        groups.clear();
        self.persist(&groups)
    }
}

/// The Pushgateway's `sanitizeLabels`: every sample gets the grouping labels (theirs win) and
/// an `instance` label, empty when neither the sample nor the key has one.
fn sanitize(families: &mut Families, grouping: &GroupingKey) {
    for f in families.values_mut() {
        for s in &mut f.samples {
            for (n, v) in grouping {
                s.labels.insert(n.clone(), v.clone());
            }
            s.labels.entry("instance".into()).or_default();
        }
    }
}

/// What the Pushgateway's gatherer refuses of all groups together: a family name with two
/// types, or the same series twice.
fn consistent<'a>(
    others: impl Iterator<Item = &'a Group>,
    candidate: &'a Group,
) -> Result<(), String> {
    let mut kinds: HashMap<&str, Kind> = HashMap::new();
    let mut seen: HashMap<(&str, &BTreeMap<String, String>), ()> = HashMap::new();
    for g in others.chain(std::iter::once(candidate)) {
        for (name, f) in &g.families {
            match kinds.get(name.as_str()) {
                Some(k) if *k != f.kind => {
                    return Err(format!(
                        "collected metric family {name:?} has type {} but should have {}",
                        f.kind.as_str(),
                        k.as_str()
                    ))
                }
                _ => {
                    kinds.insert(name, f.kind);
                }
            }
            for s in &f.samples {
                if seen.insert((s.name.as_str(), &s.labels), ()).is_some() {
                    return Err(format!(
                        "collected metric {:?} {:?} was collected before with the same name and label values",
                        s.name, s.labels
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::body::decode;

    fn key(pairs: &[(&str, &str)]) -> GroupingKey {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn push(
        s: &PushStore,
        k: &GroupingKey,
        body: &str,
        replace: bool,
        t: i64,
    ) -> Result<(), PushError> {
        s.push(
            k.clone(),
            decode(body.as_bytes(), None).unwrap(),
            replace,
            t,
        )
    }

    #[test]
    fn put_replaces_post_merges_delete_removes_and_all_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = PushStore::open(dir.path()).unwrap();
        let k = key(&[("job", "batch"), ("instance", "ci")]);
        push(&s, &k, "a 1\nb 2\n", true, 1000).unwrap();
        push(&s, &k, "b 3\nc 4\n", false, 2000).unwrap();
        let g = &s.groups()[0];
        let names: Vec<&str> = g.families.keys().map(String::as_str).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(g.families["b"].samples[0].value, 3.0);
        assert_eq!(g.families["a"].samples[0].labels["job"], "batch");
        assert_eq!(
            (g.push_time, g.pushed_at["a"], g.pushed_at["c"]),
            (2000, 1000, 2000)
        );
        push(&s, &k, "d 5\n", true, 3000).unwrap();
        assert_eq!(s.groups()[0].families.keys().collect::<Vec<_>>(), ["d"]);
        let reopened = PushStore::open(dir.path()).unwrap();
        assert_eq!(reopened.groups(), s.groups());
        s.delete(&k).unwrap();
        assert!(PushStore::open(dir.path()).unwrap().groups().is_empty());
    }

    #[test]
    fn inconsistent_pushes_are_refused_whole_and_set_the_failure_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = PushStore::open(dir.path()).unwrap();
        let a = key(&[("job", "a")]);
        let b = key(&[("job", "b")]);
        push(&s, &a, "# TYPE x counter\nx 1\n", true, 1000).unwrap();
        let e = push(&s, &b, "# TYPE x gauge\nx 1\ny 2\n", true, 2000).unwrap_err();
        assert!(
            e.to_string()
                .contains("has type GAUGE but should have COUNTER"),
            "{e}"
        );
        let e = push(&s, &a, "z 1 1700000000000\n", false, 3000).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("pushed metrics must not have timestamps"),
            "{e}"
        );
        // The grouping label overrides the pushed one: two lines become the same series.
        let e = push(&s, &a, "w{job=\"x\"} 1\nw 2\n", false, 3500).unwrap_err();
        assert!(e.to_string().contains("collected before"), "{e}");
        let groups = s.groups();
        let ga = groups.iter().find(|g| g.labels == a).unwrap();
        assert_eq!(
            ga.families.keys().collect::<Vec<_>>(),
            ["x"],
            "nothing of a refused push"
        );
        assert_eq!((ga.push_time, ga.failure_time), (1000, 3500));
        assert!(!ga.last_push_successful());
        let gb = groups.iter().find(|g| g.labels == b).unwrap();
        assert!(gb.families.is_empty() && gb.push_time == 0 && gb.failure_time == 2000);
    }
}
