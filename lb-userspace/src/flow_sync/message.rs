//! The flow sync datagram: a versioned, fixed layout of records, a timestamp and an
//! HMAC-SHA256 over both.
//!
//! Written by hand rather than with a serialisation crate: the layout is fixed-size and every
//! field is read at a known offset with an explicit byte order (network order), so a datagram
//! means the same to every build and architecture, and a hostile one is refused by its length
//! before any field is read.
//!
//! ```text
//! header   0  4  magic "LBFS"
//!          4  1  version (1)
//!          5  1  records n, 1..=FLOW_SYNC_MAX_RECORDS
//!          6  2  zero
//!          8  8  sender's clock, milliseconds since the Unix epoch
//! record   0  1  family (4 or 6)            (n times, 60 bytes each)
//!          1  1  protocol (6, TCP)
//!          2  2  client port
//!          4  2  VIP port
//!          6  2  backend port
//!          8 16  client address
//!         24 16  VIP address
//!         40 16  backend address
//!         56  4  zero
//! MAC      32 bytes: HMAC-SHA256 with the shared key over everything before it
//! ```

use hmac::{Hmac, Mac as _};
use lb_common::{
    limits::{FLOW_SYNC_MAX_RECORDS, FLOW_SYNC_WINDOW_MS},
    maps::{Addr, FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP},
};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const MAGIC: [u8; 4] = *b"LBFS";
/// The layout's version: a datagram of another is refused.
pub const VERSION: u8 = 1;
const HEADER: usize = 16;
const RECORD: usize = 60;
const MAC: usize = 32;
/// The largest datagram of this layout.
pub const MAX_DATAGRAM: usize = HEADER + FLOW_SYNC_MAX_RECORDS * RECORD + MAC;
// Within IPv6's minimum MTU with its IPv6 and UDP headers: never fragmented.
const _: () = assert!(MAX_DATAGRAM <= 1280 - 40 - 8);

/// One connection as sent to the peers: the flow, and its backend by address and port (each
/// node's backend slots are its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncedFlow {
    /// The flow (client → VIP).
    pub key: FlowKey,
    /// The backend's address (of the flow's family).
    pub backend_addr: Addr,
    /// The backend's port.
    pub backend_port: u16,
}

/// Why a datagram was refused whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not of this layout: a wrong length, magic, version, count or field.
    Malformed,
    /// The MAC does not match (another key, or altered on the way).
    BadMac,
    /// Its timestamp is further than [`FLOW_SYNC_WINDOW_MS`] from this node's clock.
    Stale,
}

/// Encodes `flows` (1 to [`FLOW_SYNC_MAX_RECORDS`]) stamped `now_ms`, authenticated with `key`.
pub fn encode(flows: &[SyncedFlow], now_ms: u64, key: &[u8]) -> Vec<u8> {
    assert!((1..=FLOW_SYNC_MAX_RECORDS).contains(&flows.len()), "{} records in one datagram", flows.len());
    let mut out = Vec::with_capacity(HEADER + flows.len() * RECORD + MAC);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, flows.len() as u8, 0, 0]);
    out.extend_from_slice(&now_ms.to_be_bytes());
    for f in flows {
        let k = &f.key;
        out.extend_from_slice(&[k.family, k.proto]);
        for port in [k.sport, k.dport, f.backend_port] {
            out.extend_from_slice(&port.to_be_bytes());
        }
        for addr in [&k.src, &k.dst, &f.backend_addr] {
            out.extend_from_slice(addr);
        }
        out.extend_from_slice(&[0; 4]);
    }
    let tag = mac(key).chain_update(&out).finalize().into_bytes();
    out.extend_from_slice(&tag);
    out
}

/// Decodes a datagram received at `now_ms`, checked against `key`: its records, or why it
/// was refused. Nothing of a refused datagram is used.
pub fn decode(datagram: &[u8], now_ms: u64, key: &[u8]) -> Result<Vec<SyncedFlow>, Refused> {
    let len = datagram.len();
    if !(HEADER + RECORD + MAC..=MAX_DATAGRAM).contains(&len) || !(len - HEADER - MAC).is_multiple_of(RECORD) {
        return Err(Refused::Malformed);
    }
    let (body, tag) = datagram.split_at(len - MAC);
    mac(key).chain_update(body).verify_slice(tag).map_err(|_| Refused::BadMac)?;
    let count = (len - HEADER - MAC) / RECORD;
    if body[..4] != MAGIC || body[4] != VERSION || usize::from(body[5]) != count || body[6..8] != [0, 0] {
        return Err(Refused::Malformed);
    }
    let sent = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
    if sent.abs_diff(now_ms) > FLOW_SYNC_WINDOW_MS {
        return Err(Refused::Stale);
    }
    body[HEADER..].chunks_exact(RECORD).map(record).collect()
}

/// One record of an authenticated datagram.
fn record(r: &[u8]) -> Result<SyncedFlow, Refused> {
    let port = |at: usize| u16::from_be_bytes([r[at], r[at + 1]]);
    let addr = |at: usize| -> Addr { r[at..at + 16].try_into().expect("16 bytes") };
    let (family, proto) = (r[0], r[1]);
    let (src, dst, backend) = (addr(8), addr(24), addr(40));
    let v4_padded = |a: &Addr| family != FAMILY_V4 || a[4..] == [0; 12];
    let valid = matches!(family, FAMILY_V4 | FAMILY_V6)
        && proto == PROTO_TCP
        && r[56..] == [0; 4]
        && [&src, &dst, &backend].into_iter().all(v4_padded);
    if !valid {
        return Err(Refused::Malformed);
    }
    let key = FlowKey { src, dst, sport: port(2), dport: port(4), proto, family, pad: [0; 2] };
    Ok(SyncedFlow { key, backend_addr: backend, backend_port: port(6) })
}

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length")
}

#[cfg(test)]
mod tests {
    use lb_common::maps::{FAMILY_V6, v4_addr};

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000_000;

    fn flow(port: u16) -> SyncedFlow {
        let key = FlowKey {
            src: v4_addr([198, 51, 100, 7]),
            dst: v4_addr([192, 0, 2, 10]),
            sport: port,
            dport: 80,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            pad: [0; 2],
        };
        SyncedFlow { key, backend_addr: v4_addr([10, 0, 0, 4]), backend_port: 8080 }
    }

    #[test]
    fn a_datagram_decodes_to_what_was_encoded() {
        let mut v6 = flow(1);
        v6.key.family = FAMILY_V6;
        v6.key.src = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let flows: Vec<SyncedFlow> = (40000..40015).map(flow).chain([v6]).collect();
        let d = encode(&flows, NOW, KEY);
        assert_eq!(d.len(), MAX_DATAGRAM);
        assert_eq!(decode(&d, NOW, KEY), Ok(flows));
    }

    #[test]
    fn the_layout_is_fixed_and_in_network_order() {
        let d = encode(&[flow(0x1234)], 0x0102_0304_0506_0708, KEY);
        assert_eq!(&d[..16], b"LBFS\x01\x01\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08");
        assert_eq!(&d[16..24], &[4, 6, 0x12, 0x34, 0, 80, 0x1f, 0x90]);
        assert_eq!(&d[24..28], &[198, 51, 100, 7]);
        assert_eq!(&d[56..60], &[10, 0, 0, 4]);
        assert_eq!(d.len(), 16 + 60 + 32);
    }

    #[test]
    fn a_wrong_key_or_any_changed_byte_fails_the_mac() {
        let d = encode(&[flow(1), flow(2)], NOW, KEY);
        assert_eq!(decode(&d, NOW, b"another key of thirty-two bytes!"), Err(Refused::BadMac));
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            assert_eq!(decode(&bad, NOW, KEY), Err(Refused::BadMac), "byte {i}");
        }
    }

    #[test]
    fn timestamps_outside_the_window_are_stale_either_way() {
        let d = encode(&[flow(1)], NOW, KEY);
        assert!(decode(&d, NOW + FLOW_SYNC_WINDOW_MS, KEY).is_ok());
        assert!(decode(&d, NOW - FLOW_SYNC_WINDOW_MS, KEY).is_ok());
        assert_eq!(decode(&d, NOW + FLOW_SYNC_WINDOW_MS + 1, KEY), Err(Refused::Stale));
        assert_eq!(decode(&d, NOW - FLOW_SYNC_WINDOW_MS - 1, KEY), Err(Refused::Stale));
    }

    #[test]
    fn junk_of_any_length_is_malformed_or_fails_the_mac() {
        for len in 0..MAX_DATAGRAM + 64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let expected = if (HEADER + RECORD + MAC..=MAX_DATAGRAM).contains(&len) && (len - HEADER - MAC).is_multiple_of(RECORD) {
                Refused::BadMac
            } else {
                Refused::Malformed
            };
            assert_eq!(decode(&junk, NOW, KEY), Err(expected), "{len} bytes");
        }
    }

    #[test]
    fn authenticated_but_invalid_fields_are_malformed() {
        let resign = |d: &mut Vec<u8>| {
            let body = d.len() - MAC;
            let tag = mac(KEY).chain_update(&d[..body]).finalize().into_bytes();
            d[body..].copy_from_slice(&tag);
        };
        let good = encode(&[flow(1)], NOW, KEY);
        for (at, value) in [(4, 2), (5, 2), (16, 5), (17, 17), (24 + 5, 1), (16 + 59, 1)] {
            let mut d = good.clone();
            d[at] = value;
            resign(&mut d);
            assert_eq!(decode(&d, NOW, KEY), Err(Refused::Malformed), "byte {at} = {value}");
        }
    }
}
