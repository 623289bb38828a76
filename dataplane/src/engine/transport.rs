//! One client connection inside an engine: its ICE-lite agent, its DTLS association and,
//! once DTLS has keyed it, its SRTP session; plus the addresses ICE validated for it.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Instant;

use crate::dtls::{CertificateFingerprint, DtlsIdentity, DtlsTransport};
use crate::ice::{IceCredentials, IceLiteAgent};
use crate::srtp::SrtpSession;

#[derive(Debug)]
pub(super) struct Transport {
    pub(super) ice: IceLiteAgent,
    pub(super) dtls: DtlsTransport,
    /// Present once DTLS finished and the peer's certificate matched its fingerprint.
    pub(super) srtp: Option<SrtpSession>,
    /// Every address an ICE check validated, so closing the transport frees them all.
    pub(super) addresses: Vec<SocketAddr>,
    /// Where the peer's last DTLS record came from: its flights are answered there even
    /// before a candidate is nominated.
    pub(super) last_dtls_source: Option<SocketAddr>,
    /// The most this client may send, in bits per second, told to it by REMB.
    pub(super) bitrate_cap: Option<u32>,
    /// The SSRCs of the video it publishes, which its REMB names.
    pub(super) video_ssrcs: Vec<u32>,
}

impl Transport {
    pub(super) fn new(
        now: Instant,
        identity: &DtlsIdentity,
        local_ice: IceCredentials,
        remote_ice: IceCredentials,
        remote_fingerprint: CertificateFingerprint,
    ) -> Self {
        Self {
            ice: IceLiteAgent::new(local_ice, remote_ice, now),
            dtls: DtlsTransport::new_server(identity, remote_fingerprint, now),
            srtp: None,
            addresses: Vec::new(),
            last_dtls_source: None,
            bitrate_cap: None,
            video_ssrcs: Vec::new(),
        }
    }

    /// Where media for this client goes: the nominated address, else the first validated.
    pub(super) fn destination(&self) -> Option<SocketAddr> {
        self.ice.selected().or_else(|| self.addresses.first().copied())
    }

    /// The earliest deadline of this transport: DTLS retransmission or consent expiry.
    pub(super) fn poll_timeout(&self) -> Instant {
        let consent = self.ice.poll_timeout();
        self.dtls.poll_timeout().map_or(consent, |dtls| dtls.min(consent))
    }
}
