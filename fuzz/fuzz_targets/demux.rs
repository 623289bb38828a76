//! The first-byte demux never panics, and agrees with the parsers: what a parser accepts,
//! the demux sends to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uprtcd_dataplane::wire::rtcp::RtcpCompound;
use uprtcd_dataplane::wire::rtp::RtpPacket;
use uprtcd_dataplane::wire::stun::StunHeader;
use uprtcd_dataplane::wire::{Datagram, classify};

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    if data.len() < 2 {
        assert_eq!(kind, Datagram::Unknown);
    }
    // RFC 5389 framing allows first bytes up to 63; RFC 7983 claims only 0..=3 for STUN.
    if StunHeader::new_checked(data).is_ok() && data[0] <= 3 {
        assert_eq!(kind, Datagram::Stun);
    }
    // Version 2 puts the first byte in 128..=191; the second byte alone tells RTCP from RTP
    // (an RTCP packet type outside 192..=223 is kept as `Other` and classified as RTP).
    if RtpPacket::new_checked(data).is_ok() || RtcpCompound::new_checked(data).is_ok() {
        assert!(matches!(kind, Datagram::Rtp | Datagram::Rtcp), "{kind:?}");
    }
    if kind == Datagram::Rtcp {
        assert!((192..=223).contains(&data[1]));
    }
});
