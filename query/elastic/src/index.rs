//! Index names and index patterns. An index is the set of log streams whose `index` label
//! holds its name; a pattern (`logs-*`, `a,b`, `_all`, `logs-*,-logs-debug`) selects indices
//! as Elasticsearch resolves a search's target. Owns naming rules and pattern matching.

use storage::{MatchOp, Matcher};

use crate::{EsError, INDEX_LABEL};

/// Elasticsearch's rules for a new index's name, with its reasons.
pub fn validate_name(name: &str) -> Result<(), EsError> {
    let refuse = |reason: &str| {
        Err(EsError::InvalidIndexName {
            index: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return refuse("must not be empty");
    }
    if name.len() > 255 {
        return refuse("index name is too long, (must be at most 255 bytes)");
    }
    if name == "." || name == ".." {
        return refuse("must not be '.' or '..'");
    }
    if name.starts_with(['-', '_', '+']) {
        return refuse("must not start with '_', '-', or '+'");
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return refuse("must be lowercase");
    }
    if name.chars().any(|c| {
        matches!(
            c,
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
        )
    }) {
        return refuse(
            r#"must not contain the following characters [ , ", *, \, <, |, ,, >, /, ?, #, :]"#,
        );
    }
    Ok(())
}

/// A search target: names and wildcards, each possibly excluded (`-name`) after a first
/// inclusion, as Elasticsearch's index expression resolver reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPattern {
    parts: Vec<(bool, String)>,
}

impl IndexPattern {
    /// `expr` as in a URL path (`logs-*,other`); empty, `_all` and `*` select every index.
    pub fn parse(expr: &str) -> IndexPattern {
        let mut parts = Vec::new();
        for p in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if p == "_all" {
                parts.push((true, "*".to_owned()));
            } else if let Some(x) = p.strip_prefix('-').filter(|_| !parts.is_empty()) {
                parts.push((false, x.to_owned()));
            } else {
                parts.push((true, p.to_owned()));
            }
        }
        if parts.is_empty() {
            parts.push((true, "*".to_owned()));
        }
        IndexPattern { parts }
    }

    /// Whether the pattern names no index outright (only wildcards): such a target matching
    /// nothing is an empty answer, not `index_not_found_exception`.
    pub fn is_wildcard(&self) -> bool {
        self.parts.iter().any(|(inc, p)| *inc && p.contains('*'))
    }

    /// The concrete names the pattern includes (no wildcards), to report as missing.
    pub fn concrete(&self) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .filter(|(inc, p)| *inc && !p.contains('*'))
            .map(|(_, p)| p.as_str())
    }

    /// The wildcard expressions the pattern includes (`_all` as `*`).
    pub fn wildcards(&self) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .filter(|(inc, p)| *inc && p.contains('*'))
            .map(|(_, p)| p.as_str())
    }

    pub fn matches(&self, index: &str) -> bool {
        let mut hit = false;
        for (include, p) in &self.parts {
            if glob(p, index) {
                hit = *include;
            }
        }
        hit
    }

    /// A matcher on the `index` label selecting the streams of the indices the pattern
    /// includes, for the store to select streams by (exclusions are applied by [`matches`]).
    ///
    /// [`matches`]: IndexPattern::matches
    pub fn matcher(&self) -> Matcher {
        let alternatives: Vec<String> = self
            .parts
            .iter()
            .filter(|(inc, _)| *inc)
            .map(|(_, p)| {
                p.split('*')
                    .map(regex_escape)
                    .collect::<Vec<_>>()
                    .join(".*")
            })
            .collect();
        // `.+`, not `.*`: a stream without the label (pushed through Loki, OTLP) is no index.
        let re = format!("(?:{})", alternatives.join("|")).replace("(?:.*)", ".+");
        Matcher::new(MatchOp::RegexMatch, INDEX_LABEL, re).expect("escaped literal alternatives")
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `*` matches any run of characters, everything else itself.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_chars(&p, &t, '*', None)
}

/// Iterative wildcard matching with backtracking to the last star; `one` matches one char.
pub(crate) fn glob_chars(p: &[char], t: &[char], star: char, one: Option<char>) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == t[ti] || Some(p[pi]) == one) && p[pi] != star {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == star {
            back = Some((pi, ti));
            pi += 1;
        } else if let Some((bp, bt)) = back {
            pi = bp + 1;
            ti = bt + 1;
            back = Some((bp, bt + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == star)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_elasticsearch_rules() {
        assert!(validate_name("logs-2024.01.01").is_ok());
        for bad in ["", "Logs", "_x", "-x", "a*b", "a b", "a,b", ".", "a:b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_include_and_exclude() {
        let p = IndexPattern::parse("logs-*,-logs-debug");
        assert!(p.matches("logs-app"));
        assert!(!p.matches("logs-debug"));
        assert!(!p.matches("metrics"));
        assert!(IndexPattern::parse("_all").matches("x"));
        assert!(IndexPattern::parse("").matches("x"));
        let m = p.matcher();
        assert!(m.matches("logs-app") && m.matches("logs-debug") && !m.matches("other"));
        assert!(!IndexPattern::parse("*").matcher().matches(""));
        let exact = IndexPattern::parse("a.b");
        assert!(exact.matcher().matches("a.b") && !exact.matcher().matches("axb"));
        assert!(!exact.is_wildcard());
        assert_eq!(exact.concrete().collect::<Vec<_>>(), ["a.b"]);
        let mixed = IndexPattern::parse("a,b-*,_all,-c*");
        assert_eq!(mixed.wildcards().collect::<Vec<_>>(), ["b-*", "*"]);
    }

    #[test]
    fn glob_backtracks() {
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("*", ""));
        let p: Vec<char> = "h?llo".chars().collect();
        let t: Vec<char> = "hello".chars().collect();
        assert!(glob_chars(&p, &t, '*', Some('?')));
    }
}
