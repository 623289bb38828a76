//! RTCP compound packets (RFC 3550 §6) and the feedback WebRTC uses (RFC 4585 NACK, PLI,
//! RFC 5104 FIR, draft-alvestrand-rmcat-remb REMB, draft-holmer-rmcat-transport-wide-cc-extensions
//! transport-wide feedback): a checked view whose iterator yields a
//! typed view per packet, and writers for the reports and feedback the SFU originates.
//!
//! [`RtcpCompound::new_checked`] validates every packet of the compound (version, length
//! word, padding only on the last packet, and the body layout of each type this module
//! knows), so the views it yields have infallible accessors. One malformed packet refuses
//! the whole compound, as RFC 3550 §A.2 asks. Reduced-size RTCP (RFC 5506) is accepted: the
//! first packet need not be a report. Types it does not parse (APP, XR, other feedback
//! formats) come out as [`RtcpPacket::Other`], bytes intact.

mod feedback;
mod report;
mod transport_cc;

use super::be::{read_u16, write_u16};
use super::{Ssrcs, WireError};

pub use feedback::{
    Fir, FirEntries, FirEntry, LostSequenceNumbers, Nack, NackPairs, Pli, Remb, write_fir, write_nack, write_pli,
    write_remb,
};
pub use report::{
    MAX_REPORT_BLOCKS, ReceiverReport, ReportBlock, ReportBlocks, SenderInfo, SenderReport, write_receiver_report,
    write_sender_report,
};
pub use transport_cc::{
    DELTA_TICK_US, FeedbackPackets, REFERENCE_TICK_US, TransportFeedback, TransportFeedbackWritten,
    write_transport_feedback,
};

/// RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1).
pub mod packet_type {
    /// Sender report.
    pub const SENDER_REPORT: u8 = 200;
    /// Receiver report.
    pub const RECEIVER_REPORT: u8 = 201;
    /// Source description.
    pub const SOURCE_DESCRIPTION: u8 = 202;
    /// Goodbye.
    pub const BYE: u8 = 203;
    /// Application-defined.
    pub const APP: u8 = 204;
    /// Transport-layer feedback (NACK, transport-wide congestion control).
    pub const TRANSPORT_FEEDBACK: u8 = 205;
    /// Payload-specific feedback (PLI, FIR, REMB).
    pub const PAYLOAD_FEEDBACK: u8 = 206;
}

/// Length of the header every RTCP packet starts with.
pub const HEADER_LEN: usize = 4;

const VERSION: u8 = 2;
const PADDING_BIT: u8 = 0x20;
/// The header's 5-bit field: a count for reports, SDES and BYE, a format for feedback.
const COUNT_MASK: u8 = 0x1F;
/// SDES item type 0 ends a chunk's item list (RFC 3550 §6.5).
const SDES_END: u8 = 0;

/// One packet of a compound as its header describes it, padding already removed.
#[derive(Debug, Clone, Copy)]
struct RawPacket<'a> {
    count_or_format: u8,
    packet_type: u8,
    body: &'a [u8],
}

/// Splits the first packet off `bytes`, checking its header, length word and padding.
fn split_packet(bytes: &[u8]) -> Result<(RawPacket<'_>, &[u8]), WireError> {
    let header = bytes.get(..HEADER_LEN).ok_or(WireError::Truncated)?;
    if header[0] >> 6 != VERSION {
        return Err(WireError::BadVersion);
    }
    // The length word counts 32-bit words minus one, so a packet is never empty.
    let len = (usize::from(read_u16(header, 2)) + 1) * 4;
    let packet = bytes.get(..len).ok_or(WireError::Truncated)?;
    let padding_len = if header[0] & PADDING_BIT != 0 {
        // Only the last packet of a compound may be padded (RFC 3550 §6.4.1).
        if len != bytes.len() {
            return Err(WireError::BadPadding);
        }
        let count = usize::from(packet[len - 1]);
        if count == 0 || count > len - HEADER_LEN {
            return Err(WireError::BadPadding);
        }
        count
    } else {
        0
    };
    let raw = RawPacket {
        count_or_format: header[0] & COUNT_MASK,
        packet_type: header[1],
        body: &packet[HEADER_LEN..len - padding_len],
    };
    Ok((raw, &bytes[len..]))
}

/// A checked RTCP compound packet (plaintext: after SRTCP unprotect). RTCP is only read in
/// place, never rewritten, so the view borrows a slice and its packet views live as long.
#[derive(Debug, Clone, Copy)]
pub struct RtcpCompound<'a> {
    bytes: &'a [u8],
}

impl<'a> RtcpCompound<'a> {
    /// Checks `bytes` as one or more whole RTCP packets and wraps them.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.is_empty() {
            return Err(WireError::Truncated);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let (raw, tail) = split_packet(rest)?;
            RtcpPacket::parse(raw)?;
            rest = tail;
        }
        Ok(Self { bytes })
    }

    /// The whole compound.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The packets of the compound, in order.
    pub fn packets(&self) -> RtcpPackets<'a> {
        RtcpPackets { rest: self.bytes }
    }
}

/// Iterator over the packets of a checked compound.
#[derive(Debug, Clone)]
pub struct RtcpPackets<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RtcpPackets<'a> {
    type Item = RtcpPacket<'a>;

    fn next(&mut self) -> Option<RtcpPacket<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        // `new_checked` split and parsed these same bytes without error, so `Err` cannot
        // occur; ending the iteration is the safe answer if it ever did.
        match split_packet(self.rest).and_then(|(raw, tail)| Ok((RtcpPacket::parse(raw)?, tail))) {
            Ok((packet, tail)) => {
                self.rest = tail;
                Some(packet)
            }
            Err(_) => {
                self.rest = &[];
                None
            }
        }
    }
}

/// One packet of a compound, as a typed view.
#[derive(Debug, Clone, Copy)]
pub enum RtcpPacket<'a> {
    /// Sender report (PT 200).
    SenderReport(SenderReport<'a>),
    /// Receiver report (PT 201).
    ReceiverReport(ReceiverReport<'a>),
    /// Source description (PT 202), checked but not parsed further.
    Sdes(Sdes),
    /// Goodbye (PT 203).
    Bye(Bye<'a>),
    /// Generic NACK (PT 205, FMT 1).
    Nack(Nack<'a>),
    /// Transport-wide congestion control feedback (PT 205, FMT 15).
    TransportFeedback(TransportFeedback<'a>),
    /// Picture loss indication (PT 206, FMT 1).
    Pli(Pli),
    /// Full intra request (PT 206, FMT 4).
    Fir(Fir<'a>),
    /// Receiver estimated maximum bitrate (PT 206, FMT 15 with the "REMB" identifier).
    Remb(Remb<'a>),
    /// Any other packet type or feedback format, kept as bytes.
    Other(OtherPacket<'a>),
}

impl<'a> RtcpPacket<'a> {
    fn parse(raw: RawPacket<'a>) -> Result<Self, WireError> {
        use packet_type::*;
        let RawPacket { count_or_format, packet_type, body } = raw;
        Ok(match (packet_type, count_or_format) {
            (SENDER_REPORT, count) => Self::SenderReport(SenderReport::parse(count, body)?),
            (RECEIVER_REPORT, count) => Self::ReceiverReport(ReceiverReport::parse(count, body)?),
            (SOURCE_DESCRIPTION, count) => Self::Sdes(Sdes::parse(count, body)?),
            (BYE, count) => Self::Bye(Bye::parse(count, body)?),
            (TRANSPORT_FEEDBACK, feedback::NACK_FORMAT) => Self::Nack(Nack::parse(body)?),
            (TRANSPORT_FEEDBACK, transport_cc::TRANSPORT_CC_FORMAT) => {
                Self::TransportFeedback(TransportFeedback::parse(body)?)
            }
            (PAYLOAD_FEEDBACK, feedback::PLI_FORMAT) => Self::Pli(Pli::parse(body)?),
            (PAYLOAD_FEEDBACK, feedback::FIR_FORMAT) => Self::Fir(Fir::parse(body)?),
            (PAYLOAD_FEEDBACK, feedback::APPLICATION_LAYER_FORMAT) if Remb::is_remb(body) => {
                Self::Remb(Remb::parse(body)?)
            }
            _ => Self::Other(OtherPacket { packet_type, format: count_or_format, body }),
        })
    }
}

/// A source description packet. Its items (CNAME and the like) are of no use to the SFU,
/// so only their framing is checked.
#[derive(Debug, Clone, Copy)]
pub struct Sdes {
    chunk_count: u8,
}

impl Sdes {
    fn parse(chunk_count: u8, body: &[u8]) -> Result<Self, WireError> {
        let mut at = 0;
        for _ in 0..chunk_count {
            // Each chunk: an SSRC, items of (type, length, text), an end item, then null
            // octets up to the next 32-bit boundary.
            at += 4;
            loop {
                let &item_type = body.get(at).ok_or(WireError::BadLength)?;
                if item_type == SDES_END {
                    break;
                }
                let &text_len = body.get(at + 1).ok_or(WireError::BadLength)?;
                at += 2 + usize::from(text_len);
            }
            at = (at + 1).next_multiple_of(4);
            if at > body.len() {
                return Err(WireError::BadLength);
            }
        }
        Ok(Self { chunk_count })
    }

    /// Number of chunks (one per source described).
    pub fn chunk_count(&self) -> u8 {
        self.chunk_count
    }
}

/// A goodbye packet: the sources leaving, and an optional reason.
#[derive(Debug, Clone, Copy)]
pub struct Bye<'a> {
    ssrcs: &'a [u8],
    reason: &'a [u8],
}

impl<'a> Bye<'a> {
    fn parse(source_count: u8, body: &'a [u8]) -> Result<Self, WireError> {
        let (ssrcs, rest) = body.split_at_checked(4 * usize::from(source_count)).ok_or(WireError::BadLength)?;
        let reason = match rest.split_first() {
            Some((&reason_len, text)) => text.get(..usize::from(reason_len)).ok_or(WireError::BadLength)?,
            None => &[],
        };
        Ok(Self { ssrcs, reason })
    }

    /// The sources that leave.
    pub fn ssrcs(&self) -> Ssrcs<'a> {
        Ssrcs::new(self.ssrcs)
    }

    /// The reason for leaving, if one was given (not necessarily UTF-8).
    pub fn reason(&self) -> Option<&'a [u8]> {
        (!self.reason.is_empty()).then_some(self.reason)
    }
}

/// A packet this module does not parse: its type, 5-bit count/format field and body.
#[derive(Debug, Clone, Copy)]
pub struct OtherPacket<'a> {
    packet_type: u8,
    format: u8,
    body: &'a [u8],
}

impl<'a> OtherPacket<'a> {
    /// The packet type (PT).
    pub fn packet_type(&self) -> u8 {
        self.packet_type
    }

    /// The header's 5-bit count or feedback format field.
    pub fn format(&self) -> u8 {
        self.format
    }

    /// The bytes after the 4-byte header, without padding.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// Takes the first `len` bytes of `buf` for one packet (`len` a multiple of 4) and writes
/// its header; the caller fills the body.
fn packet_out(buf: &mut [u8], count_or_format: u8, packet_type: u8, len: usize) -> Result<&mut [u8], WireError> {
    let length_word = u16::try_from(len / 4 - 1).map_err(|_| WireError::Unrepresentable)?;
    let out = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
    out[0] = VERSION << 6 | (count_or_format & COUNT_MASK);
    out[1] = packet_type;
    write_u16(out, 2, length_word);
    Ok(out)
}

#[cfg(test)]
mod tests;
