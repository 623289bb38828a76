//! Node links in virtual time: two engines, each with its own browser clients, joined by
//! plain transports keyed with SRTP (as two nodes' workers are), the datagrams between them
//! carried by the test and lost where it says. A stream published on node A and consumed on
//! the link reaches a subscriber on node B whole; wrong keys deliver nothing; a packet lost
//! on the link is NACKed by B and resent by A, a bounded number of times; a subscriber's
//! keyframe request on B reaches the publisher on A, throttled at both ends.

mod nodes;

use std::net::SocketAddr;
use std::time::Duration;

use nodes::{LINK_SSRC, LOCAL_SUBSCRIBER_SSRC, LinkedNodes, NODE_A, NODE_B, PUBLISHER_SSRC, SUBSCRIBER_SSRC, half};
use uprtcd_dataplane::dtls::SrtpProfile;
use uprtcd_dataplane::engine::{EngineConfig, EngineError, LINK_SRTP_PROFILE, LinkKeys};
use uprtcd_dataplane::peer::Received;
use uprtcd_dataplane::router::nack::MAX_NACK_TRIES;
use uprtcd_dataplane::srtp::{MasterKeySalt, SrtpError, SrtpSession};
use uprtcd_dataplane::stats::DropReason;
use uprtcd_dataplane::testnet::Net;
use uprtcd_dataplane::wire::rtcp::{FirEntry, RtcpCompound, RtcpPacket, write_fir, write_pli};
use uprtcd_dataplane::wire::rtp::RtpPacket;
use uprtcd_dataplane::wire::{Datagram, WireError, classify};

/// A step of the two nodes' clocks.
const TICK: Duration = Duration::from_millis(10);

/// Which way a datagram crosses the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    AToB,
    BToA,
}

/// Decides, for each datagram crossing the link, whether it is lost.
type LinkLoss = Box<dyn FnMut(Way, &[u8]) -> bool>;

/// The linked nodes, and the wire between them.
struct Nodes {
    a: Net,
    b: Net,
    /// The halves of the link's keys each node sends under.
    a_sends: Vec<u8>,
    b_sends: Vec<u8>,
    lose: LinkLoss,
    /// What crossed, in order, with its way.
    wire: Vec<(Way, Vec<u8>)>,
}

fn payload(seq: u16) -> Vec<u8> {
    (0..1000).map(|i| (i as u16).wrapping_mul(7).wrapping_add(seq) as u8).collect()
}

impl Nodes {
    /// The two nodes linked and settled (the new consumers' keyframe requests sent); B
    /// expects A to send under `b_expects` (A's real half unless a test says otherwise).
    fn linked(b_expects: Option<Vec<u8>>) -> Self {
        let LinkedNodes { a, b, a_sends, b_sends } = nodes::linked(b_expects);
        let mut nodes = Self { a, b, a_sends, b_sends, lose: Box::new(|_, _| false), wire: Vec::new() };
        nodes.settle();
        nodes
    }

    /// Delivers on both nodes and carries what each sent the other across the link, until
    /// nothing more moves.
    fn settle(&mut self) {
        loop {
            self.a.deliver();
            self.b.deliver();
            let moved = self.carry(Way::AToB) + self.carry(Way::BToA);
            if moved == 0 {
                break;
            }
        }
    }

    fn carry(&mut self, way: Way) -> usize {
        let (from, to, destination, source) = match way {
            Way::AToB => (&mut self.a, &mut self.b, NODE_B, NODE_A),
            Way::BToA => (&mut self.b, &mut self.a, NODE_A, NODE_B),
        };
        let (crossing, rest) = std::mem::take(&mut from.elsewhere).into_iter().partition(|(to, _)| *to == destination);
        from.elsewhere = rest;
        let crossing: Vec<(SocketAddr, Vec<u8>)> = crossing;
        for (_, bytes) in &crossing {
            self.wire.push((way, bytes.clone()));
            if !(self.lose)(way, bytes) {
                to.send_raw(source, bytes.clone());
            }
        }
        crossing.len()
    }

    /// Moves both clocks on by `by` (timers run), then settles.
    fn advance(&mut self, by: Duration) {
        self.a.advance(by);
        self.b.advance(by);
        self.settle();
    }

    /// The publisher on A sends `seq`, then the clocks move on by a tick.
    fn publish(&mut self, seq: u16) {
        self.a.send_rtp(0, PUBLISHER_SSRC, seq, u32::from(seq) * 3000, &payload(seq));
        self.settle();
        self.advance(TICK);
    }

    /// The RTCP packets that crossed `way`, decrypted with the keys of who sent them and
    /// picked by `pick`.
    fn rtcp_crossing<T>(&self, way: Way, pick: impl Fn(RtcpPacket<'_>) -> Option<T>) -> Vec<T> {
        let sender = if way == Way::AToB { &self.a_sends } else { &self.b_sends };
        let (key, salt) = sender.split_at(LINK_SRTP_PROFILE.master_key_len());
        let keys = MasterKeySalt { key, salt };
        let mut observer = SrtpSession::from_master_keys(LINK_SRTP_PROFILE, keys, keys).unwrap();
        let mut found = Vec::new();
        for (_, bytes) in self.wire.iter().filter(|(w, bytes)| *w == way && classify(bytes) == Datagram::Rtcp) {
            let mut bytes = bytes.clone();
            let len = observer.unprotect_rtcp(&mut bytes).expect("SRTCP under the sender's keys");
            found.extend(RtcpCompound::new_checked(&bytes[..len]).unwrap().packets().filter_map(&pick));
        }
        found
    }

    /// The sequence numbers NACKed over the link, in the order they were asked for.
    fn nacked(&self) -> Vec<u16> {
        self.rtcp_crossing(Way::BToA, |packet| match packet {
            RtcpPacket::Nack(nack) if nack.media_ssrc() == LINK_SSRC => {
                Some(nack.lost_sequence_numbers().collect::<Vec<_>>())
            }
            _ => None,
        })
        .concat()
    }

    /// PLIs B sent over the link for the linked stream.
    fn plis_over_link(&self) -> usize {
        self.rtcp_crossing(Way::BToA, |packet| {
            matches!(packet, RtcpPacket::Pli(pli) if pli.media_ssrc() == LINK_SSRC).then_some(())
        })
        .len()
    }

    /// PLIs the publisher on A received.
    fn plis_to_publisher(&self) -> usize {
        received(&self.a, 0, |kind, bytes| {
            matches!(kind, Received::Rtcp { .. })
                && RtcpCompound::new_checked(bytes)
                    .unwrap()
                    .packets()
                    .any(|p| matches!(p, RtcpPacket::Pli(pli) if pli.media_ssrc() == PUBLISHER_SSRC))
        })
        .len()
    }

    /// The RTP packets B's subscriber decrypted: (sequence number, payload).
    fn subscriber_rtp(&self) -> Vec<(u16, Vec<u8>)> {
        received(&self.b, 0, |kind, _| matches!(kind, Received::Rtp { .. }))
            .into_iter()
            .map(|bytes| {
                let packet = RtpPacket::new_checked(&bytes[..]).unwrap();
                assert_eq!(packet.ssrc(), SUBSCRIBER_SSRC);
                (packet.sequence_number(), packet.payload().to_vec())
            })
            .collect()
    }
}

/// What client `i` of `net` received that `pick` selects.
fn received(net: &Net, i: usize, pick: impl Fn(Received, &[u8]) -> bool) -> Vec<Vec<u8>> {
    net.clients[i].inbox.iter().filter(|(kind, bytes)| pick(*kind, bytes)).map(|(_, bytes)| bytes.clone()).collect()
}

/// The RTCP packet `write` writes.
fn written(write: impl FnOnce(&mut [u8]) -> Result<usize, WireError>) -> Vec<u8> {
    let mut buf = vec![0; 64];
    let len = write(&mut buf).unwrap();
    buf.truncate(len);
    buf
}

/// Whether an A→B datagram is the RTP packet the link consumer sent as `seq` of the link's
/// numbering (its header is in the clear under SRTP).
fn is_link_rtp(bytes: &[u8], link_seq: u16) -> bool {
    classify(bytes) == Datagram::Rtp
        && RtpPacket::new_checked(bytes).is_ok_and(|p| p.ssrc() == LINK_SSRC && p.sequence_number() == link_seq)
}

#[test]
fn a_published_stream_crosses_the_link_encrypted_and_reaches_a_subscriber_on_the_other_node_whole() {
    let mut nodes = Nodes::linked(None);
    for seq in 100..130u16 {
        nodes.publish(seq);
    }
    let got = nodes.subscriber_rtp();
    assert_eq!(got.len(), 30, "every packet");
    for (i, (seq, bytes)) in got.iter().enumerate() {
        assert_eq!(*seq, got[0].0.wrapping_add(i as u16), "in order, without a gap");
        assert_eq!(bytes, &payload(100 + i as u16), "the payload as published");
    }
    // What crossed is SRTP: no payload is readable on the wire.
    let media: Vec<&Vec<u8>> = nodes
        .wire
        .iter()
        .filter(|(way, bytes)| *way == Way::AToB && classify(bytes) == Datagram::Rtp)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(media.len(), 30);
    let probe = &payload(100)[200..232];
    assert!(media.iter().all(|bytes| !bytes.windows(probe.len()).any(|w| w == probe)), "encrypted");
    for node in [&mut nodes.a, &mut nodes.b] {
        assert_eq!(node.engine.counters().drops_of(DropReason::SrtpAuth), 0);
        assert_eq!(node.engine.counters().drops_of(DropReason::UnknownSsrc), 0);
    }
    assert!(nodes.nacked().is_empty(), "nothing lost, nothing asked for");
}

#[test]
fn a_link_under_the_wrong_keys_delivers_nothing_and_counts_each_datagram() {
    let mut nodes = Nodes::linked(Some(half()));
    for seq in 0..10u16 {
        nodes.publish(seq);
    }
    assert!(nodes.subscriber_rtp().is_empty());
    let crossed = nodes.wire.iter().filter(|(way, _)| *way == Way::AToB).count() as u64;
    assert!(crossed >= 10);
    assert_eq!(nodes.b.engine.counters().drops_of(DropReason::SrtpAuth), crossed, "every datagram from A");
    assert!(nodes.nacked().is_empty(), "nothing authenticated, so nothing is missing");
}

#[test]
fn keys_of_the_wrong_length_are_refused_and_leave_nothing_behind() {
    let mut net = Net::new(EngineConfig::default());
    let refused = Err(EngineError::LinkKeys(SrtpError::WrongKeyLength));
    let wide = LinkKeys::random_half(SrtpProfile::AeadAes256Gcm).unwrap();
    for (local, remote) in [(half()[..27].to_vec(), half()), (half(), wide), (half(), Vec::new())] {
        let keys = LinkKeys { profile: LINK_SRTP_PROFILE, local, remote };
        assert_eq!(net.engine.create_plain_transport(NODE_B, None, Some(&keys)), refused);
    }
    assert_eq!(net.engine.transport_count(), 0);
    let keys = LinkKeys { profile: LINK_SRTP_PROFILE, local: half(), remote: half() };
    assert!(net.engine.create_plain_transport(NODE_B, None, Some(&keys)).is_ok(), "the address is still free");
}

#[test]
fn a_packet_lost_on_the_link_is_nacked_by_the_receiving_node_and_resent_by_the_sending_one() {
    let mut nodes = Nodes::linked(None);
    // 205 alone, and 210 and 211 together, each the first time it crosses (A's link
    // consumer numbers the stream as the publisher does: its first packet sets no offset).
    let mut lose_once = vec![205u16, 210, 211];
    nodes.lose = Box::new(move |way, bytes| {
        let Some(i) = lose_once.iter().position(|&seq| way == Way::AToB && is_link_rtp(bytes, seq)) else {
            return false;
        };
        lose_once.swap_remove(i);
        true
    });
    for seq in 200..230u16 {
        nodes.publish(seq);
    }
    let mut got = nodes.subscriber_rtp();
    got.sort_by_key(|(seq, _)| *seq);
    assert_eq!(got.len(), 30, "every sequence number, the repaired ones late");
    for (i, (seq, bytes)) in got.iter().enumerate() {
        assert_eq!(*seq, got[0].0.wrapping_add(i as u16), "no gap and no duplicate");
        assert_eq!(bytes, &payload(200 + i as u16), "the original packet");
    }
    assert_eq!(nodes.nacked(), [205, 210, 211], "each asked for once: each repair came before a retry");
    assert_eq!(nodes.b.engine.counters().drops_of(DropReason::SrtpReplay), 0, "no repair came twice");
}

#[test]
fn a_packet_the_sending_node_does_not_resend_is_asked_for_a_bounded_number_of_times() {
    let mut nodes = Nodes::linked(None);
    nodes.lose = Box::new(|way, bytes| way == Way::AToB && is_link_rtp(bytes, 303));
    for seq in 300..310u16 {
        nodes.publish(seq);
    }
    for _ in 0..100 {
        nodes.advance(TICK);
    }
    assert_eq!(nodes.nacked(), vec![303; usize::from(MAX_NACK_TRIES)], "then given up");
    let got: Vec<u16> = nodes.subscriber_rtp().into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(got.len(), 9);
    assert!(!got.contains(&got[0].wrapping_add(3)));
}

#[test]
fn a_subscribers_keyframe_request_reaches_the_publisher_over_the_link_throttled_at_both_ends() {
    let mut nodes = Nodes::linked(None);
    // A's new consumers asked for a keyframe, and so did B's, over the link: A took that
    // one as within its own interval.
    assert_eq!(nodes.plis_over_link(), 1, "B's new subscriber needs a keyframe");
    assert_eq!(nodes.plis_to_publisher(), 1);
    nodes.advance(Duration::from_millis(600));

    let pli = written(|buf| write_pli(buf, SUBSCRIBER_SSRC, SUBSCRIBER_SSRC));
    let entry = FirEntry { ssrc: SUBSCRIBER_SSRC, sequence_number: 1 };
    let fir = written(|buf| write_fir(buf, SUBSCRIBER_SSRC, &[entry]));
    let local = written(|buf| write_pli(buf, LOCAL_SUBSCRIBER_SSRC, LOCAL_SUBSCRIBER_SSRC));
    nodes.b.send_rtcp(0, &pli);
    nodes.settle();
    assert_eq!((nodes.plis_over_link(), nodes.plis_to_publisher()), (2, 2), "through to the publisher");

    // Within B's interval a second request (a FIR this time) goes no further than B.
    nodes.b.send_rtcp(0, &fir);
    nodes.settle();
    assert_eq!((nodes.plis_over_link(), nodes.plis_to_publisher()), (2, 2), "absorbed by B");

    // Past both intervals: A's own subscriber asks first, and B's request, which B lets
    // through, is then absorbed by A.
    nodes.advance(Duration::from_millis(600));
    nodes.a.send_rtcp(1, &local);
    nodes.settle();
    nodes.b.send_rtcp(0, &fir);
    nodes.settle();
    assert_eq!((nodes.plis_over_link(), nodes.plis_to_publisher()), (3, 3), "one PLI per interval at A");
}
