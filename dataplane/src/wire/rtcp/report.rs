//! Sender and receiver reports (RFC 3550 §6.4) and their report blocks.

use std::slice::ChunksExact;

use super::packet_type::{RECEIVER_REPORT, SENDER_REPORT};
use super::{HEADER_LEN, packet_out};
use crate::wire::WireError;
use crate::wire::be::{read_u24, read_u32, read_u64, write_u24, write_u32, write_u64};

/// Most report blocks one report can carry (the 5-bit RC field).
pub const MAX_REPORT_BLOCKS: usize = 31;

const REPORT_BLOCK_LEN: usize = 24;
/// Reporter SSRC.
const RECEIVER_REPORT_FIXED_LEN: usize = 4;
/// Sender SSRC and sender info.
const SENDER_REPORT_FIXED_LEN: usize = 24;
/// Cumulative loss is a signed 24-bit field; RFC 3550 §A.3 clamps to its range.
const CUMULATIVE_LOST_MAX: i32 = 0x7F_FFFF;
const CUMULATIVE_LOST_MIN: i32 = -0x80_0000;

/// Reception statistics for one source (RFC 3550 §6.4.1), as read or to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReportBlock {
    /// The source these statistics are about.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256 units.
    pub fraction_lost: u8,
    /// Packets lost since the start, negative when duplicates outnumber losses. A writer
    /// clamps it to the 24-bit field (RFC 3550 §A.3).
    pub cumulative_lost: i32,
    /// Highest sequence number received, extended with the count of wrap-arounds.
    pub extended_highest_sequence: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last sender report received (LSR).
    pub last_sender_report: u32,
    /// Delay since that sender report, in 1/65536 s (DLSR).
    pub delay_since_last_sender_report: u32,
}

impl ReportBlock {
    fn read(bytes: &[u8]) -> Self {
        // Sign-extend the 24-bit field through the top of an i32.
        let cumulative_lost = ((read_u24(bytes, 5) << 8) as i32) >> 8;
        Self {
            ssrc: read_u32(bytes, 0),
            fraction_lost: bytes[4],
            cumulative_lost,
            extended_highest_sequence: read_u32(bytes, 8),
            jitter: read_u32(bytes, 12),
            last_sender_report: read_u32(bytes, 16),
            delay_since_last_sender_report: read_u32(bytes, 20),
        }
    }

    fn write(&self, out: &mut [u8]) {
        let cumulative_lost = self.cumulative_lost.clamp(CUMULATIVE_LOST_MIN, CUMULATIVE_LOST_MAX);
        write_u32(out, 0, self.ssrc);
        out[4] = self.fraction_lost;
        // Two's complement in the low 24 bits; `write_u24` drops the sign byte.
        write_u24(out, 5, cumulative_lost as u32);
        write_u32(out, 8, self.extended_highest_sequence);
        write_u32(out, 12, self.jitter);
        write_u32(out, 16, self.last_sender_report);
        write_u32(out, 20, self.delay_since_last_sender_report);
    }
}

/// Iterator over the report blocks of a checked report.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a>(ChunksExact<'a, u8>);

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        self.0.next().map(ReportBlock::read)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

/// The blocks region of a report body: `count` blocks after `fixed_len` bytes. Bytes after
/// the blocks are profile-specific extensions (RFC 3550 §6.4.1) and are allowed.
fn blocks_of(body: &[u8], fixed_len: usize, count: u8) -> Result<&[u8], WireError> {
    body.get(fixed_len..fixed_len + REPORT_BLOCK_LEN * usize::from(count)).ok_or(WireError::BadLength)
}

/// The sender of a sender report and what it has sent (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SenderInfo {
    /// The sender's SSRC.
    pub ssrc: u32,
    /// Wallclock time of the report, 64-bit NTP format.
    pub ntp_timestamp: u64,
    /// The same instant in the media stream's RTP timestamp units.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packet_count: u32,
    /// Payload octets sent since the start.
    pub octet_count: u32,
}

/// A sender report (PT 200).
#[derive(Debug, Clone, Copy)]
pub struct SenderReport<'a> {
    body: &'a [u8],
    blocks: &'a [u8],
}

impl<'a> SenderReport<'a> {
    pub(super) fn parse(block_count: u8, body: &'a [u8]) -> Result<Self, WireError> {
        Ok(Self { body, blocks: blocks_of(body, SENDER_REPORT_FIXED_LEN, block_count)? })
    }

    /// The sender and its counters.
    pub fn info(&self) -> SenderInfo {
        SenderInfo {
            ssrc: read_u32(self.body, 0),
            ntp_timestamp: read_u64(self.body, 4),
            rtp_timestamp: read_u32(self.body, 12),
            packet_count: read_u32(self.body, 16),
            octet_count: read_u32(self.body, 20),
        }
    }

    /// What the sender itself received.
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks(self.blocks.chunks_exact(REPORT_BLOCK_LEN))
    }
}

/// A receiver report (PT 201).
#[derive(Debug, Clone, Copy)]
pub struct ReceiverReport<'a> {
    body: &'a [u8],
    blocks: &'a [u8],
}

impl<'a> ReceiverReport<'a> {
    pub(super) fn parse(block_count: u8, body: &'a [u8]) -> Result<Self, WireError> {
        Ok(Self { body, blocks: blocks_of(body, RECEIVER_REPORT_FIXED_LEN, block_count)? })
    }

    /// The reporter's SSRC.
    pub fn ssrc(&self) -> u32 {
        read_u32(self.body, 0)
    }

    /// One block per source reported on.
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks(self.blocks.chunks_exact(REPORT_BLOCK_LEN))
    }
}

/// Writes the report header and its blocks into `buf`, after `fixed_len` body bytes that
/// the caller fills; returns the packet.
fn write_report<'b>(
    buf: &'b mut [u8],
    packet_type: u8,
    fixed_len: usize,
    blocks: &[ReportBlock],
) -> Result<&'b mut [u8], WireError> {
    if blocks.len() > MAX_REPORT_BLOCKS {
        return Err(WireError::Unrepresentable);
    }
    let blocks_at = HEADER_LEN + fixed_len;
    // At most 31 blocks, so the count fits the 5-bit field.
    let out = packet_out(buf, blocks.len() as u8, packet_type, blocks_at + REPORT_BLOCK_LEN * blocks.len())?;
    for (block, out) in blocks.iter().zip(out[blocks_at..].chunks_exact_mut(REPORT_BLOCK_LEN)) {
        block.write(out);
    }
    Ok(out)
}

/// Writes a sender report with up to [`MAX_REPORT_BLOCKS`] blocks; returns its length.
pub fn write_sender_report(buf: &mut [u8], sender: &SenderInfo, blocks: &[ReportBlock]) -> Result<usize, WireError> {
    let out = write_report(buf, SENDER_REPORT, SENDER_REPORT_FIXED_LEN, blocks)?;
    write_u32(out, 4, sender.ssrc);
    write_u64(out, 8, sender.ntp_timestamp);
    write_u32(out, 16, sender.rtp_timestamp);
    write_u32(out, 20, sender.packet_count);
    write_u32(out, 24, sender.octet_count);
    Ok(out.len())
}

/// Writes a receiver report from `reporter_ssrc` with up to [`MAX_REPORT_BLOCKS`] blocks;
/// returns its length.
pub fn write_receiver_report(buf: &mut [u8], reporter_ssrc: u32, blocks: &[ReportBlock]) -> Result<usize, WireError> {
    let out = write_report(buf, RECEIVER_REPORT, RECEIVER_REPORT_FIXED_LEN, blocks)?;
    write_u32(out, 4, reporter_ssrc);
    Ok(out.len())
}
