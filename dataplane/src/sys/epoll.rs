//! The portable socket backend: level-triggered epoll over the worker's UDP sockets, its
//! wake-up eventfd and the stream fds the io layer registers in the same set, with
//! `recvmmsg` / `sendmmsg` batches for the UDP sockets. Also the [`Epoll`] set itself, which
//! the io_uring backend uses for stream fds too.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::mmsg::{FlushOutcome, RECV_BATCH, RecvBatch, SendBatch};
use super::{Event, EventFd};
use crate::batch::{PollOutcome, SendQueue, SocketIndex};

/// epoll user data of the wake-up fd; sockets use their index, and every other token
/// belongs to the io layer's registrations.
const WAKE_TOKEN: u64 = u64::MAX;
/// Ready events taken per wait beyond the backend's own fds. More ready fds than this wait
/// for the next turn; level-triggered epoll returns them then, the oldest first.
pub(crate) const REGISTRY_EVENTS: usize = 256;

/// What a registered fd should be watched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    ReadWrite,
}

impl Interest {
    fn bits(self) -> u32 {
        match self {
            Self::Read => libc::EPOLLIN as u32,
            Self::ReadWrite => (libc::EPOLLIN | libc::EPOLLOUT) as u32,
        }
    }
}

/// What the kernel reported for a ready fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readiness(u32);

impl Readiness {
    /// Data, end of stream or an error waits: a read will tell which.
    pub(crate) fn readable(self) -> bool {
        self.0 & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
    }

    /// Room to write, or an error a write will report.
    pub(crate) fn writable(self) -> bool {
        self.0 & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
    }
}

/// A level-triggered epoll set. The io layer registers its stream fds here: with the epoll
/// backend this is the set the backend waits on; with io_uring it is a set of its own that
/// the ring polls.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(raw) } })
    }

    fn control(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `event` is live for the call; the kernel checks both descriptors.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &raw mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `interest`; its events carry `token`.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), token, interest.bits())
    }

    /// Changes what a watched `fd` is watched for.
    pub(crate) fn modify(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), token, interest.bits())
    }

    /// Stops watching `fd` (closing it does too; this keeps the set exact while it is open).
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, 0)
    }

    /// Waits up to `timeout` (forever when `None`) and fills `events`; an interrupted wait
    /// reports nothing ready.
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let timeout_ms = match timeout {
            None => -1,
            Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        };
        let capacity = i32::try_from(events.list.len()).unwrap_or(i32::MAX);
        // SAFETY: `list` is a live buffer of at least `capacity` events.
        let ready = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.list.as_mut_ptr(), capacity, timeout_ms) };
        events.ready = 0;
        if ready < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(err) };
        }
        events.ready = ready as usize;
        Ok(())
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The events one [`Epoll::wait`] returned, in a buffer allocated once.
pub(crate) struct Events {
    list: Box<[libc::epoll_event]>,
    ready: usize,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("capacity", &self.list.len()).field("ready", &self.ready).finish()
    }
}

impl Events {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self { list: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)].into_boxed_slice(), ready: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.ready
    }

    /// The token and readiness of ready event `index`.
    pub(crate) fn get(&self, index: usize) -> Option<(u64, Readiness)> {
        let event = self.list.get(..self.ready)?.get(index)?;
        // Copied out: the struct is packed on some targets, so no references to its fields.
        let (token, bits) = (event.u64, event.events);
        Some((token, Readiness(bits)))
    }
}

/// The receive side: epoll, the wake-up fd and the receive batch.
#[derive(Debug)]
struct EpollRx {
    epoll: Arc<Epoll>,
    sockets: Vec<RawFd>,
    wake: Arc<EventFd>,
    events: Events,
    recv: RecvBatch,
}

/// The send side, usable while a received datagram is being handled.
#[derive(Debug)]
pub(crate) struct EpollTx {
    sockets: Vec<RawFd>,
    send: SendBatch,
}

impl EpollTx {
    pub(crate) fn flush(&mut self, queue: &SendQueue) -> FlushOutcome {
        self.send.flush(&self.sockets, queue)
    }
}

#[derive(Debug)]
pub(crate) struct EpollIo {
    rx: EpollRx,
    pub(crate) tx: EpollTx,
}

impl EpollIo {
    /// Watches `sockets` (kept open by the caller for the backend's lifetime) and `wake`.
    pub(crate) fn new(sockets: Vec<RawFd>, wake: Arc<EventFd>) -> io::Result<Self> {
        let epoll = Arc::new(Epoll::new()?);
        let read = Interest::Read.bits();
        epoll.control(libc::EPOLL_CTL_ADD, wake.as_raw_fd(), WAKE_TOKEN, read)?;
        for (index, &fd) in sockets.iter().enumerate() {
            epoll.control(libc::EPOLL_CTL_ADD, fd, index as u64, read)?;
        }
        let events = Events::with_capacity(sockets.len() + 1 + REGISTRY_EVENTS);
        let tx = EpollTx { sockets: sockets.clone(), send: SendBatch::new() };
        Ok(Self { rx: EpollRx { epoll, sockets, wake, events, recv: RecvBatch::new() }, tx })
    }

    /// The set this backend waits on, where the io layer registers its stream fds with
    /// tokens that are neither a socket index nor `u64::MAX`.
    pub(crate) fn registry(&self) -> Arc<Epoll> {
        Arc::clone(&self.rx.epoll)
    }

    /// Waits up to `timeout` (forever when `None`) for datagrams, registered fds or a
    /// wake-up, then reads at most `budget` datagrams (at least one per ready socket) and hands
    /// each to `on_event` with the send side, as it does each registered fd that is ready.
    /// Unread datagrams stay in the socket.
    pub(crate) fn poll(
        &mut self,
        timeout: Option<Duration>,
        budget: usize,
        on_event: &mut impl FnMut(Event<'_>, &mut EpollTx),
    ) -> io::Result<PollOutcome> {
        let rx = &mut self.rx;
        let tx = &mut self.tx;
        rx.epoll.wait(&mut rx.events, timeout)?;
        let mut outcome = PollOutcome::default();
        for i in 0..rx.events.len() {
            let Some((token, readiness)) = rx.events.get(i) else { break };
            if token == WAKE_TOKEN {
                rx.wake.drain()?;
                outcome.woken = true;
                continue;
            }
            let Some(&fd) = usize::try_from(token).ok().and_then(|index| rx.sockets.get(index)) else {
                on_event(Event::Ready { token, readiness }, tx);
                continue;
            };
            let socket = SocketIndex(u16::try_from(token).unwrap_or(u16::MAX));
            loop {
                let asked = budget.saturating_sub(outcome.received).min(RECV_BATCH);
                let n = rx.recv.receive(fd, socket, asked, &mut |socket, source, bytes| {
                    on_event(Event::Datagram { socket, source, bytes }, tx)
                })?;
                outcome.received += n;
                if n < asked || outcome.received >= budget {
                    break;
                }
            }
        }
        Ok(outcome)
    }
}
