//! The accept loop of the HTTP and OTLP listeners: at most `max_connections` connections at
//! once (more wait in the kernel's backlog), TLS when the web config has it, HTTP/1 and
//! HTTP/2 on one connection builder, and a header read timeout so that a client trickling
//! its request (slowloris) holds a file descriptor for that long only. Accept errors such as
//! EMFILE back off instead of spinning. On shutdown it stops accepting, asks every
//! connection to finish its in-flight requests, and returns once all have closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::{Listener, Web};

#[derive(Debug, Clone, Copy)]
pub struct ListenerOptions {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, the TLS handshake included, and
    /// how long an HTTP/1 connection may wait idle for its next request.
    pub header_read_timeout: Duration,
}

/// First and longest wait after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Serves `app` on `listener` until `shutdown` completes, then drains and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    web: Web,
    kind: Listener,
    opts: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff: Option<Duration> = None;
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if backoff.take().is_some() {
                    tracing::info!(addr = ?listener.local_addr().ok(), "accepting connections again");
                }
                stream
            }
            // The client went away between connecting and our accept: nothing to wait for.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                let wait = match backoff {
                    None => {
                        // One line per streak of failures, not per failure.
                        tracing::warn!(
                            addr = ?listener.local_addr().ok(),
                            "accepting a connection failed, retrying with backoff: {e}"
                        );
                        ACCEPT_BACKOFF.0
                    }
                    Some(d) => (d * 2).min(ACCEPT_BACKOFF.1),
                };
                backoff = Some(wait);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            app.clone(),
            web.tls_for(kind),
            builder.clone(),
            opts.header_read_timeout,
            permit,
            stopped.clone(),
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it has closed.
    let all = u32::try_from(opts.max_connections).unwrap_or(u32::MAX);
    let _ = limit.acquire_many(all).await;
}

/// Completes once the listener stops (or is gone).
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    builder: Arc<Builder<TokioExecutor>>,
    handshake_timeout: Duration,
    _permit: OwnedSemaphorePermit,
    mut stopped: watch::Receiver<bool>,
) {
    let Some(tls) = tls else {
        return drive(TokioIo::new(stream), app, &builder, stopped).await;
    };
    let handshake = tokio::time::timeout(
        handshake_timeout,
        tokio_rustls::TlsAcceptor::from(tls).accept(stream),
    );
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
        _ = stopping(&mut stopped) => return,
    };
    drive(TokioIo::new(stream), app, &builder, stopped).await
}

async fn drive<I>(
    io: TokioIo<I>,
    app: Router,
    builder: &Builder<TokioExecutor>,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("connection closed: {e}");
            }
        }
        _ = stopping(&mut stopped) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
