//! A raw AF_PACKET socket on one interface of the calling thread's namespace, to send frames
//! built byte by byte and to capture what an interface sends.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

/// A raw socket bound to one interface, receiving every frame (ETH_P_ALL).
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// A socket on `iface` with a 100 ms receive timeout.
    pub fn bind(iface: &str) -> std::io::Result<PacketSocket> {
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(iface).map_err(std::io::Error::other)?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        // SAFETY: `timeout` is a readable timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const timeout).cast(), size_of::<libc::timeval>() as libc::socklen_t)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: an all-zero sockaddr_ll is valid; its fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let rc = unsafe { libc::bind(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_ll>() as libc::socklen_t) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(PacketSocket { fd: owned })
    }

    /// Sends `frame` as it is out of the interface.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: `frame` is readable for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }

    /// The first frame the interface sends (outgoing) for which `wanted` holds, within
    /// `timeout`.
    pub fn sent_matching(&self, timeout: Duration, wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            // SAFETY: an all-zero sockaddr_ll is valid; recvfrom writes at most the sizes passed.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` and `from` are valid for the sizes passed.
            let n = unsafe { libc::recvfrom(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0, (&raw mut from).cast(), &mut len) };
            if n > 0 && from.sll_pkttype == libc::PACKET_OUTGOING && wanted(&buf[..n as usize]) {
                return Some(buf[..n as usize].to_vec());
            }
        }
        None
    }

    /// Passes every frame the interface receives (not those it sends) to `seen`, until `done()`
    /// holds (checked at least every 100 ms) or `limit` has passed.
    pub fn each_received(&self, limit: Duration, done: impl Fn() -> bool, mut seen: impl FnMut(&[u8])) {
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !done() {
            // SAFETY: an all-zero sockaddr_ll is valid; recvfrom writes at most the sizes passed.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` and `from` are valid for the sizes passed.
            let n = unsafe { libc::recvfrom(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0, (&raw mut from).cast(), &mut len) };
            if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
                seen(&buf[..n as usize]);
            }
        }
    }
}
