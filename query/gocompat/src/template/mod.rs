//! One engine for Go's text/template, shared by every template novamon renders the Go way:
//! LogQL's `line_format`/`label_format` and the labels and annotations of Prometheus rules.
//! Owns the syntax (actions, pipelines, variables, `if`/`range`/`with`, `{{-`/`-}}`,
//! comments), Go's truthiness and comparison rules, Go's builtin functions and the helpers
//! both users register (`printf`, `title`, …). Each user brings its own data model and function
//! table through [`Model`]; this module knows nothing of logs, rules or queries.

mod exec;
mod funcs;
mod lex;
mod parse;
mod printf;

use std::collections::BTreeMap;

pub use exec::{go_map, print};
pub use funcs::{arity, int_arg, lower, str_arg, title, truth, upper};
pub use printf::{go_e, go_g};

/// A value during execution, with Go's types; `Ext` holds what only one user has.
#[derive(Clone, Debug, PartialEq)]
pub enum Val<X> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A `map[string]string`, such as a label set.
    Map(BTreeMap<String, String>),
    Ext(X),
}

/// A user's value type, named as Go names it in errors (`time.Time`, `*template.sample`).
pub trait GoType {
    fn go_type(&self) -> &'static str;
}

impl<X: GoType> Val<X> {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Nil => "nil",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float64",
            Val::Str(_) => "string",
            Val::Map(_) => "map[string]string",
            Val::Ext(x) => x.go_type(),
        }
    }
}

/// How a function call failed. Go reports bad arguments as they are, and errors the function
/// itself returns as `error calling <name>: …`.
#[derive(Debug)]
pub enum FuncError {
    Args(String),
    Failed(String),
}

impl From<String> for FuncError {
    fn from(e: String) -> Self {
        FuncError::Failed(e)
    }
}

pub type FuncResult<X> = Result<Val<X>, FuncError>;

/// The longest string a template function may build, in bytes. Functions such as `repeat`,
/// `alignLeft` or `printf "%9999999d"` build what their arguments ask for, and those come from
/// queries and rule files: Go would allocate it all, so one template could exhaust the
/// process's memory. 1 MiB is four times Loki's default longest line (`max_line_size`) and
/// far beyond any label or annotation.
pub const MAX_FUNC_OUTPUT: usize = 1 << 20;

/// Refuses a result of `len` bytes past [`MAX_FUNC_OUTPUT`]; functions call it with the size
/// they would build, before building it.
pub fn check_output_len(len: usize) -> Result<(), FuncError> {
    if len > MAX_FUNC_OUTPUT {
        return Err(FuncError::Failed(format!(
            "result of {len} bytes is over the limit of {MAX_FUNC_OUTPUT} bytes"
        )));
    }
    Ok(())
}

/// What `range` visits: (index or key, element) pairs.
pub type Items<X> = Vec<(Val<X>, Val<X>)>;

/// At most the length of a regular-expression replacement's result over a text of `text_len`
/// bytes: each match (of the given lengths) becomes `repl`, in which every `$` reference, when
/// expanded, stands for at most the whole match. For checking with [`check_output_len`] before
/// replacing.
pub fn replaced_len_bound(
    text_len: usize,
    repl: &str,
    expand: bool,
    matches: impl Iterator<Item = usize>,
) -> usize {
    let refs = if expand { repl.matches('$').count() } else { 0 };
    matches.fold(text_len, |n, m| {
        n.saturating_add(repl.len())
            .saturating_add(refs.saturating_mul(m))
    })
}

/// A user's data and functions.
pub trait Model {
    type Ext: Clone + PartialEq + std::fmt::Debug + GoType;

    /// `.` (and `$`) when execution starts.
    fn root(&self) -> Val<Self::Ext>;
    /// Variables defined before the template runs, such as Prometheus's `$labels`.
    fn vars(&self) -> Vec<(String, Val<Self::Ext>)> {
        Vec::new()
    }
    /// `.name` on one of the user's values.
    fn field(&self, v: &Self::Ext, name: &str) -> Result<Val<Self::Ext>, String>;
    /// Go's `fmt.Sprint` of one of the user's values.
    fn print(&self, v: &Self::Ext) -> String;
    /// Go's truthiness: empty slices are false, structs are true.
    fn truth(&self, v: &Self::Ext) -> bool;
    /// The (index, element) pairs `range` visits, for values that are slices.
    fn items(&self, v: &Self::Ext) -> Option<Items<Self::Ext>>;
    /// `index v key` on one of the user's values.
    fn index(&self, v: &Self::Ext, key: &Val<Self::Ext>) -> FuncResult<Self::Ext>;
    /// Calls one of the user's functions (named in its [`Dialect`]).
    fn call(&self, name: &str, args: Vec<Val<Self::Ext>>) -> FuncResult<Self::Ext>;
}

/// What a user's templates may contain.
pub struct Dialect {
    /// The user's functions; Go's builtins are always there.
    pub funcs: &'static [&'static str],
    /// `$x := …`; refused with a parse error where the user does not support them.
    pub variables: bool,
    /// `range` and `with`.
    pub blocks: bool,
}

/// A parsed template, ready to execute many times.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<parse::Node>,
}

impl Template {
    pub fn parse(text: &str, dialect: &Dialect) -> Result<Template, crate::Error> {
        let toks = lex::lex(text, dialect).map_err(crate::Error::TemplateParse)?;
        Ok(Template {
            nodes: parse::parse(&toks, dialect).map_err(crate::Error::TemplateParse)?,
        })
    }

    pub fn execute<M: Model>(&self, model: &M) -> Result<String, crate::Error> {
        exec::execute(&self.nodes, model).map_err(crate::Error::TemplateExecute)
    }
}

#[cfg(test)]
mod tests;
