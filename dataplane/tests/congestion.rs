//! Per-subscriber congestion control through the engine, in virtual time: a publisher sends
//! two simulcast layers; a subscriber whose packets the SFU numbers answers with real
//! transport-wide feedback (made by the same generator the SFU runs for publishers); its
//! estimate grows through the first probes while everything arrives (the high layer), falls
//! when half its packets are lost on the way (the low layer), and grows back through the
//! probes its allocation asks for once the loss ends (the high layer again, within 10 s).

use std::time::Duration;

use uprtcd_dataplane::bwe::FeedbackGenerator;
use uprtcd_dataplane::engine::EngineConfig;
use uprtcd_dataplane::io::SLOT_SIZE;
use uprtcd_dataplane::peer::Received;
use uprtcd_dataplane::router::{ConsumerId, MediaKind, Rid, RtxStream};
use uprtcd_dataplane::testnet::{Net, client_addr};
use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};
use uprtcd_dataplane::wire::video::VideoFormat;

const RID_EXTENSION: u8 = 10;
/// The subscriber's id for the transport-wide sequence number.
const TRANSPORT_CC: u8 = 4;
const LOW: (&str, u32) = ("q", 0xA);
const HIGH: (&str, u32) = ("f", 0xB);

/// A publisher (client 0) of two layers and a subscriber (client 1) choosing among them,
/// whose bandwidth the engine estimates.
fn net() -> (Net, ConsumerId) {
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(2);
    assert_eq!(net.connect_all(), 2);
    let publisher = net.clients[0].transport;
    let layer = |net: &mut Net, (rid, _): (&str, u32)| {
        let rid = (RID_EXTENSION, Rid::new(rid).unwrap());
        net.engine.add_layer_producer(publisher, rid, MediaKind::Video, 90_000).unwrap()
    };
    let (low, high) = (layer(&mut net, LOW), layer(&mut net, HIGH));
    let subscriber = net.clients[1].transport;
    let consumer = net.engine.add_consumer(high, subscriber, 0x2001).unwrap();
    net.engine.enable_rtx(consumer, RtxStream { ssrc: 0x3001, payload_type: 97 }).unwrap();
    net.engine.set_layers(net.now, consumer, &[low, high], VideoFormat::Vp8).unwrap();
    net.engine.enable_bandwidth_estimation(net.now, subscriber, TRANSPORT_CC, 4_000_000).unwrap();
    (net, consumer)
}

/// Client 0 sends a VP8 packet of `layer` of `size` bytes; a key frame's first when `key`.
fn send_layer(net: &mut Net, (rid, ssrc): (&str, u32), seq: u16, size: usize, key: bool) {
    let mut buf = vec![0u8; SLOT_SIZE];
    let elements: [(u8, &[u8]); 1] = [(RID_EXTENSION, rid.as_bytes())];
    let header = RtpHeader::new(96, seq, u32::from(seq) * 3000, ssrc).extensions(&elements).write(&mut buf).unwrap();
    let descriptor = [0x90, 0x80, 0x80, seq as u8, u8::from(!key)];
    buf[header..header + descriptor.len()].copy_from_slice(&descriptor);
    let len = net.clients[0].peer.protect_rtp(&mut buf, header + size).unwrap();
    buf.truncate(len);
    net.send_raw(net.clients[0].addr, buf);
}

/// Runs `duration` of media in 10 ms steps: the low layer 25 kB/s (200 kbit/s), the high one
/// 125 kB/s (1 Mbit/s), each with a key frame every second; the subscriber records what
/// arrives and sends feedback when its generator says so.
fn run(net: &mut Net, feedback: &mut FeedbackGenerator, seq: &mut u16, duration: Duration) {
    let steps = duration.as_millis() / 10;
    for _ in 0..steps {
        let key = seq.is_multiple_of(100);
        send_layer(net, LOW, *seq, 250, key);
        send_layer(net, HIGH, *seq, 1000, key);
        send_layer(net, HIGH, *seq, 250, false);
        *seq = seq.wrapping_add(1);
        net.deliver();
        for (kind, bytes) in net.clients[1].inbox.drain(..) {
            if let Received::Rtp { .. } = kind {
                let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
                let number = packet.transport_sequence_number(TRANSPORT_CC).expect("every packet is numbered");
                feedback.record(net.now, number);
            }
        }
        let mut reports = Vec::new();
        feedback.poll(net.now, |report| reports.push(report.to_vec()));
        for report in reports {
            net.send_rtcp(1, &report);
        }
        net.advance(Duration::from_millis(10));
    }
}

fn layer(net: &Net, consumer: ConsumerId) -> usize {
    net.engine.layer_state(consumer).expect("a layered consumer").0
}

#[test]
fn the_subscribers_layer_follows_its_estimate() {
    let (mut net, consumer) = net();
    let mut feedback = FeedbackGenerator::new(0x5555, 0);
    let mut seq = 0u16;
    let subscriber = net.clients[1].transport;

    // Everything arrives: the first probes find the path wide, and the high layer fits.
    run(&mut net, &mut feedback, &mut seq, Duration::from_secs(3));
    let (open, allocation) = net.engine.bandwidth(subscriber).unwrap();
    assert!(open > 1_300_000, "the estimate grew from its start: {open} bit/s");
    assert!(open <= 4_000_000, "within its bound: {open} bit/s");
    assert_eq!(layer(&net, consumer), 1, "the high layer on an estimate of {open} bit/s ({allocation:?})");

    // Half the subscriber's packets are lost on the way: it is moved down.
    let to = client_addr(1);
    let lossy = std::rc::Rc::new(std::cell::Cell::new(true));
    let losing = lossy.clone();
    let mut flip = false;
    net.lose = Box::new(move |destination, _| {
        flip = !flip;
        losing.get() && destination == to && flip
    });
    run(&mut net, &mut feedback, &mut seq, Duration::from_secs(4));
    let (reduced, _) = net.engine.bandwidth(subscriber).unwrap();
    assert!(reduced < open / 2, "the estimate fell: {open} then {reduced} bit/s");
    assert_eq!(layer(&net, consumer), 0, "the low layer on {reduced} bit/s");

    // The loss ends: probes find the room again, and the high layer comes back (its key
    // frames come once a second).
    lossy.set(false);
    let mut waited = Duration::ZERO;
    while layer(&net, consumer) == 0 && waited < Duration::from_secs(10) {
        run(&mut net, &mut feedback, &mut seq, Duration::from_millis(500));
        waited += Duration::from_millis(500);
    }
    let (recovered, _) = net.engine.bandwidth(subscriber).unwrap();
    assert_eq!(layer(&net, consumer), 1, "back to the high layer on {recovered} bit/s after {waited:?}");
    assert_eq!(net.clients[1].errors, 0);
}

#[test]
fn a_subscriber_whose_feedback_never_comes_gets_the_low_layer_and_its_video_goes_on() {
    let (mut net, consumer) = net();
    let subscriber = net.clients[1].transport;
    let mut seq = 0u16;
    let mut received = 0;
    for _ in 0..500 {
        let key = seq.is_multiple_of(100);
        send_layer(&mut net, LOW, seq, 250, key);
        send_layer(&mut net, HIGH, seq, 1000, key);
        seq = seq.wrapping_add(1);
        net.deliver();
        received += net.clients[1].inbox.drain(..).filter(|(kind, _)| matches!(kind, Received::Rtp { .. })).count();
        net.advance(Duration::from_millis(10));
    }
    let (estimate, _) = net.engine.bandwidth(subscriber).unwrap();
    assert!(estimate <= 300_000, "no feedback, no growth beyond the start: {estimate} bit/s");
    assert_eq!(layer(&net, consumer), 0, "the low layer");
    assert!(received > 400, "its video goes on: {received} packets");
}
