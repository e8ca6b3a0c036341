//! The SQLite state: the snapshot of what we last pushed per Okta user and group, the
//! write-ahead journal of SCIM writes, the per-user failure record (quarantine), the unmanaged
//! members seen on the last full run, and the history of runs. Versioned, transactional
//! migrations. This module owns the schema and never talks to a network; it is synchronous
//! (async callers go through [`StoreHandle::call`], which runs on tokio's blocking pool). An
//! unreadable, read-only, locked or corrupt file is an error naming the file and the fix, never
//! a silent fresh start.
//!
//! This file holds the [`Store`] (one SQLite connection), its cheap-to-clone [`StoreHandle`],
//! [`StoreError`], opening a state file, and the private helpers every concern shares. Each
//! concern adds its own `impl Store` block in a submodule:
//! - `schema`: the migrations, the integrity check and the schema version rules.
//! - `snapshot`: what we believe Postman holds (users, groups and their members, users missing
//!   from the last full listing, unmanaged members) and how a confirmed write changes it.
//! - `journal`: the write-ahead journal (intend, close, recovery of interrupted writes, pruning).
//! - `history`: the journal read back as the audit trail, adoptions recorded in it, and what
//!   started each run.
//! - `failures`: the per-user failure record and quarantine.
//! - `events`: the System Log cursor, event dedup, the durable queue of event work and the
//!   event guard's window (issue 14).
//! - `runs`: run history, the last successful and last full run, runs a panic left unfinished.
//! - `lock`: the single-writer lock file and the private (0600, no-symlink) file helpers.
//!
//! Only this file touches the connection's setup; the submodules must not open connections of
//! their own, and none of them may reach the network or the clock (`now` is a parameter).

mod events;
mod failures;
mod history;
mod journal;
mod lock;
mod runs;
mod schema;
mod snapshot;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use events::{
    Cursor, EventCause, EventStatus, EventWork, HeldDeactivation, QueueKind, QueuedHint, Taken,
    MAX_QUEUE,
};
pub use failures::FailureRecord;
pub use history::{Adopted, HistoryEntry, HistoryFilter, Trigger};
pub use journal::{Failure, PendingWrite, Quarantine, UnresolvedWrite, RECOVERY_ATTEMPTS};
pub use lock::StateLock;
pub use runs::RunRecord;
pub use snapshot::{GroupChange, SnapshotChange, UnmanagedRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state database {path} is corrupt or not a SQLite database ({detail}). Restore it from a backup, or move it aside to start over (the next run is then a full run that adopts existing Postman members)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("the state database {path} is read-only ({detail}). Make it and its directory writable by this service's user")]
    ReadOnly { path: PathBuf, detail: String },
    #[error("the state database {path} cannot be opened ({detail}). Check that the path exists and is readable and writable by this service's user")]
    Unreadable { path: PathBuf, detail: String },
    #[error("the state database {path} is locked by another process ({detail}). Only one okta-postman-sync may use a state file at a time")]
    Busy { path: PathBuf, detail: String },
    #[error("another okta-postman-sync process{pid} is using the state {path}; only one writer per state database is allowed. Stop it (or wait for it to finish) and retry")]
    HeldByOther { path: PathBuf, pid: String },
    #[error("the state database {path} has schema version {found}, newer than this binary understands ({known}). Upgrade okta-postman-sync")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("state database {path}: {detail}")]
    Sqlite { path: PathBuf, detail: String },
    #[error("state database {path}: a stored value is invalid ({detail})")]
    BadValue { path: PathBuf, detail: String },
}

impl StoreError {
    fn from_sqlite(path: &Path, e: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        let detail = e.to_string();
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                StoreError::Corrupt { path, detail }
            }
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { path, detail },
            Some(ErrorCode::CannotOpen) | Some(ErrorCode::PermissionDenied) => {
                StoreError::Unreadable { path, detail }
            }
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                StoreError::Busy { path, detail }
            }
            _ => StoreError::Sqlite { path, detail },
        }
    }
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A cheap-to-clone handle on the one open [`Store`] of the process (the shape of mini-redis's
/// `Db`): every task of a run, the scheduler and the HTTP endpoints share it. SQLite is
/// blocking, so [`StoreHandle::call`] runs each closure on tokio's blocking pool.
#[derive(Clone)]
pub struct StoreHandle {
    store: std::sync::Arc<std::sync::Mutex<Store>>,
}

impl StoreHandle {
    pub fn new(store: Store) -> Self {
        Self {
            store: std::sync::Arc::new(std::sync::Mutex::new(store)),
        }
    }

    /// Runs `f` on the store from synchronous code (benchmarks, seeding); async code uses
    /// [`StoreHandle::call`].
    pub fn blocking<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut guard = self.store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Runs `f` on the store from async code, off the async worker threads.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = std::sync::Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (transactions
            // roll back), so a poisoned lock is still usable.
            let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Sqlite {
                path: "state".into(),
                detail: format!("store task failed: {e}"),
            })
        })
    }
}

/// A counter read back from the database, which is untrusted input like any other: negative
/// values are 0 and huge ones saturate.
fn clamp_count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    /// Opens the state database, creating it when the file does not exist (a first run), and
    /// migrates it. An existing file that cannot be used is an error, never replaced.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let exists = path.exists();
        if !exists {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.exists() {
                    return Err(StoreError::Unreadable {
                        path: path.to_path_buf(),
                        detail: format!("the directory {} does not exist", dir.display()),
                    });
                }
            }
        }
        if !exists {
            lock::create_private(path).map_err(|e| StoreError::Unreadable {
                path: path.to_path_buf(),
                detail: format!("creating the file: {e}"),
            })?;
        }
        let flags = if exists {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::from_sqlite(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.configure(true)?;
        store.check_integrity()?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing state database without writing anything (dry runs, `status`).
    /// `Ok(None)` when the file does not exist.
    pub fn open_read_only(path: &Path) -> Result<Option<Self>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::from_sqlite(path, e))?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store
            .conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| store.err(e))?;
        store.check_integrity()?;
        store.require_current_schema()?;
        Ok(Some(store))
    }

    /// An in-memory store for tests and the demo.
    pub fn in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| StoreError::from_sqlite(&path, e))?;
        let mut store = Store { conn, path };
        store.configure(false)?;
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::from_sqlite(&self.path, e)
    }

    fn configure(&mut self, wal: bool) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| self.err(e))?;
        if wal {
            // WAL: readers (status, /status) never block the writer. synchronous=FULL: a
            // confirmed journal entry survives a power cut, not just a crash.
            self.conn
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| self.err(e))?;
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
        // Temporary tables in memory: containers run with a read-only root filesystem.
        self.conn
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(|e| self.err(e))?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Runs `f` in one write transaction: committed when it succeeds, rolled back otherwise.
    fn in_tx<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction()
            .map_err(|e| StoreError::from_sqlite(path, e))?;
        let out = f(&tx).map_err(|e| StoreError::from_sqlite(path, e))?;
        tx.commit().map_err(|e| StoreError::from_sqlite(path, e))?;
        Ok(out)
    }

    /// Runs a query and collects its rows, each mapped by `f`, into any collection.
    fn collect_rows<T, C, P, F>(&self, sql: &str, params: P, f: F) -> Result<C, StoreError>
    where
        C: FromIterator<T>,
        P: rusqlite::Params,
        F: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(params, f).map_err(|e| self.err(e))?;
        rows.collect::<Result<C, _>>().map_err(|e| self.err(e))
    }
}

/// Builders shared by the tests of every submodule.
#[cfg(test)]
mod fixtures {
    use chrono::{DateTime, Utc};

    use super::{Failure, Quarantine, Store, StoreError};
    use crate::model::{
        ManagedGroup, ManagedUser, OktaGroupId, OktaUserId, OpKind, ScimGroupId, ScimUserId,
        Subject, UserAttrs,
    };

    pub(super) fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .expect("valid time")
            .with_timezone(&Utc)
    }

    pub(super) fn ann() -> ManagedUser {
        ManagedUser {
            okta_id: OktaUserId::new("00uann"),
            scim_id: ScimUserId::new("s-ann"),
            attrs: UserAttrs {
                user_name: "ann@example.com".into(),
                given_name: "Ann".into(),
                family_name: "Lee".into(),
            },
            active: true,
        }
    }

    /// Records the intent of a create of Ann's account (`run "r"`).
    pub(super) fn intend_create(s: &mut Store, id: &OktaUserId, at: DateTime<Utc>) -> i64 {
        s.journal_intend(
            "r",
            &Subject::User(id.clone()),
            OpKind::Create,
            "ann@example.com",
            "{}",
            at,
        )
        .expect("intend")
    }

    /// Records that create `j` failed permanently, with this quarantine rule.
    pub(super) fn fail_create(
        s: &mut Store,
        j: i64,
        id: &OktaUserId,
        error: &str,
        after: u32,
        for_: std::time::Duration,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let failure = Failure {
            subject: &Subject::User(id.clone()),
            kind: OpKind::Create,
            label: "ann@example.com",
            error,
            permanent: true,
            quarantine: Quarantine { after, for_ },
        };
        s.journal_failed(j, &failure, &[], at)
    }

    pub(super) fn eng() -> ManagedGroup {
        ManagedGroup {
            okta_id: OktaGroupId::new("00geng"),
            scim_id: ScimGroupId::new("g-eng"),
            display_name: "Engineering".into(),
            members: [ScimUserId::new("s-ann")].into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OktaUserId;
    use crate::store::fixtures::*;

    #[test]
    fn a_corrupt_file_is_an_error_and_is_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        std::fs::write(
            &path,
            b"this is not a database, it is a text file that got here by mistake",
        )
        .expect("write");
        let before = std::fs::read(&path).expect("read");
        let e = Store::open(&path).err().expect("must fail");
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("state.db"));
        assert_eq!(std::fs::read(&path).expect("read"), before);
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let e = Store::open(Path::new("/nonexistent-dir-for-test/state.db"))
            .err()
            .expect("must fail");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn read_only_open_of_a_missing_file_creates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        assert!(Store::open_read_only(&path).expect("ok").is_none());
        assert!(!path.exists());
    }

    #[test]
    fn damaged_counters_in_the_database_neither_fail_nor_overflow() {
        let mut s = Store::in_memory().expect("mem");
        let id = OktaUserId::new("00uann");
        s.conn
            .execute(
                "INSERT INTO failures VALUES ('00uann', 'ann@example.com', 'create', 'x', 1, 9223372036854775807, 'a', 'a', NULL)",
                [],
            )
            .expect("row");
        assert_eq!(s.failures().expect("failures")[0].attempts, u32::MAX);
        let j = intend_create(&mut s, &id, now());
        fail_create(
            &mut s,
            j,
            &id,
            "400",
            3,
            std::time::Duration::from_secs(u64::MAX),
            now(),
        )
        .expect("a huge counter and duration are clamped");
        let j2 = intend_create(&mut s, &id, now());
        s.conn
            .execute("UPDATE journal SET attempts = -5 WHERE id = ?1", [j2])
            .expect("row");
        assert_eq!(s.journal_pending().expect("pending")[0].attempts, 0);
        assert!(!s
            .journal_recovery_failed(j2, "e", now())
            .expect("a negative counter counts from 0"));
        assert_eq!(s.journal_pending().expect("pending")[0].attempts, 1);
    }
}
