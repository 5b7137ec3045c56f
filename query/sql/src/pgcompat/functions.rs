//! Postgres's functions that clients' catalog queries call and DataFusion lacks, as scalar
//! UDFs registered in each session: `quote_ident`, `parse_ident`, `current_setting`,
//! `array_lower`, `array_upper`, and `current_user` (also `user` and `session_user`: the
//! connection's user, NULL when the statement came over HTTP, which has no role). Each
//! answers what Postgres answers for the same arguments (`string_to_array`,
//! `array_length` and `generate_series` are DataFusion's own).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use super::setting;

/// Registers the functions in `ctx`; `user` is what `current_user` answers.
pub(crate) fn register(ctx: &SessionContext, user: Option<&str>) {
    let text = || TypeSignature::Exact(vec![DataType::Utf8]);
    let text_bool = || TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]);
    let functions = [
        PgFunction::new(
            "quote_ident",
            vec![text()],
            DataType::Utf8,
            Eval::QuoteIdent,
        ),
        PgFunction::new(
            "parse_ident",
            vec![text(), text_bool()],
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            Eval::ParseIdent,
        ),
        PgFunction::new(
            "current_setting",
            vec![text(), text_bool()],
            DataType::Utf8,
            Eval::CurrentSetting,
        ),
        PgFunction::new(
            "array_lower",
            vec![TypeSignature::Any(2)],
            DataType::Int64,
            Eval::ArrayBound { upper: false },
        ),
        PgFunction::new(
            "array_upper",
            vec![TypeSignature::Any(2)],
            DataType::Int64,
            Eval::ArrayBound { upper: true },
        ),
        PgFunction::new(
            "current_user",
            vec![TypeSignature::Nullary],
            DataType::Utf8,
            Eval::User(user.map(str::to_owned)),
        ),
    ];
    for f in functions {
        ctx.register_udf(ScalarUDF::new_from_impl(f));
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum Eval {
    QuoteIdent,
    ParseIdent,
    CurrentSetting,
    ArrayBound { upper: bool },
    User(Option<String>),
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgFunction {
    name: &'static str,
    aliases: Vec<String>,
    signature: Signature,
    returns: DataType,
    eval: Eval,
}

impl PgFunction {
    fn new(
        name: &'static str,
        signatures: Vec<TypeSignature>,
        returns: DataType,
        eval: Eval,
    ) -> PgFunction {
        let aliases = match eval {
            // Postgres's `user` and `session_user` are `current_user` (no SET ROLE here).
            Eval::User(_) => vec!["user".to_owned(), "session_user".to_owned()],
            _ => Vec::new(),
        };
        // Settings and identifiers never change while the server runs: constant arguments
        // fold at planning, as `generate_series` needs its bounds to.
        PgFunction {
            name,
            aliases,
            signature: Signature::one_of(signatures, Volatility::Immutable),
            returns,
            eval,
        }
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Eval::User(user) = &self.eval {
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(user.clone())));
        }
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out: ArrayRef = match self.eval {
            Eval::QuoteIdent => {
                let s = arrays[0].as_string::<i32>();
                Arc::new(
                    s.iter()
                        .map(|v| v.map(quote_ident))
                        .collect::<StringArray>(),
                )
            }
            Eval::ParseIdent => {
                let s = arrays[0].as_string::<i32>();
                let strict = arrays.get(1).map(|a| a.as_boolean());
                let mut b = ListBuilder::new(StringBuilder::new());
                for i in 0..s.len() {
                    if s.is_null(i) || strict.is_some_and(|a| a.is_null(i)) {
                        b.append_null();
                        continue;
                    }
                    let strict = strict.is_none_or(|a| a.value(i));
                    for part in parse_ident(s.value(i), strict)? {
                        b.values().append_value(part);
                    }
                    b.append(true);
                }
                Arc::new(b.finish())
            }
            Eval::CurrentSetting => {
                let s = arrays[0].as_string::<i32>();
                let missing_ok = arrays.get(1).map(|a| a.as_boolean());
                let mut out = Vec::with_capacity(s.len());
                for i in 0..s.len() {
                    if s.is_null(i) {
                        out.push(None);
                        continue;
                    }
                    match setting(s.value(i)) {
                        Some(v) => out.push(Some(v)),
                        None if missing_ok.is_some_and(|a| a.is_valid(i) && a.value(i)) => {
                            out.push(None)
                        }
                        None => {
                            return exec_err!(
                                "unrecognized configuration parameter \"{}\"",
                                s.value(i)
                            )
                        }
                    }
                }
                Arc::new(StringArray::from(out))
            }
            Eval::ArrayBound { upper } => {
                let dims = cast(&arrays[1], &DataType::Int64)?;
                let dims = dims.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                let lengths = list_lengths(&arrays[0])?;
                Arc::new(
                    lengths
                        .iter()
                        .enumerate()
                        .map(|(i, len)| {
                            // One-dimensional arrays: dimension 1 has bounds 1..=len; an
                            // empty array and any other dimension have none (NULL).
                            let len = (*len)?;
                            (dims.is_valid(i) && dims.value(i) == 1 && len > 0)
                                .then_some(if upper { len } else { 1 })
                        })
                        .collect::<Int64Array>(),
                )
            }
            Eval::User(_) => unreachable!("answered above"),
        };
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

/// Each row's list length (None for a NULL list).
fn list_lengths(a: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let len = |offsets: &[i64], i: usize| offsets[i + 1] - offsets[i];
    Ok(match a.data_type() {
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let offsets: Vec<i64> = l.offsets().iter().map(|o| i64::from(*o)).collect();
            (0..l.len())
                .map(|i| l.is_valid(i).then(|| len(&offsets, i)))
                .collect()
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            (0..l.len())
                .map(|i| l.is_valid(i).then(|| len(l.offsets(), i)))
                .collect()
        }
        DataType::FixedSizeList(_, n) => {
            let l = a.as_fixed_size_list();
            (0..l.len())
                .map(|i| l.is_valid(i).then_some(i64::from(*n)))
                .collect()
        }
        DataType::Null => vec![None; a.len()],
        other => return exec_err!("array_lower/array_upper take an array, not {other}"),
    })
}

/// Postgres's keywords other than its unreserved ones (`src/include/parser/kwlist.h`,
/// Postgres 16): `quote_ident` quotes them.
const KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "json_array",
    "json_arrayagg",
    "json_object",
    "json_objectagg",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

/// `s` as an identifier Postgres reads back as `s`: bare when it is lower case letters,
/// digits and underscores not starting with a digit and no keyword, else in double quotes
/// with its quotes doubled.
pub(crate) fn quote_ident(s: &str) -> String {
    let safe = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && KEYWORDS.binary_search(&s).is_err();
    if safe {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// A qualified identifier split into its names, as Postgres's `parse_ident`: unquoted names
/// folded to lower case, quoted ones as written (`""` a quote); with `strict`, anything
/// after the last name is an error, without, it is ignored.
pub(crate) fn parse_ident(s: &str, strict: bool) -> Result<Vec<String>> {
    let invalid = |why: &str| exec_err!("string is not a valid identifier: \"{s}\" ({why})");
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut parts = Vec::new();
    let skip_space = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_space(&mut i);
        let Some(&c) = chars.get(i) else {
            return invalid("no identifier");
        };
        if c == '"' {
            let mut name = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return invalid("unclosed double quotes"),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        name.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        name.push(c);
                        i += 1;
                    }
                }
            }
            if name.is_empty() {
                return invalid("quoted identifier cannot be empty");
            }
            parts.push(name);
        } else if c.is_alphabetic() || c == '_' || !c.is_ascii() {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '$' || !c.is_ascii())
            {
                i += 1;
            }
            parts.push(chars[start..i].iter().collect::<String>().to_lowercase());
        } else {
            return invalid("no identifier");
        }
        skip_space(&mut i);
        match chars.get(i) {
            Some('.') => i += 1,
            None => return Ok(parts),
            Some(_) if strict => return invalid("text after the identifier"),
            Some(_) => return Ok(parts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_sorted_for_the_binary_search() {
        assert!(KEYWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn quote_ident_quotes_what_postgres_quotes() {
        for (ident, quoted) in [
            ("metrics", "metrics"),
            ("trace_id", "trace_id"),
            // Unreserved keywords stay bare, as in Postgres.
            ("value", "value"),
            ("name", "name"),
            ("user", "\"user\""),
            ("Metrics", "\"Metrics\""),
            ("a-b", "\"a-b\""),
            ("1a", "\"1a\""),
            ("a\"b", "\"a\"\"b\""),
            ("", "\"\""),
        ] {
            assert_eq!(quote_ident(ident), quoted, "{ident}");
        }
    }

    #[test]
    fn parse_ident_splits_folds_and_keeps_quoted_names() {
        let ok = |s: &str| parse_ident(s, true).unwrap();
        assert_eq!(ok("metrics"), ["metrics"]);
        assert_eq!(ok(" Public . Metrics "), ["public", "metrics"]);
        assert_eq!(ok("\"My \"\"T\"\"\".x"), ["My \"T\"", "x"]);
        for bad in ["", "a.", ".a", "a b", "\"\"", "\"open", "1a"] {
            assert!(parse_ident(bad, true).is_err(), "{bad}");
        }
        assert_eq!(parse_ident("a.b(c)", false).unwrap(), ["a", "b"]);
    }
}
