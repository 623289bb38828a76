//! The SRTP hot path allocates nothing: after a warm-up that creates the per-SSRC state,
//! 10,000 rounds of protect and unprotect (RTP and RTCP, sequence numbers wrapping) go
//! through a counting global allocator without a single allocation, for every profile.
//!
//! Its own test binary because the allocator is global; one test, so no other test thread
//! allocates inside the measured region.

use std::alloc::System;
use std::hint::black_box;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::dtls::SrtpProfile;
use uprtcd_dataplane::srtp::{MAX_SRTCP_OVERHEAD, MAX_SRTP_OVERHEAD, MasterKeySalt, SrtpSession};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ROUNDS: u16 = 10_000;
const RTP_LEN: usize = 1_200;
const RTCP_LEN: usize = 60;

fn sessions(profile: SrtpProfile) -> (SrtpSession, SrtpSession) {
    let (key_a, salt_a) = ([0x11; 32], [0x22; 14]);
    let (key_b, salt_b) = ([0x33; 32], [0x44; 14]);
    let a = MasterKeySalt { key: &key_a[..profile.master_key_len()], salt: &salt_a[..profile.master_salt_len()] };
    let b = MasterKeySalt { key: &key_b[..profile.master_key_len()], salt: &salt_b[..profile.master_salt_len()] };
    let sender = SrtpSession::from_master_keys(profile, a, b).expect("valid key lengths");
    let receiver = SrtpSession::from_master_keys(profile, b, a).expect("valid key lengths");
    (sender, receiver)
}

/// One packet each way through the sender and back out of the receiver.
fn round_trip(sender: &mut SrtpSession, receiver: &mut SrtpSession, sequence_number: u16) {
    let mut rtp = [0u8; RTP_LEN + MAX_SRTP_OVERHEAD];
    rtp[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0x30, 0x39, 0x0A, 0x0B, 0x0C, 0x0D]);
    rtp[2..4].copy_from_slice(&sequence_number.to_be_bytes());
    let len = sender.protect_rtp(&mut rtp, RTP_LEN).expect("protect RTP");
    assert_eq!(receiver.unprotect_rtp(&mut rtp[..len]), Ok(RTP_LEN));

    let mut rtcp = [0u8; RTCP_LEN + MAX_SRTCP_OVERHEAD];
    rtcp[..8].copy_from_slice(&[0x80, 200, 0, (RTCP_LEN / 4 - 1) as u8, 0x0A, 0x0B, 0x0C, 0x0D]);
    let len = sender.protect_rtcp(&mut rtcp, RTCP_LEN).expect("protect RTCP");
    assert_eq!(receiver.unprotect_rtcp(&mut rtcp[..len]), Ok(RTCP_LEN));
    black_box((&rtp, &rtcp));
}

#[test]
fn srtp_protect_and_unprotect_allocate_nothing_per_packet() {
    for profile in [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::AeadAes128Gcm, SrtpProfile::AeadAes256Gcm] {
        let (mut sender, mut receiver) = sessions(profile);
        let first_sequence_number = 60_000u16;
        round_trip(&mut sender, &mut receiver, first_sequence_number);

        // The counting allocator sees every thread of the process, and the test harness's
        // own threads may allocate now and then. An allocation per packet would show in every
        // measurement, so the path is allocation-free when one of three counts none.
        let mut measurements = Vec::new();
        for attempt in 0..3u16 {
            let region = Region::new(GLOBAL);
            for round in 1..=ROUNDS {
                round_trip(&mut sender, &mut receiver, first_sequence_number.wrapping_add(attempt * ROUNDS + round));
            }
            let change = region.change();
            measurements.push((change.allocations, change.reallocations));
        }
        assert!(
            measurements.contains(&(0, 0)),
            "{profile:?}: (allocations, reallocations) per {ROUNDS} rounds: {measurements:?}"
        );
    }
}
