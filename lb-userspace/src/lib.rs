//! The load balancer's userspace side: loading the XDP program and owning its maps, the
//! configuration, health checks, the agent, its admin API and metrics, and the CLI. The `lb`
//! binary is built on it.

pub mod agent;
pub mod api;
pub mod backend_setup;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod decap;
pub mod egress;
pub mod flow_sync;
pub mod health;
pub mod host;
pub mod instance;
pub mod links;
pub mod metrics;
pub mod neighbours;
pub mod netlink;
pub mod sysctls;
