//! Capture: one recording's loopback socket and the thread that writes what arrives on it.
//!
//! What it owns: a capture folder (created by [`Capture::start`], its format in `capture/format.rs`), a UDP
//! socket on 127.0.0.1 to which a worker sends the recorded streams' plaintext RTP and their
//! sender reports (rtcp-mux), and one thread, "uprtcd-capture", that receives, decides
//! (`capture/session.rs`, without I/O), writes, and sends key-frame requests (PLI) back to the packets' source; a second thread,
//! "uprtcd-capture-sync", syncs the files to disk, so that a slow disk never delays a receive.
//!
//! Rules for callers: add a stream before its packets are sent ([`Capture::add_stream`]
//! happens-before the worker's first send is enough: the thread reads its commands before it
//! handles a datagram); end the capture with [`Capture::stop`], which makes the files
//! durable. A capture dropped without `stop` (or killed) leaves files that still compose:
//! buffered data reaches the OS every 200 ms and the disk about once a second.

pub(crate) mod codec;
pub(crate) mod format;
mod session;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uprtcd_dataplane::wire::rtcp::write_pli;

pub use uprtcd_dataplane::router::MediaKind;

use self::format::{LogEntry, LogLine};
use self::session::{Session, Verdict};
use crate::Error;

/// serde's view of the dataplane's [`MediaKind`] (which does not depend on serde).
#[derive(Serialize, Deserialize)]
#[serde(remote = "MediaKind", rename_all = "lowercase")]
enum MediaKindDef {
    Audio,
    Video,
}

/// The codecs a recording can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Vp8,
    Vp9,
    H264,
    Opus,
}

impl Codec {
    /// What the codec carries.
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus => MediaKind::Audio,
            Codec::Vp8 | Codec::Vp9 | Codec::H264 => MediaKind::Video,
        }
    }

    /// Its RTP clock rate (RFC 7741, RFC 9628, RFC 6184, RFC 7587).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Vp8 | Codec::Vp9 | Codec::H264 => 90_000,
        }
    }
}

/// One recorded stream, as the worker sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// The SSRC the worker rewrites the stream's RTP and sender reports to.
    pub ssrc: u32,
    /// The publishing peer (streams of one peer are lip-synced; layouts place peers).
    pub peer: String,
    #[serde(with = "MediaKindDef")]
    pub kind: MediaKind,
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// The publisher's id of `urn:3gpp:video-orientation`, when negotiated.
    pub cvo_extension_id: Option<u8>,
}

impl StreamSpec {
    /// A stream of `codec` with its kind and standard clock rate, without CVO.
    pub fn new(ssrc: u32, peer: impl Into<String>, codec: Codec, payload_type: u8) -> Self {
        StreamSpec {
            ssrc,
            peer: peer.into(),
            kind: codec.kind(),
            codec,
            payload_type,
            clock_rate: codec.clock_rate(),
            cvo_extension_id: None,
        }
    }
}

/// How composition lays the video out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Tiles for everyone visible at each moment.
    #[default]
    Grid,
    /// That peer large in the centre, the others small around it.
    Centre(String),
}

/// The composed video's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Resolution {
    #[serde(rename = "1080p")]
    P1080,
    #[default]
    #[serde(rename = "720p")]
    P720,
    #[serde(rename = "480p")]
    P480,
}

impl Resolution {
    /// Width and height in pixels.
    pub fn size(self) -> (u32, u32) {
        match self {
            Resolution::P1080 => (1920, 1080),
            Resolution::P720 => (1280, 720),
            Resolution::P480 => (854, 480),
        }
    }
}

/// What a recording is, written once to the capture folder before any media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureMeta {
    pub room: String,
    pub record: String,
    pub started_unix_ms: u64,
    pub layout: Layout,
    pub resolution: Resolution,
    pub fix_video_direction: bool,
}

/// Room events the event log keeps, for the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureEvent {
    Joined {
        peer: String,
    },
    Left {
        peer: String,
    },
    Muted {
        peer: String,
        #[serde(with = "MediaKindDef")]
        kind: MediaKind,
        muted: bool,
    },
}

/// A snapshot of a capture's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureProgress {
    /// Some video stream has its first key frame written (or, when only audio is recorded,
    /// some audio packet): the recording has begun.
    pub started: bool,
    /// RTP packets written, and their bytes.
    pub packets: u64,
    pub bytes: u64,
    /// Datagrams the kernel dropped because the socket's buffer was full.
    pub dropped_overflow: u64,
    /// RTP packets of SSRCs not added, ended, or beyond the stream limit.
    pub dropped_unknown: u64,
    /// Datagrams that are not RTP/RTCP of a recorded stream's payload type, or too large.
    pub dropped_invalid: u64,
    /// Why the capture stopped writing (a write error), if it did.
    pub failure: Option<String>,
}

/// Buffered data reaches the OS at least this often (what a kill -9 may lose).
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// The files reach the disk about this often.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How long the thread blocks in a receive, so that flushes and commands are not late.
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(50);
/// The socket's receive buffer: several seconds of a room's media at loopback speed, so a
/// slow disk write does not drop packets.
const RECEIVE_BUFFER: usize = 4 << 20;
/// A sender SSRC for the PLIs; the worker reads only the media SSRC.
const PLI_SENDER_SSRC: u32 = 1;

enum Command {
    AddStream(StreamSpec),
    EndStream { ssrc: u32, at_us: u64 },
    Event { event: CaptureEvent, at_us: u64 },
    Stop,
}

/// A running capture. See the module documentation.
#[derive(Debug)]
pub struct Capture {
    address: SocketAddr,
    epoch: Instant,
    commands: Sender<Command>,
    progress: Arc<Mutex<CaptureProgress>>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl Capture {
    /// Creates `dir` (which must not exist yet; its parent is created if needed), writes the
    /// meta there durably, binds a UDP socket on 127.0.0.1:0 and starts the capture thread.
    pub fn start(dir: &Path, meta: CaptureMeta) -> Result<Capture, Error> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        fs::create_dir(dir).map_err(io_err(dir))?;
        let meta_path = dir.join(format::META_FILE);
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| io_err(&meta_path)(io::Error::other(e)))?;
        write_durably(&meta_path, &json).map_err(io_err(&meta_path))?;
        let events_path = dir.join(format::EVENTS_FILE);
        let events = File::create_new(&events_path).map_err(io_err(&events_path))?;
        let syncer = Arc::new(Syncer::default());
        syncer.add(&events).map_err(io_err(&events_path))?;
        sync_dir(dir).map_err(io_err(dir))?;
        sync_dir(parent).map_err(io_err(parent))?;

        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err(dir))?;
        // A smaller buffer than asked (net.core.rmem_max) still works; drops are counted.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER);
        socket.set_read_timeout(Some(RECEIVE_TIMEOUT)).map_err(io_err(dir))?;
        let address = socket.local_addr().map_err(io_err(dir))?;

        let epoch = Instant::now();
        let (commands, inbox) = mpsc::channel();
        let progress = Arc::new(Mutex::new(CaptureProgress::default()));
        let writer = Writer {
            dir: dir.to_owned(),
            socket,
            epoch,
            inbox,
            progress: Arc::clone(&progress),
            events: BufWriter::new(events),
            session: Session::new(),
            syncer,
            failure: None,
        };
        let thread = std::thread::Builder::new()
            .name("uprtcd-capture".into())
            .spawn(move || writer.run())
            .map_err(io_err(dir))?;
        Ok(Capture { address, epoch, commands, progress, thread: Some(thread) })
    }

    /// Where the worker sends the recorded streams (and receives key-frame requests from).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// From now on packets with `spec.ssrc` are written to that stream's own file.
    pub fn add_stream(&self, spec: StreamSpec) {
        self.send(Command::AddStream(spec));
    }

    /// The stream's publisher left or stopped: logged; later packets of it are dropped.
    pub fn end_stream(&self, ssrc: u32) {
        self.send(Command::EndStream { ssrc, at_us: self.now_us() });
    }

    /// Records a room event in the event log.
    pub fn event(&self, event: CaptureEvent) {
        self.send(Command::Event { event, at_us: self.now_us() });
    }

    /// A snapshot of the capture's counters and state.
    pub fn progress(&self) -> CaptureProgress {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Flushes and syncs the files and the folder, and ends the thread. Fails with
    /// [`Error::Capture`] when the capture had stopped writing (its files end at the failure).
    pub fn stop(mut self) -> Result<CaptureProgress, Error> {
        self.join()?;
        Ok(self.progress())
    }

    fn now_us(&self) -> u64 {
        micros(self.epoch.elapsed())
    }

    fn send(&self, command: Command) {
        // The thread only ends through `stop` or drop, which consume or hold `self`: while
        // `self` exists a failed send means the thread panicked, which `stop` reports.
        let _ = self.commands.send(command);
    }

    fn join(&mut self) -> Result<(), Error> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        self.send(Command::Stop);
        thread.join().unwrap_or_else(|_| Err(Error::Capture("the capture thread panicked".into())))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Err(error) = self.join() {
            tracing::warn!(%error, "capture dropped without stop");
        }
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// The capture thread's state.
struct Writer {
    dir: PathBuf,
    socket: UdpSocket,
    epoch: Instant,
    inbox: Receiver<Command>,
    progress: Arc<Mutex<CaptureProgress>>,
    events: BufWriter<File>,
    session: Session<BufWriter<File>>,
    syncer: Arc<Syncer>,
    /// Set at the first write error: nothing is written after it.
    failure: Option<String>,
}

/// Syncs the capture's files to disk about once a second on a thread of its own, so that a
/// slow disk never holds up the receiving thread (which only hands data to the OS).
#[derive(Debug, Default)]
struct Syncer {
    /// Second handles of the files being written.
    files: Mutex<Vec<File>>,
    failure: Mutex<Option<String>>,
}

impl Syncer {
    fn add(&self, file: &File) -> io::Result<()> {
        let clone = file.try_clone()?;
        self.files.lock().unwrap_or_else(PoisonError::into_inner).push(clone);
        Ok(())
    }

    /// Until `stop` is dropped.
    fn run(&self, stop: &Receiver<()>) {
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(SYNC_INTERVAL) {
            let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = files.iter().find_map(|file| file.sync_data().err()) {
                self.failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(format!("sync: {e}"));
                return;
            }
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Writer {
    fn run(mut self) -> Result<(), Error> {
        let (stop_syncing, sync_stop) = mpsc::channel::<()>();
        let syncer = Arc::clone(&self.syncer);
        let sync_thread = std::thread::Builder::new()
            .name("uprtcd-capture-sync".into())
            .spawn(move || syncer.run(&sync_stop))
            .map_err(|e| self.fail(format!("sync thread: {e}")))
            .ok();
        let mut buf = vec![0u8; 65_536];
        let mut last_flush = Instant::now();
        let mut last_census = Instant::now();
        let mut overflow = 0;
        loop {
            let received = self.socket.recv_from(&mut buf);
            let arrival_us = micros(self.epoch.elapsed());
            // Commands first (a stream is added before its packets are sent), then the
            // datagram, which a stop does not discard.
            let running = self.drain_commands();
            match received {
                Ok((len, from)) => self.handle(arrival_us, &buf[..len], from),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                // ICMP errors of an earlier PLI send surface here; nothing is lost.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => self.fail(format!("receive: {e}")),
            }
            if !running {
                break;
            }
            if last_flush.elapsed() >= FLUSH_INTERVAL {
                last_flush = Instant::now();
                self.flush(false);
                if let Some(reason) = self.syncer.failure() {
                    self.fail(reason);
                }
                if last_census.elapsed() >= SYNC_INTERVAL {
                    last_census = Instant::now();
                    overflow = socket_drops(self.socket.local_addr().ok()).unwrap_or(overflow);
                }
                self.publish(overflow);
            }
        }
        drop(stop_syncing);
        if let Some(thread) = sync_thread {
            let _ = thread.join();
        }
        self.flush(true);
        if let (None, Err(e)) = (&self.failure, sync_dir(&self.dir)) {
            self.fail(format!("sync {}: {e}", self.dir.display()));
        }
        self.publish(socket_drops(self.socket.local_addr().ok()).unwrap_or(overflow));
        match self.failure {
            Some(reason) => Err(Error::Capture(reason)),
            None => Ok(()),
        }
    }

    /// Applies the pending commands; false once told to stop.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::AddStream(spec)) => self.add_stream(spec),
                Ok(Command::EndStream { ssrc, at_us }) => {
                    self.session.end_stream(ssrc);
                    self.log(at_us, LogEntry::StreamEnded { ssrc });
                }
                Ok(Command::Event { event, at_us }) => self.log(at_us, LogEntry::Event(event)),
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn add_stream(&mut self, spec: StreamSpec) {
        if !self.session.has_room_for(spec.ssrc) {
            tracing::warn!(ssrc = spec.ssrc, "stream not recorded: already added, or too many streams");
            return;
        }
        if self.failure.is_some() {
            return;
        }
        let path = format::stream_path(&self.dir, spec.ssrc);
        let opened = File::create_new(&path).and_then(|file| {
            self.syncer.add(&file)?;
            let mut out = BufWriter::new(file);
            format::write_header(&mut out, &spec)?;
            out.flush()?;
            sync_dir(&self.dir)?;
            Ok(out)
        });
        match opened {
            Ok(out) => {
                let at_us = micros(self.epoch.elapsed());
                self.log(at_us, LogEntry::StreamAdded { ssrc: spec.ssrc, peer: spec.peer.clone() });
                self.session.add_stream(spec, out);
            }
            Err(e) => self.fail(format!("{}: {e}", path.display())),
        }
    }

    fn handle(&mut self, arrival_us: u64, datagram: &[u8], from: SocketAddr) {
        if self.failure.is_some() {
            return;
        }
        match self.session.handle(arrival_us, datagram) {
            Ok(Verdict::Waiting { request_key_frame: Some(ssrc) }) => {
                let mut pli = [0u8; 16];
                // 12 bytes always fit the 16-byte buffer.
                if let Ok(len) = write_pli(&mut pli, PLI_SENDER_SSRC, ssrc) {
                    // A lost request is repeated a second later.
                    let _ = self.socket.send_to(&pli[..len], from);
                }
            }
            Ok(_) => {}
            Err(e) => self.fail(format!("write: {e}")),
        }
    }

    fn log(&mut self, at_us: u64, entry: LogEntry) {
        if self.failure.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut self.events, &LogLine { at_us, entry })
            .map_err(io::Error::other)
            .and_then(|()| self.events.write_all(b"\n"));
        if let Err(e) = written {
            self.fail(format!("event log: {e}"));
        }
    }

    /// Hands buffered data to the OS and, when `sync`, to the disk.
    fn flush(&mut self, sync: bool) {
        if self.failure.is_some() {
            return;
        }
        let mut result =
            self.events.flush().and_then(|()| if sync { self.events.get_ref().sync_data() } else { Ok(()) });
        for out in self.session.outputs() {
            result =
                result.and_then(|()| out.flush()).and_then(|()| if sync { out.get_ref().sync_data() } else { Ok(()) });
        }
        if let Err(e) = result {
            self.fail(format!("flush: {e}"));
        }
    }

    fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            tracing::error!(dir = %self.dir.display(), %reason, "capture stops writing");
            self.failure = Some(reason);
        }
    }

    fn publish(&self, overflow: u64) {
        let counters = self.session.counters();
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        *progress = CaptureProgress {
            started: self.session.started(),
            packets: counters.packets,
            bytes: counters.bytes,
            dropped_overflow: overflow,
            dropped_unknown: counters.dropped_unknown,
            dropped_invalid: counters.dropped_invalid,
            failure: self.failure.clone(),
        };
    }
}

/// Writes `path` and syncs it (the caller syncs the folder).
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the folder's entries (files created or renamed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The kernel's count of datagrams dropped at this socket for want of buffer space: the
/// `drops` column of /proc/net/udp (what SO_RXQ_OVFL reports per message), read without a
/// control-message parser.
fn socket_drops(address: Option<SocketAddr>) -> Option<u64> {
    let port = address?.port();
    let table = fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .find(|line| line.split_whitespace().nth(1) == Some(local.as_str()))
        .and_then(|line| line.split_whitespace().last()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_and_specs_read_as_the_api_names_them() {
        let meta = CaptureMeta {
            room: "r".into(),
            record: "1".into(),
            started_unix_ms: 7,
            layout: Layout::Centre("alice".into()),
            resolution: Resolution::P1080,
            fix_video_direction: true,
        };
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(json["layout"], serde_json::json!({"centre": "alice"}));
        assert_eq!(json["resolution"], "1080p");
        assert_eq!(serde_json::from_value::<CaptureMeta>(json).unwrap(), meta);
        let spec = StreamSpec::new(9, "bob", Codec::Opus, 111);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            (json["kind"].as_str(), json["codec"].as_str(), json["clock_rate"].as_u64()),
            (Some("audio"), Some("opus"), Some(48_000))
        );
        assert_eq!(serde_json::from_value::<StreamSpec>(json).unwrap(), spec);
        assert_eq!(Resolution::default().size(), (1280, 720));
    }
}
