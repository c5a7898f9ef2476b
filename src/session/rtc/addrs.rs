//! This host's addresses, as ICE gathers from them.

use std::net::IpAddr;

/// The addresses a peer could reach us on: every interface's, but
/// loopback, unspecified and link-local ones (ICE gathers none there).
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(list) = rtc::shared::ifaces::ifaces() else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect()
}
