//! Conversions between `std::net::SocketAddr` and the kernel's `sockaddr_storage`, used by
//! every batch send and receive. Nothing here allocates.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Writes `addr` into `storage`; returns the length the kernel must be given.
pub(crate) fn write(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the address the kernel wrote into the first `len` bytes of `raw`; `None` for a
/// family other than IPv4/IPv6 or a short length.
pub(crate) fn read(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    match i32::from(family) {
        libc::AF_INET if raw.len() >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the length was checked; read_unaligned copes with any alignment.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if raw.len() >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The bytes of a `sockaddr_storage` the kernel filled, for [`read`].
pub(crate) fn bytes(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> &[u8] {
    let len = (len as usize).min(size_of::<libc::sockaddr_storage>());
    // SAFETY: `storage` is a live, initialised struct of at least `len` bytes.
    unsafe { std::slice::from_raw_parts((storage as *const libc::sockaddr_storage).cast::<u8>(), len) }
}

/// A zeroed `sockaddr_storage`.
pub(crate) fn empty() -> libc::sockaddr_storage {
    // SAFETY: all-zero bytes are a valid sockaddr_storage (family AF_UNSPEC).
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_v4_and_v6() {
        for addr in ["127.0.0.1:5004", "[::1]:6000", "[fe80::1%3]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut storage = empty();
            let len = write(addr, &mut storage);
            assert_eq!(read(bytes(&storage, len)), Some(addr));
        }
    }

    #[test]
    fn short_or_foreign_addresses_are_refused() {
        assert_eq!(read(&[]), None);
        assert_eq!(read(&(libc::AF_INET as u16).to_ne_bytes()), None);
        assert_eq!(read(&[0; 28]), None);
    }
}
