//! One connection served by hyper under a listener's [`Limits`]:
//! - the head: `max_header_size` and `max_buf_size` (`max_head`), `max_headers`, and
//!   `header_read_timeout` (`read_timeout`, from the accept); a line over `max_line` is refused
//!   once hyper has parsed the head;
//! - the body: `Content-Length` over `max_body` is refused before it is read, and the body is
//!   read through `http_body_util::Limited` by the same deadline;
//! - the answer: written within `write_timeout`, after which the connection is closed.

use std::{convert::Infallible, future::Future};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::{
    Method,
    body::{Body as _, Incoming},
    header::{CONTENT_TYPE, TRANSFER_ENCODING},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    sync::OwnedSemaphorePermit,
    time::{Duration, Instant},
};

use super::{
    HttpRequest, Limits, Refusal, Response, encode,
    watched::{Exchange, Watched},
};

/// hyper's settings for a listener's limits (one request per connection).
pub fn builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(false)
        .half_close(true)
        .title_case_headers(true)
        .auto_date_header(false)
        .writev(false)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_head)
        .max_buf_size(limits.max_head.max(MIN_BUF))
        .header_read_timeout(limits.read_timeout);
    builder
}

/// The least `max_buf_size` hyper takes.
const MIN_BUF: usize = 8 << 10;

/// Most bytes read after an error answer, so that the client reads the answer before the close
/// (closing with unread data resets the connection).
const LINGER_BYTES: usize = 64 << 10;
/// Longest wait for them.
const LINGER_TIME: Duration = Duration::from_millis(250);

/// Serves one request on `stream` and closes it; `_slot` is the listener's connection slot.
pub async fn serve<S, H, F>(mut stream: S, builder: http1::Builder, limits: Limits, handler: H, _slot: OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Fn(HttpRequest) -> F + Clone,
    F: Future<Output = Response>,
{
    let deadline = Instant::now() + limits.read_timeout;
    let exchange = Exchange::default();
    let service = service_fn(|request: hyper::Request<Incoming>| {
        let head = request.method() == Method::HEAD;
        exchange.set_handled(!head);
        let (handler, exchange) = (handler.clone(), &exchange);
        async move {
            let response = handle(request, &limits, deadline, handler).await;
            exchange.set_answered(&response);
            if head {
                exchange.keep(response.clone());
            }
            Ok::<_, Infallible>(to_hyper(response))
        }
    });
    let served = builder.serve_connection(TokioIo::new(Watched::new(&mut stream, &exchange)), service);
    let write_timeout = async {
        exchange.answered().await;
        tokio::time::sleep(limits.write_timeout).await;
    };
    let outcome = tokio::select! {
        outcome = served => outcome,
        () = write_timeout => {
            tracing::debug!("the client did not take the answer within the write timeout");
            return;
        }
    };
    let ours = match outcome {
        _ if exchange.handled() => exchange.take_kept(),
        Ok(()) => None,
        Err(e) => {
            tracing::debug!(error = %e, "request refused");
            refusal(&e, exchange.received(), &limits).map(|r| r.response())
        }
    };
    if let Some(answer) = &ours {
        let written = async {
            stream.write_all(&encode(answer)).await?;
            stream.shutdown().await
        };
        if !matches!(tokio::time::timeout(limits.write_timeout, written).await, Ok(Ok(()))) {
            return;
        }
    }
    if ours.map_or(exchange.refused(), |answer| answer.status >= 400) {
        linger(&mut stream).await;
    }
}

/// The answer to a request hyper gave up on before any handler ran: nothing for a client that
/// sent nothing or went away.
fn refusal(e: &hyper::Error, received: bool, limits: &Limits) -> Option<Refusal> {
    if e.is_timeout() {
        return received.then(|| Refusal::new(408, TIMED_OUT));
    }
    if e.is_parse_too_large() {
        let why = format!(
            "request head too large: at most {} bytes in {} header lines",
            limits.max_head, limits.max_headers
        );
        return Some(Refusal::new(431, why));
    }
    e.is_parse().then(|| Refusal::new(400, format!("malformed request: {e}")))
}

const TIMED_OUT: &str = "the request did not arrive within the read timeout";

/// Reads the request's body under `limits` by `deadline` and hands the request to `handler`.
async fn handle<H, F>(request: hyper::Request<Incoming>, limits: &Limits, deadline: Instant, handler: H) -> Response
where
    H: Fn(HttpRequest) -> F,
    F: Future<Output = Response>,
{
    let (parts, body) = request.into_parts();
    if let Err(refusal) = check_head(&parts, body.size_hint().upper(), limits) {
        return refusal.response();
    }
    let collected = tokio::time::timeout_at(deadline, Limited::new(body, limits.max_body).collect()).await;
    let body = match collected {
        Ok(Ok(body)) => body.to_bytes().to_vec(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Refusal::new(413, TOO_LARGE).response(),
        Ok(Err(e)) => return Refusal::new(400, format!("the request body did not arrive whole: {e}")).response(),
        Err(_) => return Refusal::new(408, TIMED_OUT).response(),
    };
    handler(HttpRequest { method: parts.method.to_string(), path: parts.uri.to_string(), body }).await
}

const TOO_LARGE: &str = "request body too large";

/// Refuses a head hyper took but the API does not: lines over `max_line`, Transfer-Encoding,
/// a body declared over `max_body`.
fn check_head(parts: &hyper::http::request::Parts, length: Option<u64>, limits: &Limits) -> Result<(), Refusal> {
    let request_line = parts.method.as_str().len() + parts.uri.to_string().len() + " HTTP/1.1".len() + 1;
    if request_line > limits.max_line {
        return Err(Refusal::new(414, "request line too long"));
    }
    if parts.headers.iter().any(|(name, value)| name.as_str().len() + ": ".len() + value.len() > limits.max_line) {
        return Err(Refusal::new(431, "header line too long"));
    }
    if parts.headers.contains_key(TRANSFER_ENCODING) {
        return Err(Refusal::new(501, "Transfer-Encoding is not supported; send Content-Length"));
    }
    if length.is_some_and(|n| n > limits.max_body as u64) {
        return Err(Refusal::new(413, TOO_LARGE));
    }
    Ok(())
}

fn to_hyper(response: Response) -> hyper::Response<Full<Bytes>> {
    let status = hyper::StatusCode::from_u16(response.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = hyper::Response::new(Full::new(Bytes::from(response.body)));
    *answer.status_mut() = status;
    answer.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(response.content_type));
    answer
}

/// Reads what the client still sends, for a while, before the close.
async fn linger<S: AsyncRead + Unpin>(stream: &mut S) {
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, atomic::{AtomicUsize, Ordering}};
    use std::{io, pin::Pin, task::{Context, Poll}};

    use tokio::{
        io::{AsyncWriteExt as _, ReadBuf},
        sync::Semaphore,
    };

    use super::*;

    const TEST: Limits = Limits {
        read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        ..Limits::ADMIN
    };

    /// Answers with what it got: method, path and body.
    async fn echo(request: HttpRequest) -> Response {
        let text = format!("{} {} {}", request.method, request.path, String::from_utf8_lossy(&request.body));
        Response { status: 200, content_type: "text/plain", body: text.into_bytes() }
    }

    fn slot() -> OwnedSemaphorePermit {
        Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap()
    }

    /// Serves one connection whose client sends `parts` (a pause between them), half-closes
    /// when `close`, and reads the answer until the close.
    async fn exchange(parts: &[&[u8]], close: bool) -> Vec<u8> {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let served = tokio::spawn(serve(ours, builder(&TEST), TEST, echo, slot()));
        for part in parts {
            let _ = theirs.write_all(part).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if close {
            let _ = theirs.shutdown().await;
        }
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), theirs.read_to_end(&mut got)).await;
        served.await.unwrap();
        got
    }

    fn status_and_body(answer: &[u8]) -> (u16, String) {
        let text = String::from_utf8_lossy(answer);
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn answers_are_exact_for_a_request_and_for_head() {
        // A HEAD request gets its answer whole, body included, written by us (hyper would send
        // the head alone).
        for (request, body, ours) in [
            (&b"POST /v1/command HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\n\r\nhello"[..], "POST /v1/command hello", false),
            (b"HEAD /x HTTP/1.1\r\n\r\n", "HEAD /x ", true),
        ] {
            let got = exchange(&[request], true).await;
            let length = format!("Content-Length: {}\r\n", body.len());
            let close = "Connection: close\r\n";
            let headers = if ours { format!("{length}{close}") } else { format!("{close}{length}") };
            let want = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{headers}\r\n{body}");
            assert_eq!(String::from_utf8_lossy(&got), want);
        }
    }

    #[tokio::test]
    async fn an_http_10_request_split_over_reads_with_bare_newlines_is_answered_as_http_11() {
        let got = exchange(&[b"GET /metrics?x=1 HTTP/1.0\nContent-Length: 4\n", b"\nab", b"cd"], false).await;
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{:?}", String::from_utf8_lossy(&got));
        assert_eq!(status_and_body(&got).1, "GET /metrics?x=1 abcd");
    }

    #[tokio::test]
    async fn refusals_carry_their_status_and_say_why() {
        let long = "x".repeat(TEST.max_line + 1);
        let fits = "x".repeat(TEST.max_line - "X-A: ".len());
        let many: String = (0..=TEST.max_headers).map(|i| format!("X-{i}: y\r\n")).collect();
        let big_head: String = (0..3).map(|i| format!("X-{i}: {fits}\r\n")).collect();
        for (request, status) in [
            ("GET\r\n\r\n".to_owned(), 400),
            ("G ET / HTTP/1.1\r\n\r\n".to_owned(), 400),
            ("GET / HTTP/2\r\n\r\n".to_owned(), 400),
            ("GET / HTTP/1.1\r\nno colon\r\n\r\n".to_owned(), 400),
            (format!("GET /{long} HTTP/1.1\r\n\r\n"), 414),
            (format!("GET / HTTP/1.1\r\nX-A: {long}\r\n\r\n"), 431),
            (format!("GET / HTTP/1.1\r\n{many}\r\n"), 431),
            (format!("GET / HTTP/1.1\r\n{big_head}\r\n"), 431),
            (format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", TEST.max_body + 1), 413),
            ("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_owned(), 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_owned(), 400),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(), 501),
            ("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab".to_owned(), 400),
        ] {
            let got = exchange(&[request.as_bytes()], true).await;
            let (got_status, body) = status_and_body(&got);
            assert_eq!(got_status, status, "{:.80?} -> {:?}", request, String::from_utf8_lossy(&got));
            // Each says what is wrong (the admin API fuzzer's rule: a reason of three words or more).
            let reason = body.strip_prefix(&format!("HTTP {status}: ")).unwrap_or_default();
            assert!(reason.split_whitespace().count() >= 3, "{body:?}");
            assert!(got.windows(19).any(|w| w == b"Connection: close\r\n"), "{:?}", String::from_utf8_lossy(&got));
        }
        let ok = format!("GET / HTTP/1.1\r\nX-A: {fits}\r\n\r\n");
        assert_eq!(status_and_body(&exchange(&[ok.as_bytes()], true).await).0, 200, "a line of exactly the limit passes");
        assert_eq!(exchange(&[b"GET / HTTP/1.1\r\n"], true).await, b"", "a head cut short is not answered");
    }

    #[tokio::test]
    async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
        let slow = |request| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            echo(request).await
        };
        for (request, body) in [
            (&b"POST /v1/command HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"[..], "POST /v1/command {}"),
            (b"GET /v1/stats HTTP/1.1\r\nHost: lb\r\nContent-Length: 0\r\n\r\n", "GET /v1/stats "),
        ] {
            let (ours, mut theirs) = tokio::io::duplex(4096);
            let served = tokio::spawn(serve(ours, builder(&TEST), TEST, slow, slot()));
            theirs.write_all(request).await.unwrap();
            theirs.shutdown().await.unwrap();
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            served.await.unwrap();
            assert_eq!(status_and_body(&got), (200, body.to_owned()));
        }
    }

    #[tokio::test]
    async fn pipelined_requests_get_one_answer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let handler = {
            let calls = calls.clone();
            move |request| {
                calls.fetch_add(1, Ordering::SeqCst);
                echo(request)
            }
        };
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let served = tokio::spawn(serve(ours, builder(&TEST), TEST, handler, slot()));
        theirs.write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        served.await.unwrap();
        assert_eq!(status_and_body(&got), (200, "GET /a ".to_owned()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn slow_requests_get_408_and_idle_ones_are_closed_silently() {
        let start = Instant::now();
        assert_eq!(exchange(&[], false).await, b"", "nothing sent, nothing answered");
        assert!(start.elapsed() >= TEST.read_timeout && start.elapsed() < TEST.read_timeout * 3, "{:?}", start.elapsed());
        let drip: Vec<&[u8]> = b"GET /metrics HTTP/1.1\r\n".chunks(1).collect();
        let (ours, mut theirs) = tokio::io::duplex(64);
        let served = tokio::spawn(serve(ours, builder(&TEST), TEST, echo, slot()));
        let start = Instant::now();
        let dripping = tokio::spawn(async move {
            for byte in drip {
                if theirs.write_all(byte).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            theirs
        });
        served.await.unwrap();
        let elapsed = start.elapsed();
        let mut theirs = dripping.await.unwrap();
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        assert_eq!(status_and_body(&got).0, 408, "{:?}", String::from_utf8_lossy(&got));
        assert!(elapsed < TEST.read_timeout * 3, "{elapsed:?}");
        let got = exchange(&[b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab"], false).await;
        assert_eq!(status_and_body(&got).0, 408, "a slow body too: {:?}", String::from_utf8_lossy(&got));
    }

    /// An endless client: counts what the server took from it, keeps what it was answered.
    struct Endless {
        prefix: &'static [u8],
        taken: Arc<AtomicUsize>,
        answer: Arc<Mutex<Vec<u8>>>,
    }

    impl AsyncRead for Endless {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let at = self.taken.load(Ordering::SeqCst);
            let n = buf.remaining();
            let bytes: Vec<u8> = (at..at + n).map(|i| self.prefix.get(i).copied().unwrap_or(b'a')).collect();
            buf.put_slice(&bytes);
            self.taken.fetch_add(n, Ordering::SeqCst);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Endless {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.answer.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn an_endless_line_is_refused_after_reading_at_most_the_head_limit_and_the_linger() {
        for prefix in [&b"GET /"[..], b"GET / HTTP/1.1\r\nX-Endless: "] {
            let (taken, answer) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
            let client = Endless { prefix, taken: taken.clone(), answer: answer.clone() };
            tokio::time::timeout(Duration::from_secs(5), serve(client, builder(&TEST), TEST, echo, slot())).await.unwrap();
            let answer = answer.lock().unwrap().clone();
            assert_eq!(status_and_body(&answer).0, 431, "{:?}", String::from_utf8_lossy(&answer));
            let taken = taken.load(Ordering::SeqCst);
            assert!(taken <= TEST.max_head + MIN_BUF + LINGER_BYTES, "read {taken} bytes of an endless line");
        }
    }

    #[tokio::test]
    async fn a_client_that_takes_no_answer_is_dropped_after_the_write_timeout() {
        let big = |_| async { Response { status: 200, content_type: "text/plain", body: vec![b'a'; 1 << 20] } };
        let (ours, mut theirs) = tokio::io::duplex(4096);
        theirs.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let start = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), serve(ours, builder(&TEST), TEST, big, slot())).await.unwrap();
        assert!(start.elapsed() >= TEST.write_timeout, "{:?}", start.elapsed());
    }
}
