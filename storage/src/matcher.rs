//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus semantics: regexes are fully
//! anchored and `.` matches newlines; a missing label matches as the empty string.
//! Owns matching a single value; resolving matchers to series is the index's job.

use regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

impl MatchOp {
    /// The operator as PromQL, LogQL and Alertmanager write it.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Matcher, regex::Error> {
        let value = value.into();
        let re = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => {
                Some(Regex::new(&format!("^(?s:{value})$"))?)
            }
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value,
            re,
        })
    }

    /// Whether a label value (empty when the label is absent) satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        match (&self.op, &self.re) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::RegexMatch, Some(re)) => re.is_match(value),
            (MatchOp::RegexNoMatch, Some(re)) => !re.is_match(value),
            (MatchOp::RegexMatch | MatchOp::RegexNoMatch, None) => {
                unreachable!("regex compiled in new")
            }
        }
    }

    /// True when the empty string (an absent label) satisfies this matcher: such matchers
    /// also select series that lack the label altogether.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored_and_dot_matches_newline() {
        let m = Matcher::new(MatchOp::RegexMatch, "a", "fo.").unwrap();
        assert!(m.matches("foo"));
        assert!(m.matches("fo\n"));
        assert!(!m.matches("xfoo"));
        assert!(!m.matches("fooo"));
    }

    #[test]
    fn negative_matchers_match_absent_labels() {
        assert!(Matcher::new(MatchOp::NotEqual, "a", "x")
            .unwrap()
            .matches_empty());
        assert!(!Matcher::new(MatchOp::Equal, "a", "x")
            .unwrap()
            .matches_empty());
        assert!(Matcher::new(MatchOp::RegexMatch, "a", "x|")
            .unwrap()
            .matches_empty());
    }
}
