//! The load balancer's userspace side: loading the XDP program and owning its maps.
//! The `lb` binary (agent and CLI) is built on this library.

pub mod dataplane;
