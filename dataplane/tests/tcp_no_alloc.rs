//! Steady-state forwarding over ICE-TCP allocates nothing: with a counting global allocator,
//! SRTP video from a TCP publisher through a worker to a TCP subscriber (de-framing,
//! unprotect, route, protect, the hash lookup of the destination, framing, the writes) makes
//! zero allocations per packet once the streams are running, on both backends.

mod common;

use std::alloc::System;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use uprtcd_dataplane::command::{Command, Reply};
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::io::{BackendChoice, uring_unavailable_reason};
use uprtcd_dataplane::peer::{TcpPeer, add_video_producer};
use uprtcd_dataplane::worker::{WorkerPlan, Workers};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SSRC: u32 = 0xABCD;
const ROUND: u16 = 100;
const TIMEOUT: Duration = Duration::from_secs(10);

fn forwarding_over_tcp_allocates_nothing(backend: BackendChoice) {
    let plan = WorkerPlan::on_loopback(1, backend);
    let workers = Workers::start(&plan).expect("worker starts");
    let worker = &workers.handles()[0];
    let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
    let (transport, mut publisher) = TcpPeer::connect_to_worker(worker, &identity, TIMEOUT).unwrap();
    let producer = add_video_producer(worker, transport, SSRC, TIMEOUT).expect("producer added");
    let (transport, mut subscriber) = TcpPeer::connect_to_worker(worker, &identity, TIMEOUT).unwrap();
    let reply = worker.request(Command::add_consumer_as_published(producer, transport, 0x100), TIMEOUT).unwrap();
    assert!(matches!(reply, Reply::ConsumerAdded(_)), "{reply:?}");

    let (mut seq, mut buffers) = (0u16, (vec![0u8; 2048], vec![0u8; 2048]));
    let round = || {
        let send = |buf: &mut [u8], len| publisher.send_rtp(buf, len);
        common::burst(send, |buf, wait| subscriber.receive(buf, wait), SSRC, &mut seq, ROUND, &mut buffers);
    };
    common::assert_rounds_allocate_nothing(GLOBAL, &format!("forwarding {ROUND} packets over TCP"), round);
    workers.shutdown();
}

#[test]
fn forwarding_over_tcp_allocates_nothing_per_packet_over_epoll() {
    forwarding_over_tcp_allocates_nothing(BackendChoice::Epoll);
}

#[test]
fn forwarding_over_tcp_allocates_nothing_per_packet_over_io_uring() {
    if let Some(reason) = uring_unavailable_reason() {
        eprintln!("skipped: io_uring unavailable here: {reason}");
        return;
    }
    forwarding_over_tcp_allocates_nothing(BackendChoice::Uring);
}
