//! Addresses no client or reply can have: the data path drops new flows from them and replies
//! to them before any state is created (the lesson's "sanity before state").

use crate::maps::{Addr, FAMILY_V4};

/// Whether `addr` (of `family`) is never a unicast host on the internet side: IPv4
/// 0.0.0.0/8, loopback 127.0.0.0/8, multicast, reserved and broadcast (224.0.0.0/3);
/// IPv6 unspecified `::`, loopback `::1` and multicast `ff00::/8`.
#[inline(always)]
pub fn is_martian(addr: &Addr, family: u8) -> bool {
    if family == FAMILY_V4 {
        return addr[0] == 0 || addr[0] == 127 || addr[0] >= 224;
    }
    if addr[0] == 0xff {
        return true;
    }
    let mut high = 0u8;
    let mut i = 0;
    while i < 15 {
        high |= addr[i];
        i += 1;
    }
    high == 0 && addr[15] <= 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{FAMILY_V6, v4_addr};

    fn v6(s: &str) -> Addr {
        let ip: std::net::Ipv6Addr = s.parse().unwrap();
        ip.octets()
    }

    #[test]
    fn ipv4_martians() {
        for a in [[0, 0, 0, 0], [0, 1, 2, 3], [127, 0, 0, 1], [224, 0, 0, 1], [239, 255, 255, 250], [240, 0, 0, 1], [255, 255, 255, 255]] {
            assert!(is_martian(&v4_addr(a), FAMILY_V4), "{a:?}");
        }
        for a in [[1, 0, 0, 0], [10, 0, 0, 1], [192, 0, 2, 10], [223, 255, 255, 255], [126, 255, 255, 255], [128, 0, 0, 1]] {
            assert!(!is_martian(&v4_addr(a), FAMILY_V4), "{a:?}");
        }
    }

    #[test]
    fn ipv6_martians() {
        for a in ["::", "::1", "ff02::1", "ff99::", "ff05::1:3"] {
            assert!(is_martian(&v6(a), FAMILY_V6), "{a}");
        }
        for a in ["::2", "2001:db8::1", "fe80::1", "fd00:1::2", "::ffff:10.0.0.1", "100::1"] {
            assert!(!is_martian(&v6(a), FAMILY_V6), "{a}");
        }
    }
}
