//! Turns the YAML form into a [`Config`], checking everything that serde cannot: ranges,
//! duplicates, families, limits. Every problem is reported with its field path.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use lb_common::{
    limits::{MAX_WEIGHT, RING_SLOTS_PER_BACKEND},
    maglev::is_prime,
};

use super::{duration, model::*};
use crate::dataplane::{Sizing, SizingError};

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

impl Checker {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push((path.into(), message.into()));
    }
}

fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len()) && !name.contains('/') && !name.chars().any(char::is_whitespace)
}

fn valid_vip_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn next_prime(mut n: u32) -> u32 {
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn sizing_field(e: &SizingError) -> &'static str {
    match e {
        SizingError::RingSize(_) | SizingError::RingMapTooLarge { .. } => "global.ring_size",
        SizingError::VipCapacity(_) => "global.vip_capacity",
        SizingError::BackendCapacity(_) => "global.backend_capacity",
        SizingError::ConnCapacity(_) => "global.conn_capacity",
    }
}

/// Checks `doc` and builds the configuration, or returns every problem found.
pub fn validate(doc: &file::Document) -> Result<Config, Vec<Problem>> {
    let mut c = Checker { problems: Vec::new() };
    let global = global(&mut c, &doc.global);
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
        if v.port == 0 {
            c.report(format!("{at}.port"), "port 0 is not allowed: use 1-65535");
        }
        let key = (SocketAddr::new(v.address, v.port), v.protocol);
        if let Some(j) = keys.insert(key, i) {
            c.report(
                format!("{at}.address"),
                format!("{}/{} is already vips[{j}] ({:?})", key.0, protocol_name(v.protocol), doc.vips[j].name),
            );
        }
        let health_check = health_check(&mut c, &format!("{at}.health_check"), &v.health_check);
        let backends = backends(&mut c, &at, v);
        let needed = backends.len() as u64 * RING_SLOTS_PER_BACKEND as u64;
        if needed > global.ring_size as u64 {
            c.report(
                format!("{at}.backends"),
                format!(
                    "{} backends need a ring of at least {needed} slots but global.ring_size is {}: use a prime such as {}",
                    backends.len(),
                    global.ring_size,
                    next_prime(needed.min(u32::MAX as u64) as u32)
                ),
            );
        }
        vips.push(Vip {
            name: v.name.clone(),
            address: v.address,
            port: v.port,
            protocol: v.protocol,
            scheduler: v.scheduler,
            source_affinity: v.source_affinity,
            health_check,
            backends,
        });
    }
    if vips.len() as u64 > global.vip_capacity as u64 {
        c.report("vips", format!("{} VIPs exceed global.vip_capacity {}", vips.len(), global.vip_capacity));
    }
    let total: usize = vips.iter().map(|v| v.backends.len()).sum();
    if total as u64 >= global.backend_capacity as u64 {
        c.report(
            "vips",
            format!(
                "{total} backends in all exceed global.backend_capacity {} (slot 0 is reserved: at most {})",
                global.backend_capacity,
                global.backend_capacity.saturating_sub(1)
            ),
        );
    }
    if c.problems.is_empty() { Ok(Config { global, vips }) } else { Err(c.problems) }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn global(c: &mut Checker, g: &file::Global) -> Global {
    if g.interfaces.is_empty() {
        c.report("global.interfaces", "at least one interface is required");
    }
    for (i, name) in g.interfaces.iter().enumerate() {
        if !valid_ifname(name) {
            c.report(format!("global.interfaces[{i}]"), format!("{name:?} is not a valid interface name"));
        } else if g.interfaces[..i].contains(name) {
            c.report(format!("global.interfaces[{i}]"), format!("interface {name} is listed twice"));
        }
    }
    match g.forwarding.as_str() {
        "nat" => {}
        "dsr" => c.report("global.forwarding", "\"dsr\" is not supported yet: use \"nat\" (direct server return comes in a later release)"),
        other => c.report("global.forwarding", format!("{other:?} is not a forwarding mode: use \"nat\"")),
    }
    let sizing = Sizing {
        vip_capacity: g.vip_capacity,
        backend_capacity: g.backend_capacity,
        ring_size: g.ring_size,
        conn_capacity: g.conn_capacity,
        hash_seed: g.hash_seed,
    };
    if let Err(e) = sizing.validate() {
        c.report(sizing_field(&e), e.to_string());
    }
    Global {
        interfaces: g.interfaces.clone(),
        xdp_mode: g.xdp_mode,
        forwarding: Forwarding::Nat,
        hash_seed: g.hash_seed,
        ring_size: g.ring_size,
        vip_capacity: g.vip_capacity,
        backend_capacity: g.backend_capacity,
        conn_capacity: g.conn_capacity,
        admin_socket: g.admin_socket.clone(),
        metrics_address: g.metrics_address,
        log_format: g.log_format,
    }
}

fn duration_field(c: &mut Checker, path: String, value: &Option<file::Dur>, default: Duration) -> Duration {
    let d = match value {
        None => return default,
        Some(file::Dur::Seconds(s)) => Ok(Duration::from_secs(*s)),
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

fn health_check(c: &mut Checker, at: &str, h: &file::HealthCheck) -> HealthCheck {
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
    if h.port == Some(0) {
        c.report(format!("{at}.port"), "port 0 is not allowed: use 1-65535");
    }
    let kind = match h.kind {
        file::CheckType::Http => {
            let path = h.path.clone().unwrap_or_else(|| DEFAULT_HEALTH_PATH.into());
            if !path.starts_with('/') {
                c.report(format!("{at}.path"), format!("{path:?} must start with '/'"));
            }
            let expect_status = match &h.expect_status {
                None => vec![DEFAULT_HEALTH_STATUS],
                Some(file::Statuses::One(s)) => vec![*s],
                Some(file::Statuses::Many(list)) => list.clone(),
            };
            if expect_status.is_empty() {
                c.report(format!("{at}.expect_status"), "list at least one status");
            }
            for s in &expect_status {
                if !(100..=599).contains(s) {
                    c.report(format!("{at}.expect_status"), format!("{s} is not an HTTP status (100-599)"));
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
    HealthCheck { kind, port: h.port, interval, fast_interval, timeout, rise, fall }
}

fn backends(c: &mut Checker, at: &str, v: &file::Vip) -> Vec<BackendConfig> {
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut out = Vec::new();
    for (j, b) in v.backends.iter().enumerate() {
        let bat = format!("{at}.backends[{j}]");
        let port = b.port.unwrap_or(v.port);
        if port == 0 {
            c.report(format!("{bat}.port"), "port 0 is not allowed: use 1-65535");
        }
        if b.weight > MAX_WEIGHT {
            c.report(format!("{bat}.weight"), format!("{} is above the maximum weight {MAX_WEIGHT}", b.weight));
        }
        if b.address.is_ipv4() != v.address.is_ipv4() {
            let fam = |ip: std::net::IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            c.report(
                format!("{bat}.address"),
                format!("{} is {} but the VIP {} is {}", b.address, fam(b.address), v.address, fam(v.address)),
            );
        }
        let endpoint = SocketAddr::new(b.address, port);
        if let Some(k) = seen.insert(endpoint, j) {
            c.report(format!("{bat}.address"), format!("{endpoint} is listed twice (also backends[{k}])"));
        }
        out.push(BackendConfig { address: b.address, port, weight: b.weight, state: b.state });
    }
    out
}
