//! Running a log pipeline (line filters, parsers, label filters, formatting, drop/keep) over
//! one entry at a time. Owns the per-line semantics of every stage; knows nothing of storage
//! or of time ranges.

use std::collections::BTreeMap;

use regex::Regex;

use crate::ast::*;
use crate::template::{Entry, Template};
use gocompat::units::{parse_bytes, parse_go_duration};

pub type LabelMap = BTreeMap<String, String>;

/// A compiled pattern, read as Loki's pattern lexer reads one: `<name>` (an ASCII letter or
/// `_`, then letters, digits or `_`) is a capture, `<_>` an unnamed one; everything else, a
/// `<` that opens no capture included, is literal text. Adjacent literal text is one part, so
/// parts alternate between literals and captures.
#[derive(Clone, Debug)]
pub(crate) struct Pattern(Vec<PatternPart>);

#[derive(Clone, Debug)]
enum PatternPart {
    Lit(String),
    Cap(Option<String>),
}

impl Pattern {
    /// A `| pattern` stage's expression: it must name at least one capture.
    pub(crate) fn parse(s: &str) -> Result<Pattern, String> {
        let p = Pattern::lex(s)?;
        if !p.0.iter().any(|p| matches!(p, PatternPart::Cap(Some(_)))) {
            return Err("at least one capture is required".into());
        }
        Ok(p)
    }

    /// A `|>`/`!>` filter's pattern: any literals and captures, at least one of either. A named
    /// capture matches as `<_>` does (Loki refuses names here, but a pattern Drain found in
    /// lines holding `<word>` names one, and the Drilldown filters on it as found).
    pub(crate) fn parse_filter(s: &str) -> Result<Pattern, String> {
        let p = Pattern::lex(s)?;
        if p.0.is_empty() {
            return Err("a pattern filter needs at least one literal or capture".into());
        }
        Ok(p)
    }

    fn lex(s: &str) -> Result<Pattern, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find('<') {
            let after = &rest[i + 1..];
            let Some(name) = capture_name(after) else {
                push_literal(&mut parts, &rest[..=i]);
                rest = after;
                continue;
            };
            push_literal(&mut parts, &rest[..i]);
            if let Some(PatternPart::Cap(prev)) = parts.last() {
                let prev = prev.as_deref().unwrap_or("_");
                return Err(format!(
                    "found consecutive capture '<{prev}><{name}>': invalid expression"
                ));
            }
            parts.push(PatternPart::Cap((name != "_").then(|| name.to_owned())));
            rest = &after[name.len() + 1..];
        }
        push_literal(&mut parts, rest);
        Ok(Pattern(parts))
    }

    /// The literal texts, in order: every line the pattern matches contains each of them.
    pub(crate) fn literals(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            PatternPart::Lit(l) => Some(l.as_str()),
            PatternPart::Cap(_) => None,
        })
    }

    /// Whether the whole line fits the pattern (`|>`): a leading literal starts the line, a
    /// trailing one ends it, the others follow in order, and every capture covers at least
    /// one character. Each literal is taken at its first place after the text before it,
    /// which leaves the most line to what follows, so a line that fits in any way is found
    /// to fit (Loki's matcher does not look past a literal right after the previous one, and
    /// misses some such lines).
    pub(crate) fn matches(&self, line: &str) -> bool {
        let mut rest = line;
        let mut after_capture = false;
        for (i, part) in self.0.iter().enumerate() {
            let lit = match part {
                PatternPart::Cap(_) => {
                    after_capture = true;
                    continue;
                }
                PatternPart::Lit(lit) => lit.as_str(),
            };
            let last = i + 1 == self.0.len();
            if !after_capture {
                // Only the first part can be a literal with no capture before it.
                if last {
                    return rest == lit;
                }
                match rest.strip_prefix(lit) {
                    Some(r) => rest = r,
                    None => return false,
                }
                continue;
            }
            if last {
                return rest.len() > lit.len() && rest.ends_with(lit);
            }
            let Some(first) = rest.chars().next() else {
                return false;
            };
            let from = first.len_utf8();
            match rest[from..].find(lit) {
                Some(at) => rest = &rest[from + at + lit.len()..],
                None => return false,
            }
        }
        // The pattern ends on a capture (a pattern ending on a literal returned above).
        !rest.is_empty()
    }

    fn extract(&self, line: &str) -> Option<Vec<(String, String)>> {
        let mut pos = 0;
        let mut out = Vec::new();
        let mut pending: Option<&Option<String>> = None;
        for part in &self.0 {
            match part {
                PatternPart::Cap(name) => pending = Some(name),
                PatternPart::Lit(lit) => {
                    let at = pos + line[pos..].find(lit.as_str())?;
                    if let Some(Some(name)) = pending.take() {
                        out.push((name.clone(), line[pos..at].to_owned()));
                    }
                    pos = at + lit.len();
                }
            }
        }
        if let Some(Some(name)) = pending {
            out.push((name.clone(), line[pos..].to_owned()));
        }
        Some(out)
    }
}

/// The name of a capture opening at `s` (just after its `<`), if one does.
fn capture_name(s: &str) -> Option<&str> {
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(s.len(), |(i, _)| i);
    (end > 0 && s[end..].starts_with('>')).then(|| &s[..end])
}

fn push_literal(parts: &mut Vec<PatternPart>, text: &str) {
    if text.is_empty() {
        return;
    }
    match parts.last_mut() {
        Some(PatternPart::Lit(l)) => l.push_str(text),
        _ => parts.push(PatternPart::Lit(text.to_owned())),
    }
}

/// How one value of a line filter tests a line.
#[derive(Clone, Debug)]
pub(crate) enum LineMatcher {
    /// `|=`, `!=`: the value is part of the line.
    Substring,
    /// `|~`, `!~`: unanchored, as Loki.
    Regex(Regex),
    /// `|>`, `!>`.
    Pattern(Pattern),
}

impl FilterValue {
    pub(crate) fn matches(&self, line: &str) -> bool {
        match &self.matcher {
            LineMatcher::Substring => line.contains(&self.value),
            LineMatcher::Regex(re) => re.is_match(line),
            LineMatcher::Pattern(p) => p.matches(line),
        }
    }
}

/// The stages of one query, ready to run.
pub(crate) struct Pipeline {
    stages: Vec<Compiled>,
}

enum Compiled {
    Stage(Stage),
    Pattern(Pattern),
    /// Templates that failed to parse (the parser already refuses them) fail every line.
    LineFormat(Result<Template, String>),
    LabelFormat(Vec<(String, LabelFormatItem)>),
}

#[derive(Clone, Debug)]
enum LabelFormatItem {
    Rename(String),
    Template(Result<Template, String>),
}

/// The `__error__` values Loki sets; entries that hit one are kept, tagged, and a metric query
/// over them fails unless a label filter drops them.
pub(crate) const ERROR_LABEL: &str = "__error__";
const ERROR_DETAILS_LABEL: &str = "__error_details__";
const JSON_PARSER_ERR: &str = "JSONParserErr";
const LOGFMT_PARSER_ERR: &str = "LogfmtParserErr";
const LABEL_FILTER_ERR: &str = "LabelFilterErr";
pub(crate) const SAMPLE_EXTRACTION_ERR: &str = "SampleExtractionErr";
const TEMPLATE_FORMAT_ERR: &str = "TemplateFormatErr";

pub(crate) fn set_error(labels: &mut LabelMap, kind: &str, details: String) {
    labels.insert(ERROR_LABEL.into(), kind.into());
    labels.insert(ERROR_DETAILS_LABEL.into(), details);
}

fn template_error(labels: &mut LabelMap, details: String) {
    set_error(labels, TEMPLATE_FORMAT_ERR, details);
}

/// A parsed label must not shadow a stream label: Loki suffixes it with `_extracted`.
fn add_parsed(labels: &mut LabelMap, original: &LabelMap, name: String, value: String) {
    let name = sanitize(&name);
    if name.is_empty() {
        return;
    }
    if original.contains_key(&name) {
        labels.insert(format!("{name}_extracted"), value);
    } else {
        labels.insert(name, value);
    }
}

pub(crate) fn sanitize(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn json_flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}_{k}")
                };
                json_flatten(&key, v, out);
            }
        }
        serde_json::Value::Array(_) => {}
        other => out.push((prefix.to_owned(), json_scalar(other))),
    }
}

fn json_scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `a.b[0].c` style paths of `json label="expr"`.
fn json_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut cur = v;
    for seg in path.split('.') {
        let (name, idx) = match seg.find('[') {
            Some(i) => (&seg[..i], Some(&seg[i..])),
            None => (seg, None),
        };
        let name = name.trim_matches('"');
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        if let Some(mut idx) = idx {
            while let Some(rest) = idx.strip_prefix('[') {
                let close = rest.find(']')?;
                let inner = rest[..close].trim_matches('"');
                cur = match inner.parse::<usize>() {
                    Ok(n) => cur.get(n)?,
                    Err(_) => cur.get(inner)?,
                };
                idx = &rest[close + 1..];
            }
        }
    }
    Some(cur)
}

/// logfmt: `key=value key2="quoted value" flag`.
/// The pairs of a logfmt line, or the error as Loki details it (`logfmt syntax error at pos
/// N : reason`, N counted from 1).
pub(crate) fn logfmt(line: &str) -> Result<Vec<(String, String)>, String> {
    let syntax = |pos: usize, why: &str| format!("logfmt syntax error at pos {} : {why}", pos + 1);
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    let b = line;
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let start = i;
        let mut end = b.len();
        while let Some(&(j, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                end = j;
                break;
            }
            if c == '"' {
                return Err(syntax(j, "unexpected '\"'"));
            }
            chars.next();
        }
        let key = b[start..end].to_owned();
        if chars.peek().map(|&(_, c)| c) != Some('=') {
            out.push((key, String::new()));
            continue;
        }
        chars.next();
        let mut value = String::new();
        if chars.peek().map(|&(_, c)| c) == Some('"') {
            chars.next();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, 't')) => value.push('\t'),
                        Some((_, c)) => value.push(c),
                        None => return Err(syntax(line.len(), "unterminated quoted value")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(syntax(line.len(), "unterminated quoted value"));
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if !key.is_empty() {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// A label value as a number; the error reads as Go's conversion error does.
fn convert(value: &str, kind: NumKind) -> Result<f64, String> {
    let v = value.trim();
    match kind {
        NumKind::Number => v
            .parse()
            .map_err(|_| format!("strconv.ParseFloat: parsing {value:?}: invalid syntax")),
        NumKind::Duration => parse_go_duration(v)
            .map(|ns| ns as f64 / 1e9)
            .ok_or_else(|| format!("time: invalid duration {value:?}")),
        NumKind::Bytes => parse_bytes(v).ok_or_else(|| {
            if v.starts_with(|c: char| c.is_ascii_digit()) {
                format!("unhandled size name: {value:?}")
            } else {
                format!("strconv.ParseFloat: parsing {value:?}: invalid syntax")
            }
        }),
    }
}

/// Whether the entry passes, as Loki's label filters decide: a missing label fails a
/// comparison; a value that does not convert passes, tagged `LabelFilterErr`; an entry already
/// tagged with an error passes every comparison (only `__error__` matchers filter it).
pub(crate) fn apply_label_filter(f: &LabelFilter, labels: &mut LabelMap) -> bool {
    match f {
        LabelFilter::Matcher(m) => m.matches(labels.get(&m.name).map_or("", String::as_str)),
        LabelFilter::Compare {
            name,
            op,
            value,
            kind,
            ..
        } => {
            if labels.contains_key(ERROR_LABEL) {
                return true;
            }
            let Some(text) = labels.get(name) else {
                return false;
            };
            let v = match convert(text, *kind) {
                Ok(v) => v,
                Err(details) => {
                    set_error(labels, LABEL_FILTER_ERR, details);
                    return true;
                }
            };
            match op {
                CmpOp::Eq => v == *value,
                CmpOp::Ne => v != *value,
                CmpOp::Gt => v > *value,
                CmpOp::Ge => v >= *value,
                CmpOp::Lt => v < *value,
                CmpOp::Le => v <= *value,
            }
        }
        // Both sides run (either may tag the entry), as in Loki.
        LabelFilter::And(a, b) => {
            let l = apply_label_filter(a, labels);
            apply_label_filter(b, labels) && l
        }
        LabelFilter::Or(a, b) => apply_label_filter(a, labels) || apply_label_filter(b, labels),
    }
}

/// Converts an unwrapped label value (a missing label is "") to a sample value.
pub(crate) fn unwrap_value(u: &Unwrap, labels: &LabelMap) -> Result<f64, String> {
    let v = labels.get(&u.label).map_or("", String::as_str);
    let kind = match u.conversion.as_deref() {
        Some("duration" | "duration_seconds") => NumKind::Duration,
        Some("bytes") => NumKind::Bytes,
        _ => NumKind::Number,
    };
    convert(v, kind)
}

fn sel_matches(s: &LabelSel, labels: &LabelMap) -> bool {
    match &s.matcher {
        None => labels.contains_key(&s.name),
        Some(m) => labels.get(&s.name).is_some_and(|v| m.matches(v)),
    }
}

impl Pipeline {
    pub(crate) fn new(stages: &[Stage]) -> Pipeline {
        let stages = stages
            .iter()
            .map(|s| match s {
                Stage::Pattern(p) => {
                    Pattern::parse(p).map_or_else(|_| Compiled::Stage(s.clone()), Compiled::Pattern)
                }
                Stage::LineFormat(t) => Compiled::LineFormat(Template::parse(t)),
                Stage::LabelFormat(items) => Compiled::LabelFormat(
                    items
                        .iter()
                        .map(|(dst, v)| {
                            let item = match v {
                                LabelFmt::Rename(src) => LabelFormatItem::Rename(src.clone()),
                                LabelFmt::Template(t) => {
                                    LabelFormatItem::Template(Template::parse(t))
                                }
                            };
                            (dst.clone(), item)
                        })
                        .collect(),
                ),
                other => Compiled::Stage(other.clone()),
            })
            .collect();
        Pipeline { stages }
    }

    /// Runs the stages; None when the entry is filtered out.
    pub(crate) fn process(
        &self,
        ts_ns: i64,
        mut line: String,
        mut labels: LabelMap,
    ) -> Option<(String, LabelMap)> {
        let original = labels.clone();
        for stage in &self.stages {
            let stage = match stage {
                Compiled::Pattern(p) => {
                    if let Some(caps) = p.extract(&line) {
                        for (k, v) in caps {
                            add_parsed(&mut labels, &original, k, v);
                        }
                    }
                    continue;
                }
                Compiled::LineFormat(t) => {
                    let entry = Entry {
                        labels: &labels,
                        line: &line,
                        ts_ns,
                    };
                    match t
                        .as_ref()
                        .map_err(Clone::clone)
                        .and_then(|t| t.render(&entry))
                    {
                        Ok(l) => line = l,
                        Err(e) => template_error(&mut labels, e),
                    }
                    continue;
                }
                Compiled::LabelFormat(items) => {
                    // Every template sees the labels as they were before this stage.
                    let before = labels.clone();
                    let entry = Entry {
                        labels: &before,
                        line: &line,
                        ts_ns,
                    };
                    for (dst, item) in items {
                        match item {
                            LabelFormatItem::Rename(src) => {
                                if let Some(val) = labels.remove(src) {
                                    labels.insert(dst.clone(), val);
                                }
                            }
                            LabelFormatItem::Template(t) => {
                                match t
                                    .as_ref()
                                    .map_err(Clone::clone)
                                    .and_then(|t| t.render(&entry))
                                {
                                    Ok(v) => {
                                        labels.insert(dst.clone(), v);
                                    }
                                    Err(e) => template_error(&mut labels, e),
                                }
                            }
                        }
                    }
                    continue;
                }
                Compiled::Stage(s) => s,
            };
            match stage {
                Stage::LineFilter(f) => {
                    if f.alternatives.iter().any(|v| v.matches(&line)) != f.op.keeps_matches() {
                        return None;
                    }
                }
                Stage::Json(params) => match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v @ serde_json::Value::Object(_)) => {
                        if params.is_empty() {
                            let mut out = Vec::new();
                            json_flatten("", &v, &mut out);
                            for (k, val) in out {
                                add_parsed(&mut labels, &original, k, val);
                            }
                        } else {
                            for (name, path) in params {
                                let val = json_path(&v, path).map(json_scalar).unwrap_or_default();
                                add_parsed(&mut labels, &original, name.clone(), val);
                            }
                        }
                    }
                    Ok(_) => set_error(
                        &mut labels,
                        JSON_PARSER_ERR,
                        "expecting json object(6), but it is not".into(),
                    ),
                    Err(e) => set_error(&mut labels, JSON_PARSER_ERR, e.to_string()),
                },
                Stage::Logfmt => match logfmt(&line) {
                    Ok(pairs) => {
                        for (k, v) in pairs {
                            add_parsed(&mut labels, &original, k, v);
                        }
                    }
                    Err(details) => set_error(&mut labels, LOGFMT_PARSER_ERR, details),
                },
                Stage::Regexp(re) => {
                    if let Some(caps) = re.captures(&line) {
                        for name in re.capture_names().flatten() {
                            if let Some(m) = caps.name(name) {
                                add_parsed(
                                    &mut labels,
                                    &original,
                                    name.to_owned(),
                                    m.as_str().to_owned(),
                                );
                            }
                        }
                    }
                }
                Stage::Pattern(_) => {}
                Stage::Unpack => {
                    if let Ok(serde_json::Value::Object(m)) =
                        serde_json::from_str::<serde_json::Value>(&line)
                    {
                        let mut new_line = None;
                        for (k, v) in m {
                            if let serde_json::Value::String(s) = v {
                                if k == "_entry" {
                                    new_line = Some(s);
                                } else {
                                    add_parsed(&mut labels, &original, k, s);
                                }
                            }
                        }
                        if let Some(l) = new_line {
                            line = l;
                        }
                    } else {
                        set_error(
                            &mut labels,
                            JSON_PARSER_ERR,
                            "expecting json object(6), but it is not".into(),
                        );
                    }
                }
                Stage::LabelFilter(f) => {
                    if !apply_label_filter(f, &mut labels) {
                        return None;
                    }
                }
                // Compiled above.
                Stage::LineFormat(_) | Stage::LabelFormat(_) => {}
                Stage::Drop(sels) => labels.retain(|k, v| {
                    let one = LabelMap::from([(k.clone(), v.clone())]);
                    !sels.iter().any(|s| s.name == *k && sel_matches(s, &one))
                }),
                Stage::Keep(sels) => labels.retain(|k, v| {
                    let one = LabelMap::from([(k.clone(), v.clone())]);
                    sels.iter().any(|s| s.name == *k && sel_matches(s, &one))
                }),
                Stage::Decolorize => {
                    if let Some(re) = ansi() {
                        line = re.replace_all(&line, "").into_owned();
                    }
                }
            }
        }
        labels.retain(|_, v| !v.is_empty());
        Some((line, labels))
    }
}

fn ansi() -> Option<&'static Regex> {
    static RE: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new("\x1b\\[[0-9;]*[A-Za-z]").ok())
        .as_ref()
}

/// The substrings the index can look up: those every kept line must contain, from `|=` and
/// `|>` filters without alternatives (with them, no one value is required) before anything
/// rewrites the line.
pub(crate) fn index_needles(stages: &[Stage]) -> Vec<String> {
    let mut out = Vec::new();
    for s in stages {
        match s {
            Stage::LineFilter(LineFilter { op, alternatives }) => {
                let [only] = alternatives.as_slice() else {
                    continue;
                };
                match (op, &only.matcher) {
                    (FilterOp::Contains, _) if !only.value.is_empty() => {
                        out.push(only.value.clone());
                    }
                    (FilterOp::Pattern, LineMatcher::Pattern(p)) => {
                        out.extend(p.literals().map(str::to_owned));
                    }
                    _ => {}
                }
            }
            Stage::LineFormat(_) | Stage::Unpack | Stage::Decolorize => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Whether the log query `q`'s stages keep `line`.
    fn kept(q: &str, line: &str) -> bool {
        let Expr::Log(l) = crate::parse(q).unwrap_or_else(|e| panic!("{q}: {e}")) else {
            panic!("{q} is not a log query")
        };
        Pipeline::new(&l.stages)
            .process(0, line.to_owned(), LabelMap::new())
            .is_some()
    }

    #[test]
    fn pattern_filters_match_whole_lines() {
        for (pattern, line, want) in [
            ("<_> logged in", "user 1 logged in", true),
            ("<_> logged in", "user 1 logged in now", false),
            ("<_> logged in", " logged in", false),
            ("user <_>", "user 1", true),
            ("user <_>", "user ", false),
            ("user <_>", "xuser 1", false),
            ("user <_> in", "user  in", false),
            ("user <_> in", "user 1 in", true),
            ("a<_>b<_>", "aXbYbZ", true),
            ("<_>b", "abab", true),
            // Loki's matcher misses this line: the first " bar " follows nothing.
            ("<_> bar <_>", " bar  bar x", true),
            // A named capture matches as <_> does.
            ("<ip> - <_>", "1.2.3.4 - GET", true),
            ("exact line", "exact line", true),
            ("exact line", "exact line!", false),
            ("<_>", "", false),
            ("<_>", "x", true),
            ("<_>é<_>", "aéb", true),
            ("<<_>>", "<x>", true),
            ("<1a> <_>", "<1a> x", true),
        ] {
            let q = format!("{{a=\"b\"}} |> {}", serde_json::Value::from(pattern));
            assert_eq!(kept(&q, line), want, "{pattern:?} on {line:?}");
            let q = format!("{{a=\"b\"}} !> {}", serde_json::Value::from(pattern));
            assert_eq!(kept(&q, line), !want, "not {pattern:?} on {line:?}");
        }
    }

    #[test]
    fn alternatives_keep_any_and_drop_any() {
        let keep = r#"{a="b"} |> "<_> logged in" or "<_> logged out""#;
        assert!(kept(keep, "user 1 logged in"));
        assert!(kept(keep, "user 1 logged out"));
        assert!(!kept(keep, "user 1 left"));
        let drop = r#"{a="b"} !> "a <_>" or "b <_>""#;
        assert!(!kept(drop, "a 1"));
        assert!(!kept(drop, "b 1"));
        assert!(kept(drop, "c 1"));
        for (q, line, want) in [
            (r#"{a="b"} |= "x" or "y""#, "-y-", true),
            (r#"{a="b"} |= "x" or "y""#, "-z-", false),
            (r#"{a="b"} != "x" or "y""#, "-y-", false),
            (r#"{a="b"} != "x" or "y""#, "-z-", true),
            (r#"{a="b"} |~ "^x" or "^y""#, "y-", true),
            (r#"{a="b"} !~ "^x" or "^y""#, "x-", false),
            (r#"{a="b"} !~ "^x" or "^y""#, "z-", true),
        ] {
            assert_eq!(kept(q, line), want, "{q} on {line:?}");
        }
    }

    #[test]
    fn needles_come_from_required_substrings_only() {
        let Expr::Log(l) = crate::parse(
            r#"{a="b"} |= "x" |> "<_> level=<_> msg" |= "a" or "b" !> "q <_>" |> "c" or "d" != "e""#,
        )
        .unwrap() else {
            panic!("not a log query")
        };
        assert_eq!(index_needles(&l.stages), ["x", " level=", " msg"]);
    }

    #[test]
    fn pattern_lexing_and_errors() {
        let lits = |s: &str| -> Vec<String> {
            Pattern::parse_filter(s)
                .unwrap()
                .literals()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(lits("<<_>>"), ["<", ">"]);
        assert_eq!(lits("<1a> <a b> <_>"), ["<1a> <a b> "]);
        assert_eq!(lits("a <_> b <c> d"), ["a ", " b ", " d"]);
        assert_eq!(
            Pattern::parse_filter("x <_><b>").unwrap_err(),
            "found consecutive capture '<_><b>': invalid expression"
        );
        assert!(Pattern::parse_filter("").is_err());
        assert_eq!(
            Pattern::parse("<a><_>").unwrap_err(),
            "found consecutive capture '<a><_>': invalid expression"
        );
        assert!(Pattern::parse("<_> only").is_err());
        // `| pattern` still extracts as before.
        let p = Pattern::parse("<ip> - <_> <status>").unwrap();
        assert_eq!(
            p.extract("1.2.3.4 - GET 200"),
            Some(vec![
                ("ip".to_owned(), "1.2.3.4".to_owned()),
                ("status".to_owned(), "200".to_owned())
            ])
        );
    }

    proptest! {
        #[test]
        fn pattern_parsing_never_panics(s in "\\PC{0,64}", line in "\\PC{0,64}") {
            if let Ok(p) = Pattern::parse_filter(&s) {
                let _ = p.matches(&line);
            }
            if let Ok(p) = Pattern::parse(&s) {
                let _ = p.extract(&line);
            }
        }

        /// A line made by filling a pattern's captures with any non-empty text fits it.
        #[test]
        fn filled_patterns_match(
            parts in proptest::collection::vec(("[^<]{0,6}", "\\PC{1,6}"), 1..6),
            tail in "[^<]{0,6}",
        ) {
            let mut pattern = String::new();
            let mut line = String::new();
            for (lit, fill) in &parts {
                pattern.push_str(lit);
                pattern.push_str("<_>");
                line.push_str(lit);
                line.push_str(fill);
            }
            pattern.push_str(&tail);
            line.push_str(&tail);
            let p = Pattern::parse_filter(&pattern);
            // Adjacent captures (an empty literal between) are refused; the rest match.
            let adjacent = parts.iter().skip(1).any(|(lit, _)| lit.is_empty());
            prop_assert_eq!(p.is_err(), adjacent);
            if let Ok(p) = p {
                prop_assert!(p.matches(&line), "{:?} on {:?}", pattern, line);
            }
        }
    }
}
