//! Who is connected where: one bounded outgoing queue per client session, by room and peer,
//! so REST calls (messages, kicks, room deletion) reach exactly the right clients.
//!
//! Rule: a queue that is full is a client that does not read; it is closed rather than
//! waited for, so one slow client never holds up a REST call or other clients.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use uprtcd_dataplane::engine::CloseReason;
use uprtcd_dataplane::router::{ProducerId, TransportId};

use super::protocol::{ServerEvent, TrackInfo};
use crate::ids::{PeerId, RoomId, TrackId};
use crate::sdp::{Codec, HeaderExtensions, MediaKind};

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
    pub producer: ProducerId,
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

/// Every change under these locks is a single insert, remove or count: no half-made state to
/// poison.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
pub struct Hub {
    rooms: Mutex<HashMap<RoomId, HashMap<PeerId, Session>>>,
    tracks: Mutex<HashMap<RoomId, Vec<PublishedTrack>>>,
    next_id: std::sync::atomic::AtomicU64,
    next_track: std::sync::atomic::AtomicU64,
    /// WHIP and WHEP sessions by resource id: their room, and how to stop them.
    http_sessions: Mutex<HashMap<String, (RoomId, HttpStop)>>,
    /// Where a track is relayed to: its imported producer on another worker, by track id
    /// and worker. Track ids are never reused, so an entry cannot outlive its stream's name.
    imports: Mutex<HashMap<(TrackId, usize), ProducerId>>,
    /// Merged tracks paused for a room's audience: (the audience's room, track id).
    paused: Mutex<HashSet<(RoomId, TrackId)>>,
    /// Subscribers placed per room and worker, to spread an audience over its workers.
    placements: Mutex<HashMap<(RoomId, usize), usize>>,
    /// The session each open transport belongs to, by worker and transport: who is told
    /// when the worker removes it.
    transports: Mutex<HashMap<(usize, TransportId), TransportOwner>>,
}

/// The session that opened a transport.
#[derive(Debug, Clone)]
struct TransportOwner {
    room: RoomId,
    peer: PeerId,
    session: u64,
}

impl Hub {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, HashMap<PeerId, Session>>> {
        // Every change below is a single insert or remove: no half-made state to poison.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a session of `peer` in `room`; returns its id and its queue's receiver.
    pub fn attach(&self, room: &RoomId, peer: &PeerId) -> (u64, mpsc::Receiver<Outgoing>) {
        let (queue, receiver) = mpsc::channel(SESSION_QUEUE);
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.rooms().entry(room.clone()).or_default().insert(peer.clone(), Session { id, queue });
        (id, receiver)
    }

    /// Forgets session `id` of `peer` (if it is still the current one). False when a newer
    /// session of the peer holds its place: then the peer's presence is that session's.
    pub fn detach(&self, room: &RoomId, peer: &PeerId, id: u64) -> bool {
        let mut rooms = self.rooms();
        let Some(peers) = rooms.get_mut(room) else { return true };
        let newer = match peers.get(peer) {
            Some(session) if session.id == id => {
                peers.remove(peer);
                false
            }
            Some(_) => true,
            None => false,
        };
        if peers.is_empty() {
            rooms.remove(room);
        }
        !newer
    }

    /// The queue of `peer`'s current session in `room`, to probe it.
    pub fn queue_of(&self, room: &RoomId, peer: &PeerId) -> Option<mpsc::Sender<Outgoing>> {
        self.rooms().get(room)?.get(peer).map(|session| session.queue.clone())
    }

    /// Transport `transport` on `worker` was opened by session `session` of `peer`.
    pub fn own_transport(&self, worker: usize, transport: TransportId, room: &RoomId, peer: &PeerId, session: u64) {
        let owner = TransportOwner { room: room.clone(), peer: peer.clone(), session };
        lock(&self.transports).insert((worker, transport), owner);
    }

    /// The worker removed `transport`: forgets its owner and, unless the owner asked for it
    /// (`Requested`), tells the owner's session. False when no live session owned it.
    pub fn transport_closed(&self, worker: usize, transport: TransportId, reason: CloseReason) -> bool {
        let Some(owner) = lock(&self.transports).remove(&(worker, transport)) else { return false };
        if reason == CloseReason::Requested {
            return false;
        }
        let mut rooms = self.rooms();
        let Some(peers) = rooms.get_mut(&owner.room) else { return false };
        let Some(session) = peers.get(&owner.peer).filter(|s| s.id == owner.session) else { return false };
        if session.queue.try_send(Outgoing::TransportClosed { transport, reason }).is_err() {
            Self::close_stalled(&owner.room, peers, vec![owner.peer]);
        }
        true
    }

    /// Open transports with a known owner (a gauge for `/metrics`).
    pub fn owned_transports(&self) -> usize {
        lock(&self.transports).len()
    }

    /// Forgets the import `producer` on `worker`: its stream ended at its origin.
    pub fn import_ended(&self, worker: usize, producer: ProducerId) {
        lock(&self.imports).retain(|(_, on), imported| !(*on == worker && *imported == producer));
    }

    /// Records a WHIP or WHEP session of `room` under `resource`, the last path segment of
    /// its location. `stop` ends it and reports once it has left the room.
    pub fn add_http_session(&self, resource: &str, room: &RoomId, stop: HttpStop) {
        let mut sessions = self.http_sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.insert(resource.to_owned(), (room.clone(), stop));
    }

    /// Takes the session at `resource` if it belongs to `room`, to stop it.
    pub fn take_http_session(&self, resource: &str, room: &RoomId) -> Option<HttpStop> {
        let mut sessions = self.http_sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.get(resource).is_some_and(|(owner, _)| owner == room) {
            return sessions.remove(resource).map(|(_, stop)| stop);
        }
        None
    }

    /// Records streams a client of `room` now publishes, giving each its track id; returns
    /// them as recorded.
    pub fn add_tracks(&self, room: &RoomId, mut added: Vec<PublishedTrack>) -> Vec<PublishedTrack> {
        for track in &mut added {
            track.number = self.next_track.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            track.track_id = TrackId::numbered(track.number);
        }
        let mut tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        tracks.entry(room.clone()).or_default().extend(added.iter().cloned());
        added
    }

    /// Forgets what `publisher` published in `room` (its session ended); returns it.
    pub fn remove_tracks(&self, room: &RoomId, publisher: &PeerId) -> Vec<PublishedTrack> {
        let mut tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(list) = tracks.get_mut(room) else { return Vec::new() };
        let (removed, kept): (Vec<PublishedTrack>, _) =
            std::mem::take(list).into_iter().partition(|t| &t.publisher == publisher);
        *list = kept;
        if list.is_empty() {
            tracks.remove(room);
        }
        let gone: HashSet<&TrackId> = removed.iter().map(|t| &t.track_id).collect();
        lock(&self.imports).retain(|(track, _), _| !gone.contains(track));
        lock(&self.paused).retain(|(_, track)| !gone.contains(track));
        removed
    }

    /// The producer that carries `track_id` on `worker`, if it was imported there.
    pub fn import(&self, track_id: &TrackId, worker: usize) -> Option<ProducerId> {
        lock(&self.imports).get(&(track_id.clone(), worker)).copied()
    }

    /// Records that `track_id` is imported on `worker` as `producer`, unless the track went
    /// away meanwhile (then the import is no one's and ends with its stream).
    pub fn record_import(&self, room: &RoomId, track_id: &TrackId, worker: usize, producer: ProducerId) {
        let published = self
            .tracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(room)
            .is_some_and(|list| list.iter().any(|t| &t.track_id == track_id));
        if published {
            lock(&self.imports).insert((track_id.clone(), worker), producer);
        }
    }

    /// Whether some room of `rooms` publishes `track_id`.
    pub fn publishes(&self, rooms: &[RoomId], track_id: &TrackId) -> bool {
        let tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        rooms.iter().filter_map(|room| tracks.get(room)).flatten().any(|t| &t.track_id == track_id)
    }

    /// Pauses or resumes `track_id` for the audience of `room`.
    pub fn set_paused(&self, room: &RoomId, track_id: &TrackId, paused: bool) {
        let key = (room.clone(), track_id.clone());
        let mut set = lock(&self.paused);
        if paused {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    pub fn is_paused(&self, room: &RoomId, track_id: &TrackId) -> bool {
        lock(&self.paused).contains(&(room.clone(), track_id.clone()))
    }

    /// How many subscribers of `room` were placed on `worker` and are still there.
    pub fn placed(&self, room: &RoomId, worker: usize) -> usize {
        lock(&self.placements).get(&(room.clone(), worker)).copied().unwrap_or(0)
    }

    /// A subscriber of `room` was placed on `worker` (`joined`), or left it.
    pub fn place(&self, room: &RoomId, worker: usize, joined: bool) {
        let mut placements = lock(&self.placements);
        let count = placements.entry((room.clone(), worker)).or_default();
        if joined {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
        if *count == 0 {
            placements.remove(&(room.clone(), worker));
        }
    }

    /// The streams of `rooms` (a room and its merge group) that peers other than
    /// `subscriber` publish, room by room in the order given.
    pub fn tracks_for(&self, rooms: &[RoomId], subscriber: &PeerId) -> Vec<PublishedTrack> {
        let tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        rooms
            .iter()
            .filter_map(|room| tracks.get(room))
            .flatten()
            .filter(|t| &t.publisher != subscriber)
            .cloned()
            .collect()
    }

    /// Queues `message` for the sessions of `room` whose peer `to` accepts; returns how many
    /// took it. A session whose queue is full is dropped from the hub: its queue ends once
    /// drained, and the session closes its connection.
    pub fn send(&self, room: &RoomId, to: impl Fn(&PeerId) -> bool, message: &Outgoing) -> usize {
        let mut rooms = self.rooms();
        let Some(peers) = rooms.get_mut(room) else { return 0 };
        let mut delivered = 0;
        let mut stalled = Vec::new();
        for (peer, session) in peers.iter().filter(|(peer, _)| to(peer)) {
            match session.queue.try_send(message.clone()) {
                Ok(()) => delivered += 1,
                Err(_) => stalled.push(peer.clone()),
            }
        }
        Self::close_stalled(room, peers, stalled);
        delivered
    }

    /// [`Hub::send`] to the sessions of `to` only, looked up one by one: what costs a message
    /// to a live room's few members does not grow with its audience.
    pub fn send_to(&self, room: &RoomId, to: &[PeerId], message: &Outgoing) -> usize {
        let mut rooms = self.rooms();
        let Some(peers) = rooms.get_mut(room) else { return 0 };
        let mut delivered = 0;
        let mut stalled = Vec::new();
        for peer in to {
            match peers.get(peer).map(|session| session.queue.try_send(message.clone())) {
                Some(Ok(())) => delivered += 1,
                Some(Err(_)) => stalled.push(peer.clone()),
                None => {}
            }
        }
        Self::close_stalled(room, peers, stalled);
        delivered
    }

    /// Drops the sessions whose queue is full: their clients do not read their signalling.
    fn close_stalled(room: &RoomId, peers: &mut HashMap<PeerId, Session>, stalled: Vec<PeerId>) {
        for peer in stalled {
            tracing::warn!(%room, %peer, "client does not read its signalling; closing it");
            peers.remove(&peer);
        }
    }
}
