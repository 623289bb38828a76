//! STUN message framing (RFC 5389 §6): the cheap check that a datagram is one whole STUN
//! message before stun-rs decodes its attributes in the ICE module. Nothing here reads an
//! attribute or checks integrity.

use super::WireError;
use super::be::{read_u16, read_u32};

/// Length of the STUN header; attributes follow it.
pub const HEADER_LEN: usize = 20;
/// The fixed value that marks RFC 5389 STUN (RFC 3489 had a transaction id here).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The two leading bits of every STUN message are zero (RFC 5389 §6).
const LEADING_BITS_MASK: u16 = 0xC000;
/// Class bits C1 (bit 8) and C0 (bit 4) of the message type.
const CLASS_MASK: u16 = 0x0110;

/// The class of a STUN message (RFC 5389 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StunClass {
    /// Asks for a response (an ICE connectivity check).
    Request,
    /// Expects no response.
    Indication,
    /// Answers a request.
    SuccessResponse,
    /// Refuses a request.
    ErrorResponse,
}

/// A checked STUN header over a whole datagram.
#[derive(Debug, Clone)]
pub struct StunHeader<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> StunHeader<T> {
    /// Checks that `buffer` is exactly one STUN message by its header: leading bits zero,
    /// magic cookie, and a length that is a multiple of 4 and covers the rest of `buffer`.
    /// (RFC 5389 allows first bytes up to 63; the RFC 7983 demux sends only 0..=3 here.)
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if read_u16(bytes, 0) & LEADING_BITS_MASK != 0 {
            return Err(WireError::BadMessageType);
        }
        if read_u32(bytes, 4) != MAGIC_COOKIE {
            return Err(WireError::BadMagicCookie);
        }
        let message_len = usize::from(read_u16(bytes, 2));
        let attributes_len = bytes.len() - HEADER_LEN;
        if message_len % 4 != 0 {
            return Err(WireError::BadLength);
        }
        if message_len > attributes_len {
            return Err(WireError::Truncated);
        }
        if message_len < attributes_len {
            return Err(WireError::BadLength);
        }
        Ok(Self { buffer })
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 14-bit message type: method and class interleaved.
    pub fn message_type(&self) -> u16 {
        read_u16(self.as_bytes(), 0)
    }

    /// Length of the attributes after the header.
    pub fn message_length(&self) -> u16 {
        read_u16(self.as_bytes(), 2)
    }

    /// The message class, from bits C1 and C0 of the type.
    pub fn class(&self) -> StunClass {
        match self.message_type() & CLASS_MASK {
            0x0000 => StunClass::Request,
            0x0010 => StunClass::Indication,
            0x0100 => StunClass::SuccessResponse,
            _ => StunClass::ErrorResponse,
        }
    }

    /// The 12-bit method (1 is Binding), with the class bits taken out.
    pub fn method(&self) -> u16 {
        let message_type = self.message_type();
        (message_type & 0x000F) | (message_type & 0x00E0) >> 1 | (message_type & 0x3E00) >> 2
    }

    /// The 96-bit transaction id.
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut transaction_id = [0; 12];
        transaction_id.copy_from_slice(&self.as_bytes()[8..HEADER_LEN]);
        transaction_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_vectors::{RFC5769_IPV4_RESPONSE, RFC5769_REQUEST, RFC5769_TRANSACTION_ID};

    /// A header with the given type and length, RFC 5769's cookie and transaction id, and
    /// `message_len` zero bytes of attributes.
    fn message(message_type: u16, message_len: u16) -> Vec<u8> {
        let mut bytes = RFC5769_REQUEST[..HEADER_LEN].to_vec();
        bytes[0..2].copy_from_slice(&message_type.to_be_bytes());
        bytes[2..4].copy_from_slice(&message_len.to_be_bytes());
        bytes.resize(HEADER_LEN + usize::from(message_len), 0);
        bytes
    }

    #[test]
    fn rfc_5769_sample_request_is_a_binding_request() {
        let header = StunHeader::new_checked(&RFC5769_REQUEST[..]).unwrap();
        assert_eq!(header.message_type(), 0x0001);
        assert_eq!(header.message_length(), 0x58);
        assert_eq!(header.class(), StunClass::Request);
        assert_eq!(header.method(), 1);
        assert_eq!(header.transaction_id(), RFC5769_TRANSACTION_ID);
    }

    #[test]
    fn rfc_5769_sample_ipv4_response_is_a_binding_success() {
        let header = StunHeader::new_checked(&RFC5769_IPV4_RESPONSE[..]).unwrap();
        assert_eq!(header.class(), StunClass::SuccessResponse);
        assert_eq!(header.method(), 1);
        assert_eq!(header.transaction_id(), RFC5769_TRANSACTION_ID);
    }

    #[test]
    fn the_rfc_vectors_are_transcribed_exactly() {
        // stun-rs validates MESSAGE-INTEGRITY and FINGERPRINT over every byte, so a typo in
        // the vectors above fails here instead of passing silently.
        use stun_rs::{DecoderContextBuilder, HMACKey, MessageDecoderBuilder};
        let key = HMACKey::new_short_term("VOkJxbRl1RmTxUk/WvJxBt").unwrap();
        let context = DecoderContextBuilder::default().with_key(key).with_validation().build();
        let decoder = MessageDecoderBuilder::default().with_context(context).build();
        for vector in [&RFC5769_REQUEST[..], &RFC5769_IPV4_RESPONSE[..]] {
            let (_, size) = decoder.decode(vector).unwrap();
            assert_eq!(size, vector.len());
        }
    }

    #[test]
    fn class_and_method_bits_are_deinterleaved() {
        let cases = [
            (0x0001, StunClass::Request, 0x001),
            (0x0011, StunClass::Indication, 0x001),
            (0x0101, StunClass::SuccessResponse, 0x001),
            (0x0111, StunClass::ErrorResponse, 0x001),
            // Allocate (TURN, method 3) error response.
            (0x0113, StunClass::ErrorResponse, 0x003),
            // Every method bit set: M11..M0 all ones around the class bits.
            (0x3EEF, StunClass::Request, 0xFFF),
            (0x3FFF, StunClass::ErrorResponse, 0xFFF),
        ];
        for (message_type, class, method) in cases {
            let bytes = message(message_type, 0);
            let header = StunHeader::new_checked(&bytes[..]).unwrap();
            assert_eq!(header.class(), class, "type {message_type:#06x}");
            assert_eq!(header.method(), method, "type {message_type:#06x}");
        }
    }

    #[test]
    fn framing_errors() {
        assert_eq!(StunHeader::new_checked(&[][..]).unwrap_err(), WireError::Truncated);
        assert_eq!(StunHeader::new_checked(&message(0x8001, 0)[..]).unwrap_err(), WireError::BadMessageType);
        assert_eq!(StunHeader::new_checked(&message(0x4001, 0)[..]).unwrap_err(), WireError::BadMessageType);
        let mut no_cookie = message(0x0001, 0);
        no_cookie[4] ^= 1;
        assert_eq!(StunHeader::new_checked(&no_cookie[..]).unwrap_err(), WireError::BadMagicCookie);
        assert_eq!(StunHeader::new_checked(&message(0x0001, 6)[..]).unwrap_err(), WireError::BadLength);
        let mut trailing = RFC5769_REQUEST.to_vec();
        trailing.extend_from_slice(&[0; 4]);
        assert_eq!(StunHeader::new_checked(&trailing[..]).unwrap_err(), WireError::BadLength);
    }

    #[test]
    fn every_truncation_is_refused() {
        for len in 0..RFC5769_REQUEST.len() {
            assert!(StunHeader::new_checked(&RFC5769_REQUEST[..len]).is_err(), "prefix of {len} bytes");
        }
    }
}
