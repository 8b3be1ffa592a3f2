//! Jumbo frames end to end: every link of the lab at MTU 9,000, the agent in `xdp_mode: driver`
//! (a veth takes an XDP program at an MTU above a page only if it handles multi-buffer frames),
//! 1 MiB downloads over IPv4 and IPv6 through a VIP, and frames larger than 4 KiB on the
//! backends' links: the replies crossed the data path whole, as multi-buffer frames. With
//! `xdp_mode: auto` the agent takes driver mode at that MTU and logs why. A build of the program
//! without frags is refused there, with the interface, its MTU and the limit named, and the
//! pinned program it could not replace keeps running. Needs root.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{Agent, all_in_state},
    lab_config::{LabConfig, Vip},
    topology::{Lab, http_get, in_namespace},
};

/// The program built without XDP frags (`tests/build.rs`).
const SINGLE_BUFFER_PROGRAM: &str = concat!(env!("OUT_DIR"), "/lb-xdp-single-buffer");

/// Every link's MTU.
const MTU: u32 = 9000;
/// Bytes of each download.
const DOWNLOAD: usize = 1 << 20;
/// A frame larger than this did not fit one 4 KiB page.
const PAGE: usize = 4096;
/// Longest a download may take.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(30);
/// Longest a capture runs.
const CAPTURE_LIMIT: Duration = Duration::from_secs(90);

/// Downloads `/bytes/DOWNLOAD` from `addr` in the client's namespace: the body's length and
/// whether every byte matched the server's pattern (`b'a' + i % 26`).
fn download(lab: &Lab, addr: SocketAddr) -> std::io::Result<(usize, bool)> {
    in_namespace(&lab.client_ns, move || {
        let started = Instant::now();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_millis(250)))?;
        write!(s, "GET /bytes/{DOWNLOAD} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")?;
        let mut all = Vec::with_capacity(DOWNLOAD + 256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if started.elapsed() > DOWNLOAD_LIMIT {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{} bytes after {DOWNLOAD_LIMIT:?}", all.len())));
            }
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
        let end = all.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no HTTP header"))?;
        let head = String::from_utf8_lossy(&all[..end]);
        if !head.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!("answer {head:?}")));
        }
        let body = &all[end + 4..];
        Ok((body.len(), body.iter().enumerate().all(|(i, &b)| b == b'a' + (i % 26) as u8)))
    })
    .expect("client namespace")
}

/// Captures the frames `iface` in namespace `ns` sends (an AF_PACKET socket, outgoing frames
/// only) until `stop` is set: their lengths on the wire, counted before any offload could
/// merge them (the lab's senders segment in software: checksum offload is off). Returns once
/// the socket is bound.
fn capture_sent(ns: &str, iface: &'static str, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<usize>> {
    let (bound_tx, bound_rx) = mpsc::channel();
    let ns = ns.to_owned();
    let handle = thread::spawn(move || {
        in_namespace(&ns.clone(), move || {
            let socket = packet_socket(iface).unwrap_or_else(|e| panic!("AF_PACKET socket on {iface} in {ns}: {e}"));
            bound_tx.send(()).unwrap();
            let mut lengths = Vec::new();
            let mut buf = vec![0u8; 65536];
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < CAPTURE_LIMIT {
                // SAFETY: an all-zero sockaddr_ll is valid; recvfrom writes at most `len` bytes.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf` and `from` are valid for the sizes passed; MSG_TRUNC returns the
                // frame's real length even where it exceeds the buffer.
                let n = unsafe {
                    libc::recvfrom(
                        socket.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_TRUNC,
                        (&raw mut from).cast(),
                        &mut len,
                    )
                };
                if n > 0 && from.sll_pkttype == libc::PACKET_OUTGOING {
                    lengths.push(n as usize);
                }
            }
            lengths
        })
        .expect("backend namespace")
    });
    bound_rx.recv_timeout(Duration::from_secs(10)).expect("capture socket bound");
    handle
}

/// A raw socket receiving every frame of `iface`, with a 100 ms receive timeout and an 8 MiB
/// buffer (no frame of a download lost while the capture catches up).
fn packet_socket(iface: &str) -> std::io::Result<OwnedFd> {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let set = |option: i32, value: *const libc::c_void, size: usize| {
        // SAFETY: `value` points to `size` readable bytes.
        let rc = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, option, value, size as libc::socklen_t) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    };
    let buffer: i32 = 8 << 20;
    set(libc::SO_RCVBUFFORCE, (&raw const buffer).cast(), std::mem::size_of::<i32>())?;
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    set(libc::SO_RCVTIMEO, (&raw const timeout).cast(), std::mem::size_of::<libc::timeval>())?;
    // SAFETY: an all-zero sockaddr_ll is valid; its fields are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = all;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(fd, (&raw const addr).cast(), std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

/// The VIP's byte counter in a status report.
fn vip_bytes(status: &serde_json::Value, vip: &str) -> u64 {
    status["vips"].as_array().into_iter().flatten().find(|v| v["name"] == vip).map_or(0, |v| v["traffic"]["bytes"].as_u64().unwrap_or(0))
}

/// A lab with every link at [`MTU`], its three backends serving, and VIPs web (10.0.0.10:80)
/// and web6 (fd00::10:80) on all three; `configure` edits the agent's configuration.
fn jumbo_lab(configure: impl Fn(String) -> String) -> (Lab, Agent) {
    let mut lab = Lab::create_with_mtu(3, env!("CARGO_BIN_EXE_lb-test-backend").as_ref(), MTU).expect("lab");
    for k in 0..3 {
        lab.start_backend(k).expect("backend");
    }
    let config = LabConfig::new()
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"]))
        .vip(Vip::tcp("web6", "fd00::10", 80).backends(&["fd00:11::2:8080", "fd00:12::2:8080", "fd00:13::2:8080"]))
        .render();
    let agent = Agent::start(&lab, &configure(config)).unwrap_or_else(|e| panic!("the agent must attach at MTU {MTU}: {e:#}"));
    (lab, agent)
}

/// `log` without its terminal colour sequences (`ESC [ ... m`).
fn without_colours(log: &str) -> String {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().take_while(|&c| c != 'm').for_each(drop);
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The XDP mode of each interface in a status report.
fn modes(status: &serde_json::Value) -> Vec<(String, String)> {
    serde_json::from_value(status["interfaces"].clone()).expect("interfaces in the status")
}

#[test]
fn auto_chooses_driver_mode_at_mtu_9000_and_says_why() {
    let (lab, agent) = jumbo_lab(|c| {
        assert!(c.contains("xdp_mode: driver"));
        c.replace("xdp_mode: driver", "xdp_mode: auto")
    });
    let modes = modes(&agent.json(&["status"]).expect("status"));
    assert_eq!(modes.len(), 4, "{modes:?}");
    assert!(modes.iter().all(|(_, mode)| mode == "driver"), "auto took driver mode on every interface: {modes:?}");
    let log = without_colours(&agent.log());
    for iface in lab.lb_interfaces() {
        let said = log.lines().any(|l| l.contains("auto: XDP in driver mode") && l.contains(&format!("interface={iface} mtu={MTU}")));
        assert!(said, "the log says why {iface} is in driver mode:\n{log}");
    }
    drop(agent);
}

#[test]
fn one_mib_downloads_over_ipv4_and_ipv6_with_every_link_at_mtu_9000_in_driver_mode() {
    let (lab, agent) = jumbo_lab(|c| {
        assert!(c.contains("xdp_mode: driver"));
        c
    });
    let status = agent
        .wait_status(Duration::from_secs(15), |s| all_in_state(s, "web", "up") && all_in_state(s, "web6", "up"))
        .expect("every backend up");
    let modes = modes(&status);
    assert_eq!(modes.len(), 4, "{modes:?}");
    assert!(modes.iter().all(|(_, mode)| mode == "driver"), "every interface in driver mode: {modes:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let captures: Vec<_> = lab.backends.iter().map(|b| capture_sent(&b.ns, "eth0", stop.clone())).collect();
    let v4 = download(&lab, "10.0.0.10:80".parse().unwrap());
    let v6 = download(&lab, "[fd00::10]:80".parse().unwrap());
    stop.store(true, Ordering::SeqCst);
    let sent: Vec<usize> = captures.into_iter().flat_map(|c| c.join().expect("capture")).collect();

    assert_eq!(v4.as_ref().ok(), Some(&(DOWNLOAD, true)), "IPv4 download: {v4:?}");
    assert_eq!(v6.as_ref().ok(), Some(&(DOWNLOAD, true)), "IPv6 download: {v6:?}");
    let largest = sent.iter().copied().max().unwrap_or(0);
    assert!(largest <= MTU as usize + 14, "captured frames are frames on the wire (at most MTU + Ethernet header): {largest}");
    let jumbo: Vec<usize> = sent.iter().copied().filter(|&n| n > PAGE).collect();
    let jumbo_bytes: usize = jumbo.iter().sum();
    eprintln!(
        "backends sent {} frames, {} of them larger than {PAGE} bytes ({jumbo_bytes} bytes, largest {largest})",
        sent.len(),
        jumbo.len()
    );
    // At least three quarters of both bodies went out in frames larger than a page.
    assert!(jumbo_bytes >= 2 * DOWNLOAD * 3 / 4, "bytes in frames larger than {PAGE}: {jumbo_bytes} of {}", 2 * DOWNLOAD);

    // The data path counted the replies' whole frames, not their first buffers.
    let status = agent
        .wait_status(Duration::from_secs(5), |s| vip_bytes(s, "web") >= DOWNLOAD as u64 && vip_bytes(s, "web6") >= DOWNLOAD as u64)
        .unwrap_or_else(|e| panic!("each VIP counts at least its download's bytes: {e:#}"));
    eprintln!("VIP bytes: web {}, web6 {}", vip_bytes(&status, "web"), vip_bytes(&status, "web6"));
    drop(agent);
}

#[test]
fn a_program_without_frags_is_refused_at_mtu_9000_naming_the_mtu_and_the_limit() {
    let (lab, mut agent) = jumbo_lab(|c| c);
    agent.wait_status(Duration::from_secs(15), |s| all_in_state(s, "web", "up")).expect("every backend up");
    let answered = |lab: &Lab| {
        in_namespace(&lab.client_ns, || (0..10).filter(|_| http_get("10.0.0.10:80".parse().unwrap(), "/", Duration::from_secs(2)).is_ok()).count())
            .expect("client namespace")
    };

    // Over the pinned links: the driver refuses the link update, the running program stays.
    agent.stop(libc::SIGTERM);
    let refused = agent.spawn_with(&["--program", SINGLE_BUFFER_PROGRAM]).expect_err("a program without frags at MTU 9000");
    let message = without_colours(&format!("{refused:#}"));
    assert!(
        message.contains(
            "replacing the program on the pinned link of lbc (the running one stays): attaching XDP to lbc in driver mode (MTU 9000, above 3506,"
        ) && message.contains("`bpf_link_update` failed: Numerical result out of range"),
        "{message}"
    );
    assert_eq!(answered(&lab), 10, "the pinned program still forwards");
    agent.stop(libc::SIGTERM);

    // Anew, with nothing pinned: the same account of the refusal.
    assert!(agent.teardown().status.success(), "lb teardown");
    let refused = agent.spawn_with(&["--program", SINGLE_BUFFER_PROGRAM]).expect_err("a program without frags at MTU 9000");
    let message = without_colours(&format!("{refused:#}"));
    assert!(
        message.contains("attaching XDP to lbc in driver mode (MTU 9000, above 3506,")
            && message.contains("lower the MTU to 3506 or less, or use xdp_mode: generic")
            && message.contains("`bpf_link_create` failed: Numerical result out of range"),
        "{message}"
    );
}
