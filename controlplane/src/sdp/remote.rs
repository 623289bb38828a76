//! A peer's session description, parsed and checked once into typed form: a browser's offer
//! when it publishes, or a subscriber's answer to an SFU offer.

use std::collections::HashSet;

use webrtc_sdp::SdpSession;
use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeDirection, SdpAttributeFingerprintHashType, SdpAttributeFmtpParameters,
    SdpAttributeGroupSemantic, SdpAttributePayloadType, SdpAttributeRtcpFb, SdpAttributeSetup, SdpAttributeType,
    SdpSingleDirection,
};
use webrtc_sdp::error::SdpParserError;
use webrtc_sdp::media_type::{SdpFormatList, SdpMedia, SdpMediaLine, SdpMediaValue};

use super::MAX_SDP_BYTES;
use super::codec::Codec;
use super::error::SdpError;
use super::ids::{Direction, Mid, PayloadType, SectionKind, Ssrc};
use uprtcd_dataplane::dtls::CertificateFingerprint;

/// A peer's description after every check of [`RemoteDescription::parse`] passed: one BUNDLE
/// transport with one set of ICE credentials and one sha-256 fingerprint, every live section
/// in the BUNDLE group and rtcp-muxed.
#[derive(Debug, Clone)]
pub struct RemoteDescription {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    pub fingerprint: CertificateFingerprint,
    pub setup: RemoteSetup,
    /// The BUNDLE group's mids in the peer's order, first the tagged one, naming only live
    /// sections of this description.
    pub bundle: Vec<Mid>,
    /// Every m-line, in order, rejected ones included.
    pub media: Vec<RemoteMedia>,
}

/// The peer's DTLS role. `passive` and `holdconn` are refused: the SFU is always the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteSetup {
    /// The peer offers to be either (the value every offer carries).
    Actpass,
    /// The peer will be the DTLS client (a browser's answer; also RFC 4145's default).
    Active,
}

/// One m-line of a peer's description.
#[derive(Debug, Clone)]
pub struct RemoteMedia {
    pub mid: Mid,
    pub kind: SectionKind,
    /// Port 0 without `a=bundle-only`: the peer rejected or stopped this section.
    pub rejected: bool,
    pub direction: Direction,
    /// Payload formats in the peer's order of preference; `rtx` formats are not listed but
    /// folded into the format they repair. Empty for data channels.
    pub codecs: Vec<Codec>,
    pub extmaps: Vec<Extmap>,
    /// `a=ssrc` lines, one entry per SSRC in order of first appearance.
    pub ssrcs: Vec<RemoteSsrc>,
    pub ssrc_groups: Vec<SsrcGroup>,
    pub msid: Option<Msid>,
    pub rids: Vec<Rid>,
    pub simulcast: Option<Simulcast>,
    pub rtcp_rsize: bool,
    /// Kept to answer a rejected section with the m-line it was offered with.
    pub(crate) line: SdpMediaLine,
}

/// `a=extmap`: a header extension's id and URI (RFC 8285).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extmap {
    pub id: u16,
    pub uri: String,
    /// The direction suffix (`2/recvonly`), if given.
    pub direction: Option<Direction>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSsrc {
    pub ssrc: Ssrc,
    pub cname: Option<String>,
    /// `a=ssrc:<ssrc> msid:<stream> <track>`.
    pub msid: Option<Msid>,
}

/// `a=ssrc-group` (RFC 5576): `FID` pairs a media SSRC with its RTX SSRC, `SIM` lists
/// simulcast layers, `FEC-FR` pairs a media SSRC with its FlexFEC SSRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsrcGroup {
    pub semantics: String,
    pub ssrcs: Vec<Ssrc>,
}

/// `a=msid` (RFC 8830): the MediaStream id and the track id (`-` for no stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msid {
    pub stream_id: String,
    pub track_id: Option<String>,
}

/// `a=rid` (RFC 8851), recorded as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rid {
    pub id: String,
    /// `true` for `send`, the direction a publisher's rids have.
    pub send: bool,
    /// The attribute's value, as the SDP crate writes it back (`h send pt=96;max-width=1280`).
    pub value: String,
}

/// `a=simulcast` (RFC 8853): the send and receive stream lists as written (`h;m;~l`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulcast {
    pub send: String,
    pub recv: String,
}

impl RemoteDescription {
    /// Parses and checks a peer's description. Input over [`MAX_SDP_BYTES`] is refused before
    /// any parsing; whatever else comes in, this returns an error rather than panic.
    pub fn parse(sdp: &str) -> Result<Self, SdpError> {
        if sdp.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge { size: sdp.len() });
        }
        let session = webrtc_sdp::parse_sdp(sdp, false).map_err(|error| SdpError::NotSdp(error.to_string()))?;
        refuse_skipped_media_lines(&session)?;

        let mut media = Vec::with_capacity(session.media.len());
        let mut mids = HashSet::new();
        for (index, section) in session.media.iter().enumerate() {
            let parsed = parse_media(index, section, &session)?;
            if !mids.insert(parsed.mid.clone()) {
                return Err(SdpError::DuplicateMid(parsed.mid));
            }
            media.push(parsed);
        }
        if media.iter().all(|m| m.rejected) {
            return Err(SdpError::NoMedia);
        }

        let bundle = bundle_group(&session, &media)?;
        let transport = Transport::of(&session, &media, &bundle)?;
        for (section, parsed) in session.media.iter().zip(&media) {
            let rtp = !parsed.rejected && parsed.kind != SectionKind::Application;
            if rtp && section.get_attribute(SdpAttributeType::RtcpMux).is_none() {
                return Err(SdpError::RtcpMuxMissing { mid: parsed.mid.clone() });
            }
        }
        Ok(RemoteDescription {
            ice_ufrag: transport.ice_ufrag,
            ice_pwd: transport.ice_pwd,
            fingerprint: transport.fingerprint,
            setup: transport.setup,
            bundle,
            media,
        })
    }

    pub fn media(&self, mid: &Mid) -> Option<&RemoteMedia> {
        self.media.iter().find(|m| &m.mid == mid)
    }
}

/// The parser turns an m-line it cannot read (an unknown protocol) into a warning and goes
/// on, so that section's attributes would land on the section before it.
fn refuse_skipped_media_lines(session: &SdpSession) -> Result<(), SdpError> {
    for warning in &session.warnings {
        if let SdpParserError::Unsupported { line, .. } = warning
            && line.trim_start().starts_with("m=")
        {
            return Err(SdpError::UnsupportedMediaLine(line.trim().to_owned()));
        }
    }
    Ok(())
}

fn mid_of(section: &SdpMedia) -> Option<&str> {
    match section.get_attribute(SdpAttributeType::Mid) {
        Some(SdpAttribute::Mid(mid)) => Some(mid),
        _ => None,
    }
}

fn parse_media(index: usize, section: &SdpMedia, session: &SdpSession) -> Result<RemoteMedia, SdpError> {
    let mid = Mid::new(mid_of(section).ok_or(SdpError::MissingMid { index })?);
    let kind = match section.get_type() {
        SdpMediaValue::Audio => SectionKind::Audio,
        SdpMediaValue::Video => SectionKind::Video,
        SdpMediaValue::Application => SectionKind::Application,
        SdpMediaValue::Unknown(_) => {
            return Err(SdpError::UnsupportedMediaLine(format!("m={}", media_line(section))));
        }
    };
    let attributes = section.get_attributes();
    let codecs = codecs_of(section).map_err(|reason| SdpError::InvalidPayloadTypes { mid: mid.clone(), reason })?;
    let mut media = RemoteMedia {
        mid,
        kind,
        rejected: section.get_port() == 0 && section.get_attribute(SdpAttributeType::BundleOnly).is_none(),
        direction: direction_of(attributes).or_else(|| direction_of(&session.attribute)).unwrap_or(Direction::SendRecv),
        codecs,
        extmaps: Vec::new(),
        ssrcs: Vec::new(),
        ssrc_groups: Vec::new(),
        msid: None,
        rids: Vec::new(),
        simulcast: None,
        rtcp_rsize: section.get_attribute(SdpAttributeType::RtcpRsize).is_some(),
        line: media_line(section),
    };
    // The parser refuses extmaps at both levels, so session-level ones apply to every section.
    let extmap_source =
        if section.get_attribute(SdpAttributeType::Extmap).is_some() { attributes } else { &session.attribute };
    for attribute in extmap_source {
        if let SdpAttribute::Extmap(extmap) = attribute {
            media.extmaps.push(Extmap {
                id: extmap.id,
                uri: extmap.url.clone(),
                direction: extmap.direction.as_ref().map(extmap_direction),
            });
        }
    }
    for attribute in attributes {
        match attribute {
            SdpAttribute::Ssrc(line) => {
                let position = match media.ssrcs.iter().position(|s| s.ssrc.0 == line.id) {
                    Some(position) => position,
                    None => {
                        media.ssrcs.push(RemoteSsrc { ssrc: Ssrc(line.id), cname: None, msid: None });
                        media.ssrcs.len() - 1
                    }
                };
                let entry = &mut media.ssrcs[position];
                match (line.attribute.as_deref(), line.value.as_deref()) {
                    (Some("cname"), Some(cname)) => entry.cname = Some(cname.to_owned()),
                    (Some("msid"), Some(msid)) => entry.msid = Some(msid_from(msid)),
                    _ => {}
                }
            }
            SdpAttribute::SsrcGroup(semantics, ssrcs) => media.ssrc_groups.push(SsrcGroup {
                semantics: semantics.to_string(),
                ssrcs: ssrcs.iter().map(|s| Ssrc(s.id)).collect(),
            }),
            SdpAttribute::Msid(msid) if media.msid.is_none() => {
                media.msid = Some(Msid { stream_id: msid.id.clone(), track_id: msid.appdata.clone() });
            }
            SdpAttribute::Rid(rid) => media.rids.push(Rid {
                id: rid.id.clone(),
                send: rid.direction == SdpSingleDirection::Send,
                value: rid.to_string(),
            }),
            SdpAttribute::Simulcast(simulcast) => {
                let list = |versions: &[webrtc_sdp::attribute_type::SdpAttributeSimulcastVersion]| {
                    versions.iter().map(ToString::to_string).collect::<Vec<_>>().join(";")
                };
                media.simulcast = Some(Simulcast { send: list(&simulcast.send), recv: list(&simulcast.receive) });
            }
            _ => {}
        }
    }
    Ok(media)
}

fn media_line(section: &SdpMedia) -> SdpMediaLine {
    SdpMediaLine {
        media: section.get_type().clone(),
        port: section.get_port(),
        port_count: section.get_port_count(),
        proto: section.get_proto().clone(),
        formats: section.get_formats().clone(),
    }
}

fn direction_of(attributes: &[SdpAttribute]) -> Option<Direction> {
    attributes.iter().find_map(|attribute| match attribute {
        SdpAttribute::Sendrecv => Some(Direction::SendRecv),
        SdpAttribute::Sendonly => Some(Direction::SendOnly),
        SdpAttribute::Recvonly => Some(Direction::RecvOnly),
        SdpAttribute::Inactive => Some(Direction::Inactive),
        _ => None,
    })
}

fn extmap_direction(direction: &SdpAttributeDirection) -> Direction {
    match direction {
        SdpAttributeDirection::Sendrecv => Direction::SendRecv,
        SdpAttributeDirection::Sendonly => Direction::SendOnly,
        SdpAttributeDirection::Recvonly => Direction::RecvOnly,
    }
}

fn msid_from(value: &str) -> Msid {
    let mut tokens = value.split_whitespace();
    Msid { stream_id: tokens.next().unwrap_or_default().to_owned(), track_id: tokens.next().map(str::to_owned) }
}

/// The payload formats of an RTP section, in m-line order, with their fmtp, feedback and RTX.
/// Refuses numbers RTP cannot carry (above 127), a number listed twice on the m-line, and one
/// number mapped to two formats: the SFU writes numbers into packets and could not tell which
/// format a packet is.
fn codecs_of(section: &SdpMedia) -> Result<Vec<Codec>, &'static str> {
    let SdpFormatList::Integers(formats) = section.get_formats() else {
        return Ok(Vec::new());
    };
    let attributes = section.get_attributes();
    if formats.iter().any(|&pt| pt > 127) {
        return Err("a payload type above 127");
    }
    if formats.iter().enumerate().any(|(i, pt)| formats[..i].contains(pt)) {
        return Err("a payload type listed twice");
    }
    let mapped: Vec<u8> = attributes
        .iter()
        .filter_map(|a| match a {
            SdpAttribute::Rtpmap(rtpmap) => Some(rtpmap.payload_type),
            _ => None,
        })
        .collect();
    if mapped.iter().enumerate().any(|(i, pt)| mapped[..i].contains(pt)) {
        return Err("two a=rtpmap lines for one payload type");
    }
    let mut codecs = Vec::new();
    let mut repairs = Vec::new();
    for &format in formats {
        let Some(rtpmap) = attributes.iter().find_map(|a| match a {
            SdpAttribute::Rtpmap(rtpmap) if u32::from(rtpmap.payload_type) == format => Some(rtpmap),
            _ => None,
        }) else {
            // A static payload type without rtpmap: nothing the SFU negotiates.
            continue;
        };
        let payload_type = rtpmap.payload_type;
        let fmtp = attributes.iter().find_map(|a| match a {
            SdpAttribute::Fmtp(fmtp) if fmtp.payload_type == payload_type => Some(&fmtp.parameters),
            _ => None,
        });
        if rtpmap.codec_name.eq_ignore_ascii_case("rtx") {
            if let Some(rtx) = fmtp.and_then(|parameters| parameters.rtx) {
                repairs.push((PayloadType(payload_type), PayloadType(rtx.apt)));
            }
            continue;
        }
        codecs.push(Codec {
            payload_type: PayloadType(payload_type),
            name: rtpmap.codec_name.clone(),
            clock_rate: rtpmap.frequency,
            channels: rtpmap.channels,
            fmtp: fmtp.map(render_fmtp).unwrap_or_default(),
            rtcp_fb: attributes
                .iter()
                .filter_map(|a| match a {
                    SdpAttribute::Rtcpfb(feedback) if applies_to(feedback, payload_type) => {
                        Some(feedback_text(feedback))
                    }
                    _ => None,
                })
                .collect(),
            rtx_payload_type: None,
        });
    }
    for (rtx, associated) in repairs {
        if let Some(codec) = codecs.iter_mut().find(|c| c.payload_type == associated && c.rtx_payload_type.is_none()) {
            codec.rtx_payload_type = Some(rtx);
        }
    }
    Ok(codecs)
}

fn applies_to(feedback: &SdpAttributeRtcpFb, payload_type: u8) -> bool {
    match feedback.payload_type {
        SdpAttributePayloadType::PayloadType(pt) => pt == payload_type,
        SdpAttributePayloadType::Wildcard => true,
    }
}

/// The feedback as written after the payload type: the crate's rendering without its pt.
fn feedback_text(feedback: &SdpAttributeRtcpFb) -> String {
    let mut text = feedback.feedback_type.to_string();
    for part in [&feedback.parameter, &feedback.extra] {
        if !part.is_empty() {
            text.push(' ');
            text.push_str(part);
        }
    }
    text
}

/// Format parameters as `key=value;...`. The crate writes parameters it does not know joined
/// by `,`, which would glue two of them into one; they are joined by `;` here instead.
fn render_fmtp(parameters: &SdpAttributeFmtpParameters) -> String {
    let mut known = parameters.clone();
    let unknown = std::mem::take(&mut known.unknown_tokens);
    std::iter::once(known.to_string()).chain(unknown).filter(|part| !part.is_empty()).collect::<Vec<_>>().join(";")
}

/// The first BUNDLE group, which every live section must be in. Its mids keep the peer's
/// order; any that name no live section are dropped.
fn bundle_group(session: &SdpSession, media: &[RemoteMedia]) -> Result<Vec<Mid>, SdpError> {
    let tags = session
        .attribute
        .iter()
        .find_map(|attribute| match attribute {
            SdpAttribute::Group(group) if matches!(group.semantics, SdpAttributeGroupSemantic::Bundle) => {
                Some(&group.tags)
            }
            _ => None,
        })
        .ok_or(SdpError::NoBundle)?;
    let live = |mid: &str| media.iter().any(|m| !m.rejected && m.mid.as_str() == mid);
    if let Some(outside) = media.iter().find(|m| !m.rejected && !tags.iter().any(|tag| tag == m.mid.as_str())) {
        return Err(SdpError::NotBundled { mid: outside.mid.clone() });
    }
    let mut bundle: Vec<Mid> = Vec::with_capacity(tags.len());
    for tag in tags.iter().filter(|tag| live(tag)) {
        if !bundle.iter().any(|mid| mid.as_str() == tag) {
            bundle.push(Mid::new(tag.as_str()));
        }
    }
    Ok(bundle)
}

/// The transport parameters of the BUNDLE group: the tagged (first) section's, each section's
/// own attribute winning over the session-level one (RFC 8839, RFC 8122). Other sections'
/// parameters are not used: an offer made under the `balanced` bundle policy (aiortc's
/// default, libwebrtc's with `balanced`) gives each section its own credentials in case the
/// answerer refuses BUNDLE, and one that accepts uses the tagged section's transport for
/// all of them (RFC 8843 §7.3.1).
struct Transport {
    ice_ufrag: String,
    ice_pwd: String,
    fingerprint: CertificateFingerprint,
    setup: RemoteSetup,
}

impl Transport {
    fn of(session: &SdpSession, media: &[RemoteMedia], bundle: &[Mid]) -> Result<Self, SdpError> {
        // The caller returned `NoMedia` already when no section is live, and every live
        // section is in the group.
        let tagged = bundle.first().ok_or(SdpError::NoMedia)?;
        let (section, parsed) =
            session.media.iter().zip(media).find(|(_, parsed)| &parsed.mid == tagged).ok_or(SdpError::NoMedia)?;
        let own = section.get_attributes();
        let ufrag = ice_value(own, &session.attribute, SdpAttributeType::IceUfrag);
        let pwd = ice_value(own, &session.attribute, SdpAttributeType::IcePwd);
        let fingerprint = fingerprint_of(own).or_else(|| fingerprint_of(&session.attribute)).transpose()?;
        let setup = setup_of(own).or_else(|| setup_of(&session.attribute)).transpose()?;
        let (Some(ice_ufrag), Some(ice_pwd)) = (ufrag, pwd) else {
            return Err(SdpError::MissingIceCredentials { mid: parsed.mid.clone() });
        };
        Ok(Transport {
            ice_ufrag: ice_ufrag.to_owned(),
            ice_pwd: ice_pwd.to_owned(),
            fingerprint: fingerprint.ok_or_else(|| missing_fingerprint(session))?,
            // RFC 4145's default.
            setup: setup.unwrap_or(RemoteSetup::Active),
        })
    }
}

fn ice_value<'a>(own: &'a [SdpAttribute], session: &'a [SdpAttribute], wanted: SdpAttributeType) -> Option<&'a str> {
    let find = |attributes: &'a [SdpAttribute]| {
        attributes.iter().find_map(|attribute| match (attribute, &wanted) {
            (SdpAttribute::IceUfrag(value), SdpAttributeType::IceUfrag) => Some(value.as_str()),
            (SdpAttribute::IcePwd(value), SdpAttributeType::IcePwd) => Some(value.as_str()),
            _ => None,
        })
    };
    find(own).or_else(|| find(session))
}

/// The sha-256 fingerprint among a level's fingerprints (a peer may list one per certificate
/// hash); `Some(Err)` when it lists only other hashes; `None` when it lists none.
fn fingerprint_of(attributes: &[SdpAttribute]) -> Option<Result<CertificateFingerprint, SdpError>> {
    let mut other_hash = None;
    for attribute in attributes {
        if let SdpAttribute::Fingerprint(fingerprint) = attribute {
            if fingerprint.hash_algorithm != SdpAttributeFingerprintHashType::Sha256 {
                other_hash.get_or_insert_with(|| fingerprint.hash_algorithm.to_string());
                continue;
            }
            // The parser checked the octet count against the hash, so this is 32 bytes.
            if let Ok(digest) = <[u8; 32]>::try_from(fingerprint.fingerprint.as_slice()) {
                return Some(Ok(CertificateFingerprint::from_bytes(digest)));
            }
        }
    }
    other_hash.map(|hash| Err(SdpError::UnsupportedFingerprint(hash)))
}

/// A fingerprint with a hash the parser does not know (md5, md2) comes through only as a
/// warning; name that hash rather than say the fingerprint is missing.
fn missing_fingerprint(session: &SdpSession) -> SdpError {
    session
        .warnings
        .iter()
        .find_map(|warning| match warning {
            SdpParserError::Unsupported { line, .. } => {
                let value = line.trim().strip_prefix("a=fingerprint:")?;
                Some(SdpError::UnsupportedFingerprint(value.split_whitespace().next().unwrap_or_default().to_owned()))
            }
            _ => None,
        })
        .unwrap_or(SdpError::MissingFingerprint)
}

fn setup_of(attributes: &[SdpAttribute]) -> Option<Result<RemoteSetup, SdpError>> {
    attributes.iter().find_map(|attribute| match attribute {
        SdpAttribute::Setup(SdpAttributeSetup::Actpass) => Some(Ok(RemoteSetup::Actpass)),
        SdpAttribute::Setup(SdpAttributeSetup::Active) => Some(Ok(RemoteSetup::Active)),
        SdpAttribute::Setup(SdpAttributeSetup::Passive) => Some(Err(SdpError::UnusableSetup("passive"))),
        SdpAttribute::Setup(SdpAttributeSetup::Holdconn) => Some(Err(SdpError::UnusableSetup("holdconn"))),
        _ => None,
    })
}
