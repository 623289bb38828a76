//! Per-consumer RTP header rewriting: maps each incoming packet's (SSRC, sequence number,
//! timestamp) onto the consumer's own continuous stream, so a subscriber's decoder sees
//! one unbroken stream while its source changes underneath (merged rooms, pause/resume,
//! simulcast layer switches), and carries the payload type and header extension ids the
//! subscriber negotiated ([`ConsumerFormat`]).
//!
//! Rules: feed packets in arrival order with the time they arrived; after a source change
//! or a resume, call [`StreamRewriter::resync`] (a new SSRC resyncs by itself). Packets
//! from before the current mapping began are refused, never numbered twice; that floor is
//! dropped once the stream is half the 16-bit sequence space past it, where nothing from
//! before it can still arrive and the circle could no longer tell older from newer.
#![forbid(unsafe_code)]

use std::time::Instant;

use crate::wire::WireError;
use crate::wire::rtp::ExtensionIdMap;
use crate::wire::video::Vp8PictureIds;

/// How one subscriber numbers what it receives: the payload type it negotiated for the
/// stream's codec and its header extension ids. Each side of the SFU negotiates its own
/// numbers (a player may call VP8 120 while its publisher calls it 96), so every consumer
/// writes its own into each packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerFormat {
    payload_type: Option<u8>,
    extensions: ExtensionIdMap,
}

impl ConsumerFormat {
    /// Forwards payload types and extension ids as the publisher wrote them.
    pub fn as_published() -> Self {
        Self { payload_type: None, extensions: ExtensionIdMap::identity() }
    }

    /// Sends the stream as `payload_type` (0..=127) with extensions renumbered after `extensions`.
    pub fn new(payload_type: u8, extensions: ExtensionIdMap) -> Result<Self, WireError> {
        if payload_type > 0x7F {
            return Err(WireError::Unrepresentable);
        }
        Ok(Self { payload_type: Some(payload_type), extensions })
    }

    /// The payload type to write, when it is not the publisher's.
    pub fn payload_type(&self) -> Option<u8> {
        self.payload_type
    }

    pub fn extensions(&self) -> &ExtensionIdMap {
        &self.extensions
    }
}

/// A mapping from one source's numbering onto the output numbering.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    source_ssrc: u32,
    /// output = input + offset (wrapping).
    seq_offset: u16,
    ts_offset: u32,
    /// The first input sequence number of this mapping: older packets are refused.
    first_seq: u16,
    /// The newest input sequence number of this mapping.
    highest_seq: u16,
    /// Whether `first_seq` still tells older packets apart. Once the stream is half the
    /// sequence space past it, no packet from before the mapping can still arrive, and on
    /// the 16-bit circle every newer packet would look older than `first_seq`.
    floor: bool,
}

/// The rewritten header fields of one forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
    /// The payload type and extension ids as the subscriber knows them.
    pub format: ConsumerFormat,
    /// The VP8 picture ids to write into the payload descriptor, for a consumer whose
    /// source changes between simulcast layers; `None` leaves them as they are.
    pub picture_ids: Option<Vp8PictureIds>,
}

/// Where a consumer stream's numbering stood: its last sequence number and timestamp, and
/// when that packet arrived. A later consumer sent on the same SSRC to the same subscriber
/// continues from it ([`StreamRewriter::continue_after`]), since the subscriber's SRTP
/// context would drop numbers it has seen as replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputPosition {
    sequence_number: u16,
    timestamp: u32,
    at: Instant,
}

impl OutputPosition {
    /// The RTP timestamp last sent.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }
}

/// Why a packet is not forwarded to this consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteRefusal {
    /// Older than the current mapping (it belongs to a source or a period already left).
    BeforeMapping,
}

/// One consumer stream's numbering state.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    output_ssrc: u32,
    clock_rate: u32,
    format: ConsumerFormat,
    mapping: Option<Mapping>,
    resync_requested: bool,
    /// Highest output sequence number and timestamp sent, with when the packet arrived.
    last_output: Option<OutputPosition>,
}

/// Sequence-number order on the 16-bit circle (RFC 3550 §A.1 style): is `a` after `b`?
pub fn seq_is_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl StreamRewriter {
    /// A consumer stream sent as `output_ssrc`, whose media clock runs at `clock_rate` Hz
    /// (90,000 for video, 48,000 for Opus).
    pub fn new(output_ssrc: u32, clock_rate: u32) -> Self {
        Self {
            output_ssrc,
            clock_rate: clock_rate.max(1),
            format: ConsumerFormat::as_published(),
            mapping: None,
            resync_requested: false,
            last_output: None,
        }
    }

    pub fn output_ssrc(&self) -> u32 {
        self.output_ssrc
    }

    /// Forwards packets in the subscriber's `format` (the default keeps the publisher's).
    pub fn set_format(&mut self, format: ConsumerFormat) {
        self.format = format;
    }

    /// Where the numbering stands, once a packet was sent.
    pub fn position(&self) -> Option<OutputPosition> {
        self.last_output
    }

    /// Numbers the stream on from `position`, where an earlier stream on this SSRC stopped,
    /// as after a resync; only before the first packet.
    pub fn continue_after(&mut self, position: OutputPosition) {
        if self.mapping.is_none() {
            self.last_output = Some(position);
        }
    }

    /// The next packet starts a new mapping (after a pause, or a switch to another source
    /// that may reuse the SSRC).
    pub fn resync(&mut self) {
        self.resync_requested = true;
    }

    /// Numbers a packet that arrived at `now`.
    pub fn rewrite(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32) -> Result<Rewritten, RewriteRefusal> {
        let mapping = match &mut self.mapping {
            Some(m) if m.source_ssrc == ssrc && !self.resync_requested => {
                if seq_is_newer(seq, m.highest_seq) {
                    m.highest_seq = seq;
                    m.floor &= seq.wrapping_sub(m.first_seq) < 0x8000;
                } else if m.floor && m.highest_seq.wrapping_sub(seq) > m.highest_seq.wrapping_sub(m.first_seq) {
                    return Err(RewriteRefusal::BeforeMapping);
                }
                *m
            }
            _ => self.start_mapping(now, ssrc, seq, ts),
        };
        let out_seq = seq.wrapping_add(mapping.seq_offset);
        let out_ts = ts.wrapping_add(mapping.ts_offset);
        match self.last_output {
            Some(last) if !seq_is_newer(out_seq, last.sequence_number) => {}
            _ => self.last_output = Some(OutputPosition { sequence_number: out_seq, timestamp: out_ts, at: now }),
        }
        Ok(Rewritten {
            ssrc: self.output_ssrc,
            sequence_number: out_seq,
            timestamp: out_ts,
            format: self.format,
            picture_ids: None,
        })
    }

    /// The current source's SSRC and the input sequence number that was sent as
    /// `output_seq`; used to map a subscriber's NACK back to the source.
    pub fn input_seq_for(&self, output_seq: u16) -> Option<(u32, u16)> {
        let m = self.mapping?;
        Some((m.source_ssrc, output_seq.wrapping_sub(m.seq_offset)))
    }

    /// What is added to `source_ssrc`'s RTP timestamps, while it is the current source.
    pub fn timestamp_offset_for(&self, source_ssrc: u32) -> Option<u32> {
        self.mapping.filter(|m| m.source_ssrc == source_ssrc).map(|m| m.ts_offset)
    }

    /// The header fields a packet of the current source was sent with, for resending it.
    pub fn output_for(&self, input_seq: u16, input_ts: u32) -> Option<Rewritten> {
        let m = self.mapping?;
        Some(Rewritten {
            ssrc: self.output_ssrc,
            sequence_number: input_seq.wrapping_add(m.seq_offset),
            timestamp: input_ts.wrapping_add(m.ts_offset),
            format: self.format,
            picture_ids: None,
        })
    }

    fn start_mapping(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32) -> Mapping {
        self.resync_requested = false;
        let (out_seq, out_ts) = match self.last_output {
            // Continue right after what the consumer last saw; advance the clock by the
            // wall time that passed (at least one tick, so timestamps never repeat).
            Some(last) => {
                let elapsed = now.saturating_duration_since(last.at);
                let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u64;
                let ticks = u32::try_from(ticks.max(1)).unwrap_or(u32::MAX);
                (last.sequence_number.wrapping_add(1), last.timestamp.wrapping_add(ticks))
            }
            // The first mapping keeps the source's numbering.
            None => (seq, ts),
        };
        let mapping = Mapping {
            source_ssrc: ssrc,
            seq_offset: out_seq.wrapping_sub(seq),
            ts_offset: out_ts.wrapping_sub(ts),
            first_seq: seq,
            highest_seq: seq,
            floor: true,
        };
        self.mapping = Some(mapping);
        mapping
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_consumer_format_takes_only_seven_bit_payload_types() {
        let format = ConsumerFormat::new(127, ExtensionIdMap::blank_all()).unwrap();
        assert_eq!(format.payload_type(), Some(127));
        assert_eq!(ConsumerFormat::new(128, ExtensionIdMap::identity()), Err(WireError::Unrepresentable));
        assert_eq!(ConsumerFormat::as_published().payload_type(), None);
    }

    #[test]
    fn first_source_keeps_its_numbering_under_the_consumer_ssrc() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(0xAAAA, 90_000);
        let out = rw.rewrite(t0, 0x1111, 100, 5000).unwrap();
        assert_eq!(
            out,
            Rewritten {
                ssrc: 0xAAAA,
                sequence_number: 100,
                timestamp: 5000,
                format: ConsumerFormat::as_published(),
                picture_ids: None
            }
        );
        let out = rw.rewrite(t0, 0x1111, 101, 8000).unwrap();
        assert_eq!((out.sequence_number, out.timestamp), (101, 8000));
    }

    #[test]
    fn source_switch_continues_numbering_and_clock() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(7, 90_000);
        rw.rewrite(t0, 1, 65_535, 1_000).unwrap();
        let switched = rw.rewrite(t0 + Duration::from_millis(100), 2, 40, 777_000).unwrap();
        assert_eq!(switched.sequence_number, 0, "continues across the 16-bit wrap");
        assert_eq!(switched.timestamp, 1_000 + 9_000, "100 ms at 90 kHz");
        let next = rw.rewrite(t0 + Duration::from_millis(133), 2, 41, 780_000).unwrap();
        assert_eq!((next.sequence_number, next.timestamp), (1, 13_000));
    }

    #[test]
    fn packets_from_before_a_resync_are_refused() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(7, 48_000);
        rw.rewrite(t0, 1, 10, 0).unwrap();
        rw.resync();
        let resumed = rw.rewrite(t0 + Duration::from_secs(1), 1, 500, 480_000).unwrap();
        assert_eq!(resumed.sequence_number, 11, "no gap for the paused period");
        assert_eq!(resumed.timestamp, 48_000);
        assert_eq!(rw.rewrite(t0, 1, 499, 0), Err(RewriteRefusal::BeforeMapping));
        assert_eq!(rw.rewrite(t0, 1, 501, 480_960).unwrap().sequence_number, 12);
    }

    #[test]
    fn late_packets_of_the_current_mapping_keep_their_place() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(7, 90_000);
        rw.rewrite(t0, 1, 10, 0).unwrap();
        rw.rewrite(t0, 1, 12, 0).unwrap();
        assert_eq!(rw.rewrite(t0, 1, 11, 0).unwrap().sequence_number, 11);
        assert_eq!(rw.input_seq_for(11), Some((1, 11)));
        assert_eq!(
            rw.output_for(11, 3),
            Some(Rewritten {
                ssrc: 7,
                sequence_number: 11,
                timestamp: 3,
                format: ConsumerFormat::as_published(),
                picture_ids: None
            })
        );
    }

    #[test]
    fn a_long_stream_is_never_refused() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(7, 90_000);
        for i in 0..200_000u32 {
            let seq = (i + 40_000) as u16;
            assert_eq!(rw.rewrite(t0, 1, seq, i).map(|r| r.sequence_number), Ok(seq), "packet {i}");
            if i % 1000 == 999 {
                let late = seq.wrapping_sub(5);
                assert!(rw.rewrite(t0, 1, late, i - 5).is_ok(), "a late packet {i} in keeps its place");
            }
        }
    }

    #[test]
    fn newer_on_the_circle() {
        assert!(seq_is_newer(1, 65_535));
        assert!(!seq_is_newer(65_535, 1));
        assert!(!seq_is_newer(5, 5));
    }
}
