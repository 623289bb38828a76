//! One recorded stream, from its capture file to a file ffmpeg reads: records in arrival
//! order → packets in sequence order (a bounded reorder window, duplicates dropped) → whole
//! frames (incomplete ones dropped; video after a loss waits for the next key frame) → IVF
//! (video) or Ogg Opus (audio), streamed to disk. On the way it keeps what the timeline needs:
//! the least-delayed packet, the last sender report, when the video was present and how the
//! CVO byte turned it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use uprtcd_dataplane::wire::rtp::RtpPacket;

use crate::capture::codec::{self, PayloadInfo};
use crate::capture::format::{Record, StreamReader};
use crate::capture::{Codec, MediaKind, StreamSpec};

/// Packets held back to put late ones in order; a packet later than this many is lost.
const REORDER_WINDOW: usize = 256;
/// A video stream that sends no frame for longer than this is absent in between.
pub(crate) const PRESENCE_GAP_MS: u64 = 2_000;
/// Largest frame kept (a 4K key frame is well below); larger ones are dropped as damaged.
const MAX_FRAME: usize = 8 << 20;
/// Opus always runs at 48 kHz in RTP (RFC 7587) and in Ogg granules (RFC 7845).
const OPUS_RATE: i64 = 48_000;

/// What composition knows about one stream after reading it.
#[derive(Debug, Clone)]
pub(crate) struct Track {
    pub spec: StreamSpec,
    /// The IVF or Ogg file written.
    pub path: PathBuf,
    /// Capture time (µs) of the first written frame, by the least-delayed packet.
    pub origin_capture_us: i64,
    /// The last sender report: NTP time and the first written frame's distance from it,
    /// in µs (origin time = ntp − that).
    pub sender_report: Option<SenderReportTiming>,
    /// Last frame's time, ms after the first one (audio: the end of its last packet).
    pub end_ms: u64,
    /// Video: spans (ms after the first frame) with no gap longer than [`PRESENCE_GAP_MS`].
    pub presence: Vec<(u64, u64)>,
    /// Video: (ms after the first frame, CVO rotation 0..=3) whenever it changed.
    pub rotations: Vec<(u64, u8)>,
}

/// A sender report translated to the stream's first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SenderReportTiming {
    /// The report's NTP time in µs.
    pub ntp_us: i64,
    /// RTP time from the first frame to the report, in µs.
    pub origin_to_report_us: i64,
}

/// Reads `capture_file` and writes its frames under `work_dir`; `Ok(None)` when the stream
/// has nothing to show (no key frame, no packet).
pub(crate) fn read_track(capture_file: &Path, work_dir: &Path) -> io::Result<Option<Track>> {
    let (spec, mut reader) = StreamReader::open(BufReader::new(File::open(capture_file)?))?;
    let extension = match spec.codec {
        Codec::Opus => "ogg",
        Codec::Vp8 | Codec::Vp9 | Codec::H264 => "ivf",
    };
    let path = work_dir.join(format!("track-{:08x}.{extension}", spec.ssrc));
    let sink = match spec.codec {
        Codec::Opus => Sink::Ogg(OggOpusWriter::create(&path, spec.ssrc)?),
        codec => Sink::Ivf(IvfWriter::create(&path, codec)?),
    };
    let mut builder = TrackBuilder::new(spec, sink);
    while let Some(record) = reader.next_record() {
        match record {
            Record::Rtp { arrival_us, packet } => builder.push_packet(arrival_us, packet)?,
            Record::SenderReport { ntp, rtp, .. } => builder.sender_report(ntp, rtp),
        }
    }
    builder.finish(path)
}

/// Where frames go.
#[derive(Debug)]
enum Sink {
    Ivf(IvfWriter),
    Ogg(OggOpusWriter),
}

/// The frame being assembled.
#[derive(Debug)]
struct Frame {
    timestamp: i64,
    data: Vec<u8>,
    /// Started at a frame start with no packet missing since.
    whole: bool,
    key: bool,
}

/// A packet released from the reorder window.
#[derive(Debug)]
struct Ordered {
    seq: i64,
    arrival_us: u64,
    packet: Vec<u8>,
}

/// Extends 16- or 32-bit wrapping counters to `i64`, each value taken nearest to the last.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Unwrapper {
    last: Option<i64>,
}

impl Unwrapper {
    pub(crate) fn unwrap(&mut self, value: u32, bits: u32) -> i64 {
        let value = i64::from(value);
        let extended = match self.last {
            None => value,
            Some(last) => nearest(value, last, bits),
        };
        self.last = Some(extended);
        extended
    }
}

/// `value` (a `bits`-bit counter) extended to the 64-bit value nearest to `near`.
fn nearest(value: i64, near: i64, bits: u32) -> i64 {
    let period = 1i64 << bits;
    let base = near - near.rem_euclid(period);
    [base - period, base, base + period]
        .into_iter()
        .map(|b| b + value)
        .min_by_key(|candidate| (candidate - near).abs())
        .unwrap_or(value)
}

#[derive(Debug)]
struct TrackBuilder {
    spec: StreamSpec,
    sink: Sink,
    sequence: Unwrapper,
    timestamps: Unwrapper,
    window: BTreeMap<i64, (u64, Vec<u8>)>,
    last_released: Option<i64>,
    frame: Option<Frame>,
    /// Video: frames are dropped until the next key frame (from the start, and after a loss).
    need_key: bool,
    /// Extended RTP timestamp and arrival of the first packet released, the reference of
    /// the least-delay search.
    reference: Option<(i64, u64)>,
    min_delay_us: i64,
    /// Extended timestamp of the first written frame.
    origin: Option<i64>,
    last_ms: Option<u64>,
    end_ms: u64,
    /// Audio: the granule position (48 kHz samples) where the last packet written ends.
    end_granule: u64,
    sender_report: Option<(u64, u32)>,
    presence: Vec<(u64, u64)>,
    rotation: u8,
    rotations: Vec<(u64, u8)>,
}

impl TrackBuilder {
    fn new(spec: StreamSpec, sink: Sink) -> Self {
        Self {
            need_key: spec.kind == MediaKind::Video,
            spec,
            sink,
            sequence: Unwrapper::default(),
            timestamps: Unwrapper::default(),
            window: BTreeMap::new(),
            last_released: None,
            frame: None,
            reference: None,
            min_delay_us: i64::MAX,
            origin: None,
            last_ms: None,
            end_ms: 0,
            end_granule: 0,
            sender_report: None,
            presence: Vec::new(),
            rotation: 0,
            rotations: Vec::new(),
        }
    }

    fn push_packet(&mut self, arrival_us: u64, packet: Vec<u8>) -> io::Result<()> {
        let Ok(view) = RtpPacket::new_checked(&packet[..]) else { return Ok(()) };
        let seq = self.sequence.unwrap(u32::from(view.sequence_number()), 16);
        let late = self.last_released.is_some_and(|last| seq <= last);
        if late || self.window.contains_key(&seq) {
            return Ok(());
        }
        self.window.insert(seq, (arrival_us, packet));
        if self.window.len() > REORDER_WINDOW {
            self.release_one()?;
        }
        Ok(())
    }

    fn release_one(&mut self) -> io::Result<()> {
        match self.window.pop_first() {
            Some((seq, (arrival_us, packet))) => self.ordered(Ordered { seq, arrival_us, packet }),
            None => Ok(()),
        }
    }

    fn sender_report(&mut self, ntp: u64, rtp: u32) {
        self.sender_report = Some((ntp, rtp));
    }

    /// One packet in sequence order.
    fn ordered(&mut self, ordered: Ordered) -> io::Result<()> {
        let Ok(packet) = RtpPacket::new_checked(&ordered.packet[..]) else { return Ok(()) };
        let lost = self.last_released.is_some_and(|last| ordered.seq != last + 1);
        self.last_released = Some(ordered.seq);
        let timestamp = self.timestamps.unwrap(packet.timestamp(), 32);
        self.note_delay(timestamp, ordered.arrival_us);
        if let Some(rotation) = self.spec.cvo_extension_id.and_then(|id| packet.extension(id)?.first().copied()) {
            // CVO byte: 0 0 0 0 C F R1 R0 (3GPP TS 26.114 §7.4.5); R1R0 in quarter turns.
            self.rotation = rotation & 0x03;
        }
        if packet.payload().is_empty() {
            // Padding only (bandwidth probes on the media SSRC): it takes a sequence number
            // but is part of no frame.
            return Ok(());
        }
        let info = codec::inspect(self.spec.codec, packet.payload());
        if self.spec.kind == MediaKind::Audio {
            let mut data = Vec::new();
            if info.is_some() && codec::depacketize(self.spec.codec, packet.payload(), &mut data).is_some() {
                self.emit(Frame { timestamp, data, whole: true, key: true })?;
            }
            return Ok(());
        }
        if let (true, Some(frame)) = (lost, self.frame.as_mut()) {
            frame.whole = false;
        }
        if self.frame.as_ref().is_some_and(|frame| frame.timestamp != timestamp) {
            self.finish_frame()?;
        }
        let frame = self.frame.get_or_insert_with(|| {
            let PayloadInfo { frame_start, keyframe } =
                info.unwrap_or(PayloadInfo { frame_start: false, keyframe: false });
            Frame { timestamp, data: Vec::new(), whole: frame_start && !lost, key: keyframe }
        });
        let depacketized =
            info.is_some() && codec::depacketize(self.spec.codec, packet.payload(), &mut frame.data).is_some();
        if !depacketized || frame.data.len() > MAX_FRAME {
            frame.whole = false;
        }
        if packet.marker() {
            self.finish_frame()?;
        }
        Ok(())
    }

    fn note_delay(&mut self, timestamp: i64, arrival_us: u64) {
        let (reference, _) = *self.reference.get_or_insert((timestamp, arrival_us));
        let media_us = (timestamp - reference) * 1_000_000 / i64::from(self.spec.clock_rate.max(1));
        let delay = i64::try_from(arrival_us).unwrap_or(i64::MAX) - media_us;
        self.min_delay_us = self.min_delay_us.min(delay);
    }

    fn finish_frame(&mut self) -> io::Result<()> {
        let Some(frame) = self.frame.take() else { return Ok(()) };
        if !frame.whole {
            self.need_key = true;
            return Ok(());
        }
        if self.need_key && !frame.key {
            return Ok(());
        }
        self.need_key = false;
        self.emit(frame)
    }

    /// Writes a whole frame at its time on the stream's own clock.
    fn emit(&mut self, frame: Frame) -> io::Result<()> {
        let origin = *self.origin.get_or_insert(frame.timestamp);
        let clock = i64::from(self.spec.clock_rate.max(1));
        let Ok(ticks) = u64::try_from(frame.timestamp - origin) else {
            // Before the first written frame (a timestamp going back): not placeable.
            return Ok(());
        };
        let mut ms = ticks * 1000 / clock as u64;
        match &mut self.sink {
            Sink::Ivf(ivf) => {
                // Each IVF frame needs its own, increasing time.
                if let Some(last) = self.last_ms.filter(|&last| ms <= last) {
                    ms = last + 1;
                }
                ivf.write_frame(ms, &frame.data)?;
                self.note_presence(ms);
                self.end_ms = ms;
            }
            Sink::Ogg(ogg) => {
                let samples = u64::from(opus_samples(&frame.data).unwrap_or(960));
                let start = ticks * OPUS_RATE as u64 / clock as u64;
                if start < self.end_granule {
                    // Overlaps the previous packet (a timestamp repeated or going back):
                    // granule positions must increase.
                    return Ok(());
                }
                self.end_granule = start + samples;
                ogg.write_packet(frame.data, self.end_granule)?;
                self.end_ms = self.end_granule * 1000 / OPUS_RATE as u64;
            }
        }
        self.last_ms = Some(ms);
        Ok(())
    }

    fn note_presence(&mut self, ms: u64) {
        match self.presence.last_mut() {
            Some((_, end)) if ms <= *end + PRESENCE_GAP_MS => *end = ms,
            _ => self.presence.push((ms, ms)),
        }
        if self.rotations.last().map(|&(_, r)| r) != Some(self.rotation) {
            self.rotations.push((ms, self.rotation));
        }
    }

    fn finish(mut self, path: PathBuf) -> io::Result<Option<Track>> {
        while !self.window.is_empty() {
            self.release_one()?;
        }
        self.finish_frame()?;
        match self.sink {
            Sink::Ivf(ivf) => ivf.finish()?,
            Sink::Ogg(ogg) => ogg.finish()?,
        }
        let (Some(origin), Some((reference, _))) = (self.origin, self.reference) else { return Ok(None) };
        let clock = i64::from(self.spec.clock_rate.max(1));
        let to_us = |ticks: i64| ticks * 1_000_000 / clock;
        let sender_report = self.sender_report.map(|(ntp, rtp)| SenderReportTiming {
            ntp_us: ntp_to_us(ntp),
            origin_to_report_us: to_us(nearest(i64::from(rtp), origin, 32) - origin),
        });
        Ok(Some(Track {
            spec: self.spec,
            path,
            origin_capture_us: self.min_delay_us + to_us(origin - reference),
            sender_report,
            end_ms: self.end_ms,
            presence: self.presence,
            rotations: self.rotations,
        }))
    }
}

/// NTP's 32.32 fixed point to µs.
fn ntp_to_us(ntp: u64) -> i64 {
    let seconds = (ntp >> 32) as i64;
    let fraction = ((ntp & 0xFFFF_FFFF) * 1_000_000) >> 32;
    seconds * 1_000_000 + fraction as i64
}

/// Samples (at 48 kHz) in one Opus packet, from its TOC byte (RFC 6716 §3.1).
fn opus_samples(packet: &[u8]) -> Option<u32> {
    let &toc = packet.first()?;
    let config = toc >> 3;
    // Frame sizes in 48 kHz samples per configuration group (RFC 6716 Table 2).
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(packet.get(1)? & 0x3F),
    };
    Some(frame * frames)
}

/// An IVF file: a 32-byte header, then per frame its size, its time in ms and its bytes.
#[derive(Debug)]
struct IvfWriter {
    out: BufWriter<File>,
}

impl IvfWriter {
    fn create(path: &Path, codec: Codec) -> io::Result<Self> {
        let fourcc = match codec {
            Codec::Vp8 => b"VP80",
            Codec::Vp9 => b"VP90",
            // ffmpeg's IVF demuxer maps the fourcc through its BMP tags: H264 is Annex-B H.264.
            Codec::H264 | Codec::Opus => b"H264",
        };
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(&ivf_header(fourcc))?;
        Ok(Self { out })
    }

    fn write_frame(&mut self, pts_ms: u64, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(io::Error::other)?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&pts_ms.to_le_bytes())?;
        self.out.write_all(data)
    }

    fn finish(mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The IVF header with a millisecond time base. The size fields stay 0 (the decoder knows),
/// and so does the frame count: ffmpeg reads that field as the duration in time-base units.
fn ivf_header(fourcc: &[u8; 4]) -> [u8; 32] {
    let mut header = [0u8; 32];
    header[..4].copy_from_slice(b"DKIF");
    header[6..8].copy_from_slice(&32u16.to_le_bytes());
    header[8..12].copy_from_slice(fourcc);
    header[16..20].copy_from_slice(&1000u32.to_le_bytes());
    header[20..24].copy_from_slice(&1u32.to_le_bytes());
    header
}

/// Ogg Opus (RFC 7845): the two header packets, then one packet a page with its end's
/// granule position, so each packet's time is exact and gaps stay gaps.
struct OggOpusWriter {
    writer: PacketWriter<'static, BufWriter<File>>,
    serial: u32,
}

impl std::fmt::Debug for OggOpusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusWriter").field("serial", &self.serial).finish_non_exhaustive()
    }
}

impl OggOpusWriter {
    fn create(path: &Path, serial: u32) -> io::Result<Self> {
        let mut writer = PacketWriter::new(BufWriter::new(File::create(path)?));
        let mut head = b"OpusHead".to_vec();
        head.push(1); // version
        head.push(2); // channels: WebRTC's opus/48000/2
        head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: RTP carries no encoder delay
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family
        writer.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)?;
        let mut tags = b"OpusTags".to_vec();
        let vendor = b"uprtcd";
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        writer.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)?;
        Ok(Self { writer, serial })
    }

    fn write_packet(&mut self, data: Vec<u8>, granule: u64) -> io::Result<()> {
        self.writer.write_packet(data, self.serial, PacketWriteEndInfo::EndPage, granule)
    }

    fn finish(self) -> io::Result<()> {
        self.writer.into_inner().flush()
    }
}

#[cfg(test)]
mod tests {
    use uprtcd_dataplane::wire::rtp::RtpHeader;

    use super::*;

    #[test]
    fn counters_unwrap_across_wraps_both_ways() {
        let mut u = Unwrapper::default();
        assert_eq!(u.unwrap(65_534, 16), 65_534);
        assert_eq!(u.unwrap(1, 16), 65_537);
        assert_eq!(u.unwrap(65_535, 16), 65_535, "a late packet from before the wrap");
        let mut t = Unwrapper::default();
        assert_eq!(t.unwrap(10, 32), 10);
        assert_eq!(t.unwrap(u32::MAX - 5, 32), -6);
    }

    #[test]
    fn opus_packet_durations() {
        assert_eq!(opus_samples(&[0xFC]), Some(960)); // CELT FB 20 ms, one frame
        assert_eq!(opus_samples(&[0x78]), Some(960)); // SILK WB 20 ms
        assert_eq!(opus_samples(&[0xFD]), Some(1920)); // two 20 ms frames
        assert_eq!(opus_samples(&[0xF3, 0x03]), Some(1440)); // three 10 ms frames
        assert_eq!(opus_samples(&[0xF3]), None);
    }

    #[test]
    fn ntp_converts_to_microseconds() {
        assert_eq!(ntp_to_us((3 << 32) | (1 << 31)), 3_500_000);
    }

    #[test]
    fn the_ivf_header_has_a_millisecond_time_base() {
        let header = ivf_header(b"VP80");
        assert_eq!(&header[..4], b"DKIF");
        assert_eq!(&header[8..12], b"VP80");
        assert_eq!(u32::from_le_bytes(header[16..20].try_into().unwrap()), 1000);
    }

    /// A VP8 stream of `frames` two-packet frames 3000 ticks apart, with `drop` packets lost.
    fn vp8_packets(frames: u16, lost: &[u16]) -> Vec<(u16, Vec<u8>)> {
        let mut packets = Vec::new();
        for frame in 0..frames {
            let key = frame % 10 == 0;
            for part in 0..2u16 {
                let seq = frame * 2 + part;
                if lost.contains(&seq) {
                    continue;
                }
                let mut packet = vec![0; 32];
                let header = RtpHeader::new(96, seq, u32::from(frame) * 3000, 7).marker(part == 1);
                let len = header.write(&mut packet).unwrap();
                packet.truncate(len);
                let descriptor = if part == 0 { 0x10 } else { 0x00 };
                packet.extend_from_slice(&[descriptor, if key { 0x00 } else { 0x01 }, frame as u8]);
                packets.push((seq, packet));
            }
        }
        packets
    }

    fn build(packets: impl IntoIterator<Item = (u64, Vec<u8>)>) -> (Track, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let spec = StreamSpec::new(7, "p", Codec::Vp8, 96);
        let path = dir.path().join("t.ivf");
        let mut builder = TrackBuilder::new(spec, Sink::Ivf(IvfWriter::create(&path, Codec::Vp8).unwrap()));
        for (arrival, packet) in packets {
            builder.push_packet(arrival, packet).unwrap();
        }
        let track = builder.finish(path.clone()).unwrap().unwrap();
        (track, std::fs::read(path).unwrap())
    }

    /// The frame times an IVF file holds.
    fn ivf_times(file: &[u8]) -> Vec<u64> {
        let mut times = Vec::new();
        let mut at = 32;
        while at + 12 <= file.len() {
            let len = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
            times.push(u64::from_le_bytes(file[at + 4..at + 12].try_into().unwrap()));
            at += 12 + len;
        }
        times
    }

    #[test]
    fn opus_granules_follow_rtp_time_and_keep_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ogg");
        let spec = StreamSpec::new(9, "p", Codec::Opus, 111);
        let mut builder = TrackBuilder::new(spec, Sink::Ogg(OggOpusWriter::create(&path, 9).unwrap()));
        // 20 ms packets at 0 and 960; one repeating 960; then 60 ms not sent (a gap).
        for (seq, timestamp) in [(1u16, 10_000u32), (2, 10_960), (3, 10_960), (4, 14_800)] {
            let mut packet = vec![0; 16];
            let len = RtpHeader::new(111, seq, timestamp, 9).write(&mut packet).unwrap();
            packet.truncate(len);
            packet.extend_from_slice(&[0xFC, 0xAA]);
            builder.push_packet(u64::from(seq) * 20_000, packet).unwrap();
        }
        let track = builder.finish(path.clone()).unwrap().unwrap();
        assert_eq!(track.end_ms, 120);
        let mut reader = ogg::PacketReader::new(File::open(&path).unwrap());
        let mut granules = Vec::new();
        while let Some(packet) = reader.read_packet().unwrap() {
            granules.push(packet.absgp_page());
        }
        assert_eq!(granules, vec![0, 0, 960, 1920, 4800 + 960]);
    }

    #[test]
    fn reordered_and_duplicated_packets_give_every_frame_once() {
        let mut packets = vp8_packets(4, &[]);
        packets.swap(2, 3);
        packets.swap(4, 6);
        packets.push(packets[1].clone());
        let (track, file) = build(packets.into_iter().enumerate().map(|(i, (_, p))| (i as u64 * 1000, p)));
        assert_eq!(ivf_times(&file), vec![0, 33, 66, 100]);
        assert_eq!(track.presence, vec![(0, 100)]);
    }

    #[test]
    fn padding_only_packets_break_no_frame() {
        // Frames 0 and 1 (sequence numbers 0..=3), a padding-only packet as 4, frame 2 as 5, 6.
        let mut packets: Vec<Vec<u8>> = vp8_packets(3, &[]).into_iter().map(|(_, p)| p).collect();
        for packet in &mut packets[4..] {
            let seq = u16::from_be_bytes([packet[2], packet[3]]) + 1;
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
        }
        let mut padding = vec![0; 16];
        let len = RtpHeader::new(96, 4, 3000, 7).write(&mut padding).unwrap();
        padding.truncate(len);
        padding[0] |= 0x20;
        padding.extend_from_slice(&[0, 0, 0, 4]);
        packets.insert(4, padding);
        let (_, file) = build(packets.into_iter().enumerate().map(|(i, p)| (i as u64 * 1000, p)));
        assert_eq!(ivf_times(&file), vec![0, 33, 66]);
    }

    #[test]
    fn after_a_loss_video_waits_for_the_next_key_frame() {
        // Packet 5 (second half of frame 2) is lost: frames 2..=9 are dropped, 10.. kept.
        let packets = vp8_packets(12, &[5]);
        let (track, file) = build(packets.into_iter().map(|(seq, p)| (u64::from(seq) * 1000, p)));
        assert_eq!(ivf_times(&file), vec![0, 33, 333, 366]);
        assert_eq!(track.presence, vec![(0, 366)]);
    }

    #[test]
    fn the_least_delayed_packet_places_the_stream() {
        // Frames every 33.3 ms; arrivals 50 ms after capture start plus jitter, one packet
        // on time (delay 10 ms): the origin is at 10 ms.
        let packets = vp8_packets(3, &[]);
        let jitter = [40_000, 45_000, 10_000, 50_000, 60_000, 40_000];
        let (track, _) =
            build(packets.into_iter().zip(jitter).map(|((seq, p), j)| (u64::from(seq / 2) * 33_333 + j, p)));
        assert!((track.origin_capture_us - 10_000).abs() <= 1, "{}", track.origin_capture_us);
    }
}
