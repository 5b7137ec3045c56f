//! The Postgres wire protocol (`listeners.postgres`) on the real binary: Debian's `psql`
//! (simple query protocol) and psycopg 3 (extended query protocol, text and binary results)
//! answer what `POST /api/v1/sql` answers on the same data, including the query Grafana's
//! PostgreSQL data source sends once its `$__timeFilter`/`$__timeGroup` macros are expanded
//! and its health check (pgx's `-- ping`); errors carry their SQLSTATE; a connection sending
//! garbage is closed while others go on; the web config's users guard the listener, and its
//! TLS too; a client past the connection limit is refused as Postgres refuses it.
//! Needs `psql` (postgresql-client) and the venv `tests/run.sh` creates.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use e2e::pki::Pki;
use e2e::series::{v1_request, v1_series, V1};
use e2e::{an_hour_ago_ms, novamon_bin, venv_python, Json, Novamon, Process};
use serde_json::json;

const PSQL: &str = "/usr/bin/psql";

/// novamon with the Postgres listener on a free port (and `more` config, `extra` flags); its
/// address.
fn start(dir: &Path, more: &str, extra: &[&str]) -> (Novamon, String) {
    let config = dir.join("novamon.yml");
    std::fs::write(
        &config,
        format!("listeners:\n  postgres: 127.0.0.1:0\n{more}"),
    )
    .unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut n = Novamon::start(&dir.join("data"), &args);
    let addr = n
        .process
        .wait_for_log_values(
            &[" Postgres wire protocol listening addr="],
            Duration::from_secs(30),
        )
        .remove(0);
    (n, addr)
}

fn psql(addr: &str, user: &str, password: Option<&str>, args: &[&str]) -> Output {
    assert!(
        Path::new(PSQL).exists(),
        "{PSQL} missing: install postgresql-client (tests/run.sh does)"
    );
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut cmd = Command::new(PSQL);
    cmd.args(["-X", "-h", host, "-p", port, "-U", user, "-d", "novamon"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGSSLMODE", "disable")
        .env_remove("PGPASSWORD");
    match password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.arg("-w"),
    };
    cmd.output().unwrap()
}

/// `query`'s rows through psql in CSV, without the header.
fn psql_csv(addr: &str, query: &str) -> Vec<Vec<String>> {
    let out = psql(addr, "grafana", None, &["--csv", "-t", "-c", query]);
    assert!(
        out.status.success(),
        "{query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    csv_rows(&String::from_utf8(out.stdout).unwrap())
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// `statements` (JSON strings, or `[statement, [parameters]]`) through
/// tests/postgres/query.py in `mode`.
fn psycopg(addr: &str, mode: &str, statements: &[Json]) -> Vec<Json> {
    let out = python_script(
        "query.py",
        addr,
        mode,
        &serde_json::to_vec(statements).unwrap(),
    );
    serde_json::from_slice::<Vec<Json>>(&out).unwrap()
}

/// Runs one of `tests/postgres/`'s scripts against novamon at `addr` with `arg`, `stdin` on
/// its standard input, and returns what it printed; it must succeed.
fn python_script(script: &str, addr: &str, arg: &str, stdin: &[u8]) -> Vec<u8> {
    let path = format!("{}/postgres/{script}", env!("CARGO_MANIFEST_DIR"));
    let dsn = format!("postgresql://grafana@{addr}/novamon?sslmode=disable&connect_timeout=10");
    let mut child = Command::new(venv_python())
        .args([&path, &dsn, arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn http(n: &Novamon, query: &str, accept: &str) -> String {
    let (status, body, _) = n.post_raw(
        "/api/v1/sql",
        "application/json",
        &[("Accept", accept)],
        serde_json::to_vec(&json!({ "query": query })).unwrap(),
    );
    assert_eq!(status, 200, "{query}: {body}");
    body
}

/// Cells equal as numbers when both are numbers (the two renderings of a float may differ
/// in their last digits), as text otherwise.
fn same_cell(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

fn assert_same_rows(what: &str, got: &[Vec<String>], want: &[Vec<String>]) {
    assert!(!want.is_empty(), "{what}: no rows");
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "{what}: {g:?} vs {w:?}");
        assert!(
            g.iter().zip(w).all(|(a, b)| same_cell(a, b)),
            "{what}: {g:?} vs {w:?}"
        );
    }
}

/// A JSON cell as the text psql and the CSV answer print.
fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

fn rows_text(rows: &Json) -> Vec<Vec<String>> {
    rows.as_array()
        .unwrap_or_else(|| panic!("{rows}"))
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(text).collect())
        .collect()
}

/// Go's RFC3339Nano in UTC, as Grafana writes `$__timeFilter`'s bounds.
fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[test]
fn psql_and_psycopg_answer_as_the_http_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (n, addr) = start(dir.path(), "", &[]);
    let t0 = (an_hour_ago_ms() / 60_000) * 60_000;
    let series = (0..3)
        .map(|i| {
            let samples: Vec<(i64, f64)> = (0..40)
                .map(|k| (t0 + k * 15_000, (k * (i + 1)) as f64 + 0.5))
                .collect();
            v1_series(
                &[
                    ("__name__", "pg_total"),
                    ("instance", &format!("i{i}")),
                    ("job", "pgtest"),
                ],
                &samples,
            )
        })
        .collect();
    assert_eq!(n.remote_write(&v1_request(series), V1).0, 204);

    // Grafana's PostgreSQL data source, a time series panel over the samples' ten minutes,
    // 1m groups: `SELECT $__timeGroup(ts, '1m') AS "time", … WHERE $__timeFilter(ts)` as
    // its macro engine expands it.
    let grafana = format!(
        "SELECT floor(extract(epoch from ts)/60)*60 AS \"time\", instance AS metric, \
         avg(value) AS value FROM metrics WHERE ts BETWEEN '{}' AND '{}' \
         AND metric = 'pg_total' GROUP BY 1, 2 ORDER BY 1, 2",
        rfc3339(t0),
        rfc3339(t0 + 600_000)
    );
    let queries = [
        "SELECT instance, count(*) AS n, sum(value) AS s, avg(value) AS a, max(value) AS m \
         FROM metrics WHERE metric = 'pg_total' GROUP BY instance ORDER BY instance"
            .to_owned(),
        "SELECT job, instance, value, CAST(ts AS BIGINT) AS ms FROM metrics \
         WHERE metric = 'pg_total' AND value > 100 ORDER BY ts, instance LIMIT 5"
            .to_owned(),
        grafana.clone(),
    ];
    for q in &queries {
        let want = csv_rows(&http(&n, q, "text/csv"));
        // The CSV answer's first line is its header.
        assert_same_rows(&format!("psql {q}"), &psql_csv(&addr, q), &want[1..]);
    }
    // The Grafana query gives one row per instance and minute of the window.
    let grafana_rows = psql_csv(&addr, &grafana);
    assert_eq!(grafana_rows.len(), 3 * 10, "{grafana_rows:?}");

    let statements: Vec<Json> = queries.iter().map(|q| json!(q)).collect();
    for mode in ["text", "binary"] {
        let answers = psycopg(&addr, mode, &statements);
        for (q, a) in queries.iter().zip(&answers) {
            let want: Json = serde_json::from_str(&http(&n, q, "application/json")).unwrap();
            let names: Vec<&str> = want["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(a["columns"], json!(names), "{mode} {q}: {a}");
            assert_same_rows(
                &format!("psycopg {mode} {q}"),
                &rows_text(&a["rows"]),
                &rows_text(&want["rows"]),
            );
        }
    }

    // Timestamps and JSON columns decode as their types in both formats; parameters bind
    // (as text, as floats, and as a column of their own).
    for mode in ["text", "binary"] {
        let answers = psycopg(
            &addr,
            mode,
            &[
                json!(
                    "SELECT ts, labels FROM metrics WHERE metric = 'pg_total' \
                     AND instance = 'i1' ORDER BY ts LIMIT 1"
                ),
                json!([
                    "SELECT count(*) AS n, %s AS p FROM metrics \
                     WHERE metric = %s AND instance = %s AND value > %s",
                    ["x", "pg_total", "i2", 40.0]
                ]),
            ],
        );
        let count = http(
            &n,
            "SELECT count(*) FROM metrics WHERE metric = 'pg_total' AND instance = 'i2' \
             AND value > 40",
            "text/csv",
        );
        assert_eq!(
            answers[1]["rows"],
            json!([[csv_rows(&count)[1][0].parse::<i64>().unwrap(), "x"]]),
            "{mode}: {}",
            answers[1]
        );
        let a = &answers[0];
        let row = &a["rows"][0];
        assert_eq!(
            row[0]
                .as_str()
                .unwrap()
                .parse::<DateTime<chrono::FixedOffset>>()
                .ok()
                .map(|t| t.timestamp_millis()),
            Some(t0),
            "{mode}: {a}"
        );
        assert_eq!(row[1]["instance"], "i1", "{mode}: {a}");
        assert_eq!(row[1]["job"], "pgtest", "{mode}: {a}");
    }

    // Grafana's health check: pgx pings with `-- ping` over the simple protocol.
    let ping = psycopg(&addr, "ping", &[json!("-- ping")]);
    assert_eq!(ping, [json!({"status": "EMPTY_QUERY"})]);
    let out = psql(&addr, "grafana", None, &["-c", "-- ping"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Grafana's `buildSchemaConstraint()` (public/app/plugins/datasource/
/// grafana-postgresql-datasource/postgresMetaQuery.ts, Grafana 12): the schemas of the
/// search path, as the template literal renders it.
fn grafana_schema_constraint() -> String {
    r#"
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"#
    .to_owned()
}

/// Grafana's `showTables()`: the query builder's table list.
fn grafana_show_tables() -> String {
    let c = grafana_schema_constraint();
    format!(
        r#"SELECT
    CASE WHEN {c}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {c} THEN 0 ELSE 1 END, 1"#
    )
}

/// Grafana's `showTables(schema)`.
fn grafana_show_tables_of(schema: &str) -> String {
    let schema_part = format!("'{}'", schema.replace('\'', "''"));
    format!(
        r#"SELECT quote_ident(table_name) AS "table"
      FROM information_schema.tables
      WHERE quote_ident(table_schema) = {schema_part}
      ORDER BY 1"#
    )
}

/// Grafana's `getSchema(table)`: the columns the builder offers for a table.
fn grafana_get_schema(table: &str) -> String {
    let table_name_part = format!("'{}'", table.replace('\'', "''"));
    let c = grafana_schema_constraint();
    format!(
        r#"SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident({table_name_part}),1) = 2
        THEN quote_ident(table_schema) = (parse_ident({table_name_part}))[1]
          AND quote_ident(table_name) = (parse_ident({table_name_part}))[2]
        ELSE quote_ident(table_name) = {table_name_part}
          AND {c}
      END"#
    )
}

/// Grafana's `showSchemas()`.
const GRAFANA_SHOW_SCHEMAS: &str = r#"SELECT schema_name AS "name"
    FROM information_schema.schemata
    WHERE schema_name NOT IN ('information_schema',
                              'pg_catalog',
                              'pg_toast',
                              '_timescaledb_cache',
                              '_timescaledb_catalog',
                              '_timescaledb_internal',
                              '_timescaledb_config',
                              'timescaledb_information',
                              'timescaledb_experimental')
    ORDER BY schema_name"#;

/// Grafana's `getVersion()` and `getTimescaleDBVersion()`, which its configuration page sends
/// to fill in the Postgres version.
const GRAFANA_VERSION: &str = "SELECT current_setting('server_version_num')::int/100 as version";
const GRAFANA_TIMESCALE: &str = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'";

/// The Go backend's schema queries (pkg/tsdb/grafana-postgresql-datasource/schema.go:
/// `querySchemas`, `queryTables`, `queryColumns`), with their `$n` parameters.
const GRAFANA_BACKEND_SCHEMAS: &str = "SELECT schema_name FROM information_schema.schemata
		 WHERE schema_name NOT LIKE 'pg_%' AND schema_name != 'information_schema'
		 ORDER BY schema_name";
const GRAFANA_BACKEND_TABLES: &str = "SELECT table_name FROM information_schema.tables
		 WHERE table_schema = %s AND table_type IN ('BASE TABLE', 'VIEW')
		 ORDER BY table_name";
const GRAFANA_BACKEND_COLUMNS: &str =
    "SELECT column_name, data_type, udt_name, numeric_precision, numeric_scale
		 FROM information_schema.columns
		 WHERE table_schema = %s AND table_name = %s
		 ORDER BY ordinal_position";

/// Grafana's PostgreSQL data source lists schemas, tables and columns with its own SQL over
/// `information_schema` (sent here character for character, over psycopg's extended protocol
/// as pgx sends it, and the table list over psql's simple protocol too): the three tables,
/// each column with its Postgres type name, the version its configuration page reads, no
/// TimescaleDB.
#[test]
fn grafana_lists_tables_and_columns_through_information_schema() {
    let dir = tempfile::tempdir().unwrap();
    let (_n, addr) = start(dir.path(), "", &[]);
    let tables = json!([["logs"], ["metrics"], ["spans"]]);
    let metrics_columns = [
        ("ts", "timestamp with time zone", "timestamptz"),
        ("value", "double precision", "float8"),
        ("metric", "text", "text"),
        ("job", "text", "text"),
        ("instance", "text", "text"),
        ("labels", "json", "json"),
        ("histogram", "json", "json"),
    ];
    for mode in ["text", "binary"] {
        let answers = psycopg(
            &addr,
            mode,
            &[
                json!(grafana_show_tables()),
                json!(grafana_show_tables_of("public")),
                json!(grafana_get_schema("metrics")),
                json!(grafana_get_schema("public.spans")),
                json!(GRAFANA_SHOW_SCHEMAS),
                json!(GRAFANA_VERSION),
                json!(GRAFANA_TIMESCALE),
                json!(GRAFANA_BACKEND_SCHEMAS),
                json!([GRAFANA_BACKEND_TABLES, ["public"]]),
                json!([GRAFANA_BACKEND_COLUMNS, ["public", "metrics"]]),
            ],
        );
        assert_eq!(
            answers[0]["columns"],
            json!(["table"]),
            "{mode}: {}",
            answers[0]
        );
        assert_eq!(answers[0]["rows"], tables, "{mode}: {}", answers[0]);
        assert_eq!(answers[1]["rows"], tables, "{mode}: {}", answers[1]);

        let mut columns = answers[2]["rows"].as_array().cloned().unwrap_or_default();
        columns.sort_by_key(|r| r[0].as_str().map(str::to_owned));
        let mut want: Vec<Json> = metrics_columns
            .iter()
            .map(|(c, t, _)| json!([c, t]))
            .collect();
        want.sort_by_key(|r| r[0].as_str().map(str::to_owned));
        assert_eq!(answers[2]["columns"], json!(["column", "type"]), "{mode}");
        assert_eq!(columns, want, "{mode}: {}", answers[2]);
        let spans = answers[3]["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", answers[3]));
        assert!(
            spans.contains(&json!(["start", "timestamp with time zone"])),
            "{mode}: {spans:?}"
        );
        assert!(
            spans.contains(&json!(["duration_ns", "bigint"])),
            "{mode}: {spans:?}"
        );
        assert!(
            spans.contains(&json!(["attributes", "json"])),
            "{mode}: {spans:?}"
        );

        assert_eq!(
            answers[4]["rows"],
            json!([["public"]]),
            "{mode}: {}",
            answers[4]
        );
        assert_eq!(
            answers[5]["rows"],
            json!([[1600]]),
            "{mode}: {}",
            answers[5]
        );
        assert_eq!(
            answers[6],
            json!({"columns": ["extversion"], "rows": []}),
            "{mode}"
        );
        assert_eq!(
            answers[7]["rows"],
            json!([["public"]]),
            "{mode}: {}",
            answers[7]
        );
        assert_eq!(answers[8]["rows"], tables, "{mode}: {}", answers[8]);
        let want: Vec<Json> = metrics_columns
            .iter()
            .map(|(c, t, udt)| match *udt {
                "float8" => json!([c, t, udt, 53, null]),
                _ => json!([c, t, udt, null, null]),
            })
            .collect();
        assert_eq!(answers[9]["rows"], json!(want), "{mode}: {}", answers[9]);
    }
    // The simple protocol (psql) answers the table list as the extended one.
    assert_eq!(
        psql_csv(&addr, &grafana_show_tables()),
        [["logs"], ["metrics"], ["spans"]]
    );
    // `user` in the search path's `"$user"` is the connection's user.
    assert_eq!(
        psql_csv(&addr, "SELECT current_user, user, session_user"),
        [["grafana", "grafana", "grafana"]]
    );
}

/// psycopg's `cancel()` (a CancelRequest on a connection of its own, with the process id and
/// secret key of the statement's connection) stops a statement that would run for minutes: it
/// fails at once with Postgres's 57014, the connection stays usable, and the one query slot
/// it held is free again (with `query.max_concurrency: 1` the next statement would otherwise
/// wait out the queue).
#[test]
fn a_cancel_request_stops_the_running_statement() {
    let dir = tempfile::tempdir().unwrap();
    let (_n, addr) = start(
        dir.path(),
        "query:\n  max_concurrency: 1\n  timeout: 1m\n",
        &[],
    );
    let out = python_script(
        "cancel.py",
        &addr,
        "1.5",
        b"SELECT sum(value) AS s FROM generate_series(1, 100000000000)",
    );
    let answer: Json = serde_json::from_slice(&out).unwrap();
    assert_eq!(answer["sqlstate"], "57014", "{answer}");
    assert_eq!(
        answer["error"], "canceling statement due to user request",
        "{answer}"
    );
    let seconds = answer["seconds"].as_f64().unwrap();
    assert!((1.5..15.0).contains(&seconds), "{answer}");
    assert_eq!(answer["after"], json!([[1]]), "{answer}");
    // Another client is answered at once: the cancelled statement's slot is free.
    let started = std::time::Instant::now();
    assert_eq!(psql_csv(&addr, "SELECT 2"), [["2".to_owned()]]);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn errors_carry_their_sqlstate_and_garbage_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_n, addr) = start(dir.path(), "", &[]);
    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM nope", "42P01"),
        ("SELECT nope FROM metrics", "42703"),
        ("CREATE TABLE t AS SELECT 1", "0A000"),
        ("DROP TABLE metrics", "0A000"),
        ("SET datafusion.execution.batch_size = 1", "0A000"),
        // What psql's `\dt` sends first.
        ("SELECT c.relname FROM pg_catalog.pg_class c", "0A000"),
    ];
    let statements: Vec<Json> = cases.iter().map(|(q, _)| json!(q)).collect();
    let answers = psycopg(&addr, "text", &statements);
    for ((q, state), a) in cases.iter().zip(&answers) {
        assert_eq!(a["sqlstate"], *state, "{q}: {a}");
    }
    // The same through psql, which shows the SQLSTATE and the position with VERBOSITY.
    let out = psql(
        &addr,
        "grafana",
        None,
        &[
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "SELECT 1 FROM metrics WHERE",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ERROR:  42601:"), "{stderr}");
    // psql's `\dt` and `\d metrics` read `pg_class`: refused, pointing at what lists tables.
    for command in ["\\dt", "\\d metrics"] {
        let out = psql(&addr, "grafana", None, &["-c", command]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("information_schema.tables") && stderr.contains("SHOW TABLES"),
            "{command}: {stderr}"
        );
    }

    // A client that speaks HTTP to the Postgres port is disconnected; a psql connected
    // meanwhile is answered.
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x13\x37")
        .unwrap();
    assert_eq!(psql_csv(&addr, "SELECT 41 + 1"), [["42".to_owned()]]);
    let mut rest = Vec::new();
    let closed = garbage.read_to_end(&mut rest);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the garbage connection stayed open: {closed:?}"
    );
    assert_eq!(psql_csv(&addr, "SELECT 'still'"), [["still".to_owned()]]);
}

#[test]
fn web_config_users_need_their_password_and_the_read_role() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(
        &web,
        format!(
            "basic_auth_users:\n  alice: '{hash}'\n  writer: '{hash}'\nroles:\n  writer: [write]\n"
        ),
    )
    .unwrap();
    let (_n, addr) = start(
        dir.path(),
        "",
        &["--web.config.file", web.to_str().unwrap()],
    );
    let ok = psql(
        &addr,
        "alice",
        Some("s3cret"),
        &["--csv", "-t", "-c", "SELECT 7"],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "7");
    for (user, password) in [
        ("alice", "wrong"),
        ("writer", "s3cret"),
        ("mallory", "s3cret"),
    ] {
        let out = psql(&addr, user, Some(password), &["-c", "SELECT 7"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{user}: {stderr}");
        assert!(
            stderr
                .to_lowercase()
                .contains("password authentication failed"),
            "{user}: {stderr}"
        );
    }
    // Without a password psql cannot answer the server's request for one.
    let out = psql(&addr, "alice", None, &["-c", "SELECT 7"]);
    assert!(!out.status.success());
}

/// Past `limits.postgres_max_connections` psql is refused as Postgres refuses a client past
/// its `max_connections` (FATAL 53300), whether it asks for TLS first or not, while the
/// connections counted stay open; a slot freed is the next client's.
#[test]
fn clients_past_the_connection_limit_are_refused_as_postgres_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_n, addr) = start(dir.path(), "limits:\n  postgres_max_connections: 2\n", &[]);
    // Two clients that connect and say nothing hold both slots (for pgwire's startup minute).
    let mut held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    for ssl in ["disable", "prefer"] {
        let (host, port) = addr.rsplit_once(':').unwrap();
        let out = Command::new(PSQL)
            .args([
                "-X", "-w", "-h", host, "-p", port, "-U", "grafana", "-d", "novamon",
            ])
            .args(["-c", "SELECT 1"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", ssl)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{ssl}: {stderr}");
        assert!(
            stderr.contains("FATAL:  sorry, too many clients already"),
            "{ssl}: {stderr}"
        );
    }
    // One holder leaves: its slot is free once the server has seen it go.
    held.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = psql(&addr, "grafana", None, &["--csv", "-t", "-c", "SELECT 3"]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With TLS on in the web config, psql connects over TLS and verifies the server's
/// certificate (`sslmode=verify-full` with the CA), and a client that does not ask for TLS is
/// refused before it sends its password (FATAL 28000), as Postgres refuses a client only
/// `hostssl` lines admit.
#[test]
fn tls_from_the_web_config_and_no_password_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = pki.web_config(&format!("basic_auth_users:\n  alice: '{hash}'\n"));
    let config = dir.path().join("novamon.yml");
    std::fs::write(&config, "listeners:\n  postgres: 127.0.0.1:0\n").unwrap();
    // Not `Novamon::start`, which waits for `/-/ready` over plain HTTP.
    let mut cmd = Command::new(novamon_bin());
    cmd.arg("--data-dir").arg(dir.path().join("data"));
    cmd.args(["--config", config.to_str().unwrap()]);
    cmd.args(["--web.config.file", web.to_str().unwrap()]);
    for flag in [
        "--http-listen",
        "--otlp-grpc-listen",
        "--otlp-http-listen",
        "--forward-listen",
    ] {
        cmd.args([flag, "127.0.0.1:0"]);
    }
    let mut n = Process::spawn(&mut cmd, dir.path().join("novamon.log"));
    let addr = n
        .wait_for_log_values(
            &[" Postgres wire protocol listening addr="],
            Duration::from_secs(30),
        )
        .remove(0);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let psql_with = |sslmode: &str| {
        Command::new(PSQL)
            .args(["-X", "-h", host, "-p", port, "-U", "alice", "-d", "novamon"])
            .args(["--csv", "-t", "-c", "SELECT 5"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", sslmode)
            .env("PGSSLROOTCERT", pki.path("ca.crt"))
            .env("PGPASSWORD", "s3cret")
            .output()
            .unwrap()
    };
    let ok = psql_with("verify-full");
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "5");
    let refused = psql_with("disable");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("FATAL:  SSL required"), "{stderr}");
}
