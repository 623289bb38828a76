//! Datagrams from a stranger never panic a server-side `DtlsTransport` and never connect it:
//! the record check in front of dimpl and the handshake behind it take any bytes, in any
//! number of datagrams, at any pace. The transport keeps its contract throughout: a dropped
//! datagram (`MalformedDatagram`) changes nothing, any other error ends it with `Failed`
//! carrying that error, an end is reported once, and an ended transport takes nothing more.
//!
//! Input: a first byte whose low bit picks the identity (DTLS 1.2 only, or 1.2 or 1.3), then
//! datagrams, each as `[time step][length: u16 BE][bytes]`; the last takes what is left. The
//! clock moves 100 ms per unit of the step before each datagram, and a due timeout is handled
//! first, as the worker does.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use uprtcd_dataplane::dtls::{
    CertificateFingerprint, DtlsError, DtlsIdentity, DtlsOutput, DtlsTransport, DtlsVersionPolicy,
    MIN_OUTPUT_BUFFER_LEN,
};

/// One identity per version policy, generated once per process: a P-256 key pair costs more
/// than a run.
fn identity(dtls13: bool) -> &'static DtlsIdentity {
    static DTLS12: OnceLock<DtlsIdentity> = OnceLock::new();
    static DTLS12_OR_13: OnceLock<DtlsIdentity> = OnceLock::new();
    let (cell, policy) =
        if dtls13 { (&DTLS12_OR_13, DtlsVersionPolicy::Dtls12Or13) } else { (&DTLS12, DtlsVersionPolicy::Dtls12Only) };
    cell.get_or_init(|| DtlsIdentity::generate(policy).expect("generating a P-256 identity does not fail"))
}

/// A time origin shared by every run, so that runs differ only by their input.
fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Most outputs one call can leave: a flight of a few datagrams and an event.
const MAX_OUTPUTS_PER_CALL: usize = 64;

/// How the transport stands, as far as its outputs told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Running,
    Failed(DtlsError),
    Closed,
}

/// Drains `transport` as the worker does, checking each output.
fn drain(transport: &mut DtlsTransport, seen: &mut Seen) {
    let mut buf = [0u8; MIN_OUTPUT_BUFFER_LEN];
    for _ in 0..MAX_OUTPUTS_PER_CALL {
        let Some(output) = transport.poll_output(&mut buf) else {
            if *seen != Seen::Running {
                assert_eq!(transport.poll_timeout(), None, "an ended transport has no timer");
            }
            return;
        };
        assert_eq!(*seen, Seen::Running, "output after the end: {output:?}");
        match output {
            DtlsOutput::Transmit(datagram) => assert!(!datagram.is_empty() && datagram.len() <= MIN_OUTPUT_BUFFER_LEN),
            DtlsOutput::Connected { .. } => panic!("a stranger's datagrams connected the transport"),
            DtlsOutput::Failed(error) => {
                assert!(error.is_fatal(), "{error:?} ended the transport");
                *seen = Seen::Failed(error);
            }
            DtlsOutput::Closed => *seen = Seen::Closed,
        }
    }
    panic!("poll_output never ran dry");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let mut now = start();
    let fingerprint = CertificateFingerprint::from_bytes([0xA5; 32]);
    let mut transport = DtlsTransport::new_server(identity(flags & 1 == 1), fingerprint, now);
    let mut seen = Seen::Running;
    drain(&mut transport, &mut seen);
    while let [step, high, low, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(100) * u32::from(*step);
        if transport.poll_timeout().is_some_and(|due| due <= now) {
            transport.handle_timeout(now);
            drain(&mut transport, &mut seen);
        }
        let result = transport.handle_packet(now, datagram);
        let before = seen;
        drain(&mut transport, &mut seen);
        match result {
            Ok(()) => {}
            Err(DtlsError::MalformedDatagram) => assert_eq!(seen, before, "a dropped datagram changed nothing"),
            Err(DtlsError::TransportEnded) => assert!(seen != Seen::Running, "TransportEnded from a live transport"),
            Err(error) => {
                assert!(error.is_fatal());
                assert_eq!((before, seen), (Seen::Running, Seen::Failed(error)), "a fatal error ends it, once");
            }
        }
    }
    // Whatever was left half done ends on the handshake deadline.
    now += Duration::from_secs(60);
    transport.handle_timeout(now);
    drain(&mut transport, &mut seen);
});
