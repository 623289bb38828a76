//! An accepted STUN header covers exactly the datagram, and its class and method put back
//! together give its message type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uprtcd_dataplane::wire::stun::{HEADER_LEN, StunClass, StunHeader};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = StunHeader::new_checked(data) else { return };
    assert_eq!(usize::from(header.message_length()) + HEADER_LEN, data.len());
    assert_eq!(header.message_length() % 4, 0);
    assert_eq!(header.transaction_id(), data[8..20]);
    let method = header.method();
    assert!(method < 0x1000);
    let class_bits = match header.class() {
        StunClass::Request => 0x0000,
        StunClass::Indication => 0x0010,
        StunClass::SuccessResponse => 0x0100,
        StunClass::ErrorResponse => 0x0110,
    };
    let method_bits = (method & 0x000F) | (method & 0x0070) << 1 | (method & 0x0F80) << 2;
    assert_eq!(method_bits | class_bits, header.message_type());
});
