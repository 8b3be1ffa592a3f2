//! Draws the full-screen view with ratatui: three header lines (and the last error), then the
//! view's tables. Columns keep their natural width; on a narrow terminal the columns that do not
//! fit are left out from the right, on a short one the rows from the bottom, and the last line
//! says how much is not shown.

use ratatui::{
    Frame,
    layout::{Alignment, Constraint, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row, Table},
};

use super::{
    app::App,
    model::{View, reason_rows, sort_rows, vip_rows},
    text::{Block, Emphasis, TextTable, reason_blocks, summary, title, vip_blocks},
};
use crate::cli::{table::Align, units};

/// Space between two columns, as in the plain tables.
const COLUMN_GAP: u16 = 2;

/// The body of the view the state selects, sorted as it says.
pub fn blocks(app: &App) -> Vec<Block> {
    let prev = app.prev.as_ref();
    match app.ui.view {
        View::Vips => {
            let mut rows = vip_rows(prev, &app.cur);
            sort_rows(&mut rows, app.ui.sort);
            vip_blocks(&rows, app.ui.sort)
        }
        View::Reasons => reason_blocks(&reason_rows(prev, &app.cur), app.ui.sort, false),
    }
}

/// Draws the whole view into the frame.
pub fn render(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let prev = app.prev.as_ref();
    let view = match app.ui.view {
        View::Vips => "VIPs and backends",
        View::Reasons => "verdict reasons",
    };
    let mut header = vec![
        Line::styled(title(prev, &app.cur), Style::new().add_modifier(Modifier::BOLD)),
        Line::raw(summary(prev, &app.cur)),
        Line::raw(format!("view: {view}  sort: {}  keys: q quit, s sort, v view", app.ui.sort_label())),
    ];
    if let Some(e) = &app.error {
        header.push(Line::styled(format!("error: {e} (showing the last answer)"), Style::new().fg(Color::Red)));
    }
    header.push(Line::default());
    let height = area.height.min(header.len() as u16);
    frame.render_widget(Paragraph::new(header), Rect { height, ..area });
    render_body(frame, Rect { y: area.y + height, height: area.height - height, ..area }, &blocks(app));
}

/// Lines a block takes with all its rows.
fn lines(block: &Block) -> usize {
    match block {
        Block::Note(_) => 1,
        Block::Table(t) => 1 + t.rows.len(),
    }
}

/// The widths of the columns that fit in `width`, from the left; the first always (cut if need be).
fn fitting_widths(table: &TextTable, width: u16) -> Vec<u16> {
    let mut used = 0u16;
    let mut out = Vec::new();
    for (i, name) in table.header.iter().enumerate() {
        let w = table.rows.iter().map(|r| Line::raw(r.cells[i].as_str()).width()).chain([name.len()]).max().unwrap_or(0);
        let w = u16::try_from(w).unwrap_or(u16::MAX);
        let gap = if i == 0 { 0 } else { COLUMN_GAP };
        if i > 0 && used.saturating_add(gap).saturating_add(w) > width {
            break;
        }
        used = used.saturating_add(gap).saturating_add(w);
        out.push(w);
    }
    out
}

/// The last line when something does not fit.
fn not_shown(more_lines: usize, more_columns: usize) -> String {
    let lines = units::plural_with(more_lines as u64, "more line", "more lines");
    let columns = units::plural_with(more_columns as u64, "more column", "more columns");
    let what = match (more_lines, more_columns) {
        (0, _) => columns,
        (_, 0) => lines,
        _ => format!("{lines} and {columns}"),
    };
    format!("... {what} (a larger terminal shows them)")
}

fn cell(text: &str, align: Align) -> Cell<'_> {
    let line = Line::raw(text);
    Cell::from(match align {
        Align::Left => line,
        Align::Right => line.alignment(Alignment::Right),
    })
}

fn row_style(emphasis: Emphasis) -> Style {
    match emphasis {
        Emphasis::Normal => Style::new(),
        Emphasis::Group => Style::new().add_modifier(Modifier::BOLD),
        Emphasis::Alert => Style::new().fg(Color::Red),
    }
}

/// `table`'s header and first `rows` rows, in the columns of `widths`.
fn table_widget<'a>(table: &'a TextTable, widths: &[u16], rows: usize) -> Table<'a> {
    let columns = widths.len();
    let header = table.header.iter().zip(&table.align).take(columns).enumerate().map(|(i, (name, align))| {
        let style = if i == table.sorted { Style::new().add_modifier(Modifier::UNDERLINED) } else { Style::new() };
        cell(name, *align).style(style)
    });
    let body = table.rows.iter().take(rows).map(|r| {
        Row::new(r.cells.iter().zip(&table.align).take(columns).map(|(c, align)| cell(c, *align))).style(row_style(r.emphasis))
    });
    Table::new(body, widths.iter().map(|w| Constraint::Length(*w)))
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .column_spacing(COLUMN_GAP)
}

fn render_body(frame: &mut Frame, area: Rect, blocks: &[Block]) {
    let widths: Vec<Vec<u16>> = blocks
        .iter()
        .map(|b| match b {
            Block::Table(t) => fitting_widths(t, area.width),
            Block::Note(_) => Vec::new(),
        })
        .collect();
    let more_columns = blocks
        .iter()
        .zip(&widths)
        .map(|(b, w)| match b {
            Block::Table(t) => t.header.len() - w.len(),
            Block::Note(_) => 0,
        })
        .max()
        .unwrap_or(0);
    let total: usize = blocks.iter().map(lines).sum();
    let height = usize::from(area.height);
    let (mut budget, note) = if total <= height && more_columns == 0 {
        (total, None)
    } else {
        let budget = total.min(height.saturating_sub(1));
        (budget, (height > 0).then(|| not_shown(total - budget, more_columns)))
    };
    let mut y = area.y;
    for (block, widths) in blocks.iter().zip(&widths) {
        let shown = lines(block).min(budget);
        if shown == 0 {
            break;
        }
        let rect = Rect { y, height: shown as u16, ..area };
        match block {
            Block::Note(n) => frame.render_widget(Line::raw(n.as_str()), rect),
            Block::Table(t) => frame.render_widget(table_widget(t, widths, shown - 1), rect),
        }
        y += shown as u16;
        budget -= shown;
    }
    if let Some(note) = note {
        frame.render_widget(Line::raw(note), Rect { y, height: 1, ..area });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::top::{app::KeyEffect, fixtures::series, model::Sort};
    use ratatui::{
        Terminal,
        backend::TestBackend,
        buffer::Buffer,
        crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    };

    fn press(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    /// The app after the snapshots `upto` and the one before it.
    fn app(upto: usize) -> App {
        let s = series();
        let mut app = App::new(s[0].clone());
        for snap in &s[1..=upto] {
            app.refreshed(snap.clone());
        }
        app
    }

    /// Draws `app` on a `width`×`height` test terminal; the buffer's lines and the buffer.
    fn draw(app: &App, width: u16, height: u16) -> (Vec<String>, Buffer) {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| render(f, app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let lines = (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect()).collect();
        (lines, buffer)
    }

    /// Draws `app` on a terminal of the size `name` ends in (`-WxH`) and asserts that the buffer's
    /// lines are exactly the recorded screen `snapshots/{name}.txt` (its lines padded with spaces
    /// to `W`, then blank lines to `H`); the lines and the buffer.
    fn recorded(app: &App, name: &str) -> (Vec<String>, Buffer) {
        let path = format!("{}/src/cli/top/snapshots/{name}.txt", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (w, h) = name.rsplit_once('-').and_then(|(_, size)| size.split_once('x')).expect("a name ending in -WxH");
        let (w, h): (u16, u16) = (w.parse().unwrap(), h.parse().unwrap());
        let width = usize::from(w);
        let mut expected: Vec<String> = text.lines().map(|l| format!("{l:<width$}")).collect();
        assert!(expected.len() <= usize::from(h) && expected.iter().all(|l| l.chars().count() == width), "{path} does not fit {w}x{h}");
        expected.resize(usize::from(h), " ".repeat(width));
        let (lines, buffer) = draw(app, w, h);
        assert_eq!(lines, expected, "{name}");
        (lines, buffer)
    }

    #[test]
    fn first_frame_before_any_rate() {
        recorded(&app(0), "vips-first-100x12");
    }

    #[test]
    fn vip_view_sorted_by_packets_then_bits_then_flows_then_name() {
        let mut app = app(1);
        let (lines, buffer) = recorded(&app, "vips-by-packets-120x11");
        // The header row is bold, the sort column's name underlined; VIP lines bold.
        let packets_x = lines[4].find("PACKETS").unwrap() as u16;
        assert!(buffer[(0, 4)].modifier.contains(Modifier::BOLD));
        assert!(buffer[(packets_x, 4)].modifier.contains(Modifier::BOLD | Modifier::UNDERLINED));
        assert!(!buffer[(0, 4)].modifier.contains(Modifier::UNDERLINED));
        assert!(buffer[(0, 5)].modifier.contains(Modifier::BOLD));
        assert!(!buffer[(2, 6)].modifier.contains(Modifier::BOLD));

        // In this window bits/s and new flows/s order the rows as pkt/s does (`sorting_by_each_column`
        // sets rates that order differently); the view line and the underlined column follow the key.
        assert_eq!(app.key(press('s')), KeyEffect::Redraw);
        let (lines, buffer) = draw(&app, 120, 11);
        assert_eq!(lines[2].trim_end(), "view: VIPs and backends  sort: bit/s  keys: q quit, s sort, v view");
        let bits_x = lines[4].find("BITS").unwrap() as u16;
        assert!(buffer[(bits_x, 4)].modifier.contains(Modifier::UNDERLINED));
        assert!(!buffer[(packets_x, 4)].modifier.contains(Modifier::UNDERLINED));
        assert_eq!(app.key(press('s')), KeyEffect::Redraw);
        let (lines, _) = draw(&app, 120, 11);
        assert_eq!(lines[2].trim_end(), "view: VIPs and backends  sort: new flows/s  keys: q quit, s sort, v view");

        // By name, over the next window (10.1.0.2 goes down: shown red).
        assert_eq!(app.key(press('s')), KeyEffect::Redraw);
        assert_eq!(app.ui.sort, Sort::Name);
        app.refreshed(series()[2].clone());
        let (_, buffer) = recorded(&app, "vips-by-name-next-window-120x11");
        assert!(buffer[(0, 4)].modifier.contains(Modifier::UNDERLINED));
        assert_eq!(buffer[(2, 9)].fg, Color::Red);
        assert_eq!(buffer[(2, 8)].fg, Color::Reset);
        assert_eq!(app.key(press('s')), KeyEffect::Redraw);
        assert_eq!(app.ui.sort, Sort::Packets);
        assert_eq!(app.key(press('q')), KeyEffect::Quit);
    }

    #[test]
    fn reasons_view_splits_drops_from_the_rest() {
        let mut app = app(2);
        assert_eq!(app.key(press('v')), KeyEffect::Redraw);
        let (_, buffer) = recorded(&app, "reasons-by-rate-90x14");
        // Drops seeing packets are red; the other reasons are not.
        assert_eq!(buffer[(0, 5)].fg, Color::Red);
        assert_eq!(buffer[(0, 8)].fg, Color::Reset);
        // In the reasons view `s` goes rate ↔ name.
        assert_eq!(app.key(press('s')), KeyEffect::Redraw);
        let (lines, _) = draw(&app, 90, 14);
        assert_eq!(lines[2].trim_end(), "view: verdict reasons  sort: name  keys: q quit, s sort, v view");
        assert_eq!(lines[5].trim_end(), "drop_martian            4/s      2");
        assert_eq!(lines[8].trim_end(), "forward_to_backend      1.5k/s   3.8k");
        assert_eq!(lines[9].trim_end(), "pass_not_vip               0/s      5");
        assert_eq!(app.key(press('s')), KeyEffect::Redraw);
        assert_eq!(app.key(press('v')), KeyEffect::Redraw);
        let (lines, _) = draw(&app, 100, 14);
        assert_eq!(lines[4].trim_end(), "VIP / BACKEND         STATE   HEALTH       WEIGHT  CONNS     PACKETS        BITS  NEW FLOWS   SHARE");
    }

    #[test]
    fn capacity_and_the_last_error_shown() {
        let mut s = series();
        s[2].capacity = crate::cli::top::model::connection_capacity(&serde_json::json!({"connection_capacity": 1_000_000}));
        let mut app = App::new(s[1].clone());
        app.refreshed(s[2].clone());
        app.failed("cannot reach the agent".to_owned());
        let (lines, buffer) = draw(&app, 110, 12);
        assert_eq!(lines[1].trim_end(), "connection table: 1.5k entries of 1.0M (0.1%)  drops: 204 pkt/s  probe to swap (last change): 12.2 ms");
        assert_eq!(lines[3].trim_end(), "error: cannot reach the agent (showing the last answer)");
        assert_eq!(buffer[(0, 3)].fg, Color::Red);
        assert_eq!(lines[4].trim_end(), "");
        assert!(lines[5].starts_with("VIP / BACKEND"));
        // The next answer clears it.
        app.refreshed(s[2].clone());
        let (lines, _) = draw(&app, 110, 12);
        assert_eq!(lines[3].trim_end(), "");
        assert!(lines[4].starts_with("VIP / BACKEND"));
    }

    #[test]
    fn narrow_terminal_leaves_out_whole_columns_from_the_right() {
        let app = app(1);
        recorded(&app, "vips-narrow-64x12");
        // Narrower than the first column: it is cut, nothing else shown.
        recorded(&app, "vips-narrowest-16x11");
    }

    #[test]
    fn short_terminal_leaves_out_rows_from_the_bottom() {
        let mut app = app(2);
        recorded(&app, "vips-short-100x8");
        // The reasons view cuts across its two tables; narrow and short together.
        app.key(press('v'));
        recorded(&app, "reasons-short-narrow-30x9");
        // Only the header fits: nothing more, no panic.
        let (lines, _) = draw(&app, 30, 3);
        assert_eq!(lines[2], "view: verdict reasons  sort: r");
    }

    #[test]
    fn no_vips_and_what_is_not_shown() {
        let mut app = app(1);
        app.cur.status.vips.clear();
        let (lines, _) = draw(&app, 80, 6);
        assert_eq!(lines[4].trim_end(), "no VIPs");
        assert_eq!(not_shown(1, 0), "... 1 more line (a larger terminal shows them)");
        assert_eq!(not_shown(0, 1), "... 1 more column (a larger terminal shows them)");
        assert_eq!(not_shown(2, 3), "... 2 more lines and 3 more columns (a larger terminal shows them)");
    }
}
