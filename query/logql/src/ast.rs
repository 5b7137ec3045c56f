//! The LogQL syntax tree and its canonical text form (what `format_query` returns and what the
//! parser reads back to the same tree). Owns the shapes only; parsing is `parser`'s,
//! evaluation `pipeline`'s and `eval`'s.

use std::fmt;

use regex::Regex;
use storage::Matcher;

#[derive(Clone, Debug)]
pub enum Expr {
    Log(LogExpr),
    Metric(MetricExpr),
}

#[derive(Clone, Debug)]
pub struct LogExpr {
    pub matchers: Vec<Matcher>,
    pub stages: Vec<Stage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    Contains,
    NotContains,
    Match,
    NotMatch,
    /// `|>`: the line fits a pattern of literals and `<_>` captures.
    Pattern,
    /// `!>`
    NotPattern,
}

impl FilterOp {
    /// The operator as written.
    pub(crate) fn text(self) -> &'static str {
        match self {
            FilterOp::Contains => "|=",
            FilterOp::NotContains => "!=",
            FilterOp::Match => "|~",
            FilterOp::NotMatch => "!~",
            FilterOp::Pattern => "|>",
            FilterOp::NotPattern => "!>",
        }
    }

    /// Whether the filter keeps the lines that match (`|=`, `|~`, `|>`) rather than dropping
    /// them.
    pub fn keeps_matches(self) -> bool {
        matches!(
            self,
            FilterOp::Contains | FilterOp::Match | FilterOp::Pattern
        )
    }
}

#[derive(Clone, Debug)]
pub struct LineFilter {
    pub op: FilterOp,
    /// One value, or several joined by `or` (`|= "a" or "b"`). A keeping filter keeps a line
    /// any of them matches; a dropping one drops a line any of them matches, as Loki reads
    /// `!= "a" or "b"` as `!= "a" != "b"`.
    pub alternatives: Vec<FilterValue>,
}

/// One value of a line filter, as written and as compiled for its operator.
#[derive(Clone, Debug)]
pub struct FilterValue {
    pub value: String,
    pub(crate) matcher: crate::pipeline::LineMatcher,
}

#[derive(Clone, Debug)]
pub enum Stage {
    LineFilter(LineFilter),
    /// `json` with optional `label="expression"` extractions.
    Json(Vec<(String, String)>),
    Logfmt,
    Regexp(Regex),
    Pattern(String),
    Unpack,
    LabelFilter(LabelFilter),
    LineFormat(String),
    /// `dst=src` renames; `dst="template"` formats.
    LabelFormat(Vec<(String, LabelFmt)>),
    Drop(Vec<LabelSel>),
    Keep(Vec<LabelSel>),
    Decolorize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LabelFmt {
    Rename(String),
    Template(String),
}

/// A label named in `drop`/`keep`, optionally only when it has a given value.
#[derive(Clone, Debug)]
pub struct LabelSel {
    pub name: String,
    pub matcher: Option<Matcher>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumKind {
    Number,
    Duration,
    Bytes,
}

#[derive(Clone, Debug)]
pub enum LabelFilter {
    Matcher(Matcher),
    Compare {
        name: String,
        op: CmpOp,
        value: f64,
        kind: NumKind,
        text: String,
    },
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
}

/// A keyword enum from one list: the variants, `ALL` pairing each with its LogQL keyword (what
/// the parser looks names up in) and `name()` giving the keyword back.
macro_rules! keyword_enum {
    ($name:ident { $($variant:ident => $kw:literal,)* }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            pub(crate) const ALL: &'static [($name, &'static str)] = &[$(($name::$variant, $kw),)*];

            pub(crate) fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $kw,)*
                }
            }
        }
    };
}

keyword_enum!(RangeFn {
    Rate => "rate",
    CountOverTime => "count_over_time",
    BytesOverTime => "bytes_over_time",
    BytesRate => "bytes_rate",
    AbsentOverTime => "absent_over_time",
    SumOverTime => "sum_over_time",
    AvgOverTime => "avg_over_time",
    MinOverTime => "min_over_time",
    MaxOverTime => "max_over_time",
    StddevOverTime => "stddev_over_time",
    StdvarOverTime => "stdvar_over_time",
    FirstOverTime => "first_over_time",
    LastOverTime => "last_over_time",
    QuantileOverTime => "quantile_over_time",
});

impl RangeFn {
    /// Functions over unwrapped values (rate works both ways).
    pub(crate) fn needs_unwrap(self) -> bool {
        !matches!(
            self,
            RangeFn::Rate
                | RangeFn::CountOverTime
                | RangeFn::BytesOverTime
                | RangeFn::BytesRate
                | RangeFn::AbsentOverTime
        )
    }
}

keyword_enum!(AggOp {
    Sum => "sum",
    Avg => "avg",
    Min => "min",
    Max => "max",
    Count => "count",
    Stddev => "stddev",
    Stdvar => "stdvar",
    Topk => "topk",
    Bottomk => "bottomk",
});

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grouping {
    pub without: bool,
    pub labels: Vec<String>,
}

/// How the series of a binary operation's two sides are paired (PromQL's vector matching).
#[derive(Clone, Debug, PartialEq)]
pub struct VectorMatching {
    /// `on(labels)` when true, `ignoring(labels)` when false.
    pub on: bool,
    pub labels: Vec<String>,
    /// Many-to-one (`group_left`) or one-to-many (`group_right`), with the labels copied
    /// from the "one" side.
    pub group: Option<(GroupSide, Vec<String>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSide {
    Left,
    Right,
}

impl fmt::Display for VectorMatching {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kw = if self.on { "on" } else { "ignoring" };
        write!(f, " {kw}({})", self.labels.join(", "))?;
        if let Some((side, include)) = &self.group {
            let kw = match side {
                GroupSide::Left => "group_left",
                GroupSide::Right => "group_right",
            };
            write!(f, " {kw}({})", include.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Unwrap {
    pub label: String,
    /// `duration`/`duration_seconds` or `bytes` conversion.
    pub conversion: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    pub(crate) fn text(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Unless => "unless",
        }
    }

    pub(crate) fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And | BinOp::Unless => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Mod => 5,
            BinOp::Pow => 6,
        }
    }

    pub(crate) fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le
        )
    }
}

#[derive(Clone, Debug)]
pub enum MetricExpr {
    Range(RangeExpr),
    Vector {
        op: AggOp,
        param: Option<f64>,
        grouping: Option<Grouping>,
        inner: Box<MetricExpr>,
    },
    Binary {
        op: BinOp,
        bool_modifier: bool,
        /// `on(…)`/`ignoring(…)` and `group_left(…)`/`group_right(…)`.
        matching: Option<VectorMatching>,
        lhs: Box<MetricExpr>,
        rhs: Box<MetricExpr>,
    },
    Literal(f64),
    /// `vector(n)`: one series without labels, `n` at every step (a vector, not a scalar, in
    /// binary operations).
    VectorLiteral(f64),
    Paren(Box<MetricExpr>),
}

/// A range aggregation over a log query: `func(param, log | unwrap … [range] offset …) by (…)`.
#[derive(Clone, Debug)]
pub struct RangeExpr {
    pub func: RangeFn,
    pub param: Option<f64>,
    pub log: LogExpr,
    pub unwrap: Option<Unwrap>,
    /// Post-unwrap label filters (`| unwrap x | __error__=""`).
    pub post_filters: Vec<LabelFilter>,
    pub range_ns: i64,
    pub offset_ns: i64,
    pub grouping: Option<Grouping>,
}

/// A double-quoted string in the escapes both LogQL's lexer and Go's strconv.Unquote read:
/// Rust's Debug form (`\0`, `\u{1}`) is neither, and would not parse back as the same value.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Control characters are all below U+0100: four hex digits hold them.
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn fmt_matcher(m: &Matcher) -> String {
    format!("{}{}{}", m.name, m.op.as_str(), quote(&m.value))
}

pub(crate) fn fmt_duration(ns: i64) -> String {
    let mut ms = ns / 1_000_000;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

impl fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelFilter::Matcher(m) => f.write_str(&fmt_matcher(m)),
            LabelFilter::Compare { name, op, text, .. } => {
                let op = match op {
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                };
                write!(f, "{name}{op}{text}")
            }
            LabelFilter::And(a, b) => write!(f, "{a}, {b}"),
            LabelFilter::Or(a, b) => write!(f, "({a} or {b})"),
        }
    }
}

fn fmt_sels(sels: &[LabelSel]) -> String {
    sels.iter()
        .map(|s| {
            s.matcher
                .as_ref()
                .map_or_else(|| s.name.clone(), fmt_matcher)
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::LineFilter(lf) => {
                let op = lf.op.text();
                // Loki prints dropping alternatives as the chain of filters they mean.
                let sep = if lf.op.keeps_matches() {
                    " or ".to_owned()
                } else {
                    format!(" {op} ")
                };
                let values: Vec<_> = lf.alternatives.iter().map(|v| quote(&v.value)).collect();
                write!(f, "{op} {}", values.join(&sep))
            }
            Stage::Json(params) if params.is_empty() => f.write_str("| json"),
            Stage::Json(params) => {
                let p: Vec<_> = params
                    .iter()
                    .map(|(k, v)| format!("{k}={}", quote(v)))
                    .collect();
                write!(f, "| json {}", p.join(","))
            }
            Stage::Logfmt => f.write_str("| logfmt"),
            Stage::Regexp(re) => write!(f, "| regexp {}", quote(re.as_str())),
            Stage::Pattern(p) => write!(f, "| pattern {}", quote(p)),
            Stage::Unpack => f.write_str("| unpack"),
            Stage::LabelFilter(lf) => write!(f, "| {lf}"),
            Stage::LineFormat(t) => write!(f, "| line_format {}", quote(t)),
            Stage::LabelFormat(items) => {
                let p: Vec<_> = items
                    .iter()
                    .map(|(k, v)| match v {
                        LabelFmt::Rename(src) => format!("{k}={src}"),
                        LabelFmt::Template(t) => format!("{k}={}", quote(t)),
                    })
                    .collect();
                write!(f, "| label_format {}", p.join(","))
            }
            Stage::Drop(s) => write!(f, "| drop {}", fmt_sels(s)),
            Stage::Keep(s) => write!(f, "| keep {}", fmt_sels(s)),
            Stage::Decolorize => f.write_str("| decolorize"),
        }
    }
}

impl fmt::Display for LogExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m: Vec<_> = self.matchers.iter().map(fmt_matcher).collect();
        write!(f, "{{{}}}", m.join(", "))?;
        for s in &self.stages {
            write!(f, " {s}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            if self.without { "without" } else { "by" },
            self.labels.join(", ")
        )
    }
}

impl fmt::Display for MetricExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricExpr::Range(r) => {
                write!(f, "{}(", r.func.name())?;
                if let Some(p) = r.param {
                    write!(f, "{p},")?;
                }
                write!(f, "{}", r.log)?;
                if let Some(u) = &r.unwrap {
                    match &u.conversion {
                        Some(c) => write!(f, " | unwrap {c}({})", u.label)?,
                        None => write!(f, " | unwrap {}", u.label)?,
                    }
                }
                for pf in &r.post_filters {
                    write!(f, " | {pf}")?;
                }
                write!(f, " [{}]", fmt_duration(r.range_ns))?;
                if r.offset_ns != 0 {
                    write!(f, " offset {}", fmt_duration(r.offset_ns))?;
                }
                f.write_str(")")?;
                if let Some(g) = &r.grouping {
                    write!(f, " {g}")?;
                }
                Ok(())
            }
            MetricExpr::Vector {
                op,
                param,
                grouping,
                inner,
            } => {
                f.write_str(op.name())?;
                if let Some(g) = grouping {
                    write!(f, " {g} ")?;
                }
                f.write_str("(")?;
                if let Some(p) = param {
                    write!(f, "{p},")?;
                }
                write!(f, "{inner})")
            }
            MetricExpr::Binary {
                op,
                bool_modifier,
                matching,
                lhs,
                rhs,
            } => {
                write!(
                    f,
                    "{lhs} {}{}{} {rhs}",
                    op.text(),
                    if *bool_modifier { " bool" } else { "" },
                    matching
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            }
            MetricExpr::Literal(v) => write!(f, "{v}"),
            MetricExpr::VectorLiteral(v) => write!(f, "vector({v})"),
            MetricExpr::Paren(e) => write!(f, "({e})"),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Log(l) => write!(f, "{l}"),
            Expr::Metric(m) => write!(f, "{m}"),
        }
    }
}

/// Whether `s` reads as a byte size (`10KB`, `2KiB`, `512B`): a number then a size unit.
pub fn looks_like_bytes(s: &str) -> bool {
    s.ends_with(|c: char| c.is_ascii_alphabetic()) && gocompat::units::parse_bytes(s).is_some()
}
