//! RTP packets (RFC 3550 §5.1) and their header extensions (RFC 8285): a checked view over
//! a received packet, in-place rewriting of the fields an SFU changes per consumer, a copy
//! into a consumer's send slot that renumbers the elements and may add one
//! ([`RtpPacket::copy_renumbered`]), and [`RtpHeader`], a header writer for test clients and
//! the load generator.
//!
//! RTP has no length field: once the header fits, every longer prefix of a packet is itself
//! a valid packet with a shorter payload. Truncation is detectable only inside the header
//! (or through a padding count that no longer fits); the transport's datagram boundary is
//! the packet's.

use std::ops::Range;

use super::be::{read_u16, read_u32, write_u16, write_u32};
use super::{Ssrcs, WireError};

/// Length of the transport-wide sequence number extension's value.
pub const TRANSPORT_SEQUENCE_NUMBER_LEN: usize = 2;
/// Length of the fixed RTP header, before CSRCs and the header extension.
pub const FIXED_HEADER_LEN: usize = 12;
/// The header extension's "defined by profile" value of the one-byte form (RFC 8285 §4.2).
pub const ONE_BYTE_EXTENSION_PROFILE: u16 = 0xBEDE;
/// The two-byte form's profile value (RFC 8285 §4.3); its low four bits are application
/// bits, so `0x1000..=0x100F` all mean two-byte elements.
pub const TWO_BYTE_EXTENSION_PROFILE: u16 = 0x1000;
/// Most CSRCs a header can list (the 4-bit CC field).
pub const MAX_CSRCS: usize = 15;

const VERSION: u8 = 2;
const PADDING_BIT: u8 = 0x20;
const EXTENSION_BIT: u8 = 0x10;
const CSRC_COUNT_MASK: u8 = 0x0F;
const MARKER_BIT: u8 = 0x80;
const PAYLOAD_TYPE_MASK: u8 = 0x7F;
const TWO_BYTE_PROFILE_MASK: u16 = 0xFFF0;
/// Extension header before the elements: profile and length in 32-bit words.
const EXTENSION_HEADER_LEN: usize = 4;
/// In either form an element id of 0 is a single padding byte (RFC 8285 §4.2, §4.3).
const PADDING_ID: u8 = 0;
/// One-byte id 15 ends element processing; its length nibble is not to be trusted.
const ONE_BYTE_STOP_ID: u8 = 15;
/// One-byte element values are 1..=16 bytes: the length nibble holds length − 1.
const ONE_BYTE_MAX_VALUE_LEN: usize = 16;
/// One-byte element ids usable by a session: 1..=14.
const ONE_BYTE_IDS: Range<u8> = 1..ONE_BYTE_STOP_ID;
/// Two-byte element values are 0..=255 bytes: the length byte holds the length.
const TWO_BYTE_MAX_VALUE_LEN: usize = u8::MAX as usize;

/// The two element encodings of RFC 8285.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtensionForm {
    OneByte,
    TwoByte,
}

impl ExtensionForm {
    fn of(profile: u16) -> Option<Self> {
        if profile == ONE_BYTE_EXTENSION_PROFILE {
            Some(Self::OneByte)
        } else if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_EXTENSION_PROFILE {
            Some(Self::TwoByte)
        } else {
            None
        }
    }

    /// Whether an element fits the one-byte form; every element fits the two-byte form
    /// except id 0 (padding) and values over 255 bytes.
    fn fits_one_byte(id: u8, value_len: usize) -> bool {
        ONE_BYTE_IDS.contains(&id) && (1..=ONE_BYTE_MAX_VALUE_LEN).contains(&value_len)
    }

    /// Bytes before an element's value: the id and length nibbles, or an id and a length byte.
    fn element_header_len(self) -> usize {
        match self {
            Self::OneByte => 1,
            Self::TwoByte => 2,
        }
    }
}

/// Walks the elements of one extension block, yielding each id with the range of its value
/// inside `elements`. Validation and every lookup share it, so they agree by construction.
#[derive(Debug, Clone)]
struct ElementWalk<'a> {
    elements: &'a [u8],
    form: ExtensionForm,
    at: usize,
}

impl<'a> ElementWalk<'a> {
    fn new(elements: &'a [u8], form: ExtensionForm) -> Self {
        Self { elements, form, at: 0 }
    }

    fn stop(&mut self) {
        self.at = self.elements.len();
    }
}

impl Iterator for ElementWalk<'_> {
    type Item = Result<(u8, Range<usize>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let first = *self.elements.get(self.at)?;
            let (id, value_start, value_len) = match self.form {
                ExtensionForm::OneByte => {
                    let id = first >> 4;
                    if id == PADDING_ID {
                        self.at += 1;
                        continue;
                    }
                    if id == ONE_BYTE_STOP_ID {
                        self.stop();
                        return None;
                    }
                    (id, self.at + 1, usize::from(first & 0x0F) + 1)
                }
                ExtensionForm::TwoByte => {
                    if first == PADDING_ID {
                        self.at += 1;
                        continue;
                    }
                    let Some(&value_len) = self.elements.get(self.at + 1) else {
                        self.stop();
                        return Some(Err(WireError::BadExtension));
                    };
                    (first, self.at + 2, usize::from(value_len))
                }
            };
            let value = value_start..value_start + value_len;
            if value.end > self.elements.len() {
                self.stop();
                return Some(Err(WireError::BadExtension));
            }
            self.at = value.end;
            return Some(Ok((id, value)));
        }
    }
}

/// How one consumer renumbers a publisher's header extensions (RFC 8285): the ids of the
/// two sides were negotiated separately, so each element the subscriber agreed to gets its
/// id there, and every other element is blanked into padding bytes, which keeps the packet's
/// length (no payload moves) while the subscriber skips it. A copy
/// ([`RtpPacket::copy_renumbered`]) drops those elements instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionIdMap {
    /// Indexed by the publisher's id (1..=14); 0 blanks the element.
    to: [u8; ONE_BYTE_STOP_ID as usize],
}

impl ExtensionIdMap {
    /// Leaves every element as the publisher wrote it (both sides use the same ids).
    pub fn identity() -> Self {
        let mut to = [0; ONE_BYTE_STOP_ID as usize];
        for id in ONE_BYTE_IDS {
            to[usize::from(id)] = id;
        }
        Self { to }
    }

    /// Blanks every element.
    pub fn blank_all() -> Self {
        Self { to: [0; ONE_BYTE_STOP_ID as usize] }
    }

    /// Sends the publisher's element `from` as `to`; ids outside 1..=14 are refused.
    pub fn map(&mut self, from: u8, to: u8) -> Result<(), WireError> {
        if !ONE_BYTE_IDS.contains(&from) || !ONE_BYTE_IDS.contains(&to) {
            return Err(WireError::Unrepresentable);
        }
        self.to[usize::from(from)] = to;
        Ok(())
    }

    /// The subscriber's id for the publisher's `from`, if it is kept.
    fn target(&self, from: u8) -> Option<u8> {
        self.to.get(usize::from(from)).copied().filter(|&to| to != 0)
    }
}

/// A checked view of one RTP packet (plaintext: after SRTP unprotect, before protect).
///
/// `new_checked` validates the version, the CSRC list, the header extension and each of its
/// RFC 8285 elements, and the padding, so every accessor below is infallible.
#[derive(Debug, Clone)]
pub struct RtpPacket<T> {
    buffer: T,
    header_len: usize,
    padding_len: usize,
}

impl<T: AsRef<[u8]>> RtpPacket<T> {
    /// Checks `buffer` as a whole RTP packet and wraps it.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        if bytes.len() < FIXED_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let first = bytes[0];
        if first >> 6 != VERSION {
            return Err(WireError::BadVersion);
        }
        let mut header_len = FIXED_HEADER_LEN + 4 * usize::from(first & CSRC_COUNT_MASK);
        if first & EXTENSION_BIT != 0 {
            let extension_header =
                bytes.get(header_len..header_len + EXTENSION_HEADER_LEN).ok_or(WireError::Truncated)?;
            header_len += EXTENSION_HEADER_LEN + 4 * usize::from(read_u16(extension_header, 2));
        }
        if header_len > bytes.len() {
            return Err(WireError::Truncated);
        }
        let padding_len = if first & PADDING_BIT != 0 {
            // The last byte counts the padding, itself included (RFC 3550 §5.1).
            let count = usize::from(bytes[bytes.len() - 1]);
            if count == 0 || header_len + count > bytes.len() {
                return Err(WireError::BadPadding);
            }
            count
        } else {
            0
        };
        let packet = Self { buffer, header_len, padding_len };
        if let Some((_, walk)) = packet.element_walk() {
            for element in walk {
                element?;
            }
        }
        Ok(packet)
    }

    /// The whole packet, header to padding.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The marker bit (end of a video frame, start of a talkspurt).
    pub fn marker(&self) -> bool {
        self.as_bytes()[1] & MARKER_BIT != 0
    }

    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.as_bytes()[1] & PAYLOAD_TYPE_MASK
    }

    /// The 16-bit sequence number.
    pub fn sequence_number(&self) -> u16 {
        read_u16(self.as_bytes(), 2)
    }

    /// The media timestamp, in the payload's clock rate.
    pub fn timestamp(&self) -> u32 {
        read_u32(self.as_bytes(), 4)
    }

    /// The synchronization source.
    pub fn ssrc(&self) -> u32 {
        read_u32(self.as_bytes(), 8)
    }

    /// The contributing sources, in header order.
    pub fn csrcs(&self) -> Ssrcs<'_> {
        let count = usize::from(self.as_bytes()[0] & CSRC_COUNT_MASK);
        Ssrcs::new(&self.as_bytes()[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * count])
    }

    /// Length of the header: fixed part, CSRCs and the whole extension block.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Trailing padding bytes, the count byte included; 0 without the padding bit.
    pub fn padding_len(&self) -> usize {
        self.padding_len
    }

    /// The payload, without header and padding.
    pub fn payload(&self) -> &[u8] {
        &self.as_bytes()[self.payload_range()]
    }

    /// Where the payload lies in the packet's bytes.
    pub fn payload_range(&self) -> std::ops::Range<usize> {
        self.header_len..self.as_bytes().len() - self.padding_len
    }

    /// The header extension's "defined by profile" value, if the packet has an extension.
    pub fn extension_profile(&self) -> Option<u16> {
        self.extension_start().map(|at| read_u16(self.as_bytes(), at))
    }

    /// The RFC 8285 elements as `(id, value)`, in packet order. Empty without an extension
    /// or with a profile other than the one-byte and two-byte forms.
    pub fn extensions(&self) -> Extensions<'_> {
        Extensions { walk: self.element_walk().map(|(_, walk)| walk) }
    }

    /// The value of the first element with local identifier `id`.
    pub fn extension(&self, id: u8) -> Option<&[u8]> {
        self.extensions().find_map(|(found, value)| (found == id).then_some(value))
    }

    /// Where the value of the first element with local identifier `id` is in the packet.
    pub fn extension_range(&self, id: u8) -> Option<std::ops::Range<usize>> {
        let (elements_start, mut walk) = self.element_walk()?;
        let (_, value) = walk.find_map(|element| element.ok().filter(|(found, _)| *found == id))?;
        Some(elements_start + value.start..elements_start + value.end)
    }

    /// The transport-wide sequence number (draft-holmer-rmcat-transport-wide-cc-extensions-01
    /// §2) that element `id` carries as 2 bytes big-endian; `None` without the element or
    /// with a value of another length.
    pub fn transport_sequence_number(&self, id: u8) -> Option<u16> {
        let value: [u8; TRANSPORT_SEQUENCE_NUMBER_LEN] = self.extension(id)?.try_into().ok()?;
        Some(u16::from_be_bytes(value))
    }

    /// Writes into `dst` this packet as one consumer receives it, and returns its length:
    /// the fixed header and CSRCs as they are; an extension block holding, in packet order,
    /// each RFC 8285 element that `map` keeps, under its new id, then `added` as `(id, value)`;
    /// the payload and the RTP padding (P bit, padding bytes) as they are.
    ///
    /// Unlike [`remap_extensions`](Self::remap_extensions) nothing is blanked: elements `map`
    /// does not keep, two-byte ids above 14 and the padding between elements are dropped, and
    /// so is a kept element that maps to `added`'s id, so that the id appears once. A block of
    /// a profile other than RFC 8285's has no elements and is dropped too. The block is in the
    /// one-byte form when every id is 1..=14 and every value 1..=16 bytes, else in the two-byte
    /// form (keeping the source's application bits if it had that form); it is zero-padded to
    /// 32 bits, and left out, the X bit cleared, when it would hold nothing.
    ///
    /// Size: without `added` the copy is never longer than the packet. With an `added` value
    /// of `n` bytes that fits the one-byte form (id 1..=14, `n` 1..=16), it is at most
    /// `4 + (1 + n).next_multiple_of(4)` bytes longer: 8 for a transport-wide sequence number.
    /// An `added` that needs the two-byte form (id above 14, `n` 0 or above 16) moves a
    /// one-byte source's kept elements into that form too, one byte more each.
    ///
    /// Errors: [`WireError::Unrepresentable`] for an `added` id of 0 or a value over 255 bytes
    /// (or a block past 65535 words); [`WireError::BufferTooSmall`] when `dst` cannot hold
    /// the copy, with nothing meaningful written.
    pub fn copy_renumbered(
        &self,
        dst: &mut [u8],
        map: &ExtensionIdMap,
        added: Option<(u8, &[u8])>,
    ) -> Result<usize, WireError> {
        if added.is_some_and(|(id, value)| id == PADDING_ID || value.len() > TWO_BYTE_MAX_VALUE_LEN) {
            return Err(WireError::Unrepresentable);
        }
        // First pass: the form and the block's length, so that nothing is written unless the
        // whole copy fits. The second pass walks the same elements to write them.
        let (mut count, mut values_len, mut one_byte) = (0, 0, true);
        for (id, value) in self.copied_elements(map, added) {
            count += 1;
            values_len += value.len();
            one_byte &= ExtensionForm::fits_one_byte(id, value.len());
        }
        let form = if one_byte { ExtensionForm::OneByte } else { ExtensionForm::TwoByte };
        let elements_len = count * form.element_header_len() + values_len;
        let words = elements_len.div_ceil(4);
        let words_field = u16::try_from(words).map_err(|_| WireError::Unrepresentable)?;
        let block_len = if count == 0 { 0 } else { EXTENSION_HEADER_LEN + 4 * words };

        let src = self.as_bytes();
        let fixed_len = FIXED_HEADER_LEN + 4 * self.csrcs().len();
        let tail = &src[self.header_len..];
        let len = fixed_len + block_len + tail.len();
        let out = dst.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        out[..fixed_len].copy_from_slice(&src[..fixed_len]);
        out[fixed_len + block_len..].copy_from_slice(tail);
        if block_len == 0 {
            out[0] &= !EXTENSION_BIT;
            return Ok(len);
        }
        out[0] |= EXTENSION_BIT;
        let profile = match (form, self.extension_profile()) {
            (ExtensionForm::OneByte, _) => ONE_BYTE_EXTENSION_PROFILE,
            (ExtensionForm::TwoByte, Some(profile)) if ExtensionForm::of(profile) == Some(form) => profile,
            (ExtensionForm::TwoByte, _) => TWO_BYTE_EXTENSION_PROFILE,
        };
        write_u16(out, fixed_len, profile);
        write_u16(out, fixed_len + 2, words_field);
        let mut at = fixed_len + EXTENSION_HEADER_LEN;
        for (id, value) in self.copied_elements(map, added) {
            // The first pass bounded every value to the form: 1..=16 bytes in the one-byte
            // form (length − 1 fits the nibble), at most 255 in the two-byte form.
            match form {
                ExtensionForm::OneByte => out[at] = id << 4 | (value.len() - 1) as u8,
                ExtensionForm::TwoByte => {
                    out[at] = id;
                    out[at + 1] = value.len() as u8;
                }
            }
            at += form.element_header_len();
            out[at..at + value.len()].copy_from_slice(value);
            at += value.len();
        }
        out[at..fixed_len + block_len].fill(PADDING_ID);
        Ok(len)
    }

    /// The elements a renumbered copy carries, in order: the kept ones under their new ids,
    /// then `added`, which displaces a kept element of its id.
    fn copied_elements<'a>(
        &'a self,
        map: &'a ExtensionIdMap,
        added: Option<(u8, &'a [u8])>,
    ) -> impl Iterator<Item = (u8, &'a [u8])> {
        let added_id = added.map(|(id, _)| id);
        self.extensions()
            .filter_map(move |(id, value)| map.target(id).filter(|&to| Some(to) != added_id).map(|to| (to, value)))
            .chain(added)
    }

    /// Offset of the extension header, if the extension bit is set.
    fn extension_start(&self) -> Option<usize> {
        let first = self.as_bytes()[0];
        (first & EXTENSION_BIT != 0).then(|| FIXED_HEADER_LEN + 4 * usize::from(first & CSRC_COUNT_MASK))
    }

    /// Where the elements start, and a walk over them, for the RFC 8285 profiles.
    fn element_walk(&self) -> Option<(usize, ElementWalk<'_>)> {
        let start = self.extension_start()?;
        let form = ExtensionForm::of(read_u16(self.as_bytes(), start))?;
        let elements_start = start + EXTENSION_HEADER_LEN;
        Some((elements_start, ElementWalk::new(&self.as_bytes()[elements_start..self.header_len], form)))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtpPacket<T> {
    /// Sets the marker bit, keeping the payload type.
    pub fn set_marker(&mut self, marker: bool) {
        let byte = &mut self.buffer.as_mut()[1];
        *byte = if marker { *byte | MARKER_BIT } else { *byte & !MARKER_BIT };
    }

    /// Sets the payload type, keeping the marker bit. Refuses values above 127.
    pub fn set_payload_type(&mut self, payload_type: u8) -> Result<(), WireError> {
        if payload_type > PAYLOAD_TYPE_MASK {
            return Err(WireError::Unrepresentable);
        }
        let byte = &mut self.buffer.as_mut()[1];
        *byte = (*byte & MARKER_BIT) | payload_type;
        Ok(())
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, sequence_number: u16) {
        write_u16(self.buffer.as_mut(), 2, sequence_number);
    }

    /// Sets the timestamp.
    pub fn set_timestamp(&mut self, timestamp: u32) {
        write_u32(self.buffer.as_mut(), 4, timestamp);
    }

    /// Sets the SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        write_u32(self.buffer.as_mut(), 8, ssrc);
    }

    /// Renumbers the header extension elements after `map`, blanking those it does not
    /// keep. Two-byte elements keep their form; their ids above 14 are always blanked.
    pub fn remap_extensions(&mut self, map: &ExtensionIdMap) {
        let Some((elements_start, walk)) = self.element_walk() else { return };
        let (form, elements_end) = (walk.form, self.header_len);
        let mut at = 0;
        loop {
            let mut walk = ElementWalk { elements: &self.buffer.as_ref()[elements_start..elements_end], form, at };
            let Some(Ok((id, value))) = walk.next() else { return };
            at = walk.at;
            let id_len = match form {
                ExtensionForm::OneByte => 1,
                ExtensionForm::TwoByte => 2,
            };
            let element = elements_start + value.start - id_len..elements_start + value.end;
            let bytes = self.buffer.as_mut();
            match map.target(id) {
                Some(to) if form == ExtensionForm::OneByte => {
                    bytes[element.start] = to << 4 | (bytes[element.start] & 0x0F)
                }
                Some(to) => bytes[element.start] = to,
                None => bytes[element].fill(PADDING_ID),
            }
        }
    }

    /// The value of the first element with local identifier `id`, to rewrite in place (its
    /// length is fixed: abs-send-time, transport-wide sequence number).
    pub fn extension_mut(&mut self, id: u8) -> Option<&mut [u8]> {
        let range = self.extension_range(id)?;
        Some(&mut self.buffer.as_mut()[range])
    }

    /// Rewrites the transport-wide sequence number that element `id` carries. Returns false,
    /// changing nothing, when the packet has no 2-byte element `id`: a packet never grows in
    /// place, so the element must have been negotiated and sent by the packet's source.
    pub fn set_transport_sequence_number(&mut self, id: u8, sequence_number: u16) -> bool {
        match self.extension_mut(id) {
            Some(value) if value.len() == TRANSPORT_SEQUENCE_NUMBER_LEN => {
                value.copy_from_slice(&sequence_number.to_be_bytes());
                true
            }
            _ => false,
        }
    }
}

/// Iterator over the header extension elements of a checked packet, as `(id, value)`.
/// Padding bytes are skipped; a one-byte id 15 ends it.
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    walk: Option<ElementWalk<'a>>,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let walk = self.walk.as_mut()?;
        let elements = walk.elements;
        // `new_checked` walked these same elements without error, so `Err` cannot occur;
        // ending the iteration is the safe answer if it ever did.
        let (id, value) = walk.next()?.ok()?;
        Some((id, &elements[value]))
    }
}

/// Writes an RTP header with optional one-byte header extensions into a caller's buffer.
/// Required fields are positional in [`RtpHeader::new`]; the rest default to absent.
#[derive(Debug, Clone, Copy)]
pub struct RtpHeader<'a> {
    payload_type: u8,
    sequence_number: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    csrcs: &'a [u32],
    extensions: &'a [(u8, &'a [u8])],
}

impl<'a> RtpHeader<'a> {
    /// A header without marker, CSRCs or extensions.
    pub fn new(payload_type: u8, sequence_number: u16, timestamp: u32, ssrc: u32) -> Self {
        Self { payload_type, sequence_number, timestamp, ssrc, marker: false, csrcs: &[], extensions: &[] }
    }

    /// Sets the marker bit.
    pub fn marker(self, marker: bool) -> Self {
        Self { marker, ..self }
    }

    /// Lists contributing sources (at most [`MAX_CSRCS`]).
    pub fn csrcs(self, csrcs: &'a [u32]) -> Self {
        Self { csrcs, ..self }
    }

    /// Adds one-byte header extension elements `(id 1..=14, value of 1..=16 bytes)`, written
    /// in this order and zero-padded to a 32-bit boundary.
    pub fn extensions(self, extensions: &'a [(u8, &'a [u8])]) -> Self {
        Self { extensions, ..self }
    }

    /// The header's length on the wire, or `Unrepresentable` for a field out of range.
    pub fn encoded_len(&self) -> Result<usize, WireError> {
        if self.payload_type > PAYLOAD_TYPE_MASK || self.csrcs.len() > MAX_CSRCS {
            return Err(WireError::Unrepresentable);
        }
        Ok(FIXED_HEADER_LEN + 4 * self.csrcs.len() + self.extension_block_len()?)
    }

    /// Writes the header at the start of `buf` and returns its length; the payload goes
    /// right after it.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.encoded_len()?;
        let out = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        let extension_bit = if self.extensions.is_empty() { 0 } else { EXTENSION_BIT };
        // `encoded_len` bounded the CSRC count to 15, so the cast keeps every bit.
        out[0] = VERSION << 6 | extension_bit | self.csrcs.len() as u8;
        out[1] = if self.marker { MARKER_BIT } else { 0 } | self.payload_type;
        write_u16(out, 2, self.sequence_number);
        write_u32(out, 4, self.timestamp);
        write_u32(out, 8, self.ssrc);
        let mut at = FIXED_HEADER_LEN;
        for &csrc in self.csrcs {
            write_u32(out, at, csrc);
            at += 4;
        }
        if !self.extensions.is_empty() {
            let words = (len - at - EXTENSION_HEADER_LEN) / 4;
            write_u16(out, at, ONE_BYTE_EXTENSION_PROFILE);
            // `extension_block_len` refused blocks whose word count exceeds u16.
            write_u16(out, at + 2, words as u16);
            at += EXTENSION_HEADER_LEN;
            for &(id, value) in self.extensions {
                // Checked in `extension_block_len`: 1..=16 bytes, so length − 1 fits the nibble.
                out[at] = id << 4 | (value.len() - 1) as u8;
                out[at + 1..at + 1 + value.len()].copy_from_slice(value);
                at += 1 + value.len();
            }
            out[at..].fill(0);
        }
        Ok(len)
    }

    /// Length of the extension block, header included; 0 without extensions.
    fn extension_block_len(&self) -> Result<usize, WireError> {
        if self.extensions.is_empty() {
            return Ok(0);
        }
        let mut elements_len = 0;
        for (id, value) in self.extensions {
            if !ONE_BYTE_IDS.contains(id) || value.is_empty() || value.len() > ONE_BYTE_MAX_VALUE_LEN {
                return Err(WireError::Unrepresentable);
            }
            elements_len += 1 + value.len();
        }
        let padded_len = elements_len.next_multiple_of(4);
        if padded_len / 4 > usize::from(u16::MAX) {
            return Err(WireError::Unrepresentable);
        }
        Ok(EXTENSION_HEADER_LEN + padded_len)
    }
}

#[cfg(test)]
mod tests;
