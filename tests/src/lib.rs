//! Shared test support: a packet builder whose checksums are computed here, independently of
//! the data path's incremental updates, and a harness that runs frames through the real XDP
//! program in the kernel with BPF_PROG_TEST_RUN.

pub mod agent;
pub mod bench;
pub mod download;
pub mod dsr;
pub mod encap;
pub mod fixture;
pub mod fuzz;
pub mod ha;
pub mod harness;
pub mod icmp_frames;
pub mod lab_config;
pub mod netns;
pub mod orphans;
pub mod packet;
pub mod packet_socket;
pub mod prometheus;
pub mod prometheus_server;
pub mod topology;
