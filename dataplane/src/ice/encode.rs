//! The STUN messages this module sends, written with stun-rs's encoder. These run only for
//! checks that have already authenticated (or, for the client helper, once per check sent),
//! so the encoder's allocations (an attribute `Vec`, the HMAC output) are off the media path.

use std::net::SocketAddr;

#[cfg(any(test, feature = "test-support"))]
use stun_rs::attributes::ice::{IceControlling, Priority, UseCandidate};
#[cfg(any(test, feature = "test-support"))]
use stun_rs::attributes::stun::UserName;
use stun_rs::attributes::stun::{ErrorCode, Fingerprint, MessageIntegrity, UnknownAttributes, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageEncoderBuilder, StunMessage, StunMessageBuilder, TransactionId};

use super::IceError;
use super::credentials::ShortTermKey;
use super::message::TRANSACTION_ID_LEN;

/// A Binding success response (RFC 8445 §7.3.1.4): XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY
/// under the responder's password, FINGERPRINT.
pub(super) fn binding_success(
    transaction_id: [u8; TRANSACTION_ID_LEN],
    mapped: SocketAddr,
    key: &ShortTermKey,
    buf: &mut [u8],
) -> Result<usize, IceError> {
    // A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; the peer sent from an IPv4
    // address and must see that address, not an IPv6 one it never had.
    let mapped = SocketAddr::new(mapped.ip().to_canonical(), mapped.port());
    let message = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(TransactionId::from(transaction_id))
        .with_attribute(XorMappedAddress::from(mapped))
        .with_attribute(MessageIntegrity::new(key.signing().clone()))
        .with_attribute(Fingerprint::default())
        .build();
    encode(&message, buf)
}

/// A Binding error response 487 Role Conflict (RFC 8445 §7.3.1.1), authenticated like a
/// success response so the peer can trust it and switch roles.
pub(super) fn role_conflict(
    transaction_id: [u8; TRANSACTION_ID_LEN],
    key: &ShortTermKey,
    buf: &mut [u8],
) -> Result<usize, IceError> {
    error_response(transaction_id, 487, "Role Conflict", None, key, buf)
}

/// A Binding error response 420 Unknown Attribute (RFC 8489 §6.3.1.1) whose
/// UNKNOWN-ATTRIBUTES lists `unknown`, authenticated so the peer can trust that its request
/// was refused rather than lost.
pub(super) fn unknown_attributes(
    transaction_id: [u8; TRANSACTION_ID_LEN],
    unknown: &[u16],
    key: &ShortTermKey,
    buf: &mut [u8],
) -> Result<usize, IceError> {
    error_response(transaction_id, 420, "Unknown Attribute", Some(UnknownAttributes::from(unknown)), key, buf)
}

/// ERROR-CODE `code` with `reason`, then `unknown` if given, MESSAGE-INTEGRITY under the
/// responder's password, FINGERPRINT.
fn error_response(
    transaction_id: [u8; TRANSACTION_ID_LEN],
    code: u16,
    reason: &str,
    unknown: Option<UnknownAttributes>,
    key: &ShortTermKey,
    buf: &mut [u8],
) -> Result<usize, IceError> {
    let error = stun_rs::ErrorCode::new(code, reason)
        .expect("callers pass 420 or 487, which lie in STUN's 300..=699 error code range");
    let mut message = StunMessageBuilder::new(BINDING, MessageClass::ErrorResponse)
        .with_transaction_id(TransactionId::from(transaction_id))
        .with_attribute(ErrorCode::from(error));
    if let Some(unknown) = unknown {
        message = message.with_attribute(unknown);
    }
    let message = message
        .with_attribute(MessageIntegrity::new(key.signing().clone()))
        .with_attribute(Fingerprint::default())
        .build();
    encode(&message, buf)
}

/// What a controlling agent's connectivity check carries (RFC 8445 §7.1.1, §7.2.2): the
/// test clients' side, which the server never sends.
#[cfg(any(test, feature = "test-support"))]
pub(super) struct BindingRequest<'a> {
    /// `<receiver's ufrag>:<sender's ufrag>`.
    pub(super) username: &'a str,
    pub(super) priority: u32,
    pub(super) tie_breaker: u64,
    pub(super) use_candidate: bool,
    pub(super) transaction_id: [u8; TRANSACTION_ID_LEN],
}

/// A Binding request from the controlling role, signed with the receiver's password.
#[cfg(any(test, feature = "test-support"))]
pub(super) fn binding_request(
    request: &BindingRequest<'_>,
    key: &ShortTermKey,
    buf: &mut [u8],
) -> Result<usize, IceError> {
    let username = UserName::new(request.username).map_err(|_| IceError::InvalidCredentials)?;
    let mut message = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(request.transaction_id))
        .with_attribute(username)
        .with_attribute(Priority::new(request.priority))
        .with_attribute(IceControlling::new(request.tie_breaker));
    if request.use_candidate {
        message = message.with_attribute(UseCandidate::default());
    }
    let message = message
        .with_attribute(MessageIntegrity::new(key.signing().clone()))
        .with_attribute(Fingerprint::default())
        .build();
    encode(&message, buf)
}

fn encode(message: &StunMessage, buf: &mut [u8]) -> Result<usize, IceError> {
    // The messages built above are valid by construction; running out of buffer is the
    // only way their encoding fails.
    MessageEncoderBuilder::default().build().encode(buf, message).map_err(|_| IceError::BufferTooSmall)
}
