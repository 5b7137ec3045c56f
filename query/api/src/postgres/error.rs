//! Every failure of a statement as a Postgres ErrorResponse: the one place an error gets its
//! SQLSTATE. Syntax errors are 42601 (with the position psql points at), unknown tables
//! 42P01, unknown columns 42703, refused statements and catalog probes 0A000, timeouts
//! 57014 (a statement cancelled by a CancelRequest is answered 57014 by pgwire itself), DataFusion's memory pool 53200, budgets and the row limit 54000, a connection past
//! the limit 53300 and one refusing TLS 28000 (both FATAL); the rest by their class. Knows no
//! message other than the errors' own, the catalog hint and the connection refusals.

use ::sql::datafusion_common::{DataFusionError, SchemaError};
use ::sql::SqlError;
use pgwire::error::{ErrorInfo, PgWireError};
use storage::{Classify, ErrorClass};

use crate::sql::RunError;

/// `e`, from running `query`, as the ErrorResponse the client receives.
pub(super) fn to_pg(e: RunError, query: &str) -> PgWireError {
    let code = sqlstate(&e);
    let mut info = match &e {
        RunError::Sql(SqlError::UnknownTable(t)) if is_catalog(t) => ErrorInfo::new(
            "ERROR".into(),
            code.into(),
            format!(
                "novamon serves no Postgres system catalog ({t}; psql's \\d reads it): its \
                 tables are metrics, logs and spans, listed by information_schema.tables and \
                 information_schema.columns, or SHOW TABLES and SHOW COLUMNS FROM metrics"
            ),
        ),
        _ => ErrorInfo::new("ERROR".into(), code.into(), e.to_string()),
    };
    if code == "42601" {
        info.position = position(&info.message, query).map(|p| p.to_string());
    }
    PgWireError::UserError(Box::new(info))
}

/// A parameter that cannot be read as the type it is declared or inferred as.
pub(super) fn parameter(i: usize, why: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "22023".into(),
        format!("parameter ${}: {why}", i + 1),
    )))
}

/// A value that could not be encoded: ours, not the client's.
pub(super) fn internal(why: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "XX000".into(),
        why.to_owned(),
    )))
}

/// A connection past the listener's limit, as Postgres refuses it past `max_connections`.
pub(super) fn too_many_clients() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "53300".into(),
        "sorry, too many clients already".to_owned(),
    )))
}

/// A client that did not take the TLS the server offers: refused before it sends a password,
/// with the SQLSTATE Postgres gives a connection no pg_hba.conf line admits.
pub(super) fn tls_required() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        "28000".into(),
        "SSL required: this server has TLS on (the web config's tls_server_config); connect \
         with sslmode=require or stronger"
            .to_owned(),
    )))
}

/// psql's `\d` and drivers' type lookups read `pg_catalog` tables, which (but for an empty
/// `pg_extension`) no schema here holds.
fn is_catalog(table: &str) -> bool {
    table
        .split('.')
        .any(|part| part == "pg_catalog" || part.starts_with("pg_"))
}

fn sqlstate(e: &RunError) -> &'static str {
    let e = match e {
        RunError::Queue(_) | RunError::Timeout(_) => return "57014",
        RunError::Sql(e) => e,
    };
    match e {
        SqlError::Refused(_) => "0A000",
        SqlError::UnknownTable(t) if is_catalog(t) => "0A000",
        SqlError::UnknownTable(_) => "42P01",
        SqlError::TooManyRows { .. } => "54000",
        SqlError::Storage(s) => by_class(s.class()),
        SqlError::DataFusion(d) => match d.find_root() {
            DataFusionError::SQL(..) => "42601",
            DataFusionError::ResourcesExhausted(_) => "53200",
            DataFusionError::SchemaError(s, _)
                if matches!(**s, SchemaError::FieldNotFound { .. }) =>
            {
                "42703"
            }
            DataFusionError::NotImplemented(_) => "0A000",
            _ => by_class(e.class()),
        },
    }
}

fn by_class(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::BadInput => "42000",
        ErrorClass::NotFound => "42704",
        ErrorClass::TooLarge => "54000",
        ErrorClass::Timeout => "57014",
        ErrorClass::Unavailable => "53000",
        ErrorClass::Internal => "XX000",
    }
}

/// The 1-based character offset DataFusion's "Line: l, Column: c" points at in `query`.
fn position(message: &str, query: &str) -> Option<usize> {
    let rest = &message[message.find("Line: ")? + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let line: usize = line.parse().ok()?;
    let column: usize = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    let before: usize = query
        .split('\n')
        .take(line.checked_sub(1)?)
        .map(|l| l.chars().count() + 1)
        .sum();
    Some(before + column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_across_lines() {
        assert_eq!(position("x at Line: 1, Column: 1", "SELEC 1"), Some(1));
        assert_eq!(
            position(
                "Expected: end of statement, found: x at Line: 2, Column: 3",
                "SELECT\n1 x"
            ),
            Some(10)
        );
        assert_eq!(position("no position", "SELECT"), None);
    }

    #[test]
    fn catalog_tables_are_told_apart() {
        assert!(is_catalog("novamon.pg_catalog.pg_class"));
        assert!(is_catalog("novamon.public.pg_type"));
        assert!(!is_catalog("novamon.public.nope"));
    }

    #[test]
    fn sqlstates_by_error() {
        let timeout = RunError::Timeout(std::time::Duration::from_secs(1));
        assert_eq!(sqlstate(&timeout), "57014");
        let unknown = RunError::Sql(SqlError::UnknownTable("novamon.public.x".into()));
        assert_eq!(sqlstate(&unknown), "42P01");
        let rows = RunError::Sql(SqlError::TooManyRows { limit: 1 });
        assert_eq!(sqlstate(&rows), "54000");
        let memory = RunError::Sql(SqlError::DataFusion(DataFusionError::ResourcesExhausted(
            "pool".into(),
        )));
        assert_eq!(sqlstate(&memory), "53200");
    }
}
