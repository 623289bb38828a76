//! Media through the SFU: publishers that send paced Opus and VP8 the way a camera does,
//! meters that decrypt and check every packet they receive (loss, reordering, latency from a
//! send timestamp carried in the payload to the kernel's receive timestamp), and sinks that
//! finish their handshake and leave what arrives to the kernel. A viewer's join
//! ([`Viewers::join`]) is timed stage by stage until its first media packet, which it reads
//! before it becomes a sink.
//!
//! Every payload carries a [`MeterBlock`] at [`BLOCK_OFFSET`]: which publisher and stream
//! it belongs to, a per-stream counter and the send time. The SFU rewrites SSRCs and
//! sequence numbers, never payloads, so meters key on the block.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use uprtcd_dataplane::dtls::{CertificateFingerprint, DtlsIdentity, DtlsVersionPolicy};
use uprtcd_dataplane::ice::IceCredentials;
use uprtcd_dataplane::ice::client::{ServerStun, classify_server_stun};
use uprtcd_dataplane::peer::{ClientPeer, PeerError, Received, UdpPeer};
use uprtcd_dataplane::wire::rtp::{RtpHeader, RtpPacket};
use uprtcd_dataplane::wire::{Datagram, classify};

use crate::LoadError;
use crate::cm::{RtcDtlsIdentity, aes_cm_client_peer};
use crate::sdp::{self, LocalEnd, OPUS_PT, RemoteEnd, VP8_PT};
use crate::sfu::{Member, Sfu};
use crate::sys;

/// Payload bytes of a video packet, and of an Opus frame.
pub const VIDEO_PAYLOAD: usize = 1100;
pub const AUDIO_PAYLOAD: usize = 100;
/// Where the meter block starts in a payload: after the VP8 payload descriptor and the key
/// frame header, which an SFU may read.
pub const BLOCK_OFFSET: usize = 16;
const MAGIC: u32 = 0x554c_4731;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a viewer's join may take, from its start until its first media packet.
pub const JOIN_BOUND: Duration = Duration::from_secs(15);
/// How often clients repeat their consent check (browsers: about every 5 s).
const CONSENT_INTERVAL: Duration = Duration::from_secs(5);

/// A camera-like VP8 stream of about 1.2 Mbit/s and Opus at 50 packets per second. A delta
/// frame is `delta_packets` packets, a key frame `key_packets`. With `pacing`, a frame's
/// packets leave at `pacing` times the stream's average rate, as libwebrtc's pacer sends
/// them (its default factor is 2.5), so a key frame is a burst of about 100 ms; without,
/// each frame leaves back to back.
#[derive(Debug, Clone, Copy)]
pub struct StreamProfile {
    pub fps: u32,
    pub keyframe_every: u32,
    pub delta_packets: u32,
    pub key_packets: u32,
    pub audio_interval: Duration,
    pub pacing: Option<f64>,
}

impl Default for StreamProfile {
    fn default() -> Self {
        // 59 × 4 + 33 packets of 1,100 bytes every 2 s: 1.18 Mbit/s of video.
        Self {
            fps: 30,
            keyframe_every: 60,
            delta_packets: 4,
            key_packets: 33,
            audio_interval: Duration::from_millis(20),
            pacing: Some(2.5),
        }
    }
}

impl StreamProfile {
    /// RTP packets per second of one publisher, audio and video.
    pub fn packets_per_second(&self) -> f64 {
        let frames = f64::from(self.keyframe_every);
        let video = (f64::from(self.delta_packets) * (frames - 1.0) + f64::from(self.key_packets)) / frames
            * f64::from(self.fps);
        video + 1.0 / self.audio_interval.as_secs_f64()
    }

    /// Video packets per second.
    fn video_packets_per_second(&self) -> f64 {
        self.packets_per_second() - 1.0 / self.audio_interval.as_secs_f64()
    }

    /// The gap between two paced video packets.
    fn pacing_interval(&self) -> Option<Duration> {
        self.pacing.map(|factor| Duration::from_secs_f64(1.0 / (factor * self.video_packets_per_second())))
    }
}

/// Which stream of a publisher a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Audio = 0,
    Video = 1,
}

/// What every payload carries at [`BLOCK_OFFSET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterBlock {
    pub publisher: u16,
    pub kind: Kind,
    /// Counts the stream's packets from 0, without wrapping for any run length.
    pub counter: u32,
    /// CLOCK_REALTIME nanoseconds just before the packet was protected and sent.
    pub sent_ns: u64,
}

impl MeterBlock {
    pub const LEN: usize = 20;

    pub fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.publisher.to_be_bytes());
        out[6] = self.kind as u8;
        out[7] = 0;
        out[8..12].copy_from_slice(&self.counter.to_be_bytes());
        out[12..20].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    pub fn read(payload: &[u8]) -> Option<Self> {
        let b = payload.get(BLOCK_OFFSET..BLOCK_OFFSET + Self::LEN)?;
        if b[0..4] != MAGIC.to_be_bytes() {
            return None;
        }
        let kind = match b[6] {
            0 => Kind::Audio,
            1 => Kind::Video,
            _ => return None,
        };
        Some(Self {
            publisher: u16::from_be_bytes([b[4], b[5]]),
            kind,
            counter: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            sent_ns: u64::from_be_bytes([b[12], b[13], b[14], b[15], b[16], b[17], b[18], b[19]]),
        })
    }
}

/// The DTLS stack load clients use, which decides the SRTP profiles they offer.
#[derive(Debug, Clone)]
pub enum ClientDtls {
    /// Ours (dimpl): offers AES-256-GCM, AES-128-GCM and AES-CM, as Chromium does; uprtcd
    /// and Janus both choose AES-256-GCM.
    Browserlike(DtlsIdentity),
    /// rtc-dtls offering only AES-CM-128-HMAC-SHA1-80.
    AesCmOnly(RtcDtlsIdentity),
}

impl ClientDtls {
    pub fn browserlike() -> Result<Self, LoadError> {
        DtlsIdentity::generate(DtlsVersionPolicy::Dtls12Only)
            .map(Self::Browserlike)
            .map_err(|e| LoadError::Setup(format!("a DTLS identity: {e}")))
    }

    pub fn aes_cm_only() -> Result<Self, LoadError> {
        RtcDtlsIdentity::generate().map(Self::AesCmOnly)
    }

    /// The profile the SFUs measured here choose with this client.
    pub fn profile(&self) -> &'static str {
        match self {
            Self::Browserlike(_) => "AES-256-GCM",
            Self::AesCmOnly(_) => "AES-CM-128-HMAC-SHA1-80",
        }
    }

    fn fingerprint(&self) -> CertificateFingerprint {
        match self {
            Self::Browserlike(identity) => identity.fingerprint(),
            Self::AesCmOnly(identity) => identity.fingerprint(),
        }
    }

    fn peer(&self, local: IceCredentials, remote: RemoteEnd) -> Result<ClientPeer, LoadError> {
        match self {
            Self::Browserlike(identity) => {
                Ok(ClientPeer::new(identity, local, remote.ice, remote.fingerprint, Instant::now()))
            }
            Self::AesCmOnly(identity) => {
                aes_cm_client_peer(identity, local, remote.ice, remote.fingerprint, Instant::now())
            }
        }
    }
}

/// One client transport: negotiates through `member`, then connects ICE and DTLS.
#[derive(Debug)]
pub struct Transport {
    ice: IceCredentials,
    socket: UdpSocket,
}

impl Transport {
    pub fn bind(ip: IpAddr) -> Result<Self, LoadError> {
        let ice = IceCredentials::generate().map_err(|e| LoadError::Setup(format!("ICE credentials: {e}")))?;
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(LoadError::io(format!("bind on {ip}")))?;
        Ok(Self { ice, socket })
    }

    /// This transport's end, as its offer or answer describes it.
    pub fn local<'a>(&'a self, identity: &ClientDtls) -> Result<LocalEnd<'a>, LoadError> {
        let candidate = self.socket.local_addr().map_err(LoadError::io("local address"))?;
        Ok(LocalEnd { ice: &self.ice, fingerprint: identity.fingerprint(), candidate })
    }

    /// Publishes Opus as `audio_ssrc` and VP8 as `video_ssrc` through `member`.
    pub fn publish(
        self,
        member: &mut dyn Member,
        identity: &ClientDtls,
        audio_ssrc: u32,
        video_ssrc: u32,
    ) -> Result<UdpPeer, LoadError> {
        let offer = sdp::publisher_offer(&self.local(identity)?, audio_ssrc, video_ssrc);
        let answer = member.publish(&offer)?;
        self.connected(&answer, identity)
    }

    /// Subscribes to everything the room publishes through `member`.
    pub fn subscribe(self, member: &mut dyn Member, identity: &ClientDtls) -> Result<UdpPeer, LoadError> {
        let mut client = self.offered(member, identity)?;
        connect(&mut client, Instant::now() + CONNECT_TIMEOUT, &mut None).map_err(|(_, e)| e)?;
        Ok(client)
    }

    /// Connects through an exchange the caller carries out (WHIP, WHEP): `exchange` is given
    /// this transport's end, sends its offer and returns the SFU's answer.
    pub fn connect_with(
        self,
        identity: &ClientDtls,
        exchange: impl FnOnce(&LocalEnd<'_>) -> Result<String, LoadError>,
    ) -> Result<UdpPeer, LoadError> {
        let answer = exchange(&self.local(identity)?)?;
        self.connected(&answer, identity)
    }

    /// Answers the SFU's offer of everything the room publishes; the client that will
    /// connect to it, not connected yet.
    fn offered(self, member: &mut dyn Member, identity: &ClientDtls) -> Result<UdpPeer, LoadError> {
        let local = self.local(identity)?;
        let offer = member.subscribe(&mut |offer| sdp::subscriber_answer(offer, &local))?;
        self.peer(&offer, identity)
    }

    /// The client for the SFU's description `remote_sdp`, connected.
    fn connected(self, remote_sdp: &str, identity: &ClientDtls) -> Result<UdpPeer, LoadError> {
        let mut client = self.peer(remote_sdp, identity)?;
        connect(&mut client, Instant::now() + CONNECT_TIMEOUT, &mut None).map_err(|(_, e)| e)?;
        Ok(client)
    }

    fn peer(self, remote_sdp: &str, identity: &ClientDtls) -> Result<UdpPeer, LoadError> {
        let remote = RemoteEnd::parse(remote_sdp)?;
        let address = remote.address;
        let peer = identity.peer(self.ice, remote)?;
        UdpPeer::with_socket(peer, self.socket, address).map_err(LoadError::io("client socket"))
    }
}

/// Runs ICE and DTLS on `client` until it is connected or `deadline` passes. `ice_done` gets
/// the moment ICE succeeded: the SFU answered a check, and the client starts DTLS. An error
/// names the stage that did not finish.
fn connect(
    client: &mut UdpPeer,
    deadline: Instant,
    ice_done: &mut Option<Instant>,
) -> Result<(), (JoinStage, LoadError)> {
    let server = client.server();
    // A second handle on the socket sends what the handshake's timers ask for while the
    // client itself is borrowed.
    let socket = client.socket().try_clone().map_err(|e| (JoinStage::Ice, LoadError::io("client socket")(e)))?;
    let mut send = |bytes: &[u8]| {
        // A lost datagram is the network's business: ICE and DTLS retransmit.
        let _ = socket.send_to(bytes, server);
    };
    let stage = |ice_done: &Option<Instant>| if ice_done.is_some() { JoinStage::Dtls } else { JoinStage::Ice };
    let mut buf = vec![0u8; 2048];
    client.peer.start(Instant::now(), &mut send).map_err(|e| (JoinStage::Ice, e.into()))?;
    while !client.peer.is_connected() {
        let now = Instant::now();
        if now >= deadline {
            return Err((stage(ice_done), PeerError::NotConnected.into()));
        }
        let wait = client.peer.poll_timeout().map_or(deadline, |t| t.min(deadline)).saturating_duration_since(now);
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).ok();
        if let Ok((len, from)) = socket.recv_from(&mut buf)
            && from == server
        {
            let answers_check = ice_done.is_none() && is_check_response(&buf[..len]);
            // A stray or damaged datagram is not fatal to a handshake in progress.
            let handled = client.peer.handle_datagram(Instant::now(), server, &mut buf[..len], &mut send);
            if answers_check && handled.is_ok() {
                *ice_done = Some(Instant::now());
            }
        }
        let now = Instant::now();
        if client.peer.poll_timeout().is_none_or(|t| now < t) {
            continue;
        }
        client.peer.handle_timeout(now, &mut send).map_err(|e| (stage(ice_done), e.into()))?;
    }
    Ok(())
}

/// Whether `datagram` is the SFU's answer to one of the client's connectivity checks.
fn is_check_response(datagram: &[u8]) -> bool {
    matches!(classify(datagram), Datagram::Stun) && matches!(classify_server_stun(datagram), Ok(ServerStun::Response))
}

/// Waits until `deadline` for the first RTP packet that `client` decrypts.
fn first_media(client: &mut UdpPeer, deadline: Instant) -> Result<(), LoadError> {
    let mut buf = vec![0u8; 2048];
    let mut undecrypted = 0;
    loop {
        match client.receive(&mut buf, deadline.saturating_duration_since(Instant::now())) {
            Some(Ok(Received::Rtp { .. })) => return Ok(()),
            Some(Ok(_)) => {}
            Some(Err(_)) => undecrypted += 1,
            None => {
                return Err(LoadError::Setup(format!(
                    "no media within {} s of the join's start ({undecrypted} packets did not decrypt)",
                    JOIN_BOUND.as_secs()
                )));
            }
        }
    }
}

/// The stages of a viewer's join, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinStage {
    /// Joining the room: a join token and the control session (uprtcd: REST, the signalling
    /// WebSocket until `joined`).
    Signalling,
    /// Subscribing: the SFU's offer, the client's answer, the SFU's acknowledgement.
    Negotiation,
    /// Connectivity checks until the SFU answers one.
    Ice,
    /// The DTLS handshake until the SRTP keys.
    Dtls,
    /// Until the first RTP packet from the SFU decrypts.
    Media,
}

/// One viewer's join: when each stage ended, in milliseconds from the join's start (`None`
/// for the stages it did not reach), and where it failed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JoinSample {
    /// How long after its scheduled time the join started (all threads were busy).
    pub late_ms: f64,
    pub signalled_ms: Option<f64>,
    pub negotiated_ms: Option<f64>,
    /// The SFU answered a connectivity check.
    pub ice_ms: Option<f64>,
    /// ICE and DTLS done: SRTP keys.
    pub connected_ms: Option<f64>,
    /// The first RTP packet from the SFU decrypted (measured for probes and storms only).
    pub first_media_ms: Option<f64>,
    /// The stage that did not finish within [`JOIN_BOUND`], or failed.
    pub failed: Option<JoinStage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A viewer's join as it ended: its sink whenever it connected, even when it saw no media.
#[derive(Debug)]
pub struct Joined {
    pub sample: JoinSample,
    pub sink: Option<Sink>,
}

/// How viewers join one room: every join signals, subscribes and connects as a browser does,
/// then waits for its first media packet when `first_media` is set; each must be done within
/// [`JOIN_BOUND`] of its start.
#[derive(Clone, Copy)]
pub struct Viewers<'a> {
    pub sfu: &'a dyn Sfu,
    pub room: &'a str,
    pub identity: &'a ClientDtls,
    pub first_media: bool,
}

impl Viewers<'_> {
    /// Joins as `peer`. Failure is an outcome here, not an error: it is in the sample.
    pub fn join(&self, peer: &str) -> Joined {
        let started = Instant::now();
        let mut joined = Joined { sample: JoinSample::default(), sink: None };
        if let Err((stage, e)) = self.stages(peer, started, &mut joined) {
            joined.sample.failed = Some(stage);
            joined.sample.error = Some(e.to_string());
        }
        joined
    }

    fn stages(&self, peer: &str, started: Instant, joined: &mut Joined) -> Result<(), (JoinStage, LoadError)> {
        let deadline = started + JOIN_BOUND;
        let since = |at: Instant| at.saturating_duration_since(started).as_secs_f64() * 1e3;
        // Marks a stage done now; past the deadline the join fails there.
        let done = |stage: JoinStage, at: &mut Option<f64>| {
            let now = Instant::now();
            *at = Some(since(now));
            if now > deadline {
                return Err((stage, LoadError::Setup(format!("not done within {} s", JOIN_BOUND.as_secs()))));
            }
            Ok(())
        };
        let sample = &mut joined.sample;
        let mut member = self.sfu.join(self.room, peer).map_err(|e| (JoinStage::Signalling, e))?;
        done(JoinStage::Signalling, &mut sample.signalled_ms)?;
        let offered = Transport::bind(self.sfu.client_ip()).and_then(|t| t.offered(&mut *member, self.identity));
        let mut client = offered.map_err(|e| (JoinStage::Negotiation, e))?;
        done(JoinStage::Negotiation, &mut sample.negotiated_ms)?;
        let mut ice_done = None;
        let connected = connect(&mut client, deadline, &mut ice_done);
        sample.ice_ms = ice_done.map(since);
        connected?;
        sample.connected_ms = Some(since(Instant::now()));
        // Read before the client becomes a sink, whose socket buffer is too small to wait on.
        let media = if self.first_media {
            first_media(&mut client, deadline).map(|()| sample.first_media_ms = Some(since(Instant::now())))
        } else {
            Ok(())
        };
        joined.sink = Some(Sink::new(client, member).map_err(|e| (JoinStage::Media, e))?);
        media.map_err(|e| (JoinStage::Media, e))
    }
}

impl std::fmt::Debug for Viewers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewers")
            .field("room", &self.room)
            .field("first_media", &self.first_media)
            .finish_non_exhaustive()
    }
}

/// A connected publisher and where its streams stand.
#[derive(Debug)]
pub struct Publisher {
    pub index: u16,
    pub peer: UdpPeer,
    pub audio_ssrc: u32,
    pub video_ssrc: u32,
    sequence: [u16; 2],
    counter: [u32; 2],
    frame: u32,
    /// Video packets waiting for the pacer: RTP timestamp and where in its frame it is.
    queued: VecDeque<(u32, FrameStart)>,
    paced_at: Instant,
}

/// Where a video packet stands in its frame, for its VP8 payload descriptor.
#[derive(Debug, Clone, Copy)]
enum FrameStart {
    Key,
    Delta,
    Continued,
}

impl Publisher {
    pub fn new(index: u16, peer: UdpPeer, audio_ssrc: u32, video_ssrc: u32) -> Self {
        Self {
            index,
            peer,
            audio_ssrc,
            video_ssrc,
            sequence: [0; 2],
            counter: [0; 2],
            frame: index.into(),
            queued: VecDeque::with_capacity(64),
            paced_at: Instant::now(),
        }
    }

    fn send(&mut self, kind: Kind, payload_len: usize, prefix: &[u8], timestamp: u32, buf: &mut [u8]) {
        let (pt, ssrc) = match kind {
            Kind::Audio => (OPUS_PT, self.audio_ssrc),
            Kind::Video => (VP8_PT, self.video_ssrc),
        };
        let k = kind as usize;
        let header = RtpHeader::new(pt, self.sequence[k], timestamp, ssrc).write(buf).expect("a buffer of 2 KiB");
        let payload = &mut buf[header..header + payload_len];
        payload.fill(0x5A);
        payload[..prefix.len()].copy_from_slice(prefix);
        let block = MeterBlock { publisher: self.index, kind, counter: self.counter[k], sent_ns: sys::realtime_ns() };
        block.write(&mut payload[BLOCK_OFFSET..]);
        // A send the kernel refuses is loss the meters count; the run goes on.
        let _ = self.peer.send_rtp(buf, header + payload_len);
        self.sequence[k] = self.sequence[k].wrapping_add(1);
        self.counter[k] += 1;
    }

    /// Queues the packets of the next video frame: the first with a VP8 payload descriptor
    /// that starts the frame (and a key frame header every `keyframe_every`).
    fn queue_frame(&mut self, profile: &StreamProfile) {
        let key = self.frame.is_multiple_of(profile.keyframe_every);
        let packets = if key { profile.key_packets } else { profile.delta_packets };
        let timestamp = self.frame.wrapping_mul(90_000 / profile.fps);
        for i in 0..packets {
            let start = match (i, key) {
                (0, true) => FrameStart::Key,
                (0, false) => FrameStart::Delta,
                _ => FrameStart::Continued,
            };
            self.queued.push_back((timestamp, start));
        }
        self.frame += 1;
    }

    /// Sends the queued video packets that are due: all of them unpaced, else one per
    /// `interval` as a sender's pacer spreads a frame. Returns how many it sent.
    fn send_due(&mut self, now: Instant, interval: Option<Duration>, buf: &mut [u8]) -> u64 {
        let mut sent = 0;
        while let Some(&(timestamp, start)) = self.queued.front() {
            if let Some(interval) = interval {
                if self.paced_at > now {
                    break;
                }
                // After an idle spell the pacer starts from now rather than catching up.
                self.paced_at = self.paced_at.max(now - interval) + interval;
            }
            self.queued.pop_front();
            // S=1 PID=0 descriptor, then the frame tag (show_frame, key or inter) and, for key
            // frames, the start code and a 640×480 size.
            let prefix: &[u8] = match start {
                FrameStart::Key => &[0x10, 0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01],
                FrameStart::Delta => &[0x10, 0x11, 0, 0],
                FrameStart::Continued => &[0x00],
            };
            self.send(Kind::Video, VIDEO_PAYLOAD, prefix, timestamp, buf);
            sent += 1;
        }
        sent
    }

    /// When the next queued video packet is due, if one is queued.
    fn next_due(&self) -> Option<Instant> {
        (!self.queued.is_empty()).then_some(self.paced_at)
    }

    fn send_audio(&mut self, buf: &mut [u8]) {
        let timestamp = self.counter[Kind::Audio as usize].wrapping_mul(960);
        self.send(Kind::Audio, AUDIO_PAYLOAD, &[], timestamp, buf);
    }
}

/// Packets sent by each publisher so far, for the offered load of a measurement window.
#[derive(Debug, Default)]
pub struct SentCounters(pub Vec<AtomicU64>);

impl SentCounters {
    pub fn snapshot(&self) -> Vec<u64> {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// Runs `publishers` on one thread until `stop`: each frame and each audio packet at its
/// time (video through the pacer), the publishers' phases spread over a frame interval so
/// their frames do not coincide. Returns the publishers when stopped.
pub fn spawn_publishers(
    mut publishers: Vec<Publisher>,
    profile: StreamProfile,
    stop: Arc<AtomicBool>,
) -> (Arc<SentCounters>, JoinHandle<Vec<Publisher>>) {
    let sent = Arc::new(SentCounters((0..publishers.len()).map(|_| AtomicU64::new(0)).collect()));
    let counters = Arc::clone(&sent);
    let handle = std::thread::spawn(move || {
        let frame_interval = Duration::from_secs(1) / profile.fps;
        let pacing = profile.pacing_interval();
        let start = Instant::now();
        let count = publishers.len().max(1) as u32;
        let mut next_video: Vec<Instant> =
            (0..publishers.len() as u32).map(|i| start + frame_interval * i / count).collect();
        let mut next_audio: Vec<Instant> =
            (0..publishers.len() as u32).map(|i| start + profile.audio_interval * i / count).collect();
        let mut consent_at = start + CONSENT_INTERVAL;
        let mut buf = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            for (i, publisher) in publishers.iter_mut().enumerate() {
                while next_video[i] <= now {
                    publisher.queue_frame(&profile);
                    next_video[i] += frame_interval;
                }
                let packets = publisher.send_due(now, pacing, &mut buf);
                counters.0[i].fetch_add(packets, Ordering::Relaxed);
                while next_audio[i] <= now {
                    publisher.send_audio(&mut buf);
                    counters.0[i].fetch_add(1, Ordering::Relaxed);
                    next_audio[i] += profile.audio_interval;
                }
            }
            if now >= consent_at {
                for publisher in publishers.iter_mut() {
                    let _ = publisher.peer.refresh_consent();
                }
                consent_at = now + CONSENT_INTERVAL;
            }
            let paced = publishers.iter().filter_map(Publisher::next_due);
            let next = next_video.iter().chain(&next_audio).copied().chain(paced).min().unwrap_or(now + frame_interval);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        publishers
    });
    (sent, handle)
}

/// One stream as a meter saw it in a window.
#[derive(Debug, Clone, Copy)]
struct StreamSeen {
    first: u32,
    highest: u32,
    received: u64,
    reordered: u64,
}

/// What one meter saw in a measurement window.
#[derive(Debug, Default)]
pub struct MeterStats {
    streams: HashMap<(u16, Kind), StreamSeen>,
    /// Kernel receive time minus send time, per packet.
    pub latencies_ns: Vec<u32>,
    pub decrypt_errors: u64,
    /// Packets without a meter block.
    pub foreign: u64,
}

/// Losses and arrivals summed over meters and streams.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivery {
    pub expected: u64,
    pub received: u64,
    pub reordered: u64,
    pub decrypt_errors: u64,
}

impl Delivery {
    pub fn loss(&self) -> f64 {
        if self.expected == 0 { 0.0 } else { 1.0 - self.received.min(self.expected) as f64 / self.expected as f64 }
    }
}

impl MeterStats {
    fn record(&mut self, block: MeterBlock, received_ns: u64) {
        let key = (block.publisher, block.kind);
        let seen = self.streams.entry(key).or_insert(StreamSeen {
            first: block.counter,
            highest: block.counter,
            received: 0,
            reordered: 0,
        });
        if block.counter < seen.highest {
            seen.reordered += 1;
        }
        seen.first = seen.first.min(block.counter);
        seen.highest = seen.highest.max(block.counter);
        seen.received += 1;
        // Latencies past 4 s are clamped: they are loss in all but name.
        let latency = received_ns.saturating_sub(block.sent_ns).min(u64::from(u32::MAX));
        self.latencies_ns.push(latency as u32);
    }

    /// Adds this meter's window to `total`: a stream expects every counter from the first
    /// to the highest it saw.
    pub fn add_to(&self, total: &mut Delivery) {
        for seen in self.streams.values() {
            total.expected += u64::from(seen.highest - seen.first) + 1;
            total.received += seen.received;
            total.reordered += seen.reordered;
        }
        total.decrypt_errors += self.decrypt_errors;
    }
}

/// A meter's thread and what it has seen since the last [`MeterHandle::take`].
#[derive(Debug)]
pub struct MeterHandle {
    stats: Arc<Mutex<MeterStats>>,
    thread: JoinHandle<()>,
}

impl MeterHandle {
    /// What the meter saw since the last call; the next window starts empty.
    pub fn take(&self) -> MeterStats {
        std::mem::take(&mut *self.stats.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Starts a meter on `peer`'s socket: it reads until `stop`, with the kernel's receive
/// timestamps, and repeats its consent check.
pub fn spawn_meter(mut peer: UdpPeer, stop: Arc<AtomicBool>) -> Result<MeterHandle, LoadError> {
    sys::enable_receive_timestamps(peer.socket()).map_err(LoadError::io("SO_TIMESTAMPNS"))?;
    peer.socket().set_read_timeout(Some(Duration::from_millis(100))).map_err(LoadError::io("meter read timeout"))?;
    let stats = Arc::new(Mutex::new(MeterStats::default()));
    let shared = Arc::clone(&stats);
    let thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        let mut consent_at = Instant::now() + CONSENT_INTERVAL;
        let server = peer.server();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= consent_at {
                let _ = peer.refresh_consent();
                consent_at = Instant::now() + CONSENT_INTERVAL;
            }
            let Ok((len, from, received_ns)) = sys::recv_timestamped(peer.socket(), &mut buf) else { continue };
            if from != server {
                continue;
            }
            let outcome = peer.handle_received(&mut buf[..len]);
            let mut stats = shared.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok(Received::Rtp { len }) => {
                    let block = RtpPacket::new_checked(&buf[..len]).ok().and_then(|p| MeterBlock::read(p.payload()));
                    match block {
                        Some(block) => stats.record(block, received_ns),
                        None => stats.foreign += 1,
                    }
                }
                Ok(_) => {}
                Err(_) => stats.decrypt_errors += 1,
            }
        }
    });
    Ok(MeterHandle { stats, thread })
}

/// A subscriber whose packets nobody reads: its socket buffer is the smallest the kernel
/// allows, so what the SFU sends costs the SFU the same and the load generator nothing.
pub struct Sink {
    pub peer: UdpPeer,
    pub member: Box<dyn Member>,
    consent_at: Instant,
}

impl Sink {
    pub fn new(peer: UdpPeer, member: Box<dyn Member>) -> Result<Self, LoadError> {
        socket2::SockRef::from(peer.socket()).set_recv_buffer_size(1).map_err(LoadError::io("sink SO_RCVBUF"))?;
        Ok(Self { peer, member, consent_at: Instant::now() + CONSENT_INTERVAL })
    }
}

/// Keeps sinks and control sessions alive while media flows: consent checks every few
/// seconds, control sessions drained. Scenarios push to it as they connect more.
#[derive(Default)]
pub struct Keeper {
    pub sinks: Mutex<Vec<Sink>>,
    pub members: Mutex<Vec<Box<dyn Member>>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sinks = self.sinks.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("Keeper").field("sinks", &sinks).finish_non_exhaustive()
    }
}

impl Keeper {
    pub fn spawn(self: &Arc<Self>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        let keeper = Arc::clone(self);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                for sink in keeper.sinks.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
                    if now >= sink.consent_at {
                        let _ = sink.peer.refresh_consent();
                        sink.member.tick();
                        sink.consent_at = now + CONSENT_INTERVAL;
                    }
                }
                keeper.members.lock().unwrap_or_else(|e| e.into_inner()).iter_mut().for_each(|m| m.tick());
                // Often, as a client reads its signalling: a host hears of every viewer that
                // joins, hundreds a second while an audience connects.
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_block_round_trips_and_foreign_payloads_are_not_read() {
        let block = MeterBlock { publisher: 7, kind: Kind::Video, counter: 70_000, sent_ns: 1_764_633_600_123_456_789 };
        let mut payload = vec![0x5A; VIDEO_PAYLOAD];
        block.write(&mut payload[BLOCK_OFFSET..]);
        assert_eq!(MeterBlock::read(&payload), Some(block));
        assert_eq!(MeterBlock::read(&[0x5A; VIDEO_PAYLOAD]), None);
        assert_eq!(MeterBlock::read(&payload[..BLOCK_OFFSET + 4]), None);
    }

    #[test]
    fn loss_and_reordering_are_counted_per_stream() {
        let mut stats = MeterStats::default();
        let block = |publisher, counter| MeterBlock { publisher, kind: Kind::Audio, counter, sent_ns: 1_000 };
        for counter in [10, 11, 13, 12, 15] {
            stats.record(block(0, counter), 51_000);
        }
        stats.record(block(1, 5), 2_000);
        let mut total = Delivery::default();
        stats.add_to(&mut total);
        // Stream 0 expects 10..=15 (6) and got 5, one late; stream 1 expects and got 1.
        assert_eq!((total.expected, total.received, total.reordered), (7, 6, 1));
        assert!((total.loss() - 1.0 / 7.0).abs() < 1e-9);
        assert_eq!(stats.latencies_ns[0], 50_000);
    }

    #[test]
    fn the_default_stream_is_about_185_packets_per_second() {
        let pps = StreamProfile::default().packets_per_second();
        assert!((pps - 184.5).abs() < 0.1, "{pps}");
    }
}
