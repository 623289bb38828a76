//! Dominant speaker detection through the binary: two test-client publishers send Opus-sized
//! audio packets carrying RFC 6464 audio levels, one talking while the other is silent, then
//! the other way round; a third member hears `speaker` naming each in turn. Audio level
//! elements of the wrong length are counted and the stream goes on.

mod support;

use std::time::{Duration, Instant};

use support::client::*;
use support::*;
use tungstenite::Message;
use tungstenite::stream::MaybeTlsStream;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::peer::UdpPeer;
use uprtcd_dataplane::wire::rtp::RtpHeader;

/// The publisher's id for the audio level extension.
const AUDIO_LEVEL: u8 = 1;
const TALK: u8 = 30;
const SILENT: u8 = 127;

fn publish_audio(signalling: &mut Client, ssrc: u32) -> UdpPeer {
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let ice = IceCredentials::generate().unwrap();
    let level = format!("{AUDIO_LEVEL} urn:ietf:params:rtp-hdrext:ssrc-audio-level");
    let offer = audio_offer(&ice, &identity.fingerprint().to_string(), ssrc, &[&level]);
    signalling.send(Message::Text(json!({"type": "publish", "sdp": offer}).to_string().into())).unwrap();
    // The other publisher's `track-added` may come first.
    let answer = std::iter::repeat_with(|| next_room_event(signalling))
        .find(|event| event["type"] == "answer")
        .expect("an answer");
    connect_media(answer["sdp"].as_str().unwrap(), ice, &identity)
}

/// A publisher's audio stream: its client, SSRC and next sequence number.
struct Voice {
    client: UdpPeer,
    ssrc: u32,
    seq: u16,
}

impl Voice {
    /// Sends one 20 ms packet whose audio level element is `level` bytes.
    fn send(&mut self, level: &[u8]) {
        let mut buf = vec![0u8; 512];
        let elements: [(u8, &[u8]); 1] = [(AUDIO_LEVEL, level)];
        let header = RtpHeader::new(111, self.seq, u32::from(self.seq) * 960, self.ssrc)
            .extensions(&elements)
            .write(&mut buf)
            .unwrap();
        buf[header..header + 80].fill(0x5A);
        self.client.send_rtp(&mut buf, header + 80).unwrap();
        self.seq = self.seq.wrapping_add(1);
    }
}

/// Sends 20 ms audio from both voices with the given levels until `listener` hears a
/// `speaker` event (its peer is returned), or `within` passes.
fn talk_until_speaker(
    voices: &mut [Voice; 2],
    levels: [u8; 2],
    listener: &mut Client,
    within: Duration,
) -> Option<String> {
    if let MaybeTlsStream::Plain(stream) = listener.get_ref() {
        stream.set_read_timeout(Some(Duration::from_millis(1))).expect("read timeout");
    }
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for (voice, level) in voices.iter_mut().zip(levels) {
            voice.send(&[level]);
        }
        std::thread::sleep(Duration::from_millis(20));
        while let Ok(message) = listener.read() {
            let Message::Text(text) = message else { continue };
            let event: serde_json::Value = serde_json::from_str(&text).expect("JSON events");
            if event["type"] == "speaker" {
                return event["peer"].as_str().map(str::to_owned);
            }
        }
    }
    None
}

#[test]
fn the_room_hears_who_talks_and_bad_levels_are_counted() {
    let srv = Server::start(&[]);
    let (room, code) = convo(&srv, "alice", &["bob", "carol"], 5);
    let mut alice = join(&srv, &room, code, "alice");
    let mut bob = join(&srv, &room, code, "bob");
    let mut carol = join(&srv, &room, code, "carol");
    let mut voices = [
        Voice { client: publish_audio(&mut alice, 0xA1), ssrc: 0xA1, seq: 0 },
        Voice { client: publish_audio(&mut bob, 0xB1), ssrc: 0xB1, seq: 0 },
    ];

    let first = talk_until_speaker(&mut voices, [TALK, SILENT], &mut carol, Duration::from_secs(10));
    assert_eq!(first.as_deref(), Some("alice"), "alice talks");
    let second = talk_until_speaker(&mut voices, [SILENT, TALK], &mut carol, Duration::from_secs(10));
    assert_eq!(second.as_deref(), Some("bob"), "then bob");

    // Elements of the wrong length: counted, and the stream goes on.
    for _ in 0..10 {
        voices[0].send(&[TALK, 0]);
    }
    let counted = || metric(&srv, "uprtcd_bad_audio_levels_total{worker=\"0\"");
    let deadline = Instant::now() + Duration::from_secs(5);
    while counted() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(counted(), 10);
    let third = talk_until_speaker(&mut voices, [TALK, SILENT], &mut carol, Duration::from_secs(10));
    assert_eq!(third.as_deref(), Some("alice"), "alice again");
    assert!(metric(&srv, "uprtcd_speaker_changes_total") >= 3);
}
