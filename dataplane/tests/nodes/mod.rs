//! What the node-link tests share: two engines in virtual time joined by a node link, as two
//! nodes' workers are. On node A, client 0 publishes a video stream that client 1 receives
//! and that A's link consumer sends to B; on node B, the link's producer receives it and
//! client 0 subscribes to it. Carrying datagrams between them is each test's own business.

use std::net::SocketAddr;

use uprtcd_dataplane::engine::{EngineConfig, LINK_SRTP_PROFILE, LinkKeys};
use uprtcd_dataplane::router::{MediaKind, ProducerSpec};
use uprtcd_dataplane::testnet::Net;

/// Each node's worker media address, as the other node sees it.
pub const NODE_A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 40000);
pub const NODE_B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)), 40000);
/// The publisher's stream on A.
pub const PUBLISHER_SSRC: u32 = 0x1111_0000;
/// The stream as A's local subscriber receives it.
pub const LOCAL_SUBSCRIBER_SSRC: u32 = 0x3000;
/// The stream as A's link consumer sends it and B's link producer receives it.
pub const LINK_SSRC: u32 = 0x4C00_0001;
/// The stream as B's subscriber receives it.
pub const SUBSCRIBER_SSRC: u32 = 0x2000;

/// The two nodes, and the halves of the link's keys each sends under.
pub struct LinkedNodes {
    pub a: Net,
    pub b: Net,
    // Read by the tests that watch the wire, not by every binary this module is part of.
    #[allow(dead_code)]
    pub a_sends: Vec<u8>,
    #[allow(dead_code)]
    pub b_sends: Vec<u8>,
}

/// A fresh sending half of a link's keys.
pub fn half() -> Vec<u8> {
    LinkKeys::random_half(LINK_SRTP_PROFILE).unwrap()
}

/// The two nodes linked, with their clients connected; B expects A to send under
/// `b_expects` (A's real half unless a test says otherwise).
pub fn linked(b_expects: Option<Vec<u8>>) -> LinkedNodes {
    let (a_sends, b_sends) = (half(), half());
    let mut a = Net::new(EngineConfig::default());
    a.add_clients(2);
    assert_eq!(a.connect_all(), 2);
    let spec = ProducerSpec {
        transport: a.clients[0].transport,
        ssrc: PUBLISHER_SSRC,
        kind: MediaKind::Video,
        clock_rate: 90_000,
    };
    let published = a.engine.add_producer(spec).unwrap();
    a.engine.add_consumer(published, a.clients[1].transport, LOCAL_SUBSCRIBER_SSRC).unwrap();
    let keys = LinkKeys { profile: LINK_SRTP_PROFILE, local: a_sends.clone(), remote: b_sends.clone() };
    let link = a.engine.create_plain_transport(NODE_B, None, Some(&keys)).unwrap();
    a.engine.add_consumer(published, link, LINK_SSRC).unwrap();

    let mut b = Net::new(EngineConfig::default());
    b.add_clients(1);
    assert_eq!(b.connect_all(), 1);
    let remote = b_expects.unwrap_or_else(|| a_sends.clone());
    let keys = LinkKeys { profile: LINK_SRTP_PROFILE, local: b_sends.clone(), remote };
    let link = b.engine.create_plain_transport(NODE_A, None, Some(&keys)).unwrap();
    let spec = ProducerSpec { transport: link, ssrc: LINK_SSRC, kind: MediaKind::Video, clock_rate: 90_000 };
    let relayed = b.engine.add_producer(spec).unwrap();
    b.engine.add_consumer(relayed, b.clients[0].transport, SUBSCRIBER_SSRC).unwrap();
    LinkedNodes { a, b, a_sends, b_sends }
}
