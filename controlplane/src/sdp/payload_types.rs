//! The payload types of one session the SFU offers streams on. Each publisher numbered its
//! formats in its own session, and two publishers' numbers may clash (Chromium's RTX 97 is
//! Firefox's H.264 97), while one BUNDLE transport needs one meaning per number across all
//! its sections. So the subscriber's session numbers each format once, the first time it is
//! offered, and keeps that number for the session's life; the dataplane writes it into every
//! packet it forwards there.

use super::codec::Codec;
use super::error::SdpError;
use super::ids::PayloadType;

/// Dynamic payload types in the order they are handed out: the RFC 3551 dynamic range, then
/// the range browsers also use once it is full (RFC 5761 leaves 64..=95 to RTCP).
const DYNAMIC: [std::ops::RangeInclusive<u8>; 2] = [96..=127, 35..=63];

/// The formats a session carries, each with its number and its RTX number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPayloadTypes {
    formats: Vec<Codec>,
}

impl SessionPayloadTypes {
    /// `codec` under this session's numbers: the number its format already has here, or its
    /// publisher's when that is still free, or the first free one; likewise its RTX number,
    /// when it has RTX.
    pub fn number(&mut self, codec: &Codec) -> Result<Codec, SdpError> {
        let known = self.formats.iter().position(|f| f.same_format(codec));
        let index = match known {
            Some(index) => index,
            None => {
                let payload_type = self.pick(codec.payload_type)?;
                self.formats.push(Codec { payload_type, rtx_payload_type: None, ..codec.clone() });
                self.formats.len() - 1
            }
        };
        if let Some(wanted) = codec.rtx_payload_type
            && self.formats[index].rtx_payload_type.is_none()
        {
            self.formats[index].rtx_payload_type = Some(self.pick(wanted)?);
        }
        let numbered = &self.formats[index];
        Ok(Codec {
            payload_type: numbered.payload_type,
            rtx_payload_type: codec.rtx_payload_type.and(numbered.rtx_payload_type),
            ..codec.clone()
        })
    }

    fn in_use(&self, payload_type: PayloadType) -> bool {
        self.formats.iter().any(|f| f.payload_type == payload_type || f.rtx_payload_type == Some(payload_type))
    }

    fn pick(&self, preferred: PayloadType) -> Result<PayloadType, SdpError> {
        let dynamic = |pt: PayloadType| DYNAMIC.iter().any(|range| range.contains(&pt.0));
        if dynamic(preferred) && !self.in_use(preferred) {
            return Ok(preferred);
        }
        DYNAMIC
            .into_iter()
            .flatten()
            .map(PayloadType)
            .find(|&pt| !self.in_use(pt))
            .ok_or(SdpError::PayloadTypesExhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(payload_type: u8, name: &str, fmtp: &str, rtx: Option<u8>) -> Codec {
        let codec = crate::sdp::codec::tests::codec(payload_type, &format!("{name}/90000"), fmtp);
        Codec { rtx_payload_type: rtx.map(PayloadType), ..codec }
    }

    fn numbers(codec: &Codec) -> (u8, Option<u8>) {
        (codec.payload_type.0, codec.rtx_payload_type.map(|pt| pt.0))
    }

    #[test]
    fn publishers_whose_numbers_clash_get_distinct_ones_kept_for_the_session() {
        let mut session = SessionPayloadTypes::default();
        let chromium_vp8 = codec(96, "VP8", "", Some(97));
        let firefox_h264 = codec(97, "H264", "profile-level-id=42e01f;packetization-mode=1", Some(98));
        let firefox_vp8 = codec(120, "VP8", "", Some(124));
        assert_eq!(numbers(&session.number(&chromium_vp8).unwrap()), (96, Some(97)), "free: kept");
        assert_eq!(numbers(&session.number(&firefox_h264).unwrap()), (98, Some(99)), "97 is VP8's RTX here");
        assert_eq!(numbers(&session.number(&firefox_vp8).unwrap()), (96, Some(97)), "one number per format");
        assert_eq!(numbers(&session.number(&codec(96, "VP8", "", None)).unwrap()), (96, None), "without RTX");
        let vp9 = codec(98, "VP9", "", None);
        assert_eq!(numbers(&session.number(&vp9).unwrap()), (100, None));
        assert_eq!(numbers(&session.number(&codec(98, "VP9", "", Some(99))).unwrap()), (100, Some(101)));
    }

    #[test]
    fn numbers_outside_the_dynamic_ranges_are_not_kept_and_they_run_out() {
        let mut session = SessionPayloadTypes::default();
        assert_eq!(numbers(&session.number(&codec(70, "VP8", "", None)).unwrap()), (96, None), "64..=95 is RTCP's");
        let mut profiles = 0u32;
        let result = loop {
            let format = codec(96, "H264", &format!("profile-level-id={profiles:04x}1f;packetization-mode=1"), None);
            profiles += 1;
            if let Err(e) = session.number(&format) {
                break e;
            }
        };
        assert_eq!(result, SdpError::PayloadTypesExhausted);
        assert_eq!(profiles, 32 + 29, "every dynamic number but VP8's, then the refusal");
    }
}
