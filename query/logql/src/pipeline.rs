//! Running a log pipeline (line filters, parsers, label filters, formatting, drop/keep) over
//! one entry at a time. Owns the per-line semantics of every stage; knows nothing of storage
//! or of time ranges.

use std::collections::BTreeMap;

use regex::Regex;

use crate::ast::*;
use crate::template::{Entry, Template};
use gocompat::units::{parse_bytes, parse_go_duration};

pub type LabelMap = BTreeMap<String, String>;

/// A compiled `pattern` expression: literals and `<name>` / `<_>` captures.
#[derive(Clone, Debug)]
pub(crate) struct Pattern(Vec<PatternPart>);

#[derive(Clone, Debug)]
enum PatternPart {
    Lit(String),
    Cap(Option<String>),
}

impl Pattern {
    pub(crate) fn parse(s: &str) -> Result<Pattern, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            match rest.find('<') {
                Some(i) if rest[i..].find('>').is_some() => {
                    let close = i + rest[i..].find('>').unwrap_or(0);
                    let name = &rest[i + 1..close];
                    if !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        if i > 0 {
                            parts.push(PatternPart::Lit(rest[..i].to_owned()));
                        }
                        if matches!(parts.last(), Some(PatternPart::Cap(_))) {
                            return Err("syntax error: consecutive captures are not allowed".into());
                        }
                        parts.push(PatternPart::Cap((name != "_").then(|| name.to_owned())));
                    } else {
                        parts.push(PatternPart::Lit(rest[..=close].to_owned()));
                    }
                    rest = &rest[close + 1..];
                }
                _ => {
                    parts.push(PatternPart::Lit(rest.to_owned()));
                    rest = "";
                }
            }
        }
        if !parts.iter().any(|p| matches!(p, PatternPart::Cap(Some(_)))) {
            return Err("at least one capture is required".into());
        }
        Ok(Pattern(parts))
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

fn sanitize(k: &str) -> String {
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
fn logfmt(line: &str) -> Result<Vec<(String, String)>, String> {
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
                    let keep = match f.op {
                        FilterOp::Contains => line.contains(&f.value),
                        FilterOp::NotContains => !line.contains(&f.value),
                        FilterOp::Match => f.re.as_ref().is_some_and(|r| r.is_match(&line)),
                        FilterOp::NotMatch => !f.re.as_ref().is_some_and(|r| r.is_match(&line)),
                    };
                    if !keep {
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

/// The substrings the index can look up: `|=` filters before anything rewrites the line.
pub(crate) fn index_needles(stages: &[Stage]) -> Vec<String> {
    let mut out = Vec::new();
    for s in stages {
        match s {
            Stage::LineFilter(LineFilter {
                op: FilterOp::Contains,
                value,
                ..
            }) if !value.is_empty() => out.push(value.clone()),
            Stage::LineFormat(_) | Stage::Unpack | Stage::Decolorize => break,
            _ => {}
        }
    }
    out
}
