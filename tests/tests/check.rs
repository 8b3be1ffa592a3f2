//! `lb check --config FILE [VIP...]` (issue 17, item 8) against the real agent in a lab: per
//! VIP, answered by the agent while it answers and by the pinned data path while it does not
//! (stopped, killed, frozen, restarting), within the grace period after its last heartbeat;
//! failing for a VIP without a backend taking new flows, for an unknown name, after the grace
//! period, and once the data path is gone. Needs root.

use std::{
    process::Output,
    thread,
    time::{Duration, Instant},
};

use lb_common::limits::{CHECK_AGENT_TIMEOUT_MS, CHECK_GRACE_MS};
use lb_tests::{
    agent::{Agent, in_netns, lb_binary},
    lab_config::{LabConfig, Vip},
    topology::Lab,
};
use serde_json::Value;

/// VIP web on the lab's three backends; VIP dead on web's address, another port, with one
/// backend on a port nothing listens on: its health check never passes.
fn config() -> String {
    LabConfig::new()
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"]))
        .vip(Vip::tcp("dead", "10.0.0.10", 81).backends(&["10.0.11.2:9999"]))
        .render()
}

/// `lb check --config FILE ARGS...` in the load balancer's namespace, as a track script runs it.
fn check(lab: &Lab, agent: &Agent, args: &[&str]) -> Output {
    let (lb, config) = (lb_binary().display().to_string(), agent.config.display().to_string());
    let mut all = vec![lb.as_str(), "check", "--config", config.as_str()];
    all.extend_from_slice(args);
    in_netns(&lab.lb_ns, &all).output().expect("running lb check")
}

/// `check` with `--json`: exit code and report.
fn report(lab: &Lab, agent: &Agent, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = check(lab, agent, &all);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("lb check {args:?}: {e}: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The VIP lines of a text report (the first line says what answered).
fn vip_lines(out: &Output) -> Vec<String> {
    text(out).lines().skip(1).map(str::to_owned).collect()
}

fn source(r: &Value) -> &str {
    r["source"].as_str().unwrap_or("?")
}

fn signal(agent: &Agent, sig: i32) {
    let pid = agent.pid().expect("the agent runs") as i32;
    // SAFETY: kill(2) on our own, unreaped child.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Per VIP, from the agent: web passes; dead (its address has web's backends, but it has none
/// of its own) fails; an unknown name fails. With the agent frozen (SIGSTOP: it accepts, never
/// answers), killed (SIGKILL) or stopped (SIGTERM), the data path answers the same, with the
/// heartbeat's age, until the grace period after the last heartbeat; a restart loop polled
/// every 100 ms never fails, nor does a restart that applies an edited file; a missing link or
/// a removed data path fails.
#[test]
fn lb_check_answers_per_vip_from_the_agent_or_else_from_the_pinned_data_path_within_the_grace_period() {
    let (lab, mut agent) =
        lb_tests::agent::lab_with_agent(env!("CARGO_BIN_EXE_lb-test-backend").as_ref(), 3, &config(), "web").expect("a lab whose backends pass their checks");

    // The agent answers.
    let web = check(&lab, &agent, &["web"]);
    assert_eq!(web.status.code(), Some(0), "{web:?}");
    assert_eq!(text(&web), format!("answered by the agent at {}\nweb: serving (3 backends take new flows)\n", agent.socket.display()));
    let dead = check(&lab, &agent, &["dead"]);
    assert_eq!((dead.status.code(), vip_lines(&dead)), (Some(1), vec!["dead: NOT serving (no backend takes new flows)".to_owned()]));
    let nope = check(&lab, &agent, &["web", "nope"]);
    assert_eq!(nope.status.code(), Some(1));
    assert_eq!(vip_lines(&nope)[1], "nope: NOT serving (no such VIP on the agent)");
    assert_eq!(check(&lab, &agent, &[]).status.code(), Some(1), "all VIPs: dead is not served");
    // Plain `lb check` without --config asks the agent too.
    let plain = agent.cli(&["check", "web"]);
    assert_eq!(plain.status.code(), Some(0), "{plain:?}");

    // A frozen agent: the data path answers within the timeout.
    signal(&agent, libc::SIGSTOP);
    let started = Instant::now();
    let (code, r) = report(&lab, &agent, &["web"]);
    let took = started.elapsed();
    let (dead_code, dead_report) = report(&lab, &agent, &["dead"]);
    let (nope_code, nope_report) = report(&lab, &agent, &["nope"]);
    signal(&agent, libc::SIGCONT);
    eprintln!("frozen agent: lb check answered from the data path in {took:?}: {}", r["detail"]);
    assert_eq!((code, source(&r)), (Some(0), "data_path"), "{r:#}");
    assert!(r["detail"].as_str().unwrap().contains(&format!("no answer within {CHECK_AGENT_TIMEOUT_MS} ms")), "{r:#}");
    assert_eq!(r["vips"][0]["reason"], "3 backends take new flows");
    assert!(r["heartbeat_age_ms"].as_u64().is_some_and(|a| a <= CHECK_GRACE_MS), "{r:#}");
    assert_eq!((dead_code, source(&dead_report)), (Some(1), "data_path"));
    assert_eq!(dead_report["vips"][0]["reason"], "no backend takes new flows", "read from the maps: {dead_report:#}");
    assert_eq!(nope_code, Some(1));
    assert_eq!(nope_report["vips"][0]["reason"], format!("no such VIP in {}", agent.config.display()));

    // Killed: the data path answers; started again: the agent answers.
    agent.stop(libc::SIGKILL);
    let (code, r) = report(&lab, &agent, &["web"]);
    assert_eq!((code, source(&r)), (Some(0), "data_path"), "after SIGKILL: {r:#}");
    agent.spawn().expect("restart");
    let (code, r) = report(&lab, &agent, &["web"]);
    assert_eq!((code, source(&r)), (Some(0), "agent"), "{r:#}");

    // A restart (SIGTERM, 2 s away, start again) polled as a track script would, every 100 ms.
    let poll = |lab: &Lab, agent: &Agent, until: Instant| {
        let mut results = Vec::new();
        while Instant::now() < until {
            let (code, r) = report(lab, agent, &["web"]);
            results.push((code, source(&r).to_owned(), r["detail"].as_str().unwrap_or("").to_owned()));
            thread::sleep(Duration::from_millis(100));
        }
        results
    };
    agent.stop(libc::SIGTERM);
    let away = poll(&lab, &agent, Instant::now() + Duration::from_secs(2));
    let restarted = Instant::now();
    agent.spawn().expect("restart");
    let restart_took = restarted.elapsed();
    let back = poll(&lab, &agent, Instant::now() + Duration::from_millis(500));
    let failed: Vec<_> = away.iter().chain(&back).filter(|(code, ..)| *code != Some(0)).collect();
    eprintln!(
        "restart: {} checks while the agent was away (data path), {} after its start ({restart_took:?}); failed: {}",
        away.len(),
        back.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "lb check failed during the restart: {failed:?}");
    assert!(away.iter().all(|(_, s, _)| s == "data_path"), "{away:?}");
    assert_eq!(back.last().map(|(_, s, _)| s.as_str()), Some("agent"));

    // A restart that applies an edited file: while the agent is away, a VIP only the file has
    // (not in the maps yet) is listed but not counted; dead, removed from the file, is not asked.
    agent.stop(libc::SIGTERM);
    let edited = LabConfig::new()
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"]))
        .vip(Vip::tcp("new", "10.0.0.10", 82).backends(&["10.0.12.2:9998"]))
        .render();
    agent.rewrite_config(&edited).expect("rewriting the configuration");
    let (code, r) = report(&lab, &agent, &[]);
    assert_eq!((code, source(&r)), (Some(0), "data_path"), "{r:#}");
    assert_eq!(r["vips"].as_array().map(Vec::len), Some(1), "only web: {r:#}");
    let note = format!("not in its maps, not counted (added to {} since the agent last ran?): new", agent.config.display());
    assert!(r["detail"].as_str().unwrap().ends_with(&note), "{r:#}");
    agent.spawn().expect("restart with the edited file");

    // Stopped for good: the data path answers until the grace period after the last heartbeat.
    agent.stop(libc::SIGTERM);
    let stopped = Instant::now();
    let limit = Duration::from_millis(CHECK_GRACE_MS) + Duration::from_secs(5);
    let (mut last_pass, mut first_fail) = (None, None);
    while first_fail.is_none() && stopped.elapsed() < limit {
        let (code, r) = report(&lab, &agent, &["web"]);
        match code {
            Some(0) => last_pass = Some(stopped.elapsed()),
            _ => first_fail = Some((stopped.elapsed(), r)),
        }
        thread::sleep(Duration::from_millis(200));
    }
    let (failed_at, r) = first_fail.unwrap_or_else(|| panic!("lb check still passed {limit:?} after the agent stopped"));
    eprintln!("stopped agent: lb check passed until {last_pass:?}, failed from {failed_at:?} after the stop (grace {CHECK_GRACE_MS} ms): {}", r["vips"][0]["reason"]);
    assert!(last_pass.is_some_and(|p| p >= Duration::from_millis(CHECK_GRACE_MS / 2)), "passed only until {last_pass:?}");
    assert_eq!(source(&r), "data_path");
    let grace = format!("beyond the {:.1} s grace period", CHECK_GRACE_MS as f64 / 1000.0);
    assert!(r["vips"][0]["reason"].as_str().unwrap().contains(&grace), "{r:#}");

    // The data path gone: a link unpinned (the program leaves that interface), then everything.
    agent.spawn().expect("restart");
    agent.stop(libc::SIGTERM);
    std::fs::remove_file(agent.pin_dir.join("links/lbb3")).expect("unpinning lbb3's link");
    let (code, r) = report(&lab, &agent, &["web"]);
    assert_eq!((code, r["vips"][0]["reason"].as_str()), (Some(1), Some("no pinned link on lbb3")), "{r:#}");
    let out = agent.teardown();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, r) = report(&lab, &agent, &["web"]);
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["vips"][0]["reason"], format!("no data path is pinned at {}", agent.pin_dir.display()));
}
