//! Worker statistics: counted by the worker in plain integers on the hot path, published
//! about once a second into a shared block of atomics that the control plane reads for
//! `/server/cpu/load` and `/metrics`. One writer per block; readers never block it.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a datagram or packet was dropped. Every drop on the forwarding path is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not STUN, DTLS, RTP or RTCP, or a header that fails its checks.
    Malformed,
    /// From an address no transport owns, and not a STUN check that could claim it.
    UnknownSource,
    /// STUN check whose USERNAME names no transport of this worker.
    StunUnknownUfrag,
    /// STUN check with bad MESSAGE-INTEGRITY or FINGERPRINT.
    StunBadIntegrity,
    /// Authenticated STUN check with a comprehension-required attribute ICE-lite does not
    /// understand: refused, and answered with a 420 error response.
    StunUnknownAttribute,
    /// DTLS record the handshake rejected.
    Dtls,
    /// Media before the transport's DTLS handshake and fingerprint check completed.
    NotConnected,
    /// SRTP/SRTCP authentication tag did not verify.
    SrtpAuth,
    /// SRTP/SRTCP packet replayed or too old.
    SrtpReplay,
    /// RTP for an SSRC no producer publishes.
    UnknownSsrc,
    /// The kernel would not take a datagram (socket buffer full, unreachable).
    Send,
    /// The kernel had no receive buffer for a datagram (io_uring ENOBUFS).
    ReceiveNoBuffer,
    /// A handshake datagram that found the handshake backlog full.
    HandshakeBacklog,
    /// A packet for a TCP connection whose write buffer was full, or that had failed.
    TcpWrite,
    /// A TCP connection closed for a zero-length frame or one larger than a slot.
    TcpBadFrame,
    /// A TCP connection accepted past the worker's limit and closed at once.
    TcpOverLimit,
    /// A TCP connection accepted past the limit for its source IP address and closed at once.
    TcpPerIpLimit,
    /// A TCP connection closed because no authenticated ICE check claimed it in time.
    TcpUnauthenticated,
    /// A TCP connection closed because the transport that had claimed it went.
    TcpTransportGone,
    /// A relay message (packet, sender report, keyframe request) that found the queue to
    /// its worker full, or that worker stopped; counted once per destination.
    RelayQueueFull,
    /// A relayed packet for a stream this worker has not imported (yet, or any more).
    RelayUnknownStream,
    /// A packet to relay while every relay buffer was still held by destinations.
    RelayPoolExhausted,
    /// A validated address a transport forgot to make room for a newer one (its list is
    /// bounded); the datagram itself was taken.
    AddressEvicted,
}

impl DropReason {
    pub const ALL: [DropReason; 23] = [
        Self::Malformed,
        Self::UnknownSource,
        Self::StunUnknownUfrag,
        Self::StunBadIntegrity,
        Self::StunUnknownAttribute,
        Self::Dtls,
        Self::NotConnected,
        Self::SrtpAuth,
        Self::SrtpReplay,
        Self::UnknownSsrc,
        Self::Send,
        Self::ReceiveNoBuffer,
        Self::HandshakeBacklog,
        Self::TcpWrite,
        Self::TcpBadFrame,
        Self::TcpOverLimit,
        Self::TcpPerIpLimit,
        Self::TcpUnauthenticated,
        Self::TcpTransportGone,
        Self::RelayQueueFull,
        Self::RelayUnknownStream,
        Self::RelayPoolExhausted,
        Self::AddressEvicted,
    ];

    /// The label used in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownSource => "unknown_source",
            Self::StunUnknownUfrag => "stun_unknown_ufrag",
            Self::StunBadIntegrity => "stun_bad_integrity",
            Self::StunUnknownAttribute => "stun_unknown_attribute",
            Self::Dtls => "dtls",
            Self::NotConnected => "not_connected",
            Self::SrtpAuth => "srtp_auth",
            Self::SrtpReplay => "srtp_replay",
            Self::UnknownSsrc => "unknown_ssrc",
            Self::Send => "send",
            Self::ReceiveNoBuffer => "receive_no_buffer",
            Self::HandshakeBacklog => "handshake_backlog",
            Self::TcpWrite => "tcp_write",
            Self::TcpBadFrame => "tcp_bad_frame",
            Self::TcpOverLimit => "tcp_over_limit",
            Self::TcpPerIpLimit => "tcp_per_ip_limit",
            Self::TcpUnauthenticated => "tcp_unauthenticated",
            Self::TcpTransportGone => "tcp_transport_gone",
            Self::RelayQueueFull => "relay_queue_full",
            Self::RelayUnknownStream => "relay_unknown_stream",
            Self::RelayPoolExhausted => "relay_pool_exhausted",
            Self::AddressEvicted => "address_evicted",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the worker's media quality machinery did: simulcast, congestion control, speaker
/// detection. Counters only grow; the gauges (`Subscribers*`) are the state at publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaStat {
    /// A subscriber's stream switched to another simulcast layer (at its key frame).
    LayerSwitches,
    /// Simulcast subscribers moved a layer down for asking too many key frames.
    LossDowngrades,
    /// Changes of the highest VP8 temporal layer a subscriber is sent.
    TemporalSwitches,
    /// A simulcast layer's SSRC learnt (or learnt anew) from the rid its packets carry.
    LayersBound,
    /// Padding packets sent to probe a subscriber's path.
    ProbePackets,
    /// Transport-wide feedback packets sent to publishers.
    FeedbackSent,
    /// Transport-wide feedback from subscribers used by their estimators.
    FeedbackReceived,
    /// Feedback, or numbered packets, ignored as absurd (sequence numbers or reference times
    /// far off).
    FeedbackIgnored,
    /// Audio packets whose audio level element was not one byte.
    BadAudioLevels,
    /// Gauge: subscribers whose bandwidth is estimated.
    SubscribersEstimated,
    /// Gauge: the sum of their estimates, in kbit/s.
    SubscriberEstimateKbps,
    /// Gauge: simulcast streams sent below the layer their subscriber wants, for its
    /// estimate (or a layer that stopped).
    StreamsBelowWanted,
}

impl MediaStat {
    pub const ALL: [MediaStat; 12] = [
        Self::LayerSwitches,
        Self::LossDowngrades,
        Self::TemporalSwitches,
        Self::LayersBound,
        Self::ProbePackets,
        Self::FeedbackSent,
        Self::FeedbackReceived,
        Self::FeedbackIgnored,
        Self::BadAudioLevels,
        Self::SubscribersEstimated,
        Self::SubscriberEstimateKbps,
        Self::StreamsBelowWanted,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether it is a gauge (a state) rather than a counter.
    pub fn is_gauge(self) -> bool {
        matches!(self, Self::SubscribersEstimated | Self::SubscriberEstimateKbps | Self::StreamsBelowWanted)
    }
}

/// The worker's own counters, updated without atomics.
#[derive(Debug, Default, Clone)]
pub struct WorkerCounters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub drops: [u64; DropReason::ALL.len()],
    /// By [`MediaStat::index`].
    pub media: [u64; MediaStat::ALL.len()],
    /// Relayed packets queued to other workers (one per destination worker).
    pub relayed_out: u64,
    /// Relayed packets taken from other workers' links.
    pub relayed_in: u64,
    pub transports: u64,
    /// Producers held, imported ones included.
    pub producers: u64,
    pub consumers: u64,
    /// ICE-TCP connections open.
    pub tcp_connections: u64,
    pub loop_turns: u64,
    /// Time spent handling work (not waiting in the kernel), since start.
    pub busy: Duration,
    /// Longest single loop turn since the last publish.
    pub longest_turn: Duration,
}

impl WorkerCounters {
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// Counts `count` drops of one reason at once.
    #[inline]
    pub fn drop_many(&mut self, reason: DropReason, count: u64) {
        self.drops[reason.index()] += count;
    }

    pub fn drops_of(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Counts one more of `stat`.
    #[inline]
    pub fn media(&mut self, stat: MediaStat) {
        self.media[stat.index()] += 1;
    }

    pub fn media_of(&self, stat: MediaStat) -> u64 {
        self.media[stat.index()]
    }

    /// Accounts one loop turn's busy time.
    #[inline]
    pub fn turn(&mut self, busy: Duration) {
        self.loop_turns += 1;
        self.busy += busy;
        self.longest_turn = self.longest_turn.max(busy);
    }
}

/// The published copy, shared with the control plane.
#[derive(Debug, Default)]
pub struct SharedStats {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    media: [AtomicU64; MediaStat::ALL.len()],
    relayed_out: AtomicU64,
    relayed_in: AtomicU64,
    transports: AtomicU64,
    producers: AtomicU64,
    consumers: AtomicU64,
    tcp_connections: AtomicU64,
    loop_turns: AtomicU64,
    busy_ns: AtomicU64,
    longest_turn_ns: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl SharedStats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Copies the worker's counters in; the longest turn is reset by the worker after this.
    pub fn publish(&self, c: &WorkerCounters) {
        let r = Ordering::Relaxed;
        self.packets_in.store(c.packets_in, r);
        self.bytes_in.store(c.bytes_in, r);
        self.packets_out.store(c.packets_out, r);
        self.bytes_out.store(c.bytes_out, r);
        for (slot, &value) in self.drops.iter().zip(c.drops.iter()).chain(self.media.iter().zip(c.media.iter())) {
            slot.store(value, r);
        }
        self.relayed_out.store(c.relayed_out, r);
        self.relayed_in.store(c.relayed_in, r);
        self.transports.store(c.transports, r);
        self.producers.store(c.producers, r);
        self.consumers.store(c.consumers, r);
        self.tcp_connections.store(c.tcp_connections, r);
        self.loop_turns.store(c.loop_turns, r);
        self.busy_ns.store(nanos(c.busy), r);
        self.longest_turn_ns.store(nanos(c.longest_turn), r);
    }

    /// A consistent-enough copy for reporting (each field is read atomically).
    pub fn snapshot(&self) -> WorkerCounters {
        let r = Ordering::Relaxed;
        let mut drops = [0; DropReason::ALL.len()];
        for (value, slot) in drops.iter_mut().zip(self.drops.iter()) {
            *value = slot.load(r);
        }
        let mut media = [0; MediaStat::ALL.len()];
        for (value, slot) in media.iter_mut().zip(self.media.iter()) {
            *value = slot.load(r);
        }
        WorkerCounters {
            packets_in: self.packets_in.load(r),
            bytes_in: self.bytes_in.load(r),
            packets_out: self.packets_out.load(r),
            bytes_out: self.bytes_out.load(r),
            drops,
            media,
            relayed_out: self.relayed_out.load(r),
            relayed_in: self.relayed_in.load(r),
            transports: self.transports.load(r),
            producers: self.producers.load(r),
            consumers: self.consumers.load(r),
            tcp_connections: self.tcp_connections.load(r),
            loop_turns: self.loop_turns.load(r),
            busy: Duration::from_nanos(self.busy_ns.load(r)),
            longest_turn: Duration::from_nanos(self.longest_turn_ns.load(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_have_distinct_slots_and_names() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn published_counters_read_back() {
        let mut counters = WorkerCounters {
            packets_in: 5,
            tcp_connections: 3,
            relayed_out: 4,
            relayed_in: 6,
            producers: 2,
            consumers: 9,
            ..WorkerCounters::default()
        };
        counters.drop(DropReason::SrtpAuth);
        counters.drop(DropReason::SrtpAuth);
        counters.drop_many(DropReason::TcpWrite, 7);
        counters.media(MediaStat::LayerSwitches);
        counters.media[MediaStat::SubscriberEstimateKbps.index()] = 1500;
        counters.turn(Duration::from_micros(30));
        counters.turn(Duration::from_micros(10));
        let shared = SharedStats::new();
        shared.publish(&counters);
        let seen = shared.snapshot();
        assert_eq!(seen.packets_in, 5);
        assert_eq!(seen.drops_of(DropReason::SrtpAuth), 2);
        assert_eq!(seen.drops_of(DropReason::TcpWrite), 7);
        assert_eq!(
            (seen.media_of(MediaStat::LayerSwitches), seen.media_of(MediaStat::SubscriberEstimateKbps)),
            (1, 1500)
        );
        assert_eq!(seen.tcp_connections, 3);
        assert_eq!((seen.relayed_out, seen.relayed_in, seen.producers, seen.consumers), (4, 6, 2, 9));
        assert_eq!(seen.loop_turns, 2);
        assert_eq!(seen.busy, Duration::from_micros(40));
        assert_eq!(seen.longest_turn, Duration::from_micros(30));
    }
}
