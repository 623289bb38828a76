//! Per-consumer RTP header rewriting: maps each incoming packet's (SSRC, sequence number,
//! timestamp) onto the consumer's own continuous stream, so a subscriber's decoder sees
//! one unbroken stream while its source changes underneath (merged rooms, pause/resume,
//! simulcast layer switches), and carries the payload type and header extension ids the
//! subscriber negotiated ([`ConsumerFormat`]).
//!
//! A packet the consumer leaves out ([`StreamRewriter::skip`]: a frame of a temporal layer
//! its subscriber is not sent) gives its number to the packets after it, so the subscriber
//! sees no gap it would NACK; the recent skips are remembered (`router::skips`) so that a
//! late packet or a NACK from before them still maps to the number it was sent as.
//!
//! Rules: feed packets in arrival order with the time they arrived; after a source change
//! or a resume, call [`StreamRewriter::resync`] (a new SSRC resyncs by itself). Packets
//! from before the current mapping began are refused, never numbered twice; that floor is
//! dropped once the stream is half the 16-bit sequence space past it, where nothing from
//! before it can still arrive and the circle could no longer tell older from newer. A late
//! packet from before the skips still remembered is refused too, and so is one that was
//! skipped: neither can be given a number that is surely its own.
#![forbid(unsafe_code)]

use std::time::Instant;

use super::skips::{Place, SkipLog};
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
    /// output = input + offset (wrapping) for the newest input; an older one's output is
    /// further on by the number of packets skipped after it.
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
    /// Left out ([`StreamRewriter::skip`]): its number went to the packets after it.
    Skipped,
    /// Older than the skips still remembered: how many packets after it were left out, and
    /// so its number, is no longer known.
    SkipsForgotten,
}

/// One consumer stream's numbering state.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    output_ssrc: u32,
    clock_rate: u32,
    format: ConsumerFormat,
    mapping: Option<Mapping>,
    /// The current mapping's recent skips.
    skips: SkipLog,
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
            skips: SkipLog::sequence_numbers(),
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
        let (mapping, skipped_after) = match &mut self.mapping {
            Some(m) if m.source_ssrc == ssrc && !self.resync_requested => {
                if seq_is_newer(seq, m.highest_seq) {
                    m.advance(seq);
                    (*m, 0)
                } else {
                    m.check_late(seq)?;
                    (*m, kept(self.skips.place(seq, m.highest_seq))?)
                }
            }
            _ => (self.start_mapping(now, ssrc, seq, ts), 0),
        };
        let out_seq = seq.wrapping_add(mapping.seq_offset).wrapping_add(skipped_after);
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

    /// Leaves out a packet of the current source that arrived at `now` (a frame of a layer
    /// the subscriber is not sent): the packets after it are numbered as though it had never
    /// been sent, so the subscriber sees no gap. Only a packet newer than every one numbered
    /// so far can give its number away; a late one's number lies between numbers given out
    /// already, and stays a gap (the packet keeps it, should a retransmission send it after
    /// all). A packet that starts a mapping (a new source, a resync) starts it skipped.
    pub fn skip(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32) {
        let m = match &mut self.mapping {
            Some(m) if m.source_ssrc == ssrc && !self.resync_requested => {
                if !seq_is_newer(seq, m.highest_seq) {
                    return;
                }
                m.advance(seq);
                m
            }
            _ => {
                self.start_mapping(now, ssrc, seq, ts);
                let Some(m) = &mut self.mapping else { return };
                m
            }
        };
        m.seq_offset = m.seq_offset.wrapping_sub(1);
        self.skips.skip(seq);
    }

    /// The current source's SSRC and the input sequence number that was sent as
    /// `output_seq`; used to map a subscriber's NACK back to the source. `None` for a
    /// number the current mapping did not send (from before it, or before the skips it
    /// remembers).
    pub fn input_seq_for(&self, output_seq: u16) -> Option<(u32, u16)> {
        let m = self.mapping?;
        let input = self.skips.kept_at(output_seq.wrapping_sub(m.seq_offset), m.highest_seq)?;
        m.check_late(input).ok()?;
        Some((m.source_ssrc, input))
    }

    /// What is added to `source_ssrc`'s RTP timestamps, while it is the current source.
    pub fn timestamp_offset_for(&self, source_ssrc: u32) -> Option<u32> {
        self.mapping.filter(|m| m.source_ssrc == source_ssrc).map(|m| m.ts_offset)
    }

    /// The header fields a packet of the current source was sent with, for resending it;
    /// `None` for a packet that was skipped, or is from before the mapping or the skips it
    /// remembers.
    pub fn output_for(&self, input_seq: u16, input_ts: u32) -> Option<Rewritten> {
        let m = self.mapping?;
        m.check_late(input_seq).ok()?;
        let skipped_after = kept(self.skips.place(input_seq, m.highest_seq)).ok()?;
        Some(Rewritten {
            ssrc: self.output_ssrc,
            sequence_number: input_seq.wrapping_add(m.seq_offset).wrapping_add(skipped_after),
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
        self.skips.clear();
        mapping
    }
}

impl Mapping {
    /// `seq`, newer than every input so far, arrived.
    fn advance(&mut self, seq: u16) {
        self.highest_seq = seq;
        self.floor &= seq.wrapping_sub(self.first_seq) < 0x8000;
    }

    /// Refuses an input no newer than the newest when it is from before the mapping.
    fn check_late(&self, seq: u16) -> Result<(), RewriteRefusal> {
        if self.floor && self.highest_seq.wrapping_sub(seq) > self.highest_seq.wrapping_sub(self.first_seq) {
            return Err(RewriteRefusal::BeforeMapping);
        }
        Ok(())
    }
}

/// How many packets after a kept one were skipped; a refusal for one that has no number.
fn kept(place: Place) -> Result<u16, RewriteRefusal> {
    match place {
        Place::Kept { skipped_after } => Ok(skipped_after),
        Place::Skipped => Err(RewriteRefusal::Skipped),
        Place::Unknown => Err(RewriteRefusal::SkipsForgotten),
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
        // A NACK for a number sent before the pause maps to nothing, not to a packet of the
        // paused period that the cache may still hold.
        assert_eq!(rw.input_seq_for(10), None);
        assert_eq!(rw.output_for(499, 0), None);
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

    /// Feeds `packets` (input sequence number, and whether it is skipped) to a rewriter that
    /// starts at output 1000; the output numbers of the packets sent.
    fn run(rw: &mut StreamRewriter, t0: Instant, packets: &[(u16, bool)]) -> Vec<Result<u16, RewriteRefusal>> {
        let mut out = Vec::new();
        for &(seq, skipped) in packets {
            if skipped {
                rw.skip(t0, 1, seq, u32::from(seq));
            } else {
                out.push(rw.rewrite(t0, 1, seq, u32::from(seq)).map(|r| r.sequence_number));
            }
        }
        out
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(7, 90_000);
        let packets = [(10, false), (11, true), (12, false), (13, true), (14, true), (15, false), (16, false)];
        assert_eq!(run(&mut rw, t0, &packets), [Ok(10), Ok(11), Ok(12), Ok(13)]);
        // A stream whose first packet is skipped, continuing where an earlier one stopped.
        let mut rw = StreamRewriter::new(7, 90_000);
        rw.rewrite(t0, 1, 500, 0).unwrap();
        rw.resync();
        assert_eq!(run(&mut rw, t0, &[(20, true), (21, false), (22, true), (23, false)]), [Ok(501), Ok(502)]);
    }

    #[test]
    fn late_packets_around_a_skip_keep_their_own_numbers_or_are_refused() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(7, 90_000);
        // 11 and 13 arrive after the skip of 14; 12 is skipped; 17 comes before 16.
        let packets = [(10, false), (14, true), (12, true), (15, false), (11, false), (13, false), (17, false)];
        // 12 is late when skipped: its number stays a gap between 11's and 13's.
        assert_eq!(run(&mut rw, t0, &packets), [Ok(10), Ok(14), Ok(11), Ok(13), Ok(16)]);
        assert_eq!(rw.rewrite(t0, 1, 16, 0).map(|r| r.sequence_number), Ok(15));
        assert_eq!(rw.rewrite(t0, 1, 14, 0), Err(RewriteRefusal::Skipped), "a skipped packet has no number");
        assert_eq!(rw.rewrite(t0, 1, 15, 0).map(|r| r.sequence_number), Ok(14), "a duplicate keeps its number");
        rw.skip(t0, 1, 14, 0);
        assert_eq!(rw.rewrite(t0, 1, 17, 0).map(|r| r.sequence_number), Ok(16), "skipping again changes nothing");
    }

    #[test]
    fn nacks_map_across_skips() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(7, 90_000);
        run(&mut rw, t0, &[(10, false), (11, true), (12, true), (13, false), (14, true), (15, false)]);
        // Sent: 10 as 10, 13 as 11, 15 as 12.
        assert_eq!(rw.input_seq_for(10), Some((1, 10)));
        assert_eq!(rw.input_seq_for(11), Some((1, 13)));
        assert_eq!(rw.input_seq_for(12), Some((1, 15)));
        assert_eq!(rw.input_seq_for(9), None, "from before the mapping");
        assert_eq!(rw.output_for(13, 99).map(|r| (r.sequence_number, r.timestamp)), Some((11, 99)));
        assert_eq!(rw.output_for(10, 0).map(|r| r.sequence_number), Some(10));
        assert_eq!(rw.output_for(12, 0), None, "skipped: never sent");
        // Before and after a source switch, which starts a new numbering.
        rw.rewrite(t0, 2, 700, 0).unwrap();
        assert_eq!(rw.input_seq_for(13), Some((2, 700)));
        assert_eq!(rw.input_seq_for(12), None, "the other source's packets are not this mapping's");
    }

    #[test]
    fn packets_before_the_skips_remembered_are_refused() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(7, 90_000);
        rw.rewrite(t0, 1, 0, 0).unwrap();
        rw.rewrite(t0, 1, 1, 0).unwrap();
        // Every other packet skipped: one run each, until the first runs are forgotten.
        let runs = super::super::skips::SKIP_RUNS as u16 + 4;
        for n in 1..=runs {
            rw.skip(t0, 1, 2 * n, 0);
            assert_eq!(rw.rewrite(t0, 1, 2 * n + 1, 0).unwrap().sequence_number, n + 1);
        }
        assert_eq!(rw.rewrite(t0, 1, 1, 0), Err(RewriteRefusal::SkipsForgotten));
        assert_eq!(rw.input_seq_for(1), None);
        assert_eq!(rw.output_for(1, 0), None);
        assert_eq!(rw.rewrite(t0, 1, 2 * runs - 1, 0).unwrap().sequence_number, runs, "a recent one keeps its place");
        assert_eq!(rw.input_seq_for(runs), Some((1, 2 * runs - 1)));
    }

    #[test]
    fn skips_across_the_sequence_number_wrap() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(7, 90_000);
        let packets = [(65_533, false), (65_534, true), (65_535, true), (0, false), (1, true), (2, false)];
        assert_eq!(run(&mut rw, t0, &packets), [Ok(65_533), Ok(65_534), Ok(65_535)]);
        assert_eq!(rw.input_seq_for(65_535), Some((1, 2)));
        assert_eq!(rw.input_seq_for(65_534), Some((1, 0)));
        assert_eq!(rw.input_seq_for(65_533), Some((1, 65_533)));
        // Output crossing its own wrap while input does not.
        let mut rw = StreamRewriter::new(7, 90_000);
        rw.rewrite(t0, 1, 65_535, 0).unwrap();
        rw.resync();
        let out = run(&mut rw, t0, &[(100, false), (101, true), (102, false)]);
        assert_eq!(out, [Ok(0), Ok(1)]);
        assert_eq!(rw.input_seq_for(1), Some((1, 102)));
        assert_eq!(rw.input_seq_for(0), Some((1, 100)));
        // A long stream with every third packet skipped is never refused, late packets included.
        let mut rw = StreamRewriter::new(7, 90_000);
        let mut expected = 40_000u16;
        for i in 0..200_000u32 {
            let seq = (i + 40_000) as u16;
            if i % 3 == 2 {
                rw.skip(t0, 1, seq, i);
                continue;
            }
            assert_eq!(rw.rewrite(t0, 1, seq, i).map(|r| r.sequence_number), Ok(expected), "packet {i}");
            assert_eq!(rw.input_seq_for(expected), Some((1, seq)));
            expected = expected.wrapping_add(1);
            if i % 1000 == 999 {
                let late = seq.wrapping_sub(3);
                assert_eq!(rw.rewrite(t0, 1, late, i).map(|r| r.sequence_number), Ok(expected.wrapping_sub(3)));
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
