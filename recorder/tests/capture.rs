//! The capture thread through its socket, as a worker sees it: key-frame requests until a
//! key frame arrives, files that reach the OS within 200 ms, counters, and a durable stop.

use std::fs;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use uprtcd_dataplane::wire::rtcp::{RtcpCompound, RtcpPacket};
use uprtcd_dataplane::wire::rtp::RtpHeader;
use uprtcd_recorder::capture::{Capture, CaptureEvent, CaptureMeta, Codec, Layout, Resolution, StreamSpec};

const SSRC: u32 = 0x1111_2222;

fn vp8_packet(seq: u16, key: bool) -> Vec<u8> {
    let mut packet = vec![0; 1200];
    let len = RtpHeader::new(96, seq, u32::from(seq) * 3000, SSRC).marker(true).write(&mut packet).unwrap();
    // A one-packet frame: descriptor with S=1, PID 0; VP8 frame tag P bit.
    packet[len] = 0x10;
    packet[len + 1] = if key { 0x00 } else { 0x01 };
    packet.truncate(len + 100);
    packet
}

/// Waits up to a second for a PLI on `socket`; its media SSRC.
fn receive_pli(socket: &UdpSocket) -> Option<u32> {
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Ok(len) = socket.recv(&mut buf) else { continue };
        let compound = RtcpCompound::new_checked(&buf[..len]).ok()?;
        if let Some(RtcpPacket::Pli(pli)) = compound.packets().next() {
            return Some(pli.media_ssrc());
        }
    }
    None
}

#[test]
fn a_video_stream_is_written_from_its_first_key_frame() {
    let dir = tempfile::tempdir().unwrap();
    let capture_dir = dir.path().join("rec");
    let meta = CaptureMeta {
        room: "r".into(),
        record: "1".into(),
        started_unix_ms: 1,
        layout: Layout::Grid,
        resolution: Resolution::P720,
        fix_video_direction: false,
    };
    let capture = Capture::start(&capture_dir, meta.clone()).unwrap();
    assert!(Capture::start(&capture_dir, meta).is_err(), "an existing folder is refused");
    capture.add_stream(StreamSpec::new(SSRC, "p", Codec::Vp8, 96));
    capture.event(CaptureEvent::Joined { peer: "p".into() });
    let worker = UdpSocket::bind("127.0.0.1:0").unwrap();
    worker.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let to = capture.address();
    assert!(to.ip().is_loopback());

    // Inter frames before any key frame: not written, and a PLI for the stream comes back.
    worker.send_to(&vp8_packet(1, false), to).unwrap();
    assert_eq!(receive_pli(&worker), Some(SSRC));
    worker.send_to(&vp8_packet(2, false), to).unwrap();
    // Throttled: no second request within the second.
    let mut buf = [0u8; 64];
    assert!(worker.recv(&mut buf).is_err(), "one PLI a second at most");
    assert!(!capture.progress().started);

    worker.send_to(&vp8_packet(3, true), to).unwrap();
    worker.send_to(&vp8_packet(4, false), to).unwrap();
    let mut unknown = vp8_packet(5, true);
    unknown[8..12].copy_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
    worker.send_to(&unknown, to).unwrap();

    // Buffered records reach the file within the flush interval, without a stop.
    let file = capture_dir.join(format!("stream-{SSRC:08x}.rec"));
    std::thread::sleep(Duration::from_millis(450));
    let written = fs::metadata(&file).unwrap().len();
    assert!(written > 2 * 100, "{written} bytes on disk");
    let progress = capture.progress();
    assert!(progress.started);
    assert_eq!((progress.packets, progress.dropped_unknown), (2, 1), "{progress:?}");

    capture.end_stream(SSRC);
    std::thread::sleep(Duration::from_millis(100));
    worker.send_to(&vp8_packet(6, false), to).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let progress = capture.stop().unwrap();
    assert_eq!((progress.packets, progress.dropped_unknown, progress.failure), (2, 2, None));
    assert_eq!(fs::metadata(&file).unwrap().len(), written, "nothing after the end");
    let log = fs::read_to_string(capture_dir.join("events.log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.contains("stream_ended"));
}

#[test]
fn a_capture_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Capture>();
}
