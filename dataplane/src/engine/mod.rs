//! One worker's forwarding engine: its transports (ICE-lite, DTLS, SRTP per client
//! connection), its router, its ends of the relay links to other workers with the buffer
//! pool it relays from, and what happens to each received datagram — demux, answer,
//! handshake, unprotect, route, rewrite, protect, queue, relay — and to each packet another
//! worker relays to it (see `relay`).
//!
//! Sans-IO: the engine owns no socket, thread or clock. The worker loop hands it each
//! datagram with the time it arrived and an [`Outbox`] to queue datagrams in, and calls
//! [`Engine::handle_timeouts`] when [`Engine::poll_timeout`] is due. The tests in
//! `dataplane/tests/engine.rs` drive it with in-memory peers in virtual time.
//!
//! Rules:
//! - **Media only over a validated, keyed transport.** A datagram other than STUN is
//!   accepted only from an address an ICE check validated; RTP/RTCP only after DTLS
//!   yielded keys, which it does only once the peer's certificate matched its fingerprint.
//!   The one exception is a *plain* transport ([`Engine::create_plain_transport`]): the
//!   control plane names a fixed address, without ICE or DTLS. For a helper it started
//!   itself on loopback (a recorder, a player) media is plaintext; for another node's worker
//!   (a *node link*) it is SRTP under [`LinkKeys`] the control plane drew, and what fails
//!   to authenticate is dropped like a browser's.
//! - **Links repair their losses.** A video stream published over a node link has its gaps
//!   NACKed to the link's far end, which resends from its retransmission cache (see
//!   [`Engine::add_producer`]); a subscriber's keyframe request goes over the link too, and
//!   the far end passes it on to its publisher, throttled at each hop.
//! - **No allocation per packet.** Forwarding writes each consumer's copy straight into a
//!   send-queue slot and protects it there; RTCP the engine originates is built in slots
//!   too. Transports, producers and consumers allocate when they are created.
//! - **Handshakes get their own share of a turn.** A DTLS datagram (which may cost an ECDHE
//!   and a signature) is not handled where it is received, between media datagrams: it
//!   waits, in arrival order, in a bounded backlog that the worker works off after each
//!   turn's receiving, for as long as the worker's clock allows ([`Engine::run_handshakes`]).
//!   So a join storm cannot stall forwarding, and forwarding cannot starve joins. Only when
//!   the backlog is full is a handshake datagram dropped and counted; the peer's DTLS
//!   retransmits it.
//! - **Every drop is counted** by reason in [`WorkerCounters`]; nothing here panics on input.
//! - **Nothing unauthenticated lasts.** A transport that is not connected (ICE and DTLS
//!   done) within `connect_timeout` of its creation is removed, and one transport keeps at
//!   most [`MAX_TRANSPORT_ADDRESSES`] validated addresses.
//! - **Every end is reported.** A transport that goes, for whatever reason, leaves an
//!   [`EngineEvent::TransportClosed`] with that reason for the control plane.
//! - **Transport ids are not reused soon.** A [`TransportId`] carries its slot and a
//!   generation, so a command or event naming a transport that went cannot reach the one
//!   that took its slot.
//! - **One copy per relayed packet.** A packet of an exported producer is copied once into a
//!   pooled buffer that every destination worker shares; a destination copies it into its
//!   own send slots and protects it there like a local packet. A full link drops and counts.
#![forbid(unsafe_code)]

mod congestion;
mod link_keys;
mod relay;
mod transport;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use slab::Slab;

use self::congestion::{CopyTemplate, SubscriberBwe};
pub use self::link_keys::{LINK_SRTP_PROFILE, LinkKeys};
use self::transport::{Link, Transport};
use crate::bwe::{EstimatorCounters, FeedbackGenerator};
use crate::dtls::{CertificateFingerprint, DtlsError, DtlsIdentity, DtlsOutput, MIN_OUTPUT_BUFFER_LEN};
use crate::ice::{IceCredentials, IceError, StunOutcome, local_ufrag_of};
use crate::io::SLOT_SIZE;
use crate::relay::{PacketPool, RelayLinks};
use crate::router::{
    Allocation, ConsumerFormat, ConsumerId, KeyframeRequest, LayerState, MediaKind, ProducerId, ProducerSpec, Resend,
    Rewritten, Rid, Router, RouterConfig, RouterError, RtxStream, SpeakerGroup, TransportId,
};
use crate::speaker::DominantSpeaker;
use crate::srtp::{MAX_SRTCP_OVERHEAD, MAX_SRTP_OVERHEAD, SrtpError, SrtpSession};
use crate::stats::{DropReason, MediaStat, WorkerCounters};
use crate::wire::WireError;
use crate::wire::audio_level::AudioLevel;
use crate::wire::rtcp::{
    RtcpCompound, RtcpPacket, write_nack, write_pli, write_receiver_report, write_remb, write_sender_report,
};
use crate::wire::rtp::{ExtensionIdMap, RtpPacket};
use crate::wire::video::{TemporalId, VideoFormat};
use crate::wire::{Datagram, classify};

/// Where the engine queues the datagrams it sends.
pub trait Outbox {
    /// A free slot of [`SLOT_SIZE`] bytes (the outbox flushes first when it is full).
    fn slot(&mut self) -> &mut [u8];
    /// Queues the first `len` bytes of the slot last returned, to `destination`.
    fn commit(&mut self, destination: SocketAddr, len: usize);
}

/// Tuning of one engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Transports this worker accepts at most (at most [`MAX_TRANSPORT_SLOTS`]).
    pub max_transports: usize,
    /// How long a new transport may take to connect (ICE, then DTLS) before it is removed.
    pub connect_timeout: Duration,
    /// DTLS datagrams that may wait for a later turn.
    pub handshake_backlog: usize,
    pub router: RouterConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        // The backlog holds the flights of a storm of a few hundred clients.
        Self {
            max_transports: 4096,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_backlog: 1024,
            router: RouterConfig::default(),
        }
    }
}

/// Long enough for a phone on a slow network and a worker working off a join storm's
/// handshake backlog; short enough that an offer which never does ICE is not kept for long.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Transports one engine can address: the slot part of a [`TransportId`].
pub const MAX_TRANSPORT_SLOTS: usize = 1 << TRANSPORT_SLOT_BITS;
const TRANSPORT_SLOT_BITS: u32 = 16;
/// Validated addresses one transport keeps: a client has a few candidates, and a stranger
/// who knows its credentials cannot grow the list (or the address map) without bound.
pub const MAX_TRANSPORT_ADDRESSES: usize = 8;

/// Why a control request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("this worker holds its maximum number of transports")]
    TooManyTransports,
    #[error("no such transport")]
    UnknownTransport,
    #[error("this worker has no media socket")]
    NoSocket,
    #[error("another transport of this worker answers to that ICE ufrag")]
    UfragInUse,
    #[error("another transport of this worker owns that address")]
    AddressInUse,
    #[error("cannot generate ICE credentials: {0}")]
    Ice(IceError),
    #[error("no relay link to that worker (it is this one, or no such worker runs)")]
    UnknownWorker,
    #[error("the relayed stream has ended")]
    RelayStreamEnded,
    /// A node link's keys do not fit their profile (a half that is not key ‖ salt).
    #[error("cannot key the node link: {0}")]
    LinkKeys(SrtpError),
    #[error("the system's random number generator failed")]
    RandomUnavailable,
    #[error(transparent)]
    Router(#[from] RouterError),
}

/// What the signalling needs to answer a client: the local side of a new transport.
#[derive(Debug, Clone)]
pub struct TransportCreated {
    pub transport: TransportId,
    pub local_ice: IceCredentials,
    pub fingerprint: CertificateFingerprint,
}

/// Something the control plane should hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineEvent {
    /// DTLS finished and the fingerprint matched: media flows.
    TransportConnected(TransportId),
    /// The transport ended (consent expired, DTLS failed or closed) and was removed.
    TransportClosed { transport: TransportId, reason: CloseReason },
    /// The stream an imported producer relayed ended at its origin; the producer and its
    /// consumers were removed.
    ImportEnded(ProducerId),
    /// A producer's packets started flowing: its first packet, or the first after it was
    /// reported stopped.
    ProducerStarted(ProducerId),
    /// The dominant speaker of a room whose speech the worker follows changed: the audio
    /// producer now speaking.
    DominantSpeaker { group: SpeakerGroup, producer: ProducerId },
    /// No packet of a flowing producer for [`PRODUCER_STALL_TIMEOUT`]: its publisher stopped
    /// sending (a camera turned off, a stalled encoder, a link gone quiet) without leaving.
    /// A removed producer is not reported: its removal was asked for, or its transport's end
    /// is.
    ProducerStopped(ProducerId),
    /// Whether some consumer of this worker could receive a producer whose demand the
    /// control plane watches ([`Engine::watch_demand`]) changed: reported once when watched,
    /// then at each change.
    Demand { producer: ProducerId, wanted: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client stopped answering consent checks (RFC 7675): it vanished.
    ConsentExpired,
    /// No ICE check arrived within the connect timeout.
    IceTimeout,
    /// ICE worked but DTLS did not finish within the connect timeout.
    DtlsTimeout,
    DtlsFailed(DtlsError),
    /// The client closed DTLS (close_notify): it hung up.
    DtlsClosed,
    /// DTLS negotiated keys the SRTP module could not use.
    SrtpSetupFailed,
    /// The control plane closed it.
    Requested,
}

impl CloseReason {
    /// The short names of the reasons, for logs, events and metrics, by [`CloseReason::index`].
    pub const NAMES: [&'static str; 7] = [
        "consent_expired",
        "ice_timeout",
        "dtls_timeout",
        "dtls_failed",
        "dtls_closed",
        "srtp_setup_failed",
        "requested",
    ];

    /// Where the reason's name is in [`CloseReason::NAMES`].
    pub fn index(self) -> usize {
        match self {
            CloseReason::ConsentExpired => 0,
            CloseReason::IceTimeout => 1,
            CloseReason::DtlsTimeout => 2,
            CloseReason::DtlsFailed(_) => 3,
            CloseReason::DtlsClosed => 4,
            CloseReason::SrtpSetupFailed => 5,
            CloseReason::Requested => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// The SSRC the engine signs the RTCP it originates with (receiver reports, keyframe
/// requests).
const ENGINE_SSRC: u32 = 0x5546_5254;
/// How often publishers get a receiver report for each stream they send.
const RECEIVER_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a flowing producer may send nothing before it is reported stopped: longer than
/// any gap between a live stream's packets (audio comes every 20–60 ms, video at least a few
/// frames a second), so that a report means the publisher really stopped.
pub const PRODUCER_STALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    identity: DtlsIdentity,
    transports: Slab<Transport>,
    by_ufrag: HashMap<String, TransportId>,
    by_addr: HashMap<SocketAddr, TransportId>,
    router: Router,
    counters: WorkerCounters,
    events: Vec<EngineEvent>,
    /// Raised for every transport created, so that ids are not reused soon (wraps).
    generation: u32,
    /// DTLS datagrams handled in the current loop turn.
    /// DTLS datagrams past the turn's budget: source, arrival time, bytes.
    handshake_backlog: VecDeque<(SocketAddr, Instant, Vec<u8>)>,
    /// Where DTLS writes its flights before they are queued.
    dtls_out: Box<[u8]>,
    /// When publishers next get receiver reports and stalled producers are looked for; set
    /// by the first media packet, then once a second.
    next_receiver_reports: Option<Instant>,
    /// Producers that gained a consumer since the last turn began.
    keyframes_wanted: Vec<ProducerId>,
    /// Subscribers whose congestion control is due, gathered by a timeout pass.
    subscribers_due: Vec<TransportId>,
    /// The dominant speaker detection of each room followed, with its speaker's publisher.
    speakers: HashMap<SpeakerGroup, (DominantSpeaker<ProducerId>, Option<TransportId>)>,
    links: RelayLinks,
    /// Where exported producers' packets are copied for their destinations.
    relay_pool: PacketPool,
    /// The numbered copy of the packet being forwarded, for subscribers whose congestion is
    /// controlled.
    copy_template: CopyTemplate,
}

fn slot_key(id: TransportId) -> usize {
    (id.0 as usize) & (MAX_TRANSPORT_SLOTS - 1)
}

/// The transport `id` names, if it is still the one in its slot.
fn lookup(transports: &mut Slab<Transport>, id: TransportId) -> Option<&mut Transport> {
    transports.get_mut(slot_key(id)).filter(|t| t.id == id)
}

impl Engine {
    pub fn new(config: EngineConfig, identity: DtlsIdentity) -> Self {
        Self {
            config,
            identity,
            transports: Slab::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            router: Router::new(config.router),
            counters: WorkerCounters::default(),
            events: Vec::new(),
            generation: 0,
            handshake_backlog: VecDeque::new(),
            dtls_out: vec![0; MIN_OUTPUT_BUFFER_LEN].into_boxed_slice(),
            next_receiver_reports: None,
            keyframes_wanted: Vec::new(),
            subscribers_due: Vec::new(),
            speakers: HashMap::new(),
            links: RelayLinks::unlinked(),
            relay_pool: PacketPool::new(0),
            copy_template: CopyTemplate::new(SLOT_SIZE),
        }
    }

    /// Brings the media quality gauges and the router's layer counters into the counters,
    /// before they are published.
    pub fn refresh_media_stats(&mut self) {
        let (mut estimated, mut kbps, mut below) = (0, 0, 0);
        for (_, transport) in &self.transports {
            let Some(bwe) = transport.bwe.as_ref() else { continue };
            estimated += 1;
            kbps += bwe.estimator.estimate() / 1000;
            below += self.router.layer_states(transport.id).filter(|(_, s)| s.current < s.cap).count() as u64;
        }
        let media = &mut self.counters.media;
        media[MediaStat::SubscribersEstimated.index()] = estimated;
        media[MediaStat::SubscriberEstimateKbps.index()] = kbps;
        media[MediaStat::StreamsBelowWanted.index()] = below;
        media[MediaStat::LayerSwitches.index()] = self.router.layer_switches();
        media[MediaStat::LossDowngrades.index()] = self.router.loss_downgrades();
        media[MediaStat::TemporalSwitches.index()] = self.router.temporal_switches();
    }

    pub fn counters(&mut self) -> &mut WorkerCounters {
        &mut self.counters
    }

    /// The fingerprint every transport of this engine presents.
    pub fn fingerprint(&self) -> CertificateFingerprint {
        self.identity.fingerprint()
    }

    pub fn transport_count(&self) -> usize {
        self.transports.len()
    }

    /// Whether an authenticated ICE check validated `addr` for a transport that is still
    /// here: what lets the worker keep an ICE-TCP connection from that address.
    pub fn is_validated(&self, addr: SocketAddr) -> bool {
        self.by_addr.contains_key(&addr)
    }

    /// Producers held, imported ones included.
    pub fn producer_count(&self) -> usize {
        self.router.producer_total()
    }

    pub fn consumer_count(&self) -> usize {
        self.router.consumer_total()
    }

    /// Takes the events since the last call.
    pub fn drain_events(&mut self) -> impl Iterator<Item = EngineEvent> + '_ {
        self.events.drain(..)
    }

    /// Starts a loop turn at `now`: asks publishers for the keyframes new consumers need.
    pub fn begin_turn(&mut self, now: Instant, out: &mut impl Outbox) {
        let events = &mut self.events;
        self.router.refresh_demand(|producer, wanted| events.push(EngineEvent::Demand { producer, wanted }));
        for producer in std::mem::take(&mut self.keyframes_wanted) {
            if let Some(request) = self.router.request_keyframe(now, producer) {
                self.send_keyframe_request(request, out);
            }
        }
    }

    /// Handles waiting DTLS datagrams, oldest first, while `more` says there is time left
    /// (it is asked before each one; the worker answers from its clock, tests by count).
    /// Returns how many it handled.
    pub fn run_handshakes(&mut self, now: Instant, out: &mut impl Outbox, mut more: impl FnMut() -> bool) -> usize {
        let mut handled = 0;
        while !self.handshake_backlog.is_empty() && more() {
            let Some((from, _, datagram)) = self.handshake_backlog.pop_front() else { break };
            self.run_dtls(now, from, &datagram, out);
            handled += 1;
        }
        handled
    }

    /// A transport for a client whose SDP gave `remote_ice` and `remote_fingerprint`.
    /// `local_ice` are the credentials to answer checks with when the signalling already
    /// offered them (a subscriber's transport); `None` generates fresh ones.
    pub fn create_transport(
        &mut self,
        now: Instant,
        local_ice: Option<IceCredentials>,
        remote_ice: IceCredentials,
        remote_fingerprint: CertificateFingerprint,
    ) -> Result<TransportCreated, EngineError> {
        if self.transports.len() >= self.config.max_transports.min(MAX_TRANSPORT_SLOTS) {
            return Err(EngineError::TooManyTransports);
        }
        let local_ice = match local_ice {
            Some(given) if self.by_ufrag.contains_key(given.ufrag()) => return Err(EngineError::UfragInUse),
            Some(given) => given,
            None => loop {
                let candidate = IceCredentials::generate().map_err(EngineError::Ice)?;
                if !self.by_ufrag.contains_key(candidate.ufrag()) {
                    break candidate;
                }
            },
        };
        let entry = self.transports.vacant_entry();
        let slot = u32::try_from(entry.key()).map_err(|_| EngineError::TooManyTransports)?;
        self.generation = self.generation.wrapping_add(1);
        let id = TransportId((self.generation << TRANSPORT_SLOT_BITS) | slot);
        let deadline = now + self.config.connect_timeout;
        entry.insert(Transport::new(
            id,
            now,
            deadline,
            &self.identity,
            local_ice.clone(),
            remote_ice,
            remote_fingerprint,
        ));
        self.by_ufrag.insert(local_ice.ufrag().to_owned(), id);
        self.counters.transports = self.transports.len() as u64;
        Ok(TransportCreated { transport: id, local_ice, fingerprint: self.identity.fingerprint() })
    }

    /// A plain transport to and from `remote`: usable at once, ended only by
    /// [`Engine::close_transport`]. Without `keys`, a local helper's (a recorder, a player),
    /// plaintext both ways; with them, a node link to another node's worker, SRTP both ways.
    /// A peer that sends its RTCP from a port of its own names it as `rtcp_remote`, which
    /// then receives the engine's RTCP. Refused when another transport owns either address,
    /// or when the keys do not fit their profile.
    ///
    /// A link's SRTP session keeps every SSRC it has carried, each way, for its whole life
    /// (forgetting one would restart its indices and repeat a keystream should the SSRC come
    /// back), and takes at most [`crate::srtp::MAX_STREAMS_PER_SESSION`]: past that, a new
    /// stream's packets are dropped (counted as malformed). Make the link again under fresh
    /// keys before it has carried that many streams.
    pub fn create_plain_transport(
        &mut self,
        remote: SocketAddr,
        rtcp_remote: Option<SocketAddr>,
        keys: Option<&LinkKeys>,
    ) -> Result<TransportId, EngineError> {
        if self.transports.len() >= self.config.max_transports.min(MAX_TRANSPORT_SLOTS) {
            return Err(EngineError::TooManyTransports);
        }
        let mut addresses = std::iter::once(remote).chain(rtcp_remote);
        if addresses.any(|address| self.by_addr.contains_key(&address)) {
            return Err(EngineError::AddressInUse);
        }
        let srtp = keys.map(LinkKeys::session).transpose()?;
        let entry = self.transports.vacant_entry();
        let slot = u32::try_from(entry.key()).map_err(|_| EngineError::TooManyTransports)?;
        self.generation = self.generation.wrapping_add(1);
        let id = TransportId((self.generation << TRANSPORT_SLOT_BITS) | slot);
        entry.insert(Transport::plain(id, remote, rtcp_remote, srtp));
        for address in std::iter::once(remote).chain(rtcp_remote) {
            self.by_addr.insert(address, id);
        }
        self.counters.transports = self.transports.len() as u64;
        Ok(id)
    }

    /// Ends a transport at the control plane's request.
    pub fn close_transport(&mut self, id: TransportId) -> Result<(), EngineError> {
        if lookup(&mut self.transports, id).is_none() {
            return Err(EngineError::UnknownTransport);
        }
        self.remove_transport(id, CloseReason::Requested);
        Ok(())
    }

    /// Publishes a stream the client on `spec.transport` sends. A video stream that comes
    /// over a node link has the packets the network loses NACKed to the link's far end.
    pub fn add_producer(&mut self, spec: ProducerSpec) -> Result<ProducerId, EngineError> {
        let transport = lookup(&mut self.transports, spec.transport).ok_or(EngineError::UnknownTransport)?;
        let producer = self.router.add_producer(spec)?;
        if transport.is_node_link() {
            // Just made: it is there.
            let _ = self.router.repair_losses(producer);
        }
        if spec.kind == MediaKind::Video {
            transport.add_video_ssrc(spec.ssrc);
        }
        Ok(producer)
    }

    /// Reports to the publisher on `transport` when each of its packets arrived (transport-wide
    /// congestion control feedback), for the packets carrying a transport-wide sequence
    /// number under header extension `extension_id`: its browser's own estimate of its uplink
    /// then works through the SFU.
    pub fn enable_transport_feedback(&mut self, transport: TransportId, extension_id: u8) -> Result<(), EngineError> {
        let transport = lookup(&mut self.transports, transport).ok_or(EngineError::UnknownTransport)?;
        // The media stream it names is the publisher's first that arrives (browsers ignore
        // feedback naming none of theirs).
        transport.feedback = Some(Box::new((extension_id, FeedbackGenerator::new(ENGINE_SSRC, 0))));
        Ok(())
    }

    /// Estimates the bandwidth toward the subscriber on `transport` (up to `max_bps`) from
    /// its transport-wide congestion control feedback, numbering every packet it is sent
    /// under header extension `extension_id`, and shares the estimate among the streams it
    /// receives (simulcast layers chosen to fit).
    pub fn enable_bandwidth_estimation(
        &mut self,
        now: Instant,
        transport: TransportId,
        extension_id: u8,
        max_bps: u64,
    ) -> Result<(), EngineError> {
        let transport = lookup(&mut self.transports, transport).ok_or(EngineError::UnknownTransport)?;
        if !(1..=14).contains(&extension_id) {
            return Err(EngineError::Router(RouterError::InvalidLayers));
        }
        transport.bwe = Some(Box::new(SubscriberBwe::new(now, extension_id, max_bps)));
        Ok(())
    }

    /// Each estimated subscriber's congestion control state, for operators' eyes.
    pub fn congestion_report(&self) -> Vec<SubscriberReport> {
        self.transports
            .iter()
            .filter_map(|(_, t)| {
                let bwe = t.bwe.as_ref()?;
                Some(SubscriberReport {
                    transport: t.id,
                    estimate_bps: bwe.estimator.estimate(),
                    allocation: bwe.allocation,
                    feedback: bwe.estimator.counters(),
                    streams: self.router.layer_states(t.id).collect(),
                })
            })
            .collect()
    }

    /// The bandwidth estimated toward the subscriber on `transport`, and what was allocated
    /// of it, when it is estimated.
    pub fn bandwidth(&self, transport: TransportId) -> Option<(u64, Allocation)> {
        let bwe = self.transports.get(slot_key(transport)).filter(|t| t.id == transport)?.bwe.as_ref()?;
        Some((bwe.estimator.estimate(), bwe.allocation))
    }

    /// Follows the speech of the audio `producer` by its RFC 6464 audio levels (header
    /// extension `extension_id`) among the room `group`'s, reporting the room's dominant
    /// speaker as it changes ([`EngineEvent::DominantSpeaker`]); a speaker's video is sent
    /// first when subscribers' bandwidth is shared out.
    pub fn follow_speech(
        &mut self,
        producer: ProducerId,
        extension_id: u8,
        group: SpeakerGroup,
    ) -> Result<(), EngineError> {
        Ok(self.router.follow_speech(producer, extension_id, group)?)
    }

    /// Registers a simulcast layer `transport` publishes under `rid` (see
    /// [`Router::add_layer_producer`]); its SSRC is learnt from its first packet.
    pub fn add_layer_producer(
        &mut self,
        transport: TransportId,
        rid: (u8, Rid),
        kind: MediaKind,
        clock_rate: u32,
    ) -> Result<ProducerId, EngineError> {
        if lookup(&mut self.transports, transport).is_none() {
            return Err(EngineError::UnknownTransport);
        }
        Ok(self.router.add_layer_producer(transport, rid, kind, clock_rate)?)
    }

    /// Lets `consumer` choose among simulcast `layers` (lowest first) in `format`; a switch
    /// it needs asks for its key frame next turn.
    pub fn set_layers(
        &mut self,
        now: Instant,
        consumer: ConsumerId,
        layers: &[ProducerId],
        format: VideoFormat,
    ) -> Result<(), EngineError> {
        self.router.set_layers(consumer, layers, format)?;
        self.review_layers(now, Some(consumer));
        Ok(())
    }

    /// Sends `consumer` at most its simulcast layer `layer` from now on, before its
    /// subscriber's other simulcast streams when `pinned`.
    pub fn prefer_layer(
        &mut self,
        now: Instant,
        consumer: ConsumerId,
        layer: usize,
        pinned: bool,
    ) -> Result<(), EngineError> {
        self.router.prefer_layer(consumer, layer, pinned)?;
        self.review_layers(now, Some(consumer));
        Ok(())
    }

    /// Reports whether some consumer could receive `producer` ([`EngineEvent::Demand`]), now
    /// and whenever that changes: a simulcast layer nobody here receives.
    pub fn watch_demand(&mut self, producer: ProducerId) -> Result<(), EngineError> {
        Ok(self.router.watch_demand(producer)?)
    }

    /// Sends `consumer` at most the VP8 temporal layers up to `max_tid` of its simulcast
    /// layer from now on, whatever its link carries ([`Router::limit_temporal_layer`]).
    pub fn limit_temporal_layer(&mut self, consumer: ConsumerId, max_tid: TemporalId) -> Result<(), EngineError> {
        Ok(self.router.limit_temporal_layer(consumer, max_tid)?)
    }

    /// A consumer's simulcast layers: current, awaited, preferred (0 = lowest).
    pub fn layer_state(&self, consumer: ConsumerId) -> Option<(usize, Option<usize>, usize)> {
        self.router.layer_state(consumer)
    }

    fn review_layers(&mut self, now: Instant, only: Option<ConsumerId>) {
        let wanted = &mut self.keyframes_wanted;
        self.router.review_layers(now, only, |producer| want_keyframe(wanted, producer));
    }

    /// Caps what the client on `transport` sends at `max_bps`: each receiver-report interval
    /// tells it so in a REMB naming its video streams, which browsers take as the ceiling of
    /// their bandwidth estimate.
    pub fn limit_bitrate(&mut self, transport: TransportId, max_bps: u32) -> Result<(), EngineError> {
        let transport = lookup(&mut self.transports, transport).ok_or(EngineError::UnknownTransport)?;
        transport.bitrate_cap = Some(max_bps);
        Ok(())
    }

    /// Sends `producer`'s stream to the client on `transport` as SSRC `ssrc`.
    pub fn add_consumer(
        &mut self,
        producer: ProducerId,
        transport: TransportId,
        ssrc: u32,
    ) -> Result<ConsumerId, EngineError> {
        if lookup(&mut self.transports, transport).is_none() {
            return Err(EngineError::UnknownTransport);
        }
        let consumer = self.router.add_consumer(producer, transport, ssrc)?;
        // A video decoder cannot start mid-stream: the next turn asks the publisher for a
        // keyframe (throttled per producer like subscribers' requests).
        want_keyframe(&mut self.keyframes_wanted, producer);
        Ok(consumer)
    }

    /// Stops for good what the client on `transport` receives as `ssrc` (its subscriber no
    /// longer receives that stream). Named by transport and SSRC rather than consumer id, so a
    /// consumer that already went with its producer cannot be mistaken for a newer one.
    pub fn remove_consumer(&mut self, transport: TransportId, ssrc: u32) -> Result<(), EngineError> {
        let consumer = self.router.consumer_of(transport, ssrc).ok_or(RouterError::UnknownConsumer)?;
        Ok(self.router.remove_consumer(consumer)?)
    }

    /// Stops or resumes forwarding to `consumer`. A resumed video stream needs a keyframe
    /// to decode again: the next turn asks the publisher for one, as for a new consumer.
    pub fn set_paused(&mut self, consumer: ConsumerId, paused: bool) -> Result<(), EngineError> {
        let producer = self.router.set_paused(consumer, paused)?;
        if !paused {
            want_keyframe(&mut self.keyframes_wanted, producer);
        }
        Ok(())
    }

    /// Resends `consumer`'s lost packets as the RTX stream `rtx` (RFC 4588).
    pub fn enable_rtx(&mut self, consumer: ConsumerId, rtx: RtxStream) -> Result<(), EngineError> {
        Ok(self.router.enable_rtx(consumer, rtx)?)
    }

    /// Sends `consumer`'s packets with the payload type and header extension ids its
    /// subscriber negotiated.
    pub fn set_format(&mut self, consumer: ConsumerId, format: ConsumerFormat) -> Result<(), EngineError> {
        Ok(self.router.set_format(consumer, format)?)
    }

    /// The earliest time [`Engine::handle_timeouts`] has work: a DTLS retransmission, a
    /// connect or consent deadline, receiver reports, NACKs to a node link.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A waiting backlog is due now: its oldest arrival time is already past.
        let backlog = self.handshake_backlog.front().map(|(_, arrived, _)| *arrived);
        self.transports
            .iter()
            .filter_map(|(_, t)| t.poll_timeout())
            .chain(backlog)
            .chain(self.next_receiver_reports)
            .chain(self.router.nack_timeout())
            .chain(self.speakers.values().filter_map(|(detector, _)| detector.poll_timeout()))
            .min()
    }

    /// Runs due DTLS timers, closes transports whose consent expired or that did not connect
    /// in time, and sends publishers their receiver reports and node links their NACKs when
    /// due.
    pub fn handle_timeouts(&mut self, now: Instant, out: &mut impl Outbox) {
        self.send_nacks(now, out);
        self.poll_speakers(now);
        if self.next_receiver_reports.is_some_and(|due| due <= now) {
            self.next_receiver_reports = Some(now + RECEIVER_REPORT_INTERVAL);
            self.send_receiver_reports(now, out);
            let events = &mut self.events;
            self.router.stalled(now, PRODUCER_STALL_TIMEOUT, |producer| {
                events.push(EngineEvent::ProducerStopped(producer));
            });
            self.review_layers(now, None);
        }
        let mut ended = Vec::new();
        let mut subscribers_due = std::mem::take(&mut self.subscribers_due);
        for (_, transport) in &mut self.transports {
            let id = transport.id;
            if let Some(reason) = transport.timed_out(now) {
                ended.push((id, reason));
                continue;
            }
            if transport.bwe.as_ref().and_then(|b| b.poll_timeout()).is_some_and(|due| due <= now) {
                subscribers_due.push(id);
            }
            if let Some(mut feedback) = transport.feedback.take_if(|f| f.1.poll_timeout().is_some_and(|due| due <= now))
            {
                feedback.1.poll(now, |report| {
                    self.counters.media(MediaStat::FeedbackSent);
                    send_rtcp(transport, out, &mut self.counters, |slot| copy_into(slot, report));
                });
                transport.feedback = Some(feedback);
            }
            let Link::Webrtc { dtls, .. } = &mut transport.link else { continue };
            if dtls.poll_timeout().is_some_and(|due| due <= now) {
                dtls.handle_timeout(now);
                if let Some(reason) =
                    drain_dtls(id, transport, &mut self.dtls_out, out, (&mut self.events, &mut self.counters))
                {
                    ended.push((id, reason));
                }
            }
        }
        for (id, reason) in ended {
            self.remove_transport(id, reason);
        }
        for &id in &subscribers_due {
            self.run_congestion_control(now, id, out);
        }
        subscribers_due.clear();
        self.subscribers_due = subscribers_due;
    }

    fn remove_transport(&mut self, id: TransportId, reason: CloseReason) {
        if lookup(&mut self.transports, id).is_none() {
            return;
        }
        let transport = self.transports.remove(slot_key(id));
        if let Link::Webrtc { ice, .. } = &transport.link {
            self.by_ufrag.remove(ice.local_ufrag());
        }
        for addr in &transport.addresses {
            self.by_addr.remove(addr);
        }
        self.router.remove_transport(id);
        self.end_exports();
        self.counters.transports = self.transports.len() as u64;
        self.events.push(EngineEvent::TransportClosed { transport: id, reason });
    }

    /// Handles one received datagram from `from`; `datagram` may be rewritten in place.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8], out: &mut impl Outbox) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += datagram.len() as u64;
        match classify(datagram) {
            Datagram::Stun => self.handle_stun(now, from, datagram, out),
            Datagram::Dtls => self.handle_dtls(now, from, datagram),
            Datagram::Rtp => self.handle_rtp(now, from, datagram, out),
            Datagram::Rtcp => self.handle_rtcp(now, from, datagram, out),
            Datagram::Unknown => self.counters.drop(DropReason::Malformed),
        }
    }

    fn handle_stun(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], out: &mut impl Outbox) {
        let known = self.by_addr.get(&from).copied();
        let by_ufrag = || local_ufrag_of(datagram).and_then(|ufrag| self.by_ufrag.get(ufrag).copied());
        let Some(id) = known.or_else(by_ufrag) else {
            self.counters.drop(DropReason::StunUnknownUfrag);
            return;
        };
        let Some(transport) = lookup(&mut self.transports, id) else { return };
        let Link::Webrtc { ice, .. } = &mut transport.link else {
            // A plain transport's helper speaks no ICE.
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let response = out.slot();
        match ice.handle_stun(datagram, from, now, response) {
            Ok(StunOutcome::CheckAccepted { response_len, .. }) => {
                send(out, &mut self.counters, from, response_len);
                if !transport.addresses.contains(&from) {
                    if let Some(evicted) = transport.add_address(from) {
                        self.by_addr.remove(&evicted);
                        self.counters.drop(DropReason::AddressEvicted);
                    }
                    self.by_addr.insert(from, id);
                }
            }
            Ok(StunOutcome::RoleConflict { response_len }) => send(out, &mut self.counters, from, response_len),
            Ok(StunOutcome::UnknownAttributes { response_len }) => {
                send(out, &mut self.counters, from, response_len);
                self.counters.drop(DropReason::StunUnknownAttribute);
            }
            Ok(StunOutcome::Keepalive) => {}
            Err(IceError::UnknownUfrag) => self.counters.drop(DropReason::StunUnknownUfrag),
            Err(IceError::BadIntegrity | IceError::BadFingerprint) => self.counters.drop(DropReason::StunBadIntegrity),
            Err(_) => self.counters.drop(DropReason::Malformed),
        }
    }

    /// The transport that owns validated address `from`, or a counted drop.
    fn validated(&mut self, from: SocketAddr) -> Option<TransportId> {
        let id = self.by_addr.get(&from).copied();
        if id.is_none() {
            self.counters.drop(DropReason::UnknownSource);
        }
        id
    }

    fn handle_dtls(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if self.validated(from).is_none() {
            return;
        }
        if self.handshake_backlog.len() < self.config.handshake_backlog {
            self.handshake_backlog.push_back((from, now, datagram.to_vec()));
        } else {
            self.counters.drop(DropReason::HandshakeBacklog);
        }
    }

    fn run_dtls(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], out: &mut impl Outbox) {
        // The transport may have gone while the datagram waited in the backlog.
        let Some(&id) = self.by_addr.get(&from) else { return };
        let Some(transport) = lookup(&mut self.transports, id) else { return };
        let Link::Webrtc { dtls, last_dtls_source, .. } = &mut transport.link else {
            self.counters.drop(DropReason::Dtls);
            return;
        };
        *last_dtls_source = Some(from);
        if let Err(e) = dtls.handle_packet(now, datagram) {
            self.counters.drop(DropReason::Dtls);
            if !e.is_fatal() {
                return;
            }
        }
        if let Some(reason) = drain_dtls(id, transport, &mut self.dtls_out, out, (&mut self.events, &mut self.counters))
        {
            self.remove_transport(id, reason);
        }
    }

    /// Decrypts a media datagram in place with the keys of the transport that owns `from`:
    /// the transport and the plaintext length, or a counted drop.
    fn unprotect(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
        unprotect: fn(&mut SrtpSession, &mut [u8]) -> Result<usize, SrtpError>,
    ) -> Option<(TransportId, usize)> {
        let id = self.validated(from)?;
        let transport = lookup(&mut self.transports, id)?;
        let result = match transport.media_keys() {
            Some(Some(srtp)) => unprotect(srtp, datagram),
            Some(None) => Ok(datagram.len()),
            None => {
                self.counters.drop(DropReason::NotConnected);
                return None;
            }
        };
        match result {
            Ok(len) => Some((id, len)),
            Err(e) => {
                self.counters.drop(srtp_drop_reason(e));
                None
            }
        }
    }

    fn handle_rtp(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8], out: &mut impl Outbox) {
        let Some((id, len)) = self.unprotect(from, datagram, SrtpSession::unprotect_rtp) else { return };
        let plaintext = &datagram[..len];
        let Ok(packet) = RtpPacket::new_checked(plaintext) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        let producer = match self.router.producer_for(id, packet.ssrc()) {
            Some(producer) => Some(producer),
            None => self.router.bind_layer(id, &packet).inspect(|_| {
                self.counters.media(MediaStat::LayersBound);
                if let Some(publisher) = lookup(&mut self.transports, id) {
                    publisher.add_video_ssrc(packet.ssrc());
                }
            }),
        };
        // Every packet that arrived counts for the publisher's estimate, whatever it carries
        // (its probes come as padding on streams the SFU does not forward).
        if let Some(publisher) = lookup(&mut self.transports, id)
            && let Some(feedback) = publisher.feedback.as_deref_mut()
            && let Some(seq) = packet.transport_sequence_number(feedback.0)
        {
            if producer.is_some() {
                // Browsers take feedback only when it names one of their streams.
                feedback.1.name_media(packet.ssrc());
            }
            let resets = feedback.1.counters().resets;
            feedback.1.record(now, seq);
            if feedback.1.counters().resets > resets {
                self.counters.media(MediaStat::FeedbackIgnored);
            }
        }
        let Some(producer) = producer else {
            self.counters.drop(DropReason::UnknownSsrc);
            return;
        };
        self.forward(now, producer, &packet, out);
        self.relay_packet(producer, plaintext);
    }

    /// Sends a decrypted packet of `producer` to each of its consumers on this worker.
    fn forward(&mut self, now: Instant, producer: ProducerId, packet: &RtpPacket<&[u8]>, out: &mut impl Outbox) {
        let transports = &mut self.transports;
        let counters = &mut self.counters;
        let template = &mut self.copy_template;
        template.reset();
        self.next_receiver_reports.get_or_insert(now + RECEIVER_REPORT_INTERVAL);
        let started = self.router.fan_out(now, producer, packet, |_, consumer_transport, rewritten| {
            let Some(subscriber) = lookup(transports, consumer_transport) else { return };
            send_rtp(subscriber, now, (packet, Some(&mut *template)), rewritten, out, counters);
        });
        if let Some((extension_id, group)) = self.router.speech_of(producer)
            && let Some(value) = packet.extension(extension_id)
        {
            match AudioLevel::parse(value) {
                Ok(level) => {
                    let detector = self.speakers.entry(group).or_insert_with(|| (DominantSpeaker::new(), None));
                    detector.0.record(now, producer, level);
                }
                Err(_) => self.counters.media(MediaStat::BadAudioLevels),
            }
        }
        if started {
            self.events.push(EngineEvent::ProducerStarted(producer));
            // A simulcast layer that starts may be some subscriber's better choice.
            self.review_layers(now, None);
        }
    }

    fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8], out: &mut impl Outbox) {
        let Some((id, len)) = self.unprotect(from, datagram, SrtpSession::unprotect_rtcp) else { return };
        let Ok(compound) = RtcpCompound::new_checked(&datagram[..len]) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        for packet in compound.packets() {
            match packet {
                RtcpPacket::Pli(pli) => self.forward_keyframe_request(now, id, pli.media_ssrc(), out),
                RtcpPacket::Fir(fir) => {
                    for entry in fir.entries() {
                        self.forward_keyframe_request(now, id, entry.ssrc, out);
                    }
                }
                RtcpPacket::TransportFeedback(feedback) => {
                    if let Some(bwe) = lookup(&mut self.transports, id).and_then(|t| t.bwe.as_deref_mut()) {
                        let ignored = |c: EstimatorCounters| c.absurd_reference_time + c.absurd_sequence;
                        let before = ignored(bwe.estimator.counters());
                        bwe.estimator.on_feedback(now, &feedback, &mut bwe.history);
                        self.counters.media(MediaStat::FeedbackReceived);
                        self.counters.media[MediaStat::FeedbackIgnored.index()] +=
                            ignored(bwe.estimator.counters()) - before;
                    }
                }
                RtcpPacket::Nack(nack) => {
                    for lost in nack.lost_sequence_numbers() {
                        self.retransmit(now, id, nack.media_ssrc(), lost, out);
                    }
                }
                RtcpPacket::SenderReport(report) => {
                    let transports = &mut self.transports;
                    let counters = &mut self.counters;
                    self.router.sender_report(now, id, report.info(), |subscriber, info| {
                        if let Some(subscriber) = lookup(transports, subscriber) {
                            send_rtcp(subscriber, out, counters, |slot| write_sender_report(slot, &info, &[]));
                        }
                    });
                    self.relay_sender_report(id, report.info());
                }
                _ => {}
            }
        }
    }

    /// A subscriber on `id` asked for a keyframe of its stream `media_ssrc`: a PLI to the
    /// publisher (through the origin worker for an imported producer), at most one per
    /// producer per the configured interval.
    fn forward_keyframe_request(&mut self, now: Instant, id: TransportId, media_ssrc: u32, out: &mut impl Outbox) {
        if let Some(request) = self.router.keyframe_request(now, id, media_ssrc) {
            self.send_keyframe_request(request, out);
        }
    }

    /// Sends the publisher a PLI for the stream `request` names, or passes the request to
    /// the origin worker of an imported stream.
    fn send_keyframe_request(&mut self, request: KeyframeRequest, out: &mut impl Outbox) {
        match request {
            KeyframeRequest::Publisher { transport, media_ssrc } => {
                let Some(publisher) = lookup(&mut self.transports, transport) else { return };
                send_rtcp(publisher, out, &mut self.counters, |slot| write_pli(slot, ENGINE_SSRC, media_ssrc));
            }
            KeyframeRequest::Origin(source) => self.request_keyframe_from_origin(source),
        }
    }

    /// A receiver report to every publisher about each stream it sends.
    fn send_receiver_reports(&mut self, now: Instant, out: &mut impl Outbox) {
        let transports = &mut self.transports;
        let counters = &mut self.counters;
        self.router.receiver_reports(now, |publisher, block| {
            if let Some(publisher) = lookup(transports, publisher) {
                send_rtcp(publisher, out, counters, |slot| write_receiver_report(slot, ENGINE_SSRC, &[block]));
            }
        });
        for (_, publisher) in transports.iter_mut().filter(|(_, t)| !t.video_ssrcs.is_empty()) {
            let Some(cap) = publisher.bitrate_cap else { continue };
            let ssrcs = std::mem::take(&mut publisher.video_ssrcs);
            send_rtcp(publisher, out, counters, |slot| write_remb(slot, ENGINE_SSRC, u64::from(cap), &ssrcs));
            publisher.video_ssrcs = ssrcs;
        }
    }

    /// Asks the far ends of node links for the packets of their streams that did not arrive
    /// here.
    fn send_nacks(&mut self, now: Instant, out: &mut impl Outbox) {
        let transports = &mut self.transports;
        let counters = &mut self.counters;
        self.router.nacks(now, |publisher, media_ssrc, lost| {
            if let Some(link) = lookup(transports, publisher) {
                send_rtcp(link, out, counters, |slot| write_nack(slot, ENGINE_SSRC, media_ssrc, lost));
            }
        });
    }

    /// Reports each followed room whose dominant speaker changed, and forgets rooms whose
    /// streams all went.
    fn poll_speakers(&mut self, now: Instant) {
        let router = &self.router;
        for (&group, (detector, publisher)) in &mut self.speakers {
            if detector.poll_timeout().is_none_or(|due| due > now) {
                continue;
            }
            // Streams that ended, or whose producer slot another stream took, are forgotten.
            detector.retain(|producer| router.speech_of(producer).is_some_and(|(_, g)| g == group));
            if let Some(producer) = detector.poll(now) {
                *publisher = router.publisher_of(producer);
                self.events.push(EngineEvent::DominantSpeaker { group, producer });
            }
        }
        self.speakers.retain(|_, (detector, _)| !detector.is_empty());
    }

    /// Runs the subscriber on `id`'s congestion control when due: its estimator's timers, a
    /// new sharing of its estimate among its streams, and the probe clusters due.
    fn run_congestion_control(&mut self, now: Instant, id: TransportId, out: &mut impl Outbox) {
        let Some(transport) = lookup(&mut self.transports, id) else { return };
        let Some(bwe) = transport.bwe.as_deref_mut() else { return };
        if bwe.estimator.poll_timeout().is_some_and(|due| due <= now) {
            bwe.estimator.handle_timeout(now, &bwe.history);
        }
        if bwe.next_allocation <= now {
            bwe.next_allocation = now + congestion::ALLOCATION_INTERVAL;
            let estimate = bwe.estimator.estimate();
            let wanted = &mut self.keyframes_wanted;
            let mut speaking = [TransportId(u32::MAX); MAX_PRIORITIZED];
            for (slot, publisher) in speaking.iter_mut().zip(self.speakers.values().filter_map(|(_, p)| *p)) {
                *slot = publisher;
            }
            let allocation =
                self.router.allocate(now, id, estimate, &speaking, |producer| want_keyframe(wanted, producer));
            if let Some(more) = allocation.wanted_bps {
                bwe.probes.request(more);
            }
            bwe.allocation = allocation;
        }
        // Probe packets due now, paced over their cluster's duration (bounded per call: a
        // late timer does not turn into a burst).
        // Only a subscriber with a stream to pad and an address is probed: a number taken for
        // a packet that never leaves would read as lost.
        let Some(destination) = transport.destination() else { return };
        if !self.router.has_padding_stream(id) {
            return;
        }
        for _ in 0..MAX_PROBE_PACKETS_PER_TURN {
            let Some(bwe) = transport.bwe.as_deref_mut() else { return };
            let Some((cluster, padding)) = bwe.next_probe_packet(now) else { return };
            let Some(stream) = self.router.padding_stream(id) else { return };
            let size = padding + congestion::PADDING_PACKET_OVERHEAD;
            let (extension_id, number) = (bwe.extension_id, bwe.history.on_send(now, size, Some(cluster.id)));
            let slot = out.slot();
            let Ok(len) = congestion::write_padding(slot, stream, (extension_id, number), padding) else { return };
            if let Some(protected) = transport.protect_rtp(slot, len) {
                self.counters.media(MediaStat::ProbePackets);
                commit_protected(out, destination, protected, &mut self.counters);
            }
        }
    }

    /// Resends a packet a subscriber on `id` reported lost, from the producer's cache: as
    /// RTX when the subscriber negotiated it, else the original packet.
    ///
    /// A node link's consumer is answered the second way: the control plane negotiates no
    /// RTX on a link, so the far end's producer takes the resent packet as the late original
    /// it is, under the number its NACK named, and needs no RTX stream to map and unwrap.
    /// Resending it under SRTP is safe as it is for a browser: the same cached bytes
    /// rewritten the same way give the same plaintext under the same index, hence the same
    /// ciphertext (no GCM nonce is used for two different plaintexts); the far end, which
    /// never accepted that index, takes it, and a copy that crossed a repair it did not
    /// need is dropped there as a replay.
    fn retransmit(&mut self, now: Instant, id: TransportId, media_ssrc: u32, lost: u16, out: &mut impl Outbox) {
        let Some(resend) = self.router.retransmission(now, id, media_ssrc, lost) else { return };
        let Some(subscriber) = lookup(&mut self.transports, id) else { return };
        // Cached packets were checked when they arrived.
        match resend {
            Resend::Original { packet, rewritten } => {
                let Ok(packet) = RtpPacket::new_checked(packet) else { return };
                send_rtp(subscriber, now, (&packet, None), rewritten, out, &mut self.counters);
            }
            Resend::Rtx { packet, rewritten, rtx, rtx_sequence_number } => {
                let Ok(packet) = RtpPacket::new_checked(packet) else { return };
                send_rtx(subscriber, now, &packet, rewritten, (rtx, rtx_sequence_number), out, &mut self.counters);
            }
        }
    }
}

/// One subscriber's congestion control, as [`Engine::congestion_report`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberReport {
    pub transport: TransportId,
    pub estimate_bps: u64,
    pub allocation: Allocation,
    /// What its feedback came to, and what of it was ignored.
    pub feedback: EstimatorCounters,
    /// Its simulcast streams by the SSRC it receives them as.
    pub streams: Vec<(u32, LayerState)>,
}

/// Probe packets one subscriber is sent per timeout pass at most.
const MAX_PROBE_PACKETS_PER_TURN: usize = 8;

/// Dominant speakers whose video a subscriber's allocation puts first, at most (a worker
/// serves few rooms to one subscriber).
const MAX_PRIORITIZED: usize = 8;

/// Bytes a packet grows by on the wire beyond its plaintext, for the send history's sizes
/// (the SRTP tag; UDP and IP headers are the same for every packet and left out).
const SRTP_TAG_LEN: usize = 16;

/// Copies `source` into `slot` with its header extensions renumbered for the subscriber
/// (`map`) and, when the subscriber's congestion control numbers its packets, the next
/// transport-wide sequence number added (the copy may then be a few bytes longer), from
/// `template` when given (the packet forwarded to every subscriber); returns the copy's
/// length, room left for SRTP's tag.
fn copy_for(
    subscriber: &mut Transport,
    now: Instant,
    (source, template): (&RtpPacket<&[u8]>, Option<&mut CopyTemplate>),
    slot: &mut [u8],
    map: &ExtensionIdMap,
) -> Option<usize> {
    let room = slot.len().checked_sub(MAX_SRTP_OVERHEAD)?;
    match subscriber.bwe.as_deref_mut() {
        Some(bwe) => {
            let size = source.as_bytes().len() + SRTP_TAG_LEN;
            let number = bwe.history.on_send(now, size, None);
            match template {
                Some(template) => template.copy(source, map, (bwe.extension_id, number), &mut slot[..room]),
                None => {
                    let number = number.to_be_bytes();
                    source.copy_renumbered(&mut slot[..room], map, Some((bwe.extension_id, &number))).ok()
                }
            }
        }
        None => {
            let bytes = source.as_bytes();
            let copy = slot.get_mut(..bytes.len()).filter(|_| bytes.len() <= room)?;
            copy.copy_from_slice(bytes);
            RtpPacket::new_checked(copy).ok()?.remap_extensions(map);
            Some(bytes.len())
        }
    }
}

/// Sends `original` again as an RTX packet (RFC 4588 §4): the original header with the
/// RTX SSRC, payload type and sequence number, then the original sequence number, then the
/// original payload (padding dropped).
fn send_rtx(
    subscriber: &mut Transport,
    now: Instant,
    original: &RtpPacket<&[u8]>,
    rewritten: Rewritten,
    (rtx, rtx_sequence_number): (RtxStream, u16),
    out: &mut impl Outbox,
    counters: &mut WorkerCounters,
) {
    let Some(destination) = subscriber.destination() else { return };
    if !subscriber.is_keyed() {
        return;
    }
    let slot = out.slot();
    let payload = original.payload();
    let extensions = rewritten.format.extensions();
    let Some(copied) = copy_for(subscriber, now, (original, None), &mut slot[..SLOT_SIZE - 2], extensions) else {
        counters.drop(DropReason::Malformed);
        return;
    };
    let header_len = copied - payload.len() - original.padding_len();
    let len = header_len + 2 + payload.len();
    slot.copy_within(header_len..header_len + payload.len(), header_len + 2);
    slot[header_len..header_len + 2].copy_from_slice(&rewritten.sequence_number.to_be_bytes());
    // The padding bit: RTX carries no padding.
    slot[0] &= !0x20;
    let Ok(mut header) = RtpPacket::new_checked(&mut slot[..len]) else { return };
    if header.set_payload_type(rtx.payload_type).is_err() {
        return;
    }
    header.set_ssrc(rtx.ssrc);
    header.set_sequence_number(rtx_sequence_number);
    header.set_timestamp(rewritten.timestamp);
    if let Some(ids) = rewritten.picture_ids {
        // The payload descriptor follows the original sequence number.
        ids.write(&mut slot[header_len + 2..len]);
    }
    if let Some(protected) = subscriber.protect_rtp(slot, len) {
        commit_protected(out, destination, protected, counters);
    }
}

/// Copies `packet` into a slot with the consumer's header fields, protects it with the
/// subscriber's keys and queues it.
fn send_rtp(
    subscriber: &mut Transport,
    now: Instant,
    (packet, template): (&RtpPacket<&[u8]>, Option<&mut CopyTemplate>),
    rewritten: Rewritten,
    out: &mut impl Outbox,
    counters: &mut WorkerCounters,
) {
    let Some(destination) = subscriber.destination() else { return };
    if !subscriber.is_keyed() {
        return;
    }
    let slot = out.slot();
    let Some(len) = copy_for(subscriber, now, (packet, template), slot, rewritten.format.extensions()) else {
        counters.drop(DropReason::Malformed);
        return;
    };
    let Ok(mut header) = RtpPacket::new_checked(&mut slot[..len]) else { return };
    if let Some(payload_type) = rewritten.format.payload_type() {
        // Checked when the format was made: only 0..=127 is kept.
        let _ = header.set_payload_type(payload_type);
    }
    header.set_ssrc(rewritten.ssrc);
    header.set_sequence_number(rewritten.sequence_number);
    header.set_timestamp(rewritten.timestamp);
    if let Some(ids) = rewritten.picture_ids {
        let payload = header.payload_range();
        ids.write(&mut slot[payload]);
    }
    if let Some(protected) = subscriber.protect_rtp(slot, len) {
        commit_protected(out, destination, protected, counters);
    }
}

/// Writes an RTCP packet with `write` into a slot, protects it with the client's keys and
/// queues it to the client.
fn send_rtcp(
    client: &mut Transport,
    out: &mut impl Outbox,
    counters: &mut WorkerCounters,
    write: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) {
    let Some(destination) = client.rtcp_destination() else { return };
    if !client.is_keyed() {
        return;
    }
    let slot = out.slot();
    let Ok(len) = write(&mut slot[..SLOT_SIZE - MAX_SRTCP_OVERHEAD]) else { return };
    if let Some(protected) = client.protect_rtcp(slot, len) {
        commit_protected(out, destination, protected, counters);
    }
}

/// Asks `producer`'s publisher for a key frame at the next turn's start, once however many
/// consumers want one.
fn want_keyframe(wanted: &mut Vec<ProducerId>, producer: ProducerId) {
    if !wanted.contains(&producer) {
        wanted.push(producer);
    }
}

/// Copies a packet written elsewhere into `slot`.
fn copy_into(slot: &mut [u8], packet: &[u8]) -> Result<usize, WireError> {
    slot.get_mut(..packet.len()).ok_or(WireError::BufferTooSmall)?.copy_from_slice(packet);
    Ok(packet.len())
}

/// Queues what DTLS has to send and takes its keys; the close reason when it ended.
fn drain_dtls(
    id: TransportId,
    transport: &mut Transport,
    buf: &mut [u8],
    out: &mut impl Outbox,
    (events, counters): (&mut Vec<EngineEvent>, &mut WorkerCounters),
) -> Option<CloseReason> {
    let destination = transport.destination();
    let Link::Webrtc { dtls, srtp, last_dtls_source, .. } = &mut transport.link else { return None };
    loop {
        match dtls.poll_output(buf)? {
            DtlsOutput::Transmit(bytes) => {
                if let Some(destination) = last_dtls_source.or(destination) {
                    let slot = out.slot();
                    let len = bytes.len().min(slot.len());
                    slot[..len].copy_from_slice(&bytes[..len]);
                    send(out, counters, destination, len);
                }
            }
            DtlsOutput::Connected { keys, .. } => match SrtpSession::new(&keys) {
                Ok(session) => {
                    *srtp = Some(session);
                    transport.connect_deadline = None;
                    events.push(EngineEvent::TransportConnected(id));
                }
                Err(_) => return Some(CloseReason::SrtpSetupFailed),
            },
            DtlsOutput::Failed(e) => return Some(CloseReason::DtlsFailed(e)),
            DtlsOutput::Closed => return Some(CloseReason::DtlsClosed),
        }
    }
}

/// Queues the slot just protected, or counts why protecting it failed.
fn commit_protected(
    out: &mut impl Outbox,
    destination: SocketAddr,
    protected: Result<usize, SrtpError>,
    counters: &mut WorkerCounters,
) {
    match protected {
        Ok(len) => send(out, counters, destination, len),
        Err(e) => counters.drop(srtp_drop_reason(e)),
    }
}

/// Queues the first `len` bytes of the slot last taken, to `destination`, and counts them:
/// the one place where what the engine sends is counted, so that no kind of datagram
/// (STUN answers, DTLS flights, media, RTCP) is left out or counted twice.
fn send(out: &mut impl Outbox, counters: &mut WorkerCounters, destination: SocketAddr, len: usize) {
    out.commit(destination, len);
    counters.packets_out += 1;
    counters.bytes_out += len as u64;
}

fn srtp_drop_reason(error: SrtpError) -> DropReason {
    match error {
        SrtpError::AuthFailed => DropReason::SrtpAuth,
        SrtpError::Replayed | SrtpError::TooOld => DropReason::SrtpReplay,
        _ => DropReason::Malformed,
    }
}
