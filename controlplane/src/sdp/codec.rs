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
    /// publishers get feedback from the SFU about their packets, and subscribers' packets
    /// carry the SFU's own transport-wide numbering for their feedback.
    pub transport_cc: bool,
    /// Accept a publisher's rid-based simulcast (RFC 8853). Without it the browser sends a
    /// single encoding. Only an answer that receives is concerned.
    pub simulcast: bool,
}

impl Default for CodecPolicy {
    fn default() -> Self {
        // VP8 first, since every WebRTC endpoint decodes it; H.264 and VP9 for publishers that
        // offer no VP8 (OBS and other WHIP encoders offer H.264 only).
        CodecPolicy {
            video: vec![VideoCodec::Vp8, VideoCodec::H264, VideoCodec::Vp9],
            transport_cc: true,
            simulcast: true,
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

    /// Whether `other` is the same format under whatever payload type its side numbered it:
    /// the name, clock rate and channels, and the parameters that change what a decoder must
    /// do (H.264's profile and packetization mode, VP9's profile). The H.264 level is left out:
    /// a decoder of a higher level decodes a lower one, and browsers answer with their own.
    pub fn same_format(&self, other: &Codec) -> bool {
        let channels = |c: &Codec| c.channels.unwrap_or(1);
        let param = |c: &Codec, key: &str, default: &'static str| c.fmtp_param(key).unwrap_or(default).to_owned();
        let same_name = self.name.eq_ignore_ascii_case(&other.name);
        if !same_name || self.clock_rate != other.clock_rate || channels(self) != channels(other) {
            return false;
        }
        if self.is("H264") {
            // profile_idc and the constraint flags (profile-iop), as hex; RFC 6184's default.
            let profile =
                |c: &Codec| param(c, "profile-level-id", "42000a").get(..4).unwrap_or("").to_ascii_lowercase();
            return profile(self) == profile(other)
                && param(self, "packetization-mode", "0") == param(other, "packetization-mode", "0");
        }
        if self.is("VP9") {
            return param(self, "profile-id", "0") == param(other, "profile-id", "0");
        }
        true
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
/// Coordination of video orientation (3GPP TS 26.114): a phone sends its frames as the
/// camera took them and tags each with how to turn it upright, instead of rotating them
/// itself; recordings need the tag to turn the video upright.
pub const VIDEO_ORIENTATION_URI: &str = "urn:3gpp:video-orientation";

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
    pub video_orientation: Option<u8>,
}

impl HeaderExtensions {
    /// Each extension's id with its URI.
    pub(crate) fn entries(&self) -> [(Option<u8>, &'static str); 7] {
        [
            (self.mid, MID_URI),
            (self.abs_send_time, ABS_SEND_TIME_URI),
            (self.audio_level, AUDIO_LEVEL_URI),
            (self.rtp_stream_id, RTP_STREAM_ID_URI),
            (self.repaired_rtp_stream_id, REPAIRED_RTP_STREAM_ID_URI),
            (self.transport_cc, TRANSPORT_CC_URI),
            (self.video_orientation, VIDEO_ORIENTATION_URI),
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
            VIDEO_ORIENTATION_URI => &mut self.video_orientation,
            _ => return None,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn fmtp_params_are_found_by_key_without_case() {
        let fmtp = "profile-level-id=42e01f;Packetization-Mode=1; apt = 96";
        assert_eq!(fmtp_param(fmtp, "packetization-mode"), Some("1"));
        assert_eq!(fmtp_param(fmtp, "apt"), Some("96"));
        assert_eq!(fmtp_param(fmtp, "profile-id"), None);
        assert_eq!(fmtp_param("", "apt"), None);
    }

    /// A codec from its rtpmap (`VP8/90000`, `opus/48000/2`) and fmtp.
    pub(in crate::sdp) fn codec(payload_type: u8, rtpmap: &str, fmtp: &str) -> Codec {
        let mut parts = rtpmap.split('/');
        let name = parts.next().expect("a name").to_owned();
        let clock_rate = parts.next().and_then(|rate| rate.parse().ok()).expect("a clock rate");
        let channels = parts.next().map(|n| n.parse().expect("a channel count"));
        let (fmtp, rtcp_fb) = (fmtp.to_owned(), Vec::new());
        Codec {
            payload_type: PayloadType(payload_type),
            name,
            clock_rate,
            channels,
            fmtp,
            rtcp_fb,
            rtx_payload_type: None,
        }
    }

    #[test]
    fn formats_match_by_what_a_decoder_needs_never_by_number() {
        let opus = codec(111, "opus/48000/2", "minptime=10;useinbandfec=1");
        assert!(opus.same_format(&codec(109, "OPUS/48000/2", "")), "numbers and options differ");
        assert!(!opus.same_format(&codec(111, "opus/48000", "")), "mono is another format");
        assert!(!opus.same_format(&codec(111, "G722/8000", "")));

        let vp8 = codec(96, "VP8/90000", "");
        assert!(vp8.same_format(&codec(120, "vp8/90000", "max-fs=12288;max-fr=60")));
        assert!(!vp8.same_format(&codec(96, "VP8/48000", "")));

        let h264 = codec(102, "H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f");
        let other_level = codec(126, "H264/90000", "profile-level-id=42E034;packetization-mode=1");
        assert!(h264.same_format(&other_level), "another level of Constrained Baseline");
        let mode_0 = codec(97, "H264/90000", "profile-level-id=42e01f");
        assert!(!h264.same_format(&mode_0), "packetization mode 0 by default");
        let high = codec(100, "H264/90000", "profile-level-id=64001f;packetization-mode=1");
        assert!(!h264.same_format(&high), "High profile");
        assert!(codec(97, "H264/90000", "").same_format(&codec(98, "H264/90000", "profile-level-id=42000A")));

        let vp9 = codec(98, "VP9/90000", "profile-id=0");
        assert!(vp9.same_format(&codec(100, "VP9/90000", "")), "profile 0 by default");
        assert!(!vp9.same_format(&codec(100, "VP9/90000", "profile-id=2")));
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
