//! An accepted RTP packet has every accessor and iterator called, stays inside its buffer,
//! stays valid through every setter, and copies into a packet that parses with the same
//! payload; every extension element's value goes through the RFC 6464 audio level parser,
//! which takes exactly the one-byte values; the payload goes through the key frame detection
//! and VP8 picture id rewriting of simulcast, and the VP8 temporal layer fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uprtcd_dataplane::wire::WireError;
use uprtcd_dataplane::wire::audio_level::AudioLevel;
use uprtcd_dataplane::wire::rtp::{ExtensionIdMap, ONE_BYTE_EXTENSION_PROFILE, RtpHeader, RtpPacket};
use uprtcd_dataplane::wire::video::{VideoFormat, Vp8PictureIds, Vp8Temporal};

/// Offset of `part` inside `whole`, asserting that it lies within it.
fn offset_within(whole: &[u8], part: &[u8]) -> usize {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    assert!(start + part.len() <= whole.len(), "slice outside the packet");
    start
}

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = RtpPacket::new_checked(data) else { return };
    let header_len = packet.header_len();
    let csrc_count = packet.csrcs().len();
    assert_eq!(header_len + packet.payload().len() + packet.padding_len(), data.len());
    assert_eq!(offset_within(data, packet.payload()), header_len);
    assert!(12 + 4 * csrc_count <= header_len);
    assert_eq!(packet.csrcs().count(), csrc_count);
    assert!(packet.payload_type() < 128);
    let elements_start = 12 + 4 * csrc_count + 4;
    for (id, value) in packet.extensions() {
        assert_ne!(id, 0, "padding is not an element");
        let at = offset_within(data, value);
        assert!(at >= elements_start && at + value.len() <= header_len, "extension outside the header");
        assert!(packet.extension(id).is_some());
        assert!(packet.extension_profile().is_some());
        match AudioLevel::parse(value) {
            Ok(level) => assert!(value.len() == 1 && level.level_dbov < 128 && level.voice == (value[0] >= 0x80)),
            Err(_) => assert_ne!(value.len(), 1),
        }
    }

    let mut copy = data.to_vec();
    let mut writable = RtpPacket::new_checked(&mut copy[..]).expect("same bytes");
    writable.set_sequence_number(!packet.sequence_number());
    writable.set_timestamp(!packet.timestamp());
    writable.set_ssrc(!packet.ssrc());
    writable.set_marker(!packet.marker());
    writable.set_payload_type(127 - packet.payload_type()).expect("below 128");
    for id in 0..=255 {
        if let Some(value) = writable.extension_mut(id) {
            value.fill(!id);
        }
    }
    let rewritten = RtpPacket::new_checked(&copy[..]).expect("setters keep a packet valid");
    assert_eq!(rewritten.header_len(), header_len);
    assert_eq!(rewritten.padding_len(), packet.padding_len());
    assert_eq!(rewritten.payload(), packet.payload());
    assert_eq!(rewritten.sequence_number(), !packet.sequence_number());
    assert_eq!(rewritten.timestamp(), !packet.timestamp());
    assert_eq!(rewritten.ssrc(), !packet.ssrc());
    assert_eq!(rewritten.marker(), !packet.marker());
    assert_eq!(rewritten.payload_type(), 127 - packet.payload_type());
    assert!(rewritten.csrcs().eq(packet.csrcs()));
    assert_eq!(rewritten.extensions().count(), packet.extensions().count());

    // The header written back from the fields, CSRCs and (one-byte form) elements reads
    // back the same.
    let csrcs: Vec<u32> = packet.csrcs().collect();
    let extensions: Vec<(u8, &[u8])> = packet.extensions().collect();
    let mut builder =
        RtpHeader::new(packet.payload_type(), packet.sequence_number(), packet.timestamp(), packet.ssrc())
            .marker(packet.marker())
            .csrcs(&csrcs);
    if packet.extension_profile() == Some(ONE_BYTE_EXTENSION_PROFILE) {
        builder = builder.extensions(&extensions);
    }
    let mut header = vec![0; builder.encoded_len().expect("fields of a valid packet")];
    let written = builder.write(&mut header).expect("sized by encoded_len");
    let reread = RtpPacket::new_checked(&header[..written]).expect("written header");
    assert_eq!(reread.header_len(), written);
    assert_eq!(reread.sequence_number(), packet.sequence_number());
    assert_eq!(reread.timestamp(), packet.timestamp());
    assert_eq!(reread.ssrc(), packet.ssrc());
    assert_eq!(reread.marker(), packet.marker());
    assert_eq!(reread.payload_type(), packet.payload_type());
    assert!(reread.csrcs().eq(csrcs));
    if packet.extension_profile() == Some(ONE_BYTE_EXTENSION_PROFILE) {
        assert!(reread.extensions().eq(extensions));
    }

    // A consumer's copy: the same ids (two-byte ids above 14 dropped), a transport-wide
    // sequence number added under id 5 in place of the packet's own.
    let added: (u8, &[u8]) = (5, &[0xbe, 0xef]);
    let mut sent = vec![0; data.len() + 8];
    match packet.copy_renumbered(&mut sent, &ExtensionIdMap::identity(), Some(added)) {
        Ok(len) => {
            let copy = RtpPacket::new_checked(&sent[..len]).expect("a copy parses");
            assert_eq!(copy.payload(), packet.payload());
            assert_eq!(copy.padding_len(), packet.padding_len());
            assert_eq!(copy.sequence_number(), packet.sequence_number());
            assert!(copy.csrcs().eq(packet.csrcs()));
            let expected = packet.extensions().filter(|&(id, _)| (1..=14).contains(&id) && id != added.0);
            assert!(copy.extensions().eq(expected.chain([added])));
        }
        // Only a block already near its 65535-word limit has no room for one more element.
        Err(error) => {
            assert_eq!(error, WireError::Unrepresentable);
            assert!(header_len > 4 * 65_530, "refused a {header_len}-byte header");
        }
    }

    // What the SFU reads in video payloads to switch simulcast layers: never a panic, and VP8
    // picture ids written back read the same.
    for format in [VideoFormat::Vp8, VideoFormat::Vp9, VideoFormat::H264] {
        format.starts_key_frame(packet.payload());
    }
    let mut payload = packet.payload().to_vec();
    let temporal = Vp8Temporal::read(&payload);
    if let Some(temporal) = temporal {
        assert!(!temporal.layer_sync || temporal.tid.is_some(), "no Y bit without a TID");
        assert!(temporal.key_index.is_none_or(|k| k < 32), "KEYIDX is five bits");
    }
    if let Some(ids) = Vp8PictureIds::read(&payload) {
        assert!(temporal.is_some(), "a descriptor whose ids read is whole");
        ids.write(&mut payload);
        assert_eq!(Vp8PictureIds::read(&payload), Some(ids));
        assert_eq!(Vp8Temporal::read(&payload), temporal, "writing ids leaves the temporal fields");
    }
});
