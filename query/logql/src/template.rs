//! The functions and data of `line_format` and `label_format` templates: the ones Loki
//! registers (its own — `__line__`, `__timestamp__`, `alignLeft`, `bytes`, … — and the sprig
//! and Go ones it picks), over the entry's labels (`.name`, missing = ""). The Go template
//! language itself is `gocompat::template`'s; this module knows nothing of pipelines or storage.
//!
//! Not supported: variables (`$x :=`), `range`/`with`/`define`, and functions that return maps
//! (`fromJson`); using them is a parse error, not a silent difference.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Timelike, Utc};
use regex::Regex;

use crate::LabelMap;
use gocompat::template::{
    self as gotemplate, arity, check_output_len, int_arg, str_arg, Dialect, FuncError, FuncResult,
    GoType, Model,
};
use gocompat::units::{parse_bytes, parse_go_duration};

/// What a template reads: the entry's labels, line and time.
pub(crate) struct Entry<'a> {
    pub labels: &'a LabelMap,
    pub line: &'a str,
    pub ts_ns: i64,
}

/// A parsed template; rendering errors are Go's execution errors, e.g. a wrong argument.
#[derive(Clone, Debug)]
pub(crate) struct Template(gotemplate::Template);

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        gotemplate::Template::parse(text, &DIALECT)
            .map(Template)
            .map_err(|e| e.to_string())
    }

    pub(crate) fn render(&self, e: &Entry) -> Result<String, String> {
        self.0.execute(e).map_err(|e| e.to_string())
    }
}

const DIALECT: Dialect = Dialect {
    funcs: FUNCS,
    variables: false,
    blocks: false,
};

/// Loki's functions beyond Go's builtins.
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
];

/// Values only log templates have.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ext {
    /// `.`: the entry's labels, read in place rather than copied for every line.
    Labels,
    /// A time.Time, as nanoseconds since the epoch (shown in UTC).
    Time(i64),
}

type Val = gotemplate::Val<Ext>;

impl GoType for Ext {
    fn go_type(&self) -> &'static str {
        match self {
            Ext::Labels => "map[string]string",
            Ext::Time(_) => "time.Time",
        }
    }
}

impl Model for Entry<'_> {
    type Ext = Ext;

    fn root(&self) -> Val {
        Val::Ext(Ext::Labels)
    }

    fn field(&self, v: &Ext, name: &str) -> Result<Val, String> {
        match v {
            Ext::Labels => Ok(Val::Str(self.labels.get(name).cloned().unwrap_or_default())),
            Ext::Time(_) => Err(format!("can't evaluate field {name} in type time.Time")),
        }
    }

    fn print(&self, v: &Ext) -> String {
        match v {
            Ext::Labels => gotemplate::go_map(self.labels),
            Ext::Time(ns) => go_time_string(*ns),
        }
    }

    fn truth(&self, v: &Ext) -> bool {
        match v {
            Ext::Labels => !self.labels.is_empty(),
            Ext::Time(_) => true,
        }
    }

    fn items(&self, v: &Ext) -> Option<Vec<(Val, Val)>> {
        match v {
            Ext::Labels => Some(
                self.labels
                    .iter()
                    .map(|(k, v)| (Val::Str(k.clone()), Val::Str(v.clone())))
                    .collect(),
            ),
            Ext::Time(_) => None,
        }
    }

    fn index(&self, v: &Ext, key: &Val) -> FuncResult<Ext> {
        match (v, key) {
            (Ext::Labels, Val::Str(k)) => {
                Ok(Val::Str(self.labels.get(k).cloned().unwrap_or_default()))
            }
            _ => Err(format!("can't index item of type {}", v.go_type()).into()),
        }
    }

    fn call(&self, name: &str, args: Vec<Val>) -> FuncResult<Ext> {
        call(name, args, self)
    }
}

/// sprig's cast.ToInt64 / ToFloat64: strings are parsed, unparseable ones are 0.
fn to_f64(v: &Val) -> f64 {
    match v {
        Val::Str(s) => s.trim().parse().unwrap_or(0.0),
        Val::Int(i) => *i as f64,
        Val::Float(f) => *f,
        Val::Bool(b) => f64::from(u8::from(*b)),
        Val::Ext(Ext::Time(ns)) => *ns as f64,
        Val::Nil | Val::Map(_) | Val::Ext(Ext::Labels) => 0.0,
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

fn time_arg(v: &Val) -> Result<i64, FuncError> {
    match v {
        Val::Ext(Ext::Time(ns)) => Ok(*ns),
        // sprig's date also takes Unix seconds.
        Val::Int(s) => Ok(s.saturating_mul(1_000_000_000)),
        other => Err(FuncError::Args(format!(
            "wrong type for value; expected time.Time; got {}",
            other.type_name()
        ))),
    }
}

/// A count argument (`repeat`, `indent`): negative counts as zero.
fn count_arg(v: &Val) -> Result<usize, FuncError> {
    Ok(usize::try_from(int_arg(v)?.max(0)).unwrap_or(usize::MAX))
}

/// At most the length of `src` with up to `n` occurrences of `from` replaced by `to` (an empty
/// `from` matches before every character and at the end, as Go's strings.Replace has it).
fn replaced_len(src: &str, from: &str, to: &str, n: usize) -> usize {
    let count = if from.is_empty() {
        src.chars().count() + 1
    } else {
        src.matches(from).count()
    };
    src.len()
        .saturating_add(count.min(n).saturating_mul(to.len()))
}

fn call(name: &str, args: Vec<Val>, e: &Entry) -> FuncResult<Ext> {
    let fixed = match name {
        "__line__" | "__timestamp__" | "now" => 0,
        "ToLower" | "ToUpper" | "lower" | "upper" | "title" | "Title" | "trim" | "TrimSpace"
        | "unixEpoch" | "unixEpochMillis" | "unixEpochNanos" | "unixToTime" | "duration"
        | "duration_seconds" | "bytes" | "ceil" | "floor" | "int" | "float64" => 1,
        "trunc" | "trimAll" | "trimPrefix" | "trimSuffix" | "Trim" | "TrimLeft" | "TrimRight"
        | "TrimPrefix" | "TrimSuffix" | "contains" | "hasPrefix" | "hasSuffix" | "count"
        | "repeat" | "indent" | "nindent" | "default" | "alignLeft" | "alignRight" | "toDate"
        | "date" | "add" | "sub" | "mul" | "div" | "mod" | "addf" | "subf" | "mulf" | "divf"
        | "max" | "min" | "maxf" | "minf" | "round" => 2,
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
        "__timestamp__" => Val::Ext(Ext::Time(e.ts_ns)),
        "now" => Val::Ext(Ext::Time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
        )),
        "ToLower" | "lower" => return gotemplate::lower(name, &args),
        "ToUpper" | "upper" => return gotemplate::upper(name, &args),
        "title" | "Title" => return gotemplate::title(name, &args),
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
        "replace" => {
            let (src, from, to) = (s(2)?, s(0)?, s(1)?);
            check_output_len(replaced_len(src, from, to, usize::MAX))?;
            Val::Str(src.replace(from, to))
        }
        "Replace" => {
            let n = int_arg(&args[3])?;
            let (src, from, to) = (s(0)?, s(1)?, s(2)?);
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            check_output_len(replaced_len(src, from, to, n))?;
            Val::Str(src.replacen(from, to, n))
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            let re = Regex::new(s(0)?).map_err(|e| format!("error parsing regexp: {e}"))?;
            let (src, repl) = (s(1)?, s(2)?);
            let expand = name == "regexReplaceAll";
            let matches = re.find_iter(src).map(|m| m.len());
            check_output_len(gotemplate::replaced_len_bound(
                src.len(),
                repl,
                expand,
                matches,
            ))?;
            let out = if expand {
                re.replace_all(src, repl)
            } else {
                re.replace_all(src, regex::NoExpand(repl))
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
        "repeat" => {
            let (n, src) = (count_arg(&args[0])?, s(1)?);
            check_output_len(n.saturating_mul(src.len()))?;
            Val::Str(src.repeat(n))
        }
        "indent" | "nindent" => {
            let (n, src) = (count_arg(&args[0])?, s(1)?);
            let lines = src.matches('\n').count() + 1;
            check_output_len(src.len().saturating_add(n.saturating_mul(lines)) + 1)?;
            let pad = " ".repeat(n);
            let body = format!("{pad}{}", s(1)?.replace('\n', &format!("\n{pad}")));
            Val::Str(if name == "nindent" {
                format!("\n{body}")
            } else {
                body
            })
        }
        "default" => {
            if gotemplate::truth(e, &args[1]) {
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
                let pad_len = usize::try_from(n - l).unwrap_or(usize::MAX);
                check_output_len(src.len().saturating_add(pad_len))?;
                let pad = " ".repeat(pad_len);
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
        "unixEpoch" => Val::Int(time_arg(&args[0])?.div_euclid(1_000_000_000)),
        "unixEpochMillis" => Val::Int(time_arg(&args[0])?.div_euclid(1_000_000)),
        "unixEpochNanos" => Val::Int(time_arg(&args[0])?),
        "unixToTime" => {
            let digits = s(0)?;
            let n: i64 = digits
                .parse()
                .map_err(|_| format!("unable to parse {digits:?} as a unix epoch"))?;
            Val::Ext(Ext::Time(match digits.trim_start_matches('-').len() {
                0..=10 => n.saturating_mul(1_000_000_000),
                11..=13 => n.saturating_mul(1_000_000),
                14..=16 => n.saturating_mul(1_000),
                _ => n,
            }))
        }
        "date" => Val::Str(go_format(s(0)?, time_arg(&args[1])?)),
        "toDate" => Val::Ext(Ext::Time(go_parse(s(0)?, s(1)?).unwrap_or(0))),
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
                return Err("runtime error: integer divide by zero".to_owned().into());
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
        other => return Err(format!("function {other:?} not defined").into()),
    })
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

    #[test]
    fn amplifying_functions_fail_instead_of_allocating() {
        // Each would build gigabytes to terabytes; Go allocates, Loki's process dies.
        for (t, func) in [
            (r#"{{ repeat 1000000000000 "a" }}"#, "repeat"),
            (r#"{{ repeat 2000000 "ab" }}"#, "repeat"),
            (r#"{{ alignLeft 100000000000 .app }}"#, "alignLeft"),
            (r#"{{ alignRight 100000000000 .app }}"#, "alignRight"),
            (r#"{{ indent 100000000000 .app }}"#, "indent"),
            (r#"{{ nindent 100000000000 .app }}"#, "nindent"),
            (r#"{{ printf "%9999999d" 1 }}"#, "printf"),
            (r#"{{ printf "%.9999999f" 1.0 }}"#, "printf"),
            (r#"{{ replace "" (repeat 1000000 "x") .path }}"#, "replace"),
            (
                r#"{{ Replace .path "/" (repeat 1000000 "x") -1 }}"#,
                "Replace",
            ),
            (
                r#"{{ regexReplaceAll "." .path (repeat 100000 "$0") }}"#,
                "regexReplaceAll",
            ),
            (
                r#"{{ regexReplaceAllLiteral "." .path (repeat 100000 "x") }}"#,
                "regexReplaceAllLiteral",
            ),
        ] {
            let err = run(t).unwrap_err();
            assert!(
                err.contains(&format!("error calling {func}: result of ")),
                "{t}: {err}"
            );
        }
        // Up to the limit they still work.
        let max = gotemplate::MAX_FUNC_OUTPUT;
        assert_eq!(ok(&format!(r#"{{{{ repeat {max} "a" }}}}"#)).len(), max);
        assert_eq!(ok(&format!("{{{{ alignLeft {max} .app }}}}")).len(), max);
        // Go's fmt gives up on a width past ten million, swallowing the rest of the format.
        assert_eq!(
            ok(r#"{{ printf "%0100000000d|%d" 1 2 }}"#),
            "%!(NOVERB)%!(EXTRA int=1, int=2)"
        );
    }
}
