//! Strangers, bounded: connections to the API and client listeners that never finish a
//! request, unauthenticated ICE-TCP connections to the media port, junk datagrams to it
//! from changing source ports, and bursts of `POST /demo/join`. Each holds at most its cap at
//! once and starts at most a few things a second; what the server closed by itself is
//! counted beside what was opened.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Count, Rng, Soak, sleep_until};
use crate::LoadError;

/// How often a flood opens more connections and looks at those it holds.
const TURN: Duration = Duration::from_secs(1);
/// Connections opened a turn, at most.
const OPENS_PER_TURN: usize = 4;
/// Longer than the server's header-read timeout (10 s) and ICE-TCP deadline (5 s): a
/// connection still open by then is closed by the client, and counted as not closed by the
/// server.
const HOLD_AT_MOST: Duration = Duration::from_secs(30);
/// How long a source port sprays junk before the next one takes over.
const SOURCE_LIFE: Duration = Duration::from_secs(10);
/// How long a demo member stays in its room.
const DEMO_STAY: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(5));

/// A connection the flood holds open.
#[derive(Debug)]
struct Held {
    stream: TcpStream,
    since: Instant,
}

/// What the server did with a held connection, as seen without waiting.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An error response before the close: read on.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

impl Soak<'_> {
    /// Holds connections to `targets` (in turn) that send `first(rng)` and then nothing: at
    /// most `cap` at once. Counts each as `opened`, then as `closed` when the server closed
    /// it, or as `outlived` when it was still open after [`HOLD_AT_MOST`].
    fn hold_connections(
        &self,
        targets: &[SocketAddr],
        cap: usize,
        (opened, closed, outlived): (Count, Count, Count),
        rng: &mut Rng,
        until: Instant,
        first: impl Fn(&mut Rng) -> Vec<u8>,
    ) {
        let mut held: Vec<Held> = Vec::with_capacity(cap);
        let mut next_target = 0;
        loop {
            let now = Instant::now();
            held.retain_mut(|h| {
                if closed_by_server(&mut h.stream) {
                    self.tally.one(closed);
                    return false;
                }
                let keep = now.duration_since(h.since) < HOLD_AT_MOST;
                if !keep {
                    self.tally.one(outlived);
                }
                keep
            });
            if !self.running(until) {
                if held.is_empty() {
                    return;
                }
            } else {
                for _ in 0..OPENS_PER_TURN.min(cap - held.len()) {
                    let target = targets[next_target % targets.len()];
                    next_target += 1;
                    match self.open_held(target, &first(rng)) {
                        Ok(stream) => {
                            self.tally.one(opened);
                            held.push(Held { stream, since: now });
                        }
                        Err(e) => self.tally.fail(opened.name(), &e),
                    }
                }
            }
            std::thread::sleep(TURN);
        }
    }

    fn open_held(&self, target: SocketAddr, first: &[u8]) -> Result<TcpStream, LoadError> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .map_err(LoadError::io(format!("connect {target}")))?;
        if !first.is_empty() {
            // The server may already have closed an over-limit connection: that is its answer.
            let _ = stream.write_all(first);
        }
        stream.set_nonblocking(true).map_err(LoadError::io("nonblocking"))?;
        Ok(stream)
    }

    /// Connections to the API and client listeners that send nothing, or half a request head.
    pub fn idle_http(&self, seed: u64, until: Instant) {
        let mut rng = Rng::new(seed, 300);
        let targets: Vec<SocketAddr> =
            [self.server.api_address(), self.server.client_address()].iter().filter_map(|a| a.parse().ok()).collect();
        let counts = (Count::IdleHttp, Count::IdleHttpClosed, Count::IdleHttpOutlived);
        self.hold_connections(&targets, self.plan.idle_http, counts, &mut rng, until, |rng| {
            if rng.chance(50) { Vec::new() } else { b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec() }
        });
    }

    /// ICE-TCP connections that never pass an ICE check: silent, junk, or a framed STUN
    /// request for credentials the server never gave.
    pub fn ice_tcp(&self, seed: u64, until: Instant) {
        let mut rng = Rng::new(seed, 400);
        let counts = (Count::IceTcp, Count::IceTcpClosed, Count::IceTcpOutlived);
        self.hold_connections(&[self.media], self.plan.ice_tcp, counts, &mut rng, until, |rng| match rng.below(3) {
            0 => Vec::new(),
            1 => junk(rng),
            _ => {
                let stun = stun_request(rng);
                let mut framed = (stun.len() as u16).to_be_bytes().to_vec();
                framed.extend(stun);
                framed
            }
        });
    }

    /// Junk datagrams to the media port: STUN for unknown credentials, DTLS-, RTP-looking
    /// and random bytes, from a new source port every few seconds.
    pub fn udp_junk(&self, seed: u64, until: Instant) {
        let mut rng = Rng::new(seed, 500);
        let per_tick = (self.plan.udp_per_second / 10).max(1);
        let mut source: Option<(UdpSocket, Instant)> = None;
        while self.running(until) {
            if source.as_ref().is_none_or(|(_, since)| since.elapsed() >= SOURCE_LIFE) {
                source = match UdpSocket::bind(SocketAddr::new(self.client_ip(), 0)) {
                    Ok(socket) => Some((socket, Instant::now())),
                    Err(e) => {
                        self.tally.fail("udp junk", &LoadError::io("bind")(e));
                        None
                    }
                };
            }
            if let Some((socket, _)) = &source {
                for _ in 0..per_tick {
                    let mut datagram = junk(&mut rng);
                    match rng.below(4) {
                        0 => datagram = stun_request(&mut rng),
                        1 => datagram[0] = 22,
                        2 => datagram[0] = 0x80,
                        _ => {}
                    }
                    if socket.send_to(&datagram, self.media).is_ok() {
                        self.tally.one(Count::UdpJunk);
                    }
                }
            }
            sleep_until(until, Duration::from_millis(100));
        }
    }

    /// Bursts of `POST /demo/join`, each creating a demo room; the server paces them per
    /// address, so most of a burst is refused. A third of those admitted join their room over
    /// signalling for a few seconds.
    pub fn demo(&self, seed: u64, until: Instant) {
        let mut rng = Rng::new(seed, 600);
        let mut serial = 0;
        while self.running(until) {
            for _ in 0..self.plan.demo_burst {
                serial += 1;
                let peer = format!("d-{serial}");
                if let Err(e) = self.demo_join(&peer, &mut rng) {
                    self.tally.fail("demo", &e);
                }
            }
            sleep_until(until, self.plan.demo_every);
        }
    }

    fn demo_join(&self, peer: &str, rng: &mut Rng) -> Result<(), LoadError> {
        let body = json!({ "peer": peer }).to_string();
        let (status, _, text) =
            self.client_request("POST", "/demo/join", &[("content-type", "application/json")], &body)?;
        if status != 200 {
            self.tally.one(Count::DemoRefused);
            return Ok(());
        }
        self.tally.one(Count::DemoJoins);
        if !rng.chance(33) {
            return Ok(());
        }
        let joined: Value = serde_json::from_str(&text)
            .map_err(|e| LoadError::Http { what: "POST /demo/join".into(), detail: format!("{e}: {text}") })?;
        let code = joined["invitationCode"].as_u64().unwrap_or_default();
        let token = joined["token"].as_str().unwrap_or_default();
        let mut signalling = self.server.connect_with_token(code, peer, token)?;
        self.tally.one(Count::DemoSessions);
        std::thread::sleep(rng.between(DEMO_STAY));
        signalling.drain(|_| {});
        if rng.chance(50) {
            return signalling.leave();
        }
        drop(signalling);
        Ok(())
    }
}

/// 1 to 1,200 random bytes.
fn junk(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = vec![0u8; 1 + rng.below(1200) as usize];
    rng.fill(&mut bytes);
    bytes
}

/// A STUN binding request (RFC 8489) whose USERNAME names credentials nobody was given.
fn stun_request(rng: &mut Rng) -> Vec<u8> {
    const USERNAME: &[u8] = b"soak:junk"; // 9 bytes, padded to 12
    let mut message = Vec::with_capacity(36);
    message.extend(0x0001u16.to_be_bytes());
    message.extend(16u16.to_be_bytes());
    message.extend(0x2112_A442u32.to_be_bytes());
    let mut transaction = [0u8; 12];
    rng.fill(&mut transaction);
    message.extend(transaction);
    message.extend(0x0006u16.to_be_bytes());
    message.extend((USERNAME.len() as u16).to_be_bytes());
    message.extend(USERNAME);
    message.extend([0u8; 3]);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_junk_stun_request_is_well_formed() {
        let message = stun_request(&mut Rng::new(1, 2));
        assert_eq!(message.len(), 20 + 16);
        assert_eq!(u16::from_be_bytes([message[2], message[3]]) as usize, message.len() - 20);
        assert_eq!(&message[4..8], &0x2112_A442u32.to_be_bytes());
    }
}
