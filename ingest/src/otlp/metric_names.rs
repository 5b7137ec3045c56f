//! Prometheus's names for OTLP metrics and attributes (its OTLP translator's default,
//! "underscore escaping with suffixes"): invalid characters become `_`, the unit becomes a
//! suffix (`s` → `_seconds`, `By/s` → `_bytes_per_second`, `1` on a gauge → `_ratio`) and
//! monotonic sums end in `_total`. Owns naming only.

/// How a metric is typed for naming purposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Other,
}

pub(crate) fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut words: Vec<String> = sanitize(name, false)
        .split('_')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    if kind == Kind::Counter && words.last().is_some_and(|w| w == "total") {
        words.pop();
    }
    let (main, per) = unit_words(unit, kind);
    for suffix in [main, per].into_iter().flatten() {
        let parts: Vec<&str> = suffix.split('_').collect();
        if !words.ends_with(&parts.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()) {
            words.extend(parts.into_iter().map(str::to_owned));
        }
    }
    if kind == Kind::Counter {
        words.push("total".to_owned());
    }
    let joined = words.join("_");
    match joined.chars().next() {
        Some(c) if c.is_ascii_digit() => format!("_{joined}"),
        None => "_".to_owned(),
        _ => joined,
    }
}

/// An attribute key as a label name: invalid characters → `_`, a leading digit or a single
/// leading `_` gets a `key` prefix (`__` names stay reserved).
pub(crate) fn label_name(key: &str) -> String {
    let s = sanitize(key, true);
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{s}")
    } else if s.starts_with('_') && !s.starts_with("__") {
        format!("key{s}")
    } else {
        s
    }
}

/// An attribute key with every character a label name cannot hold replaced by `_`: the part
/// of the mapping each signal's translator shares (their prefix rules differ).
pub(crate) fn label_chars(key: &str) -> String {
    sanitize(key, true)
}

fn sanitize(s: &str, label: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '_' || (!label && c == ':');
        let c = if ok { c } else { '_' };
        // Metric names collapse runs of `_` (as Prometheus's translator does); label names keep them.
        if !label && c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out
}

/// The suffix words of an OTLP unit (UCUM): main unit and "per" unit.
fn unit_words(unit: &str, kind: Kind) -> (Option<String>, Option<String>) {
    // Annotations in braces (`{requests}`) are not units.
    let mut clean = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let (main, per) = match clean.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (clean.trim(), None),
    };
    let main = match main {
        "1" if kind == Kind::Gauge => Some("ratio".to_owned()),
        "1" | "" => None,
        m => Some(
            unit_word(m)
                .map(str::to_owned)
                .unwrap_or_else(|| sanitize(m, false).trim_matches('_').to_owned()),
        ),
    }
    .filter(|s| !s.is_empty());
    let per = per
        .filter(|p| !p.is_empty())
        .map(|p| {
            per_word(p)
                .map(str::to_owned)
                .unwrap_or_else(|| sanitize(p, false).trim_matches('_').to_owned())
        })
        .filter(|s| !s.is_empty())
        .map(|p| format!("per_{p}"));
    (main, per)
}

fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_otlp_translation() {
        assert_eq!(
            metric_name("http.server.duration", "ms", Kind::Other),
            "http_server_duration_milliseconds"
        );
        assert_eq!(
            metric_name("requests", "{request}", Kind::Counter),
            "requests_total"
        );
        assert_eq!(
            metric_name("requests_total", "1", Kind::Counter),
            "requests_total"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", Kind::Gauge),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name("net.io", "By/s", Kind::Gauge),
            "net_io_bytes_per_second"
        );
        assert_eq!(
            metric_name("latency_seconds", "s", Kind::Other),
            "latency_seconds"
        );
        assert_eq!(metric_name("2xx..count", "", Kind::Gauge), "_2xx_count");
    }

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("0day"), "key_0day");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__reserved"), "__reserved");
    }
}
