//! The forwarding engine with real ICE, DTLS and SRTP peers in virtual time: handshakes,
//! 1→N forwarding with per-consumer rewriting, keyframe requests, NACK answers, consent
//! expiry, the handshake budget, and every kind of bad input dropped and counted.

use std::time::Duration;

use uprtcd_dataplane::engine::{CloseReason, EngineConfig, EngineError, EngineEvent, PRODUCER_STALL_TIMEOUT};
use uprtcd_dataplane::io::SLOT_SIZE;
use uprtcd_dataplane::peer::Received;
use uprtcd_dataplane::router::{ConsumerFormat, MediaKind, ProducerId, ProducerSpec, Rid, RtxStream};
use uprtcd_dataplane::stats::{DropReason, MediaStat};
use uprtcd_dataplane::testnet::{Net, client_addr};
use uprtcd_dataplane::wire::rtcp::{
    FirEntry, RtcpCompound, RtcpPacket, SenderInfo, write_fir, write_nack, write_pli, write_sender_report,
};
use uprtcd_dataplane::wire::rtp::{ExtensionIdMap, RtpHeader, RtpPacket};
use uprtcd_dataplane::wire::video::{VideoFormat, Vp8PictureIds};
use uprtcd_dataplane::wire::{Datagram, classify};

const PUBLISHER_SSRC: u32 = 0x1111_0000;

/// `clients` connected clients, client 0 publishing a stream of `kind` as PUBLISHER_SSRC.
fn publishing_net(clients: usize, kind: MediaKind) -> (Net, ProducerId) {
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(clients);
    assert_eq!(net.connect_all(), clients, "every client completes ICE and DTLS");
    let clock_rate = if kind == MediaKind::Audio { 48_000 } else { 90_000 };
    let spec = ProducerSpec { transport: net.clients[0].transport, ssrc: PUBLISHER_SSRC, kind, clock_rate };
    let producer = net.engine.add_producer(spec).unwrap();
    (net, producer)
}

/// One publisher (client 0) and `subscribers` clients receiving its video stream, each as
/// SSRC 0x2000 + its index.
fn fan_out_net(subscribers: usize) -> Net {
    let (mut net, producer) = publishing_net(1 + subscribers, MediaKind::Video);
    for i in 1..=subscribers {
        net.engine.add_consumer(producer, net.clients[i].transport, 0x2000 + i as u32).unwrap();
    }
    net
}

fn payload(seq: u16) -> Vec<u8> {
    (0..1100).map(|i| (i as u16).wrapping_mul(31).wrapping_add(seq) as u8).collect()
}

#[test]
fn handshakes_connect_and_are_reported() {
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(3);
    assert_eq!(net.connect_all(), 3);
    let connected: Vec<_> = net.engine.drain_events().collect();
    for client in &net.clients {
        assert!(connected.contains(&EngineEvent::TransportConnected(client.transport)), "{connected:?}");
    }
}

#[test]
fn every_subscriber_decrypts_every_packet_in_order_with_its_own_ssrc() {
    let mut net = fan_out_net(10);
    for seq in 1000..1200u16 {
        net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
        net.deliver();
    }
    for (i, client) in net.clients.iter().enumerate().skip(1) {
        assert_eq!(client.errors, 0, "subscriber {i}: decrypt errors");
        assert_eq!(client.inbox.len(), 200, "subscriber {i} received every packet");
        let mut previous: Option<u16> = None;
        for (kind, bytes) in &client.inbox {
            assert!(matches!(kind, Received::Rtp { .. }));
            let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
            assert_eq!(packet.ssrc(), 0x2000 + i as u32);
            if let Some(previous) = previous {
                assert_eq!(packet.sequence_number(), previous.wrapping_add(1), "subscriber {i}: continuous numbering");
            }
            previous = Some(packet.sequence_number());
            let input_seq = (packet.timestamp() / 3000) as u16;
            assert_eq!(packet.payload(), &payload(input_seq)[..], "payload bytes unchanged");
        }
    }
    let rtp_to_publisher = net.clients[0].inbox.iter().filter(|(kind, _)| matches!(kind, Received::Rtp { .. })).count();
    assert_eq!(rtp_to_publisher, 0, "the publisher is not sent its own stream");
}

#[test]
fn payload_types_and_header_extensions_reach_each_subscriber_under_its_own_numbers() {
    let (mut net, producer) = publishing_net(3, MediaKind::Audio);
    // Subscriber 1 negotiated Opus as 109 and audio-level as 3 and nothing else; subscriber 2
    // kept the publisher's numbers.
    let mut renumbered = ExtensionIdMap::blank_all();
    renumbered.map(1, 3).unwrap();
    let first = net.engine.add_consumer(producer, net.clients[1].transport, 0x2001).unwrap();
    net.engine.set_format(first, ConsumerFormat::new(109, renumbered).unwrap()).unwrap();
    net.engine.add_consumer(producer, net.clients[2].transport, 0x2002).unwrap();

    // The publisher's audio-level is id 1, its mid id 4 (a value only its own session knows).
    let mut buf = vec![0u8; SLOT_SIZE];
    let elements: [(u8, &[u8]); 2] = [(1, &[0x8a]), (4, b"0")];
    let header = RtpHeader::new(111, 7, 960, PUBLISHER_SSRC).extensions(&elements).write(&mut buf).unwrap();
    buf[header..header + 4].copy_from_slice(b"opus");
    let len = net.clients[0].peer.protect_rtp(&mut buf, header + 4).unwrap();
    buf.truncate(len);
    net.send_raw(net.clients[0].addr, buf);
    net.deliver();

    let received = |i: usize| {
        let (_, bytes) = net.clients[i].inbox.last().expect("a forwarded packet");
        let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
        let extensions: Vec<_> = packet.extensions().map(|(id, value)| (id, value.to_vec())).collect();
        (packet.payload_type(), extensions, packet.payload().to_vec())
    };
    assert_eq!(received(1), (109, vec![(3, vec![0x8a])], b"opus".to_vec()), "renumbered, mid blanked");
    assert_eq!(received(2), (111, vec![(1, vec![0x8a]), (4, b"0".to_vec())], b"opus".to_vec()), "kept as sent");
}

/// The PLIs for the publisher's stream that reached the publisher.
fn plis_to_publisher(net: &Net) -> usize {
    rtcp_of(net, 0, |p| matches!(p, RtcpPacket::Pli(pli) if pli.media_ssrc() == PUBLISHER_SSRC).then_some(())).len()
}

#[test]
fn new_consumers_ask_the_publisher_for_one_keyframe() {
    let mut net = fan_out_net(3);
    net.deliver();
    assert_eq!(plis_to_publisher(&net), 1, "three new consumers, one throttled request");
}

#[test]
fn a_paused_consumer_gets_nothing_and_resumes_continuously_with_a_fresh_keyframe() {
    let (mut net, producer) = publishing_net(3, MediaKind::Video);
    let paused = net.engine.add_consumer(producer, net.clients[1].transport, 0x2001).unwrap();
    net.engine.add_consumer(producer, net.clients[2].transport, 0x2002).unwrap();
    for seq in 0..10u16 {
        net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
    }
    net.deliver();
    net.engine.set_paused(paused, true).unwrap();
    for seq in 10..20u16 {
        net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
    }
    net.deliver();
    assert_eq!(net.clients[1].inbox.len(), 10, "nothing while paused");
    assert_eq!(net.clients[2].inbox.len(), 20, "the other consumer is unaffected");
    let plis_before = plis_to_publisher(&net);
    net.advance(Duration::from_millis(600));
    net.engine.set_paused(paused, false).unwrap();
    net.advance(Duration::from_millis(1));
    assert_eq!(plis_to_publisher(&net), plis_before + 1, "a resumed video stream asks for a keyframe");
    for seq in 20..25u16 {
        net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
    }
    net.deliver();
    let numbers: Vec<u16> = net.clients[1]
        .inbox
        .iter()
        .filter(|(kind, _)| matches!(kind, Received::Rtp { .. }))
        .map(|(_, bytes)| RtpPacket::new_checked(&bytes[..]).unwrap().sequence_number())
        .collect();
    assert_eq!(numbers.len(), 15);
    assert!(numbers.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "no gap in its numbering: {numbers:?}");
}

#[test]
fn subscriber_keyframe_requests_reach_the_publisher_throttled() {
    let mut net = fan_out_net(2);
    // Past the request the new consumers triggered, and its throttling interval.
    net.deliver();
    net.advance(Duration::from_millis(600));
    net.clients[0].inbox.clear();
    let mut rtcp = [0u8; 64];
    let len = write_pli(&mut rtcp, 0x2001, 0x2001).unwrap();
    net.send_rtcp(1, &rtcp[..len]);
    net.deliver();
    let len = write_fir(&mut rtcp, 0x2002, &[FirEntry { ssrc: 0x2002, sequence_number: 1 }]).unwrap();
    net.send_rtcp(2, &rtcp[..len]);
    net.deliver();
    let plis = |net: &Net| {
        net.clients[0]
            .inbox
            .iter()
            .filter(|(kind, bytes)| {
                matches!(kind, Received::Rtcp { .. })
                    && RtcpCompound::new_checked(bytes)
                        .unwrap()
                        .packets()
                        .any(|p| matches!(p, RtcpPacket::Pli(pli) if pli.media_ssrc() == PUBLISHER_SSRC))
            })
            .count()
    };
    assert_eq!(plis(&net), 1, "the second request within 500 ms is absorbed");
    net.advance(Duration::from_millis(600));
    net.send_rtcp(2, &rtcp[..len]);
    net.deliver();
    assert_eq!(plis(&net), 2, "after the interval a new request goes through");
}

#[test]
fn nacks_are_answered_with_the_packet_the_network_lost() {
    let mut net = fan_out_net(1);
    let subscriber = net.clients[1].addr;
    let mut media_to_subscriber = 0;
    net.lose = Box::new(move |to, bytes| {
        let media = to == subscriber && classify(bytes) == Datagram::Rtp;
        media_to_subscriber += usize::from(media);
        media && media_to_subscriber == 4
    });
    for seq in 500..510u16 {
        net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
    }
    net.deliver();
    let seqs = |net: &Net| -> Vec<u16> {
        net.clients[1].inbox.iter().map(|(_, b)| RtpPacket::new_checked(&b[..]).unwrap().sequence_number()).collect()
    };
    let received = seqs(&net);
    assert_eq!(received.len(), 9, "the network lost one packet");
    let lost = received[0].wrapping_add(3);
    assert!(!received.contains(&lost));

    let mut rtcp = [0u8; 64];
    let len = write_nack(&mut rtcp, 0x2001, 0x2001, &[lost]).unwrap();
    net.send_rtcp(1, &rtcp[..len]);
    net.deliver();
    assert_eq!(seqs(&net).len(), 10, "the lost packet was resent");
    let (_, resent) = net.clients[1].inbox.last().unwrap();
    let resent = RtpPacket::new_checked(&resent[..]).unwrap();
    assert_eq!((resent.sequence_number(), resent.ssrc()), (lost, 0x2001), "in the subscriber's numbering");
    assert_eq!(resent.payload(), &payload(503)[..], "the original packet's payload");
    assert_eq!(net.clients[1].errors, 0);
}

#[test]
fn a_producer_is_reported_started_stopped_after_a_silence_and_started_again() {
    let (mut net, producer) = publishing_net(1, MediaKind::Audio);
    net.engine.drain_events().for_each(drop);
    let mut seq = 0u16;
    let mut send = |net: &mut Net, packets: u16| {
        for _ in 0..packets {
            net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 960, b"opus");
            net.advance(Duration::from_millis(20));
            seq += 1;
        }
        net.engine.drain_events().collect::<Vec<_>>()
    };
    assert_eq!(send(&mut net, 100), vec![EngineEvent::ProducerStarted(producer)], "one report for a flow");
    // Consent checks would keep the transport; this test only lets time pass, so it stays
    // under the consent timeout.
    net.advance(PRODUCER_STALL_TIMEOUT - Duration::from_secs(1));
    assert_eq!(net.engine.drain_events().count(), 0, "a pause shorter than the timeout is no stop");
    net.advance(Duration::from_secs(3));
    assert_eq!(net.engine.drain_events().collect::<Vec<_>>(), vec![EngineEvent::ProducerStopped(producer)]);
    net.advance(Duration::from_secs(5));
    assert_eq!(net.engine.drain_events().count(), 0, "a stop is reported once");
    assert_eq!(send(&mut net, 3), vec![EngineEvent::ProducerStarted(producer)], "and so is the restart");
}

#[test]
fn consent_expires_without_checks() {
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(1);
    assert_eq!(net.connect_all(), 1);
    net.engine.drain_events().for_each(drop);
    let transport = net.clients[0].transport;
    net.advance(Duration::from_secs(29));
    assert_eq!(net.engine.transport_count(), 1);
    net.advance(Duration::from_secs(2));
    assert_eq!(net.engine.transport_count(), 0);
    let events: Vec<_> = net.engine.drain_events().collect();
    assert_eq!(events, vec![EngineEvent::TransportClosed { transport, reason: CloseReason::ConsentExpired }]);
}

#[test]
fn every_datagram_the_engine_sends_is_counted_once() {
    // STUN answers and DTLS flights while connecting, then media, keyframe requests,
    // receiver reports and sender reports.
    let mut net = fan_out_net(3);
    for seq in 0..50u16 {
        net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
        net.deliver();
    }
    net.advance(Duration::from_secs(2));
    let counters = net.engine.counters().clone();
    assert!(net.server_sent.0 > 150, "media, handshakes and reports left: {:?}", net.server_sent);
    assert_eq!((counters.packets_out, counters.bytes_out), net.server_sent);
}

#[test]
fn a_transport_that_does_not_connect_in_time_is_removed_and_reported() {
    let connect_timeout = Duration::from_secs(3);
    let mut net = Net::new(EngineConfig { connect_timeout, ..EngineConfig::default() });
    // Two offers whose clients never send a check: nothing validated, ICE timed out.
    net.add_clients(2);
    let silent: Vec<_> = net.clients.iter().map(|c| c.transport).collect();
    assert!(net.engine.poll_timeout().is_some_and(|due| due <= net.now + connect_timeout), "a timer is due then");
    net.advance(Duration::from_secs(2));
    assert_eq!(net.engine.transport_count(), 2);
    net.advance(Duration::from_millis(1100));
    assert_eq!(net.engine.transport_count(), 0);
    let events: Vec<_> = net.engine.drain_events().collect();
    for transport in silent {
        assert!(events.contains(&EngineEvent::TransportClosed { transport, reason: CloseReason::IceTimeout }));
    }
    // A client that connects in time stays past the deadline.
    net.clients.clear();
    net.add_clients(1);
    assert_eq!(net.connect_all(), 1);
    net.advance(connect_timeout);
    assert_eq!(net.engine.transport_count(), 1);
}

#[test]
fn a_closed_transports_id_never_reaches_the_next_holder_of_its_slot() {
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(1);
    let first = net.clients[0].transport;
    net.engine.close_transport(first).unwrap();
    net.add_clients(1);
    let second = net.clients[1].transport;
    assert_ne!(first, second, "the slot is taken again under another id");
    assert_eq!(net.engine.close_transport(first), Err(EngineError::UnknownTransport));
    let spec = ProducerSpec { transport: first, ssrc: 1, kind: MediaKind::Audio, clock_rate: 48_000 };
    assert_eq!(net.engine.add_producer(spec), Err(EngineError::UnknownTransport));
    assert_eq!(net.engine.transport_count(), 1, "the stale id closed nothing");
    net.engine.close_transport(second).unwrap();
}

#[test]
fn handshakes_beyond_the_turn_budget_wait_in_the_backlog() {
    let mut net = Net::new(EngineConfig::default());
    net.handshakes_per_turn = 2;
    net.add_clients(8);
    assert_eq!(net.connect_all(), 8);
    assert_eq!(net.engine.counters().drops_of(DropReason::HandshakeBacklog), 0, "nothing was dropped");
}

#[test]
fn handshakes_that_find_the_backlog_full_are_dropped_and_retransmitted() {
    let mut net = Net::new(EngineConfig { handshake_backlog: 1, ..EngineConfig::default() });
    net.handshakes_per_turn = 2;
    net.add_clients(8);
    assert_eq!(net.connect_all(), 8, "DTLS retransmissions finish what the full backlog dropped");
    assert!(net.engine.counters().drops_of(DropReason::HandshakeBacklog) > 0, "the backlog overflowed");
}

#[test]
fn bad_input_is_dropped_and_counted() {
    let mut net = fan_out_net(1);
    let stranger = client_addr(99);
    // STUN for a ufrag nobody has.
    let mut stun = vec![0u8; 20];
    stun[1] = 0x01;
    stun[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    net.send_raw(stranger, stun);
    // Media and DTLS from an address no check validated.
    net.send_raw(stranger, vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xAA, 0xBB]);
    net.send_raw(stranger, vec![22, 0xFE, 0xFD, 0, 0]);
    // Garbage and empty datagrams from the publisher's own address.
    let publisher = net.clients[0].addr;
    net.send_raw(publisher, vec![0xFF; 40]);
    net.send_raw(publisher, Vec::new());
    // SRTP replayed, and with a broken tag.
    net.send_rtp(0, PUBLISHER_SSRC, 7, 7, &payload(7));
    let sent = net.send_rtp(0, PUBLISHER_SSRC, 8, 8, &payload(8));
    net.deliver();
    let mut tampered = net.protect_rtp(0, PUBLISHER_SSRC, 9, 9, &payload(9));
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    net.send_raw(publisher, sent);
    net.send_raw(publisher, tampered);
    // RTP for an SSRC nobody announced.
    net.send_rtp(0, 0xDEAD, 1, 1, &payload(1));
    net.deliver();

    let counters = net.engine.counters();
    assert_eq!(counters.drops_of(DropReason::StunUnknownUfrag), 1);
    assert_eq!(counters.drops_of(DropReason::UnknownSource), 2);
    assert_eq!(counters.drops_of(DropReason::Malformed), 2);
    assert_eq!(counters.drops_of(DropReason::SrtpReplay), 1);
    assert_eq!(counters.drops_of(DropReason::SrtpAuth), 1);
    assert_eq!(counters.drops_of(DropReason::UnknownSsrc), 1);
    assert_eq!(net.clients[1].inbox.len(), 2, "only the two good packets were forwarded");
    assert_eq!(net.clients[1].errors, 0);
}

#[test]
fn nacks_are_answered_on_the_rtx_stream_when_negotiated() {
    let (mut net, producer) = publishing_net(2, MediaKind::Video);
    let consumer = net.engine.add_consumer(producer, net.clients[1].transport, 0x2001).unwrap();
    net.engine.enable_rtx(consumer, RtxStream { ssrc: 0x3001, payload_type: 97 }).unwrap();
    for seq in 700..705u16 {
        net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
    }
    net.deliver();
    let mut rtcp = [0u8; 64];
    let len = write_nack(&mut rtcp, 0x2001, 0x2001, &[702, 703]).unwrap();
    net.send_rtcp(1, &rtcp[..len]);
    net.deliver();
    let rtx: Vec<_> = net.clients[1].inbox[5..].iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(rtx.len(), 2, "two retransmissions");
    for (i, (bytes, original_seq)) in rtx.iter().zip([702u16, 703]).enumerate() {
        let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!((packet.ssrc(), packet.payload_type(), packet.sequence_number()), (0x3001, 97, i as u16));
        assert_eq!(packet.timestamp(), u32::from(original_seq) * 3000);
        let (osn, original) = packet.payload().split_at(2);
        assert_eq!(u16::from_be_bytes([osn[0], osn[1]]), original_seq, "RFC 4588 original sequence number");
        assert_eq!(original, &payload(original_seq)[..]);
    }
}

/// The RTCP packets client `i` received, decoded by `pick`.
fn rtcp_of<T>(net: &Net, i: usize, pick: impl Fn(RtcpPacket<'_>) -> Option<T>) -> Vec<T> {
    net.clients[i]
        .inbox
        .iter()
        .filter(|(kind, _)| matches!(kind, Received::Rtcp { .. }))
        .flat_map(|(_, bytes)| {
            RtcpCompound::new_checked(bytes).unwrap().packets().filter_map(&pick).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn publishers_get_receiver_reports_about_their_streams() {
    let mut net = fan_out_net(1);
    for seq in (100..120u16).filter(|&s| s != 105) {
        net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
    }
    net.deliver();
    net.advance(Duration::from_millis(1100));
    let blocks = rtcp_of(&net, 0, |p| match p {
        RtcpPacket::ReceiverReport(rr) => rr.report_blocks().next(),
        _ => None,
    });
    let block = blocks.first().expect("a receiver report reached the publisher");
    assert_eq!(block.ssrc, PUBLISHER_SSRC);
    assert_eq!(block.extended_highest_sequence, 119);
    assert_eq!(block.cumulative_lost, 1, "sequence number 105 never arrived");
    assert!(
        rtcp_of(&net, 1, |p| matches!(p, RtcpPacket::ReceiverReport(_)).then_some(())).is_empty(),
        "subscribers publish nothing"
    );
}

#[test]
fn capped_publishers_are_told_their_cap_by_remb_with_the_receiver_reports() {
    let mut net = fan_out_net(1);
    net.engine.limit_bitrate(net.clients[0].transport, 1_500_000).unwrap();
    net.send_rtp(0, PUBLISHER_SSRC, 1, 3000, &payload(1));
    net.deliver();
    net.advance(Duration::from_millis(1100));
    let rembs = rtcp_of(&net, 0, |p| match p {
        RtcpPacket::Remb(remb) => Some((remb.bitrate(), remb.ssrcs().collect::<Vec<_>>())),
        _ => None,
    });
    assert_eq!(rembs, [(1_500_000, vec![PUBLISHER_SSRC])], "one REMB per interval, naming the video stream");
    assert!(rtcp_of(&net, 1, |p| matches!(p, RtcpPacket::Remb(_)).then_some(())).is_empty(), "subscribers get none");
}

#[test]
fn sender_reports_reach_subscribers_in_their_numbering() {
    let mut net = fan_out_net(2);
    for seq in 0..10u16 {
        net.send_rtp(0, PUBLISHER_SSRC, seq, 9000 + u32::from(seq) * 3000, &payload(seq));
    }
    let info = SenderInfo {
        ssrc: PUBLISHER_SSRC,
        ntp_timestamp: 0xE000_0000_8000_0000,
        rtp_timestamp: 9000 + 9 * 3000,
        packet_count: 10,
        octet_count: 11_000,
    };
    let mut rtcp = [0u8; 128];
    let len = write_sender_report(&mut rtcp, &info, &[]).unwrap();
    net.send_rtcp(0, &rtcp[..len]);
    net.deliver();
    for i in 1..=2 {
        let reports = rtcp_of(&net, i, |p| match p {
            RtcpPacket::SenderReport(sr) => Some(sr.info()),
            _ => None,
        });
        assert_eq!(reports.len(), 1, "subscriber {i}");
        let report = reports[0];
        assert_eq!(report.ssrc, 0x2000 + i as u32);
        assert_eq!(report.ntp_timestamp, info.ntp_timestamp);
        assert_eq!(report.rtp_timestamp, info.rtp_timestamp, "the first mapping keeps the source's timestamps");
        assert_eq!(report.packet_count, 10);
    }
}

#[test]
fn random_datagrams_never_panic_and_are_all_counted() {
    let mut net = fan_out_net(2);
    let publisher = net.clients[0].addr;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64*: deterministic, so a failure reproduces.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut garbage = |first_bytes: &[u8], i: u64| {
        let len = (next() % 1500) as usize;
        let mut bytes: Vec<u8> = (0..len.max(1)).map(|_| next() as u8).collect();
        bytes[0] = first_bytes[(i % first_bytes.len() as u64) as usize];
        bytes
    };
    let total_drops = |net: &mut Net| DropReason::ALL.iter().map(|&r| net.engine.counters().drops_of(r)).sum::<u64>();
    let (packets_before, drops_before) = (net.engine.counters().packets_in, total_drops(&mut net));
    // STUN, RTP, RTCP and unclassifiable bytes, from a connected client and from strangers:
    // every one is dropped and counted.
    for i in 0..20_000u64 {
        let from = if i % 2 == 0 { publisher } else { client_addr(50 + (i % 7) as usize) };
        let bytes = garbage(&[0x00, 0x01, 0x80, 0x81, 0x90, 0xFF, 0x40], i);
        net.send_raw(from, bytes);
    }
    net.deliver();
    assert_eq!(net.engine.counters().packets_in - packets_before, 20_000);
    assert_eq!(total_drops(&mut net) - drops_before, 20_000, "every datagram was dropped and counted");
    // DTLS-looking garbage goes to the connected transports' DTLS, which ignores or refuses
    // it; none of it may break them.
    for i in 0..2_000u64 {
        let from = net.clients[(i % 3) as usize].addr;
        let bytes = garbage(&[0x14, 0x15, 0x16, 0x17], i);
        net.send_raw(from, bytes);
    }
    for _ in 0..10 {
        net.advance(Duration::from_millis(10));
    }
    let forwarded = net.clients.iter().flat_map(|c| &c.inbox).filter(|(kind, _)| matches!(kind, Received::Rtp { .. }));
    assert_eq!(forwarded.count(), 0, "no garbage was forwarded");
    assert_eq!(net.engine.transport_count(), 3, "the transports survived");
    net.send_rtp(0, PUBLISHER_SSRC, 1, 1, &payload(1));
    net.deliver();
    assert_eq!((net.clients[1].inbox.len(), net.clients[2].inbox.len()), (1, 1), "and still forward");
}

/// Where the recorder of the plain-transport tests listens.
const HELPER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 45000);

/// Where the player of the plain-transport tests sends its RTCP from (ffmpeg's RTP output
/// keeps RTCP on a port of its own).
const HELPER_RTCP: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 45001);

/// What the helper at HELPER received, parsed as RTP, as (ssrc, sequence number, payload).
fn plain_rtp(net: &Net) -> Vec<(u32, u16, Vec<u8>)> {
    net.elsewhere
        .iter()
        .filter(|(to, bytes)| *to == HELPER && classify(bytes) == Datagram::Rtp)
        .map(|(_, bytes)| {
            let packet = RtpPacket::new_checked(&bytes[..]).expect("plaintext RTP");
            (packet.ssrc(), packet.sequence_number(), packet.payload().to_vec())
        })
        .collect()
}

#[test]
fn a_plain_transport_gets_plaintext_copies_and_its_keyframe_requests_reach_the_publisher() {
    let (mut net, producer) = publishing_net(2, MediaKind::Video);
    let plain = net.engine.create_plain_transport(HELPER, None, None).unwrap();
    assert_eq!(net.engine.create_plain_transport(HELPER, None, None), Err(EngineError::AddressInUse));
    net.engine.add_consumer(producer, plain, 0x5000).unwrap();
    net.engine.add_consumer(producer, net.clients[1].transport, 0x2001).unwrap();
    net.deliver();
    assert_eq!(plis_to_publisher(&net), 1, "the recording consumer asked for a keyframe like any other");
    for seq in 500..520u16 {
        net.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
    }
    net.deliver();
    let received = plain_rtp(&net);
    assert_eq!(received.len(), 20, "every packet, unencrypted");
    for (i, (ssrc, seq, bytes)) in received.iter().enumerate() {
        assert_eq!(*ssrc, 0x5000);
        assert_eq!(*seq, received[0].1.wrapping_add(i as u16), "continuous numbering");
        assert_eq!(bytes, &payload(500 + i as u16), "the payload as published");
    }
    assert_eq!(net.clients[1].inbox.len(), 20, "the browser subscriber still gets its SRTP copy");

    // The helper's PLI, in plaintext from its address, is a keyframe request for the stream.
    net.advance(Duration::from_secs(1));
    let mut rtcp = [0u8; 64];
    let len = write_pli(&mut rtcp, 0x1234, 0x5000).unwrap();
    net.send_raw(HELPER, rtcp[..len].to_vec());
    net.deliver();
    assert_eq!(plis_to_publisher(&net), 2);

    // A helper speaks no ICE or DTLS: such datagrams from its address are dropped, counted.
    let before = net.engine.counters().drops_of(DropReason::Malformed);
    net.send_raw(HELPER, vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    net.deliver();
    assert_eq!(net.engine.counters().drops_of(DropReason::Malformed), before + 1);

    // It lives without consent checks until it is closed, and then nothing more goes there.
    net.advance(Duration::from_secs(60));
    net.deliver();
    assert!(
        !net.engine
            .drain_events()
            .any(|e| matches!(e, EngineEvent::TransportClosed { transport, .. } if transport == plain))
    );
    net.engine.close_transport(plain).unwrap();
    net.elsewhere.clear();
    net.send_rtp(0, PUBLISHER_SSRC, 520, 520 * 3000, &payload(520));
    net.deliver();
    assert!(plain_rtp(&net).is_empty());
    assert!(net.engine.create_plain_transport(HELPER, None, None).is_ok(), "its address is free again");
}

#[test]
fn a_plain_transport_can_publish_a_stream_that_browsers_receive() {
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(1);
    assert_eq!(net.connect_all(), 1);
    let player = net.engine.create_plain_transport(HELPER, None, None).unwrap();
    let spec = ProducerSpec { transport: player, ssrc: 0x7000, kind: MediaKind::Video, clock_rate: 90_000 };
    let producer = net.engine.add_producer(spec).unwrap();
    net.engine.add_consumer(producer, net.clients[0].transport, 0x2000).unwrap();
    let mut buf = vec![0u8; SLOT_SIZE];
    for seq in 0..5u16 {
        let header = RtpHeader::new(96, seq, u32::from(seq) * 3000, 0x7000).write(&mut buf).unwrap();
        buf[header..header + 4].copy_from_slice(b"vp8!");
        net.send_raw(HELPER, buf[..header + 4].to_vec());
    }
    net.deliver();
    let received: Vec<_> =
        net.clients[0].inbox.iter().filter(|(kind, _)| matches!(kind, Received::Rtp { .. })).collect();
    assert_eq!(received.len(), 5, "decrypted by the subscriber: protected for it by the engine");
    assert_eq!(RtpPacket::new_checked(&received[0].1[..]).unwrap().payload(), b"vp8!");
}

#[test]
fn a_plain_transport_with_an_rtcp_port_takes_reports_from_it_and_sends_its_rtcp_there() {
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(1);
    assert_eq!(net.connect_all(), 1);
    let player = net.engine.create_plain_transport(HELPER, Some(HELPER_RTCP), None).unwrap();
    assert_eq!(net.engine.create_plain_transport(HELPER_RTCP, None, None), Err(EngineError::AddressInUse));
    let spec = ProducerSpec { transport: player, ssrc: 0x7000, kind: MediaKind::Video, clock_rate: 90_000 };
    let producer = net.engine.add_producer(spec).unwrap();
    net.engine.add_consumer(producer, net.clients[0].transport, 0x2000).unwrap();
    net.deliver();
    let rtcp_to = |net: &Net, to| {
        net.elsewhere.iter().filter(|(dest, bytes)| *dest == to && classify(bytes) == Datagram::Rtcp).count()
    };
    assert_eq!(rtcp_to(&net, HELPER_RTCP), 1, "the new consumer's keyframe request goes to the RTCP port");
    assert_eq!(rtcp_to(&net, HELPER), 0);

    // The player's sender report, from its RTCP port, is taken like a browser's.
    let unknown = net.engine.counters().drops_of(DropReason::UnknownSource);
    let info = SenderInfo { ssrc: 0x7000, ntp_timestamp: 1 << 32, rtp_timestamp: 0, packet_count: 1, octet_count: 4 };
    let mut rtcp = [0u8; 64];
    let len = write_sender_report(&mut rtcp, &info, &[]).unwrap();
    net.send_raw(HELPER_RTCP, rtcp[..len].to_vec());
    net.deliver();
    assert_eq!(net.engine.counters().drops_of(DropReason::UnknownSource), unknown, "a known source");

    // Closing frees both addresses.
    net.engine.close_transport(player).unwrap();
    net.send_raw(HELPER_RTCP, rtcp[..len].to_vec());
    net.deliver();
    assert_eq!(net.engine.counters().drops_of(DropReason::UnknownSource), unknown + 1, "forgotten with it");
    assert!(net.engine.create_plain_transport(HELPER_RTCP, None, None).is_ok());
}

const RID_EXTENSION: u8 = 10;

/// Client 0 sends a VP8 packet of the simulcast layer `rid` (SSRC `ssrc`), with a 15-bit
/// picture id; the first packet of a key frame when `key`.
fn send_layer_packet(net: &mut Net, (rid, ssrc): (&str, u32), seq: u16, picture_id: u16, key: bool) {
    let mut buf = vec![0u8; SLOT_SIZE];
    let elements: [(u8, &[u8]); 1] = [(RID_EXTENSION, rid.as_bytes())];
    let header = RtpHeader::new(96, seq, u32::from(seq) * 3000, ssrc).extensions(&elements).write(&mut buf).unwrap();
    let [high, low] = picture_id.to_be_bytes();
    let payload = [0x90, 0x80, 0x80 | high, low, u8::from(!key), 0x9D, 0x01, 0x2A];
    buf[header..header + payload.len()].copy_from_slice(&payload);
    let len = net.clients[0].peer.protect_rtp(&mut buf, header + payload.len()).unwrap();
    buf.truncate(len);
    net.send_raw(net.clients[0].addr, buf);
    net.deliver();
}

/// (sequence number, picture id) of each packet client `i` received.
fn received_pictures(net: &Net, i: usize) -> Vec<(u16, u16)> {
    net.clients[i]
        .inbox
        .iter()
        .filter(|(kind, _)| matches!(kind, Received::Rtp { .. }))
        .map(|(_, bytes)| {
            let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
            let ids = Vp8PictureIds::read(packet.payload()).unwrap();
            (packet.sequence_number(), ids.picture_id.unwrap().0)
        })
        .collect()
}

/// A publisher (client 0) of two simulcast layers by rid, `q` and `f`, and a subscriber.
fn simulcast_net() -> (Net, ProducerId, ProducerId) {
    let mut net = Net::new(EngineConfig::default());
    net.add_clients(2);
    assert_eq!(net.connect_all(), 2);
    let publisher = net.clients[0].transport;
    let layer = |net: &mut Net, rid| {
        net.engine.add_layer_producer(publisher, (RID_EXTENSION, Rid::new(rid).unwrap()), MediaKind::Video, 90_000)
    };
    let (low, high) = (layer(&mut net, "q").unwrap(), layer(&mut net, "f").unwrap());
    (net, low, high)
}

#[test]
fn simulcast_layers_named_by_rid_reach_a_subscriber_as_one_continuous_stream() {
    let (mut net, low, high) = simulcast_net();
    let consumer = net.engine.add_consumer(low, net.clients[1].transport, 0x2001).unwrap();
    net.engine.set_layers(net.now, consumer, &[low, high], VideoFormat::Vp8).unwrap();
    assert_eq!(net.engine.layer_state(consumer), Some((0, None, 1)), "nothing sends yet");

    // Both layers start; the subscriber gets the low one until the high one's key frame.
    send_layer_packet(&mut net, ("q", 0xA), 100, 7000, true);
    send_layer_packet(&mut net, ("f", 0xB), 500, 20, false);
    assert_eq!(net.engine.layer_state(consumer), Some((0, Some(1), 1)), "the high layer is wanted");
    send_layer_packet(&mut net, ("q", 0xA), 101, 7001, false);
    send_layer_packet(&mut net, ("f", 0xB), 501, 21, true);
    send_layer_packet(&mut net, ("f", 0xB), 502, 22, false);
    assert_eq!(received_pictures(&net, 1), [(100, 7000), (101, 7001), (102, 7002), (103, 7003)]);
    assert_eq!(net.engine.layer_state(consumer), Some((1, None, 1)));
    let asked = rtcp_of(&net, 0, |p| match p {
        RtcpPacket::Pli(pli) => Some(pli.media_ssrc()),
        _ => None,
    });
    assert!(asked.contains(&0xB), "the high layer's key frame was asked for: {asked:?}");

    // The high layer stops: after a while the subscriber is moved down, at a key frame.
    net.advance(Duration::from_secs(2));
    send_layer_packet(&mut net, ("q", 0xA), 102, 7002, false);
    net.advance(Duration::from_secs(1));
    send_layer_packet(&mut net, ("q", 0xA), 103, 7003, true);
    assert_eq!(net.engine.layer_state(consumer), Some((0, None, 1)));
    assert_eq!(received_pictures(&net, 1).last(), Some(&(104, 7004)), "numbering and picture ids go on");
    assert_eq!(net.clients[1].errors, 0);
}

#[test]
fn a_simulcast_subscriber_asking_too_many_key_frames_is_moved_down_instead() {
    let (mut net, low, high) = simulcast_net();
    let consumer = net.engine.add_consumer(high, net.clients[1].transport, 0x2001).unwrap();
    net.engine.set_layers(net.now, consumer, &[low, high], VideoFormat::Vp8).unwrap();
    send_layer_packet(&mut net, ("q", 0xA), 100, 1, true);
    send_layer_packet(&mut net, ("f", 0xB), 500, 1, true);
    assert_eq!(net.engine.layer_state(consumer), Some((1, None, 1)));
    let plis_for = |net: &Net, ssrc: u32| {
        rtcp_of(net, 0, |p| matches!(p, RtcpPacket::Pli(pli) if pli.media_ssrc() == ssrc).then_some(())).len()
    };
    let mut rtcp = [0u8; 64];
    let len = write_pli(&mut rtcp, 0x2001, 0x2001).unwrap();
    // Its link loses what the high layer sends: a request every 600 ms (past the throttle).
    net.advance(Duration::from_millis(600));
    net.clients[0].inbox.clear();
    for i in 0..3 {
        net.send_rtcp(1, &rtcp[..len]);
        net.deliver();
        net.advance(Duration::from_millis(600));
        send_layer_packet(&mut net, ("q", 0xA), 101 + i, 2 + i, false);
        send_layer_packet(&mut net, ("f", 0xB), 501 + i, 2 + i, false);
    }
    assert_eq!(plis_for(&net, 0xB), 3, "its first requests reach the publisher");
    assert_eq!(plis_for(&net, 0xA), 0);
    net.send_rtcp(1, &rtcp[..len]);
    net.deliver();
    assert_eq!(plis_for(&net, 0xB), 3, "then the high layer's key frames are spared");
    assert_eq!(plis_for(&net, 0xA), 1, "the low layer's is asked for, to switch");
    assert_eq!(net.engine.layer_state(consumer), Some((1, Some(0), 0)), "held on the low layer");
    send_layer_packet(&mut net, ("q", 0xA), 104, 5, true);
    assert_eq!(net.engine.layer_state(consumer), Some((0, None, 0)));
    net.engine.refresh_media_stats();
    assert_eq!(net.engine.counters().media_of(MediaStat::LossDowngrades), 1);
}

#[test]
fn a_watched_layer_reports_whether_some_subscriber_could_receive_it() {
    let (mut net, low, high) = simulcast_net();
    net.engine.drain_events().for_each(drop);
    let demand = |net: &mut Net| {
        net.deliver();
        let events: Vec<EngineEvent> = net.engine.drain_events().collect();
        events.into_iter().filter(|e| matches!(e, EngineEvent::Demand { .. })).collect::<Vec<_>>()
    };
    net.engine.watch_demand(low).unwrap();
    net.engine.watch_demand(high).unwrap();
    let wanted = |producer, wanted| EngineEvent::Demand { producer, wanted };
    assert_eq!(demand(&mut net), [wanted(low, false), wanted(high, false)]);

    let consumer = net.engine.add_consumer(high, net.clients[1].transport, 0x2001).unwrap();
    net.engine.set_layers(net.now, consumer, &[low, high], VideoFormat::Vp8).unwrap();
    assert_eq!(demand(&mut net), [wanted(low, true), wanted(high, true)]);
    net.engine.prefer_layer(net.now, consumer, 0, false).unwrap();
    assert_eq!(demand(&mut net), [wanted(high, false)]);
    assert!(demand(&mut net).is_empty(), "reported once per change");
    net.engine.remove_consumer(net.clients[1].transport, 0x2001).unwrap();
    assert_eq!(demand(&mut net), [wanted(low, false)]);
}

#[test]
fn publishers_get_transport_feedback_about_every_numbered_packet() {
    const TRANSPORT_CC: u8 = 3;
    let (mut net, _) = publishing_net(1, MediaKind::Video);
    net.engine.enable_transport_feedback(net.clients[0].transport, TRANSPORT_CC).unwrap();
    // Numbered 65530 onwards, across the wrap, one lost on the way (65534); a packet of a
    // stream the SFU does not forward (a probe on the RTX SSRC) counts as well.
    for (seq, number) in (0..10u16).map(|i| (1000 + i, 65530u16.wrapping_add(i))) {
        if number == 65534 {
            continue;
        }
        let ssrc = if number == 2 { 0x9999 } else { PUBLISHER_SSRC };
        let mut buf = vec![0u8; SLOT_SIZE];
        let value = number.to_be_bytes();
        let elements: [(u8, &[u8]); 1] = [(TRANSPORT_CC, &value)];
        let header =
            RtpHeader::new(96, seq, u32::from(seq) * 3000, ssrc).extensions(&elements).write(&mut buf).unwrap();
        buf[header..header + 4].copy_from_slice(b"vp8!");
        let len = net.clients[0].peer.protect_rtp(&mut buf, header + 4).unwrap();
        buf.truncate(len);
        net.send_raw(net.clients[0].addr, buf);
        net.advance(Duration::from_millis(5));
    }
    net.advance(Duration::from_millis(100));
    let reported: Vec<(u16, bool)> = rtcp_of(&net, 0, |p| match p {
        RtcpPacket::TransportFeedback(feedback) => {
            Some(feedback.packets().map(|(seq, at)| (seq, at.is_some())).collect::<Vec<_>>())
        }
        _ => None,
    })
    .concat();
    let expected: Vec<(u16, bool)> = (0..10u16).map(|i| 65530u16.wrapping_add(i)).map(|n| (n, n != 65534)).collect();
    assert_eq!(reported, expected, "each number once, the lost one as lost");
    // Arrivals 5 ms apart are reported 5 ms apart.
    let arrivals: Vec<i64> = rtcp_of(&net, 0, |p| match p {
        RtcpPacket::TransportFeedback(feedback) => {
            let base = i64::from(feedback.reference_time()) * 64_000;
            Some(feedback.packets().filter_map(|(_, at)| at.map(|at| base + at)).collect::<Vec<_>>())
        }
        _ => None,
    })
    .concat();
    assert!(arrivals.windows(2).all(|w| w[1] - w[0] == 5000), "{arrivals:?}");
    // Browsers drop feedback that names none of their streams.
    let named = rtcp_of(&net, 0, |p| match p {
        RtcpPacket::TransportFeedback(feedback) => Some(feedback.media_ssrc()),
        _ => None,
    });
    assert!(!named.is_empty() && named.iter().all(|&ssrc| ssrc == PUBLISHER_SSRC), "{named:?}");
}
