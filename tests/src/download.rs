//! An HTTP download from the lab's backends (`/bytes/N`), checked byte by byte against the
//! servers' pattern, with what arrived and how long it took. Shared with `xtask`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::topology::in_namespace;

/// What one download received.
#[derive(Debug)]
pub struct Download {
    /// The HTTP status.
    pub status: u16,
    /// The body's Content-Length.
    pub length: usize,
    /// Body bytes received.
    pub received: usize,
    /// Every body byte matched the server's pattern (byte i is `b'a' + i % 26`).
    pub intact: bool,
    /// Bytes received in all, head included.
    pub wire_bytes: usize,
    /// How long it took.
    pub elapsed: Duration,
    /// Why it stopped early.
    pub error: Option<String>,
}

impl Download {
    /// Whether the whole body of `bytes` bytes arrived intact.
    pub fn complete(&self, bytes: usize) -> bool {
        self.status == 200 && self.length == bytes && self.received == bytes && self.intact && self.error.is_none()
    }
}

/// Downloads `/bytes/<bytes>` from `addr` in namespace `ns` on a new connection, the request
/// padded with a header of `pad` bytes (a request of several full-sized segments); gives up
/// after `limit`.
pub fn download(ns: &str, addr: SocketAddr, bytes: usize, pad: usize, limit: Duration) -> anyhow::Result<Download> {
    in_namespace(ns, move || {
        let started = Instant::now();
        let mut d = Download { status: 0, length: 0, received: 0, intact: true, wire_bytes: 0, elapsed: Duration::ZERO, error: None };
        let result = (|| -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_millis(250)))?;
            s.set_write_timeout(Some(limit))?;
            let padding = if pad > 0 { format!("X-Pad: {}\r\n", "p".repeat(pad)) } else { String::new() };
            write!(s, "GET /bytes/{bytes} HTTP/1.1\r\nHost: lab\r\n{padding}Connection: close\r\n\r\n")?;
            let mut head = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut in_body = false;
            loop {
                if started.elapsed() > limit {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("gave up after {limit:?}")));
                }
                let n = match s.read(&mut buf) {
                    Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed early")),
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                    Err(e) => return Err(e),
                };
                d.wire_bytes += n;
                let tail;
                let chunk = if in_body {
                    &buf[..n]
                } else {
                    head.extend_from_slice(&buf[..n]);
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let text = String::from_utf8_lossy(&head[..end]).into_owned();
                    d.status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                    d.length = text
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    in_body = true;
                    tail = head.split_off(end + 4);
                    &tail[..]
                };
                for (i, &b) in chunk.iter().enumerate() {
                    d.intact &= b == b'a' + ((d.received + i) % 26) as u8;
                }
                d.received += chunk.len();
                if d.received >= d.length {
                    return Ok(());
                }
            }
        })();
        d.elapsed = started.elapsed();
        d.error = result.err().map(|e| e.to_string());
        d
    })
}

