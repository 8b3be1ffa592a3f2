//! What changed between two configurations, for `lb reload`.

use super::model::Config;

/// The difference between a running and a new configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Global settings that differ.
    pub global_changed: Vec<String>,
    /// VIPs only in the new configuration.
    pub vips_added: Vec<String>,
    /// VIPs only in the running one.
    pub vips_removed: Vec<String>,
    /// VIPs in both whose settings or backends differ.
    pub vips_changed: Vec<String>,
}

/// Global settings fixed when the program is loaded and attached.
const NEEDS_RESTART: [&str; 12] = [
    "flow_sync", "interfaces", "instance", "announce_table", "vip_addresses", "xdp_mode", "hash_seed", "ring_size", "vip_capacity", "backend_capacity", "conn_capacity", "admin_socket",
];

impl ConfigDiff {
    /// Nothing differs.
    pub fn is_empty(&self) -> bool {
        self.global_changed.is_empty() && self.vips_added.is_empty() && self.vips_removed.is_empty() && self.vips_changed.is_empty()
    }

    /// Whether a changed global setting can only take effect when the agent restarts.
    pub fn needs_program_reload(&self) -> bool {
        self.global_changed.iter().any(|g| NEEDS_RESTART.contains(&g.as_str()))
    }
}

/// Compares `old` and `new`; VIPs are matched by name.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let (a, b) = (&old.global, &new.global);
    let mut d = ConfigDiff::default();
    let fields: [(&str, bool); 15] = [
        ("flow_sync", a.flow_sync != b.flow_sync),
        ("vip_addresses", a.vip_addresses != b.vip_addresses),
        ("announce_table", a.announce_table != b.announce_table),
        ("interfaces", a.interfaces != b.interfaces),
        ("instance", a.instance != b.instance),
        ("xdp_mode", a.xdp_mode != b.xdp_mode),
        ("forwarding", a.forwarding != b.forwarding),
        ("hash_seed", a.hash_seed != b.hash_seed),
        ("ring_size", a.ring_size != b.ring_size),
        ("vip_capacity", a.vip_capacity != b.vip_capacity),
        ("backend_capacity", a.backend_capacity != b.backend_capacity),
        ("conn_capacity", a.conn_capacity != b.conn_capacity),
        ("admin_socket", a.admin_socket != b.admin_socket),
        ("metrics_address", a.metrics_address != b.metrics_address),
        ("log_format", a.log_format != b.log_format),
    ];
    d.global_changed = fields.iter().filter(|(_, changed)| *changed).map(|(n, _)| (*n).to_owned()).collect();
    for v in &new.vips {
        match old.vips.iter().find(|o| o.name == v.name) {
            None => d.vips_added.push(v.name.clone()),
            Some(o) if o != v => d.vips_changed.push(v.name.clone()),
            Some(_) => {}
        }
    }
    d.vips_removed = old.vips.iter().filter(|o| !new.vips.iter().any(|v| v.name == o.name)).map(|o| o.name.clone()).collect();
    d
}
