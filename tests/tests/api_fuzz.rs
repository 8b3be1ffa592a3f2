//! A mutation fuzzer for the admin API, against the real agent in a lab (network namespaces,
//! driver-mode XDP on veths; needs root). Valid requests of every route (status, stats,
//! config, and the commands: backend add/remove/state/weight, VIP add/remove, explain,
//! reload; not teardown, which stops the agent as documented) are mutated by a seeded
//! generator: methods, paths, versions, headers (Content-Length wrong, huge, negative,
//! duplicated; Transfer-Encoding; malformed lines), JSON bodies (wrong types, huge numbers,
//! unknown ids, deep nesting, truncation, invalid UTF-8), pipelined requests, and sent on the
//! admin socket, each followed by a half-close.
//!
//! Invariants, held for every request ([`response_problem`], [`effect_problem`]):
//! - one well-formed answer (status line, `Content-Length` equal to the body), or none only
//!   for a request that never completed (its head unfinished or its body shorter than
//!   declared);
//! - a refusal is a 4xx (or 501/505 for Transfer-Encoding and HTTP versions the server does
//!   not speak, never a 500) whose body names what is wrong: `{"error": ...}` or
//!   `HTTP NNN: ...`, the reason at least three words;
//! - a refused request changes nothing (`GET /v1/config` is the same before and after); an
//!   accepted command takes effect as documented;
//! - the agent never exits and never logs a panic; at the end a plain `lb reload` brings back
//!   the file's pools and the VIP is served by all three backends.
//!
//! Replay: `LB_FUZZ_SEED=S LB_FUZZ_CASE=I` runs case `I` of seed `S` alone (printed);
//! `LB_FUZZ_CASES=N` runs more (or fewer).

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use lb_common::limits::MAX_WEIGHT;
use lb_tests::{
    agent::{Agent, all_in_state, lab_with_agent},
    fuzz::cases::Cases,
    lab_config::{LabConfig, Vip},
    topology::{Lab, http_get, in_namespace},
};
use lb_userspace::api::{Request, client::Client};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

const DEFAULT_SEED: u64 = 0xa91_f022;
const DEFAULT_CASES: u64 = 3_000;
/// The run stops (and says so) after this long, whatever the count.
const TIME_LIMIT: Duration = Duration::from_secs(120);


fn config() -> String {
    LabConfig::new().vip(Vip::tcp("web", "10.0.0.10", 80).backends(&["10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080"])).render()
}

const VIPS: &[&str] = &["web", "web", "fz", "nope", "", "WEB", "web ", "wéb"];
const BACKENDS: &[&str] = &[
    "10.0.11.2:8080", "10.0.12.2:8080", "10.0.13.2:8080", "10.0.11.2:9000", "10.0.12.2:9001", "[fd00::1]:80", "10.0.11.2:0",
    "0.0.0.0:80", "255.255.255.255:80", "224.0.0.1:80", "127.0.0.1:80", "10.0.0.10:80",
];

/// A valid request body for one of the commands.
fn command(rng: &mut ChaCha8Rng) -> Value {
    let vip = *VIPS.choose(rng).unwrap_or(&"web");
    let backend = *BACKENDS.choose(rng).unwrap_or(&"10.0.11.2:8080");
    let weight = *[0u32, 1, 5, 100, MAX_WEIGHT].choose(rng).unwrap_or(&1);
    let force = rng.gen_bool(0.3);
    match rng.gen_range(0..11) {
        0 => json!({"op": "status"}),
        1 => json!({"op": "stats"}),
        2 => json!({"op": "config"}),
        3 => json!({"op": "backend-add", "vip": vip, "backend": backend, "weight": weight}),
        4 => json!({"op": "backend-remove", "vip": vip, "backend": backend, "force": force}),
        5 => json!({"op": "backend-state", "vip": vip, "backend": backend, "state": (["up", "draining", "down"][rng.gen_range(0..3)]), "force": force}),
        6 => json!({"op": "backend-weight", "vip": vip, "backend": backend, "weight": weight, "force": force}),
        7 => {
            let port = [81, 80, 0, 65535][rng.gen_range(0..4)];
            let yaml = format!(
                "name: {vip}\naddress: {}\nport: {port}\nhealth_check:\n  type: none\nbackends:\n  - address: 10.0.12.2\n    port: 8081\n",
                ["10.0.0.20", "10.0.0.10", "fd00::20", "224.0.0.1"][rng.gen_range(0..4)]
            );
            json!({"op": "vip-add", "yaml": mutate_yaml(rng, yaml)})
        }
        8 => json!({"op": "vip-remove", "name": (["fz", "nope", "", "web"][rng.gen_range(0..4)])}),
        9 => json!({"op": "explain", "src": "10.77.0.2:40000", "dst": (["10.0.0.10:80", "10.0.0.99:80", "[fd00::10]:80"][rng.gen_range(0..3)]), "protocol": (["tcp", "udp", "icmp", ""][rng.gen_range(0..4)])}),
        _ => json!({"op": "reload"}),
    }
}

/// The YAML of a VIP, mutated half the time: a line deleted or duplicated, a value replaced,
/// an unknown key, a tab.
fn mutate_yaml(rng: &mut ChaCha8Rng, yaml: String) -> String {
    let mut lines: Vec<String> = yaml.lines().map(str::to_owned).collect();
    if rng.gen_bool(0.5) {
        return yaml;
    }
    let i = rng.gen_range(0..lines.len());
    match rng.gen_range(0..5) {
        0 => {
            lines.remove(i);
        }
        1 => lines.insert(i, lines[i].clone()),
        2 => {
            if let Some(at) = lines[i].find(": ") {
                lines[i].truncate(at + 2);
                lines[i].push_str(["", "-1", "99999", "x", "[]", "{a: 1}", "*a", "0", "4294967296"][rng.gen_range(0..9)]);
            }
        }
        3 => lines.insert(i, "colour: red".to_owned()),
        _ => lines[i].insert(0, '\t'),
    }
    lines.join("\n")
}

const EDGE_JSON: &[&str] = &[
    "null", "true", "0", "-1", "4294967296", "18446744073709551616", "1e400", "-0", "0.5", "\"\"", "\"x\"", "[]", "{}",
    "\"10.0.11.2\"", "\"10.0.11.2:99999\"", "\"web\\u0000\"", "\"\\ud800\"", "[\"web\"]", "{\"op\":\"status\"}",
];

/// The body mutated (as JSON, then as text).
fn mutate_body(rng: &mut ChaCha8Rng, body: &Value) -> Vec<u8> {
    let mut value = body.clone();
    if let Some(map) = value.as_object_mut()
        && rng.gen_bool(0.5)
    {
        let keys: Vec<String> = map.keys().cloned().collect();
        let key = keys.choose(rng).cloned().unwrap_or_default();
        match rng.gen_range(0..4) {
            0 => {
                map.remove(&key);
            }
            1 => {
                let edge = EDGE_JSON.choose(rng).copied().unwrap_or("null");
                map.insert(key, serde_json::from_str(edge).unwrap_or(Value::Null));
            }
            2 => {
                map.insert("colour".into(), json!("red"));
            }
            _ => {
                map.insert("op".into(), json!(["teardown-not", "Status", "backend_add", "", "vip-add "][rng.gen_range(0..5)]));
            }
        }
    }
    let mut text = serde_json::to_vec(&value).unwrap_or_default();
    if rng.gen_bool(0.4) {
        match rng.gen_range(0..8) {
            0 => text.truncate(rng.gen_range(0..=text.len())),
            1 => {
                let at = rng.gen_range(0..=text.len());
                text.splice(at..at, [0xff, 0xfe]);
            }
            2 => {
                let depth = rng.gen_range(10..100_000);
                text = [vec![b'['; depth], text, vec![b']'; depth]].concat();
            }
            3 => {
                // A duplicated key.
                if let Some(at) = text.iter().position(|&b| b == b'{') {
                    text.splice(at + 1..at + 1, *b"\"op\":\"status\",");
                }
            }
            4 => text = format!("[{}]", String::from_utf8_lossy(&text)).into_bytes(),
            5 => text.extend_from_slice(b" trailing"),
            6 => text = b"{\"op\":\"backend-weight\",\"vip\":\"web\",\"backend\":\"10.0.11.2:8080\",\"weight\":99999999999999999999}".to_vec(),
            _ => text = vec![b'x'; rng.gen_range(0..300_000)],
        }
    }
    text
}

/// A request: a valid one of a random route, mutated at the HTTP level, as bytes.
fn case(seed: u64, index: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let (mut method, mut path, body) = match rng.gen_range(0..6) {
        0 => ("GET".to_owned(), "/v1/status".to_owned(), Vec::new()),
        1 => ("GET".to_owned(), "/v1/stats".to_owned(), Vec::new()),
        2 => ("GET".to_owned(), "/v1/config".to_owned(), Vec::new()),
        _ => {
            let valid = command(&mut rng);
            let body = if rng.gen_bool(0.6) { mutate_body(&mut rng, &valid) } else { serde_json::to_vec(&valid).unwrap_or_default() };
            ("POST".to_owned(), "/v1/command".to_owned(), body)
        }
    };
    let mut version = "HTTP/1.1".to_owned();
    let mut headers = vec!["Host: lb".to_owned(), "Content-Type: application/json".to_owned(), format!("Content-Length: {}", body.len())];
    let mut tail: Vec<u8> = Vec::new();
    let mut eol = "\r\n";
    for _ in 0..rng.gen_range(0..=2) {
        match rng.gen_range(0..16) {
            0 => method = ["GET", "POST", "PUT", "DELETE", "HEAD", "get", "G ET", "", "OPTIONS", &"X".repeat(9000)][rng.gen_range(0..10)].to_owned(),
            1 => {
                path = [
                    "/v1/status?x=1", "/v1/../v1/status", "//v1/status", "/v1/%73tatus", "/v1/command/", "*", "", "/v1/stat\u{fc}s",
                    "/v1/status#frag", "http://lb/v1/status",
                ][rng.gen_range(0..10)]
                .to_owned()
            }
            2 => version = ["HTTP/1.0", "HTTP/2", "HTTP/1.1x", "", "http/1.1", "HTTP/1.1 extra"][rng.gen_range(0..6)].to_owned(),
            3 => {
                let n = body.len() as i64 + [-5i64, -1, 1, 5, 1000][rng.gen_range(0..5)];
                set_length(&mut headers, format!("Content-Length: {}", n.max(0)));
            }
            4 => set_length(
                &mut headers,
                ["Content-Length: 99999999999999999999", "Content-Length: -1", "Content-Length: +5", "Content-Length: 0x10", "Content-Length:", "Content-Length: 2097152"][rng.gen_range(0..6)].to_owned(),
            ),
            5 => {
                let dup = if rng.gen_bool(0.5) { format!("Content-Length: {}", body.len()) } else { format!("content-length: {}", body.len() + 1) };
                headers.push(dup);
            }
            6 => headers.push(["Transfer-Encoding: chunked", "Transfer-Encoding: identity", "transfer-encoding : chunked"][rng.gen_range(0..3)].to_owned()),
            7 => headers.push(["No colon here", ": empty name", "X-Sp ace: 1", " folded continuation", "X-Nul: a\u{0}b"][rng.gen_range(0..5)].to_owned()),
            8 => eol = "\n",
            9 => headers.push(format!("X-Long: {}", "a".repeat(rng.gen_range(1000..20_000)))),
            10 => headers.extend((0..rng.gen_range(10..100)).map(|i| format!("X-{i}: {i}"))),
            11 => tail = b"GET /v1/status HTTP/1.1\r\nHost: lb\r\n\r\n".to_vec(),
            12 => tail = b"POST /v1/command HTTP/1.1\r\nContent-Length: 15\r\n\r\n{\"op\":\"reload\"}".to_vec(),
            13 => headers.retain(|h| !h.starts_with("Content-Length")),
            14 => headers.insert(0, "Content-Length: 0".to_owned()),
            _ => {}
        }
    }
    let mut out = format!("{method} {path} {version}{eol}").into_bytes();
    for h in &headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(eol.as_bytes());
    }
    out.extend_from_slice(eol.as_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&tail);
    out
}

/// Replaces the first `Content-Length` header with `line` (or adds it).
fn set_length(headers: &mut Vec<String>, line: String) {
    match headers.iter().position(|h| h.starts_with("Content-Length")) {
        Some(i) => headers[i] = line,
        None => headers.push(line),
    }
}

/// What the server reads as the body of `request`, when the request is complete: the bytes
/// after the head, up to the declared length (`None`: the head never ends, or the body is
/// shorter than declared, or the length cannot be read).
fn server_body(request: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    let end = loop {
        let nl = request[start..].iter().position(|&b| b == b'\n')? + start;
        let line = &request[start..nl];
        if (line.is_empty() || line == b"\r") && start > 0 {
            break nl + 1;
        }
        start = nl + 1;
    };
    let head = String::from_utf8_lossy(&request[..end]);
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, v)| v.trim().parse::<usize>().ok())?;
    request.get(end..end + length)
}

/// Sends `request`, half-closes, and reads until the close (at most 15 s).
fn send(socket: &Path, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    // The server may answer (and stop reading) before it has all: a refused request.
    let _ = s.write_all(request);
    let _ = s.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    Ok(answer)
}

/// At least three words: a reason, not a bare code.
fn says_what(reason: &str) -> bool {
    reason.split_whitespace().count() >= 3
}

/// What is wrong with `answer` to `request`; the status otherwise.
fn response_problem(request: &[u8], answer: &[u8]) -> Result<u16, String> {
    if answer.is_empty() {
        return match server_body(request) {
            None => Ok(0),
            Some(_) => Err("no answer to a complete request".into()),
        };
    }
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or("an answer without a head end")?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| "a head that is not UTF-8")?;
    let body = &answer[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("a malformed status line {status_line:?}"))?;
    let length = lines.find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.parse::<usize>().ok()).ok_or("no Content-Length")?;
    if length != body.len() {
        return Err(format!("Content-Length {length} but {} bytes of body (two answers?)", body.len()));
    }
    if status == 200 {
        serde_json::from_slice::<Value>(body).map_err(|e| format!("a 200 whose body is not JSON: {e}"))?;
        return Ok(200);
    }
    if !((400..500).contains(&status) || status == 501 || status == 505) {
        return Err(format!("status {status} for a request from the client"));
    }
    let text = String::from_utf8_lossy(body);
    let reason = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v["error"].as_str().map(str::to_owned).ok_or_else(|| format!("a JSON refusal without `error`: {text}"))?,
        Err(_) => text.strip_prefix(&format!("HTTP {status}: ")).map(str::to_owned).ok_or_else(|| format!("a refusal body {text:?}"))?,
    };
    if !says_what(&reason) {
        return Err(format!("the refusal does not say what is wrong: {reason:?}"));
    }
    if let Some(Ok(Request::VipAdd { yaml })) = server_body(request).map(serde_json::from_slice::<Request>) {
        let lines = yaml.lines().count();
        // Each error names a line of the YAML sent, or a field of the VIP.
        for e in reason.lines().skip(1) {
            let place = e.strip_prefix("vip-add:").ok_or_else(|| format!("a vip-add error {e:?} without its place"))?;
            let line = place.split(':').next().and_then(|l| l.parse::<usize>().ok());
            if line.is_some_and(|l| l == 0 || l > lines + 1) || (line.is_none() && place.starts_with(" vips[")) {
                return Err(format!("a vip-add error names no line or field of the {lines} lines sent: {e:?}"));
            }
        }
    }
    Ok(status)
}

/// The pools the data path serves, from `GET /v1/status`: VIP name to its backends'
/// address, port, weight and administrative state.
fn pools(status: &Value) -> Value {
    let vips = status["vips"].as_array().cloned().unwrap_or_default();
    let pools = vips.iter().map(|v| {
        let mut backends: Vec<Value> = v["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| json!({"address": b["address"], "port": b["port"], "weight": b["weight"], "admin": b["admin"]}))
            .collect();
        backends.sort_by_key(Value::to_string);
        (v["name"].as_str().unwrap_or_default().to_owned(), json!({"address": v["address"], "port": v["port"], "backends": backends}))
    });
    Value::Object(pools.collect())
}

fn backend_of<'a>(pools: &'a Value, vip: &str, backend: SocketAddr) -> Option<&'a Value> {
    pools[vip]["backends"].as_array()?.iter().find(|b| {
        b["address"].as_str().and_then(|a| a.parse::<std::net::IpAddr>().ok()) == Some(backend.ip()) && b["port"] == backend.port()
    })
}

fn has_vip(pools: &Value, name: &str) -> bool {
    pools.get(name).is_some()
}

/// Whether the pools changed as the answer `status` to `request` says they should: an
/// accepted command as documented (a reload brings back `file`'s pools), anything else not
/// at all.
fn effect_problem(request: &[u8], status: u16, before: &Value, after: &Value, file: &Value) -> Option<String> {
    let command = (status == 200)
        .then(|| server_body(request))
        .flatten()
        .filter(|_| request.starts_with(b"POST /v1/command "))
        .and_then(|body| serde_json::from_slice::<Request>(body).ok());
    let Some(command) = command else {
        return (before != after).then(|| format!("a request answered {status} changed the pools:\n{before:#}\n{after:#}"));
    };
    let ok = match &command {
        Request::BackendAdd { vip, backend, weight } => backend_of(after, vip, *backend).is_some_and(|b| b["weight"] == *weight),
        Request::BackendRemove { vip, backend, .. } => backend_of(after, vip, *backend).is_none(),
        Request::BackendState { vip, backend, state, .. } => backend_of(after, vip, *backend).is_some_and(|b| b["admin"] == state.as_str()),
        Request::BackendWeight { vip, backend, weight, .. } => backend_of(after, vip, *backend).is_some_and(|b| b["weight"] == *weight),
        Request::VipAdd { yaml } => {
            // A scalar name such as `0` or `true` is the VIP's name as written.
            let name = serde_yaml::from_str::<Value>(yaml).ok().map(|v| match &v["name"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            let name = name.unwrap_or_default();
            has_vip(after, &name)
        }
        Request::VipRemove { name } => !has_vip(after, name),
        // Runtime changes last until the next reload: the file's pools are back.
        Request::Reload => after == file,
        _ => before == after,
    };
    (!ok).then(|| format!("{command:?} was answered 200 but the pools are\n{after:#}"))
}

fn agent_alive(agent: &Agent) -> bool {
    agent.pid().is_some_and(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next()))
            .is_some_and(|state| state != Some('Z'))
    })
}

fn fail(seed: u64, index: u64, request: &[u8], answer: &[u8], problem: &str, agent: &Agent) -> ! {
    let log = agent.log();
    let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    panic!(
        "api fuzz case {index} of seed {seed:#x} failed: {problem}\nreplay: LB_FUZZ_SEED={seed:#x} LB_FUZZ_CASE={index} cargo test -p lb-tests --test api_fuzz -- --test-threads=1\nrequest: {:?}\nanswer: {:?}\nagent log (end):\n{tail}",
        String::from_utf8_lossy(&request[..request.len().min(2048)]),
        String::from_utf8_lossy(&answer[..answer.len().min(2048)]),
    );
}

#[test]
fn mutated_admin_requests_never_crash_the_agent_and_every_refusal_says_why() {
    let (lab, agent): (Lab, Agent) =
        lab_with_agent(env!("CARGO_BIN_EXE_lb-test-backend").as_ref(), 3, &config(), "web").expect("a lab whose backends pass their checks");
    let cases = Cases::from_env(DEFAULT_SEED, DEFAULT_CASES);
    let Cases { seed, only, count, survey } = cases;
    let client = Client::new(&agent.socket);
    let config_now = || pools(&client.get("/v1/status").expect("GET /v1/status"));
    let file = config_now();
    let started = Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    let mut ran = 0u64;
    let mut failures = 0u64;
    for index in cases.indices() {
        if started.elapsed() > TIME_LIMIT {
            eprintln!("api fuzz: stopped at the time limit ({TIME_LIMIT:?}) after {ran} of {count} requests");
            break;
        }
        let request = case(seed, index);
        if only.is_some() {
            eprintln!("case {index} of seed {seed:#x}: {:?}", String::from_utf8_lossy(&request));
        }
        let before = config_now();
        let answer = match send(&agent.socket, &request) {
            Ok(answer) => answer,
            Err(e) => fail(seed, index, &request, b"", &format!("the socket failed: {e}"), &agent),
        };
        let checked = response_problem(&request, &answer).and_then(|status| {
            if !agent_alive(&agent) {
                return Err("the agent exited".to_owned());
            }
            effect_problem(&request, status, &before, &config_now(), &file).map_or(Ok(status), Err)
        });
        let status = match checked {
            Ok(status) => status,
            Err(p) if survey => {
                eprintln!("case {index}: {p}: {:?} -> {:?}", String::from_utf8_lossy(&request[..request.len().min(300)]), String::from_utf8_lossy(&answer[..answer.len().min(300)]));
                failures += 1;
                continue;
            }
            Err(p) => fail(seed, index, &request, &answer, &p, &agent),
        };
        *statuses.entry(status).or_default() += 1;
        ran += 1;
    }
    assert_eq!(failures, 0, "failures (survey)");
    let log = agent.log();
    assert!(!log.contains("panicked"), "the agent panicked:\n{log}");
    assert!(agent_alive(&agent), "the agent exited:\n{log}");
    // A plain reload brings back the file's pools (runtime changes last until then), and the
    // data path serves the VIP from all three backends again.
    let reload = agent.cli(&["reload"]);
    assert!(reload.status.success(), "lb reload after the run: {}", String::from_utf8_lossy(&reload.stderr));
    let status = agent.wait_status(Duration::from_secs(15), |s| all_in_state(s, "web", "up")).expect("every backend up after the reload");
    assert_eq!(pools(&status), file, "the pools after the reload");
    let served = in_namespace(&lab.client_ns, || {
        (0..30)
            .map(|_| http_get("10.0.0.10:80".parse().unwrap(), "/", Duration::from_secs(3)).map(|(code, body)| (code, body.trim().to_owned())))
            .collect::<Vec<_>>()
    })
    .expect("the client's namespace");
    let backends: std::collections::BTreeSet<_> = served.iter().filter_map(|r| r.as_ref().ok()).filter(|(code, _)| *code == 200).map(|(_, b)| b.clone()).collect();
    assert!(served.iter().all(|r| matches!(r, Ok((200, _)))), "requests through the VIP after the run: {served:?}");
    assert_eq!(backends.len(), 3, "backends answering through the VIP: {backends:?}");
    eprintln!(
        "api fuzz: seed {seed:#x}, {ran} mutated requests in {:?}; answers by status (0: none, the request never completed): {statuses:?}; the agent alive, no panic; after a reload the file's pools serve 30 of 30 requests through the VIP from 3 backends",
        started.elapsed()
    );
    drop(agent);
    drop(lab);
}
