//! What one loop turn and one forwarded packet cost a worker on each socket backend: a
//! publisher sends 1,100-byte SRTP video in bursts through one worker to 10 subscribers over
//! loopback UDP. Reports forwarded packets per second, CPU per forwarded packet from the
//! kernel's accounting of the worker thread (system calls included), and the loop turns.
//!
//! `cargo run --release -p uprtcd-dataplane --example worker_cost [packets]`

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use uprtcd_dataplane::command::Command;
use uprtcd_dataplane::cpu::thread_cpu_time;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::io::{BackendChoice, uring_unavailable_reason};
use uprtcd_dataplane::peer::{UdpPeer, add_video_producer};
use uprtcd_dataplane::wire::rtp::RtpHeader;
use uprtcd_dataplane::worker::{WorkerHandle, WorkerPlan, Workers};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TIMEOUT: Duration = Duration::from_secs(10);
const SUBSCRIBERS: usize = 10;
const BURST: usize = 32;

/// Waits for the worker's next published counters.
fn published(worker: &WorkerHandle) -> uprtcd_dataplane::stats::WorkerCounters {
    let turns = worker.stats().snapshot().loop_turns;
    while worker.stats().snapshot().loop_turns == turns {
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.stats().snapshot()
}

fn measure(backend: BackendChoice, packets: usize) {
    let plan = WorkerPlan::on_loopback(1, backend);
    let workers = Workers::start(&plan).expect("worker starts");
    let worker = &workers.handles()[0];
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("identity");
    let (publisher_transport, mut publisher) =
        UdpPeer::connect_to_worker(worker, &identity, LOOPBACK, TIMEOUT).expect("client connects");
    let producer = add_video_producer(worker, publisher_transport, 7, TIMEOUT).expect("producer added");
    // Subscribers are sinks: their kernel buffers take what they can, which costs the worker
    // nothing more than a subscriber that reads.
    let subscribers: Vec<UdpPeer> = (0..SUBSCRIBERS)
        .map(|i| {
            let (transport, client) =
                UdpPeer::connect_to_worker(worker, &identity, LOOPBACK, TIMEOUT).expect("client connects");
            let ssrc = 100 + i as u32;
            worker.request(Command::add_consumer_as_published(producer, transport, ssrc), TIMEOUT).unwrap();
            client
        })
        .collect();

    let before = published(worker);
    let cpu_before = thread_cpu_time(worker.thread_id()).expect("worker CPU time");
    let started = Instant::now();
    let mut buf = vec![0u8; 2048];
    for seq in 0..packets {
        let seq = seq as u16;
        let header = RtpHeader::new(96, seq, u32::from(seq) * 90, 7).write(&mut buf).unwrap();
        buf[header..header + 1100].fill(0x5A);
        publisher.send_rtp(&mut buf, header + 1100).unwrap();
        if usize::from(seq) % BURST == BURST - 1 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    let cpu = thread_cpu_time(worker.thread_id()).expect("worker CPU time") - cpu_before;
    let after = published(worker);
    let forwarded = after.packets_out - before.packets_out;
    let received = after.packets_in - before.packets_in;
    let turns = (after.loop_turns - before.loop_turns).max(1);
    println!(
        "{:>5}: {received} in, {forwarded} forwarded in {:.2} s = {:.0} packets/s out; \
         worker CPU {:.3} µs per forwarded packet ({:.0} % of a core); \
         {turns} loop turns, {:.1} packets in per turn, busy {:.1} µs per turn, longest {:.0} µs",
        worker.backend(),
        elapsed.as_secs_f64(),
        forwarded as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / forwarded.max(1) as f64,
        cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        received as f64 / turns as f64,
        (after.busy - before.busy).as_secs_f64() * 1e6 / turns as f64,
        after.longest_turn.as_secs_f64() * 1e6,
    );
    drop(subscribers);
    workers.shutdown();
}

fn main() {
    let packets = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(50_000);
    measure(BackendChoice::Epoll, packets);
    match uring_unavailable_reason() {
        None => measure(BackendChoice::Uring, packets),
        Some(reason) => println!("uring: not measured: {reason}"),
    }
}
