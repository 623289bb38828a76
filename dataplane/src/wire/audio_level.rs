//! The client-to-mixer audio level of an RTP audio packet (RFC 6464,
//! `urn:ietf:params:rtp-hdrext:ssrc-audio-level`): one header extension element whose single
//! byte holds a voice-activity flag and the packet's level in −dBov.
//!
//! Read the element's value with [`super::rtp::RtpPacket::extension`] under the id the
//! publisher negotiated, then [`AudioLevel::parse`] it. Both RFC 8285 forms carry the same
//! one-byte value (RFC 6464 §3, Figures 1 and 2), so the parser does not ask which form the
//! packet used.

use super::WireError;

const VOICE_BIT: u8 = 0x80;
const LEVEL_MASK: u8 = 0x7F;

/// One packet's audio level as its sender measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioLevel {
    /// The V flag: the sender's voice activity detector judged the packet to hold speech.
    /// Only meaningful when the extmap negotiated `vad=on`; otherwise senders leave it 0.
    pub voice: bool,
    /// The level in −dBov, 0 (loudest: 0 dBov) to 127 (silence: −127 dBov or quieter).
    /// [`AudioLevel::parse`] yields 0..=127 only.
    pub level_dbov: u8,
}

impl AudioLevel {
    /// Reads an element's value. Any length but one byte is [`WireError::BadLength`]: a
    /// one-byte form element is never empty, but its length nibble may say 2..=16, and a
    /// two-byte form element may have any length from 0 to 255; RFC 6464 defines neither.
    pub fn parse(value: &[u8]) -> Result<Self, WireError> {
        match *value {
            [byte] => Ok(Self { voice: byte & VOICE_BIT != 0, level_dbov: byte & LEVEL_MASK }),
            _ => Err(WireError::BadLength),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtp::{RtpHeader, RtpPacket};

    /// The element id our tests give audio-level, as Chromium offers it.
    const ID: u8 = 1;

    /// A packet with a two-byte form extension block of one word holding `element` (the
    /// header builder writes the one-byte form only).
    fn two_byte_form_packet(element: [u8; 4]) -> Vec<u8> {
        let mut bytes = vec![0; 20];
        let fixed = RtpHeader::new(111, 1, 960, 0x1234).write(&mut bytes).unwrap();
        bytes[0] |= 0x10; // the extension bit
        bytes[fixed..fixed + 4].copy_from_slice(&[0x10, 0x00, 0x00, 0x01]);
        bytes[fixed + 4..].copy_from_slice(&element);
        bytes
    }

    #[test]
    fn the_byte_splits_into_flag_and_level() {
        let cases = [
            (0x00, false, 0),
            (0x80, true, 0),
            (0x7F, false, 127),
            (0x80 | 0x7F, true, 127),
            (0x80 | 0x2A, true, 42),
            (0x2A, false, 42),
        ];
        for (byte, voice, level_dbov) in cases {
            assert_eq!(AudioLevel::parse(&[byte]), Ok(AudioLevel { voice, level_dbov }), "byte {byte:#04x}");
        }
    }

    #[test]
    fn lengths_other_than_one_are_refused() {
        assert_eq!(AudioLevel::parse(&[]), Err(WireError::BadLength));
        assert_eq!(AudioLevel::parse(&[0x80, 0x00]), Err(WireError::BadLength));
        assert_eq!(AudioLevel::parse(&[0x2A; 16]), Err(WireError::BadLength));
        assert_eq!(AudioLevel::parse(&[0x2A; 255]), Err(WireError::BadLength));
    }

    /// RFC 6464 §3 Figure 1: id, len=0 (one byte follows), then V and level; here V set at
    /// −42 dBov, after a one-byte mid element and before the padding to the word.
    #[test]
    fn one_byte_form_as_written_by_the_builder() {
        let extensions: [(u8, &[u8]); 2] = [(4, b"0"), (ID, &[0x80 | 42])];
        let mut buf = [0; 64];
        let len = RtpHeader::new(111, 1, 960, 0x1234).extensions(&extensions).write(&mut buf).unwrap();
        assert_eq!(buf[12..len], [0xBE, 0xDE, 0x00, 0x01, 0x40, b'0', ID << 4, 0x80 | 42]);
        let packet = RtpPacket::new_checked(&buf[..len]).unwrap();
        let value = packet.extension(ID).expect("the element is there");
        assert_eq!(AudioLevel::parse(value), Ok(AudioLevel { voice: true, level_dbov: 42 }));
    }

    /// RFC 6464 §3 Figure 2: id, len=1, V and level, one byte of padding; here silence
    /// without the V flag.
    #[test]
    fn two_byte_form() {
        let bytes = two_byte_form_packet([ID, 0x01, 0x7F, 0x00]);
        let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
        let value = packet.extension(ID).expect("the element is there");
        assert_eq!(AudioLevel::parse(value), Ok(AudioLevel { voice: false, level_dbov: 127 }));
    }

    /// An element of a length RFC 6464 does not define reaches the parser intact, which
    /// refuses it: two bytes in the one-byte form (len=1) and an empty two-byte element.
    #[test]
    fn elements_of_the_wrong_length_are_refused() {
        let extensions: [(u8, &[u8]); 1] = [(ID, &[0x80, 0x2A])];
        let mut buf = [0; 64];
        let len = RtpHeader::new(111, 1, 960, 0x1234).extensions(&extensions).write(&mut buf).unwrap();
        let packet = RtpPacket::new_checked(&buf[..len]).unwrap();
        assert_eq!(AudioLevel::parse(packet.extension(ID).unwrap()), Err(WireError::BadLength));

        let bytes = two_byte_form_packet([ID, 0x00, 0x00, 0x00]);
        let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(AudioLevel::parse(packet.extension(ID).unwrap()), Err(WireError::BadLength));
    }
}
