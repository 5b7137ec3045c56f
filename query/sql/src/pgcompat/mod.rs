//! What Postgres clients read besides the tables, so that their catalog probes answer as
//! Postgres answers them: Grafana's PostgreSQL data source lists schemas, tables and columns
//! through `information_schema` with `quote_ident`, `parse_ident`, `current_setting`,
//! `string_to_array` and `generate_series`, and asks the server's version and extensions.
//!
//! - [`PgType`]: the Postgres type a column of an Arrow type is (its name in the catalog, and
//!   what the wire layer sends it as: one mapping for both).
//! - `catalog`: the `information_schema` schema (`schemata`, `tables`, `columns` with
//!   Postgres's type names, and `df_settings` for DataFusion's `SHOW`) and a `pg_catalog` of
//!   `pg_extension` (empty: no extension is installed), built once from the tables' schemas.
//! - `functions`: Postgres's functions DataFusion lacks, as scalar UDFs.
//! - `rewrite`: Postgres's rules for the FROM clause DataFusion does not follow (a function's
//!   single column named after its alias, a scalar function as a one-row table, `pg_catalog`
//!   searched for unqualified names).
//! - `subquery`: uncorrelated `IN (SELECT …)` outside WHERE (in a select list, ORDER BY),
//!   which DataFusion cannot run, evaluated first and replaced by the list of its values.
//!
//! Knows no wire format (the `postgres` module of `query/api` speaks the protocol) and no
//! store: the catalog is built from schemas.

mod catalog;
mod functions;
mod rewrite;
mod subquery;

use datafusion::arrow::datatypes::{DataType, TimeUnit};

pub(crate) use catalog::Catalog;
pub(crate) use functions::register as register_functions;
pub(crate) use rewrite::rewrite;
pub(crate) use subquery::inline_uncorrelated;

/// The server version clients are told: pgwire's startup announces `16.6-pgwire-…` as
/// `server_version`, and `current_setting` answers the same release.
const SERVER_VERSION: &str = "16.6";
const SERVER_VERSION_NUM: &str = "160006";

/// The configuration parameters `current_setting` answers, as a Postgres 16 with default
/// settings and a UTF-8 database answers them.
pub(crate) const SETTINGS: [(&str, &str); 6] = [
    ("search_path", "\"$user\", public"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", SERVER_VERSION_NUM),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("TimeZone", "UTC"),
];

/// `name`'s value, as `current_setting(name)` answers it (Postgres matches names without
/// regard to case).
pub fn setting(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The Postgres type of a column: what clients are sent and what the catalog names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bytea,
    Timestamp,
    Timestamptz,
    Date,
    /// Maps, structs and lists, as `POST /api/v1/sql` renders them.
    Json,
    /// Strings, and what has no exact Postgres type here (u64, decimals, durations) in
    /// Arrow's display.
    Text,
}

impl PgType {
    pub fn of(t: &DataType) -> PgType {
        match t {
            DataType::Boolean => PgType::Bool,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => PgType::Int2,
            DataType::Int32 | DataType::UInt16 => PgType::Int4,
            DataType::Int64 | DataType::UInt32 => PgType::Int8,
            DataType::Float16 | DataType::Float32 => PgType::Float4,
            DataType::Float64 => PgType::Float8,
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_) => PgType::Bytea,
            DataType::Timestamp(_, None) => PgType::Timestamp,
            DataType::Timestamp(_, Some(_)) => PgType::Timestamptz,
            DataType::Date32 | DataType::Date64 => PgType::Date,
            DataType::Map(..)
            | DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..) => PgType::Json,
            _ => PgType::Text,
        }
    }

    /// The type's name in `pg_type` (`information_schema.columns.udt_name`).
    pub fn udt_name(self) -> &'static str {
        match self {
            PgType::Bool => "bool",
            PgType::Int2 => "int2",
            PgType::Int4 => "int4",
            PgType::Int8 => "int8",
            PgType::Float4 => "float4",
            PgType::Float8 => "float8",
            PgType::Bytea => "bytea",
            PgType::Timestamp => "timestamp",
            PgType::Timestamptz => "timestamptz",
            PgType::Date => "date",
            PgType::Json => "json",
            PgType::Text => "text",
        }
    }

    /// The type's SQL name (`information_schema.columns.data_type`).
    pub fn sql_name(self) -> &'static str {
        match self {
            PgType::Bool => "boolean",
            PgType::Int2 => "smallint",
            PgType::Int4 => "integer",
            PgType::Int8 => "bigint",
            PgType::Float4 => "real",
            PgType::Float8 => "double precision",
            PgType::Bytea => "bytea",
            PgType::Timestamp => "timestamp without time zone",
            PgType::Timestamptz => "timestamp with time zone",
            PgType::Date => "date",
            PgType::Json => "json",
            PgType::Text => "text",
        }
    }

    /// `numeric_precision`, `numeric_precision_radix` and `numeric_scale`, as Postgres
    /// gives them for its numeric types (binary digits; no scale for floats).
    fn numeric(self) -> Option<(i32, i32, Option<i32>)> {
        match self {
            PgType::Int2 => Some((16, 2, Some(0))),
            PgType::Int4 => Some((32, 2, Some(0))),
            PgType::Int8 => Some((64, 2, Some(0))),
            PgType::Float4 => Some((24, 2, None)),
            PgType::Float8 => Some((53, 2, None)),
            _ => None,
        }
    }
}

/// `datetime_precision`: the fractional digits of a timestamp column as sent (at most
/// Postgres's microseconds), 0 for a date.
fn datetime_precision(t: &DataType) -> Option<i32> {
    match t {
        DataType::Timestamp(unit, _) => Some(match unit {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 3,
            TimeUnit::Microsecond | TimeUnit::Nanosecond => 6,
        }),
        DataType::Date32 | DataType::Date64 => Some(0),
        _ => None,
    }
}
