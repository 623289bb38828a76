//! What the recorder reads inside RTP payloads: whether a packet starts a frame, whether that
//! frame is a key frame, and the codec bitstream it carries (depacketization). The capture
//! uses the first two to start each video file at a decodable frame; composition uses all
//! three. Formats: VP8 (RFC 7741), VP9 (RFC 9628), H.264 (RFC 6184, packetization modes 0
//! and 1), Opus (RFC 7587, one packet per payload).
//!
//! Every function takes untrusted bytes and answers `None` for a payload too short for what
//! its descriptor announces; nothing here panics or allocates beyond the caller's `Vec`.

use super::Codec;

/// What one payload says about the frame it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadInfo {
    /// The packet carries the first bytes of a frame.
    pub frame_start: bool,
    /// ... of a frame that decodes on its own (always true for audio).
    pub keyframe: bool,
}

/// The Annex-B start code H.264 NAL units are separated by in a byte stream.
const ANNEX_B_START: [u8; 4] = [0, 0, 0, 1];

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;
const H264_TYPE_MASK: u8 = 0x1F;

/// Reads a payload's descriptor; `None` when it is malformed.
pub(crate) fn inspect(codec: Codec, payload: &[u8]) -> Option<PayloadInfo> {
    match codec {
        Codec::Opus => Some(PayloadInfo { frame_start: true, keyframe: true }),
        Codec::Vp8 => {
            let (start, frame) = vp8(payload)?;
            // The VP8 frame tag's P bit (RFC 6386 §9.1) is 0 for key frames.
            let keyframe = start && frame.first().is_some_and(|tag| tag & 1 == 0);
            Some(PayloadInfo { frame_start: start, keyframe })
        }
        Codec::Vp9 => {
            let descriptor = vp9(payload)?;
            let keyframe = descriptor.begins && !descriptor.inter_picture && descriptor.spatial_layer == 0;
            Some(PayloadInfo { frame_start: descriptor.begins, keyframe })
        }
        Codec::H264 => h264_inspect(payload),
    }
}

/// Appends the codec bitstream `payload` carries to `out` (Annex-B for H.264).
pub(crate) fn depacketize(codec: Codec, payload: &[u8], out: &mut Vec<u8>) -> Option<()> {
    match codec {
        Codec::Opus => out.extend_from_slice(payload),
        Codec::Vp8 => out.extend_from_slice(vp8(payload)?.1),
        Codec::Vp9 => out.extend_from_slice(&payload[vp9(payload)?.len..]),
        Codec::H264 => h264_depacketize(payload, out)?,
    }
    Some(())
}

/// The VP8 payload descriptor: whether it starts partition 0 (the frame), and the bytes after it.
fn vp8(payload: &[u8]) -> Option<(bool, &[u8])> {
    let &first = payload.first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let &extension = payload.get(at)?;
        at += 1;
        if extension & 0x80 != 0 {
            // PictureID: 15 bits when its first bit (M) is set, else 7.
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if extension & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if extension & 0x30 != 0 {
            at += 1; // TID, Y, KEYIDX
        }
    }
    let rest = payload.get(at..)?;
    let start = first & 0x10 != 0 && first & 0x07 == 0;
    Some((start, rest))
}

#[derive(Debug, Clone, Copy)]
struct Vp9Descriptor {
    begins: bool,
    inter_picture: bool,
    spatial_layer: u8,
    len: usize,
}

/// The VP9 payload descriptor (flexible and non-flexible modes, with a scalability structure).
fn vp9(payload: &[u8]) -> Option<Vp9Descriptor> {
    let &first = payload.first()?;
    let (has_picture_id, inter_picture, has_layers, flexible) =
        (first & 0x80 != 0, first & 0x40 != 0, first & 0x20 != 0, first & 0x10 != 0);
    let begins = first & 0x08 != 0;
    let has_structure = first & 0x02 != 0;
    let mut at = 1;
    if has_picture_id {
        at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    let mut spatial_layer = 0;
    if has_layers {
        spatial_layer = (payload.get(at)? >> 1) & 0x07;
        at += if flexible { 1 } else { 2 };
    }
    if flexible && inter_picture {
        // Up to three reference indices, each with a "another follows" bit.
        for _ in 0..3 {
            let &diff = payload.get(at)?;
            at += 1;
            if diff & 0x01 == 0 {
                break;
            }
        }
    }
    if has_structure {
        let &structure = payload.get(at)?;
        at += 1;
        let spatial_layers = usize::from(structure >> 5) + 1;
        if structure & 0x10 != 0 {
            at += 4 * spatial_layers; // width and height per layer
        }
        if structure & 0x08 != 0 {
            let groups = *payload.get(at)?;
            at += 1;
            for _ in 0..groups {
                let &group = payload.get(at)?;
                at += 1 + usize::from((group >> 2) & 0x03);
            }
        }
    }
    payload.get(at..)?;
    Some(Vp9Descriptor { begins, inter_picture, spatial_layer, len: at })
}

fn h264_is_key(nal_type: u8) -> bool {
    nal_type == H264_IDR || nal_type == H264_SPS
}

/// The NAL units of a STAP-A payload (after its one-byte header).
fn stap_a_units(mut rest: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let unit = rest
            .get(..2)
            .map(|size| usize::from(u16::from_be_bytes([size[0], size[1]])))
            .filter(|&size| size > 0)
            .and_then(|size| rest.get(2..2 + size));
        match unit {
            Some(unit) => {
                rest = &rest[2 + unit.len()..];
                Some(Some(unit))
            }
            None => {
                rest = &[];
                Some(None)
            }
        }
    })
}

fn h264_inspect(payload: &[u8]) -> Option<PayloadInfo> {
    let nal_type = payload.first()? & H264_TYPE_MASK;
    match nal_type {
        1..=23 => Some(PayloadInfo { frame_start: true, keyframe: h264_is_key(nal_type) }),
        H264_STAP_A => {
            let mut keyframe = false;
            for unit in stap_a_units(&payload[1..]) {
                keyframe |= h264_is_key(unit?[0] & H264_TYPE_MASK);
            }
            Some(PayloadInfo { frame_start: true, keyframe })
        }
        H264_FU_A => {
            let &header = payload.get(1)?;
            let start = header & 0x80 != 0;
            Some(PayloadInfo { frame_start: start, keyframe: start && h264_is_key(header & H264_TYPE_MASK) })
        }
        _ => None,
    }
}

fn h264_depacketize(payload: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let &indicator = payload.first()?;
    match indicator & H264_TYPE_MASK {
        1..=23 => {
            out.extend_from_slice(&ANNEX_B_START);
            out.extend_from_slice(payload);
        }
        H264_STAP_A => {
            for unit in stap_a_units(&payload[1..]) {
                out.extend_from_slice(&ANNEX_B_START);
                out.extend_from_slice(unit?);
            }
        }
        H264_FU_A => {
            let &header = payload.get(1)?;
            if header & 0x80 != 0 {
                out.extend_from_slice(&ANNEX_B_START);
                // The NAL header: F and NRI of the indicator, the type of the FU header.
                out.push((indicator & !H264_TYPE_MASK) | (header & H264_TYPE_MASK));
            }
            out.extend_from_slice(&payload[2..]);
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(codec: Codec, payload: &[u8]) -> Option<(bool, bool)> {
        inspect(codec, payload).map(|i| (i.frame_start, i.keyframe))
    }

    fn bitstream(codec: Codec, payload: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        depacketize(codec, payload, &mut out).map(|()| out)
    }

    #[test]
    fn vp8_descriptors() {
        // S=1, PID=0, no extension; VP8 frame tag with P=0: a key frame start.
        assert_eq!(info(Codec::Vp8, &[0x10, 0x50, 0x9d]), Some((true, true)));
        // Same with P=1: an inter frame.
        assert_eq!(info(Codec::Vp8, &[0x10, 0x51, 0x9d]), Some((true, false)));
        // A continuation packet (S=0) is neither, whatever its first byte.
        assert_eq!(info(Codec::Vp8, &[0x00, 0x50]), Some((false, false)));
        // S=1 but partition 1: not the frame's start.
        assert_eq!(info(Codec::Vp8, &[0x11, 0x50]), Some((false, false)));
        // X with I (15-bit picture id), L and T/K: 5 descriptor bytes, then the frame.
        let extended = [0x90, 0xE0, 0x80 | 0x12, 0x34, 0x07, 0x40, 0x50, 0xAA];
        assert_eq!(info(Codec::Vp8, &extended), Some((true, true)));
        assert_eq!(bitstream(Codec::Vp8, &extended), Some(vec![0x50, 0xAA]));
        // 7-bit picture id.
        assert_eq!(bitstream(Codec::Vp8, &[0x90, 0x80, 0x12, 0x50]), Some(vec![0x50]));
        // Truncated descriptors.
        assert_eq!(info(Codec::Vp8, &[]), None);
        assert_eq!(info(Codec::Vp8, &[0x90]), None);
        assert_eq!(info(Codec::Vp8, &[0x90, 0x80, 0x80]), None);
    }

    #[test]
    fn vp9_descriptors() {
        // I=1 (7-bit id), B=1, E=1, P=0, non-flexible with layers (SID 0): a key frame.
        let key = [0x80 | 0x20 | 0x08 | 0x04, 0x05, 0x00, 0x11, 0x82, 0x49];
        assert_eq!(info(Codec::Vp9, &key), Some((true, true)));
        assert_eq!(bitstream(Codec::Vp9, &key), Some(vec![0x82, 0x49]));
        // P=1: inter picture.
        assert_eq!(info(Codec::Vp9, &[0x80 | 0x40 | 0x08, 0x05, 0xAA]), Some((true, false)));
        // Not the first packet of the frame.
        assert_eq!(info(Codec::Vp9, &[0x04, 0xAA]), Some((false, false)));
        // Flexible mode, P=1 with two reference indices, then the frame.
        assert_eq!(bitstream(Codec::Vp9, &[0x40 | 0x10 | 0x08, 0x03, 0x02, 0xAB]), Some(vec![0xAB]));
        // Scalability structure: one layer with its size, one group with one reference.
        let with_structure = [0x08 | 0x02, 0x18, 0x02, 0x80, 0x01, 0x68, 0x01, 0x04, 0x01, 0xCD];
        assert_eq!(info(Codec::Vp9, &with_structure), Some((true, true)));
        assert_eq!(bitstream(Codec::Vp9, &with_structure), Some(vec![0xCD]));
        // A structure announcing more than the payload holds.
        assert_eq!(info(Codec::Vp9, &[0x08 | 0x02, 0x18, 0x02]), None);
        // A key frame of a higher spatial layer alone is not a decodable start.
        assert_eq!(info(Codec::Vp9, &[0x20 | 0x08, 0x02, 0x00, 0xAA]), Some((true, false)));
    }

    #[test]
    fn h264_single_nal_units() {
        assert_eq!(info(Codec::H264, &[0x65, 0x88]), Some((true, true))); // IDR
        assert_eq!(info(Codec::H264, &[0x67, 0x42]), Some((true, true))); // SPS
        assert_eq!(info(Codec::H264, &[0x41, 0x9a]), Some((true, false))); // non-IDR slice
        assert_eq!(bitstream(Codec::H264, &[0x65, 0x88]), Some(vec![0, 0, 0, 1, 0x65, 0x88]));
        assert_eq!(info(Codec::H264, &[0x00]), None); // type 0 is undefined
    }

    #[test]
    fn h264_stap_a() {
        let stap = [0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x01, 0x68, 0x00, 0x02, 0x65, 0x88];
        assert_eq!(info(Codec::H264, &stap), Some((true, true)));
        assert_eq!(
            bitstream(Codec::H264, &stap),
            Some(vec![0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0, 0, 0, 1, 0x65, 0x88])
        );
        // A unit whose size runs past the payload.
        assert_eq!(info(Codec::H264, &[0x78, 0x00, 0x09, 0x67]), None);
        assert_eq!(bitstream(Codec::H264, &[0x78, 0x00, 0x09, 0x67]), None);
    }

    #[test]
    fn h264_fu_a() {
        // Indicator NRI=3 type 28; FU header S=1 type 5.
        let start = [0x7C, 0x85, 0xAA, 0xBB];
        assert_eq!(info(Codec::H264, &start), Some((true, true)));
        assert_eq!(bitstream(Codec::H264, &start), Some(vec![0, 0, 0, 1, 0x65, 0xAA, 0xBB]));
        let middle = [0x7C, 0x05, 0xCC];
        assert_eq!(info(Codec::H264, &middle), Some((false, false)));
        assert_eq!(bitstream(Codec::H264, &middle), Some(vec![0xCC]));
        // Start of a non-IDR slice.
        assert_eq!(info(Codec::H264, &[0x5C, 0x81, 0xAA]), Some((true, false)));
        assert_eq!(info(Codec::H264, &[0x7C]), None);
    }

    #[test]
    fn opus_is_every_packet_a_frame() {
        assert_eq!(info(Codec::Opus, &[0xFC, 0xFF]), Some((true, true)));
        assert_eq!(bitstream(Codec::Opus, &[0xFC, 0xFF]), Some(vec![0xFC, 0xFF]));
    }
}
