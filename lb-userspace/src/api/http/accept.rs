//! The accept loop both listeners share: a connection cap, and a backoff when accepting fails.

use std::{
    future::Future,
    io::{self, Write as _},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::Semaphore,
};

use super::{HttpRequest, Limits, Response, connection, encode};

/// A listener the serving loop accepts connections from.
pub trait Accept: Send + 'static {
    /// A connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection.
    fn accept_one(&mut self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Closes a connection over the cap at once, with a 503 if the socket takes it without
    /// waiting.
    fn refuse(stream: Self::Stream) {
        drop(stream);
    }
}

/// [`Accept`] for a tokio listener: its streams turn into non-blocking std ones, so the 503 to
/// a connection over the cap is one write that never waits.
macro_rules! accept_for {
    ($listener:ty, $stream:ty) => {
        impl Accept for $listener {
            type Stream = $stream;
            async fn accept_one(&mut self) -> io::Result<$stream> {
                self.accept().await.map(|(s, _)| s)
            }
            fn refuse(stream: $stream) {
                if let Ok(mut s) = stream.into_std() {
                    let _ = s.write(&refused());
                }
            }
        }
    };
}

accept_for!(TcpListener, TcpStream);
accept_for!(UnixListener, UnixStream);

/// Serves `listener` until the future is dropped: every request is read under `limits` and
/// answered by `handler` (requests refused by the limits never reach it).
pub async fn serve<L, H, F>(mut listener: L, name: &'static str, limits: Limits, handler: H)
where
    L: Accept,
    H: Fn(HttpRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let builder = connection::builder(&limits);
    let mut backoff = Backoff::new(limits.backoff_min, limits.backoff_max);
    let mut cap = CapLog::default();
    loop {
        let stream = match listener.accept_one().await {
            Ok(stream) => stream,
            Err(e) => {
                on_accept_error(name, &e, &mut backoff).await;
                continue;
            }
        };
        if let Some(errors) = backoff.recovered() {
            tracing::info!(listener = name, errors, "accepting connections again");
        }
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(connection::serve(stream, builder.clone(), limits, handler.clone(), slot));
            }
            Err(_) => {
                cap.refused(name, limits.max_connections);
                L::refuse(stream);
                let _ = tokio::time::timeout(limits.capped_pause, slots.acquire()).await;
            }
        }
    }
}

async fn on_accept_error(name: &'static str, e: &io::Error, backoff: &mut Backoff) {
    if is_per_connection(e) {
        tracing::debug!(listener = name, error = %e, "a connection failed before it was accepted");
        tokio::task::yield_now().await;
        return;
    }
    let (pause, first) = backoff.failed();
    if first {
        tracing::warn!(
            listener = name,
            error = %e,
            "cannot accept connections (out of descriptors or memory?); pausing accepts, up to {:?} at a time",
            backoff.max
        );
    }
    tokio::time::sleep(pause).await;
}

/// Errors `accept` reports for one pending connection, which say nothing about the next one
/// (accept(2): treat like EAGAIN and retry).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::ECONNRESET
                | libc::EINTR
                | libc::EAGAIN
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ETIMEDOUT
        )
    )
}

/// Pauses after accept errors in a row: `min`, doubling up to `max`.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    errors: u32,
}

impl Backoff {
    /// No error yet.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), errors: 0 }
    }

    /// One more error: the pause to take, and whether it starts a burst (to log it once).
    pub fn failed(&mut self) -> (Duration, bool) {
        let doublings = self.errors.min(16);
        self.errors = self.errors.saturating_add(1);
        (self.min.saturating_mul(1 << doublings).min(self.max), self.errors == 1)
    }

    /// A success: the number of errors of the burst it ends, if any.
    pub fn recovered(&mut self) -> Option<u32> {
        (self.errors > 0).then(|| std::mem::take(&mut self.errors))
    }
}

/// Time between two logs of refusals at the connection cap.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs refusals at the connection cap: the first at once, then their count at most every
/// [`CAP_LOG_EVERY`].
#[derive(Default)]
struct CapLog {
    refused: u64,
    logged: Option<Instant>,
}

impl CapLog {
    fn refused(&mut self, name: &'static str, max: usize) {
        self.refused += 1;
        if self.logged.is_none_or(|at| at.elapsed() >= CAP_LOG_EVERY) {
            tracing::warn!(
                listener = name,
                max,
                refused = self.refused,
                "connection cap reached; closing further connections at once"
            );
            self.refused = 0;
            self.logged = Some(Instant::now());
        }
    }
}


/// The answer to a connection over the cap.
fn refused() -> Vec<u8> {
    encode(&Response::text(503, "too many connections"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const TEST: Limits = Limits {
        read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        max_connections: 4,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        ..Limits::ADMIN
    };

    #[test]
    fn backoff_doubles_up_to_the_max_and_logs_once_per_burst() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.recovered(), None);
        let pauses: Vec<_> = (0..6).map(|_| b.failed()).collect();
        let ms: Vec<_> = pauses.iter().map(|(d, _)| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(pauses.iter().filter(|(_, first)| *first).count(), 1);
        assert_eq!(b.recovered(), Some(6));
        assert_eq!(b.failed(), (Duration::from_millis(100), true), "a new burst starts over");
        for _ in 0..100 {
            b.failed();
        }
        assert_eq!(b.failed().0, Duration::from_secs(1), "no overflow");
    }

    /// A listener whose accepts fail with `errno` `failures` times, then wait forever.
    struct Failing {
        errno: i32,
        failures: usize,
        calls: Arc<AtomicUsize>,
    }

    impl Accept for Failing {
        type Stream = tokio::io::DuplexStream;
        async fn accept_one(&mut self) -> io::Result<Self::Stream> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            std::future::pending().await
        }
    }

    async fn accepts_within(errno: i32, failures: usize, window: Duration) -> usize {
        let calls = Arc::new(AtomicUsize::new(0));
        let listener = Failing { errno, failures, calls: calls.clone() };
        let served = tokio::spawn(serve(listener, "test", TEST, |_| async { Response::text(200, "ok") }));
        tokio::time::sleep(window).await;
        served.abort();
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn accept_errors_back_off_instead_of_spinning() {
        // 10 + 20 + 40 + 40 ms of pauses after the first four failures: five calls at most in 100 ms.
        let calls = accepts_within(libc::EMFILE, usize::MAX, Duration::from_millis(100)).await;
        assert!((2..=5).contains(&calls), "{calls} accept calls in 100 ms");
        let calls = accepts_within(libc::ENFILE, 3, Duration::from_millis(200)).await;
        assert_eq!(calls, 4, "three failures, then the listener is waited on again");
        let calls = accepts_within(libc::ECONNABORTED, 1000, Duration::from_millis(100)).await;
        assert_eq!(calls, 1001, "an aborted connection costs no pause");
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_gets_a_503_and_the_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        <TcpListener as Accept>::refuse(stream);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, refused());
        assert!(got.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
    }

    #[tokio::test]
    async fn over_the_cap_connections_are_closed_at_a_bounded_rate() {
        let limits = Limits { capped_pause: Duration::from_millis(20), read_timeout: Duration::from_secs(2), ..TEST };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(serve(listener, "test", limits, |_| async { Response::text(200, "ok") }));
        // Blocking connects: the server runs only once they are all made (in the backlog).
        let held: Vec<_> = (0..limits.max_connections + 50).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let closed = held
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                !matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            })
            .count();
        // 200 ms at one refusal per 20 ms: about 10 closed, not 50.
        assert!((3..=15).contains(&closed), "{closed} connections closed");
        drop(held);
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await.unwrap().unwrap();
        assert!(got.starts_with(b"HTTP/1.1 200 "), "served again once the slots are free: {got:?}");
        served.abort();
    }
}
