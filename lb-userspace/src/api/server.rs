//! The admin API server: accepts requests on the unix socket and hands each to the agent's
//! loop, which owns all state, so commands are applied one at a time.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    ErrorBody, Request,
    http::{read_request, write_response},
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
/// until the returned task is aborted. Refuses to take over the socket of a running agent.
pub async fn serve(path: &Path, calls: mpsc::Sender<Call>) -> anyhow::Result<JoinHandle<()>> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another agent is already serving {}; stop it first", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let path: PathBuf = path.to_owned();
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let calls = calls.clone();
            let path = path.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &calls).await {
                    tracing::debug!(socket = %path.display(), error = %e, "admin connection failed");
                }
            });
        }
    }))
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

async fn handle(mut stream: UnixStream, calls: &mpsc::Sender<Call>) -> io::Result<()> {
    let (read, write) = stream.split();
    let request = read_request(read).await?;
    let answer = match route(&request.method, &request.path, &request.body) {
        Ok(request) => ask(calls, request).await,
        Err(e) => Err(e),
    };
    let (status, body) = match answer {
        Ok(value) => (200, serde_json::to_vec(&value)?),
        Err(e) => (e.status, serde_json::to_vec(&ErrorBody { error: e.message })?),
    };
    write_response(write, status, "application/json", &body).await
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
}
