//! Uncorrelated `x IN (SELECT …)` where DataFusion cannot run it: DataFusion turns such
//! subqueries into joins only in a WHERE clause, and fails on one in a select list or an
//! ORDER BY (Grafana's table listing has both). As the subquery depends on no outer row, its
//! answer is the same for every row: it is run first and the predicate becomes
//! `x IN (v1, v2, …)`, which SQL's three-valued logic answers exactly as the subquery (a NULL
//! among the values included). Subqueries in WHERE are left to DataFusion's joins. Plans and
//! runs nothing else.

use std::future::Future;
use std::pin::Pin;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::{InList, InSubquery};
use datafusion::logical_expr::{lit, Expr, LogicalPlan, Subquery};
use datafusion::prelude::SessionContext;

/// `plan` with every uncorrelated `IN` subquery outside a filter replaced by the list of
/// the values it answers (at most `max_values` each).
pub(crate) fn inline_uncorrelated<'a>(
    ctx: &'a SessionContext,
    plan: LogicalPlan,
    max_values: usize,
) -> Pin<Box<dyn Future<Output = Result<LogicalPlan>> + Send + 'a>> {
    Box::pin(async move {
        let mut found: Vec<Subquery> = Vec::new();
        plan.apply_with_subqueries(|node| {
            if !matches!(node, LogicalPlan::Filter(_)) {
                node.apply_expressions(|e| {
                    e.apply(|e| {
                        if let Expr::InSubquery(InSubquery { subquery, .. }) = e {
                            if subquery.outer_ref_columns.is_empty() && !found.contains(subquery) {
                                found.push(subquery.clone());
                            }
                        }
                        Ok(TreeNodeRecursion::Continue)
                    })
                })?;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if found.is_empty() {
            return Ok(plan);
        }
        let mut lists = Vec::with_capacity(found.len());
        for s in &found {
            let inner = inline_uncorrelated(ctx, (*s.subquery).clone(), max_values).await?;
            let batches = ctx.execute_logical_plan(inner).await?.collect().await?;
            let mut values = Vec::new();
            for b in &batches {
                let column = b.column(0);
                if values.len() + column.len() > max_values {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "an IN subquery outside WHERE answers more than {max_values} values"
                    )));
                }
                for i in 0..column.len() {
                    values.push(lit(ScalarValue::try_from_array(column, i)?));
                }
            }
            lists.push(values);
        }
        plan.transform_down_with_subqueries(|node| {
            if matches!(node, LogicalPlan::Filter(_)) {
                return Ok(Transformed::no(node));
            }
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::InSubquery(InSubquery {
                        expr,
                        subquery,
                        negated,
                    }) => match found.iter().position(|s| *s == subquery) {
                        Some(i) => Ok(Transformed::yes(Expr::InList(InList::new(
                            expr,
                            lists[i].clone(),
                            negated,
                        )))),
                        None => Ok(Transformed::no(Expr::InSubquery(InSubquery {
                            expr,
                            subquery,
                            negated,
                        }))),
                    },
                    e => Ok(Transformed::no(e)),
                })
            })
        })
        .map(|t| t.data)
    })
}
