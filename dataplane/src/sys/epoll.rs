//! The portable socket backend: level-triggered epoll over the worker's UDP sockets and
//! its wake-up eventfd, with `recvmmsg` / `sendmmsg` batches.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::EventFd;
use super::mmsg::{FlushOutcome, RECV_BATCH, RecvBatch, SendBatch};
use crate::io::{PollOutcome, SendQueue, SocketIndex};

/// epoll user data of the wake-up fd; sockets use their index.
const WAKE_TOKEN: u64 = u64::MAX;

/// The receive side: epoll, the wake-up fd and the receive batch.
#[derive(Debug)]
struct EpollRx {
    epoll: OwnedFd,
    sockets: Vec<RawFd>,
    wake: Arc<EventFd>,
    events: Vec<libc::epoll_event>,
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
        // SAFETY: no pointers; the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        let watch = |fd: RawFd, token: u64| -> io::Result<()> {
            let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
            // SAFETY: `event` is live for the call; both fds are open.
            if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut event) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        watch(wake.as_raw_fd(), WAKE_TOKEN)?;
        for (index, &fd) in sockets.iter().enumerate() {
            watch(fd, index as u64)?;
        }
        let events = vec![libc::epoll_event { events: 0, u64: 0 }; sockets.len() + 1];
        let tx = EpollTx { sockets: sockets.clone(), send: SendBatch::new() };
        Ok(Self { rx: EpollRx { epoll, sockets, wake, events, recv: RecvBatch::new() }, tx })
    }

    /// Waits up to `timeout` (forever when `None`) for datagrams or a wake-up, then reads
    /// at most `budget` datagrams (rounded up to whole batches) and hands each to
    /// `on_datagram` with the send side. Unread datagrams stay in the socket.
    pub(crate) fn poll(
        &mut self,
        timeout: Option<Duration>,
        budget: usize,
        on_datagram: &mut impl FnMut(SocketIndex, SocketAddr, &mut [u8], &mut EpollTx),
    ) -> io::Result<PollOutcome> {
        let rx = &mut self.rx;
        let tx = &mut self.tx;
        let timeout_ms = match timeout {
            None => -1,
            Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
        };
        // SAFETY: `events` is a live buffer of the length given.
        let ready = unsafe {
            libc::epoll_wait(rx.epoll.as_raw_fd(), rx.events.as_mut_ptr(), rx.events.len() as i32, timeout_ms)
        };
        if ready < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted { Ok(PollOutcome::default()) } else { Err(err) };
        }
        let mut outcome = PollOutcome::default();
        for i in 0..ready as usize {
            let token = rx.events[i].u64;
            if token == WAKE_TOKEN {
                rx.wake.drain()?;
                outcome.woken = true;
                continue;
            }
            let index = token as usize;
            let Some(&fd) = rx.sockets.get(index) else { continue };
            let socket = SocketIndex(u16::try_from(index).unwrap_or(u16::MAX));
            loop {
                let n = rx.recv.receive(fd, socket, &mut |s, a, b| on_datagram(s, a, b, tx))?;
                outcome.received += n;
                if n < RECV_BATCH || outcome.received >= budget {
                    break;
                }
            }
        }
        Ok(outcome)
    }
}
