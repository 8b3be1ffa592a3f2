//! The CLI's side of the admin API: one blocking request per connection, sent with hyper's
//! HTTP/1.1 client on the unix socket.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::{
    Method,
    header::{CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use super::{ErrorBody, Request, http::MAX_BODY};

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket, or this user may not use it.
    #[error("{}", unreachable(.0, .1))]
    Unreachable(PathBuf, std::io::Error),
    /// The agent refused the request.
    #[error("{0}")]
    Refused(String),
    /// The answer made no sense.
    #[error("bad answer from the agent: {0}")]
    Protocol(String),
}

fn unreachable(socket: &Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        format!("permission denied on the agent's socket {}: the admin API is for root only (run lb as root)", socket.display())
    } else {
        format!("cannot reach the agent at {}: {e} (is `lb run` running? pass --socket if it uses another path)", socket.display())
    }
}

/// A client of the agent at a socket path. Its calls block: make them outside an async
/// runtime (or from `spawn_blocking`).
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client for the agent listening on `socket`.
    pub fn new(socket: &Path) -> Self {
        Client::with_timeout(socket, Duration::from_secs(30))
    }

    /// A client that gives up on an answer after `timeout` ([`ClientError::Unreachable`]).
    pub fn with_timeout(socket: &Path, timeout: Duration) -> Self {
        Client { socket: socket.to_owned(), timeout }
    }

    fn call(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Value, ClientError> {
        let unreachable = |e| ClientError::Unreachable(self.socket.clone(), e);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(unreachable)?;
        let (status, body) = runtime.block_on(async {
            let timed_out = || io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {:?}", self.timeout));
            let exchanged = exchange(&self.socket, method, path, body);
            tokio::time::timeout(self.timeout, exchanged).await.unwrap_or_else(|_| Err(unreachable(timed_out())))
        })?;
        if status == 200 {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()));
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Err(ClientError::Refused(e.error)),
            // Refusals of the HTTP layer (limits, connection cap) come as plain text.
            Err(_) => {
                let text: String = String::from_utf8_lossy(&body).trim().chars().take(200).collect();
                Err(ClientError::Protocol(format!("HTTP {status}: {text}")))
            }
        }
    }

    /// `GET` one of the read endpoints (`/v1/status`, `/v1/stats`, `/v1/config`).
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, Vec::new())
    }

    /// Sends a command.
    pub fn command(&self, request: &Request) -> Result<Value, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call(Method::POST, "/v1/command", body)
    }
}

/// Sends one request on a new connection to `socket`: the status and the body (at most
/// [`MAX_BODY`]).
async fn exchange(socket: &Path, method: Method, path: &str, body: Vec<u8>) -> Result<(u16, Bytes), ClientError> {
    let unreachable = |e| ClientError::Unreachable(socket.to_owned(), e);
    let stream = UnixStream::connect(socket).await.map_err(unreachable)?;
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await;
    let (mut sender, connection) = handshake.map_err(|e| unreachable(io::Error::other(e)))?;
    let driven = tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "lb")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Protocol(format!("cannot send {path}: {e}")))?;
    let response = sender.send_request(request).await.map_err(|e| unreachable(io::Error::other(e)))?;
    let status = response.status().as_u16();
    let body = match Limited::new(response.into_body(), MAX_BODY).collect().await {
        Ok(body) => body,
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(ClientError::Protocol(format!("an answer over {} MiB", MAX_BODY >> 20)));
        }
        Err(e) => return Err(unreachable(io::Error::other(e))),
    };
    driven.abort();
    Ok((status, body.to_bytes()))
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        os::unix::net::UnixListener,
        sync::mpsc,
        thread,
    };

    use super::*;

    /// A socket in a private directory that answers one connection with `answer` (after
    /// reading the request head) and reports the head; the directory goes when dropped.
    struct Fake {
        dir: PathBuf,
        heads: mpsc::Receiver<String>,
    }

    impl Fake {
        fn answering(name: &str, answer: Vec<u8>) -> Fake {
            let dir = std::env::temp_dir().join(format!("lb-client-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let listener = UnixListener::bind(dir.join("lb.sock")).unwrap();
            let (tx, heads) = mpsc::channel();
            thread::spawn(move || {
                let Ok((mut s, _)) = listener.accept() else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 && s.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let _ = s.write_all(&answer);
                // Held open until the client is done.
                let _ = s.read(&mut byte);
            });
            Fake { dir, heads }
        }

        fn socket(&self) -> PathBuf {
            self.dir.join("lb.sock")
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn answer(status: &str, body: &[u8]) -> Vec<u8> {
        [format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(), body].concat()
    }

    #[test]
    fn answers_become_values_or_errors_that_say_why() {
        let fake = Fake::answering("ok", answer("200 OK", br#"{"a":1}"#));
        assert_eq!(Client::new(&fake.socket()).get("/v1/status").unwrap(), serde_json::json!({"a": 1}));
        let head = fake.heads.recv().unwrap();
        assert!(head.starts_with("GET /v1/status HTTP/1.1\r\n"), "{head:?}");
        assert!(head.to_ascii_lowercase().contains("host: lb\r\n"), "{head:?}");

        let fake = Fake::answering("refused", answer("409 Conflict", br#"{"error":"no VIP named web"}"#));
        let e = Client::new(&fake.socket()).command(&Request::VipRemove { name: "web".into() }).unwrap_err();
        assert_eq!(e.to_string(), "no VIP named web");
        assert!(fake.heads.recv().unwrap().starts_with("POST /v1/command HTTP/1.1\r\n"));

        let fake = Fake::answering("capped", answer("503 Service Unavailable", b"too many connections\n"));
        let e = Client::new(&fake.socket()).get("/v1/status").unwrap_err();
        assert_eq!(e.to_string(), "bad answer from the agent: HTTP 503: too many connections");

        let fake = Fake::answering("huge", answer("200 OK", &vec![b' '; MAX_BODY + 1]));
        let e = Client::new(&fake.socket()).get("/v1/status").unwrap_err();
        assert_eq!(e.to_string(), "bad answer from the agent: an answer over 4 MiB");
    }

    #[test]
    fn no_agent_or_no_answer_is_unreachable() {
        let dir = std::env::temp_dir().join(format!("lb-client-{}-none", std::process::id()));
        let e = Client::new(&dir.join("lb.sock")).get("/v1/status").unwrap_err();
        assert!(matches!(&e, ClientError::Unreachable(_, io) if io.kind() == io::ErrorKind::NotFound), "{e}");
        assert!(e.to_string().contains("is `lb run` running?"), "{e}");

        let fake = Fake::answering("silent", Vec::new());
        let e = Client::with_timeout(&fake.socket(), Duration::from_millis(200)).get("/v1/status").unwrap_err();
        assert!(matches!(&e, ClientError::Unreachable(_, io) if io.kind() == io::ErrorKind::TimedOut), "{e}");
    }
}
