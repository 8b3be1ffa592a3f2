//! The load balancer's userspace side: loading the XDP program and owning its maps, the
//! configuration, health checks, the agent and the CLI. The `lb` binary is built on it.

pub mod config;
pub mod dataplane;
pub mod health;
