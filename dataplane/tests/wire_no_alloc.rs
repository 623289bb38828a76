//! The RTCP the engine reads and writes on every report and feedback allocates nothing:
//! parsing compounds (SR, RR, NACK, PLI, FIR, REMB) and writing PLI, NACK, RR and SR; nor
//! does the RTP copy each consumer gets, renumbered and with an element added.

use std::alloc::System;
use std::hint::black_box;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use uprtcd_dataplane::wire::rtcp::{
    FirEntry, ReportBlock, RtcpCompound, RtcpPacket, SenderInfo, write_fir, write_nack, write_pli,
    write_receiver_report, write_remb, write_sender_report,
};
use uprtcd_dataplane::wire::rtp::{ExtensionIdMap, RtpHeader, RtpPacket};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn rtcp_reading_and_writing_allocate_nothing() {
    let block = ReportBlock {
        ssrc: 1,
        fraction_lost: 3,
        cumulative_lost: 10,
        extended_highest_sequence: 70_000,
        jitter: 90,
        last_sender_report: 7,
        delay_since_last_sender_report: 65_536,
    };
    let info = SenderInfo { ssrc: 2, ntp_timestamp: 1 << 40, rtp_timestamp: 9, packet_count: 3, octet_count: 4 };
    let mut compound = [0u8; 512];
    let mut len = write_sender_report(&mut compound, &info, &[block]).unwrap();
    len += write_receiver_report(&mut compound[len..], 5, &[block, block]).unwrap();
    len += write_nack(&mut compound[len..], 5, 2, &[100, 101, 105, 130]).unwrap();
    len += write_pli(&mut compound[len..], 5, 2).unwrap();
    len += write_fir(&mut compound[len..], 5, &[FirEntry { ssrc: 2, sequence_number: 1 }]).unwrap();
    len += write_remb(&mut compound[len..], 5, 1_500_000, &[2]).unwrap();
    let compound = &compound[..len];
    let mut out = [0u8; 256];

    // The counting allocator sees every thread of the process, and the test harness's own
    // threads may allocate now and then. An allocation per packet would show in every
    // measurement, so the path is allocation-free when one of three measurements counts none.
    let mut seen = 0u64;
    let mut measurements = Vec::new();
    for _ in 0..3 {
        let region = Region::new(GLOBAL);
        for _ in 0..10_000 {
            for packet in RtcpCompound::new_checked(black_box(compound)).unwrap().packets() {
                seen += match packet {
                    RtcpPacket::SenderReport(sr) => {
                        sr.report_blocks().count() as u64 + u64::from(sr.info().packet_count)
                    }
                    RtcpPacket::ReceiverReport(rr) => rr.report_blocks().map(|b| u64::from(b.jitter)).sum(),
                    RtcpPacket::Nack(nack) => nack.lost_sequence_numbers().count() as u64,
                    RtcpPacket::Pli(pli) => u64::from(pli.media_ssrc()),
                    RtcpPacket::Fir(fir) => fir.entries().count() as u64,
                    RtcpPacket::Remb(remb) => remb.bitrate(),
                    _ => 0,
                };
            }
            black_box(write_pli(&mut out, 1, 2).unwrap());
            black_box(write_nack(&mut out, 1, 2, &[7, 9]).unwrap());
            black_box(write_receiver_report(&mut out, 1, &[block]).unwrap());
            black_box(write_sender_report(&mut out, &info, &[]).unwrap());
        }
        let stats = region.change();
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert!(seen > 0);
    assert!(measurements.contains(&(0, 0)), "{measurements:?}");
}

#[test]
fn rtp_renumbered_copy_allocates_nothing() {
    let extensions: [(u8, &[u8]); 3] = [(1, &[0, 0, 0]), (2, &[0x3c, 0x1e, 0x5a]), (3, &[0x01, 0x2c])];
    let mut packet = [0u8; 1200];
    let header_len = RtpHeader::new(96, 1, 2, 3).csrcs(&[4]).extensions(&extensions).write(&mut packet).unwrap();
    let packet = RtpPacket::new_checked(&packet[..header_len + 1000]).unwrap();
    let mut map = ExtensionIdMap::blank_all();
    map.map(2, 4).unwrap();
    map.map(3, 7).unwrap();
    let mut slot = [0u8; 1500];

    // One clean measurement of three, as above.
    let mut written = 0;
    let mut measurements = Vec::new();
    for _ in 0..3 {
        let region = Region::new(GLOBAL);
        for sequence_number in 0..10_000u16 {
            let value = sequence_number.to_be_bytes();
            written += packet.copy_renumbered(&mut slot, &map, Some((7, &value))).unwrap();
            written += packet.copy_renumbered(black_box(&mut slot), &ExtensionIdMap::blank_all(), None).unwrap();
        }
        let stats = region.change();
        measurements.push((stats.allocations, stats.reallocations));
    }
    assert!(written > 0);
    assert!(measurements.contains(&(0, 0)), "{measurements:?}");
}
