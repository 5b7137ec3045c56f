//! The Postgres wire protocol over the SQL engine, so that `psql`, psycopg, pgx and Grafana's
//! PostgreSQL data source query novamon as they query Postgres. `pgwire` decodes and encodes
//! the messages (SSL negotiation, startup, cleartext password, simple query, extended query)
//! and runs the TLS handshake with the configuration the server gives; this module
//! answers them, and lives in `query/api` beside `POST /api/v1/sql` so that both share one
//! path to the engine ([`SqlState::run`]: the query gate, the query timeout, the row limit,
//! the memory pool, the refusal of anything but reads).
//!
//! - `startup`: who may connect (the web config's basic-auth users, as cleartext password
//!   authentication, needing the read role; anyone when it has none; over TLS only when the
//!   server offers it; no one past the listener's connection limit).
//! - `encode`: Arrow columns as Postgres types, values in the text or binary format asked.
//! - `error`: every failure as an ErrorResponse with its SQLSTATE, mapped in one place.
//!
//! `BEGIN`, `COMMIT` and `ROLLBACK` are answered without effect (drivers such as psycopg open
//! a transaction before their first query; reads need none). `information_schema` answers
//! (the `sql` crate serves it, with the types this module sends); `pg_catalog` holds only an
//! empty `pg_extension`, so psql's `\d` and `\dt`, which read `pg_class`, are refused with a
//! hint to `information_schema` and `SHOW TABLES`. Statements see the connection's user as
//! `current_user`. A CancelRequest (psql's Ctrl-C, psycopg's `cancel()`, pgx's context
//! cancelled) with a connection's process id and secret key stops its running statement:
//! pgwire drops the statement's future, which releases its query slot and stops its store
//! reads, and answers 57014 "canceling statement due to user request", as Postgres does.
//! Owns the wire only: binds no socket (the server does) and plans nothing
//! (the `sql` crate does).

mod encode;
mod error;
mod startup;

use std::fmt::Debug;
use std::sync::Arc;

use ::sql::datafusion_common::ScalarValue;
use async_trait::async_trait;
use futures::Sink;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeResponse, DescribeStatementResponse, QueryResponse, Response,
    Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::tokio::TlsAcceptor;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

pub use startup::PasswordCheck;

use crate::sql::SqlState;

/// How long a connection past the limit may take to send the startup message it is refused
/// after.
const REFUSAL_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// What answers the connections of one Postgres listener. Cheap to clone.
#[derive(Clone)]
pub struct PgServer {
    /// For connections offered no TLS.
    plain: Arc<Handlers>,
    /// For connections offered TLS: the same, but the startup refuses a client that did not
    /// take it.
    secure: Arc<Handlers>,
    /// One permit per connection served; a connection finding none is refused.
    slots: Arc<Semaphore>,
    /// Carries out CancelRequests on the connections registered by the startup.
    cancel: Arc<DefaultCancelHandler>,
}

impl PgServer {
    /// Statements run through `sql` (its gate, timeout and limits); `users` decides who may
    /// connect; at most `max_connections` are served at once.
    pub fn new(sql: SqlState, users: Arc<dyn PasswordCheck>, max_connections: usize) -> PgServer {
        let queries = Arc::new(Queries {
            sql: Arc::new(sql),
            parser: Arc::new(NoopQueryParser),
        });
        let connections = Arc::new(ConnectionManager::new());
        let cancel = Arc::new(DefaultCancelHandler::new(connections.clone()));
        let handlers = |tls_required| {
            Arc::new(Handlers {
                queries: queries.clone(),
                startup: Arc::new(startup::Startup::new(
                    users.clone(),
                    tls_required,
                    connections.clone(),
                )),
                cancel: cancel.clone(),
            })
        };
        PgServer {
            plain: handlers(false),
            secure: handlers(true),
            slots: Arc::new(Semaphore::new(max_connections)),
            cancel,
        }
    }

    /// Speaks the protocol on one accepted connection until the client leaves; a client that
    /// breaks the protocol is answered with an error and disconnected, and one that does not
    /// finish its startup within pgwire's minute too. With `tls`, the client's SSL request is
    /// accepted and one that sends none is refused at its startup (FATAL 28000), as Postgres
    /// refuses a client that only `hostssl` lines of pg_hba.conf would admit: passwords never
    /// cross the network in clear. One past the limit is refused with Postgres's "too many
    /// clients" (FATAL 53300), and given [`REFUSAL_TIME`] to send the startup message it is
    /// refused after, so a flood of them holds no socket for long.
    pub async fn serve(&self, socket: TcpStream, tls: Option<TlsAcceptor>) -> std::io::Result<()> {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            let refusal =
                pgwire::tokio::process_socket(socket, tls, startup::Full(self.cancel.clone()));
            return tokio::time::timeout(REFUSAL_TIME, refusal)
                .await
                .unwrap_or(Ok(()));
        };
        let handlers = match tls {
            Some(_) => self.secure.clone(),
            None => self.plain.clone(),
        };
        pgwire::tokio::process_socket(socket, tls, handlers).await
    }
}

struct Handlers {
    queries: Arc<Queries>,
    startup: Arc<startup::Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

struct Queries {
    sql: Arc<SqlState>,
    parser: Arc<NoopQueryParser>,
}

/// The transaction statements answered without effect, by the tag Postgres answers them with.
fn transaction(query: &str) -> Option<Response> {
    let words: Vec<String> = query
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let first = words.first()?.as_str();
    let only_modifiers = words[1..]
        .iter()
        .all(|w| matches!(w.as_str(), "WORK" | "TRANSACTION"));
    match first {
        "BEGIN" if only_modifiers => Some(Response::TransactionStart(Tag::new("BEGIN"))),
        "START" if words.get(1).map(String::as_str) == Some("TRANSACTION") => {
            Some(Response::TransactionStart(Tag::new("START TRANSACTION")))
        }
        "COMMIT" | "END" if only_modifiers => Some(Response::TransactionEnd(Tag::new("COMMIT"))),
        "ROLLBACK" | "ABORT" if only_modifiers => {
            Some(Response::TransactionEnd(Tag::new("ROLLBACK")))
        }
        _ => None,
    }
}

/// Whether `query` holds no statement: only blanks, semicolons and comments. pgx pings with
/// `-- ping`; Postgres answers such a query with EmptyQueryResponse.
fn is_blank(query: &str) -> bool {
    let mut rest = query;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            match comment.split_once("*/") {
                Some((_, after)) => rest = after,
                // Unterminated: DataFusion's parser reports it.
                None => return false,
            }
        } else {
            return rest.is_empty();
        }
    }
}

/// The connection's user (`current_user`), as its startup message named it.
fn user<C: ClientInfo>(client: &C) -> Option<String> {
    client.metadata().get(pgwire::api::METADATA_USER).cloned()
}

impl Queries {
    /// The engine as `user` sees it.
    fn sql(&self, user: Option<String>) -> SqlState {
        match user {
            Some(u) => self.sql.for_user(&u),
            None => (*self.sql).clone(),
        }
    }

    /// Runs one statement of `user` and encodes its rows in `formats`.
    async fn answer(
        &self,
        user: Option<String>,
        query: &str,
        params: Vec<ScalarValue>,
        formats: &Format,
    ) -> PgWireResult<Response> {
        if is_blank(query) {
            return Ok(Response::EmptyQuery);
        }
        if let Some(r) = transaction(query) {
            return Ok(r);
        }
        let result = self
            .sql(user)
            .run(query, params)
            .await
            .map_err(|e| error::to_pg(e, query))?;
        let fields = Arc::new(encode::fields(&result.schema, formats));
        let rows = encode::rows(&result, &fields)?;
        Ok(Response::Query(QueryResponse::new(
            fields,
            futures::stream::iter(rows.into_iter().map(Ok)),
        )))
    }

    /// A portal's parameters as DataFusion values of the types the statement gives them.
    async fn parameters(&self, portal: &Portal<String>) -> PgWireResult<Vec<ScalarValue>> {
        if portal.parameter_len() == 0 {
            return Ok(Vec::new());
        }
        let query = &portal.statement.statement;
        let inferred = self
            .sql
            .describe(query, Vec::new())
            .await
            .map_err(|e| error::to_pg(e, query))?
            .parameters;
        (0..portal.parameter_len())
            .map(|i| {
                let declared = portal
                    .statement
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or(Type::UNKNOWN);
                let value = encode::parameter(portal, i, &declared)?;
                match inferred.get(i).cloned().flatten() {
                    Some(t) if t != value.data_type() => value
                        .cast_to(&t)
                        .map_err(|e| error::parameter(i, &e.to_string())),
                    _ => Ok(value),
                }
            })
            .collect()
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(vec![
            self.answer(user(client), query, Vec::new(), &Format::UnifiedText)
                .await?,
        ])
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<NoopQueryParser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<String>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let query = &target.statement;
        if is_blank(query) || transaction(query).is_some() {
            return Ok(DescribeStatementResponse::no_data());
        }
        let d = self
            .sql
            .describe(query, Vec::new())
            .await
            .map_err(|e| error::to_pg(e, query))?;
        // The client's declared types first, then what DataFusion inferred.
        let count = target.parameter_types.len().max(d.parameters.len());
        let parameters = (0..count)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| {
                        d.parameters
                            .get(i)
                            .cloned()
                            .flatten()
                            .map(|t| encode::parameter_type(&t))
                    })
                    .unwrap_or(Type::UNKNOWN)
            })
            .collect();
        // Formats are chosen at Bind; a statement's description says text, as Postgres's.
        Ok(DescribeStatementResponse::new(
            parameters,
            encode::fields(&d.schema, &Format::UnifiedText),
        ))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<String>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let query = &target.statement.statement;
        if is_blank(query) || transaction(query).is_some() {
            return Ok(DescribePortalResponse::no_data());
        }
        // Bound, so that a parameter answered as a column is described as its value's type.
        let params = self.parameters(target).await?;
        let d = self
            .sql
            .describe(query, params)
            .await
            .map_err(|e| error::to_pg(e, query))?;
        Ok(DescribePortalResponse::new(encode::fields(
            &d.schema,
            &target.result_column_format,
        )))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<String>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let params = self.parameters(portal).await?;
        self.answer(
            user(client),
            &portal.statement.statement,
            params,
            &portal.result_column_format,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(r: Option<Response>) -> Option<(bool, String)> {
        match r? {
            Response::TransactionStart(t) => Some((true, format!("{t:?}"))),
            Response::TransactionEnd(t) => Some((false, format!("{t:?}"))),
            _ => None,
        }
    }

    #[test]
    fn blank_queries_hold_only_comments() {
        for q in ["", " ; ", "-- ping", "/* a */ -- b\n;", "--"] {
            assert!(is_blank(q), "{q:?}");
        }
        for q in ["SELECT 1", "-- c\nSELECT 1", "/* open", "/* a */ x"] {
            assert!(!is_blank(q), "{q:?}");
        }
    }

    #[test]
    fn transaction_statements_are_recognized_and_nothing_else() {
        for q in [
            "BEGIN",
            "begin;",
            " BEGIN TRANSACTION ",
            "start transaction",
        ] {
            assert_eq!(tag(transaction(q)).map(|t| t.0), Some(true), "{q}");
        }
        for q in ["COMMIT", "commit work;", "END", "ROLLBACK", "abort"] {
            assert_eq!(tag(transaction(q)).map(|t| t.0), Some(false), "{q}");
        }
        for q in [
            "SELECT 1",
            "BEGIN; DROP TABLE metrics",
            "ROLLBACK TO s",
            "",
            "begins",
        ] {
            assert!(transaction(q).is_none(), "{q}");
        }
    }
}
