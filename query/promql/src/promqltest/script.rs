//! Parser of the promqltest script format: `load`/`clear`/`eval` commands, series
//! descriptions (`metric{l="v"} 0+10x100 _ stale`) and the expectations of an eval.

use storage::{Label, Labels, STALE_NAN_BITS};

use crate::float_histogram::{CounterResetHint, FloatHistogram, Span};

/// One value of a series description.
#[derive(Clone, Debug, PartialEq)]
pub enum SeqValue {
    Omitted,
    Float(f64),
    /// A native histogram (`{{schema:0 sum:1 count:2 buckets:[1 1]}}`).
    Histogram(Box<FloatHistogram>),
}

#[derive(Clone, Debug)]
pub struct SeriesDesc {
    pub labels: Labels,
    pub values: Vec<SeqValue>,
}

#[derive(Clone, Debug)]
pub(crate) enum EvalKind {
    Instant { t: i64 },
    Range { start: i64, end: i64, step: i64 },
}

#[derive(Clone, Debug, Default)]
pub(crate) struct AnnotationExpect {
    /// `expect warn`/`expect info` given (possibly several times).
    pub required: bool,
    pub msgs: Vec<String>,
    pub regexes: Vec<String>,
    pub forbidden: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct EvalCmd {
    pub line: usize,
    pub query: String,
    pub kind: EvalKind,
    pub fail: bool,
    pub fail_msg: Option<String>,
    pub fail_regex: Option<String>,
    pub ordered: bool,
    pub warn: AnnotationExpect,
    pub info: AnnotationExpect,
    pub string: Option<String>,
    pub range_vector: Option<(i64, i64, i64)>,
    pub scalar: Option<f64>,
    pub series: Vec<SeriesDesc>,
}

#[derive(Clone, Debug)]
pub(crate) enum Command {
    Load {
        interval: i64,
        series: Vec<SeriesDesc>,
        /// `load_with_nhcb`: classic histograms are also loaded as native ones with custom buckets.
        with_nhcb: bool,
    },
    Clear,
    Eval(Box<EvalCmd>),
}

pub(crate) struct ParseError {
    pub line: usize,
    pub msg: String,
}

pub(crate) fn parse_script(text: &str) -> Result<Vec<Command>, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let lineno = i + 1;
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |msg: String| ParseError { line: lineno, msg };
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match word {
            "clear" => cmds.push(Command::Clear),
            "load" | "load_with_nhcb" => {
                let interval = parse_duration(rest.trim()).map_err(err)?;
                let mut series = Vec::new();
                let mut budget = MAX_LOAD_VALUES;
                while i < lines.len() && !ends_block(lines[i]) {
                    let l = lines[i].trim();
                    i += 1;
                    if l.starts_with('#') {
                        continue;
                    }
                    series.push(
                        parse_series(l, &mut budget).map_err(|m| ParseError { line: i, msg: m })?,
                    );
                }
                cmds.push(Command::Load {
                    interval,
                    series,
                    with_nhcb: word == "load_with_nhcb",
                });
            }
            w if w.starts_with("eval") => {
                let mut cmd = parse_eval_header(w, rest.trim(), lineno).map_err(err)?;
                while i < lines.len() && !ends_block(lines[i]) {
                    let l = lines[i].trim();
                    i += 1;
                    if l.starts_with('#') {
                        continue;
                    }
                    parse_expectation(&mut cmd, l).map_err(|m| ParseError { line: i, msg: m })?;
                }
                cmds.push(Command::Eval(Box::new(cmd)));
            }
            _ => return Err(err(format!("unknown command {word:?}"))),
        }
    }
    Ok(cmds)
}

/// A blank line or the next command ends the lines belonging to a command.
fn ends_block(line: &str) -> bool {
    let t = line.trim();
    let word = t.split_whitespace().next().unwrap_or("");
    t.is_empty() || word == "clear" || word.starts_with("eval") || word.starts_with("load")
}

fn parse_eval_header(word: &str, rest: &str, line: usize) -> Result<EvalCmd, String> {
    let mut cmd = EvalCmd {
        line,
        query: String::new(),
        kind: EvalKind::Instant { t: 0 },
        fail: false,
        fail_msg: None,
        fail_regex: None,
        ordered: false,
        warn: AnnotationExpect::default(),
        info: AnnotationExpect::default(),
        string: None,
        range_vector: None,
        scalar: None,
        series: Vec::new(),
    };
    match word {
        "eval" => {}
        "eval_fail" => cmd.fail = true,
        "eval_ordered" => cmd.ordered = true,
        "eval_warn" => cmd.warn.required = true,
        "eval_info" => cmd.info.required = true,
        _ => return Err(format!("unknown command {word:?}")),
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.len() >= 3 && words[0] == "instant" && words[1] == "at" {
        cmd.kind = EvalKind::Instant {
            t: parse_duration(words[2])?,
        };
        cmd.query = after_words(rest, 3).to_string();
    } else if words.len() >= 7
        && words[0] == "range"
        && words[1] == "from"
        && words[3] == "to"
        && words[5] == "step"
    {
        cmd.kind = EvalKind::Range {
            start: parse_duration(words[2])?,
            end: parse_duration(words[4])?,
            step: parse_duration(words[6])?,
        };
        cmd.query = after_words(rest, 7).to_string();
    } else {
        return Err(format!("invalid eval command: {rest}"));
    }
    Ok(cmd)
}

/// The text after the first `n` whitespace-separated words.
fn after_words(s: &str, n: usize) -> &str {
    let mut rest = s.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest
}

fn parse_expectation(cmd: &mut EvalCmd, l: &str) -> Result<(), String> {
    if let Some(rest) = l.strip_prefix("expect ") {
        let rest = rest.trim();
        let (kind, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let arg = arg.trim();
        match kind {
            "fail" => {
                cmd.fail = true;
                if let Some(m) = arg.strip_prefix("msg:") {
                    cmd.fail_msg = Some(m.trim().to_string());
                } else if let Some(r) = arg.strip_prefix("regex:") {
                    cmd.fail_regex = Some(r.trim().to_string());
                }
            }
            "ordered" => cmd.ordered = true,
            "warn" | "info" => {
                let a = if kind == "warn" {
                    &mut cmd.warn
                } else {
                    &mut cmd.info
                };
                a.required = true;
                if let Some(m) = arg.strip_prefix("msg:") {
                    a.msgs.push(m.trim().to_string());
                } else if let Some(r) = arg.strip_prefix("regex:") {
                    a.regexes.push(r.trim().to_string());
                }
            }
            "no_warn" => cmd.warn.forbidden = true,
            "no_info" => cmd.info.forbidden = true,
            "string" => {
                cmd.string = Some(
                    unquote(arg)
                        .map_err(|e| format!("bad expect string: {e}"))?
                        .0,
                )
            }
            "range" => {
                let w: Vec<&str> = arg.split_whitespace().collect();
                if w.len() != 7
                    || w[0] != "vector"
                    || w[1] != "from"
                    || w[3] != "to"
                    || w[5] != "step"
                {
                    return Err(format!("invalid expect range: {arg}"));
                }
                cmd.range_vector = Some((
                    parse_duration(w[2])?,
                    parse_duration(w[4])?,
                    parse_duration(w[6])?,
                ));
            }
            _ => return Err(format!("unknown expectation {kind:?}")),
        }
        return Ok(());
    }
    if let Ok(v) = parse_number(l) {
        cmd.scalar = Some(v);
        return Ok(());
    }
    let mut budget = MAX_LOAD_VALUES;
    cmd.series.push(parse_series(l, &mut budget)?);
    Ok(())
}

/// Durations of test scripts: Prometheus's notation (`1h30m`, `500ms`, `0`), a bare number
/// of seconds, either with a sign.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let ms = match body.parse::<f64>() {
        Ok(secs) => (secs * 1000.0).round() as i64,
        Err(_) => gocompat::units::parse_prometheus_duration(body)
            .map_err(|_| format!("invalid duration {s:?}"))?
            .as_millis() as i64,
    };
    Ok(if neg { -ms } else { ms })
}

fn parse_number(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        "stale" => f64::from_bits(STALE_NAN_BITS),
        b if b.starts_with("0x") => {
            i64::from_str_radix(&b[2..], 16).map_err(|e| e.to_string())? as f64
        }
        _ => {
            if body.is_empty()
                || !body.bytes().all(|c| {
                    c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-' | b'_')
                })
            {
                return Err(format!("invalid number {t:?}"));
            }
            body.replace('_', "")
                .parse::<f64>()
                .map_err(|e| format!("invalid number {t:?}: {e}"))?
        }
    };
    Ok(if neg { -v } else { v })
}

/// The most values the series of one `load` block (or of one unit-test group) may expand to
/// together. `0+1x100000000000` is a few bytes of text; Prometheus expands it as written, which
/// here would take the process's memory. Ten million values is over a hundred series of a day
/// at one-second intervals.
pub const MAX_LOAD_VALUES: usize = 10_000_000;

/// A series description: labels then values, expanding to at most `budget` values (what is
/// left of it is given back).
pub(crate) fn parse_series(l: &str, budget: &mut usize) -> Result<SeriesDesc, String> {
    let (labels, rest) = parse_labels(l)?;
    let mut values = Vec::new();
    for tok in tokenize(rest) {
        expand_value(&tok, &mut values, *budget)?;
    }
    *budget -= values.len();
    Ok(SeriesDesc { labels, values })
}

/// Fails unless `more` values fit in `out` within `budget`, before they are added.
fn make_room(out: &[SeqValue], more: usize, budget: usize) -> Result<(), String> {
    if more > budget.saturating_sub(out.len()) {
        return Err(format!(
            "the series expand to more than {MAX_LOAD_VALUES} values"
        ));
    }
    Ok(())
}

/// Splits at whitespace outside `{{ }}`.
fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' && chars.get(i + 1) == Some(&'{') {
            depth += 1;
            cur.push_str("{{");
            i += 2;
            continue;
        }
        if c == '}' && chars.get(i + 1) == Some(&'}') && depth > 0 {
            depth -= 1;
            cur.push_str("}}");
            i += 2;
            continue;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn expand_value(tok: &str, out: &mut Vec<SeqValue>, budget: usize) -> Result<(), String> {
    if tok.contains("{{") {
        return expand_histograms(tok, out, budget);
    }
    let (base, times) = match tok.rfind('x') {
        Some(p) if p + 1 < tok.len() && tok[p + 1..].bytes().all(|c| c.is_ascii_digit()) => (
            &tok[..p],
            Some(tok[p + 1..].parse::<usize>().map_err(|e| e.to_string())?),
        ),
        _ => (tok, None),
    };
    if base == "_" {
        let n = times.unwrap_or(1);
        make_room(out, n, budget)?;
        out.extend(std::iter::repeat_n(SeqValue::Omitted, n));
        return Ok(());
    }
    let (start, inc) = split_increment(base)?;
    make_room(out, times.map_or(1, |n| n.saturating_add(1)), budget)?;
    match times {
        None => out.push(SeqValue::Float(start)),
        Some(n) => {
            let mut v = start;
            for _ in 0..=n {
                out.push(SeqValue::Float(v));
                v += inc;
            }
        }
    }
    Ok(())
}

/// `{{h}}`, `{{h}}xN` (N+1 copies), `{{a}}+{{b}}xN` / `{{a}}-{{b}}xN` (a, a±b, ..., a±N·b).
fn expand_histograms(tok: &str, out: &mut Vec<SeqValue>, budget: usize) -> Result<(), String> {
    let bad = || format!("invalid histogram sequence {tok:?}");
    let first_end = tok.find("}}").ok_or_else(bad)? + 2;
    let base = parse_histogram(tok.get(2..first_end - 2).ok_or_else(bad)?)?;
    let rest = &tok[first_end..];
    if rest.is_empty() {
        make_room(out, 1, budget)?;
        out.push(SeqValue::Histogram(Box::new(base)));
        return Ok(());
    }
    if let Some(n) = rest.strip_prefix('x') {
        let n: usize = n.parse().map_err(|_| bad())?;
        make_room(out, n.saturating_add(1), budget)?;
        out.extend(std::iter::repeat_n(
            SeqValue::Histogram(Box::new(base)),
            n + 1,
        ));
        return Ok(());
    }
    let sign = match rest.as_bytes().first() {
        Some(b'+') => 1.0,
        Some(b'-') => -1.0,
        _ => return Err(bad()),
    };
    let inc_end = rest.find("}}").ok_or_else(bad)? + 2;
    let inc = parse_histogram(rest.get(3..inc_end - 2).ok_or_else(bad)?)?;
    let n: usize = rest[inc_end..]
        .strip_prefix('x')
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    make_room(out, n.saturating_add(1), budget)?;
    let mut cur = base;
    out.push(SeqValue::Histogram(Box::new(cur.clone())));
    for _ in 0..n {
        if cur.schema > inc.schema && !inc.uses_custom_buckets() {
            return Err(format!(
                "error combining histograms: cannot merge from schema {} to {}",
                inc.schema, cur.schema
            ));
        }
        let r = if sign > 0.0 {
            cur.add(&inc)
        } else {
            cur.sub(&inc)
        };
        r.map_err(|e| e.to_string())?;
        out.push(SeqValue::Histogram(Box::new(cur.clone())));
    }
    Ok(())
}

/// The inside of `{{...}}`: `key:value` pairs, lists in brackets.
pub(crate) fn parse_histogram(body: &str) -> Result<FloatHistogram, String> {
    let mut h = FloatHistogram::default();
    let (mut offset, mut n_offset) = (0i32, 0i32);
    let (mut buckets, mut n_buckets): (Option<Vec<f64>>, Option<Vec<f64>>) = (None, None);
    let mut rest = body.trim();
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("bad histogram {body:?}"))?;
        let key = rest[..colon].trim();
        rest = rest[colon + 1..].trim_start();
        let value;
        if rest.starts_with('[') {
            let close = rest
                .find(']')
                .ok_or_else(|| format!("bad histogram {body:?}"))?;
            value = &rest[1..close];
            rest = rest[close + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = &rest[..end];
            rest = rest[end..].trim_start();
        }
        let list = || -> Result<Vec<f64>, String> {
            value
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|x| !x.is_empty())
                .map(parse_number)
                .collect()
        };
        let int = || -> Result<i32, String> {
            value
                .parse::<i32>()
                .map_err(|_| format!("bad integer {value:?} in histogram"))
        };
        match key {
            "schema" => h.schema = int()?,
            "sum" => h.sum = parse_number(value)?,
            "count" => h.count = parse_number(value)?,
            "z_bucket" => h.zero_count = parse_number(value)?,
            "z_bucket_w" => h.zero_threshold = parse_number(value)?,
            "buckets" => buckets = Some(list()?),
            "n_buckets" => n_buckets = Some(list()?),
            "offset" => offset = int()?,
            "n_offset" => n_offset = int()?,
            "custom_values" => h.custom_values = list()?,
            "counter_reset_hint" => {
                h.counter_reset_hint = match value {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    _ => return Err(format!("bad counter_reset_hint {value:?}")),
                }
            }
            _ => return Err(format!("unknown histogram field {key:?}")),
        }
    }
    if let Some(b) = buckets.filter(|b| !b.is_empty()) {
        h.positive_spans = vec![Span {
            offset,
            length: b.len() as u32,
        }];
        h.positive_buckets = b;
    }
    if let Some(b) = n_buckets.filter(|b| !b.is_empty()) {
        h.negative_spans = vec![Span {
            offset: n_offset,
            length: b.len() as u32,
        }];
        h.negative_buckets = b;
    }
    Ok(h)
}

/// `a+b` / `a-b` / `a` where a may itself be signed or use an exponent.
fn split_increment(s: &str) -> Result<(f64, f64), String> {
    let b = s.as_bytes();
    for i in (1..b.len()).rev() {
        if (b[i] == b'+' || b[i] == b'-') && !matches!(b[i - 1], b'e' | b'E') {
            let a = parse_number(&s[..i])?;
            let inc = parse_number(&s[i..])?;
            return Ok((a, inc));
        }
    }
    Ok((parse_number(s)?, 0.0))
}

/// Parses `name{a="b", ...}` (name optional, braces optional) and returns the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let s = s.trim_start();
    let mut labels: Vec<Label> = Vec::new();
    let name_end = s
        .char_indices()
        .find(|(i, c)| {
            !(c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                || (*i == 0 && c.is_ascii_digit())
        })
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    if name_end > 0 {
        labels.push(Label::new(storage::METRIC_NAME, &s[..name_end]));
    }
    let mut rest = &s[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (name, r) = if rest.starts_with(['"', '\'', '`']) {
                let (n, used) = unquote(rest)?;
                (n, &rest[used..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .ok_or("unterminated label set")?;
                if end == 0 {
                    // Nothing here starts a label: without this the loop would stay in place,
                    // adding empty labels until memory runs out.
                    let c = rest.chars().next().unwrap_or_default();
                    return Err(format!(
                        "unexpected {c:?} in label set, expected a label name or '}}'"
                    ));
                }
                (rest[..end].to_string(), &rest[end..])
            };
            let r = r.trim_start();
            if let Some(r) = r.strip_prefix('=') {
                let r = r.trim_start();
                let (value, used) = unquote(r)?;
                labels.push(Label::new(name, value));
                rest = &r[used..];
            } else {
                // A quoted metric name inside the braces (UTF-8 syntax).
                labels.push(Label::new(storage::METRIC_NAME, name));
                rest = r;
            }
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            }
        }
    }
    Ok((Labels::new(labels), rest))
}

/// Unquotes a Go string literal at the start of `s`; returns it and the bytes consumed.
pub(crate) fn unquote(s: &str) -> Result<(String, usize), String> {
    let q = s.chars().next().ok_or("expected quoted string")?;
    if !matches!(q, '"' | '\'' | '`') {
        return Err(format!("expected quoted string at {s:?}"));
    }
    let mut out: Vec<u8> = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        let c = bytes[i];
        if c as char == q {
            return Ok((String::from_utf8_lossy(&out).into_owned(), i + 1));
        }
        if c == b'\\' && q != '`' {
            i += 1;
            let e = *bytes.get(i).ok_or("unterminated escape")?;
            match e {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'a' => out.push(7),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'v' => out.push(11),
                b'\\' | b'"' | b'\'' => out.push(e),
                b'x' => {
                    let h = s.get(i + 1..i + 3).ok_or("bad \\x escape")?;
                    out.push(u8::from_str_radix(h, 16).map_err(|e| e.to_string())?);
                    i += 2;
                }
                b'u' | b'U' => {
                    let n = if e == b'u' { 4 } else { 8 };
                    let h = s.get(i + 1..i + 1 + n).ok_or("bad unicode escape")?;
                    let cp = u32::from_str_radix(h, 16).map_err(|e| e.to_string())?;
                    let ch = char::from_u32(cp).ok_or("bad code point")?;
                    out.extend_from_slice(ch.to_string().as_bytes());
                    i += n;
                }
                b'0'..=b'7' => {
                    let h = s.get(i..i + 3).ok_or("bad octal escape")?;
                    out.push(u8::from_str_radix(h, 8).map_err(|e| e.to_string())?);
                    i += 2;
                }
                _ => return Err(format!("unknown escape \\{}", e as char)),
            }
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    Err("unterminated string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(s: &str) -> Result<SeriesDesc, String> {
        parse_series(s, &mut MAX_LOAD_VALUES.clone())
    }

    fn floats(s: &str) -> Vec<Option<f64>> {
        series(s)
            .unwrap_or_else(|e| panic!("{e}"))
            .values
            .iter()
            .map(|v| match v {
                SeqValue::Float(f) => Some(*f),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn expands_sequences() {
        assert_eq!(
            floats("m 0+10x3"),
            vec![Some(0.0), Some(10.0), Some(20.0), Some(30.0)]
        );
        assert_eq!(
            floats("m 1-1x2 _x2 5"),
            vec![Some(1.0), Some(0.0), Some(-1.0), None, None, Some(5.0)]
        );
        assert_eq!(
            floats("m -2+4x1 1e3"),
            vec![Some(-2.0), Some(2.0), Some(1000.0)]
        );
        assert_eq!(floats("m 1x2"), vec![Some(1.0), Some(1.0), Some(1.0)]);
        let s = floats("m stale Inf -Inf");
        assert!(s[0].is_some_and(storage::is_stale_nan));
        assert_eq!(s[1], Some(f64::INFINITY));
        assert_eq!(s[2], Some(f64::NEG_INFINITY));
    }

    #[test]
    fn parses_labels_and_histograms() {
        let s = series(r#"http_requests{job="api", instance="0"} {{schema:0 sum:1 count:2}}x2 3"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.labels.to_string(),
            r#"http_requests{instance="0", job="api"}"#
        );
        assert_eq!(s.values.len(), 4);
        assert_eq!(s.values[3], SeqValue::Float(3.0));
        let s = series("m {{schema:0 count:1 buckets:[1] n_buckets:[2] n_offset:1}}+{{schema:0 count:2 buckets:[2]}}x2")
            .unwrap_or_else(|e| panic!("{e}"));
        let counts: Vec<f64> = s
            .values
            .iter()
            .filter_map(|v| match v {
                SeqValue::Histogram(h) => Some(h.count),
                _ => None,
            })
            .collect();
        assert_eq!(counts, vec![1.0, 3.0, 5.0]);
        match &s.values[2] {
            SeqValue::Histogram(h) => {
                assert_eq!(h.positive_buckets, vec![5.0]);
                assert_eq!(
                    h.negative_spans,
                    vec![Span {
                        offset: 1,
                        length: 1
                    }]
                );
            }
            other => panic!("expected a histogram, got {other:?}"),
        }
        let s = series(r#"{"my.metric", a="x\"y"} 1"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.labels.get("__name__"), Some("my.metric"));
        assert_eq!(s.labels.get("a"), Some("x\"y"));
    }

    #[test]
    fn malformed_series_are_errors_not_endless_loops() {
        for (text, want) in [
            // An unclosed `{` used to read the values as labels forever.
            (r#"up{job="a" 0+1x10"#, "in label set"),
            (r#"up{job="a" 1 2"#, "unterminated label set"),
            ("up{-} 1", "in label set"),
            (r#"up{job="a} 1"#, "unterminated string"),
            ("up{{schema:0 1", "in label set"),
            ("m {{schema:0 count:1", "invalid histogram sequence"),
            ("m {{schema:0 count:1 buckets:[1}}", "bad histogram"),
        ] {
            let err = series(text).map(|_| ()).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn expansions_are_bounded_before_allocating() {
        for text in [
            "m 0+1x100000000000",
            "m _x100000000000",
            "m 1x18446744073709551615",
            "m {{schema:0 count:1}}x100000000000",
            "m {{schema:0 count:1}}+{{schema:0 count:1}}x100000000000",
        ] {
            let err = series(text).map(|_| ()).unwrap_err();
            assert!(err.contains("expand to more than"), "{text}: {err}");
        }
        // The budget is what is left for the series of a load: it shrinks with each one.
        let mut budget = 10;
        parse_series("m 0x4", &mut budget).unwrap();
        parse_series("m 1 2 3 4 5", &mut budget).unwrap();
        assert_eq!(budget, 0);
        assert!(parse_series("m 1", &mut budget).is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("1h30m").ok(), Some(5_400_000));
        assert_eq!(parse_duration("0").ok(), Some(0));
        assert_eq!(parse_duration("10s500ms").ok(), Some(10_500));
        assert!(parse_duration("5x").is_err());
    }
}
