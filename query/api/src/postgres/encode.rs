//! Arrow to Postgres: the type each column is described with, each value in the text or the
//! binary format the client asked for it in, and parameters from the client into DataFusion
//! values. The type is the `sql` crate's [`PgType`] (the one `information_schema` names):
//! numbers, booleans, bytes, dates and timestamps have Postgres types of their own; maps,
//! structs and lists travel as `json` (as `POST /api/v1/sql` renders them); everything else
//! as `text` in Arrow's display. Knows nothing of statements or errors' SQLSTATEs
//! beyond a parameter it cannot read.

use std::sync::Arc;

use ::sql::arrow::array::{Array, ArrayRef, AsArray};
use ::sql::arrow::compute::cast;
use ::sql::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Schema,
    TimeUnit, TimestampMicrosecondType,
};
use ::sql::arrow::util::display::{ArrayFormatter, FormatOptions};
use ::sql::datafusion_common::ScalarValue;
use ::sql::{PgType, QueryResult};
use chrono::DateTime;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

use super::error;

/// Postgres counts binary timestamps from 2000-01-01, Arrow from 1970-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;

/// The Postgres type a column of `t` is sent as: the type `information_schema` names it.
pub(super) fn pg_type(t: &DataType) -> Type {
    match PgType::of(t) {
        PgType::Bool => Type::BOOL,
        PgType::Int2 => Type::INT2,
        PgType::Int4 => Type::INT4,
        PgType::Int8 => Type::INT8,
        PgType::Float4 => Type::FLOAT4,
        PgType::Float8 => Type::FLOAT8,
        PgType::Bytea => Type::BYTEA,
        PgType::Timestamp => Type::TIMESTAMP,
        PgType::Timestamptz => Type::TIMESTAMPTZ,
        PgType::Date => Type::DATE,
        PgType::Json => Type::JSON,
        PgType::Text => Type::TEXT,
    }
}

/// The type a parameter DataFusion inferred as `t` is described with: the types clients
/// send in a form read back exactly, else `unknown` (the client then sends text).
pub(super) fn parameter_type(t: &DataType) -> Type {
    match pg_type(t) {
        t @ (Type::BOOL | Type::INT2 | Type::INT4 | Type::INT8 | Type::FLOAT4 | Type::FLOAT8) => t,
        Type::TEXT => Type::TEXT,
        _ => Type::UNKNOWN,
    }
}

/// The row description of `schema`, each column in the format asked for it.
pub(super) fn fields(schema: &Schema, formats: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                formats.format_for(i),
            )
        })
        .collect()
}

/// One column cast to what its Postgres type is encoded from: integers to the width of
/// their type, timestamps to microseconds, dates to days, strings to `Utf8`.
fn normalize(c: &ArrayRef, ty: &Type) -> PgWireResult<ArrayRef> {
    let target = match *ty {
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::DATE => DataType::Date32,
        Type::BYTEA => DataType::Binary,
        _ if matches!(c.data_type(), DataType::LargeUtf8 | DataType::Utf8View) => DataType::Utf8,
        _ => return Ok(c.clone()),
    };
    if c.data_type() == &target {
        return Ok(c.clone());
    }
    cast(c, &target).map_err(|e| PgWireError::ApiError(Box::new(e)))
}

/// The rows of `result` as DataRows described by `fields`.
pub(super) fn rows(
    result: &QueryResult,
    fields: &Arc<Vec<FieldInfo>>,
) -> PgWireResult<Vec<DataRow>> {
    let mut out = Vec::with_capacity(result.batches.iter().map(|b| b.num_rows()).sum());
    let mut encoder = DataRowEncoder::new(fields.clone());
    for b in &result.batches {
        let columns = b
            .columns()
            .iter()
            .zip(fields.iter())
            .map(|(c, f)| normalize(c, f.datatype()))
            .collect::<PgWireResult<Vec<_>>>()?;
        for row in 0..b.num_rows() {
            for (c, f) in columns.iter().zip(fields.iter()) {
                value(&mut encoder, c.as_ref(), row, f)?;
            }
            out.push(encoder.take_row());
        }
    }
    Ok(out)
}

/// One value of a normalized column.
fn value(e: &mut DataRowEncoder, c: &dyn Array, i: usize, f: &FieldInfo) -> PgWireResult<()> {
    if c.is_null(i) {
        return e.encode_field(&None::<i8>);
    }
    let binary = f.format() == FieldFormat::Binary;
    match *f.datatype() {
        Type::BOOL => e.encode_field(&c.as_boolean().value(i)),
        Type::INT2 => e.encode_field(&c.as_primitive::<Int16Type>().value(i)),
        Type::INT4 => e.encode_field(&c.as_primitive::<Int32Type>().value(i)),
        Type::INT8 => e.encode_field(&c.as_primitive::<Int64Type>().value(i)),
        Type::FLOAT4 => e.encode_field(&c.as_primitive::<Float32Type>().value(i)),
        Type::FLOAT8 => e.encode_field(&c.as_primitive::<Float64Type>().value(i)),
        Type::BYTEA => e.encode_field(&c.as_binary::<i32>().value(i)),
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = c.as_primitive::<TimestampMicrosecondType>().value(i);
            if binary {
                e.encode_field(&(micros - PG_EPOCH_MICROS))
            } else {
                e.encode_field(&timestamp_text(micros, *f.datatype() == Type::TIMESTAMPTZ))
            }
        }
        Type::DATE => {
            let days = c.as_primitive::<Date32Type>().value(i);
            if binary {
                e.encode_field(&(days - PG_EPOCH_DAYS))
            } else {
                let text = DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                    .map_or_else(|| days.to_string(), |t| t.format("%Y-%m-%d").to_string());
                e.encode_field(&text)
            }
        }
        // Binary `json` is its text.
        Type::JSON => {
            let json = crate::sql::cell(c, i).map_err(|e| error::internal(e.message()))?;
            e.encode_field(&json.to_string())
        }
        _ => match c.data_type() {
            DataType::Utf8 => e.encode_field(&c.as_string::<i32>().value(i)),
            _ => {
                let text = ArrayFormatter::try_new(c, &FormatOptions::default())
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?
                    .value(i)
                    .to_string();
                e.encode_field(&text)
            }
        },
    }
}

/// Postgres's text for a timestamp: ISO date and time, the fraction only when there is one,
/// `+00` when it has a time zone (sessions here are UTC).
fn timestamp_text(micros: i64, tz: bool) -> String {
    let Some(t) = DateTime::from_timestamp_micros(micros) else {
        return micros.to_string();
    };
    let mut s = t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string();
    if tz {
        s.push_str("+00");
    }
    s
}

/// Parameter `i` of `portal`, declared by the client as `declared` (`unknown` when it left
/// the type to the server: then it is text).
pub(super) fn parameter(
    portal: &Portal<String>,
    i: usize,
    declared: &Type,
) -> PgWireResult<ScalarValue> {
    let read = |e: PgWireError| error::parameter(i, &e.to_string());
    Ok(match *declared {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, declared).map_err(read)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, declared).map_err(read)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, declared).map_err(read)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, declared).map_err(read)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, declared).map_err(read)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, declared).map_err(read)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            ScalarValue::Utf8(portal.parameter::<String>(i, declared).map_err(read)?)
        }
        _ => {
            return Err(error::parameter(
                i,
                &format!("type {} is not read; send it as text", declared.name()),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_postgres_prints_them() {
        assert_eq!(timestamp_text(0, true), "1970-01-01 00:00:00+00");
        assert_eq!(
            timestamp_text(1_700_000_000_123_000, false),
            "2023-11-14 22:13:20.123"
        );
        assert_eq!(
            timestamp_text(1_700_000_000_000_001, true),
            "2023-11-14 22:13:20.000001+00"
        );
    }

    #[test]
    fn column_types() {
        use ::sql::arrow::datatypes::Field;
        assert_eq!(pg_type(&DataType::Int64), Type::INT8);
        assert_eq!(pg_type(&DataType::UInt64), Type::TEXT);
        assert_eq!(pg_type(&DataType::Utf8View), Type::TEXT);
        assert_eq!(
            pg_type(&DataType::Timestamp(
                TimeUnit::Millisecond,
                Some("UTC".into())
            )),
            Type::TIMESTAMPTZ
        );
        assert_eq!(
            pg_type(&DataType::Timestamp(TimeUnit::Nanosecond, None)),
            Type::TIMESTAMP
        );
        let map = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        assert_eq!(pg_type(&map), Type::JSON);
        assert_eq!(parameter_type(&DataType::Utf8), Type::TEXT);
        assert_eq!(parameter_type(&DataType::Float64), Type::FLOAT8);
        assert_eq!(
            parameter_type(&DataType::Timestamp(TimeUnit::Nanosecond, None)),
            Type::UNKNOWN
        );
    }
}
