//! Request parameters as Prometheus reads them: form body and URL query merged (body first,
//! like Go's `Request.FormValue`), timestamps as RFC 3339 or float seconds, durations as
//! Prometheus notation or float seconds, and `match[]` selectors. Owns parsing and the exact
//! error texts; knows nothing of what the parameters are for.

use std::time::Duration;

use promql_parser::label::{MatchOp as PMatchOp, Matchers as PMatchers};
use promql_parser::parser::Expr;
use storage::{MatchOp, Matcher};

use super::response::ApiError;
use crate::form::Form;

/// Prometheus's "beginning of time" and "end of time" for open-ended ranges, in ms: far enough
/// out to cover everything, near enough that range arithmetic cannot overflow.
pub(crate) const MIN_TIME: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
pub(crate) const MAX_TIME: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;

/// The request's form, read with this API's conventions.
pub(crate) struct Params(Form);

impl std::ops::Deref for Params {
    type Target = Form;
    fn deref(&self) -> &Form {
        &self.0
    }
}

impl From<Form> for Params {
    fn from(form: Form) -> Params {
        Params(form)
    }
}

impl Params {
    pub(crate) fn time(&self, name: &str) -> Result<i64, ApiError> {
        parse_time(self.get(name)).map_err(|e| ApiError::invalid_param(name, e))
    }

    pub(crate) fn time_or(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            "" => Ok(default),
            _ => self.time(name),
        }
    }

    /// A duration in ms.
    pub(crate) fn duration(&self, name: &str) -> Result<i64, ApiError> {
        parse_duration(self.get(name)).map_err(|e| ApiError::invalid_param(name, e))
    }

    /// The optional `timeout` of query requests. Absent means only the engine's timeout
    /// applies; a negative one has already expired, as in Prometheus.
    pub(crate) fn timeout(&self) -> Result<Duration, ApiError> {
        match self.get("timeout") {
            "" => Ok(Duration::MAX),
            _ => {
                let ms = self.duration("timeout")?;
                Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
            }
        }
    }

    /// `limit`: 0 or absent means no limit.
    pub(crate) fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.get("limit") {
            "" => Ok(None),
            s => match s.parse::<i64>() {
                Ok(n) if n < 0 => Err(ApiError::invalid_param(
                    "limit",
                    "limit must be non-negative".into(),
                )),
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(n as usize)),
                Err(e) => Err(ApiError::invalid_param(
                    "limit",
                    format!("cannot parse {s:?}: {e}"),
                )),
            },
        }
    }

    /// Every `match[]` as matcher sets; a `{a="b" or c="d"}` selector gives one set per branch.
    pub(crate) fn match_sets(&self) -> Result<Vec<Vec<Matcher>>, ApiError> {
        let mut sets = Vec::new();
        for s in self.all("match[]") {
            sets.extend(parse_selector(s).map_err(ApiError::bad_data)?);
        }
        Ok(sets)
    }
}

pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() {
            let whole = secs.trunc();
            let frac_ms = ((secs - whole) * 1000.0).round();
            return Ok(whole as i64 * 1000 + frac_ms as i64);
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    Err(format!("cannot parse {s:?} to a valid timestamp"))
}

pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        let ms = secs * 1000.0;
        if !ms.is_finite() || ms.abs() >= i64::MAX as f64 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(ms.round() as i64);
    }
    match gocompat::units::parse_prometheus_duration(s) {
        Ok(d) => Ok(d.as_millis() as i64),
        Err(_) => Err(format!("cannot parse {s:?} to a valid duration")),
    }
}

/// promql-parser's tree of `query`, refused first if it nests deeper than the engine allows:
/// the parser and every walk over its tree recurse, and a deep query would overflow the stack.
pub(crate) fn parse_promql(query: &str) -> Result<Expr, String> {
    promql::check_nesting(query).map_err(|e| e.to_string())?;
    promql_parser::parser::parse(query)
}

/// A series selector (`match[]`), as Prometheus's ParseMetricSelector accepts it.
pub(crate) fn parse_selector(s: &str) -> Result<Vec<Vec<Matcher>>, String> {
    let expr = parse_promql(s)?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("{s:?} is not a series selector"));
    };
    matcher_sets(vs.name.as_deref(), &vs.matchers)
}

/// The matchers of every vector and matrix selector of a query, in storage's terms, in the
/// order they appear (Prometheus's `parser.ExtractSelectors`); a selector with `or` branches
/// gives a set per branch.
pub(crate) fn extract_selectors(expr: &Expr) -> Result<Vec<Vec<Matcher>>, String> {
    use promql_parser::util::{walk_expr, ExprVisitor};

    struct Selectors(Vec<Vec<Matcher>>);
    impl ExprVisitor for Selectors {
        type Error = String;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
            let vs = match expr {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                // promql-parser's walk skips an aggregation's parameter; Prometheus's does not.
                Expr::Aggregate(a) => {
                    if let Some(param) = &a.param {
                        walk_expr(self, param)?;
                    }
                    return Ok(true);
                }
                _ => return Ok(true),
            };
            self.0
                .extend(matcher_sets(vs.name.as_deref(), &vs.matchers)?);
            Ok(true)
        }
    }
    let mut found = Selectors(Vec::new());
    walk_expr(&mut found, expr)?;
    Ok(found.0)
}

/// The matcher sets of a parsed selector, in storage's terms.
pub(crate) fn matcher_sets(
    name: Option<&str>,
    matchers: &PMatchers,
) -> Result<Vec<Vec<Matcher>>, String> {
    let mut base = Vec::new();
    if let Some(n) = name {
        base.push(
            Matcher::new(MatchOp::Equal, storage::METRIC_NAME, n).map_err(|e| e.to_string())?,
        );
    }
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>, String> {
        ms.iter()
            .map(|m| {
                let op = match m.op {
                    PMatchOp::Equal => MatchOp::Equal,
                    PMatchOp::NotEqual => MatchOp::NotEqual,
                    PMatchOp::Re(_) => MatchOp::RegexMatch,
                    PMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
                };
                Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|e| e.to_string())
            })
            .collect()
    };
    if matchers.or_matchers.is_empty() {
        let mut set = base;
        set.extend(convert(&matchers.matchers)?);
        return Ok(vec![set]);
    }
    matchers
        .or_matchers
        .iter()
        .map(|branch| {
            let mut set = base.clone();
            set.extend(convert(branch)?);
            Ok(set)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_extracted_from_everywhere_in_a_query() {
        let expr = parse_promql(
            r#"topk(scalar(k), sum by (le) (rate(a_bucket{job="x"}[5m]))) / on() b or vector(1) + max_over_time(c{d=~"e"}[1m:])"#,
        )
        .unwrap();
        let got: Vec<String> = extract_selectors(&expr)
            .unwrap()
            .iter()
            .map(|set| {
                set.iter()
                    .map(|m| format!("{}{:?}{}", m.name, m.op, m.value))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        assert_eq!(
            got,
            [
                "__name__Equalk",
                "__name__Equala_bucket,jobEqualx",
                "__name__Equalb",
                "__name__Equalc,dRegexMatche",
            ]
        );
        assert_eq!(
            extract_selectors(&parse_promql("1 + 2").unwrap())
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn times_parse_as_float_seconds_or_rfc3339() {
        assert_eq!(parse_time("1435781451.781").unwrap(), 1_435_781_451_781);
        assert_eq!(parse_time("1").unwrap(), 1000);
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert_eq!(
            parse_time("").unwrap_err(),
            r#"cannot parse "" to a valid timestamp"#
        );
        assert!(parse_time("NaN").is_err());
    }

    #[test]
    fn durations_parse_as_float_seconds_or_prometheus_notation() {
        assert_eq!(parse_duration("15").unwrap(), 15_000);
        assert_eq!(parse_duration("0.5").unwrap(), 500);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(
            parse_duration("x").unwrap_err(),
            r#"cannot parse "x" to a valid duration"#
        );
    }

    #[test]
    fn selectors_become_matcher_sets() {
        let sets = parse_selector(r#"up{job=~"a|b", x!="y"}"#).unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].len(), 3);
        assert!(parse_selector("up + 1").is_err());
        assert!(parse_selector("{}").is_err());
    }
}
