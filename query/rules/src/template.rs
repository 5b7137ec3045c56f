//! The functions and data of alert label and annotation templates: Prometheus's functions
//! (`humanize`, `query`, `first`, …) over its data (`$labels`, `$value`, `$externalLabels`,
//! `.Labels`, …). The Go template language itself is `gocompat::template`'s; queries are run
//! through a callback so this module knows nothing of the engine.

use std::collections::BTreeMap;

use super::printf;
use gocompat::template::{
    self as gotemplate, arity, Dialect, FuncError, FuncResult, GoType, Model,
};

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

/// Values only rule templates have.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ext {
    Sample(QuerySample),
    Samples(Vec<QuerySample>),
    /// The template's root (`.`): Prometheus's data struct.
    Root,
}

type Val = gotemplate::Val<Ext>;

impl GoType for Ext {
    fn go_type(&self) -> &'static str {
        match self {
            Ext::Sample(_) => "*template.sample",
            Ext::Samples(_) => "template.queryResult",
            Ext::Root => "*template.tmplData",
        }
    }
}

/// A parsed template, ready to expand many times.
#[derive(Clone, Debug)]
pub(crate) struct Template(gotemplate::Template);

const DIALECT: Dialect = Dialect {
    funcs: FUNCTIONS,
    variables: true,
    blocks: true,
};

impl Template {
    /// Parses `text`; `name` appears in errors as Go's template name does.
    pub(crate) fn parse(name: &str, text: &str) -> Result<Template, String> {
        // Go names the line of the error; templates of labels and annotations are one line
        // as a rule, so the first is named.
        gotemplate::Template::parse(text, &DIALECT)
            .map(Template)
            .map_err(|e| format!("template: {name}:1: {e}"))
    }

    pub(crate) fn expand(&self, data: &Data, query: QueryFn) -> Result<String, String> {
        self.0
            .execute(&Rules { data, query })
            .map_err(|e| e.to_string())
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

/// Prometheus's functions beyond Go's builtins.
const FUNCTIONS: &[&str] = &[
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

struct Rules<'a> {
    data: &'a Data<'a>,
    query: QueryFn<'a>,
}

impl Model for Rules<'_> {
    type Ext = Ext;

    fn root(&self) -> Val {
        Val::Ext(Ext::Root)
    }

    /// Prometheus prepends `{{$labels := .Labels}}` and the like to every template.
    fn vars(&self) -> Vec<(String, Val)> {
        vec![
            ("$labels".to_owned(), Val::Map(self.data.labels.clone())),
            (
                "$externalLabels".to_owned(),
                Val::Map(self.data.external_labels.clone()),
            ),
            (
                "$externalURL".to_owned(),
                Val::Str(self.data.external_url.to_owned()),
            ),
            ("$value".to_owned(), Val::Float(self.data.value)),
        ]
    }

    fn field(&self, v: &Ext, f: &str) -> Result<Val, String> {
        Ok(match (v, f) {
            (Ext::Root, "Labels") => Val::Map(self.data.labels.clone()),
            (Ext::Root, "ExternalLabels") => Val::Map(self.data.external_labels.clone()),
            (Ext::Root, "ExternalURL") => Val::Str(self.data.external_url.to_owned()),
            (Ext::Root, "Value") => Val::Float(self.data.value),
            (Ext::Sample(s), "Labels") => Val::Map(s.labels.clone()),
            (Ext::Sample(s), "Value") => Val::Float(s.value),
            _ => return Err(format!("can't evaluate field {f} in type {}", v.go_type())),
        })
    }

    fn print(&self, v: &Ext) -> String {
        match v {
            Ext::Sample(s) => format!(
                "{{{} {}}}",
                gotemplate::go_map(&s.labels),
                gocompat::fmt::shortest(s.value)
            ),
            Ext::Samples(ss) => {
                let items: Vec<String> = ss
                    .iter()
                    .map(|s| self.print(&Ext::Sample(s.clone())))
                    .collect();
                format!("[{}]", items.join(" "))
            }
            Ext::Root => format!(
                "{{{} {} {} {}}}",
                gotemplate::go_map(self.data.labels),
                gotemplate::go_map(self.data.external_labels),
                self.data.external_url,
                gocompat::fmt::shortest(self.data.value)
            ),
        }
    }

    fn truth(&self, v: &Ext) -> bool {
        match v {
            Ext::Samples(s) => !s.is_empty(),
            Ext::Sample(_) | Ext::Root => true,
        }
    }

    fn items(&self, v: &Ext) -> Option<Vec<(Val, Val)>> {
        match v {
            Ext::Samples(s) => Some(
                s.iter()
                    .enumerate()
                    .map(|(i, s)| (Val::Int(i as i64), Val::Ext(Ext::Sample(s.clone()))))
                    .collect(),
            ),
            Ext::Sample(_) | Ext::Root => None,
        }
    }

    fn index(&self, v: &Ext, key: &Val) -> FuncResult<Ext> {
        match (v, key) {
            (Ext::Samples(s), Val::Int(i)) => usize::try_from(*i)
                .ok()
                .and_then(|i| s.get(i))
                .map(|s| Val::Ext(Ext::Sample(s.clone())))
                .ok_or_else(|| format!("index out of range: {i}").into()),
            _ => Err(format!("can't index item of type {}", v.go_type()).into()),
        }
    }

    fn call(&self, name: &str, args: Vec<Val>) -> FuncResult<Ext> {
        let want = |n: usize| arity(name, &args, n);
        Ok(match name {
            "query" => {
                want(1)?;
                let q = self.sprint(&args[0]);
                Val::Ext(Ext::Samples((self.query)(&q)?))
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    Val::Ext(Ext::Samples(s)) => {
                        Val::Ext(Ext::Sample(s.first().cloned().ok_or_else(|| {
                            "first() called on vector with no elements".to_owned()
                        })?))
                    }
                    v => {
                        return Err(FuncError::Args(format!(
                            "wrong type for value; expected template.queryResult; got {}",
                            v.type_name()
                        )))
                    }
                }
            }
            "label" => {
                want(2)?;
                match &args[1] {
                    Val::Ext(Ext::Sample(s)) => Val::Str(
                        s.labels
                            .get(&self.sprint(&args[0]))
                            .cloned()
                            .unwrap_or_default(),
                    ),
                    v => {
                        return Err(FuncError::Args(format!(
                            "wrong type for value; expected *template.sample; got {}",
                            v.type_name()
                        )))
                    }
                }
            }
            "value" => {
                want(1)?;
                match &args[0] {
                    Val::Ext(Ext::Sample(s)) => Val::Float(s.value),
                    v => {
                        return Err(FuncError::Args(format!(
                            "wrong type for value; expected *template.sample; got {}",
                            v.type_name()
                        )))
                    }
                }
            }
            "strvalue" => {
                want(1)?;
                match &args[0] {
                    Val::Ext(Ext::Sample(s)) => {
                        Val::Str(s.labels.get("__value__").cloned().unwrap_or_default())
                    }
                    _ => Val::Str(String::new()),
                }
            }
            "args" => Val::Map(
                args.iter()
                    .enumerate()
                    .map(|(i, a)| (format!("arg{i}"), self.sprint(a)))
                    .collect(),
            ),
            "reReplaceAll" => {
                want(3)?;
                let re = regex::Regex::new(&self.sprint(&args[0])).map_err(|e| e.to_string())?;
                let (text, repl) = (self.sprint(&args[2]), self.sprint(&args[1]));
                let matches = re.find_iter(&text).map(|m| m.len());
                gotemplate::check_output_len(gotemplate::replaced_len_bound(
                    text.len(),
                    &repl,
                    true,
                    matches,
                ))?;
                Val::Str(re.replace_all(&text, repl.as_str()).into_owned())
            }
            "match" => {
                want(2)?;
                let re = regex::Regex::new(&self.sprint(&args[0])).map_err(|e| e.to_string())?;
                Val::Bool(re.is_match(&self.sprint(&args[1])))
            }
            "title" => return gotemplate::title(name, &args),
            "toUpper" => return gotemplate::upper(name, &args),
            "toLower" => return gotemplate::lower(name, &args),
            "stripPort" => {
                want(1)?;
                let s = self.sprint(&args[0]);
                Val::Str(strip_port(&s).to_owned())
            }
            "stripDomain" => {
                want(1)?;
                let s = self.sprint(&args[0]);
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
                Val::Str(printf::humanize(to_float(&args[0])?))
            }
            "humanize1024" => {
                want(1)?;
                Val::Str(printf::humanize1024(to_float(&args[0])?))
            }
            "humanizeDuration" => {
                want(1)?;
                Val::Str(printf::humanize_duration(to_float(&args[0])?))
            }
            "humanizePercentage" => {
                want(1)?;
                Val::Str(format!(
                    "{}%",
                    gotemplate::go_g(to_float(&args[0])? * 100.0, 4)
                ))
            }
            "humanizeTimestamp" => {
                want(1)?;
                Val::Str(printf::humanize_timestamp(to_float(&args[0])?)?)
            }
            "toTime" => {
                want(1)?;
                Val::Str(printf::humanize_timestamp(to_float(&args[0])?)?)
            }
            "toDuration" | "parseDuration" => {
                want(1)?;
                let secs = if name == "parseDuration" {
                    let s = self.sprint(&args[0]);
                    gocompat::units::parse_prometheus_duration(&s)
                        .map_err(|e| e.to_string())?
                        .as_secs_f64()
                } else {
                    to_float(&args[0])?
                };
                Val::Float(secs)
            }
            "safeHtml" => {
                want(1)?;
                Val::Str(self.sprint(&args[0]))
            }
            "pathPrefix" => Val::Str(String::new()),
            "externalURL" => Val::Str(self.data.external_url.to_owned()),
            "graphLink" | "tableLink" => {
                want(1)?;
                let expr: String =
                    form_urlencoded::byte_serialize(self.sprint(&args[0]).as_bytes()).collect();
                let tab = if name == "graphLink" { 0 } else { 1 };
                Val::Str(format!("/graph?g0.expr={expr}&g0.tab={tab}"))
            }
            "sortByLabel" => {
                want(2)?;
                let label = self.sprint(&args[0]);
                match &args[1] {
                    Val::Ext(Ext::Samples(s)) => {
                        let mut s = s.clone();
                        s.sort_by(|a, b| a.labels.get(&label).cmp(&b.labels.get(&label)));
                        Val::Ext(Ext::Samples(s))
                    }
                    v => return Err(format!("wrong type {}", v.type_name()).into()),
                }
            }
            _ => return Err(format!("function {name:?} not defined").into()),
        })
    }
}

impl Rules<'_> {
    fn sprint(&self, v: &Val) -> String {
        gotemplate::print(self, v)
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
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
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
        let t = "{{ if gt $value 10.0 }}high{{ else if gt $value 5.0 }}mid{{ else }}low{{ end }}";
        assert_eq!(run(t, &[], 11.0), "high");
        assert_eq!(run(t, &[], 6.0), "mid");
        assert_eq!(run(t, &[], 1.0), "low");
        // $value is a float: Go refuses to compare it with an int literal.
        assert!(run("{{ if gt $value 5 }}x{{ end }}", &[], 6.0)
            .contains("error calling gt: incompatible types for comparison"));
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

    #[test]
    fn amplifying_templates_fail_instead_of_allocating() {
        let l = [("instance", "host:9100")];
        // `$0` a hundred thousand times over each of the 9 characters: 900 KB of references
        // per character, far past the limit once expanded.
        let t = format!(
            r#"{{{{ reReplaceAll "." "{}" $labels.instance }}}}"#,
            "$0".repeat(100_000)
        );
        let out = run(&t, &l, 0.0);
        assert!(
            out.contains("error calling reReplaceAll: result of "),
            "{}",
            &out[..out.len().min(200)]
        );
        assert!(run(r#"{{ printf "%9999999d" 1 }}"#, &l, 0.0)
            .contains("error calling printf: result of "));
        assert_eq!(
            run(
                r#"{{ reReplaceAll "(h)" "$1$1" $labels.instance }}"#,
                &l,
                0.0
            ),
            "hhost:9100"
        );
    }
}
