//! A worker's ICE-TCP side (RFC 6544 passive candidates): the listener on its UDP socket's
//! address and port, and the connections it accepts. Each connection carries RFC 4571
//! frames, which the engine sees exactly as datagrams from the connection's peer address;
//! what the engine sends to that address goes back framed on the connection.
//!
//! What it owns: the listener, every accepted stream with its frame reader and writer, the
//! map from peer address to connection, the count of connections per source IP address,
//! the connections still to be claimed (in deadline order), and its counters. The backend
//! says which fds are ready; they are registered in the [`Epoll`] set it gives.
//!
//! Rules kept here:
//! - **Bounded.** At most [`TcpConfig::max_connections`] connections, and at most
//!   [`TcpConfig::max_connections_per_ip`] from one source IP address; one more is accepted
//!   and closed at once, and counted. [`READ_BUFFER`] and [`WRITE_BUFFER`] bytes per
//!   connection, each allocated on first use: the reader when the peer first sends, the
//!   writer when the engine first sends to the peer, which it does only once an ICE check
//!   from there authenticated. So a connection that never passes a check costs at most the
//!   reader. A packet that finds its connection's writer full is dropped and counted:
//!   nothing blocks, nothing grows.
//! - **Nothing unauthenticated lasts.** A connection whose peer address the engine has not
//!   validated (an authenticated Binding request, RFC 6544 §7.2) within
//!   [`TcpConfig::auth_timeout`] of its accept is closed and counted by
//!   [`Tcp::expire_unclaimed`], which the loop calls after every poll with the time and the
//!   engine's answer; each connection is asked about once, at its deadline.
//! - **Nothing outlives its transport.** A claimed connection whose peer address the engine
//!   no longer knows (its transport closed, or dropped the address) is closed and counted by
//!   [`Tcp::close_orphaned`], which the loop calls once a second.
//! - **Bounded work per turn.** One read per ready connection, and reads only while the
//!   poll's budget of frames lasts; at most [`ACCEPTS_PER_EVENT`] accepts per listener
//!   event. Level-triggered readiness brings what is left back next turn.
//! - **A bad stream ends alone.** A zero-length or over-slot frame, the peer's close or a
//!   socket error closes that connection and no other.
//! - **The send side never removes a connection**, because it runs inside the handling of a
//!   received frame: a write that fails marks the connection broken, and [`Tcp::reap`] (at
//!   the start of the next poll) closes it.
#![forbid(unsafe_code)]

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::{SLOT_SIZE, SendQueue};
use crate::sys::{Epoll, Events, Interest, REGISTRY_EVENTS, Readiness};
use crate::wire::framing::{FrameReader, FrameWriter};

/// Connections a worker holds at most, by default; each may cost its two buffers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Connections from one source IP address, by default: a browser opens one per transport,
/// and a few tabs or devices behind one NAT stay well under it, while one host cannot take
/// the whole worker's share. Many clients behind one address want it raised.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 16;
/// How long a connection may wait for its first authenticated ICE check, by default. An
/// ICE-TCP client connects when it is about to send the check (RFC 6544 §7.1), so a few
/// round trips suffice; this leaves room for a slow mobile link and a busy worker.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer of a connection: several frames per read, and always room for one whole
/// frame of [`SLOT_SIZE`] bytes.
pub const READ_BUFFER: usize = 16 * 1024;
/// Send buffer of a connection, beyond what the kernel's socket buffer holds: about a second
/// of a 2 Mbps stream. Allocated zeroed, which an allocator can serve with pages the kernel
/// maps only when written, so an idle connection usually costs little of it.
pub const WRITE_BUFFER: usize = 256 * 1024;
/// Connections accepted per listener event; more wait for the next turn.
const ACCEPTS_PER_EVENT: usize = 64;
/// Connections [`Tcp::expire_unclaimed`] looks at per call; more wait for the next turn,
/// which the loop then starts without waiting, since their deadline is past.
const EXPIRIES_PER_TURN: usize = 256;
/// Registry tokens: the listener, and connections by slab key. Neither collides with a UDP
/// socket index or the epoll backend's wake-up token.
const LISTENER_TOKEN: u64 = 1 << 62;
const CONNECTION_TOKEN: u64 = 1 << 61;

fn connection_token(key: usize) -> u64 {
    CONNECTION_TOKEN | key as u64
}

/// Limits of a worker's ICE-TCP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// Connections held at most.
    pub max_connections: usize,
    /// Connections from one source IP address held at most.
    pub max_connections_per_ip: usize,
    /// How long after its accept a connection's peer address must have been validated by an
    /// authenticated ICE check.
    pub auth_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
        }
    }
}

/// What happened on the TCP side since the counters were last taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TcpCounters {
    /// Packets dropped because their connection's writer was full or the connection failed.
    pub write_drops: u64,
    /// Connections closed for a zero-length or over-slot frame.
    pub bad_frames: u64,
    /// Connections accepted past the limit and closed at once.
    pub over_limit: u64,
    /// Connections accepted past the limit of their source IP address and closed at once.
    pub per_ip_limit: u64,
    /// Connections closed because no authenticated ICE check claimed them in time.
    pub unauthenticated: u64,
    /// Claimed connections closed because the engine no longer knew their peer address.
    pub orphaned: u64,
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Tells this connection from an earlier one in the same slab slot.
    serial: u64,
    /// Empty until the peer first sends (see [`allocated_reader`]).
    reader: FrameReader,
    /// Empty until the first frame to the peer (see [`allocated_writer`]).
    writer: FrameWriter,
    /// Write readiness is registered: the writer holds bytes the socket would not take.
    watching_writes: bool,
    /// Listed in `Tcp::dirty`: frames were queued in this flush.
    dirty: bool,
    /// A write failed; `Tcp::reap` closes it.
    broken: bool,
    /// Its peer address was validated at its deadline: from then on it lives as long as the
    /// engine knows the address.
    claimed: bool,
}

/// A connection's reader, allocated on its first read: a connection that never sends
/// costs none of it.
fn allocated_reader(reader: &mut FrameReader) -> &mut FrameReader {
    if reader.capacity() == 0 {
        *reader = FrameReader::new(READ_BUFFER, SLOT_SIZE);
    }
    reader
}

/// A connection's writer, allocated for the first frame to its peer: the engine sends
/// nothing to an address before an ICE check from there authenticated, so a stranger's
/// connection never costs it.
fn allocated_writer(writer: &mut FrameWriter) -> &mut FrameWriter {
    if writer.capacity() == 0 {
        *writer = FrameWriter::new(WRITE_BUFFER);
    }
    writer
}

/// A connection to be asked about at its deadline: whether its peer address was validated.
#[derive(Debug, Clone, Copy)]
struct Unclaimed {
    key: usize,
    serial: u64,
    /// Set by the first [`Tcp::expire_unclaimed`] after the accept.
    deadline: Option<Instant>,
}

/// The listener and its connections.
#[derive(Debug)]
pub(crate) struct Tcp {
    listener: TcpListener,
    registry: Arc<Epoll>,
    connections: Slab<Connection>,
    by_peer: HashMap<SocketAddr, usize>,
    /// Open connections by source IP address; addresses with none are not listed.
    per_ip: HashMap<IpAddr, usize>,
    /// Connections in accept order, so in deadline order, each until its deadline; the
    /// deadline-less ones at the back. A connection closed early leaves its entry, which
    /// the serial tells apart; see [`Tcp::expect_claim`] for the bound.
    unclaimed: VecDeque<Unclaimed>,
    /// The serial of the next connection accepted.
    next_serial: u64,
    /// Connections given frames in the current flush, to be written once each.
    dirty: Vec<usize>,
    /// Connections marked broken, to be closed by `reap`.
    broken: Vec<usize>,
    /// Ready events of the registry when the backend only says that some fd is ready.
    events: Events,
    config: TcpConfig,
    counters: TcpCounters,
}

impl Tcp {
    /// Watches `listener` (non-blocking) in `registry`, within the limits of `config`.
    pub(crate) fn new(listener: TcpListener, registry: Arc<Epoll>, config: TcpConfig) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        registry.add(listener.as_fd(), LISTENER_TOKEN, Interest::Read)?;
        Ok(Self {
            listener,
            registry,
            connections: Slab::new(),
            by_peer: HashMap::new(),
            per_ip: HashMap::new(),
            unclaimed: VecDeque::new(),
            next_serial: 0,
            dirty: Vec::new(),
            broken: Vec::new(),
            events: Events::with_capacity(REGISTRY_EVENTS),
            config,
            counters: TcpCounters::default(),
        })
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub(crate) fn take_counters(&mut self) -> TcpCounters {
        std::mem::take(&mut self.counters)
    }

    /// Handles a ready registry fd: accepts on the listener, or writes what waits on a
    /// connection and, when `read`, reads it once, handing each whole frame to `on_frame`.
    /// Returns the frames.
    pub(crate) fn handle_ready(
        &mut self,
        token: u64,
        readiness: Readiness,
        read: bool,
        on_frame: &mut impl FnMut(SocketAddr, &mut [u8], &mut Tcp),
    ) -> usize {
        if token == LISTENER_TOKEN {
            self.accept();
            return 0;
        }
        if token & CONNECTION_TOKEN == 0 {
            return 0;
        }
        let Ok(key) = usize::try_from(token & !CONNECTION_TOKEN) else { return 0 };
        if readiness.writable() {
            self.write_out(key);
        }
        if read && readiness.readable() { self.read(key, on_frame) } else { 0 }
    }

    /// Learns which registry fds are ready, without waiting, and handles each, reading
    /// connections until about `budget` frames were handed up.
    pub(crate) fn drain_registry(
        &mut self,
        budget: usize,
        on_frame: &mut impl FnMut(SocketAddr, &mut [u8], &mut Tcp),
    ) -> usize {
        if self.registry.wait(&mut self.events, Some(Duration::ZERO)).is_err() {
            return 0;
        }
        let mut frames = 0;
        for i in 0..self.events.len() {
            let Some((token, readiness)) = self.events.get(i) else { break };
            frames += self.handle_ready(token, readiness, frames < budget, on_frame);
        }
        frames
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_EVENT {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                // WouldBlock: none left. Anything else (EMFILE, ENOBUFS) leaves the pending
                // connections in the backlog for a later turn.
                Err(_) => return,
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        // The kernel allows one connection per peer address, so one listed under this one
        // has ended unnoticed; left in place it would misroute, and count against the caps.
        if let Some(&old) = self.by_peer.get(&peer) {
            self.close(old);
        }
        // Dropping a refused stream closes it: the peer sees the connection end at once.
        if self.connections.len() >= self.config.max_connections {
            self.counters.over_limit += 1;
            return;
        }
        if self.per_ip.get(&peer.ip()).is_some_and(|&n| n >= self.config.max_connections_per_ip) {
            self.counters.per_ip_limit += 1;
            return;
        }
        // Small frames (STUN, DTLS, audio) must not wait for Nagle's timer.
        if stream.set_nonblocking(true).is_err() || stream.set_nodelay(true).is_err() {
            return;
        }
        // Each connection is listed at most once in each, so flushing never allocates.
        self.dirty.reserve(self.connections.len() + 1);
        self.broken.reserve(self.connections.len() + 1);
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        if self.registry.add(stream.as_fd(), connection_token(key), Interest::Read).is_err() {
            return;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        entry.insert(Connection {
            stream,
            peer,
            serial,
            reader: FrameReader::default(),
            writer: FrameWriter::default(),
            watching_writes: false,
            dirty: false,
            broken: false,
            claimed: false,
        });
        self.by_peer.insert(peer, key);
        *self.per_ip.entry(peer.ip()).or_default() += 1;
        self.expect_claim(key, serial);
    }

    /// Lists connection `key` to be asked about at its deadline. Entries of connections that
    /// closed early stay until their deadline; when the list reaches twice the connection
    /// limit, they are dropped, which leaves at most one entry per open connection. So the
    /// list stays within twice the limit at a cost of one pass per limit's worth of accepts.
    fn expect_claim(&mut self, key: usize, serial: u64) {
        if self.unclaimed.len() >= 2 * self.config.max_connections {
            let connections = &self.connections;
            self.unclaimed.retain(|e| connections.get(e.key).is_some_and(|c| c.serial == e.serial));
        }
        self.unclaimed.push_back(Unclaimed { key, serial, deadline: None });
    }

    /// Gives the connections accepted since the last call their deadline, [`auth_timeout`]
    /// from `now`: the loop calls this after each poll, so `now` is when they were accepted,
    /// but for the turn's work. Then closes, and counts, each connection whose deadline has
    /// passed unless `is_validated` says the engine validated its peer address; either way
    /// the connection is not asked about again.
    ///
    /// [`auth_timeout`]: TcpConfig::auth_timeout
    pub(crate) fn expire_unclaimed(&mut self, now: Instant, mut is_validated: impl FnMut(SocketAddr) -> bool) {
        let deadline = now + self.config.auth_timeout;
        for entry in self.unclaimed.iter_mut().rev().take_while(|e| e.deadline.is_none()) {
            entry.deadline = Some(deadline);
        }
        for _ in 0..EXPIRIES_PER_TURN {
            let Some(&Unclaimed { key, serial, deadline }) = self.unclaimed.front() else { return };
            if deadline.is_none_or(|due| due > now) {
                return;
            }
            self.unclaimed.pop_front();
            let Some(connection) = self.connections.get_mut(key).filter(|c| c.serial == serial) else { continue };
            if is_validated(connection.peer) {
                connection.claimed = true;
            } else {
                self.counters.unauthenticated += 1;
                self.close(key);
            }
        }
    }

    /// Closes, and counts, each claimed connection whose peer address `is_validated` no
    /// longer knows: its transport went, and a client that comes back opens a new connection.
    pub(crate) fn close_orphaned(&mut self, mut is_validated: impl FnMut(SocketAddr) -> bool) {
        let orphaned: Vec<usize> =
            self.connections.iter().filter(|(_, c)| c.claimed && !is_validated(c.peer)).map(|(key, _)| key).collect();
        for key in orphaned {
            self.counters.orphaned += 1;
            self.close(key);
        }
    }

    /// The earliest deadline [`Tcp::expire_unclaimed`] gave and has not acted on yet.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.unclaimed.front().and_then(|e| e.deadline)
    }

    /// One read on connection `key`, then every whole frame to `on_frame`.
    fn read(&mut self, key: usize, on_frame: &mut impl FnMut(SocketAddr, &mut [u8], &mut Tcp)) -> usize {
        let Some(connection) = self.connections.get_mut(key) else { return 0 };
        let spare = allocated_reader(&mut connection.reader).spare();
        if spare.is_empty() {
            // Cannot happen while every frame is taken below; a stream that stalls is bad.
            self.counters.bad_frames += 1;
            self.close(key);
            return 0;
        }
        match (&connection.stream).read(spare) {
            Ok(0) => {
                self.close(key);
                return 0;
            }
            Ok(n) => connection.reader.filled(n),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return 0,
            Err(_) => {
                self.close(key);
                return 0;
            }
        }
        // The reader leaves the connection while its frames are handled, so that handling
        // (which may queue frames on any connection, this one too) can borrow all of `self`.
        // Taking an empty one in its place allocates nothing.
        let peer = connection.peer;
        let mut reader = std::mem::take(&mut connection.reader);
        let mut frames = 0;
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    on_frame(peer, frame, self);
                    frames += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    self.counters.bad_frames += 1;
                    self.close(key);
                    return frames;
                }
            }
        }
        // Handling never removes a connection (see the module rules), so `key` is still ours.
        if let Some(connection) = self.connections.get_mut(key).filter(|c| c.peer == peer) {
            connection.reader = reader;
        }
        frames
    }

    /// Writes what connection `key` has waiting, as far as the socket takes it, and watches
    /// for write readiness exactly while something is left.
    fn write_out(&mut self, key: usize) {
        let Some(connection) = self.connections.get_mut(key).filter(|c| !c.broken) else { return };
        while !connection.broken && !connection.writer.is_empty() {
            // `write` is `send` with MSG_NOSIGNAL: a reset peer is an error, not a SIGPIPE.
            let [first, _] = connection.writer.pending();
            match (&connection.stream).write(first) {
                Ok(0) => connection.broken = true,
                Ok(n) => connection.writer.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => connection.broken = true,
            }
        }
        let want_writes = !connection.broken && !connection.writer.is_empty();
        if want_writes != connection.watching_writes {
            let interest = if want_writes { Interest::ReadWrite } else { Interest::Read };
            match self.registry.modify(connection.stream.as_fd(), connection_token(key), interest) {
                Ok(()) => connection.watching_writes = want_writes,
                Err(_) => connection.broken = true,
            }
        }
        // Only a connection that was whole on entry gets here: each is listed once.
        if connection.broken {
            self.broken.push(key);
        }
    }

    /// Whether any connection is open: only then does a flush look destinations up.
    pub(crate) fn has_connections(&self) -> bool {
        !self.connections.is_empty()
    }

    /// Moves every datagram of `queue` whose destination is a connection's peer into that
    /// connection's writer, and marks it so that no UDP socket sends it. Returns how many
    /// were queued; the ones a full or failed connection refused are counted as drops.
    pub(crate) fn divert(&mut self, queue: &mut SendQueue) -> usize {
        let mut queued = 0;
        for index in 0..queue.len() {
            let Some((_, destination, bytes)) = queue.get(index) else { break };
            let Some(&key) = self.by_peer.get(&destination) else { continue };
            let pushed = match self.connections.get_mut(key) {
                Some(connection) if !connection.broken => {
                    let pushed = allocated_writer(&mut connection.writer).push(bytes).is_ok();
                    if pushed && !connection.dirty {
                        connection.dirty = true;
                        self.dirty.push(key);
                    }
                    pushed
                }
                _ => false,
            };
            if pushed {
                queued += 1;
            } else {
                self.counters.write_drops += 1;
            }
            queue.divert(index);
        }
        queued
    }

    /// Writes each connection that [`Tcp::divert`] gave frames, once.
    pub(crate) fn write_dirty(&mut self) {
        while let Some(key) = self.dirty.pop() {
            if let Some(connection) = self.connections.get_mut(key) {
                connection.dirty = false;
            }
            self.write_out(key);
        }
    }

    /// Closes the connections whose writes failed.
    pub(crate) fn reap(&mut self) {
        while let Some(key) = self.broken.pop() {
            if self.connections.get(key).is_some_and(|c| c.broken) {
                self.close(key);
            }
        }
    }

    fn close(&mut self, key: usize) {
        let Some(connection) = self.connections.try_remove(key) else { return };
        if self.by_peer.get(&connection.peer) == Some(&key) {
            self.by_peer.remove(&connection.peer);
        }
        if let Entry::Occupied(mut from_ip) = self.per_ip.entry(connection.peer.ip()) {
            *from_ip.get_mut() -= 1;
            if *from_ip.get() == 0 {
                from_ip.remove();
            }
        }
        // The fd is closed when `connection` drops, which also takes it out of the set;
        // deleting first keeps the set exact even if the kernel shares the file elsewhere.
        let _ = self.registry.delete(connection.stream.as_fd());
    }
}
