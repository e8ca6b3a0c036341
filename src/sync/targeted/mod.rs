//! The targeted reconcile (issue 14): the engine's second entry point, for the users and groups
//! a few Okta events named. Events are hints, Okta is the truth: each named user is re-read on
//! its own (the app user, and the user's status when the assignment is gone), a named group is
//! re-read as its members (a deleted one as the members last pushed to it), and then the users
//! read are planned by the same planner against the same snapshot — restricted to them, so
//! nobody this run did not re-read can be deactivated — checked by the same guards, applied
//! through the same journal, and recorded like any run. Interrupted writes are resolved first,
//! as in a full run. A forged or stale event therefore only costs a re-read.
//!
//! Pushed groups follow in the same run (`groups`): the groups of each user re-read as
//! assigned are looked up, and the group planner is given the affected groups only — never one
//! that could read as "no longer pushed", so a targeted run plans no group deletion.
//!
//! What it adds over [`Engine::run`] is only what events need: the reason of every operation
//! names the event (type and uuid); a failed re-read leaves that user out of the plan (no
//! deactivation, the caller keeps the user queued); and the event guard — event-driven
//! deactivations count against `[sync] max_deactivations` over `[events] guard_window`, and
//! those beyond it are held for the next full run (logged by name, stored for `/status`).
//! It must not read Postman's member list or decide when it runs (the daemon's one-writer rule
//! does).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::groups::apply::GroupApplier;
use super::groups::plan::GroupPolicy;
use super::outcome::NothingWritten;
use super::users::apply::Applier;
use super::users::plan::{plan, Action, Carried, Operation, Plan, Policy, Refusal};
use super::{guard, journal, log_plan, record, record_group_extras, record_planned, stopped};
use super::{Engine, OpKind, OpStatus, Outcome, RunReport};
use crate::model::{OktaGroupId, OktaUserId};
use crate::store::{EventCause, HeldDeactivation, Trigger};

mod groups;
mod read;

use groups as group_targets;
use read::{Known, Reader, Reread};

/// Concurrent Okta re-reads of one targeted run: a burst is read quickly, well inside our share
/// of the rate limit (the client paces itself on the headers anyway).
const READ_CONCURRENCY: usize = 4;
/// The least time one re-read (with the client's retries) may take, and the least a targeted
/// run may spend waiting between retries in all.
const BUDGET_FLOOR: std::time::Duration = std::time::Duration::from_secs(10);

/// What events named: users and groups, each with the event behind it.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub users: BTreeMap<OktaUserId, EventCause>,
    pub groups: BTreeMap<OktaGroupId, EventCause>,
}

impl Targets {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

/// The report of a targeted run and what its caller must keep.
#[derive(Debug)]
pub struct TargetedOutcome {
    pub report: RunReport,
    /// Users to keep queued and try again at the next poll interval: their re-read failed
    /// (nothing was planned for them), their groups could not be looked up, or a write for
    /// them failed or did not run.
    pub failed_users: BTreeSet<OktaUserId>,
    /// Groups whose members could not be read.
    pub failed_groups: BTreeSet<OktaGroupId>,
    /// Deactivations the event guard held back for the next full run.
    pub held: Vec<HeldDeactivation>,
    /// The event of each operation carried out, and when its write finished (for the lag).
    pub applied: Vec<(EventCause, DateTime<Utc>)>,
}

/// The words for a user Okta no longer assigns, from the user's status when it could be read.
fn gone_reason(status: Option<&Option<String>>) -> &'static str {
    match status {
        Some(None) => "deleted in Okta",
        Some(Some(s)) if s == "DEPROVISIONED" => "deactivated in Okta",
        Some(Some(s)) if s == "SUSPENDED" => "suspended in Okta and unassigned",
        _ => "unassigned from the Postman app in Okta",
    }
}

fn with_event(reason: &str, cause: &EventCause) -> String {
    format!("{reason} (event {} {})", cause.event_type, cause.uuid)
}

/// The event guard over a plan: keeps at most `remaining` deactivations (in plan order) and
/// returns the rest, held. The planner's own deactivation verdict is settled by it: what is
/// left is within the limit. Pure, so it is tested without I/O.
pub fn hold_beyond(plan: &mut Plan, remaining: usize) -> Vec<Operation> {
    let mut kept = 0usize;
    let mut held = Vec::new();
    plan.operations.retain(|o| {
        if o.kind() != OpKind::Deactivate {
            return true;
        }
        if kept < remaining {
            kept += 1;
            true
        } else {
            held.push(o.clone());
            false
        }
    });
    if matches!(plan.refusal, Some(Refusal::TooManyDeactivations { .. })) {
        plan.refusal = None;
    }
    held
}

impl Engine {
    /// A targeted reconcile of the users (and group members) `targets` names. Never panics;
    /// every failure is in the report. Call it only as the one writer (the daemon's rule).
    pub async fn run_targeted(
        &self,
        targets: &Targets,
        cancel: &CancellationToken,
    ) -> TargetedOutcome {
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let span = tracing::info_span!("sync_run", run_id = %run_id, trigger = "event");
        let clock = Instant::now();
        let started = Utc::now();
        let (report, nothing_written) = RunReport::start(run_id.clone(), false, started);
        let mut out = TargetedOutcome {
            report,
            failed_users: BTreeSet::new(),
            failed_groups: BTreeSet::new(),
            held: Vec::new(),
            applied: Vec::new(),
        };
        // Fast recovery: the run's retrying is bounded in total (crate::retry::with_run_budget),
        // as a scheduled run's is; what it could not do stays queued for the next poll interval.
        let budget = self.event_budget();
        let inner = self
            .targeted_inner(targets, cancel, &mut out, nothing_written)
            .instrument(span.clone());
        crate::retry::with_run_budget(budget, inner).await;
        let report = &mut out.report;
        report.finished_at = Utc::now();
        self.metrics
            .run_finished(report.outcome.as_str(), clock.elapsed().as_secs_f64());
        self.metrics.events.targeted(report.outcome.as_str());
        if self.writable {
            self.record_finished(report).await;
            self.refresh_gauges().await;
        }
        tracing::info!(
            parent: &span,
            outcome = report.outcome.as_str(),
            users = targets.users.len(),
            groups = targets.groups.len(),
            create = report.counts.create,
            update = report.counts.update,
            deactivate = report.counts.deactivate,
            reactivate = report.counts.reactivate,
            held = out.held.len(),
            kept_queued = out.failed_users.len() + out.failed_groups.len(),
            seconds = clock.elapsed().as_secs_f64(),
            "targeted run finished"
        );
        out
    }

    /// The time bound of event work: one read of a targeted run, and the waits between retries
    /// of the whole run — max(3 × `[events] poll_interval`, 10 s).
    fn event_budget(&self) -> std::time::Duration {
        (self.config.events.poll_interval * 3).max(BUDGET_FLOOR)
    }

    async fn targeted_inner(
        &self,
        targets: &Targets,
        cancel: &CancellationToken,
        out: &mut TargetedOutcome,
        nothing_written: NothingWritten,
    ) {
        let now = out.report.started_at;
        if !self.writable {
            return out
                .report
                .fail("a targeted run needs a writable state database".into());
        }
        let id = out.report.run_id.clone();
        if let Err(e) = self
            .store
            .call(move |s| {
                s.run_started(&id, now, false)?;
                s.set_run_trigger(&id, &Trigger::event())
            })
            .await
        {
            return out.report.fail(e.to_string());
        }
        // Interrupted writes first, as in a full run: a create that may have happened is
        // looked up before anything could send it again; one that cannot be settled holds its
        // subject (a scheduled full run settles it from the listing).
        let recovery = match cancel
            .run_until_cancelled(journal::recover(&self.scim, &self.store))
            .await
        {
            None => return stopped(&mut out.report, "resolving interrupted writes"),
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                return out
                    .report
                    .fail(format!("resolving interrupted writes: {e}"))
            }
        };
        let groups_on = self.config.groups.enabled;
        let snapshots = self
            .store
            .call(move |s| {
                let groups = if groups_on {
                    s.group_snapshot()?
                } else {
                    BTreeMap::new()
                };
                Ok((s.snapshot()?, groups))
            })
            .await;
        let (snapshot, group_snapshot) = match snapshots {
            Ok(v) => v,
            Err(e) => return out.report.fail(e.to_string()),
        };

        // Fast recovery: during an Okta outage one read must not hold the writer slot for the
        // client's whole retry budget, nor each of a thousand reads in turn (see [`Reader`]).
        let reader = Reader::new(self.event_budget());
        let by_scim = group_targets::by_scim(&snapshot);
        let known = Known {
            users: &snapshot,
            by_scim: &by_scim,
            groups: &group_snapshot,
        };
        let Some(mut reread) = self.reread(targets, known, &reader, cancel, out).await else {
            return stopped(&mut out.report, "re-reading Okta");
        };
        out.report.skipped_okta_users = reread
            .desired
            .skipped
            .iter()
            .map(|(id, why)| format!("{id}: {why}"))
            .collect();
        // Groups, read before any write so one guard check covers the whole plan (as in a full
        // run): the pushed groups, and the groups of each user re-read as assigned.
        let group_inputs =
            if groups_on && !(targets.groups.is_empty() && reread.read_ids.is_empty()) {
                let read = self.read_groups(&reader, &mut reread, known, &targets.groups, out);
                match cancel.run_until_cancelled(read).await {
                    None => return stopped(&mut out.report, "reading Okta groups"),
                    Some(g) => g,
                }
            } else {
                None
            };
        if !out.failed_users.is_empty() || !out.failed_groups.is_empty() {
            out.report.raise(Outcome::Partial);
        }
        let Reread {
            causes: users,
            desired,
            read_ids,
            gone,
            ..
        } = reread;

        // The snapshot restricted to the users read: a managed user this run did not re-read
        // is not "missing from Okta", it is simply not part of this run.
        let restricted: BTreeMap<_, _> = snapshot
            .iter()
            .filter(|(id, _)| read_ids.contains(*id))
            .map(|(id, u)| (id.clone(), u.clone()))
            .collect();
        let now_q = now;
        let mut held = match self.store.call(move |s| s.quarantined(now_q)).await {
            Ok(v) => v,
            Err(e) => return out.report.fail(e.to_string()),
        };
        for (id, why) in recovery.held_users() {
            held.entry(id).or_insert(why);
        }
        let policy = Policy {
            max_deactivations: self.config.sync.max_deactivations,
            allow_deactivations: None,
        };
        let mut plan = {
            let _span = tracing::info_span!("plan").entered();
            plan(
                &desired,
                &restricted,
                None,
                &Carried {
                    held,
                    missing_before: BTreeSet::new(),
                },
                &policy,
            )
        };
        // The empty-read guard is about a read of the whole app answering nobody (a wrong
        // app_id or permission); a targeted read of one unassigned user is exactly that shape
        // and means what it says.
        if matches!(plan.refusal, Some(Refusal::EmptyOktaRead { .. })) {
            plan.refusal = None;
        }
        // Every operation names the event behind it.
        let reason_of = |op: &mut Operation| {
            let Some(cause) = users.get(&op.okta_id) else {
                return;
            };
            let base = match (&op.action, gone.get(&op.okta_id)) {
                (Action::Deactivate { .. }, Some(g)) => g.to_string(),
                _ => op.reason.clone(),
            };
            op.reason = with_event(&base, cause);
        };
        plan.operations.iter_mut().for_each(reason_of);
        plan.deferred.iter_mut().for_each(|(o, _)| reason_of(o));

        // The event guard: a rolling window of event-driven deactivations.
        let window = self.config.events.guard_window;
        let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::hours(1));
        let used = match self
            .store
            .call(move |s| s.event_deactivations_since(since))
            .await
        {
            Ok(n) => n,
            Err(e) => return out.report.fail(e.to_string()),
        };
        let limit = policy.deactivation_limit();
        let held_ops = hold_beyond(&mut plan, limit.saturating_sub(used));
        if !held_ops.is_empty() {
            let names: Vec<&str> = held_ops.iter().map(|o| o.user_name.as_str()).collect();
            tracing::warn!(
                held = held_ops.len(),
                used_in_window = used,
                limit,
                window_seconds = window.as_secs(),
                people = %names.join(", "),
                "event guard: more event-driven deactivations than [sync] max_deactivations in [events] guard_window; these are held for the next full run (where the normal guard applies, or approve with --allow-deactivations)"
            );
        }
        out.held = held_ops
            .iter()
            .map(|o| {
                let cause = users.get(&o.okta_id);
                HeldDeactivation {
                    okta_id: o.okta_id.to_string(),
                    user_name: o.user_name.clone(),
                    event_uuid: cause.map(|c| c.uuid.clone()).unwrap_or_default(),
                    event_type: cause.map(|c| c.event_type.clone()).unwrap_or_default(),
                    held_at: String::new(),
                }
            })
            .collect();
        out.report.deferred = plan
            .deferred
            .iter()
            .map(|(o, why)| o.report_planned(Some(why.clone())))
            .chain(held_ops.iter().map(|o| {
                o.report_planned(Some(format!(
                    "held by the event guard: more than {limit} event-driven deactivations within {}; the next full run decides",
                    humantime::format_duration(window)
                )))
            }))
            .collect();
        out.report.counts.unchanged = plan.unchanged;

        // The group plan over what was read, with the users as they are before the writes; it
        // is made again after them (users created now join their groups) and bounded by this one.
        let group_policy = GroupPolicy {
            delete_removed: false,
            deactivation_limit: limit,
            deactivating: plan
                .deactivations()
                .filter_map(|o| match &o.action {
                    Action::Deactivate { scim_id } => Some(scim_id.clone()),
                    _ => None,
                })
                .collect(),
            held: recovery.held_groups(),
        };
        let group_plan = group_inputs
            .as_ref()
            .map(|(g, _)| g.plan(&snapshot, &group_policy));
        drop(snapshot);
        log_plan(&plan.operations);
        if let Some(g) = &group_plan {
            log_plan(&g.operations);
        }

        if let Err(msg) = guard::check(&plan, group_plan.as_ref(), &[]) {
            tracing::warn!(guard = %msg, "targeted run refused by a safety guard");
            out.report.refuse(&nothing_written, msg);
            for op in &plan.operations {
                out.report.push_op(op.report_planned(None));
            }
            if let Some(g) = &group_plan {
                record_planned(&mut out.report, &g.operations);
            }
            return;
        }

        // ---- writes from here on -----------------------------------------------------------
        nothing_written.spend();
        let deactivating: Vec<String> = plan
            .deactivations()
            .map(|o| o.okta_id.to_string())
            .collect();
        let held_rows = out.held.clone();
        let prune = since;
        if let Err(e) = self
            .store
            .call(move |s| s.event_guard_record(&deactivating, &held_rows, now, prune))
            .await
        {
            return out.report.fail(e.to_string());
        }
        let journal = self.journal(&out.report.run_id, None);
        let applier = Applier {
            scim: self.scim.clone(),
            journal: journal.clone(),
            metrics: Arc::clone(&self.metrics),
            max_in_flight: self.config.postman.max_in_flight,
            cancel: cancel.clone(),
        };
        let done_at = std::sync::Mutex::new(Vec::new());
        let on_done = |op: &Operation, status: &OpStatus| {
            if matches!(status, OpStatus::Done { .. }) {
                if let Some(cause) = users.get(&op.okta_id) {
                    done_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((cause.clone(), Utc::now()));
                }
            }
        };
        let (statuses, fatal) = applier.apply(&plan, &on_done).await;
        out.applied = done_at.into_inner().unwrap_or_else(|p| p.into_inner());
        // A write that failed or did not run (Postman down, the run stopped) is tried again at
        // the next poll interval, not left to the next scheduled run.
        for (op, status) in plan.operations.iter().zip(&statuses) {
            if !matches!(status, OpStatus::Done { .. }) {
                out.failed_users.insert(op.okta_id.clone());
            }
        }
        if record(&mut out.report, &plan.operations, statuses) {
            out.report.raise(Outcome::Partial);
        }
        if let Some(e) = fatal {
            return out.report.fail(e.to_string());
        }

        // Groups: planned again against the updated user snapshot, bounded by the checked plan.
        let (Some((inputs, causes)), Some(checked)) = (&group_inputs, &group_plan) else {
            return;
        };
        let users_now = match self.store.call(|s| s.snapshot()).await {
            Ok(u) => u,
            Err(e) => return out.report.fail(e.to_string()),
        };
        let mut group_plan = {
            let _span = tracing::info_span!("plan_groups").entered();
            guard::bound_replan(inputs.plan(&users_now, &group_policy), checked)
        };
        drop(users_now);
        for op in &mut group_plan.operations {
            if let Some(cause) = causes.get(&op.okta_id) {
                op.reason = with_event(&op.reason, cause);
            }
        }
        log_plan(&group_plan.operations);
        let applier = GroupApplier {
            scim: self.scim.clone(),
            journal,
            metrics: Arc::clone(&self.metrics),
            cancel: cancel.clone(),
        };
        let (statuses, fatal) = applier.apply(&group_plan).await;
        let mut unfinished = false;
        for (op, status) in group_plan.operations.iter().zip(&statuses) {
            match (status, causes.get(&op.okta_id)) {
                (OpStatus::Done { .. }, Some(cause)) => {
                    out.applied.push((cause.clone(), Utc::now()))
                }
                (OpStatus::Done { .. }, None) => {}
                _ => {
                    unfinished = true;
                    if targets.groups.contains_key(&op.okta_id) {
                        out.failed_groups.insert(op.okta_id.clone());
                    }
                }
            }
        }
        // Which user's event moved a group is not kept per operation: every user re-read as
        // assigned is tried again (a re-read, then only what is still missing is written).
        if unfinished {
            out.failed_users.extend(desired.users.keys().cloned());
        }
        if record(&mut out.report, &group_plan.operations, statuses) {
            out.report.raise(Outcome::Partial);
        }
        record_group_extras(&mut out.report, &group_plan);
        if let Some(e) = fatal {
            out.report.fail(e.to_string());
        }
    }
}

impl Operation {
    fn report_planned(&self, why: Option<String>) -> super::OpReport {
        use super::Reported;
        self.report(super::OpState::Planned, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ScimUserId;

    fn deactivate(id: &str) -> Operation {
        Operation {
            okta_id: OktaUserId::new(id),
            user_name: format!("{id}@example.com"),
            action: Action::Deactivate {
                scim_id: ScimUserId::new(format!("s-{id}")),
            },
            reason: "gone".into(),
        }
    }

    #[test]
    fn the_event_guard_keeps_what_the_window_allows_and_holds_the_rest() {
        let mut plan = Plan {
            operations: vec![deactivate("a"), deactivate("b"), deactivate("c")],
            refusal: Some(Refusal::TooManyDeactivations { count: 3, limit: 2 }),
            ..Plan::default()
        };
        let held = hold_beyond(&mut plan, 1);
        assert_eq!(plan.operations, vec![deactivate("a")]);
        assert_eq!(held, vec![deactivate("b"), deactivate("c")]);
        assert!(plan.refusal.is_none());
    }

    #[test]
    fn a_deleted_or_deactivated_user_is_named_as_such() {
        assert_eq!(gone_reason(Some(&None)), "deleted in Okta");
        assert_eq!(
            gone_reason(Some(&Some("DEPROVISIONED".into()))),
            "deactivated in Okta"
        );
        assert_eq!(gone_reason(None), "unassigned from the Postman app in Okta");
    }
}
