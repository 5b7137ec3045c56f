//! Label-set manipulation the engine needs (keep, drop, set, match signatures) on top of the
//! canonical `storage::Labels`.

use storage::{Label, Labels, METRIC_NAME};

pub(crate) fn keep(l: &Labels, names: &[String]) -> Labels {
    Labels::new(
        l.iter()
            .filter(|x| names.contains(&x.name))
            .cloned()
            .collect(),
    )
}

pub(crate) fn without(l: &Labels, names: &[String]) -> Labels {
    Labels::new(
        l.iter()
            .filter(|x| !names.contains(&x.name))
            .cloned()
            .collect(),
    )
}

/// Labels that describe the metric rather than the series: Prometheus 3's type-and-unit
/// labels go wherever the metric name goes, since a result that is no longer the metric
/// no longer has its type or unit either.
const METRIC_IDENTITY: [&str; 3] = [METRIC_NAME, "__type__", "__unit__"];

pub(crate) fn drop_name(l: &Labels) -> Labels {
    if !l.iter().any(|x| METRIC_IDENTITY.contains(&x.name.as_str())) {
        return l.clone();
    }
    Labels::new(
        l.iter()
            .filter(|x| !METRIC_IDENTITY.contains(&x.name.as_str()))
            .cloned()
            .collect(),
    )
}

/// Sets (or, with an empty value, deletes) one label.
pub(crate) fn set(l: &Labels, name: &str, value: &str) -> Labels {
    let mut v: Vec<Label> = l.iter().filter(|x| x.name != name).cloned().collect();
    if !value.is_empty() {
        v.push(Label::new(name, value));
    }
    Labels::new(v)
}

/// Go's labels.String(): `{__name__="x", a="b"}`.
pub(crate) fn go_string(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|x| format!("{}={}", x.name, go_quote(&x.value)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Go's strconv.Quote for the characters label values realistically contain.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The key series are matched on: only `names` with `on`, everything but `names` and the
/// metric name with `ignoring` (or no modifier).
pub(crate) fn signature(l: &Labels, on: bool, names: &[String]) -> String {
    let mut key = String::new();
    for x in l.iter() {
        let included = if on {
            names.contains(&x.name)
        } else {
            x.name != METRIC_NAME && !names.contains(&x.name)
        };
        if included {
            key.push_str(&x.name);
            key.push('\u{ff}');
            key.push_str(&x.value);
            key.push('\u{ff}');
        }
    }
    key
}

/// The labels a signature was built from, for error messages.
pub(crate) fn match_labels(l: &Labels, on: bool, names: &[String]) -> Labels {
    if on {
        keep(l, names)
    } else {
        drop_name(&without(l, names))
    }
}
