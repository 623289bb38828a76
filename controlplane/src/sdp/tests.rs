//! End-to-end tests on offers typed from what Chromium 120, Firefox 121 and OBS (WHIP) send:
//! parse, answer, and re-parse what we wrote with the SDP crate in its strict mode (a warning
//! fails), then the subscriber offer across renegotiations, every error, and hostile input.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use webrtc_sdp::SdpSession;
use webrtc_sdp::attribute_type::{SdpAttribute, SdpAttributeSetup, SdpAttributeType};
use webrtc_sdp::media_type::{SdpMedia, SdpMediaValue};
use webrtc_sdp::{SdpBandwidth, parse_sdp};

use super::local::tests::{FINGERPRINT, local};
use super::*;

const CHROME: &str = include_str!("fixtures/chrome_120_offer.sdp");
const CHROME_SIMULCAST: &str = include_str!("fixtures/chrome_simulcast_offer.sdp");
const FIREFOX: &str = include_str!("fixtures/firefox_121_offer.sdp");
const OBS: &str = include_str!("fixtures/obs_whip_offer.sdp");
const FIXTURES: [&str; 4] = [CHROME, CHROME_SIMULCAST, FIREFOX, OBS];

/// Browsers send CRLF; the fixtures are stored with LF to read well.
fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

fn parse(fixture: &str) -> RemoteDescription {
    RemoteDescription::parse(&crlf(fixture)).expect("the fixture parses")
}

fn publish(offer: &RemoteDescription, policy: &CodecPolicy) -> Answer {
    answer(offer, &local(), policy, |_| Direction::RecvOnly).expect("the offer is answerable")
}

/// What we wrote, read back by the crate with warnings as errors.
fn reparse(sdp: &str) -> SdpSession {
    parse_sdp(sdp, true).unwrap_or_else(|error| panic!("{error}\n{sdp}"))
}

fn mid(section: &SdpMedia) -> &str {
    match section.get_attribute(SdpAttributeType::Mid) {
        Some(SdpAttribute::Mid(mid)) => mid,
        _ => panic!("section without mid"),
    }
}

fn section<'a>(session: &'a SdpSession, wanted: &str) -> &'a SdpMedia {
    session.media.iter().find(|s| mid(s) == wanted).unwrap_or_else(|| panic!("no section {wanted}"))
}

fn has(section: &SdpMedia, kind: SdpAttributeType) -> bool {
    section.get_attribute(kind).is_some()
}

/// Every attribute line of a section, as the crate writes it back.
fn lines(section: &SdpMedia) -> Vec<String> {
    section.get_attributes().iter().map(ToString::to_string).collect()
}

fn bundle(session: &SdpSession) -> Vec<String> {
    session
        .attribute
        .iter()
        .find_map(|a| match a {
            SdpAttribute::Group(group) => Some(group.tags.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn setup(section: &SdpMedia) -> Option<&SdpAttributeSetup> {
    match section.get_attribute(SdpAttributeType::Setup) {
        Some(SdpAttribute::Setup(setup)) => Some(setup),
        _ => None,
    }
}

fn mids(offer: &RemoteDescription) -> Vec<&str> {
    offer.media.iter().map(|m| m.mid.as_str()).collect()
}

/// What every answer must hold whatever the offer: ice-lite, one BUNDLE group of the
/// accepted sections in the offer's order, the same m-lines in the same order, our transport
/// on every accepted section, candidates only on the first, port 0 on the rejected.
fn check_answer(offer: &RemoteDescription, answer: &Answer) -> SdpSession {
    let session = reparse(&answer.sdp);
    let local = local();
    assert!(session.get_attribute(SdpAttributeType::IceLite).is_some(), "no a=ice-lite");
    let accepted: Vec<&str> = answer.negotiated.sections.iter().map(|s| s.mid.as_str()).collect();
    let expected_bundle: Vec<&str> = offer.bundle.iter().map(Mid::as_str).filter(|m| accepted.contains(m)).collect();
    assert_eq!(bundle(&session), expected_bundle);
    assert_eq!(session.media.iter().map(mid).collect::<Vec<_>>(), mids(offer), "m-lines moved");
    for (index, section) in session.media.iter().enumerate() {
        let offered = &offer.media[index];
        assert_eq!(section.get_type(), &offered.line.media, "kind of {}", mid(section));
        if answer.negotiated.rejected.iter().any(|m| m.as_str() == mid(section)) {
            assert_eq!(section.get_port(), 0, "rejected {} has a port", mid(section));
            assert!(!has(section, SdpAttributeType::Candidate));
            continue;
        }
        assert_eq!(section.get_port(), 40000, "the default candidate's port");
        assert!(matches!(setup(section), Some(SdpAttributeSetup::Passive)), "setup of {}", mid(section));
        assert!(has(section, SdpAttributeType::RtcpMux));
        assert_eq!(has(section, SdpAttributeType::RtcpRsize), offered.rtcp_rsize);
        let text = lines(section);
        assert!(text.contains(&format!("fingerprint:sha-256 {FINGERPRINT}")), "{text:?}");
        assert!(text.contains(&format!("ice-ufrag:{}", local.ice_ufrag)));
        assert!(text.contains(&format!("ice-pwd:{}", local.ice_pwd)));
        let candidates = section.get_attributes_of_type(SdpAttributeType::Candidate).len();
        if mid(section) == expected_bundle[0] {
            assert_eq!(candidates, local.candidates.len());
            assert!(has(section, SdpAttributeType::EndOfCandidates));
        } else {
            assert_eq!(candidates, 0, "candidates on {}", mid(section));
        }
    }
    session
}

// ---- parsing ----

#[test]
fn chrome_offer_parses_into_its_parts() {
    let offer = parse(CHROME);
    assert_eq!((offer.ice_ufrag.as_str(), offer.ice_pwd.as_str()), ("Hq2z", "3mVd8rPvKf2Jx0sT7yLq1NaB"));
    assert_eq!(offer.fingerprint.as_bytes()[..3], [0x7b, 0x8e, 0x4f]);
    assert_eq!(offer.setup, RemoteSetup::Actpass);
    assert_eq!(offer.bundle, [Mid::from("0"), Mid::from("1"), Mid::from("2")]);
    assert_eq!(
        offer.media.iter().map(|m| m.kind).collect::<Vec<_>>(),
        [SectionKind::Audio, SectionKind::Video, SectionKind::Application]
    );

    let audio = &offer.media[0];
    assert_eq!(audio.direction, Direction::SendOnly);
    let names: Vec<&str> = audio.codecs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["opus", "red", "G722", "PCMU", "PCMA", "CN", "telephone-event", "telephone-event"]);
    let opus = &audio.codecs[0];
    assert_eq!((opus.payload_type, opus.clock_rate, opus.channels), (PayloadType(111), 48000, Some(2)));
    assert_eq!(opus.fmtp, "minptime=10;useinbandfec=1");
    assert_eq!(opus.rtcp_fb, ["transport-cc"]);
    assert_eq!(audio.codecs[1].fmtp, "111/111");
    assert_eq!(audio.extmaps.iter().map(|e| (e.id, e.uri.as_str())).collect::<Vec<_>>()[0], (1, AUDIO_LEVEL_URI));
    assert_eq!(audio.ssrcs.len(), 1);
    assert_eq!(audio.ssrcs[0].cname.as_deref(), Some("Qm3xJ0dk8vT2ZpLw"));
    let msid = audio.msid.as_ref().expect("a=msid");
    assert_eq!(
        (msid.stream_id.as_str(), msid.track_id.as_deref()),
        ("5d4f0c2e-8a8b-4f6e-9d3c-7b1a2e4f6a80", Some("0c6a1f52-3b7e-4d09-a8c1-96e2f4b3d7a5"))
    );
    assert_eq!(audio.ssrcs[0].msid.as_ref(), Some(msid));

    let video = &offer.media[1];
    let codec = |pt| video.codecs.iter().find(|c| c.payload_type == PayloadType(pt)).expect("offered");
    assert!(video.codecs.iter().all(|c| !c.is("rtx")), "rtx folded into the formats it repairs");
    assert_eq!(video.codecs.len(), 13);
    assert_eq!((codec(96).name.as_str(), codec(96).rtx_payload_type), ("VP8", Some(PayloadType(97))));
    assert_eq!(codec(96).rtcp_fb, ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]);
    assert_eq!(codec(106).fmtp, "profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1");
    assert_eq!(codec(106).rtx_payload_type, Some(PayloadType(107)));
    assert_eq!(codec(104).fmtp_param("packetization-mode"), None, "mode 0 is the default, left out");
    assert_eq!((codec(98).fmtp.as_str(), codec(98).rtx_payload_type), ("profile-id=0", Some(PayloadType(99))));
    assert_eq!(codec(45).name, "AV1");
    assert_eq!(codec(116).rtx_payload_type, Some(PayloadType(117)));
    assert_eq!(codec(118).rtx_payload_type, None);
    assert_eq!(video.extmaps.len(), 11);
    assert!(video.extmaps.iter().any(|e| e.id == 10 && e.uri == RTP_STREAM_ID_URI));
    assert_eq!(
        video.ssrc_groups,
        [SsrcGroup { semantics: "FID".into(), ssrcs: vec![Ssrc(2882400001), Ssrc(2882400002)] }]
    );
    assert!(video.rtcp_rsize && !audio.rtcp_rsize);

    let data = &offer.media[2];
    assert!(data.codecs.is_empty() && !data.rejected);
}

#[test]
fn firefox_offer_with_session_level_fingerprint_parses() {
    let offer = parse(FIREFOX);
    assert_eq!(offer.ice_ufrag, "8e3b51d2");
    assert_eq!(offer.fingerprint.as_bytes()[0], 0xa1);
    let audio = &offer.media[0];
    assert_eq!(audio.direction, Direction::SendRecv);
    let csrc = audio.extmaps.iter().find(|e| e.id == 2).expect("csrc-audio-level");
    assert_eq!(csrc.direction, Some(Direction::RecvOnly));
    assert_eq!(audio.codecs[0].fmtp, "stereo=1;useinbandfec=1", "maxplaybackrate=48000 is the default");
    let video = &offer.media[1];
    let rtx = |pt| video.codecs.iter().find(|c| c.payload_type == PayloadType(pt)).and_then(|c| c.rtx_payload_type);
    assert_eq!(
        [rtx(120), rtx(121), rtx(126), rtx(97), rtx(122)],
        [124, 125, 127, 98, 119].map(|pt| Some(PayloadType(pt)))
    );
    assert_eq!(video.ssrc_groups[0].ssrcs, [Ssrc(2386398282), Ssrc(1025392301)]);
    assert!(video.msid.as_ref().is_some_and(|m| m.stream_id.starts_with('{')));
}

#[test]
fn obs_whip_offer_with_session_level_transport_parses() {
    let offer = parse(OBS);
    assert_eq!((offer.ice_ufrag.as_str(), offer.setup), ("Yt5B", RemoteSetup::Actpass));
    assert_eq!(offer.bundle, [Mid::from("0"), Mid::from("1")]);
    let opus = &offer.media[0].codecs[0];
    assert_eq!(opus.fmtp_param("sprop-stereo"), Some("1"));
    assert_eq!(opus.fmtp_param("maxaveragebitrate"), Some("96000"));
    let h264 = &offer.media[1].codecs;
    assert_eq!(h264.len(), 1);
    assert_eq!((h264[0].name.as_str(), h264[0].rtx_payload_type), ("H264", None));
}

#[test]
fn bundle_only_sections_share_the_tagged_sections_transport() {
    // Firefox with bundlePolicy max-bundle: later sections have port 0, a=bundle-only and no
    // transport attributes of their own.
    let mut text = FIREFOX.replace("m=video 9", "m=video 0").replace("m=application 9", "m=application 0");
    for line in ["a=ice-pwd:6f2a9c0e4b7d1a3f5e8c2b0d9a7e4c61\n", "a=ice-ufrag:8e3b51d2\n", "a=setup:actpass\n"] {
        text = replace_nth(&text, line, "", 1);
        text = replace_nth(&text, line, "", 1);
    }
    let text = text.replace("a=mid:1\n", "a=mid:1\na=bundle-only\n").replace("a=mid:2\n", "a=mid:2\na=bundle-only\n");
    let offer = parse(&text);
    let video = offer.media(&Mid::from("1")).expect("video");
    assert!(!video.rejected, "bundle-only is not rejected");
    assert_eq!(offer.ice_ufrag, "8e3b51d2");
    let answer = publish(&offer, &CodecPolicy::default());
    let session = check_answer(&offer, &answer);
    assert_eq!(bundle(&session), ["0", "1"]);
    assert!(!has(section(&session, "1"), SdpAttributeType::BundleOnly), "an answer never says bundle-only");
}

#[test]
fn simulcast_rids_are_recorded_as_written() {
    let offer = parse(CHROME_SIMULCAST);
    let video = &offer.media[1];
    assert_eq!(
        video.rids.iter().map(|r| (r.id.as_str(), r.send, r.value.as_str())).collect::<Vec<_>>(),
        [("q", true, "q send"), ("h", true, "h send"), ("f", true, "f send")]
    );
    assert_eq!(video.simulcast, Some(Simulcast { send: "q;h;f".into(), recv: String::new() }));
    assert!(video.ssrcs.is_empty());
}

#[test]
fn line_endings_do_not_matter() {
    for fixture in FIXTURES {
        let lf = RemoteDescription::parse(fixture).expect("LF");
        let crlf = RemoteDescription::parse(&crlf(fixture)).expect("CRLF");
        assert_eq!(mids(&lf), mids(&crlf));
        assert_eq!(lf.media[0].codecs, crlf.media[0].codecs);
    }
}

// ---- answering ----

#[test]
fn chrome_publish_answer_takes_opus_and_vp8_and_rejects_the_data_channel() {
    let offer = parse(CHROME);
    let answer = publish(&offer, &CodecPolicy::default());
    let session = check_answer(&offer, &answer);
    assert_eq!(bundle(&session), ["0", "1"]);
    assert_eq!(answer.negotiated.rejected, [Mid::from("2")]);
    let data = section(&session, "2");
    assert_eq!((data.get_type(), data.get_port()), (&SdpMediaValue::Application, 0));

    let audio = section(&session, "0");
    assert!(has(audio, SdpAttributeType::Recvonly));
    assert_eq!(
        lines(audio).iter().filter(|l| l.starts_with("rtpmap")).collect::<Vec<_>>(),
        ["rtpmap:111 opus/48000/2"]
    );
    assert!(lines(audio).contains(&"fmtp:111 minptime=10;useinbandfec=1".to_owned()));
    assert!(audio.get_bandwidth().is_empty(), "caps are for video");
    let audio_feedback: Vec<String> = lines(audio).into_iter().filter(|l| l.starts_with("rtcp-fb")).collect();
    assert_eq!(audio_feedback, ["rtcp-fb:111 transport-cc"], "the publisher's estimate works through the SFU");
    let audio_extmaps: Vec<String> = lines(audio).into_iter().filter(|l| l.starts_with("extmap")).collect();
    assert_eq!(
        audio_extmaps,
        [
            format!("extmap:1 {AUDIO_LEVEL_URI}"),
            format!("extmap:2 {ABS_SEND_TIME_URI}"),
            format!("extmap:3 {TRANSPORT_CC_URI}"),
            format!("extmap:4 {MID_URI}")
        ]
    );

    let video = section(&session, "1");
    assert!(has(video, SdpAttributeType::Recvonly));
    let video_lines = lines(video);
    let codec_lines: Vec<&String> = video_lines
        .iter()
        .filter(|l| l.starts_with("rtpmap") || l.starts_with("fmtp") || l.starts_with("rtcp-fb"))
        .collect();
    assert_eq!(
        codec_lines,
        [
            "rtpmap:96 VP8/90000",
            "rtcp-fb:96 goog-remb",
            "rtcp-fb:96 transport-cc",
            "rtcp-fb:96 ccm fir",
            "rtcp-fb:96 nack",
            "rtcp-fb:96 nack pli",
            "fmtp:96 x-google-min-bitrate=300",
            "rtpmap:97 rtx/90000",
            "fmtp:97 apt=96",
        ]
    );
    let bandwidth: Vec<String> = video.get_bandwidth().iter().map(ToString::to_string).collect();
    assert_eq!(bandwidth, ["AS:2500", "TIAS:2500000"]);
    assert!(matches!(video.get_bandwidth()[1], SdpBandwidth::Tias(2_500_000)));
    let video_extmaps: Vec<u16> = video
        .get_attributes()
        .iter()
        .filter_map(|a| match a {
            SdpAttribute::Extmap(extmap) => Some(extmap.id),
            _ => None,
        })
        .collect();
    assert_eq!(video_extmaps, [2, 13, 3, 4, 10, 11], "video orientation (13) kept, so phones tag rotation");

    let negotiated = answer.negotiated.section(&Mid::from("1")).expect("video negotiated");
    assert_eq!(negotiated.kind, SectionKind::Video);
    assert_eq!(negotiated.direction, Direction::RecvOnly);
    assert_eq!(
        (negotiated.codec.payload_type, negotiated.codec.rtx_payload_type),
        (PayloadType(96), Some(PayloadType(97)))
    );
    assert_eq!(negotiated.codec.rtcp_fb, ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]);
    assert_eq!(negotiated.streams, [RemoteStream { ssrc: Ssrc(2882400001), rtx_ssrc: Some(Ssrc(2882400002)) }]);
    assert_eq!(negotiated.cname.as_deref(), Some("Qm3xJ0dk8vT2ZpLw"));
    assert_eq!(
        negotiated.msid.as_ref().and_then(|m| m.track_id.as_deref()),
        Some("9e1b7c30-52a4-4f8d-b6e1-0d3c5a7f2e94")
    );
    assert_eq!(
        negotiated.extensions,
        HeaderExtensions {
            mid: Some(4),
            abs_send_time: Some(2),
            rtp_stream_id: Some(10),
            transport_cc: Some(3),
            repaired_rtp_stream_id: Some(11),
            video_orientation: Some(13),
            ..HeaderExtensions::default()
        }
    );
    let audio = answer.negotiated.section(&Mid::from("0")).expect("audio negotiated");
    assert_eq!((audio.codec.payload_type, audio.codec.rtx_payload_type), (PayloadType(111), None));
    assert_eq!(audio.streams, [RemoteStream { ssrc: Ssrc(3735928559), rtx_ssrc: None }]);
    assert_eq!(audio.extensions.audio_level, Some(1));
}

#[test]
fn transport_cc_is_negotiated_only_when_enabled() {
    let offer = parse(CHROME);
    let answer = publish(&offer, &CodecPolicy { transport_cc: true, ..CodecPolicy::default() });
    let session = check_answer(&offer, &answer);
    assert!(lines(section(&session, "0")).contains(&"rtcp-fb:111 transport-cc".to_owned()));
    assert!(lines(section(&session, "1")).contains(&format!("extmap:3 {TRANSPORT_CC_URI}")));
    let video = answer.negotiated.section(&Mid::from("1")).expect("video");
    assert_eq!(video.extensions.transport_cc, Some(3));
    assert!(video.codec.rtcp_fb.contains(&"transport-cc".to_owned()));
}

#[test]
fn h264_prefers_mode_1_constrained_baseline_and_keeps_its_rtx() {
    let offer = parse(CHROME);
    let answer = publish(&offer, &CodecPolicy { video: vec![VideoCodec::H264], ..CodecPolicy::default() });
    let session = check_answer(&offer, &answer);
    let video = answer.negotiated.section(&Mid::from("1")).expect("video");
    assert_eq!((video.codec.payload_type, video.codec.rtx_payload_type), (PayloadType(106), Some(PayloadType(107))));
    assert_eq!(
        video.codec.fmtp,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f;x-google-min-bitrate=300"
    );
    assert!(answer.sdp.contains(&format!("a=fmtp:106 {}\r\n", video.codec.fmtp)), "written as negotiated");
    assert!(lines(section(&session, "1")).contains(&"fmtp:107 apt=106".to_owned()));
}

#[test]
fn vp9_profile_0_is_taken_when_the_policy_puts_it_first() {
    let offer = parse(CHROME);
    for video in [vec![VideoCodec::Vp9], vec![VideoCodec::Vp9, VideoCodec::H264]] {
        let answer = publish(&offer, &CodecPolicy { video, ..CodecPolicy::default() });
        check_answer(&offer, &answer);
        let codec = &answer.negotiated.section(&Mid::from("1")).expect("video").codec;
        assert_eq!((codec.payload_type, codec.rtx_payload_type), (PayloadType(98), Some(PayloadType(99))));
        assert_eq!(codec.fmtp, "profile-id=0;x-google-min-bitrate=300");
    }
}

#[test]
fn firefox_answer_receives_on_sendrecv_sections() {
    let offer = parse(FIREFOX);
    let answer = publish(&offer, &CodecPolicy::default());
    let session = check_answer(&offer, &answer);
    assert_eq!(answer.negotiated.rejected, [Mid::from("2")]);
    let audio = section(&session, "0");
    assert!(has(audio, SdpAttributeType::Recvonly));
    // Firefox offers stereo=1 (it can receive stereo) but not sprop-stereo: it sends mono.
    assert!(lines(audio).contains(&"fmtp:109 minptime=10;useinbandfec=1".to_owned()));
    assert!(!lines(audio).iter().any(|l| l.contains("csrc-audio-level")), "an extmap Firefox only receives");
    let video = answer.negotiated.section(&Mid::from("1")).expect("video");
    assert_eq!((video.codec.payload_type, video.codec.rtx_payload_type), (PayloadType(120), Some(PayloadType(124))));
    assert_eq!(video.streams, [RemoteStream { ssrc: Ssrc(2386398282), rtx_ssrc: Some(Ssrc(1025392301)) }]);
    assert_eq!(video.extensions.mid, Some(3));
    assert_eq!(video.extensions.transport_cc, Some(7));
}

#[test]
fn the_answer_never_claims_a_direction_the_offer_does_not_allow() {
    let chrome = parse(CHROME);
    let answer = answer(&chrome, &local(), &CodecPolicy::default(), |_| Direction::SendRecv).expect("answerable");
    let session = check_answer(&chrome, &answer);
    assert!(has(section(&session, "1"), SdpAttributeType::Recvonly), "Chromium only sends");

    let firefox = parse(FIREFOX);
    let per_kind =
        |media: &RemoteMedia| if media.kind == SectionKind::Audio { Direction::Inactive } else { Direction::SendRecv };
    let answer = super::answer(&firefox, &local(), &CodecPolicy::default(), per_kind).expect("answerable");
    let session = check_answer(&firefox, &answer);
    assert!(has(section(&session, "0"), SdpAttributeType::Inactive));
    assert!(has(section(&session, "1"), SdpAttributeType::Sendrecv));
}

#[test]
fn obs_whip_answer_takes_h264_only_when_the_policy_allows() {
    let offer = parse(OBS);
    let vp8_only = publish(&offer, &CodecPolicy { video: vec![VideoCodec::Vp8], ..CodecPolicy::default() });
    let session = check_answer(&offer, &vp8_only);
    assert_eq!(vp8_only.negotiated.rejected, [Mid::from("1")]);
    assert_eq!(bundle(&session), ["0"]);
    let rejected = section(&session, "1");
    assert_eq!(lines(rejected), ["mid:1", "inactive", "rtpmap:96 H264/90000"]);
    assert!(vp8_only.sdp.contains("a=fmtp:111 minptime=10;useinbandfec=1;stereo=1\r\n"));

    let with_h264 = publish(&offer, &CodecPolicy::default());
    check_answer(&offer, &with_h264);
    assert!(with_h264.negotiated.rejected.is_empty());
    let video = with_h264.negotiated.section(&Mid::from("1")).expect("video");
    assert_eq!((video.codec.payload_type, video.codec.rtx_payload_type), (PayloadType(96), None));
    assert_eq!(video.codec.rtcp_fb, ["nack", "nack pli", "goog-remb"]);
    assert_eq!(video.streams, [RemoteStream { ssrc: Ssrc(2591124926), rtx_ssrc: None }]);
    assert_eq!(video.msid, Some(Msid { stream_id: "obs-stream".into(), track_id: Some("obs-video".into()) }));
}

#[test]
fn simulcast_is_answered_with_the_same_layers_to_receive() {
    let offer = parse(CHROME_SIMULCAST);
    let accepted = publish(&offer, &CodecPolicy::default());
    let session = check_answer(&offer, &accepted);
    let video_lines = lines(section(&session, "1"));
    for line in ["rid:q recv", "rid:h recv", "rid:f recv", "simulcast:recv q;h;f"] {
        assert!(video_lines.contains(&line.to_owned()), "{line} missing from {video_lines:?}");
    }
    let video = accepted.negotiated.section(&Mid::from("1")).expect("video");
    assert_eq!(video.rids, ["q", "h", "f"]);
    assert!(video.streams.is_empty(), "rid simulcast signals no SSRC");
    assert_eq!((video.extensions.rtp_stream_id, video.extensions.repaired_rtp_stream_id), (Some(10), Some(11)));

    let declined = publish(&offer, &CodecPolicy { simulcast: false, ..CodecPolicy::default() });
    let session = check_answer(&offer, &declined);
    assert!(!lines(section(&session, "1")).iter().any(|l| l.starts_with("rid") || l.starts_with("simulcast")));
    assert!(declined.negotiated.section(&Mid::from("1")).is_some_and(|v| v.rids.is_empty()));
}

#[test]
fn simulcast_takes_declared_distinct_short_rids_and_needs_the_rid_extension() {
    let policy = CodecPolicy { simulcast: true, ..CodecPolicy::default() };
    let layers_of = |sdp: String| {
        let offer = parse(&sdp);
        let accepted = publish(&offer, &policy);
        let session = check_answer(&offer, &accepted);
        let recv = lines(section(&session, "1")).into_iter().find(|l| l.starts_with("simulcast:"));
        (accepted.negotiated.section(&Mid::from("1")).expect("video").rids.clone(), recv)
    };
    // Duplicates and a paused one (an undeclared rid fails the offer's parse already).
    let (rids, recv) = layers_of(CHROME_SIMULCAST.replace("a=simulcast:send q;h;f", "a=simulcast:send q;q;~h;f"));
    assert_eq!(rids, ["q", "h", "f"]);
    assert_eq!(recv.as_deref(), Some("simulcast:recv q;h;f"));
    // More layers than the SFU takes.
    let many = CHROME_SIMULCAST
        .replace("a=rid:f send", "a=rid:f send\na=rid:g send\na=rid:i send")
        .replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;f;g;i");
    assert_eq!(layers_of(many).0, ["q", "h", "f", "g"]);
    // No RtpStreamId extension: the layers could not be told apart.
    let (rids, recv) =
        layers_of(CHROME_SIMULCAST.replace("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\n", ""));
    assert!(rids.is_empty() && recv.is_none());
}

#[test]
fn bitrate_caps_are_optional() {
    let offer = parse(CHROME);
    let mut parameters = local();
    parameters.bitrate = BitrateCaps::default();
    let answer = answer(&offer, &parameters, &CodecPolicy::default(), |_| Direction::RecvOnly).expect("answerable");
    let session = reparse(&answer.sdp);
    let video = section(&session, "1");
    assert!(video.get_bandwidth().is_empty());
    assert!(!lines(video).iter().any(|l| l.starts_with("fmtp:96")), "nothing to say about VP8");
}

// ---- errors ----

/// `text` with the `nth` (0-based) occurrence of `from` replaced.
fn replace_nth(text: &str, from: &str, to: &str, nth: usize) -> String {
    let (index, _) = text.match_indices(from).nth(nth).unwrap_or_else(|| panic!("no {from:?} #{nth}"));
    format!("{}{to}{}", &text[..index], &text[index + from.len()..])
}

fn without_lines(text: &str, prefix: &str) -> String {
    text.lines().filter(|line| !line.starts_with(prefix)).map(|line| format!("{line}\n")).collect()
}

fn parse_error(text: &str) -> SdpError {
    RemoteDescription::parse(&crlf(text)).expect_err("refused")
}

#[test]
fn each_parse_error_names_what_is_wrong() {
    let sha1 = "a=fingerprint:sha-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB";
    let firefox_fingerprint = FIREFOX.lines().find(|l| l.starts_with("a=fingerprint")).expect("has one");
    let cases: Vec<(String, SdpError)> = vec![
        ("hello".into(), SdpError::NotSdp(String::new())),
        (CHROME.replace("v=0", "v=1"), SdpError::NotSdp(String::new())),
        // Its c= line would clash with the section before; without one, the parser would
        // quietly hang this section's attributes on the video section.
        (
            CHROME
                .replace("webrtc-datachannel\nc=IN IP4 0.0.0.0\n", "webrtc-datachannel\n")
                .replace("UDP/DTLS/SCTP", "UDP/FOO/SCTP"),
            SdpError::UnsupportedMediaLine(String::new()),
        ),
        (CHROME.replace("m=application", "m=text"), SdpError::UnsupportedMediaLine(String::new())),
        (OBS.replace("m=audio 9", "m=audio 0").replace("m=video 9", "m=video 0"), SdpError::NoMedia),
        (CHROME.replace("a=mid:1\n", ""), SdpError::MissingMid { index: 1 }),
        (CHROME.replace("a=mid:2", "a=mid:1"), SdpError::DuplicateMid(Mid::from("1"))),
        (without_lines(CHROME, "a=group:BUNDLE"), SdpError::NoBundle),
        (CHROME.replace("BUNDLE 0 1 2", "BUNDLE 0 1"), SdpError::NotBundled { mid: Mid::from("2") }),
        (without_lines(OBS, "a=ice-pwd"), SdpError::MissingIceCredentials { mid: Mid::from("0") }),
        (without_lines(CHROME, "a=fingerprint"), SdpError::MissingFingerprint),
        (FIREFOX.replace(firefox_fingerprint, sha1), SdpError::UnsupportedFingerprint("sha-1".into())),
        (FIREFOX.replace("a=fingerprint:sha-256", "a=fingerprint:md5"), SdpError::UnsupportedFingerprint("md5".into())),
        (CHROME.replace("a=setup:actpass", "a=setup:passive"), SdpError::UnusableSetup("passive")),
        (OBS.replace("a=setup:actpass", "a=setup:holdconn"), SdpError::UnusableSetup("holdconn")),
        (without_lines(CHROME, "a=rtcp-mux"), SdpError::RtcpMuxMissing { mid: Mid::from("0") }),
    ];
    for (text, expected) in cases {
        let error = parse_error(&text);
        match (&error, &expected) {
            (SdpError::NotSdp(_), SdpError::NotSdp(_))
            | (SdpError::UnsupportedMediaLine(_), SdpError::UnsupportedMediaLine(_)) => {}
            _ => assert_eq!(error, expected),
        }
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn a_balanced_offer_takes_the_tagged_sections_transport() {
    let chrome_fingerprint = CHROME.lines().find(|l| l.starts_with("a=fingerprint")).expect("has one");
    let offer = replace_nth(CHROME, chrome_fingerprint, &chrome_fingerprint.replace("7B:8E", "7B:8F"), 2);
    let offer = replace_nth(&offer, "a=ice-ufrag:Hq2z", "a=ice-ufrag:Zz9y", 1);
    let offer = replace_nth(&offer, "a=ice-pwd:3mVd8rPvKf2Jx0sT7yLq1NaB", "a=ice-pwd:Other0other0other0other0", 1);
    let parsed = parse(&offer);
    assert_eq!((parsed.ice_ufrag.as_str(), parsed.ice_pwd.as_str()), ("Hq2z", "3mVd8rPvKf2Jx0sT7yLq1NaB"));
    assert_eq!(parsed.fingerprint.as_bytes()[..2], [0x7b, 0x8e], "the tagged section's certificate");
    let reordered = parse(&offer.replace("BUNDLE 0 1 2", "BUNDLE 1 0 2"));
    assert_eq!(reordered.ice_ufrag, "Zz9y", "the first mid of the group is the tagged one");
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    // One unknown attribute, which the parser skips, pads the offer to exactly the limit.
    let padding = MAX_SDP_BYTES - CHROME.len() - "a=x-padding:\n".len();
    let at_limit = format!("{CHROME}a=x-padding:{}\n", "p".repeat(padding));
    assert_eq!(at_limit.len(), MAX_SDP_BYTES);
    assert!(RemoteDescription::parse(&at_limit).is_ok());
    let over = format!("{at_limit}\n");
    assert_eq!(RemoteDescription::parse(&over).expect_err("too large"), SdpError::TooLarge { size: MAX_SDP_BYTES + 1 });
}

#[test]
fn payload_types_rtp_cannot_carry_or_that_mean_two_things_are_refused() {
    let refused = |text: &str| RemoteDescription::parse(text).expect_err("refused");
    let audio = Mid::from("0");
    let cases = [
        (CHROME.replace("SAVPF 111 63 9", "SAVPF 111 200 9"), "a payload type above 127"),
        (CHROME.replace("SAVPF 111 63 9", "SAVPF 111 111 9"), "a payload type listed twice"),
        (
            CHROME.replace("a=rtpmap:111 opus/48000/2\n", "a=rtpmap:111 opus/48000/2\na=rtpmap:111 G722/8000\n"),
            "two a=rtpmap lines for one payload type",
        ),
    ];
    for (text, reason) in cases {
        assert_eq!(refused(&text), SdpError::InvalidPayloadTypes { mid: audio.clone(), reason }, "{reason}");
    }
}

#[test]
fn a_subscriber_answer_saying_active_is_accepted() {
    let answer = parse(&CHROME.replace("a=setup:actpass", "a=setup:active"));
    assert_eq!(answer.setup, RemoteSetup::Active);
    let no_setup = parse(&without_lines(CHROME, "a=setup"));
    assert_eq!(no_setup.setup, RemoteSetup::Active, "RFC 4145's default");
}

#[test]
fn answers_refuse_local_parameters_no_peer_could_use() {
    let offer = parse(CHROME);
    let mut parameters = local();
    parameters.ice_pwd = "short".into();
    let error = answer(&offer, &parameters, &CodecPolicy::default(), |_| Direction::RecvOnly).expect_err("refused");
    assert!(matches!(error, SdpError::InvalidLocalParameters(_)));
}

// ---- subscriber offers ----

fn track(mid: &str, kind: SectionKind, ssrc: u32) -> OutgoingTrack {
    let (name, clock_rate, channels, pt, fmtp) = match kind {
        SectionKind::Audio => ("opus", 48000, Some(2), 111, "minptime=10;useinbandfec=1"),
        _ => ("VP8", 90000, None, 96, ""),
    };
    OutgoingTrack {
        mid: Mid::from(mid),
        kind,
        codec: Codec {
            payload_type: PayloadType(pt),
            name: name.into(),
            clock_rate,
            channels,
            fmtp: fmtp.into(),
            rtcp_fb: ["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc", "nack sli"].map(String::from).into(),
            rtx_payload_type: (kind == SectionKind::Video).then_some(PayloadType(97)),
        },
        ssrc: Ssrc(ssrc),
        rtx_ssrc: (kind == SectionKind::Video).then_some(Ssrc(ssrc + 1)),
        stream_id: format!("stream-{ssrc}"),
        track_id: format!("track-{mid}"),
        cname: "publisher-cname".into(),
    }
}

fn subscribe(previous: &OfferLayout, tracks: &[OutgoingTrack]) -> (SdpSession, SubscriberOffer) {
    let made = offer(&local(), previous, tracks, &CodecPolicy::default()).expect("offerable");
    // What we offer must also pass our own parser, as a subscriber's echo of it would.
    RemoteDescription::parse(&made.sdp).expect("our offer parses as a description");
    (reparse(&made.sdp), made)
}

fn layout_of(offer: &SubscriberOffer) -> Vec<(&str, SectionState)> {
    offer.layout.sections().iter().map(|s| (s.mid.as_str(), s.state)).collect()
}

#[test]
fn a_subscriber_offer_sends_each_track_with_its_ssrcs_and_msid() {
    let tracks = [track("a0", SectionKind::Audio, 1000), track("v1", SectionKind::Video, 2000)];
    let (session, made) = subscribe(&OfferLayout::default(), &tracks);
    assert!(session.get_attribute(SdpAttributeType::IceLite).is_some());
    assert_eq!(bundle(&session), ["a0", "v1"]);
    assert_eq!(layout_of(&made), [("a0", SectionState::Sending), ("v1", SectionState::Sending)]);
    let video = section(&session, "v1");
    assert!(matches!(setup(video), Some(SdpAttributeSetup::Actpass)));
    assert!(has(video, SdpAttributeType::Sendonly));
    let video_lines = lines(video);
    for line in [
        "msid:stream-2000 track-v1",
        "ssrc-group:FID 2000 2001",
        "ssrc:2000 cname:publisher-cname",
        "ssrc:2000 msid:stream-2000 track-v1",
        "ssrc:2001 cname:publisher-cname",
        "ssrc:2001 msid:stream-2000 track-v1",
        "rtpmap:96 VP8/90000",
        "rtpmap:97 rtx/90000",
        "fmtp:97 apt=96",
        "rtcp-mux",
        "rtcp-rsize",
    ] {
        assert!(video_lines.contains(&line.to_owned()), "{line} missing from {video_lines:?}");
    }
    assert!(video_lines.contains(&format!("extmap:4 {TRANSPORT_CC_URI}")), "the SFU numbers its packets for feedback");
    assert!(!video_lines.iter().any(|l| l.contains("sli")));
    assert_eq!(video.get_attributes_of_type(SdpAttributeType::Candidate).len(), 0, "candidates go on the first");
    let audio = section(&session, "a0");
    assert_eq!(audio.get_attributes_of_type(SdpAttributeType::Candidate).len(), 3);
    let audio_lines = lines(audio);
    assert!(audio_lines.contains(&"fmtp:111 minptime=10;useinbandfec=1".to_owned()));
    assert!(audio_lines.contains(&format!("extmap:3 {AUDIO_LEVEL_URI}")));
    assert!(!audio_lines.iter().any(|l| l.starts_with("ssrc-group")), "no RTX for audio");
    let ids = subscriber_extensions(SectionKind::Video, &CodecPolicy::default());
    assert_eq!((ids.mid, ids.abs_send_time, ids.audio_level, ids.transport_cc), (Some(1), Some(2), None, Some(4)));
}

#[test]
fn renegotiation_keeps_mids_and_their_order() {
    let a0 = track("a0", SectionKind::Audio, 1000);
    let v1 = track("v1", SectionKind::Video, 2000);
    let v2 = track("v2", SectionKind::Video, 3000);
    let v3 = track("v3", SectionKind::Video, 4000);

    let (_, first) = subscribe(&OfferLayout::default(), &[a0.clone(), v1.clone()]);

    // A track is added: appended, the others untouched.
    let (session, second) = subscribe(&first.layout, &[v2.clone(), a0.clone(), v1.clone()]);
    assert_eq!(session.media.iter().map(mid).collect::<Vec<_>>(), ["a0", "v1", "v2"]);
    assert_eq!(bundle(&session), ["a0", "v1", "v2"]);

    // A track goes away: its section stays, closed, and leaves the BUNDLE group.
    let (session, third) = subscribe(&second.layout, &[a0.clone(), v2.clone()]);
    assert_eq!(session.media.iter().map(mid).collect::<Vec<_>>(), ["a0", "v1", "v2"]);
    assert_eq!(
        layout_of(&third),
        [("a0", SectionState::Sending), ("v1", SectionState::Closed), ("v2", SectionState::Sending)]
    );
    let closed = section(&session, "v1");
    assert_eq!(closed.get_port(), 0);
    assert_eq!(lines(closed), ["mid:v1", "inactive", "rtpmap:96 VP8/90000"]);
    assert_eq!(bundle(&session), ["a0", "v2"]);

    // Once that was answered, a new video track recycles the closed section in place.
    let (session, fourth) = subscribe(&third.layout, &[a0.clone(), v2.clone(), v3.clone()]);
    assert_eq!(session.media.iter().map(mid).collect::<Vec<_>>(), ["a0", "v3", "v2"]);
    assert_eq!(
        layout_of(&fourth),
        [("a0", SectionState::Sending), ("v3", SectionState::Sending), ("v2", SectionState::Sending)]
    );

    // The first section's track going away leaves it idle, not closed: it stays the tagged
    // section of the group, with the candidates, so the browser keeps its transport.
    let (session, fifth) = subscribe(&fourth.layout, &[v2.clone(), v3.clone()]);
    assert_eq!(layout_of(&fifth)[0], ("a0", SectionState::Idle));
    let idle = section(&session, "a0");
    assert_eq!(idle.get_port(), 40000);
    assert_eq!(bundle(&session), ["a0", "v3", "v2"]);
    assert!(has(idle, SdpAttributeType::Inactive) && !has(idle, SdpAttributeType::Msid), "{:?}", lines(idle));
    assert_eq!(idle.get_attributes_of_type(SdpAttributeType::Candidate).len(), 3);
    assert_eq!(section(&session, "v3").get_attributes_of_type(SdpAttributeType::Candidate).len(), 0);
    // It idles for the session: never recycled, and its mid is never handed out again.
    let (session, _) = subscribe(&fifth.layout, &[v2.clone(), v3.clone(), track("a8", SectionKind::Audio, 7000)]);
    assert_eq!(session.media.iter().map(mid).collect::<Vec<_>>(), ["a0", "v3", "v2", "a8"]);
    let reused = offer(&local(), &fifth.layout, &[track("a0", SectionKind::Audio, 5000)], &CodecPolicy::default());
    assert!(matches!(reused, Err(SdpError::InvalidTrack { .. })), "{reused:?}");

    // A mid that was recycled away, or that names a closed section, is never handed out again.
    let reused = offer(&local(), &fourth.layout, &[track("v1", SectionKind::Video, 5000)], &CodecPolicy::default());
    assert!(matches!(reused, Err(SdpError::InvalidTrack { .. })), "{reused:?}");
    let reopened = offer(&local(), &third.layout, &[track("v1", SectionKind::Video, 5000)], &CodecPolicy::default());
    assert!(matches!(reopened, Err(SdpError::InvalidTrack { .. })), "{reopened:?}");
    // A closed audio section is not recycled for video.
    let (session, _) = subscribe(&third.layout, &[track("a9", SectionKind::Audio, 6000)]);
    assert_eq!(session.media.iter().map(mid).collect::<Vec<_>>(), ["a0", "v1", "v2", "a9"]);
}

#[test]
fn transport_cc_in_subscriber_offers_follows_the_policy() {
    let policy = CodecPolicy { transport_cc: true, ..CodecPolicy::default() };
    let made =
        offer(&local(), &OfferLayout::default(), &[track("v1", SectionKind::Video, 2000)], &policy).expect("offerable");
    let video_lines = lines(section(&reparse(&made.sdp), "v1"));
    assert!(video_lines.contains(&"rtcp-fb:96 transport-cc".to_owned()));
    assert!(video_lines.contains(&format!("extmap:4 {TRANSPORT_CC_URI}")));
}

#[test]
fn tracks_that_would_break_the_offer_are_refused() {
    type Breaks = fn(&mut OutgoingTrack);
    let broken: [(&str, Breaks); 10] = [
        ("empty mid", |t| t.mid = Mid::from("")),
        ("mid with a space", |t| t.mid = Mid::from("a b")),
        ("mid over 16", |t| t.mid = Mid::from("abcdefghijklmnopq")),
        ("data channel", |t| t.kind = SectionKind::Application),
        ("pt over 127", |t| t.codec.payload_type = PayloadType(128)),
        ("rtx pt equals pt", |t| t.codec.rtx_payload_type = Some(t.codec.payload_type)),
        ("rtx ssrc without pt", |t| t.codec.rtx_payload_type = None),
        ("fmtp with a line break", |t| t.codec.fmtp = "apt=1\r\na=ice-lite".into()),
        ("msid with a space", |t| t.track_id = "two words".into()),
        ("rtx ssrc equals ssrc", |t| t.rtx_ssrc = Some(t.ssrc)),
    ];
    for (what, breaks) in broken {
        let mut bad = track("v1", SectionKind::Video, 2000);
        breaks(&mut bad);
        let result = offer(&local(), &OfferLayout::default(), &[bad], &CodecPolicy::default());
        assert!(matches!(result, Err(SdpError::InvalidTrack { .. })), "{what}: {result:?}");
    }
    let twins = [track("v1", SectionKind::Video, 2000), track("v1", SectionKind::Video, 3000)];
    let result = offer(&local(), &OfferLayout::default(), &twins, &CodecPolicy::default());
    assert_eq!(result.map(|o| o.sdp), Err(SdpError::DuplicateMid(Mid::from("v1"))));
    let mut h264 = track("v2", SectionKind::Video, 3000);
    h264.codec.name = "H264".into();
    let clash = offer(
        &local(),
        &OfferLayout::default(),
        &[track("v1", SectionKind::Video, 2000), h264],
        &CodecPolicy::default(),
    );
    assert!(matches!(clash, Err(SdpError::InvalidTrack { .. })), "pt 96 both VP8 and H264: {clash:?}");
    let (_, first) = subscribe(&OfferLayout::default(), &[track("v1", SectionKind::Video, 2000)]);
    let changed_kind =
        offer(&local(), &first.layout, &[track("v1", SectionKind::Audio, 2000)], &CodecPolicy::default());
    assert!(matches!(changed_kind, Err(SdpError::InvalidTrack { .. })));
}

#[test]
fn a_publisher_negotiation_can_be_forwarded_to_a_subscriber() {
    let answer = publish(&parse(CHROME), &CodecPolicy::default());
    let tracks: Vec<OutgoingTrack> = answer
        .negotiated
        .sections
        .iter()
        .enumerate()
        .map(|(index, section)| OutgoingTrack {
            mid: Mid::new(format!("s{index}")),
            kind: section.kind,
            codec: section.codec.clone(),
            ssrc: Ssrc(10 + index as u32 * 2),
            rtx_ssrc: section.codec.rtx_payload_type.map(|_| Ssrc(11 + index as u32 * 2)),
            stream_id: section.msid.as_ref().map(|m| m.stream_id.clone()).unwrap_or_default(),
            track_id: section.msid.as_ref().and_then(|m| m.track_id.clone()).unwrap_or_default(),
            cname: section.cname.clone().unwrap_or_default(),
        })
        .collect();
    let (session, _) = subscribe(&OfferLayout::default(), &tracks);
    assert!(lines(section(&session, "s1")).contains(&"fmtp:96 x-google-min-bitrate=300".to_owned()));
}

// ---- hostile input ----

/// Anything the parser accepts must be answerable, and the answer must re-parse strictly.
fn survive(text: &str) {
    if let Ok(offer) = RemoteDescription::parse(text) {
        let policy =
            CodecPolicy { video: vec![VideoCodec::H264, VideoCodec::Vp9], transport_cc: true, simulcast: true };
        let answer = answer(&offer, &local(), &policy, |_| Direction::RecvOnly).expect("a parsed offer is answerable");
        reparse(&answer.sdp);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5d9_2026);
    for _ in 0..3000 {
        let length = rng.random_range(0..600);
        let bytes: Vec<u8> = (0..length).map(|_| rng.random()).collect();
        survive(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = StdRng::seed_from_u64(0xf1_7e5);
    let alphabet = b"=: ;/,~*0123456789abcdefqrsAPTUVX-\r\n";
    for fixture in FIXTURES {
        let text = crlf(fixture);
        for _ in 0..400 {
            let mut bytes = text.clone().into_bytes();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = alphabet[rng.random_range(0..alphabet.len())];
            }
            survive(&String::from_utf8_lossy(&bytes));
        }
    }
}

#[test]
fn truncations_and_dropped_lines_never_panic() {
    for fixture in FIXTURES {
        let text = crlf(fixture);
        for end in (0..=text.len()).filter(|&end| text.is_char_boundary(end)) {
            survive(&text[..end]);
        }
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for dropped in 0..lines.len() {
            let mut kept = lines.clone();
            kept.remove(dropped);
            survive(&kept.concat());
        }
    }
}

// ---- answers to players (WHEP) ----

/// Chromium's offer as a player sends it: the same sections, receive-only, no SSRCs.
fn chrome_player_offer() -> RemoteDescription {
    let text = without_lines(&CHROME.replace("a=sendonly", "a=recvonly"), "a=ssrc");
    parse(&text)
}

/// The answer to a player's `offer` that sends it an audio track as SSRC 0x5500_0001 and a video
/// track as 0x5500_0002, published as Opus 111 and VP8 96 with RTX 97.
fn answer_player(offer: &RemoteDescription) -> Answer {
    let audio = track("x", SectionKind::Audio, 0x5500_0001);
    let video = track("y", SectionKind::Video, 0x5500_0002);
    answer_with_tracks(offer, &local(), &CodecPolicy::default(), |media| match media.kind {
        SectionKind::Audio => Some(&audio),
        SectionKind::Video => Some(&video),
        SectionKind::Application => None,
    })
    .expect("answerable")
}

#[test]
fn a_player_offer_is_answered_sendonly_with_our_ssrcs() {
    let offer = chrome_player_offer();
    let made = answer_player(&offer);
    let session = check_answer(&offer, &made);
    assert_eq!(made.negotiated.rejected, [Mid::from("2")], "the data channel is rejected");
    for (mid, ssrc) in [("0", 0x5500_0001u32), ("1", 0x5500_0002)] {
        let text = lines(section(&session, mid));
        assert!(text.contains(&"sendonly".to_owned()), "{text:?}");
        assert!(text.iter().any(|l| l.starts_with(&format!("ssrc:{ssrc} cname:"))), "{text:?}");
        assert!(text.iter().any(|l| l.starts_with(&format!("msid:stream-{ssrc}"))), "{text:?}");
    }
    let video_section = &made.negotiated.sections[1];
    assert_eq!((video_section.codec.name.as_str(), video_section.codec.payload_type), ("VP8", PayloadType(96)));
    assert!(lines(section(&session, "1")).iter().any(|l| l.starts_with("ssrc-group:FID 1426063362 1426063363")));
}

#[test]
fn a_player_gets_the_published_format_under_its_own_payload_types() {
    // Firefox numbers Opus 109 and VP8 120 (RTX 124); the tracks were published as 111 and 96.
    let offer = parse(&without_lines(&FIREFOX.replace("a=sendrecv", "a=recvonly"), "a=ssrc"));
    let made = answer_player(&offer);
    let session = check_answer(&offer, &made);
    let numbers = |i: usize| {
        let codec = &made.negotiated.sections[i].codec;
        (codec.name.as_str(), codec.payload_type, codec.rtx_payload_type)
    };
    assert_eq!(numbers(0), ("opus", PayloadType(109), None));
    assert_eq!(numbers(1), ("VP8", PayloadType(120), Some(PayloadType(124))));
    let video_lines = lines(section(&session, &made.negotiated.sections[1].mid.to_string()));
    assert!(video_lines.contains(&"rtpmap:120 VP8/90000".to_owned()), "{video_lines:?}");
    assert!(!video_lines.iter().any(|l| l.starts_with("rtpmap:96")), "{video_lines:?}");
    // The section may carry whatever the room publishes next: every format the SFU forwards.
    let more = &made.negotiated.sections[1].more_codecs;
    let more: Vec<(&str, u8)> = more.iter().map(|c| (c.name.as_str(), c.payload_type.0)).collect();
    assert_eq!(more, [("H264", 126), ("H264", 97), ("VP9", 121)], "H.264 mode 1 before mode 0");
    assert!(video_lines.contains(&"rtpmap:127 rtx/90000".to_owned()), "{video_lines:?}");
}

#[test]
fn a_player_without_the_published_format_gets_the_section_rejected() {
    let offer = chrome_player_offer();
    // Published as VP8 under a number the player does not use: still taken.
    let mut renumbered = track("y", SectionKind::Video, 9);
    renumbered.codec.payload_type = PayloadType(45);
    let made = answer_with_tracks(&offer, &local(), &CodecPolicy::default(), |media| {
        (media.kind == SectionKind::Video).then_some(&renumbered)
    })
    .expect("answerable");
    check_answer(&offer, &made);
    assert_eq!(made.negotiated.sections[0].codec.payload_type, PayloadType(96));
    // H.264 High 4:4:4 Predictive, which the player does not offer.
    let mut high = track("y", SectionKind::Video, 9);
    high.codec.name = "H264".into();
    high.codec.fmtp = "packetization-mode=1;profile-level-id=f4001f".into();
    let made = answer_with_tracks(&offer, &local(), &CodecPolicy::default(), |media| {
        (media.kind == SectionKind::Video).then_some(&high)
    })
    .expect("answerable");
    check_answer(&offer, &made);
    assert_eq!(made.negotiated.rejected, [Mid::from("0"), Mid::from("1"), Mid::from("2")]);
}
