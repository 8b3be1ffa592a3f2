//! Health probes of direct server return VIPs that reach the backend the way the VIP's
//! packets do (`health_check.target: vip`).
//!
//! A probe is a TCP handshake with VIP:port *on that backend*: the agent builds a SYN from the
//! node's address towards the backend ([`Route::source`]) and a random port to VIP:port
//! ([`lb_common::tcp_probe`]), and sends it inside the tunnel, inside GUE, or to the
//! backend's MAC ([`send`](mod@send)). A backend that takes the VIP's packets answers from
//! VIP:port straight to the node, as it answers clients; the agent receives that answer with a
//! packet socket ([`listen`]) and sends a reset the same way to free the backend's half-open
//! connection. A SYN-ACK is healthy; a reset (nothing listens on the VIP's port) or no answer
//! within the timeout (no VIP on the backend's loopback, no decapsulation, the service not
//! bound to the VIP) fails the backend: the "DSR black hole" of a backend that is up but
//! does not serve the VIP.
//!
//! What the agent cannot do itself (no route to the backend resolved yet, no MAC for
//! `direct`, a socket it cannot open or a send refused on this host) is a local error: it
//! counts against the agent, never against the backend.

pub mod listen;
pub mod send;

use std::fmt;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lb_common::maps::NextHop;
use lb_common::tcp_probe::{Answer, MAX_PROBE_PACKET, TcpProbe, probe_port};

use super::probe::{ProbeOutcome, describe};
use listen::Listener;
use send::SendError;

/// How the VIP's packets reach a backend, and so its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// In an IP tunnel: the outer family is the backend's, the protocol the VIP's family.
    Tunnel,
    /// In UDP to the backend's GUE port.
    Gue {
        /// The GUE destination port.
        port: u16,
    },
    /// As it is, to the backend's MAC on the node's segment.
    Direct,
}

impl fmt::Display for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Carrier::Tunnel => f.write_str("tunnel"),
            Carrier::Gue { port } => write!(f, "GUE (port {port})"),
            Carrier::Direct => f.write_str("direct (L2)"),
        }
    }
}

/// A probe through the VIP: the VIP and how its packets reach the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViaVip {
    /// How.
    pub carrier: Carrier,
    /// The VIP and its port.
    pub vip: SocketAddr,
}

/// What the resolver last found about the path to a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Route {
    /// The node's address towards the backend: the probe's source.
    pub source: Option<IpAddr>,
    /// The egress interface and MACs (`direct`).
    pub hop: NextHop,
}

/// Probes VIP `via.vip` on `backend` once; never takes much longer than `timeout`.
pub async fn probe(backend: IpAddr, via: ViaVip, route: Route, timeout: Duration) -> ProbeOutcome {
    let start = Instant::now();
    let (ok, local, timed_out, detail) = match tokio::time::timeout(timeout, handshake(backend, via, route)).await {
        Ok(Ok(detail)) => (true, false, false, detail),
        Ok(Err(Failure { detail, local })) => (false, local, false, detail),
        Err(_) => (false, false, true, format!("timed out after {timeout:?}: no answer from VIP {} via {}", via.vip, via.carrier)),
    };
    ProbeOutcome { ok, local, timed_out, detail, latency: start.elapsed() }
}

/// Why a probe failed.
struct Failure {
    detail: String,
    /// On the agent's side.
    local: bool,
}

/// A failure on the agent's side.
fn local(detail: impl fmt::Display) -> Failure {
    Failure { detail: format!("agent could not probe: {detail}"), local: true }
}

/// Sends the SYN and waits for its answer (without a time limit); resets a SYN-ACK.
async fn handshake(backend: IpAddr, via: ViaVip, route: Route) -> Result<String, Failure> {
    let source = route.source.ok_or_else(|| local("no route to the backend resolved yet (no source address)"))?;
    let random = random_u64();
    let probe = TcpProbe::new(source, probe_port(random as u32), via.vip.ip(), via.vip.port(), (random >> 32) as u32).ok_or_else(|| {
        local(format_args!(
            "the node's address towards the backend ({source}) is not of the VIP's family: use health_check.target address for this VIP"
        ))
    })?;
    let listener = Listener::open(via.vip.is_ipv6(), via.vip.port(), probe.sport()).map_err(|e| io_local("packet socket", &e))?;
    send::send(via.carrier, backend, &route, probe.syn().as_bytes()).map_err(send_failure)?;
    let mut buf = [0u8; 2 * MAX_PROBE_PACKET + 128];
    loop {
        let n = listener.recv(&mut buf).await.map_err(|e| io_local("receive", &e))?;
        match probe.answer(&buf[..n]) {
            Some(Answer::SynAck) => {
                if let Err(e) = send::send(via.carrier, backend, &route, probe.rst().as_bytes()) {
                    tracing::debug!(%backend, vip = %via.vip, error = ?e, "the reset after a probe's SYN-ACK was not sent: the backend's half-open connection times out");
                }
                return Ok(format!("TCP handshake with VIP {} via {}", via.vip, via.carrier));
            }
            Some(Answer::Reset) => {
                return Err(Failure { detail: format!("reset by VIP {} via {}: nothing listens on the VIP's port", via.vip, via.carrier), local: false });
            }
            None => {}
        }
    }
}

fn io_local(step: &str, e: &std::io::Error) -> Failure {
    local(format_args!("{step}: {}", describe(e)))
}

/// A send refused on this host: the agent's side, whatever the error (no packet left).
fn send_failure(e: SendError) -> Failure {
    match e {
        SendError::NoNextHop => local("the backend's MAC is not resolved yet (the kernel was asked to resolve it)"),
        SendError::Io(step, e) => io_local(step, &e),
    }
}

/// 64 random bits: the probe's source port and initial sequence number, so that the answers
/// of concurrent probes and of earlier ones are never taken for this one's.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn via(carrier: Carrier) -> ViaVip {
        ViaVip { carrier, vip: "10.0.0.10:80".parse().unwrap() }
    }

    #[tokio::test]
    async fn what_the_agent_cannot_send_is_its_own_failure() {
        let backend: IpAddr = "127.0.0.1".parse().unwrap();
        let out = probe(backend, via(Carrier::Tunnel), Route::default(), TIMEOUT).await;
        assert!(!out.ok && out.local && !out.timed_out, "{out:?}");
        assert_eq!(out.detail, "agent could not probe: no route to the backend resolved yet (no source address)");
        let v6 = Route { source: Some("fd00::1".parse().unwrap()), hop: NextHop::default() };
        let out = probe(backend, via(Carrier::Gue { port: 6080 }), v6, TIMEOUT).await;
        assert!(!out.ok && out.local, "{out:?}");
        assert!(out.detail.starts_with("agent could not probe: the node's address towards the backend (fd00::1) is not of the VIP's family"), "{out:?}");
        let v4 = Route { source: Some("127.0.0.1".parse().unwrap()), hop: NextHop::default() };
        let out = probe(backend, via(Carrier::Direct), v4, TIMEOUT).await;
        assert!(!out.ok && out.local, "{out:?}");
        assert_eq!(out.detail, "agent could not probe: the backend's MAC is not resolved yet (the kernel was asked to resolve it)");
    }

    #[test]
    fn carriers_read_as_operators_know_them() {
        assert_eq!(Carrier::Tunnel.to_string(), "tunnel");
        assert_eq!(Carrier::Gue { port: 6080 }.to_string(), "GUE (port 6080)");
        assert_eq!(Carrier::Direct.to_string(), "direct (L2)");
    }
}
