//! Incremental Internet checksum updates (RFC 1624, equation 3: `HC' = ~(~HC + ~m + m')`).
//!
//! The data path never recomputes a checksum over the packet: it records which 16-bit words
//! it replaced in a [`CsumDelta`] and applies that delta to each checksum covering them.

/// The sum of `~old + new` over replaced 16-bit words, not yet folded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CsumDelta(u32);

impl CsumDelta {
    /// No change.
    pub const fn new() -> Self {
        CsumDelta(0)
    }

    /// Records that the word `old` became `new` (both as read big-endian from the packet).
    #[inline(always)]
    pub fn replace_u16(&mut self, old: u16, new: u16) {
        self.0 += (!old) as u32 + new as u32;
    }

    /// Records that the bytes `old` became `new`. `N` is even (addresses: 4 or 16 bytes).
    #[inline(always)]
    pub fn replace_bytes<const N: usize>(&mut self, old: &[u8; N], new: &[u8; N]) {
        let mut i = 0;
        while i + 1 < N {
            self.replace_u16(
                u16::from_be_bytes([old[i], old[i + 1]]),
                u16::from_be_bytes([new[i], new[i + 1]]),
            );
            i += 2;
        }
    }

    /// Records that the 16-bit words `old` became `new`, both as loaded from a packet or an
    /// address (network byte order in memory): the data path's form of
    /// [`CsumDelta::replace_bytes`], one load per word instead of two.
    #[inline(always)]
    pub fn replace_be_words<const N: usize>(&mut self, old: &[u16; N], new: &[u16; N]) {
        let mut i = 0;
        while i < N {
            self.replace_u16(u16::from_be(old[i]), u16::from_be(new[i]));
            i += 1;
        }
    }

    /// Adds the changes recorded in `other`.
    #[inline(always)]
    pub fn merge(&mut self, other: CsumDelta) {
        self.0 = fold32(self.0) as u32 + fold32(other.0) as u32;
    }

    /// The checksum `check` updated for the recorded changes.
    #[inline(always)]
    pub fn apply(self, check: u16) -> u16 {
        !fold32((!check) as u32 + fold32(self.0) as u32)
    }

    /// As [`CsumDelta::apply`] for a UDP checksum: zero ("no checksum", IPv4 only) stays zero,
    /// and a computed zero is sent as 0xFFFF (RFC 768).
    #[inline(always)]
    pub fn apply_udp(self, check: u16) -> u16 {
        if check == 0 {
            return 0;
        }
        match self.apply(check) {
            0 => 0xFFFF,
            c => c,
        }
    }
}

/// Folds a 32-bit one's complement sum to 16 bits.
#[inline(always)]
pub fn fold32(mut s: u32) -> u16 {
    s = (s & 0xFFFF) + (s >> 16);
    s = (s & 0xFFFF) + (s >> 16);
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: the checksum computed from scratch (RFC 1071), independent of the code above.
    fn full(data: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for chunk in data.chunks(2) {
            let hi = chunk[0] as u64;
            let lo = *chunk.get(1).unwrap_or(&0) as u64;
            sum += (hi << 8) | lo;
        }
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// A sample IPv4 header with its checksum filled in.
    fn ipv4_header(dst: [u8; 4]) -> [u8; 20] {
        let mut h = [
            0x45, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 0, 0, 0, 0,
        ];
        h[16..20].copy_from_slice(&dst);
        let c = full(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn address_rewrite_matches_recomputation() {
        let old = ipv4_header([10, 0, 0, 1]);
        for new_dst in [[10, 1, 0, 2], [255, 255, 255, 255], [0, 0, 0, 0], [172, 16, 9, 200]] {
            let mut d = CsumDelta::new();
            d.replace_bytes(&[10, 0, 0, 1], &new_dst);
            let updated = d.apply(u16::from_be_bytes([old[10], old[11]]));
            assert_eq!(updated, u16::from_be_bytes(ipv4_header(new_dst)[10..12].try_into().unwrap()));
        }
    }

    #[test]
    fn random_rewrites_match_recomputation() {
        // A deterministic pseudo-random walk over 20-byte buffers and 16-byte replacements.
        let mut state: u64 = 0x1234_5678_9abc_def0;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..10_000 {
            let mut buf = [0u8; 40];
            for b in buf.iter_mut() {
                *b = next() as u8;
            }
            let check = full(&buf);
            let mut new = [0u8; 16];
            for b in new.iter_mut() {
                *b = next() as u8;
            }
            let port = next() as u16;
            let old: [u8; 16] = buf[8..24].try_into().unwrap();
            let old_port = u16::from_be_bytes([buf[30], buf[31]]);
            let mut d = CsumDelta::new();
            d.replace_bytes(&old, &new);
            d.replace_u16(old_port, port);
            buf[8..24].copy_from_slice(&new);
            buf[30..32].copy_from_slice(&port.to_be_bytes());
            // Both 0x0000 and 0xFFFF verify as "sum is all ones"; compare by verification.
            let mut with = buf.to_vec();
            with.extend_from_slice(&d.apply(check).to_be_bytes());
            assert_eq!(full(&with), 0, "buffer {buf:?}");
        }
    }

    /// The words of `bytes` as a load from memory gives them.
    fn loaded<const N: usize, const W: usize>(bytes: &[u8; N]) -> [u16; W] {
        core::array::from_fn(|i| u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]))
    }

    #[test]
    fn loaded_words_record_what_their_bytes_do() {
        let old: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0x01];
        let new: [u8; 16] = [0xfd, 0x00, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 2];
        let mut by_bytes = CsumDelta::new();
        by_bytes.replace_bytes(&old, &new);
        let mut by_words = CsumDelta::new();
        by_words.replace_be_words::<8>(&loaded(&old), &loaded(&new));
        assert_eq!(by_words, by_bytes);
        let (old4, new4) = ([10, 0, 0, 10], [10, 1, 255, 2]);
        let mut v4 = CsumDelta::new();
        v4.replace_be_words::<2>(&loaded(&old4), &loaded(&new4));
        let check = u16::from_be_bytes([ipv4_header(old4)[10], ipv4_header(old4)[11]]);
        assert_eq!(v4.apply(check), u16::from_be_bytes([ipv4_header(new4)[10], ipv4_header(new4)[11]]));
    }

    #[test]
    fn merge_equals_single_delta() {
        let mut a = CsumDelta::new();
        a.replace_u16(0x1234, 0xFFFF);
        let mut b = CsumDelta::new();
        b.replace_u16(0x0001, 0xABCD);
        let mut both = CsumDelta::new();
        both.replace_u16(0x1234, 0xFFFF);
        both.replace_u16(0x0001, 0xABCD);
        a.merge(b);
        assert_eq!(a.apply(0x5555), both.apply(0x5555));
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut d = CsumDelta::new();
        d.replace_u16(0x0a00, 0x0a01);
        assert_eq!(d.apply_udp(0), 0);
    }

    #[test]
    fn udp_computed_zero_is_sent_as_all_ones() {
        // Choose a change that makes the updated checksum exactly 0x0000.
        let mut d = CsumDelta::new();
        d.replace_u16(0x0000, 0x0001);
        let check = 0x0001;
        assert_eq!(d.apply(check), 0x0000);
        assert_eq!(d.apply_udp(check), 0xFFFF);
    }
}
