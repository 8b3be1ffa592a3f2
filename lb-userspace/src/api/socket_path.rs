//! Making the admin socket's path free before binding it: only a socket that no agent answers
//! on is removed; a live socket, or anything that is not a socket (a file, a directory, a
//! symbolic link), is refused and left as it is.

use std::{
    io,
    os::unix::fs::FileTypeExt as _,
    path::Path,
};

use anyhow::bail;
use tokio::net::UnixStream;

/// What is at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Nothing,
    /// A unix socket.
    Socket,
    /// Something else: `what` names it.
    Other(&'static str),
}

/// What to do with the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bind it as it is.
    Bind,
    /// Remove the stale socket, then bind.
    RemoveStale,
    /// Touch nothing and refuse to start, for this reason.
    Refuse(String),
}

/// The decision for `path` given what is there and, for a socket, how a connection to it
/// went (`Ok` when something answers).
pub fn decide(path: &Path, found: Found, connect: Option<&io::Result<()>>) -> Action {
    let shown = path.display();
    match (found, connect) {
        (Found::Nothing, _) => Action::Bind,
        (Found::Other(what), _) => Action::Refuse(format!(
            "admin_socket {shown} is {what}, not a socket: nothing was removed; move it away or set global.admin_socket to another path"
        )),
        (Found::Socket, Some(Ok(()))) => Action::Refuse(format!("another agent is already serving {shown}; stop it first")),
        (Found::Socket, Some(Err(e))) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Action::RemoveStale,
        (Found::Socket, Some(Err(e))) => Action::Refuse(format!(
            "admin_socket {shown} is a socket that could not be checked ({e}): it was left in place; remove it if no agent uses it"
        )),
        (Found::Socket, None) => Action::Refuse(format!("admin_socket {shown} is a socket that was not checked")),
    }
}

/// Looks at `path` (without following a symbolic link), checks a socket there by connecting
/// to it, and removes it only if it is stale; fails, touching nothing, otherwise.
pub async fn claim(path: &Path) -> anyhow::Result<()> {
    let found = match std::fs::symlink_metadata(path) {
        Ok(m) => kind(&m.file_type()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Found::Nothing,
        Err(e) => bail!("admin_socket {}: {e}", path.display()),
    };
    let connect = match found {
        Found::Socket => Some(UnixStream::connect(path).await.map(drop)),
        _ => None,
    };
    match decide(path, found, connect.as_ref()) {
        Action::Bind => Ok(()),
        Action::RemoveStale => {
            std::fs::remove_file(path).map_err(|e| anyhow::anyhow!("removing the stale socket {}: {e}", path.display()))?;
            tracing::info!(socket = %path.display(), "removed a stale admin socket no agent answered on");
            Ok(())
        }
        Action::Refuse(why) => bail!(why),
    }
}

fn kind(t: &std::fs::FileType) -> Found {
    if t.is_socket() {
        Found::Socket
    } else if t.is_dir() {
        Found::Other("a directory")
    } else if t.is_symlink() {
        Found::Other("a symbolic link")
    } else if t.is_file() {
        Found::Other("a regular file")
    } else {
        Found::Other("a special file")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn decisions() {
        let p = Path::new("/run/lb/lb.sock");
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(decide(p, Found::Nothing, None), Action::Bind);
        assert_eq!(decide(p, Found::Socket, Some(&Err(refused))), Action::RemoveStale);
        assert_eq!(
            decide(p, Found::Socket, Some(&Ok(()))),
            Action::Refuse("another agent is already serving /run/lb/lb.sock; stop it first".into())
        );
        assert!(matches!(decide(p, Found::Socket, Some(&Err(denied))), Action::Refuse(_)));
        assert_eq!(
            decide(p, Found::Other("a regular file"), None),
            Action::Refuse("admin_socket /run/lb/lb.sock is a regular file, not a socket: nothing was removed; move it away or set global.admin_socket to another path".into())
        );
    }

    /// A private directory, removed when dropped.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lb-socket-path-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[tokio::test]
    async fn only_a_stale_socket_is_removed() {
        let d = dir("claim");
        // A regular file, a directory and a symbolic link stay, with a clear error.
        let file = d.0.join("file.sock");
        std::fs::write(&file, b"precious").unwrap();
        let e = claim(&file).await.unwrap_err().to_string();
        assert!(e.contains("is a regular file, not a socket: nothing was removed"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        let sub = d.0.join("dir.sock");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("inside"), b"x").unwrap();
        let e = claim(&sub).await.unwrap_err().to_string();
        assert!(e.contains("is a directory, not a socket"), "{e}");
        assert!(sub.join("inside").exists());
        let link = d.0.join("link.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = claim(&link).await.unwrap_err().to_string();
        assert!(e.contains("is a symbolic link, not a socket"), "{e}");
        assert!(std::fs::symlink_metadata(&link).is_ok() && file.exists());
        // A live socket stays and is refused.
        let live = d.0.join("live.sock");
        let listener = tokio::net::UnixListener::bind(&live).unwrap();
        let e = claim(&live).await.unwrap_err().to_string();
        assert!(e.contains("another agent is already serving"), "{e}");
        assert!(live.exists());
        // Once nothing answers on it, it is stale and removed.
        drop(listener);
        claim(&live).await.unwrap();
        assert!(!live.exists());
        // Nothing there: nothing to do.
        claim(&d.0.join("none.sock")).await.unwrap();
    }
}
