//! What one DTLS-SRTP handshake costs each side: CPU time spent inside the transport's calls
//! and heap allocations made by them, over many lossless in-memory handshakes. The server is
//! always our ECDSA P-256 identity; the client presents ECDSA P-256 (browsers) or RSA-2048
//! (OpenSSL-based peers such as GStreamer's webrtcbin), which changes the signature the
//! server verifies (the client's CertificateVerify) and the one the client makes.
//!
//! Run it in release: `cargo run --release -p uprtcd-dataplane --example dtls_handshake_cost`.
//! Optional argument: the number of handshakes per scenario (default 300).
//!
//! The global allocator is the system allocator wrapped by `stats_alloc` (the product uses
//! mimalloc; allocation counts do not depend on the allocator, times do slightly). The
//! handshake itself runs in virtual time; only the measurement reads the wall clock.

use std::alloc::System;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::dtls::{DtlsIdentity, DtlsOutput, DtlsTransport, DtlsVersionPolicy, MIN_OUTPUT_BUFFER_LEN};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Time and allocations spent inside one side's calls.
#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    time: Duration,
    allocations: usize,
    bytes_allocated: usize,
}

impl Cost {
    /// Runs `work`, charging its time and allocations to `self`.
    fn charge<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let region = Region::new(GLOBAL);
        let started = Instant::now();
        let result = work();
        self.time += started.elapsed();
        let change = region.change();
        self.allocations += change.allocations + change.reallocations;
        self.bytes_allocated += change.bytes_allocated;
        result
    }
}

/// Drains `transport` inside `cost`, copying datagrams out afterwards (the copy is the
/// network's, not the transport's, so it is not charged).
fn drain(transport: &mut DtlsTransport, cost: &mut Cost, connected: &mut bool) -> Vec<Vec<u8>> {
    let mut buf = [0u8; MIN_OUTPUT_BUFFER_LEN];
    let mut datagrams = Vec::new();
    loop {
        let (datagram_len, done) = cost.charge(|| match transport.poll_output(&mut buf) {
            Some(DtlsOutput::Transmit(datagram)) => (Some(datagram.len()), false),
            Some(DtlsOutput::Connected { .. }) => {
                *connected = true;
                (None, false)
            }
            Some(DtlsOutput::Failed(error)) => panic!("handshake failed: {error}"),
            Some(DtlsOutput::Closed) => panic!("handshake closed"),
            None => (None, true),
        });
        if let Some(len) = datagram_len {
            datagrams.push(buf[..len].to_vec());
        }
        if done {
            return datagrams;
        }
    }
}

/// One lossless handshake; returns the server's and the client's cost.
fn handshake(server_identity: &DtlsIdentity, client_identity: &DtlsIdentity) -> (Cost, Cost) {
    let (mut server_cost, mut client_cost) = (Cost::default(), Cost::default());
    let now = Instant::now();
    let mut server =
        server_cost.charge(|| DtlsTransport::new_server(server_identity, client_identity.fingerprint(), now));
    let mut client =
        client_cost.charge(|| DtlsTransport::new_client(client_identity, server_identity.fingerprint(), now));
    let (mut server_connected, mut client_connected) = (false, false);
    for _ in 0..20 {
        for datagram in drain(&mut client, &mut client_cost, &mut client_connected) {
            server_cost
                .charge(|| server.handle_packet(now, &datagram))
                .expect("an honest client's datagram is accepted");
        }
        for datagram in drain(&mut server, &mut server_cost, &mut server_connected) {
            client_cost
                .charge(|| client.handle_packet(now, &datagram))
                .expect("an honest server's datagram is accepted");
        }
        if server_connected && client_connected {
            server_cost.charge(|| drop(server));
            client_cost.charge(|| drop(client));
            return (server_cost, client_cost);
        }
    }
    panic!("a lossless handshake completes within 20 exchanges");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The certificate the client presents.
#[derive(Debug, Clone, Copy)]
enum ClientKey {
    EcdsaP256,
    Rsa2048,
}

fn scenario(
    name: &str,
    server_versions: DtlsVersionPolicy,
    client_versions: DtlsVersionPolicy,
    client_key: ClientKey,
    rounds: usize,
) {
    let server_identity = DtlsIdentity::generate(server_versions).expect("identity generation does not fail");
    let client_identity = match client_key {
        ClientKey::EcdsaP256 => DtlsIdentity::generate(client_versions),
        // RSA client identities speak DTLS 1.2 only.
        ClientKey::Rsa2048 => DtlsIdentity::generate_rsa2048(),
    }
    .expect("identity generation does not fail");
    assert_eq!(client_identity.version_policy(), client_versions, "{name}");
    for _ in 0..rounds / 10 {
        handshake(&server_identity, &client_identity);
    }
    let mut server_us = Vec::with_capacity(rounds);
    let mut client_us = Vec::with_capacity(rounds);
    let (mut server_total, mut client_total) = (Cost::default(), Cost::default());
    for _ in 0..rounds {
        let (server, client) = handshake(&server_identity, &client_identity);
        server_us.push(server.time.as_secs_f64() * 1e6);
        client_us.push(client.time.as_secs_f64() * 1e6);
        server_total.allocations += server.allocations;
        server_total.bytes_allocated += server.bytes_allocated;
        client_total.allocations += client.allocations;
        client_total.bytes_allocated += client.bytes_allocated;
    }
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    println!(
        "{name:<56} server {:>6.1} µs median {:>6.1} µs mean, {:>4} allocs {:>6} B | \
         client {:>6.1} µs median, {:>4} allocs",
        median(&mut server_us.clone()),
        mean(&server_us),
        server_total.allocations / rounds,
        server_total.bytes_allocated / rounds,
        median(&mut client_us.clone()),
        client_total.allocations / rounds,
    );
}

fn main() {
    let rounds = std::env::args().nth(1).and_then(|text| text.parse().ok()).unwrap_or(300);
    println!("{rounds} handshakes per scenario; per handshake:");
    use ClientKey::{EcdsaP256, Rsa2048};
    use DtlsVersionPolicy::{Dtls12Only, Dtls12Or13};
    scenario("DTLS 1.2, ECDSA client (server 1.2, client 1.2)", Dtls12Only, Dtls12Only, EcdsaP256, rounds);
    scenario("DTLS 1.2, RSA-2048 client (server 1.2, client 1.2)", Dtls12Only, Dtls12Only, Rsa2048, rounds);
    scenario("DTLS 1.2, ECDSA client (server 1.2|1.3, client 1.2)", Dtls12Or13, Dtls12Only, EcdsaP256, rounds);
    scenario("DTLS 1.2, RSA-2048 client (server 1.2|1.3, client 1.2)", Dtls12Or13, Dtls12Only, Rsa2048, rounds);
    scenario("DTLS 1.3, ECDSA client (server 1.2|1.3, client 1.2|1.3)", Dtls12Or13, Dtls12Or13, EcdsaP256, rounds);
}
