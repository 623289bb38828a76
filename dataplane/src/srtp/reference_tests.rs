//! Byte-for-byte agreement with rtc-srtp 0.21 (aws-lc-rs provider), the reference: on random
//! RTP packets (CSRCs, header extensions, sequence numbers crossing 65535, reordering) and
//! random RTCP compounds, for every profile, in both directions. Each packet is protected
//! by both implementations under the same master key; the outputs must be equal, each
//! side's output must unprotect on the other side, and both must give the plaintext back.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc_srtp::context::Context;
use rtc_srtp::crypto::providers::AwsLcRsCrypto;
use rtc_srtp::protection_profile::ProtectionProfile;

use super::SrtpProfile;
use super::tests::{
    PROFILES, TestMaster, protect_rtcp, protect_rtp, random_rtcp, random_rtp, sender_and_receiver, unprotect_rtcp,
    unprotect_rtp,
};

fn reference_profile(profile: SrtpProfile) -> ProtectionProfile {
    match profile {
        SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    }
}

/// An rtc-srtp context for one direction, without its replay protection (it is off by
/// default; ours is tested on its own).
fn reference_context(profile: SrtpProfile, master: &TestMaster) -> Context {
    Context::new(&master.key, &master.salt, reference_profile(profile), None, None, &AwsLcRsCrypto)
        .expect("rtc-srtp accepts the key lengths of its own profiles")
}

/// Sequence numbers starting at `first`, mostly in order: sometimes two swap places or a
/// few are skipped, as on a real network. Every number occurs at most once.
fn jittered_sequence(rng: &mut StdRng, first: u16, count: usize) -> Vec<u16> {
    let mut numbers = Vec::with_capacity(count);
    let mut next = first;
    while numbers.len() < count {
        next = next.wrapping_add(if rng.random_ratio(1, 10) { rng.random_range(2..20) } else { 1 });
        numbers.push(next);
    }
    for at in 1..numbers.len() {
        if rng.random_ratio(1, 8) {
            numbers.swap(at - 1, at);
        }
    }
    numbers
}

#[test]
fn srtp_is_byte_identical_to_rtc_srtp_in_both_directions() {
    for (seed, profile) in PROFILES.into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(100 + seed as u64);
        let master = TestMaster::random(profile, &mut rng);
        let (mut ours_sending, mut ours_receiving) = sender_and_receiver(profile, &master, &mut rng);
        let mut reference_sending = reference_context(profile, &master);
        let mut reference_receiving = reference_context(profile, &master);

        // One stream crosses 65535 into ROC 1; the other starts anywhere.
        let first_of_second_stream = rng.random();
        let streams = [(0x0BAD_CAFE, 65_400), (rng.random(), first_of_second_stream)];
        let mut packets = Vec::new();
        for (ssrc, first) in streams {
            for sequence_number in jittered_sequence(&mut rng, first, 1_500) {
                packets.push((ssrc, sequence_number));
            }
        }
        for (ssrc, sequence_number) in packets {
            let plaintext = random_rtp(&mut rng, ssrc, sequence_number);
            let context = format!("{profile:?}, SSRC {ssrc:#x}, sequence number {sequence_number}");

            let ours = protect_rtp(&mut ours_sending, &plaintext);
            let reference = reference_sending.encrypt_rtp(&plaintext).expect("rtc-srtp protects");
            assert_eq!(ours, reference[..], "{context}: protected bytes differ");

            let decrypted = reference_receiving.decrypt_rtp(&ours).expect("rtc-srtp unprotects ours");
            assert_eq!(decrypted[..], plaintext[..], "{context}");
            assert_eq!(unprotect_rtp(&mut ours_receiving, &reference), Ok(plaintext), "{context}");
        }
    }
}

#[test]
fn srtcp_is_byte_identical_to_rtc_srtp_in_both_directions() {
    for (seed, profile) in PROFILES.into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(200 + seed as u64);
        let master = TestMaster::random(profile, &mut rng);
        let (mut ours_sending, mut ours_receiving) = sender_and_receiver(profile, &master, &mut rng);
        let mut reference_sending = reference_context(profile, &master);
        let mut reference_receiving = reference_context(profile, &master);

        let senders: [u32; 3] = [rng.random(), rng.random(), rng.random()];
        for _ in 0..1_000 {
            let ssrc = senders[rng.random_range(0..senders.len())];
            let plaintext = random_rtcp(&mut rng, ssrc);
            let context = format!("{profile:?}, SSRC {ssrc:#x}");

            let ours = protect_rtcp(&mut ours_sending, &plaintext);
            let reference = reference_sending.encrypt_rtcp(&plaintext).expect("rtc-srtp protects");
            assert_eq!(ours, reference[..], "{context}: protected bytes differ");

            let decrypted = reference_receiving.decrypt_rtcp(&ours).expect("rtc-srtp unprotects ours");
            assert_eq!(decrypted[..], plaintext[..], "{context}");
            assert_eq!(unprotect_rtcp(&mut ours_receiving, &reference), Ok(plaintext), "{context}");
        }
    }
}
