//! Session behaviour for every profile: round trips, the rollover counter, replay, forged
//! and malformed packets, limits, and keys taken straight from a DTLS handshake. The
//! RFC vectors sit beside the code they check (`kdf`, `cm`, `gcm`); the comparison with
//! rtc-srtp is in `reference_tests`.

use std::time::Instant;

use aws_lc_rs::hmac;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::kdf::{KdfLabel, MasterKdf};
use super::*;
use crate::dtls::{DtlsIdentity, DtlsOutput, DtlsTransport, DtlsVersionPolicy, MIN_OUTPUT_BUFFER_LEN};

pub(super) const PROFILES: [SrtpProfile; 3] =
    [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes128Gcm, SrtpProfile::AeadAes256Gcm];

pub(super) fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "hex needs whole bytes");
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex digits")).collect()
}

/// A master key and salt of the profile's lengths.
pub(super) struct TestMaster {
    pub(super) key: Vec<u8>,
    pub(super) salt: Vec<u8>,
}

impl TestMaster {
    pub(super) fn random(profile: SrtpProfile, rng: &mut StdRng) -> Self {
        let mut key = vec![0; profile.master_key_len()];
        let mut salt = vec![0; profile.master_salt_len()];
        rng.fill(&mut key[..]);
        rng.fill(&mut salt[..]);
        Self { key, salt }
    }

    fn borrow(&self) -> MasterKeySalt<'_> {
        MasterKeySalt { key: &self.key, salt: &self.salt }
    }
}

/// A session that sends with `master` and one that receives with it.
pub(super) fn sender_and_receiver(
    profile: SrtpProfile,
    master: &TestMaster,
    rng: &mut StdRng,
) -> (SrtpSession, SrtpSession) {
    let other = TestMaster::random(profile, rng);
    let sender = SrtpSession::from_master_keys(profile, master.borrow(), other.borrow()).expect("valid lengths");
    let receiver = SrtpSession::from_master_keys(profile, other.borrow(), master.borrow()).expect("valid lengths");
    (sender, receiver)
}

/// An RTP packet with up to three CSRCs, maybe a one- or two-byte header extension
/// (RFC 8285, well formed, so other parsers agree on its length) and up to 1200 bytes of
/// payload.
pub(super) fn random_rtp(rng: &mut StdRng, ssrc: u32, sequence_number: u16) -> Vec<u8> {
    let csrc_count = rng.random_range(0..=3u8);
    let extension = rng.random_range(0..3u8);
    let mut packet = vec![0x80 | csrc_count, rng.random_range(0..128u8) | if rng.random() { 0x80 } else { 0 }];
    packet.extend_from_slice(&sequence_number.to_be_bytes());
    packet.extend_from_slice(&rng.random::<u32>().to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    for _ in 0..csrc_count {
        packet.extend_from_slice(&rng.random::<u32>().to_be_bytes());
    }
    if extension != 0 {
        packet[0] |= 0x10;
        let mut elements = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let data_len = rng.random_range(1..=16usize);
            if extension == 1 {
                elements.push(rng.random_range(1..=14u8) << 4 | (data_len as u8 - 1));
            } else {
                elements.extend_from_slice(&[rng.random_range(1..=255u8), data_len as u8]);
            }
            elements.extend((0..data_len).map(|_| rng.random::<u8>()));
        }
        elements.resize(elements.len().div_ceil(4) * 4, 0);
        let profile: u16 = if extension == 1 { 0xBEDE } else { 0x1000 };
        packet.extend_from_slice(&profile.to_be_bytes());
        packet.extend_from_slice(&((elements.len() / 4) as u16).to_be_bytes());
        packet.extend_from_slice(&elements);
    }
    packet.extend((0..rng.random_range(0..=1200)).map(|_| rng.random::<u8>()));
    packet
}

/// An RTCP compound of one to four packets with consistent length fields, the first sent
/// by `ssrc`.
pub(super) fn random_rtcp(rng: &mut StdRng, ssrc: u32) -> Vec<u8> {
    let mut compound = Vec::new();
    for position in 0..rng.random_range(1..=4) {
        let packet_type = [200u8, 201, 202, 203, 205, 206][rng.random_range(0..6)];
        let body_words = rng.random_range(1..=20u16);
        compound.extend_from_slice(&[0x80 | rng.random_range(0..32u8), packet_type]);
        compound.extend_from_slice(&body_words.to_be_bytes());
        let sender = if position == 0 { ssrc } else { rng.random() };
        compound.extend_from_slice(&sender.to_be_bytes());
        compound.extend((4..usize::from(body_words) * 4).map(|_| rng.random::<u8>()));
    }
    compound
}

pub(super) fn protect_rtp(session: &mut SrtpSession, packet: &[u8]) -> Vec<u8> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + MAX_SRTP_OVERHEAD, 0);
    let len = session.protect_rtp(&mut buf, packet.len()).expect("protect RTP");
    buf.truncate(len);
    buf
}

pub(super) fn unprotect_rtp(session: &mut SrtpSession, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let len = session.unprotect_rtp(&mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

pub(super) fn protect_rtcp(session: &mut SrtpSession, packet: &[u8]) -> Vec<u8> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + MAX_SRTCP_OVERHEAD, 0);
    let len = session.protect_rtcp(&mut buf, packet.len()).expect("protect RTCP");
    buf.truncate(len);
    buf
}

pub(super) fn unprotect_rtcp(session: &mut SrtpSession, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let len = session.unprotect_rtcp(&mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

fn setup(profile: SrtpProfile, seed: u64) -> (StdRng, SrtpSession, SrtpSession) {
    let mut rng = StdRng::seed_from_u64(seed);
    let master = TestMaster::random(profile, &mut rng);
    let (sender, receiver) = sender_and_receiver(profile, &master, &mut rng);
    (rng, sender, receiver)
}

/// A plain RTP packet: 12-byte header and `payload_len` bytes that are not all zero.
fn simple_rtp(ssrc: u32, sequence_number: u16, payload_len: usize) -> Vec<u8> {
    let mut packet = vec![0x80, 96];
    packet.extend_from_slice(&sequence_number.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x30, 0x39]);
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend((0..payload_len).map(|at| at as u8 | 1));
    packet
}

#[test]
fn every_profile_round_trips_rtp_and_rtcp_with_its_overhead() {
    for (seed, profile) in PROFILES.into_iter().enumerate() {
        let (mut rng, mut sender, mut receiver) = setup(profile, seed as u64);
        let (srtp_overhead, srtcp_overhead) =
            if profile == SrtpProfile::Aes128CmHmacSha1_80 { (10, 14) } else { (16, 20) };
        for sequence_number in 0..200u16 {
            let packet = random_rtp(&mut rng, 0x1111, sequence_number);
            let protected = protect_rtp(&mut sender, &packet);
            assert_eq!(protected.len(), packet.len() + srtp_overhead, "{profile:?}");
            assert_ne!(protected[..packet.len()], packet[..], "{profile:?}: encrypted");
            assert_eq!(unprotect_rtp(&mut receiver, &protected), Ok(packet), "{profile:?}");

            let compound = random_rtcp(&mut rng, 0x2222);
            let protected = protect_rtcp(&mut sender, &compound);
            assert_eq!(protected.len(), compound.len() + srtcp_overhead, "{profile:?}");
            assert_eq!(unprotect_rtcp(&mut receiver, &protected), Ok(compound), "{profile:?}");
        }
        assert_eq!(sender.profile(), profile);
    }
}

#[test]
fn the_rollover_counter_follows_a_wrap_and_is_authenticated() {
    for (seed, profile) in PROFILES.into_iter().enumerate() {
        let (_, mut sender, mut receiver) = setup(profile, seed as u64);
        let protected: Vec<(u16, Vec<u8>)> = [65_533u16, 65_534, 65_535, 0, 1, 2, 3]
            .into_iter()
            .map(|sequence_number| (sequence_number, protect_rtp(&mut sender, &simple_rtp(7, sequence_number, 40))))
            .collect();

        // 65535 arrives after 0 and 1: a late packet of ROC 0 once the receiver is in ROC 1.
        for position in [0, 1, 3, 4, 2, 5, 6] {
            let (sequence_number, packet) = &protected[position];
            let plaintext = unprotect_rtp(&mut receiver, packet).unwrap_or_else(|error| {
                panic!("{profile:?}: sequence number {sequence_number}: {error}");
            });
            assert_eq!(plaintext, simple_rtp(7, *sequence_number, 40));
        }

        // The sender used ROC 1 after the wrap: a receiver that never saw the wrap assumes
        // ROC 0 for its first packet, and the tag, which covers the ROC, fails.
        let (_, _, mut late_joiner) = setup(profile, seed as u64);
        assert_eq!(unprotect_rtp(&mut late_joiner, &protected[5].1), Err(SrtpError::AuthFailed), "{profile:?}");
    }
}

#[test]
fn a_replay_is_refused_a_late_packet_accepted_once_and_an_old_one_refused() {
    for (seed, profile) in PROFILES.into_iter().enumerate() {
        let (_, mut sender, mut receiver) = setup(profile, seed as u64);
        let protected: Vec<Vec<u8>> = (1_000..=2_100)
            .map(|sequence_number| protect_rtp(&mut sender, &simple_rtp(9, sequence_number, 20)))
            .collect();
        let packet = |sequence_number: usize| &protected[sequence_number - 1_000];

        assert!(unprotect_rtp(&mut receiver, packet(1_000)).is_ok());
        assert_eq!(unprotect_rtp(&mut receiver, packet(1_000)), Err(SrtpError::Replayed), "{profile:?}");
        assert!(unprotect_rtp(&mut receiver, packet(1_002)).is_ok());
        assert!(unprotect_rtp(&mut receiver, packet(1_001)).is_ok(), "{profile:?}: out of order, in the window");
        assert_eq!(unprotect_rtp(&mut receiver, packet(1_001)), Err(SrtpError::Replayed), "{profile:?}");

        assert!(unprotect_rtp(&mut receiver, packet(2_100)).is_ok());
        let oldest_accepted = 2_100 - (REPLAY_WINDOW_LEN as usize - 1);
        assert_eq!(unprotect_rtp(&mut receiver, packet(oldest_accepted - 1)), Err(SrtpError::TooOld), "{profile:?}");
        assert!(unprotect_rtp(&mut receiver, packet(oldest_accepted)).is_ok(), "{profile:?}");
        assert_eq!(unprotect_rtp(&mut receiver, packet(oldest_accepted)), Err(SrtpError::Replayed), "{profile:?}");
    }
}

#[test]
fn srtcp_has_its_own_replay_window() {
    for (seed, profile) in PROFILES.into_iter().enumerate() {
        let (mut rng, mut sender, mut receiver) = setup(profile, seed as u64);
        let compounds: Vec<Vec<u8>> = (0..1_000).map(|_| random_rtcp(&mut rng, 0x5150)).collect();
        let protected: Vec<Vec<u8>> = compounds.iter().map(|compound| protect_rtcp(&mut sender, compound)).collect();

        assert!(unprotect_rtcp(&mut receiver, &protected[1]).is_ok());
        assert_eq!(unprotect_rtcp(&mut receiver, &protected[0]).as_ref(), Ok(&compounds[0]), "{profile:?}: late");
        assert_eq!(unprotect_rtcp(&mut receiver, &protected[0]), Err(SrtpError::Replayed), "{profile:?}");
        assert!(unprotect_rtcp(&mut receiver, &protected[999]).is_ok());
        // Indices start at 1, so packet n carries index n + 1.
        let oldest_accepted = 999 - (REPLAY_WINDOW_LEN as usize - 1);
        assert_eq!(unprotect_rtcp(&mut receiver, &protected[oldest_accepted - 1]), Err(SrtpError::TooOld));
        assert!(unprotect_rtcp(&mut receiver, &protected[oldest_accepted]).is_ok(), "{profile:?}");
    }
}

/// Flips one bit in every byte position in turn: nothing verifies, the state stays as it
/// was (the untouched packet still unprotects afterwards), and no plaintext is left behind.
#[test]
fn any_flipped_bit_fails_and_leaves_no_plaintext() {
    for (seed, profile) in PROFILES.into_iter().enumerate() {
        let (_, mut sender, mut receiver) = setup(profile, seed as u64);
        let plaintext = simple_rtp(0xABCD, 77, 64);
        let protected = protect_rtp(&mut sender, &plaintext);
        for position in 0..protected.len() {
            let mut forged = protected.clone();
            forged[position] ^= 1 << (position % 8);
            let result = receiver.unprotect_rtp(&mut forged);
            if position >= 12 {
                assert_eq!(result, Err(SrtpError::AuthFailed), "{profile:?}: byte {position}");
            } else {
                assert!(matches!(result, Err(SrtpError::AuthFailed | SrtpError::Malformed)), "{profile:?}: {result:?}");
            }
            assert_ne!(forged[12..12 + 64], plaintext[12..], "{profile:?}: byte {position}: plaintext exposed");
        }
        assert_eq!(unprotect_rtp(&mut receiver, &protected), Ok(plaintext));

        let mut compound = hex("81c800064d617273");
        compound.extend((0..20).map(|at| at as u8 | 1));
        let protected = protect_rtcp(&mut sender, &compound);
        for position in 0..protected.len() {
            let mut forged = protected.clone();
            forged[position] ^= 1 << (position % 8);
            let result = receiver.unprotect_rtcp(&mut forged);
            assert!(matches!(result, Err(SrtpError::AuthFailed | SrtpError::Malformed)), "{profile:?}: {result:?}");
            assert_ne!(forged[8..compound.len()], compound[8..], "{profile:?}: byte {position}: plaintext exposed");
        }
        assert_eq!(unprotect_rtcp(&mut receiver, &protected), Ok(compound));
    }
}

#[test]
fn buffers_without_room_for_the_tag_are_refused() {
    for (seed, profile) in PROFILES.into_iter().enumerate() {
        let (_, mut sender, _) = setup(profile, seed as u64);
        let packet = simple_rtp(1, 1, 100);
        let tag_len = if profile == SrtpProfile::Aes128CmHmacSha1_80 { 10 } else { 16 };
        let mut buf = packet.clone();
        buf.resize(packet.len() + tag_len - 1, 0);
        assert_eq!(sender.protect_rtp(&mut buf, packet.len()), Err(SrtpError::BufferTooSmall));
        let past_the_end = buf.len() + 1;
        assert_eq!(sender.protect_rtp(&mut buf, past_the_end), Err(SrtpError::BufferTooSmall));
        buf.push(0);
        assert_eq!(sender.protect_rtp(&mut buf, packet.len()), Ok(packet.len() + tag_len));

        let compound = hex("80c9000100000001");
        let mut buf = compound.clone();
        buf.resize(compound.len() + tag_len + 3, 0);
        assert_eq!(sender.protect_rtcp(&mut buf, compound.len()), Err(SrtpError::BufferTooSmall));
        buf.push(0);
        assert_eq!(sender.protect_rtcp(&mut buf, compound.len()), Ok(compound.len() + tag_len + 4));
    }
}

#[test]
fn malformed_and_random_input_is_an_error_never_a_panic() {
    for (seed, profile) in PROFILES.into_iter().enumerate() {
        let (mut rng, mut sender, mut receiver) = setup(profile, seed as u64);
        // A header alone, with no room for a tag, is malformed on receipt.
        assert_eq!(receiver.unprotect_rtp(&mut simple_rtp(1, 1, 0)), Err(SrtpError::Malformed));
        assert_eq!(receiver.unprotect_rtcp(&mut hex("80c8000100000001")), Err(SrtpError::Malformed));
        assert_eq!(sender.protect_rtp(&mut [0x80; 40], 11), Err(SrtpError::Malformed));
        assert_eq!(sender.protect_rtcp(&mut [0x40; 40], 8), Err(SrtpError::Malformed));

        let mut buf = [0u8; 300];
        for _ in 0..20_000 {
            let len = rng.random_range(0..buf.len());
            rng.fill(&mut buf[..len]);
            if rng.random() {
                buf[0] = 0x80 | (buf[0] & 0x3F);
            }
            assert!(receiver.unprotect_rtp(&mut buf[..len]).is_err());
            assert!(receiver.unprotect_rtcp(&mut buf[..len]).is_err());
            let _ = sender.protect_rtp(&mut buf, len);
            let _ = sender.protect_rtcp(&mut buf, len);
        }
    }
}

#[test]
fn keys_of_the_wrong_length_are_refused() {
    let key = [0u8; 32];
    let salt = [0u8; 16];
    for profile in PROFILES {
        let good = MasterKeySalt { key: &key[..profile.master_key_len()], salt: &salt[..profile.master_salt_len()] };
        assert!(SrtpSession::from_master_keys(profile, good, good).is_ok());
        let short_key = MasterKeySalt { key: &key[..15], ..good };
        let long_salt = MasterKeySalt { salt: &salt[..profile.master_salt_len() + 1], ..good };
        for bad in [short_key, long_salt] {
            assert_eq!(SrtpSession::from_master_keys(profile, good, bad).err(), Some(SrtpError::WrongKeyLength));
            assert_eq!(SrtpSession::from_master_keys(profile, bad, good).err(), Some(SrtpError::WrongKeyLength));
        }
    }
}

#[test]
fn debug_output_never_shows_key_material() {
    let key = [0xAB; 32];
    let salt = [0xAB; 14];
    for profile in PROFILES {
        let master = MasterKeySalt { key: &key[..profile.master_key_len()], salt: &salt[..profile.master_salt_len()] };
        let mut session = SrtpSession::from_master_keys(profile, master, master).expect("valid lengths");
        protect_rtp(&mut session, &simple_rtp(1, 1, 10));
        for printed in [
            format!("{session:?}"),
            format!("{:?}", session.outbound),
            format!("{:?}", session.inbound),
            format!("{master:?}"),
        ] {
            let lower = printed.to_ascii_lowercase();
            assert!(!lower.contains("171") && !lower.contains("abab") && !lower.contains("ab,"), "{printed}");
        }
    }
}

#[test]
fn forgetting_an_ssrc_restarts_its_streams() {
    let (_, mut sender, mut receiver) = setup(SrtpProfile::AeadAes128Gcm, 1);
    let first = protect_rtp(&mut sender, &simple_rtp(5, 100, 10));
    assert!(unprotect_rtp(&mut receiver, &first).is_ok());
    assert_eq!(unprotect_rtp(&mut receiver, &first), Err(SrtpError::Replayed));
    receiver.forget_ssrc(5);
    assert!(unprotect_rtp(&mut receiver, &first).is_ok(), "a forgotten stream starts afresh");
    sender.forget_ssrc(5);
    assert_eq!(protect_rtp(&mut sender, &simple_rtp(5, 100, 10)), first, "same index, same bytes");
}

#[test]
fn each_table_is_bounded() {
    let (_, mut sender, mut receiver) = setup(SrtpProfile::Aes128CmHmacSha1_80, 2);
    let mut last = Vec::new();
    for ssrc in 0..MAX_STREAMS_PER_SESSION as u32 {
        last = protect_rtp(&mut sender, &simple_rtp(ssrc, 1, 10));
        assert!(unprotect_rtp(&mut receiver, &last).is_ok());
    }
    let mut buf = simple_rtp(u32::MAX, 1, 10);
    let len = buf.len();
    buf.resize(len + MAX_SRTP_OVERHEAD, 0);
    assert_eq!(sender.protect_rtp(&mut buf, len), Err(SrtpError::TooManyStreams));

    let (_, mut other_sender, _) = setup(SrtpProfile::Aes128CmHmacSha1_80, 2);
    let newcomer = protect_rtp(&mut other_sender, &simple_rtp(u32::MAX, 1, 10));
    assert_eq!(unprotect_rtp(&mut receiver, &newcomer), Err(SrtpError::TooManyStreams));
    assert_eq!(unprotect_rtp(&mut receiver, &last), Err(SrtpError::Replayed), "known streams go on");
}

#[test]
fn srtcp_refuses_to_pass_the_31_bit_index() {
    let (_, mut sender, _) = setup(SrtpProfile::AeadAes256Gcm, 3);
    let compound = hex("80c9000100000042");
    protect_rtcp(&mut sender, &compound);
    let position = sender.sent_rtcp.find(0x42).expect("stream created by the first packet");
    *sender.sent_rtcp.get_mut(position) = MAX_SRTCP_INDEX - 1;
    protect_rtcp(&mut sender, &compound);
    let mut buf = compound.clone();
    buf.resize(compound.len() + MAX_SRTCP_OVERHEAD, 0);
    assert_eq!(sender.protect_rtcp(&mut buf, compound.len()), Err(SrtpError::KeyLifetimeExhausted));
}

/// We always encrypt SRTCP, but a peer may send it authenticated only (E = 0, RFC 3711
/// §3.4). rtc-srtp cannot produce such packets, so the tag is computed here with aws-lc's
/// HMAC-SHA1 under the SRTCP authentication key, derived by the KDF the B.3 vector checks.
#[test]
fn aes_cm_srtcp_sent_unencrypted_is_authenticated_and_accepted() {
    let mut rng = StdRng::seed_from_u64(4);
    let profile = SrtpProfile::Aes128CmHmacSha1_80;
    let master = TestMaster::random(profile, &mut rng);
    let (_, mut receiver) = sender_and_receiver(profile, &master, &mut rng);
    let mut auth_key = [0; 20];
    MasterKdf::new(&master.key, &master.salt)
        .and_then(|kdf| kdf.derive(KdfLabel::SrtcpAuthentication, &mut auth_key))
        .expect("KDF");

    let compound = random_rtcp(&mut rng, 0x7777);
    let mut packet = compound.clone();
    packet.extend_from_slice(&7u32.to_be_bytes()); // E = 0, index 7
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &auth_key), &packet);
    packet.extend_from_slice(&tag.as_ref()[..10]);

    let mut encrypted_flag_set = packet.clone();
    encrypted_flag_set[compound.len()] |= 0x80;
    assert_eq!(unprotect_rtcp(&mut receiver, &encrypted_flag_set), Err(SrtpError::AuthFailed));
    assert_eq!(unprotect_rtcp(&mut receiver, &packet), Ok(compound));
    assert_eq!(unprotect_rtcp(&mut receiver, &packet), Err(SrtpError::Replayed));
}

/// Runs a lossless DTLS handshake in memory and returns (client, server) keys.
fn dtls_keys() -> (SrtpKeyingMaterial, SrtpKeyingMaterial) {
    let server_identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("identity");
    let client_identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("identity");
    let now = Instant::now();
    let mut client = DtlsTransport::new_client(&client_identity, server_identity.fingerprint(), now);
    let mut server = DtlsTransport::new_server(&server_identity, client_identity.fingerprint(), now);
    let (mut client_keys, mut server_keys) = (None, None);
    for _ in 0..50 {
        deliver(&mut client, &mut server, now, &mut client_keys);
        deliver(&mut server, &mut client, now, &mut server_keys);
        if let (Some(client_keys), Some(server_keys)) = (client_keys, server_keys) {
            return (client_keys, server_keys);
        }
    }
    panic!("the handshake did not complete");
}

/// Hands everything `from` has to send to `to`, noting `from`'s keys when they come.
fn deliver(from: &mut DtlsTransport, to: &mut DtlsTransport, now: Instant, keys: &mut Option<SrtpKeyingMaterial>) {
    let mut buf = [0u8; MIN_OUTPUT_BUFFER_LEN];
    let mut datagrams = Vec::new();
    while let Some(output) = from.poll_output(&mut buf) {
        match output {
            DtlsOutput::Transmit(datagram) => datagrams.push(datagram.to_vec()),
            DtlsOutput::Connected { keys: exported, .. } => *keys = Some(exported),
            DtlsOutput::Failed(error) => panic!("handshake failed: {error}"),
            DtlsOutput::Closed => panic!("handshake closed"),
        }
    }
    for datagram in datagrams {
        to.handle_packet(now, &datagram).expect("handshake datagram");
    }
}

#[test]
fn sessions_from_a_dtls_handshake_talk_to_each_other() {
    let (client_keys, server_keys) = dtls_keys();
    let mut client = SrtpSession::new(&client_keys).expect("DTLS keys fit their profile");
    let mut server = SrtpSession::new(&server_keys).expect("DTLS keys fit their profile");
    assert_eq!(client.profile(), server.profile());

    let mut rng = StdRng::seed_from_u64(5);
    for sequence_number in 0..20 {
        let packet = random_rtp(&mut rng, 0xC11E, sequence_number);
        assert_eq!(unprotect_rtp(&mut server, &protect_rtp(&mut client, &packet)), Ok(packet));
        let packet = random_rtp(&mut rng, 0x5E4E, sequence_number);
        assert_eq!(unprotect_rtp(&mut client, &protect_rtp(&mut server, &packet)), Ok(packet));
        let compound = random_rtcp(&mut rng, 0x5E4E);
        assert_eq!(unprotect_rtcp(&mut client, &protect_rtcp(&mut server, &compound)), Ok(compound));
    }
}
