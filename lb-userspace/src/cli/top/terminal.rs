//! The terminal for the full-screen view, through crossterm: raw mode and the alternate screen
//! while the view runs, and back to how it was on every way out. Dropping [`Screen`] restores it
//! (a quit, an error); a panic hook restores it before the panic's message is printed; SIGINT,
//! SIGTERM, SIGHUP and SIGQUIT end the loop, which then drops the screen.

use std::{
    io::{self, Stdout, stdout},
    sync::{
        Arc, Once,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor::Show,
        event::{self, KeyEvent},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};
use signal_hook::{SigId, consts::signal};

/// Whether the terminal is in raw mode on the alternate screen, so that restoring happens once.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The longest wait for a key before looking at the signal flag again.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Leaves the alternate screen, shows the cursor and ends raw mode, if the view set them up.
/// Safe to call more than once and from the panic hook.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(stdout(), LeaveAlternateScreen, Show);
        let _ = disable_raw_mode();
    }
}

/// Something for the loop.
#[derive(Debug)]
pub enum Event {
    /// A key.
    Key(KeyEvent),
    /// The terminal's size changed.
    Resize,
    /// A signal asked to stop.
    Stop,
    /// The time to refresh came.
    Tick,
}

/// The terminal while the view runs; restored when dropped.
pub struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    stop: Arc<AtomicBool>,
    signals: Vec<SigId>,
}

impl Screen {
    /// Raw mode (keys come from the controlling terminal even when stdin is redirected), the
    /// alternate screen, handlers that turn the stop signals into [`Event::Stop`], and a panic
    /// hook that restores the terminal first.
    pub fn enter() -> io::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        // From here on, dropping the screen undoes everything, also on the errors below.
        let mut screen =
            Screen { terminal: Terminal::new(CrosstermBackend::new(stdout()))?, stop: Arc::new(AtomicBool::new(false)), signals: Vec::new() };
        for s in [signal::SIGINT, signal::SIGTERM, signal::SIGHUP, signal::SIGQUIT] {
            screen.signals.push(signal_hook::flag::register(s, screen.stop.clone())?);
        }
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        execute!(stdout(), EnterAlternateScreen)?;
        screen.terminal.clear()?;
        Ok(screen)
    }

    /// Draws a frame with `render`.
    pub fn draw(&mut self, render: impl FnOnce(&mut ratatui::Frame)) -> io::Result<()> {
        self.terminal.draw(render).map(|_| ())
    }

    /// Waits for a key, a resize, a stop signal or `due`.
    pub fn wait(&mut self, due: Instant) -> io::Result<Event> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(Event::Stop);
            }
            let now = Instant::now();
            if now >= due {
                return Ok(Event::Tick);
            }
            if event::poll((due - now).min(SIGNAL_CHECK))? {
                match event::read()? {
                    event::Event::Key(k) => return Ok(Event::Key(k)),
                    event::Event::Resize(..) => return Ok(Event::Resize),
                    _ => {}
                }
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
        for id in self.signals.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
