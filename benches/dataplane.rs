//! Nanoseconds per packet of the forwarding path's stages: first-byte demux, SRTP
//! unprotect and protect of a 1,100-byte video packet per profile, and the whole engine
//! step of one published packet fanned out to N subscribers (unprotect once, then rewrite,
//! protect and queue N times); and what one more copy costs on top of ten: a subscriber's
//! (rewrite, protect) against a recording's (rewrite, sent in plaintext to the capture) and
//! a node link's (rewrite, protect with the link's AES-128-GCM keys); and what per-subscriber
//! congestion control adds: to each copy (a transport-wide number added and recorded), and
//! per subscriber per second (its feedback taken, its estimate shared among its streams).
//!
//! `cargo bench --bench dataplane`; numbers and machine in benches/README.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use uprtcd_dataplane::bwe::FeedbackGenerator;
use uprtcd_dataplane::dtls::SrtpProfile;
use uprtcd_dataplane::engine::{EngineConfig, LINK_SRTP_PROFILE, LinkKeys};
use uprtcd_dataplane::io::{SLOT_SIZE, SendQueue};
use uprtcd_dataplane::router::{MediaKind, ProducerSpec, Rid, RtxStream};
use uprtcd_dataplane::srtp::{MasterKeySalt, SrtpSession};
use uprtcd_dataplane::stats::MediaStat;
use uprtcd_dataplane::testnet::{Net, QueueOutbox};
use uprtcd_dataplane::wire::classify;
use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};
use uprtcd_dataplane::wire::video::VideoFormat;

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
        let mut net = fan_out_net(subscribers, Extra::None);
        bench_published_packets(&mut group, BenchmarkId::from_parameter(subscribers), &mut net);
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
        bench_published_packets(&mut group, BenchmarkId::from_parameter(name), &mut fan_out_net(subscribers, extra));
    }
    group.finish();
}

/// The header extension id subscribers negotiated transport-cc under.
const TRANSPORT_CC: u8 = 4;

/// What a subscriber's estimate may reach (the room's cap).
const MAX_SUBSCRIBER_BPS: u64 = 2_500_000;

/// Turns on congestion control for every subscriber of `net` (clients 1..).
fn estimate_all(net: &mut Net) {
    for i in 1..net.clients.len() {
        let transport = net.clients[i].transport;
        net.engine
            .enable_bandwidth_estimation(net.now, transport, TRANSPORT_CC, MAX_SUBSCRIBER_BPS)
            .expect("estimation");
    }
}

/// One published packet to N subscribers, first plain (today's path: a copy and
/// `remap_extensions`), then with every subscriber estimated (the copy renumbered with a
/// transport-wide sequence number, and the send recorded in its history). Virtual time
/// stands still and no feedback comes: this is the per-copy cost alone.
fn congestion_copies(c: &mut Criterion) {
    let mut group = c.benchmark_group("cc_fan_out_1100B_aes256gcm");
    for subscribers in [10usize, 1000] {
        group.throughput(Throughput::Elements(subscribers as u64));
        let mut net = fan_out_net(subscribers, Extra::None);
        bench_published_packets(&mut group, BenchmarkId::new("plain", subscribers), &mut net);
        estimate_all(&mut net);
        bench_published_packets(&mut group, BenchmarkId::new("estimated", subscribers), &mut net);
    }
    group.finish();
}

/// The RID extension id of the simulcast publisher.
const RID_EXTENSION: u8 = 10;
/// Its two layers: RID, SSRC, payload bytes per packet (100 packets/s each: ~250 kbit/s
/// and ~0.9 Mbit/s).
const LOW: (&str, u32, usize) = ("q", 0xA, 300);
const HIGH: (&str, u32, usize) = ("f", 0xB, PAYLOAD);
/// Virtual time per step: one packet of each layer.
const STEP: Duration = Duration::from_millis(10);

/// Subscribers of a two-layer simulcast publisher in virtual time, each with its own
/// transport-wide feedback generator (the browser's part), fed straight from what the
/// engine sends: the numbers travel in the SRTP header, which is not encrypted.
struct CcNet {
    net: Net,
    feedback: Vec<FeedbackGenerator>,
    seq: u16,
    /// Feedback datagrams (from, bytes) the engine takes in the next timed part.
    reports: Vec<(std::net::SocketAddr, Vec<u8>)>,
    /// Client-side datagrams (consent checks) waiting for the untimed delivery.
    control: Vec<(std::net::SocketAddr, Vec<u8>)>,
}

impl CcNet {
    fn new(subscribers: usize) -> Self {
        let mut net = Net::new(EngineConfig::default());
        net.add_clients(1 + subscribers);
        assert_eq!(net.connect_all(), 1 + subscribers, "handshakes complete");
        // Room for a whole step's copies and probes (two media packets and up to eight
        // probe packets each): the default queue discards when full, which would be loss.
        net.outbox = QueueOutbox(SendQueue::new(10 * subscribers + 1024));
        let publisher = net.clients[0].transport;
        let mut layer = |(rid, _, _): (&str, u32, usize)| {
            let rid = (RID_EXTENSION, Rid::new(rid).expect("a valid rid"));
            net.engine.add_layer_producer(publisher, rid, MediaKind::Video, 90_000).expect("layer")
        };
        let layers = [layer(LOW), layer(HIGH)];
        for i in 1..=subscribers {
            let transport = net.clients[i].transport;
            let consumer = net.engine.add_consumer(layers[1], transport, 0x2000 + i as u32).expect("consumer");
            let rtx = RtxStream { ssrc: 0x3000_0000 + i as u32, payload_type: 97 };
            net.engine.enable_rtx(consumer, rtx).expect("rtx");
            net.engine.set_layers(net.now, consumer, &layers, VideoFormat::Vp8).expect("layers");
        }
        let feedback = (0..=subscribers).map(|i| FeedbackGenerator::new(0x5000 + i as u32, 0)).collect();
        Self { net, feedback, seq: 0, reports: Vec::new(), control: Vec::new() }
    }

    /// Client 0 sends one VP8 packet of `layer`, a key frame's first once a second.
    fn publish(&mut self, (rid, ssrc, size): (&str, u32, usize)) {
        let mut buf = vec![0u8; SLOT_SIZE];
        let elements: [(u8, &[u8]); 1] = [(RID_EXTENSION, rid.as_bytes())];
        let seq = self.seq;
        let header =
            RtpHeader::new(96, seq, u32::from(seq) * 900, ssrc).extensions(&elements).write(&mut buf).expect("fits");
        let key = seq.is_multiple_of(100);
        let descriptor = [0x90, 0x80, 0x80, seq as u8, u8::from(!key)];
        buf[header..header + descriptor.len()].copy_from_slice(&descriptor);
        let len = self.net.clients[0].peer.protect_rtp(&mut buf, header + size).expect("connected");
        let (now, from) = (self.net.now, self.net.clients[0].addr);
        self.net.engine.handle_datagram(now, from, &mut buf[..len], &mut self.net.outbox);
    }

    /// What the engine sent arrives now: each subscriber records the numbers it carries.
    fn arrive(&mut self) {
        let now = self.net.now;
        for (_, destination, bytes) in self.net.outbox.0.iter() {
            let i = usize::from(destination.port() - 20000);
            if i == 0 || i >= self.feedback.len() {
                continue;
            }
            // A probe's padding count is under the SRTP tag: read the header only.
            let mut header = bytes.to_vec();
            header[0] &= !0x20;
            if let Some(number) =
                RtpPacket::new_checked(&header[..]).ok().and_then(|p| p.transport_sequence_number(TRANSPORT_CC))
            {
                self.feedback[i].record(now, number);
            }
        }
        self.net.outbox.0.clear();
    }

    /// The untimed part of a step: the publisher's packets forwarded, their arrival, the
    /// subscribers' feedback protected and their consent checks answered.
    fn prepare(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        self.publish(LOW);
        self.publish(HIGH);
        self.arrive();
        let now = self.net.now;
        for i in 1..self.feedback.len() {
            let mut plain = Vec::new();
            self.feedback[i].poll(now, |report| plain.push(report.to_vec()));
            for report in plain {
                let mut buf = vec![0u8; SLOT_SIZE];
                buf[..report.len()].copy_from_slice(&report);
                let len = self.net.clients[i].peer.protect_rtcp(&mut buf, report.len()).expect("connected");
                buf.truncate(len);
                self.reports.push((self.net.clients[i].addr, buf));
            }
        }
        // Consent lasts 30 s: the clients refresh it every 5 s, as browsers do.
        let refresh = self.seq.is_multiple_of(500);
        for client in &mut self.net.clients {
            let (addr, control) = (client.addr, &mut self.control);
            if refresh {
                client.peer.refresh_consent(now, &mut |bytes| control.push((addr, bytes.to_vec()))).expect("a check");
            }
            if client.peer.poll_timeout().is_some_and(|t| t <= now) {
                let _ = client.peer.handle_timeout(now, &mut |bytes| control.push((addr, bytes.to_vec())));
            }
        }
        if !self.control.is_empty() {
            for (from, bytes) in self.control.drain(..) {
                self.net.send_raw(from, bytes);
            }
            self.net.deliver();
        }
    }

    /// The timed part: the engine takes the feedback, the clock moves one step and the
    /// engine's timers run (estimator timeouts, allocation every 250 ms, probes).
    fn step(&mut self) -> Duration {
        let start = Instant::now();
        let now = self.net.now;
        for (from, bytes) in &mut self.reports {
            self.net.engine.handle_datagram(now, *from, black_box(bytes), &mut self.net.outbox);
        }
        self.net.now += STEP;
        self.net.engine.handle_timeouts(self.net.now, &mut self.net.outbox);
        let elapsed = start.elapsed();
        self.reports.clear();
        elapsed
    }
}

/// One subscriber's feedback handling and periodic allocation, per 10 ms step of virtual
/// time for N subscribers of a two-layer simulcast stream: each subscriber's feedback
/// (every 100 ms, about 10 packets) and `handle_timeouts` (which allocates each subscriber's
/// estimate every 250 ms and sends its probes), timed; the media itself, the subscribers'
/// side and their consent checks, untimed. First without estimation (`handle_timeouts`
/// alone), then with every subscriber estimated.
fn congestion_control(c: &mut Criterion) {
    let mut group = c.benchmark_group("cc_feedback_and_allocation_per_10ms");
    for subscribers in [1000usize] {
        group.throughput(Throughput::Elements(subscribers as u64));
        let mut cc = CcNet::new(subscribers);
        for estimated in [false, true] {
            if estimated {
                estimate_all(&mut cc.net);
            }
            let name = if estimated { "estimated" } else { "plain" };
            group.bench_function(BenchmarkId::new(name, subscribers), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            cc.prepare();
                            cc.step()
                        })
                        .sum()
                })
            });
        }
        cc.net.engine.refresh_media_stats();
        let media = cc.net.engine.counters().media;
        let media: Vec<_> = MediaStat::ALL.iter().map(|&stat| (stat, media[stat.index()])).collect();
        eprintln!("cc_feedback_and_allocation, {subscribers} subscribers: {media:?}");
        let layers: Vec<_> =
            cc.net.engine.congestion_report().iter().take(3).map(|r| (r.estimate_bps, r.allocation)).collect();
        eprintln!("first subscribers' estimates and allocations: {layers:?}");
    }
    group.finish();
}

/// Times the engine step of each packet the publisher (client 0) sends into `net`.
fn bench_published_packets(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    net: &mut Net,
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

criterion_group!(benches, demux, srtp, fan_out, one_more_copy, congestion_copies, congestion_control);
criterion_main!(benches);
