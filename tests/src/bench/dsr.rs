//! The direct server return cases of part 1: a TCP VIP in each of the `tunnel`, `gue` and
//! `direct` modes over the benchmark's 8 backends, its frames, and the exact frames the
//! program sends for them, built here from scratch (outer headers by
//! `crate::packet::ip_header`, never by `lb_common`).

use std::{
    cell::Cell,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::ensure;
use lb_common::{
    encap::{DEFAULT_GUE_PORT, FORWARD_DIRECT, FORWARD_GUE, FORWARD_TUNNEL},
    maps::PROTO_TCP,
};
use lb_userspace::dataplane::Service;

use crate::{
    harness::{LB_MAC, addr, backend_endpoint, backend_mac, service},
    packet::{Frame, IpFields, checksum, ip_header, verify_checksums},
};

/// The modes measured, in the order of the results.
pub const MODES: [u8; 3] = [FORWARD_TUNNEL, FORWARD_GUE, FORWARD_DIRECT];

/// The node's address: the outer source of the `tunnel` and `gue` VIPs' packets.
pub const NODE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1));

/// The lowest GUE source port the program may choose (the dynamic range).
const GUE_SPORT_MIN: u16 = 49152;

/// The outer header fields the program writes: the inner TOS (0 in the benchmark's frames),
/// identification 0, DF.
const OUTER: IpFields = IpFields { tos: 0, ident: 0, dont_fragment: true };

/// The VIP of `mode`.
pub fn vip(mode: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11 + MODES.iter().position(|&m| m == mode).unwrap_or(0) as u8))
}

/// The name of `mode` in the results' path names.
pub fn name(mode: u8) -> &'static str {
    match mode {
        FORWARD_TUNNEL => "tunnel",
        FORWARD_GUE => "gue",
        _ => "direct",
    }
}

/// The service of `mode`: [`vip`]`(mode)`:80 over TCP with `backends` on port 80 (a DSR
/// backend serves the VIP's own port) in slots from `first_id`, the node's address as outer
/// source, the default GUE port and no MTU check.
pub fn service_of(mode: u8, id: u32, first_id: u32, backends: &[IpAddr]) -> Service {
    let pool: Vec<(IpAddr, u16, u32)> = backends.iter().map(|&b| (b, 80, 1)).collect();
    let mut svc = service(id, vip(mode), 80, PROTO_TCP, first_id, &pool);
    for b in &mut svc.backends {
        b.backend.forwarding = mode;
        b.backend.vip_id = id as u16;
        if mode != FORWARD_DIRECT {
            b.backend.tunnel.src = addr(NODE);
            b.backend.tunnel.gue_port = DEFAULT_GUE_PORT;
        }
    }
    svc
}

/// The mode of a service built by [`service_of`].
pub fn mode_of(svc: &Service) -> u8 {
    svc.backends.first().map_or(FORWARD_DIRECT, |b| b.backend.forwarding)
}

/// What the program sends for the frames of one flow of a DSR service. A `gue` flow's UDP
/// source port comes from its hash: the first output gives it (it must be in the dynamic
/// range), and every later frame of the flow must carry the same.
pub struct Expect<'a> {
    svc: &'a Service,
    gue_sport: Cell<Option<u16>>,
}

impl<'a> Expect<'a> {
    /// For a flow of `svc`.
    pub fn new(svc: &'a Service) -> Expect<'a> {
        Expect { svc, gue_sport: Cell::new(None) }
    }

    /// The frame the program should send for client frame `f` to backend `id`, given the
    /// frame it sent (`out`, read for the GUE source port only).
    pub fn frame(&self, id: u32, f: &Frame, out: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mode = mode_of(self.svc);
        let inner = f.bytes();
        let mut want = Vec::with_capacity(inner.len() + 28);
        want.extend_from_slice(&backend_mac(id));
        want.extend_from_slice(&LB_MAC);
        if mode == FORWARD_DIRECT {
            want.extend_from_slice(&inner[12..]);
            return Ok(want);
        }
        let (backend, _) = backend_endpoint(self.svc, id);
        let packet = &inner[14..];
        if mode == FORWARD_TUNNEL {
            want.extend_from_slice(&ip_header(NODE, backend, 4, packet.len(), OUTER));
            want.extend_from_slice(packet);
            return Ok(want);
        }
        ensure!(out.len() >= 36, "a GUE frame of {} bytes", out.len());
        let sport = u16::from_be_bytes([out[34], out[35]]);
        ensure!(sport >= GUE_SPORT_MIN, "GUE source port {sport} is not in the dynamic range");
        let first = self.gue_sport.get().unwrap_or(sport);
        self.gue_sport.set(Some(first));
        ensure!(sport == first, "GUE source port {sport}, not the flow's {first}");
        want.extend_from_slice(&ip_header(NODE, backend, 17, 8 + packet.len(), OUTER));
        want.extend_from_slice(&sport.to_be_bytes());
        want.extend_from_slice(&DEFAULT_GUE_PORT.to_be_bytes());
        want.extend_from_slice(&((8 + packet.len()) as u16).to_be_bytes());
        want.extend_from_slice(&[0, 0]);
        want.extend_from_slice(packet);
        Ok(want)
    }
}

/// Checks the checksums of a frame sent in any mode from scratch: an IPv4 outer header's,
/// then those of the carried packet (behind the frame's Ethernet header).
pub fn verify(frame: &[u8]) -> Result<(), String> {
    let outer = match (frame.get(12..14), frame.get(14 + 9)) {
        (Some([0x08, 0x00]), Some(4)) => 20,
        (Some([0x08, 0x00]), Some(17)) if frame.get(36..38) == Some(&DEFAULT_GUE_PORT.to_be_bytes()[..]) => 28,
        _ => return verify_checksums(frame),
    };
    if checksum(0, &frame[14..34]) != 0 {
        return Err("outer IPv4 header checksum".into());
    }
    let mut inner = frame[..14].to_vec();
    inner.extend_from_slice(&frame[14 + outer..]);
    verify_checksums(&inner).map_err(|e| format!("carried packet: {e}"))
}
