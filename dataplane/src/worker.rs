//! Worker threads: one per dataplane core, each pinned to its core from start-up and owning
//! everything it runs — its UDP socket, the TCP listener on the same address and port (for
//! ICE-TCP passive candidates) with its connections, its [`Engine`] (transports and router).
//! The control plane holds only a [`WorkerHandle`] per worker: the queue to send it
//! commands (each with its own reply channel), the stream of events it reports, its
//! published statistics and the facts it reports (kernel thread id, core, UDP and TCP
//! addresses).
//!
//! Rules: a worker shares nothing with other workers but the relay links between each pair
//! of them (bounded queues, see `relay`), created before any worker starts; it learns of
//! work only through its command queue and those links, and both wake it through the same
//! eventfd. `Workers::shutdown` (or drop) stops and joins every thread. The loop reads the
//! clock once per turn and passes that time down; everything below it is sans-IO. Once per
//! turn, just before it waits, the loop sends what the turn queued and wakes each worker it
//! relayed something to, once.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Error;
use crate::command::{
    Command, CommandReceiver, CommandSender, EventReceiver, EventSender, PendingReply, Reply, WorkerEvent,
    command_queue, event_queue,
};
use crate::dtls::{CertificateFingerprint, DtlsIdentity, DtlsVersionPolicy};
use crate::engine::{Engine, EngineConfig, Outbox};
use crate::io::{BackendChoice, Io, SendQueue, SocketIndex, TcpConfig, bind_tcp, bind_udp};
use crate::relay::{RelayConfig, RelayLinks, mesh};
use crate::stats::{DropReason, SharedStats};
use crate::sys::{self, EventFd};

/// Commands a worker may have outstanding before senders are told it is busy.
const COMMAND_QUEUE_CAPACITY: usize = 1024;
/// Events a worker may have waiting for the control plane; more wait in the worker itself.
const EVENT_QUEUE_CAPACITY: usize = 4096;
/// Datagrams received per loop turn at most, before timers and commands get their turn.
const RECEIVE_BUDGET: usize = 256;
/// Copies a loop turn aims to stay under (about 13 ms of forwarding at 1.6 µs a copy).
/// Without it a turn of 256 datagrams that each fan out to 3,000 subscribers would keep
/// handshakes, commands and timers waiting for more than a second.
const TURN_COPY_BUDGET: u64 = 8192;
/// The least time a loop turn gives waiting handshakes (after at least one datagram): about
/// seven ClientHellos, each an ECDHE and a signature.
const MIN_HANDSHAKE_SLICE: Duration = Duration::from_millis(1);
/// Beyond that, handshakes may take this fraction of the time the turn spent forwarding:
/// under a heavy fan-out a joining viewer still gets a fifth of the worker, and forwarding
/// keeps four fifths however many join at once.
const HANDSHAKE_SHARE_OF_FORWARDING: u32 = 4;
/// Datagrams queued before a send batch is flushed.
const SEND_BATCH: usize = 256;
/// How often the worker publishes its counters.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Where and how many workers to run.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// The CPU core of each worker, in worker order; its length is the worker count.
    pub cores: Vec<usize>,
    /// The socket backend every worker asks for.
    pub backend: BackendChoice,
    /// The media socket of worker 0; worker `i` binds the next port up (`port + i`), or an
    /// ephemeral port of the same address when the port is 0. Each worker also listens for
    /// ICE-TCP on the port its UDP socket got. `None`: no media socket.
    pub udp: Option<SocketAddr>,
    /// Sizes of the relay links between every pair of workers.
    pub relay: RelayConfig,
    /// Caps and timeouts of every worker's engine.
    pub engine: EngineConfig,
    /// Caps and the authentication deadline of every worker's ICE-TCP connections.
    pub tcp: TcpConfig,
}

impl WorkerPlan {
    /// `count` workers on the highest-numbered cores of `available`, leaving the lowest
    /// ones to the control plane and the kernel; wraps around when there are more workers
    /// than cores.
    pub fn spread(count: usize, available: &[usize], backend: BackendChoice) -> Self {
        let mut sorted = available.to_vec();
        sorted.sort_unstable();
        let cores = if sorted.is_empty() {
            Vec::new()
        } else {
            let first = sorted.len().saturating_sub(count).min(sorted.len() - 1);
            (0..count).map(|i| sorted[first + (i % (sorted.len() - first))]).collect()
        };
        Self {
            cores,
            backend,
            udp: None,
            relay: RelayConfig::default(),
            engine: EngineConfig::default(),
            tcp: TcpConfig::default(),
        }
    }

    /// `count` workers spread over this machine's usable cores, each on an ephemeral
    /// loopback media port: what the tests, examples and benches run.
    pub fn on_loopback(count: usize, backend: BackendChoice) -> Self {
        let available: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
        let mut plan = Self::spread(count, &available, backend);
        plan.udp = Some(SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 0));
        plan
    }

    /// The address worker `index` binds its media socket to.
    pub fn udp_address(&self, index: usize) -> Option<SocketAddr> {
        let base = self.udp?;
        let port = if base.port() == 0 { 0 } else { base.port().checked_add(u16::try_from(index).ok()?)? };
        Some(SocketAddr::new(base.ip(), port))
    }

    /// The cores no worker is pinned to; the whole set when every core has a worker.
    pub fn spare_cores(&self, available: &[usize]) -> Vec<usize> {
        let spare: Vec<usize> = available.iter().copied().filter(|c| !self.cores.contains(c)).collect();
        if spare.is_empty() { available.to_vec() } else { spare }
    }
}

/// The control plane's view of one running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    index: usize,
    thread_id: i32,
    core: usize,
    pinned: bool,
    backend: &'static str,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    fingerprint: CertificateFingerprint,
    commands: CommandSender,
    /// Until the control plane takes it to drain.
    events: Mutex<Option<EventReceiver>>,
    stats: Arc<SharedStats>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    pub fn index(&self) -> usize {
        self.index
    }

    /// The kernel thread id (`workPid` in the REST API).
    pub fn thread_id(&self) -> i32 {
        self.thread_id
    }

    pub fn core(&self) -> usize {
        self.core
    }

    /// Whether the kernel accepted the pinning (a restricted cpuset may refuse it).
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// The socket backend the worker runs ("uring" or "epoll").
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn commands(&self) -> &CommandSender {
        &self.commands
    }

    /// Where the worker's media socket is bound.
    pub fn udp_address(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// Where the worker listens for ICE-TCP (the SDP's `tcptype passive` host candidate):
    /// the same address and port as [`WorkerHandle::udp_address`].
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The fingerprint of the certificate every transport of this worker presents.
    pub fn fingerprint(&self) -> CertificateFingerprint {
        self.fingerprint
    }

    /// The counters the worker published last (about once a second).
    pub fn stats(&self) -> &Arc<SharedStats> {
        &self.stats
    }

    /// Queues `command`; its reply arrives on what this returns. Never blocks: a full queue
    /// is [`Error::QueueFull`] at once.
    pub fn send(&self, command: Command) -> Result<PendingReply, Error> {
        self.commands.send(command)
    }

    /// Sends `command` and blocks up to `timeout` for its reply: for callers outside an
    /// async runtime (tests, examples, the load generator).
    pub fn request(&self, command: Command, timeout: Duration) -> Result<Reply, Error> {
        self.send(command)?.wait(timeout)
    }

    /// The worker's event stream, once: its one consumer drains it for the worker's life.
    pub fn take_events(&self) -> Option<EventReceiver> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Every worker of this process.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<WorkerHandle>,
}

/// What a worker reports once it is set up.
struct Setup {
    backend: &'static str,
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    fingerprint: CertificateFingerprint,
}

struct Started {
    thread_id: i32,
    pinned: bool,
    setup: Result<Setup, Error>,
}

/// What a worker thread owns.
struct WorkerState {
    io: Io,
    engine: Engine,
    udp: Option<SocketAddr>,
    /// Every worker's wake-up fd, by worker index, for waking those this one relays to.
    peers: Vec<Arc<EventFd>>,
}

/// Ephemeral UDP ports tried for one whose TCP twin is free too.
const EPHEMERAL_PORT_ATTEMPTS: usize = 32;

/// How long a configured media port found in use is tried again before start-up fails: right
/// after a `kill -9`, the kernel releases the previous process's sockets only once its
/// io_uring is torn down, which it does asynchronously, so a restart can find them still bound.
const BIND_RETRY: Duration = Duration::from_secs(3);
const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// The worker's UDP socket and the TCP listener on the same address and port: the TCP
/// candidate shares the UDP one's port. A configured port must be free for both (it is tried
/// again for up to [`BIND_RETRY`]); with an ephemeral one (port 0), a port whose TCP twin is
/// taken (by any outgoing connection's local port, say) is given back and another one drawn.
pub(crate) fn bind_media(addr: SocketAddr) -> Result<(socket2::Socket, std::net::TcpListener), Error> {
    let deadline = Instant::now() + BIND_RETRY;
    loop {
        match bind_media_once(addr) {
            Err(Error::Bind { source, .. })
                if addr.port() != 0 && source.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                std::thread::sleep(BIND_RETRY_INTERVAL);
            }
            bound => return bound,
        }
    }
}

fn bind_media_once(addr: SocketAddr) -> Result<(socket2::Socket, std::net::TcpListener), Error> {
    let mut attempts = if addr.port() == 0 { EPHEMERAL_PORT_ATTEMPTS } else { 1 };
    loop {
        let socket = bind_udp(addr).map_err(|e| Error::Bind { addr, protocol: "UDP", source: e })?;
        let bound = socket.local_addr().map_err(Error::Io)?.as_socket().unwrap_or(addr);
        match bind_tcp(bound) {
            Ok(listener) => return Ok((socket, listener)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts > 1 => attempts -= 1,
            Err(e) => return Err(Error::Bind { addr: bound, protocol: "TCP", source: e }),
        }
    }
}

fn set_up(
    udp: Option<SocketAddr>,
    wake: Arc<EventFd>,
    backend: BackendChoice,
    engine_config: EngineConfig,
    tcp_config: TcpConfig,
    links: RelayLinks,
    peers: Vec<Arc<EventFd>>,
) -> Result<WorkerState, Error> {
    let (sockets, listener) = match udp {
        Some(addr) => {
            let (socket, listener) = bind_media(addr)?;
            (vec![socket], Some(listener))
        }
        None => (Vec::new(), None),
    };
    let io = Io::new(sockets, listener, tcp_config, wake, backend).map_err(Error::Io)?;
    let udp = io.local_addr(SocketIndex(0));
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).map_err(|e| Error::Identity(e.to_string()))?;
    let mut engine = Engine::new(engine_config, identity);
    engine.attach_links(links);
    Ok(WorkerState { io, engine, udp, peers })
}

impl Workers {
    /// Spawns one pinned worker per entry of `plan.cores`, linked to each other for relaying
    /// (`plan.relay`), and waits until each has pinned itself and reported its thread id.
    pub fn start(plan: &WorkerPlan) -> Result<Self, Error> {
        let mut workers = Self { handles: Vec::with_capacity(plan.cores.len()) };
        let queues =
            (0..plan.cores.len()).map(|_| command_queue(COMMAND_QUEUE_CAPACITY)).collect::<Result<Vec<_>, _>>()?;
        let wakes: Vec<Arc<EventFd>> = queues.iter().map(|(_, inbox)| inbox.wake_fd()).collect();
        let links = mesh(plan.cores.len(), plan.relay);
        for (index, ((&core, (commands, inbox)), links)) in plan.cores.iter().zip(queues).zip(links).enumerate() {
            let (event_tx, event_rx) = event_queue(EVENT_QUEUE_CAPACITY);
            let peers = wakes.clone();
            let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
            let (backend, engine_config, tcp_config) = (plan.backend, plan.engine, plan.tcp);
            let udp = plan.udp_address(index);
            let stats = SharedStats::new();
            let published = Arc::clone(&stats);
            let thread = std::thread::Builder::new()
                .name(format!("uprtcd-w{index}"))
                .spawn(move || {
                    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    let thread_id = sys::current_thread_id();
                    match set_up(udp, inbox.wake_fd(), backend, engine_config, tcp_config, links, peers) {
                        Ok(mut state) => {
                            let setup = Ok(Setup {
                                backend: state.io.backend_name(),
                                udp: state.udp,
                                tcp: state.io.tcp_local_addr(),
                                fingerprint: state.engine.fingerprint(),
                            });
                            // The receiver waits for this message; if it is gone, start-up
                            // failed already and this worker just ends.
                            if started_tx.send(Started { thread_id, pinned, setup }).is_ok() {
                                run(index, &inbox, &event_tx, &mut state, &published);
                            }
                        }
                        Err(e) => {
                            let _ = started_tx.send(Started { thread_id, pinned, setup: Err(e) });
                        }
                    }
                })
                .map_err(Error::Spawn)?;
            let started = started_rx.recv().map_err(|_| Error::WorkerGone)?;
            let Setup { backend, udp, tcp, fingerprint } = started.setup?;
            if !started.pinned {
                tracing::warn!(worker = index, core, "could not pin worker to its core; it runs unpinned");
            }
            workers.handles.push(WorkerHandle {
                index,
                thread_id: started.thread_id,
                core,
                pinned: started.pinned,
                backend,
                udp,
                tcp,
                fingerprint,
                commands,
                events: Mutex::new(Some(event_rx)),
                stats,
                thread: Some(thread),
            });
        }
        Ok(workers)
    }

    pub fn handles(&self) -> &[WorkerHandle] {
        &self.handles
    }

    /// Asks every worker to stop and waits for their threads to end.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    /// Stops the workers still running; `shutdown` followed by drop stops them once.
    fn stop_all(&mut self) {
        for handle in self.handles.iter().filter(|h| h.thread.is_some()) {
            // The reply is not waited for: the join below is what tells the thread ended.
            if let Err(e) = handle.commands.send(Command::Shutdown) {
                tracing::warn!(worker = handle.index, error = %e, "worker did not take the shutdown command");
            }
        }
        for handle in &mut self.handles {
            if let Some(thread) = handle.thread.take()
                && thread.join().is_err()
            {
                tracing::error!(worker = handle.index, "worker thread panicked");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Queues into a send batch, flushing it through `flush` when it is full.
struct FlushingOutbox<'q, F: FnMut(&mut SendQueue)> {
    queue: &'q mut SendQueue,
    flush: F,
}

impl<F: FnMut(&mut SendQueue)> Outbox for FlushingOutbox<'_, F> {
    fn slot(&mut self) -> &mut [u8] {
        if self.queue.is_full() {
            (self.flush)(self.queue);
        }
        self.queue.slot().expect("a flushed queue has a free slot")
    }

    fn commit(&mut self, destination: SocketAddr, len: usize) {
        self.queue.commit(SocketIndex(0), destination, len);
    }
}

/// The worker loop: apply queued commands, take what other workers relayed, send what that
/// queued and wake the workers it relayed to, wait for datagrams or the next timer, handle
/// what came, close the TCP connections no ICE check claimed in time, work off waiting
/// handshakes for a slice of time, run due timers, send the batch, report the turn's events,
/// publish counters once a second.
fn run(index: usize, inbox: &CommandReceiver, events: &EventSender, state: &mut WorkerState, stats: &SharedStats) {
    tracing::debug!(worker = index, backend = state.io.backend_name(), udp = ?state.udp, "worker running");
    let WorkerState { io, engine, udp, peers } = state;
    let address = *udp;
    let mut queue = SendQueue::new(SEND_BATCH);
    let mut receive_budget = ReceiveBudget::default();
    let mut next_publish = Instant::now() + PUBLISH_INTERVAL;
    let mut undelivered = VecDeque::new();
    loop {
        let now = Instant::now();
        while let Some(request) = inbox.try_next() {
            if matches!(request.command, Command::Shutdown) {
                tracing::debug!(worker = index, "worker stopping");
                request.answer(Reply::Done);
                return;
            }
            let reply = apply(engine, now, address, &request.command);
            request.answer(reply);
        }
        let mut send_drops = 0u64;
        let mut flush_now = |q: &mut SendQueue| send_drops += io_flush(io, q);
        engine.handle_relay(now, &mut FlushingOutbox { queue: &mut queue, flush: &mut flush_now });
        engine.begin_turn(now, &mut FlushingOutbox { queue: &mut queue, flush: &mut flush_now });
        // What the turn's start queued (relayed media, keyframe requests, handshake flights)
        // leaves now, not after the wait.
        flush_now(&mut queue);
        engine.take_relay_wakeups(|to| {
            // Not fatal: the destination still takes the messages on its next turn, which
            // its own timers bring within a second.
            if let Some(Err(e)) = peers.get(to.0).map(|peer| peer.notify()) {
                tracing::warn!(worker = index, to = to.0, error = %e, "cannot wake a relay destination");
            }
        });
        // The turn's start is work too: on a worker that only serves relayed streams, it is
        // all of the forwarding.
        let head = Instant::now().saturating_duration_since(now);
        let deadline = if engine.relay_pending() {
            now
        } else {
            engine.poll_timeout().into_iter().chain(io.next_tcp_deadline()).fold(next_publish, Instant::min)
        };
        let mut work_started: Option<Instant> = None;
        let sent_before = engine.counters().packets_out;
        let timeout = Some(deadline.saturating_duration_since(now));
        let polled = io.poll(timeout, receive_budget.datagrams(), |_, from, datagram, tx| {
            let now = *work_started.get_or_insert_with(Instant::now);
            let flush = |q: &mut SendQueue| send_drops += tx.flush(q).map_or(q.len() as u64, |o| o.dropped as u64);
            engine.handle_datagram(now, from, datagram, &mut FlushingOutbox { queue: &mut queue, flush });
        });
        match polled {
            Ok(polled) => {
                receive_budget.observe(polled.received, engine.counters().packets_out.saturating_sub(sent_before))
            }
            Err(e) => {
                tracing::error!(worker = index, error = %e, "worker cannot wait for work; stopping");
                return;
            }
        }
        let now = Instant::now();
        let started = work_started.unwrap_or(now);
        // Right after the poll, so that connections it accepted get their deadline from
        // about when they were accepted.
        io.expire_unclaimed_tcp(now, |addr| engine.is_validated(addr));
        let mut flush_now = |q: &mut SendQueue| send_drops += io_flush(io, q);
        let slice_end = now + handshake_slice(head + now.saturating_duration_since(started));
        let mut first = true;
        engine.run_handshakes(now, &mut FlushingOutbox { queue: &mut queue, flush: &mut flush_now }, || {
            std::mem::take(&mut first) || Instant::now() < slice_end
        });
        engine.handle_timeouts(now, &mut FlushingOutbox { queue: &mut queue, flush: &mut flush_now });
        flush_now(&mut queue);
        undelivered.extend(engine.drain_events().map(|event| WorkerEvent { worker: index, event }));
        report_events(index, events, &mut undelivered);
        if now >= next_publish {
            io.close_orphaned_tcp(|addr| engine.is_validated(addr));
        }
        let tcp = io.take_tcp_counters();
        if now >= next_publish {
            engine.refresh_media_stats();
        }
        let (producers, consumers) = (engine.producer_count() as u64, engine.consumer_count() as u64);
        let counters = engine.counters();
        counters.drop_many(DropReason::Send, send_drops);
        counters.drop_many(DropReason::TcpWrite, tcp.write_drops);
        counters.drop_many(DropReason::TcpBadFrame, tcp.bad_frames);
        counters.drop_many(DropReason::TcpOverLimit, tcp.over_limit);
        counters.drop_many(DropReason::TcpPerIpLimit, tcp.per_ip_limit);
        counters.drop_many(DropReason::TcpUnauthenticated, tcp.unauthenticated);
        counters.drop_many(DropReason::TcpTransportGone, tcp.orphaned);
        counters.tcp_connections = io.tcp_connections() as u64;
        counters.producers = producers;
        counters.consumers = consumers;
        counters.turn(head + Instant::now().saturating_duration_since(started));
        if now >= next_publish {
            stats.publish(counters);
            counters.longest_turn = Duration::ZERO;
            next_publish = now + PUBLISH_INTERVAL;
        }
    }
}

/// How long the waiting handshakes may take after a turn that forwarded for `forwarding`.
fn handshake_slice(forwarding: Duration) -> Duration {
    MIN_HANDSHAKE_SLICE.max(forwarding / HANDSHAKE_SHARE_OF_FORWARDING)
}

/// How many datagrams the next loop turn may receive: [`RECEIVE_BUDGET`] while each one
/// fans out to few copies, fewer as fan-outs grow, so that a turn stays near
/// [`TURN_COPY_BUDGET`] copies. The copies per datagram follow a rise at once and a fall
/// slowly, so that one turn of feedback packets does not open the gate to a turn of media.
#[derive(Debug, Default)]
struct ReceiveBudget {
    copies_per_datagram: u64,
}

impl ReceiveBudget {
    fn datagrams(&self) -> usize {
        let fitting = TURN_COPY_BUDGET / self.copies_per_datagram.max(1);
        usize::try_from(fitting).unwrap_or(RECEIVE_BUDGET).clamp(1, RECEIVE_BUDGET)
    }

    /// Learns from a turn that received `received` datagrams and sent `copies` for them.
    fn observe(&mut self, received: usize, copies: u64) {
        let Some(observed) = copies.checked_div(received as u64) else { return };
        self.copies_per_datagram = if observed >= self.copies_per_datagram {
            observed
        } else {
            self.copies_per_datagram - (self.copies_per_datagram - observed).div_ceil(8)
        };
    }
}

/// Sends the batch; what the kernel refused is the count returned.
fn io_flush(io: &mut Io, queue: &mut SendQueue) -> u64 {
    if queue.is_empty() {
        return 0;
    }
    let queued = queue.len() as u64;
    match io.flush(queue) {
        Ok(outcome) => outcome.dropped as u64,
        Err(_) => {
            queue.clear();
            queued
        }
    }
}

/// Hands the turn's events to the control plane, oldest first. What a full queue does not
/// take waits for the next turn: losing "transport closed" would leave a client in its room
/// for good. The backlog is bounded by what the engine holds (a few events per transport).
fn report_events(index: usize, events: &EventSender, undelivered: &mut VecDeque<WorkerEvent>) {
    while let Some(event) = undelivered.pop_front() {
        match events.try_send(event) {
            Ok(()) => tracing::debug!(worker = index, ?event, "worker event"),
            Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => {
                undelivered.push_front(event);
                return;
            }
            // Nobody drains (a test, or the control plane stopping): nothing to keep them for.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                undelivered.clear();
                return;
            }
        }
    }
}

/// Carries out one command other than `Shutdown`.
fn apply(engine: &mut Engine, now: Instant, address: Option<SocketAddr>, command: &Command) -> Reply {
    let refused = Reply::Refused;
    match *command {
        Command::Shutdown => Reply::Done,
        Command::CreateTransport { ref local_ice, ref remote_ice, remote_fingerprint } => {
            match (engine.create_transport(now, local_ice.clone(), remote_ice.clone(), remote_fingerprint), address) {
                (Ok(created), Some(address)) => Reply::TransportCreated { created, address },
                (Ok(created), None) => {
                    let _ = engine.close_transport(created.transport);
                    Reply::Refused(crate::engine::EngineError::NoSocket)
                }
                (Err(e), _) => refused(e),
            }
        }
        Command::CreatePlainTransport { remote, rtcp_remote, ref keys } => match address {
            Some(address) => engine
                .create_plain_transport(remote, rtcp_remote, keys.as_ref())
                .map_or_else(refused, |transport| Reply::PlainTransportCreated { transport, address }),
            None => Reply::Refused(crate::engine::EngineError::NoSocket),
        },
        Command::CloseTransport { transport } => {
            engine.close_transport(transport).map_or_else(refused, |()| Reply::Done)
        }
        Command::AddProducer { spec } => engine.add_producer(spec).map_or_else(refused, Reply::ProducerAdded),
        Command::AddConsumer { producer, transport, ssrc, format } => engine
            .add_consumer(producer, transport, ssrc)
            .and_then(|consumer| engine.set_format(consumer, format).map(|()| consumer))
            .map_or_else(refused, Reply::ConsumerAdded),
        Command::LimitBitrate { transport, max_bps } => {
            engine.limit_bitrate(transport, max_bps).map_or_else(refused, |()| Reply::Done)
        }
        Command::AddLayerProducer { transport, rid_extension, rid, kind, clock_rate } => engine
            .add_layer_producer(transport, (rid_extension, rid), kind, clock_rate)
            .map_or_else(refused, Reply::ProducerAdded),
        Command::EnableTransportFeedback { transport, extension_id } => {
            engine.enable_transport_feedback(transport, extension_id).map_or_else(refused, |()| Reply::Done)
        }
        Command::EnableBandwidthEstimation { transport, extension_id, max_bps } => engine
            .enable_bandwidth_estimation(now, transport, extension_id, max_bps)
            .map_or_else(refused, |()| Reply::Done),
        Command::ReportCongestion => Reply::Congestion(engine.congestion_report()),
        Command::FollowSpeech { producer, extension_id, group } => {
            engine.follow_speech(producer, extension_id, group).map_or_else(refused, |()| Reply::Done)
        }
        Command::SetLayers { consumer, ref layers, format } => {
            engine.set_layers(now, consumer, layers, format).map_or_else(refused, |()| Reply::Done)
        }
        Command::PreferLayer { consumer, layer, max_temporal_layer, pinned } => engine
            .prefer_layer(now, consumer, layer, pinned)
            .and_then(|()| engine.limit_temporal_layer(consumer, max_temporal_layer))
            .map_or_else(refused, |()| Reply::Done),
        Command::WatchDemand { producer } => engine.watch_demand(producer).map_or_else(refused, |()| Reply::Done),
        Command::EnableRtx { consumer, rtx } => engine.enable_rtx(consumer, rtx).map_or_else(refused, |()| Reply::Done),
        Command::RemoveConsumer { transport, ssrc } => {
            engine.remove_consumer(transport, ssrc).map_or_else(refused, |()| Reply::Done)
        }
        Command::PauseConsumer { consumer, paused } => {
            engine.set_paused(consumer, paused).map_or_else(refused, |()| Reply::Done)
        }
        Command::ExportProducer { producer, to_worker } => {
            engine.export_producer(producer, to_worker).map_or_else(refused, Reply::Exported)
        }
        Command::UnexportProducer { producer, to_worker } => {
            engine.unexport_producer(producer, to_worker).map_or_else(refused, |()| Reply::Done)
        }
        Command::ImportProducer { from_worker, stream, kind, clock_rate } => {
            engine.import_producer(from_worker, stream, kind, clock_rate).map_or_else(refused, Reply::ProducerAdded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_leaves_the_lowest_core_to_the_control_plane() {
        let plan = WorkerPlan::spread(1, &[0, 1], BackendChoice::Auto);
        assert_eq!(plan.cores, vec![1]);
        assert_eq!(plan.spare_cores(&[0, 1]), vec![0]);
        let plan = WorkerPlan::spread(3, &[0, 1, 2, 3], BackendChoice::Auto);
        assert_eq!(plan.cores, vec![1, 2, 3]);
    }

    #[test]
    fn spread_wraps_when_workers_outnumber_cores() {
        let plan = WorkerPlan::spread(3, &[0, 1], BackendChoice::Auto);
        assert_eq!(plan.cores, vec![0, 1, 0]);
        assert_eq!(plan.spare_cores(&[0, 1]), vec![0, 1]);
        assert!(WorkerPlan::spread(2, &[], BackendChoice::Auto).cores.is_empty());
    }

    #[test]
    fn handshakes_get_a_fifth_of_a_busy_turn_and_a_millisecond_of_a_quiet_one() {
        assert_eq!(handshake_slice(Duration::ZERO), MIN_HANDSHAKE_SLICE);
        assert_eq!(handshake_slice(Duration::from_micros(300)), MIN_HANDSHAKE_SLICE);
        // 20 ms forwarding + 5 ms handshakes: a fifth of the turn.
        assert_eq!(handshake_slice(Duration::from_millis(20)), Duration::from_millis(5));
    }

    #[test]
    fn the_receive_budget_shrinks_with_the_fan_out_and_recovers_slowly() {
        let mut budget = ReceiveBudget::default();
        assert_eq!(budget.datagrams(), RECEIVE_BUDGET);
        // A conference: 15 copies a datagram still fit the whole budget.
        budget.observe(200, 200 * 15);
        assert_eq!(budget.datagrams(), RECEIVE_BUDGET);
        // A fan-out to 3,000: two datagrams a turn; past the whole budget, one, never none.
        budget.observe(100, 100 * 3000);
        assert_eq!(budget.datagrams(), 2);
        budget.observe(1, 20_000);
        assert_eq!(budget.datagrams(), 1);
        // A turn that received nothing teaches nothing.
        budget.observe(0, 0);
        assert_eq!(budget.datagrams(), 1);
        // A turn of feedback only lowers the estimate by an eighth of the gap.
        budget.observe(1, 0);
        assert_eq!(budget.copies_per_datagram, 17_500);
        for _ in 0..100 {
            budget.observe(10, 10);
        }
        assert_eq!(budget.datagrams(), RECEIVE_BUDGET);
    }

    #[test]
    fn the_tcp_listener_takes_the_udp_port_or_start_up_fails() {
        let mut plan = WorkerPlan::on_loopback(1, BackendChoice::Epoll);
        let workers = Workers::start(&plan).unwrap();
        let handle = &workers.handles()[0];
        assert!(handle.udp_address().is_some_and(|a| a.port() != 0));
        assert_eq!(handle.tcp_address(), handle.udp_address());
        workers.shutdown();

        // UDP and TCP ports are separate: the UDP socket binds, the listener cannot.
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        plan.udp = Some(squatter.local_addr().unwrap());
        match Workers::start(&plan) {
            Err(Error::Bind { addr, protocol: "TCP", .. }) => assert_eq!(Some(addr), plan.udp),
            other => panic!("start-up must fail on the TCP port: {other:?}"),
        }
    }

    #[test]
    fn workers_report_distinct_thread_ids_and_stop() {
        let available: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
        let plan = WorkerPlan::spread(2, &available, BackendChoice::Epoll);
        let workers = Workers::start(&plan).unwrap();
        let ids: Vec<i32> = workers.handles().iter().map(WorkerHandle::thread_id).collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        for id in &ids {
            assert!(std::path::Path::new(&format!("/proc/self/task/{id}")).exists());
        }
        workers.shutdown();
        for id in &ids {
            assert!(!std::path::Path::new(&format!("/proc/self/task/{id}")).exists());
        }
    }
}
