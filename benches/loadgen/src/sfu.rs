//! What the load generator needs from an SFU, whichever it is: rooms, members that publish
//! with an offer and subscribe by answering the SFU's offer, and the process whose CPU the
//! forwarding costs.

use std::net::IpAddr;

use crate::LoadError;

/// The kind of room a scenario opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// One host publishes to an audience (uprtcd's live room; a VideoRoom with one
    /// publisher).
    Live,
    /// Every member may publish and watch the others (uprtcd's conversation room).
    Conversation { max_members: u32 },
}

/// An SFU under test, driven through its own control interface. Members may join from
/// several threads at once.
pub trait Sfu: Sync {
    /// A label for reports, e.g. `uprtcd epoll ×1`.
    fn label(&self) -> String;
    /// The SFU's process, whose threads' CPU time the report counts.
    fn pid(&self) -> u32;
    /// Kernel thread ids of the threads that forward media, when the SFU has dedicated ones
    /// (uprtcd's pinned workers); empty otherwise.
    fn media_threads(&self) -> Vec<u32>;
    /// The address load clients bind their sockets to.
    fn client_ip(&self) -> IpAddr;
    /// Opens a room hosted by `host`, with `invited` the other peers a conversation room
    /// admits; returns its id.
    fn create_room(&self, kind: RoomKind, host: &str, invited: &[String]) -> Result<String, LoadError>;
    /// Joins `room` as `peer`.
    fn join(&self, room: &str, peer: &str) -> Result<Box<dyn Member>, LoadError>;
}

/// One member's control session: it lives as long as the member does.
pub trait Member: Send {
    /// Offers to publish (`offer` from [`crate::sdp::publisher_offer`]); returns the SFU's
    /// answer.
    fn publish(&mut self, offer: &str) -> Result<String, LoadError>;
    /// Subscribes to everything the room publishes now: `answer` is given the SFU's offer and
    /// writes the answer. Returns the offer.
    fn subscribe(&mut self, answer: &mut dyn FnMut(&str) -> Result<String, LoadError>) -> Result<String, LoadError>;
    /// Called every few seconds while media flows: reads what the SFU sent meanwhile, so no
    /// buffer fills, and keeps the session alive.
    fn tick(&mut self) {}
}
