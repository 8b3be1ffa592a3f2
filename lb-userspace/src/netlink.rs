//! A small rtnetlink client over a raw `NETLINK_ROUTE` socket: the route, neighbour and link
//! queries [`crate::neighbours::resolve`] needs, answered in-process instead of by `ip`
//! subprocesses.
//!
//! Building requests and parsing answers are pure functions over byte slices (tested with
//! hand-built messages); [`Socket`] only sends, receives (each receive bounded by
//! `SO_RCVTIMEO`) and matches answers to requests by sequence number. Messages use the host's
//! byte order, as netlink does.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

/// Length of `struct nlmsghdr`.
pub const HEADER_LEN: usize = 16;
/// Length of `struct rtattr` / `struct nlattr`.
const ATTR_HEADER_LEN: usize = 4;
/// Length of `struct rtmsg`.
const RTMSG_LEN: usize = 12;
/// Length of `struct ndmsg`.
const NDMSG_LEN: usize = 12;
/// Length of `struct ifinfomsg`.
const IFINFOMSG_LEN: usize = 16;
/// Attribute type bits without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `IFLA_EXT_MASK` (not in `libc`).
const IFLA_EXT_MASK: u16 = 29;
/// Receive buffer: the kernel's dump datagrams stay below 32 KiB.
const BUFFER_LEN: usize = 64 * 1024;

const NLMSG_NOOP: u16 = libc::NLMSG_NOOP as u16;
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// Why a netlink request has no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel did not answer in time.
    #[error("no netlink answer within {0:?}")]
    Timeout(Duration),
    /// The kernel answered with an error (the positive errno).
    #[error("the kernel refused the netlink request: {}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    /// A message or attribute does not have the expected shape.
    #[error("malformed netlink message: {0}")]
    Malformed(&'static str),
}

/// One netlink message of a datagram: the header's fields and the payload after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`.
    pub pid: u32,
    /// What follows the header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

/// Netlink's 4-byte alignment.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Splits the first length-prefixed record (netlink message or attribute) off `rest`: the
/// record (header included) and what follows its padding.
fn split_record(rest: &[u8], header: usize, len: Option<usize>) -> Result<(&[u8], &[u8]), Error> {
    let len = len.ok_or(Error::Malformed("truncated header"))?;
    if len < header {
        return Err(Error::Malformed("length shorter than its header"));
    }
    if len > rest.len() {
        return Err(Error::Malformed("length beyond the end of the buffer"));
    }
    // The last record's padding may be missing.
    let next = align(len).min(rest.len());
    Ok((&rest[..len], &rest[next..]))
}

/// Iterator over the messages of a datagram; see [`messages`].
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let len = u32_at(self.rest, 0).map(|l| l as usize);
        match split_record(self.rest, HEADER_LEN, len) {
            Ok((m, rest)) => {
                self.rest = rest;
                Some(Ok(Message {
                    kind: u16_at(m, 4)?,
                    flags: u16_at(m, 6)?,
                    seq: u32_at(m, 8)?,
                    pid: u32_at(m, 12)?,
                    payload: &m[HEADER_LEN..],
                }))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// The messages of one datagram, in order; a malformed one ends the iteration with an error.
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { rest: datagram }
}

/// Iterator over routing attributes; see [`attributes`].
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let len = u16_at(self.rest, 0).map(usize::from);
        match split_record(self.rest, ATTR_HEADER_LEN, len) {
            Ok((a, rest)) => {
                self.rest = rest;
                Some(Ok((u16_at(a, 2)? & NLA_TYPE_MASK, &a[ATTR_HEADER_LEN..])))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// The attributes in `buf` (what follows a message's fixed header) as (type without the
/// nested/byte-order flags, payload without padding); a malformed one ends the iteration with
/// an error.
pub fn attributes(buf: &[u8]) -> Attributes<'_> {
    Attributes { rest: buf }
}

/// A request under construction: header, fixed part, attributes.
struct Request(Vec<u8>);

impl Request {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by finish
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
        Self(b)
    }

    fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = ATTR_HEADER_LEN + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

fn family_of(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { AF_INET } else { AF_INET6 }
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `RTM_GETROUTE` for `addr` (like `ip route get`): `rtmsg` of its family with a /32 or /128
/// destination and `RTA_DST`.
pub fn route_request(seq: u32, addr: IpAddr) -> Vec<u8> {
    let dst_len = if addr.is_ipv4() { 32 } else { 128 };
    let mut rtmsg = [0u8; RTMSG_LEN];
    rtmsg[0] = family_of(addr);
    rtmsg[1] = dst_len;
    Request::new(libc::RTM_GETROUTE, NLM_F_REQUEST, seq)
        .bytes(&rtmsg)
        .attr(libc::RTA_DST, &octets(&addr))
        .finish()
}

fn ndmsg(family: u8, ifindex: u32) -> [u8; NDMSG_LEN] {
    let mut m = [0u8; NDMSG_LEN];
    m[0] = family;
    m[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    m
}

/// `RTM_GETNEIGH` for the entry of `addr` on interface `ifindex` (`NDA_DST`; Linux 5.0 and
/// later answer it, older kernels refuse it with `EOPNOTSUPP`).
pub fn neighbour_request(seq: u32, ifindex: u32, addr: IpAddr) -> Vec<u8> {
    Request::new(libc::RTM_GETNEIGH, NLM_F_REQUEST, seq)
        .bytes(&ndmsg(family_of(addr), ifindex))
        .attr(libc::NDA_DST, &octets(&addr))
        .finish()
}

/// `RTM_GETNEIGH` dump of the neighbour table of `family` (`AF_INET` or `AF_INET6`).
pub fn neighbour_dump_request(seq: u32, family: u8) -> Vec<u8> {
    Request::new(libc::RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .bytes(&ndmsg(family, 0))
        .finish()
}

/// `RTM_GETLINK` for interface `ifindex`, without statistics.
pub fn link_request(seq: u32, ifindex: u32) -> Vec<u8> {
    let mut ifinfomsg = [0u8; IFINFOMSG_LEN];
    ifinfomsg[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    Request::new(libc::RTM_GETLINK, NLM_F_REQUEST, seq)
        .bytes(&ifinfomsg)
        .attr(IFLA_EXT_MASK, &(libc::RTEXT_FILTER_SKIP_STATS as u32).to_ne_bytes())
        .finish()
}

/// An address of `family` from its raw bytes.
fn ip_from(family: u8, b: &[u8]) -> Result<IpAddr, Error> {
    match family {
        AF_INET => <[u8; 4]>::try_from(b).map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        AF_INET6 => <[u8; 16]>::try_from(b).map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        _ => return Err(Error::Malformed("unknown address family")),
    }
    .map_err(|_| Error::Malformed("address length does not match its family"))
}

fn u32_attr(b: &[u8]) -> Result<u32, Error> {
    <[u8; 4]>::try_from(b)
        .map(u32::from_ne_bytes)
        .map_err(|_| Error::Malformed("32-bit attribute of another length"))
}

/// Where the kernel sends packets to an address: the answer to [`route_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Egress interface (`RTA_OIF`).
    pub oif: Option<u32>,
    /// Gateway (`RTA_GATEWAY`, or `RTA_VIA` for an IPv4 route via an IPv6 next hop); `None`
    /// when the address is directly connected.
    pub gateway: Option<IpAddr>,
}

/// Parses the payload of an `RTM_NEWROUTE` message (`rtmsg` and attributes).
pub fn parse_route(payload: &[u8]) -> Result<Route, Error> {
    let attrs = payload.get(RTMSG_LEN..).ok_or(Error::Malformed("truncated rtmsg"))?;
    let family = payload[0];
    let mut route = Route { oif: None, gateway: None };
    for attr in attributes(attrs) {
        let (kind, data) = attr?;
        match kind {
            libc::RTA_OIF => route.oif = Some(u32_attr(data)?),
            libc::RTA_GATEWAY => route.gateway = Some(ip_from(family, data)?),
            libc::RTA_VIA => {
                // struct rtvia: a 16-bit family, then the address.
                let via_family = u16_at(data, 0).ok_or(Error::Malformed("truncated RTA_VIA"))?;
                let via_family = u8::try_from(via_family)
                    .map_err(|_| Error::Malformed("unknown address family"))?;
                route.gateway = Some(ip_from(via_family, &data[2..])?);
            }
            _ => {}
        }
    }
    Ok(route)
}

/// A neighbour table entry: the answer to [`neighbour_request`], or one of a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface (`ndm_ifindex`).
    pub ifindex: u32,
    /// `NUD_*` state bits (`ndm_state`).
    pub state: u16,
    /// The neighbour's address (`NDA_DST`).
    pub dst: Option<IpAddr>,
    /// Its link-layer address (`NDA_LLADDR`).
    pub lladdr: Option<Vec<u8>>,
}

/// States whose link-layer address can be used.
const USABLE: u16 = libc::NUD_PERMANENT
    | libc::NUD_NOARP
    | libc::NUD_REACHABLE
    | libc::NUD_STALE
    | libc::NUD_DELAY
    | libc::NUD_PROBE;

impl Neighbour {
    /// The neighbour's MAC, if the entry is usable: a state among permanent, noarp,
    /// reachable, stale, delay and probe, not failed or incomplete, and a 6-byte link-layer
    /// address that is not all zero (the no-ARP entries of `lo` carry zeroes).
    pub fn mac(&self) -> Option<[u8; 6]> {
        if self.state & (libc::NUD_FAILED | libc::NUD_INCOMPLETE) != 0 || self.state & USABLE == 0 {
            return None;
        }
        let mac: [u8; 6] = self.lladdr.as_deref()?.try_into().ok()?;
        (mac != [0; 6]).then_some(mac)
    }
}

/// Parses the payload of an `RTM_NEWNEIGH` message (`ndmsg` and attributes).
pub fn parse_neighbour(payload: &[u8]) -> Result<Neighbour, Error> {
    let attrs = payload.get(NDMSG_LEN..).ok_or(Error::Malformed("truncated ndmsg"))?;
    let family = payload[0];
    let mut n = Neighbour {
        ifindex: u32_at(payload, 4).unwrap_or_default(),
        state: u16_at(payload, 8).unwrap_or_default(),
        dst: None,
        lladdr: None,
    };
    for attr in attributes(attrs) {
        let (kind, data) = attr?;
        match kind {
            libc::NDA_DST => n.dst = Some(ip_from(family, data)?),
            libc::NDA_LLADDR => n.lladdr = Some(data.to_vec()),
            _ => {}
        }
    }
    Ok(n)
}

/// An interface: the answer to [`link_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// `ifi_index`.
    pub ifindex: u32,
    /// Its link-layer address (`IFLA_ADDRESS`); none on, e.g., a tun device.
    pub address: Option<Vec<u8>>,
}

/// Parses the payload of an `RTM_NEWLINK` message (`ifinfomsg` and attributes).
pub fn parse_link(payload: &[u8]) -> Result<Link, Error> {
    let attrs = payload.get(IFINFOMSG_LEN..).ok_or(Error::Malformed("truncated ifinfomsg"))?;
    let mut link = Link { ifindex: u32_at(payload, 4).unwrap_or_default(), address: None };
    for attr in attributes(attrs) {
        let (kind, data) = attr?;
        if kind == libc::IFLA_ADDRESS {
            link.address = Some(data.to_vec());
        }
    }
    Ok(link)
}

/// The errno of an `NLMSG_ERROR` payload (`struct nlmsgerr`): 0 for an acknowledgement,
/// otherwise positive.
pub fn error_code(payload: &[u8]) -> Result<i32, Error> {
    let code = u32_at(payload, 0).ok_or(Error::Malformed("truncated nlmsgerr"))? as i32;
    Ok(code.saturating_neg())
}

/// Whether a request's answer is complete after a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More datagrams follow.
    More,
    /// The answer is complete.
    Done,
}

/// Reads one datagram of the answer to request `seq`: each data message goes to `each`;
/// messages of other sequence numbers (late answers to earlier requests) are skipped.
/// A plain request is done after its one answer, a dump (`dump`) after `NLMSG_DONE`.
/// `NLMSG_ERROR` with an errno (or `NLMSG_DONE` carrying one) is [`Error::Kernel`].
pub fn read_answer(
    datagram: &[u8],
    seq: u32,
    dump: bool,
    each: &mut dyn FnMut(&Message<'_>) -> Result<(), Error>,
) -> Result<Progress, Error> {
    for m in messages(datagram) {
        let m = m?;
        if m.seq != seq {
            continue;
        }
        match m.kind {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                return match error_code(m.payload)? {
                    0 => Ok(Progress::Done),
                    errno => Err(Error::Kernel(errno)),
                };
            }
            NLMSG_DONE if dump => {
                // A dump's NLMSG_DONE carries an int: negative when the dump failed.
                let code = u32_at(m.payload, 0).map_or(0, |c| c as i32);
                return if code < 0 {
                    Err(Error::Kernel(code.saturating_neg()))
                } else {
                    Ok(Progress::Done)
                };
            }
            _ => {
                each(&m)?;
                if !dump {
                    return Ok(Progress::Done);
                }
            }
        }
    }
    Ok(Progress::More)
}

/// A `NETLINK_ROUTE` socket in the calling thread's network namespace. Each receive is
/// bounded by the timeout given to [`Socket::open`], and a whole request by about twice it.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    timeout: Duration,
    buf: Vec<u8>,
}

impl Socket {
    /// Opens a socket whose receives wait at most `timeout`.
    pub fn open(timeout: Duration) -> Result<Self, Error> {
        // SAFETY: socket() has no memory preconditions; the result is checked below.
        let fd = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `fd` is a freshly created, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_usec: timeout.subsec_micros().into(),
        };
        // SAFETY: `tv` is a valid timeval that outlives the call, and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(Self { fd, seq: 0, timeout, buf: vec![0; BUFFER_LEN] })
    }

    /// Where the kernel routes packets to `addr` (`ip route get`).
    pub fn route(&mut self, addr: IpAddr) -> Result<Route, Error> {
        let mut route = None;
        self.request(|seq| route_request(seq, addr), false, &mut |m| {
            if m.kind == libc::RTM_NEWROUTE {
                route = Some(parse_route(m.payload)?);
            }
            Ok(())
        })?;
        route.ok_or(Error::Malformed("no route in the answer"))
    }

    /// The neighbour entry of `addr` on interface `ifindex`, `None` when there is none. Asks
    /// for the one entry, or, on kernels before 5.0, dumps the table
    /// ([`Socket::neighbour_from_dump`]).
    pub fn neighbour(&mut self, ifindex: u32, addr: IpAddr) -> Result<Option<Neighbour>, Error> {
        let mut found = None;
        let answer = self.request(|seq| neighbour_request(seq, ifindex, addr), false, &mut |m| {
            if m.kind == libc::RTM_NEWNEIGH {
                found = Some(parse_neighbour(m.payload)?);
            }
            Ok(())
        });
        match answer {
            Ok(()) => Ok(found),
            Err(Error::Kernel(libc::ENOENT)) => Ok(None),
            Err(Error::Kernel(libc::EOPNOTSUPP)) => self.neighbour_from_dump(ifindex, addr),
            Err(e) => Err(e),
        }
    }

    /// The neighbour entry of `addr` on interface `ifindex`, found in a dump of the table of
    /// its family.
    pub fn neighbour_from_dump(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<Option<Neighbour>, Error> {
        let mut found = None;
        self.request(|seq| neighbour_dump_request(seq, family_of(addr)), true, &mut |m| {
            if m.kind == libc::RTM_NEWNEIGH && found.is_none() {
                let n = parse_neighbour(m.payload)?;
                if n.ifindex == ifindex && n.dst == Some(addr) {
                    found = Some(n);
                }
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Interface `ifindex`.
    pub fn link(&mut self, ifindex: u32) -> Result<Link, Error> {
        let mut link = None;
        self.request(|seq| link_request(seq, ifindex), false, &mut |m| {
            if m.kind == libc::RTM_NEWLINK {
                link = Some(parse_link(m.payload)?);
            }
            Ok(())
        })?;
        link.ok_or(Error::Malformed("no link in the answer"))
    }

    /// Sends the request `build` makes for the next sequence number and feeds its answer to
    /// `each` (see [`read_answer`]).
    fn request(
        &mut self,
        build: impl FnOnce(u32) -> Vec<u8>,
        dump: bool,
        each: &mut dyn FnMut(&Message<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&build(seq))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let Some(n) = self.receive()? else {
                continue; // not from the kernel
            };
            if read_answer(&self.buf[..n], seq, dump, each)? == Progress::Done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(self.timeout));
            }
        }
    }

    fn send(&self, msg: &[u8]) -> Result<(), Error> {
        // SAFETY: sockaddr_nl is plain data for which all zeroes is valid.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: `msg` and `kernel` are valid for the lengths passed and outlive the call.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&raw const kernel).cast(),
                    size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            return if n as usize == msg.len() {
                Ok(())
            } else {
                Err(Error::Malformed("short send"))
            };
        }
    }

    /// Receives one datagram into the buffer: its length, or `None` if it did not come from
    /// the kernel.
    fn receive(&mut self) -> Result<Option<usize>, Error> {
        loop {
            // SAFETY: sockaddr_nl is plain data for which all zeroes is valid.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: the buffer, `from` and `from_len` are valid and writable for the lengths
            // passed and outlive the call. MSG_TRUNC makes the result the datagram's real size.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        Err(Error::Timeout(self.timeout))
                    }
                    _ => Err(e.into()),
                };
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(Error::Malformed("datagram larger than the receive buffer"));
            }
            return Ok((from.nl_pid == 0).then_some(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message built by hand: header fields, payload, padding to 4 bytes.
    fn msg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((HEADER_LEN + payload.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&4242u32.to_ne_bytes());
        b.extend_from_slice(payload);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    /// An attribute built by hand, padded.
    fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(data);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    fn rtmsg(family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![family, 32, 0, 0, 254, 2, 0, 1, 0, 0, 0, 0];
        b.extend(attrs.concat());
        b
    }

    fn ndmsg_with(family: u8, ifindex: u32, state: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![family, 0, 0, 0];
        b.extend_from_slice(&ifindex.to_ne_bytes());
        b.extend_from_slice(&state.to_ne_bytes());
        b.extend_from_slice(&[0, 1]);
        b.extend(attrs.concat());
        b
    }

    fn error_payload(errno: i32) -> Vec<u8> {
        let mut b = (-errno).to_ne_bytes().to_vec();
        b.extend(msg(libc::RTM_GETROUTE, NLM_F_REQUEST, 7, &[0; 12]));
        b
    }

    #[test]
    fn builds_route_requests() {
        let r = route_request(7, "192.0.2.10".parse().unwrap());
        assert_eq!(r.len(), HEADER_LEN + RTMSG_LEN + 8);
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32));
        assert_eq!(u16_at(&r, 4), Some(libc::RTM_GETROUTE));
        assert_eq!(u16_at(&r, 6), Some(NLM_F_REQUEST));
        assert_eq!(u32_at(&r, 8), Some(7));
        assert_eq!(&r[16..28], &[AF_INET, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[28..], &attr(libc::RTA_DST, &[192, 0, 2, 10])[..]);

        let r = route_request(8, "2001:db8::1".parse().unwrap());
        assert_eq!(r.len(), HEADER_LEN + RTMSG_LEN + 20);
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32));
        assert_eq!(&r[16..18], &[AF_INET6, 128]);
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(&r[28..], &attr(libc::RTA_DST, &dst.octets())[..]);
    }

    #[test]
    fn builds_neighbour_and_link_requests() {
        let r = neighbour_request(3, 5, "192.0.2.1".parse().unwrap());
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32));
        assert_eq!(u16_at(&r, 4), Some(libc::RTM_GETNEIGH));
        assert_eq!(u16_at(&r, 6), Some(NLM_F_REQUEST));
        assert_eq!(r[16], AF_INET);
        assert_eq!(u32_at(&r, 20), Some(5));
        assert_eq!(&r[24..28], &[0; 4], "state, flags and type must be zero in a get");
        assert_eq!(&r[28..], &attr(libc::NDA_DST, &[192, 0, 2, 1])[..]);

        let r = neighbour_dump_request(4, AF_INET6);
        assert_eq!(r.len(), HEADER_LEN + NDMSG_LEN);
        assert_eq!(u16_at(&r, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
        assert_eq!(r[16], AF_INET6);

        let r = link_request(9, 12);
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32));
        assert_eq!(u16_at(&r, 4), Some(libc::RTM_GETLINK));
        assert_eq!(u32_at(&r, 20), Some(12));
        assert_eq!(
            &r[32..],
            &attr(IFLA_EXT_MASK, &(libc::RTEXT_FILTER_SKIP_STATS as u32).to_ne_bytes())[..]
        );
    }

    #[test]
    fn splits_several_messages_of_one_datagram() {
        let mut d = msg(libc::RTM_NEWNEIGH, 2, 1, &[1, 2, 3, 4, 5]); // padded to 24
        d.extend(msg(libc::RTM_NEWNEIGH, 2, 1, &[9; 8]));
        d.extend(msg(NLMSG_DONE, 2, 1, &0u32.to_ne_bytes()));
        let all: Vec<_> = messages(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].payload, &[1, 2, 3, 4, 5], "payload ends at nlmsg_len, before padding");
        assert_eq!(all[0].pid, 4242);
        assert_eq!(all[1].payload, &[9; 8]);
        assert_eq!(all[2].kind, NLMSG_DONE);
    }

    #[test]
    fn accepts_a_last_message_without_padding() {
        let mut d = msg(libc::RTM_NEWLINK, 0, 1, &[1, 2, 3]);
        d.truncate(HEADER_LEN + 3);
        let all: Vec<_> = messages(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!(all[0].payload, &[1, 2, 3]);
    }

    #[test]
    fn rejects_truncated_and_wrongly_sized_messages() {
        let good = msg(libc::RTM_NEWROUTE, 0, 1, &[0; 12]);
        // A header cut short.
        assert!(matches!(messages(&good[..10]).next(), Some(Err(Error::Malformed(_)))));
        // A length beyond the datagram.
        assert!(matches!(messages(&good[..20]).next(), Some(Err(Error::Malformed(_)))));
        // A length shorter than the header.
        let mut short = good.clone();
        short[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(messages(&short).next(), Some(Err(Error::Malformed(_)))));
        // A good message then garbage: the first one, then an error, then nothing.
        let mut d = good.clone();
        d.extend_from_slice(&[1, 2, 3]);
        let mut it = messages(&d);
        assert!(matches!(it.next(), Some(Ok(_))));
        assert!(matches!(it.next(), Some(Err(Error::Malformed(_)))));
        assert!(it.next().is_none());
        assert!(messages(&[]).next().is_none());
    }

    #[test]
    fn walks_padded_attributes() {
        let mut b = attr(libc::NDA_LLADDR, &[2, 0, 0, 0, 0, 1]); // 10 bytes, padded to 12
        b.extend(attr(libc::NDA_DST, &[10, 0, 0, 1]));
        b.extend(attr(9 | 0x8000, &[1])); // nested flag set, 5 bytes padded to 8
        b.extend(attr(3, &[])); // empty
        let all: Vec<_> = attributes(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            all,
            vec![
                (libc::NDA_LLADDR, &[2, 0, 0, 0, 0, 1][..]),
                (libc::NDA_DST, &[10, 0, 0, 1][..]),
                (9, &[1][..]),
                (3, &[][..]),
            ]
        );
        // Unpadded last attribute.
        let b = &attr(7, &[1, 2])[..6];
        assert_eq!(attributes(b).collect::<Result<Vec<_>, _>>().unwrap(), vec![(7, &[1, 2][..])]);
    }

    #[test]
    fn rejects_malformed_attributes() {
        // rta_len below the header.
        let mut b = attr(1, &[1, 2, 3, 4]);
        b[..2].copy_from_slice(&2u16.to_ne_bytes());
        assert!(matches!(attributes(&b).next(), Some(Err(Error::Malformed(_)))));
        // rta_len beyond the buffer.
        let mut b = attr(1, &[1, 2, 3, 4]);
        b[..2].copy_from_slice(&12u16.to_ne_bytes());
        assert!(matches!(attributes(&b).next(), Some(Err(Error::Malformed(_)))));
        // Two stray bytes.
        assert!(matches!(attributes(&[4, 0]).next(), Some(Err(Error::Malformed(_)))));
    }

    #[test]
    fn parses_routes() {
        let direct = rtmsg(
            AF_INET,
            &[attr(libc::RTA_DST, &[192, 0, 2, 1]), attr(libc::RTA_OIF, &7u32.to_ne_bytes())],
        );
        assert_eq!(parse_route(&direct).unwrap(), Route { oif: Some(7), gateway: None });

        let via = rtmsg(
            AF_INET,
            &[
                attr(libc::RTA_TABLE, &254u32.to_ne_bytes()),
                attr(libc::RTA_GATEWAY, &[10, 0, 0, 254]),
                attr(libc::RTA_OIF, &3u32.to_ne_bytes()),
            ],
        );
        assert_eq!(
            parse_route(&via).unwrap(),
            Route { oif: Some(3), gateway: Some("10.0.0.254".parse().unwrap()) }
        );

        let gw6: Ipv6Addr = "fe80::1".parse().unwrap();
        let v6 = rtmsg(
            AF_INET6,
            &[attr(libc::RTA_GATEWAY, &gw6.octets()), attr(libc::RTA_OIF, &4u32.to_ne_bytes())],
        );
        assert_eq!(parse_route(&v6).unwrap(), Route { oif: Some(4), gateway: Some(gw6.into()) });

        // An IPv4 route via an IPv6 next hop (RTA_VIA: struct rtvia).
        let mut rtvia = u16::from(AF_INET6).to_ne_bytes().to_vec();
        rtvia.extend_from_slice(&gw6.octets());
        let v4_via_v6 = rtmsg(
            AF_INET,
            &[attr(libc::RTA_VIA, &rtvia), attr(libc::RTA_OIF, &4u32.to_ne_bytes())],
        );
        assert_eq!(
            parse_route(&v4_via_v6).unwrap(),
            Route { oif: Some(4), gateway: Some(gw6.into()) }
        );
    }

    #[test]
    fn rejects_malformed_routes() {
        assert!(matches!(parse_route(&[AF_INET, 32, 0]), Err(Error::Malformed(_))));
        // A gateway whose length does not match the family.
        let bad_gw = rtmsg(AF_INET, &[attr(libc::RTA_GATEWAY, &[10, 0, 0])]);
        assert!(matches!(parse_route(&bad_gw), Err(Error::Malformed(_))));
        let bad_oif = rtmsg(AF_INET, &[attr(libc::RTA_OIF, &[1, 0])]);
        assert!(matches!(parse_route(&bad_oif), Err(Error::Malformed(_))));
        let bad_via = rtmsg(AF_INET, &[attr(libc::RTA_VIA, &[10])]);
        assert!(matches!(parse_route(&bad_via), Err(Error::Malformed(_))));
    }

    #[test]
    fn parses_neighbours_and_their_usable_states() {
        let mac = [2, 0, 0, 0, 0, 9];
        let entry = |state| {
            parse_neighbour(&ndmsg_with(
                AF_INET,
                6,
                state,
                &[
                    attr(libc::NDA_DST, &[10, 0, 0, 2]),
                    attr(libc::NDA_LLADDR, &mac),
                    attr(libc::NDA_PROBES, &1u32.to_ne_bytes()),
                ],
            ))
            .unwrap()
        };
        let n = entry(libc::NUD_REACHABLE);
        assert_eq!(n.ifindex, 6);
        assert_eq!(n.dst, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(n.lladdr.as_deref(), Some(&mac[..]));
        for state in [
            libc::NUD_PERMANENT,
            libc::NUD_NOARP,
            libc::NUD_REACHABLE,
            libc::NUD_STALE,
            libc::NUD_DELAY,
            libc::NUD_PROBE,
        ] {
            assert_eq!(entry(state).mac(), Some(mac), "state {state:#x}");
        }
        for state in [
            libc::NUD_FAILED,
            libc::NUD_INCOMPLETE,
            libc::NUD_NONE,
            libc::NUD_STALE | libc::NUD_FAILED,
        ] {
            assert_eq!(entry(state).mac(), None, "state {state:#x}");
        }

        // No lladdr, or one that is not a MAC.
        let n = parse_neighbour(&ndmsg_with(
            AF_INET,
            6,
            libc::NUD_NOARP,
            &[attr(libc::NDA_DST, &[10, 0, 0, 2])],
        ))
        .unwrap();
        assert_eq!(n.mac(), None);
        let n = parse_neighbour(&ndmsg_with(
            AF_INET6,
            6,
            libc::NUD_PERMANENT,
            &[attr(libc::NDA_LLADDR, &[1, 2, 3, 4])],
        ))
        .unwrap();
        assert_eq!(n.mac(), None);
        let n = parse_neighbour(&ndmsg_with(
            AF_INET,
            1,
            libc::NUD_NOARP,
            &[attr(libc::NDA_LLADDR, &[0; 6])],
        ))
        .unwrap();
        assert_eq!(n.mac(), None, "all zero is no MAC");

        assert!(matches!(parse_neighbour(&[AF_INET, 0, 0, 0, 1]), Err(Error::Malformed(_))));
        let bad_dst =
            ndmsg_with(AF_INET6, 6, libc::NUD_PERMANENT, &[attr(libc::NDA_DST, &[10, 0, 0, 2])]);
        assert!(matches!(parse_neighbour(&bad_dst), Err(Error::Malformed(_))));
    }

    #[test]
    fn parses_links() {
        let mut payload = vec![0, 0, 1, 0];
        payload.extend_from_slice(&5u32.to_ne_bytes());
        payload.extend_from_slice(&[0; 8]);
        payload.extend(attr(libc::IFLA_IFNAME, b"eth0\0"));
        payload.extend(attr(libc::IFLA_ADDRESS, &[2, 0, 0, 0, 0, 5]));
        payload.extend(attr(libc::IFLA_BROADCAST, &[0xff; 6]));
        assert_eq!(
            parse_link(&payload).unwrap(),
            Link { ifindex: 5, address: Some(vec![2, 0, 0, 0, 0, 5]) }
        );
        assert!(matches!(parse_link(&payload[..12]), Err(Error::Malformed(_))));
    }

    fn collect(datagram: &[u8], seq: u32, dump: bool) -> (Result<Progress, Error>, Vec<u16>) {
        let mut kinds = Vec::new();
        let r = read_answer(datagram, seq, dump, &mut |m| {
            kinds.push(m.kind);
            Ok(())
        });
        (r, kinds)
    }

    #[test]
    fn reads_errors_and_acknowledgements() {
        let d = msg(NLMSG_ERROR, 0, 7, &error_payload(libc::ENETUNREACH));
        assert!(
            matches!(collect(&d, 7, false), (Err(Error::Kernel(libc::ENETUNREACH)), k) if k.is_empty())
        );
        assert!(matches!(collect(&d, 7, true).0, Err(Error::Kernel(libc::ENETUNREACH))));
        let ack = msg(NLMSG_ERROR, 0, 7, &error_payload(0));
        assert!(matches!(collect(&ack, 7, false).0, Ok(Progress::Done)));
        // An error payload cut short.
        let short = msg(NLMSG_ERROR, 0, 7, &[1, 2]);
        assert!(matches!(collect(&short, 7, false).0, Err(Error::Malformed(_))));
    }

    #[test]
    fn skips_answers_to_other_requests() {
        let mut d = msg(NLMSG_ERROR, 0, 6, &error_payload(libc::ENOENT)); // late, for seq 6
        d.extend(msg(libc::RTM_NEWROUTE, 0, 7, &rtmsg(AF_INET, &[])));
        let (r, kinds) = collect(&d, 7, false);
        assert!(matches!(r, Ok(Progress::Done)));
        assert_eq!(kinds, vec![libc::RTM_NEWROUTE]);
        // Only other requests' answers: more to come.
        let d = msg(libc::RTM_NEWROUTE, 0, 6, &rtmsg(AF_INET, &[]));
        assert!(matches!(collect(&d, 7, false), (Ok(Progress::More), k) if k.is_empty()));
    }

    #[test]
    fn reads_dumps_over_several_datagrams() {
        let flags = libc::NLM_F_MULTI as u16;
        let mut first = msg(libc::RTM_NEWNEIGH, flags, 9, &ndmsg_with(AF_INET, 1, 2, &[]));
        first.extend(msg(libc::RTM_NEWNEIGH, flags, 9, &ndmsg_with(AF_INET, 2, 2, &[])));
        let (r, kinds) = collect(&first, 9, true);
        assert!(matches!(r, Ok(Progress::More)));
        assert_eq!(kinds.len(), 2);

        let mut last = msg(libc::RTM_NEWNEIGH, flags, 9, &ndmsg_with(AF_INET, 3, 2, &[]));
        last.extend(msg(NLMSG_DONE, flags, 9, &0u32.to_ne_bytes()));
        let (r, kinds) = collect(&last, 9, true);
        assert!(matches!(r, Ok(Progress::Done)));
        assert_eq!(kinds.len(), 1);

        // A dump that failed half-way.
        let failed = msg(NLMSG_DONE, flags, 9, &(-libc::EBUSY).to_ne_bytes());
        assert!(matches!(collect(&failed, 9, true).0, Err(Error::Kernel(libc::EBUSY))));
        // A truncated message after good ones is an error, not a silent end.
        let mut bad = msg(libc::RTM_NEWNEIGH, flags, 9, &ndmsg_with(AF_INET, 1, 2, &[]));
        bad.extend_from_slice(&[0xff; 6]);
        assert!(matches!(collect(&bad, 9, true).0, Err(Error::Malformed(_))));
    }

    #[test]
    fn a_plain_request_stops_at_its_answer() {
        let mut d = msg(libc::RTM_NEWLINK, 0, 2, &[0; 16]);
        d.extend(msg(libc::RTM_NEWLINK, 0, 2, &[0; 16]));
        let (r, kinds) = collect(&d, 2, false);
        assert!(matches!(r, Ok(Progress::Done)));
        assert_eq!(kinds.len(), 1);
    }

    #[test]
    fn a_callback_error_ends_the_answer() {
        let d = msg(libc::RTM_NEWROUTE, 0, 2, &[0; 3]);
        let r = read_answer(&d, 2, false, &mut |m| parse_route(m.payload).map(|_| ()));
        assert!(matches!(r, Err(Error::Malformed(_))));
    }

    #[test]
    fn opens_a_socket_and_asks_the_loopback_route() {
        // Needs no privileges: every namespace has lo and a route to 127.0.0.1.
        let mut s = Socket::open(Duration::from_millis(200)).unwrap();
        let route = s.route("127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(route.gateway, None);
        assert_eq!(route.oif, Some(1), "lo is interface 1");
        let lo = s.link(1).unwrap();
        assert_eq!(lo.ifindex, 1);
        assert_eq!(lo.address, Some(vec![0; 6]));
        // lo has no entry, or a no-ARP one with an all-zero address: no MAC either way.
        assert_eq!(
            s.neighbour(1, "127.0.0.1".parse().unwrap()).unwrap().and_then(|n| n.mac()),
            None
        );
        assert!(matches!(s.link(u32::MAX >> 1), Err(Error::Kernel(libc::ENODEV))));
    }
}
