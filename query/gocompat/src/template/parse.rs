//! Builds the tree of a template from its tokens: text, actions, and `if`/`range`/`with`
//! blocks with their `else` (and `else if`/`else with`) branches.

use super::lex::{Lex, Tok};
use super::{funcs, Dialect, Val};

/// Literals carry no user values, so the tree uses `Val<()>` for them.
pub(super) type Lit = Val<()>;

#[derive(Clone, Debug)]
pub(super) enum Node {
    Text(String),
    Action(Pipeline),
    Block(Block, Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Block {
    If,
    Range,
    With,
}

#[derive(Clone, Debug)]
pub(super) struct Pipeline {
    /// `$x :=` (one name) or `$k, $v :=` (range only).
    pub decl: Vec<String>,
    /// `=` rather than `:=`: the variable exists already.
    pub assign: bool,
    pub cmds: Vec<Vec<Operand>>,
}

#[derive(Clone, Debug)]
pub(super) enum Operand {
    Lit(Lit),
    /// `.` followed by fields (`.Labels.instance`); no fields is `.` itself.
    Dot(Vec<String>),
    /// `$name` followed by fields.
    Var(String, Vec<String>),
    Func(String),
    Sub(Box<Pipeline>),
}

/// How deep blocks and parenthesised pipelines may nest. Parsing and executing recurse
/// through them, and templates run on threads with 2 MiB stacks (queries' `line_format`, rule
/// evaluation), so unbounded nesting lets one template overflow the stack and abort the
/// process. Go's text/template stops at 10,000 on its growable stacks; templates in rules and
/// queries stay far below this limit, and one at the limit executes within a 2 MiB stack in
/// the tests' build (opt-level 1, larger frames than release), which the tests check.
pub(super) const MAX_DEPTH: usize = 256;

pub(super) fn parse(toks: &[Tok], dialect: &Dialect) -> Result<Vec<Node>, String> {
    let mut pos = 0;
    let (nodes, end) = parse_list(toks, &mut pos, dialect, 0)?;
    match end {
        None => Ok(nodes),
        Some(kw) => Err(format!("unexpected {{{{{kw}}}}}")),
    }
}

/// Nodes up to `{{end}}`/`{{else …}}` (returned as the keyword) or the end of the template.
fn parse_list(
    toks: &[Tok],
    pos: &mut usize,
    dialect: &Dialect,
    depth: usize,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(tok) = toks.get(*pos) {
        *pos += 1;
        let words = match tok {
            Tok::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                continue;
            }
            Tok::Action(w) => w,
        };
        let Some(Lex::Ident(kw)) = words.first() else {
            nodes.push(Node::Action(parse_pipeline(words, dialect, depth)?));
            continue;
        };
        match kw.as_str() {
            "end" => return Ok((nodes, Some("end".into()))),
            "else" => {
                // `else if …` is an else branch holding a nested block.
                if let Some(Lex::Ident(k2)) = words.get(1) {
                    if k2 == "if" || k2 == "with" {
                        return Ok((nodes, Some(format!("else {k2}"))));
                    }
                }
                return Ok((nodes, Some("else".into())));
            }
            "range" | "with" if !dialect.blocks => {
                return Err(format!("{{{{{kw}}}}} is not supported"))
            }
            "define" | "template" | "block" | "break" | "continue" => {
                return Err(format!("{{{{{kw}}}}} is not supported"))
            }
            "if" | "range" | "with" => {
                let pipe = parse_pipeline(&words[1..], dialect, depth)?;
                nodes.push(parse_block(kw, pipe, toks, pos, dialect, depth + 1)?);
            }
            _ => nodes.push(Node::Action(parse_pipeline(words, dialect, depth)?)),
        }
    }
    Ok((nodes, None))
}

fn parse_block(
    kw: &str,
    pipe: Pipeline,
    toks: &[Tok],
    pos: &mut usize,
    dialect: &Dialect,
    depth: usize,
) -> Result<Node, String> {
    check_depth(depth)?;
    let (body, end) = parse_list(toks, pos, dialect, depth)?;
    let els = match end.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => {
            let (els, end) = parse_list(toks, pos, dialect, depth)?;
            if end.as_deref() != Some("end") {
                return Err(format!(
                    "expected {{{{end}}}} after {{{{else}}}} in {{{{{kw}}}}}"
                ));
            }
            els
        }
        Some(e) if e.starts_with("else ") => {
            // `else if x` is re-read as the start of a nested block that consumes the
            // shared `{{end}}`.
            let Some(Tok::Action(words)) = toks.get(*pos - 1) else {
                return Err(format!("malformed {{{{{e}}}}}"));
            };
            let inner_kw = e.trim_start_matches("else ");
            let inner = parse_pipeline(&words[2..], dialect, depth)?;
            vec![parse_block(inner_kw, inner, toks, pos, dialect, depth + 1)?]
        }
        _ => return Err(format!("unexpected EOF: {{{{{kw}}}}} without {{{{end}}}}")),
    };
    let block = match kw {
        "if" => Block::If,
        "range" => Block::Range,
        _ => Block::With,
    };
    Ok(Node::Block(block, pipe, body, els))
}

/// Go's words for a template nested past [`MAX_DEPTH`].
fn check_depth(depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("max expression depth exceeded".into());
    }
    Ok(())
}

fn parse_pipeline(words: &[Lex], dialect: &Dialect, depth: usize) -> Result<Pipeline, String> {
    check_depth(depth)?;
    let mut decl = Vec::new();
    let mut rest = words;
    let split = words
        .iter()
        .position(|w| matches!(w, Lex::Declare | Lex::Assign));
    let assign = split.is_some_and(|p| words[p] == Lex::Assign);
    if let Some(p) = split {
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
                    return Err("missing command before |".into());
                }
                cmds.push(std::mem::take(&mut cur));
            }
            Lex::LParen => {
                let mut open = 1;
                let start = i + 1;
                while open > 0 {
                    i += 1;
                    match rest.get(i) {
                        Some(Lex::LParen) => open += 1,
                        Some(Lex::RParen) => open -= 1,
                        Some(_) => {}
                        None => return Err("unclosed left paren".into()),
                    }
                }
                cur.push(Operand::Sub(Box::new(parse_pipeline(
                    &rest[start..i],
                    dialect,
                    depth + 1,
                )?)));
            }
            Lex::RParen => return Err("unexpected right paren".into()),
            Lex::Declare | Lex::Assign | Lex::Comma => return Err("unexpected declaration".into()),
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
                _ if funcs::BUILTINS.contains(&id.as_str())
                    || dialect.funcs.contains(&id.as_str()) =>
                {
                    Operand::Func(id.clone())
                }
                _ => return Err(format!("function {id:?} not defined")),
            }),
        }
        i += 1;
    }
    if cur.is_empty() {
        return Err("missing value for command".into());
    }
    cmds.push(cur);
    Ok(Pipeline { decl, assign, cmds })
}

/// A Go number constant: integers (also 0x/0o/0b, with `_`), else a float.
fn parse_num(n: &str) -> Result<Lit, String> {
    let clean = n.replace('_', "");
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let radix = [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ]
    .iter()
    .find_map(|(p, r)| digits.strip_prefix(p).map(|d| (d, *r)));
    let int = match radix {
        Some((d, r)) => i64::from_str_radix(d, r).ok(),
        None => digits.parse::<i64>().ok(),
    };
    if let Some(i) = int {
        return Ok(Val::Int(if neg { -i } else { i }));
    }
    clean
        .parse::<f64>()
        .map(Val::Float)
        .map_err(|_| format!("bad number syntax: {n:?}"))
}
