//! The SFU's answer to a peer's offer (a publisher's, over the signalling socket or WHIP),
//! and the typed record of what it agreed to, from which the signalling creates producers.

use std::collections::HashSet;
use std::str::FromStr;

use webrtc_sdp::SdpBandwidth;
use webrtc_sdp::attribute_type::{SdpAttribute, SdpAttributeDirection, SdpAttributeExtmap, SdpAttributeSetup};
use webrtc_sdp::media_type::{SdpFormatList, SdpMedia, SdpMediaLine};

use super::codec::{
    Codec, CodecPolicy, Feedback, HeaderExtensions, MAX_ONE_BYTE_EXTENSION_ID, VideoCodec, supported_feedback,
};
use super::error::SdpError;
use super::ids::{Direction, Mid, SectionKind, Ssrc};
use super::local::{BitrateCaps, LocalParameters};
use super::offer::{OutgoingTrack, add_track_identity};
use super::remote::{Msid, RemoteDescription, RemoteMedia};
use super::writer;

/// An answer and what it agreed to.
#[derive(Debug, Clone)]
pub struct Answer {
    pub sdp: String,
    pub negotiated: Negotiated,
}

/// What an answer agreed to, per media section in the offer's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The accepted audio and video sections.
    pub sections: Vec<NegotiatedSection>,
    /// The sections answered with port 0: data channels, sections without a codec we take,
    /// and sections the offer itself had rejected.
    pub rejected: Vec<Mid>,
}

impl Negotiated {
    pub fn section(&self, mid: &Mid) -> Option<&NegotiatedSection> {
        self.sections.iter().find(|s| &s.mid == mid)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedSection {
    pub mid: Mid,
    pub kind: SectionKind,
    /// The answer's direction, from the SFU's side (`RecvOnly` for a publisher).
    pub direction: Direction,
    /// The codec the section carries, with the offer's payload type and RTX payload type,
    /// and the format parameters and feedback as answered.
    pub codec: Codec,
    /// The other formats a section the SFU sends on may carry, as answered (a player's
    /// section that waits for whatever format is published next); empty otherwise.
    pub more_codecs: Vec<Codec>,
    /// The publisher's SSRCs as signalled: one per simulcast layer (`SIM` group order) or a
    /// single one, each with its RTX SSRC from `ssrc-group:FID`. Empty when the offer signals
    /// none (rid-based simulcast): the dataplane then learns them from the mid and rid
    /// header extensions.
    pub streams: Vec<RemoteStream>,
    /// The simulcast layers accepted, by rid, in the offer's order; empty without simulcast.
    pub rids: Vec<String>,
    pub msid: Option<Msid>,
    pub cname: Option<String>,
    /// The header extensions kept, with the offer's ids.
    pub extensions: HeaderExtensions,
}

/// One RTP stream a publisher announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteStream {
    pub ssrc: Ssrc,
    pub rtx_ssrc: Option<Ssrc>,
}

/// Answers `offer` as an ICE-lite, DTLS-passive SFU. `direction_for` says what the SFU wants
/// of each audio and video section (a publish answer wants `RecvOnly`); the answer gives the
/// part of that the offer allows. The answer carries no sending tracks: the SFU sends to a
/// peer by making its own offer ([`super::offer`]).
///
/// Per section: audio is answered with Opus, video with the policy's first codec offered
/// (VP8 last); each keeps the offer's payload type and RTX, the supported feedback offered and
/// the supported header extensions offered with their ids. Data channels, sections with no
/// codec we take and sections the offer rejected are answered with port 0 and left out of the
/// BUNDLE group, which otherwise keeps the offer's order (RFC 8843).
pub fn answer(
    offer: &RemoteDescription,
    local: &LocalParameters,
    policy: &CodecPolicy,
    direction_for: impl Fn(&RemoteMedia) -> Direction,
) -> Result<Answer, SdpError> {
    let plans = offer.media.iter().map(|media| {
        choose(media, policy).map(|codec| SectionPlan {
            codecs: vec![codec],
            wanted: direction_for(media),
            sending: None,
        })
    });
    answer_sections(offer, local, policy, plans.collect())
}

/// Answers the offer of a peer that only receives (a WHEP player): each section that
/// `track_for` gives a track is answered `sendonly` with that track's SSRCs and msid, and with
/// the track's format first ([`Codec::same_format`], under the offer's payload type: the
/// answer keeps the offer's numbers, which the SFU writes into what it forwards), then every
/// other format of the offer the SFU forwards, so that a stream published later in another
/// format can be sent on it too. A section whose offer lacks the track's format is rejected
/// with port 0, like every section without a track.
pub fn answer_with_tracks<'t>(
    offer: &RemoteDescription,
    local: &LocalParameters,
    policy: &CodecPolicy,
    track_for: impl Fn(&RemoteMedia) -> Option<&'t OutgoingTrack>,
) -> Result<Answer, SdpError> {
    let plans = offer.media.iter().map(|media| {
        let track = track_for(media).filter(|t| !media.rejected && t.kind == media.kind)?;
        let first = media.codecs.iter().find(|c| c.same_format(&track.codec))?;
        let others = forwardable(media, policy).into_iter().filter(|c| c.payload_type != first.payload_type);
        let codecs = std::iter::once(first).chain(others).collect();
        Some(SectionPlan { codecs, wanted: Direction::SendOnly, sending: Some(track) })
    });
    answer_sections(offer, local, policy, plans.collect())
}

/// How one offered section is answered: with which of its codecs (the first is the one it
/// carries now), wanting which direction, and the track the SFU sends on it, if any.
struct SectionPlan<'a> {
    codecs: Vec<&'a Codec>,
    wanted: Direction,
    sending: Option<&'a OutgoingTrack>,
}

/// The answer both kinds share: a BUNDLE group of the planned sections in the offer's order,
/// each planned section accepted (with its track's msid and SSRCs when it sends one), every
/// other one rejected with port 0.
fn answer_sections(
    offer: &RemoteDescription,
    local: &LocalParameters,
    policy: &CodecPolicy,
    plans: Vec<Option<SectionPlan<'_>>>,
) -> Result<Answer, SdpError> {
    local.validate()?;
    let accepted = |mid: &Mid| offer.media.iter().zip(&plans).any(|(media, plan)| &media.mid == mid && plan.is_some());
    let bundle: Vec<&Mid> = offer.bundle.iter().filter(|mid| accepted(mid)).collect();
    let mut session = writer::new_session(local);
    if !bundle.is_empty() {
        writer::add_to_session(&mut session, writer::bundle_group(&bundle));
    }
    let mut negotiated = Negotiated { sections: Vec::new(), rejected: Vec::new() };
    for (media, plan) in offer.media.iter().zip(plans) {
        let Some(SectionPlan { codecs, wanted, sending }) = plan else {
            session.media.push(writer::closed_section(media.line.clone(), &media.mid, media.codecs.first()));
            negotiated.rejected.push(media.mid.clone());
            continue;
        };
        let direction = Direction::answering(media.direction, wanted);
        let tagged = bundle.first() == Some(&&media.mid);
        let (mut section, agreed) = accept(media, &codecs, direction, local, policy, tagged);
        if let Some(track) = sending.filter(|_| direction.sends()) {
            let rtx_ssrc = codecs.iter().find_map(|c| c.rtx_payload_type).and(track.rtx_ssrc);
            add_track_identity(&mut section, &OutgoingTrack { rtx_ssrc, ..track.clone() });
        }
        session.media.push(section);
        negotiated.sections.push(agreed);
    }
    Ok(Answer { sdp: session.to_string(), negotiated })
}

/// The offered codec a section is answered with, or `None` to reject it.
fn choose<'a>(media: &'a RemoteMedia, policy: &CodecPolicy) -> Option<&'a Codec> {
    if media.rejected {
        return None;
    }
    match media.kind {
        // RFC 7587: Opus is always signalled as opus/48000/2, whatever it carries.
        SectionKind::Audio => {
            media.codecs.iter().find(|c| c.is("opus") && c.clock_rate == 48000 && c.channels == Some(2))
        }
        SectionKind::Video => policy
            .video
            .iter()
            .copied()
            .chain([VideoCodec::Vp8])
            .find_map(|wanted| video_formats(media, wanted).first().copied()),
        // Data channels are not served yet.
        SectionKind::Application => None,
    }
}

/// The offered formats of `wanted` the SFU forwards, the best first: VP9 profile 0 only; H.264
/// in packetization mode 0 or 1, ranked by [`h264_rank`] (the offer's order among equals).
fn video_formats(media: &RemoteMedia, wanted: VideoCodec) -> Vec<&Codec> {
    let video = media.codecs.iter().filter(|c| c.clock_rate == 90000);
    match wanted {
        VideoCodec::Vp8 => video.filter(|c| c.is("VP8")).collect(),
        VideoCodec::Vp9 => {
            video.filter(|c| c.is("VP9") && c.fmtp_param("profile-id").is_none_or(|id| id == "0")).collect()
        }
        VideoCodec::H264 => {
            let mut h264: Vec<&Codec> = video.filter(|c| c.is("H264") && h264_mode(c).is_some()).collect();
            // Stable: the offer's first of equals stays first.
            h264.sort_by_key(|c| std::cmp::Reverse(h264_rank(c)));
            h264
        }
    }
}

/// What the SFU forwards, as the answer and the error messages name it.
pub const FORWARDED_FORMATS: &str = "Opus, VP8, VP9 profile 0 and H.264 (packetization mode 0 or 1)";

/// Every format of `media` the SFU forwards ([`FORWARDED_FORMATS`]), in the policy's order of
/// preference (VP8 last unless the policy names it), each offered H.264 profile included: the
/// first is the one [`answer`] picks.
pub fn forwardable<'m>(media: &'m RemoteMedia, policy: &CodecPolicy) -> Vec<&'m Codec> {
    let mut found: Vec<&Codec> = Vec::new();
    let wanted: Vec<VideoCodec> = match media.kind {
        SectionKind::Audio => return choose(media, policy).into_iter().collect(),
        SectionKind::Video => policy.video.iter().copied().chain([VideoCodec::Vp8]).collect(),
        SectionKind::Application => return found,
    };
    for codec in wanted.into_iter().flat_map(|wanted| video_formats(media, wanted)) {
        if !found.iter().any(|f| f.payload_type == codec.payload_type) {
            found.push(codec);
        }
    }
    found
}

/// Packetization mode 0 (single NAL unit, RFC 6184's default) or 1 (non-interleaved); mode 2
/// is not forwarded.
fn h264_mode(codec: &Codec) -> Option<u8> {
    match codec.fmtp_param("packetization-mode") {
        None | Some("0") => Some(0),
        Some("1") => Some(1),
        Some(_) => None,
    }
}

/// Mode 1 first (mode 0 caps every NAL unit at the MTU), then exactly `42e01f`, then any
/// Constrained Baseline, which every browser decodes.
fn h264_rank(codec: &Codec) -> (bool, bool, bool) {
    // RFC 6184 §8.1: absent means Baseline level 1.0.
    let profile_level_id = codec.fmtp_param("profile-level-id").unwrap_or("42000a");
    (
        h264_mode(codec) == Some(1),
        profile_level_id.eq_ignore_ascii_case("42e01f"),
        is_constrained_baseline(profile_level_id),
    )
}

/// RFC 6184 table 5: profile_idc 0x42, 0x4D or 0x58 with the profile-iop bits that make it
/// Constrained Baseline.
fn is_constrained_baseline(profile_level_id: &str) -> bool {
    let Some((profile_idc, profile_iop)) = profile_level_id
        .get(0..2)
        .zip(profile_level_id.get(2..4))
        .and_then(|(idc, iop)| Some((u8::from_str_radix(idc, 16).ok()?, u8::from_str_radix(iop, 16).ok()?)))
    else {
        return false;
    };
    match profile_idc {
        0x42 => profile_iop & 0x4f == 0x40,
        0x4d => profile_iop & 0x8f == 0x80,
        0x58 => profile_iop & 0xcf == 0xc0,
        _ => false,
    }
}

fn accept(
    media: &RemoteMedia,
    offered: &[&Codec],
    direction: Direction,
    local: &LocalParameters,
    policy: &CodecPolicy,
    tagged: bool,
) -> (SdpMedia, NegotiatedSection) {
    let answered: Vec<(Codec, Vec<Feedback>)> = offered
        .iter()
        .map(|offered| {
            let feedback = supported_feedback(&offered.rtcp_fb, policy.transport_cc);
            let codec = Codec {
                fmtp: answer_fmtp(media.kind, offered, local.bitrate),
                rtcp_fb: feedback.iter().map(|f| f.as_str().to_owned()).collect(),
                ..(*offered).clone()
            };
            (codec, feedback)
        })
        .collect();
    let formats = answered
        .iter()
        .flat_map(|(codec, _)| std::iter::once(codec.payload_type).chain(codec.rtx_payload_type))
        .map(|pt| u32::from(pt.0))
        .collect();
    let line = SdpMediaLine { formats: SdpFormatList::Integers(formats), ..media.line.clone() };
    let mut section = writer::live_section(line, local);
    if media.kind == SectionKind::Video
        && let Some(max) = local.bitrate.max_bps
    {
        section.add_bandwidth(SdpBandwidth::As((max / 1000).max(1)));
        section.add_bandwidth(SdpBandwidth::Tias(max));
    }
    writer::add(&mut section, SdpAttribute::Mid(media.mid.to_string()));
    writer::add_transport(&mut section, local, SdpAttributeSetup::Passive, tagged);
    let extensions = add_extensions(&mut section, media, policy.transport_cc);
    writer::add(&mut section, writer::direction(direction));
    writer::add(&mut section, SdpAttribute::RtcpMux);
    if media.rtcp_rsize {
        writer::add(&mut section, SdpAttribute::RtcpRsize);
    }
    for (codec, feedback) in &answered {
        writer::add_codec(&mut section, codec, &codec.fmtp, feedback);
    }
    // Layers are told apart by their RtpStreamId: without that extension, no simulcast.
    let rids = if policy.simulcast && direction.receives() && extensions.rtp_stream_id.is_some() {
        accept_simulcast(&mut section, media)
    } else {
        Vec::new()
    };

    let mut codecs = answered.into_iter().map(|(codec, _)| codec);
    let agreed = NegotiatedSection {
        mid: media.mid.clone(),
        kind: media.kind,
        direction,
        codec: codecs.next().expect("a section is answered with a codec"),
        more_codecs: codecs.collect(),
        streams: streams(media),
        rids,
        msid: media.msid.clone().or_else(|| media.ssrcs.iter().find_map(|s| s.msid.clone())),
        cname: media.ssrcs.iter().find_map(|s| s.cname.clone()),
        extensions,
    };
    (section, agreed)
}

/// The format parameters the SFU answers with: those that name the format it will receive,
/// plus what it asks of the sender.
fn answer_fmtp(kind: SectionKind, offered: &Codec, bitrate: BitrateCaps) -> String {
    let mut parameters: Vec<String> = Vec::new();
    if offered.is("opus") {
        // In-band FEC survives the loss the SFU cannot repair; 10 ms is Opus' shortest useful
        // frame. Stereo is accepted when the sender says it sends stereo (RFC 7587 §7.1).
        parameters.extend(["minptime=10".to_owned(), "useinbandfec=1".to_owned()]);
        if offered.fmtp_param("sprop-stereo") == Some("1") {
            parameters.push("stereo=1".to_owned());
        }
    } else {
        let keys: &[&str] = if offered.is("H264") {
            &["level-asymmetry-allowed", "packetization-mode", "profile-level-id"]
        } else if offered.is("VP9") {
            &["profile-id"]
        } else {
            &[]
        };
        parameters.extend(keys.iter().filter_map(|key| Some(format!("{key}={}", offered.fmtp_param(key)?))));
    }
    if kind == SectionKind::Video
        && let Some(min) = bitrate.min_bps.filter(|&min| min >= 1000)
    {
        parameters.push(format!("x-google-min-bitrate={}", min / 1000));
    }
    parameters.join(";")
}

/// Keeps the offered header extensions the SFU supports, with the offer's ids, reversing a
/// direction the offer gave: an offerer's `sendonly` extension is one we receive, and one it
/// only receives is dropped since an answer never sends. Ids above 14 need two-byte headers,
/// which are never negotiated, so they go too.
fn add_extensions(section: &mut SdpMedia, media: &RemoteMedia, transport_cc: bool) -> HeaderExtensions {
    let mut kept = HeaderExtensions::default();
    for extmap in &media.extmaps {
        let direction = match extmap.direction {
            None | Some(Direction::SendRecv) => None,
            Some(Direction::SendOnly) => Some(SdpAttributeDirection::Recvonly),
            Some(Direction::RecvOnly | Direction::Inactive) => continue,
        };
        let Some(id) = u8::try_from(extmap.id).ok().filter(|id| (1..=MAX_ONE_BYTE_EXTENSION_ID).contains(id)) else {
            continue;
        };
        let Some(slot) = kept.slot(&extmap.uri, transport_cc) else { continue };
        if slot.is_some() {
            continue;
        }
        *slot = Some(id);
        writer::add(
            section,
            SdpAttribute::Extmap(SdpAttributeExtmap {
                id: extmap.id,
                direction,
                url: extmap.uri.clone(),
                extension_attributes: None,
            }),
        );
    }
    kept
}

/// Answers the publisher's simulcast send list with the layers the SFU takes to receive,
/// one `recv` rid per layer, and returns the layers' rids; nothing when the offer has no
/// simulcast. A layer is taken when a `send` rid declares it, its name is a short token
/// (1 to 16 letters, digits, `-`, `_`), and it is not listed twice; the first
/// [`MAX_SIMULCAST_LAYERS`] are kept. Of alternatives (`,`) the first is taken; a layer the
/// offer starts paused (`~`) is received when the publisher starts it.
fn accept_simulcast(section: &mut SdpMedia, media: &RemoteMedia) -> Vec<String> {
    let Some(simulcast) = media.simulcast.as_ref().filter(|s| !s.send.is_empty()) else {
        return Vec::new();
    };
    let token = |id: &str| {
        (1..=16).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut layers: Vec<String> = Vec::new();
    for id in simulcast.send.split(';').filter_map(|stream| stream.split(',').next()) {
        let id = id.trim_start_matches('~');
        if token(id) && media.rids.iter().any(|rid| rid.send && rid.id == id) && !layers.iter().any(|l| l == id) {
            layers.push(id.to_owned());
        }
    }
    layers.truncate(MAX_SIMULCAST_LAYERS);
    // The crate's own grammar builds these lines; if it refuses one, simulcast is declined
    // and the browser falls back to one encoding.
    let lines: Result<Vec<SdpAttribute>, _> = layers
        .iter()
        .map(|id| format!("rid:{id} recv"))
        .chain([format!("simulcast:recv {}", layers.join(";"))])
        .map(|line| SdpAttribute::from_str(&line))
        .collect();
    match lines {
        Ok(lines) if !layers.is_empty() => {
            for line in lines {
                writer::add(section, line);
            }
            layers
        }
        _ => Vec::new(),
    }
}

/// At most this many simulcast layers are received per stream (browsers send up to three).
pub const MAX_SIMULCAST_LAYERS: usize = 4;

/// The publisher's streams: the media SSRCs (in `SIM` order when grouped, else in order of
/// appearance, repair SSRCs left out; at most [`MAX_SIMULCAST_LAYERS`], the rest are not
/// received), each with its RTX SSRC from `FID`.
fn streams(media: &RemoteMedia) -> Vec<RemoteStream> {
    let pairs = |semantics: &'static str| {
        media
            .ssrc_groups
            .iter()
            .filter(move |g| g.semantics == semantics && g.ssrcs.len() == 2)
            .map(|g| (g.ssrcs[0], g.ssrcs[1]))
    };
    let repairs: HashSet<Ssrc> = pairs("FID").chain(pairs("FEC-FR")).map(|(_, repair)| repair).collect();
    let layers = media.ssrc_groups.iter().find(|g| g.semantics == "SIM").map(|g| g.ssrcs.clone());
    let media_ssrcs =
        layers.unwrap_or_else(|| media.ssrcs.iter().map(|s| s.ssrc).filter(|ssrc| !repairs.contains(ssrc)).collect());
    media_ssrcs
        .into_iter()
        .take(MAX_SIMULCAST_LAYERS)
        .map(|ssrc| RemoteStream {
            ssrc,
            rtx_ssrc: pairs("FID").find(|&(primary, _)| primary == ssrc).map(|(_, rtx)| rtx),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::PayloadType;

    fn h264(pt: u8, fmtp: &str) -> Codec {
        Codec {
            payload_type: PayloadType(pt),
            name: "H264".into(),
            clock_rate: 90000,
            channels: None,
            fmtp: fmtp.into(),
            rtcp_fb: Vec::new(),
            rtx_payload_type: None,
        }
    }

    #[test]
    fn constrained_baseline_is_recognised_from_rfc_6184_table_5() {
        for cb in ["42e01f", "42c01f", "42401f", "4d801f", "58c01f", "42E01F"] {
            assert!(is_constrained_baseline(cb), "{cb}");
        }
        for other in ["42001f", "4d001f", "64001f", "640c1f", "42e", "zz e01f", ""] {
            assert!(!is_constrained_baseline(other), "{other}");
        }
    }

    #[test]
    fn h264_ranking_prefers_mode_1_then_42e01f_then_constrained_baseline() {
        let ranked = |fmtp| h264_rank(&h264(96, fmtp));
        assert!(
            ranked("packetization-mode=1;profile-level-id=42e01f")
                > ranked("packetization-mode=1;profile-level-id=42c01f")
        );
        assert!(
            ranked("packetization-mode=1;profile-level-id=42c01f")
                > ranked("packetization-mode=1;profile-level-id=64001f")
        );
        assert!(ranked("packetization-mode=1;profile-level-id=64001f") > ranked("profile-level-id=42e01f"));
        assert_eq!(h264_mode(&h264(96, "packetization-mode=2")), None);
    }
}
