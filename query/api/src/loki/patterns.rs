//! `/loki/api/v1/patterns` (Grafana's Logs Drilldown): parameters in as query_range reads
//! them, `logql::LogEngine::patterns` out as Loki's JSON, each sample `[seconds, count]` in
//! integers. Owns the wire shape only; mining the patterns is `logql`'s.

use serde_json::{json, Value as J};

use super::params::Params;
use super::{LokiError, LokiState};

pub(super) fn patterns(s: &LokiState, p: &Params) -> Result<J, LokiError> {
    let (start, end) = p.range().map_err(LokiError::bad)?;
    let step = p.step(start, end).map_err(LokiError::bad)?;
    let found = s.engine.patterns(p.get("query"), start, end, step)?;
    let data: Vec<J> = found
        .iter()
        .map(|f| {
            let samples: Vec<J> = f
                .samples
                .iter()
                .map(|&(t, n)| json!([t.div_euclid(1_000_000_000), n]))
                .collect();
            json!({"pattern": f.pattern, "level": f.level, "samples": samples})
        })
        .collect();
    Ok(json!({"status": "success", "data": data}))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value as J;
    use storage::logs::{LogOptions, LogRecord, LogStore};
    use storage::Labels;

    use crate::admission::tests::{get, open_gate};
    use crate::loki::{routes, LokiState};

    /// 2025-06-01T09:00:00Z.
    const NINE: i64 = 1_748_768_400;

    fn record(secs: i64, service: &str, line: &str, level: Option<&str>) -> LogRecord {
        LogRecord {
            ts_ns: (NINE + secs) * 1_000_000_000,
            labels: Labels::from_pairs([("service_name", service)]),
            line: line.into(),
            metadata: level
                .map(|l| vec![("detected_level".to_owned(), l.to_owned())])
                .unwrap_or_default(),
        }
    }

    #[tokio::test]
    async fn drilldown_patterns_request_answers_lokis_shape() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            retention: std::time::Duration::from_secs(100 * 365 * 86_400),
            ..Default::default()
        };
        let store = Arc::new(LogStore::open(dir.path(), opts).unwrap());
        store
            .append(&[
                record(605, "api", "user 1 logged in", Some("info")),
                record(630, "api", "user 22 logged in", Some("info")),
                record(670, "api", "user 333 logged in", Some("info")),
                record(720, "api", "cache miss for key abc", None),
                record(700, "web", "user 4 logged in", Some("info")),
                // Outside [start, end).
                record(3600, "api", "user 5 logged in", Some("info")),
            ])
            .unwrap();
        store.sync().unwrap();
        let app = routes(LokiState::new(
            logql::LogEngine::new(store, logql::QueryLimits::default()),
            open_gate(),
        ));
        let (status, body) = get(
            &app,
            "/loki/api/v1/patterns?end=2025-06-01T10:00:00.000Z&query=%7Bservice_name%3D%22api%22%7D&start=2025-06-01T09:00:00.000Z&step=1m",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        // As values: keys are printed sorted, as in every answer here. Integers compare
        // unequal to floats, so the samples' shape is exact.
        let want = r#"{"status":"success","data":[
            {"pattern":"user <_> logged in","level":"info","samples":[[1748769000,2],[1748769060,1]]},
            {"pattern":"cache miss for key abc","level":"unknown","samples":[[1748769120,1]]}
        ]}"#;
        assert_eq!(
            serde_json::from_str::<J>(&body).unwrap(),
            serde_json::from_str::<J>(want).unwrap()
        );
        let (status, body) = get(
            &app,
            "/loki/api/v1/patterns?query=%7Bservice_name%3D%22none%22%7D",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<J>(&body).unwrap(),
            serde_json::json!({"status": "success", "data": []})
        );
        let (status, body) = get(
            &app,
            "/loki/api/v1/patterns?query=%7Bservice_name%3D%22api%22%7D%20%7C%3D%20%22x%22",
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (400, "only label matchers are supported\n")
        );
    }
}
