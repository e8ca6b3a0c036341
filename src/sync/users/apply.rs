//! Carries out a user [`Plan`] against Postman: one task per user (a user's operations run in
//! order), up to `max_in_flight` users at once, all behind the SCIM client's shared pacing
//! buckets. Every SCIM write goes through the one journalled write ([`super::super::journal`]);
//! this module only says which request each operation is. A failed user never stops the
//! others. Cancellation is checked between operations; a write on the wire gets
//! [`WRITE_GRACE`](super::super::journal::WRITE_GRACE) to finish.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use futures::stream::{self, StreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::model::{ManagedUser, OktaUserId, OpKind, PostmanUser, Subject, UserAttrs};
use crate::scim::{CreateOutcome, ScimClient};
use crate::store::{Adopted, SnapshotChange, StoreError};
use crate::sync::journal::{
    link_user, unless_stopped, with_reason, CreateAnswer, Created, Fatal, Journal, Sent, Write,
    STOPPED_MID_WRITE,
};
use crate::sync::outcome::OpStatus;

use super::plan::{Action, Operation, Plan};

/// What the user step needs to carry out a plan.
pub struct Applier {
    pub scim: ScimClient,
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub max_in_flight: usize,
    pub cancel: CancellationToken,
}

impl Applier {
    /// Carries out `plan`; returns one status per `plan.operations` entry, in order, plus the
    /// store error that stopped the run, if any. `on_progress` is called after each operation.
    pub async fn apply(
        &self,
        plan: &Plan,
        on_progress: &(dyn Fn(&Operation, &OpStatus) + Sync),
    ) -> (Vec<OpStatus>, Option<StoreError>) {
        let mut statuses = vec![
            OpStatus::NotRun {
                why: "not started".into()
            };
            plan.operations.len()
        ];
        if !plan.forget.is_empty() || !plan.refresh.is_empty() {
            let changes: Vec<_> = plan
                .forget
                .iter()
                .cloned()
                .map(SnapshotChange::Forget)
                .chain(plan.refresh.iter().cloned().map(SnapshotChange::Upsert))
                .collect();
            if let Err(e) = self
                .journal
                .store
                .call(move |s| s.apply_changes(&changes, Utc::now()))
                .await
            {
                return (statuses, Some(e));
            }
        }

        // Group by user, keeping the plan's order inside each user.
        let mut per_user: BTreeMap<&OktaUserId, Vec<usize>> = BTreeMap::new();
        for (i, op) in plan.operations.iter().enumerate() {
            per_user.entry(&op.okta_id).or_default().push(i);
        }
        let stop = self.cancel.child_token();
        let fatal: Mutex<Option<StoreError>> = Mutex::new(None);
        let results: Vec<Vec<(usize, OpStatus)>> = stream::iter(per_user.into_values())
            .map(|indices| {
                let stop = &stop;
                let fatal = &fatal;
                async move {
                    let mut out = Vec::with_capacity(indices.len());
                    let mut failed = false;
                    for i in indices {
                        let op = &plan.operations[i];
                        let status = if stop.is_cancelled() {
                            OpStatus::NotRun {
                                why: "the run was stopped before this operation".into(),
                            }
                        } else if failed {
                            OpStatus::NotRun {
                                why: "an earlier operation for this user failed".into(),
                            }
                        } else {
                            match unless_stopped(stop, self.execute(op)).await {
                                None => OpStatus::NotRun {
                                    why: STOPPED_MID_WRITE.into(),
                                },
                                Some(Ok(s)) => s,
                                Some(Err(Fatal(e))) => {
                                    let msg = e.to_string();
                                    let mut f = fatal.lock().unwrap_or_else(|p| p.into_inner());
                                    f.get_or_insert(e);
                                    stop.cancel();
                                    OpStatus::Failed {
                                        error: format!("could not record the outcome: {msg}"),
                                    }
                                }
                            }
                        };
                        if matches!(status, OpStatus::Failed { .. }) {
                            failed = true;
                        }
                        self.metrics
                            .operation(op.kind().as_str(), status.metric_label());
                        on_progress(op, &status);
                        out.push((i, status));
                    }
                    out
                }
            })
            .buffer_unordered(self.max_in_flight.max(1))
            .collect()
            .await;
        for (i, s) in results.into_iter().flatten() {
            statuses[i] = s;
        }
        let fatal = fatal.into_inner().unwrap_or_else(|p| p.into_inner());
        (statuses, fatal)
    }

    async fn execute(&self, op: &Operation) -> Result<OpStatus, Fatal> {
        let span = tracing::info_span!("apply", op = op.kind().as_str(), user = %op.user_name);
        self.execute_inner(op).instrument(span).await
    }

    async fn execute_inner(&self, op: &Operation) -> Result<OpStatus, Fatal> {
        let subject = Subject::User(op.okta_id.clone());
        let write = |payload| Write {
            subject: subject.clone(),
            kind: op.kind(),
            label: &op.user_name,
            payload: with_reason(payload, &op.reason),
        };
        match &op.action {
            Action::Adopt {
                scim_id,
                attrs,
                active,
            } => {
                let m = ManagedUser {
                    okta_id: op.okta_id.clone(),
                    scim_id: scim_id.clone(),
                    attrs: attrs.clone(),
                    active: *active,
                };
                // No SCIM write, but from now on we manage this account: journalled as a
                // closed row together with the link, so `history` shows when and why.
                let payload = with_reason(
                    json!({"scim_id": scim_id, "attrs": attrs, "active": active}),
                    &op.reason,
                )
                .to_string();
                let (run_id, plan_id, label, scim) = (
                    self.journal.run_id.clone(),
                    self.journal.plan_id.clone(),
                    op.user_name.clone(),
                    scim_id.to_string(),
                );
                self.journal
                    .store
                    .call(move |s| {
                        s.journal_adopted(
                            &Adopted {
                                run_id: &run_id,
                                plan_id: plan_id.as_deref(),
                                subject: &subject,
                                kind: OpKind::Adopt,
                                label: &label,
                                scim_id: &scim,
                                payload: &payload,
                            },
                            &[SnapshotChange::Upsert(m)],
                            Utc::now(),
                        )
                    })
                    .await
                    .map_err(Fatal)?;
                tracing::info!("adopted existing Postman member");
                Ok(OpStatus::Done { note: None })
            }
            Action::Create { attrs } => self.create(op, attrs).await,
            Action::Update { scim_id, from, to } => {
                let payload = json!({"scim_id": scim_id, "from": from, "to": to});
                self.journal
                    .write(write(payload), || async {
                        if from.user_name != to.user_name {
                            self.scim.set_user_name(scim_id, &to.user_name).await?;
                        }
                        if from.given_name != to.given_name || from.family_name != to.family_name {
                            self.scim
                                .replace_user(scim_id, to, op.okta_id.as_str(), true)
                                .await?;
                        }
                        Ok(Sent::Done {
                            changes: vec![SnapshotChange::SetAttrs {
                                okta_id: op.okta_id.clone(),
                                attrs: to.clone(),
                            }],
                            note: None,
                        })
                    })
                    .await
            }
            Action::Deactivate { scim_id } | Action::Reactivate { scim_id } => {
                let active = matches!(op.action, Action::Reactivate { .. });
                let payload = json!({"scim_id": scim_id, "active": active});
                self.journal
                    .write(write(payload), || async {
                        match self.scim.set_active(scim_id, active).await {
                            Ok(()) => Ok(Sent::Done {
                                changes: vec![SnapshotChange::SetActive {
                                    okta_id: op.okta_id.clone(),
                                    active,
                                }],
                                note: None,
                            }),
                            // The account no longer exists in Postman: nothing left to
                            // (de)activate. Forget it; a later full run re-creates the person
                            // if still wanted.
                            Err(e) if e.status() == Some(404) => {
                                tracing::warn!("Postman no longer has this account; forgetting it");
                                Ok(Sent::Done {
                                    changes: vec![SnapshotChange::Forget(op.okta_id.clone())],
                                    note: None,
                                })
                            }
                            Err(e) => Err(e),
                        }
                    })
                    .await
            }
        }
    }

    /// `POST /Users` through the journal's create rules (409 or an unknown outcome: look up by
    /// userName and adopt). An adopted account is then brought to the desired state.
    async fn create(&self, op: &Operation, attrs: &UserAttrs) -> Result<OpStatus, Fatal> {
        let w = Write {
            subject: Subject::User(op.okta_id.clone()),
            kind: op.kind(),
            label: &op.user_name,
            payload: with_reason(json!({"attrs": attrs}), &op.reason),
        };
        let created = self
            .journal
            .create(
                w,
                || async {
                    Ok(match self.scim.create_user(attrs, op.okta_id.as_str()).await? {
                        // What we sent is what the snapshot records (the answer may echo it
                        // differently cased).
                        CreateOutcome::Created(mut u) => {
                            u.attrs = attrs.clone();
                            u.active = true;
                            CreateAnswer::Created(u)
                        }
                        CreateOutcome::AlreadyExists { detail } => CreateAnswer::Conflict { detail },
                    })
                },
                || self.scim.find_user_by_name(&attrs.user_name),
                |u: &PostmanUser| link_user(&op.okta_id, u),
                |detail| {
                    format!(
                        "Postman refused the create with 409 ({detail}) but lists no member named {}. \
                         The person probably has a pending invite or belongs to another Postman team \
                         with an unverified domain: remove the pending invite in Postman's team \
                         settings, or verify the domain, and the next run will provision them",
                        attrs.user_name
                    )
                },
            )
            .await?;
        match created {
            Created::Failed(error) => Ok(OpStatus::Failed { error }),
            Created::Linked { note: None, .. } => Ok(OpStatus::Done { note: None }),
            Created::Linked {
                resource,
                note: Some(note),
            } => self.converge_adopted(op, attrs, resource, note).await,
        }
    }

    /// An account found after a create is linked as it is; bring it to the desired state.
    async fn converge_adopted(
        &self,
        op: &Operation,
        attrs: &UserAttrs,
        u: PostmanUser,
        note: String,
    ) -> Result<OpStatus, Fatal> {
        if !u.active {
            let follow = Operation {
                action: Action::Reactivate {
                    scim_id: u.id.clone(),
                },
                ..op.clone()
            };
            if let OpStatus::Failed { error } = Box::pin(self.execute(&follow)).await? {
                return Ok(OpStatus::Failed { error });
            }
        }
        if &u.attrs != attrs {
            let follow = Operation {
                action: Action::Update {
                    scim_id: u.id.clone(),
                    from: u.attrs.clone(),
                    to: attrs.clone(),
                },
                ..op.clone()
            };
            if let OpStatus::Failed { error } = Box::pin(self.execute(&follow)).await? {
                return Ok(OpStatus::Failed { error });
            }
        }
        Ok(OpStatus::Done { note: Some(note) })
    }
}
