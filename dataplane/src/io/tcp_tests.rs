//! The TCP side of [`Io`] on both backends, against plain blocking clients on loopback:
//! frames both ways, bad frames, a slow reader, the connection limits, peers that leave,
//! connections no ICE check claimed by their deadline (in virtual time: the deadline is
//! whatever instant the test passes).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::wire::framing::{FrameReader, MAX_FRAME_LEN, PREFIX_LEN, encode};

const WAIT: Duration = Duration::from_secs(10);

fn tcp_io(choice: BackendChoice, config: TcpConfig) -> (Io, SocketAddr) {
    // Drawn as a worker draws them: an ephemeral UDP port whose TCP twin is free too.
    let (udp, listener) = crate::worker::bind_media("127.0.0.1:0".parse().unwrap()).unwrap();
    let wake = Arc::new(EventFd::new().unwrap());
    let io = Io::new(vec![udp], Some(listener), config, wake, choice).unwrap();
    let tcp = io.tcp_local_addr().unwrap();
    assert_eq!(tcp, io.local_addr(SocketIndex(0)).unwrap(), "TCP listens on the UDP socket's port");
    (io, tcp)
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0; PREFIX_LEN + packet.len()];
    encode(packet, &mut out).unwrap();
    out
}

/// Polls `io` until `done` says so or the wait runs out, ignoring what arrives.
fn poll_until(io: &mut Io, mut done: impl FnMut(&Io) -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done(io) {
            return true;
        }
        io.poll(Some(Duration::from_millis(10)), 256, |_, _, _, _| {}).unwrap();
    }
    done(io)
}

/// Reads frames from `stream` until `count` came or the stream ends.
fn read_frames(stream: &mut TcpStream, count: usize) -> Vec<Vec<u8>> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = FrameReader::new(1 << 16, MAX_FRAME_LEN);
    let mut frames = Vec::new();
    while frames.len() < count {
        while let Some(frame) = reader.next_frame().unwrap() {
            frames.push(frame.to_vec());
        }
        if frames.len() >= count {
            break;
        }
        match stream.read(reader.spare()) {
            Ok(0) | Err(_) => break,
            Ok(n) => reader.filled(n),
        }
    }
    frames
}

/// Polls `io` until a read on `stream` sees the server's close (its end or a reset).
fn closed_by_server(io: &mut Io, stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    poll_until(io, |_| match stream.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        Ok(_) => false,
    })
}

/// Frames from a client reach the callback whole, in order, from the client's address; what
/// the callback queues back to that address goes out framed on the connection.
fn frames_echo(choice: BackendChoice) {
    let (mut io, server) = tcp_io(choice, TcpConfig::default());
    let mut client = TcpStream::connect(server).unwrap();
    let me = client.local_addr().unwrap();
    let packets: Vec<Vec<u8>> = (0..200u16).map(|i| vec![i as u8; 1 + usize::from(i) * 10]).collect();
    let stream: Vec<u8> = packets.iter().flat_map(|p| framed(p)).collect();
    client.write_all(&stream).unwrap();
    let mut queue = SendQueue::new(1);
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < packets.len() && Instant::now() < deadline {
        let outcome = io
            .poll(Some(Duration::from_millis(10)), 256, |socket, source, bytes, tx| {
                assert_eq!(socket, SocketIndex::TCP);
                assert_eq!(source, me);
                seen.push(bytes.to_vec());
                assert!(queue.push(SocketIndex(0), source, bytes));
                assert_eq!(tx.flush(&mut queue).unwrap(), FlushOutcome { sent: 1, dropped: 0 });
            })
            .unwrap();
        assert!(outcome.received <= packets.len());
    }
    assert_eq!(seen, packets);
    assert_eq!(io.tcp_connections(), 1);
    assert_eq!(read_frames(&mut client, packets.len()), packets, "echoed on the connection, not over UDP");
    assert_eq!(io.take_tcp_counters(), TcpCounters::default());

    // The peer leaves: its connection is closed and forgotten, and its address is UDP's again.
    drop(client);
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 0));
}

/// A zero-length frame and one over a slot each close their own connection only.
fn bad_frames_close_their_connection(choice: BackendChoice) {
    let (mut io, server) = tcp_io(choice, TcpConfig::default());
    let mut good = TcpStream::connect(server).unwrap();
    let mut empty = TcpStream::connect(server).unwrap();
    let mut oversized = TcpStream::connect(server).unwrap();
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 3));
    empty.write_all(&[0, 0, 1, 2, 3]).unwrap();
    let too_long = u16::try_from(SLOT_SIZE + 1).unwrap().to_be_bytes();
    oversized.write_all(&[&too_long[..], &[0; 64][..]].concat()).unwrap();
    assert!(closed_by_server(&mut io, &mut empty));
    assert!(closed_by_server(&mut io, &mut oversized));
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 1));
    assert_eq!(io.take_tcp_counters(), TcpCounters { bad_frames: 2, ..TcpCounters::default() });

    let me = good.local_addr().unwrap();
    good.write_all(&framed(&[0x80; SLOT_SIZE])).unwrap();
    let mut got = None;
    let deadline = Instant::now() + WAIT;
    while got.is_none() && Instant::now() < deadline {
        io.poll(Some(Duration::from_millis(10)), 256, |_, source, bytes, _| got = Some((source, bytes.len()))).unwrap();
    }
    assert_eq!(got, Some((me, SLOT_SIZE)), "a frame of exactly a slot is fine");
    good.shutdown(Shutdown::Both).unwrap();
}

/// A poll whose budget is spent leaves the other ready connections for the next one.
fn a_spent_budget_leaves_connections_for_the_next_turn(choice: BackendChoice) {
    let (mut io, server) = tcp_io(choice, TcpConfig::default());
    let mut clients = [TcpStream::connect(server).unwrap(), TcpStream::connect(server).unwrap()];
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 2));
    for client in &mut clients {
        let three: Vec<u8> = (1..=3u8).flat_map(|i| framed(&[i; 10])).collect();
        client.write_all(&three).unwrap();
    }
    // Both streams' bytes are in the kernel before the poll: loopback delivers at once.
    std::thread::sleep(Duration::from_millis(50));
    let mut sources = Vec::new();
    let outcome = io.poll(Some(WAIT), 1, |_, source, _, _| sources.push(source)).unwrap();
    assert_eq!(outcome.received, 3, "one read, whole, then the budget is spent");
    let deadline = Instant::now() + WAIT;
    while sources.len() < 6 && Instant::now() < deadline {
        io.poll(Some(Duration::from_millis(10)), 1, |_, source, _, _| sources.push(source)).unwrap();
    }
    let mut by_client: Vec<usize> =
        clients.iter().map(|c| sources.iter().filter(|&&s| s == c.local_addr().unwrap()).count()).collect();
    by_client.sort_unstable();
    assert_eq!(by_client, [3, 3], "the other connection was read on a later turn");
}

/// A client that does not read: the kernel's buffers fill, then the connection's writer,
/// then packets are dropped and counted. Once the client reads, the writer drains as the
/// socket turns writable, and every packet that was not dropped arrives whole, in order.
fn slow_reader_backpressure(choice: BackendChoice) {
    let (mut io, server) = tcp_io(choice, TcpConfig::default());
    let mut client = TcpStream::connect(server).unwrap();
    let me = client.local_addr().unwrap();
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 1));
    let mut queue = SendQueue::new(64);
    let mut accepted = 0;
    let mut sequence = 0u32;
    // Enough to overfill the loopback socket buffers (a few MB each way) and the writer.
    while sequence < 30_000 {
        let mut packet = [0x5A; 1400];
        packet[..4].copy_from_slice(&sequence.to_be_bytes());
        assert!(queue.push(SocketIndex(0), me, &packet));
        sequence += 1;
        if queue.is_full() {
            let outcome = io.flush(&mut queue).unwrap();
            assert_eq!(outcome.dropped, 0, "nothing went to UDP");
            accepted += outcome.sent;
        }
    }
    accepted += io.flush(&mut queue).unwrap().sent;
    let dropped = io.take_tcp_counters().write_drops;
    assert!(dropped > 0, "the writer filled");
    assert_eq!(accepted as u64 + dropped, u64::from(sequence));

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let frames = read_frames(&mut client, accepted);
            done.store(true, Ordering::Release);
            frames
        })
    };
    assert!(poll_until(&mut io, |_| done.load(Ordering::Acquire)));
    let frames = reader.join().unwrap();
    assert_eq!(frames.len(), accepted, "every accepted packet arrived");
    let numbers: Vec<u32> = frames
        .iter()
        .map(|f| {
            assert_eq!(f.len(), 1400);
            assert!(f[4..].iter().all(|&b| b == 0x5A));
            u32::from_be_bytes([f[0], f[1], f[2], f[3]])
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(numbers.first(), Some(&0), "the first packets were not the ones dropped");
}

/// Past the limit a connection is accepted and closed at once; the others stay.
fn connections_past_the_limit_are_refused(choice: BackendChoice) {
    let (mut io, server) = tcp_io(choice, TcpConfig { max_connections: 2, ..TcpConfig::default() });
    let first = TcpStream::connect(server).unwrap();
    let second = TcpStream::connect(server).unwrap();
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 2));
    let mut third = TcpStream::connect(server).unwrap();
    assert!(closed_by_server(&mut io, &mut third));
    assert_eq!(io.tcp_connections(), 2);
    assert_eq!(io.take_tcp_counters(), TcpCounters { over_limit: 1, ..TcpCounters::default() });
    drop((first, second));
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 0));
}

/// A client connection to `server` from `ip` (any of 127.0.0.0/8 is on loopback).
fn connect_from(ip: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(IpAddr::V4(ip), 0).into()).unwrap();
    socket.connect(&server.into()).unwrap();
    socket.into()
}

/// Whether `stream` is still open: no end, no reset, nothing received.
fn still_open(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let open = matches!(stream.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

/// Connections get their deadline from the first expiry pass after their accept. At the
/// deadline, those whose peer the engine did not validate are closed and counted, whether
/// they sent nothing or garbage; the validated one stays, carries frames, and is never
/// asked about again.
fn unclaimed_connections_close_at_their_deadline(choice: BackendChoice) {
    let timeout = Duration::from_secs(5);
    let (mut io, server) = tcp_io(choice, TcpConfig { auth_timeout: timeout, ..TcpConfig::default() });
    let mut silent = TcpStream::connect(server).unwrap();
    let mut garbage = TcpStream::connect(server).unwrap();
    let mut claimed = TcpStream::connect(server).unwrap();
    let claimed_addr = claimed.local_addr().unwrap();
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 3));
    assert_eq!(io.next_tcp_deadline(), None, "no deadline before the first expiry pass");
    let accepted = Instant::now();
    io.expire_unclaimed_tcp(accepted, |_| panic!("nothing is due yet"));
    assert_eq!(io.next_tcp_deadline(), Some(accepted + timeout));
    garbage.write_all(&framed(&[0xFF; 40])).unwrap();
    let mut asked = Vec::new();
    io.expire_unclaimed_tcp(accepted + timeout - Duration::from_millis(1), |addr| {
        asked.push(addr);
        true
    });
    assert!(asked.is_empty(), "asked before the deadline: {asked:?}");
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 3));

    io.expire_unclaimed_tcp(accepted + timeout, |addr| {
        asked.push(addr);
        addr == claimed_addr
    });
    assert_eq!(asked.len(), 3, "each connection is asked about once, at its deadline");
    assert_eq!(io.tcp_connections(), 1);
    assert_eq!(io.next_tcp_deadline(), None);
    assert!(closed_by_server(&mut io, &mut silent));
    assert!(closed_by_server(&mut io, &mut garbage));
    assert!(still_open(&mut claimed));
    assert_eq!(io.take_tcp_counters(), TcpCounters { unauthenticated: 2, ..TcpCounters::default() });

    io.expire_unclaimed_tcp(accepted + 10 * timeout, |addr| panic!("{addr} was asked about again"));
    claimed.write_all(&framed(&[0x80; 100])).unwrap();
    let mut got = None;
    let deadline = Instant::now() + WAIT;
    while got.is_none() && Instant::now() < deadline {
        io.poll(Some(Duration::from_millis(10)), 256, |_, source, bytes, _| got = Some((source, bytes.len()))).unwrap();
    }
    assert_eq!(got, Some((claimed_addr, 100)), "the claimed connection carries frames");

    // A connection accepted later gets a deadline of its own, from the pass after its accept.
    let _late = TcpStream::connect(server).unwrap();
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 2));
    let later = accepted + 20 * timeout;
    io.expire_unclaimed_tcp(later, |_| panic!("nothing is due yet"));
    assert_eq!(io.next_tcp_deadline(), Some(later + timeout));
}

/// A connection that closes before its deadline leaves nothing to act on: its slot's next
/// connection keeps its own deadline.
fn a_slot_reused_before_the_deadline_keeps_the_new_deadline(choice: BackendChoice) {
    let timeout = Duration::from_secs(5);
    let (mut io, server) = tcp_io(choice, TcpConfig { auth_timeout: timeout, ..TcpConfig::default() });
    let first = TcpStream::connect(server).unwrap();
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 1));
    let start = Instant::now();
    io.expire_unclaimed_tcp(start, |_| false);
    drop(first);
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 0));
    let mut second = TcpStream::connect(server).unwrap();
    assert!(poll_until(&mut io, |io| io.tcp_connections() == 1));
    let half = start + timeout / 2;
    io.expire_unclaimed_tcp(half, |_| false);
    io.expire_unclaimed_tcp(start + timeout, |_| false);
    assert!(still_open(&mut second), "the first connection's deadline closed the second");
    assert_eq!(io.take_tcp_counters(), TcpCounters::default());
    io.expire_unclaimed_tcp(half + timeout, |_| false);
    assert!(closed_by_server(&mut io, &mut second));
    assert_eq!(io.take_tcp_counters(), TcpCounters { unauthenticated: 1, ..TcpCounters::default() });
}

/// The connection past an address's limit is accepted and closed at once; other addresses
/// still connect, and a connection that ends makes room for its address again.
fn connections_past_the_per_ip_limit_are_refused(choice: BackendChoice) {
    let config = TcpConfig::default();
    let (mut io, server) = tcp_io(choice, config);
    let mut same = Vec::new();
    for _ in 0..config.max_connections_per_ip {
        same.push(TcpStream::connect(server).unwrap());
    }
    assert!(poll_until(&mut io, |io| io.tcp_connections() == config.max_connections_per_ip));
    let mut one_too_many = TcpStream::connect(server).unwrap();
    assert!(closed_by_server(&mut io, &mut one_too_many));
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), server);
    assert!(poll_until(&mut io, |io| io.tcp_connections() == config.max_connections_per_ip + 1));
    assert!(still_open(&mut other));
    assert_eq!(io.take_tcp_counters(), TcpCounters { per_ip_limit: 1, ..TcpCounters::default() });

    drop(same.pop());
    assert!(poll_until(&mut io, |io| io.tcp_connections() == config.max_connections_per_ip));
    let mut again = TcpStream::connect(server).unwrap();
    assert!(poll_until(&mut io, |io| io.tcp_connections() == config.max_connections_per_ip + 1));
    assert!(still_open(&mut again));
    assert_eq!(io.take_tcp_counters(), TcpCounters::default());
}

fn uring_or_skip() -> bool {
    match uring_unavailable_reason() {
        Some(reason) => {
            eprintln!("skipped: {reason}");
            false
        }
        None => true,
    }
}

#[test]
fn epoll_tcp_frames_echo() {
    frames_echo(BackendChoice::Epoll);
}

#[test]
fn uring_tcp_frames_echo() {
    if uring_or_skip() {
        frames_echo(BackendChoice::Uring);
    }
}

#[test]
fn epoll_tcp_bad_frames_close_their_connection() {
    bad_frames_close_their_connection(BackendChoice::Epoll);
}

#[test]
fn uring_tcp_bad_frames_close_their_connection() {
    if uring_or_skip() {
        bad_frames_close_their_connection(BackendChoice::Uring);
    }
}

#[test]
fn epoll_tcp_slow_reader_backpressure() {
    slow_reader_backpressure(BackendChoice::Epoll);
}

#[test]
fn uring_tcp_slow_reader_backpressure() {
    if uring_or_skip() {
        slow_reader_backpressure(BackendChoice::Uring);
    }
}

#[test]
fn epoll_tcp_connections_past_the_limit_are_refused() {
    connections_past_the_limit_are_refused(BackendChoice::Epoll);
}

#[test]
fn uring_tcp_connections_past_the_limit_are_refused() {
    if uring_or_skip() {
        connections_past_the_limit_are_refused(BackendChoice::Uring);
    }
}

#[test]
fn epoll_tcp_spent_budget_leaves_connections_for_the_next_turn() {
    a_spent_budget_leaves_connections_for_the_next_turn(BackendChoice::Epoll);
}

#[test]
fn uring_tcp_spent_budget_leaves_connections_for_the_next_turn() {
    if uring_or_skip() {
        a_spent_budget_leaves_connections_for_the_next_turn(BackendChoice::Uring);
    }
}

#[test]
fn epoll_tcp_unclaimed_connections_close_at_their_deadline() {
    unclaimed_connections_close_at_their_deadline(BackendChoice::Epoll);
}

#[test]
fn uring_tcp_unclaimed_connections_close_at_their_deadline() {
    if uring_or_skip() {
        unclaimed_connections_close_at_their_deadline(BackendChoice::Uring);
    }
}

#[test]
fn epoll_tcp_a_reused_slot_keeps_its_own_deadline() {
    a_slot_reused_before_the_deadline_keeps_the_new_deadline(BackendChoice::Epoll);
}

#[test]
fn uring_tcp_a_reused_slot_keeps_its_own_deadline() {
    if uring_or_skip() {
        a_slot_reused_before_the_deadline_keeps_the_new_deadline(BackendChoice::Uring);
    }
}

#[test]
fn epoll_tcp_connections_past_the_per_ip_limit_are_refused() {
    connections_past_the_per_ip_limit_are_refused(BackendChoice::Epoll);
}

#[test]
fn uring_tcp_connections_past_the_per_ip_limit_are_refused() {
    if uring_or_skip() {
        connections_past_the_per_ip_limit_are_refused(BackendChoice::Uring);
    }
}
