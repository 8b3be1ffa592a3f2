//! Direct server return end to end, per mode (tunnel, gue, direct) and family: the real agent,
//! the backends set up by `lb backend-setup` (the VIPs on their loopback, the decapsulation
//! program in the tunnel modes), in the DSR lab (`Lab::create_dsr`), where every backend's
//! default route is the client's router. Requests and a 10 MiB download through each VIP are
//! answered from the VIP straight to the router: the load balancer's interfaces count far less
//! than the download, the router's links from the backends count all of it, and a capture on
//! the router's link from the load balancer sees no frame from the VIP. Needs root.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use lb_tests::{
    agent::{Agent, all_in_state},
    download::download,
    dsr::{BYPASS_BOUND, DOWNLOAD_BYTES, IfaceBytes, Snapshot},
    lab_config::{LabConfig, Vip},
    packet_socket::PacketSocket,
    topology::{LB_CLIENT_IFACE, Lab, ROUTER_LB_IFACE, http_get, in_namespace, in_ns},
};

/// The VIPs' port, which the backends serve (DSR translates no port).
const PORT: u16 = 80;
/// The health checks' target: through the VIP, as clients reach the backends.
const PROBE_VIP: &str = "vip";
/// Longest one download may take.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(60);

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

fn backend_bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_lb-test-backend").as_ref()
}

/// A VIP of these tests: its name, address and port, and whether its backends are reached
/// over IPv6. VIPs whose backends are the same hosts as another's take another port: the
/// configuration refuses a backend endpoint in two VIPs (a NAT rule, which the DSR modes do
/// not need).
#[derive(Clone, Copy)]
struct TestVip {
    name: &'static str,
    address: &'static str,
    port: u16,
    v6_backends: bool,
    /// The health checks' target (`vip` or `address`).
    probe: &'static str,
}

const WEB4: TestVip = TestVip { name: "web4", address: "10.0.0.10", port: PORT, v6_backends: false, probe: PROBE_VIP };
const WEB6: TestVip = TestVip { name: "web6", address: "fd00::10", port: PORT, v6_backends: true, probe: PROBE_VIP };
/// An IPv4 VIP over IPv6 backends (tunnel and gue only). Its probes go to the backends' own
/// addresses: a probe through an IPv4 VIP needs an IPv4 source on the node's side of the
/// tunnel, which an IPv6-only path to the backend does not have (the agent says so).
const WEB46: TestVip = TestVip { name: "web46", address: "10.0.0.20", port: 81, v6_backends: true, probe: "address" };

impl TestVip {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.address.parse().expect("a VIP address"), self.port)
    }
}

/// A running DSR lab; the agent is dropped first, while the lab's namespaces exist.
struct Dsr {
    agent: Agent,
    lab: Lab,
    _turn: MutexGuard<'static, ()>,
}

/// The DSR lab with three backends set up for `mode` and an agent serving `vips` in `mode`,
/// once every backend is up.
fn start(mode: &str, vips: &[TestVip]) -> Dsr {
    let turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::create_dsr(3, backend_bin(), PORT).unwrap_or_else(|e| panic!("DSR lab: {e:#}"));
    let addresses: Vec<&str> = vips.iter().map(|v| v.address).collect();
    for k in 0..3 {
        let out = lab.backend_setup(k, mode, &addresses).unwrap_or_else(|e| panic!("backend set-up: {e:#}"));
        assert!(out.contains(&format!("backend set-up for {mode} mode on {}", lab.backends[k].iface)), "{out}");
        lab.start_backend(k).expect("backend server");
        let name = lab.backends[k].name.clone();
        let mut ports: Vec<u16> = vips.iter().map(|v| v.port).filter(|&p| p != PORT).collect();
        ports.dedup();
        for port in ports {
            lab.start_server(k, &name, port).expect("backend server on another port");
        }
    }
    let mut config = LabConfig::new();
    for v in vips {
        let mut vip = Vip::tcp(v.name, v.address, v.port).forwarding(mode).tcp_check(v.probe);
        for b in &lab.backends {
            let ip: IpAddr = if v.v6_backends { b.v6.into() } else { b.v4.into() };
            vip = vip.backends(&[&format!("{ip}:{}", v.port)]);
        }
        config = config.vip(vip);
    }
    let agent = Agent::start(&lab, &config.render()).unwrap_or_else(|e| panic!("agent: {e:#}"));
    agent
        .wait_status(Duration::from_secs(15), |s| vips.iter().all(|v| all_in_state(s, v.name, "up")))
        .unwrap_or_else(|e| panic!("every backend up: {e:#}\n{}", agent.log()));
    Dsr { agent, lab, _turn: turn }
}

/// Waits (at most 5 s) for a first answer from `vip`: the neighbours along its paths resolved.
fn wait_first_answer(lab: &Lab, vip: TestVip) {
    let addr = vip.addr();
    let answered = in_namespace(&lab.client_ns, move || (0..10).any(|_| matches!(http_get(addr, "/", Duration::from_millis(500)), Ok((200, _)))));
    assert!(answered.expect("client thread"), "{}: no answer within 5 s", vip.name);
}

/// The IP source address of an Ethernet frame, if it carries IPv4 or IPv6.
fn source(frame: &[u8]) -> Option<IpAddr> {
    match frame.get(12..14)? {
        [0x08, 0x00] => Some(IpAddr::from(<[u8; 4]>::try_from(frame.get(26..30)?).ok()?)),
        [0x86, 0xdd] => Some(IpAddr::from(<[u8; 16]>::try_from(frame.get(22..38)?).ok()?)),
        _ => None,
    }
}

/// What a capture on the router's link from the load balancer saw.
#[derive(Debug, Default)]
struct Seen {
    frames: u64,
    from_vip: u64,
    from_lb: u64,
}

/// Captures what the router receives from the load balancer (`rl`, the peer of the load
/// balancer's `lbc`: also the frames its XDP program sends, which a capture on `lbc` itself
/// would miss) until `stop`; counts frames from `vip` and from the load balancer's 10.0.1.1.
fn capture(lab: &Lab, vip: IpAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<Seen> {
    let router = lab.router_ns.clone().expect("the DSR lab has a router");
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        in_namespace(&router, move || {
            let socket = PacketSocket::bind(ROUTER_LB_IFACE).expect("packet socket on the router's rl");
            let _ = ready_tx.send(());
            let mut seen = Seen::default();
            let lb: IpAddr = "10.0.1.1".parse().unwrap();
            socket.each_received(DOWNLOAD_LIMIT * 2, || stop.load(Ordering::SeqCst), |f| {
                seen.frames += 1;
                seen.from_vip += u64::from(source(f) == Some(vip));
                seen.from_lb += u64::from(source(f) == Some(lb));
            });
            seen
        })
        .expect("capture thread")
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("the capture started");
    handle
}

/// The VIP's byte counter in the agent's report.
fn vip_bytes(agent: &Agent, name: &str) -> u64 {
    let status = agent.json(&["status"]).expect("status");
    let vip = status["vips"].as_array().into_iter().flatten().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no VIP {name}"));
    vip["traffic"]["bytes"].as_u64().expect("the VIP's byte counter")
}

/// The interfaces whose counters tell the way of the replies: the load balancer's, the
/// router's links from the backends, the client's.
fn watched(lab: &Lab) -> Vec<(String, String)> {
    let router = lab.router_ns.clone().expect("the DSR lab has a router");
    let mut all: Vec<(String, String)> = lab.lb_interfaces().into_iter().map(|i| (lab.lb_ns.clone(), i)).collect();
    all.extend((1..=lab.backends.len()).map(|k| (router.clone(), format!("rb{k}"))));
    all.push((lab.client_ns.clone(), "c0".to_owned()));
    all
}

fn sum(deltas: &[(String, IfaceBytes)], pick: impl Fn(&str) -> bool, field: impl Fn(&IfaceBytes) -> u64) -> u64 {
    deltas.iter().filter(|(i, _)| pick(i)).map(|(_, b)| field(b)).sum()
}

/// Requests spread over the backends, then a 10 MiB download whose replies bypass the load
/// balancer: checked from counters on both sides and from a capture.
fn requests_and_a_download_bypass_the_load_balancer(d: &Dsr, mode: &str, vip: TestVip) {
    wait_first_answer(&d.lab, vip);
    let (seen, failed) = d.lab.spread(vip.addr(), 60);
    println!("{mode} {}: 60 requests: {seen:?}, {failed} failed", vip.name);
    assert_eq!(failed, 0, "{mode} {}: every request answered", vip.name);
    assert!(seen.len() >= 2 && seen.keys().all(|n| ["b1", "b2", "b3"].contains(&n.as_str())), "{mode} {}: spread over the backends: {seen:?}", vip.name);

    let ifaces = watched(&d.lab);
    let before = Snapshot::take(&ifaces).expect("counters");
    let bytes_before = vip_bytes(&d.agent, vip.name);
    let stop = Arc::new(AtomicBool::new(false));
    let capturing = capture(&d.lab, vip.addr().ip(), stop.clone());
    // The capture sees what the load balancer sends to the router (its own ping).
    let ping = in_ns(&d.lab.lb_ns, &["ping", "-c", "1", "-W", "2", "10.0.1.2"]).output().expect("ping");
    let got = download(&d.lab.client_ns, vip.addr(), DOWNLOAD_BYTES, 0, DOWNLOAD_LIMIT).expect("download thread");
    stop.store(true, Ordering::SeqCst);
    let seen = capturing.join().expect("capture");
    let deltas = Snapshot::take(&ifaces).expect("counters").since(&before);
    let forwarded = vip_bytes(&d.agent, vip.name) - bytes_before;

    let lb_client_tx = sum(&deltas, |i| i == LB_CLIENT_IFACE, |b| b.tx);
    let lb_backends_rx = sum(&deltas, |i| i.starts_with("lbb"), |b| b.rx);
    let lb_backends_tx = sum(&deltas, |i| i.starts_with("lbb"), |b| b.tx);
    let router_from_backends = sum(&deltas, |i| i.starts_with("rb"), |b| b.rx);
    let client_rx = sum(&deltas, |i| i == "c0", |b| b.rx);
    println!(
        "{mode} {}: download of {} bytes in {:?}: client received {client_rx} bytes on c0; router from backends {router_from_backends}; \
         load balancer: forwarded {forwarded} bytes (agent), lbc tx {lb_client_tx}, lbb* rx {lb_backends_rx}, lbb* tx {lb_backends_tx}; \
         capture on rl: {} frames, {} from the VIP",
        vip.name, got.received, got.elapsed, seen.frames, seen.from_vip
    );
    assert!(got.complete(DOWNLOAD_BYTES), "{mode} {}: the download completes intact: {got:?}", vip.name);
    assert!(ping.status.success() && seen.from_lb >= 1, "{mode} {}: the capture sees the load balancer's own frames: {seen:?}", vip.name);
    assert_eq!(seen.from_vip, 0, "{mode} {}: no frame from the VIP left the load balancer towards the client", vip.name);
    assert!(lb_client_tx < BYPASS_BOUND, "{mode} {}: lbc sent {lb_client_tx} bytes", vip.name);
    assert!(lb_backends_rx < BYPASS_BOUND, "{mode} {}: the backends sent {lb_backends_rx} bytes to the load balancer", vip.name);
    assert!(lb_backends_tx < BYPASS_BOUND, "{mode} {}: lbb* sent {lb_backends_tx} bytes (the client's packets only)", vip.name);
    assert!(router_from_backends >= DOWNLOAD_BYTES as u64, "{mode} {}: the replies reached the router from the backends", vip.name);
    assert!(client_rx >= DOWNLOAD_BYTES as u64, "{mode} {}: c0 received {client_rx}", vip.name);
    assert!(forwarded > 0 && forwarded < BYPASS_BOUND, "{mode} {}: the load balancer forwarded {forwarded} bytes of the client's", vip.name);
}

#[test]
fn tunnel_ipv4_ipv6_and_ipv4_over_ipv6_backends_answer_around_the_load_balancer() {
    let vips = [WEB4, WEB6, WEB46];
    let d = start("tunnel", &vips);
    for vip in vips {
        requests_and_a_download_bypass_the_load_balancer(&d, "tunnel", vip);
    }
}

#[test]
fn gue_ipv4_and_ipv6_answer_around_the_load_balancer() {
    let vips = [WEB4, WEB6];
    let d = start("gue", &vips);
    for vip in vips {
        requests_and_a_download_bypass_the_load_balancer(&d, "gue", vip);
    }
}

#[test]
fn direct_ipv4_and_ipv6_answer_around_the_load_balancer() {
    let vips = [WEB4, WEB6];
    let d = start("direct", &vips);
    for vip in vips {
        requests_and_a_download_bypass_the_load_balancer(&d, "direct", vip);
    }
}

/// An XDP program that passes every frame, attached to the router's `rl` (the load balancer's
/// peer) for as long as the value lives. The load balancer sends its ICMP errors back out of
/// `lbc` (XDP_TX), and on a veth such frames reach the peer at once only when the peer runs an
/// XDP program (`shared/lab-notes.md`); without one they wait there until the next frame
/// (measured: all of a download's errors arrived together after the client's retransmission
/// timeouts, 3 to 30 s). A NIC sends XDP_TX frames at once; this makes the veth behave alike.
fn pass_program_on_the_routers_lb_link(lab: &Lab) -> aya::Ebpf {
    let router = lab.router_ns.clone().expect("the DSR lab has a router");
    in_namespace(&router, || -> anyhow::Result<aya::Ebpf> {
        let mut floors = aya::Ebpf::load(lb_userspace::dataplane::FLOORS)?;
        let pass: &mut aya::programs::Xdp = floors.program_mut("floor_pass").expect("floor_pass").try_into()?;
        pass.load()?;
        pass.attach(ROUTER_LB_IFACE, aya::programs::XdpMode::Driver)?;
        Ok(floors)
    })
    .expect("router thread")
    .unwrap_or_else(|e| panic!("attaching floor_pass to the router's {ROUTER_LB_IFACE}: {e:#}"))
}

/// A download with an 8 KiB request (several full-sized segments from the client) over
/// tunnels whose MTU leaves no room for the outer header: every link has MTU 1500, so the
/// client's segments no longer fit `lbb<k>` once encapsulated. The request gets through by
/// the load balancer's ICMP "fragmentation needed" / "packet too big", which tells the client
/// the MTU that leaves room for the outer header (1480 over IPv4, 1460 over IPv6); or, with the
/// backends' routes to the clients set to the MSS that `lb backend-setup` advises (advmss
/// 1440 over IPv4, 1400 for IPv6 clients over IPv6), the client never sends a segment that is
/// too large, needs no ICMP error and learns nothing. (The client's segments are bounded by
/// the MSS in the backend's SYN-ACK, which does not cross the load balancer in DSR: clamping
/// the MSS of the client's SYN at the load balancer, `mss_clamp`, bounds only the backend's
/// segments, so it is no way to spare these errors.)
#[test]
fn requests_larger_than_the_tunnel_leaves_room_for_get_through_by_icmp_or_the_backends_mss() {
    let adv4 = TestVip { name: "adv4", address: "10.0.0.30", port: 82, v6_backends: false, probe: PROBE_VIP };
    let adv6 = TestVip { name: "adv6", address: "fd00::30", port: 82, v6_backends: true, probe: PROBE_VIP };
    let vips = [WEB4, WEB6, adv4, adv6];
    let d = start("tunnel", &vips);
    let _pass = pass_program_on_the_routers_lb_link(&d.lab);
    for (vip, learnt) in [(WEB4, Some(1480)), (WEB6, Some(1460)), (adv4, None), (adv6, None)] {
        if vip.name == adv4.name {
            for (k, b) in d.lab.backends.iter().enumerate() {
                let net = 21 + k;
                d.lab.ns_run(&b.ns, &["ip", "route", "change", "default", "via", &format!("10.0.{net}.1"), "advmss", "1440"]).expect("advmss");
                d.lab.ns_run(&b.ns, &["ip", "-6", "route", "change", "default", "via", &format!("fd00:{net}::1"), "advmss", "1400"]).expect("advmss");
            }
        }
        let before = reason(&d.agent, "icmp_too_big");
        let got = download(&d.lab.client_ns, vip.addr(), 1 << 20, 8 << 10, DOWNLOAD_LIMIT).expect("download thread");
        let too_big = reason(&d.agent, "icmp_too_big") - before;
        let route = in_ns(&d.lab.client_ns, &["ip", "route", "get", vip.address]).output().expect("ip route get");
        let route = String::from_utf8_lossy(&route.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        println!("{}: a download with an 8 KiB request: {} bytes in {:?}; ICMP errors sent {too_big}; the client's route: {route}", vip.name, got.received, got.elapsed);
        assert!(got.complete(1 << 20), "{}: the download completes: {got:?}", vip.name);
        match learnt {
            Some(mtu) => {
                assert!(too_big >= 1, "{}: the load balancer sent ICMP errors", vip.name);
                assert!(route.contains(&format!("mtu {mtu}")), "{}: the client learnt MTU {mtu}: {route}", vip.name);
            }
            None => {
                assert_eq!(too_big, 0, "{}: the backends' MSS spared the client any ICMP error", vip.name);
                assert!(!route.contains("mtu "), "{}: the client learnt no MTU: {route}", vip.name);
            }
        }
    }
}

/// A data path counter (`lb stats`, by reason).
fn reason(agent: &Agent, name: &str) -> u64 {
    let stats = agent.json(&["stats"]).expect("stats");
    stats["reasons"].as_array().into_iter().flatten().find(|r| r[0] == name).and_then(|r| r[1].as_u64()).unwrap_or_else(|| panic!("no counter {name}"))
}

/// The DSR topology itself, with kernel routing on the load balancer in place of the agent
/// (as `direct` mode does: the VIP routed to a backend on its link), and the measurements the
/// tests above rely on: the download completes, its replies reach the client through the
/// router (counted there), and neither the load balancer's counters nor the capture on the
/// router's link from it see them.
#[test]
fn the_dsr_topology_answers_around_the_load_balancer_with_kernel_routing() {
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = Lab::create_dsr(3, backend_bin(), PORT).unwrap_or_else(|e| panic!("DSR lab: {e:#}"));
    for k in 0..3 {
        lab.backend_setup(k, "direct", &[WEB4.address, WEB6.address]).unwrap_or_else(|e| panic!("backend set-up: {e:#}"));
        lab.start_backend(k).expect("backend server");
    }
    let lb = lab.lb_ns.clone();
    lab.ns_run(&lb, &["ip", "route", "add", "10.0.0.10/32", "via", "10.0.12.2"]).expect("route");
    lab.ns_run(&lb, &["ip", "-6", "route", "add", "fd00::10/128", "via", "fd00:12::2"]).expect("route");
    for vip in [WEB4, WEB6] {
        wait_first_answer(&lab, vip);
        let (seen, failed) = lab.spread(vip.addr(), 10);
        assert_eq!((seen.keys().map(String::as_str).collect::<Vec<_>>(), failed), (vec!["b2"], 0), "{}: b2 answers", vip.name);
        let ifaces = watched(&lab);
        let before = Snapshot::take(&ifaces).expect("counters");
        let stop = Arc::new(AtomicBool::new(false));
        let capturing = capture(&lab, vip.addr().ip(), stop.clone());
        let ping = in_ns(&lab.lb_ns, &["ping", "-c", "1", "-W", "2", "10.0.1.2"]).output().expect("ping");
        let got = download(&lab.client_ns, vip.addr(), DOWNLOAD_BYTES, 0, DOWNLOAD_LIMIT).expect("download thread");
        stop.store(true, Ordering::SeqCst);
        let seen = capturing.join().expect("capture");
        let deltas = Snapshot::take(&ifaces).expect("counters").since(&before);
        println!("{}: {deltas:?}; capture: {seen:?}", vip.name);
        assert!(got.complete(DOWNLOAD_BYTES), "{got:?}");
        assert!(ping.status.success() && seen.from_lb >= 1 && seen.from_vip == 0, "{seen:?}");
        assert!(sum(&deltas, |i| i == LB_CLIENT_IFACE, |b| b.tx) < BYPASS_BOUND);
        assert!(sum(&deltas, |i| i.starts_with("lbb"), |b| b.rx) < BYPASS_BOUND);
        assert!(sum(&deltas, |i| i == "rb2", |b| b.rx) >= DOWNLOAD_BYTES as u64, "the replies came through the router");
    }
    // The control: the backend's replies routed through the load balancer are counted there
    // and captured (the measurements can fail).
    let b2 = lab.backends[1].ns.clone();
    lab.ns_run(&b2, &["ip", "route", "add", "10.0.2.0/24", "via", "10.0.12.1"]).expect("route");
    let ifaces = watched(&lab);
    let before = Snapshot::take(&ifaces).expect("counters");
    let stop = Arc::new(AtomicBool::new(false));
    let capturing = capture(&lab, WEB4.addr().ip(), stop.clone());
    let got = download(&lab.client_ns, WEB4.addr(), DOWNLOAD_BYTES, 0, DOWNLOAD_LIMIT).expect("download thread");
    stop.store(true, Ordering::SeqCst);
    let seen = capturing.join().expect("capture");
    let deltas = Snapshot::take(&ifaces).expect("counters").since(&before);
    assert!(got.complete(DOWNLOAD_BYTES), "{got:?}");
    assert!(seen.from_vip > 0, "replies through the load balancer are captured: {seen:?}");
    assert!(sum(&deltas, |i| i == LB_CLIENT_IFACE, |b| b.tx) >= DOWNLOAD_BYTES as u64, "and counted: {deltas:?}");
}
