//! What relaying costs against forwarding on the publisher's own worker: a publisher on
//! worker 0 sends 1,100-byte SRTP video in bursts to 10 subscribers over loopback UDP, first
//! with the subscribers on worker 0 (local copies), then with them on worker 1 (worker 0
//! copies each packet once into a relay buffer, worker 1 protects and sends). Reports each
//! worker's CPU per published packet from the kernel's accounting of its thread. The bursts
//! are paced so that neither the worker's socket nor the link overflows (drops are shown).
//!
//! `cargo run --release -p uprtcd-dataplane --example relay_cost [packets]`

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use uprtcd_dataplane::command::Command;
use uprtcd_dataplane::cpu::thread_cpu_time;
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::io::BackendChoice;
use uprtcd_dataplane::peer::{UdpPeer, add_video_producer, relay_video};
use uprtcd_dataplane::stats::{DropReason, WorkerCounters};
use uprtcd_dataplane::wire::rtp::RtpHeader;
use uprtcd_dataplane::worker::{WorkerHandle, WorkerPlan, Workers};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TIMEOUT: Duration = Duration::from_secs(10);
const SUBSCRIBERS: usize = 10;
const BURST: usize = 32;

/// Waits for the worker's next published counters.
fn published(worker: &WorkerHandle) -> WorkerCounters {
    let turns = worker.stats().snapshot().loop_turns;
    while worker.stats().snapshot().loop_turns == turns {
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.stats().snapshot()
}

fn cpu(worker: &WorkerHandle) -> Duration {
    thread_cpu_time(worker.thread_id()).expect("worker CPU time")
}

fn measure(relayed: bool, packets: usize) {
    let plan = WorkerPlan::on_loopback(2, BackendChoice::Epoll);
    let workers = Workers::start(&plan).expect("workers start");
    let (origin, destination) = (&workers.handles()[0], &workers.handles()[1]);
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).expect("identity");
    let (publisher_transport, mut publisher) =
        UdpPeer::connect_to_worker(origin, &identity, LOOPBACK, TIMEOUT).expect("client connects");
    let origin_producer = add_video_producer(origin, publisher_transport, 7, TIMEOUT).expect("producer added");
    let (producer, subscribed_on) = if relayed {
        (relay_video(origin, destination, origin_producer, TIMEOUT).expect("relayed to worker 1"), destination)
    } else {
        (origin_producer, origin)
    };
    // Subscribers are sinks: their kernel buffers take what they can.
    let subscribers: Vec<UdpPeer> = (0..SUBSCRIBERS)
        .map(|i| {
            let (transport, client) =
                UdpPeer::connect_to_worker(subscribed_on, &identity, LOOPBACK, TIMEOUT).expect("client connects");
            let ssrc = 100 + i as u32;
            subscribed_on.request(Command::add_consumer_as_published(producer, transport, ssrc), TIMEOUT).unwrap();
            client
        })
        .collect();

    let before = (published(origin), published(destination));
    let cpu_before = (cpu(origin), cpu(destination));
    let started = Instant::now();
    let mut buf = vec![0u8; 2048];
    for seq in 0..packets {
        let seq = seq as u16;
        let header = RtpHeader::new(96, seq, u32::from(seq) * 90, 7).write(&mut buf).unwrap();
        buf[header..header + 1100].fill(0x5A);
        publisher.send_rtp(&mut buf, header + 1100).unwrap();
        if usize::from(seq) % BURST == BURST - 1 {
            std::thread::sleep(Duration::from_micros(800));
        }
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    let spent = (cpu(origin) - cpu_before.0, cpu(destination) - cpu_before.1);
    let after = (published(origin), published(destination));
    let forwarded = (after.0.packets_out - before.0.packets_out) + (after.1.packets_out - before.1.packets_out);
    let relayed_out = after.0.relayed_out - before.0.relayed_out;
    let dropped: u64 =
        [&after.0, &after.1].iter().map(|c| DropReason::ALL.iter().map(|&r| c.drops_of(r)).sum::<u64>()).sum();
    let per_packet = |d: Duration| d.as_secs_f64() * 1e6 / packets as f64;
    println!(
        "{}: {forwarded} copies sent in {:.2} s ({relayed_out} packets relayed, {dropped} drops); \
         CPU per published packet: worker 0 {:.2} µs, worker 1 {:.2} µs, both {:.2} µs ({:.3} µs per copy)",
        if relayed { "subscribers on worker 1" } else { "subscribers on worker 0" },
        elapsed.as_secs_f64(),
        per_packet(spent.0),
        per_packet(spent.1),
        per_packet(spent.0 + spent.1),
        (spent.0 + spent.1).as_secs_f64() * 1e6 / forwarded.max(1) as f64,
    );
    drop(subscribers);
    workers.shutdown();
}

fn main() {
    let packets = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(50_000);
    measure(false, packets);
    measure(true, packets);
}
