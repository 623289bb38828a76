//! The capture's decisions, without socket, thread or clock: which datagram is written to
//! which stream, which is dropped and why, and when a stream needs a key-frame request.
//! The capture thread feeds it datagrams with their arrival time and does the I/O.

use std::collections::HashMap;
use std::io::{self, Write};

use uprtcd_dataplane::wire::rtcp::{RtcpCompound, RtcpPacket};
use uprtcd_dataplane::wire::rtp::RtpPacket;

use super::codec;
use super::format::{self, RecordKind};
use super::{MediaKind, StreamSpec};

/// Most streams one capture records; more are refused (their packets count as unknown).
pub(crate) const MAX_STREAMS: usize = 64;
/// Until a video stream's first key frame, key frames are requested at most this often.
const PLI_INTERVAL_US: u64 = 1_000_000;

/// What became of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Written (an RTP packet or sender reports), or nothing to write (other RTCP).
    Kept,
    /// A video packet before its stream's first key frame: not written; ask the sender for a
    /// key frame of this SSRC when `Some`.
    Waiting { request_key_frame: Option<u32> },
    /// An SSRC not added, or one that ended, or more streams than allowed.
    Unknown,
    /// Not RTP or RTCP, another payload type, too large for a record.
    Invalid,
}

#[derive(Debug)]
struct Stream<W> {
    spec: StreamSpec,
    out: W,
    /// Packets are written from the first key frame on (from the first packet for audio).
    writing: bool,
    ended: bool,
    last_request_us: Option<u64>,
}

/// Counters the capture reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub dropped_unknown: u64,
    pub dropped_invalid: u64,
}

/// The recorded streams, each writing to its `W` (a buffered file; a `Vec` in tests).
#[derive(Debug)]
pub(crate) struct Session<W> {
    streams: HashMap<u32, Stream<W>>,
    counters: Counters,
    started: bool,
}

impl<W: Write> Session<W> {
    pub(crate) fn new() -> Self {
        Self { streams: HashMap::new(), counters: Counters::default(), started: false }
    }

    /// Whether one more stream may be added.
    pub(crate) fn has_room_for(&self, ssrc: u32) -> bool {
        !self.streams.contains_key(&ssrc) && self.streams.len() < MAX_STREAMS
    }

    /// Starts recording `spec.ssrc` into `out`, whose header the caller has written.
    pub(crate) fn add_stream(&mut self, spec: StreamSpec, out: W) {
        debug_assert!(self.has_room_for(spec.ssrc));
        let writing = spec.kind == MediaKind::Audio;
        self.streams.insert(spec.ssrc, Stream { spec, out, writing, ended: false, last_request_us: None });
    }

    /// Later packets of `ssrc` are dropped.
    pub(crate) fn end_stream(&mut self, ssrc: u32) {
        if let Some(stream) = self.streams.get_mut(&ssrc) {
            stream.ended = true;
        }
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// Some video stream has its first key frame written, or (no video recorded) some audio.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// The open outputs, to flush or sync.
    pub(crate) fn outputs(&mut self) -> impl Iterator<Item = &mut W> {
        self.streams.values_mut().map(|stream| &mut stream.out)
    }

    /// Handles one datagram received `arrival_us` after the capture started. Errors are the
    /// output's: the caller stops writing.
    pub(crate) fn handle(&mut self, arrival_us: u64, datagram: &[u8]) -> io::Result<Verdict> {
        let verdict = match datagram.get(1) {
            // RFC 5761 §4: with RTP and RTCP on one port, RTCP packet types are 192..=223.
            Some(192..=223) => self.handle_rtcp(arrival_us, datagram)?,
            Some(_) => self.handle_rtp(arrival_us, datagram)?,
            None => Verdict::Invalid,
        };
        match verdict {
            Verdict::Unknown => self.counters.dropped_unknown += 1,
            Verdict::Invalid => self.counters.dropped_invalid += 1,
            Verdict::Kept | Verdict::Waiting { .. } => {}
        }
        Ok(verdict)
    }

    fn handle_rtp(&mut self, arrival_us: u64, datagram: &[u8]) -> io::Result<Verdict> {
        let Ok(packet) = RtpPacket::new_checked(datagram) else { return Ok(Verdict::Invalid) };
        let Some(stream) = self.streams.get_mut(&packet.ssrc()).filter(|stream| !stream.ended) else {
            return Ok(Verdict::Unknown);
        };
        if packet.payload_type() != stream.spec.payload_type || datagram.len() > format::MAX_RECORD_BODY {
            return Ok(Verdict::Invalid);
        }
        if !stream.writing {
            let key = codec::inspect(stream.spec.codec, packet.payload()).is_some_and(|i| i.frame_start && i.keyframe);
            if !key {
                let due = stream.last_request_us.is_none_or(|last| arrival_us >= last + PLI_INTERVAL_US);
                if due {
                    stream.last_request_us = Some(arrival_us);
                }
                return Ok(Verdict::Waiting { request_key_frame: due.then_some(stream.spec.ssrc) });
            }
            stream.writing = true;
        }
        format::write_record(&mut stream.out, RecordKind::Rtp, arrival_us, datagram)?;
        let is_video = stream.spec.kind == MediaKind::Video;
        self.counters.packets += 1;
        self.counters.bytes += datagram.len() as u64;
        if !self.started {
            let video_recorded = self.streams.values().any(|s| s.spec.kind == MediaKind::Video);
            self.started = is_video || !video_recorded;
        }
        Ok(Verdict::Kept)
    }

    fn handle_rtcp(&mut self, arrival_us: u64, datagram: &[u8]) -> io::Result<Verdict> {
        let Ok(compound) = RtcpCompound::new_checked(datagram) else { return Ok(Verdict::Invalid) };
        let mut verdict = Verdict::Kept;
        for packet in compound.packets() {
            let RtcpPacket::SenderReport(report) = packet else { continue };
            let info = report.info();
            match self.streams.get_mut(&info.ssrc).filter(|stream| !stream.ended) {
                Some(stream) => {
                    let body = format::sender_report_body(info.ntp_timestamp, info.rtp_timestamp);
                    format::write_record(&mut stream.out, RecordKind::SenderReport, arrival_us, &body)?;
                }
                None => verdict = Verdict::Unknown,
            }
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use uprtcd_dataplane::wire::rtcp::{SenderInfo, write_sender_report};
    use uprtcd_dataplane::wire::rtp::RtpHeader;

    use super::*;
    use crate::capture::Codec;
    use crate::capture::format::{Record, StreamReader};

    const VIDEO: u32 = 0xAAAA;
    const AUDIO: u32 = 0xBBBB;

    fn rtp(ssrc: u32, payload_type: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0; 64];
        let len = RtpHeader::new(payload_type, seq, u32::from(seq) * 3000, ssrc).write(&mut packet).unwrap();
        packet.truncate(len);
        packet.extend_from_slice(payload);
        packet
    }

    fn session() -> Session<Vec<u8>> {
        let mut session = Session::new();
        session.add_stream(StreamSpec::new(VIDEO, "p", Codec::Vp8, 96), Vec::new());
        session.add_stream(StreamSpec::new(AUDIO, "p", Codec::Opus, 111), Vec::new());
        session
    }

    fn records(session: Session<Vec<u8>>, ssrc: u32) -> Vec<Record> {
        let mut file = Vec::new();
        format::write_header(&mut file, &StreamSpec::new(ssrc, "p", Codec::Vp8, 96)).unwrap();
        file.extend_from_slice(&session.streams[&ssrc].out);
        let (_, mut reader) = StreamReader::open(&file[..]).unwrap();
        std::iter::from_fn(|| reader.next_record()).collect()
    }

    const INTER: [u8; 3] = [0x10, 0x01, 0x00];
    const KEY: [u8; 3] = [0x10, 0x00, 0x00];

    #[test]
    fn video_waits_for_a_key_frame_and_requests_one_a_second() {
        let mut s = session();
        let waiting = |request| Verdict::Waiting { request_key_frame: request };
        assert_eq!(s.handle(0, &rtp(VIDEO, 96, 1, &INTER)).unwrap(), waiting(Some(VIDEO)));
        assert_eq!(s.handle(500_000, &rtp(VIDEO, 96, 2, &INTER)).unwrap(), waiting(None));
        assert_eq!(s.handle(1_000_000, &rtp(VIDEO, 96, 3, &INTER)).unwrap(), waiting(Some(VIDEO)));
        assert!(!s.started());
        assert_eq!(s.handle(1_100_000, &rtp(VIDEO, 96, 4, &KEY)).unwrap(), Verdict::Kept);
        assert!(s.started());
        assert_eq!(s.handle(1_200_000, &rtp(VIDEO, 96, 5, &INTER)).unwrap(), Verdict::Kept);
        let written = records(s, VIDEO);
        assert_eq!(written.len(), 2);
        assert!(matches!(&written[0], Record::Rtp { arrival_us: 1_100_000, .. }));
    }

    #[test]
    fn audio_alone_does_not_start_a_capture_that_records_video() {
        let mut s = session();
        assert_eq!(s.handle(0, &rtp(AUDIO, 111, 1, &[0xFC])).unwrap(), Verdict::Kept);
        assert!(!s.started());
        let mut audio_only = Session::new();
        audio_only.add_stream(StreamSpec::new(AUDIO, "p", Codec::Opus, 111), Vec::new());
        audio_only.handle(0, &rtp(AUDIO, 111, 1, &[0xFC])).unwrap();
        assert!(audio_only.started());
        assert_eq!(audio_only.counters().packets, 1);
    }

    #[test]
    fn unknown_ended_and_invalid_packets_are_counted() {
        let mut s = session();
        assert_eq!(s.handle(0, &rtp(0xCCCC, 96, 1, &KEY)).unwrap(), Verdict::Unknown);
        assert_eq!(s.handle(0, &rtp(VIDEO, 97, 1, &KEY)).unwrap(), Verdict::Invalid);
        assert_eq!(s.handle(0, &[0x00, 0x01, 0x02]).unwrap(), Verdict::Invalid);
        assert_eq!(s.handle(0, &[]).unwrap(), Verdict::Invalid);
        s.end_stream(AUDIO);
        assert_eq!(s.handle(0, &rtp(AUDIO, 111, 1, &[0xFC])).unwrap(), Verdict::Unknown);
        let counters = s.counters();
        assert_eq!((counters.dropped_unknown, counters.dropped_invalid, counters.packets), (2, 3, 0));
    }

    #[test]
    fn sender_reports_are_written_to_their_stream() {
        let mut s = session();
        let mut buf = [0u8; 64];
        let info = SenderInfo { ssrc: AUDIO, ntp_timestamp: 5 << 32, rtp_timestamp: 480, ..SenderInfo::default() };
        let len = write_sender_report(&mut buf, &info, &[]).unwrap();
        assert_eq!(s.handle(42, &buf[..len]).unwrap(), Verdict::Kept);
        assert_eq!(records(s, AUDIO), vec![Record::SenderReport { arrival_us: 42, ntp: 5 << 32, rtp: 480 }]);
    }

    #[test]
    fn streams_are_bounded() {
        let mut s: Session<Vec<u8>> = Session::new();
        for ssrc in 0..MAX_STREAMS as u32 {
            assert!(s.has_room_for(ssrc));
            s.add_stream(StreamSpec::new(ssrc, "p", Codec::Opus, 111), Vec::new());
        }
        assert!(!s.has_room_for(1_000));
        assert!(!s.has_room_for(0), "an SSRC already recorded");
    }
}
