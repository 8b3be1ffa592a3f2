//! HTTP/1.1 for the admin API and the metrics endpoint, on hyper: one request per connection
//! (no keep-alive), bodies framed by Content-Length, and the accept loop both listeners share.
//!
//! A slow or hostile client can hold neither memory nor a task nor a descriptor for long
//! ([`Limits`]): a request line longer than 8 KiB is answered 414, a header line longer than
//! 8 KiB or a head longer than 16 KiB or with more than 64 header lines 431, a body over the
//! listener's limit 413, Transfer-Encoding 501, a request not complete within 5 s 408 (a
//! connection that sent nothing is closed without an answer), and every answer is followed by
//! closing the connection. Each listener serves at most 64 connections at once; beyond, it
//! accepts and closes (with a 503 when the socket takes it) at most one connection per 10 ms
//! while no slot frees, so the descriptors stay bounded and a flood of connections waits in the
//! kernel's backlog instead of keeping the agent busy. Accept errors that say the process is
//! out of descriptors or memory pause the loop (100 ms doubling to 1 s), logged once per burst,
//! instead of spinning.
//!
//! Refusals are answered `text/plain`, `HTTP <status>: <why>`; a request hyper cannot parse is
//! answered 400 (431 when its head is over the limits) the same way.

mod accept;
mod connection;
mod watched;

use std::time::Duration;

pub use accept::{Accept, Backoff, serve};

/// Largest response body the client accepts.
pub const MAX_BODY: usize = 4 << 20;

/// What one listener accepts from its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line or header line, line end excluded (414 or 431 beyond).
    pub max_line: usize,
    /// Longest request head: request line, headers and the blank line (431 beyond). hyper
    /// takes no less than 8 KiB.
    pub max_head: usize,
    /// Most header lines (431 beyond).
    pub max_headers: usize,
    /// Largest request body (413 beyond).
    pub max_body: usize,
    /// Time for the whole request, head and body, from the accept (408 beyond).
    pub read_timeout: Duration,
    /// Time to write the answer.
    pub write_timeout: Duration,
    /// Connections served at once; further ones are closed at once.
    pub max_connections: usize,
    /// While at the cap, the longest wait for a free slot after closing a connection: a flood
    /// of connections then costs one accept per pause, the rest wait in the kernel's backlog.
    pub capped_pause: Duration,
    /// First pause after an accept error.
    pub backoff_min: Duration,
    /// Longest pause after accept errors in a row.
    pub backoff_max: Duration,
}

impl Limits {
    /// The admin API's limits: commands carry up to 1 MiB (a VIP's YAML).
    pub const ADMIN: Limits = Limits {
        max_line: 8 << 10,
        max_head: 16 << 10,
        max_headers: 64,
        max_body: 1 << 20,
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_connections: 64,
        capped_pause: Duration::from_millis(10),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
    };

    /// The metrics endpoint's limits: like the admin API's, but a scrape has no use for a body.
    pub const METRICS: Limits = Limits { max_body: 4 << 10, ..Limits::ADMIN };
}

/// A request as the handlers see it: read whole, within the listener's limits.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method (`GET`, `POST`).
    pub method: String,
    /// The request target as sent: path with query.
    pub path: String,
    /// Body.
    pub body: Vec<u8>,
}

/// An answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, text: &str) -> Self {
        Response { status, content_type: "text/plain", body: format!("{text}\n").into_bytes() }
    }
}

/// A request refused by the HTTP layer, before any handler sees it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {status}: {message}")]
pub struct Refusal {
    /// The status answered (400, 408, 413, 414, 431, 501, 503).
    pub status: u16,
    /// Why, as answered.
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into() }
    }

    /// The answer: `HTTP <status>: <why>` as plain text.
    pub fn response(&self) -> Response {
        Response::text(self.status, &self.to_string())
    }
}

/// A whole plain answer as bytes, for the connections hyper does not answer: over the
/// connection cap, timed out or unparsable before any handler ran.
fn encode(response: &Response) -> Vec<u8> {
    let Response { status, content_type, body } = response;
    let reason = hyper::StatusCode::from_u16(*status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}
