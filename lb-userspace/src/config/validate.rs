//! Turns the YAML form into a [`Config`], checking everything that serde cannot: ranges,
//! duplicates, families, limits. Every problem is reported with its field path.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use lb_common::{
    limits::{
        DEFAULT_UDP_IDLE_SECS, MAX_BACKEND_CAPACITY, MAX_RING_SIZE, MAX_TUNNEL_MTU, MAX_TUNNEL_SOURCE_HOST_BITS, MAX_UDP_IDLE_SECS, MIN_TUNNEL_MTU, MAX_WEIGHT, MIN_RING_SIZE,
        RING_SLOTS_PER_BACKEND,
    },
    maglev::is_prime,
    sizing::{Sizing, SizingError},
};

use crate::health::request;

use super::{
    duration,
    endpoints::{ONE_VIP_PER_ENDPOINT, shared_endpoints},
    model::*,
};

/// Most consecutive results `rise` and `fall` may ask for.
const MAX_RISE_FALL: u32 = 100;

/// HAProxy's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_FAST_INTERVAL: Duration = Duration::from_millis(500);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
const DEFAULT_HEALTH_PATH: &str = "/health";
const DEFAULT_HEALTH_STATUS: u16 = 200;

/// A problem at a field path.
pub type Problem = (String, String);

struct Checker {
    problems: Vec<Problem>,
}

/// Which global sizes are valid: checks against an invalid size would only repeat its error.
#[derive(Clone, Copy)]
struct SizesOk {
    ring_size: bool,
    vip_capacity: bool,
    backend_capacity: bool,
}

impl Checker {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push((path.into(), message.into()));
    }
}

/// The kernel's rule (`dev_valid_name`).
fn valid_ifname(name: &str) -> bool {
    (1..libc::IFNAMSIZ).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

fn valid_vip_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The smallest prime ring size at or above `n`, if there is one within the limits.
fn next_prime(n: u64) -> Option<u32> {
    let mut n = u32::try_from(n.max(MIN_RING_SIZE as u64)).ok()?;
    while n <= MAX_RING_SIZE {
        if is_prime(n) {
            return Some(n);
        }
        n += 1;
    }
    None
}

fn sizing_field(e: &SizingError) -> &'static str {
    match e {
        SizingError::RingSize(_) | SizingError::RingMapTooLarge { .. } => "global.ring_size",
        SizingError::VipCapacity(_) => "global.vip_capacity",
        SizingError::BackendCapacity(_) => "global.backend_capacity",
        SizingError::ConnCapacity(_) | SizingError::HalfOpenCapacity(_) => "global.conn_capacity",
    }
}

/// Why `n` is not a port, if it is not one: the file's check and the CLI's.
pub fn port_problem(n: i64) -> Option<String> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => None,
        _ => Some(format!("{n} is not a port: use 1-65535")),
    }
}

/// Why `w` is not a weight, if it is not one: the file's check and the CLI's.
pub fn weight_problem(w: u32) -> Option<String> {
    (w > MAX_WEIGHT).then(|| format!("{w} is above the maximum weight {MAX_WEIGHT}"))
}

/// Checks a port as written.
fn port(c: &mut Checker, path: String, n: i64) -> u16 {
    match port_problem(n) {
        None => n as u16,
        Some(problem) => {
            c.report(path, problem);
            0
        }
    }
}

/// Checks `doc` and builds the configuration, or returns every problem found.
pub fn validate(doc: &file::Document) -> Result<Config, Vec<Problem>> {
    let mut c = Checker { problems: Vec::new() };
    let (global, sizes) = global(&mut c, &doc.global);
    let mut vips = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut keys: HashMap<(SocketAddr, Protocol), usize> = HashMap::new();
    for (i, v) in doc.vips.iter().enumerate() {
        let at = format!("vips[{i}]");
        if !valid_vip_name(&v.name) {
            c.report(format!("{at}.name"), format!("{:?} must be 1-63 letters, digits, '_', '.' or '-'", v.name));
        } else if let Some(j) = names.insert(&v.name, i) {
            c.report(format!("{at}.name"), format!("{:?} is already the name of vips[{j}]", v.name));
        }
        let vip_port = port(&mut c, format!("{at}.port"), v.port.0);
        let key = (SocketAddr::new(v.address, vip_port), v.protocol);
        if vip_port != 0
            && let Some(j) = keys.insert(key, i)
        {
            c.report(
                format!("{at}.address"),
                format!("{}/{} is already vips[{j}] ({:?})", key.0, v.protocol, doc.vips[j].name),
            );
        }
        let forwarding = v.forwarding.clone().unwrap_or_else(|| global.forwarding.clone());
        if let Some(f) = &v.forwarding {
            forwarding_mode(&mut c, &format!("{at}.forwarding"), f);
        }
        let dsr = dsr_options(&mut c, &at, v, &forwarding);
        let health_check = health_check(&mut c, &format!("{at}.health_check"), &v.health_check, &forwarding);
        let backends = backends(&mut c, &at, v, vip_port, &forwarding);
        if health_check.target == ProbeTarget::Vip
            && forwarding.is_encapsulated()
            && let Some(b) = backends.iter().find(|b| b.address.is_ipv4() != v.address.is_ipv4())
        {
            c.report(
                format!("{at}.health_check.target"),
                format!("a probe through the VIP {} needs a source of the VIP's family towards backend {}, which an IPv4-in-IPv6 backend has not: set target address", v.address, b.address),
            );
        }
        let needed = backends.len() as u64 * RING_SLOTS_PER_BACKEND as u64;
        if sizes.ring_size && needed > global.ring_size as u64 {
            let advice = match next_prime(needed) {
                Some(p) => format!("set global.ring_size to a prime such as {p}"),
                None => format!("the largest ring size is {MAX_RING_SIZE}: split the pool over several VIPs"),
            };
            c.report(
                format!("{at}.backends"),
                format!(
                    "VIP {:?} has {} backends, which need a ring of at least {needed} slots ({RING_SLOTS_PER_BACKEND} per backend) but global.ring_size is {}: {advice}",
                    v.name,
                    backends.len(),
                    global.ring_size,
                ),
            );
        }
        vips.push(Vip {
            name: v.name.clone(),
            address: v.address,
            port: vip_port,
            protocol: v.protocol,
            scheduler: v.scheduler,
            source_affinity: v.source_affinity,
            udp_idle_timeout: udp_idle_timeout(&mut c, &at, v),
            health_check,
            forwarding,
            dsr,
            backends,
        });
    }
    shared_backends(&mut c, &vips);
    if sizes.vip_capacity && vips.len() as u64 > global.vip_capacity as u64 {
        c.report(
            "vips",
            format!("{} VIPs exceed global.vip_capacity {}: raise it or remove VIPs", vips.len(), global.vip_capacity),
        );
    }
    let total: usize = vips.iter().map(|v| v.backends.len()).sum();
    if sizes.backend_capacity && total as u64 >= global.backend_capacity as u64 {
        let advice = if total < MAX_BACKEND_CAPACITY as usize {
            format!("raise it to at least {}", total + 1)
        } else {
            format!("at most {} backends fit in all: remove backends", MAX_BACKEND_CAPACITY - 1)
        };
        c.report(
            "vips",
            format!(
                "{total} backends in all exceed global.backend_capacity {} (slot 0 is reserved: at most {}): {advice}",
                global.backend_capacity,
                global.backend_capacity.saturating_sub(1),
            ),
        );
    }
    if c.problems.is_empty() { Ok(Config { global, vips }) } else { Err(c.problems) }
}

/// Refuses every backend endpoint that serves a second NAT VIP, at its second occurrence (a
/// direct server return backend's packets are never translated, so it may serve any number of
/// VIPs). A port of 0 was already reported as invalid.
fn shared_backends(c: &mut Checker, vips: &[Vip]) {
    let pools = vips
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.forwarding.is_dsr())
        .map(|(i, v)| (i, v.protocol, v.backends.iter().map(BackendConfig::endpoint)));
    for s in shared_endpoints(pools).into_iter().filter(|s| s.endpoint.addr.port() != 0) {
        c.report(
            format!("vips[{}].backends[{}]", s.vip, s.backend),
            format!("backend {} already serves VIP {:?} (vips[{}]); {ONE_VIP_PER_ENDPOINT}", s.endpoint, vips[s.first].name, s.first),
        );
    }
}

fn global(c: &mut Checker, g: &file::Global) -> (Global, SizesOk) {
    if g.interfaces.is_empty() {
        c.report("global.interfaces", "at least one interface is required");
    }
    for (i, name) in g.interfaces.iter().enumerate() {
        if !valid_ifname(name) {
            c.report(
                format!("global.interfaces[{i}]"),
                format!("{name:?} is not a valid interface name: use 1-{} characters without '/', ':' or spaces (see `ip link`)", libc::IFNAMSIZ - 1),
            );
        } else if g.interfaces[..i].contains(name) {
            c.report(format!("global.interfaces[{i}]"), format!("interface {name} is listed twice"));
        }
    }
    if !valid_instance(&g.instance) {
        c.report(
            "global.instance",
            format!("{:?} is not a valid instance name: use 1-64 letters, digits, '-' or '_' (it names a directory in bpffs)", g.instance),
        );
    }
    if let Some(table) = g.announce_table
        && matches!(table, 0 | 253..=255)
    {
        c.report(
            "global.announce_table",
            format!("table {table} is reserved (0 unspec, 253 default, 254 main, 255 local): use a table of its own such as 100"),
        );
    }
    forwarding_mode(c, "global.forwarding", &g.forwarding);
    let retention = lb_common::limits::MAX_RING_RETENTION_SECS;
    if !(1..=retention).contains(&g.ring_retention_secs) {
        c.report("global.ring_retention_secs", format!("{} must be between 1 and {retention} seconds", g.ring_retention_secs));
    }
    if let Some(sync) = &g.flow_sync {
        flow_sync(c, sync);
    }
    let sizes = sizes(c, g);
    (g.clone(), sizes)
}

/// Checks `global.flow_sync`: its peers, and its key file (read here, so that a missing,
/// short or world-readable key is refused before anything starts).
fn flow_sync(c: &mut Checker, sync: &FlowSync) {
    use lb_common::limits::FLOW_SYNC_MAX_PEERS;
    if sync.listen.port() == 0 {
        c.report("global.flow_sync.listen", "port 0: name the port the peers send to");
    }
    if sync.peers.is_empty() || sync.peers.len() > FLOW_SYNC_MAX_PEERS {
        c.report("global.flow_sync.peers", format!("{} peers: list between 1 and {FLOW_SYNC_MAX_PEERS}", sync.peers.len()));
    }
    for (i, peer) in sync.peers.iter().enumerate() {
        if peer.port() == 0 || peer.ip().is_unspecified() {
            c.report(format!("global.flow_sync.peers[{i}]"), format!("{peer} is no address to send to"));
        } else if *peer == sync.listen {
            c.report(format!("global.flow_sync.peers[{i}]"), format!("{peer} is this node's own listen address"));
        } else if sync.peers[..i].contains(peer) {
            c.report(format!("global.flow_sync.peers[{i}]"), format!("{peer} is listed twice"));
        }
    }
    if let Err(e) = crate::flow_sync::read_key(&sync.key_file) {
        c.report("global.flow_sync.key_file", e);
    }
}

/// Refuses a forwarding mode this build does not have.
fn forwarding_mode(c: &mut Checker, path: &str, f: &Forwarding) {
    match f {
        Forwarding::Unsupported(mode) if mode == "dsr" => {
            c.report(path, "\"dsr\" names no single mode: direct server return is \"tunnel\" (IPIP), \"gue\" (IPIP in UDP) or \"direct\" (L2)")
        }
        Forwarding::Unsupported(other) => c.report(path, format!("{other:?} is not a forwarding mode: use one of {}", Forwarding::NAMES.join(", "))),
        _ => {}
    }
}

/// The direct server return options of VIP `v`, each refused where its mode has no use for it.
fn dsr_options(c: &mut Checker, at: &str, v: &file::Vip, forwarding: &Forwarding) -> DsrOptions {
    let mut dsr = DsrOptions::default();
    if let Some(prefix) = &v.tunnel_source {
        let path = format!("{at}.tunnel_source");
        if !forwarding.is_encapsulated() {
            c.report(&path, format!("applies to the tunnel and gue modes only (this VIP's is {forwarding})"));
        } else {
            match parse_prefix(prefix) {
                Err(e) => c.report(&path, e),
                Ok((addr, len)) => {
                    let host_bits = if addr.is_ipv4() { 32 } else { 128 } - len as u32;
                    if host_bits > MAX_TUNNEL_SOURCE_HOST_BITS as u32 {
                        c.report(&path, format!("{prefix} has {host_bits} host bits; at most {MAX_TUNNEL_SOURCE_HOST_BITS} are used: write a prefix of at least /{}", if addr.is_ipv4() { 32 } else { 128 } - MAX_TUNNEL_SOURCE_HOST_BITS as u32));
                    } else if let Some(b) = v.backends.iter().find(|b| b.address.is_ipv4() != addr.is_ipv4()) {
                        c.report(&path, format!("{prefix} is not of the family of backend {} (outer headers are of the backend's family)", b.address));
                    } else {
                        dsr.tunnel_source = Some((addr, len));
                    }
                }
            }
        }
    }
    if let Some(p) = v.gue_port {
        let path = format!("{at}.gue_port");
        if *forwarding != Forwarding::Gue {
            c.report(&path, format!("applies to the gue mode only (this VIP's is {forwarding})"));
        } else {
            dsr.gue_port = port(c, path, p.0);
        }
    }
    if let Some(clamp) = v.mss_clamp {
        let path = format!("{at}.mss_clamp");
        if !forwarding.is_encapsulated() {
            c.report(&path, format!("applies to the tunnel and gue modes only (this VIP's is {forwarding})"));
        } else if clamp && v.protocol != Protocol::Tcp {
            c.report(&path, "applies to TCP VIPs only");
        } else {
            dsr.mss_clamp = clamp;
        }
    }
    if let Some(mtu) = v.tunnel_mtu {
        let path = format!("{at}.tunnel_mtu");
        if !forwarding.is_encapsulated() {
            c.report(&path, format!("applies to the tunnel and gue modes only (this VIP's is {forwarding})"));
        } else if !(MIN_TUNNEL_MTU..=MAX_TUNNEL_MTU).contains(&mtu) {
            c.report(&path, format!("{mtu} is out of range {MIN_TUNNEL_MTU}-{MAX_TUNNEL_MTU}"));
        } else {
            dsr.tunnel_mtu = Some(mtu as u16);
        }
    }
    dsr
}

/// Parses `address/length` with the address's bits beyond the length zero.
fn parse_prefix(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let bad = || format!("{s:?} is not a prefix such as 192.0.2.0/28 or 2001:db8::/120");
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    if len > bits {
        return Err(bad());
    }
    let value = match addr {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    // The address sits in the top bits of `value`: what is left after shifting the prefix out
    // are its host bits.
    if value.checked_shl(len.into()).unwrap_or(0) != 0 {
        return Err(format!("{s} has bits set beyond its length /{len}: write the prefix's first address"));
    }
    Ok((addr, len))
}

/// Whether `name` can name an instance directory: 1-64 of `[A-Za-z0-9_-]`.
pub fn valid_instance(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks each size on its own, so that every bad one is reported, then all together.
fn sizes(c: &mut Checker, g: &file::Global) -> SizesOk {
    let all = g.sizing();
    let base = Sizing::default();
    let alone = [
        Sizing { ring_size: all.ring_size, ..base.clone() },
        Sizing { vip_capacity: all.vip_capacity, ..base.clone() },
        Sizing { backend_capacity: all.backend_capacity, ..base.clone() },
        Sizing { conn_capacity: all.conn_capacity, ..base },
    ];
    let mut ok = [true; 4];
    for (i, s) in alone.iter().enumerate() {
        if let Err(e) = s.validate() {
            ok[i] = false;
            let mut message = e.to_string();
            if let SizingError::RingSize(n) = e
                && (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&n)
                && let Some(p) = next_prime(n as u64)
            {
                message.push_str(&format!(": use {p}"));
            }
            c.report(sizing_field(&e), message);
        }
    }
    if ok.iter().all(|&o| o)
        && let Err(e) = all.validate()
    {
        c.report(sizing_field(&e), e.to_string());
    }
    SizesOk { ring_size: ok[0], vip_capacity: ok[1], backend_capacity: ok[2] }
}

fn duration_field(c: &mut Checker, path: String, value: &Option<file::Dur>, default: Duration) -> Duration {
    let d = match value {
        None => return default,
        Some(file::Dur::Seconds(s)) => {
            u64::try_from(*s).map(Duration::from_secs).map_err(|_| format!("{s} is not a duration: write it like 500ms, 2s or 1m"))
        }
        Some(file::Dur::Text(t)) => duration::parse(t),
    };
    match d {
        Ok(d) if d.is_zero() => {
            c.report(path, "must be above zero");
            default
        }
        Ok(d) => d,
        Err(e) => {
            c.report(path, e);
            default
        }
    }
}

/// `udp_idle_timeout`: whole seconds from 1 s to [`MAX_UDP_IDLE_SECS`] (the entry keeps
/// seconds); only for UDP VIPs.
fn udp_idle_timeout(c: &mut Checker, at: &str, v: &file::Vip) -> Duration {
    let default = Duration::from_secs(DEFAULT_UDP_IDLE_SECS.into());
    let path = format!("{at}.udp_idle_timeout");
    if v.udp_idle_timeout.is_some() && v.protocol != Protocol::Udp {
        c.report(path, "applies to UDP VIPs only");
        return default;
    }
    let d = duration_field(c, path.clone(), &v.udp_idle_timeout, default);
    if d.subsec_nanos() != 0 || d.as_secs() < 1 || d.as_secs() > MAX_UDP_IDLE_SECS.into() {
        c.report(path, format!("must be whole seconds from 1s to {MAX_UDP_IDLE_SECS}s"));
        return default;
    }
    d
}

fn health_check(c: &mut Checker, at: &str, h: &file::HealthCheck, forwarding: &Forwarding) -> HealthCheck {
    let interval = duration_field(c, format!("{at}.interval"), &h.interval, DEFAULT_INTERVAL);
    let fast_interval = duration_field(c, format!("{at}.fast_interval"), &h.fast_interval, DEFAULT_FAST_INTERVAL.min(interval));
    let timeout = duration_field(c, format!("{at}.timeout"), &h.timeout, DEFAULT_TIMEOUT.min(interval));
    if timeout > interval {
        c.report(
            format!("{at}.timeout"),
            format!("{} is longer than the interval {}", duration::format(timeout), duration::format(interval)),
        );
    }
    let mut count = |name: &str, v: Option<u32>, default: u32| match v {
        None => default,
        Some(n) if (1..=MAX_RISE_FALL).contains(&n) => n,
        Some(n) => {
            c.report(format!("{at}.{name}"), format!("{n} is out of range 1-{MAX_RISE_FALL}"));
            default
        }
    };
    let rise = count("rise", h.rise, DEFAULT_RISE);
    let fall = count("fall", h.fall, DEFAULT_FALL);
    let probe_port = h.port.map(|p| port(c, format!("{at}.port"), p.0));
    let kind = match h.kind {
        file::CheckType::Http => {
            let path = h.path.clone().unwrap_or_else(|| DEFAULT_HEALTH_PATH.into());
            if let Some(problem) = request::path_problem(&path) {
                c.report(format!("{at}.path"), problem);
            }
            if let Some(problem) = h.host.as_deref().and_then(request::host_problem) {
                c.report(format!("{at}.host"), problem);
            }
            let given = match &h.expect_status {
                None => vec![file::Status(DEFAULT_HEALTH_STATUS.into())],
                Some(file::Statuses::One(s)) => vec![*s],
                Some(file::Statuses::Many(list)) => list.clone(),
            };
            if given.is_empty() {
                c.report(format!("{at}.expect_status"), "list at least one status");
            }
            let mut expect_status = Vec::new();
            for file::Status(s) in given {
                match u16::try_from(s) {
                    Ok(s) if (100..=599).contains(&s) => expect_status.push(s),
                    _ => c.report(format!("{at}.expect_status"), format!("{s} is not an HTTP status (100-599)")),
                }
            }
            CheckKind::Http {
                method: h.method.unwrap_or(HttpMethod::Get),
                path,
                expect_status,
                host: h.host.clone(),
            }
        }
        other => {
            for (name, given) in [("method", h.method.is_some()), ("path", h.path.is_some()), ("expect_status", h.expect_status.is_some()), ("host", h.host.is_some())] {
                if given {
                    c.report(format!("{at}.{name}"), "only used by type http");
                }
            }
            if other == file::CheckType::Tcp { CheckKind::Tcp } else { CheckKind::None }
        }
    };
    let target = match h.target {
        Some(ProbeTarget::Vip) if !forwarding.is_dsr() => {
            c.report(format!("{at}.target"), "vip applies to direct server return VIPs (tunnel, gue, direct): a NAT VIP's backends are probed at their address");
            ProbeTarget::Address
        }
        Some(t) => t,
        None if forwarding.is_dsr() => ProbeTarget::Vip,
        None => ProbeTarget::Address,
    };
    if target == ProbeTarget::Vip && matches!(kind, CheckKind::Http { .. }) {
        c.report(
            format!("{at}.type"),
            "a probe through the VIP (the default of direct server return VIPs) is a TCP handshake with the VIP on the backend: use type tcp, or target address for HTTP probes to the backend's own address (which do not show whether it serves the VIP)",
        );
    }
    if target == ProbeTarget::Vip && probe_port.is_some() {
        c.report(format!("{at}.port"), "a probe through the VIP goes to the VIP's port: leave port out, or use target address");
    }
    HealthCheck { kind, port: probe_port, interval, fast_interval, timeout, rise, fall, target }
}

fn backends(c: &mut Checker, at: &str, v: &file::Vip, vip_port: u16, forwarding: &Forwarding) -> Vec<BackendConfig> {
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut out = Vec::new();
    for (j, b) in v.backends.iter().enumerate() {
        let bat = format!("{at}.backends[{j}]");
        let port = match b.port {
            Some(p) => port(c, format!("{bat}.port"), p.0),
            None => vip_port,
        };
        if let Some(problem) = weight_problem(b.weight) {
            c.report(format!("{bat}.weight"), problem);
        }
        // An IPv4 VIP may have IPv6 backends in the tunnel modes (IPv4-in-IPv6).
        let four_in_six = forwarding.is_encapsulated() && v.address.is_ipv4() && b.address.is_ipv6();
        if b.address.is_ipv4() != v.address.is_ipv4() && !four_in_six {
            let fam = |ip: std::net::IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            let tunnel = if v.address.is_ipv4() { " (an IPv4 VIP reaches IPv6 backends in the tunnel and gue modes only)" } else { "" };
            c.report(
                format!("{bat}.address"),
                format!("{} is {} but the VIP {} is {}{tunnel}", b.address, fam(b.address), v.address, fam(v.address)),
            );
        }
        if forwarding.is_dsr() && port != vip_port && vip_port != 0 {
            c.report(
                format!("{bat}.port"),
                format!("{port} differs from the VIP's port {vip_port}: in {forwarding} mode the backend serves the VIP itself, so no port is translated"),
            );
        }
        let endpoint = SocketAddr::new(b.address, port);
        if port != 0
            && let Some(k) = seen.insert(endpoint, j)
        {
            c.report(format!("{bat}.address"), format!("{endpoint} is listed twice (also backends[{k}])"));
        }
        out.push(BackendConfig { address: b.address, port, weight: b.weight, state: b.state });
    }
    out
}
