//! Forwarding fixtures through the real XDP program in the kernel (BPF_PROG_TEST_RUN): a
//! backend behind another interface (XDP_REDIRECT), and next hops the agent has not resolved,
//! which the data path asks `bpf_fib_lookup` for or leaves to the kernel.
//!
//! BPF_PROG_TEST_RUN without a context runs the program in the calling thread's network
//! namespace with that namespace's loopback (ifindex 1) as the ingress interface, and the FIB
//! lookup uses that namespace's interfaces, routes, neighbours and sysctls. So each case builds
//! a private namespace and runs there (`lb_tests::netns`). As in `fixtures.rs`, every case
//! checks the verdict, the exact output bytes (built from scratch by `lb_tests::packet`) and
//! the counter changes.
//!
//! What `bpf_fib_lookup` needs to answer with a next hop (kernel `bpf_ipv4_fib_lookup` and
//! `bpf_ipv6_fib_lookup`; the first point is shown by
//! `fib_lookup_checks_forwarding_on_the_ingress_interface_only`):
//! - forwarding enabled on the interface in the lookup's `ifindex`, which the data path sets to
//!   the ingress interface: in a test run the loopback. `net.ipv4.ip_forward=1` and
//!   `net.ipv6.conf.all.forwarding=1` switch it on for every interface, `lo` included; with it
//!   off on `lo` alone the lookup fails (`BPF_FIB_LKUP_RET_FWD_DISABLED`) despite a route and a
//!   neighbour, while forwarding off on the egress interface changes nothing.
//! - a unicast route (otherwise `BPF_FIB_LKUP_RET_NOT_FWDED`);
//! - a valid neighbour entry for the next hop (otherwise `BPF_FIB_LKUP_RET_NO_NEIGH`); the
//!   lookup does not start neighbour resolution: no entry appears.
//!
//! The kernel under test has no `dummy` driver, so the backend-side interface is a veth pair
//! (peer up too, for carrier). It is also the better stand-in for a NIC: a dummy interface is
//! NOARP, and a neighbour entry the kernel creates on a NOARP interface holds that interface's
//! own MAC (`arp_constructor`, `ndisc_constructor`), which the FIB would then return.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    counters::Reason,
    maps::{NextHop, PROTO_TCP, PROTO_UDP, Traffic},
};
use lb_tests::{harness::*, netns::Netns, packet::*};
use lb_userspace::dataplane::Service;

const BACKEND4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
const BACKEND6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 1));
const PORT4: u16 = 8080;
const PORT6: u16 = 8443;
/// Backend slots of the IPv4 and the IPv6 service.
const ID4: u32 = 1;
const ID6: u32 = 11;

/// The backend-side interface and the MAC it is created with.
const DEV: &str = "d0";
const DEV_MAC: Mac = [0x02, 0x1b, 0x00, 0x00, 0x00, 0xfe];
/// The backend-side interface's index.
const DEV_INDEX: u32 = 5000;
/// The MAC of both backends in the neighbour table.
const NEIGH_MAC: Mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];


const UNRESOLVED: NextHop = NextHop { ifindex: 0, dst_mac: [0; 6], src_mac: [0; 6] };

fn mac_str(m: Mac) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

fn syn4() -> Frame {
    from_client(CLIENT4, VIP4, tcp(40000, 80, SYN))
}

fn ack4() -> Frame {
    from_client(CLIENT4, VIP4, tcp(40000, 80, ACK))
}

fn dgram6() -> Frame {
    from_client(CLIENT6, VIP6, L4::Udp { sport: 6000, dport: 443, no_checksum: false })
}

/// `f` rewritten to its family's backend and sent from `src_mac` to `dst_mac`.
fn sent(f: &Frame, dst_mac: Mac, src_mac: Mac) -> Frame {
    let (ip, port) = if f.src.is_ipv4() { (BACKEND4, PORT4) } else { (BACKEND6, PORT6) };
    to_endpoint(f, ip, port, dst_mac, src_mac)
}

/// `f` rewritten to its backend, Ethernet header untouched: what the kernel gets on XDP_PASS.
fn rewritten_only(f: &Frame) -> Frame {
    sent(f, f.dst_mac, f.src_mac)
}

/// VIP4:80/TCP with the single backend BACKEND4:8080 reached through `hop4`, and VIP6:443/UDP
/// with BACKEND6:8443 through `hop6`.
fn services(hop4: NextHop, hop6: NextHop) -> Vec<Service> {
    let mut v4 = service(1, VIP4, 80, PROTO_TCP, ID4, &[(BACKEND4, PORT4, 1)]);
    let mut v6 = service(2, VIP6, 443, PROTO_UDP, ID6, &[(BACKEND6, PORT6, 1)]);
    v4.backends[0].backend.hop = hop4;
    v6.backends[0].backend.hop = hop6;
    vec![v4, v6]
}

/// The IPv4 backend's SYN-ACK to the client, as it reaches the load balancer.
fn backend_reply() -> Frame {
    Frame {
        dst_mac: LB_MAC,
        src_mac: backend_mac(ID4),
        vlan: None,
        src: BACKEND4,
        dst: CLIENT4,
        l4: tcp(PORT4, 40000, SYN_ACK),
        payload: b"world!".to_vec(),
    }
}

/// What one program instance did with a sequence of frames.
struct Outcome {
    runs: Vec<Run>,
    /// Traffic counters of the IPv4 and the IPv6 VIP, and of their backends.
    vips: [Traffic; 2],
    backends: [Traffic; 2],
}

/// Loads the program, installs `services` and runs `frames` in order, all inside `ns`, where
/// every interface is one the program may send through.
fn run_in(ns: &Netns, services: Vec<Service>, frames: &[Frame]) -> Outcome {
    run_in_without(ns, &[], services, frames)
}

/// As [`run_in`], but the program does not run on (may not send through) the interfaces with
/// an index in `foreign`.
fn run_in_without(ns: &Netns, foreign: &[u32], services: Vec<Service>, frames: &[Frame]) -> Outcome {
    require_root();
    let frames: Vec<Vec<u8>> = frames.iter().map(Frame::bytes).collect();
    let foreign = foreign.to_vec();
    ns.run_in(move || {
        let mut lb = Lb::load(&test_sizing(0x5eed));
        // This thread is in the namespace, where the indices are resolved.
        for ifindex in lb_tests::netns::thread_interface_indices().into_iter().filter(|i| !foreign.contains(i)) {
            lb.dp.maps.add_port(ifindex).expect("registering an interface");
        }
        for svc in &services {
            lb.dp.maps.apply_service(svc).expect("apply service");
        }
        let runs = frames.iter().map(|f| lb.run(f)).collect();
        let m = &lb.dp.maps;
        Outcome {
            runs,
            vips: [m.vip_traffic(1).unwrap(), m.vip_traffic(2).unwrap()],
            backends: [m.backend_traffic(ID4).unwrap(), m.backend_traffic(ID6).unwrap()],
        }
    })
}

/// Checks one run: verdict, exact bytes, checksums and the single verdict counter it moved (a
/// client's packet to these Maglev VIPs also counts `stateless`; a reply does not).
fn expect(run: &Run, what: &str, action: u32, want: &Frame, reason: Reason) {
    assert_eq!(run.action, action, "{what}: verdict");
    assert_eq!(run.out, want.bytes(), "{what}: output bytes");
    verify_checksums(&run.out).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut counted = vec![(reason, 1)];
    if !what.contains("reply") {
        counted.push((Reason::Stateless, 1));
    }
    assert_eq!(run.counted, counted, "{what}: counters");
}

/// Checks that `frames`, all from the client, were handed to the kernel rewritten.
fn expect_passed(outcome: &Outcome, frames: &[Frame], why: &str) {
    for (run, f) in outcome.runs.iter().zip(frames) {
        let what = format!("{} ({why})", f.dst);
        expect(run, &what, XDP_PASS, &rewritten_only(f), Reason::PassToKernelRoute);
    }
}

/// Checks that `frames`, all from the client, were redirected with the FIB's MACs.
fn expect_resolved(outcome: &Outcome, frames: &[Frame], why: &str) {
    for (run, f) in outcome.runs.iter().zip(frames) {
        let what = format!("{} ({why})", f.dst);
        let want = sent(f, NEIGH_MAC, DEV_MAC);
        expect(run, &what, XDP_REDIRECT, &want, Reason::ForwardToBackend);
    }
}

/// Checks the VIP and backend counters after one flow per family made of these frames.
fn expect_traffic(outcome: &Outcome, v4: &[Frame], v6: &[Frame]) {
    for (i, frames) in [v4, v6].into_iter().enumerate() {
        let bytes = frames.iter().map(|f| f.bytes().len() as u64).sum();
        // A TCP flow's SYN is a new flow; a UDP datagram to a Maglev VIP keeps no state, so
        // it cannot be told from a later one of its flow and is not counted as new.
        let new_flows = u64::from(frames.first().is_some_and(|f| f.proto() == PROTO_TCP));
        let want = Traffic { packets: frames.len() as u64, bytes, new_flows, dropped: 0 };
        assert_eq!(outcome.vips[i], want, "VIP {} counters", i + 1);
        assert_eq!(outcome.backends[i], want, "counters of VIP {}'s backend", i + 1);
    }
}

/// Runs `ip ARGS` (whitespace-separated) inside `ns`.
fn ip(ns: &Netns, args: &str) {
    let args: Vec<&str> = ["ip"].into_iter().chain(args.split_whitespace()).collect();
    ns.exec(&args);
}

/// Adds the veth pair `d0`/`d0p` (both up) and returns `d0`'s index, [`DEV_INDEX`]: above
/// 4,096, as on a long-running host, where the data path once recorded interfaces in an array.
fn add_backend_link(ns: &Netns) -> u32 {
    ip(ns, &format!("link add {DEV} index {DEV_INDEX} address {} type veth peer name d0p", mac_str(DEV_MAC)));
    ip(ns, "link set d0p up");
    ip(ns, &format!("link set {DEV} up"));
    assert_eq!(ns.mac(DEV), DEV_MAC);
    assert_eq!(ns.ifindex(DEV), DEV_INDEX);
    DEV_INDEX
}

/// `d0` on the backends' subnets (connected routes to both backends).
fn add_backend_routes(ns: &Netns) {
    ip(ns, &format!("addr add 10.1.0.254/24 dev {DEV}"));
    ip(ns, &format!("-6 addr add 2001:db8:b::fe/64 dev {DEV} nodad"));
}

/// Permanent neighbour entries for both backends on `d0`.
fn add_backend_neighbours(ns: &Netns) {
    let mac = mac_str(NEIGH_MAC);
    ip(ns, &format!("neigh add 10.1.0.1 lladdr {mac} dev {DEV} nud permanent"));
    ip(ns, &format!("-6 neigh add 2001:db8:b::1 lladdr {mac} dev {DEV} nud permanent"));
}

/// Forwarding on for every interface of the namespace.
fn enable_forwarding(ns: &Netns) {
    ns.sysctl("net.ipv4.ip_forward", "1");
    ns.sysctl("net.ipv6.conf.all.forwarding", "1");
}

/// A namespace whose FIB resolves both backends: route, neighbour and forwarding.
fn resolvable() -> Netns {
    let ns = Netns::new("fwd");
    add_backend_link(&ns);
    add_backend_routes(&ns);
    add_backend_neighbours(&ns);
    enable_forwarding(&ns);
    ns
}

#[test]
fn two_arm_backend_is_redirected_with_its_hops_macs() {
    let ns = Netns::new("fwd");
    let dev = add_backend_link(&ns);
    assert_ne!(dev, 1, "the backend side must not be the ingress interface");
    add_client_side(&ns);
    let hop = |id| NextHop { ifindex: dev, dst_mac: backend_mac(id), src_mac: DEV_MAC };
    let reply = backend_reply();
    let frames = [syn4(), ack4(), reply.clone(), dgram6()];
    let outcome = run_in(&ns, services(hop(ID4), hop(ID6)), &frames);
    let r = &outcome.runs;

    let to_backend = |f: &Frame, id| sent(f, backend_mac(id), DEV_MAC);
    let fwd = Reason::ForwardToBackend;
    expect(&r[0], "IPv4 SYN", XDP_REDIRECT, &to_backend(&frames[0], ID4), fwd);
    expect(&r[1], "IPv4 ACK", XDP_REDIRECT, &to_backend(&frames[1], ID4), fwd);
    // Towards the client by the FIB: out of the client side, to the client's MAC.
    let back = Frame {
        dst_mac: CLIENT_MAC,
        src_mac: LB_MAC,
        src: VIP4,
        l4: tcp(80, 40000, SYN_ACK),
        ..reply
    };
    expect(&r[2], "IPv4 reply", XDP_REDIRECT, &back, Reason::ReplyToClient);
    expect(&r[3], "IPv6 UDP", XDP_REDIRECT, &to_backend(&frames[3], ID6), fwd);
    expect_traffic(&outcome, &frames[..3], &frames[3..]);
}

#[test]
fn a_hop_through_an_interface_the_program_does_not_run_on_is_left_to_the_kernel() {
    // As `two_arm_backend_is_redirected_with_its_hops_macs`, but neither the backend side
    // (`d0`) nor the client side (`cl0`) runs the program: say a management NIC, or a veth
    // whose peer could not take redirected frames. Every packet is rewritten and handed to the
    // kernel with its Ethernet header as it came (addressed to this host), counted apart.
    let ns = Netns::new("fwd");
    let dev = add_backend_link(&ns);
    add_client_side(&ns);
    let cl0 = ns.ifindex(CLIENT_SIDE_DEV);
    let hop = |id| NextHop { ifindex: dev, dst_mac: backend_mac(id), src_mac: DEV_MAC };
    let reply = backend_reply();
    let frames = [syn4(), reply.clone(), dgram6()];
    let outcome = run_in_without(&ns, &[dev, cl0], services(hop(ID4), hop(ID6)), &frames);
    let r = &outcome.runs;
    let pass = Reason::PassNotXdpEgress;
    expect(&r[0], "IPv4 SYN", XDP_PASS, &rewritten_only(&frames[0]), pass);
    let back = Frame { src: VIP4, l4: tcp(80, 40000, SYN_ACK), ..reply };
    expect(&r[1], "IPv4 reply", XDP_PASS, &back, pass);
    expect(&r[2], "IPv6 UDP", XDP_PASS, &rewritten_only(&frames[2]), pass);
}

#[test]
fn unresolved_hop_without_a_route_is_left_to_the_kernel() {
    let ns = Netns::new("fwd");
    enable_forwarding(&ns);
    let frames = [syn4(), dgram6()];
    let outcome = run_in(&ns, services(UNRESOLVED, UNRESOLVED), &frames);
    expect_passed(&outcome, &frames, "no route");
    expect_traffic(&outcome, &frames[..1], &frames[1..]);
}

#[test]
fn unresolved_hop_is_resolved_by_the_fib() {
    let ns = resolvable();
    let frames = [syn4(), ack4(), dgram6()];
    let outcome = run_in(&ns, services(UNRESOLVED, UNRESOLVED), &frames);
    expect_resolved(&outcome, &frames, "route and neighbour");
    expect_traffic(&outcome, &frames[..2], &frames[2..]);
}

#[test]
fn unresolved_hop_without_a_neighbour_is_left_to_the_kernel() {
    let ns = Netns::new("fwd");
    add_backend_link(&ns);
    add_backend_routes(&ns);
    enable_forwarding(&ns);
    let frames = [syn4(), dgram6()];
    let outcome = run_in(&ns, services(UNRESOLVED, UNRESOLVED), &frames);
    expect_passed(&outcome, &frames, "route, no neighbour");
    expect_traffic(&outcome, &frames[..1], &frames[1..]);
    let neigh = ns.exec(&["ip", "neigh", "show", "dev", DEV])
        + &ns.exec(&["ip", "-6", "neigh", "show", "dev", DEV]);
    assert!(
        !neigh.contains("10.1.0.1 ") && !neigh.contains("2001:db8:b::1 "),
        "the lookup created a neighbour entry: {neigh}"
    );
}

#[test]
fn fib_lookup_checks_forwarding_on_the_ingress_interface_only() {
    let frames = [syn4(), dgram6()];

    let ns = resolvable();
    ns.sysctl("net.ipv4.conf.lo.forwarding", "0");
    ns.sysctl("net.ipv6.conf.lo.forwarding", "0");
    let outcome = run_in(&ns, services(UNRESOLVED, UNRESOLVED), &frames);
    expect_passed(&outcome, &frames, "forwarding off on lo");

    let ns = resolvable();
    ns.sysctl(&format!("net.ipv4.conf.{DEV}.forwarding"), "0");
    ns.sysctl(&format!("net.ipv6.conf.{DEV}.forwarding"), "0");
    let outcome = run_in(&ns, services(UNRESOLVED, UNRESOLVED), &frames);
    expect_resolved(&outcome, &frames, "forwarding off on d0");
}
