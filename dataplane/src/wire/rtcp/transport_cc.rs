//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01
//! §3.1): RTPFB (PT 205) FMT 15. The receiver of a transport reports, for a range of
//! transport-wide sequence numbers, which packets arrived and when, so that the sender can
//! estimate the bandwidth from the delay and loss it caused.
//!
//! Layout after the two SSRCs: base sequence number (16), packet status count (16), reference
//! time (24, signed, 64 ms units), feedback packet count (8); then packet chunks (16 bits
//! each) until the status count is covered; then one receive delta per received packet, 8-bit
//! unsigned or 16-bit signed in 250 µs units, each relative to the previous received packet
//! (the first to the reference time).

use super::packet_type::TRANSPORT_FEEDBACK;
use super::{HEADER_LEN, PADDING_BIT, packet_out};
use crate::wire::WireError;
use crate::wire::be::{read_u16, read_u24, read_u32, write_u16, write_u24, write_u32};

/// Transport-layer feedback format of transport-wide congestion control feedback.
pub(super) const TRANSPORT_CC_FORMAT: u8 = 15;

/// One receive delta tick, in microseconds.
pub const DELTA_TICK_US: i64 = 250;
/// One reference time tick, in microseconds.
pub const REFERENCE_TICK_US: i64 = 64_000;
/// Reference time ticks are a whole number of delta ticks: 64 ms / 250 µs.
const DELTA_TICKS_PER_REFERENCE_TICK: i64 = REFERENCE_TICK_US / DELTA_TICK_US;

/// Sender SSRC and media SSRC, between the common header and the FCI.
const SSRCS_LEN: usize = 8;
/// Base sequence number, status count, reference time and feedback packet count.
const FIXED_FCI_LEN: usize = 8;
/// Where the first chunk starts in a packet (header included).
const CHUNKS_AT: usize = HEADER_LEN + SSRCS_LEN + FIXED_FCI_LEN;
const CHUNK_LEN: usize = 2;
const REFERENCE_TIME_BITS: u32 = 24;
const REFERENCE_TIME_MASK: u32 = (1 << REFERENCE_TIME_BITS) - 1;
/// The longest run one run-length chunk can carry (13 bits).
const MAX_RUN_LENGTH: usize = 0x1FFF;
/// Symbols in a status vector chunk of 1-bit and of 2-bit symbols.
const ONE_BIT_SYMBOLS: usize = 14;
const TWO_BIT_SYMBOLS: usize = 7;
const VECTOR_CHUNK_BIT: u16 = 0x8000;
const TWO_BIT_SYMBOL_BIT: u16 = 0x4000;
/// A packet's length word counts 32-bit words minus one in 16 bits.
const MAX_PACKET_LEN: usize = 4 << 16;

/// What a packet status symbol says about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    NotReceived = 0,
    /// Received; its delta takes one unsigned byte.
    SmallDelta = 1,
    /// Received; its delta takes two bytes, signed.
    LargeDelta = 2,
}

impl Status {
    fn from_symbol(symbol: u16) -> Result<Self, WireError> {
        match symbol {
            0 => Ok(Self::NotReceived),
            1 => Ok(Self::SmallDelta),
            2 => Ok(Self::LargeDelta),
            _ => Err(WireError::ReservedValue),
        }
    }

    fn delta_len(self) -> usize {
        match self {
            Self::NotReceived => 0,
            Self::SmallDelta => 1,
            Self::LargeDelta => 2,
        }
    }
}

/// The `index`th symbol of `chunk`, or `None` past the symbols it holds.
fn chunk_symbol(chunk: u16, index: usize) -> Option<u16> {
    if chunk & VECTOR_CHUNK_BIT == 0 {
        (index < usize::from(chunk & MAX_RUN_LENGTH as u16)).then_some(chunk >> 13 & 0b11)
    } else if chunk & TWO_BIT_SYMBOL_BIT == 0 {
        (index < ONE_BIT_SYMBOLS).then(|| chunk >> (13 - index) & 1)
    } else {
        (index < TWO_BIT_SYMBOLS).then(|| chunk >> (12 - 2 * index) & 0b11)
    }
}

/// Walks the packet chunks, yielding one status per packet until the status count is
/// covered. A chunk may cover more symbols than remain: the extra ones are not packets.
#[derive(Debug, Clone)]
struct StatusWalk<'a> {
    /// From the first chunk to the end of the body.
    chunks: &'a [u8],
    /// Offset of the current chunk in `chunks`.
    at: usize,
    /// Symbols of the current chunk already yielded.
    within: usize,
    remaining: u16,
}

impl Iterator for StatusWalk<'_> {
    type Item = Result<Status, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        loop {
            let Some(chunk) = self.chunks.get(self.at..self.at + CHUNK_LEN) else {
                self.remaining = 0;
                return Some(Err(WireError::BadLength));
            };
            if let Some(symbol) = chunk_symbol(read_u16(chunk, 0), self.within) {
                self.within += 1;
                self.remaining -= 1;
                let status = Status::from_symbol(symbol);
                if status.is_err() {
                    self.remaining = 0;
                }
                return Some(status);
            }
            // A run of length zero covers nothing: the walk moves on, bounded by the body.
            self.at += CHUNK_LEN;
            self.within = 0;
        }
    }
}

/// A checked transport-wide feedback packet.
#[derive(Debug, Clone, Copy)]
pub struct TransportFeedback<'a> {
    /// From the sender SSRC to the end of the receive deltas.
    body: &'a [u8],
    /// Offset of the first receive delta in `body`.
    deltas_at: usize,
}

impl<'a> TransportFeedback<'a> {
    pub(super) fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let fci = body.get(SSRCS_LEN..).ok_or(WireError::BadLength)?;
        if fci.len() < FIXED_FCI_LEN {
            return Err(WireError::BadLength);
        }
        let status_count = read_u16(fci, 2);
        // libwebrtc refuses empty feedback too; it would say nothing.
        if status_count == 0 {
            return Err(WireError::BadLength);
        }
        let chunks_at = SSRCS_LEN + FIXED_FCI_LEN;
        let mut walk = StatusWalk { chunks: &body[chunks_at..], at: 0, within: 0, remaining: status_count };
        let mut deltas_len = 0;
        for status in walk.by_ref() {
            deltas_len += status?.delta_len();
        }
        let deltas_at = chunks_at + walk.at + CHUNK_LEN;
        let end = deltas_at + deltas_len;
        // Padding with the P bit is already cut off; a sender that pads to the word boundary
        // without it leaves up to three bytes, and nothing else may follow the deltas.
        if body.len() != end && body.len() != (HEADER_LEN + end).next_multiple_of(4) - HEADER_LEN {
            return Err(WireError::BadLength);
        }
        Ok(Self { body: &body[..end], deltas_at })
    }

    /// The SSRC of the receiver that sends the feedback.
    pub fn sender_ssrc(&self) -> u32 {
        read_u32(self.body, 0)
    }

    /// The SSRC of one media source of the transport (senders set it to any of them).
    pub fn media_ssrc(&self) -> u32 {
        read_u32(self.body, 4)
    }

    /// The transport-wide sequence number of the first packet reported.
    pub fn base_sequence_number(&self) -> u16 {
        read_u16(self.body, SSRCS_LEN)
    }

    /// How many consecutive packets, from the base sequence number on, are reported (≥ 1).
    pub fn packet_status_count(&self) -> u16 {
        read_u16(self.body, SSRCS_LEN + 2)
    }

    /// The reference time in 64 ms ticks, sign-extended from 24 bits. Senders let it wrap
    /// modulo 2^24, so compare consecutive values modulo 2^24 too.
    pub fn reference_time(&self) -> i32 {
        // Shifting the 24-bit field to the top and back extends its sign.
        (read_u24(self.body, SSRCS_LEN + 4) << 8) as i32 >> 8
    }

    /// The feedback packet count: increments by one per feedback packet sent, wrapping.
    pub fn feedback_packet_count(&self) -> u8 {
        self.body[SSRCS_LEN + 7]
    }

    /// Every reported packet in order as `(transport-wide sequence number, arrival)`: the
    /// arrival in µs after the reference time (`reference_time() * 64 ms`), `None` when the
    /// packet did not arrive.
    pub fn packets(&self) -> FeedbackPackets<'a> {
        let chunks_at = SSRCS_LEN + FIXED_FCI_LEN;
        FeedbackPackets {
            walk: StatusWalk {
                chunks: &self.body[chunks_at..self.deltas_at],
                at: 0,
                within: 0,
                remaining: self.packet_status_count(),
            },
            deltas: &self.body[self.deltas_at..],
            sequence_number: self.base_sequence_number(),
            arrival_us: 0,
        }
    }
}

/// Iterator over the packets of a transport-wide feedback packet.
#[derive(Debug, Clone)]
pub struct FeedbackPackets<'a> {
    walk: StatusWalk<'a>,
    /// The receive deltas not read yet.
    deltas: &'a [u8],
    sequence_number: u16,
    /// Arrival of the last received packet after the reference time.
    arrival_us: i64,
}

impl Iterator for FeedbackPackets<'_> {
    type Item = (u16, Option<i64>);

    fn next(&mut self) -> Option<(u16, Option<i64>)> {
        // `parse` walked these same chunks and counted their deltas without error, so
        // neither the walk nor a delta can be short; ending the iteration is the safe answer
        // if one ever were.
        let status = self.walk.next()?.ok()?;
        let ticks = match status {
            Status::NotReceived => None,
            Status::SmallDelta => {
                let (&delta, rest) = self.deltas.split_first()?;
                self.deltas = rest;
                Some(i64::from(delta))
            }
            Status::LargeDelta => {
                let (delta, rest) = self.deltas.split_first_chunk::<2>()?;
                self.deltas = rest;
                Some(i64::from(i16::from_be_bytes(*delta)))
            }
        };
        let sequence_number = self.sequence_number;
        self.sequence_number = sequence_number.wrapping_add(1);
        let arrival = ticks.map(|ticks| {
            self.arrival_us += ticks * DELTA_TICK_US;
            self.arrival_us
        });
        Some((sequence_number, arrival))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = usize::from(self.walk.remaining);
        (remaining, Some(remaining))
    }
}

/// Turns arrival times into status symbols and receive deltas, ending before the first
/// packet whose delta 16 bits cannot carry.
#[derive(Debug, Clone)]
struct Encoder<'a> {
    arrivals: &'a [Option<i64>],
    /// Arrival of the last received packet (at first the reference time), in delta ticks.
    last_ticks: i64,
}

impl Iterator for Encoder<'_> {
    type Item = (Status, i16);

    fn next(&mut self) -> Option<(Status, i16)> {
        let (&arrival, rest) = self.arrivals.split_first()?;
        let symbol = match arrival {
            None => (Status::NotReceived, 0),
            Some(arrival_us) => {
                // Deltas run from the previous quantised arrival, so rounding never adds up.
                let ticks = arrival_us.div_euclid(DELTA_TICK_US);
                let delta = i16::try_from(ticks - self.last_ticks).ok()?;
                self.last_ticks = ticks;
                let status =
                    if (0..=i16::from(u8::MAX)).contains(&delta) { Status::SmallDelta } else { Status::LargeDelta };
                (status, delta)
            }
        };
        self.arrivals = rest;
        Some(symbol)
    }
}

/// The chunk that covers the most of the next `remaining` symbols (at least one): a
/// run-length chunk where the run is longer than a status vector would cover, a vector of
/// 1-bit symbols where no large delta is among them, of 2-bit symbols otherwise. Returns the
/// chunk and the number of symbols it covers.
fn next_chunk(encoder: &Encoder<'_>, remaining: usize) -> (u16, usize) {
    let mut symbols = encoder.clone().take(remaining).map(|(status, _)| status);
    let Some(first) = symbols.next() else { return (0, 0) };
    let run = 1 + symbols.take(MAX_RUN_LENGTH - 1).take_while(|&status| status == first).count();
    let one_bit = ONE_BIT_SYMBOLS.min(remaining);
    let one_bit_fits = encoder.clone().take(one_bit).all(|(status, _)| status != Status::LargeDelta);
    let vector = if one_bit_fits { one_bit } else { TWO_BIT_SYMBOLS.min(remaining) };
    if run >= vector {
        return ((first as u16) << 13 | run as u16, run);
    }
    let mut chunk = if one_bit_fits { VECTOR_CHUNK_BIT } else { VECTOR_CHUNK_BIT | TWO_BIT_SYMBOL_BIT };
    for (index, (status, _)) in encoder.clone().take(vector).enumerate() {
        chunk |= if one_bit_fits { (status as u16) << (13 - index) } else { (status as u16) << (12 - 2 * index) };
    }
    (chunk, vector)
}

/// The layout of a feedback packet covering some packets.
#[derive(Debug, Clone, Copy)]
struct Layout {
    covered: usize,
    chunks: usize,
    deltas_len: usize,
}

impl Layout {
    fn unpadded_len(chunks: usize, deltas_len: usize) -> usize {
        CHUNKS_AT + CHUNK_LEN * chunks + deltas_len
    }

    fn len(&self) -> usize {
        Self::unpadded_len(self.chunks, self.deltas_len).next_multiple_of(4)
    }

    /// Chunks the first `limit` symbols of `encoder` while the packet stays within `budget`
    /// bytes; the last chunk may cover fewer symbols than it could.
    fn plan(encoder: &Encoder<'_>, limit: usize, budget: usize) -> Self {
        let mut layout = Self { covered: 0, chunks: 0, deltas_len: 0 };
        let mut encoder = encoder.clone();
        while layout.covered < limit {
            let (_, count) = next_chunk(&encoder, limit - layout.covered);
            let mut fitting = 0;
            let mut deltas_len = layout.deltas_len;
            for (status, _) in encoder.clone().take(count) {
                deltas_len += status.delta_len();
                if Self::unpadded_len(layout.chunks + 1, deltas_len).next_multiple_of(4) > budget {
                    break;
                }
                fitting += 1;
                layout.deltas_len = deltas_len;
            }
            if fitting == 0 {
                break;
            }
            encoder.nth(fitting - 1);
            layout.covered += fitting;
            layout.chunks += 1;
            if fitting < count {
                break;
            }
        }
        layout
    }
}

/// Writes a transport-wide feedback packet for the packets from `base_sequence_number` on:
/// `arrivals[i]` is the arrival of packet `base_sequence_number + i` in µs on the clock whose
/// `reference_time * 64 ms` is the reference time, or `None` if it did not arrive. The
/// reference time goes on the wire modulo 2^24.
///
/// Covers as many packets as fit `buf` (and the 16-bit status count), stopping before a
/// packet whose delta from the previous one exceeds ±8.19 s; the caller writes the rest
/// into another packet. Returns the length written and the packets covered (≥ 1);
/// `Unrepresentable` when the first received packet is already too far from the reference
/// time or `arrivals` is empty, `BufferTooSmall` when not even one packet fits.
pub fn write_transport_feedback(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    base_sequence_number: u16,
    feedback_packet_count: u8,
    reference_time: i32,
    arrivals: &[Option<i64>],
) -> Result<TransportFeedbackWritten, WireError> {
    let encoder = Encoder { arrivals, last_ticks: i64::from(reference_time) * DELTA_TICKS_PER_REFERENCE_TICK };
    let limit = encoder.clone().take(usize::from(u16::MAX)).count();
    if limit == 0 {
        return Err(WireError::Unrepresentable);
    }
    let fitting = Layout::plan(&encoder, limit, buf.len().min(MAX_PACKET_LEN));
    if fitting.covered == 0 {
        return Err(WireError::BufferTooSmall);
    }
    // Chunked again over just the covered packets, the last chunk may pick another form,
    // never a longer one: this is the layout written.
    let layout = Layout::plan(&encoder, fitting.covered, MAX_PACKET_LEN);
    let len = layout.len();
    let out = packet_out(buf, TRANSPORT_CC_FORMAT, TRANSPORT_FEEDBACK, len)?;
    write_u32(out, 4, sender_ssrc);
    write_u32(out, 8, media_ssrc);
    write_u16(out, 12, base_sequence_number);
    // At most u16::MAX packets were taken.
    write_u16(out, 14, layout.covered as u16);
    write_u24(out, 16, reference_time as u32 & REFERENCE_TIME_MASK);
    out[19] = feedback_packet_count;
    let mut at = CHUNKS_AT;
    let mut chunking = encoder.clone();
    let mut chunked = 0;
    while chunked < layout.covered {
        let (chunk, count) = next_chunk(&chunking, layout.covered - chunked);
        write_u16(out, at, chunk);
        at += CHUNK_LEN;
        chunking.nth(count - 1);
        chunked += count;
    }
    for (status, delta) in encoder.take(layout.covered) {
        match status {
            Status::NotReceived => {}
            // A small delta is 0..=255 by its definition.
            Status::SmallDelta => out[at] = delta as u8,
            Status::LargeDelta => write_u16(out, at, delta as u16),
        }
        at += status.delta_len();
    }
    let padding = len - at;
    if padding > 0 {
        out[0] |= PADDING_BIT;
        out[at..].fill(0);
        // At most 3 bytes of padding.
        out[len - 1] = padding as u8;
    }
    Ok(TransportFeedbackWritten { len, covered: layout.covered })
}

/// What [`write_transport_feedback`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportFeedbackWritten {
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// Packets covered, from the base sequence number on.
    pub covered: usize,
}
