//! `why USER` through the real binary against the simulators: the verdict and its rule, how the
//! person is assigned, where each attribute comes from, the snapshot (and with `--live` Postman,
//! with differences), failures and quarantine, their history, and the next run's operation —
//! for a directly assigned user, one assigned only through a group, a suspended one, one
//! unassigned but still active in Postman, an unmanaged member, a quarantined one, and nobody.

use crate::common;

use std::process::{Command, Output};

use common::World;
use okta_postman_sync_sim::okta::UserSpec;
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"));
    c.env_remove("OKTA_API_TOKEN")
        .env_remove("POSTMAN_SCIM_API_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("RUST_LOG")
        .env_remove("OKTA_POSTMAN_SYNC_CONFIG");
    c
}

async fn why_raw(w: &World, args: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(w.config_path())
        .arg("why")
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run the binary"))
        .await
        .expect("join")
}

/// `why <args> --output json`, which must succeed.
async fn why(w: &World, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = why_raw(w, &all).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// Writes nothing: the journal, snapshot and Postman are the same after `why`.
fn state_fingerprint(w: &World) -> (String, u64) {
    let bytes = std::fs::read(w.state_path()).unwrap_or_default();
    (format!("{:x}", fnv1a(&bytes)), w.writes())
}

fn fnv1a(b: &[u8]) -> u64 {
    // FNV-1a: enough to notice any change to the file.
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

#[tokio::test]
async fn a_directly_assigned_user_is_explained_by_name_okta_id_or_scim_id() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    w.run().await;
    let scim = w.member("ann.lee@example.com").expect("ann").id.to_string();
    let before = state_fingerprint(&w);
    for who in ["ANN.LEE@example.com", ann.as_str(), scim.as_str()] {
        let v = why(&w, &[who]).await;
        assert_eq!(v["user"]["user_name"], "ann.lee@example.com", "{who}");
        assert_eq!(v["user"]["okta_id"], ann.as_str());
        assert_eq!(v["user"]["scim_id"], scim.as_str());
        assert_eq!(v["desired"]["active"], true);
        assert!(
            v["desired"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("app user ACTIVE, Okta user ACTIVE")),
            "{v}"
        );
        assert!(v["desired"]["rule"]
            .as_str()
            .is_some_and(|r| r.contains("SUSPENDED")));
        assert_eq!(v["assignment"]["direct"], true);
        assert_eq!(v["assignment"]["scope"], "USER");
        assert_eq!(v["assignment"]["groups"], serde_json::json!([]));
        let attrs = v["okta"]["attributes"].as_array().expect("attributes");
        assert_eq!(attrs[0]["name"], "userName");
        assert_eq!(attrs[0]["source"], "app.credentials.userName");
        assert_eq!(attrs[1]["value"], "Ann");
        assert_eq!(attrs[1]["source"], "app.profile.firstName");
        assert_eq!(v["snapshot"]["scim_id"], scim.as_str());
        assert_eq!(v["snapshot"]["active"], true);
        assert!(v["snapshot"]["since"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        assert!(v["postman"].is_null(), "no --live, no Postman read");
        assert_eq!(v["history"][0]["op"], "create");
        assert!(v["next"]["op"].is_null(), "{v}");
        assert!(v["next"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already matches")));
    }
    assert_eq!(state_fingerprint(&w), before, "why writes nothing");

    // --live reads the account and calls out a change made by hand.
    w.postman
        .deactivate_by_hand("ann.lee@example.com")
        .expect("by hand");
    let v = why(&w, &["ann.lee@example.com", "--live"]).await;
    assert_eq!(v["postman"]["exists"], true);
    assert_eq!(v["postman"]["active"], false);
    let diffs = v["postman"]["differences"].as_array().expect("differences");
    assert!(
        diffs
            .iter()
            .any(|d| d.as_str().is_some_and(|d| d.contains("active"))),
        "{v}"
    );
    // Planned against the live account, as a full run sees it: reactivate.
    assert_eq!(v["next"]["op"], "reactivate", "{v}");
    let text = why_raw(&w, &["ann.lee@example.com", "--live"]).await;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("should be an ACTIVE Postman member"),
        "{text}"
    );
    assert!(text.contains("DIFFERS"), "{text}");
    assert!(text.contains("Next run: reactivate"), "{text}");
}

#[tokio::test]
async fn a_user_assigned_only_through_a_group_names_the_group() {
    let w = World::new().await;
    let bob = w
        .okta
        .add_user(UserSpec::new("bob.ray@example.com", "Bob", "Ray"));
    let eng = w.okta.add_group("Engineering");
    let other = w.okta.add_group("Not assigned");
    w.okta.add_member(&eng, &bob).expect("member");
    w.okta.add_member(&other, &bob).expect("member");
    w.okta.assign_group(&eng).expect("assign group");
    // Not synced yet: the next run creates them.
    let v = why(&w, &["bob.ray@example.com"]).await;
    assert_eq!(v["desired"]["active"], true);
    assert_eq!(v["assignment"]["direct"], false);
    assert_eq!(v["assignment"]["scope"], "GROUP");
    assert_eq!(
        v["assignment"]["groups"],
        serde_json::json!([{"id": eng.as_str(), "name": "Engineering"}])
    );
    assert!(v["snapshot"].is_null());
    assert_eq!(v["next"]["op"], "create");
    assert!(v["next"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("assigned to the Postman app")));
    assert_eq!(w.writes(), 0);
}

#[tokio::test]
async fn a_suspended_user_should_not_be_active_and_is_deactivated_next() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    w.run().await;
    w.okta.suspend(&ann).expect("suspend");
    let v = why(&w, &["ann.lee@example.com"]).await;
    assert_eq!(v["desired"]["active"], false);
    assert!(v["desired"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("Okta user SUSPENDED")));
    assert_eq!(v["okta"]["user_status"], "SUSPENDED");
    assert_eq!(v["assignment"]["assigned"], true);
    assert_eq!(v["next"]["op"], "deactivate");
}

#[tokio::test]
async fn an_unassigned_user_still_active_in_postman_is_deactivated_next() {
    let w = World::new().await;
    let ann = w.okta_user("Ann", "Lee");
    w.run().await;
    w.okta.unassign_user(&ann).expect("unassign");
    let v = why(&w, &["ann.lee@example.com", "--live"]).await;
    assert_eq!(v["desired"]["active"], false);
    assert!(v["desired"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("not assigned")));
    assert_eq!(v["assignment"]["assigned"], false);
    assert_eq!(v["okta"]["okta_id"], ann.as_str());
    assert_eq!(v["postman"]["active"], true);
    assert_eq!(v["next"]["op"], "deactivate");
    assert!(v["next"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("no longer assigned")));
}

#[tokio::test]
async fn an_unmanaged_member_is_left_alone() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let root = w
        .postman
        .add_member("root@example.com", "Root", "Admin", true)
        .expect("seed");
    w.run().await; // the first run is full and records unmanaged members
    let v = why(&w, &["Root@example.com"]).await;
    assert_eq!(v["found_in"], serde_json::json!(["unmanaged"]));
    assert_eq!(v["unmanaged"]["scim_id"], root.to_string());
    assert!(v["okta"].is_null());
    assert!(v["snapshot"].is_null());
    assert_eq!(v["desired"]["active"], false);
    assert!(v["next"]["op"].is_null());
    assert!(v["next"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("unmanaged")));
    // By SCIM id, live: the account is read too.
    let v = why(&w, &[&root.to_string(), "--live"]).await;
    assert_eq!(v["postman"]["active"], true);
    assert!(v["next"]["op"].is_null());
}

#[tokio::test]
async fn a_quarantined_user_shows_the_failure_and_that_the_next_run_holds_them() {
    let mut w = World::new().await;
    w.extra_sync = "quarantine_after = 1\nquarantine_for = \"1h\"".into();
    w.okta_user("Ann", "Lee");
    w.postman.fail_user(
        "ann.lee@example.com",
        400,
        Some("invalidSyntax"),
        "The request body seems to be incomplete or have unsupported characters.",
    );
    w.run().await;
    let v = why(&w, &["ann.lee@example.com"]).await;
    assert_eq!(v["desired"]["active"], true);
    assert_eq!(v["failure"]["op"], "create");
    assert!(v["failure"]["retry_after"].is_string(), "{v}");
    assert!(v["held"].as_str().is_some_and(|h| !h.is_empty()), "{v}");
    assert_eq!(v["history"][0]["result"], "failed");
    assert!(v["history"][0]["error"].is_string());
    assert!(v["next"]["op"].is_null(), "{v}");
    assert!(v["next"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("create") && r.contains("held")));
}

#[tokio::test]
async fn nobody_matching_is_exit_1_saying_where_it_looked() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    w.run().await;
    let out = why_raw(&w, &["nobody@example.com"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nobody matches"), "{err}");
    assert!(
        err.contains("state database") && err.contains("Okta"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn an_unreachable_okta_is_exit_1() {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    w.run().await;
    let text = w
        .config_text()
        .replace(&w.okta.base_url(), "http://127.0.0.1:9");
    let path = w.dir.path().join("broken.toml");
    std::fs::write(&path, text).expect("config");
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(&path)
        .args(["why", "ann.lee@example.com"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run"))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Okta"), "{err}");
}
