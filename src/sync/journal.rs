//! The one journalled write, for users and groups alike (the shape of kube-runtime's
//! `finalizer.rs`): record the intent, run the caller's request, and close the entry together
//! with its snapshot change in one transaction. The rules for writes whose outcome is unknown
//! live here once:
//! - a create answered `409` is looked up and adopted;
//! - a create whose answer was lost (timeout, reset, 5xx, an oversized answer) is looked up
//!   before anything is re-sent, re-sent only when the lookup proves it did not happen (at most
//!   [`CREATE_ATTEMPTS`] times), and its entry stays open when the lookup fails too;
//! - an entry left open (a crash, a stop, a failed lookup) is settled by [`recover`] at the
//!   start of the next run, by a lookup, and after [`crate::store::RECOVERY_ATTEMPTS`] failed
//!   lookups by the next full run's listing ([`settle_from_listing`]); meanwhile only its
//!   subject is held.
//!
//! It must not decide what to write (the planners do) nor how to call Postman (the callers
//! pass their request as a closure).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::model::{
    user_name_key, ManagedGroup, ManagedUser, OktaGroupId, OktaUserId, OpKind, PostmanGroup,
    PostmanUser, ScimRef, Subject,
};
use crate::scim::{ScimClient, ScimError};
use crate::store::{
    Failure, GroupChange, PendingWrite, Quarantine, SnapshotChange, StoreError, StoreHandle,
};

use super::describe;
use super::outcome::OpStatus;

/// How many times a create is sent when each lookup proves the previous one did not happen.
pub const CREATE_ATTEMPTS: u32 = 3;

/// How long a write already on the wire may take to finish once a stop is asked for, before it
/// is abandoned to the journal (its entry stays open and the next run resolves it). Together
/// with reads that stop at once, this keeps `reconcile` and `run` well inside the 10 s between
/// SIGTERM and SIGKILL that systemd and Kubernetes allow.
pub const WRITE_GRACE: Duration = Duration::from_secs(3);

/// Why an operation dropped by [`unless_stopped`] did not finish.
pub(crate) const STOPPED_MID_WRITE: &str =
    "the run was stopped during this operation; its journal entry stays open and the next run resolves it";

/// Runs `fut` (one journalled write) to completion, unless `stop` fires and the write then
/// outlasts [`WRITE_GRACE`] (a 429 back-off, a slow server): `None`, and the write is dropped.
pub(crate) async fn unless_stopped<F: Future>(
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

/// The store could not record what happened: the run stops (the open entry is settled later).
#[derive(Debug)]
pub struct Fatal(pub StoreError);

/// One write as the journal records it.
#[derive(Clone, Debug)]
pub struct Write<'a> {
    pub subject: Subject,
    pub kind: OpKind,
    /// The userName or displayName (what recovery looks a create up by).
    pub label: &'a str,
    pub payload: serde_json::Value,
}

/// What a write that got an answer changes.
pub enum Sent {
    /// It happened: close the entry `done` with these snapshot changes.
    Done {
        changes: Vec<SnapshotChange>,
        note: Option<String>,
    },
    /// It was refused in a way that teaches us something (a 404: the resource is gone): close
    /// the entry `failed` with these changes.
    Gone {
        error: String,
        changes: Vec<SnapshotChange>,
    },
}

/// What a create request answered.
pub enum CreateAnswer<T> {
    Created(T),
    /// `409`: something by that name already exists.
    Conflict {
        detail: String,
    },
}

/// How a create ended.
pub enum Created<T> {
    /// Created, or found after a 409 or an unknown outcome and adopted (`note` says which).
    Linked { resource: T, note: Option<String> },
    /// Failed; the entry is closed, or left open when the outcome is still unknown.
    Failed(String),
}

/// Records intents and outcomes of one run's writes.
#[derive(Clone)]
pub struct Journal {
    pub store: StoreHandle,
    pub run_id: String,
    pub quarantine: Quarantine,
    /// The saved plan this run carries out (`apply FILE`), recorded on every entry.
    pub plan_id: Option<String>,
}

impl Journal {
    async fn intend(&self, w: &Write<'_>) -> Result<i64, Fatal> {
        let (run_id, subject, kind, label, payload, plan_id) = (
            self.run_id.clone(),
            w.subject.clone(),
            w.kind,
            w.label.to_string(),
            w.payload.to_string(),
            self.plan_id.clone(),
        );
        self.store
            .call(move |s| {
                s.journal_intend_in_plan(
                    &run_id,
                    &subject,
                    kind,
                    &label,
                    &payload,
                    plan_id.as_deref(),
                    Utc::now(),
                )
            })
            .await
            .map_err(Fatal)
    }

    async fn done(
        &self,
        id: i64,
        scim: Option<ScimRef>,
        changes: Vec<SnapshotChange>,
    ) -> Result<(), Fatal> {
        self.store
            .call(move |s| s.journal_done(id, scim.as_ref(), &changes, Utc::now()))
            .await
            .map_err(Fatal)
    }

    async fn failed(
        &self,
        id: i64,
        w: &Write<'_>,
        error: String,
        permanent: bool,
        changes: Vec<SnapshotChange>,
    ) -> Result<OpStatus, Fatal> {
        tracing::warn!(error = %error, permanent, "operation failed");
        let (subject, kind, label, quarantine) = (
            w.subject.clone(),
            w.kind,
            w.label.to_string(),
            self.quarantine,
        );
        let e = error.clone();
        self.store
            .call(move |s| {
                let failure = Failure {
                    subject: &subject,
                    kind,
                    label: &label,
                    error: &e,
                    permanent,
                    quarantine,
                };
                s.journal_failed(id, &failure, &changes, Utc::now())
            })
            .await
            .map_err(Fatal)?;
        Ok(OpStatus::Failed { error })
    }

    /// An idempotent write (PUT, PATCH, DELETE): intent, `send`, outcome. A failure closes the
    /// entry: the snapshot still shows the old state, so the plan repeats the write next run.
    pub async fn write<F, Fut>(&self, w: Write<'_>, send: F) -> Result<OpStatus, Fatal>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Sent, ScimError>>,
    {
        let id = self.intend(&w).await?;
        match send().await {
            Ok(Sent::Done { changes, note }) => {
                self.done(id, None, changes).await?;
                tracing::info!("done");
                Ok(OpStatus::Done { note })
            }
            Ok(Sent::Gone { error, changes }) => self.failed(id, &w, error, true, changes).await,
            Err(e) => {
                let permanent = e.is_permanent();
                self.failed(id, &w, describe(&e), permanent, Vec::new())
                    .await
            }
        }
    }

    /// A create (POST), made safe: see the module documentation for the rules. `link` turns
    /// the resource created or found into its snapshot change; `unexplained_conflict` words a
    /// 409 whose lookup finds nothing.
    pub async fn create<T, C, CFut, L, LFut>(
        &self,
        w: Write<'_>,
        mut create: C,
        mut lookup: L,
        link: impl Fn(&T) -> (ScimRef, Vec<SnapshotChange>),
        unexplained_conflict: impl FnOnce(&str) -> String,
    ) -> Result<Created<T>, Fatal>
    where
        C: FnMut() -> CFut,
        CFut: Future<Output = Result<CreateAnswer<T>, ScimError>>,
        L: FnMut() -> LFut,
        LFut: Future<Output = Result<Option<T>, ScimError>>,
    {
        let id = self.intend(&w).await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (resource, note) = match create().await {
                Ok(CreateAnswer::Created(t)) => (t, None),
                Ok(CreateAnswer::Conflict { detail }) => match lookup().await {
                    Ok(Some(t)) => (
                        t,
                        Some("Postman answered 409 (it already exists); adopted the existing one"),
                    ),
                    Ok(None) => {
                        let error = unexplained_conflict(&detail);
                        self.failed(id, &w, error.clone(), true, Vec::new()).await?;
                        return Ok(Created::Failed(error));
                    }
                    Err(e) => {
                        let error = describe(&e);
                        let permanent = e.is_permanent();
                        self.failed(id, &w, error.clone(), permanent, Vec::new())
                            .await?;
                        return Ok(Created::Failed(error));
                    }
                },
                Err(e) if e.is_ambiguous() => {
                    tracing::warn!(error = %e, "create may or may not have happened; looking it up");
                    match lookup().await {
                        Ok(Some(t)) => (
                            t,
                            Some("the create's outcome was unknown; found it and adopted it"),
                        ),
                        // Proven not to have happened: safe to send again, a few times.
                        Ok(None) if attempts < CREATE_ATTEMPTS => continue,
                        Ok(None) => {
                            let error = describe(&e);
                            self.failed(id, &w, error.clone(), false, Vec::new())
                                .await?;
                            return Ok(Created::Failed(error));
                        }
                        // Still unknown: the entry stays open (intended), so the next run's
                        // `recover` looks it up before anything is planned, instead of sending
                        // the POST again.
                        Err(e2) => {
                            let error = format!(
                                "{}; looking it up failed too: {}",
                                describe(&e),
                                describe(&e2)
                            );
                            tracing::warn!(error, "create outcome unknown; left for recovery");
                            return Ok(Created::Failed(error));
                        }
                    }
                }
                Err(e) => {
                    let error = describe(&e);
                    let permanent = e.is_permanent();
                    self.failed(id, &w, error.clone(), permanent, Vec::new())
                        .await?;
                    return Ok(Created::Failed(error));
                }
            };
            let (scim, changes) = link(&resource);
            tracing::info!(
                scim_id = scim.as_str(),
                note = note.unwrap_or("created"),
                "linked"
            );
            self.done(id, Some(scim), changes).await?;
            return Ok(Created::Linked {
                resource,
                note: note.map(str::to_string),
            });
        }
    }
}

/// A write's payload with the planner's reason added, so the journal (and `history`) can say
/// why it was made. Payloads are objects; anything else is left as it is.
pub fn with_reason(mut payload: serde_json::Value, reason: &str) -> serde_json::Value {
    if let Some(o) = payload.as_object_mut() {
        o.insert("reason".into(), reason.into());
    }
    payload
}

/// The snapshot change that links a Postman user to an Okta user.
pub fn link_user(okta_id: &OktaUserId, u: &PostmanUser) -> (ScimRef, Vec<SnapshotChange>) {
    (
        ScimRef::User(u.id.clone()),
        vec![SnapshotChange::Upsert(ManagedUser {
            okta_id: okta_id.clone(),
            scim_id: u.id.clone(),
            attrs: u.attrs.clone(),
            active: u.active,
        })],
    )
}

/// The snapshot change that links a Postman group to an Okta group.
pub fn link_group(okta_id: &OktaGroupId, g: &PostmanGroup) -> (ScimRef, Vec<SnapshotChange>) {
    (
        ScimRef::Group(g.id.clone()),
        vec![SnapshotChange::Group(GroupChange::Upsert(ManagedGroup {
            okta_id: okta_id.clone(),
            scim_id: g.id.clone(),
            display_name: g.display_name.clone(),
            members: g.members.clone(),
        }))],
    )
}

// ---- recovery --------------------------------------------------------------------------------

/// What [`recover`] did, and what it could not settle.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Interrupted creates that had happened and were adopted.
    pub adopted: usize,
    /// Interrupted creates still open (the lookup failed, or the row is parked). Their
    /// subjects are held: nothing is created again while the create may have happened.
    pub open_creates: Vec<PendingWrite>,
}

impl Recovery {
    /// Open creates of `pending` without looking anything up (dry runs).
    pub fn unverified(pending: Vec<PendingWrite>) -> Self {
        Recovery {
            adopted: 0,
            open_creates: pending
                .into_iter()
                .filter(|p| matches!(p.kind, Some(OpKind::Create | OpKind::GroupCreate)))
                .collect(),
        }
    }

    /// The users held back by an open create, with the reason the report shows.
    pub fn held_users(&self) -> BTreeMap<OktaUserId, String> {
        self.open_creates
            .iter()
            .filter_map(|p| match &p.subject {
                Subject::User(id) => Some((id.clone(), unresolved_reason(p))),
                Subject::Group(_) => None,
            })
            .collect()
    }

    /// The groups held back by an open create, with the reason the report shows.
    pub fn held_groups(&self) -> BTreeMap<OktaGroupId, String> {
        self.open_creates
            .iter()
            .filter_map(|p| match &p.subject {
                Subject::Group(id) => Some((id.clone(), unresolved_reason(p))),
                Subject::User(_) => None,
            })
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

/// What a lookup of an interrupted create found.
enum Found {
    User(PostmanUser),
    Group(PostmanGroup),
}

/// Resolves writes journalled as intended but never confirmed (the process died, was stopped,
/// or the outcome was unknown) by looking at Postman, before anything new is planned:
/// - a create (user or group) that happened is adopted, one that did not is abandoned and
///   planned again;
/// - updates, (de)activations and group changes are idempotent: the snapshot still shows the
///   old state, so the plan repeats them; they are closed as abandoned.
///
/// A create whose lookup fails stays open and fails alone: its attempt is counted, after
/// [`crate::store::RECOVERY_ATTEMPTS`] it is parked (no more lookups; a full run settles it from
/// the listing), and the rest of the run proceeds. Only a store failure is fatal.
pub async fn recover(scim: &ScimClient, store: &StoreHandle) -> Result<Recovery, StoreError> {
    let pending = store.call(|s| s.journal_pending()).await?;
    let mut out = Recovery::default();
    for mut p in pending {
        let is_create = matches!(p.kind, Some(OpKind::Create | OpKind::GroupCreate));
        if !is_create {
            let id = p.id;
            store
                .call(move |s| s.journal_resolve(id, false, None, &[], Utc::now()))
                .await?;
            continue;
        }
        if p.parked {
            out.open_creates.push(p);
            continue;
        }
        let found = match &p.subject {
            Subject::User(_) => scim
                .find_user_by_name(&p.label)
                .await
                .map(|u| u.map(Found::User)),
            Subject::Group(_) => scim
                .find_group_by_name(&p.label)
                .await
                .map(|g| g.map(Found::Group)),
        };
        match found {
            Ok(found) => {
                if found.is_some() {
                    out.adopted += 1;
                    tracing::info!(subject = %p.label, "an interrupted create had happened; adopting it");
                }
                settle(store, &p, found).await?;
            }
            Err(e) => {
                let error = describe(&e);
                let (id, err2) = (p.id, error.clone());
                let parked = store
                    .call(move |s| s.journal_recovery_failed(id, &err2, Utc::now()))
                    .await?;
                p.attempts = p.attempts.saturating_add(1);
                p.parked = parked;
                if parked {
                    tracing::error!(subject = %p.label, attempts = p.attempts, error = %error, "an interrupted create still cannot be verified; parked until a full run settles it");
                } else {
                    tracing::warn!(subject = %p.label, attempts = p.attempts, error = %error, "an interrupted create could not be verified; it is held and tried again next run");
                }
                p.error = Some(error);
                out.open_creates.push(p);
            }
        }
    }
    Ok(out)
}

/// Closes an open create: adopted when `found`, abandoned otherwise.
async fn settle(
    store: &StoreHandle,
    p: &PendingWrite,
    found: Option<Found>,
) -> Result<(), StoreError> {
    let (scim, changes) = match (&p.subject, &found) {
        (Subject::User(okta_id), Some(Found::User(u))) => {
            let (r, c) = link_user(okta_id, u);
            (Some(r), c)
        }
        (Subject::Group(okta_id), Some(Found::Group(g))) => {
            let (r, c) = link_group(okta_id, g);
            (Some(r), c)
        }
        _ => (None, Vec::new()),
    };
    let id = p.id;
    store
        .call(move |s| s.journal_resolve(id, scim.is_some(), scim.as_ref(), &changes, Utc::now()))
        .await
}

/// On a full run, settles the open creates [`recover`] could not, from the complete Postman
/// listings: the resource is there (adopt it) or it is not (the create never happened: abandon
/// the row, and the plan may create it). Creates of a kind whose listing was not read stay
/// open. Returns how many were adopted.
pub async fn settle_from_listing(
    store: &StoreHandle,
    open: &[PendingWrite],
    users: Option<&[PostmanUser]>,
    groups: Option<&[PostmanGroup]>,
) -> Result<usize, StoreError> {
    let users_by_name: Option<BTreeMap<String, &PostmanUser>> = users.map(|us| {
        us.iter()
            .map(|u| (user_name_key(&u.attrs.user_name), u))
            .collect()
    });
    // Postman's displayName filter is exact, so the listing is matched exactly too.
    let groups_by_name: Option<BTreeMap<&str, &PostmanGroup>> =
        groups.map(|gs| gs.iter().map(|g| (g.display_name.as_str(), g)).collect());
    let mut adopted = 0;
    for p in open {
        let found = match &p.subject {
            Subject::User(_) => match &users_by_name {
                None => continue,
                Some(m) => m
                    .get(&user_name_key(&p.label))
                    .map(|u| Found::User((*u).clone())),
            },
            Subject::Group(_) => match &groups_by_name {
                None => continue,
                Some(m) => m.get(p.label.as_str()).map(|g| Found::Group((*g).clone())),
            },
        };
        if found.is_some() {
            adopted += 1;
        }
        tracing::info!(
            subject = %p.label,
            happened = found.is_some(),
            "the full listing settles an interrupted create"
        );
        settle(store, p, found).await?;
    }
    Ok(adopted)
}
