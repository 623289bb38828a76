//! Writing descriptions through the SDP crate's typed model, so that every line sent is built
//! from the crate's own types and rendered by its own grammar. Shared by the answer and the
//! subscriber offer.

use std::net::{IpAddr, Ipv4Addr};

use webrtc_sdp::address::{Address, ExplicitlyTypedAddress};
use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeCandidate, SdpAttributeCandidateTcpType, SdpAttributeCandidateTransport,
    SdpAttributeCandidateType, SdpAttributeFingerprint, SdpAttributeFingerprintHashType, SdpAttributeFmtp,
    SdpAttributeFmtpParameters, SdpAttributeGroup, SdpAttributeGroupSemantic, SdpAttributePayloadType,
    SdpAttributeRtcpFb, SdpAttributeRtcpFbType, SdpAttributeRtpmap, SdpAttributeSetup,
};
use webrtc_sdp::media_type::{SdpFormatList, SdpMedia, SdpMediaLine, SdpMediaValue, SdpProtocolValue};
use webrtc_sdp::{SdpConnection, SdpOrigin, SdpSession, SdpTiming};

use super::codec::{Codec, Feedback};
use super::ids::{Direction, Mid, PayloadType, SectionKind};
use super::local::{CandidateTransport, LocalParameters};

/// `v=0`, `o=- <id> <version> IN IP4 0.0.0.0`, `s=-`, `t=0 0` and `a=ice-lite`: the SFU only
/// answers connectivity checks (RFC 8445 §2.5), which every description it sends says once.
pub(crate) fn new_session(local: &LocalParameters) -> SdpSession {
    let origin = SdpOrigin {
        username: "-".to_owned(),
        session_id: local.session_id,
        session_version: local.session_version,
        unicast_addr: ExplicitlyTypedAddress::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    };
    let mut session = SdpSession::new(0, origin, "-".to_owned());
    session.set_timing(SdpTiming { start: 0, stop: 0 });
    add_to_session(&mut session, SdpAttribute::IceLite);
    session
}

pub(crate) fn add_to_session(session: &mut SdpSession, attribute: SdpAttribute) {
    // The crate refuses only attribute kinds that are media-level by definition; this module
    // adds ice-lite and group here, both session-level.
    session.add_attribute(attribute).expect("only session-level attributes are added to the session");
}

pub(crate) fn add(section: &mut SdpMedia, attribute: SdpAttribute) {
    // As above: the check is on the attribute's kind, and every kind added to a section here
    // is allowed at media level.
    section.add_attribute(attribute).expect("only media-level attributes are added to sections");
}

pub(crate) fn bundle_group(mids: &[&Mid]) -> SdpAttribute {
    SdpAttribute::Group(SdpAttributeGroup {
        semantics: SdpAttributeGroupSemantic::Bundle,
        tags: mids.iter().map(|mid| mid.to_string()).collect(),
    })
}

/// A section on the shared transport. Every bundled section carries the same address and
/// port, the default candidate's (RFC 8839), as browsers write their own.
pub(crate) fn live_section(mut line: SdpMediaLine, local: &LocalParameters) -> SdpMedia {
    let address = match local.default_candidate() {
        Some(candidate) => {
            line.port = u32::from(candidate.address.port());
            candidate.address.ip()
        }
        // JSEP's placeholder, for parameters `validate` would have refused.
        None => {
            line.port = 9;
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    };
    line.port_count = 0;
    let mut section = SdpMedia::new(line);
    section.set_connection(SdpConnection { address: ExplicitlyTypedAddress::Ip(address), ttl: None, amount: None });
    section
}

/// A rejected or closed section: the m-line with port 0 (JSEP §5.3.1, §5.2.2), one format,
/// `c=IN IP4 0.0.0.0`, the mid, and for RTP `a=inactive`. When `codec` is given it is that one
/// format, with its rtpmap so that no parser meets a dynamic payload type it cannot name.
pub(crate) fn closed_section(mut line: SdpMediaLine, mid: &Mid, codec: Option<&Codec>) -> SdpMedia {
    line.port = 0;
    line.port_count = 0;
    line.formats = match (line.formats, codec) {
        (SdpFormatList::Integers(_), Some(codec)) => SdpFormatList::Integers(vec![u32::from(codec.payload_type.0)]),
        (SdpFormatList::Integers(formats), None) => SdpFormatList::Integers(formats.into_iter().take(1).collect()),
        (SdpFormatList::Strings(formats), _) => SdpFormatList::Strings(formats.into_iter().take(1).collect()),
        (unknown @ SdpFormatList::Unknown(_), _) => unknown,
    };
    let rtp = matches!(line.formats, SdpFormatList::Integers(_));
    let mut section = SdpMedia::new(line);
    section.set_connection(SdpConnection {
        address: ExplicitlyTypedAddress::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ttl: None,
        amount: None,
    });
    add(&mut section, SdpAttribute::Mid(mid.to_string()));
    if rtp {
        add(&mut section, SdpAttribute::Inactive);
        if let Some(codec) = codec {
            add(&mut section, rtpmap(codec));
        }
    }
    section
}

fn rtpmap(codec: &Codec) -> SdpAttribute {
    SdpAttribute::Rtpmap(SdpAttributeRtpmap {
        payload_type: codec.payload_type.0,
        codec_name: codec.name.clone(),
        frequency: codec.clock_rate,
        channels: codec.channels,
    })
}

/// The m-line of an RTP section the SFU offers; `live_section` or `closed_section` set its port.
pub(crate) fn rtp_media_line(kind: SectionKind, formats: Vec<u32>) -> SdpMediaLine {
    let media = match kind {
        SectionKind::Audio => SdpMediaValue::Audio,
        SectionKind::Video => SdpMediaValue::Video,
        SectionKind::Application => SdpMediaValue::Application,
    };
    SdpMediaLine {
        media,
        port: 9,
        port_count: 0,
        proto: SdpProtocolValue::UdpTlsRtpSavpf,
        formats: SdpFormatList::Integers(formats),
    }
}

pub(crate) fn direction(direction: Direction) -> SdpAttribute {
    match direction {
        Direction::SendRecv => SdpAttribute::Sendrecv,
        Direction::SendOnly => SdpAttribute::Sendonly,
        Direction::RecvOnly => SdpAttribute::Recvonly,
        Direction::Inactive => SdpAttribute::Inactive,
    }
}

/// ICE credentials, fingerprint and DTLS role on a bundled section; on the tagged one also
/// every candidate and `a=end-of-candidates`, since an ICE-lite agent has them all up front.
///
/// Every bundled section repeats the credentials and fingerprint, as Chromium, Firefox and
/// the SFUs they are tested with do, so no parser has to apply session-level inheritance.
pub(crate) fn add_transport(section: &mut SdpMedia, local: &LocalParameters, setup: SdpAttributeSetup, tagged: bool) {
    add(section, SdpAttribute::IceUfrag(local.ice_ufrag.clone()));
    add(section, SdpAttribute::IcePwd(local.ice_pwd.clone()));
    add(
        section,
        SdpAttribute::Fingerprint(SdpAttributeFingerprint {
            hash_algorithm: SdpAttributeFingerprintHashType::Sha256,
            fingerprint: local.fingerprint.as_bytes().to_vec(),
        }),
    );
    add(section, SdpAttribute::Setup(setup));
    if !tagged {
        return;
    }
    for (index, candidate) in local.candidates.iter().enumerate() {
        // RFC 8445 §5.1.1.3: one foundation per type, base address and transport.
        let first_alike = local.candidates[..index]
            .iter()
            .position(|c| c.address.ip() == candidate.address.ip() && c.transport == candidate.transport)
            .unwrap_or(index);
        let (transport, tcp_type) = match candidate.transport {
            CandidateTransport::Udp => (SdpAttributeCandidateTransport::Udp, None),
            CandidateTransport::TcpPassive => {
                (SdpAttributeCandidateTransport::Tcp, Some(SdpAttributeCandidateTcpType::Passive))
            }
        };
        let mut line = SdpAttributeCandidate::new(
            (first_alike + 1).to_string(),
            1,
            transport,
            u64::from(candidate.priority),
            Address::Ip(candidate.address.ip()),
            u32::from(candidate.address.port()),
            SdpAttributeCandidateType::Host,
        );
        line.tcp_type = tcp_type;
        add(section, SdpAttribute::Candidate(line));
    }
    add(section, SdpAttribute::EndOfCandidates);
}

/// `a=rtpmap`, `a=rtcp-fb` and `a=fmtp` for `codec`, then `a=rtpmap` and `a=fmtp:… apt=` for its
/// RTX format when it has one.
pub(crate) fn add_codec(section: &mut SdpMedia, codec: &Codec, fmtp: &str, feedback: &[Feedback]) {
    let pt = codec.payload_type.0;
    add(section, rtpmap(codec));
    for &kind in feedback {
        let (feedback_type, parameter) = match kind {
            Feedback::Nack => (SdpAttributeRtcpFbType::Nack, ""),
            Feedback::Pli => (SdpAttributeRtcpFbType::Nack, "pli"),
            Feedback::Fir => (SdpAttributeRtcpFbType::Ccm, "fir"),
            Feedback::Remb => (SdpAttributeRtcpFbType::Remb, ""),
            Feedback::TransportCc => (SdpAttributeRtcpFbType::TransCc, ""),
        };
        add(
            section,
            SdpAttribute::Rtcpfb(SdpAttributeRtcpFb {
                payload_type: SdpAttributePayloadType::PayloadType(pt),
                feedback_type,
                parameter: parameter.to_owned(),
                extra: String::new(),
            }),
        );
    }
    add_fmtp(section, codec.payload_type, fmtp);
    if let Some(rtx) = codec.rtx_payload_type {
        add(section, SdpAttribute::Rtpmap(SdpAttributeRtpmap::new(rtx.0, "rtx".to_owned(), codec.clock_rate)));
        add_fmtp(section, rtx, &format!("apt={pt}"));
    }
}

/// `a=fmtp:<pt> <parameters>` exactly as given, nothing when `parameters` is empty.
///
/// The crate renders its parsed parameter struct in its own order and joins the parameters it
/// does not know with `,`. Handed all fields at the parser's defaults (which it leaves out)
/// and our text as its single unknown token, it writes that text unchanged.
fn add_fmtp(section: &mut SdpMedia, payload_type: PayloadType, parameters: &str) {
    if parameters.is_empty() {
        return;
    }
    let parameters = SdpAttributeFmtpParameters {
        packetization_mode: 0,
        level_asymmetry_allowed: false,
        profile_level_id: 0x0042_000A,
        max_fs: 0,
        max_cpb: 0,
        max_dpb: 0,
        max_br: 0,
        max_mbps: 0,
        max_fr: 0,
        profile: None,
        level_idx: None,
        tier: None,
        maxplaybackrate: 48000,
        maxaveragebitrate: 0,
        usedtx: false,
        stereo: false,
        useinbandfec: false,
        cbr: false,
        ptime: 0,
        minptime: 0,
        maxptime: 0,
        encodings: Vec::new(),
        dtmf_tones: String::new(),
        rtx: None,
        unknown_tokens: vec![parameters.to_owned()],
    };
    add(section, SdpAttribute::Fmtp(SdpAttributeFmtp { payload_type: payload_type.0, parameters }));
}
