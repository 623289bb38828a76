//! Members that come and go: conversation rooms with a publishing host and members who join
//! over signalling, publish or watch (answering every new offer, as a browser does), send and
//! receive real SRTP, and end in one of the ways clients end (`Fate`); live rooms with a
//! WHIP publisher and WHEP players that connect and then `DELETE`, vanish, or never connect.
//!
//! Rules: a loop starts nothing new after its `until`, and what it started ends within a
//! bounded time after (a member's life, a consent expiry). A room whose members may have
//! vanished is deleted only after the next room's life (at least the server's timeouts), so
//! that the server's own timers, not the room's end, notice them; the other rooms are closed
//! with their host inside. Silent members' sockets are held unread in [`Graveyard`] until the
//! server's ping timeout has passed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uprtcd_dataplane::dtls::CertificateFingerprint;
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::peer::UdpPeer;

use super::{Count, Rng, Soak, Tally, sleep_until};
use crate::LoadError;
use crate::media::{self, Delivery, MeterHandle, Publisher, SentCounters, Transport};
use crate::sdp::{self, LocalEnd};
use crate::sfu::{RoomKind, Sfu};
use crate::uprtcd::Signalling;

/// How a member's session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// `leave`, then the WebSocket's closing handshake.
    Leave,
    /// The closing handshake without `leave`.
    Close,
    /// Its process killed: sockets closed by the kernel, no goodbye.
    Killed,
    /// `DELETE /room/{id}/peer/{peerId}`.
    Kicked,
    /// Its network gone: nothing more is read or sent, its sockets stay open.
    Silent,
    /// Its network gone, and back at once: the same peer joins again.
    Reconnect,
    /// Its media path gone, signalling kept: it waits to hear its transports closed.
    MediaLost,
}

const FATES: [(Fate, u64); 7] = [
    (Fate::Leave, 25),
    (Fate::Close, 15),
    (Fate::Killed, 15),
    (Fate::Kicked, 10),
    (Fate::Silent, 10),
    (Fate::Reconnect, 15),
    (Fate::MediaLost, 10),
];

/// What a member does while it is in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Viewer,
    Both,
}

const ROLES: [(Role, u64); 3] = [(Role::Publisher, 35), (Role::Viewer, 45), (Role::Both, 20)];

impl Role {
    fn publishes(self) -> bool {
        matches!(self, Role::Publisher | Role::Both)
    }

    fn watches(self) -> bool {
        matches!(self, Role::Viewer | Role::Both)
    }
}

/// How a WHEP player's session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlayerFate {
    Delete,
    Vanish,
    /// Offers and never connects.
    Abandon,
}

const PLAYER_FATES: [(PlayerFate, u64); 3] =
    [(PlayerFate::Delete, 45), (PlayerFate::Vanish, 45), (PlayerFate::Abandon, 10)];

/// The most a member waits to hear of its end (kicked, transports closed): a consent expiry
/// and then some.
const END_WAIT: Duration = Duration::from_secs(60);
/// How often a member reads its signalling.
const PUMP_INTERVAL: Duration = Duration::from_millis(250);
/// How long a member that came back stays before it leaves.
const COMEBACK_LIFE: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(5));
/// Consent expires 30 s after the last check (RFC 7675); a room whose WHIP and WHEP clients
/// may have vanished is deleted no sooner than this after them.
const CONSENT_EXPIRY: Duration = Duration::from_secs(30);
/// Beyond a server timeout, before the client gives up on its own.
const MARGIN: Duration = Duration::from_secs(5);

/// One client's media: its publisher's and its meter's threads, each with its own socket.
/// Dropped, the threads stop and the sockets close, with no goodbye; what went through is
/// counted.
struct Media<'t> {
    tally: &'t Tally,
    stop: Arc<AtomicBool>,
    publisher: Option<(Arc<SentCounters>, JoinHandle<Vec<Publisher>>)>,
    meter: Option<MeterHandle>,
    /// Transports it holds (publishing, receiving).
    transports: usize,
}

impl<'t> Media<'t> {
    fn new(tally: &'t Tally) -> Self {
        Self { tally, stop: Arc::new(AtomicBool::new(false)), publisher: None, meter: None, transports: 0 }
    }

    fn publish(&mut self, soak: &Soak<'_>, publisher: Publisher) {
        let (sent, thread) = media::spawn_publishers(vec![publisher], soak.stream, Arc::clone(&self.stop));
        self.publisher = Some((sent, thread));
        self.transports += 1;
    }

    fn watch(&mut self, peer: UdpPeer) -> Result<(), LoadError> {
        self.meter = Some(media::spawn_meter(peer, Arc::clone(&self.stop))?);
        self.transports += 1;
        Ok(())
    }
}

impl Drop for Media<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some((sent, thread)) = self.publisher.take() {
            let _ = thread.join();
            self.tally.add(Count::RtpSent, sent.snapshot().iter().sum());
        }
        if let Some(meter) = self.meter.take() {
            let mut delivery = Delivery::default();
            meter.take().add_to(&mut delivery);
            meter.join();
            self.tally.add(Count::RtpReceived, delivery.received);
        }
    }
}

impl std::fmt::Debug for Media<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").field("transports", &self.transports).finish_non_exhaustive()
    }
}

/// A receiving transport's end, kept to answer the server's later offers with.
#[derive(Debug)]
struct ReceivingEnd {
    ice: IceCredentials,
    fingerprint: CertificateFingerprint,
    candidate: SocketAddr,
}

impl ReceivingEnd {
    fn local(&self) -> LocalEnd<'_> {
        LocalEnd { ice: &self.ice, fingerprint: self.fingerprint, candidate: self.candidate }
    }
}

/// A member in a conversation room: its signalling, its media, its receiving end.
#[derive(Debug)]
struct Session<'t> {
    signalling: Signalling,
    media: Option<Media<'t>>,
    receiving: Option<ReceivingEnd>,
}

/// Why [`Session::pump`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// The event it waited for came.
    Heard,
    /// Its time was up.
    Elapsed,
    /// The server ended the session (room closed, kicked, replaced) or its socket closed.
    Ended,
}

impl Session<'_> {
    /// Reads signalling until `until` or until `wanted` returns true for an event's type,
    /// answering each new offer of the subscription as a browser would.
    fn pump(&mut self, tally: &Tally, until: Instant, mut wanted: impl FnMut(&str) -> bool) -> Pumped {
        loop {
            let mut events = Vec::new();
            let open = self.signalling.drain(|text| events.extend(serde_json::from_str::<Value>(text).ok()));
            for event in events {
                let kind = event["type"].as_str().unwrap_or_default();
                if wanted(kind) {
                    return Pumped::Heard;
                }
                match kind {
                    "room-closed" | "kicked" | "replaced" => return Pumped::Ended,
                    "offer" => {
                        let answered = self.receiving.as_ref().map(|end| {
                            let offer = event["sdp"].as_str().unwrap_or_default();
                            sdp::subscriber_answer(offer, &end.local())
                                .and_then(|answer| self.signalling.answer(&answer))
                        });
                        if let Some(Ok(())) = answered {
                            tally.one(Count::Renegotiations);
                        }
                    }
                    _ => {}
                }
            }
            if !open {
                return Pumped::Ended;
            }
            if Instant::now() >= until {
                return Pumped::Elapsed;
            }
            sleep_until(until, PUMP_INTERVAL);
        }
    }
}

/// Silent members' sockets, held unread until the server must have ended their sessions.
#[derive(Debug, Default)]
pub struct Graveyard(Mutex<Vec<(Instant, Signalling)>>);

impl Graveyard {
    fn bury(&self, signalling: Signalling, until: Instant) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((until, signalling));
    }

    /// Closes the sockets whose time has come.
    pub fn reap(&self, now: Instant) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|(until, _)| *until > now);
    }

    /// When the last one may be closed.
    pub fn last(&self) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(until, _)| *until).max()
    }
}

impl Soak<'_> {
    /// Joins `room` as `peer` and publishes, watches or both.
    fn join(&self, room: &str, peer: &str, role: Role) -> Result<Session<'_>, LoadError> {
        let mut signalling = self.server.connect(room, peer)?;
        self.tally.one(Count::Joins);
        let mut media = Media::new(&self.tally);
        let mut receiving = None;
        if role.publishes() {
            let (index, audio, video) = self.next_publisher();
            let peer = Transport::bind(self.client_ip())?.publish(&mut signalling, &self.identity, audio, video)?;
            media.publish(self, Publisher::new(index, peer, audio, video));
            self.tally.one(Count::Publishes);
        }
        if role.watches() {
            let transport = Transport::bind(self.client_ip())?;
            let local = transport.local(&self.identity)?;
            let end =
                ReceivingEnd { ice: local.ice.clone(), fingerprint: local.fingerprint, candidate: local.candidate };
            media.watch(transport.subscribe(&mut signalling, &self.identity)?)?;
            receiving = Some(end);
            self.tally.one(Count::Subscribes);
        }
        Ok(Session { signalling, media: Some(media), receiving })
    }

    fn delete_room(&self, room: &str) -> Result<(), LoadError> {
        self.server.call("DELETE", &format!("/room/{room}"), Value::Null).map(drop)
    }

    /// How long the server may take to end a silent member's session: it checks at each
    /// ping (every third of the ping timeout) whether the timeout has passed.
    fn silence_noticed(&self) -> Duration {
        self.plan.ping_timeout + self.plan.ping_timeout / 3 + MARGIN
    }

    /// Deletes a room its members are gone from (or vanished from).
    fn retire(&self, room: &str) {
        match self.delete_room(room) {
            Ok(()) => self.tally.one(Count::RoomsDeleted),
            Err(e) => self.tally.fail("room delete", &e),
        }
    }

    /// Rounds one after another until `until`, each named by its serial number. A round
    /// may hand back its room to be deleted after the next round's life, long enough for the
    /// server's timeouts to end the clients that vanished in it; the last such room is
    /// deleted after `linger`.
    fn rounds(
        &self,
        until: Instant,
        linger: Duration,
        what: &'static str,
        mut round: impl FnMut(u64) -> Result<Option<String>, LoadError>,
    ) {
        let mut later: Option<String> = None;
        let mut serial = 0;
        while self.running(until) {
            serial += 1;
            match round(serial) {
                Ok(kept) => {
                    if let Some(room) = std::mem::replace(&mut later, kept) {
                        self.retire(&room);
                    }
                }
                Err(e) => {
                    self.tally.fail(what, &e);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        if let Some(room) = later {
            self.pause(linger);
            self.retire(&room);
        }
    }

    /// Clients of one slot, one after another, until `end`: `client` runs each, named
    /// `{name}-{generation}`.
    fn generations(
        &self,
        name: &str,
        seed: u64,
        end: Instant,
        what: &'static str,
        mut client: impl FnMut(&str, &mut Rng) -> Result<(), LoadError>,
    ) {
        let mut rng = Rng::new(seed, 0);
        let last_start = end.checked_sub(self.plan.member_life.0).unwrap_or(end);
        let mut generation = 0;
        while self.running(last_start) {
            generation += 1;
            if let Err(e) = client(&format!("{name}-{generation}"), &mut rng) {
                self.tally.fail(what, &e);
                sleep_until(end, Duration::from_secs(1));
            }
        }
    }

    /// Conversation rooms, one after another, until `until`.
    pub fn room_loop(&self, index: usize, seed: u64, until: Instant, graveyard: &Graveyard) {
        let mut rng = Rng::new(seed, 100 + index as u64);
        self.rounds(until, self.silence_noticed(), "room", |serial| {
            self.room_round(&format!("r{index}-{serial}"), &mut rng, until, graveyard)
        });
    }

    /// One room's life: its host publishes while `slots` members come and go. Returns the
    /// room when it is left open for later deletion.
    fn room_round(
        &self,
        name: &str,
        rng: &mut Rng,
        until: Instant,
        graveyard: &Graveyard,
    ) -> Result<Option<String>, LoadError> {
        let host = format!("{name}-host");
        let room = self.server.create_room(RoomKind::Conversation { max_members: 16 }, &host, &[])?;
        self.tally.one(Count::RoomsCreated);
        let end = (Instant::now() + rng.between(self.plan.room_life)).min(until);
        let mut anchor = match self.join(&room, &host, Role::Publisher) {
            Ok(anchor) => anchor,
            Err(e) => {
                self.retire(&room);
                return Err(e);
            }
        };
        let ended = std::thread::scope(|scope| {
            let slots: Vec<_> = (0..self.plan.slots)
                .map(|slot| {
                    let (room, seed) = (&room, rng.next_u64());
                    scope.spawn(move || {
                        self.generations(&format!("{name}-s{slot}"), seed, end, "member", |peer, rng| {
                            self.member(room, peer, rng, end, graveyard)
                        })
                    })
                })
                .collect();
            // The host stays (and answers pings) until its members' last ends are over.
            let mut pumped = anchor.pump(&self.tally, end, |_| false);
            while pumped != Pumped::Ended && slots.iter().any(|slot| !slot.is_finished()) {
                pumped = anchor.pump(&self.tally, Instant::now() + PUMP_INTERVAL, |_| false);
            }
            pumped == Pumped::Ended
        });
        if ended {
            let error = LoadError::Signalling(format!("the server ended the session of {host}, which read on"));
            self.tally.fail("room host", &error);
        } else if rng.chance(50) {
            match self.delete_room(&room) {
                Ok(()) => {
                    anchor.pump(&self.tally, Instant::now() + END_WAIT, |kind| kind == "room-closed");
                    self.tally.one(Count::RoomsClosedWithMembers);
                    return Ok(None);
                }
                Err(e) => self.tally.fail("room delete", &e),
            }
        } else {
            drop(anchor.media.take());
            match anchor.signalling.leave() {
                Ok(()) => self.tally.one(Count::Left),
                Err(e) => self.tally.fail("room host", &e),
            }
        }
        Ok(Some(room))
    }

    /// One member: invited, joined, in the room for a while, then gone as its fate says.
    fn member(
        &self,
        room: &str,
        peer: &str,
        rng: &mut Rng,
        end: Instant,
        graveyard: &Graveyard,
    ) -> Result<(), LoadError> {
        self.server.call("POST", &format!("/room/{room}/convo/members"), json!({ "memberIds": [peer] }))?;
        let role = rng.pick(&ROLES);
        let mut session = self.join(room, peer, role)?;
        let life = (Instant::now() + rng.between(self.plan.member_life)).min(end);
        if session.pump(&self.tally, life, |_| false) == Pumped::Ended {
            return Ok(());
        }
        match rng.pick(&FATES) {
            Fate::Leave => {
                drop(session.media.take());
                session.signalling.leave()?;
                self.tally.one(Count::Left);
            }
            Fate::Close => {
                drop(session.media.take());
                session.signalling.close()?;
                self.tally.one(Count::Closed);
            }
            Fate::Killed => {
                drop(session);
                self.tally.one(Count::Killed);
            }
            Fate::Kicked => {
                self.server.call("DELETE", &format!("/room/{room}/peer/{peer}"), Value::Null)?;
                session.pump(&self.tally, Instant::now() + END_WAIT, |kind| kind == "kicked");
                self.tally.one(Count::Kicked);
            }
            Fate::Silent => {
                drop(session.media.take());
                graveyard.bury(session.signalling, Instant::now() + self.silence_noticed());
                self.tally.one(Count::Silent);
            }
            Fate::Reconnect => {
                drop(session.media.take());
                // The server probes the silent session, then replaces it.
                let mut again = self.join(room, peer, role)?;
                drop(session);
                self.tally.one(Count::Reconnected);
                let life = Instant::now() + rng.between(COMEBACK_LIFE);
                if again.pump(&self.tally, life, |_| false) != Pumped::Ended {
                    drop(again.media.take());
                    again.signalling.leave()?;
                    self.tally.one(Count::Left);
                }
            }
            Fate::MediaLost => {
                let transports = session.media.take().map_or(0, |media| media.transports);
                let mut closed = 0;
                let heard = session.pump(&self.tally, Instant::now() + END_WAIT, |kind| {
                    closed += usize::from(kind == "transport-closed");
                    closed == transports
                });
                if heard != Pumped::Heard {
                    return Err(LoadError::Signalling(format!(
                        "{peer}: {closed} of {transports} transports reported closed within {END_WAIT:?} of losing media ({heard:?})"
                    )));
                }
                session.signalling.leave()?;
                self.tally.one(Count::MediaLost);
            }
        }
        Ok(())
    }

    /// Live rooms with a WHIP publisher and WHEP players, one after another, until `until`.
    pub fn whip_loop(&self, index: usize, seed: u64, until: Instant) {
        let mut rng = Rng::new(seed, 200 + index as u64);
        self.rounds(until, CONSENT_EXPIRY + MARGIN, "whip room", |serial| {
            let host = format!("w{index}-{serial}-host");
            let room = self.server.create_room(RoomKind::Live, &host, &[])?;
            self.tally.one(Count::RoomsCreated);
            if let Err(e) = self.whip_round(&room, &host, &mut rng, until) {
                self.tally.fail("whip", &e);
            }
            // Its vanished clients leave by consent expiry before it is deleted.
            Ok(Some(room))
        });
    }

    /// A WHIP publisher in `room` until its end, with players coming and going; then it
    /// `DELETE`s or vanishes.
    fn whip_round(&self, room: &str, host: &str, rng: &mut Rng, until: Instant) -> Result<(), LoadError> {
        let end = (Instant::now() + rng.between(self.plan.room_life)).min(until);
        let (index, audio, video) = self.next_publisher();
        let (peer, location) =
            self.http_session(room, host, "whip", |local| sdp::publisher_offer(local, audio, video))?;
        let mut media = Media::new(&self.tally);
        media.publish(self, Publisher::new(index, peer, audio, video));
        self.tally.one(Count::WhipSessions);
        std::thread::scope(|scope| {
            for slot in 0..self.plan.players {
                let seed = rng.next_u64();
                scope.spawn(move || {
                    self.generations(&format!("{host}-v{slot}"), seed, end, "whep", |peer, rng| {
                        self.player(room, peer, rng, end)
                    })
                });
            }
            sleep_until(end, end.saturating_duration_since(Instant::now()));
        });
        drop(media);
        if rng.chance(50) {
            self.delete_location(&location)?;
            self.tally.one(Count::WhipWhepDeleted);
        } else {
            self.tally.one(Count::WhipWhepVanished);
        }
        Ok(())
    }

    /// One WHEP player: it plays for a while and then `DELETE`s or vanishes, or it offers and
    /// never connects.
    fn player(&self, room: &str, peer: &str, rng: &mut Rng, end: Instant) -> Result<(), LoadError> {
        let fate = rng.pick(&PLAYER_FATES);
        if fate == PlayerFate::Abandon {
            let transport = Transport::bind(self.client_ip())?;
            let offer = sdp::player_offer(&transport.local(&self.identity)?);
            self.http_offer(room, peer, "whep", &offer)?;
            self.tally.one(Count::WhepSessions);
            self.tally.one(Count::WhipWhepAbandoned);
            sleep_until(end, rng.between(self.plan.member_life));
            return Ok(());
        }
        let (peer, location) = self.http_session(room, peer, "whep", sdp::player_offer)?;
        let mut media = Media::new(&self.tally);
        media.watch(peer)?;
        self.tally.one(Count::WhepSessions);
        sleep_until(end, rng.between(self.plan.member_life));
        drop(media);
        if fate == PlayerFate::Delete {
            self.delete_location(&location)?;
            self.tally.one(Count::WhipWhepDeleted);
        } else {
            self.tally.one(Count::WhipWhepVanished);
        }
        Ok(())
    }

    /// A WHIP or WHEP session (`kind`) of `peer` in `room`, connected: its media peer and its
    /// location.
    fn http_session(
        &self,
        room: &str,
        peer: &str,
        kind: &str,
        offer: impl FnOnce(&LocalEnd<'_>) -> String,
    ) -> Result<(UdpPeer, String), LoadError> {
        let mut location = String::new();
        let peer = Transport::bind(self.client_ip())?.connect_with(&self.identity, |local| {
            let (answer, at) = self.http_offer(room, peer, kind, &offer(local))?;
            location = at;
            Ok(answer)
        })?;
        Ok((peer, location))
    }

    /// `POST /{kind}/{room}` with `offer` and a join token for `peer`: the answer and the
    /// session's location.
    fn http_offer(&self, room: &str, peer: &str, kind: &str, offer: &str) -> Result<(String, String), LoadError> {
        let token = self.server.call("POST", &format!("/room/{room}/token"), json!({ "peerId": peer }))?;
        let bearer = format!("Bearer {}", token["token"].as_str().unwrap_or_default());
        let headers = [("content-type", "application/sdp"), ("authorization", bearer.as_str())];
        let (status, location, body) = self.client_request("POST", &format!("/{kind}/{room}"), &headers, offer)?;
        match (status, location) {
            (201, Some(location)) => Ok((body, location)),
            _ => Err(LoadError::Refused { what: format!("{kind} {peer}"), detail: format!("HTTP {status}: {body}") }),
        }
    }

    fn delete_location(&self, location: &str) -> Result<(), LoadError> {
        match self.client_request("DELETE", location, &[], "")? {
            (200, _, _) => Ok(()),
            (status, _, body) => {
                Err(LoadError::Refused { what: format!("DELETE {location}"), detail: format!("HTTP {status}: {body}") })
            }
        }
    }
}
