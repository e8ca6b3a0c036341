//! Carries out a [`GroupPlan`] against Postman through the one journalled write
//! ([`super::super::journal`]), the same as users: group creates get the same rules for
//! ambiguous answers (look up by displayName before any resend, the entry stays open when the
//! lookup fails, 409 → lookup → adopt). This module only says which request each operation is.
//! It must not compute what to change (that is the pure `groups::plan`) and it never touches
//! users.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::model::{
    ManagedGroup, OktaGroupId, OpKind, PostmanGroup, ScimGroupId, ScimUserId, Subject,
};
use crate::scim::{GroupCreateOutcome, ScimClient, ScimError};
use crate::store::{Adopted, GroupChange, SnapshotChange, StoreError};
use crate::sync::describe;
use crate::sync::journal::{
    link_group, unless_stopped, with_reason, CreateAnswer, Created, Fatal, Journal, Sent, Write,
    STOPPED_MID_WRITE,
};
use crate::sync::outcome::OpStatus;

use super::plan::{GroupAction, GroupOperation, GroupPlan, Member};

/// Executes group plans. Groups are few, so they run one after another (the SCIM client's
/// pacing buckets bound the rate either way); the operations of a group run in plan order and
/// stop at the group's first failure.
pub struct GroupApplier {
    pub scim: ScimClient,
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
}

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
                .journal
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
            self.metrics
                .operation(op.kind().as_str(), status.metric_label());
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
        let okta_id = op.okta_id.clone();
        let write = |payload| Write {
            subject: Subject::Group(op.okta_id.clone()),
            kind: op.kind(),
            label: &op.display_name,
            payload: with_reason(payload, &op.reason),
        };
        async move {
            match &op.action {
                GroupAction::Adopt { scim_id, members } => {
                    let g = ManagedGroup {
                        okta_id,
                        scim_id: scim_id.clone(),
                        display_name: op.display_name.clone(),
                        members: members.clone(),
                    };
                    // No SCIM write, but a change of who manages the group: journalled as a
                    // closed row (with the link) so `history` shows it.
                    let payload =
                        with_reason(json!({"scim_id": scim_id, "members": members}), &op.reason)
                            .to_string();
                    let (run_id, plan_id, subject, label, scim) = (
                        self.journal.run_id.clone(),
                        self.journal.plan_id.clone(),
                        Subject::Group(op.okta_id.clone()),
                        op.display_name.clone(),
                        scim_id.to_string(),
                    );
                    let change = SnapshotChange::Group(GroupChange::Upsert(g));
                    self.journal
                        .store
                        .call(move |s| {
                            s.journal_adopted(
                                &Adopted {
                                    run_id: &run_id,
                                    plan_id: plan_id.as_deref(),
                                    subject: &subject,
                                    kind: OpKind::GroupAdopt,
                                    label: &label,
                                    scim_id: &scim,
                                    payload: &payload,
                                },
                                &[change],
                                Utc::now(),
                            )
                        })
                        .await
                        .map_err(Fatal)?;
                    tracing::info!("adopted existing Postman group");
                    Ok(OpStatus::Done { note: None })
                }
                GroupAction::Create => self.create(op, created).await,
                GroupAction::Rename { scim_id, from, to } => {
                    let payload = json!({"scim_id": scim_id, "from": from, "to": to});
                    self.journal
                        .write(write(payload), || {
                            gone_means_forget(op, async {
                                self.scim.rename_group(scim_id, to).await?;
                                Ok((
                                    vec![GroupChange::Rename {
                                        okta_id: okta_id.clone(),
                                        display_name: to.clone(),
                                    }],
                                    None,
                                ))
                            })
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
                    let payload = json!({"scim_id": scim_id, "members": members});
                    self.journal
                        .write(write(payload), || {
                            gone_means_forget(op, self.add_members(&okta_id, &scim_id, members))
                        })
                        .await
                }
                GroupAction::RemoveMembers { scim_id, members } => {
                    let payload = json!({"scim_id": scim_id, "members": members});
                    self.journal
                        .write(write(payload), || {
                            gone_means_forget(op, async {
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
                        })
                        .await
                }
                GroupAction::Delete { scim_id, .. } => {
                    let payload = json!({"scim_id": scim_id});
                    self.journal
                        .write(write(payload), || {
                            gone_means_forget(op, async {
                                // A 404 counts as success in the client: the group is gone.
                                self.scim.delete_group(scim_id).await?;
                                Ok((vec![GroupChange::Forget(okta_id.clone())], None))
                            })
                        })
                        .await
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Adds members; when Postman refuses a batch with 400 (a member who has not joined the team
    /// yet, docs/postman-scim.md#adding-a-member-who-has-not-joined), adds them one by one and
    /// leaves the refused ones for a later run.
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

    /// `POST /Groups` (without members: they follow in an `AddMembers`) through the journal's
    /// create rules, looking the group up by its exact displayName.
    async fn create(
        &self,
        op: &GroupOperation,
        created: &mut BTreeMap<OktaGroupId, ScimGroupId>,
    ) -> Result<OpStatus, Fatal> {
        let w = Write {
            subject: Subject::Group(op.okta_id.clone()),
            kind: op.kind(),
            label: &op.display_name,
            payload: with_reason(json!({"display_name": op.display_name}), &op.reason),
        };
        let name = op.display_name.as_str();
        let outcome = self
            .journal
            .create(
                w,
                || async {
                    Ok(match self.scim.create_group(name, &[]).await? {
                        GroupCreateOutcome::Created(g) => CreateAnswer::Created(g),
                        GroupCreateOutcome::AlreadyExists { detail } => {
                            CreateAnswer::Conflict { detail }
                        }
                    })
                },
                || self.scim.find_group_by_name(name),
                |g: &PostmanGroup| link_group(&op.okta_id, g),
                |detail| {
                    format!(
                        "Postman refused the create with 409 ({detail}) but lists no group named \
                         {name:?}; check the team's groups in Postman"
                    )
                },
            )
            .await?;
        match outcome {
            Created::Linked { resource, note } => {
                created.insert(op.okta_id.clone(), resource.id.clone());
                Ok(OpStatus::Done { note })
            }
            Created::Failed(error) => Ok(OpStatus::Failed { error }),
        }
    }
}

/// A group write's answer as the journal takes it. A 404 means Postman no longer has the
/// group: the entry closes as failed and the snapshot forgets the group, so the next run
/// creates it again if it is still pushed.
async fn gone_means_forget(
    op: &GroupOperation,
    send: impl std::future::Future<Output = Result<(Vec<GroupChange>, Option<String>), ScimError>>,
) -> Result<Sent, ScimError> {
    match send.await {
        Ok((changes, note)) => Ok(Sent::Done {
            changes: changes.into_iter().map(SnapshotChange::Group).collect(),
            note,
        }),
        Err(e) if e.status() == Some(404) => Ok(Sent::Gone {
            error: format!(
                "{}. Postman no longer has this group; it is forgotten and created again on the next run",
                describe(&e)
            ),
            changes: vec![SnapshotChange::Group(GroupChange::Forget(
                op.okta_id.clone(),
            ))],
        }),
        Err(e) => Err(e),
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
