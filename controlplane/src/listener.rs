//! The accept loop of both HTTP listeners (the API and the client listener): hyper's HTTP/1
//! connection serving an axum router, or with TLS ([`crate::tls`]) HTTP/1.1 or HTTP/2 as the
//! client chose in ALPN, with a cap on connections, a TLS handshake timeout, a header-read
//! timeout, an idle timeout and graceful shutdown. It owns the listening socket, one task per
//! connection and its listener's counters ([`ListenerStats`]), which `/metrics` reads.
//!
//! Rules it keeps:
//! - at most `max_connections` connections are open at once. A connection holds its slot from
//!   accept until its socket closes, through its TLS handshake and after a WebSocket upgrade
//!   (the slot travels with the socket); one more is accepted and closed at once, and counted;
//! - on a TLS listener, the handshake ends within `tls_handshake_timeout` of accept, or the
//!   connection is closed and counted (`kind="tls_handshake"`); a failed handshake is counted by
//!   its reason, and plain HTTP is answered 400 in plain HTTP before the close. Handshakes run
//!   in each connection's task, never in the accept loop;
//! - a client sends a request's head within `header_read_timeout`: counted from accept (from
//!   the end of the TLS handshake) for the first request, and from its first byte for each
//!   following one on a kept-alive connection, which waits at most `idle_timeout` for that
//!   byte. Either timeout closes the connection and is counted by kind. Nothing times out while
//!   a request is in flight, nor after an upgrade;
//! - HTTP/2 has no request head to time byte by byte: its first request must begin within
//!   `header_read_timeout` of the handshake, and a connection with no request in flight waits
//!   at most `idle_timeout` for the next one (its stalled headers included); then it is sent
//!   GOAWAY and closed, counted as `header` and `idle` alike;
//! - once `stop` completes, the listener closes, each connection finishes the request in
//!   flight and closes, and [`serve`] returns when all have (as `axum::serve` did);
//! - every request carries its TCP peer's address as `ConnectInfo<SocketAddr>` (demo joins
//!   are paced per source address).
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long the loop waits after an accept error that is not one connection's (no descriptor
/// or memory left): retrying at once would spin on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The first byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to plain HTTP on a TLS listener, so that a person trying `http://` sees why.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
content-length: 50\r\nconnection: close\r\n\r\nThis port speaks TLS: use https:// or wss:// here.\n";

/// How long a refused plain-HTTP client has to close after the answer. Closing first, with
/// its request unread, would reset the connection and could lose the answer.
const PLAIN_HTTP_LINGER: Duration = Duration::from_secs(1);

/// How long an HTTP/2 connection being closed, with no request in flight, waits for its
/// client to see GOAWAY before its socket is closed anyway.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// A listener's bounds, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, upgraded WebSockets included.
    pub max_connections: usize,
    /// Time a client has to send a request's head.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection waits for the next request to begin.
    pub idle_timeout: Duration,
    /// Time a client has, from accept, to finish the TLS handshake (TLS listeners only).
    pub tls_handshake_timeout: Duration,
}

/// Why a TLS handshake failed, as `/metrics` labels it. rustls's own errors are sorted as it
/// sorts them: input that is not well-formed TLS, a peer that broke the protocol, a peer with
/// nothing in common with us, and a peer that refused us (an alert: often our certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Plain HTTP sent to the TLS port (answered 400 before the close).
    PlainHttp,
    /// The first byte was neither TLS nor an HTTP method.
    NotTls,
    Malformed,
    Misbehaved,
    Incompatible,
    /// The client sent an alert: it rejected the certificate, or gave up.
    Alert,
    /// The client closed or reset the connection during the handshake.
    Closed,
    Other,
}

impl HandshakeFailure {
    pub const ALL: [Self; 8] = [
        Self::PlainHttp,
        Self::NotTls,
        Self::Malformed,
        Self::Misbehaved,
        Self::Incompatible,
        Self::Alert,
        Self::Closed,
        Self::Other,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::PlainHttp => "plain_http",
            Self::NotTls => "not_tls",
            Self::Malformed => "malformed",
            Self::Misbehaved => "misbehaved",
            Self::Incompatible => "incompatible",
            Self::Alert => "alert",
            Self::Closed => "closed",
            Self::Other => "other",
        }
    }

    /// The reason of a failed accept: a rustls error comes wrapped in the `io::Error`; any other
    /// error is the socket's.
    fn of(e: &io::Error) -> Self {
        use rustls::Error as E;
        match e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
            Some(
                E::InvalidMessage(_)
                | E::InappropriateMessage { .. }
                | E::InappropriateHandshakeMessage { .. }
                | E::DecryptError,
            ) => Self::Malformed,
            Some(E::PeerMisbehaved(_)) => Self::Misbehaved,
            Some(E::PeerIncompatible(_) | E::NoApplicationProtocol) => Self::Incompatible,
            Some(E::AlertReceived(_)) => Self::Alert,
            Some(_) => Self::Other,
            None => Self::Closed,
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&f| f == self).unwrap_or(Self::ALL.len() - 1)
    }
}

/// One listener's connection counters.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Open connections; also what the cap is checked against.
    open: AtomicUsize,
    refused: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    tls_handshake_timeouts: AtomicU64,
    tls_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    /// Completed handshakes: full, resumed (a session ticket or ID).
    tls_handshakes: [AtomicU64; 2],
    /// Certificate reloads: failed, ok.
    tls_reloads: [AtomicU64; 2],
}

impl ListenerStats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because the listener was at its cap.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed because a request's head took longer than the header-read timeout.
    pub fn header_timeouts(&self) -> u64 {
        self.header_timeouts.load(Ordering::Relaxed)
    }

    /// Kept-alive connections closed because no request began within the idle timeout.
    pub fn idle_timeouts(&self) -> u64 {
        self.idle_timeouts.load(Ordering::Relaxed)
    }

    /// Connections closed because their TLS handshake took longer than its timeout.
    pub fn tls_handshake_timeouts(&self) -> u64 {
        self.tls_handshake_timeouts.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed for `reason`.
    pub fn tls_failures(&self, reason: HandshakeFailure) -> u64 {
        self.tls_failures[reason.index()].load(Ordering::Relaxed)
    }

    /// TLS handshakes completed, full (`resumed` false) or resumed.
    pub fn tls_handshakes(&self, resumed: bool) -> u64 {
        self.tls_handshakes[usize::from(resumed)].load(Ordering::Relaxed)
    }

    /// Certificate reloads that succeeded (`ok`) or kept the old certificate.
    pub fn tls_reloads(&self, ok: bool) -> u64 {
        self.tls_reloads[usize::from(ok)].load(Ordering::Relaxed)
    }

    pub(crate) fn count_reload(&self, ok: bool) {
        self.tls_reloads[usize::from(ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// A slot for one more connection, or `None` (counted) when `max` are open.
    fn admit(self: &Arc<Self>, max: usize) -> Option<Slot> {
        match self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)) {
            Ok(_) => Some(Slot(Arc::clone(self))),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// The counters of both listeners, as `/metrics` labels them.
#[derive(Debug, Default, Clone)]
pub struct HttpStats {
    pub api: Arc<ListenerStats>,
    pub client: Arc<ListenerStats>,
}

impl HttpStats {
    /// Each listener's counters with its `listener` label.
    pub fn listeners(&self) -> [(&'static str, &ListenerStats); 2] {
        [("api", &self.api), ("client", &self.client)]
    }
}

/// A connection's place under the cap, given back when its socket closes.
#[derive(Debug)]
struct Slot(Arc<ListenerStats>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener`, over TLS with `tls`, until `stop` completes, then lets the
/// open connections finish (see the module's rules).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stats: Arc<ListenerStats>,
    stop: impl Future<Output = ()>,
) {
    let tls = tls.map(TlsAcceptor::from);
    // Each connection's task holds a receiver: the channel tells them to stop, and is closed
    // once they all have.
    let (stopping_tx, stopping) = watch::channel(false);
    let mut stop = pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if ended_before_accept(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot accept connections; trying again in {ACCEPT_BACKOFF:?}");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    () = &mut stop => break,
                }
            }
        };
        // Over the cap, dropping the stream closes it.
        if let Some(slot) = stats.admit(limits.max_connections) {
            let served = Served { peer, slot, router: router.clone(), limits, stopping: stopping.clone() };
            match &tls {
                Some(acceptor) => tokio::spawn(serve_tls(acceptor.clone(), stream, served)),
                None => tokio::spawn(serve_http1(stream, served)),
            };
        }
    }
    drop(listener);
    drop(stopping);
    let _ = stopping_tx.send(true);
    stopping_tx.closed().await;
}

/// Errors of one connection, which its peer ended before it was accepted: the next accept
/// goes on.
fn ended_before_accept(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// What serving one connection needs besides its socket.
#[derive(Debug)]
struct Served {
    peer: SocketAddr,
    slot: Slot,
    router: Router,
    limits: Limits,
    stopping: watch::Receiver<bool>,
}

impl Served {
    fn stats(&self) -> &ListenerStats {
        &self.slot.0
    }

    /// Completes once the listener is told to stop.
    fn stopped(&self) -> impl Future<Output = ()> + use<> {
        let mut stopping = self.stopping.clone();
        async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }
    }
}

/// Runs the TLS handshake (bounded and counted, see the module's rules), then serves the
/// connection in the protocol the client chose in ALPN.
async fn serve_tls(acceptor: TlsAcceptor, stream: TcpStream, served: Served) {
    let handshake = tokio::time::timeout(served.limits.tls_handshake_timeout, handshake(&acceptor, stream));
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        () = served.stopped() => return,
    };
    let stream = match outcome {
        Ok(Ok(stream)) => stream,
        Ok(Err(failure)) => {
            served.stats().tls_failures[failure.index()].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %served.peer, reason = failure.label(), "TLS handshake failed");
            return;
        }
        Err(_) => {
            served.stats().tls_handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let session = stream.get_ref().1;
    let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    served.stats().tls_handshakes[usize::from(resumed)].fetch_add(1, Ordering::Relaxed);
    if session.alpn_protocol() == Some(b"h2") {
        serve_http2(stream, served).await
    } else {
        serve_http1(stream, served).await
    }
}

/// The server's side of a TLS handshake on `stream`. What is not TLS is refused before rustls
/// sees it, plain HTTP with an answer.
async fn handshake(
    acceptor: &TlsAcceptor,
    mut stream: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, HandshakeFailure> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        Ok(_) | Err(_) => return Err(HandshakeFailure::Closed),
    }
    match first[0] {
        TLS_HANDSHAKE_RECORD => {}
        b'A'..=b'Z' => {
            let _ = tokio::time::timeout(PLAIN_HTTP_LINGER, refuse_plain_http(&mut stream)).await;
            return Err(HandshakeFailure::PlainHttp);
        }
        _ => return Err(HandshakeFailure::NotTls),
    }
    acceptor.accept(stream).await.map_err(|e| HandshakeFailure::of(&e))
}

/// Answers 400, then reads what the client sent until it closes, so that the close is not a
/// reset that could lose the answer.
async fn refuse_plain_http(stream: &mut TcpStream) -> io::Result<()> {
    stream.write_all(PLAIN_HTTP_ANSWER).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

/// Serves one HTTP/1 connection until it closes or is upgraded; once told to stop, it ends
/// after the request in flight.
async fn serve_http1<S>(stream: S, served: Served)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let stop = served.stopped();
    let Served { peer, slot, router, limits, .. } = served;
    let reads = Arc::new(AtomicU64::new(0));
    let timer = HeadTimer { limits, reads: Arc::clone(&reads), stats: Arc::clone(&slot.0), waits: AtomicU64::new(0) };
    let io = TokioIo::new(Connection { stream, reads, _slot: slot });
    let mut builder = http1::Builder::new();
    builder.timer(timer).header_read_timeout(limits.header_read_timeout);
    let service = router.map_request(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let mut connection = pin!(builder.serve_connection(io, TowerToHyperService::new(service)).with_upgrades());
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// Serves one HTTP/2 connection until it closes, its client stays idle too long, or it is
/// told to stop (then it ends after the requests in flight).
async fn serve_http2<S>(stream: S, served: Served)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let stop = served.stopped();
    let Served { peer, slot, router, limits, .. } = served;
    let stats = Arc::clone(&slot.0);
    let (requests_tx, requests) = watch::channel(Requests::default());
    let requests_tx = Arc::new(requests_tx);
    let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::begin(&requests_tx);
        let response = router.clone().oneshot(request);
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, _in_flight: in_flight }))
        }
    });
    let io = TokioIo::new(Connection { stream, reads: Arc::new(AtomicU64::new(0)), _slot: slot });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let mut connection = pin!(builder.serve_connection(io, TowerToHyperService::new(service)));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        timeout = idle(requests.clone(), limits) => {
            let counter = match timeout {
                Http2Wait::FirstRequest => &stats.header_timeouts,
                Http2Wait::NextRequest => &stats.idle_timeouts,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(GOAWAY_GRACE, connection).await.unwrap_or(Ok(()))
        }
        () = stop => {
            connection.as_mut().graceful_shutdown();
            // A client that never acknowledges GOAWAY must not hold up the stop.
            tokio::select! {
                result = connection => result,
                () = async {
                    let _ = requests.clone().wait_for(|r| r.in_flight == 0).await;
                    tokio::time::sleep(GOAWAY_GRACE).await;
                } => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP/2 connection ended");
    }
}

/// The requests of an HTTP/2 connection, which its idle wait watches.
#[derive(Debug, Default, Clone, Copy)]
struct Requests {
    in_flight: usize,
    begun: u64,
}

/// Which wait of an HTTP/2 connection ran out.
#[derive(Debug, Clone, Copy)]
enum Http2Wait {
    FirstRequest,
    NextRequest,
}

/// Completes when the connection has had no request in flight for its limit: the
/// header-read timeout before its first request, the idle timeout after.
async fn idle(mut requests: watch::Receiver<Requests>, limits: Limits) -> Http2Wait {
    loop {
        let Ok(begun) = requests.wait_for(|r| r.in_flight == 0).await.map(|r| r.begun) else {
            // The connection is gone; its own future ends the select.
            return std::future::pending().await;
        };
        let (limit, wait) = match begun {
            0 => (limits.header_read_timeout, Http2Wait::FirstRequest),
            _ => (limits.idle_timeout, Http2Wait::NextRequest),
        };
        if tokio::time::timeout(limit, requests.wait_for(|r| r.begun != begun)).await.is_err() {
            return wait;
        }
    }
}

/// One HTTP/2 request, from the call of the service until its response body is done with.
#[derive(Debug)]
struct InFlight(Arc<watch::Sender<Requests>>);

impl InFlight {
    fn begin(requests: &Arc<watch::Sender<Requests>>) -> Self {
        requests.send_modify(|r| {
            r.in_flight += 1;
            r.begun += 1;
        });
        Self(Arc::clone(requests))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|r| r.in_flight -= 1);
    }
}

/// A response body that keeps its request in flight until hyper drops it: once sent whole,
/// or when the client resets the stream.
#[derive(Debug)]
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The accepted socket (or its TLS stream) with its slot; counts the bytes read (plaintext
/// ones), by which [`HeadWait`] sees a request's head begin.
#[derive(Debug)]
struct Connection<S> {
    stream: S,
    reads: Arc<AtomicU64>,
    _slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Connection<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        this.reads.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// hyper's timer for one connection. hyper asks it for a sleep, due at now plus the
/// header-read timeout, each time it starts waiting for a request's head, polls that sleep
/// after each read that leaves the head incomplete, drops it once the head is in, and closes
/// the connection if it ends first. Only the first wait keeps hyper's deadline; the later
/// ones are the idle waits of a kept-alive connection (see [`HeadWait`]).
#[derive(Debug)]
struct HeadTimer {
    limits: Limits,
    reads: Arc<AtomicU64>,
    stats: Arc<ListenerStats>,
    /// Heads waited for so far.
    waits: AtomicU64,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let (phase, deadline) = if self.waits.fetch_add(1, Ordering::Relaxed) == 0 {
            (Phase::Head, deadline)
        } else {
            (Phase::Idle { reads: self.reads.load(Ordering::Relaxed) }, Instant::now() + self.limits.idle_timeout)
        };
        Box::pin(HeadWait {
            phase,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
            reads: Arc::clone(&self.reads),
            header_read_timeout: self.limits.header_read_timeout,
            stats: Arc::clone(&self.stats),
        })
    }
}

/// One wait for a request's head: idle until a byte arrives (on a kept-alive connection),
/// then at most the header-read timeout from that byte.
#[derive(Debug)]
struct HeadWait {
    phase: Phase,
    sleep: Pin<Box<tokio::time::Sleep>>,
    reads: Arc<AtomicU64>,
    header_read_timeout: Duration,
    stats: Arc<ListenerStats>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No byte of the head yet; `reads` is the connection's count when the wait began.
    Idle {
        reads: u64,
    },
    Head,
    /// Ended and counted.
    Expired,
}

impl Future for HeadWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Phase::Idle { reads } = this.phase
            && this.reads.load(Ordering::Relaxed) != reads
        {
            // hyper polls the wait right after the read that brought the head's first bytes.
            this.phase = Phase::Head;
            this.sleep.as_mut().reset((Instant::now() + this.header_read_timeout).into());
        }
        ready!(this.sleep.as_mut().poll(cx));
        let counter = match this.phase {
            Phase::Idle { .. } => &this.stats.idle_timeouts,
            Phase::Head => &this.stats.header_timeouts,
            Phase::Expired => return Poll::Ready(()),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        this.phase = Phase::Expired;
        Poll::Ready(())
    }
}

impl Sleep for HeadWait {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_refuses_and_counts_until_a_slot_is_given_back() {
        let stats = Arc::new(ListenerStats::default());
        let first = stats.admit(2).expect("under the cap");
        let _second = stats.admit(2).expect("under the cap");
        assert!(stats.admit(2).is_none());
        assert_eq!((stats.open(), stats.refused()), (2, 1));
        drop(first);
        assert_eq!(stats.open(), 1);
        let _third = stats.admit(2).expect("a slot given back is free again");
        assert_eq!((stats.open(), stats.refused()), (2, 1));
    }
}
