//! The history of runs (`runs`): one row per run, started and finished, with its outcome,
//! counts and errors, bounded to the last 500. It answers "when did we last converge" and
//! "when did we last read all of Postman" for status, readiness and the full-run schedule, and
//! closes runs a panic left unfinished. It records what the engine reports and must not decide
//! outcomes itself, nor touch the snapshot or the journal.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{ts, Store, StoreError, Trigger};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub full: bool,
    /// What asked for the run (`schedule`, `reconcile`, `event`, ...), when recorded.
    pub trigger: Option<String>,
    pub outcome: Option<String>,
    pub counts: Option<serde_json::Value>,
    pub errors: Option<serde_json::Value>,
}

impl RunRecord {
    /// The run's kind for people: `event` (a targeted reconcile), `full` or `incremental`.
    pub fn kind(&self) -> &'static str {
        match (self.trigger.as_deref(), self.full) {
            (Some(t), _) if t == Trigger::EVENT => "event",
            (_, true) => "full",
            (_, false) => "incremental",
        }
    }
}

impl Store {
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
        // Keep the history bounded, except the runs the journal still names: `history` shows
        // what started each write for as long as `[sync] history_for` keeps it.
        self.conn
            .execute(
                "DELETE FROM runs WHERE run_id NOT IN (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 500)
                     AND run_id NOT IN (SELECT run_id FROM journal)",
                [],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn last_runs(&self, n: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.collect_rows(
            "SELECT run_id, started_at, finished_at, full, outcome, counts, errors, trigger FROM runs
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
                    trigger: r.get(7)?,
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
        // A targeted reconcile (issue 14) re-reads a few users: it proves nothing about the rest.
        self.last_time(
            "SELECT MAX(finished_at) FROM runs WHERE outcome = 'ok' AND trigger IS NOT 'event'",
        )
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
