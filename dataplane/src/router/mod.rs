//! Routing inside one worker: which producer an incoming stream feeds, which consumers
//! receive it, which other workers it is relayed to, and how each consumer's stream is
//! numbered. The router decides; it never touches packet bytes beyond keeping copies for
//! retransmission, and never does I/O.
//!
//! A producer is fed either by a publisher on one of this worker's transports, or by
//! another worker over a relay link (an *imported* producer, named by its [`RelaySource`]).
//! Consumers, rewriting, retransmission and keyframe throttling are the same for both;
//! only where a keyframe request goes differs ([`KeyframeRequest`]). A publisher's producer
//! may be *exported* to other workers ([`Export`]); an imported one is relayed no further.
//!
//! Rules for the engine that drives it: look the producer up with
//! [`Router::producer_for`] (or [`Router::producer_for_relay`]), then call
//! [`Router::fan_out`] with the decrypted packet; for each consumer it reports, copy the
//! packet, apply the [`Rewritten`] header fields, protect and queue; then relay it to each
//! of [`Router::exports`]. RTCP feedback from a subscriber names the consumer's SSRC; the
//! router turns it into a (throttled) keyframe request or retransmissions for the producer.
//! A producer whose stream crosses a lossy link to this node ([`Router::repair_losses`])
//! has its gaps NACKed upstream: call [`Router::nacks`] when [`Router::nack_timeout`] is due.
//! Exports that end (their producer went, or were withdrawn) are collected until the engine
//! takes them with [`Router::drain_ended_exports`] to tell their destinations.
#![forbid(unsafe_code)]

mod demand;
pub mod nack;
pub mod reception;
pub mod rewrite;
pub mod rtx_cache;
pub mod simulcast;
mod skips;
pub mod temporal;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use slab::Slab;

use self::demand::DemandWatch;
pub use self::nack::NackGenerator;
pub use self::reception::ReceptionStats;
pub use self::rewrite::{ConsumerFormat, OutputPosition, RewriteRefusal, Rewritten, StreamRewriter, seq_is_newer};
pub use self::rtx_cache::RetransmissionCache;
use self::simulcast::RidBinding;
pub use self::simulcast::{LayerDecision, Layers, MAX_LAYERS, Rid};
use crate::relay::{RelayStreamId, WorkerIndex};
use crate::wire::rtcp::{ReportBlock, SenderInfo};
use crate::wire::rtp::RtpPacket;
use crate::wire::video::{TemporalId, VideoFormat, Vp8PictureIds, Vp8Temporal};

/// A transport (one client connection) of this worker. The engine makes it of the
/// transport's slot and a generation, so an id is not given to another transport soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransportId(pub u32);

/// A stream published into this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerId(pub u32);

/// One subscriber's copy of a producer's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u32);

/// What a stream carries: the one media kind every crate names streams by (an SDP section
/// may also be a data channel: the control plane's `SectionKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        })
    }
}

/// What the router needs to know about a published stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSpec {
    pub transport: TransportId,
    pub ssrc: u32,
    pub kind: MediaKind,
    pub clock_rate: u32,
}

/// Tuning of the router's feedback handling.
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    /// At most one keyframe request per producer per this interval.
    pub keyframe_request_interval: Duration,
    /// Retransmission cache per video producer (packets); audio keeps none.
    pub video_cache_packets: usize,
    /// How long a cached packet may still be retransmitted.
    pub cache_max_age: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            keyframe_request_interval: Duration::from_millis(500),
            video_cache_packets: 512,
            cache_max_age: Duration::from_millis(1000),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum RouterError {
    #[error("no such producer")]
    UnknownProducer,
    #[error("no such consumer")]
    UnknownConsumer,
    #[error("the stream is already published on this transport")]
    DuplicateSource,
    #[error("the consumer SSRC is already used on this transport")]
    DuplicateConsumerSsrc,
    #[error("an imported producer is not relayed any further")]
    NotLocal,
    #[error("a rid is 1 to 16 letters, digits, '-' or '_'")]
    InvalidRid,
    #[error("simulcast layers are 1 to 4 video producers, the consumer's own among them")]
    InvalidLayers,
}

/// Where an imported producer's packets come from: the origin worker and the id it gave
/// the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelaySource {
    pub worker: WorkerIndex,
    pub stream: RelayStreamId,
}

/// A worker a producer is relayed to, and the id of that relayed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    pub to: WorkerIndex,
    pub stream: RelayStreamId,
}

/// What feeds a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A publisher on this transport, sending as the producer's SSRC.
    Publisher(TransportId),
    Relay(RelaySource),
}

#[derive(Debug)]
struct Producer {
    origin: Origin,
    /// The SSRC the producer's packets carry: given for a publisher's, taken from each
    /// packet for an imported one (the import does not name it).
    ssrc: u32,
    kind: MediaKind,
    clock_rate: u32,
    consumers: Vec<ConsumerId>,
    cache: Option<RetransmissionCache>,
    last_keyframe_request: Option<Instant>,
    reception: ReceptionStats,
    /// The gaps to NACK to its publisher, for a stream that comes over a node link.
    repair: Option<NackGenerator>,
    exports: Vec<Export>,
    /// When its last packet arrived, and whether its packets count as flowing (none yet, or
    /// none for a stall timeout: not flowing).
    last_packet: Option<Instant>,
    flowing: bool,
    /// Consumers waiting for this producer's next key frame to switch to it (simulcast).
    awaiting: Vec<ConsumerId>,
    /// What it receives, for allocating subscribers' bandwidth among streams.
    bitrate: BitrateMeter,
    /// What it receives per temporal layer, for a VP8 simulcast layer (set by
    /// [`Router::set_layers`]): packets without a TID are not counted.
    temporal_bitrate: Option<TemporalBitrates>,
    /// For an audio stream whose speech is followed: the header extension its RFC 6464
    /// audio level comes under, and the room (speaker group) it speaks in.
    speech: Option<(u8, SpeakerGroup)>,
    /// Whether the control plane follows its demand, and (during a refresh) whether some
    /// consumer demands it ([`Router::refresh_demand`]).
    demand_watch: DemandWatch,
    demanded: bool,
}

/// A room whose dominant speaker the worker follows, as the control plane numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpeakerGroup(pub u32);

/// A stream's bitrate, measured over windows of [`BITRATE_WINDOW`] and smoothed across them
/// (a key frame's burst in one window must not look like the stream's rate, or a subscriber
/// whose estimate just carries the layer would be moved down at every key frame).
#[derive(Debug, Default, Clone, Copy)]
struct BitrateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    bps: Option<u64>,
}

/// How long a bitrate is measured over: long enough to take in a few frames.
const BITRATE_WINDOW: Duration = Duration::from_millis(500);

/// The weight of the newest window in the smoothed rate: about the last two seconds count.
const BITRATE_SMOOTHING: f64 = 0.25;

impl BitrateMeter {
    fn record(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        self.bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= BITRATE_WINDOW {
            let measured = (self.bytes * 8 * 1_000_000 / (elapsed.as_micros() as u64).max(1)) as f64;
            let smoothed = self.bps.map_or(measured, |bps| bps as f64 + BITRATE_SMOOTHING * (measured - bps as f64));
            self.bps = Some(smoothed.max(0.0) as u64);
            self.window_start = Some(now);
            self.bytes = 0;
        }
    }
}

/// A VP8 layer's bitrate per temporal layer: what a subscriber capped at each TID receives.
#[derive(Debug, Default, Clone, Copy)]
struct TemporalBitrates {
    meters: [BitrateMeter; 4],
    /// When each TID's last packet came: a TID the publisher stopped sending does not count.
    last_packet: [Option<Instant>; 4],
}

impl TemporalBitrates {
    fn record(&mut self, now: Instant, tid: TemporalId, bytes: usize) {
        let tid = usize::from(tid.get());
        self.meters[tid].record(now, bytes);
        self.last_packet[tid] = Some(now);
    }

    /// The bitrate of TIDs 0..=t together, for each TID measured and sending, from 0 up to
    /// the first that is not; with how many there are.
    fn cumulative(&self, now: Instant) -> ([u64; 4], usize) {
        let mut rates = [0; 4];
        let mut sum = 0;
        for tid in 0..rates.len() {
            let Some(bps) = self.meters[tid].bps.filter(|_| simulcast::sends(self.last_packet[tid], now)) else {
                return (rates, tid);
            };
            sum += bps;
            rates[tid] = sum;
        }
        (rates, rates.len())
    }
}

#[derive(Debug)]
struct Consumer {
    producer: ProducerId,
    transport: TransportId,
    rewriter: StreamRewriter,
    paused: bool,
    /// Packets and payload-and-header octets forwarded, for this consumer's sender reports.
    packets_sent: u32,
    octets_sent: u32,
    /// The RTX stream negotiated with the subscriber (RFC 4588).
    rtx: Option<RtxStream>,
    /// The RTX stream's next sequence number.
    rtx_next: u16,
    /// The simulcast layers it chooses among, when its stream has them.
    layers: Option<Box<Layers>>,
}

/// An RTX stream (RFC 4588) a subscriber negotiated for a consumer: retransmissions go on
/// their own SSRC and payload type, in their own sequence number space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxStream {
    pub ssrc: u32,
    pub payload_type: u8,
}

/// How to resend a packet a subscriber reported lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend<'a> {
    /// The original packet, with the consumer's header fields (no RTX negotiated).
    Original { packet: &'a [u8], rewritten: Rewritten },
    /// An RTX packet: the original payload behind the original sequence number (OSN) in
    /// `rewritten`, sent as `rtx` with sequence number `rtx_sequence_number`.
    Rtx { packet: &'a [u8], rewritten: Rewritten, rtx: RtxStream, rtx_sequence_number: u16 },
}

/// A keyframe request for a producer, to send where its packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeRequest {
    /// RTCP PLI for `media_ssrc` to the publisher on `transport`.
    Publisher { transport: TransportId, media_ssrc: u32 },
    /// The producer is imported: ask its origin worker, which asks the publisher.
    Origin(RelaySource),
}

/// The producers and consumers of one worker.
#[derive(Debug, Default)]
pub struct Router {
    config: RouterConfig,
    producers: Slab<Producer>,
    consumers: Slab<Consumer>,
    by_source: HashMap<(TransportId, u32), ProducerId>,
    by_relay: HashMap<RelaySource, ProducerId>,
    by_export: HashMap<RelayStreamId, ProducerId>,
    by_consumer_ssrc: HashMap<(TransportId, u32), ConsumerId>,
    /// The id the next export gets; ids are never reused.
    next_stream: u64,
    /// Exports that ended since the engine last took them.
    ended_exports: Vec<Export>,
    /// When some producer's NACKs are next due (a loss noticed, a retry): kept here so that
    /// the engine's every turn need not ask each producer.
    nacks_due: Option<Instant>,
    /// Where ended consumers' streams stood, by the transport and SSRC they were sent on, with
    /// their RTX stream's next sequence number: a new consumer on that SSRC goes on from there
    /// (a WHEP player whose publisher came back). Dropped with the transport.
    ended_streams: HashMap<(TransportId, u32), (OutputPosition, u16)>,
    /// Publishers' layers named by rid, bound to an SSRC or not yet.
    rid_bindings: Vec<RidBinding>,
    /// Consumers that switched layer during a fan-out, with the producer they left: taken
    /// off its list once the fan-out no longer holds the producers.
    switched_from: Vec<(ProducerId, ConsumerId)>,
    /// The consumers each subscriber's transport receives, for allocating its bandwidth.
    receiving: HashMap<TransportId, Vec<ConsumerId>>,
    /// Consumers switched to another simulcast layer, since the router was made.
    layer_switches: u64,
    /// Consumers changed since demand was last computed ([`Router::refresh_demand`]).
    demand_stale: bool,
    /// Simulcast subscribers moved down for asking too many key frames, since it was made.
    loss_downgrades: u64,
    /// Changes of the highest VP8 temporal layer a consumer is sent, since the router was made.
    temporal_switches: u64,
}

/// Where one subscriber stands among a simulcast stream's layers (0 = lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerState {
    pub current: usize,
    /// The layer a switch waits for a key frame of.
    pub pending: Option<usize>,
    /// The highest layer the subscriber wants, and the highest its link carries.
    pub cap: usize,
    pub budget: usize,
    /// How many layers the stream has.
    pub layers: usize,
    /// Whether the subscriber pinned it: its bandwidth goes to it first.
    pub pinned: bool,
    /// The highest VP8 temporal layer (TID) it may be sent of the current layer: the lower
    /// of its limit and what its link carries; [`TemporalId::MAX`] when nothing is held back.
    pub temporal_cap: TemporalId,
    /// The highest TID it is sent now: down to the cap at the next picture, up to it one
    /// layer at a time at the stream's layer sync points.
    pub temporal_layer: TemporalId,
}

/// What one allocation of a subscriber's bandwidth came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocation {
    /// The bitrate of the streams as allocated.
    pub allocated_bps: u64,
    /// The estimate a layer that did not fit would need (for a probe to look for).
    pub wanted_bps: Option<u64>,
}

/// At most this many ended streams are remembered for continuity (a few dozen bytes each).
const MAX_ENDED_STREAMS: usize = 4096;

fn slab_key<T: From<u32>>(key: usize) -> T {
    // Slabs here never hold 2^32 entries: transports and streams are bounded far below.
    T::from(u32::try_from(key).unwrap_or(u32::MAX))
}

impl From<u32> for ProducerId {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

impl From<u32> for ConsumerId {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        Self { config, ..Self::default() }
    }

    fn insert_producer(&mut self, origin: Origin, ssrc: u32, kind: MediaKind, clock_rate: u32) -> ProducerId {
        let cache = (kind == MediaKind::Video && self.config.video_cache_packets > 0)
            .then(|| RetransmissionCache::new(self.config.video_cache_packets, self.config.cache_max_age));
        slab_key(self.producers.insert(Producer {
            origin,
            ssrc,
            kind,
            clock_rate,
            consumers: Vec::new(),
            cache,
            last_keyframe_request: None,
            reception: ReceptionStats::default(),
            repair: None,
            exports: Vec::new(),
            last_packet: None,
            flowing: false,
            awaiting: Vec::new(),
            bitrate: BitrateMeter::default(),
            temporal_bitrate: None,
            speech: None,
            demand_watch: DemandWatch::Unwatched,
            demanded: false,
        }))
    }

    /// Registers a stream that `spec.transport` publishes as `spec.ssrc`.
    pub fn add_producer(&mut self, spec: ProducerSpec) -> Result<ProducerId, RouterError> {
        if self.by_source.contains_key(&(spec.transport, spec.ssrc)) {
            return Err(RouterError::DuplicateSource);
        }
        let id = self.insert_producer(Origin::Publisher(spec.transport), spec.ssrc, spec.kind, spec.clock_rate);
        self.by_source.insert((spec.transport, spec.ssrc), id);
        Ok(id)
    }

    /// Registers a simulcast layer that `transport` publishes without naming its SSRC: the
    /// packets whose header extension `extension_id` (RtpStreamId, RFC 8852) holds `rid`
    /// feed it, bound by [`Router::bind_layer`].
    pub fn add_layer_producer(
        &mut self,
        transport: TransportId,
        (extension_id, rid): (u8, Rid),
        kind: MediaKind,
        clock_rate: u32,
    ) -> Result<ProducerId, RouterError> {
        let taken = |b: &RidBinding| b.transport == transport && b.extension_id == extension_id && b.rid == rid;
        if self.rid_bindings.iter().any(taken) {
            return Err(RouterError::DuplicateSource);
        }
        let producer = self.insert_producer(Origin::Publisher(transport), 0, kind, clock_rate);
        self.rid_bindings.push(RidBinding { transport, extension_id, rid, producer });
        Ok(producer)
    }

    /// The layer a packet from `transport` with an SSRC no producer has belongs to, by the
    /// rid it carries; from now on that SSRC feeds it (a layer whose publisher changed its
    /// SSRC moves to the new one). `None` when the packet names no layer of `transport`.
    pub fn bind_layer(&mut self, transport: TransportId, packet: &RtpPacket<&[u8]>) -> Option<ProducerId> {
        let binding = self
            .rid_bindings
            .iter()
            .find(|b| b.transport == transport && packet.extension(b.extension_id) == Some(b.rid.as_bytes()))?;
        let id = binding.producer;
        let p = self.producers.get_mut(id.0 as usize)?;
        if self.by_source.get(&(transport, p.ssrc)) == Some(&id) {
            self.by_source.remove(&(transport, p.ssrc));
        }
        p.ssrc = packet.ssrc();
        self.by_source.insert((transport, p.ssrc), id);
        Some(id)
    }

    /// Registers a producer fed by the relayed stream `source`; the one already fed by it
    /// when there is one (an import is idempotent).
    pub fn import_producer(&mut self, source: RelaySource, kind: MediaKind, clock_rate: u32) -> ProducerId {
        if let Some(&id) = self.by_relay.get(&source) {
            return id;
        }
        let id = self.insert_producer(Origin::Relay(source), 0, kind, clock_rate);
        self.by_relay.insert(source, id);
        id
    }

    /// Relays `producer` to worker `to` from now on: the id of that relayed stream, the
    /// same one again when it is relayed there already.
    pub fn export(&mut self, producer: ProducerId, to: WorkerIndex) -> Result<RelayStreamId, RouterError> {
        let p = self.producers.get_mut(producer.0 as usize).ok_or(RouterError::UnknownProducer)?;
        if !matches!(p.origin, Origin::Publisher(_)) {
            return Err(RouterError::NotLocal);
        }
        if let Some(export) = p.exports.iter().find(|e| e.to == to) {
            return Ok(export.stream);
        }
        let stream = RelayStreamId(self.next_stream);
        self.next_stream += 1;
        p.exports.push(Export { to, stream });
        self.by_export.insert(stream, producer);
        Ok(stream)
    }

    /// Stops relaying `producer` to worker `to` (nothing to do when it is not); the export
    /// is among the ended ones.
    pub fn unexport(&mut self, producer: ProducerId, to: WorkerIndex) -> Result<(), RouterError> {
        let p = self.producers.get_mut(producer.0 as usize).ok_or(RouterError::UnknownProducer)?;
        if let Some(index) = p.exports.iter().position(|e| e.to == to) {
            let export = p.exports.swap_remove(index);
            self.by_export.remove(&export.stream);
            self.ended_exports.push(export);
        }
        Ok(())
    }

    /// The workers `producer` is relayed to.
    #[inline]
    pub fn exports(&self, producer: ProducerId) -> &[Export] {
        self.producers.get(producer.0 as usize).map_or(&[], |p| &p.exports)
    }

    /// The producer that the export `stream` relays.
    pub fn exported_producer(&self, stream: RelayStreamId) -> Option<ProducerId> {
        self.by_export.get(&stream).copied()
    }

    /// Takes the exports that ended since the last call, whose destinations must be told.
    pub fn drain_ended_exports(&mut self) -> impl Iterator<Item = Export> + '_ {
        self.ended_exports.drain(..)
    }

    /// Removes a producer and every consumer of it; returns those consumers. Its exports
    /// are among the ended ones.
    pub fn remove_producer(&mut self, id: ProducerId) -> Result<Vec<ConsumerId>, RouterError> {
        let producer = self.producers.try_remove(id.0 as usize).ok_or(RouterError::UnknownProducer)?;
        match producer.origin {
            Origin::Publisher(transport) => self.by_source.remove(&(transport, producer.ssrc)),
            Origin::Relay(source) => self.by_relay.remove(&source),
        };
        for export in &producer.exports {
            self.by_export.remove(&export.stream);
        }
        self.ended_exports.extend_from_slice(&producer.exports);
        self.rid_bindings.retain(|b| b.producer != id);
        // A consumer choosing among layers ends with any of them: its layer list must never
        // name a producer slot that another stream may take next.
        let mut ended = producer.consumers;
        ended.extend(
            self.consumers
                .iter()
                .filter(|(_, c)| c.layers.as_ref().is_some_and(|l| l.producers().contains(&id)))
                .map(|(key, _)| slab_key::<ConsumerId>(key)),
        );
        ended.sort_unstable();
        ended.dedup();
        for &consumer in &ended {
            let _ = self.remove_consumer(consumer);
        }
        Ok(ended)
    }

    /// Subscribes `transport` to `producer`, sending it as `output_ssrc`.
    pub fn add_consumer(
        &mut self,
        producer: ProducerId,
        transport: TransportId,
        output_ssrc: u32,
    ) -> Result<ConsumerId, RouterError> {
        let clock_rate = self.producers.get(producer.0 as usize).ok_or(RouterError::UnknownProducer)?.clock_rate;
        if self.by_consumer_ssrc.contains_key(&(transport, output_ssrc)) {
            return Err(RouterError::DuplicateConsumerSsrc);
        }
        let mut consumer = Consumer {
            producer,
            transport,
            rewriter: StreamRewriter::new(output_ssrc, clock_rate),
            paused: false,
            packets_sent: 0,
            octets_sent: 0,
            rtx: None,
            rtx_next: 0,
            layers: None,
        };
        if let Some((position, rtx_next)) = self.ended_streams.remove(&(transport, output_ssrc)) {
            consumer.rewriter.continue_after(position);
            consumer.rtx_next = rtx_next;
        }
        let id: ConsumerId = slab_key(self.consumers.insert(consumer));
        self.by_consumer_ssrc.insert((transport, output_ssrc), id);
        self.receiving.entry(transport).or_default().push(id);
        if let Some(p) = self.producers.get_mut(producer.0 as usize) {
            p.consumers.push(id);
        }
        self.demand_stale = true;
        Ok(id)
    }

    /// Forwards `id`'s packets with the payload type and header extension ids its subscriber
    /// negotiated.
    pub fn set_format(&mut self, id: ConsumerId, format: ConsumerFormat) -> Result<(), RouterError> {
        let consumer = self.consumers.get_mut(id.0 as usize).ok_or(RouterError::UnknownConsumer)?;
        consumer.rewriter.set_format(format);
        Ok(())
    }

    /// The consumer the client on `transport` receives as `ssrc`.
    pub fn consumer_of(&self, transport: TransportId, ssrc: u32) -> Option<ConsumerId> {
        self.by_consumer_ssrc.get(&(transport, ssrc)).copied()
    }

    pub fn remove_consumer(&mut self, id: ConsumerId) -> Result<(), RouterError> {
        let consumer = self.consumers.try_remove(id.0 as usize).ok_or(RouterError::UnknownConsumer)?;
        self.consumer_ended(&consumer);
        self.demand_stale = true;
        if let Some(p) = self.producers.get_mut(consumer.producer.0 as usize) {
            p.consumers.retain(|&c| c != id);
        }
        for layer in consumer.layers.iter().flat_map(|l| l.producers()) {
            if let Some(p) = self.producers.get_mut(layer.0 as usize) {
                p.awaiting.retain(|&c| c != id);
            }
        }
        Ok(())
    }

    /// Forgets a removed consumer's SSRC, and keeps where its stream stood.
    fn consumer_ended(&mut self, consumer: &Consumer) {
        let key = (consumer.transport, consumer.rewriter.output_ssrc());
        if let Some(id) = self.by_consumer_ssrc.remove(&key)
            && let Some(list) = self.receiving.get_mut(&consumer.transport)
        {
            list.retain(|&c| c != id);
            if list.is_empty() {
                self.receiving.remove(&consumer.transport);
            }
        }
        if let Some(position) = consumer.rewriter.position() {
            if self.ended_streams.len() >= MAX_ENDED_STREAMS
                && let Some(&any) = self.ended_streams.keys().next()
            {
                // Bounded memory over a long-lived worker; what goes is some subscriber's
                // continuity on an SSRC it is unlikely to be sent again.
                self.ended_streams.remove(&any);
            }
            self.ended_streams.insert(key, (position, consumer.rtx_next));
        }
    }

    /// Removes everything `transport` publishes (with their consumers) and every consumer
    /// it receives: the transport has gone.
    pub fn remove_transport(&mut self, transport: TransportId) {
        let mut published: Vec<ProducerId> =
            self.by_source.iter().filter(|((t, _), _)| *t == transport).map(|(_, &p)| p).collect();
        // Layers whose SSRC was never learnt are in no source table.
        published.extend(self.rid_bindings.iter().filter(|b| b.transport == transport).map(|b| b.producer));
        published.sort_unstable();
        published.dedup();
        for producer in published {
            let _ = self.remove_producer(producer);
        }
        let received: Vec<ConsumerId> =
            self.by_consumer_ssrc.iter().filter(|((t, _), _)| *t == transport).map(|(_, &c)| c).collect();
        for consumer in received {
            let _ = self.remove_consumer(consumer);
        }
        self.ended_streams.retain(|(t, _), _| *t != transport);
    }

    /// Pauses or resumes one consumer; a resumed stream continues its numbering without a gap.
    /// Returns the consumer's producer.
    pub fn set_paused(&mut self, id: ConsumerId, paused: bool) -> Result<ProducerId, RouterError> {
        let consumer = self.consumers.get_mut(id.0 as usize).ok_or(RouterError::UnknownConsumer)?;
        if consumer.paused && !paused {
            consumer.rewriter.resync();
            if let Some(layers) = &mut consumer.layers {
                layers.resumed();
            }
        }
        consumer.paused = paused;
        self.demand_stale = true;
        Ok(consumer.producer)
    }

    /// Feeds `consumer` from another producer of the same kind (a merge or a layer
    /// switch); its subscriber keeps one continuous stream.
    pub fn switch_source(&mut self, id: ConsumerId, producer: ProducerId) -> Result<(), RouterError> {
        if !self.producers.contains(producer.0 as usize) {
            return Err(RouterError::UnknownProducer);
        }
        let consumer = self.consumers.get_mut(id.0 as usize).ok_or(RouterError::UnknownConsumer)?;
        if consumer.layers.is_some() {
            // Another stream altogether: its layers are not this one's.
            return Err(RouterError::InvalidLayers);
        }
        let previous = std::mem::replace(&mut consumer.producer, producer);
        consumer.rewriter.resync();
        if let Some(p) = self.producers.get_mut(previous.0 as usize) {
            p.consumers.retain(|&c| c != id);
        }
        if let Some(p) = self.producers.get_mut(producer.0 as usize) {
            p.consumers.push(id);
        }
        self.demand_stale = true;
        Ok(())
    }

    /// The producer an RTP packet from `transport` with `ssrc` feeds.
    #[inline]
    pub fn producer_for(&self, transport: TransportId, ssrc: u32) -> Option<ProducerId> {
        self.by_source.get(&(transport, ssrc)).copied()
    }

    /// The producer that the relayed stream `source` feeds, once it is imported.
    #[inline]
    pub fn producer_for_relay(&self, source: RelaySource) -> Option<ProducerId> {
        self.by_relay.get(&source).copied()
    }

    pub fn consumer_count(&self, producer: ProducerId) -> usize {
        self.producers.get(producer.0 as usize).map_or(0, |p| p.consumers.len())
    }

    /// Producers of this worker, imported ones included.
    pub fn producer_total(&self) -> usize {
        self.producers.len()
    }

    /// Consumers of this worker.
    pub fn consumer_total(&self) -> usize {
        self.consumers.len()
    }

    /// Records a decrypted packet of `producer` (for retransmissions) and reports, for each
    /// consumer that should get it, the transport and the rewritten header fields. Returns
    /// whether the packet started the producer's flow: its first, or the first after a stall.
    pub fn fan_out(
        &mut self,
        now: Instant,
        producer: ProducerId,
        packet: &RtpPacket<&[u8]>,
        mut emit: impl FnMut(ConsumerId, TransportId, Rewritten),
    ) -> bool {
        let Some(p) = self.producers.get_mut(producer.0 as usize) else { return false };
        let started = !p.flowing;
        p.flowing = true;
        p.last_packet = Some(now);
        let (seq, timestamp) = (packet.sequence_number(), packet.timestamp());
        if let Some(cache) = &mut p.cache {
            cache.store(now, seq, packet.as_bytes());
        }
        p.reception.record(now, seq, timestamp, p.clock_rate);
        p.bitrate.record(now, packet.as_bytes().len());
        // Read once per packet, and only for a VP8 layer.
        let mut temporal: Option<Option<Vp8Temporal>> = None;
        if let Some(rates) = &mut p.temporal_bitrate {
            let fields = *temporal.insert(Vp8Temporal::read(packet.payload()));
            if let Some(tid) = fields.and_then(|t| t.tid) {
                rates.record(now, tid, packet.as_bytes().len());
            }
        }
        if p.repair.as_mut().is_some_and(|repair| repair.received(now, seq)) {
            self.nacks_due = Some(now);
        }
        // A publisher's packets carry its SSRC already (that is how they were routed here).
        p.ssrc = packet.ssrc();
        let ssrc = p.ssrc;
        let len = packet.as_bytes().len() as u32;
        if !p.awaiting.is_empty() {
            self.take_switches(producer, packet.payload());
        }
        let Some(p) = self.producers.get_mut(producer.0 as usize) else { return started };
        // Read once per packet, and only when a consumer rewrites them.
        let mut picture_ids: Option<Option<Vp8PictureIds>> = None;
        for &id in &p.consumers {
            let Some(consumer) = self.consumers.get_mut(id.0 as usize) else { continue };
            if consumer.paused {
                continue;
            }
            let mut mapped_ids = None;
            if let Some(layers) = consumer.layers.as_mut().filter(|l| l.format() == VideoFormat::Vp8) {
                let payload = packet.payload();
                let ids = *picture_ids.get_or_insert_with(|| Vp8PictureIds::read(payload));
                let fields = *temporal.get_or_insert_with(|| Vp8Temporal::read(payload));
                let admission = layers.admit(ids, fields, || VideoFormat::Vp8.starts_key_frame(payload));
                self.temporal_switches += u64::from(admission.switched);
                // A frame above the temporal cap, or a late packet of one: its sequence
                // number and picture id go to the packets after it.
                let Some(ids) = admission.forward.then(|| layers.vp8.map(ids).ok()).flatten() else {
                    consumer.rewriter.skip(now, ssrc, seq, timestamp);
                    continue;
                };
                mapped_ids = ids;
            }
            if let Ok(mut rewritten) = consumer.rewriter.rewrite(now, ssrc, seq, timestamp) {
                rewritten.picture_ids = mapped_ids;
                consumer.packets_sent = consumer.packets_sent.wrapping_add(1);
                consumer.octets_sent = consumer.octets_sent.wrapping_add(len);
                emit(id, consumer.transport, rewritten);
            }
        }
        started
    }

    /// Moves the consumers awaiting `producer`'s key frame onto it when `payload` starts one.
    fn take_switches(&mut self, producer: ProducerId, payload: &[u8]) {
        let Some(p) = self.producers.get_mut(producer.0 as usize) else { return };
        let mut key_frame = None;
        let mut index = 0;
        while let Some(&id) = p.awaiting.get(index) {
            let Some(consumer) = self.consumers.get_mut(id.0 as usize) else {
                p.awaiting.swap_remove(index);
                continue;
            };
            let Some(layers) = consumer.layers.as_mut().filter(|l| l.awaits(producer)) else {
                p.awaiting.swap_remove(index);
                continue;
            };
            if !*key_frame.get_or_insert_with(|| layers.format().starts_key_frame(payload)) {
                index += 1;
                continue;
            }
            layers.switched();
            let previous = std::mem::replace(&mut consumer.producer, producer);
            consumer.rewriter.resync();
            if !p.consumers.contains(&id) {
                p.consumers.push(id);
            }
            p.awaiting.swap_remove(index);
            self.switched_from.push((previous, id));
            self.layer_switches += 1;
        }
        for (previous, id) in self.switched_from.drain(..) {
            if let Some(p) = self.producers.get_mut(previous.0 as usize) {
                p.consumers.retain(|&c| c != id);
            }
        }
    }

    /// Lets `id` choose among the simulcast layers `producers` (lowest first, its own
    /// producer among them) of a stream in `format`; it wants the highest until told
    /// otherwise ([`Router::prefer_layer`]). Call [`Router::review_layers`] to act on it.
    pub fn set_layers(
        &mut self,
        id: ConsumerId,
        producers: &[ProducerId],
        format: VideoFormat,
    ) -> Result<(), RouterError> {
        if producers.iter().any(|p| self.producers.get(p.0 as usize).is_none_or(|p| p.kind != MediaKind::Video)) {
            return Err(RouterError::InvalidLayers);
        }
        let consumer = self.consumers.get_mut(id.0 as usize).ok_or(RouterError::UnknownConsumer)?;
        consumer.layers = Some(Box::new(Layers::new(producers, format, consumer.producer)?));
        self.demand_stale = true;
        if format == VideoFormat::Vp8 {
            for p in producers {
                if let Some(p) = self.producers.get_mut(p.0 as usize) {
                    p.temporal_bitrate.get_or_insert_with(TemporalBitrates::default);
                }
            }
        }
        Ok(())
    }

    /// Sends `id` at most the VP8 temporal layers up to `max_tid` of its simulcast layer
    /// from now on ([`TemporalId::MAX`]: all), whatever its link carries; it goes down at its
    /// next picture, up at a layer sync point. No effect on streams without VP8 temporal
    /// layers.
    pub fn limit_temporal_layer(&mut self, id: ConsumerId, max_tid: TemporalId) -> Result<(), RouterError> {
        let consumer = self.consumers.get_mut(id.0 as usize).ok_or(RouterError::UnknownConsumer)?;
        consumer.layers.as_mut().ok_or(RouterError::InvalidLayers)?.limit_temporal(max_tid);
        Ok(())
    }

    /// Sends `id` at most its layer `layer` (0 = lowest) from now on; a `pinned` one gets its
    /// subscriber's bandwidth before the others ([`Router::allocate`]).
    pub fn prefer_layer(&mut self, id: ConsumerId, layer: usize, pinned: bool) -> Result<(), RouterError> {
        let consumer = self.consumers.get_mut(id.0 as usize).ok_or(RouterError::UnknownConsumer)?;
        let layers = consumer.layers.as_mut().ok_or(RouterError::InvalidLayers)?;
        layers.prefer(layer);
        layers.pinned = pinned;
        self.demand_stale = true;
        Ok(())
    }

    /// A consumer's layers: the current one, the one a switch waits for, the highest wanted.
    pub fn layer_state(&self, id: ConsumerId) -> Option<(usize, Option<usize>, usize)> {
        let layers = self.consumers.get(id.0 as usize)?.layers.as_ref()?;
        Some((layers.current(), layers.pending(), layers.preferred()))
    }

    /// Shares `budget_bps` (the subscriber's estimated bandwidth) among what `transport`
    /// receives: audio and streams without layers take what they send, then each simulcast
    /// stream the best layer that fits what is left ([`simulcast::fit_layer`]): those the
    /// subscriber pinned first, then those that `prioritized` publishers publish (the rooms'
    /// dominant speakers), then the others. A consumer whose layer changes waits for its key
    /// frame (its producer is named through `emit`, as by [`Router::review_layers`]). A VP8
    /// stream whose lowest layer does not fit at its full frame rate is sent the temporal
    /// layers of it that fit ([`temporal::fit_temporal`]), at least its base layer; they are
    /// all sent again once the whole layer fits with the headroom a layer upgrade needs.
    pub fn allocate(
        &mut self,
        now: Instant,
        transport: TransportId,
        budget_bps: u64,
        prioritized: &[TransportId],
        mut emit: impl FnMut(ProducerId),
    ) -> Allocation {
        let Some(list) = self.receiving.get(&transport) else { return Allocation::default() };
        let producers = &self.producers;
        let rate = |p: ProducerId| {
            producers.get(p.0 as usize).and_then(|p| p.bitrate.bps.filter(|_| simulcast::sends(p.last_packet, now)))
        };
        let mut allocation = Allocation::default();
        let mut left = budget_bps;
        for &id in list {
            let Some(consumer) = self.consumers.get(id.0 as usize) else { continue };
            if consumer.layers.is_none() && !consumer.paused {
                let used = rate(consumer.producer).unwrap_or(0);
                left = left.saturating_sub(used);
                allocation.allocated_bps += used;
            }
        }
        for rank in 0..3 {
            for &id in list {
                let Some(consumer) = self.consumers.get_mut(id.0 as usize) else { continue };
                let Some(layers) = consumer.layers.as_mut() else { continue };
                let speaking = |p: &ProducerId| match producers.get(p.0 as usize).map(|p| p.origin) {
                    Some(Origin::Publisher(t)) => prioritized.contains(&t),
                    _ => false,
                };
                let own_rank = if layers.pinned {
                    0
                } else if layers.producers().iter().any(speaking) {
                    1
                } else {
                    2
                };
                if consumer.paused || own_rank != rank {
                    continue;
                }
                let mut rates = [None; MAX_LAYERS];
                for (slot, &p) in rates.iter_mut().zip(layers.producers()) {
                    *slot = rate(p);
                }
                let rates = &rates[..layers.producers().len()];
                let current = layers.pending().unwrap_or(layers.current());
                let (layer, mut used, mut wanted) = simulcast::fit_layer(rates, current, layers.cap(), left);
                let lowest = rates.iter().position(Option::is_some) == Some(layer);
                let held_back = layers.temporal().budget() < TemporalId::MAX;
                let mut temporal_budget = TemporalId::MAX;
                if lowest && (used > left || held_back) {
                    let measured = producers.get(layers.producers()[layer].0 as usize).and_then(|p| p.temporal_bitrate);
                    let (cumulative, count) = measured.map_or(([0; 4], 0), |m| m.cumulative(now));
                    // Up to what the subscriber was limited to: the rest is never sent.
                    let count = count.min(usize::from(layers.temporal().limit().get()) + 1);
                    if count > 0 {
                        let (cap, rate, next) =
                            temporal::fit_temporal(&cumulative[..count], layers.temporal().budget(), left);
                        (temporal_budget, used, wanted) = (cap, rate, next.or(wanted));
                    }
                }
                if temporal_budget != layers.temporal().budget() {
                    layers.fit_temporal(temporal_budget);
                }
                let before = left;
                left = left.saturating_sub(used);
                allocation.allocated_bps += used;
                if let Some(needed) = wanted {
                    // The estimate that would carry it instead of what it takes now, beside
                    // what the streams before it take.
                    let wanted = budget_bps.saturating_sub(before).saturating_add(needed);
                    allocation.wanted_bps = Some(allocation.wanted_bps.map_or(wanted, |w| w.max(wanted)));
                }
                if layer != layers.budget() {
                    layers.fit(layer);
                }
            }
        }
        for index in 0..self.receiving.get(&transport).map_or(0, Vec::len) {
            let Some(&id) = self.receiving.get(&transport).and_then(|list| list.get(index)) else { break };
            self.review_consumer(now, id, &mut emit);
        }
        allocation
    }

    /// Reviews each simulcast consumer's layer (see [`Layers::review`]), or only `only`'s: a
    /// consumer that should switch waits for the new layer's key frame, and `emit` names the
    /// producer to ask for one ([`Router::request_keyframe`] throttles). Call it when a
    /// consumer's layers or preference change, and about once a second for layers that stop
    /// and start.
    pub fn review_layers(&mut self, now: Instant, only: Option<ConsumerId>, mut emit: impl FnMut(ProducerId)) {
        match only {
            Some(id) => self.review_consumer(now, id, &mut emit),
            None => {
                for key in 0..self.consumers.capacity() {
                    if self.consumers.get(key).is_some_and(|c| c.layers.is_some()) {
                        self.review_consumer(now, slab_key(key), &mut emit);
                    }
                }
            }
        }
    }

    fn review_consumer(&mut self, now: Instant, id: ConsumerId, emit: &mut impl FnMut(ProducerId)) {
        let Some(layers) = self.consumers.get_mut(id.0 as usize).and_then(|c| c.layers.as_mut()) else { return };
        let producers = &self.producers;
        let last_packet = |p: ProducerId| producers.get(p.0 as usize).and_then(|p| p.last_packet);
        let LayerDecision::Await(producer) = layers.review(now, last_packet) else { return };
        if let Some(p) = self.producers.get_mut(producer.0 as usize)
            && !p.awaiting.contains(&id)
        {
            p.awaiting.push(id);
        }
        emit(producer);
    }

    /// NACKs the packets `producer`'s publisher loses on the way (its stream comes over a
    /// node link, whose far end keeps them for retransmission). Audio is not repaired:
    /// senders keep no audio for retransmission, and a lost audio frame is concealed.
    pub fn repair_losses(&mut self, producer: ProducerId) -> Result<(), RouterError> {
        let p = self.producers.get_mut(producer.0 as usize).ok_or(RouterError::UnknownProducer)?;
        if p.kind == MediaKind::Video && matches!(p.origin, Origin::Publisher(_)) {
            p.repair.get_or_insert_with(NackGenerator::new);
        }
        Ok(())
    }

    /// When [`Router::nacks`] next has numbers to ask for (or to give up).
    pub fn nack_timeout(&self) -> Option<Instant> {
        self.nacks_due
    }

    /// The NACKs due at `now`: for each repaired stream with numbers to ask for, its
    /// publisher's transport, its SSRC and the numbers, oldest first.
    pub fn nacks(&mut self, now: Instant, mut emit: impl FnMut(TransportId, u32, &[u16])) {
        if self.nacks_due.is_none_or(|due| due > now) {
            return;
        }
        let mut next = None;
        for (_, p) in &mut self.producers {
            let (ssrc, Origin::Publisher(transport)) = (p.ssrc, p.origin) else { continue };
            let Some(repair) = &mut p.repair else { continue };
            repair.poll(now, |lost| emit(transport, ssrc, lost));
            next = next.into_iter().chain(repair.poll_timeout()).min();
        }
        self.nacks_due = next;
    }

    /// Reports each flowing producer whose last packet is more than `after` old, and counts
    /// it as stalled until its next packet.
    pub fn stalled(&mut self, now: Instant, after: Duration, mut emit: impl FnMut(ProducerId)) {
        for (key, p) in &mut self.producers {
            if p.flowing && p.last_packet.is_some_and(|last| now.saturating_duration_since(last) > after) {
                p.flowing = false;
                emit(slab_key(key));
            }
        }
    }

    /// A subscriber on `transport` asked for a keyframe of the stream it receives as
    /// `media_ssrc`: the request to forward to the publisher, unless one went out less
    /// than the configured interval ago. A simulcast subscriber that asks too often is moved
    /// down a layer instead ([`simulcast::KeyframeBudget`]).
    pub fn keyframe_request(
        &mut self,
        now: Instant,
        transport: TransportId,
        media_ssrc: u32,
    ) -> Option<KeyframeRequest> {
        let id = *self.by_consumer_ssrc.get(&(transport, media_ssrc))?;
        let consumer = self.consumers.get_mut(id.0 as usize)?;
        let producer = consumer.producer;
        // A simulcast subscriber past its budget is moved a layer down instead: its switch
        // asks for the lower layer's key frame, for those switching to it.
        let held_down = consumer.layers.as_mut().is_some_and(|l| !l.keyframes.spend(now) && l.hold_down(now));
        if !held_down {
            return self.request_keyframe(now, producer);
        }
        self.loss_downgrades += 1;
        let mut lower = None;
        self.review_consumer(now, id, &mut |p| lower = Some(p));
        self.request_keyframe(now, lower?)
    }

    /// Simulcast subscribers moved a layer down for asking too many key frames.
    pub fn loss_downgrades(&self) -> u64 {
        self.loss_downgrades
    }

    /// A keyframe request for `producer` itself (a new consumer, a resume, a switch),
    /// throttled like subscribers' requests.
    pub fn request_keyframe(&mut self, now: Instant, producer: ProducerId) -> Option<KeyframeRequest> {
        let interval = self.config.keyframe_request_interval;
        let p = self.producers.get_mut(producer.0 as usize)?;
        if p.kind != MediaKind::Video {
            return None;
        }
        if p.last_keyframe_request.is_some_and(|last| now.saturating_duration_since(last) < interval) {
            return None;
        }
        p.last_keyframe_request = Some(now);
        Some(match p.origin {
            Origin::Publisher(transport) => KeyframeRequest::Publisher { transport, media_ssrc: p.ssrc },
            Origin::Relay(source) => KeyframeRequest::Origin(source),
        })
    }

    /// A receiver report block about each published stream, with the transport of its
    /// publisher; starts each stream's next report interval. Imported streams are reported
    /// on by their origin worker.
    pub fn receiver_reports(&mut self, now: Instant, mut emit: impl FnMut(TransportId, ReportBlock)) {
        for (_, producer) in &mut self.producers {
            let Origin::Publisher(transport) = producer.origin else { continue };
            if let Some(block) = producer.reception.report_block(producer.ssrc, now) {
                emit(transport, block);
            }
        }
    }

    /// The publisher on `transport` sent a sender report: remember its timing for our
    /// receiver reports, and give each consumer's subscriber the same report in that
    /// consumer's numbering (its SSRC, its RTP timestamps, its counts), so that it can map
    /// the stream to wall-clock time for lip sync.
    pub fn sender_report(
        &mut self,
        now: Instant,
        transport: TransportId,
        info: SenderInfo,
        emit: impl FnMut(TransportId, SenderInfo),
    ) {
        let Some(&id) = self.by_source.get(&(transport, info.ssrc)) else { return };
        let Some(producer) = self.producers.get_mut(id.0 as usize) else { return };
        producer.reception.sender_report(info.ntp_timestamp, now);
        self.report_to_consumers(id, info, emit);
    }

    /// The origin relayed its publisher's sender report for the imported stream `source`:
    /// each consumer's subscriber gets it in that consumer's numbering, as for a local one.
    pub fn relayed_sender_report(
        &self,
        source: RelaySource,
        info: SenderInfo,
        emit: impl FnMut(TransportId, SenderInfo),
    ) {
        if let Some(&id) = self.by_relay.get(&source) {
            self.report_to_consumers(id, info, emit);
        }
    }

    fn report_to_consumers(&self, id: ProducerId, info: SenderInfo, mut emit: impl FnMut(TransportId, SenderInfo)) {
        let Some(producer) = self.producers.get(id.0 as usize) else { return };
        for consumer in producer.consumers.iter().filter_map(|c| self.consumers.get(c.0 as usize)) {
            let Some(ts_offset) = consumer.rewriter.timestamp_offset_for(info.ssrc) else { continue };
            emit(
                consumer.transport,
                SenderInfo {
                    ssrc: consumer.rewriter.output_ssrc(),
                    ntp_timestamp: info.ntp_timestamp,
                    rtp_timestamp: info.rtp_timestamp.wrapping_add(ts_offset),
                    packet_count: consumer.packets_sent,
                    octet_count: consumer.octets_sent,
                },
            );
        }
    }

    /// The simulcast choices of what `transport` receives: per layered consumer, its
    /// output SSRC and its layers' state.
    pub fn layer_states(&self, transport: TransportId) -> impl Iterator<Item = (u32, LayerState)> + '_ {
        self.receiving.get(&transport).into_iter().flatten().filter_map(|&id| {
            let consumer = self.consumers.get(id.0 as usize)?;
            let layers = consumer.layers.as_ref()?;
            let state = LayerState {
                current: layers.current(),
                pending: layers.pending(),
                cap: layers.cap(),
                budget: layers.budget(),
                layers: layers.producers().len(),
                pinned: layers.pinned,
                temporal_cap: layers.temporal().cap(),
                temporal_layer: layers.temporal().current(),
            };
            Some((consumer.rewriter.output_ssrc(), state))
        })
    }

    /// Follows `producer`'s speech in `group` by the audio levels under `extension_id`.
    pub fn follow_speech(
        &mut self,
        producer: ProducerId,
        extension_id: u8,
        group: SpeakerGroup,
    ) -> Result<(), RouterError> {
        let p = self.producers.get_mut(producer.0 as usize).ok_or(RouterError::UnknownProducer)?;
        if p.kind != MediaKind::Audio {
            return Err(RouterError::InvalidLayers);
        }
        p.speech = Some((extension_id, group));
        Ok(())
    }

    /// Consumers switched to another simulcast layer so far.
    pub fn layer_switches(&self) -> u64 {
        self.layer_switches
    }

    /// Changes of the highest VP8 temporal layer a consumer is sent so far (down at a
    /// picture, up at a layer sync point or a key frame), following its temporal cap.
    pub fn temporal_switches(&self) -> u64 {
        self.temporal_switches
    }

    /// Where `producer`'s speech is followed: its audio level extension and group.
    #[inline]
    pub fn speech_of(&self, producer: ProducerId) -> Option<(u8, SpeakerGroup)> {
        self.producers.get(producer.0 as usize)?.speech
    }

    /// The transport that publishes `producer`, for one published here.
    pub fn publisher_of(&self, producer: ProducerId) -> Option<TransportId> {
        match self.producers.get(producer.0 as usize)?.origin {
            Origin::Publisher(transport) => Some(transport),
            Origin::Relay(_) => None,
        }
    }

    /// Whether the subscriber on `transport` has a stream to send padding on
    /// ([`Router::padding_stream`]).
    pub fn has_padding_stream(&self, transport: TransportId) -> bool {
        self.receiving
            .get(&transport)
            .is_some_and(|list| list.iter().any(|c| self.consumers.get(c.0 as usize).is_some_and(|c| c.rtx.is_some())))
    }

    /// A stream to send padding to the subscriber on `transport` on, for probing its path:
    /// the RTX stream of one of its video consumers (padding takes a number of that stream's,
    /// which the subscriber's decoder never sees), as (payload type, sequence number,
    /// timestamp, SSRC). `None` when it negotiated no RTX.
    pub fn padding_stream(&mut self, transport: TransportId) -> Option<(u8, u16, u32, u32)> {
        let list = self.receiving.get(&transport)?;
        let consumers = &mut self.consumers;
        let id = list.iter().copied().find(|c| consumers.get(c.0 as usize).is_some_and(|c| c.rtx.is_some()))?;
        let consumer = consumers.get_mut(id.0 as usize)?;
        let rtx = consumer.rtx?;
        let sequence_number = consumer.rtx_next;
        consumer.rtx_next = consumer.rtx_next.wrapping_add(1);
        let timestamp = consumer.rewriter.position().map_or(0, |p| p.timestamp());
        Some((rtx.payload_type, sequence_number, timestamp, rtx.ssrc))
    }

    /// Sends `consumer`'s retransmissions as the RTX stream `rtx` from now on.
    pub fn enable_rtx(&mut self, consumer: ConsumerId, rtx: RtxStream) -> Result<(), RouterError> {
        let consumer = self.consumers.get_mut(consumer.0 as usize).ok_or(RouterError::UnknownConsumer)?;
        consumer.rtx = Some(rtx);
        Ok(())
    }

    /// A subscriber on `transport` reported `lost_seq` of the stream it receives as
    /// `media_ssrc` lost: how to resend it from the cache, if the packet is still cached.
    pub fn retransmission(
        &mut self,
        now: Instant,
        transport: TransportId,
        media_ssrc: u32,
        lost_seq: u16,
    ) -> Option<Resend<'_>> {
        let consumer_id = *self.by_consumer_ssrc.get(&(transport, media_ssrc))?;
        let consumer = self.consumers.get_mut(consumer_id.0 as usize)?;
        let producer = self.producers.get(consumer.producer.0 as usize)?;
        let (source_ssrc, input_seq) = consumer.rewriter.input_seq_for(lost_seq)?;
        if source_ssrc != producer.ssrc {
            return None;
        }
        let packet = producer.cache.as_ref()?.get(now, input_seq)?;
        // Cached packets were parsed as RTP before they were stored: bytes 4..8 are the
        // timestamp.
        let timestamp = u32::from_be_bytes(packet.get(4..8)?.try_into().ok()?);
        let mut rewritten = consumer.rewriter.output_for(input_seq, timestamp)?;
        if let Some(layers) = consumer.layers.as_mut().filter(|l| l.format() == VideoFormat::Vp8) {
            let ids = RtpPacket::new_checked(packet).ok().and_then(|p| Vp8PictureIds::read(p.payload()));
            // A picture left out is not resent, even when one of its packets kept a number
            // (it came late, after the numbers around it were given).
            rewritten.picture_ids = layers.vp8.map(ids).ok()?;
        }
        Some(match consumer.rtx {
            Some(rtx) => {
                let rtx_sequence_number = consumer.rtx_next;
                consumer.rtx_next = consumer.rtx_next.wrapping_add(1);
                Resend::Rtx { packet, rewritten, rtx, rtx_sequence_number }
            }
            None => Resend::Original { packet, rewritten },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUB: TransportId = TransportId(1);

    fn video(ssrc: u32) -> ProducerSpec {
        ProducerSpec { transport: PUB, ssrc, kind: MediaKind::Video, clock_rate: 90_000 }
    }

    /// An RTP packet of `ssrc` with a short payload.
    fn rtp(ssrc: u32, seq: u16, timestamp: u32) -> Vec<u8> {
        let mut buf = vec![0; 64];
        let len = crate::wire::rtp::RtpHeader::new(96, seq, timestamp, ssrc).write(&mut buf).unwrap();
        buf[len..len + 7].copy_from_slice(b"payload");
        buf.truncate(len + 7);
        buf
    }

    fn fan_out_packet(
        router: &mut Router,
        now: Instant,
        producer: ProducerId,
        packet: &[u8],
    ) -> Vec<(TransportId, Rewritten)> {
        let mut out = Vec::new();
        let packet = RtpPacket::new_checked(packet).unwrap();
        router.fan_out(now, producer, &packet, |_, t, r| out.push((t, r)));
        out
    }

    fn collect(router: &mut Router, now: Instant, producer: ProducerId, seq: u16) -> Vec<(TransportId, Rewritten)> {
        fan_out_packet(router, now, producer, &rtp(0x10, seq, u32::from(seq) * 3000))
    }

    #[test]
    fn fans_out_to_every_unpaused_consumer_with_its_own_ssrc() {
        let now = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let producer = router.add_producer(video(0x10)).unwrap();
        assert_eq!(router.producer_for(PUB, 0x10), Some(producer));
        assert_eq!(router.producer_for(PUB, 0x11), None);
        let a = router.add_consumer(producer, TransportId(2), 0xA).unwrap();
        router.add_consumer(producer, TransportId(3), 0xB).unwrap();
        let out = collect(&mut router, now, producer, 7);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].0, out[0].1.ssrc, out[0].1.sequence_number), (TransportId(2), 0xA, 7));
        assert_eq!((out[1].0, out[1].1.ssrc), (TransportId(3), 0xB));
        router.set_paused(a, true).unwrap();
        assert_eq!(collect(&mut router, now, producer, 8).len(), 1);
        router.set_paused(a, false).unwrap();
        let out = collect(&mut router, now, producer, 20);
        assert_eq!(out[0].1.sequence_number, 8, "resumed without a gap");
    }

    #[test]
    fn a_new_consumer_on_an_ended_streams_ssrc_numbers_on_from_it_until_its_transport_goes() {
        let t0 = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let first = router.add_producer(video(0x10)).unwrap();
        router.add_consumer(first, TransportId(2), 0xA).unwrap();
        collect(&mut router, t0, first, 500);
        router.remove_producer(first).unwrap();
        // The publisher is back as another stream, numbered from scratch.
        let second = router.add_producer(video(0x10)).unwrap();
        router.add_consumer(second, TransportId(2), 0xA).unwrap();
        router.add_consumer(second, TransportId(3), 0xA).unwrap();
        let out = collect(&mut router, t0 + Duration::from_secs(1), second, 3);
        assert_eq!((out[0].0, out[0].1.sequence_number), (TransportId(2), 501), "on from where it stopped");
        assert_eq!(out[0].1.timestamp, 500 * 3000 + 90_000, "its clock advanced by the second that passed");
        assert_eq!((out[1].0, out[1].1.sequence_number), (TransportId(3), 3), "another subscriber's own numbering");

        router.remove_transport(TransportId(2));
        assert!(router.ended_streams.is_empty(), "forgotten with the transport");
    }

    #[test]
    fn duplicate_sources_and_ssrcs_are_refused() {
        let mut router = Router::new(RouterConfig::default());
        let producer = router.add_producer(video(1)).unwrap();
        assert_eq!(router.add_producer(video(1)), Err(RouterError::DuplicateSource));
        router.add_consumer(producer, TransportId(2), 5).unwrap();
        assert_eq!(router.add_consumer(producer, TransportId(2), 5), Err(RouterError::DuplicateConsumerSsrc));
        assert_eq!(router.add_consumer(ProducerId(99), TransportId(2), 6), Err(RouterError::UnknownProducer));
    }

    #[test]
    fn keyframe_requests_are_throttled_per_producer() {
        let t0 = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let producer = router.add_producer(video(0x10)).unwrap();
        router.add_consumer(producer, TransportId(2), 0xA).unwrap();
        router.add_consumer(producer, TransportId(3), 0xB).unwrap();
        let expected = Some(KeyframeRequest::Publisher { transport: PUB, media_ssrc: 0x10 });
        assert_eq!(router.keyframe_request(t0, TransportId(2), 0xA), expected);
        assert_eq!(router.keyframe_request(t0 + Duration::from_millis(100), TransportId(3), 0xB), None);
        assert_eq!(router.keyframe_request(t0 + Duration::from_millis(600), TransportId(3), 0xB), expected);
        assert_eq!(router.keyframe_request(t0, TransportId(3), 0xC), None, "unknown consumer SSRC");
    }

    #[test]
    fn nack_is_answered_from_the_cache_in_the_consumers_numbering() {
        let t0 = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let first = router.add_producer(video(0x10)).unwrap();
        let second = router.add_producer(ProducerSpec { ssrc: 0x20, ..video(0) }).unwrap();
        let consumer = router.add_consumer(first, TransportId(2), 0xA).unwrap();
        collect(&mut router, t0, first, 100);
        router.switch_source(consumer, second).unwrap();
        let packet = [0x80, 96, 0x23, 0x28, 0, 0, 0x10, 0, 0, 0, 0, 0x20, 0xEE];
        let out: Vec<Rewritten> =
            fan_out_packet(&mut router, t0, second, &packet).into_iter().map(|(_, r)| r).collect();
        assert_eq!(out[0].sequence_number, 101);
        let Some(Resend::Original { packet: cached, rewritten }) = router.retransmission(t0, TransportId(2), 0xA, 101)
        else {
            panic!("no RTX negotiated: the original packet")
        };
        assert_eq!(cached, packet);
        assert_eq!(rewritten, out[0]);
        router.enable_rtx(consumer, RtxStream { ssrc: 0xB, payload_type: 97 }).unwrap();
        for expected_rtx_seq in 0..2 {
            let Some(Resend::Rtx { rewritten: r, rtx, rtx_sequence_number, .. }) =
                router.retransmission(t0, TransportId(2), 0xA, 101)
            else {
                panic!("RTX negotiated")
            };
            assert_eq!((r, rtx.ssrc, rtx_sequence_number), (out[0], 0xB, expected_rtx_seq));
        }
        assert!(router.retransmission(t0, TransportId(2), 0xA, 102).is_none());
        assert!(router.retransmission(t0 + Duration::from_secs(5), TransportId(2), 0xA, 101).is_none());
    }

    #[test]
    fn a_repaired_streams_gaps_are_nacked_to_its_publisher() {
        let t0 = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let audio_spec = ProducerSpec { kind: MediaKind::Audio, clock_rate: 48_000, ..video(0x20) };
        let (video, audio) = (router.add_producer(video(0x10)).unwrap(), router.add_producer(audio_spec).unwrap());
        router.repair_losses(video).unwrap();
        router.repair_losses(audio).unwrap();
        assert_eq!(router.repair_losses(ProducerId(99)), Err(RouterError::UnknownProducer));
        for seq in [1, 2, 5] {
            collect(&mut router, t0, video, seq);
            fan_out_packet(&mut router, t0, audio, &rtp(0x20, seq, 0));
        }
        assert_eq!(router.nack_timeout(), Some(t0));
        let mut nacks = Vec::new();
        router.nacks(t0, |transport, ssrc, lost| nacks.push((transport, ssrc, lost.to_vec())));
        assert_eq!(nacks, [(PUB, 0x10, vec![3, 4])], "video only");
        assert!(router.nack_timeout().is_some_and(|due| due > t0), "the retry");
        collect(&mut router, t0, video, 3);
        collect(&mut router, t0, video, 4);
        router.nacks(t0 + Duration::from_secs(1), |_, _, _| panic!("repaired"));
        assert_eq!(router.nack_timeout(), None);
    }

    #[test]
    fn removing_a_producer_removes_its_consumers() {
        let mut router = Router::new(RouterConfig::default());
        let producer = router.add_producer(video(1)).unwrap();
        let consumer = router.add_consumer(producer, TransportId(2), 5).unwrap();
        assert_eq!(router.remove_producer(producer).unwrap(), vec![consumer]);
        assert_eq!(router.remove_consumer(consumer), Err(RouterError::UnknownConsumer));
        assert_eq!(router.producer_for(PUB, 1), None);
        assert!(router.keyframe_request(Instant::now(), TransportId(2), 5).is_none());
    }

    #[test]
    fn removing_a_transport_removes_what_it_publishes_and_receives() {
        let mut router = Router::new(RouterConfig::default());
        let published = router.add_producer(video(1)).unwrap();
        router.add_consumer(published, TransportId(2), 5).unwrap();
        let other = router.add_producer(ProducerSpec { transport: TransportId(2), ..video(9) }).unwrap();
        router.add_consumer(other, PUB, 6).unwrap();
        router.add_consumer(other, TransportId(3), 7).unwrap();
        router.remove_transport(PUB);
        assert_eq!(router.producer_for(PUB, 1), None);
        assert_eq!(router.consumer_count(other), 1, "only transport 3 still receives");
        assert!(router.add_consumer(other, PUB, 6).is_ok(), "PUB's consumer SSRC is free again");
    }

    const ORIGIN: RelaySource = RelaySource { worker: WorkerIndex(0), stream: RelayStreamId(4) };

    #[test]
    fn an_imported_producer_takes_its_ssrc_from_its_packets_and_asks_its_origin_for_keyframes() {
        let t0 = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let imported = router.import_producer(ORIGIN, MediaKind::Video, 90_000);
        assert_eq!(router.import_producer(ORIGIN, MediaKind::Video, 90_000), imported, "idempotent");
        assert_eq!(router.producer_for_relay(ORIGIN), Some(imported));
        router.add_consumer(imported, TransportId(2), 0xA).unwrap();
        let out = fan_out_packet(&mut router, t0, imported, &rtp(0x77, 5, 500));
        assert_eq!((out[0].0, out[0].1.ssrc, out[0].1.sequence_number), (TransportId(2), 0xA, 5));
        assert_eq!(router.keyframe_request(t0, TransportId(2), 0xA), Some(KeyframeRequest::Origin(ORIGIN)));
        assert_eq!(router.keyframe_request(t0, TransportId(2), 0xA), None, "throttled here too");
        let Some(Resend::Original { rewritten, .. }) = router.retransmission(t0, TransportId(2), 0xA, 5) else {
            panic!("NACKs are answered from this worker's own cache")
        };
        assert_eq!(rewritten.ssrc, 0xA);
        let mut reports = Vec::new();
        router.receiver_reports(t0, |t, _| reports.push(t));
        assert!(reports.is_empty(), "the origin reports to the publisher");
        let info = SenderInfo { ssrc: 0x77, rtp_timestamp: 600, ..SenderInfo::default() };
        let mut relayed = Vec::new();
        router.relayed_sender_report(ORIGIN, info, |t, info| relayed.push((t, info.ssrc, info.rtp_timestamp)));
        assert_eq!(relayed, [(TransportId(2), 0xA, 600)]);
        assert_eq!(router.export(imported, WorkerIndex(2)), Err(RouterError::NotLocal));
        assert_eq!(router.remove_producer(imported).unwrap().len(), 1);
        assert_eq!(router.producer_for_relay(ORIGIN), None);
        assert_eq!((router.producer_total(), router.consumer_total()), (0, 0));
    }

    #[test]
    fn exports_are_idempotent_per_worker_and_end_with_their_producer() {
        let mut router = Router::new(RouterConfig::default());
        let producer = router.add_producer(video(1)).unwrap();
        let to_1 = router.export(producer, WorkerIndex(1)).unwrap();
        assert_eq!(router.export(producer, WorkerIndex(1)), Ok(to_1));
        let to_2 = router.export(producer, WorkerIndex(2)).unwrap();
        assert_ne!(to_1, to_2);
        assert_eq!(
            router.exports(producer),
            [Export { to: WorkerIndex(1), stream: to_1 }, Export { to: WorkerIndex(2), stream: to_2 }]
        );
        assert_eq!(router.exported_producer(to_2), Some(producer));
        router.unexport(producer, WorkerIndex(1)).unwrap();
        router.unexport(producer, WorkerIndex(1)).unwrap();
        assert_eq!(router.drain_ended_exports().collect::<Vec<_>>(), [Export { to: WorkerIndex(1), stream: to_1 }]);
        let again = router.export(producer, WorkerIndex(1)).unwrap();
        assert!(again != to_1 && again != to_2, "a new export gets a new id");
        router.remove_transport(PUB);
        let mut ended: Vec<_> = router.drain_ended_exports().map(|e| e.stream).collect();
        ended.sort_unstable();
        assert_eq!(ended, [to_2, again]);
        assert_eq!(router.exported_producer(to_2), None);
        assert!(router.exports(producer).is_empty());
        assert_eq!(router.export(producer, WorkerIndex(1)), Err(RouterError::UnknownProducer));
    }

    const RID_EXTENSION: u8 = 10;

    /// A VP8 packet of `ssrc` carrying `rid`, with a 15-bit picture id; a key frame's first
    /// packet when `key`.
    fn vp8_layer_packet(ssrc: u32, rid: &str, seq: u16, picture_id: u16, key: bool) -> Vec<u8> {
        let mut buf = vec![0; 128];
        let extensions = [(RID_EXTENSION, rid.as_bytes())];
        let header = crate::wire::rtp::RtpHeader::new(96, seq, u32::from(seq) * 3000, ssrc).extensions(&extensions);
        let len = header.write(&mut buf).unwrap();
        let [high, low] = picture_id.to_be_bytes();
        let payload = [0x90, 0x80, 0x80 | high, low, if key { 0x00 } else { 0x01 }, 0x9D];
        buf[len..len + payload.len()].copy_from_slice(&payload);
        buf.truncate(len + payload.len());
        buf
    }

    /// Two layers `l` and `h` published by rid on [`PUB`], bound by their first packets.
    fn two_layers(router: &mut Router, now: Instant) -> (ProducerId, ProducerId) {
        let layer = |router: &mut Router, rid| {
            router.add_layer_producer(PUB, (RID_EXTENSION, Rid::new(rid).unwrap()), MediaKind::Video, 90_000).unwrap()
        };
        let (low, high) = (layer(router, "l"), layer(router, "h"));
        for (ssrc, rid, producer) in [(0x100, "l", low), (0x200, "h", high)] {
            let bytes = vp8_layer_packet(ssrc, rid, 1, 1, true);
            let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
            assert_eq!(router.producer_for(PUB, ssrc), None);
            assert_eq!(router.bind_layer(PUB, &packet), Some(producer));
            assert_eq!(router.producer_for(PUB, ssrc), Some(producer));
            router.fan_out(now, producer, &packet, |_, _, _| {});
        }
        (low, high)
    }

    fn send(router: &mut Router, now: Instant, producer: ProducerId, bytes: &[u8]) -> Vec<Rewritten> {
        fan_out_packet(router, now, producer, bytes).into_iter().map(|(_, r)| r).collect()
    }

    #[test]
    fn layers_named_by_rid_learn_their_ssrc_and_refuse_strangers() {
        let now = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let (low, _) = two_layers(&mut router, now);
        let rid = (RID_EXTENSION, Rid::new("l").unwrap());
        assert_eq!(router.add_layer_producer(PUB, rid, MediaKind::Video, 90_000), Err(RouterError::DuplicateSource));
        let stranger = vp8_layer_packet(0x300, "x", 1, 1, true);
        assert_eq!(router.bind_layer(PUB, &RtpPacket::new_checked(&stranger[..]).unwrap()), None, "unknown rid");
        let other_transport = vp8_layer_packet(0x300, "l", 1, 1, true);
        assert_eq!(router.bind_layer(TransportId(9), &RtpPacket::new_checked(&other_transport[..]).unwrap()), None);
        // The publisher starts the layer again under another SSRC.
        let moved = vp8_layer_packet(0x101, "l", 1, 1, true);
        assert_eq!(router.bind_layer(PUB, &RtpPacket::new_checked(&moved[..]).unwrap()), Some(low));
        assert_eq!((router.producer_for(PUB, 0x101), router.producer_for(PUB, 0x100)), (Some(low), None));
        router.remove_transport(PUB);
        assert_eq!(router.producer_total(), 0);
        assert!(router.rid_bindings.is_empty());
    }

    #[test]
    fn a_layer_switch_waits_for_a_key_frame_and_keeps_the_stream_continuous() {
        let t0 = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let (low, high) = two_layers(&mut router, t0);
        let consumer = router.add_consumer(low, TransportId(2), 0xA).unwrap();
        router.set_layers(consumer, &[low, high], VideoFormat::Vp8).unwrap();
        let mut asked = Vec::new();
        router.review_layers(t0, Some(consumer), |p| asked.push(p));
        assert_eq!(asked, [high], "the high layer's key frame is asked for");
        assert_eq!(router.layer_state(consumer), Some((0, Some(1), 1)));

        let out = send(&mut router, t0, low, &vp8_layer_packet(0x100, "l", 2, 40, false));
        assert_eq!((out[0].sequence_number, out[0].picture_ids.unwrap().picture_id), (2, Some((40, true))));
        assert!(
            send(&mut router, t0, high, &vp8_layer_packet(0x200, "h", 500, 9000, false)).is_empty(),
            "not a key frame"
        );
        let t1 = t0 + Duration::from_millis(33);
        let out = send(&mut router, t1, high, &vp8_layer_packet(0x200, "h", 501, 9001, true));
        assert_eq!(out.len(), 1, "switched on the key frame");
        assert_eq!((out[0].ssrc, out[0].sequence_number), (0xA, 3), "numbering goes on");
        assert_eq!(out[0].picture_ids.unwrap().picture_id, Some((41, true)), "so do picture ids");
        assert_eq!(router.layer_state(consumer), Some((1, None, 1)));
        assert!(
            send(&mut router, t1, low, &vp8_layer_packet(0x100, "l", 3, 41, false)).is_empty(),
            "the low layer no more"
        );
        let out = send(&mut router, t1, high, &vp8_layer_packet(0x200, "h", 502, 9002, false));
        assert_eq!((out[0].sequence_number, out[0].picture_ids.unwrap().picture_id), (4, Some((42, true))));

        // Down again when asked: at the low layer's key frame.
        router.prefer_layer(consumer, 0, false).unwrap();
        let mut asked = Vec::new();
        router.review_layers(t1, Some(consumer), |p| asked.push(p));
        assert_eq!(asked, [low]);
        assert!(send(&mut router, t1, low, &vp8_layer_packet(0x100, "l", 4, 42, true)).len() == 1);
        assert_eq!(router.layer_state(consumer), Some((0, None, 0)));
        assert!(send(&mut router, t1, high, &vp8_layer_packet(0x200, "h", 503, 9003, true)).is_empty());
    }

    #[test]
    fn a_subscriber_on_a_layer_that_stops_moves_to_one_that_sends() {
        let t0 = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let (low, high) = two_layers(&mut router, t0);
        let consumer = router.add_consumer(high, TransportId(2), 0xA).unwrap();
        router.set_layers(consumer, &[low, high], VideoFormat::Vp8).unwrap();
        router.review_layers(t0, None, |_| panic!("on the best layer already"));
        // Only the low layer goes on sending.
        let t1 = t0 + Duration::from_secs(2);
        send(&mut router, t1, low, &vp8_layer_packet(0x100, "l", 2, 2, false));
        let mut asked = Vec::new();
        router.review_layers(t1, None, |p| asked.push(p));
        assert_eq!(asked, [low]);
        assert_eq!(send(&mut router, t1, low, &vp8_layer_packet(0x100, "l", 3, 3, true)).len(), 1);
        // A consumer ends with any of its layers: the high one's publisher left.
        router.remove_producer(high).unwrap();
        assert_eq!(router.consumer_total(), 0);
        assert!(send(&mut router, t1, low, &vp8_layer_packet(0x100, "l", 4, 4, false)).is_empty());
    }

    #[test]
    fn layer_lists_must_be_video_producers_holding_the_consumers_own() {
        let now = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let (low, high) = two_layers(&mut router, now);
        let audio = router
            .add_producer(ProducerSpec { transport: PUB, ssrc: 7, kind: MediaKind::Audio, clock_rate: 48_000 })
            .unwrap();
        let consumer = router.add_consumer(low, TransportId(2), 0xA).unwrap();
        assert_eq!(router.set_layers(consumer, &[low, audio], VideoFormat::Vp8), Err(RouterError::InvalidLayers));
        assert_eq!(router.set_layers(consumer, &[high], VideoFormat::Vp8), Err(RouterError::InvalidLayers));
        assert_eq!(router.prefer_layer(consumer, 0, false), Err(RouterError::InvalidLayers), "no layers yet");
        router.set_layers(consumer, &[low, high], VideoFormat::Vp8).unwrap();
        assert_eq!(router.switch_source(consumer, audio), Err(RouterError::InvalidLayers));
    }

    /// Two publishers' simulcast streams of a low (about 100 kbit/s) and a high layer (about
    /// 1 Mbit/s), measured for 1.2 s, both received by subscriber transport 9: its consumer of
    /// each publisher's stream, the first publisher's first.
    fn two_simulcast_streams(router: &mut Router, start: Instant) -> [ConsumerId; 2] {
        let subscriber = TransportId(9);
        let mut consumers = [ConsumerId(0); 2];
        for (i, publisher) in [TransportId(1), TransportId(2)].into_iter().enumerate() {
            let spec = |ssrc| ProducerSpec { transport: publisher, ssrc, kind: MediaKind::Video, clock_rate: 90_000 };
            let (low, high) = (router.add_producer(spec(1)).unwrap(), router.add_producer(spec(2)).unwrap());
            consumers[i] = router.add_consumer(high, subscriber, 0xA0 + i as u32).unwrap();
            router.set_layers(consumers[i], &[low, high], VideoFormat::Vp8).unwrap();
            for tick in 0..120u16 {
                let now = start + Duration::from_millis(u64::from(tick) * 10);
                for (producer, ssrc, bytes) in [(low, 1, 125), (high, 2, 1250)] {
                    let mut packet = rtp(ssrc, tick, u32::from(tick) * 900);
                    packet.resize(bytes, 0);
                    fan_out_packet(router, now, producer, &packet);
                }
            }
        }
        consumers
    }

    #[test]
    fn pinned_streams_take_the_bandwidth_first_then_the_speakers_then_the_rest() {
        let start = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let [first, second] = two_simulcast_streams(&mut router, start);
        let now = start + Duration::from_millis(1200);
        // Room for one high layer (with its 25 % headroom) and one low one.
        let budget = 1_500_000;
        let budgets = |router: &mut Router, prioritized: &[TransportId]| {
            router.allocate(now, TransportId(9), budget, prioritized, |_| {});
            [first, second]
                .map(|c| router.consumers.get(c.0 as usize).and_then(|c| c.layers.as_ref()).unwrap().budget())
        };
        assert_eq!(budgets(&mut router, &[]), [1, 0], "in the order received, without priorities");
        // A probe looks for the first stream's high layer and the second's instead of its low one.
        let wanted = router.allocate(now, TransportId(9), budget, &[], |_| {}).wanted_bps.unwrap();
        assert!((2_200_000..2_300_000).contains(&wanted), "{wanted}");
        assert_eq!(budgets(&mut router, &[TransportId(2)]), [0, 1], "the dominant speaker's first");
        router.prefer_layer(first, 1, true).unwrap();
        assert_eq!(budgets(&mut router, &[TransportId(2)]), [1, 0], "a pinned view before the speaker");
    }

    /// Picture `picture`'s temporal layer in L1T3 as libwebrtc sends it: TIDs 0, 2, 1, 2,
    /// with the Y bit on the first TID 2 and TID 1 frames of each group of eight (they
    /// refer to the TID 0 frame alone).
    fn l1t3(picture: u16) -> (u8, bool) {
        ([0, 2, 1, 2][usize::from(picture % 4)], matches!(picture % 8, 1 | 2))
    }

    /// A packet of an L1T3 VP8 stream: picture `picture` (a key frame at 0; TL0PICIDX
    /// `picture / 4`), its first packet when `first`, `size` bytes of payload after the
    /// descriptor; with the TID it carries. Without a T bit (and TID) when `!temporal`.
    fn l1t3_packet(ssrc: u32, seq: u16, picture: u16, first: bool, size: usize, temporal: bool) -> (u8, Vec<u8>) {
        let (tid, sync) = l1t3(picture);
        let mut buf = vec![0; 12 + 6 + size];
        let len = crate::wire::rtp::RtpHeader::new(96, seq, u32::from(picture) * 3000, ssrc).write(&mut buf).unwrap();
        let [high, low] = picture.to_be_bytes();
        let extension = if temporal { 0xE0 } else { 0xC0 };
        let descriptor = [0x80 | u8::from(first) << 4, extension, 0x80 | high, low, (picture / 4) as u8];
        buf[len..len + 5].copy_from_slice(&descriptor);
        let mut at = len + 5;
        if temporal {
            buf[at] = tid << 6 | u8::from(sync) << 5;
            at += 1;
        }
        // The frame tag: a key frame's P bit is clear.
        buf[at] = u8::from(picture != 0);
        buf.truncate(at + size);
        (tid, buf)
    }

    /// The TID and rewritten fields of each packet sent to consumers.
    type Sent = Vec<(u8, Rewritten)>;

    /// Publishes pictures `pictures` of an L1T3 stream on `producer` (SSRC 0x10), two packets
    /// each, one every 33 ms from `t0`; what was sent to consumers, and the packets
    /// published by sequence number.
    fn publish_l1t3(
        router: &mut Router,
        t0: Instant,
        producer: ProducerId,
        pictures: std::ops::Range<u16>,
    ) -> (Sent, HashMap<u16, Vec<u8>>) {
        let mut out = Vec::new();
        let mut published = HashMap::new();
        for picture in pictures {
            for first in [true, false] {
                let seq = 2 * picture + u16::from(!first);
                let (tid, bytes) = l1t3_packet(0x10, seq, picture, first, 20, true);
                let now = t0 + Duration::from_millis(33 * u64::from(picture));
                out.extend(fan_out_packet(router, now, producer, &bytes).into_iter().map(|(_, r)| (tid, r)));
                published.insert(seq, bytes);
            }
        }
        (out, published)
    }

    /// Asserts that `sent` numbers on from `seq` and picture `picture` without a gap, two
    /// packets a picture, and that TL0PICIDX goes up by one at each TID 0 picture.
    fn assert_continuous(sent: &[(u8, Rewritten)], seq: u16, picture: u16) {
        let mut tl0 = None;
        for (i, (tid, r)) in sent.iter().enumerate() {
            assert_eq!(r.sequence_number, seq + i as u16, "packet {i} of {sent:?}");
            let ids = r.picture_ids.unwrap();
            assert_eq!(ids.picture_id, Some((picture + i as u16 / 2, true)), "packet {i}");
            let index = ids.tl0picidx.unwrap();
            if let Some(previous) = tl0 {
                let expected = if *tid == 0 && i % 2 == 0 { previous + 1 } else { previous };
                assert_eq!(index, expected, "TL0PICIDX of packet {i}");
            }
            tl0 = Some(index);
        }
    }

    /// A router with one VP8 producer (SSRC 0x10) and a consumer of it (transport 2, SSRC
    /// 0xA) choosing among its one layer, so that its temporal layers are chosen.
    fn one_vp8_layer() -> (Router, ProducerId, ConsumerId) {
        let mut router = Router::new(RouterConfig::default());
        let producer = router.add_producer(video(0x10)).unwrap();
        let consumer = router.add_consumer(producer, TransportId(2), 0xA).unwrap();
        router.set_layers(consumer, &[producer], VideoFormat::Vp8).unwrap();
        (router, producer, consumer)
    }

    fn temporal_state(router: &Router, transport: TransportId) -> (u8, u8) {
        let (_, state) = router.layer_states(transport).next().unwrap();
        (state.temporal_cap.get(), state.temporal_layer.get())
    }

    #[test]
    fn a_temporally_capped_consumer_gets_the_lower_layers_without_gaps() {
        let t0 = Instant::now();
        let (mut router, producer, consumer) = one_vp8_layer();
        assert_eq!(router.limit_temporal_layer(ConsumerId(99), TemporalId::BASE), Err(RouterError::UnknownConsumer));
        let (sent, _) = publish_l1t3(&mut router, t0, producer, 0..4);
        assert_eq!(sent.iter().map(|(tid, _)| *tid).collect::<Vec<_>>(), [0, 0, 2, 2, 1, 1, 2, 2], "no cap");

        router.limit_temporal_layer(consumer, TemporalId::BASE).unwrap();
        let (capped, _) = publish_l1t3(&mut router, t0, producer, 4..20);
        assert!(capped.iter().all(|(tid, _)| *tid == 0));
        assert_eq!(capped.len(), 8, "pictures 4, 8, 12 and 16");
        assert_continuous(&[&sent[..], &capped[..]].concat(), 0, 0);
        assert_eq!(temporal_state(&router, TransportId(2)), (0, 0));
        assert_eq!(router.temporal_switches(), 1);

        // Up again: TID 1 at its next sync frame (26), TID 2 at its own (33); the sync frame
        // of TID 2 at 25 is two layers up, and the TID 0 frames are no sync points.
        router.limit_temporal_layer(consumer, TemporalId::MAX).unwrap();
        let (raised, published) = publish_l1t3(&mut router, t0, producer, 20..36);
        let pictures: Vec<u8> = raised.iter().step_by(2).map(|(tid, _)| *tid).collect();
        assert_eq!(pictures, [0, 0, 1, 0, 1, 0, 2, 1, 2], "pictures 20, 24, 26, 28, 30, 32, 33, 34, 35");
        let all = [&sent[..], &capped[..], &raised[..]].concat();
        assert_continuous(&all, 0, 0);
        assert_eq!(temporal_state(&router, TransportId(2)), (3, 2));
        assert_eq!(router.temporal_switches(), 3);

        // A NACK for a packet sent after skips resends that packet, as it was sent.
        let now = t0 + Duration::from_millis(33 * 36);
        for (_, original) in &raised[4..8] {
            let Some(Resend::Original { packet, rewritten }) =
                router.retransmission(now, TransportId(2), 0xA, original.sequence_number)
            else {
                panic!("{original:?} is cached")
            };
            assert_eq!(rewritten, *original);
            let input = RtpPacket::new_checked(packet).unwrap().sequence_number();
            assert_eq!(packet, &published[&input][..]);
        }
        let next = all.last().unwrap().1.sequence_number + 1;
        assert!(router.retransmission(now, TransportId(2), 0xA, next).is_none(), "never sent");
    }

    #[test]
    fn packets_without_temporal_layers_are_never_dropped() {
        let t0 = Instant::now();
        let (mut router, producer, consumer) = one_vp8_layer();
        router.limit_temporal_layer(consumer, TemporalId::BASE).unwrap();
        for picture in 0..8 {
            let (_, bytes) = l1t3_packet(0x10, picture, picture, true, 20, false);
            assert_eq!(fan_out_packet(&mut router, t0, producer, &bytes).len(), 1, "picture {picture}");
        }
        assert_eq!(router.temporal_switches(), 0);
    }

    #[test]
    fn a_subscriber_that_cannot_carry_the_lowest_layer_gets_fewer_frames_until_it_can() {
        let t0 = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        let low = router.add_producer(video(0x10)).unwrap();
        let high = router.add_producer(video(0x20)).unwrap();
        let consumer = router.add_consumer(low, TransportId(2), 0xA).unwrap();
        router.set_layers(consumer, &[low, high], VideoFormat::Vp8).unwrap();
        // The low layer at 30 frames a second: TID 0 frames of 1,200 bytes, TID 1 of 600,
        // TID 2 of 300 (about 73 kbit/s for TID 0, 110 with TID 1, 148 with all); the high
        // layer about 340 kbit/s.
        let mut seq = 0u16;
        let mut sent = Vec::new();
        let mut publish = |router: &mut Router, pictures: std::ops::Range<u16>| {
            for picture in pictures {
                let now = t0 + Duration::from_millis(1000 * u64::from(picture) / 30);
                let size = [1200, 300, 600, 300][usize::from(picture % 4)];
                let (tid, bytes) = l1t3_packet(0x10, seq, picture, true, size, true);
                sent.extend(fan_out_packet(router, now, low, &bytes).into_iter().map(|(_, r)| (tid, r)));
                let (_, bytes) = l1t3_packet(0x20, seq, picture, true, 1400, true);
                fan_out_packet(router, now, high, &bytes);
                seq += 1;
            }
        };
        let at = |picture: u64| t0 + Duration::from_millis(1000 * picture / 30);
        publish(&mut router, 0..120);
        let allocation = router.allocate(at(120), TransportId(2), 100_000, &[], |_| panic!("no switch"));
        assert_eq!(temporal_state(&router, TransportId(2)), (0, 3), "the cap takes effect at the next picture");
        assert!((70_000..80_000).contains(&allocation.allocated_bps), "TID 0 alone: {allocation:?}");
        // What a probe should look for: TID 0 and 1 together instead of TID 0 alone.
        let wanted = allocation.wanted_bps.unwrap();
        assert!((105_000..125_000).contains(&wanted), "{allocation:?}");
        publish(&mut router, 120..180);
        assert_eq!(temporal_state(&router, TransportId(2)), (0, 0));

        // Up to TID 1 only while TID 2 needs more than its headroom.
        router.allocate(at(180), TransportId(2), 170_000, &[], |_| panic!("no switch"));
        assert_eq!(temporal_state(&router, TransportId(2)).0, 1);
        publish(&mut router, 180..240);
        router.allocate(at(240), TransportId(2), 200_000, &[], |_| panic!("no switch"));
        assert_eq!(temporal_state(&router, TransportId(2)).0, 3, "the whole layer fits with headroom");
        publish(&mut router, 240..300);
        assert_eq!(temporal_state(&router, TransportId(2)), (3, 2));
        router.allocate(at(300), TransportId(2), 160_000, &[], |_| panic!("no switch"));
        assert_eq!(temporal_state(&router, TransportId(2)).0, 3, "staying needs no headroom");

        // One packet a picture: every packet numbers on, picture ids too.
        for (i, (_, r)) in sent.iter().enumerate() {
            assert_eq!(r.sequence_number, i as u16);
            assert_eq!(r.picture_ids.unwrap().picture_id, Some((i as u16, true)));
        }
        let tids = |range: std::ops::Range<usize>| sent[range].iter().map(|(tid, _)| *tid).max();
        // All 120; the 15 TID 0 pictures of the next 60; those and the 14 TID 1 pictures
        // from its sync frame (186) on; all of the last 60 (TID 2's sync
        // frame is 241).
        assert_eq!(sent.len(), 120 + 15 + 29 + 60);
        assert_eq!((tids(120..135), tids(135..164), tids(164..224)), (Some(0), Some(1), Some(2)));
    }
}
