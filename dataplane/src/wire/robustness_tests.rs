//! Bad input never panics: random bytes, and mutations of valid packets, go through every
//! parser; whatever a parser accepts has every accessor and iterator called on it, with
//! checks that each one stays inside the packet. The fuzz targets under `fuzz/` do the same
//! with coverage guidance.

use std::hint::black_box;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::rtcp::{RtcpCompound, RtcpPacket};
use super::rtp::{ExtensionIdMap, RtpPacket};
use super::stun::StunHeader;
use super::test_vectors::{
    CHROMIUM_RR_REMB, CHROMIUM_VP8, NACK_WITH_BLP, RFC5769_IPV4_RESPONSE, RFC5769_REQUEST, SR_SDES_BYE,
};
use super::{Datagram, classify};

const ITERATIONS: usize = 20_000;

/// Offset of `part` inside `whole`, asserting that it lies within it.
fn offset_within(whole: &[u8], part: &[u8]) -> usize {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    assert!(start + part.len() <= whole.len(), "slice outside the packet");
    start
}

/// Calls every accessor of an accepted RTP packet and every setter on a copy. Returns
/// whether the bytes were accepted.
fn exercise_rtp(bytes: &[u8]) -> bool {
    let Ok(packet) = RtpPacket::new_checked(bytes) else { return false };
    let header_len = packet.header_len();
    assert_eq!(header_len + packet.payload().len() + packet.padding_len(), bytes.len());
    assert_eq!(offset_within(bytes, packet.payload()), header_len);
    assert!(12 + 4 * packet.csrcs().len() <= header_len);
    assert_eq!(packet.csrcs().count(), packet.csrcs().len());
    black_box((packet.marker(), packet.sequence_number(), packet.timestamp(), packet.ssrc()));
    assert!(packet.payload_type() < 128);
    let elements_start = 12 + 4 * packet.csrcs().len() + 4;
    for (id, value) in packet.extensions() {
        assert_ne!(id, 0);
        let at = offset_within(bytes, value);
        assert!(at >= elements_start && at + value.len() <= header_len, "extension outside the header");
        assert!(packet.extension(id).is_some());
    }
    if packet.extensions().next().is_some() {
        assert!(packet.extension_profile().is_some());
    }

    let mut copy = bytes.to_vec();
    let mut writable = RtpPacket::new_checked(&mut copy[..]).unwrap();
    writable.set_sequence_number(!packet.sequence_number());
    writable.set_timestamp(!packet.timestamp());
    writable.set_ssrc(!packet.ssrc());
    writable.set_marker(!packet.marker());
    writable.set_payload_type(127 - packet.payload_type()).unwrap();
    for id in 0..=255 {
        if let Some(value) = writable.extension_mut(id) {
            value.fill(0xa5);
        }
    }
    let rewritten = RtpPacket::new_checked(&copy[..]).expect("setters keep a packet valid");
    assert_eq!(rewritten.header_len(), header_len);
    assert_eq!(rewritten.padding_len(), packet.padding_len());
    assert_eq!(rewritten.sequence_number(), !packet.sequence_number());
    assert_eq!(rewritten.timestamp(), !packet.timestamp());
    assert_eq!(rewritten.ssrc(), !packet.ssrc());
    assert_eq!(rewritten.marker(), !packet.marker());
    assert_eq!(rewritten.payload_type(), 127 - packet.payload_type());
    assert_eq!(rewritten.extensions().count(), packet.extensions().count());

    // A consumer's copy, with a transport-wide sequence number added, grows by 8 bytes at
    // most, parses, and carries the same payload.
    let mut sent = vec![0; bytes.len() + 8];
    let len = packet.copy_renumbered(&mut sent, &ExtensionIdMap::identity(), Some((5, &[0xbe, 0xef]))).unwrap();
    let copy = RtpPacket::new_checked(&sent[..len]).expect("a copy parses");
    assert_eq!(copy.payload(), packet.payload());
    assert_eq!(copy.padding_len(), packet.padding_len());
    assert_eq!(copy.transport_sequence_number(5), Some(0xbeef));
    true
}

/// Walks every packet of an accepted compound through all its accessors. Returns whether
/// the bytes were accepted.
fn exercise_rtcp(bytes: &[u8]) -> bool {
    let Ok(compound) = RtcpCompound::new_checked(bytes) else { return false };
    let mut packets = 0;
    for packet in compound.packets() {
        packets += 1;
        match packet {
            RtcpPacket::SenderReport(report) => {
                black_box(report.info());
                assert!(report.report_blocks().count() <= 31);
            }
            RtcpPacket::ReceiverReport(report) => {
                black_box(report.ssrc());
                assert!(report.report_blocks().count() <= 31);
            }
            RtcpPacket::Sdes(sdes) => assert!(sdes.chunk_count() < 32),
            RtcpPacket::Bye(bye) => {
                assert!(bye.ssrcs().count() < 32);
                if let Some(reason) = bye.reason() {
                    offset_within(bytes, reason);
                }
            }
            RtcpPacket::Nack(nack) => {
                black_box((nack.sender_ssrc(), nack.media_ssrc()));
                let pairs = nack.pairs().len();
                assert!(pairs >= 1);
                let lost = nack.lost_sequence_numbers().count();
                assert!(lost >= pairs && lost <= 17 * pairs);
            }
            RtcpPacket::TransportFeedback(feedback) => {
                black_box((feedback.sender_ssrc(), feedback.media_ssrc(), feedback.base_sequence_number()));
                black_box((feedback.reference_time(), feedback.feedback_packet_count()));
                assert_eq!(feedback.packets().count(), usize::from(feedback.packet_status_count()));
            }
            RtcpPacket::Pli(pli) => {
                black_box((pli.sender_ssrc(), pli.media_ssrc()));
            }
            RtcpPacket::Fir(fir) => {
                black_box(fir.sender_ssrc());
                assert!(fir.entries().count() >= 1);
            }
            RtcpPacket::Remb(remb) => {
                black_box((remb.sender_ssrc(), remb.bitrate()));
                assert!(remb.ssrcs().count() <= 255);
            }
            RtcpPacket::Other(other) => {
                black_box((other.packet_type(), other.format()));
                offset_within(bytes, other.body());
            }
        }
    }
    assert!(packets >= 1);
    true
}

/// Calls every accessor of an accepted STUN header. Returns whether the bytes were accepted.
fn exercise_stun(bytes: &[u8]) -> bool {
    let Ok(header) = StunHeader::new_checked(bytes) else { return false };
    assert_eq!(usize::from(header.message_length()) + 20, bytes.len());
    assert!(header.message_type() < 0x4000);
    assert!(header.method() < 0x1000);
    black_box((header.class(), header.transaction_id()));
    // RFC 5389 allows first bytes up to 63; RFC 7983's demux claims only 0..=3 for STUN,
    // the range of every method registered.
    if bytes[0] <= 3 {
        assert_eq!(classify(bytes), Datagram::Stun);
    }
    true
}

fn exercise_all(bytes: &[u8]) -> [bool; 3] {
    black_box(classify(bytes));
    [exercise_rtp(bytes), exercise_rtcp(bytes), exercise_stun(bytes)]
}

/// Random bytes of random length. Half have version 2, so that headers get past the version
/// check; half of those are one RTCP packet of a parsed type whose length word covers the
/// datagram, so that RTCP bodies get checked at all.
fn random_datagram(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(0..96);
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    if len >= 4 && rng.random_bool(0.5) {
        bytes[0] = 0x80 | (bytes[0] & 0x3f);
        if rng.random_bool(0.5) {
            bytes.truncate(len / 4 * 4);
            bytes[1] = rng.random_range(200..=206);
            let length_word = u16::try_from(bytes.len() / 4 - 1).expect("under 96 bytes");
            bytes[2..4].copy_from_slice(&length_word.to_be_bytes());
        }
    }
    bytes
}

/// A valid packet with a few bytes changed, cut short or extended.
fn mutated(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..4) {
            0 | 1 => {
                let at = rng.random_range(0..bytes.len().max(1));
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = rng.random();
                }
            }
            2 => bytes.truncate(rng.random_range(0..=bytes.len())),
            _ => bytes.extend((0..rng.random_range(1..8)).map(|_| rng.random::<u8>())),
        }
    }
    bytes
}

#[test]
fn random_datagrams_never_panic() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut accepted = [0; 3];
    for _ in 0..ITERATIONS {
        let bytes = random_datagram(&mut rng);
        for (count, ok) in accepted.iter_mut().zip(exercise_all(&bytes)) {
            *count += usize::from(ok);
        }
    }
    // RTP and RTCP must have been accepted often enough for the accessor checks to mean
    // something; random STUN almost never passes the cookie check.
    assert!(accepted[0] > ITERATIONS / 20, "RTP accepted {} times", accepted[0]);
    assert!(accepted[1] > ITERATIONS / 100, "RTCP accepted {} times", accepted[1]);
}

#[test]
fn mutated_packets_never_panic() {
    let mut rng = StdRng::seed_from_u64(2);
    let seeds: [&[u8]; 6] =
        [&CHROMIUM_VP8, &CHROMIUM_RR_REMB, &NACK_WITH_BLP, &SR_SDES_BYE, &RFC5769_REQUEST, &RFC5769_IPV4_RESPONSE];
    let mut accepted = 0;
    for _ in 0..ITERATIONS {
        let seed = seeds[rng.random_range(0..seeds.len())];
        let bytes = mutated(&mut rng, seed);
        accepted += usize::from(exercise_all(&bytes).contains(&true));
    }
    assert!(accepted > ITERATIONS / 10, "accepted {accepted} times");
}

#[test]
fn every_prefix_of_every_vector_is_safe() {
    for seed in [&CHROMIUM_VP8[..], &CHROMIUM_RR_REMB, &NACK_WITH_BLP, &SR_SDES_BYE, &RFC5769_REQUEST] {
        for len in 0..=seed.len() {
            exercise_all(&seed[..len]);
        }
    }
}
