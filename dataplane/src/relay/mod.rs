//! Links between workers, so that one producer's audience can spread over every core: the
//! origin worker decrypts each packet once, copies the plaintext into a pooled
//! reference-counted buffer ([`pool`]) and hands a handle to it to each worker that hosts
//! part of the audience; that worker rewrites, protects and sends for its own subscribers.
//!
//! What it owns: for every ordered pair of workers (a → b), a bounded lock-free queue of
//! `RelayMessage`s from a to b (packets, sender reports, the end of a stream), and a
//! smaller one of `Feedback` from b back to a (keyframe requests). Each worker holds its
//! [`RelayLinks`]: the sending ends of its outgoing queues and the receiving ends of its
//! incoming ones. Nothing else is shared between workers.
//!
//! Rules kept here and by the engine that drives it:
//! - **Never block the origin.** A message that finds its queue full is dropped and the
//!   caller counts it; a slow or stuck destination costs the others nothing. The one
//!   exception is the end of a stream, which must arrive: it waits in a bounded list of
//!   deferred ends, retried every turn (a worker turns at least once a second), so it is
//!   only lost (and counted) when that list is full too.
//! - **Stream ids are never reused** by an origin ([`RelayStreamId`] counts up), so a late
//!   message can never be taken for a newer stream. A destination remembers the last ends
//!   of each link, so that an import that comes after its stream ended is refused.
//! - **Wake each destination at most once per turn.** Queueing only marks the destination;
//!   the worker loop wakes the marked ones ([`RelayLinks::take_woken`]) before it waits.
//! - **Bounded work per turn.** A destination takes at most
//!   [`RelayConfig::receive_budget`] messages per incoming link per turn; it does not sleep
//!   while more are waiting ([`RelayLinks::has_input`]).
//!
//! Sans-IO: the queues are memory; waking a sleeping worker is the worker loop's business.
#![forbid(unsafe_code)]

pub mod pool;

use std::collections::VecDeque;

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use self::pool::{PacketPool, PoolError, RELAY_PACKET_MAX, RelayPacket};
use crate::wire::rtcp::SenderInfo;

/// A worker, by its place in the plan (0 is the first worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerIndex(pub usize);

/// One export of a producer to one worker, named by its origin; unique among that origin's
/// exports for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayStreamId(pub u64);

/// Sizes of the links and of the buffer pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Messages each a → b queue holds; about two seconds of a 1,000-packet/s stream.
    pub link_capacity: usize,
    /// Keyframe requests each b → a queue holds.
    pub feedback_capacity: usize,
    /// Relay buffers an origin allocates at most. Buffers in flight are about what the
    /// fullest queue holds, so twice the link capacity leaves room for several slow links.
    pub pool_buffers: usize,
    /// Messages a worker takes from each incoming link per loop turn.
    pub receive_budget: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self { link_capacity: 2048, feedback_capacity: 256, pool_buffers: 4096, receive_budget: 512 }
    }
}

/// Ends of streams that may wait for room in one outgoing queue.
const DEFERRED_ENDS: usize = 1024;
/// Ended streams remembered per incoming link, so that an import that comes after its
/// stream ended is refused instead of waiting forever.
const ENDED_MEMORY: usize = 1024;

/// What an origin sends a destination.
#[derive(Debug)]
pub(crate) enum RelayMessage {
    /// A decrypted RTP packet of the stream.
    Packet { stream: RelayStreamId, packet: RelayPacket },
    /// The publisher's sender report, in the publisher's numbering.
    SenderReport { stream: RelayStreamId, info: SenderInfo },
    /// The stream ended (its producer went, or the origin stopped relaying it here).
    Ended { stream: RelayStreamId },
}

/// What a destination sends back to the origin of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feedback {
    /// A subscriber (or a new consumer) needs a keyframe of the stream.
    KeyframeRequest { stream: RelayStreamId },
}

/// The sending side of the link to one destination, and the feedback queue back to it.
#[derive(Debug)]
struct Outgoing {
    messages: Sender<RelayMessage>,
    feedback: Sender<Feedback>,
    /// Ends of streams that found `messages` full.
    deferred: VecDeque<RelayStreamId>,
    /// Something was queued since the destination was last woken.
    woken: bool,
}

/// The receiving side of the link from one origin.
#[derive(Debug)]
struct Incoming {
    messages: Receiver<RelayMessage>,
    feedback: Receiver<Feedback>,
    /// Streams whose end arrived, oldest first.
    ended: VecDeque<RelayStreamId>,
}

/// One worker's ends of its links to every other worker.
#[derive(Debug)]
pub struct RelayLinks {
    own: WorkerIndex,
    config: RelayConfig,
    outgoing: Vec<Option<Outgoing>>,
    incoming: Vec<Option<Incoming>>,
}

/// The links of `workers` workers: element `i` belongs to worker `i`. With fewer than two
/// workers there is nothing to link.
pub fn mesh(workers: usize, config: RelayConfig) -> Vec<RelayLinks> {
    let mut links: Vec<RelayLinks> = (0..workers)
        .map(|i| RelayLinks {
            own: WorkerIndex(i),
            config,
            outgoing: (0..workers).map(|_| None).collect(),
            incoming: (0..workers).map(|_| None).collect(),
        })
        .collect();
    for from in 0..workers {
        for to in (0..workers).filter(|&to| to != from) {
            let (messages_tx, messages_rx) = crossbeam_channel::bounded(config.link_capacity);
            let (feedback_tx, feedback_rx) = crossbeam_channel::bounded(config.feedback_capacity);
            links[from].outgoing[to] = Some(Outgoing {
                messages: messages_tx,
                feedback: feedback_tx,
                deferred: VecDeque::new(),
                woken: false,
            });
            links[to].incoming[from] =
                Some(Incoming { messages: messages_rx, feedback: feedback_rx, ended: VecDeque::new() });
        }
    }
    links
}

impl RelayLinks {
    /// The links of a worker that runs alone: it reaches no one.
    pub fn unlinked() -> Self {
        Self { own: WorkerIndex(0), config: RelayConfig::default(), outgoing: Vec::new(), incoming: Vec::new() }
    }

    /// The worker these links belong to.
    pub fn own(&self) -> WorkerIndex {
        self.own
    }

    pub fn config(&self) -> RelayConfig {
        self.config
    }

    /// Workers in the mesh (the slots of [`RelayLinks::reaches`]).
    pub fn worker_count(&self) -> usize {
        self.outgoing.len()
    }

    /// Whether there is a link to `worker` (it is another worker of the mesh).
    pub fn reaches(&self, worker: WorkerIndex) -> bool {
        self.outgoing.get(worker.0).is_some_and(Option::is_some)
    }

    fn outgoing(&mut self, to: WorkerIndex) -> Option<&mut Outgoing> {
        self.outgoing.get_mut(to.0)?.as_mut()
    }

    /// Queues `message` for `to`; false when its queue is full or `to` has stopped (the
    /// caller counts the drop).
    pub(crate) fn send(&mut self, to: WorkerIndex, message: RelayMessage) -> bool {
        let Some(link) = self.outgoing(to) else { return false };
        let queued = link.messages.try_send(message).is_ok();
        link.woken |= queued;
        queued
    }

    /// Queues a keyframe request back to the origin `to`; false when that is full.
    pub(crate) fn send_feedback(&mut self, to: WorkerIndex, feedback: Feedback) -> bool {
        let Some(link) = self.outgoing(to) else { return false };
        let queued = link.feedback.try_send(feedback).is_ok();
        link.woken |= queued;
        queued
    }

    /// Tells `to` that `stream` ended, now or, when its queue is full, on a later turn
    /// ([`RelayLinks::retry_deferred`]); false when even the deferred list is full.
    pub(crate) fn end(&mut self, to: WorkerIndex, stream: RelayStreamId) -> bool {
        let Some(link) = self.outgoing(to) else { return false };
        // Behind ends already waiting, so that each link's ends keep their order.
        if link.deferred.is_empty() {
            match link.messages.try_send(RelayMessage::Ended { stream }) {
                Ok(()) => {
                    link.woken = true;
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return true,
                Err(TrySendError::Full(_)) => {}
            }
        }
        if link.deferred.len() >= DEFERRED_ENDS {
            return false;
        }
        link.deferred.push_back(stream);
        true
    }

    /// Queues the deferred ends that fit now.
    pub(crate) fn retry_deferred(&mut self) {
        for link in self.outgoing.iter_mut().flatten() {
            while let Some(&stream) = link.deferred.front() {
                match link.messages.try_send(RelayMessage::Ended { stream }) {
                    Ok(()) => link.woken = true,
                    Err(TrySendError::Full(_)) => break,
                    Err(TrySendError::Disconnected(_)) => {}
                }
                link.deferred.pop_front();
            }
        }
    }

    fn incoming(&self, from: WorkerIndex) -> Option<&Incoming> {
        self.incoming.get(from.0)?.as_ref()
    }

    /// The next message from `from`, if one is waiting.
    pub(crate) fn receive(&self, from: WorkerIndex) -> Option<RelayMessage> {
        self.incoming(from)?.messages.try_recv().ok()
    }

    /// The next keyframe request from `from`, if one is waiting.
    pub(crate) fn receive_feedback(&self, from: WorkerIndex) -> Option<Feedback> {
        self.incoming(from)?.feedback.try_recv().ok()
    }

    /// Whether messages or feedback wait on an incoming link (the worker must not sleep).
    pub fn has_input(&self) -> bool {
        self.incoming.iter().flatten().any(|link| !link.messages.is_empty() || !link.feedback.is_empty())
    }

    #[cfg(test)]
    fn has_deferred(&self) -> bool {
        self.outgoing.iter().flatten().any(|link| !link.deferred.is_empty())
    }

    /// Notes that `stream` from `from` ended.
    pub(crate) fn remember_ended(&mut self, from: WorkerIndex, stream: RelayStreamId) {
        let Some(link) = self.incoming.get_mut(from.0).and_then(Option::as_mut) else { return };
        if link.ended.len() >= ENDED_MEMORY {
            link.ended.pop_front();
        }
        link.ended.push_back(stream);
    }

    /// Whether `stream` from `from` is known to have ended already.
    pub(crate) fn has_ended(&self, from: WorkerIndex, stream: RelayStreamId) -> bool {
        self.incoming(from).is_some_and(|link| link.ended.contains(&stream))
    }

    /// Calls `wake` once for each destination something was queued for since the last
    /// call, and forgets that it was.
    pub fn take_woken(&mut self, mut wake: impl FnMut(WorkerIndex)) {
        for (index, link) in self.outgoing.iter_mut().enumerate() {
            if let Some(link) = link
                && std::mem::take(&mut link.woken)
            {
                wake(WorkerIndex(index));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(link_capacity: usize) -> RelayConfig {
        RelayConfig { link_capacity, feedback_capacity: 2, pool_buffers: 8, receive_budget: 4 }
    }

    fn woken(links: &mut RelayLinks) -> Vec<usize> {
        let mut woken = Vec::new();
        links.take_woken(|w| woken.push(w.0));
        woken
    }

    #[test]
    fn every_ordered_pair_has_its_own_link() {
        let links = mesh(3, RelayConfig::default());
        assert_eq!(links.len(), 3);
        for (i, link) in links.iter().enumerate() {
            assert_eq!(link.own(), WorkerIndex(i));
            for j in 0..3 {
                assert_eq!(link.reaches(WorkerIndex(j)), i != j);
            }
            assert!(!link.reaches(WorkerIndex(3)));
        }
        assert!(!RelayLinks::unlinked().reaches(WorkerIndex(0)));
        assert!(mesh(1, RelayConfig::default())[0].outgoing.iter().all(Option::is_none));
    }

    #[test]
    fn a_full_link_refuses_without_blocking_and_drains_in_order() {
        let mut links = mesh(2, small(2));
        let mut pool = PacketPool::new(8);
        let (origin, destination) = links.split_at_mut(1);
        let (origin, destination) = (&mut origin[0], &mut destination[0]);
        let sent: Vec<bool> = (0..5u8)
            .map(|i| {
                let packet = pool.fill(&[i; 4]).unwrap();
                origin.send(WorkerIndex(1), RelayMessage::Packet { stream: RelayStreamId(7), packet })
            })
            .collect();
        assert_eq!(sent, [true, true, false, false, false], "two fit; the rest are the caller's drops");
        assert_eq!(woken(origin), [1], "one wake-up for the whole turn");
        assert!(woken(origin).is_empty());
        assert!(destination.has_input());
        let mut received = Vec::new();
        while let Some(RelayMessage::Packet { stream, packet }) = destination.receive(WorkerIndex(0)) {
            received.push((stream, packet.bytes()[0]));
        }
        assert_eq!(received, [(RelayStreamId(7), 0), (RelayStreamId(7), 1)]);
        assert!(!destination.has_input());
        assert_eq!(pool.fill(b"x").unwrap().bytes(), b"x");
        assert_eq!(pool.buffers(), 3, "two held in the link; the refused packets shared one that came back at once");
    }

    #[test]
    fn an_end_that_finds_the_link_full_waits_for_room() {
        let mut links = mesh(2, small(1));
        let (origin, destination) = links.split_at_mut(1);
        let (origin, destination) = (&mut origin[0], &mut destination[0]);
        let info = SenderInfo::default();
        assert!(origin.send(WorkerIndex(1), RelayMessage::SenderReport { stream: RelayStreamId(1), info }));
        assert!(origin.end(WorkerIndex(1), RelayStreamId(1)));
        assert!(origin.end(WorkerIndex(1), RelayStreamId(2)));
        assert!(origin.has_deferred());
        origin.retry_deferred();
        assert!(origin.has_deferred(), "still no room");
        assert!(matches!(destination.receive(WorkerIndex(0)), Some(RelayMessage::SenderReport { .. })));
        origin.retry_deferred();
        assert!(matches!(destination.receive(WorkerIndex(0)), Some(RelayMessage::Ended { stream: RelayStreamId(1) })));
        origin.retry_deferred();
        assert!(matches!(destination.receive(WorkerIndex(0)), Some(RelayMessage::Ended { stream: RelayStreamId(2) })));
        assert!(!origin.has_deferred());
        for stream in 0..DEFERRED_ENDS as u64 + 1 {
            assert!(origin.end(WorkerIndex(1), RelayStreamId(stream)));
        }
        assert!(!origin.end(WorkerIndex(1), RelayStreamId(u64::MAX)), "the deferred list is bounded too");
    }

    #[test]
    fn feedback_has_its_own_bounded_queue_back() {
        let mut links = mesh(2, small(1));
        let (origin, destination) = links.split_at_mut(1);
        let (origin, destination) = (&mut origin[0], &mut destination[0]);
        let request = Feedback::KeyframeRequest { stream: RelayStreamId(3) };
        assert!(destination.send_feedback(WorkerIndex(0), request));
        assert!(destination.send_feedback(WorkerIndex(0), request));
        assert!(!destination.send_feedback(WorkerIndex(0), request), "full: dropped, not blocked");
        assert_eq!(woken(destination), [0]);
        assert!(origin.has_input());
        assert_eq!(origin.receive_feedback(WorkerIndex(1)), Some(request));
        assert!(!destination.send_feedback(WorkerIndex(1), request), "no link to itself");
    }

    #[test]
    fn ended_streams_are_remembered_within_a_bound() {
        let mut links = mesh(2, small(1));
        let destination = &mut links[1];
        destination.remember_ended(WorkerIndex(0), RelayStreamId(5));
        assert!(destination.has_ended(WorkerIndex(0), RelayStreamId(5)));
        assert!(!destination.has_ended(WorkerIndex(0), RelayStreamId(6)));
        for stream in 100..100 + ENDED_MEMORY as u64 {
            destination.remember_ended(WorkerIndex(0), RelayStreamId(stream));
        }
        assert!(!destination.has_ended(WorkerIndex(0), RelayStreamId(5)), "the oldest is forgotten first");
    }

    #[test]
    fn a_stopped_destination_takes_nothing() {
        let mut links = mesh(2, small(4));
        let destination = links.pop().unwrap();
        drop(destination);
        let origin = &mut links[0];
        assert!(!origin.send(WorkerIndex(1), RelayMessage::Ended { stream: RelayStreamId(1) }));
        assert!(origin.end(WorkerIndex(1), RelayStreamId(1)), "nothing left to tell");
        assert!(!origin.has_deferred());
    }
}
