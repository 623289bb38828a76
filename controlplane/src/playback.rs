//! Playback rooms (`POST /record/playback`): a live room whose host is a recording. An ffmpeg
//! reads the file in real time, transcodes it to VP8 and Opus with a short key-frame interval
//! and sends RTP over loopback to plain transports on the room's worker, which publishes them
//! as the host's tracks. The audience joins through signalling, the SDK and WHEP as in any
//! live room.
//!
//! What this module owns, per playback: the room's host (present in the registry, a session
//! in the hub whose queue the playback drains), one plain transport per stream ffmpeg sends
//! (audio and video are two RTP outputs of ffmpeg, each with its own RTP and RTCP source
//! ports: one transport each, whose producer the hub knows like a publisher's track), the
//! ffmpeg child, and one slot of `recording.max_playbacks`.
//!
//! Rules:
//! - **One end, whoever ends it.** The file's end (without loop), `endTime`, ffmpeg failing,
//!   `DELETE /room/{id}` or a kick of the host all lead to `Playback::finish`: ffmpeg is
//!   killed and reaped, the tracks leave the room (`track-removed`), the transports close,
//!   the room closes as `DELETE /room/{id}` closes it (`room-closed` to every client) and the
//!   slot is given back. A `DELETE` reaches the playback as the host session's `Close`.
//! - **No ffmpeg outlives its playback.** The child is spawned with kill-on-drop, so even a
//!   playback task dropped at shutdown takes its ffmpeg with it. Should this process die
//!   without dropping it (kill -9), ffmpeg still ends: its RTP sockets are connected, so
//!   its sends fail once the worker's port is closed, and it is told `endTime` as its
//!   duration.
//! - **A restart closes playback rooms.** The room is in the store, its ffmpeg is not: at
//!   start [`close_orphans`] closes every playback room, as the file's end would have.
//! - **Ports are held until ffmpeg takes them.** ffmpeg's source ports are chosen by binding
//!   loopback sockets, which stay bound until just before ffmpeg starts (perhaps at a
//!   `startTime` minutes away), so nothing else takes them meanwhile.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command as Process};
use tokio::sync::mpsc;

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::router::{MediaKind, ProducerSpec, TransportId};

use crate::envelope::{ApiCode, ApiError};
use crate::ids::{PeerId, RecordId, RoomId, TrackId};
use crate::registry::{NewRoom, Recording, Room, record_status};
use crate::sdp::{Codec, HeaderExtensions, PayloadType};
use crate::signalling::hub::{Outgoing, PublishedTrack};
use crate::signalling::protocol::ServerEvent;
use crate::signalling::{self};
use crate::state::AppState;

/// Frames between key frames: two seconds at 25 fps, so a viewer who joins (whose key-frame
/// request ffmpeg does not hear) sees a picture within that.
const KEYFRAME_INTERVAL: u32 = 50;
/// RTP payload size ffmpeg packetizes to: room for SRTP's overhead and header extensions
/// within any path's MTU.
const RTP_PAYLOAD_SIZE: u32 = 1200;
/// The most a playback's video is encoded at, whatever the room's `maxBitrate`.
const MAX_VIDEO_BPS: u64 = 2_000_000;
const AUDIO_BPS: u64 = 64_000;
/// Lines of ffmpeg's complaints kept for the log when it fails.
const STDERR_TAIL_LINES: usize = 20;
/// The payload types and SSRCs ffmpeg sends as (any fixed values do: each stream has a
/// transport of its own, and subscribers get their own numbers).
const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;
const VIDEO_SSRC: u32 = 0x504C_0001;
const AUDIO_SSRC: u32 = 0x504C_0002;

/// How many playbacks are open (ffmpeg running or waiting for its start): what
/// `recording.max_playbacks` caps.
#[derive(Debug, Default)]
pub struct Playbacks {
    open: Mutex<usize>,
}

/// One taken slot of [`Playbacks`], given back when dropped.
#[derive(Debug)]
struct Slot {
    state: AppState,
}

impl Slot {
    /// Takes one of `recording.max_playbacks` slots, or answers 50021 when all are taken.
    fn take(state: &AppState) -> Result<Self, ApiError> {
        let max = state.settings().max_playbacks;
        let mut open = state.playbacks().open.lock().unwrap_or_else(PoisonError::into_inner);
        if *open >= max {
            return Err(ApiError::new(
                ApiCode::NoRecorder,
                format!("this server plays at most {max} recordings at once (recording.max_playbacks)"),
            ));
        }
        *open += 1;
        Ok(Slot { state: state.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.state.playbacks().open.lock().unwrap_or_else(PoisonError::into_inner);
        *open = open.saturating_sub(1);
    }
}

/// What `POST /record/playback` asks for, its fields checked for type by the handler.
#[derive(Debug)]
pub struct Request {
    pub record: RecordId,
    pub server_alias: Option<String>,
    /// Milliseconds since the epoch.
    pub start_ms: Option<u64>,
    pub loop_play: bool,
    /// Milliseconds since the epoch.
    pub end_ms: Option<u64>,
    /// The live room to open; its master is replaced by the recording.
    pub room: NewRoom,
}

/// The wait from now until `at_ms` (epoch milliseconds); zero when it has passed.
fn until(at_ms: u64) -> Duration {
    Duration::from_millis(at_ms.saturating_sub(crate::files::unix_ms()))
}

/// Checks what needs no I/O at `now` (epoch ms): the server named, loop and times. Returns
/// (start, end) in epoch milliseconds.
fn check_times(request: &Request, alias: &str, now: u64) -> Result<(u64, Option<u64>), ApiError> {
    if let Some(named) = &request.server_alias
        && named != alias
    {
        return Err(ApiError::new(ApiCode::NoRecorder, format!("no recording server {named:?} is known to this node")));
    }
    if request.loop_play && request.end_ms.is_none() {
        return Err(ApiError::invalid("endTime is required when loopPlay is true"));
    }
    let start = request.start_ms.unwrap_or(now);
    if let Some(end) = request.end_ms {
        if end <= start {
            return Err(ApiError::invalid(format!("endTime ({end}) must be after startTime ({start})")));
        }
        if end <= now {
            return Err(ApiError::invalid(format!("endTime ({end}) has passed")));
        }
    }
    Ok((start, request.end_ms))
}

/// A recording plays once it is done (status 6); before, 10003 says its status.
fn ready_to_play(recording: &Recording) -> Result<(), ApiError> {
    if recording.status == record_status::PROCESSING_DONE {
        return Ok(());
    }
    Err(ApiError::request(format!(
        "recording {} is not ready to play: its status is {}",
        recording.id, recording.status
    )))
}

/// Opens a playback room and answers it; ffmpeg starts at `startTime` and the room closes
/// when the playback ends.
pub async fn open(state: &AppState, request: Request) -> Result<Room, ApiError> {
    let (start_ms, end_ms) = check_times(&request, &state.settings().alias, crate::files::unix_ms())?;
    let recording = state.read(|reg| reg.recording(&request.record).cloned())?;
    ready_to_play(&recording)?;
    let file = state.settings().recordings_dir.join(&recording.file);
    if !file.is_file() {
        return Err(ApiError::new(ApiCode::RecordingNotFound, format!("recording {} has no file", recording.id)));
    }
    let tools = crate::files::require_tools(state)?;
    let slot = Slot::take(state)?;
    let info = crate::files::check_media(state, &file).await.map_err(|e| match e.code {
        ApiCode::InvalidParameter => {
            ApiError::request(format!("recording {} is not media to play: {}", recording.id, e.msg))
        }
        _ => e,
    })?;
    let streams = Streams { audio: !info.audio.is_empty(), video: !info.video.is_empty() };
    let host = PeerId::try_from(recording.id.to_string()).map_err(|e| ApiError::system(e.to_string()))?;
    let mut new = request.room;
    new.master = host.clone();
    let record = recording.id.clone();
    let room = state.write(move |reg| reg.create_playback(new, record).cloned()).await?;
    let (session, queue) = state.hub().attach(&room.id, &host);
    let mut playback = Playback {
        state: state.clone(),
        room: room.id.clone(),
        host,
        session,
        worker: room.worker,
        outputs: Vec::new(),
        slot,
    };
    if let Err(e) = playback.publish(streams).await {
        playback.finish().await;
        return Err(e);
    }
    let job = Job {
        ffmpeg: tools.ffmpeg,
        file,
        start_ms,
        end_ms,
        loop_play: request.loop_play,
        video_bps: (room.max_bitrate.saturating_sub(AUDIO_BPS)).clamp(100_000, MAX_VIDEO_BPS),
    };
    tracing::info!(room = %room.id, record = %recording.id, start_ms, ?end_ms, loop_play = job.loop_play,
        audio = streams.audio, video = streams.video, "playback room opened");
    tokio::spawn(run(playback, job, queue));
    Ok(room)
}

/// The streams a file holds, as far as playback cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Streams {
    audio: bool,
    video: bool,
}

/// One stream ffmpeg sends: its kind, the plain transport it arrives on, and the loopback
/// sockets that hold ffmpeg's source ports (RTP, RTCP) until ffmpeg starts.
#[derive(Debug)]
struct Output {
    kind: MediaKind,
    transport: TransportId,
    /// Where ffmpeg sends to: the worker's media address.
    worker_address: SocketAddr,
    rtp_port: u16,
    rtcp_port: u16,
    held: Option<(UdpSocket, UdpSocket)>,
}

/// A playback room's host, and what it publishes.
#[derive(Debug)]
struct Playback {
    state: AppState,
    room: RoomId,
    host: PeerId,
    /// The host's session in the hub.
    session: u64,
    worker: usize,
    outputs: Vec<Output>,
    slot: Slot,
}

/// What ffmpeg is to do, and when.
#[derive(Debug)]
struct Job {
    ffmpeg: PathBuf,
    file: PathBuf,
    start_ms: u64,
    end_ms: Option<u64>,
    loop_play: bool,
    video_bps: u64,
}

/// Two free loopback UDP ports, bound (and so held) until the sockets are dropped.
fn hold_ports(ip: IpAddr) -> Result<(UdpSocket, UdpSocket), ApiError> {
    let bind = || {
        UdpSocket::bind(SocketAddr::new(ip, 0))
            .map_err(|e| ApiError::system(format!("no free UDP port for ffmpeg: {e}")))
    };
    Ok((bind()?, bind()?))
}

fn port_of(socket: &UdpSocket) -> Result<u16, ApiError> {
    socket.local_addr().map(|a| a.port()).map_err(|e| ApiError::system(e.to_string()))
}

/// The format ffmpeg sends a stream of `kind` in, as subscribers are offered it.
fn codec(kind: MediaKind) -> Codec {
    match kind {
        MediaKind::Video => Codec {
            payload_type: PayloadType(VIDEO_PT),
            name: "VP8".into(),
            clock_rate: 90_000,
            channels: None,
            fmtp: String::new(),
            // Repairs come from the worker's cache; a key-frame request goes to ffmpeg, which
            // does not hear it, so the key-frame interval bounds a viewer's wait instead.
            rtcp_fb: vec!["nack".into(), "nack pli".into()],
            rtx_payload_type: None,
        },
        MediaKind::Audio => Codec {
            payload_type: PayloadType(AUDIO_PT),
            name: "opus".into(),
            clock_rate: 48_000,
            channels: Some(2),
            fmtp: "minptime=10;useinbandfec=1".into(),
            rtcp_fb: Vec::new(),
            rtx_payload_type: None,
        },
    }
}

fn ssrc_of(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Video => VIDEO_SSRC,
        MediaKind::Audio => AUDIO_SSRC,
    }
}

impl Playback {
    /// Opens a plain transport and a producer per stream of the file on the room's worker and
    /// publishes them as the host's tracks (`track-added`).
    async fn publish(&mut self, streams: Streams) -> Result<(), ApiError> {
        let kinds = [(streams.video, MediaKind::Video), (streams.audio, MediaKind::Audio)];
        let mut published = Vec::new();
        for kind in kinds.into_iter().filter_map(|(present, kind)| present.then_some(kind)) {
            let (worker_address, ip) = self.worker_address()?;
            let (rtp, rtcp) = hold_ports(ip)?;
            let (rtp_port, rtcp_port) = (port_of(&rtp)?, port_of(&rtcp)?);
            let remote = SocketAddr::new(ip, rtp_port);
            let rtcp_remote = Some(SocketAddr::new(ip, rtcp_port));
            let transport = match self
                .state
                .request_worker(self.worker, Command::CreatePlainTransport { remote, rtcp_remote, keys: None })
                .await?
            {
                Reply::PlainTransportCreated { transport, .. } => transport,
                other => {
                    return Err(ApiError::new(
                        ApiCode::RtcFailed,
                        format!("the worker refused a transport: {other:?}"),
                    ));
                }
            };
            self.outputs.push(Output { kind, transport, worker_address, rtp_port, rtcp_port, held: Some((rtp, rtcp)) });
            let codec = codec(kind);
            let spec = ProducerSpec { transport, ssrc: ssrc_of(kind), kind, clock_rate: codec.clock_rate };
            let producer = match self.state.request_worker(self.worker, Command::AddProducer { spec }).await? {
                Reply::ProducerAdded(producer) => producer,
                other => return Err(ApiError::new(ApiCode::RtcFailed, format!("producer refused: {other:?}"))),
            };
            published.push(PublishedTrack {
                track_id: TrackId::numbered(0),
                number: 0,
                room: self.room.clone(),
                publisher: self.host.clone(),
                session: self.session,
                worker: self.worker,
                producer,
                layers: Vec::new(),
                kind,
                codec,
                extensions: HeaderExtensions::default(),
            });
        }
        let audiences = self.state.read(|reg| reg.visible_rooms(&self.room));
        for track in self.state.hub().add_tracks(&self.room, published) {
            let added = Outgoing::Tracks(ServerEvent::TrackAdded(track.info()));
            for audience in &audiences {
                self.state.hub().send(audience, |p| p != &self.host, &added);
            }
        }
        Ok(())
    }

    /// Where ffmpeg sends to on the worker, and the IP its packets come from: loopback when
    /// the worker listens on every address; else the worker's own address, which the kernel
    /// also takes as the source of packets sent to it.
    fn worker_address(&self) -> Result<(SocketAddr, IpAddr), ApiError> {
        let (address, _) = self.state.worker_endpoint(self.worker).ok_or_else(|| ApiError::code(ApiCode::NoWorker))?;
        let ip = if address.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { address.ip() };
        Ok((SocketAddr::new(ip, address.port()), ip))
    }

    /// ffmpeg's command line: the file in real time (looped when asked), each stream to its
    /// transport from its own ports.
    fn ffmpeg_command(&self, job: &Job) -> Process {
        let mut ffmpeg = Process::new(&job.ffmpeg);
        ffmpeg.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning"]);
        if job.loop_play {
            ffmpeg.args(["-stream_loop", "-1"]);
        }
        let mut input = std::ffi::OsString::from("file:");
        input.push(job.file.as_os_str());
        ffmpeg.args(["-re", "-protocol_whitelist", "file,rtp,udp", "-i"]).arg(input);
        for output in &self.outputs {
            match output.kind {
                // `V`: video that is not a cover picture.
                MediaKind::Video => ffmpeg
                    .args(["-map", "0:V:0", "-an", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"])
                    .args(["-g", &KEYFRAME_INTERVAL.to_string(), "-keyint_min", &KEYFRAME_INTERVAL.to_string()])
                    .args(["-b:v", &job.video_bps.to_string(), "-pix_fmt", "yuv420p"])
                    .args(["-vf", "scale=w='min(1280,iw)':h=-2"])
                    .args(["-payload_type", &VIDEO_PT.to_string()]),
                MediaKind::Audio => ffmpeg
                    .args(["-map", "0:a:0", "-vn", "-c:a", "libopus", "-ar", "48000", "-ac", "2"])
                    .args(["-b:a", &AUDIO_BPS.to_string(), "-payload_type", &AUDIO_PT.to_string()]),
            };
            if let Some(end) = job.end_ms {
                // ffmpeg stops by itself at endTime, whatever becomes of this process.
                ffmpeg.args(["-t", &format!("{:.3}", until(end).as_secs_f64())]);
            }
            // A connected socket: once the worker's port is gone (this process died), sends
            // fail with ECONNREFUSED and ffmpeg ends rather than play on to nobody.
            let url = format!(
                "rtp://{}?localrtpport={}&localrtcpport={}&rtcpport={}&connect=1&pkt_size={RTP_PAYLOAD_SIZE}",
                output.worker_address,
                output.rtp_port,
                output.rtcp_port,
                output.worker_address.port()
            );
            ffmpeg.args(["-ssrc", &ssrc_of(output.kind).to_string(), "-f", "rtp"]).arg(url);
        }
        ffmpeg.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        ffmpeg
    }

    /// Starts ffmpeg, handing it the ports held for it.
    fn spawn(&mut self, job: &Job) -> std::io::Result<Child> {
        let mut ffmpeg = self.ffmpeg_command(job);
        for output in &mut self.outputs {
            output.held = None;
        }
        ffmpeg.spawn()
    }

    /// Ends the playback: the room closes as `DELETE /room/{id}` closes it (unless that is
    /// what ended it), the host's tracks leave it, its transports close and the host leaves.
    async fn finish(mut self) {
        let state = self.state.clone();
        let (host, record) = (self.host.clone(), PeerId::as_str(&self.host).to_owned());
        // Only this playback's room: its id may have been taken again since a DELETE.
        let still =
            move |room: &Room| room.master == host && room.playback.as_ref().is_some_and(|r| r.as_str() == record);
        if let Err(e) = signalling::close_room(&state, self.room.clone(), still).await {
            tracing::debug!(room = %self.room, error = %e.msg, "the playback room was closed already");
        }
        let removed = state.hub().remove_tracks(&self.room, &self.host);
        let audiences = if removed.is_empty() { Vec::new() } else { state.read(|reg| reg.visible_rooms(&self.room)) };
        for track in removed {
            let gone =
                Outgoing::Tracks(ServerEvent::TrackRemoved { peer: self.host.clone(), track_id: track.track_id });
            for audience in &audiences {
                state.hub().send(audience, |p| p != &self.host, &gone);
            }
        }
        for output in self.outputs.drain(..) {
            let _ = state.request_worker(self.worker, Command::CloseTransport { transport: output.transport }).await;
        }
        state.hub().detach(&self.room, &self.host, self.session);
        let (room, host) = (self.room.clone(), self.host.clone());
        let _ = state.write(move |reg| Ok(reg.depart(&room, &host))).await;
        state.hub().end_session();
        tracing::info!(room = %self.room, "playback ended");
        drop(self.slot);
    }
}

/// Why a playback ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The file played to its end.
    FileEnded,
    /// `endTime` came.
    Deadline,
    /// ffmpeg failed (or could not start).
    Failed,
    /// The room was closed (`DELETE /room/{id}`) or its host kicked.
    Closed,
}

/// Runs one playback: waits for its start, runs ffmpeg, and ends it (see the module's rules).
async fn run(mut playback: Playback, job: Job, mut queue: mpsc::Receiver<Outgoing>) {
    let end_at = job.end_ms.map(|end| tokio::time::Instant::now() + until(end));
    let ended_at_end = async move {
        match end_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(ended_at_end);
    let start = tokio::time::sleep(until(job.start_ms));
    tokio::pin!(start);
    let waited = loop {
        tokio::select! {
            () = &mut start => break None,
            () = &mut ended_at_end => break Some(End::Deadline),
            message = queue.recv() => if host_closed(message) { break Some(End::Closed) },
        }
    };
    let end = match waited {
        Some(end) => end,
        None => play(&mut playback, &job, &mut queue, ended_at_end).await,
    };
    tracing::info!(room = %playback.room, ?end, "playback ends");
    playback.finish().await;
}

/// Whether a message to the host ends the playback (the room closed, the host kicked, or the
/// hub let go of the session); a probe is answered, since the host is always there.
fn host_closed(message: Option<Outgoing>) -> bool {
    match message {
        Some(Outgoing::Close(_)) | None => true,
        Some(Outgoing::Probe { alive }) => {
            let _ = alive.try_send(());
            false
        }
        Some(_) => false,
    }
}

/// Runs ffmpeg until the file ends, `endTime`, or the room closes; kills and reaps it.
async fn play(
    playback: &mut Playback,
    job: &Job,
    queue: &mut mpsc::Receiver<Outgoing>,
    mut ended_at_end: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> End {
    let mut child = match playback.spawn(job) {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(room = %playback.room, error = %e, "ffmpeg does not start");
            return End::Failed;
        }
    };
    let tail = child.stderr.take().map(|stderr| tokio::spawn(stderr_tail(stderr)));
    let end = loop {
        tokio::select! {
            status = child.wait() => break match status {
                Ok(status) if status.success() => End::FileEnded,
                Ok(status) => {
                    let lines = match tail { Some(tail) => tail.await.unwrap_or_default(), None => Vec::new() };
                    tracing::error!(room = %playback.room, %status, stderr = %lines.join("\n"), "ffmpeg failed");
                    return End::Failed;
                }
                Err(e) => {
                    tracing::error!(room = %playback.room, error = %e, "cannot wait for ffmpeg");
                    End::Failed
                }
            },
            () = &mut ended_at_end => break End::Deadline,
            message = queue.recv() => if host_closed(message) { break End::Closed },
        }
    };
    // Killing one that already exited is harmless; waiting reaps it either way.
    let _ = child.start_kill();
    let _ = child.wait().await;
    end
}

/// The last lines ffmpeg wrote to its stderr, for the log when it fails.
async fn stderr_tail(stderr: tokio::process::ChildStderr) -> Vec<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    while let Ok(Some(line)) = lines.next_line().await {
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into()
}

/// Closes the playback rooms a previous run left open: their ffmpeg went with that process.
/// Their clients (there are none yet) would hear `room-closed`.
pub fn close_orphans(state: &AppState) {
    let orphans: Vec<RoomId> =
        state.read(|reg| reg.rooms().filter(|r| r.playback.is_some()).map(|r| r.id.clone()).collect());
    if orphans.is_empty() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        for room in orphans {
            match signalling::close_room(&state, room.clone(), |r| r.playback.is_some()).await {
                Ok(_) => tracing::info!(%room, "closed a playback room whose ffmpeg ended with the previous run"),
                Err(e) => {
                    tracing::warn!(%room, error = %e.msg, "cannot close a playback room left by the previous run")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{NewRoomKind, Protocol};

    fn request(start_ms: Option<u64>, loop_play: bool, end_ms: Option<u64>, alias: Option<&str>) -> Request {
        Request {
            record: RecordId::try_from("r".to_owned()).unwrap(),
            server_alias: alias.map(str::to_owned),
            start_ms,
            loop_play,
            end_ms,
            room: NewRoom {
                master: PeerId::try_from("r".to_owned()).unwrap(),
                requested_id: None,
                protocol: Protocol::Udp,
                min_bitrate: 1,
                max_bitrate: 2,
                kind: NewRoomKind::Live,
                demo: false,
            },
        }
    }

    #[test]
    fn times_loop_and_server_are_checked_before_anything_runs() {
        let now = 1_000_000;
        let check = |r: Request| check_times(&r, "me", now).map_err(|e| e.code);
        assert_eq!(check(request(None, false, None, None)), Ok((now, None)));
        assert_eq!(check(request(Some(now + 5), true, Some(now + 9), Some("me"))), Ok((now + 5, Some(now + 9))));
        assert_eq!(check(request(None, true, None, None)), Err(ApiCode::InvalidParameter), "looping needs an end");
        assert_eq!(check(request(Some(now + 9), false, Some(now + 9), None)), Err(ApiCode::InvalidParameter));
        assert_eq!(check(request(Some(now + 9), false, Some(now + 5), None)), Err(ApiCode::InvalidParameter));
        assert_eq!(check(request(None, false, Some(now - 1), None)), Err(ApiCode::InvalidParameter), "an end passed");
        assert_eq!(check(request(None, false, None, Some("other"))), Err(ApiCode::NoRecorder));
    }

    #[test]
    fn only_a_finished_recording_plays_and_the_refusal_says_its_status() {
        // From JSON, as the store keeps it: fields added later take their defaults.
        let recording = |status: u8| -> Recording {
            serde_json::from_value(serde_json::json!({"id": "rec", "status": status, "file": "rec", "size": 1}))
                .unwrap()
        };
        assert!(ready_to_play(&recording(record_status::PROCESSING_DONE)).is_ok());
        for status in [0, 1, 2, 3, 4, 5, 7] {
            let refused = ready_to_play(&recording(status)).unwrap_err();
            assert_eq!(refused.code, ApiCode::InvalidRequest);
            assert!(refused.msg.ends_with(&format!("its status is {status}")), "{}", refused.msg);
        }
    }

    #[test]
    fn each_stream_is_offered_in_the_format_ffmpeg_sends() {
        let video = codec(MediaKind::Video);
        assert_eq!((video.name.as_str(), video.clock_rate, video.payload_type), ("VP8", 90_000, PayloadType(VIDEO_PT)));
        let audio = codec(MediaKind::Audio);
        assert_eq!((audio.name.as_str(), audio.clock_rate, audio.channels), ("opus", 48_000, Some(2)));
        assert_ne!(ssrc_of(MediaKind::Video), ssrc_of(MediaKind::Audio));
    }
}
