//! RFC 5769 test vectors §2.1 (request), §2.2 (IPv4 response) and §2.3 (IPv6 response),
//! typed in from the RFC's text. Their MESSAGE-INTEGRITY and FINGERPRINT cover every other
//! byte, so a typo anywhere in a vector would fail its own checks. §2.4 uses long-term
//! credentials, which ICE does not.

use std::net::SocketAddr;

use stun_rs::MessageClass;
use stun_rs::attributes::ice::{IceControlled, Priority};
use stun_rs::attributes::stun::{ErrorCode, Software, UserName, XorMappedAddress};

use super::client::parse_binding_response;
use super::credentials::{IceCredentials, ShortTermKey};
use super::encode;
use super::message::{MessageKind, StunView};
use super::tests::decode_verified;
use super::{IceLiteAgent, StunOutcome, local_ufrag_of};

const PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
const TRANSACTION_ID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

/// RFC 5769 §2.1: a Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME
/// "evtj:h6vY", MESSAGE-INTEGRITY and FINGERPRINT. Padding bytes are spaces, as in the RFC.
#[rustfmt::skip]
const SAMPLE_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, // Request type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x10, // SOFTWARE attribute header
    0x53, 0x54, 0x55, 0x4e, // }
    0x20, 0x74, 0x65, 0x73, // }  User-agent...
    0x74, 0x20, 0x63, 0x6c, // }  ...name
    0x69, 0x65, 0x6e, 0x74, // }
    0x00, 0x24, 0x00, 0x04, // PRIORITY attribute header
    0x6e, 0x00, 0x01, 0xff, // ICE priority value
    0x80, 0x29, 0x00, 0x08, // ICE-CONTROLLED attribute header
    0x93, 0x2f, 0xf9, 0xb1, // }  Pseudo-random tie breaker...
    0x51, 0x26, 0x3b, 0x36, // }   ...for ICE control
    0x00, 0x06, 0x00, 0x09, // USERNAME attribute header
    0x65, 0x76, 0x74, 0x6a, // }
    0x3a, 0x68, 0x36, 0x76, // }  Username (9 bytes) and padding (3 bytes)
    0x59, 0x20, 0x20, 0x20, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0x9a, 0xea, 0xa7, 0x0c, // }
    0xbf, 0xd8, 0xcb, 0x56, // }
    0x78, 0x1e, 0xf2, 0xb5, // }  HMAC-SHA1 fingerprint
    0xb2, 0xd3, 0xf2, 0x49, // }
    0xc1, 0xb5, 0x71, 0xa2, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xe5, 0x7a, 0x3b, 0xcf, // CRC32 fingerprint
];

/// RFC 5769 §2.2: a Binding success response with SOFTWARE "test vector" and
/// XOR-MAPPED-ADDRESS 192.0.2.1:32853.
#[rustfmt::skip]
const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, // Response type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x08, // XOR-MAPPED-ADDRESS attribute header
    0x00, 0x01, 0xa1, 0x47, // Address family (IPv4) and xor'd mapped port number
    0xe1, 0x12, 0xa6, 0x43, // Xor'd mapped IPv4 address
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0x2b, 0x91, 0xf5, 0x99, // }
    0xfd, 0x9e, 0x90, 0xc3, // }
    0x8c, 0x74, 0x89, 0xf9, // }  HMAC-SHA1 fingerprint
    0x2a, 0xf9, 0xba, 0x53, // }
    0xf0, 0x6b, 0xe7, 0xd7, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xc0, 0x7d, 0x4c, 0x96, // CRC32 fingerprint
];

/// RFC 5769 §2.3: as §2.2, with XOR-MAPPED-ADDRESS
/// [2001:db8:1234:5678:11:2233:4455:6677]:32853.
#[rustfmt::skip]
const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, // Response type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x14, // XOR-MAPPED-ADDRESS attribute header
    0x00, 0x02, 0xa1, 0x47, // Address family (IPv6) and xor'd mapped port number
    0x01, 0x13, 0xa9, 0xfa, // }
    0xa5, 0xd3, 0xf1, 0x79, // }  Xor'd mapped IPv6 address
    0xbc, 0x25, 0xf4, 0xb5, // }
    0xbe, 0xd2, 0xb9, 0xd9, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0xa3, 0x82, 0x95, 0x4e, // }
    0x4b, 0xe6, 0x7b, 0xf1, // }
    0x17, 0x84, 0xc9, 0x7c, // }  HMAC-SHA1 fingerprint
    0x82, 0x92, 0xc2, 0x75, // }
    0xbf, 0xe3, 0xed, 0x41, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xc8, 0xfb, 0x0b, 0x4c, // CRC32 fingerprint
];

/// Where XOR-MAPPED-ADDRESS sits: after SOFTWARE in the vectors, first in our responses.
const VECTOR_XOR_MAPPED_ADDRESS_OFFSET: usize = 36;
const OUR_XOR_MAPPED_ADDRESS_OFFSET: usize = 20;

fn vector_credentials() -> IceCredentials {
    IceCredentials::new("evtj", PASSWORD).unwrap()
}

fn vector_key() -> ShortTermKey {
    ShortTermKey::new(&vector_credentials())
}

fn ipv4_mapped_address() -> SocketAddr {
    "192.0.2.1:32853".parse().unwrap()
}

fn ipv6_mapped_address() -> SocketAddr {
    "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap()
}

#[test]
fn sample_request_authenticates_under_its_password() {
    let request = StunView::parse(&SAMPLE_REQUEST).unwrap();
    assert_eq!(request.kind(), MessageKind::BindingRequest);
    assert_eq!(request.transaction_id(), TRANSACTION_ID);
    assert_eq!(request.username(), Some(&b"evtj:h6vY"[..]));
    assert!(request.claims_controlled());
    assert!(!request.use_candidate());
    request.verify_fingerprint().unwrap();
    request.verify_integrity(&vector_key()).unwrap();
    let other_key = ShortTermKey::new(&IceCredentials::new("evtj", "VOkJxbRl1RmTxUk/WvJxBT").unwrap());
    assert_eq!(request.verify_integrity(&other_key), Err(super::IceError::BadIntegrity));
    assert_eq!(local_ufrag_of(&SAMPLE_REQUEST), Some("evtj"));

    // The fields this module does not read, through stun-rs's decoder (which also checks
    // integrity and fingerprint on its own).
    let decoded = decode_verified(&SAMPLE_REQUEST, PASSWORD);
    assert_eq!(decoded.class(), MessageClass::Request);
    assert_eq!(decoded.get::<Software>().unwrap().expect_software().as_str(), "STUN test client");
    assert_eq!(decoded.get::<Priority>().unwrap().expect_priority().as_u32(), 0x6e00_01ff);
    assert_eq!(decoded.get::<IceControlled>().unwrap().expect_ice_controlled().as_u64(), 0x932f_f9b1_5126_3b36);
    assert_eq!(decoded.get::<UserName>().unwrap().expect_user_name().as_str(), "evtj:h6vY");
}

/// The sample request comes from an agent claiming the controlled role, which a lite agent
/// cannot yield: it gets an authenticated 487.
#[test]
fn sample_request_is_answered_with_role_conflict() {
    let now = std::time::Instant::now();
    let remote = IceCredentials::new("h6vY", "RemotePasswordNotUsed+/").unwrap();
    let mut agent = IceLiteAgent::new(vector_credentials(), remote, now);
    let mut response = [0; super::MAX_RESPONSE_LEN];
    let outcome = agent.handle_stun(&SAMPLE_REQUEST, ipv4_mapped_address(), now, &mut response).unwrap();
    let StunOutcome::RoleConflict { response_len } = outcome else {
        panic!("expected a role conflict, got {outcome:?}")
    };

    let decoded = decode_verified(&response[..response_len], PASSWORD);
    assert_eq!(decoded.class(), MessageClass::ErrorResponse);
    assert_eq!(decoded.transaction_id().as_bytes(), &TRANSACTION_ID);
    assert_eq!(decoded.get::<ErrorCode>().unwrap().expect_error_code().error_code().error_code(), 487);
    assert_eq!(agent.selected(), None);
}

#[test]
fn sample_ipv4_response_verifies_and_decodes() {
    check_vector_response(&SAMPLE_IPV4_RESPONSE, ipv4_mapped_address());
}

#[test]
fn sample_ipv6_response_verifies_and_decodes() {
    check_vector_response(&SAMPLE_IPV6_RESPONSE, ipv6_mapped_address());
}

fn check_vector_response(vector: &[u8], mapped: SocketAddr) {
    let response = StunView::parse(vector).unwrap();
    assert_eq!(response.kind(), MessageKind::BindingSuccess);
    assert_eq!(response.transaction_id(), TRANSACTION_ID);
    response.verify_fingerprint().unwrap();
    response.verify_integrity(&vector_key()).unwrap();
    assert_eq!(response.xor_mapped_address(), Some(mapped));
    assert_eq!(parse_binding_response(vector, TRANSACTION_ID, &vector_credentials()), Ok(mapped));
    let decoded = decode_verified(vector, PASSWORD);
    assert_eq!(decoded.get::<Software>().unwrap().expect_software().as_str(), "test vector");
}

#[test]
fn our_ipv4_response_encodes_the_vector_address_identically() {
    check_our_response(&SAMPLE_IPV4_RESPONSE, ipv4_mapped_address(), 12);
}

#[test]
fn our_ipv6_response_encodes_the_vector_address_identically() {
    check_our_response(&SAMPLE_IPV6_RESPONSE, ipv6_mapped_address(), 24);
}

/// Our response for the vector's transaction and address: the same header type and
/// transaction id, the same XOR-MAPPED-ADDRESS bytes, and MESSAGE-INTEGRITY and FINGERPRINT
/// that both our verifier (proven on the vectors above) and stun-rs accept. The vectors'
/// own HMAC and CRC bytes cannot be reproduced: they also cover a SOFTWARE attribute we do
/// not send.
fn check_our_response(vector: &[u8], mapped: SocketAddr, xor_mapped_address_len: usize) {
    let mut response = [0; super::MAX_RESPONSE_LEN];
    let len = encode::binding_success(TRANSACTION_ID, mapped, &vector_key(), &mut response).unwrap();
    let ours = &response[..len];
    assert_eq!(len, 20 + xor_mapped_address_len + 24 + 8);
    assert_eq!(ours[..2], vector[..2]);
    assert_eq!(ours[4..20], vector[4..20]);
    assert_eq!(
        ours[OUR_XOR_MAPPED_ADDRESS_OFFSET..][..xor_mapped_address_len],
        vector[VECTOR_XOR_MAPPED_ADDRESS_OFFSET..][..xor_mapped_address_len]
    );
    assert_eq!(parse_binding_response(ours, TRANSACTION_ID, &vector_credentials()), Ok(mapped));
    let decoded = decode_verified(ours, PASSWORD);
    assert_eq!(decoded.get::<XorMappedAddress>().unwrap().expect_xor_mapped_address().socket_address(), &mapped);
}
