//! The SFU's own offers to a subscriber: server-initiated renegotiation each time the set of
//! tracks it forwards to that peer changes.
//!
//! Sections keep their place for the session's lifetime (JSEP §5.2.2): a track that went
//! away leaves its section closed (port 0, `a=inactive`) in this offer, and a section closed
//! in an earlier, answered offer may be recycled for a new track of the same kind, under the
//! new track's mid. Keeping the kind avoids relying on peers to change a transceiver's kind.
//!
//! Offers say `a=setup:actpass` although the SFU is always the DTLS server: RFC 5763 §5 and
//! JSEP require it of every offer, and Chromium refuses an offer without it ("Offerer must
//! use actpass value for setup attribute"). mediasoup, Janus and pion (LiveKit) all offer
//! `actpass`; browsers answer `active`, and an answer saying `passive` is refused when parsed.

use std::collections::{HashMap, HashSet};

use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeExtmap, SdpAttributeMsid, SdpAttributeSetup, SdpAttributeSsrc, SdpSsrcGroupSemantic,
};
use webrtc_sdp::media_type::SdpMedia;

use super::codec::{Codec, CodecPolicy, HeaderExtensions, supported_feedback};
use super::error::SdpError;
use super::ids::{Direction, Mid, PayloadType, SectionKind, Ssrc};
use super::local::LocalParameters;
use super::writer;

/// One track the SFU sends to the subscriber, typically built from a publisher's
/// [`super::NegotiatedSection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingTrack {
    /// 1 to 16 token characters (so it fits a one-byte mid header extension), never one the
    /// layout has seen before unless this is that same section's track.
    pub mid: Mid,
    /// Audio or video.
    pub kind: SectionKind,
    /// With its RTX payload type when the track is repaired by RTX.
    pub codec: Codec,
    pub ssrc: Ssrc,
    /// Present exactly when `codec.rtx_payload_type` is.
    pub rtx_ssrc: Option<Ssrc>,
    /// The msid stream and track ids (RFC 8830), 1 to 64 printable characters each.
    pub stream_id: String,
    pub track_id: String,
    /// The RTCP CNAME, shared by the tracks of one publisher so the subscriber syncs them.
    pub cname: String,
}

/// The sections of a subscriber session, in m-line order, as the last offer left them. The
/// caller keeps the layout of the last offer the subscriber answered, and starts from
/// `OfferLayout::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferLayout {
    sections: Vec<OfferedSection>,
    /// Mids whose sections were recycled: never handed out again.
    retired: Vec<Mid>,
}

impl OfferLayout {
    pub fn sections(&self) -> &[OfferedSection] {
        &self.sections
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedSection {
    pub mid: Mid,
    pub kind: SectionKind,
    pub state: SectionState,
    /// The codec last sent here, which a closed section's m-line still names.
    codec: Codec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionState {
    Sending,
    /// `a=inactive` but still in the BUNDLE group with its port: the first section of the
    /// group, whose track went away. It carries the group's transport, and a browser
    /// (Chromium) whose tagged section is closed starts a new transport, which the SFU's
    /// ICE-lite, DTLS-server side would never complete; so it idles for the session instead.
    Idle,
    /// Port 0 and `a=inactive`: its track went away. Recyclable once an answer to the offer
    /// that closed it has been applied.
    Closed,
}

/// An offer and the layout it commits to if the subscriber answers it.
#[derive(Debug, Clone)]
pub struct SubscriberOffer {
    pub sdp: String,
    pub layout: OfferLayout,
}

/// The header extension ids the SFU offers subscribers, the same in every section of a
/// BUNDLE group as RFC 8843 requires. The dataplane writes these ids into what it
/// forwards, for those the subscriber's answer kept.
pub fn subscriber_extensions(kind: SectionKind, policy: &CodecPolicy) -> HeaderExtensions {
    HeaderExtensions {
        mid: Some(1),
        abs_send_time: Some(2),
        audio_level: (kind == SectionKind::Audio).then_some(3),
        transport_cc: policy.transport_cc.then_some(4),
        video_orientation: (kind == SectionKind::Video).then_some(5),
        // One layer is forwarded per subscriber, so rids are never offered.
        rtp_stream_id: None,
        repaired_rtp_stream_id: None,
    }
}

/// Offers `tracks` to a subscriber whose last answered offer left `previous`. Every section
/// of `previous` stays at its place; tracks with a new mid recycle or append sections.
pub fn offer(
    local: &LocalParameters,
    previous: &OfferLayout,
    tracks: &[OutgoingTrack],
    policy: &CodecPolicy,
) -> Result<SubscriberOffer, SdpError> {
    local.validate()?;
    check_tracks(tracks, previous)?;
    let layout = arrange(previous, tracks)?;

    let mut session = writer::new_session(local);
    let bundled: Vec<&Mid> =
        layout.sections.iter().filter(|s| s.state != SectionState::Closed).map(|s| &s.mid).collect();
    if !bundled.is_empty() {
        writer::add_to_session(&mut session, writer::bundle_group(&bundled));
    }
    for section in &layout.sections {
        let track = tracks.iter().find(|t| t.mid == section.mid);
        let tagged = bundled.first() == Some(&&section.mid);
        session.media.push(match (section.state, track) {
            (SectionState::Sending, Some(track)) => sending_section(track, local, policy, tagged),
            (SectionState::Idle, _) => idle_section(section, local, tagged),
            _ => {
                let line = writer::rtp_media_line(section.kind, vec![u32::from(section.codec.payload_type.0)]);
                writer::closed_section(line, &section.mid, Some(&section.codec))
            }
        });
    }
    Ok(SubscriberOffer { sdp: session.to_string(), layout })
}

/// The next layout: `previous` with sections whose track left closed, then each new track in
/// a recyclable section of its kind or a new one at the end.
fn arrange(previous: &OfferLayout, tracks: &[OutgoingTrack]) -> Result<OfferLayout, SdpError> {
    let mut layout =
        OfferLayout { sections: Vec::with_capacity(previous.sections.len()), retired: previous.retired.clone() };
    let tagged = previous.sections.iter().find(|s| s.state != SectionState::Closed).map(|s| &s.mid);
    for old in &previous.sections {
        let track = tracks.iter().find(|t| t.mid == old.mid);
        layout.sections.push(match (old.state, track) {
            (SectionState::Closed | SectionState::Idle, Some(track)) => {
                return Err(invalid(track, "its mid names a closed section; a new track takes a new mid"));
            }
            (SectionState::Sending, Some(track)) if track.kind != old.kind => {
                return Err(invalid(track, "its section carried the other kind"));
            }
            (SectionState::Sending, Some(track)) => OfferedSection { codec: track.codec.clone(), ..old.clone() },
            // The group's transport stays on its first section.
            (SectionState::Sending | SectionState::Idle, None) if Some(&old.mid) == tagged => {
                OfferedSection { state: SectionState::Idle, ..old.clone() }
            }
            (_, None) => OfferedSection { state: SectionState::Closed, ..old.clone() },
        });
    }
    for track in tracks.iter().filter(|t| !previous.sections.iter().any(|s| s.mid == t.mid)) {
        let fresh = OfferedSection {
            mid: track.mid.clone(),
            kind: track.kind,
            state: SectionState::Sending,
            codec: track.codec.clone(),
        };
        // Closed in `previous` (so answered closed) and not yet taken by another new track.
        let recyclable =
            previous.sections.iter().zip(&layout.sections).position(|(old, now)| {
                old.state == SectionState::Closed && now.mid == old.mid && old.kind == track.kind
            });
        match recyclable {
            Some(index) => {
                let recycled = std::mem::replace(&mut layout.sections[index], fresh);
                layout.retired.push(recycled.mid);
            }
            None => layout.sections.push(fresh),
        }
    }
    Ok(layout)
}

fn invalid(track: &OutgoingTrack, reason: &'static str) -> SdpError {
    SdpError::InvalidTrack { mid: track.mid.clone(), reason }
}

/// Everything a track puts on a line is checked here, so no caller's value can break the
/// grammar or smuggle in a line of its own.
fn check_tracks(tracks: &[OutgoingTrack], previous: &OfferLayout) -> Result<(), SdpError> {
    let mut mids = HashSet::new();
    let mut ssrcs = HashSet::new();
    // In one BUNDLE group a payload type names one format everywhere (RFC 8843), which
    // Chromium enforces; tracks from publishers that numbered differently must be remapped.
    let mut formats: HashMap<PayloadType, String> = HashMap::new();
    for track in tracks {
        let mid = track.mid.as_str();
        if !(1..=16).contains(&mid.len()) || !is_token(mid) {
            return Err(invalid(track, "a mid is 1 to 16 token characters"));
        }
        if !mids.insert(&track.mid) {
            return Err(SdpError::DuplicateMid(track.mid.clone()));
        }
        if previous.retired.contains(&track.mid) {
            return Err(invalid(track, "its mid named a section since recycled; a new track takes a new mid"));
        }
        if track.kind == SectionKind::Application {
            return Err(invalid(track, "a track is audio or video"));
        }
        let codec = &track.codec;
        let payload_types = std::iter::once(codec.payload_type).chain(codec.rtx_payload_type);
        if payload_types.clone().any(|pt| pt.0 > PayloadType::MAX) {
            return Err(invalid(track, "payload types are 0 to 127"));
        }
        if codec.rtx_payload_type == Some(codec.payload_type) {
            return Err(invalid(track, "the RTX payload type equals the media one"));
        }
        if codec.rtx_payload_type.is_some() != track.rtx_ssrc.is_some() {
            return Err(invalid(track, "RTX needs both its payload type and its SSRC"));
        }
        if !is_token(&codec.name) {
            return Err(invalid(track, "the codec name is one token"));
        }
        if !codec.fmtp.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(track, "fmtp is printable with no spaces"));
        }
        // RFC 8830 says token characters, but Firefox writes `{uuid}` and every browser takes
        // it; what the grammar needs is one printable word.
        for id in [&track.stream_id, &track.track_id] {
            if !(1..=64).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(track, "msid ids are 1 to 64 printable characters"));
            }
        }
        if track.cname.is_empty() || !track.cname.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(track, "a cname is printable with no spaces"));
        }
        let media_format =
            format!("{}/{}/{:?};{}", codec.name.to_ascii_lowercase(), codec.clock_rate, codec.channels, codec.fmtp);
        let rtx_format =
            codec.rtx_payload_type.map(|rtx| (rtx, format!("rtx/{};apt={}", codec.clock_rate, codec.payload_type)));
        for (pt, format) in std::iter::once((codec.payload_type, media_format)).chain(rtx_format) {
            if formats.entry(pt).or_insert_with(|| format.clone()) != &format {
                return Err(invalid(track, "its payload type names another format in the same BUNDLE group"));
            }
        }
        for ssrc in std::iter::once(track.ssrc).chain(track.rtx_ssrc) {
            if !ssrcs.insert(ssrc) {
                return Err(invalid(track, "its SSRC is used twice in the offer"));
            }
        }
    }
    Ok(())
}

/// RFC 4566 token-char: visible ASCII but `"(),/:;<=>?@[\]{}`.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic() && !br#""(),/:;<=>?@[\]{}"#.contains(&b))
}

/// An idle section: its m-line and codec, the transport (candidates when tagged), and
/// `a=inactive`, with no track.
fn idle_section(section: &OfferedSection, local: &LocalParameters, tagged: bool) -> SdpMedia {
    let line = writer::rtp_media_line(section.kind, vec![u32::from(section.codec.payload_type.0)]);
    let mut media = writer::live_section(line, local);
    writer::add(&mut media, SdpAttribute::Mid(section.mid.to_string()));
    writer::add_transport(&mut media, local, SdpAttributeSetup::Actpass, tagged);
    writer::add(&mut media, writer::direction(Direction::Inactive));
    writer::add(&mut media, SdpAttribute::RtcpMux);
    writer::add_codec(&mut media, &section.codec, &section.codec.fmtp, &[]);
    media
}

fn sending_section(track: &OutgoingTrack, local: &LocalParameters, policy: &CodecPolicy, tagged: bool) -> SdpMedia {
    let codec = &track.codec;
    let formats = std::iter::once(codec.payload_type).chain(codec.rtx_payload_type).map(|pt| u32::from(pt.0)).collect();
    let mut section = writer::live_section(writer::rtp_media_line(track.kind, formats), local);
    writer::add(&mut section, SdpAttribute::Mid(track.mid.to_string()));
    writer::add_transport(&mut section, local, SdpAttributeSetup::Actpass, tagged);
    for (id, uri) in subscriber_extensions(track.kind, policy).entries() {
        if let Some(id) = id {
            writer::add(
                &mut section,
                SdpAttribute::Extmap(SdpAttributeExtmap {
                    id: u16::from(id),
                    direction: None,
                    url: uri.to_owned(),
                    extension_attributes: None,
                }),
            );
        }
    }
    writer::add(&mut section, writer::direction(Direction::SendOnly));
    writer::add(&mut section, SdpAttribute::RtcpMux);
    writer::add(&mut section, SdpAttribute::RtcpRsize);
    writer::add_codec(&mut section, codec, &codec.fmtp, &supported_feedback(&codec.rtcp_fb, policy.transport_cc));
    add_track_identity(&mut section, track);
    section
}

/// The msid and SSRC lines that let the receiver demultiplex `track` and group it with its
/// publisher's other tracks (RFC 8830, RFC 5576), with its RTX SSRC when it has one.
pub(crate) fn add_track_identity(section: &mut SdpMedia, track: &OutgoingTrack) {
    writer::add(
        section,
        SdpAttribute::Msid(SdpAttributeMsid { id: track.stream_id.clone(), appdata: Some(track.track_id.clone()) }),
    );
    if let Some(rtx) = track.rtx_ssrc {
        writer::add(
            section,
            SdpAttribute::SsrcGroup(
                SdpSsrcGroupSemantic::FlowIdentification,
                vec![SdpAttributeSsrc::new(track.ssrc.0), SdpAttributeSsrc::new(rtx.0)],
            ),
        );
    }
    let msid = format!("{} {}", track.stream_id, track.track_id);
    for ssrc in std::iter::once(track.ssrc).chain(track.rtx_ssrc) {
        for (attribute, value) in [("cname", &track.cname), ("msid", &msid)] {
            writer::add(
                section,
                SdpAttribute::Ssrc(SdpAttributeSsrc {
                    id: ssrc.0,
                    attribute: Some(attribute.to_owned()),
                    value: Some(value.clone()),
                }),
            );
        }
    }
}
