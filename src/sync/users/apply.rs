//! Executes a [`Plan`] against Postman: one task per user (a user's operations run in order),
//! up to `max_in_flight` users at once, all behind the SCIM client's shared pacing buckets.
//! Every SCIM write is journalled as intended before it is sent and confirmed, together with its
//! snapshot change, after; a crash in between is resolved by [`recover`] on the next run.
//! A failed user never stops the others. Cancellation is checked between operations, never in the
//! middle of a write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::model::{ManagedUser, OktaUserId, PostmanUser, ScimUserId, UserAttrs};
use crate::plan::{Action, Operation, Plan};
use crate::scim::{CreateOutcome, ScimClient, ScimError};
use crate::store::{PendingWrite, SnapshotChange, StoreError, StoreHandle};

/// What happened to one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpStatus {
    Done {
        note: Option<String>,
    },
    Failed {
        error: String,
    },
    /// Not attempted: shutdown, an earlier failure of the same user, or a store failure.
    NotRun {
        why: String,
    },
}

pub struct Applier {
    pub scim: ScimClient,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    pub run_id: String,
    pub max_in_flight: usize,
    pub quarantine_after: u32,
    pub quarantine_for: Duration,
    pub cancel: CancellationToken,
}

/// How long a write already on the wire may take to finish once a stop is asked for, before it
/// is abandoned to the journal (its entry stays open and the next run resolves it). Together
/// with reads that stop at once, this keeps `reconcile` and `run` well inside the 10 s between
/// SIGTERM and SIGKILL that systemd and Kubernetes allow.
pub const WRITE_GRACE: Duration = Duration::from_secs(3);

/// Runs `fut` (one journalled write) to completion, unless `stop` fires and the write then
/// outlasts [`WRITE_GRACE`] (a 429 back-off, a slow server): `None`, and the write is dropped.
pub(crate) async fn unless_stopped<F: std::future::Future>(
    stop: &CancellationToken,
    fut: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        v = fut => Some(v),
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(WRITE_GRACE).await;
        } => None,
    }
}

/// Why an operation dropped by [`unless_stopped`] did not finish.
pub(crate) const STOPPED_MID_WRITE: &str =
    "the run was stopped during this operation; its journal entry stays open and the next run resolves it";

/// Raised inside a user's task when the store cannot record what happened: the run stops.
struct Fatal(StoreError);

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
        if !plan.forget.is_empty() {
            let changes: Vec<_> = plan
                .forget
                .iter()
                .cloned()
                .map(SnapshotChange::Forget)
                .collect();
            if let Err(e) = self
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
                        let result = match &status {
                            OpStatus::Done { .. } => "done",
                            OpStatus::Failed { .. } => "failed",
                            OpStatus::NotRun { .. } => "not_run",
                        };
                        self.metrics.operation(op.kind().as_str(), result);
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
                self.store
                    .call(move |s| s.apply_changes(&[SnapshotChange::Upsert(m)], Utc::now()))
                    .await
                    .map_err(Fatal)?;
                tracing::info!("adopted existing Postman member");
                Ok(OpStatus::Done { note: None })
            }
            Action::Create { attrs } => self.create(op, attrs).await,
            Action::Update { scim_id, from, to } => {
                let payload = serde_json::json!({"scim_id": scim_id, "from": from, "to": to});
                self.journalled(op, "update", payload, || async {
                    if from.user_name != to.user_name {
                        self.scim.set_user_name(scim_id, &to.user_name).await?;
                    }
                    if from.given_name != to.given_name || from.family_name != to.family_name {
                        self.scim
                            .replace_user(scim_id, to, op.okta_id.as_str(), true)
                            .await?;
                    }
                    Ok(vec![SnapshotChange::SetAttrs {
                        okta_id: op.okta_id.clone(),
                        attrs: to.clone(),
                    }])
                })
                .await
            }
            Action::Deactivate { scim_id } | Action::Reactivate { scim_id } => {
                let active = matches!(op.action, Action::Reactivate { .. });
                let kind = if active { "reactivate" } else { "deactivate" };
                let payload = serde_json::json!({"scim_id": scim_id, "active": active});
                self.journalled(op, kind, payload, || async {
                    match self.scim.set_active(scim_id, active).await {
                        Ok(()) => Ok(vec![SnapshotChange::SetActive {
                            okta_id: op.okta_id.clone(),
                            active,
                        }]),
                        // The account no longer exists in Postman: nothing left to (de)activate.
                        // Forget it; a later full run re-creates the person if still wanted.
                        Err(e) if e.status() == Some(404) => {
                            tracing::warn!("Postman no longer has this account; forgetting it");
                            Ok(vec![SnapshotChange::Forget(op.okta_id.clone())])
                        }
                        Err(e) => Err(e),
                    }
                })
                .await
            }
        }
    }

    /// Journals a write, runs it, and records the outcome.
    async fn journalled<F, Fut>(
        &self,
        op: &Operation,
        kind: &'static str,
        payload: serde_json::Value,
        send: F,
    ) -> Result<OpStatus, Fatal>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<SnapshotChange>, ScimError>>,
    {
        let jid = self.intend(op, kind, payload).await?;
        match send().await {
            Ok(changes) => {
                self.store
                    .call(move |s| s.journal_done(jid, None, &changes, Utc::now()))
                    .await
                    .map_err(Fatal)?;
                tracing::info!("done");
                Ok(OpStatus::Done { note: None })
            }
            Err(e) => self.failed(op, kind, jid, &e).await,
        }
    }

    async fn intend(
        &self,
        op: &Operation,
        kind: &'static str,
        payload: serde_json::Value,
    ) -> Result<i64, Fatal> {
        let run_id = self.run_id.clone();
        let okta_id = op.okta_id.clone();
        let user_name = op.user_name.clone();
        self.store
            .call(move |s| {
                s.journal_intend(
                    &run_id,
                    &okta_id,
                    kind,
                    &user_name,
                    &payload.to_string(),
                    Utc::now(),
                )
            })
            .await
            .map_err(Fatal)
    }

    async fn failed(
        &self,
        op: &Operation,
        kind: &'static str,
        jid: i64,
        e: &ScimError,
    ) -> Result<OpStatus, Fatal> {
        let error = describe(e);
        self.record_failure(op, kind, jid, &error, e.is_permanent())
            .await?;
        Ok(OpStatus::Failed { error })
    }

    async fn record_failure(
        &self,
        op: &Operation,
        kind: &'static str,
        jid: i64,
        error: &str,
        permanent: bool,
    ) -> Result<(), Fatal> {
        tracing::warn!(error, permanent, "operation failed");
        let okta_id = op.okta_id.clone();
        let user_name = op.user_name.clone();
        let error = error.to_string();
        let (after, dur) = (self.quarantine_after, self.quarantine_for);
        self.store
            .call(move |s| {
                s.journal_failed(
                    jid,
                    &okta_id,
                    &user_name,
                    kind,
                    &error,
                    permanent,
                    after,
                    dur,
                    Utc::now(),
                )
            })
            .await
            .map_err(Fatal)
    }

    /// `POST /Users`, made safe: a 409 or an ambiguous failure (the request may have reached
    /// Postman) leads to a lookup by userName, and the existing account is adopted instead of
    /// creating a duplicate. A POST is re-sent only when the lookup proves it did not happen.
    async fn create(&self, op: &Operation, attrs: &UserAttrs) -> Result<OpStatus, Fatal> {
        let payload = serde_json::json!({"attrs": attrs});
        let jid = self.intend(op, "create", payload).await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = self.scim.create_user(attrs, op.okta_id.as_str()).await;
            let found = match outcome {
                Ok(CreateOutcome::Created(u)) => {
                    let m = ManagedUser {
                        okta_id: op.okta_id.clone(),
                        scim_id: u.id.clone(),
                        attrs: attrs.clone(),
                        active: true,
                    };
                    let id = u.id.clone();
                    self.store
                        .call(move |s| {
                            s.journal_done(jid, Some(&id), &[SnapshotChange::Upsert(m)], Utc::now())
                        })
                        .await
                        .map_err(Fatal)?;
                    tracing::info!(scim_id = %u.id, "created");
                    return Ok(OpStatus::Done { note: None });
                }
                Ok(CreateOutcome::AlreadyExists { detail }) => {
                    match self.scim.find_user_by_name(&attrs.user_name).await {
                        Ok(Some(u)) => (
                            u,
                            "Postman answered 409 (already a member); adopted the existing account",
                        ),
                        Ok(None) => {
                            let error = format!(
                                "Postman refused the create with 409 ({detail}) but lists no member named {}. \
                                 The person probably has a pending invite or belongs to another Postman team \
                                 with an unverified domain: remove the pending invite in Postman's team \
                                 settings, or verify the domain, and the next run will provision them",
                                attrs.user_name
                            );
                            self.record_failure(op, "create", jid, &error, true).await?;
                            return Ok(OpStatus::Failed { error });
                        }
                        Err(e) => return self.failed(op, "create", jid, &e).await,
                    }
                }
                Err(e) if e.is_ambiguous() => {
                    tracing::warn!(error = %e, "create may or may not have happened; looking it up");
                    match self.scim.find_user_by_name(&attrs.user_name).await {
                        Ok(Some(u)) => (
                            u,
                            "the create's outcome was unknown; found the account and adopted it",
                        ),
                        // Proven not to have happened: safe to send again, a few times.
                        Ok(None) if attempts < 3 => continue,
                        Ok(None) => return self.failed(op, "create", jid, &e).await,
                        // Still unknown: the journal entry stays open (intended), so the next
                        // run's `recover` looks the user up before anything is planned,
                        // instead of sending the POST again.
                        Err(e2) => {
                            let error = format!(
                                "{}; looking it up failed too: {}",
                                describe(&e),
                                describe(&e2)
                            );
                            tracing::warn!(error, "create outcome unknown; left for recovery");
                            return Ok(OpStatus::Failed { error });
                        }
                    }
                }
                Err(e) => return self.failed(op, "create", jid, &e).await,
            };
            return self
                .adopt_after_create(op, attrs, jid, found.0, found.1)
                .await;
        }
    }

    /// Links an account found after a create, then brings it to the desired state.
    async fn adopt_after_create(
        &self,
        op: &Operation,
        attrs: &UserAttrs,
        jid: i64,
        u: PostmanUser,
        note: &'static str,
    ) -> Result<OpStatus, Fatal> {
        let m = ManagedUser {
            okta_id: op.okta_id.clone(),
            scim_id: u.id.clone(),
            attrs: u.attrs.clone(),
            active: u.active,
        };
        let id = u.id.clone();
        self.store
            .call(move |s| s.journal_done(jid, Some(&id), &[SnapshotChange::Upsert(m)], Utc::now()))
            .await
            .map_err(Fatal)?;
        tracing::info!(scim_id = %u.id, note);
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
        Ok(OpStatus::Done {
            note: Some(note.to_string()),
        })
    }
}

/// An operator-facing description of a SCIM failure: the error and, when known, what to do
/// (the client's errors already end with the hint for the statuses it knows).
pub fn describe(e: &ScimError) -> String {
    match e.hint() {
        Some(h) if !e.to_string().contains(h) => format!("{e}. {h}"),
        _ => e.to_string(),
    }
}

/// What [`recover`] did, and what it could not settle.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Interrupted creates that had happened and were adopted.
    pub adopted: usize,
    /// Interrupted creates still open (the lookup failed, or the row is parked). The planner
    /// holds these users: nobody is created again while the create may have happened.
    pub open_creates: Vec<PendingWrite>,
}

impl Recovery {
    /// The users held back by an open create, with the reason the report shows.
    pub fn held(&self) -> BTreeMap<OktaUserId, String> {
        self.open_creates
            .iter()
            .map(|p| (p.okta_id.clone(), unresolved_reason(p)))
            .collect()
    }
}

fn unresolved_reason(p: &PendingWrite) -> String {
    let state = if p.parked {
        format!(
            "parked after {} failed attempts; the next full run settles it from the Postman listing",
            p.attempts
        )
    } else {
        format!("{} failed attempt(s) so far", p.attempts)
    };
    match &p.error {
        Some(e) => format!("an interrupted create could not be verified ({state}): {e}"),
        None => format!("an interrupted create awaits verification ({state})"),
    }
}

/// Resolves writes that were journalled as intended but never confirmed (the process died, or
/// the outcome was unknown) by looking at Postman, before anything new is planned:
/// - a create that happened is adopted (snapshot row written), one that did not is abandoned
///   and will be planned again;
/// - updates and (de)activations are idempotent: the snapshot still shows the old state, so the
///   plan repeats them; they are closed as abandoned.
///
/// A create whose lookup fails stays open and fails alone: its attempt is counted, after
/// [`crate::store::RECOVERY_ATTEMPTS`] it is parked (no more lookups; a full run settles it from the listing,
/// see [`settle_from_listing`]), and the rest of the run proceeds. Only a store failure is fatal.
pub async fn recover(scim: &ScimClient, store: &StoreHandle) -> Result<Recovery, RecoverError> {
    let pending = store
        .call(|s| s.journal_pending())
        .await
        .map_err(RecoverError::Store)?;
    let mut out = Recovery::default();
    for mut p in pending {
        let mut changes = Vec::new();
        let mut scim_id: Option<ScimUserId> = None;
        if p.op == "create" {
            if p.parked {
                out.open_creates.push(p);
                continue;
            }
            match scim.find_user_by_name(&p.user_name).await {
                Ok(Some(u)) => {
                    tracing::info!(user = %p.user_name, scim_id = %u.id, "an interrupted create had happened; adopting the account");
                    scim_id = Some(u.id.clone());
                    changes.push(SnapshotChange::Upsert(ManagedUser {
                        okta_id: p.okta_id.clone(),
                        scim_id: u.id,
                        attrs: u.attrs,
                        active: u.active,
                    }));
                    out.adopted += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    let error = describe(&e);
                    let id = p.id;
                    let err2 = error.clone();
                    let parked = store
                        .call(move |s| s.journal_recovery_failed(id, &err2, Utc::now()))
                        .await
                        .map_err(RecoverError::Store)?;
                    p.attempts = p.attempts.saturating_add(1);
                    p.parked = parked;
                    if parked {
                        tracing::error!(user = %p.user_name, attempts = p.attempts, error = %error, "an interrupted create still cannot be verified; parked until a full run settles it");
                    } else {
                        tracing::warn!(user = %p.user_name, attempts = p.attempts, error = %error, "an interrupted create could not be verified; the user is held and it is tried again next run");
                    }
                    p.error = Some(error);
                    out.open_creates.push(p);
                    continue;
                }
            }
        }
        let resolved = scim_id.is_some();
        store
            .call(move |s| {
                s.journal_resolve(p.id, resolved, scim_id.as_ref(), &changes, Utc::now())
            })
            .await
            .map_err(RecoverError::Store)?;
    }
    Ok(out)
}

/// On a full run, settles the creates [`recover`] could not from the complete Postman listing:
/// the account is there (adopt it) or it is not (the create never happened: abandon the row, and
/// the plan may create the person). Returns the creates that remain open (none, unless the
/// store failed) and how many were adopted.
pub async fn settle_from_listing(
    store: &StoreHandle,
    open: Vec<PendingWrite>,
    members: &[PostmanUser],
) -> Result<usize, RecoverError> {
    if open.is_empty() {
        return Ok(0);
    }
    let by_name: BTreeMap<String, &PostmanUser> = members
        .iter()
        .map(|u| (crate::model::user_name_key(&u.attrs.user_name), u))
        .collect();
    let mut adopted = 0;
    for p in open {
        let found = by_name.get(&crate::model::user_name_key(&p.user_name));
        let mut changes = Vec::new();
        let scim_id = found.map(|u| {
            changes.push(SnapshotChange::Upsert(ManagedUser {
                okta_id: p.okta_id.clone(),
                scim_id: u.id.clone(),
                attrs: u.attrs.clone(),
                active: u.active,
            }));
            u.id.clone()
        });
        match &scim_id {
            Some(id) => {
                adopted += 1;
                tracing::info!(user = %p.user_name, scim_id = %id, "the full listing shows an interrupted create had happened; adopting the account");
            }
            None => {
                tracing::info!(user = %p.user_name, "the full listing shows an interrupted create never happened")
            }
        }
        let resolved = scim_id.is_some();
        store
            .call(move |s| {
                s.journal_resolve(p.id, resolved, scim_id.as_ref(), &changes, Utc::now())
            })
            .await
            .map_err(RecoverError::Store)?;
    }
    Ok(adopted)
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("resolving interrupted writes: {0}")]
    Store(StoreError),
    #[error("resolving interrupted writes: looking up Postman failed: {0}")]
    Scim(ScimError),
}
