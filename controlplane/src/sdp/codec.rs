//! Codecs, RTCP feedback and RTP header extensions: the parts of a media section that the
//! answer and the subscriber offer negotiate, the subset of them the SFU supports, and the
//! policy both apply (so that `answer` and `offer` depend on this module, not on each other).

use super::ids::PayloadType;

/// A video codec the SFU can forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    /// Profile 0 only: profile 2 is 10-bit, which subscribers may not decode.
    Vp9,
    /// Packetization mode 1 and Constrained Baseline 3.1 (`42e01f`) preferred.
    H264,
}

/// Which codecs and extras an answer may agree to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecPolicy {
    /// Video codecs in order of preference. VP8 is taken whenever offered, after these: every
    /// WebRTC endpoint must implement it (RFC 7742), so it is the one a room can always share.
    pub video: Vec<VideoCodec>,
    /// Negotiate transport-wide congestion control (its extmap and `transport-cc` feedback):
    /// only when the dataplane generates its feedback.
    pub transport_cc: bool,
    /// Accept a publisher's rid-based simulcast (RFC 8853). Without it the browser sends a
    /// single encoding.
    pub simulcast: bool,
}

impl Default for CodecPolicy {
    fn default() -> Self {
        // VP8 first, since every WebRTC endpoint decodes it; H.264 and VP9 for publishers that
        // offer no VP8 (OBS and other WHIP encoders offer H.264 only).
        CodecPolicy {
            video: vec![VideoCodec::Vp8, VideoCodec::H264, VideoCodec::Vp9],
            transport_cc: false,
            simulcast: false,
        }
    }
}

/// One RTP payload format of a media section, with the RTX format that repairs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: PayloadType,
    /// The encoding name as the peer spelled it (`opus`, `VP8`, `H264`); compare without case.
    pub name: String,
    pub clock_rate: u32,
    /// The rtpmap's encoding parameters; for audio, the channel count.
    pub channels: Option<u32>,
    /// The format parameters, `key=value` pairs joined by `;`, or empty. A parsed offer's
    /// parameters come out as the SDP crate normalises them: its own order, RFC defaults left out.
    pub fmtp: String,
    /// The RTCP feedback for this format as written after the payload type: `nack`, `nack pli`,
    /// `ccm fir`, `goog-remb`, `transport-cc` (wildcard `*` lines included).
    pub rtcp_fb: Vec<String>,
    /// The `rtx` format whose `apt=` names this one (RFC 4588).
    pub rtx_payload_type: Option<PayloadType>,
}

impl Codec {
    /// The value of one format parameter, if present.
    pub fn fmtp_param(&self, key: &str) -> Option<&str> {
        fmtp_param(&self.fmtp, key)
    }

    pub(crate) fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

pub(crate) fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
}

/// The RTCP feedback the SFU acts on (RFC 4585, RFC 5104, REMB and transport-wide CC drafts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feedback {
    Nack,
    Pli,
    Fir,
    Remb,
    TransportCc,
}

impl Feedback {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut tokens = text.split_whitespace();
        let feedback = match (tokens.next()?, tokens.next()) {
            ("nack", None) => Feedback::Nack,
            ("nack", Some("pli")) => Feedback::Pli,
            ("ccm", Some("fir")) => Feedback::Fir,
            ("goog-remb", None) => Feedback::Remb,
            ("transport-cc", None) => Feedback::TransportCc,
            _ => return None,
        };
        tokens.next().is_none().then_some(feedback)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Feedback::Nack => "nack",
            Feedback::Pli => "nack pli",
            Feedback::Fir => "ccm fir",
            Feedback::Remb => "goog-remb",
            Feedback::TransportCc => "transport-cc",
        }
    }

    /// Transport-wide congestion control needs the dataplane's feedback generator, so it is
    /// negotiated only when the caller says it runs.
    pub(crate) fn supported(self, transport_cc: bool) -> bool {
        self != Feedback::TransportCc || transport_cc
    }
}

/// The feedback of `offered` the SFU keeps, in the order offered, each once.
pub(crate) fn supported_feedback(offered: &[String], transport_cc: bool) -> Vec<Feedback> {
    let mut kept = Vec::new();
    for feedback in offered.iter().filter_map(|text| Feedback::parse(text)) {
        if feedback.supported(transport_cc) && !kept.contains(&feedback) {
            kept.push(feedback);
        }
    }
    kept
}

pub const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
pub const RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
pub const REPAIRED_RTP_STREAM_ID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
pub const TRANSPORT_CC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// The highest id a one-byte header extension can carry (RFC 8285 §4.2). We never negotiate
/// `extmap-allow-mixed`, so the dataplane only ever meets one-byte headers.
pub(crate) const MAX_ONE_BYTE_EXTENSION_ID: u8 = 14;

/// The ids of the RTP header extensions the SFU reads or writes, by meaning; `None` where the
/// extension was not negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderExtensions {
    pub mid: Option<u8>,
    pub abs_send_time: Option<u8>,
    pub audio_level: Option<u8>,
    pub rtp_stream_id: Option<u8>,
    pub repaired_rtp_stream_id: Option<u8>,
    pub transport_cc: Option<u8>,
}

impl HeaderExtensions {
    /// Each extension's id with its URI.
    pub(crate) fn entries(&self) -> [(Option<u8>, &'static str); 6] {
        [
            (self.mid, MID_URI),
            (self.abs_send_time, ABS_SEND_TIME_URI),
            (self.audio_level, AUDIO_LEVEL_URI),
            (self.rtp_stream_id, RTP_STREAM_ID_URI),
            (self.repaired_rtp_stream_id, REPAIRED_RTP_STREAM_ID_URI),
            (self.transport_cc, TRANSPORT_CC_URI),
        ]
    }

    /// The slot for `uri` if the SFU supports it, `transport-cc` only when enabled.
    pub(crate) fn slot(&mut self, uri: &str, transport_cc: bool) -> Option<&mut Option<u8>> {
        Some(match uri {
            MID_URI => &mut self.mid,
            ABS_SEND_TIME_URI => &mut self.abs_send_time,
            AUDIO_LEVEL_URI => &mut self.audio_level,
            RTP_STREAM_ID_URI => &mut self.rtp_stream_id,
            REPAIRED_RTP_STREAM_ID_URI => &mut self.repaired_rtp_stream_id,
            TRANSPORT_CC_URI if transport_cc => &mut self.transport_cc,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmtp_params_are_found_by_key_without_case() {
        let fmtp = "profile-level-id=42e01f;Packetization-Mode=1; apt = 96";
        assert_eq!(fmtp_param(fmtp, "packetization-mode"), Some("1"));
        assert_eq!(fmtp_param(fmtp, "apt"), Some("96"));
        assert_eq!(fmtp_param(fmtp, "profile-id"), None);
        assert_eq!(fmtp_param("", "apt"), None);
    }

    #[test]
    fn only_known_feedback_survives_and_transport_cc_needs_consent() {
        let offered: Vec<String> =
            ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli", "nack sli", "ccm tmmbr", "nack"]
                .map(String::from)
                .into();
        let kept = |transport_cc| {
            supported_feedback(&offered, transport_cc).into_iter().map(Feedback::as_str).collect::<Vec<_>>()
        };
        assert_eq!(kept(false), ["goog-remb", "ccm fir", "nack", "nack pli"]);
        assert_eq!(kept(true), ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]);
    }
}
