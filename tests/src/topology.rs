//! The lab's topology, shared by the end-to-end tests and `cargo xtask lab`: a client
//! namespace, a load balancer namespace and one namespace per backend, joined by veth pairs.
//!
//! ```text
//!  client ns            load balancer ns                      backend ns (k = 1..n)
//!  c0 10.0.1.2  ──────  lbc 10.0.1.1        lbb<k> 10.0.1<k>.1 ──── eth0 10.0.1<k>.2
//!     fd00:1::2            fd00:1::1               fd00:1<k>::1          fd00:1<k>::2
//! ```
//! The client routes everything through the load balancer, and so does every backend (NAT
//! mode: the load balancer is their gateway). Per `shared/lab-notes.md`, the veth peers of the
//! interfaces the XDP program sends from get GRO (so redirected frames are received) and the
//! senders get checksum offload off (so TCP survives redirection). Everything created is
//! removed when the [`Lab`] is dropped, also on panic.
//!
//! [`Lab::create_with_router`] puts a router namespace between the client and the load
//! balancer (for path MTU discovery tests): the client gets its own subnet behind the router,
//! and the router's client-facing interface can have a smaller MTU than the client's.
//!
//! ```text
//!  client ns              router ns                             load balancer ns
//!  c0 10.0.2.2  ──────  rc 10.0.2.1 (MTU m)   rl 10.0.1.2  ──────  lbc 10.0.1.1  ...
//!     fd00:2::2            fd00:2::1              fd00:1::2            fd00:1::1
//! ```
//! The router forwards both families and routes everything else through the load balancer,
//! which routes the client's subnet (10.0.2.0/24, fd00:2::/64) through the router.
//!
//! [`Lab::create_dsr`] is the lab for direct server return: as with a router, and every
//! backend also linked to the router (`rb<k>` – `eth1`), its default route through it, so that
//! it answers clients from the VIP directly, never through the load balancer. The load balancer
//! still reaches each backend over its own link (`lbb<k>`: the L2 segment of `direct` mode, the
//! tunnels' path), whose backend end is named `dxb<pid>x<n>b<k>` (unique on the host: the
//! decapsulation program `lb backend-setup` attaches there is pinned by interface name).
//!
//! ```text
//!  client ns              router ns                                   load balancer ns
//!  c0 10.0.2.2  ──────  rc 10.0.2.1          rl 10.0.1.2  ──────────  lbc 10.0.1.1
//!                        rb<k> 10.0.2<k>.1                            lbb<k> 10.0.1<k>.1
//!                            fd00:2<k>::1                                    fd00:1<k>::1
//!                              │                                               │
//!                        eth1 10.0.2<k>.2 (default route)  backend ns  dxb… 10.0.1<k>.2
//!                             fd00:2<k>::2                                   fd00:1<k>::2
//! ```
//! [`Lab::backend_setup`] runs `lb backend-setup` on a backend (undone when the lab is dropped).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The load balancer's client-side interface.
pub const LB_CLIENT_IFACE: &str = "lbc";

/// With a router ([`Lab::create_with_router`]): the router's client-facing interface.
pub const ROUTER_CLIENT_IFACE: &str = "rc";
/// With a router: the router's interface towards the load balancer.
pub const ROUTER_LB_IFACE: &str = "rl";
/// With a router: the client's IPv4 address (in 10.0.2.0/24, behind the router).
pub const ROUTED_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// With a router: the client's IPv6 address (in fd00:2::/64, behind the router).
pub const ROUTED_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 2);

/// One backend host.
#[derive(Debug)]
pub struct BackendHost {
    /// Its name (`b1`, `b2`, ...), which its server answers with.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its IPv4 address.
    pub v4: Ipv4Addr,
    /// Its IPv6 address.
    pub v6: Ipv6Addr,
    /// The load balancer's interface towards it.
    pub lb_iface: String,
    /// Its interface towards the load balancer (`eth0`; unique on the host in a DSR lab).
    pub iface: String,
    server: Option<Child>,
}

/// A running lab topology.
#[derive(Debug)]
pub struct Lab {
    /// The client's namespace.
    pub client_ns: String,
    /// The router's namespace, between the client and the load balancer (only in a lab made
    /// by [`Lab::create_with_router`]).
    pub router_ns: Option<String>,
    /// The load balancer's namespace.
    pub lb_ns: String,
    /// The backends.
    pub backends: Vec<BackendHost>,
    /// The TCP port backend servers listen on ([`Lab::start_backend`]): 8080, or the VIP's port
    /// in a lab made by [`Lab::create_dsr`].
    pub backend_port: u16,
    /// Backends set up by [`Lab::backend_setup`]: namespace and state file (undone on drop).
    setups: Vec<(String, PathBuf)>,
    namespaces: Vec<String>,
    processes: Vec<Child>,
    backend_bin: PathBuf,
}

static LABS: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// `ip netns exec NS ARGS...` as a command.
pub fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

impl Lab {
    /// Creates the topology with `backends` backend hosts. `backend_bin` is the
    /// `lb-test-backend` server binary.
    pub fn create(backends: usize, backend_bin: &Path) -> anyhow::Result<Lab> {
        Lab::build(backends, backend_bin, None, None)
    }

    /// Creates the direct server return topology (see the module documentation): a router
    /// (MTU 1500 towards the client) and every backend linked to it, answering through it.
    /// Backend servers listen on `vip_port` ([`Lab::start_backend`]); set each backend up with
    /// [`Lab::backend_setup`].
    pub fn create_dsr(backends: usize, backend_bin: &Path, vip_port: u16) -> anyhow::Result<Lab> {
        Lab::build(backends, backend_bin, Some(1500), Some(vip_port))
    }

    /// Creates the topology with a router namespace between the client and the load balancer
    /// (see the module documentation). The router's client-facing interface (`rc`) gets MTU
    /// `router_client_mtu`; the client's end (`c0`) keeps 1500, so the client announces the
    /// larger MSS and packets towards it must shrink at the router (path MTU discovery).
    pub fn create_with_router(backends: usize, backend_bin: &Path, router_client_mtu: u32) -> anyhow::Result<Lab> {
        Lab::build(backends, backend_bin, Some(router_client_mtu), None)
    }

    /// Creates the topology of [`Lab::create`] with both ends of every link at MTU `mtu` (jumbo
    /// frames: the client's, the load balancer's and the backends' interfaces).
    pub fn create_with_mtu(backends: usize, backend_bin: &Path, mtu: u32) -> anyhow::Result<Lab> {
        let lab = Lab::build(backends, backend_bin, None, None)?;
        let mtu = mtu.to_string();
        let mut ends = vec![(lab.lb_ns.clone(), LB_CLIENT_IFACE.to_owned()), (lab.client_ns.clone(), "c0".to_owned())];
        for b in &lab.backends {
            ends.push((lab.lb_ns.clone(), b.lb_iface.clone()));
            ends.push((b.ns.clone(), b.iface.clone()));
        }
        for (ns, iface) in ends {
            lab.ns_run(&ns, &["ip", "link", "set", &iface, "mtu", &mtu])?;
        }
        Ok(lab)
    }

    /// With `dsr_port`, the DSR topology (which needs `router_client_mtu`).
    fn build(backends: usize, backend_bin: &Path, router_client_mtu: Option<u32>, dsr_port: Option<u16>) -> anyhow::Result<Lab> {
        crate::orphans::sweep_orphans_once();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let mut lab = Lab {
            client_ns: format!("lbt-{id}-c"),
            router_ns: router_client_mtu.map(|_| format!("lbt-{id}-r")),
            lb_ns: format!("lbt-{id}-lb"),
            backends: Vec::new(),
            backend_port: dsr_port.unwrap_or(8080),
            setups: Vec::new(),
            namespaces: Vec::new(),
            processes: Vec::new(),
            backend_bin: backend_bin.to_owned(),
        };
        for ns in [lab.client_ns.clone(), lab.lb_ns.clone()] {
            lab.add_ns(&ns)?;
        }
        let lb = lab.lb_ns.clone();
        lab.ns_run(&lb, &["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])?;
        match (lab.router_ns.clone(), router_client_mtu) {
            (Some(router), Some(mtu)) => lab.add_router(&router, mtu)?,
            _ => {
                lab.link(LB_CLIENT_IFACE, &lab.client_ns.clone(), "c0", "10.0.1.1/24", "fd00:1::1/64", "10.0.1.2/24", "fd00:1::2/64")?;
                let client = lab.client_ns.clone();
                lab.ns_run(&client, &["ip", "route", "add", "default", "via", "10.0.1.1"])?;
                lab.ns_run(&client, &["ip", "-6", "route", "add", "default", "via", "fd00:1::1"])?;
            }
        }
        for k in 1..=backends {
            let name = format!("b{k}");
            let ns = format!("lbt-{id}-{name}");
            lab.add_ns(&ns)?;
            let net = 10 + k;
            let lb_iface = format!("lbb{k}");
            let iface = if dsr_port.is_some() { format!("dxb{}x{n}b{k}", std::process::id()) } else { "eth0".to_owned() };
            lab.link(
                &lb_iface,
                &ns,
                &iface,
                &format!("10.0.{net}.1/24"),
                &format!("fd00:{net}::1/64"),
                &format!("10.0.{net}.2/24"),
                &format!("fd00:{net}::2/64"),
            )?;
            match (&lab.router_ns, dsr_port) {
                (Some(router), Some(_)) => lab.link_backend_to_router(&router.clone(), &ns, k)?,
                _ => {
                    lab.ns_run(&ns, &["ip", "route", "add", "default", "via", &format!("10.0.{net}.1")])?;
                    lab.ns_run(&ns, &["ip", "-6", "route", "add", "default", "via", &format!("fd00:{net}::1")])?;
                }
            }
            lab.backends.push(BackendHost {
                name,
                ns,
                v4: Ipv4Addr::new(10, 0, net as u8, 2),
                v6: format!("fd00:{net}::2").parse()?,
                lb_iface,
                iface,
                server: None,
            });
        }
        Ok(lab)
    }

    /// The router between the client and the load balancer: `rl` faces the load balancer
    /// (where `c0` would be without a router), `rc` faces the client with MTU `mtu`.
    fn add_router(&mut self, router: &str, mtu: u32) -> anyhow::Result<()> {
        self.add_ns(router)?;
        self.ns_run(router, &["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])?;
        // The load balancer's side, as the client's link is without a router: GRO on `rl`
        // (the XDP program redirects frames to it), checksum offload off on both ends.
        self.link(LB_CLIENT_IFACE, router, ROUTER_LB_IFACE, "10.0.1.1/24", "fd00:1::1/64", "10.0.1.2/24", "fd00:1::2/64")?;
        let client = self.client_ns.clone();
        self.ns_run(router, &[
            "ip", "link", "add", ROUTER_CLIENT_IFACE, "numtxqueues", "2", "numrxqueues", "2", "type", "veth", "peer", "name", "c0",
            "netns", &client, "numtxqueues", "2", "numrxqueues", "2",
        ])?;
        self.ns_run(router, &["ip", "link", "set", ROUTER_CLIENT_IFACE, "mtu", &mtu.to_string()])?;
        self.ns_run(router, &["ip", "addr", "add", "10.0.2.1/24", "dev", ROUTER_CLIENT_IFACE])?;
        self.ns_run(router, &["ip", "addr", "add", "fd00:2::1/64", "dev", ROUTER_CLIENT_IFACE, "nodad"])?;
        self.ns_run(router, &["ip", "link", "set", ROUTER_CLIENT_IFACE, "up"])?;
        self.ns_run(router, &["ethtool", "-K", ROUTER_CLIENT_IFACE, "tx", "off"])?;
        self.ns_run(&client, &["ip", "addr", "add", &format!("{ROUTED_CLIENT_V4}/24"), "dev", "c0"])?;
        self.ns_run(&client, &["ip", "addr", "add", &format!("{ROUTED_CLIENT_V6}/64"), "dev", "c0", "nodad"])?;
        self.ns_run(&client, &["ip", "link", "set", "c0", "up"])?;
        // The client's packets are forwarded by the router and then redirected by the XDP
        // program: they must carry full checksums from the start.
        self.ns_run(&client, &["ethtool", "-K", "c0", "gro", "on", "tx", "off"])?;
        self.ns_run(&client, &["ip", "route", "add", "default", "via", "10.0.2.1"])?;
        self.ns_run(&client, &["ip", "-6", "route", "add", "default", "via", "fd00:2::1"])?;
        self.ns_run(router, &["ip", "route", "add", "default", "via", "10.0.1.1"])?;
        self.ns_run(router, &["ip", "-6", "route", "add", "default", "via", "fd00:1::1"])?;
        let lb = self.lb_ns.clone();
        self.ns_run(&lb, &["ip", "route", "add", "10.0.2.0/24", "via", "10.0.1.2"])?;
        self.ns_run(&lb, &["ip", "-6", "route", "add", "fd00:2::/64", "via", "fd00:1::2"])?;
        // The data path sends replies by the FIB, which needs the router's neighbour entry:
        // resolve it now rather than wait for the router to announce itself.
        self.ns_run(&lb, &["ping", "-c", "1", "-W", "2", "10.0.1.2"])?;
        self.ns_run(&lb, &["ping", "-c", "1", "-W", "2", "fd00:1::2"])?;
        Ok(())
    }

    /// DSR: backend `k`'s second link, `rb<k>` (router) – `eth1` (backend) on 10.0.2<k>.0/24
    /// and fd00:2<k>::/64, and its default routes through the router. Reverse path filters off
    /// on the router and the backend: replies from the VIP enter the router on `rb<k>` though
    /// the router routes the VIP to the load balancer.
    fn link_backend_to_router(&self, router: &str, backend: &str, k: usize) -> anyhow::Result<()> {
        let net = 20 + k;
        let rb = format!("rb{k}");
        self.ns_run(router, &[
            "ip", "link", "add", &rb, "numtxqueues", "2", "numrxqueues", "2", "type", "veth", "peer", "name", "eth1", "netns", backend,
            "numtxqueues", "2", "numrxqueues", "2",
        ])?;
        self.ns_run(router, &["ip", "addr", "add", &format!("10.0.{net}.1/24"), "dev", &rb])?;
        self.ns_run(router, &["ip", "addr", "add", &format!("fd00:{net}::1/64"), "dev", &rb, "nodad"])?;
        self.ns_run(router, &["ip", "link", "set", &rb, "up"])?;
        self.ns_run(backend, &["ip", "addr", "add", &format!("10.0.{net}.2/24"), "dev", "eth1"])?;
        self.ns_run(backend, &["ip", "addr", "add", &format!("fd00:{net}::2/64"), "dev", "eth1", "nodad"])?;
        self.ns_run(backend, &["ip", "link", "set", "eth1", "up"])?;
        self.ns_run(backend, &["ip", "route", "add", "default", "via", &format!("10.0.{net}.1")])?;
        self.ns_run(backend, &["ip", "-6", "route", "add", "default", "via", &format!("fd00:{net}::1")])?;
        for ns in [router, backend] {
            self.ns_run(ns, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"])?;
        }
        self.ns_run(router, &["sysctl", "-qw", &format!("net.ipv4.conf.{rb}.rp_filter=0")])?;
        Ok(())
    }

    /// Runs `lb backend-setup --mode MODE --vip VIP... --interface IF` on backend `k` (IF: its
    /// interface towards the load balancer), with a state file of its own; the set-up is undone
    /// when the lab is dropped. Returns what it printed.
    pub fn backend_setup(&mut self, k: usize, mode: &str, vips: &[&str]) -> anyhow::Result<String> {
        let b = &self.backends[k];
        let state = std::env::temp_dir().join(format!("{}-backend-setup.json", b.ns));
        let (lb, state_arg) = (crate::agent::lb_binary().display().to_string(), state.display().to_string());
        let mut args = vec![lb.as_str(), "backend-setup", "--mode", mode, "--interface", &b.iface, "--state", &state_arg];
        for vip in vips {
            args.extend_from_slice(&["--vip", vip]);
        }
        let ns = b.ns.clone();
        if !self.setups.iter().any(|(n, _)| *n == ns) {
            self.setups.push((ns.clone(), state));
        }
        let out = run(&mut crate::agent::in_netns(&ns, &args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Undoes [`Lab::backend_setup`] on backend `k` (`lb backend-setup --undo`).
    pub fn backend_undo(&mut self, k: usize) -> anyhow::Result<String> {
        let ns = self.backends[k].ns.clone();
        let Some(i) = self.setups.iter().position(|(n, _)| *n == ns) else {
            bail!("backend {k} was not set up");
        };
        let (_, state) = self.setups.remove(i);
        undo_setup(&ns, &state)
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        run(Command::new("ip").args(["netns", "add", ns]))?;
        self.namespaces.push(ns.to_owned());
        self.ns_run(ns, &["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Runs a command in a namespace and fails unless it succeeds.
    pub fn ns_run(&self, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
        run(&mut in_ns(ns, args))
    }

    /// A veth pair from the load balancer namespace (`lb_if`) to `peer_if` in `peer_ns`.
    #[expect(clippy::too_many_arguments, reason = "one address per end and family")]
    fn link(&self, lb_if: &str, peer_ns: &str, peer_if: &str, lb4: &str, lb6: &str, peer4: &str, peer6: &str) -> anyhow::Result<()> {
        let lb = &self.lb_ns;
        self.ns_run(lb, &[
            "ip", "link", "add", lb_if, "numtxqueues", "2", "numrxqueues", "2", "type", "veth", "peer", "name", peer_if,
            "netns", peer_ns, "numtxqueues", "2", "numrxqueues", "2",
        ])?;
        self.ns_run(lb, &["ip", "addr", "add", lb4, "dev", lb_if])?;
        self.ns_run(lb, &["ip", "addr", "add", lb6, "dev", lb_if, "nodad"])?;
        self.ns_run(lb, &["ip", "link", "set", lb_if, "up"])?;
        self.ns_run(peer_ns, &["ip", "addr", "add", peer4, "dev", peer_if])?;
        self.ns_run(peer_ns, &["ip", "addr", "add", peer6, "dev", peer_if, "nodad"])?;
        self.ns_run(peer_ns, &["ip", "link", "set", peer_if, "up"])?;
        // Redirected frames are only received by a peer with NAPI (GRO); TCP through them
        // needs the senders to fill in their checksums themselves.
        self.ns_run(peer_ns, &["ethtool", "-K", peer_if, "gro", "on", "tx", "off"])?;
        self.ns_run(lb, &["ethtool", "-K", lb_if, "tx", "off"])?;
        Ok(())
    }

    /// The load balancer's interfaces: the client side first.
    pub fn lb_interfaces(&self) -> Vec<String> {
        std::iter::once(LB_CLIENT_IFACE.to_owned())
            .chain(self.backends.iter().map(|b| b.lb_iface.clone()))
            .collect()
    }

    /// Starts backend `k`'s server (HTTP on [`Lab::backend_port`], UDP echo on 5353), stopping
    /// the one it runs already, and waits until it answers locally (at most 5 s).
    pub fn start_backend(&mut self, k: usize) -> anyhow::Result<()> {
        // A server already running there is stopped first, not leaked.
        self.kill_backend(k);
        let b = &self.backends[k];
        let bin = self.backend_bin.to_string_lossy().into_owned();
        let port = self.backend_port;
        let child = in_ns(&b.ns, &[&bin, &b.name, &format!("[::]:{port}"), "[::]:5353"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {bin} in {}", b.ns))?;
        self.backends[k].server = Some(child);
        let b = &self.backends[k];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let ok = in_ns(&b.ns, &["bash", "-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("backend {} did not start listening", b.name)
    }

    /// Starts another server on backend `k`'s host, named `name`, on TCP `port` (a second
    /// pool on the same hosts); it runs until the lab is dropped.
    pub fn start_server(&mut self, k: usize, name: &str, port: u16) -> anyhow::Result<()> {
        let ns = self.backends[k].ns.clone();
        let bin = self.backend_bin.to_string_lossy().into_owned();
        let child = in_ns(&ns, &[&bin, name, &format!("[::]:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {bin} in {ns}"))?;
        self.processes.push(child);
        Ok(())
    }

    /// Kills backend `k`'s server (as a crash would).
    pub fn kill_backend(&mut self, k: usize) {
        if let Some(mut child) = self.backends[k].server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a long-running process in a namespace; it is killed when the lab is dropped.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> anyhow::Result<()> {
        let child = in_ns(ns, args).spawn().with_context(|| format!("starting {args:?} in {ns}"))?;
        self.processes.push(child);
        Ok(())
    }
}

/// Where agents pin their data path (`lb_userspace::dataplane::pins::BPFFS_ROOT`; the xtask
/// that shares this module does not link the agent's crate).
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/lb";
/// Where agents keep their instance's runtime directory (`lb_userspace::instance::RUN_ROOT`).
pub const RUN_ROOT: &str = "/run/lb";

/// Where `lb backend-setup` pins the decapsulation program, per interface
/// (`lb_userspace::decap::DECAP_PIN_ROOT`).
pub const DECAP_PIN_ROOT: &str = "/sys/fs/bpf/lb-decap";

/// `lb backend-setup --undo` in namespace `ns` with state file `state` (which it removes).
fn undo_setup(ns: &str, state: &Path) -> anyhow::Result<String> {
    let (lb, state) = (crate::agent::lb_binary().display().to_string(), state.display().to_string());
    let out = run(&mut crate::agent::in_netns(ns, &[&lb, "backend-setup", "--undo", "--state", &state]))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    /// `n` new connections from the client to `vip`: answers per backend (their bodies name
    /// them), and failures.
    pub fn spread(&self, vip: std::net::SocketAddr, n: usize) -> (std::collections::BTreeMap<String, usize>, usize) {
        in_namespace(&self.client_ns, move || {
            let mut seen = std::collections::BTreeMap::new();
            let mut failed = 0;
            for _ in 0..n {
                match http_get(vip, "/", Duration::from_secs(2)) {
                    Ok((200, body)) => *seen.entry(body).or_insert(0) += 1,
                    _ => failed += 1,
                }
            }
            (seen, failed)
        })
        .expect("client thread")
    }

    /// The bpffs directory of the data path of an agent in this lab (its instance is named
    /// after the load balancer namespace).
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(BPFFS_ROOT).join(&self.lb_ns)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for k in 0..self.backends.len() {
            self.kill_backend(k);
        }
        for child in &mut self.processes {
            // SAFETY: kill(2) on our own child's pid; SIGTERM lets the agent clean up.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.processes {
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // A data path an agent left pinned, and its runtime directory (`Agent` removes its own
        // through `lb teardown`; this covers a failure, or a lab dropped before its agent).
        let _ = std::fs::remove_dir_all(self.pin_dir());
        let _ = std::fs::remove_dir_all(Path::new(RUN_ROOT).join(&self.lb_ns));
        // Backend set-ups, then (should an undo fail) the decapsulation programs' pins.
        for (ns, state) in std::mem::take(&mut self.setups) {
            if let Err(e) = undo_setup(&ns, &state) {
                eprintln!("undoing the backend set-up in {ns}: {e:#}");
            }
        }
        for b in self.backends.iter().filter(|b| b.iface != "eth0") {
            let _ = std::fs::remove_dir_all(Path::new(DECAP_PIN_ROOT).join(&b.iface));
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns` (sockets it opens live there) and returns
/// its result.
pub fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    let handle = thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(anyhow::anyhow!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    });
    handle.join().map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

/// One HTTP/1.1 GET on a new connection: the status code and body, or an error (each step
/// bounded by `timeout`). The client closes first, as browsers do, so the connection's source
/// port stays in TIME_WAIT and the next connection gets a new 5-tuple.
pub fn http_get(addr: std::net::SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n")?;
    read_response(&mut std::io::BufReader::new(s))
}

/// Reads one HTTP/1.1 response framed by Content-Length: status and body (trimmed).
pub fn read_response<R: std::io::BufRead>(reader: &mut R) -> std::io::Result<(u16, String)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("connection closed"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).trim().to_owned()))
}

/// A request path and where its answer goes.
type SessionRequest = (String, std::sync::mpsc::Sender<std::io::Result<(u16, String)>>);

/// A keep-alive HTTP connection opened from inside a namespace, kept by a thread there.
pub struct HttpSession {
    requests: std::sync::mpsc::Sender<SessionRequest>,
    local: std::net::SocketAddr,
}

impl HttpSession {
    /// Connects to `addr` from namespace `ns`.
    pub fn open(ns: &str, addr: std::net::SocketAddr, timeout: Duration) -> anyhow::Result<HttpSession> {
        let (tx, rx) = std::sync::mpsc::channel::<SessionRequest>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = format!("/var/run/netns/{ns}");
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        thread::spawn(move || {
            use std::{io::{BufReader, Write as _}, os::fd::AsRawFd as _};
            // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let _ = ready_tx.send(Err(std::io::Error::last_os_error()));
                return;
            }
            let stream = match std::net::TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = stream.set_read_timeout(Some(timeout));
            let _ = ready_tx.send(stream.local_addr());
            let mut writer = stream.try_clone().expect("clone stream");
            let mut reader = BufReader::new(stream);
            for (path, reply) in rx {
                let result = write!(writer, "GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n").and_then(|()| read_response(&mut reader));
                let _ = reply.send(result);
            }
        });
        let local = ready_rx.recv().context("session thread")??;
        Ok(HttpSession { requests: tx, local })
    }

    /// The client's end of the connection.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }

    /// One request on the connection.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.requests.send((path.to_owned(), tx)).map_err(|_| std::io::Error::other("session closed"))?;
        rx.recv().map_err(|_| std::io::Error::other("session closed"))?
    }
}
