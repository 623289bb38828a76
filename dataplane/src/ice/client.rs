//! The controlling side of a connectivity check (RFC 8445 §7.2), for our test client and
//! load generator, which play the browser's part against the SFU. Not used by the SFU.
//!
//! The client keeps its own transaction ids (random, RFC 5389 §6) and retransmissions; these
//! functions only write one request and read one response.

use std::net::SocketAddr;

use super::IceError;
use super::credentials::{IceCredentials, ShortTermKey};
use super::encode::{self, BindingRequest};
use super::message::{MessageKind, StunView, TRANSACTION_ID_LEN};

/// The PRIORITY a check carries: that of a peer-reflexive candidate (RFC 8445 §7.1.1,
/// §5.1.2.1: type preference 110, local preference 65535, component 1). The SFU ignores it,
/// but full agents expect it.
const PEER_REFLEXIVE_PRIORITY: u32 = (110 << 24) | (65535 << 8) | (256 - 1);

/// Writes a Binding request from the controlling agent with credentials `local` to the SFU
/// with credentials `remote` (USERNAME `<remote ufrag>:<local ufrag>`, PRIORITY,
/// ICE-CONTROLLING with `tie_breaker`, USE-CANDIDATE when `use_candidate`,
/// MESSAGE-INTEGRITY under the SFU's password, FINGERPRINT) and returns its length.
pub fn build_binding_request(
    local: &IceCredentials,
    remote: &IceCredentials,
    use_candidate: bool,
    tie_breaker: u64,
    transaction_id: [u8; TRANSACTION_ID_LEN],
    buf: &mut [u8],
) -> Result<usize, IceError> {
    let username = format!("{}:{}", remote.ufrag(), local.ufrag());
    let request = BindingRequest {
        username: &username,
        priority: PEER_REFLEXIVE_PRIORITY,
        tie_breaker,
        use_candidate,
        transaction_id,
    };
    encode::binding_request(&request, &ShortTermKey::new(remote), buf)
}

/// Reads the SFU's answer to the request with `expected_transaction_id`: checks FINGERPRINT
/// and MESSAGE-INTEGRITY under the SFU's password (`remote`) and returns the
/// XOR-MAPPED-ADDRESS, the address the SFU saw the request come from. An authenticated
/// error response is [`IceError::ErrorResponse`].
pub fn parse_binding_response(
    datagram: &[u8],
    expected_transaction_id: [u8; TRANSACTION_ID_LEN],
    remote: &IceCredentials,
) -> Result<SocketAddr, IceError> {
    let message = StunView::parse(datagram)?;
    let is_response = matches!(message.kind(), MessageKind::BindingSuccess | MessageKind::BindingError);
    if !is_response || message.transaction_id() != expected_transaction_id {
        return Err(IceError::UnexpectedMessage);
    }
    message.verify_fingerprint()?;
    message.verify_integrity(&ShortTermKey::new(remote))?;
    if message.kind() == MessageKind::BindingError {
        return Err(IceError::ErrorResponse { code: message.error_code().ok_or(IceError::Malformed)? });
    }
    message.xor_mapped_address().ok_or(IceError::Malformed)
}
