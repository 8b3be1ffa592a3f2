//! The configuration as the agent uses it, and its YAML form (`file` types: what serde reads
//! and writes, with defaults and `deny_unknown_fields`).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use lb_common::{
    limits::{DEFAULT_BACKEND_CAPACITY, DEFAULT_CONN_CAPACITY, DEFAULT_RING_SIZE, DEFAULT_VIP_CAPACITY},
    maps::{PROTO_TCP, PROTO_UDP},
    sizing::Sizing,
};
use serde::{Deserialize, Serialize};

use crate::api::DEFAULT_ADMIN_SOCKET;

/// A whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Settings of the load balancer itself.
    pub global: Global,
    /// The virtual services.
    pub vips: Vec<Vip>,
}

/// `global:`: the same type in the YAML and in the agent (defaults filled in by serde; checked
/// by `config::validate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// Interfaces the XDP program is attached to; VIP addresses are added to the first.
    pub interfaces: Vec<String>,
    /// Names this load balancer's data path in bpffs (`/sys/fs/bpf/lb/<instance>`), where it
    /// lives on between agents.
    #[serde(default = "file::default_instance")]
    pub instance: String,
    /// How to attach.
    #[serde(default = "file::default_mode")]
    pub xdp_mode: XdpMode,
    /// Forwarding mode.
    #[serde(default)]
    pub forwarding: Forwarding,
    /// Flow hash seed: the same on every node of a cluster.
    #[serde(default)]
    pub hash_seed: u32,
    /// Slots of each Maglev ring (prime).
    #[serde(default = "file::default_ring")]
    pub ring_size: u32,
    /// VIPs the maps hold.
    #[serde(default = "file::default_vips")]
    pub vip_capacity: u32,
    /// Backend slots (all VIPs; slot 0 reserved).
    #[serde(default = "file::default_backends")]
    pub backend_capacity: u32,
    /// Connection table entries (one per flow).
    #[serde(default = "file::default_conns")]
    pub conn_capacity: u32,
    /// Seconds a Maglev VIP keeps its previous ring after its last change, for flows older
    /// than the change that have not sent a packet since (README, "State only on change").
    #[serde(default = "file::default_ring_retention")]
    pub ring_retention_secs: u32,
    /// The admin API's unix socket.
    #[serde(default = "file::default_socket")]
    pub admin_socket: PathBuf,
    /// Where to serve Prometheus metrics, if anywhere.
    #[serde(default)]
    pub metrics_address: Option<SocketAddr>,
    /// Who puts the VIP addresses on the first interface: the agent, or another program
    /// (keepalived moving them between nodes).
    #[serde(default)]
    pub vip_addresses: VipAddressOwner,
    /// The kernel routing table in which the agent keeps a route for each VIP address this node
    /// should attract (health-gated), for a routing daemon to export; `None`: no announcement.
    #[serde(default)]
    pub announce_table: Option<u32>,
    /// Log format.
    #[serde(default = "file::default_log")]
    pub log_format: LogFormat,
    /// Sending the connections that started in a moved ring slot to the other nodes, and
    /// taking theirs (README, "Flow sync"); `None`: off.
    #[serde(default)]
    pub flow_sync: Option<FlowSync>,
}

/// `global.flow_sync`: where this node takes its peers' flow sync datagrams, where it sends its
/// own, and the key that authenticates both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSync {
    /// The UDP address and port this node receives on (a management network's address).
    pub listen: SocketAddr,
    /// The other nodes' `listen` addresses.
    pub peers: Vec<SocketAddr>,
    /// A file holding the key shared by every node (at least
    /// [`lb_common::limits::FLOW_SYNC_MIN_KEY_BYTES`] bytes; readable by its owner alone).
    pub key_file: PathBuf,
}

impl Global {
    /// The map sizes and seed to load the data path with.
    pub fn sizing(&self) -> Sizing {
        Sizing {
            vip_capacity: self.vip_capacity,
            backend_capacity: self.backend_capacity,
            ring_size: self.ring_size,
            conn_capacity: self.conn_capacity,
            half_open_capacity: lb_common::limits::half_open_capacity(self.conn_capacity),
            hash_seed: self.hash_seed,
        }
    }
}

/// `global.xdp_mode`, and how the data path is attached (`lb run --xdp-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver mode, falling back to generic mode with a warning.
    Auto,
    /// Driver (native) mode only.
    Driver,
    /// Generic mode (any interface, slower).
    Generic,
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Driver => "driver",
            XdpMode::Generic => "generic",
        })
    }
}

/// `global.vip_addresses`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VipAddressOwner {
    /// The agent adds each VIP address while a VIP uses it and removes it on `lb teardown`.
    #[default]
    Agent,
    /// Another program (keepalived, VRRP) owns them: the agent never adds or removes one.
    External,
}

/// `global.forwarding` (the default of every VIP) and `vips[].forwarding`: how a VIP's packets
/// reach its backends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Forwarding {
    /// Destination NAT; replies come back through the load balancer.
    #[default]
    Nat,
    /// Direct server return in an IP tunnel (IPIP, IPv6-in-IPv6, IPv4-in-IPv6).
    Tunnel,
    /// Direct server return in GUE (the tunnel inside UDP).
    Gue,
    /// Direct server return on one L2 segment (the backend's MAC).
    Direct,
    /// A mode this build does not have (as written in the file); validation refuses it.
    Unsupported(String),
}

impl Forwarding {
    /// The modes, as written in the file.
    pub const NAMES: [&str; 4] = ["nat", "tunnel", "gue", "direct"];

    /// The data path's code (`lb_common::encap::FORWARD_*`).
    pub fn code(&self) -> u8 {
        use lb_common::encap::{FORWARD_DIRECT, FORWARD_GUE, FORWARD_NAT, FORWARD_TUNNEL};
        match self {
            Forwarding::Nat | Forwarding::Unsupported(_) => FORWARD_NAT,
            Forwarding::Tunnel => FORWARD_TUNNEL,
            Forwarding::Gue => FORWARD_GUE,
            Forwarding::Direct => FORWARD_DIRECT,
        }
    }

    /// Whether backends answer clients directly (a direct server return mode).
    pub fn is_dsr(&self) -> bool {
        matches!(self, Forwarding::Tunnel | Forwarding::Gue | Forwarding::Direct)
    }

    /// Whether packets get an outer header.
    pub fn is_encapsulated(&self) -> bool {
        matches!(self, Forwarding::Tunnel | Forwarding::Gue)
    }
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

impl From<String> for Forwarding {
    fn from(s: String) -> Self {
        match s.as_str() {
            "nat" => Forwarding::Nat,
            "tunnel" => Forwarding::Tunnel,
            "gue" => Forwarding::Gue,
            "direct" => Forwarding::Direct,
            _ => Forwarding::Unsupported(s),
        }
    }
}

impl From<Forwarding> for String {
    fn from(f: Forwarding) -> Self {
        match f {
            Forwarding::Nat => "nat".into(),
            Forwarding::Tunnel => "tunnel".into(),
            Forwarding::Gue => "gue".into(),
            Forwarding::Direct => "direct".into(),
            Forwarding::Unsupported(s) => s,
        }
    }
}

/// A VIP's options for the direct server return modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsrOptions {
    /// `tunnel_source`: a prefix whose addresses are the outer sources, one per flow by its
    /// hash (`None`: the node's address on the egress interface).
    pub tunnel_source: Option<(IpAddr, u8)>,
    /// `gue_port`: the GUE destination port.
    pub gue_port: u16,
    /// `mss_clamp`: clamp the MSS of clients' SYNs to fit the tunnel MTU.
    pub mss_clamp: bool,
    /// `tunnel_mtu`: the MTU of the path to the backends when it is below the egress
    /// interface's (a link or tunnel further on); `None`: the egress interface's.
    pub tunnel_mtu: Option<u16>,
}

impl Default for DsrOptions {
    fn default() -> Self {
        DsrOptions { tunnel_source: None, gue_port: lb_common::encap::DEFAULT_GUE_PORT, mss_clamp: false, tunnel_mtu: None }
    }
}

/// `global.log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// A `vips:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Vip {
    /// Unique name.
    pub name: String,
    /// Address clients connect to.
    pub address: IpAddr,
    /// Port clients connect to.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// How new flows are given a backend.
    pub scheduler: Scheduler,
    /// Hash only the client address (sticky sessions).
    pub source_affinity: bool,
    /// A UDP flow's connection-table entry expires after this long without a packet.
    pub udp_idle_timeout: Duration,
    /// How backends are checked.
    pub health_check: HealthCheck,
    /// How packets reach the backends.
    pub forwarding: Forwarding,
    /// Options of the direct server return modes.
    pub dsr: DsrOptions,
    /// The pool.
    pub backends: Vec<BackendConfig>,
}

/// `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// `scheduler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    /// Weighted Maglev hashing: the same choice on every node.
    Maglev,
    /// Weighted round robin per new flow (per CPU).
    RoundRobin,
    /// The less loaded of two candidates per new flow.
    LeastConn,
}

/// `health_check`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// What a probe does.
    pub kind: CheckKind,
    /// Probe port, if not the backend's.
    pub port: Option<u16>,
    /// Time between probes.
    pub interval: Duration,
    /// Time between probes while a backend is changing state.
    pub fast_interval: Duration,
    /// Longest a probe may take.
    pub timeout: Duration,
    /// Consecutive successes that bring a backend up.
    pub rise: u32,
    /// Consecutive failures that take a backend down.
    pub fall: u32,
    /// Where probes go.
    pub target: ProbeTarget,
}

/// `health_check.target`: where a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeTarget {
    /// To the backend's own address (NAT VIPs; for a DSR VIP, a plain probe that does not
    /// show whether the backend serves the VIP).
    Address,
    /// To the VIP on the backend, the way the VIP's packets reach it (tunnel, GUE or its MAC):
    /// a backend that is up but does not serve the VIP fails. The default of DSR VIPs.
    Vip,
}

/// `health_check.type` and its options.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// An HTTP request; healthy when the status is expected.
    Http {
        /// GET or HEAD.
        method: HttpMethod,
        /// Request path.
        path: String,
        /// Healthy statuses.
        expect_status: Vec<u16>,
        /// Host header, if not the backend's address.
        host: Option<String>,
    },
    /// A TCP connect.
    Tcp,
    /// No checks: backends are always considered healthy.
    None,
}

/// `health_check.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// HEAD.
    Head,
}

/// A `backends:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Address (same family as the VIP's).
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Share of new flows; 0 takes none.
    pub weight: u32,
    /// Administrative state.
    pub state: AdminState,
}

impl BackendConfig {
    /// Address and port.
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// `backends[].state`: what the operator wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// In service.
    Up,
    /// Keeps its flows, takes no new ones.
    Draining,
    /// Out of service.
    Down,
}

impl Config {
    /// The map sizes and seed to load the data path with.
    pub fn sizing(&self) -> Sizing {
        self.global.sizing()
    }
}

/// The YAML form.
pub mod file {
    use super::*;

    /// The document.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Document {
        pub global: Global,
        #[serde(default)]
        pub vips: Vec<Vip>,
    }

    pub(super) fn default_mode() -> XdpMode {
        XdpMode::Auto
    }
    pub(super) fn default_instance() -> String {
        "default".into()
    }
    pub(super) fn default_ring() -> u32 {
        DEFAULT_RING_SIZE
    }
    pub(super) fn default_vips() -> u32 {
        DEFAULT_VIP_CAPACITY
    }
    pub(super) fn default_backends() -> u32 {
        DEFAULT_BACKEND_CAPACITY
    }
    pub(super) fn default_conns() -> u32 {
        DEFAULT_CONN_CAPACITY
    }
    pub(super) fn default_ring_retention() -> u32 {
        lb_common::limits::DEFAULT_RING_RETENTION_SECS
    }
    pub(super) fn default_socket() -> PathBuf {
        DEFAULT_ADMIN_SOCKET.into()
    }
    pub(super) fn default_log() -> LogFormat {
        LogFormat::Human
    }
    fn default_protocol() -> Protocol {
        Protocol::Tcp
    }
    fn default_scheduler() -> Scheduler {
        Scheduler::Maglev
    }
    fn default_weight() -> u32 {
        1
    }
    fn default_state() -> AdminState {
        AdminState::Up
    }

    pub use super::Global;

    /// A `vips:` entry.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Vip {
        pub name: String,
        pub address: IpAddr,
        pub port: Port,
        #[serde(default = "default_protocol")]
        pub protocol: Protocol,
        #[serde(default = "default_scheduler")]
        pub scheduler: Scheduler,
        #[serde(default)]
        pub source_affinity: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub udp_idle_timeout: Option<Dur>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub forwarding: Option<Forwarding>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tunnel_source: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub gue_port: Option<Port>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub mss_clamp: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tunnel_mtu: Option<u32>,
        #[serde(default)]
        pub health_check: HealthCheck,
        #[serde(default)]
        pub backends: Vec<Backend>,
    }

    /// `health_check.type`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum CheckType {
        #[default]
        Http,
        Tcp,
        None,
    }

    /// An integer as written, with what it should be for type errors; ranges are checked by
    /// validation so that every problem is reported.
    fn integer<'de, D: serde::Deserializer<'de>>(d: D, what: &'static str) -> Result<i64, D::Error> {
        struct V(&'static str);
        impl serde::de::Visitor<'_> for V {
            type Value = i64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
                Ok(v)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
                Ok(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        d.deserialize_i64(V(what))
    }

    /// A port number as written.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    #[serde(transparent)]
    pub struct Port(pub i64);

    impl<'de> Deserialize<'de> for Port {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            integer(d, "a port number (1-65535)").map(Port)
        }
    }

    /// An HTTP status as written.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    #[serde(transparent)]
    pub struct Status(pub i64);

    impl<'de> Deserialize<'de> for Status {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            integer(d, "an HTTP status (100-599)").map(Status)
        }
    }

    /// One status or a list.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[serde(untagged)]
    pub enum Statuses {
        One(Status),
        Many(Vec<Status>),
    }

    impl<'de> Deserialize<'de> for Statuses {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Statuses;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an HTTP status or a list of them, such as [200, 204]")
                }
                fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Statuses, E> {
                    Ok(Statuses::One(Status(v)))
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Statuses, E> {
                    Ok(Statuses::One(Status(i64::try_from(v).unwrap_or(i64::MAX))))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Statuses, A::Error> {
                    let mut list = Vec::new();
                    while let Some(s) = seq.next_element()? {
                        list.push(s);
                    }
                    Ok(Statuses::Many(list))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// A duration: `"2s"` or a number of seconds.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[serde(untagged)]
    pub enum Dur {
        Seconds(i64),
        Text(String),
    }

    impl<'de> Deserialize<'de> for Dur {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Dur;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a duration such as 500ms, 2s or 1m")
                }
                fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                    Ok(Dur::Seconds(v))
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                    Ok(Dur::Seconds(i64::try_from(v).unwrap_or(i64::MAX)))
                }
                fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                    Ok(Dur::Text(v.to_string()))
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                    Ok(Dur::Text(v.to_owned()))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// `health_check:`; options left out take HAProxy's defaults.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HealthCheck {
        #[serde(default, rename = "type")]
        pub kind: CheckType,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub method: Option<HttpMethod>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub expect_status: Option<Statuses>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub port: Option<Port>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub interval: Option<Dur>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub fast_interval: Option<Dur>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub timeout: Option<Dur>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rise: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub fall: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub target: Option<ProbeTarget>,
    }

    /// A `backends:` entry; the port defaults to the VIP's.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Backend {
        pub address: IpAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub port: Option<Port>,
        #[serde(default = "default_weight")]
        pub weight: u32,
        #[serde(default = "default_state")]
        pub state: AdminState,
    }
}

impl Serialize for Config {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_file().serialize(s)
    }
}

fn dur(d: Duration) -> Option<file::Dur> {
    Some(file::Dur::Text(super::duration::format(d)))
}

impl Config {
    /// The YAML form of this configuration (parses back to an equal one).
    pub fn to_file(&self) -> file::Document {
        file::Document {
            global: self.global.clone(),
            vips: self
                .vips
                .iter()
                .map(|v| {
                    let h = &v.health_check;
                    let mut check = file::HealthCheck {
                        port: h.port.map(|p| file::Port(p.into())),
                        interval: dur(h.interval),
                        fast_interval: dur(h.fast_interval),
                        timeout: dur(h.timeout),
                        rise: Some(h.rise),
                        fall: Some(h.fall),
                        target: Some(h.target),
                        ..file::HealthCheck::default()
                    };
                    match &h.kind {
                        CheckKind::Http { method, path, expect_status, host } => {
                            check.kind = file::CheckType::Http;
                            check.method = Some(*method);
                            check.path = Some(path.clone());
                            check.expect_status = Some(file::Statuses::Many(expect_status.iter().map(|&s| file::Status(s.into())).collect()));
                            check.host = host.clone();
                        }
                        CheckKind::Tcp => check.kind = file::CheckType::Tcp,
                        CheckKind::None => check.kind = file::CheckType::None,
                    }
                    file::Vip {
                        name: v.name.clone(),
                        address: v.address,
                        port: file::Port(v.port.into()),
                        protocol: v.protocol,
                        scheduler: v.scheduler,
                        source_affinity: v.source_affinity,
                        udp_idle_timeout: if v.protocol == Protocol::Udp { dur(v.udp_idle_timeout) } else { None },
                        forwarding: Some(v.forwarding.clone()),
                        tunnel_source: v.dsr.tunnel_source.map(|(a, len)| format!("{a}/{len}")),
                        gue_port: (v.forwarding == Forwarding::Gue).then_some(file::Port(v.dsr.gue_port.into())),
                        mss_clamp: v.forwarding.is_encapsulated().then_some(v.dsr.mss_clamp),
                        tunnel_mtu: v.dsr.tunnel_mtu.map(u32::from),
                        health_check: check,
                        backends: v
                            .backends
                            .iter()
                            .map(|b| file::Backend { address: b.address, port: Some(file::Port(b.port.into())), weight: b.weight, state: b.state })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}
