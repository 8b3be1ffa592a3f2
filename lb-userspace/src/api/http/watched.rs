//! The connection as hyper sees it: what the client sent is noted, and hyper's own answers
//! to requests it could not parse (or to HEAD, without a body) are held back so that ours,
//! which say why, replace them.

use std::{
    io,
    pin::Pin,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
};

use super::Response;

/// What happened on one connection, shared by hyper's side and the request handler.
#[derive(Debug, Default)]
pub struct Exchange {
    received: AtomicBool,
    handled: AtomicBool,
    through: AtomicBool,
    refused: AtomicBool,
    answered: Notify,
    kept: Mutex<Option<Response>>,
}

impl Exchange {
    /// Whether the client sent any byte.
    pub fn received(&self) -> bool {
        self.received.load(Ordering::SeqCst)
    }

    /// Whether a whole head arrived and reached the request handler.
    pub fn handled(&self) -> bool {
        self.handled.load(Ordering::SeqCst)
    }

    /// A whole head arrived; `through`: what hyper writes from now on is the answer (else the
    /// answer is [`kept`](Exchange::keep) and written by the caller).
    pub fn set_handled(&self, through: bool) {
        self.through.store(through, Ordering::SeqCst);
        self.handled.store(true, Ordering::SeqCst);
    }

    /// The handler's answer is ready.
    pub fn set_answered(&self, response: &Response) {
        self.refused.store(response.status >= 400, Ordering::SeqCst);
        self.answered.notify_one();
    }

    /// Waits until the handler's answer is ready.
    pub async fn answered(&self) {
        self.answered.notified().await;
    }

    /// Whether the handler's answer is an error (the client may still be sending).
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::SeqCst)
    }

    /// Keeps an answer that hyper would not write whole (its body, to a HEAD request).
    pub fn keep(&self, response: Response) {
        *self.kept.lock().unwrap_or_else(PoisonError::into_inner) = Some(response);
    }

    /// The answer kept, if any.
    pub fn take_kept(&self) -> Option<Response> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn through(&self) -> bool {
        self.through.load(Ordering::SeqCst)
    }
}

/// The status line's version for an HTTP/1.0 client, which hyper answers in its own version;
/// the API answers every client as HTTP/1.1 (RFC 9110, section 6.2).
const HTTP_10: &[u8] = b"HTTP/1.0";
const HTTP_11: &[u8] = b"HTTP/1.1";

/// A stream that notes reads and, unless hyper is to write the handler's answer, swallows
/// writes and the write side's shutdown (hyper's bodiless answers to an unparsable request and
/// to HEAD).
pub struct Watched<'a, S> {
    inner: &'a mut S,
    exchange: &'a Exchange,
    written: usize,
}

impl<'a, S> Watched<'a, S> {
    /// Watches `inner` for `exchange`.
    pub fn new(inner: &'a mut S, exchange: &'a Exchange) -> Self {
        Watched { inner, exchange, written: 0 }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.exchange.received.store(true, Ordering::SeqCst);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.exchange.through() {
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = match HTTP_10.get(this.written..) {
            Some(rest) if !rest.is_empty() => {
                let n = rest.len().min(buf.len());
                let head = if buf[..n] == rest[..n] { &HTTP_11[this.written..this.written + n] } else { &buf[..n] };
                Pin::new(&mut *this.inner).poll_write(cx, head)
            }
            _ => Pin::new(&mut *this.inner).poll_write(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = polled {
            this.written += n;
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.exchange.through() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut *this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.exchange.through() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut *this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn through(handled: bool, writes: &[&[u8]]) -> (Vec<u8>, bool) {
        let exchange = Exchange::default();
        if handled {
            exchange.set_handled(true);
        }
        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        theirs.write_all(b"x").await.unwrap();
        let mut watched = Watched::new(&mut ours, &exchange);
        watched.read_exact(&mut [0u8; 1]).await.unwrap();
        for w in writes {
            watched.write_all(w).await.unwrap();
        }
        watched.shutdown().await.unwrap();
        drop(ours);
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        (got, exchange.received())
    }

    #[tokio::test]
    async fn writes_before_the_handler_are_swallowed() {
        assert_eq!(through(false, &[b"HTTP/1.1 400 Bad Request\r\n\r\n"]).await, (vec![], true));
    }

    #[tokio::test]
    async fn an_http_10_status_line_is_answered_as_http_11_even_when_split() {
        let (got, _) = through(true, &[b"HTTP/1.0 200 OK\r\n\r\n{}"]).await;
        assert_eq!(got, b"HTTP/1.1 200 OK\r\n\r\n{}");
        let (got, _) = through(true, &[b"HTT", b"P/1.", b"0 404 Not Found\r\n\r\n"]).await;
        assert_eq!(got, b"HTTP/1.1 404 Not Found\r\n\r\n");
        let (got, _) = through(true, &[b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.0"]).await;
        assert_eq!(got, b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.0", "only the status line");
    }
}
