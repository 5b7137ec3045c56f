//! Go's `time.Time` as Prometheus and Alertmanager print it in JSON, in UTC: RFC 3339 with the
//! fraction's trailing zeros dropped ([`rfc3339_nano`]), go-openapi's `strfmt.DateTime` with
//! milliseconds always ([`rfc3339_millis`]), and Go's zero time for "never".

/// Go's zero `time.Time`, printed where a time is unset.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `time.Time`'s JSON form (`time.RFC3339Nano`) of `ms` since the epoch.
pub fn rfc3339_nano(ms: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return ZERO_TIME.to_owned();
    };
    let frac = ms.rem_euclid(1000);
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    if frac != 0 {
        s.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// `strfmt.DateTime`'s form of `ms` since the epoch: always three fraction digits.
pub fn rfc3339_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ZERO_TIME.to_owned())
}

/// An RFC 3339 time to ms since the epoch, Go's zero time to 0, as go-openapi reads an unset
/// `strfmt.DateTime`; `None` when it is not RFC 3339.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    if s.starts_with("0001-01-01T00:00:00") {
        return Some(0);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_go_does() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(1_500), "1970-01-01T00:00:01.5Z");
        assert_eq!(rfc3339_nano(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_millis(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(rfc3339_millis(i64::MAX), ZERO_TIME);
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500)
        );
        assert_eq!(parse_rfc3339(ZERO_TIME), Some(0));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
