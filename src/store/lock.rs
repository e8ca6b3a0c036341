//! The single-writer lock (`<state>.lock`, an OS file lock the kernel drops when the process
//! dies) and the private file helpers: files next to the state are created 0600 and never
//! opened through a symlink or a hard link. It owns no SQL and must not open the database; the
//! store uses `create_private` to create a new state file before SQLite opens it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;

/// Opens (creating it 0600 if needed) a file this process owns next to the state: never through
/// a symlink, and only a plain file with one link, so that a planted link cannot make us write
/// to (or truncate) another file.
fn open_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            std::io::Error::other(format!(
                "{} is a symbolic link; refusing to follow it. Remove the link (okta-postman-sync creates this file itself)",
                path.display()
            ))
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if !meta.is_file() || meta.nlink() > 1 {
            return Err(std::io::Error::other(format!(
                "{} is not a plain file of its own (a hard link or a special file); refusing to use it. Remove it",
                path.display()
            )));
        }
    }
    Ok(file)
}

/// Creates a new, empty state database file with mode 0600 before SQLite opens it: it holds
/// every member's email. SQLite gives its `-wal` and `-shm` files the same mode.
pub(super) fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path).map(drop)
}

/// The single-writer lock: an exclusive OS file lock on `<state_path>.lock`, held for as long
/// as the value lives. The kernel releases it when the process dies, even on `kill -9`.
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    pub fn acquire(state_path: &Path) -> Result<Self, StoreError> {
        let mut lock_path = state_path.as_os_str().to_owned();
        lock_path.push(".lock");
        let path = PathBuf::from(lock_path);
        let mut file = open_private(&path).map_err(|e| StoreError::Unreadable {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default();
                return Err(StoreError::HeldByOther {
                    path: state_path.to_path_buf(),
                    pid,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Unreadable {
                    path,
                    detail: e.to_string(),
                })
            }
        }
        // Best effort: the pid only improves the message of a second instance.
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(StateLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_lock_admits_one_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let first = StateLock::acquire(&path).expect("first");
        let second = StateLock::acquire(&path).err().expect("second must fail");
        assert!(second.to_string().contains("only one writer"), "{second}");
        drop(first);
        StateLock::acquire(&path).expect("free again");
    }
}
