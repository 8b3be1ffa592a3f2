//! `lb top` (a live view of the agent, refreshed every second) and `lb stats --watch/--rate`.
//!
//! Rates are computed here, from two consecutive snapshots of `GET /v1/status` and
//! `GET /v1/stats`: counter deltas over the time between them. Everything that turns snapshots
//! into text is a pure function ([`frame`], [`plain_block`], [`stats_rates`]); the loops around
//! them only fetch, wait and write. On a terminal the view is drawn with ANSI sequences on the
//! alternate screen with the terminal in raw mode (termios through libc); the terminal is
//! restored on every way out (q, Ctrl-C, SIGTERM, SIGHUP, an error or a panic). When stdout is
//! not a terminal, `lb top` prints one plain block per second instead.

use std::{
    io::Write as _,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use serde_json::Value;

use super::{
    EXIT_REFUSED, EXIT_UNREACHABLE, render,
    table::{Align, table_aligned},
    units,
};
use crate::api::{
    StatsReport, StatusReport, TrafficStatus,
    client::{Client, ClientError},
};

/// Time between two refreshes.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One look at the agent: its status and stats, and when they were taken.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Seconds on a monotonic clock (only differences count).
    pub at: f64,
    /// Unix time in seconds, for display.
    pub wall: u64,
    /// `GET /v1/status`.
    pub status: StatusReport,
    /// `GET /v1/stats`.
    pub stats: StatsReport,
    /// Capacity of the connection table, when the agent reports it.
    pub capacity: Option<u64>,
}

impl Snapshot {
    /// A snapshot from the two JSON answers.
    pub fn from_values(at: f64, wall: u64, status: &Value, stats: &Value) -> Result<Self, String> {
        Ok(Snapshot {
            at,
            wall,
            status: serde_json::from_value(status.clone()).map_err(|e| format!("status: {e}"))?,
            stats: serde_json::from_value(stats.clone()).map_err(|e| format!("stats: {e}"))?,
            capacity: connection_capacity(stats),
        })
    }
}

/// The connection table's capacity in a stats answer, if the agent sends one.
pub fn connection_capacity(stats: &Value) -> Option<u64> {
    ["connection_capacity", "connection_table_capacity", "conn_capacity"].iter().find_map(|k| stats.get(k)?.as_u64())
}

/// Per-second rates of one traffic counter set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Packets per second.
    pub packets: f64,
    /// Bits per second.
    pub bits: f64,
    /// New flows per second.
    pub new_flows: f64,
}

/// `(cur - prev) / seconds`; a counter that went back (a re-created slot) counts as 0.
fn delta(prev: u64, cur: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { cur.saturating_sub(prev) as f64 / seconds } else { 0.0 }
}

/// Rates between two readings of the same counters, `seconds` apart.
pub fn traffic_rates(prev: &TrafficStatus, cur: &TrafficStatus, seconds: f64) -> Rates {
    Rates {
        packets: delta(prev.packets, cur.packets, seconds),
        bits: delta(prev.bytes, cur.bytes, seconds) * 8.0,
        new_flows: delta(prev.new_flows, cur.new_flows, seconds),
    }
}

/// Seconds between two snapshots.
pub fn window(prev: &Snapshot, cur: &Snapshot) -> f64 {
    cur.at - prev.at
}

/// A backend line of the VIP view.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendRow {
    /// Address and port.
    pub endpoint: SocketAddr,
    /// What the data path does with it: up, draining, down.
    pub state: String,
    /// up or down.
    pub health: String,
    /// Weight.
    pub weight: u32,
    /// Live flows.
    pub connections: u64,
    /// Rates; none without an earlier snapshot holding the backend.
    pub rates: Option<Rates>,
    /// Its part of the VIP's backends' packets/s.
    pub share: Option<f64>,
}

/// A VIP line of the VIP view, with its backends.
#[derive(Clone, Debug, PartialEq)]
pub struct VipRow {
    /// Name.
    pub name: String,
    /// `address:port/protocol`.
    pub endpoint: String,
    /// Backends the data path sends new flows to (state up).
    pub serving: usize,
    /// Backends whose health is up.
    pub healthy: usize,
    /// Rates; none without an earlier snapshot holding the VIP.
    pub rates: Option<Rates>,
    /// Its part of all VIPs' packets/s.
    pub share: Option<f64>,
    /// Backends.
    pub backends: Vec<BackendRow>,
}

fn shares(rates: &[Option<Rates>]) -> Vec<Option<f64>> {
    let total: f64 = rates.iter().flatten().map(|r| r.packets).sum();
    rates.iter().map(|r| r.map(|r| if total > 0.0 { r.packets / total } else { 0.0 })).collect()
}

/// The VIP view's rows, in the status report's order.
pub fn vip_rows(prev: Option<&Snapshot>, cur: &Snapshot) -> Vec<VipRow> {
    let seconds = prev.map_or(0.0, |p| window(p, cur));
    let mut rows: Vec<VipRow> = cur
        .status
        .vips
        .iter()
        .map(|v| {
            let before = prev.and_then(|p| p.status.vips.iter().find(|o| o.name == v.name));
            let mut backends: Vec<BackendRow> = v
                .backends
                .iter()
                .map(|b| {
                    let was = before.and_then(|o| o.backends.iter().find(|ob| ob.address == b.address && ob.port == b.port));
                    BackendRow {
                        endpoint: SocketAddr::new(b.address, b.port),
                        state: b.state.clone(),
                        health: b.health.clone(),
                        weight: b.weight,
                        connections: b.active_connections,
                        rates: was.map(|o| traffic_rates(&o.traffic, &b.traffic, seconds)),
                        share: None,
                    }
                })
                .collect();
            let backend_shares = shares(&backends.iter().map(|b| b.rates).collect::<Vec<_>>());
            for (b, s) in backends.iter_mut().zip(backend_shares) {
                b.share = s;
            }
            VipRow {
                name: v.name.clone(),
                endpoint: format!("{}/{}", SocketAddr::new(v.address, v.port), v.protocol),
                serving: v.backends.iter().filter(|b| b.state == "up").count(),
                healthy: v.backends.iter().filter(|b| b.health == "up").count(),
                rates: before.map(|o| traffic_rates(&o.traffic, &v.traffic, seconds)),
                share: None,
                backends,
            }
        })
        .collect();
    let vip_shares = shares(&rows.iter().map(|v| v.rates).collect::<Vec<_>>());
    for (v, s) in rows.iter_mut().zip(vip_shares) {
        v.share = s;
    }
    rows
}

/// A verdict reason with its rate.
#[derive(Clone, Debug, PartialEq)]
pub struct ReasonRow {
    /// The reason's name.
    pub name: String,
    /// Its counter.
    pub total: u64,
    /// Per second; none without an earlier snapshot.
    pub per_second: Option<f64>,
}

impl ReasonRow {
    /// Whether the reason is a drop (`drop_...`).
    pub fn is_drop(&self) -> bool {
        self.name.starts_with("drop_")
    }
}

/// Every verdict reason with its rate, in the data path's order.
pub fn reason_rows(prev: Option<&Snapshot>, cur: &Snapshot) -> Vec<ReasonRow> {
    cur.stats
        .reasons
        .iter()
        .map(|(name, total)| ReasonRow {
            name: name.clone(),
            total: *total,
            per_second: prev.map(|p| {
                let before = p.stats.reasons.iter().find(|(n, _)| n == name).map_or(*total, |(_, v)| *v);
                delta(before, *total, window(p, cur))
            }),
        })
        .collect()
}

/// Drops per second over all `drop_` reasons.
pub fn drops_per_second(reasons: &[ReasonRow]) -> Option<f64> {
    reasons.iter().filter(|r| r.is_drop()).map(|r| r.per_second).sum()
}

/// Which view `lb top` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// VIPs and their backends.
    Vips,
    /// Verdict reasons: drops and the others.
    Reasons,
}

/// The column `lb top` sorts by (largest first; names in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Packets per second (reasons: their rate).
    Packets,
    /// Bits per second (VIP view only).
    Bits,
    /// New flows per second (VIP view only).
    Flows,
    /// Name (backends: address).
    Name,
}

/// The view's state: what is shown, sorted how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ui {
    /// The view.
    pub view: View,
    /// The sort column.
    pub sort: Sort,
}

impl Default for Ui {
    fn default() -> Self {
        Ui { view: View::Vips, sort: Sort::Packets }
    }
}

/// What a key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEffect {
    /// Leave.
    Quit,
    /// The view changed: draw again.
    Redraw,
    /// Nothing.
    None,
}

impl Ui {
    /// Applies a key: `q` (or Ctrl-C, Esc) quits, `s` cycles the sort column, `v` the view.
    pub fn key(&mut self, key: u8) -> KeyEffect {
        match key {
            b'q' | b'Q' | 0x03 | 0x1b => KeyEffect::Quit,
            b's' | b'S' => {
                self.sort = match (self.view, self.sort) {
                    (View::Vips, Sort::Packets) => Sort::Bits,
                    (View::Vips, Sort::Bits) => Sort::Flows,
                    (View::Vips, Sort::Flows) => Sort::Name,
                    (_, Sort::Name) => Sort::Packets,
                    (View::Reasons, _) => Sort::Name,
                };
                KeyEffect::Redraw
            }
            b'v' | b'V' => {
                self.view = match self.view {
                    View::Vips => View::Reasons,
                    View::Reasons => View::Vips,
                };
                KeyEffect::Redraw
            }
            _ => KeyEffect::None,
        }
    }

    fn sort_label(&self) -> &'static str {
        match (self.view, self.sort) {
            (_, Sort::Name) => "name",
            (View::Reasons, _) => "rate",
            (View::Vips, Sort::Packets) => "pkt/s",
            (View::Vips, Sort::Bits) => "bit/s",
            (View::Vips, Sort::Flows) => "new flows/s",
        }
    }
}

/// Orders VIPs, and each VIP's backends, by a column: rates largest first (no rate last),
/// names in order; ties by name.
pub fn sort_rows(rows: &mut [VipRow], sort: Sort) {
    let key = |r: Option<Rates>| -> f64 {
        r.map_or(-1.0, |r| match sort {
            Sort::Packets | Sort::Name => r.packets,
            Sort::Bits => r.bits,
            Sort::Flows => r.new_flows,
        })
    };
    if sort == Sort::Name {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
    } else {
        rows.sort_by(|a, b| key(b.rates).total_cmp(&key(a.rates)).then_with(|| a.name.cmp(&b.name)));
    }
    for v in rows {
        if sort == Sort::Name {
            v.backends.sort_by_key(|b| b.endpoint);
        } else {
            v.backends.sort_by(|a, b| key(b.rates).total_cmp(&key(a.rates)).then_with(|| a.endpoint.cmp(&b.endpoint)));
        }
    }
}

/// Orders reasons by rate (largest first, ties by name) or by name.
pub fn sort_reasons(rows: &mut [ReasonRow], sort: Sort) {
    if sort == Sort::Name {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
    } else {
        rows.sort_by(|a, b| b.per_second.unwrap_or(-1.0).total_cmp(&a.per_second.unwrap_or(-1.0)).then_with(|| a.name.cmp(&b.name)));
    }
}

/// `HH:MM:SS UTC` of a unix time.
pub fn clock(wall: u64) -> String {
    format!("{:02}:{:02}:{:02} UTC", wall / 3600 % 24, wall / 60 % 60, wall % 60)
}

fn dash_or<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

fn title(prev: Option<&Snapshot>, cur: &Snapshot) -> String {
    let window = match prev {
        Some(p) => format!("rates over {}", units::millis(window(p, cur) * 1000.0)),
        None => "rates from the next refresh".to_owned(),
    };
    format!("lb top  {}  agent up {}  {window}", clock(cur.wall), units::uptime(cur.status.uptime_seconds))
}

/// Connection table entries (of the capacity when known), drops/s, last probe-to-swap.
fn summary(prev: Option<&Snapshot>, cur: &Snapshot) -> String {
    let entries = units::plural_with(cur.stats.connection_entries, "entry", "entries");
    let table = match cur.capacity {
        Some(c) if c > 0 => {
            format!("{entries} of {} ({})", units::count(c), units::percent(cur.stats.connection_entries as f64 / c as f64))
        }
        _ => entries,
    };
    let drops = drops_per_second(&reason_rows(prev, cur));
    format!(
        "connection table: {table}  drops: {}  probe to swap (last change): {}",
        dash_or(drops, units::pps),
        units::millis_or_dash(cur.stats.health.last_probe_to_swap_ms)
    )
}

const VIP_ALIGN: [Align; 9] = [Align::Left, Align::Left, Align::Left, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right];

/// The VIP view's table: a line per VIP, then one per backend, indented.
pub fn vip_table(rows: &[VipRow]) -> String {
    let mut cells = Vec::new();
    for v in rows {
        let total = v.backends.len();
        cells.push(vec![
            format!("{} {}", v.name, v.endpoint),
            format!("{}/{total} up", v.serving),
            format!("{}/{total} healthy", v.healthy),
            "-".to_owned(),
            units::count(v.backends.iter().map(|b| b.connections).sum()),
            dash_or(v.rates, |r| units::pps(r.packets)),
            dash_or(v.rates, |r| format!("{} bit/s", units::si(r.bits))),
            dash_or(v.rates, |r| units::per_second(r.new_flows)),
            dash_or(v.share, units::percent),
        ]);
        for b in &v.backends {
            cells.push(vec![
                format!("  {}", b.endpoint),
                b.state.clone(),
                b.health.clone(),
                b.weight.to_string(),
                units::count(b.connections),
                dash_or(b.rates, |r| units::pps(r.packets)),
                dash_or(b.rates, |r| format!("{} bit/s", units::si(r.bits))),
                dash_or(b.rates, |r| units::per_second(r.new_flows)),
                dash_or(b.share, units::percent),
            ]);
        }
    }
    if rows.is_empty() {
        return "no VIPs\n".to_owned();
    }
    table_aligned(&["VIP / BACKEND", "STATE", "HEALTH", "WEIGHT", "CONNS", "PACKETS", "BITS", "NEW FLOWS", "SHARE"], &VIP_ALIGN, &cells)
}

/// The reasons view: drops, then the other reasons, each sorted. With `active_only`, reasons
/// without packets in the window are left out.
pub fn reason_tables(rows: &[ReasonRow], sort: Sort, active_only: bool) -> String {
    let mut out = String::new();
    for (heading, drops) in [("DROPS", true), ("OTHER REASONS", false)] {
        let mut group: Vec<ReasonRow> =
            rows.iter().filter(|r| r.is_drop() == drops && (!active_only || r.per_second.unwrap_or(0.0) > 0.0)).cloned().collect();
        if active_only && group.is_empty() {
            out += &format!("{}: none in the window\n", heading.to_lowercase());
            continue;
        }
        sort_reasons(&mut group, sort);
        let cells: Vec<Vec<String>> = group.iter().map(|r| vec![r.name.clone(), dash_or(r.per_second, units::per_second), units::count(r.total)]).collect();
        out += &table_aligned(&[heading, "PER SECOND", "TOTAL"], &[Align::Left, Align::Right, Align::Right], &cells);
    }
    out
}

/// The lines of one full-screen frame (not cut to the terminal's size).
pub fn frame(prev: Option<&Snapshot>, cur: &Snapshot, ui: Ui, error: Option<&str>) -> Vec<String> {
    let view = match ui.view {
        View::Vips => "VIPs and backends",
        View::Reasons => "verdict reasons",
    };
    let mut out = format!(
        "{}\n{}\nview: {view}  sort: {}  keys: q quit, s sort, v view\n",
        title(prev, cur),
        summary(prev, cur),
        ui.sort_label()
    );
    if let Some(e) = error {
        out += &format!("error: {e} (showing the last answer)\n");
    }
    out += "\n";
    match ui.view {
        View::Vips => {
            let mut rows = vip_rows(prev, cur);
            sort_rows(&mut rows, ui.sort);
            out += &vip_table(&rows);
        }
        View::Reasons => out += &reason_tables(&reason_rows(prev, cur), ui.sort, false),
    }
    out.lines().map(str::to_owned).collect()
}

/// One block of the plain (not a terminal) output: the VIP view sorted by packets/s and the
/// reasons that saw packets, then an empty line.
pub fn plain_block(prev: &Snapshot, cur: &Snapshot) -> String {
    let mut rows = vip_rows(Some(prev), cur);
    sort_rows(&mut rows, Sort::Packets);
    format!(
        "{}\n{}\n{}{}\n",
        title(Some(prev), cur),
        summary(Some(prev), cur),
        vip_table(&rows),
        reason_tables(&reason_rows(Some(prev), cur), Sort::Packets, true)
    )
}

/// Health figures per second.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HealthRates {
    /// Probes sent.
    pub probes: f64,
    /// Probes failed.
    pub failures: f64,
    /// Health flips.
    pub transitions: f64,
    /// Ring swaps.
    pub swaps: f64,
}

/// `lb stats --rate`: the stats report's counters per second between two snapshots.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsRates {
    /// Unix time of the later snapshot.
    pub unix_time: u64,
    /// Seconds between the snapshots.
    pub interval_seconds: f64,
    /// Per verdict reason, in the data path's order.
    pub reasons_per_second: Vec<(String, f64)>,
    /// Sum over the `drop_` reasons.
    pub drops_per_second: f64,
    /// Health checks and swaps.
    pub health_per_second: HealthRates,
    /// Entries in the connection table (a level, not a rate).
    pub connection_entries: u64,
    /// The table's capacity, when the agent reports it.
    pub connection_capacity: Option<u64>,
    /// Probe to swapped ring of the last health change, in milliseconds.
    pub last_probe_to_swap_ms: Option<f64>,
}

/// Rounds a rate to thousandths, so JSON shows 12.5 and not 12.499999999.
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The stats counters per second from `prev` to `cur` (both the stats part of snapshots).
pub fn stats_rates(prev: &Snapshot, cur: &Snapshot) -> StatsRates {
    let s = window(prev, cur);
    let reasons = reason_rows(Some(prev), cur);
    let (p, c) = (&prev.stats.health, &cur.stats.health);
    StatsRates {
        unix_time: cur.wall,
        interval_seconds: round3(s),
        reasons_per_second: reasons.iter().map(|r| (r.name.clone(), round3(r.per_second.unwrap_or(0.0)))).collect(),
        drops_per_second: round3(drops_per_second(&reasons).unwrap_or(0.0)),
        health_per_second: HealthRates {
            probes: round3(delta(p.probes, c.probes, s)),
            failures: round3(delta(p.failures, c.failures, s)),
            transitions: round3(delta(p.transitions, c.transitions, s)),
            swaps: round3(delta(p.swaps, c.swaps, s)),
        },
        connection_entries: cur.stats.connection_entries,
        connection_capacity: cur.capacity,
        last_probe_to_swap_ms: cur.stats.health.last_probe_to_swap_ms,
    }
}

// ---- The loops: fetching, waiting, writing. ----

fn now_wall() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Takes a snapshot; `at` is the middle of the two requests.
fn fetch(client: &Client, start: Instant) -> Result<(Snapshot, Value), ClientError> {
    let before = start.elapsed().as_secs_f64();
    let status = client.get("/v1/status")?;
    let stats = client.get("/v1/stats")?;
    let at = (before + start.elapsed().as_secs_f64()) / 2.0;
    let snap = Snapshot::from_values(at, now_wall(), &status, &stats).map_err(ClientError::Protocol)?;
    Ok((snap, stats))
}

fn exit_for(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(if matches!(e, ClientError::Unreachable(..)) { EXIT_UNREACHABLE } else { EXIT_REFUSED })
}

/// Sleeps until `start + n × INTERVAL`.
fn sleep_until_tick(start: Instant, n: u32) {
    let due = start + INTERVAL * n;
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

fn write_stdout(s: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).and_then(|()| out.flush()).is_ok()
}

/// `lb stats --watch` and/or `--rate`: absolute counters every second (`--watch`), or rates over
/// one second (`--rate`), or rates every second (both); `count` outputs, then stop. With `json`
/// every output is one JSON object on one line.
pub fn stats_watch(client: &Client, json: bool, watch: bool, rate: bool, count: Option<u64>) -> ExitCode {
    let start = Instant::now();
    let limit = count.unwrap_or(if watch { u64::MAX } else { 1 });
    let mut prev: Option<Snapshot> = None;
    let mut printed = 0u64;
    let mut tick = 0u32;
    while printed < limit {
        if tick > 0 {
            sleep_until_tick(start, tick);
        }
        tick += 1;
        let (snap, raw) = match fetch(client, start) {
            Ok(s) => s,
            Err(e) => return exit_for(&e),
        };
        let text = if rate {
            let Some(p) = prev.replace(snap.clone()) else { continue };
            let r = stats_rates(&p, &snap);
            if json { serde_json::to_string(&r).unwrap_or_default() + "\n" } else { render::stats_rates(&r) }
        } else if json {
            serde_json::to_string(&raw).unwrap_or_default() + "\n"
        } else {
            render::stats_report(&snap.stats, snap.capacity)
        };
        let text = if watch && !json { format!("--- {}\n{text}\n", clock(snap.wall)) } else { text };
        if !write_stdout(&text) {
            return ExitCode::SUCCESS; // the reader went away (a closed pipe)
        }
        printed += 1;
    }
    ExitCode::SUCCESS
}

/// `lb top`. Full screen on a terminal unless `plain`; `count` refreshes, then stop.
pub fn top(client: &Client, plain: bool, count: Option<u64>) -> ExitCode {
    let start = Instant::now();
    let first = match fetch(client, start) {
        Ok((s, _)) => s,
        Err(e) => return exit_for(&e),
    };
    // SAFETY: isatty only inspects the descriptor.
    let terminal = !plain && unsafe { libc::isatty(libc::STDOUT_FILENO) } == 1;
    if terminal {
        match term::Terminal::enter() {
            Ok(t) => return full_screen(client, t, start, first, count),
            Err(e) => eprintln!("lb top: no full-screen view ({e}); printing plain blocks"),
        }
    }
    plain_loop(client, start, first, count)
}

fn plain_loop(client: &Client, start: Instant, first: Snapshot, count: Option<u64>) -> ExitCode {
    let mut prev = first;
    let mut tick = 1u32;
    let mut printed = 0u64;
    while printed < count.unwrap_or(u64::MAX) {
        sleep_until_tick(start, tick);
        tick += 1;
        match fetch(client, start) {
            Ok((cur, _)) => {
                if !write_stdout(&plain_block(&prev, &cur)) {
                    return ExitCode::SUCCESS;
                }
                prev = cur;
                printed += 1;
            }
            Err(e @ ClientError::Unreachable(..)) => return exit_for(&e),
            // A bad answer once: say so and try at the next tick.
            Err(e) => eprintln!("error: {e}"),
        }
    }
    ExitCode::SUCCESS
}

fn full_screen(client: &Client, mut t: term::Terminal, start: Instant, first: Snapshot, count: Option<u64>) -> ExitCode {
    let mut ui = Ui::default();
    let (mut prev, mut cur): (Option<Snapshot>, Snapshot) = (None, first);
    let mut error: Option<String> = None;
    let mut tick = 1u32;
    let mut refreshes = 0u64;
    loop {
        t.draw(&frame(prev.as_ref(), &cur, ui, error.as_deref()));
        if count.is_some_and(|c| refreshes >= c) {
            return ExitCode::SUCCESS;
        }
        // Keys until the next tick.
        let due = start + INTERVAL * tick;
        loop {
            match t.wait_key(due) {
                term::Event::Key(k) => match ui.key(k) {
                    KeyEffect::Quit => return ExitCode::SUCCESS,
                    KeyEffect::Redraw => t.draw(&frame(prev.as_ref(), &cur, ui, error.as_deref())),
                    KeyEffect::None => {}
                },
                term::Event::Resize => t.draw(&frame(prev.as_ref(), &cur, ui, error.as_deref())),
                term::Event::Stop => return ExitCode::SUCCESS,
                term::Event::Tick => break,
            }
        }
        tick += 1;
        refreshes += 1;
        match fetch(client, start) {
            Ok((snap, _)) => {
                prev = Some(std::mem::replace(&mut cur, snap));
                error = None;
            }
            Err(e) => error = Some(e.to_string()),
        }
    }
}

/// The terminal: raw mode, alternate screen, drawing, keys and signals.
mod term {
    use super::*;

    /// The terminal's settings before raw mode, to restore.
    static SAVED: Mutex<Option<(libc::c_int, libc::termios)>> = Mutex::new(None);
    static STOP: AtomicBool = AtomicBool::new(false);
    static RESIZED: AtomicBool = AtomicBool::new(false);

    /// Puts the terminal back: settings, cursor, main screen. Safe to call twice.
    pub fn restore() {
        let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((fd, termios)) = saved {
            // SAFETY: fd is the descriptor whose settings were saved; termios is valid.
            unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &termios) };
            let _ = super::write_stdout("\x1b[?25h\x1b[?1049l");
            // SAFETY: closing the /dev/tty descriptor opened in enter().
            unsafe { libc::close(fd) };
        }
    }

    extern "C" fn on_signal(signal: libc::c_int) {
        if signal == libc::SIGWINCH {
            RESIZED.store(true, Ordering::SeqCst);
        } else {
            STOP.store(true, Ordering::SeqCst);
        }
    }

    /// Something for the loop.
    pub enum Event {
        Key(u8),
        Resize,
        Stop,
        Tick,
    }

    /// The terminal in raw mode; restored when dropped.
    pub struct Terminal {
        tty: libc::c_int,
    }

    impl Terminal {
        /// Raw mode on the controlling terminal (keys come from it even when stdin is
        /// redirected), the alternate screen, no cursor; signal handlers that end the loop
        /// instead of the process; a panic hook that restores the terminal first.
        pub fn enter() -> std::io::Result<Terminal> {
            // SAFETY: a constant path; the descriptor is owned by SAVED from here on.
            let tty = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            if tty < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: termios is plain data, filled by tcgetattr.
            let mut termios: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: tty is open; termios is writable.
            if unsafe { libc::tcgetattr(tty, &mut termios) } != 0 {
                let e = std::io::Error::last_os_error();
                // SAFETY: closing what we opened.
                unsafe { libc::close(tty) };
                return Err(e);
            }
            let mut raw = termios;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
            raw.c_iflag &= !(libc::IXON | libc::ICRNL);
            raw.c_cc[libc::VMIN] = 0;
            raw.c_cc[libc::VTIME] = 0;
            *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some((tty, termios));
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGWINCH] {
                // SAFETY: the handler only stores to atomics; no SA_RESTART, so poll wakes up.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = on_signal as *const () as usize;
                    libc::sigemptyset(&mut action.sa_mask);
                    libc::sigaction(signal, &action, std::ptr::null_mut());
                }
            }
            // SAFETY: tty is open; raw is a valid termios.
            if unsafe { libc::tcsetattr(tty, libc::TCSAFLUSH, &raw) } != 0 {
                let e = std::io::Error::last_os_error();
                restore();
                return Err(e);
            }
            super::write_stdout("\x1b[?1049h\x1b[?25l\x1b[2J");
            Ok(Terminal { tty })
        }

        fn size(&self) -> (usize, usize) {
            // SAFETY: winsize is plain data filled by the ioctl.
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: TIOCGWINSZ writes a winsize.
            let ok = unsafe { libc::ioctl(self.tty, libc::TIOCGWINSZ, &mut ws) } == 0;
            if ok && ws.ws_col > 0 && ws.ws_row > 0 { (ws.ws_col as usize, ws.ws_row as usize) } else { (80, 24) }
        }

        /// Draws the lines from the top left, cut to the terminal's size.
        pub fn draw(&mut self, lines: &[String]) {
            let (width, height) = self.size();
            let mut out = String::from("\x1b[H");
            let shown = lines.len().min(height);
            for (i, line) in lines.iter().take(shown).enumerate() {
                let mut l: String = line.chars().take(width).collect();
                if i + 1 == shown && shown < lines.len() {
                    l = format!("... {} more lines (a larger terminal shows them)", lines.len() - shown + 1).chars().take(width).collect();
                }
                out += &l;
                out += "\x1b[K";
                if i + 1 < shown {
                    out += "\r\n";
                }
            }
            out += "\x1b[J";
            super::write_stdout(&out);
        }

        /// Waits for a key, a signal or `due`.
        pub fn wait_key(&mut self, due: Instant) -> Event {
            loop {
                if STOP.load(Ordering::SeqCst) {
                    return Event::Stop;
                }
                if RESIZED.swap(false, Ordering::SeqCst) {
                    return Event::Resize;
                }
                let now = Instant::now();
                if now >= due {
                    return Event::Tick;
                }
                let timeout = (due - now).as_millis().clamp(1, 1000) as libc::c_int;
                let mut pfd = libc::pollfd { fd: self.tty, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
                if n > 0 && pfd.revents & libc::POLLIN != 0 {
                    let mut byte = 0u8;
                    // SAFETY: reading one byte into a local.
                    let r = unsafe { libc::read(self.tty, (&mut byte as *mut u8).cast(), 1) };
                    if r == 1 {
                        return Event::Key(byte);
                    }
                } else if n > 0 {
                    // The terminal hung up.
                    return Event::Stop;
                }
            }
        }
    }

    impl Drop for Terminal {
        fn drop(&mut self) {
            restore();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A recorded series: three snapshots one second apart (the second window 0.5 s), two VIPs,
    /// three backends, one backend going down in the third snapshot.
    fn series() -> Vec<Snapshot> {
        let vip = |name: &str, addr: &str, pkts: u64, bytes: u64, flows: u64, backends: Value| {
            json!({"name": name, "address": addr, "port": 80, "protocol": "tcp", "scheduler": "maglev",
                   "ring_backends": 2, "announced": false, "announce_reason": "announce_table not set",
                   "traffic": {"packets": pkts, "bytes": bytes, "new_flows": flows, "packets_per_second": 0.0},
                   "backends": backends})
        };
        let backend = |id: u32, addr: &str, state: &str, health: &str, conns: u64, pkts: u64, bytes: u64, flows: u64| {
            json!({"id": id, "address": addr, "port": 8080, "weight": 1, "admin": "up", "health": health, "state": state,
                   "active_connections": conns, "next_hop": null,
                   "traffic": {"packets": pkts, "bytes": bytes, "new_flows": flows, "packets_per_second": 0.0}})
        };
        let status = |uptime: u64, web: [(u64, u64, u64); 2], b2_state: &str, api: (u64, u64, u64)| {
            let (w1, w2) = (web[0], web[1]);
            json!({"config_file": "/etc/lb/lb.yaml", "interfaces": [["eth0", "driver"]], "uptime_seconds": uptime,
                   "data_path": {"pin_dir": "/sys/fs/bpf/lb/default", "adopted": false, "layout": 3, "program_hash": "abc",
                                 "program_id": 7, "program_tag": "t", "agent_version": "0.1.0"},
                   "vips": [
                       vip("api", "10.0.0.11", api.0, api.1, api.2,
                           json!([backend(3, "10.1.0.3", "up", "up", 2, api.0, api.1, api.2)])),
                       vip("web", "10.0.0.10", w1.0 + w2.0, w1.1 + w2.1, w1.2 + w2.2,
                           json!([backend(1, "10.1.0.1", "up", "up", 40, w1.0, w1.1, w1.2),
                                  backend(2, "10.1.0.2", b2_state, b2_state, 10, w2.0, w2.1, w2.2)])),
                   ]})
        };
        let stats = |fwd: u64, reply: u64, no_backend: u64, martian: u64, probes: u64, entries: u64, swap: Option<f64>| {
            json!({"reasons": [["forward_to_backend", fwd], ["reply_to_client", reply], ["pass_not_vip", 5],
                               ["drop_no_backend", no_backend], ["drop_martian", martian]],
                   "health": {"probes": probes, "failures": 0, "transitions": 0, "swaps": 0,
                              "last_probe_to_swap_ms": swap, "max_probe_to_swap_ms": swap, "last_table_write_ms": 0.2},
                   "connection_entries": entries})
        };
        let snap = |at: f64, status: Value, stats: Value| Snapshot::from_values(at, 1_767_225_600 + at as u64, &status, &stats).unwrap();
        vec![
            snap(10.0, status(100, [(1_000, 100_000, 10), (500, 50_000, 5)], "up", (10, 1_000, 1)), stats(1_000, 505, 0, 0, 20, 57, None)),
            // +1 s: web b1 +3000 pkt 375 kB (3 Mbit/s) 30 flows; b2 +1000 pkt 125 kB 10 flows; api +1 pkt.
            snap(
                11.0,
                status(101, [(4_000, 475_000, 40), (1_500, 175_000, 15)], "up", (11, 1_100, 1)),
                stats(3_001, 2_505, 0, 0, 30, 1_500, Some(9.5)),
            ),
            // +0.5 s: b2 down (no packets); b1 +1500 pkt; drops 100 no_backend, 2 martian.
            snap(
                11.5,
                status(101, [(5_500, 662_500, 60), (1_500, 175_000, 15)], "down", (11, 1_100, 1)),
                stats(3_751, 3_255, 100, 2, 35, 1_480, Some(12.25)),
            ),
        ]
    }

    #[test]
    fn rates_are_deltas_over_the_window() {
        let s = series();
        let rows = vip_rows(Some(&s[0]), &s[1]);
        let web = rows.iter().find(|v| v.name == "web").unwrap();
        assert_eq!(web.rates, Some(Rates { packets: 4_000.0, bits: 4_000_000.0, new_flows: 40.0 }));
        assert_eq!(web.backends[0].rates, Some(Rates { packets: 3_000.0, bits: 3_000_000.0, new_flows: 30.0 }));
        assert_eq!(web.backends[0].share, Some(0.75));
        assert_eq!(web.backends[1].share, Some(0.25));
        // The half-second window doubles the deltas.
        let rows = vip_rows(Some(&s[1]), &s[2]);
        let web = rows.iter().find(|v| v.name == "web").unwrap();
        assert_eq!(web.backends[0].rates, Some(Rates { packets: 3_000.0, bits: 3_000_000.0, new_flows: 40.0 }));
        assert_eq!(web.backends[1].rates, Some(Rates::default()));
        assert_eq!((web.serving, web.healthy), (1, 1));
        let reasons = reason_rows(Some(&s[1]), &s[2]);
        assert_eq!(reasons.iter().find(|r| r.name == "drop_no_backend").unwrap().per_second, Some(200.0));
        assert_eq!(drops_per_second(&reasons), Some(204.0));
        // Without an earlier snapshot there is no rate, and a counter that went back counts 0.
        assert!(vip_rows(None, &s[0]).iter().all(|v| v.rates.is_none() && v.share.is_none()));
        assert_eq!(delta(10, 4, 1.0), 0.0);
    }

    #[test]
    fn first_frame_before_any_rate() {
        let s = series();
        let f = frame(None, &s[0], Ui::default(), None).join("\n");
        assert_eq!(
            f,
            "lb top  00:00:10 UTC  agent up 1 min 40 s  rates from the next refresh
connection table: 57 entries  drops: -  probe to swap (last change): -
view: VIPs and backends  sort: pkt/s  keys: q quit, s sort, v view

VIP / BACKEND         STATE   HEALTH       WEIGHT  CONNS  PACKETS  BITS  NEW FLOWS  SHARE
api 10.0.0.11:80/tcp  1/1 up  1/1 healthy       -      2        -     -          -      -
  10.1.0.3:8080       up      up                1      2        -     -          -      -
web 10.0.0.10:80/tcp  2/2 up  2/2 healthy       -     50        -     -          -      -
  10.1.0.1:8080       up      up                1     40        -     -          -      -
  10.1.0.2:8080       up      up                1     10        -     -          -      -"
        );
    }

    #[test]
    fn vip_view_sorted_by_packets_then_bits_then_flows_then_name() {
        let s = series();
        let mut ui = Ui::default();
        let f = frame(Some(&s[0]), &s[1], ui, None).join("\n");
        assert_eq!(
            f,
            "lb top  00:00:11 UTC  agent up 1 min 41 s  rates over 1.00 s
connection table: 1.5k entries  drops: 0 pkt/s  probe to swap (last change): 9.5 ms
view: VIPs and backends  sort: pkt/s  keys: q quit, s sort, v view

VIP / BACKEND         STATE   HEALTH       WEIGHT  CONNS     PACKETS        BITS  NEW FLOWS   SHARE
web 10.0.0.10:80/tcp  2/2 up  2/2 healthy       -     50  4.0k pkt/s  4.0M bit/s       40/s  100.0%
  10.1.0.1:8080       up      up                1     40  3.0k pkt/s  3.0M bit/s       30/s   75.0%
  10.1.0.2:8080       up      up                1     10  1.0k pkt/s  1.0M bit/s       10/s   25.0%
api 10.0.0.11:80/tcp  1/1 up  1/1 healthy       -      2     1 pkt/s   800 bit/s        0/s    0.0%
  10.1.0.3:8080       up      up                1      2     1 pkt/s   800 bit/s        0/s  100.0%"
        );
        assert_eq!(ui.key(b's'), KeyEffect::Redraw);
        assert_eq!(ui.sort, Sort::Bits);
        assert_eq!(ui.key(b's'), KeyEffect::Redraw);
        assert_eq!(ui.sort, Sort::Flows);
        assert_eq!(ui.key(b's'), KeyEffect::Redraw);
        assert_eq!(ui.sort, Sort::Name);
        let f = frame(Some(&s[1]), &s[2], ui, None);
        assert_eq!(f[2], "view: VIPs and backends  sort: name  keys: q quit, s sort, v view");
        let names: Vec<&str> = f[5..].iter().map(|l| l.trim_start().split("  ").next().unwrap()).collect();
        assert_eq!(names, ["api 10.0.0.11:80/tcp", "10.1.0.3:8080", "web 10.0.0.10:80/tcp", "10.1.0.1:8080", "10.1.0.2:8080"]);
        assert_eq!(ui.key(b's'), KeyEffect::Redraw);
        assert_eq!(ui.sort, Sort::Packets);
        assert_eq!(ui.key(b'x'), KeyEffect::None);
        assert_eq!(ui.key(b'q'), KeyEffect::Quit);
    }

    #[test]
    fn sorting_by_each_column() {
        let s = series();
        // Window 1→2 gives web's 10.1.0.1 3.0k pkt/s, 3.0 Mbit/s, 40 flows/s. Give 10.1.0.2 fewer
        // packets but more bits and flows, and api more bits than web, so every column orders
        // differently.
        let mut rows = vip_rows(Some(&s[1]), &s[2]);
        let web = rows.iter_mut().find(|v| v.name == "web").unwrap();
        web.backends[1].rates = Some(Rates { packets: 10.0, bits: 9e9, new_flows: 99.0 });
        let api = rows.iter_mut().find(|v| v.name == "api").unwrap();
        api.rates = Some(Rates { packets: 1.0, bits: 9e9, new_flows: 0.0 });
        let order = |rows: &[VipRow]| -> Vec<String> {
            rows.iter().flat_map(|v| std::iter::once(v.name.clone()).chain(v.backends.iter().map(|b| b.endpoint.to_string()))).collect()
        };
        sort_rows(&mut rows, Sort::Packets);
        assert_eq!(order(&rows), ["web", "10.1.0.1:8080", "10.1.0.2:8080", "api", "10.1.0.3:8080"]);
        sort_rows(&mut rows, Sort::Bits);
        assert_eq!(order(&rows), ["api", "10.1.0.3:8080", "web", "10.1.0.2:8080", "10.1.0.1:8080"]);
        sort_rows(&mut rows, Sort::Flows);
        assert_eq!(order(&rows), ["web", "10.1.0.2:8080", "10.1.0.1:8080", "api", "10.1.0.3:8080"]);
        sort_rows(&mut rows, Sort::Name);
        assert_eq!(order(&rows), ["api", "10.1.0.3:8080", "web", "10.1.0.1:8080", "10.1.0.2:8080"]);
        // Rows without a rate (new since the last snapshot) go last.
        let mut rows = vip_rows(Some(&s[1]), &s[2]);
        rows.iter_mut().find(|v| v.name == "web").unwrap().rates = None;
        sort_rows(&mut rows, Sort::Packets);
        assert_eq!(rows[0].name, "api");
    }

    #[test]
    fn reasons_view_splits_drops_from_the_rest() {
        let s = series();
        let mut ui = Ui::default();
        assert_eq!(ui.key(b'v'), KeyEffect::Redraw);
        let f = frame(Some(&s[1]), &s[2], ui, None).join("\n");
        assert_eq!(
            f,
            "lb top  00:00:11 UTC  agent up 1 min 41 s  rates over 500.0 ms
connection table: 1.5k entries  drops: 204 pkt/s  probe to swap (last change): 12.2 ms
view: verdict reasons  sort: rate  keys: q quit, s sort, v view

DROPS            PER SECOND  TOTAL
drop_no_backend       200/s    100
drop_martian            4/s      2
OTHER REASONS       PER SECOND  TOTAL
forward_to_backend      1.5k/s   3.8k
reply_to_client         1.5k/s   3.3k
pass_not_vip               0/s      5"
        );
        // In the reasons view `s` goes rate ↔ name.
        assert_eq!(ui.key(b's'), KeyEffect::Redraw);
        assert_eq!(ui.sort, Sort::Name);
        let f = frame(Some(&s[1]), &s[2], ui, None);
        assert_eq!(f[5], "drop_martian            4/s      2");
        assert_eq!(ui.key(b's'), KeyEffect::Redraw);
        assert_eq!(ui.sort, Sort::Packets);
        assert_eq!(ui.key(b'v'), KeyEffect::Redraw);
        assert_eq!(ui.view, View::Vips);
    }

    #[test]
    fn capacity_shown_when_reported() {
        let mut s = series();
        assert_eq!(s[0].capacity, None);
        s[2].capacity = connection_capacity(&json!({"connection_capacity": 1_000_000}));
        assert_eq!(s[2].capacity, Some(1_000_000));
        let f = frame(Some(&s[1]), &s[2], Ui::default(), Some("cannot reach the agent"));
        assert_eq!(f[1], "connection table: 1.5k entries of 1.0M (0.1%)  drops: 204 pkt/s  probe to swap (last change): 12.2 ms");
        assert_eq!(f[3], "error: cannot reach the agent (showing the last answer)");
    }

    #[test]
    fn plain_mode_prints_one_block_per_window() {
        let s = series();
        let out: String = s.windows(2).map(|w| plain_block(&w[0], &w[1])).collect();
        assert_eq!(
            out,
            "lb top  00:00:11 UTC  agent up 1 min 41 s  rates over 1.00 s
connection table: 1.5k entries  drops: 0 pkt/s  probe to swap (last change): 9.5 ms
VIP / BACKEND         STATE   HEALTH       WEIGHT  CONNS     PACKETS        BITS  NEW FLOWS   SHARE
web 10.0.0.10:80/tcp  2/2 up  2/2 healthy       -     50  4.0k pkt/s  4.0M bit/s       40/s  100.0%
  10.1.0.1:8080       up      up                1     40  3.0k pkt/s  3.0M bit/s       30/s   75.0%
  10.1.0.2:8080       up      up                1     10  1.0k pkt/s  1.0M bit/s       10/s   25.0%
api 10.0.0.11:80/tcp  1/1 up  1/1 healthy       -      2     1 pkt/s   800 bit/s        0/s    0.0%
  10.1.0.3:8080       up      up                1      2     1 pkt/s   800 bit/s        0/s  100.0%
drops: none in the window
OTHER REASONS       PER SECOND  TOTAL
forward_to_backend      2.0k/s   3.0k
reply_to_client         2.0k/s   2.5k

lb top  00:00:11 UTC  agent up 1 min 41 s  rates over 500.0 ms
connection table: 1.5k entries  drops: 204 pkt/s  probe to swap (last change): 12.2 ms
VIP / BACKEND         STATE   HEALTH       WEIGHT  CONNS     PACKETS        BITS  NEW FLOWS   SHARE
web 10.0.0.10:80/tcp  1/2 up  1/2 healthy       -     50  3.0k pkt/s  3.0M bit/s       40/s  100.0%
  10.1.0.1:8080       up      up                1     40  3.0k pkt/s  3.0M bit/s       40/s  100.0%
  10.1.0.2:8080       down    down              1     10     0 pkt/s     0 bit/s        0/s    0.0%
api 10.0.0.11:80/tcp  1/1 up  1/1 healthy       -      2     0 pkt/s     0 bit/s        0/s    0.0%
  10.1.0.3:8080       up      up                1      2     0 pkt/s     0 bit/s        0/s    0.0%
DROPS            PER SECOND  TOTAL
drop_no_backend       200/s    100
drop_martian            4/s      2
OTHER REASONS       PER SECOND  TOTAL
forward_to_backend      1.5k/s   3.8k
reply_to_client         1.5k/s   3.3k

"
        );
    }

    #[test]
    fn stats_rates_for_scripts() {
        let s = series();
        let r = stats_rates(&s[1], &s[2]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"unix_time":1767225611,"interval_seconds":0.5,"reasons_per_second":[["forward_to_backend",1500.0],["reply_to_client",1500.0],["pass_not_vip",0.0],["drop_no_backend",200.0],["drop_martian",4.0]],"drops_per_second":204.0,"health_per_second":{"probes":10.0,"failures":0.0,"transitions":0.0,"swaps":0.0},"connection_entries":1480,"connection_capacity":null,"last_probe_to_swap_ms":12.25}"#
        );
    }
}
