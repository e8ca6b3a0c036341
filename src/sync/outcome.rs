//! What a run did, as one typed report: the operation kinds of users and groups in one enum, the
//! state of each operation, the counts, and the run's [`Outcome`], which only ever gets worse
//! through `RunReport::raise`. Text rendering, the JSON contract, the demo table and the metric
//! labels all come from these enums, so a new kind is named once.
//!
//! Pure data: nothing here does I/O or decides what to change.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::saved::{PlanDiff, SavedPlan};

/// How a run ended. The order is the severity: a run's outcome is the worst thing that
/// happened in it. `Refused` sits below `Failed` but is only ever set by the guard step, before
/// the first write (see [`super::guard`]): a refused run has changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Converged: everything planned was done (or, in a dry run, the plan is complete).
    Ok,
    /// Something was not done: an operation failed, or deactivations were withheld.
    Partial,
    /// A safety guard refused the plan; nothing was changed.
    Refused,
    /// The run could not proceed (an API unreachable, the store unusable).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

pub use crate::model::OpKind;

/// What happened to one operation when it was carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpStatus {
    Done {
        note: Option<String>,
    },
    Failed {
        error: String,
    },
    /// Not attempted: shutdown, an earlier failure of the same subject, or a store failure.
    NotRun {
        why: String,
    },
}

impl OpStatus {
    /// The `result` label of `operations_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            OpStatus::Done { .. } => "done",
            OpStatus::Failed { .. } => "failed",
            OpStatus::NotRun { .. } => "not_run",
        }
    }
}

/// An operation's state in a report (`status` in the JSON output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    Planned,
    Done,
    Failed,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Planned => "planned",
            OpState::Done => "done",
            OpState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for OpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for OpState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One operation in a report. `user_name` holds a group's displayName for group operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpReport {
    pub op: OpKind,
    pub user_name: String,
    pub okta_id: String,
    pub status: OpState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub deactivate: usize,
    pub reactivate: usize,
    pub adopt: usize,
    pub unchanged: usize,
    pub failed: usize,
    /// Group operations done (planned, in a dry run); see `operations` for their kinds.
    pub groups: usize,
    /// Pushed groups that needed nothing.
    pub unchanged_groups: usize,
}

impl Counts {
    /// Counts one operation done (or planned, in a dry run) of this kind.
    pub fn bump(&mut self, kind: OpKind) {
        match kind {
            OpKind::Create => self.create += 1,
            OpKind::Update => self.update += 1,
            OpKind::Deactivate => self.deactivate += 1,
            OpKind::Reactivate => self.reactivate += 1,
            OpKind::Adopt => self.adopt += 1,
            OpKind::GroupCreate
            | OpKind::GroupAdopt
            | OpKind::GroupRename
            | OpKind::GroupAddMembers
            | OpKind::GroupRemoveMembers
            | OpKind::GroupDelete => self.groups += 1,
        }
    }
}

/// Everything a run did or would do: printed as text or JSON, stored in the run history.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub dry_run: bool,
    pub full: bool,
    pub outcome: Outcome,
    pub counts: Counts,
    pub operations: Vec<OpReport>,
    /// Deactivations computed but not carried out because the Okta read was incomplete.
    pub withheld: Vec<OpReport>,
    /// Operations postponed because the user is quarantined.
    pub deferred: Vec<OpReport>,
    /// Groups no longer pushed, left in Postman because `[groups] delete_removed = false`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_alone: Vec<OpReport>,
    /// Who a refused run would have deactivated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    pub unmanaged_members: Option<usize>,
    pub skipped_okta_users: Vec<String>,
    pub errors: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The saved plan this run carried out (`apply FILE`), or tried to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// How the saved plan differs from a fresh one, when that refused the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_differences: Option<PlanDiff>,
    /// The plan of a dry run asked to save it (`--save-plan`); written by the command, not
    /// part of the printed report.
    #[serde(skip)]
    pub saved_plan: Option<Box<SavedPlan>>,
}

/// Proof that a run has written nothing to Postman yet. It is made only with the run's report
/// ([`RunReport::start`]), a refusal needs it, and the engine gives it up before its first
/// write, so a refusal after a write cannot be written in code that compiles.
#[derive(Debug)]
pub(crate) struct NothingWritten(());

impl NothingWritten {
    /// Gives the proof up: the run's writes begin.
    pub(crate) fn spend(self) {}
}

impl RunReport {
    /// A new report and the run's one [`NothingWritten`] proof.
    pub(crate) fn start(
        run_id: String,
        dry_run: bool,
        started_at: DateTime<Utc>,
    ) -> (Self, NothingWritten) {
        (Self::new(run_id, dry_run, started_at), NothingWritten(()))
    }

    fn new(run_id: String, dry_run: bool, started_at: DateTime<Utc>) -> Self {
        RunReport {
            run_id,
            dry_run,
            full: false,
            outcome: Outcome::Ok,
            counts: Counts::default(),
            operations: Vec::new(),
            withheld: Vec::new(),
            deferred: Vec::new(),
            left_alone: Vec::new(),
            refusal: None,
            unmanaged_members: None,
            skipped_okta_users: Vec::new(),
            errors: Vec::new(),
            started_at,
            finished_at: started_at,
            plan_id: None,
            plan_differences: None,
            saved_plan: None,
        }
    }

    /// The one way an outcome changes: it only gets worse. `Refused` cannot be raised to here
    /// (it is set by [`RunReport::refuse`], before any write).
    pub(crate) fn raise(&mut self, to: Outcome) {
        debug_assert!(to != Outcome::Refused, "a refusal goes through refuse()");
        self.outcome = self.outcome.max(to);
    }

    /// Records a guard's refusal: only possible while nothing has been written.
    pub(crate) fn refuse(&mut self, _: &NothingWritten, why: String) {
        self.refusal = Some(why);
        self.outcome = self.outcome.max(Outcome::Refused);
    }

    /// Records a failure that stops the run.
    pub(crate) fn fail(&mut self, msg: String) {
        tracing::error!(error = %msg, "run failed");
        self.errors.push(msg);
        self.raise(Outcome::Failed);
    }

    /// Adds one operation's report, counting it when it was done (or planned, in a dry run)
    /// and recording its error.
    pub(crate) fn push_op(&mut self, r: OpReport) {
        match r.status {
            OpState::Done => self.counts.bump(r.op),
            OpState::Planned if self.dry_run || self.outcome == Outcome::Refused => {
                self.counts.bump(r.op)
            }
            OpState::Planned => {}
            OpState::Failed => {
                self.counts.failed += 1;
                self.errors.push(format!(
                    "{} {}: {}",
                    r.op.as_str(),
                    r.user_name,
                    r.error.as_deref().unwrap_or("failed")
                ));
            }
        }
        self.operations.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_only_get_worse() {
        let mut r = RunReport::new("r".into(), false, Utc::now());
        r.raise(Outcome::Partial);
        r.raise(Outcome::Ok);
        assert_eq!(r.outcome, Outcome::Partial);
        r.raise(Outcome::Failed);
        r.raise(Outcome::Partial);
        assert_eq!(r.outcome, Outcome::Failed);
        assert!(Outcome::Ok < Outcome::Partial && Outcome::Partial < Outcome::Failed);
    }

    #[test]
    fn kinds_serialize_to_the_documented_strings_and_parse_back() {
        for k in crate::model::ALL_KINDS {
            assert_eq!(
                serde_json::to_value(k).expect("json"),
                serde_json::Value::String(k.as_str().to_string())
            );
            assert_eq!(OpKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            serde_json::to_value(OpState::Planned).expect("json"),
            serde_json::json!("planned")
        );
    }
}
