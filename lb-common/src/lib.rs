//! Types, limits and pure logic shared by the XDP program (`lb-ebpf`) and the agent
//! (`lb-userspace`).
//!
//! Everything here is `no_std` and free of I/O so that the data path and the agent agree
//! by construction and the logic is unit-tested on the host with plain `cargo test`.
#![no_std]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod counters;
pub mod encap;
pub mod csum;
pub mod flow;
pub mod hash;
pub mod limits;
pub mod maglev;
pub mod maps;
pub mod martian;
pub mod schedule;
pub mod serving;
pub mod sizing;
pub mod tcp_probe;
