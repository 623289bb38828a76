use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::wire::test_vectors::CHROMIUM_VP8;

fn chromium_vp8() -> RtpPacket<[u8; 40]> {
    RtpPacket::new_checked(CHROMIUM_VP8).unwrap()
}

/// A fixed header (PT 111, seq 1, ts 2, SSRC 3) with `first` as its first byte, followed by
/// `rest`.
fn packet(first: u8, rest: &[u8]) -> Vec<u8> {
    let mut bytes = vec![first, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
    bytes.extend_from_slice(rest);
    bytes
}

#[test]
fn chromium_vp8_packet_fields() {
    let packet = chromium_vp8();
    assert!(packet.marker());
    assert_eq!(packet.payload_type(), 96);
    assert_eq!(packet.sequence_number(), 0x1234);
    assert_eq!(packet.timestamp(), 0x5678_9abc);
    assert_eq!(packet.ssrc(), 0x3ab4_c0de);
    assert_eq!(packet.csrcs().count(), 0);
    assert_eq!(packet.header_len(), 32);
    assert_eq!(packet.padding_len(), 0);
    assert_eq!(packet.payload(), &CHROMIUM_VP8[32..]);
    assert_eq!(packet.extension_profile(), Some(ONE_BYTE_EXTENSION_PROFILE));
}

#[test]
fn chromium_vp8_one_byte_extensions() {
    let packet = chromium_vp8();
    let extensions: Vec<_> = packet.extensions().collect();
    assert_eq!(
        extensions,
        [(1, &[0x00, 0x00, 0x00][..]), (2, &[0x3c, 0x1e, 0x5a][..]), (3, &[0x01, 0x2c][..]), (4, &b"0"[..])]
    );
    assert_eq!(packet.extension(3), Some(&[0x01, 0x2c][..]));
    assert_eq!(packet.extension(5), None);
    assert_eq!(packet.extension(0), None);
}

#[test]
fn the_builder_writes_the_chromium_header_byte_for_byte() {
    let extensions: [(u8, &[u8]); 4] = [(1, &[0, 0, 0]), (2, &[0x3c, 0x1e, 0x5a]), (3, &[0x01, 0x2c]), (4, b"0")];
    let header = RtpHeader::new(96, 0x1234, 0x5678_9abc, 0x3ab4_c0de).marker(true).extensions(&extensions);
    // Dirty the buffer: the writer must zero its own padding.
    let mut buf = [0xff; 64];
    assert_eq!(header.encoded_len(), Ok(32));
    assert_eq!(header.write(&mut buf), Ok(32));
    assert_eq!(buf[..32], CHROMIUM_VP8[..32]);
}

#[test]
fn builder_round_trip_with_csrcs_and_no_extensions() {
    let csrcs = [0x1111_1111, 0x2222_2222, 0xffff_ffff];
    let mut buf = [0; 64];
    let len = RtpHeader::new(0, 65535, u32::MAX, 7).csrcs(&csrcs).write(&mut buf).unwrap();
    assert_eq!(len, 24);
    buf[len..len + 3].copy_from_slice(b"abc");
    let packet = RtpPacket::new_checked(&buf[..len + 3]).unwrap();
    assert!(!packet.marker());
    assert_eq!(packet.payload_type(), 0);
    assert_eq!(packet.sequence_number(), 65535);
    assert_eq!(packet.timestamp(), u32::MAX);
    assert_eq!(packet.ssrc(), 7);
    assert_eq!(packet.csrcs().collect::<Vec<_>>(), csrcs);
    assert_eq!(packet.extension_profile(), None);
    assert_eq!(packet.extensions().count(), 0);
    assert_eq!(packet.payload(), b"abc");
}

#[test]
fn builder_round_trip_of_extension_value_lengths() {
    let values: Vec<Vec<u8>> = (1..=16u8).map(|len| (0..len).collect()).collect();
    let extensions: Vec<(u8, &[u8])> = values.iter().zip(1..=14).map(|(value, id)| (id, &value[..])).collect();
    let mut buf = [0; 512];
    let len = RtpHeader::new(127, 1, 2, 3).extensions(&extensions).write(&mut buf).unwrap();
    assert_eq!(len % 4, 0);
    let packet = RtpPacket::new_checked(&buf[..len]).unwrap();
    assert_eq!(packet.payload_type(), 127);
    assert_eq!(packet.header_len(), len);
    assert_eq!(packet.extensions().collect::<Vec<_>>(), extensions);
}

#[test]
fn builder_refuses_what_the_header_cannot_carry() {
    let mut buf = [0; 256];
    let refused = |header: RtpHeader<'_>| header.encoded_len() == Err(WireError::Unrepresentable);
    assert!(refused(RtpHeader::new(128, 0, 0, 0)));
    assert!(refused(RtpHeader::new(96, 0, 0, 0).csrcs(&[0; 16])));
    assert!(refused(RtpHeader::new(96, 0, 0, 0).extensions(&[(0, &[1])])));
    assert!(refused(RtpHeader::new(96, 0, 0, 0).extensions(&[(15, &[1])])));
    assert!(refused(RtpHeader::new(96, 0, 0, 0).extensions(&[(1, &[])])));
    assert!(refused(RtpHeader::new(96, 0, 0, 0).extensions(&[(1, &[0; 17])])));
    assert_eq!(RtpHeader::new(128, 0, 0, 0).write(&mut buf), Err(WireError::Unrepresentable));
}

#[test]
fn builder_needs_room_for_the_whole_header() {
    let extensions: [(u8, &[u8]); 1] = [(2, &[1, 2, 3])];
    let header = RtpHeader::new(96, 1, 2, 3).csrcs(&[9]).extensions(&extensions);
    let len = header.encoded_len().unwrap();
    let mut buf = vec![0; len];
    for short in 0..len {
        assert_eq!(header.write(&mut buf[..short]), Err(WireError::BufferTooSmall), "{short} bytes");
    }
    assert_eq!(header.write(&mut buf), Ok(len));
}

#[test]
fn two_byte_extensions_allow_empty_values_ids_above_14_and_padding() {
    let bytes = packet(
        0x90,
        &[
            0x10, 0x00, 0x00, 0x03, // two-byte profile, 3 words
            0x05, 0x00, // id 5, empty
            0x00, // padding
            0xc8, 0x03, 0xaa, 0xbb, 0xcc, // id 200, 3 bytes
            0x0f, 0x01, 0xdd, // id 15, 1 byte
            0x00, // padding
            0xde, 0xad, // payload
        ],
    );
    let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(packet.extension_profile(), Some(0x1000));
    assert_eq!(
        packet.extensions().collect::<Vec<_>>(),
        [(5, &[][..]), (200, &[0xaa, 0xbb, 0xcc][..]), (15, &[0xdd][..])]
    );
    assert_eq!(packet.payload(), [0xde, 0xad]);
}

#[test]
fn two_byte_profile_application_bits_are_ignored() {
    let bytes = packet(0x90, &[0x10, 0x0f, 0x00, 0x01, 0x07, 0x01, 0x42, 0x00]);
    let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(packet.extension_profile(), Some(0x100f));
    assert_eq!(packet.extensions().collect::<Vec<_>>(), [(7, &[0x42][..])]);
}

#[test]
fn one_byte_id_15_ends_the_elements() {
    // After id 15 the bytes would be a malformed element (id 1 claiming 16 bytes); they must
    // be neither parsed nor refused.
    let bytes = packet(0x90, &[0xbe, 0xde, 0x00, 0x02, 0x20, 0x77, 0xf5, 0x1f, 0x00, 0x00, 0x00, 0x00]);
    let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(packet.extensions().collect::<Vec<_>>(), [(2, &[0x77][..])]);
    assert_eq!(packet.extension(1), None);
}

#[test]
fn one_byte_padding_between_elements_is_skipped() {
    let bytes = packet(0x90, &[0xbe, 0xde, 0x00, 0x02, 0x00, 0x00, 0x10, 0xaa, 0x00, 0x21, 0xbb, 0xcc]);
    let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(packet.extensions().collect::<Vec<_>>(), [(1, &[0xaa][..]), (2, &[0xbb, 0xcc][..])]);
}

#[test]
fn an_unknown_profile_is_kept_without_elements() {
    let bytes = packet(0x90, &[0xab, 0xcd, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78, 0x99]);
    let mut packet = RtpPacket::new_checked(bytes).unwrap();
    assert_eq!(packet.extension_profile(), Some(0xabcd));
    assert_eq!(packet.extensions().count(), 0);
    assert_eq!(packet.extension_mut(1), None);
    assert_eq!(packet.header_len(), 20);
    assert_eq!(packet.payload(), [0x99]);
}

#[test]
fn elements_running_past_the_block_are_refused() {
    // One-byte id 1 claiming 4 bytes in a one-word block.
    let one_byte = packet(0x90, &[0xbe, 0xde, 0x00, 0x01, 0x13, 0x01, 0x02, 0x03, 0xff]);
    assert_eq!(RtpPacket::new_checked(&one_byte[..]).unwrap_err(), WireError::BadExtension);
    // Two-byte id 1 claiming 3 bytes where 2 are left.
    let two_byte = packet(0x90, &[0x10, 0x00, 0x00, 0x01, 0x01, 0x03, 0xaa, 0xbb]);
    assert_eq!(RtpPacket::new_checked(&two_byte[..]).unwrap_err(), WireError::BadExtension);
    // Two-byte id in the block's last byte, with no room for its length.
    let no_length = packet(0x90, &[0x10, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x09]);
    assert_eq!(RtpPacket::new_checked(&no_length[..]).unwrap_err(), WireError::BadExtension);
}

#[test]
fn extension_block_longer_than_the_packet_is_truncated() {
    let bytes = packet(0x90, &[0xbe, 0xde, 0x00, 0x02, 0x10, 0xaa, 0x00, 0x00]);
    assert_eq!(RtpPacket::new_checked(&bytes[..]).unwrap_err(), WireError::Truncated);
    let no_extension_header = packet(0x90, &[0xbe, 0xde]);
    assert_eq!(RtpPacket::new_checked(&no_extension_header[..]).unwrap_err(), WireError::Truncated);
}

#[test]
fn csrcs_are_listed_in_order() {
    let bytes = packet(0x82, &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xfe, 7]);
    let with_csrcs = RtpPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(with_csrcs.csrcs().len(), 2);
    assert_eq!(with_csrcs.csrcs().collect::<Vec<_>>(), [1, 0xffff_fffe]);
    assert_eq!(with_csrcs.header_len(), 20);
    assert_eq!(with_csrcs.payload(), [7]);
    let missing_csrc = packet(0x82, &[0, 0, 0, 1, 0xff]);
    assert_eq!(RtpPacket::new_checked(&missing_csrc[..]).unwrap_err(), WireError::Truncated);
}

#[test]
fn padding_is_cut_from_the_payload() {
    let bytes = packet(0xa0, &[0xaa, 0xbb, 0x00, 0x00, 0x03]);
    let padded = RtpPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(padded.padding_len(), 3);
    assert_eq!(padded.payload(), [0xaa, 0xbb]);
    // A padding-only packet (bandwidth probe): no payload at all.
    let probe_bytes = packet(0xa0, &[0, 0, 0, 4]);
    let probe = RtpPacket::new_checked(&probe_bytes[..]).unwrap();
    assert_eq!(probe.padding_len(), 4);
    assert!(probe.payload().is_empty());
}

#[test]
fn bad_padding_is_refused() {
    let zero_count = packet(0xa0, &[0xaa, 0x00]);
    assert_eq!(RtpPacket::new_checked(&zero_count[..]).unwrap_err(), WireError::BadPadding);
    let past_the_header = packet(0xa0, &[0xaa, 0x03]);
    assert_eq!(RtpPacket::new_checked(&past_the_header[..]).unwrap_err(), WireError::BadPadding);
    // The padding bit on a header-only packet: the "count" would be the SSRC's last byte.
    let header_only = packet(0xa0, &[]);
    assert_eq!(RtpPacket::new_checked(&header_only[..]).unwrap_err(), WireError::BadPadding);
}

#[test]
fn only_version_2_is_accepted() {
    for version in [0u8, 1, 3] {
        let bytes = packet(version << 6, &[1, 2, 3]);
        assert_eq!(RtpPacket::new_checked(&bytes[..]).unwrap_err(), WireError::BadVersion);
    }
}

#[test]
fn every_prefix_shorter_than_the_header_is_refused() {
    for len in 0..32 {
        assert!(RtpPacket::new_checked(&CHROMIUM_VP8[..len]).is_err(), "prefix of {len} bytes");
    }
    // From the header on, a prefix is a packet with a shorter payload: RTP has no length.
    for len in 32..=CHROMIUM_VP8.len() {
        let packet = RtpPacket::new_checked(&CHROMIUM_VP8[..len]).unwrap();
        assert_eq!(packet.payload().len(), len - 32);
        assert_eq!(packet.extensions().count(), 4);
    }
}

#[test]
fn setters_rewrite_only_their_field() {
    let mut packet = chromium_vp8();
    packet.set_sequence_number(0xfffe);
    packet.set_timestamp(0x0102_0304);
    packet.set_ssrc(0xcafe_f00d);
    packet.set_payload_type(100).unwrap();
    assert!(packet.marker(), "setting the payload type keeps the marker");
    packet.set_marker(false);
    assert_eq!(packet.payload_type(), 100, "clearing the marker keeps the payload type");
    assert_eq!(packet.set_payload_type(128), Err(WireError::Unrepresentable));

    let bytes = packet.into_inner();
    let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
    assert!(!packet.marker());
    assert_eq!(packet.payload_type(), 100);
    assert_eq!(packet.sequence_number(), 0xfffe);
    assert_eq!(packet.timestamp(), 0x0102_0304);
    assert_eq!(packet.ssrc(), 0xcafe_f00d);
    assert_eq!(bytes[0], CHROMIUM_VP8[0]);
    assert_eq!(bytes[12..], CHROMIUM_VP8[12..]);
}

#[test]
fn extension_values_are_rewritten_in_place() {
    let mut packet = chromium_vp8();
    packet.extension_mut(2).unwrap().copy_from_slice(&[0x01, 0x02, 0x03]);
    packet.extension_mut(3).unwrap().copy_from_slice(&0xbeefu16.to_be_bytes());
    assert_eq!(packet.extension_mut(9), None);
    assert_eq!(packet.extension_mut(0), None, "padding is not an element");
    assert_eq!(packet.extension(2), Some(&[0x01, 0x02, 0x03][..]));
    assert_eq!(packet.extension(3), Some(&[0xbe, 0xef][..]));
    assert_eq!(packet.extension(4), Some(&b"0"[..]));
    assert_eq!(packet.payload(), &CHROMIUM_VP8[32..]);
}

#[test]
fn a_mutable_slice_is_a_buffer_too() {
    let mut bytes = CHROMIUM_VP8;
    let mut packet = RtpPacket::new_checked(&mut bytes[..]).unwrap();
    packet.set_sequence_number(7);
    assert_eq!(packet.sequence_number(), 7);
    assert_eq!(bytes[2..4], [0, 7]);
}

#[test]
fn remap_renumbers_kept_elements_and_blanks_the_rest() {
    let mut bytes = CHROMIUM_VP8;
    let mut map = ExtensionIdMap::blank_all();
    map.map(2, 7).unwrap();
    map.map(3, 1).unwrap();
    let mut packet = RtpPacket::new_checked(&mut bytes[..]).unwrap();
    packet.remap_extensions(&map);
    let reparsed = RtpPacket::new_checked(&bytes[..]).unwrap();
    let extensions: Vec<_> = reparsed.extensions().collect();
    assert_eq!(extensions, [(7, &[0x3c, 0x1e, 0x5a][..]), (1, &[0x01, 0x2c][..])]);
    assert_eq!(reparsed.payload(), &CHROMIUM_VP8[32..], "the payload does not move");
    assert_eq!(reparsed.header_len(), 32);
}

#[test]
fn remap_identity_changes_nothing() {
    let mut bytes = CHROMIUM_VP8;
    RtpPacket::new_checked(&mut bytes[..]).unwrap().remap_extensions(&ExtensionIdMap::identity());
    assert_eq!(bytes, CHROMIUM_VP8);
}

#[test]
fn remap_two_byte_form_keeps_its_form_and_blanks_high_ids() {
    // Two-byte profile, 3 words: id 5 len 2, id 200 len 3, id 9 len 0, padding.
    let mut bytes = packet(0x90, &[0x10, 0x00, 0x00, 0x03, 5, 2, 0xaa, 0xbb, 200, 3, 1, 2, 3, 9, 0, 0]);
    bytes.extend_from_slice(b"payload");
    let mut map = ExtensionIdMap::blank_all();
    map.map(5, 12).unwrap();
    map.map(9, 3).unwrap();
    RtpPacket::new_checked(&mut bytes[..]).unwrap().remap_extensions(&map);
    let reparsed = RtpPacket::new_checked(&bytes[..]).unwrap();
    let extensions: Vec<_> = reparsed.extensions().collect();
    assert_eq!(extensions, [(12, &[0xaa, 0xbb][..]), (3, &[][..])]);
    assert_eq!(reparsed.payload(), b"payload");
}

#[test]
fn extension_map_refuses_ids_outside_one_byte_range() {
    let mut map = ExtensionIdMap::blank_all();
    assert_eq!(map.map(0, 1), Err(WireError::Unrepresentable));
    assert_eq!(map.map(1, 15), Err(WireError::Unrepresentable));
    assert!(map.map(14, 14).is_ok());
}

#[test]
fn transport_sequence_number_reads_and_rewrites_in_place() {
    let mut packet = chromium_vp8();
    assert_eq!(packet.transport_sequence_number(3), Some(300));
    assert!(packet.set_transport_sequence_number(3, 0xbeef));
    assert_eq!(packet.transport_sequence_number(3), Some(0xbeef));
    assert_eq!(packet.extension(3), Some(&[0xbe, 0xef][..]));
    // Element 2 is abs-send-time, 3 bytes: not a transport-wide sequence number.
    assert_eq!(packet.transport_sequence_number(2), None);
    assert!(!packet.set_transport_sequence_number(2, 1));
    assert!(!packet.set_transport_sequence_number(9, 1), "absent");
}

/// Copies `source` with `map` and `added` into a dirty buffer, and parses the copy.
fn copy(source: &[u8], map: &ExtensionIdMap, added: Option<(u8, &[u8])>) -> Vec<u8> {
    let packet = RtpPacket::new_checked(source).unwrap();
    let mut dst = vec![0xff; source.len() + 64];
    let len = packet.copy_renumbered(&mut dst, map, added).unwrap();
    dst.truncate(len);
    RtpPacket::new_checked(&dst[..]).expect("a copy parses");
    dst
}

/// A map that keeps only the `(from, to)` pairs given.
fn keeping(pairs: &[(u8, u8)]) -> ExtensionIdMap {
    let mut map = ExtensionIdMap::blank_all();
    for &(from, to) in pairs {
        map.map(from, to).unwrap();
    }
    map
}

#[test]
fn copy_adds_a_block_to_a_packet_without_one() {
    let source = packet(0x80, b"payload");
    let copied = copy(&source, &ExtensionIdMap::identity(), Some((3, &[0x12, 0x34])));
    assert_eq!(copied.len(), source.len() + 4 + 4);
    assert_eq!(copied[0], 0x90, "X bit set");
    assert_eq!(copied[1..12], source[1..12]);
    assert_eq!(copied[12..20], [0xbe, 0xde, 0x00, 0x01, 0x31, 0x12, 0x34, 0x00]);
    assert_eq!(copied[20..], *b"payload");
    let packet = RtpPacket::new_checked(&copied[..]).unwrap();
    assert_eq!(packet.transport_sequence_number(3), Some(0x1234));
}

#[test]
fn copy_drops_blanked_elements_and_appends_the_added_one() {
    let copied = copy(&CHROMIUM_VP8, &keeping(&[(2, 7), (3, 1)]), Some((5, &[0xab, 0xcd])));
    #[rustfmt::skip]
    let block = [
        0xbe, 0xde, 0x00, 0x03,
        0x72, 0x3c, 0x1e, 0x5a, // 2 as 7
        0x11, 0x01, 0x2c, // 3 as 1
        0x51, 0xab, 0xcd, // added
        0x00, 0x00,
    ];
    assert_eq!(copied[..12], CHROMIUM_VP8[..12]);
    assert_eq!(copied[12..28], block);
    assert_eq!(copied[28..], CHROMIUM_VP8[32..], "the payload follows the shorter block");
}

#[test]
fn copy_added_element_replaces_a_kept_one_of_its_id() {
    let copied = copy(&CHROMIUM_VP8, &ExtensionIdMap::identity(), Some((3, &[0xbe, 0xef])));
    let packet = RtpPacket::new_checked(&copied[..]).unwrap();
    assert_eq!(
        packet.extensions().collect::<Vec<_>>(),
        [(1, &[0, 0, 0][..]), (2, &[0x3c, 0x1e, 0x5a][..]), (4, &b"0"[..]), (3, &[0xbe, 0xef][..])]
    );
    assert_eq!(packet.payload(), &CHROMIUM_VP8[32..]);

    // Also when the displaced element came in under another id.
    let mut map = ExtensionIdMap::identity();
    map.map(1, 9).unwrap();
    let copied = copy(&CHROMIUM_VP8, &map, Some((9, &[7, 7])));
    let packet = RtpPacket::new_checked(&copied[..]).unwrap();
    let ids: Vec<u8> = packet.extensions().map(|(id, _)| id).collect();
    assert_eq!(ids, [2, 3, 4, 9]);
    assert_eq!(packet.extension(9), Some(&[7, 7][..]));
}

#[test]
fn copy_without_elements_left_has_no_block() {
    let copied = copy(&CHROMIUM_VP8, &ExtensionIdMap::blank_all(), None);
    assert_eq!(copied.len(), CHROMIUM_VP8.len() - 20, "the header shrinks to the fixed 12 bytes");
    assert_eq!(copied[0], CHROMIUM_VP8[0] & !0x10, "X bit cleared");
    assert_eq!(copied[1..12], CHROMIUM_VP8[1..12]);
    assert_eq!(copied[12..], CHROMIUM_VP8[32..]);
    // A block of an unknown profile has no elements to keep.
    let unknown = packet(0x90, &[0xab, 0xcd, 0x00, 0x01, 0x12, 0x34, 0x56, 0x78, 0x99]);
    assert_eq!(copy(&unknown, &ExtensionIdMap::identity(), None), packet(0x80, &[0x99]));
    // So has an empty RFC 8285 block.
    let empty = packet(0x90, &[0xbe, 0xde, 0x00, 0x00, 0x99]);
    assert_eq!(copy(&empty, &ExtensionIdMap::identity(), None), packet(0x80, &[0x99]));
}

#[test]
fn copy_of_two_byte_form_keeps_it_while_a_value_needs_it() {
    // Two-byte profile with application bits, 4 words: id 5 len 2, padding, id 200 len 3,
    // id 9 len 0, padding.
    #[rustfmt::skip]
    let block = [
        0x10, 0x0a, 0x00, 0x04,
        5, 2, 0xaa, 0xbb, 0, 200, 3, 1, 2, 3, 9, 0, 0, 0, 0, 0,
    ];
    let mut source = packet(0x90, &block);
    source.extend_from_slice(b"payload");
    let copied = copy(&source, &keeping(&[(5, 12), (9, 3)]), Some((4, &[1, 2])));
    #[rustfmt::skip]
    let expected = [
        0x10, 0x0a, 0x00, 0x03,
        12, 2, 0xaa, 0xbb, // 5 as 12
        3, 0, // 9 as 3, still empty
        4, 2, 1, 2, // added
        0, 0,
    ];
    assert_eq!(copied[12..28], expected);
    assert_eq!(copied[28..], *b"payload");

    // Without the empty value every element fits the one-byte form, which the copy takes.
    let copied = copy(&source, &keeping(&[(5, 12)]), Some((4, &[1, 2])));
    assert_eq!(copied[12..24], [0xbe, 0xde, 0x00, 0x02, 0xc1, 0xaa, 0xbb, 0x41, 1, 2, 0, 0]);
    assert_eq!(copied[24..], *b"payload");
}

#[test]
fn copy_added_value_of_zero_length_or_a_high_id_takes_the_two_byte_form() {
    for added in [(7, &[][..]), (200, &[1, 2][..]), (7, &[0x5a; 17][..])] {
        let copied = copy(&CHROMIUM_VP8, &ExtensionIdMap::identity(), Some(added));
        let packet = RtpPacket::new_checked(&copied[..]).unwrap();
        assert_eq!(packet.extension_profile(), Some(TWO_BYTE_EXTENSION_PROFILE));
        let source = chromium_vp8();
        let expected: Vec<_> = source.extensions().chain([added]).collect();
        assert_eq!(packet.extensions().collect::<Vec<_>>(), expected);
        assert_eq!(packet.header_len() % 4, 0);
        assert_eq!(packet.payload(), &CHROMIUM_VP8[32..]);
    }
    // An empty value in the two-byte form: id, length 0, zero padding.
    let copied = copy(&packet(0x80, b"x"), &ExtensionIdMap::identity(), Some((7, &[])));
    assert_eq!(copied[12..20], [0x10, 0x00, 0x00, 0x01, 7, 0, 0, 0]);
}

#[test]
fn copy_refuses_an_added_element_no_form_can_carry() {
    let packet = chromium_vp8();
    let mut dst = [0; 512];
    let identity = ExtensionIdMap::identity();
    assert_eq!(packet.copy_renumbered(&mut dst, &identity, Some((0, &[1, 2]))), Err(WireError::Unrepresentable));
    let long = [0; 256];
    assert_eq!(packet.copy_renumbered(&mut dst, &identity, Some((3, &long))), Err(WireError::Unrepresentable));
    assert!(packet.copy_renumbered(&mut dst, &identity, Some((255, &long[..255]))).is_ok());
}

#[test]
fn copy_keeps_padding_bit_and_bytes() {
    let source = packet(0xa0, &[0xaa, 0xbb, 0x11, 0x22, 0x03]);
    let copied = copy(&source, &ExtensionIdMap::identity(), Some((1, &[0, 9])));
    assert_eq!(copied[0], 0xb0, "P bit kept, X bit set");
    assert_eq!(copied[copied.len() - 5..], source[12..], "payload then padding, byte for byte");
    let packet = RtpPacket::new_checked(&copied[..]).unwrap();
    assert_eq!(packet.padding_len(), 3);
    assert_eq!(packet.payload(), [0xaa, 0xbb]);
}

#[test]
fn copy_keeps_csrcs() {
    let csrcs = [0x1111_1111, 0xffff_fffe];
    let extensions: [(u8, &[u8]); 2] = [(1, &[0xaa]), (2, &[1, 2, 3, 4])];
    let mut source = [0; 64];
    let header_len =
        RtpHeader::new(96, 1, 2, 3).marker(true).csrcs(&csrcs).extensions(&extensions).write(&mut source).unwrap();
    source[header_len..header_len + 4].copy_from_slice(b"data");
    let source = &source[..header_len + 4];
    let copied = copy(source, &keeping(&[(2, 2)]), Some((5, &[0, 1])));
    assert_eq!(copied[..20], source[..20], "fixed header and CSRCs");
    let packet = RtpPacket::new_checked(&copied[..]).unwrap();
    assert_eq!(packet.csrcs().collect::<Vec<_>>(), csrcs);
    assert!(packet.marker());
    assert_eq!(packet.extensions().collect::<Vec<_>>(), [(2, &[1, 2, 3, 4][..]), (5, &[0, 1][..])]);
    assert_eq!(packet.payload(), b"data");
}

#[test]
fn copy_needs_room_for_the_whole_packet() {
    let packet = chromium_vp8();
    let added = Some((5, &[0xab, 0xcd][..]));
    let mut dst = [0; 64];
    let len = packet.copy_renumbered(&mut dst, &ExtensionIdMap::identity(), added).unwrap();
    assert_eq!(len, CHROMIUM_VP8.len(), "the 3 added bytes take the place of the block's padding");
    for short in 0..len {
        assert_eq!(
            packet.copy_renumbered(&mut dst[..short], &ExtensionIdMap::identity(), added),
            Err(WireError::BufferTooSmall),
            "{short} bytes"
        );
    }
}

/// A parseable packet of random fields, CSRCs, extension block (none, one-byte, two-byte or
/// unknown profile; ids repeated, padding between elements), payload and padding.
fn random_packet(rng: &mut StdRng) -> Vec<u8> {
    let csrc_count = rng.random_range(0..=3u8);
    let padded = rng.random_bool(0.3);
    let mut bytes = vec![0x80 | csrc_count | if padded { 0x20 } else { 0 }];
    bytes.extend((0..11 + 4 * usize::from(csrc_count)).map(|_| rng.random::<u8>()));
    let form = rng.random_range(0..4);
    if form > 0 {
        bytes[0] |= 0x10;
        let block_start = bytes.len();
        let profile: u16 = match form {
            1 => ONE_BYTE_EXTENSION_PROFILE,
            2 => TWO_BYTE_EXTENSION_PROFILE | rng.random_range(0..16),
            _ => 0xabcd,
        };
        bytes.extend_from_slice(&profile.to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        for _ in 0..rng.random_range(0..6) {
            bytes.extend((0..rng.random_range(0..=2)).map(|_| 0));
            match form {
                1 => {
                    let len = rng.random_range(1..=16u8);
                    bytes.push(rng.random_range(1..=14) << 4 | (len - 1));
                    bytes.extend((0..len).map(|_| rng.random::<u8>()));
                }
                2 => {
                    let id = if rng.random_bool(0.8) { rng.random_range(1..=16) } else { rng.random_range(1..=255) };
                    let len = if rng.random_bool(0.8) { rng.random_range(1..=16) } else { rng.random_range(0..=40) };
                    bytes.extend_from_slice(&[id, len]);
                    bytes.extend((0..len).map(|_| rng.random::<u8>()));
                }
                _ => bytes.extend((0..rng.random_range(1..=8)).map(|_| rng.random::<u8>())),
            }
        }
        if form == 1 && rng.random_bool(0.1) {
            // Id 15 ends the elements; what follows is not read.
            bytes.extend((0..rng.random_range(1..=6)).map(|_| 0xf0 | rng.random::<u8>()));
        }
        let elements_len = bytes.len() - block_start - 4;
        bytes.resize(block_start + 4 + elements_len.next_multiple_of(4), 0);
        let words = u16::try_from(elements_len.div_ceil(4)).unwrap();
        bytes[block_start + 2..block_start + 4].copy_from_slice(&words.to_be_bytes());
    }
    bytes.extend((0..rng.random_range(0..30)).map(|_| rng.random::<u8>()));
    if padded {
        let count = rng.random_range(1..=8u8);
        bytes.extend((1..count).map(|_| rng.random::<u8>()));
        bytes.push(count);
    }
    bytes
}

#[test]
fn copy_equals_the_source_renumbered_for_random_packets() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut forms = [0; 3];
    for _ in 0..5_000 {
        let bytes = random_packet(&mut rng);
        let source = RtpPacket::new_checked(&bytes[..]).expect("generated packets parse");
        // The map, and a model of it: publisher id → subscriber id, 0 to drop.
        let mut model = [0u8; 15];
        let mut map = ExtensionIdMap::blank_all();
        for from in 1..=14 {
            if rng.random_bool(0.6) {
                model[usize::from(from)] = rng.random_range(1..=14);
                map.map(from, model[usize::from(from)]).unwrap();
            }
        }
        let value: Vec<u8> = (0..rng.random_range(0..=20)).map(|_| rng.random()).collect();
        let added = match rng.random_range(0..8) {
            0 => None,
            1 => Some((rng.random_range(1..=255), &value[..])),
            2 => Some((rng.random_range(1..=14), &value[..])),
            _ => Some((rng.random_range(1..=14), &value[..value.len().min(2)])),
        };

        let mut dst = vec![0xff; bytes.len() + 128];
        let len = source.copy_renumbered(&mut dst, &map, added).expect("ids 1..=255, values of 20 bytes at most");
        let copy = RtpPacket::new_checked(&dst[..len]).expect("a copy parses");

        let added_id = added.map(|(id, _)| id);
        let expected: Vec<(u8, &[u8])> = source
            .extensions()
            .filter_map(|(id, value)| model.get(usize::from(id)).map(|&to| (to, value)))
            .filter(|&(to, _)| to != 0 && Some(to) != added_id)
            .chain(added)
            .collect();
        assert_eq!(copy.extensions().collect::<Vec<_>>(), expected, "{bytes:02x?}");
        let one_byte = expected.iter().all(|&(id, value)| (1..=14).contains(&id) && (1..=16).contains(&value.len()));
        let profile = copy.extension_profile();
        match profile {
            None => assert!(expected.is_empty()),
            Some(ONE_BYTE_EXTENSION_PROFILE) => assert!(one_byte),
            Some(profile) => {
                assert!(!one_byte);
                assert_eq!(profile & 0xfff0, TWO_BYTE_EXTENSION_PROFILE);
                forms[2] += 1;
            }
        }
        forms[0] += usize::from(profile.is_none());
        forms[1] += usize::from(profile == Some(ONE_BYTE_EXTENSION_PROFILE));

        assert_eq!(dst[0] & !0x10, bytes[0] & !0x10, "version, P bit and CSRC count");
        assert_eq!(copy.marker(), source.marker());
        assert_eq!(copy.payload_type(), source.payload_type());
        assert_eq!(copy.sequence_number(), source.sequence_number());
        assert_eq!(copy.timestamp(), source.timestamp());
        assert_eq!(copy.ssrc(), source.ssrc());
        assert!(copy.csrcs().eq(source.csrcs()));
        assert_eq!(copy.payload(), source.payload());
        assert_eq!(copy.padding_len(), source.padding_len());
        assert_eq!(dst[copy.header_len()..len], bytes[source.header_len()..], "payload and padding bytes");
        assert_eq!(copy.header_len() % 4, 0);

        // The documented size bound.
        match added {
            None => assert!(len <= bytes.len()),
            Some((id, value)) if ExtensionForm::fits_one_byte(id, value.len()) => {
                assert!(len <= bytes.len() + 4 + (1 + value.len()).next_multiple_of(4))
            }
            Some(_) => {}
        }
        assert_eq!(source.copy_renumbered(&mut dst[..len - 1], &map, added), Err(WireError::BufferTooSmall));
    }
    assert!(forms.iter().all(|&count| count > 200), "no block, one-byte, two-byte: {forms:?}");
}
