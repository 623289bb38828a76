//! What SRTP costs per 1,200-byte RTP packet, ours (in place, `uprtcd_dataplane::srtp`)
//! against the reference rtc-srtp 0.21 (aws-lc-rs provider), for each profile: nanoseconds
//! and heap allocations per protect and per unprotect.
//!
//! Run it in release: `cargo run --release -p uprtcd-dataplane --example srtp_cost`.
//! Optional argument: batches of 64 packets per trial (default 600); the best of five
//! trials is printed.
//!
//! Packets go through in batches small enough to stay in L2, as a receive burst would; the
//! wall clock is read once per batch. The global allocator is the system allocator wrapped
//! by `stats_alloc` (the product uses mimalloc, which makes rtc-srtp's per-packet
//! allocation a little cheaper). rtc-srtp runs without replay protection (its default),
//! ours with it.

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rtc_srtp::context::Context;
use rtc_srtp::crypto::providers::AwsLcRsCrypto;
use rtc_srtp::protection_profile::ProtectionProfile;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::dtls::SrtpProfile;
use uprtcd_dataplane::srtp::{MAX_SRTP_OVERHEAD, MasterKeySalt, SrtpSession};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PACKET_LEN: usize = 1_200;
const BATCH: usize = 64;
const TRIALS: usize = 5;
const SSRC: u32 = 0x0A0B_0C0D;

/// Time and allocations of one operation over all packets of a trial.
#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    time: Duration,
    allocations: usize,
}

impl Cost {
    fn charge(&mut self, work: impl FnOnce()) {
        let region = Region::new(GLOBAL);
        let started = Instant::now();
        work();
        self.time += started.elapsed();
        let change = region.change();
        self.allocations += change.allocations + change.reallocations;
    }
}

/// Protect and unprotect costs of one trial, and how many packets it ran.
#[derive(Debug, Default, Clone, Copy)]
struct Trial {
    protect: Cost,
    unprotect: Cost,
    packets: usize,
}

struct Keys {
    master_key: [u8; 32],
    master_salt: [u8; 14],
    other_key: [u8; 32],
    other_salt: [u8; 14],
}

const KEYS: Keys =
    Keys { master_key: [0x5A; 32], master_salt: [0xC3; 14], other_key: [0x17; 32], other_salt: [0x71; 14] };

fn master(profile: SrtpProfile) -> MasterKeySalt<'static> {
    MasterKeySalt {
        key: &KEYS.master_key[..profile.master_key_len()],
        salt: &KEYS.master_salt[..profile.master_salt_len()],
    }
}

fn other(profile: SrtpProfile) -> MasterKeySalt<'static> {
    MasterKeySalt {
        key: &KEYS.other_key[..profile.master_key_len()],
        salt: &KEYS.other_salt[..profile.master_salt_len()],
    }
}

/// Writes an RTP header with `sequence_number` over the start of `packet`.
fn write_header(packet: &mut [u8], sequence_number: u16) {
    packet[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0x30, 0x39, 0, 0, 0, 0]);
    packet[2..4].copy_from_slice(&sequence_number.to_be_bytes());
    packet[8..12].copy_from_slice(&SSRC.to_be_bytes());
}

fn ours(profile: SrtpProfile, batches: usize) -> Trial {
    let mut sender = SrtpSession::from_master_keys(profile, master(profile), other(profile)).expect("valid keys");
    let mut receiver = SrtpSession::from_master_keys(profile, other(profile), master(profile)).expect("valid keys");
    let mut buffers = vec![[0u8; PACKET_LEN + MAX_SRTP_OVERHEAD]; BATCH];
    for (position, buffer) in buffers.iter_mut().enumerate() {
        buffer[12..PACKET_LEN].fill(position as u8);
    }
    let mut protected_lens = [0usize; BATCH];
    let mut trial = Trial::default();
    let mut sequence_number = 0u16;
    for _ in 0..batches {
        for buffer in &mut buffers {
            write_header(buffer, sequence_number);
            sequence_number = sequence_number.wrapping_add(1);
        }
        trial.protect.charge(|| {
            for (buffer, protected_len) in buffers.iter_mut().zip(&mut protected_lens) {
                *protected_len = sender.protect_rtp(buffer, PACKET_LEN).expect("protect");
            }
        });
        trial.unprotect.charge(|| {
            for (buffer, &protected_len) in buffers.iter_mut().zip(&protected_lens) {
                black_box(receiver.unprotect_rtp(&mut buffer[..protected_len]).expect("unprotect"));
            }
        });
        trial.packets += BATCH;
    }
    trial
}

fn reference_profile(profile: SrtpProfile) -> ProtectionProfile {
    match profile {
        SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    }
}

fn reference(profile: SrtpProfile, batches: usize) -> Trial {
    let keys = master(profile);
    let context = || {
        Context::new(keys.key, keys.salt, reference_profile(profile), None, None, &AwsLcRsCrypto)
            .expect("rtc-srtp accepts its own profiles")
    };
    let (mut sender, mut receiver) = (context(), context());
    let mut plaintexts: Vec<Vec<u8>> = (0..BATCH).map(|position| vec![position as u8; PACKET_LEN]).collect();
    let mut protected = Vec::with_capacity(BATCH);
    let mut trial = Trial::default();
    let mut sequence_number = 0u16;
    for _ in 0..batches {
        for plaintext in &mut plaintexts {
            write_header(plaintext, sequence_number);
            sequence_number = sequence_number.wrapping_add(1);
        }
        trial.protect.charge(|| {
            // Dropping the previous batch's packets is part of what rtc-srtp's API costs.
            protected.clear();
            for plaintext in &plaintexts {
                protected.push(sender.encrypt_rtp(plaintext).expect("protect"));
            }
        });
        trial.unprotect.charge(|| {
            for packet in &protected {
                black_box(receiver.decrypt_rtp(packet).expect("unprotect"));
            }
        });
        trial.packets += BATCH;
    }
    trial
}

/// Nanoseconds and allocations per packet.
fn per_packet(cost: Cost, packets: usize) -> (f64, f64) {
    (cost.time.as_nanos() as f64 / packets as f64, cost.allocations as f64 / packets as f64)
}

/// The fastest of `TRIALS` for each operation.
fn best(run: impl Fn() -> Trial) -> [(f64, f64); 2] {
    let mut best = [(f64::INFINITY, 0.0); 2];
    for _ in 0..TRIALS {
        let trial = run();
        for (slot, cost) in best.iter_mut().zip([trial.protect, trial.unprotect]) {
            let measured = per_packet(cost, trial.packets);
            if measured.0 < slot.0 {
                *slot = measured;
            }
        }
    }
    best
}

fn main() {
    let batches = std::env::args().nth(1).map_or(600, |arg| arg.parse().expect("batches: a whole number"));
    println!(
        "SRTP per {PACKET_LEN}-byte RTP packet: ns (allocations), best of {TRIALS} trials × {} packets",
        batches * BATCH
    );
    println!(
        "{:<26} {:>15} {:>15} {:>17} {:>19}",
        "profile", "ours protect", "ours unprotect", "rtc-srtp protect", "rtc-srtp unprotect"
    );
    for (name, profile) in [
        ("AES_CM_128_HMAC_SHA1_80", SrtpProfile::Aes128CmHmacSha1_80),
        ("AEAD_AES_128_GCM", SrtpProfile::AeadAes128Gcm),
        ("AEAD_AES_256_GCM", SrtpProfile::AeadAes256Gcm),
    ] {
        let [ours_protect, ours_unprotect] = best(|| ours(profile, batches));
        let [reference_protect, reference_unprotect] = best(|| reference(profile, batches));
        let cell = |(nanos, allocations): (f64, f64)| format!("{nanos:.0} ({allocations:.1})");
        println!(
            "{name:<26} {:>15} {:>15} {:>17} {:>19}",
            cell(ours_protect),
            cell(ours_unprotect),
            cell(reference_protect),
            cell(reference_unprotect)
        );
    }
}
