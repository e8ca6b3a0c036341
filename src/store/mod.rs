//! The SQLite state: the snapshot of what we last pushed per Okta user, the write-ahead journal
//! of SCIM writes, the per-user failure record (quarantine), the unmanaged members seen on the
//! last full run, and the history of runs. Versioned, transactional migrations. This module owns
//! the schema and never talks to a network; it is synchronous (callers in async code use
//! `spawn_blocking` or hold it briefly). An unreadable, read-only, locked or corrupt file is an
//! error naming the file and the fix, never a silent fresh start.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::model::{
    ManagedGroup, ManagedUser, OktaGroupId, OktaUserId, ScimGroupId, ScimUserId, UserAttrs,
};

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

/// Schema migrations, applied in order, each in its own transaction together with the bump of
/// `PRAGMA user_version`, so the store is never left half-migrated.
const MIGRATIONS: &[&str] = &[
    // 1: snapshot, journal, failures, unmanaged members, runs.
    r#"
    CREATE TABLE users (
        okta_id     TEXT PRIMARY KEY,
        scim_id     TEXT NOT NULL UNIQUE,
        user_name   TEXT NOT NULL,
        given_name  TEXT NOT NULL,
        family_name TEXT NOT NULL,
        active      INTEGER NOT NULL CHECK (active IN (0, 1)),
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE journal (
        id         INTEGER PRIMARY KEY,
        run_id     TEXT NOT NULL,
        okta_id    TEXT NOT NULL,
        op         TEXT NOT NULL,
        user_name  TEXT NOT NULL,
        payload    TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('intended', 'done', 'failed', 'resolved', 'abandoned')),
        scim_id    TEXT,
        error      TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX journal_open ON journal (state) WHERE state = 'intended';
    CREATE TABLE failures (
        okta_id       TEXT PRIMARY KEY,
        user_name     TEXT NOT NULL,
        op            TEXT NOT NULL,
        error         TEXT NOT NULL,
        permanent     INTEGER NOT NULL,
        attempts      INTEGER NOT NULL,
        first_failed  TEXT NOT NULL,
        last_failed   TEXT NOT NULL,
        retry_after   TEXT
    );
    CREATE TABLE unmanaged (
        scim_id   TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        active    INTEGER NOT NULL
    );
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        full        INTEGER NOT NULL,
        outcome     TEXT,
        counts      TEXT,
        errors      TEXT
    );
    "#,
    // 2: pushed groups (issue 4) and the Postman members we believe each has.
    r#"
    CREATE TABLE groups (
        okta_id      TEXT PRIMARY KEY,
        scim_id      TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL,
        updated_at   TEXT NOT NULL
    );
    CREATE TABLE group_members (
        okta_group_id TEXT NOT NULL REFERENCES groups (okta_id) ON DELETE CASCADE,
        scim_user_id  TEXT NOT NULL,
        PRIMARY KEY (okta_group_id, scim_user_id)
    );
    "#,
    // 3 (issue 11): an interrupted write whose resolution keeps failing is retried a bounded
    // number of times and then parked, so it cannot block every run; a managed user missing
    // from a full Postman listing is remembered, and only forgotten when a second consecutive
    // full listing lacks it too.
    r#"
    ALTER TABLE journal ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE journal ADD COLUMN parked_at TEXT;
    ALTER TABLE users ADD COLUMN missing_since TEXT;
    "#,
];

/// How many runs try to resolve an interrupted write before it is parked (shown in `status`,
/// `/status` and a metric) and only full runs, which list every Postman member, look at it.
pub const RECOVERY_ATTEMPTS: u32 = 5;

/// One row of the journal that was intended but never confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    pub id: i64,
    pub run_id: String,
    pub okta_id: OktaUserId,
    pub op: String,
    pub user_name: String,
    pub payload: String,
    /// Runs that tried and failed to resolve it.
    pub attempts: u32,
    /// Set once `attempts` reached [`RECOVERY_ATTEMPTS`].
    pub parked: bool,
    /// The last resolution error.
    pub error: Option<String>,
}

/// An interrupted write that could not be resolved, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnresolvedWrite {
    pub okta_id: String,
    pub user_name: String,
    pub op: String,
    pub attempts: u32,
    pub parked: bool,
    pub error: Option<String>,
    pub since: String,
}

/// What a failed operation left behind for a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailureRecord {
    pub okta_id: String,
    pub user_name: String,
    pub op: String,
    pub error: String,
    pub permanent: bool,
    pub attempts: u32,
    pub first_failed: String,
    pub last_failed: String,
    /// Set when quarantined: no new attempt before this time.
    pub retry_after: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub full: bool,
    pub outcome: Option<String>,
    pub counts: Option<serde_json::Value>,
    pub errors: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnmanagedRecord {
    pub scim_id: String,
    pub user_name: String,
    pub active: bool,
}

/// How a snapshot row changes when a journalled write is confirmed.
#[derive(Clone, Debug)]
pub enum SnapshotChange {
    Upsert(ManagedUser),
    SetActive {
        okta_id: OktaUserId,
        active: bool,
    },
    SetAttrs {
        okta_id: OktaUserId,
        attrs: UserAttrs,
    },
    Forget(OktaUserId),
    Group(GroupChange),
}

/// How the group snapshot changes when a group write (or an adoption) is confirmed.
#[derive(Clone, Debug)]
pub enum GroupChange {
    /// Link (or re-link) a Postman group, replacing its known members.
    Upsert(ManagedGroup),
    Rename {
        okta_id: OktaGroupId,
        display_name: String,
    },
    /// Replace the known members (a full read, or deactivated users dropped).
    SetMembers {
        okta_id: OktaGroupId,
        members: BTreeSet<ScimUserId>,
    },
    AddMembers {
        okta_id: OktaGroupId,
        members: Vec<ScimUserId>,
    },
    RemoveMembers {
        okta_id: OktaGroupId,
        members: Vec<ScimUserId>,
    },
    Forget(OktaGroupId),
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
            create_private(path).map_err(|e| StoreError::Unreadable {
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
        let version = store.schema_version()?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: MIGRATIONS.len() as i64,
            });
        }
        if version < MIGRATIONS.len() as i64 {
            return Err(StoreError::Sqlite {
                path: path.to_path_buf(),
                detail: format!(
                    "schema version {version} needs a migration; run a reconcile without --dry-run first"
                ),
            });
        }
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

    fn check_integrity(&self) -> Result<(), StoreError> {
        let result: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if result != "ok" {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: result,
            });
        }
        Ok(())
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version = self.schema_version()?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            self.in_tx(|tx| {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)
            })?;
        }
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

    // ---- snapshot ---------------------------------------------------------------------------

    /// Every managed user, keyed by Okta id.
    pub fn snapshot(&self) -> Result<BTreeMap<OktaUserId, ManagedUser>, StoreError> {
        self.collect_rows(
            "SELECT okta_id, scim_id, user_name, given_name, family_name, active FROM users",
            [],
            |r| {
                let m = ManagedUser {
                    okta_id: OktaUserId(r.get(0)?),
                    scim_id: ScimUserId(r.get(1)?),
                    attrs: UserAttrs {
                        user_name: r.get(2)?,
                        given_name: r.get(3)?,
                        family_name: r.get(4)?,
                    },
                    active: r.get::<_, i64>(5)? != 0,
                };
                Ok((m.okta_id.clone(), m))
            },
        )
    }

    pub fn managed_counts(&self) -> Result<(i64, i64), StoreError> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(active), 0), COALESCE(SUM(1 - active), 0) FROM users",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
    }

    fn apply_change(
        tx: &rusqlite::Transaction<'_>,
        change: &SnapshotChange,
        now: &str,
    ) -> rusqlite::Result<()> {
        match change {
            SnapshotChange::Upsert(m) => {
                // A SCIM id belongs to one Okta user: drop a stale link first.
                tx.execute(
                    "DELETE FROM users WHERE scim_id = ?1 AND okta_id <> ?2",
                    params![m.scim_id.0, m.okta_id.0],
                )?;
                tx.execute(
                    "INSERT INTO users (okta_id, scim_id, user_name, given_name, family_name, active, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (okta_id) DO UPDATE SET scim_id = excluded.scim_id,
                        user_name = excluded.user_name, given_name = excluded.given_name,
                        family_name = excluded.family_name, active = excluded.active,
                        updated_at = excluded.updated_at",
                    params![
                        m.okta_id.0,
                        m.scim_id.0,
                        m.attrs.user_name,
                        m.attrs.given_name,
                        m.attrs.family_name,
                        m.active as i64,
                        now
                    ],
                )?;
            }
            SnapshotChange::SetActive { okta_id, active } => {
                tx.execute(
                    "UPDATE users SET active = ?2, updated_at = ?3 WHERE okta_id = ?1",
                    params![okta_id.0, *active as i64, now],
                )?;
            }
            SnapshotChange::SetAttrs { okta_id, attrs } => {
                tx.execute(
                    "UPDATE users SET user_name = ?2, given_name = ?3, family_name = ?4, updated_at = ?5 WHERE okta_id = ?1",
                    params![okta_id.0, attrs.user_name, attrs.given_name, attrs.family_name, now],
                )?;
            }
            SnapshotChange::Forget(okta_id) => {
                tx.execute("DELETE FROM users WHERE okta_id = ?1", params![okta_id.0])?;
            }
            SnapshotChange::Group(g) => Self::apply_group_change(tx, g, now)?,
        }
        Ok(())
    }

    fn apply_group_change(
        tx: &rusqlite::Transaction<'_>,
        change: &GroupChange,
        now: &str,
    ) -> rusqlite::Result<()> {
        let insert_member = |okta_id: &OktaGroupId, m: &ScimUserId| {
            tx.execute(
                "INSERT OR IGNORE INTO group_members (okta_group_id, scim_user_id) VALUES (?1, ?2)",
                params![okta_id.0, m.0],
            )
        };
        match change {
            GroupChange::Upsert(g) => {
                // A Postman group belongs to one Okta group: drop a stale link first.
                tx.execute(
                    "DELETE FROM groups WHERE scim_id = ?1 AND okta_id <> ?2",
                    params![g.scim_id.0, g.okta_id.0],
                )?;
                tx.execute(
                    "INSERT INTO groups (okta_id, scim_id, display_name, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (okta_id) DO UPDATE SET scim_id = excluded.scim_id,
                        display_name = excluded.display_name, updated_at = excluded.updated_at",
                    params![g.okta_id.0, g.scim_id.0, g.display_name, now],
                )?;
                tx.execute(
                    "DELETE FROM group_members WHERE okta_group_id = ?1",
                    params![g.okta_id.0],
                )?;
                for m in &g.members {
                    insert_member(&g.okta_id, m)?;
                }
            }
            GroupChange::Rename {
                okta_id,
                display_name,
            } => {
                tx.execute(
                    "UPDATE groups SET display_name = ?2, updated_at = ?3 WHERE okta_id = ?1",
                    params![okta_id.0, display_name, now],
                )?;
            }
            GroupChange::SetMembers { okta_id, members } => {
                tx.execute(
                    "DELETE FROM group_members WHERE okta_group_id = ?1",
                    params![okta_id.0],
                )?;
                for m in members {
                    insert_member(okta_id, m)?;
                }
            }
            GroupChange::AddMembers { okta_id, members } => {
                // Only for a group the snapshot holds (the foreign key would refuse others).
                let known: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM groups WHERE okta_id = ?1)",
                    params![okta_id.0],
                    |r| r.get(0),
                )?;
                if known {
                    for m in members {
                        insert_member(okta_id, m)?;
                    }
                }
            }
            GroupChange::RemoveMembers { okta_id, members } => {
                for m in members {
                    tx.execute(
                        "DELETE FROM group_members WHERE okta_group_id = ?1 AND scim_user_id = ?2",
                        params![okta_id.0, m.0],
                    )?;
                }
            }
            GroupChange::Forget(okta_id) => {
                tx.execute("DELETE FROM groups WHERE okta_id = ?1", params![okta_id.0])?;
            }
        }
        Ok(())
    }

    // ---- group snapshot ---------------------------------------------------------------------

    /// Every pushed group, keyed by Okta group id, with the members we believe it has.
    pub fn group_snapshot(&self) -> Result<BTreeMap<OktaGroupId, ManagedGroup>, StoreError> {
        let mut out: BTreeMap<OktaGroupId, ManagedGroup> = self.collect_rows(
            "SELECT okta_id, scim_id, display_name FROM groups",
            [],
            |r| {
                let g = ManagedGroup {
                    okta_id: OktaGroupId(r.get(0)?),
                    scim_id: ScimGroupId(r.get(1)?),
                    display_name: r.get(2)?,
                    members: BTreeSet::new(),
                };
                Ok((g.okta_id.clone(), g))
            },
        )?;
        let members: Vec<(String, String)> = self.collect_rows(
            "SELECT okta_group_id, scim_user_id FROM group_members",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (g, m) in members {
            if let Some(group) = out.get_mut(&OktaGroupId(g)) {
                group.members.insert(ScimUserId(m));
            }
        }
        Ok(out)
    }

    /// Applies snapshot changes that need no SCIM write (adoptions, forgetting vanished
    /// accounts, refreshing from a full read) in one transaction.
    pub fn apply_changes(
        &mut self,
        changes: &[SnapshotChange],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = ts(now);
        self.in_tx(|tx| {
            for c in changes {
                Self::apply_change(tx, c, &now)?;
            }
            Ok(())
        })
    }

    // ---- journal ----------------------------------------------------------------------------

    /// Records a SCIM write as intended, before it is sent. Returns the journal id.
    pub fn journal_intend(
        &mut self,
        run_id: &str,
        okta_id: &OktaUserId,
        op: &str,
        user_name: &str,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let now = ts(now);
        self.conn
            .execute(
                "INSERT INTO journal (run_id, okta_id, op, user_name, payload, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'intended', ?6, ?6)",
                params![run_id, okta_id.0, op, user_name, payload, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a group write as intended, before it is sent (the journal's `okta_id` column then
    /// holds the Okta group id). Returns the journal id.
    pub fn journal_intend_group(
        &mut self,
        run_id: &str,
        okta_id: &OktaGroupId,
        op: &str,
        display_name: &str,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.journal_intend(
            run_id,
            &OktaUserId(okta_id.0.clone()),
            op,
            display_name,
            payload,
            now,
        )
    }

    /// Marks a group write failed, with its snapshot changes (for example forgetting a group
    /// Postman no longer has). Groups are not quarantined: a failed group write is retried on the
    /// next run and reported each time.
    pub fn journal_failed_group(
        &mut self,
        id: i64,
        error: &str,
        changes: &[SnapshotChange],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.close_journal(id, "failed", None, Some(error), changes, now)
    }

    /// Confirms a journalled write: marks it done (with the SCIM id), applies its snapshot
    /// change and clears the user's failure record, all in one transaction.
    pub fn journal_done(
        &mut self,
        id: i64,
        scim_id: Option<&ScimUserId>,
        changes: &[SnapshotChange],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.close_journal(id, "done", scim_id, None, changes, now)
    }

    /// Closes an intended write found after a crash: `resolved` (it happened, snapshot updated)
    /// or `abandoned` (it did not, or it is idempotent and will be planned again).
    pub fn journal_resolve(
        &mut self,
        id: i64,
        resolved: bool,
        scim_id: Option<&ScimUserId>,
        changes: &[SnapshotChange],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let state = if resolved { "resolved" } else { "abandoned" };
        self.close_journal(id, state, scim_id, None, changes, now)
    }

    fn close_journal(
        &mut self,
        id: i64,
        state: &str,
        scim_id: Option<&ScimUserId>,
        error: Option<&str>,
        changes: &[SnapshotChange],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = ts(now);
        self.in_tx(|tx| {
            let okta_id: Option<String> = tx
                .query_row(
                    "SELECT okta_id FROM journal WHERE id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "UPDATE journal SET state = ?2, scim_id = COALESCE(?3, scim_id), error = ?4, updated_at = ?5 WHERE id = ?1",
                params![id, state, scim_id.map(|s| s.0.as_str()), error, now],
            )?;
            for c in changes {
                Self::apply_change(tx, c, &now)?;
            }
            if state == "done" || state == "resolved" {
                if let Some(okta_id) = okta_id {
                    tx.execute("DELETE FROM failures WHERE okta_id = ?1", params![okta_id])?;
                }
            }
            Ok(())
        })
    }

    /// Records a failed write and updates the user's failure record. A user whose permanent
    /// failures reach `quarantine_after` is quarantined until `now + quarantine_for`.
    #[allow(clippy::too_many_arguments)]
    pub fn journal_failed(
        &mut self,
        id: i64,
        okta_id: &OktaUserId,
        user_name: &str,
        op: &str,
        error: &str,
        permanent: bool,
        quarantine_after: u32,
        quarantine_for: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now_s = ts(now);
        self.in_tx(|tx| {
        tx.execute(
            "UPDATE journal SET state = 'failed', error = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, error, now_s],
        )?;
        // Read as i64 and clamped: a damaged row must neither fail the write nor overflow.
        let attempts: u32 = tx
            .query_row(
                "SELECT attempts FROM failures WHERE okta_id = ?1 AND permanent = ?2",
                params![okta_id.0, permanent as i64],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map_or(0, clamp_count)
            .saturating_add(1);
        let retry_after = (permanent && attempts >= quarantine_after)
            .then(|| ts(crate::limits::time_after(now, quarantine_for)));
        tx.execute(
            "INSERT INTO failures (okta_id, user_name, op, error, permanent, attempts, first_failed, last_failed, retry_after)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
             ON CONFLICT (okta_id) DO UPDATE SET user_name = excluded.user_name, op = excluded.op,
                error = excluded.error, permanent = excluded.permanent, attempts = excluded.attempts,
                last_failed = excluded.last_failed, retry_after = excluded.retry_after",
            params![okta_id.0, user_name, op, error, permanent as i64, attempts, now_s, retry_after],
        )?;
        Ok(())
        })
    }

    /// Writes intended but never confirmed (the process died, or the outcome was unknown),
    /// parked ones included.
    pub fn journal_pending(&self) -> Result<Vec<PendingWrite>, StoreError> {
        self.collect_rows(
            "SELECT id, run_id, okta_id, op, user_name, payload, attempts, parked_at, error
                 FROM journal WHERE state = 'intended' ORDER BY id",
            [],
            |r| {
                Ok(PendingWrite {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    okta_id: OktaUserId(r.get(2)?),
                    op: r.get(3)?,
                    user_name: r.get(4)?,
                    payload: r.get(5)?,
                    // A hostile or damaged row must not overflow anything downstream.
                    attempts: clamp_count(r.get::<_, i64>(6)?),
                    parked: r.get::<_, Option<String>>(7)?.is_some(),
                    error: r.get(8)?,
                })
            },
        )
    }

    /// Records that resolving an interrupted write failed again; parks it once it has failed
    /// [`RECOVERY_ATTEMPTS`] times. Returns whether it is now parked. The row stays open
    /// (`intended`): the write may have happened, so it is never forgotten.
    pub fn journal_recovery_failed(
        &mut self,
        id: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let now = ts(now);
        self.in_tx(|tx| {
            tx.execute(
                "UPDATE journal SET attempts = MIN(MAX(attempts, 0) + 1, 1000000), error = ?2, updated_at = ?3,
                     parked_at = CASE WHEN parked_at IS NULL AND MAX(attempts, 0) + 1 >= ?4 THEN ?3 ELSE parked_at END
                 WHERE id = ?1 AND state = 'intended'",
                params![id, error, now, RECOVERY_ATTEMPTS],
            )?;
            tx.query_row(
                "SELECT parked_at IS NOT NULL FROM journal WHERE id = ?1",
                params![id],
                |r| r.get::<_, bool>(0),
            )
            .optional()
            .map(|p| p.unwrap_or(false))
        })
    }

    /// Interrupted writes still open after recovery tried them, for `status` and `/status`.
    pub fn journal_unresolved(&self) -> Result<Vec<UnresolvedWrite>, StoreError> {
        self.collect_rows(
            "SELECT okta_id, user_name, op, attempts, parked_at, error, created_at FROM journal
                 WHERE state = 'intended' AND attempts > 0 ORDER BY id",
            [],
            |r| {
                Ok(UnresolvedWrite {
                    okta_id: r.get(0)?,
                    user_name: r.get(1)?,
                    op: r.get(2)?,
                    attempts: clamp_count(r.get::<_, i64>(3)?),
                    parked: r.get::<_, Option<String>>(4)?.is_some(),
                    error: r.get(5)?,
                    since: r.get(6)?,
                })
            },
        )
    }

    // ---- managed users missing from a full listing -----------------------------------------

    /// Managed users the last full Postman listing lacked.
    pub fn missing(&self) -> Result<BTreeSet<OktaUserId>, StoreError> {
        self.collect_rows(
            "SELECT okta_id FROM users WHERE missing_since IS NOT NULL",
            [],
            |r| Ok(OktaUserId(r.get(0)?)),
        )
    }

    /// After a full listing: exactly `missing` are marked missing (keeping the time they were
    /// first missed), every other managed user is cleared.
    pub fn set_missing(
        &mut self,
        missing: &BTreeSet<OktaUserId>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = ts(now);
        self.in_tx(|tx| {
            let marked: Vec<String> = tx
                .prepare("SELECT okta_id FROM users WHERE missing_since IS NOT NULL")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut clear =
                tx.prepare("UPDATE users SET missing_since = NULL WHERE okta_id = ?1")?;
            for id in marked
                .iter()
                .filter(|id| !missing.contains(&OktaUserId(id.to_string())))
            {
                clear.execute(params![id])?;
            }
            let mut mark = tx.prepare(
                "UPDATE users SET missing_since = COALESCE(missing_since, ?2) WHERE okta_id = ?1",
            )?;
            for id in missing {
                mark.execute(params![id.0, now])?;
            }
            Ok(())
        })
    }

    /// Number of journal rows in each state (for tests and `status`).
    pub fn journal_counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        self.collect_rows(
            "SELECT state, COUNT(*) FROM journal GROUP BY state",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
    }

    /// Drops confirmed journal rows older than `before` (the journal is not an audit log).
    pub fn journal_prune(&mut self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM journal WHERE state <> 'intended' AND updated_at < ?1",
                params![ts(before)],
            )
            .map_err(|e| self.err(e))
    }

    // ---- failures / quarantine -------------------------------------------------------------

    /// Users quarantined at `now`, with the reason.
    pub fn quarantined(
        &self,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<OktaUserId, String>, StoreError> {
        self.collect_rows(
            // A failure recorded "in the future" comes from a clock that ran ahead and came back:
            // its quarantine would last far longer than `quarantine_for`, so it is not honoured
            // (the user is tried again and, if it still fails, quarantined from the real now).
            "SELECT okta_id, op, error, retry_after FROM failures
                 WHERE retry_after IS NOT NULL AND retry_after > ?1 AND last_failed <= ?1",
            params![ts(now)],
            |r| {
                Ok((
                    OktaUserId(r.get(0)?),
                    format!(
                        "quarantined until {} after repeated failures of {}: {}",
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?
                    ),
                ))
            },
        )
    }

    pub fn failures(&self) -> Result<Vec<FailureRecord>, StoreError> {
        self.collect_rows(
            "SELECT okta_id, user_name, op, error, permanent, attempts, first_failed, last_failed, retry_after
                 FROM failures ORDER BY user_name",
            [],
            |r| {
                Ok(FailureRecord {
                    okta_id: r.get(0)?,
                    user_name: r.get(1)?,
                    op: r.get(2)?,
                    error: r.get(3)?,
                    permanent: r.get::<_, i64>(4)? != 0,
                    attempts: clamp_count(r.get::<_, i64>(5)?),
                    first_failed: r.get(6)?,
                    last_failed: r.get(7)?,
                    retry_after: r.get(8)?,
                })
            },
        )
    }

    // ---- unmanaged members ------------------------------------------------------------------

    pub fn replace_unmanaged(&mut self, members: &[UnmanagedRecord]) -> Result<(), StoreError> {
        self.in_tx(|tx| {
            tx.execute("DELETE FROM unmanaged", [])?;
            let mut stmt = tx.prepare(
                "INSERT OR REPLACE INTO unmanaged (scim_id, user_name, active) VALUES (?1, ?2, ?3)",
            )?;
            for m in members {
                stmt.execute(params![m.scim_id, m.user_name, m.active as i64])?;
            }
            Ok(())
        })
    }

    pub fn unmanaged(&self) -> Result<Vec<UnmanagedRecord>, StoreError> {
        self.collect_rows(
            "SELECT scim_id, user_name, active FROM unmanaged ORDER BY user_name",
            [],
            |r| {
                Ok(UnmanagedRecord {
                    scim_id: r.get(0)?,
                    user_name: r.get(1)?,
                    active: r.get::<_, i64>(2)? != 0,
                })
            },
        )
    }

    // ---- runs -------------------------------------------------------------------------------

    pub fn run_started(
        &mut self,
        run_id: &str,
        started: DateTime<Utc>,
        full: bool,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO runs (run_id, started_at, full) VALUES (?1, ?2, ?3)",
                params![run_id, ts(started), full as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn run_finished(
        &mut self,
        run_id: &str,
        finished: DateTime<Utc>,
        outcome: &str,
        counts: &serde_json::Value,
        errors: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3, counts = ?4, errors = ?5 WHERE run_id = ?1",
                params![run_id, ts(finished), outcome, counts.to_string(), errors.to_string()],
            )
            .map_err(|e| self.err(e))?;
        // Keep the history bounded.
        self.conn
            .execute(
                "DELETE FROM runs WHERE run_id NOT IN (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 500)",
                [],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn last_runs(&self, n: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.collect_rows(
            "SELECT run_id, started_at, finished_at, full, outcome, counts, errors FROM runs
                 ORDER BY started_at DESC LIMIT ?1",
            params![n as i64],
            |r| {
                let counts: Option<String> = r.get(5)?;
                let errors: Option<String> = r.get(6)?;
                Ok(RunRecord {
                    run_id: r.get(0)?,
                    started_at: r.get(1)?,
                    finished_at: r.get(2)?,
                    full: r.get::<_, i64>(3)? != 0,
                    outcome: r.get(4)?,
                    counts: counts.and_then(|c| serde_json::from_str(&c).ok()),
                    errors: errors.and_then(|c| serde_json::from_str(&c).ok()),
                })
            },
        )
    }

    fn last_time(&self, sql: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let s: Option<String> = self
            .conn
            .query_row(sql, [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?
            .flatten();
        match s {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(&s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| StoreError::BadValue {
                    path: self.path.clone(),
                    detail: format!("run time {s:?}: {e}"),
                }),
        }
    }

    /// End of the last run that converged (`ok`).
    pub fn last_success(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.last_time("SELECT MAX(finished_at) FROM runs WHERE outcome = 'ok'")
    }

    /// Start of the last full run that read all of Postman successfully.
    pub fn last_full_run(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.last_time(
            "SELECT MAX(started_at) FROM runs WHERE full = 1 AND outcome IN ('ok', 'partial')",
        )
    }

    /// Marks every run that never finished as `failed` at `now`, with `error` as its only error
    /// text. The daemon calls it when a run's task ended without returning (a panic); with a
    /// single writer and no run in flight, every unfinished row is such a run. Returns how many
    /// rows it changed.
    pub fn fail_unfinished_runs(
        &mut self,
        now: DateTime<Utc>,
        error: &str,
    ) -> Result<usize, StoreError> {
        let errors = serde_json::json!([error]).to_string();
        self.conn
            .execute(
                "UPDATE runs SET finished_at = ?1, outcome = 'failed', errors = ?2 WHERE finished_at IS NULL",
                params![ts(now), errors],
            )
            .map_err(|e| self.err(e))
    }
}

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
fn create_private(path: &Path) -> std::io::Result<()> {
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
    use chrono::Duration as ChronoDuration;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .expect("valid time")
            .with_timezone(&Utc)
    }

    fn ann() -> ManagedUser {
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

    #[test]
    fn a_new_file_is_created_and_migrated_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let mut s = Store::open(&path).expect("create");
            let id = s
                .journal_intend(
                    "r1",
                    &ann().okta_id,
                    "create",
                    "ann@example.com",
                    "{}",
                    now(),
                )
                .expect("intend");
            s.journal_done(
                id,
                Some(&ann().scim_id),
                &[SnapshotChange::Upsert(ann())],
                now(),
            )
            .expect("done");
        }
        let s = Store::open(&path).expect("reopen");
        assert_eq!(
            s.snapshot().expect("snapshot").get(&ann().okta_id),
            Some(&ann())
        );
        assert_eq!(
            s.schema_version().expect("version"),
            MIGRATIONS.len() as i64
        );
        assert!(s.journal_pending().expect("pending").is_empty());
    }

    #[test]
    fn intended_writes_survive_a_crash_as_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let mut s = Store::open(&path).expect("create");
            s.journal_intend(
                "r1",
                &ann().okta_id,
                "create",
                "ann@example.com",
                "{}",
                now(),
            )
            .expect("intend");
            // dropped without confirmation: the process "died"
        }
        let s = Store::open(&path).expect("reopen");
        let pending = s.journal_pending().expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].op, "create");
    }

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
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.pragma_update(None, "user_version", 99).expect("bump");
        }
        let e = Store::open(&path).err().expect("must fail");
        assert!(matches!(e, StoreError::TooNew { found: 99, .. }), "{e}");
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
    fn repeated_permanent_failures_quarantine_a_user() {
        let mut s = Store::in_memory().expect("mem");
        let id = ann().okta_id;
        for _ in 0..2 {
            let j = s
                .journal_intend("r", &id, "create", "ann@example.com", "{}", now())
                .expect("intend");
            s.journal_failed(
                j,
                &id,
                "ann@example.com",
                "create",
                "400 bad",
                true,
                2,
                std::time::Duration::from_secs(3600),
                now(),
            )
            .expect("fail");
        }
        let q = s.quarantined(now()).expect("q");
        assert!(q.get(&id).is_some_and(|r| r.contains("400 bad")));
        assert!(s
            .quarantined(now() + ChronoDuration::hours(2))
            .expect("q")
            .is_empty());
        // Success clears the record.
        let j = s
            .journal_intend("r", &id, "create", "ann@example.com", "{}", now())
            .expect("intend");
        s.journal_done(j, None, &[SnapshotChange::Upsert(ann())], now())
            .expect("done");
        assert!(s.failures().expect("f").is_empty());
    }

    #[test]
    fn an_unresolvable_interrupted_write_is_counted_then_parked_and_never_closed() {
        let mut s = Store::in_memory().expect("mem");
        let id = OktaUserId::new("00uann");
        let j = s
            .journal_intend("r", &id, "create", "ann@example.com", "{}", now())
            .expect("intend");
        for attempt in 1..=RECOVERY_ATTEMPTS {
            let parked = s
                .journal_recovery_failed(j, "400 invalid filter", now())
                .expect("record");
            assert_eq!(parked, attempt == RECOVERY_ATTEMPTS, "attempt {attempt}");
        }
        let pending = s.journal_pending().expect("pending");
        assert_eq!(pending.len(), 1, "the row stays open");
        assert!(pending[0].parked);
        assert_eq!(pending[0].attempts, RECOVERY_ATTEMPTS);
        let unresolved = s.journal_unresolved().expect("unresolved");
        assert_eq!(unresolved.len(), 1);
        assert_eq!(unresolved[0].error.as_deref(), Some("400 invalid filter"));
        // Pruning never removes it: recovery still needs it.
        s.journal_prune(now() + ChronoDuration::days(400))
            .expect("prune");
        assert_eq!(s.journal_pending().expect("pending").len(), 1);
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
        let j = s
            .journal_intend("r", &id, "create", "ann@example.com", "{}", now())
            .expect("intend");
        s.journal_failed(
            j,
            &id,
            "ann@example.com",
            "create",
            "400",
            true,
            3,
            std::time::Duration::from_secs(u64::MAX),
            now(),
        )
        .expect("a huge counter and duration are clamped");
        let j2 = s
            .journal_intend("r", &id, "create", "ann@example.com", "{}", now())
            .expect("intend");
        s.conn
            .execute("UPDATE journal SET attempts = -5 WHERE id = ?1", [j2])
            .expect("row");
        assert_eq!(s.journal_pending().expect("pending")[0].attempts, 0);
        assert!(!s
            .journal_recovery_failed(j2, "e", now())
            .expect("a negative counter counts from 0"));
        assert_eq!(s.journal_pending().expect("pending")[0].attempts, 1);
    }

    #[test]
    fn a_quarantine_recorded_in_the_future_is_not_honoured() {
        let mut s = Store::in_memory().expect("mem");
        let id = OktaUserId::new("00uann");
        // The clock ran a year ahead when the failure was recorded, then came back.
        let ahead = now() + ChronoDuration::days(365);
        let j = s
            .journal_intend("r", &id, "create", "ann@example.com", "{}", ahead)
            .expect("intend");
        s.journal_failed(
            j,
            &id,
            "ann@example.com",
            "create",
            "400",
            true,
            1,
            std::time::Duration::from_secs(3600),
            ahead,
        )
        .expect("failed");
        assert!(s.quarantined(now()).expect("q").is_empty());
        assert_eq!(s.quarantined(ahead).expect("q").len(), 1);
    }

    #[test]
    fn missing_marks_keep_their_first_time_and_clear_when_listed_again() {
        let mut s = Store::in_memory().expect("mem");
        s.apply_changes(&[SnapshotChange::Upsert(ann())], now())
            .expect("ann");
        let ann_id: BTreeSet<OktaUserId> = [ann().okta_id].into();
        s.set_missing(&ann_id, now()).expect("mark");
        s.set_missing(&ann_id, now() + ChronoDuration::days(1))
            .expect("mark again");
        let since: String = s
            .conn
            .query_row("SELECT missing_since FROM users", [], |r| r.get(0))
            .expect("since");
        assert_eq!(since, ts(now()));
        assert_eq!(s.missing().expect("missing"), ann_id);
        s.set_missing(&BTreeSet::new(), now()).expect("clear");
        assert!(s.missing().expect("missing").is_empty());
    }

    fn eng() -> ManagedGroup {
        ManagedGroup {
            okta_id: OktaGroupId::new("00geng"),
            scim_id: ScimGroupId::new("g-eng"),
            display_name: "Engineering".into(),
            members: [ScimUserId::new("s-ann")].into(),
        }
    }

    #[test]
    fn a_version_1_database_is_migrated_to_hold_groups_and_keeps_its_users() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            // A state file written by a release that knew only migration 1.
            let mut conn = Connection::open(&path).expect("open");
            let tx = conn.transaction().expect("tx");
            tx.execute_batch(MIGRATIONS[0]).expect("migration 1");
            tx.pragma_update(None, "user_version", 1).expect("version");
            tx.execute(
                "INSERT INTO users VALUES ('00uann', 's-ann', 'ann@example.com', 'Ann', 'Lee', 1, 'x')",
                [],
            )
            .expect("user");
            tx.commit().expect("commit");
        }
        let mut s = Store::open(&path).expect("migrate");
        assert_eq!(
            s.schema_version().expect("version"),
            MIGRATIONS.len() as i64
        );
        assert_eq!(s.snapshot().expect("snapshot").len(), 1);
        assert!(s.group_snapshot().expect("groups").is_empty());
        s.apply_changes(&[SnapshotChange::Group(GroupChange::Upsert(eng()))], now())
            .expect("upsert");
        drop(s);
        let s = Store::open(&path).expect("reopen");
        assert_eq!(
            s.group_snapshot().expect("groups").get(&eng().okta_id),
            Some(&eng())
        );
    }

    #[test]
    fn group_changes_rename_add_remove_and_forget_with_their_members() {
        let mut s = Store::in_memory().expect("mem");
        let id = eng().okta_id;
        let g = |c| SnapshotChange::Group(c);
        s.apply_changes(&[g(GroupChange::Upsert(eng()))], now())
            .expect("upsert");
        let j = s
            .journal_intend_group("r", &id, "group_rename", "Platform", "{}", now())
            .expect("intend");
        s.journal_done(
            j,
            None,
            &[
                g(GroupChange::Rename {
                    okta_id: id.clone(),
                    display_name: "Platform".into(),
                }),
                g(GroupChange::AddMembers {
                    okta_id: id.clone(),
                    members: vec![ScimUserId::new("s-bob"), ScimUserId::new("s-cid")],
                }),
                g(GroupChange::RemoveMembers {
                    okta_id: id.clone(),
                    members: vec![ScimUserId::new("s-ann")],
                }),
                // Members of a group the snapshot does not hold are ignored.
                g(GroupChange::AddMembers {
                    okta_id: OktaGroupId::new("00gother"),
                    members: vec![ScimUserId::new("s-bob")],
                }),
            ],
            now(),
        )
        .expect("done");
        let snap = s.group_snapshot().expect("groups");
        assert_eq!(snap.len(), 1);
        let got = &snap[&id];
        assert_eq!(got.display_name, "Platform");
        assert_eq!(
            got.members,
            [ScimUserId::new("s-bob"), ScimUserId::new("s-cid")].into()
        );
        s.apply_changes(
            &[g(GroupChange::SetMembers {
                okta_id: id.clone(),
                members: BTreeSet::new(),
            })],
            now(),
        )
        .expect("set");
        assert!(s.group_snapshot().expect("groups")[&id].members.is_empty());
        s.apply_changes(&[g(GroupChange::Forget(id.clone()))], now())
            .expect("forget");
        assert!(s.group_snapshot().expect("groups").is_empty());
        let members: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM group_members", [], |r| r.get(0))
            .expect("count");
        assert_eq!(members, 0);
    }

    #[test]
    fn a_failed_group_write_closes_its_journal_row_without_quarantine() {
        let mut s = Store::in_memory().expect("mem");
        let id = eng().okta_id;
        let j = s
            .journal_intend_group("r", &id, "group_create", "Engineering", "{}", now())
            .expect("intend");
        s.journal_failed_group(j, "400 bad", &[], now())
            .expect("failed");
        assert!(s.journal_pending().expect("pending").is_empty());
        assert_eq!(s.journal_counts().expect("counts").get("failed"), Some(&1));
        assert!(s.quarantined(now()).expect("q").is_empty());
    }

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
