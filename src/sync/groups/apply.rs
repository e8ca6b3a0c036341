//! The I/O shell of group push (issue 4): reads the Okta groups to push and, on full runs,
//! Postman's groups; carries out a [`GroupPlan`] with the same write-ahead journal as users;
//! and the engine's group step ([`Engine::prepare_groups`], [`Engine::sync_groups`]). Every SCIM
//! group write is journalled as intended before it is sent and confirmed with its snapshot change
//! after. It must not compute what to change (that is the pure `groups` planner) and it never
//! touches users.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{describe, unless_stopped, OpStatus, STOPPED_MID_WRITE};
use crate::engine::{Engine, OpReport, RunReport};
use crate::groups::{
    plan_groups, select_groups, GroupAction, GroupOperation, GroupPlan, GroupPolicy, GroupRead,
    Member,
};
use crate::metrics::Metrics;
use crate::model::{
    DesiredGroup, ManagedGroup, ManagedUser, OktaGroupId, OktaUserId, PostmanGroup, ScimGroupId,
    ScimUserId,
};
use crate::scim::{GroupCreateOutcome, ScimClient, ScimError};
use crate::store::{GroupChange, SnapshotChange, StoreError, StoreHandle};

/// Everything the group planner needs that was read before any write of the run.
pub struct GroupInputs {
    pub read: GroupRead,
    pub snapshot: BTreeMap<OktaGroupId, ManagedGroup>,
    /// Every Postman group, on full runs.
    pub postman: Option<Vec<PostmanGroup>>,
}

impl GroupInputs {
    pub fn plan(
        &self,
        users: &BTreeMap<OktaUserId, ManagedUser>,
        policy: &GroupPolicy,
    ) -> GroupPlan {
        plan_groups(
            &self.read,
            &self.snapshot,
            self.postman.as_deref(),
            users,
            policy,
        )
    }
}

/// Executes group plans. Groups are few, so they run one after another (the SCIM client's
/// pacing buckets bound the rate either way); the operations of a group run in plan order and
/// stop at the group's first failure.
pub struct GroupApplier {
    pub scim: ScimClient,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    pub run_id: String,
    pub cancel: CancellationToken,
}

/// Raised when the store cannot record what happened: the run stops.
struct Fatal(StoreError);

impl GroupApplier {
    /// Carries out `plan`; returns one status per `plan.operations` entry, in order, plus the
    /// store error that stopped the run, if any.
    pub async fn apply(&self, plan: &GroupPlan) -> (Vec<OpStatus>, Option<StoreError>) {
        let mut statuses = Vec::with_capacity(plan.operations.len());
        let mut changes: Vec<SnapshotChange> = plan
            .forget
            .iter()
            .map(|id| SnapshotChange::Group(GroupChange::Forget(id.clone())))
            .collect();
        changes.extend(plan.resync.iter().map(|(id, members)| {
            SnapshotChange::Group(GroupChange::SetMembers {
                okta_id: id.clone(),
                members: members.clone(),
            })
        }));
        if !changes.is_empty() {
            if let Err(e) = self
                .store
                .call(move |s| s.apply_changes(&changes, Utc::now()))
                .await
            {
                return (statuses, Some(e));
            }
        }
        // Postman ids of groups created in this run, for the operations that follow them.
        let mut created: BTreeMap<OktaGroupId, ScimGroupId> = BTreeMap::new();
        let mut failed: BTreeSet<OktaGroupId> = BTreeSet::new();
        let mut fatal = None;
        for op in &plan.operations {
            let status = if fatal.is_some() || self.cancel.is_cancelled() {
                OpStatus::NotRun {
                    why: "the run was stopped before this operation".into(),
                }
            } else if failed.contains(&op.okta_id) {
                OpStatus::NotRun {
                    why: "an earlier operation for this group failed".into(),
                }
            } else {
                match unless_stopped(&self.cancel, self.execute(op, &mut created)).await {
                    None => OpStatus::NotRun {
                        why: STOPPED_MID_WRITE.into(),
                    },
                    Some(Ok(s)) => s,
                    Some(Err(Fatal(e))) => {
                        let msg = e.to_string();
                        fatal = Some(e);
                        OpStatus::Failed {
                            error: format!("could not record the outcome: {msg}"),
                        }
                    }
                }
            };
            if matches!(status, OpStatus::Failed { .. }) {
                failed.insert(op.okta_id.clone());
            }
            let result = match &status {
                OpStatus::Done { .. } => "done",
                OpStatus::Failed { .. } => "failed",
                OpStatus::NotRun { .. } => "not_run",
            };
            self.metrics.operation(op.kind().as_str(), result);
            statuses.push(status);
        }
        (statuses, fatal)
    }

    async fn execute(
        &self,
        op: &GroupOperation,
        created: &mut BTreeMap<OktaGroupId, ScimGroupId>,
    ) -> Result<OpStatus, Fatal> {
        let span = tracing::info_span!("apply", op = op.kind().as_str(), group = %op.display_name);
        async move {
            let okta_id = op.okta_id.clone();
            match &op.action {
                GroupAction::Adopt { scim_id, members } => {
                    let g = ManagedGroup {
                        okta_id,
                        scim_id: scim_id.clone(),
                        display_name: op.display_name.clone(),
                        members: members.clone(),
                    };
                    let change = SnapshotChange::Group(GroupChange::Upsert(g));
                    self.store
                        .call(move |s| s.apply_changes(&[change], Utc::now()))
                        .await
                        .map_err(Fatal)?;
                    tracing::info!("adopted existing Postman group");
                    Ok(OpStatus::Done { note: None })
                }
                GroupAction::Create => self.create(op, created).await,
                GroupAction::Rename { scim_id, from, to } => {
                    let payload = serde_json::json!({"scim_id": scim_id, "from": from, "to": to});
                    self.journalled(op, payload, || async {
                        self.scim.rename_group(scim_id, to).await?;
                        Ok((
                            vec![GroupChange::Rename {
                                okta_id: okta_id.clone(),
                                display_name: to.clone(),
                            }],
                            None,
                        ))
                    })
                    .await
                }
                GroupAction::AddMembers { scim_id, members } => {
                    let Some(scim_id) = scim_id.clone().or_else(|| created.get(&okta_id).cloned())
                    else {
                        return Ok(OpStatus::NotRun {
                            why: "the group was not created".into(),
                        });
                    };
                    let payload = serde_json::json!({"scim_id": scim_id, "members": members});
                    self.journalled(op, payload, || {
                        self.add_members(&okta_id, &scim_id, members)
                    })
                    .await
                }
                GroupAction::RemoveMembers { scim_id, members } => {
                    let payload = serde_json::json!({"scim_id": scim_id, "members": members});
                    self.journalled(op, payload, || async {
                        let ids = ids(members);
                        self.scim.remove_group_members(scim_id, &ids).await?;
                        Ok((
                            vec![GroupChange::RemoveMembers {
                                okta_id: okta_id.clone(),
                                members: ids,
                            }],
                            None,
                        ))
                    })
                    .await
                }
                GroupAction::Delete { scim_id, .. } => {
                    let payload = serde_json::json!({"scim_id": scim_id});
                    self.journalled(op, payload, || async {
                        // A 404 counts as success in the client: the group is already gone.
                        self.scim.delete_group(scim_id).await?;
                        Ok((vec![GroupChange::Forget(okta_id.clone())], None))
                    })
                    .await
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Adds members; when Postman refuses a batch with 400 (a member who has not joined the team
    /// yet, postman-scim.md A4.3), adds them one by one and leaves the refused ones for a later run.
    async fn add_members(
        &self,
        okta_id: &OktaGroupId,
        scim_id: &ScimGroupId,
        members: &[Member],
    ) -> Result<(Vec<GroupChange>, Option<String>), ScimError> {
        let all = ids(members);
        match self.scim.add_group_members(scim_id, &all).await {
            Ok(()) => {
                return Ok((
                    vec![GroupChange::AddMembers {
                        okta_id: okta_id.clone(),
                        members: all,
                    }],
                    None,
                ))
            }
            Err(e) if e.status() == Some(400) && members.len() > 1 => {
                tracing::info!(error = %e, "a batch was refused; adding members one by one");
            }
            Err(e) if e.status() == Some(400) => {
                return Ok((Vec::new(), Some(not_joined(members, &e))));
            }
            Err(e) => return Err(e),
        }
        let mut added = Vec::new();
        let mut refused: Vec<Member> = Vec::new();
        let mut last: Option<ScimError> = None;
        for m in members {
            match self
                .scim
                .add_group_members(scim_id, std::slice::from_ref(&m.scim_id))
                .await
            {
                Ok(()) => added.push(m.scim_id.clone()),
                Err(e) if e.status() == Some(400) => {
                    refused.push(m.clone());
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let note = last.map(|e| not_joined(&refused, &e));
        Ok((
            vec![GroupChange::AddMembers {
                okta_id: okta_id.clone(),
                members: added,
            }],
            note,
        ))
    }

    /// `POST /Groups`, made safe like user creation: a 409, or a failure whose outcome is
    /// unknown, leads to a lookup by displayName and the existing group is adopted.
    async fn create(
        &self,
        op: &GroupOperation,
        created: &mut BTreeMap<OktaGroupId, ScimGroupId>,
    ) -> Result<OpStatus, Fatal> {
        let jid = self
            .intend(op, serde_json::json!({"display_name": op.display_name}))
            .await?;
        let (group, note) = match self.scim.create_group(&op.display_name, &[]).await {
            Ok(GroupCreateOutcome::Created(g)) => (g, None),
            Ok(GroupCreateOutcome::AlreadyExists { detail }) => {
                match self.scim.find_group_by_name(&op.display_name).await {
                    Ok(Some(g)) => (
                        g,
                        Some("Postman already had a group with this name (409); adopted it"),
                    ),
                    Ok(None) => {
                        let error = format!(
                            "Postman refused the create with 409 ({detail}) but lists no group named {:?}; \
                             check the team's groups in Postman",
                            op.display_name
                        );
                        return self.fail(jid, error, Vec::new()).await;
                    }
                    Err(e) => return self.fail(jid, describe(&e), Vec::new()).await,
                }
            }
            Err(e) if e.is_ambiguous() => {
                match self.scim.find_group_by_name(&op.display_name).await {
                    Ok(Some(g)) => (
                        g,
                        Some("the create's outcome was unknown; found the group and adopted it"),
                    ),
                    // Not re-sent blindly: the next run plans the create again.
                    _ => return self.fail(jid, describe(&e), Vec::new()).await,
                }
            }
            Err(e) => return self.fail(jid, describe(&e), Vec::new()).await,
        };
        created.insert(op.okta_id.clone(), group.id.clone());
        let m = ManagedGroup {
            okta_id: op.okta_id.clone(),
            scim_id: group.id.clone(),
            display_name: group.display_name.clone(),
            members: group.members.clone(),
        };
        self.store
            .call(move |s| {
                s.journal_done(
                    jid,
                    None,
                    &[SnapshotChange::Group(GroupChange::Upsert(m))],
                    Utc::now(),
                )
            })
            .await
            .map_err(Fatal)?;
        tracing::info!(scim_id = %group.id, "group created");
        Ok(OpStatus::Done {
            note: note.map(str::to_string),
        })
    }

    /// Journals a write, runs it, and records the outcome. A 404 means Postman no longer has
    /// the group: the snapshot forgets it, and the next run creates it again if still pushed.
    async fn journalled<F, Fut>(
        &self,
        op: &GroupOperation,
        payload: serde_json::Value,
        send: F,
    ) -> Result<OpStatus, Fatal>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<GroupChange>, Option<String>), ScimError>>,
    {
        let jid = self.intend(op, payload).await?;
        match send().await {
            Ok((changes, note)) => {
                let changes: Vec<SnapshotChange> =
                    changes.into_iter().map(SnapshotChange::Group).collect();
                self.store
                    .call(move |s| s.journal_done(jid, None, &changes, Utc::now()))
                    .await
                    .map_err(Fatal)?;
                tracing::info!("done");
                Ok(OpStatus::Done { note })
            }
            Err(e) if e.status() == Some(404) => {
                let error = format!(
                    "{}. Postman no longer has this group; it is forgotten and created again on the next run",
                    describe(&e)
                );
                let forget = vec![SnapshotChange::Group(GroupChange::Forget(
                    op.okta_id.clone(),
                ))];
                self.fail(jid, error, forget).await
            }
            Err(e) => self.fail(jid, describe(&e), Vec::new()).await,
        }
    }

    async fn intend(&self, op: &GroupOperation, payload: serde_json::Value) -> Result<i64, Fatal> {
        let (run_id, okta_id, name, kind) = (
            self.run_id.clone(),
            op.okta_id.clone(),
            op.display_name.clone(),
            op.kind().as_str(),
        );
        self.store
            .call(move |s| {
                s.journal_intend_group(
                    &run_id,
                    &okta_id,
                    kind,
                    &name,
                    &payload.to_string(),
                    Utc::now(),
                )
            })
            .await
            .map_err(Fatal)
    }

    async fn fail(
        &self,
        jid: i64,
        error: String,
        changes: Vec<SnapshotChange>,
    ) -> Result<OpStatus, Fatal> {
        tracing::warn!(error = %error, "group operation failed");
        let e = error.clone();
        self.store
            .call(move |s| s.journal_failed_group(jid, &e, &changes, Utc::now()))
            .await
            .map_err(Fatal)?;
        Ok(OpStatus::Failed { error })
    }
}

fn ids(members: &[Member]) -> Vec<ScimUserId> {
    members.iter().map(|m| m.scim_id.clone()).collect()
}

fn not_joined(refused: &[Member], e: &ScimError) -> String {
    let who: Vec<&str> = refused.iter().map(|m| m.user_name.as_str()).collect();
    format!(
        "Postman refused {} ({}): most likely they have not accepted their invite yet; they are \
         added on a later run once they have joined",
        who.join(", "),
        describe(e)
    )
}

fn report_op(op: &GroupOperation, status: &'static str, error: Option<String>) -> OpReport {
    OpReport {
        op: op.kind().as_str(),
        user_name: op.display_name.clone(),
        okta_id: op.okta_id.to_string(),
        status,
        error,
        reason: op.reason.clone(),
    }
}

impl Engine {
    /// Reads what the group plan needs before any write of the run: the Okta groups to push with
    /// their members, the group snapshot, and Postman's groups on full runs. `None` when group
    /// push cannot run this time (the error is in the report and the outcome is at best partial).
    pub(crate) async fn prepare_groups(
        &self,
        full: bool,
        report: &mut RunReport,
    ) -> Option<GroupInputs> {
        let span = tracing::info_span!("okta.groups");
        let assigned = match self.okta.list_app_groups().instrument(span.clone()).await {
            Ok(g) => g,
            Err(e) => {
                let msg = match e.hint() {
                    Some(h) => format!("reading the Okta groups assigned to the app: {e}. {h}"),
                    None => format!("reading the Okta groups assigned to the app: {e}"),
                };
                group_problem(report, msg);
                return None;
            }
        };
        let (picked, unresolved) = select_groups(&assigned, &self.config.groups.push);
        for p in &unresolved {
            report.errors.push(format!(
                "[groups] push names {p:?}, which is not a group assigned to the Postman app in Okta. \
                 Assign the group to the app, or correct the entry (ids are safer than names)"
            ));
        }
        let mut read = GroupRead {
            unresolved,
            ..GroupRead::default()
        };
        for (id, name) in picked {
            let (members, complete) = match self
                .okta
                .list_group_members(&id)
                .instrument(span.clone())
                .await
            {
                Ok(m) => (m, true),
                Err(e) => {
                    group_problem(
                        report,
                        format!(
                            "reading the members of Okta group {name} ({id}): {e}. No group member \
                             removals and no group deletions this run"
                        ),
                    );
                    (BTreeSet::new(), false)
                }
            };
            read.groups.insert(
                id.clone(),
                DesiredGroup {
                    okta_id: id,
                    display_name: name,
                    members,
                    members_complete: complete,
                },
            );
        }
        let postman = if full {
            let mut groups = Vec::new();
            let listed = self
                .scim
                .list_groups(|g| groups.push(g))
                .instrument(tracing::info_span!("scim.list_groups"))
                .await;
            match listed {
                Ok(_) => Some(groups),
                Err(e) => {
                    group_problem(report, format!("listing Postman groups: {}", describe(&e)));
                    return None;
                }
            }
        } else {
            None
        };
        match self.store.call(|s| s.group_snapshot()).await {
            Ok(snapshot) => Some(GroupInputs {
                read,
                snapshot,
                postman,
            }),
            Err(e) => {
                group_problem(report, e.to_string());
                None
            }
        }
    }

    /// Adds a group plan to a report without carrying it out (dry runs and refused runs).
    pub(crate) fn report_planned_groups(&self, plan: &GroupPlan, report: &mut RunReport) {
        report.operations.extend(
            plan.operations
                .iter()
                .map(|o| report_op(o, "planned", None)),
        );
        report.counts.groups += plan.operations.len();
        self.report_group_extras(plan, report);
    }

    fn report_group_extras(&self, plan: &GroupPlan, report: &mut RunReport) {
        report.counts.unchanged_groups += plan.unchanged;
        report.withheld.extend(plan.withheld.iter().map(|o| {
            report_op(
                o,
                "planned",
                Some("a group's members were read partially".into()),
            )
        }));
        report.left_alone.extend(
            plan.left_alone
                .iter()
                .map(|o| report_op(o, "planned", None)),
        );
        if !plan.withheld.is_empty() && report.outcome == crate::engine::Outcome::Ok {
            report.outcome = crate::engine::Outcome::Partial;
        }
    }

    /// The group step after the user apply: plans again against the updated user snapshot (so
    /// users created in this run join their groups in this run), then carries the plan out.
    pub(crate) async fn sync_groups(
        &self,
        inputs: &GroupInputs,
        policy: &GroupPolicy,
        cancel: &CancellationToken,
        report: &mut RunReport,
    ) -> Option<StoreError> {
        let users = match self.store.call(|s| s.snapshot()).await {
            Ok(u) => u,
            Err(e) => return Some(e),
        };
        let plan = {
            let _span = tracing::info_span!("plan_groups").entered();
            inputs.plan(&users, policy)
        };
        if let Some(refusal) = &plan.refusal {
            // The pre-apply plan passed the guard; a different answer now is not acted on.
            report.refusal = Some(refusal.explain());
            report.outcome = crate::engine::Outcome::Refused;
            self.report_planned_groups(&plan, report);
            return None;
        }
        for op in &plan.operations {
            tracing::info!(op = op.kind().as_str(), group = %op.display_name, okta_id = %op.okta_id, reason = %op.reason, "plan");
        }
        let applier = GroupApplier {
            scim: self.scim.clone(),
            store: self.store.clone(),
            metrics: Arc::clone(&self.metrics),
            run_id: report.run_id.clone(),
            cancel: cancel.clone(),
        };
        let (statuses, fatal) = applier.apply(&plan).await;
        let mut incomplete = false;
        for (op, status) in plan.operations.iter().zip(statuses) {
            let r = match status {
                OpStatus::Done { note } => {
                    report.counts.groups += 1;
                    let mut r = report_op(op, "done", None);
                    if let Some(n) = note {
                        r.reason = format!("{}; {n}", r.reason);
                    }
                    r
                }
                OpStatus::Failed { error } => {
                    report.counts.failed += 1;
                    report.errors.push(format!(
                        "{} {}: {error}",
                        op.kind().as_str(),
                        op.display_name
                    ));
                    incomplete = true;
                    report_op(op, "failed", Some(error))
                }
                OpStatus::NotRun { why } => {
                    incomplete = true;
                    report_op(op, "planned", Some(why))
                }
            };
            report.operations.push(r);
        }
        self.report_group_extras(&plan, report);
        if incomplete && report.outcome == crate::engine::Outcome::Ok {
            report.outcome = crate::engine::Outcome::Partial;
        }
        fatal
    }
}

fn group_problem(report: &mut RunReport, msg: String) {
    tracing::error!(error = %msg, "group push incomplete");
    report.errors.push(msg);
    if report.outcome == crate::engine::Outcome::Ok {
        report.outcome = crate::engine::Outcome::Partial;
    }
}
