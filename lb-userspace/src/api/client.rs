//! The CLI's side of the admin API: one blocking request per connection.

use std::{os::unix::net::UnixStream, path::{Path, PathBuf}, time::Duration};

use serde_json::Value;

use super::{ErrorBody, Request, http::exchange};

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

    fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Value, ClientError> {
        let unreachable = |e| ClientError::Unreachable(self.socket.clone(), e);
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(unreachable)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(unreachable)?;
        let (status, body) = exchange(&mut stream, method, path, body).map_err(unreachable)?;
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
        self.call("GET", path, b"")
    }

    /// Sends a command.
    pub fn command(&self, request: &Request) -> Result<Value, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call("POST", "/v1/command", &body)
    }
}
