//! The admin API: JSON over HTTP/1.1 on a unix socket (root only). The agent serves it; the
//! CLI is its client. `GET /v1/status`, `GET /v1/stats`, `GET /v1/config`, and
//! `POST /v1/command` with a [`Request`] body for everything else.

pub mod client;
pub mod http;
pub mod server;
pub mod socket_path;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Where the agent listens unless the configuration says otherwise.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/lb/lb.sock";

/// A command for the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// VIPs and backends with state and traffic.
    Status,
    /// Counters: verdict reasons, health checks, table swaps.
    Stats,
    /// The running configuration.
    Config,
    /// Adds a backend to a VIP (health-checked backends start down until proven up).
    BackendAdd {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        backend: SocketAddr,
        /// Weight.
        weight: u32,
    },
    /// Removes a backend; its flows move to the others.
    BackendRemove {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        backend: SocketAddr,
        /// Also when it is the VIP's last backend taking new flows.
        #[serde(default)]
        force: bool,
    },
    /// Sets a backend's administrative state: `up`, `draining` or `down`.
    BackendState {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        backend: SocketAddr,
        /// `up`, `draining` or `down`.
        state: String,
        /// Also when it is the VIP's last backend taking new flows.
        #[serde(default)]
        force: bool,
    },
    /// Sets a backend's weight.
    BackendWeight {
        /// VIP name.
        vip: String,
        /// Backend address and port.
        backend: SocketAddr,
        /// Weight.
        weight: u32,
        /// Also weight 0 on the VIP's last backend taking new flows.
        #[serde(default)]
        force: bool,
    },
    /// Adds a VIP given as the YAML of one `vips:` entry.
    VipAdd {
        /// YAML of the VIP.
        yaml: String,
    },
    /// Removes a VIP.
    VipRemove {
        /// VIP name.
        name: String,
    },
    /// Which backend a flow goes to, and why, from the data path's own maps.
    Explain {
        /// Client address and port.
        src: SocketAddr,
        /// VIP address and port.
        dst: SocketAddr,
        /// `tcp` or `udp`.
        protocol: String,
    },
    /// Re-reads the configuration file and applies the difference.
    Reload,
    /// Detaches the data path, removes its pinned maps and the VIP addresses, and stops the
    /// agent (`lb teardown`).
    Teardown,
}

/// Traffic counters with the recent rate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficStatus {
    /// Packets (both directions).
    pub packets: u64,
    /// Bytes (both directions).
    pub bytes: u64,
    /// New flows assigned.
    pub new_flows: u64,
    /// Packets dropped because no backend could take them (VIPs).
    #[serde(default)]
    pub dropped: u64,
    /// Packets per second over the last sampling interval.
    pub packets_per_second: f64,
}

/// One backend in `lb status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Slot id.
    pub id: u32,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// Administrative state: up, draining, down.
    pub admin: String,
    /// Health: up, down (or up when not checked).
    pub health: String,
    /// What the data path does: up, draining, down.
    pub state: String,
    /// Flows in the connection table pointing at it.
    pub active_connections: u64,
    /// Next hop MAC, once resolved.
    pub next_hop: Option<String>,
    /// Traffic.
    pub traffic: TrafficStatus,
    /// What the latest health probe found (`None` when not checked).
    #[serde(default)]
    pub last_probe: Option<String>,
    /// Probes of it that failed on the agent's side (no route, a local firewall, no
    /// descriptors or memory, a timeout while the agent lagged): counted against the agent,
    /// never against the backend.
    #[serde(default)]
    pub probe_local_errors: u64,
    /// How a backend of a direct server return VIP is probed: through the VIP (`tcp via
    /// tunnel to VIP 10.0.0.10:80`) or plainly at its address, which does not show that it
    /// serves the VIP. `None` for NAT VIPs and unchecked ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
}

/// One VIP in `lb status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    /// Name.
    pub name: String,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// tcp or udp.
    pub protocol: String,
    /// maglev, round-robin or least-conn.
    pub scheduler: String,
    /// nat, tunnel, gue or direct.
    #[serde(default = "nat")]
    pub forwarding: String,
    /// Backends in the live ring.
    pub ring_backends: u32,
    /// Ring slots of a Maglev VIP marked moved: their packets use the connection table, every
    /// other slot's are sent by the live ring alone (README, "State only on change").
    #[serde(default)]
    pub moved_slots: u32,
    /// Seconds until the VIP drops the ring it retains since its last change; `None`: it
    /// retains none.
    #[serde(default)]
    pub retained_ring_seconds: Option<u32>,
    /// Whether this node serves the VIP: its program runs on every interface and one of the
    /// VIP's own backends takes new flows (`lb check`).
    #[serde(default)]
    pub serving: bool,
    /// Why (or why not), in words.
    #[serde(default)]
    pub serving_reason: String,
    /// Whether this node announces the VIP's address (`global.announce_table`).
    pub announced: bool,
    /// Why (or why not), in words.
    pub announce_reason: String,
    /// Traffic.
    pub traffic: TrafficStatus,
    /// The pool.
    pub backends: Vec<BackendStatus>,
}

fn nat() -> String {
    "nat".into()
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Configuration file.
    pub config_file: String,
    /// Interfaces and their XDP mode.
    pub interfaces: Vec<(String, String)>,
    /// Seconds since the agent started.
    pub uptime_seconds: u64,
    /// The pinned data path and the program running on it.
    pub data_path: DataPathStatus,
    /// VIPs.
    pub vips: Vec<VipStatus>,
    /// What the agent added to the host (VIP addresses, announcement routes).
    #[serde(default)]
    pub host: HostStatus,
    /// The connection table's fill, in all and per CPU.
    #[serde(default)]
    pub connection_table: ConnTableStatus,
    /// Flow sync's counters, when `global.flow_sync` is set.
    #[serde(default)]
    pub flow_sync: Option<FlowSyncStatus>,
}

/// Flow sync in `lb status` (README, "Flow sync"): records since the agent started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowSyncStatus {
    /// Records sent to the peers (each once, whatever the number of peers).
    pub sent: u64,
    /// Datagrams the network refused (a peer's port closed).
    pub send_errors: u64,
    /// Records of this node not sent: their backend slot changed before the agent read them.
    pub unsendable: u64,
    /// Records dropped by the data path: its ring buffer was full (`flow_sync_dropped`).
    pub ring_dropped: u64,
    /// Records received in authenticated datagrams.
    pub received: u64,
    /// Records inserted into the connection table.
    pub inserted: u64,
    /// Records whose flow had an entry already.
    pub existing: u64,
    /// Datagrams and records not used, by reason (`flow_sync::Rejected` names).
    pub rejected: Vec<(String, u64)>,
}

/// The connection table in `lb status`: one LRU list per CPU, each CPU evicting from its own
/// share when that share is full.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnTableStatus {
    /// Entries, all CPUs together (last count).
    pub entries: u64,
    /// Entries it holds at most.
    pub capacity: u64,
    /// Each CPU's share of `capacity`.
    pub per_cpu_capacity: u64,
    /// Entries each CPU created (its LRU list's fill), by CPU index.
    pub per_cpu: Vec<u64>,
}

/// What the agent owns on the host, in `lb status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The record file (`/run/lb/<instance>/host-state.json`).
    pub record: String,
    /// Addresses and routes the agent added and that are in place.
    pub owned: Vec<String>,
    /// Changes the agent is still trying to make.
    pub pending: Vec<HostPending>,
    /// Addresses and routes the agent wants that were on the host already, added by someone
    /// else: left alone, never removed by the agent.
    pub foreign: Vec<String>,
}

/// A change to the host that failed and will be tried again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostPending {
    /// The address or route.
    pub item: String,
    /// `add` or `remove`.
    pub action: String,
    /// The last error.
    pub error: String,
    /// Failures in a row.
    pub failures: u32,
    /// Milliseconds until the next try.
    pub retry_in_ms: u64,
}

/// The pinned data path in `lb status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataPathStatus {
    /// Its bpffs directory.
    pub pin_dir: String,
    /// Whether this agent adopted it from an earlier one (false: created it).
    pub adopted: bool,
    /// Layout version of its maps.
    pub layout: u64,
    /// Fingerprint of the running program object (the same for the same build).
    pub program_hash: String,
    /// The kernel's id of the running program.
    pub program_id: u32,
    /// The kernel's tag of the running program (a hash of its instructions).
    pub program_tag: String,
    /// The `lb` version that loaded it.
    pub agent_version: String,
    /// Times this agent attached the program again to an interface that was re-created or
    /// whose link went defunct.
    #[serde(default)]
    pub links_reattached: u64,
}

/// Health-check and table-swap figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthStats {
    /// Probes sent.
    pub probes: u64,
    /// Probes failed.
    pub failures: u64,
    /// Backend health flips.
    pub transitions: u64,
    /// Ring swaps caused by health flips.
    pub swaps: u64,
    /// Time from the probe that caused the last flip to the swapped ring, in milliseconds.
    pub last_probe_to_swap_ms: Option<f64>,
    /// Largest such time seen, in milliseconds.
    pub max_probe_to_swap_ms: Option<f64>,
    /// Time to build and write the last ring, in milliseconds.
    pub last_table_write_ms: Option<f64>,
    /// Probes that failed on the agent's side since it started (all backends, removed ones
    /// included), counted against no backend.
    #[serde(default)]
    pub local_errors: u64,
}

/// `GET /v1/stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Packets per verdict reason, in the data path's order.
    pub reasons: Vec<(String, u64)>,
    /// Health checks and swaps.
    pub health: HealthStats,
    /// Entries in the connection table (last count).
    pub connection_entries: u64,
    /// Entries the connection table holds at most (`global.conn_capacity`).
    #[serde(default)]
    pub connection_capacity: u64,
    /// Frames the kernel dropped after the program redirected them to one of its interfaces
    /// (the target could not take them).
    #[serde(default)]
    pub redirect_drops: u64,
}

/// `lb explain`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExplainReport {
    /// The VIP the flow is for, if any.
    pub vip: Option<String>,
    /// What the data path does with the flow's next packet.
    pub verdict: String,
    /// The backend it goes to.
    pub backend: Option<SocketAddr>,
    /// Why, in words.
    pub reason: String,
    /// The flow hash.
    pub hash: Option<u32>,
    /// The ring slot the hash selects.
    pub slot: Option<u32>,
    /// Whether the connection table already tracks the flow.
    pub tracked: bool,
    /// For a Maglev VIP, how the flow's packets are decided: `stateless` (the live ring alone,
    /// its slot has not moved) or `moved slot` (the connection table, then the rings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How a direct server return backend gets the packet (outer header, GUE port, MAC);
    /// `None` in NAT mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<String>,
}

/// Body of every error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
}
