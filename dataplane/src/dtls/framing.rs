//! Cheap structural check of a datagram before it reaches the DTLS engine: it must be a
//! sequence of whole DTLS records. dimpl silently drops what it cannot parse; this check
//! turns garbage and truncation into a countable error instead, without touching any state.

use super::DtlsError;

/// DTLS 1.2 record header (and DTLS 1.3 plaintext header): type, version, epoch, sequence
/// number, length (RFC 6347 §4.1).
const PLAINTEXT_HEADER_LEN: usize = 13;

/// Content types a DTLS 1.2 / plaintext DTLS 1.3 record may carry: change_cipher_spec (20),
/// alert (21), handshake (22), application_data (23) and ack (26, RFC 9147 §7).
fn is_plaintext_content_type(first_byte: u8) -> bool {
    matches!(first_byte, 20..=23 | 26)
}

/// First three bits `001` mark a DTLS 1.3 unified header (RFC 9147 §4).
fn is_unified_header(first_byte: u8) -> bool {
    first_byte & 0b1110_0000 == 0b0010_0000
}

/// Unified header flag bits (RFC 9147 §4): connection id present, 16-bit sequence number,
/// length present.
const UNIFIED_CID: u8 = 0b0001_0000;
const UNIFIED_SEQ_16: u8 = 0b0000_1000;
const UNIFIED_LENGTH: u8 = 0b0000_0100;

/// Checks that `datagram` is one or more whole DTLS records. Says nothing about their
/// contents; the engine authenticates those.
pub(super) fn check_records(datagram: &[u8]) -> Result<(), DtlsError> {
    if datagram.is_empty() {
        return Err(DtlsError::MalformedDatagram);
    }
    let mut rest = datagram;
    while let Some(&first_byte) = rest.first() {
        rest = if is_plaintext_content_type(first_byte) {
            let header = rest.get(..PLAINTEXT_HEADER_LEN).ok_or(DtlsError::MalformedDatagram)?;
            let body_len = usize::from(u16::from_be_bytes([header[11], header[12]]));
            rest.get(PLAINTEXT_HEADER_LEN + body_len..).ok_or(DtlsError::MalformedDatagram)?
        } else if is_unified_header(first_byte) {
            if first_byte & UNIFIED_CID != 0 {
                // No connection id is ever negotiated here, and without its length the
                // record cannot be walked: only the engine may judge (and drop) it.
                return Ok(());
            }
            if first_byte & UNIFIED_LENGTH == 0 {
                // Without a length field the record runs to the end of the datagram.
                return Ok(());
            }
            let sequence_len = if first_byte & UNIFIED_SEQ_16 != 0 { 2 } else { 1 };
            let length_at = 1 + sequence_len;
            let length = rest.get(length_at..length_at + 2).ok_or(DtlsError::MalformedDatagram)?;
            let body_len = usize::from(u16::from_be_bytes([length[0], length[1]]));
            rest.get(length_at + 2 + body_len..).ok_or(DtlsError::MalformedDatagram)?
        } else {
            return Err(DtlsError::MalformedDatagram);
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plaintext_record(content_type: u8, body: &[u8]) -> Vec<u8> {
        let mut record = vec![content_type, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 1];
        record.extend_from_slice(&(body.len() as u16).to_be_bytes());
        record.extend_from_slice(body);
        record
    }

    #[test]
    fn whole_records_pass() {
        let mut two = plaintext_record(22, &[1; 40]);
        two.extend(plaintext_record(20, &[1]));
        assert_eq!(check_records(&two), Ok(()));
        assert_eq!(check_records(&plaintext_record(23, &[])), Ok(()));

        // Unified header: 16-bit sequence, length present, 3-byte body.
        assert_eq!(check_records(&[0x2C, 0, 1, 0, 3, 9, 9, 9]), Ok(()));
        // Unified header, 8-bit sequence, no length: runs to the end.
        assert_eq!(check_records(&[0x20, 7, 1, 2, 3]), Ok(()));
    }

    #[test]
    fn garbage_and_truncation_are_malformed() {
        let record = plaintext_record(22, &[1; 40]);
        for cut in 0..record.len() {
            assert_eq!(check_records(&record[..cut]), Err(DtlsError::MalformedDatagram), "record cut at {cut}");
        }
        let mut trailing = record.clone();
        trailing.push(22);
        assert_eq!(check_records(&trailing), Err(DtlsError::MalformedDatagram));

        for first_byte in [0u8, 1, 19, 24, 25, 27, 31, 64, 0x80, 0xFF] {
            let mut other = record.clone();
            other[0] = first_byte;
            assert_eq!(check_records(&other), Err(DtlsError::MalformedDatagram), "first byte {first_byte}");
        }
        assert_eq!(check_records(&[0x2C, 0, 1, 0, 4, 9, 9, 9]), Err(DtlsError::MalformedDatagram));
        assert_eq!(check_records(&[0x2C, 0]), Err(DtlsError::MalformedDatagram));
    }
}
