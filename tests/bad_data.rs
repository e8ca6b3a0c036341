//! Bad data from either API: malformed JSON, wrong types, HTML pages, truncated bodies and
//! absurd values fail that request with a clear error and change nothing (no Postman write, no
//! snapshot change). Also the `okta` and `scim` clients fed directly by a canned server.

mod common;

use std::time::Duration;

use common::canned::{canned_engine, Canned, CannedServer};
use common::World;
use okta_postman_sync::engine::Outcome;
use okta_postman_sync::sim::faults::FaultConfig;
use okta_postman_sync::store::Store;

fn malformed_only(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        rate_malformed: 1.0,
        ..FaultConfig::default()
    }
}

#[tokio::test]
async fn malformed_okta_answers_fail_the_run_and_change_nothing() {
    let w = World::new().await;
    for i in 0..5 {
        w.okta_user(&format!("User{i}"), "Bad");
    }
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    let writes = w.writes();
    w.okta
        .unassign_user(&w.okta.app_user_ids()[0])
        .expect("unassign");
    w.okta_user("New", "Comer");
    // Truncated JSON, HTML pages and wrong types, every answer, several seeds.
    for seed in 0..6 {
        w.okta.set_faults(malformed_only(seed));
        let r = w.run().await;
        assert_eq!(r.outcome, Outcome::Failed, "seed {seed}: {:?}", r.errors);
        assert!(
            r.errors.iter().any(|e| e.contains("Okta")),
            "{:?}",
            r.errors
        );
        assert_eq!(
            w.writes(),
            writes,
            "no Postman write from a bad Okta answer"
        );
    }
    assert_eq!(w.assert_snapshot_matches_postman(), 5);
}

#[tokio::test]
async fn malformed_postman_answers_fail_the_request_and_change_nothing() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    for seed in 0..6 {
        w.postman.set_faults(malformed_only(seed));
        let r = w.run().await;
        assert_ne!(r.outcome, Outcome::Ok, "seed {seed}");
        assert!(
            r.errors.iter().any(|e| e.contains("Postman")),
            "{:?}",
            r.errors
        );
        assert_eq!(w.postman.stats().creates_succeeded, 0);
    }
    assert!(Store::open(&w.state_path())
        .expect("store")
        .snapshot()
        .expect("snapshot")
        .is_empty());
    w.postman.set_faults(FaultConfig::default());
    assert_eq!(w.run().await.outcome, Outcome::Ok);
    assert!(w.member("ann.lee@example.com").expect("created").active);
}

#[tokio::test]
async fn okta_next_links_that_go_round_in_a_circle_are_an_error_not_a_hang() {
    let server = CannedServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = canned_engine(&server.base, dir.path());
    for cycle in [1, 2, 3] {
        server.set(Canned {
            link_cycle: Some(cycle),
            ..Canned::default()
        });
        let read = tokio::time::timeout(
            Duration::from_secs(20),
            engine.okta.read_app_users(&engine.mapping),
        )
        .await
        .expect("the read must end");
        let err = read.expect_err("a paging cycle is an error").error;
        assert!(err.to_string().contains("page"), "{err}");
    }
}

#[tokio::test]
async fn absurd_okta_and_scim_values_are_refused_clearly() {
    let server = CannedServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = canned_engine(&server.base, dir.path());
    let okta_cases: &[&str] = &[
        r#"{"not": "an array"}"#,
        r#"[{"id": 12, "status": "ACTIVE"}]"#,
        r#"[{"id": ""}]"#,
        r#"[null]"#,
        r#"[1e999]"#,
    ];
    for body in okta_cases {
        server.set(Canned {
            body: body.as_bytes().to_vec(),
            ..Canned::default()
        });
        let r = engine.okta.read_app_users(&engine.mapping).await;
        match r {
            Err(p) => assert!(!p.read.complete, "{body}"),
            Ok(read) => assert!(read.users.is_empty(), "{body}: {:?}", read.users),
        }
    }
    let scim_cases: &[&str] = &[
        r#"{"totalResults": -1, "Resources": [{"id": "u1", "userName": "a@b.c"}]}"#,
        r#"{"totalResults": 1, "Resources": [{"id": 5, "userName": "a@b.c", "active": "yes"}]}"#,
        r#"{"totalResults": 1, "Resources": {"0": {}}}"#,
        r#"{"Resources": [{"userName": "a@b.c"}]}"#,
        "<html><body>Bad gateway</body></html>",
        r#"{"totalResults": 3, "Resour"#,
    ];
    for body in scim_cases {
        server.set(Canned {
            body: body.as_bytes().to_vec(),
            ..Canned::default()
        });
        let r = engine.scim.list_users(|_| {}).await;
        let e = r.expect_err(body);
        assert!(e.to_string().contains("Postman"), "{body}: {e}");
    }
}

#[tokio::test]
async fn an_html_page_in_answer_to_a_write_is_not_taken_for_success() {
    let server = CannedServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = canned_engine(&server.base, dir.path());
    let id = okta_postman_sync::model::ScimUserId::new("u1");
    for (content_type, body) in [
        ("text/html", "<html><body>We'll be right back</body></html>"),
        ("application/json", r#"{"schemas": ["urn:ietf"#),
        ("application/json", "[1, 2]"),
    ] {
        server.set(Canned {
            content_type: content_type.into(),
            body: body.as_bytes().to_vec(),
            ..Canned::default()
        });
        let e = engine
            .scim
            .set_active(&id, false)
            .await
            .expect_err("not a success");
        assert!(e.to_string().contains("PATCH"), "{e}");
    }
    // An empty 204-style answer is a success.
    server.set(Canned {
        status: 204,
        body: Vec::new(),
        ..Canned::default()
    });
    engine
        .scim
        .set_active(&id, false)
        .await
        .expect("204 is success");
}
