//! The Go semantics the two former engines disagreed on (or neither had), checked against
//! what Go's text/template does, over a small model: `.` is a map with a list under `.items`.

use std::collections::BTreeMap;

use super::*;

#[derive(Clone, Debug, PartialEq)]
enum Ext {
    Root,
    List(Vec<i64>),
}

impl GoType for Ext {
    fn go_type(&self) -> &'static str {
        match self {
            Ext::Root => "main.data",
            Ext::List(_) => "[]int",
        }
    }
}

struct Data {
    labels: BTreeMap<String, String>,
    items: Vec<i64>,
}

impl Model for Data {
    type Ext = Ext;

    fn root(&self) -> Val<Ext> {
        Val::Ext(Ext::Root)
    }

    fn field(&self, v: &Ext, name: &str) -> Result<Val<Ext>, String> {
        match (v, name) {
            (Ext::Root, "items") => Ok(Val::Ext(Ext::List(self.items.clone()))),
            (Ext::Root, "labels") => Ok(Val::Map(self.labels.clone())),
            _ => Err(format!(
                "can't evaluate field {name} in type {}",
                v.go_type()
            )),
        }
    }

    fn print(&self, v: &Ext) -> String {
        match v {
            Ext::Root => "{}".to_owned(),
            Ext::List(l) => format!("{l:?}").replace(',', ""),
        }
    }

    fn truth(&self, v: &Ext) -> bool {
        match v {
            Ext::Root => true,
            Ext::List(l) => !l.is_empty(),
        }
    }

    fn items(&self, v: &Ext) -> Option<Vec<(Val<Ext>, Val<Ext>)>> {
        match v {
            Ext::Root => None,
            Ext::List(l) => Some(
                l.iter()
                    .enumerate()
                    .map(|(i, x)| (Val::Int(i as i64), Val::Int(*x)))
                    .collect(),
            ),
        }
    }

    fn index(&self, v: &Ext, _key: &Val<Ext>) -> FuncResult<Ext> {
        Err(format!("can't index item of type {}", v.go_type()).into())
    }

    fn call(&self, name: &str, args: Vec<Val<Ext>>) -> FuncResult<Ext> {
        match name {
            "title" => title(name, &args),
            "boom" => Err("boom".to_owned().into()),
            _ => Err(format!("function {name:?} not defined").into()),
        }
    }
}

const FULL: Dialect = Dialect {
    funcs: &["title", "boom"],
    variables: true,
    blocks: true,
};

fn run(t: &str) -> Result<String, String> {
    let data = Data {
        labels: BTreeMap::from([("job".to_owned(), "node".to_owned())]),
        items: vec![3, 1],
    };
    Template::parse(t, &FULL)
        .and_then(|t| t.execute(&data))
        .map_err(|e| e.to_string())
}

/// Asserts the output of each template, as Go's text/template renders it.
fn check(cases: &[(&str, &str)]) {
    for (t, want) in cases {
        assert_eq!(run(t).as_deref(), Ok(*want), "{t}");
    }
}

fn fails(t: &str, want: &str) {
    let err = run(t).unwrap_err();
    assert!(err.contains(want), "{t}: {err}");
}

#[test]
fn assignment_changes_the_outer_variable() {
    check(&[
        // Go: `=` assigns to the variable in scope, so the change outlives the `if`;
        // `:=` inside the block declares a new one that ends with it.
        (
            "{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}",
            "2",
        ),
        (
            "{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ end }}{{ $x }}",
            "1",
        ),
    ]);
    fails("{{ $y = 2 }}", "undefined variable");
}

#[test]
fn and_or_are_variadic_and_stop_early() {
    check(&[
        (
            "{{ and 1 2 3 }} {{ and 1 0 3 }} {{ or 0 \"\" 5 }} {{ or 0 }}",
            "3 0 5 0",
        ),
        // Go does not evaluate the arguments after the answer is known.
        ("{{ or 1 (boom) }} {{ and 0 (boom) }}", "1 0"),
    ]);
    fails("{{ and 1 (boom) }}", "error calling boom: boom");
}

#[test]
fn comparisons_follow_go() {
    check(&[
        ("{{ eq 2 1 2 }} {{ eq \"a\" \"b\" \"c\" }}", "true false"),
        ("{{ ne true false }} {{ eq true true }}", "true true"),
        // Integers compare exactly, not through float64.
        ("{{ lt 9007199254740992 9007199254740993 }}", "true"),
    ]);
    fails("{{ lt true false }}", "invalid type for comparison");
    fails("{{ eq 1 \"1\" }}", "incompatible types for comparison");
}

#[test]
fn title_treats_ascii_punctuation_as_a_separator() {
    // Go's strings.Title, as promtool renders it.
    check(&[("{{ title \"it's o'neil x_y\" }}", "It'S O'Neil X_y")]);
}

#[test]
fn literals_are_read_as_go_reads_them() {
    check(&[
        (r#"{{ "a\x41\u00e9\101\tb" }}"#, "aAéA\tb"),
        (
            "{{ 0x1F }} {{ 1_000 }} {{ 0b101 }} {{ 1e3 }}",
            "31 1000 5 1000",
        ),
    ]);
    fails(r#"{{ "\'" }}"#, "invalid syntax");
}

#[test]
fn trim_markers_take_any_go_space() {
    check(&[
        ("a \n\t{{-\t1\n-}}\r\n b", "a1b"),
        // Without a space the dash belongs to a number.
        ("{{-3}}", "-3"),
    ]);
}

#[test]
fn range_with_len_index_and_escapers() {
    check(&[
        (
            "{{ range $i, $v := .items }}{{ $i }}={{ $v }};{{ end }}",
            "0=3;1=1;",
        ),
        ("{{ range .labels }}{{ . }}{{ end }}", "node"),
        (
            "{{ len .items }} {{ len .labels }} {{ index .labels \"job\" }}",
            "2 1 node",
        ),
        ("{{ with .items }}{{ len . }}{{ end }}", "2"),
        (
            r#"{{ html "<a href='x'>&</a>" }}"#,
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;",
        ),
        (r#"{{ js "it's <b>" }}"#, r"it\'s \u003Cb\u003E"),
        (r#"{{ print 1 2 "a" "b" 3 }}"#, "1 2ab3"),
        (
            r#"{{ printf "%q|%s" "it's\x01" .labels }}"#,
            r#""it's\x01"|map[job:node]"#,
        ),
    ]);
    fails("{{ len 3 }}", "error calling len: len of type int");
}

#[test]
fn printf_checks_its_format_argument() {
    fails(
        "{{ printf }}",
        "wrong number of args for printf: want at least 1 got 0",
    );
    fails(
        "{{ printf 1 }}",
        "wrong type for value; expected string; got int",
    );
}

#[test]
fn unsupported_syntax_is_a_parse_error() {
    let logs = Dialect {
        funcs: &[],
        variables: false,
        blocks: false,
    };
    assert!(Template::parse("{{ $x := 1 }}", &logs)
        .unwrap_err()
        .to_string()
        .contains("variables are not supported"));
    assert!(Template::parse("{{ with 1 }}{{ end }}", &logs)
        .unwrap_err()
        .to_string()
        .contains("{{with}} is not supported"));
    assert!(Template::parse("{{ define \"x\" }}{{ end }}", &FULL)
        .unwrap_err()
        .to_string()
        .contains("{{define}} is not supported"));
    assert!(Template::parse("{{/* open", &FULL).is_err());
}

/// Runs `f` on a thread with the 2 MiB stack queries and rule evaluations get in the server,
/// so a stack overflow fails the test instead of passing by a bigger test stack.
fn on_small_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn_scoped(s, f)
            .unwrap()
            .join()
            .unwrap()
    })
}

fn nested(open: &str, inner: &str, close: &str, times: usize) -> String {
    format!("{}{inner}{}", open.repeat(times), close.repeat(times))
}

#[test]
fn deep_nesting_is_a_parse_error_not_a_stack_overflow() {
    for t in [
        nested("{{ if true }}", "x", "{{ end }}", 20_000),
        format!("{{{{ {} }}}}", nested("(print ", "1", ")", 20_000)),
        format!(
            "{{{{ if false }}}}{}{{{{ end }}}}",
            "{{ else if false }}".repeat(20_000)
        ),
    ] {
        let err = on_small_stack(|| run(&t)).unwrap_err();
        assert!(err.contains("max expression depth exceeded"), "{err}");
    }
}

#[test]
fn nesting_at_the_limit_executes_on_a_small_stack() {
    let n = parse::MAX_DEPTH;
    for (t, want) in [
        (nested("{{ if true }}", "x", "{{ end }}", n), "x".to_owned()),
        (
            nested("{{ with 1 }}", "{{ . }}", "{{ end }}", n),
            "1".to_owned(),
        ),
        (
            format!("{{{{ {} }}}}", nested("(print ", "1", ")", n)),
            "1".to_owned(),
        ),
        (
            format!(
                "{{{{ if false }}}}{}{{{{ else }}}}y{{{{ end }}}}",
                "{{ else if false }}".repeat(n - 1)
            ),
            "y".to_owned(),
        ),
    ] {
        assert_eq!(on_small_stack(|| run(&t)), Ok(want));
    }
}
