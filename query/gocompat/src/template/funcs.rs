//! Go's builtin template functions, and the helpers users register under their own names
//! (`title`, `toUpper`/`ToUpper`/`upper`, …), each written once.

use std::cmp::Ordering;

use super::exec::Exec;
use super::printf::{self, Arg};
use super::{FuncError, FuncResult, GoType, Model, Val};

/// text/template's builtins (`call` and `slice` aside: no template data here has them).
pub(super) const BUILTINS: &[&str] = &[
    "and", "or", "not", "len", "index", "print", "printf", "println", "eq", "ne", "lt", "le", "gt",
    "ge", "urlquery", "html", "js",
];

pub fn truth<M: Model>(model: &M, v: &Val<M::Ext>) -> bool {
    match v {
        Val::Nil => false,
        Val::Bool(b) => *b,
        Val::Int(i) => *i != 0,
        Val::Float(f) => *f != 0.0,
        Val::Str(s) => !s.is_empty(),
        Val::Map(m) => !m.is_empty(),
        Val::Ext(x) => model.truth(x),
    }
}

/// Go's check of a fixed number of arguments.
pub fn arity<X>(name: &str, args: &[Val<X>], n: usize) -> Result<(), FuncError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(FuncError::Args(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        )))
    }
}

fn wrong_type(want: &str, got: &str) -> FuncError {
    FuncError::Args(format!("wrong type for value; expected {want}; got {got}"))
}

/// A Go `string` parameter.
pub fn str_arg<X: GoType>(v: &Val<X>) -> Result<&str, FuncError> {
    match v {
        Val::Str(s) => Ok(s),
        other => Err(wrong_type("string", other.type_name())),
    }
}

/// A Go `int` parameter: integers, and floats without a fraction (untyped constants).
pub fn int_arg<X: GoType>(v: &Val<X>) -> Result<i64, FuncError> {
    match v {
        Val::Int(i) => Ok(*i),
        Val::Float(f) if f.fract() == 0.0 => Ok(*f as i64),
        other => Err(wrong_type("int", other.type_name())),
    }
}

/// Go's `strings.Title`: upper-cases the letter starting each word; ASCII other than letters,
/// digits and `_` separates words, as does Unicode space.
pub fn title<X: GoType>(name: &str, args: &[Val<X>]) -> FuncResult<X> {
    arity(name, args, 1)?;
    let mut out = String::new();
    let mut prev_sep = true;
    for c in str_arg(&args[0])?.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            !c.is_alphanumeric() && c.is_whitespace()
        };
    }
    Ok(Val::Str(out))
}

/// Go's `strings.ToUpper`.
pub fn upper<X: GoType>(name: &str, args: &[Val<X>]) -> FuncResult<X> {
    arity(name, args, 1)?;
    Ok(Val::Str(str_arg(&args[0])?.to_uppercase()))
}

/// Go's `strings.ToLower`.
pub fn lower<X: GoType>(name: &str, args: &[Val<X>]) -> FuncResult<X> {
    arity(name, args, 1)?;
    Ok(Val::Str(str_arg(&args[0])?.to_lowercase()))
}

/// A Go builtin, or None when `name` is the user's.
pub(super) fn builtin<M: Model>(
    ex: &Exec<M>,
    name: &str,
    args: &[Val<M::Ext>],
) -> Option<FuncResult<M::Ext>> {
    let r = match name {
        "not" => arity(name, args, 1).map(|()| Val::Bool(!ex.truth(&args[0]))),
        "len" => len(ex, args),
        "index" => index(ex, args),
        "print" | "println" => Ok(Val::Str(sprint(ex, args, name == "println"))),
        "printf" => printf(ex, args),
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => compare(name, args),
        "urlquery" => Ok(Val::Str(
            form_urlencoded::byte_serialize(sprint(ex, args, false).as_bytes()).collect(),
        )),
        "html" => Ok(Val::Str(html(&sprint(ex, args, false)))),
        "js" => Ok(Val::Str(js(&sprint(ex, args, false)))),
        _ => return None,
    };
    Some(r)
}

fn len<M: Model>(ex: &Exec<M>, args: &[Val<M::Ext>]) -> FuncResult<M::Ext> {
    arity("len", args, 1)?;
    let n = match &args[0] {
        Val::Str(s) => s.len(),
        Val::Map(m) => m.len(),
        Val::Ext(x) => match ex.model.items(x) {
            Some(items) => items.len(),
            None => return Err(format!("len of type {}", args[0].type_name()).into()),
        },
        v => return Err(format!("len of type {}", v.type_name()).into()),
    };
    Ok(Val::Int(n as i64))
}

fn index<M: Model>(ex: &Exec<M>, args: &[Val<M::Ext>]) -> FuncResult<M::Ext> {
    arity("index", args, 2)?;
    match (&args[0], &args[1]) {
        (Val::Map(m), Val::Str(k)) => Ok(Val::Str(m.get(k).cloned().unwrap_or_default())),
        (Val::Ext(x), k) => ex.model.index(x, k),
        (v, _) => Err(format!("can't index item of type {}", v.type_name()).into()),
    }
}

/// Go's `fmt.Sprint` (spaces between operands when neither is a string) or `fmt.Sprintln`.
fn sprint<M: Model>(ex: &Exec<M>, args: &[Val<M::Ext>], ln: bool) -> String {
    let mut s = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = matches!(a, Val::Str(_));
        let prev_str = i > 0 && matches!(args[i - 1], Val::Str(_));
        if i > 0 && (ln || (!is_str && !prev_str)) {
            s.push(' ');
        }
        s.push_str(&ex.print(a));
    }
    if ln {
        s.push('\n');
    }
    s
}

fn printf<M: Model>(ex: &Exec<M>, args: &[Val<M::Ext>]) -> FuncResult<M::Ext> {
    let Some((fmt, rest)) = args.split_first() else {
        return Err(FuncError::Args(
            "wrong number of args for printf: want at least 1 got 0".into(),
        ));
    };
    let fmt = match fmt {
        Val::Str(s) => s,
        other => return Err(wrong_type("string", other.type_name())),
    };
    let rest: Vec<Arg> = rest
        .iter()
        .map(|a| match a {
            Val::Int(i) => Arg::Int(*i),
            Val::Float(f) => Arg::Float(*f),
            Val::Bool(b) => Arg::Bool(*b),
            Val::Str(s) => Arg::Str(s.clone()),
            other => Arg::Other(other.type_name(), ex.print(other)),
        })
        .collect();
    Ok(Val::Str(printf::sprintf(fmt, &rest)?))
}

/// Go's comparison functions: `eq` takes several operands (true if any equals the first);
/// the others take two and refuse booleans and structs.
fn compare<X: PartialEq>(name: &str, args: &[Val<X>]) -> FuncResult<X> {
    if args.len() < 2 {
        return Err("missing argument for comparison".to_owned().into());
    }
    if name == "eq" {
        for b in &args[1..] {
            if equal(&args[0], b)? {
                return Ok(Val::Bool(true));
            }
        }
        return Ok(Val::Bool(false));
    }
    arity(name, args, 2)?;
    if name == "ne" {
        return Ok(Val::Bool(!equal(&args[0], &args[1])?));
    }
    let ord = order(&args[0], &args[1])?;
    Ok(Val::Bool(match name {
        "lt" => ord == Ordering::Less,
        "le" => ord != Ordering::Greater,
        "gt" => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    }))
}

fn incompatible() -> FuncError {
    "incompatible types for comparison".to_owned().into()
}

fn equal<X: PartialEq>(a: &Val<X>, b: &Val<X>) -> Result<bool, FuncError> {
    Ok(match (a, b) {
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Int(x), Val::Int(y)) => x == y,
        (Val::Ext(x), Val::Ext(y)) => x == y,
        (Val::Nil, Val::Nil) => true,
        _ => order(a, b)? == Ordering::Equal,
    })
}

/// Integers compare exactly, strings bytewise. As in Go, an int and a float do not compare
/// (`gt $value 10` is an error in Prometheus too; rule files write `10.0`).
fn order<X>(a: &Val<X>, b: &Val<X>) -> Result<Ordering, FuncError> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Ok(x.cmp(y)),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(y).ok_or_else(incompatible),
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(_), Val::Bool(_)) | (Val::Ext(_), Val::Ext(_)) | (Val::Map(_), Val::Map(_)) => {
            Err("invalid type for comparison".to_owned().into())
        }
        _ => Err(incompatible()),
    }
}

/// Go's `template.HTMLEscapeString`.
fn html(s: &str) -> String {
    escape(s, |c| match c {
        '"' => Some("&#34;".into()),
        '\'' => Some("&#39;".into()),
        '&' => Some("&amp;".into()),
        '<' => Some("&lt;".into()),
        '>' => Some("&gt;".into()),
        '\0' => Some("\u{FFFD}".into()),
        _ => None,
    })
}

/// Go's `template.JSEscapeString`.
fn js(s: &str) -> String {
    escape(s, |c| match c {
        '\\' => Some("\\\\".into()),
        '\'' => Some("\\'".into()),
        '"' => Some("\\\"".into()),
        '<' | '>' | '&' | '=' => Some(format!("\\u{:04X}", c as u32)),
        c if c.is_control() => Some(format!("\\u{:04X}", c as u32)),
        _ => None,
    })
}

fn escape(s: &str, sub: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match sub(c) {
            Some(r) => out.push_str(&r),
            None => out.push(c),
        }
    }
    out
}
