//! Group planner tests: table-like cases with small builders, and a property test.

use super::*;
use crate::model::UserAttrs;
use proptest::prelude::*;

fn uid(name: &str) -> OktaUserId {
    OktaUserId::new(format!("00u{name}"))
}

fn sid(name: &str) -> ScimUserId {
    ScimUserId::new(format!("scim-{name}"))
}

fn gid(name: &str) -> OktaGroupId {
    OktaGroupId::new(format!("00g{name}"))
}

fn gsid(name: &str) -> ScimGroupId {
    ScimGroupId::new(format!("sg-{name}"))
}

fn user(name: &str, active: bool) -> ManagedUser {
    ManagedUser {
        okta_id: uid(name),
        scim_id: sid(name),
        attrs: UserAttrs {
            user_name: format!("{name}@example.com"),
            given_name: name.into(),
            family_name: "Doe".into(),
        },
        active,
    }
}

fn users(active: &[&str], inactive: &[&str]) -> BTreeMap<OktaUserId, ManagedUser> {
    active
        .iter()
        .map(|n| user(n, true))
        .chain(inactive.iter().map(|n| user(n, false)))
        .map(|u| (u.okta_id.clone(), u))
        .collect()
}

fn desired(groups: &[(&str, &str, &[&str])]) -> GroupRead {
    GroupRead {
        groups: groups
            .iter()
            .map(|(id, name, members)| {
                (
                    gid(id),
                    DesiredGroup {
                        okta_id: gid(id),
                        display_name: name.to_string(),
                        members: members.iter().map(|m| uid(m)).collect(),
                        members_complete: true,
                    },
                )
            })
            .collect(),
        unresolved: Vec::new(),
    }
}

fn managed(id: &str, name: &str, members: &[&str]) -> (OktaGroupId, ManagedGroup) {
    (
        gid(id),
        ManagedGroup {
            okta_id: gid(id),
            scim_id: gsid(id),
            display_name: name.into(),
            members: members.iter().map(|m| sid(m)).collect(),
        },
    )
}

fn postman(id: &str, name: &str, members: &[&str]) -> PostmanGroup {
    PostmanGroup {
        id: gsid(id),
        display_name: name.into(),
        members: members.iter().map(|m| sid(m)).collect(),
    }
}

fn policy() -> GroupPolicy {
    GroupPolicy {
        delete_removed: false,
        deactivation_limit: 10,
        deactivating: BTreeSet::new(),
        held: BTreeMap::new(),
    }
}

fn kinds(p: &GroupPlan) -> Vec<(&'static str, String)> {
    p.operations
        .iter()
        .map(|o| (o.kind().as_str(), o.display_name.clone()))
        .collect()
}

fn member_names(op: &GroupOperation) -> Vec<String> {
    match &op.action {
        GroupAction::AddMembers { members, .. } | GroupAction::RemoveMembers { members, .. } => {
            members.iter().map(|m| m.user_name.clone()).collect()
        }
        GroupAction::Delete { loses_access, .. } => {
            loses_access.iter().map(|m| m.user_name.clone()).collect()
        }
        _ => Vec::new(),
    }
}

#[test]
fn a_new_group_is_created_then_gets_its_active_managed_members() {
    let d = desired(&[("eng", "Engineering", &["ann", "bob", "cid", "dan"])]);
    // cid is deactivated, dan is not managed (not yet created): neither is pushed now.
    let p = plan_groups(
        &d,
        &BTreeMap::new(),
        None,
        &users(&["ann", "bob"], &["cid"]),
        &policy(),
    );
    assert_eq!(
        kinds(&p),
        vec![
            ("group_create", "Engineering".into()),
            ("group_add_members", "Engineering".into())
        ]
    );
    assert!(matches!(
        p.operations[1].action,
        GroupAction::AddMembers { scim_id: None, .. }
    ));
    assert_eq!(
        member_names(&p.operations[1]),
        vec!["ann@example.com", "bob@example.com"]
    );
    assert_eq!(p.pending_members, 2);
    assert!(p.refusal.is_none());
}

#[test]
fn an_existing_postman_group_with_the_same_name_is_adopted_on_a_full_run() {
    let d = desired(&[("eng", "Engineering", &["ann", "bob"])]);
    let pm = [
        postman("x", "Engineering", &["ann", "eve"]),
        postman("y", "Sales", &[]),
    ];
    let p = plan_groups(
        &d,
        &BTreeMap::new(),
        Some(&pm),
        &users(&["ann", "bob"], &[]),
        &policy(),
    );
    assert_eq!(
        kinds(&p),
        vec![
            ("group_adopt", "Engineering".into()),
            ("group_add_members", "Engineering".into())
        ]
    );
    // eve is not managed by us: never removed.
    assert_eq!(member_names(&p.operations[1]), vec!["bob@example.com"]);
    assert_eq!(p.unmanaged, Some(1));
    assert_eq!(p.writes(), 1);
}

#[test]
fn adoption_matches_the_display_name_exactly() {
    let d = desired(&[("eng", "Engineering", &[])]);
    let pm = [postman("x", "engineering", &[])];
    let p = plan_groups(&d, &BTreeMap::new(), Some(&pm), &users(&[], &[]), &policy());
    assert_eq!(kinds(&p), vec![("group_create", "Engineering".into())]);
}

#[test]
fn a_group_renamed_in_okta_is_renamed_in_postman() {
    let d = desired(&[("eng", "Platform", &["ann"])]);
    let snap: BTreeMap<_, _> = [managed("eng", "Engineering", &["ann"])].into();
    let p = plan_groups(&d, &snap, None, &users(&["ann"], &[]), &policy());
    assert_eq!(kinds(&p), vec![("group_rename", "Platform".into())]);
    assert!(
        matches!(&p.operations[0].action, GroupAction::Rename { from, to, .. } if from == "Engineering" && to == "Platform")
    );
}

#[test]
fn membership_churn_adds_and_removes_only_managed_members() {
    let d = desired(&[("eng", "Engineering", &["ann", "cid"])]);
    let snap: BTreeMap<_, _> = [managed("eng", "Engineering", &["ann", "bob", "zed"])].into();
    // zed is not managed by us (put in the group by hand): left alone.
    let p = plan_groups(
        &d,
        &snap,
        None,
        &users(&["ann", "bob", "cid"], &[]),
        &policy(),
    );
    assert_eq!(
        kinds(&p),
        vec![
            ("group_add_members", "Engineering".into()),
            ("group_remove_members", "Engineering".into())
        ]
    );
    assert_eq!(member_names(&p.operations[0]), vec!["cid@example.com"]);
    assert_eq!(member_names(&p.operations[1]), vec!["bob@example.com"]);
}

#[test]
fn a_deactivated_member_is_dropped_from_the_snapshot_without_a_write() {
    // Postman removes deactivated users from their groups
    // (docs/postman-scim.md#deactivated-members-and-groups): nothing to send.
    let d = desired(&[("eng", "Engineering", &["ann", "bob"])]);
    let snap: BTreeMap<_, _> = [managed("eng", "Engineering", &["ann", "bob"])].into();
    let p = plan_groups(&d, &snap, None, &users(&["ann"], &["bob"]), &policy());
    assert!(p.operations.is_empty(), "{:?}", kinds(&p));
    assert_eq!(p.resync, vec![(gid("eng"), [sid("ann")].into())]);
    assert_eq!(p.pending_members, 1);
}

#[test]
fn a_reactivated_member_is_added_back() {
    let d = desired(&[("eng", "Engineering", &["ann", "bob"])]);
    let snap: BTreeMap<_, _> = [managed("eng", "Engineering", &["ann"])].into();
    let p = plan_groups(&d, &snap, None, &users(&["ann", "bob"], &[]), &policy());
    assert_eq!(member_names(&p.operations[0]), vec!["bob@example.com"]);
}

#[test]
fn a_partial_member_read_withholds_every_removal_and_deletion() {
    let mut d = desired(&[("eng", "Engineering", &["ann", "cid"]), ("ops", "Ops", &[])]);
    if let Some(g) = d.groups.get_mut(&gid("ops")) {
        g.members_complete = false;
    }
    let snap: BTreeMap<_, _> = [
        managed("eng", "Engineering", &["ann", "bob"]),
        managed("old", "Old", &["dan"]),
    ]
    .into();
    let pol = GroupPolicy {
        delete_removed: true,
        ..policy()
    };
    let p = plan_groups(
        &d,
        &snap,
        None,
        &users(&["ann", "bob", "cid", "dan"], &[]),
        &pol,
    );
    // Additions still happen; removals and the deletion wait for a complete read.
    assert_eq!(
        kinds(&p),
        vec![
            ("group_add_members", "Engineering".into()),
            ("group_create", "Ops".into())
        ]
    );
    let withheld: Vec<_> = p.withheld.iter().map(|o| o.kind().as_str()).collect();
    assert_eq!(withheld, vec!["group_remove_members", "group_delete"]);
}

#[test]
fn a_group_no_longer_pushed_is_left_alone_by_default() {
    let d = desired(&[]);
    let snap: BTreeMap<_, _> = [managed("old", "Old", &["ann"])].into();
    let p = plan_groups(&d, &snap, None, &users(&["ann"], &[]), &policy());
    assert!(p.operations.is_empty());
    assert_eq!(p.left_alone.len(), 1);
    assert!(p.left_alone[0].reason.contains("delete_removed = false"));
    assert!(p.refusal.is_none());
}

#[test]
fn a_deleted_group_counts_members_in_no_other_group_as_losing_access() {
    let d = desired(&[("eng", "Engineering", &["ann"])]);
    let snap: BTreeMap<_, _> = [
        managed("eng", "Engineering", &["ann"]),
        managed("old", "Old", &["ann", "bob", "cid"]),
    ]
    .into();
    let pol = GroupPolicy {
        delete_removed: true,
        ..policy()
    };
    let p = plan_groups(&d, &snap, None, &users(&["ann", "bob", "cid"], &[]), &pol);
    assert_eq!(kinds(&p), vec![("group_delete", "Old".into())]);
    // ann stays in Engineering; bob and cid lose their only group.
    assert_eq!(
        member_names(&p.operations[0]),
        vec!["bob@example.com", "cid@example.com"]
    );
    assert!(p.operations[0].reason.contains("bob@example.com"));
    assert!(p.refusal.is_none());
}

#[test]
fn a_member_already_being_deactivated_is_not_counted_twice() {
    let d = desired(&[]);
    let snap: BTreeMap<_, _> = [managed("old", "Old", &["ann", "bob"])].into();
    let pol = GroupPolicy {
        delete_removed: true,
        deactivation_limit: 2,
        deactivating: [sid("ann"), sid("bob")].into(),
        held: BTreeMap::new(),
    };
    let p = plan_groups(&d, &snap, None, &users(&["ann", "bob"], &[]), &pol);
    assert!(member_names(&p.operations[0]).is_empty());
    assert!(p.refusal.is_none());
}

#[test]
fn group_deletions_share_the_deactivation_limit_with_users() {
    let d = desired(&[]);
    let snap: BTreeMap<_, _> = [managed("old", "Old", &["ann", "bob"])].into();
    let pol = GroupPolicy {
        delete_removed: true,
        deactivation_limit: 2,
        deactivating: [sid("zed")].into(),
        held: BTreeMap::new(),
    };
    let p = plan_groups(&d, &snap, None, &users(&["ann", "bob"], &[]), &pol);
    assert_eq!(
        p.refusal,
        Some(Refusal::TooManyDeactivations { count: 3, limit: 2 })
    );
}

#[test]
fn a_full_run_repairs_drift_and_forgets_groups_deleted_in_postman() {
    let d = desired(&[("eng", "Engineering", &["ann"]), ("gone", "Gone", &["ann"])]);
    let snap: BTreeMap<_, _> = [
        managed("eng", "Engineering", &["ann"]),
        managed("gone", "Gone", &["ann"]),
    ]
    .into();
    // Someone renamed the group and removed ann by hand; "Gone" was deleted by hand.
    let pm = [postman("eng", "Eng (old)", &[])];
    let p = plan_groups(&d, &snap, Some(&pm), &users(&["ann"], &[]), &policy());
    assert_eq!(p.forget, vec![gid("gone")]);
    assert_eq!(p.resync, vec![(gid("eng"), BTreeSet::new())]);
    assert_eq!(
        kinds(&p),
        vec![
            ("group_rename", "Engineering".into()),
            ("group_add_members", "Engineering".into()),
            ("group_create", "Gone".into()),
            ("group_add_members", "Gone".into()),
        ]
    );
}

#[test]
fn an_unchanged_group_costs_nothing() {
    let d = desired(&[("eng", "Engineering", &["ann", "bob"])]);
    let snap: BTreeMap<_, _> = [managed("eng", "Engineering", &["ann"])].into();
    // bob is not managed yet: pending, not a change.
    let p = plan_groups(&d, &snap, None, &users(&["ann"], &[]), &policy());
    assert!(p.operations.is_empty());
    assert_eq!(p.unchanged, 1);
    assert_eq!(p.pending_members, 1);
}

#[test]
fn push_selects_groups_by_id_or_exact_name_and_reports_the_rest() {
    let assigned = vec![
        (gid("eng"), "Engineering".to_string()),
        (gid("ops"), "Ops".to_string()),
        (gid("qa"), "QA".to_string()),
    ];
    let (all, none) = select_groups(&assigned, &[]);
    assert_eq!(all, assigned);
    assert!(none.is_empty());
    let (picked, unresolved) = select_groups(
        &assigned,
        &["00gops".to_string(), "QA".into(), "Nope".into()],
    );
    assert_eq!(
        picked.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(),
        vec![gid("ops"), gid("qa")]
    );
    assert_eq!(unresolved, vec!["Nope".to_string()]);
}

proptest! {
    /// Applying a plan (as `simulate_groups` models it) and planning again yields no operation.
    #[test]
    fn planning_again_after_applying_yields_an_empty_plan(
        wanted in proptest::collection::btree_map(0u8..4, proptest::collection::btree_set(0u8..6, 0..6), 0..4),
        snap_groups in proptest::collection::btree_map(0u8..4, (proptest::collection::btree_set(0u8..6, 0..6), any::<bool>()), 0..4),
        active in proptest::collection::btree_set(0u8..6, 0..6),
        delete_removed in any::<bool>(),
    ) {
        let names = |n: u8| format!("u{n}");
        let all: Vec<String> = (0u8..5).map(names).collect();
        let act: Vec<String> = active.iter().copied().filter(|n| *n < 5).map(names).collect();
        let inact: Vec<&str> = all.iter().filter(|n| !act.contains(n)).map(|s| s.as_str()).collect();
        let act: Vec<&str> = act.iter().map(|s| s.as_str()).collect();
        let u = users(&act, &inact); // u5 is never managed
        let d = GroupRead {
            groups: wanted.iter().map(|(g, ms)| {
                let id = gid(&format!("g{g}"));
                (id.clone(), DesiredGroup {
                    okta_id: id,
                    display_name: format!("G{g}"),
                    members: ms.iter().map(|m| uid(&names(*m))).collect(),
                    members_complete: true,
                })
            }).collect(),
            unresolved: Vec::new(),
        };
        let snap: BTreeMap<OktaGroupId, ManagedGroup> = snap_groups.iter().map(|(g, (ms, renamed))| {
            let id = gid(&format!("g{g}"));
            (id.clone(), ManagedGroup {
                okta_id: id,
                scim_id: gsid(&format!("g{g}")),
                display_name: if *renamed { format!("Old{g}") } else { format!("G{g}") },
                members: ms.iter().map(|m| sid(&names(*m))).collect(),
            })
        }).collect();
        let pol = GroupPolicy { delete_removed, deactivation_limit: 100, deactivating: BTreeSet::new(), held: BTreeMap::new() };
        let p = plan_groups(&d, &snap, None, &u, &pol);
        let after = simulate_groups(&p, &snap, |id| ScimGroupId::new(format!("new-{id}")));
        let again = plan_groups(&d, &after, None, &u, &pol);
        prop_assert!(again.operations.is_empty(), "{:?}", kinds(&again));
        prop_assert!(again.resync.is_empty());
    }
}
