//! An SDP offer from a stranger (a signalling `publish`, a WHIP or a WHEP `POST`) never
//! panics the control plane: `RemoteDescription::parse`, then, for what parses, the answers
//! the publish path and the WHEP path build from it. An answer accounts for every offered
//! section, once, in the offer's order, and is SDP that the parser reads back: nothing a peer
//! writes can break the grammar of what we send.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use uprtcd_controlplane::sdp::{
    self, Answer, BitrateCaps, Candidate, CandidateTransport, CertificateFingerprint, Codec, CodecPolicy, Direction,
    LocalParameters, OutgoingTrack, PayloadType, RemoteDescription, RemoteMedia, SectionKind, Ssrc, VideoCodec,
};

/// The SFU's side, as the signalling writes it: one UDP and one ICE-TCP host candidate.
fn local(bitrate: BitrateCaps) -> LocalParameters {
    LocalParameters {
        session_id: 7,
        session_version: 1,
        ice_ufrag: "fuzzUfrag".into(),
        ice_pwd: "fuzzPasswordOf24chars+/".into(),
        fingerprint: CertificateFingerprint::from_bytes([0x5A; 32]),
        // UDP and ICE-TCP share the worker's port.
        candidates: [(CandidateTransport::Udp, 2_130_706_431), (CandidateTransport::TcpPassive, 2_122_317_823)]
            .map(|(transport, priority)| Candidate {
                transport,
                address: "192.0.2.10:40000".parse().expect("literal socket address"),
                priority,
            })
            .into(),
        bitrate,
    }
}

fn codec(payload_type: u8, name: &str, clock_rate: u32, channels: Option<u32>, fmtp: &str, rtx: Option<u8>) -> Codec {
    Codec {
        payload_type: PayloadType(payload_type),
        name: name.into(),
        clock_rate,
        channels,
        fmtp: fmtp.into(),
        rtcp_fb: ["nack", "nack pli", "goog-remb", "transport-cc"].map(String::from).into(),
        rtx_payload_type: rtx.map(PayloadType),
    }
}

/// What a room publishes when a WHEP player arrives: the payload types browsers and OBS use.
fn published() -> &'static [(SectionKind, Codec)] {
    static PUBLISHED: OnceLock<Vec<(SectionKind, Codec)>> = OnceLock::new();
    PUBLISHED.get_or_init(|| {
        vec![
            (SectionKind::Audio, codec(111, "opus", 48000, Some(2), "minptime=10;useinbandfec=1", None)),
            (SectionKind::Video, codec(96, "VP8", 90000, None, "", Some(97))),
            (SectionKind::Video, codec(102, "H264", 90000, None, "packetization-mode=1;profile-level-id=42e01f", None)),
        ]
    })
}

/// Checks what every answer promises, whatever the offer was.
fn check(offer: &RemoteDescription, answer: &Answer) {
    let negotiated = &answer.negotiated;
    assert_eq!(negotiated.sections.len() + negotiated.rejected.len(), offer.media.len());
    for media in &offer.media {
        let accepted = negotiated.sections.iter().filter(|s| s.mid == media.mid).count();
        let rejected = negotiated.rejected.iter().filter(|mid| **mid == media.mid).count();
        assert_eq!(accepted + rejected, 1, "section {} answered once", media.mid);
    }
    let written = webrtc_sdp::parse_sdp(&answer.sdp, false)
        .unwrap_or_else(|error| panic!("our answer does not parse: {error}\n{}", answer.sdp));
    assert_eq!(written.media.len(), offer.media.len(), "one m-line per offered m-line\n{}", answer.sdp);
}

/// `signalling::publish`: audio and video received as the publisher's rights allow.
fn publish(offer: &RemoteDescription, policy: &CodecPolicy, audio: bool, video: bool) {
    let bitrate = BitrateCaps { min_bps: Some(300_000), max_bps: Some(2_500_000) };
    let allowed = |media: &RemoteMedia| match media.kind {
        SectionKind::Audio if audio => Direction::RecvOnly,
        SectionKind::Video if video => Direction::RecvOnly,
        _ => Direction::Inactive,
    };
    if let Ok(answer) = sdp::answer(offer, &local(bitrate), policy, allowed) {
        check(offer, &answer);
    }
}

/// `whip::play`: each receiving section gets the first published track of its kind whose
/// payload type and codec name it offers, each track once.
fn play(offer: &RemoteDescription) {
    let mut chosen: Vec<(usize, OutgoingTrack)> = Vec::new();
    for media in offer.media.iter().filter(|m| !m.rejected && m.direction.receives()) {
        let fits = |(index, (kind, codec)): &(usize, &(SectionKind, Codec))| {
            *kind == media.kind
                && !chosen.iter().any(|(taken, _)| taken == index)
                && media
                    .codecs
                    .iter()
                    .any(|c| c.payload_type == codec.payload_type && c.name.eq_ignore_ascii_case(&codec.name))
        };
        if let Some((index, (kind, codec))) = published().iter().enumerate().find(fits) {
            let base = 0x1000_0000 * (index as u32 + 1);
            chosen.push((
                index,
                OutgoingTrack {
                    mid: media.mid.clone(),
                    kind: *kind,
                    codec: codec.clone(),
                    ssrc: Ssrc(base),
                    rtx_ssrc: codec.rtx_payload_type.map(|_| Ssrc(base + 1)),
                    stream_id: "s1".into(),
                    track_id: format!("t{index}"),
                    cname: "c1".into(),
                },
            ));
        }
    }
    if chosen.is_empty() {
        return;
    }
    let no_caps = BitrateCaps { min_bps: None, max_bps: None };
    let answer = sdp::answer_with_tracks(offer, &local(no_caps), &CodecPolicy::default(), |media| {
        chosen.iter().map(|(_, track)| track).find(|track| track.mid == media.mid)
    });
    if let Ok(answer) = answer {
        check(offer, &answer);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(offer) = RemoteDescription::parse(text) else { return };
    publish(&offer, &CodecPolicy::default(), true, true);
    let everything =
        CodecPolicy { video: vec![VideoCodec::H264, VideoCodec::Vp9], transport_cc: true, simulcast: true };
    publish(&offer, &everything, false, true);
    play(&offer);
});
