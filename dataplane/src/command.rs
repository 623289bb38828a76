//! Control → worker commands: one bounded queue per worker plus an eventfd that wakes the
//! worker's loop when it sleeps in the kernel, and the worker → control replies, each
//! carrying the [`RequestId`] of the command it answers.
//!
//! Rule for callers: `send` never blocks. A full queue is returned to the caller as
//! [`Error::QueueFull`] (the REST side turns it into code 10000) so a stuck worker can
//! never stall the control plane. The worker never blocks on replies either: a reply that
//! finds the reply queue full is dropped, and its caller times out.
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
//! `EngineEvent::ImportEnded`. An import of a stream that ended already is refused.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::Error;
use crate::dtls::CertificateFingerprint;
use crate::engine::{EngineError, TransportCreated};
use crate::ice::IceCredentials;
use crate::relay::{RelayStreamId, WorkerIndex};
use crate::router::{ConsumerId, MediaKind, ProducerId, ProducerSpec, RtxStream, TransportId};
use crate::sys::EventFd;
use crate::wire::rtp::ExtensionIdMap;

/// Matches a reply to the command it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

/// What the control plane asks of a worker.
#[derive(Debug)]
pub enum Command {
    /// Finish the current loop turn, release everything and let the thread end.
    Shutdown,
    /// Open a transport for a client whose SDP gave these credentials and fingerprint;
    /// `local_ice` when the signalling already offered the SFU's side.
    CreateTransport {
        request: RequestId,
        local_ice: Option<IceCredentials>,
        remote_ice: IceCredentials,
        remote_fingerprint: CertificateFingerprint,
    },
    CloseTransport {
        request: RequestId,
        transport: TransportId,
    },
    AddProducer {
        request: RequestId,
        spec: ProducerSpec,
    },
    /// Send `producer`'s stream to the client on `transport` as SSRC `ssrc`, its header
    /// extensions renumbered to the ids that client negotiated.
    AddConsumer {
        request: RequestId,
        producer: ProducerId,
        transport: TransportId,
        ssrc: u32,
        extensions: ExtensionIdMap,
    },
    /// Cap what the client on `transport` publishes (REMB each report interval).
    LimitBitrate {
        request: RequestId,
        transport: TransportId,
        max_bps: u32,
    },
    /// Resend the consumer's lost packets as this RTX stream, which its subscriber negotiated.
    EnableRtx {
        request: RequestId,
        consumer: ConsumerId,
        rtx: RtxStream,
    },
    /// Stop for good what the client on `transport` receives as `ssrc`.
    RemoveConsumer {
        request: RequestId,
        transport: TransportId,
        ssrc: u32,
    },
    /// Stop (or resume) forwarding to the consumer; its numbering continues without a gap.
    PauseConsumer {
        request: RequestId,
        consumer: ConsumerId,
        paused: bool,
    },
    /// To the producer's worker: relay `producer`'s packets to worker `to_worker` too, from
    /// now on. Replies [`Reply::Exported`] with the relayed stream's id, the same id when it
    /// is relayed there already; refused for an unknown producer, an imported one, or a
    /// worker that is this one or does not exist.
    ExportProducer {
        request: RequestId,
        producer: ProducerId,
        to_worker: WorkerIndex,
    },
    /// To the producer's worker: stop relaying `producer` to `to_worker`, whose imported
    /// producer is then removed with its consumers. [`Reply::Done`], also when it was not
    /// relayed there.
    UnexportProducer {
        request: RequestId,
        producer: ProducerId,
        to_worker: WorkerIndex,
    },
    /// To the destination worker: a producer fed by the stream `stream` that `from_worker`
    /// relays (the id its [`Reply::Exported`] gave). Replies [`Reply::ProducerAdded`], the
    /// same producer when it was imported already.
    ImportProducer {
        request: RequestId,
        from_worker: WorkerIndex,
        stream: RelayStreamId,
        kind: MediaKind,
        clock_rate: u32,
    },
}

impl Command {
    /// A consumer whose subscriber numbers header extensions as its publisher does: test
    /// clients and the load generator, which negotiate no SDP.
    pub fn add_consumer_as_published(
        request: RequestId,
        producer: ProducerId,
        transport: TransportId,
        ssrc: u32,
    ) -> Self {
        Command::AddConsumer { request, producer, transport, ssrc, extensions: ExtensionIdMap::identity() }
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
    Done,
    ProducerAdded(ProducerId),
    ConsumerAdded(ConsumerId),
    /// The producer is relayed to the worker asked for, as this stream.
    Exported(RelayStreamId),
    Refused(EngineError),
}

/// The control plane's end of one worker's queue.
#[derive(Debug, Clone)]
pub struct CommandSender {
    tx: Sender<Command>,
    wake: Arc<EventFd>,
}

/// The worker's end: drained once per loop turn.
#[derive(Debug)]
pub struct CommandReceiver {
    rx: Receiver<Command>,
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
    /// worker has gone.
    pub fn send(&self, command: Command) -> Result<(), Error> {
        self.tx.try_send(command).map_err(|e| match e {
            TrySendError::Full(_) => Error::QueueFull,
            TrySendError::Disconnected(_) => Error::WorkerGone,
        })?;
        self.wake.notify().map_err(Error::Wakeup)
    }
}

impl CommandReceiver {
    /// The next queued command, if any, without blocking.
    pub fn try_next(&self) -> Option<Command> {
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
        tx.send(Command::Shutdown).unwrap();
        assert!(matches!(tx.send(Command::Shutdown), Err(Error::QueueFull)));
    }

    #[test]
    fn sender_makes_the_wake_fd_readable() {
        let (tx, rx) = command_queue(4).unwrap();
        assert_eq!(rx.wake_fd().drain().unwrap(), 0);
        tx.send(Command::Shutdown).unwrap();
        assert_eq!(rx.wake_fd().drain().unwrap(), 1);
        assert!(matches!(rx.try_next(), Some(Command::Shutdown)));
    }

    #[test]
    fn send_to_a_gone_worker_fails() {
        let (tx, rx) = command_queue(4).unwrap();
        drop(rx);
        assert!(matches!(tx.send(Command::Shutdown), Err(Error::WorkerGone)));
    }
}
