//! The engine's side of the relay links (see `crate::relay`): exporting a producer to other
//! workers, importing one from another worker, and what flows each way — packets and sender
//! reports out to destinations, keyframe requests back to the origin, and the end of each
//! relayed stream.
//!
//! Rules: an origin copies each packet of an exported producer once into its pool and queues
//! a handle per destination; a destination treats an imported producer like a local one
//! (consumers, rewriting, its own retransmission cache, sender reports), except that its
//! keyframe requests go back to the origin, which throttles and sends the PLI as for its own
//! consumers. Packets for a stream not (yet) imported are dropped and counted. When an
//! export ends, its destination is told, and removes the imported producer with its
//! consumers.
#![forbid(unsafe_code)]

use std::time::Instant;

use super::{Engine, EngineError, EngineEvent, Outbox, lookup, send_rtcp};
use crate::relay::{Feedback, PacketPool, PoolError, RelayLinks, RelayMessage, RelayStreamId, WorkerIndex};
use crate::router::{MediaKind, ProducerId, RelaySource, TransportId};
use crate::stats::DropReason;
use crate::wire::rtcp::{SenderInfo, write_sender_report};
use crate::wire::rtp::RtpPacket;

impl Engine {
    /// Connects this engine to the other workers through `links`; its relay pool is sized
    /// after their configuration.
    pub fn attach_links(&mut self, links: RelayLinks) {
        self.relay_pool = PacketPool::new(links.config().pool_buffers);
        self.links = links;
    }

    /// Calls `wake` once for each worker that relay messages were queued for since the last
    /// call: the worker loop wakes those before it waits.
    pub fn take_relay_wakeups(&mut self, wake: impl FnMut(WorkerIndex)) {
        self.links.take_woken(wake);
    }

    /// Whether relayed messages past this turn's budget wait: the loop must not sleep.
    /// (Ends of streams waiting for room are not such work: they are retried each turn, and
    /// spinning for them would burn the core while their destination is stuck.)
    pub fn relay_pending(&self) -> bool {
        self.links.has_input()
    }

    /// Relays `producer` (a publisher's, on this worker) to worker `to` from now on: the id
    /// of the relayed stream, the same one when it is relayed there already.
    pub fn export_producer(&mut self, producer: ProducerId, to: WorkerIndex) -> Result<RelayStreamId, EngineError> {
        if !self.links.reaches(to) {
            return Err(EngineError::UnknownWorker);
        }
        Ok(self.router.export(producer, to)?)
    }

    /// Stops relaying `producer` to worker `to` and tells `to`, which removes the imported
    /// producer. Nothing to do when it is not relayed there.
    pub fn unexport_producer(&mut self, producer: ProducerId, to: WorkerIndex) -> Result<(), EngineError> {
        self.router.unexport(producer, to)?;
        self.end_exports();
        Ok(())
    }

    /// A producer fed by the stream `stream` that worker `from` relays here: the one fed by
    /// it already when it was imported before.
    pub fn import_producer(
        &mut self,
        from: WorkerIndex,
        stream: RelayStreamId,
        kind: MediaKind,
        clock_rate: u32,
    ) -> Result<ProducerId, EngineError> {
        if !self.links.reaches(from) {
            return Err(EngineError::UnknownWorker);
        }
        if self.links.has_ended(from, stream) {
            return Err(EngineError::RelayStreamEnded);
        }
        Ok(self.router.import_producer(RelaySource { worker: from, stream }, kind, clock_rate))
    }

    /// Takes what the other workers relayed here, at most the configured budget from each
    /// link: packets go to the imported producers' consumers, keyframe requests to the
    /// publishers of exported producers. Then retries the ends of streams that found their
    /// link full.
    pub fn handle_relay(&mut self, now: Instant, out: &mut impl Outbox) {
        let config = self.links.config();
        for index in 0..self.links.worker_count() {
            let from = WorkerIndex(index);
            for _ in 0..config.feedback_capacity {
                let Some(feedback) = self.links.receive_feedback(from) else { break };
                self.handle_feedback(now, feedback, out);
            }
            for _ in 0..config.receive_budget {
                let Some(message) = self.links.receive(from) else { break };
                self.handle_relay_message(now, from, message, out);
            }
        }
        self.links.retry_deferred();
    }

    fn handle_relay_message(&mut self, now: Instant, from: WorkerIndex, message: RelayMessage, out: &mut impl Outbox) {
        match message {
            RelayMessage::Packet { stream, packet } => {
                self.counters.relayed_in += 1;
                let Some(producer) = self.router.producer_for_relay(RelaySource { worker: from, stream }) else {
                    self.counters.drop(DropReason::RelayUnknownStream);
                    return;
                };
                let Ok(rtp) = RtpPacket::new_checked(packet.bytes()) else {
                    self.counters.drop(DropReason::Malformed);
                    return;
                };
                self.forward(now, producer, &rtp, out);
            }
            RelayMessage::SenderReport { stream, info } => {
                let transports = &mut self.transports;
                let counters = &mut self.counters;
                self.router.relayed_sender_report(RelaySource { worker: from, stream }, info, |subscriber, info| {
                    if let Some(subscriber) = lookup(transports, subscriber) {
                        send_rtcp(subscriber, out, counters, |slot| write_sender_report(slot, &info, &[]));
                    }
                });
            }
            RelayMessage::Ended { stream } => {
                // Remembered either way, so that a late or repeated import is refused.
                self.links.remember_ended(from, stream);
                let Some(producer) = self.router.producer_for_relay(RelaySource { worker: from, stream }) else {
                    return;
                };
                // Known: the lookup just found it.
                let _ = self.router.remove_producer(producer);
                self.keyframes_wanted.retain(|&p| p != producer);
                self.events.push(EngineEvent::ImportEnded(producer));
            }
        }
    }

    fn handle_feedback(&mut self, now: Instant, feedback: Feedback, out: &mut impl Outbox) {
        match feedback {
            Feedback::KeyframeRequest { stream } => {
                // The export may have ended since the request was queued.
                let Some(producer) = self.router.exported_producer(stream) else { return };
                if let Some(request) = self.router.request_keyframe(now, producer) {
                    self.send_keyframe_request(request, out);
                }
            }
        }
    }

    /// Queues a decrypted packet of `producer` for each worker it is exported to: one copy
    /// into a pooled buffer, one handle per destination.
    pub(super) fn relay_packet(&mut self, producer: ProducerId, plaintext: &[u8]) {
        let exports = self.router.exports(producer);
        if exports.is_empty() {
            return;
        }
        let packet = match self.relay_pool.fill(plaintext) {
            Ok(packet) => packet,
            Err(PoolError::TooLarge) => return self.counters.drop(DropReason::Malformed),
            Err(PoolError::Exhausted) => return self.counters.drop(DropReason::RelayPoolExhausted),
        };
        for export in exports {
            let message = RelayMessage::Packet { stream: export.stream, packet: packet.clone() };
            if self.links.send(export.to, message) {
                self.counters.relayed_out += 1;
            } else {
                self.counters.drop(DropReason::RelayQueueFull);
            }
        }
    }

    /// Relays the sender report that the publisher on `transport` sent to each worker its
    /// stream is exported to, so that subscribers there can sync it too.
    pub(super) fn relay_sender_report(&mut self, transport: TransportId, info: SenderInfo) {
        let Some(producer) = self.router.producer_for(transport, info.ssrc) else { return };
        for export in self.router.exports(producer) {
            if !self.links.send(export.to, RelayMessage::SenderReport { stream: export.stream, info }) {
                self.counters.drop(DropReason::RelayQueueFull);
            }
        }
    }

    /// Asks the origin of an imported stream for a keyframe.
    pub(super) fn request_keyframe_from_origin(&mut self, source: RelaySource) {
        if !self.links.send_feedback(source.worker, Feedback::KeyframeRequest { stream: source.stream }) {
            self.counters.drop(DropReason::RelayQueueFull);
        }
    }

    /// Tells the destinations of the exports that ended that they did.
    pub(super) fn end_exports(&mut self) {
        for export in self.router.drain_ended_exports() {
            if !self.links.end(export.to, export.stream) {
                self.counters.drop(DropReason::RelayQueueFull);
            }
        }
    }
}
