//! Batched UDP receive and send with `recvmmsg` / `sendmmsg`: one system call moves up to
//! a batch of datagrams. The batches own their buffers and kernel headers, allocated once.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::sockaddr;
use crate::batch::{SLOT_SIZE, SendQueue, SocketIndex};

/// Datagrams read by one `recvmmsg` call.
pub(crate) const RECV_BATCH: usize = 64;
/// The kernel's limit on messages per `sendmmsg` call (UIO_MAXIOV).
const SEND_BATCH: usize = 1024;

/// Receive buffers and headers for one `recvmmsg` call.
pub(crate) struct RecvBatch {
    buffers: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("slots", &RECV_BATCH).finish()
    }
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        let empty_iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        // SAFETY: all-zero bytes are a valid mmsghdr (null pointers, zero lengths).
        let empty_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            buffers: vec![0; RECV_BATCH * SLOT_SIZE].into_boxed_slice(),
            addrs: vec![sockaddr::empty(); RECV_BATCH].into_boxed_slice(),
            iovecs: vec![empty_iov; RECV_BATCH].into_boxed_slice(),
            headers: vec![empty_header; RECV_BATCH].into_boxed_slice(),
        }
    }

    /// Reads up to `max` datagrams (at least one, at most a batch) from `fd` without
    /// blocking and hands each to `on_datagram`; returns how many were read (0 when the
    /// socket had none).
    pub(crate) fn receive(
        &mut self,
        fd: RawFd,
        socket: SocketIndex,
        max: usize,
        on_datagram: &mut impl FnMut(SocketIndex, SocketAddr, &mut [u8]),
    ) -> io::Result<usize> {
        let max = max.clamp(1, RECV_BATCH);
        let buffers = self.buffers.as_mut_ptr();
        for i in 0..max {
            self.iovecs[i] = libc::iovec {
                // SAFETY: slot i lies inside `buffers` (RECV_BATCH * SLOT_SIZE bytes).
                iov_base: unsafe { buffers.add(i * SLOT_SIZE) }.cast(),
                iov_len: SLOT_SIZE,
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&raw mut self.addrs[i]).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &raw mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers and addresses owned by `self`, which
        // outlive the call; the kernel writes at most the lengths given.
        let n = unsafe {
            libc::recvmmsg(fd, self.headers.as_mut_ptr(), max as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(err) };
        }
        let n = n as usize;
        for i in 0..n {
            let header = &self.headers[i];
            let len = (header.msg_len as usize).min(SLOT_SIZE);
            // A truncated datagram was larger than any valid WebRTC packet: skip it.
            if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let Some(source) = sockaddr::read(sockaddr::bytes(&self.addrs[i], header.msg_hdr.msg_namelen)) else {
                continue;
            };
            on_datagram(socket, source, &mut self.buffers[i * SLOT_SIZE..i * SLOT_SIZE + len]);
        }
        Ok(n)
    }
}

/// Kernel headers for flushing a [`SendQueue`] with `sendmmsg`.
pub(crate) struct SendBatch {
    addrs: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").field("slots", &SEND_BATCH).finish()
    }
}

/// What a flush achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushOutcome {
    pub sent: usize,
    /// Datagrams the kernel refused (socket buffer full, unreachable, ...): dropped, counted.
    pub dropped: usize,
}

impl SendBatch {
    pub(crate) fn new() -> Self {
        let empty_iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        // SAFETY: all-zero bytes are a valid mmsghdr.
        let empty_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            addrs: vec![sockaddr::empty(); SEND_BATCH].into_boxed_slice(),
            iovecs: vec![empty_iov; SEND_BATCH].into_boxed_slice(),
            headers: vec![empty_header; SEND_BATCH].into_boxed_slice(),
        }
    }

    /// Sends every datagram of `queue`, each through `fds[socket]`, in runs of the same
    /// socket. Never blocks: what the kernel will not take now is dropped and counted.
    pub(crate) fn flush(&mut self, fds: &[RawFd], queue: &SendQueue) -> FlushOutcome {
        let mut outcome = FlushOutcome::default();
        let mut index = 0;
        while index < queue.len() {
            let Some((socket, _, _)) = queue.get(index) else { break };
            // The io layer has written it to a TCP connection already.
            if socket == SocketIndex::TCP {
                index += 1;
                continue;
            }
            let Some(&fd) = fds.get(usize::from(socket.0)) else {
                outcome.dropped += 1;
                index += 1;
                continue;
            };
            let mut count = 0;
            while count < SEND_BATCH {
                let Some((s, destination, bytes)) = queue.get(index + count) else { break };
                if s != socket {
                    break;
                }
                let name_len = sockaddr::write(destination, &mut self.addrs[count]);
                self.iovecs[count] = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
                let header = &mut self.headers[count].msg_hdr;
                header.msg_name = (&raw mut self.addrs[count]).cast();
                header.msg_namelen = name_len;
                header.msg_iov = &raw mut self.iovecs[count];
                header.msg_iovlen = 1;
                header.msg_control = std::ptr::null_mut();
                header.msg_controllen = 0;
                header.msg_flags = 0;
                count += 1;
            }
            let mut done = 0;
            while done < count {
                // SAFETY: headers [done, count) point at addresses owned by `self` and at
                // datagram bytes borrowed from `queue`, all live for the call; the kernel
                // only reads them.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.headers.as_mut_ptr().add(done),
                        (count - done) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    done += n as usize;
                    outcome.sent += n as usize;
                } else if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                    // The socket buffer is full: the rest of this run would fail the same way.
                    outcome.dropped += count - done;
                    done = count;
                } else {
                    // An error for the first message's destination: drop it, send the rest.
                    done += 1;
                    outcome.dropped += 1;
                }
            }
            index += count;
        }
        outcome
    }
}
