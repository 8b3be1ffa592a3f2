//! One health probe of one backend: a TCP connect or a minimal HTTP/1.1 request.
//!
//! A probe that fails on the agent's own side says nothing about the backend: its outcome is
//! marked [`ProbeOutcome::local`], and the checker counts it as the agent's fault instead of a
//! backend failure. Which errors are local is decided by [`is_local`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::request::build_request;

/// Longest status line accepted before the probe gives up on the response.
const MAX_STATUS_LINE: usize = 1024;

/// What a probe does once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// Sends one HTTP/1.1 request and checks the response's status code.
    Http {
        /// `"GET"` or `"HEAD"`.
        method: &'static str,
        /// Request target, such as `/health`.
        path: String,
        /// `Host` header; the target's address when `None`.
        host: Option<String>,
        /// Status codes that count as healthy.
        expect_status: Vec<u16>,
    },
    /// Healthy if the TCP handshake completes.
    Tcp,
}

/// A probe and its time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What to check.
    pub kind: ProbeKind,
    /// Bound on the whole probe: connect, request and response.
    pub timeout: Duration,
}

/// Result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// Whether the backend passed.
    pub ok: bool,
    /// The probe could not be made for a reason of the agent's own ([`is_local`]): `ok` is
    /// false, but the backend is not to blame.
    pub local: bool,
    /// The probe ran out of its time (`spec.timeout`); the checker decides whether the agent
    /// ran too late for that to be the backend's fault.
    pub timed_out: bool,
    /// Human-readable reason, such as `HTTP 200` or `connect: connection refused`.
    pub detail: String,
    /// Time from the start of the probe to its outcome.
    pub latency: Duration,
}

/// Where an I/O error of a probe was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// By the `connect(2)` call itself: this host's stack refused before any packet was sent
    /// (no route, an `unreachable`, `prohibit` or `blackhole` route, no local port).
    ConnectCall,
    /// Once packets were on their way: the outcome of a connect in progress (an ICMP error
    /// from the path, a failed neighbour resolution of the backend, a reset), or a send or
    /// receive.
    Network,
}

/// A connect that failed, and where.
#[derive(Debug)]
pub struct ConnectError {
    /// The error.
    pub error: io::Error,
    /// Raised by the call or by the network.
    pub origin: Origin,
}

/// Whether an I/O error comes from the agent's own side rather than the backend's:
/// - out of descriptors (EMFILE, ENFILE), memory or buffers (ENOMEM, ENOBUFS), or local ports
///   (EADDRNOTAVAIL), wherever raised;
/// - EPERM wherever raised: only this host's firewall (a netfilter drop in its output path)
///   raises it, no ICMP error maps to it;
/// - raised by the connect call itself, before any packet left: no route (ENETUNREACH), an
///   `unreachable` route (EHOSTUNREACH), a `prohibit` route (EACCES), a `blackhole` route
///   (EINVAL).
///
/// The same ENETUNREACH, EHOSTUNREACH and EACCES raised by the network (an ICMP error from a
/// router or the backend, or no neighbour answer from a backend on a connected subnet, which
/// reads as EHOSTUNREACH about 3 s later) count against the backend: it cannot be reached
/// from here, as a client's connection through this host could not.
pub fn is_local(e: &io::Error, origin: Origin) -> bool {
    if e.kind() == io::ErrorKind::OutOfMemory {
        return true;
    }
    let Some(errno) = e.raw_os_error() else {
        return false;
    };
    match errno {
        libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EADDRNOTAVAIL | libc::EPERM => true,
        libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL => origin == Origin::ConnectCall,
        _ => false,
    }
}

/// Probes `target` once; never takes much longer than `spec.timeout`.
pub async fn probe(target: SocketAddr, spec: &ProbeSpec) -> ProbeOutcome {
    probe_with(target, spec, connect).await
}

/// Opens a TCP connection to `target`, telling an error of the connect call (nothing sent)
/// from one of the connection attempt.
pub async fn connect(target: SocketAddr) -> Result<TcpStream, ConnectError> {
    let call = |error| ConnectError { error, origin: Origin::ConnectCall };
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, Some(Protocol::TCP)).map_err(call)?;
    socket.set_nonblocking(true).map_err(call)?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(call(e)),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket)).map_err(call)?;
    let network = |error| ConnectError { error, origin: Origin::Network };
    stream.writable().await.map_err(network)?;
    match stream.take_error().map_err(network)? {
        Some(e) => Err(network(e)),
        None => Ok(stream),
    }
}

/// [`probe`] with the connect step given, so that tests can make it fail.
async fn probe_with<C, F, S>(target: SocketAddr, spec: &ProbeSpec, connect: C) -> ProbeOutcome
where
    C: FnOnce(SocketAddr) -> F,
    F: Future<Output = Result<S, ConnectError>>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let result = tokio::time::timeout(spec.timeout, run(target, &spec.kind, connect)).await;
    let (ok, local, timed_out, detail) = match result {
        Ok(Ok(detail)) => (true, false, false, detail),
        Ok(Err(f)) => (false, f.local, false, f.detail),
        Err(_) => (false, false, true, format!("timed out after {:?}", spec.timeout)),
    };
    ProbeOutcome {
        ok,
        local,
        timed_out,
        detail,
        latency: start.elapsed(),
    }
}

/// Why a probe failed.
#[derive(Debug)]
struct Failure {
    detail: String,
    /// On the agent's side, not the backend's.
    local: bool,
}

impl From<String> for Failure {
    fn from(detail: String) -> Self {
        Failure {
            detail,
            local: false,
        }
    }
}

/// A failed I/O step (`connect`, `send`, `receive`), local if the error is.
fn io_failure(step: &str, e: &io::Error, origin: Origin) -> Failure {
    let local = is_local(e, origin);
    let detail = if local {
        format!("agent could not probe: {step}: {}", describe(e))
    } else {
        format!("{step}: {}", describe(e))
    };
    Failure { detail, local }
}

/// Runs the probe without a time limit: `Ok(detail)` if healthy, `Err` if not.
async fn run<C, F, S>(target: SocketAddr, kind: &ProbeKind, connect: C) -> Result<String, Failure>
where
    C: FnOnce(SocketAddr) -> F,
    F: Future<Output = Result<S, ConnectError>>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connected = |r: Result<S, ConnectError>| r.map_err(|e| io_failure("connect", &e.error, e.origin));
    match kind {
        ProbeKind::Tcp => {
            connected(connect(target).await)?;
            Ok("TCP connect".to_owned())
        }
        ProbeKind::Http {
            method,
            path,
            host,
            expect_status,
        } => {
            // A request that cannot be written is this agent's configuration's fault (`lb
            // config check` refuses it), never the backend's.
            let request = build_request(target, method, path, host.as_deref()).map_err(|detail| Failure {
                detail: format!("agent could not probe: {detail}"),
                local: true,
            })?;
            let mut stream = connected(connect(target).await)?;
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| io_failure("send", &e, Origin::Network))?;
            let line = read_status_line(&mut stream).await?;
            let status = parse_status_line(&line)?;
            if expect_status.contains(&status) {
                Ok(format!("HTTP {status}"))
            } else {
                Err(format!("HTTP {status} (expected {})", list(expect_status)).into())
            }
        }
    }
}

/// Reads until the first line of the response is complete; returns it without its line end.
async fn read_status_line<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, Failure> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err(format!("status line longer than {MAX_STATUS_LINE} bytes").into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| io_failure("receive", &e, Origin::Network))?;
        if n == 0 {
            let detail = if buf.is_empty() {
                "connection closed before a status line"
            } else {
                "connection closed inside the status line"
            };
            return Err(detail.to_owned().into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Extracts the status code from `HTTP/1.x NNN [reason]`.
fn parse_status_line(line: &str) -> Result<u16, String> {
    let malformed = || {
        let shown: String = line.chars().take(64).collect();
        format!("malformed status line {shown:?}")
    };
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().ok_or_else(malformed)?;
    let minor = version.strip_prefix("HTTP/1.").ok_or_else(malformed)?;
    if minor.len() != 1 || !minor.as_bytes()[0].is_ascii_digit() {
        return Err(malformed());
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let status: u16 = code.parse().map_err(|_| malformed())?;
    if !(100..=599).contains(&status) {
        return Err(malformed());
    }
    Ok(status)
}

fn list(codes: &[u16]) -> String {
    if codes.is_empty() {
        return "none".to_owned();
    }
    codes
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An I/O error as lowercase text without the `(os error N)` suffix.
pub(super) fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::test_support::{closed_port, closing_server, http_server, silent_server};

    fn http(expect: &[u16]) -> ProbeSpec {
        ProbeSpec {
            kind: ProbeKind::Http {
                method: "GET",
                path: "/health".to_owned(),
                host: None,
                expect_status: expect.to_vec(),
            },
            timeout: Duration::from_secs(2),
        }
    }

    fn tcp() -> ProbeSpec {
        ProbeSpec {
            kind: ProbeKind::Tcp,
            timeout: Duration::from_secs(2),
        }
    }

    fn response(status: &str) -> Vec<u8> {
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
    }

    #[tokio::test]
    async fn http_200_is_ok() {
        let server = http_server(|_, _| vec![response("200 OK")]).await;
        let out = probe(server.addr, &http(&[200])).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(out.detail, "HTTP 200");
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn http_500_is_not_ok() {
        let server = http_server(|_, _| vec![response("500 Internal Server Error")]).await;
        let out = probe(server.addr, &http(&[200])).await;
        assert!(!out.ok);
        assert_eq!(out.detail, "HTTP 500 (expected 200)");
    }

    #[tokio::test]
    async fn expect_status_accepts_any_listed_code() {
        let server = http_server(|_, _| vec![response("204 No Content")]).await;
        let out = probe(server.addr, &http(&[200, 204])).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(out.detail, "HTTP 204");
        let out = probe(server.addr, &http(&[200])).await;
        assert!(!out.ok);
        assert!(out.detail.contains("204"), "{out:?}");
    }

    #[tokio::test]
    async fn sends_the_documented_request() {
        let server = http_server(|req, local| {
            let expected = format!(
                "GET /health HTTP/1.1\r\nHost: {local}\r\nUser-Agent: lb-health\r\nConnection: close\r\n\r\n"
            );
            vec![response(if req == expected { "200 OK" } else { "400 Bad Request" })]
        })
        .await;
        let out = probe(server.addr, &http(&[200])).await;
        assert!(out.ok, "{out:?}");
    }

    #[tokio::test]
    async fn head_method() {
        let server = http_server(|req, _| {
            vec![response(if req.starts_with("HEAD /health HTTP/1.1\r\n") {
                "200 OK"
            } else {
                "405 Method Not Allowed"
            })]
        })
        .await;
        let mut spec = http(&[200]);
        if let ProbeKind::Http { method, .. } = &mut spec.kind {
            *method = "HEAD";
        }
        let out = probe(server.addr, &spec).await;
        assert!(out.ok, "{out:?}");
    }

    #[tokio::test]
    async fn host_header_is_sent() {
        let server = http_server(|req, _| {
            vec![response(if req.contains("\r\nHost: health.example\r\n") {
                "200 OK"
            } else {
                "421 Misdirected Request"
            })]
        })
        .await;
        let mut spec = http(&[200]);
        let out = probe(server.addr, &spec).await;
        assert!(!out.ok, "the default Host is the address: {out:?}");
        if let ProbeKind::Http { host, .. } = &mut spec.kind {
            *host = Some("health.example".to_owned());
        }
        let out = probe(server.addr, &spec).await;
        assert!(out.ok, "{out:?}");
    }

    #[tokio::test]
    async fn status_line_split_over_several_segments() {
        let server = http_server(|_, _| {
            vec![
                b"HTT".to_vec(),
                b"P/1.0 20".to_vec(),
                b"0 OK\r".to_vec(),
                b"\n\r\n".to_vec(),
            ]
        })
        .await;
        let out = probe(server.addr, &http(&[200])).await;
        assert!(out.ok, "{out:?}");
    }

    #[tokio::test]
    async fn garbage_response_is_not_ok() {
        let server = http_server(|_, _| vec![b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()]).await;
        let out = probe(server.addr, &http(&[200])).await;
        assert!(!out.ok);
        assert!(out.detail.starts_with("malformed status line"), "{out:?}");
    }

    #[tokio::test]
    async fn endless_status_line_is_not_ok() {
        let server = http_server(|_, _| vec![vec![b'x'; 4 * MAX_STATUS_LINE]]).await;
        let out = probe(server.addr, &http(&[200])).await;
        assert!(!out.ok);
        assert!(out.detail.contains("longer than"), "{out:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let server = silent_server().await;
        let mut spec = http(&[200]);
        spec.timeout = Duration::from_millis(300);
        let start = Instant::now();
        let out = probe(server.addr, &spec).await;
        let elapsed = start.elapsed();
        assert!(!out.ok);
        assert_eq!(out.detail, "timed out after 300ms");
        assert!(out.timed_out && !out.local, "{out:?}");
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(800), "{elapsed:?}");
        assert!(out.latency >= Duration::from_millis(300), "{out:?}");
    }

    #[tokio::test]
    async fn server_closing_at_once_is_not_ok() {
        let server = closing_server().await;
        let out = probe(server.addr, &http(&[200])).await;
        assert!(!out.ok);
        // Depending on timing the close reads as EOF or as a reset.
        assert!(
            out.detail == "connection closed before a status line"
                || out.detail.starts_with("receive: ")
                || out.detail.starts_with("send: "),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        let addr = closed_port().await;
        let out = probe(addr, &http(&[200])).await;
        assert!(!out.ok);
        assert_eq!(out.detail, "connect: connection refused");
        let out = probe(addr, &tcp()).await;
        assert!(!out.ok);
        assert!(out.detail.contains("refused"), "{out:?}");
    }

    #[tokio::test]
    async fn tcp_probe_against_a_listening_port() {
        let server = silent_server().await;
        let out = probe(server.addr, &tcp()).await;
        assert!(out.ok, "{out:?}");
        assert_eq!(out.detail, "TCP connect");
    }

    #[tokio::test]
    async fn ipv6_loopback() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            eprintln!("skipped: no IPv6 loopback");
            return;
        };
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let mut len = 0;
            while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
                let n = conn.read(&mut buf[len..]).await.unwrap();
                if n == 0 {
                    break;
                }
                len += n;
            }
            let req = String::from_utf8_lossy(&buf[..len]).into_owned();
            conn.write_all(&response("200 OK")).await.unwrap();
            req
        });
        let out = probe(addr, &http(&[200])).await;
        assert!(out.ok, "{out:?}");
        let req = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert!(
            req.contains(&format!("\r\nHost: [::1]:{}\r\n", addr.port())),
            "{req:?}"
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Ok(503)
        );
        assert_eq!(parse_status_line("HTTP/1.1 204"), Ok(204));
        assert_eq!(parse_status_line("HTTP/1.1 404 "), Ok(404));
        for bad in [
            "",
            "HTTP/1.1",
            "HTTP/2 200 OK",
            "HTTP/1.x 200 OK",
            "HTTP/1.1 20 OK",
            "HTTP/1.1 2000 OK",
            "HTTP/1.1 +20 OK",
            "HTTP/1.1 099 OK",
            "HTTP/1.1 600 OK",
            "http/1.1 200 OK",
            "ICY 200 OK",
        ] {
            assert!(parse_status_line(bad).is_err(), "{bad:?}");
        }
    }

    /// Fails a connect with `errno`, raised by `origin`.
    fn failing(errno: i32, origin: Origin) -> impl FnOnce(SocketAddr) -> std::future::Ready<Result<TcpStream, ConnectError>> {
        move |_| std::future::ready(Err(ConnectError { error: io::Error::from_raw_os_error(errno), origin }))
    }

    #[test]
    fn local_error_classification() {
        use Origin::{ConnectCall, Network};
        let local = |errno, origin| is_local(&io::Error::from_raw_os_error(errno), origin);
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS, libc::EADDRNOTAVAIL, libc::EPERM] {
            assert!(local(errno, ConnectCall) && local(errno, Network), "{errno} is local wherever raised");
        }
        for errno in [libc::ENETUNREACH, libc::EHOSTUNREACH, libc::EACCES, libc::EINVAL] {
            assert!(local(errno, ConnectCall), "{errno} from the connect call: this host's routes");
            assert!(!local(errno, Network), "{errno} from the network: the backend cannot be reached");
        }
        for errno in [libc::ECONNREFUSED, libc::ECONNRESET, libc::ETIMEDOUT, libc::EPIPE] {
            assert!(!local(errno, ConnectCall) && !local(errno, Network), "{errno} is the backend's");
        }
        assert!(is_local(&io::Error::from(io::ErrorKind::OutOfMemory), Network));
        assert!(!is_local(&io::Error::other("no errno"), ConnectCall));
    }

    #[tokio::test]
    async fn local_errors_are_marked_as_the_agents() {
        let target: SocketAddr = "10.0.0.1:80".parse().unwrap();
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
            libc::EPERM,
            libc::EACCES,
            libc::ENETUNREACH,
            libc::EHOSTUNREACH,
        ] {
            for spec in [http(&[200]), tcp()] {
                let out = probe_with(target, &spec, failing(errno, Origin::ConnectCall)).await;
                assert!(!out.ok && out.local && !out.timed_out, "{errno}: {out:?}");
                assert!(
                    out.detail.starts_with("agent could not probe: connect: "),
                    "{out:?}"
                );
            }
        }
        let out = probe_with(target, &tcp(), failing(libc::EMFILE, Origin::ConnectCall)).await;
        assert_eq!(
            out.detail,
            "agent could not probe: connect: too many open files"
        );
        let out = probe_with(target, &tcp(), failing(libc::ENETUNREACH, Origin::ConnectCall)).await;
        assert_eq!(out.detail, "agent could not probe: connect: network is unreachable");
        let out = probe_with(target, &tcp(), failing(libc::ECONNREFUSED, Origin::ConnectCall)).await;
        assert!(!out.ok && !out.local, "a refusal is the backend's: {out:?}");
        let out = probe_with(target, &tcp(), failing(libc::EHOSTUNREACH, Origin::Network)).await;
        assert!(!out.ok && !out.local, "no neighbour answer from the backend is the backend's: {out:?}");
        assert_eq!(out.detail, "connect: no route to host");
    }

    const EMFILE_CHILD: &str = "LB_PROBE_EMFILE_CHILD";

    /// With the open-file limit reached for real (in a child process, so that no other test
    /// runs short of descriptors), a probe fails as the agent's own fault.
    #[test]
    fn out_of_descriptors_is_a_local_error() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "health::probe::tests::emfile_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(EMFILE_CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("emfile child: 2 local outcomes"),
            "{stdout}"
        );
    }

    /// The child of [`out_of_descriptors_is_a_local_error`]; does nothing in a normal run.
    #[test]
    fn emfile_child() {
        if std::env::var_os(EMFILE_CHILD).is_none() {
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let limit = libc::rlimit {
            rlim_cur: 128,
            rlim_max: 128,
        };
        // SAFETY: setrlimit reads the struct; this process is the child alone.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let mut held = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            held.push(f);
            assert!(held.len() <= 128, "the limit did not hold");
        }
        let outcomes = runtime
            .block_on(async { [probe(addr, &http(&[200])).await, probe(addr, &tcp()).await] });
        let local = outcomes.iter().filter(|o| !o.ok && o.local).count();
        println!("emfile child: {local} local outcomes: {outcomes:?}");
    }

    #[test]
    fn io_errors_read_lowercase() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(describe(&e), "connection refused");
        let e = io::Error::other("Boom");
        assert_eq!(describe(&e), "boom");
    }
}
