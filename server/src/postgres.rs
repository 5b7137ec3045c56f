//! The Postgres listener (`listeners.postgres`, off unless set): binds it, hands each
//! connection to `api::postgres` with the web config's TLS when it has TLS on, and checks
//! passwords against the web config's basic-auth users and their read role, as the HTTP
//! listener checks them. Holds no protocol logic.

use std::net::SocketAddr;

use anyhow::Context;
use async_trait::async_trait;
use axum::http::HeaderValue;
use base64::Engine as _;
use tokio::task::JoinSet;

use crate::web::{Role, Web};

/// The web config's users, asked as an `Authorization: Basic` header would ask them.
struct WebUsers(Web);

#[async_trait]
impl api::postgres::PasswordCheck for WebUsers {
    fn required(&self) -> bool {
        self.0.has_credentials()
    }

    async fn may_read(&self, user: &str, password: &str) -> bool {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        match HeaderValue::from_str(&format!("Basic {basic}")) {
            Ok(h) => self.0.authorize(Some(&h), Role::Read).await.is_ok(),
            Err(_) => false,
        }
    }
}

/// Binds `addr` and serves the Postgres wire protocol until the returned task is aborted,
/// which also ends every open connection.
pub async fn start(
    addr: SocketAddr,
    sql: api::sql::SqlState,
    web: &Web,
    max_connections: usize,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(
        addr = %local,
        auth = web.has_credentials(),
        tls = web.has_tls(),
        "Postgres wire protocol listening"
    );
    let server = api::postgres::PgServer::new(
        sql,
        std::sync::Arc::new(WebUsers(web.clone())),
        max_connections,
    );
    let web = web.clone();
    Ok(tokio::spawn(async move {
        // Dropped with this task: the connections end with the listener.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let server = server.clone();
                        // Read per connection: a reload's new certificate serves the next one.
                        let tls = web.postgres_tls().map(tokio_rustls::TlsAcceptor::from);
                        connections.spawn(async move {
                            if let Err(e) = server.serve(socket, tls).await {
                                tracing::debug!(%peer, "Postgres connection: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("Postgres listener: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }))
}
