//! End-to-end tests of group push (issue 4): the real library against the Okta and Postman
//! simulators on 127.0.0.1. Assertions are on the simulators' final state and the run report.

use crate::common;

use std::collections::BTreeSet;

use common::World;
use okta_postman_sync::sync::{Outcome, RunOptions, RunReport};
use okta_postman_sync_sim::okta::OktaSimConfig;
use okta_postman_sync_sim::postman::{MemberRemoval, PostmanSimConfig};
use okta_postman_sync_sim::{OktaGroupId, OktaUserId};
use tokio_util::sync::CancellationToken;

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| format!("{n}@example.com")).collect()
}

fn ops(r: &RunReport, kind: &str) -> Vec<String> {
    r.operations
        .iter()
        .filter(|o| o.op == kind)
        .map(|o| o.user_name.clone())
        .collect()
}

/// Ann, Bob and Cat assigned directly; Okta groups Engineering (ann, bob) and Sales (cat),
/// both assigned to the app.
async fn world(extra_sync: &str) -> (World, [OktaUserId; 3], OktaGroupId, OktaGroupId) {
    world_on(PostmanSimConfig::default(), extra_sync).await
}

/// [`world`] on a fake Postman configured as `postman`.
async fn world_on(
    postman: PostmanSimConfig,
    extra_sync: &str,
) -> (World, [OktaUserId; 3], OktaGroupId, OktaGroupId) {
    let mut w = World::with(OktaSimConfig::default(), postman).await;
    w.extra_sync = extra_sync.to_string();
    let ann = w.okta_user("Ann", "Lee");
    let bob = w.okta_user("Bob", "Ray");
    let cat = w.okta_user("Cat", "Poe");
    let eng = w.okta.add_group("Engineering");
    let sales = w.okta.add_group("Sales");
    for (g, u) in [(&eng, &ann), (&eng, &bob), (&sales, &cat)] {
        w.okta.add_member(g, u).expect("member");
    }
    w.okta.assign_group(&eng).expect("assign");
    w.okta.assign_group(&sales).expect("assign");
    (w, [ann, bob, cat], eng, sales)
}

#[tokio::test]
async fn first_push_creates_and_adopts_groups_and_a_second_run_changes_nothing() {
    let (w, _, _, _) = world("").await;
    // Sales already exists in Postman with a member we do not manage.
    let root = w
        .postman
        .add_member("root@example.com", "Root", "Admin", true)
        .expect("seed");
    w.postman.add_group("Sales", &[root]).expect("seed group");

    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(ops(&r, "group_create"), vec!["Engineering"]);
    assert_eq!(ops(&r, "group_adopt"), vec!["Sales"]);
    assert_eq!(w.postman.groups().len(), 2, "no duplicate group");
    assert_eq!(w.group_members("Engineering"), set(&["ann.lee", "bob.ray"]));
    // The unmanaged member stays; Cat joins.
    assert_eq!(w.group_members("Sales"), set(&["cat.poe", "root"]));
    let json = serde_json::to_value(&r).expect("json");
    assert!(json["operations"]
        .as_array()
        .expect("ops")
        .iter()
        .any(|o| o["op"] == "group_add_members" && o["okta_id"].as_str().is_some()));

    let (writes, reads) = (w.writes(), w.reads());
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(r.operations.is_empty(), "{:?}", r.operations);
    assert_eq!(r.counts.unchanged_groups, 2);
    assert_eq!(w.writes(), writes, "no SCIM writes");
    assert_eq!(w.reads(), reads, "no Postman reads on an incremental run");
    let r = w.run_full().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(w.writes(), writes, "a full run finds nothing to repair");
}

#[tokio::test]
async fn a_group_create_whose_answer_is_lost_after_it_happened_is_found_and_adopted() {
    let (w, _, _, _) = world("").await;
    // Engineering's POST /Groups reaches Postman, then the connection dies.
    w.postman.lose_next_answer("POST", "/Groups", true);
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    let names: Vec<String> = w
        .postman
        .groups()
        .into_iter()
        .map(|g| g.display_name)
        .collect();
    assert_eq!(names.len(), 2, "no duplicate group: {names:?}");
    assert_eq!(w.group_members("Engineering"), set(&["ann.lee", "bob.ray"]));
    let created = r
        .operations
        .iter()
        .find(|o| o.op == "group_create" && o.user_name == "Engineering")
        .expect("the create is reported");
    assert!(created.reason.contains("adopted"), "{created:?}");
}

#[tokio::test]
async fn a_group_create_whose_answer_is_lost_before_it_happened_is_sent_again_after_a_lookup() {
    let (w, _, _, _) = world("").await;
    // The connection dies before Postman acts: the lookup proves it, so it is safe to resend.
    w.postman.lose_next_answer("POST", "/Groups", false);
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(w.postman.groups().len(), 2);
    assert_eq!(w.group_members("Engineering"), set(&["ann.lee", "bob.ray"]));
    assert_eq!(w.group_members("Sales"), set(&["cat.poe"]));
}

#[tokio::test]
async fn an_interrupted_group_create_is_settled_by_the_next_runs_lookup() {
    let (w, _, _, _) = world("").await;
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    // A crash left a create of "Platform" open, and it had happened in Postman.
    let platform = w.okta.add_group("Platform");
    w.okta.assign_group(&platform).expect("assign");
    w.postman
        .add_group("Platform", &[])
        .expect("the create had happened");
    {
        use okta_postman_sync::model::{OktaGroupId as Gid, OpKind, Subject};
        let mut s = okta_postman_sync::store::Store::open(&w.state_path()).expect("store");
        s.journal_intend(
            "crashed",
            &Subject::Group(Gid::new(platform.as_str())),
            OpKind::GroupCreate,
            "Platform",
            "{}",
            chrono::Utc::now(),
        )
        .expect("intend");
    }
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(w.postman.groups().len(), 3, "not created twice");
    assert!(ops(&r, "group_create").is_empty(), "{:?}", r.operations);
    let store = okta_postman_sync::store::Store::open(&w.state_path()).expect("store");
    assert!(store.journal_pending().expect("pending").is_empty());
    let linked = store.group_snapshot().expect("groups");
    assert!(linked.keys().any(|k| k.as_str() == platform.as_str()));
}

#[tokio::test]
async fn membership_churn_and_a_rename_follow_okta() {
    let (w, [ann, bob, cat], eng, _) = world("").await;
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    let eng_id = w.postman.group_by_name("Engineering").expect("group").id;

    w.okta.remove_member(&eng, &bob).expect("remove");
    w.okta.add_member(&eng, &cat).expect("add");
    w.okta.rename_group(&eng, "Platform").expect("rename");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(ops(&r, "group_rename"), vec!["Platform"]);
    assert!(w.postman.group_by_name("Engineering").is_none());
    let platform = w.postman.group_by_name("Platform").expect("renamed");
    assert_eq!(platform.id, eng_id, "renamed in place, not re-created");
    assert_eq!(w.group_members("Platform"), set(&["ann.lee", "cat.poe"]));
    // Bob is still assigned directly: he keeps his Postman account.
    assert!(w.member("bob.ray@example.com").expect("bob").active);
    let _ = ann;

    let writes = w.writes();
    let r = w.run().await;
    assert!(r.operations.is_empty(), "{:?}", r.operations);
    assert_eq!(w.writes(), writes);
}

#[tokio::test]
async fn a_member_suspended_in_okta_leaves_the_group_and_returns_when_unsuspended() {
    let (w, [ann, _, _], _, _) = world("").await;
    assert_eq!(w.run().await.outcome, Outcome::Ok);

    w.okta.suspend(&ann).expect("suspend");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(r.counts.deactivate, 1);
    assert!(!w.member("ann.lee@example.com").expect("ann").active);
    assert_eq!(w.group_members("Engineering"), set(&["bob.ray"]));
    let writes = w.writes();
    let r = w.run().await;
    assert!(r.operations.is_empty(), "{:?}", r.operations);
    assert_eq!(
        w.writes(),
        writes,
        "no write for a member Postman already dropped"
    );

    w.okta.unsuspend(&ann).expect("unsuspend");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(r.counts.reactivate, 1);
    assert_eq!(w.group_members("Engineering"), set(&["ann.lee", "bob.ray"]));
}

#[tokio::test]
async fn an_unassigned_group_is_left_in_postman_by_default() {
    let (w, _, _, sales) = world("").await;
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    w.okta.unassign_group(&sales).expect("unassign");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(ops(&r, "group_delete").is_empty());
    assert_eq!(r.left_alone.len(), 1);
    assert_eq!(r.left_alone[0].user_name, "Sales");
    assert_eq!(w.group_members("Sales"), set(&["cat.poe"]));
}

#[tokio::test]
async fn an_unassigned_group_is_deleted_with_delete_removed_and_the_dry_run_names_who_loses_access()
{
    let (w, [_, _, cat], eng, sales) = world("\n[groups]\ndelete_removed = true\n").await;
    // Dan and Cat are assigned directly and are in Sales only: deleting Sales costs them their
    // only group, which Postman may answer by deactivating them
    // (docs/postman-scim.md#groups).
    let dan = w.okta_user("Dan", "Fox");
    w.okta.add_member(&sales, &dan).expect("member");
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    let _ = (eng, cat);

    w.okta.unassign_group(&sales).expect("unassign");
    let dry = w
        .engine_dry()
        .run(
            &RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
            &tokio_util::sync::CancellationToken::new(),
            None,
        )
        .await;
    let delete = dry
        .operations
        .iter()
        .find(|o| o.op == "group_delete")
        .expect("planned deletion");
    assert_eq!(delete.status, "planned");
    assert!(
        delete.reason.contains("cat.poe@example.com"),
        "{}",
        delete.reason
    );
    assert!(
        delete.reason.contains("dan.fox@example.com"),
        "{}",
        delete.reason
    );
    assert!(
        w.postman.group_by_name("Sales").is_some(),
        "a dry run changes nothing"
    );

    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(ops(&r, "group_delete"), vec!["Sales"]);
    assert!(w.postman.group_by_name("Sales").is_none());
    assert!(w.postman.group_by_name("Engineering").is_some());
    let writes = w.writes();
    assert!(w.run().await.operations.is_empty());
    assert_eq!(w.writes(), writes);
}

#[tokio::test]
async fn a_group_deletion_over_the_deactivation_limit_is_refused() {
    let (w, _, _, sales) =
        world("max_deactivations = 1\n\n[groups]\ndelete_removed = true\n").await;
    let dan = w.okta_user("Dan", "Fox");
    w.okta.add_member(&sales, &dan).expect("member");
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    w.okta.unassign_group(&sales).expect("unassign");
    let writes = w.writes();
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Refused);
    let refusal = r.refusal.expect("refusal");
    assert!(refusal.contains("dan.fox@example.com"), "{refusal}");
    assert_eq!(w.writes(), writes, "nothing changed");
    assert!(w.postman.group_by_name("Sales").is_some());
    // An explicit allowance lets it through.
    let r = w
        .reconcile(RunOptions {
            allow_deactivations: Some(2),
            ..RunOptions::default()
        })
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(w.postman.group_by_name("Sales").is_none());
}

#[tokio::test]
async fn a_failing_members_page_withholds_removals_and_deletions() {
    let (w, [_, bob, _], eng, sales) = world("\n[groups]\ndelete_removed = true\n").await;
    let ops_group = w.okta.add_group("Ops");
    w.okta.assign_group(&ops_group).expect("assign");
    assert_eq!(w.run().await.outcome, Outcome::Ok);

    w.okta.remove_member(&eng, &bob).expect("remove");
    w.okta.unassign_group(&sales).expect("unassign");
    w.okta.fail_group_members(&ops_group);
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Partial);
    assert!(r.errors.iter().any(|e| e.contains("Ops")), "{:?}", r.errors);
    assert!(ops(&r, "group_remove_members").is_empty());
    assert!(ops(&r, "group_delete").is_empty());
    let withheld: Vec<&str> = r.withheld.iter().map(|o| o.op.as_str()).collect();
    assert!(withheld.contains(&"group_remove_members"), "{withheld:?}");
    assert!(withheld.contains(&"group_delete"), "{withheld:?}");
    assert_eq!(w.group_members("Engineering"), set(&["ann.lee", "bob.ray"]));
    assert!(w.postman.group_by_name("Sales").is_some());

    w.okta.clear_targeted_faults();
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(w.group_members("Engineering"), set(&["ann.lee"]));
    assert!(w.postman.group_by_name("Sales").is_none());
}

#[tokio::test]
async fn a_member_with_a_pending_invite_is_added_once_they_have_joined() {
    let (w, _, eng, _) = world("").await;
    w.postman.add_pending_invite_email("eve.kim@example.com");
    let eve = w.okta_user("Eve", "Kim");
    w.okta.add_member(&eng, &eve).expect("member");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(w.group_members("Engineering"), set(&["ann.lee", "bob.ray"]));
    let add = r
        .operations
        .iter()
        .find(|o| o.op == "group_add_members")
        .expect("add");
    assert!(add.reason.contains("eve.kim@example.com"), "{}", add.reason);

    w.postman
        .accept_invite("eve.kim@example.com")
        .expect("accept");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(
        w.group_members("Engineering"),
        set(&["ann.lee", "bob.ray", "eve.kim"])
    );
}

#[tokio::test]
async fn group_push_can_be_limited_to_listed_groups_or_turned_off() {
    let (mut w, _, _, _) = world("").await;
    w.extra_sync = "\n[groups]\npush = [\"Sales\", \"Nope\"]\n".into();
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(
        r.errors.iter().any(|e| e.contains("Nope")),
        "{:?}",
        r.errors
    );
    assert!(w.postman.group_by_name("Sales").is_some());
    assert!(w.postman.group_by_name("Engineering").is_none());

    w.extra_sync = "\n[groups]\nenabled = false\n".into();
    let r = w.run_full().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(r.operations.iter().all(|o| !o.op.is_group()));
    assert!(w.postman.group_by_name("Engineering").is_none());
}

/// Removes Bob from Engineering in Okta and runs once; returns the fake's removal counters
/// `(refused, by filter path, by value list)`.
async fn remove_bob(postman: PostmanSimConfig) -> (u64, u64, u64) {
    let (w, [_, bob, _], eng, _) = world_on(postman, "").await;
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    w.okta.remove_member(&eng, &bob).expect("remove");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(ops(&r, "group_remove_members"), vec!["Engineering"]);
    assert_eq!(w.group_members("Engineering"), set(&["ann.lee"]));
    let s = w.postman.stats();
    (
        s.member_removals_refused,
        s.filter_path_removals,
        s.value_list_removals,
    )
}

/// Issue 11: an RFC-strict server refuses `remove` with a value list; the RFC 7644 §3.5.2.2
/// filter path works there, first time.
#[tokio::test]
async fn member_removal_uses_the_rfc_filter_path_on_a_strict_server() {
    assert_eq!(remove_bob(PostmanSimConfig::default()).await, (0, 1, 0));
}

/// The lenient server takes either form; the client still sends the RFC one.
#[tokio::test]
async fn member_removal_uses_the_rfc_filter_path_on_a_lenient_server() {
    assert_eq!(remove_bob(PostmanSimConfig::lenient()).await, (0, 1, 0));
}

/// A server that refuses filter paths (400 invalidPath) gets the value list instead, and the
/// same client (the daemon keeps one for its whole life) sends the value list straight away
/// for the next removal.
#[tokio::test]
async fn member_removal_falls_back_to_the_value_list_and_remembers_it_for_the_process() {
    let postman = PostmanSimConfig {
        member_removal: MemberRemoval::ValueListOnly,
        ..PostmanSimConfig::default()
    };
    let (w, [ann, bob, _], eng, _) = world_on(postman, "").await;
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    let engine = w.engine();
    let (opts, cancel) = (RunOptions::default(), CancellationToken::new());
    let run = || engine.run(&opts, &cancel, None);

    w.okta.remove_member(&eng, &bob).expect("remove");
    let r = run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(w.group_members("Engineering"), set(&["ann.lee"]));
    let s = w.postman.stats();
    assert_eq!(
        (s.member_removals_refused, s.value_list_removals),
        (1, 1),
        "one refusal, then the value list"
    );

    w.okta.remove_member(&eng, &ann).expect("remove");
    let r = run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(w.group_members("Engineering").is_empty());
    let s = w.postman.stats();
    assert_eq!(
        (s.member_removals_refused, s.value_list_removals),
        (1, 2),
        "the second removal went straight to the value list"
    );
    assert_eq!(s.filter_path_removals, 0);
}
