//! The filters on the `metrics` table that become the select's label matchers, so the TSDB
//! reads only the series they keep instead of DataFusion filtering every sample.
//!
//! A filter is taken when it tests one string column — `metric` (the name), `job`,
//! `instance` or an entry of the `labels` map (`labels['code']`) — against a constant, and a
//! Prometheus matcher (a regular expression matching the whole value, dot matching newlines,
//! `storage::Matcher`) keeps exactly the values it is true for:
//!
//! - `=` a non-empty string: the matcher `=`.
//! - `~ 're'` (what `regexp_like(x, 're')` becomes) and `~* 're'`: SQL searches the value
//!   for a match while a matcher must match all of it, so the matcher is `.*(?-s:re).*`
//!   (`(?i-s:…)` for `~*`): DataFusion compiles `re` with the regex crate's defaults (dot
//!   not matching newlines), the store with `(?s)`, so the group puts the defaults back.
//! - `LIKE 'p'` and `ILIKE 'p'` (what DataFusion rewrites simple regexes into: `~ 'foo'` is
//!   `LIKE '%foo%'`, `~ '^foo'` is `LIKE 'foo%'`, `~* 'foo'` is `ILIKE '%foo%'`): translated as
//!   Arrow's LIKE kernel does (`%` any text, `_` any character, `\` escaping the next one).
//! - `IN ('a', 'b')` and `OR` of such tests of one column (DataFusion's rewrite of
//!   `~ '^(a|b)$'` or `~ 'a|b'`): the alternation.
//!
//! - Their negations (`!=`, `!~`, `!~*`, `NOT LIKE`, `NOT IN`): the negated matcher.
//!
//! SQL's NULL is where the two differ: an absent label is NULL, for which every test is
//! not true, while a matcher sees it as the empty value. So on a column that can be NULL
//! (every one but `metric`) a matcher that would keep the empty value is not taken, and that
//! filter is left to DataFusion; a negation, which would keep it, comes with `label=~".+"`
//! (a label's value is never empty: Prometheus drops empty labels), so the pair keeps what
//! SQL does. `labels['__name__']` is always NULL (the map leaves the name out) and is never
//! taken.

use datafusion::arrow::array::StringArray;
use datafusion::arrow::compute::regexp_is_match_scalar;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::{InList, ScalarFunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Like, Operator};
use storage::{MatchOp, Matcher, METRIC_NAME};

/// The label columns next to `metric`, and the label each stands for.
pub(crate) const LABEL_COLUMNS: [&str; 2] = ["job", "instance"];

/// The matchers `e` is, when the store applies them exactly.
pub(crate) fn matchers(e: &Expr) -> Option<Vec<Matcher>> {
    if let Some(positive) = negation_of(e) {
        let (label, want) = wanted(&positive)?;
        let m = match want {
            Want::Equal(v) => Matcher::new(MatchOp::NotEqual, label, v),
            Want::Regex(re) => Matcher::new(MatchOp::RegexNoMatch, label, re),
        }
        .ok()?;
        if m.name == METRIC_NAME {
            return Some(vec![m]);
        }
        // NULL (absent) is true of no negation either.
        let present = Matcher::new(MatchOp::RegexMatch, m.name.clone(), ".+").ok()?;
        return Some(vec![m, present]);
    }
    let (label, want) = wanted(e)?;
    let m = match want {
        Want::Equal(v) => Matcher::new(MatchOp::Equal, label, v),
        Want::Regex(re) => Matcher::new(MatchOp::RegexMatch, label, re),
    }
    .ok()?;
    // Every series has a name, so only a label can be NULL.
    (m.name == METRIC_NAME || !m.matches("")).then(|| vec![m])
}

/// The test `e` negates, when it is a negated test.
fn negation_of(e: &Expr) -> Option<Expr> {
    let mut positive = e.clone();
    match &mut positive {
        Expr::BinaryExpr(BinaryExpr { op, .. }) => {
            *op = match op {
                Operator::NotEq => Operator::Eq,
                Operator::RegexNotMatch => Operator::RegexMatch,
                Operator::RegexNotIMatch => Operator::RegexIMatch,
                _ => return None,
            }
        }
        Expr::Like(Like { negated, .. }) | Expr::InList(InList { negated, .. }) if *negated => {
            *negated = false
        }
        _ => return None,
    }
    Some(positive)
}

/// What a filter asks of a label's value.
#[derive(Debug, PartialEq)]
enum Want {
    Equal(String),
    /// A pattern the whole value must match (dot matching newlines).
    Regex(String),
}

impl Want {
    fn into_regex(self) -> String {
        match self {
            Want::Equal(v) => escape(&v),
            Want::Regex(re) => re,
        }
    }
}

/// The label `e` tests and what it asks of its value.
fn wanted(e: &Expr) -> Option<(String, Want)> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::Eq => {
                let (label, v) = match (label_of(left), label_of(right)) {
                    (Some(l), None) => (l, string(right)?),
                    (None, Some(l)) => (l, string(left)?),
                    _ => return None,
                };
                // `x = ''` is true of no value, the matcher of every series without x.
                (!v.is_empty()).then(|| (label, Want::Equal(v.to_owned())))
            }
            Operator::RegexMatch | Operator::RegexIMatch => {
                let label = label_of(left)?;
                let re = string(right)?;
                // Only a pattern that parses alone can be put in a group: `a)|(b` cannot.
                regexp_is_match_scalar(&StringArray::from(vec![""]), re, None).ok()?;
                let flags = if *op == Operator::RegexIMatch {
                    "i-s"
                } else {
                    "-s"
                };
                Some((label, Want::Regex(format!(".*(?{flags}:{re}).*"))))
            }
            Operator::Or => {
                let (a, wa) = wanted(left)?;
                let (b, wb) = wanted(right)?;
                (a == b).then(|| {
                    let re = format!("(?:{})|(?:{})", wa.into_regex(), wb.into_regex());
                    (a, Want::Regex(re))
                })
            }
            _ => None,
        },
        Expr::Like(Like {
            negated: false,
            expr,
            pattern,
            escape_char: None | Some('\\'),
            case_insensitive,
        }) => {
            let re = like_regex(string(pattern)?);
            let re = if *case_insensitive {
                format!("(?i:{re})")
            } else {
                re
            };
            Some((label_of(expr)?, Want::Regex(re)))
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) => {
            let label = label_of(expr)?;
            let values = list
                .iter()
                .map(|v| string(v).filter(|v| !v.is_empty()).map(escape))
                .collect::<Option<Vec<String>>>()?;
            (!values.is_empty()).then(|| (label, Want::Regex(values.join("|"))))
        }
        _ => None,
    }
}

/// The label a column of `metrics` or an entry of its `labels` map stands for.
fn label_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Column(c) if c.name == "metric" => Some(METRIC_NAME.to_owned()),
        Expr::Column(c) => LABEL_COLUMNS
            .iter()
            .find(|l| **l == c.name)
            .map(|l| (*l).to_owned()),
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == "get_field" => {
            match args.as_slice() {
                [Expr::Column(c), key] if c.name == "labels" => {
                    let key = string(key)?;
                    (!key.is_empty() && key != METRIC_NAME).then(|| key.to_owned())
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A string literal's value.
fn string(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(v))
            | ScalarValue::Utf8View(Some(v))
            | ScalarValue::LargeUtf8(Some(v)),
            _,
        ) => Some(v),
        _ => None,
    }
}

/// The characters the regex crate gives a meaning (`regex_syntax::is_meta_character`).
const META: &str = "\\.+*?()|[]{}^$#&-~";

/// `s` as a pattern matching itself.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if META.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A LIKE pattern as a pattern the whole value must match, as Arrow's LIKE kernel reads it:
/// `%` any text, `_` any one character, `\` taking the next character as itself (a trailing
/// one is itself).
fn like_regex(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            '\\' => out.push_str(&escape(&chars.next().unwrap_or('\\').to_string())),
            c => out.push_str(&escape(&c.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::compute::kernels::comparison::{ilike, like};
    use datafusion::logical_expr::{binary_expr, col, lit, Expr};
    use datafusion::prelude::get_field;

    use super::*;

    fn label(key: &str) -> Expr {
        get_field(col("labels"), key)
    }

    fn re(e: Expr, op: Operator, pattern: &str) -> Expr {
        binary_expr(e, op, lit(pattern))
    }

    fn pushed(e: &Expr) -> Option<String> {
        matchers(e).map(|ms| {
            let ms: Vec<String> = ms
                .iter()
                .map(|m| format!("{}{}{}", m.name, m.op.as_str(), m.value))
                .collect();
            ms.join(",")
        })
    }

    #[test]
    fn columns_and_map_entries_become_matchers() {
        assert_eq!(
            pushed(&col("metric").eq(lit("up"))).as_deref(),
            Some("__name__=up")
        );
        assert_eq!(
            pushed(&lit("api").eq(col("job"))).as_deref(),
            Some("job=api")
        );
        assert_eq!(
            pushed(&label("code").eq(lit("200"))).as_deref(),
            Some("code=200")
        );
        assert_eq!(
            pushed(&label("code").like(lit("5_\\%"))).as_deref(),
            Some("code=~5.%")
        );
        assert_eq!(
            pushed(&re(col("metric"), Operator::RegexMatch, "^node_.+_total")).as_deref(),
            Some("__name__=~.*(?-s:^node_.+_total).*")
        );
        assert_eq!(
            pushed(&label("code").in_list(vec![lit("500"), lit("a.b")], false)).as_deref(),
            Some("code=~500|a\\.b")
        );
        assert_eq!(
            pushed(&label("code").eq(lit("1")).or(label("code").like(lit("4%")))).as_deref(),
            Some("code=~(?:1)|(?:4.*)")
        );
    }

    #[test]
    fn what_the_store_would_answer_otherwise_stays_with_datafusion() {
        for e in [
            // Matches the empty value: the store would keep series without the label.
            re(label("code"), Operator::RegexMatch, "x*"),
            label("code").like(lit("%")),
            re(col("instance"), Operator::RegexMatch, ""),
            // Empty equality, the name through the map, two columns, a negation.
            label("code").eq(lit("")),
            label("__name__").eq(lit("up")),
            label("code").eq(lit("1")).or(col("job").eq(lit("api"))),
            label("code").not_eq(lit("")),
            // Not a label, or not a constant.
            col("value").eq(lit(1.0)),
            col("job").eq(col("instance")),
            // A pattern that only parses inside the group it would be put in.
            re(label("code"), Operator::RegexMatch, "a)|(b"),
        ] {
            assert_eq!(pushed(&e), None, "{e}");
        }
        // The name is never NULL: a name pattern matching the empty value is still exact.
        assert!(pushed(&re(col("metric"), Operator::RegexMatch, "x*")).is_some());
        // Case-insensitive: the flag scoped to the user's pattern.
        assert_eq!(
            pushed(&re(col("job"), Operator::RegexIMatch, "API")).as_deref(),
            Some("job=~.*(?i-s:API).*")
        );
    }

    #[test]
    fn negations_keep_only_present_labels() {
        for (e, want) in [
            (label("code").not_eq(lit("200")), "code!=200,code=~.+"),
            (label("code").not_like(lit("5%")), "code!~5.*,code=~.+"),
            (
                re(col("job"), Operator::RegexNotMatch, "a"),
                "job!~.*(?-s:a).*,job=~.+",
            ),
            (
                re(col("instance"), Operator::RegexNotIMatch, "B"),
                "instance!~.*(?i-s:B).*,instance=~.+",
            ),
            (
                label("code").in_list(vec![lit("5"), lit("6")], true),
                "code!~5|6,code=~.+",
            ),
            // The name is never NULL: the negation alone.
            (col("metric").not_eq(lit("up")), "__name__!=up"),
        ] {
            assert_eq!(pushed(&e).as_deref(), Some(want), "{e}");
        }
    }

    /// The matcher keeps a value exactly when Arrow's LIKE kernel (what DataFusion runs)
    /// says the value is LIKE the pattern, and exactly when its regex kernel finds the
    /// pattern in the value.
    #[test]
    fn matchers_agree_with_datafusion_kernels() {
        let values = [
            "", "a", "ab", "a\nb", "5x%", "5%", "a.b", "axb", "\\", "A", "é", "_", "xx\nabc",
        ];
        let array = StringArray::from(values.to_vec());
        for pattern in [
            "a%", "%b", "_", "a_b", "5_\\%", "%\\_", "\\", "a.b", "%", "é", "\\a", "É", "%B",
        ] {
            let re = Matcher::new(MatchOp::RegexMatch, "x", like_regex(pattern)).unwrap();
            let kernel = like(&array, &StringArray::new_scalar(pattern)).unwrap();
            for (i, v) in values.iter().enumerate() {
                assert_eq!(re.matches(v), kernel.value(i), "{v:?} LIKE {pattern:?}");
            }
            let e = col("metric").ilike(lit(pattern));
            let Want::Regex(whole) = wanted(&e).unwrap().1 else {
                panic!("{pattern}")
            };
            let re = Matcher::new(MatchOp::RegexMatch, "x", whole).unwrap();
            let kernel = ilike(&array, &StringArray::new_scalar(pattern)).unwrap();
            for (i, v) in values.iter().enumerate() {
                assert_eq!(re.matches(v), kernel.value(i), "{v:?} ILIKE {pattern:?}");
            }
        }
        for pattern in [
            "a.b", "^a", "b$", "a|5", ".", "(?m)^abc", "[a-c]+", "(?s)a.b",
        ] {
            let e = re(col("metric"), Operator::RegexMatch, pattern);
            let Want::Regex(whole) = wanted(&e).unwrap().1 else {
                panic!("{pattern}")
            };
            let m = Matcher::new(MatchOp::RegexMatch, "x", whole).unwrap();
            let kernel = regexp_is_match_scalar(&array, pattern, None).unwrap();
            for (i, v) in values.iter().enumerate() {
                assert_eq!(m.matches(v), kernel.value(i), "{v:?} ~ {pattern:?}");
            }
        }
    }
}
