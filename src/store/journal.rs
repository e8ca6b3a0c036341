//! The write-ahead journal of SCIM writes: a row is `intended` before a write is sent and is
//! closed (`done`, `failed`, `resolved`, `abandoned`) in the same transaction as the snapshot
//! change it confirms, so a crash between the two cannot happen. Rows a crash left open are
//! recovered by later runs, counted, and parked after [`RECOVERY_ATTEMPTS`] (never closed or
//! pruned: the write may have happened). The journal decides nothing about SCIM and must not
//! write the snapshot or the failure records except through `snapshot`'s `apply_change` and
//! `failures`' helpers, inside its own transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{clamp_count, failures, ts, SnapshotChange, Store, StoreError};
use crate::model::{OpKind, ScimRef, Subject};

/// How many runs try to resolve an interrupted write before it is parked (shown in `status`,
/// `/status` and a metric) and only full runs, which list every Postman member, look at it.
pub const RECOVERY_ATTEMPTS: u32 = 5;

/// One row of the journal that was intended but never confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    pub id: i64,
    pub run_id: String,
    pub subject: Subject,
    /// `None` for a kind this binary does not know (a row written by a newer version): recovery
    /// closes it as abandoned, since every write it could be is repeated by the plan or looked up.
    pub kind: Option<OpKind>,
    /// The userName (users) or displayName (groups) the write was about.
    pub label: String,
    pub payload: String,
    /// Runs that tried and failed to resolve it.
    pub attempts: u32,
    /// Set once `attempts` reached [`RECOVERY_ATTEMPTS`].
    pub parked: bool,
    /// The last resolution error.
    pub error: Option<String>,
}

/// When a user's failures become a quarantine (`[sync] quarantine_after` / `quarantine_for`).
#[derive(Clone, Copy, Debug)]
pub struct Quarantine {
    pub after: u32,
    pub for_: std::time::Duration,
}

/// A failed write, as the journal and the failure record keep it.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    pub subject: &'a Subject,
    pub kind: OpKind,
    /// The userName or displayName.
    pub label: &'a str,
    pub error: &'a str,
    /// Retrying cannot help (counts towards quarantine).
    pub permanent: bool,
    pub quarantine: Quarantine,
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

impl Store {
    /// Records a SCIM write as intended, before it is sent. Returns the journal id. `label` is
    /// the userName or displayName recovery looks the subject up by.
    pub fn journal_intend(
        &mut self,
        run_id: &str,
        subject: &Subject,
        kind: OpKind,
        label: &str,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.journal_intend_in_plan(run_id, subject, kind, label, payload, None, now)
    }

    /// [`Store::journal_intend`] for a write that carries out a saved plan (`apply FILE`):
    /// the row names the plan's id in `journal.plan_id` (migration 4), so the audit trail can
    /// say which reviewed plan made each change. `None` writes a row like any other run's.
    #[allow(clippy::too_many_arguments)]
    pub fn journal_intend_in_plan(
        &mut self,
        run_id: &str,
        subject: &Subject,
        kind: OpKind,
        label: &str,
        payload: &str,
        plan_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let now = ts(now);
        self.conn
            .execute(
                "INSERT INTO journal (run_id, okta_id, op, user_name, payload, state, created_at, updated_at, plan_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'intended', ?6, ?6, ?7)",
                params![run_id, subject.okta_id(), kind.as_str(), label, payload, now, plan_id],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The highest journal id: with a hash of the snapshot rows, the "generation" a saved
    /// plan's fingerprint names (every write the engine makes adds a journal row first).
    pub fn journal_max_id(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM journal", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Confirms a journalled write: marks it done (with the SCIM id), applies its snapshot
    /// change and clears the user's failure record, all in one transaction.
    pub fn journal_done(
        &mut self,
        id: i64,
        scim_id: Option<&ScimRef>,
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
        scim_id: Option<&ScimRef>,
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
        scim_id: Option<&ScimRef>,
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
                params![id, state, scim_id.map(ScimRef::as_str), error, now],
            )?;
            for c in changes {
                Self::apply_change(tx, c, &now)?;
            }
            if state == "done" || state == "resolved" {
                if let Some(okta_id) = okta_id {
                    failures::clear_failure(tx, &okta_id)?;
                }
            }
            Ok(())
        })
    }

    /// Records a failed write, with the snapshot changes the failure teaches (a 404: the
    /// resource is gone). For a user it also updates the failure record: a user whose
    /// permanent failures reach `quarantine.after` is quarantined until `now + quarantine.for_`.
    /// Groups are not quarantined: a failed group write is retried on the next run.
    pub fn journal_failed(
        &mut self,
        id: i64,
        failure: &Failure<'_>,
        changes: &[SnapshotChange],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Subject::User(okta_id) = failure.subject else {
            return self.close_journal(id, "failed", None, Some(failure.error), changes, now);
        };
        let now_s = ts(now);
        self.in_tx(|tx| {
            tx.execute(
                "UPDATE journal SET state = 'failed', error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, failure.error, now_s],
            )?;
            for c in changes {
                Self::apply_change(tx, c, &now_s)?;
            }
            failures::record_failure(tx, okta_id, failure, now)
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
                let op: String = r.get(3)?;
                let kind = OpKind::parse(&op);
                Ok(PendingWrite {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    subject: Subject::of(kind.unwrap_or(OpKind::Create), r.get(2)?),
                    kind,
                    label: r.get(4)?,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OktaUserId, OpKind, Subject};
    use crate::store::fixtures::*;
    use crate::store::{Failure, Quarantine};
    use chrono::Duration as ChronoDuration;

    #[test]
    fn intended_writes_survive_a_crash_as_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            let mut s = Store::open(&path).expect("create");
            s.journal_intend(
                "r1",
                &Subject::User(ann().okta_id.clone()),
                OpKind::Create,
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
        assert_eq!(pending[0].kind, Some(OpKind::Create));
    }

    #[test]
    fn an_unresolvable_interrupted_write_is_counted_then_parked_and_never_closed() {
        let mut s = Store::in_memory().expect("mem");
        let id = OktaUserId::new("00uann");
        let j = intend_create(&mut s, &id, now());
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
    fn a_failed_group_write_closes_its_journal_row_without_quarantine() {
        let mut s = Store::in_memory().expect("mem");
        let id = eng().okta_id;
        let j = s
            .journal_intend(
                "r",
                &Subject::Group(id.clone()),
                OpKind::GroupCreate,
                "Engineering",
                "{}",
                now(),
            )
            .expect("intend");
        s.journal_failed(
            j,
            &Failure {
                subject: &Subject::Group(id.clone()),
                kind: OpKind::GroupCreate,
                label: "Engineering",
                error: "400 bad",
                permanent: false,
                quarantine: Quarantine {
                    after: 3,
                    for_: std::time::Duration::from_secs(60),
                },
            },
            &[],
            now(),
        )
        .expect("failed");
        assert!(s.journal_pending().expect("pending").is_empty());
        assert_eq!(s.journal_counts().expect("counts").get("failed"), Some(&1));
        assert!(s.quarantined(now()).expect("q").is_empty());
    }
}
