//! The per-user failure record (`failures`): the last failed operation of each user, how many
//! times in a row it failed, and, once permanent failures reach the configured threshold, the
//! quarantine that keeps the user out of runs until it expires. The journal writes and clears
//! these rows inside its own transactions through the `pub(super)` helpers here, so a failure
//! is recorded together with its journal row; this module must not touch the journal or the
//! snapshot. Groups have no failure record: a failed group write is retried every run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{clamp_count, ts, Store, StoreError};
use crate::model::OktaUserId;

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

impl Store {
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
}

/// Counts one more failure of `okta_id`'s `op` and, once permanent failures reach
/// `quarantine_after`, quarantines the user until `now + quarantine_for`. Runs inside the
/// transaction that marks the journal row failed, so the two never disagree.
#[allow(clippy::too_many_arguments)]
pub(super) fn record_failure(
    tx: &rusqlite::Transaction<'_>,
    okta_id: &OktaUserId,
    failure: &super::Failure<'_>,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let now_s = ts(now);
    // Read as i64 and clamped: a damaged row must neither fail the write nor overflow.
    let attempts: u32 = tx
        .query_row(
            "SELECT attempts FROM failures WHERE okta_id = ?1 AND permanent = ?2",
            params![okta_id.0, failure.permanent as i64],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map_or(0, clamp_count)
        .saturating_add(1);
    let retry_after = (failure.permanent && attempts >= failure.quarantine.after)
        .then(|| ts(crate::limits::time_after(now, failure.quarantine.for_)));
    tx.execute(
        "INSERT INTO failures (okta_id, user_name, op, error, permanent, attempts, first_failed, last_failed, retry_after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
         ON CONFLICT (okta_id) DO UPDATE SET user_name = excluded.user_name, op = excluded.op,
            error = excluded.error, permanent = excluded.permanent, attempts = excluded.attempts,
            last_failed = excluded.last_failed, retry_after = excluded.retry_after",
        params![
            okta_id.0,
            failure.label,
            failure.kind.as_str(),
            failure.error,
            failure.permanent as i64,
            attempts,
            now_s,
            retry_after
        ],
    )?;
    Ok(())
}

/// Forgets a user's failure record once a write for it succeeded (or was found to have
/// happened), inside the transaction that closes the journal row.
pub(super) fn clear_failure(tx: &rusqlite::Transaction<'_>, okta_id: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM failures WHERE okta_id = ?1", params![okta_id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OktaUserId;
    use crate::store::fixtures::*;
    use crate::store::SnapshotChange;
    use chrono::Duration as ChronoDuration;

    #[test]
    fn repeated_permanent_failures_quarantine_a_user() {
        let mut s = Store::in_memory().expect("mem");
        let id = ann().okta_id;
        for _ in 0..2 {
            let j = intend_create(&mut s, &id, now());
            fail_create(
                &mut s,
                j,
                &id,
                "400 bad",
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
        let j = intend_create(&mut s, &id, now());
        s.journal_done(j, None, &[SnapshotChange::Upsert(ann())], now())
            .expect("done");
        assert!(s.failures().expect("f").is_empty());
    }

    #[test]
    fn a_quarantine_recorded_in_the_future_is_not_honoured() {
        let mut s = Store::in_memory().expect("mem");
        let id = OktaUserId::new("00uann");
        // The clock ran a year ahead when the failure was recorded, then came back.
        let ahead = now() + ChronoDuration::days(365);
        let j = intend_create(&mut s, &id, ahead);
        fail_create(
            &mut s,
            j,
            &id,
            "400",
            1,
            std::time::Duration::from_secs(3600),
            ahead,
        )
        .expect("failed");
        assert!(s.quarantined(now()).expect("q").is_empty());
        assert_eq!(s.quarantined(ahead).expect("q").len(), 1);
    }
}
