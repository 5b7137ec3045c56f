//! The Fluentd Forward Protocol v1 listener: accepts TCP connections (optionally TLS), runs the
//! shared-key handshake (with user/password authentication) when configured, decodes event
//! frames, appends their records durably and only then acknowledges `chunk`s. A malformed frame closes that connection alone, with one log
//! line saying why. Each connection handles one frame at a time and reads at most
//! `max_frame_bytes` ahead, so a slow store pushes back through TCP instead of buffering.

mod frame;
mod handshake;
mod tls;

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rmpv::Value;
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
    /// Connections served at once; more clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// A client that opens TLS but never finishes the handshake gives its slot back after this.
    pub tls_handshake_timeout: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            shared_key: None,
            users: Vec::new(),
            tls: None,
            self_hostname: "novamon".into(),
            max_frame_bytes: 16 << 20,
            max_decompressed_bytes: 256 << 20,
            max_connections: 1024,
            tls_handshake_timeout: Duration::from_secs(10),
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
    #[error("storing records: {0}")]
    Store(#[from] storage::StorageError),
}

/// Serves the forward protocol on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, sink: LogSink, opts: ForwardOptions) {
    let opts = Arc::new(opts);
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    loop {
        // Waiting for a free slot before accepting leaves excess clients in the kernel's backlog.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("forward: accept failed: {e}");
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
            if let Err(e) = served {
                tracing::warn!(%peer, "forward: closing connection: {e}");
            }
        });
    }
}

struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    max: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, max: usize) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
            max,
        }
    }

    async fn run(mut self, sink: &LogSink, opts: &ForwardOptions) -> Result<(), ConnError> {
        if let Some(key) = &opts.shared_key {
            let hs = Handshake::new(!opts.users.is_empty())
                .map_err(|e| ConnError::Handshake(e.to_string()))?;
            self.send(&hs.helo()).await?;
            let Some(ping) = self.next_value().await? else {
                return Ok(());
            };
            match hs.answer(&ping, key, &opts.users, &opts.self_hostname) {
                PingOutcome::Accepted(pong) => self.send(&pong).await?,
                PingOutcome::Rejected(pong, reason) => {
                    self.send(&pong).await?;
                    return Err(ConnError::Handshake(reason));
                }
            }
        }
        while let Some(v) = self.next_value().await? {
            let f = frame::decode(v, opts.max_decompressed_bytes)?;
            let mapping = sink.mapping();
            let records = f
                .entries
                .iter()
                .map(|(ts, r)| mapping.fluent_record(&f.tag, *ts, r))
                .collect();
            sink.append(crate::metrics::Protocol::Forward, records)
                .await?;
            if let Some(chunk) = f.chunk {
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

    /// The next complete msgpack value, or None at a clean end of stream.
    async fn next_value(&mut self) -> Result<Option<Value>, ConnError> {
        loop {
            if !self.buf.is_empty() {
                let mut rd = &self.buf[..];
                match rmpv::decode::read_value(&mut rd) {
                    Ok(v) => {
                        let used = self.buf.len() - rd.len();
                        self.buf.drain(..used);
                        return Ok(Some(v));
                    }
                    Err(e) if is_incomplete(&e) => {}
                    Err(e) => return Err(ConnError::Msgpack(e.to_string())),
                }
                if self.buf.len() >= self.max {
                    return Err(ConnError::TooLarge(self.max));
                }
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnError::Truncated)
                };
            }
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

fn is_incomplete(e: &rmpv::decode::Error) -> bool {
    match e {
        rmpv::decode::Error::InvalidMarkerRead(io) | rmpv::decode::Error::InvalidDataRead(io) => {
            io.kind() == std::io::ErrorKind::UnexpectedEof
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
