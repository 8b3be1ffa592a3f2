//! Builds Ethernet frames (optionally 802.1Q-tagged) carrying IPv4/IPv6 and TCP/UDP, with
//! every checksum computed from scratch (RFC 1071) — never with `lb_common::csum`.

use std::net::IpAddr;

/// A MAC address.
pub type Mac = [u8; 6];

/// Transport header of a test frame.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    /// TCP with the given flags byte (0x02 = SYN, 0x10 = ACK).
    Tcp { sport: u16, dport: u16, flags: u8 },
    /// UDP; `no_checksum` sends a zero checksum (IPv4 only).
    Udp { sport: u16, dport: u16, no_checksum: bool },
}

/// A test frame's headers and payload.
#[derive(Clone, Debug)]
pub struct Frame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    pub payload: Vec<u8>,
}

/// RFC 1071 checksum of `data` with `initial` already summed in.
pub fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial as u64;
    for chunk in data.chunks(2) {
        sum += ((chunk[0] as u64) << 8) | chunk.get(1).copied().unwrap_or(0) as u64;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum_words(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| ((c[0] as u32) << 8) | c.get(1).copied().unwrap_or(0) as u32)
        .sum()
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The pseudo-header sum for the L4 checksum.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    sum_words(&addr_bytes(src)) + sum_words(&addr_bytes(dst)) + proto as u32 + len as u32
}

impl Frame {
    /// IP protocol number of the transport header.
    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
        }
    }

    /// The transport header and payload with a correct checksum.
    fn transport(&self) -> Vec<u8> {
        let mut seg = match self.l4 {
            L4::Tcp { sport, dport, flags } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = flags;
                h[14..16].copy_from_slice(&64240u16.to_be_bytes());
                h
            }
            L4::Udp { sport, dport, .. } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h
            }
        };
        seg.extend_from_slice(&self.payload);
        let check_at = match self.l4 {
            L4::Tcp { .. } => 16,
            L4::Udp { no_checksum: true, .. } => return seg,
            L4::Udp { .. } => 6,
        };
        let mut c = checksum(pseudo_header(self.src, self.dst, self.proto(), seg.len()), &seg);
        if c == 0 && matches!(self.l4, L4::Udp { .. }) {
            c = 0xFFFF;
        }
        seg[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
        seg
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let seg = self.transport();
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        if let Some(tci) = self.vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ip_header(self.src, self.dst, self.proto(), seg.len(), IpFields { tos: 0, ident: 0x1c46, dont_fragment: true }));
        f.extend_from_slice(&seg);
        f
    }
}

/// IPv4 header fields that differ between the frames the tests build.
#[derive(Clone, Copy, Debug)]
pub struct IpFields {
    /// Type of service (IPv4).
    pub tos: u8,
    /// Identification (IPv4).
    pub ident: u16,
    /// The don't-fragment flag (IPv4).
    pub dont_fragment: bool,
}

/// The EtherType and IP header (IPv4 with its checksum computed from scratch, or IPv6) of a
/// packet from `src` to `dst` carrying `payload_len` bytes of protocol `proto`, hop limit 64.
pub fn ip_header(src: IpAddr, dst: IpAddr, proto: u8, payload_len: usize, fields: IpFields) -> Vec<u8> {
    let mut h = Vec::with_capacity(42);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.extend_from_slice(&[0x08, 0x00]);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[1] = fields.tos;
            ip[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&fields.ident.to_be_bytes());
            if fields.dont_fragment {
                ip[6] = 0x40;
            }
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = checksum(0, &ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            h.extend_from_slice(&[0x86, 0xDD]);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            h.extend_from_slice(&ip);
        }
        _ => panic!("mixed address families"),
    }
    h
}

/// Checks every checksum of an IPv4/IPv6 TCP/UDP frame from scratch; `Err` says which is wrong.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let mut off = 12;
    let mut ether_type = u16::from_be_bytes([frame[off], frame[off + 1]]);
    if ether_type == 0x8100 {
        off += 4;
        ether_type = u16::from_be_bytes([frame[off], frame[off + 1]]);
    }
    let l3 = off + 2;
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, usize) = match ether_type {
        0x0800 => {
            if checksum(0, &frame[l3..l3 + 20]) != 0 {
                return Err("IPv4 header checksum".into());
            }
            let s: [u8; 4] = frame[l3 + 12..l3 + 16].try_into().unwrap();
            let d: [u8; 4] = frame[l3 + 16..l3 + 20].try_into().unwrap();
            (s.into(), d.into(), frame[l3 + 9], l3 + 20)
        }
        0x86DD => {
            let s: [u8; 16] = frame[l3 + 8..l3 + 24].try_into().unwrap();
            let d: [u8; 16] = frame[l3 + 24..l3 + 40].try_into().unwrap();
            (s.into(), d.into(), frame[l3 + 6], l3 + 40)
        }
        t => return Err(format!("ether type {t:#x}")),
    };
    let seg = &frame[l4..];
    if proto == 17 && u16::from_be_bytes([seg[6], seg[7]]) == 0 && src.is_ipv4() {
        return Ok(());
    }
    if checksum(pseudo_header(src, dst, proto, seg.len()), seg) != 0 {
        return Err(format!("L4 (protocol {proto}) checksum"));
    }
    Ok(())
}

/// The untagged IPv4 frame `datagram` cut into two fragments: the first with `first_len`
/// bytes of the transport segment (a multiple of 8), the second with the rest; their IPv4
/// header checksums computed from scratch.
pub fn ipv4_fragments(datagram: &[u8], first_len: usize) -> (Vec<u8>, Vec<u8>) {
    let piece = |payload: &[u8], frags: u16| {
        let mut f = datagram[..34].to_vec();
        f.extend_from_slice(payload);
        f[16..18].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        f[20..22].copy_from_slice(&frags.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(0, &f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    let seg = &datagram[34..];
    (piece(&seg[..first_len], 0x2000), piece(&seg[first_len..], (first_len / 8) as u16))
}
