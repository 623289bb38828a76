//! What the SFU, as the receiver of a published stream, reports back to its publisher in
//! RTCP receiver reports (RFC 3550 §6.4.1, Appendix A.3 and A.8): extended highest
//! sequence number, packets lost (cumulative and since the last report), interarrival
//! jitter, and the timing of the publisher's last sender report.
//!
//! Rules: call [`ReceptionStats::record`] for every packet in arrival order with the time
//! it arrived, [`ReceptionStats::sender_report`] when the publisher's SR arrives, and
//! [`ReceptionStats::report_block`] once per report interval (it starts the next interval).
#![forbid(unsafe_code)]

use std::time::Instant;

use crate::wire::rtcp::ReportBlock;

/// Sequence numbers further ahead than this are a restart, not loss (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;

#[derive(Debug, Clone, Default)]
pub struct ReceptionStats {
    /// First arrival: the origin of arrival times in RTP clock units.
    first_arrival: Option<Instant>,
    base_seq: u32,
    max_seq: u16,
    /// Sequence number wraps counted, shifted left by 16.
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Previous relative transit time, in RTP clock units.
    transit: Option<f64>,
    /// RFC 3550 interarrival jitter estimate, in RTP clock units.
    jitter: f64,
    /// The middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sender_report: Option<(u32, Instant)>,
}

impl ReceptionStats {
    /// Accounts one packet that arrived at `now`; `clock_rate` is the stream's RTP clock.
    pub fn record(&mut self, now: Instant, seq: u16, timestamp: u32, clock_rate: u32) {
        let Some(first) = self.first_arrival else {
            self.first_arrival = Some(now);
            self.base_seq = u32::from(seq);
            self.max_seq = seq;
            self.received = 1;
            self.transit = Some(-f64::from(timestamp));
            return;
        };
        let delta = seq.wrapping_sub(self.max_seq);
        if delta > 0 && delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
        }
        self.received = self.received.wrapping_add(1);
        let arrival = now.saturating_duration_since(first).as_secs_f64() * f64::from(clock_rate);
        let transit = arrival - f64::from(timestamp);
        if let Some(previous) = self.transit {
            // Timestamps wrap; a difference beyond half the range is the wrap, not jitter.
            let mut d = (transit - previous).abs();
            if d > f64::from(u32::MAX / 2) {
                d = (d - f64::from(u32::MAX)).abs();
            }
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// Notes the publisher's sender report (its 64-bit NTP time) arriving at `now`.
    pub fn sender_report(&mut self, ntp_timestamp: u64, now: Instant) {
        self.last_sender_report = Some(((ntp_timestamp >> 16) as u32, now));
    }

    fn extended_max(&self) -> u32 {
        self.cycles | u32::from(self.max_seq)
    }

    /// The report block about stream `ssrc` at `now`; starts the next report interval.
    /// `None` before the first packet.
    pub fn report_block(&mut self, ssrc: u32, now: Instant) -> Option<ReportBlock> {
        self.first_arrival?;
        let extended_max = self.extended_max();
        let expected = extended_max.wrapping_sub(self.base_seq).wrapping_add(1);
        let cumulative_lost = i64::from(expected) - i64::from(self.received);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sender_report, delay_since_last_sender_report) = match self.last_sender_report {
            // DLSR is in units of 1/65536 s.
            Some((lsr, at)) => (lsr, (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            // The field is 24-bit signed.
            cumulative_lost: cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            extended_highest_sequence: extended_max,
            jitter: self.jitter as u32,
            last_sender_report,
            delay_since_last_sender_report,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counts_loss_across_a_sequence_wrap() {
        let t0 = Instant::now();
        let mut stats = ReceptionStats::default();
        assert!(stats.report_block(1, t0).is_none(), "nothing to report before the first packet");
        for (i, seq) in (65_530u16..=65_535).chain(0..10).enumerate() {
            if seq == 2 || seq == 3 {
                continue;
            }
            stats.record(t0 + Duration::from_millis(20 * i as u64), seq, 960 * i as u32, 48_000);
        }
        let block = stats.report_block(1, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(block.extended_highest_sequence, (1 << 16) | 9);
        assert_eq!(block.cumulative_lost, 2);
        assert_eq!(block.fraction_lost, (2 * 256 / 16) as u8);
        assert_eq!(block.jitter, 0, "packets arrived exactly on their timestamps");
        stats.record(t0 + Duration::from_millis(400), 10, 960 * 16, 48_000);
        let next = stats.report_block(1, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!((next.fraction_lost, next.cumulative_lost), (0, 2), "no new loss in the second interval");
    }

    #[test]
    fn jitter_grows_with_uneven_arrival() {
        let t0 = Instant::now();
        let mut stats = ReceptionStats::default();
        for i in 0..100u32 {
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            stats.record(t0 + Duration::from_millis(u64::from(20 * i + wobble)), i as u16, 1800 * i, 90_000);
        }
        let jitter = stats.report_block(1, t0 + Duration::from_secs(3)).unwrap().jitter;
        // A 10 ms wobble is 900 ticks at 90 kHz; the estimate converges near that.
        assert!((700..=950).contains(&jitter), "{jitter}");
    }

    #[test]
    fn last_sender_report_timing_is_echoed() {
        let t0 = Instant::now();
        let mut stats = ReceptionStats::default();
        stats.record(t0, 1, 0, 90_000);
        stats.sender_report(0x1122_3344_5566_7788, t0);
        let block = stats.report_block(1, t0 + Duration::from_millis(500)).unwrap();
        assert_eq!(block.last_sender_report, 0x3344_5566);
        assert_eq!(block.delay_since_last_sender_report, 32_768, "half a second in 1/65536 s");
    }
}
