//! The Fluentd Forward Protocol v1 listener: accepts TCP connections (optionally TLS), runs the
//! shared-key handshake (with user/password authentication) when configured, decodes event
//! frames, appends their records durably and only then acknowledges `chunk`s. A malformed frame closes that connection alone, with one log
//! line saying why; so do a frame holding a record the store would never return (not acked,
//! so the sender keeps it), a frame beyond its entry or decoded-size budget, a frame that
//! stalls midway, a PING that never comes and a connection idle between frames. Frames are decoded on the blocking pool. Each connection handles one frame at a time and reads at most
//! `max_frame_bytes` ahead, so a slow store pushes back through TCP instead of buffering.

mod frame;
mod handshake;
mod scan;
mod tls;

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use rmpv::Value;
use storage::Classify;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::LogSink;
pub use handshake::ForwardUser;
use handshake::{Handshake, PingOutcome};
pub use tls::{ForwardTls, TlsError};

#[derive(Clone, Debug)]
pub struct ForwardOptions {
    /// When set, clients must complete the HELO/PING/PONG handshake with this key.
    pub shared_key: Option<String>,
    /// When non-empty (and `shared_key` is set), the handshake also requires one of these
    /// users' name and password.
    pub users: Vec<ForwardUser>,
    /// When set, connections are TLS.
    pub tls: Option<ForwardTls>,
    /// The hostname sent in PONG.
    pub self_hostname: String,
    /// Largest frame accepted; a larger one closes the connection.
    pub max_frame_bytes: usize,
    /// Largest payload a CompressedPackedForward frame may decompress to.
    pub max_decompressed_bytes: u64,
    /// Most entries (events) one frame may carry; a frame with more closes the connection.
    pub max_frame_entries: usize,
    /// Most bytes of decoded msgpack values per byte of frame (see
    /// [`crate::DEFAULT_MAX_EXPANSION`]); a frame beyond it closes the connection.
    pub max_expansion: usize,
    /// Connections served at once; more clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// A client that opens TLS but never finishes the handshake gives its slot back after this.
    pub tls_handshake_timeout: Duration,
    /// With a shared key, a client that does not send its PING within this after HELO gives
    /// its slot back.
    pub handshake_timeout: Duration,
    /// A frame must arrive whole within this of its first byte; a connection that stalls in
    /// the middle of a frame is closed and its buffer freed.
    pub frame_timeout: Duration,
    /// A connection with no byte of a next frame within this of the last one is closed and
    /// its slot freed (the sender reconnects for its next chunk; unacked chunks are resent).
    pub idle_timeout: Duration,
}

/// The default of [`ForwardOptions::idle_timeout`]. Fluentd's out_forward opens a connection
/// per flush unless `keepalive` is set (its `keepalive_timeout` then defaults to none), and
/// its heartbeats open connections of their own; Fluent Bit drops idle keep-alive
/// connections itself after 30s. Five minutes outlasts a 60s flush interval with margin.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            shared_key: None,
            users: Vec::new(),
            tls: None,
            self_hostname: "novamon".into(),
            max_frame_bytes: 16 << 20,
            max_decompressed_bytes: 16 << 20,
            max_frame_entries: 1_000_000,
            max_expansion: crate::DEFAULT_MAX_EXPANSION,
            max_connections: 1024,
            tls_handshake_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(60),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed msgpack: {0}")]
    Msgpack(String),
    #[error("frame larger than {0} bytes")]
    TooLarge(usize),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("malformed frame: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("TLS handshake did not finish within {0:?}")]
    TlsTimeout(Duration),
    #[error("no PING within {0:?} of HELO")]
    PingTimeout(Duration),
    #[error("frame did not arrive whole within {0:?}")]
    FrameTimeout(Duration),
    #[error("no frame within {0:?} of the last")]
    IdleTimeout(Duration),
    #[error("{0}")]
    Scan(#[from] scan::ScanError),
    #[error("frame decodes to more than {0} bytes of records")]
    RecordsTooLarge(usize),
    /// A record the store would never return (Fluentd's in_forward answers a broken chunk
    /// the same way: no ack, so the sender keeps it).
    #[error("refusing the frame without ack: {0}")]
    OutOfBounds(#[from] crate::logs::bounds::OutOfBounds),
    #[error("storing records: {0}")]
    Store(#[from] storage::StorageError),
    #[error("decoding task failed: {0}")]
    Task(String),
}

impl ConnError {
    fn retryable(&self) -> bool {
        matches!(self, ConnError::Store(e) if e.class() == storage::ErrorClass::Unavailable)
    }
}

/// Go's net/http backs off this way when accept fails (out of file descriptors): without
/// it the loop spins, logging each failure.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one accept failure logged per this; the others are counted into the next line.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The accept loop's state after failures: how long to wait, and whether to log.
#[derive(Debug, Default)]
struct AcceptBackoff {
    delay: Option<Duration>,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    /// After a failure at `now`: the pause before the next accept, and the count of failures
    /// to log now (None while a line was logged within the interval).
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let delay = self
            .delay
            .map_or(ACCEPT_BACKOFF_START, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
        self.delay = Some(delay);
        self.unlogged += 1;
        let due = self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_INTERVAL);
        if !due {
            return (delay, None);
        }
        self.last_log = Some(now);
        (delay, Some(std::mem::take(&mut self.unlogged)))
    }

    fn succeeded(&mut self) {
        self.delay = None;
    }
}

/// Serves the forward protocol on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, sink: LogSink, opts: ForwardOptions) {
    let opts = Arc::new(opts);
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut backoff = AcceptBackoff::default();
    loop {
        // Waiting for a free slot before accepting leaves excess clients in the kernel's backlog.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => {
                backoff.succeeded();
                c
            }
            Err(e) => {
                let (delay, log) = backoff.failed(Instant::now());
                if let Some(n) = log {
                    tracing::warn!(
                        failures = n,
                        "forward: accept failed: {e}; retrying in {delay:?}"
                    );
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let (sink, opts) = (sink.clone(), opts.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let served = match &opts.tls {
                None => {
                    Conn::new(stream, opts.max_frame_bytes)
                        .run(&sink, &opts)
                        .await
                }
                Some(tls) => {
                    let limit = opts.tls_handshake_timeout;
                    match tokio::time::timeout(limit, tls.0.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            Conn::new(stream, opts.max_frame_bytes)
                                .run(&sink, &opts)
                                .await
                        }
                        Ok(Err(e)) => Err(ConnError::Tls(e)),
                        Err(_) => Err(ConnError::TlsTimeout(limit)),
                    }
                }
            };
            match served {
                Ok(()) => {}
                // Closed without ack, so the sender keeps the chunk and retries; the store
                // logs the failure itself, once per episode, however many senders retry.
                Err(e) if e.retryable() => {
                    tracing::debug!(%peer, "forward: closing connection: {e}");
                }
                Err(e) => tracing::warn!(%peer, "forward: closing connection: {e}"),
            }
        });
    }
}

/// Serves one accepted connection (past TLS, if any) as [`serve`] does: the handshake when a
/// shared key is set, then frames until the client closes. For driving the protocol over
/// another stream (the fuzz targets use an in-memory one).
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    sink: &LogSink,
    opts: &ForwardOptions,
) -> Result<(), impl std::error::Error> {
    Conn::new(stream, opts.max_frame_bytes)
        .run(sink, opts)
        .await
}

struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    max: usize,
    /// How far the frame at the start of `buf` has been scanned.
    scanner: scan::Scanner,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, max: usize) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
            max,
            scanner: scan::Scanner::default(),
        }
    }

    async fn run(mut self, sink: &LogSink, opts: &ForwardOptions) -> Result<(), ConnError> {
        if let Some(key) = &opts.shared_key {
            let hs = Handshake::new(!opts.users.is_empty())
                .map_err(|e| ConnError::Handshake(e.to_string()))?;
            self.send(&hs.helo()).await?;
            let limit = opts.handshake_timeout;
            let ping = tokio::time::timeout(limit, self.next_frame(opts))
                .await
                .map_err(|_| ConnError::PingTimeout(limit))??;
            let Some(ping) = ping else {
                return Ok(());
            };
            let ping = rmpv::decode::read_value(&mut &ping[..])
                .map_err(|e| ConnError::Msgpack(e.to_string()))?;
            match hs.answer(&ping, key, &opts.users, &opts.self_hostname) {
                PingOutcome::Accepted(pong) => self.send(&pong).await?,
                PingOutcome::Rejected(pong, reason) => {
                    self.send(&pong).await?;
                    return Err(ConnError::Handshake(reason));
                }
            }
        }
        let limits = frame::FrameLimits {
            max_decompressed: opts.max_decompressed_bytes,
            max_entries: opts.max_frame_entries,
            max_expansion: opts.max_expansion,
        };
        while let Some(bytes) = self.next_frame(opts).await? {
            // Decoding a large frame takes a while: off the async workers.
            let decoder = sink.clone();
            let (records, chunk) =
                tokio::task::spawn_blocking(move || decode_frame(&bytes, &decoder, &limits))
                    .await
                    .map_err(|e| ConnError::Task(e.to_string()))??;
            sink.append(crate::metrics::Protocol::Forward, records)
                .await?;
            if let Some(chunk) = chunk {
                self.send(&Value::Map(vec![(Value::from("ack"), Value::from(chunk))]))
                    .await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, v: &Value) -> Result<(), ConnError> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).map_err(|e| ConnError::Msgpack(e.to_string()))?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The bytes of the next complete msgpack value, or None at a clean end of stream. Only
    /// finds where the value ends (and that its value tree stays within budget); decoding is
    /// the caller's. A frame that has begun must be whole within `opts.frame_timeout`; the
    /// next must begin within `opts.idle_timeout`.
    async fn next_frame(&mut self, opts: &ForwardOptions) -> Result<Option<Vec<u8>>, ConnError> {
        let mut deadline = (!self.buf.is_empty()).then(|| Instant::now() + opts.frame_timeout);
        loop {
            if !self.buf.is_empty() {
                let max_values = scan::max_values(self.buf.len(), opts.max_expansion);
                if let Some((len, _)) = self.scanner.resume(&self.buf, max_values)? {
                    let rest = self.buf.split_off(len);
                    return Ok(Some(std::mem::replace(&mut self.buf, rest)));
                }
                if self.buf.len() >= self.max {
                    return Err(ConnError::TooLarge(self.max));
                }
            }
            let filled = match deadline {
                None => tokio::time::timeout(opts.idle_timeout, self.fill())
                    .await
                    .map_err(|_| ConnError::IdleTimeout(opts.idle_timeout))??,
                Some(at) => tokio::time::timeout_at(at, self.fill())
                    .await
                    .map_err(|_| ConnError::FrameTimeout(opts.frame_timeout))??,
            };
            if !filled {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnError::Truncated)
                };
            }
            deadline.get_or_insert_with(|| Instant::now() + opts.frame_timeout);
        }
    }

    /// Reads what is available (at least one byte, at most up to the frame limit); false at
    /// end of stream. Draining the socket before the next parse attempt keeps re-parsing of a
    /// large frame that arrives in pieces from going quadratic.
    async fn fill(&mut self) -> Result<bool, ConnError> {
        let room = self.max + 1 - self.buf.len().min(self.max);
        let mut chunk = vec![0u8; room.min(256 << 10)];
        let n = match self.stream.read(&mut chunk).await {
            // TLS clients (Fluent Bit, fluent-logger, Python's ssl) close the TCP connection
            // without a close_notify; between frames that is an ordinary end.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            r => r?,
        };
        if n == 0 {
            return Ok(false);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        while self.buf.len() <= self.max {
            match self.try_read(&mut chunk).await {
                Some(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                // An end or an error is left for the next read to report: the frames already
                // buffered are decoded (and acked) first.
                _ => break,
            }
        }
        Ok(true)
    }

    /// One read if data is ready now, None if it would wait (TcpStream::try_read for any
    /// stream, TLS included).
    async fn try_read(&mut self, chunk: &mut [u8]) -> Option<std::io::Result<usize>> {
        let stream = &mut self.stream;
        std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(chunk);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(r) => Poll::Ready(Some(r.map(|()| rb.filled().len()))),
                Poll::Pending => Poll::Ready(None),
            }
        })
        .await
    }
}

/// Decodes a complete frame into records, all within bounds (else the frame is refused
/// whole), and the chunk to acknowledge. Blocking: runs on the blocking pool.
fn decode_frame(
    bytes: &[u8],
    sink: &LogSink,
    limits: &frame::FrameLimits,
) -> Result<(Vec<storage::logs::LogRecord>, Option<String>), ConnError> {
    let v =
        rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| ConnError::Msgpack(e.to_string()))?;
    let f = frame::decode(v, limits)?;
    let budget = crate::wire::budget(
        bytes.len().max(f.payload_bytes),
        limits.max_expansion,
        crate::EXPANSION_FLOOR_BYTES,
    );
    let mut records = super::Records::new(budget);
    let window = sink.bounds.window();
    let mapping = sink.mapping();
    let built = f.entries.iter().try_for_each(|(ts, r)| {
        let record = mapping.fluent_record(&f.tag, *ts, r);
        window.check(&record)?;
        records.push(record).map_err(ConnError::RecordsTooLarge)
    });
    if let Err(e) = built {
        // The whole frame is refused: every entry in it counts.
        sink.counters.rejected(
            crate::metrics::Signal::Logs,
            crate::metrics::Protocol::Forward,
            f.entries.len(),
        );
        return Err(e);
    }
    Ok((records.into_records(), f.chunk))
}

#[cfg(test)]
mod tests;
