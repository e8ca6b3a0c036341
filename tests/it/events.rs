//! Near-real-time sync (issue 14) against the simulators: the fake Okta records a System Log
//! as its mutators change the org and serves it like Okta's polling requests; hook calls are
//! delivered to the daemon's real HTTP server. Tests drive one poll and one drain at a time
//! (`events::poll_once`, `events::drain`) where the order matters, and the whole daemon where
//! the wiring matters. They assert Postman's final state, never timings.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::World;
use okta_postman_sync::daemon::run_with;
use okta_postman_sync::daemon::schedule::DaemonState;
use okta_postman_sync::events::{self, DrainSummary};
use okta_postman_sync::store::Store;
use okta_postman_sync::sync::{Engine, RunOptions};
use okta_postman_sync_sim::FaultConfig;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const HOOK_SECRET: &str = "hook-secret-0123456789abcdef";

/// Polls `cond` every 50 ms for up to `secs` seconds.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// A world with polling on (the daemon is not started: tests poll and drain themselves).
async fn polling_world() -> World {
    let mut w = World::new().await;
    w.extra_sync = "\n[events]\nsystem_log = true\npoll_interval = \"1s\"\n".into();
    w
}

async fn poll_and_drain(engine: &Engine) -> DrainSummary {
    events::poll_once(engine).await.expect("poll");
    let state = DaemonState::default();
    events::drain(engine, &state, &CancellationToken::new())
        .await
        .expect("drain")
}

fn active(w: &World, user_name: &str) -> bool {
    w.member(user_name)
        .unwrap_or_else(|| panic!("{user_name} is not in Postman"))
        .active
}

#[tokio::test]
async fn each_event_kind_reaches_postman_with_the_event_in_its_reason() {
    let w = polling_world().await;
    let unassigned = w.okta_user("Una", "Assigned");
    let suspended = w.okta_user("Sue", "Pended");
    let renamed = w.okta_user("Ren", "Amed");
    let relogin = w.okta_user("Eve", "Mail");
    let deactivated = w.okta_user("Dee", "Activated");
    let group = w.okta.add_group("Engineering");
    w.okta.assign_group(&group).expect("assign group");
    let left = w.okta_group_member(&group, "Lea", "Ving");
    let dropped_group = w.okta.add_group("Contractors");
    w.okta.assign_group(&dropped_group).expect("assign group");
    w.okta_group_member(&dropped_group, "Con", "Tractor");
    let engine = w.engine();
    let first = engine
        .run(
            &RunOptions {
                full: true,
                ..RunOptions::default()
            },
            &CancellationToken::new(),
            None,
        )
        .await;
    assert_eq!(first.outcome.as_str(), "ok", "{:?}", first.errors);

    // One change of every kind, each recorded in the System Log by the fake.
    w.okta.unassign_user(&unassigned).expect("unassign");
    w.okta.suspend(&suspended).expect("suspend");
    w.okta.set_name(&renamed, "Renata", "Amed").expect("rename");
    w.okta
        .set_email(&relogin, "eve.new@example.com")
        .expect("email");
    w.okta.deactivate(&deactivated).expect("deactivate");
    w.okta.remove_member(&group, &left).expect("leave group");
    w.okta
        .unassign_group(&dropped_group)
        .expect("unassign group");
    w.okta_group_member(&group, "Jo", "Ined");
    let assigned = w.okta_user("New", "Comer");

    let summary = poll_and_drain(&engine).await;
    assert!(summary.runs >= 1);
    assert!(!active(&w, "una.assigned@example.com"));
    assert!(!active(&w, "sue.pended@example.com"));
    assert!(!active(&w, "dee.activated@example.com"));
    assert!(
        !active(&w, "lea.ving@example.com"),
        "left an assigned group"
    );
    assert!(
        !active(&w, "con.tractor@example.com"),
        "their group was unassigned"
    );
    assert_eq!(
        w.member("ren.amed@example.com")
            .expect("renamed")
            .given_name,
        "Renata"
    );
    assert!(
        w.member("eve.new@example.com").is_some(),
        "userName changed"
    );
    assert!(
        active(&w, "jo.ined@example.com"),
        "joined an assigned group"
    );
    assert!(active(&w, "new.comer@example.com"), "assigned directly");
    let _ = assigned;

    let reasons: Vec<String> = summary
        .reports
        .iter()
        .flat_map(|r| r.operations.iter().map(|o| o.reason.clone()))
        .collect();
    assert!(
        reasons.iter().all(|r| r.contains("(event ")),
        "every operation names its event: {reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with(
            "unassigned from the Postman app in Okta (event application.user_membership.remove "
        )),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(
            |r| r.starts_with("deactivated in Okta") || r.contains("user.lifecycle.deactivate")
        ),
        "{reasons:?}"
    );
    w.assert_snapshot_matches_postman();

    // Idle: a poll costs one Okta request and nothing in Postman.
    let (reads, writes) = (w.reads(), w.writes());
    let polls = w.okta.log_polls();
    let idle = poll_and_drain(&engine).await;
    assert_eq!(idle.runs, 0);
    assert_eq!(w.okta.log_polls(), polls + 1);
    assert_eq!((w.reads(), w.writes()), (reads, writes));
}

#[tokio::test]
async fn duplicate_and_out_of_order_events_end_at_okta_s_current_state() {
    let w = polling_world().await;
    let ann = w.okta_user("Ann", "Lee");
    let engine = w.engine();
    engine
        .run(&RunOptions::default(), &CancellationToken::new(), None)
        .await;
    w.okta.unassign_user(&ann).expect("unassign");
    w.okta.assign_user(&ann).expect("assign again");
    // The unassignment is delivered again after the reassignment: a redelivery (same uuid)
    // and an out-of-order copy under a new uuid, published before the reassignment.
    let log = w.okta.log_events();
    let removal = log
        .iter()
        .rev()
        .find(|e| e["eventType"] == "application.user_membership.remove")
        .expect("removal event")
        .clone();
    w.okta.push_log_event(removal.clone());
    let mut late = removal.clone();
    late["uuid"] = json!("late-copy-0001");
    w.okta.push_log_event(late);

    let writes = w.writes();
    let polled = events::poll_once(&engine).await.expect("poll");
    assert!(polled.duplicates >= 1, "{polled:?}");
    let state = DaemonState::default();
    events::drain(&engine, &state, &CancellationToken::new())
        .await
        .expect("drain");
    assert!(active(&w, "ann.lee@example.com"), "Okta assigns Ann now");
    assert_eq!(
        w.writes(),
        writes,
        "Ann never left Postman's view: no write"
    );
}

#[tokio::test]
async fn a_restart_between_poll_and_apply_neither_skips_nor_repeats_the_work() {
    let w = polling_world().await;
    let ann = w.okta_user("Ann", "Lee");
    w.run().await;
    w.okta.unassign_user(&ann).expect("unassign");
    {
        // The first process polls (cursor and queue committed together), then dies.
        let engine = w.engine();
        let s = events::poll_once(&engine).await.expect("poll");
        assert_eq!(s.queued, 1);
    }
    assert!(active(&w, "ann.lee@example.com"), "nothing applied yet");
    // The next process works off the queue it finds, and its poll finds nothing new.
    let engine = w.engine();
    let state = DaemonState::default();
    let d = events::drain(&engine, &state, &CancellationToken::new())
        .await
        .expect("drain");
    assert_eq!(d.runs, 1);
    assert!(!active(&w, "ann.lee@example.com"));
    let writes = w.writes();
    let again = poll_and_drain(&engine).await;
    assert_eq!(again.runs, 0, "the cursor was kept: nothing read twice");
    assert_eq!(w.writes(), writes);
}

#[tokio::test]
async fn the_event_guard_holds_back_a_mass_unassignment_for_the_next_full_run() {
    let mut w = polling_world().await;
    w.extra_sync = format!("max_deactivations = 2\n{}", w.extra_sync);
    let ids: Vec<_> = (0..5)
        .map(|i| w.okta_user(&format!("User{i}"), "Leaving"))
        .collect();
    w.run().await;
    for id in &ids {
        w.okta.unassign_user(id).expect("unassign");
    }
    let engine = w.engine();
    let summary = poll_and_drain(&engine).await;
    let gone = (0..5)
        .filter(|i| !active(&w, &format!("user{i}.leaving@example.com")))
        .count();
    assert_eq!(gone, 2, "only max_deactivations within the window");
    let deferred: usize = summary.reports.iter().map(|r| r.deferred.len()).sum();
    assert_eq!(deferred, 3);
    let held = engine.store.call(|s| s.event_held()).await.expect("held");
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(engine
        .metrics
        .encode()
        .contains("okta_postman_sync_event_held_deactivations 3"));
    // More events in the same window deactivate nobody else.
    w.okta.assign_user(&ids[0]).expect("reassign");
    w.okta.unassign_user(&ids[0]).expect("unassign again");
    poll_and_drain(&engine).await;
    let still = (0..5)
        .filter(|i| !active(&w, &format!("user{i}.leaving@example.com")))
        .count();
    assert_eq!(still, 2);
    // The next full run applies its normal guard (3 > 2: refused) until an operator approves.
    let refused = w.run_full().await;
    assert_eq!(refused.outcome.as_str(), "refused");
    let approved = w
        .reconcile(RunOptions {
            full: true,
            allow_deactivations: Some(3),
            ..RunOptions::default()
        })
        .await;
    assert_eq!(approved.outcome.as_str(), "ok", "{:?}", approved.errors);
    assert!((0..5).all(|i| !active(&w, &format!("user{i}.leaving@example.com"))));
    let held = engine.store.call(|s| s.event_held()).await.expect("held");
    assert!(held.is_empty(), "a full run settles held deactivations");
}

#[tokio::test]
async fn a_change_that_produced_no_event_is_repaired_by_the_next_full_run() {
    let w = polling_world().await;
    let ann = w.okta_user("Ann", "Lee");
    w.okta_user("Bob", "Ray");
    let engine = w.engine();
    engine
        .run(&RunOptions::default(), &CancellationToken::new(), None)
        .await;
    w.okta.set_system_log_recording(false);
    w.okta.unassign_user(&ann).expect("unassign");
    let s = poll_and_drain(&engine).await;
    assert_eq!(s.runs, 0);
    assert!(active(&w, "ann.lee@example.com"), "no event, no change yet");
    w.run_full().await;
    assert!(!active(&w, "ann.lee@example.com"));
}

#[tokio::test]
async fn a_system_log_403_is_reported_as_denied_and_the_schedule_keeps_working() {
    let mut w = polling_world().await;
    w.extra_sync = format!("schedule = \"* * * * * *\"\n{}", w.extra_sync);
    w.okta.deny_system_log(true);
    let engine = w.engine();
    let e = events::poll_once(&engine).await.expect_err("403");
    assert!(e.is_denied(), "{e}");
    assert!(e.to_string().contains("403"), "{e}");
    // The daemon warns and keeps to the schedule.
    let d = start(&w).await;
    w.okta_user("Ann", "Lee");
    assert!(eventually(15, || w.member("ann.lee@example.com").is_some()).await);
    d.stop().await;
}

#[tokio::test]
async fn a_targeted_run_ignores_users_it_did_not_re_read_and_a_failed_read_withholds() {
    let w = polling_world().await;
    let ann = w.okta_user("Ann", "Lee");
    let bob = w.okta_user("Bob", "Ray");
    let engine = w.engine();
    engine
        .run(&RunOptions::default(), &CancellationToken::new(), None)
        .await;
    // Bob is unassigned without an event; an event names only Ann, who is still assigned.
    w.okta.set_system_log_recording(false);
    w.okta.unassign_user(&bob).expect("unassign");
    let mut targets = okta_postman_sync::sync::targeted::Targets::default();
    targets.users.insert(
        okta_postman_sync::model::OktaUserId(ann.0.clone()),
        okta_postman_sync::store::EventCause {
            uuid: "forged-0001".into(),
            event_type: "application.user_membership.remove".into(),
            published: chrono::Utc::now(),
            source: "hook".into(),
        },
    );
    let out = engine
        .run_targeted(&targets, &CancellationToken::new())
        .await;
    assert_eq!(out.report.outcome.as_str(), "ok", "{:?}", out.report.errors);
    assert!(out.report.operations.is_empty());
    assert!(active(&w, "ann.lee@example.com"));
    assert!(active(&w, "bob.ray@example.com"), "Bob was not re-read");

    // Okta fails every request now: Bob's re-read fails and nothing is deactivated.
    targets.users.insert(
        okta_postman_sync::model::OktaUserId(bob.0.clone()),
        targets.users.values().next().expect("cause").clone(),
    );
    w.okta.set_faults(okta_postman_sync_sim::FaultConfig {
        seed: 1,
        rate_503: 1.0,
        ..okta_postman_sync_sim::FaultConfig::default()
    });
    let out = engine
        .run_targeted(&targets, &CancellationToken::new())
        .await;
    assert_eq!(out.failed_users.len(), 2, "{:?}", out.report.errors);
    assert_eq!(out.report.outcome.as_str(), "partial");
    assert!(
        active(&w, "bob.ray@example.com"),
        "a failed re-read withholds"
    );
}

// ---- the daemon: worker, hook, one writer ------------------------------------------------

struct Daemon {
    cancel: CancellationToken,
    url: String,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(w: &World) -> Daemon {
    let engine = Arc::new(w.engine());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(run_with(
        engine,
        Some(listener),
        cancel.clone(),
        Arc::new(DaemonState::default()),
    ));
    Daemon {
        cancel,
        url,
        handle,
    }
}

impl Daemon {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("stops promptly")
            .expect("join")
            .expect("clean stop");
    }

    async fn deliver(&self, auth: Option<&str>, events: Vec<Value>) -> reqwest::Response {
        let body = json!({
            "eventType": "com.okta.event_hook",
            "eventTypeVersion": "1.0",
            "cloudEventsVersion": "0.1",
            "source": "https://example.okta.com/api/v1/eventHooks/who1",
            "eventId": "85b60edb-4263-4e13-993b-818e26201052",
            "data": {"events": events},
            "eventTime": "2026-11-28T12:00:00.000Z",
            "contentType": "application/json",
        });
        let mut r = reqwest::Client::new()
            .post(format!("{}/okta/events", self.url))
            .json(&body);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send().await.expect("deliver")
    }
}

/// A world with the hook on and the schedule slow (daily), so only events move Postman.
async fn hook_world() -> World {
    let mut w = World::new().await;
    std::fs::write(w.dir.path().join("hook-secret"), HOOK_SECRET).expect("secret");
    w.extra_sync = format!(
        "schedule = \"0 0 3 * * *\"\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n[events]\nhook = true\nhook_secret_file = \"{}/hook-secret\"\n",
        w.dir.path().display()
    );
    w
}

fn store_queue_len(w: &World) -> usize {
    Store::open_read_only(&w.state_path())
        .expect("open")
        .map_or(0, |s| s.event_status().expect("status").queued)
}

#[tokio::test]
async fn the_hook_verifies_refuses_without_the_secret_and_delivers_real_events() {
    let w = hook_world().await;
    let ann = w.okta_user("Ann", "Lee");
    let bob = w.okta_user("Bob", "Ray");
    let d = start(&w).await;
    assert!(eventually(10, || w.member("bob.ray@example.com").is_some()).await);

    // Okta's one-time verification.
    let r = reqwest::Client::new()
        .get(format!("{}/okta/events", d.url))
        .header("X-Okta-Verification-Challenge", "chal-123")
        .send()
        .await
        .expect("verify");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"verification": "chal-123"})
    );

    // Bob is unassigned in Okta: the real event, delivered without and with the secret.
    w.okta.unassign_user(&bob).expect("unassign");
    let event = w.okta.log_events().last().expect("event").clone();
    let writes = w.writes();
    for wrong in [None, Some("wrong-secret-0123456789abc"), Some("Bearer x")] {
        let r = d.deliver(wrong, vec![event.clone()]).await;
        assert_eq!(r.status(), 401, "{wrong:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.writes(), writes, "no work without the secret");
    assert!(active(&w, "bob.ray@example.com"));

    // A body over the cap is refused before it is parsed.
    let huge = format!(
        "{{\"data\":{{\"events\":[\"{}\"]}}}}",
        "x".repeat(1100 * 1024)
    );
    let r = reqwest::Client::new()
        .post(format!("{}/okta/events", d.url))
        .header("Authorization", HOOK_SECRET)
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("deliver");
    assert_eq!(r.status(), 413);

    // A forged call with the secret for Ann, whom Okta still assigns: only a re-read.
    let forged = json!({
        "uuid": "forged-0001", "eventType": "application.user_membership.remove",
        "published": "2026-11-28T12:00:00.000Z", "outcome": {"result": "SUCCESS"},
        "target": [{"id": ann.0, "type": "User"}],
    });
    let r = d.deliver(Some(HOOK_SECRET), vec![forged, event]).await;
    assert_eq!(r.status(), 204);
    assert!(eventually(10, || !w.member("bob.ray@example.com").expect("bob").active).await);
    assert!(eventually(10, || store_queue_len(&w) == 0).await);
    assert!(
        active(&w, "ann.lee@example.com"),
        "the forged event changed nothing"
    );

    let metrics = reqwest::get(format!("{}/metrics", d.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "okta_postman_sync_events_received_total{source=\"hook\"}",
        "okta_postman_sync_events_ignored_total{reason=\"unauthorized\"} 3",
        "okta_postman_sync_targeted_reconciles_total",
        "okta_postman_sync_event_lag_seconds",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}");
    }
    let status: Value = reqwest::get(format!("{}/status", d.url))
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert!(status["events"]["last_applied_at"].is_string(), "{status}");
    d.stop().await;
}

#[tokio::test]
async fn the_daemon_polls_the_system_log_and_applies_changes_without_a_scheduled_run() {
    let mut w = World::new().await;
    w.extra_sync =
        "schedule = \"0 0 3 * * *\"\n\n[events]\nsystem_log = true\npoll_interval = \"1s\"\n"
            .into();
    let ann = w.okta_user("Ann", "Lee");
    let d = start(&w).await;
    assert!(eventually(10, || w.member("ann.lee@example.com").is_some()).await);
    w.okta.suspend(&ann).expect("suspend");
    assert!(eventually(15, || !active(&w, "ann.lee@example.com")).await);
    w.okta.unsuspend(&ann).expect("unsuspend");
    assert!(eventually(15, || active(&w, "ann.lee@example.com")).await);
    let status: Value = reqwest::get(format!("{}/status", d.url))
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert!(
        status["events"]["cursor_updated_at"].is_string(),
        "{status}"
    );
    d.stop().await;
}

#[tokio::test]
async fn check_says_when_the_system_log_cannot_be_read() {
    let w = polling_world().await;
    let report = okta_postman_sync::cmd::check::check(
        &w.config(),
        okta_postman_sync::retry::RetryPolicy::fast(),
    )
    .await;
    let item = |r: &okta_postman_sync::cmd::check::CheckReport| {
        r.items
            .iter()
            .find(|i| i.check.contains("System Log"))
            .map(|i| (i.ok, i.detail.clone()))
            .expect("a System Log item")
    };
    assert!(item(&report).0, "{:?}", item(&report));
    w.okta.deny_system_log(true);
    let report = okta_postman_sync::cmd::check::check(
        &w.config(),
        okta_postman_sync::retry::RetryPolicy::fast(),
    )
    .await;
    let (ok, detail) = item(&report);
    assert!(!ok);
    assert!(detail.contains("okta.logs.read"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_batch_of_event_work_loses_and_repeats_nothing() {
    let mut w = World::with(
        okta_postman_sync_sim::OktaSimConfig {
            apps_limit_per_minute: 100_000,
            ..Default::default()
        },
        okta_postman_sync_sim::PostmanSimConfig {
            writes_per_minute: 100_000,
            reads_per_minute: 100_000,
            ..Default::default()
        },
    )
    .await;
    w.extra_sync = "max_deactivations = 1000\nschedule = \"0 0 3 * * *\"\n\n[events]\nsystem_log = true\npoll_interval = \"1s\"\n".into();
    let ids: Vec<_> = (0..60)
        .map(|i| w.okta_user(&format!("User{i}"), "Kill"))
        .collect();
    w.okta_user("Stay", "Here");
    assert_eq!(w.run_full().await.outcome.as_str(), "ok");
    let config = w.config_path();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let mut child = spawn();
    // Let the startup run finish, then unassign everyone: the work comes from events.
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.postman.set_latency(Duration::from_millis(40));
    let before = w.writes();
    for id in &ids {
        w.okta.unassign_user(id).expect("unassign");
    }
    assert!(
        eventually(20, || w.writes() >= before + 5).await,
        "event work began"
    );
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let done_at_kill = w.writes() - before;
    w.postman.set_latency(Duration::ZERO);
    let mut child = spawn();
    let all_gone = eventually(30, || {
        (0..60).all(|i| {
            w.member(&format!("user{i}.kill@example.com"))
                .is_some_and(|m| !m.active)
        })
    })
    .await;
    child.kill().expect("stop");
    child.wait().expect("reaped");
    assert!(
        all_gone,
        "every unassignment reached Postman after the restart ({done_at_kill} before the kill)"
    );
    assert!(active(&w, "stay.here@example.com"));
    // Each deactivation is one PATCH; a write in flight at the kill may be sent once more.
    let writes = w.writes() - before;
    assert!(writes <= 60 + 4, "{writes} writes for 60 deactivations");
    w.assert_snapshot_matches_postman();
}

#[tokio::test]
async fn event_settings_are_validated_with_the_key_named() {
    let w = World::new().await;
    let base = w.config_text();
    for (extra, key) in [
        ("[events]\nhook = true\n", "events.hook"),
        (
            "[events]\npoll_interval = \"500ms\"\n",
            "events.poll_interval",
        ),
        (
            "[events]\nguard_window = \"nonsense\"\n",
            "events.guard_window",
        ),
        (
            "[events]\nhook_secret_file = \"/x\"\n",
            "events.hook_secret_file",
        ),
        ("[events]\nsystem_logs = true\n", "system_logs"),
    ] {
        let e = okta_postman_sync::config::Config::parse(&format!("{base}\n{extra}"))
            .err()
            .unwrap_or_else(|| panic!("{extra} must be refused"));
        assert!(e.to_string().contains(key), "{extra}: {e}");
    }
    let ok =
        okta_postman_sync::config::Config::parse(&format!("{base}\n[events]\nsystem_log = true\n"))
            .expect("valid");
    assert_eq!(ok.events.poll_interval, Duration::from_secs(15));
    assert_eq!(ok.events.guard_window, Duration::from_secs(3600));
    assert!(!ok.events.hook);
}

#[tokio::test]
async fn event_work_waits_while_another_run_holds_the_writer_slot() {
    let w = polling_world().await;
    let ann = w.okta_user("Ann", "Lee");
    w.okta_user("Bob", "Ray");
    w.run().await;
    w.okta.unassign_user(&ann).expect("unassign");
    let engine = w.engine();
    events::poll_once(&engine).await.expect("poll");
    let state = DaemonState::default();
    // A scheduled run is in flight.
    state
        .running
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let d = events::drain(&engine, &state, &CancellationToken::new())
        .await
        .expect("drain");
    assert!(d.busy);
    assert_eq!(d.runs, 0);
    assert!(
        active(&w, "ann.lee@example.com"),
        "nothing applied concurrently"
    );
    // Once it ends, the queued work goes through, and the slot is free again afterwards.
    state
        .running
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let d = events::drain(&engine, &state, &CancellationToken::new())
        .await
        .expect("drain");
    assert_eq!(d.runs, 1);
    assert!(!active(&w, "ann.lee@example.com"));
    assert!(!state.running.load(std::sync::atomic::Ordering::SeqCst));
}

fn names(xs: &[&str]) -> std::collections::BTreeSet<String> {
    xs.iter().map(|n| format!("{n}@example.com")).collect()
}

#[tokio::test]
async fn pushed_groups_follow_events_in_the_same_targeted_run() {
    let w = polling_world().await;
    let ann = w.okta_user("Ann", "Lee");
    let bob = w.okta_user("Bob", "Ray");
    let eng = w.okta.add_group("Engineering");
    w.okta.assign_group(&eng).expect("assign group");
    w.okta.add_member(&eng, &ann).expect("member");
    let engine = w.engine();
    let first = w.run_full().await;
    assert_eq!(first.outcome.as_str(), "ok", "{:?}", first.errors);
    assert_eq!(w.group_members("Engineering"), names(&["ann.lee"]));

    w.okta.add_member(&eng, &bob).expect("bob joins");
    w.okta
        .remove_member(&eng, &ann)
        .expect("ann leaves, still assigned");
    let cy = w.okta_user("Cy", "New");
    w.okta.add_member(&eng, &cy).expect("cy joins");
    let sales = w.okta.add_group("Sales");
    let dee = w.okta_user("Dee", "Sales");
    w.okta.add_member(&sales, &dee).expect("member");
    w.okta.assign_group(&sales).expect("a new pushed group");
    let writes = w.writes();
    let summary = poll_and_drain(&engine).await;
    assert!(summary.runs >= 1);
    assert!(active(&w, "ann.lee@example.com"));
    assert_eq!(
        w.group_members("Engineering"),
        names(&["bob.ray", "cy.new"]),
        "joined, left, and created-then-joined in one targeted run"
    );
    assert_eq!(w.group_members("Sales"), names(&["dee.sales"]));
    let group_ops: Vec<_> = summary
        .reports
        .iter()
        .flat_map(|r| &r.operations)
        .filter(|o| o.op.as_str().starts_with("group_"))
        .collect();
    assert!(!group_ops.is_empty());
    assert!(
        group_ops.iter().all(|o| o.reason.contains("(event ")),
        "{group_ops:?}"
    );
    assert!(w.writes() > writes);
    w.assert_snapshot_matches_postman();
    let store = Store::open_read_only(&w.state_path())
        .expect("open")
        .expect("exists");
    let status = okta_postman_sync::status::collect(&store, 5).expect("status");
    assert_eq!(status.runs[0].kind(), "event");
    assert!(
        okta_postman_sync::status::render(&status).contains(" event "),
        "status names targeted runs as such"
    );

    // The backstop agrees: a full run finds nothing left to do.
    let full = w.run_full().await;
    assert_eq!(full.outcome.as_str(), "ok", "{:?}", full.errors);
    assert!(full.operations.is_empty(), "{:?}", full.operations);
}

#[tokio::test]
async fn a_member_suspended_then_restored_by_events_is_back_in_their_groups() {
    let w = polling_world().await;
    let ann = w.okta_user("Ann", "Lee");
    w.okta_user("Bob", "Ray");
    let eng = w.okta.add_group("Engineering");
    w.okta.assign_group(&eng).expect("assign group");
    w.okta.add_member(&eng, &ann).expect("member");
    let engine = w.engine();
    w.run_full().await;
    assert_eq!(w.group_members("Engineering"), names(&["ann.lee"]));

    w.okta.suspend(&ann).expect("suspend");
    poll_and_drain(&engine).await;
    assert!(!active(&w, "ann.lee@example.com"));
    assert!(
        w.group_members("Engineering").is_empty(),
        "Postman drops a deactivated member from their groups"
    );
    w.okta.unsuspend(&ann).expect("unsuspend");
    poll_and_drain(&engine).await;
    assert!(active(&w, "ann.lee@example.com"));
    assert_eq!(
        w.group_members("Engineering"),
        names(&["ann.lee"]),
        "reactivated and put back, without waiting for a scheduled run"
    );
    w.assert_snapshot_matches_postman();
}

#[tokio::test]
async fn a_deleted_group_s_members_are_re_read_from_what_was_pushed_to_it() {
    let w = polling_world().await;
    w.okta_user("Ann", "Lee");
    let temps = w.okta.add_group("Temps");
    w.okta.assign_group(&temps).expect("assign group");
    w.okta_group_member(&temps, "Tom", "Temp");
    let engine = w.engine();
    w.run_full().await;
    assert!(active(&w, "tom.temp@example.com"));

    // Okta's event names only the group, which no longer exists to be read.
    w.okta.delete_group(&temps).expect("delete group");
    let summary = poll_and_drain(&engine).await;
    assert!(
        !active(&w, "tom.temp@example.com"),
        "his only assignment went with the group"
    );
    assert!(active(&w, "ann.lee@example.com"));
    let reasons: Vec<&str> = summary
        .reports
        .iter()
        .flat_map(|r| r.operations.iter().map(|o| o.reason.as_str()))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("(event group.lifecycle.delete ")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_targeted_run_settles_an_interrupted_create_before_planning() {
    let w = polling_world().await;
    w.okta_user("Bob", "Ray");
    let engine = w.engine();
    w.run_full().await;
    // Ann's create is sent, Postman makes her, the answer is lost, and the lookup that would
    // tell fails too: the write stays open and Ann is held.
    w.postman.lose_next_answer("POST", "/Users", true);
    w.postman
        .fail_lookup("ann.lee@example.com", 503, "unavailable");
    let ann = w.okta_user("Ann", "Lee");
    poll_and_drain(&engine).await;
    let pending = engine
        .store
        .call(|s| s.journal_pending())
        .await
        .expect("journal");
    assert_eq!(pending.len(), 1, "the create is open: {pending:?}");
    w.postman.clear_targeted_faults();

    // The next event about Ann: her create is looked up and adopted first, then the change made.
    w.okta.set_name(&ann, "Anne", "Lee").expect("rename");
    poll_and_drain(&engine).await;
    let pending = engine
        .store
        .call(|s| s.journal_pending())
        .await
        .expect("journal");
    assert!(pending.is_empty(), "{pending:?}");
    let members = w.members_without_duplicates();
    assert_eq!(members["ann.lee@example.com"].given_name, "Anne");
    w.assert_snapshot_matches_postman();
}

#[tokio::test]
async fn a_write_that_failed_during_a_postman_outage_is_retried_without_waiting_for_the_schedule() {
    let w = polling_world().await;
    let ann = w.okta_user("Ann", "Lee");
    let engine = w.engine();
    w.run_full().await;
    w.postman.set_faults(FaultConfig {
        rate_503: 1.0,
        ..FaultConfig::default()
    });
    w.okta.set_name(&ann, "Anne", "Lee").expect("rename");
    let down = poll_and_drain(&engine).await;
    assert_eq!(down.kept, 1, "the rename stays queued: {down:?}");
    assert_eq!(
        w.member("ann.lee@example.com").expect("ann").given_name,
        "Ann"
    );

    // Postman is back; no new event, no scheduled run: the next pass writes it.
    w.postman.set_faults(FaultConfig::default());
    let back = poll_and_drain(&engine).await;
    assert_eq!(back.runs, 1);
    assert_eq!(back.kept, 0);
    assert_eq!(
        w.member("ann.lee@example.com").expect("ann").given_name,
        "Anne"
    );
    w.assert_snapshot_matches_postman();
}
