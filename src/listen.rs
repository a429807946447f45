//! Accepting connections for both adapters: at most `max_connections`
//! open per listener (beyond it a new connection is closed at once and
//! counted), and an accept loop that backs off when accepting fails
//! (out of file descriptors, say) instead of spinning, logging the failure
//! once and then at most every ten seconds with how many were suppressed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub const CONNECTIONS_OPEN: &str = "infergate_connections_open";
pub const CONNECTIONS_REFUSED: &str = "infergate_connections_refused_total";
pub const ACCEPT_ERRORS: &str = "infergate_accept_errors_total";

/// The longest pause after failed accepts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Accept failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How connections are bounded (`--max-connections`, the HTTP timeouts,
/// HTTP/2 streams and keep-alive), for both adapters.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections per listener.
    pub max_connections: usize,
    /// A client must send a request's headers (HTTP/1) or its first bytes
    /// (HTTP/2, gRPC) within this, and an idle HTTP/1 keep-alive
    /// connection is closed after it.
    pub header_timeout: Duration,
    /// A request body must arrive within this once its headers have.
    pub body_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection (HTTP and gRPC).
    pub http2_max_streams: u32,
    /// TCP keep-alive on every connection: probes start after this long
    /// idle, and a peer that answers none of them is dropped (the kernel's
    /// work: no cost per request, where HTTP/2 pings would take a lock per
    /// frame).
    pub keepalive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            http2_max_streams: 1024,
            keepalive: Duration::from_secs(60),
        }
    }
}

/// A listener and its bounds; `protocol` names it in metrics and logs.
pub struct Acceptor {
    listener: TcpListener,
    protocol: &'static str,
    permits: Arc<Semaphore>,
    max: usize,
    backoff: Duration,
    first_bytes: Duration,
    keepalive: Duration,
    last_logged: Option<Instant>,
    suppressed: u64,
    open: metrics::Gauge,
    refused: metrics::Counter,
    errors: metrics::Counter,
}

impl Acceptor {
    pub fn new(listener: TcpListener, protocol: &'static str, limits: &Limits) -> Acceptor {
        let max_connections = limits.max_connections;
        metrics::describe_gauge!(CONNECTIONS_OPEN, "Open client connections, by protocol.");
        metrics::describe_counter!(
            CONNECTIONS_REFUSED,
            "Connections closed at accept because --max-connections were open, by protocol."
        );
        metrics::describe_counter!(
            ACCEPT_ERRORS,
            "Failed accepts (e.g. out of file descriptors), by protocol."
        );
        let max = max_connections.max(1);
        Acceptor {
            listener,
            protocol,
            permits: Arc::new(Semaphore::new(max)),
            max,
            backoff: Duration::ZERO,
            first_bytes: limits.header_timeout,
            keepalive: limits.keepalive,
            last_logged: None,
            suppressed: 0,
            open: metrics::gauge!(CONNECTIONS_OPEN, "protocol" => protocol),
            refused: metrics::counter!(CONNECTIONS_REFUSED, "protocol" => protocol),
            errors: metrics::counter!(ACCEPT_ERRORS, "protocol" => protocol),
        }
    }

    /// The next connection within the bound. Connections beyond it are
    /// closed as they come (the client sees its connection reset, at
    /// once, rather than a hang) and counted.
    pub async fn accept(&mut self) -> Conn {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    self.backoff = Duration::ZERO;
                    match self.permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let _ = stream.set_nodelay(true);
                            let keepalive = socket2::TcpKeepalive::new()
                                .with_time(self.keepalive)
                                .with_interval(Duration::from_secs(10))
                                .with_retries(3);
                            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                            self.open.increment(1.0);
                            return Conn {
                                stream,
                                _permit: permit,
                                open: self.open.clone(),
                                first_bytes: Some(Box::pin(tokio::time::sleep(self.first_bytes))),
                            };
                        }
                        Err(_) => {
                            self.refused.increment(1);
                            let (protocol, max) = (self.protocol, self.max);
                            self.log(|n| {
                                tracing::warn!(
                                    protocol,
                                    max_connections = max,
                                    suppressed = n,
                                    "connection refused: --max-connections are open"
                                )
                            });
                            // Reset, not a graceful close: nothing to flush.
                            let _ = stream.set_zero_linger();
                            drop(stream);
                        }
                    }
                }
                Err(e) => {
                    self.errors.increment(1);
                    let protocol = self.protocol;
                    self.log(|n| {
                        tracing::warn!(protocol, error = %e, suppressed = n,
                            "accept failed; backing off")
                    });
                    // Out of descriptors (or memory) will not be better in a
                    // microsecond: wait, doubling up to a second.
                    self.backoff = (self.backoff * 2)
                        .max(Duration::from_millis(5))
                        .min(MAX_BACKOFF);
                    tokio::time::sleep(self.backoff).await;
                }
            }
        }
    }

    /// Runs `log` (given how many were suppressed since the last one) once
    /// per `LOG_EVERY`.
    fn log(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            log(self.suppressed);
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The connections as a stream (what tonic serves from), accepted by a
    /// task of their own that ends, closing the listener, once the stream
    /// is dropped. With `tls`, each handshake runs in a task of its own
    /// (a slow one holds up nobody) within the header timeout.
    pub fn into_stream(
        mut self,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<Stream, io::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let within = self.first_bytes;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    conn = self.accept() => {
                        match &tls {
                            None => {
                                if tx.send(Ok(Stream::Plain(conn))).await.is_err() {
                                    return;
                                }
                            }
                            Some(tls) => {
                                let (tls, tx) = (tls.clone(), tx.clone());
                                tokio::spawn(async move {
                                    if let Some(s) = handshake(&tls, conn, within).await {
                                        let _ = tx.send(Ok(s)).await;
                                    }
                                });
                            }
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    /// How long a client has for its first bytes (and its TLS handshake).
    pub fn handshake_timeout(&self) -> Duration {
        self.first_bytes
    }
}

/// An accepted connection; its slot is given back when it is dropped.
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    open: metrics::Gauge,
    /// Until the first bytes arrive: a connection that sends nothing in
    /// `header_timeout` is closed (HTTP/2 has no header timeout of its own
    /// before the handshake).
    first_bytes: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl Conn {
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.first_bytes = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = this
                    .first_bytes
                    .as_mut()
                    .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no bytes from the client within the header timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The TLS handshake of an accepted connection, within `within`; `None`
/// (the connection closed) when it fails: plaintext to a TLS port, an
/// untrusted client certificate under mutual TLS, a client too slow.
pub async fn handshake(
    tls: &tokio_rustls::TlsAcceptor,
    conn: Conn,
    within: Duration,
) -> Option<Stream> {
    match tokio::time::timeout(within, tls.accept(conn)).await {
        Ok(Ok(s)) => Some(Stream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            metrics::counter!(TLS_FAILURES).increment(1);
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            metrics::counter!(TLS_FAILURES).increment(1);
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

pub const TLS_FAILURES: &str = "infergate_tls_handshake_failures_total";

/// A connection as the adapters serve it: plain, or TLS over it.
pub enum Stream {
    Plain(Conn),
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Stream::Plain(c) => c.stream.connect_info(),
            Stream::Tls(s) => s.get_ref().0.stream.connect_info(),
        }
    }
}

/// The default `--max-connections` per listener: half of what the file
/// descriptor limit leaves after a reserve for model files, logs and the
/// runtime, so that the two ports together cannot exhaust it.
pub fn default_max_connections() -> usize {
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as usize
    } else {
        1024
    };
    (soft.saturating_sub(256) / 2).clamp(64, 65_536)
}
