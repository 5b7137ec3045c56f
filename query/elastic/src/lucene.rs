//! The Lucene query syntax of `query_string` (what Grafana's and Kibana's query boxes send):
//! terms, `"phrases"`, `field:value`, `field:(a OR b)`, `AND`/`OR`/`NOT` and `&&`/`||`/`!`,
//! `+`/`-`, parentheses, `*`/`?` wildcards, ranges (`[a TO b]`, `{a TO b}`, `>=x`), `_exists_`,
//! escapes; boosts (`^2`) and fuzziness (`~1`) are read and ignored. Owns turning the text
//! into the DSL model ([`Query`]); evaluation is `dsl`'s.
//!
//! Precedence: `NOT` binds tightest, then `AND`, then `OR` and juxtaposition (the default
//! operator, OR unless `default_operator: AND`). Among juxtaposed clauses, `+x` is required
//! and `-x` (or `NOT x`) excluded, the rest optional, as Lucene's boolean clauses are.

use serde_json::Value;

use crate::dsl::{date_ms, BoolQuery, Bound, Query, Range};
use crate::EsError;

/// Parses `text`; bare terms search `default_field` (every field when `None` or `*`).
pub fn parse(
    text: &str,
    default_field: Option<&str>,
    default_and: bool,
    time_field: &str,
    now_ms: i64,
) -> Result<Query, EsError> {
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        default_field: default_field.filter(|f| *f != "*").map(str::to_owned),
        default_and,
        time_field,
        now_ms,
        depth: 0,
    };
    if p.toks.is_empty() {
        return Ok(Query::MatchAll);
    }
    let q = p.expr(None)?;
    if p.pos < p.toks.len() {
        return Err(p.error(format!("unexpected {:?}", p.toks[p.pos])));
    }
    Ok(q)
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A term (escapes resolved; `wild` when it holds an unescaped `*` or `?`).
    Word {
        text: String,
        wild: bool,
    },
    Phrase(String),
    /// `field:` (the colon consumed).
    Field(String),
    And,
    Or,
    Not,
    Plus,
    Minus,
    Open,
    Close,
    /// `[` or `{`, and `]` or `}`: inclusive when square.
    RangeOpen(bool),
    RangeClose(bool),
    To,
    /// `>`, `>=`, `<`, `<=` right after `field:`.
    Cmp(&'static str),
}

fn lex(s: &str) -> Result<Vec<Tok>, EsError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let special = |c: char| " \t\r\n()[]{}\":^~".contains(c);
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\r' | '\n' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            '[' | '{' => {
                out.push(Tok::RangeOpen(c == '['));
                i += 1
            }
            ']' | '}' => {
                out.push(Tok::RangeClose(c == ']'));
                i += 1
            }
            '+' => {
                out.push(Tok::Plus);
                i += 1
            }
            '-' if out.last().is_none_or(|t| !matches!(t, Tok::Field(_))) => {
                out.push(Tok::Minus);
                i += 1
            }
            '!' if chars.get(i + 1) != Some(&'=') => {
                out.push(Tok::Not);
                i += 1
            }
            '&' if chars.get(i + 1) == Some(&'&') => {
                out.push(Tok::And);
                i += 2
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                out.push(Tok::Or);
                i += 2
            }
            '>' | '<' if matches!(out.last(), Some(Tok::Field(_))) => {
                let eq = chars.get(i + 1) == Some(&'=');
                out.push(Tok::Cmp(match (c, eq) {
                    ('>', true) => ">=",
                    ('>', false) => ">",
                    ('<', true) => "<=",
                    _ => "<",
                }));
                i += 1 + usize::from(eq);
            }
            '^' | '~' => {
                // Boost or fuzziness: the number after it is skipped, the clause kept as is.
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(s, "unterminated phrase")),
                        Some('\\') => {
                            if let Some(n) = chars.get(i + 1) {
                                text.push(*n);
                            }
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            text.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Phrase(text));
            }
            _ => {
                let mut text = String::new();
                let mut wild = false;
                while i < chars.len() && !special(chars[i]) {
                    match chars[i] {
                        '\\' => {
                            if let Some(n) = chars.get(i + 1) {
                                text.push(*n);
                            }
                            i += 2;
                        }
                        c => {
                            wild |= c == '*' || c == '?';
                            text.push(c);
                            i += 1;
                        }
                    }
                }
                if chars.get(i) == Some(&':') {
                    i += 1;
                    out.push(Tok::Field(text));
                    continue;
                }
                if text.is_empty() {
                    let what = chars
                        .get(i)
                        .map_or("end of query".to_owned(), |c| format!("'{c}'"));
                    return Err(err(s, &format!("unexpected {what}")));
                }
                out.push(match text.as_str() {
                    "AND" => Tok::And,
                    "OR" => Tok::Or,
                    "NOT" => Tok::Not,
                    "TO" => Tok::To,
                    _ => Tok::Word { text, wild },
                });
            }
        }
    }
    Ok(out)
}

fn err(text: &str, what: &str) -> EsError {
    EsError::Parse {
        kind: "query_shard_exception",
        reason: format!("Failed to parse query [{text}]: {what}"),
    }
}

/// How a juxtaposed clause takes part: `+x`, `-x`/`NOT x`, or plain.
#[derive(Clone, Copy, PartialEq)]
enum Occur {
    Must,
    MustNot,
    Should,
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    default_field: Option<String>,
    default_and: bool,
    time_field: &'a str,
    now_ms: i64,
    /// Clauses open around the one being parsed (groups, `NOT`, `+`, `-`).
    depth: usize,
}

/// How deep clauses may nest: the parser and every walk of the query recurse once per level,
/// and a request body of nothing but `(` must not exhaust a thread's stack.
const MAX_DEPTH: usize = 100;

impl Parser<'_> {
    fn error(&self, what: String) -> EsError {
        EsError::Parse {
            kind: "query_shard_exception",
            reason: format!("Failed to parse query: {what}"),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Clauses up to a `)` or the end: OR-separated groups of AND-chains.
    fn expr(&mut self, field: Option<&str>) -> Result<Query, EsError> {
        let mut groups: Vec<(Occur, Query)> = Vec::new();
        loop {
            match self.peek() {
                None | Some(Tok::Close) => break,
                Some(Tok::Or) => {
                    self.pos += 1;
                    continue;
                }
                Some(Tok::And) => return Err(self.error("AND without a left operand".into())),
                _ => {}
            }
            let first = self.unary(field)?;
            if self.peek() == Some(&Tok::And) {
                // An AND-chain is one plain clause among its juxtaposed neighbours.
                let mut chain = BoolQuery::default();
                add(&mut chain, first);
                while self.peek() == Some(&Tok::And) {
                    self.pos += 1;
                    let next = self.unary(field)?;
                    add(&mut chain, next);
                }
                groups.push((Occur::Should, Query::Bool(Box::new(chain))));
            } else {
                groups.push(first);
            }
        }
        if groups.is_empty() {
            return Err(self.error("empty clause".into()));
        }
        if groups.len() == 1 && groups[0].0 == Occur::Should {
            return Ok(groups.pop().map(|g| g.1).expect("one group"));
        }
        let mut b = BoolQuery::default();
        for (occur, q) in groups {
            match occur {
                Occur::Must => b.must.push(q),
                Occur::MustNot => b.must_not.push(q),
                Occur::Should if self.default_and => b.must.push(q),
                Occur::Should => b.should.push(q),
            }
        }
        if b.must.is_empty() && !b.should.is_empty() {
            b.minimum_should_match = Some(1);
        }
        Ok(Query::Bool(Box::new(b)))
    }

    fn unary(&mut self, field: Option<&str>) -> Result<(Occur, Query), EsError> {
        if self.depth == MAX_DEPTH {
            return Err(self.error(format!("clauses nested deeper than {MAX_DEPTH}")));
        }
        self.depth += 1;
        let clause = self.clause(field);
        self.depth -= 1;
        clause
    }

    fn clause(&mut self, field: Option<&str>) -> Result<(Occur, Query), EsError> {
        match self.peek() {
            Some(Tok::Not) | Some(Tok::Minus) => {
                self.pos += 1;
                let (_, q) = self.unary(field)?;
                Ok((Occur::MustNot, q))
            }
            Some(Tok::Plus) => {
                self.pos += 1;
                let (_, q) = self.unary(field)?;
                Ok((Occur::Must, q))
            }
            _ => Ok((Occur::Should, self.primary(field)?)),
        }
    }

    fn primary(&mut self, field: Option<&str>) -> Result<Query, EsError> {
        match self.next() {
            Some(Tok::Open) => {
                let q = self.expr(field)?;
                match self.next() {
                    Some(Tok::Close) => Ok(q),
                    _ => Err(self.error("missing ')'".into())),
                }
            }
            Some(Tok::Field(f)) => {
                if field.is_some() {
                    return Err(self.error(format!("field {f}: inside a field's group")));
                }
                self.field_value(&f)
            }
            Some(Tok::Word { text, wild }) => Ok(self.term(field, text, wild)),
            Some(Tok::Phrase(p)) => Ok(Query::Phrase {
                field: self.field_or_default(field),
                tokens: crate::doc::tokens(&p),
            }),
            Some(Tok::RangeOpen(incl)) => match field {
                Some(f) => self.range(f, incl),
                None => Err(self.error("a range needs a field".into())),
            },
            other => Err(self.error(format!("unexpected {other:?}"))),
        }
    }

    fn field_or_default(&self, field: Option<&str>) -> Option<String> {
        field
            .map(str::to_owned)
            .or_else(|| self.default_field.clone())
    }

    fn field_value(&mut self, f: &str) -> Result<Query, EsError> {
        match self.peek().cloned() {
            Some(Tok::Open) => {
                self.pos += 1;
                let q = self.expr(Some(f))?;
                match self.next() {
                    Some(Tok::Close) => Ok(q),
                    _ => Err(self.error("missing ')'".into())),
                }
            }
            Some(Tok::Cmp(op)) => {
                self.pos += 1;
                let Some(Tok::Word { text, .. }) = self.next() else {
                    return Err(self.error(format!("{f}:{op} needs a value")));
                };
                let b = self.bound(f, &text, op.starts_with('<'))?;
                let mut r = self.new_range(f);
                match op {
                    ">" => r.gt = b,
                    ">=" => r.gte = b,
                    "<" => r.lt = b,
                    _ => r.lte = b,
                }
                Ok(Query::Range(r))
            }
            _ => {
                if f == "_exists_" {
                    return match self.next() {
                        Some(Tok::Word { text, .. }) => Ok(Query::Exists { field: text }),
                        _ => Err(self.error("_exists_ needs a field name".into())),
                    };
                }
                self.primary(Some(f))
            }
        }
    }

    fn term(&self, field: Option<&str>, text: String, wild: bool) -> Query {
        let field = self.field_or_default(field);
        if wild {
            if text.chars().all(|c| c == '*') {
                return match field {
                    Some(f) => Query::Exists { field: f },
                    None => Query::MatchAll,
                };
            }
            return Query::Wildcard {
                field,
                pattern: text,
            };
        }
        let toks = crate::doc::tokens(&text);
        // A term with punctuation (`web-1`, `10.0.0.1`) is its tokens in a row, as the
        // analyzer splits it; a keyword value equal to the term matches that way too.
        let tokenized = if toks.len() == 1 {
            Query::Match {
                field: field.clone(),
                tokens: toks,
                all: true,
            }
        } else {
            Query::Phrase {
                field: field.clone(),
                tokens: toks,
            }
        };
        match field {
            Some(f) => Query::Bool(Box::new(BoolQuery {
                should: vec![
                    tokenized,
                    Query::Term {
                        field: f,
                        values: vec![text],
                    },
                ],
                minimum_should_match: Some(1),
                ..BoolQuery::default()
            })),
            None => tokenized,
        }
    }

    fn new_range(&self, f: &str) -> Range {
        Range {
            field: f.to_owned(),
            time: f == self.time_field,
            ..Range::default()
        }
    }

    fn bound(&self, f: &str, v: &str, up: bool) -> Result<Option<Bound>, EsError> {
        if v == "*" {
            return Ok(None);
        }
        if f == self.time_field {
            return date_ms(&Value::String(v.to_owned()), None, self.now_ms, up)
                .map(|ms| Some(Bound::Number(ms as f64)));
        }
        Ok(Some(match v.parse::<f64>() {
            Ok(n) => Bound::Number(n),
            Err(_) => Bound::Text(v.to_owned()),
        }))
    }

    fn range(&mut self, f: &str, lower_incl: bool) -> Result<Query, EsError> {
        let value = |p: &mut Self| match p.next() {
            Some(Tok::Word { text, .. }) => Ok(text),
            Some(Tok::Phrase(text)) => Ok(text),
            other => Err(p.error(format!("range: unexpected {other:?}"))),
        };
        let lo = value(self)?;
        if self.next() != Some(Tok::To) {
            return Err(self.error("range: missing TO".into()));
        }
        let hi = value(self)?;
        let Some(Tok::RangeClose(upper_incl)) = self.next() else {
            return Err(self.error("range: missing ']' or '}'".into()));
        };
        let mut r = self.new_range(f);
        let lo = self.bound(f, &lo, false)?;
        let hi = self.bound(f, &hi, true)?;
        if lower_incl {
            r.gte = lo
        } else {
            r.gt = lo
        }
        if upper_incl {
            r.lte = hi
        } else {
            r.lt = hi
        }
        Ok(Query::Range(r))
    }
}

/// Adds one operand of an AND-chain: required, or excluded when negated.
fn add(b: &mut BoolQuery, (occur, q): (Occur, Query)) {
    match occur {
        Occur::MustNot => b.must_not.push(q),
        Occur::Must | Occur::Should => b.must.push(q),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::doc::Document;

    fn doc(message: &str, extra: Value) -> Document {
        let mut fields = BTreeMap::new();
        crate::doc::flatten("", &extra, &mut fields);
        fields.insert("message".into(), json!(message));
        fields.insert("@timestamp".into(), json!("2023-11-14T22:13:20.000Z"));
        Document {
            ts_ns: 1_700_000_000_000_000_000,
            index: "app".into(),
            id: "x".into(),
            fields,
        }
    }

    fn hit(q: &str, d: &Document) -> bool {
        parse(q, None, false, "@timestamp", 1_700_000_100_000)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .matches(d)
    }

    #[test]
    fn syntax() {
        let d = doc(
            "GET /login failed for user Ann",
            json!({"host": "web-1", "status": 503, "kubernetes": {"pod": "api-7"}}),
        );
        for q in [
            "failed",
            "FAILED",
            "failed AND ann",
            "nothing OR failed",
            "failed nothing",
            "\"login failed\"",
            "host:web-1",
            "host:\"web-1\"",
            "host:web*",
            "kubernetes.pod:api-7",
            "status:503",
            "status:[500 TO 599]",
            "status:>=500",
            "status:{502 TO *]",
            "_exists_:host",
            "host:*",
            "NOT host:web-2",
            "failed -nothing",
            "+failed -nothing",
            "!nothing",
            "(failed || nothing) && host:(web-1 OR web-2)",
            "fail*",
            "f?iled",
            "failed^2",
            "failed~1",
            "@timestamp:[now-1h TO now]",
            "*",
            "",
            "message:login\\/x OR failed",
        ] {
            assert!(hit(q, &d), "{q} should match");
        }
        for q in [
            "nothing",
            "failed AND nothing",
            "\"failed login\"",
            "host:web-2",
            "status:[500 TO 502]",
            "status:<500",
            "_exists_:nope",
            "failed -ann",
            "NOT failed",
            "+nothing failed",
            "@timestamp:[now-1m TO now]",
        ] {
            assert!(!hit(q, &d), "{q} should not match");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let groups = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&groups(50), None, false, "@timestamp", 0).is_ok());
        for deep in [groups(100_000), format!("{}a", "NOT ".repeat(100_000))] {
            let got = parse(&deep, None, false, "@timestamp", 0);
            assert!(matches!(got, Err(EsError::Parse { .. })), "{got:?}");
        }
    }

    #[test]
    fn errors_are_bad_requests() {
        for q in ["(a", "a)", "\"open", "AND a", "[1 TO 2]", "f:[1 2]"] {
            let e = parse(q, None, false, "@timestamp", 0).unwrap_err();
            assert_eq!(e.status(), 400, "{q}");
        }
    }

    #[test]
    fn default_and_and_default_field() {
        let d = doc("alpha beta", json!({"other": "gamma"}));
        assert!(parse("alpha gamma", None, false, "t", 0)
            .unwrap()
            .matches(&d));
        assert!(parse("alpha gamma", None, true, "t", 0)
            .unwrap()
            .matches(&d));
        assert!(parse("alpha delta", None, false, "t", 0)
            .unwrap()
            .matches(&d));
        assert!(!parse("alpha delta", None, true, "t", 0)
            .unwrap()
            .matches(&d));
        assert!(!parse("gamma", Some("message"), false, "t", 0)
            .unwrap()
            .matches(&d));
    }

    /// A boolean expression over a few words, rendered fully parenthesized.
    #[derive(Clone, Debug)]
    enum Expr {
        Word(&'static str),
        Not(Box<Expr>),
        And(Box<Expr>, Box<Expr>),
        Or(Box<Expr>, Box<Expr>),
    }

    const WORDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

    fn expr() -> impl Strategy<Value = Expr> {
        let leaf = prop::sample::select(WORDS.to_vec()).prop_map(Expr::Word);
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    impl Expr {
        fn render(&self) -> String {
            match self {
                Expr::Word(w) => w.to_string(),
                Expr::Not(e) => format!("NOT ({})", e.render()),
                Expr::And(a, b) => format!("({}) AND ({})", a.render(), b.render()),
                Expr::Or(a, b) => format!("({}) OR ({})", a.render(), b.render()),
            }
        }

        fn eval(&self, words: &[&str]) -> bool {
            match self {
                Expr::Word(w) => words.contains(w),
                Expr::Not(e) => !e.eval(words),
                Expr::And(a, b) => a.eval(words) && b.eval(words),
                Expr::Or(a, b) => a.eval(words) || b.eval(words),
            }
        }
    }

    proptest! {
        #[test]
        fn boolean_expressions_mean_what_they_say(
            e in expr(),
            present in prop::collection::vec(any::<bool>(), 4),
        ) {
            let words: Vec<&str> = WORDS.iter().zip(&present).filter(|(_, p)| **p).map(|(w, _)| *w).collect();
            let d = doc(&words.join(" "), json!({}));
            let q = parse(&e.render(), None, false, "@timestamp", 0).unwrap();
            prop_assert_eq!(q.matches(&d), e.eval(&words), "{}", e.render());
        }

        #[test]
        fn never_panics(s in "[a-z:()\\[\\]{}\"*?\\\\ +\\-!<>=&|^~]{0,40}") {
            let _ = parse(&s, None, false, "@timestamp", 0);
        }
    }
}
