//! TraceQL text into the syntax tree of `ast`. Owns the lexer, the grammar (Tempo's: `&&` and
//! `||` bind looser than the structural operators, all left-associative; stages joined by `|`;
//! a metrics function ends the pipeline, then `by(…)`, second stages and `with(…)` hints;
//! `compare(…)` takes none but hints), the checks Tempo makes of `compare()`'s arguments, and
//! the nesting limit. Parse errors name what was expected.

use regex::Regex;

use super::ast::*;
use crate::search::parse_go_duration;

/// How deep a query's syntax tree may be: the deepest nesting of parentheses plus the number
/// of binary operators (a chain `{…} && {…} && …` nests one node per operator). Parsing, matching
/// and dropping the tree recurse through it, and searches run on threads with 2 MiB stacks, so
/// an unbounded tree lets one request overflow the stack and abort the process. Tempo has no
/// such limit; real queries stay far below this one, and a query at the limit evaluates within a
/// 2 MiB stack in the tests' build (opt-level 1, larger frames than release), which the tests
/// check.
pub(crate) const MAX_NESTING: usize = 256;

/// A TraceQL query that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

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
    if let Some(t) = p.peek() {
        return Err(ParseError(format!("unexpected {}", t.show())));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    And,
    Or,
    Not,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Re,
    /// `!~`: not-regex inside a filter, not-sibling between spansets.
    NotTilde,
    Tilde,
    Desc,
    Ance,
    NotRel(Relation),
    UnionRel(Relation),
    Str(String),
    Word(String),
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Word(w) => format!("{w:?}"),
            t => format!("{t:?}"),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || "._-:/".contains(c)
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let quoted = |i: &mut usize| -> Result<String, String> {
        let quote = b[*i];
        let mut v = String::new();
        *i += 1;
        loop {
            match b.get(*i) {
                None => return Err("unterminated string".into()),
                Some(&ch) if ch == quote => break,
                Some('\\') if quote == '"' => {
                    let esc = *b.get(*i + 1).ok_or("unterminated string")?;
                    v.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    *i += 2;
                }
                Some(&ch) => {
                    v.push(ch);
                    *i += 1;
                }
            }
        }
        *i += 1;
        Ok(v)
    };
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '`' {
            let v = quoted(&mut i)?;
            out.push(Tok::Str(v));
            continue;
        }
        let rest: String = b[i..(i + 3).min(b.len())].iter().collect();
        const OPS: [(&str, Tok); 28] = [
            ("!>>", Tok::NotRel(Relation::Descendant)),
            ("!<<", Tok::NotRel(Relation::Ancestor)),
            ("&>>", Tok::UnionRel(Relation::Descendant)),
            ("&<<", Tok::UnionRel(Relation::Ancestor)),
            ("&&", Tok::And),
            ("||", Tok::Or),
            ("!=", Tok::Ne),
            ("!~", Tok::NotTilde),
            ("!>", Tok::NotRel(Relation::Child)),
            ("!<", Tok::NotRel(Relation::Parent)),
            ("&>", Tok::UnionRel(Relation::Child)),
            ("&<", Tok::UnionRel(Relation::Parent)),
            ("&~", Tok::UnionRel(Relation::Sibling)),
            (">>", Tok::Desc),
            ("<<", Tok::Ance),
            (">=", Tok::Ge),
            ("<=", Tok::Le),
            ("=~", Tok::Re),
            ("=", Tok::Eq),
            (">", Tok::Gt),
            ("<", Tok::Lt),
            ("~", Tok::Tilde),
            ("!", Tok::Not),
            ("|", Tok::Pipe),
            ("{", Tok::LBrace),
            ("}", Tok::RBrace),
            ("(", Tok::LParen),
            (")", Tok::RParen),
        ];
        if let Some((op, tok)) = OPS.iter().find(|(op, _)| rest.starts_with(op)) {
            out.push(tok.clone());
            i += op.chars().count();
            continue;
        }
        if c == ',' {
            out.push(Tok::Comma);
            i += 1;
            continue;
        }
        if is_word_char(c) || c == '+' {
            let start = i;
            i += 1;
            while i < b.len() && is_word_char(b[i]) {
                i += 1;
            }
            let mut w: String = b[start..i].iter().collect();
            // `span."key with spaces"`: a quoted attribute name after its scope.
            if w.ends_with('.') && b.get(i) == Some(&'"') {
                w.push_str(&quoted(&mut i)?);
            }
            out.push(Tok::Word(w));
            continue;
        }
        return Err(format!("unexpected character {c:?}"));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    /// Parentheses open at the current token, and the most there have been.
    depth: usize,
    deepest: usize,
    /// Binary operators seen so far.
    operators: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
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

    /// Consumes a binary operator; fails past [`MAX_NESTING`].
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
            got => Err(format!(
                "expected {t:?}, got {}",
                got.map_or("the end of the query".into(), |g| g.show())
            )),
        }
    }

    fn query(&mut self) -> Result<Query, String> {
        let pipeline = self.pipeline()?;
        let mut metrics = None;
        if self.peek() == Some(&Tok::Pipe) && self.metrics_follows() {
            self.pos += 1;
            metrics = Some(self.metrics()?);
        }
        let mut hints = Vec::new();
        if self.peek_word() == Some("with") {
            self.pos += 1;
            self.expect(Tok::LParen)?;
            loop {
                let Some(Tok::Word(k)) = self.next() else {
                    return Err("expected a hint name in with(…)".into());
                };
                self.expect(Tok::Eq)?;
                let v = match self.next() {
                    Some(Tok::Str(s)) => Value::Str(s),
                    Some(Tok::Word(w)) => literal(&w)?,
                    t => return Err(format!("expected a hint value, got {t:?}")),
                };
                hints.push((k, v));
                if self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    continue;
                }
                self.expect(Tok::RParen)?;
                break;
            }
        }
        Ok(Query {
            pipeline,
            metrics,
            hints,
        })
    }

    /// Whether the token after a `|` starts a metrics function (which ends the pipeline).
    fn metrics_follows(&self) -> bool {
        matches!(self.peek_at(1), Some(Tok::Word(w)) if METRICS_FNS.contains(&w.as_str()))
    }

    fn pipeline(&mut self) -> Result<Pipeline, String> {
        let mut stages = vec![self.stage()?];
        while self.peek() == Some(&Tok::Pipe) {
            if self.metrics_follows() {
                // The metrics function ends the pipeline; `query` reads it.
                break;
            }
            self.operator()?;
            stages.push(self.stage()?);
        }
        Ok(Pipeline { stages })
    }

    fn stage(&mut self) -> Result<Stage, String> {
        let Some(word) = self.peek_word().map(str::to_owned) else {
            return Ok(Stage::Spanset(self.spanset_expr()?));
        };
        let call = self.peek_at(1) == Some(&Tok::LParen);
        match word.as_str() {
            "by" if call => {
                self.pos += 2;
                let f = self.field()?;
                self.expect(Tok::RParen)?;
                Ok(Stage::By(f))
            }
            "select" if call => {
                self.pos += 2;
                let fields = self.field_list()?;
                Ok(Stage::Select(fields))
            }
            "coalesce" if call => {
                self.pos += 2;
                self.expect(Tok::RParen)?;
                Ok(Stage::Coalesce)
            }
            "count" | "avg" | "min" | "max" | "sum" if call => {
                self.pos += 2;
                let agg = match word.as_str() {
                    "count" => Agg::Count,
                    "avg" => Agg::Avg,
                    "min" => Agg::Min,
                    "max" => Agg::Max,
                    _ => Agg::Sum,
                };
                let field = if agg == Agg::Count {
                    None
                } else {
                    Some(self.field()?)
                };
                self.expect(Tok::RParen)?;
                let op = self
                    .cmp_op()
                    .ok_or_else(|| format!("expected a comparison after {}()", agg.name()))?;
                let value = match self.next() {
                    Some(Tok::Word(w)) => literal(&w)?.number().ok_or_else(|| {
                        format!(
                            "{}() compares with numbers or durations, not {w:?}",
                            agg.name()
                        )
                    })?,
                    t => return Err(format!("expected a number, got {t:?}")),
                };
                Ok(Stage::Scalar {
                    agg,
                    field,
                    op,
                    value,
                })
            }
            "compare" => Err("compare() ends a spanset pipeline: { … } | compare({ … })".into()),
            _ => Err(format!(
                "unexpected {word:?}: expected a spanset or a pipeline stage"
            )),
        }
    }

    fn cmp_op(&mut self) -> Option<Op> {
        let op = match self.peek()? {
            Tok::Eq => Op::Eq,
            Tok::Ne => Op::Ne,
            Tok::Gt => Op::Gt,
            Tok::Ge => Op::Ge,
            Tok::Lt => Op::Lt,
            Tok::Le => Op::Le,
            Tok::Re => Op::Re,
            Tok::NotTilde => Op::NotRe,
            _ => return None,
        };
        self.pos += 1;
        Some(op)
    }

    fn field_list(&mut self) -> Result<Vec<Field>, String> {
        let mut fields = vec![self.field()?];
        while self.peek() == Some(&Tok::Comma) {
            self.pos += 1;
            fields.push(self.field()?);
        }
        self.expect(Tok::RParen)?;
        Ok(fields)
    }

    fn field(&mut self) -> Result<Field, String> {
        match self.next() {
            Some(Tok::Word(w)) => field(&w),
            t => Err(format!("expected a field, got {t:?}")),
        }
    }

    /// Spanset expressions: `||`/`&&` (equal precedence, left to right) over structural
    /// operators (tighter, left to right).
    fn spanset_expr(&mut self) -> Result<SpansetExpr, String> {
        let mut left = self.structural()?;
        loop {
            let op = match self.peek() {
                Some(Tok::And) => SetOp::And,
                Some(Tok::Or) => SetOp::Or,
                _ => return Ok(left),
            };
            self.operator()?;
            left = SpansetExpr::Op(op, Box::new(left), Box::new(self.structural()?));
        }
    }

    fn structural(&mut self) -> Result<SpansetExpr, String> {
        let mut left = self.spanset_term()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Gt) => SetOp::Child,
                Some(Tok::Lt) => SetOp::Parent,
                Some(Tok::Desc) => SetOp::Descendant,
                Some(Tok::Ance) => SetOp::Ancestor,
                Some(Tok::Tilde) => SetOp::Sibling,
                Some(Tok::NotTilde) => SetOp::Not(Relation::Sibling),
                Some(Tok::NotRel(r)) => SetOp::Not(*r),
                Some(Tok::UnionRel(r)) => SetOp::Union(*r),
                _ => return Ok(left),
            };
            self.operator()?;
            left = SpansetExpr::Op(op, Box::new(left), Box::new(self.spanset_term()?));
        }
    }

    fn spanset_term(&mut self) -> Result<SpansetExpr, String> {
        match self.peek() {
            Some(Tok::LParen) => {
                self.pos += 1;
                self.enter()?;
                let p = self.pipeline()?;
                self.leave();
                self.expect(Tok::RParen)?;
                // A pipeline of one spanset expression is that expression.
                Ok(match <[Stage; 1]>::try_from(p.stages) {
                    Ok([Stage::Spanset(e)]) => e,
                    Ok([stage]) => SpansetExpr::Pipeline(Pipeline {
                        stages: vec![stage],
                    }),
                    Err(stages) => SpansetExpr::Pipeline(Pipeline { stages }),
                })
            }
            Some(Tok::LBrace) => Ok(SpansetExpr::Filter(self.filter()?)),
            t => Err(format!(
                "expected a spanset filter {{ … }}, got {}",
                t.map_or("the end of the query".into(), Tok::show)
            )),
        }
    }

    /// `{ … }`: a condition on one span (`{}`: every span).
    fn filter(&mut self) -> Result<Cond, String> {
        self.expect(Tok::LBrace)?;
        if self.peek() == Some(&Tok::RBrace) {
            self.pos += 1;
            return Ok(Cond::all());
        }
        let c = self.cond()?;
        self.expect(Tok::RBrace)?;
        Ok(c)
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
        let mut left = self.cond_unary()?;
        while self.peek() == Some(&Tok::And) {
            self.operator()?;
            left = Cond::And(Box::new(left), Box::new(self.cond_unary()?));
        }
        Ok(left)
    }

    fn cond_unary(&mut self) -> Result<Cond, String> {
        match self.peek() {
            Some(Tok::Not) => {
                self.pos += 1;
                self.enter()?;
                let c = self.cond_unary()?;
                self.leave();
                Ok(Cond::Not(Box::new(c)))
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                self.enter()?;
                let c = self.cond()?;
                self.leave();
                self.expect(Tok::RParen)?;
                Ok(c)
            }
            _ => self.comparison(),
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Operand::Value(Value::Str(s))),
            Some(Tok::Word(w)) => {
                if let Ok(v) = literal(&w) {
                    return Ok(Operand::Value(v));
                }
                field(&w).map(Operand::Field)
            }
            t => Err(format!(
                "expected a field or a value, got {}",
                t.map_or("the end of the query".into(), |t| t.show())
            )),
        }
    }

    fn comparison(&mut self) -> Result<Cond, String> {
        let lhs = self.operand()?;
        let Some(op) = self.cmp_op() else {
            return Ok(Cond::Bare(lhs));
        };
        let rhs = self.operand()?;
        let re = match (op, &rhs) {
            (Op::Re | Op::NotRe, Operand::Value(Value::Str(s))) => Some(
                Regex::new(&format!("^(?:{s})$"))
                    .map_err(|e| format!("invalid regex {s:?}: {e}"))?,
            ),
            (Op::Re | Op::NotRe, _) => {
                return Err("a regular expression must be a string literal".into());
            }
            _ => None,
        };
        Ok(Cond::Cmp { lhs, op, rhs, re })
    }

    fn metrics(&mut self) -> Result<MetricsStage, String> {
        let Some(Tok::Word(name)) = self.next() else {
            return Err("expected a metrics function".into());
        };
        self.expect(Tok::LParen)?;
        if name == "compare" {
            return self.compare().map(MetricsStage::Compare);
        }
        let (func, field) = match name.as_str() {
            "rate" => (MetricsFn::Rate, None),
            "count_over_time" => (MetricsFn::CountOverTime, None),
            "min_over_time"
            | "max_over_time"
            | "sum_over_time"
            | "avg_over_time"
            | "histogram_over_time" => {
                let f = self.field()?;
                let func = match name.as_str() {
                    "min_over_time" => MetricsFn::MinOverTime,
                    "max_over_time" => MetricsFn::MaxOverTime,
                    "sum_over_time" => MetricsFn::SumOverTime,
                    "avg_over_time" => MetricsFn::AvgOverTime,
                    _ => MetricsFn::HistogramOverTime,
                };
                (func, Some(f))
            }
            "quantile_over_time" => {
                let f = self.field()?;
                let mut qs = Vec::new();
                while self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    match self.next() {
                        Some(Tok::Word(w)) => qs.push(
                            w.parse::<f64>()
                                .ok()
                                .filter(|q| (0.0..=1.0).contains(q))
                                .ok_or_else(|| format!("invalid quantile {w:?}"))?,
                        ),
                        t => return Err(format!("expected a quantile, got {t:?}")),
                    }
                }
                if qs.is_empty() {
                    return Err("quantile_over_time needs at least one quantile".into());
                }
                (MetricsFn::QuantileOverTime(qs), Some(f))
            }
            other => return Err(format!("unknown metrics function {other:?}")),
        };
        self.expect(Tok::RParen)?;
        let mut by = Vec::new();
        if self.peek_word() == Some("by") {
            self.pos += 1;
            self.expect(Tok::LParen)?;
            by = self.field_list()?;
        }
        let mut second = Vec::new();
        loop {
            if self.peek() == Some(&Tok::Pipe) {
                self.pos += 1;
                let Some(Tok::Word(w)) = self.next() else {
                    return Err("expected topk(n) or bottomk(n)".into());
                };
                self.expect(Tok::LParen)?;
                let n = match self.next() {
                    Some(Tok::Word(n)) => n
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("invalid {w} limit {n:?}"))?,
                    t => return Err(format!("expected a number, got {t:?}")),
                };
                self.expect(Tok::RParen)?;
                second.push(match w.as_str() {
                    "topk" => SecondStage::TopK(n),
                    "bottomk" => SecondStage::BottomK(n),
                    other => return Err(format!("unknown second stage {other:?}")),
                });
            } else if let Some(op) = self.cmp_op() {
                if matches!(op, Op::Re | Op::NotRe) {
                    return Err(
                        "metrics values compare with numbers, not regular expressions".into(),
                    );
                }
                let v = match self.next() {
                    Some(Tok::Word(w)) => literal(&w)?
                        .number()
                        .ok_or_else(|| format!("expected a number, got {w:?}"))?,
                    t => return Err(format!("expected a number, got {t:?}")),
                };
                second.push(SecondStage::Filter(op, v));
            } else {
                break;
            }
        }
        Ok(MetricsStage::Aggregate(Metrics {
            func,
            field,
            by,
            second,
        }))
    }

    /// `compare({filter})`, `compare({filter}, topN)` or `compare({filter}, topN, start, end)`
    /// after its `(`, checked as Tempo checks them.
    fn compare(&mut self) -> Result<Compare, String> {
        let selection = self.filter()?;
        let mut numbers = Vec::new();
        while self.peek() == Some(&Tok::Comma) {
            self.pos += 1;
            match self.next() {
                Some(Tok::Word(w)) => numbers.push(
                    w.parse::<i64>()
                        .map_err(|_| format!("compare() takes integers, not {w:?}"))?,
                ),
                t => return Err(format!("expected an integer, got {t:?}")),
            }
        }
        self.expect(Tok::RParen)?;
        let (top_n, start, end) =
            match numbers[..] {
                [] => (10, 0, 0),
                [n] => (n, 0, 0),
                [n, start, end] => (n, start, end),
                _ => return Err(
                    "compare() takes a filter, then topN, then both or neither of start and end"
                        .into(),
                ),
            };
        if !(1..=MAX_COMPARE_TOP_N).contains(&top_n) {
            return Err(format!(
                "compare() top number of values must be an integer between 1 and {MAX_COMPARE_TOP_N}"
            ));
        }
        let window = match (start, end) {
            (0, 0) => None,
            (s, e) if s <= 0 || e <= 0 => {
                return Err(
                    "compare() timestamps must be positive integer unix nanoseconds".into(),
                );
            }
            (s, e) if e <= s => {
                return Err("compare() end timestamp must be greater than start timestamp".into());
            }
            (s, e) => Some((s as u64, e as u64)),
        };
        Ok(Compare {
            selection,
            top_n: top_n as usize,
            window,
        })
    }
}

/// The most values per attribute `compare()` may keep (Tempo's limit).
const MAX_COMPARE_TOP_N: i64 = 1000;

/// The metrics functions: a `|` followed by one of these ends the spanset pipeline.
const METRICS_FNS: [&str; 9] = [
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "avg_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
];

/// A field as TraceQL spells it (`span.x`, `resource.x`, `.x`, `duration`, `trace:rootService`…).
pub fn parse_field(w: &str) -> Result<Field, ParseError> {
    field(w).map_err(ParseError)
}

fn field(w: &str) -> Result<Field, String> {
    if let Some((_, i)) = Intrinsic::SPELLINGS.iter().find(|(s, _)| *s == w) {
        return Ok(Field::Intrinsic(*i));
    }
    let scoped = [
        ("resource.", Scope::Resource),
        ("span.", Scope::Span),
        ("event.", Scope::Event),
        ("link.", Scope::Link),
        ("instrumentation.", Scope::Instrumentation),
        (".", Scope::Any),
    ];
    for (prefix, scope) in scoped {
        if let Some(key) = w.strip_prefix(prefix).filter(|k| !k.is_empty()) {
            return Ok(Field::Attr {
                scope,
                key: key.to_owned(),
            });
        }
    }
    Err(format!("unsupported field {w:?}"))
}

fn literal(w: &str) -> Result<Value, String> {
    match w {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "nil" => return Ok(Value::Nil),
        _ => {}
    }
    if let Some(s) = STATUSES.iter().find(|s| **s == w) {
        return Ok(Value::Status(s));
    }
    if let Some(k) = KINDS.iter().find(|k| **k == w) {
        return Ok(Value::Kind(k));
    }
    if let Ok(i) = w.parse::<i64>() {
        return Ok(Value::Int(i));
    }
    if let Ok(f) = w.parse::<f64>() {
        if w.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
        {
            return Ok(Value::Float(f));
        }
    }
    if let Some(ns) = w.strip_prefix('-').map_or_else(
        || parse_go_duration(w).map(|n| n as i128),
        |rest| parse_go_duration(rest).map(|n| -(n as i128)),
    ) {
        return u64::try_from(ns)
            .map(Value::Duration)
            .map_err(|_| format!("negative duration {w:?}"));
    }
    Err(format!("unexpected value {w:?}"))
}
