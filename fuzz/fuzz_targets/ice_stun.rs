//! STUN datagrams from strangers never panic the ICE-lite agent, and it keeps its word: a
//! refused datagram writes nothing and changes nothing; an accepted check is answered with a
//! response the controlling side authenticates and that maps the sender's address; a 487 or
//! 420 is an authenticated error response that validates nothing; a datagram the agent
//! accepts is one `local_ufrag_of` routes to it; after consent expires, nothing is accepted.
//!
//! Input: datagrams, each as `[time step][flags][length: u16 BE][bytes]`; the last takes what
//! is left. The clock moves 200 ms per unit of the step. The flags' low two bits pick the
//! sender's address (two IPv4, one IPv6, one IPv4-mapped IPv6); their top bit re-signs the
//! datagram first, writing the MESSAGE-INTEGRITY under the agent's password and the
//! FINGERPRINT that its bytes call for, so that the fuzzer also reaches what comes after
//! authentication.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use libfuzzer_sys::fuzz_target;
use uprtcd_dataplane::ice::client::parse_binding_response;
use uprtcd_dataplane::ice::{IceCredentials, IceError, IceLiteAgent, MAX_RESPONSE_LEN, StunOutcome, local_ufrag_of};

/// The SFU's credentials (the agent's local ones) and the browser's.
const SFU_UFRAG: &str = "sfuU";
const SFU_PWD: &str = "sfuPasswordOf22chars+/";
const BROWSER_UFRAG: &str = "brwU";
const BROWSER_PWD: &str = "browserPasswordOf24char";

fn sfu() -> IceCredentials {
    IceCredentials::new(SFU_UFRAG, SFU_PWD).expect("valid ice-chars")
}

fn browser() -> IceCredentials {
    IceCredentials::new(BROWSER_UFRAG, BROWSER_PWD).expect("valid ice-chars")
}

/// A time origin shared by every run, so that runs differ only by their input.
fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

const SENDERS: [&str; 4] =
    ["198.51.100.7:50000", "198.51.100.8:50001", "[2001:db8::7]:50000", "[::ffff:198.51.100.7]:50000"];

fn sender(flags: u8) -> SocketAddr {
    SENDERS[usize::from(flags & 3)].parse().expect("literal socket address")
}

// STUN layout (RFC 5389 §6, §15.4, §15.5).
const HEADER_LEN: usize = 20;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// CRC-32 (ISO-HDLC), the FINGERPRINT's checksum.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Writes the first MESSAGE-INTEGRITY's HMAC under `key` and the FINGERPRINT's CRC, where the
/// attributes' framing puts them; bytes that frame no such attribute are left alone.
fn re_sign(datagram: &mut [u8], key: &hmac::Key) {
    let mut offset = HEADER_LEN;
    let mut integrity = None;
    let mut fingerprint = None;
    while let Some(&[type_high, type_low, len_high, len_low]) = datagram.get(offset..offset + 4) {
        let attribute = u16::from_be_bytes([type_high, type_low]);
        let len = usize::from(u16::from_be_bytes([len_high, len_low]));
        match (attribute, len) {
            (MESSAGE_INTEGRITY, 20) if integrity.is_none() => integrity = Some(offset),
            (FINGERPRINT, 4) => fingerprint = Some(offset),
            _ => {}
        }
        offset += 4 + len.next_multiple_of(4);
    }
    if let Some(offset) = integrity.filter(|offset| offset + 24 <= datagram.len()) {
        let Ok(length) = u16::try_from(offset + 24 - HEADER_LEN) else { return };
        let mut context = hmac::Context::with_key(key);
        context.update(&datagram[..2]);
        context.update(&length.to_be_bytes());
        context.update(&datagram[4..offset]);
        datagram[offset + 4..offset + 24].copy_from_slice(context.sign().as_ref());
    }
    if let Some(offset) = fingerprint.filter(|offset| offset + 8 <= datagram.len()) {
        let value = crc32(&datagram[..offset]) ^ FINGERPRINT_XOR;
        datagram[offset + 4..offset + 8].copy_from_slice(&value.to_be_bytes());
    }
}

fn key() -> &'static hmac::Key {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, SFU_PWD.as_bytes()))
}

/// Checks an authenticated response the agent wrote to `request`.
fn check_response(response: &[u8], request: &[u8], from: SocketAddr, error_code: Option<u16>) {
    assert!(response.len() <= MAX_RESPONSE_LEN);
    let mut transaction_id = [0u8; 12];
    transaction_id.copy_from_slice(&request[8..HEADER_LEN]);
    let read = parse_binding_response(response, transaction_id, &sfu());
    match error_code {
        None => assert_eq!(read, Ok(SocketAddr::new(from.ip().to_canonical(), from.port()))),
        Some(code) => assert_eq!(read, Err(IceError::ErrorResponse { code })),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = start();
    let mut agent = IceLiteAgent::new(sfu(), browser(), now);
    let mut rest = data;
    while let [step, flags, high, low, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        let mut datagram = tail[..len].to_vec();
        rest = &tail[len..];
        now += Duration::from_millis(200) * u32::from(*step);
        if flags & 0x80 != 0 {
            re_sign(&mut datagram, key());
        }
        let from = sender(*flags);
        let (selected, deadline, expired) = (agent.selected(), agent.poll_timeout(), agent.is_expired(now));
        let mut response = [0xEEu8; 2 * MAX_RESPONSE_LEN];
        let outcome = agent.handle_stun(&datagram, from, now, &mut response);
        let unchanged = |agent: &IceLiteAgent| agent.selected() == selected && agent.poll_timeout() == deadline;
        if expired {
            assert_eq!(outcome, Err(IceError::ConsentExpired));
        }
        let authenticated = match outcome {
            Err(_) => {
                assert!(response.iter().all(|&b| b == 0xEE), "a refused datagram wrote a response");
                assert!(unchanged(&agent), "a refused datagram changed the agent");
                false
            }
            Ok(StunOutcome::Keepalive) => {
                assert!(unchanged(&agent), "a keepalive changed the agent");
                false
            }
            Ok(StunOutcome::CheckAccepted { response_len, became_selected }) => {
                check_response(&response[..response_len], &datagram, from, None);
                assert!(agent.selected() == selected || agent.selected() == Some(from));
                assert_eq!(became_selected, selected != Some(from) && agent.selected() == Some(from));
                true
            }
            Ok(StunOutcome::RoleConflict { response_len }) => {
                check_response(&response[..response_len], &datagram, from, Some(487));
                assert!(unchanged(&agent), "a refused check changed the agent");
                true
            }
            Ok(StunOutcome::UnknownAttributes { response_len }) => {
                check_response(&response[..response_len], &datagram, from, Some(420));
                assert!(unchanged(&agent), "a refused check changed the agent");
                true
            }
        };
        if authenticated {
            assert_eq!(local_ufrag_of(&datagram), Some(SFU_UFRAG), "the router would not find this agent");
        }
    }
});
