//! The TraceQL subset Grafana's Tempo data source uses: spanset filters `{ … }` of
//! comparisons on intrinsics (`name`, `status`, `kind`, `duration`, `statusMessage`) and
//! attributes (`resource.x`, `span.x`, `.x`), combined with `&&`/`||` and parentheses inside a
//! filter, and `&&`/`||` between filters. Owns parsing and per-span evaluation; anything else
//! (structural operators, pipelines, aggregates) is a parse error naming what is unsupported.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use regex::Regex;
use storage::traces::{value_text, Seek, StoredSpan};

use crate::search::parse_go_duration;

#[derive(Debug)]
pub enum Query {
    Filter(Cond),
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
}

#[derive(Debug)]
pub enum Cond {
    True,
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Cmp { field: Field, op: Op, value: Lit },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    /// `resource.x` (Some(true)), `span.x` (Some(false)) or `.x` (either).
    Attr {
        resource: Option<bool>,
        key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Re,
    NotRe,
}

#[derive(Debug)]
pub enum Lit {
    Str(String, Option<Regex>),
    Num(f64),
    Bool(bool),
    /// `error`, `ok`, `server`, … (status and kind keywords).
    Keyword(String),
}

/// How deep a query's syntax tree may be: the deepest nesting of parentheses plus the number
/// of `&&`/`||` (a chain `{…} && {…} && …` nests one node per operator). Parsing, matching and
/// dropping the tree recurse through it, and searches run on threads with 2 MiB stacks, so an
/// unbounded tree lets one request overflow the stack and abort the process. Tempo has no such
/// limit; real queries stay far below this one, and a query at the limit evaluates within a
/// 2 MiB stack in the tests' build (opt-level 1, larger frames than release), which the tests
/// check.
pub(crate) const MAX_NESTING: usize = 256;

/// Parses a query; an error names what is unsupported or malformed.
pub fn parse(q: &str) -> Result<Query, ParseError> {
    let toks = lex(q).map_err(ParseError)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        deepest: 0,
        operators: 0,
    };
    let out = p.query().map_err(ParseError)?;
    if p.pos != p.toks.len() {
        return Err(ParseError(format!(
            "unexpected {:?}: only spanset filters combined with && and || are supported",
            p.toks[p.pos]
        )));
    }
    Ok(out)
}

/// A TraceQL query that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    And,
    Or,
    Op(Op),
    Str(String),
    Word(String),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        let two: String = b[i..(i + 2).min(b.len())].iter().collect();
        match c {
            _ if c.is_whitespace() => i += 1,
            '{' | '}' | '(' | ')' => {
                out.push(match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '(' => Tok::LParen,
                    _ => Tok::RParen,
                });
                i += 1;
            }
            '"' | '`' => {
                let quote = c;
                let mut v = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unterminated string".into()),
                        Some(&ch) if ch == quote => break,
                        Some('\\') if quote == '"' => {
                            v.push(*b.get(i + 1).ok_or("unterminated string")?);
                            i += 2;
                        }
                        Some(&ch) => {
                            v.push(ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push(Tok::Str(v));
            }
            _ => {
                let (tok, len) = match two.as_str() {
                    "&&" => (Tok::And, 2),
                    "||" => (Tok::Or, 2),
                    "!=" => (Tok::Op(Op::Ne), 2),
                    ">=" => (Tok::Op(Op::Ge), 2),
                    "<=" => (Tok::Op(Op::Le), 2),
                    "=~" => (Tok::Op(Op::Re), 2),
                    "!~" => (Tok::Op(Op::NotRe), 2),
                    ">>" | "<<" | "~~" | "!>" | "!<" => {
                        return Err(format!("structural operator {two} is not supported"))
                    }
                    _ => match c {
                        '=' => (Tok::Op(Op::Eq), 1),
                        '>' => (Tok::Op(Op::Gt), 1),
                        '<' => (Tok::Op(Op::Lt), 1),
                        '|' => return Err("pipelines are not supported".into()),
                        _ if c.is_alphanumeric() || "._-:/".contains(c) => {
                            let start = i;
                            while i < b.len() && (b[i].is_alphanumeric() || "._-:/".contains(b[i]))
                            {
                                i += 1;
                            }
                            out.push(Tok::Word(b[start..i].iter().collect()));
                            continue;
                        }
                        _ => return Err(format!("unexpected character {c:?}")),
                    },
                };
                out.push(tok);
                i += len;
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Parentheses open at the current token, and the most there have been.
    depth: usize,
    deepest: usize,
    /// `&&` and `||` seen so far.
    operators: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Opens a parenthesis (closed by `leave`); fails past [`MAX_NESTING`].
    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        self.deepest = self.deepest.max(self.depth);
        self.check_nesting()
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Consumes an `&&` or `||`; fails past [`MAX_NESTING`].
    fn operator(&mut self) -> Result<(), String> {
        self.pos += 1;
        self.operators += 1;
        self.check_nesting()
    }

    fn check_nesting(&self) -> Result<(), String> {
        if self.deepest + self.operators > MAX_NESTING {
            return Err(format!(
                "query is nested too deeply or has too many operators (the limit is {MAX_NESTING})"
            ));
        }
        Ok(())
    }

    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(got) if got == t => Ok(()),
            got => Err(format!("expected {t:?}, got {got:?}")),
        }
    }

    fn query(&mut self) -> Result<Query, String> {
        let mut left = self.query_and()?;
        while self.peek() == Some(&Tok::Or) {
            self.operator()?;
            left = Query::Or(Box::new(left), Box::new(self.query_and()?));
        }
        Ok(left)
    }

    fn query_and(&mut self) -> Result<Query, String> {
        let mut left = self.spanset()?;
        while self.peek() == Some(&Tok::And) {
            self.operator()?;
            left = Query::And(Box::new(left), Box::new(self.spanset()?));
        }
        Ok(left)
    }

    fn spanset(&mut self) -> Result<Query, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            self.enter()?;
            let q = self.query()?;
            self.leave();
            self.expect(Tok::RParen)?;
            return Ok(q);
        }
        self.expect(Tok::LBrace)?;
        if self.peek() == Some(&Tok::RBrace) {
            self.pos += 1;
            return Ok(Query::Filter(Cond::True));
        }
        let c = self.cond()?;
        self.expect(Tok::RBrace)?;
        Ok(Query::Filter(c))
    }

    fn cond(&mut self) -> Result<Cond, String> {
        let mut left = self.cond_and()?;
        while self.peek() == Some(&Tok::Or) {
            self.operator()?;
            left = Cond::Or(Box::new(left), Box::new(self.cond_and()?));
        }
        Ok(left)
    }

    fn cond_and(&mut self) -> Result<Cond, String> {
        let mut left = self.primary()?;
        while self.peek() == Some(&Tok::And) {
            self.operator()?;
            left = Cond::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Cond, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            self.enter()?;
            let c = self.cond()?;
            self.leave();
            self.expect(Tok::RParen)?;
            return Ok(c);
        }
        let field = match self.next() {
            Some(Tok::Word(w)) => field(&w)?,
            t => return Err(format!("expected a field, got {t:?}")),
        };
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            t => return Err(format!("expected a comparison, got {t:?}")),
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => {
                let re = match op {
                    Op::Re | Op::NotRe => Some(
                        Regex::new(&format!("^(?:{s})$"))
                            .map_err(|e| format!("invalid regex {s:?}: {e}"))?,
                    ),
                    _ => None,
                };
                Lit::Str(s, re)
            }
            Some(Tok::Word(w)) => literal(&w)?,
            t => return Err(format!("expected a value, got {t:?}")),
        };
        Ok(Cond::Cmp { field, op, value })
    }
}

fn field(w: &str) -> Result<Field, String> {
    Ok(match w {
        "name" | "span:name" => Field::Name,
        "status" | "span:status" => Field::Status,
        "statusMessage" | "span:statusMessage" => Field::StatusMessage,
        "kind" | "span:kind" => Field::Kind,
        "duration" | "span:duration" => Field::Duration,
        _ => {
            if let Some(k) = w.strip_prefix("resource.") {
                Field::Attr {
                    resource: Some(true),
                    key: k.to_owned(),
                }
            } else if let Some(k) = w.strip_prefix("span.") {
                Field::Attr {
                    resource: Some(false),
                    key: k.to_owned(),
                }
            } else if let Some(k) = w.strip_prefix('.') {
                Field::Attr {
                    resource: None,
                    key: k.to_owned(),
                }
            } else {
                return Err(format!("unsupported field {w:?}"));
            }
        }
    })
}

fn literal(w: &str) -> Result<Lit, String> {
    if w == "true" || w == "false" {
        return Ok(Lit::Bool(w == "true"));
    }
    if let Ok(n) = w.parse::<f64>() {
        return Ok(Lit::Num(n));
    }
    if let Some(ns) = parse_go_duration(w) {
        return Ok(Lit::Num(ns as f64));
    }
    match w {
        "error" | "ok" | "unset" | "server" | "client" | "producer" | "consumer" | "internal"
        | "unspecified" => Ok(Lit::Keyword(w.to_owned())),
        _ => Err(format!("unexpected value {w:?}")),
    }
}

fn status_keyword(s: &StoredSpan) -> &'static str {
    match s
        .span
        .status
        .as_ref()
        .map(|st| StatusCode::try_from(st.code))
    {
        Some(Ok(StatusCode::Error)) => "error",
        Some(Ok(StatusCode::Ok)) => "ok",
        _ => "unset",
    }
}

fn kind_keyword(s: &StoredSpan) -> &'static str {
    match SpanKind::try_from(s.span.kind) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Internal) => "internal",
        _ => "unspecified",
    }
}

fn attr<'a>(s: &'a StoredSpan, resource: Option<bool>, key: &str) -> Option<&'a KeyValue> {
    let span = || s.span.attributes.iter().find(|kv| kv.key == key);
    let res = || {
        s.origin
            .resource_attributes()
            .iter()
            .find(|kv| kv.key == key)
    };
    match resource {
        Some(true) => res(),
        Some(false) => span(),
        None => span().or_else(res),
    }
}

fn cmp_num(a: f64, op: Op, b: f64) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
        Op::Lt => a < b,
        Op::Le => a <= b,
        Op::Re | Op::NotRe => false,
    }
}

fn cmp_str(a: &str, op: Op, lit: &str, re: Option<&Regex>) -> bool {
    match op {
        Op::Eq => a == lit,
        Op::Ne => a != lit,
        Op::Gt => a > lit,
        Op::Ge => a >= lit,
        Op::Lt => a < lit,
        Op::Le => a <= lit,
        Op::Re => re.is_some_and(|r| r.is_match(a)),
        Op::NotRe => re.is_some_and(|r| !r.is_match(a)),
    }
}

impl Cond {
    pub fn matches(&self, s: &StoredSpan) -> bool {
        match self {
            Cond::True => true,
            Cond::And(a, b) => a.matches(s) && b.matches(s),
            Cond::Or(a, b) => a.matches(s) || b.matches(s),
            Cond::Cmp { field, op, value } => cmp(s, field, *op, value),
        }
    }

    /// Fields named by the comparisons, for the matched spans' attributes in results.
    pub fn fields(&self, out: &mut Vec<Field>) {
        match self {
            Cond::True => {}
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.fields(out);
                b.fields(out);
            }
            Cond::Cmp { field, .. } => out.push(field.clone()),
        }
    }

    /// An index seek every matching span is under, if the condition pins one down.
    fn seek(&self) -> Option<Seek> {
        match self {
            Cond::Cmp {
                field:
                    Field::Attr {
                        resource: Some(true),
                        key,
                    },
                op: Op::Eq,
                value: Lit::Str(v, _),
            } if key == "service.name" => Some(Seek::Service(v.clone())),
            Cond::Cmp {
                field:
                    Field::Attr {
                        resource: Some(r),
                        key,
                    },
                op: Op::Eq,
                value,
            } => {
                let v = match value {
                    Lit::Str(s, _) => s.clone(),
                    Lit::Bool(b) => b.to_string(),
                    Lit::Num(n) if n.fract() == 0.0 => (*n as i64).to_string(),
                    _ => return None,
                };
                Some(Seek::Attribute {
                    resource: *r,
                    key: key.clone(),
                    value: v,
                })
            }
            Cond::And(a, b) => match (a.seek(), b.seek()) {
                (Some(Seek::Service(s)), other) | (other, Some(Seek::Service(s))) => {
                    match (other, name_eq(a).or_else(|| name_eq(b))) {
                        (_, Some(n)) => Some(Seek::Operation {
                            service: s,
                            name: n,
                        }),
                        _ => Some(Seek::Service(s)),
                    }
                }
                (a, b) => a.or(b),
            },
            _ => None,
        }
    }
}

fn name_eq(c: &Cond) -> Option<String> {
    match c {
        Cond::Cmp {
            field: Field::Name,
            op: Op::Eq,
            value: Lit::Str(s, _),
        } => Some(s.clone()),
        Cond::And(a, b) => name_eq(a).or_else(|| name_eq(b)),
        _ => None,
    }
}

fn cmp(s: &StoredSpan, field: &Field, op: Op, value: &Lit) -> bool {
    match (field, value) {
        (Field::Name, Lit::Str(v, re)) => cmp_str(&s.span.name, op, v, re.as_ref()),
        (Field::StatusMessage, Lit::Str(v, re)) => cmp_str(
            s.span
                .status
                .as_ref()
                .map(|x| x.message.as_str())
                .unwrap_or(""),
            op,
            v,
            re.as_ref(),
        ),
        (Field::Status, Lit::Keyword(k)) => cmp_str(status_keyword(s), op, k, None),
        (Field::Kind, Lit::Keyword(k)) => cmp_str(kind_keyword(s), op, k, None),
        (Field::Duration, Lit::Num(n)) => cmp_num(
            s.span
                .end_time_unix_nano
                .saturating_sub(s.span.start_time_unix_nano) as f64,
            op,
            *n,
        ),
        (Field::Attr { resource, key }, lit) => {
            let Some(v) = attr(s, *resource, key)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.as_ref())
            else {
                // A missing attribute satisfies only `!=`, as in Tempo.
                return op == Op::Ne;
            };
            match (v, lit) {
                (Value::StringValue(a), Lit::Str(b, re)) => cmp_str(a, op, b, re.as_ref()),
                // Tag search (`tags=status=200`) has only strings: compare other types as text.
                (_, Lit::Str(b, re)) => value_text(&AnyValue {
                    value: Some(v.clone()),
                })
                .is_some_and(|a| cmp_str(&a, op, b, re.as_ref())),
                (Value::IntValue(a), Lit::Num(b)) => cmp_num(*a as f64, op, *b),
                (Value::DoubleValue(a), Lit::Num(b)) => cmp_num(*a, op, *b),
                (Value::BoolValue(a), Lit::Bool(b)) => match op {
                    Op::Eq => a == b,
                    Op::Ne => a != b,
                    _ => false,
                },
                _ => false,
            }
        }
        _ => false,
    }
}

impl Query {
    /// Whether a span could be part of a match: it satisfies some filter of the query.
    pub fn candidate(&self, s: &StoredSpan) -> bool {
        match self {
            Query::Filter(c) => c.matches(s),
            Query::And(a, b) | Query::Or(a, b) => a.candidate(s) || b.candidate(s),
        }
    }

    /// The spans of a trace that make it match, or None if it does not.
    pub fn eval<'a>(&self, trace: &'a [StoredSpan]) -> Option<Vec<&'a StoredSpan>> {
        match self {
            Query::Filter(c) => {
                let m: Vec<_> = trace.iter().filter(|s| c.matches(s)).collect();
                (!m.is_empty()).then_some(m)
            }
            Query::And(a, b) => {
                let mut x = a.eval(trace)?;
                x.extend(b.eval(trace)?);
                Some(x)
            }
            Query::Or(a, b) => match (a.eval(trace), b.eval(trace)) {
                (None, None) => None,
                (x, y) => Some(x.into_iter().chain(y).flatten().collect()),
            },
        }
    }

    /// Where to look: the seek of a filter every match must satisfy, else all spans by time.
    pub fn seek(&self) -> Seek {
        match self {
            Query::Filter(c) => c.seek(),
            Query::And(a, b) => Some(a.seek())
                .filter(|s| *s != Seek::Time)
                .or_else(|| Some(b.seek())),
            Query::Or(..) => None,
        }
        .unwrap_or(Seek::Time)
    }

    pub fn fields(&self, out: &mut Vec<Field>) {
        match self {
            Query::Filter(c) => c.fields(out),
            Query::And(a, b) | Query::Or(a, b) => {
                a.fields(out);
                b.fields(out);
            }
        }
    }
}

/// The value text of a span's attribute named by `field` (for result attributes).
pub fn field_value(s: &StoredSpan, f: &Field) -> Option<(String, String)> {
    match f {
        Field::Attr { resource, key } => attr(s, *resource, key)
            .and_then(|kv| Some((key.clone(), value_text(kv.value.as_ref()?)?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
