//! The Grafana dashboard (`examples/grafana/lb-dashboard.json`) against the lab: the real agent
//! with traffic through two VIPs and a health flip on each, scraped every second by a real
//! `prometheus` in the load balancer's namespace. Every query of every panel must answer with
//! data, the VIP variable must list the lab's VIPs, every `lb_*` metric the dashboard names must
//! be in the agent's scrape, and the web VIP's packet rate must be above zero. Grafana itself is
//! not run. With `LB_RENDER_DASHBOARD=PATH` (relative to the workspace) the run is longer and
//! ends by drawing the panels into PATH with `scripts/render-dashboard.py`. Needs root and
//! `prometheus` on PATH.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use lb_tests::{
    agent::{Agent, all_in_state, in_netns},
    lab_config::{LabConfig, Vip},
    prometheus_server::{PrometheusServer, unix_now},
    topology::{HttpSession, Lab, http_get, in_namespace},
};
use serde_json::Value;

/// Grafana's `$__rate_interval` at a 1 s scrape interval: four scrape intervals.
const RATE_INTERVAL: &str = "4s";
/// The agent's metrics address inside the load balancer's namespace.
const METRICS: &str = "127.0.0.1:9100";
/// Longest the panels' queries may take to all answer with data.
const DATA_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a traffic client runs, whatever happens to the test.
const TRAFFIC_LIMIT: Duration = Duration::from_secs(300);

/// The agent's configuration: VIP web on two backends and VIP api on the third, the lab's fast
/// HTTP checks ([`Vip`]), metrics on [`METRICS`], VIP routes announced in routing table 100.
fn config() -> String {
    LabConfig::new()
        .conn_capacity(16384)
        .global("metrics_address: 127.0.0.1:9100")
        .global("announce_table: 100")
        .vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080"]))
        .vip(Vip::tcp("api", "10.0.0.10", 8081).backends(&["10.0.13.2:8080"]))
        .render()
}

fn web() -> SocketAddr {
    "10.0.0.10:80".parse().unwrap()
}

fn api() -> SocketAddr {
    "10.0.0.10:8081".parse().unwrap()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned()
}

/// One query of one panel.
#[derive(Debug)]
struct PanelQuery {
    panel: String,
    expr: String,
    legend: String,
}

/// Every target with an expression, in rows too.
fn panel_queries(panels: &Value, out: &mut Vec<PanelQuery>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?}: a target without an expression: {target}"));
            out.push(PanelQuery { panel: title.clone(), expr: expr.to_owned(), legend: target["legendFormat"].as_str().unwrap_or("").to_owned() });
        }
        panel_queries(&panel["panels"], out);
    }
}

/// What Grafana would send for `expr` with VIP `vip` selected.
fn substitute(expr: &str, vip: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL).replace("${vip}", vip).replace("$vip", vip)
}

/// The `lb_*` metric names in a query.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    expr.split(|c: char| !word(c)).filter(|w| w.starts_with("lb_")).map(str::to_owned).collect()
}

/// The labels a legend format names (`{{vip}} {{backend}}`).
fn legend_labels(legend: &str) -> Vec<String> {
    legend.split("{{").skip(1).filter_map(|s| s.split_once("}}")).map(|(l, _)| l.trim().to_owned()).collect()
}

/// Panics unless the dashboard is importable as the README says: a Prometheus datasource
/// input, schema 39, only time series, stat and table panels, each on that datasource.
fn check_structure(dashboard: &Value) {
    assert_eq!(dashboard["schemaVersion"], 39);
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"), "{inputs:?}");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = &panel["title"];
        assert!(["timeseries", "stat", "table"].contains(&panel["type"].as_str().unwrap_or("")), "panel {title}: type {}", panel["type"]);
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title}");
        assert!(ids.insert(panel["id"].as_u64().expect("a panel id")), "panel {title}: id repeated");
        assert!(panel["targets"].as_array().is_some_and(|t| !t.is_empty()), "panel {title} has no query");
    }
}

/// The agent's scrape, from inside the load balancer's namespace.
fn scrape(lab: &Lab) -> String {
    let text = in_namespace(&lab.lb_ns, || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(METRICS).expect("the metrics address");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
    .unwrap();
    text.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_owned())
}

/// Clients in the client namespace opening a new HTTP connection per request to their VIP,
/// at a rate that swings by half over 40 s, until stopped (at most [`TRAFFIC_LIMIT`]).
struct Traffic {
    stop: Arc<AtomicBool>,
    clients: Vec<(SocketAddr, JoinHandle<(u64, u64)>)>,
}

impl Traffic {
    fn start(ns: &str, targets: &[(SocketAddr, f64)]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = targets
            .iter()
            .map(|&(addr, per_second)| {
                let (ns, stop) = (ns.to_owned(), stop.clone());
                let client = thread::spawn(move || {
                    in_namespace(&ns, move || {
                        let (started, mut ok, mut failed) = (Instant::now(), 0, 0);
                        while !stop.load(Ordering::Relaxed) && started.elapsed() < TRAFFIC_LIMIT {
                            match http_get(addr, "/", Duration::from_millis(500)) {
                                Ok((200, _)) => ok += 1,
                                _ => failed += 1,
                            }
                            let swing = 1.0 + 0.5 * (started.elapsed().as_secs_f64() * std::f64::consts::TAU / 40.0).sin();
                            thread::sleep(Duration::from_secs_f64(1.0 / (per_second * swing)));
                        }
                        (ok, failed)
                    })
                    .unwrap_or_default()
                });
                (addr, client)
            })
            .collect();
        Traffic { stop, clients }
    }

    /// Stops the clients: each one's answered and failed requests.
    fn finish(&mut self) -> Vec<(SocketAddr, (u64, u64))> {
        self.stop.store(true, Ordering::Relaxed);
        self.clients.drain(..).map(|(addr, client)| (addr, client.join().unwrap_or_default())).collect()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Kills backend `k` of VIP `vip`, waits until the agent takes it out, keeps it down for `hold`,
/// then restarts it and waits until every backend of `vip` is up again.
fn flip(lab: &mut Lab, agent: &Agent, k: usize, vip: &str, hold: Duration) {
    lab.kill_backend(k);
    agent.wait_status(Duration::from_secs(5), |s| !all_in_state(s, vip, "up")).expect("the killed backend is taken out");
    thread::sleep(hold);
    lab.start_backend(k).expect("the backend restarts");
    agent.wait_status(Duration::from_secs(10), |s| all_in_state(s, vip, "up")).expect("the backend comes back");
}

/// Queries every panel's expressions until all answer with data (at most [`DATA_TIMEOUT`]);
/// each query's result. A query Prometheus refuses fails at once.
fn answers(prometheus: &PrometheusServer, queries: &[PanelQuery], vip: &str) -> Vec<Vec<Value>> {
    let deadline = Instant::now() + DATA_TIMEOUT;
    for _ in 0..(DATA_TIMEOUT.as_secs() + 1) {
        let results: Vec<Vec<Value>> = queries
            .iter()
            .map(|q| {
                let expr = substitute(&q.expr, vip);
                prometheus.query(&expr).unwrap_or_else(|e| panic!("panel {:?}: {expr}: {e:#}", q.panel))
            })
            .collect();
        let empty: Vec<String> = queries.iter().zip(&results).filter(|(_, r)| r.is_empty()).map(|(q, _)| format!("{:?}: {}", q.panel, q.expr)).collect();
        if empty.is_empty() {
            return results;
        }
        assert!(Instant::now() < deadline, "no data within {DATA_TIMEOUT:?} for:\n  {}", empty.join("\n  "));
        thread::sleep(Duration::from_secs(1));
    }
    panic!("the panels' queries did not all answer with data");
}

#[test]
fn every_dashboard_panel_has_data_from_the_lab() {
    let started = Instant::now();
    let render = std::env::var_os("LB_RENDER_DASHBOARD").map(|p| workspace().join(p));
    // Rendering wants minutes of history to draw; the check needs only a few seconds.
    let phase = if render.is_some() { Duration::from_secs(20) } else { Duration::from_secs(3) };
    let file = workspace().join("examples/grafana/lb-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("the dashboard")).expect("the dashboard is JSON");
    check_structure(&dashboard);
    let mut queries = Vec::new();
    panel_queries(&dashboard["panels"], &mut queries);

    let (mut lab, agent) = lb_tests::agent::lab_with_agent(env!("CARGO_BIN_EXE_lb-test-backend").as_ref(), 3, &config(), "web").expect("a lab whose backends pass their checks");
    agent.wait_status(Duration::from_secs(10), |s| all_in_state(s, "api", "up")).expect("the api VIP's backend is up");
    let prometheus = PrometheusServer::start(&lab.lb_ns, &[METRICS]).expect("prometheus");
    let _sessions: Vec<HttpSession> = (0..4).map(|_| HttpSession::open(&lab.client_ns, web(), Duration::from_secs(5)).expect("a keep-alive connection")).collect();
    let mut traffic = Traffic::start(&lab.client_ns, &[(web(), 80.0), (api(), 30.0)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !prometheus.query("up{job=\"lb\"} == 1").is_ok_and(|r| !r.is_empty()) {
        assert!(Instant::now() < deadline, "prometheus did not scrape the agent within 20 s: {}", prometheus.log());
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(phase);
    flip(&mut lab, &agent, 1, "web", phase / 2);
    thread::sleep(phase);
    // api's only backend: its VIP drops while it is out.
    flip(&mut lab, &agent, 2, "api", phase / 2);
    thread::sleep(phase);

    let results = answers(&prometheus, &queries, "web");
    for (q, result) in queries.iter().zip(&results) {
        for label in legend_labels(&q.legend) {
            assert!(
                result.iter().all(|series| series["metric"][label.as_str()].is_string()),
                "panel {:?}: the legend names {label}, which {} lacks: {result:?}",
                q.panel,
                q.expr
            );
        }
    }
    let packets: Vec<usize> = (0..queries.len()).filter(|&i| queries[i].expr.contains("lb_vip_packets_total")).collect();
    assert_eq!(packets.len(), 1, "one query of packets per VIP");
    let rate = results[packets[0]].iter().find(|s| s["metric"]["vip"] == "web").and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok());
    assert!(rate.is_some_and(|r| r > 0.0), "the web VIP's packet rate: {:?}", results[packets[0]]);

    let variable = dashboard["templating"]["list"].as_array().and_then(|l| l.iter().find(|v| v["name"] == "vip")).expect("a vip variable");
    let definition = variable["definition"].as_str().expect("the variable's query");
    let (metric, label) = definition
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|s| s.split_once(','))
        .unwrap_or_else(|| panic!("not label_values(metric, label): {definition}"));
    let values = prometheus.api(&format!("/api/v1/label/{}/values?match[]={}", label.trim(), metric.trim())).expect("the variable's values");
    for vip in ["web", "api"] {
        assert!(values.as_array().is_some_and(|v| v.iter().any(|x| x == vip)), "{definition} lists {values}, not {vip}");
    }

    let body = scrape(&lab);
    let families = lb_tests::prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let names: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(&q.expr)).chain(metric_names(definition)).collect();
    let missing: Vec<&String> = names.iter().filter(|n| !families.contains_key(*n)).collect();
    assert!(missing.is_empty(), "metrics the dashboard uses that the agent does not export: {missing:?}");

    if let Some(output) = &render {
        let script = workspace().join("scripts/render-dashboard.py");
        let (url, start, end) = (prometheus.url(), format!("{:.0}", prometheus.started), format!("{:.0}", unix_now()));
        let out = in_netns(&lab.lb_ns, &[
            "/usr/bin/python3", &script.display().to_string(), "--prometheus", &url, "--dashboard", &file.display().to_string(),
            "--output", &output.display().to_string(), "--start", &start, "--end", &end, "--rate-interval", RATE_INTERVAL,
        ])
        .output()
        .expect("running the renderer");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let png = std::fs::read(output).expect("the rendered dashboard");
        assert!(png.starts_with(b"\x89PNG"), "{} is not a PNG", output.display());
        eprintln!("rendered {} panels into {}", dashboard["panels"].as_array().map_or(0, Vec::len), output.display());
    }
    for (addr, (ok, failed)) in traffic.finish() {
        eprintln!("traffic to {addr}: {ok} answered, {failed} failed (the flips)");
    }
    eprintln!("{} queries of {} metrics answered with data; {:.1} s", queries.len(), names.len(), started.elapsed().as_secs_f64());
}
