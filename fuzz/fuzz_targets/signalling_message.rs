//! A text frame from a signalling client never panics the control plane: it is read as a
//! client message (`ClientMessage::parse`), the error a bad one earns is an event
//! the server can send, and the SDP a `publish` or `answer` carries goes through the parse
//! the session gives it. Frames are UTF-8 (the WebSocket layer checks) and at most
//! `MAX_MESSAGE_BYTES`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uprtcd_controlplane::sdp::RemoteDescription;
use uprtcd_controlplane::signalling::MAX_MESSAGE_BYTES;
use uprtcd_controlplane::signalling::protocol::{ClientMessage, ServerEvent};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_MESSAGE_BYTES {
        return;
    }
    let Ok(body) = std::str::from_utf8(data) else { return };
    let refused = match ClientMessage::parse(body) {
        Ok(ClientMessage::Publish { sdp } | ClientMessage::Answer { sdp }) => {
            let _ = RemoteDescription::parse(&sdp);
            return;
        }
        Ok(ClientMessage::Unknown) => ClientMessage::unknown(body),
        Ok(_) => return,
        Err(error) => error,
    };
    let event = ServerEvent::error(&refused).to_json();
    assert!(event.starts_with('{') && event.contains("\"type\":\"error\""), "{event}");
});
