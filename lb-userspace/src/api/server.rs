//! The admin API server: accepts requests on the unix socket and hands each to the agent's
//! loop, which owns all state, so commands are applied one at a time. Requests are read under
//! [`Limits::ADMIN`] (see [`http`](super::http)).

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::Context as _;
use serde_json::Value;
use tokio::{
    net::UnixListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    ErrorBody, Request,
    http::{self, HttpRequest, Limits, Response},
};

/// An error answered to the client: HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// 400 bad input, 404 not found, 409 refused, 500 failure.
    pub status: u16,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// The request cannot be carried out as asked (unknown VIP, duplicate, limit).
    pub fn refused(message: impl ToString) -> Self {
        ApiError { status: 409, message: message.to_string() }
    }

    /// The request is malformed.
    pub fn bad_request(message: impl ToString) -> Self {
        ApiError { status: 400, message: message.to_string() }
    }

    /// The agent failed while carrying it out.
    pub fn internal(message: impl ToString) -> Self {
        ApiError { status: 500, message: message.to_string() }
    }
}

/// A request for the agent's loop and where to send the answer.
pub struct Call {
    /// What is asked.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Value, ApiError>>,
}

/// Sends `request` to the agent's loop and waits for the answer.
pub async fn ask(calls: &mpsc::Sender<Call>, request: Request) -> Result<Value, ApiError> {
    let (reply, answer) = oneshot::channel();
    calls
        .send(Call { request, reply })
        .await
        .map_err(|_| ApiError::internal("the agent is shutting down"))?;
    answer.await.map_err(|_| ApiError::internal("the agent dropped the request"))?
}

/// Binds the admin socket (mode 0600, parent directory created with mode 0700) and serves it
/// until the returned task is aborted. Refuses to take over the socket of a running agent, or
/// a path that holds anything but a socket ([`claim`](super::socket_path::claim)).
pub async fn serve(path: &Path, calls: mpsc::Sender<Call>) -> anyhow::Result<JoinHandle<()>> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    super::socket_path::claim(path).await?;
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let handler = move |request| answer(calls.clone(), request);
    Ok(tokio::spawn(http::serve(listener, "admin", Limits::ADMIN, handler)))
}

/// The request a method and path stand for.
fn route(method: &str, path: &str, body: &[u8]) -> Result<Request, ApiError> {
    match (method, path) {
        ("GET", "/v1/status") => Ok(Request::Status),
        ("GET", "/v1/stats") => Ok(Request::Stats),
        ("GET", "/v1/config") => Ok(Request::Config),
        ("POST", "/v1/command") => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid command: {e}"))),
        (_, "/v1/status" | "/v1/stats" | "/v1/config" | "/v1/command") => Err(ApiError {
            status: 405,
            message: format!("{method} is not allowed on {path}"),
        }),
        _ => Err(ApiError {
            status: 404,
            message: format!("no such endpoint {path}"),
        }),
    }
}

async fn answer(calls: mpsc::Sender<Call>, request: HttpRequest) -> Response {
    let answer = match route(&request.method, &request.path, &request.body) {
        Ok(request) => ask(&calls, request).await,
        Err(e) => Err(e),
    };
    let (status, body) = match answer {
        Ok(value) => (200, serde_json::to_vec(&value)),
        Err(e) => (e.status, serde_json::to_vec(&ErrorBody { error: e.message })),
    };
    match body {
        Ok(body) => Response { status, content_type: "application/json", body },
        Err(e) => Response::text(500, &format!("cannot encode the answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/v1/status", b""), Ok(Request::Status));
        let body = br#"{"op":"vip-remove","name":"web"}"#;
        assert_eq!(route("POST", "/v1/command", body), Ok(Request::VipRemove { name: "web".into() }));
        assert_eq!(route("POST", "/v1/command", b"{").unwrap_err().status, 400);
        assert_eq!(route("DELETE", "/v1/status", b"").unwrap_err().status, 405);
        assert_eq!(route("GET", "/nope", b"").unwrap_err().status, 404);
    }

    /// Hostile clients against the real listeners: the admin socket and the metrics endpoint,
    /// both answered by a stand-in for the agent's loop.
    mod hostile {
        use std::{
            io::Write as _,
            net::{SocketAddr, TcpStream},
            os::unix::net::UnixStream as StdUnixStream,
            path::PathBuf,
            sync::{
                Arc,
                atomic::{AtomicBool, Ordering},
            },
            thread,
            time::{Duration, Instant},
        };

        use tokio::net::TcpListener;

        use super::*;
        use crate::api::{StatsReport, StatusReport, client::Client};

        /// A stand-in for the agent's loop: answers every call at once.
        fn fake_agent() -> mpsc::Sender<Call> {
            let (tx, mut rx) = mpsc::channel::<Call>(64);
            tokio::spawn(async move {
                while let Some(call) = rx.recv().await {
                    let answer = match call.request {
                        Request::Status => serde_json::to_value(StatusReport {
                            config_file: "test.yaml".into(),
                            interfaces: vec![],
                            uptime_seconds: 1,
                            data_path: Default::default(),
                            vips: vec![],
                            host: Default::default(),
                            connection_table: Default::default(),
                            flow_sync: None,
                        }),
                        _ => serde_json::to_value(StatsReport {
                            reasons: vec![],
                            health: Default::default(),
                            connection_entries: 0,
                            connection_capacity: 16,
                            redirect_drops: 0,
                        }),
                    };
                    let _ = call.reply.send(answer.map_err(ApiError::internal));
                }
            });
            tx
        }

        /// The admin API on a private socket; the directory goes when this is dropped.
        struct Admin {
            socket: PathBuf,
            task: JoinHandle<()>,
        }

        impl Admin {
            async fn start(name: &str, calls: mpsc::Sender<Call>) -> Admin {
                let dir = std::env::temp_dir().join(format!("lb-api-{}-{name}", std::process::id()));
                let socket = dir.join("lb.sock");
                let task = serve(&socket, calls).await.unwrap();
                Admin { socket, task }
            }
        }

        impl Drop for Admin {
            fn drop(&mut self) {
                self.task.abort();
                if let Some(dir) = self.socket.parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }

        async fn metrics(calls: mpsc::Sender<Call>) -> (SocketAddr, JoinHandle<()>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            (addr, crate::metrics::serve_listener(listener, calls))
        }

        fn rss_mib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().strip_suffix(" kB"));
            kib.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0) / 1024
        }

        /// The status of an HTTP answer.
        fn status(answer: &[u8]) -> Option<u16> {
            std::str::from_utf8(answer.get(..12)?).ok()?.strip_prefix("HTTP/1.1 ")?.parse().ok()
        }

        /// Reads until the close (or an error, or 10 s); returns what came.
        fn read_answer<R: std::io::Read>(mut r: R) -> Vec<u8> {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        }

        /// Sends `head` then up to `max` bytes of one header line in a thread while reading the
        /// answer; returns the answer and how much the server let the client send.
        fn endless_line<S>(stream: S, head: &'static [u8], max: usize) -> (Vec<u8>, usize)
        where
            S: std::io::Read + std::io::Write + Send + 'static,
            S: TryClone,
        {
            let mut writer = stream.try_clone_stream();
            let sender = thread::spawn(move || {
                let chunk = vec![b'a'; 64 << 10];
                let mut sent = 0;
                if writer.write_all(head).is_err() {
                    return 0;
                }
                while sent < max {
                    match writer.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                sent
            });
            let answer = read_answer(stream);
            (answer, sender.join().unwrap_or(usize::MAX))
        }

        trait TryClone: Sized {
            fn try_clone_stream(&self) -> Self;
        }

        impl TryClone for TcpStream {
            fn try_clone_stream(&self) -> Self {
                self.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                self.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                self.try_clone().unwrap()
            }
        }

        impl TryClone for StdUnixStream {
            fn try_clone_stream(&self) -> Self {
                self.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                self.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                self.try_clone().unwrap()
            }
        }

        const HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: lb\r\nX-Endless: ";

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn endless_header_lines_get_431_and_memory_stays_bounded() {
            let calls = fake_agent();
            let (addr, task) = metrics(calls.clone()).await;
            let admin = Admin::start("endless", calls).await;
            let before = rss_mib();
            let max = 256 << 20;
            let socket = admin.socket.clone();
            let (results, peak) = tokio::task::spawn_blocking(move || {
                let done = Arc::new(AtomicBool::new(false));
                let sampler = {
                    let done = done.clone();
                    thread::spawn(move || {
                        let mut peak = 0;
                        while !done.load(Ordering::SeqCst) {
                            peak = peak.max(rss_mib());
                            thread::sleep(Duration::from_millis(5));
                        }
                        peak
                    })
                };
                let clients: Vec<_> = (0..2)
                    .map(|_| thread::spawn(move || endless_line(TcpStream::connect(addr).unwrap(), HEAD, max)))
                    .collect();
                let mut all: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
                // A 1 MB header line to the admin socket.
                all.push(endless_line(StdUnixStream::connect(&socket).unwrap(), HEAD, 1 << 20));
                done.store(true, Ordering::SeqCst);
                (all, sampler.join().unwrap_or(u64::MAX))
            })
            .await
            .unwrap();
            let grown = peak.saturating_sub(before);
            for (answer, sent) in &results {
                assert_eq!(status(answer), Some(431), "{:?}", String::from_utf8_lossy(answer));
                assert!(*sent < 64 << 20, "the server took {sent} bytes of one header line");
            }
            let sent: Vec<_> = results.iter().map(|(_, sent)| sent >> 10).collect();
            eprintln!("endless header lines: KiB sent before the 431 and the close {sent:?}; peak RSS {grown} MiB above the start");
            assert!(grown < 64, "RSS grew {grown} MiB");
            task.abort();
        }

        #[tokio::test]
        async fn a_slowloris_client_is_cut_off_after_the_read_timeout() {
            let (addr, task) = metrics(fake_agent()).await;
            let (answer, elapsed, sent) = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let stream = TcpStream::connect(addr).unwrap();
                let mut writer = stream.try_clone_stream();
                let dripper = thread::spawn(move || {
                    let mut sent = 0;
                    for byte in b"GET /metrics HTTP/1.1\r\nHost: lb\r\n".iter().take(12) {
                        if writer.write_all(&[*byte]).is_err() {
                            break;
                        }
                        sent += 1;
                        thread::sleep(Duration::from_secs(1));
                    }
                    sent
                });
                let answer = read_answer(stream);
                let elapsed = started.elapsed();
                (answer, elapsed, dripper.join().unwrap_or(0))
            })
            .await
            .unwrap();
            eprintln!("slowloris: answered and closed after {elapsed:?}; the client sent {sent} bytes in all");
            assert_eq!(status(&answer), Some(408), "{:?}", String::from_utf8_lossy(&answer));
            let timeout = http::Limits::METRICS.read_timeout;
            assert!(elapsed >= timeout && elapsed < timeout + Duration::from_secs(2), "{elapsed:?}");
            task.abort();
        }

        /// Connections to `port` that a process holds a descriptor for on the server side
        /// (`/proc/net/tcp`: local port `port`, not listening, with an inode).
        fn server_sockets(port: u16) -> usize {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            let port = format!(":{port:04X}");
            table
                .lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<_> = l.split_whitespace().collect();
                    f.len() > 9 && f[1].ends_with(&port) && f[3] != "0A" && f[9] != "0"
                })
                .count()
        }

        fn raise_open_file_limit(want: u64) {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit/setrlimit read or fill the struct; raising the soft limit
            // towards the hard one affects nothing else.
            unsafe {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                if limit.rlim_cur < want {
                    limit.rlim_cur = want.min(limit.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
            }
        }

        fn timed_status(socket: PathBuf) -> Duration {
            let start = Instant::now();
            let answer = Client::new(&socket).get("/v1/status");
            let elapsed = start.elapsed();
            assert!(answer.is_ok(), "{answer:?}");
            elapsed
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn two_thousand_idle_metrics_connections_neither_hold_descriptors_nor_delay_the_admin_api() {
            const IDLE: usize = 2000;
            raise_open_file_limit(IDLE as u64 + 1024);
            let calls = fake_agent();
            let (addr, task) = metrics(calls.clone()).await;
            let admin = Admin::start("idle", calls).await;
            let (idle, held) = tokio::task::spawn_blocking(move || {
                // In parallel: past the cap and the listen backlog (128), connections wait for
                // the server, which takes one per 10 ms; a connector gives up at its first
                // connection not made within a second.
                let connectors: Vec<_> = (0..20)
                    .map(|_| {
                        thread::spawn(move || {
                            (0..IDLE / 20)
                                .map_while(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok())
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let idle: Vec<_> = connectors.into_iter().flat_map(|c| c.join().unwrap_or_default()).collect();
                thread::sleep(Duration::from_millis(200));
                (idle, server_sockets(addr.port()))
            })
            .await
            .unwrap();
            let cap = http::Limits::METRICS.max_connections;
            assert!(idle.len() > cap + 64, "only {} of {IDLE} connections made", idle.len());
            assert!(held <= cap + 1, "the server holds {held} connections (cap {cap})");
            let socket = admin.socket.clone();
            let latencies = tokio::task::spawn_blocking(move || (0..10).map(|_| timed_status(socket.clone())).collect::<Vec<_>>())
                .await
                .unwrap();
            let worst = latencies.iter().max().copied().unwrap_or_default();
            eprintln!(
                "{} of {IDLE} idle metrics connections made: the server holds {held} (cap {cap}); admin status answered in at most {worst:?}",
                idle.len()
            );
            assert!(worst < Duration::from_millis(100), "{latencies:?}");
            // Once the idle ones are gone, a scrape is served again.
            drop(idle);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let answer = tokio::task::spawn_blocking(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\n\r\n");
                read_answer(s)
            })
            .await
            .unwrap();
            assert_eq!(status(&answer), Some(200), "{:?}", String::from_utf8_lossy(&answer));
            task.abort();
        }
    }
}
