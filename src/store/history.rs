//! The audit trail read back from the journal: every Postman write and every adoption, users
//! and groups, with the run that made it, what started that run, the operation, its subject,
//! result, error and reason. This module owns the `history` query ([`Store::history`]), the
//! journal row an adoption leaves ([`Store::journal_adopted`]), and the run's trigger column
//! ([`Store::set_run_trigger`]).
//!
//! It must not decide anything about Postman or Okta, and it must not prune: retention is the
//! journal's (`journal_prune`, which never removes a row recovery still needs). Everything
//! here works on a read-only open except the two writers, which the engine calls.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use super::{ts, SnapshotChange, Store, StoreError};
use crate::model::{OpKind, Subject};

/// What started a run, as the `runs` table records it: `reconcile` (the one-shot command, the
/// default), `schedule` (the daemon), `apply` (a saved plan; its id is on each journal row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger(String);

impl Trigger {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The daemon's scheduler.
    pub fn schedule() -> Self {
        Self::new("schedule")
    }

    /// What a targeted reconcile of the users Okta events named (issue 14) records.
    pub const EVENT: &'static str = "event";

    /// A targeted reconcile of the users Okta events named.
    pub fn event() -> Self {
        Self::new(Self::EVENT)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An adoption as the journal records it ([`Store::journal_adopted`]).
#[derive(Clone, Copy, Debug)]
pub struct Adopted<'a> {
    pub run_id: &'a str,
    /// The saved plan (`apply FILE`) the run carried out, if any.
    pub plan_id: Option<&'a str>,
    pub subject: &'a Subject,
    pub kind: OpKind,
    pub label: &'a str,
    pub scim_id: &'a str,
    pub payload: &'a str,
}

/// A run nobody says otherwise about was asked for by `reconcile`.
impl Default for Trigger {
    fn default() -> Self {
        Self::new("reconcile")
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which journal rows [`Store::history`] returns. Every filter narrows; none set = all rows.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// A userName (case-insensitive), an Okta user id or a Postman SCIM id. Matches the rows
    /// about that person, and the group membership changes that added or removed them.
    pub user: Option<String>,
    /// Rows recorded (intended) at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub op: Option<OpKind>,
    /// At most this many rows, the newest (still returned oldest first).
    pub limit: Option<usize>,
}

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The journal row id (increasing: the order writes were started in).
    pub id: i64,
    /// When the write was recorded as intended (just before it was sent).
    pub time: String,
    /// When its outcome was recorded; `None` while it is open.
    pub closed_at: Option<String>,
    pub run_id: String,
    /// `schedule`, `reconcile`, `apply <plan id>`, or `unrecorded` for rows older than the
    /// trigger column.
    pub trigger: String,
    /// The saved plan this write carried out (`apply FILE`), if any.
    pub plan_id: Option<String>,
    /// The `OpKind` string (`create`, `group_add_members`, ...).
    pub op: String,
    /// `user` or `group`.
    pub subject_type: &'static str,
    /// The userName (users) or displayName (groups).
    pub subject: String,
    pub okta_id: String,
    /// The Postman id the write was about, when known.
    pub scim_id: Option<String>,
    /// `done`, `failed`, `resolved`, `abandoned`, `intended` (outcome not known yet) or
    /// `parked` (recovery gave up looking it up; the next full run settles it).
    pub result: String,
    pub error: Option<String>,
    /// Why the planner wanted it, in an operator's words (rows from before this was recorded
    /// have none).
    pub reason: Option<String>,
}

impl Store {
    /// Records what started a run (called right after `run_started`).
    pub fn set_run_trigger(&mut self, run_id: &str, trigger: &Trigger) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET trigger = ?2 WHERE run_id = ?1",
                params![run_id, trigger.as_str()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records an adoption (a snapshot link to an existing Postman resource, no SCIM write) as
    /// a closed `done` journal row, together with its snapshot change in one transaction, so
    /// the audit trail shows when and why we took over an account. The row is never open:
    /// there is nothing for recovery to settle.
    pub fn journal_adopted(
        &mut self,
        entry: &Adopted<'_>,
        changes: &[SnapshotChange],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = ts(now);
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO journal (run_id, okta_id, op, user_name, payload, state, scim_id, plan_id, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'done', ?6, ?7, ?8, ?8)",
                params![
                    entry.run_id,
                    entry.subject.okta_id(),
                    entry.kind.as_str(),
                    entry.label,
                    entry.payload,
                    entry.scim_id,
                    entry.plan_id,
                    now
                ],
            )?;
            for c in changes {
                Self::apply_change(tx, c, &now)?;
            }
            Ok(())
        })
    }

    /// When a managed user's snapshot row last changed, and since when the full listings have
    /// lacked it (`why`'s "since when"). `None` when there is no row.
    pub fn snapshot_times(
        &self,
        okta_id: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let rows: Vec<(String, Option<String>)> = self.collect_rows(
            "SELECT updated_at, missing_since FROM users WHERE okta_id = ?1",
            params![okta_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows.into_iter().next())
    }

    /// The journal rows `filter` selects, oldest first.
    pub fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StoreError> {
        let user = filter.user.as_deref().map(str::trim).unwrap_or("");
        // The person's Postman ids: the one asked for, and the snapshot's link for an Okta id
        // or userName, so updates (which carry the SCIM id only in their payload) and group
        // membership changes (which list member SCIM ids) are found too.
        let scim_ids: BTreeSet<String> = if user.is_empty() {
            BTreeSet::new()
        } else {
            let mut ids: BTreeSet<String> = self.collect_rows(
                "SELECT scim_id FROM users WHERE okta_id = ?1 OR lower(user_name) = lower(?1) OR scim_id = ?1",
                params![user],
                |r| r.get(0),
            )?;
            ids.insert(user.to_string());
            ids
        };
        let scim_json = serde_json::to_string(&scim_ids).unwrap_or_else(|_| "[]".into());
        let since = filter.since.map(ts);
        let limit = filter
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        // Newest `limit` rows, then oldest first. `json_valid` guards the JSON functions
        // against a damaged payload (a hostile row must not fail the whole query).
        let mut rows: Vec<HistoryEntry> = self.collect_rows(
            "SELECT j.id, j.created_at, j.updated_at, j.run_id, r.trigger, j.plan_id, j.op,
                    j.user_name, j.okta_id, j.scim_id, j.state, j.parked_at, j.error,
                    CASE WHEN json_valid(j.payload) THEN json_extract(j.payload, '$.scim_id') END,
                    CASE WHEN json_valid(j.payload) THEN json_extract(j.payload, '$.reason') END
               FROM journal j LEFT JOIN runs r ON r.run_id = j.run_id
              WHERE (?1 = '' OR lower(j.user_name) = lower(?1) OR j.okta_id = ?1
                     OR j.scim_id IN (SELECT value FROM json_each(?2))
                     OR (json_valid(j.payload) AND (
                         json_extract(j.payload, '$.scim_id') IN (SELECT value FROM json_each(?2))
                         OR (j.op IN ('group_add_members', 'group_remove_members', 'group_create', 'group_adopt')
                             AND EXISTS (SELECT 1 FROM json_each(j.payload, '$.members') m
                                          WHERE m.value IN (SELECT value FROM json_each(?2)))))))
                AND (?3 IS NULL OR j.created_at >= ?3)
                AND (?4 IS NULL OR j.op = ?4)
              ORDER BY j.id DESC LIMIT ?5",
            params![user, scim_json, since, filter.op.map(OpKind::as_str), limit],
            |r| {
                let op: String = r.get(6)?;
                let state: String = r.get(10)?;
                let parked: Option<String> = r.get(11)?;
                let trigger: Option<String> = r.get(4)?;
                let plan_id: Option<String> = r.get(5)?;
                let row_scim: Option<String> = r.get(9)?;
                let payload_scim: Option<rusqlite::types::Value> = r.get(13)?;
                let reason: Option<rusqlite::types::Value> = r.get(14)?;
                let open = state == "intended";
                Ok(HistoryEntry {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    closed_at: if open { None } else { r.get(2)? },
                    run_id: r.get(3)?,
                    trigger: describe_trigger(trigger.as_deref(), plan_id.as_deref()),
                    plan_id,
                    subject_type: if OpKind::parse(&op).is_some_and(OpKind::is_group) {
                        "group"
                    } else {
                        "user"
                    },
                    op,
                    subject: r.get(7)?,
                    okta_id: r.get(8)?,
                    scim_id: row_scim.or_else(|| payload_scim.and_then(text_value)),
                    result: match (open, parked) {
                        (true, Some(_)) => "parked".to_string(),
                        _ => state,
                    },
                    error: r.get(12)?,
                    reason: reason.and_then(text_value),
                })
            },
        )?;
        rows.reverse();
        Ok(rows)
    }
}

/// How `history` words what started a write's run.
fn describe_trigger(trigger: Option<&str>, plan_id: Option<&str>) -> String {
    match (plan_id, trigger) {
        (Some(plan), _) => format!("apply {plan}"),
        (None, Some(t)) if !t.is_empty() => t.to_string(),
        // Rows written before the trigger was recorded, or whose run row is gone.
        _ => "unrecorded".to_string(),
    }
}

/// A JSON value SQLite handed back as text (anything else, such as a number someone wrote by
/// hand, is not a reason or an id).
fn text_value(v: rusqlite::types::Value) -> Option<String> {
    match v {
        rusqlite::types::Value::Text(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OktaGroupId, OktaUserId};
    use crate::store::fixtures::*;
    use crate::store::SnapshotChange;

    fn intend(
        s: &mut Store,
        run: &str,
        subject: Subject,
        kind: OpKind,
        label: &str,
        payload: &str,
    ) -> i64 {
        s.journal_intend(run, &subject, kind, label, payload, now())
            .expect("intend")
    }

    #[test]
    fn history_reads_reasons_triggers_and_adoptions_and_filters_by_person() {
        let mut s = Store::in_memory().expect("mem");
        s.run_started("r1", now(), true).expect("run");
        s.set_run_trigger("r1", &Trigger::schedule())
            .expect("trigger");
        let ann = ann();
        s.journal_adopted(
            &Adopted {
                run_id: "r1",
                plan_id: None,
                subject: &Subject::User(ann.okta_id.clone()),
                kind: OpKind::Adopt,
                label: "ann@example.com",
                scim_id: "s-ann",
                payload: r#"{"scim_id":"s-ann","reason":"matches by userName"}"#,
            },
            &[SnapshotChange::Upsert(ann.clone())],
            now(),
        )
        .expect("adopt");
        let j = intend(
            &mut s,
            "r1",
            Subject::User(ann.okta_id.clone()),
            OpKind::Deactivate,
            "ann@example.com",
            r#"{"scim_id":"s-ann","active":false,"reason":"no longer assigned"}"#,
        );
        s.journal_done(j, None, &[], now()).expect("done");
        let g = intend(
            &mut s,
            "r1",
            Subject::Group(OktaGroupId::new("00geng")),
            OpKind::GroupAddMembers,
            "Engineering",
            r#"{"scim_id":"g-eng","members":["s-ann"],"reason":"joined"}"#,
        );
        s.journal_done(g, None, &[], now()).expect("done");
        intend(
            &mut s,
            "r-old",
            Subject::User(OktaUserId::new("00ubob")),
            OpKind::Create,
            "bob@example.com",
            "not json",
        );

        let all = s.history(&HistoryFilter::default()).expect("history");
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].op, "adopt");
        assert_eq!(all[0].result, "done");
        assert_eq!(all[0].trigger, "schedule");
        assert_eq!(all[1].reason.as_deref(), Some("no longer assigned"));
        assert_eq!(all[1].scim_id.as_deref(), Some("s-ann"));
        assert_eq!(all[2].subject_type, "group");
        assert_eq!(all[3].result, "intended");
        assert_eq!(all[3].trigger, "unrecorded");
        assert_eq!(all[3].reason, None);

        for who in ["ANN@example.com", "00uann", "s-ann"] {
            let mine = s
                .history(&HistoryFilter {
                    user: Some(who.into()),
                    ..HistoryFilter::default()
                })
                .expect("history");
            let ops: Vec<&str> = mine.iter().map(|e| e.op.as_str()).collect();
            assert_eq!(ops, ["adopt", "deactivate", "group_add_members"], "{who}");
        }
        let only = s
            .history(&HistoryFilter {
                op: Some(OpKind::Create),
                ..HistoryFilter::default()
            })
            .expect("history");
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].subject, "bob@example.com");
        let last = s
            .history(&HistoryFilter {
                limit: Some(2),
                ..HistoryFilter::default()
            })
            .expect("history");
        assert_eq!(
            last.iter().map(|e| e.id).collect::<Vec<_>>(),
            [g, all[3].id]
        );
    }
}
