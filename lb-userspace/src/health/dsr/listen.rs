//! Receiving the backend's answer to a probe: an AF_PACKET socket on every interface with a
//! classic BPF filter that lets through only TCP from the VIP's port to the probe's port.
//!
//! The answer comes from VIP:port, and on a load balancer node the VIP is often a local
//! address: the kernel drops such a packet as a martian source before any IP socket sees it.
//! A packet socket sees it first. The filter runs in the kernel, so the agent wakes for the
//! probe's own packets only.

use std::io::{self, Read as _};

use socket2::{Domain, SockAddr, SockAddrStorage, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

/// Any packet that passes the filter fits: the IP and TCP headers are read, nothing more.
const SNAP_LEN: u32 = 256;

/// A packet socket that receives the IP packets of one family from `vip_port` to `probe_port`
/// over TCP, on every interface, not the ones this host sends.
pub struct Listener {
    socket: AsyncFd<Socket>,
}

impl Listener {
    /// Opens the socket for IPv6 (`v6`) or IPv4 answers. The filter is attached before the
    /// socket is bound, so nothing else is ever queued on it.
    pub fn open(v6: bool, vip_port: u16, probe_port: u16) -> io::Result<Listener> {
        let socket = Socket::new(Domain::PACKET, Type::DGRAM, None)?;
        socket.attach_filter(&filter(v6, vip_port, probe_port))?;
        socket.set_nonblocking(true)?;
        let protocol = if v6 { libc::ETH_P_IPV6 } else { libc::ETH_P_IP };
        socket.bind(&packet_address(protocol as u16, 0, None))?;
        // SAFETY: the socket owns its descriptor, which stays open and the same (what
        // `as_raw_fd` returns) for as long as the `AsyncFd` owns the socket.
        let socket = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(Listener { socket })
    }

    /// The next packet that passed the filter, from its IP header on, into `buf`: its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|s| s.get_ref().read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// A `sockaddr_ll` for EtherType `protocol` on interface `ifindex` (0: every interface),
/// addressed to `mac` if given.
pub fn packet_address(protocol: u16, ifindex: u32, mac: Option<[u8; 6]>) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: sockaddr_ll is one of this platform's sockaddr types, smaller than the storage.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = ifindex as i32;
    if let Some(mac) = mac {
        ll.sll_halen = 6;
        ll.sll_addr[..6].copy_from_slice(&mac);
    }
    // SAFETY: the storage holds a sockaddr_ll, whose size is given.
    unsafe { SockAddr::new(storage, size_of::<libc::sockaddr_ll>() as libc::socklen_t) }
}

/// The classic BPF program: accept (up to [`SNAP_LEN`] bytes) a packet not sent by this host,
/// of TCP, not a later fragment, from port `vip_port` to port `probe_port`; drop anything else.
/// A packet socket of type DGRAM runs it on the packet from its IP header on.
fn filter(v6: bool, vip_port: u16, probe_port: u16) -> Vec<SockFilter> {
    let op = |code: u32| code as u16;
    let ld_abs = |size: u32, k: u32| SockFilter::new(op(libc::BPF_LD | size | libc::BPF_ABS), 0, 0, k);
    // Jumps are relative to the next instruction; `reject` is the last one.
    let jeq = |k: u32, at: usize, len: usize| SockFilter::new(op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K), 0, (len - 2 - at) as u8, k);
    let pkttype = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
    let outgoing = u32::from(libc::PACKET_OUTGOING);
    let accept = SockFilter::new(op(libc::BPF_RET | libc::BPF_K), 0, 0, SNAP_LEN);
    let reject = SockFilter::new(op(libc::BPF_RET | libc::BPF_K), 0, 0, 0);
    let len = if v6 { 10 } else { 13 };
    let mut p = vec![
        ld_abs(libc::BPF_W, pkttype),
        SockFilter::new(op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K), (len - 3) as u8, 0, outgoing),
    ];
    if v6 {
        p.push(ld_abs(libc::BPF_B, 6));
        p.push(jeq(u32::from(lb_common::tcp_probe::IPPROTO_TCP), 3, len));
        p.push(ld_abs(libc::BPF_H, 40));
        p.push(jeq(u32::from(vip_port), 5, len));
        p.push(ld_abs(libc::BPF_H, 42));
        p.push(jeq(u32::from(probe_port), 7, len));
    } else {
        p.push(ld_abs(libc::BPF_B, 9));
        p.push(jeq(u32::from(lb_common::tcp_probe::IPPROTO_TCP), 3, len));
        p.push(ld_abs(libc::BPF_H, 6));
        p.push(SockFilter::new(op(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K), (len - 2 - 5) as u8, 0, 0x1FFF));
        p.push(SockFilter::new(op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH), 0, 0, 0));
        p.push(SockFilter::new(op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND), 0, 0, 0));
        p.push(jeq(u32::from(vip_port), 8, len));
        p.push(SockFilter::new(op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND), 0, 0, 2));
        p.push(jeq(u32::from(probe_port), 10, len));
    }
    p.push(accept);
    p.push(reject);
    debug_assert_eq!(p.len(), len);
    p
}
