//! The schema of the state database: the ordered migrations, how they are applied (each in one
//! transaction with its `user_version` bump), the integrity check run on every open, and which
//! schema versions this binary accepts. It owns every `CREATE`/`ALTER` statement; it must not
//! read or write rows (that is the other submodules' job), and a new migration is only ever
//! appended, never edited, because released state files have already run the old ones.

use super::{Store, StoreError};

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
    // 4 (issue 13): the audit trail. What started each run (`schedule`, `reconcile`, `apply`),
    // and the saved plan a journalled write carried out (`apply FILE`). Both nullable: rows
    // written before this version have neither, and `history` says so.
    r#"
    ALTER TABLE runs ADD COLUMN trigger TEXT;
    ALTER TABLE journal ADD COLUMN plan_id TEXT;
    CREATE INDEX journal_created ON journal (created_at);
    "#,
    // 5 (issue 14, near-real-time sync): the System Log cursor and what the events caused,
    // committed together (`store::events`): event uuids already taken (dedup), the durable queue
    // of users and groups to re-read, the event-driven deactivations of the rolling guard
    // window, and the deactivations that guard held back for the next full run.
    r#"
    CREATE TABLE event_cursor (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        next_link  TEXT,
        since      TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE event_seen (
        uuid      TEXT PRIMARY KEY,
        seen_at   TEXT NOT NULL
    );
    CREATE INDEX event_seen_age ON event_seen (seen_at);
    CREATE TABLE event_queue (
        kind       TEXT NOT NULL CHECK (kind IN ('user', 'group')),
        okta_id    TEXT NOT NULL,
        event_uuid TEXT NOT NULL,
        event_type TEXT NOT NULL,
        published  TEXT NOT NULL,
        source     TEXT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        queued_at  TEXT NOT NULL,
        PRIMARY KEY (kind, okta_id)
    );
    CREATE TABLE event_deactivations (
        okta_id TEXT NOT NULL,
        at      TEXT NOT NULL
    );
    CREATE INDEX event_deactivations_at ON event_deactivations (at);
    CREATE TABLE event_held (
        okta_id    TEXT PRIMARY KEY,
        user_name  TEXT NOT NULL,
        event_uuid TEXT NOT NULL,
        event_type TEXT NOT NULL,
        held_at    TEXT NOT NULL
    );
    CREATE TABLE event_applied (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        event_uuid TEXT NOT NULL,
        event_type TEXT NOT NULL,
        published  TEXT NOT NULL,
        applied_at TEXT NOT NULL
    );
    "#,
];

impl Store {
    pub(super) fn check_integrity(&self) -> Result<(), StoreError> {
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

    pub(super) fn migrate(&mut self) -> Result<(), StoreError> {
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

    /// A read-only open cannot migrate: the file must be at exactly this binary's version.
    pub(super) fn require_current_schema(&self) -> Result<(), StoreError> {
        let version = self.schema_version()?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known: MIGRATIONS.len() as i64,
            });
        }
        if version < MIGRATIONS.len() as i64 {
            return Err(StoreError::Sqlite {
                path: self.path.clone(),
                detail: format!(
                    "schema version {version} needs a migration; run a reconcile without --dry-run first"
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OpKind, ScimRef, Subject};
    use crate::store::fixtures::*;
    use crate::store::{GroupChange, SnapshotChange};
    use rusqlite::Connection;

    #[test]
    fn a_new_file_is_created_and_migrated_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let mut s = Store::open(&path).expect("create");
            let id = s
                .journal_intend(
                    "r1",
                    &Subject::User(ann().okta_id.clone()),
                    OpKind::Create,
                    "ann@example.com",
                    "{}",
                    now(),
                )
                .expect("intend");
            s.journal_done(
                id,
                Some(&ScimRef::User(ann().scim_id)),
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
}
