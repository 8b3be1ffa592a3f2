//! Hostile clients of the metrics endpoint against the real agent in a lab (network
//! namespaces, driver-mode XDP on veths), under the open-file limit the shipped unit used to
//! leave (1024): what once took every backend down must now starve nothing. Needs root.
//!
//! The limits themselves (431, 408, the connection cap, the accept backoff, probes failing
//! locally) are unit-tested in `lb-userspace` (`api::http`, `api::server`, `health`).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{all_in_state, lab_with_agent},
    lab_config::{LabConfig, Vip},
    topology::{Lab, http_get, in_namespace},
};
use lb_userspace::api::client::Client;

/// The agent's configuration: VIP web on the three backends, the lab's fast HTTP checks
/// ([`Vip`]), metrics on 127.0.0.1:9100.
fn config() -> String {
    LabConfig::new()
        .global("metrics_address: 127.0.0.1:9100")
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"]))
        .render()
}

const ATTACK: Duration = Duration::from_secs(10);
const IDLE: usize = 2000;

fn metrics() -> SocketAddr {
    "127.0.0.1:9100".parse().unwrap()
}

fn web() -> SocketAddr {
    "10.0.0.10:80".parse().unwrap()
}

/// The pid of the agent running with `config`.
fn agent_pid(config: &Path) -> Option<i32> {
    let config = config.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<_> = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy).collect();
        (args.iter().any(|a| a == "run") && args.iter().any(|a| *a == config) && !args.iter().any(|a| a == "netns"))
            .then_some(pid)
    })
}

fn set_open_file_limit(pid: i32, n: u64) {
    let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: prlimit reads `limit` and writes nothing back (null old limit).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Resident memory in MiB, open descriptors and CPU time (clock ticks) of a process.
fn usage(pid: i32) -> (u64, usize, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    let cpu = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    (rss_kib / 1024, fds, cpu)
}

/// Tries to keep [`IDLE`] idle connections open to the metrics endpoint, reconnecting those
/// the agent closes, until `stop`; returns the most that were open at once (connections the
/// agent has not accepted yet, in its listen backlog, included).
fn idle_connections(stop: &AtomicBool) -> usize {
    let mut open: Vec<TcpStream> = Vec::new();
    let mut most = 0;
    let deadline = Instant::now() + ATTACK + Duration::from_secs(5);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        // Still open while there is nothing to read; the agent's close or 503 drops one.
        open.retain(|s| matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
        while open.len() < IDLE && !stop.load(Ordering::SeqCst) {
            let Ok(s) = TcpStream::connect_timeout(&metrics(), Duration::from_millis(200)) else { break };
            let _ = s.set_nonblocking(true);
            open.push(s);
        }
        most = most.max(open.len());
        thread::sleep(Duration::from_millis(100));
    }
    most
}

/// Sends an endless header line to the metrics endpoint, reconnecting when cut off, until
/// `stop`; returns the bytes sent.
fn endless_header(stop: &AtomicBool) -> usize {
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0;
    let deadline = Instant::now() + ATTACK + Duration::from_secs(5);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let Ok(mut s) = TcpStream::connect_timeout(&metrics(), Duration::from_millis(200)) else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\nX-Endless: ").is_err() {
            continue;
        }
        while !stop.load(Ordering::SeqCst) {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
    }
    sent
}

/// New connections through the VIP, one request each, until `stop`: (succeeded, failed).
fn vip_load(stop: &AtomicBool) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    let deadline = Instant::now() + ATTACK + Duration::from_secs(5);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match http_get(web(), "/", Duration::from_secs(2)) {
            Ok((200, _)) => ok += 1,
            _ => failed += 1,
        }
        thread::sleep(Duration::from_millis(5));
    }
    (ok, failed)
}

fn scrape(lab: &Lab) -> String {
    in_namespace(&lab.lb_ns, || {
        let mut s = TcpStream::connect_timeout(&metrics(), Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    })
    .ok()
    .flatten()
    .unwrap_or_default()
}

#[test]
fn hostile_metrics_clients_starve_nothing() {
    let (lab, agent) = lab_with_agent(env!("CARGO_BIN_EXE_lb-test-backend").as_ref(), 3, &config(), "web")
        .expect("a lab whose backends pass their checks");
    let pid = agent_pid(&agent.config).expect("the agent's pid");
    set_open_file_limit(pid, 1024);
    let transitions = agent.json(&["stats"]).expect("stats")["health"]["transitions"].as_u64();

    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..3)
        .map(|i| {
            let (stop, ns) = (stop.clone(), lab.lb_ns.clone());
            thread::spawn(move || {
                in_namespace(&ns, move || if i == 0 { idle_connections(&stop) } else { endless_header(&stop) })
                    .unwrap_or(0)
            })
        })
        .collect();
    let load = {
        let (stop, ns) = (stop.clone(), lab.client_ns.clone());
        thread::spawn(move || in_namespace(&ns, move || vip_load(&stop)).unwrap_or((0, usize::MAX)))
    };

    let client = Client::new(&agent.socket);
    let (_, _, cpu_before) = usage(pid);
    let started = Instant::now();
    let (mut worst, mut cli_failures, mut peak_rss, mut peak_fds) = (Duration::ZERO, 0, 0, 0);
    while started.elapsed() < ATTACK {
        let asked = Instant::now();
        cli_failures += usize::from(client.get("/v1/status").is_err());
        worst = worst.max(asked.elapsed());
        let (rss, fds, _) = usage(pid);
        (peak_rss, peak_fds) = (peak_rss.max(rss), peak_fds.max(fds));
        thread::sleep(Duration::from_millis(100));
    }
    let (_, _, cpu_after) = usage(pid);
    // SAFETY: sysconf has no side effect.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (cpu_after - cpu_before) as f64 / ticks / started.elapsed().as_secs_f64() * 100.0;
    stop.store(true, Ordering::SeqCst);
    let made: Vec<_> = attackers.into_iter().map(|a| a.join().unwrap_or(0)).collect();
    let (ok, failed) = load.join().unwrap_or((0, usize::MAX));

    eprintln!(
        "{ATTACK:?} of attack (up to {} idle connections open at once, {} MiB of endless header lines written): \
         {ok} requests through the VIP, {failed} failed; agent peak RSS {peak_rss} MiB, peak {peak_fds} \
         descriptors (limit 1024), {cpu:.0} % CPU; admin status answered in at most {worst:?}, {cli_failures} failed",
        made[0],
        (made[1] + made[2]) >> 20,
    );
    // The agent serves 64 and leaves the rest in its listen backlog (128).
    assert!(made[0] > 64 + 64, "the attack held only {} connections", made[0]);
    assert!(ok > 0 && failed == 0, "{failed} of {} requests through the VIP failed", ok + failed);
    assert_eq!(cli_failures, 0);
    assert!(worst < Duration::from_millis(100), "the admin API took {worst:?}");
    assert!(peak_rss < 100, "agent RSS peaked at {peak_rss} MiB");
    assert!(peak_fds < 512, "the agent held {peak_fds} descriptors");
    assert!(cpu < 100.0, "the agent used {cpu:.0} % CPU");
    let stats = agent.json(&["stats"]).expect("stats");
    assert_eq!(stats["health"]["transitions"].as_u64(), transitions, "no backend flipped: {stats:#}");
    let status = agent.json(&["status"]).expect("status");
    assert!(all_in_state(&status, "web", "up"), "{status:#}");
    let text = scrape(&lab);
    assert!(text.lines().any(|l| l == "lb_probe_local_errors_total 0"), "{text}");
}

/// Keeps 20 admin connections busy sending a request one byte every 100 ms (each is cut off
/// after the agent's 5 s read timeout and opened again) until `stop`; returns the bytes sent.
fn slow_admin_clients(socket: &Path, stop: &AtomicBool) -> usize {
    use std::os::unix::net::UnixStream;
    let mut clients: Vec<UnixStream> = Vec::new();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        while clients.len() < 20 {
            let Ok(mut s) = UnixStream::connect(socket) else { break };
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            if s.write_all(b"GET /v1/status HTTP/1.1\r\nX-Slow: ").is_ok() {
                clients.push(s);
            }
        }
        clients.retain_mut(|s| s.write_all(b"a").is_ok());
        sent += clients.len();
        thread::sleep(Duration::from_millis(100));
    }
    sent
}

/// Slow clients of the admin socket delay no health transition: the agent's loop sees only
/// whole requests, so a backend killed while 20 connections trickle their requests is taken out
/// as fast as without them, and the ring swap follows the failing probe at once.
#[test]
fn slow_admin_clients_do_not_delay_a_health_transition() {
    let (mut lab, agent) = lab_with_agent(env!("CARGO_BIN_EXE_lb-test-backend").as_ref(), 3, &config(), "web")
        .expect("a lab whose backends pass their checks");
    let stop = Arc::new(AtomicBool::new(false));
    let slow = {
        let (stop, socket) = (stop.clone(), agent.socket.clone());
        thread::spawn(move || slow_admin_clients(&socket, &stop))
    };
    thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    lab.kill_backend(0);
    let down = agent.wait_status(Duration::from_secs(5), |s| {
        lb_tests::agent::backends(s, "web").iter().any(|b| b["address"] == "10.0.11.2" && b["state"] == "down")
    });
    let taken_out = killed.elapsed();
    stop.store(true, Ordering::SeqCst);
    let sent = slow.join().unwrap_or(0);
    down.expect("the killed backend is taken out");
    let stats = agent.json(&["stats"]).expect("stats");
    let swap_ms = stats["health"]["last_probe_to_swap_ms"].as_f64().expect("probe-to-swap time");
    eprintln!("with 20 slow admin clients ({sent} bytes trickled): backend down {taken_out:?} after it was killed, ring swapped {swap_ms:.1} ms after the failing probe");
    // fall (2) × fast_interval (100 ms) after the first failure, plus one interval (200 ms) to
    // notice it, plus 1 s of slack for this shared machine.
    assert!(taken_out < Duration::from_millis(2 * 100 + 200 + 1000), "took {taken_out:?}");
    assert!(swap_ms < 100.0, "the swap came {swap_ms} ms after the probe");
}
