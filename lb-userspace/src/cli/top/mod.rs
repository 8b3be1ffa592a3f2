//! `lb top` (a live view of the agent, refreshed every second) and `lb stats --watch/--rate`.
//!
//! Rates are computed here, from two consecutive snapshots of `GET /v1/status` and
//! `GET /v1/stats`: counter deltas over the time between them ([`model`]). [`text`] turns them
//! into the lines and table cells shown, and the plain blocks printed when stdout is not a
//! terminal (or with `--plain`). On a terminal, [`view`] draws them with ratatui from the state
//! in [`app`], and [`terminal`] holds the terminal (crossterm) and restores it on every way out
//! (q, Ctrl-C, SIGTERM, SIGHUP, an error or a panic). The loops below only fetch, wait and write.

mod app;
#[cfg(test)]
mod fixtures;
mod model;
mod terminal;
mod text;
mod view;

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

pub use model::{HealthRates, StatsRates, connection_capacity};

use super::{EXIT_REFUSED, EXIT_UNREACHABLE, render};
use crate::api::client::{Client, ClientError};
use app::{App, KeyEffect};
use model::{Snapshot, stats_rates};
use terminal::{Event, Screen};
use text::{clock, plain_block};

/// Time between two refreshes.
pub const INTERVAL: Duration = Duration::from_secs(1);

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
    if !plain && std::io::stdout().is_terminal() {
        match Screen::enter() {
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

/// The full-screen view until a quit key, a stop signal, `count` refreshes or a terminal error;
/// the terminal is restored before the error is printed.
fn full_screen(client: &Client, mut screen: Screen, start: Instant, first: Snapshot, count: Option<u64>) -> ExitCode {
    let result = run_screen(client, &mut screen, start, first, count);
    drop(screen);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: lb top lost the terminal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_screen(client: &Client, screen: &mut Screen, start: Instant, first: Snapshot, count: Option<u64>) -> std::io::Result<()> {
    let mut app = App::new(first);
    let mut tick = 1u32;
    let mut refreshes = 0u64;
    loop {
        screen.draw(|f| view::render(f, &app))?;
        if count.is_some_and(|c| refreshes >= c) {
            return Ok(());
        }
        // Keys until the next tick.
        let due = start + INTERVAL * tick;
        loop {
            match screen.wait(due)? {
                Event::Key(k) => match app.key(k) {
                    KeyEffect::Quit => return Ok(()),
                    KeyEffect::Redraw => screen.draw(|f| view::render(f, &app))?,
                    KeyEffect::None => {}
                },
                Event::Resize => screen.draw(|f| view::render(f, &app))?,
                Event::Stop => return Ok(()),
                Event::Tick => break,
            }
        }
        tick += 1;
        refreshes += 1;
        match fetch(client, start) {
            Ok((snap, _)) => app.refreshed(snap),
            Err(e) => app.failed(e.to_string()),
        }
    }
}
