//! The reads of a targeted run, all before any write: the groups an event named (their members
//! are users to re-read), each named user on its own, and — with group push on — the pushed
//! groups and each re-read user's groups. Every read is bounded in time ([`Reader`]); a read
//! that fails leaves its subject out of the plan and in the queue. It must not write anything
//! or decide anything: what the answers mean is the planners'.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::groups as group_targets;
use super::{gone_reason, TargetedOutcome, Targets, READ_CONCURRENCY};
use crate::model::{ManagedGroup, ManagedUser, OktaGroupId, OktaRead, OktaUserId};
use crate::okta::{AppUserRead, OktaError};
use crate::store::EventCause;
use crate::sync::groups::plan::select_groups;
use crate::sync::groups::read::{group_problem, GroupInputs};
use crate::sync::Engine;

/// The Okta reads of one targeted run, each bounded in time; after one times out or fails
/// transiently, the rest are not tried (they stay queued for the next poll interval).
pub(super) struct Reader {
    pub(super) budget: Duration,
    failing: AtomicBool,
}

/// Why a read of a targeted run gave nothing.
struct ReadFailure {
    text: String,
    /// Okta's HTTP status, when it answered.
    status: Option<u16>,
}

impl Reader {
    /// A reader whose reads each get `budget`.
    pub(super) fn new(budget: Duration) -> Self {
        Self {
            budget,
            failing: AtomicBool::new(false),
        }
    }

    async fn read<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, OktaError>>,
    ) -> Result<T, ReadFailure> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(ReadFailure {
                text: "not tried: another read of this run found Okta failing".into(),
                status: None,
            });
        }
        match tokio::time::timeout(self.budget, read).await {
            Err(_) => {
                self.failing.store(true, Ordering::Relaxed);
                Err(ReadFailure {
                    text: format!("Okta did not answer within {} s", self.budget.as_secs()),
                    status: None,
                })
            }
            Ok(Err(e)) => {
                if e.is_retryable() {
                    self.failing.store(true, Ordering::Relaxed);
                }
                Err(ReadFailure {
                    text: e.to_string(),
                    status: e.status(),
                })
            }
            Ok(Ok(v)) => Ok(v),
        }
    }
}

/// One user's re-read: what Okta answered and, for a user no longer assigned, why in words.
enum UserRead {
    Read(AppUserRead, Option<&'static str>),
    Failed(String),
}

/// What the re-reads found, for the planners.
pub(super) struct Reread {
    /// Every user the run re-read or tried to, with the event behind them (a group event's
    /// members carry the group's event).
    pub causes: BTreeMap<OktaUserId, EventCause>,
    /// The users Okta assigns, as a (complete, for them) read.
    pub desired: OktaRead,
    /// The users whose re-read answered (assigned, unmappable, or not assigned).
    pub read_ids: BTreeSet<OktaUserId>,
    /// Users no longer assigned, with the words for why.
    pub gone: BTreeMap<OktaUserId, &'static str>,
    /// What was learnt about groups so far (members of the groups events named).
    pub seen: group_targets::Seen,
}

/// The snapshots a targeted run reads against.
#[derive(Clone, Copy)]
pub(super) struct Known<'a> {
    pub users: &'a BTreeMap<OktaUserId, ManagedUser>,
    /// `users` by Postman id.
    pub by_scim: &'a group_targets::ByScim<'a>,
    pub groups: &'a BTreeMap<OktaGroupId, ManagedGroup>,
}

impl Engine {
    /// Re-reads what `targets` names. `None` when `cancel` fired (nothing was written).
    pub(super) async fn reread(
        &self,
        targets: &Targets,
        known: Known<'_>,
        reader: &Reader,
        cancel: &CancellationToken,
        out: &mut TargetedOutcome,
    ) -> Option<Reread> {
        // Groups an event named: their members are the users to re-read (docs/okta-api.md#groups:
        // a group assigned to the app makes its members app users). A group Okta no longer has
        // (deleted) is re-read as the members the snapshot last pushed to it.
        let by_scim = known.by_scim;
        let mut causes = targets.users.clone();
        let mut seen = group_targets::Seen::default();
        for (gid, cause) in &targets.groups {
            let read = cancel
                .run_until_cancelled(reader.read(self.okta.list_group_members(gid)))
                .await?;
            match read {
                Ok(members) => {
                    for m in &members {
                        causes.entry(m.clone()).or_insert_with(|| cause.clone());
                    }
                    seen.members.insert(gid.clone(), members);
                }
                Err(e) if e.status == Some(404) => {
                    let former: Vec<&OktaUserId> = known
                        .groups
                        .get(gid)
                        .map(|g| {
                            g.members
                                .iter()
                                .filter_map(|s| by_scim.get(s).copied())
                                .collect()
                        })
                        .unwrap_or_default();
                    tracing::info!(group = %gid, event = %cause.uuid, former_members = former.len(), "the group of an event no longer exists in Okta; re-reading the members last pushed to it");
                    for m in former {
                        causes.entry(m.clone()).or_insert_with(|| cause.clone());
                    }
                }
                Err(e) => {
                    out.report.errors.push(format!(
                        "reading the members of Okta group {gid}: {}",
                        e.text
                    ));
                    out.failed_groups.insert(gid.clone());
                }
            }
        }

        // Every named user on its own.
        let rereads = futures::stream::iter(causes.keys().cloned())
            .map(|uid| {
                let active_managed = known.users.get(&uid).is_some_and(|m| m.active);
                async move {
                    let r = match reader
                        .read(self.okta.read_app_user(&uid, &self.mapping))
                        .await
                    {
                        Err(e) => UserRead::Failed(e.text),
                        // Only a deactivation needs the status, for its reason; a failure
                        // there changes only the wording.
                        Ok(AppUserRead::NotAssigned) if active_managed => {
                            let status = tokio::time::timeout(
                                reader.budget,
                                self.okta.read_user_status(&uid),
                            )
                            .await
                            .ok()
                            .and_then(Result::ok);
                            UserRead::Read(
                                AppUserRead::NotAssigned,
                                Some(gone_reason(status.as_ref())),
                            )
                        }
                        Ok(r) => UserRead::Read(r, None),
                    };
                    (uid, r)
                }
            })
            .buffer_unordered(READ_CONCURRENCY)
            .collect::<Vec<_>>();
        let rereads = cancel.run_until_cancelled(rereads).await?;

        let mut desired = OktaRead {
            complete: true,
            ..OktaRead::default()
        };
        let mut read_ids: BTreeSet<OktaUserId> = BTreeSet::new();
        let mut gone: BTreeMap<OktaUserId, &'static str> = BTreeMap::new();
        for (uid, r) in rereads {
            match r {
                UserRead::Failed(e) => {
                    tracing::warn!(okta_id = %uid, error = %e, "re-reading an Okta user for an event failed: nothing is planned for them now (retried, then left to the next full run)");
                    out.report
                        .errors
                        .push(format!("re-reading Okta user {uid}: {e}"));
                    out.failed_users.insert(uid);
                }
                UserRead::Read(AppUserRead::Assigned(u), _) => {
                    read_ids.insert(uid.clone());
                    desired.users.insert(uid, u);
                }
                UserRead::Read(AppUserRead::Skipped(why), _) => {
                    read_ids.insert(uid.clone());
                    desired.skipped.insert(uid, why);
                }
                UserRead::Read(AppUserRead::NotAssigned, reason) => {
                    gone.insert(uid.clone(), reason.unwrap_or_else(|| gone_reason(None)));
                    read_ids.insert(uid);
                }
            }
        }
        seen.reread = read_ids.clone();
        Some(Reread {
            causes,
            desired,
            read_ids,
            gone,
            seen,
        })
    }

    /// The group reads of a targeted run, before any write: the pushed groups (one request),
    /// the groups of each user re-read as assigned (one request each), and the members of any
    /// affected group the snapshot does not have yet. Returns the planner's inputs and, for each
    /// group, the event behind it; `None` when no pushed group is affected or the pushed groups
    /// cannot be read (then every user and group of the run stays queued, for the membership).
    pub(super) async fn read_groups(
        &self,
        reader: &Reader,
        reread: &mut Reread,
        known: Known<'_>,
        group_causes: &BTreeMap<OktaGroupId, EventCause>,
        out: &mut TargetedOutcome,
    ) -> Option<(GroupInputs, BTreeMap<OktaGroupId, EventCause>)> {
        let Known {
            users,
            by_scim,
            groups,
        } = known;
        let Reread {
            causes: user_causes,
            desired,
            seen,
            ..
        } = reread;
        let assigned = match reader.read(self.okta.list_app_groups()).await {
            Ok(a) => a,
            Err(e) => {
                group_problem(
                    &mut out.report,
                    format!(
                        "reading the Okta groups assigned to the app: {}; group memberships follow when the events are retried",
                        e.text
                    ),
                );
                out.failed_users.extend(seen.reread.iter().cloned());
                out.failed_groups.extend(seen.members.keys().cloned());
                return None;
            }
        };
        let (picked, _) = select_groups(&assigned, &self.config.groups.push);
        seen.pushed = picked.into_iter().collect();
        if seen.pushed.is_empty() {
            return None;
        }
        let looked_up = futures::stream::iter(desired.users.keys().cloned())
            .map(|uid| async move {
                let r = reader.read(self.okta.list_user_groups(&uid)).await;
                (uid, r)
            })
            .buffer_unordered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (uid, r) in looked_up {
            match r {
                Ok(gs) => {
                    seen.user_groups
                        .insert(uid, gs.into_iter().map(|(g, _)| g).collect());
                }
                Err(e) => {
                    tracing::warn!(okta_id = %uid, error = %e.text, "reading an Okta user's groups for an event failed: their group memberships wait for the retry");
                    out.report
                        .errors
                        .push(format!("reading the groups of Okta user {uid}: {}", e.text));
                    out.failed_users.insert(uid);
                }
            }
        }
        let affected = group_targets::affected(seen, users, groups);
        for gid in group_targets::to_read(&affected, seen, groups) {
            match reader.read(self.okta.list_group_members(&gid)).await {
                Ok(members) => {
                    seen.members.insert(gid, members);
                }
                Err(e) => {
                    group_problem(
                        &mut out.report,
                        format!(
                            "reading the members of Okta group {gid}: {}; it is pushed by the next scheduled run",
                            e.text
                        ),
                    );
                }
            }
        }
        // The event behind each group: the group's own, else that of the first re-read user
        // who moves it (joins or leaves it in Okta, or was in it).
        let mut causes: BTreeMap<OktaGroupId, EventCause> = BTreeMap::new();
        for gid in &affected {
            let mut movers = seen
                .user_groups
                .iter()
                .filter(|(_, gs)| gs.contains(gid))
                .map(|(u, _)| u)
                .chain(
                    groups
                        .get(gid)
                        .into_iter()
                        .flat_map(|g| g.members.iter().filter_map(|s| by_scim.get(s).copied()))
                        .filter(|u| seen.reread.contains(*u)),
                );
            let cause = group_causes
                .get(gid)
                .or_else(|| movers.find_map(|u| user_causes.get(u)));
            if let Some(c) = cause {
                causes.insert(gid.clone(), c.clone());
            }
        }
        let inputs = group_targets::inputs(&affected, seen, by_scim, groups);
        Some((inputs, causes))
    }
}
