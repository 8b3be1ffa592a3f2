//! Load-time sizes of the maps and the hash seed, checked against [`crate::limits`]: the
//! vocabulary the configuration and the agent's data-plane module share.

use crate::{limits::*, maglev::is_prime};

/// How big the maps are and which hash seed the program uses; fixed for the life of a loaded
/// program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// VIPs the maps can hold.
    pub vip_capacity: u32,
    /// Backend slots (all VIPs together; slot 0 is reserved).
    pub backend_capacity: u32,
    /// Slots of each Maglev ring (prime).
    pub ring_size: u32,
    /// Connection table entries (one per flow), all CPUs together: each CPU's share is
    /// `conn_capacity / possible CPUs` ([`MIN_CONNS_PER_CPU`]).
    pub conn_capacity: u32,
    /// Half-open table entries (round-robin and least-conn SYNs).
    pub half_open_capacity: u32,
    /// Flow hash seed: the same on every node of a cluster.
    pub hash_seed: u32,
}

impl Default for Sizing {
    fn default() -> Self {
        Sizing {
            vip_capacity: DEFAULT_VIP_CAPACITY,
            backend_capacity: DEFAULT_BACKEND_CAPACITY,
            ring_size: DEFAULT_RING_SIZE,
            conn_capacity: DEFAULT_CONN_CAPACITY,
            half_open_capacity: DEFAULT_HALF_OPEN_CAPACITY,
            hash_seed: 0,
        }
    }
}

/// A size outside what the data path supports.
#[derive(Debug, PartialEq, Eq)]
pub enum SizingError {
    /// Ring size not prime or out of range.
    RingSize(u32),
    /// VIP capacity out of range.
    VipCapacity(u32),
    /// Backend capacity out of range.
    BackendCapacity(u32),
    /// Connection table capacity out of range.
    ConnCapacity(u32),
    /// Half-open table capacity out of range.
    HalfOpenCapacity(u32),
    /// The rings of all VIPs do not fit one map.
    RingMapTooLarge {
        /// VIP capacity.
        vips: u32,
        /// Ring size.
        ring: u32,
    },
}

impl core::fmt::Display for SizingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SizingError::RingSize(n) => write!(f, "ring size {n} must be a prime between {MIN_RING_SIZE} and {MAX_RING_SIZE}"),
            SizingError::VipCapacity(n) => write!(f, "VIP capacity {n} must be between 1 and {MAX_VIP_CAPACITY}"),
            SizingError::BackendCapacity(n) => write!(f, "backend capacity {n} must be between 2 and {MAX_BACKEND_CAPACITY}"),
            SizingError::ConnCapacity(n) => write!(f, "connection table capacity {n} must be between 2 and {MAX_CONN_CAPACITY}"),
            SizingError::HalfOpenCapacity(n) => {
                write!(f, "half-open table capacity {n} must be between 2 and {MAX_HALF_OPEN_CAPACITY}")
            }
            SizingError::RingMapTooLarge { vips, ring } => {
                write!(f, "{vips} VIPs × {RINGS_PER_VIP} rings × {ring} slots exceeds 2^32 entries")
            }
        }
    }
}

impl core::error::Error for SizingError {}

impl Sizing {
    /// Checks every size against the limits.
    pub fn validate(&self) -> Result<(), SizingError> {
        if !(MIN_RING_SIZE..=MAX_RING_SIZE).contains(&self.ring_size) || !is_prime(self.ring_size) {
            return Err(SizingError::RingSize(self.ring_size));
        }
        if !(1..=MAX_VIP_CAPACITY).contains(&self.vip_capacity) {
            return Err(SizingError::VipCapacity(self.vip_capacity));
        }
        if !(2..=MAX_BACKEND_CAPACITY).contains(&self.backend_capacity) {
            return Err(SizingError::BackendCapacity(self.backend_capacity));
        }
        if !(2..=MAX_CONN_CAPACITY).contains(&self.conn_capacity) {
            return Err(SizingError::ConnCapacity(self.conn_capacity));
        }
        if !(2..=MAX_HALF_OPEN_CAPACITY).contains(&self.half_open_capacity) {
            return Err(SizingError::HalfOpenCapacity(self.half_open_capacity));
        }
        if (self.vip_capacity as u64) * (RINGS_PER_VIP as u64) * (ring_stride(self.ring_size) as u64) > u32::MAX as u64 {
            return Err(SizingError::RingMapTooLarge {
                vips: self.vip_capacity,
                ring: self.ring_size,
            });
        }
        Ok(())
    }

    /// Entries of the `RING` map.
    /// These sizes with the connection table raised, if needed, so that each of `cpus`
    /// possible CPUs gets at least [`MIN_CONNS_PER_CPU`] entries (within
    /// [`MAX_CONN_CAPACITY`]); the second value says whether it was raised.
    pub fn with_cpu_floor(&self, cpus: u32) -> (Sizing, bool) {
        let floor = cpus.max(1).saturating_mul(MIN_CONNS_PER_CPU).min(MAX_CONN_CAPACITY);
        let raised = self.conn_capacity < floor;
        (Sizing { conn_capacity: self.conn_capacity.max(floor), ..self.clone() }, raised)
    }

    /// Each CPU's share of the connection table with `cpus` possible CPUs.
    pub fn conns_per_cpu(&self, cpus: u32) -> u32 {
        self.conn_capacity / cpus.max(1)
    }

    pub fn ring_map_entries(&self) -> u32 {
        ring_map_entries(self.vip_capacity, self.ring_size)
    }

    /// Entries of the `MOVED` map.
    pub fn moved_map_entries(&self) -> u32 {
        moved_map_entries(self.vip_capacity, self.ring_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_table_is_raised_so_that_no_cpu_share_is_below_the_floor() {
        let s = Sizing { conn_capacity: 65_536, ..Sizing::default() };
        assert_eq!(s.with_cpu_floor(2), (s.clone(), false), "two CPUs: 32,768 each");
        let (raised, was) = s.with_cpu_floor(64);
        assert!(was);
        assert_eq!(raised.conn_capacity, 64 * MIN_CONNS_PER_CPU);
        assert_eq!(raised.conns_per_cpu(64), MIN_CONNS_PER_CPU);
        assert_eq!(s.conns_per_cpu(64), 1024, "what 64 CPUs would have had each");
        assert_eq!(s.with_cpu_floor(100_000).0.conn_capacity, MAX_CONN_CAPACITY, "never above the maximum");
        assert_eq!(s.with_cpu_floor(0).0.conn_capacity, 65_536);
    }

    #[test]
    fn default_is_valid() {
        assert_eq!(Sizing::default().validate(), Ok(()));
    }

    #[test]
    fn default_rings_take_25_2_mb_and_moved_bits_half_a_mb() {
        // 64 VIPs × 3 rings × 16,385 elements of 8 bytes, and 64 VIPs × 1,025 words of moved
        // bits (README, "Sizing and limits").
        assert_eq!(Sizing::default().ring_map_entries() as u64 * 8, 25_167_360);
        assert_eq!(Sizing::default().moved_map_entries() as u64 * 8, 524_800);
    }

    #[test]
    fn rejects_out_of_range_sizes() {
        let ok = Sizing::default();
        let cases = [
            (Sizing { ring_size: 65536, ..ok.clone() }, SizingError::RingSize(65536)),
            (Sizing { ring_size: 5, ..ok.clone() }, SizingError::RingSize(5)),
            (Sizing { vip_capacity: 0, ..ok.clone() }, SizingError::VipCapacity(0)),
            (Sizing { backend_capacity: 1, ..ok.clone() }, SizingError::BackendCapacity(1)),
            (Sizing { conn_capacity: MAX_CONN_CAPACITY + 1, ..ok.clone() }, SizingError::ConnCapacity(MAX_CONN_CAPACITY + 1)),
            (Sizing { half_open_capacity: 1, ..ok.clone() }, SizingError::HalfOpenCapacity(1)),
            (
                Sizing { vip_capacity: 4096, ring_size: 1_048_573, ..ok.clone() },
                SizingError::RingMapTooLarge { vips: 4096, ring: 1_048_573 },
            ),
        ];
        for (sizing, want) in cases {
            assert_eq!(sizing.validate(), Err(want));
        }
    }
}
