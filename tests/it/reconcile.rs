//! End-to-end tests of one reconcile run: the real library against the stateful Okta and Postman
//! simulators on 127.0.0.1. Assertions are on the simulators' final state, not on call sequences.

use crate::common;

use common::World;
use okta_postman_sync::model::{OktaUserId, OpKind, Subject};
use okta_postman_sync::store::Store;
use okta_postman_sync::sync::{Outcome, RunOptions};
use okta_postman_sync_sim::faults::FaultConfig;
use okta_postman_sync_sim::okta::OktaSimConfig;
use okta_postman_sync_sim::postman::PostmanSimConfig;

#[tokio::test]
async fn first_run_adopts_existing_members_creates_the_rest_and_leaves_unmanaged_alone() {
    let w = World::new().await;
    for (f, l) in [
        ("Ann", "Lee"),
        ("Bob", "Ray"),
        ("Cat", "Poe"),
        ("Dan", "Fox"),
    ] {
        w.okta_user(f, l);
    }
    // Ann is already a member (different case); Bob was deactivated by hand; root is unmanaged.
    w.postman
        .add_member("Ann.Lee@Example.com", "Ann", "Lee", true)
        .expect("seed");
    w.postman
        .add_member("bob.ray@example.com", "Bob", "Ray", false)
        .expect("seed");
    w.postman
        .add_member("root@example.com", "Root", "Admin", true)
        .expect("seed");

    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(r.full, "the first run is always full");
    assert_eq!(r.counts.adopt, 2);
    assert_eq!(r.counts.create, 2);
    assert_eq!(r.counts.reactivate, 1);
    assert_eq!(r.unmanaged_members, Some(1));

    let members = w.members_without_duplicates();
    assert_eq!(members.len(), 5);
    for email in [
        "ann.lee@example.com",
        "bob.ray@example.com",
        "cat.poe@example.com",
        "dan.fox@example.com",
    ] {
        assert!(members[email].active, "{email} should be active");
    }
    assert!(
        members["root@example.com"].active,
        "unmanaged members are never touched"
    );
    assert_eq!(w.postman.stats().user_deletes_attempted, 0);
}

#[tokio::test]
async fn second_run_with_no_okta_change_makes_zero_scim_requests() {
    let w = World::new().await;
    for i in 0..20 {
        w.okta_user(&format!("User{i}"), "Test");
    }
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    let (writes, reads) = (w.writes(), w.reads());
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert!(!r.full, "an incremental run trusts the snapshot");
    assert!(r.operations.is_empty());
    assert_eq!(r.counts.unchanged, 20);
    assert_eq!(w.writes(), writes, "no SCIM writes");
    assert_eq!(w.reads(), reads, "no SCIM reads on an incremental run");
    // A full run re-reads Postman but still writes nothing.
    let r = w.run_full().await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(w.writes(), writes);
}

#[tokio::test]
async fn unassigned_user_is_deactivated_never_deleted() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    w.okta_user("Bob", "Ray");
    w.run().await;
    w.okta.unassign_user(&ann).expect("unassign");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(r.counts.deactivate, 1);
    assert!(
        !w.member("ann.lee@example.com")
            .expect("still listed")
            .active
    );
    assert!(w.member("bob.ray@example.com").expect("bob").active);
    assert_eq!(w.postman.stats().user_deletes_attempted, 0);
}

#[tokio::test]
async fn suspended_okta_user_is_deactivated_and_reactivated_when_unsuspended() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    w.run().await;
    let id = w.member("ann.lee@example.com").expect("created").id;
    w.okta.suspend(&ann).expect("suspend");
    let r = w.run().await;
    assert_eq!(r.counts.deactivate, 1);
    assert!(
        r.operations[0].reason.contains("SUSPENDED"),
        "{}",
        r.operations[0].reason
    );
    assert!(!w.member("ann.lee@example.com").expect("listed").active);
    w.okta.unsuspend(&ann).expect("unsuspend");
    let r = w.run().await;
    assert_eq!(r.counts.reactivate, 1);
    let m = w.member("ann.lee@example.com").expect("listed");
    assert!(m.active);
    assert_eq!(m.id, id, "the same Postman account throughout");
}

#[tokio::test]
async fn rename_in_okta_updates_the_name_in_postman() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    w.run().await;
    w.okta.set_name(&ann, "Annie", "Lee-Smith").expect("rename");
    let r = w.run().await;
    assert_eq!(r.counts.update, 1);
    let m = w.member("ann.lee@example.com").expect("listed");
    assert_eq!(
        (m.given_name.as_str(), m.family_name.as_str()),
        ("Annie", "Lee-Smith")
    );
    assert!(m.active, "a name change keeps the member active");
}

#[tokio::test]
async fn email_change_keeps_the_same_postman_account() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    w.run().await;
    let id = w.member("ann.lee@example.com").expect("created").id;
    w.okta
        .set_email(&ann, "ann.smith@example.com")
        .expect("email");
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(r.counts.update, 1);
    assert_eq!(r.counts.create, 0);
    assert_eq!(r.counts.deactivate, 0);
    let m = w.member("ann.smith@example.com").expect("renamed account");
    assert_eq!(m.id, id);
    assert!(w.member("ann.lee@example.com").is_none());
    assert_eq!(w.postman.users().len(), 1);
}

#[tokio::test]
async fn partial_okta_read_creates_but_never_deactivates() {
    let mut w = World::new().await;
    w.extra_okta = "page_size = 2".into();
    let ids: Vec<_> = (0..6)
        .map(|i| w.okta_user(&format!("User{i}"), "Test"))
        .collect();
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    w.okta.unassign_user(&ids[0]).expect("unassign");
    let newcomer = w.okta_user("New", "Comer");
    w.okta.fail_users_page(2);
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Partial);
    assert_eq!(r.counts.deactivate, 0);
    assert!(
        r.errors.iter().any(|e| e.contains("Okta")),
        "{:?}",
        r.errors
    );
    assert!(
        w.member("user0.test@example.com").expect("listed").active,
        "no deactivation from a partial read"
    );
    let _ = newcomer;
    w.okta.clear_targeted_faults();
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(!w.member("user0.test@example.com").expect("listed").active);
    assert!(w.member("new.comer@example.com").expect("created").active);
}

#[tokio::test]
async fn deactivation_guard_refuses_and_lists_who_until_allowed() {
    let mut w = World::new().await;
    w.extra_sync = "max_deactivations = 2".into();
    let ids: Vec<_> = (0..5)
        .map(|i| w.okta_user(&format!("User{i}"), "Test"))
        .collect();
    w.run().await;
    let writes = w.writes();
    for id in &ids[..3] {
        w.okta.unassign_user(id).expect("unassign");
    }
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Refused);
    let refusal = r.refusal.clone().expect("explained");
    assert!(refusal.contains("--allow-deactivations 3"), "{refusal}");
    assert!(refusal.contains("user0.test@example.com"), "{refusal}");
    assert_eq!(w.writes(), writes, "a refused run changes nothing");
    let r = w
        .reconcile(RunOptions {
            allow_deactivations: Some(3),
            ..RunOptions::default()
        })
        .await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.counts.deactivate, 3);
}

#[tokio::test]
async fn empty_okta_answer_is_suspicious_not_everyone_leaving() {
    let w = World::new().await;
    let ids: Vec<_> = (0..3)
        .map(|i| w.okta_user(&format!("User{i}"), "Test"))
        .collect();
    w.run().await;
    for id in &ids {
        w.okta.unassign_user(id).expect("unassign");
    }
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Refused);
    assert!(w.postman.users().iter().all(|u| u.active));
}

#[tokio::test]
async fn dry_run_changes_nothing_anywhere() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let r = w
        .engine_dry()
        .run(
            &RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
            &Default::default(),
            None,
        )
        .await;
    assert_eq!(r.counts.create, 1);
    assert_eq!(r.operations[0].status, "planned");
    assert_eq!(w.writes(), 0);
    assert!(!w.state_path().exists(), "a dry run creates no state file");
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_convergence() {
    let mut w = World::new().await;
    w.extra_okta = "page_size = 5".into();
    for i in 0..30 {
        w.okta_user(&format!("User{i}"), "Test");
    }
    w.postman.set_faults(FaultConfig {
        seed: 7,
        rate_429: 0.15,
        rate_500: 0.05,
        rate_503: 0.1,
        ..FaultConfig::default()
    });
    w.okta.set_faults(FaultConfig {
        seed: 8,
        rate_429: 0.2,
        rate_503: 0.2,
        ..FaultConfig::default()
    });
    let mut outcome = w.run().await.outcome;
    for _ in 0..3 {
        if outcome == Outcome::Ok {
            break;
        }
        outcome = w.run().await.outcome;
    }
    assert_eq!(outcome, Outcome::Ok);
    let injected: u64 = w.postman.stats().requests.faults.values().sum();
    assert!(injected > 0, "the Postman fake injected faults");
    assert!(
        w.okta.stats().requests.faults.values().sum::<u64>() > 0,
        "the Okta fake injected faults"
    );
    let members = w.members_without_duplicates();
    assert_eq!(members.len(), 30);
    assert!(members.values().all(|m| m.active));
}

#[tokio::test]
async fn one_failing_user_does_not_stop_the_others_and_is_quarantined() {
    let mut w = World::new().await;
    w.extra_sync = "quarantine_after = 2\nquarantine_for = \"1h\"".into();
    for i in 0..10 {
        w.okta_user(&format!("User{i}"), "Test");
    }
    w.postman.fail_user(
        "user3.test@example.com",
        400,
        Some("invalidSyntax"),
        "The request body seems to be incomplete or have unsupported characters.",
    );
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Partial);
    assert_eq!(r.counts.create, 9);
    assert_eq!(r.counts.failed, 1);
    assert!(r
        .errors
        .iter()
        .any(|e| e.contains("user3.test@example.com")));
    // Second failure quarantines; the third run defers the user and makes no write for them.
    assert_eq!(w.run().await.counts.failed, 1);
    let writes = w.writes();
    let r = w.run().await;
    assert_eq!(r.deferred.len(), 1);
    assert_eq!(
        r.outcome,
        Outcome::Ok,
        "a quarantined user alone does not fail every run"
    );
    assert_eq!(w.writes(), writes);
    let store = Store::open(&w.state_path()).expect("store");
    let failures = store.failures().expect("failures");
    assert_eq!(failures.len(), 1);
    assert!(failures[0].retry_after.is_some());
}

#[tokio::test]
async fn full_run_repairs_drift_made_by_hand_in_postman() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    w.okta_user("Bob", "Ray");
    w.run().await;
    w.okta.unassign_user(&ann).expect("unassign");
    w.run().await; // ann deactivated
    w.postman
        .reactivate_by_hand("ann.lee@example.com")
        .expect("by hand");
    w.postman
        .deactivate_by_hand("bob.ray@example.com")
        .expect("by hand");
    // An incremental run trusts the snapshot and does not see it...
    assert!(w.run().await.operations.is_empty());
    // ...a full run repairs it.
    let r = w.run_full().await;
    assert_eq!(r.counts.deactivate, 1);
    assert_eq!(r.counts.reactivate, 1);
    assert!(!w.member("ann.lee@example.com").expect("listed").active);
    assert!(w.member("bob.ray@example.com").expect("listed").active);
}

#[tokio::test]
async fn a_truncated_postman_listing_does_not_unmanage_people_who_later_leave_okta() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    w.okta_user("Bob", "Ray");
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    // A full listing cut short: Ann's account is still there but not listed.
    w.postman.hide_from_listing("ann.lee@example.com");
    let r = w.run_full().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert_eq!(r.counts.create, 0, "nobody is created twice");
    let snapshot = Store::open(&w.state_path())
        .expect("store")
        .snapshot()
        .expect("snapshot");
    assert!(
        // The simulator's ids are its own type: the snapshot is keyed by the product's.
        snapshot.contains_key(&OktaUserId::new(ann.as_str())),
        "one listing does not forget Ann"
    );
    // Ann leaves Okta: she is deactivated, not left active as an unmanaged member.
    w.okta.unassign_user(&ann).expect("unassign");
    let r = w.run().await;
    assert_eq!(r.counts.deactivate, 1, "{:?}", r.operations);
    assert!(!w.member("ann.lee@example.com").expect("listed").active);
}

#[tokio::test]
async fn a_listing_that_lacks_many_managed_users_is_refused_and_names_them() {
    let mut w = World::new().await;
    w.extra_sync = "max_deactivations = 2".into();
    for i in 0..5 {
        w.okta_user(&format!("User{i}"), "Test");
    }
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    for i in 0..3 {
        w.postman
            .hide_from_listing(&format!("user{i}.test@example.com"));
    }
    let writes = w.writes();
    let r = w.run_full().await;
    assert_eq!(r.outcome, Outcome::Refused, "{:?}", r.errors);
    let refusal = r.refusal.expect("explained");
    assert!(
        refusal.contains("user0.test@example.com") && refusal.contains("lacks 3 managed"),
        "{refusal}"
    );
    assert_eq!(w.writes(), writes, "a refused run changes nothing");
    let store = Store::open(&w.state_path()).expect("store");
    assert_eq!(store.snapshot().expect("snapshot").len(), 5);
    assert!(
        store.missing().expect("missing").is_empty(),
        "no marks either"
    );
}

#[tokio::test]
async fn an_interrupted_create_that_cannot_be_resolved_holds_only_its_user() {
    let w = World::new().await;
    w.okta_user("Bob", "Ray");
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    // A create of Ann was interrupted, and Postman refuses every lookup of her userName.
    let ann = w.okta_user("Ann", "Lee");
    {
        let mut s = Store::open(&w.state_path()).expect("store");
        s.journal_intend(
            "crashed",
            &Subject::User(OktaUserId::new(ann.as_str())),
            OpKind::Create,
            "ann.lee@example.com",
            "{}",
            chrono::Utc::now(),
        )
        .expect("intend");
    }
    w.postman
        .fail_lookup("ann.lee@example.com", 400, "invalid filter");
    w.okta_user("Cat", "Poe");
    for attempt in 1..=okta_postman_sync::store::RECOVERY_ATTEMPTS + 1 {
        let r = w.run().await;
        assert_ne!(
            r.outcome,
            Outcome::Failed,
            "attempt {attempt}: {:?}",
            r.errors
        );
        assert!(
            w.member("cat.poe@example.com").is_some(),
            "the rest of the run proceeds"
        );
        assert!(
            w.member("ann.lee@example.com").is_none(),
            "Ann is not created while the create may have happened"
        );
        let held = r
            .deferred
            .iter()
            .find(|o| o.user_name == "ann.lee@example.com")
            .expect("Ann is held");
        assert!(
            held.error
                .as_deref()
                .is_some_and(|e| e.contains("interrupted create")),
            "{held:?}"
        );
    }
    let store = Store::open(&w.state_path()).expect("store");
    let open = store.journal_unresolved().expect("unresolved");
    assert_eq!(open.len(), 1);
    assert!(open[0].parked, "{open:?}");
    // `status` (and /status with its token) shows it, with the reason.
    let status = okta_postman_sync::status::collect(&store, 5).expect("status");
    assert_eq!(status.unresolved_writes.len(), 1);
    let text = okta_postman_sync::status::render(&status);
    assert!(
        text.contains("parked") && text.contains("invalid filter"),
        "{text}"
    );
    drop(store);
    // A full run settles it from the listing: the create never happened, so Ann is created.
    let r = w.run_full().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(w.member("ann.lee@example.com").is_some());
    assert_eq!(w.members_without_duplicates().len(), 3);
    let store = Store::open(&w.state_path()).expect("store");
    assert!(store.journal_pending().expect("pending").is_empty());
}

#[tokio::test]
async fn losing_the_state_file_recreates_nothing_and_deactivates_nobody() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    for i in 0..5 {
        w.okta_user(&format!("User{i}"), "Test");
    }
    w.run().await;
    w.okta.suspend(&ann).expect("suspend");
    w.run().await;
    let before = w.members_without_duplicates();
    let creates = w.postman.stats().creates_succeeded;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", w.state_path().display()));
    }
    let r = w.run().await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.errors);
    assert!(r.full);
    assert_eq!(r.counts.create, 0);
    assert_eq!(r.counts.deactivate, 0);
    assert_eq!(r.counts.adopt, 6);
    assert_eq!(w.postman.stats().creates_succeeded, creates);
    assert_eq!(w.members_without_duplicates().len(), before.len());
}

/// Issue 11: on a server that implements PUT as a full replace (RFC 7644 §3.5.1), a rename used
/// to clear `externalId` because the PUT did not carry it. Checked on the strict fake (the
/// default) and on the lenient one.
#[tokio::test]
async fn a_rename_in_okta_keeps_external_id_and_active_on_strict_and_lenient_servers() {
    for (label, postman) in [
        ("strict", PostmanSimConfig::default()),
        ("lenient", PostmanSimConfig::lenient()),
    ] {
        let w = World::with(OktaSimConfig::default(), postman).await;
        let ann = w.okta_user("Ann", "Lee");
        assert_eq!(w.run().await.outcome, Outcome::Ok, "{label}");
        let created = w.member("ann.lee@example.com").expect("created");
        assert_eq!(
            created.external_id.as_deref(),
            Some(ann.as_str()),
            "{label}"
        );

        w.okta.set_name(&ann, "Annie", "Lee-Smith").expect("rename");
        let r = w.run().await;
        assert_eq!(r.outcome, Outcome::Ok, "{label}: {:?}", r.errors);
        assert_eq!(r.counts.update, 1, "{label}");
        let m = w.member("ann.lee@example.com").expect("listed");
        assert_eq!(m.id, created.id, "{label}");
        assert_eq!(
            (m.given_name.as_str(), m.family_name.as_str()),
            ("Annie", "Lee-Smith"),
            "{label}"
        );
        assert_eq!(
            m.external_id.as_deref(),
            Some(ann.as_str()),
            "{label}: externalId survives the PUT"
        );
        assert!(m.active, "{label}: a name change keeps the member active");
        w.assert_snapshot_matches_postman();
    }
}

/// Issue 11: the SCIM client used to follow a 307 to another origin, re-send the user there
/// and store that server's id as the Postman id. Now the redirect is an error naming the host,
/// the other server receives nothing, and nothing is stored.
#[tokio::test]
async fn a_redirect_from_postman_is_refused_and_nothing_reaches_the_target_or_the_snapshot() {
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let redirector = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("Location", format!("{}/Users?x=1", w.postman.scim_url())),
        )
        .mount(&redirector)
        .await;
    let text = w.config_text().replace(
        &w.postman.scim_url(),
        &format!("{}/scim/v2", redirector.uri()),
    );
    let r = w
        .engine_from(&text)
        .run(
            &RunOptions::default(),
            &tokio_util::sync::CancellationToken::new(),
            None,
        )
        .await;
    assert_ne!(r.outcome, Outcome::Ok);
    let target = url::Url::parse(&w.postman.base_url()).expect("url");
    let host = format!(
        "{}:{}",
        target.host_str().expect("host"),
        target.port().expect("port")
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("redirect") && e.contains(&host) && !e.contains("x=1")),
        "{:?}",
        r.errors
    );
    let stats = w.postman.stats();
    assert!(stats.requests.by_method.is_empty(), "{stats:?}");
    assert!(w.postman.users().is_empty());
    let store = Store::open_read_only(&w.state_path())
        .expect("open state")
        .expect("state exists");
    assert!(
        store.snapshot().expect("snapshot").is_empty(),
        "no id stored"
    );
}
