//! One reconcile run, end to end: resolve interrupted writes, read Okta, read Postman (full runs),
//! plan, check the guards, apply, record. This is the I/O shell around the pure planner; the
//! one-shot `reconcile`, the daemon and the demo all call [`Engine::run`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{describe, recover, settle_from_listing, Applier, OpStatus, Recovery};
use crate::config::Config;
use crate::groups::GroupPolicy;
use crate::metrics::Metrics;
use crate::model::{OktaUserId, PostmanUser};
use crate::okta::{AttributeMapping, OktaClient};
use crate::plan::{plan, Action, Carried, OpKind, Operation, Plan, Policy, Refusal};
use crate::scim::ScimClient;
use crate::store::{StoreHandle, UnmanagedRecord};

/// What the caller asks of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Compute and report the plan; change nothing anywhere.
    pub dry_run: bool,
    /// Re-read every Postman member and repair drift (the first run is always full).
    pub full: bool,
    /// `--allow-deactivations N`.
    pub allow_deactivations: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

    /// The documented exit code: 0 converged, 1 failed or partial, 3 refused by a guard.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Partial | Outcome::Failed => 1,
            Outcome::Refused => 3,
        }
    }
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OpReport {
    pub op: &'static str,
    pub user_name: String,
    pub okta_id: String,
    /// `planned`, `done` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub reason: String,
}

impl OpReport {
    fn new(op: &Operation, status: &'static str, error: Option<String>) -> Self {
        OpReport {
            op: op.kind().as_str(),
            user_name: op.user_name.clone(),
            okta_id: op.okta_id.to_string(),
            status,
            error,
            reason: op.reason.clone(),
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
}

impl RunReport {
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
        }
    }

    /// Number of SCIM writes the run made or would make.
    pub fn writes(&self) -> usize {
        self.operations
            .iter()
            .filter(|o| o.op != "adopt" && o.op != "group_adopt")
            .count()
    }
}

/// Called after each operation is carried out (progress display).
pub type Progress = Arc<dyn Fn(&Operation, &OpStatus) + Send + Sync>;

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
        let mut report = RunReport::new(run_id.clone(), opts.dry_run, started);
        self.run_inner(opts, cancel, progress, &mut report)
            .instrument(span.clone())
            .await;
        report.finished_at = Utc::now();
        self.metrics
            .run_finished(report.outcome.as_str(), clock.elapsed().as_secs_f64());
        if report.outcome == Outcome::Ok && !opts.dry_run {
            self.metrics
                .set_last_success(report.finished_at.timestamp_millis() as f64 / 1000.0);
        }
        if self.writable && !opts.dry_run {
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
                tracing::error!(error = %e, "could not record the run");
                report.errors.push(e.to_string());
                report.outcome = Outcome::Failed;
            }
            // The journal is a write-ahead log, not an audit trail: keep 30 days of it.
            let cutoff = report.finished_at - chrono::Duration::days(30);
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
            withheld = report.withheld.len(),
            deferred = report.deferred.len(),
            seconds = clock.elapsed().as_secs_f64(),
            "run finished"
        );
        report
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

    async fn run_inner(
        &self,
        opts: &RunOptions,
        cancel: &CancellationToken,
        progress: Option<Progress>,
        report: &mut RunReport,
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
            Err(e) => return fail(report, e.to_string()),
        };
        // A last full run "in the future" (the clock ran ahead and came back) must not stop
        // full runs until the clock catches up.
        let last_full = last_full.filter(|t| *t <= now);
        let full = opts.full || last_full.is_none();
        report.full = full;

        if !opts.dry_run {
            let (id, store) = (report.run_id.clone(), self.store.clone());
            if let Err(e) = store.call(move |s| s.run_started(&id, now, full)).await {
                return fail(report, e.to_string());
            }
        }
        // Interrupted writes first: a create that may have happened must be looked up before
        // the plan could send it again. One that cannot be settled holds only its own user.
        let recovery = if opts.dry_run {
            // A dry run looks nothing up: every open create holds its user.
            Recovery {
                adopted: 0,
                open_creates: pending.into_iter().filter(|p| p.op == "create").collect(),
            }
        } else {
            match cancel
                .run_until_cancelled(recover(&self.scim, &self.store))
                .await
            {
                None => return stopped(report, "resolving interrupted writes"),
                Some(Ok(r)) => r,
                Some(Err(e)) => return fail(report, format!("{e}")),
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
                        report.outcome = Outcome::Failed;
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
                    return fail(report, format!("listing Postman members: {}", describe(&e)))
                }
            }
        } else {
            None
        };
        let mut held = quarantined;
        match (&members, opts.dry_run) {
            // The complete listing settles every create the lookups could not.
            (Some(members), false) => {
                if let Err(e) =
                    settle_from_listing(&self.store, recovery.open_creates, members).await
                {
                    return fail(report, e.to_string());
                }
            }
            _ => {
                for (id, why) in recovery.held() {
                    held.entry(id).or_insert(why);
                }
            }
        }

        let snapshot = match self.store.call(|s| s.snapshot()).await {
            Ok(s) => s,
            Err(e) => return fail(report, e.to_string()),
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
        // Groups (issue 4): read and planned before any write, so one guard covers both.
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
        };
        let groups = if self.config.groups.enabled {
            match cancel
                .run_until_cancelled(self.prepare_groups(full, report))
                .await
            {
                None => return stopped(report, "reading groups"),
                Some(g) => g,
            }
        } else {
            None
        };
        let group_plan = groups.as_ref().map(|g| g.plan(&snapshot, &group_policy));
        // Who a listing that lacks managed users would drop, by name, for the refusal.
        let missing_names: Vec<String> = plan
            .forget
            .iter()
            .chain(&plan.missing)
            .filter_map(|id| snapshot.get(id).map(|m| m.attrs.user_name.clone()))
            .collect();
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
            "planned"
        );
        // Explain every change before making it.
        for op in &plan.operations {
            tracing::info!(op = op.kind().as_str(), user = %op.user_name, okta_id = %op.okta_id, reason = %op.reason, "plan");
        }
        report.counts.unchanged = plan.unchanged;
        report.withheld = plan
            .withheld
            .iter()
            .map(|o| OpReport::new(o, "planned", desired.incomplete_reason.clone()))
            .collect();
        report.deferred = plan
            .deferred
            .iter()
            .map(|(o, why)| OpReport::new(o, "planned", Some(why.clone())))
            .collect();
        if full {
            report.unmanaged_members = Some(plan.unmanaged.len());
        }
        if !desired.complete {
            report.outcome = Outcome::Partial;
        }

        let group_refusal = group_plan.as_ref().and_then(|g| g.refusal.as_ref());
        if let Some(refusal) = plan.refusal.as_ref().or(group_refusal) {
            let mut who: Vec<String> = match refusal {
                Refusal::ManagedMissingFromPostman { .. } => missing_names.clone(),
                _ => plan.deactivations().map(|o| o.user_name.clone()).collect(),
            };
            if let Some(g) = &group_plan {
                who.extend(
                    g.losses()
                        .map(|m| format!("{} (group deletion)", m.user_name)),
                );
            }
            let label = match refusal {
                Refusal::ManagedMissingFromPostman { .. } => "Missing from the listing",
                _ => "Would deactivate",
            };
            let msg = if who.is_empty() {
                refusal.explain()
            } else {
                format!("{}. {label}: {}", refusal.explain(), who.join(", "))
            };
            tracing::warn!(guard = %msg, "refused by a safety guard");
            report.refusal = Some(msg);
            report.outcome = Outcome::Refused;
        }
        // A refused run and a dry run report the plan and stop here.
        if report.outcome == Outcome::Refused || opts.dry_run {
            report.operations = plan
                .operations
                .iter()
                .map(|o| OpReport::new(o, "planned", None))
                .collect();
            count_planned(report, &plan);
            if let Some(g) = &group_plan {
                self.report_planned_groups(g, report);
            }
            return;
        }

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
                return fail(report, e.to_string());
            }
        }

        let applier = Applier {
            scim: self.scim.clone(),
            store: self.store.clone(),
            metrics: Arc::clone(&self.metrics),
            run_id: report.run_id.clone(),
            max_in_flight: self.config.postman.max_in_flight,
            quarantine_after: self.config.sync.quarantine_after,
            quarantine_for: self.config.sync.quarantine_for,
            cancel: cancel.clone(),
        };
        let noop: Progress = Arc::new(|_: &Operation, _: &OpStatus| {});
        let progress = progress.unwrap_or(noop);
        let (statuses, fatal) = applier.apply(&plan, &*progress).await;
        let mut stopped = false;
        for (op, status) in plan.operations.iter().zip(statuses) {
            let r = match status {
                OpStatus::Done { note } => {
                    bump(&mut report.counts, op.kind());
                    let mut r = OpReport::new(op, "done", None);
                    if let Some(n) = note {
                        r.reason = format!("{}; {n}", r.reason);
                    }
                    r
                }
                OpStatus::Failed { error } => {
                    report.counts.failed += 1;
                    report
                        .errors
                        .push(format!("{} {}: {error}", op.kind().as_str(), op.user_name));
                    OpReport::new(op, "failed", Some(error))
                }
                OpStatus::NotRun { why } => {
                    stopped = true;
                    OpReport::new(op, "planned", Some(why))
                }
            };
            report.operations.push(r);
        }
        if let Some(e) = fatal {
            report.errors.push(e.to_string());
            report.outcome = Outcome::Failed;
            return;
        } else if report.counts.failed > 0 || stopped {
            report.outcome = Outcome::Partial;
        }
        if let Some(inputs) = &groups {
            if let Some(e) = self
                .sync_groups(inputs, &group_policy, cancel, report)
                .await
            {
                report.errors.push(e.to_string());
                report.outcome = Outcome::Failed;
            }
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
    report.outcome = Outcome::Failed;
}

fn fail(report: &mut RunReport, msg: String) {
    tracing::error!(error = %msg, "run failed");
    report.errors.push(msg);
    report.outcome = Outcome::Failed;
}

fn bump(c: &mut Counts, kind: OpKind) {
    match kind {
        OpKind::Create => c.create += 1,
        OpKind::Update => c.update += 1,
        OpKind::Deactivate => c.deactivate += 1,
        OpKind::Reactivate => c.reactivate += 1,
        OpKind::Adopt => c.adopt += 1,
    }
}

fn count_planned(report: &mut RunReport, plan: &Plan) {
    for op in &plan.operations {
        bump(&mut report.counts, op.kind());
    }
}
