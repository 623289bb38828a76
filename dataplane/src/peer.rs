//! The client side of one WebRTC transport, as our tests and load generator play it: the
//! controlling ICE agent's checks, the DTLS client, SRTP, and RTP/RTCP in both directions.
//!
//! Sans-IO like the rest of the dataplane: [`ClientPeer`] owns no socket and takes time as
//! an argument; datagrams to send go to the `send` callback, received ones come in through
//! [`ClientPeer::handle_datagram`]. [`UdpPeer`] puts one on a real UDP socket for tests that
//! run against a worker; [`TcpPeer`] puts one on a TCP connection to the worker's ICE-TCP
//! listener (the active side of RFC 6544), each packet framed as RFC 4571 says.
//!
//! Rules: call [`ClientPeer::start`] once, feed every datagram from the server, call
//! [`ClientPeer::handle_timeout`] when [`ClientPeer::poll_timeout`] is due, and send media
//! only once [`ClientPeer::is_connected`]. The check is repeated until answered, so a lost
//! request or response does not stall the test.
//!
//! The DTLS client is ours ([`DtlsTransport`]) unless the caller brings another through
//! [`ClientPeer::with_handshake`]: dimpl always offers all three SRTP profiles and our server
//! picks AES-256-GCM from them, so a client that must get AES-CM needs a stack that offers
//! only that (the load generator's rtc-dtls client). SRTP stays ours either way.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::command::{Command, Reply};
use crate::dtls::{CertificateFingerprint, DtlsError, DtlsIdentity, DtlsOutput, DtlsTransport, MIN_OUTPUT_BUFFER_LEN};
use crate::ice::client::{
    ServerStun, answer_binding_request, build_binding_request, classify_server_stun, parse_binding_response,
};
use crate::ice::{IceCredentials, IceError};
use crate::relay::WorkerIndex;
use crate::router::{MediaKind, ProducerId, ProducerSpec, TransportId};
use crate::srtp::{SrtpError, SrtpSession};
use crate::wire::framing::{self, FrameReader, MAX_FRAME_LEN, PREFIX_LEN};
use crate::wire::{Datagram, WireError, classify};
use crate::worker::WorkerHandle;

/// When an unanswered connectivity check is first repeated; each repeat waits twice as long
/// as the one before, up to [`MAX_CHECK_INTERVAL`] (RFC 5389 §7.2.1).
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
const MAX_CHECK_INTERVAL: Duration = Duration::from_millis(1600);

/// What a received datagram turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Decrypted RTP: the plaintext is `buf[..len]`.
    Rtp { len: usize },
    /// Decrypted RTCP compound: the plaintext is `buf[..len]`.
    Rtcp { len: usize },
    /// Handshake traffic, consumed here.
    Control,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("ICE: {0}")]
    Ice(IceError),
    #[error("DTLS: {0}")]
    Dtls(DtlsError),
    #[error("SRTP: {0}")]
    Srtp(SrtpError),
    #[error("not connected yet")]
    NotConnected,
    #[error("datagram is neither STUN, DTLS, RTP nor RTCP")]
    Unknown,
    #[error("the worker refused or did not answer the transport request")]
    TransportRefused,
    #[error("the worker refused or did not answer: {0}")]
    WorkerRefused(&'static str),
    #[error("stream framing: {0}")]
    Framing(WireError),
    #[error("the TCP connection to the worker closed")]
    ConnectionClosed,
}

/// The DTLS client a [`ClientPeer`] runs once ICE has succeeded, with [`DtlsTransport`]'s
/// contract: sans-IO, time passed in, drained with `poll_output` after construction and after
/// every `handle_*` call, `Connected` only once the server's certificate matched its SDP
/// fingerprint, and inert after `Failed` or `Closed`.
pub trait ClientHandshake: fmt::Debug + Send {
    /// Feeds one DTLS datagram from the server. An error that is not
    /// [fatal](DtlsError::is_fatal) means only that datagram was dropped.
    fn handle_packet(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DtlsError>;
    /// Runs retransmission and handshake timers (calling early is harmless).
    fn handle_timeout(&mut self, now: Instant);
    /// When `handle_timeout` is next due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next datagram to send or event; `buf` holds at least [`MIN_OUTPUT_BUFFER_LEN`]
    /// bytes and transmits borrow it.
    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Option<DtlsOutput<'b>>;
}

impl ClientHandshake for DtlsTransport {
    fn handle_packet(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DtlsError> {
        DtlsTransport::handle_packet(self, now, datagram)
    }

    fn handle_timeout(&mut self, now: Instant) {
        DtlsTransport::handle_timeout(self, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        DtlsTransport::poll_timeout(self)
    }

    fn poll_output<'b>(&mut self, buf: &'b mut [u8]) -> Option<DtlsOutput<'b>> {
        DtlsTransport::poll_output(self, buf)
    }
}

/// One client transport to the SFU.
#[derive(Debug)]
pub struct ClientPeer {
    local_ice: IceCredentials,
    server_ice: IceCredentials,
    /// Boxed so that the client stack can be chosen at run time; only handshake datagrams
    /// go through it, never media.
    dtls: Box<dyn ClientHandshake>,
    srtp: Option<SrtpSession>,
    transaction_id: [u8; 12],
    tie_breaker: u64,
    checked_at: Option<Instant>,
    /// How long after `checked_at` the check is repeated if unanswered.
    check_interval: Duration,
    ice_done: bool,
    scratch: Box<[u8]>,
}

impl ClientPeer {
    /// A peer that will connect to an SFU transport whose SDP gave `server_ice` and
    /// `server_fingerprint`; `identity` is the client's own certificate.
    pub fn new(
        identity: &DtlsIdentity,
        local_ice: IceCredentials,
        server_ice: IceCredentials,
        server_fingerprint: CertificateFingerprint,
        now: Instant,
    ) -> Self {
        let dtls = DtlsTransport::new_client(identity, server_fingerprint, now);
        Self::with_handshake(Box::new(dtls), local_ice, server_ice)
    }

    /// A peer whose DTLS client is `dtls`, which already knows the server's fingerprint and
    /// holds the certificate whose fingerprint the client's SDP announced.
    pub fn with_handshake(
        dtls: Box<dyn ClientHandshake>,
        local_ice: IceCredentials,
        server_ice: IceCredentials,
    ) -> Self {
        // Only a tie-breaker: the ufrag comes from a CSPRNG, so bytes cut from it serve.
        let mut tie_breaker = [0u8; 8];
        tie_breaker.iter_mut().zip(local_ice.ufrag().bytes()).for_each(|(t, u)| *t = u);
        Self {
            tie_breaker: u64::from_be_bytes(tie_breaker),
            local_ice,
            server_ice,
            dtls,
            srtp: None,
            transaction_id: [0; 12],
            checked_at: None,
            check_interval: CHECK_INTERVAL,
            ice_done: false,
            scratch: vec![0; MIN_OUTPUT_BUFFER_LEN].into_boxed_slice(),
        }
    }

    /// This peer's ICE credentials, for the SDP it gives the SFU.
    pub fn local_ice(&self) -> &IceCredentials {
        &self.local_ice
    }

    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// Sends the first connectivity check (nominating, as a controlling agent does).
    pub fn start(&mut self, now: Instant, send: &mut dyn FnMut(&[u8])) -> Result<(), PeerError> {
        self.new_check(now, send)
    }

    /// A check in a new transaction, with a random id (RFC 5389 §6): only the answer to it
    /// counts, whichever of its repeats it answers.
    fn new_check(&mut self, now: Instant, send: &mut dyn FnMut(&[u8])) -> Result<(), PeerError> {
        aws_lc_rs::rand::fill(&mut self.transaction_id).map_err(|_| PeerError::Ice(IceError::RandomUnavailable))?;
        self.check_interval = CHECK_INTERVAL;
        self.send_check(now, send)
    }

    /// Sends the current transaction's check: a repeat keeps its id, so that an answer that
    /// took longer than the repeat interval (a busy server, a long path) still counts.
    fn send_check(&mut self, now: Instant, send: &mut dyn FnMut(&[u8])) -> Result<(), PeerError> {
        let len = build_binding_request(
            &self.local_ice,
            &self.server_ice,
            true,
            self.tie_breaker,
            self.transaction_id,
            &mut self.scratch,
        )
        .map_err(PeerError::Ice)?;
        send(&self.scratch[..len]);
        self.checked_at = Some(now);
        Ok(())
    }

    /// Sends a fresh connectivity check on a connected transport: the SFU's consent lasts
    /// 30 s from the last one (RFC 7675), so a client that stays longer repeats it, as
    /// browsers do every few seconds. The answer is taken by
    /// [`ClientPeer::handle_datagram`] like the first.
    pub fn refresh_consent(&mut self, now: Instant, send: &mut dyn FnMut(&[u8])) -> Result<(), PeerError> {
        self.new_check(now, send)
    }

    /// When [`ClientPeer::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.ice_done {
            return self.checked_at.map(|at| at + self.check_interval);
        }
        self.dtls.poll_timeout()
    }

    /// Repeats an unanswered check (twice as late each time), or runs DTLS retransmission
    /// timers.
    pub fn handle_timeout(&mut self, now: Instant, send: &mut dyn FnMut(&[u8])) -> Result<(), PeerError> {
        if !self.ice_done {
            match self.checked_at {
                None => self.new_check(now, send)?,
                Some(at) if now >= at + self.check_interval => {
                    self.check_interval = (self.check_interval * 2).min(MAX_CHECK_INTERVAL);
                    self.send_check(now, send)?;
                }
                Some(_) => {}
            }
            return Ok(());
        }
        self.dtls.handle_timeout(now);
        self.drain_dtls(send)
    }

    /// Handles one datagram from the server, which came from `from`; RTP and RTCP are
    /// decrypted in place, the server's own checks answered.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        send: &mut dyn FnMut(&[u8]),
    ) -> Result<Received, PeerError> {
        match classify(buf) {
            Datagram::Stun => match classify_server_stun(buf).map_err(PeerError::Ice)? {
                ServerStun::Request => {
                    let len = answer_binding_request(buf, from, &self.local_ice, &self.server_ice, &mut self.scratch)
                        .map_err(PeerError::Ice)?;
                    send(&self.scratch[..len]);
                    Ok(Received::Control)
                }
                ServerStun::Indication => Ok(Received::Control),
                ServerStun::Response => self.handle_check_response(buf, send),
            },
            Datagram::Dtls => {
                self.dtls.handle_packet(now, buf).map_err(PeerError::Dtls)?;
                self.drain_dtls(send)?;
                Ok(Received::Control)
            }
            Datagram::Rtp => {
                let srtp = self.srtp.as_mut().ok_or(PeerError::NotConnected)?;
                Ok(Received::Rtp { len: srtp.unprotect_rtp(buf).map_err(PeerError::Srtp)? })
            }
            Datagram::Rtcp => {
                let srtp = self.srtp.as_mut().ok_or(PeerError::NotConnected)?;
                Ok(Received::Rtcp { len: srtp.unprotect_rtcp(buf).map_err(PeerError::Srtp)? })
            }
            Datagram::Unknown => Err(PeerError::Unknown),
        }
    }

    fn handle_check_response(&mut self, buf: &[u8], send: &mut dyn FnMut(&[u8])) -> Result<Received, PeerError> {
        parse_binding_response(buf, self.transaction_id, &self.server_ice).map_err(PeerError::Ice)?;
        if !self.ice_done {
            // ICE succeeded: the DTLS client speaks first.
            self.ice_done = true;
            self.drain_dtls(send)?;
        }
        Ok(Received::Control)
    }

    fn drain_dtls(&mut self, send: &mut dyn FnMut(&[u8])) -> Result<(), PeerError> {
        while let Some(output) = self.dtls.poll_output(&mut self.scratch) {
            match output {
                DtlsOutput::Transmit(bytes) => send(bytes),
                DtlsOutput::Connected { keys, .. } => {
                    self.srtp = Some(SrtpSession::new(&keys).map_err(PeerError::Srtp)?);
                }
                DtlsOutput::Failed(e) => return Err(PeerError::Dtls(e)),
                DtlsOutput::Closed => return Err(PeerError::Dtls(DtlsError::TransportEnded)),
            }
        }
        Ok(())
    }

    /// Protects the RTP packet in `buf[..len]` in place; returns the SRTP length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, PeerError> {
        self.srtp.as_mut().ok_or(PeerError::NotConnected)?.protect_rtp(buf, len).map_err(PeerError::Srtp)
    }

    /// Protects the RTCP compound in `buf[..len]` in place; returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, PeerError> {
        self.srtp.as_mut().ok_or(PeerError::NotConnected)?.protect_rtcp(buf, len).map_err(PeerError::Srtp)
    }
}

/// Asks `worker` for a transport as signalling would (a fresh client ICE ufrag and
/// `identity`'s fingerprint): its id, the peer that will connect to it, and the worker's UDP
/// address from the reply.
fn request_transport(
    worker: &WorkerHandle,
    identity: &DtlsIdentity,
    timeout: Duration,
) -> Result<(TransportId, ClientPeer, SocketAddr), PeerError> {
    let local_ice = IceCredentials::generate().map_err(PeerError::Ice)?;
    let (remote_ice, remote_fingerprint) = (local_ice.clone(), identity.fingerprint());
    let reply = worker
        .request(Command::CreateTransport { local_ice: None, remote_ice, remote_fingerprint }, timeout)
        .map_err(|_| PeerError::TransportRefused)?;
    let Reply::TransportCreated { created, address } = reply else { return Err(PeerError::TransportRefused) };
    let peer = ClientPeer::new(identity, local_ice, created.local_ice, created.fingerprint, Instant::now());
    Ok((created.transport, peer, address))
}

/// Adds the VP8 stream `ssrc` a publisher sends on `transport` as a producer of `worker`, as
/// signalling does once it answered the publisher; the producer's id.
pub fn add_video_producer(
    worker: &WorkerHandle,
    transport: TransportId,
    ssrc: u32,
    timeout: Duration,
) -> Result<ProducerId, PeerError> {
    let spec = ProducerSpec { transport, ssrc, kind: MediaKind::Video, clock_rate: 90_000 };
    match worker.request(Command::AddProducer { spec }, timeout) {
        Ok(Reply::ProducerAdded(producer)) => Ok(producer),
        _ => Err(PeerError::WorkerRefused("add a producer")),
    }
}

/// Relays video `producer` of `origin` to `destination` as signalling does for a subscriber
/// placed there: exported at the origin, imported at the destination; the imported producer.
pub fn relay_video(
    origin: &WorkerHandle,
    destination: &WorkerHandle,
    producer: ProducerId,
    timeout: Duration,
) -> Result<ProducerId, PeerError> {
    let to_worker = WorkerIndex(destination.index());
    let Ok(Reply::Exported(stream)) = origin.request(Command::ExportProducer { producer, to_worker }, timeout) else {
        return Err(PeerError::WorkerRefused("export a producer"));
    };
    let from_worker = WorkerIndex(origin.index());
    let import = Command::ImportProducer { from_worker, stream, kind: MediaKind::Video, clock_rate: 90_000 };
    match destination.request(import, timeout) {
        Ok(Reply::ProducerAdded(imported)) => Ok(imported),
        _ => Err(PeerError::WorkerRefused("import a relayed producer")),
    }
}

/// A [`ClientPeer`] on its own UDP socket, talking to one server address.
#[derive(Debug)]
pub struct UdpPeer {
    pub peer: ClientPeer,
    socket: UdpSocket,
    server: SocketAddr,
}

impl UdpPeer {
    /// Asks `worker` for a transport as signalling would (this client's ICE credentials and
    /// `identity`'s fingerprint), then connects a peer on an ephemeral port of `local_ip` to
    /// it: ICE and DTLS complete within `timeout`.
    pub fn connect_to_worker(
        worker: &WorkerHandle,
        identity: &DtlsIdentity,
        local_ip: std::net::IpAddr,
        timeout: Duration,
    ) -> Result<(TransportId, Self), PeerError> {
        let mut client = Self::for_worker(worker, identity, local_ip, timeout)?;
        client.1.connect(timeout)?;
        Ok(client)
    }

    /// Like [`UdpPeer::connect_to_worker`] but leaves connecting to the caller, so that many
    /// clients can start at once.
    pub fn for_worker(
        worker: &WorkerHandle,
        identity: &DtlsIdentity,
        local_ip: std::net::IpAddr,
        timeout: Duration,
    ) -> Result<(TransportId, Self), PeerError> {
        let (transport, peer, address) = request_transport(worker, identity, timeout)?;
        let client = Self::bind(peer, local_ip, address).map_err(|_| PeerError::TransportRefused)?;
        Ok((transport, client))
    }

    /// A peer bound to an ephemeral port of `local_ip`.
    pub fn bind(peer: ClientPeer, local_ip: std::net::IpAddr, server: SocketAddr) -> std::io::Result<Self> {
        Self::with_socket(peer, UdpSocket::bind(SocketAddr::new(local_ip, 0))?, server)
    }

    /// A peer on a socket bound already, for a client that announced the socket's address
    /// as its candidate before it knew the SFU's credentials.
    pub fn with_socket(peer: ClientPeer, socket: UdpSocket, server: SocketAddr) -> std::io::Result<Self> {
        // As much buffer as net.core.rmem_max allows, so a test thread that is scheduled
        // late does not lose media.
        socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20)?;
        Ok(Self { peer, socket, server })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The socket, for callers that receive themselves (the load generator's meters read
    /// kernel timestamps) or size its buffers.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The SFU address this peer talks to.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends a consent check ([`ClientPeer::refresh_consent`]).
    pub fn refresh_consent(&mut self) -> Result<(), PeerError> {
        self.peer.refresh_consent(Instant::now(), &mut Self::sender(&self.socket, self.server))
    }

    fn sender(socket: &UdpSocket, server: SocketAddr) -> impl FnMut(&[u8]) + '_ {
        // A lost datagram is the network's business: ICE and DTLS retransmit.
        move |bytes: &[u8]| {
            let _ = socket.send_to(bytes, server);
        }
    }

    /// Runs ICE and DTLS until connected or `timeout` passes.
    pub fn connect(&mut self, timeout: Duration) -> Result<(), PeerError> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 2048];
        self.peer.start(Instant::now(), &mut Self::sender(&self.socket, self.server))?;
        while !self.peer.is_connected() {
            let now = Instant::now();
            if now >= deadline {
                return Err(PeerError::NotConnected);
            }
            let wait = self.peer.poll_timeout().map_or(deadline, |t| t.min(deadline)).saturating_duration_since(now);
            self.socket.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).ok();
            match self.socket.recv_from(&mut buf) {
                Ok((len, from)) if from == self.server => {
                    let mut send = Self::sender(&self.socket, self.server);
                    // A stray or damaged datagram is not fatal to a handshake in progress.
                    let _ = self.peer.handle_datagram(Instant::now(), self.server, &mut buf[..len], &mut send);
                }
                Ok(_) => {}
                Err(_) => self.peer.handle_timeout(Instant::now(), &mut Self::sender(&self.socket, self.server))?,
            }
        }
        Ok(())
    }

    /// Protects and sends the RTP packet in `buf[..len]` (`buf` needs room for the tag).
    pub fn send_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<(), PeerError> {
        let len = self.peer.protect_rtp(buf, len)?;
        let _ = self.socket.send_to(&buf[..len], self.server);
        Ok(())
    }

    /// Protects and sends the RTCP compound in `buf[..len]`.
    pub fn send_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<(), PeerError> {
        let len = self.peer.protect_rtcp(buf, len)?;
        let _ = self.socket.send_to(&buf[..len], self.server);
        Ok(())
    }

    /// Waits up to `timeout` for the next media datagram and decrypts it into `buf`;
    /// `None` when none came, `Some(Err)` for one that did not decrypt.
    pub fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> Option<Result<Received, PeerError>> {
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return None;
            }
            self.socket.set_read_timeout(Some(wait)).ok();
            let (len, from) = self.socket.recv_from(buf).ok()?;
            if from != self.server {
                continue;
            }
            match self.handle_received(&mut buf[..len]) {
                Ok(Received::Control) => continue,
                other => return Some(other),
            }
        }
    }

    /// Handles a datagram from the server that the caller received on [`UdpPeer::socket`]
    /// itself (decrypted in place, handshake traffic answered on the socket), for callers
    /// that read with their own system call.
    pub fn handle_received(&mut self, datagram: &mut [u8]) -> Result<Received, PeerError> {
        let mut send = Self::sender(&self.socket, self.server);
        self.peer.handle_datagram(Instant::now(), self.server, datagram, &mut send)
    }
}

/// A [`ClientPeer`] on a TCP connection to a worker's ICE-TCP listener, every packet in both
/// directions framed as RFC 4571 says.
#[derive(Debug)]
pub struct TcpPeer {
    pub peer: ClientPeer,
    stream: TcpStream,
    server: SocketAddr,
    reader: FrameReader,
    /// Where each outgoing packet is framed, so that it leaves in one write.
    frame: Box<[u8]>,
}

impl TcpPeer {
    /// Asks `worker` for a transport as signalling would, connects to the worker's TCP
    /// listener and runs ICE and DTLS over the connection: all within `timeout`.
    pub fn connect_to_worker(
        worker: &WorkerHandle,
        identity: &DtlsIdentity,
        timeout: Duration,
    ) -> Result<(TransportId, Self), PeerError> {
        let mut client = Self::for_worker(worker, identity, timeout)?;
        client.1.connect(timeout)?;
        Ok(client)
    }

    /// Like [`TcpPeer::connect_to_worker`] but leaves ICE and DTLS to the caller.
    pub fn for_worker(
        worker: &WorkerHandle,
        identity: &DtlsIdentity,
        timeout: Duration,
    ) -> Result<(TransportId, Self), PeerError> {
        let server = worker.tcp_address().ok_or(PeerError::TransportRefused)?;
        let (transport, peer, _) = request_transport(worker, identity, timeout)?;
        let client = Self::open(peer, server, timeout).map_err(|_| PeerError::ConnectionClosed)?;
        Ok((transport, client))
    }

    /// A peer on a new connection to `server`; writes give up after `timeout`.
    pub fn open(peer: ClientPeer, server: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&server, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            peer,
            stream,
            server,
            reader: FrameReader::new(PREFIX_LEN + MAX_FRAME_LEN, MAX_FRAME_LEN),
            frame: vec![0; PREFIX_LEN + MAX_FRAME_LEN].into_boxed_slice(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    fn sender<'s>(stream: &'s TcpStream, frame: &'s mut [u8]) -> impl FnMut(&[u8]) + 's {
        // A failed write means the connection is gone; the next read reports that.
        move |bytes: &[u8]| {
            let _ = write_framed(stream, frame, bytes);
        }
    }

    /// Waits until `deadline` for the next whole frame and copies it into `buf`: its length,
    /// or `None` when none came in time.
    fn read_frame(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Option<usize>, PeerError> {
        loop {
            if let Some(frame) = self.reader.next_frame().map_err(PeerError::Framing)? {
                let out = buf.get_mut(..frame.len()).ok_or(PeerError::Framing(WireError::BufferTooSmall))?;
                out.copy_from_slice(frame);
                return Ok(Some(frame.len()));
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(wait)).ok();
            match (&self.stream).read(self.reader.spare()) {
                Ok(0) => return Err(PeerError::ConnectionClosed),
                Ok(n) => self.reader.filled(n),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Ok(None);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(PeerError::ConnectionClosed),
            }
        }
    }

    /// Runs ICE and DTLS over the connection until connected or `timeout` passes.
    pub fn connect(&mut self, timeout: Duration) -> Result<(), PeerError> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        self.peer.start(Instant::now(), &mut Self::sender(&self.stream, &mut self.frame))?;
        while !self.peer.is_connected() {
            let now = Instant::now();
            if now >= deadline {
                return Err(PeerError::NotConnected);
            }
            let wake =
                self.peer.poll_timeout().map_or(deadline, |t| t.min(deadline)).max(now + Duration::from_millis(1));
            match self.read_frame(&mut buf, wake)? {
                Some(len) => {
                    let mut send = Self::sender(&self.stream, &mut self.frame);
                    // A damaged packet is not fatal to a handshake in progress.
                    let _ = self.peer.handle_datagram(Instant::now(), self.server, &mut buf[..len], &mut send);
                }
                None => self.peer.handle_timeout(Instant::now(), &mut Self::sender(&self.stream, &mut self.frame))?,
            }
        }
        Ok(())
    }

    /// Protects and sends the RTP packet in `buf[..len]` (`buf` needs room for the tag).
    pub fn send_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<(), PeerError> {
        let len = self.peer.protect_rtp(buf, len)?;
        write_framed(&self.stream, &mut self.frame, &buf[..len])
    }

    /// Protects and sends the RTCP compound in `buf[..len]`.
    pub fn send_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<(), PeerError> {
        let len = self.peer.protect_rtcp(buf, len)?;
        write_framed(&self.stream, &mut self.frame, &buf[..len])
    }

    /// Writes `bytes` to the stream as they are, without a frame around them: for tests of
    /// what the worker does with a stream that breaks the framing.
    pub fn send_unframed(&mut self, bytes: &[u8]) -> Result<(), PeerError> {
        (&self.stream).write_all(bytes).map_err(|_| PeerError::ConnectionClosed)
    }

    /// Waits up to `timeout` for the next media packet and decrypts it into `buf`; `None`
    /// when none came, `Some(Err)` for one that did not decrypt or for a closed connection.
    pub fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> Option<Result<Received, PeerError>> {
        let deadline = Instant::now() + timeout;
        loop {
            let len = match self.read_frame(buf, deadline) {
                Ok(Some(len)) => len,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            let mut send = Self::sender(&self.stream, &mut self.frame);
            match self.peer.handle_datagram(Instant::now(), self.server, &mut buf[..len], &mut send) {
                Ok(Received::Control) => continue,
                other => return Some(other),
            }
        }
    }
}

/// Frames `bytes` into `frame` and writes it in one call.
fn write_framed(stream: &TcpStream, frame: &mut [u8], bytes: &[u8]) -> Result<(), PeerError> {
    let len = framing::encode(bytes, frame).map_err(PeerError::Framing)?;
    let mut stream = stream;
    stream.write_all(&frame[..len]).map_err(|_| PeerError::ConnectionClosed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtls::DtlsVersionPolicy;

    fn transaction(check: &[u8]) -> &[u8] {
        &check[8..20]
    }

    #[test]
    fn an_unanswered_check_is_repeated_in_its_transaction_at_doubling_intervals() {
        let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
        let (local, server) = (IceCredentials::generate().unwrap(), IceCredentials::generate().unwrap());
        let start = Instant::now();
        let mut peer = ClientPeer::new(&identity, local, server, identity.fingerprint(), start);
        let mut sent: Vec<Vec<u8>> = Vec::new();
        peer.start(start, &mut |check| sent.push(check.to_vec())).unwrap();
        let mut at = start;
        for wait_ms in [100, 200, 400, 800, 1600, 1600] {
            let due = peer.poll_timeout().unwrap();
            assert_eq!(due - at, Duration::from_millis(wait_ms));
            peer.handle_timeout(due, &mut |check| sent.push(check.to_vec())).unwrap();
            at = due;
        }
        assert_eq!(sent.len(), 7);
        // So an answer to any of them is the answer the client waits for.
        assert!(sent.iter().all(|check| transaction(check) == transaction(&sent[0])), "one transaction");
        peer.refresh_consent(at, &mut |check| sent.push(check.to_vec())).unwrap();
        assert_ne!(transaction(&sent[7]), transaction(&sent[0]), "a consent check is a transaction of its own");
        assert_eq!(peer.poll_timeout().unwrap() - at, CHECK_INTERVAL);
    }
}
