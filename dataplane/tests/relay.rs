//! Relaying a producer's packets from its worker to consumers on other workers.
//!
//! Over real UDP on loopback, on both socket backends: a publisher on worker 0 and
//! subscribers on workers 0 and 1 each decrypt every packet, in order, with their own SSRC;
//! worker 1 answers NACKs from its own cache and passes the publisher's sender reports on; a
//! subscriber's PLI on worker 1 reaches the publisher; closing the publisher removes the
//! imported producer and its consumers. A destination that cannot keep up drops and counts
//! while the origin's own subscribers get everything. 1,000 subscribers split over the two
//! workers all get one publisher's stream.
//!
//! In virtual time, with two engines linked as two workers would be: exact overflow
//! accounting, packets before the import dropped and counted, a new consumer's keyframe
//! request travelling back to the publisher, and the end of a stream (unexport, or the
//! publisher leaving) removing the import, also when it comes before the import.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::engine::{EngineConfig, EngineError, EngineEvent};
use uprtcd_dataplane::io::{BackendChoice, uring_unavailable_reason};
use uprtcd_dataplane::peer::{Received, UdpPeer, add_video_producer, relay_video};
use uprtcd_dataplane::relay::{RelayConfig, RelayStreamId, WorkerIndex, mesh};
use uprtcd_dataplane::router::{ConsumerId, MediaKind, ProducerId, ProducerSpec, RouterError, RtxStream, TransportId};
use uprtcd_dataplane::stats::{DropReason, WorkerCounters};
use uprtcd_dataplane::testnet::Net;
use uprtcd_dataplane::wire::rtcp::{RtcpCompound, RtcpPacket, SenderInfo, write_nack, write_pli, write_sender_report};
use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};
use uprtcd_dataplane::worker::{WorkerHandle, WorkerPlan, Workers};

const PUBLISHER_SSRC: u32 = 0x00C0_FFEE;
const PACKETS: u16 = 300;
const PAYLOAD: usize = 1100;
const TIMEOUT: Duration = Duration::from_secs(10);
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn start_workers(backend: BackendChoice, relay: RelayConfig) -> Workers {
    let mut plan = WorkerPlan::on_loopback(2, backend);
    plan.relay = relay;
    Workers::start(&plan).expect("workers start")
}

fn worker_index(worker: &WorkerHandle) -> WorkerIndex {
    WorkerIndex(worker.index())
}

fn export(origin: &WorkerHandle, producer: ProducerId, to: &WorkerHandle) -> RelayStreamId {
    let to_worker = worker_index(to);
    match origin.request(Command::ExportProducer { producer, to_worker }, TIMEOUT).unwrap() {
        Reply::Exported(stream) => stream,
        other => panic!("{other:?}"),
    }
}

fn import(destination: &WorkerHandle, from: &WorkerHandle, stream: RelayStreamId) -> ProducerId {
    let from_worker = worker_index(from);
    let reply = destination
        .request(Command::ImportProducer { from_worker, stream, kind: MediaKind::Video, clock_rate: 90_000 }, TIMEOUT)
        .unwrap();
    match reply {
        Reply::ProducerAdded(id) => id,
        other => panic!("{other:?}"),
    }
}

fn add_consumer(worker: &WorkerHandle, producer: ProducerId, transport: TransportId, ssrc: u32) -> ConsumerId {
    let reply = worker.request(Command::add_consumer_as_published(producer, transport, ssrc), TIMEOUT).unwrap();
    match reply {
        Reply::ConsumerAdded(consumer) => consumer,
        other => panic!("{other:?}"),
    }
}

/// A connected subscriber of `producer` on `worker`, receiving it as `ssrc`.
fn subscribe(worker: &WorkerHandle, identity: &DtlsIdentity, producer: ProducerId, ssrc: u32) -> (ConsumerId, UdpPeer) {
    let (transport, client) = UdpPeer::connect_to_worker(worker, identity, LOOPBACK, TIMEOUT).expect("client connects");
    (add_consumer(worker, producer, transport, ssrc), client)
}

/// Waits until the published counters satisfy `done`; they are published about once a second.
fn published(worker: &WorkerHandle, done: impl Fn(&WorkerCounters) -> bool) -> WorkerCounters {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let counters = worker.stats().snapshot();
        if done(&counters) || Instant::now() > deadline {
            return counters;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_packet(publisher: &mut UdpPeer, seq: u16, payload: usize, buf: &mut [u8]) {
    let header = RtpHeader::new(96, seq, u32::from(seq) * 3000, PUBLISHER_SSRC).write(buf).unwrap();
    buf[header..header + payload].fill(seq as u8);
    publisher.send_rtp(buf, header + payload).unwrap();
}

/// Receives RTP until `count` packets came or a wait of `timeout` runs out: the sequence
/// numbers, after checking that each decrypted, carries `ssrc` and its payload.
fn receive_stream(subscriber: &mut UdpPeer, ssrc: u32, count: usize, timeout: Duration, name: &str) -> Vec<u16> {
    let mut buf = vec![0u8; 2048];
    let mut sequence = Vec::with_capacity(count);
    while sequence.len() < count {
        match subscriber.receive(&mut buf, timeout) {
            Some(Ok(Received::Rtp { len })) => {
                let packet = RtpPacket::new_checked(&buf[..len]).expect("valid RTP");
                assert_eq!(packet.ssrc(), ssrc, "{name}: the subscriber's own SSRC");
                let expected = (packet.timestamp() / 3000) as u8;
                assert!(packet.payload().iter().all(|&b| b == expected), "{name}: payload");
                sequence.push(packet.sequence_number());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{name}: a packet did not decrypt: {e}"),
            None => break,
        }
    }
    sequence
}

fn assert_complete(sequence: &[u16], count: usize, name: &str) {
    assert_eq!(sequence.len(), count, "{name} received every packet");
    assert!(sequence.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "{name}: in order");
}

/// The next RTCP packet `client` receives that `pick` accepts.
fn receive_rtcp<T>(client: &mut UdpPeer, pick: impl Fn(RtcpPacket<'_>) -> Option<T>, what: &str) -> T {
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        let Some(Ok(Received::Rtcp { len })) = client.receive(&mut buf, TIMEOUT) else { continue };
        let Ok(compound) = RtcpCompound::new_checked(&buf[..len]) else { continue };
        if let Some(found) = compound.packets().find_map(&pick) {
            return found;
        }
    }
    panic!("no {what} arrived");
}

/// Reads whatever `client` has received until it is quiet for `quiet`.
fn drain(client: &mut UdpPeer, quiet: Duration) -> usize {
    let mut buf = vec![0u8; 2048];
    let mut drained = 0;
    while client.receive(&mut buf, quiet).is_some() {
        drained += 1;
    }
    drained
}

fn relay_across_workers(backend: BackendChoice) {
    const PER_WORKER: usize = 3;
    let workers = start_workers(backend, RelayConfig::default());
    let (origin, destination) = (&workers.handles()[0], &workers.handles()[1]);
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let (publisher_transport, mut publisher) =
        UdpPeer::connect_to_worker(origin, &identity, LOOPBACK, TIMEOUT).expect("publisher connects");
    let producer = add_video_producer(origin, publisher_transport, PUBLISHER_SSRC, TIMEOUT).unwrap();
    let stream = export(origin, producer, destination);
    assert_eq!(export(origin, producer, destination), stream, "export is idempotent per destination");
    let imported = import(destination, origin, stream);
    assert_eq!(import(destination, origin, stream), imported, "import is idempotent");
    let to_self = origin.request(Command::ExportProducer { producer, to_worker: WorkerIndex(0) }, TIMEOUT).unwrap();
    assert!(matches!(to_self, Reply::Refused(EngineError::UnknownWorker)), "{to_self:?}");

    let mut subscribers: Vec<(String, u32, UdpPeer)> = Vec::new();
    let mut relayed_consumer = None;
    for i in 0..PER_WORKER as u32 {
        let (_, client) = subscribe(origin, &identity, producer, 0x1000 + i);
        subscribers.push((format!("local {i}"), 0x1000 + i, client));
        let (consumer, client) = subscribe(destination, &identity, imported, 0x2000 + i);
        relayed_consumer.get_or_insert(consumer);
        subscribers.push((format!("relayed {i}"), 0x2000 + i, client));
    }
    std::thread::scope(|scope| {
        let receivers: Vec<_> = subscribers
            .iter_mut()
            .map(|(name, ssrc, client)| {
                let name = name.clone();
                let ssrc = *ssrc;
                scope.spawn(move || {
                    let sequence = receive_stream(client, ssrc, usize::from(PACKETS), TIMEOUT, &name);
                    (name, sequence)
                })
            })
            .collect();
        let mut buf = vec![0u8; 2048];
        for seq in 0..PACKETS {
            send_packet(&mut publisher, seq, PAYLOAD, &mut buf);
            std::thread::sleep(Duration::from_millis(2));
        }
        for receiver in receivers {
            let (name, sequence) = receiver.join().expect("subscriber thread");
            assert_complete(&sequence, usize::from(PACKETS), &name);
        }
    });
    let relayed = &mut subscribers[1].2;

    // The publisher's sender report reaches the relayed subscriber in its numbering.
    let info = SenderInfo {
        ssrc: PUBLISHER_SSRC,
        ntp_timestamp: 0xE000_0000_8000_0000,
        rtp_timestamp: 5,
        packet_count: u32::from(PACKETS),
        octet_count: 1,
    };
    let mut buf = vec![0u8; 2048];
    let len = write_sender_report(&mut buf, &info, &[]).unwrap();
    publisher.send_rtcp(&mut buf, len).unwrap();
    let report = receive_rtcp(
        relayed,
        |p| match p {
            RtcpPacket::SenderReport(r) if r.info().ssrc == 0x2000 => Some(r.info()),
            _ => None,
        },
        "sender report",
    );
    assert_eq!((report.rtp_timestamp, report.packet_count), (5, u32::from(PACKETS)));

    // A NACK on worker 1 is answered from worker 1's own cache, on the RTX stream that
    // subscriber negotiated.
    let (consumer, rtx) = (relayed_consumer.unwrap(), RtxStream { ssrc: 0x3000, payload_type: 97 });
    let reply = destination.request(Command::EnableRtx { consumer, rtx }, TIMEOUT).unwrap();
    assert!(matches!(reply, Reply::Done), "{reply:?}");
    let lost = PACKETS - 10;
    let len = write_nack(&mut buf, 0x2000, 0x2000, &[lost]).unwrap();
    relayed.send_rtcp(&mut buf, len).unwrap();
    let resent = loop {
        match relayed.receive(&mut buf, TIMEOUT) {
            Some(Ok(Received::Rtp { len })) => break buf[..len].to_vec(),
            Some(Ok(_)) => continue,
            other => panic!("no retransmission: {other:?}"),
        }
    };
    let resent = RtpPacket::new_checked(&resent[..]).unwrap();
    assert_eq!((resent.ssrc(), resent.payload_type()), (0x3000, 97));
    assert_eq!(resent.payload()[..2], lost.to_be_bytes(), "the original sequence number first");
    assert!(resent.payload()[2..].iter().all(|&b| b == lost as u8));

    // A subscriber's PLI on worker 1 reaches the publisher on worker 0. The consumers'
    // keyframe requests of the start are long past the throttle interval.
    drain(&mut publisher, Duration::from_millis(200));
    let len = write_pli(&mut buf, 0x2000, 0x2000).unwrap();
    relayed.send_rtcp(&mut buf, len).unwrap();
    let pli = receive_rtcp(
        &mut publisher,
        |p| match p {
            RtcpPacket::Pli(pli) => Some(pli.media_ssrc()),
            _ => None,
        },
        "PLI at the publisher",
    );
    assert_eq!(pli, PUBLISHER_SSRC);

    let expected = u64::from(PACKETS);
    let sent = published(origin, |c| c.relayed_out >= expected);
    assert!(sent.relayed_out >= expected, "relayed out: {}", sent.relayed_out);
    let got = published(destination, |c| c.relayed_in >= expected && c.packets_out >= expected * 3);
    assert!(got.relayed_in >= expected, "relayed in: {}", got.relayed_in);
    assert_eq!((got.producers, got.consumers), (1, PER_WORKER as u64));
    assert_eq!(got.drops_of(DropReason::RelayUnknownStream), 0);
    assert_eq!(sent.drops_of(DropReason::RelayQueueFull), 0);

    // The publisher leaves: the imported producer and its consumers go with it.
    let reply = origin.request(Command::CloseTransport { transport: publisher_transport }, TIMEOUT);
    assert!(matches!(reply, Ok(Reply::Done)), "{reply:?}");
    let after = published(destination, |c| c.producers == 0);
    assert_eq!((after.producers, after.consumers), (0, 0), "worker 1 removed the import and its consumers");
    let after = published(origin, |c| c.producers == 0);
    assert_eq!((after.producers, after.consumers), (0, 0));
    for seq in PACKETS..PACKETS + 10 {
        send_packet(&mut publisher, seq, PAYLOAD, &mut buf);
    }
    let late = receive_stream(relayed, 0x2000, 1, Duration::from_millis(300), "after the end");
    assert!(late.is_empty(), "no packets after the publisher left: {late:?}");
    workers.shutdown();
}

#[test]
fn relay_to_subscribers_on_another_worker_over_epoll() {
    relay_across_workers(BackendChoice::Epoll);
}

#[test]
fn relay_to_subscribers_on_another_worker_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    relay_across_workers(BackendChoice::Uring);
}

/// A link of one message: the publisher's unpaced burst reaches worker 0 in batches, and
/// worker 1 is woken once per batch at most, so it cannot take each packet as it comes.
fn a_slow_destination_drops_and_counts(backend: BackendChoice) {
    let workers = start_workers(backend, RelayConfig { link_capacity: 1, ..RelayConfig::default() });
    let (origin, destination) = (&workers.handles()[0], &workers.handles()[1]);
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let (publisher_transport, mut publisher) =
        UdpPeer::connect_to_worker(origin, &identity, LOOPBACK, TIMEOUT).expect("publisher connects");
    let producer = add_video_producer(origin, publisher_transport, PUBLISHER_SSRC, TIMEOUT).unwrap();
    let imported = relay_video(origin, destination, producer, TIMEOUT).unwrap();
    let (_, mut local) = subscribe(origin, &identity, producer, 0x1000);
    let (_, mut relayed) = subscribe(destination, &identity, imported, 0x2000);

    let mut buf = vec![0u8; 2048];
    for seq in 0..PACKETS {
        send_packet(&mut publisher, seq, PAYLOAD, &mut buf);
    }
    assert_complete(&receive_stream(&mut local, 0x1000, usize::from(PACKETS), TIMEOUT, "local"), 300, "local");
    let sent = published(origin, |c| c.relayed_out + c.drops_of(DropReason::RelayQueueFull) >= u64::from(PACKETS));
    let dropped = sent.drops_of(DropReason::RelayQueueFull);
    assert_eq!(sent.relayed_out + dropped, u64::from(PACKETS), "each packet relayed or counted as dropped");
    assert!(dropped > 0, "a link of one message must overflow under a burst");
    eprintln!("{}: {dropped} of {PACKETS} packets dropped on the way to worker 1", origin.backend());
    let got = published(destination, |c| c.relayed_in >= sent.relayed_out);
    assert_eq!(got.relayed_in, sent.relayed_out, "what was queued arrived");
    let sequence = receive_stream(&mut relayed, 0x2000, usize::from(PACKETS), Duration::from_millis(500), "relayed");
    assert_eq!(sequence.len() as u64, sent.relayed_out, "the relayed subscriber got what was relayed");
    assert!(sequence.windows(2).all(|w| w[1] > w[0]), "in order, with gaps where packets were dropped");
    workers.shutdown();
}

#[test]
fn a_slow_destination_drops_and_counts_over_epoll() {
    a_slow_destination_drops_and_counts(BackendChoice::Epoll);
}

#[test]
fn a_slow_destination_drops_and_counts_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    a_slow_destination_drops_and_counts(BackendChoice::Uring);
}

/// The soft limit on open files; `None` when unlimited or unknown.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// 1,000 subscribers, 500 on the publisher's worker and 500 on the other, each with its own
/// ICE, DTLS and SRTP; all of them must decrypt every packet of the stream, in order.
fn a_thousand_subscribers_over_two_workers(backend: BackendChoice) {
    const SUBSCRIBERS: usize = 1000;
    const CONNECT_BATCH: usize = 100;
    const SCALE_PACKETS: u16 = 300;
    const SCALE_PAYLOAD: usize = 200;
    // A socket per subscriber, and the workers' and the harness's own.
    if let Some(limit) = open_file_limit().filter(|&l| l < SUBSCRIBERS as u64 + 200) {
        eprintln!("skipped: {SUBSCRIBERS} subscribers need more open files than the limit of {limit} (ulimit -n)");
        return;
    }
    let started = Instant::now();
    let workers = start_workers(backend, RelayConfig::default());
    let (origin, destination) = (&workers.handles()[0], &workers.handles()[1]);
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let (publisher_transport, mut publisher) =
        UdpPeer::connect_to_worker(origin, &identity, LOOPBACK, TIMEOUT).expect("publisher connects");
    let producer = add_video_producer(origin, publisher_transport, PUBLISHER_SSRC, TIMEOUT).unwrap();
    let imported = relay_video(origin, destination, producer, TIMEOUT).unwrap();

    // Transports are asked for one by one (as signalling would); the handshakes run in
    // parallel, a batch at a time.
    let mut subscribers: Vec<(u32, UdpPeer)> = Vec::with_capacity(SUBSCRIBERS);
    for batch in 0..SUBSCRIBERS / CONNECT_BATCH {
        let mut pending: Vec<(WorkerIndex, TransportId, u32, UdpPeer)> = (0..CONNECT_BATCH)
            .map(|i| {
                let n = batch * CONNECT_BATCH + i;
                let worker = &workers.handles()[n % 2];
                let (transport, client) =
                    UdpPeer::for_worker(worker, &identity, LOOPBACK, TIMEOUT).expect("transport created");
                (worker_index(worker), transport, 0x10_0000 + n as u32, client)
            })
            .collect();
        std::thread::scope(|scope| {
            let joins: Vec<_> =
                pending.iter_mut().map(|(.., client)| scope.spawn(move || client.connect(TIMEOUT))).collect();
            for join in joins {
                join.join().expect("connecting thread").expect("subscriber connects");
            }
        });
        for (worker, transport, ssrc, client) in pending {
            let (handle, feed) = if worker.0 == 0 { (origin, producer) } else { (destination, imported) };
            add_consumer(handle, feed, transport, ssrc);
            subscribers.push((ssrc, client));
        }
    }
    let connected = started.elapsed();

    // Paced like a camera; every subscriber socket buffers the whole stream, so they are
    // read afterwards, by a few threads.
    let mut buf = vec![0u8; 2048];
    for seq in 0..SCALE_PACKETS {
        send_packet(&mut publisher, seq, SCALE_PAYLOAD, &mut buf);
        std::thread::sleep(Duration::from_millis(3));
    }
    let threads = 8;
    let chunk = SUBSCRIBERS.div_ceil(threads);
    std::thread::scope(|scope| {
        let readers: Vec<_> = subscribers
            .chunks_mut(chunk)
            .map(|chunk| {
                scope.spawn(move || {
                    for (ssrc, client) in chunk {
                        let name = format!("subscriber {ssrc:#x}");
                        let count = usize::from(SCALE_PACKETS);
                        let sequence = receive_stream(client, *ssrc, count, Duration::from_secs(3), &name);
                        assert_complete(&sequence, count, &name);
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.join().expect("reader thread");
        }
    });
    let sent = published(origin, |c| c.relayed_out >= u64::from(SCALE_PACKETS));
    assert_eq!(sent.drops_of(DropReason::RelayQueueFull), 0);
    let got = published(destination, |c| c.consumers == (SUBSCRIBERS / 2) as u64);
    assert_eq!(got.consumers, (SUBSCRIBERS / 2) as u64);
    eprintln!(
        "{}: {SUBSCRIBERS} subscribers connected in {:.1} s; all received {SCALE_PACKETS} packets; {:.1} s in all",
        origin.backend(),
        connected.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    workers.shutdown();
}

#[test]
fn a_thousand_subscribers_over_two_workers_over_epoll() {
    a_thousand_subscribers_over_two_workers(BackendChoice::Epoll);
}

#[test]
fn a_thousand_subscribers_over_two_workers_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    a_thousand_subscribers_over_two_workers(BackendChoice::Uring);
}

// In virtual time: two engines linked like workers 0 and 1.

/// An origin whose client 0 publishes video and whose clients 1.. are subscribers-to-be, and
/// a destination with `destination_clients` clients, linked by `config`.
fn linked(config: RelayConfig, origin_clients: usize, destination_clients: usize) -> (Net, ProducerId, Net) {
    let mut links = mesh(2, config).into_iter();
    let engine_config = EngineConfig::default();
    let mut origin = Net::new(engine_config);
    origin.engine.attach_links(links.next().unwrap());
    let mut destination = Net::new(engine_config);
    destination.engine.attach_links(links.next().unwrap());
    origin.add_clients(origin_clients);
    assert_eq!(origin.connect_all(), origin_clients);
    destination.add_clients(destination_clients);
    assert_eq!(destination.connect_all(), destination_clients);
    let spec = ProducerSpec {
        transport: origin.clients[0].transport,
        ssrc: PUBLISHER_SSRC,
        kind: MediaKind::Video,
        clock_rate: 90_000,
    };
    let producer = origin.engine.add_producer(spec).unwrap();
    (origin, producer, destination)
}

fn relay(origin: &mut Net, producer: ProducerId, destination: &mut Net) -> (RelayStreamId, ProducerId) {
    let stream = origin.engine.export_producer(producer, WorkerIndex(1)).unwrap();
    let imported = destination.engine.import_producer(WorkerIndex(0), stream, MediaKind::Video, 90_000).unwrap();
    (stream, imported)
}

fn rtp_received(net: &Net, client: usize) -> Vec<u16> {
    net.clients[client]
        .inbox
        .iter()
        .filter(|(kind, _)| matches!(kind, Received::Rtp { .. }))
        .map(|(_, bytes)| RtpPacket::new_checked(&bytes[..]).unwrap().sequence_number())
        .collect()
}

fn plis_received(net: &Net, client: usize) -> usize {
    net.clients[client]
        .inbox
        .iter()
        .filter(|(kind, _)| matches!(kind, Received::Rtcp { .. }))
        .flat_map(|(_, bytes)| RtcpCompound::new_checked(&bytes[..]).unwrap().packets().collect::<Vec<_>>())
        .filter(|p| matches!(p, RtcpPacket::Pli(pli) if pli.media_ssrc() == PUBLISHER_SSRC))
        .count()
}

#[test]
fn overflow_is_counted_exactly_and_the_origin_keeps_forwarding() {
    let (mut origin, producer, mut destination) =
        linked(RelayConfig { link_capacity: 4, ..RelayConfig::default() }, 2, 1);
    let (_, imported) = relay(&mut origin, producer, &mut destination);
    origin.engine.add_consumer(producer, origin.clients[1].transport, 0x1000).unwrap();
    destination.engine.add_consumer(imported, destination.clients[0].transport, 0x2000).unwrap();
    // The destination does not run while the origin forwards ten packets.
    for seq in 0..10u16 {
        origin.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &[seq as u8; 100]);
        origin.deliver();
    }
    assert_eq!(rtp_received(&origin, 1), (0..10).collect::<Vec<_>>(), "the origin's own subscriber got all");
    let counters = origin.engine.counters().clone();
    assert_eq!((counters.relayed_out, counters.drops_of(DropReason::RelayQueueFull)), (4, 6));
    destination.deliver();
    assert_eq!(rtp_received(&destination, 0), [0, 1, 2, 3], "the first four waited in the link");
    assert_eq!(destination.engine.counters().relayed_in, 4);
    // Once drained, the link takes packets again.
    origin.send_rtp(0, PUBLISHER_SSRC, 10, 30_000, &[10; 100]);
    origin.deliver();
    destination.deliver();
    assert_eq!(rtp_received(&destination, 0), [0, 1, 2, 3, 10]);
    assert_eq!(destination.clients[0].errors, 0);
}

#[test]
fn packets_before_the_import_are_dropped_and_counted() {
    let (mut origin, producer, mut destination) = linked(RelayConfig::default(), 1, 1);
    let stream = origin.engine.export_producer(producer, WorkerIndex(1)).unwrap();
    for seq in 0..3u16 {
        origin.send_rtp(0, PUBLISHER_SSRC, seq, 0, &[0; 100]);
    }
    origin.deliver();
    destination.deliver();
    assert_eq!(destination.engine.counters().drops_of(DropReason::RelayUnknownStream), 3);
    let imported = destination.engine.import_producer(WorkerIndex(0), stream, MediaKind::Video, 90_000).unwrap();
    destination.engine.add_consumer(imported, destination.clients[0].transport, 0x2000).unwrap();
    origin.send_rtp(0, PUBLISHER_SSRC, 3, 9000, &[3; 100]);
    origin.deliver();
    destination.deliver();
    assert_eq!(rtp_received(&destination, 0), [3]);
    assert_eq!(destination.engine.counters().relayed_in, 4);
}

#[test]
fn a_new_consumers_keyframe_request_reaches_the_publisher_through_the_origin() {
    let (mut origin, producer, mut destination) = linked(RelayConfig::default(), 1, 2);
    let (_, imported) = relay(&mut origin, producer, &mut destination);
    destination.engine.add_consumer(imported, destination.clients[0].transport, 0x2000).unwrap();
    destination.deliver();
    origin.deliver();
    assert_eq!(plis_received(&origin, 0), 1, "the destination asked the origin, which asked the publisher");
    // A second consumer within the throttle interval asks again; neither side lets it through.
    destination.engine.add_consumer(imported, destination.clients[1].transport, 0x2001).unwrap();
    destination.deliver();
    origin.deliver();
    assert_eq!(plis_received(&origin, 0), 1);
    // A subscriber's own PLI after the interval goes through.
    destination.advance(Duration::from_millis(600));
    origin.advance(Duration::from_millis(600));
    let mut pli = vec![0u8; 64];
    let len = write_pli(&mut pli, 0x2001, 0x2001).unwrap();
    destination.send_rtcp(1, &pli[..len]);
    destination.deliver();
    origin.deliver();
    assert_eq!(plis_received(&origin, 0), 2);
}

#[test]
fn the_end_of_a_stream_removes_the_import_with_its_consumers() {
    let (mut origin, producer, mut destination) = linked(RelayConfig::default(), 1, 1);
    let (stream, imported) = relay(&mut origin, producer, &mut destination);
    destination.engine.add_consumer(imported, destination.clients[0].transport, 0x2000).unwrap();
    assert_eq!((destination.engine.producer_count(), destination.engine.consumer_count()), (1, 1));

    // Unexporting tells the destination.
    origin.engine.unexport_producer(producer, WorkerIndex(1)).unwrap();
    origin.engine.unexport_producer(producer, WorkerIndex(1)).unwrap();
    destination.deliver();
    assert_eq!((destination.engine.producer_count(), destination.engine.consumer_count()), (0, 0));
    assert!(destination.engine.drain_events().any(|e| e == EngineEvent::ImportEnded(imported)));
    let again = destination.engine.import_producer(WorkerIndex(0), stream, MediaKind::Video, 90_000);
    assert_eq!(again, Err(EngineError::RelayStreamEnded), "an ended stream cannot be imported");

    // The publisher leaving ends the stream too, even when that comes before the import.
    let late = origin.engine.export_producer(producer, WorkerIndex(1)).unwrap();
    assert_ne!(late, stream, "a new export gets a new id");
    let publisher = origin.clients[0].transport;
    origin.engine.close_transport(publisher).unwrap();
    destination.deliver();
    let refused = destination.engine.import_producer(WorkerIndex(0), late, MediaKind::Video, 90_000);
    assert_eq!(refused, Err(EngineError::RelayStreamEnded));
    assert_eq!(destination.engine.producer_count(), 0);
}

#[test]
fn exports_and_imports_are_refused_where_no_link_leads() {
    let (mut origin, producer, mut destination) = linked(RelayConfig::default(), 1, 0);
    assert_eq!(origin.engine.export_producer(producer, WorkerIndex(0)), Err(EngineError::UnknownWorker));
    assert_eq!(origin.engine.export_producer(producer, WorkerIndex(2)), Err(EngineError::UnknownWorker));
    assert_eq!(
        origin.engine.export_producer(ProducerId(99), WorkerIndex(1)),
        Err(EngineError::Router(RouterError::UnknownProducer))
    );
    let (_, imported) = relay(&mut origin, producer, &mut destination);
    assert_eq!(
        destination.engine.export_producer(imported, WorkerIndex(0)),
        Err(EngineError::Router(RouterError::NotLocal))
    );
    let mut alone = Net::new(EngineConfig::default());
    assert_eq!(
        alone.engine.import_producer(WorkerIndex(1), RelayStreamId(0), MediaKind::Audio, 48_000),
        Err(EngineError::UnknownWorker)
    );
}
