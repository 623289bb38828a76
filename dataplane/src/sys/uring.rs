//! The io_uring socket backend: a multishot `recvmsg` per UDP socket that fills buffers
//! from a provided-buffer ring, a multishot poll on the wake-up eventfd, a one-shot poll on
//! the registry (the epoll set of the io layer's stream fds), and sends queued as `sendmsg`
//! entries with one submit per flush.
//!
//! Invariants kept here:
//! - The buffer ring and its buffers are allocated once and outlive the ring's use of
//!   them; a buffer goes back to the kernel only after its datagram has been handled.
//! - Sends carry `MSG_DONTWAIT`, so the kernel completes each one at submit time (sent or
//!   -EAGAIN) instead of parking it; `flush` waits for every send's completion before the
//!   queue's bytes may be reused.
//! - Completions of other kinds met while waiting for sends are kept, in order, and
//!   handled by the next `poll`.
//! - The registry poll is one-shot and re-armed only after its event was handled: a poll
//!   armed on an epoll set that still has ready fds completes at once, so stream fds left
//!   ready (level-triggered) are never missed, as a multishot poll, which fires only on new
//!   wake-ups, could miss them.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use super::mmsg::FlushOutcome;
use super::{Epoll, Event, EventFd, sockaddr};
use crate::batch::{PollOutcome, SLOT_SIZE, SendQueue, SocketIndex};

/// Buffers in the provided-buffer ring (a power of two). Datagrams beyond this many in
/// flight are dropped by the kernel with ENOBUFS, counted, and the receive re-armed.
const RING_BUFFERS: u16 = 1024;
const BUFFER_GROUP: u16 = 0;
const SUBMISSION_ENTRIES: u32 = 1024;
const COMPLETION_ENTRIES: u32 = 8192;

/// Completion kinds, in the top byte of `user_data`; the rest is the socket index.
const KIND_RECV: u64 = 1 << 56;
const KIND_WAKE: u64 = 2 << 56;
const KIND_SEND: u64 = 3 << 56;
const KIND_REGISTRY: u64 = 4 << 56;
const KIND_MASK: u64 = 0xff << 56;

/// Why io_uring cannot be used, for the log line that explains the fallback.
pub(crate) fn unavailable_reason() -> Option<String> {
    // 1 restricts io_uring to kernel.io_uring_group; the setup probe below tells.
    if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|text| text.trim() == "2") {
        return Some("kernel.io_uring_disabled = 2 forbids io_uring".to_owned());
    }
    if let Some((major, minor)) = kernel_version()
        && (major, minor) < (6, 0)
    {
        return Some(format!("kernel {major}.{minor} is older than 6.0 (multishot recvmsg)"));
    }
    match IoUring::new(2) {
        Ok(ring) => {
            drop(ring);
            None
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            Some("io_uring_setup refused with EPERM (seccomp profile or io_uring_group)".to_owned())
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            Some("io_uring_setup is not implemented (ENOSYS)".to_owned())
        }
        Err(e) => Some(format!("io_uring_setup failed: {e}")),
    }
}

fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: all-zero bytes are a valid utsname; uname fills it or fails.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a live utsname.
    if unsafe { libc::uname(&raw mut name) } != 0 {
        return None;
    }
    let release: Vec<u8> = name.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    let release = String::from_utf8_lossy(&release);
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The provided-buffer ring shared with the kernel, and the buffers it hands out.
struct BufferRing {
    /// `RING_BUFFERS` entries of `io_uring_buf`, page aligned; entry 0's last field is the
    /// ring's tail.
    ring: *mut io_uring::types::BufRingEntry,
    buffers: *mut u8,
    local_tail: u16,
}

impl BufferRing {
    const RING_LAYOUT: Layout = match Layout::from_size_align(RING_BUFFERS as usize * 16, 4096) {
        Ok(layout) => layout,
        Err(_) => panic!("ring layout is a valid constant"),
    };
    const BUFFERS_LAYOUT: Layout = match Layout::from_size_align(RING_BUFFERS as usize * SLOT_SIZE, 4096) {
        Ok(layout) => layout,
        Err(_) => panic!("buffers layout is a valid constant"),
    };

    fn new() -> io::Result<Self> {
        // SAFETY: both layouts have non-zero size.
        let ring = unsafe { alloc_zeroed(Self::RING_LAYOUT) }.cast::<io_uring::types::BufRingEntry>();
        // SAFETY: as above.
        let buffers = unsafe { alloc_zeroed(Self::BUFFERS_LAYOUT) };
        if ring.is_null() || buffers.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut this = Self { ring, buffers, local_tail: 0 };
        for bid in 0..RING_BUFFERS {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Puts buffer `bid` at the ring's tail (visible to the kernel after `publish`).
    fn push(&mut self, bid: u16) {
        let index = usize::from(self.local_tail & (RING_BUFFERS - 1));
        // SAFETY: `index` < RING_BUFFERS, inside the ring allocation; `bid` < RING_BUFFERS,
        // so the buffer address is inside the buffers allocation.
        unsafe {
            let entry = &mut *self.ring.add(index);
            entry.set_addr(self.buffers.add(usize::from(bid) * SLOT_SIZE) as u64);
            entry.set_len(SLOT_SIZE as u32);
            entry.set_bid(bid);
        }
        self.local_tail = self.local_tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is the u16 at byte 14 of the ring (`io_uring_buf_ring.tail`),
        // 2-byte aligned inside the allocation; the kernel reads it concurrently, hence the
        // atomic release store.
        let tail = unsafe { &*(self.ring.cast::<u8>().add(14).cast::<AtomicU16>()) };
        tail.store(self.local_tail, Ordering::Release);
    }

    /// The buffer the kernel filled for `bid`, mutable for in-place decryption.
    fn buffer(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let bid = usize::from(bid % RING_BUFFERS);
        // SAFETY: buffer `bid` is inside the allocation; the kernel has handed it to us
        // (it stays ours until pushed back) and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.buffers.add(bid * SLOT_SIZE), len.min(SLOT_SIZE)) }
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring (and so the kernel's use
        // of both) is dropped before the buffer ring, see `UringIo`'s field order.
        unsafe {
            dealloc(self.ring.cast(), Self::RING_LAYOUT);
            dealloc(self.buffers, Self::BUFFERS_LAYOUT);
        }
    }
}

/// A completion kept for the next `poll`.
#[derive(Debug, Clone, Copy)]
struct Deferred {
    user_data: u64,
    result: i32,
    flags: u32,
}

/// Kernel-visible headers for the sends of one flush, allocated once per queue size.
struct SendHeaders {
    headers: Box<[libc::msghdr]>,
    iovecs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
}

impl SendHeaders {
    fn with_capacity(capacity: usize) -> Self {
        // SAFETY: all-zero bytes are a valid msghdr.
        let empty: libc::msghdr = unsafe { std::mem::zeroed() };
        Self {
            headers: vec![empty; capacity].into_boxed_slice(),
            iovecs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; capacity].into_boxed_slice(),
            addrs: vec![sockaddr::empty(); capacity].into_boxed_slice(),
        }
    }
}

/// The receive side: the buffers the kernel fills and the recvmsg template.
struct UringRx {
    buffers: BufferRing,
    /// The recvmsg template the kernel reads when arming (name space, no control data).
    recv_template: Box<libc::msghdr>,
    wake: Arc<EventFd>,
    registry: Arc<Epoll>,
}

/// The ring and the send side, usable while a received datagram is being handled.
pub(crate) struct UringTx {
    ring: IoUring,
    sockets: Vec<RawFd>,
    send: SendHeaders,
    deferred: VecDeque<Deferred>,
}

pub(crate) struct UringIo {
    // Field order matters: `tx` holds the ring, which is dropped (and the kernel stops
    // using buffers, template and headers) before `rx` frees the memory it points at.
    pub(crate) tx: UringTx,
    rx: UringRx,
    pub(crate) enobufs: u64,
}

impl std::fmt::Debug for UringIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIo").field("sockets", &self.tx.sockets).field("enobufs", &self.enobufs).finish()
    }
}

impl std::fmt::Debug for UringTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringTx").field("sockets", &self.sockets).finish()
    }
}

impl UringIo {
    /// Builds the ring on the calling thread (its only submitter), registers the buffer
    /// ring and arms a receive per socket and the wake-up poll.
    pub(crate) fn new(sockets: Vec<RawFd>, wake: Arc<EventFd>) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_cqsize(COMPLETION_ENTRIES)
            .build(SUBMISSION_ENTRIES)?;
        let buffers = BufferRing::new()?;
        // SAFETY: the ring memory is page aligned, RING_BUFFERS entries long, and lives as
        // long as the ring (field order above).
        unsafe { ring.submitter().register_buf_ring_with_flags(buffers.ring as u64, RING_BUFFERS, BUFFER_GROUP, 0)? };
        // SAFETY: all-zero bytes are a valid msghdr.
        let mut recv_template: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_template.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let mut this = Self {
            tx: UringTx {
                ring,
                sockets,
                send: SendHeaders::with_capacity(0),
                deferred: VecDeque::with_capacity(COMPLETION_ENTRIES as usize),
            },
            rx: UringRx { buffers, recv_template, wake, registry: Arc::new(Epoll::new()?) },
            enobufs: 0,
        };
        for index in 0..this.tx.sockets.len() {
            this.arm_recv(index)?;
        }
        this.arm_wake()?;
        this.arm_registry()?;
        this.tx.ring.submit()?;
        Ok(this)
    }

    fn arm_recv(&mut self, index: usize) -> io::Result<()> {
        let Some(&fd) = self.tx.sockets.get(index) else { return Ok(()) };
        let entry = opcode::RecvMsgMulti::new(Fd(fd), &raw const *self.rx.recv_template, BUFFER_GROUP)
            .build()
            .user_data(KIND_RECV | index as u64);
        self.tx.push_entry(&entry)
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let entry = opcode::PollAdd::new(Fd(self.rx.wake.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(KIND_WAKE);
        self.tx.push_entry(&entry)
    }

    fn arm_registry(&mut self) -> io::Result<()> {
        let entry = opcode::PollAdd::new(Fd(self.rx.registry.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(KIND_REGISTRY);
        self.tx.push_entry(&entry)
    }

    /// The epoll set where the io layer registers its stream fds; the ring reports it ready
    /// as [`Event::RegistryReady`].
    pub(crate) fn registry(&self) -> Arc<Epoll> {
        Arc::clone(&self.rx.registry)
    }

    /// Waits up to `timeout` (forever when `None`) for a completion, then handles at most
    /// about `budget` received datagrams, each with the send side at hand, and reports a
    /// ready registry.
    pub(crate) fn poll(
        &mut self,
        timeout: Option<Duration>,
        budget: usize,
        on_event: &mut impl FnMut(Event<'_>, &mut UringTx),
    ) -> io::Result<PollOutcome> {
        let ring = &mut self.tx.ring;
        if self.tx.deferred.is_empty() && ring.completion().is_empty() {
            let waited = match timeout {
                None => ring.submit_and_wait(1),
                Some(t) => {
                    let ts = Timespec::from(t);
                    ring.submitter().submit_with_args(1, &SubmitArgs::new().timespec(&ts))
                }
            };
            match waited {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
        } else {
            ring.submit()?;
        }
        let mut outcome = PollOutcome::default();
        let mut rearm_recv = Vec::new();
        let mut rearm_wake = false;
        let mut rearm_registry = false;
        let mut recycled = false;
        while outcome.received < budget.max(1) {
            let Some(done) = self.tx.next_completion() else { break };
            match done.user_data & KIND_MASK {
                KIND_RECV => {
                    let index = (done.user_data & !KIND_MASK) as usize;
                    if !cqueue::more(done.flags) && !rearm_recv.contains(&index) {
                        rearm_recv.push(index);
                    }
                    if let Some(bid) = cqueue::buffer_select(done.flags) {
                        if done.result > 0 {
                            self.rx.deliver(index, bid, done.result as usize, &mut |socket, source, bytes| {
                                on_event(Event::Datagram { socket, source, bytes }, &mut self.tx)
                            });
                            outcome.received += 1;
                        }
                        self.rx.buffers.push(bid);
                        recycled = true;
                    } else if done.result == -libc::ENOBUFS {
                        self.enobufs += 1;
                    }
                }
                KIND_WAKE => {
                    self.rx.wake.drain()?;
                    outcome.woken = true;
                    rearm_wake |= !cqueue::more(done.flags);
                }
                KIND_REGISTRY => {
                    on_event(Event::RegistryReady, &mut self.tx);
                    rearm_registry = true;
                }
                _ => {}
            }
        }
        if recycled {
            self.rx.buffers.publish();
        }
        for index in rearm_recv {
            self.arm_recv(index)?;
        }
        if rearm_wake {
            self.arm_wake()?;
        }
        if rearm_registry {
            self.arm_registry()?;
        }
        Ok(outcome)
    }
}

impl UringRx {
    fn deliver(
        &mut self,
        index: usize,
        bid: u16,
        len: usize,
        on_datagram: &mut impl FnMut(SocketIndex, SocketAddr, &mut [u8]),
    ) {
        let buffer = self.buffers.buffer(bid, len);
        let Ok(message) = RecvMsgOut::parse(buffer, &self.recv_template) else { return };
        // A truncated datagram was larger than any valid WebRTC packet: skip it.
        if message.is_payload_truncated() || message.is_name_data_truncated() {
            return;
        }
        let Some(source) = sockaddr::read(message.name_data()) else { return };
        let payload = message.payload_data();
        let start = payload.as_ptr() as usize - buffer.as_ptr() as usize;
        let end = start + payload.len();
        let socket = SocketIndex(u16::try_from(index).unwrap_or(u16::MAX));
        if let Some(bytes) = buffer.get_mut(start..end) {
            on_datagram(socket, source, bytes);
        }
    }
}

impl UringTx {
    fn push_entry(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: every entry built in this module points only at memory owned by the
        // backend (template, headers, buffers) or at the caller's queue, which `flush`
        // keeps borrowed until the entry completes.
        while unsafe { self.ring.submission().push(entry) }.is_err() {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// The oldest completion not yet handled: first those set aside by a flush.
    fn next_completion(&mut self) -> Option<Deferred> {
        self.deferred.pop_front().or_else(|| {
            self.ring.completion().next().map(|cqe| Deferred {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            })
        })
    }

    /// Sends every datagram of `queue` and waits until the kernel is done with them all.
    pub(crate) fn flush(&mut self, queue: &SendQueue) -> io::Result<FlushOutcome> {
        if queue.is_empty() {
            return Ok(FlushOutcome::default());
        }
        if self.send.headers.len() < queue.capacity() {
            self.send = SendHeaders::with_capacity(queue.capacity());
        }
        let mut outcome = FlushOutcome::default();
        let mut pending = 0usize;
        for (i, (socket, destination, bytes)) in queue.iter().enumerate() {
            // The io layer has written it to a TCP connection already.
            if socket == SocketIndex::TCP {
                continue;
            }
            let Some(&fd) = self.sockets.get(usize::from(socket.0)) else {
                outcome.dropped += 1;
                continue;
            };
            let name_len = sockaddr::write(destination, &mut self.send.addrs[i]);
            self.send.iovecs[i] = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
            let header = &mut self.send.headers[i];
            header.msg_name = (&raw mut self.send.addrs[i]).cast();
            header.msg_namelen = name_len;
            header.msg_iov = &raw mut self.send.iovecs[i];
            header.msg_iovlen = 1;
            let entry = opcode::SendMsg::new(Fd(fd), &raw const self.send.headers[i])
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(KIND_SEND);
            self.push_entry(&entry)?;
            pending += 1;
        }
        self.ring.submit()?;
        while pending > 0 {
            let mut progressed = false;
            while let Some(cqe) = self.ring.completion().next() {
                if cqe.user_data() & KIND_MASK == KIND_SEND {
                    pending -= 1;
                    progressed = true;
                    if cqe.result() >= 0 {
                        outcome.sent += 1;
                    } else {
                        outcome.dropped += 1;
                    }
                } else {
                    self.deferred.push_back(Deferred {
                        user_data: cqe.user_data(),
                        result: cqe.result(),
                        flags: cqe.flags(),
                    });
                }
            }
            if pending > 0 && !progressed {
                match self.ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(outcome)
    }
}
