//! The CLI's side of the admin API: one blocking request per connection, sent with hyper's
//! HTTP/1.1 client on the unix socket.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
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

/// A client of the agent at a socket path.
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
        let exchanged = runtime.block_on(async {
            let timed_out = || io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {:?}", self.timeout));
            let exchanged = exchange(&self.socket, method, path, body);
            tokio::time::timeout(self.timeout, exchanged).await.unwrap_or_else(|_| Err(timed_out()))
        });
        let (status, body) = exchanged.map_err(unreachable)?;
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
async fn exchange(socket: &Path, method: Method, path: &str, body: Vec<u8>) -> io::Result<(u16, Bytes)> {
    let stream = UnixStream::connect(socket).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(io::Error::other)?;
    let driven = tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "lb")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(io::Error::other)?;
    let response = sender.send_request(request).await.map_err(io::Error::other)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(io::Error::other)?;
    driven.abort();
    Ok((status, body.to_bytes()))
}
