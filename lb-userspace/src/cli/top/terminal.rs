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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::{
        pty::{Winsize, openpty},
        sys::termios::tcgetattr,
    };
    use std::{io::Read as _, process::Command, thread};

    const PANIC: &str = "a bug while the view runs";

    #[test]
    #[ignore = "run on a pseudo-terminal by a_panic_restores_the_terminal_before_its_message"]
    fn panics_on_the_screen() {
        let mut screen = Screen::enter().expect("a terminal");
        screen.draw(|f| f.render_widget(ratatui::text::Line::raw("drawn"), f.area())).expect("drawing");
        panic!("{PANIC}");
    }

    /// Runs [`panics_on_the_screen`] in a new process on a pseudo-terminal: the panic's message
    /// comes after the alternate screen is left (on the main screen, where it can be read), and
    /// the terminal's settings are as before.
    #[test]
    fn a_panic_restores_the_terminal_before_its_message() {
        let pty = openpty(&Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 }, None).expect("openpty");
        let before = tcgetattr(&pty.slave).expect("tcgetattr");
        let io = || std::process::Stdio::from(pty.slave.try_clone().expect("dup of the pty"));
        let mut child = Command::new("setsid")
            .arg("--ctty")
            .arg(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "cli::top::terminal::tests::panics_on_the_screen", "--ignored", "--nocapture"])
            .env("RUST_BACKTRACE", "0")
            .stdin(io())
            .stdout(io())
            .stderr(io())
            .spawn()
            .expect("running the test binary");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the panicking test did not end");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let after = tcgetattr(&pty.slave).expect("tcgetattr");
        drop(pty.slave);
        // What it wrote waits in the pty; reading past it fails (EIO) once no one holds the other side.
        let mut master = std::fs::File::from(pty.master);
        let mut output = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = master.read(&mut buf) {
            output.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&output);
        assert!(!status.success(), "{text}");
        assert_eq!(
            (after.input_flags, after.output_flags, after.local_flags),
            (before.input_flags, before.output_flags, before.local_flags),
            "{text:?}"
        );
        let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("no {needle:?} in {text:?}"));
        assert!(at("\x1b[?1049h") < at("drawn"), "{text:?}");
        assert!(at("drawn") < at("\x1b[?1049l"), "{text:?}");
        assert!(at("\x1b[?1049l") < at(PANIC), "the message is printed after leaving the alternate screen: {text:?}");
    }
}
