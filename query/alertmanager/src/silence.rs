//! Silences: create, update, expire and list them, and whether one mutes a label set now.
//! Semantics follow Alertmanager's silences (states by time, in-place updates only where they
//! do not change what was silenced, otherwise expire and replace). Owns the silence set;
//! persisting it is `state`'s, the HTTP shapes are `api`'s.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use storage::{Labels, MatchOp, Matcher};

/// One matcher in the API's and the state file's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    fn compile(&self) -> Result<Matcher, String> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => MatchOp::Equal,
            (false, false) => MatchOp::NotEqual,
            (true, true) => MatchOp::RegexMatch,
            (true, false) => MatchOp::RegexNoMatch,
        };
        if self.name.is_empty() {
            return Err("invalid label matcher 0: invalid label name \"\"".into());
        }
        Matcher::new(op, &self.name, &self.value)
            .map_err(|e| format!("invalid regular expression {:?}: {e}", self.value))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub updated_at: i64,
    pub created_by: String,
    pub comment: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum State {
    Active,
    Pending,
    Expired,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Pending => "pending",
            State::Expired => "expired",
        }
    }
}

impl Silence {
    pub(crate) fn state(&self, now: i64) -> State {
        if self.ends_at <= now {
            State::Expired
        } else if self.starts_at > now {
            State::Pending
        } else {
            State::Active
        }
    }
}

#[derive(Debug, PartialEq)]
pub(crate) enum SetError {
    NotFound,
    Invalid(String),
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetError::NotFound => f.write_str("silence not found"),
            SetError::Invalid(m) => f.write_str(m),
        }
    }
}

pub(crate) struct Silences {
    inner: Mutex<Vec<(Silence, Vec<Matcher>)>>,
}

/// A random version-4 UUID, as Alertmanager's silence ids are.
fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: fall back to time and a counter, unique within this process.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b[..8].copy_from_slice(&t.to_le_bytes());
        b[8..].copy_from_slice(
            &N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_le_bytes(),
        );
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn validate(s: &Silence) -> Result<Vec<Matcher>, String> {
    if s.matchers.is_empty() {
        return Err("at least one matcher required".into());
    }
    let ms = s
        .matchers
        .iter()
        .map(SilenceMatcher::compile)
        .collect::<Result<Vec<_>, _>>()?;
    if ms.iter().all(|m| m.matches("")) {
        return Err("at least one matcher must not match the empty string".into());
    }
    if s.ends_at < s.starts_at {
        return Err("end time must not be before start time".into());
    }
    Ok(ms)
}

impl Silences {
    /// Loads persisted silences; any that no longer compile are dropped with a warning.
    pub(crate) fn new(loaded: Vec<Silence>) -> Silences {
        let inner = loaded
            .into_iter()
            .filter_map(|s| match validate(&s) {
                Ok(ms) => Some((s, ms)),
                Err(e) => {
                    tracing::warn!(id = s.id, "dropping persisted silence: {e}");
                    None
                }
            })
            .collect();
        Silences {
            inner: Mutex::new(inner),
        }
    }

    /// Creates a silence, or updates the one with `s.id`: in place if only its end or comment
    /// change in a way that keeps what it silenced, otherwise by expiring it and creating a
    /// replacement. Returns the id in effect.
    pub(crate) fn set(&self, mut s: Silence, now: i64) -> Result<String, SetError> {
        let ms = validate(&s).map_err(SetError::Invalid)?;
        let mut all = self.inner.lock();
        if !s.id.is_empty() {
            let i = all
                .iter()
                .position(|(p, _)| p.id == s.id)
                .ok_or(SetError::NotFound)?;
            let prev = &all[i].0;
            if can_update(prev, &s, now) {
                s.updated_at = now;
                all[i] = (s.clone(), ms);
                return Ok(s.id);
            }
            if prev.state(now) != State::Expired {
                expire(&mut all[i].0, now);
            }
        }
        s.id = new_id();
        s.starts_at = s.starts_at.max(now);
        s.updated_at = now;
        let id = s.id.clone();
        all.push((s, ms));
        Ok(id)
    }

    /// Ends a silence now; one already expired is left as it is (Alertmanager 0.25 answers
    /// that with success too).
    pub(crate) fn expire(&self, id: &str, now: i64) -> Result<(), SetError> {
        let mut all = self.inner.lock();
        let (s, _) = all
            .iter_mut()
            .find(|(s, _)| s.id == id)
            .ok_or(SetError::NotFound)?;
        if s.state(now) != State::Expired {
            expire(s, now);
        }
        Ok(())
    }

    pub(crate) fn get(&self, id: &str) -> Option<Silence> {
        self.inner
            .lock()
            .iter()
            .find(|(s, _)| s.id == id)
            .map(|(s, _)| s.clone())
    }

    /// Every silence, in Alertmanager's list order: active by end, pending by start, then
    /// expired by end, latest first.
    pub(crate) fn list(&self, now: i64) -> Vec<Silence> {
        let mut v: Vec<Silence> = self.inner.lock().iter().map(|(s, _)| s.clone()).collect();
        v.sort_by(|a, b| {
            let (sa, sb) = (a.state(now), b.state(now));
            sa.cmp(&sb).then_with(|| match sa {
                State::Active => a.ends_at.cmp(&b.ends_at),
                State::Pending => a.starts_at.cmp(&b.starts_at),
                State::Expired => b.ends_at.cmp(&a.ends_at),
            })
        });
        v
    }

    /// Ids of the active silences matching the labels.
    pub(crate) fn mutes(&self, labels: &Labels, now: i64) -> Vec<String> {
        self.inner
            .lock()
            .iter()
            .filter(|(s, ms)| {
                s.state(now) == State::Active && super::matchers::all_match(ms, labels)
            })
            .map(|(s, _)| s.id.clone())
            .collect()
    }

    /// What to persist: everything but silences expired longer ago than the retention.
    pub(crate) fn snapshot(&self, now: i64) -> Vec<Silence> {
        let mut all = self.inner.lock();
        all.retain(|(s, _)| s.ends_at > now - super::state::RETENTION_MS);
        all.iter().map(|(s, _)| s.clone()).collect()
    }
}

fn expire(s: &mut Silence, now: i64) {
    if s.state(now) == State::Pending {
        s.starts_at = now;
    }
    s.ends_at = now;
    s.updated_at = now;
}

fn can_update(prev: &Silence, new: &Silence, now: i64) -> bool {
    if prev.matchers != new.matchers {
        return false;
    }
    match prev.state(now) {
        State::Active => new.starts_at / 1000 == prev.starts_at / 1000 && new.ends_at >= now,
        State::Pending => new.starts_at >= now,
        State::Expired => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sil(id: &str, starts: i64, ends: i64) -> Silence {
        Silence {
            id: id.into(),
            matchers: vec![SilenceMatcher {
                name: "team".into(),
                value: "db".into(),
                is_regex: false,
                is_equal: true,
            }],
            starts_at: starts,
            ends_at: ends,
            updated_at: 0,
            created_by: "me".into(),
            comment: "c".into(),
        }
    }

    #[test]
    fn lifecycle_create_mute_update_expire() {
        let s = Silences::new(vec![]);
        let l = Labels::from_pairs([("team", "db")]);
        let id = s.set(sil("", 1000, 5000), 2000).unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(s.mutes(&l, 2000), std::slice::from_ref(&id));
        assert!(s
            .mutes(&Labels::from_pairs([("team", "web")]), 2000)
            .is_empty());
        assert!(s.mutes(&l, 5000).is_empty(), "ended silences do not mute");
        // Extending an active silence with the same matchers updates it in place.
        let mut upd = s.get(&id).unwrap();
        upd.ends_at = 9000;
        assert_eq!(s.set(upd, 3000).unwrap(), id);
        assert_eq!(s.get(&id).unwrap().ends_at, 9000);
        // Changing the matchers expires the old one and creates a new id.
        let mut other = s.get(&id).unwrap();
        other.matchers[0].value = "web".into();
        let new_id = s.set(other, 4000).unwrap();
        assert_ne!(new_id, id);
        assert_eq!(s.get(&id).unwrap().state(4000), State::Expired);
        assert_eq!(s.expire(&new_id, 4500), Ok(()));
        assert_eq!(s.expire(&new_id, 4600), Ok(()));
        assert_eq!(
            s.get(&new_id).unwrap().ends_at,
            4500,
            "expiring again changes nothing"
        );
        assert_eq!(s.expire("nope", 4600), Err(SetError::NotFound));
        assert_eq!(s.set(sil("nope", 0, 1), 0), Err(SetError::NotFound));
    }

    #[test]
    fn pending_silences_start_later_and_list_orders_by_state() {
        let s = Silences::new(vec![]);
        let pending = s.set(sil("", 8000, 9000), 1000).unwrap();
        let active = s.set(sil("", 0, 7000), 1000).unwrap();
        assert_eq!(
            s.get(&active).unwrap().starts_at,
            1000,
            "start moved to now"
        );
        let l = Labels::from_pairs([("team", "db")]);
        assert_eq!(s.mutes(&l, 1000), std::slice::from_ref(&active));
        let ids: Vec<String> = s.list(1000).into_iter().map(|x| x.id).collect();
        assert_eq!(ids, [active, pending]);
    }

    #[test]
    fn invalid_silences_are_rejected() {
        let s = Silences::new(vec![]);
        let mut bad = sil("", 0, 1000);
        bad.matchers[0].value = String::new();
        assert!(matches!(s.set(bad, 0), Err(SetError::Invalid(m)) if m.contains("empty string")));
        let mut bad = sil("", 0, 1000);
        bad.matchers.clear();
        assert!(s.set(bad, 0).is_err());
        let mut bad = sil("", 0, 1000);
        bad.matchers[0].is_regex = true;
        bad.matchers[0].value = "(".into();
        assert!(s.set(bad, 0).is_err());
    }
}
