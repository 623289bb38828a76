//! Server-side recordings, the control plane's half: which streams of a room are recorded,
//! the capture each recording writes to, the status every recording is in (the contract's
//! 0–7), and the queue of jobs that compose finished captures into MP4 files.
//!
//! How a recording runs:
//! - **Start** makes a capture (a thread of this process with a loopback socket, see
//!   `uprtcd_recorder::capture`) and, on each worker that hosts a chosen stream, one plain
//!   transport to the capture's address with a consumer per stream: the worker sends the
//!   capture the plaintext packets it already decrypted for forwarding, no second SRTP pass.
//!   Streams published later join it (`all`, or a listed peer who starts publishing).
//! - **Status 1 → 2** when the capture has a first key frame; a monitor task watches the
//!   capture, the room and the recorded publishers four times a second.
//! - **Status 3** on `POST /record/stop`, the room closing, or its recorded publishers all
//!   gone for [`PUBLISHER_GRACE`] (a phone that lost Wi-Fi rejoins within it).
//! - **Status 4 → 5 → 6** through the processing queue: at most `jobs` ffmpeg compositions at
//!   once, at low priority on the control plane's cores; 7 with the reason when anything
//!   fails, and the capture is kept so that it can be processed again.
//! - **Restart:** a recording that was capturing ends there (3) and what it wrote is
//!   processed; one waiting or processing is queued again.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::router::{ConsumerFormat, TransportId};
use uprtcd_recorder::Tools;
use uprtcd_recorder::capture::{Capture, CaptureEvent, CaptureMeta, Codec, Layout, Resolution, StreamSpec};
use uprtcd_recorder::compose::{ComposeJob, compose};

use crate::envelope::{ApiCode, ApiError};
use crate::ids::{PeerId, RecordId, RoomId, TrackId};
use crate::registry::{Recording, RoomKind, record_status};
use crate::signalling::hub::PublishedTrack;
use crate::state::AppState;

/// How long a recording outlives its last recorded publisher.
pub const PUBLISHER_GRACE: Duration = Duration::from_secs(10);
/// How often a capturing recording is looked at.
const MONITOR_INTERVAL: Duration = Duration::from_millis(250);
/// Recordings waiting for processing at most; more end in status 7.
const QUEUE_CAPACITY: usize = 1024;
/// The SSRCs the capture receives a recording's streams as: this base plus the stream's
/// number, so that they cannot collide on a plain transport.
const RECORDED_SSRC_BASE: u32 = 0x5245_4300;
/// How nice ffmpeg runs: below the control plane, which answers REST calls and signalling.
const COMPOSE_NICENESS: i32 = 10;

/// How recordings are made; fixed at start.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// ffmpeg: a path, or a name looked up on PATH; ffprobe is taken from beside it.
    pub ffmpeg: PathBuf,
    /// Compositions that run at once.
    pub jobs: usize,
    /// Below this much free space in the recordings folder, no recording starts (50021).
    pub min_free_bytes: u64,
    /// The cores ffmpeg may run on: those the workers leave free.
    pub cores: Vec<usize>,
}

/// What `POST /record/start` asks for, checked.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub room: RoomId,
    pub all: bool,
    pub peers: Vec<PeerId>,
    pub resolution: Resolution,
    pub layout: Layout,
    pub fix_video_direction: bool,
}

/// Which publishers a recording takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    /// Everyone who publishes in the room, now or later.
    All,
    Peers(BTreeSet<PeerId>),
}

impl Selection {
    fn takes(&self, peer: &PeerId) -> bool {
        match self {
            Selection::All => true,
            Selection::Peers(peers) => peers.contains(peer),
        }
    }
}

/// One stream a capture receives.
#[derive(Debug)]
struct RecordedStream {
    ssrc: u32,
    peer: PeerId,
    /// Its publisher still publishes it.
    live: bool,
}

/// A recording that is capturing.
#[derive(Debug)]
struct Active {
    record: RecordId,
    room: RoomId,
    selection: Selection,
    /// `None` once stopped.
    capture: Option<Capture>,
    /// The plain transport to the capture on each worker that hosts a recorded stream.
    plain: HashMap<usize, TransportId>,
    streams: HashMap<TrackId, RecordedStream>,
    /// Since when no recorded stream is live, while none is.
    idle_since: Option<Instant>,
    /// Set once the first key frame arrived (status 2).
    started: bool,
}

type ActiveHandle = Arc<tokio::sync::Mutex<Active>>;

/// Counters of recordings, for `/metrics`.
#[derive(Debug, Default)]
pub struct RecordingCounters {
    pub started: AtomicU64,
    pub composed: AtomicU64,
    pub failed: AtomicU64,
    /// Packets the captures could not take (their socket buffer was full).
    pub capture_overflow: AtomicU64,
}

/// The recordings of this server.
#[derive(Debug)]
pub struct Recordings {
    settings: RecordingSettings,
    dir: PathBuf,
    /// ffmpeg and ffprobe, or why they cannot be used.
    tools: Result<Tools, String>,
    active: Mutex<HashMap<RoomId, ActiveHandle>>,
    queue: mpsc::Sender<RecordId>,
    /// Taken by [`spawn`] to start the processing tasks.
    queued: Mutex<Option<mpsc::Receiver<RecordId>>>,
    pub counters: RecordingCounters,
}

impl Recordings {
    /// Locates ffmpeg; when it cannot be used, recordings are refused (50021) and the log
    /// says why once here.
    pub fn new(settings: RecordingSettings, dir: PathBuf) -> Self {
        let tools = Tools::locate(&settings.ffmpeg).map_err(|e| e.to_string());
        if let Err(reason) = &tools {
            tracing::warn!(%reason, "server-side recording is off: ffmpeg is needed (Debian package ffmpeg)");
        }
        let (queue, queued) = mpsc::channel(QUEUE_CAPACITY);
        Self {
            settings,
            dir,
            tools,
            active: Mutex::new(HashMap::new()),
            queue,
            queued: Mutex::new(Some(queued)),
            counters: RecordingCounters::default(),
        }
    }

    /// ffmpeg and ffprobe, or 50021 saying why there are none.
    pub fn tools(&self) -> Result<&Tools, ApiError> {
        self.tools.as_ref().map_err(|reason| no_recorder(format!("ffmpeg is not usable here: {reason}")))
    }

    /// Whether this server can record now: ffmpeg is there and the recordings folder has
    /// its minimum of free space; else 50021 saying which is missing.
    pub fn check_available(&self) -> Result<(), ApiError> {
        self.tools()?;
        let free = free_bytes(&self.dir).map_err(|e| no_recorder(format!("cannot read free space: {e}")))?;
        if free < self.settings.min_free_bytes {
            return Err(no_recorder(format!(
                "{} MB free in the recordings folder, below the {} MB minimum",
                free / 1_000_000,
                self.settings.min_free_bytes / 1_000_000
            )));
        }
        Ok(())
    }

    /// Recordings capturing now.
    pub fn active_count(&self) -> usize {
        self.lock_active().len()
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, ActiveHandle>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn capture_dir(&self, record: &RecordId) -> PathBuf {
        self.dir.join(format!("{record}.capture"))
    }
}

/// 50021 with `why`.
fn no_recorder(why: String) -> ApiError {
    ApiError::new(ApiCode::NoRecorder, format!("no recording server is available: {why}"))
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Starts recording a room: registers the recording (status 1), starts its capture and
/// attaches the chosen streams. 50020 when the room is being recorded already.
pub async fn start(state: &AppState, request: StartRequest) -> Result<RecordId, ApiError> {
    let recordings = state.recordings();
    recordings.check_available()?;
    let selection = state.read(|reg| selection_of(reg.room(&request.room)?, &request))?;
    let record = state.read(|reg| reg.fresh_record_id());
    let handle = {
        let mut active = recordings.lock_active();
        if active.contains_key(&request.room) {
            return Err(already_recording(&request.room));
        }
        let handle = Arc::new(tokio::sync::Mutex::new(Active {
            record: record.clone(),
            room: request.room.clone(),
            selection,
            capture: None,
            plain: HashMap::new(),
            streams: HashMap::new(),
            idle_since: None,
            started: false,
        }));
        active.insert(request.room.clone(), Arc::clone(&handle));
        handle
    };
    let mut recording = handle.lock().await;
    let registered = Recording {
        id: record.clone(),
        status: record_status::PREPARING,
        file: format!("{record}.mp4"),
        size: 0,
        room: Some(request.room.clone()),
        created_ms: crate::files::unix_ms(),
        msg: String::new(),
        upload_expires: None,
    };
    let room = request.room.clone();
    if let Err(e) = state.write(move |reg| reg.begin_recording(&room, registered)).await {
        recordings.lock_active().remove(&request.room);
        return Err(e);
    }
    let meta = CaptureMeta {
        room: request.room.to_string(),
        record: record.to_string(),
        started_unix_ms: crate::files::unix_ms(),
        layout: request.layout.clone(),
        resolution: request.resolution,
        fix_video_direction: request.fix_video_direction,
    };
    let dir = recordings.capture_dir(&record);
    let capture = match tokio::task::spawn_blocking(move || Capture::start(&dir, meta)).await {
        Ok(Ok(capture)) => capture,
        Ok(Err(e)) => return Err(abandon(state, &recording, format!("cannot start the capture: {e}")).await),
        Err(e) => return Err(abandon(state, &recording, format!("capture task failed: {e}")).await),
    };
    recording.capture = Some(capture);
    recordings.counters.started.fetch_add(1, Ordering::Relaxed);
    for track in state.hub().tracks_of(&request.room) {
        attach(state, &mut recording, &track).await;
    }
    tracing::info!(room = %request.room, %record, streams = recording.streams.len(), "recording started");
    drop(recording);
    tokio::spawn(monitor(state.clone(), request.room, handle));
    Ok(record)
}

fn already_recording(room: &RoomId) -> ApiError {
    ApiError::new(ApiCode::AlreadyRecording, format!("room {room} is already being recorded"))
}

/// The publishers a start request takes, checked against the room: listed peers and a
/// centred peer must be the room's (a conversation's invited members, a live room's host
/// and co-hosts). Without `all` or `peers`, a live room records its host and a
/// conversation everyone.
fn selection_of(room: &crate::registry::Room, request: &StartRequest) -> Result<Selection, ApiError> {
    let belongs = |peer: &PeerId| match &room.kind {
        RoomKind::Convo { invited, .. } => invited.contains(peer),
        RoomKind::Live { .. } => room.is_member(peer),
    };
    if let Some(stranger) = request.peers.iter().find(|p| !belongs(p)) {
        return Err(ApiError::invalid(format!("peers: {stranger} is not a member of room {}", room.id)));
    }
    if let Layout::Centre(peer) = &request.layout
        && !PeerId::try_from(peer.clone()).is_ok_and(|peer| belongs(&peer))
    {
        return Err(ApiError::invalid(format!("layout: {peer} is not a member of room {}", room.id)));
    }
    Ok(match (request.all, request.peers.is_empty(), &room.kind) {
        (true, _, _) | (false, true, RoomKind::Convo { .. }) => Selection::All,
        (false, true, RoomKind::Live { .. }) => Selection::Peers(BTreeSet::from([room.master.clone()])),
        (false, false, _) => Selection::Peers(request.peers.iter().cloned().collect()),
    })
}

/// Gives up a recording that could not start: status 7 with `why`, and the room free to
/// record again. Returns the error to answer.
async fn abandon(state: &AppState, recording: &Active, why: String) -> ApiError {
    state.recordings().lock_active().remove(&recording.room);
    fail(state, &recording.record, why.clone()).await;
    ApiError::system(why)
}

/// The recorder's name of a codec the SFU forwards; `None` for one it cannot compose.
fn recorded_codec(name: &str) -> Option<Codec> {
    [("VP8", Codec::Vp8), ("VP9", Codec::Vp9), ("H264", Codec::H264), ("opus", Codec::Opus)]
        .into_iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, codec)| codec)
}

/// Adds `track` to the recording if its selection takes the publisher: the capture learns
/// the stream, then the worker sends it there over the plain transport (opened on first use).
async fn attach(state: &AppState, recording: &mut Active, track: &PublishedTrack) {
    if !recording.selection.takes(&track.publisher) || recording.streams.contains_key(&track.track_id) {
        return;
    }
    let Some(capture) = &recording.capture else { return };
    let Some(codec) = recorded_codec(&track.codec.name) else {
        tracing::warn!(record = %recording.record, track = %track.track_id, codec = %track.codec.name,
            "a stream in a format the recorder cannot compose is left out");
        return;
    };
    let ssrc = RECORDED_SSRC_BASE + u32::try_from(recording.streams.len()).unwrap_or(u32::MAX - RECORDED_SSRC_BASE);
    let address = capture.address();
    if !recording.streams.values().any(|s| s.peer == track.publisher) {
        capture.event(CaptureEvent::Joined { peer: track.publisher.to_string() });
    }
    capture.add_stream(StreamSpec {
        ssrc,
        peer: track.publisher.to_string(),
        kind: track.kind,
        codec,
        payload_type: track.codec.payload_type.0,
        clock_rate: track.codec.clock_rate,
        cvo_extension_id: track.extensions.video_orientation,
    });
    let transport = match recording.plain.get(&track.worker) {
        Some(&transport) => transport,
        None => match state
            .request_worker(
                track.worker,
                Command::CreatePlainTransport { remote: address, rtcp_remote: None, keys: None },
            )
            .await
        {
            Ok(Reply::PlainTransportCreated { transport, .. }) => {
                recording.plain.insert(track.worker, transport);
                transport
            }
            other => {
                tracing::error!(record = %recording.record, worker = track.worker, reply = ?other,
                    "no plain transport to the capture: the stream is not recorded");
                return;
            }
        },
    };
    let command =
        Command::AddConsumer { producer: track.producer, transport, ssrc, format: ConsumerFormat::as_published() };
    match state.request_worker(track.worker, command).await {
        Ok(Reply::ConsumerAdded(_)) => {
            recording
                .streams
                .insert(track.track_id.clone(), RecordedStream { ssrc, peer: track.publisher.clone(), live: true });
            recording.idle_since = None;
            tracing::debug!(record = %recording.record, track = %track.track_id, peer = %track.publisher, "stream recorded");
        }
        other => tracing::error!(record = %recording.record, track = %track.track_id, reply = ?other,
            "the worker refused the recording consumer: the stream is not recorded"),
    }
}

/// Streams published in `room` from now on: recorded when the room's recording takes them.
pub async fn tracks_added(state: &AppState, room: &RoomId, tracks: &[PublishedTrack]) {
    let Some(handle) = state.recordings().lock_active().get(room).cloned() else { return };
    let mut recording = handle.lock().await;
    for track in tracks {
        attach(state, &mut recording, track).await;
    }
}

/// Streams of `room` whose publisher stopped publishing: their consumers went with their
/// producers; the capture hears that they ended.
pub async fn tracks_removed(state: &AppState, room: &RoomId, tracks: &[PublishedTrack]) {
    let Some(handle) = state.recordings().lock_active().get(room).cloned() else { return };
    let mut recording = handle.lock().await;
    let recording = &mut *recording;
    for track in tracks {
        let Some(stream) = recording.streams.get_mut(&track.track_id) else { continue };
        stream.live = false;
        if let Some(capture) = &recording.capture {
            capture.end_stream(stream.ssrc);
        }
    }
    let peers: BTreeSet<&PeerId> = tracks.iter().map(|t| &t.publisher).collect();
    for peer in peers {
        let still = recording.streams.values().any(|s| s.live && &s.peer == peer);
        if let (false, Some(capture)) = (still, &recording.capture) {
            capture.event(CaptureEvent::Left { peer: peer.to_string() });
        }
    }
    if !recording.streams.values().any(|s| s.live) {
        recording.idle_since.get_or_insert_with(Instant::now);
    }
}

/// `POST /record/stop/{roomId}`: ends the room's recording and queues its processing.
pub async fn stop(state: &AppState, room: &RoomId) -> Result<(), ApiError> {
    let handle = state.recordings().lock_active().get(room).cloned();
    let Some(handle) = handle else {
        let status = state.read(|reg| reg.record_status(room))?;
        return Err(ApiError::request(format!("room {room} is not being recorded (status {status})")));
    };
    end(state, &handle, None).await;
    Ok(())
}

/// Watches one capturing recording until it ends: the first key frame makes it 2; a
/// failed capture, a closed room or its publishers gone past the grace end it.
async fn monitor(state: AppState, room: RoomId, handle: ActiveHandle) {
    let mut tick = tokio::time::interval(MONITOR_INTERVAL);
    loop {
        tick.tick().await;
        let verdict = {
            let mut recording = handle.lock().await;
            let Some(capture) = &recording.capture else { return };
            let progress = capture.progress();
            if let Some(failure) = progress.failure {
                Some(Some(format!("the capture failed: {failure}")))
            } else if state.read(|reg| reg.room(&room).is_err()) {
                tracing::info!(%room, record = %recording.record, "the room closed: its recording ends");
                Some(None)
            } else if recording.idle_since.is_some_and(|since| since.elapsed() >= PUBLISHER_GRACE) {
                tracing::info!(%room, record = %recording.record, "no recorded publisher left: the recording ends");
                Some(None)
            } else {
                if progress.started && !recording.started {
                    recording.started = true;
                    let _ = set_status(&state, &recording.record, record_status::RECORDING, None).await;
                }
                None
            }
        };
        if let Some(error) = verdict {
            end(&state, &handle, error).await;
            return;
        }
    }
}

/// Ends a capturing recording: the workers stop sending, the capture flushes and closes,
/// and the recording goes to 3 and into the processing queue, or to 7 with `error`.
async fn end(state: &AppState, handle: &ActiveHandle, error: Option<String>) {
    let mut recording = handle.lock().await;
    let Some(capture) = recording.capture.take() else { return };
    for (&worker, &transport) in &recording.plain {
        if let Err(e) = state.request_worker(worker, Command::CloseTransport { transport }).await {
            tracing::warn!(record = %recording.record, worker, error = %e.msg, "cannot close the plain transport");
        }
    }
    let stopped = tokio::task::spawn_blocking(move || capture.stop()).await;
    let error = match stopped {
        Ok(Ok(progress)) => {
            state.recordings().counters.capture_overflow.fetch_add(progress.dropped_overflow, Ordering::Relaxed);
            tracing::info!(record = %recording.record, packets = progress.packets, bytes = progress.bytes,
                overflow = progress.dropped_overflow, "capture ended");
            error
        }
        Ok(Err(e)) => Some(error.unwrap_or_else(|| format!("the capture did not close cleanly: {e}"))),
        Err(e) => Some(format!("capture task failed: {e}")),
    };
    state.recordings().lock_active().remove(&recording.room);
    let record = recording.record.clone();
    match error {
        Some(reason) => fail(state, &record, reason).await,
        None => {
            let _ = set_status(state, &record, record_status::ENDED, None).await;
            enqueue(state, record).await;
        }
    }
}

/// Puts a recording whose capture ended in the processing queue (status 4).
async fn enqueue(state: &AppState, record: RecordId) {
    if let Err(e) = set_status(state, &record, record_status::WAITING, None).await {
        tracing::error!(%record, error = %e.msg, "cannot mark the recording waiting");
    }
    if state.recordings().queue.try_send(record.clone()).is_err() {
        fail(state, &record, format!("the processing queue is full ({QUEUE_CAPACITY} recordings)")).await;
    }
}

/// Status 7, with why in the log and in the recording.
async fn fail(state: &AppState, record: &RecordId, reason: String) {
    tracing::error!(%record, %reason, "recording failed");
    state.recordings().counters.failed.fetch_add(1, Ordering::Relaxed);
    let _ = set_status(state, record, record_status::ERROR, Some(reason)).await;
}

/// Commits `status` (and the reason for 7) of a recording, and of its room along with it.
async fn set_status(state: &AppState, record: &RecordId, status: u8, error: Option<String>) -> Result<(), ApiError> {
    let record = record.clone();
    state.write(move |reg| reg.set_recording_status(&record, status, error).map(|_| ())).await
}

/// Starts the processing tasks, and queues again what a previous run left unfinished: a
/// recording that was capturing ends (3) and is processed from what it wrote; one waiting
/// or processing starts over.
pub async fn spawn(state: &AppState) {
    let Some(queued) = state.recordings().queued.lock().unwrap_or_else(PoisonError::into_inner).take() else {
        return;
    };
    let queued = Arc::new(tokio::sync::Mutex::new(queued));
    for _ in 0..state.recordings().settings.jobs.max(1) {
        tokio::spawn(process_queue(state.clone(), Arc::clone(&queued)));
    }
    let unfinished: Vec<(RecordId, u8)> = state.read(|reg| {
        reg.recordings()
            .filter(|r| r.room.is_some() && (record_status::PREPARING..=record_status::PROCESSING).contains(&r.status))
            .map(|r| (r.id.clone(), r.status))
            .collect()
    });
    for (record, status) in unfinished {
        if record_status::is_capturing(status) {
            tracing::info!(%record, "the recording was capturing when the server stopped: it ends, and what it wrote is processed");
            let _ = set_status(state, &record, record_status::ENDED, None).await;
        } else {
            tracing::info!(%record, status, "processing the recording again after a restart");
        }
        enqueue(state, record).await;
    }
}

/// One processing task: takes queued recordings one at a time and composes them.
async fn process_queue(state: AppState, queued: Arc<tokio::sync::Mutex<mpsc::Receiver<RecordId>>>) {
    loop {
        let Some(record) = queued.lock().await.recv().await else { return };
        process(&state, record).await;
    }
}

/// Composes one recording's capture into its MP4 (5), then 6 with the file, or 7 with why.
async fn process(state: &AppState, record: RecordId) {
    let recordings = state.recordings();
    let tools = match recordings.tools() {
        Ok(tools) => tools.clone(),
        Err(e) => return fail(state, &record, e.msg).await,
    };
    if set_status(state, &record, record_status::PROCESSING, None).await.is_err() {
        return;
    }
    let file = format!("{record}.mp4");
    let job = ComposeJob {
        tools,
        capture_dir: recordings.capture_dir(&record),
        output: recordings.dir.join(&file),
        cores: Some(recordings.settings.cores.clone()).filter(|c| !c.is_empty()),
        nice: COMPOSE_NICENESS,
    };
    tracing::info!(%record, "processing the recording");
    let logged = record.clone();
    let begun = Instant::now();
    let composed = tokio::task::spawn_blocking(move || {
        let mut reported = 0;
        compose(&job, |fraction| {
            let percent = (fraction * 100.0) as u32;
            if percent >= reported + 10 {
                reported = percent - percent % 10;
                tracing::info!(record = %logged, percent, "processing");
            }
        })
    })
    .await;
    match composed {
        Ok(Ok(summary)) => {
            let size = summary.bytes;
            tracing::info!(%record, duration_s = summary.duration.as_secs_f64(), streams = summary.streams, bytes = size,
                took_s = begun.elapsed().as_secs_f64(), "recording processed");
            let done = record.clone();
            match state.write(move |reg| reg.finish_recording(&done, file, size)).await {
                Ok(()) => {
                    recordings.counters.composed.fetch_add(1, Ordering::Relaxed);
                    remove_capture(&recordings.capture_dir(&record)).await;
                }
                Err(e) => tracing::error!(%record, error = %e.msg, "cannot mark the recording done"),
            }
        }
        Ok(Err(e)) => fail(state, &record, format!("processing failed: {e}")).await,
        Err(e) => fail(state, &record, format!("processing task failed: {e}")).await,
    }
}

/// Removes a capture once its MP4 is stored: the MP4 is what is kept.
async fn remove_capture(dir: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(dir).await {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a processed capture");
    }
}

/// Parses `resolution` as the contract spells it.
pub fn parse_resolution(resolution: Option<&str>) -> Result<Resolution, ApiError> {
    match resolution {
        None | Some("720p") => Ok(Resolution::P720),
        Some("1080p") => Ok(Resolution::P1080),
        Some("480p") => Ok(Resolution::P480),
        Some(other) => Err(ApiError::invalid(format!("resolution must be 1080p, 720p or 480p, not {other:?}"))),
    }
}

/// Parses `layout`: `grid` (the default) or the peer to put in the centre.
pub fn parse_layout(layout: Option<&str>) -> Result<Layout, ApiError> {
    match layout {
        None | Some("grid") => Ok(Layout::Grid),
        Some(peer) if PeerId::try_from(peer.to_owned()).is_ok() => Ok(Layout::Centre(peer.to_owned())),
        Some(other) => Err(ApiError::invalid(format!("layout must be grid or a peerId, not {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_and_layouts_are_parsed_as_the_contract_spells_them() {
        assert_eq!(parse_resolution(None).unwrap(), Resolution::P720);
        assert_eq!(parse_resolution(Some("1080p")).unwrap(), Resolution::P1080);
        assert_eq!(parse_resolution(Some("480p")).unwrap(), Resolution::P480);
        assert!(parse_resolution(Some("4k")).unwrap_err().msg.contains("resolution"));
        assert_eq!(parse_layout(Some("grid")).unwrap(), Layout::Grid);
        assert_eq!(parse_layout(Some("u1")).unwrap(), Layout::Centre("u1".into()));
        assert!(parse_layout(Some("")).unwrap_err().msg.contains("layout"));
    }

    #[test]
    fn codecs_the_sfu_forwards_are_recorded() {
        assert_eq!(recorded_codec("vp8"), Some(Codec::Vp8));
        assert_eq!(recorded_codec("H264"), Some(Codec::H264));
        assert_eq!(recorded_codec("OPUS"), Some(Codec::Opus));
        assert_eq!(recorded_codec("G722"), None);
    }
}
