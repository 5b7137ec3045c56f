//! Who may connect: when the web config has basic-auth users, a connection authenticates
//! with Postgres's cleartext password message and needs the read role, checked by the
//! server's [`PasswordCheck`] (the same users, bcrypt hashes and roles as HTTP); when it has
//! none, anyone connects, as on the HTTP listener. The choice is made per connection, so a
//! reloaded web config applies to the next one. When the server has TLS on, a client that
//! did not take it is refused before any password is asked for. A connection past the
//! listener's limit is refused once its startup message arrives ([`Full`]). Every connection
//! admitted is registered with the listener's `ConnectionManager` under the process id and
//! secret key its BackendKeyData gives, so that a CancelRequest naming them (on a connection
//! of its own, which is served even past the limit, as Postgres serves it) stops its
//! statement. Knows no credentials itself.

use std::fmt::{self, Debug};
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

/// The server's check of a user's password and read role.
#[async_trait]
pub trait PasswordCheck: Send + Sync {
    /// Whether a new connection must authenticate (the web config has users).
    fn required(&self) -> bool;
    /// Whether `user` with `password` is a known user holding the read role.
    async fn may_read(&self, user: &str, password: &str) -> bool;
}

pub(super) struct Startup {
    users: Arc<dyn PasswordCheck>,
    password: CleartextPasswordAuthStartupHandler<Users, DefaultServerParameterProvider>,
    open: Open,
    /// Whether a client must have taken the TLS it was offered.
    tls_required: bool,
}

impl Startup {
    /// Admitted connections are registered with `connections` (for cancel requests).
    pub(super) fn new(
        users: Arc<dyn PasswordCheck>,
        tls_required: bool,
        connections: Arc<ConnectionManager>,
    ) -> Startup {
        Startup {
            password: CleartextPasswordAuthStartupHandler::new(
                Users(users.clone()),
                DefaultServerParameterProvider::default(),
            )
            .with_connection_manager(connections.clone()),
            users,
            open: Open(connections),
            tls_required,
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(_) if self.tls_required && !client.is_secure() => {
                Err(super::error::tls_required())
            }
            PgWireFrontendMessage::Startup(_) if !self.users.required() => {
                self.open.on_startup(client, message).await
            }
            // The startup message when users are configured, and the password after it.
            _ => self.password.on_startup(client, message).await,
        }
    }
}

/// No authentication: the web config has no users.
struct Open(Arc<ConnectionManager>);

impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.0.clone())
    }
}

/// The users as pgwire's source of passwords: verified by the server, never read back.
struct Users(Arc<dyn PasswordCheck>);

impl Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Users")
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // Passwords are bcrypt hashes: only `verify_password` can check them.
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_owned(),
        ))
    }

    async fn verify_password(
        &self,
        login: &LoginInfo,
        presented: &[u8],
    ) -> PgWireResult<Option<()>> {
        let user = login.user().unwrap_or_default();
        let ok = match std::str::from_utf8(presented) {
            Ok(password) => self.0.may_read(user, password).await,
            Err(_) => false,
        };
        if ok {
            Ok(None)
        } else {
            Err(PgWireError::InvalidPassword(user.to_owned()))
        }
    }
}

/// The handlers of a connection past the limit: its SSL request is declined as on any
/// connection, then its startup message is answered with FATAL 53300 and the connection
/// closed, as Postgres answers a client past `max_connections` (psql shows "sorry, too many
/// clients already"); a CancelRequest is still carried out.
pub(super) struct Full(pub(super) Arc<DefaultCancelHandler>);

impl PgWireServerHandlers for Full {
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Refuse)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.0.clone()
    }
}

/// The startup of a connection past the limit.
struct Refuse;

#[async_trait]
impl StartupHandler for Refuse {
    async fn on_startup<C>(&self, _: &mut C, _: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(super::error::too_many_clients())
    }
}
