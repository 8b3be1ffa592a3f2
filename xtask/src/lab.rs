//! `cargo xtask lab`: the load balancer end to end on one host. Clients, the load balancer and
//! three backends in network namespaces; the lesson's story told with live progress: spreading
//! requests, a backend dying and the health check steering around it, its recovery, and a
//! drain that keeps a long-lived connection. With `--dsr [--mode M]` the same story in direct
//! server return (`crate::dsr_lab`), followed by the proof that the replies bypassed the load
//! balancer.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    agent::{Agent, backends},
    dsr_lab,
    topology::{HttpSession, Lab, http_get, in_namespace},
};

/// The VIP of the lab's web pool.
const WEB: &str = "10.0.0.10:80";
/// The lab configuration shipped in the repository.
const LAB_CONFIG: &str = "examples/lab.yaml";
/// The admin socket path in the shipped configuration; each run uses its own.
const SHIPPED_SOCKET: &str = "/run/lb/lab.sock";

fn web() -> SocketAddr {
    WEB.parse().expect("constant address")
}

fn step(n: u32, title: &str) {
    println!("\n\x1b[1m== {n}. {title}\x1b[0m");
}

/// Sends `n` requests from the client; counts answers per backend and failures.
fn spread(lab: &Lab, n: usize) -> anyhow::Result<(BTreeMap<String, usize>, usize)> {
    in_namespace(&lab.client_ns, move || {
        let mut seen = BTreeMap::new();
        let mut failed = 0;
        for _ in 0..n {
            match http_get(web(), "/", Duration::from_secs(2)) {
                Ok((200, body)) => *seen.entry(body.trim().to_owned()).or_insert(0) += 1,
                _ => failed += 1,
            }
        }
        (seen, failed)
    })
}

fn print_counts(seen: &BTreeMap<String, usize>, failed: usize) {
    let total: usize = seen.values().sum::<usize>() + failed;
    println!("   {:<8} {:>8} {:>7}", "backend", "requests", "share");
    for (name, n) in seen {
        println!("   {name:<8} {n:>8} {:>6.1}%", 100.0 * *n as f64 / total.max(1) as f64);
    }
    if failed > 0 {
        println!("   {:<8} {failed:>8}", "failed");
    }
}

fn backend_field(agent: &Agent, endpoint: &str, field: &str) -> String {
    let Ok(status) = agent.json(&["status"]) else {
        return "?".into();
    };
    backends(&status, "web")
        .into_iter()
        .find(|b| format!("{}:{}", b["address"].as_str().unwrap_or(""), b["port"]) == endpoint)
        .map(|b| b[field].as_str().unwrap_or("?").to_owned())
        .unwrap_or_else(|| "?".into())
}

/// Runs the lab, in NAT mode or, with `dsr`, in that direct server return mode; with `keep`,
/// leaves it running until Ctrl-C.
pub fn run(root: &Path, keep: bool, dsr: Option<&str>) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    let bins = root.join("target/debug");
    let mut summary: Vec<(String, String)> = Vec::new();
    summary.push(("forwarding mode".into(), dsr.map_or_else(|| "nat".to_owned(), |m| format!("{m} (direct server return)"))));

    let (mut lab, agent) = match dsr {
        None => {
            step(1, "The set-up: a client, the load balancer and a pool of three servers");
            let yaml = std::fs::read_to_string(root.join(LAB_CONFIG)).context("reading the lab configuration")?;
            let mut lab = Lab::create(3, &bins.join("lb-test-backend"))?;
            for k in 0..3 {
                lab.start_backend(k)?;
            }
            lab.start_server(2, "img3", 9090)?;
            println!("   client {}  →  load balancer {} (XDP on {})  →  backends {}", lab.client_ns, lab.lb_ns, lab.lb_interfaces().join(", "),
                lab.backends.iter().map(|b| format!("{} {}", b.name, b.v4)).collect::<Vec<_>>().join(", "));
            let agent = Agent::start(&lab, &yaml.replace(SHIPPED_SOCKET, "{socket}"))?;
            println!("   agent started with {LAB_CONFIG}; waiting for the health checks to pass");
            (lab, agent)
        }
        Some(mode) => {
            step(1, &format!("The set-up in direct server return, {mode} mode: a client behind a router, the load balancer, three servers answering through the router"));
            dsr_lab::set_up(root, mode, &bins.join("lb-test-backend"), SHIPPED_SOCKET)?
        }
    };
    agent.wait_status(Duration::from_secs(15), |s| crate::agent::all_in_state(s, "web", "up"))?;
    print!("{}", String::from_utf8_lossy(&agent.cli(&["status"]).stdout));

    step(2, "Clients never talk to the servers: the load balancer spreads them over the pool");
    let (seen, failed) = spread(&lab, 300)?;
    print_counts(&seen, failed);
    summary.push(("spread 300 requests".into(), format!("{seen:?}, {failed} failed")));
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }

    step(3, "Health checks: server b2 dies; the load balancer steers around it");
    let victim = format!("{}:{}", lab.backends[1].v4, lab.backend_port);
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let running = running.clone();
        let ns = lab.client_ns.clone();
        thread::spawn(move || {
            in_namespace(&ns, move || {
                let mut log = Vec::new();
                let started = Instant::now();
                while running.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(30) {
                    let at = Instant::now();
                    let answer = http_get(web(), "/", Duration::from_millis(500)).ok().map(|(_, b)| b.trim().to_owned());
                    log.push((at, answer));
                    thread::sleep(Duration::from_millis(10));
                }
                log
            })
        })
    };
    thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    lab.kill_backend(1);
    println!("   b2 killed; requests keep coming (one every 10 ms)");
    let deadline = killed + Duration::from_secs(10);
    while backend_field(&agent, &victim, "health") != "down" {
        if Instant::now() > deadline {
            bail!("b2 was not marked down within 10 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let detected = killed.elapsed();
    let swap = agent.json(&["stats"]).ok().and_then(|s| s["health"]["last_probe_to_swap_ms"].as_f64());
    println!("   b2 marked down {:.0} ms after it died; probe → swapped ring {:.2} ms", detected.as_secs_f64() * 1000.0, swap.unwrap_or(f64::NAN));
    thread::sleep(Duration::from_secs(1));
    running.store(false, Ordering::SeqCst);
    let log = load.join().map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let down_at = killed + detected;
    let failed_in_window = log.iter().filter(|(at, a)| a.is_none() && *at >= killed && *at <= down_at).count();
    let after: Vec<_> = log.iter().filter(|(at, _)| *at > down_at).collect();
    let to_dead_after = after.iter().filter(|(_, a)| a.as_deref() == Some("b2")).count();
    let failed_after = after.iter().filter(|(_, a)| a.is_none()).count();
    println!("   {} requests during the run; {failed_in_window} failed while b2 was dead but not yet detected;", log.len());
    println!("   after detection: {} requests, {to_dead_after} sent to b2, {failed_after} failed", after.len());
    summary.push(("failure detected".into(), format!("{:.0} ms after the kill, probe→swap {:.2} ms", detected.as_secs_f64() * 1000.0, swap.unwrap_or(f64::NAN))));
    summary.push(("requests failed in the detection window".into(), failed_in_window.to_string()));
    summary.push(("requests to b2 / failed after detection".into(), format!("{to_dead_after} / {failed_after}")));
    let (seen, failed) = spread(&lab, 150)?;
    print_counts(&seen, failed);
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }

    step(4, "Self-healing: b2 comes back and rejoins the pool");
    let restarted = Instant::now();
    lab.start_backend(1)?;
    let deadline = restarted + Duration::from_secs(10);
    while backend_field(&agent, &victim, "state") != "up" {
        if Instant::now() > deadline {
            bail!("b2 did not come back within 10 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let back = restarted.elapsed();
    println!("   b2 up again {:.0} ms after it restarted", back.as_secs_f64() * 1000.0);
    let (seen, failed) = spread(&lab, 300)?;
    print_counts(&seen, failed);
    summary.push(("recovery".into(), format!("b2 up {:.0} ms after restart; then {seen:?}", back.as_secs_f64() * 1000.0)));

    step(5, "Drain: a long-lived connection stays, new connections go elsewhere");
    let session = HttpSession::open(&lab.client_ns, web(), Duration::from_secs(3))?;
    let (_, owner) = session.get("/")?;
    let owner_ip = lab.backends.iter().find(|b| b.name == owner).map(|b| b.v4).context("unknown backend")?;
    let endpoint = format!("{owner_ip}:{}", lab.backend_port);
    println!("   a keep-alive connection is served by {owner}; draining {endpoint}");
    let out = agent.cli(&["backend", "drain", "web", &endpoint]);
    anyhow::ensure!(out.status.success(), "drain failed: {}", String::from_utf8_lossy(&out.stderr));
    let (seen, failed) = spread(&lab, 100)?;
    print_counts(&seen, failed);
    let mut kept = 0;
    for _ in 0..20 {
        if session.get("/").map(|(_, b)| b == owner).unwrap_or(false) {
            kept += 1;
        }
    }
    println!("   the long-lived connection answered 20 more requests: {kept} from {owner}");
    summary.push(("drain".into(), format!("long-lived connection kept {kept}/20 on {owner}; new: {seen:?}")));
    let _ = agent.cli(&["backend", "undrain", "web", &endpoint]);

    if let Some(mode) = dsr {
        step(6, &format!("Direct server return ({mode}): the replies bypass the load balancer"));
        let (lines, _) = dsr_lab::prove_bypass(root, &lab, &agent, mode)?;
        summary.extend(lines);
    }

    println!("\n\x1b[1m== Summary\x1b[0m");
    for (what, result) in &summary {
        println!("   {what:<42} {result}");
    }

    if keep {
        println!("\nThe lab keeps running. Try:");
        println!("   ip netns exec {} curl -s http://{WEB}/", lab.client_ns);
        println!("   {} --socket {} status", bins.join("lb").display(), agent.socket.display());
        println!("   ip netns exec {} bash     # a shell on the load balancer", lab.lb_ns);
        println!("Ctrl-C removes everything.");
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(200));
        }
    }
    println!("\nRemoving the lab (namespaces, agent, servers).");
    Ok(())
}
