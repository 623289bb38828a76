//! Nanoseconds per packet of the forwarding path's stages: first-byte demux, SRTP
//! unprotect and protect of a 1,100-byte video packet per profile, and the whole engine
//! step of one published packet fanned out to N subscribers (unprotect once, then rewrite,
//! protect and queue N times); and what one more copy costs on top of ten: a subscriber's
//! (rewrite, protect) against a recording's (rewrite, sent in plaintext to the capture) and
//! a node link's (rewrite, protect with the link's AES-128-GCM keys).
//!
//! `cargo bench --bench dataplane`; numbers and machine in benches/README.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use uprtcd_dataplane::dtls::SrtpProfile;
use uprtcd_dataplane::engine::{EngineConfig, LINK_SRTP_PROFILE, LinkKeys};
use uprtcd_dataplane::router::{MediaKind, ProducerSpec};
use uprtcd_dataplane::srtp::{MasterKeySalt, SrtpSession};
use uprtcd_dataplane::testnet::Net;
use uprtcd_dataplane::wire::classify;
use uprtcd_dataplane::wire::rtp::RtpHeader;

const PAYLOAD: usize = 1100;

fn rtp_packet(seq: u16, buf: &mut [u8]) -> usize {
    let header = RtpHeader::new(96, seq, u32::from(seq) * 3000, 0x1234_5678).write(buf).expect("header fits");
    buf[header..header + PAYLOAD].fill(0xA5);
    header + PAYLOAD
}

fn demux(c: &mut Criterion) {
    let mut rtp = vec![0u8; 2048];
    let len = rtp_packet(1, &mut rtp);
    let datagrams: [&[u8]; 4] = [&rtp[..len], &[0x81, 200, 0, 6], &[0x00, 0x01, 0, 0], &[22, 0xFE, 0xFD]];
    c.bench_function("demux/classify_4_kinds", |b| {
        b.iter(|| datagrams.iter().map(|d| classify(black_box(d)) as u8).sum::<u8>())
    });
}

fn session_pair(profile: SrtpProfile) -> (SrtpSession, SrtpSession) {
    let (key_a, key_b) = (vec![1u8; profile.master_key_len()], vec![2u8; profile.master_key_len()]);
    let (salt_a, salt_b) = (vec![3u8; profile.master_salt_len()], vec![4u8; profile.master_salt_len()]);
    let a = MasterKeySalt { key: &key_a, salt: &salt_a };
    let b = MasterKeySalt { key: &key_b, salt: &salt_b };
    (
        SrtpSession::from_master_keys(profile, a, b).expect("keys"),
        SrtpSession::from_master_keys(profile, b, a).expect("keys"),
    )
}

fn srtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp_1100B");
    group.throughput(Throughput::Elements(1));
    for (name, profile) in [
        ("aes128gcm", SrtpProfile::AeadAes128Gcm),
        ("aes256gcm", SrtpProfile::AeadAes256Gcm),
        ("aes128cm_sha1_80", SrtpProfile::Aes128CmHmacSha1_80),
    ] {
        let (mut sender, _) = session_pair(profile);
        let mut seq = 0u16;
        group.bench_function(BenchmarkId::new("protect", name), |b| {
            let mut buf = vec![0u8; 2048];
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let len = rtp_packet(seq, &mut buf);
                sender.protect_rtp(black_box(&mut buf), len).expect("protect")
            })
        });
        // A fresh pair: the receiver must see one stream in order, which the protect bench's
        // sender has already moved far ahead of.
        let (mut sender, mut receiver) = session_pair(profile);
        let mut next = 0u16;
        group.bench_function(BenchmarkId::new("unprotect", name), |b| {
            b.iter_batched_ref(
                || {
                    // Each packet is new to the receiver: the replay window refuses repeats.
                    next = next.wrapping_add(1);
                    let mut buf = vec![0u8; 2048];
                    let len = rtp_packet(next, &mut buf);
                    let len = sender.protect_rtp(&mut buf, len).expect("protect");
                    buf.truncate(len);
                    buf
                },
                |packet| receiver.unprotect_rtp(black_box(packet)).expect("unprotect"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A copy of the stream beside the subscribers'.
#[derive(Clone, Copy)]
enum Extra {
    None,
    /// A recording's consumer on a plaintext plain transport.
    Recording,
    /// A consumer on a node link: a plain transport keyed with SRTP.
    Link,
}

/// A connected publisher and `subscribers` consumers of its video stream, plus `extra`.
fn fan_out_net(subscribers: usize, extra: Extra) -> Net {
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(1 + subscribers);
    assert_eq!(net.connect_all(), 1 + subscribers, "handshakes complete");
    let spec = ProducerSpec {
        transport: net.clients[0].transport,
        ssrc: 0x1234_5678,
        kind: MediaKind::Video,
        clock_rate: 90_000,
    };
    let producer = net.engine.add_producer(spec).expect("producer");
    for i in 1..=subscribers {
        net.engine.add_consumer(producer, net.clients[i].transport, 0x1000 + i as u32).expect("consumer");
    }
    let keys = match extra {
        Extra::None => return net,
        Extra::Recording => None,
        Extra::Link => {
            let half = || LinkKeys::random_half(LINK_SRTP_PROFILE).expect("random keys");
            Some(LinkKeys { profile: LINK_SRTP_PROFILE, local: half(), remote: half() })
        }
    };
    let far_end = std::net::SocketAddr::from(([127, 0, 0, 1], 45_000));
    let plain = net.engine.create_plain_transport(far_end, None, keys.as_ref()).expect("plain transport");
    net.engine.add_consumer(producer, plain, 0x5245_4300).expect("recording or link consumer");
    net
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out_1100B_aes256gcm");
    for subscribers in [1usize, 10, 100] {
        group.throughput(Throughput::Elements(subscribers as u64));
        let net = fan_out_net(subscribers, Extra::None);
        bench_published_packets(&mut group, BenchmarkId::from_parameter(subscribers), net);
    }
    group.finish();
}

/// Ten subscribers, eleven, ten plus a recording and ten plus a node link: the difference of
/// the last three to the first is what one more subscriber, one recorded copy and one copy
/// to another node cost per packet.
fn one_more_copy(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_more_copy_1100B_aes256gcm");
    group.throughput(Throughput::Elements(1));
    for (name, subscribers, extra) in [
        ("10_subscribers", 10, Extra::None),
        ("11_subscribers", 11, Extra::None),
        ("10_subscribers_and_recording", 10, Extra::Recording),
        ("10_subscribers_and_link", 10, Extra::Link),
    ] {
        bench_published_packets(&mut group, BenchmarkId::from_parameter(name), fan_out_net(subscribers, extra));
    }
    group.finish();
}

/// Times the engine step of each packet the publisher (client 0) sends into `net`.
fn bench_published_packets(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    mut net: Net,
) {
    let publisher = net.clients[0].addr;
    let payload = vec![0xA5; PAYLOAD];
    let mut seq = 0u16;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            // Packets are protected untimed, in chunks: each must be new to the
            // engine's replay window, and a whole run's worth would not fit in memory.
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(1024);
                left -= chunk;
                let mut packets: Vec<Vec<u8>> = (0..chunk)
                    .map(|_| {
                        seq = seq.wrapping_add(1);
                        net.protect_rtp(0, 0x1234_5678, seq, u32::from(seq) * 3000, &payload)
                    })
                    .collect();
                let now = net.now;
                let start = Instant::now();
                for packet in &mut packets {
                    net.engine.handle_datagram(now, publisher, black_box(packet), &mut net.outbox);
                    net.outbox.0.clear();
                }
                timed += start.elapsed();
            }
            timed
        })
    });
}

criterion_group!(benches, demux, srtp, fan_out, one_more_copy);
criterion_main!(benches);
