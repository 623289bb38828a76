//! One client connection inside an engine: its ICE-lite agent, its DTLS association and,
//! once DTLS has keyed it, its SRTP session; plus the addresses ICE validated for it. Or a
//! plain transport: a fixed address, plaintext both ways for a local helper, SRTP with keys
//! the control plane gave for a node link.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Instant;

use super::congestion::SubscriberBwe;
use super::{CloseReason, MAX_TRANSPORT_ADDRESSES};
use crate::bwe::FeedbackGenerator;
use crate::dtls::{CertificateFingerprint, DtlsIdentity, DtlsTransport};
use crate::ice::{IceCredentials, IceLiteAgent};
use crate::router::TransportId;
use crate::srtp::{SrtpError, SrtpSession};

#[derive(Debug)]
pub(super) struct Transport {
    /// Its own id, generation included, to tell it from an older holder of its slot.
    pub(super) id: TransportId,
    /// Until it connects: when it is removed if it has not.
    pub(super) connect_deadline: Option<Instant>,
    pub(super) link: Link,
    /// Every address an ICE check validated (at most [`MAX_TRANSPORT_ADDRESSES`]), or a plain
    /// transport's one fixed address, so closing the transport frees them all.
    pub(super) addresses: Vec<SocketAddr>,
    /// The most this client may send, in bits per second, told to it by REMB.
    pub(super) bitrate_cap: Option<u32>,
    /// The SSRCs of the video it publishes, which its REMB names.
    pub(super) video_ssrcs: Vec<u32>,
    /// For a publisher that negotiated transport-wide congestion control: the extension id
    /// its packets carry their transport-wide sequence number under, and the arrivals to
    /// report back (boxed: most transports have none, and it holds a window of arrivals).
    pub(super) feedback: Option<Box<(u8, FeedbackGenerator)>>,
    /// For a subscriber that negotiated transport-wide congestion control: its estimate and
    /// what numbers its packets (boxed: it holds a history of what was sent).
    pub(super) bwe: Option<Box<SubscriberBwe>>,
}

/// A REMB names at most this many SSRCs; a publisher has a few video streams, each with up
/// to four simulcast layers.
const MAX_VIDEO_SSRCS: usize = 32;

/// How the peer reaches the transport and how its media is keyed.
// Browsers' transports are nearly all of them and are on the forwarding path: their state
// stays inline rather than behind a box for the few plain ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Link {
    /// A browser or app: ICE-lite checks validate its addresses, then DTLS keys SRTP.
    Webrtc {
        ice: IceLiteAgent,
        dtls: DtlsTransport,
        /// Present once DTLS finished and the peer's certificate matched its fingerprint.
        srtp: Option<SrtpSession>,
        /// Where the peer's last DTLS record came from: its flights are answered there even
        /// before a candidate is nominated.
        last_dtls_source: Option<SocketAddr>,
    },
    /// A fixed address, no ICE or DTLS: a helper process or thread of this machine on
    /// loopback (a recorder, a player), or another node's worker (a node link). The control
    /// plane made it and knows the address, and only it ends it: it has no connect or
    /// consent timeout. A helper that keeps RTCP on a port of its own (RFC 3550 without
    /// rtcp-mux, as ffmpeg's RTP output does) names it as `rtcp_remote`: its reports are
    /// accepted from there and the engine's RTCP goes there. A helper's media is plaintext;
    /// a link's is SRTP under the keys the control plane gave (`srtp`).
    Plain { remote: SocketAddr, rtcp_remote: Option<SocketAddr>, srtp: Option<SrtpSession> },
}

impl Transport {
    /// Names `ssrc` in this publisher's REMB from now on.
    pub(super) fn add_video_ssrc(&mut self, ssrc: u32) {
        if !self.video_ssrcs.contains(&ssrc) && self.video_ssrcs.len() < MAX_VIDEO_SSRCS {
            self.video_ssrcs.push(ssrc);
        }
    }

    pub(super) fn new(
        id: TransportId,
        now: Instant,
        connect_deadline: Instant,
        identity: &DtlsIdentity,
        local_ice: IceCredentials,
        remote_ice: IceCredentials,
        remote_fingerprint: CertificateFingerprint,
    ) -> Self {
        Self {
            id,
            connect_deadline: Some(connect_deadline),
            link: Link::Webrtc {
                ice: IceLiteAgent::new(local_ice, remote_ice, now),
                dtls: DtlsTransport::new_server(identity, remote_fingerprint, now),
                srtp: None,
                last_dtls_source: None,
            },
            addresses: Vec::new(),
            bitrate_cap: None,
            video_ssrcs: Vec::new(),
            feedback: None,
            bwe: None,
        }
    }

    /// A plain transport to and from `remote` (and its RTCP at `rtcp_remote`), usable at once;
    /// a node link when `srtp` keys it.
    pub(super) fn plain(
        id: TransportId,
        remote: SocketAddr,
        rtcp_remote: Option<SocketAddr>,
        srtp: Option<SrtpSession>,
    ) -> Self {
        Self {
            id,
            connect_deadline: None,
            link: Link::Plain { remote, rtcp_remote, srtp },
            addresses: std::iter::once(remote).chain(rtcp_remote).collect(),
            bitrate_cap: None,
            video_ssrcs: Vec::new(),
            feedback: None,
            bwe: None,
        }
    }

    /// Where media for this client goes: the nominated address, else the first validated;
    /// a plain transport's fixed address.
    pub(super) fn destination(&self) -> Option<SocketAddr> {
        match &self.link {
            Link::Webrtc { ice, .. } => ice.selected().or_else(|| self.addresses.first().copied()),
            Link::Plain { remote, .. } => Some(*remote),
        }
    }

    /// Where RTCP for this client goes: a plain transport's RTCP address when it has one,
    /// else where its media goes.
    pub(super) fn rtcp_destination(&self) -> Option<SocketAddr> {
        match &self.link {
            Link::Plain { rtcp_remote: Some(rtcp), .. } => Some(*rtcp),
            _ => self.destination(),
        }
    }

    /// Whether media may flow: SRTP is keyed, or the transport is plain.
    pub(super) fn is_keyed(&self) -> bool {
        match &self.link {
            Link::Webrtc { srtp, .. } => srtp.is_some(),
            Link::Plain { .. } => true,
        }
    }

    /// Whether this is a node link: a plain transport keyed with SRTP.
    pub(super) fn is_node_link(&self) -> bool {
        matches!(self.link, Link::Plain { srtp: Some(_), .. })
    }

    /// The SRTP session that media to and from the peer goes through: `None` while a
    /// browser's transport is not keyed yet; `Some(None)` for a helper's plaintext.
    pub(super) fn media_keys(&mut self) -> Option<Option<&mut SrtpSession>> {
        match &mut self.link {
            Link::Webrtc { srtp, .. } => srtp.as_mut().map(Some),
            Link::Plain { srtp, .. } => Some(srtp.as_mut()),
        }
    }

    /// Protects the RTP packet in `buf[..len]` for the peer: its length then, `None` before
    /// the transport is keyed. A helper's plain transport sends it as it is.
    pub(super) fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Option<Result<usize, SrtpError>> {
        self.media_keys().map(|srtp| srtp.map_or(Ok(len), |srtp| srtp.protect_rtp(buf, len)))
    }

    /// [`Transport::protect_rtp`] for an RTCP packet.
    pub(super) fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Option<Result<usize, SrtpError>> {
        self.media_keys().map(|srtp| srtp.map_or(Ok(len), |srtp| srtp.protect_rtcp(buf, len)))
    }

    /// The earliest deadline of this transport: DTLS retransmission, connect timeout or
    /// consent expiry; none for a plain transport.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let Link::Webrtc { ice, dtls, .. } = &self.link else { return None };
        let mut due = ice.poll_timeout();
        let feedback = self.feedback.as_ref().and_then(|f| f.1.poll_timeout());
        let bwe = self.bwe.as_ref().and_then(|b| b.poll_timeout());
        for deadline in [dtls.poll_timeout(), self.connect_deadline, feedback, bwe].into_iter().flatten() {
            due = due.min(deadline);
        }
        Some(due)
    }

    /// Why the transport ends at `now`, if its consent expired or it did not connect in time.
    pub(super) fn timed_out(&self, now: Instant) -> Option<CloseReason> {
        let Link::Webrtc { ice, .. } = &self.link else { return None };
        if ice.is_expired(now) {
            return Some(CloseReason::ConsentExpired);
        }
        match self.connect_deadline {
            Some(deadline) if deadline <= now && self.addresses.is_empty() => Some(CloseReason::IceTimeout),
            Some(deadline) if deadline <= now => Some(CloseReason::DtlsTimeout),
            _ => None,
        }
    }

    /// Records a newly validated address; when the list is full the oldest address other
    /// than the selected one makes room, and is returned to be forgotten.
    pub(super) fn add_address(&mut self, address: SocketAddr) -> Option<SocketAddr> {
        let mut evicted = None;
        if self.addresses.len() >= MAX_TRANSPORT_ADDRESSES {
            let selected = match &self.link {
                Link::Webrtc { ice, .. } => ice.selected(),
                Link::Plain { remote, .. } => Some(*remote),
            };
            let oldest = self.addresses.iter().position(|a| Some(*a) != selected).unwrap_or(0);
            evicted = Some(self.addresses.remove(oldest));
        }
        self.addresses.push(address);
        evicted
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::dtls::DtlsVersionPolicy;

    fn transport(now: Instant) -> Transport {
        let identity = DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only).unwrap();
        let (local, remote) = (IceCredentials::generate().unwrap(), IceCredentials::generate().unwrap());
        let deadline = now + Duration::from_secs(10);
        Transport::new(TransportId(1), now, deadline, &identity, local, remote, identity.fingerprint())
    }

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn the_address_list_is_bounded_and_gives_up_its_oldest() {
        let mut transport = transport(Instant::now());
        for port in 0..MAX_TRANSPORT_ADDRESSES as u16 {
            assert_eq!(transport.add_address(address(1000 + port)), None);
        }
        assert_eq!(transport.add_address(address(2000)), Some(address(1000)));
        assert_eq!(transport.add_address(address(2001)), Some(address(1001)));
        assert_eq!(transport.addresses.len(), MAX_TRANSPORT_ADDRESSES);
        assert_eq!(transport.addresses.last(), Some(&address(2001)));
    }

    #[test]
    fn a_transport_times_out_as_ice_before_any_check_and_as_dtls_after_one() {
        let now = Instant::now();
        let mut transport = transport(now);
        let late = now + Duration::from_secs(10);
        assert_eq!(transport.timed_out(now + Duration::from_secs(9)), None);
        assert_eq!(transport.timed_out(late), Some(CloseReason::IceTimeout));
        transport.add_address(address(1000));
        assert_eq!(transport.timed_out(late), Some(CloseReason::DtlsTimeout));
        transport.connect_deadline = None;
        assert_eq!(transport.timed_out(late), None, "a connected transport lives on consent alone");
    }
}
