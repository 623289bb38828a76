//! A text frame from a signalling client never panics the control plane: it is read as a
//! client message (`signalling::parse_client_message`), the error a bad one earns is an event
//! the server can send, and the SDP a `publish` or `answer` carries goes through the parse
//! the session gives it. Frames are UTF-8 (the WebSocket layer checks) and at most
//! `MAX_MESSAGE_BYTES`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uprtcd_controlplane::sdp::RemoteDescription;
use uprtcd_controlplane::signalling::{MAX_MESSAGE_BYTES, error_event, parse_client_message};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_MESSAGE_BYTES {
        return;
    }
    let Ok(body) = std::str::from_utf8(data) else { return };
    match parse_client_message(body) {
        Ok(message) => {
            if let Some(sdp) = message.sdp {
                let _ = RemoteDescription::parse(&sdp);
            }
        }
        Err(error) => {
            let event = error_event(&error).to_string();
            assert!(event.starts_with('{') && event.contains("\"type\":\"error\""), "{event}");
        }
    }
});
