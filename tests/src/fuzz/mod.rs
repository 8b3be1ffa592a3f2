//! A mutation fuzzer for the data path: valid seed frames for every path ([`seeds`]),
//! mutated by a seeded generator ([`mutate`]), run through the real program with a configured
//! data path ([`model`], BPF_PROG_TEST_RUN), and every run checked against invariants
//! written once ([`invariants`]). [`campaign`] runs and replays; failing inputs are written
//! as pcap files ([`pcap`]). [`cases`] picks the cases of the configuration and admin API
//! fuzzers from the environment.

pub mod campaign;
pub mod cases;
pub mod invariants;
pub mod model;
pub mod mutate;
pub mod pcap;
pub mod seeds;
pub mod wire;
