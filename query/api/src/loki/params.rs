//! Request parameters as Loki reads them: form body and URL query merged (`crate::form`),
//! timestamps as RFC 3339 or integers (≤ 10 digits: seconds, else nanoseconds) or float
//! seconds, steps as durations or float seconds. Owns parsing and its error texts.

use axum::http::HeaderMap;
use storage::logs::Direction;

use crate::form::Form;
use gocompat::units::parse_go_duration;

/// The request's form, read with this API's conventions.
pub(crate) struct Params(Form);

impl std::ops::Deref for Params {
    type Target = Form;
    fn deref(&self) -> &Form {
        &self.0
    }
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl From<Form> for Params {
    fn from(form: Form) -> Params {
        Params(form)
    }
}

impl Params {
    pub(crate) fn new(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Params {
        Params(Form::new(query, headers, body))
    }

    pub(crate) fn time_or(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.get(name) {
            "" => Ok(default),
            v => parse_time(v)
                .ok_or_else(|| format!("invalid {name}: cannot parse {v:?} as a timestamp")),
        }
    }

    /// `start`/`end` with Loki's defaults: the last hour up to now.
    pub(crate) fn range(&self) -> Result<(i64, i64), String> {
        let end = self.time_or("end", now_ns())?;
        let start = self.time_or("start", end - 3_600 * 1_000_000_000)?;
        if end < start {
            return Err("end timestamp must not be before or equal to start time".into());
        }
        Ok((start, end))
    }

    pub(crate) fn limit(&self, default: usize) -> Result<usize, String> {
        self.number_or("limit", default)
    }

    /// A count parameter (`limit`, `line_limit`, …), `default` when absent.
    pub(crate) fn number_or(&self, name: &str, default: usize) -> Result<usize, String> {
        match self.get(name) {
            "" => Ok(default),
            v => v
                .parse::<u32>()
                .map(|n| n as usize)
                .map_err(|_| format!("invalid {name}: {v:?}")),
        }
    }

    /// The flags of `X-Loki-Response-Encoding-Flags` (comma-separated), which a streams
    /// answer echoes as `encodingFlags`.
    pub(crate) fn encoding_flags(&self) -> Vec<String> {
        self.header("x-loki-response-encoding-flags")
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub(crate) fn direction(&self) -> Result<Direction, String> {
        match self.get("direction").to_ascii_lowercase().as_str() {
            "" | "backward" => Ok(Direction::Backward),
            "forward" => Ok(Direction::Forward),
            other => Err(format!("invalid direction {other:?}")),
        }
    }

    /// `step` in ns; default as Loki: the range over 250 points, at least one second.
    pub(crate) fn step(&self, start: i64, end: i64) -> Result<i64, String> {
        let step = match self.get("step") {
            "" => ((end - start) / 250 / 1_000_000_000).max(1) * 1_000_000_000,
            v => parse_step(v).ok_or_else(|| format!("invalid step: cannot parse {v:?}"))?,
        };
        if step <= 0 {
            return Err("zero or negative query resolution step widths are not accepted. Try a positive integer".into());
        }
        if (end - start) / step > 11_000 {
            return Err("exceeded maximum resolution of 11,000 points per timeseries. Try increasing the value of the step parameter".into());
        }
        Ok(step)
    }
}

pub(crate) fn parse_time(v: &str) -> Option<i64> {
    if v.contains('.') {
        if let Ok(f) = v.parse::<f64>() {
            return Some((f * 1e9) as i64);
        }
    }
    if let Ok(n) = v.parse::<i64>() {
        return Some(if v.trim_start_matches('-').len() <= 10 {
            n.saturating_mul(1_000_000_000)
        } else {
            n
        });
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

fn parse_step(v: &str) -> Option<i64> {
    match v.parse::<f64>() {
        Ok(f) => Some((f * 1e9) as i64),
        Err(_) => parse_go_duration(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_form_loki_accepts() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(
            parse_time("1700000000123456789"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("soon"), None);
        assert_eq!(parse_step("15s"), Some(15_000_000_000));
        assert_eq!(parse_step("0.5"), Some(500_000_000));
    }
}
