use super::*;
use crate::wire::test_vectors::{CHROMIUM_RR_REMB, NACK_WITH_BLP, SR_SDES_BYE};

fn packets(bytes: &[u8]) -> Vec<RtcpPacket<'_>> {
    // Collected here (tests only) to index and count them.
    RtcpCompound::new_checked(bytes).map(|compound| compound.packets().collect()).unwrap_or_default()
}

fn only_packet(bytes: &[u8]) -> RtcpPacket<'_> {
    let packets = packets(bytes);
    assert_eq!(packets.len(), 1, "{packets:?}");
    packets[0]
}

fn check_err(bytes: &[u8]) -> WireError {
    RtcpCompound::new_checked(bytes).unwrap_err()
}

const CHROMIUM_BLOCK: ReportBlock = ReportBlock {
    ssrc: 0x3ab4_c0de,
    fraction_lost: 5,
    cumulative_lost: 7,
    extended_highest_sequence: 0x0001_1234,
    jitter: 16,
    last_sender_report: 0x1234_5678,
    delay_since_last_sender_report: 0x8000,
};

#[test]
fn chromium_receiver_report_and_remb() {
    let packets = packets(&CHROMIUM_RR_REMB);
    assert_eq!(packets.len(), 2);
    let RtcpPacket::ReceiverReport(report) = packets[0] else { panic!("{:?}", packets[0]) };
    assert_eq!(report.ssrc(), 1);
    assert_eq!(report.report_blocks().collect::<Vec<_>>(), [CHROMIUM_BLOCK]);
    let RtcpPacket::Remb(remb) = packets[1] else { panic!("{:?}", packets[1]) };
    assert_eq!(remb.sender_ssrc(), 1);
    assert_eq!(remb.bitrate(), 1_500_000);
    assert_eq!(remb.ssrcs().collect::<Vec<_>>(), [0x3ab4_c0de]);
}

#[test]
fn nack_items_and_lost_sequence_numbers() {
    let RtcpPacket::Nack(nack) = only_packet(&NACK_WITH_BLP) else { panic!() };
    assert_eq!(nack.sender_ssrc(), 1);
    assert_eq!(nack.media_ssrc(), 0x3ab4_c0de);
    assert_eq!(nack.pairs().collect::<Vec<_>>(), [(0x1234, 0x8005)]);
    assert_eq!(nack.lost_sequence_numbers().collect::<Vec<_>>(), [0x1234, 0x1235, 0x1237, 0x1244]);
}

#[test]
fn lost_sequence_numbers_wrap_and_span_items() {
    let mut buf = [0; 64];
    let len = write_nack(&mut buf, 1, 2, &[65534, 65535, 0, 15, 40]).unwrap();
    let RtcpPacket::Nack(nack) = only_packet(&buf[..len]) else { panic!() };
    // 65534 covers up to 14 (16 after it), so 15 opens a second item and 40 a third.
    assert_eq!(nack.pairs().collect::<Vec<_>>(), [(65534, 0b11), (15, 0), (40, 0)]);
    assert_eq!(nack.lost_sequence_numbers().collect::<Vec<_>>(), [65534, 65535, 0, 15, 40]);
}

#[test]
fn sender_report_sdes_and_bye() {
    let packets = packets(&SR_SDES_BYE);
    assert_eq!(packets.len(), 3);
    let RtcpPacket::SenderReport(report) = packets[0] else { panic!() };
    assert_eq!(
        report.info(),
        SenderInfo {
            ssrc: 0x3ab4_c0de,
            ntp_timestamp: 0xe8a1_b2c3_d4e5_f607,
            rtp_timestamp: 0x5678_9abc,
            packet_count: 1000,
            octet_count: 1_000_000,
        }
    );
    let blocks: Vec<_> = report.report_blocks().collect();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].ssrc, 0x1122_3344);
    assert_eq!(blocks[0].cumulative_lost, -1);
    assert_eq!(blocks[0].extended_highest_sequence, 0xffff);
    let RtcpPacket::Sdes(sdes) = packets[1] else { panic!() };
    assert_eq!(sdes.chunk_count(), 1);
    let RtcpPacket::Bye(bye) = packets[2] else { panic!() };
    assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [0x3ab4_c0de]);
    assert_eq!(bye.reason(), Some(&b"bye no"[..]));
}

#[test]
fn unparsed_types_are_kept_as_other() {
    // TMMBR (RFC 5104 §4.2.1), a transport-layer format this module does not parse.
    let tmmbr = [0x83, 0xcd, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0x04, 0x00, 0x40, 0x28];
    let RtcpPacket::Other(other) = only_packet(&tmmbr) else { panic!() };
    assert_eq!((other.packet_type(), other.format()), (packet_type::TRANSPORT_FEEDBACK, 3));
    assert_eq!(other.body(), &tmmbr[4..]);

    let app = [0x80, 0xcc, 0x00, 0x02, 0, 0, 0, 1, b'n', b'a', b'm', b'e'];
    let RtcpPacket::Other(other) = only_packet(&app) else { panic!() };
    assert_eq!((other.packet_type(), other.format()), (packet_type::APP, 0));

    // Application-layer feedback that is not REMB.
    let afb = [0x8f, 0xce, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 0, b'X', b'Y', b'Z', b'W'];
    let RtcpPacket::Other(other) = only_packet(&afb) else { panic!() };
    assert_eq!((other.packet_type(), other.format()), (packet_type::PAYLOAD_FEEDBACK, 15));
}

#[test]
fn padding_on_the_last_packet_is_removed() {
    let mut bytes = NACK_WITH_BLP.to_vec();
    bytes[0] |= 0x20;
    bytes[3] = 4;
    bytes.extend_from_slice(&[0, 0, 0, 4]);
    let RtcpPacket::Nack(nack) = only_packet(&bytes) else { panic!() };
    assert_eq!(nack.pairs().len(), 1);

    // The same padding on the first packet of a compound is refused.
    let mut compound = bytes.clone();
    compound.extend_from_slice(&NACK_WITH_BLP);
    assert_eq!(check_err(&compound), WireError::BadPadding);
}

#[test]
fn bad_padding_counts_are_refused() {
    let padded = |count: u8| {
        let mut bytes = NACK_WITH_BLP.to_vec();
        bytes[0] |= 0x20;
        bytes[15] = count;
        bytes
    };
    assert_eq!(check_err(&padded(0)), WireError::BadPadding);
    assert_eq!(check_err(&padded(13)), WireError::BadPadding);
    // Padding that eats into the NACK item leaves a malformed FCI.
    assert_eq!(check_err(&padded(2)), WireError::BadLength);
}

#[test]
fn header_errors() {
    assert_eq!(check_err(&[]), WireError::Truncated);
    assert_eq!(check_err(&[0x81, 0xc9, 0x00]), WireError::Truncated);
    let mut version_1 = NACK_WITH_BLP;
    version_1[0] = 0x41;
    assert_eq!(check_err(&version_1), WireError::BadVersion);
    let mut too_long = NACK_WITH_BLP;
    too_long[3] = 4;
    assert_eq!(check_err(&too_long), WireError::Truncated);
    // A valid packet followed by a partial header.
    let mut trailing = NACK_WITH_BLP.to_vec();
    trailing.extend_from_slice(&[0x80, 0xc9]);
    assert_eq!(check_err(&trailing), WireError::Truncated);
}

#[test]
fn bodies_that_disagree_with_their_counts_are_refused() {
    // RR claiming two blocks with room for one.
    let mut two_blocks = CHROMIUM_RR_REMB[..32].to_vec();
    two_blocks[0] = 0x82;
    assert_eq!(check_err(&two_blocks), WireError::BadLength);
    // SR too short for its sender info.
    assert_eq!(check_err(&[0x80, 0xc8, 0x00, 0x01, 0, 0, 0, 1]), WireError::BadLength);
    // NACK, PLI and FIR without the two SSRCs; NACK and FIR without an item.
    assert_eq!(check_err(&[0x81, 0xcd, 0x00, 0x01, 0, 0, 0, 1]), WireError::BadLength);
    assert_eq!(check_err(&[0x81, 0xce, 0x00, 0x01, 0, 0, 0, 1]), WireError::BadLength);
    assert_eq!(check_err(&[0x81, 0xcd, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 2]), WireError::BadLength);
    assert_eq!(check_err(&[0x84, 0xce, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 0]), WireError::BadLength);
    // FIR with half an entry.
    assert_eq!(check_err(&[0x84, 0xce, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9]), WireError::BadLength);
    // REMB whose SSRC count says 2 with one listed.
    let mut remb = CHROMIUM_RR_REMB[32..].to_vec();
    remb[16] = 2;
    assert_eq!(check_err(&remb), WireError::BadLength);
    // SDES whose CNAME runs past the packet.
    let mut sdes = SR_SDES_BYE[52..80].to_vec();
    sdes[9] = 0x40;
    assert_eq!(check_err(&sdes), WireError::BadLength);
    // SDES whose item fills the chunk, leaving no room for the end item.
    let mut no_end = SR_SDES_BYE[52..80].to_vec();
    no_end.truncate(24);
    no_end[3] = 5;
    no_end[9] = 14;
    assert_eq!(check_err(&no_end), WireError::BadLength);
    // SDES whose null octets up to the word are eaten by the packet's padding.
    let padded_sdes = [0xa1, 0xca, 0x00, 0x03, 0, 0, 0, 1, 0x01, 0x02, b'x', b'y', 0x00, 0x00, 0x00, 0x02];
    assert_eq!(check_err(&padded_sdes), WireError::BadLength);
    let mut unpadded_sdes = padded_sdes;
    unpadded_sdes[0] = 0x81;
    unpadded_sdes[15] = 0;
    assert!(matches!(only_packet(&unpadded_sdes), RtcpPacket::Sdes(_)));
    // BYE whose reason runs past the packet.
    let mut bye = SR_SDES_BYE[80..].to_vec();
    bye[8] = 9;
    assert_eq!(check_err(&bye), WireError::BadLength);
    // BYE listing more sources than it holds.
    let mut sources = SR_SDES_BYE[80..].to_vec();
    sources[0] = 0x84;
    assert_eq!(check_err(&sources), WireError::BadLength);
}

#[test]
fn truncated_compounds_are_refused_except_at_packet_boundaries() {
    for vector in [&CHROMIUM_RR_REMB[..], &NACK_WITH_BLP[..], &SR_SDES_BYE[..]] {
        let mut boundaries = vec![0];
        let mut at = 0;
        while at < vector.len() {
            at += (usize::from(u16::from_be_bytes([vector[at + 2], vector[at + 3]])) + 1) * 4;
            boundaries.push(at);
        }
        for len in 0..vector.len() {
            let result = RtcpCompound::new_checked(&vector[..len]);
            // A prefix ending on a packet boundary is itself a valid (shorter) compound.
            if len > 0 && boundaries.contains(&len) {
                let count = boundaries.iter().position(|&boundary| boundary == len).unwrap();
                assert_eq!(result.unwrap().packets().count(), count);
            } else {
                assert!(result.is_err(), "prefix of {len} bytes");
            }
        }
    }
}

#[test]
fn receiver_report_writer_matches_chromium() {
    let mut buf = [0xff; 64];
    let len = write_receiver_report(&mut buf, 1, &[CHROMIUM_BLOCK]).unwrap();
    assert_eq!(buf[..len], CHROMIUM_RR_REMB[..32]);
}

#[test]
fn remb_writer_matches_chromium() {
    let mut buf = [0xff; 64];
    let len = write_remb(&mut buf, 1, 1_500_000, &[0x3ab4_c0de]).unwrap();
    assert_eq!(buf[..len], CHROMIUM_RR_REMB[32..]);
}

#[test]
fn nack_writer_packs_blp_bits() {
    let mut buf = [0xff; 64];
    let len = write_nack(&mut buf, 1, 0x3ab4_c0de, &[0x1234, 0x1235, 0x1237, 0x1244]).unwrap();
    assert_eq!(buf[..len], NACK_WITH_BLP);
}

#[test]
fn sender_report_round_trip() {
    let info = SenderInfo {
        ssrc: 0xdead_beef,
        ntp_timestamp: 0x0123_4567_89ab_cdef,
        rtp_timestamp: 90_000,
        packet_count: u32::MAX,
        octet_count: 12_345,
    };
    let blocks: Vec<ReportBlock> = (0..MAX_REPORT_BLOCKS as u32)
        .map(|n| ReportBlock { ssrc: n, cumulative_lost: -(n as i32), jitter: n * 3, ..CHROMIUM_BLOCK })
        .collect();
    for count in [0, 1, MAX_REPORT_BLOCKS] {
        let mut buf = [0xff; 1024];
        let len = write_sender_report(&mut buf, &info, &blocks[..count]).unwrap();
        assert_eq!(len, 28 + 24 * count);
        let RtcpPacket::SenderReport(report) = only_packet(&buf[..len]) else { panic!() };
        assert_eq!(report.info(), info);
        assert_eq!(report.report_blocks().collect::<Vec<_>>(), blocks[..count]);
    }
}

#[test]
fn receiver_report_round_trip() {
    let blocks = [
        CHROMIUM_BLOCK,
        ReportBlock { ssrc: 9, fraction_lost: 255, cumulative_lost: -0x80_0000, ..ReportBlock::default() },
        ReportBlock { ssrc: 10, cumulative_lost: 0x7f_ffff, ..ReportBlock::default() },
    ];
    let mut buf = [0; 128];
    let len = write_receiver_report(&mut buf, 77, &blocks).unwrap();
    let RtcpPacket::ReceiverReport(report) = only_packet(&buf[..len]) else { panic!() };
    assert_eq!(report.ssrc(), 77);
    assert_eq!(report.report_blocks().collect::<Vec<_>>(), blocks);
    assert_eq!(report.report_blocks().len(), 3);
}

#[test]
fn cumulative_loss_is_clamped_to_24_bits() {
    let blocks = [
        ReportBlock { cumulative_lost: 10_000_000, ..ReportBlock::default() },
        ReportBlock { cumulative_lost: -10_000_000, ..ReportBlock::default() },
    ];
    let mut buf = [0; 64];
    let len = write_receiver_report(&mut buf, 1, &blocks).unwrap();
    let RtcpPacket::ReceiverReport(report) = only_packet(&buf[..len]) else { panic!() };
    let lost: Vec<i32> = report.report_blocks().map(|block| block.cumulative_lost).collect();
    assert_eq!(lost, [0x7f_ffff, -0x80_0000]);
}

#[test]
fn pli_round_trip() {
    let mut buf = [0; 12];
    assert_eq!(write_pli(&mut buf, 1, 0x3ab4_c0de), Ok(12));
    assert_eq!(buf[..4], [0x81, 0xce, 0x00, 0x02]);
    let RtcpPacket::Pli(pli) = only_packet(&buf) else { panic!() };
    assert_eq!((pli.sender_ssrc(), pli.media_ssrc()), (1, 0x3ab4_c0de));
}

#[test]
fn fir_round_trip() {
    let entries = [FirEntry { ssrc: 0x3ab4_c0de, sequence_number: 7 }, FirEntry { ssrc: 5, sequence_number: 255 }];
    let mut buf = [0xff; 64];
    let len = write_fir(&mut buf, 1, &entries).unwrap();
    assert_eq!(len, 28);
    assert_eq!(buf[8..12], [0; 4], "media SSRC is zero");
    assert_eq!(buf[17..20], [0; 3], "reserved bytes are zero");
    let RtcpPacket::Fir(fir) = only_packet(&buf[..len]) else { panic!() };
    assert_eq!(fir.sender_ssrc(), 1);
    assert_eq!(fir.entries().collect::<Vec<_>>(), entries);
}

#[test]
fn nack_round_trip_of_random_loss_patterns() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut buf = vec![0; 4096];
    for _ in 0..500 {
        let start: u16 = rng.random();
        let mut lost: Vec<u16> = (0..rng.random_range(1..200u16))
            .filter(|_| rng.random_bool(0.3))
            .map(|offset| start.wrapping_add(offset))
            .collect();
        if lost.is_empty() {
            lost.push(start);
        }
        let len = write_nack(&mut buf, 1, 2, &lost).unwrap();
        let RtcpPacket::Nack(nack) = only_packet(&buf[..len]) else { panic!() };
        assert_eq!(nack.lost_sequence_numbers().collect::<Vec<_>>(), lost);
    }
}

#[test]
fn nack_of_unsorted_or_repeated_numbers_still_names_every_one() {
    let mut buf = [0; 64];
    let len = write_nack(&mut buf, 1, 2, &[10, 3, 10, 4, 3]).unwrap();
    let RtcpPacket::Nack(nack) = only_packet(&buf[..len]) else { panic!() };
    let mut lost: Vec<u16> = nack.lost_sequence_numbers().collect();
    lost.sort_unstable();
    lost.dedup();
    assert_eq!(lost, [3, 4, 10]);
}

#[test]
fn remb_bitrates_round_trip_within_mantissa_precision() {
    let mut buf = [0; 64];
    for bitrate in [0, 1, 262_143, 262_144, 1_500_000, 30_000_000, 1 << 40, u64::MAX] {
        let len = write_remb(&mut buf, 1, bitrate, &[]).unwrap();
        let RtcpPacket::Remb(remb) = only_packet(&buf[..len]) else { panic!() };
        let read = remb.bitrate();
        assert!(read <= bitrate && bitrate - read <= bitrate >> 17, "{bitrate} read back as {read}");
        assert_eq!(remb.ssrcs().len(), 0);
    }
}

#[test]
fn remb_exponents_past_64_bits_saturate() {
    let mut remb = CHROMIUM_RR_REMB[32..].to_vec();
    remb[17] = 0xfc; // exponent 63, mantissa bits kept
    let RtcpPacket::Remb(remb) = only_packet(&remb) else { panic!() };
    assert_eq!(remb.bitrate(), u64::MAX);
}

#[test]
fn writers_refuse_what_the_format_cannot_carry() {
    let mut buf = [0; 4096];
    assert_eq!(write_receiver_report(&mut buf, 1, &[CHROMIUM_BLOCK; 32]), Err(WireError::Unrepresentable));
    let info = SenderInfo::default();
    assert_eq!(write_sender_report(&mut buf, &info, &[CHROMIUM_BLOCK; 32]), Err(WireError::Unrepresentable));
    assert_eq!(write_nack(&mut buf, 1, 2, &[]), Err(WireError::Unrepresentable));
    assert_eq!(write_fir(&mut buf, 1, &[]), Err(WireError::Unrepresentable));
    assert_eq!(write_remb(&mut buf, 1, 1, &[0; 256]), Err(WireError::Unrepresentable));
}

/// A writer with its arguments bound, so that one loop can try every writer.
type Writer = dyn Fn(&mut [u8]) -> Result<usize, WireError>;

#[test]
fn writers_need_room_for_the_whole_packet() {
    let writers: [&Writer; 6] = [
        &|buf| write_pli(buf, 1, 2),
        &|buf| write_fir(buf, 1, &[FirEntry { ssrc: 1, sequence_number: 1 }]),
        &|buf| write_nack(buf, 1, 2, &[1, 2, 30]),
        &|buf| write_remb(buf, 1, 1_000_000, &[3, 4]),
        &|buf| write_receiver_report(buf, 1, &[CHROMIUM_BLOCK]),
        &|buf| write_sender_report(buf, &SenderInfo::default(), &[CHROMIUM_BLOCK]),
    ];
    for write in writers {
        let mut buf = [0; 256];
        let len = write(&mut buf).unwrap();
        for short in 0..len {
            assert_eq!(write(&mut buf[..short]), Err(WireError::BufferTooSmall), "{short} of {len} bytes");
        }
    }
}

#[test]
fn written_packets_chain_into_one_compound() {
    let mut buf = [0; 256];
    let mut len = write_receiver_report(&mut buf, 1, &[CHROMIUM_BLOCK]).unwrap();
    len += write_remb(&mut buf[len..], 1, 1_500_000, &[0x3ab4_c0de]).unwrap();
    assert_eq!(buf[..len], CHROMIUM_RR_REMB);
    len += write_pli(&mut buf[len..], 1, 0x3ab4_c0de).unwrap();
    let packets = packets(&buf[..len]);
    assert_eq!(packets.len(), 3);
    assert!(matches!(packets[2], RtcpPacket::Pli(_)));
}

/// Transport-wide feedback built by hand from the draft's chunk examples (§3.1.3): a 1-bit
/// status vector (example 2), a run of 221 packets not received (example 1), and a run of
/// one packet with a large (negative) delta.
const TRANSPORT_CC_BY_HAND: [u8; 36] = [
    0x8f, 0xcd, 0x00, 0x08, // RTPFB, FMT=15, 9 words
    0x00, 0x00, 0x00, 0x01, // sender SSRC
    0x3a, 0xb4, 0xc0, 0xde, // media SSRC
    0xff, 0xfa, 0x00, 0xec, // base sequence number 65530, 236 packets
    0x00, 0x00, 0x10, 0x07, // reference time 16 (1.024 s), feedback packet count 7
    0x9f, 0x1c, // 1-bit vector: lost, 5 received, 3 lost, 3 received, 2 lost
    0x00, 0xdd, // run of 221 lost
    0x40, 0x01, // run of 1 received with a large delta
    0x04, 0x00, 0xff, 0x01, 0x02, // small deltas: 1 ms, 0, 63.75 ms, 0.25 ms, 0.5 ms
    0x03, 0x04, 0x05, // small deltas: 0.75 ms, 1 ms, 1.25 ms
    0xff, 0x38, // large delta: −200 ticks, −50 ms
];

fn transport_feedback(bytes: &[u8]) -> TransportFeedback<'_> {
    let RtcpPacket::TransportFeedback(feedback) = only_packet(bytes) else { panic!("not transport feedback") };
    feedback
}

fn feedback_packets(feedback: &TransportFeedback<'_>) -> Vec<(u16, Option<i64>)> {
    feedback.packets().collect()
}

#[test]
fn transport_feedback_by_hand() {
    let feedback = transport_feedback(&TRANSPORT_CC_BY_HAND);
    assert_eq!((feedback.sender_ssrc(), feedback.media_ssrc()), (1, 0x3ab4_c0de));
    assert_eq!(feedback.base_sequence_number(), 65530);
    assert_eq!(feedback.packet_status_count(), 236);
    assert_eq!(feedback.reference_time(), 16);
    assert_eq!(feedback.feedback_packet_count(), 7);
    let packets = feedback_packets(&feedback);
    assert_eq!(packets.len(), 236);
    let received: Vec<(u16, i64)> = packets.iter().filter_map(|&(seq, arrival)| Some((seq, arrival?))).collect();
    assert_eq!(
        received,
        [
            (65531, 1000),
            (65532, 1000),
            (65533, 64_750),
            (65534, 65_000),
            (65535, 65_500),
            (3, 66_250),
            (4, 67_250),
            (5, 68_500),
            (229, 18_500)
        ]
    );
    assert_eq!(packets[0], (65530, None));
    assert_eq!(packets[234], (228, None));
}

#[test]
fn transport_feedback_writes_back_the_hand_built_packet() {
    let feedback = transport_feedback(&TRANSPORT_CC_BY_HAND);
    let reference_us = i64::from(feedback.reference_time()) * REFERENCE_TICK_US;
    let arrivals: Vec<Option<i64>> =
        feedback.packets().map(|(_, arrival)| arrival.map(|us| reference_us + us)).collect();
    let mut buf = [0; 64];
    let written = write_transport_feedback(&mut buf, 1, 0x3ab4_c0de, 65530, 7, 16, &arrivals).unwrap();
    assert_eq!(written, TransportFeedbackWritten { len: 36, covered: 236 });
    assert_eq!(buf[..36], TRANSPORT_CC_BY_HAND);
}

/// Writes `arrivals` from base 100 with reference time `reference` and parses it back.
fn round_trip(
    buf: &mut [u8],
    reference: i32,
    arrivals: &[Option<i64>],
) -> (TransportFeedbackWritten, Vec<Option<i64>>) {
    let written = write_transport_feedback(buf, 1, 2, 100, 0, reference, arrivals).unwrap();
    let feedback = transport_feedback(&buf[..written.len]);
    let reference_us = i64::from(feedback.reference_time()) * REFERENCE_TICK_US;
    let mut expected_seq = 100u16;
    let parsed = feedback
        .packets()
        .map(|(seq, arrival)| {
            assert_eq!(seq, expected_seq);
            expected_seq = expected_seq.wrapping_add(1);
            arrival.map(|us| reference_us + us)
        })
        .collect();
    (written, parsed)
}

/// Arrival times as the writer quantises them: down to a delta tick.
fn quantised(arrivals: &[Option<i64>]) -> Vec<Option<i64>> {
    arrivals.iter().map(|a| a.map(|us| us.div_euclid(DELTA_TICK_US) * DELTA_TICK_US)).collect()
}

#[test]
fn transport_feedback_round_trips_every_chunk_form() {
    let base = 10 * REFERENCE_TICK_US;
    let mut arrivals = Vec::new();
    // A long run received at one instant (run-length chunk), a mix of small deltas and
    // losses (1-bit vectors), large and negative deltas (2-bit vectors), a long loss run.
    arrivals.extend((0..40).map(|_| Some(base + 1_000)));
    arrivals.extend((0..30).map(|i| (i % 3 != 0).then_some(base + 2_000 + i * 1_300)));
    arrivals.extend((0..9).map(|i| Some(base + 200_000 - i * 17_000)));
    arrivals.extend((0..500).map(|_| None));
    arrivals.push(Some(base + 300_123));
    let mut buf = [0; 1500];
    let (written, parsed) = round_trip(&mut buf, 10, &arrivals);
    assert_eq!(written.covered, arrivals.len());
    assert_eq!(parsed, quantised(&arrivals));
    assert_eq!(written.len % 4, 0);
}

#[test]
fn transport_feedback_pads_with_the_padding_bit() {
    let mut buf = [0; 64];
    let (written, parsed) = round_trip(&mut buf, 0, &[Some(1_000)]);
    // 20 bytes of header and fixed FCI, one chunk, one delta: 23, padded to 24.
    assert_eq!(written.len, 24);
    assert_eq!(buf[0] & 0x20, 0x20);
    assert_eq!(buf[23], 1);
    assert_eq!(parsed, [Some(1_000)]);
}

#[test]
fn transport_feedback_reference_time_is_signed_and_wraps() {
    let mut buf = [0; 64];
    let (_, parsed) = round_trip(&mut buf, -3, &[Some(-3 * REFERENCE_TICK_US + 500)]);
    assert_eq!(parsed, [Some(-3 * REFERENCE_TICK_US + 500)]);
    // 2^23 is past the signed 24-bit range: it goes on the wire modulo 2^24 and reads back
    // as −2^23, with the deltas unchanged.
    let written = write_transport_feedback(&mut buf, 1, 2, 0, 0, 1 << 23, &[Some((1 << 23) * REFERENCE_TICK_US)]);
    let feedback = transport_feedback(&buf[..written.unwrap().len]);
    assert_eq!(feedback.reference_time(), -(1 << 23));
    assert_eq!(feedback_packets(&feedback), [(0, Some(0))]);
}

#[test]
fn transport_feedback_splits_where_a_delta_does_not_fit() {
    let mut buf = [0; 64];
    // The third packet arrives 10 s after the second: more than 16 bits of 250 µs.
    let arrivals = [Some(0), Some(1_000), Some(10_001_000), Some(10_002_000)];
    let (written, parsed) = round_trip(&mut buf, 0, &arrivals);
    assert_eq!(written.covered, 2);
    assert_eq!(parsed, [Some(0), Some(1_000)]);
    assert_eq!(
        write_transport_feedback(&mut buf, 1, 2, 0, 0, 0, &[Some(9_000_000)]),
        Err(WireError::Unrepresentable),
        "the first delta counts from the reference time"
    );
    assert_eq!(write_transport_feedback(&mut buf, 1, 2, 0, 0, 0, &[]), Err(WireError::Unrepresentable));
}

#[test]
fn transport_feedback_splits_where_the_buffer_ends() {
    let arrivals: Vec<Option<i64>> = (0..1000).map(|i| Some(i * 3_000 + (i % 7) * 100_000)).collect();
    let mut buf = [0; 120];
    let mut done = 0;
    let mut packets = 0;
    while done < arrivals.len() {
        // Each packet starts a new reference time at its first arrival, as a receiver would.
        let reference = (arrivals[done].unwrap().div_euclid(REFERENCE_TICK_US)) as i32;
        let (written, parsed) = round_trip(&mut buf, reference, &arrivals[done..]);
        assert!(written.len <= buf.len());
        assert_eq!(parsed, quantised(&arrivals[done..done + written.covered]));
        done += written.covered;
        packets += 1;
    }
    assert!(packets > 10, "{packets}");
    assert_eq!(
        write_transport_feedback(&mut buf[..23], 1, 2, 0, 0, 0, &[Some(0)]),
        Err(WireError::BufferTooSmall),
        "one packet needs 24 bytes"
    );
}

#[test]
fn transport_feedback_counts_must_agree_with_the_length() {
    let mut bytes = TRANSPORT_CC_BY_HAND;
    // One more packet in the status count than the chunks cover.
    bytes[15] = 0xed;
    assert_eq!(check_err(&bytes), WireError::BadLength);
    // A status count of zero.
    let mut bytes = TRANSPORT_CC_BY_HAND;
    bytes[14..16].fill(0);
    assert_eq!(check_err(&bytes), WireError::BadLength);
    // One packet fewer: the last chunk and delta are left over.
    let mut bytes = TRANSPORT_CC_BY_HAND;
    bytes[15] = 0xeb;
    assert_eq!(check_err(&bytes), WireError::BadLength);
    // A reserved status symbol in a run.
    let mut bytes = TRANSPORT_CC_BY_HAND;
    bytes[22] = 0x60;
    assert_eq!(check_err(&bytes), WireError::ReservedValue);
    // Truncated deltas: the last word cut off.
    let mut bytes = TRANSPORT_CC_BY_HAND.to_vec();
    bytes.truncate(32);
    bytes[3] = 7;
    assert_eq!(check_err(&bytes), WireError::BadLength);
    // No FCI at all.
    assert_eq!(check_err(&[0x8f, 0xcd, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 2]), WireError::BadLength);
}

#[test]
fn transport_feedback_padded_without_the_padding_bit_is_accepted() {
    let mut buf = [0; 64];
    write_transport_feedback(&mut buf, 1, 2, 0, 0, 0, &[Some(1_000)]).unwrap();
    // The same packet with its padding bit cleared: the last byte (the pad count) is then
    // just alignment after the deltas.
    buf[0] &= !0x20;
    assert_eq!(feedback_packets(&transport_feedback(&buf[..24])), [(0, Some(1_000))]);
}
