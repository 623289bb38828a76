//! Who is connected where: one bounded outgoing queue per client session, by room and peer,
//! so REST calls (messages, kicks, room deletion) reach exactly the right clients; and what
//! the sessions share: the tracks published, where they are imported and paused, the
//! subscribers placed per worker, the owners of open transports, the WHIP and WHEP sessions.
//!
//! Rules: all of it is one `HubState` under one lock, so each [`Hub`] operation takes the
//! lock once and sees and leaves the state whole. The lock is never held across an await:
//! every operation is synchronous and returns owned values. A `to` filter of [`Hub::send`]
//! runs under the lock, so it must not call the hub. A queue that is full is a client that
//! does not read; it is closed rather than waited for, so one slow client never holds up a
//! REST call or other clients.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{Notify, mpsc, oneshot};

use uprtcd_dataplane::engine::CloseReason;
use uprtcd_dataplane::router::{MediaKind, ProducerId, TransportId};

use super::dynacast::{LayerSwitch, SwitchDecision};
use super::protocol::{ServerEvent, TrackInfo};
use crate::ids::{PeerId, RoomId, TrackId};
use crate::sdp::{Codec, HeaderExtensions};

/// Messages a session holds for its client at most. A live room's master hears of every
/// viewer that joins: an audience connecting by the thousand, while the control plane's
/// cores are busy with it, must not make the master's session look stalled. The bound
/// costs nothing until used.
pub const SESSION_QUEUE: usize = 1024;

/// What a session is told to do.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Send this event to the client.
    Event(ServerEvent),
    /// Send this event, then close the connection.
    Close(ServerEvent),
    /// Send this event (`track-added`, `track-removed`, `merge-changed`): the tracks the
    /// session may see changed, so a subscribing session renegotiates.
    Tracks(ServerEvent),
    /// Stop publishing (a co-host taken back to the audience), then send this event.
    Unpublish(ServerEvent),
    /// Pause or resume the track with this id for the session's client (a merged track
    /// paused for this room's audience), then report on `done`; nothing is sent.
    PauseTrack { track_id: TrackId, paused: bool, done: mpsc::Sender<()> },
    /// The worker removed this transport of the session (its client vanished, or its
    /// handshake failed): what went over it is gone, and the room hears of it.
    TransportClosed { transport: TransportId, reason: CloseReason },
    /// Another connection claims the session's peer: report on `alive` once the client
    /// shows it is there (it answers a ping), or stay silent and be replaced.
    Probe { alive: mpsc::Sender<()> },
}

/// Stops a WHIP or WHEP session; the sender it carries fires once the session has left.
pub type HttpStop = oneshot::Sender<oneshot::Sender<()>>;

/// One session's queue, with an id so that a stale session cannot detach its successor.
#[derive(Debug)]
struct Session {
    id: u64,
    queue: mpsc::Sender<Outgoing>,
}

/// A stream a client publishes in a room, as subscribers are offered it.
#[derive(Debug, Clone)]
pub struct PublishedTrack {
    /// The id clients see in `track-added`, `track-removed` and `offer`: unique for the
    /// server's lifetime, assigned by [`Hub::add_tracks`].
    pub track_id: TrackId,
    /// The number in the track id; it also makes the SSRC subscribers receive it as.
    pub number: u64,
    /// The room it is published in.
    pub room: RoomId,
    pub publisher: PeerId,
    /// The publisher's session, shared by the tracks it publishes (their msid stream).
    pub session: u64,
    /// The worker the producer lives on.
    pub worker: usize,
    /// The stream: its highest simulcast layer when it has layers.
    pub producer: ProducerId,
    /// Its simulcast layers on `worker`, lowest first (`producer` the last); empty without
    /// simulcast. Each subscriber receives one of them.
    pub layers: Vec<ProducerId>,
    pub kind: MediaKind,
    pub codec: Codec,
    /// The header extension ids the publisher negotiated.
    pub extensions: HeaderExtensions,
}

impl PublishedTrack {
    /// How `joined`, `track-added` and `offer` describe it.
    pub fn info(&self) -> TrackInfo {
        TrackInfo { peer: self.publisher.clone(), track_id: self.track_id.clone(), kind: self.kind }
    }
}

/// The hub: its state, under one lock.
#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<HubState>,
    /// Woken whenever a session has ended and left its room, for a connection waiting to
    /// replace one.
    ended: Notify,
}

/// Everything the hub knows. Its methods are the hub's operations, each run under the
/// hub's lock.
#[derive(Debug, Default)]
struct HubState {
    /// The sessions of each room, by peer.
    rooms: HashMap<RoomId, HashMap<PeerId, Session>>,
    /// What each room's clients publish, in publishing order.
    tracks: HashMap<RoomId, Vec<PublishedTrack>>,
    /// The id of the next session attached.
    next_session: u64,
    /// The number of the next track published.
    next_track: u64,
    /// WHIP and WHEP sessions by resource id: their room, and how to stop them.
    http_sessions: HashMap<String, (RoomId, HttpStop)>,
    /// Where a track is relayed to: its imported producers on other workers, by track id,
    /// worker and the producer imported (a simulcast layer's, or the track's). Track ids are
    /// never reused, so an entry cannot outlive its stream's name.
    imports: HashMap<(TrackId, usize, ProducerId), ProducerId>,
    /// Merged tracks paused for a room's audience: (the audience's room, track id).
    paused: HashSet<(RoomId, TrackId)>,
    /// Subscribers placed per room and worker, to spread an audience over its workers.
    placements: HashMap<(RoomId, usize), usize>,
    /// The session each open transport belongs to, by worker and transport: who is told
    /// when the worker removes it.
    transports: HashMap<(usize, TransportId), TransportOwner>,
    /// Transports not connected yet (or still being opened), by the client address that
    /// asked for them: a stranger's offers that never do ICE are capped per address.
    pending: HashMap<IpAddr, usize>,
    /// The number of each room with tracks whose dominant speaker its worker follows, and
    /// the next number to give.
    speaker_groups: HashMap<RoomId, u32>,
    next_speaker_group: u32,
    /// Whether some consumer of a worker could receive a layer producer of it, as the worker
    /// last reported, by worker and producer (the publisher's own layers and imported ones).
    demand: HashMap<(usize, ProducerId), bool>,
    /// The simulcast tracks whose layers are paused at their publisher while nobody wants
    /// them (dynacast), by track id.
    layer_switches: HashMap<TrackId, TrackLayers>,
}

/// A simulcast track whose publisher is told which layers to send.
#[derive(Debug)]
struct TrackLayers {
    /// The publisher's section of it, and its layers' rids, lowest first.
    mid: String,
    rids: Vec<String>,
    switch: LayerSwitch,
}

/// Who hears of a track's layers: its room and publisher, the section and rids to name.
pub type LayersAddressee = (RoomId, PeerId, String, Vec<String>);

/// The session that opened a transport.
#[derive(Debug, Clone)]
struct TransportOwner {
    room: RoomId,
    peer: PeerId,
    session: u64,
    /// The client address it counts against while it is not connected.
    source: IpAddr,
    connected: bool,
}

impl Hub {
    /// The hub's state, for one operation. Nothing under the lock panics (no indexing, no
    /// unwrap; a caller's `to` filter compares ids): a poisoned lock still guards whole
    /// state.
    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a session of `peer` in `room`; returns its id and its queue's receiver.
    pub fn attach(&self, room: &RoomId, peer: &PeerId) -> (u64, mpsc::Receiver<Outgoing>) {
        self.state().attach(room, peer)
    }

    /// Forgets session `id` of `peer` (if it is still the current one). False when a newer
    /// session of the peer holds its place: then the peer's presence is that session's.
    pub fn detach(&self, room: &RoomId, peer: &PeerId, id: u64) -> bool {
        self.state().detach(room, peer, id)
    }

    /// Tells whoever waits in [`Hub::session_ended`] that a session ended.
    pub fn end_session(&self) {
        self.ended.notify_waiters();
    }

    /// Waits until the next session ends, or `deadline`; false at the deadline. `ready` is
    /// checked once the wait is armed, so that an end between the two is not missed: true
    /// at once when it holds.
    pub async fn session_ended(&self, ready: impl Fn() -> bool, deadline: tokio::time::Instant) -> bool {
        let ended = self.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        ready() || tokio::time::timeout_at(deadline, ended).await.is_ok()
    }

    /// The queue of `peer`'s current session in `room`, to probe it.
    pub fn queue_of(&self, room: &RoomId, peer: &PeerId) -> Option<mpsc::Sender<Outgoing>> {
        self.state().queue_of(room, peer)
    }

    /// Transport `transport` on `worker` was opened by session `session` of `peer`.
    /// Counts a transport about to be opened for a client at `source` against the address's
    /// cap of `limit` transports not connected yet; false (nothing counted) at the cap. The
    /// count goes with [`Hub::own_transport`], or back with [`Hub::release_pending`].
    pub fn reserve_pending(&self, source: IpAddr, limit: usize) -> bool {
        self.state().reserve_pending(source, limit)
    }

    /// A reserved transport was not opened after all.
    pub fn release_pending(&self, source: IpAddr) {
        self.state().release_pending(source);
    }

    /// Transport `transport` on `worker` was opened by session `session` of `peer`, for a
    /// client at `source` (whose reservation it takes over until it connects or closes).
    pub fn own_transport(&self, worker: usize, transport: TransportId, owner: (&RoomId, &PeerId, u64), source: IpAddr) {
        self.state().own_transport(worker, transport, owner, source);
    }

    /// The worker reports `transport` connected: it no longer counts as pending.
    pub fn transport_connected(&self, worker: usize, transport: TransportId) {
        self.state().transport_connected(worker, transport);
    }

    /// The room and peer of the session that opened `transport` on `worker`.
    pub fn transport_owner(&self, worker: usize, transport: TransportId) -> Option<(RoomId, PeerId)> {
        self.state().transports.get(&(worker, transport)).map(|o| (o.room.clone(), o.peer.clone()))
    }

    /// Transports not connected yet, over every address (a gauge for `/metrics`).
    pub fn pending_transports(&self) -> usize {
        self.state().pending.values().sum()
    }

    /// The worker removed `transport`: forgets its owner and, unless the owner asked for it
    /// (`Requested`), tells the owner's session. False when no live session owned it.
    pub fn transport_closed(&self, worker: usize, transport: TransportId, reason: CloseReason) -> bool {
        self.state().transport_closed(worker, transport, reason)
    }

    /// Open transports with a known owner (a gauge for `/metrics`).
    pub fn owned_transports(&self) -> usize {
        self.state().owned_transports()
    }

    /// Forgets the import `producer` on `worker`: its stream ended at its origin.
    pub fn import_ended(&self, worker: usize, producer: ProducerId) {
        self.state().import_ended(worker, producer);
    }

    /// The number `room`'s dominant speaker is followed under by its worker, the same for
    /// the room's lifetime in this process.
    pub fn speaker_group(&self, room: &RoomId) -> u32 {
        let mut state = self.state();
        if let Some(&group) = state.speaker_groups.get(room) {
            return group;
        }
        let group = state.next_speaker_group;
        state.next_speaker_group = group.wrapping_add(1);
        state.speaker_groups.insert(room.clone(), group);
        group
    }

    /// The track `producer` of `worker` publishes, if it is one of a room's.
    pub fn track_of(&self, worker: usize, producer: ProducerId) -> Option<PublishedTrack> {
        let state = self.state();
        state.tracks.values().flatten().find(|t| t.worker == worker && t.producer == producer).cloned()
    }

    /// Records a WHIP or WHEP session of `room` under `resource`, the last path segment of
    /// its location. `stop` ends it and reports once it has left the room.
    pub fn add_http_session(&self, resource: &str, room: &RoomId, stop: HttpStop) {
        self.state().add_http_session(resource, room, stop);
    }

    /// Takes the session at `resource` if it belongs to `room`, to stop it.
    pub fn take_http_session(&self, resource: &str, room: &RoomId) -> Option<HttpStop> {
        self.state().take_http_session(resource, room)
    }

    /// Records streams a client of `room` now publishes, giving each its track id; returns
    /// them as recorded.
    pub fn add_tracks(&self, room: &RoomId, added: Vec<PublishedTrack>) -> Vec<PublishedTrack> {
        self.state().add_tracks(room, added)
    }

    /// What the clients of `room` publish, in publishing order.
    pub fn tracks_of(&self, room: &RoomId) -> Vec<PublishedTrack> {
        self.state().tracks.get(room).cloned().unwrap_or_default()
    }

    /// Forgets what `publisher` published in `room` (its session ended), with where it was
    /// imported and paused; returns it.
    pub fn remove_tracks(&self, room: &RoomId, publisher: &PeerId) -> Vec<PublishedTrack> {
        self.state().remove_tracks(room, publisher)
    }

    /// Forgets one track of `room` (a mirrored stream the origin no longer sends), with
    /// where it was imported and paused.
    pub fn remove_track(&self, room: &RoomId, track_id: &TrackId) {
        self.state().remove_tracks_where(room, |t| &t.track_id == track_id);
    }

    /// Pauses `track_id`'s layers (`rids`, lowest first, in the publisher's section `mid`) at
    /// its publisher while nobody wants them ([`super::dynacast`]).
    pub fn switch_layers(&self, track_id: &TrackId, mid: String, rids: Vec<String>) {
        let switch = LayerSwitch::new(rids.len());
        self.state().layer_switches.insert(track_id.clone(), TrackLayers { mid, rids, switch });
    }

    /// Records whether some consumer of `worker` could receive `producer`; the track whose
    /// layer it carries, when its layers are switched.
    pub fn set_demand(&self, worker: usize, producer: ProducerId, wanted: bool) -> Option<TrackId> {
        let mut state = self.state();
        state.demand.insert((worker, producer), wanted);
        let own = state.tracks.values().flatten().find(|t| t.worker == worker && t.layers.contains(&producer));
        let track_id = match own {
            Some(track) => track.track_id.clone(),
            None => state.imports.iter().find(|((_, on, _), p)| *on == worker && **p == producer)?.0.0.clone(),
        };
        state.layer_switches.contains_key(&track_id).then_some(track_id)
    }

    /// Reviews which of `track_id`'s layers its publisher should send at `now`, given what
    /// the workers want; with whom to tell when that changed.
    pub fn review_layers(&self, track_id: &TrackId, now: Instant) -> Option<(SwitchDecision, Option<LayersAddressee>)> {
        let mut state = self.state();
        let state = &mut *state;
        let track = state.tracks.values().flatten().find(|t| &t.track_id == track_id)?;
        let demanded = |worker: usize, producer: ProducerId| state.demand.get(&(worker, producer)) == Some(&true);
        let wanted: Vec<bool> = track
            .layers
            .iter()
            .map(|&origin| {
                demanded(track.worker, origin)
                    || state
                        .imports
                        .iter()
                        .any(|((t, on, o), &imported)| t == track_id && *o == origin && demanded(*on, imported))
            })
            .collect();
        let layers = state.layer_switches.get_mut(track_id)?;
        let decision = layers.switch.review(now, &wanted);
        let addressee = decision
            .send
            .is_some()
            .then(|| (track.room.clone(), track.publisher.clone(), layers.mid.clone(), layers.rids.clone()));
        Some((decision, addressee))
    }

    /// The producer that carries `track_id`'s `origin` producer on `worker`, if it was
    /// imported there.
    pub fn import(&self, track_id: &TrackId, worker: usize, origin: ProducerId) -> Option<ProducerId> {
        self.state().imports.get(&(track_id.clone(), worker, origin)).copied()
    }

    /// Records that `track_id`'s `origin` producer is imported on `worker` as `producer`,
    /// unless the track went away meanwhile (then the import is no one's and ends with its
    /// stream).
    pub fn record_import(
        &self,
        room: &RoomId,
        track_id: &TrackId,
        (worker, origin): (usize, ProducerId),
        producer: ProducerId,
    ) {
        let mut state = self.state();
        if state.publishes(std::slice::from_ref(room), track_id) {
            state.imports.insert((track_id.clone(), worker, origin), producer);
        }
    }

    /// Whether some room of `rooms` publishes `track_id`.
    pub fn publishes(&self, rooms: &[RoomId], track_id: &TrackId) -> bool {
        self.state().publishes(rooms, track_id)
    }

    /// Pauses or resumes `track_id` for the audience of `room`.
    pub fn set_paused(&self, room: &RoomId, track_id: &TrackId, paused: bool) {
        self.state().set_paused(room, track_id, paused);
    }

    pub fn is_paused(&self, room: &RoomId, track_id: &TrackId) -> bool {
        self.state().is_paused(room, track_id)
    }

    /// How many subscribers of `room` were placed on `worker` and are still there.
    pub fn placed(&self, room: &RoomId, worker: usize) -> usize {
        self.state().placed(room, worker)
    }

    /// A subscriber of `room` was placed on `worker` (`joined`), or left it.
    pub fn place(&self, room: &RoomId, worker: usize, joined: bool) {
        self.state().place(room, worker, joined);
    }

    /// The streams of `rooms` (a room and its merge group) that peers other than
    /// `subscriber` publish, room by room in the order given.
    pub fn tracks_for(&self, rooms: &[RoomId], subscriber: &PeerId) -> Vec<PublishedTrack> {
        self.state().tracks_for(rooms, subscriber)
    }

    /// Queues `message` for the sessions of `room` whose peer `to` accepts; returns how many
    /// took it. A session whose queue is full is dropped from the hub: its queue ends once
    /// drained, and the session closes its connection. `to` runs under the hub's lock.
    pub fn send(&self, room: &RoomId, to: impl Fn(&PeerId) -> bool, message: &Outgoing) -> usize {
        self.state().send(room, to, message)
    }

    /// [`Hub::send`] to the sessions of `to` only, looked up one by one: what costs a message
    /// to a live room's few members does not grow with its audience.
    pub fn send_to(&self, room: &RoomId, to: &[PeerId], message: &Outgoing) -> usize {
        self.state().send_to(room, to, message)
    }
}

impl HubState {
    fn attach(&mut self, room: &RoomId, peer: &PeerId) -> (u64, mpsc::Receiver<Outgoing>) {
        let (queue, receiver) = mpsc::channel(SESSION_QUEUE);
        let id = self.next_session;
        self.next_session += 1;
        self.rooms.entry(room.clone()).or_default().insert(peer.clone(), Session { id, queue });
        (id, receiver)
    }

    fn detach(&mut self, room: &RoomId, peer: &PeerId, id: u64) -> bool {
        let Some(peers) = self.rooms.get_mut(room) else { return true };
        let newer = match peers.get(peer) {
            Some(session) if session.id == id => {
                peers.remove(peer);
                false
            }
            Some(_) => true,
            None => false,
        };
        if peers.is_empty() {
            self.rooms.remove(room);
        }
        !newer
    }

    fn queue_of(&self, room: &RoomId, peer: &PeerId) -> Option<mpsc::Sender<Outgoing>> {
        self.rooms.get(room)?.get(peer).map(|session| session.queue.clone())
    }

    fn reserve_pending(&mut self, source: IpAddr, limit: usize) -> bool {
        let count = self.pending.entry(source).or_default();
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    fn release_pending(&mut self, source: IpAddr) {
        if let Some(count) = self.pending.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.pending.remove(&source);
            }
        }
    }

    fn own_transport(&mut self, worker: usize, transport: TransportId, owner: (&RoomId, &PeerId, u64), source: IpAddr) {
        let (room, peer, session) = owner;
        let owner = TransportOwner { room: room.clone(), peer: peer.clone(), session, source, connected: false };
        self.transports.insert((worker, transport), owner);
    }

    fn transport_connected(&mut self, worker: usize, transport: TransportId) {
        let Some(owner) = self.transports.get_mut(&(worker, transport)) else { return };
        if !std::mem::replace(&mut owner.connected, true) {
            let source = owner.source;
            self.release_pending(source);
        }
    }

    fn transport_closed(&mut self, worker: usize, transport: TransportId, reason: CloseReason) -> bool {
        let Some(owner) = self.transports.remove(&(worker, transport)) else { return false };
        if !owner.connected {
            self.release_pending(owner.source);
        }
        if reason == CloseReason::Requested {
            return false;
        }
        let Some(peers) = self.rooms.get_mut(&owner.room) else { return false };
        let Some(session) = peers.get(&owner.peer).filter(|s| s.id == owner.session) else { return false };
        if session.queue.try_send(Outgoing::TransportClosed { transport, reason }).is_err() {
            close_stalled(&owner.room, peers, vec![owner.peer]);
        }
        true
    }

    fn owned_transports(&self) -> usize {
        self.transports.len()
    }

    fn import_ended(&mut self, worker: usize, producer: ProducerId) {
        self.imports.retain(|(_, on, _), imported| !(*on == worker && *imported == producer));
        self.demand.remove(&(worker, producer));
    }

    fn add_http_session(&mut self, resource: &str, room: &RoomId, stop: HttpStop) {
        self.http_sessions.insert(resource.to_owned(), (room.clone(), stop));
    }

    fn take_http_session(&mut self, resource: &str, room: &RoomId) -> Option<HttpStop> {
        if self.http_sessions.get(resource).is_some_and(|(owner, _)| owner == room) {
            return self.http_sessions.remove(resource).map(|(_, stop)| stop);
        }
        None
    }

    fn add_tracks(&mut self, room: &RoomId, mut added: Vec<PublishedTrack>) -> Vec<PublishedTrack> {
        for track in &mut added {
            track.number = self.next_track;
            track.track_id = TrackId::numbered(track.number);
            self.next_track += 1;
        }
        self.tracks.entry(room.clone()).or_default().extend(added.iter().cloned());
        added
    }

    fn remove_tracks(&mut self, room: &RoomId, publisher: &PeerId) -> Vec<PublishedTrack> {
        self.remove_tracks_where(room, |t| &t.publisher == publisher)
    }

    /// Forgets the tracks of `room` that `gone` picks, with where they were imported and
    /// paused, and their layers' demand; returns them.
    fn remove_tracks_where(&mut self, room: &RoomId, gone: impl Fn(&PublishedTrack) -> bool) -> Vec<PublishedTrack> {
        let Some(list) = self.tracks.get_mut(room) else { return Vec::new() };
        let (removed, kept): (Vec<PublishedTrack>, _) = std::mem::take(list).into_iter().partition(|t| gone(t));
        *list = kept;
        if list.is_empty() {
            self.tracks.remove(room);
            self.speaker_groups.remove(room);
        }
        let gone: HashSet<&TrackId> = removed.iter().map(|t| &t.track_id).collect();
        let demand = &mut self.demand;
        self.imports.retain(|(track, on, _), imported| {
            let keep = !gone.contains(track);
            if !keep {
                demand.remove(&(*on, *imported));
            }
            keep
        });
        for track in &removed {
            for &layer in &track.layers {
                demand.remove(&(track.worker, layer));
            }
            self.layer_switches.remove(&track.track_id);
        }
        self.paused.retain(|(_, track)| !gone.contains(track));
        removed
    }

    /// The streams `rooms` publish, room by room in the order given.
    fn published<'a>(&'a self, rooms: &'a [RoomId]) -> impl Iterator<Item = &'a PublishedTrack> {
        rooms.iter().filter_map(|room| self.tracks.get(room)).flatten()
    }

    fn publishes(&self, rooms: &[RoomId], track_id: &TrackId) -> bool {
        self.published(rooms).any(|t| &t.track_id == track_id)
    }

    fn tracks_for(&self, rooms: &[RoomId], subscriber: &PeerId) -> Vec<PublishedTrack> {
        self.published(rooms).filter(|t| &t.publisher != subscriber).cloned().collect()
    }

    fn set_paused(&mut self, room: &RoomId, track_id: &TrackId, paused: bool) {
        let key = (room.clone(), track_id.clone());
        if paused {
            self.paused.insert(key);
        } else {
            self.paused.remove(&key);
        }
    }

    fn is_paused(&self, room: &RoomId, track_id: &TrackId) -> bool {
        self.paused.contains(&(room.clone(), track_id.clone()))
    }

    fn placed(&self, room: &RoomId, worker: usize) -> usize {
        self.placements.get(&(room.clone(), worker)).copied().unwrap_or(0)
    }

    fn place(&mut self, room: &RoomId, worker: usize, joined: bool) {
        let key = (room.clone(), worker);
        let count = self.placements.entry(key.clone()).or_default();
        if joined {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
        if *count == 0 {
            self.placements.remove(&key);
        }
    }

    fn send(&mut self, room: &RoomId, to: impl Fn(&PeerId) -> bool, message: &Outgoing) -> usize {
        let Some(peers) = self.rooms.get_mut(room) else { return 0 };
        let mut delivered = 0;
        let mut stalled = Vec::new();
        for (peer, session) in peers.iter().filter(|(peer, _)| to(peer)) {
            match session.queue.try_send(message.clone()) {
                Ok(()) => delivered += 1,
                Err(_) => stalled.push(peer.clone()),
            }
        }
        close_stalled(room, peers, stalled);
        delivered
    }

    fn send_to(&mut self, room: &RoomId, to: &[PeerId], message: &Outgoing) -> usize {
        let Some(peers) = self.rooms.get_mut(room) else { return 0 };
        let mut delivered = 0;
        let mut stalled = Vec::new();
        for peer in to {
            match peers.get(peer).map(|session| session.queue.try_send(message.clone())) {
                Some(Ok(())) => delivered += 1,
                Some(Err(_)) => stalled.push(peer.clone()),
                None => {}
            }
        }
        close_stalled(room, peers, stalled);
        delivered
    }
}

/// Drops the sessions whose queue is full: their clients do not read their signalling.
fn close_stalled(room: &RoomId, peers: &mut HashMap<PeerId, Session>, stalled: Vec<PeerId>) {
    for peer in stalled {
        tracing::warn!(%room, %peer, "client does not read its signalling; closing it");
        peers.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::PayloadType;
    use crate::signalling::dynacast::PAUSE_HOLD;
    use crate::signalling::protocol::tests::{peer, room};

    fn track(room_id: &RoomId, publisher: &str, producer: u32) -> PublishedTrack {
        PublishedTrack {
            track_id: TrackId::numbered(0),
            number: 0,
            room: room_id.clone(),
            publisher: peer(publisher),
            session: 0,
            worker: 0,
            producer: ProducerId(producer),
            layers: Vec::new(),
            kind: MediaKind::Video,
            codec: Codec {
                payload_type: PayloadType(96),
                name: "VP8".into(),
                clock_rate: 90_000,
                channels: None,
                fmtp: String::new(),
                rtcp_fb: Vec::new(),
                rtx_payload_type: None,
            },
            extensions: HeaderExtensions::default(),
        }
    }

    #[test]
    fn a_full_queue_closes_its_session_and_spares_the_others() {
        let hub = Hub::default();
        let r = room("r");
        let (_, _slow) = hub.attach(&r, &peer("slow"));
        let (_, mut reader) = hub.attach(&r, &peer("reader"));
        let event = Outgoing::Event(ServerEvent::Pong);
        for _ in 0..SESSION_QUEUE {
            assert_eq!(hub.send(&r, |_| true, &event), 2);
            reader.try_recv().unwrap();
        }
        assert_eq!(hub.send(&r, |_| true, &event), 1, "the slow session's queue is full");
        assert!(hub.queue_of(&r, &peer("slow")).is_none(), "the slow session was dropped");
        assert!(hub.queue_of(&r, &peer("reader")).is_some());
        assert_eq!(hub.send_to(&r, &[peer("slow"), peer("reader")], &event), 1);
    }

    #[test]
    fn a_layer_is_wanted_when_some_worker_demands_it_there_or_imported() {
        let hub = Hub::default();
        let r = room("r");
        let (_, mut publisher) = hub.attach(&r, &peer("alice"));
        let layered =
            PublishedTrack { layers: vec![ProducerId(1), ProducerId(2), ProducerId(3)], ..track(&r, "alice", 3) };
        let id = hub.add_tracks(&r, vec![layered])[0].track_id.clone();
        assert_eq!(hub.set_demand(0, ProducerId(3), false), None, "not switched yet");
        hub.switch_layers(&id, "1".into(), vec!["q".into(), "h".into(), "f".into()]);
        let start = Instant::now();
        let review = |at: Instant| hub.review_layers(&id, at).unwrap();

        // Nobody anywhere: the two upper layers pause once the hold is over.
        assert_eq!(review(start).0.send, None);
        let (decision, told) = review(start + PAUSE_HOLD);
        assert_eq!(decision.send, Some(vec![true, false, false]));
        assert_eq!(told, Some((r.clone(), peer("alice"), "1".into(), vec!["q".into(), "h".into(), "f".into()])));

        // A subscriber on worker 1 may take the middle layer, imported there.
        hub.record_import(&r, &id, (1, ProducerId(2)), ProducerId(20));
        assert_eq!(hub.set_demand(1, ProducerId(20), true), Some(id.clone()));
        assert_eq!(review(start + PAUSE_HOLD).0.send, Some(vec![true, true, false]));
        // A node link on the publisher's own worker takes the highest.
        assert_eq!(hub.set_demand(0, ProducerId(3), true), Some(id.clone()));
        assert_eq!(review(start + PAUSE_HOLD).0.send, Some(vec![true, true, true]));

        // The import ends: its demand goes with it (the hold starts again).
        hub.import_ended(1, ProducerId(20));
        let later = start + PAUSE_HOLD * 2;
        assert_eq!(review(later).0.send, None);
        assert_eq!(review(later + PAUSE_HOLD).0.send, Some(vec![true, false, true]));
        assert!(publisher.try_recv().is_err(), "the hub decides; dynacast::review sends");

        hub.remove_tracks(&r, &peer("alice"));
        assert!(hub.review_layers(&id, later).is_none());
        assert_eq!(hub.set_demand(0, ProducerId(3), true), None, "the track is gone");
    }

    #[test]
    fn a_stale_session_does_not_detach_its_successor() {
        let hub = Hub::default();
        let r = room("r");
        let (first, _) = hub.attach(&r, &peer("alice"));
        let (second, _) = hub.attach(&r, &peer("alice"));
        assert_ne!(first, second);
        assert!(!hub.detach(&r, &peer("alice"), first));
        assert!(hub.queue_of(&r, &peer("alice")).is_some());
        assert!(hub.detach(&r, &peer("alice"), second));
        assert!(hub.queue_of(&r, &peer("alice")).is_none());
    }

    #[test]
    fn tracks_are_numbered_once_and_take_their_imports_and_pauses_with_them() {
        let hub = Hub::default();
        let (a, b) = (room("a"), room("b"));
        let first = hub.add_tracks(&a, vec![track(&a, "alice", 1), track(&a, "alice", 2)]);
        let second = hub.add_tracks(&b, vec![track(&b, "bob", 3)]);
        let ids: Vec<&str> = first.iter().chain(&second).map(|t| t.track_id.as_str()).collect();
        assert_eq!(ids, ["t0", "t1", "t2"]);
        assert_eq!(hub.tracks_for(&[b.clone(), a.clone()], &peer("alice")).len(), 1);
        assert!(hub.publishes(std::slice::from_ref(&a), &first[1].track_id));
        assert!(!hub.publishes(std::slice::from_ref(&a), &second[0].track_id));

        let origin = first[0].producer;
        hub.record_import(&a, &first[0].track_id, (1, origin), ProducerId(10));
        hub.set_paused(&b, &first[0].track_id, true);
        assert_eq!(hub.import(&first[0].track_id, 1, origin), Some(ProducerId(10)));
        assert_eq!(hub.import(&first[0].track_id, 1, ProducerId(99)), None, "another layer's import");
        assert!(hub.is_paused(&b, &first[0].track_id));

        assert_eq!(hub.remove_tracks(&a, &peer("alice")).len(), 2);
        assert_eq!(hub.import(&first[0].track_id, 1, origin), None);
        assert!(!hub.is_paused(&b, &first[0].track_id));
        // An import made for a track that went away meanwhile is no one's.
        hub.record_import(&a, &first[0].track_id, (1, origin), ProducerId(11));
        assert_eq!(hub.import(&first[0].track_id, 1, origin), None);
        assert_eq!(hub.add_tracks(&a, vec![track(&a, "alice", 4)])[0].track_id.as_str(), "t3");
    }

    #[test]
    fn a_closed_transport_reaches_the_session_that_opened_it() {
        let hub = Hub::default();
        let r = room("r");
        let (id, mut queue) = hub.attach(&r, &peer("alice"));
        let source = std::net::IpAddr::from([127, 0, 0, 1]);
        let alice = peer("alice");
        hub.own_transport(0, TransportId(7), (&r, &alice, id), source);
        hub.own_transport(0, TransportId(8), (&r, &alice, id), source);
        assert_eq!(hub.owned_transports(), 2);
        assert!(hub.transport_closed(0, TransportId(7), CloseReason::ConsentExpired));
        assert!(matches!(queue.try_recv(), Ok(Outgoing::TransportClosed { transport: TransportId(7), .. })));
        assert!(!hub.transport_closed(0, TransportId(8), CloseReason::Requested), "its owner closed it");
        assert!(queue.try_recv().is_err());
        assert_eq!(hub.owned_transports(), 0);
    }

    #[test]
    fn pending_transports_are_capped_per_address_until_they_connect_or_close() {
        let hub = Hub::default();
        let r = room("r");
        let alice = peer("alice");
        let (id, _queue) = hub.attach(&r, &alice);
        let (near, far) = (std::net::IpAddr::from([10, 0, 0, 1]), std::net::IpAddr::from([10, 0, 0, 2]));
        assert!(hub.reserve_pending(near, 2) && hub.reserve_pending(near, 2));
        assert!(!hub.reserve_pending(near, 2), "a third waits for one of the two");
        assert!(hub.reserve_pending(far, 2), "another address has its own share");
        hub.own_transport(0, TransportId(1), (&r, &alice, id), near);
        hub.release_pending(near);
        assert!(hub.reserve_pending(near, 2), "a reservation given back frees its place");
        hub.own_transport(0, TransportId(2), (&r, &alice, id), near);
        hub.transport_connected(0, TransportId(1));
        hub.transport_connected(0, TransportId(1));
        assert_eq!(hub.pending_transports(), 2, "connected once, counted down once");
        hub.transport_closed(0, TransportId(2), CloseReason::IceTimeout);
        hub.transport_closed(0, TransportId(1), CloseReason::ConsentExpired);
        assert_eq!(hub.pending_transports(), 1, "only the far address's reservation is left");
    }

    #[test]
    fn placements_count_down_to_nothing() {
        let hub = Hub::default();
        let r = room("r");
        hub.place(&r, 1, true);
        hub.place(&r, 1, true);
        hub.place(&r, 1, false);
        assert_eq!((hub.placed(&r, 1), hub.placed(&r, 0)), (1, 0));
        hub.place(&r, 1, false);
        hub.place(&r, 1, false);
        assert_eq!(hub.placed(&r, 1), 0);
    }
}
