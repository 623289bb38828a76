//! An accepted RTCP compound yields at least one packet, every view's accessors stay inside
//! the buffer, and each packet type that has a writer writes back to the same values
//! (transport-wide feedback to the same packets and arrivals, if need be over several packets).
#![no_main]

use libfuzzer_sys::fuzz_target;
use uprtcd_dataplane::wire::rtcp::{
    DELTA_TICK_US, FirEntry, REFERENCE_TICK_US, ReportBlock, RtcpCompound, RtcpPacket, write_fir, write_nack, write_pli,
    write_receiver_report, write_remb, write_sender_report, write_transport_feedback,
};

/// Asserts that `part` lies inside `whole`.
fn assert_within(whole: &[u8], part: &[u8]) {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    assert!(start + part.len() <= whole.len(), "slice outside the compound");
}

/// Parses `bytes` as a compound holding exactly one packet.
fn only_packet(bytes: &[u8]) -> RtcpPacket<'_> {
    let compound = RtcpCompound::new_checked(bytes).expect("a writer's output parses");
    let mut packets = compound.packets();
    let packet = packets.next().expect("one packet");
    assert!(packets.next().is_none());
    packet
}

fn sorted(mut numbers: Vec<u16>) -> Vec<u16> {
    numbers.sort_unstable();
    numbers.dedup();
    numbers
}

fuzz_target!(|data: &[u8]| {
    let Ok(compound) = RtcpCompound::new_checked(data) else { return };
    assert!(compound.packets().next().is_some());
    let mut out = vec![0; 1 << 18];
    for packet in compound.packets() {
        match packet {
            RtcpPacket::SenderReport(report) => {
                let blocks: Vec<ReportBlock> = report.report_blocks().collect();
                let len = write_sender_report(&mut out, &report.info(), &blocks).expect("at most 31 blocks");
                let RtcpPacket::SenderReport(again) = only_packet(&out[..len]) else { panic!("not an SR") };
                assert_eq!(again.info(), report.info());
                assert!(again.report_blocks().eq(blocks));
            }
            RtcpPacket::ReceiverReport(report) => {
                let blocks: Vec<ReportBlock> = report.report_blocks().collect();
                let len = write_receiver_report(&mut out, report.ssrc(), &blocks).expect("at most 31 blocks");
                let RtcpPacket::ReceiverReport(again) = only_packet(&out[..len]) else { panic!("not an RR") };
                assert_eq!(again.ssrc(), report.ssrc());
                assert!(again.report_blocks().eq(blocks));
            }
            RtcpPacket::Sdes(sdes) => assert!(sdes.chunk_count() < 32),
            RtcpPacket::Bye(bye) => {
                assert!(bye.ssrcs().count() < 32);
                if let Some(reason) = bye.reason() {
                    assert_within(data, reason);
                }
            }
            RtcpPacket::Nack(nack) => {
                let pairs = nack.pairs().len();
                let lost: Vec<u16> = nack.lost_sequence_numbers().collect();
                assert!(lost.len() >= pairs && lost.len() <= 17 * pairs);
                let len = write_nack(&mut out, nack.sender_ssrc(), nack.media_ssrc(), &lost).expect("non-empty");
                let RtcpPacket::Nack(again) = only_packet(&out[..len]) else { panic!("not a NACK") };
                assert_eq!((again.sender_ssrc(), again.media_ssrc()), (nack.sender_ssrc(), nack.media_ssrc()));
                assert_eq!(sorted(again.lost_sequence_numbers().collect()), sorted(lost));
            }
            RtcpPacket::TransportFeedback(feedback) => {
                let reference_us = i64::from(feedback.reference_time()) * REFERENCE_TICK_US;
                let packets: Vec<(u16, Option<i64>)> = feedback.packets().collect();
                assert_eq!(packets.len(), usize::from(feedback.packet_status_count()));
                let arrivals: Vec<Option<i64>> =
                    packets.iter().map(|&(_, arrival)| arrival.map(|us| reference_us + us)).collect();
                assert!(arrivals.iter().flatten().all(|us| us % DELTA_TICK_US == 0));
                // Arrivals are whole delta ticks, so they come back exactly, modulo the
                // reference time's wrap (a split packet may take a reference time past 24 bits).
                let wrapped = |arrival: Option<i64>| arrival.map(|us| us.rem_euclid(REFERENCE_TICK_US << 24));
                let mut again = Vec::new();
                let mut done = 0;
                while done < arrivals.len() {
                    let base = feedback.base_sequence_number().wrapping_add(done as u16);
                    let reference = arrivals[done..]
                        .iter()
                        .flatten()
                        .next()
                        .map_or(feedback.reference_time(), |us| us.div_euclid(REFERENCE_TICK_US) as i32);
                    let written = write_transport_feedback(
                        &mut out,
                        feedback.sender_ssrc(),
                        feedback.media_ssrc(),
                        base,
                        feedback.feedback_packet_count(),
                        reference,
                        &arrivals[done..],
                    )
                    .expect("a parsed packet's arrivals can be written");
                    let RtcpPacket::TransportFeedback(part) = only_packet(&out[..written.len]) else {
                        panic!("not transport feedback")
                    };
                    assert_eq!(part.base_sequence_number(), base);
                    let part_reference_us = i64::from(part.reference_time()) * REFERENCE_TICK_US;
                    again.extend(part.packets().map(|(seq, arrival)| (seq, wrapped(arrival.map(|us| part_reference_us + us)))));
                    done += written.covered;
                }
                let expected: Vec<(u16, Option<i64>)> =
                    packets.iter().zip(&arrivals).map(|(&(seq, _), &arrival)| (seq, wrapped(arrival))).collect();
                assert_eq!(again, expected);
            }
            RtcpPacket::Pli(pli) => {
                let len = write_pli(&mut out, pli.sender_ssrc(), pli.media_ssrc()).expect("12 bytes");
                assert!(matches!(only_packet(&out[..len]), RtcpPacket::Pli(again) if again == pli));
            }
            RtcpPacket::Fir(fir) => {
                let entries: Vec<FirEntry> = fir.entries().collect();
                let len = write_fir(&mut out, fir.sender_ssrc(), &entries).expect("non-empty");
                let RtcpPacket::Fir(again) = only_packet(&out[..len]) else { panic!("not a FIR") };
                assert_eq!(again.sender_ssrc(), fir.sender_ssrc());
                assert!(again.entries().eq(entries));
            }
            RtcpPacket::Remb(remb) => {
                let ssrcs: Vec<u32> = remb.ssrcs().collect();
                let len = write_remb(&mut out, remb.sender_ssrc(), remb.bitrate(), &ssrcs).expect("at most 255");
                let RtcpPacket::Remb(again) = only_packet(&out[..len]) else { panic!("not a REMB") };
                assert!(again.ssrcs().eq(ssrcs));
                // Every decoded bitrate is exactly representable, except the saturated one.
                if remb.bitrate() == u64::MAX {
                    assert!(again.bitrate() <= remb.bitrate());
                } else {
                    assert_eq!(again.bitrate(), remb.bitrate());
                }
            }
            RtcpPacket::Other(other) => {
                assert_within(data, other.body());
                assert!(other.format() < 32);
            }
        }
    }
});
