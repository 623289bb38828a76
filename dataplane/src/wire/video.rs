//! What the SFU reads in video payloads to switch simulcast layers: whether a packet starts
//! a key frame (VP8 RFC 7741, VP9 draft-ietf-payload-vp9, H.264 RFC 6184), the VP8
//! payload descriptor's picture id and TL0PICIDX, which a subscriber's stream must keep
//! continuous when its source changes underneath, and its temporal layer fields (TID, the
//! Y layer sync bit, KEYIDX), by which a subscriber is sent fewer frames a second.
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

const VP8_TID_SHIFT: u8 = 6;
const VP8_LAYER_SYNC: u8 = 0x20;
const VP8_KEYIDX_MASK: u8 = 0x1F;

/// Where the fields of a VP8 payload descriptor are (RFC 7741 §4.2). Every offset lies
/// before `payload`, which [`vp8_layout`] checks lies inside the slice: reading them cannot
/// go out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vp8Layout {
    /// The extension octet (I, L, T, K); 0 when the X bit is clear.
    extension: u8,
    /// Offset of the picture id, and whether it is the 15-bit form.
    picture_id: Option<(usize, bool)>,
    tl0picidx: Option<usize>,
    /// Offset of the TID/Y/KEYIDX octet, present when T or K is set.
    tid_keyidx: Option<usize>,
    /// Where the VP8 payload (after the descriptor) begins.
    payload: usize,
}

fn vp8_layout(payload: &[u8]) -> Option<Vp8Layout> {
    let first = *payload.first()?;
    let mut at = 1;
    let mut layout = Vp8Layout { extension: 0, picture_id: None, tl0picidx: None, tid_keyidx: None, payload: 0 };
    if first & VP8_EXTENDED != 0 {
        let extension = *payload.get(at)?;
        layout.extension = extension;
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
            layout.tid_keyidx = Some(at);
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

/// A VP8 temporal layer index (RFC 7741 §4.2's TID, two bits): 0 is the base layer, which
/// every other layer's frames depend on; a stream sent up to TID `n` has every frame of
/// layers 0..=n and none above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemporalId(u8);

impl TemporalId {
    /// The base layer.
    pub const BASE: Self = Self(0);
    /// The highest index the two-bit field holds: a cap of `MAX` drops nothing.
    pub const MAX: Self = Self(3);

    /// TID `tid`; `None` above [`TemporalId::MAX`].
    pub fn new(tid: u8) -> Option<Self> {
        (tid <= Self::MAX.0).then_some(Self(tid))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// The temporal scalability fields of a VP8 payload descriptor (RFC 7741 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Temporal {
    /// The frame's temporal layer, when the T bit says the descriptor has one; `None`: the
    /// stream is not temporally layered (its TID/Y bits, if the octet is there for KEYIDX,
    /// mean nothing).
    pub tid: Option<TemporalId>,
    /// The Y bit: the frame depends only on base layer frames (a layer sync point, where a
    /// receiver may start taking the frame's layer). Always false without a TID.
    pub layer_sync: bool,
    /// The temporal key frame index (KEYIDX, five bits), when the K bit says it is there.
    pub key_index: Option<u8>,
}

impl Vp8Temporal {
    /// The temporal fields of a VP8 payload; `None` when the descriptor is truncated (or no
    /// payload follows it). A descriptor without them reads as no TID and no KEYIDX.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let layout = vp8_layout(payload)?;
        let octet = layout.tid_keyidx.map_or(0, |at| payload[at]);
        let tid = (layout.extension & VP8_HAS_TID != 0).then_some(TemporalId(octet >> VP8_TID_SHIFT));
        Some(Self {
            tid,
            layer_sync: tid.is_some() && octet & VP8_LAYER_SYNC != 0,
            key_index: (layout.extension & VP8_HAS_KEYIDX != 0).then_some(octet & VP8_KEYIDX_MASK),
        })
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

    /// A descriptor built field by field as RFC 7741 §4.2 lays it out (independently of the
    /// parser): X set when any of I, L, T, K is; then the picture id (15-bit when `long`),
    /// TL0PICIDX, and the TID/Y/KEYIDX octet; then one payload byte.
    fn descriptor(i: bool, l: bool, t: bool, k: bool, long: bool) -> Vec<u8> {
        let x = i || l || t || k;
        let mut d = vec![u8::from(x) << 7 | 0x10];
        if x {
            d.push(u8::from(i) << 7 | u8::from(l) << 6 | u8::from(t) << 5 | u8::from(k) << 4);
        }
        if i {
            d.extend_from_slice(if long { &[0x80 | 0x12, 0x34][..] } else { &[0x56][..] });
        }
        if l {
            d.push(0xA7);
        }
        if t || k {
            // TID 2 (0b10), Y set, KEYIDX 0b10101.
            d.push(0b1011_0101);
        }
        d.push(0x9D);
        d
    }

    #[test]
    fn vp8_temporal_fields_in_every_combination_of_the_extension_bits() {
        for bits in 0..32u8 {
            let [i, l, t, k, long] = [0, 1, 2, 3, 4].map(|b| bits & (1 << b) != 0);
            let payload = descriptor(i, l, t, k, long);
            let case = format!("I={i} L={l} T={t} K={k} long={long}: {payload:02X?}");
            let temporal = Vp8Temporal::read(&payload).unwrap_or_else(|| panic!("{case}"));
            assert_eq!(temporal.tid, t.then_some(TemporalId(2)), "{case}");
            assert_eq!(temporal.layer_sync, t, "{case}");
            assert_eq!(temporal.key_index, k.then_some(0b10101), "{case}");
            let ids = Vp8PictureIds::read(&payload);
            let picture_id = i.then_some(if long { (0x1234, true) } else { (0x56, false) });
            assert_eq!(ids.and_then(|ids| ids.picture_id), picture_id, "{case}");
            assert_eq!(ids.and_then(|ids| ids.tl0picidx), l.then_some(0xA7), "{case}");
            // Every shorter prefix lacks a field or the payload after the descriptor.
            for len in 0..payload.len() {
                assert_eq!(Vp8Temporal::read(&payload[..len]), None, "{case} cut to {len}");
            }
        }
    }

    #[test]
    fn vp8_temporal_fields_of_an_l1t3_stream() {
        // As libwebrtc sends L1T3: I (15-bit), L, T; TID 0 with TL0PICIDX 9, a TID 1 layer
        // sync frame, a TID 2 frame that is not one.
        let base = [0x90, 0xE0, 0x80, 0x01, 9, 0x00, 0x9D];
        let sync = [0x90, 0xE0, 0x80, 0x02, 9, 0x60, 0x9D];
        let top = [0x90, 0xE0, 0x80, 0x03, 9, 0x80, 0x9D];
        let read = |p: &[u8]| Vp8Temporal::read(p).map(|t| (t.tid.map(TemporalId::get), t.layer_sync));
        assert_eq!(read(&base), Some((Some(0), false)));
        assert_eq!(read(&sync), Some((Some(1), true)));
        assert_eq!(read(&top), Some((Some(2), false)));
        // K without T: the octet holds KEYIDX only; its TID and Y bits mean nothing.
        let key_only = [0x90, 0x10, 0xFF, 0x9D];
        assert_eq!(
            Vp8Temporal::read(&key_only),
            Some(Vp8Temporal { tid: None, layer_sync: false, key_index: Some(31) })
        );
        // No X bit: no temporal layers.
        assert_eq!(read(&[0x10, 0x9D]), Some((None, false)));
        assert_eq!(Vp8Temporal::read(&[]), None);
        assert_eq!(TemporalId::new(3), Some(TemporalId::MAX));
        assert_eq!(TemporalId::new(4), None);
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
            let temporal = Vp8Temporal::read(payload);
            if let Some(ids) = Vp8PictureIds::read(payload) {
                ids.write(payload);
                assert_eq!(Vp8PictureIds::read(payload), Some(ids), "ids written back read the same");
                assert_eq!(Vp8Temporal::read(payload), temporal, "writing ids leaves the temporal fields");
            }
            if let Some(temporal) = temporal {
                assert!(!temporal.layer_sync || temporal.tid.is_some(), "no Y without a TID");
                assert!(temporal.key_index.is_none_or(|k| k < 32));
            }
        }
    }
}
