//! The accept loop of both HTTP listeners (the API and the client listener): hyper's HTTP/1
//! connection serving an axum router, with a cap on connections, a header-read timeout, an
//! idle timeout and graceful shutdown. It owns the listening socket, one task per connection
//! and its listener's counters ([`ListenerStats`]), which `/metrics` reads.
//!
//! Rules it keeps:
//! - at most `max_connections` connections are open at once. A connection holds its slot from
//!   accept until its socket closes, after a WebSocket upgrade too (the slot travels with the
//!   socket); one more is accepted and closed at once, and counted;
//! - a client sends a request's head within `header_read_timeout`: counted from accept for the
//!   first request, and from its first byte for each following one on a kept-alive connection,
//!   which waits at most `idle_timeout` for that byte. Either timeout closes the connection and
//!   is counted by kind. Nothing times out while a request is in flight, nor after an upgrade;
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
use axum::extract::ConnectInfo;
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// How long the loop waits after an accept error that is not one connection's (no descriptor
/// or memory left): retrying at once would spin on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A listener's bounds, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, upgraded WebSockets included.
    pub max_connections: usize,
    /// Time a client has to send a request's head.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection waits for the next request to begin.
    pub idle_timeout: Duration,
}

/// One listener's connection counters.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Open connections; also what the cap is checked against.
    open: AtomicUsize,
    refused: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
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

/// Serves `router` on `listener` until `stop` completes, then lets the open connections
/// finish (see the module's rules).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ListenerStats>,
    stop: impl Future<Output = ()>,
) {
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
            tokio::spawn(serve_connection(stream, peer, slot, router.clone(), limits, stopping.clone()));
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

/// Serves one connection until it closes or is upgraded; once told to stop, it ends after the
/// request in flight.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    router: Router,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) {
    let reads = Arc::new(AtomicU64::new(0));
    let timer = HeadTimer { limits, reads: Arc::clone(&reads), stats: Arc::clone(&slot.0), waits: AtomicU64::new(0) };
    let io = TokioIo::new(Connection { stream, reads, _slot: slot });
    let mut builder = http1::Builder::new();
    builder.timer(timer).header_read_timeout(limits.header_read_timeout);
    let service = router.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let mut connection = pin!(builder.serve_connection(io, TowerToHyperService::new(service)).with_upgrades());
    let stop = async {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
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

/// The accepted socket with its slot; counts the bytes read, by which [`HeadWait`] sees a
/// request's head begin.
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    reads: Arc<AtomicU64>,
    _slot: Slot,
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        this.reads.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Connection {
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
