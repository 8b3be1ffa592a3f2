//! Loopback servers for the probe and checker tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Connections a test server accepts before it stops.
const MAX_CONNECTIONS: usize = 10_000;
/// Longest time a test server spends on one connection.
const CONNECTION_LIMIT: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1 that stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Requests (HTTP servers) or connections (other servers) seen so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F, Fut>(per_connection: F) -> TestServer
where
    F: Fn(TcpStream, SocketAddr, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        for _ in 0..MAX_CONNECTIONS {
            let Ok((conn, _)) = listener.accept().await else {
                break;
            };
            let work = per_connection(conn, addr, counter.clone());
            connections.spawn(async move {
                let _ = tokio::time::timeout(CONNECTION_LIMIT, work).await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    TestServer {
        addr,
        requests,
        task,
    }
}

/// Reads an HTTP request head, bounded in size.
async fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while buf.len() < 16 * 1024 {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end + 4);
            return String::from_utf8(buf).ok();
        }
    }
    None
}

/// An HTTP server: `respond(request head, server address)` returns the pieces of the response,
/// written with a short pause between them.
pub async fn http_server<F>(respond: F) -> TestServer
where
    F: Fn(&str, SocketAddr) -> Vec<Vec<u8>> + Send + Sync + 'static,
{
    let respond = Arc::new(respond);
    serve(move |mut conn, addr, requests| {
        let respond = respond.clone();
        async move {
            let Some(head) = read_head(&mut conn).await else {
                return;
            };
            requests.fetch_add(1, Ordering::SeqCst);
            let pieces = respond(&head, addr);
            let last = pieces.len().saturating_sub(1);
            for (i, piece) in pieces.iter().enumerate() {
                if conn.write_all(piece).await.is_err() {
                    return;
                }
                if i < last {
                    let _ = conn.flush().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let _ = conn.shutdown().await;
        }
    })
    .await
}

/// Accepts connections and holds them open without a word.
pub async fn silent_server() -> TestServer {
    serve(|conn, _, requests| async move {
        requests.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(CONNECTION_LIMIT).await;
        drop(conn);
    })
    .await
}

/// Accepts connections and closes them at once.
pub async fn closing_server() -> TestServer {
    serve(|conn, _, requests| async move {
        requests.fetch_add(1, Ordering::SeqCst);
        drop(conn);
    })
    .await
}

/// A loopback address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
