//! The words and figures `lb top` shows: the header lines and each table's cells, shared by the
//! full-screen view and the plain blocks, and the plain blocks themselves.

use super::model::{ReasonRow, Snapshot, Sort, VipRow, drops_per_second, reason_rows, sort_reasons, sort_rows, vip_rows, window};
use crate::cli::{
    table::{Align, table_aligned},
    units,
};

/// `HH:MM:SS UTC` of a unix time.
pub fn clock(wall: u64) -> String {
    format!("{:02}:{:02}:{:02} UTC", wall / 3600 % 24, wall / 60 % 60, wall % 60)
}

fn dash_or<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), f)
}

/// The first line: time, the agent's uptime and the window the rates cover.
pub fn title(prev: Option<&Snapshot>, cur: &Snapshot) -> String {
    let window = match prev {
        Some(p) => format!("rates over {}", units::millis(window(p, cur) * 1000.0)),
        None => "rates from the next refresh".to_owned(),
    };
    format!("lb top  {}  agent up {}  {window}", clock(cur.wall), units::uptime(cur.status.uptime_seconds))
}

/// Connection table entries (of the capacity when known), drops/s, last probe-to-swap.
pub fn summary(prev: Option<&Snapshot>, cur: &Snapshot) -> String {
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

/// How a row stands out on the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emphasis {
    /// An ordinary row.
    Normal,
    /// A VIP's line above its backends.
    Group,
    /// Something to look at: a backend not up, a drop reason seeing packets.
    Alert,
}

/// One row of a table: its cells, as shown, and how it stands out.
#[derive(Clone, Debug, PartialEq)]
pub struct TextRow {
    /// One string per column.
    pub cells: Vec<String>,
    /// How it stands out.
    pub emphasis: Emphasis,
}

/// A table ready to show: header, alignment and rows, and the column sorted by.
#[derive(Clone, Debug, PartialEq)]
pub struct TextTable {
    /// Column names.
    pub header: Vec<&'static str>,
    /// Each column's alignment.
    pub align: Vec<Align>,
    /// The rows, in order.
    pub rows: Vec<TextRow>,
    /// The column the rows are sorted by.
    pub sorted: usize,
}

impl TextTable {
    /// The table as plain text, columns padded to their widest cell.
    pub fn plain(&self) -> String {
        let cells: Vec<Vec<String>> = self.rows.iter().map(|r| r.cells.clone()).collect();
        table_aligned(&self.header, &self.align, &cells)
    }
}

/// A part of a view's body: a one-line note or a table.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// A line of text.
    Note(String),
    /// A table.
    Table(TextTable),
}

impl Block {
    /// The block as plain text, ending in a newline.
    pub fn plain(&self) -> String {
        match self {
            Block::Note(n) => format!("{n}\n"),
            Block::Table(t) => t.plain(),
        }
    }
}

const VIP_HEADER: [&str; 9] = ["VIP / BACKEND", "STATE", "HEALTH", "WEIGHT", "CONNS", "PACKETS", "BITS", "NEW FLOWS", "SHARE"];
const VIP_ALIGN: [Align; 9] = [Align::Left, Align::Left, Align::Left, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right, Align::Right];

/// The VIP view's body: a line per VIP, then one per backend, indented; "no VIPs" without any.
pub fn vip_blocks(rows: &[VipRow], sort: Sort) -> Vec<Block> {
    if rows.is_empty() {
        return vec![Block::Note("no VIPs".to_owned())];
    }
    let mut out = Vec::new();
    for v in rows {
        let total = v.backends.len();
        out.push(TextRow {
            cells: vec![
                match v.ring_history {
                    Some((moved, retained)) => format!("{} {} ({moved} moved{})", v.name, v.endpoint, if retained { ", ring retained" } else { "" }),
                    None => format!("{} {}", v.name, v.endpoint),
                },
                format!("{}/{total} up", v.serving),
                format!("{}/{total} healthy", v.healthy),
                "-".to_owned(),
                units::count(v.backends.iter().map(|b| b.connections).sum()),
                dash_or(v.rates, |r| units::pps(r.packets)),
                dash_or(v.rates, |r| format!("{} bit/s", units::si(r.bits))),
                dash_or(v.rates, |r| units::per_second(r.new_flows)),
                dash_or(v.share, units::percent),
            ],
            emphasis: Emphasis::Group,
        });
        for b in &v.backends {
            out.push(TextRow {
                cells: vec![
                    format!("  {}", b.endpoint),
                    b.state.clone(),
                    b.health.clone(),
                    b.weight.to_string(),
                    units::count(b.connections),
                    dash_or(b.rates, |r| units::pps(r.packets)),
                    dash_or(b.rates, |r| format!("{} bit/s", units::si(r.bits))),
                    dash_or(b.rates, |r| units::per_second(r.new_flows)),
                    dash_or(b.share, units::percent),
                ],
                emphasis: if b.state == "up" && b.health == "up" { Emphasis::Normal } else { Emphasis::Alert },
            });
        }
    }
    let sorted = match sort {
        Sort::Name => 0,
        Sort::Packets => 5,
        Sort::Bits => 6,
        Sort::Flows => 7,
    };
    vec![Block::Table(TextTable { header: VIP_HEADER.to_vec(), align: VIP_ALIGN.to_vec(), rows: out, sorted })]
}

/// The reasons view's body: drops, then the other reasons, each sorted. With `active_only`,
/// reasons without packets in the window are left out (a group left empty is one note).
pub fn reason_blocks(rows: &[ReasonRow], sort: Sort, active_only: bool) -> Vec<Block> {
    let mut out = Vec::new();
    for (heading, drops) in [("DROPS", true), ("OTHER REASONS", false)] {
        let mut group: Vec<ReasonRow> =
            rows.iter().filter(|r| r.is_drop() == drops && (!active_only || r.per_second.unwrap_or(0.0) > 0.0)).cloned().collect();
        if active_only && group.is_empty() {
            out.push(Block::Note(format!("{}: none in the window", heading.to_lowercase())));
            continue;
        }
        sort_reasons(&mut group, sort);
        let rows = group
            .iter()
            .map(|r| TextRow {
                cells: vec![r.name.clone(), dash_or(r.per_second, units::per_second), units::count(r.total)],
                emphasis: if r.is_drop() && r.per_second.unwrap_or(0.0) > 0.0 { Emphasis::Alert } else { Emphasis::Normal },
            })
            .collect();
        let sorted = if sort == Sort::Name { 0 } else { 1 };
        out.push(Block::Table(TextTable {
            header: vec![heading, "PER SECOND", "TOTAL"],
            align: vec![Align::Left, Align::Right, Align::Right],
            rows,
            sorted,
        }));
    }
    out
}

/// One block of the plain (not a terminal) output: the VIP view sorted by packets/s and the
/// reasons that saw packets, then an empty line.
pub fn plain_block(prev: &Snapshot, cur: &Snapshot) -> String {
    let mut rows = vip_rows(Some(prev), cur);
    sort_rows(&mut rows, Sort::Packets);
    let body = vip_blocks(&rows, Sort::Packets).into_iter().chain(reason_blocks(&reason_rows(Some(prev), cur), Sort::Packets, true));
    format!("{}\n{}\n{}\n", title(Some(prev), cur), summary(Some(prev), cur), body.map(|b| b.plain()).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::top::fixtures::series;

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
}
