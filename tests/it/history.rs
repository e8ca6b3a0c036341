//! `history`: the audit trail read back through the real binary — every write and adoption with
//! its run, trigger, result and reason, the `--user`/`--since`/`--op` filters, the three output
//! formats, and retention (`[sync] history_for` prunes old closed rows, never open ones).

use crate::common;

use std::process::{Command, Output};

use chrono::{Duration, Utc};
use common::World;
use okta_postman_sync::model::{OktaUserId, OpKind, Subject};
use okta_postman_sync::store::{Store, RECOVERY_ATTEMPTS};
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

/// `okta-postman-sync --config <w> history <args>`, on a blocking thread.
async fn history(w: &World, args: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(w.config_path())
        .arg("history")
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run the binary"))
        .await
        .expect("join")
}

fn json(out: &Output) -> Vec<Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    v.as_array().expect("an array").clone()
}

fn ops(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or_default().to_string(),
                e["subject"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Ann and Bob created, Cat (already a Postman member) adopted, then Bob unassigned and
/// deactivated.
async fn world_with_history() -> (World, okta_postman_sync_sim::OktaUserId) {
    let w = World::new().await;
    w.okta_user("Ann", "Lee");
    let bob = w.okta_user("Bob", "Ray");
    w.okta_user("Cat", "Fox");
    w.postman
        .add_member("cat.fox@example.com", "Cat", "Fox", true)
        .expect("seed member");
    let r = w.run().await;
    assert_eq!((r.counts.create, r.counts.adopt), (2, 1), "{:?}", r.errors);
    w.okta.unassign_user(&bob).expect("unassign");
    assert_eq!(w.run().await.counts.deactivate, 1);
    (w, bob)
}

#[tokio::test]
async fn history_shows_every_write_and_adoption_with_its_run_trigger_result_and_reason() {
    let (w, bob) = world_with_history().await;
    let all = json(&history(&w, &["--output", "json"]).await);
    let mut seen = ops(&all);
    seen.sort();
    assert_eq!(
        seen,
        [
            ("adopt".to_string(), "cat.fox@example.com".to_string()),
            ("create".into(), "ann.lee@example.com".into()),
            ("create".into(), "bob.ray@example.com".into()),
            ("deactivate".into(), "bob.ray@example.com".into()),
        ]
    );
    for e in &all {
        assert_eq!(e["result"], "done", "{e}");
        assert_eq!(e["trigger"], "reconcile", "{e}");
        assert_eq!(e["subject_type"], "user");
        assert!(e["run_id"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(e["time"].as_str().is_some_and(|t| t.starts_with("20")));
        assert!(e["scim_id"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    }
    let deactivate = all.iter().find(|e| e["op"] == "deactivate").expect("row");
    assert_eq!(deactivate["okta_id"], bob.as_str());
    assert_eq!(
        deactivate["reason"],
        "no longer assigned to the Postman app in Okta"
    );
    let adopt = all.iter().find(|e| e["op"] == "adopt").expect("row");
    assert!(
        adopt["reason"]
            .as_str()
            .is_some_and(|r| r.contains("matches the Okta user by userName")),
        "{adopt}"
    );
    // The two runs are told apart.
    let create_run = all.iter().find(|e| e["op"] == "create").expect("row")["run_id"].clone();
    assert_ne!(create_run, deactivate["run_id"]);
}

#[tokio::test]
async fn history_filters_by_person_time_and_operation() {
    let (w, bob) = world_with_history().await;
    let scim_bob = w.member("bob.ray@example.com").expect("bob").id.to_string();
    for who in ["BOB.RAY@example.com", bob.as_str(), scim_bob.as_str()] {
        let mine = json(&history(&w, &["--user", who, "--output", "json"]).await);
        assert_eq!(
            ops(&mine),
            [
                ("create".to_string(), "bob.ray@example.com".to_string()),
                ("deactivate".into(), "bob.ray@example.com".into()),
            ],
            "--user {who}"
        );
    }
    let only = json(&history(&w, &["--op", "deactivate", "--output", "json"]).await);
    assert_eq!(
        ops(&only),
        [("deactivate".to_string(), "bob.ray@example.com".to_string())]
    );
    assert_eq!(
        json(&history(&w, &["--since", "1h", "--output", "json"]).await).len(),
        4
    );
    let tomorrow = (Utc::now() + Duration::days(1)).to_rfc3339();
    assert!(json(&history(&w, &["--since", &tomorrow, "--output", "json"]).await).is_empty());
    // Bad filters are usage errors that say what is wanted.
    let out = history(&w, &["--op", "delete"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deactivate"));
    let out = history(&w, &["--since", "last tuesday"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}

#[tokio::test]
async fn history_prints_a_table_json_or_one_object_per_line() {
    let (w, _) = world_with_history().await;
    let text = history(&w, &[]).await;
    assert_eq!(text.status.code(), Some(0));
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.starts_with("TIME"), "{text}");
    assert!(
        text.contains("TRIGGER") && text.contains("REASON"),
        "{text}"
    );
    assert!(text.contains("bob.ray@example.com") && text.contains("deactivate"));
    assert_eq!(text.lines().count(), 5, "a header and four rows: {text}");

    let out = history(&w, &["--output", "jsonl"]).await;
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l.is_object() && l["op"].is_string()));
    assert_eq!(lines, json(&history(&w, &["--output", "json"]).await));
}

#[tokio::test]
async fn history_reads_the_state_while_another_process_holds_the_writer_lock() {
    let (w, _) = world_with_history().await;
    // The daemon's lock: `history` opens the file read-only and does not need it.
    let _lock = okta_postman_sync::store::StateLock::acquire(&w.state_path()).expect("lock");
    assert_eq!(json(&history(&w, &["--output", "json"]).await).len(), 4);
}

#[tokio::test]
async fn retention_prunes_closed_rows_older_than_history_for_and_keeps_open_ones() {
    let mut w = World::new().await;
    w.extra_sync = "history_for = \"30d\"".into();
    w.okta_user("Ann", "Lee");
    w.run().await; // the first (full) run; the next one is incremental
    let old = Utc::now() - Duration::days(45);
    let recent = Utc::now() - Duration::days(20);
    {
        let mut s = Store::open(&w.state_path()).expect("store");
        let zed = Subject::User(OktaUserId::new("00uzed"));
        let j = s
            .journal_intend("r-old", &zed, OpKind::Update, "zed@example.com", "{}", old)
            .expect("intend");
        s.journal_done(j, None, &[], old).expect("done");
        let j = s
            .journal_intend(
                "r-recent",
                &zed,
                OpKind::Update,
                "zed@example.com",
                "{}",
                recent,
            )
            .expect("intend");
        s.journal_done(j, None, &[], recent).expect("done");
        // An interrupted create recovery gave up on: it may have happened, so it must stay.
        let j = s
            .journal_intend("r-old", &zed, OpKind::Create, "zed@example.com", "{}", old)
            .expect("intend");
        for _ in 0..RECOVERY_ATTEMPTS {
            s.journal_recovery_failed(j, "lookup failed", old)
                .expect("count");
        }
    }
    w.run().await;
    let mine = json(&history(&w, &["--user", "00uzed", "--output", "json"]).await);
    let kept: Vec<(&str, &str)> = mine
        .iter()
        .map(|e| {
            (
                e["run_id"].as_str().unwrap_or(""),
                e["result"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(kept, [("r-recent", "done"), ("r-old", "parked")]);
}
