//! Tests of the daemon: in-process (shutdown is a parameter) for the scheduler and endpoints,
//! and as the real binary for signals and the single-writer lock.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::World;
use okta_postman_sync::daemon::run_with;
use okta_postman_sync::schedule::DaemonState;
use okta_postman_sync::sim::faults::FaultConfig;
use tokio_util::sync::CancellationToken;

/// Polls `cond` every 100 ms for up to `secs` seconds.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

struct Daemon {
    cancel: CancellationToken,
    state: Arc<DaemonState>,
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
    let state = Arc::new(DaemonState::default());
    let handle = tokio::spawn(run_with(
        engine,
        Some(listener),
        cancel.clone(),
        Arc::clone(&state),
    ));
    Daemon {
        cancel,
        state,
        url,
        handle,
    }
}

impl Daemon {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("stops promptly")
            .expect("join")
            .expect("clean stop");
    }
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

#[tokio::test]
async fn scheduled_runs_pick_up_okta_changes_and_endpoints_report_them() {
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"\nstale_after = \"1h\"".into();
    w.okta_user("Ann", "Lee");
    let d = start(&w).await;
    assert!(
        eventually(10, || w.member("ann.lee@example.com").is_some()).await,
        "first run at startup"
    );
    assert_eq!(get(&format!("{}/healthz", d.url)).await.0, 200);
    assert!(eventually(10, || d.state.last_success.lock().unwrap().is_some()).await);
    let (code, body) = get(&format!("{}/readyz", d.url)).await;
    assert_eq!(code, 200, "{body}");

    w.okta_user("Bob", "Ray");
    assert!(
        eventually(10, || w.member("bob.ray@example.com").is_some()).await,
        "a scheduled run picked up Bob"
    );

    let (code, metrics) = get(&format!("{}/metrics", d.url)).await;
    assert_eq!(code, 200);
    for name in [
        "okta_postman_sync_runs_total{outcome=\"ok\"}",
        "okta_postman_sync_run_duration_seconds",
        "okta_postman_sync_operations_total{kind=\"create\",result=\"done\"}",
        "okta_postman_sync_scim_requests_total",
        "okta_postman_sync_okta_requests_total",
        "okta_postman_sync_last_success_timestamp_seconds",
        "okta_postman_sync_managed_users{state=\"active\"}",
        "okta_postman_sync_unmanaged_members",
        "okta_postman_sync_quarantined_users",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    let (code, status) = get(&format!("{}/status", d.url)).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert!(v["runs"].as_array().is_some_and(|r| r.len() >= 2), "{v}");
    assert_eq!(v["managed_active"], 2);
    d.stop().await;
}

#[tokio::test]
async fn an_okta_outage_is_survived_and_the_next_run_succeeds() {
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"\nstale_after = \"1h\"".into();
    w.okta_user("Ann", "Lee");
    w.okta.set_faults(FaultConfig {
        seed: 1,
        rate_503: 1.0,
        ..FaultConfig::default()
    });
    let d = start(&w).await;
    // Runs fail while Okta is down, the daemon stays alive and unready.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(w.member("ann.lee@example.com").is_none());
    assert_eq!(get(&format!("{}/healthz", d.url)).await.0, 200);
    let (code, body) = get(&format!("{}/readyz", d.url)).await;
    assert_eq!(code, 503);
    assert!(body.contains("no successful run"), "{body}");
    w.okta.set_faults(FaultConfig::default());
    assert!(
        eventually(15, || w.member("ann.lee@example.com").is_some()).await,
        "recovered"
    );
    assert!(eventually(5, || d.state.last_success.lock().unwrap().is_some()).await);
    d.stop().await;
}

#[tokio::test]
async fn a_tick_that_finds_a_run_still_going_is_skipped() {
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"".into();
    w.extra_postman = "max_in_flight = 1".into();
    for i in 0..6 {
        w.okta_user(&format!("User{i}"), "Test");
    }
    w.postman.set_latency(Duration::from_millis(400));
    let d = start(&w).await;
    assert!(eventually(15, || d.state.skipped_ticks.load(Ordering::Relaxed) > 0).await);
    w.postman.set_latency(Duration::ZERO);
    d.stop().await;
    // Never two runs at once: no duplicate creates.
    assert!(w.postman.stats().creates_succeeded <= 6);
    w.members_without_duplicates();
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_daemon_promptly_with_exit_0_and_a_consistent_store() {
    use okta_postman_sync::store::Store;
    let mut w = World::new().await;
    w.extra_sync = "schedule = \"* * * * * *\"".into();
    w.extra_postman = "max_in_flight = 2".into();
    for i in 0..40 {
        w.okta_user(&format!("User{i}"), "Test");
    }
    w.postman.set_latency(Duration::from_millis(50));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"))
        .arg("--config")
        .arg(w.config_path())
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn daemon");
    assert!(
        eventually(10, || w.postman.stats().creates_succeeded >= 5).await,
        "daemon is working"
    );

    // While it runs, a one-shot reconcile on the same state is refused.
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_okta-postman-sync"));
    second.arg("--config").arg(w.config_path()).arg("reconcile");
    let out = tokio::task::spawn_blocking(move || second.output().expect("run"))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only one writer"));

    let started = Instant::now();
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "stopped within the documented bound"
    );

    // The store is consistent: every snapshot row matches a Postman account, nothing half-done
    // is left unresolved except what the journal records for the next run.
    let store = Store::open(&w.state_path()).expect("store opens");
    for m in store.snapshot().expect("snapshot").values() {
        let p = w
            .member(&m.attrs.user_name)
            .expect("snapshot row has a Postman account");
        assert_eq!(p.id, m.scim_id);
    }
    assert!(store.journal_pending().expect("pending").len() <= 2);
    drop(store);
    // And it finishes the job on the next run.
    w.postman.set_latency(Duration::ZERO);
    let r = w.run().await;
    assert_eq!(
        r.outcome,
        okta_postman_sync::engine::Outcome::Ok,
        "{:?}",
        r.errors
    );
    assert_eq!(w.members_without_duplicates().len(), 40);
}
