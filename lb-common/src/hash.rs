//! The seeded flow hash. The same code runs in the kernel and in the agent (`lb explain`,
//! tests), so both always agree on which ring slot a flow maps to.
//!
//! A multiply-rotate mix per 64-bit word and the MurmurHash3 64-bit finaliser: about ten
//! multiplications per IPv6 flow, no loops, no tables, no helper calls.

use crate::maps::{Addr, FlowKey, VipKey};

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(MIX).rotate_left(31)
}

#[inline(always)]
fn finish64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The two little-endian 64-bit words of an address (a plain load on bpfel and x86).
#[inline(always)]
fn addr_words(a: &Addr) -> (u64, u64) {
    (
        u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// Hash of a flow for the Maglev lookup: the full 5-tuple, or only the client address when
/// `src_only` (client affinity).
#[inline(always)]
pub fn flow_hash(key: &FlowKey, seed: u32, src_only: bool) -> u32 {
    let (s0, s1) = addr_words(&key.src);
    let mut h = mix(seed as u64 ^ ((key.family as u64) << 32), s0);
    h = mix(h, s1);
    if !src_only {
        let (d0, d1) = addr_words(&key.dst);
        h = mix(h, d0);
        h = mix(h, d1);
        h = mix(
            h,
            (key.sport as u64) | ((key.dport as u64) << 16) | ((key.proto as u64) << 32),
        );
    }
    let x = finish64(h);
    (x ^ (x >> 32)) as u32
}

/// A second, independent-looking hash of a flow from its first: least-conn compares the
/// backends of the two ring slots they select.
#[inline(always)]
pub fn second_choice(hash: u32) -> u32 {
    let x = finish64(hash as u64 ^ 0x5bd1_e995_0000_0000);
    (x ^ (x >> 32)) as u32
}

/// The bit of an endpoint (address and port; `salt` tells VIPs from backends) in the
/// `ENDPOINT_FILTER` map: word `bit >> 6`, bit `bit & 63`. Below 65,536. A few operations and
/// no helper call: the data path computes it for every packet.
#[inline(always)]
pub fn endpoint_bit(addr: &Addr, port: u16, salt: u64) -> u32 {
    let (a0, a1) = addr_words(addr);
    let h = (a0 ^ a1.rotate_left(29) ^ ((port as u64) << 40) ^ salt).wrapping_mul(MIX);
    (h >> 48) as u32
}

/// The `VIP_INDEX` slot of a VIP key (below [`crate::limits::VIP_INDEX_SLOTS`]): a few
/// operations and no helper call, as [`endpoint_bit`], with the protocol and family mixed in
/// (a TCP and a UDP VIP on one address and port are two keys).
#[inline(always)]
pub fn vip_slot(key: &VipKey) -> u32 {
    let (a0, a1) = addr_words(&key.addr);
    let tail = (key.family as u64) << 56 | (key.port as u64) << 40 | (key.proto as u64) << 32;
    let h = (a0 ^ a1.rotate_left(29) ^ tail).wrapping_mul(MIX);
    // The top bits: the multiplication carries every input bit into them.
    (h >> (64 - crate::limits::VIP_INDEX_SLOTS.trailing_zeros())) as u32
}

/// Hash of a backend's identity (address and port) under `seed`. Maglev derives each
/// backend's offset and skip from it, so the table depends on what the backends are, not on
/// the order or the slot ids they were given.
pub fn backend_hash(addr: &Addr, port: u16, seed: u64) -> u64 {
    let (a0, a1) = addr_words(addr);
    finish64(mix(mix(mix(seed, a0), a1), port as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{FAMILY_V4, PROTO_TCP, v4_addr};

    fn key(src: [u8; 4], sport: u16) -> FlowKey {
        FlowKey {
            src: v4_addr(src),
            dst: v4_addr([10, 0, 0, 1]),
            sport,
            dport: 80,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            pad: [0; 2],
        }
    }

    #[test]
    fn depends_on_every_field_and_seed() {
        let base = key([192, 0, 2, 1], 40000);
        let h = flow_hash(&base, 7, false);
        assert_eq!(h, flow_hash(&base, 7, false), "deterministic");
        assert_ne!(h, flow_hash(&base, 8, false), "seed");
        assert_ne!(h, flow_hash(&key([192, 0, 2, 2], 40000), 7, false), "source");
        assert_ne!(h, flow_hash(&key([192, 0, 2, 1], 40001), 7, false), "sport");
        let mut d = base;
        d.dport = 81;
        assert_ne!(h, flow_hash(&d, 7, false), "dport");
        d = base;
        d.proto = 17;
        assert_ne!(h, flow_hash(&d, 7, false), "proto");
        d = base;
        d.dst[15] = 1;
        assert_ne!(h, flow_hash(&d, 7, false), "destination");
    }

    #[test]
    fn src_only_ignores_ports_and_destination() {
        let a = key([198, 51, 100, 7], 1111);
        let mut b = key([198, 51, 100, 7], 2222);
        b.dport = 443;
        assert_eq!(flow_hash(&a, 1, true), flow_hash(&b, 1, true));
        assert_ne!(flow_hash(&a, 1, false), flow_hash(&b, 1, false));
    }

    #[test]
    fn low_bits_are_uniform() {
        // Sequential source ports (what one client produces) must spread evenly mod a prime.
        const BUCKETS: usize = 13;
        const N: u32 = 130_000;
        let mut counts = [0u32; BUCKETS];
        for p in 0..N {
            let k = key([203, 0, 113, (p % 7) as u8], (p / 7) as u16);
            counts[(flow_hash(&k, 42, false) % BUCKETS as u32) as usize] += 1;
        }
        let expected = (N / BUCKETS as u32) as f64;
        for c in counts {
            assert!((c as f64 - expected).abs() / expected < 0.03, "{counts:?}");
        }
    }

    #[test]
    fn second_choice_spreads_independently() {
        // Flows that share a first slot must not share a second one.
        let mut seconds = std::collections::HashSet::new();
        let mut n = 0;
        for p in 0..200_000u32 {
            let h = flow_hash(&key([10, 9, 8, 7], p as u16), 3, false);
            if h % 101 == 5 {
                seconds.insert(second_choice(h) % 101);
                n += 1;
            }
        }
        assert!(n > 1000 && seconds.len() > 95, "{} distinct second slots over {n} flows", seconds.len());
    }

    #[test]
    fn endpoint_bits_spread() {
        // 1,000 backends on one port set few enough bits that a random flow rarely passes.
        let mut bits = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let b = endpoint_bit(&v4_addr([10, 1, (i >> 8) as u8, i as u8]), 8080, 2);
            assert!(b < 65536);
            bits.insert(b);
        }
        assert!(bits.len() > 985, "{} distinct bits", bits.len());
        let a = v4_addr([10, 0, 0, 10]);
        assert_ne!(endpoint_bit(&a, 80, 1), endpoint_bit(&a, 81, 1));
        assert_ne!(endpoint_bit(&a, 80, 1), endpoint_bit(&a, 80, 2));
    }

    #[test]
    fn vip_slots_spread_and_depend_on_every_field() {
        use crate::limits::VIP_INDEX_SLOTS;
        use crate::maps::{FAMILY_V6, PROTO_UDP};
        let vip = |last: u8, port: u16| VipKey { addr: v4_addr([10, 0, 0, last]), port, proto: PROTO_TCP, family: FAMILY_V4 };
        let base = vip(1, 80);
        let slot = vip_slot(&base);
        assert!(slot < VIP_INDEX_SLOTS);
        for other in [vip(2, 80), vip(1, 443), VipKey { proto: PROTO_UDP, ..base }, VipKey { family: FAMILY_V6, ..base }] {
            assert_ne!(vip_slot(&other), slot, "{other:?}");
        }
        // 256 addresses × 4 ports in 16,384 slots: a random spread leaves about 1,024 × 1,023 / 2
        // / 16,384 ≈ 32 pairs sharing; allow twice that.
        let mut seen = std::collections::HashMap::new();
        for last in 0..=255u8 {
            for port in [53, 80, 443, 8080] {
                *seen.entry(vip_slot(&vip(last, port))).or_insert(0u32) += 1;
            }
        }
        let shared: u32 = seen.values().map(|n| n * (n - 1) / 2).sum();
        assert!(shared <= 64, "{shared} pairs share a slot");
    }

    #[test]
    fn vip_keys_compare_by_every_field() {
        use crate::maps::PROTO_UDP;
        let a = VipKey { addr: v4_addr([10, 0, 0, 1]), port: 80, proto: PROTO_TCP, family: FAMILY_V4 };
        assert!(a.same(&a));
        let mut far = a;
        far.addr[15] = 1;
        for b in [far, VipKey { port: 81, ..a }, VipKey { proto: PROTO_UDP, ..a }, VipKey { family: 6, ..a }] {
            assert!(!a.same(&b), "{b:?}");
            assert_eq!(a.same(&b), a == b);
        }
    }

    #[test]
    fn backend_hash_depends_on_identity() {
        let a = v4_addr([10, 1, 0, 1]);
        let b = v4_addr([10, 1, 0, 2]);
        assert_ne!(backend_hash(&a, 80, 1), backend_hash(&b, 80, 1));
        assert_ne!(backend_hash(&a, 80, 1), backend_hash(&a, 81, 1));
        assert_ne!(backend_hash(&a, 80, 1), backend_hash(&a, 80, 2));
    }
}
