//! Does a join storm stall forwarding? One worker forwards a 1,000 packets/s video stream
//! to 20 subscribers over loopback UDP while 100 new clients start ICE and DTLS at once.
//! Prints the worker's longest loop turn (published each second) before and during the
//! storm, and how long the storm took to connect everyone. A loop turn is timed by the wall
//! clock, so on a machine with few cores it includes the time the worker was preempted by
//! the 100 client threads doing their own handshakes.
//!
//! `cargo run --release -p uprtcd-dataplane --example handshake_storm [epoll|uring]`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use uprtcd_dataplane::command::Command;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::io::BackendChoice;
use uprtcd_dataplane::peer::{UdpPeer, add_video_producer};
use uprtcd_dataplane::wire::rtp::RtpHeader;
use uprtcd_dataplane::worker::{WorkerHandle, WorkerPlan, Workers};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TIMEOUT: Duration = Duration::from_secs(20);
const SUBSCRIBERS: usize = 20;
const STORM: usize = 100;

/// The longest loop turn the worker published for the next full publishing interval.
fn next_longest_turn(worker: &WorkerHandle) -> Duration {
    let turns = worker.stats().snapshot().loop_turns;
    while worker.stats().snapshot().loop_turns == turns {
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.stats().snapshot().longest_turn
}

fn main() {
    let backend = match std::env::args().nth(1).as_deref() {
        Some("uring") => BackendChoice::Uring,
        _ => BackendChoice::Epoll,
    };
    let plan = WorkerPlan::on_loopback(1, backend);
    let workers = Workers::start(&plan).expect("worker starts");
    let worker = &workers.handles()[0];
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("identity");

    let (publisher_transport, mut publisher) =
        UdpPeer::connect_to_worker(worker, &identity, LOOPBACK, TIMEOUT).expect("publisher connects");
    let producer = add_video_producer(worker, publisher_transport, 7, TIMEOUT).expect("producer added");
    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let (transport, client) =
            UdpPeer::connect_to_worker(worker, &identity, LOOPBACK, TIMEOUT).expect("subscriber connects");
        let ssrc = 100 + i as u32;
        worker.request(Command::add_consumer_as_published(producer, transport, ssrc), TIMEOUT).unwrap();
        subscribers.push(client);
    }

    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = vec![0u8; 2048];
            let mut seq = 0u16;
            while !stop.load(Ordering::Relaxed) {
                let header = RtpHeader::new(96, seq, u32::from(seq) * 90, 7).write(&mut buf).unwrap();
                buf[header..header + 1100].fill(0x5A);
                publisher.send_rtp(&mut buf, header + 1100).unwrap();
                seq = seq.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // Let the set-up handshakes' interval pass before measuring the quiet baseline.
        next_longest_turn(worker);
        next_longest_turn(worker);
        let quiet = (0..3).map(|_| next_longest_turn(worker)).max().unwrap_or_default();
        let mut storm: Vec<UdpPeer> = (0..STORM)
            .map(|_| UdpPeer::for_worker(worker, &identity, LOOPBACK, TIMEOUT).expect("transport").1)
            .collect();
        let started = Instant::now();
        let during = scope.spawn(|| (0..3).map(|_| next_longest_turn(worker)).max().unwrap_or_default());
        let connected = std::thread::scope(|inner| {
            let joins: Vec<_> = storm.iter_mut().map(|c| inner.spawn(move || c.connect(TIMEOUT).is_ok())).collect();
            joins.into_iter().map(|j| j.join().unwrap()).filter(|&ok| ok).count()
        });
        let storm_time = started.elapsed();
        let during = during.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        let drops = worker.stats().snapshot().drops_of(uprtcd_dataplane::stats::DropReason::HandshakeBacklog);
        println!("backend: {}", worker.backend());
        println!("forwarding: 1,000 packets/s of 1,100 bytes to {SUBSCRIBERS} subscribers");
        println!("longest loop turn, quiet:        {:>8.1} µs", quiet.as_secs_f64() * 1e6);
        println!("longest loop turn, during storm: {:>8.1} µs", during.as_secs_f64() * 1e6);
        println!("storm: {connected}/{STORM} clients connected in {:.0} ms", storm_time.as_secs_f64() * 1e3);
        println!("handshake datagrams dropped because the backlog was full: {drops}");
    });
    drop(subscribers);
    workers.shutdown();
}
