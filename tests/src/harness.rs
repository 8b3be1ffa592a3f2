//! Runs frames through the real XDP program (BPF_PROG_TEST_RUN) and reads its counters.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use lb_common::{
    counters::Reason,
    hash::flow_hash,
    maps::*,
};
use lb_userspace::dataplane::{Dataplane, Service, ServiceBackend, Sizing};

use crate::{
    netns::Netns,
    packet::{Frame, L4, Mac},
};

/// XDP verdicts (linux/bpf.h `enum xdp_action`).
pub const XDP_ABORTED: u32 = 0;
/// Dropped.
pub const XDP_DROP: u32 = 1;
/// Passed to the kernel.
pub const XDP_PASS: u32 = 2;
/// Sent back out of the ingress interface.
pub const XDP_TX: u32 = 3;
/// Sent out of another interface.
pub const XDP_REDIRECT: u32 = 4;

/// The load balancer's own MAC in the fixtures.
pub const LB_MAC: Mac = [0x02, 0x1b, 0x00, 0x00, 0x00, 0x01];
/// The client's (or its router's) MAC in the fixtures.
pub const CLIENT_MAC: Mac = [0x02, 0xc1, 0x00, 0x00, 0x00, 0x01];

/// The VIP of the IPv4 fixtures.
pub const VIP4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
/// The client of the IPv4 fixtures.
pub const CLIENT4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));
/// The VIP of the IPv6 fixtures.
pub const VIP6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
/// The client of the IPv6 fixtures.
pub const CLIENT6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10));

/// TCP flags: SYN.
pub const SYN: u8 = 0x02;
/// TCP flags: ACK.
pub const ACK: u8 = 0x10;
/// TCP flags: SYN and ACK.
pub const SYN_ACK: u8 = 0x12;

/// A frame from the client (its MAC) to the load balancer (its MAC) with a small payload.
pub fn from_client(src: IpAddr, dst: IpAddr, l4: L4) -> Frame {
    Frame {
        dst_mac: LB_MAC,
        src_mac: CLIENT_MAC,
        vlan: None,
        src,
        dst,
        l4,
        payload: b"hello".to_vec(),
    }
}

/// A TCP header.
pub fn tcp(sport: u16, dport: u16, flags: u8) -> L4 {
    L4::Tcp { sport, dport, flags }
}

/// A UDP header with a checksum.
pub fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport, no_checksum: false }
}

/// `f` with its destination rewritten to `ip`:`port` and sent from `src_mac` to `dst_mac`:
/// what the data path should make of a client's frame.
pub fn to_endpoint(f: &Frame, ip: IpAddr, port: u16, dst_mac: Mac, src_mac: Mac) -> Frame {
    let mut out = f.clone();
    out.dst = ip;
    out.dst_mac = dst_mac;
    out.src_mac = src_mac;
    match &mut out.l4 {
        L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = port,
    }
    out
}

/// The MAC the fixtures give backend slot `id`.
pub fn backend_mac(id: u32) -> Mac {
    [0x02, 0xbe, 0, 0, (id >> 8) as u8, id as u8]
}

/// The address in map layout.
pub fn addr(a: IpAddr) -> Addr {
    match a {
        IpAddr::V4(a) => v4_addr(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// The result of one program run.
#[derive(Debug)]
pub struct Run {
    /// XDP verdict.
    pub action: u32,
    /// The frame as the program left it.
    pub out: Vec<u8>,
    /// Counter changes caused by this run (only non-zero), in `Reason::ALL` order.
    pub counted: Vec<(Reason, u64)>,
}

/// A loaded instance of the data path.
pub struct Lb {
    /// The data path under test.
    pub dp: Dataplane,
    /// The namespace its packets run in, if it has its own (see [`Lb::with_client_side`]).
    ns: Option<(Netns, std::fs::File)>,
}

/// The client-side interface of [`Lb::with_client_side`], with the load balancer's MAC.
pub const CLIENT_SIDE_DEV: &str = "cl0";

/// A namespace whose FIB reaches the fixtures' clients ([`CLIENT4`], [`CLIENT6`]) through
/// `cl0` (MAC [`LB_MAC`]) with permanent neighbour entries ([`CLIENT_MAC`]), forwarding on.
pub fn client_side_netns() -> Netns {
    let ns = Netns::new("fx");
    add_client_side(&ns);
    ns
}

/// Adds the client side of [`client_side_netns`] to `ns`.
pub fn add_client_side(ns: &Netns) {
    let mac = |m: Mac| m.map(|b| format!("{b:02x}")).join(":");
    for cmd in [
        format!("link add {CLIENT_SIDE_DEV} address {} type veth peer name cl0p", mac(LB_MAC)),
        "link set cl0p up".to_string(),
        format!("link set {CLIENT_SIDE_DEV} up"),
        format!("addr add 192.0.2.1/24 dev {CLIENT_SIDE_DEV}"),
        format!("-6 addr add 2001:db8:c::1/64 dev {CLIENT_SIDE_DEV} nodad"),
        format!("neigh add {CLIENT4} lladdr {} dev {CLIENT_SIDE_DEV} nud permanent", mac(CLIENT_MAC)),
        format!("-6 neigh add {CLIENT6} lladdr {} dev {CLIENT_SIDE_DEV} nud permanent", mac(CLIENT_MAC)),
    ] {
        let args: Vec<&str> = ["ip"].into_iter().chain(cmd.split_whitespace()).collect();
        ns.exec(&args);
    }
    ns.sysctl("net.ipv4.ip_forward", "1");
    ns.sysctl("net.ipv6.conf.all.forwarding", "1");
}

/// Sizes small enough for many instances at once, with the default ring size.
pub fn test_sizing(seed: u32) -> Sizing {
    Sizing {
        vip_capacity: 4,
        backend_capacity: 512,
        hash_seed: seed,
        ..Sizing::default()
    }
}

impl Lb {
    /// Loads the program (needs root: BPF).
    pub fn load(sizing: &Sizing) -> Lb {
        let dp = Dataplane::load(sizing).unwrap_or_else(|e| {
            panic!("loading the XDP program failed (the tests need root and BPF): {e:#}")
        });
        Lb { dp, ns: None }
    }

    /// Wraps an already loaded data path (packets run in the caller's namespace).
    pub fn from_dataplane(dp: Dataplane) -> Lb {
        Lb { dp, ns: None }
    }

    /// Loads the program and runs its packets in a namespace of its own whose FIB reaches the
    /// clients ([`client_side_netns`]): replies leave by `cl0` (XDP_REDIRECT) to
    /// [`CLIENT_MAC`]. [`Lb::run`] moves the calling thread into that namespace.
    pub fn with_client_side(sizing: &Sizing) -> Lb {
        let ns = client_side_netns();
        let path = format!("/var/run/netns/{}", ns.name());
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut lb = Lb { ns: Some((ns, file)), ..Lb::load(sizing) };
        // The test runs' ingress interface (the loopback) and the client side are interfaces
        // the program may send through.
        let cl0 = lb.netns().map(|ns| ns.ifindex(CLIENT_SIDE_DEV)).expect("own namespace");
        lb.add_port(1);
        lb.add_port(cl0);
        lb
    }

    /// Lets the program send through interface `ifindex` of its namespace
    /// (`Maps::add_port`, which resolves the index in the calling thread's namespace).
    pub fn add_port(&mut self, ifindex: u32) {
        self.enter_netns();
        self.dp.maps.add_port(ifindex).unwrap_or_else(|e| panic!("registering interface {ifindex}: {e:#}"));
    }

    /// Moves the calling thread into the namespace the program's packets run in, if it has one.
    fn enter_netns(&self) {
        if let Some((_, file)) = &self.ns {
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns with a valid namespace file descriptor changes only this thread's
            // network namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        }
    }

    /// The namespace its packets run in, if it has its own.
    pub fn netns(&self) -> Option<&Netns> {
        self.ns.as_ref().map(|(ns, _)| ns)
    }

    /// Runs one frame through the program once.
    pub fn run(&self, frame: &[u8]) -> Run {
        self.enter_netns();
        let before = self.dp.maps.reasons().expect("reading REASONS");
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .dp
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        let after = self.dp.maps.reasons().expect("reading REASONS");
        let counted = Reason::ALL
            .iter()
            .zip(before.iter().zip(after.iter()))
            .filter(|(_, (b, a))| a != b)
            .map(|(r, (b, a))| (*r, a - b))
            .collect();
        Run {
            action: result.return_value,
            out,
            counted,
        }
    }

    /// The backend the program's own maps give a new flow `key` of `svc` (the live ring,
    /// read back from the kernel, indexed by the shared flow hash).
    pub fn ring_choice(&self, svc: &Service, key: &FlowKey) -> u32 {
        let meta = self.dp.maps.vip(&svc.key).unwrap().expect("VIP installed");
        let src_only = meta.flags & VIP_FLAG_HASH_SRC_ONLY != 0;
        let slot = flow_hash(key, self.dp.sizing().hash_seed, src_only) % self.dp.sizing().ring_size;
        self.dp.maps.ring_slot(&meta, slot).unwrap()
    }
}

/// A service with backends in slots `first_id..`, all up, reachable at layer 2 through the
/// interface the traffic arrives on (XDP_TX).
pub fn service(
    id: u32,
    vip: IpAddr,
    port: u16,
    proto: u8,
    first_id: u32,
    backends: &[(IpAddr, u16, u32)],
) -> Service {
    Service {
        key: VipKey {
            addr: addr(vip),
            port,
            proto,
            family: family(vip),
        },
        id,
        flags: 0,
        udp_idle_secs: lb_common::limits::DEFAULT_UDP_IDLE_SECS,
        backends: backends
            .iter()
            .enumerate()
            .map(|(i, &(a, p, weight))| {
                let bid = first_id + i as u32;
                ServiceBackend {
                    id: bid,
                    weight,
                    backend: Backend {
                        addr: addr(a),
                        port: p,
                        family: family(a),
                        state: BackendState::Up as u8,
                        generation: 1,
                        hop: NextHop {
                            ifindex: 0,
                            dst_mac: backend_mac(bid),
                            src_mac: LB_MAC,
                        },
                        ..Backend::default()
                    },
                }
            })
            .collect(),
    }
}

/// The connection-table key of a frame.
pub fn flow_key(f: &Frame) -> FlowKey {
    let (sport, dport) = match f.l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } => (sport, dport),
    };
    FlowKey {
        src: addr(f.src),
        dst: addr(f.dst),
        sport,
        dport,
        proto: f.proto(),
        family: family(f.src),
        pad: [0; 2],
    }
}

/// The frame with another source port (a new flow of the same client).
pub fn with_sport(f: &Frame, port: u16) -> Frame {
    let mut f = f.clone();
    match &mut f.l4 {
        L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
    }
    f
}

/// The address and port of backend `id` in `svc`.
pub fn backend_endpoint(svc: &Service, id: u32) -> (IpAddr, u16) {
    let b = &svc.backends.iter().find(|b| b.id == id).expect("backend of svc").backend;
    let ip: IpAddr = if b.family == FAMILY_V4 {
        IpAddr::from([b.addr[0], b.addr[1], b.addr[2], b.addr[3]])
    } else {
        IpAddr::from(b.addr)
    };
    (ip, b.port)
}

/// Panics unless running as root (these tests load BPF programs).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the data path tests load BPF programs and must run as root");
}
