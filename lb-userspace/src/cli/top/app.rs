//! The full-screen view's state: the last two snapshots, the last error, the view and the sort
//! column, and what each key does to them.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::{Snapshot, Sort, View};

/// What is shown, sorted how.
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
    /// Applies a key press: `q` (or Ctrl-C, Esc) quits, `s` cycles the sort column, `v` the view.
    /// Releases and repeats of a key do nothing.
    pub fn key(&mut self, key: KeyEvent) -> KeyEffect {
        if key.kind != KeyEventKind::Press {
            return KeyEffect::None;
        }
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => KeyEffect::Quit,
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => KeyEffect::Quit,
            KeyCode::Char('s' | 'S') => {
                self.sort = match (self.view, self.sort) {
                    (View::Vips, Sort::Packets) => Sort::Bits,
                    (View::Vips, Sort::Bits) => Sort::Flows,
                    (View::Vips, Sort::Flows) => Sort::Name,
                    (_, Sort::Name) => Sort::Packets,
                    (View::Reasons, _) => Sort::Name,
                };
                KeyEffect::Redraw
            }
            KeyCode::Char('v' | 'V') => {
                self.view = match self.view {
                    View::Vips => View::Reasons,
                    View::Reasons => View::Vips,
                };
                KeyEffect::Redraw
            }
            _ => KeyEffect::None,
        }
    }

    /// The sort column's name, as the view line shows it.
    pub fn sort_label(&self) -> &'static str {
        match (self.view, self.sort) {
            (_, Sort::Name) => "name",
            (View::Reasons, _) => "rate",
            (View::Vips, Sort::Packets) => "pkt/s",
            (View::Vips, Sort::Bits) => "bit/s",
            (View::Vips, Sort::Flows) => "new flows/s",
        }
    }
}

/// Everything the full-screen view draws from.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    /// View and sort.
    pub ui: Ui,
    /// The snapshot before `cur`, once there is one.
    pub prev: Option<Snapshot>,
    /// The latest snapshot.
    pub cur: Snapshot,
    /// Why the last refresh failed, until one succeeds.
    pub error: Option<String>,
}

impl App {
    /// The state after the first snapshot.
    pub fn new(first: Snapshot) -> Self {
        App { ui: Ui::default(), prev: None, cur: first, error: None }
    }

    /// A new snapshot: the current one becomes the previous, and the error is gone.
    pub fn refreshed(&mut self, snap: Snapshot) {
        self.prev = Some(std::mem::replace(&mut self.cur, snap));
        self.error = None;
    }

    /// A refresh that failed: the last answer stays, with the error shown.
    pub fn failed(&mut self, error: String) {
        self.error = Some(error);
    }

    /// Applies a key press (see [`Ui::key`]).
    pub fn key(&mut self, key: KeyEvent) -> KeyEffect {
        self.ui.key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn keys_cycle_the_sort_per_view_and_quit() {
        let mut ui = Ui::default();
        let mut sorts = Vec::new();
        for _ in 0..4 {
            assert_eq!(ui.key(press('s')), KeyEffect::Redraw);
            sorts.push(ui.sort);
        }
        assert_eq!(sorts, [Sort::Bits, Sort::Flows, Sort::Name, Sort::Packets]);
        assert_eq!(ui.key(press('S')), KeyEffect::Redraw);
        assert_eq!(ui.key(press('V')), KeyEffect::Redraw);
        // The reasons view has two sort orders only; bits/s there is read as "not by name".
        assert_eq!((ui.view, ui.sort_label()), (View::Reasons, "rate"));
        assert_eq!(ui.key(press('s')), KeyEffect::Redraw);
        assert_eq!(ui.sort, Sort::Name);
        assert_eq!(ui.key(press('s')), KeyEffect::Redraw);
        assert_eq!(ui.sort, Sort::Packets);
        assert_eq!(ui.key(press('v')), KeyEffect::Redraw);
        assert_eq!(ui.view, View::Vips);
        assert_eq!(ui.key(press('x')), KeyEffect::None);
        assert_eq!(ui.key(KeyEvent::new(KeyCode::Up, KeyModifiers::NONE)), KeyEffect::None);
        // A release (terminals reporting them) does not act twice.
        let release = KeyEvent { kind: KeyEventKind::Release, ..press('v') };
        assert_eq!(ui.key(release), KeyEffect::None);
        assert_eq!(ui.view, View::Vips);
        for quit in [
            press('q'),
            press('Q'),
            KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE),
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
        ] {
            assert_eq!(ui.key(quit), KeyEffect::Quit, "{quit:?}");
        }
        // A plain `c` is not Ctrl-C.
        assert_eq!(ui.key(press('c')), KeyEffect::None);
    }
}
