//! The signalling protocol's messages as types (docs/signalling.md): what a client sends,
//! [`ClientMessage`], and what the server sends, [`ServerEvent`]. serde makes their JSON:
//! one object per frame, its `type` the variant's kebab-case name, its fields camelCase, and
//! every server event carries the protocol version `v`.
//!
//! Rule: the JSON of these types is the protocol the browser SDK (`static/uprtc.js`) and the
//! tests speak; renaming a variant or a field changes the wire. The tests below pin each
//! event's JSON.
#![forbid(unsafe_code)]

use std::fmt::Display;

use serde::{Deserialize, Serialize, Serializer};

use uprtcd_dataplane::engine::CloseReason;
use uprtcd_dataplane::router::MediaKind;
use uprtcd_dataplane::wire::video::TemporalId;

use crate::envelope::{ApiCode, ApiError};
use crate::ids::{PeerId, RoomId, TrackId};
use crate::sdp::Mid;

/// The signalling protocol version every event carries.
pub const VERSION: u32 = 1;

/// A message from the client. Fields the protocol does not name are ignored.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// Ends the session.
    Leave,
    /// Asks for a `pong`.
    Ping,
    /// The client's offer to publish.
    Publish { sdp: String },
    /// Asks to receive what the room's other peers publish, now and later.
    Subscribe,
    /// The client's answer to the server's latest offer.
    Answer { sdp: String },
    /// The highest simulcast layer the client wants of a video track it receives (a small
    /// view needs no full-size picture); the SFU sends at most that, less when the client's
    /// link carries less. `frameRate`: how many of the layer's temporal layers (a quarter, a
    /// half or all of its frames, when the publisher sends VP8 temporal layers). `pinned`:
    /// the track's view matters most to the user (a pinned or main view), so its video takes
    /// the client's bandwidth first. Tracks without layers ignore it.
    #[serde(rename_all = "camelCase")]
    VideoQuality {
        track_id: TrackId,
        quality: VideoQuality,
        #[serde(default)]
        frame_rate: FrameRate,
        #[serde(default)]
        pinned: bool,
    },
    /// A type this version does not know: answered with 10003, where a message that is not
    /// one at all gets 10002.
    #[serde(other)]
    Unknown,
}

impl ClientMessage {
    /// Reads one text frame; what is not a message of this protocol is refused with the
    /// `error` to answer it with (10002).
    pub fn parse(body: &str) -> Result<Self, ApiError> {
        serde_json::from_str(body).map_err(|e| ApiError::invalid(format!("not a signalling message: {e}")))
    }

    /// The error answering `body`, which parsed as [`ClientMessage::Unknown`] (10003): it
    /// names the type.
    pub fn unknown(body: &str) -> ApiError {
        #[derive(Deserialize)]
        struct Tagged {
            #[serde(rename = "type")]
            kind: String,
        }
        let kind = serde_json::from_str::<Tagged>(body).map(|t| t.kind).unwrap_or_default();
        ApiError::request(format!(
            "unknown message type {kind:?}; this server knows leave, ping, publish, subscribe, answer and video-quality"
        ))
    }
}

/// A simulcast layer by its size: the lowest, the middle one and the highest of those a
/// stream has (a stream of two layers has no middle one: `medium` is its highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoQuality {
    Low,
    Medium,
    High,
}

impl VideoQuality {
    /// The layer index it names, counted from the lowest (the dataplane clamps it to the
    /// layers there are).
    pub fn layer(self) -> usize {
        match self {
            Self::Low => 0,
            Self::Medium => 1,
            Self::High => usize::MAX,
        }
    }
}

/// How much of a layer's frame rate a client wants, by its VP8 temporal layers: the base
/// layer (a quarter of the frames in the L1T3 pattern browsers send), two layers (half), or
/// all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameRate {
    Low,
    Medium,
    #[default]
    High,
}

impl FrameRate {
    /// The highest temporal layer it takes.
    pub fn max_temporal_layer(self) -> TemporalId {
        match self {
            Self::Low => TemporalId::BASE,
            Self::Medium => TemporalId::new(1).unwrap_or(TemporalId::MAX),
            Self::High => TemporalId::MAX,
        }
    }
}

/// An event the server sends a client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum ServerEvent {
    /// The client was admitted: who is there (`peers`, the client included) and what the
    /// others publish.
    Joined {
        room: RoomId,
        peer: PeerId,
        peers: Vec<PeerId>,
        tracks: Vec<TrackInfo>,
    },
    PeerJoined {
        peer: PeerId,
    },
    PeerLeft {
        peer: PeerId,
    },
    /// A stream another client publishes: one event per stream.
    TrackAdded(TrackInfo),
    TrackRemoved {
        peer: PeerId,
        track_id: TrackId,
    },
    /// To a simulcast publisher: send the layers `active` names (rids) of the section `mid`,
    /// pause the others (nobody receives them).
    Layers {
        mid: String,
        active: Vec<String>,
    },
    /// The room's dominant speaker changed: `peer` talks now, on its audio track `trackId`.
    Speaker {
        peer: PeerId,
        track_id: TrackId,
    },
    /// The other rooms of the room's merge group now.
    MergeChanged {
        merge_room_ids: Vec<RoomId>,
    },
    /// A co-host was taken back to the audience; its session goes on.
    Unpublished {
        reason: UnpublishReason,
    },
    /// The business server's message (any JSON).
    Message {
        data: serde_json::Value,
    },
    Kicked,
    RoomClosed,
    /// Another connection of the same peer replaced this one.
    Replaced,
    /// The room's origin is full: reconnect to its mirror at `serverUrl` + `invitationCode`
    /// with this fresh `token`. Sent instead of `joined`; the connection then closes.
    Redirect {
        server_url: String,
        server_alias: String,
        invitation_code: u32,
        token: String,
    },
    /// The worker removed one of the session's transports.
    TransportClosed {
        role: TransportRole,
        #[serde(serialize_with = "close_reason")]
        reason: CloseReason,
    },
    Pong,
    /// The server's offer of the room's streams, with the stream of each section.
    Offer {
        sdp: String,
        tracks: Vec<OfferedTrack>,
    },
    /// The client's answer was taken.
    Subscribed,
    /// The server's answer to `publish`.
    Answer {
        sdp: String,
    },
    /// A refused admission, or a bad client message.
    Error {
        #[serde(serialize_with = "code_number")]
        code: ApiCode,
        msg: String,
    },
}

impl ServerEvent {
    pub fn error(error: &ApiError) -> Self {
        ServerEvent::Error { code: error.code, msg: error.msg.clone() }
    }

    /// The event as the client receives it: `v`, `type` and the event's fields.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Versioned<'a> {
            v: u32,
            #[serde(flatten)]
            event: &'a ServerEvent,
        }
        serde_json::to_string(&Versioned { v: VERSION, event: self })
            .expect("an event is an object of strings, numbers, ids and JSON values: it always serializes")
    }
}

/// A published stream as `joined` and `track-added` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackInfo {
    pub peer: PeerId,
    pub track_id: TrackId,
    /// `audio` or `video`.
    #[serde(serialize_with = "display")]
    pub kind: MediaKind,
}

/// A stream in an `offer`: the section (`mid`) it is offered in and the SSRC it comes as.
#[derive(Debug, Clone, Serialize)]
pub struct OfferedTrack {
    #[serde(serialize_with = "mid")]
    pub mid: Mid,
    #[serde(flatten)]
    pub track: TrackInfo,
    pub ssrc: u32,
}

/// Why a session stopped publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UnpublishReason {
    /// A co-host taken back to the audience.
    #[serde(rename = "no longer a live member")]
    NoLongerLiveMember,
}

/// Which of a session's transports `transport-closed` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportRole {
    Publish,
    Subscribe,
}

fn display<S: Serializer>(value: &impl Display, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn mid<S: Serializer>(mid: &Mid, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(mid.as_str())
}

fn close_reason<S: Serializer>(reason: &CloseReason, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(reason.as_str())
}

fn code_number<S: Serializer>(code: &ApiCode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u32(code.number())
}

#[cfg(test)]
pub(super) mod tests {
    use serde_json::{Value, json};

    use super::*;

    pub(in crate::signalling) fn peer(name: &str) -> PeerId {
        PeerId::try_from(name.to_owned()).unwrap()
    }

    pub(in crate::signalling) fn room(name: &str) -> RoomId {
        RoomId::try_from(name.to_owned()).unwrap()
    }

    fn video(publisher: &str, number: u64) -> TrackInfo {
        TrackInfo { peer: peer(publisher), track_id: TrackId::numbered(number), kind: MediaKind::Video }
    }

    /// The event's JSON, as a value (key order is no part of the protocol).
    fn wire(event: ServerEvent) -> Value {
        serde_json::from_str(&event.to_json()).unwrap()
    }

    fn literal(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn joined() {
        let event = ServerEvent::Joined {
            room: room("r1"),
            peer: peer("bob"),
            peers: vec![peer("alice"), peer("bob")],
            tracks: vec![TrackInfo { kind: MediaKind::Audio, ..video("alice", 0) }],
        };
        let expected = r#"{"v":1,"type":"joined","room":"r1","peer":"bob","peers":["alice","bob"],
            "tracks":[{"peer":"alice","trackId":"t0","kind":"audio"}]}"#;
        assert_eq!(wire(event), literal(expected));
    }

    #[test]
    fn peer_joined() {
        let expected = r#"{"v":1,"type":"peer-joined","peer":"bob"}"#;
        assert_eq!(wire(ServerEvent::PeerJoined { peer: peer("bob") }), literal(expected));
    }

    #[test]
    fn peer_left() {
        let expected = r#"{"v":1,"type":"peer-left","peer":"bob"}"#;
        assert_eq!(wire(ServerEvent::PeerLeft { peer: peer("bob") }), literal(expected));
    }

    #[test]
    fn track_added() {
        let expected = r#"{"v":1,"type":"track-added","peer":"alice","trackId":"t7","kind":"video"}"#;
        assert_eq!(wire(ServerEvent::TrackAdded(video("alice", 7))), literal(expected));
    }

    #[test]
    fn track_removed() {
        let event = ServerEvent::TrackRemoved { peer: peer("alice"), track_id: TrackId::numbered(7) };
        assert_eq!(wire(event), literal(r#"{"v":1,"type":"track-removed","peer":"alice","trackId":"t7"}"#));
    }

    #[test]
    fn merge_changed() {
        let event = ServerEvent::MergeChanged { merge_room_ids: vec![room("r2"), room("r3")] };
        assert_eq!(wire(event), literal(r#"{"v":1,"type":"merge-changed","mergeRoomIds":["r2","r3"]}"#));
        let alone = ServerEvent::MergeChanged { merge_room_ids: Vec::new() };
        assert_eq!(wire(alone), literal(r#"{"v":1,"type":"merge-changed","mergeRoomIds":[]}"#));
    }

    #[test]
    fn redirect() {
        let event = ServerEvent::Redirect {
            server_url: "ws://10.0.0.2:6016/".into(),
            server_alias: "rtc-2".into(),
            invitation_code: 123_456_789,
            token: "t.k.n".into(),
        };
        let expected = r#"{"v":1,"type":"redirect","serverUrl":"ws://10.0.0.2:6016/","serverAlias":"rtc-2","invitationCode":123456789,"token":"t.k.n"}"#;
        assert_eq!(wire(event), literal(expected));
    }

    #[test]
    fn unpublished() {
        let event = ServerEvent::Unpublished { reason: UnpublishReason::NoLongerLiveMember };
        assert_eq!(wire(event), literal(r#"{"v":1,"type":"unpublished","reason":"no longer a live member"}"#));
    }

    #[test]
    fn message() {
        let data = json!({"text": "hi", "n": [1, 2], "nested": {"type": "not ours"}});
        let expected = r#"{"v":1,"type":"message","data":{"text":"hi","n":[1,2],"nested":{"type":"not ours"}}}"#;
        assert_eq!(wire(ServerEvent::Message { data }), literal(expected));
        let expected = r#"{"v":1,"type":"message","data":"plain"}"#;
        assert_eq!(wire(ServerEvent::Message { data: json!("plain") }), literal(expected));
    }

    #[test]
    fn events_without_fields() {
        assert_eq!(
            wire(ServerEvent::Speaker { peer: peer("alice"), track_id: TrackId::numbered(4) }),
            literal(r#"{"v":1,"type":"speaker","peer":"alice","trackId":"t4"}"#)
        );
        for (event, kind) in [
            (ServerEvent::Kicked, "kicked"),
            (ServerEvent::RoomClosed, "room-closed"),
            (ServerEvent::Replaced, "replaced"),
            (ServerEvent::Pong, "pong"),
            (ServerEvent::Subscribed, "subscribed"),
        ] {
            assert_eq!(wire(event), literal(&format!(r#"{{"v":1,"type":"{kind}"}}"#)));
        }
    }

    #[test]
    fn layers() {
        let event = ServerEvent::Layers { mid: "1".into(), active: vec!["q".into(), "h".into()] };
        assert_eq!(wire(event), literal(r#"{"v":1,"type":"layers","mid":"1","active":["q","h"]}"#));
    }

    #[test]
    fn transport_closed() {
        let event = ServerEvent::TransportClosed { role: TransportRole::Publish, reason: CloseReason::ConsentExpired };
        let expected = r#"{"v":1,"type":"transport-closed","role":"publish","reason":"consent_expired"}"#;
        assert_eq!(wire(event), literal(expected));
        let event = ServerEvent::TransportClosed { role: TransportRole::Subscribe, reason: CloseReason::IceTimeout };
        let expected = r#"{"v":1,"type":"transport-closed","role":"subscribe","reason":"ice_timeout"}"#;
        assert_eq!(wire(event), literal(expected));
    }

    #[test]
    fn offer() {
        let track = OfferedTrack { mid: Mid::new("0"), track: video("alice", 3), ssrc: 0x5500_0003 };
        let event = ServerEvent::Offer { sdp: "v=0\r\n".into(), tracks: vec![track] };
        let expected = r#"{"v":1,"type":"offer","sdp":"v=0\r\n",
            "tracks":[{"mid":"0","peer":"alice","trackId":"t3","kind":"video","ssrc":1426063363}]}"#;
        assert_eq!(wire(event), literal(expected));
    }

    #[test]
    fn answer() {
        let expected = r#"{"v":1,"type":"answer","sdp":"v=0\r\n"}"#;
        assert_eq!(wire(ServerEvent::Answer { sdp: "v=0\r\n".into() }), literal(expected));
    }

    #[test]
    fn error() {
        let event = ServerEvent::error(&ApiError::new(ApiCode::AlreadyConnected, "already connected"));
        let expected = r#"{"v":1,"type":"error","code":50004,"msg":"already connected"}"#;
        assert_eq!(wire(event), literal(expected));
    }

    #[test]
    fn client_messages_parse_by_type() {
        let sdp = || "v=0\r\n".to_owned();
        for (body, message) in [
            (r#"{"type":"leave"}"#, ClientMessage::Leave),
            (r#"{"type":"ping"}"#, ClientMessage::Ping),
            (r#"{"type":"subscribe"}"#, ClientMessage::Subscribe),
            (r#"{"type":"publish","sdp":"v=0\r\n"}"#, ClientMessage::Publish { sdp: sdp() }),
            (r#"{"sdp":"v=0\r\n","type":"answer"}"#, ClientMessage::Answer { sdp: sdp() }),
            (
                r#"{"type":"video-quality","trackId":"t3","quality":"low"}"#,
                ClientMessage::VideoQuality {
                    track_id: TrackId::numbered(3),
                    quality: VideoQuality::Low,
                    frame_rate: FrameRate::High,
                    pinned: false,
                },
            ),
            (
                r#"{"type":"video-quality","trackId":"t4","quality":"high","frameRate":"low","pinned":true}"#,
                ClientMessage::VideoQuality {
                    track_id: TrackId::numbered(4),
                    quality: VideoQuality::High,
                    frame_rate: FrameRate::Low,
                    pinned: true,
                },
            ),
            // Fields the protocol does not name are ignored, as they always were.
            (r#"{"type":"ping","id":5}"#, ClientMessage::Ping),
            (r#"{"type":"publish","sdp":"v=0\r\n","extra":true}"#, ClientMessage::Publish { sdp: sdp() }),
        ] {
            assert_eq!(ClientMessage::parse(body), Ok(message), "{body}");
        }
    }

    #[test]
    fn an_unknown_type_is_10003_and_names_it() {
        for body in [r#"{"type":"teleport"}"#, r#"{"type":"Ping"}"#, r#"{"type":"","sdp":"x"}"#] {
            assert_eq!(ClientMessage::parse(body), Ok(ClientMessage::Unknown), "{body}");
            let error = ClientMessage::unknown(body);
            assert_eq!(error.code, ApiCode::InvalidRequest, "{body}");
            let kind = literal(body)["type"].as_str().unwrap().to_owned();
            assert!(error.msg.contains(&format!("{kind:?}")), "{body}: {}", error.msg);
        }
    }

    #[test]
    fn what_is_no_message_is_10002() {
        for body in [
            "{not json",
            "",
            "[]",
            r#""ping""#,
            r#"{}"#,
            r#"{"sdp":"v=0"}"#,
            r#"{"type":0}"#,
            r#"{"type":null}"#,
            r#"{"type":"publish"}"#,
            r#"{"type":"answer","sdp":5}"#,
            r#"{"type":"video-quality","trackId":"t3","quality":"ultra"}"#,
            r#"{"type":"video-quality","quality":"low"}"#,
            r#"{"type":"video-quality","trackId":"t3","quality":"low","frameRate":"60"}"#,
        ] {
            let error = ClientMessage::parse(body).unwrap_err();
            assert_eq!(error.code, ApiCode::InvalidParameter, "{body}: {}", error.msg);
            assert!(error.msg.starts_with("not a signalling message: "), "{body}: {}", error.msg);
        }
        let error = ClientMessage::parse(r#"{"type":"publish"}"#).unwrap_err();
        assert!(error.msg.contains("sdp"), "{}", error.msg);
    }
}
