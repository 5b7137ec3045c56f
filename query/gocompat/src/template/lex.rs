//! Splits a template into text and actions, and actions into words, as Go's lexer does
//! (trim markers, comments, Go string and number literals).

use super::Dialect;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Text(String),
    /// The words of one `{{ … }}`.
    Action(Vec<Lex>),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Lex {
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
    /// `:=`
    Declare,
    /// `=`
    Assign,
    Comma,
}

/// Go trims exactly these around `{{- ` and ` -}}`.
const SPACE: &[char] = &[' ', '\t', '\r', '\n'];

pub(super) fn lex(text: &str, dialect: &Dialect) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while !rest.is_empty() {
        let (before, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut txt = if trim_next {
            before.trim_start_matches(SPACE)
        } else {
            before
        };
        let Some(after) = after else {
            push_text(&mut toks, txt);
            break;
        };
        let trim_left = after.starts_with('-') && after[1..].starts_with(SPACE);
        if trim_left {
            txt = txt.trim_end_matches(SPACE);
        }
        push_text(&mut toks, txt);
        let body = if trim_left { &after[2..] } else { after };
        let (inner, tail, trim_right) = split_action(body)?;
        trim_next = trim_right;
        rest = tail;
        let inner = inner.trim_matches(SPACE);
        if let Some(c) = inner.strip_prefix("/*") {
            if !c.ends_with("*/") {
                return Err("unclosed comment".into());
            }
            continue;
        }
        toks.push(Tok::Action(lex_action(inner, dialect)?));
    }
    Ok(toks)
}

fn push_text(toks: &mut Vec<Tok>, t: &str) {
    if !t.is_empty() {
        toks.push(Tok::Text(t.to_owned()));
    }
}

/// The body of an action, what follows it, and whether it ends with ` -}}`; `}}` inside
/// string literals does not count.
fn split_action(s: &str) -> Result<(&str, &str, bool), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if q == b'"' && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if s[i..].starts_with("-}}") && i > 0 && SPACE.contains(&(b[i - 1] as char)) => {
                return Ok((&s[..i - 1], &s[i + 3..], true))
            }
            b'}' if s[i..].starts_with("}}") => return Ok((&s[..i], &s[i + 2..], false)),
            _ => {}
        }
        i += 1;
    }
    Err("unclosed action".to_owned())
}

fn lex_action(s: &str, dialect: &Dialect) -> Result<Vec<Lex>, String> {
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
        let single = match c {
            '|' => Some(Lex::Pipe),
            '(' => Some(Lex::LParen),
            ')' => Some(Lex::RParen),
            ',' => Some(Lex::Comma),
            '=' => Some(Lex::Assign),
            _ => None,
        };
        if let Some(l) = single {
            out.push(l);
            i += 1;
            continue;
        }
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Lex::Declare);
                i += 2;
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
                let body: String = chars[i + 1..j].iter().collect();
                out.push(Lex::Str(unquote(&body)?));
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
            '.' if chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                let (n, k) = lex_number(&chars, i);
                out.push(Lex::Num(n));
                i = k;
            }
            '.' => {
                let j = word_end(i + 1);
                if j == i + 1 {
                    out.push(Lex::Dot);
                } else {
                    let name: String = chars[i + 1..j].iter().collect();
                    let chained = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
                    out.push(if chained {
                        Lex::Chain(name)
                    } else {
                        Lex::Field(name)
                    });
                }
                i = j;
            }
            '$' if !dialect.variables => return Err("variables are not supported".into()),
            '$' => {
                let j = word_end(i + 1);
                out.push(Lex::Var(chars[i..j].iter().collect()));
                i = j;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
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

/// The body of a Go interpreted string literal (strconv.Unquote).
fn unquote(body: &str) -> Result<String, String> {
    let bad = || format!("invalid syntax: \"{body}\"");
    let mut out = String::with_capacity(body.len());
    let mut it = body.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = it.next().ok_or_else(bad)?;
        let mut hex = |n: usize| -> Result<u32, String> {
            let digits: String = (0..n).filter_map(|_| it.next()).collect();
            if digits.len() != n {
                return Err(bad());
            }
            u32::from_str_radix(&digits, 16).map_err(|_| bad())
        };
        match e {
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            'x' => {
                // Text is UTF-8 here: a byte above 0x7f alone becomes U+FFFD.
                out.push_str(&String::from_utf8_lossy(&[hex(2)? as u8]));
            }
            'u' => out.push(char::from_u32(hex(4)?).ok_or_else(bad)?),
            'U' => out.push(char::from_u32(hex(8)?).ok_or_else(bad)?),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    let d = it.next().and_then(|d| d.to_digit(8)).ok_or_else(bad)?;
                    v = v * 8 + d;
                }
                out.push_str(&String::from_utf8_lossy(&[
                    u8::try_from(v).map_err(|_| bad())?
                ]));
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}
