//! What the SFU reads in video payloads to switch simulcast layers: whether a packet starts
//! a key frame (VP8 RFC 7741, VP9 draft-ietf-payload-vp9, H.264 RFC 6184), and the VP8
//! payload descriptor's picture id and TL0PICIDX, which a subscriber's stream must keep
//! continuous when its source changes underneath.
//!
//! Rules: hand these functions the RTP payload (after the header and its extensions,
//! padding removed: [`super::rtp::RtpPacket::payload`]). Truncated or malformed payloads
//! are never key frames and carry no ids; nothing here panics or allocates.
#![forbid(unsafe_code)]

/// The payload formats whose key frames the SFU recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoFormat {
    Vp8,
    Vp9,
    H264,
}

impl VideoFormat {
    /// The format of an SDP encoding name (`VP8`, `vp9`, `H264`), compared without case.
    pub fn from_encoding_name(name: &str) -> Option<Self> {
        [("VP8", Self::Vp8), ("VP9", Self::Vp9), ("H264", Self::H264)]
            .into_iter()
            .find_map(|(known, format)| name.eq_ignore_ascii_case(known).then_some(format))
    }

    /// Whether `payload` is the first packet of a key frame: where a decoder can start.
    pub fn starts_key_frame(self, payload: &[u8]) -> bool {
        match self {
            Self::Vp8 => vp8_starts_key_frame(payload),
            Self::Vp9 => vp9_starts_key_frame(payload),
            Self::H264 => h264_starts_key_frame(payload),
        }
    }
}

const VP8_EXTENDED: u8 = 0x80;
const VP8_START: u8 = 0x10;
const VP8_PARTITION_MASK: u8 = 0x07;
const VP8_HAS_PICTURE_ID: u8 = 0x80;
const VP8_HAS_TL0PICIDX: u8 = 0x40;
const VP8_HAS_TID: u8 = 0x20;
const VP8_HAS_KEYIDX: u8 = 0x10;
const VP8_LONG_PICTURE_ID: u8 = 0x80;
/// The VP8 frame tag's P bit: 0 on a key frame (RFC 6386 §9.1).
const VP8_INTER_FRAME: u8 = 0x01;

/// Where the fields of a VP8 payload descriptor are (RFC 7741 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vp8Layout {
    /// Offset of the picture id, and whether it is the 15-bit form.
    picture_id: Option<(usize, bool)>,
    tl0picidx: Option<usize>,
    /// Where the VP8 payload (after the descriptor) begins.
    payload: usize,
}

fn vp8_layout(payload: &[u8]) -> Option<Vp8Layout> {
    let first = *payload.first()?;
    let mut at = 1;
    let mut layout = Vp8Layout { picture_id: None, tl0picidx: None, payload: 0 };
    if first & VP8_EXTENDED != 0 {
        let extension = *payload.get(at)?;
        at += 1;
        if extension & VP8_HAS_PICTURE_ID != 0 {
            let long = *payload.get(at)? & VP8_LONG_PICTURE_ID != 0;
            layout.picture_id = Some((at, long));
            at += if long { 2 } else { 1 };
        }
        if extension & VP8_HAS_TL0PICIDX != 0 {
            layout.tl0picidx = Some(at);
            at += 1;
        }
        if extension & (VP8_HAS_TID | VP8_HAS_KEYIDX) != 0 {
            at += 1;
        }
    }
    // The descriptor must be followed by payload bytes.
    layout.payload = at;
    (at < payload.len()).then_some(layout)
}

fn vp8_starts_key_frame(payload: &[u8]) -> bool {
    let Some(layout) = vp8_layout(payload) else { return false };
    let first = payload[0];
    // Only the first packet of partition 0 carries the frame tag.
    first & VP8_START != 0
        && first & VP8_PARTITION_MASK == 0
        && payload.get(layout.payload).is_some_and(|tag| tag & VP8_INTER_FRAME == 0)
}

/// A VP8 picture's ids as its payload descriptor carries them (RFC 7741): the picture id
/// (7 or 15 bits) and the temporal level 0 index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8PictureIds {
    /// The picture id, and whether it is written in the 15-bit form.
    pub picture_id: Option<(u16, bool)>,
    pub tl0picidx: Option<u8>,
}

impl Vp8PictureIds {
    /// The ids of a VP8 payload; `None` when it has neither (or is malformed).
    pub fn read(payload: &[u8]) -> Option<Self> {
        let layout = vp8_layout(payload)?;
        let picture_id = layout.picture_id.map(|(at, long)| {
            if long {
                (u16::from_be_bytes([payload[at] & !VP8_LONG_PICTURE_ID, payload[at + 1]]), true)
            } else {
                (u16::from(payload[at]), false)
            }
        });
        let tl0picidx = layout.tl0picidx.map(|at| payload[at]);
        (picture_id.is_some() || tl0picidx.is_some()).then_some(Self { picture_id, tl0picidx })
    }

    /// Writes these ids into `payload`'s descriptor, in the places and forms it already has
    /// (a 7-bit picture id keeps its low 7 bits); nothing when the payload has no such fields.
    pub fn write(&self, payload: &mut [u8]) {
        let Some(layout) = vp8_layout(payload) else { return };
        if let (Some((at, long)), Some((id, _))) = (layout.picture_id, self.picture_id) {
            if long {
                let [high, low] = (id & 0x7FFF).to_be_bytes();
                payload[at] = VP8_LONG_PICTURE_ID | high;
                payload[at + 1] = low;
            } else {
                payload[at] = (id & 0x7F) as u8;
            }
        }
        if let (Some(at), Some(index)) = (layout.tl0picidx, self.tl0picidx) {
            payload[at] = index;
        }
    }
}

const VP9_INTER_PICTURE: u8 = 0x40;
const VP9_HAS_LAYER_INDICES: u8 = 0x20;
const VP9_FLEXIBLE: u8 = 0x10;
const VP9_BEGINS_FRAME: u8 = 0x08;
const VP9_HAS_PICTURE_ID: u8 = 0x80;
const VP9_LONG_PICTURE_ID: u8 = 0x80;
const VP9_SPATIAL_ID_MASK: u8 = 0x0E;

fn vp9_starts_key_frame(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    if first & VP9_BEGINS_FRAME == 0 || first & VP9_INTER_PICTURE != 0 {
        return false;
    }
    let mut at = 1;
    if first & VP9_HAS_PICTURE_ID != 0 {
        let Some(&id) = payload.get(at) else { return false };
        at += if id & VP9_LONG_PICTURE_ID != 0 { 2 } else { 1 };
    }
    if first & VP9_HAS_LAYER_INDICES != 0 {
        // A picture starts with its lowest spatial layer: a decoder needs that one first.
        let Some(&indices) = payload.get(at) else { return false };
        if indices & VP9_SPATIAL_ID_MASK != 0 {
            return false;
        }
        at += if first & VP9_FLEXIBLE == 0 { 2 } else { 1 };
    }
    at < payload.len()
}

const H264_TYPE_MASK: u8 = 0x1F;
const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;
const H264_FU_START: u8 = 0x80;

/// An IDR picture or the parameter sets sent before it. Senders put SPS and PPS in front of
/// each IDR, so a stream joined at its SPS gives the decoder everything it needs.
fn h264_starts_key_frame(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else { return false };
    match header & H264_TYPE_MASK {
        H264_IDR | H264_SPS => true,
        H264_STAP_A => {
            let mut rest = &payload[1..];
            while let [high, low, body @ ..] = rest {
                let size = usize::from(u16::from_be_bytes([*high, *low]));
                let Some(nal) = body.get(..size) else { return false };
                if nal.first().is_some_and(|h| matches!(h & H264_TYPE_MASK, H264_IDR | H264_SPS)) {
                    return true;
                }
                rest = &body[size..];
            }
            false
        }
        H264_FU_A => payload.get(1).is_some_and(|fu| fu & H264_FU_START != 0 && fu & H264_TYPE_MASK == H264_IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 descriptor with a 15-bit picture id and a TL0PICIDX, starting partition 0,
    /// followed by a frame tag with the given P bit.
    fn vp8(picture_id: u16, tl0: u8, inter: bool) -> Vec<u8> {
        let [high, low] = picture_id.to_be_bytes();
        vec![0x90, 0xC0, 0x80 | high, low, tl0, if inter { 0x01 } else { 0x00 }, 0x9D, 0x01, 0x2A]
    }

    #[test]
    fn vp8_key_frames_are_the_first_packet_of_partition_zero_without_the_p_bit() {
        assert!(VideoFormat::Vp8.starts_key_frame(&vp8(300, 7, false)));
        assert!(!VideoFormat::Vp8.starts_key_frame(&vp8(300, 7, true)), "an inter frame");
        let mut continuation = vp8(300, 7, false);
        continuation[0] &= !VP8_START;
        assert!(!VideoFormat::Vp8.starts_key_frame(&continuation), "not the first packet");
        // RFC 7741 §4.2's minimal descriptor: one byte, S set, partition 0.
        assert!(VideoFormat::Vp8.starts_key_frame(&[0x10, 0x00, 0x9D]));
        assert!(!VideoFormat::Vp8.starts_key_frame(&[0x10]), "no frame tag");
        assert!(!VideoFormat::Vp8.starts_key_frame(&[0x90, 0x80]), "truncated descriptor");
        assert!(!VideoFormat::Vp8.starts_key_frame(&[]));
    }

    #[test]
    fn vp8_picture_ids_read_and_write_in_place() {
        let mut payload = vp8(0x1234, 9, true);
        let ids = Vp8PictureIds::read(&payload).unwrap();
        assert_eq!(ids, Vp8PictureIds { picture_id: Some((0x1234, true)), tl0picidx: Some(9) });
        Vp8PictureIds { picture_id: Some((0x7FFF, true)), tl0picidx: Some(255) }.write(&mut payload);
        assert_eq!(&payload[2..5], &[0xFF, 0xFF, 255]);
        assert_eq!(&payload[5..], &vp8(0, 0, true)[5..], "the payload after the descriptor is untouched");
        // A 7-bit picture id keeps its form.
        let mut short = vec![0x90, 0x80, 0x05, 0x00];
        assert_eq!(Vp8PictureIds::read(&short).unwrap().picture_id, Some((5, false)));
        Vp8PictureIds { picture_id: Some((0x1FF, false)), tl0picidx: None }.write(&mut short);
        assert_eq!(short, [0x90, 0x80, 0x7F, 0x00]);
        assert_eq!(Vp8PictureIds::read(&[0x10, 0x00]), None, "no ids");
    }

    #[test]
    fn vp9_key_frames_begin_an_intra_picture_at_spatial_layer_zero() {
        // I (15-bit picture id), B, not P; then the VP9 payload.
        assert!(VideoFormat::Vp9.starts_key_frame(&[0x88, 0x81, 0x02, 0x82]));
        assert!(!VideoFormat::Vp9.starts_key_frame(&[0xC8, 0x81, 0x02, 0x82]), "inter-picture predicted");
        assert!(!VideoFormat::Vp9.starts_key_frame(&[0x80, 0x81, 0x02, 0x82]), "does not begin a frame");
        // L set, non-flexible: layer indices byte (spatial id 1) and TL0PICIDX.
        assert!(!VideoFormat::Vp9.starts_key_frame(&[0xA8, 0x81, 0x02, 0x02, 0x00, 0x82]));
        assert!(VideoFormat::Vp9.starts_key_frame(&[0xA8, 0x81, 0x02, 0x00, 0x00, 0x82]));
        assert!(!VideoFormat::Vp9.starts_key_frame(&[0x88, 0x81]), "truncated");
    }

    #[test]
    fn h264_key_frames_start_at_parameter_sets_or_an_idr() {
        assert!(VideoFormat::H264.starts_key_frame(&[0x67, 0x42]), "SPS");
        assert!(VideoFormat::H264.starts_key_frame(&[0x65, 0x88]), "IDR");
        assert!(!VideoFormat::H264.starts_key_frame(&[0x41, 0x9A]), "non-IDR slice");
        // STAP-A holding SPS and PPS, as browsers send them before an IDR.
        assert!(VideoFormat::H264.starts_key_frame(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE]));
        assert!(!VideoFormat::H264.starts_key_frame(&[0x78, 0x00, 0x02, 0x68, 0xCE]), "STAP-A with a PPS only");
        assert!(!VideoFormat::H264.starts_key_frame(&[0x78, 0x00, 0x09, 0x67]), "STAP-A size past the end");
        // FU-A: start of an IDR, then its continuation.
        assert!(VideoFormat::H264.starts_key_frame(&[0x7C, 0x85, 0x88]));
        assert!(!VideoFormat::H264.starts_key_frame(&[0x7C, 0x05, 0x88]));
        assert!(!VideoFormat::H264.starts_key_frame(&[0x7C, 0x81, 0x88]), "FU-A of a non-IDR slice");
        assert!(!VideoFormat::H264.starts_key_frame(&[]));
    }

    #[test]
    fn encoding_names_compare_without_case() {
        assert_eq!(VideoFormat::from_encoding_name("vp8"), Some(VideoFormat::Vp8));
        assert_eq!(VideoFormat::from_encoding_name("H264"), Some(VideoFormat::H264));
        assert_eq!(VideoFormat::from_encoding_name("opus"), None);
    }

    #[test]
    fn no_payload_bytes_make_anything_panic() {
        let mut bytes = [0u8; 12];
        for seed in 0..20_000u32 {
            let len = (seed % 12) as usize;
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2_654_435_761).rotate_left(i as u32 * 3) >> 8) as u8;
            }
            let payload = &mut bytes[..len];
            for format in [VideoFormat::Vp8, VideoFormat::Vp9, VideoFormat::H264] {
                format.starts_key_frame(payload);
            }
            if let Some(ids) = Vp8PictureIds::read(payload) {
                ids.write(payload);
                assert_eq!(Vp8PictureIds::read(payload), Some(ids), "ids written back read the same");
            }
        }
    }
}
