//! Log scrubbing: regex rules (and built-in presets) rewriting log lines and structured
//! metadata values before they reach the store. [`Redacting`] wraps the store's
//! `LogWriter`, so forward, Loki push and OTLP logs all pass it.
//!
//! Stream labels are left alone: they are the stream's identity (a redacted label would merge
//! streams and break selectors written against the sender's labels), and they come from the
//! sender's configuration, not from the logged data. Matches are replaced by
//! [`REDACTED`].

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use regex::{Captures, Regex, RegexSet};
use storage::logs::{LogRecord, LogWriter};

/// What the presets put in place of a match.
pub const REDACTED: &str = "<redacted>";

/// The built-in rules, each off unless listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// 13 to 19 digits, optionally grouped by spaces or dashes, passing the Luhn check (so
    /// order numbers and timestamps stay).
    CreditCards,
    /// `Bearer <token>`, and the value of `Authorization: <scheme> <credentials>`.
    BearerTokens,
    /// The password of `scheme://user:password@host`; user and host stay.
    UrlPasswords,
    /// `local@domain.tld`.
    Emails,
}

impl Preset {
    fn name(self) -> &'static str {
        match self {
            Preset::CreditCards => "credit_cards",
            Preset::BearerTokens => "bearer_tokens",
            Preset::UrlPasswords => "url_passwords",
            Preset::Emails => "emails",
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            Preset::CreditCards => r"\b\d(?:[ -]?\d){12,18}\b",
            // A token is at least 8 characters, so prose ("the bearer of") is left alone.
            Preset::BearerTokens => {
                r#"(?i)\b(bearer\s+|authorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic|digest|token)\s+)?)[A-Za-z0-9\-._~+/]{8,}=*"#
            }
            Preset::UrlPasswords => r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]+:)[^@/?#\s]+@",
            Preset::Emails => {
                r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"
            }
        }
    }

    fn replacement(self) -> String {
        match self {
            Preset::CreditCards | Preset::Emails => REDACTED.to_owned(),
            Preset::BearerTokens => format!("${{1}}{REDACTED}"),
            Preset::UrlPasswords => format!("${{1}}{REDACTED}@"),
        }
    }
}

/// A user rule: every match of `regex` becomes `replacement` (`$1`, `${name}` expand to
/// groups, as in `regex::Regex::replace_all`).
#[derive(Debug, Clone)]
pub struct Rule {
    /// The `rule` label of the redaction counter.
    pub name: String,
    pub regex: String,
    pub replacement: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// `index` is the rule's position in the list given to [`Redactor::new`].
    #[error("rule {index} ({name}): {source}")]
    Regex {
        index: usize,
        name: String,
        source: regex::Error,
    },
}

struct Compiled {
    name: String,
    regex: Regex,
    replacement: String,
    /// Matches are replaced only if their digits pass the Luhn check.
    luhn: bool,
}

/// The compiled rules: presets first (in [`Preset`] order), then user rules in order.
pub struct Redactor {
    /// One pass over a value tells which rules match at all; most lines match none.
    set: RegexSet,
    rules: Vec<Compiled>,
}

impl Redactor {
    pub fn new(presets: &[Preset], rules: &[Rule]) -> Result<Redactor, RedactError> {
        let mut compiled = Vec::new();
        for p in [
            Preset::CreditCards,
            Preset::BearerTokens,
            Preset::UrlPasswords,
            Preset::Emails,
        ] {
            if presets.contains(&p) {
                compiled.push(Compiled {
                    name: p.name().to_owned(),
                    regex: Regex::new(p.pattern()).expect("preset patterns are valid"),
                    replacement: p.replacement(),
                    luhn: p == Preset::CreditCards,
                });
            }
        }
        for (index, r) in rules.iter().enumerate() {
            let regex = Regex::new(&r.regex).map_err(|source| RedactError::Regex {
                index,
                name: r.name.clone(),
                source,
            })?;
            compiled.push(Compiled {
                name: r.name.clone(),
                regex,
                replacement: r.replacement.clone(),
                luhn: false,
            });
        }
        let set = RegexSet::new(compiled.iter().map(|c| c.regex.as_str()))
            .expect("each pattern compiled alone");
        Ok(Redactor {
            set,
            rules: compiled,
        })
    }

    /// True when there are no rules: nothing to wrap.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `s` with every rule that matches it applied in order, or None when none matches;
    /// `counted(rule, n)` hears of each rule's replacements.
    fn apply(&self, s: &str, counted: &mut impl FnMut(usize, u64)) -> Option<String> {
        let matched = self.set.matches(s);
        if !matched.matched_any() {
            return None;
        }
        let mut out = Cow::Borrowed(s);
        for i in matched.iter() {
            let rule = &self.rules[i];
            let mut n = 0u64;
            let replaced = rule.regex.replace_all(&out, |caps: &Captures| {
                let whole = &caps[0];
                if rule.luhn && !luhn_valid(whole) {
                    return whole.to_owned();
                }
                n += 1;
                let mut dst = String::new();
                caps.expand(&rule.replacement, &mut dst);
                dst
            });
            if n > 0 {
                counted(i, n);
                out = Cow::Owned(replaced.into_owned());
            }
        }
        match out {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        }
    }

    /// The record with its line and metadata values redacted, or None when nothing matched.
    fn record(&self, r: &LogRecord, counted: &mut impl FnMut(usize, u64)) -> Option<LogRecord> {
        let line = self.apply(&r.line, counted);
        let mut metadata: Option<Vec<(String, String)>> = None;
        for (i, (_, v)) in r.metadata.iter().enumerate() {
            if let Some(v) = self.apply(v, counted) {
                metadata.get_or_insert_with(|| r.metadata.clone())[i].1 = v;
            }
        }
        if line.is_none() && metadata.is_none() {
            return None;
        }
        Some(LogRecord {
            ts_ns: r.ts_ns,
            labels: r.labels.clone(),
            line: line.unwrap_or_else(|| r.line.clone()),
            metadata: metadata.unwrap_or_else(|| r.metadata.clone()),
        })
    }
}

/// The Luhn checksum over the digits of `s` (separators skipped).
fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 1, d * 2) {
            (true, d2) if d2 > 9 => d2 - 9,
            (true, d2) => d2,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

/// A `LogWriter` that redacts records before passing them on. A batch without a match is
/// passed as is; one with a match is copied, with the matching records rewritten.
pub struct Redacting {
    inner: Arc<dyn LogWriter>,
    redactor: Redactor,
    redactions: Family<RuleLabels, Counter>,
}

impl Redacting {
    /// Registers `novamon_log_redactions_total{rule}` in `registry`.
    pub fn new(
        inner: Arc<dyn LogWriter>,
        redactor: Redactor,
        registry: &mut Registry,
    ) -> Redacting {
        let redactions = Family::<RuleLabels, Counter>::default();
        registry.register(
            "novamon_log_redactions",
            "Matches of a log redaction rule replaced at ingest",
            redactions.clone(),
        );
        // Every rule's series exists from the start, at 0, so rates over it are defined.
        for r in &redactor.rules {
            redactions
                .get_or_create(&RuleLabels {
                    rule: r.name.clone(),
                })
                .inc_by(0);
        }
        Redacting {
            inner,
            redactor,
            redactions,
        }
    }
}

impl LogWriter for Redacting {
    fn append(&self, records: &[LogRecord]) -> Result<(), storage::StorageError> {
        let mut counted = |i: usize, n: u64| {
            self.redactions
                .get_or_create(&RuleLabels {
                    rule: self.redactor.rules[i].name.clone(),
                })
                .inc_by(n);
        };
        let mut out: Option<Vec<LogRecord>> = None;
        for (i, r) in records.iter().enumerate() {
            if let Some(red) = self.redactor.record(r, &mut counted) {
                out.get_or_insert_with(|| records.to_vec())[i] = red;
            }
        }
        match out {
            Some(out) => self.inner.append(&out),
            None => self.inner.append(records),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(presets: &[Preset], s: &str) -> String {
        let r = Redactor::new(presets, &[]).unwrap();
        r.apply(s, &mut |_, _| {}).unwrap_or_else(|| s.to_owned())
    }

    #[test]
    fn credit_cards_are_redacted_only_when_they_pass_luhn() {
        let p = [Preset::CreditCards];
        assert_eq!(redact(&p, "card 4111111111111111 ok"), "card <redacted> ok");
        assert_eq!(redact(&p, "card 4111 1111 1111 1111."), "card <redacted>.");
        assert_eq!(redact(&p, "amex 3782-822463-10005"), "amex <redacted>");
        // Near misses: a 16-digit order number failing Luhn, 12 digits, 20 digits.
        for kept in [
            "order 4111111111111112",
            "id 411111111111",
            "n 41111111111111111110",
        ] {
            assert_eq!(redact(&p, kept), kept);
        }
    }

    #[test]
    fn bearer_tokens_and_authorization_values_are_redacted() {
        let p = [Preset::BearerTokens];
        assert_eq!(
            redact(&p, "Authorization: Bearer eyJhbGciOi.J9.abc_-x"),
            "Authorization: Bearer <redacted>"
        );
        assert_eq!(
            redact(&p, r#"{"authorization":"Basic dXNlcjpwYXNz"}"#),
            r#"{"authorization":"Basic <redacted>"}"#
        );
        assert_eq!(
            redact(&p, "sent bearer abcdefgh12345"),
            "sent bearer <redacted>"
        );
        for kept in [
            "the bearer of bad news",
            "Bearer short",
            "unbearer abcdefgh12345",
        ] {
            assert_eq!(redact(&p, kept), kept);
        }
    }

    #[test]
    fn url_passwords_keep_user_and_host() {
        let p = [Preset::UrlPasswords];
        assert_eq!(
            redact(&p, "dsn=postgres://app:s3cr3t@db.internal:5432/x"),
            "dsn=postgres://app:<redacted>@db.internal:5432/x"
        );
        for kept in [
            "http://host:8080/path@x",
            "https://user@host/",
            "at host:port@x",
        ] {
            assert_eq!(redact(&p, kept), kept);
        }
    }

    #[test]
    fn emails_are_redacted() {
        let p = [Preset::Emails];
        assert_eq!(
            redact(&p, "to jane.doe+x@mail.example.com, ok"),
            "to <redacted>, ok"
        );
        for kept in ["root@localhost", "a@b", "@example.com", "x@.com"] {
            assert_eq!(redact(&p, kept), kept);
        }
    }

    #[test]
    fn user_rules_expand_groups_and_count_per_rule() {
        let r = Redactor::new(
            &[Preset::Emails],
            &[Rule {
                name: "pw".into(),
                regex: r"(password=)\S+".into(),
                replacement: "${1}***".into(),
            }],
        )
        .unwrap();
        let mut counts = vec![0; 2];
        let out = r.apply("password=a x@y.io password=b", &mut |i, n| counts[i] += n);
        assert_eq!(out.as_deref(), Some("password=*** <redacted> password=***"));
        assert_eq!(counts, [1, 2]);
        assert_eq!(r.apply("nothing here", &mut |_, _| {}), None);
    }

    #[test]
    fn a_bad_regex_names_its_rule() {
        let rules = [
            Rule {
                name: "ok".into(),
                regex: "a".into(),
                replacement: String::new(),
            },
            Rule {
                name: "bad".into(),
                regex: "(".into(),
                replacement: String::new(),
            },
        ];
        let Err(e) = Redactor::new(&[], &rules) else {
            panic!("accepted an unclosed group");
        };
        assert!(matches!(e, RedactError::Regex { index: 1, .. }), "{e}");
    }

    #[test]
    fn metadata_values_are_redacted_labels_are_not() {
        let r = Redactor::new(&[Preset::Emails], &[]).unwrap();
        let rec = LogRecord {
            ts_ns: 1,
            labels: storage::Labels::from_pairs([("user", "a@b.io")]),
            line: "plain".into(),
            metadata: vec![("from".into(), "a@b.io".into()), ("n".into(), "1".into())],
        };
        let out = r.record(&rec, &mut |_, _| {}).unwrap();
        assert_eq!(out.labels, rec.labels);
        assert_eq!(out.line, "plain");
        assert_eq!(
            out.metadata,
            [
                ("from".into(), "<redacted>".into()),
                ("n".into(), "1".into())
            ]
        );
    }
}
