//! Duration expressions of Prometheus 3 (`x[26m+4m]`, `x[1h:20*500ms]`, `offset (2*step())`,
//! `min_of`, `max_of`, `step()`, `range()`), which promql-parser 0.11 cannot parse. Each one is
//! computed from the query's step and range and written back as a plain duration before the
//! query is parsed; plain durations and everything outside brackets and `offset` are left as
//! written.

/// Rewrites every duration expression of `query` into a literal duration. An expression that
/// does not evaluate is left for the parser to report; a plain number too large for a duration
/// is refused here (see [`check_number`]).
pub(crate) fn rewrite(query: &str, step_ms: i64, range_ms: i64) -> Result<String, String> {
    let b = query.as_bytes();
    let env = Env {
        step: step_ms as f64 / 1000.0,
        range: range_ms as f64 / 1000.0,
    };
    let mut out = String::with_capacity(query.len());
    let mut i = 0;
    let mut braces = 0usize;
    let mut copied = 0;
    while i < b.len() {
        if let Some(next) = skip_string_or_comment(b, i) {
            i = next;
            continue;
        }
        match b[i] {
            b'{' => {
                braces += 1;
                i += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            b'[' if braces == 0 => {
                let Some(len) = b[i + 1..].iter().position(|&c| c == b']') else {
                    break;
                };
                let end = i + 1 + len;
                let content = &query[i + 1..end];
                words(content).try_for_each(check_duration_word)?;
                if let Some(lit) = bracket(content, &env) {
                    out.push_str(&query[copied..=i]);
                    out.push_str(&lit);
                    copied = end;
                }
                i = end + 1;
            }
            c if braces == 0 && is_word(c) => {
                let start = i;
                while i < b.len() && is_word(b[i]) {
                    i += 1;
                }
                if !query[start..i].eq_ignore_ascii_case("offset") {
                    continue;
                }
                let at = i + (b[i..].len() - query[i..].trim_start().len());
                let operand = query[at..].trim_start_matches(['-', '+', ' ', '\t', '\n']);
                let word = words(operand).next().filter(|w| operand.starts_with(w));
                let word = word.unwrap_or_default();
                check_duration_word(word)?;
                if let Some((lit, len)) = offset(&query[at..], &env) {
                    // promql-parser refuses a zero offset, which is no offset at all.
                    if lit == "0ms" {
                        out.push_str(&query[copied..start]);
                    } else {
                        out.push_str(&query[copied..at]);
                        out.push_str(&lit);
                    }
                    copied = at + len;
                    i = copied;
                } else if Parser::new(word, &env).whole() == Some(0.0) {
                    // The same for a zero written plainly (`offset 0`, `offset -0s`), which
                    // promql-parser would take as a number and print as `0s`, which it refuses.
                    out.push_str(&query[copied..start]);
                    copied = query.len() - operand.len() + word.len();
                    i = copied;
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&query[copied..]);
    Ok(out)
}

/// The longest duration: Go's `time.Duration` (int64 nanoseconds, 292 years), which
/// Prometheus parses durations into and refuses beyond ("duration out of range").
const MAX_DURATION_SECS: f64 = i64::MAX as f64 / 1e9;

/// Refuses a word written where a duration goes (`x[300]`, `x[1h:5m]`, `offset 60`) that no
/// duration holds: a number that is infinite, NaN or too large, or a duration beyond
/// [`MAX_DURATION_SECS`]. promql-parser converts such a number to a `Duration` unchecked,
/// which panics, and reads a unit's count beyond u32 as zero (`4294967296d` as no time at
/// all). Anything else is the parser's to judge.
fn check_duration_word(w: &str) -> Result<(), String> {
    let out_of_range = || Err(format!("duration out of range: {w}"));
    let secs = if let Some(hex) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        match u64::from_str_radix(hex, 16) {
            Ok(n) => n as f64,
            Err(_) => return Ok(()),
        }
    } else if let Ok(v) = w.parse::<f64>() {
        v
    } else if w.starts_with(|c: char| c.is_ascii_digit()) {
        let counts_fit = w
            .split(|c: char| !c.is_ascii_digit())
            .filter(|d| !d.is_empty())
            .all(|d| d.parse::<u32>().is_ok());
        match gocompat::units::parse_prometheus_duration(w) {
            Ok(d) if counts_fit => d.as_secs_f64(),
            // Not a duration (`5x`): the parser's to judge.
            Err(_) if counts_fit => return Ok(()),
            _ => return out_of_range(),
        }
    } else {
        return Ok(());
    };
    if secs.is_finite() && secs.abs() < MAX_DURATION_SECS {
        Ok(())
    } else {
        out_of_range()
    }
}

/// The words of a duration expression as PromQL's lexer cuts them: numbers (with an exponent's
/// sign: `1e+400` is one number), durations and names.
fn words(s: &str) -> impl Iterator<Item = &str> {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() && !(b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
            i += 1;
        }
        if i == b.len() {
            return None;
        }
        let start = i;
        while i < b.len() {
            let c = b[i];
            let exponent_sign = matches!(c, b'+' | b'-')
                && matches!(b[i - 1], b'e' | b'E')
                && b[start].is_ascii_digit()
                && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exponent_sign) {
                break;
            }
            i += 1;
        }
        Some(&s[start..i])
    })
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// Index just past the string literal or `#` comment starting at `i`, if one starts there: the
/// rewrites before parsing must leave both untouched.
pub(super) fn skip_string_or_comment(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        q @ (b'"' | b'\'' | b'`') => Some(skip_string(b, i, q)),
        b'#' => Some(
            b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| i + n),
        ),
        _ => None,
    }
}

/// Index just past the string starting at `i` (quoted with `q`; backticks have no escapes).
pub(super) fn skip_string(b: &[u8], mut i: usize, q: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if b[i] == q {
            return i + 1;
        }
        i += 1;
    }
    i
}

/// The literal for a bracket's content (`range` or `range:step`), if it needs rewriting.
fn bracket(content: &str, env: &Env) -> Option<String> {
    let plain = |s: &str| {
        s.trim()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.')
    };
    let mut parts = content.splitn(2, ':');
    let range = parts.next()?;
    let step = parts.next();
    if plain(range) && step.is_none_or(plain) {
        return None;
    }
    let lit = |s: &str| -> Option<String> {
        if s.trim().is_empty() {
            return Some(String::new());
        }
        duration_literal(Parser::new(s, env).whole()?)
    };
    let mut out = lit(range)?;
    if let Some(step) = step {
        out.push(':');
        out.push_str(&lit(step)?);
    }
    Some(out)
}

/// The literal for what follows `offset`, and the length it replaces, if it is more than a
/// signed number or duration. Only one operand belongs to `offset`: `offset 2 ^ 2` raises the
/// offset selector to the power, so a trailing operator is left in place.
fn offset(rest: &str, env: &Env) -> Option<(String, usize)> {
    let mut p = Parser::new(rest, env);
    let v = p.signed_operand()?;
    if !p.saw_expression {
        return None;
    }
    let lit = if v < 0.0 {
        format!("-{}", duration_literal(-v)?)
    } else {
        duration_literal(v)?
    };
    Some((lit, p.i))
}

/// Seconds as a whole-millisecond duration literal.
fn duration_literal(secs: f64) -> Option<String> {
    let ms = (secs * 1000.0).round();
    (ms.is_finite() && ms >= 0.0 && ms < i64::MAX as f64).then(|| format!("{}ms", ms as i64))
}

struct Env {
    step: f64,
    range: f64,
}

/// Recursive descent over a duration expression, in seconds. Precedence as in PromQL:
/// `+ -` below `* / %` below unary signs below `^` (right-associative).
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    env: &'a Env,
    /// Something beyond a signed literal was read (parentheses, a function, an operator).
    saw_expression: bool,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str, env: &'a Env) -> Self {
        Parser {
            s: s.as_bytes(),
            i: 0,
            env,
            saw_expression: false,
        }
    }

    /// The whole input as one expression.
    fn whole(mut self) -> Option<f64> {
        let v = self.sum()?;
        self.skip_space();
        (self.i == self.s.len()).then_some(v)
    }

    fn skip_space(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            return true;
        }
        false
    }

    fn sum(&mut self) -> Option<f64> {
        let mut v = self.product()?;
        loop {
            if self.eat(b'+') {
                v += self.product()?;
            } else if self.eat(b'-') {
                v -= self.product()?;
            } else {
                return Some(v);
            }
        }
    }

    fn product(&mut self) -> Option<f64> {
        let mut v = self.unary()?;
        loop {
            if self.eat(b'*') {
                v *= self.unary()?;
            } else if self.eat(b'/') {
                v /= self.unary()?;
            } else if self.eat(b'%') {
                v %= self.unary()?;
            } else {
                return Some(v);
            }
        }
    }

    fn unary(&mut self) -> Option<f64> {
        if self.eat(b'-') {
            return Some(-self.unary()?);
        }
        if self.eat(b'+') {
            return self.unary();
        }
        let base = self.operand()?;
        if self.eat(b'^') {
            return Some(base.powf(self.unary()?));
        }
        Some(base)
    }

    /// A signed operand without any operator after it (what `offset` takes).
    fn signed_operand(&mut self) -> Option<f64> {
        if self.eat(b'-') {
            return Some(-self.signed_operand()?);
        }
        if self.eat(b'+') {
            return self.signed_operand();
        }
        self.operand()
    }

    fn operand(&mut self) -> Option<f64> {
        self.skip_space();
        if self.eat(b'(') {
            self.saw_expression = true;
            let v = self.sum()?;
            return self.eat(b')').then_some(v);
        }
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric()
                || self.s[self.i] == b'_'
                || self.s[self.i] == b'.')
        {
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        if word.is_empty() {
            return None;
        }
        let func = word.to_ascii_lowercase();
        if matches!(func.as_str(), "step" | "range" | "min_of" | "max_of") && self.eat(b'(') {
            self.saw_expression = true;
            return self.call(&func);
        }
        if let Ok(v) = word.parse::<f64>() {
            return v.is_finite().then_some(v);
        }
        // promql-parser refuses zero durations, which are fine inside an expression.
        if word.starts_with('0') && word.bytes().all(|c| c == b'0' || c.is_ascii_alphabetic()) {
            return promql_parser::util::parse_duration(&word.replace('0', "1"))
                .ok()
                .map(|_| 0.0);
        }
        let d = promql_parser::util::parse_duration(word).ok()?;
        Some(d.as_secs_f64())
    }

    /// The rest of a call after its `(`.
    fn call(&mut self, func: &str) -> Option<f64> {
        match func {
            "step" => self.eat(b')').then_some(self.env.step),
            "range" => self.eat(b')').then_some(self.env.range),
            _ => {
                let a = self.sum()?;
                if !self.eat(b',') {
                    return None;
                }
                let b = self.sum()?;
                if !self.eat(b')') {
                    return None;
                }
                Some(if func == "min_of" { a.min(b) } else { a.max(b) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(q: &str) -> String {
        rewrite(q, 5_000, 10_000).unwrap()
    }

    #[test]
    fn numbers_no_duration_holds_are_refused() {
        for q in [
            "x[1e400]",
            "x[1e+400]",
            "x[Inf]",
            "x[NaN:1m]",
            "x[5m:0xFFFFFFFFFFFFFFFF]",
            "x[1h+4294967296d]",
            "x[300y]",
            "x offset -99999999999999999999",
            "x offset -1200055555555555",
            "x offset Inf",
        ] {
            let e = rewrite(q, 0, 0).unwrap_err();
            assert!(e.starts_with("duration out of range"), "{q}: {e}");
        }
        for q in [
            "x[300]",
            "x offset -60",
            "x[5m:30]",
            "offset[5m]",
            "x offset 1h",
            "x[290y]",
            "x[1e-3]",
            "x offset 5m > 1e400",
        ] {
            assert_eq!(rewrite(q, 0, 0).as_deref(), Ok(q));
        }
    }

    #[test]
    fn bracket_expressions_become_literals() {
        assert_eq!(rw("changes(x[26m+4m])"), "changes(x[1800000ms])");
        assert_eq!(rw("x[2m*(10+5)]"), "x[1800000ms]");
        assert_eq!(rw("x[30m1s-30m1s % 1m]"), "x[1800000ms]");
        assert_eq!(rw("x[29s+1s:20*500ms]"), "x[30000ms:10000ms]");
        assert_eq!(rw("x[1+(STep()-4)*2]"), "x[3000ms]");
        assert_eq!(rw("x[max_of(min_of(step()+1,1h),1ms)]"), "x[6000ms]");
        assert_eq!(rw("x[range()]"), "x[10000ms]");
        assert_eq!(rw("x[30m+0s]"), "x[1800000ms]");
    }

    #[test]
    fn plain_durations_strings_and_matchers_are_untouched() {
        for q in [
            "x[5m]",
            "x[5m:]",
            "x[1h:1m] offset 5m",
            "x offset -2 ^ 2",
            r#"x{a="[1+1]"}"#,
            "sum by (offset) (x)",
            "x[1m+1m", // left for the parser to reject
        ] {
            assert_eq!(rw(q), q);
        }
    }

    #[test]
    fn offset_takes_one_operand() {
        assert_eq!(rw("x offset (100 + 2)"), "x offset 102000ms");
        assert_eq!(rw("x offset -step()*2"), "x offset -5000ms*2");
        assert_eq!(
            rw("x OFFSET min_of(step(), 1s)+8000"),
            "x OFFSET 1000ms+8000"
        );
        assert_eq!(rw("x offset (-2 ^ 2)"), "x offset -4000ms");
        assert_eq!(rw("x offset -(min_of(step(), 2s)-5)"), "x offset 3000ms");
        assert_eq!(rewrite("x offset range() + 1", 0, 0).unwrap(), "x  + 1");
    }
}
