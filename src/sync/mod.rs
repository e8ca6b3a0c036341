//! One reconcile run, end to end: settle interrupted writes, read Okta, read Postman (full
//! runs), plan users and groups, check the guards over the whole plan, apply both through the
//! journal, record. This is the I/O shell around the pure planners; the one-shot `reconcile`,
//! the daemon and the demo all call [`Engine::run`].
//!
//! Layout, one folder per kind of thing synced, each with the same shape:
//! - [`users`]: `plan` (pure) and `apply`; their read is the Okta client's app-user read.
//! - [`groups`]: `read`, `plan` (pure) and `apply`.
//! - [`journal`]: the one journalled write both `apply` steps use, and recovery.
//! - [`guard`]: the guards over the whole plan, checked before the first write.
//! - [`outcome`]: the typed report (operation kinds, states, counts, the run's outcome).
//! - [`saved`]: saved plans (`--save-plan`, `apply`): the format, fingerprint, comparison.
//! - [`targeted`]: [`Engine::run_targeted`], the same pipeline for the users Okta events name.
//!
//! Nothing outside this module implements the engine.

pub mod groups;
pub mod guard;
pub mod journal;
pub mod outcome;
pub mod saved;
pub mod targeted;
pub mod users;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{OktaUserId, PostmanUser};
use crate::okta::{AttributeMapping, OktaClient};
use crate::scim::{ScimClient, ScimError};
use crate::store::{Quarantine, StoreHandle, Trigger, UnmanagedRecord};

use groups::apply::GroupApplier;
use groups::plan::{GroupOperation, GroupPlan, GroupPolicy};
use groups::read::GroupInputs;
use journal::{Journal, Recovery};
use saved::{SavedPlan, SavedPolicy, Target};
use users::apply::Applier;
use users::plan::{plan, Action, Carried, Operation, Policy};

pub use outcome::{Counts, OpKind, OpReport, OpState, OpStatus, Outcome, RunReport};

use outcome::NothingWritten;

/// What the caller asks of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Compute and report the plan; change nothing anywhere.
    pub dry_run: bool,
    /// Re-read every Postman member and repair drift (the first run is always full).
    pub full: bool,
    /// `--allow-deactivations N`.
    pub allow_deactivations: Option<usize>,
    /// `--save-plan`: a dry run also builds the [`SavedPlan`] (in [`RunReport::saved_plan`]).
    pub save_plan: bool,
    /// `apply FILE`: the saved plan this run must match. The fresh plan is carried out only
    /// when it holds exactly these operations; otherwise the run is refused before any write.
    pub expected: Option<Arc<SavedPlan>>,
    /// What asked for the run (`reconcile` unless said otherwise), recorded for `history`.
    pub trigger: Trigger,
    /// The most this run may spend waiting between retries, over all its requests
    /// ([`crate::retry::with_run_budget`]); `None`: each request is bounded by the retry policy
    /// alone (one-shot `reconcile`). The daemon's scheduled runs set it from the schedule.
    pub retry_budget: Option<std::time::Duration>,
}

/// Watches a run's user writes (a progress display, the daemon's stuck-run watch).
pub trait ProgressSink: Send + Sync {
    /// The plan passed the guards and its writes begin: `total` user operations follow, each
    /// reported to [`ProgressSink::done`]. Not called for dry or refused runs.
    fn planned(&self, _total: usize) {}
    /// One user operation was carried out (or not: its status says).
    fn done(&self, op: &Operation, status: &OpStatus);
}

/// A closure is a sink that only counts operations.
impl<F: Fn(&Operation, &OpStatus) + Send + Sync> ProgressSink for F {
    fn done(&self, op: &Operation, status: &OpStatus) {
        self(op, status)
    }
}

/// What [`Engine::run`] reports progress to.
pub type Progress = Arc<dyn ProgressSink>;

/// The engine owns the clients and the store for the life of the process.
pub struct Engine {
    pub config: Arc<Config>,
    pub okta: OktaClient,
    pub scim: ScimClient,
    pub mapping: AttributeMapping,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    /// Whether the store may be written (false for dry runs on a read-only open).
    pub writable: bool,
}

/// An operator-facing description of a SCIM failure: the error and, when known, what to do
/// (the client's errors already end with the hint for the statuses it knows).
pub fn describe(e: &ScimError) -> String {
    match e.hint() {
        Some(h) if !e.to_string().contains(h) => format!("{e}. {h}"),
        _ => e.to_string(),
    }
}

/// Both kinds of operation appear in one report the same way.
trait Reported {
    fn report(&self, state: OpState, error: Option<String>) -> OpReport;
}

impl Reported for Operation {
    fn report(&self, state: OpState, error: Option<String>) -> OpReport {
        OpReport {
            op: self.kind(),
            user_name: self.user_name.clone(),
            okta_id: self.okta_id.to_string(),
            status: state,
            error,
            reason: self.reason.clone(),
        }
    }
}

impl Reported for GroupOperation {
    fn report(&self, state: OpState, error: Option<String>) -> OpReport {
        OpReport {
            op: self.kind(),
            user_name: self.display_name.clone(),
            okta_id: self.okta_id.to_string(),
            status: state,
            error,
            reason: self.reason.clone(),
        }
    }
}

/// Adds what an apply step did to the report; true when something was not done.
fn record<O: Reported>(report: &mut RunReport, ops: &[O], statuses: Vec<OpStatus>) -> bool {
    let mut incomplete = false;
    for (op, status) in ops.iter().zip(statuses) {
        let r = match status {
            OpStatus::Done { note } => {
                let mut r = op.report(OpState::Done, None);
                if let Some(n) = note {
                    r.reason = format!("{}; {n}", r.reason);
                }
                r
            }
            OpStatus::Failed { error } => {
                incomplete = true;
                op.report(OpState::Failed, Some(error))
            }
            OpStatus::NotRun { why } => {
                incomplete = true;
                op.report(OpState::Planned, Some(why))
            }
        };
        report.push_op(r);
    }
    incomplete
}

/// Adds a plan to the report without carrying it out (dry runs and refused runs).
fn record_planned<O: Reported>(report: &mut RunReport, ops: &[O]) {
    for op in ops {
        report.push_op(op.report(OpState::Planned, None));
    }
}

/// What a group plan leaves beside its operations: unchanged, withheld, left alone, deferred.
fn record_group_extras(report: &mut RunReport, plan: &GroupPlan) {
    report.counts.unchanged_groups += plan.unchanged;
    report.withheld.extend(plan.withheld.iter().map(|o| {
        o.report(
            OpState::Planned,
            Some(
                "a group's members were read partially, or the change came after the guard check"
                    .into(),
            ),
        )
    }));
    report.left_alone.extend(
        plan.left_alone
            .iter()
            .map(|o| o.report(OpState::Planned, None)),
    );
    report.deferred.extend(
        plan.deferred
            .iter()
            .map(|(o, why)| o.report(OpState::Planned, Some(why.clone()))),
    );
    if !plan.withheld.is_empty() {
        report.raise(Outcome::Partial);
    }
}

fn log_plan<O: Reported>(ops: &[O]) {
    for o in ops {
        let r = o.report(OpState::Planned, None);
        tracing::info!(op = r.op.as_str(), subject = %r.user_name, okta_id = %r.okta_id, reason = %r.reason, "plan");
    }
}

impl Engine {
    /// One reconcile run. Never panics; every failure is in the report.
    pub async fn run(
        &self,
        opts: &RunOptions,
        cancel: &CancellationToken,
        progress: Option<Progress>,
    ) -> RunReport {
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let span = tracing::info_span!("sync_run", run_id = %run_id);
        let clock = Instant::now();
        let started = Utc::now();
        let (mut report, nothing_written) = RunReport::start(run_id.clone(), opts.dry_run, started);
        report.plan_id = opts.expected.as_ref().map(|p| p.plan_id.clone());
        let inner = self
            .run_inner(opts, cancel, progress, &mut report, nothing_written)
            .instrument(span.clone());
        match opts.retry_budget {
            Some(limit) => crate::retry::with_run_budget(limit, inner).await,
            None => inner.await,
        }
        report.finished_at = Utc::now();
        self.metrics
            .run_finished(report.outcome.as_str(), clock.elapsed().as_secs_f64());
        if report.outcome == Outcome::Ok && !opts.dry_run {
            self.metrics
                .set_last_success(report.finished_at.timestamp_millis() as f64 / 1000.0);
        }
        if self.writable && !opts.dry_run {
            self.record_finished(&mut report).await;
            // The journal is also the audit trail `history` reads: keep `[sync] history_for`
            // of it (the prune never drops a row recovery still needs).
            let cutoff = report.finished_at
                - chrono::Duration::from_std(self.config.sync.history_for)
                    .unwrap_or(chrono::Duration::days(400));
            if let Err(e) = self.store.call(move |s| s.journal_prune(cutoff)).await {
                tracing::warn!(error = %e, "could not prune the journal");
            }
            self.refresh_gauges().await;
        }
        tracing::info!(
            parent: &span,
            outcome = report.outcome.as_str(),
            full = report.full,
            dry_run = report.dry_run,
            create = report.counts.create,
            update = report.counts.update,
            deactivate = report.counts.deactivate,
            reactivate = report.counts.reactivate,
            adopt = report.counts.adopt,
            unchanged = report.counts.unchanged,
            failed = report.counts.failed,
            groups = report.counts.groups,
            withheld = report.withheld.len(),
            deferred = report.deferred.len(),
            seconds = clock.elapsed().as_secs_f64(),
            "run finished"
        );
        report
    }

    /// Records the end of a run (its outcome, counts and errors) in the store. A failure to do
    /// so fails the run: its writes are journalled, but `status` and `history` would not know it.
    async fn record_finished(&self, report: &mut RunReport) {
        let counts = serde_json::to_value(&report.counts).unwrap_or_default();
        let errors = serde_json::to_value(&report.errors).unwrap_or_default();
        let (id, finished, outcome) = (
            report.run_id.clone(),
            report.finished_at,
            report.outcome.as_str(),
        );
        if let Err(e) = self
            .store
            .call(move |s| s.run_finished(&id, finished, outcome, &counts, &errors))
            .await
        {
            tracing::error!(error = %e, run_id = %report.run_id, "could not record the run");
            report.errors.push(e.to_string());
            report.raise(Outcome::Failed);
        }
    }

    /// Updates the gauges that describe the store (managed users, quarantine, unmanaged).
    pub async fn refresh_gauges(&self) {
        let metrics = Arc::clone(&self.metrics);
        let _ = self
            .store
            .call(move |s| {
                let (active, inactive) = s.managed_counts()?;
                metrics.set_managed_users(active, inactive);
                metrics.set_quarantined(s.quarantined(Utc::now())?.len() as i64);
                let unresolved = s.journal_unresolved()?;
                let parked = unresolved.iter().filter(|w| w.parked).count() as i64;
                metrics.set_unresolved_writes(unresolved.len() as i64 - parked, parked);
                metrics.set_unmanaged_members(s.unmanaged()?.len() as i64);
                metrics.set_managed_groups(s.group_snapshot()?.len() as i64);
                Ok(())
            })
            .await;
    }

    fn journal(&self, run_id: &str, plan_id: Option<String>) -> Journal {
        Journal {
            store: self.store.clone(),
            run_id: run_id.to_string(),
            plan_id,
            quarantine: Quarantine {
                after: self.config.sync.quarantine_after,
                for_: self.config.sync.quarantine_for,
            },
        }
    }

    /// The config a saved plan is bound to.
    pub fn target(&self) -> Target {
        Target {
            okta_org_url: self.config.okta.org_url.to_string(),
            app_id: self.config.okta.app_id.clone(),
            scim_url: self.config.postman.scim_url.to_string(),
            state_path: Target::resolve_state_path(&self.config.sync.state_path),
        }
    }

    async fn run_inner(
        &self,
        opts: &RunOptions,
        cancel: &CancellationToken,
        progress: Option<Progress>,
        report: &mut RunReport,
        nothing_written: NothingWritten,
    ) {
        let now = report.started_at;
        // What we know from earlier runs.
        let state = self
            .store
            .call(move |s| {
                Ok((
                    s.last_full_run()?,
                    s.quarantined(now)?,
                    s.missing()?,
                    s.journal_pending()?,
                ))
            })
            .await;
        let (last_full, quarantined, missing_before, pending) = match state {
            Ok(v) => v,
            Err(e) => return report.fail(e.to_string()),
        };
        // A last full run "in the future" (the clock ran ahead and came back) must not stop
        // full runs until the clock catches up.
        let last_full = last_full.filter(|t| *t <= now);
        let full = opts.full || last_full.is_none();
        report.full = full;

        if !opts.dry_run {
            let (id, trigger) = (report.run_id.clone(), opts.trigger.clone());
            if let Err(e) = self
                .store
                .call(move |s| {
                    s.run_started(&id, now, full)?;
                    s.set_run_trigger(&id, &trigger)
                })
                .await
            {
                return report.fail(e.to_string());
            }
        }
        // Interrupted writes first: a create that may have happened must be looked up before
        // the plan could send it again. One that cannot be settled holds only its subject.
        let recovery = if opts.dry_run {
            // A dry run looks nothing up: every open create holds its subject.
            Recovery::unverified(pending)
        } else {
            match cancel
                .run_until_cancelled(journal::recover(&self.scim, &self.store))
                .await
            {
                None => return stopped(report, "resolving interrupted writes"),
                Some(Ok(r)) => r,
                Some(Err(e)) => return report.fail(format!("resolving interrupted writes: {e}")),
            }
        };
        if recovery.adopted > 0 {
            tracing::info!(adopted = recovery.adopted, "resolved interrupted creates");
        }

        // Okta: the desired state.
        let desired = {
            let span = tracing::info_span!("okta.fetch");
            let read = cancel
                .run_until_cancelled(self.okta.read_app_users(&self.mapping).instrument(span))
                .await;
            match read {
                None => return stopped(report, "reading Okta"),
                Some(Ok(read)) => read,
                Some(Err(partial)) => {
                    let msg = match partial.error.hint() {
                        Some(h) => format!("reading Okta app users: {}. {h}", partial.error),
                        None => format!("reading Okta app users: {}", partial.error),
                    };
                    tracing::error!(error = %msg, read = partial.read.users.len(), "Okta read incomplete: no deactivations this run");
                    report.errors.push(msg);
                    if partial.read.users.is_empty() {
                        report.raise(Outcome::Failed);
                        return;
                    }
                    partial.read
                }
            }
        };
        report.skipped_okta_users = desired
            .skipped
            .iter()
            .map(|(id, why)| format!("{id}: {why}"))
            .collect();

        // Postman: every member, on full runs.
        let members: Option<Vec<PostmanUser>> = if full {
            let mut members = Vec::new();
            let listed = cancel
                .run_until_cancelled(
                    self.scim
                        .list_users(|u| members.push(u))
                        .instrument(tracing::info_span!("scim.list")),
                )
                .await;
            match listed {
                None => return stopped(report, "listing Postman members"),
                Some(Ok(_)) => Some(members),
                Some(Err(e)) => {
                    return report.fail(format!("listing Postman members: {}", describe(&e)))
                }
            }
        } else {
            None
        };

        // Groups (issue 4): read before any write, so one guard check covers the whole plan.
        let group_inputs: Option<GroupInputs> = if self.config.groups.enabled {
            let read = groups::read::read(
                &self.okta,
                &self.scim,
                &self.store,
                &self.config.groups.push,
                full,
                report,
            );
            match cancel.run_until_cancelled(read).await {
                None => return stopped(report, "reading groups"),
                Some(g) => g,
            }
        } else {
            None
        };

        // The complete listings settle every create the lookups could not; what they do not
        // settle keeps its subject held.
        let group_listing = group_inputs.as_ref().and_then(|g| g.postman.as_deref());
        let (users_settled, groups_settled) = if opts.dry_run {
            (false, false)
        } else {
            if let Err(e) = journal::settle_from_listing(
                &self.store,
                &recovery.open_creates,
                members.as_deref(),
                group_listing,
            )
            .await
            {
                return report.fail(e.to_string());
            }
            (members.is_some(), group_listing.is_some())
        };
        let mut held = quarantined;
        if !users_settled {
            for (id, why) in recovery.held_users() {
                held.entry(id).or_insert(why);
            }
        }
        let held_groups = if groups_settled {
            BTreeMap::new()
        } else {
            recovery.held_groups()
        };

        let snapshot = match self.store.call(|s| s.snapshot()).await {
            Ok(s) => s,
            Err(e) => return report.fail(e.to_string()),
        };
        let policy = Policy {
            max_deactivations: self.config.sync.max_deactivations,
            allow_deactivations: opts.allow_deactivations,
        };
        let plan = {
            let _span = tracing::info_span!("plan").entered();
            plan(
                &desired,
                &snapshot,
                members.as_deref(),
                &Carried {
                    held,
                    missing_before,
                },
                &policy,
            )
        };
        let group_policy = GroupPolicy {
            delete_removed: self.config.groups.delete_removed,
            deactivation_limit: policy.deactivation_limit(),
            deactivating: plan
                .deactivations()
                .filter_map(|o| match &o.action {
                    Action::Deactivate { scim_id } => Some(scim_id.clone()),
                    _ => None,
                })
                .collect(),
            held: held_groups,
        };
        let group_plan = group_inputs
            .as_ref()
            .map(|g| g.plan(&snapshot, &group_policy));
        // Who a listing that lacks managed users would drop, by name, for the refusal.
        let missing_names: Vec<String> = plan
            .forget
            .iter()
            .chain(&plan.missing)
            .filter_map(|id| snapshot.get(id).map(|m| m.attrs.user_name.clone()))
            .collect();
        // A saved plan's fingerprint and operations: to save (`--save-plan`) or to compare
        // with (`apply`). Computed from exactly what this plan was computed from.
        let this_plan = if opts.save_plan || opts.expected.is_some() {
            match self.store.call(|s| s.journal_max_id()).await {
                Ok(journal_max_id) => {
                    let target = self.target();
                    let inputs = saved::Inputs {
                        okta: &desired,
                        groups_read: group_inputs.as_ref().map(|g| &g.read),
                        journal_max_id,
                        snapshot: &snapshot,
                        group_snapshot: group_inputs.as_ref().map(|g| &g.snapshot),
                        postman_users: members.as_deref(),
                        postman_groups: group_inputs.as_ref().and_then(|g| g.postman.as_deref()),
                        target: &target,
                    };
                    Some(SavedPlan::new(
                        now,
                        &target,
                        full,
                        SavedPolicy {
                            max_deactivations: policy.max_deactivations,
                            allow_deactivations: policy.allow_deactivations,
                        },
                        inputs.fingerprint(),
                        saved::operations(
                            &plan.operations,
                            group_plan.as_ref().map(|g| g.operations.as_slice()),
                        ),
                    ))
                }
                Err(e) => return report.fail(e.to_string()),
            }
        } else {
            None
        };
        drop(snapshot);
        tracing::info!(
            create = plan.count(OpKind::Create),
            update = plan.count(OpKind::Update),
            deactivate = plan.count(OpKind::Deactivate),
            reactivate = plan.count(OpKind::Reactivate),
            adopt = plan.count(OpKind::Adopt),
            unchanged = plan.unchanged,
            withheld = plan.withheld.len(),
            deferred = plan.deferred.len(),
            groups = group_plan.as_ref().map_or(0, |g| g.operations.len()),
            "planned"
        );
        // Explain every change before making it.
        log_plan(&plan.operations);
        if let Some(g) = &group_plan {
            log_plan(&g.operations);
        }
        report.counts.unchanged = plan.unchanged;
        report.withheld = plan
            .withheld
            .iter()
            .map(|o| o.report(OpState::Planned, desired.incomplete_reason.clone()))
            .collect();
        report.deferred = plan
            .deferred
            .iter()
            .map(|(o, why)| o.report(OpState::Planned, Some(why.clone())))
            .collect();
        if full {
            report.unmanaged_members = Some(plan.unmanaged.len());
        }
        if !desired.complete {
            report.raise(Outcome::Partial);
        }

        // The guards, over the whole plan, before the first write: the only place a run can be
        // refused.
        if let Err(msg) = guard::check(&plan, group_plan.as_ref(), &missing_names) {
            tracing::warn!(guard = %msg, "refused by a safety guard");
            report.refuse(&nothing_written, msg);
        }
        // A saved plan (`apply FILE`) is a guard too: the fresh plan must hold exactly its
        // operations, so nothing the reviewer did not see is done (one more deactivation, a
        // rename, a member changed by hand). Checked here, with the others, before any write.
        if let (Some(expected), Some(fresh)) = (&opts.expected, &this_plan) {
            let changed = expected.inputs.changed(&fresh.inputs);
            if !changed.is_empty() {
                tracing::info!(changed = ?changed, plan_id = %expected.plan_id, "inputs moved since the plan was saved");
            }
            if let Some(diff) = saved::compare(&expected.operations, &fresh.operations) {
                let msg = diff.explain(&expected.plan_id);
                tracing::warn!(guard = %msg, "refused: the saved plan moved");
                report.plan_differences = Some(diff);
                if report.outcome != Outcome::Refused {
                    report.refuse(&nothing_written, msg);
                } else if let Some(r) = &mut report.refusal {
                    r.push_str(". Also, ");
                    r.push_str(&msg);
                }
            }
        }
        // A refused run and a dry run report the plan and stop here.
        if report.outcome == Outcome::Refused || opts.dry_run {
            if opts.dry_run && opts.save_plan {
                report.saved_plan = this_plan.map(Box::new);
            }
            record_planned(report, &plan.operations);
            if let Some(g) = &group_plan {
                record_planned(report, &g.operations);
                record_group_extras(report, g);
            }
            return;
        }

        // ---- writes from here on: no refusal is possible after this line ------------------
        nothing_written.spend();
        if full {
            let unmanaged: Vec<UnmanagedRecord> = plan
                .unmanaged
                .iter()
                .map(|u| UnmanagedRecord {
                    scim_id: u.scim_id.to_string(),
                    user_name: u.user_name.clone(),
                    active: u.active,
                })
                .collect();
            let missing: BTreeSet<OktaUserId> = plan.missing.iter().cloned().collect();
            if !missing.is_empty() {
                tracing::warn!(
                    count = missing.len(),
                    "managed members are missing from the full Postman listing: kept, and forgotten only if the next full listing lacks them too"
                );
            }
            if let Err(e) = self
                .store
                .call(move |s| {
                    s.replace_unmanaged(&unmanaged)?;
                    s.set_missing(&missing, Utc::now())
                })
                .await
            {
                return report.fail(e.to_string());
            }
        }

        let journal = self.journal(&report.run_id, report.plan_id.clone());
        let applier = Applier {
            scim: self.scim.clone(),
            journal: journal.clone(),
            metrics: Arc::clone(&self.metrics),
            max_in_flight: self.config.postman.max_in_flight,
            cancel: cancel.clone(),
        };
        if let Some(p) = &progress {
            p.planned(plan.operations.len());
        }
        let on_done = |op: &Operation, status: &OpStatus| {
            if let Some(p) = &progress {
                p.done(op, status);
            }
        };
        let (statuses, fatal) = applier.apply(&plan, &on_done).await;
        if record(report, &plan.operations, statuses) {
            report.raise(Outcome::Partial);
        }
        if let Some(e) = fatal {
            return report.fail(e.to_string());
        }

        // Groups: planned again against the updated user snapshot (users created in this run
        // join their groups now), bounded by the plan the guard checked.
        let (Some(inputs), Some(checked)) = (&group_inputs, &group_plan) else {
            return;
        };
        let users_now = match self.store.call(|s| s.snapshot()).await {
            Ok(u) => u,
            Err(e) => return report.fail(e.to_string()),
        };
        let group_plan = {
            let _span = tracing::info_span!("plan_groups").entered();
            guard::bound_replan(inputs.plan(&users_now, &group_policy), checked)
        };
        drop(users_now);
        log_plan(&group_plan.operations);
        let applier = GroupApplier {
            scim: self.scim.clone(),
            journal,
            metrics: Arc::clone(&self.metrics),
            cancel: cancel.clone(),
        };
        let (statuses, fatal) = applier.apply(&group_plan).await;
        if record(report, &group_plan.operations, statuses) {
            report.raise(Outcome::Partial);
        }
        record_group_extras(report, &group_plan);
        if let Some(e) = fatal {
            report.fail(e.to_string());
        }
    }
}

/// A stop (SIGTERM, SIGINT, the daemon shutting down) arrived during a read: nothing has been
/// written by this step, and nothing is half-done.
fn stopped(report: &mut RunReport, during: &str) {
    tracing::warn!(during, "stopped before the run could finish");
    report.errors.push(format!(
        "stopped while {during}; nothing was changed by this step"
    ));
    report.raise(Outcome::Failed);
}
