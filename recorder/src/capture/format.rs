//! The capture folder's on-disk format, shared by the writer (the capture thread) and the
//! reader (composition).
//!
//! A folder holds `meta.json` (written once, durably, before anything else), `events.log`
//! (one JSON object a line) and one `stream-<ssrc as 8 hex digits>.rec` per recorded stream.
//! A stream file starts with [`MAGIC`], a big-endian `u32` length and the stream's
//! [`StreamSpec`] as JSON; records follow, each
//! `kind u8 | body length u16 | arrival µs u64 | CRC-32 of the previous fields and the body u32 | body`,
//! all big-endian. Kinds: [`RecordKind::Rtp`] (the packet as received, extensions included,
//! so the CVO byte stays with its packet) and [`RecordKind::SenderReport`] (NTP u64, RTP u32).
//!
//! Files are only appended to, so a writer killed at any moment leaves a valid prefix and
//! at most one torn record at the end: readers stop at the first record that is short,
//! oversized, of an unknown kind or fails its checksum, and keep what came before.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CaptureEvent, StreamSpec};

/// First bytes of every stream file; the digit is the format's version.
pub(crate) const MAGIC: &[u8; 8] = b"UPRTREC1";
/// Largest body a record may carry: an RTP packet the worker forwards fits a 1,500-byte
/// MTU, and loopback datagrams larger than this are not RTP we can use.
pub(crate) const MAX_RECORD_BODY: usize = 4096;
/// Largest stream header (the JSON spec is a few hundred bytes).
const MAX_HEADER: usize = 4096;
/// `kind`, `length`, `arrival`, `crc`.
const RECORD_HEADER_LEN: usize = 1 + 2 + 8 + 4;
/// Body of a sender-report record: NTP timestamp and RTP timestamp.
const SENDER_REPORT_BODY_LEN: usize = 12;

pub(crate) const META_FILE: &str = "meta.json";
pub(crate) const EVENTS_FILE: &str = "events.log";
const STREAM_PREFIX: &str = "stream-";
const STREAM_SUFFIX: &str = ".rec";

/// The stream file of `ssrc` inside `dir`.
pub(crate) fn stream_path(dir: &Path, ssrc: u32) -> PathBuf {
    dir.join(format!("{STREAM_PREFIX}{ssrc:08x}{STREAM_SUFFIX}"))
}

/// The stream files inside `dir`, sorted by name so that composition is deterministic.
pub(crate) fn stream_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(STREAM_PREFIX) && name.ends_with(STREAM_SUFFIX) {
            files.push(dir.join(&*name));
        }
    }
    files.sort();
    Ok(files)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    Rtp = 1,
    SenderReport = 2,
}

impl RecordKind {
    fn of(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Rtp),
            2 => Some(Self::SenderReport),
            _ => None,
        }
    }
}

/// One record read back from a stream file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    Rtp { arrival_us: u64, packet: Vec<u8> },
    SenderReport { arrival_us: u64, ntp: u64, rtp: u32 },
}

/// Writes the stream header: magic, length, spec.
pub(crate) fn write_header(out: &mut impl Write, spec: &StreamSpec) -> io::Result<()> {
    let json = serde_json::to_vec(spec).map_err(io::Error::other)?;
    // A spec is a handful of short fields; its JSON cannot approach 4 GiB.
    let len = u32::try_from(json.len()).map_err(io::Error::other)?;
    out.write_all(MAGIC)?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&json)
}

/// Appends one record; `body` must not exceed [`MAX_RECORD_BODY`] (the caller drops larger).
pub(crate) fn write_record(out: &mut impl Write, kind: RecordKind, arrival_us: u64, body: &[u8]) -> io::Result<()> {
    let len = u16::try_from(body.len())
        .ok()
        .filter(|&len| usize::from(len) <= MAX_RECORD_BODY)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record body too large"))?;
    let mut header = [0u8; RECORD_HEADER_LEN];
    header[0] = kind as u8;
    header[1..3].copy_from_slice(&len.to_be_bytes());
    header[3..11].copy_from_slice(&arrival_us.to_be_bytes());
    let crc = checksum(&header[..11], body);
    header[11..15].copy_from_slice(&crc.to_be_bytes());
    out.write_all(&header)?;
    out.write_all(body)
}

/// The body of a sender-report record.
pub(crate) fn sender_report_body(ntp: u64, rtp: u32) -> [u8; SENDER_REPORT_BODY_LEN] {
    let mut body = [0; SENDER_REPORT_BODY_LEN];
    body[..8].copy_from_slice(&ntp.to_be_bytes());
    body[8..].copy_from_slice(&rtp.to_be_bytes());
    body
}

fn checksum(header: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(body);
    hasher.finalize()
}

/// Reads a stream file's records in order, ending quietly at the first torn or invalid one.
#[derive(Debug)]
pub(crate) struct StreamReader<R> {
    input: R,
    done: bool,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the header; fails when it is missing or not ours.
    pub(crate) fn open(mut input: R) -> io::Result<(StreamSpec, Self)> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let mut start = [0u8; 12];
        input.read_exact(&mut start)?;
        if &start[..8] != MAGIC {
            return Err(invalid("not a stream file of this format"));
        }
        let len = u32::from_be_bytes([start[8], start[9], start[10], start[11]]) as usize;
        if len > MAX_HEADER {
            return Err(invalid("stream header too large"));
        }
        let mut json = vec![0; len];
        input.read_exact(&mut json)?;
        let spec = serde_json::from_slice(&json).map_err(|e| invalid(&format!("stream header: {e}")))?;
        Ok((spec, Self { input, done: false }))
    }

    /// The next whole record; `None` at the end of the file or at a torn/invalid record.
    /// Read errors other than a short read end the stream too: what came before is kept.
    pub(crate) fn next_record(&mut self) -> Option<Record> {
        if self.done {
            return None;
        }
        let record = self.read_one();
        self.done = record.is_none();
        record
    }

    fn read_one(&mut self) -> Option<Record> {
        let mut header = [0u8; RECORD_HEADER_LEN];
        self.input.read_exact(&mut header).ok()?;
        let kind = RecordKind::of(header[0])?;
        let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
        if len > MAX_RECORD_BODY {
            return None;
        }
        let mut body = vec![0; len];
        self.input.read_exact(&mut body).ok()?;
        let crc = u32::from_be_bytes([header[11], header[12], header[13], header[14]]);
        if checksum(&header[..11], &body) != crc {
            return None;
        }
        let mut arrival = [0u8; 8];
        arrival.copy_from_slice(&header[3..11]);
        let arrival_us = u64::from_be_bytes(arrival);
        match kind {
            RecordKind::Rtp => Some(Record::Rtp { arrival_us, packet: body }),
            RecordKind::SenderReport => {
                let body: [u8; SENDER_REPORT_BODY_LEN] = body.try_into().ok()?;
                let mut ntp = [0u8; 8];
                ntp.copy_from_slice(&body[..8]);
                let rtp = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
                Some(Record::SenderReport { arrival_us, ntp: u64::from_be_bytes(ntp), rtp })
            }
        }
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogLine {
    /// Microseconds since the capture started, on the same clock as the records.
    pub at_us: u64,
    pub entry: LogEntry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LogEntry {
    Event(CaptureEvent),
    StreamAdded { ssrc: u32, peer: String },
    StreamEnded { ssrc: u32 },
}

/// The event log's lines up to the first one that does not parse (a torn last line).
pub(crate) fn read_event_log(text: &str) -> Vec<LogLine> {
    text.lines().map_while(|line| serde_json::from_str(line).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Codec;

    fn spec() -> StreamSpec {
        StreamSpec { cvo_extension_id: Some(3), ..StreamSpec::new(0x1234, "alice", Codec::Vp8, 96) }
    }

    fn file_with_three_records() -> Vec<u8> {
        let mut file = Vec::new();
        write_header(&mut file, &spec()).unwrap();
        write_record(&mut file, RecordKind::Rtp, 10, &[0x80, 96, 0, 1]).unwrap();
        write_record(&mut file, RecordKind::SenderReport, 20, &sender_report_body(7 << 32, 9000)).unwrap();
        write_record(&mut file, RecordKind::Rtp, 30, &[0x80, 96, 0, 2, 5, 6]).unwrap();
        file
    }

    fn read_all(bytes: &[u8]) -> Vec<Record> {
        let (read_spec, mut reader) = StreamReader::open(bytes).unwrap();
        assert_eq!(read_spec, spec());
        std::iter::from_fn(|| reader.next_record()).collect()
    }

    #[test]
    fn records_read_back_as_written() {
        let records = read_all(&file_with_three_records());
        assert_eq!(
            records,
            vec![
                Record::Rtp { arrival_us: 10, packet: vec![0x80, 96, 0, 1] },
                Record::SenderReport { arrival_us: 20, ntp: 7 << 32, rtp: 9000 },
                Record::Rtp { arrival_us: 30, packet: vec![0x80, 96, 0, 2, 5, 6] },
            ]
        );
    }

    #[test]
    fn a_torn_last_record_is_ignored_at_every_cut() {
        let file = file_with_three_records();
        let last_record_len = RECORD_HEADER_LEN + 6;
        for cut in 1..last_record_len {
            assert_eq!(read_all(&file[..file.len() - cut]).len(), 2, "cut {cut}");
        }
    }

    #[test]
    fn a_corrupt_record_ends_the_stream() {
        let mut file = file_with_three_records();
        let last = file.len() - 1;
        file[last] ^= 0xFF;
        assert_eq!(read_all(&file).len(), 2);
        // Zeros after the last record (a file extended but never written) end it too.
        let mut file = file_with_three_records();
        file.extend_from_slice(&[0; 64]);
        assert_eq!(read_all(&file).len(), 3);
    }

    #[test]
    fn oversized_bodies_are_refused_by_the_writer() {
        assert!(write_record(&mut Vec::new(), RecordKind::Rtp, 0, &[0; MAX_RECORD_BODY + 1]).is_err());
    }

    #[test]
    fn a_foreign_file_is_refused() {
        assert!(StreamReader::open(&b"RIFF....WAVEfmt "[..]).is_err());
    }

    #[test]
    fn the_event_log_stops_at_a_torn_line() {
        let line = LogLine { at_us: 5, entry: LogEntry::Event(CaptureEvent::Joined { peer: "bob".into() }) };
        let text = format!("{}\n{{\"at_us\":9,\"ent", serde_json::to_string(&line).unwrap());
        assert_eq!(read_event_log(&text), vec![line]);
    }
}
