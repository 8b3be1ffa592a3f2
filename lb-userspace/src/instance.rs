//! One agent per instance. An instance (`global.instance`) has a runtime directory,
//! `/run/lb/<instance>/`, beside its pinned data path in bpffs: it holds the instance lock
//! (`agent.lock`) and the record of what the agent added to the host ([`crate::host`]). Both
//! live on tmpfs, so they last exactly as long as the pins, the addresses and the routes they
//! describe: until a reboot or `lb teardown`.
//!
//! The lock is an advisory `flock` taken before the agent touches any map, pin, link, address
//! or route. The kernel releases it when its holder exits, however it exits, so a lock file is
//! never stale. The holder writes its process id and admin socket into the file, so that a
//! second `lb run` can say who holds the instance and `lb teardown` can reach it.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read as _, Seek as _, Write as _},
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where instances keep their runtime directories.
pub const RUN_ROOT: &str = "/run/lb";

/// The runtime directory of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceDir {
    dir: PathBuf,
}

/// Who holds an instance's lock, as its holder wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's process id.
    pub pid: u32,
    /// The admin socket it serves (empty: none, such as `lb teardown`).
    pub admin_socket: PathBuf,
}

/// The held lock of an instance: dropping it (or the process exiting) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    dir: InstanceDir,
}

/// Why the lock of an instance could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "instance {instance:?} is already run by process {pid} (admin socket {socket}); \
         one agent per instance: stop it first, or give this configuration another global.instance",
        pid = .holder.pid, socket = .holder.admin_socket.display()
    )]
    Held {
        /// The instance.
        instance: String,
        /// Who holds it (what it wrote; a default value if it had not written yet).
        holder: Holder,
    },
    /// The lock file could not be opened or locked.
    #[error("locking {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl InstanceDir {
    /// The runtime directory of `instance` under [`RUN_ROOT`].
    pub fn of_instance(instance: &str) -> Self {
        InstanceDir::at(Path::new(RUN_ROOT).join(instance))
    }

    /// A runtime directory at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        InstanceDir { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The instance's name (the directory's).
    pub fn instance(&self) -> String {
        self.dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    /// The lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("agent.lock")
    }

    /// The record of what the agent added to the host.
    pub fn host_record(&self) -> PathBuf {
        self.dir.join("host-state.json")
    }

    /// Takes the instance's lock without waiting (creating the directory, mode 0700, if
    /// needed). [`LockError::Held`] says who holds it.
    pub fn try_lock(&self) -> Result<InstanceLock, LockError> {
        let path = self.lock_file();
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io)?;
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(InstanceLock { file, dir: self.clone() }),
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Err(LockError::Held { instance: self.instance(), holder: serde_json::from_str(&text).unwrap_or_default() })
            }
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Who holds the lock now, if anyone (the lock is taken and released at once when free).
    pub fn holder(&self) -> Result<Option<Holder>, LockError> {
        if !self.dir.exists() {
            return Ok(None);
        }
        match self.try_lock() {
            Ok(_) => Ok(None),
            Err(LockError::Held { holder, .. }) => Ok(Some(holder)),
            Err(e) => Err(e),
        }
    }
}

impl InstanceLock {
    /// Records this process and its admin socket in the lock file, for a second agent's error
    /// message and for `lb teardown`.
    pub fn record_holder(&mut self, admin_socket: &Path) -> anyhow::Result<()> {
        let holder = Holder { pid: std::process::id(), admin_socket: admin_socket.to_owned() };
        let text = serde_json::to_string(&holder)?;
        let path = self.dir.lock_file();
        self.file.set_len(0).and_then(|()| self.file.rewind()).with_context(|| format!("writing {}", path.display()))?;
        self.file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The instance directory this lock belongs to.
    pub fn dir(&self) -> &InstanceDir {
        &self.dir
    }

    /// Removes the runtime directory while the lock is still held (`lb teardown`: nothing of
    /// the instance is left).
    pub fn remove_dir(self) -> anyhow::Result<()> {
        std::fs::remove_dir_all(self.dir.dir()).with_context(|| format!("removing {}", self.dir.dir().display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> InstanceDir {
        let dir = std::env::temp_dir().join(format!("lb-instance-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        InstanceDir::at(dir)
    }

    #[test]
    fn a_second_lock_of_the_same_instance_is_refused_and_names_the_holder() {
        let dir = temp_dir("a");
        let mut first = dir.try_lock().expect("first lock");
        first.record_holder(Path::new("/run/lb/a.sock")).unwrap();
        match dir.try_lock() {
            Err(LockError::Held { instance, holder }) => {
                assert_eq!(instance, dir.instance());
                assert_eq!(holder, Holder { pid: std::process::id(), admin_socket: "/run/lb/a.sock".into() });
                let message = LockError::Held { instance, holder }.to_string();
                assert!(message.contains(&format!("process {}", std::process::id())), "{message}");
                assert!(message.contains("/run/lb/a.sock"), "{message}");
            }
            other => panic!("a second lock was not refused: {other:?}"),
        }
        assert_eq!(dir.holder().unwrap().map(|h| h.pid), Some(std::process::id()));
        drop(first);
        assert_eq!(dir.holder().unwrap(), None, "dropping the lock releases it");
        let again = dir.try_lock().expect("the lock is free again");
        again.remove_dir().unwrap();
        assert!(!dir.dir().exists());
    }

    #[test]
    fn the_lock_is_released_when_its_holder_dies() {
        let dir = temp_dir("b");
        std::fs::create_dir_all(dir.dir()).unwrap();
        // A child process takes the lock (flock, as the agent does; --no-fork: the process
        // that holds it is the one killed) and is killed.
        let mut child = std::process::Command::new("flock")
            .arg("--no-fork")
            .arg(dir.dir().join("agent.lock"))
            .args(["sleep", "30"])
            .spawn()
            .expect("flock(1)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while dir.holder().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "the child never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(dir.try_lock().is_ok(), "the lock of a dead holder is free");
        std::fs::remove_dir_all(dir.dir()).unwrap();
    }

    #[test]
    fn no_directory_means_no_holder() {
        let dir = temp_dir("c");
        assert_eq!(dir.holder().unwrap(), None);
        assert!(!dir.dir().exists(), "asking does not create the directory");
    }
}
