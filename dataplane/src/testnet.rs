//! An in-memory network for driving one [`Engine`] with [`ClientPeer`]s in virtual time,
//! for the dataplane's tests and the benches: every datagram either side sends is
//! delivered to its destination in order, and the clock moves only when the caller moves
//! it. Addresses are plain values; nothing touches a socket. Two networks whose engines
//! share relay links (`Engine::attach_links`) play two workers: what one relays, the other
//! takes at the start of its next [`Net::deliver`].
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtls::{DtlsIdentity, DtlsVersionPolicy};
use crate::engine::{Engine, EngineConfig, Outbox, TransportCreated};
use crate::ice::IceCredentials;
use crate::io::{SLOT_SIZE, SendQueue, SocketIndex};
use crate::peer::{ClientPeer, Received};
use crate::router::TransportId;
use crate::wire::rtp::RtpHeader;

/// The engine's address.
pub const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// An outbox over a send queue; the network empties it after every engine call.
#[derive(Debug)]
pub struct QueueOutbox(pub SendQueue);

impl Outbox for QueueOutbox {
    fn slot(&mut self) -> &mut [u8] {
        if self.0.is_full() {
            // Only a caller that feeds the engine directly (an allocation test, a bench) lets
            // the queue fill: it discards what was forwarded.
            self.0.clear();
        }
        self.0.slot().expect("a queue that is not full has a free slot")
    }

    fn commit(&mut self, destination: SocketAddr, len: usize) {
        self.0.commit(SocketIndex(0), destination, len);
    }
}

/// One client of the network: its peer, its transport on the engine, what it received.
#[derive(Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub peer: ClientPeer,
    pub transport: TransportId,
    /// Decrypted media received, in arrival order.
    pub inbox: Vec<(Received, Vec<u8>)>,
    /// Datagrams that failed to decrypt or parse.
    pub errors: usize,
}

/// A datagram on the wire: source, destination, bytes.
type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

/// Decides, for each datagram the server sends, whether the network loses it.
pub type LossModel = Box<dyn FnMut(SocketAddr, &[u8]) -> bool>;

/// The engine, its clients and the datagrams between them.
pub struct Net {
    pub engine: Engine,
    pub now: Instant,
    pub clients: Vec<Client>,
    pub outbox: QueueOutbox,
    in_flight: VecDeque<Datagram>,
    /// Decides, for each datagram the server sends, whether the network loses it.
    pub lose: LossModel,
    /// Datagrams the server sent, and their bytes.
    pub server_sent: (u64, u64),
    /// Handshake datagrams the engine handles per [`Net::deliver`], as a worker's clock
    /// would allow per turn (unbounded by default); the rest wait for the next call.
    pub handshakes_per_turn: usize,
    /// Datagrams the server sent to addresses no client has: what the helpers at the far end
    /// of plain transports receive.
    pub elsewhere: Vec<(SocketAddr, Vec<u8>)>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("clients", &self.clients.len()).field("in_flight", &self.in_flight.len()).finish()
    }
}

/// The address of client `i`.
pub fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20000 + i as u16))
}

impl Net {
    /// An engine with its own certificate and no clients.
    pub fn new(config: EngineConfig) -> Self {
        let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("server identity");
        Self {
            engine: Engine::new(config, identity),
            now: Instant::now(),
            clients: Vec::new(),
            outbox: QueueOutbox(SendQueue::new(1024)),
            in_flight: VecDeque::new(),
            lose: Box::new(|_, _| false),
            server_sent: (0, 0),
            handshakes_per_turn: usize::MAX,
            elsewhere: Vec::new(),
        }
    }

    /// Adds `count` clients, each with a transport created as signalling would.
    pub fn add_clients(&mut self, count: usize) {
        let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("client identity");
        for _ in 0..count {
            let local_ice = IceCredentials::generate().expect("ICE credentials");
            let TransportCreated { transport, local_ice: server_ice, fingerprint } = self
                .engine
                .create_transport(self.now, None, local_ice.clone(), identity.fingerprint())
                .expect("transport");
            let peer = ClientPeer::new(&identity, local_ice, server_ice, fingerprint, self.now);
            let addr = client_addr(self.clients.len());
            self.clients.push(Client { addr, peer, transport, inbox: Vec::new(), errors: 0 });
        }
    }

    /// Starts every client's checks and delivers until each is connected (or a virtual
    /// ten seconds pass); returns how many connected.
    pub fn connect_all(&mut self) -> usize {
        for i in 0..self.clients.len() {
            let addr = self.clients[i].addr;
            let now = self.now;
            let flight = &mut self.in_flight;
            self.clients[i]
                .peer
                .start(now, &mut |bytes| flight.push_back((addr, SERVER, bytes.to_vec())))
                .expect("first check");
        }
        let deadline = self.now + Duration::from_secs(10);
        while self.now < deadline && !self.clients.iter().all(|c| c.peer.is_connected()) {
            self.deliver();
            self.advance(Duration::from_millis(50));
        }
        self.clients.iter().filter(|c| c.peer.is_connected()).count()
    }

    /// Moves the clock and runs every due timer on both sides.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        self.engine.handle_timeouts(now, &mut self.outbox);
        self.take_outbox();
        for client in &mut self.clients {
            let addr = client.addr;
            let flight = &mut self.in_flight;
            if client.peer.poll_timeout().is_some_and(|t| t <= now) {
                let _ = client.peer.handle_timeout(now, &mut |bytes| flight.push_back((addr, SERVER, bytes.to_vec())));
            }
        }
        self.deliver();
    }

    fn take_outbox(&mut self) {
        for (_, destination, bytes) in self.outbox.0.iter() {
            self.server_sent.0 += 1;
            self.server_sent.1 += bytes.len() as u64;
            self.in_flight.push_back((SERVER, destination, bytes.to_vec()));
        }
        self.outbox.0.clear();
    }

    /// Takes what other engines relayed here, then delivers every datagram in flight, and
    /// everything sent in answer, in order.
    pub fn deliver(&mut self) {
        self.engine.handle_relay(self.now, &mut self.outbox);
        self.take_outbox();
        self.engine.begin_turn(self.now, &mut self.outbox);
        self.take_outbox();
        let mut handshakes_left = self.handshakes_per_turn;
        self.run_handshakes(&mut handshakes_left);
        while let Some((from, to, mut bytes)) = self.in_flight.pop_front() {
            if to == SERVER {
                self.engine.handle_datagram(self.now, from, &mut bytes, &mut self.outbox);
                self.run_handshakes(&mut handshakes_left);
                continue;
            }
            if (self.lose)(to, &bytes) {
                continue;
            }
            let Some(client) = self.clients.iter_mut().find(|c| c.addr == to) else {
                self.elsewhere.push((to, bytes));
                continue;
            };
            let addr = client.addr;
            let flight = &mut self.in_flight;
            match client.peer.handle_datagram(self.now, SERVER, &mut bytes, &mut |out| {
                flight.push_back((addr, SERVER, out.to_vec()))
            }) {
                Ok(Received::Control) => {}
                Ok(media @ Received::Rtp { len }) | Ok(media @ Received::Rtcp { len }) => {
                    client.inbox.push((media, bytes[..len].to_vec()))
                }
                Err(_) => client.errors += 1,
            }
        }
    }

    /// Lets the engine work off up to `left` waiting handshake datagrams, and sends what it
    /// answered.
    fn run_handshakes(&mut self, left: &mut usize) {
        self.engine.run_handshakes(self.now, &mut self.outbox, || {
            let more = *left > 0;
            *left = left.saturating_sub(1);
            more
        });
        self.take_outbox();
    }

    /// Protects an RTP packet as client `i` and returns its bytes, without sending it.
    pub fn protect_rtp(&mut self, i: usize, ssrc: u32, seq: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; SLOT_SIZE];
        let header = RtpHeader::new(96, seq, timestamp, ssrc).write(&mut buf).expect("header fits");
        buf[header..header + payload.len()].copy_from_slice(payload);
        let len = self.clients[i].peer.protect_rtp(&mut buf, header + payload.len()).expect("connected");
        buf.truncate(len);
        buf
    }

    /// Protects an RTP packet as client `i`, puts it in flight and returns its bytes.
    pub fn send_rtp(&mut self, i: usize, ssrc: u32, seq: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let bytes = self.protect_rtp(i, ssrc, seq, timestamp, payload);
        self.in_flight.push_back((self.clients[i].addr, SERVER, bytes.clone()));
        bytes
    }

    /// Protects an RTCP compound as client `i` and puts it in flight.
    pub fn send_rtcp(&mut self, i: usize, plaintext: &[u8]) {
        let mut buf = vec![0u8; SLOT_SIZE];
        buf[..plaintext.len()].copy_from_slice(plaintext);
        let len = self.clients[i].peer.protect_rtcp(&mut buf, plaintext.len()).expect("connected");
        buf.truncate(len);
        self.in_flight.push_back((self.clients[i].addr, SERVER, buf));
    }

    /// Puts raw bytes in flight from `from` to the server.
    pub fn send_raw(&mut self, from: SocketAddr, bytes: Vec<u8>) {
        self.in_flight.push_back((from, SERVER, bytes));
    }
}
