//! The LogQL parser: a hand-written lexer and recursive-descent parser producing `ast::Expr`.
//! Errors carry Loki's text shape, `parse error at line L, col C: syntax error: ...`. Owns the
//! grammar only.

use gocompat::units::{parse_bytes, parse_go_duration};
use regex::Regex;
use storage::{MatchOp, Matcher};

use crate::ast::*;
use crate::pipeline::{LineMatcher, Pattern};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse error at line {line}, col {col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// A number, duration or byte size as written (`5`, `1.5`, `5m`, `1h30m`, `20MB`).
    Num(String),
    Sym(&'static str),
    Eof,
}

const SYMS: [&str; 26] = [
    "|=", "|~", "|>", "!=", "!~", "!>", "=~", "==", ">=", "<=", "{", "}", "(", ")", "[", "]", ",",
    "|", "=", ">", "<", "+", "-", "*", "/", "%",
];

struct Lexer<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
}

impl<'a> Lexer<'a> {
    fn run(src: &'a str) -> Result<Vec<(Tok, usize)>, ParseError> {
        let mut lx = Lexer {
            src,
            toks: Vec::new(),
        };
        let b = src.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_whitespace() {
                i += 1;
            } else if c == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            } else if c == b'"' || c == b'`' {
                let (s, next) = lx.string(i)?;
                lx.toks.push((Tok::Str(s), i));
                i = next;
            } else if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
            {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                lx.toks.push((Tok::Num(src[start..i].to_owned()), start));
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
                lx.toks.push((Tok::Ident(src[start..i].to_owned()), start));
            } else if c == b'^' {
                lx.toks.push((Tok::Sym("^"), i));
                i += 1;
            } else if let Some(s) = SYMS.iter().find(|s| src[i..].starts_with(**s)) {
                lx.toks.push((Tok::Sym(s), i));
                i += s.len();
            } else {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(error_at(
                    src,
                    i,
                    format!("syntax error: unexpected character {ch:?}"),
                ));
            }
        }
        lx.toks.push((Tok::Eof, src.len()));
        Ok(lx.toks)
    }

    fn string(&self, start: usize) -> Result<(String, usize), ParseError> {
        let quote = self.src.as_bytes()[start] as char;
        let mut out = String::new();
        let mut chars = self.src[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                return Ok((out, start + 1 + i + 1));
            }
            if c == '\\' && quote == '"' {
                let esc = chars.next().map(|(_, c)| c);
                match esc {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('u') => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        out.push(ch.ok_or_else(|| {
                            error_at(self.src, start, "invalid \\u escape".into())
                        })?);
                    }
                    Some(other) => {
                        // Regexes are written with escapes such as \. and \d: keep them as written.
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                }
            } else {
                out.push(c);
            }
        }
        Err(error_at(
            self.src,
            start,
            "syntax error: unterminated string".into(),
        ))
    }
}

fn error_at(src: &str, pos: usize, msg: String) -> ParseError {
    let before = &src[..pos.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ParseError { line, col, msg }
}

/// How deep a query's syntax tree may be: the deepest nesting of parentheses and aggregations
/// plus the number of operators (a chain `1+1+…` or `a="x" and b="y" and …` nests one node per
/// operator). Parsing, evaluating and dropping the tree recurse through it, and queries run on
/// threads with 2 MiB stacks, so an unbounded tree lets one request overflow the stack and
/// abort the process. Loki has no such limit; real queries stay far below this one, and a
/// query at the limit evaluates within a 2 MiB stack in the tests' build (opt-level 1, larger
/// frames than release), which the tests check.
pub(crate) const MAX_NESTING: usize = 256;

pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = Lexer::run(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
        deepest: 0,
        operators: 0,
    };
    let e = p.expr()?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected());
    }
    Ok(e)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// Nesting levels open at the current token, and the most there have been.
    depth: usize,
    deepest: usize,
    /// Binary operators and label-filter conjunctions seen so far.
    operators: usize,
}

impl Parser<'_> {
    /// Opens a nesting level (closed by `leave`); fails past [`MAX_NESTING`].
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        self.deepest = self.deepest.max(self.depth);
        self.check_nesting()
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Counts one more operator node; fails past [`MAX_NESTING`].
    fn operator(&mut self) -> Result<(), ParseError> {
        self.operators += 1;
        self.check_nesting()
    }

    fn check_nesting(&self) -> Result<(), ParseError> {
        if self.deepest + self.operators > MAX_NESTING {
            return Err(self.err(format!(
                "syntax error: query is nested too deeply or has too many operators (the limit is {MAX_NESTING})"
            )));
        }
        Ok(())
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].0
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn unexpected(&self) -> ParseError {
        let (tok, at) = &self.toks[self.pos.min(self.toks.len() - 1)];
        let what = match tok {
            Tok::Ident(s) => format!("IDENTIFIER {s}"),
            Tok::Str(s) => format!("STRING {s:?}"),
            Tok::Num(s) => format!("NUMBER {s}"),
            Tok::Sym(s) => (*s).to_owned(),
            Tok::Eof => "end of input".to_owned(),
        };
        error_at(self.src, *at, format!("syntax error: unexpected {what}"))
    }

    fn err(&self, msg: impl Into<String>) -> ParseError {
        error_at(
            self.src,
            self.toks[self.pos.min(self.toks.len() - 1)].1,
            msg.into(),
        )
    }

    fn expect(&mut self, s: &'static str) -> Result<(), ParseError> {
        if self.peek() == &Tok::Sym(s) {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn eat(&mut self, s: &'static str) -> bool {
        if self.peek() == &Tok::Sym(s) {
            self.next();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Tok::Ident(s) => Ok(s),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Tok::Str(s) => Ok(s),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        if self.peek() == &Tok::Sym("{") {
            let log = self.log_expr()?;
            if self.peek() == &Tok::Eof || self.peek() == &Tok::Sym(")") {
                return Ok(Expr::Log(log));
            }
            return Err(self.unexpected());
        }
        Ok(Expr::Metric(self.binary(0)?))
    }

    fn binop(&self) -> Option<BinOp> {
        Some(match self.peek() {
            Tok::Sym("+") => BinOp::Add,
            Tok::Sym("-") => BinOp::Sub,
            Tok::Sym("*") => BinOp::Mul,
            Tok::Sym("/") => BinOp::Div,
            Tok::Sym("%") => BinOp::Mod,
            Tok::Sym("^") => BinOp::Pow,
            Tok::Sym("==") => BinOp::Eq,
            Tok::Sym("!=") => BinOp::Ne,
            Tok::Sym(">") => BinOp::Gt,
            Tok::Sym(">=") => BinOp::Ge,
            Tok::Sym("<") => BinOp::Lt,
            Tok::Sym("<=") => BinOp::Le,
            Tok::Ident(s) if s == "and" => BinOp::And,
            Tok::Ident(s) if s == "or" => BinOp::Or,
            Tok::Ident(s) if s == "unless" => BinOp::Unless,
            _ => return None,
        })
    }

    /// Precedence climbing; `^` is right-associative.
    fn binary(&mut self, min_prec: u8) -> Result<MetricExpr, ParseError> {
        let mut lhs = self.unary()?;
        while let Some(op) = self.binop() {
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            self.operator()?;
            self.next();
            let bool_modifier = matches!(self.peek(), Tok::Ident(s) if s == "bool");
            if bool_modifier {
                if !op.is_comparison() {
                    return Err(self.err(
                        "syntax error: bool modifier can only be used on comparison operators",
                    ));
                }
                self.next();
            }
            let matching = self.vector_matching(op)?;
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.binary(next_min)?;
            lhs = MetricExpr::Binary {
                op,
                bool_modifier,
                matching,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<MetricExpr, ParseError> {
        match self.peek().clone() {
            Tok::Num(_) | Tok::Sym("-") | Tok::Sym("+") => {
                Ok(MetricExpr::Literal(self.signed_number()?))
            }
            Tok::Sym("(") => {
                self.next();
                self.enter()?;
                let e = self.binary(0)?;
                self.leave();
                self.expect(")")?;
                Ok(MetricExpr::Paren(Box::new(e)))
            }
            Tok::Ident(name) => {
                if let Some((f, _)) = RangeFn::ALL.iter().find(|(_, n)| *n == name) {
                    self.next();
                    return self.range_agg(*f);
                }
                if let Some((op, _)) = AggOp::ALL.iter().find(|(_, n)| *n == name) {
                    self.next();
                    return self.vector_agg(*op);
                }
                if name == "vector" {
                    self.next();
                    self.expect("(")?;
                    let v = self.signed_number()?;
                    self.expect(")")?;
                    return Ok(MetricExpr::VectorLiteral(v));
                }
                Err(self.unexpected())
            }
            _ => Err(self.unexpected()),
        }
    }

    fn signed_number(&mut self) -> Result<f64, ParseError> {
        if self.eat("-") {
            return Ok(-self.number()?);
        }
        self.eat("+");
        self.number()
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        match self.next() {
            Tok::Num(s) => s
                .parse()
                .map_err(|_| self.err(format!("syntax error: invalid number {s}"))),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let without = match self.peek() {
            Tok::Ident(s) if s == "by" => false,
            Tok::Ident(s) if s == "without" => true,
            _ => return Ok(None),
        };
        self.next();
        let labels = self.label_list()?;
        Ok(Some(Grouping { without, labels }))
    }

    /// `(a, b, …)`
    fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect("(")?;
        let mut labels = Vec::new();
        while self.peek() != &Tok::Sym(")") {
            labels.push(self.ident()?);
            if !self.eat(",") {
                break;
            }
        }
        self.expect(")")?;
        Ok(labels)
    }

    /// `on(…)`/`ignoring(…)`, then `group_left`/`group_right` with an optional label list.
    fn vector_matching(&mut self, op: BinOp) -> Result<Option<VectorMatching>, ParseError> {
        let on = match self.peek() {
            Tok::Ident(s) if s == "on" => true,
            Tok::Ident(s) if s == "ignoring" => false,
            _ => return Ok(None),
        };
        self.next();
        let labels = self.label_list()?;
        let side = match self.peek() {
            Tok::Ident(s) if s == "group_left" => Some(GroupSide::Left),
            Tok::Ident(s) if s == "group_right" => Some(GroupSide::Right),
            _ => None,
        };
        let group = match side {
            None => None,
            Some(side) => {
                if matches!(op, BinOp::And | BinOp::Or | BinOp::Unless) {
                    return Err(self.err(format!(
                        "syntax error: no grouping allowed for \"{}\" operation",
                        op.text()
                    )));
                }
                self.next();
                let include = if self.peek() == &Tok::Sym("(") {
                    self.label_list()?
                } else {
                    Vec::new()
                };
                Some((side, include))
            }
        };
        Ok(Some(VectorMatching { on, labels, group }))
    }

    fn vector_agg(&mut self, op: AggOp) -> Result<MetricExpr, ParseError> {
        let mut grouping = self.grouping()?;
        self.expect("(")?;
        let param = if matches!(op, AggOp::Topk | AggOp::Bottomk) {
            let k = self.number()?;
            self.expect(",")?;
            Some(k)
        } else {
            None
        };
        self.enter()?;
        let inner = self.binary(0)?;
        self.leave();
        self.expect(")")?;
        if grouping.is_none() {
            grouping = self.grouping()?;
        }
        Ok(MetricExpr::Vector {
            op,
            param,
            grouping,
            inner: Box::new(inner),
        })
    }

    fn range_agg(&mut self, func: RangeFn) -> Result<MetricExpr, ParseError> {
        self.expect("(")?;
        let param = if func == RangeFn::QuantileOverTime {
            let q = self.number()?;
            self.expect(",")?;
            Some(q)
        } else {
            None
        };
        // `rate(({app="a"} |= "x")[5m])` and `rate({app="a"} |= "x" [5m])` are both valid.
        let parenthesized = self.eat("(");
        let log = self.log_expr()?;
        let mut unwrap = None;
        let mut post_filters = Vec::new();
        while self.peek() == &Tok::Sym("|")
            && matches!(self.peek_at(1), Tok::Ident(s) if s == "unwrap")
        {
            self.next();
            self.next();
            if unwrap.is_some() {
                return Err(self.unexpected());
            }
            let name = self.ident()?;
            unwrap = Some(if self.eat("(") {
                let label = self.ident()?;
                self.expect(")")?;
                if !matches!(name.as_str(), "duration" | "duration_seconds" | "bytes") {
                    return Err(self.err(format!("syntax error: unknown unwrap conversion {name}")));
                }
                Unwrap {
                    label,
                    conversion: Some(name),
                }
            } else {
                Unwrap {
                    label: name,
                    conversion: None,
                }
            });
            while self.peek() == &Tok::Sym("|")
                && !matches!(self.peek_at(1), Tok::Ident(s) if s == "unwrap")
            {
                self.next();
                post_filters.push(self.label_filter()?);
            }
        }
        if parenthesized {
            self.expect(")")?;
        }
        self.expect("[")?;
        let range_ns = self.duration()?;
        self.expect("]")?;
        let offset_ns = if matches!(self.peek(), Tok::Ident(s) if s == "offset") {
            self.next();
            self.duration()?
        } else {
            0
        };
        self.expect(")")?;
        if func.needs_unwrap() && unwrap.is_none() {
            return Err(self.err(format!(
                "invalid aggregation {} without unwrap",
                func.name()
            )));
        }
        if !func.needs_unwrap() && func != RangeFn::Rate && unwrap.is_some() {
            return Err(self.err(format!("invalid aggregation {} with unwrap", func.name())));
        }
        let grouping = self.grouping()?;
        Ok(MetricExpr::Range(RangeExpr {
            func,
            param,
            log,
            unwrap,
            post_filters,
            range_ns,
            offset_ns,
            grouping,
        }))
    }

    fn duration(&mut self) -> Result<i64, ParseError> {
        match self.next() {
            Tok::Num(s) => parse_go_duration(&s)
                .ok_or_else(|| self.err(format!("syntax error: invalid duration {s}"))),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn log_expr(&mut self) -> Result<LogExpr, ParseError> {
        let matchers = self.selector()?;
        let mut stages = Vec::new();
        loop {
            match self.peek().clone() {
                Tok::Sym(op @ ("|=" | "!=" | "|~" | "!~" | "|>" | "!>")) => {
                    self.next();
                    stages.push(Stage::LineFilter(self.line_filter(op)?));
                }
                Tok::Sym("|") if !matches!(self.peek_at(1), Tok::Ident(s) if s == "unwrap") => {
                    self.next();
                    stages.push(self.stage()?);
                }
                _ => break,
            }
        }
        Ok(LogExpr { matchers, stages })
    }

    /// A line filter's values after its operator: `"a"`, or `"a" or "b" …` (a binary `or`
    /// is never followed by a string, so a string after `or` continues the filter).
    fn line_filter(&mut self, op: &str) -> Result<LineFilter, ParseError> {
        let op = match op {
            "|=" => FilterOp::Contains,
            "!=" => FilterOp::NotContains,
            "|~" => FilterOp::Match,
            "!~" => FilterOp::NotMatch,
            "|>" => FilterOp::Pattern,
            _ => FilterOp::NotPattern,
        };
        let mut alternatives = vec![self.filter_value(op)?];
        while matches!(self.peek(), Tok::Ident(s) if s == "or")
            && matches!(self.peek_at(1), Tok::Str(_))
        {
            self.next();
            alternatives.push(self.filter_value(op)?);
        }
        Ok(LineFilter { op, alternatives })
    }

    fn filter_value(&mut self, op: FilterOp) -> Result<FilterValue, ParseError> {
        let value = self.string()?;
        let matcher = match op {
            FilterOp::Contains | FilterOp::NotContains => LineMatcher::Substring,
            FilterOp::Match | FilterOp::NotMatch => LineMatcher::Regex(self.regex(&value)?),
            FilterOp::Pattern | FilterOp::NotPattern => {
                LineMatcher::Pattern(Pattern::parse_filter(&value).map_err(|e| self.err(e))?)
            }
        };
        Ok(FilterValue { value, matcher })
    }

    fn regex(&self, s: &str) -> Result<Regex, ParseError> {
        Regex::new(s).map_err(|e| self.err(format!("invalid regex {s:?}: {e}")))
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, ParseError> {
        self.expect("{")?;
        let mut ms = Vec::new();
        while self.peek() != &Tok::Sym("}") {
            ms.push(self.matcher()?);
            if !self.eat(",") {
                break;
            }
        }
        self.expect("}")?;
        if ms.is_empty() {
            return Err(self.err("syntax error: unexpected }, expecting IDENTIFIER"));
        }
        if ms.iter().all(|m| m.matches("")) {
            return Err(self.err("queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will"));
        }
        Ok(ms)
    }

    fn match_op(&mut self) -> Result<MatchOp, ParseError> {
        let op = match self.peek() {
            Tok::Sym("=") => MatchOp::Equal,
            Tok::Sym("!=") => MatchOp::NotEqual,
            Tok::Sym("=~") => MatchOp::RegexMatch,
            Tok::Sym("!~") => MatchOp::RegexNoMatch,
            _ => return Err(self.unexpected()),
        };
        self.next();
        Ok(op)
    }

    fn matcher(&mut self) -> Result<Matcher, ParseError> {
        let name = self.ident()?;
        let op = self.match_op()?;
        let value = self.string()?;
        Matcher::new(op, name, value).map_err(|e| self.err(format!("invalid regex: {e}")))
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        if self.peek() == &Tok::Sym("(") {
            return Ok(Stage::LabelFilter(self.label_filter()?));
        }
        let Tok::Ident(name) = self.peek().clone() else {
            return Err(self.unexpected());
        };
        // A label filter starts with a label name followed by a comparison.
        let is_filter = matches!(
            self.peek_at(1),
            Tok::Sym("=" | "!=" | "=~" | "!~" | "==" | ">" | ">=" | "<" | "<=")
        );
        if is_filter {
            return Ok(Stage::LabelFilter(self.label_filter()?));
        }
        self.next();
        Ok(match name.as_str() {
            "json" => {
                let mut params = Vec::new();
                while let Tok::Ident(_) = self.peek() {
                    let k = self.ident()?;
                    let expr = if self.eat("=") {
                        self.string()?
                    } else {
                        k.clone()
                    };
                    params.push((k, expr));
                    if !self.eat(",") {
                        break;
                    }
                }
                Stage::Json(params)
            }
            "logfmt" => Stage::Logfmt,
            "regexp" => {
                let s = self.string()?;
                let re = self.regex(&s)?;
                if re.capture_names().flatten().next().is_none() {
                    return Err(self.err("at least one named capture must be supplied"));
                }
                Stage::Regexp(re)
            }
            "pattern" => {
                let p = self.string()?;
                Pattern::parse(&p).map_err(|e| self.err(e))?;
                Stage::Pattern(p)
            }
            "unpack" => Stage::Unpack,
            "decolorize" => Stage::Decolorize,
            "line_format" => {
                let t = self.string()?;
                crate::template::Template::parse(&t).map_err(|e| self.err(e))?;
                Stage::LineFormat(t)
            }
            "label_format" => {
                let mut items = Vec::new();
                loop {
                    let dst = self.ident()?;
                    self.expect("=")?;
                    let v = match self.next() {
                        Tok::Ident(src) => LabelFmt::Rename(src),
                        Tok::Str(t) => {
                            crate::template::Template::parse(&t).map_err(|e| self.err(e))?;
                            LabelFmt::Template(t)
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.unexpected());
                        }
                    };
                    items.push((dst, v));
                    if !self.eat(",") {
                        break;
                    }
                }
                Stage::LabelFormat(items)
            }
            "drop" | "keep" => {
                let mut sels = Vec::new();
                loop {
                    let n = self.ident()?;
                    let matcher = if matches!(self.peek(), Tok::Sym("=" | "!=" | "=~" | "!~")) {
                        let op = self.match_op()?;
                        let v = self.string()?;
                        Some(
                            Matcher::new(op, n.clone(), v)
                                .map_err(|e| self.err(format!("invalid regex: {e}")))?,
                        )
                    } else {
                        None
                    };
                    sels.push(LabelSel { name: n, matcher });
                    if !self.eat(",") {
                        break;
                    }
                }
                if name == "drop" {
                    Stage::Drop(sels)
                } else {
                    Stage::Keep(sels)
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.unexpected());
            }
        })
    }

    /// `a="x"`, `dur > 250ms`, joined by `and`/`,`/space (and) and `or`, with parentheses.
    fn label_filter(&mut self) -> Result<LabelFilter, ParseError> {
        let mut lhs = self.label_filter_and()?;
        while matches!(self.peek(), Tok::Ident(s) if s == "or") {
            self.operator()?;
            self.next();
            let rhs = self.label_filter_and()?;
            lhs = LabelFilter::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn label_filter_and(&mut self) -> Result<LabelFilter, ParseError> {
        let mut lhs = self.label_filter_atom()?;
        loop {
            let and = match self.peek() {
                Tok::Ident(s) if s == "and" => true,
                Tok::Sym(",") => true,
                Tok::Ident(_) => matches!(
                    self.peek_at(1),
                    Tok::Sym("=" | "!=" | "=~" | "!~" | "==" | ">" | ">=" | "<" | "<=")
                ),
                Tok::Sym("(") => true,
                _ => false,
            };
            if !and {
                return Ok(lhs);
            }
            self.operator()?;
            if matches!(self.peek(), Tok::Ident(s) if s == "and") || self.peek() == &Tok::Sym(",") {
                self.next();
            }
            let rhs = self.label_filter_atom()?;
            lhs = LabelFilter::And(Box::new(lhs), Box::new(rhs));
        }
    }

    fn label_filter_atom(&mut self) -> Result<LabelFilter, ParseError> {
        if self.eat("(") {
            self.enter()?;
            let f = self.label_filter()?;
            self.leave();
            self.expect(")")?;
            return Ok(f);
        }
        let name = self.ident()?;
        let op = match self.next() {
            Tok::Sym("=") => None,
            Tok::Sym("==") => Some(CmpOp::Eq),
            Tok::Sym("!=") => Some(CmpOp::Ne),
            Tok::Sym(">") => Some(CmpOp::Gt),
            Tok::Sym(">=") => Some(CmpOp::Ge),
            Tok::Sym("<") => Some(CmpOp::Lt),
            Tok::Sym("<=") => Some(CmpOp::Le),
            Tok::Sym("=~") => {
                let v = self.string()?;
                return Matcher::new(MatchOp::RegexMatch, name, v)
                    .map(LabelFilter::Matcher)
                    .map_err(|e| self.err(e.to_string()));
            }
            Tok::Sym("!~") => {
                let v = self.string()?;
                return Matcher::new(MatchOp::RegexNoMatch, name, v)
                    .map(LabelFilter::Matcher)
                    .map_err(|e| self.err(e.to_string()));
            }
            _ => {
                self.pos -= 1;
                return Err(self.unexpected());
            }
        };
        match (self.next(), op) {
            (Tok::Str(v), None | Some(CmpOp::Eq)) => Ok(LabelFilter::Matcher(
                Matcher::new(MatchOp::Equal, name, v).map_err(|e| self.err(e.to_string()))?,
            )),
            (Tok::Str(v), Some(CmpOp::Ne)) => Ok(LabelFilter::Matcher(
                Matcher::new(MatchOp::NotEqual, name, v).map_err(|e| self.err(e.to_string()))?,
            )),
            (Tok::Num(text), Some(op)) => {
                let (value, kind) = parse_number_like(&text)
                    .ok_or_else(|| self.err(format!("syntax error: invalid value {text}")))?;
                Ok(LabelFilter::Compare {
                    name,
                    op,
                    value,
                    kind,
                    text,
                })
            }
            (Tok::Num(text), None) => {
                let (value, kind) = parse_number_like(&text)
                    .ok_or_else(|| self.err(format!("syntax error: invalid value {text}")))?;
                Ok(LabelFilter::Compare {
                    name,
                    op: CmpOp::Eq,
                    value,
                    kind,
                    text,
                })
            }
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }
}

/// A plain number, a Go duration (as seconds) or a byte size (as bytes).
pub(crate) fn parse_number_like(s: &str) -> Option<(f64, NumKind)> {
    if let Ok(v) = s.parse::<f64>() {
        return Some((v, NumKind::Number));
    }
    if let Some(ns) = parse_go_duration(s) {
        return Some((ns as f64 / 1e9, NumKind::Duration));
    }
    parse_bytes(s).map(|b| (b, NumKind::Bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_print_as_escapes_that_parse_back() {
        // Found by the logql fuzz target: a NUL printed as Rust's `\0` read back as `\` `0`.
        let q = "{job=\"a\u{0}\u{1}\u{7f}\u{85}\"} |= \"\u{0}\"";
        let printed = parse(q).unwrap().to_string();
        assert_eq!(printed, r#"{job="a\u0000\u0001\u007f\u0085"} |= "\u0000""#);
        assert_eq!(parse(&printed).unwrap().to_string(), printed);
    }

    #[test]
    fn canonical_text_round_trips() {
        for q in [
            r#"{app="a", env!="dev", job=~"x.*", ns!~"kube-.*"}"#,
            r#"{app="a"} |= "GET" != "health" |~ "5\\d\\d" !~ "(?i)bot""#,
            r#"{app="a"} | json | logfmt | unpack | decolorize"#,
            r#"{app="a"} | json first="servers[0]", ua="request.headers.ua""#,
            r#"{app="a"} | regexp "(?P<ip>\\S+) (?P<verb>\\w+)" | pattern "<ip> - <_> <status>""#,
            r#"{app="a"} | logfmt | status>=500, latency>250ms | (size<=10KB or level="error")"#,
            r#"{app="a"} | line_format "{{.level}} {{.msg}}" | label_format dst=src, x="{{.y}}-z""#,
            r#"{app="a"} | drop level, method="GET" | keep app, status"#,
            r#"rate({app="a"} |= "x" [5m])"#,
            r#"sum by (level) (count_over_time({app="a"} | json [1m]))"#,
            r#"quantile_over_time(0.99, {app="a"} | logfmt | unwrap duration(latency) | __error__="" [5m] offset 1h) by (path)"#,
            r#"topk(3, sum without (pod) (bytes_rate({app="a"}[1h30m])))"#,
            r#"sum(rate({app="a"}[1m])) / sum(rate({app=~".+"}[1m])) * 100 > bool 5"#,
            r#"absent_over_time({app="a"}[1d]) or (count_over_time({app="b"}[2m]) and count_over_time({app="c"}[2m]))"#,
            r#"sum by (app, level) (rate({app="a"}[1m])) / on(app) group_left(team) sum by (app, team) (rate({app="b"}[1m]))"#,
            r#"rate({app="a"}[1m]) > bool ignoring(level) group_right() rate({app="b"}[1m]) unless on() rate({app="c"}[1m])"#,
            "vector(1) + vector(-2.5)",
            r#"{app="a"} |> "<_> level=info msg=\"request done\" <_>" !> "<_>GET /health<_>""#,
            r#"{app="a"} |= "x" or "y" |~ "a.*" or "b" != "c" or "d" !> "p1 <_>" or "p2 <_>""#,
            r#"count_over_time({app="a"} |> "<_> done" or "<_> failed" [1m])"#,
            r#"{app="a"} | json | line_format "{{.msg}}" |> `<_> <ip>`"#,
        ] {
            let e = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let text = e.to_string();
            let again = parse(&text).unwrap_or_else(|err| panic!("{q} -> {text}: {err}"));
            assert_eq!(again.to_string(), text, "not a fixed point for {q}");
        }
    }

    #[test]
    fn line_filter_alternatives_and_patterns_print_as_loki() {
        let printed = |q: &str| parse(q).unwrap_or_else(|e| panic!("{q}: {e}")).to_string();
        assert_eq!(
            printed(r#"{a="b"} |>  `<_> x` or "<_> y"   or "z <_>" !> "p <_>" or "q <_>""#),
            r#"{a="b"} |> "<_> x" or "<_> y" or "z <_>" !> "p <_>" !> "q <_>""#
        );
        // A binary `or` after a filter is not an alternative.
        assert_eq!(
            printed(r#"count_over_time({a="b"} |= "x" [1m]) or vector(0)"#),
            r#"count_over_time({a="b"} |= "x" [1m]) or vector(0)"#
        );
        let err = |q: &str| parse(q).unwrap_err().to_string();
        assert_eq!(
            err(r#"{a="b"} |> "<_><_>""#),
            "parse error at line 1, col 20: found consecutive capture '<_><_>': invalid expression"
        );
        assert!(err(r#"{a="b"} !> """#).contains("at least one literal or capture"));
        assert!(err(r#"{a="b"} |~ "a" or "(""#).contains("invalid regex"));
        assert!(err(r#"{a="b"} |> "a" or"#).contains("unexpected IDENTIFIER or"));
        assert!(err(r#"{a="b"} | pattern "<a><b>""#).contains("consecutive capture"));
    }

    proptest::proptest! {
        #[test]
        fn pattern_filters_print_as_they_parse(s in "\\PC{0,40}", t in "\\PC{0,40}") {
            let q = format!(
                r#"{{a="b"}} |> {} or {} !> {}"#,
                serde_json::Value::from(s.as_str()),
                serde_json::Value::from(t.as_str()),
                serde_json::Value::from(t.as_str()),
            );
            if let Ok(e) = parse(&q) {
                let printed = e.to_string();
                let again = parse(&printed).map(|e| e.to_string());
                proptest::prop_assert_eq!(again, Ok(printed));
            }
        }
    }

    #[test]
    fn vector_matching_modifiers() {
        let e = parse(r#"rate({a="b"}[1m]) * on (x, y) group_left (z) rate({a="c"}[1m])"#).unwrap();
        let Expr::Metric(MetricExpr::Binary { matching, .. }) = e else {
            panic!("not a binary operation")
        };
        assert_eq!(
            matching,
            Some(VectorMatching {
                on: true,
                labels: vec!["x".into(), "y".into()],
                group: Some((GroupSide::Left, vec!["z".into()])),
            })
        );
        let err = parse(r#"rate({a="b"}[1m]) and on(x) group_left rate({a="c"}[1m])"#).unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"no grouping allowed for "and" operation"#),
            "{err}"
        );
    }

    #[test]
    fn precedence_and_associativity() {
        let e = parse(r#"1 + 2 * 3 ^ 2 ^ 1 - count_over_time({a="b"}[1m])"#).unwrap();
        let Expr::Metric(MetricExpr::Binary {
            op: BinOp::Sub,
            lhs,
            ..
        }) = e
        else {
            panic!("{e:?}")
        };
        assert!(matches!(*lhs, MetricExpr::Binary { op: BinOp::Add, .. }));
    }

    #[test]
    fn errors_have_lokis_shape_and_position() {
        let e = parse(r#"{app="a"} |= "x" | bogus"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "parse error at line 1, col 20: syntax error: unexpected IDENTIFIER bogus"
        );
        let e = parse("{app=\"a\"}\n | = ").unwrap_err();
        assert_eq!((e.line, e.col), (2, 4));
        assert!(parse(r#"{app=~".*"}"#)
            .unwrap_err()
            .msg
            .contains("empty-compatible"));
        assert!(parse(r#"sum_over_time({a="b"}[1m])"#)
            .unwrap_err()
            .msg
            .contains("without unwrap"));
        assert!(parse(r#"rate({a="b"})"#).is_err());
        assert!(parse(r#"{a="b"} | regexp "(no names)""#).is_err());
        assert!(parse(r#"{a="b"#).is_err());
    }

    #[test]
    fn durations_and_byte_sizes() {
        assert_eq!(parse_number_like("42"), Some((42.0, NumKind::Number)));
    }
}
