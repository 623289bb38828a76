//! ICE-lite (RFC 8445 §2.5, §7.3) for one transport: the SFU answers the connectivity checks
//! of the browser, which is the full and controlling agent, and so learns which remote
//! addresses are the peer's, which one the peer nominated, and whether its consent is still
//! fresh (RFC 7675). A sans-IO core: it owns no socket, thread or clock; time is an
//! argument, and bad input is an error value, never a panic.
//!
//! What it owns: [`IceCredentials`] (the local ones are generated here, the remote ones come
//! from SDP) and one [`IceLiteAgent`] per transport, holding the selected address and the
//! consent deadline. `client` (built for tests) is the controlling side, for our test client and load
//! generator only.
//!
//! Rules for callers:
//! - **Route by ufrag, then let the agent verify.** A STUN datagram from a 5-tuple no
//!   transport owns yet goes to the transport whose local ufrag [`local_ufrag_of`] returns.
//!   That call checks nothing; [`IceLiteAgent::handle_stun`] authenticates (FINGERPRINT,
//!   USERNAME `<local ufrag>:<remote ufrag>`, MESSAGE-INTEGRITY under the local password).
//! - **Send what it writes, drop what it refuses.** `Ok` with a `response_len`: send
//!   `response[..response_len]` to `from`, from the socket the check arrived on. `Err`:
//!   nothing was written and nothing changed; count the error and drop the datagram. An
//!   unauthenticated check is never answered, so the SFU cannot be used as a reflector.
//! - **Only validated 5-tuples.** [`StunOutcome::CheckAccepted`] is the proof that `from`
//!   belongs to the peer: map `from` to this transport then, not before, and take DTLS and
//!   SRTP only from addresses mapped that way. The authenticated error responses
//!   ([`StunOutcome::RoleConflict`], [`StunOutcome::UnknownAttributes`]) prove nothing of
//!   the kind: the request they answer was refused.
//! - **Media goes to [`IceLiteAgent::selected`]**, the address last nominated with
//!   USE-CANDIDATE. A later nomination of another address switches it (RFC 8445 §8.2);
//!   `became_selected` says when.
//! - **Consent lasts 30 s** ([`CONSENT_LIFETIME`]) from the last accepted check from the
//!   selected address (before any nomination: from any address; at first: from
//!   creation). Consent is per 5-tuple (RFC 7675 §1), so checks on other addresses do not
//!   keep media flowing to the selected one. Call [`IceLiteAgent::is_expired`] at
//!   [`IceLiteAgent::poll_timeout`]; once expired, stop sending and drop the transport. An
//!   expired agent refuses everything ([`IceError::ConsentExpired`]): with the same
//!   credentials consent never comes back (RFC 7675 §5.1).
//! - **Binding indications do not refresh consent.** They are unauthenticated keepalives
//!   (RFC 8445 §11) that anyone can send with any source address; consent needs an
//!   authenticated check (RFC 7675 §4, §5.1). They are accepted and otherwise ignored.
//!
//! Allocation: [`local_ufrag_of`], which runs for every STUN datagram, and every rejection by
//! `handle_stun` allocate nothing: they read a checked, borrowing view (which collects
//! unknown attribute types into a fixed array) and compute the HMAC on the stack. An
//! authenticated check allocates in stun-rs's encoder while its response is written (the
//! attribute list, the HMAC output); checks arrive a few times a second per transport, never
//! per media packet. Constructors allocate their strings and keys.
//!
//! Not implemented: MESSAGE-INTEGRITY-SHA256 (RFC 8489) is not accepted in place of
//! MESSAGE-INTEGRITY (browsers do not use it for ICE); after MESSAGE-INTEGRITY, where RFC
//! 8489 puts it when both are sent, it is ignored like every attribute there.
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "test-support"))]
pub mod client;
mod credentials;
mod encode;
mod message;

#[cfg(test)]
mod rfc5769_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use credentials::IceCredentials;

use credentials::ShortTermKey;
use message::{MessageKind, StunView};

/// How long consent lasts without a fresh check (RFC 7675 §5.1).
pub const CONSENT_LIFETIME: Duration = Duration::from_secs(30);

/// The longest response [`IceLiteAgent::handle_stun`] writes, and so the smallest `response`
/// buffer it accepts: a 420 error response whose UNKNOWN-ATTRIBUTES lists as many types as
/// it ever does, four (header 20, ERROR-CODE 28, UNKNOWN-ATTRIBUTES 12, MESSAGE-INTEGRITY
/// 24, FINGERPRINT 8). A success response for an IPv6 address, the longest other one, takes
/// 76 bytes.
pub const MAX_RESPONSE_LEN: usize = 92;

/// Everything that can go wrong, as one cheap `Copy` value to count by variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum IceError {
    // A datagram refused by `handle_stun`: dropped, nothing written, nothing changed.
    /// Not one well-formed STUN message (header, lengths, attribute framing).
    #[error("datagram is not one well-formed STUN message")]
    Malformed,
    /// FINGERPRINT is missing or is not the CRC-32 of the message: a request that is not an
    /// ICE check, or a corrupted one.
    #[error("STUN FINGERPRINT is missing or wrong")]
    BadFingerprint,
    /// USERNAME is missing or is not `<local ufrag>:<remote ufrag>` of this transport.
    #[error("STUN USERNAME is missing or names other ufrags")]
    UnknownUfrag,
    /// MESSAGE-INTEGRITY is missing or does not verify under the expected password.
    #[error("STUN MESSAGE-INTEGRITY is missing or does not verify")]
    BadIntegrity,
    /// A STUN message a lite agent does not answer: a response, or a method other than
    /// Binding. For the client helper: not the awaited transaction's response.
    #[error("STUN message is not one this side answers or awaits")]
    UnexpectedMessage,
    /// The transport's consent expired; it accepts nothing any more.
    #[error("consent expired")]
    ConsentExpired,

    // The peer answered, but not with success (client helper only).
    /// An authenticated Binding error response with this ERROR-CODE (487: Role Conflict).
    #[error("STUN error response {code}")]
    ErrorResponse { code: u16 },

    // Setup and API misuse.
    /// A ufrag or password outside the RFC 8839 §5.4 grammar.
    #[error("ICE ufrag or password is outside the RFC 8839 grammar")]
    InvalidCredentials,
    /// The system random generator failed.
    #[error("system random generator failed")]
    RandomUnavailable,
    /// The output buffer cannot hold the message (for `handle_stun`: shorter than
    /// [`MAX_RESPONSE_LEN`]).
    #[error("output buffer is too small for the STUN message")]
    BufferTooSmall,
}

/// What an accepted datagram did. Each variant that carries a `response_len` wrote that
/// many bytes into `response`, to be sent back to `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunOutcome {
    /// A valid connectivity check: `from` is now a validated address of this transport and
    /// the response is a Binding success response.
    CheckAccepted {
        response_len: usize,
        /// The check carried USE-CANDIDATE and `from` was not the selected address before:
        /// media must go to `from` from now on.
        became_selected: bool,
    },
    /// An authenticated check that claimed the controlled role, which a lite agent always
    /// holds (RFC 8445 §6.1.1): the response is a 487 Role Conflict error response. Nothing
    /// else changed.
    RoleConflict { response_len: usize },
    /// An authenticated check carrying comprehension-required attributes this agent does not
    /// understand (RFC 8489 §6.3.1): the response is a 420 Unknown Attribute error response
    /// listing them. The check was not otherwise processed: `from` is not validated, nothing
    /// is nominated, consent is not refreshed.
    UnknownAttributes { response_len: usize },
    /// A Binding indication, a keepalive: nothing to send, nothing changed.
    Keepalive,
}

/// ICE-lite for one transport: answers its checks, tracks the nominated address and the
/// consent deadline.
pub struct IceLiteAgent {
    local_ufrag: String,
    remote_ufrag: String,
    /// The local password's key: checks are signed with it, and so are our answers.
    key: ShortTermKey,
    selected: Option<SocketAddr>,
    consent_deadline: Instant,
}

impl IceLiteAgent {
    /// An agent for credentials just exchanged in SDP. The remote password is not kept: a
    /// lite agent sends no checks, so nothing is ever signed with it. Consent runs out
    /// [`CONSENT_LIFETIME`] after `now` unless a check arrives.
    pub fn new(local: IceCredentials, remote: IceCredentials, now: Instant) -> Self {
        Self {
            key: ShortTermKey::new(&local),
            local_ufrag: local.ufrag().to_owned(),
            remote_ufrag: remote.ufrag().to_owned(),
            selected: None,
            consent_deadline: now + CONSENT_LIFETIME,
        }
    }

    /// The ufrag [`local_ufrag_of`] returns for this transport's checks.
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// Handles one STUN datagram from `from`. On `Ok` with a `response_len`, send
    /// `response[..response_len]` to `from`. On `Err` nothing was written to `response` and
    /// the agent is unchanged. `response` must hold [`MAX_RESPONSE_LEN`] bytes.
    ///
    /// Checks run cheapest and most telling first: framing, FINGERPRINT (tells ICE checks
    /// from other STUN and from corruption), USERNAME, then MESSAGE-INTEGRITY; only then
    /// what the check asks for: unknown attributes (420), the role (487), the check itself.
    pub fn handle_stun(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
        response: &mut [u8],
    ) -> Result<StunOutcome, IceError> {
        if response.len() < MAX_RESPONSE_LEN {
            return Err(IceError::BufferTooSmall);
        }
        if self.is_expired(now) {
            return Err(IceError::ConsentExpired);
        }
        let message = StunView::parse(datagram)?;
        match message.kind() {
            MessageKind::BindingRequest => {}
            MessageKind::BindingIndication => {
                // FINGERPRINT is optional on indications (RFC 8445 §11) but, when present,
                // tells a keepalive from a corrupted datagram.
                if message.has_fingerprint() {
                    message.verify_fingerprint()?;
                }
                return Ok(StunOutcome::Keepalive);
            }
            MessageKind::BindingSuccess | MessageKind::BindingError | MessageKind::Other => {
                return Err(IceError::UnexpectedMessage);
            }
        }
        message.verify_fingerprint()?;
        if !message.username().is_some_and(|username| self.is_own_username(username)) {
            return Err(IceError::UnknownUfrag);
        }
        message.verify_integrity(&self.key)?;

        // Unknown attributes are answered only now, as RFC 8489 §6.3 orders it: answering an
        // unauthenticated request would let anyone who forges a source address make us send
        // datagrams to it. Before the role: a request we do not understand is not processed.
        let unknown = message.unknown_comprehension_required();
        if !unknown.is_empty() {
            let response_len = encode::unknown_attributes(message.transaction_id(), unknown, &self.key, response)?;
            return Ok(StunOutcome::UnknownAttributes { response_len });
        }
        if message.claims_controlled() {
            let response_len = encode::role_conflict(message.transaction_id(), &self.key, response)?;
            return Ok(StunOutcome::RoleConflict { response_len });
        }
        // Encode before changing state, so that an `Err` leaves the agent as it was.
        let response_len = encode::binding_success(message.transaction_id(), from, &self.key, response)?;
        let became_selected = message.use_candidate() && self.selected != Some(from);
        if message.use_candidate() {
            self.selected = Some(from);
        }
        if self.selected.is_none_or(|selected| selected == from) {
            self.consent_deadline = now + CONSENT_LIFETIME;
        }
        Ok(StunOutcome::CheckAccepted { response_len, became_selected })
    }

    /// RFC 8445 §7.2.2: the sender of a check puts the receiver's ufrag first.
    fn is_own_username(&self, username: &[u8]) -> bool {
        username.strip_prefix(self.local_ufrag.as_bytes()).and_then(|rest| rest.strip_prefix(b":"))
            == Some(self.remote_ufrag.as_bytes())
    }

    /// The nominated address: where media goes. `None` until a check with USE-CANDIDATE.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// When consent runs out unless another check arrives.
    pub fn poll_timeout(&self) -> Instant {
        self.consent_deadline
    }

    /// Whether consent has run out at `now`. Once true, it stays true.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.consent_deadline
    }
}

/// Shows the ufrags and state, never the key.
impl fmt::Debug for IceLiteAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceLiteAgent")
            .field("local_ufrag", &self.local_ufrag)
            .field("remote_ufrag", &self.remote_ufrag)
            .field("selected", &self.selected)
            .field("consent_deadline", &self.consent_deadline)
            .finish_non_exhaustive()
    }
}

/// The local ufrag of a STUN Binding request — the part of USERNAME before the first `:` —
/// to find the transport it is for. Verifies nothing (the transport's agent does); `None`
/// for anything that is not a well-formed Binding request with such a USERNAME. Allocates
/// nothing and borrows from `datagram`.
pub fn local_ufrag_of(datagram: &[u8]) -> Option<&str> {
    let message = StunView::parse(datagram).ok()?;
    if message.kind() != MessageKind::BindingRequest {
        return None;
    }
    let username = message.username()?;
    let (local_ufrag, _) = username.split_at(username.iter().position(|&byte| byte == b':')?);
    if local_ufrag.is_empty() {
        return None;
    }
    std::str::from_utf8(local_ufrag).ok()
}
