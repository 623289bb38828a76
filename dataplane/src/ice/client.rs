//! The controlling side of a connectivity check (RFC 8445 §7.2), for our test client and
//! load generator, which play the browser's part against the SFU. Not used by the SFU.
//!
//! The client keeps its own transaction ids (random, RFC 5389 §6) and retransmissions; these
//! functions only write one request and read one response. Against a full ICE agent (or
//! libnice, which checks even when it runs ICE-lite, as Janus does) the client also answers
//! the server's checks: a server selects no pair until one of its own is answered.

use std::net::SocketAddr;

use super::IceError;
use super::credentials::{IceCredentials, ShortTermKey};
use super::encode::{self, BindingRequest};
use super::message::{MessageKind, StunView, TRANSACTION_ID_LEN};

/// What a STUN datagram from the server is to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStun {
    /// A response to one of the client's checks: [`parse_binding_response`].
    Response,
    /// The server's own check: [`answer_binding_request`].
    Request,
    /// A keepalive, which asks nothing.
    Indication,
}

/// Tells what `datagram` (STUN by its first bytes) is.
pub fn classify_server_stun(datagram: &[u8]) -> Result<ServerStun, IceError> {
    match StunView::parse(datagram)?.kind() {
        MessageKind::BindingRequest => Ok(ServerStun::Request),
        MessageKind::BindingIndication => Ok(ServerStun::Indication),
        MessageKind::BindingSuccess | MessageKind::BindingError => Ok(ServerStun::Response),
        MessageKind::Other => Err(IceError::UnexpectedMessage),
    }
}

/// Answers the server's Binding request `datagram`, which came from `from`: checks
/// FINGERPRINT, USERNAME `<local ufrag>:<remote ufrag>` and MESSAGE-INTEGRITY under the
/// client's password (`local`), then writes the success response (XOR-MAPPED-ADDRESS
/// `from`) into `buf` and returns its length.
pub fn answer_binding_request(
    datagram: &[u8],
    from: SocketAddr,
    local: &IceCredentials,
    remote: &IceCredentials,
    buf: &mut [u8],
) -> Result<usize, IceError> {
    let message = StunView::parse(datagram)?;
    if message.kind() != MessageKind::BindingRequest {
        return Err(IceError::UnexpectedMessage);
    }
    message.verify_fingerprint()?;
    let username = format!("{}:{}", local.ufrag(), remote.ufrag());
    if message.username() != Some(username.as_bytes()) {
        return Err(IceError::UnknownUfrag);
    }
    let key = ShortTermKey::new(local);
    message.verify_integrity(&key)?;
    encode::binding_success(message.transaction_id(), from, &key, buf)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_from_the_server_is_answered_under_the_clients_password() {
        let (client, server) = (IceCredentials::generate().unwrap(), IceCredentials::generate().unwrap());
        let mut request = [0u8; 512];
        // The server's check to the client: USERNAME `<client ufrag>:<server ufrag>`, signed
        // with the client's password.
        let len = build_binding_request(&server, &client, false, 7, [9; TRANSACTION_ID_LEN], &mut request).unwrap();
        assert_eq!(classify_server_stun(&request[..len]), Ok(ServerStun::Request));
        let from: SocketAddr = "10.99.0.1:20001".parse().unwrap();
        let mut response = [0u8; 512];
        let answered = answer_binding_request(&request[..len], from, &client, &server, &mut response).unwrap();
        assert_eq!(classify_server_stun(&response[..answered]), Ok(ServerStun::Response));
        assert_eq!(parse_binding_response(&response[..answered], [9; TRANSACTION_ID_LEN], &client), Ok(from));

        let stranger = IceCredentials::generate().unwrap();
        let refused = answer_binding_request(&request[..len], from, &stranger, &server, &mut response);
        assert_eq!(refused, Err(IceError::UnknownUfrag), "a check for another client is not answered");
        request[len - 9] ^= 1;
        assert!(answer_binding_request(&request[..len], from, &client, &server, &mut response).is_err());
    }
}
