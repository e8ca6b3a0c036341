//! The group side of a targeted reconcile, as pure functions: which pushed groups the users a
//! run re-read can change, and what the group planner is given for them. A targeted run reads
//! Okta only about what the events named — the groups an event named (all their members), and
//! for each user re-read, the groups Okta says that user belongs to — and trusts the group
//! snapshot for everyone else, exactly as it trusts the user snapshot for the users it did not
//! re-read. The planner is the same `groups::plan`; nothing here writes or reads anything.
//!
//! It must not produce a group that is not pushed, nor a group the snapshot has and the run did
//! not name (that would read as "no longer pushed" and plan a deletion).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{DesiredGroup, ManagedGroup, ManagedUser, OktaGroupId, OktaUserId, ScimUserId};
use crate::sync::groups::plan::GroupRead;
use crate::sync::groups::read::GroupInputs;

/// Managed users by their Postman id: the user snapshot read backwards, built once per run.
pub type ByScim<'a> = BTreeMap<&'a ScimUserId, &'a OktaUserId>;

pub fn by_scim(users: &BTreeMap<OktaUserId, ManagedUser>) -> ByScim<'_> {
    users.values().map(|u| (&u.scim_id, &u.okta_id)).collect()
}

/// What the targeted run learnt from Okta about groups, before any write.
#[derive(Debug, Default)]
pub struct Seen {
    /// The pushed groups (assigned to the app and selected by `[groups] push`), with their names.
    pub pushed: BTreeMap<OktaGroupId, String>,
    /// Groups whose members were read in full (an event named the group).
    pub members: BTreeMap<OktaGroupId, BTreeSet<OktaUserId>>,
    /// Users whose groups were looked up, with the groups Okta says they belong to.
    pub user_groups: BTreeMap<OktaUserId, BTreeSet<OktaGroupId>>,
    /// Every user the run re-read (whatever the answer): the snapshot groups holding one of
    /// them are planned again, so a deactivation's membership change is recorded.
    pub reread: BTreeSet<OktaUserId>,
}

/// The pushed groups this run can change: named by an event, held by a re-read user in Okta,
/// or holding a re-read user in the snapshot.
pub fn affected(
    seen: &Seen,
    users: &BTreeMap<OktaUserId, ManagedUser>,
    groups: &BTreeMap<OktaGroupId, ManagedGroup>,
) -> BTreeSet<OktaGroupId> {
    let reread: BTreeSet<&ScimUserId> = seen
        .reread
        .iter()
        .filter_map(|id| users.get(id).map(|u| &u.scim_id))
        .collect();
    let holding = groups
        .values()
        .filter(|g| g.members.iter().any(|m| reread.contains(m)))
        .map(|g| &g.okta_id);
    seen.members
        .keys()
        .chain(seen.user_groups.values().flatten())
        .chain(holding)
        .filter(|id| seen.pushed.contains_key(*id))
        .cloned()
        .collect()
}

/// The affected groups the snapshot does not have and no event had read in full: their
/// members must be read before they can be planned (a group created with the few members this
/// run happens to know would be wrong until the next scheduled run).
pub fn to_read(
    affected: &BTreeSet<OktaGroupId>,
    seen: &Seen,
    groups: &BTreeMap<OktaGroupId, ManagedGroup>,
) -> Vec<OktaGroupId> {
    affected
        .iter()
        .filter(|g| !groups.contains_key(*g) && !seen.members.contains_key(*g))
        .cloned()
        .collect()
}

/// The group planner's inputs for `affected`: a group read in full is what Okta said; any
/// other is its snapshot membership (by Okta id, through the user snapshot), with each looked-up
/// user put in or taken out as Okta says. The snapshot is restricted to the affected groups, so
/// no group reads as "no longer pushed". Incremental: Postman is not read.
pub fn inputs(
    affected: &BTreeSet<OktaGroupId>,
    seen: &Seen,
    by_scim: &ByScim<'_>,
    groups: &BTreeMap<OktaGroupId, ManagedGroup>,
) -> GroupInputs {
    let mut read = GroupRead::default();
    let mut snapshot = BTreeMap::new();
    for id in affected {
        let Some(name) = seen.pushed.get(id) else {
            continue;
        };
        let members = match (seen.members.get(id), groups.get(id)) {
            (Some(read), _) => read.clone(),
            (None, Some(g)) => {
                let mut m: BTreeSet<OktaUserId> = g
                    .members
                    .iter()
                    .filter_map(|s| by_scim.get(s).map(|o| (*o).clone()))
                    .collect();
                for (user, in_groups) in &seen.user_groups {
                    if in_groups.contains(id) {
                        m.insert(user.clone());
                    } else {
                        m.remove(user);
                    }
                }
                m
            }
            // Neither read nor in the snapshot: the caller reads it first (`to_read`); a group
            // whose read failed is left to the next scheduled run.
            (None, None) => continue,
        };
        if let Some(g) = groups.get(id) {
            snapshot.insert(id.clone(), g.clone());
        }
        read.groups.insert(
            id.clone(),
            DesiredGroup {
                okta_id: id.clone(),
                display_name: name.clone(),
                members,
                members_complete: true,
            },
        );
    }
    GroupInputs {
        read,
        snapshot,
        postman: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ScimGroupId, UserAttrs};
    use crate::sync::groups::plan::{GroupAction, GroupPolicy};

    fn user(id: &str, active: bool) -> (OktaUserId, ManagedUser) {
        (
            OktaUserId::new(id),
            ManagedUser {
                okta_id: OktaUserId::new(id),
                scim_id: ScimUserId::new(format!("s-{id}")),
                attrs: UserAttrs {
                    user_name: format!("{id}@example.com"),
                    given_name: id.into(),
                    family_name: "T".into(),
                },
                active,
            },
        )
    }

    fn group(id: &str, members: &[&str]) -> (OktaGroupId, ManagedGroup) {
        (
            OktaGroupId::new(id),
            ManagedGroup {
                okta_id: OktaGroupId::new(id),
                scim_id: ScimGroupId::new(format!("sg-{id}")),
                display_name: id.to_uppercase(),
                members: members
                    .iter()
                    .map(|m| ScimUserId::new(format!("s-{m}")))
                    .collect(),
            },
        )
    }

    fn uids(xs: &[&str]) -> BTreeSet<OktaUserId> {
        xs.iter().map(|x| OktaUserId::new(*x)).collect()
    }

    fn gids(xs: &[&str]) -> BTreeSet<OktaGroupId> {
        xs.iter().map(|x| OktaGroupId::new(*x)).collect()
    }

    fn pushed(xs: &[&str]) -> BTreeMap<OktaGroupId, String> {
        xs.iter()
            .map(|x| (OktaGroupId::new(*x), x.to_uppercase()))
            .collect()
    }

    #[test]
    fn a_looked_up_user_joins_and_leaves_groups_and_nobody_else_moves() {
        let users: BTreeMap<_, _> = [user("a", true), user("b", true), user("c", true)].into();
        let groups: BTreeMap<_, _> = [group("eng", &["a", "b"]), group("ops", &["c"])].into();
        // `a` left eng and joined ops; `b` and `c` were not re-read.
        let seen = Seen {
            pushed: pushed(&["eng", "ops", "sales"]),
            user_groups: [(OktaUserId::new("a"), gids(&["ops", "unpushed"]))].into(),
            reread: uids(&["a"]),
            ..Seen::default()
        };
        let affected = affected(&seen, &users, &groups);
        assert_eq!(
            affected,
            gids(&["eng", "ops"]),
            "sales names nobody re-read"
        );
        assert!(to_read(&affected, &seen, &groups).is_empty());
        let inputs = inputs(&affected, &seen, &by_scim(&users), &groups);
        let plan = inputs.plan(&users, &GroupPolicy::default());
        let kinds: Vec<(String, &GroupAction)> = plan
            .operations
            .iter()
            .map(|o| (o.okta_id.to_string(), &o.action))
            .collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(
            matches!(kinds[0], (ref g, GroupAction::RemoveMembers { members, .. })
            if g == "eng" && members.len() == 1 && members[0].user_name == "a@example.com")
        );
        assert!(
            matches!(kinds[1], (ref g, GroupAction::AddMembers { members, .. })
            if g == "ops" && members.len() == 1 && members[0].user_name == "a@example.com")
        );
        assert!(plan.refusal.is_none());
    }

    #[test]
    fn a_group_read_in_full_is_what_okta_said_and_an_unknown_one_is_read_first() {
        let users: BTreeMap<_, _> = [user("a", true), user("b", true)].into();
        let groups: BTreeMap<_, _> = [group("eng", &["a"])].into();
        let seen = Seen {
            pushed: pushed(&["eng", "new"]),
            members: [(OktaGroupId::new("eng"), uids(&["b"]))].into(),
            user_groups: [(OktaUserId::new("a"), gids(&["new"]))].into(),
            reread: uids(&["a"]),
        };
        let affected = affected(&seen, &users, &groups);
        assert_eq!(affected, gids(&["eng", "new"]));
        assert_eq!(
            to_read(&affected, &seen, &groups),
            vec![OktaGroupId::new("new")]
        );
        // Until `new` is read it is not planned at all (never created with a guessed roster).
        let inputs = inputs(&affected, &seen, &by_scim(&users), &groups);
        assert_eq!(inputs.read.groups.len(), 1);
        assert_eq!(
            inputs.read.groups[&OktaGroupId::new("eng")].members,
            uids(&["b"])
        );
    }

    #[test]
    fn no_group_reads_as_unpushed_so_no_deletion_is_planned() {
        let users: BTreeMap<_, _> = [user("a", false)].into();
        // `a` was deactivated; `old` is in the snapshot but no longer pushed.
        let groups: BTreeMap<_, _> = [group("eng", &["a"]), group("old", &["a"])].into();
        let seen = Seen {
            pushed: pushed(&["eng"]),
            reread: uids(&["a"]),
            ..Seen::default()
        };
        let affected = affected(&seen, &users, &groups);
        assert_eq!(affected, gids(&["eng"]));
        let inputs = inputs(&affected, &seen, &by_scim(&users), &groups);
        assert_eq!(inputs.snapshot.len(), 1);
        let plan = inputs.plan(
            &users,
            &GroupPolicy {
                delete_removed: true,
                ..GroupPolicy::default()
            },
        );
        assert!(plan.operations.is_empty(), "{:?}", plan.operations);
        // The deactivated member's departure is recorded (Postman drops them from groups).
        assert_eq!(
            plan.resync,
            vec![(OktaGroupId::new("eng"), BTreeSet::new())]
        );
    }
}
