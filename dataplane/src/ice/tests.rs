//! The agent against checks built as a browser builds them (with stun-rs, an independent
//! encoder), the client helper against the agent, and every way a datagram can be wrong.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stun_rs::attributes::ice::{IceControlled, IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MessageIntegrity, UnknownAttributes, UserName, XorMappedAddress,
};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunAttribute,
    StunMessage, StunMessageBuilder, TransactionId,
};

use super::client::{build_binding_request, parse_binding_response};
use super::*;

const SFU_UFRAG: &str = "SfuUfrag";
const SFU_PWD: &str = "SfuPassword0123456789+/";
const BROWSER_UFRAG: &str = "BrowserUfrag";
const BROWSER_PWD: &str = "BrowserPassword0123456789";
/// The USERNAME a browser puts in its checks to the SFU: the receiver's ufrag first.
const BROWSER_USERNAME: &str = "SfuUfrag:BrowserUfrag";
const TRANSACTION_ID: [u8; 12] = *b"browser-tx01";
const TIE_BREAKER: u64 = 0x0123_4567_89ab_cdef;
/// What the agent must leave in a response buffer it does not answer into.
const UNTOUCHED: u8 = 0xA5;

fn sfu() -> IceCredentials {
    IceCredentials::new(SFU_UFRAG, SFU_PWD).unwrap()
}

fn browser() -> IceCredentials {
    IceCredentials::new(BROWSER_UFRAG, BROWSER_PWD).unwrap()
}

fn agent(now: Instant) -> IceLiteAgent {
    IceLiteAgent::new(sfu(), browser(), now)
}

fn browser_v4() -> SocketAddr {
    "203.0.113.7:50000".parse().unwrap()
}

fn browser_v6() -> SocketAddr {
    "[2001:db8::7]:50001".parse().unwrap()
}

/// Decodes with stun-rs, which checks MESSAGE-INTEGRITY under `pwd` and FINGERPRINT, and
/// insists both are there (stun-rs checks only the ones present).
pub(super) fn decode_verified(datagram: &[u8], pwd: &str) -> StunMessage {
    let context =
        DecoderContextBuilder::default().with_key(HMACKey::new_short_term(pwd).unwrap()).with_validation().build();
    let (message, len) = MessageDecoderBuilder::default().with_context(context).build().decode(datagram).unwrap();
    assert_eq!(len, datagram.len());
    assert!(message.get::<MessageIntegrity>().is_some(), "no MESSAGE-INTEGRITY");
    assert!(message.get::<Fingerprint>().is_some(), "no FINGERPRINT");
    message
}

fn encode_with_stun_rs(class: MessageClass, attributes: Vec<StunAttribute>) -> Vec<u8> {
    let message = attributes
        .into_iter()
        .fold(
            StunMessageBuilder::new(BINDING, class).with_transaction_id(TransactionId::from(TRANSACTION_ID)),
            StunMessageBuilder::with_attribute,
        )
        .build();
    let mut buf = vec![0; 1024];
    let len = MessageEncoderBuilder::default().build().encode(&mut buf, &message).unwrap();
    buf.truncate(len);
    buf
}

fn integrity(pwd: &str) -> StunAttribute {
    MessageIntegrity::new(HMACKey::new_short_term(pwd).unwrap()).into()
}

/// A check as Chrome sends it to an ICE-lite answerer.
fn browser_check(username: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
    let mut attributes: Vec<StunAttribute> = vec![
        UserName::new(username).unwrap().into(),
        Priority::new(0x6e7f_1eff).into(),
        IceControlling::new(TIE_BREAKER).into(),
    ];
    if use_candidate {
        attributes.push(UseCandidate::default().into());
    }
    attributes.extend([integrity(pwd), Fingerprint::default().into()]);
    encode_with_stun_rs(MessageClass::Request, attributes)
}

fn valid_check(use_candidate: bool) -> Vec<u8> {
    browser_check(BROWSER_USERNAME, SFU_PWD, use_candidate)
}

/// Feeds `datagram` and checks the refusal contract: an error, nothing written, nothing
/// changed.
fn assert_refused(agent: &mut IceLiteAgent, datagram: &[u8], now: Instant) -> IceError {
    let (selected, deadline) = (agent.selected(), agent.poll_timeout());
    let mut response = [UNTOUCHED; 2 * MAX_RESPONSE_LEN];
    let error = match agent.handle_stun(datagram, browser_v4(), now, &mut response) {
        Err(error) => error,
        Ok(outcome) => panic!("accepted {datagram:02x?}: {outcome:?}"),
    };
    assert!(response.iter().all(|&byte| byte == UNTOUCHED), "{error:?} wrote a response");
    assert_eq!((agent.selected(), agent.poll_timeout()), (selected, deadline));
    error
}

/// Feeds a check that must be accepted; returns the response and `became_selected`.
fn accept(agent: &mut IceLiteAgent, datagram: &[u8], from: SocketAddr, now: Instant) -> (Vec<u8>, bool) {
    let mut response = [0; MAX_RESPONSE_LEN];
    match agent.handle_stun(datagram, from, now, &mut response) {
        Ok(StunOutcome::CheckAccepted { response_len, became_selected }) => {
            (response[..response_len].to_vec(), became_selected)
        }
        other => panic!("check not accepted: {other:?}"),
    }
}

#[test]
fn browser_check_from_ipv4_is_answered_and_nominates() {
    check_round_trip(browser_v4());
}

#[test]
fn browser_check_from_ipv6_is_answered_and_nominates() {
    let response_len = check_round_trip(browser_v6());
    assert_eq!(response_len, 76, "the IPv6 success response, the longest but the 420");
}

fn check_round_trip(from: SocketAddr) -> usize {
    let now = Instant::now();
    let mut agent = agent(now);
    let (response, became_selected) = accept(&mut agent, &valid_check(true), from, now);
    assert!(became_selected);
    assert_eq!(agent.selected(), Some(from));

    let decoded = decode_verified(&response, SFU_PWD);
    assert_eq!(decoded.method(), BINDING);
    assert_eq!(decoded.class(), MessageClass::SuccessResponse);
    assert_eq!(decoded.transaction_id().as_bytes(), &TRANSACTION_ID);
    assert_eq!(decoded.get::<XorMappedAddress>().unwrap().expect_xor_mapped_address().socket_address(), &from);
    response.len()
}

#[test]
fn ipv4_peer_on_a_dual_stack_socket_sees_its_ipv4_address() {
    let now = Instant::now();
    let mut agent = agent(now);
    let from: SocketAddr = "[::ffff:203.0.113.7]:50000".parse().unwrap();
    let (response, _) = accept(&mut agent, &valid_check(true), from, now);
    let decoded = decode_verified(&response, SFU_PWD);
    assert_eq!(decoded.get::<XorMappedAddress>().unwrap().expect_xor_mapped_address().socket_address(), &browser_v4());
    // Media still goes out through the socket's own form of the address.
    assert_eq!(agent.selected(), Some(from));
}

#[test]
fn client_helper_round_trip() {
    let now = Instant::now();
    let mut agent = agent(now);
    let mut request = [0; 256];
    let len = build_binding_request(&browser(), &sfu(), true, TIE_BREAKER, TRANSACTION_ID, &mut request).unwrap();

    let decoded = decode_verified(&request[..len], SFU_PWD);
    assert_eq!(decoded.class(), MessageClass::Request);
    assert_eq!(decoded.get::<UserName>().unwrap().expect_user_name().as_str(), BROWSER_USERNAME);
    assert_eq!(decoded.get::<IceControlling>().unwrap().expect_ice_controlling().as_u64(), TIE_BREAKER);
    assert!(decoded.get::<Priority>().is_some());
    assert!(decoded.get::<UseCandidate>().is_some());

    let (response, became_selected) = accept(&mut agent, &request[..len], browser_v6(), now);
    assert!(became_selected);
    assert_eq!(parse_binding_response(&response, TRANSACTION_ID, &sfu()), Ok(browser_v6()));
}

#[test]
fn client_helper_without_use_candidate_does_not_nominate() {
    let now = Instant::now();
    let mut agent = agent(now);
    let mut request = [0; 256];
    let len = build_binding_request(&browser(), &sfu(), false, TIE_BREAKER, TRANSACTION_ID, &mut request).unwrap();
    assert!(decode_verified(&request[..len], SFU_PWD).get::<UseCandidate>().is_none());
    let (response, became_selected) = accept(&mut agent, &request[..len], browser_v4(), now);
    assert!(!became_selected);
    assert_eq!(agent.selected(), None);
    assert_eq!(parse_binding_response(&response, TRANSACTION_ID, &sfu()), Ok(browser_v4()));
}

#[test]
fn client_helper_refuses_what_it_did_not_ask_for() {
    let now = Instant::now();
    let (response, _) = accept(&mut agent(now), &valid_check(false), browser_v4(), now);
    assert_eq!(parse_binding_response(&response, *b"other-tx-id0", &sfu()), Err(IceError::UnexpectedMessage));
    let wrong_pwd = IceCredentials::new(SFU_UFRAG, "NotTheSfuPassword012345").unwrap();
    assert_eq!(parse_binding_response(&response, TRANSACTION_ID, &wrong_pwd), Err(IceError::BadIntegrity));
    assert_eq!(parse_binding_response(&valid_check(false), TRANSACTION_ID, &sfu()), Err(IceError::UnexpectedMessage));
    let mut truncated = response.clone();
    truncated.pop();
    assert_eq!(parse_binding_response(&truncated, TRANSACTION_ID, &sfu()), Err(IceError::Malformed));
}

#[test]
fn client_helper_needs_room() {
    let mut request = [0; 256];
    let len = build_binding_request(&browser(), &sfu(), true, TIE_BREAKER, TRANSACTION_ID, &mut request).unwrap();
    for short in 0..len {
        let result =
            build_binding_request(&browser(), &sfu(), true, TIE_BREAKER, TRANSACTION_ID, &mut request[..short]);
        assert_eq!(result, Err(IceError::BufferTooSmall), "buffer of {short}");
    }
}

#[test]
fn controlled_claim_gets_authenticated_role_conflict() {
    let now = Instant::now();
    let mut agent = agent(now);
    let check = encode_with_stun_rs(
        MessageClass::Request,
        vec![
            UserName::new(BROWSER_USERNAME).unwrap().into(),
            Priority::new(0x6e7f_1eff).into(),
            IceControlled::new(TIE_BREAKER).into(),
            UseCandidate::default().into(),
            integrity(SFU_PWD),
            Fingerprint::default().into(),
        ],
    );
    let mut response = [0; MAX_RESPONSE_LEN];
    let later = now + Duration::from_secs(10);
    let outcome = agent.handle_stun(&check, browser_v4(), later, &mut response).unwrap();
    let StunOutcome::RoleConflict { response_len } = outcome else {
        panic!("expected a role conflict, got {outcome:?}")
    };

    let decoded = decode_verified(&response[..response_len], SFU_PWD);
    assert_eq!(decoded.class(), MessageClass::ErrorResponse);
    assert_eq!(decoded.transaction_id().as_bytes(), &TRANSACTION_ID);
    assert_eq!(decoded.get::<ErrorCode>().unwrap().expect_error_code().error_code().error_code(), 487);
    assert_eq!(
        parse_binding_response(&response[..response_len], TRANSACTION_ID, &sfu()),
        Err(IceError::ErrorResponse { code: 487 })
    );
    // Neither nominated nor consented: the request was refused.
    assert_eq!(agent.selected(), None);
    assert_eq!(agent.poll_timeout(), now + CONSENT_LIFETIME);
}

/// The attributes of `valid_check(true)` up to MESSAGE-INTEGRITY.
fn nominating_check_attributes() -> Vec<StunAttribute> {
    vec![
        UserName::new(BROWSER_USERNAME).unwrap().into(),
        Priority::new(0x6e7f_1eff).into(),
        IceControlling::new(TIE_BREAKER).into(),
        UseCandidate::default().into(),
    ]
}

/// A Binding request of `attributes`, then attributes of `extra_types` (4-byte values),
/// MESSAGE-INTEGRITY under `pwd` and FINGERPRINT. stun-rs encodes only the types it knows,
/// so each extra one is written as a PRIORITY with a marker value, then retyped, and
/// MESSAGE-INTEGRITY and FINGERPRINT are computed again.
fn check_with_extra_attributes(mut attributes: Vec<StunAttribute>, extra_types: &[u16], pwd: &str) -> Vec<u8> {
    const MARKER: u32 = 0xEEEE_EEEE;
    attributes.extend(extra_types.iter().map(|_| StunAttribute::from(Priority::new(MARKER))));
    attributes.extend([integrity(pwd), Fingerprint::default().into()]);
    let mut check = encode_with_stun_rs(MessageClass::Request, attributes);

    let stand_in = [&0x0024u16.to_be_bytes()[..], &4u16.to_be_bytes(), &MARKER.to_be_bytes()].concat();
    let mut extra_types = extra_types.iter();
    let mut offset = 20;
    while offset < check.len() {
        if check[offset..].starts_with(&stand_in) {
            check[offset..offset + 2].copy_from_slice(&extra_types.next().unwrap().to_be_bytes());
        }
        let value_len = usize::from(u16::from_be_bytes([check[offset + 2], check[offset + 3]]));
        offset += 4 + value_len.next_multiple_of(4);
    }
    assert!(extra_types.next().is_none(), "every extra attribute was written");

    // MESSAGE-INTEGRITY (24 bytes) and FINGERPRINT (8) end the message. The HMAC covers the
    // header with a length that ends at MESSAGE-INTEGRITY (RFC 5389 §15.4).
    let fingerprint_at = check.len() - 8;
    let integrity_at = fingerprint_at - 24;
    let mut signed = check[..integrity_at].to_vec();
    signed[2..4].copy_from_slice(&u16::try_from(fingerprint_at - 20).unwrap().to_be_bytes());
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes()), &signed);
    check[integrity_at + 4..fingerprint_at].copy_from_slice(tag.as_ref());
    refresh_fingerprint(&mut check);
    check
}

/// Recomputes the FINGERPRINT that ends `datagram` (RFC 5389 §15.5: the CRC-32 of
/// everything before it, XORed with "STUN"). Anyone can, as it takes no key.
fn refresh_fingerprint(datagram: &mut [u8]) {
    let value_at = datagram.len() - 4;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&datagram[..value_at - 4]);
    datagram[value_at..].copy_from_slice(&(crc ^ 0x5354_554E).to_be_bytes());
}

/// Feeds a check that must be refused with a 420; returns the UNKNOWN-ATTRIBUTES it lists
/// and the response's length, after checking that the response is authenticated and
/// answers this transaction, and that the agent is unchanged.
fn unknown_attributes_answer(check: &[u8]) -> (Vec<u16>, usize) {
    let created = Instant::now();
    let mut agent = agent(created);
    let later = created + Duration::from_secs(10);
    let mut response = [0; MAX_RESPONSE_LEN];
    let outcome = agent.handle_stun(check, browser_v4(), later, &mut response).unwrap();
    let StunOutcome::UnknownAttributes { response_len } = outcome else { panic!("expected a 420, got {outcome:?}") };
    let response = &response[..response_len];

    let decoded = decode_verified(response, SFU_PWD);
    assert_eq!(decoded.method(), BINDING);
    assert_eq!(decoded.class(), MessageClass::ErrorResponse);
    assert_eq!(decoded.transaction_id().as_bytes(), &TRANSACTION_ID);
    assert_eq!(decoded.get::<ErrorCode>().unwrap().expect_error_code().error_code().error_code(), 420);
    assert_eq!(parse_binding_response(response, TRANSACTION_ID, &sfu()), Err(IceError::ErrorResponse { code: 420 }));
    // Not processed: nothing is nominated, and consent runs out when it would have without
    // the check.
    assert_eq!(agent.selected(), None);
    assert_eq!(agent.poll_timeout(), created + CONSENT_LIFETIME);
    let listed = decoded.get::<UnknownAttributes>().unwrap().expect_unknown_attributes().attributes().to_vec();
    (listed, response_len)
}

#[test]
fn unknown_comprehension_required_attribute_gets_authenticated_420() {
    let check = check_with_extra_attributes(nominating_check_attributes(), &[0x0042], SFU_PWD);
    // The check itself is sound: stun-rs verifies what the helper signed.
    decode_verified(&check, SFU_PWD);
    let (listed, _) = unknown_attributes_answer(&check);
    assert_eq!(listed, [0x0042]);
}

#[test]
fn unknown_comprehension_optional_attribute_is_ignored() {
    let now = Instant::now();
    let mut agent = agent(now);
    let check = check_with_extra_attributes(nominating_check_attributes(), &[0x8042], SFU_PWD);
    let (response, became_selected) = accept(&mut agent, &check, browser_v4(), now);
    assert!(became_selected);
    assert_eq!(agent.selected(), Some(browser_v4()));
    assert_eq!(parse_binding_response(&response, TRANSACTION_ID, &sfu()), Ok(browser_v4()));
}

/// Without valid integrity a check with unknown attributes is dropped like any other, so
/// no one can make us answer an address they forged.
#[test]
fn unknown_attribute_with_bad_integrity_is_not_answered() {
    let now = Instant::now();
    let mut agent = agent(now);
    for pwd in [BROWSER_PWD, "SfuPassword0123456789+X"] {
        let check = check_with_extra_attributes(nominating_check_attributes(), &[0x0042], pwd);
        assert_eq!(assert_refused(&mut agent, &check, now), IceError::BadIntegrity, "pwd {pwd}");
    }
}

/// The list names each type once, in order, and stops at `MAX_UNKNOWN_ATTRIBUTES`; the
/// longest 420 is what `MAX_RESPONSE_LEN` makes room for. Comprehension-optional types are
/// not listed.
#[test]
fn unknown_attributes_are_listed_once_and_bounded() {
    let extra_types = [0x0042, 0x8042, 0x0042, 0x7FFF, 0x0043, 0x0044, 0x0045];
    let check = check_with_extra_attributes(nominating_check_attributes(), &extra_types, SFU_PWD);
    let (listed, response_len) = unknown_attributes_answer(&check);
    assert_eq!(listed, [0x0042, 0x7FFF, 0x0043, 0x0044]);
    assert_eq!(response_len, MAX_RESPONSE_LEN);
}

/// A check refused for its attributes is not looked at further: no 487 for its role.
#[test]
fn unknown_attributes_are_answered_before_a_role_conflict() {
    let attributes = vec![UserName::new(BROWSER_USERNAME).unwrap().into(), IceControlled::new(TIE_BREAKER).into()];
    let (listed, _) = unknown_attributes_answer(&check_with_extra_attributes(attributes, &[0x0042], SFU_PWD));
    assert_eq!(listed, [0x0042]);
}

/// Anyone on the path can append an attribute after MESSAGE-INTEGRITY and recompute the
/// unkeyed FINGERPRINT; an unknown one there must not turn an accepted check into a 420.
#[test]
fn unknown_attribute_after_integrity_is_ignored() {
    let now = Instant::now();
    let mut agent = agent(now);
    let check = valid_check(true);
    let fingerprint_at = check.len() - 8;
    let mut appended =
        [&check[..fingerprint_at], &[0x00, 0x42, 0x00, 0x04, 0, 0, 0, 0], &check[fingerprint_at..]].concat();
    let length = u16::try_from(appended.len() - 20).unwrap();
    appended[2..4].copy_from_slice(&length.to_be_bytes());
    refresh_fingerprint(&mut appended);
    let (_, became_selected) = accept(&mut agent, &appended, browser_v4(), now);
    assert!(became_selected);
}

#[test]
fn wrong_password_is_bad_integrity() {
    let now = Instant::now();
    let mut agent = agent(now);
    for pwd in [BROWSER_PWD, "SfuPassword0123456789+X", "SfuPassword0123456789+"] {
        let check = browser_check(BROWSER_USERNAME, pwd, true);
        assert_eq!(assert_refused(&mut agent, &check, now), IceError::BadIntegrity, "pwd {pwd}");
    }
}

#[test]
fn other_ufrags_are_unknown() {
    let now = Instant::now();
    let mut agent = agent(now);
    let usernames = [
        "BrowserUfrag:SfuUfrag",
        "OtherUfrag:BrowserUfrag",
        "SfuUfrag:OtherUfrag",
        "SfuUfragX:BrowserUfrag",
        "SfuUfrag:BrowserUfragX",
        "SfuUfrag:BrowserUfra",
        "SfuUfrag",
        "SfuUfrag:",
        ":BrowserUfrag",
        "SfuUfragBrowserUfrag",
    ];
    for username in usernames {
        let check = browser_check(username, SFU_PWD, true);
        assert_eq!(assert_refused(&mut agent, &check, now), IceError::UnknownUfrag, "USERNAME {username}");
    }
}

#[test]
fn missing_attributes_are_refused() {
    let now = Instant::now();
    let mut agent = agent(now);
    let username: StunAttribute = UserName::new(BROWSER_USERNAME).unwrap().into();
    let without_username =
        encode_with_stun_rs(MessageClass::Request, vec![integrity(SFU_PWD), Fingerprint::default().into()]);
    assert_eq!(assert_refused(&mut agent, &without_username, now), IceError::UnknownUfrag);
    let without_integrity =
        encode_with_stun_rs(MessageClass::Request, vec![username.clone(), Fingerprint::default().into()]);
    assert_eq!(assert_refused(&mut agent, &without_integrity, now), IceError::BadIntegrity);
    let without_fingerprint = encode_with_stun_rs(MessageClass::Request, vec![username, integrity(SFU_PWD)]);
    assert_eq!(assert_refused(&mut agent, &without_fingerprint, now), IceError::BadFingerprint);
}

/// Anyone on the path can append an attribute after MESSAGE-INTEGRITY and recompute the
/// unkeyed FINGERPRINT; such an attribute must not count.
#[test]
fn use_candidate_after_integrity_does_not_nominate() {
    let now = Instant::now();
    let mut agent = agent(now);
    let check = encode_with_stun_rs(
        MessageClass::Request,
        vec![
            UserName::new(BROWSER_USERNAME).unwrap().into(),
            IceControlling::new(TIE_BREAKER).into(),
            integrity(SFU_PWD),
            UseCandidate::default().into(),
            Fingerprint::default().into(),
        ],
    );
    let (_, became_selected) = accept(&mut agent, &check, browser_v4(), now);
    assert!(!became_selected);
    assert_eq!(agent.selected(), None);
}

#[test]
fn every_bit_flip_is_refused() {
    let now = Instant::now();
    let mut agent = agent(now);
    let check = valid_check(true);
    for index in 0..check.len() {
        for bit in 0..8 {
            let mut flipped = check.clone();
            flipped[index] ^= 1 << bit;
            assert_refused(&mut agent, &flipped, now);
        }
    }
}

#[test]
fn every_truncation_is_refused() {
    let now = Instant::now();
    let mut agent = agent(now);
    let check = valid_check(true);
    for len in 0..check.len() {
        assert_eq!(assert_refused(&mut agent, &check[..len], now), IceError::Malformed, "length {len}");
        assert_eq!(local_ufrag_of(&check[..len]), None);
    }
}

/// Random bytes, and random attribute lists behind a well-formed header, to reach every
/// branch of the parser.
#[test]
fn random_datagrams_are_refused() {
    let now = Instant::now();
    let mut agent = agent(now);
    let mut rng = StdRng::seed_from_u64(0x1ce_11fe);
    for _ in 0..20_000 {
        let datagram = if rng.random_bool(0.5) { random_bytes(&mut rng) } else { random_request(&mut rng) };
        assert_refused(&mut agent, &datagram, now);
        let _ = local_ufrag_of(&datagram);
        assert!(parse_binding_response(&datagram, TRANSACTION_ID, &sfu()).is_err());
    }
}

fn random_bytes(rng: &mut StdRng) -> Vec<u8> {
    let mut datagram = vec![0; rng.random_range(0..=120)];
    rng.fill(&mut datagram[..]);
    datagram
}

/// A Binding request header with a consistent length, then attributes of the types ICE reads
/// (and one it does not), with random lengths and values.
fn random_request(rng: &mut StdRng) -> Vec<u8> {
    const TYPES: [u16; 8] = [0x0006, 0x0008, 0x0009, 0x0020, 0x0025, 0x8028, 0x8029, 0x8022];
    let mut datagram = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    datagram.extend_from_slice(&TRANSACTION_ID);
    for _ in 0..rng.random_range(0..6) {
        let value_len: u16 = rng.random_range(0..=24);
        datagram.extend_from_slice(&TYPES[rng.random_range(0..TYPES.len())].to_be_bytes());
        datagram.extend_from_slice(&value_len.to_be_bytes());
        let mut value = vec![0; usize::from(value_len).next_multiple_of(4)];
        rng.fill(&mut value[..]);
        datagram.extend_from_slice(&value);
    }
    // Mostly consistent, sometimes off by a few bytes.
    let length = (datagram.len() - 20) as i64 + if rng.random_bool(0.8) { 0 } else { rng.random_range(-8..=8) };
    datagram[2..4].copy_from_slice(&(length.clamp(0, 0xFFFF) as u16).to_be_bytes());
    datagram
}

#[test]
fn responses_and_other_methods_are_unexpected() {
    let now = Instant::now();
    let mut agent = agent(now);
    let (response, _) = accept(&mut agent, &valid_check(false), browser_v4(), now);
    assert_eq!(assert_refused(&mut agent, &response, now), IceError::UnexpectedMessage);
    let mut allocate = valid_check(false);
    allocate[1] = 0x03; // TURN Allocate request
    assert_eq!(assert_refused(&mut agent, &allocate, now), IceError::UnexpectedMessage);
}

#[test]
fn binding_indication_is_a_keepalive_without_consent() {
    let now = Instant::now();
    let mut agent = agent(now);
    let indication = encode_with_stun_rs(MessageClass::Indication, vec![Fingerprint::default().into()]);
    let mut response = [UNTOUCHED; MAX_RESPONSE_LEN];
    let later = now + Duration::from_secs(20);
    assert_eq!(agent.handle_stun(&indication, browser_v4(), later, &mut response), Ok(StunOutcome::Keepalive));
    assert!(response.iter().all(|&byte| byte == UNTOUCHED));
    assert_eq!(agent.poll_timeout(), now + CONSENT_LIFETIME);

    let bare = encode_with_stun_rs(MessageClass::Indication, vec![]);
    assert_eq!(agent.handle_stun(&bare, browser_v4(), later, &mut response), Ok(StunOutcome::Keepalive));
    let mut corrupted = indication.clone();
    corrupted[10] ^= 1;
    assert_eq!(assert_refused(&mut agent, &corrupted, later), IceError::BadFingerprint);
}

#[test]
fn later_nomination_switches_the_selected_address() {
    let now = Instant::now();
    let mut agent = agent(now);
    assert!(!accept(&mut agent, &valid_check(false), browser_v4(), now).1);
    assert_eq!(agent.selected(), None);
    assert!(accept(&mut agent, &valid_check(true), browser_v4(), now).1);
    assert!(!accept(&mut agent, &valid_check(true), browser_v4(), now).1, "renominating the same address");
    assert!(!accept(&mut agent, &valid_check(false), browser_v6(), now).1);
    assert_eq!(agent.selected(), Some(browser_v4()));
    assert!(accept(&mut agent, &valid_check(true), browser_v6(), now).1);
    assert_eq!(agent.selected(), Some(browser_v6()));
}

#[test]
fn consent_lasts_30_seconds_after_a_check() {
    let created = Instant::now();
    let t0 = created + Duration::from_secs(5);
    let mut agent = agent(created);
    accept(&mut agent, &valid_check(true), browser_v4(), t0);
    assert_eq!(agent.poll_timeout(), t0 + Duration::from_secs(30));
    assert!(!agent.is_expired(t0 + Duration::from_secs(29)));
    assert!(agent.is_expired(t0 + Duration::from_secs(31)));
}

#[test]
fn consent_is_refreshed_by_a_later_check() {
    let t0 = Instant::now();
    let mut agent = agent(t0);
    accept(&mut agent, &valid_check(true), browser_v4(), t0);
    accept(&mut agent, &valid_check(true), browser_v4(), t0 + Duration::from_secs(20));
    assert!(!agent.is_expired(t0 + Duration::from_secs(31)));
    assert!(!agent.is_expired(t0 + Duration::from_secs(49)));
    assert!(agent.is_expired(t0 + Duration::from_secs(51)));
}

#[test]
fn consent_expires_when_no_check_ever_arrives() {
    let created = Instant::now();
    let agent = agent(created);
    assert_eq!(agent.poll_timeout(), created + CONSENT_LIFETIME);
    assert!(!agent.is_expired(created + Duration::from_secs(29)));
    assert!(agent.is_expired(created + CONSENT_LIFETIME));
}

#[test]
fn expired_consent_never_comes_back() {
    let t0 = Instant::now();
    let mut agent = agent(t0);
    accept(&mut agent, &valid_check(true), browser_v4(), t0);
    let late = t0 + Duration::from_secs(31);
    assert_eq!(assert_refused(&mut agent, &valid_check(true), late), IceError::ConsentExpired);
    assert!(agent.is_expired(late + Duration::from_secs(1)));
}

/// Consent is per 5-tuple: checks on another address do not keep media flowing to the
/// selected one.
#[test]
fn consent_follows_the_selected_address() {
    let t0 = Instant::now();
    let mut agent = agent(t0);
    accept(&mut agent, &valid_check(false), browser_v6(), t0);
    assert_eq!(agent.poll_timeout(), t0 + CONSENT_LIFETIME, "before nomination any check counts");
    accept(&mut agent, &valid_check(true), browser_v4(), t0 + Duration::from_secs(5));
    accept(&mut agent, &valid_check(false), browser_v6(), t0 + Duration::from_secs(20));
    assert_eq!(agent.poll_timeout(), t0 + Duration::from_secs(35));
    accept(&mut agent, &valid_check(false), browser_v4(), t0 + Duration::from_secs(25));
    assert_eq!(agent.poll_timeout(), t0 + Duration::from_secs(55));
}

#[test]
fn short_response_buffer_is_refused_before_anything_happens() {
    let now = Instant::now();
    let mut agent = agent(now);
    let mut response = [UNTOUCHED; MAX_RESPONSE_LEN - 1];
    assert_eq!(agent.handle_stun(&valid_check(true), browser_v6(), now, &mut response), Err(IceError::BufferTooSmall));
    assert!(response.iter().all(|&byte| byte == UNTOUCHED));
    assert_eq!(agent.selected(), None);
}

#[test]
fn local_ufrag_is_read_from_binding_requests_only() {
    assert_eq!(local_ufrag_of(&valid_check(true)), Some(SFU_UFRAG));
    assert_eq!(local_ufrag_of(&browser_check("SfuUfrag:", SFU_PWD, false)), Some(SFU_UFRAG));
    assert_eq!(local_ufrag_of(&browser_check(":BrowserUfrag", SFU_PWD, false)), None);
    assert_eq!(local_ufrag_of(&browser_check("SfuUfragBrowserUfrag", SFU_PWD, false)), None);
    let now = Instant::now();
    let (response, _) = accept(&mut agent(now), &valid_check(false), browser_v4(), now);
    assert_eq!(local_ufrag_of(&response), None);
    // RTP and a DTLS ClientHello, which share the socket (RFC 7983).
    assert_eq!(local_ufrag_of(&[0x80, 0x60, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    assert_eq!(local_ufrag_of(&[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20]), None);
}

#[test]
fn generated_credentials_are_random_ice_chars() {
    let first = IceCredentials::generate().unwrap();
    let second = IceCredentials::generate().unwrap();
    assert_eq!((first.ufrag().len(), first.pwd().len()), (8, 24));
    assert_ne!(first, second);
    for credentials in [&first, &second] {
        let chars = credentials.ufrag().chars().chain(credentials.pwd().chars());
        assert!(chars.into_iter().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'));
        // What the SDP answer will carry must come back through the parser unchanged.
        assert_eq!(IceCredentials::new(credentials.ufrag(), credentials.pwd()).as_ref(), Ok(credentials));
    }
}

#[test]
fn credentials_outside_the_grammar_are_refused() {
    let long = "a".repeat(257);
    for (ufrag, pwd) in [
        ("abc", SFU_PWD),
        (long.as_str(), SFU_PWD),
        ("ab:c", SFU_PWD),
        ("abcd efg", SFU_PWD),
        ("ufrağ", SFU_PWD),
        (SFU_UFRAG, "tooShortPassword01234"),
        (SFU_UFRAG, long.as_str()),
        (SFU_UFRAG, "SfuPassword0123456789+="),
    ] {
        assert_eq!(IceCredentials::new(ufrag, pwd), Err(IceError::InvalidCredentials), "{ufrag:?} / {pwd:?}");
    }
    assert!(IceCredentials::new("abcd", "a".repeat(22)).is_ok());
    assert!(IceCredentials::new("a".repeat(256), "a".repeat(256)).is_ok());
}

#[test]
fn debug_output_never_shows_a_password() {
    let now = Instant::now();
    for shown in [format!("{:?}", sfu()), format!("{:?}", agent(now))] {
        assert!(shown.contains(SFU_UFRAG), "{shown}");
        assert!(!shown.contains(SFU_PWD), "{shown}");
        assert!(!shown.contains("83, 102, 117"), "key bytes in {shown}"); // "Sfu" as bytes
    }
}
