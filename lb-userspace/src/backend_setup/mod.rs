//! `lb backend-setup`: prepares a Linux backend for direct server return. It adds each VIP as
//! a /32 or /128 on `lo` (so the backend's sockets accept it and answer from it) and sets the
//! kernel settings the mode needs ([`plan::sysctls_for`]), through rtnetlink and `/proc/sys`.
//! Each change is printed, recorded with the value it replaced in the state file
//! ([`state`]) before it is made, and put back by `--undo`; a second run changes nothing.
//!
//! For `tunnel` and `gue` it also attaches the backend's decapsulation program
//! ([`crate::decap`]) to the interface, with the interface's own addresses as the tunnel
//! endpoints and the VIPs as the inner destinations it may deliver; `--undo` detaches it.

pub mod plan;
pub mod state;

use std::{
    collections::BTreeSet,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::{
    address::AddressAttribute,
    link::LinkAttribute,
    route::{RouteAttribute, RouteType},
};

use crate::host::{HostError, Item, Rtnl};
use plan::{Change, Current, Mode, Plan, Setting, Wanted};
use state::State;

/// Where the kernel's settings are.
const PROC_SYS: &str = "/proc/sys";

/// What `lb backend-setup` is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set the host up for `mode` and `vips`, on `interface` (the default route's if `None`).
    Setup {
        /// The mode.
        mode: Mode,
        /// The VIPs.
        vips: BTreeSet<IpAddr>,
        /// The interface the load balancer's packets arrive on.
        interface: Option<String>,
        /// Print the changes without making them.
        dry_run: bool,
    },
    /// Put back what the state file records.
    Undo {
        /// Print the changes without making them.
        dry_run: bool,
    },
    /// Show what the state file records and whether it is still in place.
    Status,
}

/// Carries out `action` with the state file `state_file`, printing what it does.
pub fn run(action: &Action, state_file: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        let netlink = crate::netlink::Netlink::open().context("opening a netlink socket")?;
        let host = Host { rtnl: Rtnl::new(netlink.handle()), handle: netlink.handle(), proc_sys: PathBuf::from(PROC_SYS) };
        match action {
            Action::Setup { mode, vips, interface, dry_run } => {
                setup(&host, state_file, *mode, vips, interface.as_deref(), *dry_run).await
            }
            Action::Undo { dry_run } => undo(&host, state_file, *dry_run).await,
            Action::Status => status(&host, state_file).await,
        }
    })
}

/// Attaches the decapsulation program for `mode` (none for `direct`) to `interface`, for
/// `vips` and the interface's own addresses. A program attached by an earlier run is replaced
/// atomically (every frame meets the old or the new one), with the VIPs of this run.
async fn attach_decapsulation(host: &Host, mode: Mode, interface: &str, vips: &BTreeSet<IpAddr>, dry_run: bool) -> anyhow::Result<()> {
    if mode == Mode::Direct {
        println!("decapsulation: none needed (direct mode sends plain frames)");
        return Ok(());
    }
    let endpoints = host.addresses(interface).await?;
    if endpoints.is_empty() {
        bail!("{interface} has no address: the load balancer's tunnel packets are addressed to one of the backend's addresses on it");
    }
    let shown: Vec<String> = endpoints.iter().map(IpAddr::to_string).collect();
    let port = lb_common::encap::DEFAULT_GUE_PORT;
    let what = format!("the decapsulation program on {interface} (tunnel endpoints {}, GUE port {port})", shown.join(", "));
    if dry_run {
        println!("  would attach {what}");
        return Ok(());
    }
    let vips: Vec<IpAddr> = vips.iter().copied().collect();
    let attached = crate::decap::attach(interface, &endpoints, &vips, port).with_context(|| format!("attaching {what}"))?;
    println!("  attached {what}: {attached:?}");
    Ok(())
}

fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("lb backend-setup {what} changes addresses and kernel settings: run it as root (or add --dry-run to see the changes)");
    }
    Ok(())
}

async fn setup(host: &Host, state_file: &Path, mode: Mode, vips: &BTreeSet<IpAddr>, interface: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    if !dry_run {
        require_root("")?;
    }
    let interface = match interface {
        Some(name) => {
            host.rtnl.ifindex(name).await.map_err(|e| match e {
                HostError::NoInterface(_) => anyhow::anyhow!("there is no interface {name:?} on this host; give the interface the load balancer's packets arrive on"),
                e => anyhow::anyhow!("looking up interface {name:?}: {e}"),
            })?;
            name.to_owned()
        }
        None => host.default_interface().await?,
    };
    if let Some(v6) = vips.iter().find(|v| v.is_ipv6()) {
        host.check_ipv6(*v6)?;
    }
    let recorded = State::load(state_file)?;
    let wanted = Wanted { mode, interface: interface.clone(), vips: vips.clone() };
    let keys: Vec<Setting> = plan::sysctls_for(&wanted).into_iter().map(|w| w.key).collect();
    let current = host.current(&keys).await?;
    let plan = plan::setup_plan(&wanted, &current, recorded.as_ref())?;
    let list: Vec<String> = vips.iter().map(IpAddr::to_string).collect();
    println!("backend set-up for {mode} mode on {interface}, VIPs {}{}", list.join(", "), if dry_run { " (dry run: nothing is changed)" } else { "" });
    print_plan(&plan, dry_run, "this host is set up already");
    let mut state = recorded.unwrap_or_else(|| State::new(mode, &interface));
    if !dry_run && !plan.changes.is_empty() {
        host.apply(&plan.changes, &mut state, state_file, false).await?;
    }
    // Attached (again: it replaces itself atomically) on every run, so that a second run
    // also repairs a detached program; recorded before it is attached, as every change.
    if mode != Mode::Direct && !dry_run {
        state.decapsulation = true;
        state.save(state_file)?;
    }
    attach_decapsulation(host, mode, &interface, vips, dry_run).await?;
    if !dry_run && (!plan.changes.is_empty() || state.decapsulation) {
        println!("recorded in {} (lb backend-setup --undo puts it back)", state_file.display());
    }
    let advice = plan::mtu_advice(mode, host.mtu(&interface).await?);
    if let Some(first) = advice.first() {
        let link_mtu = first.path_mtu + first.overhead;
        println!("MTU: {interface} has MTU {link_mtu}; packets from the load balancer carry outer headers, so clients' packets must be smaller:");
        for a in &advice {
            println!(
                "  {} ({} bytes): path MTU {}, clamp TCP MSS to {} (IPv4 clients) / {} (IPv6 clients)",
                a.outer, a.overhead, a.path_mtu, a.mss_v4, a.mss_v6
            );
        }
    }
    Ok(())
}

async fn undo(host: &Host, state_file: &Path, dry_run: bool) -> anyhow::Result<()> {
    if !dry_run {
        require_root("--undo")?;
    }
    let Some(mut state) = State::load(state_file)? else {
        println!("nothing to undo: no backend set-up is recorded in {}", state_file.display());
        return Ok(());
    };
    let keys: Vec<Setting> = state.sysctls.iter().map(|s| s.key.clone()).collect();
    let current = host.current(&keys).await?;
    let plan = plan::undo_plan(&state, &current);
    println!("undoing the {} set-up on {}{}", state.mode, state.interface, if dry_run { " (dry run: nothing is changed)" } else { "" });
    print_plan(&plan, dry_run, "nothing to put back");
    if dry_run {
        if state.decapsulation {
            println!("  would detach the decapsulation program on {}", state.interface);
        }
        return Ok(());
    }
    if state.decapsulation {
        let detached = crate::decap::detach(&state.interface).with_context(|| format!("detaching the decapsulation program from {}", state.interface))?;
        println!("  {} the decapsulation program on {}", if detached { "detached" } else { "found no" }, state.interface);
    }
    host.apply(&plan.changes, &mut state, state_file, true).await?;
    std::fs::remove_file(state_file).with_context(|| format!("removing {}", state_file.display()))?;
    println!("removed {}", state_file.display());
    Ok(())
}

async fn status(host: &Host, state_file: &Path) -> anyhow::Result<()> {
    let Some(state) = State::load(state_file)? else {
        println!("not set up: no backend set-up is recorded in {}", state_file.display());
        return Ok(());
    };
    let keys: Vec<Setting> = state.sysctls.iter().map(|s| s.key.clone()).collect();
    let current = host.current(&keys).await?;
    println!("set up for {} mode on {} (recorded in {})", state.mode, state.interface, state_file.display());
    for a in &state.addresses {
        let now = if current.lo_addresses.contains(a) { "present" } else { "MISSING" };
        println!("  address {a}/{} on lo: added by lb, {now}", plan::host_prefix(*a));
    }
    for s in &state.sysctls {
        let now = current.sysctls.get(&s.key.path).map_or("absent".to_owned(), i64::to_string);
        println!("  {}: set to {} (was {}), now {now}", s.key.name, s.set, s.previous);
    }
    if state.decapsulation {
        match crate::decap::status(&state.interface)? {
            Some(counters) => {
                let counts: Vec<String> =
                    lb_common::encap::DecapReason::ALL.iter().map(|r| format!("{} {}", r.name(), counters.get(*r))).collect();
                println!("  decapsulation on {}: attached by lb; {}", state.interface, counts.join(", "));
            }
            None => println!("  decapsulation on {}: attached by lb, MISSING", state.interface),
        }
    }
    Ok(())
}

fn print_plan(plan: &Plan, dry_run: bool, nothing: &str) {
    for line in &plan.unchanged {
        println!("  unchanged: {line}");
    }
    if dry_run {
        plan.changes.iter().for_each(|change| println!("  would {change}"));
    }
    if plan.changes.is_empty() {
        println!("nothing to change: {nothing}");
    }
}

/// The host, through rtnetlink and `proc_sys`.
struct Host {
    rtnl: Rtnl,
    handle: rtnetlink::Handle,
    proc_sys: PathBuf,
}

impl Host {
    /// The interface of the default route (IPv4 first, then IPv6).
    async fn default_interface(&self) -> anyhow::Result<String> {
        let queries = [
            rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ];
        for query in queries {
            let routes: Vec<_> = self.handle.route().get(query).execute().try_collect().await.context("listing routes")?;
            let oif = routes
                .iter()
                .filter(|r| r.header.destination_prefix_length == 0 && r.header.kind == RouteType::Unicast)
                .find_map(|r| r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None }));
            if let Some(index) = oif {
                let link = self.handle.link().get().match_index(index).execute().try_next().await.context("reading an interface")?;
                if let Some(name) = link.and_then(|l| l.attributes.into_iter().find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n) } else { None })) {
                    return Ok(name);
                }
            }
        }
        bail!("this host has no default route to find the interface by: give --interface (the interface the load balancer's packets arrive on)")
    }

    /// Refuses an IPv6 VIP on a host whose IPv6 is off.
    fn check_ipv6(&self, vip: IpAddr) -> anyhow::Result<()> {
        for scope in ["all", "lo"] {
            let path = format!("net/ipv6/conf/{scope}/disable_ipv6");
            match self.read_sysctl(&path)? {
                None => bail!("VIP {vip} is IPv6, but IPv6 is disabled on this host (there is no /proc/sys/net/ipv6: the kernel was started with ipv6.disable=1)"),
                Some(1) => bail!("VIP {vip} is IPv6, but IPv6 is disabled on this host (net.ipv6.conf.{scope}.disable_ipv6 is 1; `sysctl -w net.ipv6.conf.{scope}.disable_ipv6=0` turns it on)"),
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn read_sysctl(&self, path: &str) -> anyhow::Result<Option<i64>> {
        let file = self.proc_sys.join(path);
        match std::fs::read_to_string(&file) {
            Ok(text) => text.trim().parse().map(Some).with_context(|| format!("{}: {:?} is not a number", file.display(), text.trim())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }

    fn write_sysctl(&self, key: &Setting, value: i64) -> anyhow::Result<()> {
        let file = self.proc_sys.join(&key.path);
        std::fs::write(&file, format!("{value}\n")).with_context(|| format!("setting {} to {value} (writing {})", key.name, file.display()))
    }

    /// The addresses on `interface`.
    async fn addresses(&self, interface: &str) -> anyhow::Result<Vec<IpAddr>> {
        let index = self.rtnl.ifindex(interface).await.with_context(|| format!("looking up {interface}"))?;
        let messages: Vec<_> =
            self.handle.address().get().set_link_index_filter(index).execute().try_collect().await.with_context(|| format!("listing the addresses on {interface}"))?;
        let mut addresses: Vec<IpAddr> = messages
            .iter()
            .filter(|m| m.header.index == index)
            .flat_map(|m| m.attributes.iter())
            .filter_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
            .collect();
        addresses.sort();
        addresses.dedup();
        Ok(addresses)
    }

    /// The addresses on `lo` and the values of `keys`.
    async fn current(&self, keys: &[Setting]) -> anyhow::Result<Current> {
        let lo = self.rtnl.ifindex("lo").await.context("looking up lo")?;
        let messages: Vec<_> = self.handle.address().get().set_link_index_filter(lo).execute().try_collect().await.context("listing the addresses on lo")?;
        let lo_addresses = messages
            .iter()
            .filter(|m| m.header.index == lo)
            .flat_map(|m| m.attributes.iter())
            .filter_map(|a| match a {
                AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            })
            .collect();
        let mut sysctls = std::collections::BTreeMap::new();
        for key in keys {
            if let Some(v) = self.read_sysctl(&key.path)? {
                sysctls.insert(key.path.clone(), v);
            }
        }
        Ok(Current { lo_addresses, sysctls })
    }

    /// The MTU of `interface`.
    async fn mtu(&self, interface: &str) -> anyhow::Result<u32> {
        let link = self.handle.link().get().match_name(interface.to_owned()).execute().try_next().await.with_context(|| format!("reading {interface}"))?;
        link.and_then(|l| l.attributes.into_iter().find_map(|a| if let LinkAttribute::Mtu(m) = a { Some(m) } else { None }))
            .with_context(|| format!("{interface} reports no MTU"))
    }

    /// Makes `changes` in order and prints each once made. A set-up (`undo` false) records each
    /// in `state` (saved to `state_file`) before it is made; an undo drops each from `state`
    /// once made. Stops at the first failure, with what is still in place still recorded.
    async fn apply(&self, changes: &[Change], state: &mut State, state_file: &Path, undo: bool) -> anyhow::Result<()> {
        for change in changes {
            match change {
                Change::AddAddress(address) => {
                    state.addresses.insert(*address);
                    state.save(state_file)?;
                    let item = Item::Address { interface: "lo".into(), address: *address };
                    match self.rtnl.add(&item).await {
                        Ok(()) => println!("  {change}"),
                        Err(e) => {
                            state.addresses.remove(address);
                            state.save(state_file)?;
                            match e {
                                HostError::Exists => println!("  unchanged: {address} appeared on lo meanwhile; not lb's, left alone"),
                                e => bail!("{change}: {e}"),
                            }
                        }
                    }
                }
                Change::RemoveAddress(address) => {
                    let item = Item::Address { interface: "lo".into(), address: *address };
                    self.rtnl.remove(&item).await.with_context(|| change.to_string())?;
                    state.addresses.remove(address);
                    state.save(state_file)?;
                    println!("  {change}");
                }
                Change::SetSysctl { key, to, .. } if undo => {
                    self.write_sysctl(key, *to)?;
                    state.sysctls.retain(|s| s.key != *key);
                    state.save(state_file)?;
                    println!("  {change}");
                }
                Change::SetSysctl { key, from, to } => {
                    state.record_sysctl(key, *from, *to);
                    state.save(state_file)?;
                    self.write_sysctl(key, *to)?;
                    println!("  {change}");
                }
            }
        }
        Ok(())
    }
}
