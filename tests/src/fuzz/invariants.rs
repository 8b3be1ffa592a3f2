//! The invariants, written once: [`check`] takes an input frame, the program's run on it and
//! the model of the configuration, and returns every rule the run broke. The input's roles
//! (client → VIP, backend → client, ICMP error either way, fragment) and the sanity rules it
//! breaks are classified here, from the bytes and the model, independently of the data path.

use std::net::IpAddr;

use lb_common::{
    counters::Reason,
    encap::{DEFAULT_GUE_PORT, FORWARD_DIRECT, FORWARD_GUE},
    maps::FlowKey,
};

use super::{
    model::{Model, is_martian},
    wire::{self, Ip, TCP, UDP},
};
use crate::{
    fixture::{NODE4, NODE6},
    harness::{LB_MAC, Run, XDP_ABORTED, XDP_PASS, XDP_REDIRECT, XDP_TX, addr, backend_mac},
};

/// A broken invariant.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which invariant: `aborted`, `counted_once`, `well_formed`, `endpoint`, `dsr` or
    /// `sanity`.
    pub invariant: &'static str,
    /// What exactly was wrong.
    pub detail: String,
}

/// What an input frame is to the data path, by service index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A client's TCP/UDP packet to the VIP of service `i`.
    ToVip(usize),
    /// An IPv4 fragment to the fragments VIP of service `i`.
    FragmentToVip(usize),
    /// A backend's TCP/UDP packet from its endpoint in service `i`.
    FromBackend(usize),
    /// An ICMP error to the VIP of service `i` about a packet it sent.
    IcmpToVip(usize),
    /// An ICMP error about a client's packet to a backend of service `i`.
    IcmpFromBackend(usize),
}

/// A role and the sanity rule the input breaks for it, if any.
pub type Classified = Vec<(Role, Option<&'static str>)>;

/// The rules on the outer IP header every role shares.
fn ip_rule(f: &[u8], ip: &Ip) -> Option<&'static str> {
    if ip.v4 && ip.hdr_len < 20 {
        Some("IPv4 IHL below 5")
    } else if !ip.header_checksum_ok(f) {
        Some("bad IPv4 header checksum")
    } else if ip.end < ip.l4() {
        Some("IP length below the header")
    } else if ip.end > f.len() {
        Some("IP length beyond the frame")
    } else {
        None
    }
}

/// The roles of input `f` and the sanity rule each breaks.
pub fn classify(model: &Model, f: &[u8]) -> Classified {
    let mut roles = Vec::new();
    let Some(ip) = wire::outer(f) else { return roles };
    let ip_bad = ip_rule(f, &ip);
    let source = |a: IpAddr| model.bad_source(a).then_some("martian source");
    if ip.fragment {
        if let Some(i) = model.fragment_vip(ip.dst, ip.proto) {
            roles.push((Role::FragmentToVip(i), ip_bad.or(source(ip.src))));
        }
        return roles;
    }
    if matches!(ip.proto, TCP | UDP) {
        let Some((sport, dport)) = wire::ports(f, ip.l4()) else { return roles };
        let transport = if ip.proto == TCP && f.len() > ip.l4() + 12 && f[ip.l4() + 12] >> 4 < 5 {
            Some("TCP data offset below 5")
        } else {
            let hdr = if ip.proto == TCP { f.get(ip.l4() + 12).map_or(20, |d| (d >> 4) as usize * 4) } else { 8 };
            (ip.end < ip.l4() + hdr).then_some("transport header past the IP length")
        };
        if let Some(i) = model.vip(ip.dst, dport, ip.proto) {
            roles.push((Role::ToVip(i), ip_bad.or(transport).or(source(ip.src))));
        }
        if let Some(i) = model.backend_of(ip.src, sport, ip.proto) {
            let dst = is_martian(ip.dst).then_some("martian destination of a reply");
            roles.push((Role::FromBackend(i), ip_bad.or(transport).or(dst)));
        }
        return roles;
    }
    let Some(q) = ip.quoted(f) else { return roles };
    if q.fragment || (q.v4 && q.hdr_len != 20) || !matches!(q.proto, TCP | UDP) {
        return roles;
    }
    let Some((qsport, qdport)) = wire::ports(f, q.l4()) else { return roles };
    let quote = (ip.end < q.l4() + 8).then_some("quoted packet past the outer IP length");
    let bad = ip_bad.or(quote).or(source(ip.src));
    if ip.dst == q.src
        && let Some(i) = model.vip(q.src, qsport, q.proto)
    {
        roles.push((Role::IcmpToVip(i), bad));
    }
    if let Some(i) = model.backend_of(q.dst, qdport, q.proto) {
        roles.push((Role::IcmpFromBackend(i), bad));
    }
    roles
}

/// Whether output `o` is what `role` allows of input `i`: to a backend of its VIP, or from
/// its VIP.
fn role_matches(model: &Model, role: Role, i: &[u8], ip: &Ip, o: &[u8], oip: &Ip) -> bool {
    let vip_of = |s: usize| (model.vip_ip(&model.services[s].1), model.services[s].1.key.port);
    let ports = |f: &[u8], ip: &Ip| wire::ports(f, ip.l4());
    match role {
        Role::ToVip(s) => {
            let (Some((isp, _)), Some((osp, odp))) = (ports(i, ip), ports(o, oip)) else { return false };
            oip.proto == ip.proto && oip.src == ip.src && osp == isp && model.backends(s).contains(&(oip.dst, odp))
        }
        Role::FragmentToVip(s) => oip.src == ip.src && model.backends(s).iter().any(|(a, _)| *a == oip.dst),
        Role::FromBackend(s) => {
            let (Some((_, idp)), Some((osp, odp))) = (ports(i, ip), ports(o, oip)) else { return false };
            oip.proto == ip.proto && oip.dst == ip.dst && odp == idp && (oip.src, osp) == vip_of(s)
        }
        Role::IcmpToVip(s) => {
            let Some(oq) = oip.quoted(o) else { return false };
            let Some((qsp, _)) = ports(o, &oq) else { return false };
            oip.src == ip.src && oip.dst == oq.src && model.backends(s).contains(&(oq.src, qsp))
        }
        Role::IcmpFromBackend(s) => {
            let Some(oq) = oip.quoted(o) else { return false };
            let Some((_, qdp)) = ports(o, &oq) else { return false };
            let (vip, port) = vip_of(s);
            oip.dst == ip.dst && oip.src == vip && oq.dst == vip && qdp == port
        }
    }
}

/// Whether the quoted IPv4 header of an error is whole inside the outer packet and its
/// checksum right.
fn quoted_header_ok(f: &[u8], ip: &Ip) -> Option<bool> {
    let q = ip.quoted(f)?;
    (q.v4 && q.hdr_len >= 20 && ip.end.min(f.len()) >= q.l3 + q.hdr_len).then(|| q.header_checksum_ok(f))
}

/// The well-formedness rules for frame `o` sent on, compared with input `i`.
fn well_formed(i: &[u8], ip: &Ip, o: &[u8], out: &mut Vec<Violation>) {
    let mut bad = |detail: String| out.push(Violation { invariant: "well_formed", detail });
    let Some(oip) = wire::outer(o) else {
        bad("the frame sent on is not IPv4/IPv6".into());
        return;
    };
    if !oip.header_checksum_ok(o) {
        bad("IPv4 header checksum wrong".into());
    }
    if !oip.lengths_ok(o) {
        bad(format!("IP length inconsistent with the frame: ends at {} in a frame of {} bytes, header ends at {}", oip.end, o.len(), oip.l4()));
        return;
    }
    if oip.proto == TCP && !oip.later_fragment && o.len() > oip.l4() + 12 && o[oip.l4() + 12] >> 4 < 5 {
        bad("TCP data offset below 5".into());
    }
    if ip.transport_checksum_ok(i) == Some(true) && oip.transport_checksum_ok(o) != Some(true) {
        bad(format!("transport (protocol {}) checksum wrong, the input's was right", oip.proto));
    }
    if matches!(ip.proto, wire::ICMP | wire::ICMPV6) {
        if ip.icmp_checksum_ok(i) == Some(true) && oip.icmp_checksum_ok(o) != Some(true) {
            bad("ICMP checksum wrong, the input's was right".into());
        }
        if quoted_header_ok(i, ip) == Some(true) && quoted_header_ok(o, &oip) != Some(true) {
            bad("quoted IPv4 header checksum wrong, the input's was right".into());
        }
        if let (Some(iq), Some(oq)) = (ip.quoted(i), oip.quoted(o)) {
            let before = wire::quoted_transport_sum(i, &iq, ip.end);
            let after = wire::quoted_transport_sum(o, &oq, oip.end);
            if let (Some(b), Some(a)) = (before, after)
                && !wire::same_sum(a, b)
            {
                bad("quoted transport checksum no longer matches the quoted bytes".into());
            }
        }
    }
    let (itail, otail) = (&i[ip.end.min(i.len())..], &o[oip.end.min(o.len())..]);
    if itail != otail {
        bad(format!("bytes after the IP packet changed: {} → {}", wire::hex(itail), wire::hex(otail)));
    }
}

/// What is wrong with output `o` of input `i` (outer header `ip`) for direct server return
/// service `s`: it must be the input unchanged but for its MACs, sent to a backend's MAC
/// (`direct`); or the input's IP packet unchanged inside an outer header from the node to a
/// backend of `s` (`tunnel`, `gue`), a SYN's lowered MSS option and TCP checksum aside; or an
/// ICMP "fragmentation needed" / "packet too big" from the VIP to the client quoting it.
fn carried(model: &Model, s: usize, i: &[u8], ip: &Ip, o: &[u8]) -> Vec<String> {
    let mut bad = Vec::new();
    let slots = model.backend_slots(s);
    let packet = &i[ip.l3..ip.end.clamp(ip.l3, i.len())];
    if model.forwarding(s) == FORWARD_DIRECT {
        if o.len() != i.len() || o[12..] != i[12..] {
            bad.push("direct: the frame changed beyond its MAC addresses".into());
        }
        if !slots.iter().any(|(id, _)| o[..6] == backend_mac(*id)) || o[6..12] != LB_MAC {
            bad.push(format!("direct: sent from {} to {}, not to a backend's MAC", wire::hex(&o[6..12]), wire::hex(&o[..6])));
        }
        return bad;
    }
    let Some(oip) = wire::outer(o) else { return vec!["the frame sent on is not IPv4/IPv6".into()] };
    if !oip.header_checksum_ok(o) {
        bad.push("outer IPv4 header checksum wrong".into());
    }
    if !oip.lengths_ok(o) {
        bad.push(format!("outer IP length inconsistent: ends at {} in a frame of {} bytes", oip.end, o.len()));
        return bad;
    }
    if matches!(oip.proto, wire::ICMP | wire::ICMPV6) && oip.src == ip.dst {
        let quote = &o[(oip.l4() + 8).min(o.len())..oip.end];
        let want_type = if ip.v4 { 3 } else { 2 };
        if oip.dst != ip.src || o[oip.l4()] != want_type || oip.icmp_checksum_ok(o) != Some(true) {
            bad.push(format!("too big: the error (type {}) from {} to {} or its checksum is wrong", o[oip.l4()], oip.src, oip.dst));
        }
        if quote.is_empty() || !packet.starts_with(quote) {
            bad.push("too big: the quote is not the packet's beginning".into());
        }
        return bad;
    }
    if oip.end + (i.len() - ip.end.min(i.len())) != o.len() {
        bad.push(format!("outer IP length does not cover the carried packet: ends at {} in a frame of {} bytes", oip.end, o.len()));
        return bad;
    }
    if !slots.iter().any(|(_, a)| *a == oip.dst) || oip.src != if oip.v4 { NODE4 } else { NODE6 } {
        bad.push(format!("carried from {} to {}: not from the node to a backend of its VIP", oip.src, oip.dst));
    }
    let gue = model.forwarding(s) == FORWARD_GUE;
    let inner_at = oip.l4() + if gue { 8 } else { 0 };
    let inner_proto = if packet.first().is_some_and(|b| b >> 4 == 6) { 41 } else { 4 };
    if gue && (oip.proto != UDP || wire::be16(o, oip.l4() + 2) != DEFAULT_GUE_PORT || wire::be16(o, oip.l4() + 4) as usize != oip.end - oip.l4()) {
        bad.push("GUE: not UDP to the GUE port with the right length".into());
    } else if !gue && oip.proto != inner_proto {
        bad.push(format!("tunnel: protocol {} for an inner packet of version {}", oip.proto, packet.first().map_or(0, |b| b >> 4)));
    }
    let inner = &o[inner_at.min(oip.end)..oip.end];
    if inner != packet && !mss_lowered(packet, inner, ip) {
        bad.push(format!("the inner packet changed: {} → {}", wire::hex(packet), wire::hex(inner)));
    }
    // The inner packet is as well formed as NAT's output must be.
    let mut rebuilt = i[..ip.l3].to_vec();
    rebuilt.extend_from_slice(inner);
    rebuilt.extend_from_slice(&o[oip.end..]);
    let mut inner_bad = Vec::new();
    well_formed(i, ip, &rebuilt, &mut inner_bad);
    bad.extend(inner_bad.into_iter().map(|v| format!("inner: {}", v.detail)));
    bad
}

/// Whether `inner` is TCP SYN `packet` with only its MSS option (the first option) lowered and
/// its checksum changed.
fn mss_lowered(packet: &[u8], inner: &[u8], ip: &Ip) -> bool {
    let l4 = ip.hdr_len;
    if ip.proto != TCP || packet.len() != inner.len() || packet.len() < l4 + 24 || packet[l4 + 13] & 0x12 != 0x02 {
        return false;
    }
    let allowed = [l4 + 16, l4 + 17, l4 + 22, l4 + 23];
    let only_allowed = packet.iter().zip(inner).enumerate().all(|(k, (a, b))| a == b || allowed.contains(&k));
    only_allowed && packet[l4 + 20..l4 + 22] == [2, 4] && wire::be16(inner, l4 + 22) < wire::be16(packet, l4 + 22)
}

/// Whether the run sent the frame on: TX, REDIRECT, or PASS with its bytes changed.
pub fn sent_on(input: &[u8], run: &Run) -> bool {
    matches!(run.action, XDP_TX | XDP_REDIRECT) || (run.action == XDP_PASS && run.out != input)
}

/// The connection-table key of an input that breaks a sanity rule for every role it has
/// as a client's packet to a VIP: the key no entry may be created for.
pub fn guarded_key(model: &Model, input: &[u8]) -> Option<FlowKey> {
    let roles = classify(model, input);
    if roles.is_empty() || roles.iter().any(|(_, bad)| bad.is_none()) || !roles.iter().any(|(r, _)| matches!(r, Role::ToVip(_))) {
        return None;
    }
    let ip = wire::outer(input)?;
    let (sport, dport) = wire::ports(input, ip.l4())?;
    Some(FlowKey {
        src: addr(ip.src),
        dst: addr(ip.dst),
        sport,
        dport,
        proto: ip.proto,
        family: if ip.v4 { lb_common::maps::FAMILY_V4 } else { lb_common::maps::FAMILY_V6 },
        pad: [0; 2],
    })
}

/// Every invariant on one run: `input` ran through the program giving `run`; `new_entry`
/// says whether a connection-table or half-open entry appeared for [`guarded_key`].
pub fn check(model: &Model, input: &[u8], run: &Run, new_entry: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    if run.action == XDP_ABORTED {
        out.push(Violation { invariant: "aborted", detail: "XDP_ABORTED".into() });
    }
    let verdicts: Vec<(Reason, u64)> = run.counted.iter().copied().filter(|(r, _)| !r.is_event()).collect();
    if !matches!(verdicts.as_slice(), [(_, 1)]) {
        let names: Vec<String> = verdicts.iter().map(|(r, n)| format!("{}+{n}", r.name())).collect();
        out.push(Violation { invariant: "counted_once", detail: format!("verdict counters moved: [{}]", names.join(", ")) });
    }
    let roles = classify(model, input);
    if new_entry {
        let rule = roles.iter().find_map(|(_, bad)| *bad).unwrap_or("?");
        out.push(Violation { invariant: "sanity", detail: format!("{rule}: a connection-table or half-open entry was created") });
    }
    if !sent_on(input, run) {
        return out;
    }
    let Some(ip) = wire::outer(input) else {
        out.push(Violation { invariant: "endpoint", detail: "a frame that is not IP was sent on".into() });
        return out;
    };
    // A client's packet (or an error) to a direct server return VIP is carried, not rewritten.
    let dsr_role = roles.iter().find_map(|&(role, bad)| match role {
        Role::ToVip(s) | Role::FragmentToVip(s) | Role::IcmpToVip(s) if model.is_dsr(s) => Some((role, s, bad)),
        _ => None,
    });
    if let Some((role, s, bad)) = dsr_role {
        for detail in carried(model, s, input, &ip, &run.out) {
            out.push(Violation { invariant: "dsr", detail });
        }
        if let Some(rule) = bad {
            out.push(Violation { invariant: "sanity", detail: format!("{rule}: sent on ({role:?})") });
        }
        return out;
    }
    well_formed(input, &ip, &run.out, &mut out);
    let Some(oip) = wire::outer(&run.out) else { return out };
    let matching: Vec<&(Role, Option<&'static str>)> =
        roles.iter().filter(|(role, _)| role_matches(model, *role, input, &ip, &run.out, &oip)).collect();
    if matching.is_empty() {
        out.push(Violation {
            invariant: "endpoint",
            detail: format!("sent on neither to a backend of its VIP nor from its VIP: {} → {} (roles {:?})", oip.src, oip.dst, roles),
        });
    } else if let Some(rule) = matching.iter().map(|(_, bad)| *bad).reduce(|a, b| a.and(b)).flatten() {
        out.push(Violation { invariant: "sanity", detail: format!("{rule}: sent on ({:?})", matching[0].0) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{CLIENT4, SYN, VIP4, from_client, tcp};

    fn syn() -> Vec<u8> {
        from_client(CLIENT4, VIP4, tcp(1234, 80, SYN)).bytes()
    }

    #[test]
    fn a_valid_client_frame_is_for_its_vip_and_breaks_no_rule() {
        assert_eq!(classify(&Model::standard(), &syn()), vec![(Role::ToVip(0), None)]);
    }

    #[test]
    fn sanity_rules_are_told_from_the_bytes() {
        let model = Model::standard();
        let mut martian = syn();
        martian[26..30].copy_from_slice(&[127, 0, 0, 1]);
        wire::fix_checksums(&mut martian);
        assert_eq!(classify(&model, &martian), vec![(Role::ToVip(0), Some("martian source"))]);
        let mut short = syn();
        short[16..18].copy_from_slice(&19u16.to_be_bytes());
        wire::fix_ipv4_checksum(&mut short, 14);
        assert_eq!(classify(&model, &short), vec![(Role::ToVip(0), Some("IP length below the header"))]);
        let mut doff = syn();
        doff[46] = 4 << 4;
        assert_eq!(classify(&model, &doff), vec![(Role::ToVip(0), Some("TCP data offset below 5"))]);
        let mut checksum = syn();
        checksum[24] ^= 1;
        assert_eq!(classify(&model, &checksum), vec![(Role::ToVip(0), Some("bad IPv4 header checksum"))]);
        assert!(guarded_key(&model, &checksum).is_some());
        assert!(guarded_key(&model, &syn()).is_none());
    }
}
