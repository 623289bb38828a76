//! A worker's sockets and the backend that moves their datagrams: io_uring where the
//! kernel allows it, epoll with recvmmsg/sendmmsg everywhere else. Both present the same
//! two calls to the loop — `poll` (wait, then receive a bounded batch) and `flush` (send a
//! [`SendQueue`] with as few system calls as possible) — so the engine above never knows
//! which one runs.
//!
//! The worker's ICE-TCP connections (see `tcp`) sit behind the same two calls: a frame
//! received on one is handed up like a datagram from the connection's peer address, and a
//! queued datagram to a connection's peer address leaves framed on that connection instead
//! of the UDP socket. The engine never knows which transport a packet used. With the epoll
//! backend the TCP fds share the set the UDP sockets are in; with io_uring they are in an
//! epoll set of their own, which the ring polls. A connection that no authenticated ICE
//! check claimed in time is closed by a third call, [`Io::expire_unclaimed_tcp`], which the
//! loop makes after every poll with the time and the engine's word on the peer's address.
#![forbid(unsafe_code)]

mod tcp;
#[cfg(test)]
mod tcp_tests;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use self::tcp::Tcp;
pub use self::tcp::{
    DEFAULT_AUTH_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, READ_BUFFER, TcpConfig, TcpCounters,
    WRITE_BUFFER,
};
pub use crate::batch::{PollOutcome, SLOT_SIZE, SendQueue, SocketIndex};
use crate::sys::epoll::{EpollIo, EpollTx};
pub use crate::sys::mmsg::FlushOutcome;
use crate::sys::uring::{self, UringIo, UringTx};
use crate::sys::{Epoll, Event, EventFd};

/// Socket buffer size requested for each worker socket; the kernel caps it at
/// `net.core.rmem_max` / `wmem_max` (see tuning/).
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Which backend the operator asked for (`--io-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring when the kernel allows it, else epoll.
    #[default]
    Auto,
    Uring,
    Epoll,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Self::Auto),
            "uring" => Ok(Self::Uring),
            "epoll" => Ok(Self::Epoll),
            other => Err(format!("'{other}' is not one of uring, epoll, auto")),
        }
    }
}

/// Connections the kernel queues for a worker's TCP listener before it accepts them.
const LISTEN_BACKLOG: i32 = 1024;

/// A UDP socket configured for a worker: non-blocking, large buffers, bound to `addr`.
pub fn bind_udp(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A TCP listener configured for a worker's ICE-TCP passive candidate: non-blocking, bound
/// to `addr` (the UDP socket's address and port), listening.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    // A restarted worker rebinds at once while its old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A worker's sockets, its TCP connections and its backend.
#[derive(Debug)]
pub struct Io {
    sockets: Vec<Socket>,
    tcp: Option<Tcp>,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    /// Boxed: the ring's bookkeeping is large and each worker holds one backend.
    Uring(Box<UringIo>),
    Epoll(EpollIo),
}

/// Why io_uring cannot run here (`None` when it can): the kernel's sysctl, its version, or
/// a refused `io_uring_setup` (a seccomp profile such as Docker's default).
pub fn uring_unavailable_reason() -> Option<String> {
    uring::unavailable_reason()
}

impl Backend {
    /// The epoll set where TCP fds are registered.
    fn registry(&self) -> Arc<Epoll> {
        match self {
            Self::Uring(uring) => uring.registry(),
            Self::Epoll(epoll) => epoll.registry(),
        }
    }
}

impl Io {
    /// Drives `sockets`, the connections `tcp` accepts (within the limits of `tcp_config`)
    /// and the wake-up fd with the backend `choice` resolves to. With `Auto`, a failure to
    /// set io_uring up is logged with its reason and the epoll backend runs instead; with
    /// `Uring` it is an error.
    pub(crate) fn new(
        sockets: Vec<Socket>,
        tcp: Option<TcpListener>,
        tcp_config: TcpConfig,
        wake: Arc<EventFd>,
        choice: BackendChoice,
    ) -> io::Result<Self> {
        let fds: Vec<_> = sockets.iter().map(AsRawFd::as_raw_fd).collect();
        let backend = match choice {
            BackendChoice::Epoll => Backend::Epoll(EpollIo::new(fds, wake)?),
            BackendChoice::Uring => match uring::unavailable_reason() {
                Some(reason) => return Err(io::Error::new(io::ErrorKind::Unsupported, reason)),
                None => Backend::Uring(Box::new(UringIo::new(fds, wake)?)),
            },
            BackendChoice::Auto => {
                let uring = match uring::unavailable_reason() {
                    Some(reason) => Err(reason),
                    None => {
                        UringIo::new(fds.clone(), Arc::clone(&wake)).map_err(|e| format!("io_uring set-up failed: {e}"))
                    }
                };
                match uring {
                    Ok(uring) => Backend::Uring(Box::new(uring)),
                    Err(reason) => {
                        tracing::warn!(%reason, "io_uring unavailable; using the epoll backend");
                        Backend::Epoll(EpollIo::new(fds, wake)?)
                    }
                }
            }
        };
        let tcp = tcp.map(|listener| Tcp::new(listener, backend.registry(), tcp_config)).transpose()?;
        Ok(Self { sockets, tcp, backend })
    }

    /// The backend actually running.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Uring(_) => "uring",
            Backend::Epoll(_) => "epoll",
        }
    }

    pub fn local_addr(&self, socket: SocketIndex) -> Option<SocketAddr> {
        self.sockets.get(usize::from(socket.0))?.local_addr().ok()?.as_socket()
    }

    /// Where the TCP listener is bound, when there is one.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref()?.local_addr()
    }

    /// TCP connections open now.
    pub fn tcp_connections(&self) -> usize {
        self.tcp.as_ref().map_or(0, Tcp::connection_count)
    }

    /// The TCP side's drops and refusals since the last call.
    pub fn take_tcp_counters(&mut self) -> TcpCounters {
        self.tcp.as_mut().map(Tcp::take_counters).unwrap_or_default()
    }

    /// Closes the TCP connections whose peer address `is_validated` has not confirmed within
    /// the configured time of their accept; call it after each poll, with the time then.
    pub fn expire_unclaimed_tcp(&mut self, now: Instant, is_validated: impl FnMut(SocketAddr) -> bool) {
        if let Some(tcp) = self.tcp.as_mut() {
            tcp.expire_unclaimed(now, is_validated);
        }
    }

    /// Closes the claimed TCP connections whose peer address `is_validated` no longer knows
    /// (their transport went).
    pub fn close_orphaned_tcp(&mut self, is_validated: impl FnMut(SocketAddr) -> bool) {
        if let Some(tcp) = self.tcp.as_mut() {
            tcp.close_orphaned(is_validated);
        }
    }

    /// When [`Io::expire_unclaimed_tcp`] next has work; a loop that waits no longer closes
    /// unclaimed connections on time even when nothing else happens.
    pub fn next_tcp_deadline(&self) -> Option<Instant> {
        self.tcp.as_ref()?.next_deadline()
    }

    /// Waits up to `timeout` (forever when `None`) for datagrams, TCP traffic or a wake-up,
    /// then hands at most about `budget` received datagrams, and about as many TCP frames
    /// (one read per ready connection until the budget is spent), to `on_datagram`, together
    /// with a [`Transmit`] for flushing a full send queue while the datagram is handled. TCP
    /// frames come with [`SocketIndex::TCP`] and their connection's peer address. TCP
    /// connections whose writes failed are closed first.
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
        budget: usize,
        mut on_datagram: impl FnMut(SocketIndex, SocketAddr, &mut [u8], &mut Transmit<'_>),
    ) -> io::Result<PollOutcome> {
        let tcp = &mut self.tcp;
        if let Some(tcp) = tcp.as_mut() {
            tcp.reap();
        }
        let mut frames = 0;
        let mut outcome = match &mut self.backend {
            Backend::Uring(uring) => uring.poll(timeout, budget, &mut |event, tx| {
                frames += dispatch(event, tx, tcp.as_mut(), budget.saturating_sub(frames), &mut on_datagram);
            }),
            Backend::Epoll(epoll) => epoll.poll(timeout, budget, &mut |event, tx| {
                frames += dispatch(event, tx, tcp.as_mut(), budget.saturating_sub(frames), &mut on_datagram);
            }),
        }?;
        outcome.received += frames;
        Ok(outcome)
    }

    /// Sends everything in `queue` and empties it (see [`Transmit::flush`]).
    pub fn flush(&mut self, queue: &mut SendQueue) -> io::Result<FlushOutcome> {
        let side = match &mut self.backend {
            Backend::Uring(uring) => TransmitSide::Uring(&mut uring.tx),
            Backend::Epoll(epoll) => TransmitSide::Epoll(&mut epoll.tx),
        };
        Transmit { side, tcp: self.tcp.as_mut() }.flush(queue)
    }
}

/// A backend's send side, as [`Transmit`] wraps it.
trait SendSide {
    fn side(&mut self) -> TransmitSide<'_>;
}

impl SendSide for UringTx {
    fn side(&mut self) -> TransmitSide<'_> {
        TransmitSide::Uring(self)
    }
}

impl SendSide for EpollTx {
    fn side(&mut self) -> TransmitSide<'_> {
        TransmitSide::Epoll(self)
    }
}

/// Hands what a backend reported to `on_datagram`: a datagram as it is, a ready TCP fd as
/// the frames its connection yields while `tcp_budget` lasts (a connection left unread is
/// reported ready again next turn). Returns the TCP frames handed up.
fn dispatch(
    event: Event<'_>,
    tx: &mut impl SendSide,
    tcp: Option<&mut Tcp>,
    tcp_budget: usize,
    on_datagram: &mut impl FnMut(SocketIndex, SocketAddr, &mut [u8], &mut Transmit<'_>),
) -> usize {
    let mut on_frame = |source: SocketAddr, bytes: &mut [u8], tcp: &mut Tcp| {
        on_datagram(SocketIndex::TCP, source, bytes, &mut Transmit { side: tx.side(), tcp: Some(tcp) });
    };
    match (event, tcp) {
        (Event::Datagram { socket, source, bytes }, tcp) => {
            on_datagram(socket, source, bytes, &mut Transmit { side: tx.side(), tcp });
            0
        }
        (Event::Ready { token, readiness }, Some(tcp)) => {
            tcp.handle_ready(token, readiness, tcp_budget > 0, &mut on_frame)
        }
        (Event::RegistryReady, Some(tcp)) => tcp.drain_registry(tcp_budget, &mut on_frame),
        (_, None) => 0,
    }
}

/// The send side of a backend, and the worker's TCP connections.
#[derive(Debug)]
pub struct Transmit<'a> {
    side: TransmitSide<'a>,
    tcp: Option<&'a mut Tcp>,
}

#[derive(Debug)]
enum TransmitSide<'a> {
    Uring(&'a mut UringTx),
    Epoll(&'a mut EpollTx),
}

impl Transmit<'_> {
    /// Sends everything in `queue` and empties it: datagrams to a TCP connection's peer
    /// are framed onto that connection, the rest go out of their UDP socket. Never blocks:
    /// what the kernel will not take now is dropped and counted in the outcome, and what a
    /// TCP connection's full writer will not take in the TCP counters.
    pub fn flush(&mut self, queue: &mut SendQueue) -> io::Result<FlushOutcome> {
        let mut on_tcp = 0;
        if let Some(tcp) = self.tcp.as_deref_mut()
            && tcp.has_connections()
        {
            on_tcp = tcp.divert(queue);
            tcp.write_dirty();
        }
        let outcome = match &mut self.side {
            TransmitSide::Uring(tx) => tx.flush(queue)?,
            TransmitSide::Epoll(tx) => tx.flush(queue),
        };
        queue.clear();
        Ok(FlushOutcome { sent: outcome.sent + on_tcp, dropped: outcome.dropped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_pair(choice: BackendChoice) -> (Io, Arc<EventFd>) {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let sockets = vec![bind_udp(any).unwrap(), bind_udp(any).unwrap()];
        let wake = Arc::new(EventFd::new().unwrap());
        (Io::new(sockets, None, TcpConfig::default(), Arc::clone(&wake), choice).unwrap(), wake)
    }

    fn exchange_datagrams(choice: BackendChoice) {
        let (mut io, _wake) = loopback_pair(choice);
        let from = io.local_addr(SocketIndex(0)).unwrap();
        let to = io.local_addr(SocketIndex(1)).unwrap();
        let mut queue = SendQueue::new(256);
        for i in 0..200u16 {
            let payload = [&i.to_be_bytes()[..], &[0xAB; 1100][..]].concat();
            assert!(queue.push(SocketIndex(0), to, &payload));
        }
        let outcome = io.flush(&mut queue).unwrap();
        assert_eq!(outcome, FlushOutcome { sent: 200, dropped: 0 });
        assert!(queue.is_empty());
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while seen.len() < 200 && std::time::Instant::now() < deadline {
            io.poll(Some(Duration::from_millis(100)), 64, |socket, source, bytes, _| {
                assert_eq!(socket, SocketIndex(1));
                assert_eq!(source, from);
                assert_eq!(bytes.len(), 1102);
                assert!(bytes[2..].iter().all(|&b| b == 0xAB));
                seen.push(u16::from_be_bytes([bytes[0], bytes[1]]));
            })
            .unwrap();
        }
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
    }

    /// Twenty datagrams wait in the socket; polls with a budget of three hand over at most
    /// three each, and together all twenty, in order.
    fn poll_keeps_to_its_budget(choice: BackendChoice) {
        let (mut io, _wake) = loopback_pair(choice);
        let to = io.local_addr(SocketIndex(1)).unwrap();
        let mut queue = SendQueue::new(32);
        for i in 0..20u8 {
            assert!(queue.push(SocketIndex(0), to, &[i; 200]));
        }
        assert_eq!(io.flush(&mut queue).unwrap().sent, 20);
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while seen.len() < 20 && std::time::Instant::now() < deadline {
            let mut this_poll = 0;
            let outcome = io
                .poll(Some(Duration::from_millis(100)), 3, |_, _, bytes, _| {
                    this_poll += 1;
                    seen.push(bytes[0]);
                })
                .unwrap();
            assert!(this_poll <= 3, "a poll with a budget of 3 handed over {this_poll}");
            assert_eq!(outcome.received, this_poll);
        }
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    }

    fn wake_up_ends_the_wait(choice: BackendChoice) {
        let (mut io, wake) = loopback_pair(choice);
        let waker = Arc::clone(&wake);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.notify().unwrap();
        });
        let outcome = io.poll(Some(Duration::from_secs(10)), 64, |_, _, _, _| panic!("no datagram was sent")).unwrap();
        thread.join().unwrap();
        assert!(outcome.woken);
        let outcome = io.poll(Some(Duration::from_millis(20)), 64, |_, _, _, _| {}).unwrap();
        assert_eq!(outcome, PollOutcome::default(), "a drained wake-up must not fire twice");
    }

    /// Socket 1 echoes every datagram back to socket 0, flushing from inside the receive
    /// callback after each one, as a fan-out that fills its queue does.
    fn echo_from_inside_the_callback(choice: BackendChoice) {
        let (mut io, _wake) = loopback_pair(choice);
        let a = io.local_addr(SocketIndex(0)).unwrap();
        let b = io.local_addr(SocketIndex(1)).unwrap();
        let mut queue = SendQueue::new(8);
        for i in 0..100u8 {
            assert!(queue.push(SocketIndex(0), b, &[i; 300]));
            if queue.is_full() {
                io.flush(&mut queue).unwrap();
            }
        }
        io.flush(&mut queue).unwrap();
        let mut echo_queue = SendQueue::new(1);
        let mut echoed = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while echoed.len() < 100 && std::time::Instant::now() < deadline {
            io.poll(Some(Duration::from_millis(100)), 256, |socket, source, bytes, tx| {
                if socket == SocketIndex(1) {
                    assert_eq!(source, a);
                    assert!(echo_queue.push(SocketIndex(1), a, bytes));
                    assert_eq!(tx.flush(&mut echo_queue).unwrap().sent, 1);
                } else {
                    assert_eq!(source, b);
                    echoed.push(bytes[0]);
                }
            })
            .unwrap();
        }
        assert_eq!(echoed, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn epoll_flushes_from_inside_the_callback() {
        echo_from_inside_the_callback(BackendChoice::Epoll);
    }

    #[test]
    fn uring_flushes_from_inside_the_callback() {
        if let Some(reason) = uring_unavailable_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
        echo_from_inside_the_callback(BackendChoice::Uring);
    }

    #[test]
    fn epoll_exchanges_datagrams_in_order() {
        exchange_datagrams(BackendChoice::Epoll);
    }

    #[test]
    fn epoll_keeps_to_the_receive_budget() {
        poll_keeps_to_its_budget(BackendChoice::Epoll);
    }

    #[test]
    fn uring_keeps_to_the_receive_budget() {
        if let Some(reason) = uring_unavailable_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
        poll_keeps_to_its_budget(BackendChoice::Uring);
    }

    #[test]
    fn epoll_wakes_on_the_eventfd() {
        wake_up_ends_the_wait(BackendChoice::Epoll);
    }

    #[test]
    fn uring_exchanges_datagrams_in_order() {
        if let Some(reason) = uring_unavailable_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
        exchange_datagrams(BackendChoice::Uring);
    }

    #[test]
    fn uring_wakes_on_the_eventfd() {
        if let Some(reason) = uring_unavailable_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
        wake_up_ends_the_wait(BackendChoice::Uring);
    }

    #[test]
    fn backend_names_parse() {
        assert_eq!("uring".parse::<BackendChoice>(), Ok(BackendChoice::Uring));
        assert_eq!("epoll".parse::<BackendChoice>(), Ok(BackendChoice::Epoll));
        assert_eq!("auto".parse::<BackendChoice>(), Ok(BackendChoice::Auto));
        assert!("kqueue".parse::<BackendChoice>().is_err());
    }
}
