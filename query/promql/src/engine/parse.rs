//! Query parsing: promql-parser, plus what of Prometheus 3 it does not know. Duration
//! expressions are computed into plain durations first (see `duration_expr`). The
//! native-histogram trim operators `</` and `>/` have comparison precedence (left-associative)
//! and the comparison modifiers, so the query is parsed with each written as `<` or `>` and
//! those nodes are re-tagged afterwards; nothing else changes.

use promql_parser::parser::token::{TokenId, TokenType, T_GTR, T_LSS};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, FunctionArgs};

use super::duration_expr::{self, skip_string, skip_string_or_comment};
use super::eval::value_type;
use super::info::SELECTOR_PLACEHOLDER;
use crate::value::QueryError;

/// Token ids for the trim operators, outside promql-parser's token range (which it numbers
/// from 0), so no operator of its grammar can be mistaken for them.
pub(crate) const T_TRIM_UPPER: TokenId = TokenId::MAX;
pub(crate) const T_TRIM_LOWER: TokenId = TokenId::MAX - 1;

/// How deep a query's syntax tree may be, bounded from its text: the deepest bracket nesting
/// plus the number of operators (an operator chain `1+1+…` nests one node per operator).
/// Parsing, evaluating, printing and dropping the tree all recurse through it, and queries run
/// on threads with 2 MiB stacks, so an unbounded tree lets one request overflow the stack and
/// abort the process. Prometheus has no such limit; hand-written and generated queries stay
/// far below this one (a dashboard query rarely has more than a few dozen operators), and a
/// query at the limit evaluates within a 2 MiB stack in the tests' build (opt-level 1, larger
/// frames than release), which the tests check.
pub(crate) const MAX_NESTING: usize = 256;

/// Parses `query` for evaluation with the given step and range (end - start) in ms, which
/// `step()` and `range()` in duration expressions stand for (0 for instant queries).
pub(crate) fn parse(query: &str, step_ms: i64, range_ms: i64) -> Result<Expr, QueryError> {
    check_nesting(query)?;
    let query = duration_expr::rewrite(query, step_ms, range_ms).map_err(parse_error)?;
    let query = mark_info_selectors(&query);
    let (source, trims) = rewrite_trims(&query);
    let mut expr = promql_parser::parser::parse(&source).map_err(parse_error)?;
    check_ranges(&expr)?;
    if trims.iter().any(Option::is_some) {
        let mut order = trims.into_iter();
        retag(&mut expr, &mut order)?;
        if order.next().is_some() {
            return Err(parse_error("unexpected operator layout around </ or >/"));
        }
    }
    Ok(expr)
}

/// Whether `query` parses as the engine parses it, for files checked before they are evaluated
/// (rule files): the same limits and syntax as a query sent to the API.
pub fn check_syntax(query: &str) -> Result<(), QueryError> {
    parse(query, 0, 0).map(|_| ())
}

/// `query` as Prometheus's `/api/v1/format_query` prints it, for the syntax the engine accepts
/// beyond promql-parser: trim operators and `info()` selectors whose matchers all accept "".
/// None when the query does not parse, or when printing the engine's form would not give
/// Prometheus's answer: duration expressions are folded into plain durations before parsing.
pub fn format_extended(query: &str) -> Option<String> {
    if duration_expr::rewrite(query, 0, 0).as_deref() != Ok(query) || parse(query, 0, 0).is_err() {
        return None;
    }
    let (source, trims) = rewrite_trims(&mark_info_selectors(query));
    let mut expr = promql_parser::parser::parse(&source).ok()?;
    // Out of the tree, not out of the printed text: the printer breaks lines by length, and
    // the placeholder's length must not decide where. A selector with no other matcher keeps
    // it (the printer writes nothing at all for an empty one).
    visit_mut(&mut expr, &mut |e| {
        if let Expr::VectorSelector(vs) = e {
            if vs.matchers.matchers.len() > 1 {
                vs.matchers
                    .matchers
                    .retain(|m| m.name != SELECTOR_PLACEHOLDER);
            }
        }
    });
    // What is left in the text (the only matcher, or one inside an `or` group) goes there.
    let printed = expr
        .prettify()
        .replace(&format!(",{SELECTOR_PLACEHOLDER}!=\"\""), "")
        .replace(&format!("{SELECTOR_PLACEHOLDER}!=\"\","), "")
        .replace(&format!("{SELECTOR_PLACEHOLDER}!=\"\""), "");
    // The printed comparison operators come in source order, as `trims` lists them.
    let (_, printed_ops) = rewrite_trims(&printed);
    if printed_ops.len() != trims.len() {
        return None;
    }
    let mut out = String::with_capacity(printed.len() + trims.len());
    let mut trims = trims.into_iter();
    let mut chars = printed.chars().peekable();
    let mut quote = None;
    while let Some(c) = chars.next() {
        out.push(c);
        match (quote, c) {
            (Some(q), '\\') if q != '`' => out.extend(chars.next()),
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '<' | '>') if chars.peek() != Some(&'=') && trims.next().flatten().is_some() => {
                out.push('/');
            }
            _ => {}
        }
    }
    Some(out)
}

/// Rejects a query whose tree could be deeper than [`MAX_NESTING`], before anything recurses
/// through it: the bound is the deepest `(`/`[`/`{` nesting plus every operator outside
/// strings, comments and selector braces (signs of numbers and offsets count too, which only
/// makes the bound looser). Whoever hands a query to promql-parser directly checks it first.
pub fn check_nesting(query: &str) -> Result<(), QueryError> {
    let b = query.as_bytes();
    let (mut depth, mut deepest, mut operators, mut braces) = (0usize, 0usize, 0usize, 0usize);
    let mut i = 0;
    while i < b.len() {
        if let Some(next) = skip_string_or_comment(b, i) {
            i = next;
            continue;
        }
        match b[i] {
            c @ (b'(' | b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
                braces += usize::from(c == b'{');
            }
            c @ (b')' | b']' | b'}') => {
                depth = depth.saturating_sub(1);
                braces = braces.saturating_sub(usize::from(c == b'}'));
            }
            // Inside selector braces `=`, `!=`, `=~` and `!~` are matchers, not operators.
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' if braces == 0 => operators += 1,
            b'=' | b'!' if braces == 0 && b.get(i + 1) == Some(&b'=') => {
                operators += 1;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                if braces == 0 && matches!(&query[start..i], "and" | "or" | "unless" | "atan2") {
                    operators += 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if deepest + operators > MAX_NESTING {
        return Err(parse_error(format!(
            "query is nested too deeply or has too many operators (the limit is {MAX_NESTING})"
        )));
    }
    Ok(())
}

/// Wording as Prometheus's parser reports errors.
fn parse_error(e: impl std::fmt::Display) -> QueryError {
    QueryError::Parse(format!("1:1: parse error: {e}"))
}

/// The query with `</` and `>/` written as `< ` and `> ` (same length, so error positions
/// still point into the original), and for every `<`/`>` operator, in source order, the
/// trim operator it stands for if any.
fn rewrite_trims(query: &str) -> (String, Vec<Option<TokenId>>) {
    let mut out = String::with_capacity(query.len());
    let mut trims = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '"' | '\'' | '`' => {
                // Only " and ' strings have escapes; a raw string ends at the next backtick.
                while let Some(s) = chars.next() {
                    out.push(s);
                    if s == c {
                        break;
                    }
                    if s == '\\' && c != '`' {
                        if let Some(escaped) = chars.next() {
                            out.push(escaped);
                        }
                    }
                }
            }
            '#' => {
                for s in chars.by_ref() {
                    out.push(s);
                    if s == '\n' {
                        break;
                    }
                }
            }
            '<' | '>' => match chars.peek() {
                Some('=') => {}
                Some('/') => {
                    chars.next();
                    out.push(' ');
                    trims.push(Some(if c == '<' { T_TRIM_UPPER } else { T_TRIM_LOWER }));
                }
                _ => trims.push(None),
            },
            _ => {}
        }
    }
    (out, trims)
}

/// Adds `SELECTOR_PLACEHOLDER!=""` to the label selector given to `info()` as its second
/// argument, so that a selector of matchers that all accept "" still parses.
fn mark_info_selectors(query: &str) -> String {
    let b = query.as_bytes();
    let mut inserts = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(next) = skip_string_or_comment(b, i) {
            i = next;
            continue;
        }
        match b[i] {
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let open = i + (b[i..].len() - query[i..].trim_start().len());
                if &query[start..i] == "info" && b.get(open) == Some(&b'(') {
                    if let Some(at) = second_arg_selector_end(b, open + 1) {
                        inserts.push(at);
                    }
                }
            }
            _ => i += 1,
        }
    }
    let mut out = query.to_string();
    for at in inserts.into_iter().rev() {
        let before = out[..at].trim_end();
        let sep = if before.ends_with('{') || before.ends_with(',') {
            ""
        } else {
            ", "
        };
        out.insert_str(at, &format!("{sep}{SELECTOR_PLACEHOLDER}!=\"\""));
    }
    out
}

/// Where the closing `}` of a call's second argument is, when that argument is a bare
/// `{…}` selector; `from` is just past the call's `(`.
fn second_arg_selector_end(b: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = from;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i = skip_string(b, i, q);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth == 0 => return None,
            b')' | b']' | b'}' => depth -= 1,
            b',' if depth == 0 => break,
            _ => {}
        }
        i += 1;
    }
    i += 1;
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => i = skip_string(b, i, q),
            b'}' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Calls `f` on `expr` and on every expression below it, parents first. The depth is bounded:
/// only trees that passed [`check_nesting`] are walked.
fn visit_mut(expr: &mut Expr, f: &mut impl FnMut(&mut Expr)) {
    f(expr);
    match expr {
        Expr::Binary(b) => {
            visit_mut(&mut b.lhs, f);
            visit_mut(&mut b.rhs, f);
        }
        Expr::Aggregate(a) => {
            if let Some(p) = a.param.as_mut() {
                visit_mut(p, f);
            }
            visit_mut(&mut a.expr, f);
        }
        Expr::Unary(u) => visit_mut(&mut u.expr, f),
        Expr::Paren(p) => visit_mut(&mut p.expr, f),
        Expr::Subquery(s) => visit_mut(&mut s.expr, f),
        Expr::Call(c) => {
            for a in c.args.args.iter_mut() {
                visit_mut(a, f);
            }
        }
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => {}
    }
}

/// Walks `expr` in source order, re-tagging the `<`/`>` nodes that were trim operators.
fn retag(
    expr: &mut Expr,
    order: &mut impl Iterator<Item = Option<TokenId>>,
) -> Result<(), QueryError> {
    match expr {
        Expr::Binary(b) => {
            retag(&mut b.lhs, order)?;
            if b.op.id() == T_LSS || b.op.id() == T_GTR {
                let trim = order
                    .next()
                    .ok_or_else(|| parse_error("unexpected operator layout around </ or >/"))?;
                if let Some(id) = trim {
                    let name = if id == T_TRIM_UPPER { "</" } else { ">/" };
                    if b.modifier.as_ref().is_some_and(|m| m.return_bool) {
                        return Err(parse_error(
                            "bool modifier can only be used on comparison operators",
                        ));
                    }
                    if b.lhs.value_type() != ValueType::Vector {
                        return Err(parse_error(format!(
                            "operator {name:?} needs an instant vector of histograms on its left-hand side, got {}",
                            value_type(&b.lhs)
                        )));
                    }
                    b.op = TokenType::new(id);
                }
            }
            retag(&mut b.rhs, order)
        }
        Expr::Aggregate(a) => {
            if let Some(p) = a.param.as_mut() {
                retag(p, order)?;
            }
            retag(&mut a.expr, order)
        }
        Expr::Unary(u) => retag(&mut u.expr, order),
        Expr::Paren(p) => retag(&mut p.expr, order),
        Expr::Subquery(s) => retag(&mut s.expr, order),
        Expr::Call(c) => retag_args(&mut c.args, order),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => Ok(()),
    }
}

/// Refuses zero ranges, as Prometheus's parser does ("duration must be greater than 0"):
/// promql-parser refuses `0` and `0s` but takes a zero written as another number (`0.0`, `00`),
/// which it then prints as `0s`, a query that does not parse.
fn check_ranges(expr: &Expr) -> Result<(), QueryError> {
    let zero = |d: &std::time::Duration| {
        if d.is_zero() {
            Err(parse_error("duration must be greater than 0"))
        } else {
            Ok(())
        }
    };
    match expr {
        Expr::MatrixSelector(m) => zero(&m.range),
        Expr::Subquery(s) => {
            zero(&s.range)?;
            check_ranges(&s.expr)
        }
        Expr::Binary(b) => {
            check_ranges(&b.lhs)?;
            check_ranges(&b.rhs)
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                check_ranges(p)?;
            }
            check_ranges(&a.expr)
        }
        Expr::Unary(u) => check_ranges(&u.expr),
        Expr::Paren(p) => check_ranges(&p.expr),
        Expr::Call(c) => c.args.args.iter().try_for_each(|a| check_ranges(a)),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::Extension(_) => Ok(()),
    }
}

fn retag_args(
    args: &mut FunctionArgs,
    order: &mut impl Iterator<Item = Option<TokenId>>,
) -> Result<(), QueryError> {
    args.args.iter_mut().try_for_each(|a| retag(a, order))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trim_ops(e: &Expr, out: &mut Vec<TokenId>) {
        match e {
            Expr::Binary(b) => {
                trim_ops(&b.lhs, out);
                out.push(b.op.id());
                trim_ops(&b.rhs, out);
            }
            Expr::Paren(p) => trim_ops(&p.expr, out),
            Expr::Call(c) => c.args.args.iter().for_each(|a| trim_ops(a, out)),
            Expr::Aggregate(a) => trim_ops(&a.expr, out),
            _ => {}
        }
    }

    fn ops(q: &str) -> Vec<TokenId> {
        let mut out = Vec::new();
        trim_ops(&parse(q, 0, 0).unwrap(), &mut out);
        out
    }

    #[test]
    fn numbers_too_large_for_a_duration_are_parse_errors_not_panics() {
        for q in ["m[1e400]", "rate(m[Inf])", "m offset -99999999999999999999"] {
            let e = parse(q, 0, 0).unwrap_err().to_string();
            assert!(e.contains("duration out of range"), "{q}: {e}");
            assert_eq!(format_extended(q), None, "{q}");
        }
    }

    #[test]
    fn zero_ranges_are_refused_however_they_are_written() {
        for q in [
            "m[0.0]",
            "m[00]",
            "m0x[0]",
            "rate(m[0])",
            "sum_over_time(m[0.0:1m])",
        ] {
            let e = parse(q, 0, 0).unwrap_err().to_string();
            assert!(e.contains("duration must be greater than 0"), "{q}: {e}");
            assert_eq!(format_extended(q), None, "{q}");
        }
        assert!(parse("rate(m[1.5])", 0, 0).is_ok());
        assert!(
            parse("m[5m:0.0]", 0, 0).is_ok(),
            "a zero step is the default step"
        );
    }

    #[test]
    fn trim_operators_are_tagged_where_they_stand() {
        use promql_parser::parser::token::{T_ADD, T_LAND};
        assert_eq!(ops("h </ 2"), vec![T_TRIM_UPPER]);
        assert_eq!(ops("h>/-1"), vec![T_TRIM_LOWER]);
        assert_eq!(
            ops("h < 3 and histogram_count(h >/ 1) > 2"),
            vec![T_LSS, T_LAND, T_TRIM_LOWER, T_GTR]
        );
        // Comparison precedence: `+` binds tighter on both sides.
        let Expr::Binary(b) = parse("a + b </ 1 + 1", 0, 0).unwrap() else {
            panic!("not a binary expression");
        };
        assert_eq!(b.op.id(), T_TRIM_UPPER);
        assert!(matches!(*b.lhs, Expr::Binary(ref l) if l.op.id() == T_ADD));
        assert!(matches!(*b.rhs, Expr::Binary(ref r) if r.op.id() == T_ADD));
    }

    #[test]
    fn strings_and_comments_are_left_alone() {
        let q = "label_replace(h, \"a\", \"</\", \"b\", `>/`) >/ 2 # </ comment";
        assert_eq!(ops(q), vec![T_TRIM_LOWER]);
        let Expr::Binary(b) = parse(q, 0, 0).unwrap() else {
            panic!("not a binary expression");
        };
        let Expr::Call(c) = *b.lhs else {
            panic!("not a call");
        };
        assert!(matches!(&*c.args.args[2], Expr::StringLiteral(s) if s.val == "</"));
        assert_eq!(ops(r#"h{a="x\"</"} > 1"#), vec![T_GTR]);
    }

    #[test]
    fn info_selectors_accepting_empty_values_parse() {
        assert_eq!(
            mark_info_selectors(r#"info(m, {data=~".*"})"#),
            format!(r#"info(m, {{data=~".*", {SELECTOR_PLACEHOLDER}!=""}})"#)
        );
        assert_eq!(
            mark_info_selectors("info(rate(m[5m]), {})"),
            format!(r#"info(rate(m[5m]), {{{SELECTOR_PLACEHOLDER}!=""}})"#)
        );
        for q in [
            "info(m)",
            "info(m, x_info{a=\"}\"})",
            r#"label_replace(m, "info", "(", "", "")"#,
        ] {
            assert_eq!(mark_info_selectors(q), q);
        }
        assert!(parse(r#"info(m, {data=~".*"})"#, 0, 0).is_ok());
    }

    #[test]
    fn extended_syntax_formats_as_written() {
        for (q, want) in [
            ("h </ 2", "h </ 2"),
            ("(a{l=\"<\"} >/ 2) < 3", "(a{l=\"<\"} >/ 2) < 3"),
            ("info(x, {k=~\".*\"})", "info(x, {k=~\".*\"})"),
            ("info(x,{k=~\".*\",j=\"\"})", "info(x, {j=\"\",k=~\".*\"})"),
        ] {
            assert_eq!(format_extended(q).as_deref(), Some(want), "{q}");
        }
        // The marker of an info() selector does not count toward the line length: 92
        // characters stay on one line, as Prometheus prints them (found by the fuzz target).
        let long = format!("info(cu, {{oginer=~\".*{}\"}})", "V".repeat(68));
        assert_eq!(long.len(), 92);
        assert_eq!(format_extended(&long).as_deref(), Some(long.as_str()));
        for q in ["x[5m+1m]", "h </ bool 2", "h </"] {
            assert_eq!(format_extended(q), None, "{q}");
        }
    }

    #[test]
    fn misuse_is_a_parse_error() {
        for q in ["h </ bool 2", "1 </ 2", "h </", "h </ on(a) group_left"] {
            assert!(matches!(parse(q, 0, 0), Err(QueryError::Parse(_))), "{q}");
        }
    }
}
