//! Mutations of a seed frame, drawn from the frame's own generator: bit flips, byte sets,
//! truncation, trailing bytes, header fields set to edge values (with the IPv4 header
//! checksum recomputed in some mutants so they pass the checksum check), and VLAN tags.

use std::net::IpAddr;

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

use super::{
    model::Model,
    seeds::below,
    wire::{self, Ip, TCP, UDP},
};

/// The mutations, by name (the index is drawn).
pub const MUTATIONS: &[&str] = &[
    "bit_flip",
    "byte_set",
    "truncate",
    "trailing_bytes",
    "ipv4_total_length",
    "ipv4_ihl",
    "ipv4_ttl",
    "ipv4_fragment",
    "ipv6_payload_length",
    "tcp_data_offset",
    "tcp_flags",
    "port_edge",
    "address",
    "icmp_type_code",
    "quoted_field",
    "vlan_tag",
    "fix_checksums",
];

const MARTIANS4: [[u8; 4]; 4] = [[0, 0, 0, 0], [127, 0, 0, 1], [224, 0, 0, 1], [255, 255, 255, 255]];
const MARTIANS6: [&str; 3] = ["::", "::1", "ff02::1"];

fn pick<T: Copy>(rng: &mut ChaCha8Rng, from: &[T]) -> T {
    from[below(rng, from.len())]
}

/// An address to put in a header of the family of `like`: a martian, a VIP address, a
/// backend's address, or a random one.
fn edge_address(model: &Model, like: IpAddr, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let same_family: Vec<IpAddr> = model
        .services
        .iter()
        .flat_map(|(_, s)| {
            let vip = model.vip_ip(s);
            let i = model.vip(vip, s.key.port, s.key.proto).expect("own service");
            std::iter::once(vip).chain(model.backends(i).into_iter().map(|(a, _)| a))
        })
        .filter(|a| a.is_ipv4() == like.is_ipv4())
        .collect();
    match (like, below(rng, 3)) {
        (IpAddr::V4(_), 0) => pick(rng, &MARTIANS4).to_vec(),
        (IpAddr::V6(_), 0) => pick(rng, &MARTIANS6).parse::<std::net::Ipv6Addr>().expect("literal").octets().to_vec(),
        (_, 1) => match pick(rng, &same_family) {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        },
        (IpAddr::V4(_), _) => rng.next_u32().to_be_bytes().to_vec(),
        (IpAddr::V6(_), _) => {
            let mut a = vec![0u8; 16];
            rng.fill_bytes(&mut a);
            a
        }
    }
}

/// Sets the 16-bit field at `at`, if it is in the frame.
fn set16(f: &mut [u8], at: usize, v: u16) {
    if f.len() >= at + 2 {
        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// Applies mutation `m` (an index of [`MUTATIONS`]) to `f`. Returns whether it touched an
/// IPv4 header (whose checksum the caller may then recompute).
pub fn apply(model: &Model, m: usize, f: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> bool {
    let ip: Option<Ip> = wire::outer(f);
    let v4 = ip.is_some_and(|ip| ip.v4);
    match MUTATIONS[m] {
        "bit_flip" if !f.is_empty() => {
            let at = below(rng, f.len());
            f[at] ^= 1 << below(rng, 8);
            false
        }
        "byte_set" if !f.is_empty() => {
            let at = below(rng, f.len());
            let r = rng.next_u32() as u8;
            f[at] = pick(rng, &[0, 0xff, 0x7f, 0x80, r]);
            v4
        }
        // BPF_PROG_TEST_RUN refuses an XDP frame shorter than an Ethernet header.
        "truncate" if f.len() > 14 => {
            f.truncate(14 + below(rng, f.len() - 14));
            false
        }
        "trailing_bytes" => {
            let n = 1 + below(rng, 64);
            if below(rng, 2) == 0 {
                f.extend(std::iter::repeat_n(0, n));
            } else {
                let mut junk = vec![0u8; n];
                rng.fill_bytes(&mut junk);
                f.extend_from_slice(&junk);
            }
            false
        }
        "ipv4_total_length" => {
            let Some(ip) = ip.filter(|ip| ip.v4) else { return false };
            let cur = (ip.end - ip.l3) as u16;
            let room = (f.len() - ip.l3) as u16;
            let v = pick(rng, &[0, 19, 20, cur.wrapping_sub(1), cur.wrapping_add(1), 0xffff, room, room.wrapping_add(1), 28]);
            set16(f, ip.l3 + 2, v);
            true
        }
        "ipv4_ihl" => {
            let Some(ip) = ip.filter(|ip| ip.v4) else { return false };
            f[ip.l3] = 0x40 | below(rng, 16) as u8;
            true
        }
        "ipv4_ttl" => {
            let Some(ip) = ip.filter(|ip| ip.v4) else { return false };
            f[ip.l3 + 8] = pick(rng, &[0, 1, 255]);
            true
        }
        "ipv4_fragment" => {
            let Some(ip) = ip.filter(|ip| ip.v4) else { return false };
            set16(f, ip.l3 + 6, pick(rng, &[0x2000, 0x0001, 0x1fff, 0x4000, 0x8000, 0x2001, 0]));
            true
        }
        "ipv6_payload_length" => {
            let Some(ip) = ip.filter(|ip| !ip.v4) else { return false };
            let cur = (ip.end - ip.l3 - 40) as u16;
            let room = f.len().saturating_sub(ip.l3 + 40) as u16;
            set16(f, ip.l3 + 4, pick(rng, &[0, 7, 8, 19, cur.wrapping_sub(1), cur.wrapping_add(1), 0xffff, room.wrapping_add(1)]));
            false
        }
        "tcp_data_offset" => {
            let Some(ip) = ip.filter(|ip| ip.proto == TCP) else { return false };
            if f.len() > ip.l4() + 12 {
                f[ip.l4() + 12] = (below(rng, 16) as u8) << 4;
            }
            false
        }
        "tcp_flags" => {
            let Some(ip) = ip.filter(|ip| ip.proto == TCP) else { return false };
            if f.len() > ip.l4() + 13 {
                let r = rng.next_u32() as u8;
                f[ip.l4() + 13] = pick(rng, &[0x02, 0x10, 0x01, 0x04, 0x12, 0x00, 0xff, 0x11, 0x14, r]);
            }
            false
        }
        "port_edge" => {
            let Some(ip) = ip.filter(|ip| matches!(ip.proto, TCP | UDP)) else { return false };
            set16(f, ip.l4() + 2 * below(rng, 2), pick(rng, &[0, 65535]));
            false
        }
        "address" => {
            let Some(ip) = ip else { return false };
            let a = edge_address(model, ip.src, rng);
            let (src_at, len) = if ip.v4 { (12, 4) } else { (8, 16) };
            let at = ip.l3 + src_at + len * below(rng, 2);
            f[at..at + len].copy_from_slice(&a);
            ip.v4
        }
        "icmp_type_code" => {
            let Some(ip) = ip.filter(|ip| matches!(ip.proto, wire::ICMP | wire::ICMPV6)) else { return false };
            if f.len() >= ip.l4() + 2 {
                let types: &[u8] = if ip.v4 { &[0, 3, 4, 5, 8, 11, 12, 13] } else { &[1, 2, 3, 4, 128, 129, 135, 136] };
                if below(rng, 2) == 0 {
                    f[ip.l4()] = pick(rng, types);
                } else {
                    f[ip.l4() + 1] = pick(rng, &[0, 1, 3, 4, 255]);
                }
            }
            false
        }
        "quoted_field" => {
            let Some(q) = ip.and_then(|ip| ip.quoted(f)) else { return false };
            match below(rng, 5) {
                0 if q.v4 => set16(f, q.l3 + 2, pick(rng, &[0, 19, 20, 0xffff, ((q.end - q.l3) as u16).wrapping_add(1)])),
                0 => set16(f, q.l3 + 4, pick(rng, &[0, 7, 0xffff])),
                1 => f[q.l3 + if q.v4 { 9 } else { 6 }] = pick(rng, &[TCP, UDP, 1, 58, 0]),
                2 => {
                    let a = edge_address(model, q.src, rng);
                    let (src_at, len) = if q.v4 { (12, 4) } else { (8, 16) };
                    let at = q.l3 + src_at + len * below(rng, 2);
                    f[at..at + len].copy_from_slice(&a);
                }
                3 => {
                    let (at, r) = (q.l4() + 2 * below(rng, 2), rng.next_u32() as u16);
                    set16(f, at, pick(rng, &[0, 65535, r]));
                }
                _ if q.v4 => {
                    f[q.l3] = 0x40 | below(rng, 16) as u8;
                    if below(rng, 2) == 0 {
                        wire::fix_ipv4_checksum(f, q.l3);
                    }
                }
                _ => f[q.l3] = pick(rng, &[0x60, 0x40, 0x00]),
            }
            false
        }
        "vlan_tag" => {
            if f.len() >= 14 {
                let tpid: u16 = pick(rng, &[wire::ETH_8021Q, wire::ETH_8021Q, wire::ETH_8021AD]);
                let mut tag = tpid.to_be_bytes().to_vec();
                tag.extend_from_slice(&(below(rng, 4096) as u16).to_be_bytes());
                f.splice(12..12, tag);
            }
            false
        }
        "fix_checksums" => {
            wire::fix_checksums(f);
            false
        }
        _ => false,
    }
}

/// Mutates `f` in place: none (the seed itself) one time in eight, else one to three
/// mutations, and when one touched an IPv4 header its checksum is recomputed half the time.
/// Returns the names of the mutations applied.
pub fn mutate(model: &Model, f: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> Vec<&'static str> {
    if below(rng, 8) == 0 {
        return Vec::new();
    }
    let n = 1 + below(rng, 3);
    let mut applied = Vec::with_capacity(n);
    let mut touched_v4 = false;
    for _ in 0..n {
        let m = below(rng, MUTATIONS.len());
        touched_v4 |= apply(model, m, f, rng);
        applied.push(MUTATIONS[m]);
    }
    if touched_v4
        && below(rng, 2) == 0
        && let Some(ip) = wire::outer(f)
    {
        wire::fix_ipv4_checksum(f, ip.l3);
    }
    applied
}
