//! The session descriptions a load client writes and reads, as a browser would: a publisher's
//! offer of Opus and VP8, a subscriber's answer to the SFU's offer, and what a description
//! says about the SFU's end (ICE credentials, DTLS fingerprint, UDP candidate).

use std::net::SocketAddr;

use uprtcd_dataplane::dtls::CertificateFingerprint;
use uprtcd_dataplane::ice::IceCredentials;

use crate::LoadError;

/// The payload types of the publisher's offer.
pub const OPUS_PT: u8 = 111;
pub const VP8_PT: u8 = 96;

/// This client's end of a transport: its ICE credentials, certificate fingerprint and the
/// address its socket is bound to (announced as a host candidate, which full ICE agents need
/// and ICE-lite ones ignore).
#[derive(Debug, Clone)]
pub struct LocalEnd<'a> {
    pub ice: &'a IceCredentials,
    pub fingerprint: CertificateFingerprint,
    pub candidate: SocketAddr,
}

impl LocalEnd<'_> {
    /// The transport lines of one media section. `a=setup:active`: the client is the DTLS
    /// client, which is the only role the load client plays.
    fn transport_lines(&self) -> Vec<String> {
        vec![
            format!("a=ice-ufrag:{}", self.ice.ufrag()),
            format!("a=ice-pwd:{}", self.ice.pwd()),
            format!("a=fingerprint:sha-256 {}", self.fingerprint),
            "a=setup:active".to_owned(),
            format!("a=candidate:1 1 udp 2130706431 {} {} typ host", self.candidate.ip(), self.candidate.port()),
            "a=end-of-candidates".to_owned(),
            "a=rtcp-mux".to_owned(),
        ]
    }
}

fn session_lines(bundle: &str) -> Vec<String> {
    vec![
        "v=0".to_owned(),
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1".into(),
        "s=-".into(),
        "t=0 0".into(),
        format!("a=group:BUNDLE {bundle}"),
        "a=msid-semantic: WMS load".into(),
    ]
}

/// A browser-like offer to publish Opus as `audio_ssrc` (mid 0) and VP8 as `video_ssrc`
/// (mid 1), send-only.
pub fn publisher_offer(local: &LocalEnd<'_>, audio_ssrc: u32, video_ssrc: u32) -> String {
    offer(local, Some((audio_ssrc, video_ssrc)))
}

/// A WHEP player's offer: Opus (mid 0) and VP8 (mid 1) under the payload types publishers
/// use, receive-only.
pub fn player_offer(local: &LocalEnd<'_>) -> String {
    offer(local, None)
}

/// Opus and VP8 sections: send-only with these SSRCs, or receive-only without.
fn offer(local: &LocalEnd<'_>, ssrcs: Option<(u32, u32)>) -> String {
    let direction = if ssrcs.is_some() { "a=sendonly" } else { "a=recvonly" };
    let sources = |ssrc: Option<u32>, track: &str| -> Vec<String> {
        ssrc.map(|ssrc| {
            vec![
                format!("a=msid:load {track}"),
                format!("a=ssrc:{ssrc} cname:load"),
                format!("a=ssrc:{ssrc} msid:load {track}"),
            ]
        })
        .unwrap_or_default()
    };
    let mut lines = session_lines("0 1");
    lines.push(format!("m=audio 9 UDP/TLS/RTP/SAVPF {OPUS_PT}"));
    lines.push(format!("c=IN IP4 {}", local.candidate.ip()));
    lines.extend(local.transport_lines());
    lines.extend([
        "a=mid:0".to_owned(),
        direction.into(),
        format!("a=rtpmap:{OPUS_PT} opus/48000/2"),
        format!("a=fmtp:{OPUS_PT} minptime=10;useinbandfec=1"),
    ]);
    lines.extend(sources(ssrcs.map(|(audio, _)| audio), "audio"));
    lines.push(format!("m=video 9 UDP/TLS/RTP/SAVPF {VP8_PT}"));
    lines.push(format!("c=IN IP4 {}", local.candidate.ip()));
    lines.extend(local.transport_lines());
    lines.extend([
        "a=mid:1".to_owned(),
        direction.into(),
        format!("a=rtpmap:{VP8_PT} VP8/90000"),
        format!("a=rtcp-fb:{VP8_PT} nack"),
        format!("a=rtcp-fb:{VP8_PT} nack pli"),
        format!("a=rtcp-fb:{VP8_PT} ccm fir"),
    ]);
    lines.extend(sources(ssrcs.map(|(_, video)| video), "video"));
    lines.push(String::new());
    lines.join("\r\n")
}

/// A subscriber's answer to the SFU's `offer`: every live audio and video section received
/// (`recvonly`) with the formats offered, sections the offer closed or idles answered so,
/// anything else (data channels) rejected.
pub fn subscriber_answer(offer: &str, local: &LocalEnd<'_>) -> Result<String, LoadError> {
    let mut live_mids = Vec::new();
    let mut media = Vec::new();
    for section in offer.split("\nm=").skip(1) {
        let lines: Vec<&str> = section.lines().map(str::trim_end).collect();
        let m_line = lines[0];
        let mut fields = m_line.split_whitespace();
        let kind = fields.next().unwrap_or_default();
        let closed = fields.next() == Some("0");
        let mid = lines
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .ok_or_else(|| LoadError::Sdp(format!("a section without a=mid: m={m_line}")))?;
        if closed || !matches!(kind, "audio" | "video") {
            let rejected: Vec<&str> = m_line.split_whitespace().collect();
            media.push(format!("m={} 0 {}", rejected[0], rejected[2..].join(" ")));
            media.push("c=IN IP4 0.0.0.0".into());
            media.push(format!("a=mid:{mid}"));
            media.push("a=inactive".into());
            continue;
        }
        live_mids.push(mid.to_owned());
        media.push(format!("m={m_line}"));
        media.push(format!("c=IN IP4 {}", local.candidate.ip()));
        media.push(format!("a=mid:{mid}"));
        media.extend(local.transport_lines());
        media.push(if lines.contains(&"a=inactive") { "a=inactive" } else { "a=recvonly" }.into());
        media.extend(
            lines
                .iter()
                .filter(|l| l.starts_with("a=rtpmap:") || l.starts_with("a=fmtp:") || l.starts_with("a=rtcp-fb:"))
                .map(|l| l.to_string()),
        );
    }
    let mut answer = session_lines(&live_mids.join(" "));
    answer.extend(media);
    answer.push(String::new());
    Ok(answer.join("\r\n"))
}

/// What a description says about the SFU's end of the transport.
#[derive(Debug, Clone)]
pub struct RemoteEnd {
    pub ice: IceCredentials,
    pub fingerprint: CertificateFingerprint,
    /// The first UDP host candidate.
    pub address: SocketAddr,
}

impl RemoteEnd {
    pub fn parse(sdp: &str) -> Result<Self, LoadError> {
        let attribute = |name: &str| {
            let prefix = format!("a={name}:");
            sdp.lines()
                .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()).map(str::trim))
                .ok_or_else(|| LoadError::Sdp(format!("no a={name} in the SFU's description")))
        };
        let ice = IceCredentials::new(attribute("ice-ufrag")?, attribute("ice-pwd")?)
            .map_err(|e| LoadError::Sdp(format!("ICE credentials: {e}")))?;
        let fingerprint = CertificateFingerprint::parse_sdp(attribute("fingerprint")?)
            .map_err(|e| LoadError::Sdp(format!("fingerprint: {e}")))?;
        let address = sdp
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
            .find_map(|c| {
                let f: Vec<&str> = c.split_whitespace().collect();
                let udp = f.get(2).is_some_and(|t| t.eq_ignore_ascii_case("udp"));
                udp.then(|| format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()).flatten()
            })
            .ok_or_else(|| LoadError::Sdp("no UDP candidate in the SFU's description".into()))?;
        Ok(Self { ice, fingerprint, address })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(ice: &IceCredentials) -> LocalEnd<'_> {
        let fingerprint = CertificateFingerprint::parse_sdp(&format!("sha-256 {}", ["AB"; 32].join(":"))).unwrap();
        LocalEnd { ice, fingerprint, candidate: "10.99.0.2:40000".parse().unwrap() }
    }

    #[test]
    fn an_answer_receives_media_sections_and_rejects_the_rest() {
        let ice = IceCredentials::generate().unwrap();
        let offer = "v=0\r\no=- 1 1 IN IP4 1.1.1.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=inactive\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";
        let answer = subscriber_answer(offer, &local(&ice)).unwrap();
        assert!(answer.contains("a=group:BUNDLE 0\r\n"), "{answer}");
        assert!(answer.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"), "{answer}");
        assert!(answer.contains("a=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"), "{answer}");
        assert!(answer.contains("m=video 0 UDP/TLS/RTP/SAVPF 96\r\n"), "{answer}");
        assert!(answer.contains("m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n"), "{answer}");
        assert!(answer.contains(&format!("a=ice-ufrag:{}", ice.ufrag())));
        assert!(answer.contains("a=candidate:1 1 udp 2130706431 10.99.0.2 40000 typ host"));
    }

    #[test]
    fn the_remote_end_is_read_from_the_first_udp_candidate() {
        let sdp = format!(
            "v=0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\na=fingerprint:sha-256 {}\r\n\
             a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype passive\r\n\
             a=candidate:2 1 UDP 2 10.99.0.1 5004 typ host\r\n",
            ["0F"; 32].join(":")
        );
        let remote = RemoteEnd::parse(&sdp).unwrap();
        assert_eq!(remote.address, "10.99.0.1:5004".parse::<SocketAddr>().unwrap());
        assert_eq!(remote.ice.ufrag(), "abcd");
    }
}
