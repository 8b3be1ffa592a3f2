//! The backend's decapsulation program (`lb-ebpf/src/bin/decap.rs`) through the kernel
//! (BPF_PROG_TEST_RUN): every encapsulation of `lb_common::encap` stripped to exactly the inner
//! packet behind the original MAC addresses, and everything else passed untouched and counted
//! under its reason. Then the loader (`lb_userspace::decap`) on a veth in a namespace: an
//! encapsulated packet reaches a socket bound to the VIP on the backend's loopback, and detach
//! leaves nothing behind. Expected frames are built from scratch (`lb_tests::encap`,
//! `lb_tests::packet`). Needs root.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use aya::programs::{TestRun, TestRunOptions};
use lb_common::encap::DecapReason;
use lb_tests::{
    encap::{Outer, encapsulate, encapsulate_packet, ip_packet, outer_len},
    harness::{CLIENT4, CLIENT6, VIP4, VIP6, XDP_PASS, from_client, require_root, tcp, udp},
    netns::Netns,
    packet::{Frame, checksum, verify_checksums},
    packet_socket::PacketSocket,
};
use lb_userspace::{
    config::XdpMode,
    decap::{self, DecapAttached, DecapProgram},
};

/// The load balancer's outer source addresses.
const LB4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const LB6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbe, 0, 0, 0, 0, 1));
/// The backend's tunnel endpoints.
const END4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
const END6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbe, 0, 0, 0, 0, 2));
/// A VIP the backend does not serve.
const OTHER_VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99));
/// The default GUE port.
const GUE: u16 = 6080;
/// GUE from the fixtures' flow-hash source port to the default port.
const GUE_DEFAULT: Outer = Outer::Gue { sport: 41000, dport: GUE };

/// The program for both endpoints and both VIPs, GUE port `gue_port`.
fn load(gue_port: u16) -> DecapProgram {
    require_root();
    DecapProgram::load(&[END4, END6], &[VIP4, VIP6], gue_port).expect("loading the decapsulation program")
}

/// One run: the verdict, the frame as the program left it and the counters that changed.
fn run(p: &DecapProgram, frame: &[u8]) -> (u32, Vec<u8>, Vec<(DecapReason, u64)>) {
    let before = p.counters().expect("counters");
    let mut out = vec![0u8; frame.len() + 256];
    let result = p
        .program()
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    let after = p.counters().expect("counters");
    let counted = DecapReason::ALL.iter().filter(|r| after.get(**r) != before.get(**r)).map(|r| (*r, after.get(*r) - before.get(*r))).collect();
    (result.return_value, out, counted)
}

/// Checks that `frame` passes untouched, counted under `reason`.
fn expect_untouched(p: &DecapProgram, frame: &[u8], reason: DecapReason, what: &str) {
    let (action, out, counted) = run(p, frame);
    assert_eq!(action, XDP_PASS, "{what}: verdict");
    assert_eq!(out, frame, "{what}: frame changed");
    assert_eq!(counted, vec![(reason, 1)], "{what}: counters");
}

/// The inner flows: TCP and UDP, IPv4 and IPv6, client → VIP.
fn inner(v6: bool, tcp_flow: bool) -> Frame {
    let (src, dst) = if v6 { (CLIENT6, VIP6) } else { (CLIENT4, VIP4) };
    from_client(src, dst, if tcp_flow { tcp(40000, 80, 0x02) } else { udp(40000, 53) })
}

/// Every (outer endpoint, inner family, carrier) the load balancer may send.
fn formats() -> Vec<(IpAddr, bool, Outer, &'static str)> {
    vec![
        (END4, false, Outer::Ip, "IPv4-in-IPv4"),
        (END6, true, Outer::Ip, "IPv6-in-IPv6"),
        (END6, false, Outer::Ip, "IPv4-in-IPv6"),
        (END4, false, GUE_DEFAULT, "GUE/IPv4, inner IPv4"),
        (END4, true, GUE_DEFAULT, "GUE/IPv4, inner IPv6"),
        (END6, false, GUE_DEFAULT, "GUE/IPv6, inner IPv4"),
        (END6, true, GUE_DEFAULT, "GUE/IPv6, inner IPv6"),
    ]
}

fn lb_of(endpoint: IpAddr) -> IpAddr {
    if endpoint.is_ipv4() { LB4 } else { LB6 }
}

#[test]
fn every_format_is_stripped_to_the_inner_packet_behind_the_original_macs() {
    let p = load(GUE);
    for (end, v6, how, name) in formats() {
        for tcp_flow in [true, false] {
            let inner = inner(v6, tcp_flow);
            let frame = encapsulate(&inner, lb_of(end), end, how);
            let (action, out, counted) = run(&p, &frame);
            assert_eq!(action, XDP_PASS, "{name}: verdict");
            // The expected frame: the inner flow's own frame, built from scratch with the same MACs.
            assert_eq!(out, inner.bytes(), "{name} (tcp: {tcp_flow}): output");
            assert_eq!(u16::from_be_bytes([out[12], out[13]]), if v6 { 0x86DD } else { 0x0800 }, "{name}: EtherType");
            verify_checksums(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(counted, vec![(DecapReason::Decapsulated, 1)], "{name}: counters");
        }
    }
}

#[test]
fn the_gue_port_is_set_at_load_time() {
    let p = load(7000);
    let inner = inner(false, false);
    let on_7000 = encapsulate(&inner, LB4, END4, Outer::Gue { sport: 41000, dport: 7000 });
    let (action, out, counted) = run(&p, &on_7000);
    assert_eq!((action, out), (XDP_PASS, inner.bytes()), "GUE to the configured port");
    assert_eq!(counted, vec![(DecapReason::Decapsulated, 1)]);
    expect_untouched(&p, &encapsulate(&inner, LB4, END4, GUE_DEFAULT), DecapReason::NotEncapsulated, "GUE to 6080 with port 7000 set");
}

#[test]
fn frames_for_other_endpoints_or_vips_pass_untouched() {
    let p = load(GUE);
    for (end, v6, how, name) in formats() {
        let other_end: IpAddr = if end.is_ipv4() { "198.51.100.3".parse().unwrap() } else { "2001:db8:be::3".parse().unwrap() };
        let frame = encapsulate(&inner(v6, true), lb_of(end), other_end, how);
        expect_untouched(&p, &frame, DecapReason::NotForUs, &format!("{name} to another endpoint"));
        let mut not_served = inner(v6, true);
        not_served.dst = if v6 { "2001:db8::99".parse().unwrap() } else { OTHER_VIP4 };
        let frame = encapsulate(&not_served, lb_of(end), end, how);
        expect_untouched(&p, &frame, DecapReason::NotServed, &format!("{name} to a VIP not served"));
    }
    let wrong_port = encapsulate(&inner(false, true), LB4, END4, Outer::Gue { sport: 41000, dport: 6081 });
    expect_untouched(&p, &wrong_port, DecapReason::NotEncapsulated, "UDP to another port");
    expect_untouched(&p, &inner(false, true).bytes(), DecapReason::NotEncapsulated, "plain TCP to the VIP");
    expect_untouched(&p, &inner(true, false).bytes(), DecapReason::NotEncapsulated, "plain UDP to the IPv6 VIP");
    let mut arp = inner(false, true).bytes();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    expect_untouched(&p, &arp, DecapReason::NotEncapsulated, "ARP EtherType");
}

#[test]
fn a_frame_cut_anywhere_in_its_headers_passes_untouched_as_malformed() {
    let p = load(GUE);
    for (end, v6, how, name) in formats() {
        let frame = encapsulate(&inner(v6, true), lb_of(end), end, how);
        // Every length from the bare Ethernet header up to one byte short of the inner
        // header's end: each header boundary and every byte between them.
        let headers = 14 + outer_len(end, how) + if v6 { 40 } else { 20 };
        for len in 14..headers {
            expect_untouched(&p, &frame[..len], DecapReason::Malformed, &format!("{name} cut at {len}"));
        }
    }
}

#[test]
fn an_inner_version_the_outer_header_does_not_announce_passes_untouched() {
    let p = load(GUE);
    let v4 = inner(false, true);
    let v6 = inner(true, true);
    // Next header 41 (IPv6) carrying an IPv4 packet.
    let mut v6_carrying_v4 = encapsulate(&v4, LB6, END6, Outer::Ip);
    assert_eq!(v6_carrying_v4[14 + 6], 4);
    v6_carrying_v4[14 + 6] = 41;
    expect_untouched(&p, &v6_carrying_v4, DecapReason::Malformed, "next header 41 carrying IPv4");
    // Protocol 4 carrying an IPv6 packet.
    let packet6 = ip_packet(&v6);
    let mut ipip = encapsulate_packet(&v6, &packet6, LB4, END4, Outer::Ip);
    assert_eq!(ipip[14 + 9], 41);
    ipip[14 + 9] = 4;
    ipip[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = checksum(0, &ipip[14..34]);
    ipip[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    expect_untouched(&p, &ipip, DecapReason::Malformed, "protocol 4 carrying IPv6");
    // GUE whose payload is a variant 0 GUE header (first two bits 00), or IP version 5.
    for first in [0x00u8, 0x50] {
        let mut packet = ip_packet(&v4);
        packet[0] = first;
        expect_untouched(&p, &encapsulate_packet(&v4, &packet, LB4, END4, GUE_DEFAULT), DecapReason::Malformed, &format!("GUE payload starting {first:#04x}"));
    }
    // IPv4 inner header length below five words.
    let mut short_ihl = ip_packet(&v4);
    short_ihl[0] = 0x44;
    expect_untouched(&p, &encapsulate_packet(&v4, &short_ihl, LB4, END4, Outer::Ip), DecapReason::Malformed, "inner IHL 4");
}

#[test]
fn tagged_frames_outer_options_and_outer_fragments_pass_untouched() {
    let p = load(GUE);
    let frame = encapsulate(&inner(false, true), LB4, END4, Outer::Ip);
    // 802.1Q: not looked into; the program belongs on the VLAN interface.
    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    tagged.extend_from_slice(&frame[12..]);
    expect_untouched(&p, &tagged, DecapReason::Vlan, "802.1Q-tagged IPIP");
    // Outer IPv4 with a four-byte option (NOPs, IHL 6, lengths and checksum from scratch).
    let mut options = frame[..34].to_vec();
    options.extend_from_slice(&[1, 1, 1, 1]);
    options.extend_from_slice(&frame[34..]);
    options[14] = 0x46;
    let total = (options.len() - 14) as u16;
    options[16..18].copy_from_slice(&total.to_be_bytes());
    options[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(0, &options[14..38]);
    options[24..26].copy_from_slice(&c.to_be_bytes());
    expect_untouched(&p, &options, DecapReason::Ipv4Options, "outer IPv4 options");
    // Outer first fragment (MF) and a later one (offset 8 bytes).
    for frags in [0x2000u16, 0x0001] {
        let mut fragment = frame.clone();
        fragment[20..22].copy_from_slice(&frags.to_be_bytes());
        fragment[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(0, &fragment[14..34]);
        fragment[24..26].copy_from_slice(&c.to_be_bytes());
        expect_untouched(&p, &fragment, DecapReason::Fragment, &format!("outer fragment {frags:#06x}"));
    }
}

/// Removes the decapsulation program from an interface on drop (also when the test fails).
struct Detach(&'static str);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = decap::detach(self.0);
    }
}

/// The backend side of the end-to-end test: a namespace with veth `dxb` (the backend's NIC,
/// tunnel endpoint END4/END6, the program attached) and its peer `dxp` (where the test sends
/// from), the VIPs on loopback, a route back to the clients through `dxb`.
fn backend_ns(dev: &'static str, peer: &'static str) -> Netns {
    let ns = Netns::new("decap");
    for cmd in [
        vec!["ip", "link", "add", dev, "type", "veth", "peer", "name", peer],
        vec!["ip", "link", "set", dev, "up"],
        vec!["ip", "link", "set", peer, "up"],
        vec!["ip", "addr", "add", "198.51.100.2/24", "dev", dev],
        vec!["ip", "addr", "add", "2001:db8:be::2/64", "dev", dev, "nodad"],
        vec!["ip", "addr", "add", "10.0.0.1/32", "dev", "lo"],
        vec!["ip", "addr", "add", "2001:db8::1/128", "dev", "lo", "nodad"],
        vec!["ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.1", "dev", dev],
        vec!["ip", "neigh", "add", "198.51.100.1", "lladdr", "02:1b:00:00:00:01", "dev", dev, "nud", "permanent"],
    ] {
        ns.exec(&cmd);
    }
    ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
    ns.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0");
    ns
}

#[test]
fn an_attached_program_delivers_encapsulated_packets_to_the_vip_and_detach_leaves_nothing() {
    require_root();
    // Interface names unique per process (the pins live in the one bpffs of the host; a killed
    // process's are swept by `lb_tests::orphans`).
    let dev: &'static str = Box::leak(format!("dxb{}", std::process::id()).into_boxed_str());
    let peer: &'static str = Box::leak(format!("dxp{}", std::process::id()).into_boxed_str());
    let ns = backend_ns(dev, peer);
    let backend_mac = ns.mac(dev);
    ns.run_in(move || {
        let _guard = Detach(dev);
        let attached = decap::attach(dev, &[END4, END6], &[VIP4, VIP6], GUE).expect("attach");
        // veth takes XDP in driver mode.
        assert_eq!(attached, DecapAttached::New(XdpMode::Driver));
        let dir = decap::pin_dir(dev);
        assert!(dir.join("link").exists() && dir.join("DECAP_STATS").exists(), "pins in {}", dir.display());
        assert!(lb_userspace::dataplane::link_xdp::query(dev).expect("link state").attached.is_some(), "program on the link");
        let sender = PacketSocket::bind(peer).expect("packet socket on the peer");
        let capture = PacketSocket::bind(dev).expect("packet socket on the backend's NIC");
        // UDP: IPv4 over IPIP, and IPv6 over GUE/IPv6, each received by a socket bound to the VIP.
        for (vip, end, how) in [(VIP4, END4, Outer::Ip), (VIP6, END6, GUE_DEFAULT)] {
            let socket = UdpSocket::bind(SocketAddr::new(vip, 5353)).expect("UDP socket on the VIP");
            socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let client = if vip.is_ipv4() { CLIENT4 } else { CLIENT6 };
            let mut inner = from_client(client, vip, udp(40001, 5353));
            inner.dst_mac = backend_mac;
            inner.payload = b"through the tunnel".to_vec();
            let frame = encapsulate(&inner, lb_of(end), end, how);
            let mut buf = [0u8; 64];
            let got = (0..10).find_map(|_| {
                sender.send(&frame).expect("send");
                socket.recv_from(&mut buf).ok()
            });
            let (n, from) = got.unwrap_or_else(|| panic!("nothing reached {vip}:5353 ({how:?})"));
            assert_eq!(&buf[..n], b"through the tunnel");
            assert_eq!(from, SocketAddr::new(client, 40001));
        }
        // TCP: a SYN over GUE/IPv4 to a listener on the VIP is answered from the VIP, straight
        // to the client (its router), not back into the tunnel.
        let listener = std::net::TcpListener::bind(SocketAddr::new(VIP4, 80)).expect("listener on the VIP");
        let mut syn = from_client(CLIENT4, VIP4, tcp(40002, 80, 0x02));
        syn.dst_mac = backend_mac;
        syn.payload = Vec::new();
        let frame = encapsulate(&syn, LB4, END4, GUE_DEFAULT);
        let is_syn_ack = |f: &[u8]| f.len() >= 54 && f[12..14] == [0x08, 0x00] && f[23] == 6 && f[26..30] == [10, 0, 0, 1] && f[30..34] == [192, 0, 2, 10] && f[47] == 0x12;
        let syn_ack = (0..10).find_map(|_| {
            sender.send(&frame).expect("send");
            capture.sent_matching(Duration::from_millis(300), is_syn_ack)
        });
        let syn_ack = syn_ack.expect("a SYN-ACK from the VIP's listener");
        assert_eq!(u16::from_be_bytes([syn_ack[34], syn_ack[35]]), 80);
        assert_eq!(u16::from_be_bytes([syn_ack[36], syn_ack[37]]), 40002);
        drop(listener);
        let counters = decap::status(dev).expect("status").expect("attached");
        assert!(counters.get(DecapReason::Decapsulated) >= 3, "{:?}", counters.named().collect::<Vec<_>>());
        // Attaching again replaces the program on the same link.
        assert_eq!(decap::attach(dev, &[END4], &[VIP4], GUE).expect("attach again"), DecapAttached::Replaced);
        assert!(decap::detach(dev).expect("detach"), "was attached");
        let state = lb_userspace::dataplane::link_xdp::query(dev).expect("link state");
        assert_eq!(state.attached, None, "a program left on {dev}");
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!std::path::Path::new(decap::DECAP_PIN_ROOT).exists() || std::fs::read_dir(decap::DECAP_PIN_ROOT).unwrap().next().is_some(), "an empty pin root left behind");
        assert_eq!(decap::status(dev).expect("status"), None);
        assert!(!decap::detach(dev).expect("detach again"), "nothing to detach");
    });
}

#[test]
fn attach_refusals_name_the_problem_and_leave_nothing() {
    require_root();
    let ns = Netns::new("decap-err");
    ns.run_in(|| {
        let missing = "dxnone0";
        let e = format!("{:#}", decap::attach(missing, &[END4], &[VIP4], GUE).unwrap_err());
        assert!(e.contains("no interface dxnone0"), "{e}");
        assert!(!decap::pin_dir(missing).exists(), "pins left for a refused attach");
        let e = format!("{:#}", decap::attach("lo", &[END4], &[], GUE).unwrap_err());
        assert_eq!(e, "no VIP: the program would decapsulate nothing");
        let e = format!("{:#}", decap::attach("lo", &[], &[VIP4], GUE).unwrap_err());
        assert_eq!(e, "no tunnel endpoint address: the program would decapsulate nothing");
        let e = format!("{:#}", decap::attach("lo", &[END4], &[VIP4], 0).unwrap_err());
        assert_eq!(e, "GUE port 0 is no UDP port");
        assert!(!decap::pin_dir("lo").exists(), "pins left for a refused attach");
    });
}
