//! Durations and byte sizes in the notations Go programs accept: `time.ParseDuration` (with the
//! `d`, `w` and `y` units Loki adds), Prometheus's `model.ParseDuration` and go-humanize's byte
//! sizes. LogQL, the Jaeger and Tempo APIs and TraceQL read Go durations through here; rule
//! files, Alertmanager's configuration, the configuration file and the Prometheus API read
//! Prometheus durations through here.

use std::time::Duration;

/// Go's time.ParseDuration plus `d` and `w` (as Loki accepts in ranges), in nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            "w" => 7.0 * 86400e9,
            "y" => 365.0 * 86400e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    Some(total as i64)
}

/// Go's `time.Duration.String()`: `0s`, `250ns`, `1.5µs`, `12ms`, `1.5s`, `1m30s`, `72h3m0.5s`.
pub fn format_go_duration(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    // An integer part and a fraction of `digits` digits, trailing zeros dropped.
    let fixed = |v: u64, digits: u32| {
        let scale = 10u64.pow(digits);
        let frac = format!("{:0width$}", v % scale, width = digits as usize);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            format!("{}", v / scale)
        } else {
            format!("{}.{frac}", v / scale)
        }
    };
    match u {
        0 => "0s".to_owned(),
        1..=999 => format!("{sign}{u}ns"),
        1_000..=999_999 => format!("{sign}{}µs", fixed(u, 3)),
        1_000_000..=999_999_999 => format!("{sign}{}ms", fixed(u, 6)),
        _ => {
            let (h, rest) = (u / 3_600_000_000_000, u % 3_600_000_000_000);
            let (m, s) = (rest / 60_000_000_000, rest % 60_000_000_000);
            let secs = format!("{}s", fixed(s, 9));
            match (h, m) {
                (0, 0) => format!("{sign}{secs}"),
                (0, m) => format!("{sign}{m}m{secs}"),
                (h, m) => format!("{sign}{h}h{m}m{secs}"),
            }
        }
    }
}

/// Byte sizes as go-humanize parses them: `10B`, `1.5KB` (1000), `2KiB` (1024), case-insensitive.
pub fn parse_bytes(s: &str) -> Option<f64> {
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let n: f64 = s[..num_len].parse().ok()?;
    let mult = match s[num_len..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "kib" | "ki" => 1024.0,
        "mb" | "m" => 1e6,
        "mib" | "mi" => 1024.0 * 1024.0,
        "gb" | "g" => 1e9,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "tb" | "t" => 1e12,
        "tib" | "ti" => 1024f64.powi(4),
        _ => return None,
    };
    Some(n * mult)
}

/// Prometheus's `model.ParseDuration`, for durations in Prometheus's and Alertmanager's files: `1h30m`, `500ms`, `0`; units from `y` down to `ms`,
/// each at most once and in that order.
pub fn parse_prometheus_duration(s: &str) -> Result<Duration, crate::Error> {
    let bad = || crate::Error::InvalidDuration(s.to_owned());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let i = UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(bad)?;
        total = n
            .checked_mul(UNITS[next_unit + i].1)
            .and_then(|v| v.checked_add(total))
            .ok_or_else(bad)?;
        next_unit += i + 1;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_millis(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_as_go_prints_them() {
        // Expected strings are what Go's time.Duration.String() prints for these values.
        for (ns, go) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (259_380_500_000_000, "72h3m0.5s"),
            (-1_500_000_000, "-1.5s"),
        ] {
            assert_eq!(format_go_duration(ns), go);
        }
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_go_duration("1h30m"), Some(5400 * 1_000_000_000));
        assert_eq!(parse_go_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration("100"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_bytes("2KiB"), Some(2048.0));
        assert_eq!(parse_bytes("1.5MB"), Some(1.5e6));
    }

    #[test]
    fn prometheus_durations_parse_as_model_parse_duration() {
        let pd = |s: &str| parse_prometheus_duration(s).map(|d| d.as_millis() as i64);
        assert_eq!(pd("0m"), Ok(0));
        assert_eq!(pd("0"), Ok(0));
        assert_eq!(pd("1h30m"), Ok(5_400_000));
        assert_eq!(pd("1m500ms"), Ok(60_500));
        assert!(pd("5").is_err());
        assert!(pd("30m1h").is_err());
        assert!(pd("1m1m").is_err());
        assert_eq!(
            parse_prometheus_duration("x").unwrap_err().to_string(),
            r#"not a valid duration string: "x""#
        );
    }
}
