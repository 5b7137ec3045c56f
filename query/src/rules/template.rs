//! The templates of alert labels and annotations: the part of Go's text/template that
//! Prometheus rules use, with Prometheus's functions (`humanize`, `query`, `printf`, …) and its
//! data (`$labels`, `$value`, `$externalLabels`, `.Labels`, …). Owns parsing and expansion;
//! queries are run through a callback so this module knows nothing of the engine.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::printf;

/// One sample of a `query` result as templates see it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QuerySample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What a template can read: Prometheus's `AlertTemplateData`.
pub(crate) struct Data<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
    pub value: f64,
}

/// Runs a PromQL query at the evaluation time for the `query` function.
pub(crate) type QueryFn<'a> = &'a dyn Fn(&str) -> Result<Vec<QuerySample>, String>;

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Map(BTreeMap<String, String>),
    Sample(QuerySample),
    Samples(Vec<QuerySample>),
    /// The template's root (`.`): Prometheus's data struct.
    Root,
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Clone, Debug)]
struct Pipeline {
    /// `$x :=` (one name) or `$k, $v :=` (range only).
    decl: Vec<String>,
    cmds: Vec<Vec<Operand>>,
}

#[derive(Clone, Debug)]
enum Operand {
    Lit(Val),
    /// `.` followed by fields (`.Labels.instance`); empty fields is `.` itself.
    Dot(Vec<String>),
    /// `$name` followed by fields.
    Var(String, Vec<String>),
    Func(String),
    Sub(Box<Pipeline>),
}

/// A parsed template, ready to expand many times.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parses `text`; `name` appears in errors as Go's template name does.
    pub(crate) fn parse(name: &str, text: &str) -> Result<Template, String> {
        // Go names the line of the error; templates of labels and annotations are one line
        // as a rule, so the first is named.
        let err = |e: String| format!("template: {name}:1: {e}");
        let tokens = lex(text).map_err(err)?;
        let mut pos = 0;
        let (nodes, end) = parse_list(&tokens, &mut pos).map_err(err)?;
        match end {
            None => Ok(Template { nodes }),
            Some(kw) => Err(err(format!("unexpected {{{{{kw}}}}}"))),
        }
    }

    pub(crate) fn expand(&self, data: &Data, query: QueryFn) -> Result<String, String> {
        let mut ex = Expander {
            data,
            query,
            vars: vec![
                ("$".to_owned(), Val::Root),
                ("$labels".to_owned(), Val::Map(data.labels.clone())),
                (
                    "$externalLabels".to_owned(),
                    Val::Map(data.external_labels.clone()),
                ),
                (
                    "$externalURL".to_owned(),
                    Val::Str(data.external_url.to_owned()),
                ),
                ("$value".to_owned(), Val::Float(data.value)),
            ],
            out: String::new(),
        };
        ex.nodes(&self.nodes, &Val::Root)?;
        Ok(ex.out)
    }
}

/// Expands `text` as Prometheus expands a label or annotation: errors become the text
/// `<error expanding template: …>`.
pub(crate) fn expand(name: &str, text: &str, data: &Data, query: QueryFn) -> String {
    if !text.contains("{{") {
        return text.to_owned();
    }
    match Template::parse(name, text).and_then(|t| t.expand(data, query)) {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Text(String),
    /// The words of one `{{ … }}`, already split into lexemes.
    Action(Vec<Lex>),
}

#[derive(Clone, Debug, PartialEq)]
enum Lex {
    Ident(String),
    /// `.name` starting an operand.
    Field(String),
    /// `.name` right after a variable or field, without space: `$labels.job`, `.Labels.job`.
    Chain(String),
    Dot,
    Var(String),
    Str(String),
    Num(String),
    Pipe,
    LParen,
    RParen,
    Declare,
    Comma,
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut rest = text;
    let mut trim_next_text = false;
    while !rest.is_empty() {
        let open = rest.find("{{");
        let (txt, after) = match open {
            Some(p) => (&rest[..p], Some(&rest[p + 2..])),
            None => (rest, None),
        };
        let mut txt = if trim_next_text {
            txt.trim_start()
        } else {
            txt
        };
        let Some(after) = after else {
            if !txt.is_empty() {
                toks.push(Tok::Text(txt.to_owned()));
            }
            break;
        };
        let (trim_left, body_start) = match after.strip_prefix("- ") {
            Some(b) => (true, b),
            None => (false, after),
        };
        if trim_left {
            txt = txt.trim_end();
        }
        if !txt.is_empty() {
            toks.push(Tok::Text(txt.to_owned()));
        }
        let (body, tail, trim_right) = split_action(body_start)?;
        trim_next_text = trim_right;
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            toks.push(Tok::Action(lex_action(body)?));
        }
        rest = tail;
    }
    Ok(toks)
}

/// Finds the end of an action, skipping `}}` inside string literals.
fn split_action(s: &str) -> Result<(&str, &str, bool), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'`' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    if q == b'"' && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b' ' if s[i..].starts_with(" -}}") => return Ok((&s[..i], &s[i + 4..], true)),
            b'}' if s[i..].starts_with("}}") => return Ok((&s[..i], &s[i + 2..], false)),
            _ => {}
        }
        i += 1;
    }
    Err("unclosed action".to_owned())
}

fn lex_action(s: &str) -> Result<Vec<Lex>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
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
            '|' => {
                out.push(Lex::Pipe);
                i += 1;
            }
            '(' => {
                out.push(Lex::LParen);
                i += 1;
            }
            ')' => {
                out.push(Lex::RParen);
                i += 1;
            }
            ',' => {
                out.push(Lex::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Lex::Declare);
                i += 2;
            }
            '=' => {
                out.push(Lex::Declare);
                i += 1;
            }
            '"' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '"' {
                    if chars[j] == '\\' {
                        j += 1;
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err("unterminated quoted string".to_owned());
                }
                let lit: String = chars[i..=j].iter().collect();
                out.push(Lex::Str(unquote(&lit)?));
                i = j + 1;
            }
            '`' => {
                let j = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or("unterminated raw quoted string")?;
                out.push(Lex::Str(chars[i + 1..i + 1 + j].iter().collect()));
                i += j + 2;
            }
            '.' => {
                let j = word_end(i + 1);
                if j == i + 1 {
                    if chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
                        let (n, k) = lex_number(&chars, i);
                        out.push(Lex::Num(n));
                        i = k;
                    } else {
                        out.push(Lex::Dot);
                        i = j;
                    }
                } else {
                    let name: String = chars[i + 1..j].iter().collect();
                    let chained = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
                    out.push(if chained {
                        Lex::Chain(name)
                    } else {
                        Lex::Field(name)
                    });
                    i = j;
                }
            }
            '$' => {
                let j = word_end(i + 1);
                out.push(Lex::Var(chars[i..j].iter().collect()));
                i = j;
            }
            c if c.is_ascii_digit() || ((c == '-' || c == '+') && i + 1 < chars.len()) => {
                let (n, k) = lex_number(&chars, i);
                if k == i {
                    return Err(format!("unexpected {c:?} in command"));
                }
                out.push(Lex::Num(n));
                i = k;
            }
            c if c.is_alphabetic() || c == '_' => {
                let j = word_end(i);
                out.push(Lex::Ident(chars[i..j].iter().collect()));
                i = j;
            }
            c => return Err(format!("unexpected {c:?} in command")),
        }
    }
    Ok(out)
}

fn lex_number(chars: &[char], i: usize) -> (String, usize) {
    let mut j = i;
    if matches!(chars.get(j), Some('-' | '+')) {
        j += 1;
    }
    while j < chars.len()
        && (chars[j].is_ascii_alphanumeric()
            || chars[j] == '.'
            || chars[j] == '_'
            || ((chars[j] == '-' || chars[j] == '+') && matches!(chars[j - 1], 'e' | 'E')))
    {
        j += 1;
    }
    if j == i + 1 && matches!(chars[i], '-' | '+') {
        return (String::new(), i);
    }
    (chars[i..j].iter().collect(), j)
}

/// Go's interpreted string literal.
fn unquote(lit: &str) -> Result<String, String> {
    let body = &lit[1..lit.len() - 1];
    let mut out = String::with_capacity(body.len());
    let mut it = body.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some(c) => return Err(format!("invalid syntax: unknown escape \\{c}")),
            None => return Err("invalid syntax".to_owned()),
        }
    }
    Ok(out)
}

/// Parses nodes up to `{{end}}`/`{{else}}`; returns which keyword ended the list.
fn parse_list(toks: &[Tok], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while *pos < toks.len() {
        let tok = &toks[*pos];
        *pos += 1;
        let words = match tok {
            Tok::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                continue;
            }
            Tok::Action(w) => w,
        };
        match words.first() {
            Some(Lex::Ident(kw)) if kw == "end" => return Ok((nodes, Some("end".into()))),
            Some(Lex::Ident(kw)) if kw == "else" => {
                // `else if …` is an else branch holding a nested if.
                if let Some(Lex::Ident(k2)) = words.get(1) {
                    if k2 == "if" || k2 == "with" {
                        return Ok((nodes, Some(format!("else {k2}"))));
                    }
                }
                return Ok((nodes, Some("else".into())));
            }
            Some(Lex::Ident(kw)) if kw == "if" || kw == "range" || kw == "with" => {
                let pipe = parse_pipeline(&words[1..])?;
                nodes.push(parse_block(kw, pipe, toks, pos)?);
            }
            None => return Err("missing value for command".into()),
            _ => nodes.push(Node::Action(parse_pipeline(words)?)),
        }
    }
    Ok((nodes, None))
}

fn parse_block(kw: &str, pipe: Pipeline, toks: &[Tok], pos: &mut usize) -> Result<Node, String> {
    let (body, end) = parse_list(toks, pos)?;
    let els = match end.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => {
            let (els, end) = parse_list(toks, pos)?;
            if end.as_deref() != Some("end") {
                return Err(format!("expected end; found {end:?}"));
            }
            els
        }
        Some(e) if e.starts_with("else ") => {
            // The tokens of `else if x` are re-read as the start of a nested block that
            // consumes the shared `{{end}}`.
            let Tok::Action(words) = &toks[*pos - 1] else {
                return Err("bad else".into());
            };
            let inner_kw = e.trim_start_matches("else ");
            let inner = parse_pipeline(&words[2..])?;
            vec![parse_block(inner_kw, inner, toks, pos)?]
        }
        _ => return Err(format!("unexpected EOF in {kw}")),
    };
    Ok(match kw {
        "if" => Node::If(pipe, body, els),
        "range" => Node::Range(pipe, body, els),
        _ => Node::With(pipe, body, els),
    })
}

fn parse_pipeline(words: &[Lex]) -> Result<Pipeline, String> {
    let mut decl = Vec::new();
    let mut rest = words;
    if let Some(p) = words.iter().position(|w| *w == Lex::Declare) {
        for w in &words[..p] {
            match w {
                Lex::Var(v) => decl.push(v.clone()),
                Lex::Comma => {}
                _ => return Err("bad variable declaration".into()),
            }
        }
        rest = &words[p + 1..];
    }
    let mut cmds = Vec::new();
    let mut i = 0;
    let mut cur = Vec::new();
    while i < rest.len() {
        match &rest[i] {
            Lex::Pipe => {
                if cur.is_empty() {
                    return Err("missing command".into());
                }
                cmds.push(std::mem::take(&mut cur));
            }
            Lex::LParen => {
                let mut depth = 1;
                let start = i + 1;
                while depth > 0 {
                    i += 1;
                    match rest.get(i) {
                        Some(Lex::LParen) => depth += 1,
                        Some(Lex::RParen) => depth -= 1,
                        Some(_) => {}
                        None => return Err("unclosed left paren".into()),
                    }
                }
                cur.push(Operand::Sub(Box::new(parse_pipeline(&rest[start..i])?)));
            }
            Lex::RParen => return Err("unexpected right paren".into()),
            Lex::Declare | Lex::Comma => return Err("unexpected declaration".into()),
            Lex::Str(s) => cur.push(Operand::Lit(Val::Str(s.clone()))),
            Lex::Num(n) => cur.push(Operand::Lit(parse_num(n)?)),
            Lex::Dot => cur.push(Operand::Dot(Vec::new())),
            Lex::Field(f) => cur.push(Operand::Dot(vec![f.clone()])),
            Lex::Chain(f) => match cur.last_mut() {
                Some(Operand::Var(_, fields)) | Some(Operand::Dot(fields)) => {
                    fields.push(f.clone())
                }
                _ => return Err(format!("unexpected .{f} in operand")),
            },
            Lex::Var(v) => cur.push(Operand::Var(v.clone(), Vec::new())),
            Lex::Ident(id) => cur.push(match id.as_str() {
                "true" => Operand::Lit(Val::Bool(true)),
                "false" => Operand::Lit(Val::Bool(false)),
                "nil" => Operand::Lit(Val::Nil),
                _ => {
                    if !is_function(id) {
                        return Err(format!("function {id:?} not defined"));
                    }
                    Operand::Func(id.clone())
                }
            }),
        }
        i += 1;
    }
    if cur.is_empty() {
        return Err("missing value for command".into());
    }
    cmds.push(cur);
    Ok(Pipeline { decl, cmds })
}

fn parse_num(n: &str) -> Result<Val, String> {
    let clean = n.replace('_', "");
    if let Ok(i) = clean.parse::<i64>() {
        return Ok(Val::Int(i));
    }
    if let Some(h) = clean.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(h, 16) {
            return Ok(Val::Int(i));
        }
    }
    clean
        .parse::<f64>()
        .map(Val::Float)
        .map_err(|_| format!("bad number syntax: {n:?}"))
}

const FUNCTIONS: &[&str] = &[
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "urlquery",
    "html",
    "js",
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "match",
    "title",
    "toUpper",
    "toLower",
    "stripPort",
    "stripDomain",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "toDuration",
    "pathPrefix",
    "externalURL",
    "safeHtml",
    "sortByLabel",
    "graphLink",
    "tableLink",
    "parseDuration",
];

fn is_function(name: &str) -> bool {
    FUNCTIONS.contains(&name)
}

struct Expander<'a> {
    data: &'a Data<'a>,
    query: QueryFn<'a>,
    vars: Vec<(String, Val)>,
    out: String,
}

impl Expander<'_> {
    fn nodes(&mut self, nodes: &[Node], dot: &Val) -> Result<(), String> {
        for n in nodes {
            self.node(n, dot)?;
        }
        Ok(())
    }

    fn node(&mut self, n: &Node, dot: &Val) -> Result<(), String> {
        match n {
            Node::Text(t) => self.out.push_str(t),
            Node::Action(p) => {
                let v = self.pipeline(p, dot)?;
                if p.decl.is_empty() {
                    let s = self.print(&v);
                    self.out.push_str(&s);
                }
            }
            Node::If(p, body, els) => {
                let mark = self.vars.len();
                let v = self.pipeline(p, dot)?;
                let branch = if truth(&v) { body } else { els };
                self.nodes(branch, dot)?;
                self.vars.truncate(mark);
            }
            Node::With(p, body, els) => {
                let mark = self.vars.len();
                let v = self.pipeline(p, dot)?;
                if truth(&v) {
                    self.nodes(body, &v)?;
                } else {
                    self.nodes(els, dot)?;
                }
                self.vars.truncate(mark);
            }
            Node::Range(p, body, els) => {
                let mark = self.vars.len();
                let decl = p.decl.clone();
                let plain = Pipeline {
                    decl: Vec::new(),
                    cmds: p.cmds.clone(),
                };
                let v = self.pipeline(&plain, dot)?;
                let items: Vec<(Val, Val)> = match v {
                    Val::Samples(s) => s
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| (Val::Int(i as i64), Val::Sample(s)))
                        .collect(),
                    Val::Map(m) => m
                        .into_iter()
                        .map(|(k, v)| (Val::Str(k), Val::Str(v)))
                        .collect(),
                    Val::Nil => Vec::new(),
                    other => {
                        return Err(format!("range can't iterate over {}", self.print(&other)))
                    }
                };
                if items.is_empty() {
                    self.nodes(els, dot)?;
                }
                for (k, item) in items {
                    let inner = self.vars.len();
                    match decl.as_slice() {
                        [v] => self.vars.push((v.clone(), item.clone())),
                        [kn, vn] => {
                            self.vars.push((kn.clone(), k));
                            self.vars.push((vn.clone(), item.clone()));
                        }
                        _ => {}
                    }
                    self.nodes(body, &item)?;
                    self.vars.truncate(inner);
                }
                self.vars.truncate(mark);
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Val) -> Result<Val, String> {
        let mut prev: Option<Val> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(cmd, dot, prev)?);
        }
        let v = prev.unwrap_or(Val::Nil);
        if let Some(name) = p.decl.first() {
            self.vars.push((name.clone(), v.clone()));
        }
        Ok(v)
    }

    fn command(&mut self, cmd: &[Operand], dot: &Val, piped: Option<Val>) -> Result<Val, String> {
        let Some(first) = cmd.first() else {
            return Err("empty command".into());
        };
        if let Operand::Func(name) = first {
            let mut args = Vec::with_capacity(cmd.len());
            for a in &cmd[1..] {
                args.push(self.operand(a, dot)?);
            }
            if let Some(p) = piped {
                args.push(p);
            }
            return self.call(name, args);
        }
        if cmd.len() > 1 || piped.is_some() {
            return Err(format!("can't give argument to non-function {first:?}"));
        }
        self.operand(first, dot)
    }

    fn operand(&mut self, op: &Operand, dot: &Val) -> Result<Val, String> {
        match op {
            Operand::Lit(v) => Ok(v.clone()),
            Operand::Dot(fields) => self.fields(dot.clone(), fields),
            Operand::Var(name, fields) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("undefined variable {name:?}"))?;
                self.fields(v, fields)
            }
            Operand::Func(name) => self.call(name, Vec::new()),
            Operand::Sub(p) => self.pipeline(p, dot),
        }
    }

    fn fields(&self, mut v: Val, fields: &[String]) -> Result<Val, String> {
        for f in fields {
            v = match (&v, f.as_str()) {
                (Val::Root, "Labels") => Val::Map(self.data.labels.clone()),
                (Val::Root, "ExternalLabels") => Val::Map(self.data.external_labels.clone()),
                (Val::Root, "ExternalURL") => Val::Str(self.data.external_url.to_owned()),
                (Val::Root, "Value") => Val::Float(self.data.value),
                // missingkey=zero, as Prometheus sets it: an absent label is "".
                (Val::Map(m), k) => Val::Str(m.get(k).cloned().unwrap_or_default()),
                (Val::Sample(s), "Labels") => Val::Map(s.labels.clone()),
                (Val::Sample(s), "Value") => Val::Float(s.value),
                (Val::Nil, _) => Val::Nil,
                _ => {
                    return Err(format!(
                        "can't evaluate field {f} in type {}",
                        type_name(&v)
                    ))
                }
            };
        }
        Ok(v)
    }

    fn call(&mut self, name: &str, args: Vec<Val>) -> Result<Val, String> {
        let want = |n: usize| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "error calling {name}: wrong number of args for {name}: want {n} got {}",
                    args.len()
                ))
            }
        };
        let float = |v: &Val| to_float(v).map_err(|e| format!("error calling {name}: {e}"));
        Ok(match name {
            "and" => args
                .iter()
                .find(|a| !truth(a))
                .or(args.last())
                .cloned()
                .unwrap_or(Val::Nil),
            "or" => args
                .iter()
                .find(|a| truth(a))
                .or(args.last())
                .cloned()
                .unwrap_or(Val::Nil),
            "not" => {
                want(1)?;
                Val::Bool(!truth(&args[0]))
            }
            "len" => {
                want(1)?;
                Val::Int(match &args[0] {
                    Val::Str(s) => s.len(),
                    Val::Map(m) => m.len(),
                    Val::Samples(s) => s.len(),
                    v => return Err(format!("error calling len: len of type {}", type_name(v))),
                } as i64)
            }
            "index" => {
                want(2)?;
                match (&args[0], &args[1]) {
                    (Val::Map(m), k) => {
                        Val::Str(m.get(&self.print(k)).cloned().unwrap_or_default())
                    }
                    (Val::Samples(s), Val::Int(i)) => s
                        .get(*i as usize)
                        .cloned()
                        .map(Val::Sample)
                        .ok_or_else(|| format!("error calling index: index out of range: {i}"))?,
                    (v, _) => {
                        return Err(format!(
                            "error calling index: can't index item of type {}",
                            type_name(v)
                        ))
                    }
                }
            }
            "print" | "println" => {
                let mut s = String::new();
                for (i, a) in args.iter().enumerate() {
                    let is_str = matches!(a, Val::Str(_));
                    let prev_str = i > 0 && matches!(args[i - 1], Val::Str(_));
                    if i > 0 && (name == "println" || (!is_str && !prev_str)) {
                        s.push(' ');
                    }
                    s.push_str(&self.print(a));
                }
                if name == "println" {
                    s.push('\n');
                }
                Val::Str(s)
            }
            "printf" => {
                let Some((Val::Str(f), rest)) = args.split_first() else {
                    return Err("error calling printf: format must be a string".into());
                };
                let rest: Vec<printf::Arg> = rest.iter().map(|a| self.printf_arg(a)).collect();
                Val::Str(printf::sprintf(f, &rest))
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                if args.len() < 2 {
                    return Err(format!(
                        "error calling {name}: missing argument for comparison"
                    ));
                }
                if name == "eq" {
                    return Ok(Val::Bool(
                        args[1..]
                            .iter()
                            .any(|b| compare(&args[0], b) == Some(std::cmp::Ordering::Equal)),
                    ));
                }
                want(2)?;
                let ord = compare(&args[0], &args[1]).ok_or_else(|| {
                    format!("error calling {name}: incompatible types for comparison")
                })?;
                use std::cmp::Ordering::*;
                Val::Bool(match name {
                    "ne" => ord != Equal,
                    "lt" => ord == Less,
                    "le" => ord != Greater,
                    "gt" => ord == Greater,
                    _ => ord != Less,
                })
            }
            "urlquery" => Val::Str(
                form_urlencoded::byte_serialize(
                    args.iter()
                        .map(|a| self.print(a))
                        .collect::<String>()
                        .as_bytes(),
                )
                .collect(),
            ),
            "html" | "js" | "safeHtml" => {
                want(1)?;
                Val::Str(self.print(&args[0]))
            }
            "query" => {
                want(1)?;
                let q = self.print(&args[0]);
                Val::Samples((self.query)(&q).map_err(|e| format!("error calling query: {e}"))?)
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    Val::Samples(s) => Val::Sample(s.first().cloned().ok_or(
                        "error calling first: first() called on vector with no elements",
                    )?),
                    v => return Err(format!("error calling first: wrong type for value; expected template.queryResult; got {}", type_name(v))),
                }
            }
            "label" => {
                want(2)?;
                match &args[1] {
                    Val::Sample(s) => Val::Str(
                        s.labels.get(&self.print(&args[0])).cloned().unwrap_or_default(),
                    ),
                    v => return Err(format!("error calling label: wrong type for value; expected *template.sample; got {}", type_name(v))),
                }
            }
            "value" => {
                want(1)?;
                match &args[0] {
                    Val::Sample(s) => Val::Float(s.value),
                    v => return Err(format!("error calling value: wrong type for value; expected *template.sample; got {}", type_name(v))),
                }
            }
            "strvalue" => {
                want(1)?;
                match &args[0] {
                    Val::Sample(s) => {
                        Val::Str(s.labels.get("__value__").cloned().unwrap_or_default())
                    }
                    _ => Val::Str(String::new()),
                }
            }
            "args" => Val::Map(
                args.iter()
                    .enumerate()
                    .map(|(i, a)| (format!("arg{i}"), self.print(a)))
                    .collect(),
            ),
            "reReplaceAll" => {
                want(3)?;
                let re = regex::Regex::new(&self.print(&args[0]))
                    .map_err(|e| format!("error calling reReplaceAll: {e}"))?;
                let text = self.print(&args[2]);
                Val::Str(
                    re.replace_all(&text, self.print(&args[1]).as_str())
                        .into_owned(),
                )
            }
            "match" => {
                want(2)?;
                let re = regex::Regex::new(&self.print(&args[0]))
                    .map_err(|e| format!("error calling match: {e}"))?;
                Val::Bool(re.is_match(&self.print(&args[1])))
            }
            "title" => {
                want(1)?;
                Val::Str(title(&self.print(&args[0])))
            }
            "toUpper" => {
                want(1)?;
                Val::Str(self.print(&args[0]).to_uppercase())
            }
            "toLower" => {
                want(1)?;
                Val::Str(self.print(&args[0]).to_lowercase())
            }
            "stripPort" => {
                want(1)?;
                let s = self.print(&args[0]);
                Val::Str(strip_port(&s).to_owned())
            }
            "stripDomain" => {
                want(1)?;
                let s = self.print(&args[0]);
                let (host, port) = match s.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') && !h.is_empty() => (h, Some(p)),
                    _ => (s.as_str(), None),
                };
                let short = if host.parse::<std::net::IpAddr>().is_ok() {
                    host
                } else {
                    host.split('.').next().unwrap_or(host)
                };
                Val::Str(match port {
                    Some(p) => format!("{short}:{p}"),
                    None => short.to_owned(),
                })
            }
            "humanize" => {
                want(1)?;
                Val::Str(printf::humanize(float(&args[0])?))
            }
            "humanize1024" => {
                want(1)?;
                Val::Str(printf::humanize1024(float(&args[0])?))
            }
            "humanizeDuration" => {
                want(1)?;
                Val::Str(printf::humanize_duration(float(&args[0])?))
            }
            "humanizePercentage" => {
                want(1)?;
                Val::Str(format!("{}%", printf::go_g(float(&args[0])? * 100.0, 4)))
            }
            "humanizeTimestamp" => {
                want(1)?;
                Val::Str(
                    printf::humanize_timestamp(float(&args[0])?)
                        .map_err(|e| format!("error calling humanizeTimestamp: {e}"))?,
                )
            }
            "toTime" => {
                want(1)?;
                Val::Str(
                    printf::humanize_timestamp(float(&args[0])?)
                        .map_err(|e| format!("error calling toTime: {e}"))?,
                )
            }
            "toDuration" | "parseDuration" => {
                want(1)?;
                let secs = if name == "parseDuration" {
                    let s = self.print(&args[0]);
                    promql_parser::util::parse_duration(&s)
                        .map_err(|e| format!("error calling parseDuration: {e}"))?
                        .as_secs_f64()
                } else {
                    float(&args[0])?
                };
                Val::Float(secs)
            }
            "pathPrefix" => Val::Str(String::new()),
            "externalURL" => Val::Str(self.data.external_url.to_owned()),
            "graphLink" | "tableLink" => {
                want(1)?;
                let expr: String =
                    form_urlencoded::byte_serialize(self.print(&args[0]).as_bytes()).collect();
                let tab = if name == "graphLink" { 0 } else { 1 };
                Val::Str(format!("/graph?g0.expr={expr}&g0.tab={tab}"))
            }
            "sortByLabel" => {
                want(2)?;
                let label = self.print(&args[0]);
                match &args[1] {
                    Val::Samples(s) => {
                        let mut s = s.clone();
                        s.sort_by(|a, b| a.labels.get(&label).cmp(&b.labels.get(&label)));
                        Val::Samples(s)
                    }
                    v => {
                        return Err(format!(
                            "error calling sortByLabel: wrong type {}",
                            type_name(v)
                        ))
                    }
                }
            }
            _ => return Err(format!("function {name:?} not defined")),
        })
    }

    fn printf_arg(&self, v: &Val) -> printf::Arg {
        match v {
            Val::Int(i) => printf::Arg::Int(*i),
            Val::Float(f) => printf::Arg::Float(*f),
            Val::Bool(b) => printf::Arg::Bool(*b),
            Val::Str(s) => printf::Arg::Str(s.clone()),
            other => printf::Arg::Other(self.print(other)),
        }
    }

    /// Go's `fmt.Sprint` of a value, as text/template prints it.
    fn print(&self, v: &Val) -> String {
        match v {
            Val::Nil => "<no value>".to_owned(),
            Val::Bool(b) => b.to_string(),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => crate::gofmt::shortest(*f),
            Val::Str(s) => s.clone(),
            Val::Map(m) => go_map(m),
            Val::Sample(s) => format!(
                "{{{} {}}}",
                go_map(&s.labels),
                crate::gofmt::shortest(s.value)
            ),
            Val::Samples(ss) => {
                let items: Vec<String> = ss
                    .iter()
                    .map(|s| self.print(&Val::Sample(s.clone())))
                    .collect();
                format!("[{}]", items.join(" "))
            }
            Val::Root => format!(
                "{{{} {} {} {}}}",
                go_map(self.data.labels),
                go_map(self.data.external_labels),
                self.data.external_url,
                crate::gofmt::shortest(self.data.value)
            ),
        }
    }
}

fn go_map(m: &BTreeMap<String, String>) -> String {
    let mut out = String::from("map[");
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{k}:{v}");
    }
    out.push(']');
    out
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Nil => "nil",
        Val::Bool(_) => "bool",
        Val::Int(_) => "int",
        Val::Float(_) => "float64",
        Val::Str(_) => "string",
        Val::Map(_) => "map[string]string",
        Val::Sample(_) => "*template.sample",
        Val::Samples(_) => "template.queryResult",
        Val::Root => "*template.tmplData",
    }
}

fn truth(v: &Val) -> bool {
    match v {
        Val::Nil => false,
        Val::Bool(b) => *b,
        Val::Int(i) => *i != 0,
        Val::Float(f) => *f != 0.0,
        Val::Str(s) => !s.is_empty(),
        Val::Map(m) => !m.is_empty(),
        Val::Samples(s) => !s.is_empty(),
        Val::Sample(_) | Val::Root => true,
    }
}

/// Numbers compare across int and float (Go would refuse; rules in the wild rely on
/// `gt $value 10`); strings compare with strings, booleans only for equality.
fn compare(a: &Val, b: &Val) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) if x == y => Some(std::cmp::Ordering::Equal),
        (Val::Bool(_), Val::Bool(_)) => Some(std::cmp::Ordering::Less),
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        (x, y) => {
            let (Ok(x), Ok(y)) = (num(x), num(y)) else {
                return None;
            };
            x.partial_cmp(&y)
        }
    }
}

fn num(v: &Val) -> Result<f64, ()> {
    match v {
        Val::Int(i) => Ok(*i as f64),
        Val::Float(f) => Ok(*f),
        _ => Err(()),
    }
}

/// Prometheus's `convertToFloat`: numbers, and strings that parse as numbers.
fn to_float(v: &Val) -> Result<f64, String> {
    match v {
        Val::Int(i) => Ok(*i as f64),
        Val::Float(f) => Ok(*f),
        Val::Str(s) => s
            .parse::<f64>()
            .map_err(|e| format!("strconv.ParseFloat: parsing {s:?}: {e}")),
        other => Err(format!("can't convert {} to float", type_name(other))),
    }
}

/// Go's deprecated `strings.Title`: upper-cases the first letter of every word.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_');
    }
    out
}

fn strip_port(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return &rest[..end];
        }
    }
    match s.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, labels: &[(&str, &str)], value: f64) -> String {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ext = BTreeMap::from([("cluster".to_string(), "eu-1".to_string())]);
        let data = Data {
            labels: &labels,
            external_labels: &ext,
            external_url: "http://novamon:9090",
            value,
        };
        let q = |expr: &str| -> Result<Vec<QuerySample>, String> {
            if expr == "up" {
                Ok(vec![
                    QuerySample {
                        labels: BTreeMap::from([("instance".into(), "b:9100".into())]),
                        value: 0.0,
                    },
                    QuerySample {
                        labels: BTreeMap::from([("instance".into(), "a:9100".into())]),
                        value: 1.0,
                    },
                ])
            } else {
                Ok(vec![])
            }
        };
        expand("__alert_t", text, &data, &q)
    }

    #[test]
    fn prometheus_variables_and_fields() {
        let l = [("instance", "host:9100"), ("job", "node")];
        assert_eq!(
            run("{{ $labels.instance }} down", &l, 1.0),
            "host:9100 down"
        );
        assert_eq!(run("{{ .Labels.job }}={{ .Value }}", &l, 0.5), "node=0.5");
        assert_eq!(run("{{ $externalLabels.cluster }}", &l, 0.0), "eu-1");
        assert_eq!(run("{{ $labels.absent }}|", &l, 0.0), "|");
        assert_eq!(run("{{ $value }}", &l, 1e21), "1e+21");
        assert_eq!(run("{{$externalURL}}", &l, 0.0), "http://novamon:9090");
    }

    #[test]
    fn humanize_family_matches_prometheus() {
        assert_eq!(run("{{ humanize 1234567.0 }}", &[], 0.0), "1.235M");
        assert_eq!(run("{{ $value | humanize }}", &[], 0.001234), "1.234m");
        assert_eq!(run("{{ humanize 0 }}", &[], 0.0), "0");
        assert_eq!(run("{{ humanize1024 1048576.0 }}", &[], 0.0), "1Mi");
        assert_eq!(run("{{ humanizeDuration 3661.0 }}", &[], 0.0), "1h 1m 1s");
        assert_eq!(run("{{ humanizeDuration 90061 }}", &[], 0.0), "1d 1h 1m 1s");
        assert_eq!(run("{{ humanizeDuration 1.5 }}", &[], 0.0), "1.5s");
        assert_eq!(run("{{ humanizeDuration 0.0012 }}", &[], 0.0), "1.2ms");
        assert_eq!(run("{{ humanizePercentage 0.1234 }}", &[], 0.0), "12.34%");
        assert_eq!(
            run("{{ humanizeTimestamp 1435065584.128 }}", &[], 0.0),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
    }

    #[test]
    fn printf_pipelines_and_strings() {
        assert_eq!(run(r#"{{ printf "%.2f" $value }}"#, &[], 1.23456), "1.23");
        assert_eq!(run(r#"{{ $value | printf "%.1f%%" }}"#, &[], 99.0), "99.0%");
        assert_eq!(run(r#"{{ printf "%s-%d" "a" 3 }}"#, &[], 0.0), "a-3");
        assert_eq!(run(r#"{{ "abc" | toUpper }}"#, &[], 0.0), "ABC");
        assert_eq!(
            run(r#"{{ title "hello world-x" }}"#, &[], 0.0),
            "Hello World-X"
        );
        assert_eq!(
            run(
                r#"{{ reReplaceAll "(.*):.*" "$1" $labels.instance }}"#,
                &[("instance", "h:1")],
                0.0
            ),
            "h"
        );
    }

    #[test]
    fn query_first_value_label_range_with() {
        assert_eq!(run(r#"{{ query "up" | first | value }}"#, &[], 0.0), "0");
        assert_eq!(
            run(
                r#"{{ with query "up" }}{{ . | first | label "instance" }}{{ end }}"#,
                &[],
                0.0
            ),
            "b:9100"
        );
        assert_eq!(
            run(
                r#"{{ range query "up" | sortByLabel "instance" }}{{ .Labels.instance }}={{ .Value }};{{ end }}"#,
                &[],
                0.0
            ),
            "a:9100=1;b:9100=0;"
        );
        assert_eq!(
            run(
                r#"{{ with query "nothing" }}x{{ else }}none{{ end }}"#,
                &[],
                0.0
            ),
            "none"
        );
        assert!(run(r#"{{ query "nothing" | first }}"#, &[], 0.0)
            .starts_with("<error expanding template: error calling first"));
    }

    #[test]
    fn if_else_comparisons_and_trim() {
        let t = "{{ if gt $value 10.0 }}high{{ else if gt $value 5 }}mid{{ else }}low{{ end }}";
        assert_eq!(run(t, &[], 11.0), "high");
        assert_eq!(run(t, &[], 6.0), "mid");
        assert_eq!(run(t, &[], 1.0), "low");
        assert_eq!(run("a  {{- 1 -}}  b", &[], 0.0), "a1b");
        assert_eq!(
            run(
                r#"{{ if eq $labels.x "y" }}yes{{ end }}"#,
                &[("x", "y")],
                0.0
            ),
            "yes"
        );
        assert_eq!(run("{{ $v := 3 }}{{ $v }}", &[], 0.0), "3");
        assert_eq!(
            run(
                "{{ eq .Value .Value }} {{ eq .Labels.a $labels.a }}",
                &[("a", "x")],
                2.0
            ),
            "true true"
        );
    }

    #[test]
    fn bad_templates_fail_to_parse() {
        assert!(Template::parse("t", "{{ nosuchfunc }}")
            .unwrap_err()
            .contains("not defined"));
        assert!(Template::parse("t", "{{ if 1 }}x").is_err());
        assert!(Template::parse("t", "{{ $labels.x ").is_err());
        assert!(Template::parse("t", "{{ end }}").is_err());
    }
}
