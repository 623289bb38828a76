//! First-byte demultiplexing of a datagram on a bundled ICE transport (RFC 7983 §7), with
//! RTP told from RTCP by the second byte (RFC 5761 §4).

/// What a received datagram carries, judged from its first two bytes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datagram {
    /// STUN (first byte 0..=3): an ICE connectivity check or its response.
    Stun,
    /// DTLS (first byte 20..=63): handshake, alert or application data.
    Dtls,
    /// RTP (first byte 128..=191, second byte outside the RTCP range): SRTP media.
    Rtp,
    /// RTCP (first byte 128..=191, second byte 192..=223): SRTCP.
    Rtcp,
    /// Anything else, including TURN channel data (64..=79), ZRTP and datagrams shorter than
    /// two bytes. Nothing on an ICE-lite SFU transport should send these.
    Unknown,
}

/// Classifies a datagram by RFC 7983's first-byte ranges. Reads at most two bytes.
pub fn classify(datagram: &[u8]) -> Datagram {
    let [first, second, ..] = *datagram else {
        return Datagram::Unknown;
    };
    match first {
        0..=3 => Datagram::Stun,
        20..=63 => Datagram::Dtls,
        // RTCP packet types 192..=223 are RTP payload types 64..=95 with the marker bit set,
        // which is why RFC 5761 §4 keeps those payload types out of RTP when muxed.
        128..=191 if (192..=223).contains(&second) => Datagram::Rtcp,
        128..=191 => Datagram::Rtp,
        _ => Datagram::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_ranges_of_rfc_7983() {
        for first in 0..=255u8 {
            let expected = match first {
                0..=3 => Datagram::Stun,
                20..=63 => Datagram::Dtls,
                128..=191 => Datagram::Rtp,
                _ => Datagram::Unknown,
            };
            assert_eq!(classify(&[first, 96]), expected, "first byte {first}");
        }
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_the_second_byte() {
        for second in 0..=255u8 {
            let expected = if (192..=223).contains(&second) { Datagram::Rtcp } else { Datagram::Rtp };
            assert_eq!(classify(&[0x80, second, 0, 0]), expected, "second byte {second}");
        }
        // Receiver report and PSFB as browsers send them.
        assert_eq!(classify(&[0x81, 201, 0, 7]), Datagram::Rtcp);
        assert_eq!(classify(&[0x8f, 206, 0, 5]), Datagram::Rtcp);
        // VP8 (PT 96) with and without the marker bit.
        assert_eq!(classify(&[0x90, 0xe0, 0, 1]), Datagram::Rtp);
        assert_eq!(classify(&[0x90, 0x60, 0, 1]), Datagram::Rtp);
    }

    #[test]
    fn turn_channel_data_and_short_datagrams_are_unknown() {
        for first in 64..=79u8 {
            assert_eq!(classify(&[first, 0, 0, 4]), Datagram::Unknown);
        }
        assert_eq!(classify(&[]), Datagram::Unknown);
        assert_eq!(classify(&[0x00]), Datagram::Unknown);
        assert_eq!(classify(&[0x80]), Datagram::Unknown);
    }
}
