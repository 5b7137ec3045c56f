//! The Go text/template subset of `line_format` and `label_format`, with the functions Loki
//! registers for them (its own — `__line__`, `__timestamp__`, `alignLeft`, `bytes`, … — and
//! the sprig and Go ones it picks). Data is the entry's labels (`.name`, missing = ""). Owns
//! template parsing and rendering; knows nothing of pipelines or storage.
//!
//! Not supported: variables (`$x :=`), `range`/`with`/`define`, and functions that return maps
//! (`fromJson`); using them is a parse error, not a silent difference.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Timelike, Utc};
use regex::Regex;

use super::parser::{parse_bytes, parse_go_duration};
use super::LabelMap;

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A time.Time, as nanoseconds since the epoch (shown in UTC).
    Time(i64),
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
}

/// `cmd | cmd | …`; each command is a function with arguments or a single operand.
type Pipe = Vec<Vec<Arg>>;

#[derive(Clone, Debug)]
enum Arg {
    Lit(Val),
    /// `.name` (empty: `.` itself, the labels).
    Field(String),
    Func(String),
    Sub(Pipe),
}

/// A parsed template; rendering errors are Go's execution errors, e.g. a wrong argument.
#[derive(Clone, Debug)]
pub(crate) struct Template(Vec<Node>);

/// What a template reads: the entry's labels, line and time.
pub(crate) struct Entry<'a> {
    pub labels: &'a LabelMap,
    pub line: &'a str,
    pub ts_ns: i64,
}

const FUNCS: &[&str] = &[
    "__line__",
    "__timestamp__",
    "ToLower",
    "ToUpper",
    "lower",
    "upper",
    "title",
    "Title",
    "trunc",
    "substr",
    "replace",
    "Replace",
    "trim",
    "trimAll",
    "trimPrefix",
    "trimSuffix",
    "TrimSpace",
    "Trim",
    "TrimLeft",
    "TrimRight",
    "TrimPrefix",
    "TrimSuffix",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "count",
    "repeat",
    "indent",
    "nindent",
    "printf",
    "default",
    "alignLeft",
    "alignRight",
    "unixEpoch",
    "unixEpochMillis",
    "unixEpochNanos",
    "unixToTime",
    "toDate",
    "date",
    "now",
    "duration",
    "duration_seconds",
    "bytes",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "addf",
    "subf",
    "mulf",
    "divf",
    "max",
    "min",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "int",
    "float64",
    "len",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
];

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let toks = lex(text)?;
        let mut pos = 0;
        let (nodes, end) = parse_list(&toks, &mut pos)?;
        match end {
            None => Ok(Template(nodes)),
            Some(kw) => Err(format!("unexpected {{{{{kw}}}}}")),
        }
    }

    pub(crate) fn render(&self, e: &Entry) -> Result<String, String> {
        let mut out = String::new();
        nodes(&self.0, e, &mut out)?;
        Ok(out)
    }
}

enum Tok {
    Text(String),
    /// The words of one action.
    Action(Vec<Word>),
}

#[derive(Clone, Debug, PartialEq)]
enum Word {
    Ident(String),
    Field(String),
    Lit(Val),
    Open,
    Close,
    Bar,
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while !rest.is_empty() {
        let (before, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut t = if trim_next {
            before.trim_start()
        } else {
            before
        };
        let Some(after) = after else {
            toks.push(Tok::Text(t.to_owned()));
            break;
        };
        let trim_before = after.starts_with("- ");
        if trim_before {
            t = t.trim_end();
        }
        toks.push(Tok::Text(t.to_owned()));
        let body = if trim_before { &after[2..] } else { after };
        let close = find_close(body).ok_or("unclosed action")?;
        let inner = &body[..close];
        trim_next = inner.ends_with(" -");
        let inner = if trim_next {
            &inner[..inner.len() - 2]
        } else {
            inner
        };
        rest = &body[close + 2..];
        let inner = inner.trim();
        if inner.starts_with("/*") {
            if !inner.ends_with("*/") {
                return Err("unclosed comment".into());
            }
            continue;
        }
        toks.push(Tok::Action(lex_action(inner)?));
    }
    Ok(toks)
}

/// The `}}` closing an action, skipping over quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn lex_action(s: &str) -> Result<Vec<Word>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word_end = |i: usize| {
        let mut j = i;
        while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Word::Open);
                i += 1;
            }
            ')' => {
                out.push(Word::Close);
                i += 1;
            }
            '|' => {
                out.push(Word::Bar);
                i += 1;
            }
            '.' => {
                let j = word_end(i + 1);
                if chars.get(j) == Some(&'.') {
                    return Err("nested fields are not supported".into());
                }
                out.push(Word::Field(chars[i + 1..j].iter().collect()));
                i = j;
            }
            '"' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '"' {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
                if j >= chars.len() {
                    return Err("unterminated quoted string".into());
                }
                let lit: String = chars[i..=j].iter().collect();
                let v: String =
                    serde_json::from_str(&lit).map_err(|_| format!("bad string {lit}"))?;
                out.push(Word::Lit(Val::Str(v)));
                i = j + 1;
            }
            '`' => {
                let j = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or("unterminated raw quoted string")?
                    + i
                    + 1;
                out.push(Word::Lit(Val::Str(chars[i + 1..j].iter().collect())));
                i = j + 1;
            }
            '$' => return Err("variables are not supported".into()),
            c if c.is_ascii_digit() || ((c == '-' || c == '+') && i + 1 < chars.len()) => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '.') {
                    j += 1;
                }
                let n: String = chars[i..j].iter().collect();
                let v = if let Ok(v) = n.parse::<i64>() {
                    Val::Int(v)
                } else {
                    Val::Float(n.parse().map_err(|_| format!("bad number syntax: {n:?}"))?)
                };
                out.push(Word::Lit(v));
                i = j;
            }
            c if c.is_alphabetic() || c == '_' => {
                let j = word_end(i);
                let w: String = chars[i..j].iter().collect();
                out.push(match w.as_str() {
                    "true" => Word::Lit(Val::Bool(true)),
                    "false" => Word::Lit(Val::Bool(false)),
                    _ => Word::Ident(w),
                });
                i = j;
            }
            c => return Err(format!("unexpected {c:?} in command")),
        }
    }
    Ok(out)
}

/// Nodes up to `{{end}}`/`{{else …}}` (returned as the keyword line) or the end.
fn parse_list(toks: &[Tok], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut out = Vec::new();
    while let Some(t) = toks.get(*pos) {
        *pos += 1;
        match t {
            Tok::Text(s) if s.is_empty() => {}
            Tok::Text(s) => out.push(Node::Text(s.clone())),
            Tok::Action(words) => match words.first() {
                Some(Word::Ident(kw)) if kw == "end" || kw == "else" => {
                    let rest = words[1..].to_vec();
                    return Ok((out, Some(describe(kw, &rest))));
                }
                Some(Word::Ident(kw)) if kw == "if" => out.push(parse_if(&words[1..], toks, pos)?),
                Some(Word::Ident(kw))
                    if ["range", "with", "define", "template", "block"].contains(&kw.as_str()) =>
                {
                    return Err(format!("{{{{{kw}}}}} is not supported"))
                }
                _ => out.push(Node::Action(parse_pipe(words)?)),
            },
        }
    }
    Ok((out, None))
}

/// An end keyword and what follows it, re-joined so `else if` can be told apart.
fn describe(kw: &str, rest: &[Word]) -> String {
    match rest.first() {
        Some(Word::Ident(w)) if w == "if" => format!("{kw} if"),
        _ => kw.to_owned(),
    }
}

fn parse_if(cond: &[Word], toks: &[Tok], pos: &mut usize) -> Result<Node, String> {
    let mut arms = vec![(parse_pipe(cond)?, Vec::new())];
    loop {
        let (body, end) = parse_list(toks, pos)?;
        if let Some(arm) = arms.last_mut() {
            arm.1 = body;
        }
        match end.as_deref() {
            Some("end") => return Ok(Node::If(arms, Vec::new())),
            Some("else if") => {
                let Some(Tok::Action(words)) = toks.get(*pos - 1) else {
                    return Err("malformed else if".into());
                };
                arms.push((parse_pipe(&words[2..])?, Vec::new()));
            }
            Some("else") => {
                let (els, end) = parse_list(toks, pos)?;
                return match end.as_deref() {
                    Some("end") => Ok(Node::If(arms, els)),
                    _ => Err("expected {{end}} after {{else}}".into()),
                };
            }
            _ => return Err("unexpected EOF: {{if}} without {{end}}".into()),
        }
    }
}

fn parse_pipe(words: &[Word]) -> Result<Pipe, String> {
    let mut pipe = Vec::new();
    let mut cmd = Vec::new();
    let mut i = 0;
    while i < words.len() {
        match &words[i] {
            Word::Bar => {
                if cmd.is_empty() {
                    return Err("missing command before |".into());
                }
                pipe.push(std::mem::take(&mut cmd));
            }
            Word::Open => {
                let mut depth = 1;
                let mut j = i + 1;
                while j < words.len() && depth > 0 {
                    match words[j] {
                        Word::Open => depth += 1,
                        Word::Close => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                }
                if depth > 0 {
                    return Err("unclosed left paren".into());
                }
                cmd.push(Arg::Sub(parse_pipe(&words[i + 1..j - 1])?));
                i = j;
                continue;
            }
            Word::Close => return Err("unexpected right paren".into()),
            Word::Field(f) => cmd.push(Arg::Field(f.clone())),
            Word::Lit(v) => cmd.push(Arg::Lit(v.clone())),
            Word::Ident(name) => {
                if !FUNCS.contains(&name.as_str()) {
                    return Err(format!("function {name:?} not defined"));
                }
                cmd.push(Arg::Func(name.clone()));
            }
        }
        i += 1;
    }
    if cmd.is_empty() {
        return Err("missing value for command".into());
    }
    pipe.push(cmd);
    Ok(pipe)
}

fn nodes(list: &[Node], e: &Entry, out: &mut String) -> Result<(), String> {
    for n in list {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => out.push_str(&print(&pipe(p, e)?)),
            Node::If(arms, els) => {
                let mut done = false;
                for (cond, body) in arms {
                    if truth(&pipe(cond, e)?) {
                        nodes(body, e, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    nodes(els, e, out)?;
                }
            }
        }
    }
    Ok(())
}

fn pipe(p: &Pipe, e: &Entry) -> Result<Val, String> {
    let mut piped = None;
    for cmd in p {
        piped = Some(command(cmd, e, piped)?);
    }
    piped.ok_or_else(|| "empty pipeline".into())
}

fn command(cmd: &[Arg], e: &Entry, piped: Option<Val>) -> Result<Val, String> {
    let Some(Arg::Func(name)) = cmd.first() else {
        if cmd.len() > 1 || piped.is_some() {
            return Err("can't give argument to non-function".into());
        }
        return operand(&cmd[0], e);
    };
    let mut args = cmd[1..]
        .iter()
        .map(|a| operand(a, e))
        .collect::<Result<Vec<_>, _>>()?;
    args.extend(piped);
    call(name, args, e)
}

fn operand(a: &Arg, e: &Entry) -> Result<Val, String> {
    Ok(match a {
        Arg::Lit(v) => v.clone(),
        Arg::Field(f) if f.is_empty() => Val::Str(go_map(e.labels)),
        Arg::Field(f) => Val::Str(e.labels.get(f).cloned().unwrap_or_default()),
        Arg::Func(name) => call(name, Vec::new(), e)?,
        Arg::Sub(p) => pipe(p, e)?,
    })
}

/// How Go prints a map[string]string: `map[a:1 b:2]`, keys sorted.
fn go_map(m: &LabelMap) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("map[{}]", items.join(" "))
}

fn print(v: &Val) -> String {
    match v {
        Val::Str(s) => s.clone(),
        Val::Int(i) => i.to_string(),
        Val::Float(f) => crate::gofmt::shortest(*f),
        Val::Bool(b) => b.to_string(),
        Val::Time(ns) => go_time_string(*ns),
    }
}

fn truth(v: &Val) -> bool {
    match v {
        Val::Str(s) => !s.is_empty(),
        Val::Int(i) => *i != 0,
        Val::Float(f) => *f != 0.0,
        Val::Bool(b) => *b,
        Val::Time(_) => true,
    }
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Str(_) => "string",
        Val::Int(_) => "int",
        Val::Float(_) => "float64",
        Val::Bool(_) => "bool",
        Val::Time(_) => "time.Time",
    }
}

/// A Go `int` parameter: integers, and floats without a fraction (untyped constants).
fn int_arg(v: &Val) -> Result<i64, String> {
    match v {
        Val::Int(i) => Ok(*i),
        Val::Float(f) if f.fract() == 0.0 => Ok(*f as i64),
        other => Err(format!(
            "wrong type for value; expected int; got {}",
            type_name(other)
        )),
    }
}

fn str_arg(v: &Val) -> Result<&str, String> {
    match v {
        Val::Str(s) => Ok(s),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            type_name(other)
        )),
    }
}

/// sprig's cast.ToInt64 / ToFloat64: strings are parsed, unparseable ones are 0.
fn to_f64(v: &Val) -> f64 {
    match v {
        Val::Str(s) => s.trim().parse().unwrap_or(0.0),
        Val::Int(i) => *i as f64,
        Val::Float(f) => *f,
        Val::Bool(b) => f64::from(u8::from(*b)),
        Val::Time(ns) => *ns as f64,
    }
}

fn to_i64(v: &Val) -> i64 {
    match v {
        Val::Str(s) => s
            .trim()
            .parse::<i64>()
            .or_else(|_| s.trim().parse::<f64>().map(|f| f as i64))
            .unwrap_or(0),
        other => to_f64(other) as i64,
    }
}

fn time_arg(v: &Val) -> Result<i64, String> {
    match v {
        Val::Time(ns) => Ok(*ns),
        // sprig's date also takes Unix seconds.
        Val::Int(s) => Ok(s.saturating_mul(1_000_000_000)),
        other => Err(format!(
            "wrong type for value; expected time.Time; got {}",
            type_name(other)
        )),
    }
}

fn arity(name: &str, args: &[Val], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ))
    }
}

fn call(name: &str, args: Vec<Val>, e: &Entry) -> Result<Val, String> {
    let fixed = match name {
        "__line__" | "__timestamp__" | "now" => 0,
        "ToLower" | "ToUpper" | "lower" | "upper" | "title" | "Title" | "trim" | "TrimSpace"
        | "unixEpoch" | "unixEpochMillis" | "unixEpochNanos" | "unixToTime" | "duration"
        | "duration_seconds" | "bytes" | "ceil" | "floor" | "int" | "float64" | "len" | "not" => 1,
        "trunc" | "trimAll" | "trimPrefix" | "trimSuffix" | "Trim" | "TrimLeft" | "TrimRight"
        | "TrimPrefix" | "TrimSuffix" | "contains" | "hasPrefix" | "hasSuffix" | "count"
        | "repeat" | "indent" | "nindent" | "default" | "alignLeft" | "alignRight" | "toDate"
        | "date" | "add" | "sub" | "mul" | "div" | "mod" | "addf" | "subf" | "mulf" | "divf"
        | "max" | "min" | "maxf" | "minf" | "round" | "eq" | "ne" | "lt" | "le" | "gt" | "ge"
        | "and" | "or" => 2,
        "substr" | "replace" | "regexReplaceAll" | "regexReplaceAllLiteral" => 3,
        "Replace" => 4,
        _ => usize::MAX,
    };
    if fixed != usize::MAX {
        arity(name, &args, fixed)?;
    }
    let s = |i: usize| str_arg(&args[i]);
    Ok(match name {
        "__line__" => Val::Str(e.line.to_owned()),
        "__timestamp__" => Val::Time(e.ts_ns),
        "now" => Val::Time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
        ),
        "ToLower" | "lower" => Val::Str(s(0)?.to_lowercase()),
        "ToUpper" | "upper" => Val::Str(s(0)?.to_uppercase()),
        "title" | "Title" => Val::Str(title(s(0)?)),
        "trim" | "TrimSpace" => Val::Str(s(0)?.trim().to_owned()),
        "trimAll" => Val::Str(
            s(1)?
                .trim_matches(|c| s(0).is_ok_and(|set| set.contains(c)))
                .to_owned(),
        ),
        "Trim" => Val::Str(
            s(0)?
                .trim_matches(|c| s(1).is_ok_and(|set| set.contains(c)))
                .to_owned(),
        ),
        "TrimLeft" => Val::Str(
            s(0)?
                .trim_start_matches(|c| s(1).is_ok_and(|set| set.contains(c)))
                .to_owned(),
        ),
        "TrimRight" => Val::Str(
            s(0)?
                .trim_end_matches(|c| s(1).is_ok_and(|set| set.contains(c)))
                .to_owned(),
        ),
        "trimPrefix" => Val::Str(s(1)?.strip_prefix(s(0)?).unwrap_or(s(1)?).to_owned()),
        "trimSuffix" => Val::Str(s(1)?.strip_suffix(s(0)?).unwrap_or(s(1)?).to_owned()),
        "TrimPrefix" => Val::Str(s(0)?.strip_prefix(s(1)?).unwrap_or(s(0)?).to_owned()),
        "TrimSuffix" => Val::Str(s(0)?.strip_suffix(s(1)?).unwrap_or(s(0)?).to_owned()),
        "contains" => Val::Bool(s(1)?.contains(s(0)?)),
        "hasPrefix" => Val::Bool(s(1)?.starts_with(s(0)?)),
        "hasSuffix" => Val::Bool(s(1)?.ends_with(s(0)?)),
        "replace" => Val::Str(s(2)?.replace(s(0)?, s(1)?)),
        "Replace" => {
            let n = int_arg(&args[3])?;
            let (src, from, to) = (s(0)?, s(1)?, s(2)?);
            Val::Str(if n < 0 {
                src.replace(from, to)
            } else {
                src.replacen(from, to, n as usize)
            })
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            let re = Regex::new(s(0)?).map_err(|e| format!("error parsing regexp: {e}"))?;
            let out = if name == "regexReplaceAll" {
                re.replace_all(s(1)?, s(2)?)
            } else {
                re.replace_all(s(1)?, regex::NoExpand(s(2)?))
            };
            Val::Str(out.into_owned())
        }
        "count" => {
            let re = Regex::new(s(0)?).map_err(|e| format!("error parsing regexp: {e}"))?;
            Val::Int(re.find_iter(s(1)?).count() as i64)
        }
        "trunc" => {
            let (n, src) = (int_arg(&args[0])?, s(1)?);
            let chars: Vec<char> = src.chars().collect();
            let len = chars.len() as i64;
            Val::Str(if n < 0 && len + n > 0 {
                chars[(len + n) as usize..].iter().collect()
            } else if n >= 0 && len > n {
                chars[..n as usize].iter().collect()
            } else {
                src.to_owned()
            })
        }
        "substr" => {
            let (start, end, src) = (int_arg(&args[0])?, int_arg(&args[1])?, s(2)?);
            let b = src.as_bytes();
            let len = b.len() as i64;
            let piece = if start < 0 {
                &b[..end.clamp(0, len) as usize]
            } else if end < 0 || end > len {
                &b[start.min(len) as usize..]
            } else {
                &b[start.min(end) as usize..end as usize]
            };
            Val::Str(String::from_utf8_lossy(piece).into_owned())
        }
        "repeat" => Val::Str(s(1)?.repeat(int_arg(&args[0])?.max(0) as usize)),
        "indent" | "nindent" => {
            let pad = " ".repeat(int_arg(&args[0])?.max(0) as usize);
            let body = format!("{pad}{}", s(1)?.replace('\n', &format!("\n{pad}")));
            Val::Str(if name == "nindent" {
                format!("\n{body}")
            } else {
                body
            })
        }
        "default" => {
            if truth(&args[1]) {
                args[1].clone()
            } else {
                args[0].clone()
            }
        }
        "alignLeft" | "alignRight" => {
            let (n, src) = (int_arg(&args[0])?, s(1)?);
            let chars: Vec<char> = src.chars().collect();
            let l = chars.len() as i64;
            Val::Str(if n < 0 || n == l {
                src.to_owned()
            } else if n > l {
                let pad = " ".repeat((n - l) as usize);
                if name == "alignLeft" {
                    format!("{src}{pad}")
                } else {
                    format!("{pad}{src}")
                }
            } else if name == "alignLeft" {
                chars[..n as usize].iter().collect()
            } else {
                chars[(l - n) as usize..].iter().collect()
            })
        }
        "printf" => {
            let Some((fmt, rest)) = args.split_first() else {
                return Err("wrong number of args for printf: want at least 1 got 0".into());
            };
            Val::Str(sprintf(str_arg(fmt)?, rest))
        }
        "unixEpoch" => Val::Int(time_arg(&args[0])?.div_euclid(1_000_000_000)),
        "unixEpochMillis" => Val::Int(time_arg(&args[0])?.div_euclid(1_000_000)),
        "unixEpochNanos" => Val::Int(time_arg(&args[0])?),
        "unixToTime" => {
            let digits = s(0)?;
            let n: i64 = digits
                .parse()
                .map_err(|_| format!("unable to parse {digits:?} as a unix epoch"))?;
            Val::Time(match digits.trim_start_matches('-').len() {
                0..=10 => n.saturating_mul(1_000_000_000),
                11..=13 => n.saturating_mul(1_000_000),
                14..=16 => n.saturating_mul(1_000),
                _ => n,
            })
        }
        "date" => Val::Str(go_format(s(0)?, time_arg(&args[1])?)),
        "toDate" => Val::Time(go_parse(s(0)?, s(1)?).unwrap_or(0)),
        "duration" | "duration_seconds" => {
            let d = s(0)?;
            Val::Float(
                parse_go_duration(d).ok_or_else(|| format!("time: invalid duration {d:?}"))? as f64
                    / 1e9,
            )
        }
        "bytes" => {
            let b = s(0)?;
            Val::Float(parse_bytes(b).ok_or_else(|| format!("invalid byte size {b:?}"))?)
        }
        "add" => Val::Int(to_i64(&args[0]).wrapping_add(to_i64(&args[1]))),
        "sub" => Val::Int(to_i64(&args[0]).wrapping_sub(to_i64(&args[1]))),
        "mul" => Val::Int(to_i64(&args[0]).wrapping_mul(to_i64(&args[1]))),
        "div" | "mod" => {
            let (a, b) = (to_i64(&args[0]), to_i64(&args[1]));
            if b == 0 {
                return Err("integer divide by zero".into());
            }
            Val::Int(if name == "div" {
                a.wrapping_div(b)
            } else {
                a.wrapping_rem(b)
            })
        }
        "max" => Val::Int(to_i64(&args[0]).max(to_i64(&args[1]))),
        "min" => Val::Int(to_i64(&args[0]).min(to_i64(&args[1]))),
        "addf" => Val::Float(to_f64(&args[0]) + to_f64(&args[1])),
        "subf" => Val::Float(to_f64(&args[0]) - to_f64(&args[1])),
        "mulf" => Val::Float(to_f64(&args[0]) * to_f64(&args[1])),
        "divf" => Val::Float(to_f64(&args[0]) / to_f64(&args[1])),
        "maxf" => Val::Float(to_f64(&args[0]).max(to_f64(&args[1]))),
        "minf" => Val::Float(to_f64(&args[0]).min(to_f64(&args[1]))),
        "ceil" => Val::Float(to_f64(&args[0]).ceil()),
        "floor" => Val::Float(to_f64(&args[0]).floor()),
        "round" => {
            let p = 10f64.powi(to_i64(&args[1]).clamp(0, 15) as i32);
            Val::Float((to_f64(&args[0]) * p).round() / p)
        }
        "int" => Val::Int(to_i64(&args[0])),
        "float64" => Val::Float(to_f64(&args[0])),
        "len" => Val::Int(s(0)?.len() as i64),
        "not" => Val::Bool(!truth(&args[0])),
        "and" => {
            if truth(&args[0]) {
                args[1].clone()
            } else {
                args[0].clone()
            }
        }
        "or" => {
            if truth(&args[0]) {
                args[0].clone()
            } else {
                args[1].clone()
            }
        }
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            let ord = compare(&args[0], &args[1])?;
            Val::Bool(match name {
                "eq" => ord.is_eq(),
                "ne" => ord.is_ne(),
                "lt" => ord.is_lt(),
                "le" => ord.is_le(),
                "gt" => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

fn compare(a: &Val, b: &Val) -> Result<std::cmp::Ordering, String> {
    let incompatible = || "incompatible types for comparison".to_owned();
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        (Val::Time(x), Val::Time(y)) => Ok(x.cmp(y)),
        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
            to_f64(a).partial_cmp(&to_f64(b)).ok_or_else(incompatible)
        }
        _ => Err(incompatible()),
    }
}

/// Go's strings.Title: the first letter of each word upper-cased.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

/// Go's fmt.Sprintf for the verbs templates use: %s %q %v %d %f %e %g %x %t %%, with flags,
/// width and precision.
fn sprintf(fmt: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = chars.peek() {
            if "-+ 0#".contains(f) {
                flags.push(f);
                chars.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut prec = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            prec = Some(p.parse::<usize>().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let body = match (verb, arg) {
            ('s' | 'v', v) => {
                let s = print(v);
                match prec {
                    Some(p) if verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            ('q', Val::Str(s)) => serde_json::Value::String(s.clone()).to_string(),
            ('t', Val::Bool(b)) => b.to_string(),
            ('d', Val::Int(i)) => {
                if flags.contains('+') && *i >= 0 {
                    format!("+{i}")
                } else {
                    i.to_string()
                }
            }
            ('x', Val::Int(i)) => format!("{i:x}"),
            ('X', Val::Int(i)) => format!("{i:X}"),
            ('x', Val::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('f' | 'F', Val::Float(_) | Val::Int(_)) => {
                format!("{:.*}", prec.unwrap_or(6), to_f64(arg))
            }
            ('e', Val::Float(_) | Val::Int(_)) => {
                let s = format!("{:.*e}", prec.unwrap_or(6), to_f64(arg));
                // Go: at least two exponent digits, always signed.
                match s.split_once('e') {
                    Some((m, e)) => {
                        let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                        format!("{m}e{sign}{digits:0>2}")
                    }
                    None => s,
                }
            }
            ('g', Val::Float(f)) => crate::gofmt::shortest(*f),
            (verb, v) => format!("%!{verb}({}={})", type_name(v), print(v)),
        };
        let width: usize = width.parse().unwrap_or(0);
        let len = body.chars().count();
        if len >= width {
            out.push_str(&body);
        } else if flags.contains('-') {
            out.push_str(&body);
            out.push_str(&" ".repeat(width - len));
        } else if flags.contains('0') && !matches!(arg, Val::Str(_)) {
            let (sign, digits) = body
                .strip_prefix('-')
                .map_or(("", body.as_str()), |d| ("-", d));
            let _ = write!(out, "{sign}{}{digits}", "0".repeat(width - len));
        } else {
            out.push_str(&" ".repeat(width - len));
            out.push_str(&body);
        }
    }
    let extra: Vec<String> = args
        .map(|a| format!("{}={}", type_name(a), print(a)))
        .collect();
    if !extra.is_empty() {
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

fn utc(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(ns)
}

/// How Go prints a time.Time: `2006-01-02 15:04:05.999999999 -0700 MST` (here always UTC).
fn go_time_string(ns: i64) -> String {
    go_format("2006-01-02 15:04:05.999999999 -0700 MST", ns)
}

/// The elements of Go's reference time, longest first where one is a prefix of another.
const LAYOUT: &[&str] = &[
    "January", "Jan", "Monday", "Mon", "MST", "2006", "Z07:00", "Z0700", "Z07", "-07:00", "-0700",
    "-07", "01", "02", "_2", "03", "04", "05", "06", "15", "PM", "pm", "1", "2", "3", "4", "5",
];

/// Go's Time.Format with `layout`, in UTC.
fn go_format(layout: &str, ns: i64) -> String {
    let t = utc(ns);
    let mut out = String::new();
    let mut rest = layout;
    while !rest.is_empty() {
        // Fractional seconds: `.000` (fixed) or `.999` (trailing zeros trimmed), also `,`.
        if let Some(frac) = fraction(rest) {
            let digits = &rest[1..frac];
            let all = format!("{:09}", t.nanosecond() % 1_000_000_000);
            let mut d = all[..digits.len().min(9)].to_owned();
            if digits.starts_with('9') {
                d = d.trim_end_matches('0').to_owned();
                if !d.is_empty() {
                    out.push_str(&rest[..1]);
                    out.push_str(&d);
                }
            } else {
                out.push_str(&rest[..1]);
                out.push_str(&d);
            }
            rest = &rest[frac..];
            continue;
        }
        let Some(el) = LAYOUT.iter().find(|el| rest.starts_with(**el)) else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        let h12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        let _ = match *el {
            "January" => write!(out, "{}", t.format("%B")),
            "Jan" => write!(out, "{}", t.format("%b")),
            "Monday" => write!(out, "{}", t.format("%A")),
            "Mon" => write!(out, "{}", t.format("%a")),
            "MST" => write!(out, "UTC"),
            "2006" => write!(out, "{:04}", t.year()),
            "Z07:00" | "Z0700" | "Z07" => write!(out, "Z"),
            "-07:00" => write!(out, "+00:00"),
            "-0700" => write!(out, "+0000"),
            "-07" => write!(out, "+00"),
            "01" => write!(out, "{:02}", t.month()),
            "02" => write!(out, "{:02}", t.day()),
            "_2" => write!(out, "{:>2}", t.day()),
            "03" => write!(out, "{h12:02}"),
            "04" => write!(out, "{:02}", t.minute()),
            "05" => write!(out, "{:02}", t.second()),
            "06" => write!(out, "{:02}", t.year() % 100),
            "15" => write!(out, "{:02}", t.hour()),
            "PM" => write!(out, "{}", if t.hour() >= 12 { "PM" } else { "AM" }),
            "pm" => write!(out, "{}", if t.hour() >= 12 { "pm" } else { "am" }),
            "1" => write!(out, "{}", t.month()),
            "2" => write!(out, "{}", t.day()),
            "3" => write!(out, "{h12}"),
            "4" => write!(out, "{}", t.minute()),
            _ => write!(out, "{}", t.second()),
        };
        rest = &rest[el.len()..];
    }
    out
}

/// The end of a `.000`/`.999` (or `,`) fraction element at the start of `s`, if one is there.
fn fraction(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if !matches!(b.first(), Some(b'.' | b',')) {
        return None;
    }
    let d = *b.get(1)?;
    if d != b'0' && d != b'9' {
        return None;
    }
    let n = b[1..].iter().take_while(|&&c| c == d).count();
    // Go takes the run only when no other digit follows it.
    (!b.get(1 + n).is_some_and(u8::is_ascii_digit)).then_some(1 + n)
}

/// Go's time.Parse for the common layouts (translated to a chrono format), in UTC.
fn go_parse(layout: &str, value: &str) -> Option<i64> {
    let mut f = String::new();
    let mut rest = layout;
    while !rest.is_empty() {
        if let Some(end) = fraction(rest) {
            f.push_str("%.f");
            rest = &rest[end..];
            continue;
        }
        let Some(el) = LAYOUT.iter().find(|el| rest.starts_with(**el)) else {
            let c = rest.chars().next()?;
            if c == '%' {
                f.push_str("%%");
            } else {
                f.push(c);
            }
            rest = &rest[c.len_utf8()..];
            continue;
        };
        f.push_str(match *el {
            "January" => "%B",
            "Jan" => "%b",
            "Monday" => "%A",
            "Mon" => "%a",
            "MST" => "%Z",
            "2006" => "%Y",
            "Z07:00" | "-07:00" => "%:z",
            "Z0700" | "-0700" => "%z",
            "01" => "%m",
            "02" => "%d",
            "_2" => "%e",
            "03" => "%I",
            "04" => "%M",
            "05" => "%S",
            "06" => "%y",
            "15" => "%H",
            "PM" | "pm" => "%p",
            "1" => "%-m",
            "2" => "%-d",
            "3" => "%-I",
            "4" => "%-M",
            "5" => "%-S",
            _ => return None,
        });
        rest = &rest[el.len()..];
    }
    let value = value.replace('Z', "+00:00");
    let f = f.replace("Z", "");
    if let Ok(t) = DateTime::parse_from_str(&value, &f) {
        return t.timestamp_nanos_opt();
    }
    NaiveDateTime::parse_from_str(&value, &f)
        .ok()
        .and_then(|t| Utc.from_utc_datetime(&t).timestamp_nanos_opt())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(&value, &f)
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .and_then(|t| Utc.from_utc_datetime(&t).timestamp_nanos_opt())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: i64 = 1_700_000_000_123_000_000; // 2023-11-14T22:13:20.123Z

    fn run(t: &str) -> Result<String, String> {
        let labels: LabelMap = [
            ("app", "Checkout"),
            ("status", "503"),
            ("path", "/api/v1/users/42"),
            ("dur", "1m30s"),
            ("size", "2KB"),
            ("pad", "  spaced  "),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Template::parse(t)?.render(&Entry {
            labels: &labels,
            line: "GET /api 200",
            ts_ns: TS,
        })
    }

    fn ok(t: &str) -> String {
        run(t).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    #[test]
    fn fields_line_and_timestamp() {
        assert_eq!(
            ok("{{.app}} {{ .status }} [{{.missing}}]"),
            "Checkout 503 []"
        );
        assert_eq!(ok("{{ __line__ }}"), "GET /api 200");
        assert_eq!(
            ok("{{ __timestamp__ }}"),
            "2023-11-14 22:13:20.123 +0000 UTC"
        );
        assert_eq!(ok("{{ __timestamp__ | unixEpoch }}"), "1700000000");
        assert_eq!(ok("{{ __timestamp__ | unixEpochMillis }}"), "1700000000123");
        assert_eq!(
            ok("{{ __timestamp__ | unixEpochNanos }}"),
            "1700000000123000000"
        );
        assert_eq!(
            ok(r#"{{ __timestamp__ | date "2006-01-02T15:04:05.000Z07:00" }}"#),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            ok(r#"{{ date "Mon Jan _2 03:04:05 PM 06" __timestamp__ }}"#),
            "Tue Nov 14 10:13:20 PM 23"
        );
        assert_eq!(
            ok(r#"{{ toDate "2006-01-02" "2024-02-29" | unixEpoch }}"#),
            "1709164800"
        );
        assert_eq!(
            ok(r#"{{ unixToTime "1700000000123" | unixEpochNanos }}"#),
            "1700000000123000000"
        );
    }

    #[test]
    fn string_functions_in_sprig_and_go_argument_order() {
        assert_eq!(
            ok("{{ .app | ToUpper }} {{ .app | lower }} {{ upper .app }}"),
            "CHECKOUT checkout CHECKOUT"
        );
        assert_eq!(
            ok(r#"{{ "hello wide world" | title }}"#),
            "Hello Wide World"
        );
        assert_eq!(
            ok("[{{ .pad | trim }}] [{{ TrimSpace .pad }}]"),
            "[spaced] [spaced]"
        );
        assert_eq!(
            ok(r#"{{ .path | trimPrefix "/api" | trimSuffix "/42" }}"#),
            "/v1/users"
        );
        assert_eq!(ok(r#"{{ TrimPrefix .path "/api" }}"#), "/v1/users/42");
        assert_eq!(ok(r#"{{ trimAll "/" .path }}"#), "api/v1/users/42");
        assert_eq!(ok(r#"{{ .path | replace "/" "." }}"#), ".api.v1.users.42");
        assert_eq!(
            ok(r#"{{ regexReplaceAll "users/(\\d+)" .path "user=${1}" }}"#),
            "/api/v1/user=42"
        );
        assert_eq!(
            ok(r#"{{ regexReplaceAllLiteral "\\d+" .path "$1" }}"#),
            "/api/v$1/users/$1"
        );
        assert_eq!(
            ok(r#"{{ .path | substr 1 4 }}|{{ substr 5 100 .path }}"#),
            "api|v1/users/42"
        );
        assert_eq!(ok(r#"{{ trunc 3 .app }} {{ trunc -3 .app }}"#), "Che out");
        assert_eq!(
            ok(
                r#"[{{ alignLeft 5 .status }}][{{ alignRight 5 .status }}][{{ alignLeft 2 .app }}][{{ alignRight 3 .app }}]"#
            ),
            "[503  ][  503][Ch][out]"
        );
        assert_eq!(
            ok(r#"{{ default "none" .missing }} {{ .app | default "none" }}"#),
            "none Checkout"
        );
        assert_eq!(ok(r#"{{ __line__ | count "[A-Z]" }}"#), "3");
        assert_eq!(ok(r#"{{ repeat 3 "ab" }}"#), "ababab");
    }

    #[test]
    fn printf_conditionals_and_comparisons() {
        assert_eq!(
            ok(r#"{{ printf "%s=%d %5.2f|%-4s|%04d %q %v" .app 7 3.14159 "x" 42 "q" true }}"#),
            r#"Checkout=7  3.14|x   |0042 "q" true"#
        );
        assert_eq!(ok(r#"{{ printf "%d %s" 1 }}"#), "1 %!s(MISSING)");
        assert_eq!(ok(r#"{{ printf "%d" "x" }}"#), "%!d(string=x)");
        let t = r#"{{ if eq .status "503" }}down{{ else if contains "Check" .app }}checking{{ else }}up{{ end }}"#;
        assert_eq!(ok(t), "down");
        assert_eq!(
            ok(
                r#"{{if hasPrefix "/api" .path}}api{{end}}{{ if hasSuffix "x" .path }}x{{ else }}-{{ end }}"#
            ),
            "api-"
        );
        assert_eq!(
            ok(r#"{{ if and (ne .app "") (not (eq .status "200")) }}bad{{ end }}"#),
            "bad"
        );
        assert_eq!(ok(r#"{{ if gt (.status | int) 499 }}5xx{{ end }}"#), "5xx");
        assert_eq!(ok("a {{- \" b \" -}} c"), "a b c");
        assert_eq!(ok("{{/* comment */}}x"), "x");
    }

    #[test]
    fn number_duration_and_byte_helpers() {
        assert_eq!(ok("{{ .dur | duration }}"), "90");
        assert_eq!(ok("{{ .size | bytes }}"), "2000");
        assert_eq!(
            ok("{{ add .status 1 }} {{ sub 10 3 }} {{ mul 6 7 }} {{ div 7 2 }} {{ mod 7 2 }}"),
            "504 7 42 3 1"
        );
        assert_eq!(
            ok("{{ divf 1 4 }} {{ mulf 1.5 2 }} {{ round 2.345 2 }} {{ ceil 1.2 }}"),
            "0.25 3 2.35 2"
        );
        assert_eq!(ok("{{ max 3 9 }} {{ minf 1.5 0.5 }}"), "9 0.5");
    }

    #[test]
    fn errors_at_parse_and_at_render() {
        for (t, want) in [
            ("{{ .a", "unclosed action"),
            ("{{ nosuch .a }}", "function \"nosuch\" not defined"),
            ("{{ if .a }}x", "{{if}} without {{end}}"),
            ("{{ end }}", "unexpected {{end}}"),
            ("{{ $x := 1 }}", "variables are not supported"),
            ("{{ range .a }}{{ end }}", "{{range}} is not supported"),
        ] {
            let err = Template::parse(t).unwrap_err();
            assert!(err.contains(want), "{t}: {err}");
        }
        for (t, want) in [
            ("{{ substr \"a\" 2 .app }}", "expected int; got string"),
            ("{{ ToUpper 1 }}", "expected string; got int"),
            ("{{ div 1 0 }}", "integer divide by zero"),
            ("{{ .dur | bytes }}", "invalid byte size"),
            (
                "{{ regexReplaceAll \"(\" .app \"\" }}",
                "error parsing regexp",
            ),
            (
                "{{ lower }}",
                "wrong number of args for lower: want 1 got 0",
            ),
        ] {
            let err = run(t).unwrap_err();
            assert!(err.contains(want), "{t}: {err}");
        }
    }
}
