//! The raw UDP baseline: how many datagrams of an SFU's sizes one core pushes through the
//! kernel with plain UDP and no media code at all, so that an SFU's throughput can be stated
//! as a fraction of the machine's limit.
//!
//! [`measure`] owns everything a run uses: the sink sockets, one sender socket and the sender
//! thread, all gone when it returns. Runs are bounded by the duration the caller gives. Sinks
//! are made by [`bind_sink`], the sink the SFU benchmarks use too, so the kernel's receive
//! side costs the same in both: a receive buffer as small as the kernel allows, never read,
//! so nearly every datagram is dropped at the socket after the kernel has done all the work
//! of delivering it.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{SockAddr, SockRef};

use crate::LoadError;
use crate::sys;

/// Messages per `sendmmsg` call in [`RawMode::Sendmmsg`].
pub const BATCH: usize = sys::MAX_BATCH;
/// Datagrams per GSO send in [`RawMode::Gso`], fewer when they would not fit one UDP payload.
pub const SEGMENTS: usize = 16;
/// The largest UDP payload over IPv4: what one GSO send may carry in all.
const MAX_UDP_PAYLOAD: usize = 65_507;
/// Send buffer of the sender socket (the kernel caps it at `net.core.wmem_max`), so that the
/// sender rarely waits for the kernel to free the datagrams of a previous call.
const SEND_BUFFER_BYTES: usize = 4 << 20;

/// How the sender hands datagrams to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RawMode {
    /// `sendmmsg` with [`BATCH`] messages, each to the next destination in turn: the system
    /// call an SFU's fan-out makes.
    Sendmmsg,
    /// `sendmsg` with `UDP_SEGMENT`: [`SEGMENTS`] datagrams to one destination per call, the
    /// destinations in turn. The kernel builds the datagrams, so this is the cheapest a
    /// datagram gets.
    Gso,
}

/// One run of [`measure`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RawResult {
    pub mode: RawMode,
    /// UDP payload bytes of every datagram.
    pub packet_bytes: usize,
    /// Sink sockets the datagrams went to, in turn.
    pub destinations: usize,
    /// Datagrams per system call: messages per `sendmmsg`, or segments per GSO send.
    pub batch: usize,
    /// Datagrams the kernel took (each GSO segment counts as one).
    pub packets: u64,
    /// Wall time the sender sent for.
    pub seconds: f64,
    /// CPU time of the sender thread by the kernel's accounting.
    pub cpu_seconds: f64,
    pub packets_per_second: f64,
    /// `packets / cpu_seconds`: the datagrams one fully busy core would send.
    pub packets_per_core_second: f64,
    /// Growth of the kernel's UDP `RcvbufErrors` counter over the run: every datagram beyond
    /// what the sinks' tiny buffers hold. The counter is the whole network namespace's, so
    /// other UDP traffic dropped meanwhile counts too.
    pub receiver_drops: u64,
}

/// Binds a sink on `ip` (ephemeral port): a receive buffer as small as the kernel allows,
/// never to be read. Keep it alive as long as datagrams are sent to it; once closed, the
/// kernel answers with ICMP port unreachable instead, a different cost.
pub fn bind_sink(ip: IpAddr) -> Result<UdpSocket, LoadError> {
    let socket = UdpSocket::bind((ip, 0)).map_err(LoadError::io("binding a sink socket"))?;
    // The kernel raises a request of 0 to its minimum.
    SockRef::from(&socket).set_recv_buffer_size(0).map_err(LoadError::io("shrinking a sink's receive buffer"))?;
    Ok(socket)
}

/// Sends datagrams of `packet_bytes` to `destinations` fresh sinks on `ip` for `duration`
/// from one thread, pinned to `core` when given, and reports the rate.
pub fn measure(
    mode: RawMode,
    packet_bytes: usize,
    destinations: usize,
    ip: IpAddr,
    duration: Duration,
    core: Option<usize>,
) -> Result<RawResult, LoadError> {
    if destinations == 0 {
        return Err(LoadError::Setup("the raw baseline needs at least one destination".into()));
    }
    // Any core of the machine, not only those of the caller's affinity: the load
    // generator keeps itself off the core it measures on.
    let core = core.map(|id| core_affinity::CoreId { id });
    let sinks = (0..destinations).map(|_| bind_sink(ip)).collect::<Result<Vec<_>, _>>()?;
    let addresses = sinks
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<Result<Vec<_>, _>>()
        .map_err(LoadError::io("reading a sink's address"))?;
    let mut sender = Sender::new(mode, packet_bytes, &addresses, ip)?;
    let batch = sender.per_call;
    let drops_before = rcvbuf_errors(ip)?;
    let run = thread::Builder::new()
        .name("raw-sender".into())
        .spawn(move || {
            if let Some(core) = core
                && !core_affinity::set_for_current(core)
            {
                return Err(LoadError::Setup(format!("cannot pin the raw sender to core {}", core.id)));
            }
            sender.run(duration)
        })
        .map_err(LoadError::io("starting the raw sender thread"))?
        .join()
        .map_err(|_| LoadError::Setup("the raw sender thread panicked".into()))??;
    let receiver_drops = rcvbuf_errors(ip)?.saturating_sub(drops_before);
    drop(sinks);
    Ok(RawResult {
        mode,
        packet_bytes,
        destinations,
        batch,
        packets: run.packets,
        seconds: run.seconds,
        cpu_seconds: run.cpu_seconds,
        packets_per_second: run.packets as f64 / run.seconds,
        packets_per_core_second: run.packets as f64 / run.cpu_seconds,
        receiver_drops,
    })
}

/// What the sender thread measured.
struct Run {
    packets: u64,
    seconds: f64,
    cpu_seconds: f64,
}

/// One socket sending one payload round robin over its destinations, one system call per
/// [`Sender::send_batch`]. Everything is prepared up front, so a call does no work but the
/// system call.
struct Sender {
    socket: UdpSocket,
    mode: RawMode,
    packet_bytes: usize,
    /// Datagrams per system call.
    per_call: usize,
    /// One datagram for `sendmmsg`; `per_call` datagrams back to back for GSO.
    payload: Vec<u8>,
    /// The destinations, followed for `sendmmsg` by the first `BATCH - 1` of them again
    /// (cycled), so that the batch starting at any destination is one contiguous slice.
    ring: Vec<SockAddr>,
    destinations: usize,
    /// The destination the next call starts at.
    next: usize,
}

impl Sender {
    fn new(mode: RawMode, packet_bytes: usize, destinations: &[SocketAddr], ip: IpAddr) -> Result<Self, LoadError> {
        if packet_bytes == 0 || packet_bytes > MAX_UDP_PAYLOAD {
            return Err(LoadError::Setup(format!("no UDP datagram carries {packet_bytes} payload bytes")));
        }
        let per_call = match mode {
            RawMode::Sendmmsg => BATCH,
            RawMode::Gso => SEGMENTS.min(MAX_UDP_PAYLOAD / packet_bytes),
        };
        let payload_bytes = match mode {
            RawMode::Sendmmsg => packet_bytes,
            RawMode::Gso => per_call * packet_bytes,
        };
        // A pattern rather than zeros, so a test can tell the segments of one GSO send apart.
        let payload = (0..payload_bytes).map(|i| (i % 251) as u8).collect();
        let cycled = match mode {
            RawMode::Sendmmsg => destinations.len() + BATCH - 1,
            RawMode::Gso => destinations.len(),
        };
        let ring = destinations.iter().cycle().take(cycled).map(|&address| SockAddr::from(address)).collect();
        let socket = UdpSocket::bind((ip, 0)).map_err(LoadError::io("binding the raw sender socket"))?;
        SockRef::from(&socket)
            .set_send_buffer_size(SEND_BUFFER_BYTES)
            .map_err(LoadError::io("sizing the raw sender's send buffer"))?;
        Ok(Self { socket, mode, packet_bytes, per_call, payload, ring, destinations: destinations.len(), next: 0 })
    }

    /// Makes one system call; returns the datagrams the kernel took.
    fn send_batch(&mut self) -> Result<u64, LoadError> {
        match self.mode {
            RawMode::Sendmmsg => {
                let batch = &self.ring[self.next..self.next + BATCH];
                let sent = sys::send_to_each(&self.socket, &self.payload, batch).map_err(LoadError::io("sendmmsg"))?;
                self.next = (self.next + sent) % self.destinations;
                Ok(sent as u64)
            }
            RawMode::Gso => {
                // The payload is at most MAX_UDP_PAYLOAD bytes, so one segment fits a u16.
                let segment = self.packet_bytes as u16;
                let sent = sys::send_segmented(&self.socket, &self.payload, segment, &self.ring[self.next]).map_err(
                    |error| match error.raw_os_error() {
                        Some(libc::EIO | libc::EINVAL) => {
                            LoadError::Setup(format!("UDP GSO (UDP_SEGMENT) is unavailable here: {error}"))
                        }
                        _ => LoadError::Io { what: "sending a GSO message".into(), source: error },
                    },
                )?;
                self.next = (self.next + 1) % self.destinations;
                Ok(sent.div_ceil(self.packet_bytes) as u64)
            }
        }
    }

    /// Sends until `duration` has passed; call it on the thread being measured.
    fn run(&mut self, duration: Duration) -> Result<Run, LoadError> {
        let cpu_start = sys::thread_cpu_ns();
        let start = Instant::now();
        let mut packets = 0;
        loop {
            packets += self.send_batch()?;
            let elapsed = start.elapsed();
            if elapsed >= duration {
                let cpu_ns = sys::thread_cpu_ns() - cpu_start;
                return Ok(Run { packets, seconds: elapsed.as_secs_f64(), cpu_seconds: cpu_ns as f64 / 1e9 });
            }
        }
    }
}

/// The kernel's count of UDP datagrams dropped because a socket's receive buffer was full
/// (`RcvbufErrors`, per IP version).
fn rcvbuf_errors(ip: IpAddr) -> Result<u64, LoadError> {
    let (path, prefix) = if ip.is_ipv4() { ("/proc/net/snmp", "Udp:") } else { ("/proc/net/snmp6", "Udp6") };
    let text = std::fs::read_to_string(path).map_err(LoadError::io(format!("reading {path}")))?;
    let missing = || LoadError::Setup(format!("{path} has no UDP RcvbufErrors counter"));
    if ip.is_ipv6() {
        // snmp6 has one `Udp6RcvbufErrors <count>` line.
        let line = text.lines().find(|line| line.starts_with("Udp6RcvbufErrors")).ok_or_else(missing)?;
        return line.split_whitespace().nth(1).and_then(|count| count.parse().ok()).ok_or_else(missing);
    }
    // snmp has a `Udp:` line of names followed by a `Udp:` line of counts.
    let mut lines = text.lines().filter(|line| line.starts_with(prefix));
    let (names, counts) = lines.next().zip(lines.next()).ok_or_else(missing)?;
    let column = names.split_whitespace().position(|name| name == "RcvbufErrors").ok_or_else(missing)?;
    counts.split_whitespace().nth(column).and_then(|count| count.parse().ok()).ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::net::Ipv4Addr;

    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const PACKET_BYTES: usize = 1128;

    /// A socket the test reads, with room for every datagram of a call.
    fn receiver() -> UdpSocket {
        let socket = UdpSocket::bind((LOOPBACK, 0)).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        socket
    }

    /// Every datagram waiting on `socket`, waiting up to a second for the first.
    fn drain(socket: &UdpSocket) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 65_536];
        let first = socket.recv(&mut buf).expect("a datagram within a second");
        let mut datagrams = vec![buf[..first].to_vec()];
        socket.set_nonblocking(true).unwrap();
        loop {
            match socket.recv(&mut buf) {
                Ok(len) => datagrams.push(buf[..len].to_vec()),
                Err(error) if error.kind() == ErrorKind::WouldBlock => return datagrams,
                Err(error) => panic!("receiving: {error}"),
            }
        }
    }

    #[test]
    fn sendmmsg_sends_datagrams_of_the_size_round_robin() {
        let receivers = [receiver(), receiver()];
        let addresses: Vec<_> = receivers.iter().map(|socket| socket.local_addr().unwrap()).collect();
        let mut sender = Sender::new(RawMode::Sendmmsg, PACKET_BYTES, &addresses, LOOPBACK).unwrap();
        assert_eq!(sender.send_batch().unwrap(), BATCH as u64);
        for socket in &receivers {
            let datagrams = drain(socket);
            assert!(datagrams.iter().all(|datagram| datagram.len() == PACKET_BYTES));
        }
    }

    #[test]
    fn gso_sends_segments_of_the_size_to_one_destination() {
        let receivers = [receiver(), receiver()];
        let addresses: Vec<_> = receivers.iter().map(|socket| socket.local_addr().unwrap()).collect();
        let mut sender = Sender::new(RawMode::Gso, PACKET_BYTES, &addresses, LOOPBACK).unwrap();
        match sender.send_batch() {
            Ok(packets) => assert_eq!(packets, SEGMENTS as u64),
            Err(LoadError::Setup(why)) => return eprintln!("skipped: {why}"),
            Err(error) => panic!("{error}"),
        }
        let datagrams = drain(&receivers[0]);
        assert!(datagrams.iter().all(|datagram| datagram.len() == PACKET_BYTES));
        assert_eq!(datagrams[0], sender.payload[..PACKET_BYTES], "the first segment starts the payload");
        receivers[1].set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(receivers[1].recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    }

    #[test]
    fn measure_counts_packets_of_each_mode() {
        for mode in [RawMode::Sendmmsg, RawMode::Gso] {
            let result = match measure(mode, PACKET_BYTES, 3, LOOPBACK, Duration::from_millis(50), None) {
                Ok(result) => result,
                Err(LoadError::Setup(why)) if mode == RawMode::Gso => return eprintln!("skipped: {why}"),
                Err(error) => panic!("{mode:?}: {error}"),
            };
            assert!(result.packets > 0, "{result:?}");
            assert!(result.cpu_seconds > 0.0 && result.packets_per_core_second > 0.0, "{result:?}");
        }
    }

    #[test]
    fn sizes_no_datagram_carries_are_refused() {
        for packet_bytes in [0, MAX_UDP_PAYLOAD + 1] {
            assert!(matches!(
                measure(RawMode::Sendmmsg, packet_bytes, 1, LOOPBACK, Duration::ZERO, None),
                Err(LoadError::Setup(_))
            ));
        }
    }

    #[test]
    fn the_rcvbuf_errors_counter_is_found() {
        rcvbuf_errors(LOOPBACK).unwrap();
    }
}
