//! Weighted Maglev hashing (Eisenbud et al., NSDI 2016): the lookup table that maps a flow
//! hash to a backend, so that every node with the same backends and seed builds the same table
//! and removing one of N backends moves little more than 1/N of the flows.
//!
//! Each backend walks its own permutation of the slots (offset and skip from a hash of its
//! address and port, not of its slot id or position in the configuration) and claims the next
//! free slot when it is its turn. Weights set how often a backend gets a turn: in round `r`,
//! backend `i` may claim while it has claimed fewer than `r * w_i / w_max` slots.

use crate::maps::Addr;

/// The backend id stored in ring slots that no backend owns (empty VIP).
pub const NO_BACKEND: u32 = 0;

/// A backend as the table builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Slot id written into the table (never [`NO_BACKEND`]).
    pub id: u32,
    /// Address: with `port`, the identity that places the backend in the table.
    pub addr: Addr,
    /// Port.
    pub port: u16,
    /// Relative share of the table; 0 leaves the backend out.
    pub weight: u32,
}

/// Whether `n` is prime (trial division; ring sizes are at most a few million).
pub const fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(feature = "std")]
mod build {
    use super::*;
    use crate::hash::backend_hash;
    use std::vec;
    use std::vec::Vec;

    const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
    const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

    struct Walker {
        id: u32,
        weight: u64,
        pos: u64,
        skip: u64,
        claimed: u64,
    }

    /// Builds a ring of `size` slots (a prime) for `backends` under `seed`.
    ///
    /// Every slot holds the id of a backend with a non-zero weight, or [`NO_BACKEND`] in every
    /// slot when there is none. The result does not depend on the order of `backends`.
    pub fn build_table(backends: &[MaglevBackend], size: u32, seed: u32) -> Vec<u32> {
        let m = size as u64;
        let mut table = vec![NO_BACKEND; size as usize];
        let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
        if live.is_empty() || m == 0 {
            return table;
        }
        live.sort_by_key(|b| (b.addr, b.port, b.id));
        let max_weight = live.iter().map(|b| b.weight as u64).max().unwrap_or(1);
        let seed = seed as u64;
        let mut walkers: Vec<Walker> = live
            .iter()
            .map(|b| Walker {
                id: b.id,
                weight: b.weight as u64,
                pos: backend_hash(&b.addr, b.port, seed ^ OFFSET_SEED) % m,
                skip: if m > 1 { backend_hash(&b.addr, b.port, seed ^ SKIP_SEED) % (m - 1) + 1 } else { 1 },
                claimed: 0,
            })
            .collect();

        let mut filled = 0u64;
        let mut round = 0u64;
        while filled < m {
            round += 1;
            for w in walkers.iter_mut() {
                if w.claimed * max_weight >= round * w.weight {
                    continue;
                }
                // The permutation visits every slot (skip < m, m prime), and a free slot
                // exists while filled < m, so this ends. pos < m and skip < m, so one
                // conditional subtraction is `% m` without a division on every probe (the
                // division made the build about twice as slow).
                while table[w.pos as usize] != NO_BACKEND {
                    w.pos += w.skip;
                    if w.pos >= m {
                        w.pos -= m;
                    }
                }
                table[w.pos as usize] = w.id;
                w.pos += w.skip;
                if w.pos >= m {
                    w.pos -= m;
                }
                w.claimed += 1;
                filled += 1;
                if filled == m {
                    break;
                }
            }
        }
        table
    }

    /// Builds a ring of `size` slots that visits the backends in smooth weighted round-robin
    /// order (the sequence nginx uses): walking it slot by slot gives each backend its weight's
    /// share in every stretch of `sum(weights)` slots, evenly interleaved.
    pub fn build_round_robin(backends: &[MaglevBackend], size: u32) -> Vec<u32> {
        let mut live: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
        if live.is_empty() {
            return vec![NO_BACKEND; size as usize];
        }
        live.sort_by_key(|b| (b.addr, b.port, b.id));
        let total: i64 = live.iter().map(|b| b.weight as i64).sum();
        let mut current = vec![0i64; live.len()];
        (0..size)
            .map(|_| {
                for (c, b) in current.iter_mut().zip(&live) {
                    *c += b.weight as i64;
                }
                let (best, _) = current
                    .iter()
                    .enumerate()
                    .fold((0, i64::MIN), |acc, (i, &c)| if c > acc.1 { (i, c) } else { acc });
                current[best] -= total;
                live[best].id
            })
            .collect()
    }
}

#[cfg(feature = "std")]
pub use build::{build_round_robin, build_table};

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::maps::v4_addr;
    use std::collections::HashMap;
    use std::vec::Vec;

    fn pool(n: u32, weight: impl Fn(u32) -> u32) -> Vec<MaglevBackend> {
        (1..=n)
            .map(|i| MaglevBackend {
                id: i,
                addr: v4_addr([10, 1, (i >> 8) as u8, i as u8]),
                port: 8080,
                weight: weight(i),
            })
            .collect()
    }

    fn shares(table: &[u32]) -> HashMap<u32, f64> {
        let mut counts: HashMap<u32, f64> = HashMap::new();
        for &id in table {
            *counts.entry(id).or_default() += 1.0;
        }
        counts.values_mut().for_each(|c| *c /= table.len() as f64);
        counts
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(7) && is_prime(2) && is_prime(1_048_573));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(65535) && !is_prime(9));
    }

    #[test]
    fn fills_every_slot_with_a_weighted_backend() {
        let mut backends = pool(5, |_| 1);
        backends[2].weight = 0;
        let t = build_table(&backends, 65537, 1);
        assert!(t.iter().all(|&id| id != NO_BACKEND && id != 3));
    }

    #[test]
    fn empty_pool_gives_empty_ring() {
        assert!(build_table(&[], 13, 1).iter().all(|&id| id == NO_BACKEND));
        assert!(build_table(&pool(3, |_| 0), 13, 1).iter().all(|&id| id == NO_BACKEND));
    }

    #[test]
    fn shares_follow_weights() {
        let t = build_table(&pool(3, |i| i), 65537, 9);
        let s = shares(&t);
        for (id, want) in [(1, 1.0 / 6.0), (2, 2.0 / 6.0), (3, 3.0 / 6.0)] {
            assert!((s[&id] - want).abs() < 0.002, "backend {id}: {} vs {want}", s[&id]);
        }
        let t = build_table(&pool(100, |_| 1), 65537, 9);
        for (id, share) in shares(&t) {
            assert!((share - 0.01).abs() < 0.0002, "backend {id}: {share}");
        }
    }

    #[test]
    fn independent_of_input_order_and_ids_depend_on_identity() {
        let a = pool(10, |i| 1 + i % 3);
        let mut b = a.clone();
        b.reverse();
        assert_eq!(build_table(&a, 4099, 5), build_table(&b, 4099, 5));
        assert_ne!(build_table(&a, 4099, 5), build_table(&a, 4099, 6), "seed changes the table");
    }

    #[test]
    fn round_robin_interleaves_by_weight() {
        let t = build_round_robin(&pool(3, |i| i), 13);
        // Weights 1, 2, 3: backend 3 every other slot, backend 1 once per six.
        assert_eq!(&t[..6], &[3, 2, 1, 3, 2, 3]);
        assert_eq!(&t[6..12], &t[..6]);
        assert!(build_round_robin(&pool(2, |_| 0), 7).iter().all(|&id| id == NO_BACKEND));
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [3u32, 10, 100] {
            let before = build_table(&pool(n, |_| 1), 65537, 3);
            let mut less = pool(n, |_| 1);
            less.remove((n / 2) as usize);
            let after = build_table(&less, 65537, 3);
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64 / 65537.0;
            let bound = 1.0 / n as f64 + 0.01;
            assert!(moved <= bound, "n={n}: moved {moved:.4} > {bound:.4}");
            // Only the removed backend's slots and a little churn may change.
            assert!(moved >= 1.0 / n as f64 - 0.01, "n={n}: moved {moved:.4}");
        }
    }
}
