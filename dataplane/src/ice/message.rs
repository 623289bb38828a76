//! A checked, borrowing view of one received STUN message (RFC 5389 §6, §15): parsed once
//! by [`StunView::parse`], after which no accessor can panic or allocate. It also checks
//! the two attributes that make a message trustworthy, FINGERPRINT and MESSAGE-INTEGRITY,
//! so that forged or stray datagrams are rejected before anything allocates.
//!
//! It owns the list of attribute types this side understands: any other comprehension-
//! required type (RFC 8489 §14: below 0x8000) is collected, a bounded number of them, for
//! the 420 Unknown Attribute answer ([`StunView::unknown_comprehension_required`]).

#[cfg(any(test, feature = "test-support"))]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

use super::IceError;
use super::credentials::ShortTermKey;

/// STUN header: type, length, magic cookie, transaction id.
pub(super) const HEADER_LEN: usize = 20;
pub(super) const TRANSACTION_ID_LEN: usize = 12;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTRIBUTE_HEADER_LEN: usize = 4;
const MESSAGE_INTEGRITY_LEN: usize = 20;
const FINGERPRINT_LEN: usize = 4;

// Attribute types (RFC 5389 §18.2, RFC 8445 §16.1).
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const PRIORITY: u16 = 0x0024;
const USE_CANDIDATE: u16 = 0x0025;
const FINGERPRINT: u16 = 0x8028;
const ICE_CONTROLLED: u16 = 0x8029;
/// Types from here up are comprehension-optional: a receiver that does not understand one
/// ignores it (RFC 8489 §14).
const COMPREHENSION_OPTIONAL: u16 = 0x8000;

/// How many unknown comprehension-required types a view keeps, and so the longest
/// UNKNOWN-ATTRIBUTES list a 420 carries. Browsers send none; a peer that sends more learns
/// of the first ones, and the 420 refuses its request all the same. The bound keeps the
/// view `Copy` and the 420 within [`super::MAX_RESPONSE_LEN`].
pub(super) const MAX_UNKNOWN_ATTRIBUTES: usize = 4;

/// The Binding method in its four classes (RFC 5389 §6: the class bits are interleaved with
/// the method bits, so each combination is one 16-bit type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MessageKind {
    BindingRequest,
    BindingIndication,
    BindingSuccess,
    BindingError,
    /// Any other method (TURN, …), in any class.
    Other,
}

impl MessageKind {
    fn from_type(message_type: u16) -> Self {
        match message_type {
            0x0001 => Self::BindingRequest,
            0x0011 => Self::BindingIndication,
            0x0101 => Self::BindingSuccess,
            0x0111 => Self::BindingError,
            _ => Self::Other,
        }
    }
}

/// One STUN message, framing checked, with the positions of the attributes ICE reads.
///
/// Invariants established by [`StunView::parse`], which the accessors rely on:
/// `datagram` is exactly one message of at least [`HEADER_LEN`] bytes; every recorded
/// offset is the start of an attribute that lies wholly inside `datagram`; FINGERPRINT, if
/// present, is the last attribute.
#[derive(Debug, Clone, Copy)]
pub(super) struct StunView<'a> {
    datagram: &'a [u8],
    kind: MessageKind,
    username: Option<&'a [u8]>,
    /// Offset of the MESSAGE-INTEGRITY attribute, and its HMAC value.
    message_integrity: Option<(usize, &'a [u8; MESSAGE_INTEGRITY_LEN])>,
    /// Offset of the FINGERPRINT attribute, and its value.
    fingerprint: Option<(usize, [u8; FINGERPRINT_LEN])>,
    use_candidate: bool,
    ice_controlled: bool,
    xor_mapped_address: Option<&'a [u8]>,
    error_code: Option<&'a [u8]>,
    /// Distinct comprehension-required types not understood, in order of appearance: the
    /// first `unknown_len` entries.
    unknown: [u16; MAX_UNKNOWN_ATTRIBUTES],
    unknown_len: usize,
}

impl<'a> StunView<'a> {
    /// Checks the header (RFC 5389 §6: leading zero bits, magic cookie, a length that is a
    /// multiple of 4 and covers the datagram exactly) and walks the attributes once.
    ///
    /// Of repeated attributes only the first counts (RFC 5389 §15). Attributes after
    /// MESSAGE-INTEGRITY other than FINGERPRINT are ignored, because the HMAC does not cover
    /// them (§15.4); anything after FINGERPRINT makes the message malformed (§15.5).
    pub(super) fn parse(datagram: &'a [u8]) -> Result<Self, IceError> {
        let Some(&[type_high, type_low, length_high, length_low, ref cookie @ ..]) = datagram.get(..8) else {
            return Err(IceError::Malformed);
        };
        let declared_len = usize::from(u16::from_be_bytes([length_high, length_low]));
        if type_high & 0xC0 != 0
            || cookie != MAGIC_COOKIE
            || declared_len % 4 != 0
            || datagram.len() != HEADER_LEN + declared_len
        {
            return Err(IceError::Malformed);
        }

        let mut view = Self {
            datagram,
            kind: MessageKind::from_type(u16::from_be_bytes([type_high, type_low])),
            username: None,
            message_integrity: None,
            fingerprint: None,
            use_candidate: false,
            ice_controlled: false,
            xor_mapped_address: None,
            error_code: None,
            unknown: [0; MAX_UNKNOWN_ATTRIBUTES],
            unknown_len: 0,
        };
        let mut offset = HEADER_LEN;
        while offset < datagram.len() {
            if view.fingerprint.is_some() {
                return Err(IceError::Malformed);
            }
            let Some(&[type_high, type_low, length_high, length_low]) =
                datagram.get(offset..offset + ATTRIBUTE_HEADER_LEN)
            else {
                return Err(IceError::Malformed);
            };
            let value_len = usize::from(u16::from_be_bytes([length_high, length_low]));
            let value_start = offset + ATTRIBUTE_HEADER_LEN;
            let value = datagram.get(value_start..value_start + value_len).ok_or(IceError::Malformed)?;
            let next_offset = value_start + value_len.next_multiple_of(4);
            if next_offset > datagram.len() {
                return Err(IceError::Malformed);
            }
            view.record(u16::from_be_bytes([type_high, type_low]), offset, value)?;
            offset = next_offset;
        }
        Ok(view)
    }

    fn record(&mut self, attribute_type: u16, offset: usize, value: &'a [u8]) -> Result<(), IceError> {
        if attribute_type == FINGERPRINT {
            let value = value.try_into().map_err(|_| IceError::Malformed)?;
            self.fingerprint = Some((offset, value));
            return Ok(());
        }
        if self.message_integrity.is_some() {
            return Ok(());
        }
        match attribute_type {
            USERNAME => {
                self.username.get_or_insert(value);
            }
            MESSAGE_INTEGRITY => {
                let tag = value.try_into().map_err(|_| IceError::Malformed)?;
                self.message_integrity = Some((offset, tag));
            }
            USE_CANDIDATE => self.use_candidate = true,
            ICE_CONTROLLED => self.ice_controlled = true,
            XOR_MAPPED_ADDRESS => {
                self.xor_mapped_address.get_or_insert(value);
            }
            ERROR_CODE => {
                self.error_code.get_or_insert(value);
            }
            // Understood, and of no use to a lite agent: the priority ranks the peer-reflexive
            // candidate a check reveals (RFC 8445 §7.3.1.3), and a lite agent sends no checks,
            // so it ranks nothing.
            PRIORITY => {}
            unknown if unknown < COMPREHENSION_OPTIONAL => self.record_unknown(unknown),
            // Comprehension-optional: ICE-CONTROLLING, SOFTWARE and browsers' own
            // extensions; none changes what a lite agent does.
            _ => {}
        }
        Ok(())
    }

    fn record_unknown(&mut self, attribute_type: u16) {
        let listed = &self.unknown[..self.unknown_len];
        if self.unknown_len < MAX_UNKNOWN_ATTRIBUTES && !listed.contains(&attribute_type) {
            self.unknown[self.unknown_len] = attribute_type;
            self.unknown_len += 1;
        }
    }

    pub(super) fn kind(&self) -> MessageKind {
        self.kind
    }

    pub(super) fn transaction_id(&self) -> [u8; TRANSACTION_ID_LEN] {
        let mut transaction_id = [0; TRANSACTION_ID_LEN];
        transaction_id.copy_from_slice(&self.datagram[8..HEADER_LEN]);
        transaction_id
    }

    pub(super) fn username(&self) -> Option<&'a [u8]> {
        self.username
    }

    /// USE-CANDIDATE before MESSAGE-INTEGRITY (RFC 8445 §7.1.2).
    pub(super) fn use_candidate(&self) -> bool {
        self.use_candidate
    }

    /// ICE-CONTROLLED before MESSAGE-INTEGRITY: the sender claims the controlled role.
    pub(super) fn claims_controlled(&self) -> bool {
        self.ice_controlled
    }

    /// The comprehension-required types before MESSAGE-INTEGRITY that this side does not
    /// understand (at most [`MAX_UNKNOWN_ATTRIBUTES`]); empty for a message it may process.
    pub(super) fn unknown_comprehension_required(&self) -> &[u16] {
        &self.unknown[..self.unknown_len]
    }

    pub(super) fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// FINGERPRINT (RFC 5389 §15.5) is present and is the CRC-32 of everything before it.
    pub(super) fn verify_fingerprint(&self) -> Result<(), IceError> {
        let (offset, value) = self.fingerprint.ok_or(IceError::BadFingerprint)?;
        let fingerprint = stun_rs::attributes::stun::Fingerprint::from(value);
        if fingerprint.validate(&self.datagram[..offset]) { Ok(()) } else { Err(IceError::BadFingerprint) }
    }

    /// MESSAGE-INTEGRITY (RFC 5389 §15.4) is present and is the HMAC-SHA1, under `key`, of
    /// the message up to it, with the header's length counting only up to its end. The
    /// comparison takes the same time wherever the tags differ, so timing cannot guide a
    /// forger towards a valid tag.
    pub(super) fn verify_integrity(&self, key: &ShortTermKey) -> Result<(), IceError> {
        let (offset, received_tag) = self.message_integrity.ok_or(IceError::BadIntegrity)?;
        let integrity_end = offset + ATTRIBUTE_HEADER_LEN + MESSAGE_INTEGRITY_LEN;
        let length_through_integrity = u16::try_from(integrity_end - HEADER_LEN).map_err(|_| IceError::Malformed)?;
        let mut hmac = hmac::Context::with_key(key.verifying());
        hmac.update(&self.datagram[..2]);
        hmac.update(&length_through_integrity.to_be_bytes());
        hmac.update(&self.datagram[4..offset]);
        let expected_tag = hmac.sign();
        if bool::from(expected_tag.as_ref().ct_eq(received_tag)) { Ok(()) } else { Err(IceError::BadIntegrity) }
    }

    /// XOR-MAPPED-ADDRESS (RFC 5389 §15.2), which only a client reads: the port is XORed with the cookie's top half,
    /// an IPv4 address with the cookie, an IPv6 address with the cookie and transaction id.
    #[cfg(any(test, feature = "test-support"))]
    pub(super) fn xor_mapped_address(&self) -> Option<SocketAddr> {
        let &[_, family, port_high, port_low, ref address @ ..] = self.xor_mapped_address? else {
            return None;
        };
        let port = u16::from_be_bytes([port_high, port_low]) ^ u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]);
        let ip = match (family, address.len()) {
            (0x01, 4) => {
                let mut octets = [0; 4];
                for (octet, (byte, mask)) in octets.iter_mut().zip(address.iter().zip(MAGIC_COOKIE)) {
                    *octet = byte ^ mask;
                }
                IpAddr::V4(Ipv4Addr::from(octets))
            }
            (0x02, 16) => {
                let mask = MAGIC_COOKIE.iter().chain(&self.datagram[8..HEADER_LEN]);
                let mut octets = [0; 16];
                for (octet, (byte, mask)) in octets.iter_mut().zip(address.iter().zip(mask)) {
                    *octet = byte ^ mask;
                }
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// ERROR-CODE (RFC 5389 §15.6): class (hundreds) and number (0..=99), which only a
    /// client reads.
    #[cfg(any(test, feature = "test-support"))]
    pub(super) fn error_code(&self) -> Option<u16> {
        let &[_, _, class, number, ..] = self.error_code? else {
            return None;
        };
        Some(u16::from(class & 0x07) * 100 + u16::from(number))
    }
}
