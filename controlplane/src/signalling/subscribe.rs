//! Subscribing: the SFU offers a client every stream the room's other peers publish, and
//! offers again (server-initiated renegotiation on the same peer connection) each time that
//! set changes. The transport opens with the first answer; each answer adds a consumer per
//! newly accepted stream, with the subscriber's header extension ids and, when it kept RTX,
//! an RTX stream for repairs.
//!
//! Rules: at most one offer is outstanding; a change while one is, is offered once the
//! answer came. Sections keep their place (see [`sdp::offer`]): a track that went away
//! leaves a closed section. When every track is gone, no offer is made, so that the
//! subscriber never closes its last section (which would tear down the bundle transport
//! the worker keeps); the next track added renegotiates as usual.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::relay::WorkerIndex;
use uprtcd_dataplane::router::{ConsumerFormat, ConsumerId, ProducerId, RtxStream, TransportId};
use uprtcd_dataplane::wire::rtp::ExtensionIdMap;
use uprtcd_dataplane::wire::video::VideoFormat;

use super::Session;
use super::hub::PublishedTrack;
use super::protocol::{FrameRate, OfferedTrack, ServerEvent, VideoQuality};
use crate::envelope::{ApiCode, ApiError};
use crate::ids::TrackId;
use crate::sdp;
use crate::state::AppState;

/// One session's subscribing side.
pub(super) struct Subscription {
    /// The SFU's ICE credentials, chosen with the first offer and kept (no ICE restart).
    local_ice: IceCredentials,
    /// The worker the client receives from: its room's, or a mirror's in a live room.
    worker: usize,
    transport: Option<TransportId>,
    /// The layout of the last offer the client answered.
    layout: sdp::OfferLayout,
    /// Raised for each offer (RFC 3264 §8).
    session_version: u64,
    /// The tracks the client receives, by track id, as of its last answer, with their
    /// consumers on the subscription's worker and the SSRC they are sent as.
    pub(super) receiving: HashMap<TrackId, (Mid, ConsumerId, u32)>,
    /// The mid each track was offered under; a new track always takes a new one.
    mids: HashMap<TrackId, Mid>,
    /// The payload types the session gives each format it is offered.
    payload_types: sdp::SessionPayloadTypes,
    next_mid: u32,
    pending: Option<PendingOffer>,
    /// The room's tracks changed while an offer was outstanding.
    stale: bool,
    /// A WHEP player's sections, fixed by its one offer; empty for a signalling client, whose
    /// sections follow the room through renegotiation.
    pub(super) slots: Vec<super::player::PlayerSlot>,
}

type Mid = sdp::Mid;

/// CPU loads this close count as equal when placing a subscriber.
const LOAD_BAND_PERCENT: f64 = 10.0;

/// An offer waiting for the client's answer.
struct PendingOffer {
    layout: sdp::OfferLayout,
    tracks: Vec<(PublishedTrack, Mid)>,
}

impl Subscription {
    /// A subscription with the SFU's ICE credentials; `transport` when it opened on the
    /// client's own offer (WHEP) rather than on its first answer.
    pub(super) fn new(local_ice: IceCredentials, worker: usize, transport: Option<TransportId>) -> Self {
        Subscription {
            local_ice,
            worker,
            transport,
            layout: sdp::OfferLayout::default(),
            session_version: 0,
            receiving: HashMap::new(),
            mids: HashMap::new(),
            payload_types: sdp::SessionPayloadTypes::default(),
            next_mid: 0,
            pending: None,
            stale: false,
            slots: Vec::new(),
        }
    }

    pub(super) fn transport(&self) -> Option<TransportId> {
        self.transport
    }

    pub(super) fn worker(&self) -> usize {
        self.worker
    }
}

/// The SSRC a track is sent to subscribers as: from its number, unique on the server (for
/// 16 million tracks at a time), so the sections of one bundle never collide whichever
/// workers their streams come from; its RTX stream's next to it.
pub(crate) fn subscriber_ssrc(track: &PublishedTrack) -> u32 {
    0x5500_0000 | (track.number & 0x00FF_FFFF) as u32
}

fn subscriber_rtx_ssrc(track: &PublishedTrack) -> u32 {
    0x5600_0000 | (track.number & 0x00FF_FFFF) as u32
}

impl Session<'_> {
    /// The client asks for everything the room publishes, now and later.
    pub(super) async fn subscribe(&mut self) -> Result<Vec<ServerEvent>, ApiError> {
        if self.subscription.is_some() {
            return Err(ApiError::request("this session subscribes already"));
        }
        let local_ice = IceCredentials::generate().map_err(|e| ApiError::system(format!("ICE credentials: {e}")))?;
        let worker = self.place_subscriber().await?;
        self.subscription = Some(Subscription::new(local_ice, worker, None));
        Ok(self.offer_if_changed().map_err(|e| self.drop_unopened(e))?.into_iter().collect())
    }

    /// The room's published tracks changed: the offer to send, if any. A failure is the
    /// client's `error` event; the subscription stays as it was.
    pub(super) fn tracks_changed(&mut self) -> Option<ServerEvent> {
        match self.offer_if_changed() {
            Ok(offer) => offer,
            Err(e) => Some(ServerEvent::error(&e)),
        }
    }

    /// A subscription that never got a transport is forgotten when its first offer fails,
    /// so the client may subscribe again.
    fn drop_unopened(&mut self, error: ApiError) -> ApiError {
        if self.subscription.as_ref().is_some_and(|s| s.transport.is_none()) {
            self.subscription = None;
        }
        error
    }

    /// Offers the room's current tracks unless the client already receives exactly them
    /// (or an offer is outstanding, or nothing is published).
    fn offer_if_changed(&mut self) -> Result<Option<ServerEvent>, ApiError> {
        let tracks = self.visible_tracks();
        let Some(subscription) = self.subscription.as_mut() else { return Ok(None) };
        let worker = subscription.worker;
        if subscription.pending.is_some() {
            subscription.stale = true;
            return Ok(None);
        }
        let current: HashSet<&TrackId> = tracks.iter().map(|t| &t.track_id).collect();
        let receiving: HashSet<&TrackId> = subscription.receiving.keys().collect();
        if tracks.is_empty() || current == receiving {
            return Ok(None);
        }
        let offered: Vec<(PublishedTrack, Mid)> = tracks
            .into_iter()
            .map(|track| {
                let mid = subscription
                    .mids
                    .entry(track.track_id.clone())
                    .or_insert_with(|| {
                        subscription.next_mid += 1;
                        Mid::new(format!("{}", subscription.next_mid - 1))
                    })
                    .clone();
                (track, mid)
            })
            .collect();
        let mut outgoing = Vec::with_capacity(offered.len());
        for (track, mid) in &offered {
            let mut section = outgoing_track(track, mid);
            section.codec = subscription
                .payload_types
                .number(&section.codec)
                .map_err(|e| ApiError::system(format!("cannot offer the room's streams: {e}")))?;
            outgoing.push(section);
        }
        let (address, fingerprint) =
            self.state.worker_endpoint(worker).ok_or_else(|| ApiError::code(ApiCode::NoWorker))?;
        let Some(subscription) = self.subscription.as_ref() else { return Ok(None) };
        let session_id = u64::from(worker as u32) << 32 | (self.id & 0xFFFF_FFFF);
        let no_caps = sdp::BitrateCaps { min_bps: None, max_bps: None };
        let local = self.local_parameters(
            session_id,
            subscription.session_version + 1,
            &subscription.local_ice,
            fingerprint,
            address.port(),
            no_caps,
        );
        let offer = sdp::offer(&local, &subscription.layout, &outgoing, &sdp::CodecPolicy::default())
            .map_err(|e| ApiError::system(format!("cannot offer the room's streams: {e}")))?;
        let described: Vec<OfferedTrack> = offered
            .iter()
            .map(|(track, mid)| OfferedTrack { mid: mid.clone(), track: track.info(), ssrc: subscriber_ssrc(track) })
            .collect();
        if let Some(subscription) = self.subscription.as_mut() {
            subscription.session_version += 1;
            subscription.pending = Some(PendingOffer { layout: offer.layout, tracks: offered });
        }
        Ok(Some(ServerEvent::Offer { sdp: offer.sdp, tracks: described }))
    }

    /// The client answered our offer: open its receiving transport (first answer) and a
    /// consumer per newly accepted stream; then offer again if the room changed meanwhile.
    pub(super) async fn accept_answer(&mut self, sdp: &str) -> Result<Vec<ServerEvent>, ApiError> {
        let subscription =
            self.subscription.as_mut().ok_or_else(|| ApiError::request("no offer is waiting for an answer"))?;
        let answer =
            sdp::RemoteDescription::parse(sdp).map_err(|e| ApiError::invalid(format!("answer refused: {e}")))?;
        let pending =
            subscription.pending.take().ok_or_else(|| ApiError::request("no offer is waiting for an answer"))?;
        let worker = subscription.worker;
        let transport = match self.subscription.as_ref().and_then(|s| s.transport) {
            Some(transport) => transport,
            None => self.open_transport(worker, &answer).await.inspect_err(|_| self.subscription = None)?,
        };
        let mut receiving = HashMap::new();
        for (track, mid) in pending.tracks {
            let Some(media) = answer.media.iter().find(|m| m.mid == mid && !m.rejected) else { continue };
            let already = self.subscription.as_ref().and_then(|s| s.receiving.get(&track.track_id).map(|&(_, c, _)| c));
            let consumer = match already {
                Some(consumer) => Some(consumer),
                None => {
                    let ssrcs = (subscriber_ssrc(&track), subscriber_rtx_ssrc(&track));
                    self.add_consumer(worker, transport, &track, media, ssrcs).await?
                }
            };
            if let Some(consumer) = consumer {
                receiving.insert(track.track_id.clone(), (mid, consumer, subscriber_ssrc(&track)));
            }
        }
        // Streams no longer offered whose producers live on (a separated room's) stop here;
        // those whose publisher left went with their producer (then this is refused).
        let dropped: Vec<u32> = self
            .subscription
            .as_ref()
            .map(|s| {
                s.receiving.iter().filter(|(t, _)| !receiving.contains_key(*t)).map(|(_, (_, _, ssrc))| *ssrc).collect()
            })
            .unwrap_or_default();
        for ssrc in dropped {
            let _ = self.state.request_worker(worker, Command::RemoveConsumer { transport, ssrc }).await;
        }
        let Some(subscription) = self.subscription.as_mut() else { return Ok(Vec::new()) };
        subscription.receiving = receiving;
        subscription.layout = pending.layout;
        let mut events = vec![ServerEvent::Subscribed];
        if std::mem::take(&mut subscription.stale) {
            events.extend(self.tracks_changed());
        }
        Ok(events)
    }

    /// The transport the client receives on, with the credentials its first answer brings.
    async fn open_transport(
        &mut self,
        worker: usize,
        answer: &sdp::RemoteDescription,
    ) -> Result<TransportId, ApiError> {
        let local_ice = self.subscription.as_ref().map(|s| s.local_ice.clone());
        let (created, _) = self.create_transport(worker, local_ice, answer, "answer").await?;
        if let Some(subscription) = self.subscription.as_mut() {
            subscription.transport = Some(created.transport);
        }
        let numbered = answer.media.iter().flat_map(|m| &m.extmaps).find(|e| e.uri == sdp::TRANSPORT_CC_URI);
        if let Some(extension_id) = numbered.and_then(|e| u8::try_from(e.id).ok()) {
            self.estimate_bandwidth(worker, created.transport, extension_id).await?;
        }
        Ok(created.transport)
    }

    /// Has the worker estimate the bandwidth toward the client receiving on `transport`,
    /// which numbers its feedback by header extension `extension_id`, and fit what it is sent
    /// to it. Probing stops at [`ESTIMATE_CAP_STREAMS`] times the room's `maxBitrate`.
    pub(super) async fn estimate_bandwidth(
        &self,
        worker: usize,
        transport: TransportId,
        extension_id: u8,
    ) -> Result<(), ApiError> {
        let max_bitrate = self.state.read(|reg| reg.room(&self.room).map(|r| r.max_bitrate)).unwrap_or(0);
        let max_bps = max_bitrate.max(MIN_ESTIMATE_CAP_BPS).saturating_mul(ESTIMATE_CAP_STREAMS);
        let command = Command::EnableBandwidthEstimation { transport, extension_id, max_bps };
        match self.state.request_worker(worker, command).await? {
            Reply::Done | Reply::Refused(_) => Ok(()),
            other => Err(ApiError::new(ApiCode::RtcFailed, format!("estimation refused: {other:?}"))),
        }
    }

    /// Sends `track` to the client as its description `media` accepted it (the format's
    /// payload type and RTX payload type, the header extension ids), as the SSRC and RTX SSRC
    /// `ssrcs`, from the subscription's worker (imported there when it is published on
    /// another); `None` when the publisher left in between (its stream is simply not sent) or
    /// `media` has no format of it. A track paused for this room's audience starts paused.
    pub(super) async fn add_consumer(
        &self,
        worker: usize,
        transport: TransportId,
        track: &PublishedTrack,
        media: &sdp::RemoteMedia,
        (ssrc, rtx_ssrc): (u32, u32),
    ) -> Result<Option<ConsumerId>, ApiError> {
        // The client's number for the published format: the SFU's offer gave it the
        // publisher's, a player's offer its own.
        let Some(codec) = media.codecs.iter().find(|c| c.same_format(&track.codec)) else { return Ok(None) };
        let format = ConsumerFormat::new(codec.payload_type.0, extension_map(&track.extensions, media))
            .map_err(|e| ApiError::invalid(format!("payload type {}: {e}", codec.payload_type.0)))?;
        let Some(producer) = self.producer_on(worker, track).await? else { return Ok(None) };
        let consumer = match self
            .state
            .request_worker(worker, Command::AddConsumer { producer, transport, ssrc, format })
            .await?
        {
            Reply::ConsumerAdded(consumer) => consumer,
            Reply::Refused(_) => return Ok(None),
            other => return Err(ApiError::new(ApiCode::RtcFailed, format!("consumer refused: {other:?}"))),
        };
        if let Some(payload_type) = codec.rtx_payload_type {
            let rtx = RtxStream { ssrc: rtx_ssrc, payload_type: payload_type.0 };
            self.state.request_worker(worker, Command::EnableRtx { consumer, rtx }).await?;
        }
        choose_among_layers(self.state, worker, track, consumer).await?;
        if self.state.hub().is_paused(&self.room, &track.track_id) {
            self.pause_consumer(worker, consumer, true).await?;
        }
        Ok(Some(consumer))
    }

    async fn producer_on(&self, worker: usize, track: &PublishedTrack) -> Result<Option<ProducerId>, ApiError> {
        producer_on(self.state, worker, track).await
    }

    async fn pause_consumer(&self, worker: usize, consumer: ConsumerId, paused: bool) -> Result<(), ApiError> {
        match self.state.request_worker(worker, Command::PauseConsumer { consumer, paused }).await? {
            Reply::Done | Reply::Refused(_) => Ok(()),
            other => Err(ApiError::new(ApiCode::RtcFailed, format!("pause refused: {other:?}"))),
        }
    }

    /// Pauses or resumes the client's consumer of `track_id`, if it receives that track.
    pub(super) async fn set_track_paused(&self, track_id: &TrackId, paused: bool) {
        let Some(subscription) = self.subscription.as_ref() else { return };
        if let Some(&(_, consumer, _)) = subscription.receiving.get(track_id) {
            let _ = self.pause_consumer(subscription.worker, consumer, paused).await;
        }
    }

    /// Sends the client at most `quality` and `frame_rate` of the simulcast track `track_id`
    /// it receives, before its other video when `pinned`; refused (10002) for a track it does
    /// not receive.
    pub(super) async fn set_video_quality(
        &self,
        track_id: &TrackId,
        (quality, frame_rate): (VideoQuality, FrameRate),
        pinned: bool,
    ) -> Result<(), ApiError> {
        let receiving = self.subscription.as_ref().and_then(|s| Some((s.worker, s.receiving.get(track_id)?.1)));
        let Some((worker, consumer)) = receiving else {
            return Err(ApiError::invalid(format!("this session receives no track {track_id}")));
        };
        match self
            .state
            .request_worker(
                worker,
                Command::PreferLayer {
                    consumer,
                    layer: quality.layer(),
                    max_temporal_layer: frame_rate.max_temporal_layer(),
                    pinned,
                },
            )
            .await?
        {
            // A track without layers has one quality.
            Reply::Done | Reply::Refused(_) => Ok(()),
            other => Err(ApiError::new(ApiCode::RtcFailed, format!("layer refused: {other:?}"))),
        }
    }

    /// The worker a new subscriber receives from. A conversation room has one. A live
    /// room's audience goes to the least loaded worker serving it (in bands of
    /// [`LOAD_BAND_PERCENT`]; the fewest subscribers placed breaks ties); when even that one is at `mirror_load_percent`, a mirror opens on
    /// the least loaded other worker and takes it.
    pub(super) async fn place_subscriber(&self) -> Result<usize, ApiError> {
        let (origin, mirrors, live) =
            self.state.read(|reg| reg.room(&self.room).map(|r| (r.worker, r.mirrors.clone(), r.is_live())))?;
        let worker = if live {
            let cpu = self.state.loads().cpu();
            let load = |w: usize| cpu.get(w).copied().unwrap_or(0.0);
            let hub = self.state.hub();
            // Loads within one band count as equal (a second's CPU sample is noisy at low
            // load), so the subscribers already placed decide among them.
            let least = std::iter::once(origin)
                .chain(mirrors)
                .min_by_key(|&w| ((load(w) / LOAD_BAND_PERCENT).floor() as i64, hub.placed(&self.room, w)))
                .unwrap_or(origin);
            let threshold = self.state.settings().mirror_load_percent;
            let room = self.room.clone();
            if threshold > 0.0 && load(least) >= threshold {
                self.state.write(move |reg| reg.add_mirror(&room, None, &cpu)).await.unwrap_or(least)
            } else {
                least
            }
        } else {
            origin
        };
        self.state.hub().place(&self.room, worker, true);
        Ok(worker)
    }
}

/// A subscriber's estimate is bounded by what this many streams at the room's `maxBitrate`
/// take: a grid of a few full-size videos, no more.
const ESTIMATE_CAP_STREAMS: u64 = 4;

/// The room's `maxBitrate` counts for the estimate's bound as at least this.
const MIN_ESTIMATE_CAP_BPS: u64 = 1_000_000;

/// The producer that carries `track` on `worker`: its own there, else its import,
/// exported from its worker and imported on first use (both are idempotent, so
/// subscribers racing for the same import agree). `None` when the track has ended.
async fn producer_on(state: &AppState, worker: usize, track: &PublishedTrack) -> Result<Option<ProducerId>, ApiError> {
    layer_on(state, worker, track, track.producer).await
}

/// [`producer_on`] for one of the track's producers (`origin`, a simulcast layer's).
async fn layer_on(
    state: &AppState,
    worker: usize,
    track: &PublishedTrack,
    origin: ProducerId,
) -> Result<Option<ProducerId>, ApiError> {
    if track.worker == worker {
        return Ok(Some(origin));
    }
    if let Some(imported) = state.hub().import(&track.track_id, worker, origin) {
        return Ok(Some(imported));
    }
    let (to_worker, from_worker) = (WorkerIndex(worker), WorkerIndex(track.worker));
    let export = Command::ExportProducer { producer: origin, to_worker };
    let stream = match state.request_worker(track.worker, export).await? {
        Reply::Exported(stream) => stream,
        Reply::Refused(_) => return Ok(None),
        other => return Err(ApiError::new(ApiCode::RtcFailed, format!("export refused: {other:?}"))),
    };
    let kind = track.kind;
    let clock_rate = track.codec.clock_rate;
    let imported =
        match state.request_worker(worker, Command::ImportProducer { from_worker, stream, kind, clock_rate }).await? {
            Reply::ProducerAdded(imported) => imported,
            Reply::Refused(_) => return Ok(None),
            other => return Err(ApiError::new(ApiCode::RtcFailed, format!("import refused: {other:?}"))),
        };
    state.hub().record_import(&track.room, &track.track_id, (worker, origin), imported);
    if track.layers.len() > 1 {
        // Who receives an imported layer counts for whether its publisher sends it.
        state.request_worker(worker, Command::WatchDemand { producer: imported }).await?;
    }
    Ok(Some(imported))
}

/// Lets `consumer` (on `worker`, of `track`'s highest layer) choose among the track's
/// simulcast layers, each imported there when published on another worker; nothing for a
/// track without layers, or whose codec has no key frames the dataplane knows.
async fn choose_among_layers(
    state: &AppState,
    worker: usize,
    track: &PublishedTrack,
    consumer: ConsumerId,
) -> Result<(), ApiError> {
    let Some(format) = VideoFormat::from_encoding_name(&track.codec.name).filter(|_| track.layers.len() > 1) else {
        return Ok(());
    };
    let mut layers = Vec::with_capacity(track.layers.len());
    for &layer in &track.layers {
        let Some(producer) = layer_on(state, worker, track, layer).await? else { return Ok(()) };
        layers.push(producer);
    }
    match state.request_worker(worker, Command::SetLayers { consumer, layers, format }).await? {
        Reply::Done | Reply::Refused(_) => Ok(()),
        other => Err(ApiError::new(ApiCode::RtcFailed, format!("layers refused: {other:?}"))),
    }
}

/// Sends `track` on `transport` of `worker` as `ssrc` in `format` (a node link's consumer):
/// a consumer of its producer there, imported first when it is published on another worker;
/// `None` when the track has ended.
pub(crate) async fn consume_on(
    state: &AppState,
    worker: usize,
    transport: TransportId,
    track: &PublishedTrack,
    ssrc: u32,
    format: ConsumerFormat,
) -> Result<Option<ConsumerId>, ApiError> {
    let Some(producer) = producer_on(state, worker, track).await? else { return Ok(None) };
    match state.request_worker(worker, Command::AddConsumer { producer, transport, ssrc, format }).await? {
        Reply::ConsumerAdded(consumer) => Ok(Some(consumer)),
        Reply::Refused(_) => Ok(None),
        other => Err(ApiError::new(ApiCode::RtcFailed, format!("consumer refused: {other:?}"))),
    }
}

/// The section offering `track` under `mid`, with RTX when its publisher negotiated it.
pub(super) fn outgoing_track(track: &PublishedTrack, mid: &Mid) -> sdp::OutgoingTrack {
    let rtx_ssrc = track.codec.rtx_payload_type.map(|_| sdp::Ssrc(subscriber_rtx_ssrc(track)));
    // What the SFU asked of the publisher (`x-google-*` bitrates) is no property of the
    // stream: left out, so that publishers with other caps still share a payload type.
    let fmtp = track.codec.fmtp.split(';').filter(|p| !p.is_empty() && !p.starts_with("x-google-"));
    let codec = sdp::Codec { fmtp: fmtp.collect::<Vec<_>>().join(";"), ..track.codec.clone() };
    sdp::OutgoingTrack {
        mid: mid.clone(),
        kind: track.kind.into(),
        codec,
        ssrc: sdp::Ssrc(subscriber_ssrc(track)),
        rtx_ssrc,
        stream_id: format!("s{}", track.session),
        track_id: track.track_id.to_string(),
        cname: format!("c{}", track.session),
    }
}

/// How the publisher's header extensions reach this subscriber: those both sides
/// negotiated under the subscriber's ids, the rest blanked. The mid travels in the
/// subscriber's own numbering of sections, which the publisher's value is not, rids name the
/// publisher's layers, and the transport-wide sequence number counts the publisher's
/// transport, not the subscriber's, so these are always blanked.
fn extension_map(publisher: &sdp::HeaderExtensions, answer: &sdp::RemoteMedia) -> ExtensionIdMap {
    let mut map = ExtensionIdMap::blank_all();
    let subscriber_id = |uri: &str| answer.extmaps.iter().find(|e| e.uri == uri).and_then(|e| u8::try_from(e.id).ok());
    for (from, uri) in [
        (publisher.abs_send_time, sdp::ABS_SEND_TIME_URI),
        (publisher.audio_level, sdp::AUDIO_LEVEL_URI),
        (publisher.video_orientation, sdp::VIDEO_ORIENTATION_URI),
    ] {
        if let (Some(from), Some(to)) = (from, subscriber_id(uri)) {
            // Ids outside the one-byte range are not forwarded: blanked like the rest.
            let _ = map.map(from, to);
        }
    }
    map
}
