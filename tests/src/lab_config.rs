//! The agent's configuration for a lab (the YAML that [`crate::agent::Agent::start`] writes):
//! the lab's interfaces in driver mode, its capacities and admin socket, and TCP VIPs with the
//! fast HTTP health check the lab tests use.

use std::fmt::Write as _;

/// The global section and the VIPs of a lab agent's configuration; [`LabConfig::render`]
/// writes it as YAML.
pub struct LabConfig {
    conn_capacity: Option<u32>,
    global: Vec<String>,
    vips: Vec<Vip>,
}

impl LabConfig {
    /// A configuration with no VIP whose global section has the lab's interfaces
    /// (`lbc, lbb1, lbb2, lbb3`), `xdp_mode: driver`, `vip_capacity: 8`, `backend_capacity: 64`
    /// and `admin_socket: "{socket}"` (the placeholder [`crate::agent::Agent::start`] fills in).
    pub fn new() -> LabConfig {
        LabConfig { conn_capacity: None, global: Vec::new(), vips: Vec::new() }
    }

    /// Sets `conn_capacity` (written after `backend_capacity`).
    pub fn conn_capacity(mut self, n: u32) -> LabConfig {
        self.conn_capacity = Some(n);
        self
    }

    /// Adds a line to the global section, after `admin_socket` (in call order), such as
    /// `"metrics_address: 127.0.0.1:9100"`.
    pub fn global(mut self, line: &str) -> LabConfig {
        self.global.push(line.to_owned());
        self
    }

    /// Adds a VIP (after those added before).
    pub fn vip(mut self, vip: Vip) -> LabConfig {
        self.vips.push(vip);
        self
    }

    /// The configuration as YAML.
    pub fn render(&self) -> String {
        let mut yaml = String::from("global:\n  interfaces: [lbc, lbb1, lbb2, lbb3]\n  xdp_mode: driver\n  vip_capacity: 8\n  backend_capacity: 64\n");
        if let Some(n) = self.conn_capacity {
            let _ = writeln!(yaml, "  conn_capacity: {n}");
        }
        yaml.push_str("  admin_socket: \"{socket}\"\n");
        for line in &self.global {
            let _ = writeln!(yaml, "  {line}");
        }
        yaml.push_str("vips:\n");
        for vip in &self.vips {
            vip.render(&mut yaml);
        }
        yaml
    }
}

impl Default for LabConfig {
    fn default() -> LabConfig {
        LabConfig::new()
    }
}

/// A TCP VIP with an HTTP health check of `/health` every 200 ms (100 ms while a backend's
/// state is changing), a 150 ms timeout, rise 2 and fall 2.
pub struct Vip {
    name: String,
    address: String,
    port: u16,
    backends: Vec<(String, Option<u32>)>,
    forwarding: Option<String>,
    tcp_probe_target: Option<String>,
    scheduler: Option<String>,
}

impl Vip {
    /// VIP `name` on TCP `address:port`, with no backend yet.
    pub fn tcp(name: &str, address: &str, port: u16) -> Vip {
        Vip {
            name: name.to_owned(),
            address: address.to_owned(),
            port,
            backends: Vec::new(),
            forwarding: None,
            tcp_probe_target: None,
            scheduler: None,
        }
    }

    /// Sets the VIP's `forwarding` mode (`nat`, `tunnel`, `gue`, `direct`).
    pub fn forwarding(mut self, mode: &str) -> Vip {
        self.forwarding = Some(mode.to_owned());
        self
    }

    /// Sets the VIP's `scheduler` (`maglev`, `round-robin`, `least-conn`).
    pub fn scheduler(mut self, name: &str) -> Vip {
        self.scheduler = Some(name.to_owned());
        self
    }

    /// Makes the health check a TCP handshake (same timings) with `target: vip` (through the
    /// VIP, as clients reach it) or `target: address` (the backend's own address).
    pub fn tcp_check(mut self, target: &str) -> Vip {
        self.tcp_probe_target = Some(target.to_owned());
        self
    }

    /// Adds backends (`"10.0.11.2:8080"`) with the default weight, after those added before.
    pub fn backends(mut self, endpoints: &[&str]) -> Vip {
        self.backends.extend(endpoints.iter().map(|e| ((*e).to_owned(), None)));
        self
    }

    /// Adds one backend (`"10.0.11.2:8080"`) with `weight`, after those added before.
    pub fn weighted_backend(mut self, endpoint: &str, weight: u32) -> Vip {
        self.backends.push((endpoint.to_owned(), Some(weight)));
        self
    }

    fn render(&self, yaml: &mut String) {
        let Vip { name, address, port, .. } = self;
        let _ = write!(yaml, "  - name: {name}\n    address: {address}\n    port: {port}\n    protocol: tcp\n");
        if let Some(mode) = &self.forwarding {
            let _ = writeln!(yaml, "    forwarding: {mode}");
        }
        if let Some(scheduler) = &self.scheduler {
            let _ = writeln!(yaml, "    scheduler: {scheduler}");
        }
        match &self.tcp_probe_target {
            Some(target) => {
                let _ = write!(yaml, "    health_check:\n      type: tcp\n      target: {target}\n");
            }
            None => yaml.push_str("    health_check:\n      type: http\n      path: /health\n"),
        }
        yaml.push_str("      interval: 200ms\n      fast_interval: 100ms\n      timeout: 150ms\n      rise: 2\n      fall: 2\n    backends:\n");
        for (endpoint, weight) in &self.backends {
            let (ip, port) = endpoint.rsplit_once(':').unwrap_or_else(|| panic!("backend {endpoint:?} is not ADDRESS:PORT"));
            let _ = write!(yaml, "      - address: {ip}\n        port: {port}\n");
            if let Some(w) = weight {
                let _ = writeln!(yaml, "        weight: {w}");
            }
        }
    }
}
