//! Postgres's rules for the FROM clause that DataFusion does not follow, applied to the
//! parsed statement before it is planned:
//! - a set-returning function of one column (`generate_series`, `range`) aliased without a
//!   column list names its column after the alias: `generate_series(1, 3) AS i` is
//!   `… AS i(i)` (DataFusion would name it `value`);
//! - a scalar function in FROM is a one-row table whose column is named after the alias (or
//!   the function): `string_to_array('a,b', ',') s` is `(SELECT string_to_array(…) AS s) s`;
//! - an unqualified table name that `pg_catalog` holds is that table, as `pg_catalog` is
//!   searched first (`pg_extension` is `pg_catalog.pg_extension`).
//!
//! Knows nothing of what the statement reads; only table and function names.

use std::ops::ControlFlow;

use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    FunctionArg, Ident, ObjectName, ObjectNamePart, TableAlias, TableAliasColumnDef, TableFactor,
    VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::catalog::PG_CATALOG;
use super::Catalog;

/// The table functions of one column, named `value` by DataFusion.
const SINGLE_COLUMN: [&str; 2] = ["generate_series", "range"];

/// Rewrites `statement` (and the statement an EXPLAIN explains) in place.
pub(crate) fn rewrite(
    statement: &mut DFStatement,
    state: &SessionState,
    catalog: &Catalog,
) -> Result<()> {
    match statement {
        DFStatement::Statement(s) => {
            let mut from = FromRules {
                state,
                catalog,
                error: None,
            };
            let _ = s.visit(&mut from);
            match from.error {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        DFStatement::Explain(e) => rewrite(&mut e.statement, state, catalog),
        _ => Ok(()),
    }
}

struct FromRules<'a> {
    state: &'a SessionState,
    catalog: &'a Catalog,
    error: Option<datafusion::error::DataFusionError>,
}

/// A one-part name as Postgres reads it: folded to lower case unless quoted.
fn simple_name(name: &ObjectName) -> Option<String> {
    let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
        return None;
    };
    Some(match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    })
}

impl VisitorMut for FromRules<'_> {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name, alias, args, ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(simple) = simple_name(name) else {
            return ControlFlow::Continue(());
        };
        let Some(call) = args else {
            if self.catalog.in_pg_catalog(&simple) {
                name.0
                    .insert(0, ObjectNamePart::Identifier(Ident::new(PG_CATALOG)));
            }
            return ControlFlow::Continue(());
        };
        if self.state.table_functions().contains_key(&simple) {
            if let Some(a) = alias {
                if a.columns.is_empty() && SINGLE_COLUMN.contains(&simple.as_str()) {
                    a.columns = vec![TableAliasColumnDef {
                        name: a.name.clone(),
                        data_type: None,
                    }];
                }
            }
            return ControlFlow::Continue(());
        }
        if !self.state.scalar_functions().contains_key(&simple) {
            return ControlFlow::Continue(());
        }
        let column = alias
            .as_ref()
            .map_or_else(|| Ident::new(&simple), |a| a.name.clone());
        let args: Vec<String> = call.args.iter().map(FunctionArg::to_string).collect();
        let select = format!("SELECT {name}({}) AS {column}", args.join(", "));
        match Parser::new(&GenericDialect {})
            .try_with_sql(&select)
            .and_then(|mut p| p.parse_query())
        {
            Ok(subquery) => {
                *factor = TableFactor::Derived {
                    lateral: false,
                    subquery,
                    alias: Some(alias.clone().unwrap_or(TableAlias {
                        explicit: true,
                        name: column,
                        columns: Vec::new(),
                        at: None,
                    })),
                    sample: None,
                };
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.error = Some(e.into());
                ControlFlow::Break(())
            }
        }
    }
}
