//! Part 3: the load balancer against the user-space proxy people would pick instead, HAProxy in
//! `mode tcp`, in the same lab with the same backends and the same client load.
//!
//! Three set-ups take turns in the load balancer's namespace:
//! - **routing**: plain kernel IP forwarding, the client talking to one backend directly (the
//!   baseline: what the machine spends on clients, servers and veths without load balancing);
//! - **haproxy**: HAProxy 2.6 (`mode tcp`, round robin over the two backends) listening on the
//!   VIP, which is an address of the namespace;
//! - **lb**: the XDP data path on `lbc`, `lbb1` and `lbb2` with the VIP and the same backends.
//!
//! The client runs wrk (one thread, 32 connections) with keep-alive ("long" connections) and
//! with `Connection: close` ("short": one TCP connection per request). The CPU the load
//! balancing costs is measured two ways, each per 1,000 requests:
//! - **direct**: HAProxy's process time (user + system, /proc/PID/stat) against the XDP
//!   program's own run time (BPF statistics, `run_time_ns`);
//! - **machine**: busy CPU time of the whole machine (/proc/stat) per request, minus the
//!   same with plain routing in the middle. This also counts what the direct figure misses
//!   (HAProxy's TCP stack work in softirq context, the extra socket pair), but the machine is
//!   shared, so it is noisier.

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::programs::{XdpMode, xdp::XdpLinkId};
use lb_common::maps::{Backend, BackendState, FAMILY_V4, NextHop, PROTO_TCP, VipKey, v4_addr};
use lb_userspace::dataplane::{Dataplane, Service, ServiceBackend, Sizing};
use serde_json::json;

use super::{
    report::{Bar, Chart, OTHER, OURS, REFERENCE, Report, Table},
    stats::Summary,
};
use crate::topology::{Lab, in_ns};

/// Target: HAProxy spends at least this many times more CPU per request than the load
/// balancer.
pub const TARGET_RATIO: f64 = 5.0;
const VIP: [u8; 4] = [10, 0, 0, 10];

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seconds per load run.
    pub seconds: f64,
    /// Runs per set-up and load, interleaved.
    pub repeats: usize,
    /// wrk connections.
    pub connections: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options { seconds: 8.0, repeats: 5, connections: 32 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Routing,
    Haproxy,
    Lb,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Routing => "kernel routing (baseline)",
            Mode::Haproxy => "HAProxy 2.6, mode tcp",
            Mode::Lb => "lb (XDP)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    Long,
    Short,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Long => "keep-alive",
            Load::Short => "new connection per request",
        }
    }
}

/// One wrk run and the CPU spent during it.
#[derive(Clone, Debug, Default)]
struct Run {
    requests: f64,
    seconds: f64,
    errors: u64,
    latency_ms: [f64; 4],
    /// Busy CPU seconds of the whole machine.
    machine_cpu: f64,
    /// HAProxy's process CPU seconds, or the XDP program's run time.
    direct_cpu: f64,
}

/// Finds what part 3 needs; installs HAProxy and wrk (Debian packages) when missing.
fn tools() -> anyhow::Result<()> {
    let have = |b: &str| std::process::Command::new("sh").args(["-c", &format!("command -v {b}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if have("haproxy") && have("wrk") {
        return Ok(());
    }
    println!("installing haproxy and wrk (Debian packages) for part 3");
    let status = std::process::Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "haproxy", "wrk"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .context("running apt-get")?;
    ensure!(status.success() && have("haproxy") && have("wrk"), "could not install haproxy and wrk");
    Ok(())
}

fn busy_jiffies() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice: busy = all but idle,
    // iowait and the guest fields (already in user).
    ensure!(v.len() >= 8, "short /proc/stat line");
    Ok(v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
}

fn process_jiffies(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm)": state is field 3, utime 14, stime 15 (1-based over the whole line).
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

fn ms(value: &str) -> Option<f64> {
    let (num, unit) = value.split_at(value.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Parses wrk's output: requests, seconds, errors, latency percentiles 50/75/90/99 (ms).
fn parse_wrk(out: &str) -> anyhow::Result<(f64, f64, u64, [f64; 4])> {
    let mut lat = [f64::NAN; 4];
    let (mut requests, mut seconds, mut errors) = (None, None, 0u64);
    for line in out.lines().map(str::trim) {
        for (i, p) in ["50%", "75%", "90%", "99%"].iter().enumerate() {
            if let Some(v) = line.strip_prefix(p) {
                lat[i] = ms(v.trim()).unwrap_or(f64::NAN);
            }
        }
        if line.contains("requests in") {
            let w: Vec<&str> = line.split_whitespace().collect();
            requests = w.first().and_then(|v| v.parse().ok());
            seconds = w.get(3).map(|v| v.trim_end_matches(',')).and_then(ms).map(|m| m / 1000.0);
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            errors += rest.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum::<u64>();
        }
        if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok((requests.context("no request count in wrk's output")?, seconds.context("no duration in wrk's output")?, errors, lat))
}

struct Rig {
    lab: Lab,
    dp: Dataplane,
    links: Vec<XdpLinkId>,
    haproxy: Child,
    config_dir: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.detach();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.haproxy.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.haproxy.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
        let _ = std::fs::remove_dir_all(&self.config_dir);
    }
}

fn in_lb_ns<T: Send>(ns: &str, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let path = format!("/var/run/netns/{ns}");
            let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
    })
}

fn sys_value(ns: &str, path: &str) -> anyhow::Result<String> {
    let out = in_ns(ns, &["cat", path]).output()?;
    ensure!(out.status.success(), "reading {path} in {ns}");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn mac(ns: &str, dev: &str) -> anyhow::Result<[u8; 6]> {
    let s = sys_value(ns, &format!("/sys/class/net/{dev}/address"))?;
    let v: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| anyhow::anyhow!("MAC {s}"))
}

impl Rig {
    fn build() -> anyhow::Result<Rig> {
        let backend_bin = super::sibling_binary("lb-test-backend").unwrap_or_else(|| "/bin/true".into());
        let mut lab = Lab::create(2, &backend_bin)?;
        // The backends' HTTP servers: this binary's `serve` mode (see lb-bench.rs).
        let me = std::env::current_exe()?.display().to_string();
        for k in 0..2 {
            let ns = lab.backends[k].ns.clone();
            lab.spawn(&ns, &[&me, "serve", "0.0.0.0:8080"])?;
            let up = super::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
                in_ns(&ns, &["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
            });
            ensure!(up, "the HTTP server in {ns} did not start");
        }
        let lb_ns = lab.lb_ns.clone();
        // HAProxy's VIP: an address of the load balancer's namespace.
        lab.ns_run(&lb_ns, &["ip", "addr", "add", "10.0.0.10/32", "dev", "lo"])?;
        let config_dir = std::env::temp_dir().join(format!("{lb_ns}-haproxy"));
        std::fs::create_dir_all(&config_dir)?;
        let cfg = config_dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\nfrontend fe\n  bind 10.0.0.10:80\n  default_backend be\nbackend be\n  balance roundrobin\n  server b1 {}:8080\n  server b2 {}:8080\n",
                lab.backends[0].v4, lab.backends[1].v4
            ),
        )?;
        let haproxy = in_ns(&lb_ns, &["haproxy", "-f", &cfg.display().to_string(), "-db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting haproxy")?;

        let mut backends = Vec::new();
        for (k, b) in lab.backends.iter().enumerate() {
            backends.push(ServiceBackend {
                id: k as u32 + 1,
                weight: 1,
                backend: Backend {
                    addr: v4_addr(b.v4.octets()),
                    port: 8080,
                    family: FAMILY_V4,
                    state: BackendState::Up as u8,
                    generation: 1,
                    hop: NextHop {
                        ifindex: sys_value(&lb_ns, &format!("/sys/class/net/{}/ifindex", b.lb_iface))?.parse()?,
                        dst_mac: mac(&b.ns, "eth0")?,
                        src_mac: mac(&lb_ns, &b.lb_iface)?,
                    },
                    ..Backend::default()
                },
            });
        }
        let svc = Service { key: VipKey { addr: v4_addr(VIP), port: 80, proto: PROTO_TCP, family: FAMILY_V4 }, id: 1, flags: 0, udp_idle_secs: lb_common::limits::DEFAULT_UDP_IDLE_SECS, backends };
        let sizing = Sizing { vip_capacity: 4, backend_capacity: 16, hash_seed: 42, ..Sizing::default() };
        let mut dp = Dataplane::load(&sizing).context("loading the data path")?;
        dp.maps.apply_service(&svc)?;
        // The interfaces the program may send through, registered from inside their namespace.
        let ports: Vec<u32> = lab
            .lb_interfaces()
            .iter()
            .map(|i| Ok(sys_value(&lb_ns, &format!("/sys/class/net/{i}/ifindex"))?.parse()?))
            .collect::<anyhow::Result<_>>()?;
        in_lb_ns(&lb_ns, || ports.iter().try_for_each(|&i| dp.maps.add_port(i)))?;
        let rig = Rig { lab, dp, links: Vec::new(), haproxy, config_dir };
        // HAProxy answers on the VIP within 5 s.
        let ok = super::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            in_ns(&rig.lab.client_ns, &["bash", "-c", "exec 3<>/dev/tcp/10.0.0.10/80"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
        });
        ensure!(ok, "HAProxy does not answer on 10.0.0.10:80");
        Ok(rig)
    }

    fn attach(&mut self) -> anyhow::Result<()> {
        if !self.links.is_empty() {
            return Ok(());
        }
        let ns = self.lab.lb_ns.clone();
        let ifaces = self.lab.lb_interfaces();
        let prog = self.dp.program_mut();
        self.links = in_lb_ns(&ns, || {
            ifaces.iter().map(|i| prog.attach(i, XdpMode::Driver).with_context(|| format!("attaching to {i}"))).collect()
        })?;
        Ok(())
    }

    fn detach(&mut self) -> anyhow::Result<()> {
        let links = std::mem::take(&mut self.links);
        if links.is_empty() {
            return Ok(());
        }
        let ns = self.lab.lb_ns.clone();
        let prog = self.dp.program_mut();
        in_lb_ns(&ns, || {
            for l in links {
                prog.detach(l)?;
            }
            Ok(())
        })
    }

    fn url(&self, mode: Mode) -> String {
        match mode {
            Mode::Routing => format!("http://{}:8080/", self.lab.backends[0].v4),
            _ => "http://10.0.0.10:80/".into(),
        }
    }

    fn run(&mut self, mode: Mode, load: Load, opts: &Options) -> anyhow::Result<Run> {
        if mode == Mode::Lb {
            self.attach()?;
        } else {
            self.detach()?;
        }
        let url = self.url(mode);
        let secs = format!("{}s", opts.seconds.round().max(1.0) as u64);
        let conns = opts.connections.to_string();
        let mut args = vec!["wrk", "-t1", "-c", &conns, "-d", &secs, "--latency", "--timeout", "2s"];
        if load == Load::Short {
            args.extend(["-H", "Connection: close"]);
        }
        args.push(&url);
        let prog_before = self.dp.program().info().map(|i| i.run_time()).unwrap_or_default();
        let hap_before = process_jiffies(self.haproxy.id())?;
        let busy_before = busy_jiffies()?;
        let out = in_ns(&self.lab.client_ns, &args).output().context("running wrk")?;
        let busy_after = busy_jiffies()?;
        let hap_after = process_jiffies(self.haproxy.id())?;
        let prog_after = self.dp.program().info().map(|i| i.run_time()).unwrap_or_default();
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "wrk failed: {}", String::from_utf8_lossy(&out.stderr));
        let (requests, seconds, errors, latency_ms) = parse_wrk(&text).with_context(|| format!("wrk output:\n{text}"))?;
        let direct_cpu = match mode {
            Mode::Haproxy => (hap_after - hap_before) as f64 / hz(),
            Mode::Lb => (prog_after - prog_before).as_secs_f64(),
            Mode::Routing => 0.0,
        };
        Ok(Run { requests, seconds, errors, latency_ms, machine_cpu: (busy_after - busy_before) as f64 / hz(), direct_cpu })
    }
}

/// Runs part 3.
pub fn run(opts: &Options, report: &mut Report) -> anyhow::Result<()> {
    tools()?;
    // BPF run-time statistics while the returned fd is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
    let mut rig = Rig::build()?;
    let mut runs: Vec<(Mode, Load, Run)> = Vec::new();
    for _ in 0..opts.repeats.max(1) {
        for load in [Load::Long, Load::Short] {
            for mode in [Mode::Routing, Mode::Haproxy, Mode::Lb] {
                let r = rig.run(mode, load, opts).with_context(|| format!("{} with {}", mode.name(), load.name()))?;
                ensure!(r.requests > 0.0, "{}: no request completed", mode.name());
                runs.push((mode, load, r));
            }
        }
    }
    drop(rig);

    let sel = |m: Mode, l: Load| runs.iter().filter(move |(a, b, _)| *a == m && *b == l).map(|(_, _, r)| r);
    let summary = |m: Mode, l: Load, f: fn(&Run) -> f64| Summary::of(&sel(m, l).map(f).collect::<Vec<_>>());
    let mut table = Table::new(
        &format!("3. HTTP through the load balancer vs HAProxy (wrk, 1 thread, {} connections, {} × {:.0} s per point, medians)", opts.connections, opts.repeats, opts.seconds),
        &["set-up", "load", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors", "direct CPU ms / 1k req", "machine CPU ms / 1k req", "over routing ms / 1k req"],
    );
    let mut chart = Chart { title: "3. CPU per 1,000 requests spent on load balancing (direct)".into(), unit: "ms".into(), ..Chart::default() };
    let mut json_points = Vec::new();
    let mut ratios = Vec::new();
    for load in [Load::Long, Load::Short] {
        let base = summary(Mode::Routing, load, |r| r.machine_cpu / r.requests * 1e6).median;
        let mut direct = [f64::NAN; 3];
        let mut over = [f64::NAN; 3];
        for (i, mode) in [Mode::Routing, Mode::Haproxy, Mode::Lb].into_iter().enumerate() {
            let rps = summary(mode, load, |r| r.requests / r.seconds);
            let lat: Vec<Summary> = (0..4).map(|k| Summary::of(&sel(mode, load).map(|r| r.latency_ms[k]).collect::<Vec<_>>())).collect();
            let errors: u64 = sel(mode, load).map(|r| r.errors).sum();
            let d = summary(mode, load, |r| r.direct_cpu / r.requests * 1e6);
            let m = summary(mode, load, |r| r.machine_cpu / r.requests * 1e6);
            direct[i] = d.median;
            over[i] = m.median - base;
            table.row(vec![
                mode.name().into(),
                load.name().into(),
                format!("{:.0}", rps.median),
                format!("{:.2}", lat[0].median),
                format!("{:.2}", lat[2].median),
                format!("{:.2}", lat[3].median),
                errors.to_string(),
                if mode == Mode::Routing { "-".into() } else { format!("{:.4}", d.median) },
                format!("{:.1}", m.median),
                if mode == Mode::Routing { "-".into() } else { format!("{:+.1}", over[i]) },
            ]);
            if mode != Mode::Routing {
                chart.bars.push(Bar {
                    label: format!("{}, {}", if mode == Mode::Lb { "lb" } else { "HAProxy" }, load.name()),
                    value: d.median,
                    lo: d.p25,
                    hi: d.p75,
                    color: if mode == Mode::Lb { OURS } else { OTHER },
                });
            }
            json_points.push(json!({
                "setup": mode.name(),
                "load": load.name(),
                "requests_per_s": rps.to_json(),
                "latency_ms": {"p50": lat[0].to_json(), "p75": lat[1].to_json(), "p90": lat[2].to_json(), "p99": lat[3].to_json()},
                "errors": errors,
                "direct_cpu_ms_per_1k": d.to_json(),
                "machine_cpu_ms_per_1k": m.to_json(),
                "machine_cpu_over_routing_ms_per_1k": if mode == Mode::Routing { serde_json::Value::Null } else { json!(over[i]) },
            }));
        }
        let ratio = direct[1] / direct[2];
        // The verdict is on whole-machine CPU (all CPUs, softirq included) over routing, medians:
        // the direct ratio leaves out the redirect, transmit and NAPI work XDP causes.
        let machine = over[1] / over[2];
        let verdict = if over[2] <= 0.0 {
            "met: lb's whole-machine cost is within the noise of plain routing".to_owned()
        } else if machine >= TARGET_RATIO {
            format!("met ({machine:.1} ×, whole machine, medians)")
        } else {
            format!("missed ({machine:.1} ×, whole machine, medians)")
        };
        report.target(
            &format!("3. ≥ 5 × less CPU per request than HAProxy ({})", load.name()),
            format!("HAProxy {:+.1} vs lb {:+.1} ms per 1,000 requests over routing", over[1], over[2]),
            verdict,
        );
        table.note(format!(
            "{}: HAProxy / lb CPU per request = {:.0} × (direct); machine CPU over routing: HAProxy {:+.1}, lb {:+.1} ms per 1,000 requests",
            load.name(),
            ratio,
            over[1],
            over[2]
        ));
        ratios.push(json!({"load": load.name(), "direct_ratio": ratio, "machine_over_routing": {"haproxy": over[1], "lb": over[2]}}));
    }
    chart.bars.iter_mut().for_each(|b| if b.color == REFERENCE { b.color = OTHER });
    table.note("direct CPU: HAProxy's process time against the XDP program's own run time (BPF statistics); machine CPU: busy time of all CPUs (/proc/stat) per request; \"over routing\" subtracts the same figure with plain kernel routing in the middle (client to one backend directly). The machine is shared, so the machine figures carry the noise of other work; the direct ones do not");
    table.note("routing and lb are limited by the 2 cores shared by wrk, the servers and the load balancer, so requests/s compare the set-ups' total cost; CPU per request compares the load balancing itself");
    report.table(table);
    report.charts.push(chart);
    report.json.insert(
        "proxy".into(),
        json!({"connections": opts.connections, "seconds": opts.seconds, "repeats": opts.repeats, "points": json_points, "ratios": ratios}),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk() {
        let out = "Running 1s test @ http://10.0.0.10:80/\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   690.53us  300.00us   5.00ms   90.00%\n  Latency Distribution\n     50%  650.00us\n     75%  800.00us\n     90%    1.10ms\n     99%    2.00ms\n  45000 requests in 1.00s, 5.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  45000.00\n";
        let (req, secs, errors, lat) = parse_wrk(out).unwrap();
        assert_eq!((req, secs, errors), (45000.0, 1.0, 3));
        assert_eq!(lat, [0.65, 0.8, 1.1, 2.0]);
    }
}
