//! TraceQL as Tempo defines it: spanset filters `{ … }` over intrinsics (span-, trace-, event-,
//! link- and instrumentation-scoped) and attributes, the logical and structural spanset
//! operators (`&&`, `||`, `>`, `<`, `>>`, `<<`, `~`, their `!` negations and `&` unions),
//! pipelines (`| by(…)`, `| count() > n`, `| avg(field) > x`, `| select(…)`, `| coalesce()`),
//! metrics functions (`| rate() by (…)` and the `_over_time` family, then `| topk(n)`,
//! `| bottomk(n)` or a value filter; `| compare({ … }, topN, start, end)`) and `with(…)` hints.
//!
//! - `ast`: the syntax tree and how Tempo prints its parts.
//! - `parse`: text into the tree; what it does not support (arithmetic between fields or
//!   metrics) is a parse error.
//! - `eval`: fields, comparisons and stages on spans and traces.
//!
//! This module picks where a search looks ([`Query::seek`]); running searches is `spansets`'
//! and metrics `metrics`'.

mod ast;
mod eval;
mod parse;

pub use ast::*;
pub(crate) use eval::duration_ns;
pub use eval::{compare, field_value, field_values, kind, status, SpanRef, Spanset, TraceView};
pub use parse::{parse, parse_field, ParseError};

use storage::traces::{Seek, StoredSpan};

impl Query {
    /// Whether a span could be part of a match (it may satisfy a filter of the query).
    pub fn candidate(&self, s: &StoredSpan) -> bool {
        self.pipeline.candidate(SpanRef::alone(s))
    }

    /// The spansets of a trace that match, empty if it does not.
    pub fn eval(&self, trace: &[StoredSpan]) -> Vec<Spanset> {
        let view = TraceView::new(trace);
        self.pipeline.eval(&view, vec![view.all()])
    }

    /// Where a search looks: the index every matching trace has a span under (the most
    /// specific seek of a filter every match must satisfy), else all spans by time.
    pub fn seek(&self) -> Seek {
        first_expr(&self.pipeline)
            .and_then(|e| expr_seek(e, false))
            .unwrap_or(Seek::Time)
    }

    /// Where metrics look: an index every *result span* is under, so each is visited once.
    pub fn result_seek(&self) -> Seek {
        first_expr(&self.pipeline)
            .and_then(|e| expr_seek(e, true))
            .unwrap_or(Seek::Time)
    }

    /// Fields a result span shows (compared on or selected).
    pub fn fields(&self, out: &mut Vec<Field>) {
        self.pipeline.fields(out);
    }
}

fn first_expr(p: &Pipeline) -> Option<&SpansetExpr> {
    match p.stages.first()? {
        Stage::Spanset(e) => Some(e),
        _ => None,
    }
}

/// A seek every trace the expression selects has a span under; with `results`, one every
/// selected span is under.
fn expr_seek(e: &SpansetExpr, results: bool) -> Option<Seek> {
    match e {
        SpansetExpr::Filter(c) => cond_seek(c),
        SpansetExpr::Pipeline(p) => first_expr(p).and_then(|e| expr_seek(e, results)),
        SpansetExpr::Op(op, a, b) => match op {
            SetOp::Or => None,
            // Both sides' spans are in the result: only a seek both share covers them.
            SetOp::And | SetOp::Union(_) if results => {
                let (x, y) = (expr_seek(a, true)?, expr_seek(b, true)?);
                (x == y).then_some(x)
            }
            SetOp::And | SetOp::Union(_) => {
                let x = expr_seek(a, false).filter(|s| *s != Seek::Time);
                x.or_else(|| expr_seek(b, false))
            }
            // The result spans are the right side's.
            SetOp::Not(_) => expr_seek(b, results),
            _ if results => expr_seek(b, true),
            _ => expr_seek(b, false).or_else(|| expr_seek(a, false)),
        },
    }
}

fn cond_seek(c: &Cond) -> Option<Seek> {
    match c {
        Cond::Cmp {
            lhs: Operand::Field(Field::Attr { scope, key }),
            op: Op::Eq,
            rhs: Operand::Value(v),
            ..
        } => {
            let resource = match scope {
                Scope::Resource => true,
                Scope::Span => false,
                _ => return None,
            };
            let text = match v {
                Value::Str(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Int(i) => i.to_string(),
                _ => return None,
            };
            if resource && key == "service.name" {
                return Some(Seek::Service(text));
            }
            Some(Seek::Attribute {
                resource,
                key: key.clone(),
                value: text,
            })
        }
        // `duration > d`: the duration buckets from d's up.
        Cond::Cmp {
            lhs: Operand::Field(Field::Intrinsic(Intrinsic::Duration)),
            op: Op::Gt | Op::Ge,
            rhs: Operand::Value(Value::Duration(min_ns)),
            ..
        } => Some(Seek::Duration {
            service: None,
            min_ns: *min_ns,
        }),
        Cond::And(a, b) => match (cond_seek(a), cond_seek(b)) {
            (Some(Seek::Service(s)), other) | (other, Some(Seek::Service(s))) => {
                match (other, name_eq(a).or_else(|| name_eq(b))) {
                    (_, Some(n)) => Some(Seek::Operation {
                        service: s,
                        name: n,
                    }),
                    (
                        Some(Seek::Duration {
                            service: None,
                            min_ns,
                        }),
                        None,
                    ) => Some(Seek::Duration {
                        service: Some(s),
                        min_ns,
                    }),
                    _ => Some(Seek::Service(s)),
                }
            }
            (a, b) => a.or(b),
        },
        _ => None,
    }
}

fn name_eq(c: &Cond) -> Option<String> {
    match c {
        Cond::Cmp {
            lhs: Operand::Field(Field::Intrinsic(Intrinsic::Name)),
            op: Op::Eq,
            rhs: Operand::Value(Value::Str(s)),
            ..
        } => Some(s.clone()),
        Cond::And(a, b) => name_eq(a).or_else(|| name_eq(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
