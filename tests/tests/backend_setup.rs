//! `lb backend-setup` on a backend namespace wired to a client namespace by a veth pair:
//! the addresses and settings of each mode, a second run that changes nothing, an undo that
//! keeps the operator's own address and puts back the previous values, the VIP served over TCP
//! to the client, and (direct mode) ARP for the VIP not answered. Needs root.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::Output,
    time::Duration,
};

use lb_tests::{
    agent::{in_netns, lb_binary},
    netns::Netns,
    topology::{in_namespace, in_ns},
};

const VIP4: &str = "10.0.0.10";
const VIP6: &str = "2001:db8::10";
/// An address the operator put on the backend's `lo` before any set-up.
const OPERATOR4: &str = "10.0.0.11";
const CLIENT4: &str = "192.0.2.1";
const BACKEND4: &str = "192.0.2.2";
const CLIENT6: &str = "fd00:b5::1";
const BACKEND6: &str = "fd00:b5::2";

/// A client and a backend namespace joined by `c0` (client) – `b0` (backend), and a private
/// state file; everything is removed on drop.
struct Pair {
    client: Netns,
    backend: Netns,
    dir: PathBuf,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let client = Netns::new(&format!("{tag}c"));
        let backend = Netns::new(&format!("{tag}b"));
        client.exec(&["ip", "link", "add", "c0", "type", "veth", "peer", "name", "b0", "netns", backend.name()]);
        client.exec(&["ip", "addr", "add", &format!("{CLIENT4}/24"), "dev", "c0"]);
        client.exec(&["ip", "addr", "add", &format!("{CLIENT6}/64"), "dev", "c0", "nodad"]);
        backend.exec(&["ip", "addr", "add", &format!("{BACKEND4}/24"), "dev", "b0"]);
        backend.exec(&["ip", "addr", "add", &format!("{BACKEND6}/64"), "dev", "b0", "nodad"]);
        client.exec(&["ip", "link", "set", "c0", "up"]);
        backend.exec(&["ip", "link", "set", "b0", "up"]);
        let dir = std::env::temp_dir().join(format!("lb-backend-setup-{}-{}", backend.name(), std::process::id()));
        std::fs::create_dir_all(&dir).expect("state directory");
        Pair { client, backend, dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("backend-setup.json")
    }

    /// `lb backend-setup ARGS --state FILE` in the backend namespace.
    fn lb(&self, args: &[&str]) -> Output {
        let state = self.state().display().to_string();
        let lb = lb_binary().display().to_string();
        let mut all = vec![lb.as_str(), "backend-setup"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--state", &state]);
        in_netns(self.backend.name(), &all).output().expect("running lb")
    }

    /// As [`Pair::lb`], which must succeed: its stdout.
    fn lb_ok(&self, args: &[&str]) -> String {
        let out = self.lb(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "lb backend-setup {args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    fn sysctl(&self, name: &str) -> i64 {
        let path = format!("/proc/sys/{}", name.replace('.', "/"));
        self.backend.exec(&["cat", &path]).trim().parse().unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn lo(&self) -> String {
        self.backend.exec(&["ip", "addr", "show", "dev", "lo"])
    }

    /// Whether the backend answers the client's ARP or NDP for `address`, asked on the link
    /// itself (the client routes `address` straight to `c0`): one ping of at most 2 s, then the
    /// client's neighbour entry (an answered one holds the backend's MAC).
    fn answers_neighbour_probe(&self, address: &str) -> bool {
        self.client.exec(&["ip", "route", "replace", address, "dev", "c0"]);
        self.client.exec(&["ip", "neigh", "flush", "dev", "c0"]);
        let ping = in_ns(self.client.name(), &["ping", "-c", "1", "-W", "2", address]).output().expect("ping");
        let neigh = self.client.exec(&["ip", "neigh", "show", address, "dev", "c0"]);
        self.client.exec(&["ip", "route", "del", address, "dev", "c0"]);
        let mac = self.backend.mac("b0").iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        let answered = neigh.contains(&format!("lladdr {mac}"));
        assert_eq!(answered, ping.status.success(), "the ping's result and the neighbour entry agree: {neigh:?}");
        answered
    }

    /// A TCP exchange from the client to `vip`:`port`, routed to the backend through its
    /// interface address: the server on the backend, bound to the VIP, sees the client's
    /// address, and the client is answered from the VIP.
    fn serves_over_tcp(&self, vip: &str, port: u16) {
        let vip: IpAddr = vip.parse().unwrap();
        let via = if vip.is_ipv4() { BACKEND4 } else { BACKEND6 };
        self.client.exec(&["ip", "route", "replace", &vip.to_string(), "via", via, "dev", "c0"]);
        let addr = SocketAddr::new(vip, port);
        let listener = in_namespace(self.backend.name(), move || TcpListener::bind(addr)).unwrap().expect("binding the VIP on the backend");
        let server = std::thread::spawn(move || {
            listener.set_nonblocking(false).unwrap();
            let (mut conn, peer) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = [0u8; 4];
            conn.read_exact(&mut request).expect("request");
            conn.write_all(b"pong").expect("reply");
            (peer.ip(), request)
        });
        let client = in_namespace(self.client.name(), move || -> std::io::Result<(SocketAddr, [u8; 4])> {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            conn.write_all(b"ping")?;
            let mut reply = [0u8; 4];
            conn.read_exact(&mut reply)?;
            Ok((conn.peer_addr()?, reply))
        })
        .unwrap();
        let (peer, reply) = match client {
            Ok(answer) => answer,
            Err(e) => {
                // Unblocks the server thread before failing.
                let _ = in_namespace(self.client.name(), move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)));
                panic!("the client could not reach {addr}: {e}");
            }
        };
        let (seen, request) = server.join().expect("server thread");
        assert_eq!((peer, &reply), (addr, b"pong"), "answered from the VIP");
        assert_eq!(request, *b"ping");
        let client_ip: IpAddr = if vip.is_ipv4() { CLIENT4 } else { CLIENT6 }.parse().unwrap();
        assert_eq!(seen, client_ip, "the backend sees the client's own address");
        self.client.exec(&["ip", "route", "del", &vip.to_string()]);
    }
}

#[test]
fn direct_mode_hides_the_vips_from_arp_serves_them_is_idempotent_and_undoes_exactly() {
    let pair = Pair::new("bsd");
    pair.backend.exec(&["ip", "addr", "add", &format!("{OPERATOR4}/32"), "dev", "lo"]);
    pair.backend.sysctl("net.ipv4.conf.all.arp_announce", "1");
    assert!(pair.answers_neighbour_probe(OPERATOR4), "before the set-up the host answers ARP for an address on lo (the probe works)");

    let dry = pair.lb_ok(&["--mode", "direct", "--vip", VIP4, "--vip", VIP6, "--interface", "b0", "--dry-run"]);
    assert!(dry.contains("  would add 10.0.0.10/32 on lo\n") && dry.contains("would set net.ipv4.conf.b0.arp_ignore from 0 to 1"), "{dry}");
    assert!(!pair.lo().contains(VIP4) && !pair.state().exists(), "a dry run changes nothing");

    let first = pair.lb_ok(&["--mode", "direct", "--vip", VIP4, "--vip", VIP6, "--vip", OPERATOR4, "--interface", "b0"]);
    for line in [
        "  unchanged: 10.0.0.11 on lo: already there, not added by lb (undo leaves it)\n",
        "  add 10.0.0.10/32 on lo\n",
        "  add 2001:db8::10/128 on lo\n",
        "  set net.ipv4.conf.all.arp_ignore from 0 to 1\n",
        "  set net.ipv4.conf.b0.arp_ignore from 0 to 1\n",
        "  set net.ipv4.conf.all.arp_announce from 1 to 2\n",
        "  set net.ipv4.conf.b0.arp_announce from 0 to 2\n",
    ] {
        assert!(first.contains(line), "{line:?} in {first}");
    }
    let lo = pair.lo();
    assert!(lo.contains("inet 10.0.0.10/32") && lo.contains("inet6 2001:db8::10/128") && lo.contains("inet 10.0.0.11/32"), "{lo}");
    for (name, value) in [("all.arp_ignore", 1), ("b0.arp_ignore", 1), ("all.arp_announce", 2), ("b0.arp_announce", 2)] {
        assert_eq!(pair.sysctl(&format!("net.ipv4.conf.{name}")), value, "{name}");
    }

    let state = std::fs::read_to_string(pair.state()).unwrap();
    let second = pair.lb_ok(&["--mode", "direct", "--vip", VIP4, "--vip", VIP6, "--vip", OPERATOR4, "--interface", "b0"]);
    assert!(second.contains("nothing to change: this host is set up already"), "{second}");
    assert_eq!(second.matches("  unchanged: ").count(), 7, "{second}");
    assert_eq!(std::fs::read_to_string(pair.state()).unwrap(), state, "a second run records nothing new");
    assert_eq!(pair.lo(), lo, "a second run changes no address");

    assert!(!pair.answers_neighbour_probe(VIP4), "ARP for the VIP is not answered on b0");
    assert!(!pair.answers_neighbour_probe(OPERATOR4), "nor for any other address on lo");
    assert!(!pair.answers_neighbour_probe(VIP6), "NDP for an IPv6 VIP on lo is not answered on b0");
    assert!(pair.answers_neighbour_probe(BACKEND4), "the backend's own address is still answered");
    assert!(pair.answers_neighbour_probe(BACKEND6));
    pair.serves_over_tcp(VIP4, 8080);
    pair.serves_over_tcp(VIP6, 8080);

    let status = pair.lb_ok(&["--status"]);
    assert!(status.contains("set up for direct mode on b0") && status.contains("net.ipv4.conf.all.arp_announce: set to 2 (was 1), now 2"), "{status}");

    let undo = pair.lb_ok(&["--undo"]);
    assert!(undo.contains("  remove 10.0.0.10/32 from lo\n") && undo.contains("  set net.ipv4.conf.all.arp_announce from 2 to 1\n"), "{undo}");
    let lo = pair.lo();
    assert!(!lo.contains(VIP4) && !lo.contains(VIP6), "the set-up's addresses are gone: {lo}");
    assert!(lo.contains("inet 10.0.0.11/32"), "the operator's address stays: {lo}");
    for (name, value) in [("all.arp_ignore", 0), ("b0.arp_ignore", 0), ("all.arp_announce", 1), ("b0.arp_announce", 0)] {
        assert_eq!(pair.sysctl(&format!("net.ipv4.conf.{name}")), value, "{name} is back");
    }
    assert!(!pair.state().exists(), "the state file is removed");
    assert!(pair.lb_ok(&["--undo"]).contains("nothing to undo"));
    assert!(pair.answers_neighbour_probe(OPERATOR4), "after the undo ARP is answered as before");
}

#[test]
fn tunnel_and_gue_loosen_strict_rp_filter_print_the_mtu_advice_and_undo() {
    let pair = Pair::new("bst");
    pair.backend.sysctl("net.ipv4.conf.all.rp_filter", "1");
    pair.backend.sysctl("net.ipv4.conf.b0.rp_filter", "1");
    pair.backend.exec(&["ip", "link", "set", "b0", "mtu", "1400"]);
    pair.backend.exec(&["ip", "route", "add", "default", "via", CLIENT4, "dev", "b0"]);
    for (mode, figures) in [
        ("tunnel", ["(20 bytes): path MTU 1380, clamp TCP MSS to 1340 (IPv4 clients) / 1320", "(40 bytes): path MTU 1360, clamp TCP MSS to 1320 (IPv4 clients) / 1300"]),
        ("gue", ["(28 bytes): path MTU 1372, clamp TCP MSS to 1332 (IPv4 clients) / 1312", "(48 bytes): path MTU 1352, clamp TCP MSS to 1312 (IPv4 clients) / 1292"]),
    ] {
        // gue finds the interface by the default route.
        let interface: &[&str] = if mode == "tunnel" { &["--interface", "b0"] } else { &[] };
        let first = pair.lb_ok(&[&["--mode", mode, "--vip", VIP4, "--vip", VIP6], interface].concat());
        assert!(first.contains(&format!("backend set-up for {mode} mode on b0, VIPs 10.0.0.10, 2001:db8::10\n")), "{first}");
        assert!(first.contains("  set net.ipv4.conf.all.rp_filter from 1 to 2\n") && first.contains("  set net.ipv4.conf.b0.rp_filter from 1 to 2\n"), "{first}");
        assert!(first.contains("MTU: b0 has MTU 1400"), "{first}");
        for f in figures {
            assert!(first.contains(f), "{f:?} in {first}");
        }
        assert!(first.contains("  attached the decapsulation program on b0 (tunnel endpoints "), "{first}");
        assert!(std::path::Path::new("/sys/fs/bpf/lb-decap/b0/link").exists(), "the program's link is pinned");
        assert_eq!((pair.sysctl("net.ipv4.conf.all.rp_filter"), pair.sysctl("net.ipv4.conf.b0.rp_filter")), (2, 2));
        assert!(pair.lo().contains("inet 10.0.0.10/32"));

        let second = pair.lb_ok(&[&["--mode", mode, "--vip", VIP4, "--vip", VIP6], interface].concat());
        assert!(second.contains("nothing to change"), "{second}");
        let other = pair.lb(&["--mode", "direct", "--vip", VIP4, "--interface", "b0"]);
        assert_eq!(other.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&other.stderr).contains(&format!("set up for mode {mode} on b0")), "another mode is refused");
        let status = pair.lb_ok(&["--status"]);
        assert!(status.contains("  decapsulation on b0: attached by lb; decapsulated "), "{status}");
        pair.serves_over_tcp(VIP4, 8081);
        pair.serves_over_tcp(VIP6, 8081);

        let undo = pair.lb_ok(&["--undo"]);
        assert!(undo.contains("  set net.ipv4.conf.b0.rp_filter from 2 to 1\n"), "{undo}");
        assert!(undo.contains("  detached the decapsulation program on b0\n"), "{undo}");
        assert!(!std::path::Path::new("/sys/fs/bpf/lb-decap/b0").exists(), "nothing of the program is left");
        assert_eq!((pair.sysctl("net.ipv4.conf.all.rp_filter"), pair.sysctl("net.ipv4.conf.b0.rp_filter")), (1, 1));
        assert!(!pair.lo().contains(VIP4) && !pair.lo().contains(VIP6));
    }
}

#[test]
fn refuses_with_clear_errors_and_changes_nothing() {
    let pair = Pair::new("bse");
    let refused = |args: &[&str], text: &str| {
        let out = pair.lb(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(text), "{text:?} in {stderr}");
        assert!(!pair.state().exists() && !pair.lo().contains(VIP4), "nothing changed after {args:?}");
    };
    refused(&["--mode", "direct", "--vip", VIP4, "--interface", "eth9"], "there is no interface \"eth9\" on this host");
    refused(&["--mode", "direct", "--vip", VIP4], "no default route to find the interface by: give --interface");
    pair.backend.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    refused(&["--mode", "gue", "--vip", VIP4, "--vip", VIP6, "--interface", "b0"], "VIP 2001:db8::10 is IPv6, but IPv6 is disabled on this host");

    let state = pair.state().display().to_string();
    let lb = lb_binary().display().to_string();
    let cmd = [
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", &lb, "backend-setup", "--mode", "direct", "--vip", VIP4,
        "--interface", "b0", "--state", &state,
    ];
    let out = in_netns(pair.backend.name(), &cmd).output().expect("setpriv");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run it as root (or add --dry-run to see the changes)"));
    assert!(!pair.lo().contains(VIP4));
}
