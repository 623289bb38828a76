//! The authoritative room registry: rooms, invitations, live members, merge groups,
//! mirrors, recordings and blocked users, with every rule of the spec that decides a code.
//!
//! Pure state: no I/O, no clock, no locking. Every mutation records what it touched in
//! [`Changes`]; the caller ([`crate::state`]) commits those to the store before it answers,
//! and reloads from the store when a commit fails, so memory never runs ahead of disk.
//! Connections (who is joined) are the only state not persisted.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::envelope::{ApiCode, ApiError};
use crate::ids::{PeerId, RecordId, RoomId, ServerIdentity};

/// Invitation codes are nine-digit numbers.
const INVITATION_CODES: std::ops::RangeInclusive<u32> = 100_000_000..=999_999_999;

/// `protocol` of the spec: which ICE candidates the room's clients are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Protocol {
    Udp = 0,
    Tcp = 1,
    UdpPreferred = 2,
    TcpPreferred = 3,
}

impl TryFrom<u8> for Protocol {
    type Error = String;

    fn try_from(value: u8) -> Result<Self, String> {
        match value {
            0 => Ok(Self::Udp),
            1 => Ok(Self::Tcp),
            2 => Ok(Self::UdpPreferred),
            3 => Ok(Self::TcpPreferred),
            other => Err(format!("protocol {other} is not one of 0, 1, 2, 3")),
        }
    }
}

impl From<Protocol> for u8 {
    fn from(protocol: Protocol) -> u8 {
        protocol as u8
    }
}

/// What a co-host may publish (the contract's `kind` of `POST /room/{id}/live/member`): a
/// permission, not a stream's media kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CohostKind {
    Audio,
    /// Video implies audio.
    Video,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMember {
    pub peer: PeerId,
    pub kind: CohostKind,
    pub max_bitrate: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomKind {
    /// A conversation room: only invited users may join.
    Convo {
        /// The master, the members given at creation and every later addition, in order.
        invited: Vec<PeerId>,
        /// 0 = unlimited.
        max_members: u32,
    },
    /// A live room: the master broadcasts, co-hosts may publish, everyone else watches.
    Live { live_members: Vec<LiveMember> },
}

/// Recording status constants of the spec.
pub mod record_status {
    pub const NOT_RECORDED: u8 = 0;
    /// Capturing (or a client upload waiting for its first byte), until the first key frame
    /// of a recorded stream arrives.
    pub const PREPARING: u8 = 1;
    pub const RECORDING: u8 = 2;
    pub const ENDED: u8 = 3;
    pub const WAITING: u8 = 4;
    pub const PROCESSING: u8 = 5;
    pub const PROCESSING_DONE: u8 = 6;
    pub const ERROR: u8 = 7;

    /// Whether a recording in `status` is still capturing: its room may not start another.
    pub fn is_capturing(status: u8) -> bool {
        matches!(status, PREPARING | RECORDING)
    }

    /// Done or failed: nothing will change the record any more.
    pub fn is_finished(status: u8) -> bool {
        matches!(status, PROCESSING_DONE | ERROR)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub id: RoomId,
    pub master: PeerId,
    pub kind: RoomKind,
    pub invitation_code: u32,
    pub protocol: Protocol,
    pub min_bitrate: u64,
    pub max_bitrate: u64,
    pub join_enabled: bool,
    /// Index of the dataplane worker that hosts the room's media.
    pub worker: usize,
    /// Workers that hold a mirror of the room's audience, in the order they were added.
    pub mirrors: Vec<usize>,
    /// The merge group the room belongs to, if merged.
    pub merge_group: Option<u64>,
    pub record_status: u8,
    /// The room's latest server-side recording, whose status `record_status` follows.
    #[serde(default)]
    pub recording: Option<RecordId>,
    /// Opened by the demo page (`POST /demo/join`), which may invite into it and lets it
    /// expire; no other room is the demo's to touch. Rooms stored before the field existed
    /// are not demo rooms.
    #[serde(default)]
    pub demo: bool,
    /// A playback room's recording: the room is a live room whose host is this recording,
    /// played by an ffmpeg the control plane runs (see [`crate::playback`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playback: Option<RecordId>,
    /// A mirror this node holds of a live room of node `origin` (the same id and invitation
    /// code): its audience joins here, its hosts publish there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// A held room that only feeds this node's merge groups with the origin's streams (no
    /// audience of its own is sent here).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub feed: bool,
    /// Mirrors of this room on other nodes of the cluster, in the order they were added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_mirrors: Vec<RemoteMirror>,
    /// Peers with a live client connection (not persisted: media state).
    #[serde(skip)]
    pub connected: BTreeSet<PeerId>,
}

impl Room {
    pub fn is_live(&self) -> bool {
        matches!(self.kind, RoomKind::Live { .. })
    }

    /// Connected peers that are members (convo: everyone; live: the master and co-hosts), in
    /// order. A live room's few members are looked up rather than its audience scanned: this
    /// runs for every viewer that joins or leaves.
    pub fn connected_members(&self) -> Vec<PeerId> {
        match &self.kind {
            RoomKind::Convo { .. } => self.connected.iter().cloned().collect(),
            RoomKind::Live { live_members } => {
                let members = std::iter::once(&self.master).chain(live_members.iter().map(|m| &m.peer));
                let mut connected: Vec<PeerId> = members.filter(|p| self.connected.contains(*p)).cloned().collect();
                connected.sort();
                connected
            }
        }
    }

    /// The connected peers `peer` is told of when it joins (`joined.peers`, itself
    /// included): everyone, except that a live room's audience is told only of the
    /// connected master and co-hosts.
    pub fn peers_visible_to(&self, peer: &PeerId) -> Vec<PeerId> {
        self.connected.iter().filter(|p| *p == peer || self.is_member(peer) || self.is_member(p)).cloned().collect()
    }

    /// Whether `peer` is a member: every peer of a conversation room, the master and the
    /// co-hosts of a live room. Members' presence is announced to the whole room; an
    /// audience member's only to the members, so that an audience of thousands does not
    /// hear of each join and leave among itself.
    pub fn is_member(&self, peer: &PeerId) -> bool {
        match &self.kind {
            RoomKind::Convo { .. } => true,
            RoomKind::Live { live_members } => *peer == self.master || live_members.iter().any(|m| m.peer == *peer),
        }
    }
}

/// A mirror of a room on another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMirror {
    pub alias: String,
    /// The worker thread that holds it there.
    pub work_pid: i32,
    /// Only a feed of a merge group there, not a mirror for an audience (not listed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub feed: bool,
}

/// A live room of another node, as a mirror of it is held here.
#[derive(Debug, Clone)]
pub struct MirrorRoom {
    pub id: RoomId,
    pub master: PeerId,
    pub invitation_code: u32,
    pub protocol: Protocol,
    pub min_bitrate: u64,
    pub max_bitrate: u64,
    pub origin: String,
    /// Held only to feed merge groups (see [`Room::feed`]).
    pub feed: bool,
}

/// A stored recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    pub id: RecordId,
    pub status: u8,
    /// File name under the data dir's recordings folder.
    pub file: String,
    pub size: u64,
    /// The room a server-side recording captured; none for an upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomId>,
    /// When the record was made, milliseconds since the epoch; 0 for records stored before
    /// the field existed (retention then goes by the file's modification time).
    #[serde(default)]
    pub created_ms: u64,
    /// Why the record failed (status 7); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub msg: String,
    /// A client upload's: when its upload URL stops being accepted (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_expires: Option<u64>,
}

/// Which ids a mutation touched; committed to the store before the answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Rooms to write (still open) or delete (gone).
    pub rooms: BTreeSet<RoomId>,
    pub blocked: BTreeSet<PeerId>,
    pub recordings: BTreeSet<RecordId>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.blocked.is_empty() && self.recordings.is_empty()
    }
}

/// A request to open a room, validated by the REST layer.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub master: PeerId,
    pub requested_id: Option<RoomId>,
    pub protocol: Protocol,
    pub min_bitrate: u64,
    pub max_bitrate: u64,
    pub kind: NewRoomKind,
    /// Opened by the demo page (see [`Room::demo`]).
    pub demo: bool,
}

#[derive(Debug, Clone)]
pub enum NewRoomKind {
    Convo { members: Vec<PeerId>, max_members: Option<u32> },
    Live,
}

/// Everything the registry holds, as loaded from the store.
#[derive(Debug, Default)]
pub struct Contents {
    pub rooms: Vec<Room>,
    pub blocked: Vec<PeerId>,
    pub recordings: Vec<Recording>,
}

/// What a peer may publish in a room, and the most it may send (bits per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRights {
    pub audio: bool,
    pub video: bool,
    /// The room's `maxBitrate`, or a co-host's own when lower.
    pub max_bitrate: u64,
}

/// The server-wide limits the operator configures (`[rooms]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `maxMemberNum` of a conversation room when its creation omits it.
    pub default_max_members: u32,
    /// Clients connected at once over every room, the licensed maximum (50018); 0 = no cap.
    pub max_connections: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { default_max_members: 16, max_connections: 0 }
    }
}

#[derive(Debug)]
pub struct Registry {
    identity: ServerIdentity,
    workers: usize,
    limits: Limits,
    rooms: HashMap<RoomId, Room>,
    codes: HashMap<u32, RoomId>,
    groups: HashMap<u64, BTreeSet<RoomId>>,
    blocked: BTreeSet<PeerId>,
    recordings: HashMap<RecordId, Recording>,
    recycling: bool,
    changes: Changes,
}

fn room_not_found(id: &RoomId) -> ApiError {
    ApiError::new(ApiCode::RoomNotFound, format!("no open room {id}"))
}

impl Registry {
    /// A registry over `contents`, for a server with `workers` dataplane workers (at least 1).
    /// Rooms placed on workers that no longer exist are moved onto the ones that do.
    pub fn new(identity: ServerIdentity, workers: usize, limits: Limits, contents: Contents) -> Self {
        let workers = workers.max(1);
        let mut registry = Self {
            identity,
            workers,
            limits,
            rooms: HashMap::new(),
            codes: HashMap::new(),
            groups: HashMap::new(),
            blocked: contents.blocked.into_iter().collect(),
            recordings: contents.recordings.into_iter().map(|r| (r.id.clone(), r)).collect(),
            recycling: false,
            changes: Changes::default(),
        };
        for mut room in contents.rooms {
            if room.worker >= workers {
                room.worker %= workers;
                registry.changes.rooms.insert(room.id.clone());
            }
            let before = room.mirrors.len();
            let origin = room.worker;
            room.mirrors.retain(|&w| w < workers && w != origin);
            if room.mirrors.len() != before {
                registry.changes.rooms.insert(room.id.clone());
            }
            registry.codes.insert(room.invitation_code, room.id.clone());
            if let Some(group) = room.merge_group {
                registry.groups.entry(group).or_default().insert(room.id.clone());
            }
            registry.rooms.insert(room.id.clone(), room);
        }
        registry
    }

    /// Replaces the persisted part with `contents` (after a failed commit), keeping what is
    /// not persisted: connections and the recycling flag.
    pub fn reload(&mut self, contents: Contents) {
        let mut fresh = Self::new(self.identity.clone(), self.workers, self.limits, contents);
        fresh.recycling = self.recycling;
        for (id, room) in &mut fresh.rooms {
            if let Some(old) = self.rooms.get_mut(id) {
                room.connected = std::mem::take(&mut old.connected);
            }
        }
        fresh.changes = Changes::default();
        *self = fresh;
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// This server's identity: the tag its ids carry.
    pub fn identity(&self) -> &ServerIdentity {
        &self.identity
    }

    /// Whether the server holds nothing: no room (open or held) and no recording.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.recordings.is_empty()
    }

    /// Takes another identity; only for a server that [`Registry::is_empty`], whose ids
    /// carry no tag yet.
    pub fn replace_identity(&mut self, identity: ServerIdentity) {
        self.identity = identity;
    }

    /// Peers connected over every room.
    pub fn connection_count(&self) -> usize {
        self.rooms.values().map(|room| room.connected.len()).sum()
    }

    /// Takes the changes made since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    pub fn room(&self, id: &RoomId) -> Result<&Room, ApiError> {
        self.rooms.get(id).ok_or_else(|| room_not_found(id))
    }

    fn room_mut(&mut self, id: &RoomId) -> Result<&mut Room, ApiError> {
        let room = self.rooms.get_mut(id).ok_or_else(|| room_not_found(id))?;
        self.changes.rooms.insert(id.clone());
        Ok(room)
    }

    /// The room, if it is open and a live room (10003 for a conversation room).
    pub fn live_room(&self, id: &RoomId) -> Result<&Room, ApiError> {
        let room = self.room(id)?;
        if room.is_live() { Ok(room) } else { Err(ApiError::request(format!("room {id} is not a live room"))) }
    }

    /// Open rooms, not counting the feeds of other nodes' rooms held for merge groups.
    pub fn room_count(&self) -> usize {
        self.rooms.values().filter(|room| !room.feed).count()
    }

    pub fn rooms(&self) -> impl Iterator<Item = &Room> {
        self.rooms.values()
    }

    /// The rooms the demo page opened (see [`Room::demo`]).
    pub fn demo_rooms(&self) -> impl Iterator<Item = &Room> {
        self.rooms.values().filter(|room| room.demo)
    }

    pub fn is_blocked(&self, peer: &PeerId) -> bool {
        self.blocked.contains(peer)
    }

    pub fn blocked(&self) -> &BTreeSet<PeerId> {
        &self.blocked
    }

    pub fn recycling(&self) -> bool {
        self.recycling
    }

    /// While recycling: the rooms still open and the peers still connected; both 0 means
    /// drained, and a stop loses nothing.
    pub fn draining(&self) -> Option<(usize, usize)> {
        self.recycling.then(|| (self.room_count(), self.connection_count()))
    }

    /// Stop taking new rooms (not persisted: a restarted server takes rooms again).
    pub fn recycle(&mut self) {
        self.recycling = true;
    }

    pub fn block(&mut self, peer: PeerId) {
        if self.blocked.insert(peer.clone()) {
            self.changes.blocked.insert(peer);
        }
    }

    /// Opens a room under the spec's roomId rules and returns it.
    pub fn create(&mut self, new: NewRoom) -> Result<&Room, ApiError> {
        if self.recycling {
            return Err(ApiError::new(ApiCode::NoWorker, "this server is being recycled and takes no new rooms"));
        }
        if self.is_blocked(&new.master) {
            return Err(ApiError::request(format!("user {} is blocked", new.master)));
        }
        if new.min_bitrate > new.max_bitrate {
            return Err(ApiError::invalid("minBitrate must not exceed maxBitrate"));
        }
        let id = match new.requested_id {
            Some(id) if self.identity.made(&id) => match self.rooms.get(&id) {
                Some(open) if open.master == new.master => {
                    return Err(ApiError::new(
                        ApiCode::RoomExists,
                        format!("room {id} is already open for {}", new.master),
                    ));
                }
                Some(_) => self.fresh_room_id(),
                None => id,
            },
            _ => self.fresh_room_id(),
        };
        let kind = match new.kind {
            NewRoomKind::Convo { members, max_members } => {
                let mut invited = vec![new.master.clone()];
                push_unique(&mut invited, members);
                RoomKind::Convo { invited, max_members: max_members.unwrap_or(self.limits.default_max_members) }
            }
            NewRoomKind::Live => RoomKind::Live { live_members: Vec::new() },
        };
        let room = Room {
            id: id.clone(),
            master: new.master,
            kind,
            invitation_code: self.fresh_invitation_code(),
            protocol: new.protocol,
            min_bitrate: new.min_bitrate,
            max_bitrate: new.max_bitrate,
            join_enabled: true,
            worker: self.least_busy_worker(),
            mirrors: Vec::new(),
            merge_group: None,
            record_status: record_status::NOT_RECORDED,
            recording: None,
            demo: new.demo,
            playback: None,
            origin: None,
            feed: false,
            remote_mirrors: Vec::new(),
            connected: BTreeSet::new(),
        };
        self.codes.insert(room.invitation_code, id.clone());
        self.changes.rooms.insert(id.clone());
        Ok(self.rooms.entry(id).or_insert(room))
    }

    /// Holds a mirror of another node's live room `mirror` on `worker` (default: the least
    /// busy): a live room of the same id and invitation code. Holding it again keeps it as it
    /// is. Returns its worker.
    pub fn hold_mirror(&mut self, mirror: MirrorRoom, worker: Option<usize>) -> Result<usize, ApiError> {
        if let Some(room) = self.rooms.get(&mirror.id) {
            return match &room.origin {
                Some(origin) if *origin == mirror.origin => Ok(room.worker),
                _ => Err(ApiError::request(format!(
                    "room {} is open here, and not as a mirror of {}",
                    mirror.id, mirror.origin
                ))),
            };
        }
        if self.recycling {
            return Err(ApiError::new(ApiCode::NoWorker, "this server is being recycled and takes no new mirrors"));
        }
        if self.codes.contains_key(&mirror.invitation_code) {
            return Err(ApiError::system(format!("invitation code of room {} is in use here", mirror.id)));
        }
        if worker.is_some_and(|w| w >= self.workers) {
            return Err(ApiError::invalid("no such worker"));
        }
        let room = Room {
            id: mirror.id.clone(),
            master: mirror.master,
            kind: RoomKind::Live { live_members: Vec::new() },
            invitation_code: mirror.invitation_code,
            protocol: mirror.protocol,
            min_bitrate: mirror.min_bitrate,
            max_bitrate: mirror.max_bitrate,
            join_enabled: true,
            worker: worker.unwrap_or_else(|| self.least_busy_worker()),
            mirrors: Vec::new(),
            merge_group: None,
            record_status: record_status::NOT_RECORDED,
            recording: None,
            demo: false,
            playback: None,
            origin: Some(mirror.origin),
            feed: mirror.feed,
            remote_mirrors: Vec::new(),
            connected: BTreeSet::new(),
        };
        let worker = room.worker;
        self.codes.insert(room.invitation_code, mirror.id.clone());
        self.changes.rooms.insert(mirror.id.clone());
        self.rooms.insert(mirror.id, room);
        Ok(worker)
    }

    /// Records a mirror of live room `id` on node `alias`: 50013 when that node has one
    /// for an audience. A feed where a mirror is asked becomes that mirror; a feed asked
    /// where anything is changes nothing.
    pub fn add_remote_mirror(&mut self, id: &RoomId, mirror: RemoteMirror) -> Result<(), ApiError> {
        self.live_room(id)?;
        let room = self.room_mut(id)?;
        match room.remote_mirrors.iter_mut().find(|m| m.alias == mirror.alias) {
            None => room.remote_mirrors.push(mirror),
            Some(_) if mirror.feed => {}
            Some(held) if held.feed => *held = mirror,
            Some(_) => {
                return Err(ApiError::new(
                    ApiCode::MirrorExists,
                    format!("{} already mirrors room {id}", mirror.alias),
                ));
            }
        }
        Ok(())
    }

    /// Forgets the feed of `id` on node `alias` (its merge group there no longer needs it);
    /// a mirror for an audience stays. Whether a feed went.
    pub fn drop_feed(&mut self, id: &RoomId, alias: &str) -> bool {
        let Some(room) = self.rooms.get_mut(id) else { return false };
        let before = room.remote_mirrors.len();
        room.remote_mirrors.retain(|m| !(m.feed && m.alias == alias));
        let dropped = room.remote_mirrors.len() != before;
        if dropped {
            self.changes.rooms.insert(id.clone());
        }
        dropped
    }

    /// Live room `id` and the rooms merged with it (50001 when it is not open, 10003 when it
    /// is not live).
    pub fn group_members(&self, id: &RoomId) -> Result<Vec<RoomId>, ApiError> {
        self.live_room(id)?;
        Ok(std::iter::once(id.clone()).chain(self.merged_with(id)?).collect())
    }

    /// Makes the rooms of `members` that are open here one merge group (after taking each
    /// out of its group); fewer than two here are left alone.
    pub fn set_group(&mut self, members: &[RoomId]) {
        let present: Vec<RoomId> = members.iter().filter(|m| self.rooms.contains_key(*m)).cloned().collect();
        for room in &present {
            self.leave_group(room);
        }
        if present.len() < 2 {
            return;
        }
        let group = self.fresh_group_id();
        for room in present {
            if let Some(r) = self.rooms.get_mut(&room) {
                r.merge_group = Some(group);
            }
            self.changes.rooms.insert(room.clone());
            self.groups.entry(group).or_default().insert(room);
        }
    }

    /// Opens a playback room: live room `new` whose host, its master, is recording `record`
    /// and is present from the start. It is no client, so no admission rule applies to it;
    /// while present it is counted among the connections like any connected host, and a
    /// client claiming its id finds it connected (50004).
    pub fn create_playback(&mut self, new: NewRoom, record: RecordId) -> Result<&Room, ApiError> {
        let id = self.create(new)?.id.clone();
        let room = self.room_mut(&id)?;
        room.playback = Some(record);
        let master = room.master.clone();
        room.connected.insert(master);
        Ok(room)
    }

    fn fresh_room_id(&self) -> RoomId {
        loop {
            let id = self.identity.generate_room_id();
            if !self.rooms.contains_key(&id) {
                return id;
            }
        }
    }

    fn fresh_invitation_code(&self) -> u32 {
        let mut rng = rand::rng();
        loop {
            let code = rng.random_range(INVITATION_CODES);
            if !self.codes.contains_key(&code) {
                return code;
            }
        }
    }

    /// The worker hosting the fewest rooms (ties: the lowest index).
    fn least_busy_worker(&self) -> usize {
        let mut load = vec![0usize; self.workers];
        for room in self.rooms.values() {
            load[room.worker] += 1;
        }
        (0..self.workers).min_by_key(|&w| load[w]).unwrap_or(0)
    }

    /// Closes a room: its code is freed, it leaves its merge group. Returns the closed room
    /// so the caller can disconnect its clients.
    pub fn close(&mut self, id: &RoomId) -> Result<Room, ApiError> {
        self.room(id)?;
        self.leave_group(id);
        let room = self.rooms.remove(id).ok_or_else(|| room_not_found(id))?;
        self.codes.remove(&room.invitation_code);
        self.changes.rooms.insert(id.clone());
        Ok(room)
    }

    pub fn room_by_code(&self, code: u32) -> Option<&Room> {
        self.codes.get(&code).and_then(|id| self.rooms.get(id))
    }

    pub fn add_convo_members(&mut self, id: &RoomId, members: Vec<PeerId>) -> Result<(), ApiError> {
        match &mut self.room_mut(id)?.kind {
            RoomKind::Convo { invited, .. } => {
                push_unique(invited, members);
                Ok(())
            }
            RoomKind::Live { .. } => {
                Err(ApiError::request(format!("room {id} is a live room; members are invited to conversation rooms")))
            }
        }
    }

    pub fn set_join_enabled(&mut self, id: &RoomId, enabled: bool) -> Result<(), ApiError> {
        self.room_mut(id)?.join_enabled = enabled;
        Ok(())
    }

    /// Whether `peer` has a connection to the room.
    pub fn joined(&self, id: &RoomId, peer: &PeerId) -> Result<bool, ApiError> {
        Ok(self.room(id)?.connected.contains(peer))
    }

    /// Checks that `peer` has a connection that a kick can end.
    pub fn connected_peer(&self, id: &RoomId, peer: &PeerId) -> Result<(), ApiError> {
        if self.joined(id, peer)? {
            Ok(())
        } else {
            Err(ApiError::new(ApiCode::PeerNotInRoom, format!("user {peer} has no connection to room {id}")))
        }
    }

    /// Lets `peer`'s client into the room under the spec's rules, or says why not. Presence
    /// is media state: it is not recorded as a change and never reaches the store.
    pub fn admit(&mut self, id: &RoomId, peer: &PeerId) -> Result<(), ApiError> {
        if self.is_blocked(peer) {
            return Err(ApiError::new(ApiCode::IllegalClient, format!("user {peer} is blocked")));
        }
        let connections = self.connection_count();
        let room = self.rooms.get_mut(id).ok_or_else(|| room_not_found(id))?;
        if let RoomKind::Convo { invited, .. } = &room.kind
            && !invited.contains(peer)
        {
            return Err(ApiError::new(ApiCode::NotInvited, format!("user {peer} was not invited to room {id}")));
        }
        if !room.join_enabled {
            return Err(ApiError::new(ApiCode::JoinDisabled, format!("joining room {id} is disabled")));
        }
        if room.connected.contains(peer) {
            return Err(ApiError::new(
                ApiCode::AlreadyConnected,
                format!("user {peer} already has a connection to room {id}"),
            ));
        }
        if let RoomKind::Convo { max_members, .. } = room.kind
            && max_members > 0
            && room.connected.len() >= max_members as usize
        {
            return Err(ApiError::new(ApiCode::RoomFull, format!("room {id} has its {max_members} members")));
        }
        let licensed = self.limits.max_connections;
        if licensed > 0 && connections >= licensed as usize {
            return Err(ApiError::new(
                ApiCode::LicenceExceeded,
                format!("this server is licensed for {licensed} connections at once"),
            ));
        }
        room.connected.insert(peer.clone());
        Ok(())
    }

    /// What `peer` may publish in the room: (audio, video). Conversation members publish
    /// both; in a live room the master does, a co-host what its kind allows, and the
    /// audience nothing (50009).
    pub fn publish_rights(&self, id: &RoomId, peer: &PeerId) -> Result<PublishRights, ApiError> {
        let room = self.room(id)?;
        if let Some(origin) = &room.origin {
            return Err(ApiError::new(
                ApiCode::MayNotProduce,
                format!("room {id} is a mirror of node {origin}'s room: hosts publish there"),
            ));
        }
        let full = PublishRights { audio: true, video: true, max_bitrate: room.max_bitrate };
        match &room.kind {
            RoomKind::Convo { .. } => Ok(full),
            RoomKind::Live { .. } if room.master == *peer => Ok(full),
            RoomKind::Live { live_members } => match live_members.iter().find(|m| m.peer == *peer) {
                Some(member) => Ok(PublishRights {
                    audio: true,
                    video: member.kind == CohostKind::Video,
                    max_bitrate: member.max_bitrate.min(room.max_bitrate),
                }),
                None => {
                    Err(ApiError::new(ApiCode::MayNotProduce, format!("user {peer} is in the audience of room {id}")))
                }
            },
        }
    }

    /// The rooms whose published tracks the clients of `id` see: itself and its merge group,
    /// `id` first.
    pub fn visible_rooms(&self, id: &RoomId) -> Vec<RoomId> {
        std::iter::once(id.clone()).chain(self.merged_with(id).unwrap_or_default()).collect()
    }

    /// `peer`'s client left (or was removed); false when it was not connected.
    pub fn depart(&mut self, id: &RoomId, peer: &PeerId) -> bool {
        self.rooms.get_mut(id).is_some_and(|room| room.connected.remove(peer))
    }

    pub fn add_live_member(&mut self, id: &RoomId, member: LiveMember) -> Result<(), ApiError> {
        let room = self.live_room(id)?;
        if room.master == member.peer {
            return Err(ApiError::request(format!("user {} is the master of room {id}", member.peer)));
        }
        if self.is_blocked(&member.peer) {
            return Err(ApiError::request(format!("user {} is blocked", member.peer)));
        }
        if let RoomKind::Live { live_members } = &mut self.room_mut(id)?.kind {
            match live_members.iter_mut().find(|m| m.peer == member.peer) {
                Some(existing) => *existing = member,
                None => live_members.push(member),
            }
        }
        Ok(())
    }

    pub fn live_members(&self, id: &RoomId) -> Result<Vec<PeerId>, ApiError> {
        match &self.live_room(id)?.kind {
            RoomKind::Live { live_members } => Ok(live_members.iter().map(|m| m.peer.clone()).collect()),
            RoomKind::Convo { .. } => Ok(Vec::new()),
        }
    }

    pub fn remove_live_member(&mut self, id: &RoomId, peer: &PeerId) -> Result<(), ApiError> {
        let room = self.live_room(id)?;
        let RoomKind::Live { live_members } = &room.kind else { return Ok(()) };
        if !live_members.iter().any(|m| m.peer == *peer) {
            return Err(ApiError::new(
                ApiCode::PeerNotInRoom,
                format!("user {peer} is not a live member of room {id}"),
            ));
        }
        if let RoomKind::Live { live_members } = &mut self.room_mut(id)?.kind {
            live_members.retain(|m| m.peer != *peer);
        }
        Ok(())
    }

    /// The other rooms of `id`'s merge group.
    pub fn merged_with(&self, id: &RoomId) -> Result<Vec<RoomId>, ApiError> {
        let room = self.room(id)?;
        Ok(room
            .merge_group
            .and_then(|g| self.groups.get(&g))
            .map(|members| members.iter().filter(|m| *m != id).cloned().collect())
            .unwrap_or_default())
    }

    /// Links `other` with `id`: their groups become one.
    pub fn merge(&mut self, id: &RoomId, other: &RoomId) -> Result<(), ApiError> {
        let target = self.live_room(id)?;
        let target_group = target.merge_group;
        let source = self
            .rooms
            .get(other)
            .ok_or_else(|| ApiError::new(ApiCode::MergedRoomNotFound, format!("no open room {other} to merge")))?;
        if !source.is_live() {
            return Err(ApiError::request(format!("room {other} is not a live room")));
        }
        if id == other {
            return Err(ApiError::request("a room cannot be merged with itself"));
        }
        let source_group = source.merge_group;
        if target_group.is_some() && target_group == source_group {
            return Err(ApiError::new(ApiCode::AlreadyMerged, format!("rooms {id} and {other} are already merged")));
        }
        let group = match target_group.or(source_group) {
            Some(group) => group,
            None => self.fresh_group_id(),
        };
        let mut moving: Vec<RoomId> = vec![id.clone(), other.clone()];
        for old in [target_group, source_group].into_iter().flatten().filter(|&g| g != group) {
            moving.extend(self.groups.remove(&old).unwrap_or_default());
        }
        for room in moving {
            if let Some(r) = self.rooms.get_mut(&room) {
                r.merge_group = Some(group);
                self.changes.rooms.insert(room.clone());
            }
            self.groups.entry(group).or_default().insert(room);
        }
        Ok(())
    }

    fn fresh_group_id(&self) -> u64 {
        let mut rng = rand::rng();
        loop {
            let group = rng.random::<u64>();
            if !self.groups.contains_key(&group) {
                return group;
            }
        }
    }

    /// The host of `id` takes it out of its merge group.
    pub fn separate_by_host(&mut self, id: &RoomId, host: &PeerId) -> Result<(), ApiError> {
        let room = self.live_room(id)?;
        if room.master != *host {
            return Err(ApiError::new(ApiCode::PeerNotInRoom, format!("user {host} is not the host of room {id}")));
        }
        if room.merge_group.is_none() {
            return Err(ApiError::new(ApiCode::MergedRoomNotFound, format!("room {id} is not merged")));
        }
        self.leave_group(id);
        Ok(())
    }

    /// Takes `other` out of `id`'s merge group.
    pub fn separate(&mut self, id: &RoomId, other: &RoomId) -> Result<(), ApiError> {
        let group = self.live_room(id)?.merge_group;
        let in_group = group.is_some() && self.rooms.get(other).and_then(|r| r.merge_group) == group && id != other;
        if !in_group {
            return Err(ApiError::new(
                ApiCode::MergedRoomNotFound,
                format!("room {other} is not merged with room {id}"),
            ));
        }
        self.leave_group(other);
        Ok(())
    }

    /// Removes `id` from its group; a group left with one room dissolves.
    fn leave_group(&mut self, id: &RoomId) {
        let Some(group) = self.rooms.get_mut(id).and_then(|r| r.merge_group.take()) else { return };
        self.changes.rooms.insert(id.clone());
        let Some(members) = self.groups.get_mut(&group) else { return };
        members.remove(id);
        if members.len() <= 1 {
            for last in std::mem::take(members) {
                if let Some(r) = self.rooms.get_mut(&last) {
                    r.merge_group = None;
                }
                self.changes.rooms.insert(last);
            }
            self.groups.remove(&group);
        }
    }

    /// The rooms merged with live room `id`, whose tracks its audience may pause; 50010 when
    /// it is not merged.
    pub fn merged_rooms(&self, id: &RoomId) -> Result<Vec<RoomId>, ApiError> {
        if self.live_room(id)?.merge_group.is_none() {
            return Err(ApiError::new(ApiCode::MergedRoomNotFound, format!("room {id} is not merged")));
        }
        self.merged_with(id)
    }

    /// Adds a mirror of live room `id` on `worker`, or on the least loaded worker that holds
    /// no part of the room when `worker` is `None`. `cpu` is each worker's load, by index.
    pub fn add_mirror(&mut self, id: &RoomId, worker: Option<usize>, cpu: &[f64]) -> Result<usize, ApiError> {
        let room = self.live_room(id)?;
        let holds = |w: usize| w == room.worker || room.mirrors.contains(&w);
        let chosen = match worker {
            Some(w) if holds(w) => {
                return Err(ApiError::new(ApiCode::MirrorExists, format!("worker {w} already holds room {id}")));
            }
            Some(w) => w,
            None => (0..self.workers)
                .filter(|&w| !holds(w))
                .min_by(|&a, &b| {
                    let load = |w: usize| cpu.get(w).copied().unwrap_or(0.0);
                    load(a).total_cmp(&load(b))
                })
                .ok_or_else(|| ApiError::new(ApiCode::NoWorker, format!("every worker already holds room {id}")))?,
        };
        self.room_mut(id)?.mirrors.push(chosen);
        Ok(chosen)
    }

    pub fn record_status(&self, id: &RoomId) -> Result<u8, ApiError> {
        Ok(self.room(id)?.record_status)
    }

    pub fn recording(&self, id: &RecordId) -> Result<&Recording, ApiError> {
        self.recordings.get(id).ok_or_else(|| recording_not_found(id))
    }

    fn recording_mut(&mut self, id: &RecordId) -> Result<&mut Recording, ApiError> {
        self.recordings.get_mut(id).ok_or_else(|| recording_not_found(id))
    }

    pub fn recordings(&self) -> impl Iterator<Item = &Recording> {
        self.recordings.values()
    }

    pub fn fresh_record_id(&self) -> RecordId {
        loop {
            let id = self.identity.generate_record_id();
            if !self.recordings.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn add_recording(&mut self, recording: Recording) {
        self.changes.recordings.insert(recording.id.clone());
        self.recordings.insert(recording.id.clone(), recording);
    }

    /// Registers `recording` (status 1) as the room's current one, unless the room's latest
    /// recording is still capturing (50020).
    pub fn begin_recording(&mut self, room: &RoomId, recording: Recording) -> Result<(), ApiError> {
        let current = self.room(room)?.record_status;
        if record_status::is_capturing(current) {
            return Err(ApiError::new(ApiCode::AlreadyRecording, format!("room {room} is already being recorded")));
        }
        let entry = self.room_mut(room)?;
        entry.record_status = recording.status;
        entry.recording = Some(recording.id.clone());
        self.changes.rooms.insert(room.clone());
        self.add_recording(recording);
        Ok(())
    }

    /// Moves a recording to `status` (with the reason for 7), and its room's status along
    /// when it is still the room's latest recording.
    pub fn set_recording_status(
        &mut self,
        id: &RecordId,
        status: u8,
        error: Option<String>,
    ) -> Result<&Recording, ApiError> {
        let recording = self.recording_mut(id)?;
        recording.status = status;
        recording.msg = error.unwrap_or_default();
        let room_id = recording.room.clone();
        self.changes.recordings.insert(id.clone());
        if let Some(room_id) = room_id
            && let Some(room) = self.rooms.get_mut(&room_id)
            && room.recording.as_ref() == Some(id)
        {
            room.record_status = status;
            self.changes.rooms.insert(room_id);
        }
        Ok(&self.recordings[id])
    }

    /// Records the composed file of a recording and marks it done (6).
    pub fn finish_recording(&mut self, id: &RecordId, file: String, size: u64) -> Result<(), ApiError> {
        let recording = self.recording_mut(id)?;
        recording.file = file;
        recording.size = size;
        self.set_recording_status(id, record_status::PROCESSING_DONE, None).map(|_| ())
    }

    /// Changes recording `id` with `change`; 50019 when there is none.
    pub fn update_recording<R>(
        &mut self,
        id: &RecordId,
        change: impl FnOnce(&mut Recording) -> R,
    ) -> Result<R, ApiError> {
        let recording = self.recording_mut(id)?;
        let result = change(recording);
        self.changes.recordings.insert(id.clone());
        Ok(result)
    }

    /// Forgets recording `id` (its file is the caller's to remove); a room whose latest
    /// recording it was is not recorded any more (status 0).
    pub fn remove_recording(&mut self, id: &RecordId) -> Option<Recording> {
        let removed = self.recordings.remove(id)?;
        self.changes.recordings.insert(id.clone());
        if let Some(room_id) = &removed.room
            && let Some(room) = self.rooms.get_mut(room_id)
            && room.recording.as_ref() == Some(id)
        {
            room.recording = None;
            room.record_status = record_status::NOT_RECORDED;
            self.changes.rooms.insert(room_id.clone());
        }
        Some(removed)
    }
}

fn recording_not_found(id: &RecordId) -> ApiError {
    ApiError::new(ApiCode::RecordingNotFound, format!("no recording {id}"))
}

/// Appends the peers of `more` not yet in `list`, keeping order.
fn push_unique(list: &mut Vec<PeerId>, more: Vec<PeerId>) {
    for peer in more {
        if !list.contains(&peer) {
            list.push(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> PeerId {
        PeerId::try_from(text.to_owned()).unwrap()
    }

    fn registry(workers: usize) -> Registry {
        Registry::new(ServerIdentity::from_key([7; 32]), workers, Limits::default(), Contents::default())
    }

    fn live(master: &str) -> NewRoom {
        NewRoom {
            master: peer(master),
            requested_id: None,
            protocol: Protocol::Udp,
            min_bitrate: 600_000,
            max_bitrate: 3_000_000,
            kind: NewRoomKind::Live,
            demo: false,
        }
    }

    fn open_live(reg: &mut Registry, master: &str) -> RoomId {
        reg.create(live(master)).unwrap().id.clone()
    }

    fn group_of(reg: &Registry, id: &RoomId) -> BTreeSet<RoomId> {
        reg.merged_with(id).unwrap().into_iter().collect()
    }

    #[test]
    fn room_id_rules() {
        let mut reg = registry(1);
        let a = open_live(&mut reg, "alice");
        let again = NewRoom { requested_id: Some(a.clone()), ..live("alice") };
        assert_eq!(reg.create(again.clone()).unwrap_err().code, ApiCode::RoomExists);
        let other_master = NewRoom { requested_id: Some(a.clone()), ..live("bob") };
        assert_ne!(reg.create(other_master).unwrap().id, a);
        let foreign = ServerIdentity::from_key([8; 32]).generate_room_id();
        let foreign_request = NewRoom { requested_id: Some(foreign.clone()), ..live("carol") };
        assert_ne!(reg.create(foreign_request).unwrap().id, foreign);
        reg.close(&a).unwrap();
        assert_eq!(reg.create(NewRoom { requested_id: Some(a.clone()), ..live("dave") }).unwrap().id, a);
    }

    #[test]
    fn invitation_codes_are_unique_and_freed_on_close() {
        let mut reg = registry(2);
        let ids: Vec<RoomId> = (0..200).map(|i| open_live(&mut reg, &format!("m{i}"))).collect();
        let codes: BTreeSet<u32> = ids.iter().map(|id| reg.room(id).unwrap().invitation_code).collect();
        assert_eq!(codes.len(), ids.len());
        let code = reg.room(&ids[0]).unwrap().invitation_code;
        reg.close(&ids[0]).unwrap();
        assert!(reg.room_by_code(code).is_none());
    }

    #[test]
    fn merges_are_transitive_and_separation_keeps_the_rest_together() {
        let mut reg = registry(1);
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|m| open_live(&mut reg, m));
        reg.merge(&a, &b).unwrap();
        reg.merge(&a, &c).unwrap();
        reg.merge(&b, &d).unwrap();
        assert_eq!(group_of(&reg, &a), [b.clone(), c.clone(), d.clone()].into());
        assert_eq!(reg.merge(&c, &d).unwrap_err().code, ApiCode::AlreadyMerged);
        reg.separate(&a, &b).unwrap();
        assert!(group_of(&reg, &b).is_empty());
        assert_eq!(group_of(&reg, &d), [a.clone(), c.clone()].into());
        assert_eq!(reg.separate(&a, &b).unwrap_err().code, ApiCode::MergedRoomNotFound);
        reg.separate_by_host(&c, &peer("c")).unwrap();
        assert_eq!(reg.separate_by_host(&d, &peer("a")).unwrap_err().code, ApiCode::PeerNotInRoom);
        assert_eq!(group_of(&reg, &a), [d.clone()].into());
        reg.separate_by_host(&d, &peer("d")).unwrap();
        assert!(group_of(&reg, &a).is_empty(), "a group of one dissolves");
        assert_eq!(reg.separate_by_host(&a, &peer("a")).unwrap_err().code, ApiCode::MergedRoomNotFound);
    }

    #[test]
    fn merging_two_groups_joins_them() {
        let mut reg = registry(1);
        let [a, b, c, d] = ["a", "b", "c", "d"].map(|m| open_live(&mut reg, m));
        reg.merge(&a, &b).unwrap();
        reg.merge(&c, &d).unwrap();
        reg.merge(&b, &c).unwrap();
        assert_eq!(group_of(&reg, &d), [a, b, c].into());
    }

    #[test]
    fn merge_refusals() {
        let mut reg = registry(1);
        let a = open_live(&mut reg, "a");
        let convo = reg
            .create(NewRoom { kind: NewRoomKind::Convo { members: vec![], max_members: None }, ..live("c") })
            .unwrap()
            .id
            .clone();
        assert_eq!(reg.merge(&a, &a).unwrap_err().code, ApiCode::InvalidRequest);
        assert_eq!(reg.merge(&a, &convo).unwrap_err().code, ApiCode::InvalidRequest);
        assert_eq!(reg.merge(&convo, &a).unwrap_err().code, ApiCode::InvalidRequest);
        let gone = ServerIdentity::from_key([7; 32]).generate_room_id();
        assert_eq!(reg.merge(&a, &gone).unwrap_err().code, ApiCode::MergedRoomNotFound);
        assert_eq!(reg.merge(&gone, &a).unwrap_err().code, ApiCode::RoomNotFound);
    }

    #[test]
    fn closing_a_merged_room_leaves_the_others_merged() {
        let mut reg = registry(1);
        let [a, b, c] = ["a", "b", "c"].map(|m| open_live(&mut reg, m));
        reg.merge(&a, &b).unwrap();
        reg.merge(&a, &c).unwrap();
        reg.close(&a).unwrap();
        assert_eq!(group_of(&reg, &b), [c].into());
    }

    #[test]
    fn a_held_mirror_keeps_the_origin_id_and_code_and_takes_no_publisher() {
        let mut origin = registry(1);
        let a = open_live(&mut origin, "host");
        let room = origin.room(&a).unwrap().clone();
        let mirror = || MirrorRoom {
            id: room.id.clone(),
            master: room.master.clone(),
            invitation_code: room.invitation_code,
            protocol: room.protocol,
            min_bitrate: room.min_bitrate,
            max_bitrate: room.max_bitrate,
            origin: "rtc-1".into(),
            feed: false,
        };
        let mut here = registry(2);
        assert_eq!(here.hold_mirror(mirror(), Some(1)).unwrap(), 1);
        assert_eq!(here.hold_mirror(mirror(), None).unwrap(), 1, "holding again keeps it");
        assert_eq!(here.room_by_code(room.invitation_code).unwrap().id, a);
        assert!(here.take_changes().rooms.contains(&a), "held mirrors are stored");
        assert_eq!(here.publish_rights(&a, &peer("host")).unwrap_err().code, ApiCode::MayNotProduce);
        let other = MirrorRoom { origin: "rtc-3".into(), ..mirror() };
        assert_eq!(here.hold_mirror(other, None).unwrap_err().code, ApiCode::InvalidRequest);

        let on = |alias: &str| RemoteMirror { alias: alias.into(), work_pid: 7, feed: false };
        origin.add_remote_mirror(&a, on("rtc-2")).unwrap();
        assert_eq!(origin.add_remote_mirror(&a, on("rtc-2")).unwrap_err().code, ApiCode::MirrorExists);
        origin.add_remote_mirror(&a, on("rtc-3")).unwrap();
        assert_eq!(origin.room(&a).unwrap().remote_mirrors.len(), 2);
    }

    #[test]
    fn a_group_set_from_elsewhere_takes_the_rooms_open_here_out_of_their_groups() {
        let mut reg = registry(1);
        let [a, b, c] = ["a", "b", "c"].map(|m| open_live(&mut reg, m));
        reg.merge(&a, &b).unwrap();
        let elsewhere = RoomId::try_from("elsewhere".to_owned()).unwrap();
        reg.set_group(&[b.clone(), c.clone(), elsewhere]);
        assert_eq!(reg.merged_with(&a).unwrap(), Vec::<RoomId>::new(), "a left alone");
        assert_eq!(reg.merged_with(&b).unwrap(), vec![c.clone()], "only the rooms open here are grouped");
        reg.set_group(std::slice::from_ref(&c));
        assert!(reg.merged_with(&b).unwrap().is_empty() && reg.room(&c).unwrap().merge_group.is_none());
        assert_eq!(reg.group_members(&a).unwrap(), vec![a.clone()]);

        let feed = RemoteMirror { alias: "rtc-2".into(), work_pid: 1, feed: true };
        reg.add_remote_mirror(&a, feed.clone()).unwrap();
        reg.add_remote_mirror(&a, feed).unwrap();
        assert!(reg.drop_feed(&a, "rtc-2"));
        assert!(!reg.drop_feed(&a, "rtc-2"));
        reg.add_remote_mirror(&a, RemoteMirror { alias: "rtc-2".into(), work_pid: 1, feed: false }).unwrap();
        assert!(!reg.drop_feed(&a, "rtc-2"), "a mirror for an audience is no feed");
    }

    #[test]
    fn a_registry_with_a_room_or_a_record_is_not_empty() {
        let mut reg = registry(1);
        assert!(reg.is_empty());
        let a = open_live(&mut reg, "a");
        assert!(!reg.is_empty());
        reg.close(&a).unwrap();
        assert!(reg.is_empty(), "a closed room leaves nothing");
        let record = reg.fresh_record_id();
        reg.add_recording(Recording {
            id: record,
            status: record_status::PROCESSING_DONE,
            file: "f.mp4".into(),
            size: 1,
            room: None,
            created_ms: 0,
            msg: String::new(),
            upload_expires: None,
        });
        assert!(!reg.is_empty(), "a record's id carries the tag");
    }

    #[test]
    fn mirrors_go_to_workers_that_hold_no_part_of_the_room() {
        let mut reg = registry(3);
        let a = open_live(&mut reg, "a");
        let origin = reg.room(&a).unwrap().worker;
        assert_eq!(reg.add_mirror(&a, Some(origin), &[]).unwrap_err().code, ApiCode::MirrorExists);
        let mut cpu = [50.0; 3];
        let idle = (0..3).find(|&w| w != origin).unwrap();
        cpu[idle] = 1.0;
        assert_eq!(reg.add_mirror(&a, None, &cpu).unwrap(), idle);
        assert_eq!(reg.add_mirror(&a, Some(idle), &cpu).unwrap_err().code, ApiCode::MirrorExists);
        reg.add_mirror(&a, None, &cpu).unwrap();
        assert_eq!(reg.add_mirror(&a, None, &cpu).unwrap_err().code, ApiCode::NoWorker);
    }

    #[test]
    fn live_members_and_their_refusals() {
        let mut reg = registry(1);
        let a = open_live(&mut reg, "host");
        let member = |p: &str, kind| LiveMember { peer: peer(p), kind, max_bitrate: 1_000 };
        reg.add_live_member(&a, member("x", CohostKind::Audio)).unwrap();
        reg.add_live_member(&a, member("y", CohostKind::Video)).unwrap();
        reg.add_live_member(&a, member("x", CohostKind::Video)).unwrap();
        assert_eq!(reg.live_members(&a).unwrap(), vec![peer("x"), peer("y")]);
        assert_eq!(
            reg.add_live_member(&a, member("host", CohostKind::Audio)).unwrap_err().code,
            ApiCode::InvalidRequest
        );
        reg.remove_live_member(&a, &peer("x")).unwrap();
        assert_eq!(reg.remove_live_member(&a, &peer("x")).unwrap_err().code, ApiCode::PeerNotInRoom);
    }

    #[test]
    fn recycling_refuses_new_rooms_only() {
        let mut reg = registry(1);
        let a = open_live(&mut reg, "a");
        reg.recycle();
        assert_eq!(reg.create(live("b")).unwrap_err().code, ApiCode::NoWorker);
        assert!(reg.room(&a).is_ok());
    }

    #[test]
    fn reload_repairs_placement_on_fewer_workers() {
        let mut reg = registry(4);
        let ids: Vec<RoomId> = (0..8).map(|i| open_live(&mut reg, &format!("m{i}"))).collect();
        reg.add_mirror(&ids[0], None, &[]).unwrap();
        let rooms: Vec<Room> = reg.rooms().cloned().collect();
        let reloaded = Registry::new(
            ServerIdentity::from_key([7; 32]),
            1,
            Limits::default(),
            Contents { rooms, ..Contents::default() },
        );
        for id in &ids {
            let room = reloaded.room(id).unwrap();
            assert_eq!(room.worker, 0);
            assert!(room.mirrors.is_empty());
        }
    }

    #[test]
    fn a_live_rooms_connected_members_are_its_stage_in_order() {
        let mut reg = registry(1);
        let a = open_live(&mut reg, "zed");
        let member = |p: &str| LiveMember { peer: peer(p), kind: CohostKind::Audio, max_bitrate: 1_000 };
        reg.add_live_member(&a, member("bob")).unwrap();
        reg.add_live_member(&a, member("amy")).unwrap();
        for p in ["viewer", "zed", "amy", "another"] {
            reg.admit(&a, &peer(p)).unwrap();
        }
        let room = reg.room(&a).unwrap();
        assert_eq!(room.connected_members(), vec![peer("amy"), peer("zed")], "bob is not connected");
        assert_eq!(room.peers_visible_to(&peer("viewer")), vec![peer("amy"), peer("viewer"), peer("zed")]);
        assert_eq!(room.peers_visible_to(&peer("zed")).len(), 4);
    }

    #[test]
    fn admission_follows_the_conversation_room_rules() {
        let mut reg = registry(1);
        let members = vec![peer("bob"), peer("carol")];
        let convo = NewRoom { kind: NewRoomKind::Convo { members, max_members: Some(2) }, ..live("alice") };
        let id = reg.create(convo).unwrap().id.clone();
        assert_eq!(reg.admit(&id, &peer("mallory")).unwrap_err().code, ApiCode::NotInvited);
        reg.admit(&id, &peer("alice")).unwrap();
        assert_eq!(reg.admit(&id, &peer("alice")).unwrap_err().code, ApiCode::AlreadyConnected);
        reg.admit(&id, &peer("bob")).unwrap();
        assert_eq!(reg.admit(&id, &peer("carol")).unwrap_err().code, ApiCode::RoomFull);
        assert!(reg.depart(&id, &peer("bob")));
        assert!(!reg.depart(&id, &peer("bob")));
        reg.set_join_enabled(&id, false).unwrap();
        assert_eq!(reg.admit(&id, &peer("carol")).unwrap_err().code, ApiCode::JoinDisabled);
        reg.block(peer("carol"));
        assert_eq!(reg.admit(&id, &peer("carol")).unwrap_err().code, ApiCode::IllegalClient);
        assert!(reg.take_changes().rooms.contains(&id), "join enable is a change");
        reg.set_join_enabled(&id, true).unwrap();
        reg.take_changes();
        reg.admit(&id, &peer("bob")).unwrap();
        assert!(reg.take_changes().is_empty(), "presence is not persisted");
        assert_eq!(reg.room(&id).unwrap().connected_members(), vec![peer("alice"), peer("bob")]);
    }

    #[test]
    fn a_room_records_once_at_a_time_and_its_status_follows_its_latest_recording() {
        let mut reg = registry(1);
        let id = open_live(&mut reg, "host");
        let recording = |reg: &Registry| Recording {
            id: reg.fresh_record_id(),
            status: record_status::PREPARING,
            file: String::new(),
            size: 0,
            room: Some(id.clone()),
            created_ms: 0,
            msg: String::new(),
            upload_expires: None,
        };
        let first = recording(&reg);
        reg.begin_recording(&id, first.clone()).unwrap();
        assert_eq!(reg.record_status(&id).unwrap(), 1);
        reg.set_recording_status(&first.id, record_status::RECORDING, None).unwrap();
        let refused = reg.begin_recording(&id, recording(&reg)).unwrap_err();
        assert_eq!((refused.code, reg.record_status(&id).unwrap()), (ApiCode::AlreadyRecording, 2));
        reg.set_recording_status(&first.id, record_status::ERROR, Some("why".into())).unwrap();
        assert_eq!((reg.record_status(&id).unwrap(), reg.recording(&first.id).unwrap().msg.as_str()), (7, "why"));
        let second = recording(&reg);
        reg.begin_recording(&id, second.clone()).unwrap();
        reg.set_recording_status(&first.id, record_status::ERROR, None).unwrap();
        assert_eq!(reg.record_status(&id).unwrap(), 1, "the room follows its latest recording only");
        reg.finish_recording(&second.id, "a.mp4".into(), 9).unwrap();
        assert_eq!(reg.record_status(&id).unwrap(), 6);
        reg.remove_recording(&second.id).unwrap();
        assert_eq!(reg.record_status(&id).unwrap(), 0, "its latest recording removed, the room has none");
        assert!(reg.take_changes().rooms.contains(&id));
    }
}
