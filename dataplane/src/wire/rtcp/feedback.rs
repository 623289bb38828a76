//! Feedback messages (RFC 4585 §6): Generic NACK, PLI, FIR (RFC 5104 §4.3.1) and REMB
//! (draft-alvestrand-rmcat-remb-03 §2.2).

use std::slice::ChunksExact;

use super::packet_type::{PAYLOAD_FEEDBACK, TRANSPORT_FEEDBACK};
use super::{HEADER_LEN, packet_out};
use crate::wire::be::{read_u16, read_u24, read_u32, write_u16, write_u24, write_u32};
use crate::wire::{Ssrcs, WireError};

/// Transport-layer feedback format of Generic NACK.
pub(super) const NACK_FORMAT: u8 = 1;
/// Payload-specific feedback format of PLI.
pub(super) const PLI_FORMAT: u8 = 1;
/// Payload-specific feedback format of FIR.
pub(super) const FIR_FORMAT: u8 = 4;
/// Payload-specific feedback format of application-layer feedback, REMB among it.
pub(super) const APPLICATION_LAYER_FORMAT: u8 = 15;

/// Sender SSRC and media SSRC, between the common header and the FCI.
const FEEDBACK_FIXED_LEN: usize = 8;
const NACK_ITEM_LEN: usize = 4;
const FIR_ITEM_LEN: usize = 8;
const REMB_IDENTIFIER: &[u8; 4] = b"REMB";
/// Identifier, SSRC count, exponent and mantissa, before the SSRC list.
const REMB_FIXED_FCI_LEN: usize = 8;
const REMB_MANTISSA_BITS: u32 = 18;
const REMB_MANTISSA_MAX: u64 = (1 << REMB_MANTISSA_BITS) - 1;
/// A NACK item covers its packet id and the 16 that follow it.
const NACK_BLP_SPAN: u16 = 16;

/// The feedback control information after the sender and media SSRCs.
fn fci(body: &[u8]) -> Result<&[u8], WireError> {
    body.get(FEEDBACK_FIXED_LEN..).ok_or(WireError::BadLength)
}

/// FCI made of at least one `item_len`-byte item and nothing else.
fn fci_items(body: &[u8], item_len: usize) -> Result<&[u8], WireError> {
    let fci = fci(body)?;
    if fci.is_empty() || fci.len() % item_len != 0 {
        return Err(WireError::BadLength);
    }
    Ok(fci)
}

/// A Generic NACK (RFC 4585 §6.2.1): the receiver lost these packets of the media source.
#[derive(Debug, Clone, Copy)]
pub struct Nack<'a> {
    body: &'a [u8],
}

impl<'a> Nack<'a> {
    pub(super) fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        fci_items(body, NACK_ITEM_LEN)?;
        Ok(Self { body })
    }

    /// The SSRC of the receiver that sends the NACK.
    pub fn sender_ssrc(&self) -> u32 {
        read_u32(self.body, 0)
    }

    /// The SSRC of the stream the lost packets belong to.
    pub fn media_ssrc(&self) -> u32 {
        read_u32(self.body, 4)
    }

    /// The items as `(packet id, bitmask of lost packets following it)`.
    pub fn pairs(&self) -> NackPairs<'a> {
        NackPairs(self.body[FEEDBACK_FIXED_LEN..].chunks_exact(NACK_ITEM_LEN))
    }

    /// Every sequence number the NACK reports lost, item by item.
    pub fn lost_sequence_numbers(&self) -> LostSequenceNumbers<'a> {
        LostSequenceNumbers { pairs: self.pairs(), packet_id: 0, pending: 0 }
    }
}

/// Iterator over the `(pid, blp)` items of a Generic NACK.
#[derive(Debug, Clone)]
pub struct NackPairs<'a>(ChunksExact<'a, u8>);

impl Iterator for NackPairs<'_> {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        self.0.next().map(|item| (read_u16(item, 0), read_u16(item, 2)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for NackPairs<'_> {}

/// Iterator expanding NACK items into lost sequence numbers (wrapping past 65535).
#[derive(Debug, Clone)]
pub struct LostSequenceNumbers<'a> {
    pairs: NackPairs<'a>,
    packet_id: u16,
    /// Offsets from `packet_id` not yielded yet: bit 0 is the packet id, bit n is blp bit n − 1.
    pending: u32,
}

impl Iterator for LostSequenceNumbers<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        while self.pending == 0 {
            let (packet_id, blp) = self.pairs.next()?;
            self.packet_id = packet_id;
            self.pending = u32::from(blp) << 1 | 1;
        }
        // At most 16, so the cast keeps every bit.
        let offset = self.pending.trailing_zeros() as u16;
        self.pending &= self.pending - 1;
        Some(self.packet_id.wrapping_add(offset))
    }
}

/// Packs lost sequence numbers into NACK items: each item takes its first number as packet
/// id and the next ones within 16 after it as blp bits. Any order gives a NACK naming every
/// number; ascending (wrapping) order without repeats gives the fewest items and names each
/// number once.
#[derive(Debug, Clone)]
struct NackPacker<'a> {
    lost: &'a [u16],
}

impl Iterator for NackPacker<'_> {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        let (&packet_id, rest) = self.lost.split_first()?;
        let mut blp = 0u16;
        let covered = rest
            .iter()
            .take_while(|&&seq| {
                let offset = seq.wrapping_sub(packet_id);
                if (1..=NACK_BLP_SPAN).contains(&offset) {
                    blp |= 1 << (offset - 1);
                }
                offset <= NACK_BLP_SPAN
            })
            .count();
        self.lost = &rest[covered..];
        Some((packet_id, blp))
    }
}

/// A picture loss indication (RFC 4585 §6.3.1): the receiver asks for a key frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pli {
    sender_ssrc: u32,
    media_ssrc: u32,
}

impl Pli {
    pub(super) fn parse(body: &[u8]) -> Result<Self, WireError> {
        // PLI has no FCI; RFC 4585 leaves nothing to check past the two SSRCs.
        fci(body)?;
        Ok(Self { sender_ssrc: read_u32(body, 0), media_ssrc: read_u32(body, 4) })
    }

    /// The SSRC of the receiver asking.
    pub fn sender_ssrc(&self) -> u32 {
        self.sender_ssrc
    }

    /// The SSRC of the stream that needs a key frame.
    pub fn media_ssrc(&self) -> u32 {
        self.media_ssrc
    }
}

/// One FIR request: the stream asked for a key frame and the request's sequence number
/// (incremented per new request, so repeats are recognised).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FirEntry {
    /// The stream that should send a key frame.
    pub ssrc: u32,
    /// Command sequence number.
    pub sequence_number: u8,
}

/// A full intra request (RFC 5104 §4.3.1). Its media SSRC field is unused (zero); the
/// streams are named in the entries.
#[derive(Debug, Clone, Copy)]
pub struct Fir<'a> {
    body: &'a [u8],
}

impl<'a> Fir<'a> {
    pub(super) fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        fci_items(body, FIR_ITEM_LEN)?;
        Ok(Self { body })
    }

    /// The SSRC of the receiver asking.
    pub fn sender_ssrc(&self) -> u32 {
        read_u32(self.body, 0)
    }

    /// The requests, one per stream.
    pub fn entries(&self) -> FirEntries<'a> {
        FirEntries(self.body[FEEDBACK_FIXED_LEN..].chunks_exact(FIR_ITEM_LEN))
    }
}

/// Iterator over the entries of a FIR.
#[derive(Debug, Clone)]
pub struct FirEntries<'a>(ChunksExact<'a, u8>);

impl Iterator for FirEntries<'_> {
    type Item = FirEntry;

    fn next(&mut self) -> Option<FirEntry> {
        self.0.next().map(|item| FirEntry { ssrc: read_u32(item, 0), sequence_number: item[4] })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for FirEntries<'_> {}

/// A receiver estimated maximum bitrate: the receiver's estimate of what the listed
/// streams may use together.
#[derive(Debug, Clone, Copy)]
pub struct Remb<'a> {
    body: &'a [u8],
}

impl<'a> Remb<'a> {
    /// Application-layer feedback is REMB when its FCI starts with the identifier.
    pub(super) fn is_remb(body: &[u8]) -> bool {
        fci(body).is_ok_and(|fci| fci.starts_with(REMB_IDENTIFIER))
    }

    pub(super) fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let fci = fci(body)?;
        let &ssrc_count = fci.get(4).ok_or(WireError::BadLength)?;
        if fci.len() != REMB_FIXED_FCI_LEN + 4 * usize::from(ssrc_count) {
            return Err(WireError::BadLength);
        }
        Ok(Self { body })
    }

    /// The SSRC of the receiver estimating.
    pub fn sender_ssrc(&self) -> u32 {
        read_u32(self.body, 0)
    }

    /// The estimate in bits per second (mantissa × 2^exponent), saturating at `u64::MAX`
    /// for exponents no real estimate uses.
    pub fn bitrate(&self) -> u64 {
        let field = read_u24(self.body, FEEDBACK_FIXED_LEN + 5);
        let exponent = field >> REMB_MANTISSA_BITS;
        let mantissa = u64::from(field) & REMB_MANTISSA_MAX;
        if mantissa != 0 && mantissa.leading_zeros() < exponent {
            return u64::MAX;
        }
        mantissa << exponent
    }

    /// The streams the estimate covers.
    pub fn ssrcs(&self) -> Ssrcs<'a> {
        Ssrcs::new(&self.body[FEEDBACK_FIXED_LEN + REMB_FIXED_FCI_LEN..])
    }
}

/// Writes a PLI asking `media_ssrc` for a key frame; returns its length.
pub fn write_pli(buf: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> Result<usize, WireError> {
    let out = packet_out(buf, PLI_FORMAT, PAYLOAD_FEEDBACK, HEADER_LEN + FEEDBACK_FIXED_LEN)?;
    write_u32(out, 4, sender_ssrc);
    write_u32(out, 8, media_ssrc);
    Ok(out.len())
}

/// Writes a FIR with at least one entry; returns its length.
pub fn write_fir(buf: &mut [u8], sender_ssrc: u32, entries: &[FirEntry]) -> Result<usize, WireError> {
    if entries.is_empty() {
        return Err(WireError::Unrepresentable);
    }
    let fci_at = HEADER_LEN + FEEDBACK_FIXED_LEN;
    let out = packet_out(buf, FIR_FORMAT, PAYLOAD_FEEDBACK, fci_at + FIR_ITEM_LEN * entries.len())?;
    write_u32(out, 4, sender_ssrc);
    write_u32(out, 8, 0);
    for (entry, item) in entries.iter().zip(out[fci_at..].chunks_exact_mut(FIR_ITEM_LEN)) {
        write_u32(item, 0, entry.ssrc);
        item[4] = entry.sequence_number;
        item[5..].fill(0);
    }
    Ok(out.len())
}

/// Writes a Generic NACK for `lost` (at least one sequence number; ascending in wrapping
/// order without repeats packs the fewest items); returns its length.
pub fn write_nack(buf: &mut [u8], sender_ssrc: u32, media_ssrc: u32, lost: &[u16]) -> Result<usize, WireError> {
    if lost.is_empty() {
        return Err(WireError::Unrepresentable);
    }
    let packer = NackPacker { lost };
    let fci_at = HEADER_LEN + FEEDBACK_FIXED_LEN;
    let out = packet_out(buf, NACK_FORMAT, TRANSPORT_FEEDBACK, fci_at + NACK_ITEM_LEN * packer.clone().count())?;
    write_u32(out, 4, sender_ssrc);
    write_u32(out, 8, media_ssrc);
    for ((packet_id, blp), item) in packer.zip(out[fci_at..].chunks_exact_mut(NACK_ITEM_LEN)) {
        write_u16(item, 0, packet_id);
        write_u16(item, 2, blp);
    }
    Ok(out.len())
}

/// Writes a REMB of `bitrate` bits per second for up to 255 streams; returns its length.
/// The bitrate is rounded down to the 18-bit mantissa's precision.
pub fn write_remb(buf: &mut [u8], sender_ssrc: u32, bitrate: u64, ssrcs: &[u32]) -> Result<usize, WireError> {
    let ssrc_count = u8::try_from(ssrcs.len()).map_err(|_| WireError::Unrepresentable)?;
    // Any u64 fits: u64::MAX >> 46 is 18 bits wide, and 46 fits the 6-bit exponent.
    let exponent = (u64::BITS - bitrate.leading_zeros()).saturating_sub(REMB_MANTISSA_BITS);
    let mantissa = bitrate >> exponent;
    let fci_at = HEADER_LEN + FEEDBACK_FIXED_LEN;
    let ssrcs_at = fci_at + REMB_FIXED_FCI_LEN;
    let out = packet_out(buf, APPLICATION_LAYER_FORMAT, PAYLOAD_FEEDBACK, ssrcs_at + 4 * ssrcs.len())?;
    write_u32(out, 4, sender_ssrc);
    // The media SSRC field is unused in REMB and always zero.
    write_u32(out, 8, 0);
    out[fci_at..fci_at + 4].copy_from_slice(REMB_IDENTIFIER);
    out[fci_at + 4] = ssrc_count;
    // `mantissa` is at most 18 bits wide by the choice of `exponent`.
    write_u24(out, fci_at + 5, exponent << REMB_MANTISSA_BITS | mantissa as u32);
    for (&ssrc, word) in ssrcs.iter().zip(out[ssrcs_at..].chunks_exact_mut(4)) {
        write_u32(word, 0, ssrc);
    }
    Ok(out.len())
}
