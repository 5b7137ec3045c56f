//! The accept loop of the HTTP and OTLP listeners: at most `max_connections` connections at
//! once (more wait in the kernel's backlog), TLS when the web config has it, HTTP/1 and
//! HTTP/2 on one connection builder, and a header read timeout so that a client trickling
//! its request (slowloris) holds a file descriptor for that long only. A connection with no
//! request in flight for the idle timeout is closed, whatever its protocol: hyper has no idle
//! timeout for HTTP/2, where an idle h2c, TLS h2 or gRPC connection would otherwise stay open
//! for good. Accept errors such as EMFILE back off instead of spinning. On shutdown it stops
//! accepting, asks every connection to finish its in-flight requests, and returns once all
//! have closed.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use super::{Listener, Web};

#[derive(Debug, Clone, Copy)]
pub struct ListenerOptions {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, the TLS handshake included, and
    /// how long an HTTP/1 connection may wait idle for its next request.
    pub header_read_timeout: Duration,
    /// How long any connection may go without a request in flight before it is closed.
    pub idle_timeout: Duration,
}

/// Go's `http.Server` idle timeout as Prometheus runs it (its read timeout, 5m).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

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
            opts,
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
    opts: ListenerOptions,
    _permit: OwnedSemaphorePermit,
    mut stopped: watch::Receiver<bool>,
) {
    let Some(tls) = tls else {
        return drive(TokioIo::new(stream), app, &builder, opts, stopped).await;
    };
    let handshake = tokio::time::timeout(
        opts.header_read_timeout,
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
    drive(TokioIo::new(stream), app, &builder, opts, stopped).await
}

async fn drive<I>(
    io: TokioIo<I>,
    app: Router,
    builder: &Builder<TokioExecutor>,
    opts: ListenerOptions,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        tower::service_fn(move |req| {
            let busy = InFlight::new(activity.clone());
            let call = app.clone().oneshot(req);
            async move {
                let resp = call.await;
                drop(busy);
                resp
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
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
        _ = idle(&activity, opts.idle_timeout) => {
            // Graceful: a response still streaming is finished first (HTTP/2 GOAWAY, HTTP/1
            // without keep-alive). A peer that does not take part in the goodbye is dropped
            // after one more idle period.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(opts.idle_timeout, conn).await;
        }
    }
}

/// A connection's requests in flight, and when one last started or ended.
struct Activity {
    in_flight: AtomicUsize,
    since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            since: Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn since(&self) -> Instant {
        *self.since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One request in flight on its connection while this lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.touch();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Completes once the connection has had no request in flight for `timeout`.
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        let busy = activity.in_flight.load(Ordering::SeqCst) > 0;
        let since = activity.since();
        if !busy && since.elapsed() >= timeout {
            return;
        }
        // A busy connection is looked at again a period later; the request's end moves
        // `since` forward.
        let next = if busy {
            Instant::now() + timeout
        } else {
            since + timeout
        };
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A listener whose only route answers after three idle periods; headers have all the
    /// time they want, so only the idle timeout closes connections.
    async fn start(idle: Duration) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/slow",
            axum::routing::get(move || async move {
                tokio::time::sleep(idle * 3).await;
                "done"
            }),
        );
        let opts = ListenerOptions {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(3600),
            idle_timeout: idle,
        };
        let web = Web::open(None).unwrap();
        tokio::spawn(serve(
            listener,
            app,
            web,
            Listener::Http,
            opts,
            std::future::pending(),
        ));
        addr
    }

    /// Everything the server sends until it closes the connection.
    async fn until_closed(conn: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 4096];
            // A reset counts as closed too.
            while let Ok(n @ 1..) = conn.read(&mut buf).await {
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("the idle connection is still open after 30s");
        got
    }

    /// The types of the HTTP/2 frames in `bytes`.
    fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        while bytes.len() >= 9 {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            types.push(bytes[3]);
            bytes = &bytes[(9 + len).min(bytes.len())..];
        }
        types
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_http2_and_silent_connections_are_closed() {
        let addr = start(Duration::from_millis(200)).await;
        let mut h2 = TcpStream::connect(addr).await.unwrap();
        // The h2c preface and an empty SETTINGS frame: an HTTP/2 connection with no stream.
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let got = until_closed(&mut h2).await;
        // The server's SETTINGS, and a GOAWAY (type 7) before it closed.
        assert!(frame_types(&got).contains(&7), "{got:?}");
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert_eq!(until_closed(&mut silent).await, b"");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_in_flight_keeps_its_connection_until_answered() {
        let addr = start(Duration::from_millis(200)).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Answered after three idle periods, then closed once idle (keep-alive).
        let got = String::from_utf8(until_closed(&mut conn).await).unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.ends_with("done"), "{got}");
    }
}
