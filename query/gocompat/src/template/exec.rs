//! Runs a parsed template against a user's [`Model`]: dot and variables, pipelines (the
//! piped value goes last), blocks with their scopes, and Go's way of printing values.

use super::funcs;
use super::parse::{Block, Lit, Node, Operand, Pipeline};
use super::{FuncError, Model, Val};

pub(super) fn execute<M: Model>(nodes: &[Node], model: &M) -> Result<String, String> {
    let root = model.root();
    let mut vars = vec![("$".to_owned(), root.clone())];
    vars.extend(model.vars());
    let mut ex = Exec {
        model,
        vars,
        out: String::new(),
    };
    ex.nodes(nodes, &root)?;
    Ok(ex.out)
}

pub(super) struct Exec<'a, M: Model> {
    pub model: &'a M,
    vars: Vec<(String, Val<M::Ext>)>,
    out: String,
}

fn lit<X>(v: &Lit) -> Val<X> {
    match v {
        Val::Nil | Val::Ext(()) => Val::Nil,
        Val::Bool(b) => Val::Bool(*b),
        Val::Int(i) => Val::Int(*i),
        Val::Float(f) => Val::Float(*f),
        Val::Str(s) => Val::Str(s.clone()),
        Val::Map(m) => Val::Map(m.clone()),
    }
}

impl<M: Model> Exec<'_, M> {
    fn nodes(&mut self, nodes: &[Node], dot: &Val<M::Ext>) -> Result<(), String> {
        for n in nodes {
            self.node(n, dot)?;
        }
        Ok(())
    }

    fn node(&mut self, n: &Node, dot: &Val<M::Ext>) -> Result<(), String> {
        let (kind, p, body, els) = match n {
            Node::Text(t) => {
                self.out.push_str(t);
                return Ok(());
            }
            Node::Action(p) => {
                let v = self.pipeline(p, dot)?;
                if p.decl.is_empty() {
                    let s = self.print(&v);
                    self.out.push_str(&s);
                }
                return Ok(());
            }
            Node::Block(kind, p, body, els) => (kind, p, body, els),
        };
        // Variables declared in a block live until its `{{end}}`.
        let mark = self.vars.len();
        match kind {
            Block::If => {
                let v = self.pipeline(p, dot)?;
                let branch = if self.truth(&v) { body } else { els };
                self.nodes(branch, dot)?;
            }
            Block::With => {
                let v = self.pipeline(p, dot)?;
                if self.truth(&v) {
                    self.nodes(body, &v)?;
                } else {
                    self.nodes(els, dot)?;
                }
            }
            Block::Range => {
                let plain = Pipeline {
                    decl: Vec::new(),
                    assign: false,
                    cmds: p.cmds.clone(),
                };
                let v = self.pipeline(&plain, dot)?;
                let items = match v {
                    Val::Map(m) => m
                        .into_iter()
                        .map(|(k, v)| (Val::Str(k), Val::Str(v)))
                        .collect(),
                    Val::Nil => Vec::new(),
                    Val::Ext(x) => self.model.items(&x).ok_or_else(|| {
                        format!("range can't iterate over {}", self.model.print(&x))
                    })?,
                    other => {
                        return Err(format!("range can't iterate over {}", self.print(&other)))
                    }
                };
                if items.is_empty() {
                    self.nodes(els, dot)?;
                }
                for (k, item) in items {
                    let inner = self.vars.len();
                    match p.decl.as_slice() {
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
            }
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Val<M::Ext>) -> Result<Val<M::Ext>, String> {
        let mut prev = None;
        for cmd in &p.cmds {
            prev = Some(self.command(cmd, dot, prev)?);
        }
        let v = prev.unwrap_or(Val::Nil);
        if let Some(name) = p.decl.first() {
            if p.assign {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| format!("undefined variable: {name}"))?;
                slot.1 = v.clone();
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn command(
        &mut self,
        cmd: &[Operand],
        dot: &Val<M::Ext>,
        piped: Option<Val<M::Ext>>,
    ) -> Result<Val<M::Ext>, String> {
        let Some(first) = cmd.first() else {
            return Err("empty command".into());
        };
        let Operand::Func(name) = first else {
            if cmd.len() > 1 || piped.is_some() {
                return Err(format!("can't give argument to non-function {first:?}"));
            }
            return self.operand(first, dot);
        };
        if name == "and" || name == "or" {
            return self.and_or(name, &cmd[1..], dot, piped);
        }
        let mut args = Vec::with_capacity(cmd.len());
        for a in &cmd[1..] {
            args.push(self.operand(a, dot)?);
        }
        args.extend(piped);
        self.call(name, args)
    }

    /// Go evaluates the arguments of `and` and `or` only until the answer is known.
    fn and_or(
        &mut self,
        name: &str,
        ops: &[Operand],
        dot: &Val<M::Ext>,
        piped: Option<Val<M::Ext>>,
    ) -> Result<Val<M::Ext>, String> {
        let n = ops.len() + usize::from(piped.is_some());
        if n == 0 {
            return Err(format!(
                "wrong number of args for {name}: want at least 1 got 0"
            ));
        }
        let mut piped = piped;
        for i in 0..n {
            let v = match ops.get(i) {
                Some(op) => self.operand(op, dot)?,
                None => piped.take().unwrap_or(Val::Nil),
            };
            if i + 1 == n || self.truth(&v) == (name == "or") {
                return Ok(v);
            }
        }
        Ok(Val::Nil)
    }

    fn operand(&mut self, op: &Operand, dot: &Val<M::Ext>) -> Result<Val<M::Ext>, String> {
        match op {
            Operand::Lit(v) => Ok(lit(v)),
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

    fn fields(&self, mut v: Val<M::Ext>, fields: &[String]) -> Result<Val<M::Ext>, String> {
        for f in fields {
            v = match &v {
                // missingkey=zero, as Prometheus and Loki read labels: an absent one is "".
                Val::Map(m) => Val::Str(m.get(f).cloned().unwrap_or_default()),
                Val::Ext(x) => self.model.field(x, f)?,
                Val::Nil => Val::Nil,
                other => {
                    return Err(format!(
                        "can't evaluate field {f} in type {}",
                        other.type_name()
                    ))
                }
            };
        }
        Ok(v)
    }

    fn call(&mut self, name: &str, args: Vec<Val<M::Ext>>) -> Result<Val<M::Ext>, String> {
        let res = match funcs::builtin(self, name, &args) {
            Some(r) => r,
            None => self.model.call(name, args),
        };
        res.map_err(|e| match e {
            FuncError::Args(e) => e,
            FuncError::Failed(e) => format!("error calling {name}: {e}"),
        })
    }

    /// Go's `fmt.Sprint` of a value, as text/template prints it.
    pub fn print(&self, v: &Val<M::Ext>) -> String {
        print(self.model, v)
    }

    /// Go's truthiness: zero values and empty collections are false.
    pub fn truth(&self, v: &Val<M::Ext>) -> bool {
        funcs::truth(self.model, v)
    }
}

/// How Go prints a `map[string]string`: `map[a:1 b:2]`, keys sorted.
pub fn go_map(m: &std::collections::BTreeMap<String, String>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("map[{}]", items.join(" "))
}

/// Go's `fmt.Sprint` of a value, as text/template prints it.
pub fn print<M: Model>(model: &M, v: &Val<M::Ext>) -> String {
    match v {
        Val::Nil => "<no value>".to_owned(),
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Float(f) => crate::fmt::shortest(*f),
        Val::Str(s) => s.clone(),
        Val::Map(m) => go_map(m),
        Val::Ext(x) => model.print(x),
    }
}
