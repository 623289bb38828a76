//! The load generator's system calls that std does not offer: receiving a datagram with the
//! kernel's receive timestamp (`SO_TIMESTAMPNS`), so that a meter's own scheduling delay
//! does not count as latency the SFU added; sending many datagrams per system call
//! (`sendmmsg`, and `UDP_SEGMENT` GSO) and reading a thread's own CPU time, for the raw UDP
//! baseline ([`crate::raw`]); and starting and stopping the SFU processes under test
//! (pinned, tied to the load generator's life, SIGTERM by PID).
#![allow(unsafe_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::SockAddr;

/// Asks the kernel to stamp every datagram `socket` receives (CLOCK_REALTIME).
pub fn enable_receive_timestamps(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, an option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Nanoseconds since the Unix epoch on CLOCK_REALTIME, the clock of the kernel's receive
/// timestamps.
pub fn realtime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out pointer; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Receives one datagram into `buf` (blocking as the socket is set): its length, source and
/// kernel receive time in ns on CLOCK_REALTIME (the time of the call when the kernel gave
/// none).
pub fn recv_timestamped(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, u64)> {
    let mut stamp = None;
    // SAFETY: socket2 hands a zeroed address storage and its length to fill; the iovec,
    // msghdr and control buffer are valid initial values whose pointers outlive the call.
    let (len, source) = unsafe {
        SockAddr::try_init(|storage, storage_len| {
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let mut control = [0u64; 8];
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *storage_len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control);
            let len = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
            if len < 0 {
                return Err(io::Error::last_os_error());
            }
            *storage_len = msg.msg_namelen;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                    stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            Ok(len as usize)
        })?
    };
    let from = source.as_socket().ok_or_else(|| io::Error::other("a datagram from an unknown family"))?;
    Ok((len, from, stamp.unwrap_or_else(realtime_ns)))
}

/// The most datagrams one [`send_to_each`] call takes.
pub const MAX_BATCH: usize = 64;

/// Sends `payload` once to each of `destinations` (at most [`MAX_BATCH`]) in one `sendmmsg`
/// call. Returns how many datagrams the kernel took: fewer than asked when it failed after
/// the first, an error only when it took none.
pub fn send_to_each(socket: &UdpSocket, payload: &[u8], destinations: &[SockAddr]) -> io::Result<usize> {
    if destinations.len() > MAX_BATCH {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "more destinations than MAX_BATCH"));
    }
    // One iovec serves every message: the kernel only reads it and the payload.
    let mut iov = libc::iovec { iov_base: payload.as_ptr().cast_mut().cast(), iov_len: payload.len() };
    // SAFETY: an all-zero mmsghdr is a valid empty message.
    let mut messages: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for (message, destination) in messages.iter_mut().zip(destinations) {
        message.msg_hdr.msg_name = destination.as_ptr().cast_mut().cast();
        message.msg_hdr.msg_namelen = destination.len();
        message.msg_hdr.msg_iov = &raw mut iov;
        message.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `destinations.len()` messages point at live addresses of the lengths
    // given and at `iov`, which points at `payload`; all outlive the call, which only reads
    // them (and writes each message's `msg_len`).
    let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), messages.as_mut_ptr(), destinations.len() as u32, 0) };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
}

/// Sends `payload` to `destination` in one `sendmsg` with `UDP_SEGMENT`: the kernel cuts it
/// into datagrams of `segment` bytes (the last one may be shorter). Returns the bytes taken.
/// A kernel or route without UDP GSO refuses with `EIO` or `EINVAL`.
pub fn send_segmented(socket: &UdpSocket, payload: &[u8], segment: u16, destination: &SockAddr) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: payload.as_ptr().cast_mut().cast(), iov_len: payload.len() };
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is a valid empty message; CMSG_SPACE is a pure computation.
    let (mut message, space) =
        unsafe { (std::mem::zeroed::<libc::msghdr>(), libc::CMSG_SPACE(size_of::<u16>() as u32)) };
    debug_assert!(space as usize <= size_of_val(&control));
    message.msg_name = destination.as_ptr().cast_mut().cast();
    message.msg_namelen = destination.len();
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = space as usize;
    // SAFETY: the control buffer holds CMSG_SPACE(2) bytes, so CMSG_FIRSTHDR returns a header
    // inside it with room for a u16 of data; every pointer in `message` outlives the call,
    // which only reads them.
    let sent = unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_UDP;
        (*header).cmsg_type = libc::UDP_SEGMENT;
        (*header).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<u16>(), segment);
        libc::sendmsg(socket.as_raw_fd(), &message, 0)
    };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
}

/// The CPU time the calling thread has used, in ns, by the kernel's accounting.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Stops `child`, a process this load generator started and has not waited for: SIGTERM,
/// so it closes its sessions and sockets in order, then SIGKILL if it has not exited within
/// `grace`.
pub fn stop(child: &mut std::process::Child, grace: std::time::Duration) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill touches no memory of ours. The pid is our own child's, which has not
        // been waited for yet, so it cannot have been reused by another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sets up a child between fork and exec: pinned to `cores` (empty: not pinned), so are all
/// the threads it starts; and SIGTERM when the thread that spawned it exits, so that a load
/// generator killed before its destructors ran leaves no SFU holding the bench's cores and
/// ports. Spawn from a thread that outlives the child (the main thread).
pub fn prepare_child(command: &mut std::process::Command, cores: &[usize]) -> Result<(), crate::LoadError> {
    use std::os::unix::process::CommandExt;
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &core in cores {
        if core >= libc::CPU_SETSIZE as usize {
            return Err(crate::LoadError::Setup(format!("core {core} is beyond the kernel's CPU set")));
        }
        // SAFETY: `core` is inside the set, checked above.
        unsafe { libc::CPU_SET(core, &mut set) };
    }
    let pin = !cores.is_empty();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl and sched_setaffinity are plain system
    // calls, and the error is built from errno without allocating. `set` is moved in by value.
    unsafe {
        command.pre_exec(move || {
            let parent_death = libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            let pinned = if pin { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } else { 0 };
            if parent_death == 0 && pinned == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
    Ok(())
}
