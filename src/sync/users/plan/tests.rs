//! Planner tests: table-driven cases with small builders, and property tests.

use super::*;
use proptest::prelude::*;

fn attrs(name: &str) -> UserAttrs {
    UserAttrs {
        user_name: format!("{name}@example.com"),
        given_name: name.to_string(),
        family_name: "Doe".to_string(),
    }
}

fn okta_id(name: &str) -> OktaUserId {
    OktaUserId::new(format!("00u{name}"))
}

fn scim_id(name: &str) -> ScimUserId {
    ScimUserId::new(format!("scim-{name}"))
}

struct U(DesiredUser);
fn user(name: &str) -> U {
    U(DesiredUser {
        okta_id: okta_id(name),
        attrs: attrs(name),
        active: true,
        reason: "app user ACTIVE, Okta user ACTIVE".into(),
    })
}
impl U {
    fn suspended(mut self) -> Self {
        self.0.active = false;
        self.0.reason = "Okta user SUSPENDED".into();
        self
    }
    fn email(mut self, e: &str) -> Self {
        self.0.attrs.user_name = e.into();
        self
    }
    fn given(mut self, g: &str) -> Self {
        self.0.attrs.given_name = g.into();
        self
    }
}

fn read(users: Vec<U>) -> OktaRead {
    OktaRead {
        users: users
            .into_iter()
            .map(|u| (u.0.okta_id.clone(), u.0))
            .collect(),
        complete: true,
        ..OktaRead::default()
    }
}

fn managed(name: &str, active: bool) -> ManagedUser {
    ManagedUser {
        okta_id: okta_id(name),
        scim_id: scim_id(name),
        attrs: attrs(name),
        active,
    }
}

fn snap(users: Vec<ManagedUser>) -> BTreeMap<OktaUserId, ManagedUser> {
    users.into_iter().map(|m| (m.okta_id.clone(), m)).collect()
}

fn member(name: &str, active: bool) -> PostmanUser {
    PostmanUser {
        id: scim_id(name),
        attrs: attrs(name),
        active,
        external_id: None,
    }
}

fn policy() -> Policy {
    Policy {
        max_deactivations: 25,
        allow_deactivations: None,
    }
}

fn kinds(p: &Plan) -> Vec<(OpKind, String)> {
    p.operations
        .iter()
        .map(|o| (o.kind(), o.user_name.clone()))
        .collect()
}

fn none() -> Carried {
    Carried::default()
}

#[test]
fn new_assigned_user_is_created() {
    let p = plan(
        &read(vec![user("ann")]),
        &snap(vec![]),
        None,
        &none(),
        &policy(),
    );
    assert_eq!(kinds(&p), vec![(OpKind::Create, "ann@example.com".into())]);
}

#[test]
fn suspended_user_that_was_never_pushed_is_not_created() {
    let p = plan(
        &read(vec![user("ann").suspended()]),
        &snap(vec![]),
        None,
        &none(),
        &policy(),
    );
    assert!(p.operations.is_empty());
}

#[test]
fn existing_postman_member_is_adopted_not_recreated_case_insensitively() {
    let mut m = member("ann", true);
    m.attrs.user_name = "Ann@Example.com".into();
    let p = plan(
        &read(vec![user("ann")]),
        &snap(vec![]),
        Some(&[m]),
        &none(),
        &policy(),
    );
    let k = kinds(&p);
    assert_eq!(k[0].0, OpKind::Adopt);
    // The adopted account's userName differs in case only: an update aligns it.
    assert_eq!(k[1].0, OpKind::Update);
    assert_eq!(p.count(OpKind::Create), 0);
}

#[test]
fn unmatched_postman_members_are_reported_as_unmanaged_and_never_touched() {
    let p = plan(
        &read(vec![user("ann")]),
        &snap(vec![]),
        Some(&[member("ann", true), member("root", true)]),
        &none(),
        &policy(),
    );
    assert_eq!(p.unmanaged.len(), 1);
    assert_eq!(p.unmanaged[0].user_name, "root@example.com");
    assert!(p
        .operations
        .iter()
        .all(|o| o.user_name != "root@example.com"));
}

#[test]
fn unchanged_state_gives_an_empty_plan() {
    let p = plan(
        &read(vec![user("ann")]),
        &snap(vec![managed("ann", true)]),
        None,
        &none(),
        &policy(),
    );
    assert!(p.operations.is_empty());
    assert_eq!(p.unchanged, 1);
}

#[test]
fn unassigned_user_is_deactivated() {
    let p = plan(
        &read(vec![]),
        &snap(vec![managed("ann", true), managed("bob", true)]),
        None,
        &none(),
        &policy(),
    );
    // Everyone gone from a complete but empty read: suspicious, refused.
    assert!(matches!(
        p.refusal,
        Some(Refusal::EmptyOktaRead { active_managed: 2 })
    ));
    let p = plan(
        &read(vec![user("bob")]),
        &snap(vec![managed("ann", true), managed("bob", true)]),
        None,
        &none(),
        &policy(),
    );
    assert_eq!(
        kinds(&p),
        vec![(OpKind::Deactivate, "ann@example.com".into())]
    );
    assert!(p.refusal.is_none());
}

#[test]
fn suspended_user_is_deactivated_and_reactivated_when_unsuspended() {
    let p = plan(
        &read(vec![user("ann").suspended()]),
        &snap(vec![managed("ann", true)]),
        None,
        &none(),
        &policy(),
    );
    assert_eq!(
        kinds(&p),
        vec![(OpKind::Deactivate, "ann@example.com".into())]
    );
    assert!(p.operations[0].reason.contains("SUSPENDED"));
    let p = plan(
        &read(vec![user("ann")]),
        &snap(vec![managed("ann", false)]),
        None,
        &none(),
        &policy(),
    );
    assert_eq!(
        kinds(&p),
        vec![(OpKind::Reactivate, "ann@example.com".into())]
    );
}

#[test]
fn already_inactive_unassigned_user_needs_nothing() {
    let p = plan(
        &read(vec![user("bob")]),
        &snap(vec![managed("ann", false), managed("bob", true)]),
        None,
        &none(),
        &policy(),
    );
    assert!(p.operations.is_empty());
}

#[test]
fn email_change_is_an_update_of_the_same_account() {
    let p = plan(
        &read(vec![user("ann").email("ann.smith@example.com")]),
        &snap(vec![managed("ann", true)]),
        None,
        &none(),
        &policy(),
    );
    assert_eq!(p.operations.len(), 1);
    match &p.operations[0].action {
        Action::Update {
            scim_id: id,
            from,
            to,
        } => {
            assert_eq!(id, &scim_id("ann"));
            assert_eq!(from.user_name, "ann@example.com");
            assert_eq!(to.user_name, "ann.smith@example.com");
        }
        other => panic!("expected an update, got {other:?}"),
    }
}

#[test]
fn rename_is_an_update() {
    let p = plan(
        &read(vec![user("ann").given("Annie")]),
        &snap(vec![managed("ann", true)]),
        None,
        &none(),
        &policy(),
    );
    assert_eq!(kinds(&p), vec![(OpKind::Update, "ann@example.com".into())]);
    assert!(p.operations[0].reason.contains("Annie"));
}

#[test]
fn incomplete_read_withholds_every_deactivation_but_keeps_creates() {
    let mut r = read(vec![user("bob"), user("cat").suspended(), user("dan")]);
    r.complete = false;
    r.incomplete_reason = Some("page 3 failed".into());
    let p = plan(
        &r,
        &snap(vec![managed("ann", true), managed("cat", true)]),
        None,
        &none(),
        &policy(),
    );
    assert_eq!(p.count(OpKind::Deactivate), 0);
    assert_eq!(p.withheld.len(), 2);
    assert_eq!(p.count(OpKind::Create), 2);
}

#[test]
fn skipped_okta_users_are_never_deactivated() {
    let mut r = read(vec![user("bob")]);
    r.skipped.insert(okta_id("ann"), "no userName".into());
    let p = plan(
        &r,
        &snap(vec![managed("ann", true), managed("bob", true)]),
        None,
        &none(),
        &policy(),
    );
    assert!(p.operations.is_empty());
}

#[test]
fn too_many_deactivations_are_refused_and_can_be_allowed_for_one_run() {
    let s = snap((0..5).map(|i| managed(&format!("u{i}"), true)).collect());
    let r = read(vec![user("u0")]);
    let strict = Policy {
        max_deactivations: 3,
        allow_deactivations: None,
    };
    let p = plan(&r, &s, None, &none(), &strict);
    assert_eq!(
        p.refusal,
        Some(Refusal::TooManyDeactivations { count: 4, limit: 3 })
    );
    assert!(p
        .refusal
        .as_ref()
        .map(|r| r.explain())
        .unwrap_or_default()
        .contains("--allow-deactivations 4"));
    let allowed = Policy {
        max_deactivations: 3,
        allow_deactivations: Some(4),
    };
    assert!(plan(&r, &s, None, &none(), &allowed).refusal.is_none());
}

#[test]
fn full_run_repairs_drift_made_by_hand_in_postman() {
    // ann was deactivated by hand but should be active; bob was reactivated by hand but is suspended.
    let p = plan(
        &read(vec![user("ann"), user("bob").suspended()]),
        &snap(vec![managed("ann", true), managed("bob", false)]),
        Some(&[member("ann", false), member("bob", true)]),
        &none(),
        &policy(),
    );
    assert_eq!(
        kinds(&p),
        vec![
            (OpKind::Reactivate, "ann@example.com".into()),
            (OpKind::Deactivate, "bob@example.com".into())
        ]
    );
}

#[test]
fn a_full_run_refreshes_a_snapshot_row_that_disagrees_with_postman_even_without_an_operation() {
    // A reactivation reached Postman, then the process died before the journal said so: the
    // snapshot still says inactive, Postman (and Okta) say active.
    let p = plan(
        &read(vec![user("ann")]),
        &snap(vec![managed("ann", false)]),
        Some(&[member("ann", true)]),
        &none(),
        &policy(),
    );
    assert!(p.operations.is_empty(), "{:?}", kinds(&p));
    assert_eq!(p.refresh.len(), 1);
    assert!(p.refresh[0].active);
    let after = simulate(&p, &snap(vec![managed("ann", false)]), |_| scim_id("x"));
    assert!(after[&okta_id("ann")].active);
}

fn missing_before(ids: &[&str]) -> Carried {
    Carried {
        missing_before: ids.iter().map(|i| okta_id(i)).collect(),
        ..Carried::default()
    }
}

#[test]
fn vanished_postman_account_is_forgotten_and_recreated_after_two_listings() {
    let p = plan(
        &read(vec![user("ann")]),
        &snap(vec![managed("ann", true)]),
        Some(&[]),
        &missing_before(&["ann"]),
        &policy(),
    );
    assert_eq!(p.forget, vec![okta_id("ann")]);
    assert!(p.missing.is_empty());
    assert_eq!(kinds(&p), vec![(OpKind::Create, "ann@example.com".into())]);
}

#[test]
fn an_account_missing_from_one_listing_is_kept_and_planned_from_the_snapshot() {
    // Ann is still wanted, Bob left Okta: both are missing from this (truncated) listing.
    let p = plan(
        &read(vec![user("ann")]),
        &snap(vec![managed("ann", true), managed("bob", true)]),
        Some(&[]),
        &none(),
        &policy(),
    );
    assert!(p.forget.is_empty(), "{:?}", p.forget);
    assert_eq!(p.missing, vec![okta_id("ann"), okta_id("bob")]);
    // Nobody is created twice, and Bob is still deactivated.
    assert_eq!(
        kinds(&p),
        vec![(OpKind::Deactivate, "bob@example.com".into())]
    );
    assert!(p.refusal.is_none());
}

#[test]
fn a_listing_that_lacks_more_managed_users_than_the_limit_is_refused() {
    let names: Vec<String> = (0..6).map(|i| format!("u{i}")).collect();
    let users = || names.iter().map(|n| user(n)).collect::<Vec<_>>();
    let managed_users: Vec<_> = names.iter().map(|n| managed(n, true)).collect();
    let strict = Policy {
        max_deactivations: 5,
        allow_deactivations: None,
    };
    let p = plan(
        &read(users()),
        &snap(managed_users.clone()),
        Some(&[]),
        &none(),
        &strict,
    );
    assert_eq!(
        p.refusal,
        Some(Refusal::ManagedMissingFromPostman { count: 6, limit: 5 })
    );
    // The second listing in a row counts the same (forgetting is what the guard protects).
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let p = plan(
        &read(users()),
        &snap(managed_users.clone()),
        Some(&[]),
        &missing_before(&all),
        &strict,
    );
    assert!(matches!(
        p.refusal,
        Some(Refusal::ManagedMissingFromPostman { count: 6, .. })
    ));
    // An operator who checked lets it through.
    let allowed = Policy {
        allow_deactivations: Some(6),
        ..strict
    };
    let p = plan(
        &read(users()),
        &snap(managed_users),
        Some(&[]),
        &missing_before(&all),
        &allowed,
    );
    assert!(p.refusal.is_none());
    assert_eq!(p.forget.len(), 6);
}

#[test]
fn quarantined_users_are_deferred_while_others_proceed() {
    let mut q = Carried::default();
    q.held
        .insert(okta_id("ann"), "400 domain not verified".to_string());
    let p = plan(
        &read(vec![user("ann"), user("bob")]),
        &snap(vec![]),
        None,
        &q,
        &policy(),
    );
    assert_eq!(kinds(&p), vec![(OpKind::Create, "bob@example.com".into())]);
    assert_eq!(p.deferred.len(), 1);
}

// ---- properties ----------------------------------------------------------------------------

fn arb_world() -> impl Strategy<
    Value = (
        OktaRead,
        BTreeMap<OktaUserId, ManagedUser>,
        Vec<PostmanUser>,
        bool,
    ),
> {
    // Up to 12 people; each may be in Okta (active or not, maybe renamed), in the snapshot
    // (active or not), and in Postman (active or not).
    let person = (
        0u8..3,        // okta: absent, active, suspended
        any::<bool>(), // renamed in Okta
        0u8..3,        // snapshot: absent, active, inactive
        0u8..3,        // postman: absent, active, inactive
        any::<bool>(), // postman attrs drifted
    );
    (proptest::collection::vec(person, 0..12), any::<bool>()).prop_map(|(people, complete)| {
        let mut r = OktaRead {
            complete,
            ..OktaRead::default()
        };
        let mut s = BTreeMap::new();
        let mut pm = Vec::new();
        for (i, (o, renamed, sn, po, drift)) in people.into_iter().enumerate() {
            let name = format!("p{i}");
            if o > 0 {
                let mut u = user(&name);
                if renamed {
                    u = u.given("Renamed");
                }
                if o == 2 {
                    u = u.suspended();
                }
                r.users.insert(u.0.okta_id.clone(), u.0);
            }
            if sn > 0 {
                s.insert(okta_id(&name), managed(&name, sn == 1));
            }
            if po > 0 {
                let mut m = member(&name, po == 1);
                if drift {
                    m.attrs.family_name = "Drifted".into();
                }
                pm.push(m);
            }
        }
        // A snapshot row must point at an account that exists when Postman is read.
        (r, s, pm, complete)
    })
}

/// Applies a plan to a Postman member list, like a faithful server would.
fn apply_to_postman(p: &Plan, members: &mut Vec<PostmanUser>) {
    for op in &p.operations {
        match &op.action {
            Action::Create { attrs } => members.push(PostmanUser {
                id: ScimUserId::new(format!("new-{}", op.okta_id)),
                attrs: attrs.clone(),
                active: true,
                external_id: Some(op.okta_id.to_string()),
            }),
            Action::Adopt { .. } => {}
            Action::Update { scim_id, to, .. } => {
                if let Some(m) = members.iter_mut().find(|m| &m.id == scim_id) {
                    m.attrs = to.clone();
                }
            }
            Action::Deactivate { scim_id } | Action::Reactivate { scim_id } => {
                let active = matches!(op.action, Action::Reactivate { .. });
                if let Some(m) = members.iter_mut().find(|m| &m.id == scim_id) {
                    m.active = active;
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn applying_a_plan_then_planning_again_gives_an_empty_plan((r, s, pm, _c) in arb_world()) {
        let pol = Policy { max_deactivations: 1000, allow_deactivations: None };
        // Incremental: against the snapshot.
        let p1 = plan(&r, &s, None, &none(), &pol);
        let s2 = simulate(&p1, &s, |id| ScimUserId::new(format!("new-{id}")));
        let p2 = plan(&r, &s2, None, &none(), &pol);
        if r.complete {
            prop_assert!(p2.operations.is_empty(), "second plan not empty: {:?}", p2.operations);
        } else {
            prop_assert!(p2.operations.iter().all(|o| o.kind() == OpKind::Deactivate) || p2.operations.is_empty());
        }
        // Full: against Postman, applying to Postman too.
        let mut members = pm.clone();
        let pf = plan(&r, &s, Some(&members), &none(), &pol);
        apply_to_postman(&pf, &mut members);
        let sf = simulate(&pf, &s, |id| ScimUserId::new(format!("new-{id}")));
        let pf2 = plan(&r, &sf, Some(&members), &none(), &pol);
        if r.complete {
            prop_assert!(pf2.operations.is_empty(), "second full plan not empty: {:?}", pf2.operations);
        }
    }

    #[test]
    fn partial_reads_never_produce_deactivations((mut r, s, pm, _c) in arb_world()) {
        r.complete = false;
        let pol = Policy { max_deactivations: 1000, allow_deactivations: None };
        prop_assert_eq!(plan(&r, &s, None, &none(), &pol).count(OpKind::Deactivate), 0);
        prop_assert_eq!(plan(&r, &s, Some(&pm), &none(), &pol).count(OpKind::Deactivate), 0);
    }

    #[test]
    fn no_plan_that_is_not_refused_deactivates_more_than_the_guard_allows((r, s, pm, _c) in arb_world(), limit in 0usize..5) {
        let pol = Policy { max_deactivations: limit, allow_deactivations: None };
        for p in [plan(&r, &s, None, &none(), &pol), plan(&r, &s, Some(&pm), &none(), &pol)] {
            if p.refusal.is_none() {
                prop_assert!(p.count(OpKind::Deactivate) <= limit);
            }
        }
    }

    #[test]
    fn every_snapshot_user_gets_at_most_one_op_of_each_kind((r, s, pm, _c) in arb_world()) {
        let pol = Policy { max_deactivations: 1000, allow_deactivations: None };
        let p = plan(&r, &s, Some(&pm), &none(), &pol);
        let mut seen = BTreeSet::new();
        for o in &p.operations {
            prop_assert!(seen.insert((o.okta_id.clone(), o.kind())), "duplicate op {:?}", o);
        }
    }
}
