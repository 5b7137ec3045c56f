//! The catalog schemas beside `public`: `information_schema` (`schemata`, `tables`,
//! `columns`, and DataFusion's `df_settings`, which its `SHOW` reads) and `pg_catalog`
//! (`pg_extension`, empty). Built once, from the tables' schemas (which never change), as
//! in-memory tables each session registers; the columns named as Postgres names them, the
//! types as [`PgType`] gives them. Knows no store.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::config::ConfigOptions;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;

use super::{datetime_precision, PgType};

pub(crate) const INFORMATION_SCHEMA: &str = "information_schema";
pub(crate) const PG_CATALOG: &str = "pg_catalog";

/// The two catalog schemas, ready to register in a session.
#[derive(Clone, Debug)]
pub(crate) struct Catalog {
    information_schema: Arc<MemorySchemaProvider>,
    pg_catalog: Arc<MemorySchemaProvider>,
}

/// One table of a schema, as the catalog lists it.
struct Listed {
    schema: &'static str,
    name: String,
    /// `BASE TABLE`, or `VIEW` for `information_schema`'s own (views in Postgres).
    kind: &'static str,
    columns: SchemaRef,
}

impl Catalog {
    /// The catalog of database `database`, whose `public` schema holds `tables`;
    /// `df_settings` lists `options`.
    pub(crate) fn new(
        database: &str,
        tables: &[(&str, SchemaRef)],
        options: &ConfigOptions,
    ) -> Result<Catalog> {
        let utf8 = |name| Field::new(name, DataType::Utf8, false);
        let schemata = schema(vec![utf8("catalog_name"), utf8("schema_name")]);
        let table_list = schema(vec![
            utf8("table_catalog"),
            utf8("table_schema"),
            utf8("table_name"),
            utf8("table_type"),
        ]);
        let int = |name| Field::new(name, DataType::Int32, true);
        let text = |name| Field::new(name, DataType::Utf8, true);
        let columns = schema(vec![
            utf8("table_catalog"),
            utf8("table_schema"),
            utf8("table_name"),
            utf8("column_name"),
            Field::new("ordinal_position", DataType::Int32, false),
            text("column_default"),
            utf8("is_nullable"),
            utf8("data_type"),
            int("character_maximum_length"),
            int("numeric_precision"),
            int("numeric_precision_radix"),
            int("numeric_scale"),
            int("datetime_precision"),
            utf8("udt_catalog"),
            utf8("udt_schema"),
            utf8("udt_name"),
        ]);
        let settings = schema(vec![utf8("name"), text("value"), text("description")]);
        let extensions = schema(vec![
            Field::new("oid", DataType::Int64, false),
            utf8("extname"),
            Field::new("extowner", DataType::Int64, false),
            Field::new("extnamespace", DataType::Int64, false),
            Field::new("extrelocatable", DataType::Boolean, false),
            utf8("extversion"),
        ]);

        let mut listed: Vec<Listed> = tables
            .iter()
            .map(|(name, columns)| Listed {
                schema: "public",
                name: (*name).to_owned(),
                kind: "BASE TABLE",
                columns: columns.clone(),
            })
            .collect();
        for (name, columns) in [
            ("schemata", &schemata),
            ("tables", &table_list),
            ("columns", &columns),
            ("df_settings", &settings),
        ] {
            listed.push(Listed {
                schema: INFORMATION_SCHEMA,
                name: name.to_owned(),
                kind: "VIEW",
                columns: columns.clone(),
            });
        }
        listed.push(Listed {
            schema: PG_CATALOG,
            name: "pg_extension".to_owned(),
            kind: "BASE TABLE",
            columns: extensions.clone(),
        });

        let information_schema = MemorySchemaProvider::new();
        let schema_names = [INFORMATION_SCHEMA, PG_CATALOG, "public"];
        information_schema.register_table(
            "schemata".to_owned(),
            table(
                &schemata,
                vec![
                    strings(schema_names.iter().map(|_| database)),
                    strings(schema_names),
                ],
            )?,
        )?;
        information_schema.register_table(
            "tables".to_owned(),
            table(
                &table_list,
                vec![
                    strings(listed.iter().map(|_| database)),
                    strings(listed.iter().map(|t| t.schema)),
                    strings(listed.iter().map(|t| t.name.as_str())),
                    strings(listed.iter().map(|t| t.kind)),
                ],
            )?,
        )?;
        information_schema.register_table(
            "columns".to_owned(),
            column_table(&columns, database, &listed)?,
        )?;
        let entries = options.entries();
        information_schema.register_table(
            "df_settings".to_owned(),
            table(
                &settings,
                vec![
                    strings(entries.iter().map(|e| e.key.as_str())),
                    Arc::new(
                        entries
                            .iter()
                            .map(|e| e.value.clone())
                            .collect::<StringArray>(),
                    ),
                    strings(entries.iter().map(|e| e.description)),
                ],
            )?,
        )?;

        let pg_catalog = MemorySchemaProvider::new();
        pg_catalog.register_table(
            "pg_extension".to_owned(),
            Arc::new(MemTable::try_new(extensions.clone(), vec![vec![]])?),
        )?;
        Ok(Catalog {
            information_schema: Arc::new(information_schema),
            pg_catalog: Arc::new(pg_catalog),
        })
    }

    /// Adds both schemas to `ctx`'s catalog `database`.
    pub(crate) fn register(&self, ctx: &SessionContext, database: &str) -> Result<()> {
        let catalog = ctx.catalog(database).ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!("no catalog {database}"))
        })?;
        catalog.register_schema(INFORMATION_SCHEMA, self.information_schema.clone())?;
        catalog.register_schema(PG_CATALOG, self.pg_catalog.clone())?;
        Ok(())
    }

    /// Whether `pg_catalog` has a table `name` (Postgres searches it before any other schema).
    pub(crate) fn in_pg_catalog(&self, name: &str) -> bool {
        self.pg_catalog.table_exist(name)
    }
}

fn schema(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(values.into_iter().map(Some).collect::<StringArray>())
}

fn table(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(
        schema.clone(),
        vec![vec![batch]],
    )?))
}

/// `information_schema.columns`: one row per column of every listed table, in order.
fn column_table(
    schema: &SchemaRef,
    database: &str,
    listed: &[Listed],
) -> Result<Arc<dyn TableProvider>> {
    let rows: Vec<(&Listed, usize, &Field)> = listed
        .iter()
        .flat_map(|t| {
            t.columns
                .fields()
                .iter()
                .enumerate()
                .map(move |(i, f)| (t, i, f.as_ref()))
        })
        .collect();
    let pg = |f: &Field| PgType::of(f.data_type());
    let numeric = |part: fn((i32, i32, Option<i32>)) -> Option<i32>| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|(_, _, f)| pg(f).numeric().and_then(part))
                .collect::<Int32Array>(),
        )
    };
    table(
        schema,
        vec![
            strings(rows.iter().map(|_| database)),
            strings(rows.iter().map(|(t, _, _)| t.schema)),
            strings(rows.iter().map(|(t, _, _)| t.name.as_str())),
            strings(rows.iter().map(|(_, _, f)| f.name().as_str())),
            Arc::new(
                rows.iter()
                    .map(|(_, i, _)| Some(*i as i32 + 1))
                    .collect::<Int32Array>(),
            ),
            Arc::new(rows.iter().map(|_| None::<&str>).collect::<StringArray>()),
            strings(
                rows.iter()
                    .map(|(_, _, f)| if f.is_nullable() { "YES" } else { "NO" }),
            ),
            strings(rows.iter().map(|(_, _, f)| pg(f).sql_name())),
            Arc::new(rows.iter().map(|_| None::<i32>).collect::<Int32Array>()),
            numeric(|(p, _, _)| Some(p)),
            numeric(|(_, r, _)| Some(r)),
            numeric(|(_, _, s)| s),
            Arc::new(
                rows.iter()
                    .map(|(_, _, f)| datetime_precision(f.data_type()))
                    .collect::<Int32Array>(),
            ),
            strings(rows.iter().map(|_| database)),
            strings(rows.iter().map(|_| "pg_catalog")),
            strings(rows.iter().map(|(_, _, f)| pg(f).udt_name())),
        ],
    )
}
