//! The group planner: a pure function from (the Okta groups to push with their members, the
//! group snapshot, Postman's groups on full runs, the user snapshot, policy) to the SCIM group
//! operations that make Postman's groups match. No async, no clock, no network, no SQLite; the
//! same plan is printed by `--dry-run` and carried out by `groups::apply`. It owns the group
//! safety rules: only managed, active users become members; members Postman lists that we do not
//! manage are never removed; a partial read of any group's members withholds every removal and
//! deletion; a deletion counts the members who would lose access against `max_deactivations`.
//! It must not decide anything about users themselves (that is `users::plan`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::OpKind;
use crate::model::{
    DesiredGroup, ManagedGroup, ManagedUser, OktaGroupId, OktaUserId, PostmanGroup, ScimGroupId,
    ScimUserId,
};
use crate::sync::users::plan::Refusal;

/// The Okta side of a group run: the groups to push, with their members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRead {
    pub groups: BTreeMap<OktaGroupId, DesiredGroup>,
    /// `[groups] push` entries that name no group assigned to the Postman app.
    pub unresolved: Vec<String>,
}

impl GroupRead {
    /// False when a page of any group's members failed: no removals, no deletions this run.
    pub fn members_complete(&self) -> bool {
        self.groups.values().all(|g| g.members_complete)
    }
}

/// Picks the groups to push from the groups assigned to the app: all of them when `push` is
/// empty, otherwise those whose id or exact name is listed. Returns the picked groups and the
/// entries that matched nothing.
pub fn select_groups(
    assigned: &[(OktaGroupId, String)],
    push: &[String],
) -> (Vec<(OktaGroupId, String)>, Vec<String>) {
    if push.is_empty() {
        return (assigned.to_vec(), Vec::new());
    }
    let picked: Vec<(OktaGroupId, String)> = assigned
        .iter()
        .filter(|(id, name)| push.iter().any(|p| p == id.as_str() || p == name))
        .cloned()
        .collect();
    let unresolved = push
        .iter()
        .filter(|p| {
            !assigned
                .iter()
                .any(|(id, name)| *p == id.as_str() || *p == name)
        })
        .cloned()
        .collect();
    (picked, unresolved)
}

/// What the group planner may do.
#[derive(Clone, Debug, Default)]
pub struct GroupPolicy {
    /// `[groups] delete_removed`: delete a Postman group whose Okta group stopped being pushed.
    pub delete_removed: bool,
    /// The run's deactivation limit (`Policy::deactivation_limit`).
    pub deactivation_limit: usize,
    /// Users the user plan of the same run deactivates: they share the limit, and are not
    /// counted again when a deleted group would also cost them access.
    pub deactivating: BTreeSet<ScimUserId>,
    /// Groups whose interrupted create is not settled yet, with the reason: never created
    /// again while the create may have happened.
    pub held: BTreeMap<OktaGroupId, String>,
}

/// A Postman member named in a group operation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Member {
    pub scim_id: ScimUserId,
    pub user_name: String,
}

/// One step of a group plan, with everything `groups::apply` needs to carry it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum GroupAction {
    /// `POST /Groups` without members (members follow in an `AddMembers`, so a member who has
    /// not joined cannot make the create fail). A 409 leads to a lookup and an adoption.
    Create,
    /// Link an existing Postman group with the same displayName (snapshot only, no SCIM write).
    Adopt {
        scim_id: ScimGroupId,
        members: BTreeSet<ScimUserId>,
    },
    /// `PATCH replace {id, displayName}` (docs/postman-scim.md#groups).
    Rename {
        scim_id: ScimGroupId,
        from: String,
        to: String,
    },
    /// `PATCH add members`, in batches of 100. `scim_id` is `None` when the group is created
    /// earlier in the same plan.
    AddMembers {
        scim_id: Option<ScimGroupId>,
        members: Vec<Member>,
    },
    /// `PATCH remove members`, in batches of 100.
    RemoveMembers {
        scim_id: ScimGroupId,
        members: Vec<Member>,
    },
    /// `DELETE /Groups/{id}`. `loses_access`: members in no other group, whom Postman may
    /// deactivate (docs/postman-scim.md#groups); they count against the deactivation limit.
    Delete {
        scim_id: ScimGroupId,
        loses_access: Vec<Member>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupOperation {
    pub okta_id: OktaGroupId,
    /// The group's name in Okta (for a deletion: the name last pushed).
    pub display_name: String,
    pub action: GroupAction,
    /// Why, in words an operator understands.
    pub reason: String,
}

impl GroupOperation {
    pub fn kind(&self) -> OpKind {
        match self.action {
            GroupAction::Create => OpKind::GroupCreate,
            GroupAction::Adopt { .. } => OpKind::GroupAdopt,
            GroupAction::Rename { .. } => OpKind::GroupRename,
            GroupAction::AddMembers { .. } => OpKind::GroupAddMembers,
            GroupAction::RemoveMembers { .. } => OpKind::GroupRemoveMembers,
            GroupAction::Delete { .. } => OpKind::GroupDelete,
        }
    }

    /// Whether carrying it out sends a SCIM write.
    pub fn is_write(&self) -> bool {
        self.kind().is_write()
    }

    /// The members who would lose access (deletions only).
    pub fn loses_access(&self) -> &[Member] {
        match &self.action {
            GroupAction::Delete { loses_access, .. } => loses_access,
            _ => &[],
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupPlan {
    /// In execution order; the operations of one group keep their relative order.
    pub operations: Vec<GroupOperation>,
    /// Removals and deletions not carried out because a group's members were read partially.
    pub withheld: Vec<GroupOperation>,
    /// Creates postponed because an earlier create of the same group is not settled yet.
    pub deferred: Vec<(GroupOperation, String)>,
    /// Groups no longer pushed, left in Postman because `[groups] delete_removed = false`.
    pub left_alone: Vec<GroupOperation>,
    /// Snapshot groups whose Postman group no longer exists (full runs only): forgotten.
    pub forget: Vec<OktaGroupId>,
    /// Snapshot memberships corrected before any write: what Postman lists on full runs, and
    /// without deactivated users on incremental runs (Postman drops them from groups,
    /// docs/postman-scim.md#deactivated-members-and-groups).
    pub resync: Vec<(OktaGroupId, BTreeSet<ScimUserId>)>,
    /// Okta group members not (yet) eligible: not managed by us or not active. Added later.
    pub pending_members: usize,
    /// Pushed groups that need nothing.
    pub unchanged: usize,
    /// Postman groups no pushed Okta group matches (full runs only); never touched.
    pub unmanaged: Option<usize>,
    pub refusal: Option<Refusal>,
}

impl GroupPlan {
    pub fn count(&self, kind: OpKind) -> usize {
        self.operations.iter().filter(|o| o.kind() == kind).count()
    }

    pub fn writes(&self) -> usize {
        self.operations.iter().filter(|o| o.is_write()).count()
    }

    /// Everyone the planned deletions may cost access, in plan order.
    pub fn losses(&self) -> impl Iterator<Item = &Member> {
        self.operations.iter().flat_map(|o| o.loses_access())
    }
}

/// A group as the planner believes it is in Postman now.
struct Current {
    scim_id: ScimGroupId,
    display_name: String,
    members: BTreeSet<ScimUserId>,
}

/// Computes the group plan.
///
/// - `postman`: every Postman group, on full runs; `None` on incremental runs, which trust the
///   snapshot (and so make no Postman reads).
/// - `users`: the user snapshot, which says who is managed (okta id -> scim id) and active.
pub fn plan_groups(
    desired: &GroupRead,
    snapshot: &BTreeMap<OktaGroupId, ManagedGroup>,
    postman: Option<&[PostmanGroup]>,
    users: &BTreeMap<OktaUserId, ManagedUser>,
    policy: &GroupPolicy,
) -> GroupPlan {
    let mut out = GroupPlan::default();
    let by_scim: BTreeMap<&ScimUserId, &ManagedUser> =
        users.values().map(|u| (&u.scim_id, u)).collect();
    let name_of = |id: &ScimUserId| Member {
        scim_id: id.clone(),
        user_name: by_scim
            .get(id)
            .map_or_else(|| id.to_string(), |u| u.attrs.user_name.clone()),
    };

    // What each snapshot group looks like now, and which Postman groups are linked.
    let mut current: BTreeMap<&OktaGroupId, Current> = BTreeMap::new();
    let mut by_name: BTreeMap<&str, &PostmanGroup> = BTreeMap::new();
    match postman {
        Some(groups) => {
            let by_id: BTreeMap<&ScimGroupId, &PostmanGroup> =
                groups.iter().map(|g| (&g.id, g)).collect();
            let mut linked: BTreeSet<&ScimGroupId> = BTreeSet::new();
            for m in snapshot.values() {
                match by_id.get(&m.scim_id) {
                    Some(g) => {
                        linked.insert(&g.id);
                        if g.members != m.members {
                            out.resync.push((m.okta_id.clone(), g.members.clone()));
                        }
                        current.insert(
                            &m.okta_id,
                            Current {
                                scim_id: g.id.clone(),
                                display_name: g.display_name.clone(),
                                members: g.members.clone(),
                            },
                        );
                    }
                    // Deleted in Postman by hand: forget it; it is created again if still pushed.
                    None => out.forget.push(m.okta_id.clone()),
                }
            }
            for g in groups {
                if !linked.contains(&g.id) {
                    // Postman's displayName filter is case-sensitive (docs/postman-scim.md#groups):
                    // match names exactly.
                    by_name.entry(g.display_name.as_str()).or_insert(g);
                }
            }
        }
        None => {
            for m in snapshot.values() {
                // Deactivation removes the user from the team, and with it from its groups
                // (docs/postman-scim.md#deactivated-members-and-groups).
                let members: BTreeSet<ScimUserId> = m
                    .members
                    .iter()
                    .filter(|s| by_scim.get(s).is_none_or(|u| u.active))
                    .cloned()
                    .collect();
                if members != m.members {
                    out.resync.push((m.okta_id.clone(), members.clone()));
                }
                current.insert(
                    &m.okta_id,
                    Current {
                        scim_id: m.scim_id.clone(),
                        display_name: m.display_name.clone(),
                        members,
                    },
                );
            }
        }
    }

    let partial = !desired.members_complete();
    let mut ops: Vec<GroupOperation> = Vec::new();
    let mut adopted: BTreeSet<&ScimGroupId> = BTreeSet::new();
    // Who stays in some group after this run, for the deletions' loss count.
    let mut kept_members: BTreeSet<ScimUserId> = BTreeSet::new();
    for d in desired.groups.values() {
        let op = |action, reason: String| GroupOperation {
            okta_id: d.okta_id.clone(),
            display_name: d.display_name.clone(),
            action,
            reason,
        };
        // Members Okta wants that we can push: managed by us and active (users must have joined
        // the team before they can be put in a group: docs/postman-scim.md#creating-a-user).
        let eligible: BTreeSet<&ScimUserId> = d
            .members
            .iter()
            .filter_map(|id| users.get(id).filter(|u| u.active).map(|u| &u.scim_id))
            .collect();
        out.pending_members += d.members.len() - eligible.len();
        let before = ops.len();
        let (scim_id, name, members) = match current.get(&d.okta_id) {
            Some(c) => (Some(c.scim_id.clone()), c.display_name.clone(), &c.members),
            None => match by_name.get(d.display_name.as_str()) {
                Some(g) if !adopted.contains(&g.id) => {
                    adopted.insert(&g.id);
                    ops.push(op(
                        GroupAction::Adopt {
                            scim_id: g.id.clone(),
                            members: g.members.clone(),
                        },
                        format!(
                            "an existing Postman group is named {:?}; adopted instead of creating a duplicate",
                            g.display_name
                        ),
                    ));
                    (Some(g.id.clone()), g.display_name.clone(), &g.members)
                }
                _ => {
                    let create = op(
                        GroupAction::Create,
                        "assigned to the Postman app in Okta".to_string(),
                    );
                    if let Some(why) = policy.held.get(&d.okta_id) {
                        out.deferred.push((create, why.clone()));
                        continue;
                    }
                    ops.push(create);
                    (None, d.display_name.clone(), &EMPTY)
                }
            },
        };
        if let Some(id) = &scim_id {
            if name != d.display_name {
                ops.push(op(
                    GroupAction::Rename {
                        scim_id: id.clone(),
                        from: name.clone(),
                        to: d.display_name.clone(),
                    },
                    format!("renamed in Okta: {name:?} -> {:?}", d.display_name),
                ));
            }
        }
        let add: Vec<Member> = eligible
            .iter()
            .filter(|s| !members.contains(**s))
            .map(|s| name_of(s))
            .collect();
        if !add.is_empty() {
            ops.push(op(
                GroupAction::AddMembers {
                    scim_id: scim_id.clone(),
                    members: add.clone(),
                },
                format!("members in Okta: {}", names(&add)),
            ));
        }
        // Only members we manage are removed; anyone else in the group was put there by hand.
        let remove: Vec<Member> = members
            .iter()
            .filter(|s| by_scim.contains_key(s) && !eligible.contains(s))
            .map(&name_of)
            .collect();
        if let (Some(id), false) = (&scim_id, remove.is_empty()) {
            let o = op(
                GroupAction::RemoveMembers {
                    scim_id: id.clone(),
                    members: remove.clone(),
                },
                format!(
                    "no longer members in Okta, or not active: {}",
                    names(&remove)
                ),
            );
            if partial {
                out.withheld.push(o);
            } else {
                ops.push(o);
            }
        }
        let removed: BTreeSet<&ScimUserId> = remove.iter().map(|m| &m.scim_id).collect();
        kept_members.extend(members.iter().filter(|s| !removed.contains(s)).cloned());
        kept_members.extend(eligible.iter().map(|s| (*s).clone()));
        if ops.len() == before && current.contains_key(&d.okta_id) {
            out.unchanged += 1;
        }
    }

    // Groups no longer pushed.
    let stopped: Vec<(&OktaGroupId, &Current)> = current
        .iter()
        .filter(|(id, _)| !desired.groups.contains_key(**id))
        .map(|(id, c)| (*id, c))
        .collect();
    let deleting = policy.delete_removed && !partial;
    for (_, c) in &stopped {
        if !deleting {
            kept_members.extend(c.members.iter().cloned());
        }
    }
    if postman.is_some() {
        for g in by_name.values() {
            if !adopted.contains(&g.id) {
                kept_members.extend(g.members.iter().cloned());
            }
        }
        out.unmanaged = Some(by_name.len() - adopted.len());
    }
    for (okta_id, c) in stopped {
        let loses_access: Vec<Member> = c
            .members
            .iter()
            .filter(|s| !kept_members.contains(*s) && !policy.deactivating.contains(*s))
            // A deactivated member has no access left to lose.
            .filter(|s| by_scim.get(s).is_none_or(|u| u.active))
            .map(&name_of)
            .collect();
        let reason = if loses_access.is_empty() {
            "no longer pushed from Okta".to_string()
        } else {
            format!(
                "no longer pushed from Okta; Postman may deactivate members in no other group: {}",
                names(&loses_access)
            )
        };
        let o = GroupOperation {
            okta_id: okta_id.clone(),
            display_name: c.display_name.clone(),
            action: GroupAction::Delete {
                scim_id: c.scim_id.clone(),
                loses_access,
            },
            reason,
        };
        if !policy.delete_removed {
            out.left_alone.push(GroupOperation {
                reason: "no longer pushed from Okta; left in Postman because [groups] delete_removed = false"
                    .to_string(),
                ..o
            });
        } else if partial {
            out.withheld.push(o);
        } else {
            ops.push(o);
        }
    }
    out.operations = ops;

    // The blast-radius limit, shared with the user plan of the same run.
    let count = policy.deactivating.len() + out.losses().count();
    if out.losses().next().is_some() && count > policy.deactivation_limit {
        out.refusal = Some(Refusal::TooManyDeactivations {
            count,
            limit: policy.deactivation_limit,
        });
    }
    out
}

static EMPTY: BTreeSet<ScimUserId> = BTreeSet::new();

fn names(members: &[Member]) -> String {
    const SHOWN: usize = 20;
    let mut s: Vec<&str> = members
        .iter()
        .take(SHOWN)
        .map(|m| m.user_name.as_str())
        .collect();
    let more = members.len().saturating_sub(SHOWN);
    let more = format!("and {more} more");
    if members.len() > SHOWN {
        s.push(&more);
    }
    s.join(", ")
}

/// The group snapshot after every operation of `plan` succeeded (used by tests: planning again
/// against it yields an empty plan).
pub fn simulate_groups(
    plan: &GroupPlan,
    snapshot: &BTreeMap<OktaGroupId, ManagedGroup>,
    created_id: impl Fn(&OktaGroupId) -> ScimGroupId,
) -> BTreeMap<OktaGroupId, ManagedGroup> {
    let mut snap = snapshot.clone();
    for id in &plan.forget {
        snap.remove(id);
    }
    for (id, members) in &plan.resync {
        if let Some(g) = snap.get_mut(id) {
            g.members = members.clone();
        }
    }
    for op in &plan.operations {
        let id = op.okta_id.clone();
        match &op.action {
            GroupAction::Create => {
                snap.insert(
                    id.clone(),
                    ManagedGroup {
                        scim_id: created_id(&id),
                        okta_id: id,
                        display_name: op.display_name.clone(),
                        members: BTreeSet::new(),
                    },
                );
            }
            GroupAction::Adopt { scim_id, members } => {
                snap.insert(
                    id.clone(),
                    ManagedGroup {
                        okta_id: id,
                        scim_id: scim_id.clone(),
                        display_name: op.display_name.clone(),
                        members: members.clone(),
                    },
                );
            }
            GroupAction::Rename { to, .. } => {
                if let Some(g) = snap.get_mut(&id) {
                    g.display_name = to.clone();
                }
            }
            GroupAction::AddMembers { members, .. } => {
                if let Some(g) = snap.get_mut(&id) {
                    g.members.extend(members.iter().map(|m| m.scim_id.clone()));
                }
            }
            GroupAction::RemoveMembers { members, .. } => {
                if let Some(g) = snap.get_mut(&id) {
                    for m in members {
                        g.members.remove(&m.scim_id);
                    }
                }
            }
            GroupAction::Delete { .. } => {
                snap.remove(&id);
            }
        }
    }
    snap
}

#[cfg(test)]
mod tests;
