//! Per-subscriber congestion control: the glue between a subscriber's transport and the
//! `bwe` building blocks. Every RTP packet the SFU sends the subscriber carries the SFU's own
//! transport-wide sequence number (stamped into the copy as it is made); the subscriber's
//! transport feedback feeds its [`Estimator`]; the estimate is shared among the streams it
//! receives by [`Router::allocate`] at most every [`ALLOCATION_INTERVAL`]; and when a better
//! layer waits for more bandwidth than the estimate says, or the link is used far below it,
//! [`ProbeController`] clusters of padding (on an RTX stream of the subscriber's) find out
//! whether the path carries more.
//!
//! What it owns: [`SubscriberBwe`], one per subscriber transport that negotiated
//! transport-cc, boxed on its transport; the [`CopyTemplate`] numbered copies are made from;
//! and writing padding-only probe packets.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use crate::bwe::{Estimator, EstimatorConfig, ProbeCluster, ProbeController, SendHistory};
use crate::router::Allocation;
use crate::wire::WireError;
use crate::wire::rtp::{ExtensionIdMap, FIXED_HEADER_LEN, RtpHeader, RtpPacket};

/// How often a subscriber's bandwidth is shared out again at most: often enough to follow a
/// falling estimate within a few hundred milliseconds, seldom enough to cost nothing per packet.
pub const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);

/// Where a subscriber's estimate starts before any feedback (libwebrtc's start): its initial
/// probes find a faster path within a second.
pub const START_BITRATE: u64 = 300_000;

/// The estimate never goes below this: below it no video layer is worth sending anyway.
pub const MIN_BITRATE: u64 = 50_000;

/// What a padding packet is beside its padding: the fixed header, the transport-wide
/// sequence number's extension block, the SRTP tag.
pub const PADDING_PACKET_OVERHEAD: usize = FIXED_HEADER_LEN + 8 + 16;

/// Padding bytes per probe packet at most (the RTP padding count is one byte).
const MAX_PADDING: usize = 255;

/// A cluster is sent as at most this many packets, whatever its size.
const MAX_PROBE_PACKETS: usize = 40;

/// The numbered copy of the packet being forwarded, made once for the subscribers that share
/// its header extension ids: a room's subscribers negotiate the same ids (the SFU's offer
/// names them), so each of their copies is this template with its own transport-wide number
/// written in, a copy of bytes rather than a walk over the header's elements per subscriber.
/// The engine resets it for each packet it forwards.
#[derive(Debug)]
pub struct CopyTemplate {
    bytes: Box<[u8]>,
    /// What it was made for (the subscribers' extension ids, the number's id), its length,
    /// and where the number's two bytes are.
    made: Option<(ExtensionIdMap, u8, usize, usize)>,
}

impl CopyTemplate {
    /// A template for packets of up to `capacity` bytes (a send slot's).
    pub fn new(capacity: usize) -> Self {
        Self { bytes: vec![0; capacity].into_boxed_slice(), made: None }
    }

    /// Forgets the template: another packet is forwarded next.
    pub fn reset(&mut self) {
        self.made = None;
    }

    /// Writes `source` into `dst` with its extensions renumbered after `map` and `number`
    /// added under `extension_id`, as [`RtpPacket::copy_renumbered`] would; the copy's
    /// length, `None` when it does not fit.
    pub fn copy(
        &mut self,
        source: &RtpPacket<&[u8]>,
        map: &ExtensionIdMap,
        (extension_id, number): (u8, u16),
        dst: &mut [u8],
    ) -> Option<usize> {
        let (len, at) = match self.made {
            Some((made_for, id, len, at)) if id == extension_id && made_for == *map => (len, at),
            _ => {
                let room = dst.len().min(self.bytes.len());
                let placeholder = [0; 2];
                let len =
                    source.copy_renumbered(&mut self.bytes[..room], map, Some((extension_id, &placeholder))).ok()?;
                let at = RtpPacket::new_checked(&self.bytes[..len]).ok()?.extension_range(extension_id)?.start;
                self.made = Some((*map, extension_id, len, at));
                (len, at)
            }
        };
        let copy = dst.get_mut(..len)?;
        copy.copy_from_slice(self.bytes.get(..len)?);
        copy.get_mut(at..at + 2)?.copy_from_slice(&number.to_be_bytes());
        Some(len)
    }
}

/// One subscriber's congestion control state.
#[derive(Debug)]
pub struct SubscriberBwe {
    /// The header extension id its packets carry the transport-wide sequence number under.
    pub extension_id: u8,
    pub history: SendHistory,
    pub estimator: Estimator,
    pub probes: ProbeController,
    /// When its bandwidth is next shared out, and what the last sharing came to.
    pub next_allocation: Instant,
    pub allocation: Allocation,
    /// The probe cluster being sent, paced over its duration: its rate is only measurable
    /// when its packets leave spread over time.
    pub pacing: Option<ProbePacing>,
}

/// A probe cluster under way.
#[derive(Debug, Clone, Copy)]
pub struct ProbePacing {
    pub cluster: ProbeCluster,
    /// Packets still to send, and the padding bytes of each.
    pub left: usize,
    pub padding: usize,
    /// When the next one leaves, and the spacing of the rest.
    pub next: Instant,
    pub interval: Duration,
}

impl SubscriberBwe {
    /// Estimates up to `max_bps` (the room's cap on what a subscriber is sent).
    pub fn new(now: Instant, extension_id: u8, max_bps: u64) -> Self {
        let max_bps = max_bps.max(MIN_BITRATE);
        let config = EstimatorConfig { start_bps: START_BITRATE.min(max_bps), min_bps: MIN_BITRATE, max_bps };
        Self {
            extension_id,
            history: SendHistory::new(),
            estimator: Estimator::new(config),
            probes: ProbeController::new(max_bps),
            next_allocation: now,
            allocation: Allocation::default(),
            pacing: None,
        }
    }

    /// When its estimator or probing next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pacing = self.pacing.map(|p| p.next);
        [self.estimator.poll_timeout(), self.probes.poll_timeout(), Some(self.next_allocation), pacing]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the streams allocated use far less than the estimate: the media alone will
    /// never show whether the path grew.
    pub fn application_limited(&self) -> bool {
        self.allocation.allocated_bps * 10 < self.estimator.estimate() * 7
    }

    /// The next probe packet due at `now`, if any: its cluster and padding bytes. A new
    /// cluster is started when the last one is done and one is due.
    pub fn next_probe_packet(&mut self, now: Instant) -> Option<(ProbeCluster, usize)> {
        if self.pacing.is_none() {
            let limited = self.application_limited();
            let cluster = self.probes.poll(now, self.estimator.estimate(), limited)?;
            let (packets, padding) = probe_packets(&cluster);
            let interval = cluster.duration / u32::try_from(packets).unwrap_or(u32::MAX).max(1);
            self.pacing = Some(ProbePacing { cluster, left: packets, padding, next: now, interval });
        }
        let pacing = self.pacing.as_mut()?;
        if pacing.next > now {
            return None;
        }
        pacing.left -= 1;
        pacing.next += pacing.interval;
        let packet = (pacing.cluster, pacing.padding);
        if pacing.left == 0 {
            self.pacing = None;
        }
        Some(packet)
    }
}

/// How a cluster of `bytes` is cut into padding-only packets: (packets, padding bytes each).
pub fn probe_packets(cluster: &ProbeCluster) -> (usize, usize) {
    let bytes = cluster.bytes().max(1);
    let min = usize::try_from(cluster.min_packets).unwrap_or(usize::MAX).max(1);
    let packets = bytes.div_ceil(MAX_PADDING).max(min).min(MAX_PROBE_PACKETS);
    (packets, (bytes / packets).clamp(1, MAX_PADDING))
}

/// Writes a padding-only RTP packet (RFC 3550 §5.1: the P bit, `padding` bytes whose last
/// holds their count) into `buf`, with the transport-wide sequence number under
/// `extension_id`.
pub fn write_padding(
    buf: &mut [u8],
    (payload_type, sequence_number, timestamp, ssrc): (u8, u16, u32, u32),
    (extension_id, transport_seq): (u8, u16),
    padding: usize,
) -> Result<usize, WireError> {
    let padding = u8::try_from(padding).ok().filter(|&p| p > 0).ok_or(WireError::Unrepresentable)?;
    let number = transport_seq.to_be_bytes();
    let elements: [(u8, &[u8]); 1] = [(extension_id, &number)];
    let header = RtpHeader::new(payload_type, sequence_number, timestamp, ssrc).extensions(&elements).write(buf)?;
    let len = header + usize::from(padding);
    let tail = buf.get_mut(header..len).ok_or(WireError::BufferTooSmall)?;
    tail.fill(0);
    tail[usize::from(padding) - 1] = padding;
    // The padding bit of the fixed header's first byte.
    buf[0] |= 0x20;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_from_the_template_are_the_packets_copy_renumbered_would_make() {
        let elements: [(u8, &[u8]); 3] = [(1, &[0xAA; 3]), (3, &[1, 2]), (4, &[9])];
        let mut source = [0u8; 256];
        let len = RtpHeader::new(96, 1, 2, 3).extensions(&elements).write(&mut source).unwrap();
        source[len..len + 40].fill(0x5A);
        let source = RtpPacket::new_checked(&source[..len + 40]).unwrap();
        let mut subscriber = ExtensionIdMap::blank_all();
        subscriber.map(1, 2).unwrap();
        let mut other = ExtensionIdMap::blank_all();
        other.map(4, 7).unwrap();

        let mut template = CopyTemplate::new(256);
        for (map, extension_id, number) in
            [(subscriber, 5, 0x0102_u16), (subscriber, 5, 0xFFFE), (other, 5, 9), (other, 3, 10)]
        {
            let mut expected = [0u8; 256];
            let expected_len = source.copy_renumbered(&mut expected, &map, Some((extension_id, &number.to_be_bytes())));
            let mut copy = [0u8; 256];
            let len = template.copy(&source, &map, (extension_id, number), &mut copy).unwrap();
            assert_eq!(Ok(len), expected_len);
            assert_eq!(copy[..len], expected[..len], "{map:?} with {number} under {extension_id}");
        }
        assert_eq!(template.copy(&source, &other, (3, 1), &mut [0u8; 40]), None, "too small");
    }

    #[test]
    fn padding_packets_carry_the_transport_sequence_number_and_nothing_else() {
        let mut buf = [0u8; 512];
        let len = write_padding(&mut buf, (97, 7, 9000, 0xABC), (5, 0xBEEF), 200).unwrap();
        let packet = RtpPacket::new_checked(&buf[..len]).unwrap();
        assert_eq!((packet.payload_type(), packet.sequence_number(), packet.ssrc()), (97, 7, 0xABC));
        assert_eq!(packet.transport_sequence_number(5), Some(0xBEEF));
        assert_eq!((packet.payload().len(), packet.padding_len()), (0, 200));
        assert_eq!(write_padding(&mut buf, (97, 7, 9000, 0xABC), (5, 1), 0), Err(WireError::Unrepresentable));
        assert_eq!(write_padding(&mut buf[..30], (97, 7, 9000, 0xABC), (5, 1), 200), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn clusters_are_cut_into_enough_small_packets() {
        // The first probe of a path: three times a start of 300 kbit/s, for 15 ms.
        let first = ProbeController::new(10_000_000).poll(Instant::now(), 300_000, false).expect("an initial probe");
        assert_eq!((first.bitrate_bps, first.bytes()), (900_000, 1687));
        assert_eq!(probe_packets(&first), (7, 241));
        let slow = ProbeCluster { bitrate_bps: 100_000, ..first };
        assert_eq!(
            probe_packets(&slow),
            (first.min_packets as usize, 187 / first.min_packets as usize),
            "at least the minimum"
        );
        let fast = ProbeCluster { bitrate_bps: 100_000_000, ..first };
        assert_eq!(probe_packets(&fast), (MAX_PROBE_PACKETS, MAX_PADDING), "bounded");
    }
}
