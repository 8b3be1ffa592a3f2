//! Multi-buffer (jumbo) frames through the real XDP program (BPF_PROG_TEST_RUN).
//!
//! The kernel gives a frags-aware XDP program a test frame larger than its linear buffer (a
//! page less 256 bytes of headroom and the shared info: 3,520 bytes on 4 KiB pages) as that
//! buffer followed by page-sized fragments, as a driver hands it a jumbo frame. The program
//! reads the headers from the first buffer; its length checks, byte counters and FIB lookups
//! use the whole frame. Every case checks the exact output bytes, the payload included.
//! Needs root.

use lb_common::{
    counters::Reason,
    limits::{XDP_HEADROOM, XDP_SHARED_INFO},
    maps::*,
};
use lb_tests::{fixture::*, harness::*, packet::*};
use lb_userspace::dataplane::Service;

/// Payload of the jumbo frames: their IP packets (8,040 and 8,060 bytes) fit an MTU of 9,000
/// and take the linear buffer and two fragments.
const JUMBO_PAYLOAD: usize = 8000;
/// The largest linear buffer BPF_PROG_TEST_RUN gives an XDP program on 4 KiB pages: what lies
/// beyond it reaches the program only as fragments.
const TEST_RUN_LINEAR: usize = (4096 - XDP_HEADROOM - XDP_SHARED_INFO) as usize;

/// `f` carrying [`JUMBO_PAYLOAD`] bytes of a pattern that repeats every 251 bytes (no page-sized
/// period, so a fragment copied to the wrong place shows).
fn jumbo(mut f: Frame) -> Frame {
    f.payload = (0..JUMBO_PAYLOAD).map(|i| (i % 251) as u8).collect();
    assert!(f.bytes().len() > 2 * TEST_RUN_LINEAR, "the frame must span the linear buffer and fragments");
    f
}

/// A client's jumbo segment of an established flow goes to its backend whole: headers
/// rewritten, payload unchanged, the whole length counted. Then the backend's jumbo reply goes
/// back to the client translated, over a client side whose MTU takes it.
fn jumbo_round_trip(svc: &Service, syn: Frame) {
    let lb = setup(&[svc]);
    lb.netns().unwrap().exec(&["ip", "link", "set", CLIENT_SIDE_DEV, "mtu", "9000"]);
    let chosen = establish(&lb, svc, &syn);
    let (bip, bport) = backend_endpoint(svc, chosen);
    let before = lb.dp.maps.vip_traffic(svc.id).unwrap();

    let data = jumbo(with_flags(&syn, ACK));
    let run = lb.run(&data.bytes());
    assert_eq!(run.action, XDP_TX, "jumbo segment verdict");
    assert_eq!(run.out, to_endpoint(&data, bip, bport, backend_mac(chosen), LB_MAC).bytes(), "jumbo segment rewritten to the backend");
    verify_checksums(&run.out).expect("jumbo segment checksums");
    assert_eq!(run.counted, vec![(Reason::ForwardToBackend, 1), (Reason::Stateless, 1)]);

    let reply = jumbo(reply_of(&syn, chosen, bip, bport, ACK));
    let run = lb.run(&reply.bytes());
    assert_eq!(run.action, XDP_REDIRECT, "jumbo reply verdict");
    assert_eq!(run.out, translated(&reply, &syn).bytes(), "jumbo reply translated to the VIP");
    verify_checksums(&run.out).expect("jumbo reply checksums");
    assert_eq!(run.counted, vec![(Reason::ReplyToClient, 1)]);

    let after = lb.dp.maps.vip_traffic(svc.id).unwrap();
    let bytes = (data.bytes().len() + reply.bytes().len()) as u64;
    assert_eq!((after.packets - before.packets, after.bytes - before.bytes), (2, bytes), "VIP counters: whole frames");
}

#[test]
fn ipv4_jumbo_segment_and_reply_are_forwarded_whole() {
    jumbo_round_trip(&pool4(PROTO_TCP), from_client(CLIENT4, VIP4, tcp(40000, 80, SYN)));
}

#[test]
fn ipv6_jumbo_segment_and_reply_are_forwarded_whole() {
    jumbo_round_trip(&pool6(PROTO_TCP), from_client(CLIENT6, VIP6, tcp(50000, 443, SYN)));
}

#[test]
fn ip_length_beyond_the_whole_frame_is_dropped() {
    // The IP header still claims the whole packet, the frame lacks its last bytes: still far
    // beyond the linear buffer, but short of the IP length.
    for (svc, syn) in [
        (pool4(PROTO_TCP), from_client(CLIENT4, VIP4, tcp(40000, 80, SYN))),
        (pool6(PROTO_TCP), from_client(CLIENT6, VIP6, tcp(50000, 443, SYN))),
    ] {
        let lb = setup(&[&svc]);
        establish(&lb, &svc, &syn);
        let whole = jumbo(with_flags(&syn, ACK)).bytes();
        let short = &whole[..whole.len() - 1];
        let run = lb.run(short);
        assert_eq!(run.action, XDP_DROP, "{}: a frame shorter than its IP length", syn.dst);
        assert_eq!(run.counted, vec![(Reason::DropBadLength, 1)]);
    }
}

#[test]
fn jumbo_reply_beyond_the_client_sides_mtu_goes_to_the_kernel() {
    // The FIB lookup is asked for the whole packet (8,060 bytes over IPv4): above the client
    // side's MTU of 4,000 it answers "fragmentation needed", and the translated reply goes to
    // the kernel, which fragments it or signals the path MTU. Its first buffer alone (3,506
    // bytes of IP) would fit.
    let svc = pool4(PROTO_TCP);
    let lb = setup(&[&svc]);
    lb.netns().unwrap().exec(&["ip", "link", "set", CLIENT_SIDE_DEV, "mtu", "4000"]);
    let syn = from_client(CLIENT4, VIP4, tcp(40001, 80, SYN));
    let chosen = establish(&lb, &svc, &syn);
    let (bip, bport) = backend_endpoint(&svc, chosen);
    let reply = jumbo(reply_of(&syn, chosen, bip, bport, ACK));
    let run = lb.run(&reply.bytes());
    assert_eq!(run.action, XDP_PASS, "a reply above the path's MTU");
    let mut want = translated(&reply, &syn);
    (want.dst_mac, want.src_mac) = (reply.dst_mac, reply.src_mac);
    assert_eq!(run.out, want.bytes(), "translated, MACs untouched, for the kernel to forward");
    assert_eq!(run.counted, vec![(Reason::PassToKernelRoute, 1)]);
}
