//! The two-way boundary between the control plane and one worker: commands in, each with
//! its own reply channel, and the worker's events out.
//!
//! - **Commands:** one bounded queue per worker plus an eventfd that wakes the worker's loop
//!   when it sleeps in the kernel. Every [`Command`] travels with a oneshot sender; the
//!   caller keeps the [`PendingReply`] and waits on it (blocking with a timeout, or as a
//!   future), so no caller waits under a lock and a slow worker delays only its own callers.
//! - **Events:** a bounded queue per worker of [`WorkerEvent`]s (a transport connected or
//!   closed and why, an import ended) that the control plane drains. Whatever the worker
//!   learns that changes a room reaches the control plane this way, not only a log line.
//!
//! Rules for callers: `send` never blocks. A full queue is returned to the caller as
//! [`Error::QueueFull`] (the REST side turns it into code 10000) so a stuck worker can never
//! stall the control plane. The worker never blocks either: a reply whose caller gave up is
//! dropped, and an event that finds the event queue full waits in the worker (bounded by
//! its transports) for the next turn instead of being lost.
//!
//! Relaying a producer to consumers on another worker takes two commands, in this order:
//! [`Command::ExportProducer`] to the producer's (origin) worker, whose reply names the
//! relayed stream, then [`Command::ImportProducer`] with that name to the destination
//! worker, whose reply is the local producer that consumers there attach to with
//! [`Command::AddConsumer`] as to any other. Packets the origin relays before the import
//! is done are dropped and counted (`relay_unknown_stream`); the subscribers' decoders
//! start at the keyframe the first consumer asks for anyway. The imported producer goes
//! away by itself, with its consumers, when the origin's producer does (its transport
//! closed) or after [`Command::UnexportProducer`]; the destination then reports
//! [`EngineEvent::ImportEnded`]. An import of a stream that ended already is refused.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::Error;
use crate::dtls::CertificateFingerprint;
use crate::engine::{EngineError, EngineEvent, LinkKeys, SubscriberReport, TransportCreated};
use crate::ice::IceCredentials;
use crate::relay::{RelayStreamId, WorkerIndex};
use crate::router::{
    ConsumerFormat, ConsumerId, MediaKind, ProducerId, ProducerSpec, Rid, RtxStream, SpeakerGroup, TransportId,
};
use crate::sys::EventFd;
use crate::wire::video::{TemporalId, VideoFormat};

/// What the control plane asks of a worker.
#[derive(Debug)]
pub enum Command {
    /// Finish the current loop turn, release everything and let the thread end; replies
    /// [`Reply::Done`] first.
    Shutdown,
    /// Open a transport for a client whose SDP gave these credentials and fingerprint;
    /// `local_ice` when the signalling already offered the SFU's side.
    CreateTransport {
        local_ice: Option<IceCredentials>,
        remote_ice: IceCredentials,
        remote_fingerprint: CertificateFingerprint,
    },
    /// Open a plain transport to and from `remote`, no ICE or DTLS, until it is closed:
    /// without `keys`, to a helper of this machine (a recorder, a player), plaintext RTP and
    /// RTCP; with them, a node link to another node's worker media address, SRTP both ways
    /// (see [`LinkKeys`]). `rtcp_remote` when the peer sends and receives RTCP on a port of
    /// its own. Replies [`Reply::PlainTransportCreated`]; refused when the keys do not fit
    /// their profile ([`EngineError::LinkKeys`]).
    ///
    /// On a link, video published by the far end is repaired by NACKs to it, which it
    /// answers with the original packets: enable no RTX on a consumer on a link.
    CreatePlainTransport {
        remote: SocketAddr,
        rtcp_remote: Option<SocketAddr>,
        keys: Option<LinkKeys>,
    },
    CloseTransport {
        transport: TransportId,
    },
    AddProducer {
        spec: ProducerSpec,
    },
    /// Send `producer`'s stream to the client on `transport` as SSRC `ssrc`, in the payload
    /// type and header extension ids that client negotiated.
    AddConsumer {
        producer: ProducerId,
        transport: TransportId,
        ssrc: u32,
        format: ConsumerFormat,
    },
    /// A simulcast layer `transport` publishes without naming its SSRC: the packets whose
    /// RtpStreamId header extension (id `rid_extension`) holds `rid`. Replies
    /// [`Reply::ProducerAdded`].
    AddLayerProducer {
        transport: TransportId,
        rid_extension: u8,
        rid: Rid,
        kind: MediaKind,
        clock_rate: u32,
    },
    /// Let the consumer choose among the simulcast layers `layers` (on this worker, lowest
    /// first, its own producer among them) of a stream in `format`: it receives the highest
    /// layer that sends, up to its preferred one (the highest until [`Command::PreferLayer`]).
    SetLayers {
        consumer: ConsumerId,
        layers: Vec<ProducerId>,
        format: VideoFormat,
    },
    /// Send the consumer at most its layer `layer` (0 = lowest), and of a VP8 layer's
    /// temporal layers those up to `max_temporal_layer`; `pinned`: its subscriber's bandwidth
    /// goes to it before any other simulcast stream.
    PreferLayer {
        consumer: ConsumerId,
        layer: usize,
        max_temporal_layer: TemporalId,
        pinned: bool,
    },
    /// Report whether some consumer of this worker could receive `producer`, now and at
    /// each change ([`crate::engine::EngineEvent::Demand`]).
    WatchDemand {
        producer: ProducerId,
    },
    /// Send the publisher on `transport` transport-wide congestion control feedback about
    /// its packets carrying a transport-wide sequence number under `extension_id`.
    EnableTransportFeedback {
        transport: TransportId,
        extension_id: u8,
    },
    /// Estimate the bandwidth toward the subscriber on `transport` (at most `max_bps`) from
    /// its transport-wide feedback, numbering its packets under `extension_id`, and fit its
    /// simulcast layers to the estimate.
    EnableBandwidthEstimation {
        transport: TransportId,
        extension_id: u8,
        max_bps: u64,
    },
    /// Follow the audio `producer`'s speech by its RFC 6464 audio levels (header extension
    /// `extension_id`) among the room `group`'s; the worker reports the room's dominant
    /// speaker as it changes.
    FollowSpeech {
        producer: ProducerId,
        extension_id: u8,
        group: SpeakerGroup,
    },
    /// Report each estimated subscriber's congestion control ([`Reply::Congestion`]).
    ReportCongestion,
    /// Cap what the client on `transport` publishes (REMB each report interval).
    LimitBitrate {
        transport: TransportId,
        max_bps: u32,
    },
    /// Resend the consumer's lost packets as this RTX stream, which its subscriber negotiated.
    EnableRtx {
        consumer: ConsumerId,
        rtx: RtxStream,
    },
    /// Stop for good what the client on `transport` receives as `ssrc`.
    RemoveConsumer {
        transport: TransportId,
        ssrc: u32,
    },
    /// Stop (or resume) forwarding to the consumer; its numbering continues without a gap.
    PauseConsumer {
        consumer: ConsumerId,
        paused: bool,
    },
    /// To the producer's worker: relay `producer`'s packets to worker `to_worker` too, from
    /// now on. Replies [`Reply::Exported`] with the relayed stream's id, the same id when it
    /// is relayed there already; refused for an unknown producer, an imported one, or a
    /// worker that is this one or does not exist.
    ExportProducer {
        producer: ProducerId,
        to_worker: WorkerIndex,
    },
    /// To the producer's worker: stop relaying `producer` to `to_worker`, whose imported
    /// producer is then removed with its consumers. [`Reply::Done`], also when it was not
    /// relayed there.
    UnexportProducer {
        producer: ProducerId,
        to_worker: WorkerIndex,
    },
    /// To the destination worker: a producer fed by the stream `stream` that `from_worker`
    /// relays (the id its [`Reply::Exported`] gave). Replies [`Reply::ProducerAdded`], the
    /// same producer when it was imported already.
    ImportProducer {
        from_worker: WorkerIndex,
        stream: RelayStreamId,
        kind: MediaKind,
        clock_rate: u32,
    },
}

impl Command {
    /// A consumer whose subscriber numbers payload types and header extensions as its publisher does: test
    /// clients and the load generator, which negotiate no SDP.
    pub fn add_consumer_as_published(producer: ProducerId, transport: TransportId, ssrc: u32) -> Self {
        Command::AddConsumer { producer, transport, ssrc, format: ConsumerFormat::as_published() }
    }
}

/// A worker's answer to one command.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The transport and where clients send to it.
    TransportCreated {
        created: TransportCreated,
        address: SocketAddr,
    },
    /// The plain transport, and the worker's address it sends from and receives on.
    PlainTransportCreated {
        transport: TransportId,
        address: SocketAddr,
    },
    Done,
    ProducerAdded(ProducerId),
    ConsumerAdded(ConsumerId),
    /// The producer is relayed to the worker asked for, as this stream.
    Exported(RelayStreamId),
    Congestion(Vec<SubscriberReport>),
    Refused(EngineError),
}

/// Something a worker reports to the control plane, with the worker it happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerEvent {
    pub worker: usize,
    pub event: EngineEvent,
}

/// The control plane's end of one worker's event stream.
pub type EventReceiver = tokio::sync::mpsc::Receiver<WorkerEvent>;
/// The worker's end of its event stream.
pub(crate) type EventSender = tokio::sync::mpsc::Sender<WorkerEvent>;

/// A bounded event stream of `capacity` events.
pub(crate) fn event_queue(capacity: usize) -> (EventSender, EventReceiver) {
    tokio::sync::mpsc::channel(capacity)
}

/// A command on its way to the worker, with where its reply goes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Reply>,
}

impl Request {
    /// Answers the request; a caller that stopped waiting is no error.
    pub(crate) fn answer(self, reply: Reply) {
        let _ = self.reply.send(reply);
    }
}

/// The reply to one command, not yet arrived: wait on it with a timeout, or await it.
#[derive(Debug)]
pub struct PendingReply(oneshot::Receiver<Reply>);

impl PendingReply {
    /// Blocks up to `timeout` for the reply.
    pub fn wait(self, timeout: Duration) -> Result<Reply, Error> {
        self.0.recv_timeout(timeout).map_err(|e| match e {
            oneshot::RecvTimeoutError::Timeout => Error::ReplyTimeout,
            oneshot::RecvTimeoutError::Disconnected => Error::WorkerGone,
        })
    }

    /// The reply as a future; it fails with [`Error::WorkerGone`] when the worker dropped the
    /// request without answering (it stopped). The caller puts its own timeout around it.
    pub async fn recv(self) -> Result<Reply, Error> {
        self.0.await.map_err(|_| Error::WorkerGone)
    }
}

/// The control plane's end of one worker's queue.
#[derive(Debug, Clone)]
pub struct CommandSender {
    tx: Sender<Request>,
    wake: Arc<EventFd>,
}

/// The worker's end: drained once per loop turn.
#[derive(Debug)]
pub struct CommandReceiver {
    rx: Receiver<Request>,
    wake: Arc<EventFd>,
}

/// A bounded command queue of `capacity` entries with its wake-up fd.
pub fn command_queue(capacity: usize) -> Result<(CommandSender, CommandReceiver), Error> {
    let wake = Arc::new(EventFd::new().map_err(Error::Wakeup)?);
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    Ok((CommandSender { tx, wake: Arc::clone(&wake) }, CommandReceiver { rx, wake }))
}

impl CommandSender {
    /// Queues `command` and wakes the worker; fails at once when the queue is full or the
    /// worker has gone. The reply arrives on what it returns.
    pub fn send(&self, command: Command) -> Result<PendingReply, Error> {
        let (reply, pending) = oneshot::channel();
        self.tx.try_send(Request { command, reply }).map_err(|e| match e {
            TrySendError::Full(_) => Error::QueueFull,
            TrySendError::Disconnected(_) => Error::WorkerGone,
        })?;
        self.wake.notify().map_err(Error::Wakeup)?;
        Ok(PendingReply(pending))
    }
}

impl CommandReceiver {
    /// The next queued request, if any, without blocking.
    pub(crate) fn try_next(&self) -> Option<Request> {
        self.rx.try_recv().ok()
    }

    /// The fd the worker's backend watches; it turns readable when a command is queued.
    pub(crate) fn wake_fd(&self) -> Arc<EventFd> {
        Arc::clone(&self.wake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_is_an_error_not_a_block() {
        let (tx, _rx) = command_queue(1).unwrap();
        let _pending = tx.send(Command::Shutdown).unwrap();
        assert!(matches!(tx.send(Command::Shutdown), Err(Error::QueueFull)));
    }

    #[test]
    fn sender_makes_the_wake_fd_readable() {
        let (tx, rx) = command_queue(4).unwrap();
        assert_eq!(rx.wake_fd().drain().unwrap(), 0);
        let pending = tx.send(Command::Shutdown).unwrap();
        assert_eq!(rx.wake_fd().drain().unwrap(), 1);
        let request = rx.try_next().unwrap();
        assert!(matches!(request.command, Command::Shutdown));
        request.answer(Reply::Done);
        assert!(matches!(pending.wait(Duration::from_secs(1)), Ok(Reply::Done)));
    }

    #[test]
    fn each_request_gets_its_own_reply_in_any_order() {
        let (tx, rx) = command_queue(4).unwrap();
        let first = tx.send(Command::Shutdown).unwrap();
        let second = tx.send(Command::Shutdown).unwrap();
        let (a, b) = (rx.try_next().unwrap(), rx.try_next().unwrap());
        b.answer(Reply::Refused(EngineError::UnknownTransport));
        a.answer(Reply::Done);
        assert!(matches!(first.wait(Duration::from_secs(1)), Ok(Reply::Done)));
        assert!(matches!(second.wait(Duration::from_secs(1)), Ok(Reply::Refused(EngineError::UnknownTransport))));
    }

    #[test]
    fn a_request_dropped_unanswered_is_a_gone_worker_not_a_timeout() {
        let (tx, rx) = command_queue(4).unwrap();
        let pending = tx.send(Command::Shutdown).unwrap();
        drop(rx.try_next());
        assert!(matches!(pending.wait(Duration::from_secs(5)), Err(Error::WorkerGone)));
    }

    #[test]
    fn send_to_a_gone_worker_fails() {
        let (tx, rx) = command_queue(4).unwrap();
        drop(rx);
        assert!(matches!(tx.send(Command::Shutdown), Err(Error::WorkerGone)));
    }
}
